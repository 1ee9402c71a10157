/*
 * sp_dirlog.c: the directory's transparency log in Redis (see sp_dirlog.h, PROTOCOL.md 15.5).
 *
 * Keys, all with the hash tag {dir} (one Redis Cluster slot):
 *   sp:{dir}:size           string: the number of leaves
 *   sp:{dir}:sth            string: the latest signed tree head (wire form)
 *   sp:{dir}:node           hash: "LEVEL:INDEX" -> 32-byte hash of that perfect node (level 0:
 *                           the leaf hashes)
 *   sp:{dir}:leaf           hash: "INDEX" -> the leaf's bytes (a log entry)
 *   sp:{dir}:handle         hash: handle -> index of its latest entry
 *   sp:{dir}:tok            hash: device token (32 bytes) -> the handle whose card lists it
 *   sp:{dir}:htok           hash: handle -> the tokens of its latest card, concatenated
 *   sp:{dir}:ukey           hash: handle -> SHA-256 of its user key's SPKI
 *   sp:{dir}:iat            hash: handle -> issued_at of its latest card
 *   sp:{dir}:hist:HANDLE    list: every index of the handle's entries, in order
 *
 * An op is one request's state machine; each step is one sp_store_command whose callback moves
 * it on. Appends of one sp_dirlog_t wait in a queue and run one at a time.
 */
#include <errno.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sp_dirlog.h"
#include "sp_log.h"
#include "sp_time.h"

#define K_SIZE    "sp:{dir}:size"
#define K_STH     "sp:{dir}:sth"
#define K_NODE    "sp:{dir}:node"
#define K_LEAF    "sp:{dir}:leaf"
#define K_HANDLE  "sp:{dir}:handle"
#define K_TOK     "sp:{dir}:tok"
#define K_HTOK    "sp:{dir}:htok"
#define K_UKEY    "sp:{dir}:ukey"
#define K_IAT     "sp:{dir}:iat"
#define K_HIST    "sp:{dir}:hist:"

#define H         SP_MERKLE_HASH_LEN
#define CACHE_MAX 160 /* nodes one op may read: a proof of a 2^63 tree needs < 130 */

/* The append script: KEYS size sth node leaf handle tok htok hist ukey iat; ARGV n, entry,
 * head, handle, ukey, tokens (32 bytes each, concatenated), issued_at, nodes (level u8 ||
 * hash, concatenated; node index n >> level). Returns {1, n} when written; {0, size} when the
 * size is not n (retry); {-1} the handle has another user key; {-2} a token is another
 * handle's; {-3} issued_at not later than the handle's last. */
static const char lua_append[] =
        "local n = tonumber(ARGV[1])\n"
        "local cur = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
        "if cur ~= n then return {0, cur} end\n"
        "local h = ARGV[4]\n"
        "local uk = redis.call('HGET', KEYS[9], h)\n"
        "if uk and uk ~= ARGV[5] then return {-1, cur} end\n"
        "local iat = redis.call('HGET', KEYS[10], h)\n"
        "if iat and tonumber(iat) >= tonumber(ARGV[7]) then return {-3, cur} end\n"
        "local toks = ARGV[6]\n"
        "local new = {}\n"
        "for i = 1, #toks, 32 do\n"
        "  local t = string.sub(toks, i, i + 31)\n"
        "  local o = redis.call('HGET', KEYS[6], t)\n"
        "  if o and o ~= h then return {-2, cur} end\n"
        "  new[t] = true\n"
        "end\n"
        "local old = redis.call('HGET', KEYS[7], h)\n"
        "if old then\n"
        "  for i = 1, #old, 32 do\n"
        "    local t = string.sub(old, i, i + 31)\n"
        "    if not new[t] then redis.call('HDEL', KEYS[6], t) end\n"
        "  end\n"
        "end\n"
        "for t in pairs(new) do redis.call('HSET', KEYS[6], t, h) end\n"
        "redis.call('HSET', KEYS[7], h, toks)\n"
        "redis.call('HSET', KEYS[9], h, ARGV[5])\n"
        "redis.call('HSET', KEYS[10], h, ARGV[7])\n"
        "redis.call('HSET', KEYS[5], h, ARGV[1])\n"
        "redis.call('RPUSH', KEYS[8], ARGV[1])\n"
        "redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])\n"
        "local nodes = ARGV[8]\n"
        "for i = 1, #nodes, 33 do\n"
        "  local lv = string.byte(nodes, i)\n"
        "  local idx = math.floor(n / (2 ^ lv))\n"
        "  redis.call('HSET', KEYS[3], string.format('%d:%d', lv, idx),\n"
        "             string.sub(nodes, i + 1, i + 32))\n"
        "end\n"
        "redis.call('SET', KEYS[2], ARGV[3])\n"
        "redis.call('SET', KEYS[1], string.format('%d', n + 1))\n"
        "return {1, n}\n";

/* The lookup script: KEYS sth handle tok leaf; ARGV mode ("h" or "t"), handle or token.
 * Returns {0} (none) or {1, index, entry, head}, read together. */
static const char lua_lookup[] =
        "local h = ARGV[2]\n"
        "if ARGV[1] == 't' then\n"
        "  h = redis.call('HGET', KEYS[3], ARGV[2])\n"
        "  if not h then return {0} end\n"
        "end\n"
        "local i = redis.call('HGET', KEYS[2], h)\n"
        "if not i then return {0} end\n"
        "return {1, i, redis.call('HGET', KEYS[4], i), redis.call('GET', KEYS[1])}\n";

enum { OP_APPEND, OP_LOOKUP, OP_HEAD };
enum { ST_SIZE, ST_APPEND_NODES, ST_ROOT_NODES, ST_WRITE, ST_LOOKUP, ST_PROOF_NODES, ST_HEAD };

struct cnode {
	uint8_t level, have;
	uint64_t index;
	uint8_t hash[H];
};

struct op {
	sp_dirlog_t *d;
	int kind, state;
	sp_dirlog_cb cb;
	void *arg;
	struct op *next; /* append queue */
	/* append */
	char handle[SP_DIRLOG_HANDLE_MAX];
	size_t handle_len;
	uint8_t ukey[32];
	uint8_t *tokens; /* n_tokens * 32 */
	size_t n_tokens;
	uint64_t issued_at;
	uint8_t *entry;
	size_t entry_len;
	uint8_t leaf_hash[H];
	unsigned attempts;
	uint64_t size;
	unsigned n_new;
	unsigned new_levels[SP_MERKLE_MAX_PROOF];
	uint8_t new_hashes[SP_MERKLE_MAX_PROOF][H];
	/* lookup, head */
	int by_token;
	uint8_t token[32];
	uint64_t old_size;
	sp_dirlog_answer_t ans;
	uint8_t head[SP_DIRLOG_HEAD_MAX];
	size_t head_len;
	uint8_t *lentry;
	/* nodes read so far, and which ones a walk found missing */
	unsigned n_cache;
	unsigned n_missing;
	struct cnode cache[CACHE_MAX];
};

struct sp_dirlog {
	sp_store_t *store;
	struct event *retry_ev; /* the running append waits out its back-off */
	uint64_t rng;
	EVP_PKEY *key;
	sp_dirlog_limits_t lim;
	struct op *q_head, *q_tail; /* appends: the head is running */
	size_t q_len;
	unsigned live; /* ops with a store request out */
	int closing;
	sp_dirlog_counters_t c;
};

const char *sp_dirlog_status_name(int status)
{
	static const char *const names[] = {"ok",    "not found", "key changed", "token taken",
	                                    "stale", "busy",      "unavailable", "error"};

	return status >= 0 && status <= SP_DIRLOG_ERROR ? names[status] : "unknown";
}

const char *sp_dirlog_script(const char *name)
{
	if (strcmp(name, "append") == 0)
		return lua_append;
	if (strcmp(name, "lookup") == 0)
		return lua_lookup;
	return NULL;
}

void sp_dirlog_limits_default(sp_dirlog_limits_t *lim)
{
	lim->max_retries = 64;
	lim->max_queue = 1024;
}

void sp_dirlog_counters(const sp_dirlog_t *d, sp_dirlog_counters_t *out)
{
	*out = d->c;
}

/* ---- formats ----------------------------------------------------------------------------- */

static void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

int sp_dirlog_head_parse(const uint8_t *p, size_t len, sp_dirlog_head_t *h)
{
	size_t sig_len;

	if (p == NULL || len < SP_DIRLOG_HEAD_FIXED)
		return -EBADMSG;
	sig_len = (size_t)p[48] << 8 | p[49];
	if (sig_len == 0 || len != SP_DIRLOG_HEAD_FIXED + sig_len)
		return -EBADMSG;
	h->size = get_u64(p);
	h->timestamp_ms = get_u64(p + 8);
	memcpy(h->root, p + 16, H);
	h->sig = p + SP_DIRLOG_HEAD_FIXED;
	h->sig_len = sig_len;
	return 0;
}

static void head_tbs(uint64_t size, uint64_t ts, const uint8_t root[H], uint8_t out[21 + 48])
{
	memcpy(out, SP_DIRLOG_HEAD_LABEL, 21);
	put_u64(out + 21, size);
	put_u64(out + 29, ts);
	memcpy(out + 37, root, H);
}

int sp_dirlog_head_verify(const sp_dirlog_head_t *h, EVP_PKEY *log_pub)
{
	uint8_t tbs[21 + 48];
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok;

	head_tbs(h->size, h->timestamp_ms, h->root, tbs);
	ok = md != NULL && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, log_pub) == 1 &&
	     EVP_DigestVerify(md, h->sig, h->sig_len, tbs, sizeof(tbs)) == 1;
	EVP_MD_CTX_free(md);
	return ok ? 0 : -EBADMSG;
}

/* Signs a head into out (room SP_DIRLOG_HEAD_MAX); returns its length or 0. */
static size_t head_sign(EVP_PKEY *key, uint64_t size, uint64_t ts, const uint8_t root[H],
                        uint8_t *out)
{
	uint8_t tbs[21 + 48];
	size_t sig_len = SP_DIRLOG_HEAD_MAX - SP_DIRLOG_HEAD_FIXED;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok;

	head_tbs(size, ts, root, tbs);
	ok = md != NULL && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
	     EVP_DigestSign(md, out + SP_DIRLOG_HEAD_FIXED, &sig_len, tbs, sizeof(tbs)) == 1;
	EVP_MD_CTX_free(md);
	if (!ok || sig_len == 0 || sig_len > 0xffff)
		return 0;
	put_u64(out, size);
	put_u64(out + 8, ts);
	memcpy(out + 16, root, H);
	out[48] = (uint8_t)(sig_len >> 8);
	out[49] = (uint8_t)sig_len;
	return SP_DIRLOG_HEAD_FIXED + sig_len;
}

size_t sp_dirlog_entry_size(size_t handle_len, size_t card_len)
{
	return 21 + 1 + handle_len + 4 + card_len;
}

size_t sp_dirlog_entry_build(uint8_t *out, const char *handle, size_t handle_len,
                             const uint8_t *card, size_t card_len)
{
	uint8_t *p = out;

	if (handle_len == 0 || handle_len > SP_DIRLOG_HANDLE_MAX || card_len > UINT32_MAX)
		return 0;
	memcpy(p, SP_DIRLOG_ENTRY_LABEL, 21);
	p += 21;
	*p++ = (uint8_t)handle_len;
	memcpy(p, handle, handle_len);
	p += handle_len;
	*p++ = (uint8_t)(card_len >> 24);
	*p++ = (uint8_t)(card_len >> 16);
	*p++ = (uint8_t)(card_len >> 8);
	*p++ = (uint8_t)card_len;
	memcpy(p, card, card_len);
	return (size_t)(p - out) + card_len;
}

int sp_dirlog_entry_parse(const uint8_t *p, size_t len, const char **handle, size_t *handle_len,
                          const uint8_t **card, size_t *card_len)
{
	size_t hl, cl;

	if (p == NULL || len < 22 || memcmp(p, SP_DIRLOG_ENTRY_LABEL, 21) != 0)
		return -EBADMSG;
	hl = p[21];
	if (hl == 0 || hl > SP_DIRLOG_HANDLE_MAX || len < 22 + hl + 4)
		return -EBADMSG;
	cl = (size_t)p[22 + hl] << 24 | (size_t)p[23 + hl] << 16 | (size_t)p[24 + hl] << 8 |
	     p[25 + hl];
	if (len != 26 + hl + cl)
		return -EBADMSG;
	*handle = (const char *)p + 22;
	*handle_len = hl;
	*card = p + 26 + hl;
	*card_len = cl;
	return 0;
}

/* ---- the node cache ---------------------------------------------------------------------- */

static struct cnode *cache_find(struct op *o, unsigned level, uint64_t index)
{
	for (unsigned i = 0; i < o->n_cache; i++)
		if (o->cache[i].level == level && o->cache[i].index == index)
			return &o->cache[i];
	return NULL;
}

static void cache_put(struct op *o, unsigned level, uint64_t index, const uint8_t hash[H])
{
	struct cnode *c = cache_find(o, level, index);

	if (c == NULL && o->n_cache < CACHE_MAX) {
		c = &o->cache[o->n_cache++];
		c->level = (uint8_t)level;
		c->index = index;
	}
	if (c != NULL) {
		memcpy(c->hash, hash, H);
		c->have = 1;
	}
}

static int cache_get(void *ctx, unsigned level, uint64_t index, uint8_t out[H])
{
	struct op *o = ctx;
	struct cnode *c = cache_find(o, level, index);

	if (c != NULL && c->have) {
		memcpy(out, c->hash, H);
		return 0;
	}
	if (c == NULL) {
		if (o->n_cache >= CACHE_MAX)
			return SP_MERKLE_EINVAL;
		c = &o->cache[o->n_cache++];
		c->level = (uint8_t)level;
		c->index = index;
		c->have = 0;
		o->n_missing++;
	}
	return SP_MERKLE_NEED;
}

/* ---- ops --------------------------------------------------------------------------------- */

static void op_free(struct op *o)
{
	if (o == NULL)
		return;
	free(o->tokens);
	free(o->entry);
	free(o->lentry);
	free(o);
}

static void queue_next(sp_dirlog_t *d);

/* Answers an op and frees it. For the running append, starts the next one. */
static void op_finish(struct op *o, int status)
{
	sp_dirlog_t *d = o->d;

	o->ans.status = status;
	if (status != SP_DIRLOG_OK) {
		o->ans.head = NULL;
		o->ans.head_len = 0;
		o->ans.entry = NULL;
		o->ans.entry_len = 0;
		o->ans.proof_count = 0;
	}
	switch (status) {
	case SP_DIRLOG_OK:
		if (o->kind == OP_APPEND)
			d->c.appends++;
		else if (o->kind == OP_LOOKUP)
			d->c.lookups++;
		else
			d->c.heads++;
		break;
	case SP_DIRLOG_NOT_FOUND:
		d->c.not_found++;
		break;
	case SP_DIRLOG_KEY_CHANGED:
	case SP_DIRLOG_TOKEN_TAKEN:
	case SP_DIRLOG_STALE:
		d->c.refused++;
		break;
	default:
		d->c.failures++;
	}
	o->cb(&o->ans, o->arg);
	if (o->kind == OP_APPEND) {
		d->q_head = o->next;
		if (d->q_head == NULL)
			d->q_tail = NULL;
		d->q_len--;
		op_free(o);
		queue_next(d);
	} else {
		op_free(o);
	}
}

static void on_reply(int status, const redisReply *reply, void *arg);

/* Sends one command for the op. Returns 0, or -1 (the op is not answered: the caller does). */
static int op_try_send(struct op *o, int argc, const char *const *argv, const size_t *lens)
{
	sp_dirlog_t *d = o->d;

	if (d->closing || sp_store_command(d->store, K_SIZE, sizeof(K_SIZE) - 1, argc, argv, lens,
	                                   on_reply, o) < 0)
		return -1;
	d->live++;
	return 0;
}

/* The same from a store callback: a failure answers the op UNAVAILABLE. */
static void op_send(struct op *o, int argc, const char *const *argv, const size_t *lens)
{
	if (op_try_send(o, argc, argv, lens) < 0)
		op_finish(o, SP_DIRLOG_UNAVAILABLE);
}

/* HMGETs every node the last walk found missing. */
static void fetch_missing(struct op *o, int next_state)
{
	const char *argv[SP_STORE_MAX_ARGS];
	size_t lens[SP_STORE_MAX_ARGS];
	char names[SP_STORE_MAX_ARGS][32];
	int argc = 2;

	argv[0] = "HMGET";
	lens[0] = 5;
	argv[1] = K_NODE;
	lens[1] = sizeof(K_NODE) - 1;
	for (unsigned i = 0; i < o->n_cache && argc < SP_STORE_MAX_ARGS; i++) {
		if (o->cache[i].have)
			continue;
		lens[argc] = (size_t)snprintf(names[argc], sizeof(names[argc]), "%u:%" PRIu64,
		                              o->cache[i].level, o->cache[i].index);
		argv[argc] = names[argc];
		argc++;
	}
	o->state = next_state;
	op_send(o, argc, argv, lens);
}

/* Stores the HMGET answer in the cache, in the order fetch_missing asked. -1 if a node is
 * absent (the log is damaged) or the reply is not what was asked. */
static int take_nodes(struct op *o, const redisReply *r)
{
	size_t k = 0;

	if (r->type != REDIS_REPLY_ARRAY)
		return -1;
	for (unsigned i = 0; i < o->n_cache; i++) {
		if (o->cache[i].have)
			continue;
		if (k >= r->elements || r->element[k]->type != REDIS_REPLY_STRING ||
		    r->element[k]->len != H)
			return -1;
		memcpy(o->cache[i].hash, r->element[k]->str, H);
		o->cache[i].have = 1;
		k++;
	}
	o->d->c.node_reads += k;
	o->n_missing = 0;
	return k == r->elements ? 0 : -1;
}

static int append_try_start(struct op *o)
{
	static const char *argv[] = {"GET", K_SIZE};
	static const size_t lens[] = {3, sizeof(K_SIZE) - 1};

	o->state = ST_SIZE;
	o->n_cache = 0;
	o->n_missing = 0;
	o->attempts++;
	return op_try_send(o, 2, argv, lens);
}

static void append_start(struct op *o)
{
	if (append_try_start(o) < 0)
		op_finish(o, SP_DIRLOG_UNAVAILABLE);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	sp_dirlog_t *d = arg;

	(void)fd;
	(void)what;
	if (d->q_head != NULL)
		append_start(d->q_head);
}

static void queue_next(sp_dirlog_t *d)
{
	if (d->q_head != NULL && !d->closing)
		append_start(d->q_head);
}

/* Computes the new nodes, then the new root; fetches what is missing; then writes. */
static void append_compute(struct op *o)
{
	uint8_t root[H], head[SP_DIRLOG_HEAD_MAX], nodes[SP_MERKLE_MAX_PROOF * (1 + H)];
	char n_str[24], iat_str[24], hist[sizeof(K_HIST) + SP_DIRLOG_HANDLE_MAX];
	const char *argv[21];
	size_t lens[21], head_len, nodes_len = 0;
	int r;

	if (o->state == ST_SIZE || o->state == ST_APPEND_NODES) {
		r = sp_merkle_append(o->size, o->leaf_hash, cache_get, o, o->new_levels,
		                     o->new_hashes, &o->n_new);
		if (r == SP_MERKLE_NEED) {
			fetch_missing(o, ST_APPEND_NODES);
			return;
		}
		if (r < 0) {
			op_finish(o, SP_DIRLOG_ERROR);
			return;
		}
		for (unsigned i = 0; i < o->n_new; i++)
			cache_put(o, o->new_levels[i], o->size >> o->new_levels[i],
			          o->new_hashes[i]);
	}
	r = sp_merkle_root(o->size + 1, cache_get, o, root);
	if (r == SP_MERKLE_NEED) {
		fetch_missing(o, ST_ROOT_NODES);
		return;
	}
	if (r < 0) {
		op_finish(o, SP_DIRLOG_ERROR);
		return;
	}
	head_len = head_sign(o->d->key, o->size + 1, sp_time_wall_ms(), root, head);
	if (head_len == 0) {
		op_finish(o, SP_DIRLOG_ERROR);
		return;
	}
	memcpy(o->head, head, head_len);
	o->head_len = head_len;
	for (unsigned i = 0; i < o->n_new; i++) {
		nodes[nodes_len++] = (uint8_t)o->new_levels[i];
		memcpy(nodes + nodes_len, o->new_hashes[i], H);
		nodes_len += H;
	}
	snprintf(n_str, sizeof(n_str), "%" PRIu64, o->size);
	snprintf(iat_str, sizeof(iat_str), "%" PRIu64, o->issued_at);
	memcpy(hist, K_HIST, sizeof(K_HIST) - 1);
	memcpy(hist + sizeof(K_HIST) - 1, o->handle, o->handle_len);
	argv[0] = "EVAL", lens[0] = 4;
	argv[1] = lua_append, lens[1] = sizeof(lua_append) - 1;
	argv[2] = "10", lens[2] = 2;
	argv[3] = K_SIZE, lens[3] = sizeof(K_SIZE) - 1;
	argv[4] = K_STH, lens[4] = sizeof(K_STH) - 1;
	argv[5] = K_NODE, lens[5] = sizeof(K_NODE) - 1;
	argv[6] = K_LEAF, lens[6] = sizeof(K_LEAF) - 1;
	argv[7] = K_HANDLE, lens[7] = sizeof(K_HANDLE) - 1;
	argv[8] = K_TOK, lens[8] = sizeof(K_TOK) - 1;
	argv[9] = K_HTOK, lens[9] = sizeof(K_HTOK) - 1;
	argv[10] = hist, lens[10] = sizeof(K_HIST) - 1 + o->handle_len;
	argv[11] = K_UKEY, lens[11] = sizeof(K_UKEY) - 1;
	argv[12] = K_IAT, lens[12] = sizeof(K_IAT) - 1;
	argv[13] = n_str, lens[13] = strlen(n_str);
	argv[14] = (const char *)o->entry, lens[14] = o->entry_len;
	argv[15] = (const char *)o->head, lens[15] = o->head_len;
	argv[16] = o->handle, lens[16] = o->handle_len;
	argv[17] = (const char *)o->ukey, lens[17] = 32;
	argv[18] = (const char *)o->tokens, lens[18] = o->n_tokens * 32;
	argv[19] = iat_str, lens[19] = strlen(iat_str);
	argv[20] = (const char *)nodes, lens[20] = nodes_len;
	o->state = ST_WRITE;
	op_send(o, 21, argv, lens);
}

static void got_write(struct op *o, const redisReply *r)
{
	long long v;

	if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER) {
		op_finish(o, SP_DIRLOG_ERROR);
		return;
	}
	v = r->element[0]->integer;
	if (v == 1) {
		o->ans.index = o->size;
		o->ans.head = o->head;
		o->ans.head_len = o->head_len;
		op_finish(o, SP_DIRLOG_OK);
	} else if (v == 0) {
		if (o->attempts >= o->d->lim.max_retries) {
			op_finish(o, SP_DIRLOG_BUSY);
			return;
		}
		sp_dirlog_t *d = o->d;
		/* Lost to another writer: back off a random 0..attempts ms, so that two relays
		 * in step do not collide again at once. */
		struct timeval tv;
		uint64_t us;

		d->c.append_retries++;
		d->rng = d->rng * 6364136223846793005ULL + 1442695040888963407ULL;
		us = (d->rng >> 33) % (1000ULL * o->attempts + 1);
		tv.tv_sec = 0;
		tv.tv_usec = (suseconds_t)us;
		evtimer_add(d->retry_ev, &tv);
	} else {
		op_finish(o, v == -1   ? SP_DIRLOG_KEY_CHANGED
		             : v == -2 ? SP_DIRLOG_TOKEN_TAKEN
		                       : SP_DIRLOG_STALE);
	}
}

/* Lookup and head: the proof against the head in o->head, once nodes are in the cache. */
static void proof_compute(struct op *o)
{
	sp_dirlog_head_t h;
	int r;

	if (sp_dirlog_head_parse(o->head, o->head_len, &h) < 0) {
		op_finish(o, SP_DIRLOG_ERROR);
		return;
	}
	if (o->kind == OP_LOOKUP) {
		if (o->ans.index >= h.size) {
			op_finish(o, SP_DIRLOG_ERROR);
			return;
		}
		r = sp_merkle_inclusion_proof(o->ans.index, h.size, cache_get, o, o->ans.proof,
		                              &o->ans.proof_count);
	} else if (o->old_size == 0) {
		r = 0;
		o->ans.proof_count = 0;
	} else if (o->old_size > h.size) {
		op_finish(o, SP_DIRLOG_NOT_FOUND);
		return;
	} else {
		r = sp_merkle_consistency_proof(o->old_size, h.size, cache_get, o, o->ans.proof,
		                                &o->ans.proof_count);
	}
	if (r == SP_MERKLE_NEED) {
		fetch_missing(o, ST_PROOF_NODES);
		return;
	}
	if (r < 0) {
		op_finish(o, SP_DIRLOG_ERROR);
		return;
	}
	o->ans.head = o->head;
	o->ans.head_len = o->head_len;
	o->ans.old_size = o->old_size;
	op_finish(o, SP_DIRLOG_OK);
}

static int take_head(struct op *o, const redisReply *r)
{
	if (r->type != REDIS_REPLY_STRING || r->len > SP_DIRLOG_HEAD_MAX)
		return -1;
	memcpy(o->head, r->str, r->len);
	o->head_len = r->len;
	return 0;
}

static void got_lookup(struct op *o, const redisReply *r)
{
	const redisReply *e;

	if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER) {
		op_finish(o, SP_DIRLOG_ERROR);
		return;
	}
	if (r->element[0]->integer == 0) {
		op_finish(o, SP_DIRLOG_NOT_FOUND);
		return;
	}
	if (r->elements != 4 || r->element[1]->type != REDIS_REPLY_STRING ||
	    r->element[2]->type != REDIS_REPLY_STRING || take_head(o, r->element[3]) < 0) {
		op_finish(o, SP_DIRLOG_ERROR);
		return;
	}
	o->ans.index = strtoull(r->element[1]->str, NULL, 10);
	e = r->element[2];
	o->lentry = malloc(e->len ? e->len : 1);
	if (o->lentry == NULL) {
		op_finish(o, SP_DIRLOG_ERROR);
		return;
	}
	memcpy(o->lentry, e->str, e->len);
	o->ans.entry = o->lentry;
	o->ans.entry_len = e->len;
	proof_compute(o);
}

static void on_reply(int status, const redisReply *reply, void *arg)
{
	struct op *o = arg;
	sp_dirlog_t *d = o->d;

	d->live--;
	if (d->closing || status == SP_STORE_UNAVAILABLE) {
		op_finish(o, SP_DIRLOG_UNAVAILABLE);
	} else if (status != SP_STORE_OK || reply == NULL) {
		if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
			SP_LOG(SP_LOG_WARN, "dirlog_error", "reply=\"%.*s\"",
			       (int)(reply->len > 200 ? 200 : reply->len), reply->str);
		op_finish(o, SP_DIRLOG_ERROR);
	} else {
		switch (o->state) {
		case ST_SIZE:
			if (reply->type == REDIS_REPLY_NIL) {
				o->size = 0;
			} else if (reply->type == REDIS_REPLY_STRING) {
				o->size = strtoull(reply->str, NULL, 10);
			} else {
				op_finish(o, SP_DIRLOG_ERROR);
				break;
			}
			append_compute(o);
			break;
		case ST_APPEND_NODES:
		case ST_ROOT_NODES:
			if (take_nodes(o, reply) < 0)
				op_finish(o, SP_DIRLOG_ERROR);
			else
				append_compute(o);
			break;
		case ST_WRITE:
			got_write(o, reply);
			break;
		case ST_LOOKUP:
			got_lookup(o, reply);
			break;
		case ST_HEAD:
			if (reply->type == REDIS_REPLY_NIL)
				op_finish(o, SP_DIRLOG_NOT_FOUND);
			else if (take_head(o, reply) < 0)
				op_finish(o, SP_DIRLOG_ERROR);
			else
				proof_compute(o);
			break;
		case ST_PROOF_NODES:
			if (take_nodes(o, reply) < 0)
				op_finish(o, SP_DIRLOG_ERROR);
			else
				proof_compute(o);
			break;
		default:
			op_finish(o, SP_DIRLOG_ERROR);
		}
	}
	if (d->closing && d->live == 0) {
		event_free(d->retry_ev);
		EVP_PKEY_free(d->key);
		free(d);
	}
}

/* ---- the API ----------------------------------------------------------------------------- */

sp_dirlog_t *sp_dirlog_new(struct event_base *base, sp_store_t *store, EVP_PKEY *log_key,
                           const sp_dirlog_limits_t *lim)
{
	sp_dirlog_t *d;

	if (base == NULL || store == NULL || log_key == NULL || !EVP_PKEY_is_a(log_key, "EC") ||
	    (lim != NULL && lim->max_retries == 0))
		return NULL;
	d = calloc(1, sizeof(*d));
	if (d == NULL)
		return NULL;
	if (lim != NULL)
		d->lim = *lim;
	else
		sp_dirlog_limits_default(&d->lim);
	d->retry_ev = evtimer_new(base, on_retry, d);
	if (d->retry_ev == NULL || !EVP_PKEY_up_ref(log_key)) {
		if (d->retry_ev != NULL)
			event_free(d->retry_ev);
		free(d);
		return NULL;
	}
	d->rng = (uint64_t)(uintptr_t)d ^ sp_time_mono_ms();
	d->store = store;
	d->key = log_key;
	return d;
}

void sp_dirlog_free(sp_dirlog_t *d)
{
	struct op *o, *next;

	if (d == NULL)
		return;
	d->closing = 1;
	/* An append waiting out its back-off has no request out: it is answered now. */
	if (d->q_head != NULL && evtimer_pending(d->retry_ev, NULL)) {
		evtimer_del(d->retry_ev);
		d->q_head->ans.status = SP_DIRLOG_UNAVAILABLE;
		d->c.failures++;
		d->q_head->cb(&d->q_head->ans, d->q_head->arg);
		o = d->q_head;
		d->q_head = o->next;
		op_free(o);
		while ((o = d->q_head) != NULL) {
			d->q_head = o->next;
			o->ans.status = SP_DIRLOG_UNAVAILABLE;
			d->c.failures++;
			o->cb(&o->ans, o->arg);
			op_free(o);
		}
	}
	/* The queue's head is running (it has a request out) and is answered when the store gives
	 * that request back, as lookups are; the appends behind it are answered now. */
	o = d->q_head != NULL ? d->q_head->next : NULL;
	if (d->q_head != NULL) {
		d->q_head->next = NULL;
		d->q_tail = d->q_head;
	}
	while (o != NULL) {
		next = o->next;
		o->ans.status = SP_DIRLOG_UNAVAILABLE;
		d->c.failures++;
		o->cb(&o->ans, o->arg);
		op_free(o);
		o = next;
	}
	if (d->live == 0) {
		event_free(d->retry_ev);
		EVP_PKEY_free(d->key);
		free(d);
	}
}

static struct op *op_new(sp_dirlog_t *d, int kind, sp_dirlog_cb cb, void *arg)
{
	struct op *o;

	if (d == NULL || cb == NULL || d->closing)
		return NULL;
	o = calloc(1, sizeof(*o));
	if (o == NULL)
		return NULL;
	o->d = d;
	o->kind = kind;
	o->cb = cb;
	o->arg = arg;
	return o;
}

int sp_dirlog_append(sp_dirlog_t *d, const char *handle, size_t handle_len,
                     const uint8_t ukey_fp[32], const uint8_t (*tokens)[32], size_t n_tokens,
                     uint64_t issued_at, const uint8_t *entry, size_t entry_len, sp_dirlog_cb cb,
                     void *arg)
{
	struct op *o;

	if (d == NULL || handle == NULL || handle_len == 0 || handle_len > SP_DIRLOG_HANDLE_MAX ||
	    ukey_fp == NULL || tokens == NULL || n_tokens == 0 ||
	    n_tokens > SP_DIRLOG_MAX_DEVICES || entry == NULL || entry_len == 0 || cb == NULL ||
	    issued_at > (UINT64_C(1) << 53))
		return -EINVAL;
	if (d->q_len >= d->lim.max_queue)
		return -EBUSY;
	o = op_new(d, OP_APPEND, cb, arg);
	if (o == NULL)
		return d->closing ? -ESHUTDOWN : -ENOMEM;
	o->tokens = malloc(n_tokens * 32);
	o->entry = malloc(entry_len);
	if (o->tokens == NULL || o->entry == NULL ||
	    sp_merkle_leaf_hash(entry, entry_len, o->leaf_hash) < 0) {
		op_free(o);
		return -ENOMEM;
	}
	memcpy(o->handle, handle, handle_len);
	o->handle_len = handle_len;
	memcpy(o->ukey, ukey_fp, 32);
	memcpy(o->tokens, tokens, n_tokens * 32);
	o->n_tokens = n_tokens;
	o->issued_at = issued_at;
	memcpy(o->entry, entry, entry_len);
	o->entry_len = entry_len;
	if (d->q_tail != NULL)
		d->q_tail->next = o;
	else
		d->q_head = o;
	d->q_tail = o;
	d->q_len++;
	if (d->q_head == o && append_try_start(o) < 0) {
		d->q_head = d->q_tail = NULL;
		d->q_len = 0;
		op_free(o);
		return -EAGAIN;
	}
	return 0;
}

int sp_dirlog_lookup(sp_dirlog_t *d, const char *handle, size_t handle_len, const uint8_t token[32],
                     sp_dirlog_cb cb, void *arg)
{
	const char *argv[9];
	size_t lens[9];
	struct op *o;

	if ((handle == NULL) == (token == NULL) ||
	    (handle != NULL && (handle_len == 0 || handle_len > SP_DIRLOG_HANDLE_MAX)))
		return -EINVAL;
	o = op_new(d, OP_LOOKUP, cb, arg);
	if (o == NULL)
		return -ENOMEM;
	argv[0] = "EVAL", lens[0] = 4;
	argv[1] = lua_lookup, lens[1] = sizeof(lua_lookup) - 1;
	argv[2] = "4", lens[2] = 1;
	argv[3] = K_STH, lens[3] = sizeof(K_STH) - 1;
	argv[4] = K_HANDLE, lens[4] = sizeof(K_HANDLE) - 1;
	argv[5] = K_TOK, lens[5] = sizeof(K_TOK) - 1;
	argv[6] = K_LEAF, lens[6] = sizeof(K_LEAF) - 1;
	argv[7] = token != NULL ? "t" : "h", lens[7] = 1;
	argv[8] = token != NULL ? (const char *)token : handle, lens[8] = token ? 32 : handle_len;
	o->state = ST_LOOKUP;
	if (op_try_send(o, 9, argv, lens) < 0) {
		op_free(o);
		return -EAGAIN;
	}
	return 0;
}

int sp_dirlog_head(sp_dirlog_t *d, uint64_t old_size, sp_dirlog_cb cb, void *arg)
{
	static const char *argv[] = {"GET", K_STH};
	static const size_t lens[] = {3, sizeof(K_STH) - 1};
	struct op *o = op_new(d, OP_HEAD, cb, arg);

	if (o == NULL)
		return -ENOMEM;
	o->old_size = old_size;
	o->state = ST_HEAD;
	if (op_try_send(o, 2, argv, lens) < 0) {
		op_free(o);
		return -EAGAIN;
	}
	return 0;
}
