/*
 * sp_record.c: TLS 1.3 record protection after the handshake, with OpenSSL primitives only
 * (EVP AEAD for the records, EVP_KDF HKDF for the key schedule). See sp_record.h.
 *
 * Per record: nonce = iv XOR the left-padded 64-bit sequence number (RFC 8446 5.3); AAD = the
 * 5-byte header of the ciphertext record (5.2). The worker's one EVP_CIPHER_CTX is
 * re-initialised with key and nonce for every record. It is given the cipher only when it
 * changes (cx->loaded): in OpenSSL 3.0, EVP_CipherInit_ex2() with a cipher on a context that
 * already has one resets the context, which frees and reallocates the provider's algorithm
 * context, while a NULL cipher keeps it and only sets key and IV.
 */
#include "sp_record.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sp_transport.h"

#define TAG_LEN 16
#define IV_LEN  12

struct sp_rl_crypto {
	EVP_CIPHER_CTX *aead;
	const EVP_CIPHER *loaded; /* the cipher aead holds an algorithm context for, or NULL */
	EVP_CIPHER *aes128gcm, *aes256gcm, *chacha20poly1305;
	EVP_MD *sha256, *sha384;
	EVP_KDF *hkdf;
	EVP_KDF_CTX *kdf;
};

sp_rl_crypto_t *sp_rl_crypto_new(void)
{
	sp_rl_crypto_t *cx = calloc(1, sizeof(*cx));

	if (!cx)
		return NULL;
	cx->aead = EVP_CIPHER_CTX_new();
	cx->aes128gcm = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
	cx->aes256gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	cx->chacha20poly1305 = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
	cx->sha256 = EVP_MD_fetch(NULL, "SHA2-256", NULL);
	cx->sha384 = EVP_MD_fetch(NULL, "SHA2-384", NULL);
	cx->hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	cx->kdf = cx->hkdf ? EVP_KDF_CTX_new(cx->hkdf) : NULL;
	if (!cx->aead || !cx->aes128gcm || !cx->aes256gcm || !cx->chacha20poly1305 || !cx->sha256 ||
	    !cx->sha384 || !cx->hkdf || !cx->kdf) {
		sp_rl_crypto_free(cx);
		return NULL;
	}
	return cx;
}

void sp_rl_crypto_free(sp_rl_crypto_t *cx)
{
	if (!cx)
		return;
	EVP_CIPHER_CTX_free(cx->aead);
	EVP_CIPHER_free(cx->aes128gcm);
	EVP_CIPHER_free(cx->aes256gcm);
	EVP_CIPHER_free(cx->chacha20poly1305);
	EVP_MD_free(cx->sha256);
	EVP_MD_free(cx->sha384);
	EVP_KDF_CTX_free(cx->kdf);
	EVP_KDF_free(cx->hkdf);
	free(cx);
}

/* The suite's parameters; 0 for an unknown suite. */
static int suite_params(uint16_t suite, uint8_t *key_len, uint8_t *hash_len)
{
	switch (suite) {
	case 0x1301:
		*key_len = 16;
		*hash_len = 32;
		return 1;
	case 0x1302:
		*key_len = 32;
		*hash_len = 48;
		return 1;
	case 0x1303:
		*key_len = 32;
		*hash_len = 32;
		return 1;
	default:
		return 0;
	}
}

static const EVP_CIPHER *suite_cipher(const sp_rl_crypto_t *cx, uint16_t suite)
{
	switch (suite) {
	case 0x1301:
		return cx->aes128gcm;
	case 0x1302:
		return cx->aes256gcm;
	case 0x1303:
		return cx->chacha20poly1305;
	default:
		return NULL;
	}
}

static const EVP_MD *suite_md(const sp_rl_crypto_t *cx, uint16_t suite)
{
	return suite == 0x1302 ? cx->sha384 : cx->sha256;
}

/* HKDF-Expand-Label(secret, label, "", out_len) (RFC 8446 7.1). */
static int expand_label(sp_rl_crypto_t *cx, const EVP_MD *md, const uint8_t *secret,
                        size_t secret_len, const char *label, uint8_t *out, size_t out_len)
{
	/* struct { uint16 length; opaque label<7..255> = "tls13 " + label; opaque context<0..255>;
	 * } */
	uint8_t info[2 + 1 + 6 + 16 + 1];
	size_t label_len = strlen(label), n = 0;
	int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY, ok;
	OSSL_PARAM params[5];

	if (label_len > 16 || out_len > 255)
		return -SP_RL_ERR_INTERNAL;
	info[n++] = 0;
	info[n++] = (uint8_t)out_len;
	info[n++] = (uint8_t)(6 + label_len);
	memcpy(info + n, "tls13 ", 6);
	n += 6;
	memcpy(info + n, label, label_len);
	n += label_len;
	info[n++] = 0; /* empty context */
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
	                                             (char *)EVP_MD_get0_name(md), 0);
	params[1] =
	        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, secret_len);
	params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, n);
	params[3] = OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode);
	params[4] = OSSL_PARAM_construct_end();
	EVP_KDF_CTX_reset(cx->kdf);
	ok = EVP_KDF_derive(cx->kdf, out, out_len, params) == 1;
	EVP_KDF_CTX_reset(cx->kdf); /* drops (and cleanses) its copy of the secret */
	return ok ? 0 : -SP_RL_ERR_INTERNAL;
}

/* key and iv of d from d->secret (RFC 8446 7.3). */
static int dir_keys(const sp_rl_t *rl, sp_rl_crypto_t *cx, sp_rl_dir_t *d)
{
	const EVP_MD *md = suite_md(cx, rl->suite);

	if (expand_label(cx, md, d->secret, rl->hash_len, "key", d->key, rl->key_len) < 0 ||
	    expand_label(cx, md, d->secret, rl->hash_len, "iv", d->iv, IV_LEN) < 0)
		return -SP_RL_ERR_INTERNAL;
	return 0;
}

void sp_rl_wipe(sp_rl_t *rl)
{
	if (rl)
		OPENSSL_cleanse(rl, sizeof(*rl));
}

int sp_rl_init(sp_rl_t *rl, sp_rl_crypto_t *cx, uint16_t suite, const uint8_t *client_secret,
               const uint8_t *server_secret, size_t secret_len, uint64_t rd_seq, uint64_t wr_seq)
{
	uint8_t key_len, hash_len;

	if (!rl)
		return -SP_RL_ERR_INTERNAL;
	sp_rl_wipe(rl);
	if (!cx || !client_secret || !server_secret || !suite_params(suite, &key_len, &hash_len) ||
	    secret_len != hash_len)
		return -SP_RL_ERR_INTERNAL;
	rl->suite = suite;
	rl->key_len = key_len;
	rl->hash_len = hash_len;
	memcpy(rl->rd.secret, client_secret, secret_len);
	memcpy(rl->wr.secret, server_secret, secret_len);
	rl->rd.seq = rd_seq;
	rl->wr.seq = wr_seq;
	if (dir_keys(rl, cx, &rl->rd) < 0 || dir_keys(rl, cx, &rl->wr) < 0) {
		sp_rl_wipe(rl);
		return -SP_RL_ERR_INTERNAL;
	}
	return 0;
}

int sp_rl_update(sp_rl_t *rl, sp_rl_crypto_t *cx, int dir)
{
	uint8_t next[48];
	sp_rl_dir_t *d;

	if (!rl || !cx || (dir != SP_RL_READ && dir != SP_RL_WRITE) || !suite_cipher(cx, rl->suite))
		return -SP_RL_ERR_INTERNAL;
	d = dir == SP_RL_READ ? &rl->rd : &rl->wr;
	if (expand_label(cx, suite_md(cx, rl->suite), d->secret, rl->hash_len, "traffic upd", next,
	                 rl->hash_len) < 0)
		goto fail;
	memcpy(d->secret, next, rl->hash_len);
	OPENSSL_cleanse(next, sizeof(next));
	d->seq = 0;
	if (dir_keys(rl, cx, d) < 0)
		goto fail;
	return 0;
fail:
	OPENSSL_cleanse(next, sizeof(next));
	sp_rl_wipe(rl);
	return -SP_RL_ERR_INTERNAL;
}

int sp_rl_write_needs_update(const sp_rl_t *rl)
{
	return rl && rl->wr.seq >= SP_RL_WRITE_UPDATE_AFTER;
}

int sp_rl_record_len(const uint8_t *p, size_t len)
{
	size_t body;

	if (len < SP_RL_HEADER)
		return 0;
	if (p[0] != SP_RL_CT_APPDATA)
		return -SP_RL_ERR_UNEXPECTED;
	if (p[1] != 0x03 || p[2] != 0x03)
		return -SP_RL_ERR_DECODE;
	body = (size_t)p[3] << 8 | p[4];
	if (body > SP_RL_MAX_CIPHER)
		return -SP_RL_ERR_OVERFLOW;
	if (body < 1 + TAG_LEN)
		return -SP_RL_ERR_DECODE;
	return (int)(SP_RL_HEADER + body);
}

static void make_nonce(const sp_rl_dir_t *d, uint8_t nonce[IV_LEN])
{
	memcpy(nonce, d->iv, IV_LEN);
	for (int i = 0; i < 8; i++)
		nonce[IV_LEN - 1 - i] ^= (uint8_t)(d->seq >> (8 * i));
}

/* Sets cx->aead up for one record: the cipher only when it changes, then key and nonce. */
static int aead_begin(sp_rl_crypto_t *cx, const EVP_CIPHER *cipher, const uint8_t *key,
                      const uint8_t *nonce, int enc)
{
	if (EVP_CipherInit_ex2(cx->aead, cx->loaded == cipher ? NULL : cipher, key, nonce, enc,
	                       NULL) != 1) {
		cx->loaded = NULL; /* start from a fresh algorithm context next time */
		return -SP_RL_ERR_INTERNAL;
	}
	cx->loaded = cipher;
	return 0;
}

int sp_rl_open(sp_rl_t *rl, sp_rl_crypto_t *cx, uint8_t *rec, size_t rec_len, uint8_t *type,
               uint8_t **plain)
{
	const EVP_CIPHER *cipher;
	uint8_t nonce[IV_LEN], *body;
	size_t inner_len;
	int r, outl = 0, finl = 0;

	if (!rl || !cx || !rec || !type || !plain)
		return -SP_RL_ERR_INTERNAL;
	body = rec + SP_RL_HEADER;
	r = sp_rl_record_len(rec, rec_len);
	if (r < 0)
		return r;
	if (r == 0 || (size_t)r != rec_len)
		return -SP_RL_ERR_DECODE;
	inner_len = rec_len - SP_RL_HEADER - TAG_LEN;
	if (inner_len > SP_RL_MAX_PLAIN + 1)
		return -SP_RL_ERR_OVERFLOW;
	cipher = suite_cipher(cx, rl->suite);
	if (!cipher || rl->rd.seq == UINT64_MAX)
		return -SP_RL_ERR_INTERNAL;
	make_nonce(&rl->rd, nonce);
	if (aead_begin(cx, cipher, rl->rd.key, nonce, 0) < 0)
		return -SP_RL_ERR_INTERNAL;
	if (EVP_CipherUpdate(cx->aead, NULL, &outl, rec, SP_RL_HEADER) != 1 ||
	    EVP_CipherUpdate(cx->aead, body, &outl, body, (int)inner_len) != 1 ||
	    (size_t)outl > inner_len ||
	    EVP_CIPHER_CTX_ctrl(cx->aead, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, body + inner_len) != 1) {
		cx->loaded = NULL;
		return -SP_RL_ERR_INTERNAL;
	}
	if (EVP_CipherFinal_ex(cx->aead, body + outl, &finl) != 1 ||
	    (size_t)outl + (size_t)finl != inner_len) {
		OPENSSL_cleanse(body, inner_len); /* never leave unauthenticated plaintext around */
		return -SP_RL_ERR_DECRYPT;
	}
	rl->rd.seq++;
	/* RFC 8446 5.4: the content type is the last non-zero byte. */
	while (inner_len > 0 && body[inner_len - 1] == 0)
		inner_len--;
	if (inner_len == 0)
		return -SP_RL_ERR_UNEXPECTED;
	*type = body[inner_len - 1];
	inner_len--;
	switch (*type) {
	case SP_RL_CT_APPDATA:
		break;
	case SP_RL_CT_ALERT:
	case SP_RL_CT_HANDSHAKE:
		if (inner_len == 0) /* RFC 8446 5.1: no zero-length handshake or alert fragments */
			return -SP_RL_ERR_UNEXPECTED;
		break;
	default:
		return -SP_RL_ERR_UNEXPECTED;
	}
	*plain = body;
	return (int)inner_len;
}

int sp_rl_seal(sp_rl_t *rl, sp_rl_crypto_t *cx, uint8_t type, const uint8_t *in, size_t len,
               uint8_t *out, size_t cap)
{
	const EVP_CIPHER *cipher;
	uint8_t nonce[IV_LEN], *body;
	size_t inner_len = len + 1, body_len = len + 1 + TAG_LEN;
	int outl = 0, finl = 0;

	if (!rl || !cx || !out || (len > 0 && !in))
		return -SP_RL_ERR_INTERNAL;
	if (len > SP_RL_MAX_PLAIN)
		return -SP_RL_ERR_OVERFLOW;
	cipher = suite_cipher(cx, rl->suite);
	if (cap < len + SP_RL_OVERHEAD || type == 0 || !cipher || rl->wr.seq == UINT64_MAX)
		return -SP_RL_ERR_INTERNAL;
	body = out + SP_RL_HEADER;
	if (len > 0)
		memmove(body, in, len);
	body[len] = type;
	out[0] = SP_RL_CT_APPDATA;
	out[1] = 0x03;
	out[2] = 0x03;
	out[3] = (uint8_t)(body_len >> 8);
	out[4] = (uint8_t)body_len;
	make_nonce(&rl->wr, nonce);
	if (aead_begin(cx, cipher, rl->wr.key, nonce, 1) < 0)
		return -SP_RL_ERR_INTERNAL;
	if (EVP_CipherUpdate(cx->aead, NULL, &outl, out, SP_RL_HEADER) != 1 ||
	    EVP_CipherUpdate(cx->aead, body, &outl, body, (int)inner_len) != 1 ||
	    (size_t)outl > inner_len || EVP_CipherFinal_ex(cx->aead, body + outl, &finl) != 1 ||
	    (size_t)outl + (size_t)finl != inner_len ||
	    EVP_CIPHER_CTX_ctrl(cx->aead, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, body + inner_len) != 1) {
		cx->loaded = NULL;
		return -SP_RL_ERR_INTERNAL;
	}
	rl->wr.seq++;
	return (int)(SP_RL_HEADER + body_len);
}

/* ---- the record transport (sp_transport.h) ------------------------------------------------ */

/* A fatal record-layer error: the alert that goes with it, best effort, and no more. */
static int rl_fatal(sp_tio_t *t, int err)
{
	static const uint8_t alert_of[] = {
	        [SP_RL_ERR_DECODE] = 50,     /* decode_error */
	        [SP_RL_ERR_DECRYPT] = 20,    /* bad_record_mac */
	        [SP_RL_ERR_UNEXPECTED] = 10, /* unexpected_message */
	        [SP_RL_ERR_OVERFLOW] = 22,   /* record_overflow */
	        [SP_RL_ERR_INTERNAL] = 80,   /* internal_error */
	};
	unsigned e = (unsigned)-err;
	uint8_t alert[2] = {2, e < sizeof(alert_of) && alert_of[e] ? alert_of[e] : 80};
	uint8_t rec[2 + SP_RL_OVERHEAD];
	int n = sp_rl_seal(&t->rl, t->env->rlcx, SP_RL_CT_ALERT, alert, 2, rec, sizeof(rec));

	if (n > 0 && t->wpend_off == t->wpend_len) {
		ssize_t r = write(t->fd, rec, (size_t)n); /* best effort, then gone */

		(void)r;
	}
	t->flags |= SP_TIO_DEAD;
	return SP_IO_PROTOCOL;
}

/* The socket broke (reset, EOF without close_notify): nothing more may be sent. */
static int rl_broken(sp_tio_t *t)
{
	t->flags |= SP_TIO_DEAD;
	return SP_IO_BROKEN;
}

/* A handshake message after the handshake: only KeyUpdate (RFC 8446 4.6.3) is allowed. */
static int rl_handshake(sp_tio_t *t, const uint8_t *p, size_t n)
{
	if (n != 5 || p[0] != 24 || p[1] != 0 || p[2] != 0 || p[3] != 1 || p[4] > 1)
		return -SP_RL_ERR_UNEXPECTED;
	if (sp_rl_update(&t->rl, t->env->rlcx, SP_RL_READ) < 0)
		return -SP_RL_ERR_INTERNAL;
	if (p[4] == 1)
		t->flags |= SP_TIO_KEY_UPDATE; /* the caller sees the flag and flushes */
	return 0;
}

/* What one record asks of the read loop: go on, stop (the input function wants no more), the
 * peer's close_notify, the peer's fatal alert; or a negative record error. */
enum { RL_GO = 0, RL_STOP = 1, RL_CLOSED = 2, RL_BROKEN = 3 };

/* Opens and dispatches the complete record rec[0..len). Returns RL_* or a negative error. */
static int rl_record(sp_tio_t *t, uint8_t *rec, size_t len, sp_tio_input_fn *input, void *arg)
{
	uint8_t type, *plain;
	int n = sp_rl_open(&t->rl, t->env->rlcx, rec, len, &type, &plain);

	if (n < 0)
		return n;
	switch (type) {
	case SP_RL_CT_APPDATA:
		return input(arg, plain, (size_t)n) ? RL_GO : RL_STOP;
	case SP_RL_CT_HANDSHAKE:
		return rl_handshake(t, plain, (size_t)n);
	case SP_RL_CT_ALERT:
		if (n != 2)
			return -SP_RL_ERR_DECODE;
		if (plain[1] == 0) /* close_notify: answered with ours once our output is out */
			return RL_CLOSED;
		if (plain[1] == 90) /* user_canceled: a warning, close_notify follows */
			return RL_GO;
		t->flags |= SP_TIO_DEAD; /* a fatal alert from the peer */
		return RL_BROKEN;
	default:
		return -SP_RL_ERR_UNEXPECTED;
	}
}

/* The read result for a record that stopped the loop. */
static int rl_outcome(sp_tio_t *t, int r)
{
	switch (r) {
	case RL_STOP:
		return SP_IO_WANT_READ;
	case RL_CLOSED:
		return SP_IO_CLOSED;
	case RL_BROKEN:
		return SP_IO_BROKEN;
	default:
		return rl_fatal(t, r);
	}
}

static int rl_read(sp_tio_t *t, sp_tio_input_fn *input, void *arg)
{
	const sp_tio_env_t *env = t->env;

	for (unsigned i = 0; i < env->reads_per_call; i++) {
		uint8_t *p = env->scratch;
		size_t have, want = env->scratch_len;
		ssize_t n;
		int r;

		if (t->rin) {
			/* Finish the partial record first, reading no more than it needs. */
			int total = sp_rl_record_len(t->rin, t->rin_len);

			want = total > 0 ? (size_t)total - t->rin_len : SP_RL_HEADER - t->rin_len;
			p = t->rin + t->rin_len;
		}
		n = read(t->fd, p, want);
		if (n == 0)
			return rl_broken(t); /* EOF without close_notify */
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				return SP_IO_WANT_READ;
			return rl_broken(t);
		}
		if (t->rin) {
			int total;

			t->rin_len += (uint32_t)n;
			total = sp_rl_record_len(t->rin, t->rin_len);
			if (total < 0)
				return rl_fatal(t, total);
			if (total == 0 || t->rin_len < (uint32_t)total)
				continue;
			r = rl_record(t, t->rin, (size_t)total, input, arg);
			free(t->rin);
			t->rin = NULL;
			t->rin_len = 0;
			if (r != RL_GO)
				return rl_outcome(t, r);
			continue;
		}
		/* Whole records in the scratch buffer are opened in place. */
		have = (size_t)n;
		while (have > 0) {
			int total = sp_rl_record_len(p, have);

			if (total < 0)
				return rl_fatal(t, total);
			if (total == 0 || (size_t)total > have) {
				t->rin = malloc(SP_RL_MAX_RECORD);
				if (!t->rin)
					return rl_fatal(t, -SP_RL_ERR_INTERNAL);
				memcpy(t->rin, p, have);
				t->rin_len = (uint32_t)have;
				break;
			}
			r = rl_record(t, p, (size_t)total, input, arg);
			if (r != RL_GO)
				return rl_outcome(t, r);
			p += total;
			have -= (size_t)total;
		}
		if ((size_t)n < want)
			return SP_IO_WANT_READ; /* the socket is drained */
	}
	return SP_IO_AGAIN; /* out of budget: come back later */
}

/* Writes what the socket takes; keeps the rest in wpend. Returns 1 if all went, 0 if the
 * socket is full, -1 if the connection broke. */
static int rl_send(sp_tio_t *t, const uint8_t *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(t->fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				return -1;
			break;
		}
		p += n;
		len -= (size_t)n;
	}
	if (len == 0)
		return 1;
	if (t->wpend != p) {
		uint8_t *keep = malloc(len);

		if (!keep)
			return -1;
		memcpy(keep, p, len);
		free(t->wpend);
		t->wpend = keep;
		t->wpend_off = 0;
		t->wpend_len = (uint32_t)len;
	}
	return 0;
}

/* Writes the sealed bytes the socket did not take last time. Returns 1 when none are left, 0
 * if the socket is full, -1 if the connection broke. */
static int rl_send_pending(sp_tio_t *t)
{
	while (t->wpend_off < t->wpend_len) {
		ssize_t n = write(t->fd, t->wpend + t->wpend_off, t->wpend_len - t->wpend_off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n < 0)
			return -1;
		t->wpend_off += (uint32_t)n;
	}
	free(t->wpend);
	t->wpend = NULL;
	t->wpend_off = t->wpend_len = 0;
	return 1;
}

static int rl_write(sp_tio_t *t, const uint8_t *p, size_t len, size_t *taken)
{
	const sp_tio_env_t *env = t->env;

	*taken = 0;
	for (;;) {
		size_t blen = 0;
		int r;

		if (t->wpend && (r = rl_send_pending(t)) <= 0)
			return r < 0 ? rl_broken(t) : SP_IO_WANT_WRITE;
		if (sp_rl_write_needs_update(&t->rl)) /* AEAD usage limits, RFC 8446 5.5 */
			t->flags |= SP_TIO_KEY_UPDATE;
		if (*taken == len && !(t->flags & SP_TIO_KEY_UPDATE))
			return SP_IO_DONE;
		/* Seal as many records as fit the worker's buffer, then one write. */
		while (blen + SP_RL_MAX_PLAIN + SP_RL_OVERHEAD <= env->seal_len) {
			if (t->flags & SP_TIO_KEY_UPDATE) {
				/* Ours goes before the next application data (RFC 8446 4.6.3:
				 * a peer that asked for it gets it first); what was sealed
				 * before it is on the socket already, under the old key. */
				const uint8_t ku[5] = {24, 0, 0, 1, 0};

				r = sp_rl_seal(&t->rl, env->rlcx, SP_RL_CT_HANDSHAKE, ku,
				               sizeof(ku), env->seal + blen, env->seal_len - blen);
				if (r < 0 || sp_rl_update(&t->rl, env->rlcx, SP_RL_WRITE) < 0)
					return rl_fatal(t, -SP_RL_ERR_INTERNAL);
				blen += (size_t)r;
				t->flags &= (uint8_t)~SP_TIO_KEY_UPDATE;
			} else if (*taken < len) {
				size_t chunk = len - *taken;

				if (chunk > SP_RL_MAX_PLAIN)
					chunk = SP_RL_MAX_PLAIN;
				r = sp_rl_seal(&t->rl, env->rlcx, SP_RL_CT_APPDATA, p + *taken,
				               chunk, env->seal + blen, env->seal_len - blen);
				if (r < 0)
					return rl_fatal(t, -SP_RL_ERR_INTERNAL);
				blen += (size_t)r;
				*taken += chunk;
			} else {
				break;
			}
		}
		r = rl_send(t, env->seal, blen);
		if (r < 0)
			return rl_broken(t);
		if (r == 0)
			return SP_IO_WANT_WRITE;
	}
}

/* close_notify, once, without waiting: the socket is closed right after. */
static void rl_shutdown(sp_tio_t *t)
{
	const uint8_t alert[2] = {1, 0};
	uint8_t rec[2 + SP_RL_OVERHEAD];
	int n;

	if (t->wpend || (t->flags & SP_TIO_DEAD))
		return; /* it would land in the middle of a record, or may not be sent */
	n = sp_rl_seal(&t->rl, t->env->rlcx, SP_RL_CT_ALERT, alert, 2, rec, sizeof(rec));
	if (n > 0) {
		ssize_t r = write(t->fd, rec, (size_t)n);

		(void)r;
	}
}

static void rl_free(sp_tio_t *t)
{
	sp_rl_wipe(&t->rl);
	free(t->rin);
	free(t->wpend);
	t->rin = t->wpend = NULL;
	t->rin_len = t->wpend_off = t->wpend_len = 0;
}

const sp_transport_t sp_record_transport = {
        .name = "record",
        .handshake = NULL, /* never: a record transport starts after the handshake */
        .read = rl_read,
        .write = rl_write,
        .shutdown = rl_shutdown,
        .free = rl_free,
};
