/*
 * sp_dirlog.c: the directory's transparency log in Redis (see sp_dirlog.h, PROTOCOL.md 15.5).
 *
 * Keys, all with the hash tag {dir} (one Redis Cluster slot):
 *   sp:{dir}:size      string: the number of leaves
 *   sp:{dir}:sth       string: the latest signed tree head (wire form)
 *   sp:{dir}:node      hash: "LEVEL:INDEX" -> 32-byte hash of that perfect node (level 0: the
 *                      leaf hashes)
 *   sp:{dir}:leaf      hash: "INDEX" -> the leaf's bytes (a log entry)
 *   sp:{dir}:handle    hash: handle -> index of its latest entry
 *   sp:{dir}:tok       hash: device token (32 bytes) -> the handle whose card lists it
 *   sp:{dir}:htok      hash: handle -> the tokens of its latest card, concatenated
 *   sp:{dir}:hist      hash: handle -> every index of its entries, "I,J,...,"
 *   sp:{dir}:ukey      hash: handle -> SHA-256 of its user key's SPKI
 *   sp:{dir}:iat       hash: handle -> issued_at of its latest card
 *
 * Appends. They wait in one queue per sp_dirlog_t. A batch is the first (up to BATCH_MAX)
 * appends of the queue: GET the size n; compute every node the batch completes and the root of
 * n + k, reading the older nodes they need (one HMGET: a first pass notes them all); sign one
 * head for n + k; one script checks every entry (in order, as the earlier ones of the batch
 * leave the directory) and writes them all, or nothing if the size moved (retry after a random
 * back-off) or an entry is refused (that one is answered, the rest go again at once).
 *
 * Lookups and head requests are ops of their own (struct op), each with one request out at a
 * time, moved on by on_reply().
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
#include "sp_script.h"
#include "sp_time.h"

#define K_SIZE    "sp:{dir}:size"
#define K_STH     "sp:{dir}:sth"
#define K_NODE    "sp:{dir}:node"
#define K_LEAF    "sp:{dir}:leaf"
#define K_HANDLE  "sp:{dir}:handle"
#define K_TOK     "sp:{dir}:tok"
#define K_HTOK    "sp:{dir}:htok"
#define K_HIST    "sp:{dir}:hist"
#define K_UKEY    "sp:{dir}:ukey"
#define K_IAT     "sp:{dir}:iat"

#define H         SP_MERKLE_HASH_LEN
#define BATCH_MAX 128 /* appends per script */
#define META_MAX                                                                                   \
	(1 + SP_DIRLOG_HANDLE_MAX + 32 + 8 + 1 + 32 * SP_DIRLOG_MAX_DEVICES + 1 +                  \
	 SP_MERKLE_MAX_PROOF * (1 + H))

/* The append script. KEYS size sth node leaf handle tok htok hist ukey iat; ARGV n, k, head,
 * and the batch: per entry entry_len u32 | entry | meta_len u16 | meta, where the meta is
 * handle_len u8 | handle | ukey[32] | issued_at u64 |
 * n_tokens u8 | tokens | nodes (level u8 | hash[32] each; node index (n + j) >> level).
 * Returns {1, n} when all k are written; {0, size} when the size is not n; {-1, j} entry j's
 * handle has another user key; {-2, j} one of its tokens is another handle's; {-3, j} its
 * issued_at is not later than the handle's last. Nothing is written unless all pass. */
static const char lua_append[] =
        "local n = tonumber(ARGV[1])\n"
        "local k = tonumber(ARGV[2])\n"
        "local cur = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
        "if cur ~= n then return {0, cur} end\n"
        "local E = {}\n"
        "local b = ARGV[4]\n"
        "local q = 1\n"
        "for j = 1, k do\n"
        "  local b1, b2, b3, b4 = string.byte(b, q, q + 3)\n"
        "  local el = ((b1 * 256 + b2) * 256 + b3) * 256 + b4\n"
        "  local entry = string.sub(b, q + 4, q + 3 + el)\n"
        "  q = q + 4 + el\n"
        "  local m1, m2 = string.byte(b, q, q + 1)\n"
        "  local m = string.sub(b, q + 2, q + 1 + m1 * 256 + m2)\n"
        "  q = q + 2 + m1 * 256 + m2\n"
        "  local hl = string.byte(m, 1)\n"
        "  local e = {entry = entry, h = string.sub(m, 2, 1 + hl)}\n"
        "  local p = 2 + hl\n"
        "  e.uk = string.sub(m, p, p + 31)\n"
        "  p = p + 32\n"
        "  local iat = 0\n"
        "  for q = 0, 7 do iat = iat * 256 + string.byte(m, p + q) end\n"
        "  e.iat = iat\n"
        "  p = p + 8\n"
        "  local nt = string.byte(m, p)\n"
        "  e.toks = string.sub(m, p + 1, p + 32 * nt)\n"
        "  e.nodes = string.sub(m, p + 1 + 32 * nt)\n"
        "  E[j] = e\n"
        "end\n"
        "local uk, iv, owner, htok = {}, {}, {}, {}\n"
        "for j = 1, k do\n"
        "  local e = E[j]\n"
        "  local h = e.h\n"
        "  if uk[h] == nil then uk[h] = redis.call('HGET', KEYS[9], h) or false end\n"
        "  if uk[h] and uk[h] ~= e.uk then return {-1, j} end\n"
        "  if iv[h] == nil then iv[h] = tonumber(redis.call('HGET', KEYS[10], h) or '-1') end\n"
        "  if iv[h] >= e.iat then return {-3, j} end\n"
        "  if htok[h] == nil then htok[h] = redis.call('HGET', KEYS[7], h) or '' end\n"
        "  local new = {}\n"
        "  for i = 1, #e.toks, 32 do\n"
        "    local t = string.sub(e.toks, i, i + 31)\n"
        "    if owner[t] == nil then owner[t] = redis.call('HGET', KEYS[6], t) or false end\n"
        "    if owner[t] and owner[t] ~= h then return {-2, j} end\n"
        "    new[t] = true\n"
        "  end\n"
        "  for i = 1, #htok[h], 32 do\n"
        "    local t = string.sub(htok[h], i, i + 31)\n"
        "    if not new[t] then owner[t] = false end\n"
        "  end\n"
        "  for t in pairs(new) do owner[t] = h end\n"
        "  htok[h] = e.toks\n"
        "  uk[h] = e.uk\n"
        "  iv[h] = e.iat\n"
        "end\n"
        "for j = 1, k do\n"
        "  local e = E[j]\n"
        "  local h = e.h\n"
        "  local idx = n + j - 1\n"
        "  local s = string.format('%d', idx)\n"
        "  local old = redis.call('HGET', KEYS[7], h)\n"
        "  if old then\n"
        "    for i = 1, #old, 32 do redis.call('HDEL', KEYS[6], string.sub(old, i, i + 31)) end\n"
        "  end\n"
        "  for i = 1, #e.toks, 32 do redis.call('HSET', KEYS[6], string.sub(e.toks, i, i + 31), h) "
        "end\n"
        "  redis.call('HSET', KEYS[7], h, e.toks)\n"
        "  redis.call('HSET', KEYS[9], h, e.uk)\n"
        "  redis.call('HSET', KEYS[10], h, string.format('%d', e.iat))\n"
        "  redis.call('HSET', KEYS[5], h, s)\n"
        "  redis.call('HSET', KEYS[8], h, (redis.call('HGET', KEYS[8], h) or '') .. s .. ',')\n"
        "  redis.call('HSET', KEYS[4], s, e.entry)\n"
        "  for i = 1, #e.nodes, 33 do\n"
        "    local lv = string.byte(e.nodes, i)\n"
        "    redis.call('HSET', KEYS[3], string.format('%d:%d', lv, math.floor(idx / (2 ^ lv))),\n"
        "               string.sub(e.nodes, i + 1, i + 32))\n"
        "  end\n"
        "end\n"
        "redis.call('SET', KEYS[2], ARGV[3])\n"
        "redis.call('SET', KEYS[1], string.format('%d', n + k))\n"
        "return {1, n}\n";

/* The requester's rate check, first in the lookup and head scripts: KEYS[1] its counter,
 * ARGV[1] the limit (0: none), ARGV[2] the window in ms. */
#define LUA_RATE                                                                                   \
	"local lim = tonumber(ARGV[1])\n"                                                          \
	"if lim > 0 then\n"                                                                        \
	"  local n = redis.call('INCR', KEYS[1])\n"                                                \
	"  if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end\n"                           \
	"  if n > lim then return {-1, redis.call('PTTL', KEYS[1])} end\n"                         \
	"end\n"

/* The lookup script: KEYS rate sth handle tok leaf; ARGV limit, window, mode ("h" or "t"),
 * handle or token. Returns {-1, ms} (over the rate), {0} (none) or {1, index, entry, head},
 * read together. */
static const char lua_lookup[] =
        LUA_RATE "local h = ARGV[4]\n"
                 "if ARGV[3] == 't' then\n"
                 "  h = redis.call('HGET', KEYS[4], ARGV[4])\n"
                 "  if not h then return {0} end\n"
                 "end\n"
                 "local i = redis.call('HGET', KEYS[3], h)\n"
                 "if not i then return {0} end\n"
                 "return {1, i, redis.call('HGET', KEYS[5], i), redis.call('GET', KEYS[2])}\n";

/* The history script: KEYS rate sth tok hist leaf; ARGV limit, window, the requester's token,
 * after ("-1": from the first). The handle is the one whose card lists the token; the answer
 * its first entry with an index above `after`: {1, index, entry, head, entries after it}, or
 * {0} (no handle, or no entry after `after`). */
static const char lua_history[] = LUA_RATE
        "local h = redis.call('HGET', KEYS[3], ARGV[3])\n"
        "if not h then return {0} end\n"
        "local after = tonumber(ARGV[4])\n"
        "local found, left = nil, 0\n"
        "for s in string.gmatch(redis.call('HGET', KEYS[4], h) or '', '(%d+),') do\n"
        "  local i = tonumber(s)\n"
        "  if found then left = left + 1\n"
        "  elseif i > after then found = s end\n"
        "end\n"
        "if not found then return {0} end\n"
        "return {1, found, redis.call('HGET', KEYS[5], found), redis.call('GET', KEYS[2]),\n"
        "        left}\n";

/* The head script: KEYS rate sth; ARGV limit, window. Returns {-1, ms}, {0} or {1, head}. */
static const char lua_head[] = LUA_RATE "local h = redis.call('GET', KEYS[2])\n"
                                        "if not h then return {0} end\n"
                                        "return {1, h}\n";

enum { OP_APPEND, OP_LOOKUP, OP_HEAD };
enum { ST_SIZE, ST_NODES, ST_WRITE, ST_LOOKUP, ST_PROOF_NODES, ST_HEAD };

struct cnode {
	uint8_t level, have;
	uint64_t index;
	uint8_t hash[H];
};

/* Nodes one computation has read (or made), and how many it found missing. Nodes below
 * `complete` leaves can be read from Redis; any other must be made by the computation. */
struct ncache {
	unsigned n, cap, missing;
	uint64_t complete;
	struct cnode *v;
	sp_dirlog_counters_t *c;
};

struct op {
	sp_dirlog_t *d;
	int kind, state;
	sp_dirlog_cb cb;
	void *arg;
	struct op *next; /* append queue */
	/* append */
	uint8_t *entry;
	size_t entry_len;
	uint8_t meta[META_MAX];
	size_t meta_len, meta_nodes; /* meta_nodes: where the nodes start in meta */
	uint8_t leaf_hash[H];
	/* lookup, head */
	uint64_t old_size;
	sp_dirlog_answer_t ans;
	uint8_t head[SP_DIRLOG_HEAD_MAX];
	size_t head_len;
	uint8_t *lentry;
	struct ncache nc;
};

struct sp_dirlog {
	sp_store_t *store;
	EVP_PKEY *key;
	sp_dirlog_limits_t lim;
	struct event *retry_ev; /* the batch waits out its back-off */
	uint64_t rng;
	struct op *q_head, *q_tail; /* appends in call order; the first ones form the batch */
	size_t q_len;
	/* the batch */
	int b_state;
	int b_out; /* 1 while a batch request is out in the store */
	unsigned b_n, b_attempts;
	uint64_t b_size;
	struct op *b_ops[BATCH_MAX];
	uint8_t *b_blob; /* the entries and metas of the batch, as the script takes them */
	uint8_t b_head[SP_DIRLOG_HEAD_MAX];
	size_t b_head_len;
	struct ncache b_nc;
	sp_script_t sc_append, sc_lookup, sc_head, sc_history; /* by SHA1 (sp_script.h) */
	unsigned live; /* requests out in the store (ops and the batch) */
	int closing;
	sp_dirlog_counters_t c;
};

const char *sp_dirlog_status_name(int status)
{
	static const char *const names[] = {"ok",          "not found", "key changed",
	                                    "token taken", "stale",     "busy",
	                                    "unavailable", "error",     "limited"};

	return status >= 0 && status <= SP_DIRLOG_LIMITED ? names[status] : "unknown";
}

const char *sp_dirlog_script(const char *name)
{
	if (strcmp(name, "append") == 0)
		return lua_append;
	if (strcmp(name, "lookup") == 0)
		return lua_lookup;
	if (strcmp(name, "head") == 0)
		return lua_head;
	if (strcmp(name, "history") == 0)
		return lua_history;
	return NULL;
}

void sp_dirlog_limits_default(sp_dirlog_limits_t *lim)
{
	lim->max_retries = 64;
	lim->max_queue = 1024;
	lim->lookup_limit = 60;
	lim->lookup_window_ms = 60000;
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

static struct cnode *cache_find(struct ncache *nc, unsigned level, uint64_t index)
{
	for (unsigned i = 0; i < nc->n; i++)
		if (nc->v[i].level == level && nc->v[i].index == index)
			return &nc->v[i];
	return NULL;
}

static struct cnode *cache_add(struct ncache *nc, unsigned level, uint64_t index)
{
	struct cnode *c;

	if (nc->n == nc->cap) {
		unsigned cap = nc->cap ? nc->cap * 2 : 64;
		void *p = cap <= 4096 ? realloc(nc->v, cap * sizeof(*nc->v)) : NULL;

		if (p == NULL)
			return NULL;
		nc->v = p;
		nc->cap = cap;
	}
	c = &nc->v[nc->n++];
	c->level = (uint8_t)level;
	c->index = index;
	c->have = 0;
	return c;
}

static int cache_put(struct ncache *nc, unsigned level, uint64_t index, const uint8_t hash[H])
{
	struct cnode *c = cache_find(nc, level, index);

	if (c == NULL && (c = cache_add(nc, level, index)) == NULL)
		return -1;
	memcpy(c->hash, hash, H);
	c->have = 1;
	return 0;
}

static int cache_get(void *ctx, unsigned level, uint64_t index, uint8_t out[H])
{
	struct ncache *nc = ctx;
	struct cnode *c = cache_find(nc, level, index);

	if (c != NULL && c->have) {
		memcpy(out, c->hash, H);
		return 0;
	}
	if (level >= 64 || index >= (nc->complete >> level) || (index + 1) << level > nc->complete)
		return SP_MERKLE_EINVAL; /* not stored yet: the computation should have made it */
	if (c == NULL) {
		if (cache_add(nc, level, index) == NULL)
			return SP_MERKLE_EINVAL;
		nc->missing++;
	}
	return SP_MERKLE_NEED;
}

static void cache_reset(struct ncache *nc, uint64_t complete)
{
	nc->n = 0;
	nc->missing = 0;
	nc->complete = complete;
}

/* HMGET of the missing nodes (at most SP_STORE_MAX_ARGS - 2 at a time; a computation that
 * needs more asks again). Fills argv/lens/names; returns argc. */
static int missing_command(struct ncache *nc, const char **argv, size_t *lens, char (*names)[32])
{
	int argc = 2;

	argv[0] = "HMGET";
	lens[0] = 5;
	argv[1] = K_NODE;
	lens[1] = sizeof(K_NODE) - 1;
	for (unsigned i = 0; i < nc->n && argc < SP_STORE_MAX_ARGS; i++) {
		if (nc->v[i].have)
			continue;
		lens[argc] = (size_t)snprintf(names[argc], 32, "%u:%" PRIu64, nc->v[i].level,
		                              nc->v[i].index);
		argv[argc] = names[argc];
		argc++;
	}
	return argc;
}

/* Stores an HMGET answer in the cache, in the order missing_command asked. -1 if a node is
 * absent (the log is damaged) or the reply is not what was asked. */
static int take_nodes(struct ncache *nc, const redisReply *r)
{
	size_t k = 0;

	if (r->type != REDIS_REPLY_ARRAY)
		return -1;
	for (unsigned i = 0; i < nc->n && k < r->elements; i++) {
		if (nc->v[i].have)
			continue;
		if (r->element[k]->type != REDIS_REPLY_STRING || r->element[k]->len != H)
			return -1;
		memcpy(nc->v[i].hash, r->element[k]->str, H);
		nc->v[i].have = 1;
		k++;
	}
	nc->c->node_reads += k;
	nc->missing = 0;
	return k == r->elements && k > 0 ? 0 : -1;
}

/* ---- answering --------------------------------------------------------------------------- */

static void op_free(struct op *o)
{
	if (o == NULL)
		return;
	free(o->entry);
	free(o->lentry);
	free(o->nc.v);
	free(o);
}

static void count_status(sp_dirlog_t *d, int kind, int status)
{
	switch (status) {
	case SP_DIRLOG_OK:
		if (kind == OP_APPEND)
			d->c.appends++;
		else if (kind == OP_LOOKUP)
			d->c.lookups++;
		else
			d->c.heads++;
		break;
	case SP_DIRLOG_NOT_FOUND:
		d->c.not_found++;
		break;
	case SP_DIRLOG_LIMITED:
		d->c.limited++;
		break;
	case SP_DIRLOG_KEY_CHANGED:
	case SP_DIRLOG_TOKEN_TAKEN:
	case SP_DIRLOG_STALE:
		d->c.refused++;
		break;
	default:
		d->c.failures++;
	}
}

/* Answers an op (any kind) and frees it; an append must already be out of the queue. */
static void op_finish(struct op *o, int status)
{
	o->ans.status = status;
	if (status != SP_DIRLOG_OK) {
		o->ans.head = NULL;
		o->ans.head_len = 0;
		o->ans.entry = NULL;
		o->ans.entry_len = 0;
		o->ans.proof_count = 0;
	}
	count_status(o->d, o->kind, status);
	o->cb(&o->ans, o->arg);
	op_free(o);
}

static void queue_unlink(sp_dirlog_t *d, struct op *o)
{
	struct op **pp = &d->q_head, *prev = NULL;

	while (*pp != NULL && *pp != o) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	if (*pp == NULL)
		return;
	*pp = o->next;
	if (d->q_tail == o)
		d->q_tail = prev;
	o->next = NULL;
	d->q_len--;
}

static void dirlog_release(sp_dirlog_t *d)
{
	event_free(d->retry_ev);
	EVP_PKEY_free(d->key);
	free(d->b_nc.v);
	free(d->b_blob);
	free(d);
}

/* ---- appends ----------------------------------------------------------------------------- */

static void on_batch_reply(int status, const redisReply *reply, void *arg);
static void batch_start(sp_dirlog_t *d);

/* Sends a plain command, or with sc the script sc with argv (numkeys, keys, arguments). */
static int batch_send(sp_dirlog_t *d, const sp_script_t *sc, int argc, const char *const *argv,
                      const size_t *lens)
{
	if (d->closing || (sc != NULL ? sp_script_eval(d->store, sc, K_SIZE, sizeof(K_SIZE) - 1,
	                                               argc, argv, lens, on_batch_reply, d)
	                              : sp_store_command(d->store, K_SIZE, sizeof(K_SIZE) - 1, argc,
	                                                 argv, lens, on_batch_reply, d)) < 0)
		return -1;
	d->live++;
	d->b_out = 1;
	return 0;
}

/* Answers every append of the batch with status (OK: each its index and the batch's head). */
static void batch_finish(sp_dirlog_t *d, int status)
{
	for (unsigned i = 0; i < d->b_n; i++) {
		struct op *o = d->b_ops[i];

		queue_unlink(d, o);
		if (status == SP_DIRLOG_OK) {
			o->ans.index = d->b_size + i;
			o->ans.head = d->b_head;
			o->ans.head_len = d->b_head_len;
		}
		op_finish(o, status);
	}
	d->b_n = 0;
	d->b_attempts = 0;
}

static void batch_fail(sp_dirlog_t *d, int status)
{
	batch_finish(d, status);
	batch_start(d);
}

/* Computes the batch's nodes and root; fetches the old nodes it lacks; then writes. */
static void batch_compute(sp_dirlog_t *d)
{
	static char names[SP_STORE_MAX_ARGS][32];
	const char *argv[SP_STORE_MAX_ARGS];
	size_t lens[SP_STORE_MAX_ARGS];
	uint8_t root[H];
	char n_str[24], k_str[8];
	int need = 0, r, argc;

	d->b_nc.missing = 0;
	for (unsigned i = 0; i < d->b_n; i++) {
		struct op *o = d->b_ops[i];
		uint64_t idx = d->b_size + i;
		unsigned levels[SP_MERKLE_MAX_PROOF], cnt = 0;
		uint8_t hashes[SP_MERKLE_MAX_PROOF][H];
		uint8_t *p = o->meta + o->meta_nodes;

		r = sp_merkle_append(idx, o->leaf_hash, cache_get, &d->b_nc, levels, hashes, &cnt);
		if (r == SP_MERKLE_NEED)
			need = 1;
		else if (r < 0)
			goto fail;
		for (unsigned j = 0; j < cnt; j++) {
			if (cache_put(&d->b_nc, levels[j], idx >> levels[j], hashes[j]) < 0)
				goto fail;
			*p++ = (uint8_t)levels[j];
			memcpy(p, hashes[j], H);
			p += H;
		}
		o->meta_len = (size_t)(p - o->meta);
	}
	r = sp_merkle_root(d->b_size + d->b_n, cache_get, &d->b_nc, root);
	if (r == SP_MERKLE_NEED)
		need = 1;
	else if (r < 0)
		goto fail;
	if (need) {
		argc = missing_command(&d->b_nc, argv, lens, names);
		d->b_state = ST_NODES;
		if (batch_send(d, NULL, argc, argv, lens) < 0)
			batch_fail(d, SP_DIRLOG_UNAVAILABLE);
		return;
	}
	d->b_head_len = head_sign(d->key, d->b_size + d->b_n, sp_time_wall_ms(), root, d->b_head);
	if (d->b_head_len == 0)
		goto fail;
	snprintf(n_str, sizeof(n_str), "%" PRIu64, d->b_size);
	snprintf(k_str, sizeof(k_str), "%u", d->b_n);
	argv[0] = "10", lens[0] = 2;
	argv[1] = K_SIZE, lens[1] = sizeof(K_SIZE) - 1;
	argv[2] = K_STH, lens[2] = sizeof(K_STH) - 1;
	argv[3] = K_NODE, lens[3] = sizeof(K_NODE) - 1;
	argv[4] = K_LEAF, lens[4] = sizeof(K_LEAF) - 1;
	argv[5] = K_HANDLE, lens[5] = sizeof(K_HANDLE) - 1;
	argv[6] = K_TOK, lens[6] = sizeof(K_TOK) - 1;
	argv[7] = K_HTOK, lens[7] = sizeof(K_HTOK) - 1;
	argv[8] = K_HIST, lens[8] = sizeof(K_HIST) - 1;
	argv[9] = K_UKEY, lens[9] = sizeof(K_UKEY) - 1;
	argv[10] = K_IAT, lens[10] = sizeof(K_IAT) - 1;
	argv[11] = n_str, lens[11] = strlen(n_str);
	argv[12] = k_str, lens[12] = strlen(k_str);
	argv[13] = (const char *)d->b_head, lens[13] = d->b_head_len;
	{
		size_t total = 0;
		uint8_t *p;

		for (unsigned i = 0; i < d->b_n; i++)
			total += 4 + d->b_ops[i]->entry_len + 2 + d->b_ops[i]->meta_len;
		free(d->b_blob);
		d->b_blob = p = malloc(total ? total : 1);
		if (p == NULL)
			goto fail;
		for (unsigned i = 0; i < d->b_n; i++) {
			const struct op *o = d->b_ops[i];

			*p++ = (uint8_t)(o->entry_len >> 24);
			*p++ = (uint8_t)(o->entry_len >> 16);
			*p++ = (uint8_t)(o->entry_len >> 8);
			*p++ = (uint8_t)o->entry_len;
			memcpy(p, o->entry, o->entry_len);
			p += o->entry_len;
			*p++ = (uint8_t)(o->meta_len >> 8);
			*p++ = (uint8_t)o->meta_len;
			memcpy(p, o->meta, o->meta_len);
			p += o->meta_len;
		}
		argv[14] = (const char *)d->b_blob;
		lens[14] = total;
		argc = 15;
	}
	d->b_state = ST_WRITE;
	if (batch_send(d, &d->sc_append, argc, argv, lens) < 0)
		batch_fail(d, SP_DIRLOG_UNAVAILABLE);
	return;
fail:
	batch_fail(d, SP_DIRLOG_ERROR);
}

/* Starts a batch from the head of the queue, unless one is running or nothing waits. */
static void batch_start(sp_dirlog_t *d)
{
	static const char *argv[] = {"GET", K_SIZE};
	static const size_t lens[] = {3, sizeof(K_SIZE) - 1};
	struct op *o = d->q_head;

	if (d->closing || d->b_out || d->b_n > 0 || o == NULL || evtimer_pending(d->retry_ev, NULL))
		return;
	while (o != NULL && d->b_n < BATCH_MAX) {
		d->b_ops[d->b_n++] = o;
		o = o->next;
	}
	d->b_attempts++;
	d->b_state = ST_SIZE;
	if (batch_send(d, NULL, 2, argv, lens) < 0)
		batch_finish(d, SP_DIRLOG_UNAVAILABLE); /* closing: nothing else will start */
}

/* Goes again with the same appends (after a lost race, or without one refused entry). */
static void batch_again(sp_dirlog_t *d, int backoff)
{
	struct timeval tv = {0, 0};
	uint64_t us;

	if (d->b_attempts >= d->lim.max_retries) {
		batch_fail(d, SP_DIRLOG_BUSY);
		return;
	}
	d->b_n = 0; /* batch_start takes them (and any that came since) again from the queue */
	if (!backoff) {
		batch_start(d);
		return;
	}
	/* Lost to another writer: back off a random 0..attempts ms, so that writers in step do
	 * not collide again at once. */
	d->c.append_retries++;
	d->rng = d->rng * 6364136223846793005ULL + 1442695040888963407ULL;
	us = (d->rng >> 33) % (1000ULL * d->b_attempts + 1);
	tv.tv_usec = (suseconds_t)us;
	evtimer_add(d->retry_ev, &tv);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	batch_start(arg);
}

static void got_batch_write(sp_dirlog_t *d, const redisReply *r)
{
	long long v, j;

	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER ||
	    r->element[1]->type != REDIS_REPLY_INTEGER) {
		batch_fail(d, SP_DIRLOG_ERROR);
		return;
	}
	v = r->element[0]->integer;
	j = r->element[1]->integer;
	if (v == 1) {
		batch_finish(d, SP_DIRLOG_OK);
		batch_start(d);
	} else if (v == 0) {
		batch_again(d, 1);
	} else if (j >= 1 && j <= d->b_n) {
		struct op *o = d->b_ops[j - 1];

		queue_unlink(d, o);
		op_finish(o, v == -1   ? SP_DIRLOG_KEY_CHANGED
		             : v == -2 ? SP_DIRLOG_TOKEN_TAKEN
		                       : SP_DIRLOG_STALE);
		batch_again(d, 0);
	} else {
		batch_fail(d, SP_DIRLOG_ERROR);
	}
}

static void on_batch_reply(int status, const redisReply *reply, void *arg)
{
	sp_dirlog_t *d = arg;

	d->live--;
	d->b_out = 0;
	if (d->closing || status == SP_STORE_UNAVAILABLE) {
		batch_finish(d, SP_DIRLOG_UNAVAILABLE);
		if (!d->closing)
			batch_start(d);
	} else if (status != SP_STORE_OK || reply == NULL) {
		if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
			SP_LOG(SP_LOG_WARN, "dirlog_error", "reply=\"%.*s\"",
			       (int)(reply->len > 200 ? 200 : reply->len), reply->str);
		batch_fail(d, SP_DIRLOG_ERROR);
	} else if (d->b_state == ST_SIZE) {
		if (reply->type == REDIS_REPLY_NIL) {
			d->b_size = 0;
		} else if (reply->type == REDIS_REPLY_STRING) {
			d->b_size = strtoull(reply->str, NULL, 10);
		} else {
			batch_fail(d, SP_DIRLOG_ERROR);
			goto out;
		}
		cache_reset(&d->b_nc, d->b_size);
		batch_compute(d);
	} else if (d->b_state == ST_NODES) {
		if (take_nodes(&d->b_nc, reply) < 0)
			batch_fail(d, SP_DIRLOG_ERROR);
		else
			batch_compute(d);
	} else {
		got_batch_write(d, reply);
	}
out:
	if (d->closing && d->live == 0)
		dirlog_release(d);
}

/* ---- lookups and heads ------------------------------------------------------------------- */

static void on_reply(int status, const redisReply *reply, void *arg);

/* Sends one command for the op. Returns 0, or -1 (the op is not answered: the caller does). */
/* With sc: the script sc, argv being its numkeys, keys and arguments. */
static int op_try_send(struct op *o, const sp_script_t *sc, int argc, const char *const *argv,
                       const size_t *lens)
{
	sp_dirlog_t *d = o->d;

	if (d->closing || (sc != NULL ? sp_script_eval(d->store, sc, K_SIZE, sizeof(K_SIZE) - 1,
	                                               argc, argv, lens, on_reply, o)
	                              : sp_store_command(d->store, K_SIZE, sizeof(K_SIZE) - 1, argc,
	                                                 argv, lens, on_reply, o)) < 0)
		return -1;
	d->live++;
	return 0;
}

/* The proof against the head in o->head, once its nodes are in the cache. */
static void proof_compute(struct op *o)
{
	static char names[SP_STORE_MAX_ARGS][32];
	const char *argv[SP_STORE_MAX_ARGS];
	size_t lens[SP_STORE_MAX_ARGS];
	sp_dirlog_head_t h;
	int r, argc;

	if (sp_dirlog_head_parse(o->head, o->head_len, &h) < 0) {
		op_finish(o, SP_DIRLOG_ERROR);
		return;
	}
	o->nc.complete = h.size;
	if (o->kind == OP_LOOKUP) {
		if (o->ans.index >= h.size) {
			op_finish(o, SP_DIRLOG_ERROR);
			return;
		}
		r = sp_merkle_inclusion_proof(o->ans.index, h.size, cache_get, &o->nc, o->ans.proof,
		                              &o->ans.proof_count);
		if (o->old_size > h.size)
			o->old_size = 0;
		if (o->old_size > 0) {
			int rc = sp_merkle_consistency_proof(o->old_size, h.size, cache_get, &o->nc,
			                                     o->ans.cproof, &o->ans.cproof_count);

			if (r == 0 || (r == SP_MERKLE_NEED && rc < 0 && rc != SP_MERKLE_NEED))
				r = rc;
		}
	} else if (o->old_size == 0) {
		r = 0;
		o->ans.proof_count = 0;
	} else if (o->old_size > h.size) {
		op_finish(o, SP_DIRLOG_NOT_FOUND);
		return;
	} else {
		r = sp_merkle_consistency_proof(o->old_size, h.size, cache_get, &o->nc,
		                                o->ans.proof, &o->ans.proof_count);
	}
	if (r == SP_MERKLE_NEED) {
		argc = missing_command(&o->nc, argv, lens, names);
		o->state = ST_PROOF_NODES;
		if (op_try_send(o, NULL, argc, argv, lens) < 0)
			op_finish(o, SP_DIRLOG_UNAVAILABLE);
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

/* {-1, ms}: the requester is over its rate. Answers the op and returns 1 then. */
static int rate_refused(struct op *o, const redisReply *r)
{
	long long ms;

	if (r->element[0]->integer != -1)
		return 0;
	ms = r->elements == 2 && r->element[1]->type == REDIS_REPLY_INTEGER ? r->element[1]->integer
	                                                                    : 0;
	o->ans.retry_after_ms = ms > 0 ? (uint32_t)(ms > UINT32_MAX ? UINT32_MAX : ms) : 1;
	op_finish(o, SP_DIRLOG_LIMITED);
	return 1;
}

static void got_head(struct op *o, const redisReply *r)
{
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER) {
		op_finish(o, SP_DIRLOG_ERROR);
		return;
	}
	if (rate_refused(o, r))
		return;
	if (r->element[0]->integer == 0)
		op_finish(o, SP_DIRLOG_NOT_FOUND);
	else if (r->elements != 2 || take_head(o, r->element[1]) < 0)
		op_finish(o, SP_DIRLOG_ERROR);
	else
		proof_compute(o);
}

static void got_lookup(struct op *o, const redisReply *r)
{
	const redisReply *e;

	if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER) {
		op_finish(o, SP_DIRLOG_ERROR);
		return;
	}
	if (rate_refused(o, r))
		return;
	if (r->element[0]->integer == 0) {
		op_finish(o, SP_DIRLOG_NOT_FOUND);
		return;
	}
	if ((r->elements != 4 && r->elements != 5) || r->element[1]->type != REDIS_REPLY_STRING ||
	    r->element[2]->type != REDIS_REPLY_STRING || take_head(o, r->element[3]) < 0 ||
	    (r->elements == 5 &&
	     (r->element[4]->type != REDIS_REPLY_INTEGER || r->element[4]->integer < 0 ||
	      r->element[4]->integer > UINT32_MAX))) {
		op_finish(o, SP_DIRLOG_ERROR);
		return;
	}
	if (r->elements == 5)
		o->ans.hist_left = (uint32_t)r->element[4]->integer;
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
	} else if (o->state == ST_LOOKUP) {
		got_lookup(o, reply);
	} else if (o->state == ST_HEAD) {
		got_head(o, reply);
	} else if (take_nodes(&o->nc, reply) < 0) {
		op_finish(o, SP_DIRLOG_ERROR);
	} else {
		proof_compute(o);
	}
	if (d->closing && d->live == 0)
		dirlog_release(d);
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
	d->b_nc.c = &d->c;
	if (sp_script_init(&d->sc_append, lua_append, sizeof(lua_append) - 1) < 0 ||
	    sp_script_init(&d->sc_lookup, lua_lookup, sizeof(lua_lookup) - 1) < 0 ||
	    sp_script_init(&d->sc_head, lua_head, sizeof(lua_head) - 1) < 0 ||
	    sp_script_init(&d->sc_history, lua_history, sizeof(lua_history) - 1) < 0) {
		dirlog_release(d);
		return NULL;
	}
	return d;
}

void sp_dirlog_free(sp_dirlog_t *d)
{
	struct op *o, *next;
	int out;

	if (d == NULL)
		return;
	d->closing = 1;
	evtimer_del(d->retry_ev);
	/* Appends of a batch with a request out are answered when the store gives it back; all
	 * the others now. */
	out = d->b_out;
	o = d->q_head;
	while (o != NULL) {
		int in_batch = 0;

		next = o->next;
		for (unsigned i = 0; out && i < d->b_n; i++)
			in_batch |= d->b_ops[i] == o;
		if (!in_batch) {
			queue_unlink(d, o);
			op_finish(o, SP_DIRLOG_UNAVAILABLE);
		}
		o = next;
	}
	if (!out)
		d->b_n = 0;
	if (d->live == 0)
		dirlog_release(d);
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
	o->nc.c = &d->c;
	return o;
}

int sp_dirlog_append(sp_dirlog_t *d, const char *handle, size_t handle_len,
                     const uint8_t ukey_fp[32], const uint8_t (*tokens)[32], size_t n_tokens,
                     uint64_t issued_at, const uint8_t *entry, size_t entry_len, sp_dirlog_cb cb,
                     void *arg)
{
	struct op *o;
	uint8_t *p;

	if (d == NULL || handle == NULL || handle_len == 0 || handle_len > SP_DIRLOG_HANDLE_MAX ||
	    ukey_fp == NULL || tokens == NULL || n_tokens == 0 ||
	    n_tokens > SP_DIRLOG_MAX_DEVICES || entry == NULL || entry_len == 0 || cb == NULL ||
	    issued_at > (UINT64_C(1) << 53))
		return -EINVAL;
	if (d->closing)
		return -ESHUTDOWN;
	if (d->q_len >= d->lim.max_queue)
		return -EBUSY;
	o = op_new(d, OP_APPEND, cb, arg);
	if (o == NULL)
		return -ENOMEM;
	o->entry = malloc(entry_len);
	if (o->entry == NULL || sp_merkle_leaf_hash(entry, entry_len, o->leaf_hash) < 0) {
		op_free(o);
		return -ENOMEM;
	}
	memcpy(o->entry, entry, entry_len);
	o->entry_len = entry_len;
	p = o->meta;
	*p++ = (uint8_t)handle_len;
	memcpy(p, handle, handle_len);
	p += handle_len;
	memcpy(p, ukey_fp, 32);
	p += 32;
	put_u64(p, issued_at);
	p += 8;
	*p++ = (uint8_t)n_tokens;
	memcpy(p, tokens, n_tokens * 32);
	p += n_tokens * 32;
	o->meta_nodes = o->meta_len = (size_t)(p - o->meta);
	if (d->q_tail != NULL)
		d->q_tail->next = o;
	else
		d->q_head = o;
	d->q_tail = o;
	d->q_len++;
	batch_start(d);
	if (d->q_head == o && d->b_n == 0) {
		/* The store refused the first request (it is closing): the append is not taken. */
		queue_unlink(d, o);
		op_free(o);
		return -EAGAIN;
	}
	return 0;
}

/* The requester's counter key and the limit and window as text. */
static void rate_args(sp_dirlog_t *d, const uint8_t *requester, char key[96], char lim[16],
                      char win[16])
{
	static const char hex[] = "0123456789abcdef";
	int n = snprintf(key, 96, "sp:{dir}:rl:");

	for (int i = 0; i < 32; i++) {
		key[n++] = hex[requester ? requester[i] >> 4 : 0];
		key[n++] = hex[requester ? requester[i] & 15 : 0];
	}
	key[n] = '\0';
	snprintf(lim, 16, "%u", requester ? d->lim.lookup_limit : 0);
	snprintf(win, 16, "%u", d->lim.lookup_window_ms ? d->lim.lookup_window_ms : 1);
}

int sp_dirlog_lookup(sp_dirlog_t *d, const char *handle, size_t handle_len, const uint8_t token[32],
                     uint64_t old_size, const uint8_t requester[32], sp_dirlog_cb cb, void *arg)
{
	const char *argv[10];
	size_t lens[10];
	char rkey[96], lim[16], win[16];
	struct op *o;

	if ((handle == NULL) == (token == NULL) ||
	    (handle != NULL && (handle_len == 0 || handle_len > SP_DIRLOG_HANDLE_MAX)))
		return -EINVAL;
	o = op_new(d, OP_LOOKUP, cb, arg);
	if (o == NULL)
		return -ENOMEM;
	cache_reset(&o->nc, 0);
	o->old_size = old_size;
	rate_args(d, requester, rkey, lim, win);
	argv[0] = "5", lens[0] = 1;
	argv[1] = rkey, lens[1] = strlen(rkey);
	argv[2] = K_STH, lens[2] = sizeof(K_STH) - 1;
	argv[3] = K_HANDLE, lens[3] = sizeof(K_HANDLE) - 1;
	argv[4] = K_TOK, lens[4] = sizeof(K_TOK) - 1;
	argv[5] = K_LEAF, lens[5] = sizeof(K_LEAF) - 1;
	argv[6] = lim, lens[6] = strlen(lim);
	argv[7] = win, lens[7] = strlen(win);
	argv[8] = token != NULL ? "t" : "h", lens[8] = 1;
	argv[9] = token != NULL ? (const char *)token : handle, lens[9] = token ? 32 : handle_len;
	o->state = ST_LOOKUP;
	if (op_try_send(o, &d->sc_lookup, 10, argv, lens) < 0) {
		op_free(o);
		return -EAGAIN;
	}
	return 0;
}

int sp_dirlog_history(sp_dirlog_t *d, const uint8_t requester[32], int64_t after, uint64_t old_size,
                      sp_dirlog_cb cb, void *arg)
{
	const char *argv[10];
	size_t lens[10];
	char rkey[96], lim[16], win[16], after_s[24];
	struct op *o;

	if (requester == NULL || after < -1)
		return -EINVAL;
	o = op_new(d, OP_LOOKUP, cb, arg);
	if (o == NULL)
		return -ENOMEM;
	cache_reset(&o->nc, 0);
	o->old_size = old_size;
	rate_args(d, requester, rkey, lim, win);
	snprintf(after_s, sizeof(after_s), "%" PRId64, after);
	argv[0] = "5", lens[0] = 1;
	argv[1] = rkey, lens[1] = strlen(rkey);
	argv[2] = K_STH, lens[2] = sizeof(K_STH) - 1;
	argv[3] = K_TOK, lens[3] = sizeof(K_TOK) - 1;
	argv[4] = K_HIST, lens[4] = sizeof(K_HIST) - 1;
	argv[5] = K_LEAF, lens[5] = sizeof(K_LEAF) - 1;
	argv[6] = lim, lens[6] = strlen(lim);
	argv[7] = win, lens[7] = strlen(win);
	argv[8] = (const char *)requester, lens[8] = 32;
	argv[9] = after_s, lens[9] = strlen(after_s);
	o->state = ST_LOOKUP;
	if (op_try_send(o, &d->sc_history, 10, argv, lens) < 0) {
		op_free(o);
		return -EAGAIN;
	}
	return 0;
}

int sp_dirlog_head(sp_dirlog_t *d, uint64_t old_size, const uint8_t requester[32], sp_dirlog_cb cb,
                   void *arg)
{
	const char *argv[5];
	size_t lens[5];
	char rkey[96], lim[16], win[16];
	struct op *o = op_new(d, OP_HEAD, cb, arg);

	if (o == NULL)
		return -ENOMEM;
	cache_reset(&o->nc, 0);
	o->old_size = old_size;
	rate_args(d, requester, rkey, lim, win);
	argv[0] = "2", lens[0] = 1;
	argv[1] = rkey, lens[1] = strlen(rkey);
	argv[2] = K_STH, lens[2] = sizeof(K_STH) - 1;
	argv[3] = lim, lens[3] = strlen(lim);
	argv[4] = win, lens[4] = strlen(win);
	o->state = ST_HEAD;
	if (op_try_send(o, &d->sc_head, 5, argv, lens) < 0) {
		op_free(o);
		return -EAGAIN;
	}
	return 0;
}
