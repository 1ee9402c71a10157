/*
 * fuzz-enroll-csr.c: fuzz target for the relay's CSR check (server/sp_enroll.h), which reads
 * what an unauthenticated client posts to /enroll (and an authenticated one sends in RENEW).
 *
 * Input: the DER bytes, as sp_enroll_check_csr gets them. Invariants: it either accepts (0,
 * a key that is EC P-256, no reason) or refuses with one of the enrollment refusals and a
 * reason, and never both; an accepted CSR re-checked from an exact-size heap copy gives the
 * same answer. The seeds (corpus/enroll-csr/) are CSRs the openssl CLI made: P-256 good, with
 * an extension request, with an extra subject entry, RSA, P-384.
 */
#include "sp_enroll.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	EVP_PKEY *key = NULL;
	const char *why = NULL;
	uint8_t *copy;
	int r = sp_enroll_check_csr(data, size, &key, &why);

	if (r == 0) {
		if (!key || why || !EVP_PKEY_is_a(key, "EC") || EVP_PKEY_get_bits(key) != 256)
			abort();
		copy = malloc(size ? size : 1);
		if (!copy)
			abort();
		memcpy(copy, data, size);
		EVP_PKEY_free(key);
		key = NULL;
		if (sp_enroll_check_csr(copy, size, &key, &why) != 0)
			abort();
		free(copy);
	} else if (key || !why || r > -SP_ENROLL_R_DISABLED || r <= -SP_ENROLL_R_END) {
		abort();
	}
	EVP_PKEY_free(key);
	return 0;
}
