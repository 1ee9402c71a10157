/*
 * cli_webpush.c: the CLI's Web Push subscriptions and messages (cli_webpush.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_webpush.h"
#include "sp_b64.h"
#include "sp_wpcrypt.h"

static void hex16(const uint8_t sub[16], char out[33])
{
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", sub[i]);
}

static int path_of(const char *key_file, const uint8_t *sub, char *out, size_t len)
{
	char h[33];
	int n;

	if (!sub)
		n = snprintf(out, len, "%s.webpush", key_file);
	else {
		hex16(sub, h);
		n = snprintf(out, len, "%s.webpush/%s.json", key_file, h);
	}
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int cli_wp_parse_id(const char *s, uint8_t sub[16])
{
	if (strlen(s) != 32)
		return -EINVAL;
	for (int i = 0; i < 16; i++) {
		unsigned v;

		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -EINVAL;
		sub[i] = (uint8_t)v;
	}
	return 0;
}

int cli_wp_create(const char *key_file, const uint8_t sub[16], const char *endpoint,
                  size_t endpoint_len, FILE *out, char *err, size_t errlen)
{
	uint8_t priv[SP_WP_PRIV_LEN], pub[SP_WP_PUB_LEN], auth[SP_WP_AUTH_LEN];
	char bpriv[SP_B64URL_LEN(32) + 1], bpub[SP_B64URL_LEN(65) + 1],
	        bauth[SP_B64URL_LEN(16) + 1];
	char dir[4096], path[4096], h[33];
	json_t *file, *shown;
	int fd, rc = 0;
	FILE *f;

	if (sp_wp_keys_new(priv, pub, auth) < 0) {
		snprintf(err, errlen, "cannot make the subscription's keys");
		return -EIO;
	}
	sp_b64url_encode(priv, sizeof(priv), bpriv);
	sp_b64url_encode(pub, sizeof(pub), bpub);
	sp_b64url_encode(auth, sizeof(auth), bauth);
	OPENSSL_cleanse(priv, sizeof(priv));
	hex16(sub, h);
	if (path_of(key_file, NULL, dir, sizeof(dir)) < 0 ||
	    path_of(key_file, sub, path, sizeof(path)) < 0) {
		snprintf(err, errlen, "the key file's path is too long");
		return -ENAMETOOLONG;
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		snprintf(err, errlen, "cannot make %s: %s", dir, strerror(errno));
		return rc;
	}
	file = json_pack("{s:s%, s:s, s:{s:s, s:s, s:s}}", "endpoint", endpoint, endpoint_len,
	                 "subscription_id", h, "keys", "p256dh", bpub, "auth", bauth, "private",
	                 bpriv);
	shown = json_pack("{s:s%, s:n, s:{s:s, s:s}, s:s}", "endpoint", endpoint, endpoint_len,
	                  "expirationTime", "keys", "p256dh", bpub, "auth", bauth,
	                  "subscription_id", h);
	OPENSSL_cleanse(bpriv, sizeof(bpriv));
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (!file || !shown || !f || json_dumpf(file, f, JSON_INDENT(1)) < 0 || fclose(f) != 0) {
		rc = -(errno ? errno : EIO);
		snprintf(err, errlen, "cannot write %s: %s", path, strerror(-rc));
		if (f == NULL && fd >= 0)
			close(fd);
		unlink(path);
	} else {
		json_dumpf(shown, out, JSON_COMPACT);
		fputc('\n', out);
	}
	json_decref(file);
	json_decref(shown);
	return rc;
}

int cli_wp_forget(const char *key_file, const uint8_t sub[16])
{
	char path[4096];

	if (path_of(key_file, sub, path, sizeof(path)) < 0)
		return -ENAMETOOLONG;
	return unlink(path) == 0 ? 0 : -errno;
}

static json_t *load(const char *key_file, const uint8_t sub[16])
{
	char path[4096];

	if (path_of(key_file, sub, path, sizeof(path)) < 0)
		return NULL;
	return json_load_file(path, 0, NULL);
}

void cli_wp_print_list(const char *key_file, const uint8_t *ids, size_t n, FILE *out)
{
	for (size_t i = 0; i < n; i++) {
		char h[33];
		json_t *j = load(key_file, ids + 16 * i);
		const char *ep = j ? json_string_value(json_object_get(j, "endpoint")) : NULL;

		hex16(ids + 16 * i, h);
		fprintf(out, "%s %s\n", h, ep ? ep : "(no keys here)");
		json_decref(j);
	}
}

static int key_of(json_t *j, const char *name, uint8_t *out, size_t n)
{
	json_t *k = json_object_get(json_object_get(j, "keys"), name);
	const char *s = json_string_value(k);

	return s && sp_b64url_decode(s, strlen(s), out, n) == (long)n ? 0 : -1;
}

int cli_wp_open(const char *key_file, const uint8_t *blob, size_t len, char subhex[33],
                uint8_t *out, size_t cap, size_t *out_len)
{
	uint8_t priv[SP_WP_PRIV_LEN], pub[SP_WP_PUB_LEN], auth[SP_WP_AUTH_LEN];
	json_t *j;
	int rc;

	if (len < 17 || blob[0] != 0x57)
		return -ENOMSG;
	hex16(blob + 1, subhex);
	j = load(key_file, blob + 1);
	if (!j)
		return -ENOENT;
	if (key_of(j, "private", priv, sizeof(priv)) < 0 ||
	    key_of(j, "p256dh", pub, sizeof(pub)) < 0 ||
	    key_of(j, "auth", auth, sizeof(auth)) < 0) {
		json_decref(j);
		return -ENOENT;
	}
	json_decref(j);
	rc = sp_wp_open(priv, pub, auth, blob + 17, len - 17, out, cap, out_len);
	OPENSSL_cleanse(priv, sizeof(priv));
	return rc < 0 ? -EBADMSG : 0;
}
