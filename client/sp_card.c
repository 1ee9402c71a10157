/*
 * sp_card: contact cards. The signature covers a canonical byte string built from the decoded
 * fields (PROTOCOL.md 13.8), never the JSON text, so whitespace and key order do not matter.
 */
#include "sp_card.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

static const uint8_t sp_card_label[] = "sealpush/1 contact card"; /* NUL included when signed */
#define SP_CARD_LABEL_LEN sizeof(sp_card_label)
#define SP_CARD_SIG_MAX   80

/* Base64 (RFC 4648, standard alphabet, padded) of len bytes; malloc'd, NUL-terminated. */
static char *sp_b64(const uint8_t *in, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);

	if (out != NULL)
		EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	return out;
}

/*
 * Decodes canonical base64 (padded, no whitespace, at most max bytes of output) into a malloc'd
 * buffer. Returns 0, SP_SEAL_ERR_CARD_MALFORMED, -ENOMEM.
 */
static int sp_unb64(const char *in, size_t max, uint8_t **out, size_t *out_len)
{
	size_t n = strlen(in), len, pad = 0;
	uint8_t *buf;
	char *check;
	int dl;

	if (n == 0 || n % 4 != 0 || n / 4 * 3 > max + 2)
		return SP_SEAL_ERR_CARD_MALFORMED;
	if (in[n - 1] == '=')
		pad = in[n - 2] == '=' ? 2 : 1;
	buf = malloc(n / 4 * 3);
	if (buf == NULL)
		return -ENOMEM;
	dl = EVP_DecodeBlock(buf, (const unsigned char *)in, (int)n);
	len = n / 4 * 3 - pad;
	if (dl < 0 || (size_t)dl != n / 4 * 3 || len > max) {
		free(buf);
		return SP_SEAL_ERR_CARD_MALFORMED;
	}
	/* Canonical: encoding the bytes again gives the same text (no stray bits, no whitespace).
	 */
	check = sp_b64(buf, len);
	if (check == NULL || strcmp(check, in) != 0) {
		int r = check == NULL ? -ENOMEM : SP_SEAL_ERR_CARD_MALFORMED;

		free(check);
		free(buf);
		return r;
	}
	free(check);
	*out = buf;
	*out_len = len;
	return 0;
}

/* The signed bytes (13.8): v1 with one suite by id, v2 and v3 with the list by name, v3 with
 * the key epoch too (13.11). Returns a malloc'd buffer and its length, or NULL. */
static uint8_t *sp_card_tbs(const struct sp_card *c, size_t *len)
{
	size_t n = SP_CARD_LABEL_LEN + 1 + SP_TOKEN_LEN + 2 + c->spki_len + 4 + c->cert_len + 8;
	uint8_t *buf, *p;
	uint64_t t = (uint64_t)c->issued_at;

	if (c->version == SP_CARD_VERSION_V1) {
		n += 2 + 2 + c->seal[0].pub_len;
	} else {
		n += 1;
		for (size_t i = 0; i < c->nseal; i++)
			n += 1 + strlen(c->seal[i].name) + 2 + c->seal[i].pub_len;
	}
	if (c->version == SP_CARD_VERSION)
		n += 4;
	if (c->has_access)
		n += 1 + SP_CARD_ACCESS_LEN;
	buf = malloc(n);
	if (buf == NULL)
		return NULL;
	p = buf;
	memcpy(p, sp_card_label, SP_CARD_LABEL_LEN);
	p += SP_CARD_LABEL_LEN;
	*p++ = (uint8_t)c->version;
	memcpy(p, c->peer.token, SP_TOKEN_LEN);
	p += SP_TOKEN_LEN;
	*p++ = (uint8_t)(c->spki_len >> 8);
	*p++ = (uint8_t)c->spki_len;
	memcpy(p, c->spki, c->spki_len);
	p += c->spki_len;
	for (int i = 0; i < 4; i++)
		*p++ = (uint8_t)(c->cert_len >> (24 - 8 * i));
	if (c->cert_len > 0)
		memcpy(p, c->cert, c->cert_len);
	p += c->cert_len;
	if (c->version == SP_CARD_VERSION_V1) {
		*p++ = (uint8_t)(c->seal[0].suite >> 8);
		*p++ = (uint8_t)c->seal[0].suite;
	} else {
		*p++ = (uint8_t)c->nseal;
	}
	for (size_t i = 0; i < c->nseal; i++) {
		const struct sp_card_seal *e = &c->seal[i];

		if (c->version != SP_CARD_VERSION_V1) {
			size_t nl = strlen(e->name);

			*p++ = (uint8_t)nl;
			memcpy(p, e->name, nl);
			p += nl;
		}
		*p++ = (uint8_t)(e->pub_len >> 8);
		*p++ = (uint8_t)e->pub_len;
		memcpy(p, e->pub, e->pub_len);
		p += e->pub_len;
	}
	if (c->version == SP_CARD_VERSION)
		for (int i = 0; i < 4; i++)
			*p++ = (uint8_t)(c->epoch >> (24 - 8 * i));
	for (int i = 0; i < 8; i++)
		*p++ = (uint8_t)(t >> (56 - 8 * i));
	if (c->has_access) { /* 17.7: after issued_at, so that a card without it signs as before */
		*p++ = SP_CARD_ACCESS_LEN;
		memcpy(p, c->access_key, SP_CARD_ACCESS_LEN);
		p += SP_CARD_ACCESS_LEN;
	}
	*len = n;
	return buf;
}

int sp_card_supersedes(const struct sp_card *have, const struct sp_card *got)
{
	if (have == NULL || got == NULL ||
	    CRYPTO_memcmp(have->peer.token, got->peer.token, SP_TOKEN_LEN) != 0)
		return -EINVAL;
	if (got->epoch > have->epoch ||
	    (got->epoch == have->epoch && got->issued_at >= have->issued_at))
		return 0;
	return SP_SEAL_ERR_CARD_STALE;
}

void sp_card_clear(struct sp_card *c)
{
	if (c == NULL)
		return;
	free(c->spki);
	free(c->cert);
	for (size_t i = 0; i < SP_CARD_SEAL_MAX; i++)
		free(c->seal[i].pub);
	OPENSSL_cleanse(c, sizeof(*c)); /* the access key too */
}

int sp_card_pick(const struct sp_card *c, const uint16_t *accept, size_t n,
                 struct sp_seal_peer *out)
{
	uint8_t token[SP_TOKEN_LEN];

	if (c == NULL || out == NULL || (accept == NULL && n > 0))
		return -EINVAL;
	memcpy(token, c->peer.token, SP_TOKEN_LEN); /* out may be &c->peer */
	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < c->nseal; i++) {
		const struct sp_card_seal *e = &c->seal[i];
		int ok = 0;

		if (e->suite == 0 || e->pub_len > SP_SEAL_PUB_MAX)
			continue;
		if (accept == NULL)
			ok = sp_seal_suite_implemented(e->suite);
		for (size_t j = 0; accept != NULL && j < n; j++)
			ok |= accept[j] == e->suite;
		if (!ok)
			continue;
		memcpy(out->token, token, SP_TOKEN_LEN);
		out->epoch = c->epoch;
		out->suite = e->suite;
		out->pub_len = e->pub_len;
		memcpy(out->pub, e->pub, e->pub_len);
		return 0;
	}
	memcpy(out->token, token, SP_TOKEN_LEN);
	return SP_SEAL_ERR_SUITE;
}

/* The version sp_card_make() writes: 3 once the sealer has an epoch, 2 with several suites,
 * else 1. */
static int sp_card_default_version(const struct sp_sealer *s)
{
	uint16_t suites[SP_CARD_SEAL_MAX];

	return sp_sealer_epoch(s) > 0                              ? SP_CARD_VERSION
	       : sp_sealer_suites(s, suites, SP_CARD_SEAL_MAX) > 1 ? SP_CARD_VERSION_V2
	                                                           : SP_CARD_VERSION_V1;
}

int sp_card_make_version(const struct sp_sealer *s, int64_t issued_at, int version, char **json)
{
	return sp_card_make_access(s, issued_at, version, NULL, json);
}

int sp_card_make_access(const struct sp_sealer *s, int64_t issued_at, int version,
                        const uint8_t *access_key, char **json)
{
	struct sp_seal_peer peers[SP_CARD_SEAL_MAX];
	uint16_t suites[SP_CARD_SEAL_MAX];
	struct sp_card c;
	json_t *root = NULL, *seal = NULL;
	unsigned char *der = NULL;
	uint8_t *tbs = NULL, sig[SP_CARD_SIG_MAX];
	char hex[SP_TOKEN_HEX_LEN + 1], *spki64 = NULL, *cert64 = NULL,
	                                *pub64[SP_CARD_SEAL_MAX] = {0};
	char *sig64 = NULL, *access64 = NULL;
	const char *suite_name;
	size_t tbs_len, sig_len;
	int r = -ENOMEM, n;

	if (s != NULL && version == 0)
		version = sp_card_default_version(s);
	if (s == NULL || json == NULL || issued_at < 0 ||
	    (version != SP_CARD_VERSION_V1 && version != SP_CARD_VERSION_V2 &&
	     version != SP_CARD_VERSION) ||
	    (version == SP_CARD_VERSION && sp_sealer_epoch(s) == 0))
		return -EINVAL;
	*json = NULL;
	memset(&c, 0, sizeof(c));
	c.version = version;
	c.nseal = sp_sealer_suites(s, suites, version == SP_CARD_VERSION_V1 ? 1 : SP_CARD_SEAL_MAX);
	for (size_t i = 0; i < c.nseal; i++) {
		if (sp_sealer_peer_suite(s, suites[i], &peers[i]) != 0 ||
		    sp_seal_suite_info(suites[i], NULL, NULL, &suite_name) != 0) {
			r = SP_SEAL_ERR_SUITE;
			goto out;
		}
		c.seal[i].suite = suites[i];
		snprintf(c.seal[i].name, sizeof(c.seal[i].name), "%s", suite_name);
		c.seal[i].pub = peers[i].pub;
		c.seal[i].pub_len = peers[i].pub_len;
	}
	c.peer = peers[0];
	c.epoch = version == SP_CARD_VERSION ? sp_sealer_epoch(s) : 0;
	c.peer.epoch = c.epoch;
	c.spki = (uint8_t *)(uintptr_t)sp_sealer_spki(s, &c.spki_len);
	c.issued_at = issued_at;
	if (access_key != NULL) {
		c.has_access = 1;
		memcpy(c.access_key, access_key, SP_CARD_ACCESS_LEN);
	}
	if (sp_sealer_cert(s) != NULL) {
		n = i2d_X509(sp_sealer_cert(s), &der);
		if (n <= 0 || n > SP_CARD_CERT_MAX) {
			r = SP_SEAL_ERR_CRYPTO;
			goto out;
		}
		c.cert = der;
		c.cert_len = (size_t)n;
	}
	tbs = sp_card_tbs(&c, &tbs_len);
	if (tbs == NULL)
		goto out;
	r = sp_sealer_sign(s, tbs, tbs_len, sig, &sig_len);
	if (r != 0)
		goto out;
	r = -ENOMEM;
	sp_token_hex(c.peer.token, hex);
	spki64 = sp_b64(c.spki, c.spki_len);
	sig64 = sp_b64(sig, sig_len);
	if (c.cert != NULL)
		cert64 = sp_b64(c.cert, c.cert_len);
	if (c.has_access)
		access64 = sp_b64(c.access_key, SP_CARD_ACCESS_LEN);
	if (spki64 == NULL || sig64 == NULL || (c.cert != NULL && cert64 == NULL) ||
	    (c.has_access && access64 == NULL))
		goto out;
	for (size_t i = 0; i < c.nseal; i++)
		if ((pub64[i] = sp_b64(c.seal[i].pub, c.seal[i].pub_len)) == NULL)
			goto out;
	if (version == SP_CARD_VERSION_V1) {
		seal = json_pack("{s:s, s:s}", "suite", c.seal[0].name, "pub", pub64[0]);
	} else {
		seal = json_array();
		for (size_t i = 0; seal != NULL && i < c.nseal; i++)
			if (json_array_append_new(seal,
			                          json_pack("{s:s, s:s}", "suite", c.seal[i].name,
			                                    "pub", pub64[i])) != 0) {
				json_decref(seal);
				seal = NULL;
			}
	}
	if (seal == NULL)
		goto out;
	root = json_pack("{s:i, s:s, s:s, s:o, s:I, s:s}", "v", version, "token", hex, "spki",
	                 spki64, "seal", seal, "issued_at", (json_int_t)issued_at, "sig", sig64);
	if (root == NULL)
		goto out;
	if (cert64 != NULL && json_object_set_new(root, "cert", json_string(cert64)) != 0)
		goto out;
	if (version == SP_CARD_VERSION &&
	    json_object_set_new(root, "epoch", json_integer((json_int_t)c.epoch)) != 0)
		goto out;
	if (access64 != NULL && json_object_set_new(root, "access", json_string(access64)) != 0)
		goto out;
	*json = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
	r = *json != NULL ? 0 : -ENOMEM;
out:
	json_decref(root);
	OPENSSL_free(der);
	free(tbs);
	free(spki64);
	free(cert64);
	for (size_t i = 0; i < SP_CARD_SEAL_MAX; i++)
		free(pub64[i]);
	free(sig64);
	if (access64 != NULL) {
		OPENSSL_cleanse(access64, strlen(access64));
		free(access64);
	}
	OPENSSL_cleanse(c.access_key, sizeof(c.access_key));
	OPENSSL_cleanse(peers, sizeof(peers));
	return r;
}

int sp_card_make(const struct sp_sealer *s, int64_t issued_at, char **json)
{
	if (s == NULL)
		return -EINVAL;
	return sp_card_make_access(s, issued_at, 0, NULL, json);
}

/* A string member of obj, or NULL if absent or not a string. */
static const char *sp_json_str(json_t *obj, const char *key)
{
	return json_string_value(json_object_get(obj, key));
}

/* 1 if obj has only keys from the NULL-terminated list. */
static int sp_json_only(json_t *obj, const char *const *keys)
{
	const char *key;
	json_t *v;

	json_object_foreach(obj, key, v)
	{
		size_t i = 0;

		(void)v;
		while (keys[i] != NULL && strcmp(keys[i], key) != 0)
			i++;
		if (keys[i] == NULL)
			return 0;
	}
	return 1;
}

/*
 * One {suite, pub} of a card's seal into e: only those two string members; a name of 1 to
 * SP_CARD_NAME_MAX printable ASCII characters; pub canonical base64 of exactly Npk bytes for a
 * registered suite, at most SP_CARD_PUB_MAX for another. In a v1 card (v1 != 0) an unknown name
 * is SP_SEAL_ERR_SUITE. Returns 0, SP_SEAL_ERR_CARD_MALFORMED, SP_SEAL_ERR_SUITE, -ENOMEM.
 */
static int sp_card_seal_entry(json_t *obj, int v1, struct sp_card_seal *e)
{
	static const char *const seal_keys[] = {"suite", "pub", NULL};
	const char *name = sp_json_str(obj, "suite"), *pub = sp_json_str(obj, "pub");
	size_t nl, want = SP_CARD_PUB_MAX;
	int r;

	if (!json_is_object(obj) || !sp_json_only(obj, seal_keys) || name == NULL || pub == NULL)
		return SP_SEAL_ERR_CARD_MALFORMED;
	nl = strlen(name);
	if (nl == 0 || nl > SP_CARD_NAME_MAX)
		return SP_SEAL_ERR_CARD_MALFORMED;
	for (size_t i = 0; i < nl; i++)
		if (name[i] <= 0x20 || name[i] >= 0x7f)
			return SP_SEAL_ERR_CARD_MALFORMED;
	memcpy(e->name, name, nl + 1);
	e->suite = sp_seal_suite_by_name(name);
	if (e->suite == 0 && v1)
		return SP_SEAL_ERR_SUITE;
	if (e->suite != 0 && sp_seal_suite_info(e->suite, NULL, &want, NULL) != 0)
		return SP_SEAL_ERR_SUITE;
	r = sp_unb64(pub, want, &e->pub, &e->pub_len);
	if (r != 0)
		return r;
	if (e->suite != 0 && e->pub_len != want)
		return SP_SEAL_ERR_CARD_MALFORMED;
	return 0;
}

int sp_card_parse(const char *json, size_t len, struct sp_card *out)
{
	static const char *const top_keys[] = {"v",         "token", "spki",   "cert", "seal",
	                                       "issued_at", "sig",   "access", NULL};
	static const char *const top_keys_v3[] = {"v",         "token", "spki",  "cert",   "seal",
	                                          "issued_at", "sig",   "epoch", "access", NULL};
	json_t *root = NULL, *seal, *v, *at, *ep;
	EVP_PKEY *key = NULL;
	EVP_MD_CTX *md = NULL;
	X509 *cert = NULL;
	uint8_t *sig = NULL, *tbs = NULL, digest[SP_TOKEN_LEN];
	unsigned char *cert_spki = NULL;
	const char *s_token, *s_spki, *s_cert, *s_sig, *s_access;
	size_t sig_len, tbs_len;
	int r = SP_SEAL_ERR_CARD_MALFORMED, n;

	if (out != NULL)
		memset(out, 0, sizeof(*out));
	if (json == NULL || out == NULL)
		return -EINVAL;
	if (len > SP_CARD_MAX_JSON)
		return SP_SEAL_ERR_CARD_MALFORMED;
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(root))
		goto out;
	v = json_object_get(root, "v");
	if (!json_is_integer(v))
		goto out;
	if (json_integer_value(v) != SP_CARD_VERSION_V1 &&
	    json_integer_value(v) != SP_CARD_VERSION_V2 &&
	    json_integer_value(v) != SP_CARD_VERSION) {
		r = SP_SEAL_ERR_VERSION;
		goto out;
	}
	out->version = (int)json_integer_value(v);
	seal = json_object_get(root, "seal");
	at = json_object_get(root, "issued_at");
	s_token = sp_json_str(root, "token");
	s_spki = sp_json_str(root, "spki");
	s_cert = sp_json_str(root, "cert");
	s_sig = sp_json_str(root, "sig");
	s_access = sp_json_str(root, "access");
	ep = json_object_get(root, "epoch");
	/* v3: the key epoch, 1 to 2^32 - 1 (versions 1 and 2 have no such member). */
	if (out->version == SP_CARD_VERSION &&
	    (!json_is_integer(ep) || json_integer_value(ep) < 1 ||
	     json_integer_value(ep) > (json_int_t)UINT32_MAX))
		goto out;
	if (out->version == SP_CARD_VERSION)
		out->epoch = (uint32_t)json_integer_value(ep);
	if (!sp_json_only(root, out->version == SP_CARD_VERSION ? top_keys_v3 : top_keys) ||
	    !json_is_integer(at) || json_integer_value(at) < 0 || s_token == NULL ||
	    s_spki == NULL || s_sig == NULL ||
	    (json_object_get(root, "cert") != NULL && s_cert == NULL) ||
	    (json_object_get(root, "access") != NULL && s_access == NULL))
		goto out;
	/* seal: one object in v1; an array of 1 to SP_CARD_SEAL_MAX of them in v2. */
	if (out->version == SP_CARD_VERSION_V1
	            ? !json_is_object(seal)
	            : !json_is_array(seal) || json_array_size(seal) == 0 ||
	                      json_array_size(seal) > SP_CARD_SEAL_MAX)
		goto out;
	/* Fields, each decoded strictly. */
	if (sp_token_parse_hex(s_token, out->peer.token) != 0)
		goto out;
	out->nseal = out->version == SP_CARD_VERSION_V1 ? 1 : json_array_size(seal);
	for (size_t i = 0; i < out->nseal; i++) {
		r = sp_card_seal_entry(out->version == SP_CARD_VERSION_V1 ? seal
		                                                          : json_array_get(seal, i),
		                       out->version == SP_CARD_VERSION_V1, &out->seal[i]);
		if (r != 0)
			goto out;
		r = SP_SEAL_ERR_CARD_MALFORMED;
		for (size_t j = 0; j < i; j++)
			if (strcmp(out->seal[j].name, out->seal[i].name) == 0)
				goto out; /* a suite listed twice */
	}
	if ((r = sp_unb64(s_spki, SP_SEAL_SPKI_MAX, &out->spki, &out->spki_len)) != 0 ||
	    (s_cert != NULL &&
	     (r = sp_unb64(s_cert, SP_CARD_CERT_MAX, &out->cert, &out->cert_len)) != 0) ||
	    (r = sp_unb64(s_sig, SP_CARD_SIG_MAX, &sig, &sig_len)) != 0)
		goto out;
	if (s_access != NULL) { /* 17.7: exactly one 32-byte key */
		uint8_t *ak = NULL;
		size_t ak_len = 0;

		if ((r = sp_unb64(s_access, SP_CARD_ACCESS_LEN, &ak, &ak_len)) != 0)
			goto out;
		r = SP_SEAL_ERR_CARD_MALFORMED;
		if (ak_len == SP_CARD_ACCESS_LEN) {
			out->has_access = 1;
			memcpy(out->access_key, ak, SP_CARD_ACCESS_LEN);
		}
		OPENSSL_cleanse(ak, ak_len);
		free(ak);
		if (!out->has_access)
			goto out;
	}
	r = SP_SEAL_ERR_CARD_MALFORMED;
	out->issued_at = (int64_t)json_integer_value(at);
	if (sp_seal_spki_key(out->spki, out->spki_len, &key) != 0)
		goto out;
	if (out->cert != NULL) {
		const unsigned char *q = out->cert;

		cert = d2i_X509(NULL, &q, (long)out->cert_len);
		if (cert == NULL || q != out->cert + out->cert_len)
			goto out;
	}
	/* The token is SHA-256 of the key; a certificate must carry that same key. */
	r = SP_SEAL_ERR_CRYPTO;
	if (!EVP_Digest(out->spki, out->spki_len, digest, NULL, EVP_sha256(), NULL))
		goto out;
	r = SP_SEAL_ERR_CARD_TOKEN;
	if (CRYPTO_memcmp(digest, out->peer.token, SP_TOKEN_LEN) != 0)
		goto out;
	if (cert != NULL) {
		n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &cert_spki);
		if (n <= 0 || (size_t)n != out->spki_len ||
		    memcmp(cert_spki, out->spki, (size_t)n) != 0)
			goto out;
	}
	/* The signature by that key over the canonical bytes (the whole suite list included: a
	 * suite stripped or reordered breaks it). */
	r = -ENOMEM;
	tbs = sp_card_tbs(out, &tbs_len);
	md = EVP_MD_CTX_new();
	if (tbs == NULL || md == NULL)
		goto out;
	r = SP_SEAL_ERR_CARD_SIGNATURE;
	if (EVP_DigestVerifyInit_ex(md, NULL, "SHA256", NULL, NULL, key, NULL) != 1 ||
	    EVP_DigestVerify(md, sig, sig_len, tbs, tbs_len) != 1)
		goto out;
	/* What a sender here seals to: the first listed suite this build implements. */
	r = sp_card_pick(out, NULL, 0, &out->peer);
out:
	if (r != 0)
		sp_card_clear(out);
	json_decref(root);
	EVP_PKEY_free(key);
	EVP_MD_CTX_free(md);
	X509_free(cert);
	OPENSSL_free(cert_spki);
	free(sig);
	free(tbs);
	return r;
}

/* ---- cards seen (13.11) ---- */

/* A decimal of 1 to 19 digits, no sign, no leading zero (but "0"), into *v. */
static int sp_seen_num(const char *p, size_t n, uint64_t max, uint64_t *v)
{
	uint64_t x = 0;

	if (n == 0 || n > 19 || (n > 1 && p[0] == '0'))
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		x = x * 10 + (uint64_t)(p[i] - '0');
	}
	if (x > max)
		return -1;
	*v = x;
	return 0;
}

int sp_card_seen_line(const char *line, size_t len, uint8_t token[SP_TOKEN_LEN], uint32_t *epoch,
                      int64_t *issued_at)
{
	char hex[SP_TOKEN_HEX_LEN + 1];
	const char *p, *sp;
	uint64_t e, t;
	size_t left;

	if (line == NULL || token == NULL || epoch == NULL || issued_at == NULL)
		return -EINVAL;
	if (len < SP_TOKEN_HEX_LEN + 4 || line[SP_TOKEN_HEX_LEN] != ' ')
		return SP_SEAL_ERR_CARD_MALFORMED;
	memcpy(hex, line, SP_TOKEN_HEX_LEN);
	hex[SP_TOKEN_HEX_LEN] = '\0';
	if (sp_token_parse_hex(hex, token) != 0)
		return SP_SEAL_ERR_CARD_MALFORMED;
	p = line + SP_TOKEN_HEX_LEN + 1;
	left = len - SP_TOKEN_HEX_LEN - 1;
	sp = memchr(p, ' ', left);
	if (sp == NULL || sp_seen_num(p, (size_t)(sp - p), UINT32_MAX, &e) != 0 ||
	    sp_seen_num(sp + 1, left - (size_t)(sp - p) - 1, INT64_MAX, &t) != 0)
		return SP_SEAL_ERR_CARD_MALFORMED;
	*epoch = (uint32_t)e;
	*issued_at = (int64_t)t;
	return 0;
}

int sp_card_seen_check(const char *path, const struct sp_card *c, int record)
{
	char line[SP_TOKEN_HEX_LEN + 48], tmp[4096], hex[SP_TOKEN_HEX_LEN + 1];
	uint8_t tok[SP_TOKEN_LEN];
	struct sp_card have;
	FILE *in, *out = NULL;
	size_t lines = 0, n;
	int r = 0, found = 0, fd;

	if (path == NULL || c == NULL)
		return -EINVAL;
	in = fopen(path, "r");
	if (in == NULL && errno != ENOENT)
		return -errno;
	/* Check first, write only if asked and newer. */
	while (in != NULL && r == 0 && fgets(line, sizeof(line), in) != NULL) {
		n = strlen(line);
		if (n == 0 || line[n - 1] != '\n') {
			r = SP_SEAL_ERR_CARD_MALFORMED;
			break;
		}
		memset(&have, 0, sizeof(have));
		r = sp_card_seen_line(line, n - 1, have.peer.token, &have.epoch, &have.issued_at);
		if (r == 0 && CRYPTO_memcmp(have.peer.token, c->peer.token, SP_TOKEN_LEN) == 0) {
			found = 1;
			/* Only a lower epoch is refused: cards of one epoch carry the same keys, so
			 * an earlier copy of the current card is still right to seal to. */
			if (c->epoch < have.epoch)
				r = SP_SEAL_ERR_CARD_STALE;
			else if (sp_card_supersedes(&have, c) != 0)
				record = 0; /* keep the later one on file */
		}
		lines++;
	}
	if (r == 0 && in != NULL && ferror(in))
		r = -EIO;
	if (r == 0 && !found && lines >= SP_CARD_SEEN_MAX)
		r = -ENOSPC;
	if (r != 0 || !record) {
		if (in != NULL)
			fclose(in);
		return r;
	}
	/* Write the file anew with c's line in place of (or after) its token's. */
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
		r = -ENAMETOOLONG;
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 || (out = fdopen(fd, "w")) == NULL) {
		r = -errno;
		if (fd >= 0)
			close(fd);
		goto out;
	}
	if (in != NULL)
		rewind(in);
	while (in != NULL && fgets(line, sizeof(line), in) != NULL) {
		if (sp_card_seen_line(line, strlen(line) - 1, tok, &have.epoch, &have.issued_at) ==
		            0 &&
		    CRYPTO_memcmp(tok, c->peer.token, SP_TOKEN_LEN) == 0)
			continue;
		fputs(line, out);
	}
	sp_token_hex(c->peer.token, hex);
	fprintf(out, "%s %u %lld\n", hex, (unsigned)c->epoch, (long long)c->issued_at);
	if (fflush(out) != 0 || fsync(fileno(out)) != 0 || ferror(out))
		r = -EIO;
	if (fclose(out) != 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) != 0)
		r = -errno;
	if (r != 0)
		unlink(tmp);
out:
	if (in != NULL)
		fclose(in);
	return r;
}
