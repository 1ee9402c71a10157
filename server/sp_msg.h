/*
 * sp_msg.h: messages and their recipients' nodes; the SEND_RESULTs they end in.
 *
 * An sp_msg_t is one accepted SEND (or one message read from a device's queue): a single
 * block holding the header, one sp_node_t per recipient, the recipient tokens and the blob,
 * from the worker's pool. It belongs to the worker of its sender (`owner`), which alone frees
 * it. Each node travels on its own to its recipient's worker (read-only access to the message
 * there) and comes back to the owner with a status (sp_node_finish). The owner gathers the
 * statuses of one message into one SEND_RESULT per loop turn, and frees the message when its
 * last node is back: no reference counts, no atomics.
 */
#ifndef SP_MSG_H
#define SP_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "sp_frame.h"
#include "sp_mpsc.h"
#include "sp_worker.h"

/* A node's kind as it travels between workers. */
enum sp_node_kind { SP_NODE_DELIVER, SP_NODE_RESULT, SP_NODE_REPLACE, SP_NODE_KICK };

struct sp_node {
	sp_mpsc_node_t q; /* inbox link */
	uint8_t kind;
	uint8_t status;
	sp_worker_t *at; /* the worker that asked the store about this node */
	uint8_t hops;    /* times rerouted, to bound ping-pong between workers */
	uint16_t index;  /* the recipient's position in the SEND */
	sp_msg_t *msg;
	sp_node_t *next;   /* in a connection's pending or in-flight list */
	uint64_t deadline; /* ack timeout, monotonic ms */
	sp_connref_t ref;  /* SP_NODE_REPLACE, SP_NODE_KICK: the connection it is for */
};

/* The node whose inbox link is q. */
static inline sp_node_t *sp_node_of(sp_mpsc_node_t *q)
{
	return (sp_node_t *)(void *)((char *)q - offsetof(sp_node_t, q));
}

struct sp_msg {
	sp_worker_t *owner;
	sp_connref_t sender;
	sp_msg_t *prev, *next; /* owner's list of live messages */
	uint32_t n;            /* recipients */
	uint32_t unanswered;   /* nodes not yet back with a status (owner only) */
	uint64_t expires;      /* monotonic ms; 0 if ttl is 0 (deliver now or never) */
	uint64_t expires_wall; /* the same in unix ms, for the store */
	uint32_t ttl;
	uint32_t blob_len;
	uint8_t msg_id[SP_MSG_ID_LEN];
	uint8_t priority;
	uint8_t has_priority;
	uint8_t pool_class; /* size class of the block, or 0xFF if it was malloc'd alone */
	uint8_t stored;     /* read from the device's queue: its ACK removes it from Redis, and
	                     * there is no sender to answer */
	uint8_t collapse_len;
	uint8_t fwd;        /* forwarded by another relay: its status goes back there */
	uint8_t fwd_worker; /* ... to that relay's worker */
	uint8_t collapse[SP_COLLAPSE_MAX];
	uint64_t fwd_inc; /* ... of that incarnation */
	uint64_t fwd_id;  /* ... under this id (sp_cluster.c) */
	/* A message made by another door than SEND (the Web Push provider, sp_provider.h): its
	 * statuses go to on_result (which frees it) instead of a SEND_RESULT; origin is its. */
	void (*on_result)(sp_worker_t *w, sp_node_t *n);
	void *origin;
	sp_node_t *nodes;
	uint8_t *recipients;
	uint8_t *blob;
};

/* Makes a message of n recipients and a blob of blob_len bytes, owned by w: header and nodes
 * zeroed except owner, n, unanswered (= n) and each node's msg and index; the recipients,
 * blob and the other header fields are the caller's to fill. NULL when out of memory. */
sp_msg_t *sp_msg_new(sp_worker_t *w, uint32_t n, uint32_t blob_len);
/* Gives msg's block back to its owner w's pool (or to malloc past SP_POOL_MAX_BYTES). */
void sp_msg_free(sp_worker_t *w, sp_msg_t *msg);
/* Frees every message w still owns and empties its pool (teardown, all threads stopped). */
void sp_msg_teardown(sp_worker_t *w);

/* Node n's recipient is answered with status: back to its message's owner (at once on the
 * owner's worker, else through the owner's inbox). */
void sp_node_finish(sp_worker_t *w, sp_node_t *n, uint8_t status);
/* n is done on its recipient's side. A message read from the device's queue has no sender to
 * answer: it is freed here (and stays in Redis unless it was acknowledged). Any other goes
 * back to its owner with status (sp_node_finish). */
void sp_node_done(sp_worker_t *w, sp_node_t *n, uint8_t status);
/* On the owner's worker: a node came back with its status (SP_NODE_RESULT). Gathers it into
 * the pending SEND_RESULT and frees the message after its last node. */
void sp_msg_result(sp_worker_t *w, sp_node_t *n);
/* Sends the SEND_RESULT gathered so far (end of the loop turn, or before another message's). */
void sp_msg_flush_results(sp_worker_t *w);

/* The recipient token node n is for. */
static inline const uint8_t *sp_node_token(const sp_node_t *n)
{
	return n->msg->recipients + (size_t)n->index * SP_TOKEN_LEN;
}

/* Whether msg's ttl has passed on w's clock (ttl 0 never expires: deliver now or refuse). */
static inline bool sp_msg_expired(const sp_worker_t *w, const sp_msg_t *msg)
{
	return msg->ttl && w->now >= msg->expires;
}

#endif
