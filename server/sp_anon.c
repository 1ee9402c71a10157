/*
 * sp_anon.c: sealed sender (PROTOCOL.md 17; the contract is in sp_anon.h).
 *
 * Redis keys, in the recipient's slot (hash tag {T}, T its token in hex), so that the check is
 * one script on one master of a Redis Cluster:
 *   sp:{T}:ak  hash: "m" -> the switch ("1" key holders, "2" anyone; no key: refuse), and one
 *              field per verifier (the 32 bytes of SHA-256 of an access key) -> "1"
 *   sp:{T}:aw  hash of the current rate window: "*" -> anonymous messages accepted for T, and
 *              per verifier -> the messages accepted with that key; it expires with the window
 * The relay never stores an access key: a SEND's keys are hashed here and only the hash goes
 * to Redis. Every refusal (wrong key, old key, a recipient that refuses or never registered)
 * runs the same two reads and returns the same answer, so neither the status nor the work
 * tells a sender whether the recipient exists; the counters move only for accepted messages.
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <event2/event.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sp_anon.h"
#include "sp_anoncache.h"
#include "sp_conn.h"
#include "sp_log.h"
#include "sp_metrics.h"
#include "sp_msg.h"
#include "sp_router.h"
#include "sp_script.h"
#include "sp_store.h"
#include "sp_worker.h"

/* KEYS[1] sp:{T}:ak, KEYS[2] sp:{T}:aw; ARGV: verifier, window ms, key limit, recipient
 * limit (0 = none). Returns {result, retry_ms}: 0 denied, 1 accepted, 2 over the recipient's
 * limit, 3 over the key's. Only accepted messages count, so one key's flood does not use up
 * the other keys' share of the recipient's limit beyond what it got through. */
static const char lua_check[] =
        "local m = redis.call('HGET', KEYS[1], 'm')\n"
        "local held = redis.call('HEXISTS', KEYS[1], ARGV[1])\n"
        "if not (m == '2' or (m == '1' and held == 1)) then return {0, 0} end\n"
        "local rl, kl = tonumber(ARGV[4]), tonumber(ARGV[3])\n"
        "local n = tonumber(redis.call('HGET', KEYS[2], '*') or '0')\n"
        "local k = n\n"
        "if m == '1' then k = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') end\n"
        "if (rl > 0 and n >= rl) or (kl > 0 and k >= kl) then\n"
        "  local t = redis.call('PTTL', KEYS[2])\n"
        "  if t < 1 then t = 1 end\n"
        "  if rl > 0 and n >= rl then return {2, t} end\n"
        "  return {3, t}\n"
        "end\n"
        "redis.call('HINCRBY', KEYS[2], '*', 1)\n"
        "if n == 0 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end\n"
        "if m == '1' then redis.call('HINCRBY', KEYS[2], ARGV[1], 1) end\n"
        "return {1, 0}\n";

/* KEYS[1] sp:{T}:ak; ARGV: the switch, then the verifiers. Replaces what was registered. */
static const char lua_set[] = "redis.call('DEL', KEYS[1])\n"
                              "if ARGV[1] == '0' then return 0 end\n"
                              "redis.call('HSET', KEYS[1], 'm', ARGV[1])\n"
                              "for i = 2, #ARGV do redis.call('HSET', KEYS[1], ARGV[i], '1') end\n"
                              "return #ARGV - 1\n";

/* The cached path (sp_anoncache.h). "fetch" reads everything the check needs for one
 * recipient, the same reads whatever it has: KEYS[1] sp:{T}:ak, KEYS[2] sp:{T}:aw; returns
 * {HGETALL ak, HGETALL aw, PTTL aw}. */
static const char lua_fetch[] = "return {redis.call('HGETALL', KEYS[1]), "
                                "redis.call('HGETALL', KEYS[2]), redis.call('PTTL', KEYS[2])}\n";

/* "add" writes a worker's pending counts: KEYS[1] sp:{T}:aw; ARGV: window ms, the recipient's
 * count, then verifier and count pairs. Returns {total, pttl, per-verifier totals...}. */
static const char lua_add[] =
        "local n = redis.call('HINCRBY', KEYS[1], '*', ARGV[2])\n"
        "local t = redis.call('PTTL', KEYS[1])\n"
        "if t < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); t = tonumber(ARGV[1]) end\n"
        "local r = {n, t}\n"
        "for i = 3, #ARGV, 2 do r[#r + 1] = redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) "
        "end\n"
        "return r\n";

enum { SC_CHECK, SC_FETCH, SC_ADD, SC_COUNT };
static const char *const sources[SC_COUNT] = {lua_check, lua_fetch, lua_add};
static sp_script_t scripts[SC_COUNT]; /* EVALSHA, EVAL after NOSCRIPT (sp_script.h) */

/* A worker's part (sp_worker_t.anon): the cache and the timer of the flushes. */
struct sp_anon_w {
	sp_anoncache_t cache;
	EVP_MD *sha256; /* fetched once: an implicit fetch per message costs more than the hash */
	EVP_MD_CTX *mdctx; /* reused for every key */
	struct event *ev_flush;
	bool armed;
};

#define KEY_LEN (sizeof("sp:{}:ak") - 1 + 2 * SP_TOKEN_LEN)

const char *sp_anon_script(const char *name)
{
	if (strcmp(name, "check") == 0)
		return lua_check;
	if (strcmp(name, "set") == 0)
		return lua_set;
	if (strcmp(name, "fetch") == 0)
		return lua_fetch;
	if (strcmp(name, "add") == 0)
		return lua_add;
	return NULL;
}

int sp_anon_setup(sp_server_t *srv, char *err, size_t errlen)
{
	const sp_server_config_t *cfg = &srv->cfg;

	if (!sp_anon_enabled(srv))
		return 0;
	if (!cfg->redis || !cfg->redis[0]) {
		snprintf(err, errlen,
		         "key \"anon_listen\": access-key verifiers live in Redis; \"redis\" must "
		         "be set");
		return -1;
	}
	if (cfg->max_frame < cfg->max_blob + 2 * SP_TOKEN_LEN + 128) {
		snprintf(err, errlen,
		         "key \"anon_listen\": max_frame (%lld) leaves no room for an anonymous "
		         "SEND "
		         "of max_blob (%lld) to one recipient",
		         (long long)cfg->max_frame, (long long)cfg->max_blob);
		return -1;
	}
	for (int i = 0; i < SC_COUNT; i++)
		if (sp_script_init(&scripts[i], sources[i], strlen(sources[i])) < 0) {
			snprintf(err, errlen, "cannot hash the anonymous-delivery scripts");
			return -1;
		}
	return 0;
}

bool sp_anon_enabled(const sp_server_t *srv)
{
	return srv->cfg.anon_listen && srv->cfg.anon_listen[0];
}

uint16_t sp_anon_max_recipients(const sp_server_config_t *cfg)
{
	int64_t fit = (cfg->max_frame - cfg->max_blob - 128) / (2 * SP_TOKEN_LEN);

	if (fit > cfg->max_recipients)
		fit = cfg->max_recipients;
	return (uint16_t)(fit < 1 ? 1 : fit);
}

static size_t make_key(char *out, const uint8_t token[SP_TOKEN_LEN], const char *suffix)
{
	static const char hex[] = "0123456789abcdef";
	char *p = out;

	memcpy(p, "sp:{", 4);
	p += 4;
	for (int i = 0; i < SP_TOKEN_LEN; i++) {
		*p++ = hex[token[i] >> 4];
		*p++ = hex[token[i] & 15];
	}
	*p++ = '}';
	*p++ = ':';
	memcpy(p, suffix, 2);
	p += 2;
	return (size_t)(p - out);
}

/* ---- the check of one recipient -------------------------------------------------------------- */

/* The epoch of token's slot in sp_server_t.anon_epochs (sp_anoncache.h). */
static _Atomic uint32_t *epoch_slot(sp_server_t *srv, const uint8_t token[SP_TOKEN_LEN])
{
	uint32_t h = (uint32_t)token[4] | (uint32_t)token[5] << 8 | (uint32_t)token[6] << 16;

	return &srv->anon_epochs[h % SP_ANON_EPOCHS];
}

/* Script sc with nkeys keys then the other arguments in args, routed by args[0], the first
 * key (sp_script_eval: EVALSHA, and EVAL once on NOSCRIPT). */
static int eval(sp_worker_t *w, int sc, int nkeys, int nargs, const char **args, const size_t *lens,
                sp_store_command_cb cb, void *arg)
{
	const char *argv[SP_STORE_MAX_ARGS];
	size_t alens[SP_STORE_MAX_ARGS];
	char nk[4];

	if (1 + nargs > SP_STORE_MAX_ARGS - 2)
		return -1;
	snprintf(nk, sizeof(nk), "%d", nkeys);
	argv[0] = nk, alens[0] = strlen(nk);
	for (int i = 0; i < nargs; i++)
		argv[1 + i] = args[i], alens[1 + i] = lens[i];
	return sp_script_eval(w->store, &scripts[sc], args[0], lens[0], 1 + nargs, argv, alens, cb,
	                      arg);
}

struct check {
	sp_worker_t *w;
	sp_node_t *n;
	uint8_t verifier[SP_ACCESS_KEY_LEN];
	uint32_t epoch; /* of the recipient's slot when the fetch was sent */
	bool fetch;     /* the cached path: the "fetch" script, else "check" */
};

static int check_send(struct check *q);

/* The end of node n's check with result r: routed if accepted, else finished with status. */
static void conclude(sp_worker_t *w, sp_node_t *n, enum sp_anon_result r)
{
	static const uint8_t status[SP_ANON_R_COUNT] = {
	        [SP_ANON_R_DENIED] = SP_ST_ACCESS_DENIED,
	        [SP_ANON_R_RATE_KEY] = SP_ST_TOO_MANY_REQUESTS,
	        [SP_ANON_R_RATE_RECIPIENT] = SP_ST_TOO_MANY_REQUESTS,
	        [SP_ANON_R_UNAVAILABLE] = SP_ST_TRY_LATER};

	sp_metric_inc(&w->metrics, SP_M_ANON_SENDS + r);
	if (r == SP_ANON_R_ACCEPTED) {
		sp_metric_inc(&w->metrics, SP_M_MESSAGES_ACCEPTED);
		sp_route(w, n);
	} else {
		sp_node_finish(w, n, status[r]);
	}
	sp_worker_after(w);
}

static void finish(struct check *q, enum sp_anon_result r)
{
	sp_worker_t *w = q->w;
	sp_node_t *n = q->n;

	free(q);
	conclude(w, n, r);
}

/* A check whose script failed or answered something else: TRY_LATER (logged if an error). */
static void check_failed(struct check *q, int status, const struct redisReply *reply)
{
	if (status == SP_STORE_ERROR)
		SP_LOG(SP_LOG_WARN, "anon_check_failed", "worker=%d msg=\"%s\"", q->w->id,
		       reply && reply->type == REDIS_REPLY_ERROR ? reply->str : "bad reply");
	finish(q, SP_ANON_R_UNAVAILABLE);
}

static void on_check(int status, const struct redisReply *reply, void *arg)
{
	struct check *q = arg;
	sp_worker_t *w = q->w;
	long long r;

	if (atomic_load(&w->srv->stopping)) {
		free(q);
		return;
	}
	if (status != SP_STORE_OK || !reply || reply->type != REDIS_REPLY_ARRAY ||
	    reply->elements != 2 || reply->element[0]->type != REDIS_REPLY_INTEGER) {
		check_failed(q, status, reply);
		return;
	}
	r = reply->element[0]->integer;
	finish(q, r == 1   ? SP_ANON_R_ACCEPTED
	          : r == 2 ? SP_ANON_R_RATE_RECIPIENT
	          : r == 3 ? SP_ANON_R_RATE_KEY
	                   : SP_ANON_R_DENIED);
}

/* ---- the cached path (sp_anoncache.h) ------------------------------------------------------- */

struct flush {
	sp_worker_t *w;
	sp_anoncache_flush_t f;
};

static int flush_send(struct flush *q);
static void sp_anon_arm(sp_worker_t *w);

static void on_add(int status, const struct redisReply *reply, void *arg)
{
	struct flush *q = arg;
	sp_worker_t *w = q->w;
	int64_t keys[SP_ACCESS_SET_MAX] = {0};
	bool ok;
	size_t want = 2 + (q->f.mode == SP_ANON_KEY_HOLDERS ? q->f.n_ver : 0);

	if (atomic_load(&w->srv->stopping)) {
		free(q);
		return;
	}
	ok = status == SP_STORE_OK && reply && reply->type == REDIS_REPLY_ARRAY &&
	     reply->elements == want;
	for (size_t i = 0; ok && i < want; i++)
		ok = reply->element[i]->type == REDIS_REPLY_INTEGER;
	for (size_t i = 2; ok && i < want; i++)
		keys[i - 2] = reply->element[i]->integer;
	sp_metric_inc(&w->metrics, SP_M_ANON_FLUSHES + (ok ? 0 : 1));
	sp_anoncache_applied(&w->anon->cache, &q->f, ok, ok ? reply->element[0]->integer : 0, keys,
	                     ok ? reply->element[1]->integer : 0, w->now);
	free(q);
	if (!ok) /* pending again: the next interval retries, whether or not more come */
		sp_anon_arm(w);
}

static int flush_send(struct flush *q)
{
	const sp_server_config_t *cfg = &q->w->srv->cfg;
	char k_aw[KEY_LEN], win[24], all[24], d[SP_ACCESS_SET_MAX][24];
	const char *args[3 + 2 * SP_ACCESS_SET_MAX];
	size_t lens[3 + 2 * SP_ACCESS_SET_MAX];
	int n = 3;

	make_key(k_aw, q->f.token, "aw");
	snprintf(win, sizeof(win), "%lld", (long long)cfg->anon_rate_window);
	snprintf(all, sizeof(all), "%lld", (long long)q->f.d_all);
	args[0] = k_aw, lens[0] = KEY_LEN;
	args[1] = win, lens[1] = strlen(win);
	args[2] = all, lens[2] = strlen(all);
	if (q->f.mode == SP_ANON_KEY_HOLDERS)
		for (unsigned i = 0; i < q->f.n_ver; i++) {
			snprintf(d[i], sizeof(d[i]), "%lld", (long long)q->f.d_key[i]);
			args[n] = (const char *)q->f.ver[i], lens[n++] = SP_ACCESS_KEY_LEN;
			args[n] = d[i], lens[n++] = strlen(d[i]);
		}
	return eval(q->w, SC_ADD, 1, n, args, lens, on_add, q);
}

/* Writes pending counts f to Redis (failures count as pending again, sp_anoncache.h). */
static void flush_one(sp_worker_t *w, const sp_anoncache_flush_t *f)
{
	struct flush *q = malloc(sizeof(*q));

	if (q) {
		q->w = w;
		q->f = *f;
		if (w->store && flush_send(q) == 0)
			return;
		free(q);
	}
	sp_metric_inc(&w->metrics, SP_M_ANON_FLUSHES + 1);
	sp_anoncache_applied(&w->anon->cache, f, false, 0, NULL, 0, w->now);
	sp_anon_arm(w);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
	sp_worker_t *w = arg;
	sp_anoncache_flush_t f;
	uint32_t n = w->anon->cache.n_dirty;

	(void)fd;
	(void)what;
	w->anon->armed = false;
	w->now = sp_now_ms();
	/* At most the entries dirty now: a failed flush lists its entry again, for next time. */
	while (n-- > 0 && sp_anoncache_take(&w->anon->cache, &f))
		flush_one(w, &f);
	if (w->anon->cache.n_dirty > 0)
		sp_anon_arm(w);
}

static void sp_anon_arm(sp_worker_t *w)
{
	int64_t ms = w->srv->cfg.anon_flush_interval;
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};

	if (!w->anon || w->anon->armed)
		return;
	w->anon->armed = true;
	event_add(w->anon->ev_flush, &tv);
}

static void decide(sp_worker_t *w, sp_node_t *n, sp_anoncache_ent_t *e, const uint8_t *verifier)
{
	const sp_server_config_t *cfg = &w->srv->cfg;
	bool newly;
	enum sp_anoncache_verdict v =
	        sp_anoncache_decide(&w->anon->cache, e, verifier, w->now, cfg->anon_key_rate,
	                            cfg->anon_recipient_rate, &newly);

	(void)newly;
	if (v == SP_ANONCACHE_ACCEPTED) /* a no-op while armed; also after a failed flush */
		sp_anon_arm(w);
	conclude(w, n,
	         v == SP_ANONCACHE_ACCEPTED         ? SP_ANON_R_ACCEPTED
	         : v == SP_ANONCACHE_RATE_KEY       ? SP_ANON_R_RATE_KEY
	         : v == SP_ANONCACHE_RATE_RECIPIENT ? SP_ANON_R_RATE_RECIPIENT
	                                            : SP_ANON_R_DENIED);
}

static bool is_verifier(const struct redisReply *r)
{
	return r->type == REDIS_REPLY_STRING && r->len == SP_ACCESS_KEY_LEN;
}

static void on_fetch(int status, const struct redisReply *reply, void *arg)
{
	struct check *q = arg;
	sp_worker_t *w = q->w;
	const struct redisReply *ak, *aw;
	uint8_t ver[SP_ACCESS_SET_MAX][SP_ACCESS_KEY_LEN], mode = SP_ANON_REFUSE;
	int64_t keys[SP_ACCESS_SET_MAX] = {0}, all = 0;
	unsigned nv = 0;
	sp_anoncache_flush_t evicted;
	sp_anoncache_ent_t *e;
	uint64_t evictions;
	bool has_evicted;

	if (atomic_load(&w->srv->stopping)) {
		free(q);
		return;
	}
	if (status != SP_STORE_OK || !reply || reply->type != REDIS_REPLY_ARRAY ||
	    reply->elements != 3 || reply->element[0]->type != REDIS_REPLY_ARRAY ||
	    reply->element[1]->type != REDIS_REPLY_ARRAY ||
	    reply->element[2]->type != REDIS_REPLY_INTEGER) {
		check_failed(q, status, reply);
		return;
	}
	ak = reply->element[0];
	aw = reply->element[1];
	for (size_t i = 0; i + 1 < ak->elements; i += 2) {
		const struct redisReply *k = ak->element[i], *v = ak->element[i + 1];

		if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
			continue;
		if (k->len == 1 && k->str[0] == 'm' && v->len == 1 &&
		    (v->str[0] == '1' || v->str[0] == '2'))
			mode = (uint8_t)(v->str[0] - '0');
		else if (is_verifier(k) && nv < SP_ACCESS_SET_MAX)
			memcpy(ver[nv++], k->str, SP_ACCESS_KEY_LEN);
	}
	for (size_t i = 0; i + 1 < aw->elements; i += 2) {
		const struct redisReply *k = aw->element[i], *v = aw->element[i + 1];
		long long c;

		if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
			continue;
		c = strtoll(v->str, NULL, 10);
		if (k->len == 1 && k->str[0] == '*')
			all = c;
		else if (is_verifier(k))
			for (unsigned j = 0; j < nv; j++)
				if (memcmp(ver[j], k->str, SP_ACCESS_KEY_LEN) == 0)
					keys[j] = c;
	}
	w->now = sp_now_ms();
	evictions = w->anon->cache.evictions;
	e = sp_anoncache_put(&w->anon->cache, sp_node_token(q->n), w->now, q->epoch, mode,
	                     (const uint8_t(*)[SP_ACCESS_KEY_LEN])ver, nv, all, keys,
	                     reply->element[2]->integer, &evicted, &has_evicted);
	sp_metric_add(&w->metrics, SP_M_ANON_CACHE + 3, w->anon->cache.evictions - evictions);
	if (has_evicted)
		flush_one(w, &evicted);
	if (!e) {
		finish(q, SP_ANON_R_UNAVAILABLE);
		return;
	}
	decide(w, q->n, e, q->verifier);
	free(q);
}

static int check_send(struct check *q)
{
	const sp_server_config_t *cfg = &q->w->srv->cfg;
	const uint8_t *token = sp_node_token(q->n);
	char k_ak[KEY_LEN], k_aw[KEY_LEN], win[24], klim[24], rlim[24];
	const char *args[6] = {k_ak, k_aw, (const char *)q->verifier, win, klim, rlim};
	size_t lens[6] = {KEY_LEN, KEY_LEN, SP_ACCESS_KEY_LEN};

	make_key(k_ak, token, "ak");
	make_key(k_aw, token, "aw");
	if (q->fetch)
		return eval(q->w, SC_FETCH, 2, 2, args, lens, on_fetch, q);
	snprintf(win, sizeof(win), "%lld", (long long)cfg->anon_rate_window);
	snprintf(klim, sizeof(klim), "%lld", (long long)cfg->anon_key_rate);
	snprintf(rlim, sizeof(rlim), "%lld", (long long)cfg->anon_recipient_rate);
	lens[3] = strlen(win), lens[4] = strlen(klim), lens[5] = strlen(rlim);
	return eval(q->w, SC_CHECK, 2, 6, args, lens, on_check, q);
}

void sp_anon_route(sp_worker_t *w, sp_node_t *n, const uint8_t *key)
{
	uint8_t verifier[SP_ACCESS_KEY_LEN];
	unsigned int len = 0;
	struct check *q;
	uint32_t epoch = 0;

	if ((w->anon ? EVP_DigestInit_ex2(w->anon->mdctx, w->anon->sha256, NULL) != 1 ||
	                       EVP_DigestUpdate(w->anon->mdctx, key, SP_ACCESS_KEY_LEN) != 1 ||
	                       EVP_DigestFinal_ex(w->anon->mdctx, verifier, &len) != 1
	             : EVP_Digest(key, SP_ACCESS_KEY_LEN, verifier, &len, EVP_sha256(), NULL) !=
	                       1) ||
	    len != SP_ACCESS_KEY_LEN) {
		sp_node_finish(w, n, SP_ST_INTERNAL_ERROR);
		return;
	}
	if (w->anon && sp_anoncache_on(&w->anon->cache)) {
		enum sp_anoncache_found found;
		sp_anoncache_ent_t *e;

		epoch = atomic_load(epoch_slot(w->srv, sp_node_token(n)));
		e = sp_anoncache_get(&w->anon->cache, sp_node_token(n), w->now, epoch, &found);
		sp_metric_inc(&w->metrics, SP_M_ANON_CACHE + (unsigned)found);
		if (e) {
			decide(w, n, e, verifier);
			OPENSSL_cleanse(verifier, sizeof(verifier));
			return;
		}
	}
	q = calloc(1, sizeof(*q));
	if (!q) {
		sp_node_finish(w, n, SP_ST_INTERNAL_ERROR);
		return;
	}
	q->w = w;
	q->n = n;
	q->epoch = epoch;
	q->fetch = w->anon && sp_anoncache_on(&w->anon->cache);
	memcpy(q->verifier, verifier, sizeof(verifier));
	if (!w->store || check_send(q) < 0)
		finish(q, SP_ANON_R_UNAVAILABLE);
}

int sp_anon_worker_start(sp_worker_t *w, char *err, size_t errlen)
{
	const sp_server_config_t *cfg = &w->srv->cfg;

	if (!sp_anon_enabled(w->srv))
		return 0;
	w->anon = calloc(1, sizeof(*w->anon));
	if (!w->anon ||
	    sp_anoncache_init(&w->anon->cache, (uint32_t)cfg->anon_cache_entries,
	                      (uint64_t)cfg->anon_cache_ttl, (uint64_t)cfg->anon_rate_window) < 0 ||
	    !(w->anon->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL)) ||
	    !(w->anon->mdctx = EVP_MD_CTX_new()) ||
	    !(w->anon->ev_flush = event_new(w->base, -1, 0, on_flush, w))) {
		snprintf(err, errlen, "out of memory (anon_cache_entries)");
		return -1;
	}
	return 0;
}

void sp_anon_worker_free(sp_worker_t *w)
{
	if (!w->anon)
		return;
	if (w->anon->ev_flush)
		event_free(w->anon->ev_flush);
	sp_anoncache_free(&w->anon->cache);
	EVP_MD_CTX_free(w->anon->mdctx);
	EVP_MD_free(w->anon->sha256);
	free(w->anon);
	w->anon = NULL;
}

/* ---- ACCESS_SET ------------------------------------------------------------------------------ */

struct aset {
	sp_worker_t *w;
	sp_connref_t ref;
	uint8_t msg_id[SP_MSG_ID_LEN];
	uint8_t token[SP_TOKEN_LEN];
	uint8_t mode;
};

static void state_send(sp_worker_t *w, sp_conn_t *c, const uint8_t *msg_id, uint8_t status,
                       uint8_t mode, const char *reason, unsigned m)
{
	sp_frame_t f = {.type = SP_ACCESS_STATE,
	                .fields = SP_BIT(SP_F_MSG_ID) | SP_BIT(SP_F_STATUS),
	                .msg_id = msg_id,
	                .status = status};

	sp_metric_inc(&w->metrics, SP_M_ANON_SETS + m);
	if (!c || c->state >= SP_CS_CLOSING)
		return;
	if (status == SP_ST_DELIVERED) {
		f.fields |= SP_BIT(SP_F_ANON_MODE);
		f.anon_mode = mode;
	}
	if (status == SP_ST_TRY_LATER) {
		f.fields |= SP_BIT(SP_F_RETRY_AFTER);
		f.retry_after = 1000;
	}
	if (reason) {
		f.fields |= SP_BIT(SP_F_REASON);
		f.reason = (const uint8_t *)reason;
		f.reason_len = (uint32_t)strlen(reason);
	}
	sp_conn_send(c, &f);
	sp_worker_after(w);
}

static void on_set(int status, const struct redisReply *reply, void *arg)
{
	struct aset *q = arg;
	sp_worker_t *w = q->w;

	if (!atomic_load(&w->srv->stopping)) {
		sp_conn_t *c = sp_worker_conn(w, q->ref);

		if (status == SP_STORE_OK && reply && reply->type == REDIS_REPLY_INTEGER) {
			/* Every worker's cache drops this token's entry before the device hears. */
			atomic_fetch_add(epoch_slot(w->srv, q->token), 1);
			state_send(w, c, q->msg_id, SP_ST_DELIVERED, q->mode, NULL, 0);
		} else {
			state_send(w, c, q->msg_id, SP_ST_TRY_LATER, 0,
			           "the access-key store is unavailable", 2);
		}
	}
	free(q);
}

void sp_anon_access_set(sp_conn_t *c, const sp_frame_t *f)
{
	sp_worker_t *w = c->w;
	const sp_server_config_t *cfg = &w->srv->cfg;
	uint32_t n = (f->fields & SP_BIT(SP_F_ACCESS_VERIFIERS)) ? f->n_access_verifiers : 0;
	const char *argv[5 + SP_ACCESS_SET_MAX];
	size_t lens[5 + SP_ACCESS_SET_MAX];
	char key[KEY_LEN], mode[2] = {(char)('0' + f->anon_mode), 0};
	struct aset *q;

	if (!sp_anon_enabled(w->srv) || !w->store) {
		state_send(w, c, f->msg_id, SP_ST_FORBIDDEN, 0,
		           "this relay has no anonymous door (anon_listen)", 1);
		return;
	}
	if (n > (uint32_t)cfg->anon_max_keys) {
		state_send(w, c, f->msg_id, SP_ST_QUOTA_EXCEEDED, 0,
		           "more access-key verifiers than anon_max_keys", 1);
		return;
	}
	q = calloc(1, sizeof(*q));
	if (!q) {
		state_send(w, c, f->msg_id, SP_ST_INTERNAL_ERROR, 0, "out of memory", 2);
		return;
	}
	q->w = w;
	q->ref = sp_conn_ref(c);
	q->mode = f->anon_mode;
	memcpy(q->token, c->token, SP_TOKEN_LEN);
	memcpy(q->msg_id, f->msg_id, SP_MSG_ID_LEN);
	make_key(key, c->token, "ak");
	argv[0] = "EVAL", lens[0] = 4;
	argv[1] = lua_set, lens[1] = sizeof(lua_set) - 1;
	argv[2] = "1", lens[2] = 1;
	argv[3] = key, lens[3] = KEY_LEN;
	argv[4] = mode, lens[4] = 1;
	for (uint32_t i = 0; i < n; i++) {
		argv[5 + i] = (const char *)f->access_verifiers + (size_t)i * SP_ACCESS_KEY_LEN;
		lens[5 + i] = SP_ACCESS_KEY_LEN;
	}
	if (sp_store_command(w->store, key, KEY_LEN, (int)(5 + n), argv, lens, on_set, q) < 0) {
		free(q);
		state_send(w, c, f->msg_id, SP_ST_TRY_LATER, 0,
		           "the access-key store is unavailable", 2);
	}
}
