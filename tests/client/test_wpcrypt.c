/*
 * test_wpcrypt: RFC 8291 decryption against the RFC's Appendix A example byte for byte, the
 * public point of its private key, and refusals (another auth secret, a flipped bit, a
 * truncated body, a small output buffer); keys made here open what they should not fail on.
 */
#include <string.h>

#include "sp_b64.h"
#include "sp_test.h"
#include "sp_wpcrypt.h"

/* RFC 8291 Appendix A. */
static const char ua_private[] = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
static const char ua_public[] =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
static const char auth_secret[] = "BTBZMqHH6r4Tts7J_aSIgg";
static const char message[] = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_"
                              "c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS"
                              "6TlzAC8wEqKK6PBru3jl7A_"
                              "yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Q"
                              "ulcy4a-fN";
static const char plaintext[] = "When I grow up, I want to be a watermelon";

static uint8_t priv[32], pub[65], auth[16], body[256];
static size_t body_len;

static void load(void)
{
	SP_CHECK_EQ_INT(sp_b64url_decode(ua_private, strlen(ua_private), priv, 32), 32);
	SP_CHECK_EQ_INT(sp_b64url_decode(ua_public, strlen(ua_public), pub, 65), 65);
	SP_CHECK_EQ_INT(sp_b64url_decode(auth_secret, strlen(auth_secret), auth, 16), 16);
	body_len = (size_t)sp_b64url_decode(message, strlen(message), body, sizeof(body));
	SP_CHECK_EQ_INT(body_len, 144);
}

static void test_rfc8291_vector(void)
{
	uint8_t out[256], p2[65];
	size_t n = 0;

	load();
	SP_CHECK_EQ_INT(sp_wp_public(priv, p2), 0);
	SP_CHECK_MEM(p2, pub, 65);
	SP_CHECK_EQ_INT(sp_wp_open(priv, pub, auth, body, body_len, out, sizeof(out), &n), 0);
	SP_CHECK_EQ_INT(n, strlen(plaintext));
	SP_CHECK_MEM(out, plaintext, strlen(plaintext));
}

static void test_refusals(void)
{
	uint8_t out[256], other[16];
	size_t n = 0;

	load();
	memcpy(other, auth, 16);
	other[0] ^= 1;
	SP_CHECK_EQ_INT(sp_wp_open(priv, pub, other, body, body_len, out, sizeof(out), &n),
	                -SP_WP_E_DECRYPT);
	body[100] ^= 0x40;
	SP_CHECK_EQ_INT(sp_wp_open(priv, pub, auth, body, body_len, out, sizeof(out), &n),
	                -SP_WP_E_DECRYPT);
	body[100] ^= 0x40;
	SP_CHECK_EQ_INT(sp_wp_open(priv, pub, auth, body, 86 + 16, out, sizeof(out), &n),
	                -SP_WP_E_MALFORMED);
	SP_CHECK_EQ_INT(sp_wp_open(priv, pub, auth, body, body_len, out, 10, &n), -SP_WP_E_SPACE);
	body[30] ^= 1; /* the sender's point, off the curve */
	SP_CHECK(sp_wp_open(priv, pub, auth, body, body_len, out, sizeof(out), &n) < 0);
	body[30] ^= 1;
	SP_CHECK_EQ_INT(sp_wp_open(priv, pub, auth, body, body_len, out, sizeof(out), &n), 0);
}

static void test_keys(void)
{
	uint8_t p[32], q[65], a[16], q2[65], out[256];
	size_t n;

	SP_CHECK_EQ_INT(sp_wp_keys_new(p, q, a), 0);
	SP_CHECK_EQ_INT(q[0], 4);
	SP_CHECK_EQ_INT(sp_wp_public(p, q2), 0);
	SP_CHECK_MEM(q, q2, 65);
	load(); /* the RFC's message is not for the new keys */
	SP_CHECK_EQ_INT(sp_wp_open(p, q, a, body, body_len, out, sizeof(out), &n),
	                -SP_WP_E_DECRYPT);
}

int main(void)
{
	SP_RUN(test_rfc8291_vector);
	SP_RUN(test_refusals);
	SP_RUN(test_keys);
	return sp_test_done();
}
