/*
 * Unit tests for the server transport interface (server/sp_transport.h) and its two
 * implementations, sp_tls_transport (sp_tls.c) and sp_record_transport (sp_record.c).
 *
 * The server is a real sp_server_t TLS context (sp_tls_start with tls_cert, tls_key and
 * client_ca from a throwaway PKI, tpki.h) and an env like a worker's (scratch and seal
 * buffers of the worker's sizes, sp_rl_crypto_new, 16 reads per call). Each case makes an
 * AF_UNIX socketpair: the server end is an sp_tio_t from sp_tio_accept driven like sp_conn.c
 * drives it, the client end a plain OpenSSL client (TLS 1.3, ALPN "sealpush/1", the device
 * certificate), both non-blocking in this one thread.
 *
 * One table of cases runs against both implementations: after a default handshake the
 * connection is handed off to the record layer (t->tr is sp_record_transport), with
 * SP_TIO_NO_HANDOFF it stays on OpenSSL. Where the two promise different things (garbage on
 * the socket, what a read out of budget returns, whether a 0-byte write sends an owed
 * KeyUpdate), the implementation's row says what it does and the case asserts exactly that.
 * The client's message callback logs the KeyUpdates and inner content types it receives, so
 * the order of a KeyUpdate answer and the next data is checked too (RFC 8446 4.6.3).
 *
 * The handshake refusals run once (they happen before any hand-off): no client certificate,
 * no ALPN, a wrong ALPN, an unknown CA, a same-name impostor CA, an expired certificate,
 * TLS 1.2, bytes that are not TLS, an EOF before the ClientHello; each with its
 * sp_handshake_cause and, where there is a client, the alert it receives.
 */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sp_identity.h"
#include "sp_metrics.h"
#include "sp_test.h"
#include "sp_tls.h"
#include "sp_transport.h"
#include "sp_worker.h"
#include "tpki.h"

static struct tpki pki;
static sp_server_t srv;
static sp_tio_env_t env;

/* ---- the implementations under test ------------------------------------------------------- */

/* OpenSSL's own choice of alert for non-TLS bytes after the handshake changed in 3.5. */
#if OPENSSL_VERSION_NUMBER >= 0x30500000L
#define OPENSSL_GARBAGE_ALERT SSL_AD_UNEXPECTED_MESSAGE
#else
#define OPENSSL_GARBAGE_ALERT SSL_AD_PROTOCOL_VERSION
#endif

static const struct impl {
	const char *name;
	uint8_t flags;            /* tio flags before the handshake */
	const sp_transport_t *tr; /* the transport after it */
	bool handed_off;
	int garbage;       /* read() result for bytes that are not TLS records */
	int forged;        /* read() result for an application_data record that does not open */
	int budget;        /* read() result out of budget, the rest still in the socket only */
	uint8_t dead;      /* SP_TIO_DEAD after a broken or refused record: both promise it */
	int garbage_alert; /* the fatal alert the client gets for the garbage */
	bool ku_on_flush;  /* a write of 0 bytes sends an owed KeyUpdate (else the next data) */
} impls[] = {
        /* sp_record.c: a record-layer violation is PROTOCOL (an alert was sent); it reads the
         * socket in scratch-sized gulps, so a full gulp at the end of the budget is AGAIN. */
        {"handoff", 0, &sp_record_transport, true, SP_IO_PROTOCOL, SP_IO_PROTOCOL, SP_IO_AGAIN,
         SP_TIO_DEAD, SSL_AD_UNEXPECTED_MESSAGE, true},
        /* sp_tls.c: every OpenSSL error is BROKEN (tls_broken); SSL_read takes one record at a
         * time, and AGAIN only when plaintext is left inside OpenSSL: what is still in the
         * socket comes back with the next socket event, so it says WANT_READ. OpenSSL sends
         * the KeyUpdate it owes only from SSL_write, i.e. with the next data (before it, as
         * RFC 8446 4.6.3 asks), never for a write of 0 bytes. */
        {"openssl", SP_TIO_NO_HANDOFF, &sp_tls_transport, false, SP_IO_BROKEN, SP_IO_BROKEN,
         SP_IO_WANT_READ, SP_TIO_DEAD, OPENSSL_GARBAGE_ALERT, false},
};
static const struct impl *cur;

/* ---- the client --------------------------------------------------------------------------- */

enum client_kind {
	CLI_OK,
	CLI_NO_CERT,
	CLI_NO_ALPN,
	CLI_WRONG_ALPN,
	CLI_OTHER_CA, /* a device certificate from a CA the server does not know */
	CLI_IMPOSTOR, /* one from a CA with the right name but another key */
	CLI_EXPIRED,  /* a device certificate of the right CA that expired an hour ago */
	CLI_TLS12,    /* the good certificate, but TLS 1.2 only */
	CLI_KINDS
};
static SSL_CTX *cctx[CLI_KINDS];
static struct tpki other;          /* a second PKI with the same names, for CLI_IMPOSTOR */
static X509 *foreign_ca, *foreign; /* CA "another CA" (other's CA key), its device (other's) */
static X509 *expired;              /* for CLI_EXPIRED */

static X509 *make_expired(void)
{
	X509 *x =
	        tpki_cert(pki.cli_key, "expired device", pki.ca, pki.ca_key, 4, "clientAuth", NULL);

	if (!x || !X509_gmtime_adj(X509_getm_notBefore(x), -2 * 86400) ||
	    !X509_gmtime_adj(X509_getm_notAfter(x), -3600) ||
	    X509_sign(x, pki.ca_key, EVP_sha256()) <= 0) {
		X509_free(x);
		return NULL;
	}
	return x;
}

static SSL_CTX *client_ctx(enum client_kind kind)
{
	static const unsigned char alpn_v1[] = "\x0asealpush/1", alpn_h2[] = "\x02h2";
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	X509 *cert = kind == CLI_OTHER_CA   ? foreign
	             : kind == CLI_IMPOSTOR ? other.cli
	             : kind == CLI_EXPIRED  ? expired
	                                    : pki.cli;
	EVP_PKEY *key = kind == CLI_OTHER_CA || kind == CLI_IMPOSTOR ? other.cli_key : pki.cli_key;
	const unsigned char *alpn = kind == CLI_WRONG_ALPN ? alpn_h2 : alpn_v1;
	size_t alpn_len = kind == CLI_WRONG_ALPN ? sizeof(alpn_h2) - 1 : sizeof(alpn_v1) - 1;
	int version = kind == CLI_TLS12 ? TLS1_2_VERSION : TLS1_3_VERSION;

	if (!ctx)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, version);
	SSL_CTX_set_max_proto_version(ctx, version);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), pki.ca) != 1 ||
	    (kind != CLI_NO_CERT &&
	     (SSL_CTX_use_certificate(ctx, cert) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1)) ||
	    (kind != CLI_NO_ALPN && SSL_CTX_set_alpn_protos(ctx, alpn, (unsigned)alpn_len) != 0)) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

/* One connection: the server's tio on sfd, the client's SSL on cfd. */
struct pair {
	sp_tio_env_t env; /* a copy of env the case may change (reads_per_call, scratch_len) */
	sp_tio_t t;
	sp_peer_t peer;
	int hs; /* the server's last handshake result */
	SSL *c;
	int sfd, cfd;
	bool cdone;         /* the client finished its handshake */
	unsigned long cerr; /* the client's last OpenSSL error, if it failed */
	unsigned ku_in;     /* KeyUpdate messages the client received */
	const char *early;  /* the client sends this as soon as its handshake is done */
	char rx[64];        /* inner content types received after the handshake: 'h' a KeyUpdate,
	                       'd' application data, 'a' an alert (as far as it fits) */
	unsigned rx_len;
};

static void client_msg_cb(int write_p, int version, int content_type, const void *buf, size_t len,
                          SSL *ssl, void *arg)
{
	struct pair *p = arg;

	(void)version;
	(void)ssl;
	if (write_p || len < 1 || !p->cdone)
		return;
	if (content_type == SSL3_RT_HANDSHAKE && ((const uint8_t *)buf)[0] == 24) {
		p->ku_in++;
		if (p->rx_len < sizeof(p->rx) - 1)
			p->rx[p->rx_len++] = 'h';
	}
	if (content_type == SSL3_RT_INNER_CONTENT_TYPE && p->rx_len < sizeof(p->rx) - 1) {
		uint8_t type = ((const uint8_t *)buf)[0];

		if (type == SSL3_RT_APPLICATION_DATA)
			p->rx[p->rx_len++] = 'd';
		else if (type == SSL3_RT_ALERT)
			p->rx[p->rx_len++] = 'a';
	}
}

static void pair_close(struct pair *p)
{
	sp_tio_free(&p->t);
	SSL_free(p->c);
	p->c = NULL;
	if (p->sfd >= 0)
		close(p->sfd);
	if (p->cfd >= 0)
		close(p->cfd);
	p->sfd = p->cfd = -1;
	ERR_clear_error();
}

/* Makes the pair and runs both handshakes to their end. Returns the server's result. */
static int pair_open_with(struct pair *p, uint8_t flags, SSL_CTX *ctx, const char *early)
{
	int fds[2];

	memset(p, 0, sizeof(*p));
	p->early = early;
	p->sfd = p->cfd = -1;
	p->env = env;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0)
		return -1;
	p->sfd = fds[0];
	p->cfd = fds[1];
	if (sp_tio_accept(&p->t, &p->env, p->sfd) < 0)
		return -1;
	p->t.flags |= flags;
	p->c = SSL_new(ctx);
	if (!p->c || SSL_set_fd(p->c, p->cfd) != 1 || SSL_set1_host(p->c, "localhost") != 1)
		return -1;
	SSL_set_msg_callback(p->c, client_msg_cb);
	SSL_set_msg_callback_arg(p->c, p);
	SSL_set_connect_state(p->c);
	p->hs = SP_IO_WANT_READ;
	for (int i = 0; i < 100; i++) {
		if (!p->cdone && !p->cerr) {
			int r = SSL_do_handshake(p->c);

			if (r == 1) {
				p->cdone = true;
				if (p->early)
					SSL_write(p->c, p->early, (int)strlen(p->early));
			} else {
				int e = SSL_get_error(p->c, r);

				if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
					p->cerr = ERR_peek_last_error() ? ERR_peek_last_error() : 1;
			}
		}
		if (p->hs == SP_IO_WANT_READ || p->hs == SP_IO_WANT_WRITE)
			p->hs = sp_tio_handshake(&p->t, &p->peer);
		if (p->hs == SP_IO_FAILED || (p->hs == SP_IO_DONE && (p->cdone || p->cerr)))
			break;
	}
	/* The client hears the refusal (its alert) once it reads. */
	if (p->hs == SP_IO_FAILED && !p->cerr) {
		uint8_t b[16];
		int r = SSL_read(p->c, b, sizeof(b));

		if (r <= 0)
			p->cerr = ERR_peek_last_error() ? ERR_peek_last_error() : 1;
	}
	return p->hs;
}

static int pair_open(struct pair *p, uint8_t flags, enum client_kind kind)
{
	return pair_open_with(p, flags, cctx[kind], NULL);
}

/* A handshake with the good client (ctx, or cctx[CLI_OK] if NULL) on the current
 * implementation, checked; the client sends early (if not NULL) right behind its Finished. */
static bool open_ok_with(struct pair *p, SSL_CTX *ctx, const char *early)
{
	uint8_t token[SP_TOKEN_LEN];
	int r = pair_open_with(p, cur->flags, ctx ? ctx : cctx[CLI_OK], early);

	SP_CHECK_EQ_INT(r, SP_IO_DONE);
	SP_CHECK(p->cdone);
	if (r != SP_IO_DONE || !p->cdone)
		return false;
	SP_CHECK(p->t.tr == cur->tr);
	SP_CHECK_EQ_INT(p->peer.handed_off, cur->handed_off);
	SP_CHECK_EQ_INT(p->t.ssl != NULL, !cur->handed_off);
	SP_CHECK(p->t.hs == NULL);
	SP_CHECK_EQ_INT(p->peer.resumed, 0);
	SP_CHECK_EQ_INT(p->peer.serial_len, 1);
	SP_CHECK_EQ_INT(p->peer.serial[0], 3);
	SP_CHECK_EQ_INT(sp_token_from_pkey(pki.cli_key, token), 0);
	SP_CHECK_MEM(p->peer.token, token, sizeof(token));
	SP_CHECK_EQ_INT(p->t.flags & SP_TIO_DEAD, 0);
	return p->t.tr == cur->tr;
}

static bool open_ok(struct pair *p)
{
	return open_ok_with(p, NULL, NULL);
}

/* Collects what the transport hands to the connection. */
struct sink {
	uint8_t *buf;
	size_t len, cap;
	unsigned calls;
	unsigned stop_after; /* return false after this many calls (0: never) */
};

static bool sink_input(void *arg, const uint8_t *p, size_t n)
{
	struct sink *s = arg;

	s->calls++;
	if (s->len + n > s->cap) {
		size_t cap = s->cap ? s->cap : 4096;
		uint8_t *b;

		while (cap < s->len + n)
			cap *= 2;
		b = realloc(s->buf, cap);
		if (!b)
			abort();
		s->buf = b;
		s->cap = cap;
	}
	memcpy(s->buf + s->len, p, n);
	s->len += n;
	return !(s->stop_after && s->calls >= s->stop_after);
}

static void sink_free(struct sink *s)
{
	free(s->buf);
	memset(s, 0, sizeof(*s));
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)((i * 131 + seed * 7 + (i >> 8)) & 0xff);
}

/* Client writes all of p (the socket must take it). Returns the bytes written. */
static size_t cli_write(struct pair *p, const void *buf, size_t n)
{
	size_t done = 0;

	while (done < n) {
		int r = SSL_write(p->c, (const uint8_t *)buf + done, (int)(n - done));

		if (r <= 0)
			break;
		done += (size_t)r;
	}
	return done;
}

/* Client reads what is there into buf[*got, cap). Returns SSL_get_error of the last read. */
static int cli_read(struct pair *p, uint8_t *buf, size_t cap, size_t *got)
{
	for (;;) {
		uint8_t dummy[1];
		int r = SSL_read(p->c, *got < cap ? buf + *got : dummy,
		                 *got < cap ? (int)(cap - *got) : 1);

		if (r <= 0)
			return SSL_get_error(p->c, r);
		*got += (size_t)r;
	}
}

static bool fd_readable(int fd)
{
	struct pollfd pf = {.fd = fd, .events = POLLIN};

	return poll(&pf, 1, 0) == 1 && (pf.revents & (POLLIN | POLLHUP));
}

/* The server reads like sp_conn.c under a level-triggered read event: again after AGAIN, and
 * after WANT_READ while the socket is still readable (an EOF after the last record). */
static int srv_read(struct pair *p, struct sink *s)
{
	int r = SP_IO_AGAIN;

	for (int i = 0; i < 1000; i++) {
		r = sp_tio_read(&p->t, sink_input, s);
		if (r != SP_IO_AGAIN && (r != SP_IO_WANT_READ || !fd_readable(p->sfd)))
			return r;
	}
	return r;
}

/* ---- the cases ---------------------------------------------------------------------------- */

static void case_small_write(void)
{
	static const char msg[] = "hello, device";
	struct pair p;
	uint8_t buf[64];
	size_t taken = 99, got = 0;

	if (open_ok(&p)) {
		SP_CHECK_EQ_INT(sp_tio_write(&p.t, (const uint8_t *)msg, 13, &taken), SP_IO_DONE);
		SP_CHECK_EQ_INT(taken, 13);
		taken = 99;
		SP_CHECK_EQ_INT(sp_tio_write(&p.t, NULL, 0, &taken), SP_IO_DONE); /* a flush */
		SP_CHECK_EQ_INT(taken, 0);
		SP_CHECK_EQ_INT(cli_read(&p, buf, sizeof(buf), &got), SSL_ERROR_WANT_READ);
		SP_CHECK_EQ_INT(got, 13);
		SP_CHECK_MEM(buf, msg, 13);
	}
	pair_close(&p);
}

/* 64 records of 1 to 64 bytes, reaching the socket 3 bytes at a time. */
static void case_small_pieces(void)
{
	enum { PIECES = 64, TOTAL = PIECES * (PIECES + 1) / 2 };
	struct pair p;
	struct sink s = {0};
	uint8_t data[TOTAL], back[16];
	BIO *mem;
	char *raw;
	long rawlen;
	size_t off = 0, got = 0, taken;
	int bad = 0;

	fill(data, sizeof(data), 1);
	if (!open_ok(&p))
		goto out;
	mem = BIO_new(BIO_s_mem());
	SP_CHECK(mem != NULL);
	if (!mem)
		goto out;
	SSL_set0_wbio(p.c, mem); /* the client's records go to memory, we dribble them */
	for (int i = 1; i <= PIECES; i++) {
		SP_CHECK_EQ_INT(SSL_write(p.c, data + off, i), i);
		off += (size_t)i;
	}
	rawlen = BIO_get_mem_data(mem, &raw);
	SP_CHECK(rawlen > TOTAL + PIECES * 22 - 1);
	for (long i = 0; i < rawlen; i += 3) {
		size_t n = rawlen - i < 3 ? (size_t)(rawlen - i) : 3;
		int r;

		SP_CHECK_EQ_INT(write(p.cfd, raw + i, n), n);
		r = sp_tio_read(&p.t, sink_input, &s);
		if (r != SP_IO_WANT_READ && bad++ == 0)
			SP_FAIL("read at byte %ld returned %d", i, r);
	}
	SP_CHECK_EQ_INT(bad, 0);
	SP_CHECK_EQ_INT(s.len, TOTAL);
	SP_CHECK_EQ_INT(s.calls, PIECES); /* one call per record, none merged or lost */
	if (s.len == TOTAL)
		SP_CHECK_MEM(s.buf, data, TOTAL);
	SP_CHECK_EQ_INT(p.t.rin == NULL, 1); /* no partial record left behind */
	SSL_set0_wbio(p.c, BIO_new_socket(p.cfd, BIO_NOCLOSE));
	/* Both ways still work. */
	SP_CHECK_EQ_INT(sp_tio_write(&p.t, (const uint8_t *)"ok", 2, &taken), SP_IO_DONE);
	SP_CHECK_EQ_INT(cli_read(&p, back, sizeof(back), &got), SSL_ERROR_WANT_READ);
	SP_CHECK_EQ_INT(got, 2);
	SP_CHECK_MEM(back, "ok", 2);
	SP_CHECK_EQ_INT(cli_write(&p, "more", 4), 4);
	SP_CHECK_EQ_INT(srv_read(&p, &s), SP_IO_WANT_READ);
	SP_CHECK_EQ_INT(s.len, TOTAL + 4);
	if (s.len == TOTAL + 4)
		SP_CHECK_MEM(s.buf + TOTAL, "more", 4);
out:
	sink_free(&s);
	pair_close(&p);
}

/* 1 MB: more than the socket holds, so WANT_WRITE, resumed with the rest after the client
 * read; the bytes taken add up and arrive unchanged. */
static void case_big_write(void)
{
	enum { BIG = 1 << 20 };
	struct pair p;
	uint8_t *big = malloc(BIG), *back = malloc(BIG);
	size_t off = 0, got = 0;
	unsigned want_write = 0, calls = 0;
	int r = -1;

	SP_CHECK(big && back);
	if (!big || !back || !open_ok(&p))
		goto out;
	fill(big, BIG, 2);
	while (calls++ < 10000) {
		size_t taken = 0;

		r = sp_tio_write(&p.t, big + off, BIG - off, &taken);
		SP_CHECK(taken <= BIG - off);
		if (taken > BIG - off)
			break;
		off += taken;
		if (r != SP_IO_WANT_WRITE)
			break;
		want_write++;
		SP_CHECK_EQ_INT(cli_read(&p, back, BIG, &got), SSL_ERROR_WANT_READ);
	}
	SP_CHECK_EQ_INT(r, SP_IO_DONE);
	SP_CHECK(want_write > 0);
	SP_CHECK_EQ_INT(off, BIG);
	SP_CHECK_EQ_INT(p.t.wpend == NULL, 1); /* DONE: nothing held back */
	SP_CHECK_EQ_INT(cli_read(&p, back, BIG, &got), SSL_ERROR_WANT_READ);
	SP_CHECK_EQ_INT(got, BIG);
	if (got == BIG)
		SP_CHECK_MEM(back, big, BIG);
	printf("# %s: 1 MiB in %u write calls, %u WANT_WRITE\n", cur->name, calls, want_write);
out:
	free(big);
	free(back);
	pair_close(&p);
}

/* The client's close_notify: CLOSED (not DEAD), then our shutdown() reaches the client. */
static void case_close_notify(void)
{
	struct pair p;
	struct sink s = {0};
	uint8_t buf[16];
	size_t got = 0;

	if (open_ok(&p)) {
		SP_CHECK_EQ_INT(cli_write(&p, "bye", 3), 3);
		SP_CHECK_EQ_INT(SSL_shutdown(p.c), 0); /* sent, not yet answered */
		SP_CHECK_EQ_INT(srv_read(&p, &s), SP_IO_CLOSED);
		SP_CHECK_EQ_INT(s.len, 3); /* the data before it was delivered */
		SP_CHECK_EQ_INT(p.t.flags & SP_TIO_DEAD, 0);
		sp_tio_shutdown(&p.t);
		SP_CHECK_EQ_INT(cli_read(&p, buf, sizeof(buf), &got), SSL_ERROR_ZERO_RETURN);
		SP_CHECK_EQ_INT(got, 0);
		SP_CHECK_EQ_INT(SSL_get_shutdown(p.c), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	}
	sink_free(&s);
	pair_close(&p);
}

/* The client closes the socket without close_notify, having read everything (a plain EOF)
 * or with the server's ticket still unread (AF_UNIX then resets: ECONNRESET): BROKEN, DEAD,
 * after the data before it. */
static void abrupt_close(bool drained)
{
	struct pair p;
	struct sink s = {0};
	uint8_t buf[16];
	size_t got = 0;

	if (open_ok(&p)) {
		if (drained)
			SP_CHECK_EQ_INT(cli_read(&p, buf, sizeof(buf), &got), SSL_ERROR_WANT_READ);
		SP_CHECK_EQ_INT(cli_write(&p, "half", 4), 4);
		close(p.cfd);
		p.cfd = -1;
		SP_CHECK_EQ_INT(srv_read(&p, &s), SP_IO_BROKEN);
		SP_CHECK_EQ_INT(s.len, 4);
		SP_CHECK_EQ_INT(p.t.flags & SP_TIO_DEAD, SP_TIO_DEAD);
		sp_tio_shutdown(&p.t); /* must not write (SIGPIPE is ignored; it would EPIPE) */
	}
	sink_free(&s);
	pair_close(&p);
}

static void case_abrupt_close_eof(void)
{
	abrupt_close(true);
}

static void case_abrupt_close_reset(void)
{
	abrupt_close(false);
}

/* The socket ends in the middle of a record: BROKEN, DEAD, nothing of it delivered. */
static void case_abrupt_close_mid_record(void)
{
	struct pair p;
	struct sink s = {0};
	uint8_t back[16];
	size_t got = 0;
	BIO *mem;
	char *raw;
	long rawlen;

	if (!open_ok(&p))
		goto out;
	mem = BIO_new(BIO_s_mem());
	if (!mem)
		goto out;
	SP_CHECK_EQ_INT(cli_read(&p, back, sizeof(back), &got), SSL_ERROR_WANT_READ); /* EOF */
	SSL_set0_wbio(p.c, mem);
	SP_CHECK_EQ_INT(SSL_write(p.c, "0123456789abcdef", 16), 16);
	rawlen = BIO_get_mem_data(mem, &raw);
	SP_CHECK_EQ_INT(rawlen, 16 + 22);
	SP_CHECK_EQ_INT(write(p.cfd, raw, 20), 20);
	SP_CHECK_EQ_INT(srv_read(&p, &s), SP_IO_WANT_READ);
	close(p.cfd);
	p.cfd = -1;
	SP_CHECK_EQ_INT(srv_read(&p, &s), SP_IO_BROKEN);
	SP_CHECK_EQ_INT(s.len, 0);
	SP_CHECK_EQ_INT(p.t.flags & SP_TIO_DEAD, SP_TIO_DEAD);
	sp_tio_shutdown(&p.t);
out:
	sink_free(&s);
	pair_close(&p);
}

/* After the garbage the client must see a fatal alert or nothing: never more data. */
static void client_sees_end(struct pair *p, unsigned long alert_reason)
{
	uint8_t buf[64];
	size_t got = 0;
	int e = cli_read(p, buf, sizeof(buf), &got);

	SP_CHECK_EQ_INT(got, 0);
	SP_CHECK_EQ_INT(e, SSL_ERROR_SSL);
	SP_CHECK_EQ_INT(ERR_GET_REASON(ERR_peek_last_error()), alert_reason);
	ERR_clear_error();
}

/* Bytes that are not TLS records at all (an HTTP request) after the handshake. */
static void case_garbage(void)
{
	static const char get[] = "GET / HTTP/1.1\r\nHost: relay\r\n\r\n";
	struct pair p;
	struct sink s = {0};

	if (open_ok(&p)) {
		SP_CHECK_EQ_INT(write(p.cfd, get, sizeof(get) - 1), sizeof(get) - 1);
		SP_CHECK_EQ_INT(srv_read(&p, &s), cur->garbage);
		SP_CHECK_EQ_INT(s.len, 0);
		SP_CHECK_EQ_INT(p.t.flags & SP_TIO_DEAD, cur->dead);
		sp_tio_shutdown(&p.t); /* DEAD: no close_notify after the alert */
		/* Both send a fatal alert: unexpected_message (10) from the record layer (outer
		 * type not application_data), protocol_version (70) from OpenSSL (it reads "GET "
		 * as a record header with a wrong version first). */
		client_sees_end(&p, (unsigned long)(SSL_AD_REASON_OFFSET + cur->garbage_alert));
	}
	sink_free(&s);
	pair_close(&p);
}

/* A well-formed application_data record that does not open (not sealed with the key). */
static void case_forged_record(void)
{
	struct pair p;
	struct sink s = {0};
	uint8_t rec[5 + 40] = {23, 3, 3, 0, 40};

	fill(rec + 5, 40, 3);
	if (open_ok(&p)) {
		SP_CHECK_EQ_INT(cli_write(&p, "real", 4), 4);
		SP_CHECK_EQ_INT(write(p.cfd, rec, sizeof(rec)), sizeof(rec));
		SP_CHECK_EQ_INT(srv_read(&p, &s), cur->forged);
		SP_CHECK_EQ_INT(s.len, 4); /* the real record before it got through */
		SP_CHECK_EQ_INT(p.t.flags & SP_TIO_DEAD, cur->dead);
		sp_tio_shutdown(&p.t);
		client_sees_end(&p, SSL_AD_REASON_OFFSET + SSL_AD_BAD_RECORD_MAC);
	}
	sink_free(&s);
	pair_close(&p);
}

/* One round: the client sends a, the server gets it; the server sends b, the client gets it. */
static void round_trip(struct pair *p, const char *a, const char *b)
{
	struct sink s = {0};
	uint8_t buf[64];
	size_t taken = 0, got = 0, al = strlen(a), bl = strlen(b);

	SP_CHECK_EQ_INT(cli_write(p, a, al), al);
	SP_CHECK_EQ_INT(srv_read(p, &s), SP_IO_WANT_READ);
	SP_CHECK_EQ_INT(s.len, al);
	if (s.len == al)
		SP_CHECK_MEM(s.buf, a, al);
	SP_CHECK_EQ_INT(sp_tio_write(&p->t, (const uint8_t *)b, bl, &taken), SP_IO_DONE);
	SP_CHECK_EQ_INT(taken, bl);
	SP_CHECK_EQ_INT(p->t.flags & SP_TIO_KEY_UPDATE, 0); /* owed KeyUpdate went out with it */
	SP_CHECK_EQ_INT(cli_read(p, buf, sizeof(buf), &got), SSL_ERROR_WANT_READ);
	SP_CHECK_EQ_INT(got, bl);
	SP_CHECK_MEM(buf, b, bl);
	sink_free(&s);
}

/* The client's KeyUpdate with update_requested: the server answers with exactly one of its
 * own, and data keeps flowing both ways under the new keys. */
static void case_key_update_requested(void)
{
	struct pair p;
	struct sink s = {0};
	uint8_t buf[16];
	size_t taken, got = 0;

	if (open_ok(&p)) {
		SP_CHECK_EQ_INT(SSL_key_update(p.c, SSL_KEY_UPDATE_REQUESTED), 1);
		SP_CHECK_EQ_INT(cli_write(&p, "ping-1", 6), 6);
		SP_CHECK_EQ_INT(srv_read(&p, &s), SP_IO_WANT_READ);
		SP_CHECK_EQ_INT(s.len, 6);
		if (s.len == 6)
			SP_CHECK_MEM(s.buf, "ping-1", 6);
		if (cur->tr == &sp_record_transport) /* the record layer owes its answer */
			SP_CHECK_EQ_INT(p.t.flags & SP_TIO_KEY_UPDATE, SP_TIO_KEY_UPDATE);
		p.rx_len = 0;
		memset(p.rx, 0, sizeof(p.rx));
		round_trip(&p, "ping-2", "pong-2");
		SP_CHECK_EQ_INT(p.ku_in, 1);
		/* RFC 8446 4.6.3: the answer goes out before the next application data record. */
		if (strcmp(p.rx, "hd") != 0)
			SP_FAIL("after update_requested the client received \"%s\", not \"hd\"",
			        p.rx);
		round_trip(&p, "ping-3", "pong-3");
		/* Again, answered by a flush with nothing to write (what sp_conn.c does when it
		 * sees SP_TIO_KEY_UPDATE after a read). */
		SP_CHECK_EQ_INT(SSL_key_update(p.c, SSL_KEY_UPDATE_REQUESTED), 1);
		SP_CHECK_EQ_INT(cli_write(&p, "ping-4", 6), 6);
		s.len = 0;
		SP_CHECK_EQ_INT(srv_read(&p, &s), SP_IO_WANT_READ);
		SP_CHECK_EQ_INT(s.len, 6);
		taken = 99;
		SP_CHECK_EQ_INT(sp_tio_write(&p.t, NULL, 0, &taken), SP_IO_DONE);
		SP_CHECK_EQ_INT(taken, 0);
		SP_CHECK_EQ_INT(p.t.flags & SP_TIO_KEY_UPDATE, 0);
		SP_CHECK_EQ_INT(cli_read(&p, buf, sizeof(buf), &got), SSL_ERROR_WANT_READ);
		SP_CHECK_EQ_INT(got, 0);
		SP_CHECK_EQ_INT(p.ku_in, cur->ku_on_flush ? 2 : 1);
		round_trip(&p, "ping-5", "pong-5");
		SP_CHECK_EQ_INT(p.ku_in, 2);
	}
	sink_free(&s);
	pair_close(&p);
}

/* Without update_requested the server only follows: no KeyUpdate of its own. */
static void case_key_update_not_requested(void)
{
	struct pair p;

	if (open_ok(&p)) {
		SP_CHECK_EQ_INT(SSL_key_update(p.c, SSL_KEY_UPDATE_NOT_REQUESTED), 1);
		round_trip(&p, "ping-1", "pong-1");
		round_trip(&p, "ping-2", "pong-2");
		SP_CHECK_EQ_INT(p.ku_in, 0);
	}
	pair_close(&p);
}

/* The input function says no more: the transport stops reading at once. */
static void case_input_stops(void)
{
	struct pair p;
	struct sink s = {.stop_after = 1};
	uint8_t a[100], b[100], c[100];

	memset(a, 'A', sizeof(a));
	memset(b, 'B', sizeof(b));
	memset(c, 'C', sizeof(c));
	if (open_ok(&p)) {
		SP_CHECK_EQ_INT(cli_write(&p, a, sizeof(a)), sizeof(a));
		SP_CHECK_EQ_INT(cli_write(&p, b, sizeof(b)), sizeof(b));
		SP_CHECK_EQ_INT(cli_write(&p, c, sizeof(c)), sizeof(c));
		SP_CHECK_EQ_INT(sp_tio_read(&p.t, sink_input, &s), SP_IO_WANT_READ);
		SP_CHECK_EQ_INT(s.calls, 1);
		SP_CHECK_EQ_INT(s.len, sizeof(a));
		if (s.len == sizeof(a))
			SP_CHECK_MEM(s.buf, a, sizeof(a));
		SP_CHECK_EQ_INT(p.t.flags & SP_TIO_DEAD, 0);
	}
	sink_free(&s);
	pair_close(&p);
}

/* reads_per_call = 1 with far more input than one read takes. */
static void case_read_budget(void)
{
	enum { LOTS = 160 * 1024, SMALL = 5000 };
	struct pair p;
	struct sink s = {0};
	uint8_t *data = malloc(LOTS);
	int sndbuf = 1 << 20, r;
	unsigned again = 0, reads = 0;

	SP_CHECK(data != NULL);
	if (!data || !open_ok(&p))
		goto out;
	fill(data, LOTS, 4);
	SP_CHECK_EQ_INT(setsockopt(p.cfd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
	p.env.reads_per_call = 1;

	/* Much more ciphertext in the socket than the scratch buffer (64 KiB) holds. */
	SP_CHECK_EQ_INT(cli_write(&p, data, LOTS), LOTS);
	r = sp_tio_read(&p.t, sink_input, &s);
	SP_CHECK_EQ_INT(r, cur->budget);
	SP_CHECK(s.len > 0 && s.len < LOTS);
	SP_CHECK(fd_readable(p.sfd)); /* the rest is still there: a socket event will come */
	while ((r == SP_IO_AGAIN || (r == SP_IO_WANT_READ && s.len < LOTS)) && reads++ < 1000) {
		again += r == SP_IO_AGAIN;
		r = sp_tio_read(&p.t, sink_input, &s);
	}
	SP_CHECK_EQ_INT(r, SP_IO_WANT_READ);
	SP_CHECK_EQ_INT(s.len, LOTS);
	if (s.len == LOTS)
		SP_CHECK_MEM(s.buf, data, LOTS);
	SP_CHECK(reads >= LOTS / SP_WORKER_SCRATCH);
	if (cur->budget == SP_IO_AGAIN)
		SP_CHECK(again >= 1);

	/* With a small scratch buffer one read cannot take a whole record: AGAIN from both,
	 * since the rest of the record is now inside the transport (or OpenSSL). */
	s.len = 0;
	p.env.scratch_len = 1000;
	SP_CHECK_EQ_INT(cli_write(&p, data, SMALL), SMALL);
	r = sp_tio_read(&p.t, sink_input, &s);
	SP_CHECK_EQ_INT(r, SP_IO_AGAIN);
	SP_CHECK(s.len < SMALL);
	SP_CHECK_EQ_INT(srv_read(&p, &s), SP_IO_WANT_READ);
	SP_CHECK_EQ_INT(s.len, SMALL);
	if (s.len == SMALL)
		SP_CHECK_MEM(s.buf, data, SMALL);
out:
	free(data);
	sink_free(&s);
	pair_close(&p);
}

/* The client's first data right behind its Finished, in the socket before the server has
 * read the Finished (a device sends HELLO at once): the server reads it after the handshake,
 * from the record layer's first record on or from OpenSSL. */
static void case_data_behind_finished(void)
{
	struct pair p;
	struct sink s = {0};

	if (open_ok_with(&p, NULL, "hello right away")) {
		SP_CHECK_EQ_INT(srv_read(&p, &s), SP_IO_WANT_READ);
		SP_CHECK_EQ_INT(s.len, 16);
		if (s.len == 16)
			SP_CHECK_MEM(s.buf, "hello right away", 16);
		round_trip(&p, "ping", "pong");
	}
	sink_free(&s);
	pair_close(&p);
}

/* Writing to a client that is gone (EPIPE): BROKEN, DEAD. */
static void case_write_after_peer_gone(void)
{
	static uint8_t buf[4096];
	struct pair p;
	size_t taken = 0;

	if (open_ok(&p)) {
		close(p.cfd);
		p.cfd = -1;
		SP_CHECK_EQ_INT(sp_tio_write(&p.t, buf, sizeof(buf), &taken), SP_IO_BROKEN);
		SP_CHECK_EQ_INT(p.t.flags & SP_TIO_DEAD, SP_TIO_DEAD);
		sp_tio_shutdown(&p.t);
	}
	pair_close(&p);
}

/* Each TLS 1.3 suite the client may insist on: negotiated, carried (by the record layer in
 * that suite), both ways and through a requested KeyUpdate. */
static void case_every_suite(void)
{
	static const struct {
		const char *name;
		uint16_t id;
	} suites[] = {{"TLS_AES_128_GCM_SHA256", 0x1301},
	              {"TLS_AES_256_GCM_SHA384", 0x1302},
	              {"TLS_CHACHA20_POLY1305_SHA256", 0x1303}};

	for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++) {
		SSL_CTX *ctx = client_ctx(CLI_OK);
		struct pair p;

		SP_CHECK(ctx != NULL);
		if (!ctx || SSL_CTX_set_ciphersuites(ctx, suites[i].name) != 1) {
			SSL_CTX_free(ctx);
			continue;
		}
		if (open_ok_with(&p, ctx, NULL)) {
			SP_CHECK_EQ_INT(SSL_CIPHER_get_protocol_id(SSL_get_current_cipher(p.c)),
			                suites[i].id);
			if (cur->tr == &sp_record_transport)
				SP_CHECK_EQ_INT(p.t.rl.suite, suites[i].id);
			round_trip(&p, "ping-1", "pong-1");
			SP_CHECK_EQ_INT(SSL_key_update(p.c, SSL_KEY_UPDATE_REQUESTED), 1);
			round_trip(&p, "ping-2", "pong-2");
			SP_CHECK_EQ_INT(p.ku_in, 1);
		}
		pair_close(&p);
		SSL_CTX_free(ctx);
	}
}

static const struct tcase {
	const char *name;
	void (*fn)(void);
} cases[] = {
        {"small write reaches the client", case_small_write},
        {"small pieces reassembled", case_small_pieces},
        {"1 MiB write through WANT_WRITE", case_big_write},
        {"close_notify -> CLOSED, shutdown answers", case_close_notify},
        {"abrupt close (EOF) -> BROKEN", case_abrupt_close_eof},
        {"abrupt close (reset) -> BROKEN", case_abrupt_close_reset},
        {"abrupt close mid-record -> BROKEN", case_abrupt_close_mid_record},
        {"garbage bytes -> refused, DEAD", case_garbage},
        {"forged record -> refused, DEAD", case_forged_record},
        {"KeyUpdate requested: answered, data flows", case_key_update_requested},
        {"KeyUpdate not requested: data flows", case_key_update_not_requested},
        {"input returning false stops reading", case_input_stops},
        {"reads_per_call=1: out of budget", case_read_budget},
        {"client data right behind its Finished", case_data_behind_finished},
        {"write to a vanished client -> BROKEN", case_write_after_peer_gone},
        {"every TLS 1.3 suite", case_every_suite},
};

/* ---- handshake refusals (before any hand-off: once) ---------------------------------------- */

static void refused(enum client_kind kind, enum sp_handshake_cause cause, unsigned long alert)
{
	struct pair p;

	SP_CHECK_EQ_INT(pair_open(&p, 0, kind), SP_IO_FAILED);
	SP_CHECK_EQ_INT(p.t.hs_cause, cause);
	SP_CHECK_EQ_INT(p.t.flags & SP_TIO_DEAD, SP_TIO_DEAD);
	SP_CHECK(p.t.tr == &sp_tls_transport);
	SP_CHECK(p.cerr != 0);
	SP_CHECK_EQ_INT(ERR_GET_REASON(p.cerr), SSL_AD_REASON_OFFSET + alert);
	sp_tio_shutdown(&p.t);
	pair_close(&p);
}

static void test_handshake_no_client_cert(void)
{
	refused(CLI_NO_CERT, SP_HS_NO_CERT, TLS13_AD_CERTIFICATE_REQUIRED);
}

static void test_handshake_no_alpn(void)
{
	refused(CLI_NO_ALPN, SP_HS_NO_ALPN, TLS1_AD_NO_APPLICATION_PROTOCOL);
}

static void test_handshake_wrong_alpn(void)
{
	refused(CLI_WRONG_ALPN, SP_HS_NO_ALPN, TLS1_AD_NO_APPLICATION_PROTOCOL);
}

static void test_handshake_unknown_ca(void)
{
	refused(CLI_OTHER_CA, SP_HS_UNKNOWN_CA, SSL_AD_UNKNOWN_CA);
}

/* Same issuer name, other key: the chain is built to our CA and its signature fails (the
 * alert is decrypt_error), still counted as an unknown CA. */
static void test_handshake_impostor_ca(void)
{
	refused(CLI_IMPOSTOR, SP_HS_UNKNOWN_CA, SSL_AD_DECRYPT_ERROR);
}

static void test_handshake_expired(void)
{
	refused(CLI_EXPIRED, SP_HS_EXPIRED, SSL_AD_CERTIFICATE_EXPIRED);
}

static void test_handshake_tls12(void)
{
	refused(CLI_TLS12, SP_HS_PROTOCOL, SSL_AD_PROTOCOL_VERSION);
}

/* No TLS client at all: the server's handshake on what the socket gives it. */
static int raw_handshake(const void *bytes, size_t n, bool close_after, sp_tio_t *t)
{
	sp_peer_t peer;
	int fds[2], r = -1;

	memset(t, 0, sizeof(*t));
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0)
		return -1;
	if (sp_tio_accept(t, &env, fds[0]) == 0) {
		if (n)
			SP_CHECK_EQ_INT(write(fds[1], bytes, n), n);
		if (close_after) {
			close(fds[1]);
			fds[1] = -1;
		}
		for (int i = 0; i < 10; i++) {
			r = sp_tio_handshake(t, &peer);
			if (r != SP_IO_WANT_READ)
				break;
		}
		sp_tio_shutdown(t);
		sp_tio_free(t);
	}
	close(fds[0]);
	if (fds[1] >= 0)
		close(fds[1]);
	ERR_clear_error();
	return r;
}

static void test_handshake_not_tls(void)
{
	static const char get[] = "GET / HTTP/1.1\r\nHost: relay\r\n\r\n";
	sp_tio_t t;

	SP_CHECK_EQ_INT(raw_handshake(get, sizeof(get) - 1, false, &t), SP_IO_FAILED);
	SP_CHECK_EQ_INT(t.hs_cause, SP_HS_PROTOCOL);
	SP_CHECK_EQ_INT(t.flags & SP_TIO_DEAD, SP_TIO_DEAD);
}

static void test_handshake_eof(void)
{
	sp_tio_t t;

	SP_CHECK_EQ_INT(raw_handshake(NULL, 0, false, &t), SP_IO_WANT_READ); /* waits */
	SP_CHECK_EQ_INT(raw_handshake(NULL, 0, true, &t), SP_IO_FAILED);
	/* OpenSSL 3's "unexpected eof while reading" is an SSL error like any other: a client
	 * that connects and leaves (a port check) is counted as a protocol failure. */
	SP_CHECK_EQ_INT(t.hs_cause, SP_HS_PROTOCOL);
	SP_CHECK_EQ_INT(t.flags & SP_TIO_DEAD, SP_TIO_DEAD);
}

int main(void)
{
	char err[256], name[128];
	int rc = 1;

	signal(SIGPIPE, SIG_IGN); /* as the daemon: a write to a closed socket is EPIPE */
	if (tpki_make(&pki) < 0 || tpki_write(&pki) < 0) {
		printf("Bail out! cannot make the test PKI (%s)\n",
		       ERR_reason_error_string(ERR_get_error()));
		goto out;
	}
	srv.cfg.tls_cert = pki.srv_pem;
	srv.cfg.tls_key = pki.srv_key_pem;
	srv.cfg.client_ca = pki.ca_pem;
	if (sp_tls_start(&srv, err, sizeof(err)) < 0) {
		printf("Bail out! sp_tls_start: %s\n", err);
		goto out;
	}
	env = (sp_tio_env_t){.scratch = malloc(SP_WORKER_SCRATCH),
	                     .scratch_len = SP_WORKER_SCRATCH,
	                     .seal = malloc(SP_WORKER_SEAL),
	                     .seal_len = SP_WORKER_SEAL,
	                     .rlcx = sp_rl_crypto_new(),
	                     .tls = srv.tls,
	                     .reads_per_call = 16};
	if (tpki_make(&other) < 0 || !(expired = make_expired()) ||
	    !(foreign_ca = tpki_cert(other.ca_key, "another CA", NULL, NULL, 1, NULL, NULL)) ||
	    !(foreign = tpki_cert(other.cli_key, "device", foreign_ca, other.ca_key, 3,
	                          "clientAuth", NULL))) {
		printf("Bail out! cannot make the foreign and the expired certificates\n");
		goto out;
	}
	for (int k = 0; k < CLI_KINDS; k++) {
		cctx[k] = client_ctx((enum client_kind)k);
		if (!cctx[k]) {
			printf("Bail out! cannot set up client %d\n", k);
			goto out;
		}
	}
	if (!env.scratch || !env.seal || !env.rlcx) {
		printf("Bail out! cannot set up the env\n");
		goto out;
	}
	for (size_t i = 0; i < sizeof(impls) / sizeof(impls[0]); i++) {
		cur = &impls[i];
		for (size_t j = 0; j < sizeof(cases) / sizeof(cases[0]); j++) {
			snprintf(name, sizeof(name), "%s: %s", cur->name, cases[j].name);
			sp_test_run(name, cases[j].fn);
		}
	}
	SP_RUN(test_handshake_no_client_cert);
	SP_RUN(test_handshake_no_alpn);
	SP_RUN(test_handshake_wrong_alpn);
	SP_RUN(test_handshake_unknown_ca);
	SP_RUN(test_handshake_impostor_ca);
	SP_RUN(test_handshake_expired);
	SP_RUN(test_handshake_tls12);
	SP_RUN(test_handshake_not_tls);
	SP_RUN(test_handshake_eof);
	rc = sp_test_done();
out:
	for (int k = 0; k < CLI_KINDS; k++)
		SSL_CTX_free(cctx[k]);
	free(env.scratch);
	free(env.seal);
	sp_rl_crypto_free(env.rlcx);
	sp_tls_stop(&srv);
	X509_free(expired);
	X509_free(foreign);
	X509_free(foreign_ca);
	tpki_free(&other);
	tpki_free(&pki);
	return rc;
}
