/*
 * sb_thread.c: the bench threads. Each runs one event base with its connections (sb_conn):
 * a 1 ms tick looks at the global phase, starts waiting connections (at most --inflight on
 * their way up), reconnects broken ones after SB_RETRY_MS and refills the closed-loop
 * senders; with --rate a precise timer sends the thread's schedule.
 *
 * Open loop (--rate): each thread has a send schedule, message n due at t0 + n / rate_thread
 * (threads offset by a fraction of the interval, so the total is evenly spread), sent round
 * robin over its senders; the blob carries the *intended* send time, so a late send counts
 * against latency (no coordinated omission); the bench's own share, the send lag (actual
 * write minus intended time), goes into a second histogram. A due message whose sender has
 * its window full is not sent and is counted as held back.
 */
#include "sb_thread.h"

#include "sb_conn.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <event2/event.h>

void sb_thread_pump(sb_thread_t *t)
{
	const sb_opts_t *o = &t->r->opt;
	/* Handshake slots never become READY: each cycles on its own once started. */
	unsigned limit = o->scenario == SB_HANDSHAKE ? UINT_MAX : o->inflight;

	while (t->todo_next < t->n_todo && t->starting < limit)
		sb_conn_start(&t->conns[t->todo[t->todo_next++]]);
}

static void thread_todo(sb_thread_t *t, unsigned from, unsigned to)
{
	for (unsigned i = from; i < to; i++)
		t->todo[t->n_todo++] = i;
}

/* Open loop: sends every message of the thread's schedule that is due, then re-arms. */
static void thread_sched(evutil_socket_t fd, short what, void *arg)
{
	sb_thread_t *t = arg;
	const sb_run_t *r = t->r;
	const sb_opts_t *o = &r->opt;
	int ph = sb_phase_get(r);
	uint64_t now = sb_now_ns(), due, wait;
	struct timeval tv;

	(void)fd;
	(void)what;
	if ((ph != PH_WARMUP && ph != PH_MEASURE) || t->n_senders == 0)
		return;
	for (;;) {
		sb_conn_t *c;

		due = t->sched_t0 + (uint64_t)((double)t->sched_n * 1e9 / t->sched_rate);
		if (due > now)
			break;
		c = &t->conns[t->sched_n % t->n_senders];
		t->sched_n++;
		if (c->state != CS_READY || !sb_conn_window_open(c)) {
			sb_cnt_add(&t->s->c.stalled, 1);
			continue;
		}
		if (sb_conn_send_one(c, due) == 0)
			sb_conn_flush(c);
		now = sb_now_ns();
		if (ph == PH_MEASURE)
			sb_hist_add(&t->s->lag, now - due);
	}
	wait = due - now;
	if (wait < (uint64_t)o->tick_us * 1000)
		wait = (uint64_t)o->tick_us * 1000;
	tv.tv_sec = (time_t)(wait / 1000000000u);
	tv.tv_usec = (suseconds_t)(wait % 1000000000u / 1000);
	event_add(t->sched, &tv);
}

static void thread_phase_changed(sb_thread_t *t, int ph)
{
	const sb_run_t *r = t->r;
	const sb_opts_t *o = &r->opt;
	/* With --warmup 0 the thread may see PH_MEASURE without PH_WARMUP. */
	if ((ph == PH_WARMUP || ph == PH_MEASURE) && sb_open_loop(o) && t->n_senders > 0 &&
	    t->sched_t0 == 0) {
		/* Thread k of T starts k/T of an interval late: the total is evenly spread. */
		t->sched_t0 = sb_now_ns() + (uint64_t)(1e9 / t->sched_rate * t->no / r->nslots);
		t->sched_n = 0;
		thread_sched(-1, 0, t);
	}
	if (ph == PH_DRAIN) {
		for (unsigned i = 0; i < t->n_senders; i++)
			sb_conn_close(&t->conns[i]);
		thread_todo(t, t->n_senders, t->n_conns);
		sb_thread_pump(t);
	}
	if (ph == PH_QUIT) {
		for (unsigned i = 0; i < t->n_conns; i++)
			sb_conn_close(&t->conns[i]);
		event_base_loopbreak(t->base);
	}
}

static void thread_tick(evutil_socket_t fd, short what, void *arg)
{
	sb_thread_t *t = arg;
	const sb_run_t *r = t->r;
	const sb_opts_t *o = &r->opt;
	int ph = sb_phase_get(r);
	uint64_t now;

	(void)fd;
	(void)what;
	if (ph != t->last_phase) {
		t->last_phase = ph;
		thread_phase_changed(t, ph);
		if (ph == PH_QUIT)
			return;
		/* this thread's callbacks all check the phase before they send, so from here on
		 * it sends nothing more (sb_scen's all_answered waits for every thread's flag) */
		if (ph == PH_STOP_SENDING)
			sb_cnt_add(&t->s->c.stopped, 1);
	}
	sb_thread_pump(t);
	now = sb_now_ns();
	if (t->n_retry > 0 && now - t->last_retry_scan >= SB_RETRY_MS * 1000000ull) {
		t->last_retry_scan = now;
		for (unsigned i = 0; i < t->n_conns && t->n_retry > 0; i++) {
			sb_conn_t *c = &t->conns[i];

			if (!c->retry)
				continue;
			c->retry = false;
			t->n_retry--;
			if (ph == PH_STOP_SENDING || ph == PH_QUIT)
				continue;
			if (o->scenario != SB_HANDSHAKE)
				sb_cnt_add(&t->s->c.reconnects, 1);
			sb_conn_start(c);
		}
	}
	if (sb_open_loop(o))
		return;
	for (unsigned i = 0; i < t->n_senders; i++) {
		sb_conn_t *c = &t->conns[i];

		if (c->state != CS_READY)
			continue;
		if (sb_conn_refill(c) == 0 && sb_conn_has_output(c))
			sb_conn_flush(c);
	}
}

static void *thread_main(void *arg)
{
	sb_thread_t *t = arg;
	const sb_opts_t *o = &t->r->opt;
	struct timeval tv = {0, 1000};

	t->tick = event_new(t->base, -1, EV_PERSIST, thread_tick, t);
	t->sched = evtimer_new(t->base, thread_sched, t);
	event_add(t->tick, &tv);
	t->last_phase = PH_CONNECT;
	/* Receivers first, so that no message finds its device offline; queue: senders only. */
	if (o->scenario == SB_QUEUE) {
		thread_todo(t, 0, t->n_senders);
	} else {
		thread_todo(t, t->n_senders, t->n_conns);
		thread_todo(t, 0, t->n_senders);
	}
	sb_thread_pump(t);
	event_base_dispatch(t->base);
	event_free(t->tick);
	event_free(t->sched);
	for (unsigned i = 0; i < t->n_conns; i++)
		sb_conn_close(&t->conns[i]);
	return NULL;
}

static void thread_free(sb_thread_t *t)
{
	if (t == NULL)
		return;
	for (unsigned i = 0; t->conns != NULL && i < t->n_conns; i++)
		sb_conn_free(&t->conns[i]);
	free(t->conns);
	free(t->todo);
	if (t->base != NULL)
		event_base_free(t->base);
	free(t);
}

static sb_thread_t *thread_new(const sb_run_t *r, unsigned no)
{
	const sb_opts_t *o = &r->opt;
	struct event_config *cfg = event_config_new();
	sb_thread_t *t = calloc(1, sizeof(*t) + o->blob + 8);

	if (t == NULL || cfg == NULL) {
		free(t);
		event_config_free(cfg);
		return NULL;
	}
	t->r = r;
	t->no = no;
	t->s = &r->sh->slots[no];
	event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
	if (sb_open_loop(o))
		event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
	t->base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	if (t->base == NULL) {
		thread_free(t);
		return NULL;
	}
	return t;
}

/* Sender i's recipients: receivers (i * N + j) % R for j < N (distinct, since N <= R). */
static uint8_t *peer_tokens_make(const sb_run_t *r, unsigned i)
{
	const sb_opts_t *o = &r->opt;
	uint8_t *p = malloc((size_t)o->recipients * 32);

	if (p == NULL)
		return NULL;
	for (unsigned j = 0; j < o->recipients; j++)
		memcpy(p + (size_t)j * 32,
		       r->recv_ids[((size_t)i * o->recipients + j) % r->n_recv].token, 32);
	return p;
}

/* The identity of sending connection i, of receiving (or idle) connection i. */
static const sb_ident_t *ident_send(const sb_run_t *r, unsigned i)
{
	return &r->send_ids[i % r->n_send_ids];
}

static const sb_ident_t *ident_recv(const sb_run_t *r, unsigned i)
{
	return &r->recv_ids[i % r->n_recv_ids];
}

/* Gives thread t (global number no of r->nslots) connections no, no + r->nslots, ... */
static int thread_assign(sb_thread_t *t)
{
	const sb_run_t *r = t->r;
	const sb_opts_t *o = &r->opt;
	unsigned ns = 0, nr = 0, no = t->no;

	for (unsigned i = no; i < r->n_send; i += r->nslots)
		ns++;
	for (unsigned i = no; i < r->n_recv; i += r->nslots)
		nr++;
	if (ns + nr > UINT16_MAX)
		return -1;
	t->conns = calloc(ns + nr + 1, sizeof(*t->conns));
	t->todo = calloc(2 * (ns + nr) + 1, sizeof(*t->todo));
	if (t->conns == NULL || t->todo == NULL)
		return -1;
	t->n_senders = ns;
	t->n_conns = ns + nr;
	ns = 0;
	for (unsigned i = no; i < r->n_send; i += r->nslots, ns++) {
		sb_conn_t *c = &t->conns[ns];

		c->sender = c->send_only = true;
		c->id = ident_send(r, i);
		c->window = o->window;
		c->n_peers = 1;
		if (o->scenario == SB_QUEUE) {
			c->q_first = i;
			c->quota =
			        o->messages / o->senders + (i < o->messages % o->senders ? 1 : 0);
		} else {
			c->n_peers = (uint16_t)o->recipients;
			c->peer_tokens = peer_tokens_make(r, i);
			if (c->peer_tokens == NULL)
				return -1;
			if (o->anonymous) {
				c->peer_keys = malloc((size_t)c->n_peers * 32);
				if (c->peer_keys == NULL)
					return -1;
				for (unsigned j = 0; j < c->n_peers; j++)
					sb_access_key(c->peer_tokens + (size_t)j * 32,
					              c->peer_keys + (size_t)j * 32);
			}
		}
	}
	if (sb_open_loop(o) && ns > 0)
		t->sched_rate = o->rate * ns / r->n_send;
	nr = 0;
	for (unsigned i = no; i < r->n_recv; i += r->nslots, nr++) {
		sb_conn_t *c = &t->conns[ns + nr];

		c->id = ident_recv(r, i);
		c->send_only = o->scenario == SB_HANDSHAKE ||
		               (o->scenario == SB_IDLE && !o->register_idle);
	}
	for (unsigned i = 0; i < t->n_conns; i++) {
		t->conns[i].t = t;
		t->conns[i].idx = (uint16_t)i;
		sb_conn_init(&t->conns[i]);
	}
	return 0;
}

int sb_workers_start(sb_run_t *r, unsigned first)
{
	const sb_opts_t *o = &r->opt;

	r->threads = calloc(o->threads, sizeof(*r->threads));
	if (r->threads == NULL)
		return -1;
	for (unsigned k = 0; k < o->threads; k++) {
		r->threads[k] = thread_new(r, first + k);
		if (r->threads[k] == NULL || thread_assign(r->threads[k]) < 0) {
			fprintf(stderr, "sealpush-bench: cannot set up bench thread %u\n",
			        first + k);
			return -1;
		}
	}
	for (unsigned k = 0; k < o->threads; k++)
		if (pthread_create(&r->threads[k]->tid, NULL, thread_main, r->threads[k]) != 0)
			return -1;
	return 0;
}

void sb_workers_join(sb_run_t *r)
{
	for (unsigned k = 0; r->threads != NULL && k < r->opt.threads; k++) {
		pthread_join(r->threads[k]->tid, NULL);
		thread_free(r->threads[k]);
	}
	free(r->threads);
	r->threads = NULL;
}

void sb_workers_stop(sb_run_t *r)
{
	sb_phase_set(r, PH_QUIT);
	sb_workers_join(r);
	for (unsigned p = 0; r->children != NULL && p < r->opt.processes; p++) {
		int st;

		if (r->children[p] <= 0)
			continue;
		while (waitpid(r->children[p], &st, 0) < 0 && errno == EINTR)
			;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			fprintf(stderr, "sealpush-bench: bench process %u ended abnormally (%d)\n",
			        p, st);
			sb_child_died = 1;
		}
		r->children[p] = 0;
	}
}
