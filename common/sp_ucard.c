/*
 * sp_ucard.c: user cards (see sp_ucard.h and PROTOCOL.md 15.1). JSON by jansson, base64 and
 * signatures by OpenSSL.
 *
 * Signed bytes:
 *   "sealpush/1 user card" 0x00 (21) || v (1) || handle_len (1) || handle || ukey_len (2) ||
 *   ukey || n (1) || n x ( token (32) || SHA-256(device card signature bytes) (32) ) ||
 *   issued_at (8, big-endian)
 */
#include "sp_ucard.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "sp_identity.h"

static const char label[] = "sealpush/1 user card"; /* signed with its NUL: 21 bytes */
#define SIG_MAX 80
#define TBS_MAX                                                                                    \
	(21 + 1 + 1 + SP_UCARD_HANDLE_MAX + 2 + SP_UCARD_SPKI_MAX + 1 +                            \
	 SP_UCARD_MAX_DEVICES * 64 + 8)

int sp_ucard_handle_ok(const char *h, size_t len)
{
	if (h == NULL || len == 0 || len > SP_UCARD_HANDLE_MAX)
		return 0;
	for (size_t i = 0; i < len; i++) {
		char c = h[i];
		int alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');

		if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
			return 0;
	}
	return 1;
}

static char *b64(const uint8_t *in, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);

	if (out != NULL)
		EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	return out;
}

/* Canonical padded base64 of at most max bytes into out. Returns the length or -EBADMSG. */
static long unb64(const char *in, uint8_t *out, size_t max)
{
	size_t n = in ? strlen(in) : 0, pad = 0, len;
	uint8_t buf[4 * 1024];
	char *check;
	int dl, same;

	if (n == 0 || n % 4 != 0 || n / 4 * 3 > sizeof(buf))
		return -EBADMSG;
	if (in[n - 1] == '=')
		pad = in[n - 2] == '=' ? 2 : 1;
	dl = EVP_DecodeBlock(buf, (const unsigned char *)in, (int)n);
	len = n / 4 * 3 - pad;
	if (dl < 0 || (size_t)dl != n / 4 * 3 || len > max)
		return -EBADMSG;
	check = b64(buf, len);
	same = check != NULL && strcmp(check, in) == 0;
	free(check);
	if (!same)
		return -EBADMSG;
	memcpy(out, buf, len);
	return (long)len;
}

/* A device card's token and the SHA-256 of its signature bytes. */
static int device_digest(json_t *card, uint8_t token[32], uint8_t sig_hash[32])
{
	uint8_t sig[SIG_MAX];
	long sl;

	if (!json_is_object(card) ||
	    sp_token_parse_hex(json_string_value(json_object_get(card, "token")), token) < 0 ||
	    (sl = unb64(json_string_value(json_object_get(card, "sig")), sig, sizeof(sig))) <= 0)
		return -EBADMSG;
	SHA256(sig, (size_t)sl, sig_hash);
	return 0;
}

static size_t tbs_build(uint8_t *t, const sp_ucard_t *c, const uint8_t (*digests)[64])
{
	uint8_t *p = t;
	uint64_t at = (uint64_t)c->issued_at;

	memcpy(p, label, 21);
	p += 21;
	*p++ = SP_UCARD_VERSION;
	*p++ = (uint8_t)c->handle_len;
	memcpy(p, c->handle, c->handle_len);
	p += c->handle_len;
	*p++ = (uint8_t)(c->ukey_len >> 8);
	*p++ = (uint8_t)c->ukey_len;
	memcpy(p, c->ukey, c->ukey_len);
	p += c->ukey_len;
	*p++ = (uint8_t)c->n_devices;
	for (size_t i = 0; i < c->n_devices; i++) {
		memcpy(p, digests[i], 64);
		p += 64;
	}
	for (int i = 7; i >= 0; i--)
		*p++ = (uint8_t)(at >> (8 * i));
	return (size_t)(p - t);
}

static int tokens_distinct(const uint8_t (*d)[64], size_t n)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < i; j++)
			if (memcmp(d[i], d[j], 32) == 0)
				return 0;
	return 1;
}

void sp_ucard_clear(sp_ucard_t *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->n_devices && i < SP_UCARD_MAX_DEVICES; i++)
		free(c->dev[i].card);
	memset(c, 0, sizeof(*c));
}

EVP_PKEY *sp_ucard_user_key(const sp_ucard_t *c)
{
	const unsigned char *p = c->ukey;
	EVP_PKEY *k = d2i_PUBKEY(NULL, &p, (long)c->ukey_len);

	if (k != NULL && (p != c->ukey + c->ukey_len || !EVP_PKEY_is_a(k, "EC"))) {
		EVP_PKEY_free(k);
		k = NULL;
	}
	return k;
}

int sp_ucard_make(EVP_PKEY *user_key, const char *handle, int64_t issued_at,
                  const char *const *device_cards, size_t n, char **json)
{
	sp_ucard_t *u = NULL;
	uint8_t(*dig)[64] = NULL, tbs[TBS_MAX], sig[SIG_MAX];
	unsigned char *spki = NULL;
	json_t *root = NULL, *devs = NULL;
	char *ukey64 = NULL, *sig64 = NULL;
	EVP_MD_CTX *md = NULL;
	size_t tbs_len, sig_len = sizeof(sig), hl = handle ? strlen(handle) : 0;
	int spki_len, r = -EINVAL;

	if (user_key == NULL || !EVP_PKEY_is_a(user_key, "EC") || !sp_ucard_handle_ok(handle, hl) ||
	    device_cards == NULL || n == 0 || n > SP_UCARD_MAX_DEVICES || json == NULL ||
	    issued_at < 0)
		return -EINVAL;
	u = calloc(1, sizeof(*u));
	dig = calloc(n, sizeof(*dig));
	devs = json_array();
	if (u == NULL || dig == NULL || devs == NULL) {
		r = -ENOMEM;
		goto out;
	}
	memcpy(u->handle, handle, hl);
	u->handle_len = hl;
	spki_len = i2d_PUBKEY(user_key, &spki);
	if (spki_len <= 0 || spki_len > SP_UCARD_SPKI_MAX)
		goto out;
	memcpy(u->ukey, spki, (size_t)spki_len);
	u->ukey_len = (size_t)spki_len;
	u->issued_at = issued_at;
	u->n_devices = n;
	for (size_t i = 0; i < n; i++) {
		json_t *d = json_loads(device_cards[i], JSON_REJECT_DUPLICATES, NULL);

		if (d == NULL || device_digest(d, dig[i], dig[i] + 32) < 0 ||
		    json_array_append_new(devs, d) != 0) {
			json_decref(d);
			r = -EBADMSG;
			goto out;
		}
	}
	if (!tokens_distinct((const uint8_t(*)[64])dig, n)) {
		r = -EINVAL;
		goto out;
	}
	tbs_len = tbs_build(tbs, u, (const uint8_t(*)[64])dig);
	md = EVP_MD_CTX_new();
	if (md == NULL || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, user_key) != 1 ||
	    EVP_DigestSign(md, sig, &sig_len, tbs, tbs_len) != 1) {
		r = -ENOMEM;
		goto out;
	}
	ukey64 = b64(u->ukey, u->ukey_len);
	sig64 = b64(sig, sig_len);
	if (ukey64 == NULL || sig64 == NULL) {
		r = -ENOMEM;
		goto out;
	}
	root = json_pack("{s:i, s:s, s:s, s:I, s:O, s:s}", "v", SP_UCARD_VERSION, "handle", handle,
	                 "ukey", ukey64, "issued_at", (json_int_t)issued_at, "devices", devs, "sig",
	                 sig64);
	*json = root ? json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	r = *json != NULL ? 0 : -ENOMEM;
out:
	EVP_MD_CTX_free(md);
	OPENSSL_free(spki);
	json_decref(root);
	json_decref(devs);
	free(ukey64);
	free(sig64);
	free(dig);
	free(u);
	return r;
}

int sp_ucard_parse(const char *json, size_t len, sp_ucard_t *out)
{
	static const char *const members[] = {"v", "handle", "ukey", "issued_at", "devices", "sig"};
	uint8_t(*dig)[64] = NULL, tbs[TBS_MAX], sig[SIG_MAX];
	json_t *root = NULL, *devs, *v, *at, *d;
	EVP_PKEY *key = NULL;
	EVP_MD_CTX *md = NULL;
	const char *handle;
	size_t tbs_len, i;
	long ul, sl;
	int r = -EBADMSG;

	if (json == NULL || out == NULL)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	if (len == 0 || len > SP_UCARD_MAX_JSON)
		return -EBADMSG;
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(root) || json_object_size(root) != 6)
		goto out;
	for (i = 0; i < 6; i++)
		if (json_object_get(root, members[i]) == NULL)
			goto out;
	v = json_object_get(root, "v");
	at = json_object_get(root, "issued_at");
	devs = json_object_get(root, "devices");
	handle = json_string_value(json_object_get(root, "handle"));
	if (!json_is_integer(v) || json_integer_value(v) != SP_UCARD_VERSION ||
	    !json_is_integer(at) || json_integer_value(at) < 0 || handle == NULL ||
	    !sp_ucard_handle_ok(handle, strlen(handle)) || !json_is_array(devs) ||
	    json_array_size(devs) == 0 || json_array_size(devs) > SP_UCARD_MAX_DEVICES)
		goto out;
	memcpy(out->handle, handle, strlen(handle));
	out->handle_len = strlen(handle);
	out->issued_at = (int64_t)json_integer_value(at);
	ul = unb64(json_string_value(json_object_get(root, "ukey")), out->ukey, sizeof(out->ukey));
	sl = unb64(json_string_value(json_object_get(root, "sig")), sig, sizeof(sig));
	if (ul <= 0 || sl <= 0)
		goto out;
	out->ukey_len = (size_t)ul;
	SHA256(out->ukey, out->ukey_len, out->ukey_fp);
	dig = calloc(json_array_size(devs), sizeof(*dig));
	if (dig == NULL) {
		r = -ENOMEM;
		goto out;
	}
	json_array_foreach(devs, i, d)
	{
		if (device_digest(d, dig[i], dig[i] + 32) < 0)
			goto out;
		memcpy(out->dev[i].token, dig[i], 32);
		out->dev[i].card = json_dumps(d, JSON_COMPACT | JSON_SORT_KEYS);
		out->n_devices = i + 1;
		if (out->dev[i].card == NULL) {
			r = -ENOMEM;
			goto out;
		}
		out->dev[i].card_len = strlen(out->dev[i].card);
	}
	if (!tokens_distinct((const uint8_t(*)[64])dig, out->n_devices))
		goto out;
	key = sp_ucard_user_key(out);
	if (key == NULL)
		goto out;
	tbs_len = tbs_build(tbs, out, (const uint8_t(*)[64])dig);
	md = EVP_MD_CTX_new();
	if (md == NULL || EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) != 1) {
		r = -ENOMEM;
		goto out;
	}
	r = EVP_DigestVerify(md, sig, (size_t)sl, tbs, tbs_len) == 1 ? 0 : -EKEYREJECTED;
out:
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(key);
	free(dig);
	json_decref(root);
	if (r != 0)
		sp_ucard_clear(out);
	return r;
}
