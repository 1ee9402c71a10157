/*
 * Unit tests for server/sp_mpsc: FIFO order and the empty queue on one thread, then four
 * producers against one consumer, checking that every producer's nodes arrive once each and
 * in the order it pushed them.
 */
#include "sp_mpsc.h"

#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stddef.h>

#include "sp_test.h"

/* The queue is intrusive: the link is deliberately not the first member. */
struct item {
	uint32_t producer;
	uint32_t seq;
	sp_mpsc_node_t link;
};

static struct item *item_of(sp_mpsc_node_t *n)
{
	return n ? (struct item *)(void *)((char *)n - offsetof(struct item, link)) : NULL;
}

static void test_empty(void)
{
	sp_mpsc_t q;

	sp_mpsc_init(&q);
	SP_CHECK(sp_mpsc_pop(&q) == NULL);
	SP_CHECK(sp_mpsc_pop(&q) == NULL);
}

/* One node: the pop has to re-insert the sentinel behind it to hand it out. */
static void test_single_node(void)
{
	sp_mpsc_t q;
	struct item a = {.seq = 1}, b = {.seq = 2};

	sp_mpsc_init(&q);
	for (int round = 0; round < 3; round++) {
		sp_mpsc_push(&q, &a.link);
		SP_CHECK(item_of(sp_mpsc_pop(&q)) == &a);
		SP_CHECK(sp_mpsc_pop(&q) == NULL);
		sp_mpsc_push(&q, &b.link);
		sp_mpsc_push(&q, &a.link);
		SP_CHECK(item_of(sp_mpsc_pop(&q)) == &b);
		SP_CHECK(item_of(sp_mpsc_pop(&q)) == &a);
		SP_CHECK(sp_mpsc_pop(&q) == NULL);
	}
}

static void test_fifo(void)
{
	enum { N = 1000 };
	static struct item it[N];
	sp_mpsc_t q;
	uint32_t next_pop = 0, next_push = 0;
	size_t bad = 0;

	sp_mpsc_init(&q);
	for (uint32_t i = 0; i < N; i++)
		it[i].seq = i;
	/* All in, all out. */
	for (uint32_t i = 0; i < N; i++)
		sp_mpsc_push(&q, &it[i].link);
	for (uint32_t i = 0; i < N; i++) {
		struct item *x = item_of(sp_mpsc_pop(&q));

		if (!x || x->seq != i)
			bad++;
	}
	SP_CHECK_EQ_INT(bad, 0);
	SP_CHECK(sp_mpsc_pop(&q) == NULL);

	/* Interleaved at random, with the queue running empty now and then (nodes reused). */
	for (uint32_t step = 0, r = 12345; step < 100000 && !bad; step++) {
		r = r * 1103515245u + 12345u;
		for (unsigned k = (r >> 16) % 4; k > 0 && next_push - next_pop < N; k--) {
			it[next_push % N].seq = next_push;
			sp_mpsc_push(&q, &it[next_push % N].link);
			next_push++;
		}
		for (unsigned k = (r >> 20) % 4; k > 0; k--) {
			struct item *x = item_of(sp_mpsc_pop(&q));

			if (next_pop == next_push) {
				if (x)
					bad++; /* the queue should be empty */
				break;
			}
			if (!x || x->seq != next_pop) {
				SP_FAIL("step %u: pop %u gave %s %u", step, next_pop,
				        x ? "seq" : "NULL", x ? x->seq : 0);
				bad++;
				break;
			}
			next_pop++;
		}
	}
	SP_CHECK(next_pop > 10 * N);
	SP_CHECK_EQ_INT(bad, 0);
}

enum { PRODUCERS = 4, PER_PRODUCER = 200000, ROUNDS = 5 };

struct producer {
	pthread_t thread;
	uint32_t id;
	sp_mpsc_t *q;
	struct item *items;
	pthread_barrier_t *start;
	atomic_int *finished;
};

static void *produce(void *arg)
{
	struct producer *p = arg;

	pthread_barrier_wait(p->start);
	for (uint32_t s = 0; s < PER_PRODUCER; s++) {
		p->items[s].producer = p->id;
		p->items[s].seq = s;
		sp_mpsc_push(p->q, &p->items[s].link);
		if (s % 4096 == 0)
			sched_yield(); /* let the consumer catch up and find the queue empty */
	}
	atomic_fetch_add_explicit(p->finished, 1, memory_order_release);
	return NULL;
}

/*
 * One round: four producers, the consumer here. A pop that loses a node racing with a push
 * needs the consumer to catch a producer between its exchange and its link, a window of a
 * few instructions, so the round is repeated to make that likely.
 */
static bool threads_round(int round)
{
	struct producer prod[PRODUCERS];
	pthread_barrier_t start;
	atomic_int finished = 0;
	sp_mpsc_t q;
	uint32_t next[PRODUCERS] = {0};
	size_t got = 0, bad = 0, nulls = 0;
	struct item *items = calloc((size_t)PRODUCERS * PER_PRODUCER, sizeof(*items));

	if (!items)
		abort();
	sp_mpsc_init(&q);
	pthread_barrier_init(&start, NULL, PRODUCERS + 1);
	for (uint32_t i = 0; i < PRODUCERS; i++) {
		prod[i] = (struct producer){.id = i,
		                            .q = &q,
		                            .items = items + (size_t)i * PER_PRODUCER,
		                            .start = &start,
		                            .finished = &finished};
		if (pthread_create(&prod[i].thread, NULL, produce, &prod[i]) != 0)
			abort();
	}
	pthread_barrier_wait(&start);

	while (got < (size_t)PRODUCERS * PER_PRODUCER) {
		/* Read "all finished" before popping: a NULL after that means really empty. */
		bool all_done = atomic_load_explicit(&finished, memory_order_acquire) == PRODUCERS;
		struct item *x = item_of(sp_mpsc_pop(&q));

		if (!x) {
			nulls++;
			if (all_done)
				break; /* nodes were lost */
			continue;
		}
		if (x->producer >= PRODUCERS) {
			SP_FAIL("node with producer %u", x->producer);
			bad++;
			break;
		}
		if (x->seq != next[x->producer]) {
			if (bad++ < 10)
				SP_FAIL("producer %u: got seq %u, expected %u", x->producer, x->seq,
				        next[x->producer]);
			next[x->producer] = x->seq;
		}
		next[x->producer]++;
		got++;
	}
	for (uint32_t i = 0; i < PRODUCERS; i++)
		pthread_join(prod[i].thread, NULL);
	SP_CHECK_EQ_INT(bad, 0);
	SP_CHECK_EQ_INT(got, (size_t)PRODUCERS * PER_PRODUCER);
	for (uint32_t i = 0; i < PRODUCERS; i++)
		SP_CHECK_EQ_INT(next[i], PER_PRODUCER);
	/* Nothing extra (duplicates would have shown as order errors above, or here). */
	SP_CHECK(sp_mpsc_pop(&q) == NULL);
	printf("# round %d: %zu nodes, %zu empty pops on the way\n", round, got, nulls);
	pthread_barrier_destroy(&start);
	free(items);
	return !bad && got == (size_t)PRODUCERS * PER_PRODUCER;
}

static void test_threads(void)
{
	for (int round = 0; round < ROUNDS; round++)
		if (!threads_round(round))
			break;
}

int main(void)
{
	SP_RUN(test_empty);
	SP_RUN(test_single_node);
	SP_RUN(test_fifo);
	SP_RUN(test_threads);
	return sp_test_done();
}
