/*
 * sp_mpsc: an intrusive multi-producer, single-consumer queue (D. Vyukov's algorithm).
 *
 * Any thread may push; only the owning worker pops. A push is one atomic exchange and one
 * store, with no lock and no allocation: the node lives inside the object being passed. The
 * queue keeps a sentinel node so that it is never empty internally.
 *
 * sp_mpsc_pop() may return NULL while a push is half done (the producer swapped the head but
 * has not linked its node yet); the consumer then tries again on its next wake-up, which that
 * producer's eventfd write guarantees.
 */
#ifndef SP_MPSC_H
#define SP_MPSC_H

#include <stdatomic.h>
#include <stddef.h>

typedef struct sp_mpsc_node {
	_Atomic(struct sp_mpsc_node *) next;
} sp_mpsc_node_t;

typedef struct sp_mpsc {
	_Atomic(sp_mpsc_node_t *) head; /* producers push here */
	sp_mpsc_node_t *tail;           /* the consumer pops here */
	sp_mpsc_node_t sentinel;
} sp_mpsc_t;

static inline void sp_mpsc_init(sp_mpsc_t *q)
{
	atomic_store_explicit(&q->sentinel.next, NULL, memory_order_relaxed);
	atomic_store_explicit(&q->head, &q->sentinel, memory_order_relaxed);
	q->tail = &q->sentinel;
}

/* Any thread. The caller wakes the consumer afterwards (see sp_worker's wake flag). */
static inline void sp_mpsc_push(sp_mpsc_t *q, sp_mpsc_node_t *n)
{
	sp_mpsc_node_t *prev;

	atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
	prev = atomic_exchange_explicit(&q->head, n, memory_order_acq_rel);
	atomic_store_explicit(&prev->next, n, memory_order_release);
}

static inline sp_mpsc_node_t *sp_mpsc_pop(sp_mpsc_t *q)
{
	sp_mpsc_node_t *tail = q->tail;
	sp_mpsc_node_t *next = atomic_load_explicit(&tail->next, memory_order_acquire);
	sp_mpsc_node_t *head;

	if (tail == &q->sentinel) {
		if (!next)
			return NULL;
		q->tail = next;
		tail = next;
		next = atomic_load_explicit(&next->next, memory_order_acquire);
	}
	if (next) {
		q->tail = next;
		return tail;
	}
	head = atomic_load_explicit(&q->head, memory_order_acquire);
	if (tail != head)
		return NULL; /* a producer is between its exchange and its link */
	sp_mpsc_push(q, &q->sentinel);
	next = atomic_load_explicit(&tail->next, memory_order_acquire);
	if (next) {
		q->tail = next;
		return tail;
	}
	return NULL;
}

#endif
