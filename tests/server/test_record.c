/*
 * Unit tests for server/sp_record: the TLS 1.3 record layer that takes over from OpenSSL after
 * the handshake.
 *
 *   - Known answers from RFC 8448 section 3 ("Simple 1-RTT Handshake"): the application
 *     traffic keys and IVs of both sides, and the protected records of the trace (server
 *     NewSessionTicket, both application_data records, both close_notify alerts), opened and
 *     sealed byte for byte, from the server's view and from the client's.
 *   - Interop with an unmodified OpenSSL client, in process over two memory BIOs, for each TLS
 *     1.3 suite: the server SSL is set up like server/sp_tls.c (TLS 1.3 only, client
 *     certificate required, one ticket, RELEASE_BUFFERS), the handshake runs, the secrets come
 *     from the keylog callback and the write sequence number from the message callback, the
 *     server SSL is freed and from then on the server side is sp_record only: data both ways
 *     at several sizes, client KeyUpdate without and with update_requested (answered by a
 *     server KeyUpdate), close_notify both ways.
 *   - Refusals: tampered ciphertext, tag and header (and an AAD that is not the header),
 *     replay, length limits, outer and inner content types, padding, sequence number
 *     exhaustion, bad arguments.
 *   - The per-record cost, printed as a TAP comment (no pass/fail on time).
 *
 * Crafted records come from ref_seal(), a separate sealer written directly on the EVP API,
 * so the refusal tests do not depend on sp_rl_seal(). The PKI (P-256 CA, server and client
 * certificates, tpki.h) is generated in memory at start.
 */
#include "sp_record.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <time.h>

#include "sp_test.h"
#include "tpki.h"

static sp_rl_crypto_t *cx;

/* ---- helpers ------------------------------------------------------------------------------ */

/* Hex (spaces ignored) to bytes; returns the byte count, or 0 if it does not fit. */
static size_t unhex(const char *h, uint8_t *out, size_t cap)
{
	size_t n = 0;
	int hi = -1;

	for (; *h; h++) {
		int v;

		if (*h == ' ')
			continue;
		if (*h >= '0' && *h <= '9')
			v = *h - '0';
		else if (*h >= 'a' && *h <= 'f')
			v = *h - 'a' + 10;
		else
			return 0;
		if (hi < 0) {
			hi = v;
			continue;
		}
		if (n == cap)
			return 0;
		out[n++] = (uint8_t)(hi << 4 | v);
		hi = -1;
	}
	return hi < 0 ? n : 0;
}

static const char *cipher_name(uint16_t suite)
{
	return suite == 0x1301   ? "AES-128-GCM"
	       : suite == 0x1302 ? "AES-256-GCM"
	                         : "ChaCha20-Poly1305";
}

/*
 * An independent sealer on the EVP API: inner is the whole TLSInnerPlaintext (content, type,
 * padding) so that records sp_rl_seal() would never make can be built. The AAD is aad if
 * given, else the record's own header. Returns the record length, 0 on failure.
 */
static size_t ref_seal(uint16_t suite, const uint8_t *key, const uint8_t *iv, uint64_t seq,
                       const uint8_t *inner, size_t inner_len, const uint8_t *aad, uint8_t *out)
{
	EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, cipher_name(suite), NULL);
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	size_t body = inner_len + 16;
	uint8_t nonce[12];
	int ol = 0, fl = 0, ok;

	out[0] = 23;
	out[1] = 3;
	out[2] = 3;
	out[3] = (uint8_t)(body >> 8);
	out[4] = (uint8_t)body;
	for (int i = 0; i < 12; i++)
		nonce[i] = (uint8_t)(iv[i] ^ (i < 4 ? 0 : (uint8_t)(seq >> (8 * (11 - i)))));
	ok = c && ctx && EVP_EncryptInit_ex2(ctx, c, key, nonce, NULL) == 1 &&
	     EVP_EncryptUpdate(ctx, NULL, &ol, aad ? aad : out, 5) == 1 &&
	     EVP_EncryptUpdate(ctx, out + 5, &ol, inner, (int)inner_len) == 1 &&
	     EVP_EncryptFinal_ex(ctx, out + 5 + ol, &fl) == 1 &&
	     EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, out + 5 + inner_len) == 1;
	EVP_CIPHER_CTX_free(ctx);
	EVP_CIPHER_free(c);
	return ok ? 5 + body : 0;
}

static uint8_t hash_len_of(uint16_t suite)
{
	return suite == 0x1302 ? 48 : 32;
}

/* A connection seen from both ends: srv as sp_rl_init() makes it for the server, cli the
 * mirror image (its write side is srv's read side and vice versa). */
static void make_pair(uint16_t suite, sp_rl_t *srv, sp_rl_t *cli)
{
	uint8_t cs[48], ss[48];
	size_t n = hash_len_of(suite);

	for (size_t i = 0; i < sizeof(cs); i++) {
		cs[i] = (uint8_t)(0xC0 + i * 3 + suite);
		ss[i] = (uint8_t)(0x50 + i * 7 + suite);
	}
	SP_CHECK_EQ_INT(sp_rl_init(srv, cx, suite, cs, ss, n, 0, 0), 0);
	SP_CHECK_EQ_INT(sp_rl_init(cli, cx, suite, ss, cs, n, 0, 0), 0);
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 7 + seed);
}

static const uint16_t suites[] = {0x1301, 0x1302, 0x1303};

/* ---- RFC 8448 section 3 known answers ----------------------------------------------------- */

/*
 * RFC 8448 ("Example Handshake Traces for TLS 1.3"), section 3 "Simple 1-RTT Handshake",
 * TLS_AES_128_GCM_SHA256:
 *   {server} derive secret "tls13 c ap traffic" / {client} derive write traffic keys for
 *   application data: PRK (the client application traffic secret), key expanded, iv expanded;
 *   {server} derive secret "tls13 s ap traffic" / {server} derive write traffic keys for
 *   application data: likewise for the server;
 *   {server} send handshake record (the NewSessionTicket, server sequence 0);
 *   {client} send application_data record (client sequence 0), {server} send application_data
 *   record (server sequence 1), both with payload 00 01 02 ... 31 (50 octets);
 *   {client} send alert record (sequence 1), {server} send alert record (sequence 2), both
 *   close_notify (payload 01 00).
 */
static const char rfc8448_c_secret[] =
        "9e 40 64 6c e7 9a 7f 9d c0 5a f8 88 9b ce 65 52 87 5a fa 0b 06 df 00 87 f7 92 eb b7 c1 "
        "75 04 a5";
static const char rfc8448_c_key[] = "17 42 2d da 59 6e d5 d9 ac d8 90 e3 c6 3f 50 51";
static const char rfc8448_c_iv[] = "5b 78 92 3d ee 08 57 90 33 e5 23 d9";
static const char rfc8448_s_secret[] =
        "a1 1a f9 f0 55 31 f8 56 ad 47 11 6b 45 a9 50 32 82 04 b4 f4 4b fb 6b 3a 4b 4f 1f 3f cb "
        "63 16 43";
static const char rfc8448_s_key[] = "9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56";
static const char rfc8448_s_iv[] = "cf 78 2b 88 dd 83 54 9a ad f1 e9 84";
static const char rfc8448_nst_record[] =
        "17 03 03 00 de 3a 6b 8f 90 41 4a 97 d6 95 9c 34 87 68 0d e5 13 4a 2b 24 0e 6c ff ac 11 "
        "6e 95 d4 1d 6a f8 f6 b5 80 dc f3 d1 1d 63 c7 58 db 28 9a 01 59 40 25 2f 55 71 3e 06 1d "
        "c1 3e 07 88 91 a3 8e fb cf 57 53 ad 8e f1 70 ad 3c 73 53 d1 6d 9d a7 73 b9 ca 7f 2b 9f "
        "a1 b6 c0 d4 a3 d0 3f 75 e0 9c 30 ba 1e 62 97 2a c4 6f 75 f7 b9 81 be 63 43 9b 29 99 ce "
        "13 06 46 15 13 98 91 d5 e4 c5 b4 06 f1 6e 3f c1 81 a7 7c a4 75 84 00 25 db 2f 0a 77 f8 "
        "1b 5a b0 5b 94 c0 13 46 75 5f 69 23 2c 86 51 9d 86 cb ee ac 87 aa c3 47 d1 43 f9 60 5d "
        "64 f6 50 db 4d 02 3e 70 e9 52 ca 49 fe 51 37 12 1c 74 bc 26 97 68 7e 24 87 46 d6 df 35 "
        "30 05 f3 bc e1 86 96 12 9c 81 53 55 6b 3b 6c 67 79 b3 7b f1 59 85 68 4f";
static const char rfc8448_c_app_record[] =
        "17 03 03 00 43 a2 3f 70 54 b6 2c 94 d0 af fa fe 82 28 ba 55 cb ef ac ea 42 f9 14 aa 66 "
        "bc ab 3f 2b 98 19 a8 a5 b4 6b 39 5b d5 4a 9a 20 44 1e 2b 62 97 4e 1f 5a 62 92 a2 97 70 "
        "14 bd 1e 3d ea e6 3a ee bb 21 69 49 15 e4";
static const char rfc8448_s_app_record[] =
        "17 03 03 00 43 2e 93 7e 11 ef 4a c7 40 e5 38 ad 36 00 5f c4 a4 69 32 fc 32 25 d0 5f 82 "
        "aa 1b 36 e3 0e fa f9 7d 90 e6 df fc 60 2d cb 50 1a 59 a8 fc c4 9c 4b f2 e5 f0 a2 1c 00 "
        "47 c2 ab f3 32 54 0d d0 32 e1 67 c2 95 5d";
static const char rfc8448_c_alert_record[] =
        "17 03 03 00 13 c9 87 27 60 65 56 66 b7 4d 7f f1 15 3e fd 6d b6 d0 b0 e3";
static const char rfc8448_s_alert_record[] =
        "17 03 03 00 13 b5 8f d6 71 66 eb f5 99 d2 47 20 cf be 7e fa 7a 88 64 a9";

struct rfc8448 {
	uint8_t c_secret[32], s_secret[32], c_key[16], c_iv[12], s_key[16], s_iv[12];
	uint8_t nst[227], c_app[72], s_app[72], c_alert[24], s_alert[24], payload[50];
};

static void rfc8448_load(struct rfc8448 *v)
{
	SP_CHECK_EQ_INT(unhex(rfc8448_c_secret, v->c_secret, 32), 32);
	SP_CHECK_EQ_INT(unhex(rfc8448_s_secret, v->s_secret, 32), 32);
	SP_CHECK_EQ_INT(unhex(rfc8448_c_key, v->c_key, 16), 16);
	SP_CHECK_EQ_INT(unhex(rfc8448_c_iv, v->c_iv, 12), 12);
	SP_CHECK_EQ_INT(unhex(rfc8448_s_key, v->s_key, 16), 16);
	SP_CHECK_EQ_INT(unhex(rfc8448_s_iv, v->s_iv, 12), 12);
	SP_CHECK_EQ_INT(unhex(rfc8448_nst_record, v->nst, sizeof(v->nst)), 227);
	SP_CHECK_EQ_INT(unhex(rfc8448_c_app_record, v->c_app, 72), 72);
	SP_CHECK_EQ_INT(unhex(rfc8448_s_app_record, v->s_app, 72), 72);
	SP_CHECK_EQ_INT(unhex(rfc8448_c_alert_record, v->c_alert, 24), 24);
	SP_CHECK_EQ_INT(unhex(rfc8448_s_alert_record, v->s_alert, 24), 24);
	for (int i = 0; i < 50; i++)
		v->payload[i] = (uint8_t)i;
}

static void test_rfc8448_key_derivation(void)
{
	struct rfc8448 v;
	sp_rl_t rl;

	rfc8448_load(&v);
	SP_CHECK_EQ_INT(sp_rl_init(&rl, cx, 0x1301, v.c_secret, v.s_secret, 32, 0, 1), 0);
	SP_CHECK_EQ_INT(rl.key_len, 16);
	SP_CHECK_EQ_INT(rl.hash_len, 32);
	SP_CHECK_MEM(rl.rd.key, v.c_key, 16);
	SP_CHECK_MEM(rl.rd.iv, v.c_iv, 12);
	SP_CHECK_MEM(rl.wr.key, v.s_key, 16);
	SP_CHECK_MEM(rl.wr.iv, v.s_iv, 12);
	SP_CHECK_MEM(rl.rd.secret, v.c_secret, 32);
	SP_CHECK_EQ_INT(rl.rd.seq, 0);
	SP_CHECK_EQ_INT(rl.wr.seq, 1);
	sp_rl_wipe(&rl);
	SP_CHECK_EQ_INT(rl.suite, 0);
}

/* The server's side of the trace: it opens the client's records and its own seal matches. */
static void test_rfc8448_server_records(void)
{
	struct rfc8448 v;
	uint8_t rec[128], out[128], type = 0, *plain = NULL;
	const uint8_t close_notify[2] = {1, 0};
	sp_rl_t rl;

	rfc8448_load(&v);
	/* After the handshake the server has written the NewSessionTicket: write seq 1. */
	SP_CHECK_EQ_INT(sp_rl_init(&rl, cx, 0x1301, v.c_secret, v.s_secret, 32, 0, 1), 0);

	SP_CHECK_EQ_INT(sp_rl_record_len(v.c_app, sizeof(v.c_app)), 72);
	memcpy(rec, v.c_app, 72);
	SP_CHECK_EQ_INT(sp_rl_open(&rl, cx, rec, 72, &type, &plain), 50);
	SP_CHECK_EQ_INT(type, SP_RL_CT_APPDATA);
	SP_CHECK(plain == rec + 5);
	SP_CHECK_MEM(plain, v.payload, 50);
	SP_CHECK_EQ_INT(rl.rd.seq, 1);

	SP_CHECK_EQ_INT(sp_rl_seal(&rl, cx, SP_RL_CT_APPDATA, v.payload, 50, out, sizeof(out)), 72);
	SP_CHECK_MEM(out, v.s_app, 72);
	SP_CHECK_EQ_INT(rl.wr.seq, 2);

	memcpy(rec, v.c_alert, 24);
	SP_CHECK_EQ_INT(sp_rl_open(&rl, cx, rec, 24, &type, &plain), 2);
	SP_CHECK_EQ_INT(type, SP_RL_CT_ALERT);
	SP_CHECK_MEM(plain, close_notify, 2);

	SP_CHECK_EQ_INT(sp_rl_seal(&rl, cx, SP_RL_CT_ALERT, close_notify, 2, out, sizeof(out)), 24);
	SP_CHECK_MEM(out, v.s_alert, 24);
	sp_rl_wipe(&rl);
}

/* The client's side (secrets swapped): opens the server's records, including the ticket. */
static void test_rfc8448_client_records(void)
{
	struct rfc8448 v;
	uint8_t rec[256], out[128], type = 0, *plain = NULL;
	const uint8_t close_notify[2] = {1, 0};
	sp_rl_t rl;
	int n;

	rfc8448_load(&v);
	SP_CHECK_EQ_INT(sp_rl_init(&rl, cx, 0x1301, v.s_secret, v.c_secret, 32, 0, 0), 0);

	memcpy(rec, v.nst, sizeof(v.nst));
	n = sp_rl_open(&rl, cx, rec, sizeof(v.nst), &type, &plain);
	SP_CHECK_EQ_INT(n, 205);
	SP_CHECK_EQ_INT(type, SP_RL_CT_HANDSHAKE);
	if (n == 205) {
		SP_CHECK_EQ_INT(plain[0], 4); /* new_session_ticket */
		SP_CHECK_EQ_INT((plain[1] << 16 | plain[2] << 8 | plain[3]), n - 4);
	}

	memcpy(rec, v.s_app, 72);
	SP_CHECK_EQ_INT(sp_rl_open(&rl, cx, rec, 72, &type, &plain), 50);
	SP_CHECK_EQ_INT(type, SP_RL_CT_APPDATA);
	SP_CHECK_MEM(plain, v.payload, 50);

	SP_CHECK_EQ_INT(sp_rl_seal(&rl, cx, SP_RL_CT_APPDATA, v.payload, 50, out, sizeof(out)), 72);
	SP_CHECK_MEM(out, v.c_app, 72);
	SP_CHECK_EQ_INT(sp_rl_seal(&rl, cx, SP_RL_CT_ALERT, close_notify, 2, out, sizeof(out)), 24);
	SP_CHECK_MEM(out, v.c_alert, 24);

	memcpy(rec, v.s_alert, 24);
	SP_CHECK_EQ_INT(sp_rl_open(&rl, cx, rec, 24, &type, &plain), 2);
	SP_CHECK_EQ_INT(type, SP_RL_CT_ALERT);
	sp_rl_wipe(&rl);
}

/* The test's own sealer reproduces the RFC record too (so it is fit to craft records). */
static void test_rfc8448_ref_sealer(void)
{
	struct rfc8448 v;
	uint8_t inner[51], out[128];

	rfc8448_load(&v);
	memcpy(inner, v.payload, 50);
	inner[50] = SP_RL_CT_APPDATA;
	SP_CHECK_EQ_INT(ref_seal(0x1301, v.c_key, v.c_iv, 0, inner, 51, NULL, out), 72);
	SP_CHECK_MEM(out, v.c_app, 72);
	SP_CHECK_EQ_INT(ref_seal(0x1301, v.s_key, v.s_iv, 1, inner, 51, NULL, out), 72);
	SP_CHECK_MEM(out, v.s_app, 72);
}

/* ---- sp_record against itself -------------------------------------------------------------- */

static void test_roundtrip_all_suites(void)
{
	static uint8_t buf[SP_RL_MAX_RECORD], want[SP_RL_MAX_PLAIN];
	const size_t sizes[] = {0, 1, 255, 256, 4096, 16383, 16384};

	for (size_t s = 0; s < 3; s++) {
		sp_rl_t srv, cli;

		make_pair(suites[s], &srv, &cli);
		for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
			size_t n = sizes[i];
			uint8_t type = 0, *plain = NULL;
			int r;

			fill(want, n, (unsigned)(s + i));
			/* sealed in place: the content already sits after the header */
			memcpy(buf + SP_RL_HEADER, want, n);
			r = sp_rl_seal(&cli, cx, SP_RL_CT_APPDATA, buf + SP_RL_HEADER, n, buf,
			               sizeof(buf));
			SP_CHECK_EQ_INT(r, (int)(n + SP_RL_OVERHEAD));
			SP_CHECK_EQ_INT(sp_rl_record_len(buf, (size_t)r), r);
			SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, buf, (size_t)r, &type, &plain),
			                (int)n);
			SP_CHECK_EQ_INT(type, SP_RL_CT_APPDATA);
			SP_CHECK(n == 0 || memcmp(plain, want, n) == 0);
			/* and the other way, from a separate buffer */
			r = sp_rl_seal(&srv, cx, SP_RL_CT_APPDATA, want, n, buf,
			               n + SP_RL_OVERHEAD);
			SP_CHECK_EQ_INT(r, (int)(n + SP_RL_OVERHEAD));
			SP_CHECK_EQ_INT(sp_rl_open(&cli, cx, buf, (size_t)r, &type, &plain),
			                (int)n);
			SP_CHECK(n == 0 || memcmp(plain, want, n) == 0);
		}
		SP_CHECK_EQ_INT(srv.rd.seq, 7);
		SP_CHECK_EQ_INT(srv.wr.seq, 7);
	}
}

/* One worker context serves connections of different suites, interleaved. */
static void test_interleaved_suites(void)
{
	sp_rl_t srv[3], cli[3];
	uint8_t buf[512], type, *plain;

	for (int s = 0; s < 3; s++)
		make_pair(suites[s], &srv[s], &cli[s]);
	for (int round = 0; round < 5; round++) {
		for (int s = 0; s < 3; s++) {
			int k = (s + round) % 3, r;
			uint8_t msg[40];

			fill(msg, sizeof(msg), (unsigned)(k * 10 + round));
			r = sp_rl_seal(&cli[k], cx, SP_RL_CT_APPDATA, msg, sizeof(msg), buf,
			               sizeof(buf));
			SP_CHECK_EQ_INT(r, (int)sizeof(msg) + SP_RL_OVERHEAD);
			SP_CHECK_EQ_INT(sp_rl_open(&srv[k], cx, buf, (size_t)r, &type, &plain),
			                (int)sizeof(msg));
			SP_CHECK_MEM(plain, msg, sizeof(msg));
		}
	}
}

static void test_key_update_local(void)
{
	for (size_t s = 0; s < 3; s++) {
		sp_rl_t srv, cli, before;
		uint8_t buf[128], copy[128], type, *plain;
		int r;

		make_pair(suites[s], &srv, &cli);
		r = sp_rl_seal(&cli, cx, SP_RL_CT_APPDATA, (const uint8_t *)"a", 1, buf,
		               sizeof(buf));
		SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, buf, (size_t)r, &type, &plain), 1);
		before = srv;
		SP_CHECK_EQ_INT(sp_rl_update(&cli, cx, SP_RL_WRITE), 0);
		SP_CHECK_EQ_INT(cli.wr.seq, 0);
		SP_CHECK(memcmp(cli.wr.secret, before.rd.secret, srv.hash_len) != 0);
		SP_CHECK(memcmp(cli.wr.key, before.rd.key, srv.key_len) != 0);
		/* the receiver still on the old key: bad_record_mac */
		r = sp_rl_seal(&cli, cx, SP_RL_CT_APPDATA, (const uint8_t *)"b", 1, buf,
		               sizeof(buf));
		memcpy(copy, buf, (size_t)r);
		SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, copy, (size_t)r, &type, &plain),
		                -SP_RL_ERR_DECRYPT);
		SP_CHECK_EQ_INT(sp_rl_update(&srv, cx, SP_RL_READ), 0);
		SP_CHECK_MEM(srv.rd.secret, cli.wr.secret, srv.hash_len);
		SP_CHECK_MEM(srv.rd.key, cli.wr.key, srv.key_len);
		SP_CHECK_MEM(srv.rd.iv, cli.wr.iv, 12);
		SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, buf, (size_t)r, &type, &plain), 1);
		SP_CHECK_EQ_INT(plain[0], 'b');
		/* the write side was not touched */
		SP_CHECK_MEM(&srv.wr, &before.wr, sizeof(srv.wr));
		SP_CHECK_EQ_INT(sp_rl_update(&srv, cx, 7), -SP_RL_ERR_INTERNAL);
		SP_CHECK_EQ_INT(srv.suite, suites[s]); /* a bad dir leaves the state alone */
	}
}

/* ---- refusals ------------------------------------------------------------------------------ */

static void test_tampering(void)
{
	for (size_t s = 0; s < 3; s++) {
		sp_rl_t srv, cli;
		uint8_t rec[256], bad[256], hdr[5], type, *plain;
		uint8_t inner[101];
		size_t n;
		int r;

		make_pair(suites[s], &srv, &cli);
		fill(inner, 100, 3);
		r = sp_rl_seal(&cli, cx, SP_RL_CT_APPDATA, inner, 100, rec, sizeof(rec));
		SP_CHECK_EQ_INT(r, 100 + SP_RL_OVERHEAD);
		n = (size_t)r;

		/* a bit in the ciphertext, in the content type byte, in the tag */
		const size_t flips[] = {5, 5 + 50, 5 + 100, n - 16, n - 1};
		for (size_t i = 0; i < sizeof(flips) / sizeof(flips[0]); i++) {
			memcpy(bad, rec, n);
			bad[flips[i]] ^= 0x01;
			SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, bad, n, &type, &plain),
			                -SP_RL_ERR_DECRYPT);
			SP_CHECK_EQ_INT(srv.rd.seq, 0);
		}
		/* header bits: all header fields are fixed or checked, so they fail as such */
		memcpy(bad, rec, n);
		bad[0] ^= 0x01; /* 23 -> 22 */
		SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, bad, n, &type, &plain), -SP_RL_ERR_UNEXPECTED);
		memcpy(bad, rec, n);
		bad[2] ^= 0x02; /* version 0x0301 */
		SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, bad, n, &type, &plain), -SP_RL_ERR_DECODE);
		memcpy(bad, rec, n);
		bad[4] ^= 0x01; /* length no longer n - 5 */
		SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, bad, n, &type, &plain), -SP_RL_ERR_DECODE);
		/* ... and the header is the AAD: a record authenticated with another header */
		memcpy(hdr, rec, 5);
		hdr[0] = SP_RL_CT_HANDSHAKE;
		inner[100] = SP_RL_CT_APPDATA;
		SP_CHECK_EQ_INT(ref_seal(suites[s], cli.wr.key, cli.wr.iv, cli.wr.seq, inner, 101,
		                         hdr, bad),
		                n);
		SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, bad, n, &type, &plain), -SP_RL_ERR_DECRYPT);
		memcpy(hdr, rec, 5);
		hdr[2] = 0x01;
		SP_CHECK_EQ_INT(ref_seal(suites[s], cli.wr.key, cli.wr.iv, cli.wr.seq, inner, 101,
		                         hdr, bad),
		                n);
		SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, bad, n, &type, &plain), -SP_RL_ERR_DECRYPT);
		/* after all that, the genuine record still opens with the same worker context */
		SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, rec, n, &type, &plain), 100);
		SP_CHECK_EQ_INT(srv.rd.seq, 1);
	}
}

static void test_replay_and_reorder(void)
{
	sp_rl_t srv, cli;
	uint8_t r0[64], r1[64], copy[64], type, *plain;
	int n0, n1;

	make_pair(0x1303, &srv, &cli);
	n0 = sp_rl_seal(&cli, cx, SP_RL_CT_APPDATA, (const uint8_t *)"zero", 4, r0, sizeof(r0));
	n1 = sp_rl_seal(&cli, cx, SP_RL_CT_APPDATA, (const uint8_t *)"one", 3, r1, sizeof(r1));
	/* out of order: record 1 at sequence 0 */
	memcpy(copy, r1, (size_t)n1);
	SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, copy, (size_t)n1, &type, &plain), -SP_RL_ERR_DECRYPT);
	memcpy(copy, r0, (size_t)n0);
	SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, copy, (size_t)n0, &type, &plain), 4);
	/* replay of record 0 */
	memcpy(copy, r0, (size_t)n0);
	SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, copy, (size_t)n0, &type, &plain), -SP_RL_ERR_DECRYPT);
	SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, r1, (size_t)n1, &type, &plain), 3);
	SP_CHECK_EQ_INT(srv.rd.seq, 2);
}

static void test_length_limits(void)
{
	static uint8_t rec[SP_RL_MAX_RECORD + 64], inner[SP_RL_MAX_PLAIN + 8];
	uint8_t hdr[5] = {23, 3, 3, 0, 0}, type, *plain;
	sp_rl_t srv, cli;
	size_t n;

	/* TLSCiphertext.length: 2^14 + 256 is the largest */
	hdr[3] = (uint8_t)(SP_RL_MAX_CIPHER >> 8);
	hdr[4] = (uint8_t)SP_RL_MAX_CIPHER;
	SP_CHECK_EQ_INT(sp_rl_record_len(hdr, 5), SP_RL_MAX_RECORD);
	hdr[4]++;
	SP_CHECK_EQ_INT(sp_rl_record_len(hdr, 5), -SP_RL_ERR_OVERFLOW);
	hdr[3] = hdr[4] = 0xFF;
	SP_CHECK_EQ_INT(sp_rl_record_len(hdr, 5), -SP_RL_ERR_OVERFLOW);
	memset(rec, 0xAB, sizeof(rec));
	memcpy(rec, hdr, 5);
	make_pair(0x1301, &srv, &cli);
	SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, rec, sizeof(rec), &type, &plain), -SP_RL_ERR_OVERFLOW);

	/* TLSInnerPlaintext: 2^14 + 1 is the largest, whatever the padding */
	for (size_t s = 0; s < 3; s++) {
		make_pair(suites[s], &srv, &cli);
		fill(inner, SP_RL_MAX_PLAIN, 9);
		inner[SP_RL_MAX_PLAIN] = SP_RL_CT_APPDATA;
		n = ref_seal(suites[s], cli.wr.key, cli.wr.iv, 0, inner, SP_RL_MAX_PLAIN + 1, NULL,
		             rec);
		SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, rec, n, &type, &plain), SP_RL_MAX_PLAIN);
		/* 16383 bytes, type, one byte of padding: 2^14 + 1 */
		inner[SP_RL_MAX_PLAIN - 1] = SP_RL_CT_APPDATA;
		inner[SP_RL_MAX_PLAIN] = 0;
		n = ref_seal(suites[s], cli.wr.key, cli.wr.iv, 1, inner, SP_RL_MAX_PLAIN + 1, NULL,
		             rec);
		SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, rec, n, &type, &plain), SP_RL_MAX_PLAIN - 1);
		/* 2^14 + 2: 16384 bytes, type, one byte of padding (authentic, still refused) */
		fill(inner, SP_RL_MAX_PLAIN, 9);
		inner[SP_RL_MAX_PLAIN] = SP_RL_CT_APPDATA;
		inner[SP_RL_MAX_PLAIN + 1] = 0;
		n = ref_seal(suites[s], cli.wr.key, cli.wr.iv, 2, inner, SP_RL_MAX_PLAIN + 2, NULL,
		             rec);
		SP_CHECK_EQ_INT(n, SP_RL_MAX_PLAIN + 2 + 16 + 5);
		SP_CHECK_EQ_INT(sp_rl_record_len(rec, n), (int)n);
		SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, rec, n, &type, &plain), -SP_RL_ERR_OVERFLOW);
		/* and the sealer refuses more than 2^14 bytes */
		SP_CHECK_EQ_INT(sp_rl_seal(&cli, cx, SP_RL_CT_APPDATA, inner, SP_RL_MAX_PLAIN + 1,
		                           rec, sizeof(rec)),
		                -SP_RL_ERR_OVERFLOW);
	}
}

static void test_outer_types(void)
{
	const uint8_t types[] = {20, 21, 22, 24, 0, 255};
	uint8_t rec[64], type, *plain;
	sp_rl_t srv, cli;
	int n;

	make_pair(0x1301, &srv, &cli);
	n = sp_rl_seal(&cli, cx, SP_RL_CT_APPDATA, (const uint8_t *)"x", 1, rec, sizeof(rec));
	for (size_t i = 0; i < sizeof(types); i++) {
		uint8_t bad[64];

		memcpy(bad, rec, (size_t)n);
		bad[0] = types[i];
		SP_CHECK_EQ_INT(sp_rl_record_len(bad, (size_t)n), -SP_RL_ERR_UNEXPECTED);
		SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, bad, (size_t)n, &type, &plain),
		                -SP_RL_ERR_UNEXPECTED);
	}
	/* a TLS 1.3 middlebox-compatibility change_cipher_spec record after the handshake */
	{
		uint8_t ccs[6] = {20, 3, 3, 0, 1, 1};

		SP_CHECK_EQ_INT(sp_rl_record_len(ccs, sizeof(ccs)), -SP_RL_ERR_UNEXPECTED);
	}
	/* legacy_record_version other than 0x0303 */
	{
		uint8_t v[5] = {23, 3, 1, 0, 20};

		SP_CHECK_EQ_INT(sp_rl_record_len(v, 5), -SP_RL_ERR_DECODE);
		v[1] = 2;
		v[2] = 3;
		SP_CHECK_EQ_INT(sp_rl_record_len(v, 5), -SP_RL_ERR_DECODE);
	}
	SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, rec, (size_t)n, &type, &plain), 1);
}

/* Inner plaintexts sp_rl_seal() never makes: padding, all zeros, odd content types. */
static void test_inner_plaintext(void)
{
	struct {
		const char *name;
		uint8_t inner[300];
		size_t len;
		int want;
		uint8_t want_type;
	} cases[] = {
	        {"padding 200", {'a', 'b', 'c', 22}, 204, 3, 22},
	        {"zero inside content", {'a', 0, 'b', 23, 0, 0}, 6, 3, 23},
	        {"empty appdata", {23}, 1, 0, 23},
	        {"empty appdata padded", {23, 0, 0, 0}, 4, 0, 23},
	        {"all zero", {0}, 10, -SP_RL_ERR_UNEXPECTED, 0},
	        {"all zero one byte", {0}, 1, -SP_RL_ERR_UNEXPECTED, 0},
	        {"change_cipher_spec inside", {1, 20}, 2, -SP_RL_ERR_UNEXPECTED, 0},
	        {"unknown type 24", {'x', 24}, 2, -SP_RL_ERR_UNEXPECTED, 0},
	        {"unknown type 255", {'x', 255, 0}, 3, -SP_RL_ERR_UNEXPECTED, 0},
	        {"empty handshake", {22, 0}, 2, -SP_RL_ERR_UNEXPECTED, 0},
	        {"empty alert", {21}, 1, -SP_RL_ERR_UNEXPECTED, 0},
	};

	for (size_t s = 0; s < 3; s++) {
		sp_rl_t srv, cli;

		make_pair(suites[s], &srv, &cli);
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			uint8_t rec[400], type = 0, *plain = NULL;
			size_t n = ref_seal(suites[s], cli.wr.key, cli.wr.iv, srv.rd.seq,
			                    cases[i].inner, cases[i].len, NULL, rec);
			int r = sp_rl_open(&srv, cx, rec, n, &type, &plain);

			if (r != cases[i].want)
				SP_FAIL("suite %04x, %s: %d, want %d", suites[s], cases[i].name, r,
				        cases[i].want);
			if (r >= 0 && (type != cases[i].want_type || plain != rec + 5))
				SP_FAIL("suite %04x, %s: type %d", suites[s], cases[i].name, type);
			if (r >= 0 && r > 0 && memcmp(plain, cases[i].inner, (size_t)r) != 0)
				SP_FAIL("suite %04x, %s: content", suites[s], cases[i].name);
			/* an authentic record consumes its sequence number even when refused */
			SP_CHECK_EQ_INT(srv.rd.seq, i + 1);
		}
	}
}

static void test_record_len_partial(void)
{
	uint8_t rec[64];
	sp_rl_t srv, cli;
	uint8_t type, *plain;
	int n;

	make_pair(0x1302, &srv, &cli);
	n = sp_rl_seal(&cli, cx, SP_RL_CT_APPDATA, (const uint8_t *)"hello", 5, rec, sizeof(rec));
	SP_CHECK_EQ_INT(n, 5 + SP_RL_OVERHEAD);
	SP_CHECK_EQ_INT(sp_rl_record_len(NULL, 0), 0);
	for (size_t k = 0; k < 5; k++)
		SP_CHECK_EQ_INT(sp_rl_record_len(rec, k), 0);
	for (size_t k = 5; k <= (size_t)n; k++)
		SP_CHECK_EQ_INT(sp_rl_record_len(rec, k), n);
	/* a truncated or overlong record is not the header's length */
	SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, rec, 4, &type, &plain), -SP_RL_ERR_DECODE);
	SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, rec, (size_t)n - 1, &type, &plain), -SP_RL_ERR_DECODE);
	SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, rec, (size_t)n + 1, &type, &plain), -SP_RL_ERR_DECODE);
	/* bodies too short to hold a tag and a content type */
	for (unsigned len = 0; len < 17; len++) {
		uint8_t h[5] = {23, 3, 3, 0, (uint8_t)len};

		SP_CHECK_EQ_INT(sp_rl_record_len(h, 5), -SP_RL_ERR_DECODE);
	}
	{
		uint8_t h[5] = {23, 3, 3, 0, 17};

		SP_CHECK_EQ_INT(sp_rl_record_len(h, 5), 22);
	}
	SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, rec, (size_t)n, &type, &plain), 5);
}

static void test_sequence_numbers(void)
{
	sp_rl_t srv, cli;
	uint8_t rec[64], inner[4] = {'s', 'e', 'q', 23}, type, *plain;
	size_t n;
	int r;

	/* the nonce uses all 8 bytes of the sequence number (checked against ref_seal) */
	make_pair(0x1301, &srv, &cli);
	srv.rd.seq = UINT64_C(0x0102030405060708);
	n = ref_seal(0x1301, cli.wr.key, cli.wr.iv, UINT64_C(0x0102030405060708), inner, 4, NULL,
	             rec);
	SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, rec, n, &type, &plain), 3);
	cli.wr.seq = UINT64_C(0xF0E0D0C0B0A09080);
	r = sp_rl_seal(&cli, cx, SP_RL_CT_APPDATA, inner, 3, rec, sizeof(rec));
	srv.rd.seq = UINT64_C(0xF0E0D0C0B0A09080);
	SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, rec, (size_t)r, &type, &plain), 3);

	/* the last usable sequence number is 2^64 - 2; it never wraps */
	cli.wr.seq = srv.rd.seq = UINT64_MAX - 1;
	r = sp_rl_seal(&cli, cx, SP_RL_CT_APPDATA, inner, 3, rec, sizeof(rec));
	SP_CHECK_EQ_INT(r, 3 + SP_RL_OVERHEAD);
	SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, rec, (size_t)r, &type, &plain), 3);
	SP_CHECK(cli.wr.seq == UINT64_MAX && srv.rd.seq == UINT64_MAX);
	SP_CHECK_EQ_INT(sp_rl_seal(&cli, cx, SP_RL_CT_APPDATA, inner, 3, rec, sizeof(rec)),
	                -SP_RL_ERR_INTERNAL);
	n = ref_seal(0x1301, cli.wr.key, cli.wr.iv, UINT64_MAX, inner, 4, NULL, rec);
	SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, rec, n, &type, &plain), -SP_RL_ERR_INTERNAL);
	SP_CHECK(srv.rd.seq == UINT64_MAX);
	/* a KeyUpdate starts over */
	SP_CHECK_EQ_INT(sp_rl_update(&cli, cx, SP_RL_WRITE), 0);
	SP_CHECK_EQ_INT(sp_rl_update(&srv, cx, SP_RL_READ), 0);
	r = sp_rl_seal(&cli, cx, SP_RL_CT_APPDATA, inner, 3, rec, sizeof(rec));
	SP_CHECK_EQ_INT(sp_rl_open(&srv, cx, rec, (size_t)r, &type, &plain), 3);

	/* AEAD limits: the write side asks for a KeyUpdate in time */
	SP_CHECK_EQ_INT(sp_rl_write_needs_update(&cli), 0);
	cli.wr.seq = SP_RL_WRITE_UPDATE_AFTER - 1;
	SP_CHECK_EQ_INT(sp_rl_write_needs_update(&cli), 0);
	cli.wr.seq++;
	SP_CHECK_EQ_INT(sp_rl_write_needs_update(&cli), 1);
}

static void test_bad_arguments(void)
{
	uint8_t secret[48] = {1}, rec[64], type, *plain;
	sp_rl_t rl;

	memset(&rl, 0x5A, sizeof(rl));
	SP_CHECK_EQ_INT(sp_rl_init(&rl, cx, 0x1304, secret, secret, 32, 0, 0), -SP_RL_ERR_INTERNAL);
	SP_CHECK_EQ_INT(rl.suite, 0);
	SP_CHECK_EQ_INT(sp_rl_init(&rl, cx, 0x1301, secret, secret, 48, 0, 0), -SP_RL_ERR_INTERNAL);
	SP_CHECK_EQ_INT(sp_rl_init(&rl, cx, 0x1302, secret, secret, 32, 0, 0), -SP_RL_ERR_INTERNAL);
	SP_CHECK_EQ_INT(sp_rl_init(&rl, cx, 0x1303, NULL, secret, 32, 0, 0), -SP_RL_ERR_INTERNAL);
	SP_CHECK_EQ_INT(sp_rl_init(&rl, NULL, 0x1303, secret, secret, 32, 0, 0),
	                -SP_RL_ERR_INTERNAL);
	/* a wiped or failed state is unusable */
	SP_CHECK_EQ_INT(sp_rl_seal(&rl, cx, SP_RL_CT_APPDATA, secret, 1, rec, sizeof(rec)),
	                -SP_RL_ERR_INTERNAL);
	SP_CHECK_EQ_INT(sp_rl_update(&rl, cx, SP_RL_READ), -SP_RL_ERR_INTERNAL);
	SP_CHECK_EQ_INT(sp_rl_init(&rl, cx, 0x1303, secret, secret, 32, 0, 0), 0);
	SP_CHECK_EQ_INT(sp_rl_seal(&rl, cx, SP_RL_CT_APPDATA, secret, 1, rec, sizeof(rec)), 23);
	rec[5] ^= 1;
	SP_CHECK_EQ_INT(sp_rl_open(&rl, cx, rec, 23, &type, &plain), -SP_RL_ERR_DECRYPT);
	SP_CHECK_EQ_INT(sp_rl_seal(&rl, cx, 0, secret, 1, rec, sizeof(rec)), -SP_RL_ERR_INTERNAL);
	SP_CHECK_EQ_INT(sp_rl_seal(&rl, cx, SP_RL_CT_APPDATA, secret, 10, rec, 10 + 21),
	                -SP_RL_ERR_INTERNAL);
	SP_CHECK_EQ_INT(sp_rl_seal(&rl, cx, SP_RL_CT_APPDATA, NULL, 1, rec, sizeof(rec)),
	                -SP_RL_ERR_INTERNAL);
	SP_CHECK_EQ_INT(sp_rl_seal(&rl, cx, SP_RL_CT_APPDATA, NULL, 0, rec, sizeof(rec)), 22);
	sp_rl_wipe(&rl);
	SP_CHECK_EQ_INT(sp_rl_seal(&rl, cx, SP_RL_CT_APPDATA, secret, 1, rec, sizeof(rec)),
	                -SP_RL_ERR_INTERNAL);
	sp_rl_wipe(NULL);
	sp_rl_crypto_free(NULL);
	SP_CHECK(sizeof(sp_rl_t) <= 216);
}

/* ---- interop with OpenSSL ------------------------------------------------------------------ */

static struct tpki pki; /* tpki.h: in memory only */

/* What the server learns during the handshake (the daemon keeps this until the handoff). */
struct hs {
	int have_c, have_s;
	size_t c_len, s_len;
	uint8_t c_secret[48], s_secret[48];
	int app_records; /* records written after SERVER_TRAFFIC_SECRET_0 was logged */
};

static size_t secret_from_line(const char *line, uint8_t *out)
{
	const char *sp = strrchr(line, ' ');

	return sp ? unhex(sp + 1, out, 48) : 0;
}

static void keylog_cb(const SSL *ssl, const char *line)
{
	struct hs *h = SSL_get_app_data(ssl);

	if (!h)
		return;
	if (strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24) == 0) {
		h->s_len = secret_from_line(line, h->s_secret);
		h->have_s = 1;
	} else if (strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0) {
		h->c_len = secret_from_line(line, h->c_secret);
		h->have_c = 1;
	}
}

static void msg_cb(int write_p, int version, int content_type, const void *buf, size_t len,
                   SSL *ssl, void *arg)
{
	struct hs *h = SSL_get_app_data(ssl);

	(void)version;
	(void)buf;
	(void)len;
	(void)arg;
	if (h && write_p && content_type == SSL3_RT_HEADER && h->have_s)
		h->app_records++;
}

/* The server context as server/sp_tls.c builds it (less ALPN, CRL and the callbacks). */
static SSL_CTX *server_ctx(const char *suite)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
	X509_NAME *ca_name = NULL;

	if (!ctx || !names)
		goto fail;
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
	                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 1);
	SSL_CTX_set_timeout(ctx, 3600);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"sealpush", 8);
	if (SSL_CTX_use_certificate(ctx, pki.srv) != 1 ||
	    SSL_CTX_use_PrivateKey(ctx, pki.srv_key) != 1 || SSL_CTX_check_private_key(ctx) != 1 ||
	    X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), pki.ca) != 1 ||
	    SSL_CTX_set_ciphersuites(ctx, suite) != 1)
		goto fail;
	ca_name = X509_NAME_dup(X509_get_subject_name(pki.ca));
	if (!ca_name || !sk_X509_NAME_push(names, ca_name)) {
		X509_NAME_free(ca_name);
		goto fail;
	}
	SSL_CTX_set_client_CA_list(ctx, names);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	SSL_CTX_set_verify_depth(ctx, 2);
	SSL_CTX_set_keylog_callback(ctx, keylog_cb);
	SSL_CTX_set_msg_callback(ctx, msg_cb);
	return ctx;
fail:
	sk_X509_NAME_pop_free(names, X509_NAME_free);
	SSL_CTX_free(ctx);
	return NULL;
}

static SSL_CTX *client_ctx(const char *suite)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	if (SSL_CTX_use_certificate(ctx, pki.cli) != 1 ||
	    SSL_CTX_use_PrivateKey(ctx, pki.cli_key) != 1 ||
	    X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), pki.ca) != 1 ||
	    SSL_CTX_set_ciphersuites(ctx, suite) != 1) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	return ctx;
}

/* A client and a server over two memory BIOs; after the handoff the server is rl only. */
struct link {
	SSL_CTX *sctx, *cctx;
	SSL *c, *s;
	BIO *c2s, *s2c; /* we keep one reference of each */
	struct hs hs;
	sp_rl_t rl;
	size_t have;
	uint8_t in[2 * SP_RL_MAX_RECORD]; /* bytes from the client not yet taken as records */
	uint8_t rec[SP_RL_MAX_RECORD];
	uint8_t out[SP_RL_MAX_RECORD];
};

static void link_free(struct link *k)
{
	if (!k)
		return;
	SSL_free(k->c);
	SSL_free(k->s);
	BIO_free(k->c2s);
	BIO_free(k->s2c);
	SSL_CTX_free(k->cctx);
	SSL_CTX_free(k->sctx);
	sp_rl_wipe(&k->rl);
	OPENSSL_cleanse(&k->hs, sizeof(k->hs));
	free(k);
}

static struct link *link_new(const char *suite)
{
	struct link *k = calloc(1, sizeof(*k));

	if (!k)
		return NULL;
	k->sctx = server_ctx(suite);
	k->cctx = client_ctx(suite);
	k->c2s = BIO_new(BIO_s_mem());
	k->s2c = BIO_new(BIO_s_mem());
	if (!k->sctx || !k->cctx || !k->c2s || !k->s2c)
		goto fail;
	BIO_set_mem_eof_return(k->c2s, -1); /* empty means "try again", not EOF */
	BIO_set_mem_eof_return(k->s2c, -1);
	k->c = SSL_new(k->cctx);
	k->s = SSL_new(k->sctx);
	if (!k->c || !k->s)
		goto fail;
	/* each SSL_set_bio() takes one reference of each BIO */
	BIO_up_ref(k->c2s);
	BIO_up_ref(k->s2c);
	SSL_set_bio(k->c, k->s2c, k->c2s);
	BIO_up_ref(k->c2s);
	BIO_up_ref(k->s2c);
	SSL_set_bio(k->s, k->c2s, k->s2c);
	SSL_set_connect_state(k->c);
	SSL_set_accept_state(k->s);
	SSL_set_app_data(k->s, &k->hs);
	return k;
fail:
	link_free(k);
	return NULL;
}

static int link_handshake(struct link *k)
{
	int cdone = 0, sdone = 0;

	for (int i = 0; i < 20 && !(cdone && sdone); i++) {
		int r;

		if (!cdone) {
			r = SSL_do_handshake(k->c);
			if (r == 1)
				cdone = 1;
			else if (SSL_get_error(k->c, r) != SSL_ERROR_WANT_READ)
				return -1;
		}
		if (!sdone) {
			r = SSL_do_handshake(k->s);
			if (r == 1)
				sdone = 1;
			else if (SSL_get_error(k->s, r) != SSL_ERROR_WANT_READ)
				return -1;
		}
	}
	return cdone && sdone ? 0 : -1;
}

#define NO_DATA (-1000)

/* The next record the client wrote, opened by sp_record (the daemon's read path in small). */
static int srv_next(struct link *k, uint8_t *type, uint8_t **plain)
{
	for (;;) {
		int n = sp_rl_record_len(k->in, k->have), r;

		if (n < 0)
			return n;
		if (n > 0 && (size_t)n <= k->have) {
			memcpy(k->rec, k->in, (size_t)n);
			memmove(k->in, k->in + n, k->have - (size_t)n);
			k->have -= (size_t)n;
			return sp_rl_open(&k->rl, cx, k->rec, (size_t)n, type, plain);
		}
		r = BIO_read(k->c2s, k->in + k->have, (int)(sizeof(k->in) - k->have));
		if (r <= 0)
			return NO_DATA;
		k->have += (size_t)r;
	}
}

static int srv_send(struct link *k, uint8_t type, const void *p, size_t len)
{
	int n = sp_rl_seal(&k->rl, cx, type, p, len, k->out, sizeof(k->out));

	if (n < 0)
		return n;
	return BIO_write(k->s2c, k->out, n) == n ? 0 : -1;
}

/* SSL_read on the client: the byte count, or minus the SSL_get_error() code. */
static int cli_read(struct link *k, void *buf, int cap)
{
	int r = SSL_read(k->c, buf, cap);

	return r > 0 ? r : -SSL_get_error(k->c, r);
}

static void interop(const char *suite_name, uint16_t suite, int client_padding)
{
	static uint8_t msg[SP_RL_MAX_PLAIN], got[SP_RL_MAX_PLAIN];
	const size_t c2s_sizes[] = {1, 255, SP_RL_MAX_PLAIN};
	const size_t s2c_sizes[] = {1, 255, SP_RL_MAX_PLAIN};
	const uint8_t ku_not_requested[5] = {24, 0, 0, 1, 0}, ku_requested[5] = {24, 0, 0, 1, 1};
	const uint8_t close_notify[2] = {1, 0};
	struct link *k = link_new(suite_name);
	uint8_t type = 0, *plain = NULL;
	const SSL_CIPHER *cipher;
	int n;

	if (!k) {
		SP_FAIL("link setup: %s", ERR_reason_error_string(ERR_get_error()));
		return;
	}
	if (link_handshake(k) < 0) {
		SP_FAIL("handshake: %s", ERR_reason_error_string(ERR_get_error()));
		link_free(k);
		return;
	}

	/* The handoff, as the daemon does it. */
	cipher = SSL_get_current_cipher(k->s);
	SP_CHECK_EQ_INT(SSL_version(k->s), TLS1_3_VERSION);
	SP_CHECK(cipher && (SSL_CIPHER_get_id(cipher) & 0xFFFF) == suite);
	SP_CHECK(SSL_get0_peer_certificate(k->s) != NULL);
	SP_CHECK_EQ_INT(SSL_get_verify_result(k->s), X509_V_OK);
	SP_CHECK(k->hs.have_c && k->hs.have_s);
	SP_CHECK_EQ_INT(k->hs.c_len, hash_len_of(suite));
	SP_CHECK_EQ_INT(k->hs.s_len, hash_len_of(suite));
	SP_CHECK_EQ_INT(k->hs.app_records, 1); /* the one NewSessionTicket */
	SP_CHECK_EQ_INT(SSL_has_pending(k->s), 0);
	SP_CHECK_EQ_INT(sp_rl_init(&k->rl, cx, suite, k->hs.c_secret, k->hs.s_secret, k->hs.c_len,
	                           0, (uint64_t)k->hs.app_records),
	                0);
	OPENSSL_cleanse(&k->hs, sizeof(k->hs));
	SSL_free(k->s);
	k->s = NULL;

	if (client_padding)
		SP_CHECK_EQ_INT(SSL_set_block_padding(k->c, 512), 1);

	/* client -> server: OpenSSL never sends an empty application_data record (SSL_write_ex
	 * with 0 bytes sends nothing), so size 0 is covered by test_roundtrip_all_suites. */
	for (size_t i = 0; i < sizeof(c2s_sizes) / sizeof(c2s_sizes[0]); i++) {
		size_t len = c2s_sizes[i];

		fill(msg, len, (unsigned)(i + 1));
		SP_CHECK_EQ_INT(SSL_write(k->c, msg, (int)len), (int)len);
		n = srv_next(k, &type, &plain);
		SP_CHECK_EQ_INT(n, (int)len);
		SP_CHECK_EQ_INT(type, SP_RL_CT_APPDATA);
		if (n == (int)len)
			SP_CHECK_MEM(plain, msg, len);
	}

	/* server -> client, behind the ticket; an empty record first, which the client skips */
	SP_CHECK_EQ_INT(srv_send(k, SP_RL_CT_APPDATA, NULL, 0), 0);
	for (size_t i = 0; i < sizeof(s2c_sizes) / sizeof(s2c_sizes[0]); i++) {
		size_t len = s2c_sizes[i];

		fill(msg, len, (unsigned)(i + 100));
		SP_CHECK_EQ_INT(srv_send(k, SP_RL_CT_APPDATA, msg, len), 0);
		n = cli_read(k, got, (int)sizeof(got));
		SP_CHECK_EQ_INT(n, (int)len);
		if (n == (int)len)
			SP_CHECK_MEM(got, msg, len);
	}
	{
		SSL_SESSION *sess = SSL_get_session(k->c);

		SP_CHECK(sess && SSL_SESSION_has_ticket(sess)); /* it took the ticket at seq 0 */
	}

	/* client KeyUpdate, update_not_requested */
	SP_CHECK_EQ_INT(SSL_key_update(k->c, SSL_KEY_UPDATE_NOT_REQUESTED), 1);
	SP_CHECK_EQ_INT(SSL_write(k->c, "after ku 1", 10), 10);
	n = srv_next(k, &type, &plain);
	SP_CHECK_EQ_INT(n, 5);
	SP_CHECK_EQ_INT(type, SP_RL_CT_HANDSHAKE);
	if (n == 5)
		SP_CHECK_MEM(plain, ku_not_requested, 5);
	SP_CHECK_EQ_INT(sp_rl_update(&k->rl, cx, SP_RL_READ), 0);
	n = srv_next(k, &type, &plain);
	SP_CHECK_EQ_INT(n, 10);
	SP_CHECK(n == 10 && type == SP_RL_CT_APPDATA && memcmp(plain, "after ku 1", 10) == 0);
	SP_CHECK_EQ_INT(k->rl.rd.seq, 1);

	/* client KeyUpdate, update_requested: we answer with our own, under the old key */
	SP_CHECK_EQ_INT(SSL_key_update(k->c, SSL_KEY_UPDATE_REQUESTED), 1);
	SP_CHECK_EQ_INT(SSL_write(k->c, "after ku 2", 10), 10);
	n = srv_next(k, &type, &plain);
	SP_CHECK_EQ_INT(n, 5);
	SP_CHECK_EQ_INT(type, SP_RL_CT_HANDSHAKE);
	if (n == 5)
		SP_CHECK_MEM(plain, ku_requested, 5);
	SP_CHECK_EQ_INT(sp_rl_update(&k->rl, cx, SP_RL_READ), 0);
	SP_CHECK_EQ_INT(srv_send(k, SP_RL_CT_HANDSHAKE, ku_not_requested, 5), 0);
	SP_CHECK_EQ_INT(sp_rl_update(&k->rl, cx, SP_RL_WRITE), 0);
	n = srv_next(k, &type, &plain);
	SP_CHECK(n == 10 && type == SP_RL_CT_APPDATA && memcmp(plain, "after ku 2", 10) == 0);
	for (int i = 0; i < 3; i++) {
		char pong[16];

		snprintf(pong, sizeof(pong), "pong %d", i);
		SP_CHECK_EQ_INT(srv_send(k, SP_RL_CT_APPDATA, pong, strlen(pong)), 0);
		n = cli_read(k, got, (int)sizeof(got));
		SP_CHECK(n == (int)strlen(pong) && memcmp(got, pong, strlen(pong)) == 0);
	}
	SP_CHECK_EQ_INT(SSL_write(k->c, "still here", 10), 10);
	n = srv_next(k, &type, &plain);
	SP_CHECK(n == 10 && type == SP_RL_CT_APPDATA && memcmp(plain, "still here", 10) == 0);
	SP_CHECK_EQ_INT(k->rl.wr.seq, 3);

	/* a tampered copy of a real client record is refused; the genuine one still opens */
	SP_CHECK_EQ_INT(SSL_write(k->c, "tamper", 6), 6);
	{
		int r = BIO_read(k->c2s, k->rec, (int)sizeof(k->rec));
		uint64_t seq = k->rl.rd.seq;

		SP_CHECK_EQ_INT(r, 6 + SP_RL_OVERHEAD + (client_padding ? 512 - 7 : 0));
		if (r > 0) {
			memcpy(k->out, k->rec, (size_t)r);
			k->out[r - 1] ^= 0x80;
			SP_CHECK_EQ_INT(sp_rl_open(&k->rl, cx, k->out, (size_t)r, &type, &plain),
			                -SP_RL_ERR_DECRYPT);
			SP_CHECK(k->rl.rd.seq == seq);
			SP_CHECK_EQ_INT(sp_rl_open(&k->rl, cx, k->rec, (size_t)r, &type, &plain),
			                6);
			SP_CHECK(type == SP_RL_CT_APPDATA && memcmp(plain, "tamper", 6) == 0);
		}
	}

	/* close_notify from the server: the client's SSL_read ends cleanly */
	SP_CHECK_EQ_INT(srv_send(k, SP_RL_CT_ALERT, close_notify, 2), 0);
	SP_CHECK_EQ_INT(cli_read(k, got, (int)sizeof(got)), -SSL_ERROR_ZERO_RETURN);
	/* and the client's own close_notify */
	SP_CHECK(SSL_shutdown(k->c) >= 0);
	n = srv_next(k, &type, &plain);
	SP_CHECK_EQ_INT(n, 2);
	SP_CHECK_EQ_INT(type, SP_RL_CT_ALERT);
	if (n == 2)
		SP_CHECK_MEM(plain, close_notify, 2);
	SP_CHECK_EQ_INT(BIO_ctrl_pending(k->c2s), 0);
	SP_CHECK_EQ_INT(BIO_ctrl_pending(k->s2c), 0);
	SP_CHECK_EQ_INT(k->have, 0);
	link_free(k);
}

static void test_interop_aes_128_gcm(void)
{
	interop("TLS_AES_128_GCM_SHA256", 0x1301, 0);
}

static void test_interop_aes_256_gcm(void)
{
	interop("TLS_AES_256_GCM_SHA384", 0x1302, 0);
}

static void test_interop_chacha20_poly1305(void)
{
	interop("TLS_CHACHA20_POLY1305_SHA256", 0x1303, 0);
}

/* The client pads every record to 512 bytes (SSL_set_block_padding). */
static void test_interop_client_padding(void)
{
	interop("TLS_AES_256_GCM_SHA384", 0x1302, 1);
}

/* ---- cost ---------------------------------------------------------------------------------- */

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Seal and open of 256-byte records; prints the time per record pair (seal + open). */
static void test_cost_256_byte_records(void)
{
	const int rounds = 100000;

	for (size_t s = 0; s < 3; s++) {
		uint8_t buf[256 + SP_RL_OVERHEAD], msg[256], type, *plain;
		sp_rl_t srv, cli;
		double t0, t1;
		int bad = 0;

		make_pair(suites[s], &srv, &cli);
		fill(msg, sizeof(msg), 1);
		t0 = now_ns();
		for (int i = 0; i < rounds; i++) {
			int r = sp_rl_seal(&cli, cx, SP_RL_CT_APPDATA, msg, sizeof(msg), buf,
			                   sizeof(buf));

			if (r < 0 || sp_rl_open(&srv, cx, buf, (size_t)r, &type, &plain) != 256)
				bad++;
		}
		t1 = now_ns();
		SP_CHECK_EQ_INT(bad, 0);
		printf("# cost: %s: %.0f ns per 256-byte record, seal + open\n",
		       cipher_name(suites[s]), (t1 - t0) / rounds);
	}
}

/* The relay's side of unbatched traffic: 200 connections in turn, one record opened and one
 * sealed on each (its two keys), as a worker does when every message is alone. The records
 * to open were sealed beforehand with another context (the clients'). */
static void test_cost_interleaved_connections(void)
{
	enum { CONNS = 200, ROUNDS = 250 };
	static uint8_t in[ROUNDS][CONNS][256 + SP_RL_OVERHEAD];
	static sp_rl_t srv[CONNS], cli[CONNS];
	sp_rl_crypto_t *ccx = sp_rl_crypto_new();
	uint8_t out[256 + SP_RL_OVERHEAD], msg[256], type, *plain;
	double best = 0;
	int bad = 0;

	SP_CHECK(ccx != NULL);
	fill(msg, sizeof(msg), 3);
	for (int rep = 0; rep < 3; rep++) {
		double t0, t1;

		for (int i = 0; i < CONNS; i++) {
			uint8_t cs[32], ss[32];

			fill(cs, sizeof(cs), (unsigned)(i * 5 + rep));
			fill(ss, sizeof(ss), (unsigned)(i * 11 + 7 + rep));
			cs[0] = (uint8_t)i;
			ss[0] = (uint8_t)(i * 3);
			SP_CHECK_EQ_INT(sp_rl_init(&srv[i], cx, 0x1301, cs, ss, 32, 0, 0), 0);
			SP_CHECK_EQ_INT(sp_rl_init(&cli[i], ccx, 0x1301, ss, cs, 32, 0, 0), 0);
		}
		for (int r = 0; r < ROUNDS; r++)
			for (int i = 0; i < CONNS; i++)
				if (sp_rl_seal(&cli[i], ccx, SP_RL_CT_APPDATA, msg, sizeof(msg),
				               in[r][i], sizeof(in[r][i])) < 0)
					bad++;
		t0 = now_ns();
		for (int r = 0; r < ROUNDS; r++)
			for (int i = 0; i < CONNS; i++) {
				if (sp_rl_open(&srv[i], cx, in[r][i], sizeof(in[r][i]), &type,
				               &plain) != 256)
					bad++;
				if (sp_rl_seal(&srv[i], cx, SP_RL_CT_APPDATA, msg, sizeof(msg), out,
				               sizeof(out)) < 0)
					bad++;
			}
		t1 = now_ns();
		if (rep == 0 || (t1 - t0) < best)
			best = t1 - t0;
	}
	SP_CHECK_EQ_INT(bad, 0);
	printf("# cost: AES-128-GCM, %d connections in turn: %.0f ns per record pair (open + "
	       "seal), best of 3\n",
	       CONNS, best / (ROUNDS * CONNS));
	for (int i = 0; i < CONNS; i++) {
		sp_rl_wipe(&srv[i]);
		sp_rl_wipe(&cli[i]);
	}
	sp_rl_crypto_free(ccx);
}

int main(void)
{
	cx = sp_rl_crypto_new();
	if (!cx || tpki_make(&pki) < 0) {
		printf("Bail out! cannot set up OpenSSL (%s)\n",
		       ERR_reason_error_string(ERR_get_error()));
		return 1;
	}
	SP_RUN(test_rfc8448_key_derivation);
	SP_RUN(test_rfc8448_server_records);
	SP_RUN(test_rfc8448_client_records);
	SP_RUN(test_rfc8448_ref_sealer);
	SP_RUN(test_roundtrip_all_suites);
	SP_RUN(test_interleaved_suites);
	SP_RUN(test_key_update_local);
	SP_RUN(test_tampering);
	SP_RUN(test_replay_and_reorder);
	SP_RUN(test_length_limits);
	SP_RUN(test_outer_types);
	SP_RUN(test_inner_plaintext);
	SP_RUN(test_record_len_partial);
	SP_RUN(test_sequence_numbers);
	SP_RUN(test_bad_arguments);
	SP_RUN(test_interop_aes_128_gcm);
	SP_RUN(test_interop_aes_256_gcm);
	SP_RUN(test_interop_chacha20_poly1305);
	SP_RUN(test_interop_client_padding);
	SP_RUN(test_cost_256_byte_records);
	SP_RUN(test_cost_interleaved_connections);
	tpki_free(&pki);
	sp_rl_crypto_free(cx);
	return sp_test_done();
}
