/*
 * OpenSSL's own HPKE (OSSL_HPKE_*, OpenSSL 3.2 and later) as an independent oracle for the
 * classical suites (issue 13): for DHKEM(X25519) + HKDF-SHA256 with AES-128-GCM and with
 * ChaCha20Poly1305,
 *  - HPKE contexts set up by sp_hpke open what OSSL_HPKE sealed, several messages in sequence,
 *    and export the same secrets; and the other way round;
 *  - whole envelopes: OSSL_HPKE opens the HPKE layer of what sp_seal() sealed (info, AAD =
 *    header || msg_id, the inner plaintext of PROTOCOL.md 13.4), and sp_seal_open() accepts an
 *    envelope whose HPKE layer OSSL_HPKE made (the inner plaintext and signature built here).
 * OpenSSL 3.5 has no ML-KEM in its HPKE, so suite 0x0101 is checked by its vectors instead
 * (test_xwing.c). Built against OpenSSL older than 3.2 every case says SKIP.
 */
#include "sp_hpke.h"
#include "sp_seal.h"
#include "sp_test.h"
#include "tc_keys.h"

#include <openssl/opensslv.h>

#if OPENSSL_VERSION_NUMBER >= 0x30200000L

#include <openssl/hpke.h>
#include <openssl/rand.h>

static struct tc_dev alice, bob;

static const uint8_t info[] = "sealpush/1 envelope";
#define INFO_LEN (sizeof(info) - 1)

static const struct {
	uint16_t aead, seal_suite;
	const char *name;
} suites[] = {
        {OSSL_HPKE_AEAD_ID_CHACHA_POLY1305, SP_SEAL_SUITE_X25519_CHACHA20POLY1305, "ChaCha20"},
        {OSSL_HPKE_AEAD_ID_AES_GCM_128, SP_SEAL_SUITE_X25519_AES128GCM, "AES-128-GCM"},
};
#define NSUITES (sizeof(suites) / sizeof(suites[0]))

static OSSL_HPKE_SUITE ossl_suite(size_t i)
{
	OSSL_HPKE_SUITE s = {OSSL_HPKE_KEM_ID_X25519, OSSL_HPKE_KDF_ID_HKDF_SHA256, suites[i].aead};

	return s;
}

static struct sp_hpke_suite sp_suite(size_t i)
{
	struct sp_hpke_suite s = {SP_HPKE_KEM_X25519_SHA256, SP_HPKE_KDF_HKDF_SHA256,
	                          suites[i].aead};

	return s;
}

/* OSSL_HPKE seals three messages; sp_hpke opens them in order; both export the same. */
static void test_ossl_seals_sp_opens(void)
{
	for (size_t i = 0; i < NSUITES; i++) {
		OSSL_HPKE_CTX *c = OSSL_HPKE_CTX_new(OSSL_HPKE_MODE_BASE, ossl_suite(i),
		                                     OSSL_HPKE_ROLE_SENDER, NULL, NULL);
		struct sp_hpke_suite ss = sp_suite(i);
		struct sp_hpke_ctx r;
		uint8_t enc[32], ct[64 + 16], pt[64], e1[32], e2[32];
		size_t enc_len = sizeof(enc), ct_len;

		SP_CHECK(c != NULL);
		if (c == NULL)
			return;
		SP_CHECK_EQ_INT(OSSL_HPKE_encap(c, enc, &enc_len, bob.seal_pk, 32, info, INFO_LEN),
		                1);
		SP_CHECK_EQ_INT(enc_len, 32);
		SP_CHECK_EQ_INT(
		        sp_hpke_setup_base_r(&ss, enc, bob.seal_sk, NULL, info, INFO_LEN, &r, NULL),
		        0);
		for (int k = 0; k < 3; k++) {
			uint8_t msg[64], aad[8] = {'a', 'a', 'd', (uint8_t)k};

			memset(msg, 'A' + k, sizeof(msg));
			ct_len = sizeof(ct);
			SP_CHECK_EQ_INT(
			        OSSL_HPKE_seal(c, ct, &ct_len, aad, sizeof(aad), msg, sizeof(msg)),
			        1);
			SP_CHECK_EQ_INT(ct_len, sizeof(ct));
			SP_CHECK_EQ_INT(sp_hpke_open(&r, aad, sizeof(aad), ct, ct_len, pt), 0);
			SP_CHECK_MEM(pt, msg, sizeof(msg));
		}
		SP_CHECK_EQ_INT(OSSL_HPKE_export(c, e1, sizeof(e1), (const uint8_t *)"ctx", 3), 1);
		SP_CHECK_EQ_INT(sp_hpke_export(&r, (const uint8_t *)"ctx", 3, e2, sizeof(e2)), 0);
		SP_CHECK_MEM(e1, e2, sizeof(e1));
		sp_hpke_ctx_clear(&r);
		OSSL_HPKE_CTX_free(c);
	}
}

/* sp_hpke seals (to a key OSSL_HPKE made); OSSL_HPKE opens; a changed byte fails in both. */
static void test_sp_seals_ossl_opens(void)
{
	for (size_t i = 0; i < NSUITES; i++) {
		OSSL_HPKE_CTX *c = OSSL_HPKE_CTX_new(OSSL_HPKE_MODE_BASE, ossl_suite(i),
		                                     OSSL_HPKE_ROLE_RECEIVER, NULL, NULL);
		struct sp_hpke_suite ss = sp_suite(i);
		struct sp_hpke_ctx s;
		EVP_PKEY *priv = NULL;
		uint8_t pub[32], enc[32], ct[100 + 16], pt[100], e1[16], e2[16];
		size_t pub_len = sizeof(pub), pt_len;

		SP_CHECK(c != NULL);
		if (c == NULL)
			return;
		SP_CHECK_EQ_INT(
		        OSSL_HPKE_keygen(ossl_suite(i), pub, &pub_len, &priv, NULL, 0, NULL, NULL),
		        1);
		SP_CHECK_EQ_INT(
		        sp_hpke_setup_base_s(&ss, pub, info, INFO_LEN, NULL, 0, enc, &s, NULL), 0);
		SP_CHECK_EQ_INT(OSSL_HPKE_decap(c, enc, sizeof(enc), priv, info, INFO_LEN), 1);
		for (int k = 0; k < 3; k++) {
			uint8_t msg[100];

			RAND_bytes(msg, sizeof(msg));
			SP_CHECK_EQ_INT(sp_hpke_seal(&s, enc, sizeof(enc), msg, sizeof(msg), ct),
			                0);
			if (k == 2) {
				/* The last one changed: OpenSSL refuses it too. */
				ct[5] ^= 1;
				pt_len = sizeof(pt);
				SP_CHECK_EQ_INT(OSSL_HPKE_open(c, pt, &pt_len, enc, sizeof(enc), ct,
				                               sizeof(ct)),
				                0);
				ct[5] ^= 1;
			}
			pt_len = sizeof(pt);
			SP_CHECK_EQ_INT(
			        OSSL_HPKE_open(c, pt, &pt_len, enc, sizeof(enc), ct, sizeof(ct)),
			        1);
			SP_CHECK_EQ_INT(pt_len, sizeof(msg));
			SP_CHECK_MEM(pt, msg, sizeof(msg));
		}
		SP_CHECK_EQ_INT(OSSL_HPKE_export(c, e1, sizeof(e1), (const uint8_t *)"", 0), 1);
		SP_CHECK_EQ_INT(sp_hpke_export(&s, NULL, 0, e2, sizeof(e2)), 0);
		SP_CHECK_MEM(e1, e2, sizeof(e1));
		sp_hpke_ctx_clear(&s);
		EVP_PKEY_free(priv);
		OSSL_HPKE_CTX_free(c);
	}
}

static const uint8_t mid[16] = {0x5e, 0xa1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
static const uint64_t t0 = 1795000000000ull;
static const char hello[] = "opened by OpenSSL's own HPKE";

/* OSSL_HPKE opens the HPKE layer of sp_seal()'s envelopes; the content is as 13.4 says. */
static void test_envelope_opened_by_ossl(void)
{
	for (size_t i = 0; i < NSUITES; i++) {
		struct sp_seal_msg m = {mid,           t0,  600, 0, (const uint8_t *)hello,
		                        sizeof(hello), NULL};
		struct sp_seal_peer to = bob.peer;
		OSSL_HPKE_CTX *c = OSSL_HPKE_CTX_new(OSSL_HPKE_MODE_BASE, ossl_suite(i),
		                                     OSSL_HPKE_ROLE_RECEIVER, NULL, NULL);
		uint8_t *env = NULL, aad[35 + 16], *pt;
		size_t len, pt_len, spki_len;
		const uint8_t *spki = sp_sealer_spki(alice.s, &spki_len);

		to.suite = suites[i].seal_suite;
		SP_CHECK_EQ_INT(sp_seal(alice.s, &to, &m, &env, &len), 0);
		if (env == NULL || c == NULL) {
			OSSL_HPKE_CTX_free(c);
			return;
		}
		memcpy(aad, env, 35);
		memcpy(aad + 35, mid, 16);
		pt = malloc(len);
		pt_len = len;
		SP_CHECK_EQ_INT(OSSL_HPKE_decap(c, env + 3, 32, bob.seal, info, INFO_LEN), 1);
		SP_CHECK_EQ_INT(
		        OSSL_HPKE_open(c, pt, &pt_len, aad, sizeof(aad), env + 35, len - 35), 1);
		SP_CHECK_EQ_INT(pt_len, len - 35 - 16);
		/* flags, sent_at, ttl, recipient, spki_len, spki, payload_len, payload. */
		SP_CHECK_EQ_INT(pt[0], 0);
		SP_CHECK_MEM(pt + 13, bob.peer.token, 32);
		SP_CHECK_EQ_INT(pt[45] << 8 | pt[46], spki_len);
		SP_CHECK_MEM(pt + 47, spki, spki_len);
		SP_CHECK_EQ_INT(pt[47 + spki_len + 3], sizeof(hello));
		SP_CHECK_MEM(pt + 47 + spki_len + 4, hello, sizeof(hello));
		free(pt);
		free(env);
		OSSL_HPKE_CTX_free(c);
	}
}

static uint8_t *be(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
	return p + n;
}

/* An envelope whose HPKE layer OSSL_HPKE made (content and signature built here from 13.4 and
 * 13.5) opens with sp_seal_open(). */
static void test_ossl_envelope_opened_by_sp(void)
{
	for (size_t i = 0; i < NSUITES; i++) {
		OSSL_HPKE_CTX *c = OSSL_HPKE_CTX_new(OSSL_HPKE_MODE_BASE, ossl_suite(i),
		                                     OSSL_HPKE_ROLE_SENDER, NULL, NULL);
		uint8_t env[1024], tr[512], inner[512], sig[80], *p;
		size_t enc_len = 32, spki_len, sig_len = sizeof(sig), inner_len, ct_len;
		const uint8_t *spki = sp_sealer_spki(alice.s, &spki_len);
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		struct sp_seal_opened o;

		if (c == NULL || md == NULL) {
			SP_FAIL("OpenSSL contexts");
			OSSL_HPKE_CTX_free(c);
			EVP_MD_CTX_free(md);
			return;
		}
		/* Header: version, suite, enc (OpenSSL's encapsulation to bob). */
		env[0] = 1;
		be(env + 1, suites[i].seal_suite, 2);
		SP_CHECK_EQ_INT(
		        OSSL_HPKE_encap(c, env + 3, &enc_len, bob.seal_pk, 32, info, INFO_LEN), 1);
		/* The signed transcript (13.5). */
		p = tr;
		memcpy(p, "sealpush/1 signed message", 26);
		p += 26;
		memcpy(p, env, 35);
		p += 35;
		memcpy(p, mid, 16);
		p += 16;
		memcpy(p, bob.peer.token, 32);
		p += 32;
		memcpy(p, sp_sealer_token(alice.s), 32);
		p += 32;
		*p++ = 0;
		p = be(p, t0, 8);
		p = be(p, 600, 4);
		p = be(p, sizeof(hello), 4);
		memcpy(p, hello, sizeof(hello));
		p += sizeof(hello);
		SP_CHECK(EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, alice.sign, NULL) ==
		                 1 &&
		         EVP_DigestSign(md, sig, &sig_len, tr, (size_t)(p - tr)) == 1);
		/* The inner plaintext (13.4), padded to 256. */
		p = inner;
		*p++ = 0;
		p = be(p, t0, 8);
		p = be(p, 600, 4);
		memcpy(p, bob.peer.token, 32);
		p += 32;
		p = be(p, spki_len, 2);
		memcpy(p, spki, spki_len);
		p += spki_len;
		p = be(p, sizeof(hello), 4);
		memcpy(p, hello, sizeof(hello));
		p += sizeof(hello);
		*p++ = (uint8_t)sig_len;
		memcpy(p, sig, sig_len);
		p += sig_len;
		inner_len = ((size_t)(p - inner) + 255) / 256 * 256;
		memset(p, 0, inner_len - (size_t)(p - inner));
		{
			uint8_t aad[35 + 16];

			memcpy(aad, env, 35);
			memcpy(aad + 35, mid, 16);
			ct_len = sizeof(env) - 35;
			SP_CHECK_EQ_INT(OSSL_HPKE_seal(c, env + 35, &ct_len, aad, sizeof(aad),
			                               inner, inner_len),
			                1);
		}
		SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid, env, 35 + ct_len, t0, &o), 0);
		SP_CHECK_EQ_INT(o.suite, suites[i].seal_suite);
		SP_CHECK_MEM(o.sender, sp_sealer_token(alice.s), 32);
		SP_CHECK_EQ_INT(o.payload_len, sizeof(hello));
		SP_CHECK_MEM(o.payload, hello, sizeof(hello));
		sp_seal_opened_clear(&o);
		EVP_MD_CTX_free(md);
		OSSL_HPKE_CTX_free(c);
	}
}

int main(void)
{
	if (tc_dev_make(&alice, "alice") != 0 || tc_dev_make(&bob, "bob") != 0) {
		printf("Bail out! cannot make test identities\n");
		return 1;
	}
	SP_RUN(test_ossl_seals_sp_opens);
	SP_RUN(test_sp_seals_ossl_opens);
	SP_RUN(test_envelope_opened_by_ossl);
	SP_RUN(test_ossl_envelope_opened_by_sp);
	tc_dev_free(&alice);
	tc_dev_free(&bob);
	return sp_test_done();
}

#else /* OpenSSL older than 3.2: no OSSL_HPKE */

int main(void)
{
	static const char *const names[] = {"test_ossl_seals_sp_opens", "test_sp_seals_ossl_opens",
	                                    "test_envelope_opened_by_ossl",
	                                    "test_ossl_envelope_opened_by_sp"};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		sp_test_skip(names[i], "OpenSSL " OPENSSL_VERSION_STR " has no OSSL_HPKE (3.2+)");
	return sp_test_done();
}

#endif
