/* tc_keys.h: test identities for the client unit tests (header-only): keys, certificates. */
#ifndef TC_KEYS_H
#define TC_KEYS_H

#include "sp_seal.h"

#include <openssl/evp.h>
#include <openssl/x509.h>

/* A self-signed certificate for key (enough for the sealer, which checks only the key pair). */
static inline X509 *tc_cert(EVP_PKEY *key, const char *cn)
{
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();

	if (x == NULL || name == NULL ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
	                                0) ||
	    !X509_set_version(x, X509_VERSION_3) ||
	    !ASN1_INTEGER_set(X509_get_serialNumber(x), 1) || !X509_set_subject_name(x, name) ||
	    !X509_set_issuer_name(x, name) || !X509_gmtime_adj(X509_getm_notBefore(x), 0) ||
	    !X509_gmtime_adj(X509_getm_notAfter(x), 3600) || !X509_set_pubkey(x, key) ||
	    !X509_sign(x, key, EVP_sha256())) {
		X509_free(x);
		x = NULL;
	}
	X509_NAME_free(name);
	return x;
}

/* A device: certificate key, certificate, sealing key, and its sealer. */
struct tc_dev {
	EVP_PKEY *sign;
	EVP_PKEY *seal;
	X509 *cert;
	struct sp_sealer *s;
	uint8_t seal_sk[32];
	uint8_t seal_pk[32];
	struct sp_seal_peer peer;
};

/* Makes a device; returns 0 or -1. */
static inline int tc_dev_make(struct tc_dev *d, const char *cn)
{
	size_t len = 32;

	memset(d, 0, sizeof(*d));
	d->sign = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	d->seal = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
	if (d->sign == NULL || d->seal == NULL || (d->cert = tc_cert(d->sign, cn)) == NULL ||
	    sp_sealer_new(d->sign, d->cert, d->seal, &d->s) != 0 ||
	    !EVP_PKEY_get_raw_private_key(d->seal, d->seal_sk, &len))
		return -1;
	len = 32;
	if (!EVP_PKEY_get_raw_public_key(d->seal, d->seal_pk, &len))
		return -1;
	sp_sealer_peer(d->s, &d->peer);
	return 0;
}

static inline void tc_dev_free(struct tc_dev *d)
{
	sp_sealer_free(d->s);
	EVP_PKEY_free(d->sign);
	EVP_PKEY_free(d->seal);
	X509_free(d->cert);
	memset(d, 0, sizeof(*d));
}

#endif
