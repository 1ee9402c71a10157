/*
 * sealpush-bench: the load generator for a sealpush relay (issue 6).
 *
 * Scenarios: "throughput" (P sender->receiver pairs), "fanout" (each SEND to N recipients),
 * "queue" (enqueue to offline devices, then drain), "idle" (hold N connections, relay RSS per
 * connection) and "handshake" (new mTLS connections per second, full or resumed). All use one
 * lean client path: raw OpenSSL (TLS 1.3, ALPN sealpush/1, one client certificate per
 * connection) on non-blocking sockets, driven by libevent; frames are encoded with
 * sp_frame_encode() into a per-connection output buffer and decoded with sp_frame_decode()
 * over the read buffer.
 *
 * Who owns what. The main process parses options, loads identities and maps one shared
 * region (MAP_SHARED | MAP_ANONYMOUS) that holds the global phase, one slot per bench thread
 * (counters, send statuses, latency histogram) and, for the queue scenario, the per-message
 * arrays. With --processes K > 1 it forks K children, each running --threads bench threads
 * over its share of the connections, and only orchestrates; with K = 1 the threads run in the
 * main process. The orchestrator moves the phase forward (release store), prints the progress
 * line and reads the slots (relaxed atomics; a slot is written by exactly one thread). Each
 * bench thread owns one event base (EVENT_BASE_FLAG_NOLOCK), its connections and its slot; it
 * looks at the phase from a periodic tick (1 ms) and from its callbacks. Histograms and the
 * status arrays are read only after every thread has stopped (pthread_join / waitpid).
 * Shared per-message arrays in the queue scenario are written by one thread per element: a
 * message's SEND_RESULT arrives on its sender's thread during the enqueue phase, its DELIVER
 * on its device's thread during the drain phase, and the phases are separated by the
 * orchestrator.
 *
 * Connections are started at most --inflight at a time per thread (the rest wait their turn);
 * one that breaks after the connect phase is counted and reconnected after SB_RETRY_MS (what
 * it had in flight is lost and shows as unanswered). In the connect phase a failure ends the
 * run: it means the set-up is wrong.
 *
 * Open loop (--rate): each thread has a send schedule, message n due at t0 + n / rate_thread
 * (threads offset by a fraction of the interval, so the total is evenly spread), sent round
 * robin over its senders from a precise timer (timerfd); the blob carries the *intended* send
 * time, so a late send counts against latency (no coordinated omission); the bench's own share,
 * the send lag (actual write minus intended time), goes into a second histogram. A due message
 * whose sender has its window full is not sent and is counted as held back.
 *
 * Message ids: run nonce (8 random bytes) | sequence u32 (queue: message index) | thread u16 |
 * connection u16. Blobs: CLOCK_MONOTONIC nanoseconds (u64, host order) of the intended send
 * time, then zeros up to --blob bytes.
 */
#include "sp_buf.h"
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
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define SB_READ_CHUNK    (64 * 1024)
#define SB_MAX_IN_FRAME  (SP_MAX_FRAME_V1)
#define SB_ACK_MAX       65535
#define SB_DRAIN_TIMEOUT 10.0 /* seconds for answers after the senders stop / no progress */
#define SB_RETRY_MS      100  /* reconnect delay after a broken connection */
#define SB_MAX_SECONDS   86400
#define SB_FD_RESERVE    64 /* descriptors a process keeps for itself */

enum sb_scenario { SB_THROUGHPUT, SB_FANOUT, SB_QUEUE, SB_IDLE, SB_HANDSHAKE };
static const char *const scenario_names[] = {"throughput", "fanout", "queue", "idle", "handshake"};

/* The global phase, moved forward by the orchestrator only. */
enum sb_phase {
	PH_CONNECT,      /* connect what this phase needs (queue: the senders only) */
	PH_WARMUP,       /* throughput, fanout, handshake: run, do not record */
	PH_MEASURE,      /* record; idle: all connections up, settling */
	PH_STOP_SENDING, /* no new SENDs or handshakes, collect what is owed */
	PH_ENQUEUE,      /* queue: senders send their share */
	PH_DRAIN,        /* queue: senders closed, devices connect and drain */
	PH_QUIT,         /* close everything, leave the loop */
};

enum sb_state {
	CS_IDLE,       /* not started (or waiting to reconnect) */
	CS_CONNECTING, /* TCP connect in progress */
	CS_HANDSHAKE,  /* TLS handshake in progress */
	CS_TICKET,     /* handshake scenario: handshake done, waiting for the session ticket */
	CS_HELLO_SENT, /* HELLO written, waiting for WELCOME */
	CS_READY,      /* WELCOME received */
	CS_DEAD,       /* torn down */
};

typedef struct sb_opts {
	enum sb_scenario scenario;
	const char *host;
	uint16_t port;
	const char *ca_dir;
	const char *ca_tool;
	unsigned threads;
	unsigned processes;
	unsigned pairs;
	unsigned window;
	double rate; /* messages (SENDs)/s in total; 0 = closed loop */
	unsigned blob;
	double duration;
	double warmup;
	unsigned messages;
	unsigned devices;
	unsigned senders;
	unsigned receivers;
	unsigned recipients;
	unsigned recv_window;
	unsigned conns;
	unsigned inflight;
	double connect_timeout;
	unsigned tick_us;
	long pid;
	double settle;
	double hold;
	bool register_idle;
	bool send_chain;
	const char *tls_ciphersuites;
	const char *tls_groups;
	bool resume;
	bool hello;
	bool json;
	bool quiet;
} sb_opts_t;

struct sb_thread;

typedef struct sb_conn {
	struct sb_thread *t;
	int fd;
	uint8_t state;
	bool sender;
	bool send_only;  /* HELLO with SEND_ONLY */
	bool want_write; /* wev is pending */
	bool starting;   /* counted in t->starting */
	bool retry;      /* reconnect at the next retry scan */
	bool got_ticket; /* handshake scenario: a NewSessionTicket arrived */
	uint16_t idx;    /* within the thread */
	const sb_ident_t *id;
	uint8_t *peer_tokens; /* sender: n_peers recipient tokens, 32 bytes each */
	uint16_t n_peers;
	SSL *ssl;
	SSL_SESSION *sess; /* handshake --resume: the last ticket of this slot */
	struct event *rev, *wev;
	uint8_t *in;
	size_t in_len, in_cap;
	uint8_t *out;
	size_t out_len, out_off, out_cap;
	uint8_t *acks; /* msg ids to acknowledge at the end of this read burst */
	size_t n_acks, acks_cap;
	uint32_t window;  /* most unanswered SENDs we keep */
	uint64_t owed;    /* result entries not yet received (n_peers per SEND) */
	uint64_t sent;    /* SENDs encoded on this connection */
	uint64_t quota;   /* queue: messages this sender sends; otherwise unlimited */
	uint32_t q_first; /* queue: message index of this sender's first message */
	uint64_t t_start; /* when the current connection attempt started */
} sb_conn_t;

/* Counters the orchestrator reads while the threads run (written by one thread each). */
typedef struct sb_counters {
	_Atomic uint64_t ready, dead, reconnects;
	_Atomic uint64_t sent, addressed, results, delivered, acked;
	_Atomic uint64_t accepted, refused; /* SEND_RESULT entries */
	_Atomic uint64_t errors;            /* ERROR, GOAWAY, codec errors, broken connections */
	_Atomic uint64_t stalled;           /* open loop: a due SEND held back by the window */
	_Atomic uint64_t unique, dups, stale;
	_Atomic uint64_t hs_full, hs_resumed, hs_failed;
	_Atomic uint64_t last_result_ns, last_deliver_ns, first_connect_ns;
} sb_counters_t;

/* One per bench thread, in the shared region. */
typedef struct sb_slot {
	sb_counters_t c;
	uint64_t status[256]; /* SEND_RESULT entries by status */
	sb_hist_t hist;       /* end-to-end latency, or handshake latency */
	sb_hist_t lag;        /* open loop: how late the bench wrote each SEND (its own share) */
} sb_slot_t;

typedef struct sb_thread {
	unsigned no; /* global thread number (process * threads + thread) */
	pthread_t tid;
	struct event_base *base;
	struct event *tick, *sched;
	sb_slot_t *s;
	sb_conn_t *conns;
	unsigned n_conns;
	unsigned n_senders; /* conns[0..n_senders) send, the rest receive (or idle) */
	unsigned *todo;     /* connections to start, in order */
	unsigned n_todo, todo_next;
	unsigned starting; /* connections started and not yet READY or torn down */
	unsigned n_retry;
	uint64_t last_retry_scan;
	int last_phase;
	uint64_t sched_t0; /* open loop: when message 0 of this thread is due */
	uint64_t sched_n;  /* open loop: the next message of the schedule */
	double sched_rate; /* open loop: messages/s of this thread */
	uint8_t blob[];    /* --blob bytes, reused for every SEND */
} sb_thread_t;

static sb_opts_t opt = {
        .scenario = SB_THROUGHPUT,
        .host = "127.0.0.1",
        .port = 7443,
        .threads = 1,
        .processes = 1,
        .pairs = 100,
        .window = 32,
        .blob = 256,
        .duration = 10,
        .warmup = 2,
        .messages = 100000,
        .devices = 0,
        .recipients = 10,
        .recv_window = 1024,
        .conns = 0,
        .inflight = 64,
        .connect_timeout = 60,
        .tick_us = 20,
        .settle = 5,
};

/* The shared region. */
typedef struct sb_shared {
	_Atomic int phase;
	sb_slot_t slots[];
} sb_shared_t;

static sb_shared_t *g_sh;
static unsigned g_nslots; /* processes * threads */
static volatile sig_atomic_t g_interrupted, g_child_died;
static SSL_CTX *g_ctx;
static struct sockaddr_storage g_addr;
static socklen_t g_addr_len;
static bool g_host_is_ip;
static uint8_t g_nonce[8];
static unsigned g_n_send, g_n_recv; /* sending and receiving (or idle) connections */
static sb_ident_t *g_send_ids, *g_recv_ids;
static unsigned g_n_send_ids, g_n_recv_ids;
static _Atomic uint8_t *g_qstatus; /* queue: per message, 0 unanswered, 1 + status */
static _Atomic uint8_t *g_arrived; /* queue: per message, DELIVERs seen (saturating) */
static sb_thread_t **g_threads;    /* this process's threads */
static pid_t *g_children;
static bool g_progress; /* print the progress line */

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

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

static int phase_get(void)
{
	return atomic_load_explicit(&g_sh->phase, memory_order_acquire);
}

static void phase_set(int p)
{
	atomic_store_explicit(&g_sh->phase, p, memory_order_release);
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

/* Messages (SENDs) per second of one sender in the open loop. */
static bool open_loop(void)
{
	return opt.rate > 0 && (opt.scenario == SB_THROUGHPUT || opt.scenario == SB_FANOUT);
}

/* ---- connection I/O ------------------------------------------------------------------------ */

static void conn_io(evutil_socket_t fd, short what, void *arg);
static void thread_pump(sb_thread_t *t);

static void conn_report(sb_conn_t *c, const char *what)
{
	static _Atomic unsigned reported;
	unsigned long e = ERR_peek_error();

	if (atomic_fetch_add(&reported, 1) < 10)
		fprintf(stderr, "\nsealpush-bench: thread %u %s conn %u: %s%s%s\n", c->t->no,
		        c->sender ? "sender" : "receiver", c->idx, what, e ? ": " : "",
		        e ? ERR_reason_error_string(e) : "");
}

static void conn_not_starting(sb_conn_t *c)
{
	if (c->starting) {
		c->starting = false;
		c->t->starting--;
	}
}

/* Frees what a connection holds, except its buffers (kept for a reconnect, freed at exit). */
static void conn_teardown(sb_conn_t *c)
{
	if (c->state == CS_READY)
		cnt_add(&c->t->s->c.ready, (uint64_t)-1);
	conn_not_starting(c);
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

/*
 * Tears a broken connection down (no close_notify) and counts it. After the connect phase it
 * is marked for a reconnect; the handshake scenario counts a failed handshake.
 */
static void conn_fail(sb_conn_t *c, const char *why)
{
	sb_thread_t *t = c->t;
	int ph = phase_get();

	if (c->state == CS_DEAD || c->state == CS_IDLE)
		return;
	if (ph != PH_QUIT) {
		conn_report(c, why);
		cnt_add(&t->s->c.errors, 1);
		cnt_add(&t->s->c.dead, 1);
		if (opt.scenario == SB_HANDSHAKE)
			cnt_add(&t->s->c.hs_failed, 1);
	}
	conn_teardown(c);
	if (ph != PH_QUIT && ph != PH_CONNECT && !c->retry) {
		c->retry = true;
		t->n_retry++;
	}
}

/* Orderly close: close_notify (best effort on a non-blocking socket), then close. */
static void conn_close(sb_conn_t *c)
{
	if (c->state == CS_IDLE || c->state == CS_DEAD)
		return;
	if (c->ssl != NULL && c->state >= CS_TICKET) {
		ERR_clear_error();
		SSL_shutdown(c->ssl);
	}
	conn_teardown(c);
}

/* Starts a connection attempt (from CS_IDLE or CS_DEAD). Returns 0 or -1 (failed). */
static int conn_start(sb_conn_t *c)
{
	sb_thread_t *t = c->t;
	int one = 1;

	c->in_len = c->out_len = c->out_off = c->n_acks = 0;
	c->owed = 0;
	c->got_ticket = false;
	c->state = CS_CONNECTING; /* so that conn_fail() below counts it */
	c->starting = true;
	t->starting++;
	c->t_start = now_ns();
	if (sp_buf_reserve(&c->out, &c->out_cap, 16384, 4096) < 0) {
		conn_fail(c, "out of memory");
		return -1;
	}
	c->fd = socket(g_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		conn_fail(c, strerror(errno));
		return -1;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, (struct sockaddr *)&g_addr, g_addr_len) < 0 && errno != EINPROGRESS) {
		conn_fail(c, strerror(errno));
		return -1;
	}
	c->rev = event_new(t->base, c->fd, EV_READ | EV_PERSIST, conn_io, c);
	c->wev = event_new(t->base, c->fd, EV_WRITE, conn_io, c);
	if (c->rev == NULL || c->wev == NULL) {
		conn_fail(c, "event_new");
		return -1;
	}
	c->want_write = true;
	event_add(c->wev, NULL);
	if (cnt_get(&t->s->c.first_connect_ns) == 0)
		cnt_set(&t->s->c.first_connect_ns, c->t_start);
	return 0;
}

static void conn_want_write(sb_conn_t *c)
{
	if (!c->want_write) {
		c->want_write = true;
		event_add(c->wev, NULL);
	}
}

/* Appends the encoding of f to the output buffer. */
static int conn_put(sb_conn_t *c, sp_frame_t *f)
{
	size_t len = 0;
	int rc;

	rc = sp_frame_encode(f, c->out + c->out_len, c->out_cap - c->out_len, &len);
	if (rc == -SP_ERR_NOSPACE) {
		if (sp_buf_reserve(&c->out, &c->out_cap, c->out_len + len, 4096) < 0) {
			conn_fail(c, "out of memory");
			return -1;
		}
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

/*
 * Encodes one SEND whose blob carries ts (the intended send time). Queue: message
 * q_first + sent * senders goes to device (index / senders) % devices.
 */
static int conn_send_one(sb_conn_t *c, uint64_t ts)
{
	sb_thread_t *t = c->t;
	uint8_t id[SP_MSG_ID_LEN];
	sp_frame_t f = {.type = SP_SEND};
	uint32_t seq;

	if (opt.scenario == SB_QUEUE) {
		seq = c->q_first + (uint32_t)c->sent * opt.senders;
		f.recipients = g_recv_ids[(seq / opt.senders) % opt.devices].token;
	} else {
		seq = (uint32_t)c->sent;
		f.recipients = c->peer_tokens;
	}
	msg_id_make(c, seq, id);
	if (opt.blob >= sizeof(ts))
		memcpy(t->blob, &ts, sizeof(ts));
	f.fields = SP_BIT(SP_F_MSG_ID) | SP_BIT(SP_F_RECIPIENTS) | SP_BIT(SP_F_BLOB);
	f.msg_id = id;
	f.n_recipients = c->n_peers;
	f.blob = t->blob;
	f.blob_len = opt.blob;
	if (conn_put(c, &f) < 0)
		return -1;
	c->sent++;
	c->owed += c->n_peers;
	cnt_add(&t->s->c.sent, 1);
	cnt_add(&t->s->c.addressed, c->n_peers);
	return 0;
}

static bool conn_window_open(const sb_conn_t *c)
{
	return c->owed < (uint64_t)c->window * c->n_peers;
}

/* Closed loop: sends what the scenario and the phase allow now (open loop: thread_sched). */
static int conn_refill(sb_conn_t *c)
{
	int ph = phase_get();

	if (!c->sender || c->state != CS_READY)
		return 0;
	if (opt.scenario == SB_QUEUE) {
		if (ph != PH_ENQUEUE)
			return 0;
		while (conn_window_open(c) && c->sent < c->quota)
			if (conn_send_one(c, now_ns()) < 0)
				return -1;
		return 0;
	}
	if ((ph != PH_WARMUP && ph != PH_MEASURE) || open_loop())
		return 0;
	while (conn_window_open(c))
		if (conn_send_one(c, now_ns()) < 0)
			return -1;
	return 0;
}

static int conn_hello(sb_conn_t *c)
{
	sp_frame_t f = {.type = SP_HELLO};
	static const uint8_t agent[] = "sealpush-bench/" SP_VERSION;

	f.flags = c->send_only ? SP_HELLO_SEND_ONLY : 0;
	f.fields = SP_BIT(SP_F_VERSION) | SP_BIT(SP_F_KEEPALIVE) | SP_BIT(SP_F_AGENT);
	f.version = SP_VERSION_1;
	f.keepalive = 3600;
	f.agent = agent;
	f.agent_len = (uint32_t)(sizeof(agent) - 1);
	if (!c->send_only) {
		f.fields |= SP_BIT(SP_F_WINDOW);
		f.window = (uint16_t)opt.recv_window;
	}
	return conn_put(c, &f);
}

static int conn_ack_add(sb_conn_t *c, const uint8_t *id)
{
	if (sp_buf_reserve(&c->acks, &c->acks_cap, (c->n_acks + 1) * SP_MSG_ID_LEN, 4096) < 0)
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
	cnt_add(&c->t->s->c.acked, c->n_acks);
	c->n_acks = 0;
	return 0;
}

static int on_deliver(sb_conn_t *c, const sp_frame_t *f)
{
	sb_thread_t *t = c->t;
	uint64_t now = now_ns();

	cnt_add(&t->s->c.delivered, 1);
	cnt_set(&t->s->c.last_deliver_ns, now);
	if (opt.scenario == SB_QUEUE) {
		uint32_t seq = msg_id_seq(f->msg_id);

		if (memcmp(f->msg_id, g_nonce, 8) != 0 || seq >= opt.messages) {
			cnt_add(&t->s->c.stale, 1);
		} else {
			uint8_t a = atomic_load_explicit(&g_arrived[seq], memory_order_relaxed);

			if (a == 0)
				cnt_add(&t->s->c.unique, 1);
			else
				cnt_add(&t->s->c.dups, 1);
			if (a < 255)
				atomic_store_explicit(&g_arrived[seq], (uint8_t)(a + 1),
				                      memory_order_relaxed);
		}
	} else if (phase_get() == PH_MEASURE && f->blob_len >= 8 &&
	           memcmp(f->msg_id, g_nonce, 8) == 0) {
		uint64_t ts;

		memcpy(&ts, f->blob, sizeof(ts));
		sb_hist_add(&t->s->hist, now >= ts ? now - ts : 0);
	}
	if (conn_ack_add(c, f->msg_id) < 0) {
		conn_fail(c, "out of memory");
		return -1;
	}
	return 0;
}

static void on_send_result(sb_conn_t *c, const sp_frame_t *f)
{
	sb_thread_t *t = c->t;

	for (uint32_t i = 0; i < f->n_results; i++) {
		uint16_t index;
		uint8_t st;

		sp_result_get(f, i, &index, &st);
		t->s->status[st]++;
		if (SP_STATUS_IS_ACCEPTED(st))
			cnt_add(&t->s->c.accepted, 1);
		else
			cnt_add(&t->s->c.refused, 1);
		if (opt.scenario == SB_QUEUE && memcmp(f->msg_id, g_nonce, 8) == 0) {
			uint32_t seq = msg_id_seq(f->msg_id);

			if (seq < opt.messages)
				atomic_store_explicit(&g_qstatus[seq], (uint8_t)(1 + st),
				                      memory_order_relaxed);
		}
	}
	c->owed = c->owed > f->n_results ? c->owed - f->n_results : 0;
	cnt_add(&t->s->c.results, f->n_results);
	cnt_set(&t->s->c.last_result_ns, now_ns());
}

/*
 * Handshake scenario: one connection finished (ticket, or WELCOME with --hello). Counts it,
 * closes it and starts the next one on the same slot. Returns -1: the caller must stop
 * touching the connection it had.
 */
static int conn_hs_done(sb_conn_t *c)
{
	sb_thread_t *t = c->t;
	int ph = phase_get();

	if (SSL_session_reused(c->ssl))
		cnt_add(&t->s->c.hs_resumed, 1);
	else
		cnt_add(&t->s->c.hs_full, 1);
	if (ph == PH_MEASURE)
		sb_hist_add(&t->s->hist, now_ns() - c->t_start);
	conn_close(c);
	if (ph == PH_WARMUP || ph == PH_MEASURE)
		conn_start(c);
	return -1;
}

/* Handles one decoded frame. Returns 0, or -1 if the connection died (or was recycled). */
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
		if (opt.scenario == SB_HANDSHAKE)
			return conn_hs_done(c);
		conn_not_starting(c);
		c->state = CS_READY;
		cnt_add(&c->t->s->c.ready, 1);
		if (c->sender) {
			c->window = open_loop() ? f->send_window : opt.window;
			if (c->window > f->send_window)
				c->window = f->send_window;
		}
		return 0;
	}
	switch (f->type) {
	case SP_DELIVER:
		return on_deliver(c, f);
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

/* Decodes every complete frame in the read buffer. Returns 0 or -1 (dead or recycled). */
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

/* Reads until the TLS layer wants more from the socket. Returns 0 or -1 (dead or recycled). */
static int conn_read(sb_conn_t *c)
{
	for (;;) {
		int n, e;

		if (sp_buf_reserve(&c->in, &c->in_cap, c->in_len + SB_READ_CHUNK, 4096) < 0) {
			conn_fail(c, "out of memory");
			return -1;
		}
		ERR_clear_error();
		n = SSL_read(c->ssl, c->in + c->in_len, (int)(c->in_cap - c->in_len));
		if (n > 0) {
			if (c->state == CS_TICKET) {
				conn_fail(c, "data before the session ticket");
				return -1;
			}
			c->in_len += (size_t)n;
			if (conn_decode(c) < 0)
				return -1;
			continue;
		}
		e = SSL_get_error(c->ssl, n);
		if (e == SSL_ERROR_WANT_READ) {
			if (c->state == CS_TICKET && c->got_ticket)
				return conn_hs_done(c);
			return 0;
		}
		if (e == SSL_ERROR_WANT_WRITE) {
			conn_want_write(c);
			return 0;
		}
		conn_fail(c, e == SSL_ERROR_ZERO_RETURN ? "closed by the relay (close_notify)"
		                                        : "connection broken");
		return -1;
	}
}

/* Returns 1 (handshake done, HELLO queued or waiting for the ticket), 0 (more to do), -1. */
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
	if (opt.scenario == SB_HANDSHAKE && !opt.hello) {
		c->state = CS_TICKET;
		return 1;
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
	SSL_set_app_data(c->ssl, c);
	if (c->sess != NULL && SSL_set_session(c->ssl, c->sess) != 1) {
		conn_fail(c, "SSL_set_session failed");
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

/* Handshake scenario: keeps the newest ticket of the slot with --resume (else drops it). */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
	sb_conn_t *c = SSL_get_app_data(ssl);

	if (c == NULL)
		return 0;
	c->got_ticket = true;
	if (!opt.resume)
		return 0;
	SSL_SESSION_free(c->sess);
	c->sess = sess;
	return 1;
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
	if (c->state != CS_HELLO_SENT && c->state != CS_READY && c->state != CS_TICKET)
		return;
	if ((what & EV_WRITE) && conn_flush(c) < 0)
		return;
	if (conn_read(c) < 0)
		return;
	if (c->n_acks > 0 && conn_ack_flush(c) < 0)
		return;
	if (conn_refill(c) < 0)
		return;
	if (conn_flush(c) == 0 && !c->starting)
		thread_pump(c->t);
}

/* ---- bench threads --------------------------------------------------------------------------- */

/* Starts waiting connections while fewer than --inflight are on their way up. */
static void thread_pump(sb_thread_t *t)
{
	/* Handshake slots never become READY: each cycles on its own once started. */
	unsigned limit = opt.scenario == SB_HANDSHAKE ? UINT_MAX : opt.inflight;

	while (t->todo_next < t->n_todo && t->starting < limit)
		conn_start(&t->conns[t->todo[t->todo_next++]]);
}

static void thread_todo(sb_thread_t *t, unsigned from, unsigned to)
{
	for (unsigned i = from; i < to; i++)
		t->todo[t->n_todo++] = i;
}

/* Open loop: sends every message of the thread's schedule that is due, then re-arms. */
static void thread_sched(evutil_socket_t fd, short what, void *arg)
{
	sb_thread_t *t = arg;
	int ph = phase_get();
	uint64_t now = now_ns(), due, wait;
	struct timeval tv;

	(void)fd;
	(void)what;
	if ((ph != PH_WARMUP && ph != PH_MEASURE) || t->n_senders == 0)
		return;
	for (;;) {
		sb_conn_t *c;

		due = t->sched_t0 + (uint64_t)((double)t->sched_n * 1e9 / t->sched_rate);
		if (due > now)
			break;
		c = &t->conns[t->sched_n % t->n_senders];
		t->sched_n++;
		if (c->state != CS_READY || !conn_window_open(c)) {
			cnt_add(&t->s->c.stalled, 1);
			continue;
		}
		if (conn_send_one(c, due) == 0)
			conn_flush(c);
		now = now_ns();
		if (ph == PH_MEASURE)
			sb_hist_add(&t->s->lag, now - due);
	}
	wait = due - now;
	if (wait < (uint64_t)opt.tick_us * 1000)
		wait = (uint64_t)opt.tick_us * 1000;
	tv.tv_sec = (time_t)(wait / 1000000000u);
	tv.tv_usec = (suseconds_t)(wait % 1000000000u / 1000);
	event_add(t->sched, &tv);
}

static void thread_phase_changed(sb_thread_t *t, int ph)
{
	/* With --warmup 0 the thread may see PH_MEASURE without PH_WARMUP. */
	if ((ph == PH_WARMUP || ph == PH_MEASURE) && open_loop() && t->n_senders > 0 &&
	    t->sched_t0 == 0) {
		/* Thread k of T starts k/T of an interval late: the total is evenly spread. */
		t->sched_t0 = now_ns() + (uint64_t)(1e9 / t->sched_rate * t->no / g_nslots);
		t->sched_n = 0;
		thread_sched(-1, 0, t);
	}
	if (ph == PH_DRAIN) {
		for (unsigned i = 0; i < t->n_senders; i++)
			conn_close(&t->conns[i]);
		thread_todo(t, t->n_senders, t->n_conns);
		thread_pump(t);
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
	uint64_t now;

	(void)fd;
	(void)what;
	if (ph != t->last_phase) {
		t->last_phase = ph;
		thread_phase_changed(t, ph);
		if (ph == PH_QUIT)
			return;
	}
	thread_pump(t);
	now = now_ns();
	if (t->n_retry > 0 && now - t->last_retry_scan >= SB_RETRY_MS * 1000000ull) {
		t->last_retry_scan = now;
		for (unsigned i = 0; i < t->n_conns && t->n_retry > 0; i++) {
			sb_conn_t *c = &t->conns[i];

			if (!c->retry)
				continue;
			c->retry = false;
			t->n_retry--;
			if (ph == PH_STOP_SENDING || ph == PH_QUIT)
				continue;
			if (opt.scenario != SB_HANDSHAKE)
				cnt_add(&t->s->c.reconnects, 1);
			conn_start(c);
		}
	}
	if (open_loop())
		return;
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
	t->sched = evtimer_new(t->base, thread_sched, t);
	event_add(t->tick, &tv);
	t->last_phase = PH_CONNECT;
	/* Receivers first, so that no message finds its device offline; queue: senders only. */
	if (opt.scenario == SB_QUEUE) {
		thread_todo(t, 0, t->n_senders);
	} else {
		thread_todo(t, t->n_senders, t->n_conns);
		thread_todo(t, 0, t->n_senders);
	}
	thread_pump(t);
	event_base_dispatch(t->base);
	event_free(t->tick);
	event_free(t->sched);
	for (unsigned i = 0; i < t->n_conns; i++)
		conn_close(&t->conns[i]);
	return NULL;
}

static void thread_free(sb_thread_t *t)
{
	if (t == NULL)
		return;
	for (unsigned i = 0; t->conns != NULL && i < t->n_conns; i++) {
		sb_conn_t *c = &t->conns[i];

		free(c->in);
		free(c->out);
		free(c->acks);
		free(c->peer_tokens);
		SSL_SESSION_free(c->sess);
	}
	free(t->conns);
	free(t->todo);
	if (t->base != NULL)
		event_base_free(t->base);
	free(t);
}

static sb_thread_t *thread_new(unsigned no)
{
	struct event_config *cfg = event_config_new();
	sb_thread_t *t = calloc(1, sizeof(*t) + opt.blob + 8);

	if (t == NULL || cfg == NULL) {
		free(t);
		event_config_free(cfg);
		return NULL;
	}
	t->no = no;
	t->s = &g_sh->slots[no];
	event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
	if (open_loop())
		event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
	t->base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	if (t->base == NULL) {
		thread_free(t);
		return NULL;
	}
	return t;
}

/* Sender i's recipients: receivers (i * N + j) % R for j < N (distinct, since N <= R). */
static uint8_t *peer_tokens_make(unsigned i)
{
	uint8_t *p = malloc((size_t)opt.recipients * 32);

	if (p == NULL)
		return NULL;
	for (unsigned j = 0; j < opt.recipients; j++)
		memcpy(p + (size_t)j * 32,
		       g_recv_ids[((size_t)i * opt.recipients + j) % g_n_recv].token, 32);
	return p;
}

/* The identity of sending connection i, of receiving (or idle) connection i. */
static const sb_ident_t *ident_send(unsigned i)
{
	return &g_send_ids[i % g_n_send_ids];
}

static const sb_ident_t *ident_recv(unsigned i)
{
	return &g_recv_ids[i % g_n_recv_ids];
}

/* Gives thread t (global number no of g_nslots) connections no, no + g_nslots, ... */
static int thread_assign(sb_thread_t *t)
{
	unsigned ns = 0, nr = 0, no = t->no;

	for (unsigned i = no; i < g_n_send; i += g_nslots)
		ns++;
	for (unsigned i = no; i < g_n_recv; i += g_nslots)
		nr++;
	if (ns + nr > UINT16_MAX)
		return -1;
	t->conns = calloc(ns + nr + 1, sizeof(*t->conns));
	t->todo = calloc(2 * (ns + nr) + 1, sizeof(*t->todo));
	if (t->conns == NULL || t->todo == NULL)
		return -1;
	t->n_senders = ns;
	t->n_conns = ns + nr;
	ns = 0;
	for (unsigned i = no; i < g_n_send; i += g_nslots, ns++) {
		sb_conn_t *c = &t->conns[ns];

		c->sender = c->send_only = true;
		c->id = ident_send(i);
		c->window = opt.window;
		c->n_peers = 1;
		if (opt.scenario == SB_QUEUE) {
			c->q_first = i;
			c->quota = opt.messages / opt.senders +
			           (i < opt.messages % opt.senders ? 1 : 0);
		} else {
			c->n_peers = (uint16_t)opt.recipients;
			c->peer_tokens = peer_tokens_make(i);
			if (c->peer_tokens == NULL)
				return -1;
		}
	}
	if (open_loop() && ns > 0)
		t->sched_rate = opt.rate * ns / g_n_send;
	nr = 0;
	for (unsigned i = no; i < g_n_recv; i += g_nslots, nr++) {
		sb_conn_t *c = &t->conns[ns + nr];

		c->id = ident_recv(i);
		c->send_only = opt.scenario == SB_HANDSHAKE ||
		               (opt.scenario == SB_IDLE && !opt.register_idle);
	}
	for (unsigned i = 0; i < t->n_conns; i++) {
		t->conns[i].t = t;
		t->conns[i].idx = (uint16_t)i;
		t->conns[i].fd = -1;
	}
	return 0;
}

/* Runs this process's bench threads (global numbers first .. first + opt.threads - 1). */
static int workers_start(unsigned first)
{
	g_threads = calloc(opt.threads, sizeof(*g_threads));
	if (g_threads == NULL)
		return -1;
	for (unsigned k = 0; k < opt.threads; k++) {
		g_threads[k] = thread_new(first + k);
		if (g_threads[k] == NULL || thread_assign(g_threads[k]) < 0) {
			fprintf(stderr, "sealpush-bench: cannot set up bench thread %u\n",
			        first + k);
			return -1;
		}
	}
	for (unsigned k = 0; k < opt.threads; k++)
		if (pthread_create(&g_threads[k]->tid, NULL, thread_main, g_threads[k]) != 0)
			return -1;
	return 0;
}

static void workers_join(void)
{
	for (unsigned k = 0; g_threads != NULL && k < opt.threads; k++) {
		pthread_join(g_threads[k]->tid, NULL);
		thread_free(g_threads[k]);
	}
	free(g_threads);
	g_threads = NULL;
}

/* ---- totals, progress, report ------------------------------------------------------------- */

typedef struct sb_totals {
	uint64_t ready, dead, reconnects, sent, addressed, results, delivered, acked, accepted;
	uint64_t refused, errors, stalled, unique, dups, stale, hs_full, hs_resumed, hs_failed;
	uint64_t last_result_ns, last_deliver_ns, first_connect_ns;
} sb_totals_t;

static void totals_get(sb_totals_t *s)
{
	memset(s, 0, sizeof(*s));
	for (unsigned k = 0; k < g_nslots; k++) {
		sb_counters_t *c = &g_sh->slots[k].c;
		uint64_t fc = cnt_get(&c->first_connect_ns);

		s->ready += cnt_get(&c->ready);
		s->dead += cnt_get(&c->dead);
		s->reconnects += cnt_get(&c->reconnects);
		s->sent += cnt_get(&c->sent);
		s->addressed += cnt_get(&c->addressed);
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
		s->hs_full += cnt_get(&c->hs_full);
		s->hs_resumed += cnt_get(&c->hs_resumed);
		s->hs_failed += cnt_get(&c->hs_failed);
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

/* Per-second values of the scenario's main figure during PH_MEASURE (for min/median/max). */
static double g_ps[SB_MAX_SECONDS];
static unsigned g_n_ps;
static uint64_t g_ps_prev_ns;

static uint64_t main_figure(const sb_totals_t *s)
{
	return opt.scenario == SB_HANDSHAKE ? s->hs_full + s->hs_resumed : s->delivered;
}

static void progress(uint64_t t0, sb_totals_t *prev)
{
	sb_totals_t s;
	uint64_t now = now_ns();

	totals_get(&s);
	if (phase_get() == PH_MEASURE && g_ps_prev_ns != 0 && g_n_ps < SB_MAX_SECONDS)
		g_ps[g_n_ps++] =
		        (double)(main_figure(&s) - main_figure(prev)) / ns_to_s(now - g_ps_prev_ns);
	g_ps_prev_ns = now;
	if (g_progress && opt.scenario == SB_HANDSHAKE)
		fprintf(stderr,
		        "\r[%6.1fs %-7s] handshakes %" PRIu64 "/s (full %" PRIu64
		        " resumed %" PRIu64 ") failed %" PRIu64 "   ",
		        ns_to_s(now - t0), phase_name(phase_get()),
		        main_figure(&s) - main_figure(prev), s.hs_full - prev->hs_full,
		        s.hs_resumed - prev->hs_resumed, s.hs_failed);
	else if (g_progress)
		fprintf(stderr,
		        "\r[%6.1fs %-7s] ready %" PRIu64 " sent %" PRIu64 "/s results %" PRIu64
		        "/s delivered %" PRIu64 "/s refused %" PRIu64 " errors %" PRIu64
		        " reconnects %" PRIu64 "   ",
		        ns_to_s(now - t0), phase_name(phase_get()), s.ready, s.sent - prev->sent,
		        s.results - prev->results, s.delivered - prev->delivered, s.refused,
		        s.errors, s.reconnects);
	*prev = s;
}

static void progress_end(void)
{
	if (g_progress)
		fprintf(stderr, "\n");
}

static bool stop_now(void)
{
	return g_interrupted || g_child_died;
}

/* Waits seconds, with progress at each whole second from the start. False on an interrupt. */
static bool wait_seconds(double seconds, uint64_t t0, sb_totals_t *prev)
{
	uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9);
	uint64_t next = start + 1000000000u;

	for (uint64_t now = start; !stop_now() && now < end; now = now_ns()) {
		if (now >= next) {
			progress(t0, prev);
			next += 1000000000u;
		}
		sleep_ms(5);
	}
	if (!stop_now() && now_ns() + 20000000u >= next)
		progress(t0, prev); /* the last whole second */
	return !stop_now();
}

/* Waits (printing progress) until cond() holds or timeout seconds pass. Returns cond(). */
static bool wait_until(bool (*cond)(const sb_totals_t *), double timeout, uint64_t t0,
                       sb_totals_t *prev)
{
	uint64_t start = now_ns(), last = now_ns();
	sb_totals_t s;

	for (;;) {
		totals_get(&s);
		if (cond(&s))
			return true;
		if (stop_now() || ns_to_s(now_ns() - start) > timeout)
			return false;
		sleep_ms(2);
		if (now_ns() - last >= 1000000000u) {
			last = now_ns();
			progress(t0, prev);
		}
	}
}

static bool all_ready(const sb_totals_t *s)
{
	return s->ready == (uint64_t)g_n_send + g_n_recv || s->dead > 0;
}

static bool all_ready_senders(const sb_totals_t *s)
{
	return s->ready == opt.senders || s->dead > 0;
}

static bool all_answered(const sb_totals_t *s)
{
	return s->results == s->addressed || s->ready == 0;
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

/* Stops every bench thread (and process) and waits for them. */
static void workers_stop(void)
{
	phase_set(PH_QUIT);
	workers_join();
	for (unsigned p = 0; g_children != NULL && p < opt.processes; p++) {
		int st;

		if (g_children[p] <= 0)
			continue;
		while (waitpid(g_children[p], &st, 0) < 0 && errno == EINTR)
			;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			fprintf(stderr, "sealpush-bench: bench process %u ended abnormally (%d)\n",
			        p, st);
			g_child_died = 1;
		}
		g_children[p] = 0;
	}
}

static json_t *env_json(void)
{
	struct utsname u;
	double load[3] = {0, 0, 0};

	uname(&u);
	if (getloadavg(load, 3) < 0)
		load[0] = load[1] = load[2] = -1;
	return json_pack("{s:I, s:s, s:s, s:s, s:s, s:[f,f,f]}", "nproc",
	                 (json_int_t)sysconf(_SC_NPROCESSORS_ONLN), "kernel", u.release, "machine",
	                 u.machine, "openssl", OpenSSL_version(OPENSSL_VERSION), "libevent",
	                 event_get_version(), "loadavg_at_end", load[0], load[1], load[2]);
}

/* Adds every member of the new object o to p (json_pack shorthand). */
static void json_merge(json_t *p, json_t *o)
{
	json_object_update(p, o);
	json_decref(o);
}

static json_t *params_json(void)
{
	json_t *p =
	        json_pack("{s:s, s:s, s:I, s:s, s:I, s:I, s:I, s:b, s:s?, s:s?}", "scenario",
	                  scenario_names[opt.scenario], "server_host", opt.host, "server_port",
	                  (json_int_t)opt.port, "ca_dir", opt.ca_dir, "threads",
	                  (json_int_t)opt.threads, "processes", (json_int_t)opt.processes,
	                  "inflight", (json_int_t)opt.inflight, "send_chain", opt.send_chain,
	                  "tls_ciphersuites", opt.tls_ciphersuites, "tls_groups", opt.tls_groups);
	json_int_t ids = g_n_recv_ids;

	switch (opt.scenario) {
	case SB_QUEUE:
		json_merge(p,
		           json_pack("{s:I, s:I, s:I, s:I, s:I}", "blob", (json_int_t)opt.blob,
		                     "window", (json_int_t)opt.window, "messages",
		                     (json_int_t)opt.messages, "devices", (json_int_t)opt.devices,
		                     "senders", (json_int_t)opt.senders));
		break;
	case SB_THROUGHPUT:
	case SB_FANOUT:
		json_merge(p, json_pack("{s:I, s:I, s:I, s:I, s:I, s:f, s:I, s:f, s:f}", "blob",
		                        (json_int_t)opt.blob, "window", (json_int_t)opt.window,
		                        "senders", (json_int_t)opt.senders, "receivers",
		                        (json_int_t)opt.receivers, "recipients",
		                        (json_int_t)opt.recipients, "rate", opt.rate, "tick_us",
		                        (json_int_t)opt.tick_us, "duration_s", opt.duration,
		                        "warmup_s", opt.warmup));
		if (opt.scenario == SB_THROUGHPUT)
			json_object_set_new(p, "pairs", json_integer(opt.pairs));
		break;
	case SB_IDLE:
		json_merge(p, json_pack("{s:I, s:I, s:b, s:I, s:f, s:f}", "conns",
		                        (json_int_t)opt.conns, "devices", ids, "register",
		                        opt.register_idle, "pid", (json_int_t)opt.pid, "settle_s",
		                        opt.settle, "hold_s", opt.hold));
		break;
	case SB_HANDSHAKE:
		json_merge(p, json_pack("{s:I, s:I, s:b, s:b, s:f, s:f}", "conns",
		                        (json_int_t)opt.conns, "devices", ids, "resume", opt.resume,
		                        "hello", opt.hello, "duration_s", opt.duration, "warmup_s",
		                        opt.warmup));
		break;
	}
	return p;
}

static json_t *status_json(FILE *out)
{
	json_t *o = json_object();

	for (unsigned st = 0; st < 256; st++) {
		uint64_t n = 0;

		for (unsigned k = 0; k < g_nslots; k++)
			n += g_sh->slots[k].status[st];
		if (n == 0)
			continue;
		json_object_set_new(o, sp_status_name(st), json_integer((json_int_t)n));
		fprintf(out, "  status %-22s %12" PRIu64 "\n", sp_status_name(st), n);
	}
	return o;
}

/* Prints the percentiles of every slot's histogram (or lag histogram) merged; as JSON too. */
static json_t *latency_report(FILE *out, const char *label, bool lag)
{
	static const double pcts[] = {50, 90, 99, 99.9};
	static const char *const pnames[] = {"p50", "p90", "p99", "p99.9"};
	json_t *lat = json_object();
	sb_hist_t *h = malloc(sizeof(*h));

	if (h == NULL)
		return lat;
	sb_hist_init(h);
	for (unsigned k = 0; k < g_nslots; k++)
		sb_hist_merge(h, lag ? &g_sh->slots[k].lag : &g_sh->slots[k].hist);
	fprintf(out, "  %s samples %*s%12" PRIu64 "\n", label, (int)(19 - strlen(label)), "",
	        h->total);
	for (unsigned i = 0; i < 4; i++) {
		uint64_t v = sb_hist_percentile(h, pcts[i]);

		fprintf(out, "  %s %-6s %*s%12.3f ms\n", label, pnames[i],
		        (int)(19 - strlen(label)), "", (double)v / 1e6);
		json_object_set_new(lat, pnames[i], json_real((double)v / 1e6));
	}
	fprintf(out, "  %s max    %*s%12.3f ms\n", label, (int)(19 - strlen(label)), "",
	        (double)(h->total ? h->max : 0) / 1e6);
	json_object_set_new(lat, "max", json_real((double)(h->total ? h->max : 0) / 1e6));
	json_object_set_new(lat, "samples", json_integer((json_int_t)h->total));
	json_object_set_new(lat, "unit", json_string("ms"));
	free(h);
	return lat;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Min, median and max of the per-second values of the main figure. */
static json_t *per_second_report(FILE *out, const char *unit)
{
	static double v[SB_MAX_SECONDS];

	if (g_n_ps == 0)
		return json_null();
	memcpy(v, g_ps, g_n_ps * sizeof(double));
	qsort(v, g_n_ps, sizeof(double), cmp_double);
	fprintf(out, "  per second min/median/max   %12.0f / %.0f / %.0f %s\n", v[0], v[g_n_ps / 2],
	        v[g_n_ps - 1], unit);
	return json_pack("{s:f, s:f, s:f, s:I}", "min", v[0], "median", v[g_n_ps / 2], "max",
	                 v[g_n_ps - 1], "seconds", (json_int_t)g_n_ps);
}

static void report(json_t *results, FILE *out)
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
	fflush(stdout);
}

/* ---- scenarios ----------------------------------------------------------------------------- */

/* Waits until every connection of the connect phase is READY; false (said why) if not. */
static bool connect_all(bool (*cond)(const sb_totals_t *), uint64_t want, uint64_t t0,
                        sb_totals_t *prev)
{
	sb_totals_t s;
	uint64_t start = now_ns(); /* identities are made before this: not counted */

	wait_until(cond, opt.connect_timeout, t0, prev);
	totals_get(&s);
	if (s.ready == want)
		return true;
	progress_end();
	fprintf(stderr,
	        "sealpush-bench: only %" PRIu64 " of %" PRIu64
	        " connections ready after %.1f s%s (%" PRIu64 " failed)\n",
	        s.ready, want, ns_to_s(now_ns() - start),
	        g_child_died    ? ", a bench process died"
	        : g_interrupted ? ", interrupted"
	        : s.dead        ? ""
	                        : ", timed out (--connect-timeout)",
	        s.dead);
	return false;
}

/*
 * Warm-up (in PH_WARMUP already), then the measured window: totals at its start (*s0) and
 * end (*s1). Leaves the phase at PH_STOP_SENDING. Returns the measured seconds.
 */
static double measure(uint64_t t0, sb_totals_t *prev, sb_totals_t *s0, sb_totals_t *s1)
{
	uint64_t m0, m1;

	wait_seconds(opt.warmup, t0, prev);
	totals_get(s0);
	m0 = now_ns();
	g_ps_prev_ns = m0;
	*prev = *s0;
	phase_set(PH_MEASURE);
	wait_seconds(opt.duration, t0, prev);
	phase_set(PH_STOP_SENDING);
	m1 = now_ns();
	totals_get(s1);
	return ns_to_s(m1 - m0);
}

/* throughput and fanout. */
static int run_traffic(FILE *out)
{
	uint64_t t0 = now_ns(), lost;
	sb_totals_t prev = {0}, s0, s1, s;
	json_t *r = json_object();
	double secs, rate, sends;

	if (!connect_all(all_ready, (uint64_t)g_n_send + g_n_recv, t0, &prev)) {
		workers_stop();
		return 1;
	}
	phase_set(PH_WARMUP);
	secs = measure(t0, &prev, &s0, &s1);
	wait_until(all_answered, SB_DRAIN_TIMEOUT, t0, &prev);
	workers_stop();
	progress_end();
	totals_get(&s);

	rate = (double)(s1.delivered - s0.delivered) / secs;
	sends = (double)(s1.sent - s0.sent) / secs;
	lost = s.addressed - s.results;
	if (opt.scenario == SB_THROUGHPUT)
		fprintf(out, "sealpush-bench throughput: %u pairs, ", opt.pairs);
	else
		fprintf(out,
		        "sealpush-bench fanout: %u senders, %u recipients per SEND out of %u "
		        "receivers, ",
		        opt.senders, opt.recipients, opt.receivers);
	fprintf(out, "%s, blob %u B, %u process(es) x %u thread(s), %.1f s\n",
	        open_loop() ? "open loop" : "closed loop", opt.blob, opt.processes, opt.threads,
	        secs);
	if (open_loop())
		fprintf(out, "  target rate                 %12.0f SEND/s\n", opt.rate);
	else
		fprintf(out, "  window per sender           %12u SENDs\n", opt.window);
	fprintf(out, "  delivered                   %12.0f msg/s\n", rate);
	fprintf(out, "  SENDs                       %12.0f /s\n", sends);
	json_object_set_new(r, "per_second", per_second_report(out, "delivered/s"));
	json_object_set_new(r, "latency", latency_report(out, "latency", false));
	if (open_loop())
		json_object_set_new(r, "send_lag", latency_report(out, "send lag", true));
	fprintf(out, "  SENDs / recipients (all)    %12" PRIu64 " / %" PRIu64 "\n", s.sent,
	        s.addressed);
	fprintf(out, "  result entries / delivered  %12" PRIu64 " / %" PRIu64 "\n", s.results,
	        s.delivered);
	fprintf(out, "  unanswered at the end       %12" PRIu64 "\n", lost);
	if (open_loop())
		fprintf(out, "  open-loop sends held back   %12" PRIu64 "\n", s.stalled);
	fprintf(out, "  errors / reconnects         %12" PRIu64 " / %" PRIu64 "\n", s.errors,
	        s.reconnects);
	json_merge(r, json_pack("{s:f, s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
	                        "delivered_per_s", rate, "sends_per_s", sends, "measured_s", secs,
	                        "sent", (json_int_t)s.sent, "addressed", (json_int_t)s.addressed,
	                        "answered", (json_int_t)s.results, "delivered",
	                        (json_int_t)s.delivered, "unanswered", (json_int_t)lost,
	                        "held_back", (json_int_t)s.stalled, "errors", (json_int_t)s.errors,
	                        "reconnects", (json_int_t)s.reconnects));
	json_object_set_new(r, "status", status_json(out));
	report(r, out);
	return lost != 0 || s.errors != 0 || s.refused != 0 || stop_now();
}

static int run_queue(FILE *out)
{
	uint64_t t0 = now_ns(), e0, queued = 0, missing = 0;
	sb_totals_t prev = {0}, s, se;
	json_t *r = json_object();
	double enq_s, drain_s;
	bool drained;

	if (!connect_all(all_ready_senders, opt.senders, t0, &prev)) {
		workers_stop();
		return 1;
	}
	e0 = now_ns();
	phase_set(PH_ENQUEUE);
	/* No deadline while results keep coming: wait in SB_DRAIN_TIMEOUT slices of progress. */
	for (uint64_t last = 0;;) {
		if (wait_until(all_enqueued, SB_DRAIN_TIMEOUT, t0, &prev))
			break;
		totals_get(&s);
		if (s.results == last || stop_now())
			break;
		last = s.results;
	}
	totals_get(&se);
	enq_s = ns_to_s(se.last_result_ns - e0);
	for (uint32_t i = 0; i < opt.messages; i++)
		if (atomic_load_explicit(&g_qstatus[i], memory_order_relaxed) == 1 + SP_ST_QUEUED)
			queued++;
	g_drain_expect = queued;
	for (unsigned k = 0; k < g_nslots; k++)
		cnt_set(&g_sh->slots[k].c.first_connect_ns, 0);
	phase_set(PH_DRAIN);
	drained = false;
	for (uint64_t last = UINT64_MAX;;) {
		if (wait_until(all_drained, SB_DRAIN_TIMEOUT, t0, &prev)) {
			drained = true;
			break;
		}
		totals_get(&s);
		if (s.delivered == last || stop_now())
			break;
		last = s.delivered;
	}
	/* Let the last ACKs go out (they are written in the DELIVER's callback already). */
	sleep_ms(300);
	totals_get(&s);
	workers_stop();
	progress_end();
	drain_s = s.first_connect_ns && s.last_deliver_ns > s.first_connect_ns
	                  ? ns_to_s(s.last_deliver_ns - s.first_connect_ns)
	                  : 0;
	for (uint32_t i = 0; i < opt.messages; i++)
		if (atomic_load_explicit(&g_qstatus[i], memory_order_relaxed) == 1 + SP_ST_QUEUED &&
		    atomic_load_explicit(&g_arrived[i], memory_order_relaxed) == 0)
			missing++;

	fprintf(out,
	        "sealpush-bench queue: %u messages, %u devices, %u senders (window %u), "
	        "blob %u B, %u process(es) x %u thread(s)\n",
	        opt.messages, opt.devices, opt.senders, opt.window, opt.blob, opt.processes,
	        opt.threads);
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
	fprintf(out, "  errors / reconnects         %12" PRIu64 " / %" PRIu64 "\n", s.errors,
	        s.reconnects);
	json_merge(r,
	           json_pack("{s:f, s:f, s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
	                     "s:I, s:I, s:b}",
	                     "enqueue_per_s", enq_s > 0 ? (double)queued / enq_s : 0, "enqueue_s",
	                     enq_s, "drain_per_s", drain_s > 0 ? (double)s.delivered / drain_s : 0,
	                     "drain_s", drain_s, "sent", (json_int_t)se.sent, "answered",
	                     (json_int_t)se.results, "queued", (json_int_t)queued, "delivered",
	                     (json_int_t)s.delivered, "unique", (json_int_t)s.unique, "missing",
	                     (json_int_t)missing, "duplicates", (json_int_t)s.dups, "stale",
	                     (json_int_t)s.stale, "errors", (json_int_t)s.errors, "reconnects",
	                     (json_int_t)s.reconnects, "complete", drained));
	json_object_set_new(r, "status", status_json(out));
	report(r, out);
	return !drained || missing != 0 || queued != opt.messages || se.sent != se.results ||
	       s.errors != 0 || stop_now();
}

/* VmRSS of a process in KiB, or -1. */
static long rss_kib(long pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/status", pid);
	f = fopen(path, "r");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static int run_idle(FILE *out)
{
	uint64_t t0 = now_ns(), t_up;
	sb_totals_t prev = {0}, s;
	json_t *r = json_object();
	long before = -1, at_ready = -1, settled = -1;
	double up_s;
	bool ok, rate_ok;

	if (opt.pid > 0 && (before = rss_kib(opt.pid)) < 0) {
		fprintf(stderr, "sealpush-bench: cannot read VmRSS of pid %ld\n", opt.pid);
		workers_stop();
		return 1;
	}
	phase_set(PH_CONNECT);
	ok = connect_all(all_ready, g_n_recv, t0, &prev);
	t_up = now_ns();
	if (ok) {
		phase_set(PH_MEASURE);
		if (opt.pid > 0)
			at_ready = rss_kib(opt.pid);
		wait_seconds(opt.settle, t0, &prev);
		if (opt.pid > 0)
			settled = rss_kib(opt.pid);
		totals_get(&s);
		if (opt.hold > 0) {
			progress_end();
			fprintf(stderr,
			        "sealpush-bench: %" PRIu64 " connections up, holding %.0f s\n",
			        s.ready, opt.hold);
			wait_seconds(opt.hold, t0, &prev);
		}
	}
	totals_get(&s);
	workers_stop();
	progress_end();
	up_s = s.first_connect_ns ? ns_to_s(t_up - s.first_connect_ns) : 0;
	fprintf(out, "sealpush-bench idle: %u connections (%s), %u process(es) x %u thread(s)\n",
	        opt.conns, opt.register_idle ? "receivers, one identity each" : "SEND_ONLY",
	        opt.processes, opt.threads);
	/* A rate only when every connection came up over a measurable time. */
	rate_ok = ok && s.ready > 0 && up_s >= 0.001;
	if (rate_ok)
		fprintf(out, "  connected in                %12.2f s (%.0f connections/s)\n", up_s,
		        s.ready / up_s);
	else
		fprintf(out, "  connected                   %12" PRIu64 " of %u ready (no rate)\n",
		        s.ready, opt.conns);
	fprintf(out, "  errors / reconnects         %12" PRIu64 " / %" PRIu64 "\n", s.errors,
	        s.reconnects);
	json_merge(r, json_pack("{s:b, s:f, s:f, s:I, s:I}", "connected", ok, "connect_s", up_s,
	                        "connects_per_s", rate_ok ? s.ready / up_s : 0, "errors",
	                        (json_int_t)s.errors, "reconnects", (json_int_t)s.reconnects));
	if (opt.pid > 0 && ok) {
		double per = (double)(settled - before) / opt.conns;

		fprintf(out, "  relay RSS before            %12ld KiB\n", before);
		fprintf(out, "  relay RSS all ready         %12ld KiB (%.2f KiB/conn)\n", at_ready,
		        (double)(at_ready - before) / opt.conns);
		fprintf(out, "  relay RSS settled           %12ld KiB (%.0f s later)\n", settled,
		        opt.settle);
		fprintf(out, "  relay RSS per connection    %12.2f KiB\n", per);
		json_merge(r,
		           json_pack("{s:I, s:I, s:I, s:f}", "rss_before_kib", (json_int_t)before,
		                     "rss_ready_kib", (json_int_t)at_ready, "rss_settled_kib",
		                     (json_int_t)settled, "kib_per_conn", per));
	}
	report(r, out);
	return !ok || s.errors != 0 || stop_now();
}

static int run_handshake(FILE *out)
{
	uint64_t t0 = now_ns();
	sb_totals_t prev = {0}, s0, s1, s;
	json_t *r = json_object();
	double secs, full, resumed;

	/* The slots start at once (no connect phase); their first handshakes are full. */
	secs = measure(t0, &prev, &s0, &s1);
	workers_stop();
	progress_end();
	totals_get(&s);
	full = (double)(s1.hs_full - s0.hs_full) / secs;
	resumed = (double)(s1.hs_resumed - s0.hs_resumed) / secs;
	fprintf(out,
	        "sealpush-bench handshake: %s, %u concurrent, %u identities, %s, %u process(es) x "
	        "%u thread(s), %.1f s\n",
	        opt.resume ? "resumed sessions" : "full handshakes", opt.conns, g_n_recv_ids,
	        opt.hello ? "handshake + HELLO/WELCOME" : "handshake + session ticket",
	        opt.processes, opt.threads, secs);
	fprintf(out, "  full handshakes             %12.0f /s\n", full);
	fprintf(out, "  resumed handshakes          %12.0f /s\n", resumed);
	json_object_set_new(r, "per_second", per_second_report(out, "handshakes/s"));
	json_object_set_new(r, "latency", latency_report(out, "latency", false));
	fprintf(out, "  failed (all)                %12" PRIu64 "\n", s.hs_failed);
	json_merge(r, json_pack("{s:f, s:f, s:f, s:f, s:I, s:I, s:I}", "full_per_s", full,
	                        "resumed_per_s", resumed, "handshakes_per_s", full + resumed,
	                        "measured_s", secs, "full", (json_int_t)(s1.hs_full - s0.hs_full),
	                        "resumed", (json_int_t)(s1.hs_resumed - s0.hs_resumed), "failed",
	                        (json_int_t)s.hs_failed));
	report(r, out);
	return s.hs_failed != 0 || (opt.resume ? resumed : full) <= 0 || stop_now();
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
	        "  fanout      S senders, each SEND to N of R receivers; deliveries/s, SENDs/s,\n"
	        "              latency per delivery; closed or open loop as throughput\n"
	        "  queue       M messages to D offline devices, then the devices drain;\n"
	        "              enqueue/s and drain/s, every QUEUED message checked\n"
	        "  idle        hold N connections; with --pid, the relay's RSS per connection\n"
	        "  handshake   C connections at a time: connect, mTLS handshake (full, or resumed\n"
	        "              with --resume), wait for the session ticket (or HELLO/WELCOME with\n"
	        "              --hello), close, again; handshakes/s and handshake latency\n"
	        "\n"
	        "Options:\n"
	        "  --server HOST:PORT   relay address (default 127.0.0.1:7443)\n"
	        "  --ca-dir DIR         sealpush-ca directory: ca.crt verifies the relay, and\n"
	        "                       bench-sN / bench-rN device identities live (or are made) "
	        "here\n"
	        "  --sealpush-ca PATH   the sealpush-ca command (default: next to this binary, "
	        "else PATH)\n"
	        "  --processes K        bench processes (default 1); the connections are split\n"
	        "                       over them, so the descriptor limit applies per process\n"
	        "  --threads N          bench threads per process, one event base each "
	        "(default 1)\n"
	        "  --inflight N         connections on their way up at a time, per thread "
	        "(default 64)\n"
	        "  --connect-timeout S  seconds for every connection to be ready (default 60)\n"
	        "  --duration S         measured seconds (default 10)\n"
	        "  --warmup S           seconds before measuring, not in the figures (default 2)\n"
	        "  --json               one JSON object on stdout (the table goes to stderr)\n"
	        "  --quiet              no progress line (it is also off when stderr is no tty)\n"
	        "  --send-chain         send the CA certificate after the leaf, as clients that\n"
	        "                       load the CA as trust store do by default (default: leaf)\n"
	        "  --tls-ciphersuites L TLS 1.3 suites to offer (OpenSSL syntax)\n"
	        "  --tls-groups L       key-exchange groups to offer, e.g. P-256 or X25519\n"
	        "throughput, fanout, queue:\n"
	        "  --blob N             blob bytes (default 256, at least 8 for latency)\n"
	        "  --window W           unanswered SENDs per sender (default 32)\n"
	        "throughput, fanout:\n"
	        "  --rate R             open loop: R SENDs/s in total (default: closed loop)\n"
	        "  --tick-us U          open loop: least timer interval (default 20); sends are\n"
	        "                       scheduled evenly, latency counts from the intended time\n"
	        "throughput:\n"
	        "  --pairs P            sender/receiver pairs (default 100)\n"
	        "fanout:\n"
	        "  --senders S          sending connections (default 10)\n"
	        "  --recipients N       recipients per SEND (default 10)\n"
	        "  --receivers R        receiving connections (default S x N, at least N)\n"
	        "queue:\n"
	        "  --messages M         messages (default 100000)\n"
	        "  --devices D          offline devices (default 100)\n"
	        "  --senders S          sending connections (default 100)\n"
	        "idle:\n"
	        "  --conns N            connections (default 1000)\n"
	        "  --devices D          SEND_ONLY identities shared round robin (default 10)\n"
	        "  --register           connections are receivers, one identity each (bench-rI)\n"
	        "  --pid PID            the relay's pid: VmRSS before and after, KiB per "
	        "connection\n"
	        "  --settle S           seconds between all ready and the RSS reading "
	        "(default 5)\n"
	        "  --hold S             then keep the connections up S more seconds\n"
	        "handshake:\n"
	        "  --conns C            connections at a time (default 32)\n"
	        "  --devices D          identities, used round robin (default 10)\n"
	        "  --resume             resume TLS 1.3 sessions (tickets) after each slot's "
	        "first\n"
	        "  --hello              also HELLO/WELCOME before closing\n"
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

static int parse_double(const char *s, double lo, double hi, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= lo) || !(v <= hi))
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
	return opt.host != NULL ? 0 : -1;
}

/* Which scenarios an option applies to (bits of enum sb_scenario; 0 = all). */
#define S_(x)   (1u << (x))
#define S_SEND  (S_(SB_THROUGHPUT) | S_(SB_FANOUT) | S_(SB_QUEUE))
#define S_TRAF  (S_(SB_THROUGHPUT) | S_(SB_FANOUT))
#define S_TIMED (S_TRAF | S_(SB_HANDSHAKE))

static int parse_args(int argc, char **argv)
{
	enum {
		O_SERVER = 256,
		O_CA_DIR,
		O_CA_TOOL,
		O_THREADS,
		O_PROCESSES,
		O_PAIRS,
		O_WINDOW,
		O_RATE,
		O_BLOB,
		O_DURATION,
		O_WARMUP,
		O_MESSAGES,
		O_DEVICES,
		O_SENDERS,
		O_RECEIVERS,
		O_RECIPIENTS,
		O_CONNS,
		O_INFLIGHT,
		O_CONNECT_TIMEOUT,
		O_TICK_US,
		O_PID,
		O_SETTLE,
		O_HOLD,
		O_REGISTER,
		O_RESUME,
		O_HELLO,
		O_JSON,
		O_QUIET,
		O_SEND_CHAIN,
		O_TLS_CIPHERSUITES,
		O_TLS_GROUPS,
	};
	static const struct option lopts[] = {
	        {"server", required_argument, NULL, O_SERVER},
	        {"ca-dir", required_argument, NULL, O_CA_DIR},
	        {"sealpush-ca", required_argument, NULL, O_CA_TOOL},
	        {"threads", required_argument, NULL, O_THREADS},
	        {"processes", required_argument, NULL, O_PROCESSES},
	        {"pairs", required_argument, NULL, O_PAIRS},
	        {"window", required_argument, NULL, O_WINDOW},
	        {"rate", required_argument, NULL, O_RATE},
	        {"blob", required_argument, NULL, O_BLOB},
	        {"duration", required_argument, NULL, O_DURATION},
	        {"warmup", required_argument, NULL, O_WARMUP},
	        {"messages", required_argument, NULL, O_MESSAGES},
	        {"devices", required_argument, NULL, O_DEVICES},
	        {"senders", required_argument, NULL, O_SENDERS},
	        {"receivers", required_argument, NULL, O_RECEIVERS},
	        {"recipients", required_argument, NULL, O_RECIPIENTS},
	        {"conns", required_argument, NULL, O_CONNS},
	        {"inflight", required_argument, NULL, O_INFLIGHT},
	        {"connect-timeout", required_argument, NULL, O_CONNECT_TIMEOUT},
	        {"tick-us", required_argument, NULL, O_TICK_US},
	        {"pid", required_argument, NULL, O_PID},
	        {"settle", required_argument, NULL, O_SETTLE},
	        {"hold", required_argument, NULL, O_HOLD},
	        {"register", no_argument, NULL, O_REGISTER},
	        {"resume", no_argument, NULL, O_RESUME},
	        {"hello", no_argument, NULL, O_HELLO},
	        {"json", no_argument, NULL, O_JSON},
	        {"quiet", no_argument, NULL, O_QUIET},
	        {"send-chain", no_argument, NULL, O_SEND_CHAIN},
	        {"tls-ciphersuites", required_argument, NULL, O_TLS_CIPHERSUITES},
	        {"tls-groups", required_argument, NULL, O_TLS_GROUPS},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	/* Indexed by option - O_SERVER: the scenarios each one means something for. */
	static const unsigned applies[] = {
	        [O_PAIRS - O_SERVER] = S_(SB_THROUGHPUT),
	        [O_WINDOW - O_SERVER] = S_SEND,
	        [O_RATE - O_SERVER] = S_TRAF,
	        [O_BLOB - O_SERVER] = S_SEND,
	        [O_DURATION - O_SERVER] = S_TIMED,
	        [O_WARMUP - O_SERVER] = S_TIMED,
	        [O_MESSAGES - O_SERVER] = S_(SB_QUEUE),
	        [O_DEVICES - O_SERVER] = S_(SB_QUEUE) | S_(SB_IDLE) | S_(SB_HANDSHAKE),
	        [O_SENDERS - O_SERVER] = S_(SB_QUEUE) | S_(SB_FANOUT),
	        [O_RECEIVERS - O_SERVER] = S_(SB_FANOUT),
	        [O_RECIPIENTS - O_SERVER] = S_(SB_FANOUT),
	        [O_CONNS - O_SERVER] = S_(SB_IDLE) | S_(SB_HANDSHAKE),
	        [O_TICK_US - O_SERVER] = S_TRAF,
	        [O_PID - O_SERVER] = S_(SB_IDLE),
	        [O_SETTLE - O_SERVER] = S_(SB_IDLE),
	        [O_HOLD - O_SERVER] = S_(SB_IDLE),
	        [O_REGISTER - O_SERVER] = S_(SB_IDLE),
	        [O_RESUME - O_SERVER] = S_(SB_HANDSHAKE),
	        [O_HELLO - O_SERVER] = S_(SB_HANDSHAKE),
	};
	bool server_set = false;
	int o, bad = 0;
	unsigned sc;

	if (argc < 2 || argv[1][0] == '-') {
		if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
			usage(stdout);
			exit(0);
		}
		usage(stderr);
		return -1;
	}
	for (sc = 0; sc <= SB_HANDSHAKE; sc++)
		if (!strcmp(argv[1], scenario_names[sc]))
			break;
	if (sc > SB_HANDSHAKE) {
		fprintf(stderr, "sealpush-bench: unknown scenario '%s' (try --help)\n", argv[1]);
		return -1;
	}
	opt.scenario = (enum sb_scenario)sc;
	optind = 2;
	while ((o = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		unsigned pid = 0;

		if (o >= O_SERVER &&
		    (size_t)(o - O_SERVER) < sizeof(applies) / sizeof(applies[0]) &&
		    applies[o - O_SERVER] != 0 && !(applies[o - O_SERVER] & S_(opt.scenario))) {
			fprintf(stderr, "sealpush-bench: %s does not apply to the %s scenario\n",
			        argv[optind - 1], scenario_names[opt.scenario]);
			return -1;
		}
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
		case O_PROCESSES:
			bad |= parse_uint(optarg, 1, 64, &opt.processes);
			break;
		case O_PAIRS:
			bad |= parse_uint(optarg, 1, 30000, &opt.pairs);
			break;
		case O_WINDOW:
			bad |= parse_uint(optarg, 1, 65535, &opt.window);
			break;
		case O_RATE:
			bad |= parse_double(optarg, 0, 1e9, &opt.rate);
			break;
		case O_BLOB:
			bad |= parse_uint(optarg, 0, 16 << 20, &opt.blob);
			break;
		case O_DURATION:
			bad |= parse_double(optarg, 1, SB_MAX_SECONDS - 1, &opt.duration);
			break;
		case O_WARMUP:
			bad |= parse_double(optarg, 0, SB_MAX_SECONDS, &opt.warmup);
			break;
		case O_MESSAGES:
			bad |= parse_uint(optarg, 1, 100000000, &opt.messages);
			break;
		case O_DEVICES:
			bad |= parse_uint(optarg, 1, 1000000, &opt.devices);
			break;
		case O_SENDERS:
			bad |= parse_uint(optarg, 1, 30000, &opt.senders);
			break;
		case O_RECEIVERS:
			bad |= parse_uint(optarg, 1, 30000, &opt.receivers);
			break;
		case O_RECIPIENTS:
			bad |= parse_uint(optarg, 1, 65535, &opt.recipients);
			break;
		case O_CONNS:
			bad |= parse_uint(optarg, 1, 1000000, &opt.conns);
			break;
		case O_INFLIGHT:
			bad |= parse_uint(optarg, 1, 65535, &opt.inflight);
			break;
		case O_CONNECT_TIMEOUT:
			bad |= parse_double(optarg, 1, SB_MAX_SECONDS, &opt.connect_timeout);
			break;
		case O_TICK_US:
			bad |= parse_uint(optarg, 1, 1000000, &opt.tick_us);
			break;
		case O_PID:
			bad |= parse_uint(optarg, 1, INT_MAX, &pid);
			opt.pid = (long)pid;
			break;
		case O_SETTLE:
			bad |= parse_double(optarg, 0, SB_MAX_SECONDS, &opt.settle);
			break;
		case O_HOLD:
			bad |= parse_double(optarg, 0, SB_MAX_SECONDS * 30.0, &opt.hold);
			break;
		case O_REGISTER:
			opt.register_idle = true;
			break;
		case O_RESUME:
			opt.resume = true;
			break;
		case O_HELLO:
			opt.hello = true;
			break;
		case O_JSON:
			opt.json = true;
			break;
		case O_QUIET:
			opt.quiet = true;
			break;
		case O_SEND_CHAIN:
			opt.send_chain = true;
			break;
		case O_TLS_CIPHERSUITES:
			opt.tls_ciphersuites = optarg;
			break;
		case O_TLS_GROUPS:
			opt.tls_groups = optarg;
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
	switch (opt.scenario) {
	case SB_THROUGHPUT:
		opt.senders = opt.receivers = opt.pairs;
		opt.recipients = 1;
		break;
	case SB_FANOUT:
		if (opt.senders == 0)
			opt.senders = 10;
		if (opt.receivers == 0)
			opt.receivers = opt.senders * opt.recipients > 30000
			                        ? 30000
			                        : opt.senders * opt.recipients;
		if (opt.recipients > opt.receivers) {
			fprintf(stderr,
			        "sealpush-bench: --recipients %u needs at least as many "
			        "--receivers\n",
			        opt.recipients);
			return -1;
		}
		break;
	case SB_QUEUE:
		if (opt.senders == 0)
			opt.senders = 100;
		if (opt.devices == 0)
			opt.devices = 100;
		if (opt.devices > 30000) {
			fprintf(stderr, "sealpush-bench: at most 30000 --devices for queue\n");
			return -1;
		}
		if (opt.senders > opt.messages)
			opt.senders = opt.messages;
		opt.recipients = 1;
		break;
	case SB_IDLE:
		if (opt.conns == 0)
			opt.conns = 1000;
		if (opt.devices == 0)
			opt.devices = 10;
		break;
	case SB_HANDSHAKE:
		if (opt.conns == 0)
			opt.conns = 32;
		if (opt.devices == 0)
			opt.devices = 10;
		break;
	}
	if (opt.processes * opt.threads > UINT16_MAX) {
		fprintf(stderr, "sealpush-bench: too many processes x threads\n");
		return -1;
	}
	return 0;
}

static int tls_setup(void)
{
	char path[PATH_MAX];

	g_ctx = SSL_CTX_new(TLS_client_method());
	if (g_ctx == NULL)
		return -1;
	SSL_CTX_set_min_proto_version(g_ctx, TLS1_3_VERSION);
	SSL_CTX_set_mode(g_ctx,
	                 SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (!opt.send_chain)
		SSL_CTX_set_mode(g_ctx, SSL_MODE_NO_AUTO_CHAIN);
	if (opt.tls_ciphersuites != NULL &&
	    SSL_CTX_set_ciphersuites(g_ctx, opt.tls_ciphersuites) != 1) {
		fprintf(stderr, "sealpush-bench: bad --tls-ciphersuites '%s'\n",
		        opt.tls_ciphersuites);
		return -1;
	}
	if (opt.tls_groups != NULL && SSL_CTX_set1_groups_list(g_ctx, opt.tls_groups) != 1) {
		fprintf(stderr, "sealpush-bench: bad --tls-groups '%s'\n", opt.tls_groups);
		return -1;
	}
	if (opt.scenario == SB_HANDSHAKE) {
		/* Tickets reach on_new_session(); nothing is cached inside OpenSSL. */
		SSL_CTX_set_session_cache_mode(g_ctx, SSL_SESS_CACHE_CLIENT |
		                                              SSL_SESS_CACHE_NO_INTERNAL_STORE);
		SSL_CTX_sess_set_new_cb(g_ctx, on_new_session);
	} else {
		SSL_CTX_set_session_cache_mode(g_ctx, SSL_SESS_CACHE_OFF);
	}
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

static void on_sigchld(int sig)
{
	int saved = errno;

	(void)sig;
	if (g_sh != NULL && phase_get() != PH_QUIT)
		g_child_died = 1;
	errno = saved;
}

/* The connection counts and identities of the scenario. Returns 0 or -1 (said why). */
static int idents_setup(void)
{
	unsigned minted = 0;
	const char *tool = sb_ident_tool(opt.ca_tool);
	uint64_t t = now_ns();

	switch (opt.scenario) {
	case SB_THROUGHPUT:
	case SB_FANOUT:
		g_n_send = g_n_send_ids = opt.senders;
		g_n_recv = g_n_recv_ids = opt.receivers;
		break;
	case SB_QUEUE:
		g_n_send = g_n_send_ids = opt.senders;
		g_n_recv = g_n_recv_ids = opt.devices;
		break;
	case SB_IDLE:
		g_n_recv = opt.conns;
		g_n_recv_ids = opt.register_idle ? opt.conns : opt.devices;
		break;
	case SB_HANDSHAKE:
		g_n_recv = opt.conns;
		g_n_recv_ids = opt.devices;
		break;
	}
	if (g_n_recv_ids > g_n_recv)
		g_n_recv_ids = g_n_recv;
	g_send_ids = calloc(g_n_send_ids + 1, sizeof(*g_send_ids));
	g_recv_ids = calloc(g_n_recv_ids + 1, sizeof(*g_recv_ids));
	if (g_send_ids == NULL || g_recv_ids == NULL)
		return -1;
	/* SEND_ONLY connections of idle and handshake use sender identities (bench-sI). */
	if (sb_ident_load(opt.ca_dir, tool, "bench-s", g_n_send_ids, g_send_ids, &minted) < 0 ||
	    sb_ident_load(opt.ca_dir, tool,
	                  (opt.scenario == SB_IDLE && !opt.register_idle) ||
	                                  opt.scenario == SB_HANDSHAKE
	                          ? "bench-s"
	                          : "bench-r",
	                  g_n_recv_ids, g_recv_ids, &minted) < 0)
		return -1;
	if (minted > 0)
		fprintf(stderr, "sealpush-bench: issued %u identities with %s in %.1f s\n", minted,
		        tool, ns_to_s(now_ns() - t));
	return 0;
}

/* Raises the descriptor limit and checks that each process's share of connections fits. */
static int fds_setup(void)
{
	struct rlimit rl;
	uint64_t per = ((uint64_t)g_n_send + g_n_recv + opt.processes - 1) / opt.processes;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    per + SB_FD_RESERVE > rl.rlim_cur) {
		fprintf(stderr,
		        "sealpush-bench: %" PRIu64 " connections per process do not fit the "
		        "descriptor limit %llu: use more --processes\n",
		        per, (unsigned long long)rl.rlim_cur);
		return -1;
	}
	return 0;
}

/* Maps the shared region (slots, phase, queue arrays). */
static int shared_setup(void)
{
	size_t sz = sizeof(sb_shared_t) + (size_t)g_nslots * sizeof(sb_slot_t);

	g_sh = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (g_sh == MAP_FAILED) {
		g_sh = NULL;
		return -1;
	}
	for (unsigned k = 0; k < g_nslots; k++) {
		sb_hist_init(&g_sh->slots[k].hist);
		sb_hist_init(&g_sh->slots[k].lag);
	}
	atomic_store(&g_sh->phase, opt.scenario == SB_HANDSHAKE ? PH_WARMUP : PH_CONNECT);
	if (opt.scenario == SB_QUEUE) {
		g_qstatus = mmap(NULL, opt.messages, PROT_READ | PROT_WRITE,
		                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		g_arrived = mmap(NULL, opt.messages, PROT_READ | PROT_WRITE,
		                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (g_qstatus == MAP_FAILED || g_arrived == MAP_FAILED)
			return -1;
	}
	return 0;
}

/* Forks the bench processes (K > 1) or starts the threads here. Returns 0 in the parent. */
static int workers_launch(void)
{
	pid_t parent = getpid();

	if (opt.processes == 1)
		return workers_start(0);
	g_children = calloc(opt.processes, sizeof(*g_children));
	if (g_children == NULL)
		return -1;
	signal(SIGCHLD, on_sigchld);
	for (unsigned p = 0; p < opt.processes; p++) {
		pid_t pid = fork();

		if (pid < 0) {
			perror("sealpush-bench: fork");
			return -1;
		}
		if (pid == 0) {
			/* A bench process: its threads run until the orchestrator says PH_QUIT. */
			signal(SIGINT, SIG_IGN);
			signal(SIGTERM, SIG_DFL);
			signal(SIGCHLD, SIG_DFL);
			prctl(PR_SET_PDEATHSIG, SIGTERM);
			if (getppid() != parent)
				_exit(1);
			if (workers_start(p * opt.threads) < 0)
				_exit(1);
			workers_join();
			_exit(0);
		}
		g_children[p] = pid;
	}
	return 0;
}

int main(int argc, char **argv)
{
	FILE *out;
	int rc = 1;

	if (parse_args(argc, argv) < 0)
		return 2;
	out = opt.json ? stderr : stdout;
	g_progress = !opt.quiet && isatty(STDERR_FILENO);
	g_nslots = opt.processes * opt.threads;
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (tls_setup() < 0) {
		ERR_print_errors_fp(stderr);
		goto out;
	}
	if (idents_setup() < 0 || fds_setup() < 0)
		goto out;
	if (RAND_bytes(g_nonce, sizeof(g_nonce)) != 1 || shared_setup() < 0) {
		fprintf(stderr, "sealpush-bench: set-up failed\n");
		goto out;
	}
	if (workers_launch() < 0) {
		if (g_sh != NULL)
			workers_stop();
		goto out;
	}
	switch (opt.scenario) {
	case SB_THROUGHPUT:
	case SB_FANOUT:
		rc = run_traffic(out);
		break;
	case SB_QUEUE:
		rc = run_queue(out);
		break;
	case SB_IDLE:
		rc = run_idle(out);
		break;
	case SB_HANDSHAKE:
		rc = run_handshake(out);
		break;
	}
out:
	sb_ident_free(g_send_ids, g_n_send_ids);
	sb_ident_free(g_recv_ids, g_n_recv_ids);
	free(g_send_ids);
	free(g_recv_ids);
	free(g_children);
	SSL_CTX_free(g_ctx);
	return rc;
}
