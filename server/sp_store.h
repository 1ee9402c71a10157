/*
 * sp_store: the offline store. Messages for devices that are not connected wait in Redis, one
 * queue per device token, until the device fetches and acknowledges them or they expire.
 *
 * One sp_store_t per worker thread, on that worker's event base; it is not thread-safe except
 * sp_store_counters(), which any thread may call while the store exists. Every request is
 * answered exactly once through its callback, always from the event loop (never from inside
 * the request call), unless the request call itself returned a negative error. The lifecycle,
 * key layout, scripts and durability are described at the top of sp_store.c.
 */
#ifndef SP_STORE_H
#define SP_STORE_H

#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sp_store sp_store_t;

/* Callback statuses. */
enum {
	SP_STORE_OK = 0,      /* fetch, ack, depth: done */
	SP_STORE_STORED,      /* enqueue: stored (and replicated, if wait_replicas > 0) */
	SP_STORE_DUPLICATE,   /* enqueue: this id is already queued; seq is its seq */
	SP_STORE_FULL_COUNT,  /* enqueue: the queue holds max_count messages */
	SP_STORE_FULL_BYTES,  /* enqueue: the record would take the queue over max_bytes */
	SP_STORE_EXPIRED,     /* enqueue: expires_ms is not in the future; nothing stored */
	SP_STORE_UNAVAILABLE, /* Redis is down, slow (timeout), or did not replicate in time */
	SP_STORE_ERROR,       /* Redis answered something unexpected (a script error, bad reply) */
};

/* A short lowercase name for a status ("stored", "unavailable", ...), "unknown" otherwise. */
const char *sp_store_status_name(int status);

/* The Lua source of the script "enqueue", "fetch", "ack" or "depth" (for tools that measure
 * them: bench/store-script-bench.c), or NULL. */
const char *sp_store_script(const char *name);

typedef struct sp_store_limits {
	uint32_t max_count;       /* messages per device queue (>= 1) */
	uint64_t max_bytes;       /* sum of record lengths per device queue (>= 1) */
	uint32_t timeout_ms;      /* per request and per connect attempt (>= 1) */
	uint32_t max_inflight;    /* requests sent and unanswered; more fail UNAVAILABLE */
	uint32_t wait_replicas;   /* > 0: WAIT for that many replicas after each store */
	uint32_t wait_timeout_ms; /* the WAIT timeout (>= 1 when wait_replicas > 0) */
	uint32_t max_batch;       /* messages of one token per enqueue request (1..MAX_BATCH) */
} sp_store_limits_t;

#define SP_STORE_MAX_BATCH 1000

/* Fills *lim with defaults: 1000 messages, 4 MiB, 2000 ms, 10000 in flight, no WAIT, batches
 * of up to 64. */
void sp_store_limits_default(sp_store_limits_t *lim);

/* Counters, each only ever growing. */
typedef struct sp_store_counters {
	uint64_t enqueued;       /* enqueues answered STORED */
	uint64_t duplicates;     /* enqueues answered DUPLICATE */
	uint64_t refused_full;   /* enqueues answered FULL_COUNT or FULL_BYTES */
	uint64_t expired;        /* enqueues answered EXPIRED */
	uint64_t expired_purged; /* expired messages the scripts removed */
	uint64_t fetched;        /* items handed to fetch callbacks */
	uint64_t acked;          /* messages removed by ack */
	uint64_t unavailable;    /* requests answered UNAVAILABLE (any cause) */
	uint64_t errors;         /* requests answered ERROR */
	uint64_t timeouts;       /* requests that passed their deadline (each drops the link) */
	uint64_t reconnects;     /* connection attempts after the first one */
	uint64_t enqueue_calls;  /* enqueue requests sent (each carries a batch of messages) */
	/* Redis Cluster only (0 otherwise): the router's own counters (sp_rcluster.h), summed over
	 * every cluster client the store has made, copied by the store's tick (at most 100 ms
	 * behind). A request that timed out on a cluster counts in timeouts above. */
	uint64_t cluster_moved;            /* MOVED redirects followed */
	uint64_t cluster_ask;              /* ASK redirects followed */
	uint64_t cluster_retries;          /* TRYAGAIN and CLUSTERDOWN answers sent again */
	uint64_t cluster_refreshes;        /* slot map refreshes that succeeded */
	uint64_t cluster_refresh_failures; /* ... and that failed (no node answered) */
	uint64_t cluster_conn_lost;        /* master connections lost after they were up */
	uint64_t cluster_resent;           /* requests sent again after their connection was lost */
} sp_store_counters_t;

/* A fetched message. id and record point into the store's and Redis's buffers: valid during the
 * callback only. record is NULL for a message that expired or went away (skip it). */
typedef struct sp_store_item {
	uint64_t seq;
	const uint8_t *id; /* 16 bytes */
	const uint8_t *record;
	size_t record_len;
} sp_store_item_t;

typedef void (*sp_store_enqueue_cb)(int status, uint64_t seq, void *arg);
typedef void (*sp_store_fetch_cb)(int status, const sp_store_item_t *items, size_t n, void *arg);
typedef void (*sp_store_ack_cb)(int status, size_t removed, void *arg);
typedef void (*sp_store_depth_cb)(int status, uint64_t count, uint64_t bytes, void *arg);

/*
 * Makes a store on `base` for url "redis://HOST:PORT", "redis://HOST" (port 6379), "unix:PATH"
 * or "unix://PATH", or for a Redis Cluster "redis-cluster://HOST:PORT,HOST:PORT,..." (seed
 * nodes; the rest is learnt: sp_rcluster.h), and starts connecting (it never blocks; the store
 * is up once connected and its scripts are loaded, or once every slot of the cluster has a
 * connected master). `lim` is copied; wait_replicas applies per master. Returns NULL with a message
 * in err on a bad url or limit, or out of memory. A Redis that is down is not an error: the store
 * keeps retrying.
 */
#define SP_STORE_CLUSTER_SCHEME "redis-cluster://"

sp_store_t *sp_store_new(struct event_base *base, const char *url, const sp_store_limits_t *lim,
                         char *err, size_t errlen);

/*
 * Frees the store and closes its connection. Every request still pending (sent, or waiting to
 * be answered UNAVAILABLE) gets its callback with SP_STORE_UNAVAILABLE before this returns;
 * those callbacks must not use the store (requests made from them return -ESHUTDOWN). Must not
 * be called from inside a store callback. Accepts NULL.
 */
void sp_store_free(sp_store_t *s);

/* 1 if connected and the scripts are loaded, else 0. Any thread (a relaxed read). */
int sp_store_up(const sp_store_t *s);
/* How many times the store has gone down (up to down) so far; on the store's thread. */
uint64_t sp_store_downs(const sp_store_t *s);

/* Copies the counters into *out. Any thread, relaxed reads. */
void sp_store_counters(const sp_store_t *s, sp_store_counters_t *out);

/*
 * Stores `record` (built by sp_store_record_build; its expiry and collapse id must equal
 * expires_ms and collapse) for `token` under message id `id`. expires_ms is unix time in ms.
 * Every buffer is copied before the call returns. Messages for one token are stored in the
 * order of the calls; they go to Redis at the end of the loop turn, or, while an earlier
 * request for the token is out, together once it is answered (up to max_batch at a time). cb gets
 * STORED and the message's seq, DUPLICATE and the stored copy's seq, FULL_COUNT, FULL_BYTES,
 * EXPIRED, UNAVAILABLE or ERROR. A stored message with the same collapse id is replaced (only if
 * the new one is stored). With wait_replicas > 0, STORED and DUPLICATE are answered only once that
 * many replicas confirmed (WAIT); else UNAVAILABLE, and the message may be stored anyway: a retry
 * with the same id is idempotent (not stored twice, same seq). Returns 0 (cb will run once),
 * -EINVAL for bad arguments, -ENOMEM, or -ESHUTDOWN (the store is being freed); after a negative
 * return cb never runs.
 */
int sp_store_enqueue(sp_store_t *s, const uint8_t token[32], const uint8_t id[16],
                     const uint8_t *record, size_t len, uint64_t expires_ms,
                     const uint8_t *collapse, size_t collapse_len, sp_store_enqueue_cb cb,
                     void *arg);

/*
 * Up to `count` (1..SP_STORE_MAX_FETCH) messages of `token` with seq > after_seq, in seq order
 * (pass 0 first, then the seq of the last item received). n < count means there is nothing
 * after the last item. An item whose record is NULL expired or went away while it was read:
 * skip it (the store removes the expired ones itself); it still counts in n. Records are as
 * stored: parse them with sp_store_record_parse and drop any that fail (and any that expired
 * since). Returns as sp_store_enqueue.
 */
#define SP_STORE_MAX_FETCH 1000
int sp_store_fetch(sp_store_t *s, const uint8_t token[32], uint64_t after_seq, unsigned count,
                   sp_store_fetch_cb cb, void *arg);

/*
 * Removes the messages with the given ids (1..SP_STORE_MAX_ACK) from the queue of `token`;
 * unknown ids are ignored. cb (may be NULL) gets the number removed. Returns as
 * sp_store_enqueue.
 */
#define SP_STORE_MAX_ACK 1000
int sp_store_ack(sp_store_t *s, const uint8_t token[32], const uint8_t (*ids)[16], size_t n,
                 sp_store_ack_cb cb, void *arg);

/* The number of messages and record bytes queued for `token`. Returns as sp_store_enqueue. */
int sp_store_depth(sp_store_t *s, const uint8_t token[32], sp_store_depth_cb cb, void *arg);

/*
 * Any other command, for the modules that keep their own keys in the same Redis (the cluster
 * layer: sp_cluster.h). `key` is the key the command touches (its slot picks the master on
 * Redis Cluster; every key of one command must share that slot). The arguments are copied.
 * cb gets SP_STORE_OK and the reply, SP_STORE_ERROR and Redis's error reply, or
 * SP_STORE_UNAVAILABLE (down, timed out, a transient error such as TRYAGAIN) and NULL; the
 * reply is valid during the callback only. Commands share the pipeline with everything else,
 * in call order; a blocking command (XREAD BLOCK) needs a store of its own, and its block
 * time must stay under timeout_ms. Returns as sp_store_enqueue.
 */
#define SP_STORE_MAX_ARGS 64
struct redisReply;
typedef void (*sp_store_command_cb)(int status, const struct redisReply *reply, void *arg);
int sp_store_command(sp_store_t *s, const char *key, size_t key_len, int argc,
                     const char *const *argv, const size_t *argvlen, sp_store_command_cb cb,
                     void *arg);

/* ---- records ------------------------------------------------------------------------------
 * version u8 (1) | expires_ms u64 big-endian | priority u8 | collapse_len u8 | collapse | blob
 */
#define SP_STORE_RECORD_VERSION 1
#define SP_STORE_RECORD_HEADER  11
#define SP_STORE_MAX_COLLAPSE   64

typedef struct sp_store_record {
	uint64_t expires_ms;
	uint8_t priority;
	const uint8_t *collapse; /* points into the parsed buffer */
	size_t collapse_len;
	const uint8_t *blob; /* points into the parsed buffer */
	size_t blob_len;
} sp_store_record_t;

/* Bytes a record takes, or 0 if collapse_len > SP_STORE_MAX_COLLAPSE or the size overflows. */
size_t sp_store_record_size(size_t collapse_len, size_t blob_len);

/* Writes a record of sp_store_record_size(collapse_len, blob_len) bytes into out. Returns 0,
 * or -EINVAL (collapse too long, out too small). */
int sp_store_record_build(uint8_t *out, size_t outlen, uint64_t expires_ms, uint8_t priority,
                          const uint8_t *collapse, size_t collapse_len, const uint8_t *blob,
                          size_t blob_len);

/* Parses a record; out points into rec. Returns 0, or -EBADMSG (wrong version, too short,
 * collapse_len over SP_STORE_MAX_COLLAPSE or past the end). Never reads outside rec[0..len). */
int sp_store_record_parse(const uint8_t *rec, size_t len, sp_store_record_t *out);

#endif
