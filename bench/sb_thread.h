/*
 * sb_thread: the bench threads of one process. Each owns an event base (EVENT_BASE_FLAG_NOLOCK,
 * plus EVENT_BASE_FLAG_PRECISE_TIMER in the open loop), its connections (sb_conn) and its slot
 * of the shared region; it sees the phase from a 1 ms tick and from its callbacks, and leaves
 * its loop at PH_QUIT. Thread k of N gets connections k, k + N, ... of the senders and of the
 * receivers (global numbers over every process).
 */
#ifndef SB_THREAD_H
#define SB_THREAD_H

#include "sb.h"

#include <pthread.h>

struct event;
struct event_base;
struct sb_conn;

typedef struct sb_thread {
	const sb_run_t *r;
	unsigned no; /* global thread number (process * threads + thread) */
	pthread_t tid;
	struct event_base *base;
	struct event *tick, *sched;
	sb_slot_t *s;
	struct sb_conn *conns;
	unsigned n_conns;
	unsigned n_senders; /* conns[0..n_senders) send, the rest receive (or idle) */
	unsigned *todo;     /* connections to start, in order */
	unsigned n_todo, todo_next;
	unsigned starting; /* connections started and not yet READY or torn down */
	unsigned n_retry;
	uint64_t last_retry_scan;
	int last_phase;
	uint64_t sched_t0; /* open loop: when message 0 of this thread is due */
	uint64_t sched_n;  /* open loop: the next message of the schedule */
	double sched_rate; /* open loop: messages/s of this thread */
	uint8_t blob[];    /* --blob bytes, reused for every SEND */
} sb_thread_t;

/* Starts waiting connections while fewer than --inflight are on their way up. Own thread. */
void sb_thread_pump(sb_thread_t *t);

/*
 * Sets up and starts this process's bench threads, global numbers first .. first + threads - 1
 * (r->threads). Returns 0, or -1 (said why; the threads already started keep running until
 * sb_workers_stop).
 */
int sb_workers_start(sb_run_t *r, unsigned first);

/* Waits for this process's bench threads to leave their loops (PH_QUIT) and frees them. */
void sb_workers_join(sb_run_t *r);

/*
 * Orchestrator: sets PH_QUIT, joins this process's threads and waits for the bench processes
 * (r->children); one that ended abnormally sets sb_child_died.
 */
void sb_workers_stop(sb_run_t *r);

#endif
