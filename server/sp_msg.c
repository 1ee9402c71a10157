/*
 * sp_msg.c: message blocks from the worker's pool, and the statuses that come back from the
 * recipients, gathered into one SEND_RESULT per message and loop turn.
 */
#include <stdlib.h>
#include <string.h>

#include "sp_cluster.h"
#include "sp_conn.h"
#include "sp_msg.h"
#include "sp_session.h"

/* Message blocks come from the worker's pool: only the owner allocates and frees them. */
sp_msg_t *sp_msg_new(sp_worker_t *w, uint32_t n, uint32_t blob_len)
{
	size_t size =
	        sizeof(sp_msg_t) + n * sizeof(sp_node_t) + (size_t)n * SP_TOKEN_LEN + blob_len;
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
		if (!msg)
			return NULL;
	}
	memset(msg, 0, sizeof(*msg) + n * sizeof(sp_node_t));
	msg->pool_class = cls < SP_POOL_CLASSES ? (uint8_t)cls : 0xFF;
	msg->owner = w;
	msg->n = msg->unanswered = n;
	msg->nodes = (sp_node_t *)(msg + 1);
	msg->recipients = (uint8_t *)(msg->nodes + n);
	msg->blob = msg->recipients + (size_t)n * SP_TOKEN_LEN;
	msg->blob_len = blob_len;
	for (uint32_t i = 0; i < n; i++) {
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

void sp_msg_free(sp_worker_t *w, sp_msg_t *msg)
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

void sp_msg_teardown(sp_worker_t *w)
{
	while (w->msgs)
		sp_msg_free(w, w->msgs);
	for (unsigned i = 0; i < SP_POOL_CLASSES; i++) {
		while (w->pool[i]) {
			void *b = w->pool[i];

			w->pool[i] = *(void **)b;
			free(b);
		}
	}
	w->pool_bytes = 0;
}

void sp_msg_flush_results(sp_worker_t *w)
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

void sp_msg_result(sp_worker_t *w, sp_node_t *n)
{
	sp_msg_t *msg = n->msg;
	sp_conn_t *s;

	if (msg->fwd) {
		/* forwarded by another relay: the status goes back there, no SEND_RESULT here */
		sp_cluster_result(w, msg, n->status);
		if (--msg->unanswered == 0)
			sp_msg_free(w, msg);
		return;
	}
	sp_metric_inc(&w->metrics, SP_M_SEND_RESULTS + sp_metric_status_index(n->status));
	if (msg->on_result) {
		msg->on_result(w, n);
		return;
	}
	s = sp_worker_conn(w, msg->sender);
	if (s && s->state < SP_CS_CLOSING) {
		if (w->batch_msg != msg) {
			sp_msg_flush_results(w);
			w->batch_msg = msg;
		}
		sp_result_put(w->batch + (size_t)w->batch_n * SP_RESULT_LEN, n->index, n->status);
		w->batch_n++;
	}
	if (--msg->unanswered > 0)
		return;
	if (w->batch_msg == msg)
		sp_msg_flush_results(w);
	if (s) {
		s->sends_outstanding--;
		sp_session_drain_check(s);
	}
	sp_msg_free(w, msg);
}

void sp_node_finish(sp_worker_t *w, sp_node_t *n, uint8_t status)
{
	n->status = status;
	n->next = NULL;
	if (n->msg->owner == w) {
		sp_msg_result(w, n);
	} else {
		n->kind = SP_NODE_RESULT;
		sp_worker_push(n->msg->owner, n);
	}
}

void sp_node_done(sp_worker_t *w, sp_node_t *n, uint8_t status)
{
	if (n->msg->stored)
		sp_msg_free(w, n->msg); /* stored messages are made and dropped on one worker */
	else
		sp_node_finish(w, n, status);
}
