/*
 * sp_delivery.c: one device's deliveries: the in-flight window, the pending list, the ack
 * timeout, and the drain of its offline queue (see sp_delivery.h).
 */
#include <stdlib.h>
#include <string.h>

#include "sp_delivery.h"
#include "sp_router.h"
#include "sp_session.h"
#include "sp_time.h"

static void list_append(sp_node_t **head, sp_node_t **tail, sp_node_t *n)
{
	n->next = NULL;
	if (*tail)
		(*tail)->next = n;
	else
		*head = n;
	*tail = n;
}

/* ---- the offline queue ------------------------------------------------------------------- */

static void pump(sp_conn_t *r);

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
	sp_msg_t *msg = sp_msg_new(w, 1, (uint32_t)rec->blob_len);
	uint64_t now_wall = sp_time_wall_ms();

	if (!msg)
		return NULL;
	msg->stored = 1;
	msg->ttl = 1;
	msg->expires_wall = rec->expires_ms;
	msg->expires = w->now + (rec->expires_ms > now_wall ? rec->expires_ms - now_wall : 0);
	memcpy(msg->msg_id, it->id, SP_MSG_ID_LEN);
	msg->has_priority = rec->priority != 0;
	msg->priority = rec->priority;
	msg->collapse_len = (uint8_t)rec->collapse_len;
	if (rec->collapse_len)
		memcpy(msg->collapse, rec->collapse, rec->collapse_len);
	memcpy(msg->recipients, c->token, SP_TOKEN_LEN);
	if (rec->blob_len)
		memcpy(msg->blob, rec->blob, rec->blob_len);
	return msg->nodes;
}

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

static void queue_fetch(sp_conn_t *c);

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

		if (!items[i].record) {
			c->qseq = items[i].seq;
			continue; /* expired or gone meanwhile; the store removes it */
		}
		if (sp_store_record_parse(items[i].record, items[i].record_len, &rec) < 0) {
			/* Not ours to deliver: remove it so it cannot block the queue. */
			sp_store_ack(w->store, c->token, (const uint8_t(*)[16])items[i].id, 1, NULL,
			             NULL);
			c->qseq = items[i].seq;
			continue;
		}
		node = stored_new(c, &items[i], &rec);
		if (!node) {
			/* Out of memory: the cursor stays before it, and the tick reads on from
			 * there (live traffic goes meanwhile). */
			queue_drained(c);
			c->qmore = 1;
			pump(c);
			sp_worker_after(w);
			return;
		}
		c->qseq = items[i].seq;
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
		c->qmore = 1; /* the tick tries again */
	} else {
		fx->w = w;
		fx->ref = sp_conn_ref(c);
	}
}

void sp_delivery_start(sp_conn_t *c, const uint8_t *resume_id)
{
	sp_worker_t *w = c->w;

	if (!w->store || (c->flags & SP_CF_SEND_ONLY))
		return;
	/* The message it processed last time but could not ACK (7.4): drop it first, on the same
	 * Redis connection, so the fetch after it does not return it. */
	if (resume_id)
		sp_store_ack(w->store, c->token, (const uint8_t(*)[16])resume_id, 1, NULL, NULL);
	sp_store_depth(w->store, c->token, on_depth, w);
	queue_fetch(c); /* its queue first (PROTOCOL.md 7.3), then live messages */
}

void sp_delivery_kick(sp_conn_t *c)
{
	if (!c->w->store || (c->flags & SP_CF_SEND_ONLY) || c->state != SP_CS_READY)
		return;
	if (c->qstate == SP_Q_DONE)
		queue_fetch(c);
	else if (c->qstate != SP_Q_NONE)
		c->qmore = 1;
}

/* ---- the window -------------------------------------------------------------------------- */

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

	if (sp_msg_expired(w, msg)) {
		sp_node_done(w, n, SP_ST_EXPIRED);
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

void sp_delivery_push(sp_conn_t *r, sp_node_t *n)
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

void sp_delivery_ack(sp_conn_t *c, const uint8_t *ids, uint32_t n_ids)
{
	sp_worker_t *w = c->w;
	uint8_t(*acked)[16] = w->acks; /* not w->record: finishing a node may build records */
	size_t n_acked = 0, max_acked = SP_STORE_MAX_ACK;

	for (uint32_t i = 0; i < n_ids; i++) {
		const uint8_t *id = ids + (size_t)i * SP_MSG_ID_LEN;
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
		sp_node_done(w, n, SP_ST_DELIVERED);
		if (n_acked == max_acked) {
			sp_store_ack(w->store, c->token, (const uint8_t(*)[16])acked, n_acked, NULL,
			             NULL);
			n_acked = 0;
		}
	}
	if (n_acked)
		sp_store_ack(w->store, c->token, (const uint8_t(*)[16])acked, n_acked, NULL, NULL);
	pump(c);
}

void sp_delivery_tick(sp_conn_t *c)
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
			sp_node_done(w, n, 0); /* still queued: it comes again */
		else
			sp_route_offline(w, n); /* handled as for an offline device (7.2) */
	}
	if (c->qmore && c->qstate == SP_Q_DONE && w->store && sp_store_up(w->store)) {
		c->qmore = 0;
		queue_fetch(c); /* a fetch failed while Redis was away */
	}
	pump(c);
}

void sp_delivery_detach(sp_conn_t *c)
{
	sp_worker_t *w = c->w;
	sp_node_t *n, *next;

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
			sp_node_done(w, n, 0); /* still in Redis: it comes again next time */
		else
			sp_route(w, n); /* to the device's new connection, or to its queue */
	}
}
