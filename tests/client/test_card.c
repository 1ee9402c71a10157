/*
 * Unit tests of client/sp_card: a good card (with and without certificate) verifies and seals;
 * a token that does not match the key, a certificate of another key, a bad signature and every
 * kind of malformed field are each refused with their own error. Version 2 (a list of suites):
 * cards made here and cards built by an encoder written here from PROTOCOL.md 13.8 alone verify;
 * a sender takes the first listed suite it implements (a build without ML-KEM, or a sender
 * restricted to the classical suites, falls back to X25519 and the message still opens); a list
 * with a suite stripped, reordered or renamed fails the signature. The access key (sealed
 * sender, 17.7): an optional signed member of any version; edited, removed, added or of the
 * wrong length, the card fails.
 */
#include "sp_card.h"
#include "sp_test.h"
#include "tc_keys.h"

#include <errno.h>
#include <stdlib.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

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
		struct sp_seal_msg m = {mid, 1795000000000ull, 60, 0, (const uint8_t *)"hi", 2,
		                        NULL};
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
	json_object_set_new(r, "v", json_integer(2)); /* a v2 card's seal is an array */
}
static void e_v4(json_t *r)
{
	json_object_set_new(r, "v", json_integer(4));
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
	expect(card, e_v4, SP_SEAL_ERR_VERSION, "v 4");
	expect(card, e_v2, SP_SEAL_ERR_CARD_MALFORMED, "v 2 with a v1 seal");
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

/* ---- version 2 ---- */

static const uint16_t classical[] = {SP_SEAL_SUITE_X25519_CHACHA20POLY1305,
                                     SP_SEAL_SUITE_X25519_AES128GCM};

/* Seals "hi" from bob to peer and opens it with the sealer s; returns sp_seal_open's result. */
static int seal_open(const struct sp_seal_peer *peer, struct sp_sealer *s)
{
	static const uint8_t mid[16] = {2};
	struct sp_seal_msg m = {
	        mid, 1795000000000ull, 60, SP_SEAL_F_RECEIPT_WANTED, (const uint8_t *)"hi", 2,
	        NULL};
	struct sp_seal_opened o;
	uint8_t *env = NULL;
	size_t len;
	int r = sp_seal(bob.s, peer, &m, &env, &len);

	if (r != 0)
		return r;
	r = sp_seal_open(s, NULL, mid, env, len, m.sent_at_ms, &o);
	if (r == 0 &&
	    (o.payload_len != 2 || memcmp(o.payload, "hi", 2) != 0 || o.suite != peer->suite))
		r = -EBADMSG;
	sp_seal_opened_clear(&o);
	free(env);
	return r;
}

/* A v2 card of alice built here from PROTOCOL.md 13.8: names[i], pubs[i] in this order. */
static char *build_v2(size_t n, const char *const *names, const uint8_t *const *pubs,
                      const size_t *pub_lens)
{
	static uint8_t tbs[16384];
	uint8_t *p = tbs, sig[80];
	size_t spki_len, sig_len;
	const uint8_t *spki = sp_sealer_spki(alice.s, &spki_len);
	char hex[65], b[4096];
	json_t *root, *list;
	char *out;

	memcpy(p, "sealpush/1 contact card", 24); /* with its NUL */
	p += 24;
	*p++ = 2;
	memcpy(p, sp_sealer_token(alice.s), 32);
	p += 32;
	*p++ = (uint8_t)(spki_len >> 8);
	*p++ = (uint8_t)spki_len;
	memcpy(p, spki, spki_len);
	p += spki_len;
	memset(p, 0, 4); /* no certificate */
	p += 4;
	*p++ = (uint8_t)n;
	for (size_t i = 0; i < n; i++) {
		*p++ = (uint8_t)strlen(names[i]);
		memcpy(p, names[i], strlen(names[i]));
		p += strlen(names[i]);
		*p++ = (uint8_t)(pub_lens[i] >> 8);
		*p++ = (uint8_t)pub_lens[i];
		memcpy(p, pubs[i], pub_lens[i]);
		p += pub_lens[i];
	}
	for (int i = 0; i < 8; i++)
		*p++ = (uint8_t)((uint64_t)issued >> (56 - 8 * i));
	if (sp_sealer_sign(alice.s, tbs, (size_t)(p - tbs), sig, &sig_len) != 0)
		return NULL;
	list = json_array();
	for (size_t i = 0; i < n; i++) {
		b64(pubs[i], pub_lens[i], b);
		json_array_append_new(list, json_pack("{s:s, s:s}", "suite", names[i], "pub", b));
	}
	sp_token_hex(sp_sealer_token(alice.s), hex);
	b64(spki, spki_len, b);
	root = json_pack("{s:i, s:s, s:s, s:o, s:I}", "v", 2, "token", hex, "spki", b, "seal", list,
	                 "issued_at", (json_int_t)issued);
	b64(sig, sig_len, b);
	json_object_set_new(root, "sig", json_string(b));
	out = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	return out;
}

static struct sp_sealer *hyb; /* alice with a hybrid key too, where the build has it */
static uint8_t hyb_pk[SP_SEAL_PUB_MAX];

static void test_v2_made_here(void)
{
	struct sp_card c;
	char *json = NULL;

	/* A classical device's v2 card: one suite. */
	SP_CHECK_EQ_INT(sp_card_make_version(alice.s, issued, 2, &json), 0);
	SP_CHECK_EQ_INT(parse(json, &c), 0);
	SP_CHECK_EQ_INT(c.version, 2);
	SP_CHECK_EQ_INT(c.nseal, 1);
	SP_CHECK_EQ_INT(c.peer.suite, SP_SEAL_SUITE_DEFAULT);
	SP_CHECK_EQ_INT(seal_open(&c.peer, alice.s), 0);
	sp_card_clear(&c);
	free(json);
	/* Version 3 needs a key epoch (a rotated sealer), version 4 does not exist. */
	SP_CHECK_EQ_INT(sp_card_make_version(alice.s, issued, 3, &json), -EINVAL);
	SP_CHECK_EQ_INT(sp_card_make_version(alice.s, issued, 4, &json), -EINVAL);
}

static void test_v2_made_here_hybrid(void)
{
	struct sp_card c;
	struct sp_seal_peer p;
	char *json = NULL;
	/* A hybrid device: v2 by itself, MLKEM768-X25519 first, X25519 kept. */
	SP_CHECK_EQ_INT(sp_card_make(hyb, issued, &json), 0);
	printf("# %.200s...\n", json);
	SP_CHECK_EQ_INT(parse(json, &c), 0);
	SP_CHECK_EQ_INT(c.version, 2);
	SP_CHECK_EQ_INT(c.nseal, 2);
	SP_CHECK_EQ_INT(c.seal[0].suite, SP_SEAL_SUITE_HYBRID);
	SP_CHECK_EQ_INT(c.seal[1].suite, SP_SEAL_SUITE_DEFAULT);
	SP_CHECK_EQ_INT(c.peer.suite, SP_SEAL_SUITE_HYBRID);
	SP_CHECK_EQ_INT(c.peer.pub_len, 1216);
	SP_CHECK_MEM(c.peer.pub, hyb_pk, 1216);
	SP_CHECK_EQ_INT(seal_open(&c.peer, hyb), 0);
	/* A sender that implements only the classical suites takes the X25519 one. */
	SP_CHECK_EQ_INT(sp_card_pick(&c, classical, 2, &p), 0);
	SP_CHECK_EQ_INT(p.suite, SP_SEAL_SUITE_DEFAULT);
	SP_CHECK_MEM(p.pub, alice.seal_pk, 32);
	SP_CHECK_EQ_INT(seal_open(&p, hyb), 0);
	sp_card_clear(&c);
	free(json);
	/* Its v1 card names its preferred suite alone. */
	SP_CHECK_EQ_INT(sp_card_make_version(hyb, issued, 1, &json), 0);
	SP_CHECK_EQ_INT(parse(json, &c), 0);
	SP_CHECK_EQ_INT(c.version, 1);
	SP_CHECK_EQ_INT(c.peer.suite, SP_SEAL_SUITE_HYBRID);
	sp_card_clear(&c);
	free(json);
}

static void test_v2_mixed_versions(void)
{
	static uint8_t future[100];
	const char *names[] = {"MLKEM768-X25519-SHA256-ChaCha20Poly1305", "FUTURE-KEM-SHA256-X",
	                       "X25519-SHA256-ChaCha20Poly1305"};
	const uint8_t *pubs[] = {hyb_pk, future, alice.seal_pk};
	const size_t lens[] = {1216, sizeof(future), 32};
	int pq = sp_seal_suite_implemented(SP_SEAL_SUITE_HYBRID);
	struct sp_card c;
	struct sp_seal_peer p;
	char *json = build_v2(3, names, pubs, lens);

	SP_CHECK(json != NULL);
	if (json == NULL)
		return;
	SP_CHECK_EQ_INT(parse(json, &c), 0);
	SP_CHECK_EQ_INT(c.nseal, 3);
	SP_CHECK_EQ_INT(c.seal[0].suite, SP_SEAL_SUITE_HYBRID);
	SP_CHECK_EQ_INT(c.seal[1].suite, 0); /* a name this library does not know: kept, skipped */
	SP_CHECK_EQ_INT(c.seal[2].suite, SP_SEAL_SUITE_DEFAULT);
	/* The first suite this build implements: the hybrid one with ML-KEM, else X25519. */
	SP_CHECK_EQ_INT(c.peer.suite, pq ? SP_SEAL_SUITE_HYBRID : SP_SEAL_SUITE_DEFAULT);
	SP_CHECK_EQ_INT(seal_open(&c.peer, pq ? hyb : alice.s), 0);
	/* A sender built without ML-KEM (OpenSSL 3.0), simulated by its suite preference. */
	SP_CHECK_EQ_INT(sp_card_pick(&c, classical, 2, &p), 0);
	SP_CHECK_EQ_INT(p.suite, SP_SEAL_SUITE_DEFAULT);
	SP_CHECK_EQ_INT(seal_open(&p, pq ? hyb : alice.s), 0);
	{
		const uint16_t aes_only[] = {SP_SEAL_SUITE_X25519_AES128GCM};

		SP_CHECK_EQ_INT(sp_card_pick(&c, aes_only, 1, &p), SP_SEAL_ERR_SUITE);
	}
	sp_card_clear(&c);
	free(json);

	/* Stripping the PQ suite, reordering or renaming: the signature covers the list. */
	{
		char *t = build_v2(3, names, pubs, lens);
		json_t *root = json_loads(t, 0, NULL);
		json_t *list = json_object_get(root, "seal");

		free(t);
		json_array_remove(list, 0);
		t = json_dumps(root, JSON_COMPACT);
		SP_CHECK_EQ_INT(parse(t, &c), SP_SEAL_ERR_CARD_SIGNATURE);
		free(t);
		json_array_append(list, json_array_get(list, 0));
		json_array_remove(list, 0); /* now X25519, then FUTURE */
		t = json_dumps(root, JSON_COMPACT);
		SP_CHECK_EQ_INT(parse(t, &c), SP_SEAL_ERR_CARD_SIGNATURE);
		free(t);
		json_object_set_new(json_array_get(list, 1), "suite", json_string("FUTURE-KEM-2"));
		t = json_dumps(root, JSON_COMPACT);
		SP_CHECK_EQ_INT(parse(t, &c), SP_SEAL_ERR_CARD_SIGNATURE);
		free(t);
		/* The same suite twice; an object where the list goes. */
		json_array_append(list, json_array_get(list, 0));
		t = json_dumps(root, JSON_COMPACT);
		SP_CHECK_EQ_INT(parse(t, &c), SP_SEAL_ERR_CARD_MALFORMED);
		free(t);
		json_object_set(root, "seal", json_array_get(list, 0));
		t = json_dumps(root, JSON_COMPACT);
		SP_CHECK_EQ_INT(parse(t, &c), SP_SEAL_ERR_CARD_MALFORMED);
		free(t);
		json_object_set_new(root, "seal", json_array());
		t = json_dumps(root, JSON_COMPACT);
		SP_CHECK_EQ_INT(parse(t, &c), SP_SEAL_ERR_CARD_MALFORMED);
		free(t);
		json_decref(root);
	}
	/* Lists: five entries are too many; a known suite with a key of the wrong length; a
	 * correctly signed list of nothing this build implements. */
	{
		const char *n5[] = {"A-1", "A-2", "A-3", "A-4", "A-5"};
		const uint8_t *p5[] = {future, future, future, future, future};
		const size_t l5[] = {1, 1, 1, 1, 1};
		const char *bad[] = {"X25519-SHA256-ChaCha20Poly1305"};
		const size_t bad_len[] = {31};

		json = build_v2(5, n5, p5, l5);
		SP_CHECK_EQ_INT(parse(json, &c), SP_SEAL_ERR_CARD_MALFORMED);
		free(json);
		json = build_v2(1, bad, pubs, bad_len);
		SP_CHECK_EQ_INT(parse(json, &c), SP_SEAL_ERR_CARD_MALFORMED);
		free(json);
		json = build_v2(2, names + 1, pubs + 1, lens + 1); /* FUTURE, X25519 */
		SP_CHECK_EQ_INT(parse(json, &c), 0);
		SP_CHECK_EQ_INT(c.peer.suite, SP_SEAL_SUITE_DEFAULT);
		sp_card_clear(&c);
		free(json);
		json = build_v2(1, names + 1, pubs + 1, lens + 1); /* FUTURE alone */
		SP_CHECK_EQ_INT(parse(json, &c), SP_SEAL_ERR_SUITE);
		free(json);
		if (!pq) {
			json = build_v2(1, names, pubs,
			                lens); /* MLKEM768-X25519 alone, no ML-KEM */
			SP_CHECK_EQ_INT(parse(json, &c), SP_SEAL_ERR_SUITE);
			free(json);
		}
	}
}

static uint8_t access_other[SP_CARD_ACCESS_LEN];

static void e_access_other(json_t *r)
{
	char b64[64];

	EVP_EncodeBlock((unsigned char *)b64, access_other, SP_CARD_ACCESS_LEN);
	json_object_set_new(r, "access", json_string(b64));
}
static void e_access_removed(json_t *r)
{
	json_object_del(r, "access");
}
static void e_access_short(json_t *r)
{
	char b64[64];

	EVP_EncodeBlock((unsigned char *)b64, access_other, SP_CARD_ACCESS_LEN - 1);
	json_object_set_new(r, "access", json_string(b64));
}
static void e_access_number(json_t *r)
{
	json_object_set_new(r, "access", json_integer(7));
}

/* The access key member (PROTOCOL.md 13.8, 17.7), in a v1 card and in a v2 card. */
static void test_access_key(void)
{
	uint8_t key[SP_CARD_ACCESS_LEN];
	struct sp_card c;
	char *plain = make_card(&alice), *with = NULL, *v2 = NULL;

	RAND_bytes(key, sizeof(key));
	RAND_bytes(access_other, sizeof(access_other));
	SP_CHECK(sp_card_make_access(alice.s, issued, 0, key, &with) == 0);
	SP_CHECK(strstr(with, "\"access\":") != NULL && strstr(plain, "access") == NULL);
	SP_CHECK(parse(with, &c) == 0);
	SP_CHECK(c.has_access == 1 && memcmp(c.access_key, key, sizeof(key)) == 0);
	SP_CHECK(c.version == SP_CARD_VERSION_V1);
	sp_card_clear(&c);
	SP_CHECK(parse(plain, &c) == 0);
	SP_CHECK(c.has_access == 0);
	sp_card_clear(&c);
	/* The member is signed: another key, no key, or a key added to a plain card. */
	expect(with, e_access_other, SP_SEAL_ERR_CARD_SIGNATURE, "access key edited");
	expect(with, e_access_removed, SP_SEAL_ERR_CARD_SIGNATURE, "access key removed");
	expect(plain, e_access_other, SP_SEAL_ERR_CARD_SIGNATURE, "access key added");
	expect(with, e_access_short, SP_SEAL_ERR_CARD_MALFORMED, "a 31-byte access key");
	expect(with, e_access_number, SP_SEAL_ERR_CARD_MALFORMED, "access not a string");
	/* Version 2 (several suites are not needed to write one) carries it too. */
	SP_CHECK(sp_card_make_access(alice.s, issued, SP_CARD_VERSION_V2, key, &v2) == 0);
	SP_CHECK(parse(v2, &c) == 0);
	SP_CHECK(c.version == SP_CARD_VERSION_V2 && c.has_access == 1 &&
	         memcmp(c.access_key, key, sizeof(key)) == 0);
	sp_card_clear(&c);
	expect(v2, e_access_other, SP_SEAL_ERR_CARD_SIGNATURE, "v2: access key edited");
	free(plain);
	free(with);
	free(v2);
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
	SP_RUN(test_access_key);
	if (sp_seal_suite_implemented(SP_SEAL_SUITE_HYBRID)) {
		uint8_t seed[32];
		struct sp_seal_peer p;

		RAND_bytes(seed, sizeof(seed));
		if (sp_sealer_new(alice.sign, alice.cert, alice.seal, &hyb) != 0 ||
		    sp_sealer_set_hybrid_key(hyb, seed, sizeof(seed)) != 0 ||
		    sp_sealer_peer_suite(hyb, SP_SEAL_SUITE_HYBRID, &p) != 0) {
			printf("Bail out! cannot make the hybrid sealer\n");
			return 1;
		}
		memcpy(hyb_pk, p.pub, sizeof(hyb_pk));
	} else {
		RAND_bytes(hyb_pk, sizeof(hyb_pk)); /* the key of a card made elsewhere */
	}
	SP_RUN(test_v2_made_here);
	if (hyb != NULL)
		SP_RUN(test_v2_made_here_hybrid);
	else
		sp_test_skip("test_v2_made_here_hybrid", "no MLKEM768-X25519 in this build");
	SP_RUN(test_v2_mixed_versions);
	sp_sealer_free(hyb);
	tc_dev_free(&alice);
	tc_dev_free(&bob);
	return sp_test_done();
}
