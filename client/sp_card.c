/*
 * sp_card: contact cards. The signature covers a canonical byte string built from the decoded
 * fields (PROTOCOL.md 13.8), never the JSON text, so whitespace and key order do not matter.
 */
#include "sp_card.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

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

/* The signed bytes (13.8). Returns a malloc'd buffer and its length, or NULL. */
static uint8_t *sp_card_tbs(const struct sp_card *c, size_t *len)
{
	size_t n = SP_CARD_LABEL_LEN + 1 + SP_TOKEN_LEN + 2 + c->spki_len + 4 + c->cert_len + 2 +
	           2 + c->peer.pub_len + 8;
	uint8_t *buf = malloc(n), *p = buf;
	uint64_t t = (uint64_t)c->issued_at;

	if (buf == NULL)
		return NULL;
	memcpy(p, sp_card_label, SP_CARD_LABEL_LEN);
	p += SP_CARD_LABEL_LEN;
	*p++ = SP_CARD_VERSION;
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
	*p++ = (uint8_t)(c->peer.suite >> 8);
	*p++ = (uint8_t)c->peer.suite;
	*p++ = (uint8_t)(c->peer.pub_len >> 8);
	*p++ = (uint8_t)c->peer.pub_len;
	memcpy(p, c->peer.pub, c->peer.pub_len);
	p += c->peer.pub_len;
	for (int i = 0; i < 8; i++)
		*p++ = (uint8_t)(t >> (56 - 8 * i));
	*len = n;
	return buf;
}

void sp_card_clear(struct sp_card *c)
{
	if (c == NULL)
		return;
	free(c->spki);
	free(c->cert);
	memset(c, 0, sizeof(*c));
}

int sp_card_make(const struct sp_sealer *s, int64_t issued_at, char **json)
{
	struct sp_card c;
	json_t *root = NULL;
	unsigned char *der = NULL;
	uint8_t *tbs = NULL, sig[SP_CARD_SIG_MAX];
	char hex[SP_TOKEN_HEX_LEN + 1], *spki64 = NULL, *cert64 = NULL, *pub64 = NULL;
	char *sig64 = NULL;
	const char *suite_name;
	size_t tbs_len, sig_len;
	int r = -ENOMEM, n;

	if (s == NULL || json == NULL || issued_at < 0)
		return -EINVAL;
	*json = NULL;
	memset(&c, 0, sizeof(c));
	sp_sealer_peer(s, &c.peer);
	c.spki = (uint8_t *)(uintptr_t)sp_sealer_spki(s, &c.spki_len);
	c.issued_at = issued_at;
	if (sp_sealer_cert(s) != NULL) {
		n = i2d_X509(sp_sealer_cert(s), &der);
		if (n <= 0 || n > SP_CARD_CERT_MAX) {
			r = SP_SEAL_ERR_CRYPTO;
			goto out;
		}
		c.cert = der;
		c.cert_len = (size_t)n;
	}
	if (sp_seal_suite_info(c.peer.suite, NULL, NULL, &suite_name) != 0) {
		r = SP_SEAL_ERR_SUITE;
		goto out;
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
	pub64 = sp_b64(c.peer.pub, c.peer.pub_len);
	sig64 = sp_b64(sig, sig_len);
	if (c.cert != NULL)
		cert64 = sp_b64(c.cert, c.cert_len);
	if (spki64 == NULL || pub64 == NULL || sig64 == NULL || (c.cert != NULL && cert64 == NULL))
		goto out;
	root = json_pack("{s:i, s:s, s:s, s:{s:s, s:s}, s:I, s:s}", "v", SP_CARD_VERSION, "token",
	                 hex, "spki", spki64, "seal", "suite", suite_name, "pub", pub64,
	                 "issued_at", (json_int_t)issued_at, "sig", sig64);
	if (root == NULL)
		goto out;
	if (cert64 != NULL && json_object_set_new(root, "cert", json_string(cert64)) != 0)
		goto out;
	*json = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
	r = *json != NULL ? 0 : -ENOMEM;
out:
	json_decref(root);
	OPENSSL_free(der);
	free(tbs);
	free(spki64);
	free(cert64);
	free(pub64);
	free(sig64);
	return r;
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

int sp_card_parse(const char *json, size_t len, struct sp_card *out)
{
	static const char *const top_keys[] = {"v",    "token",     "spki", "cert",
	                                       "seal", "issued_at", "sig",  NULL};
	static const char *const seal_keys[] = {"suite", "pub", NULL};
	json_t *root = NULL, *seal, *v, *at;
	EVP_PKEY *key = NULL;
	EVP_MD_CTX *md = NULL;
	X509 *cert = NULL;
	uint8_t *pub = NULL, *sig = NULL, *tbs = NULL, digest[SP_TOKEN_LEN];
	unsigned char *cert_spki = NULL;
	const char *s_token, *s_spki, *s_cert, *s_suite, *s_pub, *s_sig;
	size_t pub_len, sig_len, tbs_len, want_pub;
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
	if (json_integer_value(v) != SP_CARD_VERSION) {
		r = SP_SEAL_ERR_VERSION;
		goto out;
	}
	seal = json_object_get(root, "seal");
	at = json_object_get(root, "issued_at");
	s_token = sp_json_str(root, "token");
	s_spki = sp_json_str(root, "spki");
	s_cert = sp_json_str(root, "cert");
	s_sig = sp_json_str(root, "sig");
	s_suite = sp_json_str(seal, "suite");
	s_pub = sp_json_str(seal, "pub");
	if (!sp_json_only(root, top_keys) || !json_is_object(seal) ||
	    !sp_json_only(seal, seal_keys) || !json_is_integer(at) || json_integer_value(at) < 0 ||
	    s_token == NULL || s_spki == NULL || s_sig == NULL || s_suite == NULL ||
	    s_pub == NULL || (json_object_get(root, "cert") != NULL && s_cert == NULL))
		goto out;
	/* Fields, each decoded strictly. */
	if (sp_token_parse_hex(s_token, out->peer.token) != 0)
		goto out;
	out->peer.suite = sp_seal_suite_by_name(s_suite);
	if (out->peer.suite == 0) {
		r = SP_SEAL_ERR_SUITE;
		goto out;
	}
	if (sp_seal_suite_info(out->peer.suite, NULL, &want_pub, NULL) != 0) {
		r = SP_SEAL_ERR_SUITE;
		goto out;
	}
	if ((r = sp_unb64(s_spki, SP_SEAL_SPKI_MAX, &out->spki, &out->spki_len)) != 0 ||
	    (s_cert != NULL &&
	     (r = sp_unb64(s_cert, SP_CARD_CERT_MAX, &out->cert, &out->cert_len)) != 0) ||
	    (r = sp_unb64(s_pub, SP_SEAL_PUB_MAX, &pub, &pub_len)) != 0 ||
	    (r = sp_unb64(s_sig, SP_CARD_SIG_MAX, &sig, &sig_len)) != 0)
		goto out;
	r = SP_SEAL_ERR_CARD_MALFORMED;
	if (pub_len != want_pub)
		goto out;
	memcpy(out->peer.pub, pub, pub_len);
	out->peer.pub_len = pub_len;
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
	/* The signature by that key over the canonical bytes. */
	r = -ENOMEM;
	tbs = sp_card_tbs(out, &tbs_len);
	md = EVP_MD_CTX_new();
	if (tbs == NULL || md == NULL)
		goto out;
	r = SP_SEAL_ERR_CARD_SIGNATURE;
	if (EVP_DigestVerifyInit_ex(md, NULL, "SHA256", NULL, NULL, key, NULL) != 1 ||
	    EVP_DigestVerify(md, sig, sig_len, tbs, tbs_len) != 1)
		goto out;
	r = 0;
out:
	if (r != 0)
		sp_card_clear(out);
	json_decref(root);
	EVP_PKEY_free(key);
	EVP_MD_CTX_free(md);
	X509_free(cert);
	OPENSSL_free(cert_spki);
	free(pub);
	free(sig);
	free(tbs);
	return r;
}
