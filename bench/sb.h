/*
 * sb.h: what the modules of sealpush-bench share. The types of a run and one struct, sb_run_t,
 * that holds everything a run knows; the main process fills it (options, identities, TLS
 * context, the shared region) before any bench thread starts, and passes it to the other
 * modules. Nothing in it is written after the threads start, except the shared region (see
 * below) and what main/scenarios own (children, per-second figures).
 *
 * Who owns what. The shared region (MAP_SHARED | MAP_ANONYMOUS, so that forked bench processes
 * see it too) holds the global phase, one slot per bench thread (counters, send statuses,
 * latency histograms) and, for the queue scenario, the per-message arrays. The orchestrator
 * (sb_scen) moves the phase forward (release store) and reads the slots (relaxed atomics; a
 * slot is written by exactly one bench thread). Each bench thread (sb_thread) owns one event
 * base, its connections (sb_conn) and its slot. Histograms and status arrays are read only
 * after every thread has stopped (pthread_join / waitpid). The queue's per-message arrays are
 * written by one thread per element and phase (SEND_RESULT on the sender's thread in
 * PH_ENQUEUE, DELIVER on the device's thread in PH_DRAIN).
 */
#ifndef SB_H
#define SB_H

#include "sb_hist.h"
#include "sb_ident.h"
#include "sp_tlsgroup.h"

#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#include <openssl/ssl.h>

#define SB_DRAIN_TIMEOUT 10.0 /* seconds for answers after the senders stop / no progress */
#define SB_RETRY_MS      100  /* reconnect delay after a broken connection */
#define SB_MAX_SECONDS   86400
#define SB_FD_RESERVE    64 /* descriptors a process keeps for itself */

enum sb_scenario { SB_THROUGHPUT, SB_FANOUT, SB_QUEUE, SB_IDLE, SB_HANDSHAKE };

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

/* The command line (sb_opts), read-only once parsed. */
typedef struct sb_opts {
	enum sb_scenario scenario;
	const char *host;
	uint16_t port;
	struct sockaddr_storage addr; /* --server, resolved once */
	socklen_t addr_len;
	struct sockaddr_storage raddr; /* a second --server: where receivers connect (cluster) */
	socklen_t raddr_len;           /* 0: receivers use addr too */
	bool host_is_ip;
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
	bool anonymous; /* senders use the relay's anonymous door (sealed sender, PROTOCOL 17) */
	bool send_chain;
	const char *tls_ciphersuites;
	const char *tls_groups;
	bool resume;
	bool hello;
	bool json;
	bool quiet;
} sb_opts_t;

/* Counters the orchestrator reads while the threads run (written by one thread each). */
typedef struct sb_counters {
	_Atomic uint64_t ready, dead, reconnects;
	_Atomic uint64_t sent, addressed, results, delivered, acked;
	_Atomic uint64_t accepted, refused; /* SEND_RESULT entries */
	_Atomic uint64_t errors;            /* ERROR, GOAWAY, codec errors, broken connections */
	_Atomic uint64_t stalled;           /* open loop: a due SEND held back by the window */
	_Atomic uint64_t unique, dups, stale;
	_Atomic uint64_t hs_full, hs_resumed, hs_failed;
	_Atomic uint64_t hs_group[SP_TG_COUNT]; /* completed handshakes, by key-exchange group */
	_Atomic uint64_t last_result_ns, last_deliver_ns, first_connect_ns;
	_Atomic uint64_t stopped; /* 1 once the thread saw PH_STOP_SENDING: it sends no more */
} sb_counters_t;

/* One per bench thread, in the shared region. */
typedef struct sb_slot {
	sb_counters_t c;
	uint64_t status[256]; /* SEND_RESULT entries by status */
	sb_hist_t hist;       /* end-to-end latency, or handshake latency */
	sb_hist_t lag;        /* open loop: how late the bench wrote each SEND (its own share) */
} sb_slot_t;

/* The shared region. */
typedef struct sb_shared {
	_Atomic int phase;
	sb_slot_t slots[];
} sb_shared_t;

struct sb_thread;

/* One run. Filled by main before the threads start; see the comment at the top. */
typedef struct sb_run {
	sb_opts_t opt;
	SSL_CTX *ctx;         /* every connection's; the handshake scenario keeps tickets */
	uint8_t nonce[8];     /* first 8 bytes of every message id of this run */
	unsigned nslots;      /* processes * threads */
	unsigned n_send;      /* sending connections */
	unsigned n_recv;      /* receiving (or idle, or handshake) connections */
	sb_ident_t *send_ids; /* bench-sI, shared round robin by the senders */
	sb_ident_t *recv_ids; /* bench-rI (or bench-sI for SEND_ONLY ones) */
	unsigned n_send_ids, n_recv_ids;
	sb_shared_t *sh;            /* the shared region */
	_Atomic uint8_t *qstatus;   /* queue: per message, 0 unanswered, 1 + status */
	_Atomic uint8_t *arrived;   /* queue: per message, DELIVERs seen (saturating) */
	struct sb_thread **threads; /* this process's bench threads (sb_thread) */
	pid_t *children;            /* the bench processes (main), NULL with --processes 1 */
	bool progress;              /* print the progress line */
	uint64_t drain_expect;      /* queue: QUEUED messages the drain waits for */
	/* Per-second values of the scenario's main figure during PH_MEASURE (sb_report). */
	unsigned n_ps;
	uint64_t ps_prev_ns;
	double ps[SB_MAX_SECONDS];
} sb_run_t;

/* Set by the signal handlers of main: SIGINT/SIGTERM, a bench process that died. */
extern volatile sig_atomic_t sb_interrupted, sb_child_died;

/* CLOCK_MONOTONIC in nanoseconds. */
static inline uint64_t sb_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline double sb_ns_to_s(uint64_t ns)
{
	return (double)ns / 1e9;
}

static inline void sb_sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* The global phase (acquire), and moving it (release; the orchestrator only). */
static inline int sb_phase_get(const sb_run_t *r)
{
	return atomic_load_explicit(&r->sh->phase, memory_order_acquire);
}

static inline void sb_phase_set(sb_run_t *r, int p)
{
	atomic_store_explicit(&r->sh->phase, p, memory_order_release);
}

/* A slot counter: written by its own thread only, read by anyone (relaxed). */
static inline void sb_cnt_add(_Atomic uint64_t *c, uint64_t v)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
	                      memory_order_relaxed);
}

static inline uint64_t sb_cnt_get(_Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

static inline void sb_cnt_set(_Atomic uint64_t *c, uint64_t v)
{
	atomic_store_explicit(c, v, memory_order_relaxed);
}

/* Open loop (--rate) for a scenario that sends on a schedule. */
static inline bool sb_open_loop(const sb_opts_t *o)
{
	return o->rate > 0 && (o->scenario == SB_THROUGHPUT || o->scenario == SB_FANOUT);
}

/* An interrupt, or a bench process died: the orchestrator stops waiting. */
static inline bool sb_stop_now(void)
{
	return sb_interrupted || sb_child_died;
}

#endif
