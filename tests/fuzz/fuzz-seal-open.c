/*
 * fuzz-seal-open.c: fuzz target for opening sealed envelopes (client/sp_seal, PROTOCOL.md
 * section 13) as a fixed recipient ("rcpt" of fuzz-seal.h) would on DELIVER.
 *
 * Input (fuzz-seal.h): mode, suite selector, msg_id, the recipient's clock, body.
 *   - mode 0 ("wire"): the body is the envelope, opened from an exact-size heap copy so that
 *     ASan sees any read past it. Mutations mostly die at the AEAD tag; the seeds are real
 *     envelopes (tests/fuzz/seed-seal-open.c) and their truncations and corruptions.
 *   - mode 1 ("sealed"): the body is an inner plaintext (13.4); the target seals it to the
 *     recipient with the fixed ephemeral key of fuzz-seal.h and opens that, so the fuzzer
 *     reaches everything after decryption: the content parser, the sender key check, the
 *     signature, the window, the replay cache, receipts.
 * Invariants checked (any broken one aborts): a refusal is a known error code and leaves the
 * result cleared; an accepted message has sender = SHA-256(sender SPKI), SPKI and payload inside
 * its own buffer, the envelope's suite and the DELIVER's msg_id, consistent flags and reply key,
 * a clock inside its window; once remembered it is a duplicate; a flipped ciphertext byte makes
 * it undecryptable; a requested receipt can be sealed; a receipt parses or is malformed.
 */
#include "fuzz-seal.h"
#include "sp_hpke.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_MAX_BODY (1u << 16)

static struct fz_dev rcpt;
static int verbose; /* FUZZ_SEAL_OPEN_VERBOSE=1: print each input's result (corpus upkeep) */

static void fail(const char *what)
{
	fprintf(stderr, "fuzz-seal-open: %s\n", what);
	abort();
}

static uint64_t get_be(const uint8_t *p, size_t n)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/* Mode 1: seals an inner plaintext to the recipient; returns a malloc'd envelope or NULL. */
static uint8_t *seal_inner(uint8_t sel, const uint8_t *msg_id, const uint8_t *inner, size_t len,
                           size_t *env_len)
{
	static const struct sp_hpke_suite suites[2] = {
	        {SP_HPKE_KEM_X25519_SHA256, SP_HPKE_KDF_HKDF_SHA256, SP_HPKE_AEAD_CHACHA20POLY1305},
	        {SP_HPKE_KEM_X25519_SHA256, SP_HPKE_KDF_HKDF_SHA256, SP_HPKE_AEAD_AES128GCM}};
	uint16_t suite =
	        (sel & 1) ? SP_SEAL_SUITE_X25519_AES128GCM : SP_SEAL_SUITE_X25519_CHACHA20POLY1305;
	size_t hl = (sel & 2) ? 39 : 35; /* version 2 names the key epoch */
	uint8_t aad[39 + 16], *env;
	struct sp_hpke_ctx c;

	env = malloc(hl + len + SP_HPKE_NT);
	if (env == NULL)
		return NULL;
	env[0] = (sel & 2) ? SP_SEAL_VERSION_EPOCH : SP_SEAL_VERSION;
	env[1] = (uint8_t)(suite >> 8);
	env[2] = (uint8_t)suite;
	if (sel & 2) {
		env[3] = env[4] = env[5] = 0;
		env[6] = FZ_RCPT_EPOCH;
	}
	if (sp_hpke_setup_base_s(&suites[sel & 1], rcpt.peer.pub, (const uint8_t *)FZ_INFO,
	                         strlen(FZ_INFO), fz_ikm_e, sizeof(fz_ikm_e) - 1, env + hl - 32, &c,
	                         NULL) != 0)
		fail("sp_hpke_setup_base_s");
	memcpy(aad, env, hl);
	memcpy(aad + hl, msg_id, 16);
	if (sp_hpke_seal(&c, aad, hl + 16, inner, len, env + hl) != 0)
		fail("sp_hpke_seal");
	sp_hpke_ctx_clear(&c);
	*env_len = hl + len + SP_HPKE_NT;
	return env;
}

static int inside(const uint8_t *p, size_t n, const uint8_t *buf, size_t buf_len)
{
	return p >= buf && n <= buf_len && (size_t)(p - buf) <= buf_len - n;
}

static void check_refusal(int r, const struct sp_seal_opened *o)
{
	static const struct sp_seal_opened zero;

	if (!(r <= SP_SEAL_ERR_MALFORMED && r >= SP_SEAL_ERR_KEY_EPOCH) && r != -ENOMEM)
		fail("unknown error code");

	if (r == SP_SEAL_ERR_CRYPTO)
		fail("OpenSSL failed on an input (should be a refusal by name)");
	if (memcmp(o, &zero, sizeof(zero)) != 0)
		fail("a refused message was not cleared");
}

static void check_accepted(const struct sp_seal_opened *o, struct sp_seal_replay *rp,
                           const uint8_t *msg_id, uint8_t *env, size_t env_len, uint64_t now)
{
	uint8_t token[32], rid[16] = {0xfe}, st, acked[16], *renv = NULL;
	struct sp_seal_opened again;
	size_t renv_len;

	if (!EVP_Digest(o->sender_spki, o->sender_spki_len, token, NULL, EVP_sha256(), NULL))
		fail("EVP_Digest");
	if (memcmp(token, o->sender, 32) != 0)
		fail("sender token is not SHA-256 of the sender SPKI");
	size_t enc_len = 0;

	if (sp_seal_suite_info(o->suite, &enc_len, NULL, NULL) != 0 || o->version != env[0] ||
	    o->buf_len !=
	            env_len - (o->version == SP_SEAL_VERSION_EPOCH ? 7 : 3) - enc_len - SP_HPKE_NT)
		fail("opened buffer is not the envelope's content");
	if (o->buf == NULL)
		fail("no opened buffer");
	if (o->version == SP_SEAL_VERSION_EPOCH
	            ? o->key_epoch != get_be(env + 3, 4)
	            : o->key_epoch != FZ_RCPT_EPOCH && o->key_epoch != FZ_RCPT_OLD_EPOCH)
		fail("opened with a key of another epoch than the envelope names");
	if ((!o->has_reply || o->version == SP_SEAL_VERSION) && o->reply.epoch != 0)
		fail("a reply epoch without a reply key, or in a version 1 envelope");
	if (!inside(o->sender_spki, o->sender_spki_len, o->buf, o->buf_len) ||
	    !inside(o->payload, o->payload_len, o->buf, o->buf_len))
		fail("SPKI or payload outside the opened buffer");
	if (o->suite != get_be(env + 1, 2) || memcmp(o->msg_id, msg_id, 16) != 0)
		fail("suite or msg_id differ from the envelope's");
	if ((o->flags & ~SP_SEAL_F_ALL) != 0 ||
	    ((o->flags & SP_SEAL_F_RECEIPT_WANTED) && !o->has_reply) ||
	    (!!(o->flags & SP_SEAL_F_REPLY_KEY) != !!o->has_reply))
		fail("flags and reply key disagree");
	if (o->has_reply && memcmp(o->reply.token, o->sender, 32) != 0)
		fail("reply token is not the sender's");
	if (now > o->window_end_ms || o->sent_at_ms > o->window_end_ms)
		fail("accepted outside its window");
	/* Remembered, the same message is a duplicate. */
	if (sp_seal_opened_remember(rp, o, now) != 0)
		fail("sp_seal_opened_remember");
	if (sp_seal_open(rcpt.s, rp, msg_id, env, env_len, now, &again) != SP_SEAL_ERR_DUPLICATE)
		fail("a remembered message was not a duplicate");
	/* Any ciphertext byte changed: undecryptable (the last byte is in the tag). */
	env[env_len - 1] ^= 0x01;
	if (sp_seal_open(rcpt.s, NULL, msg_id, env, env_len, now, &again) != SP_SEAL_ERR_DECRYPT)
		fail("a changed tag still decrypted");
	env[env_len - 1] ^= 0x01;
	if (o->flags & SP_SEAL_F_RECEIPT_WANTED) {
		if (sp_seal_receipt(rcpt.s, o, SP_SEAL_RECEIPT_RECEIVED, rid, now, 60, &renv,
		                    &renv_len) != 0)
			fail("cannot seal a requested receipt");
		free(renv);
	}
	if (o->flags & SP_SEAL_F_IS_RECEIPT) {
		int r = sp_seal_receipt_parse(o, acked, &st);

		if (r != 0 && r != SP_SEAL_ERR_MALFORMED)
			fail("receipt parse: unexpected error");
		if (r == 0 && o->payload_len != 17)
			fail("receipt parsed from a payload of the wrong length");
	} else if (sp_seal_receipt_parse(o, acked, &st) != SP_SEAL_ERR_NO_RECEIPT) {
		fail("a non-receipt parsed as a receipt");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	struct sp_seal_replay *rp = NULL;
	struct sp_seal_opened o;
	const uint8_t *msg_id, *body;
	uint8_t *env;
	size_t body_len, env_len;
	uint64_t now;
	int r;

	if (!ready) {
		if (fz_dev_load(&rcpt, fz_rcpt_sign_pem, fz_rcpt_seal_pem) != 0 ||
		    fz_rcpt_rotate(&rcpt) != 0)
			fail("cannot load the recipient");
		verbose = getenv("FUZZ_SEAL_OPEN_VERBOSE") != NULL;
		ready = 1;
	}
	if (size < FZ_HDR)
		return 0;
	msg_id = data + 2;
	now = get_be(data + 18, 8);
	body = data + FZ_HDR;
	body_len = size - FZ_HDR;
	if (body_len > FZ_MAX_BODY)
		return 0;
	if (data[0] & FZ_MODE_SEAL) {
		env = seal_inner(data[1], msg_id, body, body_len, &env_len);
	} else {
		env_len = body_len;
		env = malloc(env_len != 0 ? env_len : 1);
		if (env != NULL && env_len != 0)
			memcpy(env, body, env_len);
	}
	if (env == NULL || sp_seal_replay_new(8, &rp) != 0)
		fail("out of memory");
	r = sp_seal_open(rcpt.s, rp, msg_id, env, env_len, now, &o);
	if (verbose)
		fprintf(stderr, "mode %d, %zu-byte envelope: %s\n", data[0] & 1, env_len,
		        sp_seal_strerror(r));
	if (r != 0)
		check_refusal(r, &o);
	else
		check_accepted(&o, rp, msg_id, env, env_len, now);
	sp_seal_opened_clear(&o);
	sp_seal_replay_free(rp);
	free(env);
	return 0;
}
