/*
 * idle_conns.c: open N idle sealpush connections (TLS 1.3 + mTLS + HELLO/WELCOME) and hold them.
 *
 * Build (not part of meson):
 *   gcc -O2 -Wall -Wextra -o /tmp/idle_conns bench/idle/idle_conns.c -lssl -lcrypto
 *
 * One process, one epoll loop, non-blocking connect + SSL_do_handshake. Connections are started
 * at RATE per second with at most MAXINFLIGHT handshakes in progress; a connection that fails
 * before WELCOME is retried (up to 3*N attempts in all). Once every connection has its WELCOME
 * the process prints "ALL_READY n" on stderr and then holds them idle (answering a PING with a
 * PONG, should the server send one) until SIGTERM/SIGINT or the hold time (-t) is over.
 *
 * Client certificates: DIR/PREFIX<i>.crt and .key for i in [FIRST, FIRST+COUNT), used round
 * robin; with -k 1 every connection uses the same one. Use -s (SEND_ONLY) when certificates are
 * shared, otherwise a second receiving connection of the same token replaces the first.
 *
 * Usage:
 *   idle_conns -p PORT -d CERTDIR -P PREFIX [-f FIRST] [-k COUNT] -n N [-r RATE] [-m MAXINFLIGHT]
 *              [-s] [-H HOST] [-b SRCADDR] [-t HOLD_S] [-i PROGRESS_S] [-K KEEPALIVE_S]
 *              [-A] [-S TLS13_SUITES] [-G GROUPS]
 *   The CA that signed the server certificate is read from CERTDIR/ca.crt.
 *   -A sends the leaf certificate only (SSL_MODE_NO_AUTO_CHAIN). Without it OpenSSL, like any
 *      client that loads the CA as its trust store and sets no chain, builds the chain from the
 *      trust store and also sends the CA certificate, which the server then decodes and keeps.
 *   -S / -G restrict the TLS 1.3 cipher suites / key-exchange groups offered (e.g.
 *      -S TLS_CHACHA20_POLY1305_SHA256, -G P-256) to see what the server keeps for each.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { ST_FREE, ST_CONNECTING, ST_HANDSHAKE, ST_HELLO_SENT, ST_READY };

typedef struct conn {
	int fd;
	uint8_t state;
	uint8_t want_out; /* EPOLLOUT currently requested */
	uint16_t have;    /* bytes of the WELCOME (or current frame) in buf */
	uint32_t cert;
	SSL *ssl;
	double t_start;
	uint8_t buf[512];
} conn_t;

static volatile sig_atomic_t stop;
static SSL_CTX *ctx;
static X509 **certs;
static EVP_PKEY **keys;
static int n_certs;
static int epfd;
static struct sockaddr_in dst, src;
static int have_src;
static int send_only;
static unsigned keepalive = 3600;
static long n_target, n_ready, n_inflight, n_started, n_failed, n_closed, n_attempts;
static conn_t *conns;
static int *free_idx, n_free_idx;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_signal(int s)
{
	(void)s;
	stop = 1;
}

static void die(const char *what)
{
	fprintf(stderr, "idle_conns: %s\n", what);
	ERR_print_errors_fp(stderr);
	exit(1);
}

static void set_events(conn_t *c, int out)
{
	struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0),
	                         .data.u32 = (uint32_t)(c - conns)};

	if (c->want_out == out)
		return;
	c->want_out = (uint8_t)out;
	epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_drop(conn_t *c, int failed, const char *why)
{
	static int reported;

	if (c->state == ST_READY) {
		n_ready--;
		n_closed++;
		if (reported++ < 5)
			fprintf(stderr, "idle_conns[%d]: ready connection closed: %s\n", getpid(),
			        why);
	} else {
		n_inflight--;
		if (failed)
			n_failed++;
		if (failed && reported++ < 5)
			fprintf(stderr, "idle_conns[%d]: connection failed: %s\n", getpid(), why);
	}
	if (c->ssl)
		SSL_free(c->ssl);
	c->ssl = NULL;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->state = ST_FREE;
	free_idx[n_free_idx++] = (int)(c - conns);
	ERR_clear_error();
}

static void start_one(void)
{
	conn_t *c;
	int fd, one = 1;
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT};

	if (n_free_idx == 0)
		return;
	c = &conns[free_idx[--n_free_idx]];
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		perror("socket");
		exit(1);
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (have_src) {
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
			perror("bind");
			exit(1);
		}
	}
	c->fd = fd;
	c->state = ST_CONNECTING;
	c->have = 0;
	c->want_out = 1;
	c->cert = (uint32_t)((c - conns) % n_certs); /* a retry keeps its certificate */
	c->t_start = now_s();
	n_attempts++;
	n_inflight++;
	n_started++;
	if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0 && errno != EINPROGRESS) {
		conn_drop(c, 1, strerror(errno));
		return;
	}
	ev.data.u32 = (uint32_t)(c - conns);
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		perror("epoll_ctl");
		exit(1);
	}
}

/* Reads frames while SSL_read gives bytes. Returns 0, or -1 if the connection was dropped. */
static int conn_read(conn_t *c)
{
	for (;;) {
		int n, e;

		ERR_clear_error();
		n = SSL_read(c->ssl, c->buf + c->have, (int)(sizeof(c->buf) - c->have));
		if (n <= 0) {
			e = SSL_get_error(c->ssl, n);
			if (e == SSL_ERROR_WANT_READ) {
				set_events(c, 0);
				return 0;
			}
			if (e == SSL_ERROR_WANT_WRITE) {
				set_events(c, 1);
				return 0;
			}
			conn_drop(c, c->state != ST_READY,
			          e == SSL_ERROR_ZERO_RETURN ? "close_notify" : "TLS error or EOF");
			return -1;
		}
		c->have = (uint16_t)(c->have + n);
		/* Whole frames at the front of buf. */
		while (c->have >= 6) {
			uint32_t len = ((uint32_t)c->buf[2] << 24) | ((uint32_t)c->buf[3] << 16) |
			               ((uint32_t)c->buf[4] << 8) | c->buf[5];
			uint8_t type = c->buf[0];

			if (len + 6 > sizeof(c->buf)) {
				conn_drop(c, 1, "frame too large for this client");
				return -1;
			}
			if (c->have < len + 6)
				break;
			if (c->state == ST_HELLO_SENT) {
				if (type != 0x02) {
					char why[64];

					snprintf(why, sizeof(why),
					         "expected WELCOME, got frame type 0x%02x", type);
					conn_drop(c, 1, why);
					return -1;
				}
				c->state = ST_READY;
				n_inflight--;
				n_ready++;
			} else if (type == 0x07) { /* PING: answer PONG with the same body */
				c->buf[0] = 0x08;
				SSL_write(c->ssl, c->buf, (int)(len + 6));
			}
			memmove(c->buf, c->buf + len + 6, c->have - (len + 6));
			c->have = (uint16_t)(c->have - (len + 6));
		}
	}
}

static void conn_event(conn_t *c, uint32_t events)
{
	int r, e;

	if (c->state == ST_CONNECTING) {
		int err = 0;
		socklen_t l = sizeof(err);

		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
		if (err || (events & (EPOLLERR | EPOLLHUP))) {
			conn_drop(c, 1, err ? strerror(err) : "connect: hangup");
			return;
		}
		c->ssl = SSL_new(ctx);
		if (!c->ssl)
			die("SSL_new");
		SSL_set_fd(c->ssl, c->fd);
		if (SSL_use_certificate(c->ssl, certs[c->cert]) != 1 ||
		    SSL_use_PrivateKey(c->ssl, keys[c->cert]) != 1)
			die("SSL_use_certificate/PrivateKey");
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), inet_ntoa(dst.sin_addr));
		SSL_set_connect_state(c->ssl);
		c->state = ST_HANDSHAKE;
	}
	if (c->state == ST_HANDSHAKE) {
		uint8_t hello[14] = {0x01, 0x00, 0,    0,    0,    8, 0x0b,
		                     0x02, 0x00, 0x01, 0x0d, 0x02, 0, 0};

		ERR_clear_error();
		r = SSL_do_handshake(c->ssl);
		if (r != 1) {
			e = SSL_get_error(c->ssl, r);
			if (e == SSL_ERROR_WANT_READ) {
				set_events(c, 0);
				return;
			}
			if (e == SSL_ERROR_WANT_WRITE) {
				set_events(c, 1);
				return;
			}
			{
				char why[200];
				unsigned long ee = ERR_peek_error();

				snprintf(why, sizeof(why), "handshake: ssl_err=%d %s", e,
				         ee ? ERR_reason_error_string(ee) : strerror(errno));
				conn_drop(c, 1, why);
			}
			return;
		}
		hello[1] = send_only ? 0x01 : 0x00;
		hello[12] = (uint8_t)(keepalive >> 8);
		hello[13] = (uint8_t)keepalive;
		ERR_clear_error();
		if (SSL_write(c->ssl, hello, sizeof(hello)) != (int)sizeof(hello)) {
			conn_drop(c, 1, "SSL_write HELLO");
			return;
		}
		c->state = ST_HELLO_SENT;
		set_events(c, 0);
	}
	conn_read(c);
}

static void load_certs(const char *dir, const char *prefix, int first, int count)
{
	char path[4096];

	certs = calloc((size_t)count, sizeof(*certs));
	keys = calloc((size_t)count, sizeof(*keys));
	for (int i = 0; i < count; i++) {
		FILE *f;

		snprintf(path, sizeof(path), "%s/%s%d.crt", dir, prefix, first + i);
		if (!(f = fopen(path, "r")) || !(certs[i] = PEM_read_X509(f, NULL, NULL, NULL))) {
			fprintf(stderr, "idle_conns: cannot read %s\n", path);
			exit(1);
		}
		fclose(f);
		snprintf(path, sizeof(path), "%s/%s%d.key", dir, prefix, first + i);
		if (!(f = fopen(path, "r")) ||
		    !(keys[i] = PEM_read_PrivateKey(f, NULL, NULL, NULL))) {
			fprintf(stderr, "idle_conns: cannot read %s\n", path);
			exit(1);
		}
		fclose(f);
	}
	n_certs = count;
}

static long rss_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld", &v) == 1)
			break;
	if (f)
		fclose(f);
	return v;
}

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1", *dir = NULL, *prefix = NULL, *srcaddr = NULL;
	int port = 0, first = 0, count = 1, opt;
	double rate = 1000, hold = 0, interval = 2;
	long maxinflight = 100, n = 0;
	char path[4096];
	struct epoll_event evs[256];
	double t0, t_last = 0, t_all = 0;
	int announced = 0, no_chain = 0;
	const char *suites = NULL, *groups = NULL;

	while ((opt = getopt(argc, argv, "H:p:d:P:f:k:n:r:m:sb:t:i:K:AS:G:")) != -1) {
		switch (opt) {
		case 'H':
			host = optarg;
			break;
		case 'p':
			port = atoi(optarg);
			break;
		case 'd':
			dir = optarg;
			break;
		case 'P':
			prefix = optarg;
			break;
		case 'f':
			first = atoi(optarg);
			break;
		case 'k':
			count = atoi(optarg);
			break;
		case 'n':
			n = atol(optarg);
			break;
		case 'r':
			rate = atof(optarg);
			break;
		case 'm':
			maxinflight = atol(optarg);
			break;
		case 's':
			send_only = 1;
			break;
		case 'b':
			srcaddr = optarg;
			break;
		case 't':
			hold = atof(optarg);
			break;
		case 'i':
			interval = atof(optarg);
			break;
		case 'K':
			keepalive = (unsigned)atoi(optarg);
			break;
		case 'A':
			no_chain = 1;
			break;
		case 'S':
			suites = optarg;
			break;
		case 'G':
			groups = optarg;
			break;
		default:
			fprintf(stderr, "usage: see the comment at the top of idle_conns.c\n");
			return 2;
		}
	}
	if (!port || !dir || !prefix || n <= 0 || count <= 0) {
		fprintf(stderr, "usage: idle_conns -p PORT -d CERTDIR -P PREFIX -n N [options]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	memset(&dst, 0, sizeof(dst));
	dst.sin_family = AF_INET;
	dst.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &dst.sin_addr) != 1)
		die("bad -H address (IPv4 only)");
	if (srcaddr) {
		src.sin_family = AF_INET;
		if (inet_pton(AF_INET, srcaddr, &src.sin_addr) != 1)
			die("bad -b address");
		have_src = 1;
	}

	ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx)
		die("SSL_CTX_new");
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | (no_chain ? SSL_MODE_NO_AUTO_CHAIN : 0));
	if (suites && SSL_CTX_set_ciphersuites(ctx, suites) != 1)
		die("bad -S cipher suites");
	if (groups && SSL_CTX_set1_groups_list(ctx, groups) != 1)
		die("bad -G groups");
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)"\x0asealpush/1", 11) != 0)
		die("ALPN");
	snprintf(path, sizeof(path), "%s/ca.crt", dir);
	if (SSL_CTX_load_verify_locations(ctx, path, NULL) != 1)
		die("cannot load CERTDIR/ca.crt");
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	load_certs(dir, prefix, first, count);

	n_target = n;
	conns = calloc((size_t)n, sizeof(*conns));
	free_idx = malloc((size_t)n * sizeof(*free_idx));
	for (long i = n - 1; i >= 0; i--) {
		conns[i].fd = -1;
		free_idx[n_free_idx++] = (int)i;
	}
	epfd = epoll_create1(EPOLL_CLOEXEC);
	t0 = now_s();
	while (!stop) {
		double t = now_s();
		int k, timeout = 5;

		/* Start connections at the configured rate, bounded by the in-flight cap. */
		while (n_ready + n_inflight < n_target && n_inflight < maxinflight &&
		       n_started < (long)(rate * (t - t0)) + 1 && n_attempts < 3 * n_target)
			start_one();
		if (n_attempts >= 3 * n_target && n_inflight == 0 && n_ready < n_target) {
			fprintf(stderr,
			        "idle_conns[%d]: giving up after %ld attempts (ready %ld)\n",
			        getpid(), n_attempts, n_ready);
			return 1;
		}
		if (n_ready + n_inflight >= n_target && n_inflight == 0)
			timeout = 1000;
		k = epoll_wait(epfd, evs, 256, timeout);
		for (int i = 0; i < k; i++) {
			conn_t *c = &conns[evs[i].data.u32];

			if (c->state != ST_FREE)
				conn_event(c, evs[i].events);
		}
		/* Handshakes that take too long (30 s) are retried. */
		if (n_inflight > 0 && t - t_last >= 1.0) {
			for (long i = 0; i < n_target; i++)
				if (conns[i].state != ST_FREE && conns[i].state != ST_READY &&
				    t - conns[i].t_start > 30)
					conn_drop(&conns[i], 1, "no WELCOME within 30 s");
		}
		t = now_s();
		if (n_ready == n_target && !announced) {
			announced = 1;
			t_all = t;
			fprintf(stderr,
			        "idle_conns[%d]: ALL_READY %ld in %.1f s (failed %ld) rss=%ld "
			        "KiB\n",
			        getpid(), n_ready, t - t0, n_failed, rss_kib());
		}
		if (t - t_last >= interval) {
			t_last = t;
			if (!announced || n_closed)
				fprintf(stderr,
				        "idle_conns[%d]: t=%.1f started=%ld ready=%ld inflight=%ld "
				        "failed=%ld closed=%ld\n",
				        getpid(), t - t0, n_started, n_ready, n_inflight, n_failed,
				        n_closed);
		}
		if (announced && hold > 0 && t - t_all >= hold)
			break;
	}
	fprintf(stderr, "idle_conns[%d]: exiting: ready=%ld failed=%ld closed=%ld\n", getpid(),
	        n_ready, n_failed, n_closed);
	/* The sockets close at exit; no close_notify (an idle-memory test does not need one). */
	return n_ready == n_target ? 0 : 1;
}
