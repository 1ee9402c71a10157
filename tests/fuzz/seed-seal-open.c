/*
 * seed-seal-open.c: writes the seed corpus of fuzz-seal-open (inputs as fuzz-seal.h lays them
 * out) into the directory named on the command line, one file per input named by the SHA-1 of
 * its content (so running it again adds only new files, next to what the fuzzer found):
 *
 *	build/sanitize/tests/fuzz/seed-seal-open tests/fuzz/corpus/seal-open
 *
 * Mode 0 seeds are real envelopes made with sp_seal() by the fixed test identities of
 * fuzz-seal.h (both suites, reply key, receipt request, a receipt, empty and large payloads,
 * another sender, misdirected, sealed to another key), plus truncations, corruptions and clocks
 * outside the window. Mode 1 seeds are inner plaintexts signed the way sp_seal() signs them, for
 * the enc the target's fixed ephemeral key gives, valid and broken in one field each.
 * The recipient has rotated (fuzz-seal.h): envelopes of version 1 (no epoch) and version 2
 * (its current epoch, its earlier one, an erased one, a newer one) are both written, and, where
 * the build has the hybrid suite, hybrid (0x0101) envelopes of both versions too (run it in a
 * Debian 13 build for those).
 * ECDSA signatures are randomized, so each run writes new files; commit one run's.
 */
#include "fuzz-seal.h"
#include "sp_hpke.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

static const char *dir;
static unsigned written;
static struct fz_dev rcpt, sender, other;

static void die(const char *what)
{
	fprintf(stderr, "seed-seal-open: %s\n", what);
	exit(1);
}

static uint8_t *put_be(uint8_t *p, uint64_t v, int n)
{
	for (int i = n - 1; i >= 0; i--)
		*p++ = (uint8_t)(v >> (8 * i));
	return p;
}

static uint8_t *put(uint8_t *p, const void *b, size_t n)
{
	if (n > 0)
		memcpy(p, b, n);
	return p + n;
}

/* Writes one input: header (mode, suite selector, msg_id, clock) and body. */
static void emit(uint8_t mode, uint8_t sel, const uint8_t *msg_id, uint64_t now,
                 const uint8_t *body, size_t len)
{
	uint8_t *in = malloc(FZ_HDR + len), md[20];
	char path[4096];
	FILE *fp;
	int n;

	if (in == NULL)
		die("out of memory");
	in[0] = mode;
	in[1] = sel;
	memcpy(in + 2, msg_id, 16);
	put_be(in + 18, now, 8);
	put(in + FZ_HDR, body, len);
	if (!EVP_Digest(in, FZ_HDR + len, md, NULL, EVP_sha1(), NULL))
		die("EVP_Digest");
	n = snprintf(path, sizeof(path), "%s/", dir);
	for (int i = 0; i < 20; i++)
		n += snprintf(path + n, sizeof(path) - (size_t)n, "%02x", md[i]);
	fp = fopen(path, "wb");
	if (fp == NULL || fwrite(in, 1, FZ_HDR + len, fp) != FZ_HDR + len || fclose(fp) != 0)
		die(path);
	written++;
	free(in);
}

static const uint8_t mid[16] = {0x5e, 0xed, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05,
                                0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d};

/* Seals with sp_seal() and writes the envelope, its truncations and corruptions. */
static void wire(struct fz_dev *from, const struct sp_seal_peer *to, uint8_t flags,
                 const uint8_t *payload, size_t len, int variants)
{
	struct sp_seal_msg m = {mid, FZ_T0, 600, flags, payload, len, NULL};
	uint8_t *env, other_mid[16];
	size_t env_len;

	if (sp_seal(from->s, to, &m, &env, &env_len) != 0)
		die("sp_seal");
	emit(FZ_MODE_WIRE, 0, mid, FZ_T0, env, env_len);
	if (variants) {
		static const size_t cuts[] = {0, 1, 3, 34, 35, 50, 86};

		for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++)
			emit(FZ_MODE_WIRE, 0, mid, FZ_T0, env, cuts[i]);
		emit(FZ_MODE_WIRE, 0, mid, FZ_T0, env, env_len - 1);
		/* Clocks: long after the window, and before sent_at minus the skew. */
		emit(FZ_MODE_WIRE, 0, mid, FZ_T0 + 3600u * 1000, env, env_len);
		emit(FZ_MODE_WIRE, 0, mid, FZ_T0 - 3600u * 1000, env, env_len);
		/* Another msg_id (the AAD): undecryptable. */
		memcpy(other_mid, mid, 16);
		other_mid[15] ^= 1;
		emit(FZ_MODE_WIRE, 0, other_mid, FZ_T0, env, env_len);
		/* Version, suite, enc and a ciphertext byte changed. */
		env[0] = 2;
		emit(FZ_MODE_WIRE, 0, mid, FZ_T0, env, env_len);
		env[0] = 1;
		env[2] ^= 3;
		emit(FZ_MODE_WIRE, 0, mid, FZ_T0, env, env_len);
		env[2] ^= 3;
		env[10] ^= 0x80;
		emit(FZ_MODE_WIRE, 0, mid, FZ_T0, env, env_len);
		env[10] ^= 0x80;
		env[40] ^= 0x01;
		emit(FZ_MODE_WIRE, 0, mid, FZ_T0, env, env_len);
		/* enc = 0: a low-order point. */
		memset(env + 3, 0, 32);
		emit(FZ_MODE_WIRE, 0, mid, FZ_T0, env, env_len);
	}
	free(env);
}

/* The fields of an inner plaintext for mode 1. */
struct inner {
	uint8_t version; /* 0 or 1: version 1; 2: version 2, naming FZ_RCPT_EPOCH */
	uint16_t suite;
	uint8_t flags;
	uint64_t sent_at;
	uint32_t ttl;
	const uint8_t *recipient;
	const uint8_t *spki;
	size_t spki_len;
	const struct sp_seal_peer *reply;
	const uint8_t *payload;
	size_t payload_len;
	int64_t payload_len_delta; /* added to the length field only */
	EVP_PKEY *signer;
	int sig_len_zero;
	size_t pad;
	uint8_t pad_byte;
};

/* The sender's signature over the transcript of 13.5 for the fixed enc of the suite. */
static size_t sign(const struct inner *in, const uint8_t *enc, uint8_t *sig)
{
	uint8_t tr[8192], sender_tok[32], *t = tr;
	size_t sig_len = 80;
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	EVP_Digest(in->spki, in->spki_len, sender_tok, NULL, EVP_sha256(), NULL);
	t = put(t, "sealpush/1 signed message", 26);
	*t++ = in->version == 2 ? SP_SEAL_VERSION_EPOCH : SP_SEAL_VERSION;
	t = put_be(t, in->suite, 2);
	if (in->version == 2)
		t = put_be(t, FZ_RCPT_EPOCH, 4);
	t = put(t, enc, 32);
	t = put(t, mid, 16);
	t = put(t, in->recipient, 32);
	t = put(t, sender_tok, 32);
	*t++ = in->flags;
	t = put_be(t, in->sent_at, 8);
	t = put_be(t, in->ttl, 4);
	if (in->reply != NULL) {
		t = put_be(t, in->reply->suite, 2);
		if (in->version == 2)
			t = put_be(t, in->reply->epoch, 4);
		t = put_be(t, in->reply->pub_len, 2);
		t = put(t, in->reply->pub, in->reply->pub_len);
	}
	t = put_be(t, in->payload_len, 4);
	t = put(t, in->payload, in->payload_len);
	if (md == NULL || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, in->signer) != 1 ||
	    EVP_DigestSign(md, sig, &sig_len, tr, (size_t)(t - tr)) != 1)
		die("sign");
	EVP_MD_CTX_free(md);
	return sig_len;
}

static void sealed(const struct inner *in)
{
	uint8_t buf[8192], sig[80], sk[32], enc[32], *q = buf;
	size_t sig_len;

	if (sp_hpke_derive_keypair(SP_HPKE_KEM_X25519_SHA256, fz_ikm_e, sizeof(fz_ikm_e) - 1, sk,
	                           enc) != 0)
		die("derive");
	sig_len = sign(in, enc, sig);
	*q++ = in->flags;
	q = put_be(q, in->sent_at, 8);
	q = put_be(q, in->ttl, 4);
	q = put(q, in->recipient, 32);
	q = put_be(q, in->spki_len, 2);
	q = put(q, in->spki, in->spki_len);
	if (in->reply != NULL) {
		q = put_be(q, in->reply->suite, 2);
		if (in->version == 2)
			q = put_be(q, in->reply->epoch, 4);
		q = put_be(q, in->reply->pub_len, 2);
		q = put(q, in->reply->pub, in->reply->pub_len);
	}
	q = put_be(q, (uint64_t)((int64_t)in->payload_len + in->payload_len_delta), 4);
	q = put(q, in->payload, in->payload_len);
	*q++ = in->sig_len_zero ? 0 : (uint8_t)sig_len;
	q = put(q, sig, sig_len);
	memset(q, in->pad_byte, in->pad);
	q += in->pad;
	emit(FZ_MODE_SEAL,
	     (uint8_t)((in->suite == SP_SEAL_SUITE_X25519_AES128GCM) | (in->version == 2) << 1),
	     mid, FZ_T0, buf, (size_t)(q - buf));
}

int main(int argc, char **argv)
{
	static uint8_t big[3000];
	static const uint8_t hello[] = "hello from the fuzz seeds";
	struct sp_seal_peer misdirected;
	struct sp_seal_opened o;
	struct inner base, in;
	uint8_t *env, rid[16] = {0x7e};
	size_t env_len, spki_len, other_spki_len;
	const uint8_t *spki, *other_spki;
	unsigned char *x_der = NULL;
	int x_len;

	if (argc != 2) {
		fprintf(stderr, "usage: seed-seal-open CORPUS-DIR\n");
		return 2;
	}
	dir = argv[1];
	if (fz_dev_load(&rcpt, fz_rcpt_sign_pem, fz_rcpt_seal_pem) != 0 ||
	    fz_rcpt_rotate(&rcpt) != 0 ||
	    fz_dev_load(&sender, fz_sender_sign_pem, fz_sender_seal_pem) != 0 ||
	    fz_dev_load(&other, fz_other_sign_pem, fz_other_seal_pem) != 0)
		die("cannot load the test identities");
	memset(big, 0x42, sizeof(big));

	/* Mode 0: envelopes of version 2 (13.11): to the current epoch (with variants), to the
	 * earlier one still held, to an erased one and a newer one, with a reply key carrying
	 * the sender's epoch. Then version 1 (rcpt's peer without its epoch) as before. */
	wire(&sender, &rcpt.peer, 0, hello, sizeof(hello), 1);
	{
		struct sp_seal_peer old = rcpt.peer;
		EVP_PKEY *k = fz_pem_key(fz_rcpt_old_seal_pem);
		size_t len = sizeof(old.pub);

		if (k == NULL || !EVP_PKEY_get_raw_public_key(k, old.pub, &len))
			die("the old key");
		EVP_PKEY_free(k);
		old.epoch = FZ_RCPT_OLD_EPOCH;
		wire(&sender, &old, SP_SEAL_F_RECEIPT_WANTED, hello, sizeof(hello), 0);
		old.epoch = FZ_RCPT_OLD_EPOCH - 1; /* erased */
		wire(&sender, &old, 0, hello, sizeof(hello), 0);
		old = rcpt.peer;
		old.epoch = FZ_RCPT_EPOCH + 1; /* newer than the recipient's */
		wire(&sender, &old, 0, hello, sizeof(hello), 0);
	}
	if (sp_sealer_set_epoch(sender.s, 9) != 0)
		die("set_epoch");
	sp_sealer_peer(sender.s, &sender.peer);
	wire(&sender, &rcpt.peer, SP_SEAL_F_RECEIPT_WANTED, big, 100, 0);
	/* The hybrid suite, both versions (only where the build has it). */
	if (sp_seal_suite_implemented(SP_SEAL_SUITE_HYBRID)) {
		struct sp_seal_peer h;

		if (sp_sealer_peer_suite(rcpt.s, SP_SEAL_SUITE_HYBRID, &h) != 0)
			die("hybrid peer");
		wire(&sender, &h, SP_SEAL_F_RECEIPT_WANTED, hello, sizeof(hello), 1);
		h.epoch = 0;
		wire(&sender, &h, 0, big, 1500, 0);
	}
	if (sp_sealer_set_epoch(sender.s, 0) != 0)
		die("set_epoch");
	sp_sealer_peer(sender.s, &sender.peer);
	rcpt.peer.epoch = 0;

	/* Mode 0: real envelopes of version 1. */
	wire(&sender, &rcpt.peer, 0, hello, sizeof(hello), 1);
	rcpt.peer.suite = SP_SEAL_SUITE_X25519_AES128GCM;
	wire(&sender, &rcpt.peer, SP_SEAL_F_RECEIPT_WANTED, big, 256, 1);
	rcpt.peer.suite = SP_SEAL_SUITE_X25519_CHACHA20POLY1305;
	wire(&sender, &rcpt.peer, SP_SEAL_F_REPLY_KEY, NULL, 0, 0);
	wire(&other, &rcpt.peer, 0, hello, sizeof(hello), 0);
	if (sp_sealer_set_pad(sender.s, 1) != 0)
		die("set_pad");
	wire(&sender, &rcpt.peer, 0, big, sizeof(big), 0);
	misdirected = rcpt.peer;
	memcpy(misdirected.token, other.peer.token, 32);
	wire(&sender, &misdirected, 0, hello, sizeof(hello), 0);
	wire(&sender, &other.peer, 0, hello, sizeof(hello), 0); /* not for rcpt's key */
	/* A receipt to rcpt: rcpt asks the sender for one, the sender opens and answers. */
	{
		struct sp_seal_msg m = {mid,   FZ_T0,         600, SP_SEAL_F_RECEIPT_WANTED,
		                        hello, sizeof(hello), NULL};

		if (sp_seal(rcpt.s, &sender.peer, &m, &env, &env_len) != 0 ||
		    sp_seal_open(sender.s, NULL, mid, env, env_len, FZ_T0, &o) != 0)
			die("receipt request");
		free(env);
		if (sp_seal_receipt(sender.s, &o, SP_SEAL_RECEIPT_READ, rid, FZ_T0, 600, &env,
		                    &env_len) != 0)
			die("sp_seal_receipt");
		emit(FZ_MODE_WIRE, 0, rid, FZ_T0, env, env_len);
		free(env);
		sp_seal_opened_clear(&o);
	}

	/* Mode 1: inner plaintexts, valid, then broken in one field each. */
	spki = sp_sealer_spki(sender.s, &spki_len);
	other_spki = sp_sealer_spki(other.s, &other_spki_len);
	base = (struct inner){
	        .suite = SP_SEAL_SUITE_X25519_CHACHA20POLY1305,
	        .sent_at = FZ_T0,
	        .ttl = 600,
	        .recipient = rcpt.peer.token,
	        .spki = spki,
	        .spki_len = spki_len,
	        .payload = hello,
	        .payload_len = sizeof(hello),
	        .signer = sender.sign,
	        .pad = 7,
	};
	sealed(&base);
	/* Version 2: valid, with a reply key carrying an epoch, and broken. */
	in = base;
	in.version = 2;
	sealed(&in);
	{
		struct sp_seal_peer rp = sender.peer;

		rp.epoch = 5;
		in.flags = SP_SEAL_F_RECEIPT_WANTED | SP_SEAL_F_REPLY_KEY;
		in.reply = &rp;
		sealed(&in);
		in.pad_byte = 0x01;
		sealed(&in);
		in.pad_byte = 0;
		in.payload_len_delta = 4;
		sealed(&in);
	}
	in = base;
	in.suite = SP_SEAL_SUITE_X25519_AES128GCM;
	in.flags = SP_SEAL_F_RECEIPT_WANTED | SP_SEAL_F_REPLY_KEY;
	in.reply = &sender.peer;
	sealed(&in);
	in = base;
	in.flags = SP_SEAL_F_IS_RECEIPT;
	in.payload = big;
	in.payload_len = 17;
	sealed(&in);
	in.payload_len = 16; /* a receipt of the wrong length */
	sealed(&in);
	in = base;
	in.ttl = 0;
	in.payload_len = 0;
	in.pad = 0;
	sealed(&in);
	in = base;
	in.flags = 0x80; /* unknown flag */
	sealed(&in);
	in = base;
	in.flags = SP_SEAL_F_RECEIPT_WANTED; /* without the reply key */
	sealed(&in);
	in = base;
	in.payload_len_delta = 1000; /* length past the end */
	sealed(&in);
	in = base;
	in.payload_len_delta = -1;
	sealed(&in);
	in = base;
	in.pad_byte = 0x01; /* nonzero padding */
	sealed(&in);
	in = base;
	in.sig_len_zero = 1;
	sealed(&in);
	in = base;
	in.signer = other.sign; /* claims to be the sender, signed by another key */
	sealed(&in);
	in = base;
	in.spki = other_spki;
	in.spki_len = other_spki_len;
	in.signer = other.sign;
	sealed(&in);
	in = base;
	in.recipient = other.peer.token;
	sealed(&in);
	in = base;
	x_len = i2d_PUBKEY(other.seal, &x_der); /* an X25519 key as the sender key */
	if (x_len <= 0)
		die("i2d_PUBKEY");
	in.spki = x_der;
	in.spki_len = (size_t)x_len;
	sealed(&in);
	OPENSSL_free(x_der);
	in = base;
	in.sent_at = FZ_T0 + 3600u * 1000; /* from the future */
	sealed(&in);

	fz_dev_free(&rcpt);
	fz_dev_free(&sender);
	fz_dev_free(&other);
	printf("%u inputs written to %s\n", written, dir);
	return 0;
}
