/*
 * test_webpush: the pure parts of the provider door: base64url, the Web Push header values,
 * the RFC 8188 header check (on RFC 8291 Appendix A's body), capabilities, and VAPID (ES256
 * JWTs made here with OpenSSL: good, wrong key, bad signature, expired, too far ahead, wrong
 * aud, wrong alg, malformed).
 */
#include <errno.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "sp_b64.h"
#include "sp_test.h"
#include "sp_vapid.h"
#include "sp_webpush.h"

/* RFC 8291 Appendix A: the encrypted push message. */
static const char rfc8291_body[] =
        "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_"
        "c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS"
        "6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_"
        "Q"
        "ulcy4a-fN";

static const char *origin = "https://push.example.net";

static void test_b64(void)
{
	uint8_t in[5] = {0xfb, 0xff, 0x00, 0x01, 0x7f}, out[8];
	char s[16];

	for (size_t n = 0; n <= sizeof(in); n++) {
		size_t l = sp_b64url_encode(in, n, s);

		SP_CHECK_EQ_INT(l, SP_B64URL_LEN(n));
		SP_CHECK_EQ_INT(sp_b64url_decode(s, l, out, sizeof(out)), (long)n);
		SP_CHECK_MEM(out, in, n);
	}
	sp_b64url_encode(in, 3, s);
	SP_CHECK(strcmp(s, "-_8A") == 0);
	SP_CHECK_EQ_INT(sp_b64url_decode("-_8A", 4, out, 2), -1);  /* too small */
	SP_CHECK_EQ_INT(sp_b64url_decode("a+b/", 4, out, 8), -1);  /* not url-safe */
	SP_CHECK_EQ_INT(sp_b64url_decode("abcde", 5, out, 8), -1); /* impossible length */
	SP_CHECK_EQ_INT(sp_b64url_decode("AB", 2, out, 8), -1);    /* trailing bits */
	SP_CHECK_EQ_INT(sp_b64url_decode("AA==", 4, out, 8), 1);   /* padding tolerated */
}

static void test_headers(void)
{
	uint32_t ttl = 7;

	SP_CHECK_EQ_INT(sp_wp_parse_ttl("0", 1, &ttl), 0);
	SP_CHECK_EQ_INT(ttl, 0);
	SP_CHECK_EQ_INT(sp_wp_parse_ttl("86400", 5, &ttl), 0);
	SP_CHECK_EQ_INT(ttl, 86400);
	SP_CHECK_EQ_INT(sp_wp_parse_ttl("99999999999999", 14, &ttl), 0);
	SP_CHECK_EQ_INT(ttl, UINT32_MAX);
	SP_CHECK_EQ_INT(sp_wp_parse_ttl("", 0, &ttl), -EINVAL);
	SP_CHECK_EQ_INT(sp_wp_parse_ttl("-1", 2, &ttl), -EINVAL);
	SP_CHECK_EQ_INT(sp_wp_parse_ttl("1 ", 2, &ttl), -EINVAL);
	SP_CHECK_EQ_INT(sp_wp_parse_urgency("very-low", 8), 1);
	SP_CHECK_EQ_INT(sp_wp_parse_urgency("low", 3), 1);
	SP_CHECK_EQ_INT(sp_wp_parse_urgency("normal", 6), 5);
	SP_CHECK_EQ_INT(sp_wp_parse_urgency("HIGH", 4), 10);
	SP_CHECK_EQ_INT(sp_wp_parse_urgency("urgent", 6), -EINVAL);
	SP_CHECK(sp_wp_topic_ok("news-1_x", 8));
	SP_CHECK(!sp_wp_topic_ok("", 0));
	SP_CHECK(!sp_wp_topic_ok("a b", 3));
	SP_CHECK(!sp_wp_topic_ok("abcdefghijklmnopqrstuvwxyz0123456", 33));
	SP_CHECK(sp_wp_topic_ok("abcdefghijklmnopqrstuvwxyz012345", 32));
}

static void test_aes128gcm(void)
{
	uint8_t body[256];
	long n = sp_b64url_decode(rfc8291_body, strlen(rfc8291_body), body, sizeof(body));
	const char *why = NULL;

	SP_CHECK_EQ_INT(n, 86 + 58);
	SP_CHECK_EQ_INT(sp_wp_check_aes128gcm(body, (size_t)n, &why), 0);
	SP_CHECK_EQ_INT(sp_wp_check_aes128gcm(body, 86 + 16, &why), -EINVAL); /* no record */
	SP_CHECK_EQ_INT(sp_wp_check_aes128gcm(body, 85, &why), -EINVAL);
	body[20] = 64; /* key id length */
	SP_CHECK_EQ_INT(sp_wp_check_aes128gcm(body, (size_t)n, &why), -EINVAL);
	body[20] = 65;
	body[21] = 0x02; /* compressed point */
	SP_CHECK_EQ_INT(sp_wp_check_aes128gcm(body, (size_t)n, &why), -EINVAL);
	body[21] = 0x04;
	body[16] = body[17] = body[18] = 0;
	body[19] = 40; /* rs 40 < the record's 58 bytes: two records */
	SP_CHECK_EQ_INT(sp_wp_check_aes128gcm(body, (size_t)n, &why), -EINVAL);
	body[19] = 17; /* rs below 18 */
	SP_CHECK_EQ_INT(sp_wp_check_aes128gcm(body, (size_t)n, &why), -EINVAL);
}

static void test_capability(void)
{
	char cap[SP_WP_CAP_CHARS + 1], key[128];
	uint8_t h1[32], h2[32];

	SP_CHECK_EQ_INT(sp_wp_capability_new(cap, h1), 0);
	SP_CHECK_EQ_INT(strlen(cap), SP_WP_CAP_CHARS);
	SP_CHECK_EQ_INT(sp_wp_capability_hash(cap, strlen(cap), h2), 0);
	SP_CHECK_MEM(h1, h2, 32);
	SP_CHECK_EQ_INT(sp_wp_capability_hash(cap, strlen(cap) - 1, h2), -EINVAL);
	SP_CHECK_EQ_INT(sp_wp_capability_hash("../../etc/passwd", 16, h2), -EINVAL);
	sp_wp_key_subs(key, sizeof(key), h1);
	SP_CHECK(strncmp(key, "sp:{", 4) == 0 && strstr(key, "}:wp:subs"));
}

/* ---- VAPID --------------------------------------------------------------------------------- */

static EVP_PKEY *new_key(uint8_t pub[65])
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	size_t n = 0;

	EVP_PKEY_get_octet_string_param(k, "encoded-pub-key", pub, 65, &n);
	return n == 65 ? k : NULL;
}

static void b64_json(char *out, const char *json)
{
	sp_b64url_encode((const uint8_t *)json, strlen(json), out);
}

/* "vapid t=<JWT>, k=<pub>" signed by k, with the given header and claims JSON. */
static void make_auth(char *out, size_t len, EVP_PKEY *k, const uint8_t pub[65], const char *hdr,
                      const char *claims, bool corrupt)
{
	char h[512], c[512], input[1100], sig64[100], kb[100];
	uint8_t der[80], raw[64];
	size_t der_len = sizeof(der);
	const uint8_t *p = der;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	ECDSA_SIG *es;
	const BIGNUM *r, *s;

	b64_json(h, hdr);
	b64_json(c, claims);
	snprintf(input, sizeof(input), "%s.%s", h, c);
	EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k);
	EVP_DigestSign(md, der, &der_len, (const uint8_t *)input, strlen(input));
	EVP_MD_CTX_free(md);
	es = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
	ECDSA_SIG_get0(es, &r, &s);
	BN_bn2binpad(r, raw, 32);
	BN_bn2binpad(s, raw + 32, 32);
	ECDSA_SIG_free(es);
	if (corrupt)
		raw[10] ^= 1;
	sp_b64url_encode(raw, 64, sig64);
	sp_b64url_encode(pub, 65, kb);
	snprintf(out, len, "vapid t=%s.%s, k=%s", input, sig64, kb);
}

static int check(const char *auth, uint8_t key[65])
{
	const char *why = NULL;
	int rc = sp_vapid_check(auth, auth ? strlen(auth) : 0, origin, (int64_t)time(NULL), key,
	                        NULL, &why);

	SP_CHECK(rc == 0 || why != NULL);
	return rc;
}

static void test_vapid(void)
{
	uint8_t pub[65], pub2[65], got[65];
	EVP_PKEY *k = new_key(pub), *k2 = new_key(pub2);
	const char *hdr = "{\"typ\":\"JWT\",\"alg\":\"ES256\"}";
	char claims[256], auth[2048];
	long now = (long)time(NULL);

	SP_CHECK(k && k2);
	snprintf(claims, sizeof(claims),
	         "{\"aud\":\"%s\",\"exp\":%ld,\"sub\":\"mailto:push@example.com\"}", origin,
	         now + 3600);
	make_auth(auth, sizeof(auth), k, pub, hdr, claims, false);
	SP_CHECK_EQ_INT(check(auth, got), 0);
	SP_CHECK_MEM(got, pub, 65);
	{
		const char *why = NULL;
		int64_t exp = 0;

		/* the exp a caller may remember the verified header until */
		SP_CHECK_EQ_INT(sp_vapid_check(auth, strlen(auth), origin, now, got, &exp, &why),
		                0);
		SP_CHECK_EQ_INT(exp, now + 3600);
	}

	/* Signed by k, claiming k2: the signature does not verify. */
	{
		char kb[100], *kpos;

		make_auth(auth, sizeof(auth), k, pub, hdr, claims, false);
		kpos = strstr(auth, ", k=") + 4;
		sp_b64url_encode(pub2, 65, kb);
		strcpy(kpos, kb);
		SP_CHECK_EQ_INT(check(auth, got), -SP_VAPID_BAD_SIG);
	}
	make_auth(auth, sizeof(auth), k, pub, hdr, claims, true);
	SP_CHECK_EQ_INT(check(auth, got), -SP_VAPID_BAD_SIG);

	snprintf(claims, sizeof(claims), "{\"aud\":\"%s\",\"exp\":%ld}", origin, now - 10);
	make_auth(auth, sizeof(auth), k, pub, hdr, claims, false);
	SP_CHECK_EQ_INT(check(auth, got), -SP_VAPID_EXPIRED);
	snprintf(claims, sizeof(claims), "{\"aud\":\"%s\",\"exp\":%ld}", origin, now + 2 * 86400);
	make_auth(auth, sizeof(auth), k, pub, hdr, claims, false);
	SP_CHECK_EQ_INT(check(auth, got), -SP_VAPID_EXPIRED);
	snprintf(claims, sizeof(claims), "{\"aud\":\"%s\"}", origin);
	make_auth(auth, sizeof(auth), k, pub, hdr, claims, false);
	SP_CHECK_EQ_INT(check(auth, got), -SP_VAPID_EXPIRED);
	snprintf(claims, sizeof(claims), "{\"aud\":\"https://other.example\",\"exp\":%ld}",
	         now + 60);
	make_auth(auth, sizeof(auth), k, pub, hdr, claims, false);
	SP_CHECK_EQ_INT(check(auth, got), -SP_VAPID_BAD_AUD);
	snprintf(claims, sizeof(claims), "{\"aud\":\"%s\",\"exp\":%ld}", origin, now + 60);
	make_auth(auth, sizeof(auth), k, pub, "{\"alg\":\"none\"}", claims, false);
	SP_CHECK_EQ_INT(check(auth, got), -SP_VAPID_BAD_ALG);
	make_auth(auth, sizeof(auth), k, pub, "{\"alg\":\"ES256\"}", claims, false);
	SP_CHECK_EQ_INT(check(auth, got), 0); /* typ is optional */

	SP_CHECK_EQ_INT(check(NULL, got), -SP_VAPID_ABSENT);
	SP_CHECK_EQ_INT(check("Bearer abc", got), -SP_VAPID_ABSENT);
	SP_CHECK_EQ_INT(check("vapid t=abc", got), -SP_VAPID_MALFORMED);
	SP_CHECK_EQ_INT(check("vapid t=a.b.c, k=AAAA", got), -SP_VAPID_MALFORMED);
	{
		char kb[100], bad[300];

		sp_b64url_encode(pub, 65, kb);
		snprintf(bad, sizeof(bad), "vapid t=a.b, k=%s", kb);
		SP_CHECK_EQ_INT(check(bad, got), -SP_VAPID_MALFORMED);
		snprintf(bad, sizeof(bad), "vapid t=a.b.c.d, k=%s", kb);
		SP_CHECK_EQ_INT(check(bad, got), -SP_VAPID_MALFORMED);
		snprintf(bad, sizeof(bad), "vapid t=e30.e30.%s, k=%s",
		         "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
		         "AAAAAAAAAAA"
		         "AA",
		         kb);
		SP_CHECK_EQ_INT(check(bad, got), -SP_VAPID_BAD_ALG);
	}
	EVP_PKEY_free(k);
	EVP_PKEY_free(k2);
}

int main(void)
{
	SP_RUN(test_b64);
	SP_RUN(test_headers);
	SP_RUN(test_aes128gcm);
	SP_RUN(test_capability);
	SP_RUN(test_vapid);
	return sp_test_done();
}
