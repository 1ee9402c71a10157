/*
 * fuzz-seal.h: what the envelope-opening fuzz target (fuzz-seal-open.c) and its seed generator
 * (seed-seal-open.c) share: three fixed test identities (keys embedded below, made for these
 * tests only and used nowhere else), the input layout and the fixed ephemeral key of mode 1.
 *
 * Input layout: byte 0 mode (bit 0: 0 = the rest is an envelope as delivered, 1 = the rest is
 * an inner plaintext that the target seals itself), byte 1 suite selector for mode 1 (bit 0:
 * 0 = 0x0001 ChaCha20Poly1305, 1 = 0x0002 AES-128-GCM; bit 1: an envelope of version 2 naming
 * the recipient's key epoch FZ_RCPT_EPOCH, else version 1), bytes 2-17 the DELIVER's msg_id,
 * bytes 18-25 the recipient's clock (ms, big-endian), then the body.
 *
 * The recipient has rotated (PROTOCOL.md 13.11): its current key (epoch FZ_RCPT_EPOCH, 3) is
 * fz_rcpt_seal_pem, it still holds the key of epoch FZ_RCPT_OLD_EPOCH (2, fz_rcpt_old_seal_pem),
 * epochs 0 and 1 are erased; where the build has the hybrid suite, its current key has an
 * MLKEM768-X25519 seed too (fz_rcpt_xwing_seed), but it prefers X25519 (its peer is X25519).
 */
#ifndef FUZZ_SEAL_H
#define FUZZ_SEAL_H

#include "sp_seal.h"

#include <stdint.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#define FZ_HDR       26
#define FZ_MODE_WIRE 0
#define FZ_MODE_SEAL 1
#define FZ_T0        1795000000000ull /* the seeds' sent_at and clock (2026-11) */
#define FZ_INFO      "sealpush/1 envelope"

/* Mode 1 seals with DeriveKeyPair(this) as the ephemeral key, so enc is fixed per suite and
 * a seed's signature (which covers enc) holds when the target seals the seed again. */
static const uint8_t fz_ikm_e[] = "fuzz-seal-open: fixed ephemeral key, tests only";

static const char fz_rcpt_sign_pem[] =
        "-----BEGIN PRIVATE KEY-----\n"
        "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg5iLgKVsI2cn2xMnv\n"
        "58kZB1wAfnx12LVuR5keLd2Ow76hRANCAAQCR078M4VoyTtMVP9aBPTok5q7v94J\n"
        "PJLUf1YAggVduIJlc25J9yMzKX81gcD8fd6lDvX8WfjXfcZapUtvrmLW\n"
        "-----END PRIVATE KEY-----\n";
static const char fz_rcpt_seal_pem[] =
        "-----BEGIN PRIVATE KEY-----\n"
        "MC4CAQAwBQYDK2VuBCIEIAiwGtNp2rGfVmp2VI8YJDwlh4y+4QPMDSwsnIge1PR5\n"
        "-----END PRIVATE KEY-----\n";
static const char fz_rcpt_old_seal_pem[] =
        "-----BEGIN PRIVATE KEY-----\n"
        "MC4CAQAwBQYDK2VuBCIEIEgMqP6xdkjZpvEfTANrFz10ZzREaswo8iDP+4rlHkFk\n"
        "-----END PRIVATE KEY-----\n";
static const uint8_t fz_rcpt_xwing_seed[32] = {0xdf, 0x26, 0x72, 0x12, 0x37, 0xe8, 0xdf, 0x98,
                                               0x33, 0xcf, 0x6a, 0xdc, 0xf1, 0xb8, 0x5a, 0x86,
                                               0xb7, 0x0f, 0x5e, 0xb6, 0xff, 0x6e, 0x52, 0xc2,
                                               0x67, 0x68, 0x50, 0xe1, 0xe2, 0x3d, 0x19, 0x02};
#define FZ_RCPT_EPOCH     3
#define FZ_RCPT_OLD_EPOCH 2
static const char fz_sender_sign_pem[] =
        "-----BEGIN PRIVATE KEY-----\n"
        "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg1dHf4gMas5XCYPST\n"
        "uqMmAaPsi8Sc5EbgT52YGYcEpNGhRANCAATrEOO3i9GPQmRmQjo83myGvN0k8De9\n"
        "Z3uqaJtC5VJ3RuN5ulspsSu5L/M14ZnVs8elNPJqYdUT22vUZ0SzuvJP\n"
        "-----END PRIVATE KEY-----\n";
static const char fz_sender_seal_pem[] =
        "-----BEGIN PRIVATE KEY-----\n"
        "MC4CAQAwBQYDK2VuBCIEINAOC+mnP5Khl5VbMSKH7BYDYsLXID1ANGAI3roUj3ZK\n"
        "-----END PRIVATE KEY-----\n";
static const char fz_other_sign_pem[] =
        "-----BEGIN PRIVATE KEY-----\n"
        "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg9uV67b7nAUKpwUzF\n"
        "Iyo/loGIRwF5lUiAmGoToFDiY+WhRANCAAQo/GnHPdeYUHr/4NfKP0xYvPtz7ylx\n"
        "A9zdqnqaOZsMRD2GdZGFlCM8dBPAyd33jLO30Bcao6LJ6lXunVCM1XZS\n"
        "-----END PRIVATE KEY-----\n";
static const char fz_other_seal_pem[] =
        "-----BEGIN PRIVATE KEY-----\n"
        "MC4CAQAwBQYDK2VuBCIEIKjKhEgQBFcBuL2T/smIFxtLjjDCwNcPz7AtPMS2yula\n"
        "-----END PRIVATE KEY-----\n";

/* A test device: certificate key, sealing key, sealer (without certificate) and peer data. */
struct fz_dev {
	EVP_PKEY *sign;
	EVP_PKEY *seal;
	struct sp_sealer *s;
	struct sp_seal_peer peer;
};

static inline EVP_PKEY *fz_pem_key(const char *pem)
{
	BIO *bio = BIO_new_mem_buf(pem, -1);
	EVP_PKEY *key = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;

	BIO_free(bio);
	return key;
}

/* Loads a device from its two PEM keys. Returns 0 or -1. */
static inline int fz_dev_load(struct fz_dev *d, const char *sign_pem, const char *seal_pem)
{
	memset(d, 0, sizeof(*d));
	d->sign = fz_pem_key(sign_pem);
	d->seal = fz_pem_key(seal_pem);
	if (d->sign == NULL || d->seal == NULL || sp_sealer_new(d->sign, NULL, d->seal, &d->s) != 0)
		return -1;
	sp_sealer_peer(d->s, &d->peer);
	return 0;
}

/* Makes d (loaded as the recipient) the rotated recipient described above. Returns 0 or -1. */
static inline int fz_rcpt_rotate(struct fz_dev *d)
{
	struct sp_seal_key_file k;
	EVP_PKEY *old = fz_pem_key(fz_rcpt_old_seal_pem);
	size_t len = sizeof(k.x25519);
	int r = -1;

	memset(&k, 0, sizeof(k));
	k.epoch = FZ_RCPT_OLD_EPOCH;
	if (old != NULL && EVP_PKEY_get_raw_private_key(old, k.x25519, &len) &&
	    sp_sealer_set_epoch(d->s, FZ_RCPT_EPOCH) == 0 && sp_sealer_add_old_key(d->s, &k) == 0)
		r = 0;
	if (r == 0 && sp_seal_suite_implemented(SP_SEAL_SUITE_HYBRID) &&
	    (sp_sealer_set_hybrid_key(d->s, fz_rcpt_xwing_seed, sizeof(fz_rcpt_xwing_seed)) != 0 ||
	     sp_sealer_set_suite(d->s, SP_SEAL_SUITE_DEFAULT) != 0))
		r = -1;
	if (r == 0)
		sp_sealer_peer(d->s, &d->peer);
	EVP_PKEY_free(old);
	return r;
}

static inline void fz_dev_free(struct fz_dev *d)
{
	sp_sealer_free(d->s);
	EVP_PKEY_free(d->sign);
	EVP_PKEY_free(d->seal);
	memset(d, 0, sizeof(*d));
}

#endif
