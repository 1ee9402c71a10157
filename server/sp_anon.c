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
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sp_anon.h"
#include "sp_conn.h"
#include "sp_log.h"
#include "sp_metrics.h"
#include "sp_msg.h"
#include "sp_router.h"
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

static char sha_check[41];

#define KEY_LEN (sizeof("sp:{}:ak") - 1 + 2 * SP_TOKEN_LEN)

const char *sp_anon_script(const char *name)
{
	if (strcmp(name, "check") == 0)
		return lua_check;
	if (strcmp(name, "set") == 0)
		return lua_set;
	return NULL;
}

static int sha1_hex(const char *text, char out[41])
{
	unsigned char md[20];
	unsigned int len = 0;

	if (EVP_Digest(text, strlen(text), md, &len, EVP_sha1(), NULL) != 1 || len != 20)
		return -1;
	for (int i = 0; i < 20; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	return 0;
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
	if (sha1_hex(lua_check, sha_check) < 0) {
		snprintf(err, errlen, "cannot hash the anonymous-delivery script");
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

struct check {
	sp_worker_t *w;
	sp_node_t *n;
	uint8_t verifier[SP_ACCESS_KEY_LEN];
	bool retried; /* sent again with EVAL after NOSCRIPT */
};

static int check_send(struct check *q);

static void finish(struct check *q, enum sp_anon_result r, uint8_t status)
{
	sp_metric_inc(&q->w->metrics, SP_M_ANON_SENDS + r);
	sp_node_finish(q->w, q->n, status);
	sp_worker_after(q->w);
	free(q);
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
	if (status == SP_STORE_ERROR && reply && reply->type == REDIS_REPLY_ERROR &&
	    strncmp(reply->str, "NOSCRIPT", 8) == 0 && !q->retried) {
		q->retried = true;
		if (check_send(q) == 0)
			return;
		status = SP_STORE_UNAVAILABLE;
	}
	if (status != SP_STORE_OK || !reply || reply->type != REDIS_REPLY_ARRAY ||
	    reply->elements != 2 || reply->element[0]->type != REDIS_REPLY_INTEGER) {
		if (status == SP_STORE_ERROR)
			SP_LOG(SP_LOG_WARN, "anon_check_failed", "worker=%d msg=\"%s\"", w->id,
			       reply && reply->type == REDIS_REPLY_ERROR ? reply->str
			                                                 : "bad reply");
		finish(q, SP_ANON_R_UNAVAILABLE, SP_ST_TRY_LATER);
		return;
	}
	r = reply->element[0]->integer;
	if (r == 1) {
		sp_node_t *n = q->n;

		sp_metric_inc(&w->metrics, SP_ANON_R_ACCEPTED + SP_M_ANON_SENDS);
		sp_metric_inc(&w->metrics, SP_M_MESSAGES_ACCEPTED);
		free(q);
		sp_route(w, n);
		sp_worker_after(w);
		return;
	}
	finish(q,
	       r == 2   ? SP_ANON_R_RATE_RECIPIENT
	       : r == 3 ? SP_ANON_R_RATE_KEY
	                : SP_ANON_R_DENIED,
	       r == 2 || r == 3 ? SP_ST_TOO_MANY_REQUESTS : SP_ST_ACCESS_DENIED);
}

static int check_send(struct check *q)
{
	const sp_server_config_t *cfg = &q->w->srv->cfg;
	const uint8_t *token = sp_node_token(q->n);
	char k_ak[KEY_LEN], k_aw[KEY_LEN], win[24], klim[24], rlim[24];
	const char *argv[9];
	size_t lens[9];

	make_key(k_ak, token, "ak");
	make_key(k_aw, token, "aw");
	snprintf(win, sizeof(win), "%lld", (long long)cfg->anon_rate_window);
	snprintf(klim, sizeof(klim), "%lld", (long long)cfg->anon_key_rate);
	snprintf(rlim, sizeof(rlim), "%lld", (long long)cfg->anon_recipient_rate);
	if (q->retried)
		argv[0] = "EVAL", lens[0] = 4, argv[1] = lua_check, lens[1] = sizeof(lua_check) - 1;
	else
		argv[0] = "EVALSHA", lens[0] = 7, argv[1] = sha_check, lens[1] = 40;
	argv[2] = "2", lens[2] = 1;
	argv[3] = k_ak, lens[3] = KEY_LEN;
	argv[4] = k_aw, lens[4] = KEY_LEN;
	argv[5] = (const char *)q->verifier, lens[5] = SP_ACCESS_KEY_LEN;
	argv[6] = win, lens[6] = strlen(win);
	argv[7] = klim, lens[7] = strlen(klim);
	argv[8] = rlim, lens[8] = strlen(rlim);
	return sp_store_command(q->w->store, k_ak, KEY_LEN, 9, argv, lens, on_check, q);
}

void sp_anon_route(sp_worker_t *w, sp_node_t *n, const uint8_t *key)
{
	struct check *q = calloc(1, sizeof(*q));
	unsigned int len = 0;

	if (!q) {
		sp_node_finish(w, n, SP_ST_INTERNAL_ERROR);
		return;
	}
	q->w = w;
	q->n = n;
	if (EVP_Digest(key, SP_ACCESS_KEY_LEN, q->verifier, &len, EVP_sha256(), NULL) != 1 ||
	    len != SP_ACCESS_KEY_LEN) {
		free(q);
		sp_node_finish(w, n, SP_ST_INTERNAL_ERROR);
		return;
	}
	if (!w->store || check_send(q) < 0)
		finish(q, SP_ANON_R_UNAVAILABLE, SP_ST_TRY_LATER);
}

/* ---- ACCESS_SET ------------------------------------------------------------------------------ */

struct aset {
	sp_worker_t *w;
	sp_connref_t ref;
	uint8_t msg_id[SP_MSG_ID_LEN];
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

		if (status == SP_STORE_OK && reply && reply->type == REDIS_REPLY_INTEGER)
			state_send(w, c, q->msg_id, SP_ST_DELIVERED, q->mode, NULL, 0);
		else
			state_send(w, c, q->msg_id, SP_ST_TRY_LATER, 0,
			           "the access-key store is unavailable", 2);
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
