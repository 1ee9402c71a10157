/*
 * sp_router.c: where each recipient node goes (see sp_router.h), device registration and
 * replacement, and the dispatch of a worker's inbox.
 */
#include <errno.h>
#include <stdlib.h>

#include "sp_cluster.h"
#include "sp_delivery.h"
#include "sp_identity.h"
#include "sp_log.h"
#include "sp_router.h"

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

/* Node n (allocated alone, of kind `kind` about connection ref) to ref's worker. */
static void push_control(sp_worker_t *w, enum sp_node_kind kind, sp_connref_t ref)
{
	sp_node_t *n = calloc(1, sizeof(*n));

	if (!n)
		return; /* a kick or a replacement is best effort: the tick and GOAWAY cover it */
	n->kind = (uint8_t)kind;
	n->ref = ref;
	sp_worker_push(&w->srv->workers[SP_CONNREF_WORKER(ref)], n);
}

/* Something was queued for token: if its device is connected, it should read its queue.
 * Returns whether it is connected to this relay. */
static bool kick_token(sp_worker_t *w, const uint8_t *token)
{
	sp_connref_t ref = sp_registry_get(&w->srv->registry, token);

	if (!ref)
		return false;
	if (SP_CONNREF_WORKER(ref) == (unsigned)w->id) {
		sp_conn_t *c = sp_worker_conn(w, ref);

		if (c)
			sp_delivery_kick(c);
		return true;
	}
	push_control(w, SP_NODE_KICK, ref);
	return true;
}

static void on_enqueued(int st, uint64_t seq, void *arg)
{
	sp_node_t *n = arg;
	sp_worker_t *w = n->at;

	(void)seq;
	if (atomic_load(&w->srv->stopping))
		return;
	w->now = sp_now_ms();
	/* In a cluster, a device that connected to another node meanwhile is told there (its
	 * presence was written before its first queue read, in the same slot: CLUSTER.md). */
	if (st == SP_STORE_STORED && !kick_token(w, sp_node_token(n)) && w->cl)
		sp_cluster_queued(w, sp_node_token(n));
	sp_node_finish(w, n, status_of_store(st));
	sp_worker_after(w);
}

void sp_route_offline(sp_worker_t *w, sp_node_t *n)
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
	    sp_store_enqueue(w->store, sp_node_token(n), msg->msg_id, w->record, len,
	                     msg->expires_wall, msg->collapse, msg->collapse_len, on_enqueued,
	                     n) < 0)
		sp_node_finish(w, n, SP_ST_TRY_LATER);
}

void sp_route(sp_worker_t *w, sp_node_t *n)
{
	sp_server_t *srv = w->srv;
	const uint8_t *tok = sp_node_token(n);
	sp_conn_t *r = (sp_conn_t *)sp_tokmap_get(&w->local, tok);
	sp_connref_t ref;

	if (sp_msg_expired(w, n->msg)) {
		sp_node_finish(w, n, SP_ST_EXPIRED);
		return;
	}
	if (r && r->state == SP_CS_READY) {
		sp_metric_inc(&w->metrics, SP_M_DELIVERIES_LOCAL);
		sp_delivery_push(r, n);
		return;
	}
	ref = sp_registry_get(&srv->registry, tok);
	if (ref && SP_CONNREF_WORKER(ref) != (unsigned)w->id && n->hops < SP_ROUTE_MAX_HOPS) {
		n->hops++;
		n->kind = SP_NODE_DELIVER;
		sp_metric_inc(&w->metrics, SP_M_DELIVERIES_REMOTE);
		sp_worker_push(&srv->workers[SP_CONNREF_WORKER(ref)], n);
		return;
	}
	if (w->cl && !ref && !n->msg->stored && !n->msg->fwd) {
		sp_cluster_route(w, n); /* perhaps on another relay */
		return;
	}
	sp_route_offline(w, n);
}

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

/* c's entries now name another connection: c only leaves w's count of devices. */
static void unregistered(sp_conn_t *c)
{
	c->flags &= (uint8_t)~SP_CF_REGISTERED;
	sp_metric_add(&c->w->metrics, SP_M_DEVICES, -1);
}

int sp_router_register(sp_conn_t *c)
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
	if (w->cl)
		sp_cluster_ready(c); /* before its first queue read: same slot, so in order */
	if (!old)
		return 0;
	if (SP_CONNREF_WORKER(old) == (unsigned)w->id) {
		sp_conn_t *oc = sp_worker_conn(w, old);

		if (oc && oc != c) {
			unregistered(oc);
			replace_conn(oc);
		}
	} else {
		push_control(w, SP_NODE_REPLACE, old);
	}
	return 0;
}

void sp_router_unregister(sp_conn_t *c)
{
	sp_worker_t *w = c->w;

	if (!(c->flags & SP_CF_REGISTERED))
		return;
	sp_tokmap_del(&w->local, c->token, (uintptr_t)c);
	sp_registry_del(&w->srv->registry, c->token, sp_conn_ref(c));
	unregistered(c);
	if (w->cl)
		sp_cluster_gone(c);
}

void sp_router_replace_remote(sp_conn_t *c)
{
	sp_worker_t *w = c->w;

	if (c->flags & SP_CF_REGISTERED) {
		/* The presence names the new connection already: only this relay forgets c. */
		sp_tokmap_del(&w->local, c->token, (uintptr_t)c);
		sp_registry_del(&w->srv->registry, c->token, sp_conn_ref(c));
		unregistered(c);
	}
	replace_conn(c);
}

void sp_router_inbox(sp_worker_t *w, sp_node_t *n)
{
	sp_conn_t *c;

	switch (n->kind) {
	case SP_NODE_DELIVER:
		sp_route(w, n);
		return;
	case SP_NODE_RESULT:
		sp_msg_result(w, n);
		return;
	case SP_NODE_KICK:
		c = sp_worker_conn(w, n->ref);
		if (c)
			sp_delivery_kick(c);
		break;
	case SP_NODE_REPLACE:
		c = sp_worker_conn(w, n->ref);
		if (c) {
			if (c->flags & SP_CF_REGISTERED) {
				/* The registry names the new connection: drop only our own entry.
				 */
				sp_tokmap_del(&w->local, c->token, (uintptr_t)c);
				unregistered(c);
			}
			replace_conn(c);
		}
		break;
	}
	free(n);
}
