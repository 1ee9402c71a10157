/*
 * sp_worker.h: a worker thread, its event loop, its connections' slots and its inbox.
 *
 * Everything in an sp_worker_t is touched by its own thread only, except `inbox` (any thread
 * pushes), `flags` and `wake` (atomics), and `metrics` (the admin thread reads).
 */
#ifndef SP_WORKER_H
#define SP_WORKER_H

#include <event2/event.h>
#include <event2/listener.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "sp_metrics.h"
#include "sp_mpsc.h"
#include "sp_record.h"
#include "sp_server.h"
#include "sp_store.h"
#include "sp_tokmap.h"
#include "sp_transport.h"

#define SP_WORKER_SCRATCH 65536 /* read buffer: several TLS records per read() */
#define SP_WORKER_SEAL    (4 * (SP_RL_MAX_PLAIN + SP_RL_OVERHEAD)) /* sealed output buffer */
#define SP_POOL_CLASSES   9                                        /* 256 B .. 64 KiB */
#define SP_POOL_MIN_SHIFT 8
#define SP_POOL_MAX_BYTES ((size_t)4 << 20)

/* Event priorities of a worker's base. libevent gives every event it makes for others
 * (hiredis's adapter, the listener, bufferevents) the middle one of the base's priorities and
 * resets it whenever the adapter re-assigns an event, so a base of three priorities puts the
 * store's replies (queue reads, the cluster inbox) beside connected devices' sockets, the
 * inbox wake-up and the end of a loop turn, at SP_PRIO_CONN; handshakes run at
 * SP_PRIO_HANDSHAKE, only in a loop turn with nothing of SP_PRIO_CONN ready (with two
 * priorities the store sat there too, and a busy worker starved its own Redis replies: 86 ms
 * p99 across relays). Priority 0 is kept free. SP_ACCEPT_PER_TURN accepts per loop turn,
 * SP_HANDSHAKE_STEPS callbacks of the lower priority before libevent looks again. */
#define SP_PRIO_COUNT      3
#define SP_PRIO_CONN       1
#define SP_PRIO_HANDSHAKE  2
#define SP_ACCEPT_PER_TURN 32
#define SP_HANDSHAKE_STEPS 4

struct sp_worker {
	sp_server_t *srv;
	int id;
	pthread_t thread;
	struct event_base *base;
	struct evconnlistener *listener;
	struct evconnlistener *anon_listener; /* anon_listen (sp_anon.h), or NULL */
	int spare_fd; /* kept open so that an EMFILE accept can still be refused cleanly */

	sp_mpsc_t inbox;
	int efd;
	struct event *ev_wake;
	struct event *ev_tick;
	struct event *ev_accept_retry; /* re-enables the listener after an EMFILE pause */
	struct event *ev_after;        /* end of a loop turn: results, flushes, reaping */
	bool after_pending;
	atomic_uint flags;
	atomic_bool drained; /* draining, and nothing of its own left (read by the main thread) */
	atomic_int wake;

	uint64_t now; /* monotonic ms, refreshed at every callback */
	uint64_t drain_started;
	uint64_t drain_logged; /* last drain_waiting line (past the grace) */
	bool draining;

	/* Connections: a slot table (slot -> conn, with generations) and a list of all. */
	sp_conn_t **slots;
	uint32_t *gens;
	uint32_t n_slots;
	uint32_t *free_list; /* stack of free slot numbers */
	uint32_t n_free;
	sp_conn_t *conns; /* doubly linked, all open connections */
	uint32_t n_conns;
	sp_tokmap_t local; /* token -> sp_conn_t* of this worker's registered connections */

	sp_conn_t *dirty; /* connections with output to flush at the end of this callback */
	sp_conn_t *reap;  /* closed connections to free at the end of this callback */

	/* Admission (sp_conn_accept): handshakes running, and the FIFO of accepted connections
	 * waiting for one to end; accepts in this loop turn (the listener pauses after
	 * SP_ACCEPT_PER_TURN, and on_after resumes it, so a storm of connections is taken in
	 * turns with the traffic of connected devices). */
	uint32_t hs_running;
	uint32_t hs_waiting;
	sp_conn_t *hs_head, *hs_tail;
	uint32_t accepts_this_turn;
	bool accept_paused;
	bool announcing; /* cluster: the listener waits until the other relays know this one */

	/* SEND_RESULT entries gathered for one message, sent at the end of the callback. */
	sp_msg_t *batch_msg;
	uint32_t batch_n;
	uint8_t *batch;  /* SP_MAX_RECIPIENTS_V1 * SP_RESULT_LEN bytes */
	uint32_t *dedup; /* SP_MAX_RECIPIENTS_V1 indexes, then as many flag bytes (find_repeats) */

	/* Free message blocks by size class (256 B << class), reused by the next SENDs so the
	 * per-message path does not call malloc; capped at SP_POOL_MAX_BYTES per worker. */
	void *pool[SP_POOL_CLASSES];
	size_t pool_bytes;

	uint32_t live_msgs; /* messages this worker owns that still have nodes out */
	sp_msg_t *msgs;     /* list of them, for teardown */

	sp_store_t *store;     /* the offline queue in Redis, or NULL without one */
	struct sp_cluster *cl; /* this worker's part of the cluster (sp_cluster.h), or NULL */
	uint8_t *record;       /* a record being built for the store (max_blob + header) */
	uint8_t (*acks)[16];   /* ids of one ACK frame for the store (SP_STORE_MAX_ACK) */
	uint8_t *scratch;      /* read buffer shared by the worker's connections */
	uint8_t *seal;         /* record-layer output buffer shared likewise */
	sp_rl_crypto_t *rlcx;  /* AEAD context and fetched algorithms for the record layer */
	sp_tio_env_t tio_env;  /* the three above and the TLS context, for the transports */

	struct sp_provider *provider; /* the Web Push door (sp_provider.h), or NULL */
	struct sp_dirlog *dirlog;     /* the key directory's log (sp_directory.h), or NULL */
	struct sp_anon_w *anon;       /* sealed sender's cache and flushes (sp_anon.h), or NULL */
	sp_metrics_t metrics;
};

/* sp_worker.c */
/* Makes srv->n_workers workers (event base, inbox, listener, store) and starts their threads.
 * Returns 0, or -1 with err set after undoing what it had started. */
int sp_workers_start(sp_server_t *srv, char *err, size_t errlen);
/* Any thread: sets SP_WF_* flags on every worker and wakes it; acted on in its own thread. */
void sp_workers_signal(sp_server_t *srv, unsigned flags);
/* Main thread, after SP_WF_STOP: joins the threads, frees the stores, the messages and the
 * workers. A no-op when no workers were made. */
void sp_workers_join(sp_server_t *srv);
/* Any thread: makes w run its inbox soon (one eventfd write per wake-up, not per call). */
void sp_worker_wake(sp_worker_t *w);
/* Any thread: hands node n to w (w owns it from now on) and wakes w. */
void sp_worker_push(sp_worker_t *w, sp_node_t *n);
/* w's thread: the live connection ref names, or NULL if it is gone, finished, or on another
 * worker (the generation makes a stale reference miss, never hit a newer connection). */
sp_conn_t *sp_worker_conn(sp_worker_t *w, sp_connref_t ref);
/* w's thread: gives c a slot and generation (c->slot, c->gen). Returns 0, -ENOMEM, or
 * -ENOSPC past 2^24 slots. */
int sp_worker_slot_alloc(sp_worker_t *w, sp_conn_t *c);
/* w's thread: frees c's slot and bumps its generation, so references to c go stale. */
void sp_worker_slot_free(sp_worker_t *w, sp_conn_t *c);
/* Asks for the work left by callbacks (gathered results, flushes, reaping) to be done once at
 * the end of this loop turn; every callback that may leave such work calls it. */
void sp_worker_after(sp_worker_t *w);
/* Monotonic milliseconds (any thread); a callback uses w->now, refreshed once per callback. */
uint64_t sp_now_ms(void);

#endif
