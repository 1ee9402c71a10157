/*
 * sp_webpush.c: header values, the aes128gcm header check and capabilities (sp_webpush.h).
 */
#include <errno.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sp_b64.h"
#include "sp_webpush.h"

int sp_wp_parse_ttl(const char *v, size_t n, uint32_t *ttl)
{
	uint64_t x = 0;

	if (n == 0 || n > 32)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -EINVAL;
		x = x * 10 + (uint64_t)(v[i] - '0');
		if (x > UINT32_MAX)
			x = UINT32_MAX +
			    (uint64_t)1; /* saturate, keep parsing for bad characters */
	}
	*ttl = x > UINT32_MAX ? UINT32_MAX : (uint32_t)x;
	return 0;
}

static bool is(const char *v, size_t n, const char *s)
{
	return strlen(s) == n && strncasecmp(v, s, n) == 0;
}

int sp_wp_parse_urgency(const char *v, size_t n)
{
	if (is(v, n, "very-low") || is(v, n, "low"))
		return 1;
	if (is(v, n, "normal"))
		return 5;
	if (is(v, n, "high"))
		return 10;
	return -EINVAL;
}

bool sp_wp_topic_ok(const char *v, size_t n)
{
	if (n == 0 || n > SP_WP_TOPIC_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = v[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_'))
			return false;
	}
	return true;
}

int sp_wp_check_aes128gcm(const uint8_t *body, size_t len, const char **why)
{
	uint32_t rs;

	if (len < SP_WP_AES128GCM_HEADER) {
		*why = "aes128gcm: body shorter than its header";
		return -EINVAL;
	}
	rs = (uint32_t)body[16] << 24 | (uint32_t)body[17] << 16 | (uint32_t)body[18] << 8 |
	     body[19];
	if (rs < 18) {
		*why = "aes128gcm: record size below 18";
		return -EINVAL;
	}
	if (body[20] != SP_WP_KEY_LEN || body[21] != 0x04) {
		*why = "aes128gcm: key id is not an uncompressed P-256 point (RFC 8291 4)";
		return -EINVAL;
	}
	if (len - SP_WP_AES128GCM_HEADER < 17) {
		*why = "aes128gcm: no record after the header";
		return -EINVAL;
	}
	if (len - SP_WP_AES128GCM_HEADER > rs) {
		*why = "aes128gcm: more than one record (RFC 8291 4)";
		return -EINVAL;
	}
	return 0;
}

int sp_wp_capability_new(char *cap, uint8_t hash[32])
{
	uint8_t raw[SP_WP_CAP_BYTES];

	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return -EIO;
	sp_b64url_encode(raw, sizeof(raw), cap);
	SHA256(raw, sizeof(raw), hash);
	return 0;
}

int sp_wp_capability_hash(const char *cap, size_t len, uint8_t hash[32])
{
	uint8_t raw[SP_WP_CAP_BYTES + 1];

	if (len != SP_WP_CAP_CHARS ||
	    sp_b64url_decode(cap, len, raw, sizeof(raw)) != SP_WP_CAP_BYTES)
		return -EINVAL;
	SHA256(raw, SP_WP_CAP_BYTES, hash);
	return 0;
}

static void hex(char *out, const uint8_t *p, size_t n)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

void sp_wp_key_cap(char *out, size_t len, const uint8_t hash[32])
{
	char h[65];

	hex(h, hash, 32);
	snprintf(out, len, "sp:wp:cap:%s", h);
}

void sp_wp_key_subs(char *out, size_t len, const uint8_t token[32])
{
	char h[65];

	hex(h, token, 32);
	snprintf(out, len, "sp:{%s}:wp:subs", h);
}
