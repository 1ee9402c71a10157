/*
 * Unit tests of client/sp_seal and sp_seal_replay: round trips in every suite (the hybrid
 * MLKEM768-X25519 suite 0x0101 where the build has it: its size buckets, tampering, the
 * fallback of a hybrid device to X25519, reply keys across suites), every refusal
 * with its own error (tampering with any byte, wrong key, wrong recipient, redirected msg_id,
 * a signature by another key, stale, future, duplicate), receipts, ephemeral messages, the
 * replay cache, and key files.
 *
 * Part of it builds envelopes with an encoder written here from PROTOCOL.md section 13 alone
 * (tb_build), so the format is checked by a second implementation, and so that it can make
 * envelopes the library would never make (another signer, bad padding, a lying length).
 */
#include "sp_seal.h"
#include "sp_hpke.h"
#include "sp_test.h"
#include "tc_keys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/rand.h>

static struct tc_dev alice, bob, carol;

static const uint8_t mid1[16] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                                 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
static const uint8_t mid2[16] = {0x0f, 0x0e, 0x0d, 0x0c, 0x0b, 0x0a, 0x09, 0x08,
                                 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0x00};
static const uint64_t t0 = 1795000000000ull; /* a wall-clock time in ms (2026-11) */
static const char hello[] = "hello bob, this is alice";

/* Seals payload from -> to with flags and ttl at t0; returns the envelope (caller frees). */
static uint8_t *seal_msg(struct tc_dev *from, const struct sp_seal_peer *to, const uint8_t *mid,
                         uint8_t flags, uint32_t ttl, uint64_t sent_at, size_t *len)
{
	struct sp_seal_msg m = {mid,           sent_at, ttl, flags, (const uint8_t *)hello,
	                        sizeof(hello), NULL};
	uint8_t *env = NULL;
	int r = sp_seal(from->s, to, &m, &env, len);

	if (r != 0)
		SP_FAIL("sp_seal: %s", sp_seal_strerror(r));
	return env;
}

static void test_round_trip_both_suites(void)
{
	static const uint16_t suites[] = {SP_SEAL_SUITE_X25519_CHACHA20POLY1305,
	                                  SP_SEAL_SUITE_X25519_AES128GCM};

	for (size_t i = 0; i < 2; i++) {
		struct sp_seal_peer to = bob.peer;
		struct sp_seal_opened o;
		size_t len, spki_len;
		const uint8_t *spki = sp_sealer_spki(alice.s, &spki_len);
		uint8_t *env;

		to.suite = suites[i];
		env = seal_msg(&alice, &to, mid1, 0, 3600, t0, &len);
		if (env == NULL)
			return;
		/* Header: version, suite, then 32 bytes of enc; content padded to 256. */
		SP_CHECK_EQ_INT(env[0], SP_SEAL_VERSION);
		SP_CHECK_EQ_INT(env[1] << 8 | env[2], suites[i]);
		SP_CHECK_EQ_INT((len - 35 - 16) % SP_SEAL_PAD_DEFAULT, 0);
		SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, env, len, t0 + 1000, &o), 0);
		SP_CHECK_MEM(o.sender, sp_sealer_token(alice.s), SP_TOKEN_LEN);
		SP_CHECK_EQ_INT(o.sender_spki_len, spki_len);
		SP_CHECK_MEM(o.sender_spki, spki, spki_len);
		SP_CHECK_MEM(o.msg_id, mid1, 16);
		SP_CHECK_EQ_INT(o.suite, suites[i]);
		SP_CHECK_EQ_INT(o.flags, 0);
		SP_CHECK_EQ_INT(o.sent_at_ms, t0);
		SP_CHECK_EQ_INT(o.ttl, 3600);
		SP_CHECK_EQ_INT(o.window_end_ms, t0 + 3600 * 1000 + SP_SEAL_SKEW_DEFAULT_MS);
		SP_CHECK_EQ_INT(o.payload_len, sizeof(hello));
		SP_CHECK_MEM(o.payload, hello, sizeof(hello));
		SP_CHECK_EQ_INT(o.has_reply, 0);
		sp_seal_opened_clear(&o);
		sp_seal_opened_clear(&o); /* twice is fine */
		free(env);
	}
}

static void test_empty_and_large_payloads(void)
{
	static uint8_t big[16384];
	struct sp_seal_opened o;
	struct sp_seal_msg m = {mid1, t0, 60, 0, NULL, 0, NULL};
	uint8_t *env;
	size_t len;

	SP_CHECK_EQ_INT(sp_seal(alice.s, &bob.peer, &m, &env, &len), 0);
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, env, len, t0, &o), 0);
	SP_CHECK_EQ_INT(o.payload_len, 0);
	sp_seal_opened_clear(&o);
	free(env);

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 31 + 7);
	/* The largest payload that fits the default max_blob (16 KiB), with a reply key. */
	m.payload = big;
	m.payload_len = sp_seal_max_payload(alice.s, 16384, 1);
	m.flags = SP_SEAL_F_RECEIPT_WANTED | SP_SEAL_F_REPLY_ACCESS; /* the longest: both */
	m.reply_access = big + 100;
	SP_CHECK(m.payload_len > 15000 && m.payload_len < 16384);
	for (int i = 0; i < 20; i++) { /* signatures vary in length: try several */
		SP_CHECK_EQ_INT(sp_seal(alice.s, &bob.peer, &m, &env, &len), 0);
		SP_CHECK(len <= 16384);
		free(env);
	}
	SP_CHECK_EQ_INT(sp_seal(alice.s, &bob.peer, &m, &env, &len), 0);
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, env, len, t0, &o), 0);
	SP_CHECK_EQ_INT(o.payload_len, m.payload_len);
	SP_CHECK_MEM(o.payload, big, m.payload_len);
	sp_seal_opened_clear(&o);
	free(env);
	/* One block more does not fit. */
	m.payload_len += SP_SEAL_PAD_DEFAULT;
	SP_CHECK_EQ_INT(sp_seal(alice.s, &bob.peer, &m, &env, &len), 0);
	SP_CHECK(len > 16384);
	free(env);
	SP_CHECK_EQ_INT(sp_seal_max_payload(alice.s, 50, 0), 0);
	/* The figures PROTOCOL.md 13.4 gives. */
	SP_CHECK_EQ_INT(sp_seal_max_payload(alice.s, 16384, 0), 15909);
	SP_CHECK_EQ_INT(sp_seal_max_payload(alice.s, 16384, 1), 15837);
}

static void test_padding(void)
{
	struct sp_seal_opened o;
	size_t len1, len2;
	uint8_t *e1, *e2;

	/* Two payloads of different size look the same once padded. */
	struct sp_seal_msg m = {mid1, t0, 60, 0, (const uint8_t *)"a", 1, NULL};
	SP_CHECK_EQ_INT(sp_seal(alice.s, &bob.peer, &m, &e1, &len1), 0);
	m.payload = (const uint8_t *)hello;
	m.payload_len = sizeof(hello);
	SP_CHECK_EQ_INT(sp_seal(alice.s, &bob.peer, &m, &e2, &len2), 0);
	SP_CHECK_EQ_INT(len1, len2);
	free(e1);
	free(e2);
	/* No padding: the size follows the payload. */
	SP_CHECK_EQ_INT(sp_sealer_set_pad(alice.s, 1), 0);
	m.payload_len = 1;
	SP_CHECK_EQ_INT(sp_seal(alice.s, &bob.peer, &m, &e1, &len1), 0);
	m.payload_len = 2;
	SP_CHECK_EQ_INT(sp_seal(alice.s, &bob.peer, &m, &e2, &len2), 0);
	/* One byte more payload; the DER ECDSA signature itself is 68 to 72 bytes (r and s are 31
	 * to 33 bytes each: 32, one more when the high bit is set, rarely one less). */
	SP_CHECK(len2 + 3 >= len1 && len2 <= len1 + 5);
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, e2, len2, t0, &o), 0);
	SP_CHECK_EQ_INT(o.payload_len, 2);
	sp_seal_opened_clear(&o);
	free(e1);
	free(e2);
	SP_CHECK_EQ_INT(sp_sealer_set_pad(alice.s, SP_SEAL_PAD_DEFAULT), 0);
	SP_CHECK_EQ_INT(sp_sealer_set_pad(alice.s, 0), -EINVAL);
	SP_CHECK_EQ_INT(sp_sealer_set_pad(alice.s, 65537), -EINVAL);
}

/* Every byte of the envelope, changed, is refused; the header bytes with their own errors. */
static void test_tamper_every_byte(void)
{
	struct sp_seal_opened o;
	size_t len, refused = 0;
	uint8_t *env = seal_msg(&alice, &bob.peer, mid1, 0, 3600, t0, &len);

	if (env == NULL)
		return;
	for (size_t i = 0; i < len; i++) {
		for (int bit = 0; bit < 8; bit += 7) {
			int r, want;

			env[i] ^= (uint8_t)(1u << bit);
			r = sp_seal_open(bob.s, NULL, mid1, env, len, t0, &o);
			env[i] ^= (uint8_t)(1u << bit);
			/* Byte 0 is the version; 1-2 the suite (0x0001 -> 0x8001, 0x0101, 0x0000).
			 */
			want = i == 0  ? SP_SEAL_ERR_VERSION
			       : i < 3 ? SP_SEAL_ERR_SUITE
			               : SP_SEAL_ERR_DECRYPT;
			if (r != want)
				SP_FAIL("byte %zu bit %d: got %d (%s), want %d", i, bit, r,
				        sp_seal_strerror(r), want);
			else
				refused++;
			SP_CHECK(o.buf == NULL && o.payload == NULL);
		}
	}
	SP_CHECK_EQ_INT(refused, 2 * len);
	/* Truncated at every length, or extended by a byte: refused too. */
	for (size_t n = 0; n < len; n++) {
		int r = sp_seal_open(bob.s, NULL, mid1, env, n, t0, &o);

		if (r != (n < 3 + 32 + 16 + 47 ? SP_SEAL_ERR_MALFORMED : SP_SEAL_ERR_DECRYPT))
			SP_FAIL("truncated to %zu: %d (%s)", n, r, sp_seal_strerror(r));
	}
	{
		uint8_t *longer = malloc(len + 1);

		memcpy(longer, env, len);
		longer[len] = 0;
		SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, longer, len + 1, t0, &o),
		                SP_SEAL_ERR_DECRYPT);
		free(longer);
	}
	/* And the untouched envelope still opens. */
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, env, len, t0, &o), 0);
	sp_seal_opened_clear(&o);
	free(env);
}

static void test_wrong_key_and_redirects(void)
{
	struct sp_seal_opened o;
	struct sp_seal_peer misdirected = bob.peer;
	size_t len;
	uint8_t *env = seal_msg(&alice, &bob.peer, mid1, 0, 3600, t0, &len);

	/* Carol (another sealing key) cannot open what was sealed to Bob. */
	SP_CHECK_EQ_INT(sp_seal_open(carol.s, NULL, mid1, env, len, t0, &o), SP_SEAL_ERR_DECRYPT);
	/* The relay cannot give it another msg_id. */
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid2, env, len, t0, &o), SP_SEAL_ERR_DECRYPT);
	free(env);
	/* Sealed to Bob's key but addressed to Carol's token: Bob refuses it as misdirected. */
	memcpy(misdirected.token, carol.peer.token, SP_TOKEN_LEN);
	env = seal_msg(&alice, &misdirected, mid1, 0, 3600, t0, &len);
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, env, len, t0, &o), SP_SEAL_ERR_RECIPIENT);
	free(env);
	/* An unusable recipient key (a low-order point) is refused when sealing. */
	memset(misdirected.pub, 0, sizeof(misdirected.pub));
	{
		struct sp_seal_msg m = {mid1, t0, 60, 0, NULL, 0, NULL};

		SP_CHECK_EQ_INT(sp_seal(alice.s, &misdirected, &m, &env, &len),
		                SP_SEAL_ERR_PEER_KEY);
		misdirected = bob.peer;
		misdirected.suite = 0x01FF; /* reserved, never implemented */
		SP_CHECK_EQ_INT(sp_seal(alice.s, &misdirected, &m, &env, &len), SP_SEAL_ERR_SUITE);
		m.flags = SP_SEAL_F_IS_RECEIPT;
		SP_CHECK_EQ_INT(sp_seal(alice.s, &bob.peer, &m, &env, &len), -EINVAL);
		m.flags = 0x80;
		SP_CHECK_EQ_INT(sp_seal(alice.s, &bob.peer, &m, &env, &len), -EINVAL);
	}
}

/* ---- an independent encoder, from PROTOCOL.md 13 ---- */

struct tb {
	uint8_t version;    /* 0: 1; 2: version 2 with key_epoch (13.1, 13.11) */
	uint32_t key_epoch; /* version 2: the epoch named in the header */
	uint16_t suite;
	const uint8_t *pub;       /* recipient sealing key */
	const uint8_t *recipient; /* token inside */
	const uint8_t *msg_id;
	uint8_t flags;
	uint64_t sent_at;
	uint32_t ttl;
	const uint8_t *spki;
	size_t spki_len;
	EVP_PKEY *signer;
	const struct sp_seal_peer *reply;
	const uint8_t *payload;
	size_t payload_len;
	size_t pad;                   /* padding bytes */
	uint8_t pad_byte;             /* their value (0 is right) */
	int64_t payload_len_delta;    /* lie about the payload length by this much */
	const uint8_t *sig_recipient; /* token signed (default: recipient) */
};

static void be(uint8_t **p, uint64_t v, int n)
{
	for (int i = n - 1; i >= 0; i--)
		*(*p)++ = (uint8_t)(v >> (8 * i));
}

static void put(uint8_t **p, const void *b, size_t n)
{
	memcpy(*p, b, n);
	*p += n;
}

/* Builds an envelope into out (cap bytes); returns its length or 0. */
static size_t tb_build(const struct tb *b, uint8_t *out, size_t cap)
{
	static const struct sp_hpke_suite chacha = {0x0020, 0x0001, 0x0003};
	static const struct sp_hpke_suite aes = {0x0020, 0x0001, 0x0001};
	uint8_t tr[4096], inner[4096], sig[128], sender[32], aad[64], *p;
	size_t sig_len = sizeof(sig), inner_len, hl = b->version == 2 ? 39 : 35;
	int v2 = b->version == 2;
	struct sp_hpke_ctx c;
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	EVP_Digest(b->spki, b->spki_len, sender, NULL, EVP_sha256(), NULL);
	/* Header. */
	p = out;
	*p++ = v2 ? 2 : 1;
	be(&p, b->suite, 2);
	if (v2)
		be(&p, b->key_epoch, 4);
	if (sp_hpke_setup_base_s(b->suite == 1 ? &chacha : &aes, b->pub,
	                         (const uint8_t *)"sealpush/1 envelope", 19, NULL, 0, p, &c,
	                         NULL) != 0)
		return 0;
	p += 32;
	/* Transcript: label NUL, version, suite, enc, msg_id, recipient, sender, flags, sent_at,
	 * ttl, [reply suite, len, key], payload length, payload. */
	{
		uint8_t *t = tr;

		put(&t, "sealpush/1 signed message", 26);
		*t++ = v2 ? 2 : 1;
		be(&t, b->suite, 2);
		if (v2)
			be(&t, b->key_epoch, 4);
		put(&t, out + hl - 32, 32);
		put(&t, b->msg_id, 16);
		put(&t, b->sig_recipient ? b->sig_recipient : b->recipient, 32);
		put(&t, sender, 32);
		*t++ = b->flags;
		be(&t, b->sent_at, 8);
		be(&t, b->ttl, 4);
		if (b->reply) {
			be(&t, b->reply->suite, 2);
			if (v2)
				be(&t, b->reply->epoch, 4);
			be(&t, b->reply->pub_len, 2);
			put(&t, b->reply->pub, b->reply->pub_len);
		}
		be(&t, b->payload_len, 4);
		put(&t, b->payload, b->payload_len);
		if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, b->signer) != 1 ||
		    EVP_DigestSign(md, sig, &sig_len, tr, (size_t)(t - tr)) != 1)
			return 0;
		EVP_MD_CTX_free(md);
	}
	/* Inner: flags, sent_at, ttl, recipient, spki_len, spki, [reply], payload_len, payload,
	 * sig_len, sig, padding. */
	{
		uint8_t *q = inner;

		*q++ = b->flags;
		be(&q, b->sent_at, 8);
		be(&q, b->ttl, 4);
		put(&q, b->recipient, 32);
		be(&q, b->spki_len, 2);
		put(&q, b->spki, b->spki_len);
		if (b->reply) {
			be(&q, b->reply->suite, 2);
			if (v2)
				be(&q, b->reply->epoch, 4);
			be(&q, b->reply->pub_len, 2);
			put(&q, b->reply->pub, b->reply->pub_len);
		}
		be(&q, (uint64_t)((int64_t)b->payload_len + b->payload_len_delta), 4);
		put(&q, b->payload, b->payload_len);
		*q++ = (uint8_t)sig_len;
		put(&q, sig, sig_len);
		memset(q, b->pad_byte, b->pad);
		q += b->pad;
		inner_len = (size_t)(q - inner);
	}
	if (hl + inner_len + 16 > cap)
		return 0;
	memcpy(aad, out, hl);
	memcpy(aad + hl, b->msg_id, 16);
	if (sp_hpke_seal(&c, aad, hl + 16, inner, inner_len, p) != 0)
		return 0;
	return hl + inner_len + 16;
}

/* A builder preset: Alice to Bob, honest. */
static struct tb tb_honest(void)
{
	struct tb b = {0};

	b.suite = 1;
	b.pub = bob.seal_pk;
	b.recipient = bob.peer.token;
	b.msg_id = mid1;
	b.sent_at = t0;
	b.ttl = 600;
	b.spki = sp_sealer_spki(alice.s, &b.spki_len);
	b.signer = alice.sign;
	b.payload = (const uint8_t *)hello;
	b.payload_len = sizeof(hello);
	b.pad = 13;
	return b;
}

static int tb_open(const struct tb *b, struct sp_seal_opened *o)
{
	uint8_t env[4096];
	size_t len = tb_build(b, env, sizeof(env));

	if (len == 0) {
		SP_FAIL("tb_build failed");
		return -1;
	}
	return sp_seal_open(bob.s, NULL, b->msg_id, env, len, t0, o);
}

static void test_independent_encoder_agrees(void)
{
	struct sp_seal_opened o;
	struct tb b = tb_honest();

	SP_CHECK_EQ_INT(tb_open(&b, &o), 0);
	SP_CHECK_MEM(o.sender, sp_sealer_token(alice.s), 32);
	SP_CHECK_EQ_INT(o.payload_len, sizeof(hello));
	SP_CHECK_MEM(o.payload, hello, sizeof(hello));
	sp_seal_opened_clear(&o);
	/* With a reply key and a receipt request, in the other suite. */
	b.suite = 2;
	b.flags = SP_SEAL_F_RECEIPT_WANTED | SP_SEAL_F_REPLY_KEY;
	b.reply = &alice.peer;
	SP_CHECK_EQ_INT(tb_open(&b, &o), 0);
	SP_CHECK_EQ_INT(o.has_reply, 1);
	SP_CHECK_MEM(o.reply.pub, alice.peer.pub, 32);
	SP_CHECK_MEM(o.reply.token, alice.peer.token, 32);
	sp_seal_opened_clear(&o);
}

static void test_signature_refusals(void)
{
	struct sp_seal_opened o;
	struct tb b = tb_honest();
	size_t carol_spki_len;
	const uint8_t *carol_spki = sp_sealer_spki(carol.s, &carol_spki_len);

	/* Claims to be Alice, signed by Carol's key. */
	b.signer = carol.sign;
	SP_CHECK_EQ_INT(tb_open(&b, &o), SP_SEAL_ERR_SIGNATURE);
	/* Claims to be Carol, signed by Alice's key. */
	b = tb_honest();
	b.spki = carol_spki;
	b.spki_len = carol_spki_len;
	SP_CHECK_EQ_INT(tb_open(&b, &o), SP_SEAL_ERR_SIGNATURE);
	/* Alice signed it for Carol; someone re-sealed it to Bob (surreptitious forwarding). */
	b = tb_honest();
	b.sig_recipient = carol.peer.token;
	SP_CHECK_EQ_INT(tb_open(&b, &o), SP_SEAL_ERR_SIGNATURE);
	/* A sender key that is not P-256 (X25519 here). */
	{
		unsigned char *der = NULL;
		int n = i2d_PUBKEY(carol.seal, &der);

		b = tb_honest();
		b.spki = der;
		b.spki_len = (size_t)n;
		SP_CHECK_EQ_INT(tb_open(&b, &o), SP_SEAL_ERR_SENDER_KEY);
		OPENSSL_free(der);
	}
	/* A point that is not on the curve. */
	{
		uint8_t off[91];

		b = tb_honest();
		memcpy(off, b.spki, 91);
		off[90] ^= 1;
		b.spki = off;
		SP_CHECK_EQ_INT(tb_open(&b, &o), SP_SEAL_ERR_SENDER_KEY);
	}
	/* A P-256 key in a non-canonical encoding (compressed point): its token would differ. */
	{
		EVP_PKEY *k = EVP_PKEY_dup(alice.sign);
		unsigned char *der = NULL;
		int n;

		SP_CHECK(EVP_PKEY_set_utf8_string_param(k, "point-format", "compressed") == 1);
		n = i2d_PUBKEY(k, &der);
		SP_CHECK(n > 0 && (size_t)n != b.spki_len);
		b = tb_honest();
		b.spki = der;
		b.spki_len = (size_t)n;
		SP_CHECK_EQ_INT(tb_open(&b, &o), SP_SEAL_ERR_SENDER_KEY);
		OPENSSL_free(der);
		EVP_PKEY_free(k);
	}
}

/* Opens a builder's envelope with the given sealer (not necessarily Bob's). */
static int tb_open_with(struct sp_sealer *s, const struct tb *b, struct sp_seal_opened *o)
{
	uint8_t env[4096];
	size_t len = tb_build(b, env, sizeof(env));

	if (len == 0) {
		SP_FAIL("tb_build failed");
		return -1;
	}
	return sp_seal_open(s, NULL, b->msg_id, env, len, t0, o);
}

/*
 * The sender key cache: repeat senders hit, only verified senders are added, a cached key never
 * lets a forgery through, the bound holds (evictions), and 0 turns it off.
 */
static void test_sender_key_cache(void)
{
	struct sp_seal_key_cache_stats st;
	struct sp_seal_opened o;
	struct sp_sealer *s = NULL;
	struct tb b = tb_honest(), bc = tb_honest();
	size_t carol_spki_len;
	const uint8_t *carol_spki = sp_sealer_spki(carol.s, &carol_spki_len);

	SP_CHECK_EQ_INT(sp_sealer_new(bob.sign, bob.cert, bob.seal, &s), 0);
	sp_sealer_key_cache_stats(s, &st);
	SP_CHECK_EQ_INT(st.limit, SP_SEAL_KEY_CACHE_DEFAULT);
	SP_CHECK_EQ_INT(st.entries + st.hits + st.misses + st.evictions, 0);
	/* Alice twice: a miss that adds her key, then a hit. */
	for (int i = 0; i < 2; i++) {
		SP_CHECK_EQ_INT(tb_open_with(s, &b, &o), 0);
		SP_CHECK_MEM(o.sender, sp_sealer_token(alice.s), 32);
		sp_seal_opened_clear(&o);
	}
	sp_sealer_key_cache_stats(s, &st);
	SP_CHECK_EQ_INT(st.misses, 1);
	SP_CHECK_EQ_INT(st.hits, 1);
	SP_CHECK_EQ_INT(st.entries, 1);
	/* Claims to be Alice (her key is cached), signed by Carol: still refused. */
	b.signer = carol.sign;
	SP_CHECK_EQ_INT(tb_open_with(s, &b, &o), SP_SEAL_ERR_SIGNATURE);
	sp_sealer_key_cache_stats(s, &st);
	SP_CHECK_EQ_INT(st.hits, 2);
	/* Claims to be Carol, signed by Alice: refused, and Carol's key is not added. */
	b = tb_honest();
	b.spki = carol_spki;
	b.spki_len = carol_spki_len;
	SP_CHECK_EQ_INT(tb_open_with(s, &b, &o), SP_SEAL_ERR_SIGNATURE);
	SP_CHECK_EQ_INT(tb_open_with(s, &b, &o), SP_SEAL_ERR_SIGNATURE);
	sp_sealer_key_cache_stats(s, &st);
	SP_CHECK_EQ_INT(st.misses, 3);
	SP_CHECK_EQ_INT(st.entries, 1);
	/* One slot, two senders taking turns: every open works, each evicts the other. */
	b = tb_honest();
	bc.spki = carol_spki;
	bc.spki_len = carol_spki_len;
	bc.signer = carol.sign;
	SP_CHECK_EQ_INT(sp_sealer_set_key_cache(s, 1), 0);
	for (int i = 0; i < 3; i++) {
		SP_CHECK_EQ_INT(tb_open_with(s, &b, &o), 0);
		SP_CHECK_MEM(o.sender, sp_sealer_token(alice.s), 32);
		sp_seal_opened_clear(&o);
		SP_CHECK_EQ_INT(tb_open_with(s, &bc, &o), 0);
		SP_CHECK_MEM(o.sender, sp_sealer_token(carol.s), 32);
		sp_seal_opened_clear(&o);
	}
	sp_sealer_key_cache_stats(s, &st);
	SP_CHECK_EQ_INT(st.limit, 1);
	SP_CHECK_EQ_INT(st.entries, 1);
	SP_CHECK_EQ_INT(st.misses, 6);
	SP_CHECK_EQ_INT(st.hits, 0);
	SP_CHECK_EQ_INT(st.evictions, 5);
	/* Off: nothing counted, opening works. */
	SP_CHECK_EQ_INT(sp_sealer_set_key_cache(s, 0), 0);
	SP_CHECK_EQ_INT(tb_open_with(s, &b, &o), 0);
	sp_seal_opened_clear(&o);
	sp_sealer_key_cache_stats(s, &st);
	SP_CHECK_EQ_INT(st.limit + st.entries + st.hits + st.misses + st.evictions, 0);
	SP_CHECK_EQ_INT(sp_sealer_set_key_cache(s, SP_SEAL_KEY_CACHE_MAX + 1), -EINVAL);
	SP_CHECK_EQ_INT(sp_sealer_set_key_cache(NULL, 1), -EINVAL);
	SP_CHECK_EQ_INT(sp_sealer_set_key_cache(s, SP_SEAL_KEY_CACHE_MAX), 0);
	SP_CHECK_EQ_INT(tb_open_with(s, &b, &o), 0);
	sp_seal_opened_clear(&o);
	sp_sealer_free(s);
}

static void test_malformed_content(void)
{
	struct sp_seal_opened o;
	struct tb b = tb_honest();

	b.pad_byte = 1; /* padding must be zero */
	SP_CHECK_EQ_INT(tb_open(&b, &o), SP_SEAL_ERR_MALFORMED);
	b = tb_honest();
	b.payload_len_delta = 1000; /* a length past the end */
	SP_CHECK_EQ_INT(tb_open(&b, &o), SP_SEAL_ERR_MALFORMED);
	b = tb_honest();
	b.payload_len_delta = -1; /* a length short by one: the rest does not parse */
	SP_CHECK_EQ_INT(tb_open(&b, &o), SP_SEAL_ERR_MALFORMED);
	b = tb_honest();
	b.flags = 0x10; /* unknown flag */
	SP_CHECK_EQ_INT(tb_open(&b, &o), SP_SEAL_ERR_MALFORMED);
	b = tb_honest();
	b.flags = SP_SEAL_F_REPLY_ACCESS; /* a reply access key but no reply key */
	SP_CHECK_EQ_INT(tb_open(&b, &o), SP_SEAL_ERR_MALFORMED);
	b = tb_honest();
	b.flags = SP_SEAL_F_RECEIPT_WANTED; /* a receipt wanted but no reply key */
	SP_CHECK_EQ_INT(tb_open(&b, &o), SP_SEAL_ERR_MALFORMED);
	b = tb_honest();
	b.flags = SP_SEAL_F_RECEIPT_WANTED | SP_SEAL_F_REPLY_KEY | SP_SEAL_F_IS_RECEIPT;
	b.reply = &alice.peer;
	SP_CHECK_EQ_INT(tb_open(&b, &o), SP_SEAL_ERR_MALFORMED);
	b = tb_honest();
	b.spki_len = 0; /* no sender key */
	SP_CHECK_EQ_INT(tb_open(&b, &o), SP_SEAL_ERR_MALFORMED);
	{
		struct sp_seal_peer odd = alice.peer;

		b = tb_honest();
		b.flags = SP_SEAL_F_REPLY_KEY;
		odd.suite = 0x0777;
		b.reply = &odd;
		SP_CHECK_EQ_INT(tb_open(&b, &o), SP_SEAL_ERR_SUITE);
		odd.suite = alice.peer.suite;
		odd.pub_len = 31;
		SP_CHECK_EQ_INT(tb_open(&b, &o), SP_SEAL_ERR_MALFORMED);
	}
}

static void test_window(void)
{
	const uint64_t skew = SP_SEAL_SKEW_DEFAULT_MS;
	struct sp_seal_opened o;
	size_t len;
	uint8_t *env = seal_msg(&alice, &bob.peer, mid1, 0, 60, t0, &len);

	/* Open from sent_at - skew to sent_at + ttl + skew, inclusive. */
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, env, len, t0 - skew, &o), 0);
	sp_seal_opened_clear(&o);
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, env, len, t0 + 60000 + skew, &o), 0);
	sp_seal_opened_clear(&o);
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, env, len, t0 - skew - 1, &o),
	                SP_SEAL_ERR_FUTURE);
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, env, len, t0 + 60000 + skew + 1, &o),
	                SP_SEAL_ERR_STALE);
	/* A tighter skew narrows both ends. */
	SP_CHECK_EQ_INT(sp_sealer_set_skew(bob.s, 1000), 0);
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, env, len, t0 - 1001, &o),
	                SP_SEAL_ERR_FUTURE);
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, env, len, t0 + 61001, &o),
	                SP_SEAL_ERR_STALE);
	SP_CHECK_EQ_INT(sp_sealer_set_skew(bob.s, SP_SEAL_SKEW_DEFAULT_MS), 0);
	SP_CHECK_EQ_INT(sp_sealer_set_skew(bob.s, 24u * 3600 * 1000 + 1), -EINVAL);
	free(env);
	/* ttl 0 (ephemeral, e.g. typing): the window is the skew only. */
	env = seal_msg(&alice, &bob.peer, mid1, 0, 0, t0, &len);
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, env, len, t0 + skew, &o), 0);
	SP_CHECK_EQ_INT(o.ttl, 0);
	SP_CHECK_EQ_INT(o.window_end_ms, t0 + skew);
	sp_seal_opened_clear(&o);
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, env, len, t0 + skew + 1, &o),
	                SP_SEAL_ERR_STALE);
	free(env);
}

static void test_duplicates(void)
{
	struct sp_seal_replay *rp;
	struct sp_seal_replay_stats st;
	struct sp_seal_opened o;
	size_t len, len2;
	uint8_t *env = seal_msg(&alice, &bob.peer, mid1, 0, 60, t0, &len);
	uint8_t *env2 = seal_msg(&alice, &bob.peer, mid2, 0, 60, t0, &len2);

	SP_CHECK_EQ_INT(sp_seal_replay_new(100, &rp), 0);
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, rp, mid1, env, len, t0, &o), 0);
	/* Not yet remembered (the application has not processed it): a copy still opens. */
	{
		struct sp_seal_opened o2;

		SP_CHECK_EQ_INT(sp_seal_open(bob.s, rp, mid1, env, len, t0, &o2), 0);
		sp_seal_opened_clear(&o2);
	}
	SP_CHECK_EQ_INT(sp_seal_opened_remember(rp, &o, t0), 0);
	sp_seal_opened_clear(&o);
	/* A copy inside its window is a duplicate; another message is not. */
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, rp, mid1, env, len, t0 + 5000, &o),
	                SP_SEAL_ERR_DUPLICATE);
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, rp, mid2, env2, len2, t0 + 5000, &o), 0);
	sp_seal_opened_clear(&o);
	/* After the window, the copy is stale, and the cache may forget it. */
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, rp, mid1, env, len,
	                             t0 + 60000 + SP_SEAL_SKEW_DEFAULT_MS + 1, &o),
	                SP_SEAL_ERR_STALE);
	SP_CHECK_EQ_INT(sp_seal_replay_expire(rp, t0 + 60000 + SP_SEAL_SKEW_DEFAULT_MS + 1), 1);
	sp_seal_replay_stats(rp, &st);
	SP_CHECK_EQ_INT(st.entries, 0);
	SP_CHECK_EQ_INT(st.duplicates, 1);
	SP_CHECK_EQ_INT(st.expired, 1);
	sp_seal_replay_free(rp);
	free(env);
	free(env2);
}

static void test_replay_cache_limits(void)
{
	struct sp_seal_replay *rp;
	struct sp_seal_replay_stats st;
	uint8_t tok[32] = {1}, id[16] = {0};
	const uint64_t end = t0 + 1000000;

	SP_CHECK_EQ_INT(sp_seal_replay_new(SP_SEAL_REPLAY_LIMIT_MAX + 1, &rp), -EINVAL);
	SP_CHECK_EQ_INT(sp_seal_replay_new(64, &rp), 0);
	/* 64 messages sent at t0 + i; all remembered. */
	for (uint32_t i = 0; i < 64; i++) {
		memcpy(id, &i, sizeof(i));
		SP_CHECK_EQ_INT(sp_seal_replay_add(rp, tok, id, t0 + i, end, t0), 0);
	}
	sp_seal_replay_stats(rp, &st);
	SP_CHECK_EQ_INT(st.entries, 64);
	SP_CHECK_EQ_INT(st.floor_ms, 0);
	/* The 65th: nothing has expired, so the oldest eighth goes and the floor covers it. */
	{
		uint32_t i = 64;

		memcpy(id, &i, sizeof(i));
		SP_CHECK_EQ_INT(sp_seal_replay_add(rp, tok, id, t0 + 64, end, t0), 0);
	}
	sp_seal_replay_stats(rp, &st);
	SP_CHECK_EQ_INT(st.evicted, 8);
	SP_CHECK_EQ_INT(st.entries, 57);
	SP_CHECK_EQ_INT(st.floor_ms, t0 + 7);
	/* An evicted message is refused as stale (never let through), a kept one as duplicate. */
	{
		uint32_t i = 3;

		memcpy(id, &i, sizeof(i));
		SP_CHECK_EQ_INT(sp_seal_replay_seen(rp, tok, id, t0 + 3), SP_SEAL_ERR_STALE);
		i = 30;
		memcpy(id, &i, sizeof(i));
		SP_CHECK_EQ_INT(sp_seal_replay_seen(rp, tok, id, t0 + 30), SP_SEAL_ERR_DUPLICATE);
		i = 1000;
		memcpy(id, &i, sizeof(i));
		SP_CHECK_EQ_INT(sp_seal_replay_seen(rp, tok, id, t0 + 30), 0);
		/* The same id from another sender is another message. */
		i = 30;
		memcpy(id, &i, sizeof(i));
		tok[0] = 2;
		SP_CHECK_EQ_INT(sp_seal_replay_seen(rp, tok, id, t0 + 30), 0);
		tok[0] = 1;
	}
	/* When windows have closed, making room drops those first and keeps the floor. */
	for (uint32_t i = 100; i < 200; i++) {
		memcpy(id, &i, sizeof(i));
		SP_CHECK_EQ_INT(sp_seal_replay_add(rp, tok, id, t0 + i, t0 + 2000000 + i, end + 1),
		                0);
	}
	sp_seal_replay_stats(rp, &st);
	SP_CHECK(st.entries <= 64);
	SP_CHECK_EQ_INT(st.expired, 57);
	sp_seal_replay_free(rp);
	sp_seal_replay_free(NULL);
}

static void test_replay_cache_file(void)
{
	char dir[] = "/tmp/sp-replay-XXXXXX", path[64];
	struct sp_seal_replay *rp, *rp2;
	struct sp_seal_replay_stats st;
	uint8_t tok[32] = {7}, id[16] = {0};
	struct stat sb;
	FILE *fp;

	SP_CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/replay", dir);
	SP_CHECK_EQ_INT(sp_seal_replay_new(8, &rp), 0);
	for (uint32_t i = 0; i < 10; i++) {
		memcpy(id, &i, sizeof(i));
		/* Entries 0 and 1 close at t0 + 5. */
		SP_CHECK_EQ_INT(
		        sp_seal_replay_add(rp, tok, id, t0 + i, i < 2 ? t0 + 5 : t0 + 9000, t0), 0);
	}
	sp_seal_replay_stats(rp, &st);
	SP_CHECK_EQ_INT(sp_seal_replay_load(rp, path, t0), -ENOENT);
	SP_CHECK_EQ_INT(sp_seal_replay_save(rp, path, t0 + 10), 0);
	SP_CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600);
	SP_CHECK_EQ_INT(sp_seal_replay_new(8, &rp2), 0);
	SP_CHECK_EQ_INT(sp_seal_replay_load(rp2, path, t0 + 10), 0);
	{
		struct sp_seal_replay_stats st2;

		sp_seal_replay_stats(rp2, &st2);
		/*
		 * Limit 8, ten messages, nothing closed at t0: the 9th and 10th each pushed the
		 * oldest out (messages 0 and 1), raising the floor to t0 + 1; 2 to 9 remain.
		 */
		SP_CHECK_EQ_INT(st.floor_ms, t0 + 1);
		SP_CHECK_EQ_INT(st.entries, 8);
		SP_CHECK_EQ_INT(st.evicted, 2);
		SP_CHECK_EQ_INT(st2.floor_ms, t0 + 1);
		SP_CHECK_EQ_INT(st2.entries, 8);
	}
	for (uint32_t i = 2; i < 10; i++) {
		memcpy(id, &i, sizeof(i));
		SP_CHECK_EQ_INT(sp_seal_replay_seen(rp2, tok, id, t0 + i), SP_SEAL_ERR_DUPLICATE);
	}
	/* Damaged files change nothing. */
	fp = fopen(path, "r+b");
	SP_CHECK(fp != NULL);
	if (fp != NULL) {
		fputc('X', fp); /* the magic */
		fclose(fp);
	}
	SP_CHECK_EQ_INT(sp_seal_replay_load(rp2, path, t0), SP_SEAL_ERR_REPLAY_FILE);
	SP_CHECK(truncate(path, 27) == 0);
	SP_CHECK_EQ_INT(sp_seal_replay_load(rp2, path, t0), SP_SEAL_ERR_REPLAY_FILE);
	unlink(path);
	rmdir(dir);
	sp_seal_replay_free(rp);
	sp_seal_replay_free(rp2);
}

static void test_receipts(void)
{
	struct sp_seal_opened o, r;
	uint8_t *env, *renv, got_id[16], status = 0;
	size_t len, rlen, plain_len;
	static const uint8_t rid[16] = {0xaa, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

	env = seal_msg(&alice, &bob.peer, mid1, SP_SEAL_F_RECEIPT_WANTED, 3600, t0, &len);
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, env, len, t0, &o), 0);
	SP_CHECK_EQ_INT(o.flags, SP_SEAL_F_RECEIPT_WANTED | SP_SEAL_F_REPLY_KEY);
	SP_CHECK_EQ_INT(o.has_reply, 1);
	SP_CHECK_MEM(o.reply.token, alice.peer.token, 32);
	SP_CHECK_MEM(o.reply.pub, alice.peer.pub, 32);
	/* Bob's library answers with a sealed receipt to Alice's token. */
	SP_CHECK_EQ_INT(sp_seal_receipt(bob.s, &o, SP_SEAL_RECEIPT_RECEIVED, rid, t0 + 10, 3600,
	                                &renv, &rlen),
	                0);
	SP_CHECK_EQ_INT(sp_seal_open(alice.s, NULL, rid, renv, rlen, t0 + 20, &r), 0);
	SP_CHECK_EQ_INT(r.flags, SP_SEAL_F_IS_RECEIPT);
	SP_CHECK_MEM(r.sender, bob.peer.token, 32);
	SP_CHECK_EQ_INT(sp_seal_receipt_parse(&r, got_id, &status), 0);
	SP_CHECK_MEM(got_id, mid1, 16);
	SP_CHECK_EQ_INT(status, SP_SEAL_RECEIPT_RECEIVED);
	/* A receipt never asks for a receipt. */
	SP_CHECK_EQ_INT(sp_seal_receipt(alice.s, &r, 1, rid, t0, 60, &env, &len),
	                SP_SEAL_ERR_NO_RECEIPT);
	/* To the relay a receipt is the size of any short message. */
	{
		struct sp_seal_msg m = {rid, t0, 3600, 0, (const uint8_t *)"typing...", 9, NULL};
		uint8_t *p;

		SP_CHECK_EQ_INT(sp_seal(bob.s, &alice.peer, &m, &p, &plain_len), 0);
		SP_CHECK_EQ_INT(plain_len, rlen);
		/* on a bucket of the rule a relay's pad_block enforces (common/sp_bucket.h) */
		SP_CHECK(sp_bucket_ok(rlen, SP_BUCKET_BLOCK_DEFAULT));
		SP_CHECK(!sp_bucket_ok(rlen + 1, SP_BUCKET_BLOCK_DEFAULT));
		free(p);
	}
	sp_seal_opened_clear(&r);
	free(renv);
	sp_seal_opened_clear(&o);
	free(env);
	/* No receipt asked for: none can be made, and an ordinary message is not a receipt. */
	env = seal_msg(&alice, &bob.peer, mid1, 0, 3600, t0, &len);
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, env, len, t0, &o), 0);
	SP_CHECK_EQ_INT(sp_seal_receipt(bob.s, &o, 1, rid, t0, 60, &renv, &rlen),
	                SP_SEAL_ERR_NO_RECEIPT);
	SP_CHECK_EQ_INT(sp_seal_receipt_parse(&o, got_id, &status), SP_SEAL_ERR_NO_RECEIPT);
	sp_seal_opened_clear(&o);
	free(env);
	/* A reply access key (17.6): carried with the reply key, signed, cleared with the message;
	 * never without a reply key; a receipt carries none. */
	{
		static const uint8_t akey[SP_SEAL_ACCESS_LEN] = {0x5a, 1, 2, 3, 4, 5, 6, 7, 8, 9};
		struct sp_seal_msg m = {mid1,
		                        t0,
		                        3600,
		                        SP_SEAL_F_RECEIPT_WANTED | SP_SEAL_F_REPLY_ACCESS,
		                        (const uint8_t *)"hi",
		                        2,
		                        akey};

		SP_CHECK_EQ_INT(sp_seal(alice.s, &bob.peer, &m, &env, &len), 0);
		SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, env, len, t0, &o), 0);
		SP_CHECK_EQ_INT(o.flags, SP_SEAL_F_RECEIPT_WANTED | SP_SEAL_F_REPLY_KEY |
		                                 SP_SEAL_F_REPLY_ACCESS);
		SP_CHECK_EQ_INT(o.has_reply_access, 1);
		SP_CHECK_MEM(o.reply_access, akey, sizeof(akey));
		SP_CHECK_EQ_INT(sp_seal_receipt(bob.s, &o, SP_SEAL_RECEIPT_RECEIVED, rid, t0, 60,
		                                &renv, &rlen),
		                0);
		SP_CHECK_EQ_INT(sp_seal_open(alice.s, NULL, rid, renv, rlen, t0, &r), 0);
		SP_CHECK_EQ_INT(r.flags, SP_SEAL_F_IS_RECEIPT);
		SP_CHECK_EQ_INT(r.has_reply_access, 0);
		sp_seal_opened_clear(&r);
		free(renv);
		sp_seal_opened_clear(&o);
		SP_CHECK_EQ_INT(o.has_reply_access, 0);
		free(env);
		m.flags = SP_SEAL_F_REPLY_ACCESS; /* no reply key */
		SP_CHECK_EQ_INT(sp_seal(alice.s, &bob.peer, &m, &env, &len), -EINVAL);
		m.flags = SP_SEAL_F_REPLY_KEY | SP_SEAL_F_REPLY_ACCESS;
		m.reply_access = NULL; /* the flag without the key */
		SP_CHECK_EQ_INT(sp_seal(alice.s, &bob.peer, &m, &env, &len), -EINVAL);
	}
	/* A reply key without a receipt request is carried for the application. */
	env = seal_msg(&alice, &bob.peer, mid1, SP_SEAL_F_REPLY_KEY, 3600, t0, &len);
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, env, len, t0, &o), 0);
	SP_CHECK_EQ_INT(o.has_reply, 1);
	SP_CHECK_EQ_INT(sp_seal_receipt(bob.s, &o, 1, rid, t0, 60, &renv, &rlen),
	                SP_SEAL_ERR_NO_RECEIPT);
	sp_seal_opened_clear(&o);
	free(env);
}

static void test_size_limit(void)
{
	static uint8_t big[5000];
	struct sp_seal_msg m = {mid1, t0, 60, 0, big, sizeof(big), NULL};
	struct sp_seal_opened o;
	uint8_t *env;
	size_t len;

	uint8_t *env2;
	size_t len2;

	SP_CHECK_EQ_INT(sp_seal(alice.s, &bob.peer, &m, &env, &len), 0);
	SP_CHECK_EQ_INT(sp_sealer_set_max_envelope(bob.s, 4096), 0);
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, env, len, t0, &o), SP_SEAL_ERR_TOO_LARGE);
	SP_CHECK_EQ_INT(sp_seal(bob.s, &alice.peer, &m, &env2, &len2), SP_SEAL_ERR_TOO_LARGE);
	SP_CHECK(env2 == NULL);
	SP_CHECK_EQ_INT(sp_sealer_set_max_envelope(bob.s, SP_SEAL_MAX_ENVELOPE_DEFAULT), 0);
	SP_CHECK_EQ_INT(sp_sealer_set_max_envelope(bob.s, 1023), -EINVAL);
	free(env);
}

/* Writes key (private, PEM) or cert to path with mode; returns 0 or -1. */
static int write_pem(const char *path, EVP_PKEY *key, X509 *cert, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
	FILE *fp = fd >= 0 ? fdopen(fd, "w") : NULL;
	int ok;

	if (fp == NULL)
		return -1;
	ok = key != NULL ? PEM_write_PrivateKey(fp, key, NULL, NULL, 0, NULL, NULL)
	                 : PEM_write_X509(fp, cert);
	fclose(fp);
	return ok ? 0 : -1;
}

/* Writes a v2 sealing key file (PROTOCOL.md 13.10) with the body given; 0 or -1. */
static int write_v2(const char *path, const uint8_t *body, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	FILE *fp = fd >= 0 ? fdopen(fd, "w") : NULL;
	int ok;

	if (fp == NULL)
		return -1;
	ok = PEM_write(fp, "SEALPUSH SEALING KEY", "", body, (long)len) > 0;
	fclose(fp);
	return ok ? 0 : -1;
}

/* Key files of both formats, with and without an X-Wing seed, and damaged ones. */
static void test_key_files_v2(void)
{
	int pq = sp_seal_suite_implemented(SP_SEAL_SUITE_HYBRID);
	char dir[] = "/tmp/sp-keys2-XXXXXX", key[64], seal[64], text[4096];
	uint8_t body[128], seed[32] = {7};
	struct sp_sealer *s = NULL;
	struct sp_seal_peer p;
	size_t n;
	FILE *fp;

	SP_CHECK(mkdtemp(dir) != NULL);
	snprintf(key, sizeof(key), "%s/dev.key", dir);
	snprintf(seal, sizeof(seal), "%s/dev.seal", dir);
	SP_CHECK_EQ_INT(write_pem(key, alice.sign, NULL, 0600), 0);

	/* v1 on request: a PKCS#8 X25519 key, as every earlier build wrote. */
	SP_CHECK_EQ_INT(sp_seal_keygen_file_ex(seal, 0), 0);
	fp = fopen(seal, "r");
	n = fp != NULL ? fread(text, 1, sizeof(text) - 1, fp) : 0;
	text[n] = 0;
	if (fp != NULL)
		fclose(fp);
	SP_CHECK(strstr(text, "-----BEGIN PRIVATE KEY-----") != NULL);
	SP_CHECK_EQ_INT(sp_sealer_load(NULL, key, seal, &s), 0);
	SP_CHECK(s != NULL && !sp_sealer_has_hybrid_key(s));
	sp_sealer_free(s);
	unlink(seal);
	/* v2 by default where the hybrid suite is built in. */
	if (!pq) {
		SP_CHECK_EQ_INT(sp_seal_keygen_file_ex(seal, 1), SP_SEAL_ERR_SUITE);
	} else {
		SP_CHECK_EQ_INT(sp_seal_keygen_file(seal), 0);
		fp = fopen(seal, "r");
		n = fp != NULL ? fread(text, 1, sizeof(text) - 1, fp) : 0;
		text[n] = 0;
		if (fp != NULL)
			fclose(fp);
		SP_CHECK(strstr(text, "-----BEGIN SEALPUSH SEALING KEY-----") != NULL);
		SP_CHECK_EQ_INT(sp_sealer_load(NULL, key, seal, &s), 0);
		SP_CHECK(s != NULL && sp_sealer_has_hybrid_key(s));
		if (s != NULL) {
			sp_sealer_peer(s, &p);
			SP_CHECK_EQ_INT(p.suite, SP_SEAL_SUITE_HYBRID);
			SP_CHECK_EQ_INT(p.pub_len, 1216);
			SP_CHECK_EQ_INT(sp_sealer_peer_suite(s, SP_SEAL_SUITE_DEFAULT, &p), 0);
			SP_CHECK_EQ_INT(p.pub_len, 32);
		}
		sp_sealer_free(s);
		unlink(seal);
	}
	/* v2 written here: X25519 and a seed (loads X25519 alone without ML-KEM), an entry of an
	 * unknown KEM skipped. */
	{
		uint8_t *q = body;
		size_t len = 32;

		*q++ = 1;
		*q++ = 3;
		memcpy(q, "\x00\x20\x00\x20", 4);
		EVP_PKEY_get_raw_private_key(alice.seal, q + 4, &len);
		q += 36;
		memcpy(q, "\x12\x34\x00\x03xyz", 7);
		q += 7;
		memcpy(q, "\x64\x7a\x00\x20", 4);
		memcpy(q + 4, seed, 32);
		q += 36;
		SP_CHECK_EQ_INT(write_v2(seal, body, (size_t)(q - body)), 0);
		SP_CHECK_EQ_INT(sp_sealer_load(NULL, key, seal, &s), 0);
		SP_CHECK(s != NULL && sp_sealer_has_hybrid_key(s) == pq);
		if (s != NULL) {
			sp_sealer_peer_suite(s, SP_SEAL_SUITE_DEFAULT, &p);
			SP_CHECK_MEM(p.pub, alice.seal_pk, 32); /* that very X25519 key */
			sp_sealer_peer(s, &p);
			SP_CHECK_EQ_INT(p.suite, pq ? SP_SEAL_SUITE_HYBRID : SP_SEAL_SUITE_DEFAULT);
		}
		sp_sealer_free(s);
		s = NULL;
		/* The same without the seed: X25519 alone, on every build. */
		body[1] = 2;
		SP_CHECK_EQ_INT(write_v2(seal, body, 2 + 36 + 7), 0);
		SP_CHECK_EQ_INT(sp_sealer_load(NULL, key, seal, &s), 0);
		SP_CHECK(s != NULL && !sp_sealer_has_hybrid_key(s));
		sp_sealer_free(s);
		s = NULL;
		/* Damaged: another version, a count beyond the body, trailing bytes, no X25519 key,
		 * two X25519 keys, a short seed; and group-readable. */
		body[1] = 3;
		body[0] = 2;
		SP_CHECK_EQ_INT(write_v2(seal, body, (size_t)(q - body)), 0);
		SP_CHECK_EQ_INT(sp_sealer_load(NULL, key, seal, &s), SP_SEAL_ERR_KEY_FILE);
		body[0] = 1;
		body[1] = 4;
		SP_CHECK_EQ_INT(write_v2(seal, body, (size_t)(q - body)), 0);
		SP_CHECK_EQ_INT(sp_sealer_load(NULL, key, seal, &s), SP_SEAL_ERR_KEY_FILE);
		body[1] = 2;
		SP_CHECK_EQ_INT(write_v2(seal, body, 2 + 36 + 7 + 1), 0);
		SP_CHECK_EQ_INT(sp_sealer_load(NULL, key, seal, &s), SP_SEAL_ERR_KEY_FILE);
		{
			uint8_t only_seed[2 + 36] = {1, 1, 0x64, 0x7a, 0x00, 0x20};
			uint8_t two_x[2 + 72] = {1, 2};
			uint8_t short_seed[2 + 36 + 35];

			SP_CHECK_EQ_INT(write_v2(seal, only_seed, sizeof(only_seed)), 0);
			SP_CHECK_EQ_INT(sp_sealer_load(NULL, key, seal, &s), SP_SEAL_ERR_KEY_FILE);
			memcpy(two_x + 2, body + 2, 36);
			memcpy(two_x + 38, body + 2, 36);
			SP_CHECK_EQ_INT(write_v2(seal, two_x, sizeof(two_x)), 0);
			SP_CHECK_EQ_INT(sp_sealer_load(NULL, key, seal, &s), SP_SEAL_ERR_KEY_FILE);
			short_seed[0] = 1;
			short_seed[1] = 2;
			memcpy(short_seed + 2, body + 2, 36);
			memcpy(short_seed + 38, "\x64\x7a\x00\x1f", 4);
			memset(short_seed + 42, 1, 31);
			SP_CHECK_EQ_INT(write_v2(seal, short_seed, sizeof(short_seed)), 0);
			SP_CHECK_EQ_INT(sp_sealer_load(NULL, key, seal, &s), SP_SEAL_ERR_KEY_FILE);
		}
		body[1] = 1;
		SP_CHECK_EQ_INT(write_v2(seal, body, 2 + 36), 0);
		SP_CHECK_EQ_INT(sp_sealer_load(NULL, key, seal, &s), 0);
		sp_sealer_free(s);
		s = NULL;
		SP_CHECK(chmod(seal, 0640) == 0);
		SP_CHECK_EQ_INT(sp_sealer_load(NULL, key, seal, &s), SP_SEAL_ERR_KEY_PERMS);
	}
	SP_CHECK_EQ_INT(sp_sealer_set_hybrid_key(alice.s, seed, 31), -EINVAL);
	if (!pq)
		SP_CHECK_EQ_INT(sp_sealer_set_hybrid_key(alice.s, seed, 32), SP_SEAL_ERR_SUITE);
	unlink(key);
	unlink(seal);
	rmdir(dir);
}

/* ---- the hybrid suite 0x0101 (skipped in a build without ML-KEM) ---- */

static struct tc_dev dora, erin; /* two devices with a hybrid key each */

static int make_hybrid(struct tc_dev *d, const char *cn)
{
	uint8_t seed[32];

	memset(d, 0, sizeof(*d));
	if (tc_dev_make(d, cn) != 0 || RAND_bytes(seed, sizeof(seed)) != 1 ||
	    sp_sealer_set_hybrid_key(d->s, seed, sizeof(seed)) != 0)
		return -1;
	sp_sealer_peer(d->s, &d->peer);
	return 0;
}

static void test_hybrid_round_trip(void)
{
	struct sp_seal_opened o;
	struct sp_seal_peer cl;
	uint8_t *env;
	size_t len;

	SP_CHECK_EQ_INT(dora.peer.suite, SP_SEAL_SUITE_HYBRID);
	SP_CHECK_EQ_INT(dora.peer.pub_len, 1216);
	{
		size_t enc_len, pub_len;
		const char *name;

		SP_CHECK_EQ_INT(sp_seal_suite_info(SP_SEAL_SUITE_HYBRID, &enc_len, &pub_len, &name),
		                0);
		SP_CHECK_EQ_INT(enc_len, 1120);
		SP_CHECK_EQ_INT(pub_len, 1216);
		SP_CHECK(strcmp(name, "MLKEM768-X25519-SHA256-ChaCha20Poly1305") == 0);
	}
	/* A classical sender, a hybrid recipient. */
	env = seal_msg(&alice, &dora.peer, mid1, 0, 3600, t0, &len);
	if (env == NULL)
		return;
	SP_CHECK_EQ_INT(env[1] << 8 | env[2], SP_SEAL_SUITE_HYBRID);
	/* The size buckets of every suite: 51 + k * 256. */
	SP_CHECK_EQ_INT((len - SP_SEAL_BUCKET_BASE) % SP_SEAL_PAD_DEFAULT, 0);
	printf("# hybrid envelope of a %zu-byte payload: %zu bytes\n", sizeof(hello), len);
	SP_CHECK_EQ_INT(sp_seal_open(dora.s, NULL, mid1, env, len, t0, &o), 0);
	SP_CHECK_EQ_INT(o.suite, SP_SEAL_SUITE_HYBRID);
	SP_CHECK_MEM(o.sender, alice.peer.token, 32);
	SP_CHECK_EQ_INT(o.payload_len, sizeof(hello));
	SP_CHECK_MEM(o.payload, hello, sizeof(hello));
	sp_seal_opened_clear(&o);
	/* Another device's key does not open it; a device without a hybrid key calls it SUITE. */
	SP_CHECK_EQ_INT(sp_seal_open(erin.s, NULL, mid1, env, len, t0, &o), SP_SEAL_ERR_DECRYPT);
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, env, len, t0, &o), SP_SEAL_ERR_SUITE);
	free(env);
	/* Every payload size lands in a bucket, with and without a reply key, both senders. */
	for (size_t n = 0; n < 700; n += 37) {
		static uint8_t pl[700];
		struct sp_seal_msg m = {mid2, t0, 60, n % 2 ? SP_SEAL_F_REPLY_KEY : 0, pl, n, NULL};

		SP_CHECK_EQ_INT(sp_seal(n % 3 ? alice.s : erin.s, &dora.peer, &m, &env, &len), 0);
		SP_CHECK(sp_bucket_ok(len, SP_BUCKET_BLOCK_DEFAULT)); /* what pad_block checks */
		SP_CHECK_EQ_INT(sp_seal_open(dora.s, NULL, mid2, env, len, t0, &o), 0);
		SP_CHECK_EQ_INT(o.payload_len, n);
		sp_seal_opened_clear(&o);
		free(env);
	}
	/* The hybrid device keeps its X25519 key for senders without ML-KEM. */
	SP_CHECK_EQ_INT(sp_sealer_peer_suite(dora.s, SP_SEAL_SUITE_DEFAULT, &cl), 0);
	env = seal_msg(&bob, &cl, mid1, 0, 3600, t0, &len);
	SP_CHECK_EQ_INT(sp_seal_open(dora.s, NULL, mid1, env, len, t0, &o), 0);
	SP_CHECK_EQ_INT(o.suite, SP_SEAL_SUITE_DEFAULT);
	sp_seal_opened_clear(&o);
	free(env);
	/* Unpadded. */
	SP_CHECK_EQ_INT(sp_sealer_set_pad(alice.s, 1), 0);
	env = seal_msg(&alice, &dora.peer, mid1, 0, 3600, t0, &len);
	SP_CHECK(len < 1123 + 16 + 47 + 91 + 4 + sizeof(hello) + 1 + 72 + 1);
	SP_CHECK_EQ_INT(sp_seal_open(dora.s, NULL, mid1, env, len, t0, &o), 0);
	sp_seal_opened_clear(&o);
	free(env);
	SP_CHECK_EQ_INT(sp_sealer_set_pad(alice.s, SP_SEAL_PAD_DEFAULT), 0);
	/* A key that is not an ML-KEM key (the modulus check fails): PEER_KEY. */
	{
		struct sp_seal_peer bad = dora.peer;
		struct sp_seal_msg m = {mid1, t0, 60, 0, NULL, 0, NULL};

		memset(bad.pub, 0xff, 1184);
		SP_CHECK_EQ_INT(sp_seal(alice.s, &bad, &m, &env, &len), SP_SEAL_ERR_PEER_KEY);
		bad.pub_len = 32;
		SP_CHECK_EQ_INT(sp_seal(alice.s, &bad, &m, &env, &len), SP_SEAL_ERR_PEER_KEY);
	}
}

static void test_hybrid_tamper_every_byte(void)
{
	struct sp_seal_opened o;
	size_t len, refused = 0;
	uint8_t *env = seal_msg(&alice, &dora.peer, mid1, 0, 3600, t0, &len);

	if (env == NULL)
		return;
	for (size_t i = 0; i < len; i++) {
		for (int bit = 0; bit < 8; bit += 7) {
			int r, want;

			env[i] ^= (uint8_t)(1u << bit);
			r = sp_seal_open(dora.s, NULL, mid1, env, len, t0, &o);
			env[i] ^= (uint8_t)(1u << bit);
			/* 0x0101 -> 0x0001 is an X25519 suite: the first 32 bytes of the ML-KEM
			 * ciphertext as its enc fail to decrypt. 0x8101, 0x0100, 0x0181: SUITE. A
			 * changed ML-KEM ciphertext is rejected implicitly: DECRYPT. */
			want = i == 0               ? SP_SEAL_ERR_VERSION
			       : i == 1 && bit == 0 ? SP_SEAL_ERR_DECRYPT
			       : i < 3              ? SP_SEAL_ERR_SUITE
			                            : SP_SEAL_ERR_DECRYPT;
			if (r != want)
				SP_FAIL("byte %zu bit %d: got %d (%s), want %d", i, bit, r,
				        sp_seal_strerror(r), want);
			else
				refused++;
		}
	}
	SP_CHECK_EQ_INT(refused, 2 * len);
	for (size_t n = 0; n < len; n += 7) {
		int r = sp_seal_open(dora.s, NULL, mid1, env, n, t0, &o);

		if (r != (n < 1123 + 16 + 47 ? SP_SEAL_ERR_MALFORMED : SP_SEAL_ERR_DECRYPT))
			SP_FAIL("truncated to %zu: %d (%s)", n, r, sp_seal_strerror(r));
	}
	/* Redirected under another msg_id: DECRYPT. */
	SP_CHECK_EQ_INT(sp_seal_open(dora.s, NULL, mid2, env, len, t0, &o), SP_SEAL_ERR_DECRYPT);
	SP_CHECK_EQ_INT(sp_seal_open(dora.s, NULL, mid1, env, len, t0, &o), 0);
	sp_seal_opened_clear(&o);
	free(env);
}

/* Reply keys follow the envelope's suite, so a recipient can always use (and parse) them. */
static void test_hybrid_receipts(void)
{
	static const uint8_t rid[16] = {0xbb, 1};
	struct sp_seal_opened o, r;
	uint8_t *env, *renv;
	size_t len, rlen;

	/* Hybrid to classical: the reply key is dora's X25519 one. */
	env = seal_msg(&dora, &bob.peer, mid1, SP_SEAL_F_RECEIPT_WANTED, 3600, t0, &len);
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, env, len, t0, &o), 0);
	SP_CHECK_EQ_INT(o.reply.suite, SP_SEAL_SUITE_DEFAULT);
	SP_CHECK_EQ_INT(o.reply.pub_len, 32);
	SP_CHECK_EQ_INT(
	        sp_seal_receipt(bob.s, &o, SP_SEAL_RECEIPT_RECEIVED, rid, t0, 60, &renv, &rlen), 0);
	SP_CHECK_EQ_INT(sp_seal_open(dora.s, NULL, rid, renv, rlen, t0, &r), 0);
	SP_CHECK_EQ_INT(r.flags, SP_SEAL_F_IS_RECEIPT);
	sp_seal_opened_clear(&r);
	sp_seal_opened_clear(&o);
	free(renv);
	free(env);
	/* Hybrid to hybrid: the reply key and the receipt are hybrid. */
	env = seal_msg(&dora, &erin.peer, mid1, SP_SEAL_F_RECEIPT_WANTED, 3600, t0, &len);
	SP_CHECK_EQ_INT(sp_seal_open(erin.s, NULL, mid1, env, len, t0, &o), 0);
	SP_CHECK_EQ_INT(o.reply.suite, SP_SEAL_SUITE_HYBRID);
	SP_CHECK_EQ_INT(o.reply.pub_len, 1216);
	SP_CHECK_MEM(o.reply.pub, dora.peer.pub, 1216);
	SP_CHECK_EQ_INT(
	        sp_seal_receipt(erin.s, &o, SP_SEAL_RECEIPT_READ, rid, t0, 60, &renv, &rlen), 0);
	SP_CHECK_EQ_INT(renv[1] << 8 | renv[2], SP_SEAL_SUITE_HYBRID);
	SP_CHECK_EQ_INT(sp_seal_open(dora.s, NULL, rid, renv, rlen, t0, &r), 0);
	sp_seal_opened_clear(&r);
	sp_seal_opened_clear(&o);
	free(renv);
	free(env);
}

/* The recipient key cache: a repeat recipient's ML-KEM key is imported once. */
static void test_hybrid_peer_cache(void)
{
	struct sp_seal_key_cache_stats st;
	struct sp_seal_opened o;
	struct sp_seal_peer bad = dora.peer;
	struct sp_seal_msg m = {mid1, t0, 60, 0, NULL, 0, NULL};
	uint8_t *env;
	size_t len;

	SP_CHECK_EQ_INT(sp_sealer_set_peer_cache(carol.s, SP_SEAL_PEER_CACHE_MAX + 1), -EINVAL);
	SP_CHECK_EQ_INT(sp_sealer_set_peer_cache(carol.s, 8), 0); /* empty */
	for (int i = 0; i < 3; i++) {
		SP_CHECK_EQ_INT(sp_seal(carol.s, &dora.peer, &m, &env, &len), 0);
		SP_CHECK_EQ_INT(sp_seal_open(dora.s, NULL, mid1, env, len, t0, &o), 0);
		sp_seal_opened_clear(&o);
		free(env);
	}
	sp_sealer_peer_cache_stats(carol.s, &st);
	SP_CHECK_EQ_INT(st.limit, 8);
	SP_CHECK_EQ_INT(st.entries, 1);
	SP_CHECK_EQ_INT(st.misses, 1);
	SP_CHECK_EQ_INT(st.hits, 2);
	/* A key differing in one byte of the ML-KEM half is not the cached one: refused or not,
	 * it is looked at afresh (this one fails the modulus check). */
	memset(bad.pub, 0xff, 2);
	SP_CHECK_EQ_INT(sp_seal(carol.s, &bad, &m, &env, &len), SP_SEAL_ERR_PEER_KEY);
	sp_sealer_peer_cache_stats(carol.s, &st);
	SP_CHECK_EQ_INT(st.entries, 1);
	SP_CHECK_EQ_INT(st.hits, 2);
	/* Without a cache: the same envelopes, no counters. */
	SP_CHECK_EQ_INT(sp_sealer_set_peer_cache(carol.s, 0), 0);
	SP_CHECK_EQ_INT(sp_seal(carol.s, &dora.peer, &m, &env, &len), 0);
	SP_CHECK_EQ_INT(sp_seal_open(dora.s, NULL, mid1, env, len, t0, &o), 0);
	sp_seal_opened_clear(&o);
	free(env);
	sp_sealer_peer_cache_stats(carol.s, &st);
	SP_CHECK_EQ_INT(st.limit, 0);
	SP_CHECK_EQ_INT(sp_sealer_set_peer_cache(carol.s, SP_SEAL_PEER_CACHE_DEFAULT), 0);
}

static void test_hybrid_max_payload(void)
{
	static uint8_t big[16384];
	struct sp_seal_msg m = {mid1, t0, 60, SP_SEAL_F_REPLY_KEY, big, 0, NULL};
	uint8_t *env;
	size_t len;

	/* 16,384-byte blobs: 1,139 bytes of header and tag, a 1,220-byte hybrid reply key. */
	SP_CHECK_EQ_INT(sp_seal_max_payload(dora.s, 16384, 0), 14821);
	SP_CHECK_EQ_INT(sp_seal_max_payload(dora.s, 16384, 1), 13565);
	SP_CHECK_EQ_INT(sp_seal_max_payload_suite(alice.s, SP_SEAL_SUITE_HYBRID, 16384, 1), 14749);
	SP_CHECK_EQ_INT(sp_seal_max_payload_suite(dora.s, SP_SEAL_SUITE_DEFAULT, 16384, 1), 15837);
	m.payload_len = sp_seal_max_payload(dora.s, 16384, 1);
	SP_CHECK_EQ_INT(sp_seal(dora.s, &erin.peer, &m, &env, &len), 0);
	SP_CHECK(len <= 16384);
	free(env);
	m.payload_len = sp_seal_max_payload_suite(alice.s, SP_SEAL_SUITE_HYBRID, 16384, 1);
	SP_CHECK_EQ_INT(sp_seal(alice.s, &dora.peer, &m, &env, &len), 0);
	SP_CHECK(len <= 16384);
	free(env);
}

static void test_key_files(void)
{
	char dir[] = "/tmp/sp-keys-XXXXXX", cert[64], key[64], seal[64], other[64];
	struct sp_sealer *s = NULL;
	struct stat st;

	SP_CHECK(mkdtemp(dir) != NULL);
	snprintf(cert, sizeof(cert), "%s/dev.crt", dir);
	snprintf(key, sizeof(key), "%s/dev.key", dir);
	snprintf(seal, sizeof(seal), "%s/dev.seal", dir);
	snprintf(other, sizeof(other), "%s/other.crt", dir);
	SP_CHECK_EQ_INT(write_pem(cert, NULL, alice.cert, 0644), 0);
	SP_CHECK_EQ_INT(write_pem(key, alice.sign, NULL, 0600), 0);
	SP_CHECK_EQ_INT(write_pem(other, NULL, bob.cert, 0644), 0);
	SP_CHECK_EQ_INT(sp_seal_keygen_file(seal), 0);
	SP_CHECK(stat(seal, &st) == 0 && (st.st_mode & 0777) == 0600);
	SP_CHECK_EQ_INT(sp_seal_keygen_file(seal), -EEXIST);

	SP_CHECK_EQ_INT(sp_sealer_load(cert, key, seal, &s), 0);
	if (s != NULL) {
		struct sp_seal_peer p;
		struct sp_seal_opened o;
		uint8_t *env;
		size_t len;
		struct sp_seal_msg m = {mid1, t0, 60, 0, (const uint8_t *)"x", 1, NULL};

		SP_CHECK_MEM(sp_sealer_token(s), sp_sealer_token(alice.s), 32);
		sp_sealer_peer(s, &p);
		SP_CHECK(memcmp(p.pub, alice.peer.pub, 32) != 0); /* its own new sealing key */
		/* It seals and opens like any sealer. */
		SP_CHECK_EQ_INT(sp_seal(bob.s, &p, &m, &env, &len), 0);
		SP_CHECK_EQ_INT(sp_seal_open(s, NULL, mid1, env, len, t0, &o), 0);
		SP_CHECK_MEM(o.sender, bob.peer.token, 32);
		sp_seal_opened_clear(&o);
		free(env);
		sp_sealer_free(s);
	}
	/* Without a certificate: the key alone. */
	SP_CHECK_EQ_INT(sp_sealer_load(NULL, key, seal, &s), 0);
	SP_CHECK(s != NULL && sp_sealer_cert(s) == NULL);
	sp_sealer_free(s);
	/* Each failure has its own error. */
	SP_CHECK_EQ_INT(sp_sealer_load(other, key, seal, &s), SP_SEAL_ERR_KEY_MISMATCH);
	SP_CHECK(s == NULL);
	/* A v1 sealing key file is a PKCS#8 X25519 key: the wrong type for a certificate key (a v2
	 * file is no PKCS#8 key at all). */
	SP_CHECK_EQ_INT(sp_sealer_load(cert, seal, seal, &s),
	                sp_seal_suite_implemented(SP_SEAL_SUITE_HYBRID) ? SP_SEAL_ERR_KEY_FILE
	                                                                : SP_SEAL_ERR_KEY_TYPE);
	SP_CHECK_EQ_INT(sp_sealer_load(cert, key, key, &s), SP_SEAL_ERR_KEY_TYPE);
	SP_CHECK_EQ_INT(sp_sealer_load(cert, key, "/nonexistent/seal", &s), SP_SEAL_ERR_KEY_FILE);
	SP_CHECK_EQ_INT(sp_sealer_load(cert, cert, seal, &s), SP_SEAL_ERR_KEY_FILE);
	SP_CHECK_EQ_INT(sp_sealer_load(key, key, seal, &s), SP_SEAL_ERR_KEY_FILE);
	SP_CHECK(chmod(seal, 0640) == 0);
	SP_CHECK_EQ_INT(sp_sealer_load(cert, key, seal, &s), SP_SEAL_ERR_KEY_PERMS);
	unlink(cert);
	unlink(key);
	unlink(seal);
	unlink(other);
	rmdir(dir);
}

/* Envelope version 2 (PROTOCOL.md 13.1, 13.4, 13.5, 13.11) from the independent encoder:
 * bob at key epoch 5 opens it, with the reply key's epoch; another epoch does not open. */
static void test_version2_independent(void)
{
	struct tb b = tb_honest();
	struct sp_seal_peer reply = alice.peer;
	struct sp_seal_opened o;
	uint8_t env[4096];
	size_t len;

	SP_CHECK_EQ_INT(sp_sealer_set_epoch(bob.s, 5), 0);
	reply.epoch = 3;
	b.version = 2;
	b.key_epoch = 5;
	b.flags = SP_SEAL_F_RECEIPT_WANTED | SP_SEAL_F_REPLY_KEY;
	b.reply = &reply;
	len = tb_build(&b, env, sizeof(env));
	SP_CHECK(len > 0);
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, env, len, t0, &o), 0);
	SP_CHECK_EQ_INT(o.version, 2);
	SP_CHECK_EQ_INT(o.key_epoch, 5);
	SP_CHECK(o.has_reply);
	SP_CHECK_EQ_INT(o.reply.epoch, 3);
	SP_CHECK_MEM(o.payload, hello, sizeof(hello));
	sp_seal_opened_clear(&o);
	/* The same bytes under epoch 4 (below: not held) and 6 (above). */
	b.key_epoch = 4;
	len = tb_build(&b, env, sizeof(env));
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, env, len, t0, &o), SP_SEAL_ERR_KEY_ERASED);
	b.key_epoch = 6;
	len = tb_build(&b, env, sizeof(env));
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, env, len, t0, &o), SP_SEAL_ERR_KEY_EPOCH);
	/* Without a reply key: the epoch in the header alone. */
	b.key_epoch = 5;
	b.reply = NULL;
	b.flags = 0;
	len = tb_build(&b, env, sizeof(env));
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid1, env, len, t0, &o), 0);
	sp_seal_opened_clear(&o);
	/* What the library seals to bob at epoch 5 is that layout too: version 2, epoch 5. */
	{
		struct sp_seal_peer to;
		uint8_t *e;

		sp_sealer_peer(bob.s, &to);
		e = seal_msg(&alice, &to, mid1, 0, 60, t0, &len);
		if (e != NULL) {
			SP_CHECK_EQ_INT(e[0], 2);
			SP_CHECK_EQ_INT(e[3] << 24 | e[4] << 16 | e[5] << 8 | e[6], 5);
			SP_CHECK_EQ_INT((len - SP_SEAL_BUCKET_BASE) % SP_SEAL_PAD_DEFAULT, 0);
		}
		free(e);
	}
	SP_CHECK_EQ_INT(sp_sealer_set_epoch(bob.s, 0), 0);
}

static void test_strerror_distinct(void)
{
	for (int a = SP_SEAL_ERR_CARD_STALE; a <= SP_SEAL_ERR_MALFORMED; a++) {
		const char *sa = sp_seal_strerror(a);

		SP_CHECK(sa != NULL && strcmp(sa, "unknown error") != 0);
		for (int b = a + 1; b <= SP_SEAL_ERR_MALFORMED; b++)
			if (strcmp(sa, sp_seal_strerror(b)) == 0)
				SP_FAIL("errors %d and %d share a text", a, b);
	}
	SP_CHECK(strcmp(sp_seal_strerror(-ENOMEM), strerror(ENOMEM)) == 0);
	SP_CHECK(strcmp(sp_seal_strerror(-9999), "unknown error") == 0);
}

int main(void)
{
	if (tc_dev_make(&alice, "alice") != 0 || tc_dev_make(&bob, "bob") != 0 ||
	    tc_dev_make(&carol, "carol") != 0) {
		printf("Bail out! cannot make test identities\n");
		return 1;
	}
	SP_RUN(test_round_trip_both_suites);
	SP_RUN(test_empty_and_large_payloads);
	SP_RUN(test_padding);
	SP_RUN(test_tamper_every_byte);
	SP_RUN(test_wrong_key_and_redirects);
	SP_RUN(test_independent_encoder_agrees);
	SP_RUN(test_signature_refusals);
	SP_RUN(test_sender_key_cache);
	SP_RUN(test_malformed_content);
	SP_RUN(test_window);
	SP_RUN(test_duplicates);
	SP_RUN(test_replay_cache_limits);
	SP_RUN(test_replay_cache_file);
	SP_RUN(test_receipts);
	SP_RUN(test_size_limit);
	SP_RUN(test_key_files);
	SP_RUN(test_key_files_v2);
	if (sp_seal_suite_implemented(SP_SEAL_SUITE_HYBRID)) {
		if (make_hybrid(&dora, "dora") != 0 || make_hybrid(&erin, "erin") != 0) {
			printf("Bail out! cannot make hybrid identities\n");
			return 1;
		}
		SP_RUN(test_hybrid_round_trip);
		SP_RUN(test_hybrid_tamper_every_byte);
		SP_RUN(test_hybrid_receipts);
		SP_RUN(test_hybrid_peer_cache);
		SP_RUN(test_hybrid_max_payload);
		tc_dev_free(&dora);
		tc_dev_free(&erin);
	} else {
		static const char *const names[] = {
		        "test_hybrid_round_trip", "test_hybrid_tamper_every_byte",
		        "test_hybrid_receipts", "test_hybrid_peer_cache",
		        "test_hybrid_max_payload"};

		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			sp_test_skip(names[i], "no MLKEM768-X25519 in this build (OpenSSL < 3.5)");
	}
	SP_RUN(test_version2_independent);
	SP_RUN(test_strerror_distinct);
	tc_dev_free(&alice);
	tc_dev_free(&bob);
	tc_dev_free(&carol);
	return sp_test_done();
}
