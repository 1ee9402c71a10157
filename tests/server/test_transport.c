/*
 * Unit tests for the transport interface (server/sp_transport.h), through the same table of
 * cases for both implementations: the record layer the handshake hands off to (the default:
 * sp_tls_transport for the handshake, then sp_record_transport) and OpenSSL all the way
 * (SP_TIO_NO_HANDOFF). The server side is a real sp_tio_t on the server's TLS context
 * (sp_tls_start, from PEM files of a throwaway PKI); the client is an unmodified OpenSSL
 * client (TLS 1.3, ALPN sealpush/1, a device certificate), both non-blocking over a Unix
 * socket pair and driven in turn in this one thread.
 *
 * Cases: a small write arrives intact; many small client writes are read back in order; a
 * 1 MiB write fills the socket (WANT_WRITE), is finished after the client reads, and arrives
 * byte for byte; close_notify from the client reads as CLOSED; a socket closed without it
 * reads as BROKEN; garbage reads as PROTOCOL or BROKEN and marks the transport DEAD; a client
 * KeyUpdate (update requested) is followed, and data flows both ways after it; an input
 * function that refuses more stops the read; a read budget of one call with more input
 * pending returns AGAIN. Handshake refusals: no client certificate (SP_HS_NO_CERT), no ALPN
 * (SP_HS_NO_ALPN).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "sp_identity.h"
#include "sp_metrics.h"
#include "sp_record.h"
#include "sp_server.h"
#include "sp_test.h"
#include "sp_tls.h"
#include "sp_transport.h"
#include "tpki.h"

static sp_server_t srv;
static sp_tio_env_t env;
static char dir[] = "/tmp/sp-test-transport.XXXXXX";
static uint8_t scratch[64 * 1024], seal_buf[4 * (SP_RL_MAX_RECORD + 256)];

/* One server transport and its client. */
struct pair {
	int sfd, cfd;
	SSL_CTX *cctx;
	SSL *c;
	sp_tio_t t;
	sp_peer_t peer;
	int hs; /* the server's last handshake result */
};

/* What the input function gathers. */
struct sink {
	uint8_t *buf;
	size_t len, cap;
	size_t stop_after; /* refuse more input once this much arrived (0: never) */
	unsigned calls;
};

static bool sink_input(void *arg, const uint8_t *p, size_t n)
{
	struct sink *s = arg;

	s->calls++;
	if (s->len + n > s->cap) {
		size_t cap = (s->len + n) * 2;
		uint8_t *b = realloc(s->buf, cap);

		if (!b)
			return false;
		s->buf = b;
		s->cap = cap;
	}
	memcpy(s->buf + s->len, p, n);
	s->len += n;
	return !(s->stop_after && s->len >= s->stop_after);
}

static SSL_CTX *client_ctx(bool cert, bool alpn)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), pki.ca);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (cert && (SSL_CTX_use_certificate(ctx, pki.cli) != 1 ||
	             SSL_CTX_use_PrivateKey(ctx, pki.cli_key) != 1)) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (alpn)
		SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)"\x0asealpush/1", 11);
	return ctx;
}

/* Runs both handshakes to their end. Returns the server's result (DONE or FAILED). */
static int pair_handshake(struct pair *p)
{
	for (int i = 0; i < 200; i++) {
		int cr = SSL_do_handshake(p->c);

		if (cr <= 0) {
			int e = SSL_get_error(p->c, cr);

			if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
				ERR_clear_error(); /* refused: the server says why */
		}
		if (p->hs != SP_IO_DONE && p->hs != SP_IO_FAILED)
			p->hs = sp_tio_handshake(&p->t, &p->peer);
		if (p->hs == SP_IO_FAILED)
			return p->hs;
		if (p->hs == SP_IO_DONE && SSL_is_init_finished(p->c))
			return p->hs;
	}
	return -1;
}

/* Opens a pair with server flags and a client made as asked; 0 or -1. */
static int pair_open(struct pair *p, uint8_t flags, bool cert, bool alpn)
{
	int sv[2];

	memset(p, 0, sizeof(*p));
	p->hs = -1;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		return -1;
	p->sfd = sv[0];
	p->cfd = sv[1];
	p->cctx = client_ctx(cert, alpn);
	p->c = p->cctx ? SSL_new(p->cctx) : NULL;
	if (!p->c || SSL_set_fd(p->c, p->cfd) != 1)
		return -1;
	SSL_set_connect_state(p->c);
	if (sp_tio_accept(&p->t, &env, p->sfd) < 0)
		return -1;
	p->t.flags |= flags;
	return 0;
}

static void pair_close(struct pair *p)
{
	sp_tio_free(&p->t);
	SSL_free(p->c);
	SSL_CTX_free(p->cctx);
	if (p->sfd >= 0)
		close(p->sfd);
	if (p->cfd >= 0)
		close(p->cfd);
	ERR_clear_error();
}

/* A pair with the handshake done, on the implementation the flags ask for. */
static int pair_ready(struct pair *p, uint8_t flags)
{
	if (pair_open(p, flags, true, true) < 0 || pair_handshake(p) != SP_IO_DONE)
		return -1;
	return 0;
}

/* Reads from the client what it has, up to cap; returns the bytes read. */
static size_t client_read(struct pair *p, uint8_t *buf, size_t cap)
{
	size_t got = 0;

	while (got < cap) {
		int n = SSL_read(p->c, buf + got, (int)(cap - got > 65536 ? 65536 : cap - got));

		if (n <= 0) {
			ERR_clear_error();
			break;
		}
		got += (size_t)n;
	}
	return got;
}

/* Whether fd has input (or EOF) right now. */
static bool readable(int fd)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};

	return poll(&pfd, 1, 0) == 1;
}

/* Reads as a level-triggered event loop would: again after AGAIN, and after WANT_READ while
 * the socket is still readable (OpenSSL reads one record per SSL_read). Returns the result
 * that would make the loop wait or stop. */
static int server_read_all(struct pair *p, struct sink *s)
{
	int r = -1;

	for (int i = 0; i < 100000; i++) {
		r = sp_tio_read(&p->t, sink_input, s);
		if (r != SP_IO_AGAIN && !(r == SP_IO_WANT_READ && readable(p->sfd)))
			break;
	}
	return r;
}

/* Writes all of p[0, n) from the client (partial writes are on). */
static int client_write(struct pair *p, const void *buf, size_t n)
{
	size_t off = 0;

	while (off < n) {
		int w = SSL_write(p->c, (const uint8_t *)buf + off, (int)(n - off));

		if (w <= 0)
			return -1;
		off += (size_t)w;
	}
	return 0;
}

static void fill(uint8_t *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(i * 31 + seed + (i >> 8));
}

/* ---- the cases, each run on both implementations ------------------------------------------ */

static const uint8_t flavours[] = {0, SP_TIO_NO_HANDOFF};
static const char *const flavour_names[] = {"record layer", "openssl"};

static void check_flavour(struct pair *p, int f)
{
	if (flavours[f] & SP_TIO_NO_HANDOFF) {
		SP_CHECK(p->t.tr == &sp_tls_transport);
		SP_CHECK(!p->peer.handed_off);
	} else {
		SP_CHECK(p->t.tr == &sp_record_transport);
		SP_CHECK(p->peer.handed_off);
	}
}

static void case_small_write(int f)
{
	struct pair p;
	uint8_t buf[64];
	size_t taken = 0;

	SP_CHECK_EQ_INT(pair_ready(&p, flavours[f]), 0);
	check_flavour(&p, f);
	SP_CHECK_EQ_INT(sp_tio_write(&p.t, (const uint8_t *)"hello, device", 13, &taken),
	                SP_IO_DONE);
	SP_CHECK_EQ_INT(taken, 13);
	SP_CHECK_EQ_INT(client_read(&p, buf, sizeof(buf)), 13);
	SP_CHECK_MEM(buf, "hello, device", 13);
	pair_close(&p);
}

static void case_pieces(int f)
{
	struct pair p;
	struct sink s = {0};
	uint8_t msg[5000];

	fill(msg, sizeof(msg), 7);
	SP_CHECK_EQ_INT(pair_ready(&p, flavours[f]), 0);
	for (size_t off = 0; off < sizeof(msg); off += 50)
		SP_CHECK_EQ_INT(SSL_write(p.c, msg + off, 50), 50); /* 100 records */
	SP_CHECK_EQ_INT(server_read_all(&p, &s), SP_IO_WANT_READ);
	SP_CHECK_EQ_INT(s.len, sizeof(msg));
	SP_CHECK(s.len == sizeof(msg) && memcmp(s.buf, msg, sizeof(msg)) == 0);
	free(s.buf);
	pair_close(&p);
}

static void case_big_write(int f)
{
	const size_t n = 1 << 20;
	uint8_t *msg = malloc(n), *got = malloc(n);
	struct pair p;
	size_t off = 0, have = 0, taken;
	int r = -1, want_write = 0;

	SP_CHECK(msg && got);
	if (!msg || !got)
		goto out;
	fill(msg, n, 3);
	SP_CHECK_EQ_INT(pair_ready(&p, flavours[f]), 0);
	for (int i = 0; i < 10000 && (off < n || r != SP_IO_DONE); i++) {
		r = sp_tio_write(&p.t, msg + off, n - off, &taken);
		SP_CHECK(taken <= n - off);
		off += taken;
		if (r == SP_IO_WANT_WRITE)
			want_write++;
		else if (r != SP_IO_DONE)
			break;
		have += client_read(&p, got + have, n - have);
	}
	SP_CHECK_EQ_INT(r, SP_IO_DONE);
	SP_CHECK_EQ_INT(off, n);
	SP_CHECK(want_write > 0); /* a socket pair holds far less than 1 MiB */
	have += client_read(&p, got + have, n - have);
	SP_CHECK_EQ_INT(have, n);
	SP_CHECK(have == n && memcmp(got, msg, n) == 0);
	pair_close(&p);
out:
	free(msg);
	free(got);
}

static void case_close_notify(int f)
{
	struct pair p;
	struct sink s = {0};
	uint8_t buf[16];

	SP_CHECK_EQ_INT(pair_ready(&p, flavours[f]), 0);
	SP_CHECK_EQ_INT(SSL_write(p.c, "bye", 3), 3);
	SP_CHECK_EQ_INT(SSL_shutdown(p.c), 0); /* close_notify sent, the relay's not yet seen */
	SP_CHECK_EQ_INT(server_read_all(&p, &s), SP_IO_CLOSED);
	SP_CHECK(s.len == 3 && memcmp(s.buf, "bye", 3) == 0);
	SP_CHECK(!(p.t.flags & SP_TIO_DEAD));
	sp_tio_shutdown(&p.t); /* the relay answers with its own */
	SP_CHECK_EQ_INT(SSL_read(p.c, buf, sizeof(buf)), 0);
	SP_CHECK_EQ_INT(SSL_get_error(p.c, 0), SSL_ERROR_ZERO_RETURN);
	free(s.buf);
	pair_close(&p);
}

static void case_abrupt_close(int f)
{
	struct pair p;
	struct sink s = {0};

	SP_CHECK_EQ_INT(pair_ready(&p, flavours[f]), 0);
	SP_CHECK_EQ_INT(SSL_write(p.c, "x", 1), 1);
	close(p.cfd); /* no close_notify */
	p.cfd = -1;
	SP_CHECK_EQ_INT(server_read_all(&p, &s), SP_IO_BROKEN);
	SP_CHECK_EQ_INT(s.len, 1);
	free(s.buf);
	pair_close(&p);
}

static void case_garbage(int f)
{
	static const char junk[] = "GET / HTTP/1.1\r\nHost: relay\r\n\r\n";
	struct pair p;
	struct sink s = {0};
	int r;

	SP_CHECK_EQ_INT(pair_ready(&p, flavours[f]), 0);
	SP_CHECK_EQ_INT(write(p.cfd, junk, sizeof(junk) - 1), (ssize_t)sizeof(junk) - 1);
	r = server_read_all(&p, &s);
	/* The record layer names a broken record (PROTOCOL, after its alert); OpenSSL reports
	 * any TLS error as BROKEN. Either way nothing reached the input, and no close_notify may
	 * follow. */
	if (flavours[f] & SP_TIO_NO_HANDOFF)
		SP_CHECK_EQ_INT(r, SP_IO_BROKEN);
	else
		SP_CHECK_EQ_INT(r, SP_IO_PROTOCOL);
	SP_CHECK(p.t.flags & SP_TIO_DEAD);
	SP_CHECK_EQ_INT(s.len, 0);
	free(s.buf);
	pair_close(&p);
}

static void case_key_update(int f)
{
	struct pair p;
	struct sink s = {0};
	uint8_t buf[64];
	size_t taken;

	SP_CHECK_EQ_INT(pair_ready(&p, flavours[f]), 0);
	SP_CHECK_EQ_INT(SSL_key_update(p.c, SSL_KEY_UPDATE_REQUESTED), 1);
	SP_CHECK_EQ_INT(SSL_write(p.c, "after", 5), 5); /* sent under the new key */
	SP_CHECK_EQ_INT(server_read_all(&p, &s), SP_IO_WANT_READ);
	SP_CHECK(s.len == 5 && memcmp(s.buf, "after", 5) == 0);
	/* The relay's answer (its own KeyUpdate) goes out with the next write; the client can
	 * read the data only if both sides moved to their new keys. */
	SP_CHECK_EQ_INT(sp_tio_write(&p.t, (const uint8_t *)"ack", 3, &taken), SP_IO_DONE);
	SP_CHECK_EQ_INT(taken, 3);
	SP_CHECK(!(p.t.flags & SP_TIO_KEY_UPDATE));
	SP_CHECK_EQ_INT(client_read(&p, buf, sizeof(buf)), 3);
	SP_CHECK_MEM(buf, "ack", 3);
	SP_CHECK_EQ_INT(SSL_write(p.c, "more", 4), 4);
	s.len = 0;
	SP_CHECK_EQ_INT(server_read_all(&p, &s), SP_IO_WANT_READ);
	SP_CHECK(s.len == 4 && memcmp(s.buf, "more", 4) == 0);
	free(s.buf);
	pair_close(&p);
}

static void case_input_stops(int f)
{
	struct pair p;
	struct sink s = {.stop_after = 1};

	SP_CHECK_EQ_INT(pair_ready(&p, flavours[f]), 0);
	for (int i = 0; i < 10; i++)
		SP_CHECK_EQ_INT(SSL_write(p.c, "0123456789", 10), 10);
	SP_CHECK_EQ_INT(sp_tio_read(&p.t, sink_input, &s), SP_IO_WANT_READ);
	SP_CHECK_EQ_INT(s.calls, 1); /* nothing more after the refusal */
	SP_CHECK_EQ_INT(s.len, 10);
	free(s.buf);
	pair_close(&p);
}

static void case_read_budget(int f)
{
	sp_tio_env_t saved = env;
	struct pair p;
	struct sink s = {0};
	uint8_t msg[48 * 1024];
	int r, again = 0;

	fill(msg, sizeof(msg), 11);
	env.reads_per_call = 1;
	env.scratch_len = 4096; /* less than what is pending, so one call cannot take it all */
	SP_CHECK_EQ_INT(pair_ready(&p, flavours[f]), 0);
	SP_CHECK_EQ_INT(client_write(&p, msg, sizeof(msg)), 0);
	for (int i = 0; i < 1000; i++) {
		r = sp_tio_read(&p.t, sink_input, &s);
		if (r != SP_IO_AGAIN)
			break;
		again++;
	}
	SP_CHECK(again > 0);
	SP_CHECK_EQ_INT(r, SP_IO_WANT_READ);
	SP_CHECK_EQ_INT(server_read_all(&p, &s), SP_IO_WANT_READ); /* OpenSSL: the next records */
	SP_CHECK(s.len == sizeof(msg) && memcmp(s.buf, msg, sizeof(msg)) == 0);
	free(s.buf);
	pair_close(&p);
	env = saved;
}

static void (*const cases[])(int) = {
        case_small_write, case_pieces,     case_big_write,   case_close_notify, case_abrupt_close,
        case_garbage,     case_key_update, case_input_stops, case_read_budget,
};
static const char *const case_names[] = {
        "small write", "pieces",    "1 MiB write", "close_notify", "abrupt close",
        "garbage",     "KeyUpdate", "input stops", "read budget",
};

/* One TAP case per (case, implementation): "pieces, openssl", ... */
static void run_table(void)
{
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++)
		for (int f = 0; f < 2; f++) {
			char name[64];

			snprintf(name, sizeof(name), "%s, %s", case_names[c], flavour_names[f]);
			sp_test_run_arg(name, cases[c], f);
		}
}

/* ---- handshake refusals ------------------------------------------------------------------- */

static void test_no_client_cert(void)
{
	struct pair p;

	SP_CHECK_EQ_INT(pair_open(&p, 0, false, true), 0);
	SP_CHECK_EQ_INT(pair_handshake(&p), SP_IO_FAILED);
	SP_CHECK_EQ_INT(p.t.hs_cause, SP_HS_NO_CERT);
	pair_close(&p);
}

static void test_no_alpn(void)
{
	struct pair p;

	SP_CHECK_EQ_INT(pair_open(&p, 0, true, false), 0);
	SP_CHECK_EQ_INT(pair_handshake(&p), SP_IO_FAILED);
	SP_CHECK_EQ_INT(p.t.hs_cause, SP_HS_NO_ALPN);
	pair_close(&p);
}

static void test_peer(void)
{
	struct pair p;
	uint8_t token[32];

	SP_CHECK_EQ_INT(pair_ready(&p, 0), 0);
	SP_CHECK_EQ_INT(sp_token_from_cert(pki.cli, token), 0);
	SP_CHECK_MEM(p.peer.token, token, 32);
	SP_CHECK_EQ_INT(p.peer.serial_len, 1); /* serial 3 */
	SP_CHECK_EQ_INT(p.peer.serial[0], 3);
	SP_CHECK(!p.peer.resumed);
	pair_close(&p);
}

int main(void)
{
	char err[512], path[3][600];

	SP_CHECK_EQ_INT(pki_make(), 0);
	if (!mkdtemp(dir) || pki_write(dir) < 0) {
		printf("Bail out! cannot write the PKI\n");
		return 1;
	}
	snprintf(path[0], sizeof(path[0]), "%s/server.crt", dir);
	snprintf(path[1], sizeof(path[1]), "%s/server.key", dir);
	snprintf(path[2], sizeof(path[2]), "%s/ca.crt", dir);
	srv.cfg.tls_cert = path[0];
	srv.cfg.tls_key = path[1];
	srv.cfg.client_ca = path[2];
	if (sp_tls_start(&srv, err, sizeof(err)) < 0) {
		printf("Bail out! sp_tls_start: %s\n", err);
		return 1;
	}
	env = (sp_tio_env_t){.scratch = scratch,
	                     .scratch_len = sizeof(scratch),
	                     .seal = seal_buf,
	                     .seal_len = sizeof(seal_buf),
	                     .rlcx = sp_rl_crypto_new(),
	                     .tls = srv.tls,
	                     .reads_per_call = 16};
	run_table();
	SP_RUN(test_no_client_cert);
	SP_RUN(test_no_alpn);
	SP_RUN(test_peer);
	sp_rl_crypto_free(env.rlcx);
	sp_tls_stop(&srv);
	pki_free();
	for (int i = 0; i < 5; i++) {
		static const char *const names[] = {"ca.crt", "server.crt", "server.key",
		                                    "device.crt", "device.key"};
		char f[600];

		snprintf(f, sizeof(f), "%s/%s", dir, names[i]);
		unlink(f);
	}
	rmdir(dir);
	return sp_test_done();
}
