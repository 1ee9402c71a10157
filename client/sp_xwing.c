/*
 * sp_xwing: MLKEM768-X25519 (X-Wing) from OpenSSL 3.5 primitives; see sp_xwing.h for the
 * construction. Section references are to draft-connolly-cfrg-xwing-kem.
 */
#include "sp_xwing.h"

#include <errno.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "sp_hpke.h"
#include "sp_version.h"

#if SP_HAVE_PQ_SEAL

#define SP_XWING_X_LEN 32

/* The combiner's label "\.//^\" (5c2e2f2f5e5c). */
static const uint8_t sp_xwing_label[6] = {0x5c, 0x2e, 0x2f, 0x2f, 0x5e, 0x5c};

int sp_xwing_available(void)
{
	return 1;
}

/*
 * expandDecapsulationKey(seed) (section 5.2): the ML-KEM-768 key made by OpenSSL from
 * d || z = SHAKE256(seed, 96)[0:64], sk_X = [64:96], and (if pk != NULL) pk = pk_M || pk_X.
 * *mlkem is the caller's to free. Returns 0, -ENOMEM.
 */
static int sp_xwing_expand(const uint8_t seed[SP_XWING_SEED_LEN], EVP_PKEY **mlkem,
                           uint8_t sk_x[SP_XWING_X_LEN], uint8_t *pk)
{
	uint8_t expanded[96];
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	EVP_PKEY_CTX *kctx = NULL;
	OSSL_PARAM params[2];
	size_t len;
	int r = -ENOMEM;

	*mlkem = NULL;
	if (md == NULL || EVP_DigestInit_ex2(md, EVP_shake256(), NULL) != 1 ||
	    EVP_DigestUpdate(md, seed, SP_XWING_SEED_LEN) != 1 ||
	    EVP_DigestFinalXOF(md, expanded, sizeof(expanded)) != 1)
		goto out;
	kctx = EVP_PKEY_CTX_new_from_name(NULL, "ML-KEM-768", NULL);
	params[0] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_ML_KEM_SEED, expanded, 64);
	params[1] = OSSL_PARAM_construct_end();
	if (kctx == NULL || EVP_PKEY_keygen_init(kctx) != 1 ||
	    EVP_PKEY_CTX_set_params(kctx, params) != 1 || EVP_PKEY_generate(kctx, mlkem) != 1)
		goto out;
	memcpy(sk_x, expanded + 64, SP_XWING_X_LEN);
	if (pk != NULL) {
		len = SP_XWING_MLKEM_PK_LEN;
		if (EVP_PKEY_get_raw_public_key(*mlkem, pk, &len) != 1 ||
		    len != SP_XWING_MLKEM_PK_LEN)
			goto out;
		if (sp_hpke_x25519(sk_x, NULL, NULL, pk + SP_XWING_MLKEM_PK_LEN) != 0)
			goto out;
	}
	r = 0;
out:
	if (r != 0) {
		EVP_PKEY_free(*mlkem);
		*mlkem = NULL;
		OPENSSL_cleanse(sk_x, SP_XWING_X_LEN);
	}
	OPENSSL_cleanse(expanded, sizeof(expanded));
	EVP_PKEY_CTX_free(kctx);
	EVP_MD_CTX_free(md);
	return r;
}

/* Combiner (section 5.3): ss = SHA3-256(ss_M || ss_X || ct_X || pk_X || label). */
static int sp_xwing_combine(const uint8_t ss_m[32], const uint8_t ss_x[32], const uint8_t ct_x[32],
                            const uint8_t pk_x[32], uint8_t ss[SP_XWING_SS_LEN])
{
	uint8_t in[4 * 32 + sizeof(sp_xwing_label)];
	unsigned int len = 0;
	int ok;

	memcpy(in, ss_m, 32);
	memcpy(in + 32, ss_x, 32);
	memcpy(in + 64, ct_x, 32);
	memcpy(in + 96, pk_x, 32);
	memcpy(in + 128, sp_xwing_label, sizeof(sp_xwing_label));
	ok = EVP_Digest(in, sizeof(in), ss, &len, EVP_sha3_256(), NULL) == 1 &&
	     len == SP_XWING_SS_LEN;
	OPENSSL_cleanse(in, sizeof(in));
	return ok ? 0 : -ENOMEM;
}

int sp_xwing_public_key(const uint8_t seed[SP_XWING_SEED_LEN], uint8_t pk[SP_XWING_PK_LEN])
{
	EVP_PKEY *mlkem;
	uint8_t sk_x[SP_XWING_X_LEN];
	int r;

	if (seed == NULL || pk == NULL)
		return -EINVAL;
	r = sp_xwing_expand(seed, &mlkem, sk_x, pk);
	EVP_PKEY_free(mlkem);
	OPENSSL_cleanse(sk_x, sizeof(sk_x));
	return r;
}

int sp_xwing_import_mlkem(const uint8_t pk[SP_XWING_PK_LEN], EVP_PKEY **out)
{
	if (pk == NULL || out == NULL)
		return -EINVAL;
	/* OpenSSL checks the encapsulation key (FIPS 203 7.2) when importing it. */
	*out = EVP_PKEY_new_raw_public_key_ex(NULL, "ML-KEM-768", NULL, pk, SP_XWING_MLKEM_PK_LEN);
	return *out != NULL ? 0 : -EKEYREJECTED;
}

int sp_xwing_encap_mlkem(EVP_PKEY *pk_m, const uint8_t pk[SP_XWING_PK_LEN], const uint8_t *eseed,
                         uint8_t ct[SP_XWING_CT_LEN], uint8_t ss[SP_XWING_SS_LEN])
{
	uint8_t rnd[SP_XWING_ESEED_LEN], ss_m[32], ss_x[32];
	const uint8_t *pk_x = pk + SP_XWING_MLKEM_PK_LEN;
	uint8_t *ct_x = ct + SP_XWING_MLKEM_CT_LEN;
	EVP_PKEY_CTX *ectx = NULL;
	OSSL_PARAM params[2];
	size_t ct_len = SP_XWING_MLKEM_CT_LEN, ss_len = sizeof(ss_m);
	int r = -ENOMEM;

	if (pk_m == NULL || pk == NULL || ct == NULL || ss == NULL)
		return -EINVAL;
	if (eseed == NULL) {
		if (RAND_bytes(rnd, sizeof(rnd)) != 1)
			return -ENOMEM;
	} else {
		memcpy(rnd, eseed, sizeof(rnd));
	}
	/* Section 5.4: ML-KEM-768 encapsulation to pk_M with m = eseed[0:32]. */
	params[0] = OSSL_PARAM_construct_octet_string(OSSL_KEM_PARAM_IKME, rnd, 32);
	params[1] = OSSL_PARAM_construct_end();
	ectx = EVP_PKEY_CTX_new_from_pkey(NULL, pk_m, NULL);
	if (ectx == NULL || EVP_PKEY_encapsulate_init(ectx, params) != 1 ||
	    EVP_PKEY_encapsulate(ectx, ct, &ct_len, ss_m, &ss_len) != 1 ||
	    ct_len != SP_XWING_MLKEM_CT_LEN || ss_len != sizeof(ss_m))
		goto out;
	/* ek_X = eseed[32:64]; ct_X = X25519(ek_X, 9); ss_X = X25519(ek_X, pk_X). */
	r = sp_hpke_x25519(rnd + 32, pk_x, ss_x, ct_x);
	if (r == 0)
		r = sp_xwing_combine(ss_m, ss_x, ct_x, pk_x, ss);
out:
	OPENSSL_cleanse(rnd, sizeof(rnd));
	OPENSSL_cleanse(ss_m, sizeof(ss_m));
	OPENSSL_cleanse(ss_x, sizeof(ss_x));
	EVP_PKEY_CTX_free(ectx);
	return r;
}

int sp_xwing_encap(const uint8_t pk[SP_XWING_PK_LEN], const uint8_t *eseed,
                   uint8_t ct[SP_XWING_CT_LEN], uint8_t ss[SP_XWING_SS_LEN])
{
	EVP_PKEY *pk_m = NULL;
	int r;

	if (pk == NULL || ct == NULL || ss == NULL)
		return -EINVAL;
	r = sp_xwing_import_mlkem(pk, &pk_m);
	if (r == 0)
		r = sp_xwing_encap_mlkem(pk_m, pk, eseed, ct, ss);
	EVP_PKEY_free(pk_m);
	return r;
}

int sp_xwing_decap(const uint8_t seed[SP_XWING_SEED_LEN], const uint8_t ct[SP_XWING_CT_LEN],
                   uint8_t ss[SP_XWING_SS_LEN])
{
	uint8_t sk_x[SP_XWING_X_LEN], pk_x[SP_XWING_X_LEN], ss_m[32], ss_x[32];
	const uint8_t *ct_x = ct + SP_XWING_MLKEM_CT_LEN;
	EVP_PKEY *mlkem = NULL;
	EVP_PKEY_CTX *dctx = NULL;
	size_t ss_len = sizeof(ss_m);
	int r;

	if (seed == NULL || ct == NULL || ss == NULL)
		return -EINVAL;
	r = sp_xwing_expand(seed, &mlkem, sk_x, NULL);
	if (r != 0)
		return r;
	r = -ENOMEM;
	dctx = EVP_PKEY_CTX_new_from_pkey(NULL, mlkem, NULL);
	if (dctx == NULL || EVP_PKEY_decapsulate_init(dctx, NULL) != 1 ||
	    EVP_PKEY_decapsulate(dctx, ss_m, &ss_len, ct, SP_XWING_MLKEM_CT_LEN) != 1 ||
	    ss_len != sizeof(ss_m))
		goto out;
	/* pk_X = X25519(sk_X, 9) and ss_X = X25519(sk_X, ct_X) in one import of sk_X. */
	r = sp_hpke_x25519(sk_x, ct_x, ss_x, pk_x);
	if (r == 0)
		r = sp_xwing_combine(ss_m, ss_x, ct_x, pk_x, ss);
out:
	OPENSSL_cleanse(sk_x, sizeof(sk_x));
	OPENSSL_cleanse(ss_m, sizeof(ss_m));
	OPENSSL_cleanse(ss_x, sizeof(ss_x));
	EVP_PKEY_CTX_free(dctx);
	EVP_PKEY_free(mlkem);
	return r;
}

struct sp_xwing_key {
	EVP_PKEY *mlkem; /* ML-KEM-768 decapsulation key */
	EVP_PKEY *x;     /* sk_X, parsed */
	uint8_t pk[SP_XWING_PK_LEN];
};

int sp_xwing_key_new(const uint8_t seed[SP_XWING_SEED_LEN], struct sp_xwing_key **out)
{
	struct sp_xwing_key *k;
	uint8_t sk_x[SP_XWING_X_LEN];
	int r;

	if (seed == NULL || out == NULL)
		return -EINVAL;
	*out = NULL;
	if ((k = OPENSSL_zalloc(sizeof(*k))) == NULL)
		return -ENOMEM;
	r = sp_xwing_expand(seed, &k->mlkem, sk_x, k->pk);
	if (r == 0) {
		k->x = EVP_PKEY_new_raw_private_key_ex(NULL, "X25519", NULL, sk_x, SP_XWING_X_LEN);
		if (k->x == NULL)
			r = -ENOMEM;
	}
	OPENSSL_cleanse(sk_x, sizeof(sk_x));
	if (r != 0) {
		sp_xwing_key_free(k);
		return r;
	}
	*out = k;
	return 0;
}

void sp_xwing_key_free(struct sp_xwing_key *k)
{
	if (k == NULL)
		return;
	EVP_PKEY_free(k->mlkem);
	EVP_PKEY_free(k->x);
	OPENSSL_clear_free(k, sizeof(*k));
}

const uint8_t *sp_xwing_key_pk(const struct sp_xwing_key *k)
{
	return k->pk;
}

int sp_xwing_decap_key(const struct sp_xwing_key *k, const uint8_t ct[SP_XWING_CT_LEN],
                       uint8_t ss[SP_XWING_SS_LEN])
{
	const uint8_t *ct_x = ct + SP_XWING_MLKEM_CT_LEN;
	uint8_t ss_m[32], ss_x[32];
	EVP_PKEY_CTX *dctx = NULL;
	size_t ss_len = sizeof(ss_m);
	int r = -ENOMEM;

	if (k == NULL || ct == NULL || ss == NULL)
		return -EINVAL;
	dctx = EVP_PKEY_CTX_new_from_pkey(NULL, k->mlkem, NULL);
	if (dctx == NULL || EVP_PKEY_decapsulate_init(dctx, NULL) != 1 ||
	    EVP_PKEY_decapsulate(dctx, ss_m, &ss_len, ct, SP_XWING_MLKEM_CT_LEN) != 1 ||
	    ss_len != sizeof(ss_m))
		goto out;
	r = sp_hpke_x25519_key(k->x, ct_x, ss_x);
	if (r == 0)
		r = sp_xwing_combine(ss_m, ss_x, ct_x, k->pk + SP_XWING_MLKEM_PK_LEN, ss);
out:
	OPENSSL_cleanse(ss_m, sizeof(ss_m));
	OPENSSL_cleanse(ss_x, sizeof(ss_x));
	EVP_PKEY_CTX_free(dctx);
	return r;
}

#else /* !SP_HAVE_PQ_SEAL: OpenSSL older than 3.5 has no ML-KEM. */

int sp_xwing_available(void)
{
	return 0;
}

int sp_xwing_public_key(const uint8_t seed[SP_XWING_SEED_LEN], uint8_t pk[SP_XWING_PK_LEN])
{
	return -EOPNOTSUPP;
}

int sp_xwing_encap(const uint8_t pk[SP_XWING_PK_LEN], const uint8_t *eseed,
                   uint8_t ct[SP_XWING_CT_LEN], uint8_t ss[SP_XWING_SS_LEN])
{
	return -EOPNOTSUPP;
}

int sp_xwing_decap(const uint8_t seed[SP_XWING_SEED_LEN], const uint8_t ct[SP_XWING_CT_LEN],
                   uint8_t ss[SP_XWING_SS_LEN])
{
	return -EOPNOTSUPP;
}

int sp_xwing_import_mlkem(const uint8_t pk[SP_XWING_PK_LEN], EVP_PKEY **out)
{
	if (out != NULL)
		*out = NULL;
	return -EOPNOTSUPP;
}

int sp_xwing_encap_mlkem(EVP_PKEY *pk_m, const uint8_t pk[SP_XWING_PK_LEN], const uint8_t *eseed,
                         uint8_t ct[SP_XWING_CT_LEN], uint8_t ss[SP_XWING_SS_LEN])
{
	return -EOPNOTSUPP;
}

int sp_xwing_key_new(const uint8_t seed[SP_XWING_SEED_LEN], struct sp_xwing_key **out)
{
	if (out != NULL)
		*out = NULL;
	return -EOPNOTSUPP;
}

void sp_xwing_key_free(struct sp_xwing_key *k)
{
}

const uint8_t *sp_xwing_key_pk(const struct sp_xwing_key *k)
{
	return NULL;
}

int sp_xwing_decap_key(const struct sp_xwing_key *k, const uint8_t ct[SP_XWING_CT_LEN],
                       uint8_t ss[SP_XWING_SS_LEN])
{
	return -EOPNOTSUPP;
}

#endif
