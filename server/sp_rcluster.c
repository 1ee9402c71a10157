/*
 * sp_rcluster.c: see sp_rcluster.h for what it handles and why.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "sp_log.h"
#include "sp_rcluster.h"
#include "sp_time.h"

/* Least time between two connection attempts to one node, and between two map refreshes
 * that something other than the timer asked for: a dead master must not become a busy loop.
 * While refreshes fail (no node answers: the cluster is unreachable) the least gap doubles up
 * to REFRESH_MAX_MS, so a relay cut off from its cluster tries each seed every 2 s, not ten
 * times a second per worker; the first refresh that succeeds sets it back. */
#define RECONNECT_MIN_MS 100
#define REFRESH_MIN_MS   100
#define REFRESH_MAX_MS   2000
/* The refresh period while the map is known but not up (a master without a connection or a
 * slot without a master: a failover in progress). Requests waiting for such a master ask for
 * refreshes themselves, REFRESH_MIN_MS apart, so this only paces an idle client. */
#define DOWN_REFRESH_MS 200

/* ---- slots and error replies (pure) ------------------------------------------------------- */

/* CRC16-CCITT (XMODEM): polynomial 0x1021, initial 0, no reflection. */
static uint16_t crc16(const uint8_t *p, size_t n)
{
	uint16_t crc = 0;

	while (n--) {
		crc ^= (uint16_t)(*p++ << 8);
		for (int i = 0; i < 8; i++)
			crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
	}
	return crc;
}

uint16_t sp_rc_keyslot(const void *key, size_t len)
{
	const uint8_t *k = key, *open = memchr(k, '{', len), *close;

	if (open) {
		size_t rest = len - (size_t)(open - k) - 1;

		close = memchr(open + 1, '}', rest);
		if (close && close > open + 1)
			return crc16(open + 1, (size_t)(close - open - 1)) & (SP_RC_SLOTS - 1);
	}
	return crc16(k, len) & (SP_RC_SLOTS - 1);
}

/* Parses "SLOT HOST:PORT" (the host may be an IPv6 address: the port is after the last ':'). */
static int parse_target(const char *s, size_t len, sp_rc_redirect_t *out)
{
	char buf[128], *end, *colon, *sp;
	unsigned long slot, port;

	if (len >= sizeof(buf))
		return -1;
	memcpy(buf, s, len);
	buf[len] = 0;
	slot = strtoul(buf, &end, 10);
	if (end == buf || *end != ' ' || slot >= SP_RC_SLOTS)
		return -1;
	sp = end + 1;
	colon = strrchr(sp, ':');
	if (!colon || colon == sp || (size_t)(colon - sp) > SP_RC_HOST_MAX)
		return -1;
	port = strtoul(colon + 1, &end, 10);
	if (end == colon + 1 || *end || port == 0 || port > 65535)
		return -1;
	out->slot = (uint16_t)slot;
	out->port = (uint16_t)port;
	memcpy(out->host, sp, (size_t)(colon - sp));
	out->host[colon - sp] = 0;
	return 0;
}

static bool starts(const char *s, size_t len, const char *word)
{
	size_t n = strlen(word);

	return len >= n && memcmp(s, word, n) == 0 && (len == n || s[n] == ' ');
}

enum sp_rc_redirect_kind sp_rc_parse_error(const char *s, size_t len, sp_rc_redirect_t *out)
{
	memset(out, 0, sizeof(*out));
	if (starts(s, len, "MOVED") || starts(s, len, "ASK")) {
		enum sp_rc_redirect_kind k = s[0] == 'M' ? SP_RC_MOVED : SP_RC_ASK;
		size_t skip = k == SP_RC_MOVED ? 6 : 4;

		if (len <= skip || parse_target(s + skip, len - skip, out) < 0)
			return SP_RC_NONE;
		out->kind = k;
	} else if (starts(s, len, "TRYAGAIN")) {
		out->kind = SP_RC_TRYAGAIN;
	} else if (starts(s, len, "CLUSTERDOWN")) {
		out->kind = SP_RC_CLUSTERDOWN;
	}
	return out->kind;
}

int sp_rc_map_node(sp_rc_map_t *map, const char *host, uint16_t port)
{
	for (unsigned i = 0; i < map->n_nodes; i++)
		if (map->node[i].port == port && strcmp(map->node[i].host, host) == 0)
			return (int)i;
	if (map->n_nodes >= SP_RC_MAX_NODES || strlen(host) > SP_RC_HOST_MAX)
		return -1;
	snprintf(map->node[map->n_nodes].host, sizeof(map->node[0].host), "%s", host);
	map->node[map->n_nodes].port = port;
	return (int)map->n_nodes++;
}

int sp_rc_map_from_slots(sp_rc_map_t *map, const redisReply *r, const char *default_host)
{
	memset(map->slot_node, SP_RC_NO_NODE, sizeof(map->slot_node));
	map->n_nodes = 0;
	map->n_slots = 0;
	if (!r || r->type != REDIS_REPLY_ARRAY)
		return -EPROTO;
	for (size_t i = 0; i < r->elements; i++) {
		const redisReply *e = r->element[i], *m;
		const char *host;
		int idx;

		/* [start, end, [host, port, id, ...], replicas...] */
		if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
		    e->element[0]->type != REDIS_REPLY_INTEGER ||
		    e->element[1]->type != REDIS_REPLY_INTEGER)
			return -EPROTO;
		m = e->element[2];
		if (m->type != REDIS_REPLY_ARRAY || m->elements < 2 ||
		    m->element[0]->type != REDIS_REPLY_STRING ||
		    m->element[1]->type != REDIS_REPLY_INTEGER)
			return -EPROTO;
		long long lo = e->element[0]->integer, hi = e->element[1]->integer;
		long long port = m->element[1]->integer;

		if (lo < 0 || hi >= SP_RC_SLOTS || lo > hi || port <= 0 || port > 65535)
			return -EPROTO;
		host = m->element[0]->str;
		if (!host[0] || strcmp(host, "?") == 0)
			host = default_host;
		idx = sp_rc_map_node(map, host, (uint16_t)port);
		if (idx < 0)
			return -E2BIG;
		for (long long s = lo; s <= hi; s++) {
			if (map->slot_node[s] == SP_RC_NO_NODE)
				map->n_slots++;
			map->slot_node[s] = (uint8_t)idx;
		}
	}
	return 0;
}

/* ---- the client ---------------------------------------------------------------------------- */

struct conn {
	sp_rcluster_t *c;
	redisAsyncContext *ac; /* NULL while down */
	struct event *timeout; /* connect timeout */
	char host[SP_RC_HOST_MAX + 1];
	uint16_t port;
	bool connected;
	uint64_t last_try_ms; /* the last connection attempt */
	bool seed;            /* kept when the map does not name it: a place to ask for the map */
	bool dropped;         /* no longer in the map: freed once hiredis lets go of it */
	unsigned failed;      /* connection attempts failed in a row (for the log) */
	struct conn *next;
};

struct req {
	sp_rcluster_t *c;
	sp_rc_callback *cb;
	void *priv;
	char *cmd; /* the formatted command, for resends */
	size_t len;
	uint16_t slot;
	uint16_t tries;
	struct conn *ask; /* send once to this node, after ASKING */
	struct req *next; /* the wait list */
};

struct sp_rcluster {
	struct event_base *base;
	sp_rcluster_opts_t opt;
	sp_rc_map_t map;
	struct conn *node_conn[SP_RC_MAX_NODES]; /* the connection of map.node[i] */
	struct conn *conns;                      /* every connection, seeds included */
	struct req *wait, **wait_tail;           /* requests waiting for a retry */
	struct event *retry_ev, *refresh_ev;
	unsigned backoff_ms;
	bool refreshing;
	bool closing;
	uint64_t last_refresh_ms;
	unsigned refresh_gap_ms; /* least gap between refreshes (grows while they fail) */
	unsigned refresh_fails;  /* refreshes failed in a row (for the log) */
	unsigned next_seed;      /* round robin over the connections for refreshes */
	sp_rcluster_counters_t n;
	char err[128];
};

static void on_reply(redisAsyncContext *ac, void *r, void *priv);
static void send_req(sp_rcluster_t *c, struct req *q);
static void conn_start(struct conn *k);

__attribute__((format(printf, 2, 3))) static void seterr(sp_rcluster_t *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
}

static void finish(struct req *q, redisAsyncContext *ac, redisReply *r)
{
	if (!r)
		q->c->n.failed++;
	q->cb(ac, r, q->priv);
	redisFreeCommand(q->cmd);
	free(q);
}

static void arm(struct event *ev, unsigned ms)
{
	struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};

	evtimer_add(ev, &tv);
}

/* Puts q on the wait list; the retry timer sends it again after the current backoff. */
static void wait_retry(sp_rcluster_t *c, struct req *q)
{
	q->next = NULL;
	*c->wait_tail = q;
	c->wait_tail = &q->next;
	if (!evtimer_pending(c->retry_ev, NULL))
		arm(c->retry_ev, c->backoff_ms);
}

/* One more try for q (a redirection or a retry), or its end if its budget is spent. */
static bool spend(struct req *q, redisAsyncContext *ac, redisReply *r)
{
	if (++q->tries > q->c->opt.max_redirects) {
		seterr(q->c, "gave up after %u redirections or retries", q->tries - 1u);
		finish(q, ac, r);
		return false;
	}
	return true;
}

static struct conn *conn_find(sp_rcluster_t *c, const char *host, uint16_t port)
{
	for (struct conn *k = c->conns; k; k = k->next)
		if (k->port == port && strcmp(k->host, host) == 0 && !k->dropped)
			return k;
	return NULL;
}

static struct conn *conn_get(sp_rcluster_t *c, const char *host, uint16_t port)
{
	struct conn *k = conn_find(c, host, port);

	if (k)
		return k;
	k = calloc(1, sizeof(*k));
	if (!k)
		return NULL;
	k->c = c;
	snprintf(k->host, sizeof(k->host), "%s", host);
	k->port = port;
	k->next = c->conns;
	c->conns = k;
	return k;
}

static void conn_unlink_free(struct conn *k)
{
	sp_rcluster_t *c = k->c;

	for (struct conn **pp = &c->conns; *pp; pp = &(*pp)->next)
		if (*pp == k) {
			*pp = k->next;
			break;
		}
	if (k->timeout)
		event_free(k->timeout);
	free(k);
}

/* Whether n (a count of failures in a row) is 1, 2, 4, 8...: the ones the log shows, so a node
 * or a cluster that stays away does not flood it. */
static bool log_this(unsigned n)
{
	return n > 0 && (n & (n - 1)) == 0;
}

/* A connection attempt to k failed (refused, timed out, or the connect could not start). */
static void conn_failed(struct conn *k, const char *why)
{
	sp_rcluster_t *c = k->c;

	seterr(c, "%s:%u: %s", k->host, k->port, why);
	if (log_this(++k->failed) && !c->closing)
		SP_LOG(SP_LOG_WARN, "rcluster_connect_failed", "node=%s:%u failed=%u msg=\"%s\"",
		       k->host, k->port, k->failed, why);
}

/* hiredis has let go of k's context (closed, failed, or freed by us). */
static void conn_gone(struct conn *k)
{
	k->ac = NULL;
	if (k->connected) {
		k->c->n.disconnects++;
		if (!k->dropped && !k->c->closing)
			SP_LOG(SP_LOG_WARN, "rcluster_conn_lost", "node=%s:%u", k->host, k->port);
	}
	k->connected = false;
	if (k->timeout)
		evtimer_del(k->timeout);
	if (k->dropped || k->c->closing)
		conn_unlink_free(k);
	else
		sp_rcluster_refresh(k->c); /* a failover shows up as a lost master */
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct conn *k = ac->data;

	if (!k)
		return;
	if (status != REDIS_OK) {
		conn_failed(k, "cannot connect");
		conn_gone(k); /* hiredis frees the context after this returns */
		return;
	}
	if (k->failed)
		SP_LOG(SP_LOG_INFO, "rcluster_connected", "node=%s:%u after=%u", k->host, k->port,
		       k->failed);
	k->failed = 0;
	k->connected = true;
	k->c->n.connects++;
	evtimer_del(k->timeout);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct conn *k = ac->data;

	(void)status;
	if (k)
		conn_gone(k);
}

static void on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct conn *k = arg;

	(void)fd;
	(void)what;
	if (k->ac && !k->connected) {
		conn_failed(k, "connect timed out");
		redisAsyncFree(
		        k->ac); /* pending requests: NULL -> retried; on_connect is not called */
		if (k->ac)      /* hiredis did not report it: do it ourselves */
			conn_gone(k);
	}
}

static void conn_start(struct conn *k)
{
	redisAsyncContext *ac;

	uint64_t now = sp_time_mono_ms();

	if (k->ac || k->c->closing || (k->last_try_ms && now - k->last_try_ms < RECONNECT_MIN_MS))
		return;
	k->last_try_ms = now;
	ac = redisAsyncConnect(k->host, k->port);
	if (!ac)
		return;
	if (ac->err || redisLibeventAttach(ac, k->c->base) != REDIS_OK) {
		conn_failed(k, "cannot connect");
		redisAsyncFree(ac);
		return;
	}
	ac->data = k;
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	k->ac = ac;
	if (!k->timeout)
		k->timeout = evtimer_new(k->c->base, on_connect_timeout, k);
	if (k->timeout)
		arm(k->timeout, k->c->opt.connect_timeout_ms);
}

/* The connection to send slot's requests to (started if need be), or NULL if the map has no
 * master for it. */
static struct conn *conn_for_slot(sp_rcluster_t *c, uint16_t slot)
{
	uint8_t i = c->map.slot_node[slot];
	struct conn *k;

	if (i == SP_RC_NO_NODE)
		return NULL;
	k = c->node_conn[i];
	if (k && !k->ac)
		conn_start(k);
	return k && k->ac ? k : NULL;
}

static void send_req(sp_rcluster_t *c, struct req *q)
{
	struct conn *k = q->ask ? q->ask : conn_for_slot(c, q->slot);

	if (!k || !k->ac) {
		q->ask = NULL;
		sp_rcluster_refresh(c);
		wait_retry(c, q);
		return;
	}
	if (q->ask) {
		q->ask = NULL;
		if (redisAsyncCommand(k->ac, NULL, NULL, "ASKING") != REDIS_OK) {
			wait_retry(c, q);
			return;
		}
	}
	if (redisAsyncFormattedCommand(k->ac, on_reply, q, q->cmd, q->len) != REDIS_OK)
		wait_retry(c, q);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	sp_rcluster_t *c = arg;
	struct req *q = c->wait;

	(void)fd;
	(void)what;
	c->wait = NULL;
	c->wait_tail = &c->wait;
	c->backoff_ms =
	        c->backoff_ms * 2 > c->opt.retry_max_ms ? c->opt.retry_max_ms : c->backoff_ms * 2;
	while (q) {
		struct req *next = q->next;

		send_req(c, q);
		q = next;
	}
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
	struct req *q = priv;
	sp_rcluster_t *c = q->c;
	redisReply *r = reply;
	sp_rc_redirect_t rd;
	struct conn *k;
	int idx;

	if (!r) { /* the connection went (or is being freed) */
		if (c->closing) {
			seterr(c, "client closed");
			finish(q, NULL, NULL);
			return;
		}
		c->n.resent_lost++;
		if (spend(q, NULL, NULL))
			wait_retry(c, q);
		return;
	}
	if (r->type != REDIS_REPLY_ERROR || sp_rc_parse_error(r->str, r->len, &rd) == SP_RC_NONE) {
		c->backoff_ms = c->opt.retry_min_ms;
		finish(q, ac, r);
		return;
	}
	if (!spend(q, ac, r))
		return;
	switch (rd.kind) {
	case SP_RC_MOVED:
		c->n.moved++;
		idx = sp_rc_map_node(&c->map, rd.host, rd.port);
		k = idx >= 0 ? conn_get(c, rd.host, rd.port) : NULL;
		if (idx >= 0 && k) {
			if (c->map.slot_node[rd.slot] == SP_RC_NO_NODE)
				c->map.n_slots++;
			c->map.slot_node[rd.slot] = (uint8_t)idx;
			c->node_conn[idx] = k;
		}
		sp_rcluster_refresh(c);
		send_req(c, q);
		return;
	case SP_RC_ASK:
		c->n.ask++;
		q->ask = conn_get(c, rd.host, rd.port);
		if (q->ask)
			conn_start(q->ask);
		send_req(c, q);
		return;
	case SP_RC_TRYAGAIN:
	case SP_RC_CLUSTERDOWN:
		if (rd.kind == SP_RC_TRYAGAIN)
			c->n.tryagain++;
		else
			c->n.clusterdown++;
		wait_retry(c, q);
		return;
	default:
		finish(q, ac, r);
	}
}

/* Makes newmap the map: connections for its masters, none for the rest (seeds stay). */
static void install_map(sp_rcluster_t *c, const sp_rc_map_t *newmap)
{
	c->map = *newmap;
	memset(c->node_conn, 0, sizeof(c->node_conn));
	for (unsigned i = 0; i < c->map.n_nodes; i++) {
		c->node_conn[i] = conn_get(c, c->map.node[i].host, c->map.node[i].port);
		if (c->node_conn[i])
			conn_start(c->node_conn[i]);
	}
	for (struct conn *k = c->conns, *next; k; k = next) {
		bool used = false;

		next = k->next;
		for (unsigned i = 0; i < c->map.n_nodes && !used; i++)
			used = c->node_conn[i] == k;
		if (used || k->seed || k->dropped)
			continue;
		k->dropped = true;
		if (k->ac)
			redisAsyncDisconnect(
			        k->ac); /* pending requests answered first, then gone */
		else
			conn_unlink_free(k);
	}
}

/* A refresh failed: the next one waits twice as long (up to REFRESH_MAX_MS). */
static void refresh_failed(sp_rcluster_t *c, const struct conn *k, const char *why)
{
	c->n.refresh_failures++;
	c->refresh_fails++;
	c->refresh_gap_ms =
	        c->refresh_gap_ms * 2 > REFRESH_MAX_MS ? REFRESH_MAX_MS : c->refresh_gap_ms * 2;
	if (log_this(c->refresh_fails)) {
		char q[SP_LOG_QUOTE_SIZE(120)];
		size_t n = strlen(why);

		sp_log_quote(q, sizeof(q), why, n > 120 ? 120 : n);
		SP_LOG(SP_LOG_WARN, "rcluster_refresh_failed", "node=%s:%u failed=%u msg=%s",
		       k ? k->host : "-", k ? k->port : 0, c->refresh_fails, q);
	}
	arm(c->refresh_ev, c->refresh_gap_ms);
}

/* Whether a and b name the same masters for the same number of slots (for the log). */
static bool map_same(const sp_rc_map_t *a, const sp_rc_map_t *b)
{
	if (a->n_nodes != b->n_nodes || a->n_slots != b->n_slots)
		return false;
	for (unsigned i = 0; i < a->n_nodes; i++)
		if (a->node[i].port != b->node[i].port || strcmp(a->node[i].host, b->node[i].host))
			return false;
	return true;
}

static void on_slots(redisAsyncContext *ac, void *reply, void *priv)
{
	sp_rcluster_t *c = priv;
	struct conn *k = ac ? ac->data : NULL;
	sp_rc_map_t *m;

	c->refreshing = false;
	if (c->closing)
		return;
	m = malloc(sizeof(*m));
	if (!reply || !m || !k || ((redisReply *)reply)->type == REDIS_REPLY_ERROR ||
	    sp_rc_map_from_slots(m, reply, k->host) < 0 || m->n_slots == 0) {
		const redisReply *r = reply;

		refresh_failed(c, k,
		               !reply                         ? "connection lost"
		               : !m                           ? "out of memory"
		               : r->type == REDIS_REPLY_ERROR ? r->str
		                                              : "no usable slot map");
		free(m); /* the next try goes to another node */
		return;
	}
	c->n.refreshes++;
	if (c->refresh_fails)
		SP_LOG(SP_LOG_INFO, "rcluster_refreshed", "after=%u", c->refresh_fails);
	c->refresh_fails = 0;
	c->refresh_gap_ms = REFRESH_MIN_MS;
	if (!map_same(&c->map, m))
		SP_LOG(SP_LOG_INFO, "rcluster_map", "masters=%u slots=%u", m->n_nodes, m->n_slots);
	install_map(c, m);
	free(m);
	/* While a slot lacks a master, or a master its connection (a failover in progress),
	 * ask again soon: nothing else may, when callers hold their requests back meanwhile. */
	arm(c->refresh_ev, sp_rcluster_up(c) ? c->opt.refresh_ms : DOWN_REFRESH_MS);
	/* Requests held for want of a master go now, not when their backoff (up to
	 * retry_max_ms) would send them: after a failover, this map is what they wait for. */
	if (c->wait)
		arm(c->retry_ev, 0);
}

void sp_rcluster_refresh(sp_rcluster_t *c)
{
	struct conn *k = NULL;
	unsigned n = 0, pick;
	uint64_t now = sp_time_mono_ms();

	if (c->refreshing || c->closing)
		return;
	if (c->last_refresh_ms && now - c->last_refresh_ms < c->refresh_gap_ms) {
		/* Too soon after the last one: the timer does it. */
		arm(c->refresh_ev, (unsigned)(c->refresh_gap_ms - (now - c->last_refresh_ms)));
		return;
	}
	c->last_refresh_ms = now;
	for (struct conn *i = c->conns; i; i = i->next)
		n++;
	/* A connected node first, round robin; else start one (the next in turn). */
	for (unsigned t = 0; t < n && !k; t++) {
		struct conn *i = c->conns;

		pick = (c->next_seed + t) % n;
		for (unsigned j = 0; j < pick; j++)
			i = i->next;
		if (i->connected && !i->dropped)
			k = i;
	}
	c->next_seed++;
	if (!k) {
		for (struct conn *i = c->conns; i; i = i->next)
			if (!i->dropped)
				conn_start(i);
		for (struct conn *i = c->conns; i && !k; i = i->next)
			if (i->ac && !i->dropped)
				k = i; /* commands queue until it connects */
	}
	if (!k || redisAsyncCommand(k->ac, on_slots, c, "CLUSTER SLOTS") != REDIS_OK) {
		refresh_failed(c, k, "no node to ask");
		return;
	}
	c->refreshing = true;
}

static void on_refresh_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	sp_rcluster_refresh(arg);
}

sp_rcluster_t *sp_rcluster_new(struct event_base *base, const char *seeds,
                               const sp_rcluster_opts_t *opts, char *err, size_t errlen)
{
	sp_rcluster_t *c = calloc(1, sizeof(*c));
	const char *p = seeds;

	if (!c) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->base = base;
	if (opts)
		c->opt = *opts;
	c->opt.refresh_ms = c->opt.refresh_ms ? c->opt.refresh_ms : 10000;
	c->opt.retry_min_ms = c->opt.retry_min_ms ? c->opt.retry_min_ms : 20;
	c->opt.retry_max_ms = c->opt.retry_max_ms ? c->opt.retry_max_ms : 500;
	c->opt.max_redirects = c->opt.max_redirects ? c->opt.max_redirects : 16;
	c->opt.connect_timeout_ms = c->opt.connect_timeout_ms ? c->opt.connect_timeout_ms : 2000;
	c->backoff_ms = c->opt.retry_min_ms;
	c->refresh_gap_ms = REFRESH_MIN_MS;
	c->wait_tail = &c->wait;
	memset(c->map.slot_node, SP_RC_NO_NODE, sizeof(c->map.slot_node));
	c->retry_ev = evtimer_new(base, on_retry, c);
	c->refresh_ev = evtimer_new(base, on_refresh_timer, c);
	if (!c->retry_ev || !c->refresh_ev) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	while (p && *p) {
		const char *end = strchr(p, ','), *colon;
		size_t len = end ? (size_t)(end - p) : strlen(p);
		char host[SP_RC_HOST_MAX + 1];
		unsigned long port;
		char *pe;
		struct conn *k;

		colon = memrchr(p, ':', len);
		if (!colon || colon == p || (size_t)(colon - p) > SP_RC_HOST_MAX) {
			snprintf(err, errlen, "bad cluster seed '%.*s' (want HOST:PORT)", (int)len,
			         p);
			goto fail;
		}
		memcpy(host, p, (size_t)(colon - p));
		host[colon - p] = 0;
		port = strtoul(colon + 1, &pe, 10);
		if (pe != p + len || port == 0 || port > 65535) {
			snprintf(err, errlen, "bad port in cluster seed '%.*s'", (int)len, p);
			goto fail;
		}
		k = conn_get(c, host, (uint16_t)port);
		if (!k) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		k->seed = true;
		p = end ? end + 1 : NULL;
	}
	if (!c->conns) {
		snprintf(err, errlen, "no cluster seed");
		goto fail;
	}
	sp_rcluster_refresh(c);
	return c;
fail:
	sp_rcluster_free(c);
	return NULL;
}

void sp_rcluster_free(sp_rcluster_t *c)
{
	struct req *q;

	if (!c)
		return;
	c->closing = true;
	while (c->conns) {
		struct conn *k = c->conns;

		if (k->ac)
			redisAsyncFree(k->ac); /* pending: NULL replies; then conn_gone frees k */
		if (c->conns == k)             /* never connected, or hiredis did not call back */
			conn_unlink_free(k);
	}
	q = c->wait;
	c->wait = NULL;
	while (q) {
		struct req *next = q->next;

		finish(q, NULL, NULL);
		q = next;
	}
	if (c->retry_ev)
		event_free(c->retry_ev);
	if (c->refresh_ev)
		event_free(c->refresh_ev);
	free(c);
}

int sp_rcluster_command(sp_rcluster_t *c, uint16_t slot, sp_rc_callback *cb, void *priv, int argc,
                        const char **argv, const size_t *argvlen)
{
	struct req *q = calloc(1, sizeof(*q));
	long long len;

	if (!q)
		return -ENOMEM;
	len = redisFormatCommandArgv(&q->cmd, argc, argv, argvlen);
	if (len < 0) {
		free(q);
		return -ENOMEM;
	}
	q->c = c;
	q->cb = cb;
	q->priv = priv;
	q->len = (size_t)len;
	q->slot = slot & (SP_RC_SLOTS - 1);
	send_req(c, q);
	return 0;
}

bool sp_rcluster_up(const sp_rcluster_t *c)
{
	if (c->map.n_slots != SP_RC_SLOTS)
		return false;
	for (unsigned i = 0; i < c->map.n_nodes; i++)
		if (!c->node_conn[i] || !c->node_conn[i]->connected)
			return false;
	return true;
}

const char *sp_rcluster_error(const sp_rcluster_t *c)
{
	return c->err[0] ? c->err : "no error";
}

void sp_rcluster_counters(const sp_rcluster_t *c, sp_rcluster_counters_t *out)
{
	*out = c->n;
}

const sp_rc_map_t *sp_rcluster_map(const sp_rcluster_t *c)
{
	return &c->map;
}

bool sp_rcluster_slot_up(const sp_rcluster_t *c, uint16_t slot)
{
	uint8_t i = c->map.slot_node[slot & (SP_RC_SLOTS - 1)];
	const struct conn *k = i == SP_RC_NO_NODE ? NULL : c->node_conn[i];

	return k && (k->connected || k->failed == 0);
}

void sp_rcluster_reset_slot(sp_rcluster_t *c, uint16_t slot)
{
	uint8_t i = c->map.slot_node[slot & (SP_RC_SLOTS - 1)];
	struct conn *k = i == SP_RC_NO_NODE ? NULL : c->node_conn[i];

	if (c->closing)
		return;
	if (k && k->ac && k->connected) {
		SP_LOG(SP_LOG_WARN, "rcluster_reset", "node=%s:%u msg=\"a request timed out\"",
		       k->host, k->port);
		redisAsyncFree(k->ac); /* pending: NULL -> sent again after the refresh */
		if (k->ac)             /* hiredis did not report it: do it ourselves */
			conn_gone(k);
	}
	sp_rcluster_refresh(c);
}
