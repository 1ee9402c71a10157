/*
 * sp_rcluster.h: a Redis Cluster client on hiredis's async API and one libevent base.
 *
 * Neither Debian release packages a cluster client for hiredis (hiredis-cluster is not in
 * Debian 12 or 13), so the routing layer is ours. It is small because sealpush asks little of
 * it: every command names one key, and every key of one device carries the device's hash tag,
 * so no command ever spans slots and nothing here splits or merges replies.
 *
 * What it handles
 * - Slots. A key's slot is CRC16-XMODEM of its hash tag (the part between the first "{" and
 *   the next "}", when that is not empty) or of the whole key, mod 16384 (the Redis Cluster
 *   specification). sp_rc_keyslot() is pure and tested against the specification's examples.
 * - The slot map. Learnt with CLUSTER SLOTS (Redis 3 to 8, Valkey 7 and 8; CLUSTER SHARDS
 *   would add nothing sealpush uses) from any reachable node, the seeds as the fallback;
 *   refreshed every refresh_ms, after every MOVED, and when a master's connection is lost.
 *   Only one refresh runs at a time; requests keep flowing on the old map meanwhile. While
 *   the map is known but not up (a failover) it is refreshed every 200 ms; while refreshes
 *   fail (no node answers) the gap between them doubles from 100 ms to 2 s.
 * - The log. A master connection lost is logged once; failed connects to one node and
 *   failed refreshes at the 1st, 2nd, 4th, 8th... in a row (with the count), so a node or a
 *   cluster that stays away does not flood the log; a changed map (masters, slots) once.
 * - Connections. One async connection per master, attached to the caller's event base, made
 *   when the map first names the master and dropped when it no longer does. Replicas are
 *   not connected: every sealpush command writes, and reading from replicas would break
 *   read-your-writes for a device's queue.
 * - Redirections. -MOVED slot host:port: the slot is pointed at that master at once (without
 *   waiting for the refresh it also schedules), and the request is sent there. -ASK slot
 *   host:port (a slot being migrated): ASKING then the request, on that master, once; the
 *   map is not changed. -TRYAGAIN (a multi-key command during a migration) and -CLUSTERDOWN
 *   (no quorum, a failover in progress): sent again after a backoff that doubles from
 *   retry_min_ms to retry_max_ms. A request that met max_redirects redirections or retries
 *   fails with its last error reply, so nothing loops.
 * - Lost connections. Requests on a connection that drops come back (hiredis answers them
 *   with no reply); each is sent again once the map has been refreshed, within the same
 *   budget, so a master's failover is ridden out: the old master's connection fails, the
 *   refresh finds the promoted replica, the requests go there. Nothing is lost silently: a
 *   request either gets a reply or its callback sees NULL (with sp_rcluster_error() saying
 *   why) after its budget or at sp_rcluster_free().
 * - Scripts. EVALSHA on a node that lacks the script answers -NOSCRIPT as on one Redis, and
 *   that reply is the caller's: it loads the script (SCRIPT LOAD for the same slot goes to the
 *   same master) and sends the request again.
 *
 * What it does not do
 * - Multi-slot commands, MULTI/EXEC across connections, pub/sub, reading from replicas, and
 *   TLS or AUTH to Redis (sealpush's single-Redis store has neither either).
 *
 * Threads: a cluster client belongs to the thread that runs its event base (one per worker,
 * as the single-Redis store). No call blocks.
 */
#ifndef SP_RCLUSTER_H
#define SP_RCLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct redisAsyncContext;
struct redisReply;

#define SP_RC_SLOTS     16384
#define SP_RC_MAX_NODES 256 /* masters in one map */
#define SP_RC_HOST_MAX  63

/* The slot of a key (its hash tag's, if it has one). */
uint16_t sp_rc_keyslot(const void *key, size_t len);

/* What an error reply asks for. */
enum sp_rc_redirect_kind {
	SP_RC_NONE = 0,    /* not a cluster error: the caller's answer */
	SP_RC_MOVED,       /* the slot lives on host:port now */
	SP_RC_ASK,         /* ask host:port once (a migration in progress) */
	SP_RC_TRYAGAIN,    /* retry later (a migration) */
	SP_RC_CLUSTERDOWN, /* retry later (no quorum, a failover) */
};

typedef struct sp_rc_redirect {
	enum sp_rc_redirect_kind kind;
	uint16_t slot; /* MOVED, ASK */
	uint16_t port;
	char host[SP_RC_HOST_MAX + 1];
} sp_rc_redirect_t;

/* Parses an error reply's text (e.g. "MOVED 3999 127.0.0.1:6381"). Returns the kind (and
 * fills *out); SP_RC_NONE for any other error, or a MOVED/ASK that does not parse. */
enum sp_rc_redirect_kind sp_rc_parse_error(const char *s, size_t len, sp_rc_redirect_t *out);

typedef struct sp_rc_node {
	char host[SP_RC_HOST_MAX + 1];
	uint16_t port;
} sp_rc_node_t;

/* A slot map: which master serves each slot. */
typedef struct sp_rc_map {
	uint8_t slot_node[SP_RC_SLOTS]; /* index into node; SP_RC_NO_NODE if no master */
	sp_rc_node_t node[SP_RC_MAX_NODES];
	unsigned n_nodes;
	unsigned n_slots; /* slots with a master */
} sp_rc_map_t;
#define SP_RC_NO_NODE 0xff

/* Fills *map from a CLUSTER SLOTS reply; an empty host ("" or "?", which some versions send
 * for the node that answers) is replaced by default_host. Returns 0, or -EPROTO for a reply
 * of the wrong shape, -E2BIG for more masters than SP_RC_MAX_NODES. */
int sp_rc_map_from_slots(sp_rc_map_t *map, const struct redisReply *r, const char *default_host);

/* Index of host:port in map (added if new). Returns the index, or -1 if the map is full. */
int sp_rc_map_node(sp_rc_map_t *map, const char *host, uint16_t port);

/* ---- the client ---------------------------------------------------------------------------- */

typedef struct sp_rcluster sp_rcluster_t;

typedef struct sp_rcluster_opts {
	unsigned refresh_ms;    /* periodic map refresh; default 10000 */
	unsigned retry_min_ms;  /* first TRYAGAIN/CLUSTERDOWN/lost-connection backoff; default 20 */
	unsigned retry_max_ms;  /* backoff ceiling; default 500 */
	unsigned max_redirects; /* redirections + retries one request may take; default 16 */
	unsigned connect_timeout_ms; /* per master connection; default 2000 */
} sp_rcluster_opts_t;

typedef struct sp_rcluster_counters {
	uint64_t moved, ask, tryagain, clusterdown, resent_lost, refreshes, refresh_failures;
	uint64_t failed; /* requests answered with NULL after their budget */
	uint64_t connects, disconnects;
} sp_rcluster_counters_t;

/* hiredis's reply callback: ac is the connection that answered (NULL if none did); reply is
 * a redisReply valid during the call only, or NULL if the request failed (see
 * sp_rcluster_error). */
typedef void sp_rc_callback(struct redisAsyncContext *ac, void *reply, void *priv);

/* Makes a client for the seeds "host:port,host:port,..." on base and starts learning the
 * map. Returns NULL (err says why) on a bad seed list or out of memory. */
sp_rcluster_t *sp_rcluster_new(struct event_base *base, const char *seeds,
                               const sp_rcluster_opts_t *opts, char *err, size_t errlen);

/* Answers every request still pending with NULL and frees c. Not from inside a callback. */
void sp_rcluster_free(sp_rcluster_t *c);

/* Sends the command argv[0, argc) for slot (sp_rc_keyslot of its key) to the master that
 * serves it, following redirections; cb(ac, reply, priv) is called exactly once. Returns 0,
 * or -ENOMEM (cb is not called). The arguments are copied. */
int sp_rcluster_command(sp_rcluster_t *c, uint16_t slot, sp_rc_callback *cb, void *priv, int argc,
                        const char **argv, const size_t *argvlen);

/* Whether every slot has a master and each master's connection is up. */
bool sp_rcluster_up(const sp_rcluster_t *c);

/* Whether a request for slot may be sent now: the map names its master, and that master's
 * connection is up or has not failed (it is made on first use). False while a dead master's
 * slots wait for their failover: callers answer those requests at once, and every other
 * slot's keep going. */
bool sp_rcluster_slot_up(const sp_rcluster_t *c, uint16_t slot);

/* A request for slot outlived its caller's deadline: the connection to its master (if
 * connected) is closed, so that what is pending there is sent again once the map has been
 * refreshed (asked for now), and a master that stopped answering without closing its
 * connection is left. Not from inside a callback of c. */
void sp_rcluster_reset_slot(sp_rcluster_t *c, uint16_t slot);

/* Why the last request that failed did (a short text), for logs. */
const char *sp_rcluster_error(const sp_rcluster_t *c);

void sp_rcluster_counters(const sp_rcluster_t *c, sp_rcluster_counters_t *out);

/* The current map (read only; valid until control returns to the event loop). */
const sp_rc_map_t *sp_rcluster_map(const sp_rcluster_t *c);

/* Asks for a map refresh now (coalesced with one in flight). */
void sp_rcluster_refresh(sp_rcluster_t *c);

#endif
