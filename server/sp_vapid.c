/*
 * sp_vapid.c: the VAPID check (sp_vapid.h). The JWT's signature is the raw r || s of RFC 7518
 * 3.4 (32 bytes each); OpenSSL verifies DER, so it is rebuilt as an ECDSA_SIG first. The key
 * k is an uncompressed point; it becomes a public key by prefixing the fixed DER of a P-256
 * SubjectPublicKeyInfo, which avoids building the key by parameters.
 */
#include <errno.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <string.h>
#include <strings.h>

#include "sp_identity.h"
#include "sp_b64.h"
#include "sp_vapid.h"

#define JWT_PART_MAX 2048

static int verify_es256(const uint8_t point[SP_VAPID_KEY_LEN], const char *input, size_t n,
                        const uint8_t sig[64])
{
	EVP_PKEY *key = sp_p256_point_key(point);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	ECDSA_SIG *es = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
	uint8_t *der = NULL;
	int der_len, rc = -1;

	if (!key || !md || !es || !r || !s)
		goto out;
	if (ECDSA_SIG_set0(es, r, s) != 1)
		goto out;
	r = s = NULL; /* es owns them */
	der_len = i2d_ECDSA_SIG(es, &der);
	if (der_len <= 0)
		goto out;
	if (EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) != 1)
		goto out;
	if (EVP_DigestVerify(md, der, (size_t)der_len, (const uint8_t *)input, n) == 1)
		rc = 0;
out:
	OPENSSL_free(der);
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(es);
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(key);
	return rc;
}

/* Finds "name=" in the comma-separated parameters of the vapid scheme. */
static int param(const char *p, size_t n, const char *name, const char **v, size_t *vn)
{
	size_t nl = strlen(name);
	size_t i = 0;

	while (i < n) {
		size_t start, end;

		while (i < n && (p[i] == ' ' || p[i] == ',' || p[i] == '\t'))
			i++;
		start = i;
		while (i < n && p[i] != ',')
			i++;
		end = i;
		while (end > start && (p[end - 1] == ' ' || p[end - 1] == '\t'))
			end--;
		if (end - start > nl && strncasecmp(p + start, name, nl) == 0 &&
		    p[start + nl] == '=') {
			*v = p + start + nl + 1;
			*vn = end - start - nl - 1;
			return 0;
		}
	}
	return -1;
}

static json_t *decode_json(const char *s, size_t n)
{
	uint8_t buf[JWT_PART_MAX];
	long len = sp_b64url_decode(s, n, buf, sizeof(buf));

	if (len <= 0)
		return NULL;
	return json_loadb((const char *)buf, (size_t)len, JSON_REJECT_DUPLICATES, NULL);
}

int sp_vapid_check(const char *auth, size_t len, const char *origin, int64_t now,
                   uint8_t key[SP_VAPID_KEY_LEN], int64_t *exp_out, const char **why)
{
	const char *t, *k, *dot1, *dot2;
	size_t tn, kn;
	uint8_t point[SP_VAPID_KEY_LEN + 1], sig[65];
	json_t *hdr = NULL, *claims = NULL;
	const char *alg, *typ, *aud;
	json_t *exp;
	int rc;

	if (!auth || len < 6 || strncasecmp(auth, "vapid ", 6) != 0) {
		*why = "no vapid authorization";
		return -SP_VAPID_ABSENT;
	}
	auth += 6;
	len -= 6;
	if (param(auth, len, "t", &t, &tn) < 0 || param(auth, len, "k", &k, &kn) < 0) {
		*why = "vapid: t and k are required";
		return -SP_VAPID_MALFORMED;
	}
	if (sp_b64url_decode(k, kn, point, sizeof(point)) != SP_VAPID_KEY_LEN || point[0] != 0x04) {
		*why = "vapid: k is not an uncompressed P-256 point";
		return -SP_VAPID_MALFORMED;
	}
	dot1 = memchr(t, '.', tn);
	dot2 = dot1 ? memchr(dot1 + 1, '.', tn - (size_t)(dot1 + 1 - t)) : NULL;
	if (!dot1 || !dot2 || memchr(dot2 + 1, '.', tn - (size_t)(dot2 + 1 - t))) {
		*why = "vapid: t is not a JWS compact serialization";
		return -SP_VAPID_MALFORMED;
	}
	if (sp_b64url_decode(dot2 + 1, tn - (size_t)(dot2 + 1 - t), sig, sizeof(sig)) != 64) {
		*why = "vapid: the signature is not 64 bytes";
		return -SP_VAPID_MALFORMED;
	}
	hdr = decode_json(t, (size_t)(dot1 - t));
	claims = decode_json(dot1 + 1, (size_t)(dot2 - dot1 - 1));
	if (!hdr || !claims || !json_is_object(hdr) || !json_is_object(claims)) {
		*why = "vapid: the JWT header or claims are not JSON objects";
		rc = -SP_VAPID_MALFORMED;
		goto out;
	}
	alg = json_string_value(json_object_get(hdr, "alg"));
	typ = json_string_value(json_object_get(hdr, "typ"));
	if (!alg || strcmp(alg, "ES256") != 0 ||
	    (json_object_get(hdr, "typ") && (!typ || strcasecmp(typ, "JWT") != 0))) {
		*why = "vapid: the JWT is not ES256";
		rc = -SP_VAPID_BAD_ALG;
		goto out;
	}
	if (verify_es256(point, t, (size_t)(dot2 - t), sig) < 0) {
		*why = "vapid: the signature does not verify with k";
		rc = -SP_VAPID_BAD_SIG;
		goto out;
	}
	aud = json_string_value(json_object_get(claims, "aud"));
	if (!aud || strcmp(aud, origin) != 0) {
		*why = "vapid: aud is not this push service's origin";
		rc = -SP_VAPID_BAD_AUD;
		goto out;
	}
	exp = json_object_get(claims, "exp");
	if (!json_is_integer(exp) || json_integer_value(exp) <= now ||
	    json_integer_value(exp) > now + SP_VAPID_MAX_EXP + SP_VAPID_SKEW) {
		*why = "vapid: exp is missing, past, or more than 24 hours ahead";
		rc = -SP_VAPID_EXPIRED;
		goto out;
	}
	memcpy(key, point, SP_VAPID_KEY_LEN);
	if (exp_out)
		*exp_out = (int64_t)json_integer_value(exp);
	rc = 0;
out:
	json_decref(hdr);
	json_decref(claims);
	return rc;
}
