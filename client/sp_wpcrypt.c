/*
 * sp_wpcrypt.c: RFC 8291 message decryption (sp_wpcrypt.h).
 *
 *   ecdh_secret = ECDH(ua_private, as_public)          as_public = the body's key id
 *   PRK_key     = HMAC-SHA-256(auth_secret, ecdh_secret)
 *   IKM         = HMAC-SHA-256(PRK_key, "WebPush: info" 0x00 ua_public as_public 0x01)
 *   PRK         = HMAC-SHA-256(salt, IKM)
 *   CEK         = HMAC-SHA-256(PRK, "Content-Encoding: aes128gcm" 0x00 0x01)[0..16]
 *   NONCE       = HMAC-SHA-256(PRK, "Content-Encoding: nonce" 0x00 0x01)[0..12]
 * then AES-128-GCM of the single record (sequence 0: the nonce as it is), whose plaintext
 * ends with the last-record delimiter 0x02 and optional zero padding (RFC 8188 2).
 */
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <string.h>

#include "sp_identity.h"
#include "sp_wpcrypt.h"

#define HEADER_LEN 86 /* salt 16, rs 4, idlen 1, key id 65 */
#define TAG_LEN    16

static EVP_PKEY *private_key(const uint8_t priv[SP_WP_PRIV_LEN], const uint8_t pub[SP_WP_PUB_LEN])
{
	OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
	BIGNUM *d = BN_bin2bn(priv, SP_WP_PRIV_LEN, NULL);
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	EVP_PKEY *key = NULL;

	if (!b || !d || !ctx ||
	    !OSSL_PARAM_BLD_push_utf8_string(b, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
	    !OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_PRIV_KEY, d) ||
	    (pub &&
	     !OSSL_PARAM_BLD_push_octet_string(b, OSSL_PKEY_PARAM_PUB_KEY, pub, SP_WP_PUB_LEN)))
		goto out;
	params = OSSL_PARAM_BLD_to_param(b);
	if (!params || EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, &key, pub ? EVP_PKEY_KEYPAIR : EVP_PKEY_PRIVATE_KEY, params) !=
	            1)
		key = NULL;
out:
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(b);
	BN_clear_free(d);
	EVP_PKEY_CTX_free(ctx);
	return key;
}

int sp_wp_keys_new(uint8_t priv[SP_WP_PRIV_LEN], uint8_t pub[SP_WP_PUB_LEN],
                   uint8_t auth[SP_WP_AUTH_LEN])
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	BIGNUM *d = NULL;
	size_t n = 0;
	int rc = -SP_WP_E_INTERNAL;

	if (!k)
		return rc;
	if (EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pub, SP_WP_PUB_LEN, &n) ==
	            1 &&
	    n == SP_WP_PUB_LEN && EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_PRIV_KEY, &d) == 1 &&
	    BN_bn2binpad(d, priv, SP_WP_PRIV_LEN) == SP_WP_PRIV_LEN &&
	    RAND_bytes(auth, SP_WP_AUTH_LEN) == 1)
		rc = 0;
	BN_clear_free(d);
	EVP_PKEY_free(k);
	return rc;
}

int sp_wp_public(const uint8_t priv[SP_WP_PRIV_LEN], uint8_t pub[SP_WP_PUB_LEN])
{
	BIGNUM *d = BN_bin2bn(priv, SP_WP_PRIV_LEN, NULL);
	EC_GROUP *g = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
	EC_POINT *p = g ? EC_POINT_new(g) : NULL;
	int rc = -SP_WP_E_INTERNAL;

	if (d && p && !BN_is_zero(d) && EC_POINT_mul(g, p, d, NULL, NULL, NULL) == 1 &&
	    EC_POINT_point2oct(g, p, POINT_CONVERSION_UNCOMPRESSED, pub, SP_WP_PUB_LEN, NULL) ==
	            SP_WP_PUB_LEN)
		rc = 0;
	EC_POINT_free(p);
	EC_GROUP_free(g);
	BN_clear_free(d);
	return rc;
}

static int hmac(const uint8_t *key, size_t kl, const uint8_t *in, size_t n, uint8_t out[32])
{
	unsigned len = 32;

	return HMAC(EVP_sha256(), key, (int)kl, in, n, out, &len) ? 0 : -1;
}

int sp_wp_open(const uint8_t priv[SP_WP_PRIV_LEN], const uint8_t pub[SP_WP_PUB_LEN],
               const uint8_t auth[SP_WP_AUTH_LEN], const uint8_t *body, size_t len, uint8_t *out,
               size_t cap, size_t *out_len)
{
	const uint8_t *salt = body, *as_pub = body + 21, *ct;
	uint8_t secret[32], prk_key[32], ikm[32], prk[32], cek[32], nonce[32];
	uint8_t info[13 + 1 + 2 * SP_WP_PUB_LEN + 1];
	static const char cek_info[] = "Content-Encoding: aes128gcm\0\1";
	static const char nonce_info[] = "Content-Encoding: nonce\0\1";
	EVP_PKEY *me = NULL, *peer = NULL;
	EVP_PKEY_CTX *dctx = NULL;
	EVP_CIPHER_CTX *c = NULL;
	size_t slen = sizeof(secret), ct_len;
	uint32_t rs;
	int n1 = 0, n2 = 0, rc = -SP_WP_E_INTERNAL;

	if (len < HEADER_LEN + TAG_LEN + 1 || body[20] != SP_WP_PUB_LEN || body[21] != 0x04)
		return -SP_WP_E_MALFORMED;
	rs = (uint32_t)body[16] << 24 | (uint32_t)body[17] << 16 | (uint32_t)body[18] << 8 |
	     body[19];
	ct = body + HEADER_LEN;
	ct_len = len - HEADER_LEN;
	if (rs < 18 || ct_len > rs)
		return -SP_WP_E_MALFORMED;
	if (cap < ct_len - TAG_LEN)
		return -SP_WP_E_SPACE;
	peer = sp_p256_point_key(as_pub);
	if (!peer)
		return -SP_WP_E_KEY;
	me = private_key(priv, pub);
	dctx = me ? EVP_PKEY_CTX_new(me, NULL) : NULL;
	if (!dctx || EVP_PKEY_derive_init(dctx) != 1 || EVP_PKEY_derive_set_peer(dctx, peer) != 1 ||
	    EVP_PKEY_derive(dctx, secret, &slen) != 1 || slen != 32)
		goto out;
	memcpy(info, "WebPush: info", 13);
	info[13] = 0;
	memcpy(info + 14, pub, SP_WP_PUB_LEN);
	memcpy(info + 14 + SP_WP_PUB_LEN, as_pub, SP_WP_PUB_LEN);
	info[sizeof(info) - 1] = 1;
	if (hmac(auth, SP_WP_AUTH_LEN, secret, 32, prk_key) < 0 ||
	    hmac(prk_key, 32, info, sizeof(info), ikm) < 0 || hmac(salt, 16, ikm, 32, prk) < 0 ||
	    hmac(prk, 32, (const uint8_t *)cek_info, sizeof(cek_info) - 1, cek) < 0 ||
	    hmac(prk, 32, (const uint8_t *)nonce_info, sizeof(nonce_info) - 1, nonce) < 0)
		goto out;
	c = EVP_CIPHER_CTX_new();
	if (!c || EVP_DecryptInit_ex(c, EVP_aes_128_gcm(), NULL, NULL, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) != 1 ||
	    EVP_DecryptInit_ex(c, NULL, NULL, cek, nonce) != 1 ||
	    EVP_DecryptUpdate(c, out, &n1, ct, (int)(ct_len - TAG_LEN)) != 1 ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_LEN,
	                        (void *)(ct + ct_len - TAG_LEN)) != 1)
		goto out;
	if (EVP_DecryptFinal_ex(c, out + n1, &n2) != 1) {
		rc = -SP_WP_E_DECRYPT;
		goto out;
	}
	{
		size_t n = (size_t)n1 + (size_t)n2;

		while (n > 0 && out[n - 1] == 0)
			n--;
		if (n == 0 || out[n - 1] != 0x02) {
			rc = -SP_WP_E_PADDING;
			goto out;
		}
		*out_len = n - 1;
	}
	rc = 0;
out:
	OPENSSL_cleanse(secret, sizeof(secret));
	OPENSSL_cleanse(prk_key, sizeof(prk_key));
	OPENSSL_cleanse(ikm, sizeof(ikm));
	OPENSSL_cleanse(prk, sizeof(prk));
	OPENSSL_cleanse(cek, sizeof(cek));
	EVP_CIPHER_CTX_free(c);
	EVP_PKEY_CTX_free(dctx);
	EVP_PKEY_free(me);
	EVP_PKEY_free(peer);
	return rc;
}
