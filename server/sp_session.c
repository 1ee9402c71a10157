/*
 * sp_session.c: the protocol state machine of a connection (PROTOCOL.md sections 6 and 7)
 * and the router.
 *
 * A SEND becomes one sp_msg_t (one allocation: header, per-recipient nodes, recipient tokens,
 * blob) owned by the sender's worker. Each node is routed on its own:
 *   - recipient registered on this worker (local map, no lock): delivered here;
 *   - registered on another worker (registry, one shard lock): pushed to that worker's inbox;
 *   - nowhere: refused at once (DEVICE_OFFLINE, or EXPIRED for ttl 0).
 * A delivered node waits in the recipient's in-flight list until the device ACKs it
 * (DELIVERED), its connection ends (rerouted), or the ack timeout passes (handled as
 * offline). Either way it ends in sp_node_finish(), which hands it back to the owner; the
 * owner gathers the statuses of one message into one SEND_RESULT per callback and frees the
 * message when its last node is back.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sp_identity.h"
#include "sp_log.h"
#include "sp_server.h"
#include "sp_time.h"

#define GOAWAY_RETRY_MS 2000

static const uint8_t zero_token[SP_TOKEN_LEN];

static const uint8_t *node_token(const sp_node_t *n)
{
	return n->msg->recipients + (size_t)n->index * SP_TOKEN_LEN;
}

/* A fatal error about frame `about`: ERROR with CLOSING, the frame's type and msg_id. */
static void fail(sp_conn_t *c, unsigned code, const char *reason, const sp_frame_t *about)
{
	char tok[SP_TOKEN_SHORT_LEN + 1] = "-";
	char q[SP_LOG_QUOTE_SIZE(SP_REASON_MAX)];

	if (c->state >= SP_CS_READY)
		sp_token_short(c->token, tok);
	sp_log_quote(q, sizeof(q), reason, strlen(reason));
	SP_LOG(SP_LOG_INFO, "protocol_error", "worker=%d token=%s code=%s reason=%s", c->w->id, tok,
	       sp_error_name(code), q);
	sp_conn_error(c, code, true, reason, about);
	sp_conn_close(c,
	              code == SP_ERR_HELLO_TIMEOUT     ? SP_CLOSE_HELLO_TIMEOUT
	              : code == SP_ERR_IDLE_TIMEOUT    ? SP_CLOSE_IDLE_TIMEOUT
	              : code == SP_ERR_TOO_MANY_ERRORS ? SP_CLOSE_TOO_MANY_ERRORS
	              : code == SP_ERR_INTERNAL_ERROR  ? SP_CLOSE_INTERNAL
	                                               : SP_CLOSE_PROTOCOL,
	              0, NULL);
}

/* ---- results ----------------------------------------------------------------------------- */

void sp_session_flush_results(sp_worker_t *w)
{
	sp_msg_t *msg = w->batch_msg;
	sp_conn_t *s;

	if (!msg)
		return;
	s = sp_worker_conn(w, msg->sender);
	if (s && w->batch_n && s->state < SP_CS_CLOSING) {
		sp_frame_t f = {.type = SP_SEND_RESULT,
		                .fields = SP_BIT(SP_F_MSG_ID) | SP_BIT(SP_F_RESULTS),
		                .msg_id = msg->msg_id,
		                .results = w->batch,
		                .n_results = w->batch_n};

		sp_conn_send(s, &f);
	}
	w->batch_msg = NULL;
	w->batch_n = 0;
}

/* Answers every recipient of a SEND that was refused before routing. */
static void refuse_all(sp_conn_t *c, const sp_frame_t *send, uint8_t status, uint32_t retry_ms)
{
	sp_worker_t *w = c->w;
	sp_frame_t f = {.type = SP_SEND_RESULT,
	                .fields = SP_BIT(SP_F_MSG_ID) | SP_BIT(SP_F_RESULTS),
	                .msg_id = send->msg_id,
	                .results = w->batch,
	                .n_results = send->n_recipients};

	sp_session_flush_results(w); /* w->batch is reused below */
	for (uint32_t i = 0; i < send->n_recipients; i++)
		sp_result_put(w->batch + (size_t)i * SP_RESULT_LEN, (uint16_t)i, status);
	if (retry_ms) {
		f.fields |= SP_BIT(SP_F_RETRY_AFTER);
		f.retry_after = retry_ms;
	}
	sp_metric_add(&w->metrics, SP_M_SEND_RESULTS + sp_metric_status_index(status),
	              send->n_recipients);
	sp_conn_send(c, &f);
}

/* Message blocks come from the worker's pool: only the owner allocates and frees them. */
static sp_msg_t *msg_alloc(sp_worker_t *w, size_t size)
{
	unsigned cls = 0;
	sp_msg_t *msg;

	while (cls < SP_POOL_CLASSES && ((size_t)1 << (SP_POOL_MIN_SHIFT + cls)) < size)
		cls++;
	if (cls < SP_POOL_CLASSES && w->pool[cls]) {
		msg = w->pool[cls];
		w->pool[cls] = *(void **)msg;
		w->pool_bytes -= (size_t)1 << (SP_POOL_MIN_SHIFT + cls);
	} else {
		msg = malloc(cls < SP_POOL_CLASSES ? (size_t)1 << (SP_POOL_MIN_SHIFT + cls) : size);
	}
	if (msg)
		msg->pool_class = cls < SP_POOL_CLASSES ? (uint8_t)cls : 0xFF;
	return msg;
}

static void msg_free(sp_worker_t *w, sp_msg_t *msg)
{
	size_t size;

	if (msg->prev)
		msg->prev->next = msg->next;
	else
		w->msgs = msg->next;
	if (msg->next)
		msg->next->prev = msg->prev;
	w->live_msgs--;
	if (msg->pool_class == 0xFF) {
		free(msg);
		return;
	}
	size = (size_t)1 << (SP_POOL_MIN_SHIFT + msg->pool_class);
	if (w->pool_bytes + size > SP_POOL_MAX_BYTES) {
		free(msg);
		return;
	}
	*(void **)msg = w->pool[msg->pool_class];
	w->pool[msg->pool_class] = msg;
	w->pool_bytes += size;
}

static void drain_done_check(sp_conn_t *c)
{
	if (c->state == SP_CS_DRAINING && c->sends_outstanding == 0 && c->n_inflight == 0)
		sp_conn_close(c, SP_CLOSE_SHUTDOWN, 0, NULL);
}

/* On the owner's worker: one recipient's status is known. */
static void result_arrived(sp_worker_t *w, sp_node_t *n)
{
	sp_msg_t *msg = n->msg;
	sp_conn_t *s = sp_worker_conn(w, msg->sender);

	sp_metric_inc(&w->metrics, SP_M_SEND_RESULTS + sp_metric_status_index(n->status));
	if (s && s->state < SP_CS_CLOSING) {
		if (w->batch_msg != msg) {
			sp_session_flush_results(w);
			w->batch_msg = msg;
		}
		sp_result_put(w->batch + (size_t)w->batch_n * SP_RESULT_LEN, n->index, n->status);
		w->batch_n++;
	}
	if (--msg->unanswered > 0)
		return;
	if (w->batch_msg == msg)
		sp_session_flush_results(w);
	if (s) {
		s->sends_outstanding--;
		drain_done_check(s);
	}
	msg_free(w, msg);
}

void sp_node_finish(sp_worker_t *w, sp_node_t *n, uint8_t status)
{
	n->status = status;
	n->next = NULL;
	if (n->msg->owner == w) {
		result_arrived(w, n);
	} else {
		n->kind = SP_NODE_RESULT;
		sp_worker_push(n->msg->owner, n);
	}
}

/* ---- delivery ---------------------------------------------------------------------------- */

static bool expired(const sp_worker_t *w, const sp_msg_t *msg)
{
	return msg->ttl && w->now >= msg->expires;
}

static void list_append(sp_node_t **head, sp_node_t **tail, sp_node_t *n)
{
	n->next = NULL;
	if (*tail)
		(*tail)->next = n;
	else
		*head = n;
	*tail = n;
}

/*
 * A node is done on its recipient's side. A message read from the device's queue has no
 * sender to answer: it is just dropped here (unless it was acknowledged, see on_ack, it stays
 * in Redis and comes again on the next connection). Any other goes back to its owner.
 */
static void node_done(sp_worker_t *w, sp_node_t *n, uint8_t status)
{
	if (n->msg->stored)
		msg_free(w, n->msg); /* stored messages are made and dropped on one worker */
	else
		sp_node_finish(w, n, status);
}

/* ---- the offline queue ------------------------------------------------------------------- */

static uint8_t status_of_store(int st)
{
	switch (st) {
	case SP_STORE_STORED:
	case SP_STORE_DUPLICATE:
		return SP_ST_QUEUED;
	case SP_STORE_FULL_COUNT:
	case SP_STORE_FULL_BYTES:
		return SP_ST_QUOTA_EXCEEDED;
	case SP_STORE_EXPIRED:
		return SP_ST_EXPIRED;
	default:
		return SP_ST_TRY_LATER;
	}
}

static void queue_fetch(sp_conn_t *c);

/* Something was queued for token: if its device is connected, it should read its queue. */
static void queue_kick_token(sp_worker_t *w, const uint8_t *token)
{
	sp_connref_t ref = sp_registry_get(&w->srv->registry, token);
	sp_node_t *k;

	if (!ref)
		return;
	if (SP_CONNREF_WORKER(ref) == (unsigned)w->id) {
		sp_conn_t *c = sp_worker_conn(w, ref);

		if (c)
			sp_session_queue_kick(c);
		return;
	}
	k = calloc(1, sizeof(*k));
	if (k) {
		k->kind = SP_NODE_KICK;
		k->ref = ref;
		sp_worker_push(&w->srv->workers[SP_CONNREF_WORKER(ref)], k);
	}
}

static void on_enqueued(int st, uint64_t seq, void *arg)
{
	sp_node_t *n = arg;
	sp_worker_t *w = n->at;

	(void)seq;
	if (atomic_load(&w->srv->stopping))
		return;
	w->now = sp_now_ms();
	if (st == SP_STORE_STORED)
		queue_kick_token(w, node_token(n));
	sp_node_finish(w, n, status_of_store(st));
	sp_worker_after(w);
}

/* Offline: store the message (QUEUED once Redis has it), or refuse it. */
static void go_offline(sp_worker_t *w, sp_node_t *n)
{
	const sp_msg_t *msg = n->msg;
	size_t len = sp_store_record_size(msg->collapse_len, msg->blob_len);

	if (msg->ttl == 0) {
		sp_node_finish(w, n, SP_ST_EXPIRED);
		return;
	}
	if (!w->store) {
		sp_node_finish(w, n, SP_ST_DEVICE_OFFLINE);
		return;
	}
	n->at = w;
	if (!len ||
	    sp_store_record_build(w->record, len, msg->expires_wall,
	                          msg->has_priority ? msg->priority : 0, msg->collapse,
	                          msg->collapse_len, msg->blob, msg->blob_len) < 0 ||
	    sp_store_enqueue(w->store, node_token(n), msg->msg_id, w->record, len,
	                     msg->expires_wall, msg->collapse, msg->collapse_len, on_enqueued,
	                     n) < 0)
		sp_node_finish(w, n, SP_ST_TRY_LATER);
}

/* Queue depth of each device as it connects: a sample for the metrics. */
static void on_depth(int st, uint64_t count, uint64_t bytes, void *arg)
{
	sp_worker_t *w = arg;

	if (st != SP_STORE_OK || atomic_load(&w->srv->stopping))
		return;
	sp_metric_inc(&w->metrics, SP_M_QUEUE_DEPTH_SAMPLES);
	sp_metric_add(&w->metrics, SP_M_QUEUE_DEPTH_SUM, (int64_t)count);
	sp_metric_add(&w->metrics, SP_M_QUEUE_BYTES_SUM, (int64_t)bytes);
}

struct fetch_ctx {
	sp_worker_t *w;
	sp_connref_t ref;
};

/* A message read from c's queue, as a one-recipient message owned by c's worker. */
static sp_node_t *stored_new(sp_conn_t *c, const sp_store_item_t *it, const sp_store_record_t *rec)
{
	sp_worker_t *w = c->w;
	sp_msg_t *msg =
	        msg_alloc(w, sizeof(*msg) + sizeof(sp_node_t) + SP_TOKEN_LEN + rec->blob_len);
	uint64_t now_wall = sp_time_wall_ms();
	uint8_t cls;

	if (!msg)
		return NULL;
	cls = msg->pool_class;
	memset(msg, 0, sizeof(*msg));
	msg->pool_class = cls;
	msg->stored = 1;
	msg->owner = w;
	msg->n = msg->unanswered = 1;
	msg->ttl = 1;
	msg->expires_wall = rec->expires_ms;
	msg->expires = w->now + (rec->expires_ms > now_wall ? rec->expires_ms - now_wall : 0);
	memcpy(msg->msg_id, it->id, SP_MSG_ID_LEN);
	msg->has_priority = rec->priority != 0;
	msg->priority = rec->priority;
	msg->collapse_len = (uint8_t)rec->collapse_len;
	if (rec->collapse_len)
		memcpy(msg->collapse, rec->collapse, rec->collapse_len);
	msg->nodes = (sp_node_t *)(msg + 1);
	msg->recipients = (uint8_t *)(msg->nodes + 1);
	msg->blob = msg->recipients + SP_TOKEN_LEN;
	msg->blob_len = (uint32_t)rec->blob_len;
	memcpy(msg->recipients, c->token, SP_TOKEN_LEN);
	if (rec->blob_len)
		memcpy(msg->blob, rec->blob, rec->blob_len);
	memset(msg->nodes, 0, sizeof(sp_node_t));
	msg->nodes->msg = msg;
	msg->next = w->msgs;
	if (w->msgs)
		w->msgs->prev = msg;
	w->msgs = msg;
	w->live_msgs++;
	return msg->nodes;
}

static void pump(sp_conn_t *r);

/* The drain is over: live messages held back meanwhile go after the stored ones. */
static void queue_drained(sp_conn_t *c)
{
	c->qstate = SP_Q_DONE;
	if (c->held) {
		if (c->pending_tail)
			c->pending_tail->next = c->held;
		else
			c->pending = c->held;
		c->pending_tail = c->held_tail;
		for (sp_node_t *n = c->held; n; n = n->next)
			c->n_pending++;
		c->held = c->held_tail = NULL;
	}
}

static void on_fetched(int st, const sp_store_item_t *items, size_t n, void *arg)
{
	struct fetch_ctx *fx = arg;
	sp_worker_t *w = fx->w;
	sp_connref_t ref = fx->ref;
	sp_conn_t *c;

	free(fx);
	if (atomic_load(&w->srv->stopping))
		return;
	w->now = sp_now_ms();
	c = sp_worker_conn(w, ref);
	if (!c || (c->state != SP_CS_READY && c->state != SP_CS_DRAINING)) {
		sp_worker_after(w);
		return;
	}
	if (st != SP_STORE_OK) {
		/* Redis is away: let live traffic through, and try the queue again later. */
		queue_drained(c);
		c->qmore = 1;
		pump(c);
		sp_worker_after(w);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		sp_store_record_t rec;
		sp_node_t *node;

		c->qseq = items[i].seq;
		if (!items[i].record)
			continue; /* expired or gone meanwhile; the store removes it */
		if (sp_store_record_parse(items[i].record, items[i].record_len, &rec) < 0) {
			/* Not ours to deliver: remove it so it cannot block the queue. */
			sp_store_ack(w->store, c->token, (const uint8_t(*)[16])items[i].id, 1, NULL,
			             NULL);
			continue;
		}
		node = stored_new(c, &items[i], &rec);
		if (!node)
			break; /* it stays queued for the next connection */
		sp_metric_inc(&w->metrics, SP_M_QUEUE_FETCHED);
		list_append(&c->pending, &c->pending_tail, node);
		c->n_pending++;
		c->q_unsent++;
		c->pending_bytes += rec.blob_len;
	}
	if (n < (size_t)w->srv->cfg.drain_page) {
		if (c->qmore) {
			c->qmore = 0;
			queue_fetch(c); /* something was queued meanwhile */
		} else {
			queue_drained(c);
		}
	} else {
		c->qstate = SP_Q_PAGED;
	}
	pump(c);
	sp_worker_after(w);
}

static void queue_fetch(sp_conn_t *c)
{
	sp_worker_t *w = c->w;
	struct fetch_ctx *fx = malloc(sizeof(*fx));

	c->qstate = SP_Q_FETCHING;
	if (!fx || sp_store_fetch(w->store, c->token, c->qseq, (unsigned)w->srv->cfg.drain_page,
	                          on_fetched, fx) < 0) {
		free(fx);
		queue_drained(c);
		c->qmore = 1; /* the worker tick tries again */
	} else {
		fx->w = w;
		fx->ref = sp_conn_ref(c);
	}
}

void sp_session_queue_kick(sp_conn_t *c)
{
	if (!c->w->store || (c->flags & SP_CF_SEND_ONLY) || c->state != SP_CS_READY)
		return;
	if (c->qstate == SP_Q_DONE)
		queue_fetch(c);
	else if (c->qstate != SP_Q_NONE)
		c->qmore = 1;
}

/* ---- delivery ---------------------------------------------------------------------------- */

static void send_deliver(sp_conn_t *r, sp_node_t *n)
{
	sp_worker_t *w = r->w;
	const sp_msg_t *msg = n->msg;
	sp_frame_t f = {.type = SP_DELIVER,
	                .flags = msg->stored ? SP_DELIVER_STORED : 0,
	                .fields = SP_BIT(SP_F_MSG_ID) | SP_BIT(SP_F_BLOB),
	                .msg_id = msg->msg_id,
	                .blob = msg->blob,
	                .blob_len = msg->blob_len};

	if (expired(w, msg)) {
		node_done(w, n, SP_ST_EXPIRED);
		return;
	}
	if (msg->has_priority) {
		f.fields |= SP_BIT(SP_F_PRIORITY);
		f.priority = msg->priority;
	}
	if (msg->collapse_len) {
		f.fields |= SP_BIT(SP_F_COLLAPSE_ID);
		f.collapse_id = msg->collapse;
		f.collapse_id_len = msg->collapse_len;
	}
	/* In the in-flight list first: if the send closes r, detaching reroutes this node too. */
	n->deadline = w->now + (uint64_t)w->srv->cfg.ack_timeout;
	list_append(&r->inflight, &r->inflight_tail, n);
	r->n_inflight++;
	sp_conn_send(r, &f);
}

static void pump(sp_conn_t *r)
{
	while (r->pending && r->n_inflight < r->window && r->state == SP_CS_READY) {
		sp_node_t *n = r->pending;

		r->pending = n->next;
		if (!r->pending)
			r->pending_tail = NULL;
		r->n_pending--;
		r->pending_bytes -= n->msg->blob_len;
		if (n->msg->stored)
			r->q_unsent--;
		send_deliver(r, n);
	}
	/* Keep the next page coming while this one is being delivered. */
	if (r->qstate == SP_Q_PAGED && r->state == SP_CS_READY &&
	    r->q_unsent < (uint32_t)r->w->srv->cfg.drain_page / 2 + 1)
		queue_fetch(r);
}

static void deliver(sp_conn_t *r, sp_node_t *n)
{
	if (r->qstate == SP_Q_FETCHING || r->qstate == SP_Q_PAGED) {
		/* Its queue is being read: this goes after what was already queued. */
		list_append(&r->held, &r->held_tail, n);
		r->pending_bytes += n->msg->blob_len;
	} else if (r->n_inflight < r->window && !r->pending) {
		send_deliver(r, n);
		return;
	} else {
		list_append(&r->pending, &r->pending_tail, n);
		r->n_pending++;
		r->pending_bytes += n->msg->blob_len;
	}
	sp_conn_check_output(r);
}

void sp_route(sp_worker_t *w, sp_node_t *n)
{
	sp_server_t *srv = w->srv;
	const uint8_t *tok = node_token(n);
	sp_conn_t *r = (sp_conn_t *)sp_tokmap_get(&w->local, tok);
	sp_connref_t ref;

	if (expired(w, n->msg)) {
		sp_node_finish(w, n, SP_ST_EXPIRED);
		return;
	}
	if (r && r->state == SP_CS_READY) {
		sp_metric_inc(&w->metrics, SP_M_DELIVERIES_LOCAL);
		deliver(r, n);
		return;
	}
	ref = sp_registry_get(&srv->registry, tok);
	if (ref && SP_CONNREF_WORKER(ref) != (unsigned)w->id && n->hops < 4) {
		n->hops++;
		n->kind = SP_NODE_DELIVER;
		sp_metric_inc(&w->metrics, SP_M_DELIVERIES_REMOTE);
		sp_worker_push(&srv->workers[SP_CONNREF_WORKER(ref)], n);
		return;
	}
	go_offline(w, n);
}

void sp_session_detach(sp_conn_t *c)
{
	sp_worker_t *w = c->w;
	sp_node_t *n, *next;

	if (c->flags & SP_CF_REGISTERED) {
		sp_tokmap_del(&w->local, c->token, (uintptr_t)c);
		sp_registry_del(&w->srv->registry, c->token, sp_conn_ref(c));
		sp_metric_add(&w->metrics, SP_M_DEVICES, -1);
		c->flags &= (uint8_t)~SP_CF_REGISTERED;
	}
	/* Unacknowledged first, then not yet sent, then held back: their order is kept. */
	if (c->inflight_tail)
		c->inflight_tail->next = c->pending;
	else
		c->inflight = c->pending;
	if (c->pending_tail)
		c->pending_tail->next = c->held;
	else if (c->inflight_tail)
		c->inflight_tail->next = c->held;
	else
		c->inflight = c->held;
	n = c->inflight;
	sp_metric_add(&w->metrics, SP_M_REDELIVERIES, c->n_inflight);
	c->inflight = c->inflight_tail = c->pending = c->pending_tail = NULL;
	c->held = c->held_tail = NULL;
	c->n_inflight = c->n_pending = c->q_unsent = 0;
	c->pending_bytes = 0;
	c->qstate = SP_Q_NONE;
	for (; n; n = next) {
		next = n->next;
		if (n->msg->stored)
			node_done(w, n, 0); /* still in Redis: it comes again next time */
		else
			sp_route(w, n); /* to the device's new connection, or to its queue */
	}
}

/* ---- frames ------------------------------------------------------------------------------ */

static void replace_conn(sp_conn_t *old)
{
	char tok[SP_TOKEN_SHORT_LEN + 1];

	if (old->state != SP_CS_READY && old->state != SP_CS_DRAINING)
		return;
	sp_token_short(old->token, tok);
	SP_LOG(SP_LOG_INFO, "conn_replaced", "worker=%d token=%s", old->w->id, tok);
	sp_conn_goaway(old, SP_ERR_REPLACED, 0);
	sp_conn_close(old, SP_CLOSE_REPLACED, 0, NULL);
}

static int register_conn(sp_conn_t *c)
{
	sp_worker_t *w = c->w;
	sp_connref_t old = 0;
	uintptr_t old_local = 0;

	if (sp_registry_set(&w->srv->registry, c->token, sp_conn_ref(c), &old) < 0)
		return -ENOMEM;
	if (sp_tokmap_put(&w->local, c->token, (uintptr_t)c, &old_local) < 0) {
		sp_registry_del(&w->srv->registry, c->token, sp_conn_ref(c));
		return -ENOMEM;
	}
	c->flags |= SP_CF_REGISTERED;
	sp_metric_inc(&w->metrics, SP_M_DEVICES);
	if (!old)
		return 0;
	if (SP_CONNREF_WORKER(old) == (unsigned)w->id) {
		sp_conn_t *oc = sp_worker_conn(w, old);

		if (oc && oc != c) {
			oc->flags &= (uint8_t)~SP_CF_REGISTERED; /* its entries now name c */
			sp_metric_add(&w->metrics, SP_M_DEVICES, -1);
			replace_conn(oc);
		}
	} else {
		sp_node_t *n = calloc(1, sizeof(*n));

		if (n) {
			n->kind = SP_NODE_REPLACE;
			n->ref = old;
			sp_worker_push(&w->srv->workers[SP_CONNREF_WORKER(old)], n);
		}
	}
	return 0;
}

static uint16_t clamp16(int64_t v, int64_t lo, int64_t hi)
{
	return (uint16_t)(v < lo ? lo : v > hi ? hi : v);
}

static void on_hello(sp_conn_t *c, const sp_frame_t *f)
{
	const sp_server_config_t *cfg = &c->w->srv->cfg;
	sp_frame_t wf = {.type = SP_WELCOME};
	char tok[SP_TOKEN_SHORT_LEN + 1];

	if (f->version != SP_VERSION_1) {
		fail(c, SP_ERR_UNSUPPORTED_VERSION, "this server speaks sealpush version 1", f);
		return;
	}
	c->keepalive = clamp16((f->fields & SP_BIT(SP_F_KEEPALIVE)) ? f->keepalive : cfg->keepalive,
	                       cfg->keepalive_min, cfg->keepalive_max);
	c->window = (uint16_t)cfg->window;
	if ((f->fields & SP_BIT(SP_F_WINDOW)) && f->window < c->window)
		c->window = f->window;
	if (f->flags & SP_HELLO_SEND_ONLY)
		c->flags |= SP_CF_SEND_ONLY;
	else if (register_conn(c) < 0) {
		fail(c, SP_ERR_INTERNAL_ERROR, "out of memory", f);
		return;
	}
	wf.fields = SP_BIT(SP_F_VERSION) | SP_BIT(SP_F_TOKEN) | SP_BIT(SP_F_MAX_FRAME) |
	            SP_BIT(SP_F_MAX_BLOB) | SP_BIT(SP_F_MAX_RECIPIENTS) | SP_BIT(SP_F_WINDOW) |
	            SP_BIT(SP_F_SEND_WINDOW) | SP_BIT(SP_F_KEEPALIVE) | SP_BIT(SP_F_KEEPALIVE_MIN) |
	            SP_BIT(SP_F_KEEPALIVE_MAX);
	wf.version = SP_VERSION_1;
	wf.token = c->token;
	wf.max_frame = (uint32_t)cfg->max_frame;
	wf.max_blob = (uint32_t)cfg->max_blob;
	wf.max_recipients = (uint16_t)cfg->max_recipients;
	wf.window = c->window;
	wf.send_window = (uint16_t)cfg->send_window;
	wf.keepalive = c->keepalive;
	wf.keepalive_min = (uint16_t)cfg->keepalive_min;
	wf.keepalive_max = (uint16_t)cfg->keepalive_max;
	c->dec.max_frame = (uint32_t)cfg->max_frame;
	c->rate_tokens = (double)(cfg->send_burst ? cfg->send_burst : cfg->send_rate);
	c->rate_t = c->w->now;
	sp_conn_set_state(c, SP_CS_READY);
	c->t_rx = c->w->now;
	sp_conn_send(c, &wf);
	if (c->w->store && !(c->flags & SP_CF_SEND_ONLY)) {
		/* The message it processed last time but could not ACK (7.4): drop it first, on
		 * the same Redis connection, so the fetch after it does not return it. */
		if (f->fields & SP_BIT(SP_F_RESUME_ID))
			sp_store_ack(c->w->store, c->token, (const uint8_t(*)[16])f->resume_id, 1,
			             NULL, NULL);
		sp_store_depth(c->w->store, c->token, on_depth, c->w);
		queue_fetch(c); /* its queue first (PROTOCOL.md 7.3), then live messages */
	}
	sp_token_short(c->token, tok);
	SP_LOG(SP_LOG_DEBUG, "conn_ready", "worker=%d token=%s send_only=%d keepalive=%u window=%u",
	       c->w->id, tok, !!(c->flags & SP_CF_SEND_ONLY), c->keepalive, c->window);
}

/* Token bucket per connection; returns the milliseconds to wait, or 0 if n may go now. */
static uint32_t rate_take(sp_conn_t *c, uint32_t n)
{
	const sp_server_config_t *cfg = &c->w->srv->cfg;
	double burst = (double)(cfg->send_burst ? cfg->send_burst : cfg->send_rate);
	double rate = (double)cfg->send_rate;

	if (!cfg->send_rate)
		return 0;
	c->rate_tokens += (double)(c->w->now - c->rate_t) * rate / 1000.0;
	c->rate_t = c->w->now;
	if (c->rate_tokens > burst)
		c->rate_tokens = burst;
	if (c->rate_tokens >= n) {
		c->rate_tokens -= n;
		return 0;
	}
	return (uint32_t)((n - c->rate_tokens) * 1000.0 / rate) + 1;
}

static int cmp_recipient(const void *a, const void *b, void *arg)
{
	const uint8_t *r = arg;
	uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
	int c = memcmp(r + (size_t)i * SP_TOKEN_LEN, r + (size_t)j * SP_TOKEN_LEN, SP_TOKEN_LEN);

	return c ? c : (i > j) - (i < j);
}

/*
 * Marks in rep[i] the recipients that repeat an earlier one (or are all zero). Sorting the
 * indexes by token costs O(n log n) whatever tokens the sender picks; a hash set of
 * sender-chosen keys could be driven into collisions.
 */
static void find_repeats(sp_worker_t *w, const uint8_t *recipients, uint32_t n, uint8_t *rep)
{
	uint32_t *idx = w->dedup;

	for (uint32_t i = 0; i < n; i++) {
		idx[i] = i;
		rep[i] = memcmp(recipients + (size_t)i * SP_TOKEN_LEN, zero_token, SP_TOKEN_LEN) ==
		         0;
	}
	if (n <= 1)
		return;
	qsort_r(idx, n, sizeof(*idx), cmp_recipient, (void *)recipients);
	for (uint32_t k = 1; k < n; k++)
		if (memcmp(recipients + (size_t)idx[k] * SP_TOKEN_LEN,
		           recipients + (size_t)idx[k - 1] * SP_TOKEN_LEN, SP_TOKEN_LEN) == 0)
			rep[idx[k]] = 1; /* equal tokens sort by index: later ones repeat */
}

static sp_msg_t *msg_new(sp_worker_t *w, sp_conn_t *c, const sp_frame_t *f)
{
	const sp_server_config_t *cfg = &w->srv->cfg;
	size_t n = f->n_recipients;
	sp_msg_t *msg =
	        msg_alloc(w, sizeof(*msg) + n * sizeof(sp_node_t) + n * SP_TOKEN_LEN + f->blob_len);
	uint32_t ttl;
	uint8_t cls;

	if (!msg)
		return NULL;
	cls = msg->pool_class;
	memset(msg, 0, sizeof(*msg));
	msg->pool_class = cls;
	msg->owner = w;
	msg->sender = sp_conn_ref(c);
	msg->n = (uint32_t)n;
	msg->unanswered = (uint32_t)n;
	ttl = (f->fields & SP_BIT(SP_F_TTL)) ? f->ttl : (uint32_t)cfg->max_ttl;
	if (ttl > cfg->max_ttl)
		ttl = (uint32_t)cfg->max_ttl;
	msg->ttl = ttl;
	msg->expires = ttl ? w->now + (uint64_t)ttl * 1000 : 0;
	msg->expires_wall = ttl ? sp_time_wall_ms() + (uint64_t)ttl * 1000 : 0;
	memcpy(msg->msg_id, f->msg_id, SP_MSG_ID_LEN);
	msg->has_priority = !!(f->fields & SP_BIT(SP_F_PRIORITY));
	msg->priority = f->priority;
	msg->collapse_len = (uint8_t)f->collapse_id_len;
	if (f->collapse_id_len)
		memcpy(msg->collapse, f->collapse_id, f->collapse_id_len);
	msg->nodes = (sp_node_t *)(msg + 1);
	msg->recipients = (uint8_t *)(msg->nodes + n);
	msg->blob = msg->recipients + n * SP_TOKEN_LEN;
	msg->blob_len = f->blob_len;
	memcpy(msg->recipients, f->recipients, n * SP_TOKEN_LEN);
	if (f->blob_len)
		memcpy(msg->blob, f->blob, f->blob_len);
	for (size_t i = 0; i < n; i++) {
		memset(&msg->nodes[i], 0, sizeof(sp_node_t));
		msg->nodes[i].msg = msg;
		msg->nodes[i].index = (uint16_t)i;
	}
	msg->next = w->msgs;
	if (w->msgs)
		w->msgs->prev = msg;
	w->msgs = msg;
	w->live_msgs++;
	return msg;
}

static void on_send(sp_conn_t *c, const sp_frame_t *f)
{
	sp_worker_t *w = c->w;
	const sp_server_config_t *cfg = &w->srv->cfg;
	uint32_t wait;
	uint8_t *rep;
	sp_msg_t *msg;

	if (c->state == SP_CS_DRAINING) {
		refuse_all(c, f, SP_ST_SHUTDOWN, 0);
		return;
	}
	if (c->sends_outstanding >= cfg->send_window) {
		sp_metric_inc(&w->metrics, SP_M_LIMIT_HITS + SP_LIMIT_SEND_WINDOW);
		refuse_all(c, f, SP_ST_TOO_MANY_REQUESTS, 100);
		return;
	}
	if ((wait = rate_take(c, f->n_recipients)) > 0) {
		sp_metric_inc(&w->metrics, SP_M_LIMIT_HITS + SP_LIMIT_SEND_RATE);
		refuse_all(c, f, SP_ST_TOO_MANY_REQUESTS, wait);
		return;
	}
	if (f->n_recipients > cfg->max_recipients) {
		sp_metric_inc(&w->metrics, SP_M_LIMIT_HITS + SP_LIMIT_MAX_RECIPIENTS);
		refuse_all(c, f, SP_ST_TOO_MANY_RECIPIENTS, 0);
		return;
	}
	if (f->blob_len > cfg->max_blob) {
		sp_metric_inc(&w->metrics, SP_M_LIMIT_HITS + SP_LIMIT_MAX_BLOB);
		refuse_all(c, f, SP_ST_PAYLOAD_TOO_LARGE, 0);
		return;
	}
	msg = msg_new(w, c, f);
	if (!msg) {
		refuse_all(c, f, SP_ST_INTERNAL_ERROR, 0);
		return;
	}
	c->sends_outstanding++;
	rep = (uint8_t *)(w->dedup + SP_MAX_RECIPIENTS_V1);
	find_repeats(w, msg->recipients, msg->n, rep);
	for (uint32_t i = 0; i < msg->n; i++) {
		sp_node_t *n = &msg->nodes[i];

		if (rep[i]) {
			sp_node_finish(w, n, SP_ST_BAD_DEVICE_TOKEN);
			continue;
		}
		sp_metric_inc(&w->metrics, SP_M_MESSAGES_ACCEPTED);
		sp_route(w, n);
	}
}

static void on_ack(sp_conn_t *c, const sp_frame_t *f)
{
	sp_worker_t *w = c->w;
	uint8_t(*acked)[16] = w->acks; /* not w->record: finishing a node may build records */
	size_t n_acked = 0, max_acked = SP_STORE_MAX_ACK;

	for (uint32_t i = 0; i < f->n_msg_ids; i++) {
		const uint8_t *id = f->msg_ids + (size_t)i * SP_MSG_ID_LEN;
		sp_node_t *prev = NULL, *n;

		for (n = c->inflight; n; prev = n, n = n->next)
			if (memcmp(n->msg->msg_id, id, SP_MSG_ID_LEN) == 0)
				break;
		if (!n) {
			sp_metric_inc(&w->metrics, SP_M_ACKS_UNKNOWN);
			continue;
		}
		if (prev)
			prev->next = n->next;
		else
			c->inflight = n->next;
		if (c->inflight_tail == n)
			c->inflight_tail = prev;
		c->n_inflight--;
		if (!n->msg->stored) {
			sp_node_finish(w, n, SP_ST_DELIVERED);
			continue;
		}
		/* Delivered from the queue: now it may leave Redis. */
		sp_metric_inc(&w->metrics, SP_M_QUEUE_DELIVERED);
		memcpy(acked[n_acked++], n->msg->msg_id, SP_MSG_ID_LEN);
		node_done(w, n, SP_ST_DELIVERED);
		if (n_acked == max_acked) {
			sp_store_ack(w->store, c->token, (const uint8_t(*)[16])acked, n_acked, NULL,
			             NULL);
			n_acked = 0;
		}
	}
	if (n_acked)
		sp_store_ack(w->store, c->token, (const uint8_t(*)[16])acked, n_acked, NULL, NULL);
	pump(c);
	drain_done_check(c);
}

static void on_error_frame(sp_conn_t *c, const sp_frame_t *f)
{
	char q[SP_LOG_QUOTE_SIZE(SP_REASON_MAX)] = "\"\"";
	char tok[SP_TOKEN_SHORT_LEN + 1];

	sp_metric_inc(&c->w->metrics, SP_M_ERRORS_RECEIVED);
	if (f->reason_len)
		sp_log_quote(q, sizeof(q), (const char *)f->reason, f->reason_len);
	sp_token_short(c->token, tok);
	SP_LOG(SP_LOG_INFO, "client_error", "worker=%d token=%s code=%u closing=%d reason=%s",
	       c->w->id, tok, f->code, !!(f->flags & SP_ERROR_CLOSING), q);
	if (f->flags & SP_ERROR_CLOSING)
		sp_conn_close(c, SP_CLOSE_PEER, 0, NULL);
}

void sp_session_frame(sp_conn_t *c, sp_frame_t *f)
{
	sp_metric_inc(&c->w->metrics, SP_M_FRAMES_IN + sp_metric_frame_index(f->type));
	c->t_rx = c->w->now;
	if (c->state == SP_CS_AWAITING_HELLO) {
		if (f->type == SP_HELLO)
			on_hello(c, f);
		else
			fail(c, SP_ERR_UNEXPECTED_FRAME, "only HELLO may come before WELCOME", f);
		return;
	}
	if (c->state != SP_CS_READY && c->state != SP_CS_DRAINING)
		return;
	switch (f->type) {
	case SP_SEND:
		on_send(c, f);
		break;
	case SP_ACK:
		on_ack(c, f);
		break;
	case SP_PING: {
		sp_frame_t pong = {
		        .type = SP_PONG, .fields = f->fields & SP_BIT(SP_F_DATA), .data = f->data};

		sp_conn_send(c, &pong);
		break;
	}
	case SP_PONG:
		break;
	case SP_ERROR:
		on_error_frame(c, f);
		break;
	default: {
		char why[96];

		snprintf(why, sizeof(why), "a client may not send %s", sp_frame_type_name(f->type));
		fail(c, SP_ERR_UNEXPECTED_FRAME, why, f);
		break;
	}
	}
}

void sp_session_decode_error(sp_conn_t *c, int err, const sp_frame_t *f)
{
	sp_worker_t *w = c->w;
	unsigned code = (unsigned)-err;
	char why[SP_REASON_MAX];

	if (code == SP_ERR_UNKNOWN_FRAME_TYPE && c->state >= SP_CS_READY) {
		sp_metric_inc(&w->metrics, SP_M_FRAMES_IN);
		c->t_rx = w->now;
		if (++c->errors > w->srv->cfg.max_errors) {
			sp_metric_inc(&w->metrics, SP_M_LIMIT_HITS + SP_LIMIT_MAX_ERRORS);
			fail(c, SP_ERR_TOO_MANY_ERRORS, "too many frames of unknown types", f);
			return;
		}
		sp_conn_error(c, code, false, sp_frame_strerror(err, f, why, sizeof(why)), f);
		return;
	}
	if (code == SP_ERR_UNKNOWN_FRAME_TYPE) {
		fail(c, SP_ERR_UNEXPECTED_FRAME, "only HELLO may come before WELCOME", f);
		return;
	}
	if (code == SP_ERR_FRAME_TOO_LARGE)
		sp_metric_inc(&w->metrics, SP_M_LIMIT_HITS + (c->state == SP_CS_AWAITING_HELLO
		                                                      ? SP_LIMIT_PREHELLO_FRAME
		                                                      : SP_LIMIT_MAX_FRAME));
	if (code == SP_ERR_NOMEM) {
		fail(c, SP_ERR_INTERNAL_ERROR, "out of memory", f);
		return;
	}
	fail(c, code, sp_frame_strerror(err, f, why, sizeof(why)), f);
}

void sp_session_inbox(sp_worker_t *w, sp_node_t *n)
{
	switch (n->kind) {
	case SP_NODE_DELIVER:
		sp_route(w, n);
		break;
	case SP_NODE_RESULT:
		result_arrived(w, n);
		break;
	case SP_NODE_KICK: {
		sp_conn_t *kc = sp_worker_conn(w, n->ref);

		if (kc)
			sp_session_queue_kick(kc);
		free(n);
		break;
	}
	case SP_NODE_REPLACE: {
		sp_conn_t *oc = sp_worker_conn(w, n->ref);

		if (oc) {
			if (oc->flags & SP_CF_REGISTERED) {
				/* The registry names the new connection: only drop our own entry.
				 */
				sp_tokmap_del(&w->local, oc->token, (uintptr_t)oc);
				sp_metric_add(&w->metrics, SP_M_DEVICES, -1);
				oc->flags &= (uint8_t)~SP_CF_REGISTERED;
			}
			replace_conn(oc);
		}
		free(n);
		break;
	}
	}
}

void sp_session_tick(sp_conn_t *c)
{
	sp_worker_t *w = c->w;

	while (c->inflight && c->inflight->deadline <= w->now) {
		sp_node_t *n = c->inflight;

		c->inflight = n->next;
		if (!c->inflight)
			c->inflight_tail = NULL;
		c->n_inflight--;
		sp_metric_inc(&w->metrics, SP_M_LIMIT_HITS + SP_LIMIT_ACK_TIMEOUT);
		if (n->msg->stored)
			node_done(w, n, 0); /* still queued: it comes again */
		else
			go_offline(w, n); /* handled as for an offline device (7.2) */
	}
	if (c->qmore && c->qstate == SP_Q_DONE && w->store && sp_store_up(w->store)) {
		c->qmore = 0;
		queue_fetch(c); /* a fetch failed while Redis was away */
	}
	pump(c);
	drain_done_check(c);
}

void sp_session_worker_tick(sp_worker_t *w)
{
	sp_store_counters_t sc;
	uint64_t v[SP_M_STORE_LAST - SP_M_STORE + 1];

	_Static_assert(sizeof(sc) == sizeof(v), "one metric per store counter");
	if (!w->store)
		return;
	sp_store_counters(w->store, &sc);
	memcpy(v, &sc, sizeof(v));
	for (unsigned i = 0; i <= SP_M_STORE_LAST - SP_M_STORE; i++)
		atomic_store_explicit(&w->metrics.v[SP_M_STORE + i], v[i], memory_order_relaxed);
	atomic_store_explicit(&w->metrics.v[SP_M_STORE_UP], (uint64_t) !!sp_store_up(w->store),
	                      memory_order_relaxed);
}

void sp_session_teardown(sp_worker_t *w)
{
	while (w->msgs)
		msg_free(w, w->msgs);
	for (unsigned i = 0; i < SP_POOL_CLASSES; i++) {
		while (w->pool[i]) {
			void *b = w->pool[i];

			w->pool[i] = *(void **)b;
			free(b);
		}
	}
	w->pool_bytes = 0;
}
