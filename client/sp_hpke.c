/*
 * sp_hpke: RFC 9180 base mode from OpenSSL primitives. The section numbers in comments are
 * RFC 9180's. OpenSSL objects (the HKDF method, the AEAD ciphers) are fetched once per process
 * and shared read-only by every thread.
 */
#include "sp_hpke.h"
#include "sp_xwing.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

/* Labels and suite ids are short; a labeled input is at most this long. */
#define SP_HPKE_LABELED_MAX (2 + 7 + 10 + 16 + SP_HPKE_MAX_INFO)

static const char sp_hpke_v1[] = "HPKE-v1";
static const uint8_t sp_hkdf_zero_salt[SP_HPKE_NH];

/* suite_id: "KEM" || I2OSP(kem_id, 2) (5 bytes) or "HPKE" || kem || kdf || aead (10 bytes). */
struct sp_hpke_sid {
	uint8_t b[10];
	size_t len;
};

/* OpenSSL objects fetched once: the HKDF method and the two ciphers. */
static struct {
	EVP_KDF *hkdf;
	EVP_CIPHER *aes128gcm;
	EVP_CIPHER *chacha;
	int ok;
} sp_hpke_algs;
static pthread_once_t sp_hpke_once = PTHREAD_ONCE_INIT;

static void sp_hpke_init_algs(void)
{
	sp_hpke_algs.hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	if (sp_hpke_algs.hkdf == NULL)
		return;
	sp_hpke_algs.aes128gcm = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
	sp_hpke_algs.chacha = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
	sp_hpke_algs.ok = sp_hpke_algs.aes128gcm != NULL && sp_hpke_algs.chacha != NULL;
}

static int sp_hpke_ready(void)
{
	return pthread_once(&sp_hpke_once, sp_hpke_init_algs) == 0 && sp_hpke_algs.ok;
}

static void sp_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void sp_hpke_kem_sid(uint16_t kem, struct sp_hpke_sid *sid)
{
	memcpy(sid->b, "KEM", 3);
	sp_put16(sid->b + 3, kem);
	sid->len = 5;
}

static void sp_hpke_suite_sid(const struct sp_hpke_suite *s, struct sp_hpke_sid *sid)
{
	memcpy(sid->b, "HPKE", 4);
	sp_put16(sid->b + 4, s->kem);
	sp_put16(sid->b + 6, s->kdf);
	sp_put16(sid->b + 8, s->aead);
	sid->len = 10;
}

int sp_hpke_suite_supported(const struct sp_hpke_suite *suite)
{
	return suite != NULL &&
	       (suite->kem == SP_HPKE_KEM_X25519_SHA256 ||
	        (suite->kem == SP_HPKE_KEM_MLKEM768_X25519 && sp_xwing_available())) &&
	       suite->kdf == SP_HPKE_KDF_HKDF_SHA256 && sp_hpke_aead_key_len(suite->aead) != 0;
}

int sp_hpke_kem_lengths(uint16_t kem, size_t *nenc, size_t *npk, size_t *nsk)
{
	if (nenc == NULL || npk == NULL || nsk == NULL)
		return -EINVAL;
	switch (kem) {
	case SP_HPKE_KEM_X25519_SHA256:
		*nenc = *npk = *nsk = SP_HPKE_X25519_LEN;
		return 0;
	case SP_HPKE_KEM_MLKEM768_X25519:
		if (!sp_xwing_available())
			return -EOPNOTSUPP;
		*nenc = SP_XWING_CT_LEN;
		*npk = SP_XWING_PK_LEN;
		*nsk = SP_XWING_SEED_LEN;
		return 0;
	default:
		return -EINVAL;
	}
}

size_t sp_hpke_aead_key_len(uint16_t aead)
{
	switch (aead) {
	case SP_HPKE_AEAD_AES128GCM:
		return 16;
	case SP_HPKE_AEAD_CHACHA20POLY1305:
		return 32;
	default:
		return 0;
	}
}

/*
 * One HKDF step through OpenSSL: extract (salt, ikm -> 32 bytes) or expand (prk, info -> out_len
 * bytes). Returns 0 or -ENOMEM.
 */
static int sp_hkdf(EVP_KDF_CTX *kctx, int mode, const uint8_t *key, size_t key_len,
                   const uint8_t *salt, size_t salt_len, const uint8_t *info, size_t info_len,
                   uint8_t *out, size_t out_len)
{
	OSSL_PARAM params[5], *p = params;

	*p++ = OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)key, key_len);
	/*
	 * RFC 5869 2.2: an absent salt is Nh zero bytes, which HMAC treats exactly like the empty
	 * key; pass the zeros so that OpenSSL never sees an absent key.
	 */
	if (salt_len == 0) {
		salt = sp_hkdf_zero_salt;
		salt_len = sizeof(sp_hkdf_zero_salt);
	}
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, salt_len);
	/* Always set, so that nothing of an earlier step stays in the reused context. */
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, info_len);
	*p = OSSL_PARAM_construct_end();
	return EVP_KDF_derive(kctx, out, out_len, params) == 1 ? 0 : -ENOMEM;
}

/*
 * A new HKDF-SHA256 context (OpenSSL 3.0 cannot duplicate HKDF contexts: EVP_KDF_CTX_dup returns
 * NULL; a context can be reused, which sp_hpke_sched does). Returns NULL on failure.
 */
static EVP_KDF_CTX *sp_hkdf_new(void)
{
	EVP_KDF_CTX *kctx;
	OSSL_PARAM params[2];

	if (!sp_hpke_ready() || (kctx = EVP_KDF_CTX_new(sp_hpke_algs.hkdf)) == NULL)
		return NULL;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	if (!EVP_KDF_CTX_set_params(kctx, params)) {
		EVP_KDF_CTX_free(kctx);
		return NULL;
	}
	return kctx;
}

/*
 * labeled_ikm = "HPKE-v1" || suite_id || label || ikm (section 4) into buf (room for
 * SP_HPKE_LABELED_MAX - 2 bytes). Returns its length, or 0 if ikm is too long.
 */
static size_t sp_labeled_ikm(uint8_t *buf, const struct sp_hpke_sid *sid, const char *label,
                             const uint8_t *ikm, size_t ikm_len)
{
	size_t label_len = strlen(label), n = 0;

	if (ikm_len > SP_HPKE_MAX_INFO)
		return 0;
	memcpy(buf + n, sp_hpke_v1, 7);
	n += 7;
	memcpy(buf + n, sid->b, sid->len);
	n += sid->len;
	memcpy(buf + n, label, label_len);
	n += label_len;
	if (ikm_len > 0)
		memcpy(buf + n, ikm, ikm_len);
	return n + ikm_len;
}

/*
 * labeled_info = I2OSP(L, 2) || "HPKE-v1" || suite_id || label || info (section 4) into buf.
 * Returns its length, or 0 if info or L is out of range.
 */
static size_t sp_labeled_info(uint8_t buf[SP_HPKE_LABELED_MAX], size_t out_len,
                              const struct sp_hpke_sid *sid, const char *label, const uint8_t *info,
                              size_t info_len)
{
	if (out_len == 0 || out_len > 255 * SP_HPKE_NH)
		return 0;
	sp_put16(buf, (uint16_t)out_len);
	return 2 + sp_labeled_ikm(buf + 2, sid, label, info, info_len);
}

/* LabeledExtract(salt, label, ikm) (section 4): 32 bytes into out. Returns 0, -EINVAL, -ENOMEM. */
static int sp_labeled_extract(EVP_KDF_CTX *kctx, const struct sp_hpke_sid *sid, const uint8_t *salt,
                              size_t salt_len, const char *label, const uint8_t *ikm,
                              size_t ikm_len, uint8_t out[SP_HPKE_NH])
{
	uint8_t buf[SP_HPKE_LABELED_MAX];
	size_t n = sp_labeled_ikm(buf, sid, label, ikm, ikm_len);
	int r;

	if (n == 0)
		return -EINVAL;
	r = sp_hkdf(kctx, EVP_KDF_HKDF_MODE_EXTRACT_ONLY, buf, n, salt, salt_len, NULL, 0, out,
	            SP_HPKE_NH);
	OPENSSL_cleanse(buf, n);
	return r;
}

/* LabeledExpand(prk, label, info, L) (section 4). Returns 0, -EINVAL, -ENOMEM. */
static int sp_labeled_expand(EVP_KDF_CTX *kctx, const struct sp_hpke_sid *sid,
                             const uint8_t prk[SP_HPKE_NH], const char *label, const uint8_t *info,
                             size_t info_len, uint8_t *out, size_t out_len)
{
	uint8_t buf[SP_HPKE_LABELED_MAX];
	size_t n = sp_labeled_info(buf, out_len, sid, label, info, info_len);

	if (n == 0)
		return -EINVAL;
	return sp_hkdf(kctx, EVP_KDF_HKDF_MODE_EXPAND_ONLY, prk, SP_HPKE_NH, NULL, 0, buf, n, out,
	               out_len);
}

/*
 * LabeledExpand(LabeledExtract(salt, ext_label, ikm), exp_label, info, L) as one OpenSSL call
 * (HKDF mode EXTRACT_AND_EXPAND: the same HMACs, one call's overhead instead of two). For the
 * steps whose PRK is used only by the one Expand. Returns 0, -EINVAL, -ENOMEM.
 */
static int sp_labeled_extract_expand(EVP_KDF_CTX *kctx, const struct sp_hpke_sid *sid,
                                     const char *ext_label, const uint8_t *ikm, size_t ikm_len,
                                     const char *exp_label, const uint8_t *info, size_t info_len,
                                     uint8_t *out, size_t out_len)
{
	uint8_t kbuf[SP_HPKE_LABELED_MAX], ibuf[SP_HPKE_LABELED_MAX];
	size_t kn = sp_labeled_ikm(kbuf, sid, ext_label, ikm, ikm_len);
	size_t in = sp_labeled_info(ibuf, out_len, sid, exp_label, info, info_len);
	int r;

	if (kn == 0 || in == 0)
		return -EINVAL;
	r = sp_hkdf(kctx, EVP_KDF_HKDF_MODE_EXTRACT_AND_EXPAND, kbuf, kn, NULL, 0, ibuf, in, out,
	            out_len);
	OPENSSL_cleanse(kbuf, kn);
	return r;
}

/*
 * X25519 through OpenSSL. With pk != NULL: dh = DH(sk, pk). With pub_out != NULL: the public
 * key of sk. Returns 0, -EKEYREJECTED (all-zero shared secret, which OpenSSL refuses), -ENOMEM.
 */
static int sp_x25519_key(EVP_PKEY *priv, const uint8_t *pk, uint8_t *dh, uint8_t *pub_out)
{
	EVP_PKEY *peer = NULL;
	EVP_PKEY_CTX *pctx = NULL;
	size_t len = SP_HPKE_X25519_LEN;
	int r = -ENOMEM;

	if (pub_out != NULL &&
	    (!EVP_PKEY_get_raw_public_key(priv, pub_out, &len) || len != SP_HPKE_X25519_LEN))
		goto out;
	if (pk != NULL) {
		peer = EVP_PKEY_new_raw_public_key_ex(NULL, "X25519", NULL, pk, SP_HPKE_X25519_LEN);
		pctx = EVP_PKEY_CTX_new_from_pkey(NULL, priv, NULL);
		if (peer == NULL || pctx == NULL || EVP_PKEY_derive_init(pctx) != 1 ||
		    EVP_PKEY_derive_set_peer(pctx, peer) != 1)
			goto out;
		len = SP_HPKE_X25519_LEN;
		/* OpenSSL fails the derivation when the result is all zero (RFC 7748 6.1). */
		if (EVP_PKEY_derive(pctx, dh, &len) != 1 || len != SP_HPKE_X25519_LEN) {
			r = -EKEYREJECTED;
			goto out;
		}
	}
	r = 0;
out:
	EVP_PKEY_CTX_free(pctx);
	EVP_PKEY_free(peer);
	return r;
}

int sp_hpke_x25519_key(EVP_PKEY *sk, const uint8_t *pk, uint8_t *dh)
{
	if (sk == NULL || pk == NULL || dh == NULL || !EVP_PKEY_is_a(sk, "X25519"))
		return -EINVAL;
	return sp_x25519_key(sk, pk, dh, NULL);
}

/* The same from a raw private key (importing it computes its public key: one multiplication). */
int sp_hpke_x25519(const uint8_t sk[SP_HPKE_X25519_LEN], const uint8_t *pk, uint8_t *dh,
                   uint8_t *pub_out)
{
	EVP_PKEY *priv =
	        EVP_PKEY_new_raw_private_key_ex(NULL, "X25519", NULL, sk, SP_HPKE_X25519_LEN);
	int r;

	if (priv == NULL)
		return -ENOMEM;
	r = sp_x25519_key(priv, pk, dh, pub_out);
	EVP_PKEY_free(priv);
	return r;
}

/* DeriveKeyPair with the caller's HKDF context. */
static int sp_hpke_derive(EVP_KDF_CTX *kctx, uint16_t kem, const uint8_t *ikm, size_t ikm_len,
                          uint8_t sk[SP_HPKE_X25519_LEN], uint8_t pk[SP_HPKE_X25519_LEN])
{
	struct sp_hpke_sid sid;
	int r;

	if (ikm == NULL || ikm_len == 0)
		return -EINVAL;
	/* 7.1.3: for X25519, sk = LabeledExpand(LabeledExtract("", "dkp_prk", ikm), "sk", "", Nsk).
	 */
	sp_hpke_kem_sid(kem, &sid);
	r = sp_labeled_extract_expand(kctx, &sid, "dkp_prk", ikm, ikm_len, "sk", NULL, 0, sk,
	                              SP_HPKE_X25519_LEN);
	if (r == 0)
		r = sp_hpke_x25519(sk, NULL, NULL, pk);
	return r;
}

int sp_hpke_derive_keypair(uint16_t kem, const uint8_t *ikm, size_t ikm_len,
                           uint8_t sk[SP_HPKE_X25519_LEN], uint8_t pk[SP_HPKE_X25519_LEN])
{
	EVP_KDF_CTX *kctx;
	int r;

	if (kem != SP_HPKE_KEM_X25519_SHA256 || sk == NULL || pk == NULL)
		return -EINVAL;
	if ((kctx = sp_hkdf_new()) == NULL)
		return -ENOMEM;
	r = sp_hpke_derive(kctx, kem, ikm, ikm_len, sk, pk);
	EVP_KDF_CTX_free(kctx);
	return r;
}

int sp_hpke_generate_keypair(uint16_t kem, uint8_t sk[SP_HPKE_X25519_LEN],
                             uint8_t pk[SP_HPKE_X25519_LEN])
{
	if (kem != SP_HPKE_KEM_X25519_SHA256 || sk == NULL || pk == NULL)
		return -EINVAL;
	if (RAND_bytes(sk, SP_HPKE_X25519_LEN) != 1)
		return -ENOMEM;
	return sp_hpke_x25519(sk, NULL, NULL, pk);
}

int sp_hpke_public_key(uint16_t kem, const uint8_t sk[SP_HPKE_X25519_LEN],
                       uint8_t pk[SP_HPKE_X25519_LEN])
{
	if (kem != SP_HPKE_KEM_X25519_SHA256 || sk == NULL || pk == NULL)
		return -EINVAL;
	return sp_hpke_x25519(sk, NULL, NULL, pk);
}

/*
 * ExtractAndExpand(dh, kem_context) of DHKEM (4.1), kem_context = enc || pkRm: one
 * EXTRACT_AND_EXPAND call (the eae_prk is used by this one Expand only).
 */
static int sp_hpke_extract_and_expand(EVP_KDF_CTX *kctx, uint16_t kem,
                                      const uint8_t dh[SP_HPKE_X25519_LEN],
                                      const uint8_t enc[SP_HPKE_X25519_LEN],
                                      const uint8_t pk_r[SP_HPKE_X25519_LEN],
                                      uint8_t shared_secret[SP_HPKE_X25519_LEN])
{
	struct sp_hpke_sid sid;
	uint8_t kem_context[2 * SP_HPKE_X25519_LEN];

	sp_hpke_kem_sid(kem, &sid);
	memcpy(kem_context, enc, SP_HPKE_X25519_LEN);
	memcpy(kem_context + SP_HPKE_X25519_LEN, pk_r, SP_HPKE_X25519_LEN);
	return sp_labeled_extract_expand(kctx, &sid, "eae_prk", dh, SP_HPKE_X25519_LEN,
	                                 "shared_secret", kem_context, sizeof(kem_context),
	                                 shared_secret, SP_HPKE_X25519_LEN);
}

/*
 * KeySchedule(mode_base, shared_secret, info, "", "") (5.1) with the schedule's prepared
 * key_schedule_context: one Extract (secret) and two or three Expands of it.
 */
static int sp_hpke_key_schedule(EVP_KDF_CTX *kctx, const struct sp_hpke_sched *sc,
                                const uint8_t shared_secret[SP_HPKE_X25519_LEN],
                                struct sp_hpke_ctx *ctx, struct sp_hpke_trace *trace)
{
	struct sp_hpke_sid sid;
	uint8_t secret[SP_HPKE_NH];
	int r;

	sp_hpke_suite_sid(&sc->suite, &sid);
	memset(ctx, 0, sizeof(*ctx));
	ctx->suite = sc->suite;
	ctx->key_len = sp_hpke_aead_key_len(sc->suite.aead);
	/* secret = LabeledExtract(shared_secret, "secret", psk) with the empty psk. */
	r = sp_labeled_extract(kctx, &sid, shared_secret, SP_HPKE_X25519_LEN, "secret", NULL, 0,
	                       secret);
	if (r == 0)
		r = sp_labeled_expand(kctx, &sid, secret, "key", sc->ksc, sizeof(sc->ksc), ctx->key,
		                      ctx->key_len);
	if (r == 0)
		r = sp_labeled_expand(kctx, &sid, secret, "base_nonce", sc->ksc, sizeof(sc->ksc),
		                      ctx->base_nonce, SP_HPKE_NN);
	if (r == 0 && (sc->flags & SP_HPKE_SCHED_EXPORT)) {
		r = sp_labeled_expand(kctx, &sid, secret, "exp", sc->ksc, sizeof(sc->ksc),
		                      ctx->exporter_secret, SP_HPKE_NH);
		ctx->has_exporter = r == 0;
	}
	if (r == 0 && trace != NULL) {
		memcpy(trace->shared_secret, shared_secret, SP_HPKE_X25519_LEN);
		memcpy(trace->key_schedule_context, sc->ksc, sizeof(sc->ksc));
		memcpy(trace->secret, secret, sizeof(secret));
		memcpy(trace->exporter_secret, ctx->exporter_secret, SP_HPKE_NH);
	}
	if (r != 0)
		sp_hpke_ctx_clear(ctx);
	OPENSSL_cleanse(secret, sizeof(secret));
	return r;
}

static int sp_hpke_check_suite(const struct sp_hpke_suite *suite, const uint8_t *info,
                               size_t info_len)
{
	if (!sp_hpke_suite_supported(suite) || (info == NULL && info_len > 0) ||
	    info_len > SP_HPKE_MAX_INFO)
		return -EINVAL;
	return sp_hpke_ready() ? 0 : -ENOMEM;
}

int sp_hpke_sched_init(struct sp_hpke_sched *sched, const struct sp_hpke_suite *suite,
                       const uint8_t *info, size_t info_len, unsigned flags)
{
	struct sp_hpke_sid sid;
	EVP_KDF_CTX *kctx;
	int r;

	if (sched == NULL)
		return -EINVAL;
	memset(sched, 0, sizeof(*sched));
	if ((flags & ~SP_HPKE_SCHED_EXPORT) != 0)
		return -EINVAL;
	r = sp_hpke_check_suite(suite, info, info_len);
	if (r != 0)
		return r;
	if ((kctx = sp_hkdf_new()) == NULL)
		return -ENOMEM;
	sched->suite = *suite;
	sched->flags = flags;
	/* key_schedule_context = mode || LabeledExtract("", "psk_id_hash", psk_id) ||
	 * LabeledExtract("", "info_hash", info), with mode_base and the empty psk_id. */
	sp_hpke_suite_sid(suite, &sid);
	sched->ksc[0] = 0x00;
	r = sp_labeled_extract(kctx, &sid, NULL, 0, "psk_id_hash", NULL, 0, sched->ksc + 1);
	if (r == 0)
		r = sp_labeled_extract(kctx, &sid, NULL, 0, "info_hash", info, info_len,
		                       sched->ksc + 1 + SP_HPKE_NH);
	if (r == 0 && pthread_mutex_init(&sched->lock, NULL) != 0)
		r = -ENOMEM;
	EVP_KDF_CTX_free(kctx);
	if (r != 0) {
		memset(sched, 0, sizeof(*sched));
		return r;
	}
	sched->ready = 1;
	return 0;
}

void sp_hpke_sched_clear(struct sp_hpke_sched *sched)
{
	if (sched == NULL || !sched->ready)
		return;
	EVP_KDF_CTX_free(sched->kctx);
	pthread_mutex_destroy(&sched->lock);
	OPENSSL_cleanse(sched, sizeof(*sched));
}

/*
 * An HKDF context for one setup: the schedule's own if no other thread has it (*lent = 1; the
 * lock stays held until sp_hpke_give_back), else a new one. NULL if none could be made.
 */
static EVP_KDF_CTX *sp_hpke_borrow(struct sp_hpke_sched *sc, int *lent)
{
	*lent = 0;
	if (pthread_mutex_trylock(&sc->lock) == 0) {
		if (sc->kctx == NULL)
			sc->kctx = sp_hkdf_new();
		if (sc->kctx != NULL) {
			*lent = 1;
			return sc->kctx;
		}
		pthread_mutex_unlock(&sc->lock);
	}
	return sp_hkdf_new();
}

/* Returns the context: the schedule's own is wiped of the last key and unlocked. */
static void sp_hpke_give_back(struct sp_hpke_sched *sc, EVP_KDF_CTX *kctx, int lent)
{
	OSSL_PARAM params[3];

	if (!lent) {
		EVP_KDF_CTX_free(kctx);
		return;
	}
	/* OpenSSL clears the old key and salt when they are replaced. */
	params[0] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)sp_hkdf_zero_salt,
	                                              sizeof(sp_hkdf_zero_salt));
	params[1] = OSSL_PARAM_construct_octet_string(
	        OSSL_KDF_PARAM_SALT, (void *)sp_hkdf_zero_salt, sizeof(sp_hkdf_zero_salt));
	params[2] = OSSL_PARAM_construct_end();
	if (EVP_KDF_CTX_set_params(kctx, params) != 1) {
		EVP_KDF_CTX_free(kctx);
		sc->kctx = NULL;
	}
	pthread_mutex_unlock(&sc->lock);
}

int sp_hpke_sched_kdf(struct sp_hpke_sched *sc, const uint8_t dh[SP_HPKE_X25519_LEN],
                      const uint8_t enc[SP_HPKE_X25519_LEN], const uint8_t pk_r[SP_HPKE_X25519_LEN],
                      struct sp_hpke_ctx *ctx, struct sp_hpke_trace *trace)
{
	uint8_t ss[SP_HPKE_X25519_LEN];
	EVP_KDF_CTX *kctx;
	int lent, r;

	if (sc == NULL || !sc->ready || sc->suite.kem != SP_HPKE_KEM_X25519_SHA256 || dh == NULL ||
	    enc == NULL || pk_r == NULL || ctx == NULL)
		return -EINVAL;
	if ((kctx = sp_hpke_borrow(sc, &lent)) == NULL)
		return -ENOMEM;
	r = sp_hpke_extract_and_expand(kctx, sc->suite.kem, dh, enc, pk_r, ss);
	if (r == 0)
		r = sp_hpke_key_schedule(kctx, sc, ss, ctx, trace);
	sp_hpke_give_back(sc, kctx, lent);
	OPENSSL_cleanse(ss, sizeof(ss));
	return r;
}

int sp_hpke_sched_ss(struct sp_hpke_sched *sc, const uint8_t ss[32], struct sp_hpke_ctx *ctx,
                     struct sp_hpke_trace *trace)
{
	EVP_KDF_CTX *kctx;
	int lent, r;

	if (sc == NULL || !sc->ready || ss == NULL || ctx == NULL)
		return -EINVAL;
	if ((kctx = sp_hpke_borrow(sc, &lent)) == NULL)
		return -ENOMEM;
	r = sp_hpke_key_schedule(kctx, sc, ss, ctx, trace);
	sp_hpke_give_back(sc, kctx, lent);
	return r;
}

int sp_hpke_sched_setup_s(struct sp_hpke_sched *sched, const uint8_t pk_r[SP_HPKE_X25519_LEN],
                          const uint8_t *ikm_e, size_t ikm_e_len, uint8_t enc[SP_HPKE_X25519_LEN],
                          struct sp_hpke_ctx *ctx, struct sp_hpke_trace *trace)
{
	uint8_t sk_e[SP_HPKE_X25519_LEN], dh[SP_HPKE_X25519_LEN];
	int r = 0;

	if (sched == NULL || !sched->ready || sched->suite.kem != SP_HPKE_KEM_X25519_SHA256 ||
	    pk_r == NULL || enc == NULL || ctx == NULL)
		return -EINVAL;
	/* Encap(pkR) (4.1): skE, pkE = GenerateKeyPair(); dh = DH(skE, pkR); enc = pkE. */
	if (ikm_e != NULL)
		r = sp_hpke_derive_keypair(sched->suite.kem, ikm_e, ikm_e_len, sk_e, enc);
	else if (RAND_bytes(sk_e, sizeof(sk_e)) != 1)
		r = -ENOMEM;
	if (r == 0)
		r = sp_hpke_x25519(sk_e, pk_r, dh, ikm_e != NULL ? NULL : enc);
	if (r == 0)
		r = sp_hpke_sched_kdf(sched, dh, enc, pk_r, ctx, trace);
	OPENSSL_cleanse(sk_e, sizeof(sk_e));
	OPENSSL_cleanse(dh, sizeof(dh));
	return r;
}

int sp_hpke_sched_setup_r(struct sp_hpke_sched *sched, const uint8_t enc[SP_HPKE_X25519_LEN],
                          EVP_PKEY *sk_r, const uint8_t pk_r[SP_HPKE_X25519_LEN],
                          struct sp_hpke_ctx *ctx, struct sp_hpke_trace *trace)
{
	uint8_t dh[SP_HPKE_X25519_LEN];
	int r;

	if (sched == NULL || !sched->ready || sched->suite.kem != SP_HPKE_KEM_X25519_SHA256 ||
	    enc == NULL || sk_r == NULL || pk_r == NULL || ctx == NULL ||
	    !EVP_PKEY_is_a(sk_r, "X25519"))
		return -EINVAL;
	/* Decap(enc, skR) (4.1): dh = DH(skR, pkE); kem_context = enc || pk(skR). */
	r = sp_x25519_key(sk_r, enc, dh, NULL);
	if (r == 0)
		r = sp_hpke_sched_kdf(sched, dh, enc, pk_r, ctx, trace);
	OPENSSL_cleanse(dh, sizeof(dh));
	return r;
}

int sp_hpke_setup_base_s(const struct sp_hpke_suite *suite, const uint8_t pk_r[SP_HPKE_X25519_LEN],
                         const uint8_t *info, size_t info_len, const uint8_t *ikm_e,
                         size_t ikm_e_len, uint8_t enc[SP_HPKE_X25519_LEN], struct sp_hpke_ctx *ctx,
                         struct sp_hpke_trace *trace)
{
	struct sp_hpke_sched sched;
	int r;

	if (pk_r == NULL || enc == NULL || ctx == NULL)
		return -EINVAL;
	r = sp_hpke_sched_init(&sched, suite, info, info_len, SP_HPKE_SCHED_EXPORT);
	if (r != 0)
		return r;
	r = sp_hpke_sched_setup_s(&sched, pk_r, ikm_e, ikm_e_len, enc, ctx, trace);
	sp_hpke_sched_clear(&sched);
	return r;
}

int sp_hpke_setup_base_r(const struct sp_hpke_suite *suite, const uint8_t enc[SP_HPKE_X25519_LEN],
                         const uint8_t sk_r[SP_HPKE_X25519_LEN],
                         const uint8_t pk_r[SP_HPKE_X25519_LEN], const uint8_t *info,
                         size_t info_len, struct sp_hpke_ctx *ctx, struct sp_hpke_trace *trace)
{
	uint8_t pk[SP_HPKE_X25519_LEN];
	EVP_PKEY *key;
	int r;

	if (enc == NULL || sk_r == NULL || ctx == NULL)
		return -EINVAL;
	r = sp_hpke_check_suite(suite, info, info_len);
	if (r != 0)
		return r;
	/* Importing the raw key computes pk(skR) (one multiplication): use it when not given. */
	key = EVP_PKEY_new_raw_private_key_ex(NULL, "X25519", NULL, sk_r, SP_HPKE_X25519_LEN);
	if (key == NULL)
		return -ENOMEM;
	r = pk_r == NULL ? sp_x25519_key(key, NULL, NULL, pk) : 0;
	if (r == 0)
		r = sp_hpke_setup_base_r_key(suite, enc, key, pk_r == NULL ? pk : pk_r, info,
		                             info_len, ctx, trace);
	EVP_PKEY_free(key);
	return r;
}

int sp_hpke_setup_base_r_key(const struct sp_hpke_suite *suite,
                             const uint8_t enc[SP_HPKE_X25519_LEN], EVP_PKEY *sk_r,
                             const uint8_t pk_r[SP_HPKE_X25519_LEN], const uint8_t *info,
                             size_t info_len, struct sp_hpke_ctx *ctx, struct sp_hpke_trace *trace)
{
	struct sp_hpke_sched sched;
	int r;

	if (enc == NULL || sk_r == NULL || pk_r == NULL || ctx == NULL ||
	    !EVP_PKEY_is_a(sk_r, "X25519"))
		return -EINVAL;
	r = sp_hpke_sched_init(&sched, suite, info, info_len, SP_HPKE_SCHED_EXPORT);
	if (r != 0)
		return r;
	r = sp_hpke_sched_setup_r(&sched, enc, sk_r, pk_r, ctx, trace);
	sp_hpke_sched_clear(&sched);
	return r;
}

/* ---- the KEM-generic interface (MLKEM768-X25519) ----------------------------------------- */

/*
 * SHAKE256.LabeledDerive(ikm, "DeriveKeyPair", "", 32) with suite_id "KEM" || I2OSP(kem, 2)
 * (draft-ietf-hpke-hpke section 4: labeled_ikm = ikm || "HPKE-v1" || suite_id ||
 * lengthPrefixed(label) || I2OSP(L, 2) || context). Returns 0, -EINVAL, -ENOMEM.
 */
static int sp_hpke_shake_derive_keypair_seed(uint16_t kem, const uint8_t *ikm, size_t ikm_len,
                                             uint8_t seed[32])
{
	static const char label[] = "DeriveKeyPair";
	struct sp_hpke_sid sid;
	uint8_t lp[2], l2[2];
	EVP_MD_CTX *md;
	int ok;

	if (ikm == NULL || ikm_len == 0 || ikm_len > SP_HPKE_MAX_INFO)
		return -EINVAL;
	sp_hpke_kem_sid(kem, &sid);
	sp_put16(lp, (uint16_t)(sizeof(label) - 1));
	sp_put16(l2, 32);
	if ((md = EVP_MD_CTX_new()) == NULL)
		return -ENOMEM;
	ok = EVP_DigestInit_ex2(md, EVP_shake256(), NULL) == 1 &&
	     EVP_DigestUpdate(md, ikm, ikm_len) == 1 && EVP_DigestUpdate(md, sp_hpke_v1, 7) == 1 &&
	     EVP_DigestUpdate(md, sid.b, sid.len) == 1 && EVP_DigestUpdate(md, lp, 2) == 1 &&
	     EVP_DigestUpdate(md, label, sizeof(label) - 1) == 1 &&
	     EVP_DigestUpdate(md, l2, 2) == 1 && EVP_DigestFinalXOF(md, seed, 32) == 1;
	EVP_MD_CTX_free(md);
	return ok ? 0 : -ENOMEM;
}

/* Checks a KEM id and the lengths given against its Nenc, Npk, Nsk (0 = not given). */
static int sp_hpke_kem_check(uint16_t kem, size_t enc_len, size_t pk_len, size_t sk_len)
{
	size_t nenc, npk, nsk;
	int r = sp_hpke_kem_lengths(kem, &nenc, &npk, &nsk);

	if (r != 0)
		return r;
	if ((enc_len != 0 && enc_len != nenc) || (pk_len != 0 && pk_len != npk) ||
	    (sk_len != 0 && sk_len != nsk))
		return -EINVAL;
	return 0;
}

int sp_hpke_kem_derive_keypair(uint16_t kem, const uint8_t *ikm, size_t ikm_len, uint8_t *sk,
                               size_t sk_len, uint8_t *pk, size_t pk_len)
{
	int r;

	if (sk == NULL || pk == NULL || sk_len == 0 || pk_len == 0)
		return -EINVAL;
	if ((r = sp_hpke_kem_check(kem, 0, pk_len, sk_len)) != 0)
		return r;
	if (kem == SP_HPKE_KEM_X25519_SHA256)
		return sp_hpke_derive_keypair(kem, ikm, ikm_len, sk, pk);
	r = sp_hpke_shake_derive_keypair_seed(kem, ikm, ikm_len, sk);
	if (r == 0)
		r = sp_xwing_public_key(sk, pk);
	if (r != 0)
		OPENSSL_cleanse(sk, sk_len);
	return r;
}

int sp_hpke_kem_generate_keypair(uint16_t kem, uint8_t *sk, size_t sk_len, uint8_t *pk,
                                 size_t pk_len)
{
	int r;

	if (sk == NULL || pk == NULL || sk_len == 0 || pk_len == 0)
		return -EINVAL;
	if ((r = sp_hpke_kem_check(kem, 0, pk_len, sk_len)) != 0)
		return r;
	if (kem == SP_HPKE_KEM_X25519_SHA256)
		return sp_hpke_generate_keypair(kem, sk, pk);
	/* GenerateKeyPair: a random 32-byte seed. */
	if (RAND_bytes(sk, (int)sk_len) != 1)
		return -ENOMEM;
	r = sp_xwing_public_key(sk, pk);
	if (r != 0)
		OPENSSL_cleanse(sk, sk_len);
	return r;
}

/* KeySchedule for a KEM that hands over its shared_secret directly: a one-off schedule. */
static int sp_hpke_schedule_ss(const struct sp_hpke_suite *suite, const uint8_t *info,
                               size_t info_len, const uint8_t ss[32], struct sp_hpke_ctx *ctx,
                               struct sp_hpke_trace *trace)
{
	struct sp_hpke_sched sched;
	EVP_KDF_CTX *kctx;
	int lent, r;

	r = sp_hpke_sched_init(&sched, suite, info, info_len, SP_HPKE_SCHED_EXPORT);
	if (r != 0)
		return r;
	if ((kctx = sp_hpke_borrow(&sched, &lent)) == NULL) {
		sp_hpke_sched_clear(&sched);
		return -ENOMEM;
	}
	r = sp_hpke_key_schedule(kctx, &sched, ss, ctx, trace);
	sp_hpke_give_back(&sched, kctx, lent);
	sp_hpke_sched_clear(&sched);
	return r;
}

int sp_hpke_kem_setup_base_s(const struct sp_hpke_suite *suite, const uint8_t *pk_r,
                             size_t pk_r_len, const uint8_t *info, size_t info_len,
                             const uint8_t *ikm_e, size_t ikm_e_len, uint8_t *enc, size_t enc_len,
                             struct sp_hpke_ctx *ctx, struct sp_hpke_trace *trace)
{
	uint8_t ss[SP_XWING_SS_LEN];
	int r;

	if (suite == NULL || pk_r == NULL || enc == NULL || ctx == NULL || pk_r_len == 0 ||
	    enc_len == 0)
		return -EINVAL;
	if ((r = sp_hpke_kem_check(suite->kem, enc_len, pk_r_len, 0)) != 0)
		return r;
	if (suite->kem == SP_HPKE_KEM_X25519_SHA256)
		return sp_hpke_setup_base_s(suite, pk_r, info, info_len, ikm_e, ikm_e_len, enc, ctx,
		                            trace);
	if ((r = sp_hpke_check_suite(suite, info, info_len)) != 0)
		return r;
	if (ikm_e != NULL && ikm_e_len != SP_HPKE_XWING_IKME_LEN)
		return -EINVAL;
	/* Encap(pkR): X-Wing's encapsulation; its shared secret goes to the key schedule as is. */
	r = sp_xwing_encap(pk_r, ikm_e, enc, ss);
	if (r == 0)
		r = sp_hpke_schedule_ss(suite, info, info_len, ss, ctx, trace);
	OPENSSL_cleanse(ss, sizeof(ss));
	return r;
}

int sp_hpke_kem_setup_base_r(const struct sp_hpke_suite *suite, const uint8_t *enc, size_t enc_len,
                             const uint8_t *sk_r, size_t sk_r_len, const uint8_t *info,
                             size_t info_len, struct sp_hpke_ctx *ctx, struct sp_hpke_trace *trace)
{
	uint8_t ss[SP_XWING_SS_LEN];
	int r;

	if (suite == NULL || enc == NULL || sk_r == NULL || ctx == NULL || enc_len == 0 ||
	    sk_r_len == 0)
		return -EINVAL;
	if ((r = sp_hpke_kem_check(suite->kem, enc_len, 0, sk_r_len)) != 0)
		return r;
	if (suite->kem == SP_HPKE_KEM_X25519_SHA256)
		return sp_hpke_setup_base_r(suite, enc, sk_r, NULL, info, info_len, ctx, trace);
	if ((r = sp_hpke_check_suite(suite, info, info_len)) != 0)
		return r;
	r = sp_xwing_decap(sk_r, enc, ss);
	if (r == 0)
		r = sp_hpke_schedule_ss(suite, info, info_len, ss, ctx, trace);
	OPENSSL_cleanse(ss, sizeof(ss));
	return r;
}

void sp_hpke_nonce(const struct sp_hpke_ctx *ctx, uint8_t nonce[SP_HPKE_NN])
{
	/* ComputeNonce(seq) (5.2): base_nonce XOR I2OSP(seq, Nn). */
	memcpy(nonce, ctx->base_nonce, SP_HPKE_NN);
	for (size_t i = 0; i < 8; i++)
		nonce[SP_HPKE_NN - 1 - i] ^= (uint8_t)(ctx->seq >> (8 * i));
}

/* One AEAD operation with the context's key and current nonce. Returns 0, -EBADMSG, -ENOMEM. */
static int sp_hpke_aead(const struct sp_hpke_ctx *ctx, int enc, const uint8_t *aad, size_t aad_len,
                        const uint8_t *in, size_t in_len, uint8_t *out, uint8_t tag[SP_HPKE_NT])
{
	const EVP_CIPHER *cipher = ctx->suite.aead == SP_HPKE_AEAD_AES128GCM
	                                   ? sp_hpke_algs.aes128gcm
	                                   : sp_hpke_algs.chacha;
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	uint8_t nonce[SP_HPKE_NN];
	int outl, r = -ENOMEM;

	if (c == NULL)
		return -ENOMEM;
	sp_hpke_nonce(ctx, nonce);
	/* EVP lengths are int: cap what one call sees. */
	if (aad_len > INT32_MAX || in_len > INT32_MAX)
		goto out;
	if (EVP_CipherInit_ex2(c, cipher, ctx->key, nonce, enc, NULL) != 1)
		goto out;
	if (aad_len > 0 && EVP_CipherUpdate(c, NULL, &outl, aad, (int)aad_len) != 1)
		goto out;
	if (in_len > 0 && EVP_CipherUpdate(c, out, &outl, in, (int)in_len) != 1)
		goto out;
	if (enc) {
		if (EVP_CipherFinal_ex(c, out + in_len, &outl) != 1 ||
		    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, SP_HPKE_NT, tag) != 1)
			goto out;
	} else {
		if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, SP_HPKE_NT, tag) != 1)
			goto out;
		if (EVP_CipherFinal_ex(c, out + in_len, &outl) != 1) {
			r = -EBADMSG;
			goto out;
		}
	}
	r = 0;
out:
	EVP_CIPHER_CTX_free(c);
	return r;
}

static int sp_hpke_ctx_check(const struct sp_hpke_ctx *ctx)
{
	if (ctx == NULL || !sp_hpke_suite_supported(&ctx->suite))
		return -EINVAL;
	/* 5.2: the sequence number must not wrap; a u64 never reaches 2^96 - 1, so stop at 2^64
	 * - 1. */
	if (ctx->seq == UINT64_MAX)
		return -EOVERFLOW;
	return sp_hpke_ready() ? 0 : -ENOMEM;
}

int sp_hpke_seal(struct sp_hpke_ctx *ctx, const uint8_t *aad, size_t aad_len, const uint8_t *pt,
                 size_t pt_len, uint8_t *ct)
{
	uint8_t tag[SP_HPKE_NT];
	int r = sp_hpke_ctx_check(ctx);

	if (r != 0)
		return r;
	if ((aad == NULL && aad_len > 0) || (pt == NULL && pt_len > 0) || ct == NULL)
		return -EINVAL;
	r = sp_hpke_aead(ctx, 1, aad, aad_len, pt, pt_len, ct, tag);
	if (r != 0)
		return r;
	memcpy(ct + pt_len, tag, SP_HPKE_NT);
	ctx->seq++;
	return 0;
}

int sp_hpke_open(struct sp_hpke_ctx *ctx, const uint8_t *aad, size_t aad_len, const uint8_t *ct,
                 size_t ct_len, uint8_t *pt)
{
	uint8_t tag[SP_HPKE_NT];
	size_t pt_len;
	int r = sp_hpke_ctx_check(ctx);

	if (r != 0)
		return r;
	if ((aad == NULL && aad_len > 0) || ct == NULL || ct_len < SP_HPKE_NT || pt == NULL)
		return -EINVAL;
	pt_len = ct_len - SP_HPKE_NT;
	/* Copy the tag first: pt may overlap ct. */
	memcpy(tag, ct + pt_len, SP_HPKE_NT);
	r = sp_hpke_aead(ctx, 0, aad, aad_len, ct, pt_len, pt, tag);
	if (r != 0) {
		OPENSSL_cleanse(pt, pt_len);
		return r;
	}
	ctx->seq++;
	return 0;
}

int sp_hpke_export(const struct sp_hpke_ctx *ctx, const uint8_t *exporter_context,
                   size_t exporter_context_len, uint8_t *out, size_t out_len)
{
	struct sp_hpke_sid sid;
	EVP_KDF_CTX *kctx;
	int r;

	if (ctx == NULL || !sp_hpke_suite_supported(&ctx->suite) || !ctx->has_exporter ||
	    out == NULL || (exporter_context == NULL && exporter_context_len > 0))
		return -EINVAL;
	if ((kctx = sp_hkdf_new()) == NULL)
		return -ENOMEM;
	sp_hpke_suite_sid(&ctx->suite, &sid);
	r = sp_labeled_expand(kctx, &sid, ctx->exporter_secret, "sec", exporter_context,
	                      exporter_context_len, out, out_len);
	EVP_KDF_CTX_free(kctx);
	return r;
}

void sp_hpke_ctx_clear(struct sp_hpke_ctx *ctx)
{
	if (ctx != NULL)
		OPENSSL_cleanse(ctx, sizeof(*ctx));
}
