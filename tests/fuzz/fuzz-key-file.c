/*
 * fuzz-key-file.c: fuzz target for the body of a sealing key file ("SEALPUSH SEALING KEY",
 * PROTOCOL.md 13.10: body versions 1 and 2, the latter with the key epoch of 13.11), parsed by
 * sp_seal_key_body_parse() from an exact-size heap copy.
 *
 * Invariants (any broken one aborts): a refusal is SP_SEAL_ERR_KEY_FILE with the result wiped;
 * an accepted body is format 2 (body version 1, no epoch, no time) or 3 (body version 2, epoch
 * >= 1 and a time >= 0) as its first byte says, and a sealer takes its X25519 key as an earlier
 * key (format 3) without error.
 */
#include "sp_seal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static __attribute__((noreturn)) void fail(const char *what)
{
	fprintf(stderr, "fuzz-key-file: %s\n", what);
	abort();
}

/* A sealer of epoch UINT32_MAX to take earlier keys: P-256 certificate key, X25519 key. */
static struct sp_sealer *sealer(void)
{
	static struct sp_sealer *s;

	if (s == NULL) {
		EVP_PKEY *sign = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
		EVP_PKEY *seal = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");

		if (sign == NULL || seal == NULL || sp_sealer_new(sign, NULL, seal, &s) != 0 ||
		    sp_sealer_set_epoch(s, UINT32_MAX) != 0)
			fail("cannot make the sealer");
		EVP_PKEY_free(sign);
		EVP_PKEY_free(seal);
	}
	return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct sp_seal_key_file zero;
	struct sp_seal_key_file k;
	uint8_t *copy;
	int r;

	if (size > 4096)
		return 0;
	copy = calloc(1, size != 0 ? size : 1);
	if (copy == NULL)
		fail("out of memory");
	if (size != 0)
		memcpy(copy, data, size);
	r = sp_seal_key_body_parse(copy, size, &k);
	if (r != 0) {
		if (r != SP_SEAL_ERR_KEY_FILE)
			fail("a refusal other than KEY_FILE");
		if (memcmp(&k, &zero, sizeof(k)) != 0)
			fail("a refused body was not wiped");
	} else {
		if (size < 2 ||
		    (copy[0] == 1 && (k.format != 2 || k.epoch != 0 || k.created_at != 0)) ||
		    (copy[0] == 2 && (k.format != 3 || k.epoch == 0 || k.created_at < 0)) ||
		    copy[0] < 1 || copy[0] > 2)
			fail("format, epoch or time disagree with the body");
		if (k.format == 3 && k.epoch < UINT32_MAX) {
			struct sp_sealer *s = sealer();
			int a = sp_sealer_add_old_key(s, &k);

			if (a != 0 && a != -EINVAL && a != -ENOSPC)
				fail("a parsed key was not taken by a sealer");
		}
	}
	sp_seal_key_file_clear(&k);
	free(copy);
	return 0;
}
