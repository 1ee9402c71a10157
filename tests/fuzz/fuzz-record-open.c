/*
 * fuzz-record-open.c: fuzz target for the TLS 1.3 record reader (server/sp_record).
 *
 * Input: byte 0 picks the cipher suite (0x1301, 0x1302, 0x1303) and byte 1 the mode; the rest
 * is a byte stream. The server-side state comes from fixed secrets, as the daemon would have
 * it after the handoff (read sequence 0).
 *   - mode even ("wire"): the stream is what a client sent: records are cut with
 *     sp_rl_record_len() and opened with sp_rl_open(), each from an exact-size heap copy so
 *     ASan sees any read past the record, until the stream ends or a record is refused (as
 *     the daemon would close the connection). A KeyUpdate handshake message is followed by
 *     sp_rl_update(READ), as the daemon does; an alert ends the stream. Mutated records mostly
 *     fail authentication; the seeds are valid records sealed with sp_rl_seal() under the
 *     same secrets.
 *   - mode odd ("sealed"): the stream is a list of TLSInnerPlaintexts, each a 2-byte length
 *     and that many bytes; the target seals each with the client's write key straight on the
 *     EVP API (any padding, any type byte, any length up to past the limits) and opens it,
 *     so the fuzzer reaches everything after the tag check. The result must match a simple
 *     model of RFC 8446 5.2 and 5.4 (limits, padding, content types).
 * Any broken invariant aborts, which libFuzzer and the replay driver report as a crash.
 */
#include "sp_record.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_RECORDS 64

static const uint8_t client_secret[48] = {
        0x3a, 0x91, 0x0c, 0x5e, 0x77, 0x12, 0xe4, 0x0b, 0x9d, 0x61, 0x28, 0xf3,
        0x4c, 0xa0, 0x15, 0x86, 0xd2, 0x39, 0x6f, 0x0e, 0xb4, 0x57, 0x81, 0xca,
        0x23, 0x9e, 0x40, 0x1d, 0x68, 0xf5, 0x07, 0xbb, 0x52, 0x14, 0xe9, 0x3c,
        0x8a, 0x70, 0x2f, 0xd6, 0x05, 0x9b, 0x61, 0xae, 0x37, 0xc8, 0x4d, 0x10};
static const uint8_t server_secret[48] = {
        0x81, 0x0f, 0x6c, 0x22, 0xd9, 0x45, 0xb7, 0x13, 0x5a, 0xe0, 0x3e, 0x97,
        0x08, 0xcf, 0x64, 0x2b, 0xf1, 0x7d, 0x36, 0x90, 0x4b, 0xa8, 0x1c, 0xe5,
        0x59, 0x02, 0xbd, 0x73, 0x2e, 0x86, 0xc4, 0x19, 0x6a, 0xd7, 0x30, 0x95,
        0x4e, 0xf8, 0x11, 0x8c, 0x27, 0xb3, 0x5d, 0x09, 0xe2, 0x76, 0x43, 0xa1};

static sp_rl_crypto_t *cx;

static void fail(const char *what)
{
	fprintf(stderr, "fuzz-record-open: %s\n", what);
	abort();
}

static uint8_t hash_len_of(uint16_t suite)
{
	return suite == 0x1302 ? 48 : 32;
}

/* Checks what sp_rl_open() promises for a result r on a record of rec_len bytes. */
static void check_open(int r, const sp_rl_t *rl, uint64_t seq_before, const uint8_t *rec,
                       size_t rec_len, uint8_t type, const uint8_t *plain)
{
	if (r >= 0) {
		if (r > SP_RL_MAX_PLAIN || (size_t)r + SP_RL_OVERHEAD > rec_len)
			fail("content longer than the record allows");
		if (plain != rec + SP_RL_HEADER)
			fail("plaintext not at the record body");
		if (type != SP_RL_CT_ALERT && type != SP_RL_CT_HANDSHAKE &&
		    type != SP_RL_CT_APPDATA)
			fail("accepted an inner content type other than 21, 22, 23");
		if (r == 0 && type != SP_RL_CT_APPDATA)
			fail("accepted an empty alert or handshake record");
		if (rl->rd.seq != seq_before + 1)
			fail("sequence number not advanced by one");
	} else if (r == -SP_RL_ERR_DECRYPT) {
		if (rl->rd.seq != seq_before)
			fail("sequence number advanced on a bad record");
	} else if (r < -SP_RL_ERR_INTERNAL) {
		fail("unknown error code");
	}
}

/* The daemon's reaction to a handshake message: only KeyUpdate is legal after the handshake. */
static int after_handshake_message(sp_rl_t *rl, const uint8_t *p, int n)
{
	if (n == 5 && p[0] == 24 && p[1] == 0 && p[2] == 0 && p[3] == 1 && p[4] <= 1)
		return sp_rl_update(rl, cx, SP_RL_READ) == 0 ? 0 : -1;
	return -1; /* unexpected_message: the connection would close */
}

static void run_wire(sp_rl_t *rl, const uint8_t *data, size_t size)
{
	size_t pos = 0;

	for (int i = 0; i < MAX_RECORDS && pos < size; i++) {
		int n = sp_rl_record_len(data + pos, size - pos), r;
		uint8_t *rec, type = 0, *plain = NULL;
		uint64_t seq = rl->rd.seq;

		for (size_t k = 0; k < 5 && k < size - pos; k++)
			if (sp_rl_record_len(data + pos, k) != 0)
				fail("a length from fewer than 5 bytes");
		if (n <= 0)
			return;
		if (n < SP_RL_OVERHEAD || n > SP_RL_MAX_RECORD)
			fail("record length out of range");
		if ((size_t)n > size - pos) {
			/* truncated: sp_rl_open() must refuse it without reading past it */
			rec = malloc(size - pos);
			if (!rec)
				return;
			memcpy(rec, data + pos, size - pos);
			if (sp_rl_open(rl, cx, rec, size - pos, &type, &plain) != -SP_RL_ERR_DECODE)
				fail("a truncated record was not refused as DECODE");
			free(rec);
			return;
		}
		rec = malloc((size_t)n);
		if (!rec)
			return;
		memcpy(rec, data + pos, (size_t)n);
		r = sp_rl_open(rl, cx, rec, (size_t)n, &type, &plain);
		check_open(r, rl, seq, rec, (size_t)n, type, plain);
		if (r >= 0 && type == SP_RL_CT_HANDSHAKE &&
		    after_handshake_message(rl, plain, r) < 0)
			r = -1;
		if (r >= 0 && type == SP_RL_CT_ALERT)
			r = -1; /* close_notify or a fatal alert: the connection ends either way */
		free(rec);
		if (r < 0)
			return;
		pos += (size_t)n;
	}
}

/* RFC 8446 5.2 and 5.4, the slow obvious way: the result sp_rl_open() must give for an
 * authentic record with this inner plaintext, and the content type. */
static int model(const uint8_t *inner, size_t len, uint8_t *type)
{
	size_t i = len;

	if (len + 16 > SP_RL_MAX_CIPHER)
		return -SP_RL_ERR_OVERFLOW;
	if (len == 0)
		return -SP_RL_ERR_DECODE;
	if (len > SP_RL_MAX_PLAIN + 1)
		return -SP_RL_ERR_OVERFLOW;
	while (i > 0 && inner[i - 1] == 0)
		i--;
	if (i == 0)
		return -SP_RL_ERR_UNEXPECTED;
	*type = inner[i - 1];
	if (*type != 21 && *type != 22 && *type != 23)
		return -SP_RL_ERR_UNEXPECTED;
	if (i == 1 && *type != 23)
		return -SP_RL_ERR_UNEXPECTED;
	return (int)(i - 1);
}

/* Seals an inner plaintext with the client's write key and sequence number (a separate
 * sealer on the EVP API). */
static size_t seal_inner(uint16_t suite, const sp_rl_t *client, const uint8_t *inner, size_t len,
                         uint8_t *out)
{
	static EVP_CIPHER *ciphers[3];
	static const char *const names[3] = {"AES-128-GCM", "AES-256-GCM", "ChaCha20-Poly1305"};
	EVP_CIPHER_CTX *ctx;
	size_t body = len + 16;
	uint8_t nonce[12];
	int idx = suite - 0x1301, ol = 0, fl = 0, ok;

	if (!ciphers[idx] && !(ciphers[idx] = EVP_CIPHER_fetch(NULL, names[idx], NULL)))
		fail("fetch");
	out[0] = 23;
	out[1] = 3;
	out[2] = 3;
	out[3] = (uint8_t)(body >> 8);
	out[4] = (uint8_t)body;
	memcpy(nonce, client->wr.iv, 12);
	for (int i = 0; i < 8; i++)
		nonce[11 - i] ^= (uint8_t)(client->wr.seq >> (8 * i));
	ctx = EVP_CIPHER_CTX_new();
	ok = ctx && EVP_EncryptInit_ex2(ctx, ciphers[idx], client->wr.key, nonce, NULL) == 1 &&
	     EVP_EncryptUpdate(ctx, NULL, &ol, out, 5) == 1 &&
	     EVP_EncryptUpdate(ctx, out + 5, &ol, inner, (int)len) == 1 &&
	     EVP_EncryptFinal_ex(ctx, out + 5 + ol, &fl) == 1 &&
	     EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, out + 5 + len) == 1;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok)
		fail("reference seal");
	return 5 + body;
}

static void run_sealed(uint16_t suite, sp_rl_t *rl, const uint8_t *data, size_t size)
{
	sp_rl_t client;
	size_t pos = 0;

	/* the client's view: it writes with the client secret */
	if (sp_rl_init(&client, cx, suite, server_secret, client_secret, hash_len_of(suite), 0, 0))
		fail("sp_rl_init (client)");
	for (int i = 0; i < MAX_RECORDS && size - pos >= 2; i++) {
		size_t len = (size_t)data[pos] << 8 | data[pos + 1], n;
		uint8_t *rec, type = 0, want_type = 0, *plain = NULL;
		uint64_t seq = rl->rd.seq;
		int r, want;

		pos += 2;
		if (len > size - pos)
			len = size - pos;
		if (len > SP_RL_MAX_CIPHER) /* keeps the header's length field meaningful */
			len = SP_RL_MAX_CIPHER;
		want = model(data + pos, len, &want_type);
		rec = malloc(len + 5 + 16);
		if (!rec)
			break;
		n = seal_inner(suite, &client, data + pos, len, rec);
		r = sp_rl_open(rl, cx, rec, n, &type, &plain);
		check_open(r, rl, seq, rec, n, type, plain);
		if (r != want)
			fail("sp_rl_open disagrees with the model");
		if (r >= 0 && type != want_type)
			fail("sp_rl_open disagrees with the model on the type");
		if (r > 0 && memcmp(plain, data + pos, (size_t)r) != 0)
			fail("plaintext differs from what was sealed");
		free(rec);
		pos += len;
		if (r == -SP_RL_ERR_DECODE || r == -SP_RL_ERR_OVERFLOW)
			break; /* refused before decryption: the sequence numbers part ways */
		client.wr.seq++;
		if (rl->rd.seq != client.wr.seq)
			fail("an authentic record did not consume exactly its sequence number");
	}
	sp_rl_wipe(&client);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint16_t suites[3] = {0x1301, 0x1302, 0x1303};
	uint16_t suite;
	sp_rl_t rl;

	if (!cx && !(cx = sp_rl_crypto_new()))
		fail("sp_rl_crypto_new");
	if (size < 2)
		return 0;
	suite = suites[data[0] % 3];
	if (sp_rl_init(&rl, cx, suite, client_secret, server_secret, hash_len_of(suite), 0, 0))
		fail("sp_rl_init");
	if (data[1] & 1)
		run_sealed(suite, &rl, data + 2, size - 2);
	else
		run_wire(&rl, data + 2, size - 2);
	sp_rl_wipe(&rl);
	return 0;
}
