/*
 * sp_server.h: the relay's internal types and the calls between its modules.
 *
 * Who owns what
 * -------------
 * - sp_server_t: built by main() before the workers start; read-only afterwards except the
 *   fields marked "atomic" and the TLS context (sp_tls.c swaps it under its own lock).
 * - sp_worker_t: one thread and one event base (EVENT_BASE_FLAG_NOLOCK). Everything in it is
 *   touched by that thread only, except `inbox` (any thread pushes), `flags` and `wake`
 *   (atomics), and `metrics` (the admin thread reads).
 * - sp_conn_t: a client connection, owned by the worker that accepted it, for its lifetime.
 *   Other threads name it by reference (worker index, slot, generation), never by pointer.
 * - sp_msg_t: one accepted SEND. It belongs to the worker of its sender (`owner`), which alone
 *   frees it. It holds one sp_node_t per recipient; a node travels to the recipient's worker
 *   (read-only access to the message there), and comes back to the owner with a status.
 *   When every node is back the owner frees the message: no reference counts, no atomics.
 *
 * Data flow: socket -> transport (sp_transport.h: sp_tls.c, then sp_record.c) -> connection
 * (sp_conn.c) -> frame decoder -> session (sp_session.c) -> router
 * (local connection | other worker's inbox | refusal) -> encoder -> TLS -> socket.
 */
#ifndef SP_SERVER_H
#define SP_SERVER_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/listener.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sp_frame.h"
#include "sp_metrics.h"
#include "sp_mpsc.h"
#include "sp_record.h"
#include "sp_store.h"
#include "sp_tokmap.h"
#include "sp_transport.h"

typedef struct sp_server sp_server_t;
typedef struct sp_worker sp_worker_t;
typedef struct sp_conn sp_conn_t;
typedef struct sp_msg sp_msg_t;
typedef struct sp_node sp_node_t;

/* The daemon's configuration (filled by sp_config from the table in sealpushd.c). */
typedef struct sp_server_config {
	char *listen;
	char *tls_cert;
	char *tls_key;
	char *client_ca;
	char *crl;
	char *redis;
	char *admin_listen;
	int64_t workers;
	int log_level;
	int64_t max_connections;
	int64_t max_frame;
	int64_t max_blob;
	int64_t max_recipients;
	int64_t window;
	int64_t send_window;
	int64_t keepalive;
	int64_t keepalive_min;
	int64_t keepalive_max;
	int64_t handshake_timeout; /* ms */
	int64_t hello_timeout;     /* ms */
	int64_t ack_timeout;       /* ms */
	int64_t shutdown_grace;    /* ms */
	int64_t output_buffer_max; /* bytes */
	int64_t send_rate;         /* messages per second per connection, 0 = unlimited */
	int64_t send_burst;        /* messages; 0 = one second's worth of send_rate */
	int64_t max_errors;
	int64_t max_ttl;           /* seconds */
	int64_t max_queue;         /* messages queued per offline device */
	int64_t max_queue_bytes;   /* bytes queued per offline device */
	int64_t store_timeout;     /* ms a Redis request may take */
	int64_t wait_replicas;     /* > 0: QUEUED only once that many replicas have the write */
	int64_t wait_timeout;      /* ms for WAIT */
	int64_t drain_page;        /* messages fetched per page when a device drains its queue */
	int64_t store_batch;       /* most messages of one device per Redis enqueue request */
	int64_t tls_session_cache; /* > 0: stateful TLS 1.3 tickets, this many sessions cached */
	int64_t backlog;
	bool help;
	bool version;
	bool check_config;
} sp_server_config_t;

/* A reference to a connection that any thread may hold: worker, slot and generation. */
typedef uint64_t sp_connref_t;
#define SP_CONNREF(worker, slot, gen)                                                              \
	(((uint64_t)(worker) << 56) | ((uint64_t)(slot) << 32) | (uint64_t)(gen))
#define SP_CONNREF_WORKER(r) ((unsigned)((r) >> 56))
#define SP_CONNREF_SLOT(r)   ((uint32_t)(((r) >> 32) & 0xFFFFFF))
#define SP_CONNREF_GEN(r)    ((uint32_t)(r))
#define SP_MAX_WORKERS       64

#define SP_WORKER_SCRATCH    65536 /* read buffer: several TLS records per read() */
#define SP_WORKER_SEAL       (4 * (SP_RL_MAX_PLAIN + SP_RL_OVERHEAD)) /* sealed output buffer */
#define SP_POOL_CLASSES      9                                        /* 256 B .. 64 KiB */
#define SP_POOL_MIN_SHIFT    8
#define SP_POOL_MAX_BYTES    ((size_t)4 << 20)

/* Global registry: token -> receiving connection. Sharded; each shard has its own lock. */
#define SP_REGISTRY_SHARDS 64
typedef struct sp_registry {
	struct {
		pthread_mutex_t lock;
		sp_tokmap_t map;
	} shard[SP_REGISTRY_SHARDS];
} sp_registry_t;

void sp_registry_init(sp_registry_t *r);
void sp_registry_destroy(sp_registry_t *r);
/* Returns the connection registered for token, or 0. */
sp_connref_t sp_registry_get(sp_registry_t *r, const uint8_t token[32]);
/* Registers ref for token; returns the reference it replaced (0 if none) or -ENOMEM. */
int sp_registry_set(sp_registry_t *r, const uint8_t token[32], sp_connref_t ref, sp_connref_t *old);
/* Unregisters token if (and only if) it still names ref. */
void sp_registry_del(sp_registry_t *r, const uint8_t token[32], sp_connref_t ref);

/* Worker flags set by other threads (atomic), acted on at the next wake-up. */
#define SP_WF_DRAIN  0x1u /* send GOAWAY SHUTDOWN to everyone and finish */
#define SP_WF_RELOAD 0x2u /* the TLS context changed: close revoked connections */
#define SP_WF_STOP   0x4u /* leave the event loop now */

struct sp_server {
	sp_server_config_t cfg;
	const char *config_file; /* for messages */
	int n_workers;
	int n_threads; /* worker threads running (joined at exit) */
	sp_worker_t *workers;
	sp_registry_t registry;

	sp_tls_server_t *tls; /* TLS context and CRL (sp_tls.h) */

	struct sockaddr_storage listen_addr;
	int listen_addrlen;

	atomic_int n_conns; /* open connections, all workers */
	atomic_bool draining;
	atomic_int workers_done; /* workers that left their loop */
	atomic_bool listeners_up;
	atomic_bool stopping; /* teardown: store callbacks touch nothing */
	uint64_t started_ms;  /* wall clock at start, for the uptime gauge */
	sp_metrics_t metrics; /* main thread's own counters (reloads) */
};

struct sp_worker {
	sp_server_t *srv;
	int id;
	pthread_t thread;
	struct event_base *base;
	struct evconnlistener *listener;
	int spare_fd; /* kept open so that an EMFILE accept can still be refused cleanly */

	sp_mpsc_t inbox;
	int efd;
	struct event *ev_wake;
	struct event *ev_tick;
	struct event *ev_accept_retry; /* re-enables the listener after an EMFILE pause */
	struct event *ev_after;        /* end of a loop turn: results, flushes, reaping */
	bool after_pending;
	atomic_uint flags;
	atomic_int wake;

	uint64_t now; /* monotonic ms, refreshed at every callback */
	uint64_t drain_started;
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

	sp_store_t *store;    /* the offline queue in Redis, or NULL without one */
	uint8_t *record;      /* a record being built for the store (max_blob + header) */
	uint8_t (*acks)[16];  /* ids of one ACK frame for the store (SP_STORE_MAX_ACK) */
	uint8_t *scratch;     /* read buffer shared by the worker's connections */
	uint8_t *seal;        /* record-layer output buffer shared likewise */
	sp_rl_crypto_t *rlcx; /* AEAD context and fetched algorithms for the record layer */
	sp_tio_env_t tio_env; /* the three above and the TLS context, for the transports */
	sp_metrics_t metrics;
};

/* Connection states (PROTOCOL.md 6.1). */
enum sp_conn_state {
	SP_CS_HANDSHAKE,
	SP_CS_AWAITING_HELLO,
	SP_CS_READY,
	SP_CS_DRAINING,
	SP_CS_CLOSING,
};

/* Queue states of a receiving connection (with a store). */
enum { SP_Q_NONE, SP_Q_FETCHING, SP_Q_PAGED, SP_Q_DONE };

/* Connection flags. */
#define SP_CF_SEND_ONLY  0x01
#define SP_CF_REGISTERED 0x02 /* in the registry and the worker's local map */
#define SP_CF_DIRTY      0x04 /* on the worker's dirty list */
#define SP_CF_WRITE_WAIT 0x08 /* the transport wants the socket writable */
#define SP_CF_READ_WAIT  0x10 /* the transport (reading) wants the socket writable */
#define SP_CF_RESUMED    0x20
#define SP_CF_FINISHED   0x40 /* socket closed, on the reap list */

/* A node's kind as it travels between workers. */
enum sp_node_kind { SP_NODE_DELIVER, SP_NODE_RESULT, SP_NODE_REPLACE, SP_NODE_KICK };

struct sp_node {
	sp_mpsc_node_t q; /* inbox link */
	uint8_t kind;
	uint8_t status;
	sp_worker_t *at; /* the worker that asked the store about this node */
	uint8_t hops;    /* times rerouted, to bound ping-pong between workers */
	uint16_t index;  /* the recipient's position in the SEND */
	sp_msg_t *msg;
	sp_node_t *next;   /* in a connection's pending or in-flight list */
	uint64_t deadline; /* ack timeout, monotonic ms */
	sp_connref_t ref;  /* SP_NODE_REPLACE, SP_NODE_KICK: the connection it is for */
};

/* The node whose inbox link is q. */
static inline sp_node_t *sp_node_of(sp_mpsc_node_t *q)
{
	return (sp_node_t *)(void *)((char *)q - offsetof(sp_node_t, q));
}

struct sp_msg {
	sp_worker_t *owner;
	sp_connref_t sender;
	sp_msg_t *prev, *next; /* owner's list of live messages */
	uint32_t n;            /* recipients */
	uint32_t unanswered;   /* nodes not yet back with a status (owner only) */
	uint64_t expires;      /* monotonic ms; 0 if ttl is 0 (deliver now or never) */
	uint64_t expires_wall; /* the same in unix ms, for the store */
	uint32_t ttl;
	uint32_t blob_len;
	uint8_t msg_id[SP_MSG_ID_LEN];
	uint8_t priority;
	uint8_t has_priority;
	uint8_t pool_class; /* size class of the block, or 0xFF if it was malloc'd alone */
	uint8_t stored;     /* read from the device's queue: its ACK removes it from Redis, and
	                     * there is no sender to answer */
	uint8_t collapse_len;
	uint8_t collapse[SP_COLLAPSE_MAX];
	sp_node_t *nodes;
	uint8_t *recipients;
	uint8_t *blob;
};

struct sp_conn {
	sp_worker_t *w;
	sp_conn_t *prev, *next;
	sp_conn_t *dirty_next;
	sp_conn_t *reap_next;
	sp_tio_t io; /* the transport: TLS, then (usually) the record layer */
	struct event ev_read;
	struct event ev_write;
	uint8_t *out;     /* output bytes [out_off, out_len): allocated on first output, kept */
	uint32_t out_off; /* while the connection is busy, freed by the tick when it idles */
	uint32_t out_len;
	uint32_t out_cap;
	sp_decoder_t dec;
	uint32_t slot;
	uint32_t gen;
	uint8_t state;
	uint8_t flags;
	uint8_t close_reason;
	uint8_t serial_len;
	uint8_t serial[20]; /* the client certificate's serial, for revocation checks */
	uint16_t errors; /* non-fatal errors so far */
	uint16_t window;
	uint16_t keepalive; /* seconds */
	uint64_t t_state;   /* when the current state began (ms) */
	uint64_t t_rx;      /* last frame received (ms) */
	uint8_t token[32];

	/* Deliveries to this device: in flight (sent, not ACKed; oldest first) and pending. */
	sp_node_t *inflight, *inflight_tail;
	sp_node_t *pending, *pending_tail;
	uint32_t n_inflight;
	uint32_t n_pending;
	uint64_t pending_bytes;

	/* Its offline queue: drained after WELCOME, page by page, before live messages. */
	uint8_t qstate;    /* SP_Q_* */
	uint8_t qmore;     /* something was queued while a page was out: fetch again after it */
	uint64_t qseq;     /* last seq fetched */
	uint32_t q_unsent; /* stored messages in the pending list */
	sp_node_t *held, *held_tail; /* live messages waiting for the drain to finish */

	/* This connection as a sender. */
	uint32_t sends_outstanding;
	double rate_tokens;
	uint64_t rate_t;
};

/* sp_conn.c */
/* Takes ownership of an accepted socket on w: refuses it (closed, counted) while draining or
 * over max_connections, else makes a connection in SP_CS_HANDSHAKE; the tick enforces
 * handshake_timeout. */
void sp_conn_accept(sp_worker_t *w, int fd);
/* Queues a frame for c (encoded into its output buffer) and marks c for flushing. */
int sp_conn_send(sp_conn_t *c, sp_frame_t *f);
/* Sends ERROR (fatal codes set CLOSING) or, with goaway, GOAWAY; then closes gracefully. */
void sp_conn_close(sp_conn_t *c, enum sp_close_reason why, unsigned code, const char *reason);
/* Queues GOAWAY (with a reconnect hint if retry_after_ms > 0) to a READY or DRAINING
 * connection and moves it to DRAINING; no effect in any other state. */
void sp_conn_goaway(sp_conn_t *c, unsigned code, uint32_t retry_after_ms);
/* Queues an ERROR frame (counted): code, reason, and the type and msg_id of the frame it is
 * about (if any). With closing, the CLOSING flag; the caller then closes. */
void sp_conn_error(sp_conn_t *c, unsigned code, bool closing, const char *reason,
                   const sp_frame_t *about);
/* Ends the connection now: close_notify if possible, socket closed, freed after the callback. */
void sp_conn_finish(sp_conn_t *c);
/* Writes c's pending output to the socket now (through OpenSSL or the record layer) until it
 * is empty or the socket would block (then waits for writable); never blocks. */
void sp_conn_flush(sp_conn_t *c);
/* Puts c on its worker's dirty list (once) so that the end of the loop turn flushes it. */
void sp_conn_mark_dirty(sp_conn_t *c);
/* Moves c to state s, keeping the per-state connection gauges and t_state. */
void sp_conn_set_state(sp_conn_t *c, enum sp_conn_state s);
/* Frees a finished connection (the reaper calls it; never from c's own callbacks): unlinks it,
 * frees its slot (later references to it go stale) and everything it holds. NULL is a no-op. */
void sp_conn_free(sp_conn_t *c);
/* The one place output_buffer_max is enforced: if c's queued bytes (sp_conn_output_bytes) are
 * over it, counts the limit hit and closes c as a slow consumer (-ENOBUFS), else returns 0.
 * sp_conn_send() calls it for every frame but ERROR and GOAWAY; the router after queueing a
 * delivery that was not encoded yet. */
int sp_conn_check_output(sp_conn_t *c);
/* Bytes queued for c and not yet written: encoded output plus pending deliveries. */
uint64_t sp_conn_output_bytes(const sp_conn_t *c);
/* Frees the output buffer if it is empty (the tick calls it for idle connections). */
void sp_conn_release_output(sp_conn_t *c);

/* sp_session.c */
/* One decoded frame from c, in c's worker: the state machine of PROTOCOL.md section 6 (HELLO
 * before WELCOME, then SEND, ACK, PING, GOAWAY, ERROR). f's fields may point into the
 * decoder's buffer: valid during the call only. */
void sp_session_frame(sp_conn_t *c, sp_frame_t *f);
/* The decoder refused c's input with err (a negative SP_ERR_*): an unknown frame type after
 * WELCOME is skipped, anything else is answered with ERROR and counted, fatal ones close c. */
void sp_session_decode_error(sp_conn_t *c, int err, const sp_frame_t *f);
/* Routes one recipient node from worker w (a SEND, a reroute, or another worker's handoff). */
void sp_route(sp_worker_t *w, sp_node_t *n);
/* A node whose recipient answered (or failed) goes back to its message's owner. */
void sp_node_finish(sp_worker_t *w, sp_node_t *n, uint8_t status);
/* Handles a node popped from w's inbox. */
void sp_session_inbox(sp_worker_t *w, sp_node_t *n);
/* The connection is going away: unregister it and reroute what it had not acknowledged. */
void sp_session_detach(sp_conn_t *c);
/* Periodic checks for one connection (ack timeouts). */
void sp_session_tick(sp_conn_t *c);
/* Sends the gathered SEND_RESULT entries. */
void sp_session_flush_results(sp_worker_t *w);
/* Something was queued for c's device: read its queue (now, or after the current page). */
void sp_session_queue_kick(sp_conn_t *c);
/* Periodic store work of a worker: store counters into its metrics. */
void sp_session_worker_tick(sp_worker_t *w);
/* Frees every message w still owns (teardown, all threads stopped). */
void sp_session_teardown(sp_worker_t *w);

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

static inline sp_connref_t sp_conn_ref(const sp_conn_t *c)
{
	return SP_CONNREF(c->w->id, c->slot, c->gen);
}

/* sp_admin.c: the admin HTTP listener (/healthz, /readyz from the stores, /metrics), on the main
 * event base. */
typedef struct sp_admin sp_admin_t;
/* Binds admin_listen (if set) on base. Returns 0 with *out set (free with sp_admin_stop), or -1
 * with err set. Reads the workers' stores and metrics from the main thread. */
int sp_admin_start(sp_server_t *srv, struct event_base *base, sp_admin_t **out, char *err,
                   size_t errlen);
/* Closes the listener and frees a; NULL is a no-op. */
void sp_admin_stop(sp_admin_t *a);

#endif
