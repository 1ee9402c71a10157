/*
 * sealpush-bench: the load generator for a sealpush relay (issue 6).
 *
 * Scenarios (this version): "throughput" and "queue". Both use a lean client path: raw
 * OpenSSL (TLS 1.3, ALPN sealpush/1, one client certificate per connection) on non-blocking
 * sockets, driven by libevent; frames are encoded with sp_frame_encode() into a per-connection
 * output buffer and decoded with sp_frame_decode() over the read buffer.
 *
 * Who owns what. The main thread parses options, loads identities, creates --threads bench
 * threads and then only orchestrates: it moves the global phase forward, prints the progress
 * line each second, and reads the per-thread counters (relaxed atomics). Each bench thread
 * owns one event base (EVENT_BASE_FLAG_NOLOCK), its connections, its histogram and its
 * arrays; it looks at the phase from a periodic tick (1 ms) and from its callbacks. Shared
 * arrays in the queue scenario (per-message status and arrival counts) are written by exactly
 * one thread per element: a message's SEND_RESULT arrives on its sender's thread during the
 * enqueue phase, its DELIVER on its device's thread during the drain phase, and the phases
 * are separated by the main thread (release store of the phase, acquire loads).
 *
 * Message ids: run nonce (8 random bytes) | sequence u32 (queue: message index) | thread u16 |
 * connection u16. Blobs: CLOCK_MONOTONIC nanoseconds (u64, host order) at the time the SEND
 * was encoded (written to the socket in the same callback), then zeros up to --blob bytes.
 */
#include "sb_hist.h"
#include "sb_ident.h"
#include "sp_frame.h"
#include "sp_version.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define SB_READ_CHUNK      (64 * 1024)
#define SB_MAX_IN_FRAME    (SP_MAX_FRAME_V1)
#define SB_ACK_MAX         65535
#define SB_CONNECT_TIMEOUT 30.0 /* seconds for every connection to be READY */
#define SB_DRAIN_TIMEOUT   10.0 /* seconds for answers after the senders stop / no progress */

enum sb_scenario { SB_THROUGHPUT, SB_QUEUE };

/* The global phase, moved forward by the main thread only. */
enum sb_phase {
	PH_CONNECT,      /* connect what this phase needs (throughput: all; queue: senders) */
	PH_WARMUP,       /* throughput: send, do not record */
	PH_MEASURE,      /* throughput: send and record */
	PH_STOP_SENDING, /* throughput: no new SENDs, collect what is owed */
	PH_ENQUEUE,      /* queue: senders send their share */
	PH_DRAIN,        /* queue: senders closed, devices connect and drain */
	PH_QUIT,         /* close everything, leave the loop */
};

enum sb_state { CS_IDLE, CS_CONNECTING, CS_HANDSHAKE, CS_HELLO_SENT, CS_READY, CS_DEAD };

typedef struct sb_opts {
	enum sb_scenario scenario;
	const char *host;
	uint16_t port;
	const char *ca_dir;
	const char *ca_tool;
	unsigned threads;
	unsigned pairs;
	unsigned window;
	double rate; /* messages/s in total; 0 = closed loop */
	unsigned blob;
	double duration;
	double warmup;
	unsigned messages;
	unsigned devices;
	unsigned senders;
	unsigned recv_window;
	bool json;
} sb_opts_t;

struct sb_thread;

typedef struct sb_conn {
	struct sb_thread *t;
	int fd;
	uint8_t state;
	bool sender;
	bool want_write; /* wev is pending */
	uint16_t idx;    /* within the thread */
	const sb_ident_t *id;
	const uint8_t *peer_token; /* throughput sender: its receiver's token */
	SSL *ssl;
	struct event *rev, *wev;
	uint8_t *in;
	size_t in_len, in_cap;
	uint8_t *out;
	size_t out_len, out_off, out_cap;
	uint8_t *acks; /* msg ids to acknowledge at the end of this read burst */
	size_t n_acks, acks_cap;
	uint32_t window;   /* most unanswered SENDs we keep */
	uint32_t inflight; /* SENDs without a complete answer */
	uint64_t sent;     /* SENDs encoded on this connection */
	uint64_t quota;    /* queue: messages this sender sends; throughput: unlimited */
	uint32_t q_first;  /* queue: message index of this sender's first message */
	double rate;       /* open loop: messages/s of this sender */
} sb_conn_t;

/* Counters the main thread reads while the thread runs. */
typedef struct sb_counters {
	_Atomic uint64_t ready, dead;
	_Atomic uint64_t sent, results, delivered, acked;
	_Atomic uint64_t accepted, refused; /* SEND_RESULT entries */
	_Atomic uint64_t errors;            /* ERROR, GOAWAY, codec errors, broken connections */
	_Atomic uint64_t stalled;           /* open loop: a due SEND held back by the window */
	_Atomic uint64_t unique, dups, stale;
	_Atomic uint64_t last_result_ns, last_deliver_ns, first_connect_ns;
} sb_counters_t;

typedef struct sb_thread {
	unsigned no;
	pthread_t tid;
	struct event_base *base;
	struct event *tick;
	sb_conn_t *conns;
	unsigned n_conns;
	unsigned n_senders; /* conns[0..n_senders) send, the rest receive */
	int last_phase;
	uint64_t t_sched0; /* open loop: when the senders started */
	uint64_t status[256];
	sb_hist_t hist;
	sb_counters_t c;
	uint8_t blob[]; /* --blob bytes, reused for every SEND */
} sb_thread_t;

static sb_opts_t opt = {
        .scenario = SB_THROUGHPUT,
        .host = "127.0.0.1",
        .port = 7443,
        .threads = 1,
        .pairs = 100,
        .window = 32,
        .blob = 256,
        .duration = 10,
        .warmup = 2,
        .messages = 100000,
        .devices = 100,
        .recv_window = 1024,
};
static _Atomic int g_phase = PH_CONNECT;
static volatile sig_atomic_t g_interrupted;
static SSL_CTX *g_ctx;
static struct sockaddr_storage g_addr;
static socklen_t g_addr_len;
static bool g_host_is_ip;
static uint8_t g_nonce[8];
static sb_ident_t *g_send_ids, *g_recv_ids;
static _Atomic uint8_t *g_qstatus; /* queue: per message, 0 unanswered, 1 + status */
static _Atomic uint8_t *g_arrived; /* queue: per message, DELIVERs seen (saturating) */
static sb_thread_t **g_threads;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double ns_to_s(uint64_t ns)
{
	return (double)ns / 1e9;
}

static int phase_get(void)
{
	return atomic_load_explicit(&g_phase, memory_order_acquire);
}

static void phase_set(int p)
{
	atomic_store_explicit(&g_phase, p, memory_order_release);
}

static void cnt_add(_Atomic uint64_t *c, uint64_t v)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
	                      memory_order_relaxed);
}

static uint64_t cnt_get(_Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

static void cnt_set(_Atomic uint64_t *c, uint64_t v)
{
	atomic_store_explicit(c, v, memory_order_relaxed);
}

/* ---- connection I/O ------------------------------------------------------------------------ */

static void conn_io(evutil_socket_t fd, short what, void *arg);
static int buf_reserve(uint8_t **buf, size_t *cap, size_t need);

static void conn_report(sb_conn_t *c, const char *what)
{
	static _Atomic unsigned reported;
	unsigned long e = ERR_peek_error();

	if (atomic_fetch_add(&reported, 1) < 10)
		fprintf(stderr, "\nsealpush-bench: thread %u %s conn %u: %s%s%s\n", c->t->no,
		        c->sender ? "sender" : "receiver", c->idx, what, e ? ": " : "",
		        e ? ERR_reason_error_string(e) : "");
}

/* Frees what a connection holds, except its buffers (reused by nobody, freed at exit). */
static void conn_teardown(sb_conn_t *c)
{
	if (c->state == CS_READY)
		cnt_add(&c->t->c.ready, (uint64_t)-1);
	if (c->rev != NULL)
		event_free(c->rev);
	if (c->wev != NULL)
		event_free(c->wev);
	c->rev = c->wev = NULL;
	SSL_free(c->ssl);
	c->ssl = NULL;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->state = CS_DEAD;
	ERR_clear_error();
}

/* Tears a connection down (no close_notify: this is for broken ones) and counts it. */
static void conn_fail(sb_conn_t *c, const char *why)
{
	if (c->state == CS_DEAD)
		return;
	if (phase_get() != PH_QUIT) {
		conn_report(c, why);
		cnt_add(&c->t->c.errors, 1);
		cnt_add(&c->t->c.dead, 1);
	}
	conn_teardown(c);
}

/* Orderly close: close_notify (best effort on a non-blocking socket), then close. */
static void conn_close(sb_conn_t *c)
{
	if (c->state == CS_IDLE || c->state == CS_DEAD)
		return;
	if (c->ssl != NULL && c->state >= CS_HELLO_SENT) {
		ERR_clear_error();
		SSL_shutdown(c->ssl);
	}
	conn_teardown(c);
}

static int conn_start(sb_conn_t *c)
{
	int one = 1;

	if (buf_reserve(&c->out, &c->out_cap, 16384) < 0) {
		conn_fail(c, "out of memory");
		return -1;
	}
	c->fd = socket(g_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		conn_fail(c, "socket");
		return -1;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, (struct sockaddr *)&g_addr, g_addr_len) < 0 && errno != EINPROGRESS) {
		conn_fail(c, strerror(errno));
		return -1;
	}
	c->rev = event_new(c->t->base, c->fd, EV_READ | EV_PERSIST, conn_io, c);
	c->wev = event_new(c->t->base, c->fd, EV_WRITE, conn_io, c);
	if (c->rev == NULL || c->wev == NULL) {
		conn_fail(c, "event_new");
		return -1;
	}
	c->state = CS_CONNECTING;
	c->want_write = true;
	event_add(c->wev, NULL);
	if (cnt_get(&c->t->c.first_connect_ns) == 0)
		cnt_set(&c->t->c.first_connect_ns, now_ns());
	return 0;
}

static void conn_want_write(sb_conn_t *c)
{
	if (!c->want_write) {
		c->want_write = true;
		event_add(c->wev, NULL);
	}
}

static int buf_reserve(uint8_t **buf, size_t *cap, size_t need)
{
	size_t n = *cap ? *cap : 4096;
	uint8_t *p;

	if (need <= *cap)
		return 0;
	while (n < need)
		n *= 2;
	p = realloc(*buf, n);
	if (p == NULL)
		return -1;
	*buf = p;
	*cap = n;
	return 0;
}

/* Appends the encoding of f to the output buffer. */
static int conn_put(sb_conn_t *c, sp_frame_t *f)
{
	size_t len = 0;
	int rc;

	rc = sp_frame_encode(f, c->out + c->out_len, c->out_cap - c->out_len, &len);
	if (rc == -SP_ERR_NOSPACE) {
		if (buf_reserve(&c->out, &c->out_cap, c->out_len + len) < 0)
			return -1;
		rc = sp_frame_encode(f, c->out + c->out_len, c->out_cap - c->out_len, &len);
	}
	if (rc < 0) {
		conn_fail(c, "sp_frame_encode failed");
		return -1;
	}
	c->out_len += len;
	return 0;
}

/* Writes what the output buffer holds. Returns 0 (all or part written) or -1 (dead). */
static int conn_flush(sb_conn_t *c)
{
	while (c->out_off < c->out_len) {
		size_t left = c->out_len - c->out_off;
		int n, e;

		ERR_clear_error();
		n = SSL_write(c->ssl, c->out + c->out_off, left > INT_MAX ? INT_MAX : (int)left);
		if (n > 0) {
			c->out_off += (size_t)n;
			continue;
		}
		e = SSL_get_error(c->ssl, n);
		if (e == SSL_ERROR_WANT_WRITE) {
			conn_want_write(c);
			return 0;
		}
		if (e == SSL_ERROR_WANT_READ)
			return 0;
		conn_fail(c, "SSL_write failed");
		return -1;
	}
	c->out_off = c->out_len = 0;
	return 0;
}

static void msg_id_make(sb_conn_t *c, uint32_t seq, uint8_t id[SP_MSG_ID_LEN])
{
	memcpy(id, g_nonce, 8);
	id[8] = (uint8_t)(seq >> 24);
	id[9] = (uint8_t)(seq >> 16);
	id[10] = (uint8_t)(seq >> 8);
	id[11] = (uint8_t)seq;
	id[12] = (uint8_t)(c->t->no >> 8);
	id[13] = (uint8_t)c->t->no;
	id[14] = (uint8_t)(c->idx >> 8);
	id[15] = (uint8_t)c->idx;
}

static uint32_t msg_id_seq(const uint8_t *id)
{
	return ((uint32_t)id[8] << 24) | ((uint32_t)id[9] << 16) | ((uint32_t)id[10] << 8) | id[11];
}

/* Encodes one SEND. Queue: message q_first + sent * senders goes to device (index/senders)%D. */
static int conn_send_one(sb_conn_t *c)
{
	sb_thread_t *t = c->t;
	uint8_t id[SP_MSG_ID_LEN];
	sp_frame_t f = {.type = SP_SEND};
	uint64_t ts = now_ns();
	uint32_t seq;

	if (opt.scenario == SB_QUEUE) {
		seq = c->q_first + (uint32_t)c->sent * opt.senders;
		f.recipients = g_recv_ids[(seq / opt.senders) % opt.devices].token;
	} else {
		seq = (uint32_t)c->sent;
		f.recipients = c->peer_token;
	}
	msg_id_make(c, seq, id);
	if (opt.blob >= sizeof(ts))
		memcpy(t->blob, &ts, sizeof(ts));
	f.fields = SP_BIT(SP_F_MSG_ID) | SP_BIT(SP_F_RECIPIENTS) | SP_BIT(SP_F_BLOB);
	f.msg_id = id;
	f.n_recipients = 1;
	f.blob = t->blob;
	f.blob_len = opt.blob;
	if (conn_put(c, &f) < 0)
		return -1;
	c->sent++;
	c->inflight++;
	cnt_add(&t->c.sent, 1);
	return 0;
}

/* Sends what the scenario and the phase allow now. */
static int conn_refill(sb_conn_t *c)
{
	int ph = phase_get();

	if (!c->sender || c->state != CS_READY)
		return 0;
	if (opt.scenario == SB_QUEUE) {
		if (ph != PH_ENQUEUE)
			return 0;
		while (c->inflight < c->window && c->sent < c->quota)
			if (conn_send_one(c) < 0)
				return -1;
		return 0;
	}
	if (ph != PH_WARMUP && ph != PH_MEASURE)
		return 0;
	if (opt.rate > 0) {
		uint64_t due = (uint64_t)(c->rate * ns_to_s(now_ns() - c->t->t_sched0)) + 1;

		while (c->sent < due) {
			if (c->inflight >= c->window) {
				cnt_add(&c->t->c.stalled, due - c->sent);
				break;
			}
			if (conn_send_one(c) < 0)
				return -1;
		}
		return 0;
	}
	while (c->inflight < c->window)
		if (conn_send_one(c) < 0)
			return -1;
	return 0;
}

static int conn_hello(sb_conn_t *c)
{
	sp_frame_t f = {.type = SP_HELLO};
	static const uint8_t agent[] = "sealpush-bench/" SP_VERSION;

	f.flags = c->sender ? SP_HELLO_SEND_ONLY : 0;
	f.fields = SP_BIT(SP_F_VERSION) | SP_BIT(SP_F_KEEPALIVE) | SP_BIT(SP_F_AGENT);
	f.version = SP_VERSION_1;
	f.keepalive = 3600;
	f.agent = agent;
	f.agent_len = (uint32_t)(sizeof(agent) - 1);
	if (!c->sender) {
		f.fields |= SP_BIT(SP_F_WINDOW);
		f.window = (uint16_t)opt.recv_window;
	}
	return conn_put(c, &f);
}

static int conn_ack_add(sb_conn_t *c, const uint8_t *id)
{
	if (buf_reserve(&c->acks, &c->acks_cap, (c->n_acks + 1) * SP_MSG_ID_LEN) < 0)
		return -1;
	memcpy(c->acks + c->n_acks * SP_MSG_ID_LEN, id, SP_MSG_ID_LEN);
	c->n_acks++;
	return 0;
}

static int conn_ack_flush(sb_conn_t *c)
{
	size_t done = 0;

	while (done < c->n_acks) {
		size_t n = c->n_acks - done;
		sp_frame_t f = {.type = SP_ACK};

		if (n > SB_ACK_MAX)
			n = SB_ACK_MAX;
		f.fields = SP_BIT(SP_F_MSG_IDS);
		f.msg_ids = c->acks + done * SP_MSG_ID_LEN;
		f.n_msg_ids = (uint32_t)n;
		if (conn_put(c, &f) < 0)
			return -1;
		done += n;
	}
	cnt_add(&c->t->c.acked, c->n_acks);
	c->n_acks = 0;
	return 0;
}

static void on_deliver(sb_conn_t *c, const sp_frame_t *f)
{
	sb_thread_t *t = c->t;
	uint64_t now = now_ns();

	cnt_add(&t->c.delivered, 1);
	cnt_set(&t->c.last_deliver_ns, now);
	if (opt.scenario == SB_QUEUE) {
		uint32_t seq = msg_id_seq(f->msg_id);

		if (memcmp(f->msg_id, g_nonce, 8) != 0 || seq >= opt.messages) {
			cnt_add(&t->c.stale, 1);
		} else {
			uint8_t a = atomic_load_explicit(&g_arrived[seq], memory_order_relaxed);

			if (a == 0)
				cnt_add(&t->c.unique, 1);
			else
				cnt_add(&t->c.dups, 1);
			if (a < 255)
				atomic_store_explicit(&g_arrived[seq], (uint8_t)(a + 1),
				                      memory_order_relaxed);
		}
	} else if (phase_get() == PH_MEASURE && f->blob_len >= 8 &&
	           memcmp(f->msg_id, g_nonce, 8) == 0) {
		uint64_t ts;

		memcpy(&ts, f->blob, sizeof(ts));
		sb_hist_add(&t->hist, now >= ts ? now - ts : 0);
	}
	conn_ack_add(c, f->msg_id);
}

static void on_send_result(sb_conn_t *c, const sp_frame_t *f)
{
	sb_thread_t *t = c->t;

	for (uint32_t i = 0; i < f->n_results; i++) {
		uint16_t index;
		uint8_t st;

		sp_result_get(f, i, &index, &st);
		t->status[st]++;
		if (SP_STATUS_IS_ACCEPTED(st))
			cnt_add(&t->c.accepted, 1);
		else
			cnt_add(&t->c.refused, 1);
		if (opt.scenario == SB_QUEUE && memcmp(f->msg_id, g_nonce, 8) == 0) {
			uint32_t seq = msg_id_seq(f->msg_id);

			if (seq < opt.messages)
				atomic_store_explicit(&g_qstatus[seq], (uint8_t)(1 + st),
				                      memory_order_relaxed);
		}
	}
	/* One recipient per SEND: one entry answers it. */
	if (c->inflight > 0)
		c->inflight--;
	cnt_add(&t->c.results, 1);
	cnt_set(&t->c.last_result_ns, now_ns());
}

/* Handles one decoded frame. Returns 0, or -1 if the connection died. */
static int conn_frame(sb_conn_t *c, const sp_frame_t *f)
{
	char why[320];

	if (c->state == CS_HELLO_SENT) {
		if (f->type != SP_WELCOME) {
			snprintf(why, sizeof(why), "expected WELCOME, got %s",
			         sp_frame_type_name(f->type));
			conn_fail(c, why);
			return -1;
		}
		c->state = CS_READY;
		cnt_add(&c->t->c.ready, 1);
		if (c->sender) {
			c->window = opt.rate > 0 ? f->send_window : opt.window;
			if (c->window > f->send_window)
				c->window = f->send_window;
		}
		return 0;
	}
	switch (f->type) {
	case SP_DELIVER:
		on_deliver(c, f);
		return 0;
	case SP_SEND_RESULT:
		on_send_result(c, f);
		return 0;
	case SP_PING: {
		sp_frame_t p = {.type = SP_PONG};

		if (f->fields & SP_BIT(SP_F_DATA)) {
			p.fields = SP_BIT(SP_F_DATA);
			p.data = f->data;
		}
		return conn_put(c, &p);
	}
	case SP_PONG:
		return 0;
	case SP_GOAWAY:
		snprintf(why, sizeof(why), "GOAWAY %s", sp_error_name(f->code));
		conn_fail(c, why);
		return -1;
	case SP_ERROR:
		snprintf(why, sizeof(why), "ERROR %s: %.*s", sp_error_name(f->code),
		         (int)f->reason_len, f->reason ? (const char *)f->reason : "");
		conn_fail(c, why);
		return -1;
	default:
		snprintf(why, sizeof(why), "unexpected %s", sp_frame_type_name(f->type));
		conn_fail(c, why);
		return -1;
	}
}

/* Decodes every complete frame in the read buffer. Returns 0 or -1 (dead). */
static int conn_decode(sb_conn_t *c)
{
	size_t off = 0;

	for (;;) {
		sp_frame_t f;
		size_t used = 0;
		int rc = sp_frame_decode(c->in + off, c->in_len - off, SB_MAX_IN_FRAME, &f, &used);

		if (rc == 0)
			break;
		if (rc < 0) {
			char why[256];

			sp_frame_strerror(rc, &f, why, sizeof(why));
			conn_fail(c, why);
			return -1;
		}
		off += used;
		if (conn_frame(c, &f) < 0)
			return -1;
	}
	if (off > 0) {
		memmove(c->in, c->in + off, c->in_len - off);
		c->in_len -= off;
	}
	return 0;
}

/* Reads until the TLS layer wants more from the socket. Returns 0 or -1 (dead). */
static int conn_read(sb_conn_t *c)
{
	for (;;) {
		int n, e;

		if (buf_reserve(&c->in, &c->in_cap, c->in_len + SB_READ_CHUNK) < 0) {
			conn_fail(c, "out of memory");
			return -1;
		}
		ERR_clear_error();
		n = SSL_read(c->ssl, c->in + c->in_len, (int)(c->in_cap - c->in_len));
		if (n > 0) {
			c->in_len += (size_t)n;
			if (conn_decode(c) < 0)
				return -1;
			continue;
		}
		e = SSL_get_error(c->ssl, n);
		if (e == SSL_ERROR_WANT_READ)
			return 0;
		if (e == SSL_ERROR_WANT_WRITE) {
			conn_want_write(c);
			return 0;
		}
		conn_fail(c, e == SSL_ERROR_ZERO_RETURN ? "closed by the relay (close_notify)"
		                                        : "connection broken");
		return -1;
	}
}

static int conn_handshake(sb_conn_t *c)
{
	const unsigned char *alpn = NULL;
	unsigned alpn_len = 0;
	int r, e;

	ERR_clear_error();
	r = SSL_do_handshake(c->ssl);
	if (r != 1) {
		e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_WANT_READ)
			return 0;
		if (e == SSL_ERROR_WANT_WRITE) {
			conn_want_write(c);
			return 0;
		}
		conn_fail(c, "TLS handshake failed");
		return -1;
	}
	SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
	if (alpn_len != strlen(SP_ALPN) || memcmp(alpn, SP_ALPN, alpn_len) != 0) {
		conn_fail(c, "the relay selected no sealpush/1 ALPN");
		return -1;
	}
	if (conn_hello(c) < 0)
		return -1;
	c->state = CS_HELLO_SENT;
	return 1;
}

static int conn_connected(sb_conn_t *c)
{
	int err = 0;
	socklen_t l = sizeof(err);
	char ip[INET6_ADDRSTRLEN];

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0 || err != 0) {
		conn_fail(c, err ? strerror(err) : "connect failed");
		return -1;
	}
	c->ssl = SSL_new(g_ctx);
	if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1 ||
	    SSL_use_certificate(c->ssl, c->id->cert) != 1 ||
	    SSL_use_PrivateKey(c->ssl, c->id->key) != 1) {
		conn_fail(c, "SSL setup failed");
		return -1;
	}
	if (g_host_is_ip) {
		if (g_addr.ss_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)&g_addr)->sin_addr, ip,
			          sizeof(ip));
		else
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&g_addr)->sin6_addr, ip,
			          sizeof(ip));
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), ip);
	} else {
		SSL_set_tlsext_host_name(c->ssl, opt.host);
		SSL_set1_host(c->ssl, opt.host);
	}
	SSL_set_connect_state(c->ssl);
	c->state = CS_HANDSHAKE;
	event_add(c->rev, NULL);
	return 0;
}

static void conn_io(evutil_socket_t fd, short what, void *arg)
{
	sb_conn_t *c = arg;

	(void)fd;
	if (what & EV_WRITE)
		c->want_write = false;
	if (c->state == CS_CONNECTING) {
		if (conn_connected(c) < 0)
			return;
	}
	if (c->state == CS_HANDSHAKE) {
		int r = conn_handshake(c);

		if (r <= 0)
			return;
	}
	if (c->state != CS_HELLO_SENT && c->state != CS_READY)
		return;
	if ((what & EV_WRITE) && conn_flush(c) < 0)
		return;
	if (conn_read(c) < 0)
		return;
	if (c->n_acks > 0 && conn_ack_flush(c) < 0)
		return;
	if (conn_refill(c) < 0)
		return;
	conn_flush(c);
}

/* ---- bench threads --------------------------------------------------------------------------- */

static void thread_phase_changed(sb_thread_t *t, int ph)
{
	if (ph == PH_WARMUP)
		t->t_sched0 = now_ns();
	if (ph == PH_DRAIN) {
		for (unsigned i = 0; i < t->n_senders; i++)
			conn_close(&t->conns[i]);
		for (unsigned i = t->n_senders; i < t->n_conns; i++)
			conn_start(&t->conns[i]);
	}
	if (ph == PH_QUIT) {
		for (unsigned i = 0; i < t->n_conns; i++)
			conn_close(&t->conns[i]);
		event_base_loopbreak(t->base);
	}
}

static void thread_tick(evutil_socket_t fd, short what, void *arg)
{
	sb_thread_t *t = arg;
	int ph = phase_get();

	(void)fd;
	(void)what;
	if (ph != t->last_phase) {
		t->last_phase = ph;
		thread_phase_changed(t, ph);
		if (ph == PH_QUIT)
			return;
	}
	for (unsigned i = 0; i < t->n_senders; i++) {
		sb_conn_t *c = &t->conns[i];

		if (c->state != CS_READY)
			continue;
		if (conn_refill(c) == 0 && c->out_len > c->out_off)
			conn_flush(c);
	}
}

static void *thread_main(void *arg)
{
	sb_thread_t *t = arg;
	struct timeval tv = {0, 1000};

	t->tick = event_new(t->base, -1, EV_PERSIST, thread_tick, t);
	event_add(t->tick, &tv);
	t->last_phase = PH_CONNECT;
	/* Throughput: receivers first, so no message finds its device offline. */
	for (unsigned i = t->n_conns; i-- > 0;) {
		if (opt.scenario == SB_QUEUE && i >= t->n_senders)
			continue;
		conn_start(&t->conns[i]);
	}
	event_base_dispatch(t->base);
	event_free(t->tick);
	return NULL;
}

static sb_thread_t *thread_new(unsigned no)
{
	struct event_config *cfg = event_config_new();
	sb_thread_t *t = calloc(1, sizeof(*t) + opt.blob + 8);

	if (t == NULL || cfg == NULL)
		return NULL;
	t->no = no;
	event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
	t->base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	sb_hist_init(&t->hist);
	return t->base ? t : NULL;
}

/* Spreads the connections over the threads: pair (or sender, device) i on thread i % T. */
static int threads_assign(void)
{
	unsigned n_send = opt.scenario == SB_QUEUE ? opt.senders : opt.pairs;
	unsigned n_recv = opt.scenario == SB_QUEUE ? opt.devices : opt.pairs;

	for (unsigned k = 0; k < opt.threads; k++) {
		sb_thread_t *t = g_threads[k];
		unsigned ns = 0, nr = 0;

		for (unsigned i = k; i < n_send; i += opt.threads)
			ns++;
		for (unsigned i = k; i < n_recv; i += opt.threads)
			nr++;
		if (ns + nr > UINT16_MAX)
			return -1;
		t->conns = calloc(ns + nr + 1, sizeof(*t->conns));
		if (t->conns == NULL)
			return -1;
		t->n_senders = ns;
		t->n_conns = ns + nr;
		ns = 0;
		for (unsigned i = k; i < n_send; i += opt.threads, ns++) {
			sb_conn_t *c = &t->conns[ns];

			c->sender = true;
			c->id = &g_send_ids[i];
			c->window = opt.window;
			if (opt.scenario == SB_QUEUE) {
				c->q_first = i;
				c->quota = opt.messages / opt.senders +
				           (i < opt.messages % opt.senders ? 1 : 0);
			} else {
				c->peer_token = g_recv_ids[i].token;
				c->rate = opt.rate / opt.pairs;
			}
		}
		nr = 0;
		for (unsigned i = k; i < n_recv; i += opt.threads, nr++)
			t->conns[ns + nr].id = &g_recv_ids[i];
		for (unsigned i = 0; i < t->n_conns; i++) {
			t->conns[i].t = t;
			t->conns[i].idx = (uint16_t)i;
			t->conns[i].fd = -1;
		}
	}
	return 0;
}

/* ---- totals, progress, report ------------------------------------------------------------- */

typedef struct sb_totals {
	uint64_t ready, dead, sent, results, delivered, acked, accepted, refused, errors, stalled;
	uint64_t unique, dups, stale, last_result_ns, last_deliver_ns, first_connect_ns;
} sb_totals_t;

static void totals_get(sb_totals_t *s)
{
	memset(s, 0, sizeof(*s));
	for (unsigned k = 0; k < opt.threads; k++) {
		sb_counters_t *c = &g_threads[k]->c;
		uint64_t fc = cnt_get(&c->first_connect_ns);

		s->ready += cnt_get(&c->ready);
		s->dead += cnt_get(&c->dead);
		s->sent += cnt_get(&c->sent);
		s->results += cnt_get(&c->results);
		s->delivered += cnt_get(&c->delivered);
		s->acked += cnt_get(&c->acked);
		s->accepted += cnt_get(&c->accepted);
		s->refused += cnt_get(&c->refused);
		s->errors += cnt_get(&c->errors);
		s->stalled += cnt_get(&c->stalled);
		s->unique += cnt_get(&c->unique);
		s->dups += cnt_get(&c->dups);
		s->stale += cnt_get(&c->stale);
		if (cnt_get(&c->last_result_ns) > s->last_result_ns)
			s->last_result_ns = cnt_get(&c->last_result_ns);
		if (cnt_get(&c->last_deliver_ns) > s->last_deliver_ns)
			s->last_deliver_ns = cnt_get(&c->last_deliver_ns);
		if (fc != 0 && (s->first_connect_ns == 0 || fc < s->first_connect_ns))
			s->first_connect_ns = fc;
	}
}

static const char *phase_name(int ph)
{
	static const char *const names[] = {"connect", "warmup", "measure", "stop",
	                                    "enqueue", "drain",  "quit"};

	return ph >= 0 && ph <= PH_QUIT ? names[ph] : "?";
}

static void progress(uint64_t t0, sb_totals_t *prev)
{
	sb_totals_t s;

	totals_get(&s);
	fprintf(stderr,
	        "\r[%6.1fs %-7s] ready %" PRIu64 " sent %" PRIu64 "/s results %" PRIu64
	        "/s delivered %" PRIu64 "/s refused %" PRIu64 " errors %" PRIu64 "   ",
	        ns_to_s(now_ns() - t0), phase_name(phase_get()), s.ready, s.sent - prev->sent,
	        s.results - prev->results, s.delivered - prev->delivered, s.refused, s.errors);
	*prev = s;
}

/* Sleeps about one second in small steps; returns early on an interrupt. */
static void wait_second(uint64_t t0, sb_totals_t *prev)
{
	struct timespec ts = {0, 50 * 1000 * 1000};

	for (int i = 0; i < 20 && !g_interrupted; i++)
		nanosleep(&ts, NULL);
	progress(t0, prev);
}

/* Waits (printing progress) until cond() holds or timeout seconds pass. Returns cond(). */
static bool wait_until(bool (*cond)(const sb_totals_t *), double timeout, uint64_t t0,
                       sb_totals_t *prev)
{
	uint64_t start = now_ns(), last = now_ns();
	struct timespec ts = {0, 2 * 1000 * 1000};
	sb_totals_t s;

	for (;;) {
		totals_get(&s);
		if (cond(&s))
			return true;
		if (g_interrupted || ns_to_s(now_ns() - start) > timeout)
			return false;
		nanosleep(&ts, NULL);
		if (now_ns() - last >= 1000000000u) {
			last = now_ns();
			progress(t0, prev);
		}
	}
}

static bool all_ready_tp(const sb_totals_t *s)
{
	return s->ready == 2ull * opt.pairs || s->dead > 0;
}

static bool all_ready_senders(const sb_totals_t *s)
{
	return s->ready == opt.senders || s->dead > 0;
}

static bool all_answered(const sb_totals_t *s)
{
	return s->results == s->sent || s->ready == 0;
}

static bool all_enqueued(const sb_totals_t *s)
{
	return s->results == opt.messages || s->ready == 0;
}

static uint64_t g_drain_expect;

static bool all_drained(const sb_totals_t *s)
{
	return s->unique >= g_drain_expect;
}

static json_t *env_json(void)
{
	struct utsname u;

	uname(&u);
	return json_pack("{s:I, s:s, s:s, s:s, s:s}", "nproc",
	                 (json_int_t)sysconf(_SC_NPROCESSORS_ONLN), "kernel", u.release, "machine",
	                 u.machine, "openssl", OpenSSL_version(OPENSSL_VERSION), "libevent",
	                 event_get_version());
}

static json_t *params_json(void)
{
	json_t *p = json_pack("{s:s, s:s, s:I, s:s, s:I, s:I}", "scenario",
	                      opt.scenario == SB_QUEUE ? "queue" : "throughput", "server_host",
	                      opt.host, "server_port", (json_int_t)opt.port, "ca_dir", opt.ca_dir,
	                      "threads", (json_int_t)opt.threads, "blob", (json_int_t)opt.blob);

	json_object_set_new(p, "window", json_integer(opt.window));
	if (opt.scenario == SB_QUEUE) {
		json_object_set_new(p, "messages", json_integer(opt.messages));
		json_object_set_new(p, "devices", json_integer(opt.devices));
		json_object_set_new(p, "senders", json_integer(opt.senders));
	} else {
		json_object_set_new(p, "pairs", json_integer(opt.pairs));
		json_object_set_new(p, "rate", json_real(opt.rate));
		json_object_set_new(p, "duration_s", json_real(opt.duration));
		json_object_set_new(p, "warmup_s", json_real(opt.warmup));
	}
	return p;
}

static json_t *status_json(FILE *out)
{
	json_t *o = json_object();

	for (unsigned st = 0; st < 256; st++) {
		uint64_t n = 0;

		for (unsigned k = 0; k < opt.threads; k++)
			n += g_threads[k]->status[st];
		if (n == 0)
			continue;
		json_object_set_new(o, sp_status_name(st), json_integer((json_int_t)n));
		fprintf(out, "  status %-22s %12" PRIu64 "\n", sp_status_name(st), n);
	}
	return o;
}

static int report(json_t *results, FILE *out)
{
	json_t *root = json_object();

	json_object_set_new(root, "params", params_json());
	json_object_set_new(root, "environment", env_json());
	json_object_set_new(root, "results", results);
	if (opt.json) {
		char *s = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);

		if (s != NULL)
			printf("%s\n", s);
		free(s);
	}
	json_decref(root);
	fflush(out);
	return 0;
}

/* ---- scenarios ----------------------------------------------------------------------------- */

static int run_throughput(FILE *out)
{
	uint64_t t0 = now_ns(), m0, m1;
	sb_totals_t prev = {0}, s0, s1, s;
	sb_hist_t h;
	json_t *r = json_object(), *lat;
	static const double pcts[] = {50, 90, 99, 99.9};
	static const char *const pnames[] = {"p50", "p90", "p99", "p99.9"};
	uint64_t lost;
	double rate;

	wait_until(all_ready_tp, SB_CONNECT_TIMEOUT, t0, &prev);
	totals_get(&s);
	if (s.ready != 2ull * opt.pairs) {
		fprintf(stderr, "\nsealpush-bench: only %" PRIu64 " of %u connections ready\n",
		        s.ready, 2 * opt.pairs);
		phase_set(PH_QUIT);
		return 1;
	}
	phase_set(PH_WARMUP);
	for (double w = 0; w < opt.warmup && !g_interrupted; w += 1)
		wait_second(t0, &prev);
	totals_get(&s0);
	m0 = now_ns();
	phase_set(PH_MEASURE);
	for (double d = 0; d < opt.duration && !g_interrupted; d += 1)
		wait_second(t0, &prev);
	phase_set(PH_STOP_SENDING);
	m1 = now_ns();
	totals_get(&s1);
	wait_until(all_answered, SB_DRAIN_TIMEOUT, t0, &prev);
	totals_get(&s);
	phase_set(PH_QUIT);
	fprintf(stderr, "\n");

	sb_hist_init(&h);
	for (unsigned k = 0; k < opt.threads; k++)
		sb_hist_merge(&h, &g_threads[k]->hist);
	rate = (double)(s1.delivered - s0.delivered) / ns_to_s(m1 - m0);
	lost = s.sent - s.results;
	fprintf(out, "sealpush-bench throughput: %u pairs, %s, blob %u B, %u thread(s), %.0f s\n",
	        opt.pairs, opt.rate > 0 ? "open loop" : "closed loop", opt.blob, opt.threads,
	        ns_to_s(m1 - m0));
	if (opt.rate > 0)
		fprintf(out, "  target rate                 %12.0f msg/s\n", opt.rate);
	else
		fprintf(out, "  window per sender           %12u\n", opt.window);
	fprintf(out, "  delivered                   %12.0f msg/s\n", rate);
	fprintf(out, "  sent (measured window)      %12.0f msg/s\n",
	        (double)(s1.sent - s0.sent) / ns_to_s(m1 - m0));
	fprintf(out, "  latency samples             %12" PRIu64 "\n", h.total);
	lat = json_object();
	for (unsigned i = 0; i < 4; i++) {
		uint64_t v = sb_hist_percentile(&h, pcts[i]);

		fprintf(out, "  latency %-6s              %12.3f ms\n", pnames[i], (double)v / 1e6);
		json_object_set_new(lat, pnames[i], json_real((double)v / 1e6));
	}
	fprintf(out, "  latency max                 %12.3f ms\n", (double)h.max / 1e6);
	json_object_set_new(lat, "max", json_real((double)h.max / 1e6));
	json_object_set_new(lat, "samples", json_integer((json_int_t)h.total));
	json_object_set_new(lat, "unit", json_string("ms"));
	fprintf(out, "  sent / answered (all)       %12" PRIu64 " / %" PRIu64 "\n", s.sent,
	        s.results);
	fprintf(out, "  unanswered at the end       %12" PRIu64 "\n", lost);
	fprintf(out, "  open-loop sends held back   %12" PRIu64 "\n", s.stalled);
	fprintf(out, "  errors (conn/frames)        %12" PRIu64 "\n", s.errors);
	json_object_set_new(r, "delivered_per_s", json_real(rate));
	json_object_set_new(r, "sent_per_s",
	                    json_real((double)(s1.sent - s0.sent) / ns_to_s(m1 - m0)));
	json_object_set_new(r, "measured_s", json_real(ns_to_s(m1 - m0)));
	json_object_set_new(r, "latency", lat);
	json_object_set_new(r, "sent", json_integer((json_int_t)s.sent));
	json_object_set_new(r, "answered", json_integer((json_int_t)s.results));
	json_object_set_new(r, "delivered", json_integer((json_int_t)s.delivered));
	json_object_set_new(r, "unanswered", json_integer((json_int_t)lost));
	json_object_set_new(r, "held_back", json_integer((json_int_t)s.stalled));
	json_object_set_new(r, "errors", json_integer((json_int_t)s.errors));
	json_object_set_new(r, "status", status_json(out));
	report(r, out);
	return lost != 0 || s.errors != 0 || s.refused != 0 || g_interrupted;
}

static int run_queue(FILE *out)
{
	uint64_t t0 = now_ns(), e0, queued = 0, missing = 0;
	sb_totals_t prev = {0}, s, se;
	json_t *r = json_object();
	double enq_s, drain_s;
	bool drained;

	wait_until(all_ready_senders, SB_CONNECT_TIMEOUT, t0, &prev);
	totals_get(&s);
	if (s.ready != opt.senders) {
		fprintf(stderr, "\nsealpush-bench: only %" PRIu64 " of %u senders ready\n", s.ready,
		        opt.senders);
		phase_set(PH_QUIT);
		return 1;
	}
	e0 = now_ns();
	phase_set(PH_ENQUEUE);
	/* No deadline while results keep coming: wait in SB_DRAIN_TIMEOUT slices of progress. */
	for (uint64_t last = 0;;) {
		if (wait_until(all_enqueued, SB_DRAIN_TIMEOUT, t0, &prev))
			break;
		totals_get(&s);
		if (s.results == last || g_interrupted)
			break;
		last = s.results;
	}
	totals_get(&se);
	enq_s = ns_to_s(se.last_result_ns - e0);
	for (uint32_t i = 0; i < opt.messages; i++)
		if (atomic_load_explicit(&g_qstatus[i], memory_order_relaxed) == 1 + SP_ST_QUEUED)
			queued++;
	g_drain_expect = queued;
	for (unsigned k = 0; k < opt.threads; k++)
		cnt_set(&g_threads[k]->c.first_connect_ns, 0);
	phase_set(PH_DRAIN);
	drained = false;
	for (uint64_t last = UINT64_MAX;;) {
		if (wait_until(all_drained, SB_DRAIN_TIMEOUT, t0, &prev)) {
			drained = true;
			break;
		}
		totals_get(&s);
		if (s.delivered == last || g_interrupted)
			break;
		last = s.delivered;
	}
	/* Let the last ACKs go out (they are written in the DELIVER's callback already). */
	{
		struct timespec ts = {0, 300 * 1000 * 1000};

		nanosleep(&ts, NULL);
	}
	totals_get(&s);
	phase_set(PH_QUIT);
	fprintf(stderr, "\n");
	drain_s = s.first_connect_ns && s.last_deliver_ns > s.first_connect_ns
	                  ? ns_to_s(s.last_deliver_ns - s.first_connect_ns)
	                  : 0;
	for (uint32_t i = 0; i < opt.messages; i++)
		if (atomic_load_explicit(&g_qstatus[i], memory_order_relaxed) == 1 + SP_ST_QUEUED &&
		    atomic_load_explicit(&g_arrived[i], memory_order_relaxed) == 0)
			missing++;

	fprintf(out,
	        "sealpush-bench queue: %u messages, %u devices, %u senders (window %u), "
	        "blob %u B, %u thread(s)\n",
	        opt.messages, opt.devices, opt.senders, opt.window, opt.blob, opt.threads);
	fprintf(out, "  enqueue                     %12.0f QUEUED/s (%.3f s)\n",
	        enq_s > 0 ? (double)queued / enq_s : 0, enq_s);
	fprintf(out, "  drain                       %12.0f DELIVER+ACK/s (%.3f s)\n",
	        drain_s > 0 ? (double)s.delivered / drain_s : 0, drain_s);
	fprintf(out, "  sent / answered             %12" PRIu64 " / %" PRIu64 "\n", se.sent,
	        se.results);
	fprintf(out, "  queued                      %12" PRIu64 "\n", queued);
	fprintf(out, "  delivered (all DELIVERs)    %12" PRIu64 "\n", s.delivered);
	fprintf(out, "  unique delivered            %12" PRIu64 "\n", s.unique);
	fprintf(out, "  missing (QUEUED, never came)%12" PRIu64 "\n", missing);
	fprintf(out, "  duplicates                  %12" PRIu64 "\n", s.dups);
	fprintf(out, "  stale (from earlier runs)   %12" PRIu64 "\n", s.stale);
	fprintf(out, "  errors (conn/frames)        %12" PRIu64 "\n", s.errors);
	json_object_set_new(r, "enqueue_per_s", json_real(enq_s > 0 ? (double)queued / enq_s : 0));
	json_object_set_new(r, "enqueue_s", json_real(enq_s));
	json_object_set_new(r, "drain_per_s",
	                    json_real(drain_s > 0 ? (double)s.delivered / drain_s : 0));
	json_object_set_new(r, "drain_s", json_real(drain_s));
	json_object_set_new(r, "sent", json_integer((json_int_t)se.sent));
	json_object_set_new(r, "answered", json_integer((json_int_t)se.results));
	json_object_set_new(r, "queued", json_integer((json_int_t)queued));
	json_object_set_new(r, "delivered", json_integer((json_int_t)s.delivered));
	json_object_set_new(r, "unique", json_integer((json_int_t)s.unique));
	json_object_set_new(r, "missing", json_integer((json_int_t)missing));
	json_object_set_new(r, "duplicates", json_integer((json_int_t)s.dups));
	json_object_set_new(r, "stale", json_integer((json_int_t)s.stale));
	json_object_set_new(r, "errors", json_integer((json_int_t)s.errors));
	json_object_set_new(r, "complete", json_boolean(drained));
	json_object_set_new(r, "status", status_json(out));
	report(r, out);
	return !drained || missing != 0 || queued != opt.messages || se.sent != se.results ||
	       s.errors != 0 || g_interrupted;
}

/* ---- setup ---------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: sealpush-bench SCENARIO --ca-dir DIR [OPTIONS]\n"
	        "\n"
	        "Scenarios:\n"
	        "  throughput  P sender->receiver pairs; closed loop (--window) or open loop\n"
	        "              (--rate); delivered/s, send statuses, end-to-end latency\n"
	        "  queue       M messages to D offline devices, then the devices drain;\n"
	        "              enqueue/s and drain/s, every QUEUED message checked\n"
	        "\n"
	        "Options:\n"
	        "  --server HOST:PORT   relay address (default 127.0.0.1:7443)\n"
	        "  --ca-dir DIR         sealpush-ca directory: ca.crt verifies the relay, and\n"
	        "                       bench-sN / bench-rN device identities live (or are made) "
	        "here\n"
	        "  --sealpush-ca PATH   the sealpush-ca command (default: next to this binary, "
	        "else PATH)\n"
	        "  --threads N          bench threads, one event base each (default 1)\n"
	        "  --blob N             blob bytes (default 256, at least 8 for latency)\n"
	        "  --window W           unanswered SENDs per sender (default 32)\n"
	        "  --json               one JSON object on stdout (the table goes to stderr)\n"
	        "throughput:\n"
	        "  --pairs P            sender/receiver pairs (default 100)\n"
	        "  --rate R             open loop: R messages/s in total (default: closed loop)\n"
	        "  --duration S         measured seconds (default 10)\n"
	        "  --warmup S           seconds before measuring (default 2)\n"
	        "queue:\n"
	        "  --messages M         messages (default 100000)\n"
	        "  --devices D          offline devices (default 100)\n"
	        "  --senders S          sending connections (default 100)\n"
	        "\n"
	        "Exit status: 0 if nothing was lost, refused or broken; 1 otherwise; 2 usage.\n");
}

static int parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -1;
	*out = (unsigned)v;
	return 0;
}

static int parse_double(const char *s, double lo, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= lo) || isinf(v))
		return -1;
	*out = v;
	return 0;
}

static int parse_server(const char *arg)
{
	char host[256];
	const char *colon = strrchr(arg, ':');
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	unsigned port;
	size_t hl;
	struct in6_addr a6;

	if (colon == NULL || parse_uint(colon + 1, 1, 65535, &port) < 0)
		return -1;
	hl = (size_t)(colon - arg);
	if (hl > 0 && arg[0] == '[' && arg[hl - 1] == ']') {
		arg++;
		hl -= 2;
	}
	if (hl == 0 || hl >= sizeof(host))
		return -1;
	memcpy(host, arg, hl);
	host[hl] = '\0';
	if (getaddrinfo(host, NULL, &hints, &ai) != 0 || ai == NULL)
		return -1;
	memcpy(&g_addr, ai->ai_addr, ai->ai_addrlen);
	g_addr_len = ai->ai_addrlen;
	freeaddrinfo(ai);
	if (g_addr.ss_family == AF_INET)
		((struct sockaddr_in *)&g_addr)->sin_port = htons((uint16_t)port);
	else
		((struct sockaddr_in6 *)&g_addr)->sin6_port = htons((uint16_t)port);
	g_host_is_ip = inet_pton(AF_INET, host, &a6) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
	opt.host = strdup(host);
	opt.port = (uint16_t)port;
	return 0;
}

static int parse_args(int argc, char **argv)
{
	enum {
		O_SERVER = 256,
		O_CA_DIR,
		O_CA_TOOL,
		O_THREADS,
		O_PAIRS,
		O_WINDOW,
		O_RATE,
		O_BLOB,
		O_DURATION,
		O_WARMUP,
		O_MESSAGES,
		O_DEVICES,
		O_SENDERS,
		O_JSON,
	};
	static const struct option lopts[] = {
	        {"server", required_argument, NULL, O_SERVER},
	        {"ca-dir", required_argument, NULL, O_CA_DIR},
	        {"sealpush-ca", required_argument, NULL, O_CA_TOOL},
	        {"threads", required_argument, NULL, O_THREADS},
	        {"pairs", required_argument, NULL, O_PAIRS},
	        {"window", required_argument, NULL, O_WINDOW},
	        {"rate", required_argument, NULL, O_RATE},
	        {"blob", required_argument, NULL, O_BLOB},
	        {"duration", required_argument, NULL, O_DURATION},
	        {"warmup", required_argument, NULL, O_WARMUP},
	        {"messages", required_argument, NULL, O_MESSAGES},
	        {"devices", required_argument, NULL, O_DEVICES},
	        {"senders", required_argument, NULL, O_SENDERS},
	        {"json", no_argument, NULL, O_JSON},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	bool server_set = false;
	int o, bad = 0;

	if (argc < 2 || argv[1][0] == '-') {
		if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
			usage(stdout);
			exit(0);
		}
		usage(stderr);
		return -1;
	}
	if (!strcmp(argv[1], "throughput"))
		opt.scenario = SB_THROUGHPUT;
	else if (!strcmp(argv[1], "queue"))
		opt.scenario = SB_QUEUE;
	else {
		fprintf(stderr, "sealpush-bench: unknown or unimplemented scenario '%s'\n",
		        argv[1]);
		return -1;
	}
	optind = 2;
	while ((o = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		switch (o) {
		case O_SERVER:
			bad |= parse_server(optarg);
			server_set = true;
			break;
		case O_CA_DIR:
			opt.ca_dir = optarg;
			break;
		case O_CA_TOOL:
			opt.ca_tool = optarg;
			break;
		case O_THREADS:
			bad |= parse_uint(optarg, 1, 64, &opt.threads);
			break;
		case O_PAIRS:
			bad |= parse_uint(optarg, 1, 30000, &opt.pairs);
			break;
		case O_WINDOW:
			bad |= parse_uint(optarg, 1, 65535, &opt.window);
			break;
		case O_RATE:
			bad |= parse_double(optarg, 0, &opt.rate);
			break;
		case O_BLOB:
			bad |= parse_uint(optarg, 0, 16 << 20, &opt.blob);
			break;
		case O_DURATION:
			bad |= parse_double(optarg, 1, &opt.duration);
			break;
		case O_WARMUP:
			bad |= parse_double(optarg, 0, &opt.warmup);
			break;
		case O_MESSAGES:
			bad |= parse_uint(optarg, 1, 100000000, &opt.messages);
			break;
		case O_DEVICES:
			bad |= parse_uint(optarg, 1, 30000, &opt.devices);
			break;
		case O_SENDERS:
			bad |= parse_uint(optarg, 1, 30000, &opt.senders);
			break;
		case O_JSON:
			opt.json = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			return -1;
		}
		if (bad) {
			fprintf(stderr, "sealpush-bench: bad value for %s\n", argv[optind - 1]);
			return -1;
		}
	}
	if (optind != argc || opt.ca_dir == NULL) {
		usage(stderr);
		return -1;
	}
	if (!server_set && parse_server("127.0.0.1:7443") < 0)
		return -1;
	if (opt.senders == 0)
		opt.senders = opt.scenario == SB_QUEUE ? 100 : opt.pairs;
	if (opt.senders > opt.messages)
		opt.senders = opt.messages;
	return 0;
}

static int tls_setup(void)
{
	char path[PATH_MAX];

	g_ctx = SSL_CTX_new(TLS_client_method());
	if (g_ctx == NULL)
		return -1;
	SSL_CTX_set_min_proto_version(g_ctx, TLS1_3_VERSION);
	SSL_CTX_set_mode(g_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	                                SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
	                                SSL_MODE_NO_AUTO_CHAIN);
	SSL_CTX_set_session_cache_mode(g_ctx, SSL_SESS_CACHE_OFF);
	if (SSL_CTX_set_alpn_protos(g_ctx, (const unsigned char *)"\x0a" SP_ALPN,
	                            1 + strlen(SP_ALPN)) != 0)
		return -1;
	snprintf(path, sizeof(path), "%s/ca.crt", opt.ca_dir);
	if (SSL_CTX_load_verify_locations(g_ctx, path, NULL) != 1) {
		fprintf(stderr, "sealpush-bench: cannot load %s\n", path);
		return -1;
	}
	SSL_CTX_set_verify(g_ctx, SSL_VERIFY_PEER, NULL);
	return 0;
}

static void on_signal(int sig)
{
	(void)sig;
	g_interrupted = 1;
}

int main(int argc, char **argv)
{
	unsigned n_send, n_recv, minted = 0;
	const char *tool;
	FILE *out;
	int rc;
	uint64_t t;

	if (parse_args(argc, argv) < 0)
		return 2;
	out = opt.json ? stderr : stdout;
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (tls_setup() < 0) {
		ERR_print_errors_fp(stderr);
		return 1;
	}
	n_send = opt.scenario == SB_QUEUE ? opt.senders : opt.pairs;
	n_recv = opt.scenario == SB_QUEUE ? opt.devices : opt.pairs;
	g_send_ids = calloc(n_send, sizeof(*g_send_ids));
	g_recv_ids = calloc(n_recv, sizeof(*g_recv_ids));
	if (g_send_ids == NULL || g_recv_ids == NULL)
		return 1;
	tool = sb_ident_tool(opt.ca_tool);
	t = now_ns();
	if (sb_ident_load(opt.ca_dir, tool, "bench-s", n_send, g_send_ids, &minted) < 0 ||
	    sb_ident_load(opt.ca_dir, tool, "bench-r", n_recv, g_recv_ids, &minted) < 0)
		return 1;
	if (minted > 0)
		fprintf(stderr, "sealpush-bench: issued %u identities with %s in %.1f s\n", minted,
		        tool, ns_to_s(now_ns() - t));
	if (RAND_bytes(g_nonce, sizeof(g_nonce)) != 1)
		return 1;
	if (opt.scenario == SB_QUEUE) {
		g_qstatus = calloc(opt.messages, 1);
		g_arrived = calloc(opt.messages, 1);
		if (g_qstatus == NULL || g_arrived == NULL)
			return 1;
	}
	g_threads = calloc(opt.threads, sizeof(*g_threads));
	if (g_threads == NULL)
		return 1;
	for (unsigned k = 0; k < opt.threads; k++)
		if ((g_threads[k] = thread_new(k)) == NULL)
			return 1;
	if (threads_assign() < 0) {
		fprintf(stderr, "sealpush-bench: too many connections per thread\n");
		return 1;
	}
	for (unsigned k = 0; k < opt.threads; k++)
		if (pthread_create(&g_threads[k]->tid, NULL, thread_main, g_threads[k]) != 0)
			return 1;
	rc = opt.scenario == SB_QUEUE ? run_queue(out) : run_throughput(out);
	phase_set(PH_QUIT);
	for (unsigned k = 0; k < opt.threads; k++)
		pthread_join(g_threads[k]->tid, NULL);
	sb_ident_free(g_send_ids, n_send);
	sb_ident_free(g_recv_ids, n_recv);
	SSL_CTX_free(g_ctx);
	return rc;
}
