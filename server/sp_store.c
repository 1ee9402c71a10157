/*
 * sp_store.c: the offline store, one per worker thread, on the worker's event base.
 *
 * Key layout
 * ----------
 * For device token T (64 lowercase hex digits) five keys, all with the hash tag {T}, so every
 * script touches one slot and runs unchanged on Redis Cluster:
 *
 *   sp:{T}:q  ZSET  member msg_id (16 raw bytes), score seq            FIFO order
 *   sp:{T}:e  ZSET  member msg_id, score expiry (unix ms)              purge order
 *   sp:{T}:m  HASH  msg_id -> record                                   the messages
 *   sp:{T}:c  HASH  collapse_id -> msg_id                              collapse index
 *   sp:{T}:s  HASH  seq (counter), bytes (sum of record lengths),     state
 *                   kexp (the keys' expiry, unix ms)
 *
 * A record is version 1 | expires_ms u64 BE | priority | collapse_len | collapse | blob
 * (sp_store.h). The scripts read only its length and its collapse id. Nothing about the sender
 * is stored. Every key expires at most an hour after the last message it ever held: a store
 * sets PEXPIREAT on every key, with NX (a key without a TTL gets one) and then GT (a later
 * expiry extends it), to the message's expiry rounded up to the hour, but only when that
 * moves past the one recorded in s (field kexp) or when the store (re)creates a key (the
 * queue was empty, or the collapse hash did not exist). So most stores set no expiry at all
 * (they used to cost 10 of the script's ~17 calls), and a forgotten device's queue still
 * disappears by itself. Acks and purges never shorten a TTL; the keys then linger (small).
 *
 * Sequence numbers. A stored message's seq is Redis's clock in microseconds, or the last seq
 * plus one if that is not below the clock (several in one microsecond, one script). (Design
 * fixes: a counter starting at 1 restarts at 1 once the keys expired, and a fetch cursor from
 * before that would skip the new messages; a counter that only starts from the clock goes
 * back when a replica that had not yet got the last writes is promoted, or Redis restarts from
 * an AOF a second old, and a connected device whose cursor is past the new counter then skips
 * every message stored until the counter passes its cursor, the likely cause of 213 lost in
 * one of four runs of a master killed under load (test_client.py). Taking the clock every time
 * keeps seq increasing across both, as long as the new master's clock is not behind the old one's
 * by more than the failover took.) A fetch also reads from the start when the cursor is above the
 * counter (a clock step back). seq < 2^53 until the year 2255, so the double scores are exact.
 *
 * Scripts
 * -------
 * Four Lua scripts, loaded with SCRIPT LOAD on every (re)connect and called with EVALSHA (on
 * NOSCRIPT, after a SCRIPT FLUSH or a failover, a request falls back to EVAL once). Each takes
 * the five keys of one token. They need Redis 7.0 (ZMSCORE, PEXPIREAT NX/GT).
 *   ENQUEUE(max_count, max_bytes, now_ms, then id, record, expires_ms, collapse per message)
 *     -> {purged, status1, seq1, ...}: purges up to 100 expired messages, then decides each
 *     message in order exactly as if it came alone: DUPLICATE with the stored seq if its id is
 *     queued; EXPIRED if expires_ms <= now_ms; FULL_COUNT or FULL_BYTES if it does not fit,
 *     where a message with the same collapse id counts as already gone; else it replaces that
 *     message and is STORED with its seq. Only the reads are per message; the writes are one
 *     command per key for the whole batch (ZADD q, ZADD e, HSET m, HSET c, HSET s), which is
 *     where the batch saves: most of a script's cost is per command, not per element.
 *     (Design fix: the older collapsed message is removed only once the new one is known to
 *     fit. Removing it first, as first designed, loses both when the new one is refused.)
 *   PURGE(now_ms) -> purged: removes up to 100 expired messages (earliest expiry first).
 *   ACK(id...) -> removed: drops the queued ids, their collapse entries where they still name
 *     them, and their bytes, with one command per key.
 *   DEPTH() -> {count, bytes}.
 *
 * Fetches are not a script. A script that returns the records costs Redis about 1.1 us more
 * per message than plain commands (each record goes into Lua and out again), and a drain is
 * mostly reading records. A fetch sends PURGE and `ZRANGEBYSCORE q (after +inf WITHSCORES
 * LIMIT 0 count` together (the range sees the purged queue), then `HMGET m` of the ids it got.
 * A record that went away in between (acked, replaced, purged), or that says it expired, is
 * handed over as an item without a record, so the page stays full and the caller reads on
 * (n < count still means the end); the expired ones are removed at once with ACK. An empty
 * range after a cursor above 0 is followed by `HGET s seq`: if the counter is below the cursor,
 * the range is read again from the start. Nothing in a fetch writes except PURGE and that ACK,
 * so it needs no atomicity beyond each command's.
 *
 * Batches. sp_store_enqueue() does not send at once: messages wait per token and go at the end
 * of the loop turn, all of one token in one ENQUEUE (up to max_batch; a full batch goes at
 * once). While a token's ENQUEUE is out, its new messages wait for the answer and then go
 * together (group commit). So a quiet relay sends each message at the end of the turn that
 * received it, and a busy one sends fewer, larger requests exactly when Redis is the
 * bottleneck. Batches never mix tokens, so every script still touches one hash slot.
 * The purged count travels with the answer for the expired_purged counter.
 *
 * Lifecycle
 * ---------
 * sp_store_new() parses the url and starts a connection: one hiredis async context attached
 * to the base, whose first commands are the four SCRIPT LOADs. When all four answered the
 * store is up. Requests are sent only while up, pipelined on that one connection; otherwise
 * (and when max_inflight requests are unanswered) they are answered UNAVAILABLE from a
 * deferred event, never from inside the request call. A tick every timeout_ms/4 (at most
 * 100 ms) reconnects when the backoff (100 ms doubling to 5 s, each wait drawn from its upper
 * half) has passed, drops a connect that took longer than timeout_ms, and drops the
 * connection when any request is older than timeout_ms (hiredis 0.14 has no command timeout);
 * an idle connection sends PING once a second, so a Redis that hangs is noticed (and the store
 * counted down) within timeout_ms even when no message comes: sp_store_up() is the one answer
 * to "is Redis there" that /readyz and the metrics give.
 * redisAsyncFree() answers every pending request with a NULL reply, which becomes
 * UNAVAILABLE. A lost connection (EOF, error) does the same through hiredis. Requests are
 * never resent on a new connection: the caller retries (an enqueue with the same id is
 * idempotent, an ack of an absent id is harmless). A request that timed out may still have
 * run: the enqueue's retry then gets DUPLICATE with the same seq.
 * sp_store_free() answers everything pending with UNAVAILABLE before it returns (none is
 * dropped silently, so callers can release what they hung on `arg`).
 *
 * Caveats: after a NOSCRIPT, the EVAL resend goes behind requests already sent, so a later
 * enqueue for the same token may overtake it (only right after a SCRIPT FLUSH or a failover).
 * A redis:// url naming one node of a Redis Cluster does not follow MOVED/ASK (they answer
 * ERROR); redis-cluster:// does (sp_rcluster.h).
 *
 * With lim.wait_replicas > 0 a STORED or DUPLICATE enqueue is followed by WAIT on the same
 * connection and answered so only when enough replicas confirmed, else UNAVAILABLE (the message
 * may be stored anyway; a retry with the same id is not stored twice). (Design fix: the first
 * design waited after STORED only, so the retry of a message whose WAIT fell short was answered
 * DUPLICATE, i.e. QUEUED, without any replica having confirmed it.) WAIT blocks the connection on
 * the Redis side, so while replicas lag every request of this worker waits up to wait_timeout_ms.
 *
 * Durability
 * ----------
 * The store is as durable as Redis is configured to be. The sender hears QUEUED once Redis
 * executed the script, i.e. it is in Redis's memory (and, with WAIT, in the replicas'
 * memory), not necessarily on disk.
 *   - appendonly no: a Redis restart loses every queued message (and RDB snapshots lose
 *     everything since the last one).
 *   - appendonly yes, appendfsync everysec (the usual choice): the AOF is fsynced once a
 *     second in the background, so a crash of the Redis process loses nothing that reached
 *     the kernel, but a power loss or kernel crash loses up to about one second of writes
 *     (two, if an fsync was slow): messages already answered QUEUED.
 *   - appendonly yes, appendfsync always: Redis fsyncs the AOF before it answers, so a QUEUED
 *     message survives a power loss; each write costs a disk flush, which caps throughput.
 *   - With replicas and WAIT, a message answered QUEUED is in the memory of that many
 *     replicas, so it survives the loss of the primary if a confirmed replica is promoted.
 * Whatever is lost, the sender was told QUEUED: that is the gap the configuration decides.
 *
 * Threads: everything here runs on the store's base, except sp_store_counters().
 */
#include <assert.h>
#include <openssl/sha.h>
#include <errno.h>
#include <limits.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sp_config.h"
#include "sp_log.h"
#include "sp_rcluster.h"
#include "sp_store.h"
#include "sp_time.h"
#include "sp_tokmap.h"

#define BACKOFF_MIN_MS  100
#define BACKOFF_MAX_MS  5000
#define PING_IDLE_MS    1000 /* an idle connection's liveness PING */
#define TICK_MAX_MS     100
#define NKEYS           5
#define BATCH_MAX_BYTES (256u << 10) /* records per enqueue request, soft */

/* ---- scripts ----------------------------------------------------------------------------- */

/* The enqueue script is longer than the 4095 characters C17 promises a string literal may be;
 * gcc and clang take any length. */
#pragma GCC diagnostic ignored "-Woverlength-strings"

/* Shared by all scripts: the keys, and dropping messages. Records are read only for their
 * length, expiry and collapse id, and a malformed one must not make a script fail. */
#define LUA_PRELUDE                                                                                \
	"local q, e, m, c, s = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]\n"                      \
	"local function cid_of(rec)\n"                                                             \
	"  local n = string.byte(rec, 11)\n"                                                       \
	"  if n == nil or n == 0 or #rec < 11 + n then return nil end\n"                           \
	"  return string.sub(rec, 12, 11 + n)\n"                                                   \
	"end\n"                                                                                    \
	"local function drop(ids, adjust)\n"                                                       \
	"  local uniq, seen = {}, {}\n"                                                            \
	"  for _, id in ipairs(ids) do\n"                                                          \
	"    if not seen[id] then seen[id] = true; uniq[#uniq + 1] = id end\n"                     \
	"  end\n"                                                                                  \
	"  local recs = redis.call('HMGET', m, unpack(uniq))\n"                                    \
	"  local freed = 0\n"                                                                      \
	"  for i, id in ipairs(uniq) do\n"                                                         \
	"    local rec = recs[i]\n"                                                                \
	"    if rec then\n"                                                                        \
	"      freed = freed + #rec\n"                                                             \
	"      local cid = cid_of(rec)\n"                                                          \
	"      if cid and redis.call('HGET', c, cid) == id then redis.call('HDEL', c, cid) end\n"  \
	"    end\n"                                                                                \
	"  end\n"                                                                                  \
	"  redis.call('HDEL', m, unpack(uniq))\n"                                                  \
	"  redis.call('ZREM', e, unpack(uniq))\n"                                                  \
	"  local n = redis.call('ZREM', q, unpack(uniq))\n"                                        \
	"  if adjust and freed > 0 then redis.call('HINCRBY', s, 'bytes', -freed) end\n"           \
	"  return n\n"                                                                             \
	"end\n"                                                                                    \
	"local function purge(now)\n"                                                              \
	"  local ids = redis.call('ZRANGEBYSCORE', e, '-inf', now, 'LIMIT', 0, 100)\n"             \
	"  if #ids > 0 then drop(ids, true) end\n"                                                 \
	"  return #ids\n"                                                                          \
	"end\n"

/* ARGV: max_count, max_bytes, now_ms, then per message: id, record, expires_ms, collapse.
 * Answers {purged, status1, seq1, status2, seq2, ...}. Statuses: 0 stored, 1 duplicate,
 * 2 full (count), 3 full (bytes), 4 expired. The messages are decided one after the other, as
 * if each came in a script of its own, and written with one command per key at the end. */
static const char lua_enqueue[] = LUA_PRELUDE
        "local maxc, maxb, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])\n"
        "local purged = purge(ARGV[3])\n"
        "local nmsg = (#ARGV - 3) / 4\n"
        "local ids = {}\n"
        "for i = 1, nmsg do ids[i] = ARGV[4 * i] end\n"
        "local old = redis.call('ZMSCORE', q, unpack(ids))\n"
        "local st = redis.call('HMGET', s, 'seq', 'bytes', 'kexp')\n"
        "local count = redis.call('ZCARD', q)\n"
        "local fresh = count == 0 or st[1] == false\n"
        "local seq, bytes = tonumber(st[1]), tonumber(st[2] or '0')\n"
        "local cexists, kmax, clock = nil, 0, nil\n"
        "local out, new, added, bycid, gone, drops = {purged}, {}, {}, {}, {}, {}\n"
        "for i = 1, nmsg do\n"
        "  local b = 4 * i\n"
        "  local id, rec, exp, cid = ARGV[b], ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b + 3]\n"
        "  local mine = added[id]\n"
        "  if mine and mine.live then\n"
        "    out[#out + 1] = 1; out[#out + 1] = mine.seq\n"
        "  elseif old[i] and not gone[id] and not mine then\n"
        "    out[#out + 1] = 1; out[#out + 1] = tonumber(old[i])\n"
        "  elseif exp <= now then\n"
        "    out[#out + 1] = 4; out[#out + 1] = 0\n"
        "  else\n"
        "    local prev, plen = nil, 0\n"
        "    if cid ~= '' then\n"
        "      prev = bycid[cid]\n"
        "      if prev then\n"
        "        plen = #prev.rec\n"
        "      else\n"
        "        if cexists == nil then cexists = redis.call('EXISTS', c) == 1 end\n"
        "        local pid = cexists and redis.call('HGET', c, cid)\n"
        "        if pid and pid ~= id and not gone[pid] then\n"
        "          plen = redis.call('HSTRLEN', m, pid)\n"
        "          if plen > 0 then prev = pid end\n"
        "        end\n"
        "      end\n"
        "    end\n"
        "    local cnt, byt = count, bytes\n"
        "    if prev then cnt = cnt - 1; byt = byt - plen end\n"
        "    if cnt >= maxc then\n"
        "      out[#out + 1] = 2; out[#out + 1] = 0\n"
        "    elseif byt + #rec > maxb then\n"
        "      out[#out + 1] = 3; out[#out + 1] = 0\n"
        "    else\n"
        "      if prev then\n"
        "        if type(prev) == 'table' then prev.live = false\n"
        "        else drops[#drops + 1] = prev; gone[prev] = true end\n"
        "        count = cnt; bytes = byt\n"
        "      end\n"
        "      if not clock then\n"
        "        local t = redis.call('TIME')\n"
        "        clock = tonumber(t[1] .. string.format('%06d', tonumber(t[2])))\n"
        "      end\n"
        "      if seq and seq >= clock then seq = seq + 1 else seq = clock end\n"
        "      local ent = {id = id, rec = rec, exp = ARGV[b + 2], cid = cid, seq = seq,\n"
        "                   live = true}\n"
        "      new[#new + 1] = ent; added[id] = ent\n"
        "      if cid ~= '' then bycid[cid] = ent end\n"
        "      count = count + 1; bytes = bytes + #rec\n"
        "      if exp > kmax then kmax = exp end\n"
        "      out[#out + 1] = 0; out[#out + 1] = seq\n"
        "    end\n"
        "  end\n"
        "end\n"
        "if #drops > 0 then\n"
        "  drop(drops, false)\n"
        "  if redis.call('EXISTS', q) == 0 then fresh = true end\n"
        "end\n"
        "local qa, ea, ma, ca = {}, {}, {}, {}\n"
        "for _, ent in ipairs(new) do\n"
        "  if ent.live then\n"
        "    qa[#qa + 1] = string.format('%d', ent.seq); qa[#qa + 1] = ent.id\n"
        "    ea[#ea + 1] = ent.exp; ea[#ea + 1] = ent.id\n"
        "    ma[#ma + 1] = ent.id; ma[#ma + 1] = ent.rec\n"
        "    if ent.cid ~= '' then ca[#ca + 1] = ent.cid; ca[#ca + 1] = ent.id end\n"
        "  end\n"
        "end\n"
        "if #new == 0 then return out end\n"
        "redis.call('ZADD', q, unpack(qa))\n"
        "redis.call('ZADD', e, unpack(ea))\n"
        "redis.call('HSET', m, unpack(ma))\n"
        "if #ca > 0 then\n"
        "  if (#drops > 0 or not cexists) and redis.call('EXISTS', c) == 0 then fresh = true end\n"
        "  redis.call('HSET', c, unpack(ca))\n"
        "end\n"
        "local kexp = math.ceil(kmax / 3600000) * 3600000\n"
        "if fresh or kexp > tonumber(st[3] or '0') then\n"
        "  redis.call('HSET', s, 'seq', string.format('%d', seq), 'bytes', bytes, 'kexp', kexp)\n"
        "  for _, k in ipairs(KEYS) do\n"
        "    redis.call('PEXPIREAT', k, kexp, 'NX')\n"
        "    redis.call('PEXPIREAT', k, kexp, 'GT')\n"
        "  end\n"
        "else\n"
        "  redis.call('HSET', s, 'seq', string.format('%d', seq), 'bytes', bytes)\n"
        "end\n"
        "return out\n";

/* ARGV: now_ms. Removes up to 100 expired messages; answers how many. (A fetch sends it just
 * before its plain commands: see sp_store_fetch.) */
static const char lua_purge[] = LUA_PRELUDE "return purge(ARGV[1])\n";

/* ARGV: the ids. */
static const char lua_ack[] = LUA_PRELUDE "return drop(ARGV, true)\n";

static const char lua_depth[] =
        LUA_PRELUDE "return {redis.call('ZCARD', q), tonumber(redis.call('HGET', s, 'bytes') or "
                    "'0')}\n";

/* Requests: the scripts (EVALSHA), then the plain commands a fetch is made of. */
enum {
	KIND_ENQUEUE,
	KIND_PURGE,
	KIND_ACK,
	KIND_DEPTH,
	KIND_COUNT,              /* the number of scripts */
	KIND_RANGE = KIND_COUNT, /* fetch: ZRANGEBYSCORE q */
	KIND_RECORDS,            /* fetch: HMGET m */
	KIND_SEQ,                /* fetch: HGET s seq, after an empty range */
	KIND_COMMAND,            /* sp_store_command: any command, the reply to its caller */
	KIND_ALL
};

static const char *const script_src[KIND_COUNT] = {lua_enqueue, lua_purge, lua_ack, lua_depth};
static const char *const kind_name[KIND_ALL] = {"enqueue", "purge",   "ack", "depth",
                                                "range",   "records", "seq", "command"};

/* ---- types ------------------------------------------------------------------------------- */

struct req;
struct req_list {
	struct req *head, *tail;
	size_t n;
};

/* One message waiting to be enqueued, with copies of its id, record and collapse id. */
struct sub {
	struct sub *next;
	sp_store_enqueue_cb cb;
	void *arg;
	int status; /* the script's answer, once known */
	uint64_t seq;
	uint8_t id[16];
	char expires[24]; /* expires_ms as decimal text, for the script */
	size_t expires_len;
	size_t len, collapse_len;
	uint8_t data[]; /* record, then collapse id */
};

/* The enqueue state of one token on this store: messages not sent yet (`head`), and how many
 * enqueue requests for it are out. While one is out, new messages wait and go together in the
 * next request when it is answered (group commit): a batch per token, so each script still
 * touches one hash slot. */
struct tok {
	uint8_t token[32];
	struct tok *prev, *next; /* all tokens with state, for sp_store_free() */
	struct tok *flush_next;  /* on the flush list */
	bool on_flush;
	unsigned inflight;       /* enqueue requests sent for this token and not answered */
	struct sub *head, *tail; /* waiting */
	size_t n, bytes;         /* waiting: messages, record bytes */
};

/* A fetch: a range of ids (plain ZRANGEBYSCORE), then their records (plain HMGET), with the
 * purge script sent just before the range. Plain commands because a script that returns the
 * records costs Redis about 1 us more per message (the records go through Lua twice). */
struct fetch_job {
	uint8_t token[32];
	uint64_t after;
	unsigned count;
	bool from_start;    /* the range was asked again from the start (the seq went back) */
	size_t n;           /* ids of the range */
	uint64_t *seqs;     /* [n] */
	uint8_t (*ids)[16]; /* [n] */
	sp_store_fetch_cb cb;
	void *arg;
};

/* One request, with its whole command vector in the same allocation:
 * argv = {EVALSHA|EVAL, sha|source, "5", key x 5, script arguments...}. An enqueue carries
 * its messages (subs), whose buffers the vector points into. */
struct req {
	struct req *prev, *next;
	sp_store_t *s;
	int kind;
	int status;        /* the answer, once known (deferred failures) */
	bool waiting;      /* the WAIT after a stored enqueue is out */
	bool eval;         /* fell back to EVAL after NOSCRIPT */
	bool abandoned;    /* cluster mode: answered at its deadline, freed when its reply comes */
	uint64_t deadline; /* monotonic ms */
	union {
		sp_store_fetch_cb fetch;
		sp_store_ack_cb ack;
		sp_store_depth_cb depth;
		sp_store_command_cb command;
	} cb;
	void *arg;
	struct tok *tok;  /* enqueue: its token's state */
	struct sub *subs; /* enqueue: its messages, in order */
	size_t nsubs;
	struct fetch_job *job; /* fetch steps: the fetch they serve */
	bool expired_purge;    /* an ack that removes expired messages a fetch met */
	uint16_t slot;         /* the hash slot of the request's keys (Redis Cluster) */
	int argc;
	const char **argv;
	size_t *argvlen;
};

struct loader {
	sp_store_t *s;
	int kind;
};

struct sp_store {
	struct event_base *base;
	sp_store_limits_t lim;
	char host[256];
	uint16_t port;
	char path[256];

	redisAsyncContext *ac; /* NULL while down */
	sp_rcluster_t *rc;     /* Redis Cluster mode: the cluster client (ac stays NULL) */
	char *seeds;           /* Redis Cluster mode: "host:port,..." */
	atomic_bool up;        /* ac connected and every script loaded (read by any thread) */
	bool closing;          /* sp_store_free() runs */
	int loaded;            /* scripts loaded on ac */
	char sha[KIND_COUNT][41];
	struct loader loaders[KIND_COUNT];
	uint64_t connect_started;
	uint64_t next_connect;
	uint64_t backoff_ms;
	uint64_t connects;
	uint64_t downs; /* times the store went from up to down (sp_store_downs) */
	uint64_t rng;
	int in_cb;          /* nesting depth of user callbacks, for sp_store_free's check */
	uint64_t ping_sent; /* an idle-check PING is out since then (mono ms), or 0 */
	uint64_t ping_last; /* when the last one was sent */

	struct req_list inflight; /* sent, in send order */
	struct req_list deferred; /* answered, waiting for the deferred event */
	struct event *ev_tick;
	struct event *ev_defer;
	struct event *ev_flush;

	sp_tokmap_t toks;       /* token -> struct tok, while it has messages waiting or out */
	struct tok *all_toks;   /* the same, as a list */
	struct tok *flush_list; /* tokens with messages waiting and none out */

	struct {
		atomic_uint_least64_t enqueued, duplicates, refused_full, expired, expired_purged,
		        fetched, acked, unavailable, errors, timeouts, reconnects, enqueue_calls,
		        cluster_moved, cluster_ask, cluster_retries, cluster_refreshes,
		        cluster_refresh_failures, cluster_conn_lost, cluster_resent;
	} cnt;
	sp_rcluster_counters_t rc_gone; /* the counters of the cluster clients already freed */
};

/* One writer (the store's thread): a relaxed load and store, readable from any thread. */
#define CNT_ADD(s, field, v)                                                                       \
	atomic_store_explicit(&(s)->cnt.field,                                                     \
	                      atomic_load_explicit(&(s)->cnt.field, memory_order_relaxed) +        \
	                              (uint64_t)(v),                                               \
	                      memory_order_relaxed)

/* ---- small helpers ----------------------------------------------------------------------- */

static uint64_t rng_next(sp_store_t *s)
{
	uint64_t x = s->rng;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	s->rng = x;
	return x;
}

static void list_append(struct req_list *l, struct req *q)
{
	q->next = NULL;
	q->prev = l->tail;
	if (l->tail)
		l->tail->next = q;
	else
		l->head = q;
	l->tail = q;
	l->n++;
}

static void list_remove(struct req_list *l, struct req *q)
{
	if (q->prev)
		q->prev->next = q->next;
	else
		l->head = q->next;
	if (q->next)
		q->next->prev = q->prev;
	else
		l->tail = q->prev;
	q->prev = q->next = NULL;
	l->n--;
}

const char *sp_store_script(const char *name)
{
	for (int k = 0; name && k < KIND_COUNT; k++)
		if (strcmp(name, kind_name[k]) == 0)
			return script_src[k];
	return NULL;
}

const char *sp_store_status_name(int status)
{
	static const char *const names[] = {"ok",         "stored",  "duplicate",   "full_count",
	                                    "full_bytes", "expired", "unavailable", "error"};

	if (status < 0 || (size_t)status >= sizeof(names) / sizeof(names[0]))
		return "unknown";
	return names[status];
}

void sp_store_limits_default(sp_store_limits_t *lim)
{
	memset(lim, 0, sizeof(*lim));
	lim->max_count = 1000;
	lim->max_bytes = 4u << 20;
	lim->timeout_ms = 2000;
	lim->max_inflight = 10000;
	lim->wait_replicas = 0;
	lim->wait_timeout_ms = 1000;
	lim->max_batch = 64;
}

void sp_store_counters(const sp_store_t *s, sp_store_counters_t *out)
{
#define CNT_GET(f) out->f = atomic_load_explicit(&s->cnt.f, memory_order_relaxed)
	CNT_GET(enqueued);
	CNT_GET(duplicates);
	CNT_GET(refused_full);
	CNT_GET(expired);
	CNT_GET(expired_purged);
	CNT_GET(fetched);
	CNT_GET(acked);
	CNT_GET(unavailable);
	CNT_GET(errors);
	CNT_GET(timeouts);
	CNT_GET(reconnects);
	CNT_GET(enqueue_calls);
	CNT_GET(cluster_moved);
	CNT_GET(cluster_ask);
	CNT_GET(cluster_retries);
	CNT_GET(cluster_refreshes);
	CNT_GET(cluster_refresh_failures);
	CNT_GET(cluster_conn_lost);
	CNT_GET(cluster_resent);
#undef CNT_GET
}

int sp_store_up(const sp_store_t *s)
{
	return s && atomic_load_explicit(&s->up, memory_order_relaxed) ? 1 : 0;
}

uint64_t sp_store_downs(const sp_store_t *s)
{
	return s->downs;
}

/* ---- answering requests ------------------------------------------------------------------ */

static void tok_sent_done(sp_store_t *s, struct tok *t);

static void count_status(sp_store_t *s, int status)
{
	switch (status) {
	case SP_STORE_STORED:
		CNT_ADD(s, enqueued, 1);
		break;
	case SP_STORE_DUPLICATE:
		CNT_ADD(s, duplicates, 1);
		break;
	case SP_STORE_FULL_COUNT:
	case SP_STORE_FULL_BYTES:
		CNT_ADD(s, refused_full, 1);
		break;
	case SP_STORE_EXPIRED:
		CNT_ADD(s, expired, 1);
		break;
	case SP_STORE_UNAVAILABLE:
		CNT_ADD(s, unavailable, 1);
		break;
	case SP_STORE_ERROR:
		CNT_ADD(s, errors, 1);
		break;
	default:
		break;
	}
}

/* Answers each message of an enqueue with its own status (status < 0) or with `status`, frees
 * them, and lets the token send what waited meanwhile. q itself stays. */
static void enqueue_answer(sp_store_t *s, struct req *q, int status)
{
	struct tok *t = q->tok;
	struct sub *u = q->subs;

	q->subs = NULL;
	q->tok = NULL;
	s->in_cb++;
	while (u) {
		struct sub *next = u->next;
		int st = status < 0 ? u->status : status;

		count_status(s, st);
		u->cb(st, st == SP_STORE_STORED || st == SP_STORE_DUPLICATE ? u->seq : 0, u->arg);
		free(u);
		u = next;
	}
	s->in_cb--;
	if (t)
		tok_sent_done(s, t);
}

static void enqueue_finish(sp_store_t *s, struct req *q, int status)
{
	enqueue_answer(s, q, status);
	free(q);
}

static void job_free(struct fetch_job *job)
{
	if (job) {
		free(job->seqs);
		free(job->ids);
		free(job);
	}
}

/* Answers a fetch with a failure and frees it. */
static void job_fail(sp_store_t *s, struct fetch_job *job, int status)
{
	count_status(s, status);
	s->in_cb++;
	job->cb(status, NULL, 0, job->arg);
	s->in_cb--;
	job_free(job);
}

/* Runs the user callback of q with a failure (or, for enqueue, any status); q stays. */
static void req_answer(sp_store_t *s, struct req *q, int status)
{
	if (q->kind == KIND_ENQUEUE) {
		enqueue_answer(s, q, status);
		return;
	}
	if (q->job) {
		job_fail(s, q->job, status);
		q->job = NULL;
		return;
	}
	count_status(s, status);
	s->in_cb++;
	switch (q->kind) {
	case KIND_ACK:
		if (q->cb.ack)
			q->cb.ack(status, 0, q->arg);
		break;
	case KIND_DEPTH:
		q->cb.depth(status, 0, 0, q->arg);
		break;
	case KIND_COMMAND:
		q->cb.command(status, NULL, q->arg);
		break;
	default:
		break;
	}
	s->in_cb--;
}

/* ... and frees q. */
static void req_finish(sp_store_t *s, struct req *q, int status)
{
	req_answer(s, q, status);
	free(q);
}

/* Answers q with `status` from the event loop, never from inside the caller's request. */
static void req_defer(sp_store_t *s, struct req *q, int status)
{
	q->status = status;
	list_append(&s->deferred, q);
	event_active(s->ev_defer, 0, 0);
}

static void on_defer(evutil_socket_t fd, short what, void *arg)
{
	sp_store_t *s = arg;
	struct req_list batch = s->deferred;

	(void)fd;
	(void)what;
	/* Requests deferred by these callbacks wait for the next round of the loop. */
	memset(&s->deferred, 0, sizeof(s->deferred));
	while (batch.head) {
		struct req *q = batch.head;

		list_remove(&batch, q);
		req_finish(s, q, q->status);
	}
}

/* ---- the connection ---------------------------------------------------------------------- */

/* Whether a reply that came on ac belongs to the current link (not one already given up). In
 * cluster mode every connection of the current cluster client does. */
static bool current(const sp_store_t *s, const redisAsyncContext *ac)
{
	return s->rc ? ac != NULL : s->ac != NULL && s->ac == ac;
}

static void store_connect(sp_store_t *s);

/* Adds rc's counters (if any) to *sum. */
static void cluster_sum(sp_rcluster_counters_t *sum, const sp_rcluster_t *rc)
{
	sp_rcluster_counters_t n;

	if (!rc)
		return;
	sp_rcluster_counters(rc, &n);
	sum->moved += n.moved;
	sum->ask += n.ask;
	sum->tryagain += n.tryagain;
	sum->clusterdown += n.clusterdown;
	sum->refreshes += n.refreshes;
	sum->refresh_failures += n.refresh_failures;
	sum->disconnects += n.disconnects;
	sum->resent_lost += n.resent_lost;
}

/* The cluster client's counters into the store's (the store's thread; sp_store_counters() may
 * run on any other). The sums go on across clients: rc_gone holds those of the freed ones. */
static void cluster_counters(sp_store_t *s)
{
	sp_rcluster_counters_t n = s->rc_gone;

	cluster_sum(&n, s->rc);
#define CNT_SET(f, v) atomic_store_explicit(&s->cnt.f, (v), memory_order_relaxed)
	CNT_SET(cluster_moved, n.moved);
	CNT_SET(cluster_ask, n.ask);
	CNT_SET(cluster_retries, n.tryagain + n.clusterdown);
	CNT_SET(cluster_refreshes, n.refreshes);
	CNT_SET(cluster_refresh_failures, n.refresh_failures);
	CNT_SET(cluster_conn_lost, n.disconnects);
	CNT_SET(cluster_resent, n.resent_lost);
#undef CNT_SET
}

/* Frees the cluster client (every pending request: NULL reply -> UNAVAILABLE), keeping its
 * counters as they were before: the connections it closes itself are not lost ones. */
static void cluster_free(sp_store_t *s)
{
	sp_rcluster_t *rc = s->rc;

	if (!rc)
		return;
	cluster_counters(s);
	cluster_sum(&s->rc_gone, rc);
	s->rc = NULL;
	sp_rcluster_free(rc);
}

/* The connection is gone or going: forget it and schedule the next attempt. The caller frees
 * the context, or hiredis already does. */
static void link_lost(sp_store_t *s, const char *why)
{
	uint64_t half = s->backoff_ms / 2;

	if (s->up) {
		SP_LOG(SP_LOG_WARN, "store_down", "msg=\"%s\"", why);
		s->downs++;
	}
	s->ac = NULL;
	s->up = false;
	s->loaded = 0;
	s->ping_sent = 0;
	if (s->seeds) {
		/* A cluster client paces its own connections (sp_rcluster.c): making it again
		 * soon after a timed-out request is what lets the store follow a failover. */
		s->next_connect = sp_time_mono_ms() + BACKOFF_MIN_MS;
		return;
	}
	s->next_connect = sp_time_mono_ms() + half + rng_next(s) % (half + 1);
	s->backoff_ms = s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->backoff_ms * 2;
}

/* Drops the connection on purpose. Inside a hiredis callback, hiredis frees the context once
 * the callback returns; elsewhere at once. Either way every pending request gets a NULL reply
 * (UNAVAILABLE). */
static void link_drop(sp_store_t *s, const char *why)
{
	redisAsyncContext *ac = s->ac;

	if (s->rc) {
		/* Every pending request answered NULL (UNAVAILABLE) inside the free. */
		link_lost(s, why);
		cluster_free(s);
		return;
	}
	if (!ac)
		return;
	link_lost(s, why);
	redisAsyncFree(ac);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	sp_store_t *s = ac->data;

	/* On failure hiredis frees the context after this returns; never free it here. */
	if (s && s->ac == ac && status != REDIS_OK)
		link_lost(s, ac->errstr[0] ? ac->errstr : "connect failed");
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	sp_store_t *s = ac->data;

	(void)status;
	if (s && s->ac == ac)
		link_lost(s, ac->errstr[0] ? ac->errstr : "disconnected");
}

static void on_script_loaded(redisAsyncContext *ac, void *r, void *priv)
{
	struct loader *l = priv;
	sp_store_t *s = l->s;
	redisReply *reply = r;

	if (s->ac != ac)
		return; /* a connection we already gave up */
	if (!reply) {
		link_lost(s, "connection lost while loading scripts");
		return;
	}
	if (reply->type != REDIS_REPLY_STRING || reply->len != 40) {
		char q[SP_LOG_QUOTE_SIZE(200)];
		size_t n = reply->str ? reply->len : 0;

		sp_log_quote(q, sizeof(q), reply->str ? reply->str : "", n > 200 ? 200 : n);
		SP_LOG(SP_LOG_ERROR, "store_script", "script=%s reply=%s", kind_name[l->kind], q);
		CNT_ADD(s, errors, 1);
		link_drop(s, "SCRIPT LOAD failed");
		return;
	}
	memcpy(s->sha[l->kind], reply->str, 40);
	s->sha[l->kind][40] = '\0';
	if (++s->loaded == KIND_COUNT) {
		s->up = true;
		s->backoff_ms = BACKOFF_MIN_MS;
		SP_LOG(SP_LOG_INFO, "store_up", "connects=%llu", (unsigned long long)s->connects);
	}
}

/* Cluster mode: a cluster client instead of one connection. The scripts are not loaded up
 * front (there is one script cache per master): their SHA1s are computed here, and a master
 * that answers NOSCRIPT gets the EVAL once (on_reply), which also caches the script there. */
static void cluster_connect(sp_store_t *s)
{
	sp_rcluster_opts_t o = {.connect_timeout_ms = s->lim.timeout_ms};
	char err[256];

	s->rc = sp_rcluster_new(s->base, s->seeds, &o, err, sizeof(err));
	if (!s->rc) {
		link_lost(s, err);
		return;
	}
	for (int k = 0; k < KIND_COUNT; k++) {
		uint8_t md[SHA_DIGEST_LENGTH];

		SHA1((const uint8_t *)script_src[k], strlen(script_src[k]), md);
		for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
			snprintf(s->sha[k] + 2 * i, 3, "%02x", md[i]);
	}
	s->loaded = KIND_COUNT;
	s->up = false; /* until the tick sees every slot served */
	s->connect_started = sp_time_mono_ms();
}

static void store_connect(sp_store_t *s)
{
	redisAsyncContext *ac;

	if (s->connects++ > 0)
		CNT_ADD(s, reconnects, 1);
	if (s->seeds) {
		cluster_connect(s);
		return;
	}
	/* A host name is resolved here with a blocking getaddrinfo(): configure an address. */
	ac = s->path[0] ? redisAsyncConnectUnix(s->path) : redisAsyncConnect(s->host, s->port);
	if (!ac || ac->err) {
		if (ac)
			redisAsyncFree(ac);
		link_lost(s, "cannot connect");
		return;
	}
	ac->data = s;
	if (redisLibeventAttach(ac, s->base) != REDIS_OK) {
		redisAsyncFree(ac);
		link_lost(s, "cannot attach");
		return;
	}
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	s->ac = ac;
	s->up = false;
	s->loaded = 0;
	s->connect_started = sp_time_mono_ms();
	for (int k = 0; k < KIND_COUNT; k++) {
		if (redisAsyncCommand(ac, on_script_loaded, &s->loaders[k], "SCRIPT LOAD %s",
		                      script_src[k]) != REDIS_OK) {
			link_drop(s, "cannot queue SCRIPT LOAD");
			return;
		}
	}
}

/* The idle check's answer. Any reply, even an error, shows that Redis answers; NULL means the
 * connection went (link_lost has run or runs next). */
static void on_ping(redisAsyncContext *ac, void *r, void *priv)
{
	sp_store_t *s = priv;

	(void)r;
	if (s->ac == ac)
		s->ping_sent = 0;
}

/* Cluster mode: requests past their deadline are answered UNAVAILABLE now and stay with the
 * cluster client until it gives them back (abandoned); their master's connection is reset.
 * The other masters' requests go on: one master's failover costs only its own slots. */
static void cluster_late(sp_store_t *s, uint64_t now)
{
	struct req_list late = {0};

	for (struct req *q = s->inflight.head, *next; q; q = next) {
		next = q->next;
		if (now >= q->deadline) {
			list_remove(&s->inflight, q);
			list_append(&late, q);
		}
	}
	if (!late.head)
		return;
	CNT_ADD(s, timeouts, late.n);
	while (late.head) {
		struct req *q = late.head;
		uint16_t slot = q->slot;

		list_remove(&late, q);
		q->abandoned = true;
		req_answer(s, q, SP_STORE_UNAVAILABLE);
		if (s->rc)
			sp_rcluster_reset_slot(s->rc, slot);
	}
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	sp_store_t *s = arg;
	uint64_t now = sp_time_mono_ms();
	size_t late = 0;

	(void)fd;
	(void)what;
	if (!s->ac && !s->rc) {
		if (now >= s->next_connect)
			store_connect(s);
		return;
	}
	if (s->rc) {
		/* The cluster client reconnects and follows failovers by itself; a request that
		 * outlives timeout_ms still drops it, as the single connection would be. */
		bool up = sp_rcluster_up(s->rc);

		if (up && !s->up) {
			s->backoff_ms = BACKOFF_MIN_MS;
			SP_LOG(SP_LOG_INFO, "store_up", "connects=%llu cluster=1",
			       (unsigned long long)s->connects);
		} else if (!up && s->up) {
			SP_LOG(SP_LOG_WARN, "store_down", "msg=\"%s\"", sp_rcluster_error(s->rc));
			s->downs++;
		}
		s->up = up;
		cluster_counters(s);
		cluster_late(s, now);
		return;
	}
	if (!s->up && now - s->connect_started >= s->lim.timeout_ms) {
		link_drop(s, "connect timed out");
		return;
	}
	for (struct req *q = s->inflight.head; q; q = q->next)
		if (now >= q->deadline)
			late++;
	if (s->ping_sent && now - s->ping_sent >= s->lim.timeout_ms)
		late++;
	if (late) {
		CNT_ADD(s, timeouts, late);
		link_drop(s, "request timed out");
		return;
	}
	if (s->up && !s->ping_sent && !s->inflight.head && now - s->ping_last >= PING_IDLE_MS &&
	    redisAsyncCommand(s->ac, on_ping, s, "PING") == REDIS_OK)
		s->ping_sent = s->ping_last = now;
}

/* ---- sending ----------------------------------------------------------------------------- */

static void on_reply(redisAsyncContext *ac, void *r, void *priv);

/* Sends q (EVALSHA, or EVAL after NOSCRIPT, or a plain command) and puts it on the inflight
 * list. */
static int req_send(sp_store_t *s, struct req *q)
{
	if (q->kind >= KIND_COUNT) {
		/* a plain command: argv is complete */
	} else if (q->eval) {
		q->argv[0] = "EVAL";
		q->argv[1] = script_src[q->kind];
		q->argvlen[1] = strlen(script_src[q->kind]);
	} else {
		q->argv[0] = "EVALSHA";
		q->argv[1] = s->sha[q->kind];
		q->argvlen[1] = 40;
	}
	if (q->kind < KIND_COUNT)
		q->argvlen[0] = strlen(q->argv[0]);
	if (s->rc) {
		if (sp_rcluster_command(s->rc, q->slot, on_reply, q, q->argc, q->argv, q->argvlen) <
		    0)
			return -1;
	} else if (redisAsyncCommandArgv(s->ac, on_reply, q, q->argc, q->argv, q->argvlen) !=
	           REDIS_OK) {
		return -1;
	}
	q->deadline = sp_time_mono_ms() + s->lim.timeout_ms;
	list_append(&s->inflight, q);
	return 0;
}

static int req_submit(sp_store_t *s, struct req *q)
{
	/* In cluster mode what matters is the master of q's slot, not the whole map. */
	bool ready = s->rc ? sp_rcluster_slot_up(s->rc, q->slot) : s->up && s->ac;

	if (!ready || s->inflight.n >= s->lim.max_inflight || req_send(s, q) < 0)
		req_defer(s, q, SP_STORE_UNAVAILABLE);
	return 0;
}

/* Error replies that mean "later" rather than "wrong". */
static bool transient_error(const redisReply *reply)
{
	static const char *const codes[] = {"OOM",      "BUSY",     "LOADING",    "MASTERDOWN",
	                                    "READONLY", "TRYAGAIN", "CLUSTERDOWN"};

	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		size_t n = strlen(codes[i]);

		if (reply->len > n && strncmp(reply->str, codes[i], n) == 0 && reply->str[n] == ' ')
			return true;
	}
	return false;
}

static bool reply_int(const redisReply *r, long long min, long long max)
{
	return r->type == REDIS_REPLY_INTEGER && r->integer >= min && r->integer <= max;
}

static void got_enqueue(sp_store_t *s, redisAsyncContext *ac, struct req *q, redisReply *reply)
{
	static const int status_of[] = {SP_STORE_STORED, SP_STORE_DUPLICATE, SP_STORE_FULL_COUNT,
	                                SP_STORE_FULL_BYTES, SP_STORE_EXPIRED};
	bool wait = false;
	size_t i = 0;

	if (q->waiting) {
		/* The WAIT answer: the number of replicas that have the writes. Stored and
		 * duplicate messages are answered so only if enough confirmed. */
		if (reply->type != REDIS_REPLY_INTEGER) {
			enqueue_finish(s, q, SP_STORE_ERROR);
			return;
		}
		if (reply->integer < (long long)s->lim.wait_replicas)
			for (struct sub *u = q->subs; u; u = u->next)
				if (u->status == SP_STORE_STORED || u->status == SP_STORE_DUPLICATE)
					u->status = SP_STORE_UNAVAILABLE;
		enqueue_finish(s, q, -1);
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 1 + 2 * q->nsubs ||
	    !reply_int(reply->element[0], 0, LLONG_MAX)) {
		enqueue_finish(s, q, SP_STORE_ERROR);
		return;
	}
	for (size_t k = 0; k < q->nsubs; k++)
		if (!reply_int(reply->element[1 + 2 * k], 0, 4) ||
		    !reply_int(reply->element[2 + 2 * k], 0, LLONG_MAX)) {
			enqueue_finish(s, q, SP_STORE_ERROR);
			return;
		}
	CNT_ADD(s, expired_purged, reply->element[0]->integer);
	for (struct sub *u = q->subs; u; u = u->next, i++) {
		u->status = status_of[reply->element[1 + 2 * i]->integer];
		u->seq = (uint64_t)reply->element[2 + 2 * i]->integer;
		if (u->status == SP_STORE_STORED || u->status == SP_STORE_DUPLICATE)
			wait = true;
	}
	if (wait && s->lim.wait_replicas > 0) {
		/* A DUPLICATE, too, is answered QUEUED by the caller: it waits for the replicas
		 * just as the first attempt did, whose WAIT may have fallen short. s->ac differs
		 * from ac when an earlier callback dropped the link. */
		q->waiting = true;
		if (!current(s, ac) ||
		    redisAsyncCommand(ac, on_reply, q, "WAIT %u %u", s->lim.wait_replicas,
		                      s->lim.wait_timeout_ms) != REDIS_OK) {
			enqueue_finish(s, q, SP_STORE_UNAVAILABLE);
			return;
		}
		q->deadline = sp_time_mono_ms() + s->lim.wait_timeout_ms + s->lim.timeout_ms;
		list_append(&s->inflight, q);
		return;
	}
	enqueue_finish(s, q, -1);
}

static struct req *fetch_req(sp_store_t *s, struct fetch_job *job, int kind);
static void fetch_done(sp_store_t *s, struct fetch_job *job, redisReply *recs);
static int req_submit(sp_store_t *s, struct req *q);

/* The next step of a fetch, from a reply callback; out of memory answers the fetch ERROR. */
static void fetch_step(sp_store_t *s, struct fetch_job *job, int kind)
{
	struct req *q = fetch_req(s, job, kind);

	if (q) {
		req_submit(s, q);
		return;
	}
	job_fail(s, job, SP_STORE_ERROR);
}

/* The range answered: ids and seqs, or nothing (then check whether the seq went back). */
static void got_range(sp_store_t *s, struct req *q, redisReply *reply)
{
	struct fetch_job *job = q->job;
	size_t n;

	if (reply->type != REDIS_REPLY_ARRAY || reply->elements % 2 != 0 ||
	    reply->elements / 2 > job->count)
		goto bad;
	n = reply->elements / 2;
	for (size_t i = 0; i < n; i++) {
		redisReply *id = reply->element[2 * i], *sc = reply->element[2 * i + 1];
		char *end;
		unsigned long long v;

		if (id->type != REDIS_REPLY_STRING || id->len != 16 ||
		    sc->type != REDIS_REPLY_STRING || sc->len == 0)
			goto bad;
		errno = 0;
		v = strtoull(sc->str, &end, 10);
		if (errno || *end != '\0')
			goto bad;
		if (i == 0) {
			job->seqs = malloc(n * sizeof(*job->seqs));
			job->ids = malloc(n * sizeof(*job->ids));
			if (!job->seqs || !job->ids)
				goto bad;
		}
		job->seqs[i] = (uint64_t)v;
		memcpy(job->ids[i], id->str, 16);
	}
	job->n = n;
	free(q);
	if (n > 0)
		fetch_step(s, job, KIND_RECORDS);
	else if (job->after > 0 && !job->from_start)
		fetch_step(s, job, KIND_SEQ);
	else
		fetch_done(s, job, NULL);
	return;
bad:
	req_finish(s, q, SP_STORE_ERROR);
}

/* After an empty range: a cursor above the queue's counter means the seq went back (the keys
 * were made again after a clock step back); read from the start then. */
static void got_seq(sp_store_t *s, struct req *q, redisReply *reply)
{
	struct fetch_job *job = q->job;
	unsigned long long cur = 0;

	if (reply->type == REDIS_REPLY_STRING)
		cur = strtoull(reply->str, NULL, 10);
	else if (reply->type != REDIS_REPLY_NIL)
		goto bad;
	free(q);
	if (cur < job->after) {
		job->from_start = true;
		job->after = 0;
		fetch_step(s, job, KIND_RANGE);
	} else {
		fetch_done(s, job, NULL);
	}
	return;
bad:
	req_finish(s, q, SP_STORE_ERROR);
}

/* The records answered: hand the page over. A record that is gone (acked, replaced) or that
 * says it expired is handed over without a record (record NULL: skip it) so that the caller
 * still sees a full page and asks for the next; the expired ones are removed right away. */
static void got_records(sp_store_t *s, struct req *q, redisReply *reply)
{
	struct fetch_job *job = q->job;

	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != job->n)
		goto bad;
	for (size_t i = 0; i < job->n; i++)
		if (reply->element[i]->type != REDIS_REPLY_STRING &&
		    reply->element[i]->type != REDIS_REPLY_NIL)
			goto bad;
	free(q);
	fetch_done(s, job, reply);
	return;
bad:
	req_finish(s, q, SP_STORE_ERROR);
}

static void got_ack(sp_store_t *s, struct req *q, redisReply *reply)
{
	if (!reply_int(reply, 0, LLONG_MAX)) {
		req_finish(s, q, SP_STORE_ERROR);
		return;
	}
	if (q->expired_purge)
		CNT_ADD(s, expired_purged, reply->integer);
	else
		CNT_ADD(s, acked, reply->integer);
	if (q->cb.ack) {
		s->in_cb++;
		q->cb.ack(SP_STORE_OK, (size_t)reply->integer, q->arg);
		s->in_cb--;
	}
	free(q);
}

static void got_depth(sp_store_t *s, struct req *q, redisReply *reply)
{
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
	    !reply_int(reply->element[0], 0, LLONG_MAX) ||
	    !reply_int(reply->element[1], LLONG_MIN, LLONG_MAX)) {
		req_finish(s, q, SP_STORE_ERROR);
		return;
	}
	s->in_cb++;
	q->cb.depth(SP_STORE_OK, (uint64_t)reply->element[0]->integer,
	            reply->element[1]->integer < 0 ? 0 : (uint64_t)reply->element[1]->integer,
	            q->arg);
	s->in_cb--;
	free(q);
}

static void got_command(sp_store_t *s, struct req *q, int status, const redisReply *reply)
{
	count_status(s, status);
	s->in_cb++;
	q->cb.command(status, reply, q->arg);
	s->in_cb--;
	free(q);
}

static void on_reply(redisAsyncContext *ac, void *r, void *priv)
{
	struct req *q = priv;
	sp_store_t *s = q->s;
	redisReply *reply = r;

	if (q->abandoned) {
		free(q); /* answered at its deadline (cluster_late) */
		return;
	}
	list_remove(&s->inflight, q);
	if (!reply) {
		/* hiredis is freeing the context: lost, dropped by us, or sp_store_free(); in
		 * cluster mode also a request the cluster client gave up on (it reconnects by
		 * itself). */
		if (!s->rc && ac && s->ac == ac)
			link_lost(s, ac->errstr[0] ? ac->errstr : "connection lost");
		req_finish(s, q, SP_STORE_UNAVAILABLE);
		return;
	}
	if (reply->type == REDIS_REPLY_ERROR) {
		if (q->kind < KIND_COUNT && !q->waiting && !q->eval && reply->len >= 8 &&
		    strncmp(reply->str, "NOSCRIPT", 8) == 0 && current(s, ac)) {
			q->eval = true;
			if (req_send(s, q) < 0)
				req_finish(s, q, SP_STORE_UNAVAILABLE);
			return;
		}
		if (transient_error(reply)) {
			req_finish(s, q, SP_STORE_UNAVAILABLE);
		} else if (q->kind == KIND_COMMAND) {
			got_command(s, q, SP_STORE_ERROR, reply);
		} else {
			char quoted[SP_LOG_QUOTE_SIZE(200)];

			sp_log_quote(quoted, sizeof(quoted), reply->str,
			             reply->len > 200 ? 200 : reply->len);
			SP_LOG(SP_LOG_WARN, "store_error", "op=%s reply=%s", kind_name[q->kind],
			       quoted);
			req_finish(s, q, SP_STORE_ERROR);
		}
		return;
	}
	switch (q->kind) {
	case KIND_ENQUEUE:
		got_enqueue(s, ac, q, reply);
		break;
	case KIND_PURGE:
		if (reply_int(reply, 0, LLONG_MAX))
			CNT_ADD(s, expired_purged, reply->integer);
		free(q);
		break;
	case KIND_ACK:
		got_ack(s, q, reply);
		break;
	case KIND_DEPTH:
		got_depth(s, q, reply);
		break;
	case KIND_RANGE:
		got_range(s, q, reply);
		break;
	case KIND_RECORDS:
		got_records(s, q, reply);
		break;
	case KIND_COMMAND:
		got_command(s, q, SP_STORE_OK, reply);
		break;
	default:
		got_seq(s, q, reply);
		break;
	}
}

/* ---- building requests ------------------------------------------------------------------- */

static void hex_token(char *out, const uint8_t token[32])
{
	static const char digits[] = "0123456789abcdef";

	for (int i = 0; i < 32; i++) {
		out[2 * i] = digits[token[i] >> 4];
		out[2 * i + 1] = digits[token[i] & 15];
	}
}

/* A request for `kind` on `token` with room for nargs script arguments of `data` bytes in
 * total; the keys are filled in. The caller adds the arguments with req_arg(). */
struct req_builder {
	struct req *q;
	char *data;
};

#define KEY_LEN (sizeof("sp:{}:q") - 1 + 64)

static struct req *req_new(sp_store_t *s, int kind, const uint8_t token[32], size_t nargs,
                           size_t data, struct req_builder *b)
{
	size_t argc = 3 + NKEYS + nargs;
	size_t size = sizeof(struct req) + argc * (sizeof(char *) + sizeof(size_t)) +
	              NKEYS * KEY_LEN + data;
	struct req *q = calloc(1, size);
	char hex[64];
	static const char suffix[NKEYS] = {'q', 'e', 'm', 'c', 's'};

	if (!q)
		return NULL;
	q->s = s;
	q->kind = kind;
	q->argv = (const char **)(q + 1);
	q->argvlen = (size_t *)(q->argv + argc);
	b->q = q;
	b->data = (char *)(q->argvlen + argc);
	hex_token(hex, token);
	q->slot = sp_rc_keyslot(hex, sizeof(hex));
	q->argv[2] = "5";
	q->argvlen[2] = 1;
	q->argc = 3;
	for (int k = 0; k < NKEYS; k++) {
		memcpy(b->data, "sp:{", 4);
		memcpy(b->data + 4, hex, 64);
		memcpy(b->data + 68, "}:", 2);
		b->data[70] = suffix[k];
		q->argv[q->argc] = b->data;
		q->argvlen[q->argc++] = KEY_LEN;
		b->data += KEY_LEN;
	}
	return q;
}

static void req_arg(struct req_builder *b, const void *p, size_t len)
{
	struct req *q = b->q;

	if (len)
		memcpy(b->data, p, len);
	q->argv[q->argc] = b->data;
	q->argvlen[q->argc++] = len;
	b->data += len;
}

static void req_arg_u64(struct req_builder *b, uint64_t v)
{
	char num[24];
	int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)v);

	req_arg(b, num, (size_t)n);
}

/* An argument that points at memory living as long as the request (a message's buffers). */
static void req_arg_ref(struct req_builder *b, const void *p, size_t len)
{
	struct req *q = b->q;

	q->argv[q->argc] = p;
	q->argvlen[q->argc++] = len;
}

/* ---- enqueue batches --------------------------------------------------------------------- */

static void tok_forget(sp_store_t *s, struct tok *t)
{
	sp_tokmap_del(&s->toks, t->token, (uintptr_t)t);
	if (t->prev)
		t->prev->next = t->next;
	else
		s->all_toks = t->next;
	if (t->next)
		t->next->prev = t->prev;
	free(t);
}

static void tok_flush_later(sp_store_t *s, struct tok *t)
{
	if (t->on_flush)
		return;
	t->on_flush = true;
	t->flush_next = s->flush_list;
	s->flush_list = t;
	event_active(s->ev_flush, 0, 0);
}

/* Sends up to max_batch waiting messages of t in one enqueue request. A failure to send is
 * answered UNAVAILABLE from the deferred event, like any request. Returns 0, or -ENOMEM when
 * no request could be made (the messages stay waiting). */
static int tok_send(sp_store_t *s, struct tok *t)
{
	struct req_builder b;
	struct sub *u = t->head, *last = NULL;
	size_t n = 0;
	struct req *q;

	while (u && n < s->lim.max_batch) {
		last = u;
		u = u->next;
		n++;
	}
	q = req_new(s, KIND_ENQUEUE, t->token, 3 + 4 * n, 3 * 24, &b);
	if (!q)
		return -ENOMEM;
	q->tok = t;
	q->subs = t->head;
	q->nsubs = n;
	t->head = last->next;
	last->next = NULL;
	if (!t->head)
		t->tail = NULL;
	t->n -= n;
	t->bytes = 0;
	for (u = t->head; u; u = u->next)
		t->bytes += u->len;
	t->inflight++;
	CNT_ADD(s, enqueue_calls, 1);
	req_arg_u64(&b, s->lim.max_count);
	req_arg_u64(&b, s->lim.max_bytes);
	req_arg_u64(&b, sp_time_wall_ms());
	for (u = q->subs; u; u = u->next) {
		req_arg_ref(&b, u->id, 16);
		req_arg_ref(&b, u->data, u->len);
		req_arg_ref(&b, u->expires, u->expires_len);
		req_arg_ref(&b, u->data + u->len, u->collapse_len);
	}
	req_submit(s, q);
	return 0;
}

/* An enqueue request of t was answered: send what waited meanwhile, or forget t. */
static void tok_sent_done(sp_store_t *s, struct tok *t)
{
	t->inflight--;
	if (t->inflight == 0 && t->n > 0 && !s->closing) {
		if (tok_send(s, t) < 0)
			tok_flush_later(s, t);
	} else if (t->inflight == 0 && t->n == 0 && !t->on_flush)
		tok_forget(s, t);
}

/* Sends the waiting messages of every token that has none out; runs once per loop turn in
 * which messages were enqueued, after the callbacks that enqueued them. */
static void on_flush(evutil_socket_t fd, short what, void *arg)
{
	sp_store_t *s = arg;
	struct tok *t = s->flush_list;

	(void)fd;
	(void)what;
	s->flush_list = NULL;
	while (t) {
		struct tok *next = t->flush_next;

		t->on_flush = false;
		t->flush_next = NULL;
		if (t->inflight == 0 && t->n > 0) {
			if (tok_send(s, t) < 0)
				tok_flush_later(s, t); /* out of memory: next turn */
		} else if (t->inflight == 0 && t->n == 0) {
			tok_forget(s, t);
		}
		t = next;
	}
}

/* A plain command of argc arguments with room for `data` bytes of them (copied by req_arg). */
static struct req *req_new_plain(sp_store_t *s, int kind, size_t argc, size_t data,
                                 struct req_builder *b)
{
	struct req *q =
	        calloc(1, sizeof(struct req) + argc * (sizeof(char *) + sizeof(size_t)) + data);

	if (!q)
		return NULL;
	q->s = s;
	q->kind = kind;
	q->argv = (const char **)(q + 1);
	q->argvlen = (size_t *)(q->argv + argc);
	b->q = q;
	b->data = (char *)(q->argvlen + argc);
	return q;
}

static void req_arg_key(struct req_builder *b, const uint8_t token[32], char suffix)
{
	char key[KEY_LEN];

	memcpy(key, "sp:{", 4);
	hex_token(key + 4, token);
	memcpy(key + 68, "}:", 2);
	key[70] = suffix;
	b->q->slot = sp_rc_keyslot(key + 4, 64);
	req_arg(b, key, KEY_LEN);
}

/* The request for one step of a fetch (see struct fetch_job), or NULL (out of memory). */
static struct req *fetch_req(sp_store_t *s, struct fetch_job *job, int kind)
{
	struct req_builder b;
	struct req *q = NULL;

	switch (kind) {
	case KIND_RANGE: {
		char min[24];
		int n = job->from_start ? snprintf(min, sizeof(min), "-inf")
		                        : snprintf(min, sizeof(min), "(%llu",
		                                   (unsigned long long)job->after);

		q = req_new_plain(s, kind, 8, KEY_LEN + 64, &b);
		if (!q)
			return NULL;
		req_arg(&b, "ZRANGEBYSCORE", 13);
		req_arg_key(&b, job->token, 'q');
		req_arg(&b, min, (size_t)n);
		req_arg(&b, "+inf", 4);
		req_arg(&b, "WITHSCORES", 10);
		req_arg(&b, "LIMIT", 5);
		req_arg(&b, "0", 1);
		req_arg_u64(&b, job->count);
		break;
	}
	case KIND_RECORDS:
		q = req_new_plain(s, kind, 2 + job->n, KEY_LEN + 5, &b);
		if (!q)
			return NULL;
		req_arg(&b, "HMGET", 5);
		req_arg_key(&b, job->token, 'm');
		for (size_t i = 0; i < job->n; i++)
			req_arg_ref(&b, job->ids[i], 16);
		break;
	case KIND_SEQ:
		q = req_new_plain(s, kind, 3, KEY_LEN + 7, &b);
		if (!q)
			return NULL;
		req_arg(&b, "HGET", 4);
		req_arg_key(&b, job->token, 's');
		req_arg(&b, "seq", 3);
		break;
	default:
		return NULL;
	}
	q->job = job;
	return q;
}

/* Removes messages a fetch found expired (the ACK script; counted as expired_purged). */
static void purge_ids(sp_store_t *s, const uint8_t token[32], const uint8_t (*ids)[16], size_t n)
{
	struct req_builder b;
	struct req *q = req_new(s, KIND_ACK, token, n, 16 * n, &b);

	if (!q)
		return; /* the purge at the next fetch or enqueue gets them */
	q->expired_purge = true;
	for (size_t i = 0; i < n; i++)
		req_arg(&b, ids[i], 16);
	req_submit(s, q);
}

/* Answers a fetch with the page in recs (an HMGET answer for job->ids), or an empty page. */
static void fetch_done(sp_store_t *s, struct fetch_job *job, redisReply *recs)
{
	size_t n = recs ? job->n : 0, n_exp = 0, got = 0;
	sp_store_item_t *items = NULL;
	uint8_t(*expired)[16] = NULL;
	uint64_t now = sp_time_wall_ms();

	if (n > 0) {
		items = calloc(n, sizeof(*items));
		expired = malloc(n * sizeof(*expired));
		if (!items || !expired) {
			free(items);
			free(expired);
			job_fail(s, job, SP_STORE_ERROR);
			return;
		}
	}
	for (size_t i = 0; i < n; i++) {
		redisReply *r = recs->element[i];
		const uint8_t *rec = (const uint8_t *)r->str;

		items[i].seq = job->seqs[i];
		items[i].id = job->ids[i];
		if (r->type != REDIS_REPLY_STRING)
			continue; /* gone since the range was read */
		if (r->len >= SP_STORE_RECORD_HEADER && rec[0] == SP_STORE_RECORD_VERSION) {
			uint64_t exp = 0;

			for (int k = 1; k <= 8; k++)
				exp = exp << 8 | rec[k];
			if (exp <= now) {
				memcpy(expired[n_exp++], job->ids[i], 16);
				continue;
			}
		}
		items[i].record = rec;
		items[i].record_len = r->len;
		got++;
	}
	CNT_ADD(s, fetched, got);
	s->in_cb++;
	job->cb(SP_STORE_OK, items, n, job->arg);
	s->in_cb--;
	if (n_exp > 0 && !s->closing)
		purge_ids(s, job->token, (const uint8_t(*)[16])expired, n_exp);
	free(items);
	free(expired);
	job_free(job);
}

/* ---- public API -------------------------------------------------------------------------- */

int sp_store_enqueue(sp_store_t *s, const uint8_t token[32], const uint8_t id[16],
                     const uint8_t *record, size_t len, uint64_t expires_ms,
                     const uint8_t *collapse, size_t collapse_len, sp_store_enqueue_cb cb,
                     void *arg)
{
	sp_store_record_t rec;
	struct sub *u;
	struct tok *t;

	if (!s || !token || !id || !record || !cb || (collapse_len && !collapse))
		return -EINVAL;
	if (s->closing)
		return -ESHUTDOWN;
	/* The scripts read the collapse id from the record: it must agree with the arguments. */
	if (sp_store_record_parse(record, len, &rec) < 0 || rec.expires_ms != expires_ms ||
	    rec.collapse_len != collapse_len ||
	    (collapse_len && memcmp(rec.collapse, collapse, collapse_len) != 0) ||
	    expires_ms > (UINT64_C(1) << 53))
		return -EINVAL;
	t = (struct tok *)sp_tokmap_get(&s->toks, token);
	if (!t) {
		uintptr_t none;

		t = calloc(1, sizeof(*t));
		if (!t)
			return -ENOMEM;
		memcpy(t->token, token, 32);
		if (sp_tokmap_put(&s->toks, token, (uintptr_t)t, &none) < 0) {
			free(t);
			return -ENOMEM;
		}
		t->next = s->all_toks;
		if (t->next)
			t->next->prev = t;
		s->all_toks = t;
	}
	u = malloc(sizeof(*u) + len + collapse_len);
	if (!u) {
		if (t->inflight == 0 && t->n == 0 && !t->on_flush)
			tok_forget(s, t);
		return -ENOMEM;
	}
	u->next = NULL;
	u->cb = cb;
	u->arg = arg;
	u->status = SP_STORE_ERROR;
	u->seq = 0;
	memcpy(u->id, id, 16);
	u->expires_len = (size_t)snprintf(u->expires, sizeof(u->expires), "%llu",
	                                  (unsigned long long)expires_ms);
	u->len = len;
	u->collapse_len = collapse_len;
	memcpy(u->data, record, len);
	if (collapse_len)
		memcpy(u->data + len, collapse, collapse_len);
	if (t->tail)
		t->tail->next = u;
	else
		t->head = u;
	t->tail = u;
	t->n++;
	t->bytes += len;
	/* A full batch goes at once, behind any still out for this token; otherwise at the end
	 * of this loop turn, or when the token's request that is out is answered. */
	if ((t->n >= s->lim.max_batch || t->bytes >= BATCH_MAX_BYTES) && tok_send(s, t) == 0)
		return 0;
	tok_flush_later(s, t);
	return 0;
}

int sp_store_fetch(sp_store_t *s, const uint8_t token[32], uint64_t after_seq, unsigned count,
                   sp_store_fetch_cb cb, void *arg)
{
	struct req_builder b;
	struct fetch_job *job;
	struct req *purge, *range;

	if (!s || !token || !cb || count < 1 || count > SP_STORE_MAX_FETCH ||
	    after_seq > (UINT64_C(1) << 53))
		return -EINVAL;
	if (s->closing)
		return -ESHUTDOWN;
	job = calloc(1, sizeof(*job));
	if (!job)
		return -ENOMEM;
	memcpy(job->token, token, 32);
	job->after = after_seq;
	job->count = count;
	job->cb = cb;
	job->arg = arg;
	/* The purge first, then the range, pipelined: the range sees the purged queue. */
	purge = req_new(s, KIND_PURGE, token, 1, 24, &b);
	if (purge)
		req_arg_u64(&b, sp_time_wall_ms());
	range = fetch_req(s, job, KIND_RANGE);
	if (!purge || !range) {
		free(purge);
		free(range);
		free(job);
		return -ENOMEM;
	}
	req_submit(s, purge);
	return req_submit(s, range);
}

int sp_store_ack(sp_store_t *s, const uint8_t token[32], const uint8_t (*ids)[16], size_t n,
                 sp_store_ack_cb cb, void *arg)
{
	struct req_builder b;
	struct req *q;

	if (!s || !token || !ids || n < 1 || n > SP_STORE_MAX_ACK)
		return -EINVAL;
	if (s->closing)
		return -ESHUTDOWN;
	q = req_new(s, KIND_ACK, token, n, 16 * n, &b);
	if (!q)
		return -ENOMEM;
	q->cb.ack = cb;
	q->arg = arg;
	for (size_t i = 0; i < n; i++)
		req_arg(&b, ids[i], 16);
	return req_submit(s, q);
}

int sp_store_depth(sp_store_t *s, const uint8_t token[32], sp_store_depth_cb cb, void *arg)
{
	struct req_builder b;
	struct req *q;

	if (!s || !token || !cb)
		return -EINVAL;
	if (s->closing)
		return -ESHUTDOWN;
	q = req_new(s, KIND_DEPTH, token, 0, 0, &b);
	if (!q)
		return -ENOMEM;
	q->cb.depth = cb;
	q->arg = arg;
	return req_submit(s, q);
}

int sp_store_command(sp_store_t *s, const char *key, size_t key_len, int argc,
                     const char *const *argv, const size_t *argvlen, sp_store_command_cb cb,
                     void *arg)
{
	struct req_builder b;
	struct req *q;
	size_t data = 0;

	if (!s || !key || !cb || argc < 1 || argc > SP_STORE_MAX_ARGS || !argv || !argvlen)
		return -EINVAL;
	if (s->closing)
		return -ESHUTDOWN;
	for (int i = 0; i < argc; i++)
		data += argvlen[i];
	q = req_new_plain(s, KIND_COMMAND, (size_t)argc, data, &b);
	if (!q)
		return -ENOMEM;
	q->cb.command = cb;
	q->arg = arg;
	q->slot = sp_rc_keyslot(key, key_len);
	for (int i = 0; i < argc; i++)
		req_arg(&b, argv[i], argvlen[i]);
	return req_submit(s, q);
}

sp_store_t *sp_store_new(struct event_base *base, const char *url, const sp_store_limits_t *lim,
                         char *err, size_t errlen)
{
	sp_store_t *s = NULL;
	struct timeval tick;
	uint32_t tick_ms;

	if (!base || !url || !lim) {
		snprintf(err, errlen, "sp_store_new: missing argument");
		return NULL;
	}
	if (lim->max_count < 1 || lim->max_bytes < 1 || lim->timeout_ms < 1 ||
	    lim->max_inflight < 1 || lim->max_batch < 1 || lim->max_batch > SP_STORE_MAX_BATCH ||
	    (lim->wait_replicas > 0 && lim->wait_timeout_ms < 1)) {
		snprintf(err, errlen,
		         "store limits: max_count, max_bytes, timeout_ms, max_inflight and "
		         "wait_timeout_ms (with wait_replicas) must be at least 1, max_batch 1 to "
		         "%d",
		         SP_STORE_MAX_BATCH);
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		goto nomem;
	s->base = base;
	s->lim = *lim;
	s->backoff_ms = BACKOFF_MIN_MS;
	s->rng = (sp_time_wall_ms() ^ (uint64_t)(uintptr_t)s) | 1;
	for (int k = 0; k < KIND_COUNT; k++)
		s->loaders[k] = (struct loader){s, k};
	if (strncmp(url, SP_STORE_CLUSTER_SCHEME, strlen(SP_STORE_CLUSTER_SCHEME)) == 0) {
		s->seeds = strdup(url + strlen(SP_STORE_CLUSTER_SCHEME));
		if (!s->seeds || !s->seeds[0]) {
			snprintf(err, errlen, "redis url \"%s\" names no cluster node", url);
			free(s->seeds);
			free(s);
			return NULL;
		}
	} else if (sp_parse_redis_url(url, s->host, sizeof(s->host), &s->port, s->path,
	                              sizeof(s->path)) < 0) {
		snprintf(err, errlen,
		         "redis url \"%s\" is not redis://HOST:PORT, unix:PATH or "
		         "redis-cluster://HOST:PORT,HOST:PORT...",
		         url);
		free(s);
		return NULL;
	}
	s->ev_tick = event_new(base, -1, EV_PERSIST, on_tick, s);
	s->ev_defer = event_new(base, -1, 0, on_defer, s);
	s->ev_flush = event_new(base, -1, 0, on_flush, s);
	sp_tokmap_init(&s->toks);
	if (!s->ev_tick || !s->ev_defer || !s->ev_flush)
		goto nomem;
	tick_ms = lim->timeout_ms / 4;
	tick_ms = tick_ms < 5 ? 5 : tick_ms > TICK_MAX_MS ? TICK_MAX_MS : tick_ms;
	tick.tv_sec = 0;
	tick.tv_usec = (suseconds_t)tick_ms * 1000;
	if (event_add(s->ev_tick, &tick) < 0)
		goto nomem;
	store_connect(s);
	return s;
nomem:
	snprintf(err, errlen, "out of memory");
	sp_store_free(s);
	return NULL;
}

void sp_store_free(sp_store_t *s)
{
	if (!s)
		return;
	/* From inside a callback hiredis would still hold requests we are about to free. */
	assert(s->in_cb == 0);
	s->closing = true;
	if (s->rc) {
		s->up = false;
		cluster_free(s); /* every pending request: NULL reply -> UNAVAILABLE */
	}
	if (s->ac) {
		redisAsyncContext *ac = s->ac;

		s->ac = NULL;
		s->up = false;
		ac->data = NULL;
		redisAsyncFree(ac); /* every pending request: NULL reply -> UNAVAILABLE */
	}
	/* Messages not sent yet: answered UNAVAILABLE like the rest (through the deferred list). */
	s->flush_list = NULL;
	for (struct tok *t = s->all_toks; t; t = t->next) {
		t->on_flush = false;
		while (t->n > 0 && tok_send(s, t) == 0)
			;
		while (t->head) { /* out of memory even for that */
			struct sub *u = t->head;

			t->head = u->next;
			t->n--;
			count_status(s, SP_STORE_UNAVAILABLE);
			s->in_cb++;
			u->cb(SP_STORE_UNAVAILABLE, 0, u->arg);
			s->in_cb--;
			free(u);
		}
		t->tail = NULL;
	}
	while (s->deferred.head) {
		struct req *q = s->deferred.head;

		list_remove(&s->deferred, q);
		req_finish(s, q, q->status);
	}
	while (s->all_toks)
		tok_forget(s, s->all_toks);
	sp_tokmap_free(&s->toks);
	if (s->ev_tick)
		event_free(s->ev_tick);
	if (s->ev_defer)
		event_free(s->ev_defer);
	if (s->ev_flush)
		event_free(s->ev_flush);
	free(s->seeds);
	free(s);
}

/* ---- records ----------------------------------------------------------------------------- */

size_t sp_store_record_size(size_t collapse_len, size_t blob_len)
{
	if (collapse_len > SP_STORE_MAX_COLLAPSE ||
	    blob_len > SIZE_MAX - SP_STORE_RECORD_HEADER - collapse_len)
		return 0;
	return SP_STORE_RECORD_HEADER + collapse_len + blob_len;
}

int sp_store_record_build(uint8_t *out, size_t outlen, uint64_t expires_ms, uint8_t priority,
                          const uint8_t *collapse, size_t collapse_len, const uint8_t *blob,
                          size_t blob_len)
{
	size_t need = sp_store_record_size(collapse_len, blob_len);

	if (!out || need == 0 || outlen < need || (collapse_len && !collapse) ||
	    (blob_len && !blob))
		return -EINVAL;
	out[0] = SP_STORE_RECORD_VERSION;
	for (int i = 0; i < 8; i++)
		out[1 + i] = (uint8_t)(expires_ms >> (56 - 8 * i));
	out[9] = priority;
	out[10] = (uint8_t)collapse_len;
	if (collapse_len)
		memcpy(out + SP_STORE_RECORD_HEADER, collapse, collapse_len);
	if (blob_len)
		memcpy(out + SP_STORE_RECORD_HEADER + collapse_len, blob, blob_len);
	return 0;
}

int sp_store_record_parse(const uint8_t *rec, size_t len, sp_store_record_t *out)
{
	size_t clen;

	if (!rec || !out || len < SP_STORE_RECORD_HEADER || rec[0] != SP_STORE_RECORD_VERSION)
		return -EBADMSG;
	clen = rec[10];
	if (clen > SP_STORE_MAX_COLLAPSE || clen > len - SP_STORE_RECORD_HEADER)
		return -EBADMSG;
	out->expires_ms = 0;
	for (int i = 0; i < 8; i++)
		out->expires_ms = (out->expires_ms << 8) | rec[1 + i];
	out->priority = rec[9];
	out->collapse_len = clen;
	out->collapse = clen ? rec + SP_STORE_RECORD_HEADER : NULL;
	out->blob = rec + SP_STORE_RECORD_HEADER + clen;
	out->blob_len = len - SP_STORE_RECORD_HEADER - clen;
	return 0;
}
