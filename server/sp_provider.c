/*
 * sp_provider.c: the provider door (sp_provider.h): TLS, HTTP/2 through nghttp2, a small
 * HTTP/1.1 reader, the Redis look-up of capabilities, and the hand-over to sp_route.
 *
 * Threads: everything here belongs to one worker; the only shared datum is the count of open
 * provider connections (an atomic, for provider_max_connections across workers).
 *
 * Memory per connection is bounded: at most provider_max_streams requests, each holding at
 * most provider_max_header header bytes (only the few headers the door reads are kept) and
 * provider_max_body body bytes, for at most provider_request_timeout; output is capped at
 * OUT_MAX (responses are small: a client that does not read is cut).
 */
#include <errno.h>
#include <event2/listener.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "sp_config.h"
#include "sp_conn.h"
#include "sp_enroll.h"
#include "sp_frame.h"
#include "sp_log.h"
#include "sp_provider.h"
#include "sp_router.h"
#include "sp_time.h"
#include "sp_vapid.h"
#include "sp_webpush.h"
#include "sp_wpcache.h"

#define OUT_MAX        (256 * 1024)
#define READ_CHUNK     16384
#define READ_AHEAD     (64 * 1024) /* TLS read buffer of a door connection (read-ahead) */
#define REDIS_RETRY_MS 1000
#define RETRY_AFTER_S  1
#define RAND_POOL      4096 /* random bytes drawn at once for message ids */
#define VAPID_MEMO     2    /* verified VAPID headers remembered per connection */

/* nghttp2 >= 1.61 prefers the *2 functions (nghttp2_ssize); older ones have only these. */
#if NGHTTP2_VERSION_NUM >= 0x013d00
#define H2_SSIZE           nghttp2_ssize
#define h2_mem_recv        nghttp2_session_mem_recv2
#define h2_mem_send        nghttp2_session_mem_send2
#define h2_data_provider   nghttp2_data_provider2
#define h2_submit_response nghttp2_submit_response2
#else
#define H2_SSIZE           ssize_t
#define h2_mem_recv        nghttp2_session_mem_recv
#define h2_mem_send        nghttp2_session_mem_send
#define h2_data_provider   nghttp2_data_provider
#define h2_submit_response nghttp2_submit_response
#endif

enum { PC_HANDSHAKE, PC_H2, PC_H1 };
enum { RQ_HEADERS, RQ_BODY, RQ_LOOKUP, RQ_ROUTED, RQ_ANSWERED };

static atomic_int n_open; /* provider connections, all workers */

struct preq;

/* A VAPID header that verified on this connection, remembered until its JWT's exp: app
 * servers reuse one JWT for many pushes, and an ES256 verification costs more than all the
 * rest of a push. Holds at most provider_max_header bytes (the header's own limit). */
typedef struct vmemo {
	char *auth; /* the whole header value; NULL: empty */
	size_t len;
	int64_t exp; /* unix seconds */
	uint8_t key[SP_VAPID_KEY_LEN];
} vmemo_t;

typedef struct pconn {
	sp_provider_t *pv;
	struct pconn *prev, *next, *reap_next, *dirty_next;
	bool dirty; /* on the provider's dirty list: flushed once at the end of the loop turn */
	int fd;
	SSL *ssl;
	struct event ev_read, ev_write;
	uint8_t state;
	bool finished;
	bool in_recv; /* inside nghttp2's mem_recv: flush after it returns */
	bool write_wait;
	bool h1_close; /* HTTP/1.1: close once the output is written */
	bool goaway;
	bool paused; /* HTTP/1.1: input buffer full, reading stopped until an answer */
	uint64_t t_start, t_active;
	nghttp2_session *h2;
	uint8_t *out;
	size_t out_off, out_len, out_cap;
	uint8_t *in; /* HTTP/1.1 input not yet consumed */
	size_t in_len, in_cap;
	struct preq *h1; /* HTTP/1.1: the request being read or answered */
	struct preq *reqs;
	uint32_t n_reqs;
	vmemo_t vapid[VAPID_MEMO];
	unsigned vapid_next; /* the slot the next verified header takes */
} pconn_t;

typedef struct preq {
	pconn_t *pc; /* NULL once detached */
	struct preq *prev, *next;
	int32_t sid;
	uint8_t phase;
	bool detached;
	bool reset; /* HTTP/2: RST_STREAM sent, waiting for the close */
	bool too_big_headers;
	bool path_bad;
	bool has_ttl, ttl_bad, urgency_bad, topic_bad, ce_other, has_ce, cl_bad;
	uint64_t t_start;
	char method[8];
	char path[96];
	uint32_t ttl;
	int priority; /* 0: none */
	char topic[SP_WP_TOPIC_MAX + 1];
	size_t topic_len;
	char *auth;
	size_t auth_len;
	int64_t content_length;
	size_t header_bytes;
	uint8_t *body;
	size_t body_len;
	uint8_t cap_hash[32];
	uint64_t epoch; /* the removal epoch when the look-up was sent (sp_wpcache.h) */
	int vapid;      /* 0 ok, else -SP_VAPID_* */
	uint8_t vapid_key[SP_VAPID_KEY_LEN];
	sp_msg_t *msg;
	/* The answer. */
	int status;
	char resp[192];
	char *resp_big;         /* a longer body (enrollment's JSON), or NULL: resp */
	const char *resp_ctype; /* static; NULL: text/plain */
	size_t resp_len, resp_off;
	char loc[320];
	int64_t resp_ttl;     /* -1: no TTL header */
	uint32_t retry_after; /* seconds, 0: none */
} preq_t;

struct sp_provider {
	sp_worker_t *w;
	SSL_CTX *ctx;
	struct evconnlistener *lst;
	redisAsyncContext *ac;
	bool redis_up;
	uint64_t redis_retry;
	char rhost[256];
	char rpath[256];
	uint16_t rport;
	uint32_t redis_out;      /* commands sent, not answered yet */
	uint64_t redis_progress; /* when the last answer came (or the first of redis_out went) */
	pconn_t *conns;
	pconn_t *reap;
	pconn_t *dirty;
	struct event *ev_reap;
	nghttp2_session_callbacks *cbs;
	char origin[256];
	size_t origin_len;
	sp_wpcache_t cache;
	uint64_t cache_seen[4]; /* cache counters already added to the metrics */
	/* Message ids come from here: RAND_bytes per push cost 6% of the door's CPU (most of
	 * it OpenSSL's getpid() fork check), one draw per 256 pushes does not. */
	uint8_t rand_pool[RAND_POOL];
	size_t rand_left;
};

static void pc_flush(pconn_t *pc);
static void pc_finish(pconn_t *pc);
static void redis_sent(sp_provider_t *pv);
static void redis_got(redisAsyncContext *ac);
static void h1_process(pconn_t *pc);
static void req_complete(preq_t *r);

static const sp_server_config_t *cfg_of(const pconn_t *pc)
{
	return &pc->pv->w->srv->cfg;
}

static void count_refusal(sp_provider_t *pv, unsigned which)
{
	sp_metric_inc(&pv->w->metrics, SP_M_PROVIDER_REFUSED + which);
}

/* ---- requests ------------------------------------------------------------------------------ */

static preq_t *req_new(pconn_t *pc, int32_t sid)
{
	preq_t *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->pc = pc;
	r->sid = sid;
	r->t_start = pc->pv->w->now;
	r->content_length = -1;
	r->resp_ttl = -1;
	r->next = pc->reqs;
	if (pc->reqs)
		pc->reqs->prev = r;
	pc->reqs = r;
	pc->n_reqs++;
	return r;
}

static void req_unlink(preq_t *r)
{
	pconn_t *pc = r->pc;

	if (!pc)
		return;
	if (r->prev)
		r->prev->next = r->next;
	else
		pc->reqs = r->next;
	if (r->next)
		r->next->prev = r->prev;
	r->prev = r->next = NULL;
	pc->n_reqs--;
	if (pc->h1 == r)
		pc->h1 = NULL;
	r->pc = NULL;
}

static void req_free(preq_t *r)
{
	if (!r)
		return;
	req_unlink(r);
	free(r->auth);
	free(r->body);
	free(r->resp_big);
	free(r);
}

/* The connection is going: a request waiting for Redis stays (its callback frees it), one
 * whose message is out lets the message finish unanswered, the others go now. */
static void req_detach(preq_t *r)
{
	req_unlink(r);
	if (r->phase == RQ_LOOKUP) {
		r->detached = true;
		return;
	}
	if (r->phase == RQ_ROUTED && r->msg)
		r->msg->origin = NULL;
	req_free(r);
}

static const char *status_text(int st)
{
	switch (st) {
	case 201:
		return "Created";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 410:
		return "Gone";
	case 411:
		return "Length Required";
	case 413:
		return "Content Too Large";
	case 415:
		return "Unsupported Media Type";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 503:
		return "Service Unavailable";
	default:
		return "Internal Server Error";
	}
}

static unsigned status_index(int st)
{
	static const int table[SP_PROVIDER_STATUS_LABELS] = {201, 400, 401, 403, 404, 405, 408, 410,
	                                                     411, 413, 415, 429, 431, 500, 503};

	for (unsigned i = 0; i < SP_PROVIDER_STATUS_LABELS; i++)
		if (table[i] == st)
			return i;
	return 13; /* 500 */
}

static H2_SSIZE resp_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len,
                          uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	preq_t *r = src->ptr;
	size_t n = r->resp_len - r->resp_off;

	(void)s;
	(void)sid;
	(void)ud;
	if (n > len)
		n = len;
	memcpy(buf, (r->resp_big ? r->resp_big : r->resp) + r->resp_off, n);
	r->resp_off += n;
	if (r->resp_off == r->resp_len)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (H2_SSIZE)n;
}

static void out_append(pconn_t *pc, const void *p, size_t n)
{
	if (pc->out_len + n > pc->out_cap) {
		size_t cap = pc->out_cap ? pc->out_cap : 4096;
		uint8_t *o;

		if (pc->out_off) {
			memmove(pc->out, pc->out + pc->out_off, pc->out_len - pc->out_off);
			pc->out_len -= pc->out_off;
			pc->out_off = 0;
		}
		while (cap < pc->out_len + n)
			cap *= 2;
		if (cap > pc->out_cap) {
			o = realloc(pc->out, cap);
			if (!o) {
				pc_finish(pc);
				return;
			}
			pc->out = o;
			pc->out_cap = cap;
		}
	}
	memcpy(pc->out + pc->out_len, p, n);
	pc->out_len += n;
}

/* Answers r with status and a short text body; h2 submits, h1 writes into the output. The
 * caller flushes (or, inside nghttp2's callbacks, mem_recv's caller does). */
static void respond(preq_t *r, int status, const char *reason)
{
	pconn_t *pc = r->pc;
	const sp_server_config_t *cfg;
	char ttl_s[16], ra_s[16], clen[16];

	if (!pc || r->phase == RQ_ANSWERED)
		return;
	cfg = cfg_of(pc);
	(void)cfg;
	r->phase = RQ_ANSWERED;
	r->status = status;
	if (!r->resp_big) {
		r->resp_len = (size_t)snprintf(r->resp, sizeof(r->resp), "%s\n", reason);
		if (r->resp_len >= sizeof(r->resp))
			r->resp_len = sizeof(r->resp) - 1;
	}
	sp_metric_inc(&pc->pv->w->metrics, SP_M_PROVIDER_RESPONSES + status_index(status));
	snprintf(ttl_s, sizeof(ttl_s), "%lld", (long long)r->resp_ttl);
	snprintf(ra_s, sizeof(ra_s), "%u", r->retry_after);
	snprintf(clen, sizeof(clen), "%zu", r->resp_len);
	if (pc->state == PC_H2) {
		char st[4];
		nghttp2_nv nv[6];
		size_t n = 0;
		h2_data_provider dp = {.source.ptr = r, .read_callback = resp_read};

#define NV(k, v)                                                                                   \
	nv[n++] = (nghttp2_nv){(uint8_t *)(k), (uint8_t *)(v), sizeof(k) - 1, strlen(v),           \
	                       NGHTTP2_NV_FLAG_NO_COPY_NAME}
		snprintf(st, sizeof(st), "%d", status);
		NV(":status", st);
		NV("content-type", r->resp_ctype ? r->resp_ctype : "text/plain; charset=utf-8");
		NV("content-length", clen);
		if (r->loc[0])
			NV("location", r->loc);
		if (r->resp_ttl >= 0)
			NV("ttl", ttl_s);
		if (r->retry_after)
			NV("retry-after", ra_s);
#undef NV
		if (h2_submit_response(pc->h2, r->sid, nv, n, &dp) != 0)
			nghttp2_submit_rst_stream(pc->h2, NGHTTP2_FLAG_NONE, r->sid,
			                          NGHTTP2_INTERNAL_ERROR);
		return;
	} else {
		char head[768];
		int hl;

		/* A body we did not read to its end leaves the stream unusable: close after. */
		if (r->phase != RQ_ANSWERED || status >= 400)
			if (r->body_len < (size_t)(r->content_length > 0 ? r->content_length : 0))
				pc->h1_close = true;
		hl = snprintf(head, sizeof(head),
		              "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
		              "Content-Length: %s\r\n%s%s%s%s%s%s%s%s%s\r\n",
		              status, status_text(status),
		              r->resp_ctype ? r->resp_ctype : "text/plain; charset=utf-8", clen,
		              r->loc[0] ? "Location: " : "", r->loc, r->loc[0] ? "\r\n" : "",
		              r->resp_ttl >= 0 ? "TTL: " : "", r->resp_ttl >= 0 ? ttl_s : "",
		              r->resp_ttl >= 0 ? "\r\n" : "", r->retry_after ? "Retry-After: " : "",
		              r->retry_after ? ra_s : "", r->retry_after ? "\r\n" : "");
		if (pc->h1_close)
			hl += snprintf(head + hl - 2, sizeof(head) - (size_t)hl + 2,
			               "Connection: close\r\n\r\n") -
			      2;
		out_append(pc, head, (size_t)hl);
		out_append(pc, r->resp_big ? r->resp_big : r->resp, r->resp_len);
	}
}

static size_t h1_cap(const pconn_t *pc)
{
	const sp_server_config_t *cfg = cfg_of(pc);

	return (size_t)(cfg->provider_max_header + cfg->provider_max_body) + 4;
}

/* After an HTTP/1.1 answer: the request is done; read the next one (keep-alive). */
static void h1_done(pconn_t *pc)
{
	preq_t *r = pc->h1;
	size_t used;

	if (!r || r->phase != RQ_ANSWERED)
		return;
	used = (size_t)r->content_length; /* consumed bytes were removed when parsed */
	(void)used;
	req_free(r);
	if (!pc->h1_close && pc->in_len)
		h1_process(pc);
	if (pc->paused && !pc->finished && pc->in_len <= h1_cap(pc)) {
		pc->paused = false;
		event_add(&pc->ev_read, NULL);
		event_active(&pc->ev_read, EV_READ, 0); /* TLS may hold bytes already read */
	}
}

/* Answers written during one loop turn (a device's ACK frame finishing many messages) go
 * out in one flush per connection, from the provider's end-of-turn event (on_reap). */
static void pc_mark(pconn_t *pc)
{
	if (pc->dirty || pc->finished)
		return;
	pc->dirty = true;
	pc->dirty_next = pc->pv->dirty;
	pc->pv->dirty = pc;
	event_active(pc->pv->ev_reap, 0, 0);
}

static void answer(preq_t *r, int status, const char *reason)
{
	pconn_t *pc = r->pc;

	respond(r, status, reason);
	if (!pc)
		return;
	if (pc->state == PC_H1)
		h1_done(pc);
	if (!pc->in_recv)
		pc_mark(pc);
}

/* ---- routing ------------------------------------------------------------------------------- */

void sp_provider_result(sp_worker_t *w, sp_node_t *n)
{
	sp_msg_t *msg = n->msg;
	preq_t *r = msg->origin;
	uint8_t st = n->status;
	uint32_t ttl = msg->ttl;

	sp_msg_free(w, msg);
	if (!r)
		return;
	r->msg = NULL;
	switch (st) {
	case SP_ST_DELIVERED:
	case SP_ST_QUEUED:
		r->resp_ttl = st == SP_ST_DELIVERED ? ttl : ttl;
		answer(r, 201, st == SP_ST_DELIVERED ? "delivered" : "queued");
		return;
	case SP_ST_EXPIRED:
		r->resp_ttl = 0;
		answer(r, 201, "not connected; TTL 0: dropped");
		return;
	case SP_ST_PAYLOAD_TOO_LARGE:
		answer(r, 413, "payload too large");
		return;
	case SP_ST_QUOTA_EXCEEDED:
		r->retry_after = 60;
		answer(r, 429, "the device's queue is full");
		return;
	case SP_ST_TOO_MANY_REQUESTS:
		r->retry_after = RETRY_AFTER_S;
		answer(r, 429, "too many requests");
		return;
	case SP_ST_TRY_LATER:
	case SP_ST_DEVICE_OFFLINE:
	case SP_ST_SHUTDOWN:
		r->retry_after = RETRY_AFTER_S;
		answer(r, 503, "try later");
		return;
	case SP_ST_BAD_DEVICE_TOKEN:
	case SP_ST_FORBIDDEN:
		answer(r, 410, "the subscription's device is gone");
		return;
	default:
		answer(r, 500, "internal error");
		return;
	}
}

/* n <= RAND_POOL fresh random bytes from the worker's pool; -1 if the generator failed. */
static int pool_rand(sp_provider_t *pv, uint8_t *out, size_t n)
{
	if (pv->rand_left < n) {
		if (RAND_bytes(pv->rand_pool, RAND_POOL) != 1)
			return -1;
		pv->rand_left = RAND_POOL;
	}
	memcpy(out, pv->rand_pool + RAND_POOL - pv->rand_left, n);
	OPENSSL_cleanse(pv->rand_pool + RAND_POOL - pv->rand_left, n); /* used once */
	pv->rand_left -= n;
	return 0;
}

static void hex_into(char *out, const uint8_t *p, size_t n)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

static void route(preq_t *r, const uint8_t *token, const uint8_t *sub)
{
	sp_worker_t *w = r->pc->pv->w;
	const sp_server_config_t *cfg = &w->srv->cfg;
	uint32_t blen = SP_WP_BLOB_HEADER + (uint32_t)r->body_len;
	uint32_t ttl = r->ttl > cfg->max_ttl ? (uint32_t)cfg->max_ttl : r->ttl;
	sp_msg_t *msg;
	char idhex[2 * SP_MSG_ID_LEN + 1];

	if (blen > cfg->max_blob) {
		answer(r, 413, "payload too large for this relay");
		return;
	}
	msg = sp_msg_new(w, 1, blen);
	if (!msg) {
		answer(r, 500, "out of memory");
		return;
	}
	if (pool_rand(r->pc->pv, msg->msg_id, SP_MSG_ID_LEN) < 0) {
		sp_msg_free(w, msg);
		answer(r, 500, "no randomness");
		return;
	}
	msg->on_result = sp_provider_result;
	msg->origin = r;
	msg->ttl = ttl;
	msg->expires = ttl ? w->now + (uint64_t)ttl * 1000 : 0;
	msg->expires_wall = ttl ? sp_time_wall_ms() + (uint64_t)ttl * 1000 : 0;
	if (r->priority) {
		msg->has_priority = 1;
		msg->priority = (uint8_t)r->priority;
	}
	if (r->topic_len) {
		/* Per subscription: the same topic from two apps of one device must not collapse.
		 */
		memcpy(msg->collapse, "wp", 2);
		memcpy(msg->collapse + 2, sub, SP_WP_SUB_ID_LEN);
		memcpy(msg->collapse + 2 + SP_WP_SUB_ID_LEN, r->topic, r->topic_len);
		msg->collapse_len = (uint8_t)(2 + SP_WP_SUB_ID_LEN + r->topic_len);
	}
	memcpy(msg->recipients, token, SP_TOKEN_LEN);
	msg->blob[0] = SP_WP_BLOB_MAGIC;
	memcpy(msg->blob + 1, sub, SP_WP_SUB_ID_LEN);
	if (r->body_len)
		memcpy(msg->blob + SP_WP_BLOB_HEADER, r->body, r->body_len);
	free(r->body);
	r->body = NULL;
	hex_into(idhex, msg->msg_id, SP_MSG_ID_LEN);
	snprintf(r->loc, sizeof(r->loc), "%s/m/%s", r->pc->pv->origin, idhex);
	r->msg = msg;
	r->phase = RQ_ROUTED;
	sp_metric_inc(&w->metrics, SP_M_MESSAGES_ACCEPTED);
	sp_route(w, &msg->nodes[0]);
	sp_worker_after(w);
}

static void cache_metrics(sp_provider_t *pv)
{
	const uint64_t now[4] = {pv->cache.hits, pv->cache.misses, pv->cache.stale,
	                         pv->cache.evictions};

	for (unsigned i = 0; i < 4; i++) {
		if (now[i] != pv->cache_seen[i])
			sp_metric_add(&pv->w->metrics, SP_M_PROVIDER_CACHE + i,
			              (int64_t)(now[i] - pv->cache_seen[i]));
		pv->cache_seen[i] = now[i];
	}
}

/* The subscription's record is known (from Redis or the cache): its key, then the route. */
static void admit(preq_t *r, const uint8_t *token, const uint8_t *sub, const uint8_t *ask)
{
	sp_worker_t *w = r->pc->pv->w;

	if (ask) {
		if (r->vapid == -SP_VAPID_ABSENT) {
			answer(r, 401, "this subscription needs vapid authorization");
			return;
		}
		if (memcmp(ask, r->vapid_key, SP_VAPID_KEY_LEN) != 0) {
			answer(r, 403, "not the application server key of this subscription");
			return;
		}
	} else if (w->srv->cfg.provider_require_key) {
		answer(r, 403, "unrestricted subscriptions are refused here");
		return;
	}
	route(r, token, sub);
}

static const redisReply *hfield(const redisReply *rep, const char *name)
{
	for (size_t i = 0; i + 1 < rep->elements; i += 2) {
		const redisReply *k = rep->element[i];

		if (k->type == REDIS_REPLY_STRING && k->len == strlen(name) &&
		    memcmp(k->str, name, k->len) == 0 &&
		    rep->element[i + 1]->type == REDIS_REPLY_STRING)
			return rep->element[i + 1];
	}
	return NULL;
}

static void on_lookup(redisAsyncContext *ac, void *reply, void *arg)
{
	preq_t *r = arg;
	const redisReply *rep = reply;
	const redisReply *tok, *sub, *ask, *gone;
	sp_worker_t *w;

	redis_got(ac);
	if (r->detached) {
		req_free(r);
		return;
	}
	w = r->pc->pv->w;
	w->now = sp_now_ms();
	if (atomic_load(&w->srv->stopping))
		return;
	r->phase = RQ_BODY; /* not waiting any more: answer() may finish it */
	if (!rep || rep->type != REDIS_REPLY_ARRAY) {
		r->retry_after = RETRY_AFTER_S;
		answer(r, 503, "the subscription store is unavailable");
		return;
	}
	if (rep->elements == 0) {
		answer(r, 404, "no such subscription");
		return;
	}
	gone = hfield(rep, "gone");
	tok = hfield(rep, "token");
	sub = hfield(rep, "sub");
	ask = hfield(rep, "ask");
	if (gone) {
		answer(r, 410, "the subscription was removed");
		return;
	}
	if (!tok || tok->len != SP_TOKEN_LEN || !sub || sub->len != SP_WP_SUB_ID_LEN ||
	    (ask && ask->len != SP_VAPID_KEY_LEN)) {
		answer(r, 500, "a malformed subscription record");
		return;
	}
	sp_wpcache_put(&r->pc->pv->cache, r->cap_hash, (const uint8_t *)tok->str,
	               (const uint8_t *)sub->str, ask ? (const uint8_t *)ask->str : NULL, w->now,
	               r->epoch, atomic_load(&w->srv->wp_epoch));
	cache_metrics(r->pc->pv);
	admit(r, (const uint8_t *)tok->str, (const uint8_t *)sub->str,
	      ask ? (const uint8_t *)ask->str : NULL);
}

static void redis_connect(sp_provider_t *pv);

/* Every command sent is counted until its callback runs (with a reply, or NULL when the
 * connection goes), so the tick can tell a Redis that stopped answering (redis_check). */
static void redis_sent(sp_provider_t *pv)
{
	if (pv->redis_out++ == 0)
		pv->redis_progress = sp_now_ms();
}

static void redis_got(redisAsyncContext *ac)
{
	sp_provider_t *pv = ac->data;

	if (pv->redis_out)
		pv->redis_out--;
	pv->redis_progress = sp_now_ms();
}

/* From the tick: commands are out and nothing came back for store_timeout: the connection is
 * dropped, which answers each of them at once (on_lookup: 503; subscriptions: TRY_LATER),
 * and made again after REDIS_RETRY_MS. Without this a stopped Redis left pushes and
 * SUBSCRIBEs unanswered for as long as it stayed stopped. */
static void redis_check(sp_provider_t *pv)
{
	const sp_server_config_t *cfg = &pv->w->srv->cfg;
	redisAsyncContext *ac = pv->ac;

	if (!ac || !pv->redis_out || pv->w->now < pv->redis_progress ||
	    pv->w->now - pv->redis_progress <= (uint64_t)cfg->store_timeout)
		return;
	SP_LOG(SP_LOG_WARN, "provider_store_timeout",
	       "worker=%d pending=%u msg=\"no answer from Redis within store_timeout; "
	       "reconnecting\"",
	       pv->w->id, pv->redis_out);
	count_refusal(pv, SP_PROVIDER_LIMIT_STORE_TIMEOUT);
	pv->ac = NULL;
	pv->redis_up = false;
	redisAsyncFree(ac); /* runs every pending callback with no reply */
	pv->redis_out = 0;
	pv->redis_retry = sp_now_ms() + REDIS_RETRY_MS;
}

static void on_redis_connect(const redisAsyncContext *ac, int status)
{
	sp_provider_t *pv = ac->data;

	if (status != REDIS_OK) {
		pv->ac = NULL; /* hiredis frees it */
		pv->redis_up = false;
		return;
	}
	pv->redis_up = true;
}

static void on_redis_disconnect(const redisAsyncContext *ac, int status)
{
	sp_provider_t *pv = ac->data;

	(void)status;
	pv->ac = NULL;
	pv->redis_up = false;
	pv->redis_retry = sp_now_ms() + REDIS_RETRY_MS;
}

static void redis_connect(sp_provider_t *pv)
{
	redisAsyncContext *ac = pv->rpath[0] ? redisAsyncConnectUnix(pv->rpath)
	                                     : redisAsyncConnect(pv->rhost, pv->rport);

	pv->redis_retry = sp_now_ms() + REDIS_RETRY_MS;
	if (!ac || ac->err) {
		if (ac)
			redisAsyncFree(ac);
		return;
	}
	ac->data = pv;
	if (redisLibeventAttach(ac, pv->w->base) != REDIS_OK) {
		redisAsyncFree(ac);
		return;
	}
	redisAsyncSetConnectCallback(ac, on_redis_connect);
	redisAsyncSetDisconnectCallback(ac, on_redis_disconnect);
	pv->ac = ac;
}

/* sp_vapid_check through the connection's memo: a header that verified here before and whose
 * exp is still ahead is taken as it was (exp was checked against 24 h when it verified). */
static int vapid_check(pconn_t *pc, preq_t *r, const char **why)
{
	int64_t now = (int64_t)(sp_time_wall_ms() / 1000), exp = 0;
	vmemo_t *m;
	int rc;

	for (unsigned i = 0; i < VAPID_MEMO && r->auth; i++) {
		m = &pc->vapid[i];
		if (!m->auth || m->len != r->auth_len || memcmp(m->auth, r->auth, r->auth_len) != 0)
			continue;
		if (m->exp <= now) {
			free(m->auth);
			m->auth = NULL;
			break;
		}
		memcpy(r->vapid_key, m->key, SP_VAPID_KEY_LEN);
		sp_metric_inc(&pc->pv->w->metrics, SP_M_PROVIDER_VAPID + 1);
		return 0;
	}
	rc = sp_vapid_check(r->auth, r->auth_len, pc->pv->origin, now, r->vapid_key, &exp, why);
	if (rc == -SP_VAPID_ABSENT)
		return rc;
	sp_metric_inc(&pc->pv->w->metrics, SP_M_PROVIDER_VAPID);
	if (rc < 0)
		return rc;
	m = &pc->vapid[pc->vapid_next];
	pc->vapid_next = (pc->vapid_next + 1) % VAPID_MEMO;
	free(m->auth);
	m->auth = malloc(r->auth_len);
	if (m->auth) {
		memcpy(m->auth, r->auth, r->auth_len);
		m->len = r->auth_len;
		m->exp = exp;
		memcpy(m->key, r->vapid_key, SP_VAPID_KEY_LEN);
	}
	return 0;
}

/* Headers and body are in: the checks that need no Redis, then the look-up. */
static void req_complete(preq_t *r)
{
	pconn_t *pc = r->pc;
	sp_provider_t *pv = pc->pv;
	const char *why = NULL;
	const sp_wpcache_rec_t *rec;
	char key[128];

	if (r->phase >= RQ_LOOKUP)
		return;
	if (r->too_big_headers) {
		answer(r, 431, "request headers too large");
		return;
	}
	if (strcmp(r->path, SP_ENROLL_PATH) == 0) {
		sp_enroll_request(pv->w, r); /* PROTOCOL.md 16 */
		return;
	}
	if (strncmp(r->path, "/push/", 6) != 0 || r->path_bad) {
		answer(r, 404, "no such resource");
		return;
	}
	if (strcmp(r->method, "POST") != 0) {
		answer(r, 405, "only POST to a push resource");
		return;
	}
	if (sp_wp_capability_hash(r->path + 6, strlen(r->path + 6), r->cap_hash) < 0) {
		answer(r, 404, "no such subscription");
		return;
	}
	if (!r->has_ttl || r->ttl_bad) {
		answer(r, 400, "a TTL header (seconds) is required");
		return;
	}
	if (r->urgency_bad) {
		answer(r, 400, "Urgency: very-low, low, normal or high");
		return;
	}
	if (r->topic_bad) {
		answer(r, 400, "Topic: 1 to 32 base64url characters");
		return;
	}
	if (r->body_len || r->has_ce) {
		if (r->ce_other || !r->has_ce) {
			answer(r, 415, "Content-Encoding: aes128gcm is required");
			return;
		}
		if (sp_wp_check_aes128gcm(r->body, r->body_len, &why) < 0) {
			answer(r, 400, why);
			return;
		}
	}
	r->vapid = vapid_check(pc, r, &why);
	if (r->vapid < 0 && r->vapid != -SP_VAPID_ABSENT) {
		answer(r, 403, why);
		return;
	}
	r->epoch = atomic_load(&pv->w->srv->wp_epoch);
	rec = sp_wpcache_get(&pv->cache, r->cap_hash, pv->w->now, r->epoch);
	cache_metrics(pv);
	if (rec) {
		admit(r, rec->token, rec->sub, rec->has_ask ? rec->ask : NULL);
		return;
	}
	if (!pv->ac || !pv->redis_up) {
		r->retry_after = RETRY_AFTER_S;
		answer(r, 503, "the subscription store is unavailable");
		return;
	}
	sp_wp_key_cap(key, sizeof(key), r->cap_hash);
	if (redisAsyncCommand(pv->ac, on_lookup, r, "HGETALL %s", key) != REDIS_OK) {
		r->retry_after = RETRY_AFTER_S;
		answer(r, 503, "the subscription store is unavailable");
		return;
	}
	redis_sent(pv);
	r->phase = RQ_LOOKUP;
}

/* One request header (either protocol); names compared without case. */
static void req_header(preq_t *r, const char *name, size_t nl, const char *v, size_t vl)
{
	const sp_server_config_t *cfg = cfg_of(r->pc);

	r->header_bytes += nl + vl + 32;
	if (r->header_bytes > (size_t)cfg->provider_max_header) {
		if (!r->too_big_headers)
			count_refusal(r->pc->pv, SP_PROVIDER_LIMIT_HEADER_BYTES);
		r->too_big_headers = true;
		return;
	}
#define IS(s) (nl == sizeof(s) - 1 && strncasecmp(name, s, nl) == 0)
	if (IS(":method")) {
		snprintf(r->method, sizeof(r->method), "%.*s", (int)vl, v);
	} else if (IS(":path")) {
		if (vl >= sizeof(r->path))
			r->path_bad = true;
		else
			snprintf(r->path, sizeof(r->path), "%.*s", (int)vl, v);
	} else if (IS("ttl")) {
		r->has_ttl = true;
		r->ttl_bad = sp_wp_parse_ttl(v, vl, &r->ttl) < 0;
	} else if (IS("urgency")) {
		int p = sp_wp_parse_urgency(v, vl);

		r->urgency_bad = p < 0;
		r->priority = p < 0 ? 0 : p;
	} else if (IS("topic")) {
		r->topic_bad = !sp_wp_topic_ok(v, vl);
		if (!r->topic_bad) {
			memcpy(r->topic, v, vl);
			r->topic_len = vl;
		}
	} else if (IS("content-encoding")) {
		r->has_ce = true;
		r->ce_other = !(vl == 9 && strncasecmp(v, "aes128gcm", 9) == 0);
	} else if (IS("authorization")) {
		char *a = malloc(vl + 1);

		if (a) {
			free(r->auth);
			memcpy(a, v, vl);
			a[vl] = '\0';
			r->auth = a;
			r->auth_len = vl;
		}
	} else if (IS("content-length")) {
		int64_t n = 0;

		for (size_t i = 0; i < vl; i++) {
			if (v[i] < '0' || v[i] > '9' || n > ((int64_t)1 << 40)) {
				r->cl_bad = true;
				break;
			}
			n = n * 10 + (v[i] - '0');
		}
		if (vl == 0)
			r->cl_bad = true;
		r->content_length = n;
	}
#undef IS
}

/* Body bytes; returns -1 once the body is over the limit (the request has been answered). */
static int req_body(preq_t *r, const uint8_t *p, size_t n)
{
	const sp_server_config_t *cfg = cfg_of(r->pc);

	if (r->phase == RQ_ANSWERED)
		return 0;
	if (r->body_len + n > (size_t)cfg->provider_max_body) {
		count_refusal(r->pc->pv, SP_PROVIDER_LIMIT_BODY_BYTES);
		answer(r, 413, "payload too large");
		return -1;
	}
	if (!r->body) {
		r->body = malloc((size_t)cfg->provider_max_body);
		if (!r->body) {
			answer(r, 500, "out of memory");
			return -1;
		}
	}
	memcpy(r->body + r->body_len, p, n);
	r->body_len += n;
	return 0;
}

/* ---- HTTP/2 -------------------------------------------------------------------------------- */

static int h2_on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
	pconn_t *pc = ud;
	preq_t *r;

	if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	if (pc->n_reqs >= (uint32_t)cfg_of(pc)->provider_max_streams) {
		nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id,
		                          NGHTTP2_REFUSED_STREAM);
		return 0;
	}
	r = req_new(pc, f->hd.stream_id);
	if (!r)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	nghttp2_session_set_stream_user_data(s, f->hd.stream_id, r);
	return 0;
}

static int h2_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                        const uint8_t *v, size_t vl, uint8_t flags, void *ud)
{
	preq_t *r = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);

	(void)flags;
	(void)ud;
	if (!r || f->hd.type != NGHTTP2_HEADERS || r->phase != RQ_HEADERS)
		return 0;
	req_header(r, (const char *)name, nl, (const char *)v, vl);
	return 0;
}

static int h2_on_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *p, size_t n,
                      void *ud)
{
	preq_t *r = nghttp2_session_get_stream_user_data(s, sid);

	(void)flags;
	(void)ud;
	if (r && r->phase == RQ_BODY)
		req_body(r, p, n);
	return 0;
}

static int h2_on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
	preq_t *r;

	(void)ud;
	if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
		return 0;
	r = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
	if (!r)
		return 0;
	if (f->hd.type == NGHTTP2_HEADERS && r->phase == RQ_HEADERS) {
		r->phase = RQ_BODY;
		if (r->too_big_headers) {
			answer(r, 431, "request headers too large");
			return 0;
		}
		if (r->content_length > cfg_of(r->pc)->provider_max_body) {
			count_refusal(r->pc->pv, SP_PROVIDER_LIMIT_BODY_BYTES);
			answer(r, 413, "payload too large");
			return 0;
		}
	}
	if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) && r->phase == RQ_BODY)
		req_complete(r);
	return 0;
}

/* Streams refused past provider_max_streams, by nghttp2 (the client ignored SETTINGS) or by
 * h2_on_begin_headers, are counted as they go out. */
static int h2_on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
	pconn_t *pc = ud;

	(void)s;
	if (f->hd.type == NGHTTP2_RST_STREAM && f->rst_stream.error_code == NGHTTP2_REFUSED_STREAM)
		count_refusal(pc->pv, SP_PROVIDER_LIMIT_STREAMS);
	return 0;
}

static int h2_on_stream_close(nghttp2_session *s, int32_t sid, uint32_t code, void *ud)
{
	preq_t *r = nghttp2_session_get_stream_user_data(s, sid);

	(void)code;
	(void)ud;
	if (!r)
		return 0;
	nghttp2_session_set_stream_user_data(s, sid, NULL);
	req_detach(r);
	return 0;
}

static int h2_start(pconn_t *pc)
{
	const sp_server_config_t *cfg = cfg_of(pc);
	nghttp2_settings_entry iv[] = {
	        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)cfg->provider_max_streams},
	        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)cfg->provider_max_header},
	};

	if (nghttp2_session_server_new(&pc->h2, pc->pv->cbs, pc) != 0)
		return -1;
	return nghttp2_submit_settings(pc->h2, NGHTTP2_FLAG_NONE, iv, 2) == 0 ? 0 : -1;
}

/* ---- HTTP/1.1 ------------------------------------------------------------------------------ */

static const char *find_crlf2(const uint8_t *p, size_t n)
{
	for (size_t i = 3; i < n; i++)
		if (p[i] == '\n' && p[i - 1] == '\r' && p[i - 2] == '\n' && p[i - 3] == '\r')
			return (const char *)p + i + 1;
	return NULL;
}

static void h1_consume(pconn_t *pc, size_t n)
{
	memmove(pc->in, pc->in + n, pc->in_len - n);
	pc->in_len -= n;
}

/* Reads requests from pc->in: the head, then Content-Length bytes of body. */
static void h1_process(pconn_t *pc)
{
	const sp_server_config_t *cfg = cfg_of(pc);

	while (!pc->finished && pc->in_len) {
		preq_t *r = pc->h1;
		const char *end, *p, *eol;

		if (r && r->phase == RQ_BODY) {
			size_t want = (size_t)r->content_length - r->body_len;
			size_t n = pc->in_len < want ? pc->in_len : want;

			if (req_body(r, pc->in, n) < 0)
				return;
			h1_consume(pc, n);
			if (r->body_len == (size_t)r->content_length)
				req_complete(r);
			return;
		}
		if (r)
			return; /* answering: the next request waits (no pipelining) */
		if (pc->h1_close)
			return; /* "Connection: close" reads its own body above, nothing after */
		end = find_crlf2(pc->in, pc->in_len);
		if (!end) {
			if (pc->in_len > (size_t)cfg->provider_max_header) {
				count_refusal(pc->pv, SP_PROVIDER_LIMIT_HEADER_BYTES);
				r = req_new(pc, 0);
				if (!r) {
					pc_finish(pc);
					return;
				}
				pc->h1 = r;
				pc->h1_close = true;
				answer(r, 431, "request headers too large");
			}
			return;
		}
		r = req_new(pc, 0);
		if (!r) {
			pc_finish(pc);
			return;
		}
		pc->h1 = r;
		if ((size_t)(end - (const char *)pc->in) > (size_t)cfg->provider_max_header) {
			count_refusal(pc->pv, SP_PROVIDER_LIMIT_HEADER_BYTES);
			pc->h1_close = true;
			answer(r, 431, "request headers too large");
			return;
		}
		/* Request line: METHOD SP PATH SP HTTP/1.x */
		p = (const char *)pc->in;
		eol = memchr(p, '\r', (size_t)(end - p));
		{
			const char *sp1 = memchr(p, ' ', (size_t)(eol - p));
			const char *sp2 =
			        sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;

			if (!sp1 || !sp2 || eol - sp2 - 1 != 8 ||
			    strncmp(sp2 + 1, "HTTP/1.", 7) != 0) {
				pc->h1_close = true;
				answer(r, 400, "not an HTTP/1.1 request");
				return;
			}
			req_header(r, ":method", 7, p, (size_t)(sp1 - p));
			req_header(r, ":path", 5, sp1 + 1, (size_t)(sp2 - sp1 - 1));
			if (sp2[8] == '0')
				pc->h1_close = true; /* HTTP/1.0 */
		}
		for (p = eol + 2; p < end - 2;) {
			const char *colon, *v, *ve;

			eol = memchr(p, '\r', (size_t)(end - p));
			colon = memchr(p, ':', (size_t)(eol - p));
			if (!colon || colon == p) {
				pc->h1_close = true;
				answer(r, 400, "a malformed header line");
				return;
			}
			v = colon + 1;
			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			ve = eol;
			while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
				ve--;
			if ((size_t)(colon - p) == 17 &&
			    strncasecmp(p, "transfer-encoding", 17) == 0) {
				pc->h1_close = true;
				answer(r, 411, "send a Content-Length (no chunked bodies)");
				return;
			}
			if ((size_t)(colon - p) == 10 && strncasecmp(p, "connection", 10) == 0 &&
			    (size_t)(ve - v) == 5 && strncasecmp(v, "close", 5) == 0)
				pc->h1_close = true;
			req_header(r, p, (size_t)(colon - p), v, (size_t)(ve - v));
			p = eol + 2;
		}
		h1_consume(pc, (size_t)(end - (const char *)pc->in));
		r->phase = RQ_BODY;
		if (r->cl_bad) {
			pc->h1_close = true;
			answer(r, 400, "a malformed Content-Length");
			return;
		}
		if (r->content_length > cfg->provider_max_body) {
			count_refusal(pc->pv, SP_PROVIDER_LIMIT_BODY_BYTES);
			pc->h1_close = true;
			answer(r, 413, "payload too large");
			return;
		}
		if (r->content_length <= 0) {
			r->content_length = 0;
			req_complete(r);
			continue;
		}
	}
}

/* ---- connections --------------------------------------------------------------------------- */

static void pc_finish(pconn_t *pc)
{
	sp_provider_t *pv = pc->pv;

	if (pc->finished)
		return;
	pc->finished = true;
	if (pc->ssl && pc->state != PC_HANDSHAKE) {
		ERR_clear_error();
		SSL_shutdown(pc->ssl); /* close_notify, once, best effort */
	}
	while (pc->reqs)
		req_detach(pc->reqs);
	event_del(&pc->ev_read);
	event_del(&pc->ev_write);
	close(pc->fd);
	pc->fd = -1;
	if (pc->prev)
		pc->prev->next = pc->next;
	else
		pv->conns = pc->next;
	if (pc->next)
		pc->next->prev = pc->prev;
	pc->reap_next = pv->reap;
	pv->reap = pc;
	event_active(pv->ev_reap, 0, 0);
	atomic_fetch_sub(&n_open, 1);
	sp_metric_add(&pv->w->metrics, SP_M_PROVIDER_CONNECTIONS, -1);
}

static void pc_free(pconn_t *pc)
{
	if (pc->h2)
		nghttp2_session_del(pc->h2);
	SSL_free(pc->ssl);
	free(pc->out);
	free(pc->in);
	for (unsigned i = 0; i < VAPID_MEMO; i++)
		free(pc->vapid[i].auth);
	free(pc);
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
	sp_provider_t *pv = arg;

	(void)fd;
	(void)what;
	while (pv->dirty) {
		pconn_t *pc = pv->dirty;

		pv->dirty = pc->dirty_next;
		pc->dirty = false;
		pc_flush(pc); /* a no-op if it finished meanwhile (it is freed only below) */
	}
	while (pv->reap) {
		pconn_t *pc = pv->reap;

		pv->reap = pc->reap_next;
		pc_free(pc);
	}
}

static void pc_flush(pconn_t *pc)
{
	if (pc->finished)
		return;
	if (pc->state == PC_H2) {
		while (nghttp2_session_want_write(pc->h2) && pc->out_len - pc->out_off < OUT_MAX) {
			const uint8_t *d;
			H2_SSIZE n = h2_mem_send(pc->h2, &d);

			if (n < 0) {
				pc_finish(pc);
				return;
			}
			if (n == 0)
				break;
			out_append(pc, d, (size_t)n);
			if (pc->finished)
				return;
		}
	}
	while (pc->out_off < pc->out_len) {
		int n;

		ERR_clear_error();
		n = SSL_write(pc->ssl, pc->out + pc->out_off, (int)(pc->out_len - pc->out_off));
		if (n > 0) {
			pc->out_off += (size_t)n;
			continue;
		}
		switch (SSL_get_error(pc->ssl, n)) {
		case SSL_ERROR_WANT_WRITE:
			if (!pc->write_wait) {
				pc->write_wait = true;
				event_add(&pc->ev_write, NULL);
			}
			if (pc->out_len - pc->out_off > OUT_MAX) {
				count_refusal(pc->pv, SP_PROVIDER_LIMIT_OUTPUT);
				pc_finish(pc);
			}
			return;
		case SSL_ERROR_WANT_READ:
			return;
		default:
			pc_finish(pc);
			return;
		}
	}
	pc->out_off = pc->out_len = 0;
	if (pc->write_wait) {
		pc->write_wait = false;
		event_del(&pc->ev_write);
	}
	if (pc->state == PC_H2 && pc->h2 && !nghttp2_session_want_read(pc->h2) &&
	    !nghttp2_session_want_write(pc->h2))
		pc_finish(pc);
	else if (pc->state == PC_H1 && pc->h1_close && !pc->h1)
		pc_finish(pc);
	else if (pc->state == PC_H2 && nghttp2_session_want_write(pc->h2))
		pc_flush(pc); /* more than OUT_MAX was waiting */
}

static void pc_input(pconn_t *pc, const uint8_t *p, size_t n)
{
	const sp_server_config_t *cfg = cfg_of(pc);

	pc->t_active = pc->pv->w->now;
	if (pc->state == PC_H2) {
		H2_SSIZE r;

		pc->in_recv = true;
		r = h2_mem_recv(pc->h2, p, n);
		pc->in_recv = false;
		if (r < 0) {
			pc_flush(pc); /* nghttp2 queued a GOAWAY */
			pc_finish(pc);
		}
		return;
	}
	/* HTTP/1.1: what is not consumed yet stays; past one head and one body, reading pauses
	 * until the request in hand is answered (pipelined requests wait in the socket). */
	(void)cfg;
	if (pc->in_len + n > pc->in_cap) {
		size_t cap = pc->in_cap ? pc->in_cap * 2 : 4096;
		uint8_t *b;

		while (cap < pc->in_len + n)
			cap *= 2;
		b = realloc(pc->in, cap);
		if (!b) {
			pc_finish(pc);
			return;
		}
		pc->in = b;
		pc->in_cap = cap;
	}
	memcpy(pc->in + pc->in_len, p, n);
	pc->in_len += n;
	h1_process(pc);
	if (!pc->finished && !pc->paused && pc->in_len > h1_cap(pc)) {
		pc->paused = true;
		event_del(&pc->ev_read);
	}
}

static void pc_handshake(pconn_t *pc)
{
	const unsigned char *alpn = NULL;
	unsigned alpn_len = 0;
	int rc;

	ERR_clear_error();
	rc = SSL_do_handshake(pc->ssl);
	if (rc != 1) {
		int e = SSL_get_error(pc->ssl, rc);

		if (e == SSL_ERROR_WANT_READ)
			return;
		if (e == SSL_ERROR_WANT_WRITE) {
			pc->write_wait = true;
			event_add(&pc->ev_write, NULL);
			return;
		}
		sp_metric_inc(&pc->pv->w->metrics, SP_M_PROVIDER_HANDSHAKE_FAIL);
		pc_finish(pc);
		return;
	}
	SSL_get0_alpn_selected(pc->ssl, &alpn, &alpn_len);
	pc->t_active = pc->pv->w->now;
	if (alpn_len == 2 && memcmp(alpn, "h2", 2) == 0) {
		pc->state = PC_H2;
		if (h2_start(pc) < 0) {
			pc_finish(pc);
			return;
		}
		pc_flush(pc);
	} else {
		pc->state = PC_H1;
	}
}

static void pc_read(pconn_t *pc)
{
	uint8_t *buf = pc->pv->w->scratch;

	for (int rounds = 0; rounds < 16 && !pc->finished && !pc->paused; rounds++) {
		int n;

		ERR_clear_error();
		n = SSL_read(pc->ssl, buf, READ_CHUNK);
		if (n > 0) {
			pc_input(pc, buf, (size_t)n);
			continue;
		}
		switch (SSL_get_error(pc->ssl, n)) {
		case SSL_ERROR_WANT_READ:
			goto done;
		case SSL_ERROR_WANT_WRITE:
			pc->write_wait = true;
			event_add(&pc->ev_write, NULL);
			goto done;
		default: /* close_notify, EOF, reset, TLS error */
			pc_finish(pc);
			return;
		}
	}
	if (!pc->finished && !pc->paused && SSL_has_pending(pc->ssl)) /* read-ahead too */
		event_active(&pc->ev_read, EV_READ, 0);
done:
	pc_flush(pc);
}

static void on_pc_event(evutil_socket_t fd, short what, void *arg)
{
	pconn_t *pc = arg;

	(void)fd;
	pc->pv->w->now = sp_now_ms();
	if (pc->finished)
		return;
	if ((what & EV_WRITE) && pc->write_wait) {
		pc->write_wait = false;
		event_del(&pc->ev_write);
	}
	if (pc->state == PC_HANDSHAKE) {
		pc_handshake(pc);
		if (pc->finished || pc->state == PC_HANDSHAKE)
			return;
	}
	pc_read(pc);
}

static void on_provider_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                               int len, void *arg)
{
	sp_provider_t *pv = arg;
	sp_worker_t *w = pv->w;
	pconn_t *pc;

	(void)l;
	(void)sa;
	(void)len;
	w->now = sp_now_ms();
	if (w->draining || atomic_load(&n_open) >= w->srv->cfg.provider_max_connections) {
		count_refusal(pv, SP_PROVIDER_LIMIT_CONNECTIONS);
		close(fd);
		return;
	}
	pc = calloc(1, sizeof(*pc));
	if (!pc || !(pc->ssl = SSL_new(pv->ctx)) || SSL_set_fd(pc->ssl, fd) != 1) {
		if (pc)
			SSL_free(pc->ssl);
		free(pc);
		close(fd);
		return;
	}
	evutil_make_socket_nonblocking(fd);
	/* Answers are small and follow each other; with Nagle's algorithm one would wait for the
	 * app server's delayed ACK of the one before (40 ms on Linux). */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
	SSL_set_accept_state(pc->ssl);
	pc->pv = pv;
	pc->fd = fd;
	pc->t_start = pc->t_active = w->now;
	event_assign(&pc->ev_read, w->base, fd, EV_READ | EV_PERSIST, on_pc_event, pc);
	event_assign(&pc->ev_write, w->base, fd, EV_WRITE | EV_PERSIST, on_pc_event, pc);
	event_add(&pc->ev_read, NULL);
	pc->next = pv->conns;
	if (pv->conns)
		pv->conns->prev = pc;
	pv->conns = pc;
	atomic_fetch_add(&n_open, 1);
	sp_metric_inc(&w->metrics, SP_M_PROVIDER_ACCEPTED);
	sp_metric_inc(&w->metrics, SP_M_PROVIDER_CONNECTIONS);
}

/* ---- subscriptions (SUBSCRIBE over a device's connection, PROTOCOL.md 14.5) ---------------- */

#define LIST_MAX    4096         /* ids a LIST answers: provider_max_subscriptions at most */
#define GONE_KEEP_S (30 * 86400) /* a removed capability answers 410 this long */

/* SUBSCRIBE's writes in one command, so that a subscription is written whole or not at all
 * (no id listed without its capability after a failure half way) and two SUBSCRIBEs cannot
 * both pass the limit. KEYS: the device's set, the subscription's hash, the capability's
 * record; ARGV: limit, capability hash, hex sub id, token, sub id, [app key]. 1 written, 0 at
 * the limit. (The door speaks to one Redis, not Redis Cluster: the keys may span slots.) */
static const char SUB_SCRIPT[] =
        "if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end "
        "redis.call('HSET', KEYS[2], 'cap', ARGV[2]) "
        "redis.call('SADD', KEYS[1], ARGV[3]) "
        "if ARGV[6] then "
        "redis.call('HSET', KEYS[3], 'token', ARGV[4], 'sub', ARGV[5], 'ask', ARGV[6]) "
        "else redis.call('HSET', KEYS[3], 'token', ARGV[4], 'sub', ARGV[5]) end "
        "return 1";

/* REMOVE's writes in one command. KEYS: the capability's record, the subscription's hash,
 * the device's set; ARGV: seconds the record answers 410, hex sub id. */
static const char UNSUB_SCRIPT[] = "redis.call('DEL', KEYS[1]) "
                                   "redis.call('HSET', KEYS[1], 'gone', '1') "
                                   "redis.call('EXPIRE', KEYS[1], ARGV[1]) "
                                   "redis.call('DEL', KEYS[2]) "
                                   "redis.call('SREM', KEYS[3], ARGV[2]) "
                                   "return 1";

static int unhex(const char *s, size_t n, uint8_t *out, size_t cap)
{
	if (n != 2 * cap)
		return -1;
	for (size_t i = 0; i < cap; i++) {
		unsigned v;

		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (uint8_t)v;
	}
	return 0;
}

struct subop {
	sp_provider_t *pv;
	sp_connref_t ref;
	uint8_t msg_id[SP_MSG_ID_LEN];
	uint8_t token[SP_TOKEN_LEN];
	uint8_t sub[SP_WP_SUB_ID_LEN];
	uint8_t key[SP_VAPID_KEY_LEN];
	bool has_key;
	char cap[SP_WP_CAP_CHARS + 1];
	uint8_t hash[32];
};

/* Answers SUBSCRIPTION to the connection of op (if it is still there). */
static void sub_answer(sp_worker_t *w, sp_connref_t ref, const uint8_t *msg_id, uint8_t status,
                       const char *reason, const struct subop *op, const uint8_t *ids,
                       uint32_t n_ids)
{
	sp_conn_t *c = sp_worker_conn(w, ref);
	sp_frame_t f = {.type = SP_SUBSCRIPTION,
	                .fields = SP_BIT(SP_F_MSG_ID) | SP_BIT(SP_F_STATUS),
	                .msg_id = msg_id,
	                .status = status};
	char endpoint[SP_ENDPOINT_MAX + 1];

	if (!c || c->state >= SP_CS_CLOSING)
		return;
	if (reason) {
		f.fields |= SP_BIT(SP_F_REASON);
		f.reason = (const uint8_t *)reason;
		f.reason_len = (uint32_t)strlen(reason);
	}
	if (op && status == SP_ST_DELIVERED) {
		f.fields |= SP_BIT(SP_F_SUB_ID);
		f.sub_id = op->sub;
		if (op->cap[0]) {
			snprintf(endpoint, sizeof(endpoint), "%s/push/%s", op->pv->origin, op->cap);
			f.fields |= SP_BIT(SP_F_ENDPOINT);
			f.endpoint = (const uint8_t *)endpoint;
			f.endpoint_len = (uint32_t)strlen(endpoint);
		}
		if (op->has_key) {
			f.fields |= SP_BIT(SP_F_APP_KEY);
			f.app_key = op->key;
		}
	}
	if (n_ids) {
		f.fields |= SP_BIT(SP_F_SUB_IDS);
		f.sub_ids = ids;
		f.n_sub_ids = n_ids;
	}
	sp_conn_send(c, &f);
	sp_worker_after(w);
}

/* Every way a subscription request ends without success goes through here: it is answered
 * (unless the relay is being torn down) and freed. */
static void sub_fail(struct subop *op, uint8_t status, const char *why)
{
	sp_worker_t *w = op->pv->w;

	if (!atomic_load(&w->srv->stopping)) {
		w->now = sp_now_ms();
		sub_answer(w, op->ref, op->msg_id, status, why, NULL, NULL, 0);
	}
	free(op);
}

static void sub_ok(struct subop *op, const uint8_t *ids, uint32_t n_ids)
{
	sp_worker_t *w = op->pv->w;

	if (!atomic_load(&w->srv->stopping)) {
		w->now = sp_now_ms();
		sub_answer(w, op->ref, op->msg_id, SP_ST_DELIVERED, NULL, ids ? NULL : op, ids,
		           n_ids);
	}
	free(op);
}

/* Sends one command for op; if hiredis cannot take it (the connection is going, or no
 * memory), op is answered TRY_LATER at once. Returns 0 if the command is out. */
static int sub_send(struct subop *op, redisCallbackFn *fn, int argc, const char **argv,
                    const size_t *lens)
{
	sp_provider_t *pv = op->pv;

	if (!pv->ac || !pv->redis_up ||
	    redisAsyncCommandArgv(pv->ac, fn, op, argc, argv, lens) != REDIS_OK) {
		sub_fail(op, SP_ST_TRY_LATER, "the store is unavailable");
		return -1;
	}
	redis_sent(pv);
	return 0;
}

static void sub_keys(const struct subop *op, char *k_subs, char *k_sub, char *subhex)
{
	hex_into(subhex, op->sub, SP_WP_SUB_ID_LEN);
	sp_wp_key_subs(k_subs, 128, op->token);
	snprintf(k_sub, 160, "%.*s:%s", (int)(strlen(k_subs) - 5), k_subs, subhex);
}

static void on_sub_written(redisAsyncContext *ac, void *reply, void *arg)
{
	struct subop *op = arg;
	const redisReply *r = reply;

	redis_got(ac);
	if (!r || r->type != REDIS_REPLY_INTEGER) {
		sub_fail(op, SP_ST_TRY_LATER, "the store failed");
		return;
	}
	if (r->integer == 0) {
		count_refusal(op->pv, SP_PROVIDER_LIMIT_SUBSCRIPTIONS);
		sub_fail(op, SP_ST_QUOTA_EXCEEDED, "too many subscriptions for this device");
		return;
	}
	sub_ok(op, NULL, 0);
}

static void on_unsub_written(redisAsyncContext *ac, void *reply, void *arg)
{
	struct subop *op = arg;
	const redisReply *r = reply;

	redis_got(ac);
	if (!r || r->type != REDIS_REPLY_INTEGER) {
		sub_fail(op, SP_ST_TRY_LATER, "the store failed");
		return;
	}
	/* before the answer: no push that starts after it uses a cached record */
	atomic_fetch_add(&op->pv->w->srv->wp_epoch, 1);
	sp_wpcache_drop(&op->pv->cache, op->hash);
	sub_ok(op, NULL, 0);
}

/* HGET of the subscription's capability hash came back: mark it gone, drop the device's. */
static void on_unsub_find(redisAsyncContext *ac, void *reply, void *arg)
{
	struct subop *op = arg;
	const redisReply *r = reply;
	char k_sub[160], k_subs[128], k_cap[128], subhex[2 * SP_WP_SUB_ID_LEN + 1], keep[16];
	const char *argv[8];
	size_t lens[8];

	redis_got(ac);
	if (!r || r->type == REDIS_REPLY_ERROR) {
		sub_fail(op, SP_ST_TRY_LATER, "the store is unavailable");
		return;
	}
	if (r->type != REDIS_REPLY_STRING || r->len != 32) {
		sub_fail(op, SP_ST_BAD_DEVICE_TOKEN, "no such subscription");
		return;
	}
	memcpy(op->hash, r->str, 32);
	sub_keys(op, k_subs, k_sub, subhex);
	sp_wp_key_cap(k_cap, sizeof(k_cap), op->hash);
	snprintf(keep, sizeof(keep), "%d", GONE_KEEP_S);
	op->cap[0] = '\0';
	argv[0] = "EVAL";
	argv[1] = UNSUB_SCRIPT;
	argv[2] = "3";
	argv[3] = k_cap;
	argv[4] = k_sub;
	argv[5] = k_subs;
	argv[6] = keep;
	argv[7] = subhex;
	for (unsigned i = 0; i < 8; i++)
		lens[i] = strlen(argv[i]);
	sub_send(op, on_unsub_written, 8, argv, lens);
}

static void on_sub_list(redisAsyncContext *ac, void *reply, void *arg)
{
	struct subop *op = arg;
	const redisReply *r = reply;
	uint8_t *ids;
	uint32_t n = 0;

	redis_got(ac);
	if (!r || r->type != REDIS_REPLY_ARRAY) {
		sub_fail(op, SP_ST_TRY_LATER, "the store is unavailable");
		return;
	}
	ids = malloc((r->elements ? r->elements : 1) * SP_WP_SUB_ID_LEN);
	if (!ids) {
		sub_fail(op, SP_ST_INTERNAL_ERROR, "out of memory");
		return;
	}
	for (size_t i = 0; i < r->elements && n < LIST_MAX; i++) {
		const redisReply *e = r->element[i];

		if (e->type == REDIS_REPLY_STRING &&
		    unhex(e->str, e->len, ids + (size_t)n * SP_WP_SUB_ID_LEN, SP_WP_SUB_ID_LEN) ==
		            0)
			n++;
	}
	sub_ok(op, ids, n);
	free(ids);
}

void sp_provider_subscribe(sp_conn_t *c, const sp_frame_t *f)
{
	sp_worker_t *w = c->w;
	sp_provider_t *pv = w->provider;
	struct subop *op;
	char k_sub[160], k_subs[128], k_cap[128], subhex[2 * SP_WP_SUB_ID_LEN + 1], max[16];
	const char *argv[12];
	size_t lens[12];
	int n = 0;

	if (!pv) {
		sub_answer(w, sp_conn_ref(c), f->msg_id, SP_ST_FORBIDDEN,
		           "this relay has no Web Push door", NULL, NULL, 0);
		return;
	}
	op = calloc(1, sizeof(*op));
	if (!op) {
		sub_answer(w, sp_conn_ref(c), f->msg_id, SP_ST_INTERNAL_ERROR, "out of memory",
		           NULL, NULL, 0);
		return;
	}
	op->pv = pv;
	op->ref = sp_conn_ref(c);
	memcpy(op->msg_id, f->msg_id, SP_MSG_ID_LEN);
	memcpy(op->token, c->token, SP_TOKEN_LEN);
	if (f->flags & SP_SUBSCRIBE_LIST) {
		sub_keys(op, k_subs, k_sub, subhex);
		argv[0] = "SMEMBERS";
		argv[1] = k_subs;
		lens[0] = 8;
		lens[1] = strlen(k_subs);
		sub_send(op, on_sub_list, 2, argv, lens);
		return;
	}
	if (f->flags & SP_SUBSCRIBE_REMOVE) {
		if (!(f->fields & SP_BIT(SP_F_SUB_ID))) {
			sub_fail(op, SP_ST_BAD_DEVICE_TOKEN, "REMOVE needs a sub_id");
			return;
		}
		memcpy(op->sub, f->sub_id, SP_WP_SUB_ID_LEN);
		sub_keys(op, k_subs, k_sub, subhex);
		argv[0] = "HGET";
		argv[1] = k_sub;
		argv[2] = "cap";
		for (unsigned i = 0; i < 3; i++)
			lens[i] = strlen(argv[i]);
		sub_send(op, on_unsub_find, 3, argv, lens);
		return;
	}
	if (f->fields & SP_BIT(SP_F_APP_KEY)) {
		if (f->app_key[0] != 0x04) {
			sub_fail(op, SP_ST_FORBIDDEN, "app_key is not an uncompressed P-256 point");
			return;
		}
		memcpy(op->key, f->app_key, SP_VAPID_KEY_LEN);
		op->has_key = true;
	} else if (w->srv->cfg.provider_require_key) {
		sub_fail(op, SP_ST_FORBIDDEN, "this relay requires an application server key");
		return;
	}
	if (sp_wp_capability_new(op->cap, op->hash) < 0 ||
	    RAND_bytes(op->sub, SP_WP_SUB_ID_LEN) != 1) {
		sub_fail(op, SP_ST_INTERNAL_ERROR, "no randomness");
		return;
	}
	sub_keys(op, k_subs, k_sub, subhex);
	sp_wp_key_cap(k_cap, sizeof(k_cap), op->hash);
	snprintf(max, sizeof(max), "%lld", (long long)w->srv->cfg.provider_max_subscriptions);
#define ARG(p, l) (argv[n] = (const char *)(p), lens[n++] = (l))
	ARG("EVAL", 4);
	ARG(SUB_SCRIPT, sizeof(SUB_SCRIPT) - 1);
	ARG("3", 1);
	ARG(k_subs, strlen(k_subs));
	ARG(k_sub, strlen(k_sub));
	ARG(k_cap, strlen(k_cap));
	ARG(max, strlen(max));
	ARG(op->hash, 32);
	ARG(subhex, strlen(subhex));
	ARG(op->token, SP_TOKEN_LEN);
	ARG(op->sub, SP_WP_SUB_ID_LEN);
	if (op->has_key)
		ARG(op->key, SP_VAPID_KEY_LEN);
#undef ARG
	sub_send(op, on_sub_written, n, argv, lens);
}

/* ---- for sp_enroll.c ------------------------------------------------------------------------ */

const uint8_t *sp_provider_req_body(sp_preq_t *r, size_t *len)
{
	*len = r->body_len;
	return r->body;
}

const char *sp_provider_req_method(sp_preq_t *r)
{
	return r->method;
}

int sp_provider_req_peer(sp_preq_t *r, char *host, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (!r->pc || getpeername(r->pc->fd, (struct sockaddr *)&ss, &sl) < 0 ||
	    getnameinfo((struct sockaddr *)&ss, sl, host, (socklen_t)len, NULL, 0,
	                NI_NUMERICHOST) != 0)
		return -1;
	return 0;
}

redisAsyncContext *sp_provider_redis(sp_preq_t *r)
{
	sp_provider_t *pv = r->pc ? r->pc->pv : NULL;

	return pv && pv->ac && pv->redis_up ? pv->ac : NULL;
}

void sp_provider_req_wait(sp_preq_t *r)
{
	r->phase = RQ_LOOKUP;
}

sp_preq_t *sp_provider_req_resume(sp_preq_t *r)
{
	if (r->detached) {
		req_free(r);
		return NULL;
	}
	if (atomic_load(&r->pc->pv->w->srv->stopping))
		return NULL;
	r->phase = RQ_BODY;
	return r;
}

void sp_provider_req_retry_after(sp_preq_t *r, uint32_t seconds)
{
	r->retry_after = seconds;
}

void sp_provider_req_answer(sp_preq_t *r, int status, const char *ctype, const char *body,
                            size_t len)
{
	if (ctype) {
		r->resp_big = malloc(len);
		if (!r->resp_big) {
			answer(r, 500, "out of memory");
			return;
		}
		memcpy(r->resp_big, body, len);
		r->resp_len = len;
		r->resp_ctype = ctype;
		answer(r, status, NULL);
		return;
	}
	answer(r, status, body);
}

bool sp_provider_enabled(const sp_worker_t *w)
{
	return w->provider != NULL;
}

/* ---- the worker's side ---------------------------------------------------------------------- */

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned inlen, void *arg)
{
	static const unsigned char prefs[] = "\x02h2\x08http/1.1";

	(void)ssl;
	(void)arg;
	if (SSL_select_next_proto((unsigned char **)out, outlen, prefs, sizeof(prefs) - 1, in,
	                          inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *make_ctx(const sp_server_config_t *cfg, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (!ctx) {
		snprintf(err, errlen, "provider_listen: cannot make a TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
	                              SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err, errlen, "provider_listen: cannot load tls_cert/tls_key");
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	/* App servers stream many requests: read what the socket has (up to READ_AHEAD) at once
	 * instead of one read() for each record's header and one for its body. */
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set_default_read_buffer_len(ctx, READ_AHEAD);
	return ctx;
}

static void set_origin(sp_provider_t *pv, const sp_server_config_t *cfg)
{
	char host[200];
	uint16_t port = 0;

	if (cfg->provider_origin && cfg->provider_origin[0]) {
		snprintf(pv->origin, sizeof(pv->origin), "%.200s", cfg->provider_origin);
	} else {
		sp_parse_hostport(cfg->provider_listen, host, sizeof(host), &port);
		if (!strcmp(host, "0.0.0.0") || !strcmp(host, "::") || !host[0])
			gethostname(host, sizeof(host));
		if (port == 443)
			snprintf(pv->origin, sizeof(pv->origin), "https://%s", host);
		else
			snprintf(pv->origin, sizeof(pv->origin), "https://%s:%u", host, port);
	}
	pv->origin_len = strlen(pv->origin);
	while (pv->origin_len && pv->origin[pv->origin_len - 1] == '/')
		pv->origin[--pv->origin_len] = '\0';
}

int sp_provider_start(sp_worker_t *w, char *err, size_t errlen)
{
	const sp_server_config_t *cfg = &w->srv->cfg;
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
	                         .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	char host[256], port_s[8];
	uint16_t port;
	sp_provider_t *pv;

	w->provider = NULL;
	if (!cfg->provider_listen || !cfg->provider_listen[0])
		return 0;
	if (sp_parse_hostport(cfg->provider_listen, host, sizeof(host), &port) < 0) {
		snprintf(err, errlen, "key \"provider_listen\": \"%s\" is not HOST:PORT",
		         cfg->provider_listen);
		return -1;
	}
	pv = calloc(1, sizeof(*pv));
	if (!pv) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	w->provider = pv;
	pv->w = w;
	set_origin(pv, cfg);
	pv->ctx = make_ctx(cfg, err, errlen);
	if (!pv->ctx)
		return -1;
	if (nghttp2_session_callbacks_new(&pv->cbs) != 0)
		goto nomem;
	nghttp2_session_callbacks_set_on_begin_headers_callback(pv->cbs, h2_on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(pv->cbs, h2_on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(pv->cbs, h2_on_data);
	nghttp2_session_callbacks_set_on_frame_recv_callback(pv->cbs, h2_on_frame_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(pv->cbs, h2_on_stream_close);
	nghttp2_session_callbacks_set_on_frame_send_callback(pv->cbs, h2_on_frame_send);
	pv->ev_reap = event_new(w->base, -1, 0, on_reap, pv);
	if (!pv->ev_reap)
		goto nomem;
	if (sp_wpcache_init(&pv->cache, (uint32_t)cfg->provider_cache_entries,
	                    (uint64_t)cfg->provider_cache_ttl) < 0)
		goto nomem;
	if (cfg->redis && cfg->redis[0]) {
		if (sp_parse_redis_url(cfg->redis, pv->rhost, sizeof(pv->rhost), &pv->rport,
		                       pv->rpath, sizeof(pv->rpath)) < 0) {
			snprintf(err, errlen, "key \"redis\": not a Redis address");
			return -1;
		}
		redis_connect(pv);
	}
	snprintf(port_s, sizeof(port_s), "%u", port);
	if (getaddrinfo(host, port_s, &hints, &res) != 0 || !res) {
		snprintf(err, errlen, "key \"provider_listen\": cannot resolve \"%s\"", host);
		return -1;
	}
	pv->lst = evconnlistener_new_bind(w->base, on_provider_accept, pv,
	                                  LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC |
	                                          LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT,
	                                  (int)cfg->backlog, res->ai_addr, (int)res->ai_addrlen);
	freeaddrinfo(res);
	if (!pv->lst) {
		snprintf(err, errlen, "cannot listen on %s: %s", cfg->provider_listen,
		         strerror(errno));
		return -1;
	}
	return 0;
nomem:
	snprintf(err, errlen, "out of memory");
	return -1;
}

void sp_provider_reload(sp_worker_t *w)
{
	sp_provider_t *pv = w->provider;
	char err[256];
	SSL_CTX *ctx;

	if (!pv)
		return;
	ctx = make_ctx(&w->srv->cfg, err, sizeof(err));
	if (!ctx) {
		SP_LOG(SP_LOG_ERROR, "provider_reload_failed",
		       "worker=%d msg=\"%s; keeping the previous certificate\"", w->id, err);
		return;
	}
	/* connections made before keep the old context (SSL_new holds a reference) */
	SSL_CTX_free(pv->ctx);
	pv->ctx = ctx;
}

void sp_provider_tick(sp_worker_t *w)
{
	sp_provider_t *pv = w->provider;
	const sp_server_config_t *cfg = &w->srv->cfg;

	if (!pv)
		return;
	redis_check(pv);
	if (!pv->ac && cfg->redis && cfg->redis[0] && w->now >= pv->redis_retry)
		redis_connect(pv);
	for (pconn_t *pc = pv->conns, *next; pc; pc = next) {
		next = pc->next;
		if (pc->state == PC_HANDSHAKE) {
			if (w->now - pc->t_start > (uint64_t)cfg->handshake_timeout) {
				count_refusal(pv, SP_PROVIDER_LIMIT_HANDSHAKE_TIMEOUT);
				pc_finish(pc);
			}
			continue;
		}
		for (preq_t *r = pc->reqs, *rn; r; r = rn) {
			rn = r->next;
			if ((r->phase > RQ_BODY && r->phase != RQ_ANSWERED) || r->reset ||
			    w->now - r->t_start <= (uint64_t)cfg->provider_request_timeout)
				continue;
			if (r->phase != RQ_ANSWERED)
				count_refusal(pv, SP_PROVIDER_LIMIT_REQUEST_TIMEOUT);
			if (pc->state == PC_H2) {
				/* Answered or not, a stream whose body never ends is cut here; its
				 * close callback frees the request. */
				r->reset = true;
				nghttp2_submit_rst_stream(pc->h2, NGHTTP2_FLAG_NONE, r->sid,
				                          NGHTTP2_CANCEL);
			} else if (r->phase != RQ_ANSWERED) {
				pc->h1_close = true;
				answer(r, 408, "the request took too long");
			}
		}
		if (!pc->finished && pc->n_reqs == 0 &&
		    w->now - pc->t_active > (uint64_t)cfg->provider_idle_timeout) {
			count_refusal(pv, SP_PROVIDER_LIMIT_IDLE_TIMEOUT);
			if (pc->state == PC_H2)
				nghttp2_session_terminate_session(pc->h2, NGHTTP2_NO_ERROR);
			pc_flush(pc);
			pc_finish(pc);
			continue;
		}
		pc_flush(pc);
	}
}

void sp_provider_drain(sp_worker_t *w)
{
	sp_provider_t *pv = w->provider;

	if (!pv)
		return;
	if (pv->lst) {
		evconnlistener_free(pv->lst);
		pv->lst = NULL;
	}
	for (pconn_t *pc = pv->conns, *next; pc; pc = next) {
		next = pc->next;
		if (pc->state == PC_H2 && !pc->goaway) {
			pc->goaway = true;
			nghttp2_submit_shutdown_notice(pc->h2);
			pc_flush(pc);
		} else if (pc->n_reqs == 0) {
			pc_finish(pc);
		} else {
			pc->h1_close = true;
		}
	}
}

void sp_provider_free(sp_worker_t *w)
{
	sp_provider_t *pv = w->provider;

	if (!pv)
		return;
	while (pv->conns) {
		pconn_t *pc = pv->conns;

		for (preq_t *r = pc->reqs; r; r = r->next)
			if (r->msg)
				r->msg->origin = NULL; /* freed with their worker's messages */
		pc_finish(pc);
	}
	if (pv->ac)
		redisAsyncFree(pv->ac); /* answers pending look-ups: detached requests free */
	on_reap(-1, 0, pv);
	if (pv->lst)
		evconnlistener_free(pv->lst);
	if (pv->ev_reap)
		event_free(pv->ev_reap);
	if (pv->cbs)
		nghttp2_session_callbacks_del(pv->cbs);
	SSL_CTX_free(pv->ctx);
	sp_wpcache_free(&pv->cache);
	free(pv);
	w->provider = NULL;
}
