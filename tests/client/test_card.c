/*
 * Unit tests of client/sp_card: a good card (with and without certificate) verifies and seals;
 * a token that does not match the key, a certificate of another key, a bad signature and every
 * kind of malformed field are each refused with their own error.
 */
#include "sp_card.h"
#include "sp_test.h"
#include "tc_keys.h"

#include <errno.h>
#include <stdlib.h>

#include <jansson.h>
#include <openssl/evp.h>

static struct tc_dev alice, bob;
static const int64_t issued = 1795000000;

static char *make_card(struct tc_dev *d)
{
	char *json = NULL;
	int r = sp_card_make(d->s, issued, &json);

	if (r != 0)
		SP_FAIL("sp_card_make: %s", sp_seal_strerror(r));
	return json;
}

static int parse(const char *json, struct sp_card *c)
{
	return sp_card_parse(json, strlen(json), c);
}

/* Parses card, lets edit() change it, serializes it again; returns the new text (free it). */
static char *edit_card(const char *card, void (*edit)(json_t *))
{
	json_t *root = json_loads(card, 0, NULL);
	char *out;

	edit(root);
	out = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	return out;
}

/* Expects that edit() turns a good card into one refused with want. */
static void expect(const char *card, void (*edit)(json_t *), int want, const char *what)
{
	struct sp_card c;
	char *bad = edit_card(card, edit);
	int r = parse(bad, &c);

	if (r != want)
		SP_FAIL("%s: got %d (%s), want %d (%s)", what, r, sp_seal_strerror(r), want,
		        sp_seal_strerror(want));
	SP_CHECK(c.spki == NULL && c.cert == NULL && c.peer.pub_len == 0);
	free(bad);
}

static void test_good_card(void)
{
	struct sp_card c;
	char *json = make_card(&alice);
	size_t spki_len;
	const uint8_t *spki = sp_sealer_spki(alice.s, &spki_len);

	if (json == NULL)
		return;
	printf("# %s\n", json);
	SP_CHECK_EQ_INT(parse(json, &c), 0);
	SP_CHECK_MEM(c.peer.token, sp_sealer_token(alice.s), SP_TOKEN_LEN);
	SP_CHECK_EQ_INT(c.peer.suite, SP_SEAL_SUITE_DEFAULT);
	SP_CHECK_EQ_INT(c.peer.pub_len, 32);
	SP_CHECK_MEM(c.peer.pub, alice.seal_pk, 32);
	SP_CHECK_EQ_INT(c.spki_len, spki_len);
	SP_CHECK_MEM(c.spki, spki, spki_len);
	SP_CHECK(c.cert != NULL && c.cert_len > 0);
	SP_CHECK_EQ_INT(c.issued_at, issued);
	/* The card is all Bob needs to seal to Alice. */
	{
		static const uint8_t mid[16] = {1};
		struct sp_seal_msg m = {mid, 1795000000000ull, 60, 0, (const uint8_t *)"hi", 2};
		struct sp_seal_opened o;
		uint8_t *env;
		size_t len;

		SP_CHECK_EQ_INT(sp_seal(bob.s, &c.peer, &m, &env, &len), 0);
		SP_CHECK_EQ_INT(sp_seal_open(alice.s, NULL, mid, env, len, m.sent_at_ms, &o), 0);
		SP_CHECK_MEM(o.sender, sp_sealer_token(bob.s), 32);
		sp_seal_opened_clear(&o);
		free(env);
	}
	sp_card_clear(&c);
	sp_card_clear(&c);
	sp_card_clear(NULL);
	/* Whitespace and key order do not matter: the signature is over the fields. */
	{
		json_t *root = json_loads(json, 0, NULL);
		char *pretty = json_dumps(root, JSON_INDENT(2));

		SP_CHECK_EQ_INT(parse(pretty, &c), 0);
		sp_card_clear(&c);
		free(pretty);
		json_decref(root);
	}
	free(json);
}

static void test_card_without_cert_and_other_suite(void)
{
	struct sp_sealer *s = NULL;
	struct sp_card c;
	char *json = NULL;

	SP_CHECK_EQ_INT(sp_sealer_new(alice.sign, NULL, alice.seal, &s), 0);
	SP_CHECK_EQ_INT(sp_sealer_set_suite(s, SP_SEAL_SUITE_X25519_AES128GCM), 0);
	SP_CHECK_EQ_INT(sp_sealer_set_suite(s, 0x0101), SP_SEAL_ERR_SUITE);
	SP_CHECK_EQ_INT(sp_card_make(s, 0, &json), 0);
	SP_CHECK(json != NULL && strstr(json, "\"cert\"") == NULL);
	SP_CHECK(json != NULL && strstr(json, "X25519-SHA256-AES128GCM") != NULL);
	SP_CHECK_EQ_INT(parse(json, &c), 0);
	SP_CHECK(c.cert == NULL);
	SP_CHECK_EQ_INT(c.peer.suite, SP_SEAL_SUITE_X25519_AES128GCM);
	SP_CHECK_EQ_INT(c.issued_at, 0);
	sp_card_clear(&c);
	SP_CHECK_EQ_INT(sp_card_make(s, -1, &json), -EINVAL);
	free(json);
	sp_sealer_free(s);
}

/* ---- edits ---- */

static char bob_token_hex[65], bob_spki64[200], bob_cert64[2000];

static void e_token_bob(json_t *r)
{
	json_object_set_new(r, "token", json_string(bob_token_hex));
}
static void e_spki_bob(json_t *r)
{
	json_object_set_new(r, "spki", json_string(bob_spki64));
}
static void e_cert_bob(json_t *r)
{
	json_object_set_new(r, "cert", json_string(bob_cert64));
}
static void e_spki_and_token_bob(json_t *r)
{
	e_spki_bob(r);
	e_token_bob(r);
	json_object_del(r, "cert");
}
static void e_issued_later(json_t *r)
{
	json_object_set_new(r, "issued_at", json_integer(issued + 1));
}
static void e_suite_aes(json_t *r)
{
	json_object_set_new(json_object_get(r, "seal"), "suite",
	                    json_string("X25519-SHA256-AES128GCM"));
}
static void e_pub_other(json_t *r)
{
	json_object_set_new(json_object_get(r, "seal"), "pub",
	                    json_string("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="));
}
static void e_no_cert(json_t *r)
{
	json_object_del(r, "cert");
}
static void e_sig_flip(json_t *r)
{
	const char *sig = json_string_value(json_object_get(r, "sig"));
	char *s = strdup(sig);

	s[10] = s[10] == 'A' ? 'B' : 'A';
	json_object_set_new(r, "sig", json_string(s));
	free(s);
}
static void e_v2(json_t *r)
{
	json_object_set_new(r, "v", json_integer(2));
}
static void e_v_string(json_t *r)
{
	json_object_set_new(r, "v", json_string("1"));
}
static void e_unknown_suite(json_t *r)
{
	json_object_set_new(json_object_get(r, "seal"), "suite", json_string("ROT13"));
}
static void e_extra_field(json_t *r)
{
	json_object_set_new(r, "nick", json_string("alice"));
}
static void e_extra_seal_field(json_t *r)
{
	json_object_set_new(json_object_get(r, "seal"), "note", json_string("x"));
}
static void e_no_sig(json_t *r)
{
	json_object_del(r, "sig");
}
static void e_no_token(json_t *r)
{
	json_object_del(r, "token");
}
static void e_no_seal(json_t *r)
{
	json_object_del(r, "seal");
}
static void e_seal_string(json_t *r)
{
	json_object_set_new(r, "seal", json_string("x"));
}
static void e_token_short(json_t *r)
{
	json_object_set_new(r, "token", json_string("abcd"));
}
static void e_token_upper_junk(json_t *r)
{
	char t[65];

	memset(t, 'g', 64);
	t[64] = 0;
	json_object_set_new(r, "token", json_string(t));
}
static void e_issued_negative(json_t *r)
{
	json_object_set_new(r, "issued_at", json_integer(-5));
}
static void e_issued_string(json_t *r)
{
	json_object_set_new(r, "issued_at", json_string("2026-11-22T00:00:00Z"));
}
static void e_pub_short(json_t *r)
{
	json_object_set_new(json_object_get(r, "seal"), "pub", json_string("AAAA"));
}
static void e_pub_not_b64(json_t *r)
{
	json_object_set_new(json_object_get(r, "seal"), "pub",
	                    json_string("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA!="));
}
static void e_pub_noncanonical(json_t *r)
{
	/* The last character carries bits that the padding says are unused. */
	json_object_set_new(json_object_get(r, "seal"), "pub",
	                    json_string("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB="));
}
static void e_spki_garbage(json_t *r)
{
	json_object_set_new(r, "spki", json_string("AAAA"));
}
static void e_cert_garbage(json_t *r)
{
	json_object_set_new(r, "cert", json_string("AAAA"));
}
static void e_cert_number(json_t *r)
{
	json_object_set_new(r, "cert", json_integer(1));
}

static void b64(const uint8_t *in, size_t len, char *out)
{
	EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

static void test_refusals(void)
{
	char *card = make_card(&alice);
	size_t spki_len;
	const uint8_t *spki = sp_sealer_spki(bob.s, &spki_len);
	unsigned char *der = NULL;
	int n = i2d_X509(bob.cert, &der);

	if (card == NULL)
		return;
	sp_token_hex(sp_sealer_token(bob.s), bob_token_hex);
	b64(spki, spki_len, bob_spki64);
	b64(der, (size_t)n, bob_cert64);
	OPENSSL_free(der);

	/* The token does not match the key. */
	expect(card, e_token_bob, SP_SEAL_ERR_CARD_TOKEN, "Bob's token on Alice's key");
	expect(card, e_spki_bob, SP_SEAL_ERR_CARD_TOKEN, "Bob's key under Alice's token");
	expect(card, e_cert_bob, SP_SEAL_ERR_CARD_TOKEN, "Bob's certificate in Alice's card");
	/* Bob's key and token, Alice's signature: the token matches, the signature does not. */
	expect(card, e_spki_and_token_bob, SP_SEAL_ERR_CARD_SIGNATURE, "Alice signing as Bob");
	/* Any signed field changed: the signature does not hold. */
	expect(card, e_issued_later, SP_SEAL_ERR_CARD_SIGNATURE, "issued_at changed");
	expect(card, e_suite_aes, SP_SEAL_ERR_CARD_SIGNATURE, "suite changed");
	expect(card, e_pub_other, SP_SEAL_ERR_CARD_SIGNATURE, "sealing key substituted");
	expect(card, e_no_cert, SP_SEAL_ERR_CARD_SIGNATURE, "certificate removed");
	expect(card, e_sig_flip, SP_SEAL_ERR_CARD_SIGNATURE, "signature changed");
	/* Versions and suites. */
	expect(card, e_v2, SP_SEAL_ERR_VERSION, "v 2");
	expect(card, e_unknown_suite, SP_SEAL_ERR_SUITE, "unknown suite");
	/* Malformed fields. */
	expect(card, e_v_string, SP_SEAL_ERR_CARD_MALFORMED, "v a string");
	expect(card, e_extra_field, SP_SEAL_ERR_CARD_MALFORMED, "unknown field");
	expect(card, e_extra_seal_field, SP_SEAL_ERR_CARD_MALFORMED, "unknown seal field");
	expect(card, e_no_sig, SP_SEAL_ERR_CARD_MALFORMED, "no sig");
	expect(card, e_no_token, SP_SEAL_ERR_CARD_MALFORMED, "no token");
	expect(card, e_no_seal, SP_SEAL_ERR_CARD_MALFORMED, "no seal");
	expect(card, e_seal_string, SP_SEAL_ERR_CARD_MALFORMED, "seal a string");
	expect(card, e_token_short, SP_SEAL_ERR_CARD_MALFORMED, "short token");
	expect(card, e_token_upper_junk, SP_SEAL_ERR_CARD_MALFORMED, "token not hex");
	expect(card, e_issued_negative, SP_SEAL_ERR_CARD_MALFORMED, "negative issued_at");
	expect(card, e_issued_string, SP_SEAL_ERR_CARD_MALFORMED, "issued_at a string");
	expect(card, e_pub_short, SP_SEAL_ERR_CARD_MALFORMED, "3-byte sealing key");
	expect(card, e_pub_not_b64, SP_SEAL_ERR_CARD_MALFORMED, "sealing key not base64");
	expect(card, e_pub_noncanonical, SP_SEAL_ERR_CARD_MALFORMED, "non-canonical base64");
	expect(card, e_spki_garbage, SP_SEAL_ERR_CARD_MALFORMED, "spki not a key");
	expect(card, e_cert_garbage, SP_SEAL_ERR_CARD_MALFORMED, "cert not a certificate");
	expect(card, e_cert_number, SP_SEAL_ERR_CARD_MALFORMED, "cert a number");

	/* Text that is not a card at all. */
	{
		static const char *const texts[] = {
		        "", "{", "[]", "null", "{\"v\":1}", "\"card\"", "{\"v\":1,\"v\":1}"};
		struct sp_card c;

		for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
			if (parse(texts[i], &c) != SP_SEAL_ERR_CARD_MALFORMED)
				SP_FAIL("text %zu (%s) not refused as malformed", i, texts[i]);
		/* Too long, before parsing. */
		{
			size_t len = SP_CARD_MAX_JSON + 1;
			char *big = malloc(len);

			memset(big, ' ', len);
			memcpy(big, card, strlen(card));
			SP_CHECK_EQ_INT(sp_card_parse(big, len, &c), SP_SEAL_ERR_CARD_MALFORMED);
			/* The same card with trailing blanks within the limit is fine. */
			SP_CHECK_EQ_INT(sp_card_parse(big, SP_CARD_MAX_JSON, &c), 0);
			sp_card_clear(&c);
			free(big);
		}
		SP_CHECK_EQ_INT(sp_card_parse(NULL, 0, &c), -EINVAL);
	}
	free(card);
}

int main(void)
{
	if (tc_dev_make(&alice, "alice") != 0 || tc_dev_make(&bob, "bob") != 0) {
		printf("Bail out! cannot make test identities\n");
		return 1;
	}
	SP_RUN(test_good_card);
	SP_RUN(test_card_without_cert_and_other_suite);
	SP_RUN(test_refusals);
	tc_dev_free(&alice);
	tc_dev_free(&bob);
	return sp_test_done();
}
