/*
 * sp_worker.c: worker threads. Each has its own event base (no locks inside libevent), its
 * own listening socket on the shared address (SO_REUSEPORT: the kernel spreads new
 * connections), its connections, and an inbox for nodes from other workers.
 *
 * Waking a worker: a producer pushes onto the MPSC inbox and then writes the worker's eventfd
 * only if `wake` was clear (atomic exchange), so a burst of handoffs costs one write. The
 * worker clears `wake` before it drains the inbox, so a push that races with the drain either
 * is seen by it or writes the eventfd again.
 *
 * Admission: connections are accepted SP_ACCEPT_PER_TURN at a time (the listener pauses and
 * on_after resumes it), at most max_handshakes handshakes run at once (sp_conn.c defers the
 * rest), and connected devices' events have the higher of the base's two priorities (the
 * listener, handshakes, the store and the tick the lower, with libevent told to look for new
 * events after SP_HANDSHAKE_STEPS of those), so a storm of reconnecting devices is taken in
 * small steps between the events of connected ones. (With the listener above the handshakes
 * they starved: a storm keeps the listener ready for seconds.) The kernel spreads new
 * connections over the workers (SO_REUSEPORT), and each worker keeps accepting while it
 * defers, so no worker's accept queue overflows while another idles.
 *
 * The tick (every TICK_MS) does every timeout of every connection: handshake, HELLO, idle,
 * ack, closing. One timer per worker instead of several per connection keeps an idle
 * connection small; a walk over 10,000 connections takes well under a millisecond.
 *
 * Shutdown: main sets SP_WF_DRAIN; the worker closes its listener, sends GOAWAY SHUTDOWN to
 * every session, and leaves its loop when it has no connection and owns no message (nodes
 * of its messages may still be with other workers). After the grace period it ends whatever
 * is left. main() joins the threads and only then frees anything shared.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sp_anon.h"
#include "sp_cluster.h"
#include "sp_conn.h"
#include "sp_log.h"
#include "sp_msg.h"
#include "sp_directory.h"
#include "sp_provider.h"
#include "sp_router.h"
#include "sp_session.h"
#include "sp_time.h"
#include "sp_tls.h"

#define TICK_MS         250
#define CLOSING_MAX_MS  2000

#define ACCEPT_PAUSE_MS 100

_Static_assert(sizeof(uintptr_t) >= sizeof(sp_connref_t), "connection references fit a pointer");

uint64_t sp_now_ms(void)
{
	return sp_time_mono_ms();
}

void sp_worker_wake(sp_worker_t *w)
{
	uint64_t one = 1;

	if (!atomic_exchange(&w->wake, 1)) {
		ssize_t r = write(w->efd, &one, sizeof(one));

		(void)r; /* EAGAIN means the counter is already non-zero: awake anyway */
	}
}

void sp_worker_push(sp_worker_t *w, sp_node_t *n)
{
	sp_mpsc_push(&w->inbox, &n->q);
	sp_worker_wake(w);
}

int sp_worker_slot_alloc(sp_worker_t *w, sp_conn_t *c)
{
	uint32_t slot;

	if (w->n_free == 0) {
		uint32_t n = w->n_slots ? w->n_slots * 2 : 64;
		sp_conn_t **slots;
		uint32_t *gens, *fl;

		if (n > 0xFFFFFF)
			return -ENOSPC;
		slots = realloc(w->slots, n * sizeof(*slots));
		if (!slots)
			return -ENOMEM;
		w->slots = slots;
		gens = realloc(w->gens, n * sizeof(*gens));
		if (!gens)
			return -ENOMEM;
		w->gens = gens;
		fl = realloc(w->free_list, n * sizeof(*fl));
		if (!fl)
			return -ENOMEM;
		w->free_list = fl;
		for (uint32_t i = w->n_slots; i < n; i++) {
			w->slots[i] = NULL;
			w->gens[i] = 1;
		}
		for (uint32_t i = n; i > w->n_slots; i--)
			w->free_list[w->n_free++] = i - 1;
		w->n_slots = n;
	}
	slot = w->free_list[--w->n_free];
	w->slots[slot] = c;
	c->slot = slot;
	c->gen = w->gens[slot];
	return 0;
}

void sp_worker_slot_free(sp_worker_t *w, sp_conn_t *c)
{
	if (c->slot >= w->n_slots || w->slots[c->slot] != c)
		return;
	w->slots[c->slot] = NULL;
	if (++w->gens[c->slot] == 0)
		w->gens[c->slot] = 1; /* generation 0 would make a zero reference */
	w->free_list[w->n_free++] = c->slot;
}

sp_conn_t *sp_worker_conn(sp_worker_t *w, sp_connref_t ref)
{
	uint32_t slot = SP_CONNREF_SLOT(ref);
	sp_conn_t *c;

	if (SP_CONNREF_WORKER(ref) != (unsigned)w->id || slot >= w->n_slots)
		return NULL;
	c = w->slots[slot];
	if (!c || c->gen != SP_CONNREF_GEN(ref) || (c->flags & SP_CF_FINISHED))
		return NULL;
	return c;
}

/* The work left by the callbacks of one loop turn, done once after all of them: results are
 * gathered into frames and each connection's output goes out in one write, however many
 * callbacks (connection reads, store answers, inbox pushes) added to it. */
static void on_after(evutil_socket_t fd, short what, void *arg)
{
	sp_worker_t *w = arg;

	(void)fd;
	(void)what;
	w->after_pending = false;
	w->accepts_this_turn = 0;
	if (w->accept_paused) {
		w->accept_paused = false;
		if (w->listener && !w->draining && !w->announcing)
			evconnlistener_enable(w->listener);
		if (w->anon_listener && !w->draining)
			evconnlistener_enable(w->anon_listener);
	}
	sp_msg_flush_results(w);
	sp_cluster_flush(w);
	while (w->dirty) {
		sp_conn_t *c = w->dirty;

		w->dirty = c->dirty_next;
		c->flags &= (uint8_t)~SP_CF_DIRTY;
		sp_conn_flush(c);
	}
	while (w->reap) {
		sp_conn_t *c = w->reap;

		w->reap = c->reap_next;
		sp_conn_free(c);
	}
	/* Drained: no connection and no message of its own left. It keeps running (another
	 * worker may still hand it a node of that worker's messages) until every worker is
	 * drained and the main thread stops them all (sealpushd.c). */
	atomic_store_explicit(&w->drained, w->draining && w->n_conns == 0 && w->live_msgs == 0,
	                      memory_order_relaxed);
}

void sp_worker_after(sp_worker_t *w)
{
	if (!w->after_pending) {
		w->after_pending = true;
		event_active(w->ev_after, 0, 0);
	}
}

static void drain_inbox(sp_worker_t *w)
{
	sp_mpsc_node_t *q;

	while ((q = sp_mpsc_pop(&w->inbox)))
		sp_router_inbox(w, sp_node_of(q));
}

static void start_drain(sp_worker_t *w)
{
	sp_conn_t *c, *next;

	if (w->draining)
		return;
	w->draining = true;
	w->drain_started = w->now;
	sp_cluster_drain(w);
	if (w->listener) {
		evconnlistener_free(w->listener);
		w->listener = NULL;
	}
	if (w->anon_listener) {
		evconnlistener_free(w->anon_listener);
		w->anon_listener = NULL;
	}
	sp_provider_drain(w);
	for (c = w->conns; c; c = next) {
		next = c->next;
		if (c->flags & SP_CF_FINISHED)
			continue;
		if (c->state == SP_CS_READY) {
			sp_conn_goaway(c, SP_ERR_SHUTDOWN, 2000);
			if (c->sends_outstanding == 0 && c->n_inflight == 0)
				sp_conn_close(c, SP_CLOSE_SHUTDOWN, 0, NULL);
		} else if (c->state == SP_CS_AWAITING_HELLO) {
			sp_conn_close(c, SP_CLOSE_SHUTDOWN, SP_ERR_SHUTDOWN,
			              "the server is shutting down");
		} else if (c->state == SP_CS_HANDSHAKE) {
			c->close_reason = SP_CLOSE_SHUTDOWN;
			sp_conn_finish(c);
		}
	}
}

static void close_revoked(sp_worker_t *w)
{
	for (sp_conn_t *c = w->conns; c; c = c->next) {
		if (c->flags & SP_CF_FINISHED || c->state == SP_CS_HANDSHAKE ||
		    c->state == SP_CS_CLOSING)
			continue;
		if (!sp_tls_revoked(w->srv->tls, c->serial, c->serial_len) &&
		    !(c->ca_serial_len &&
		      sp_tls_revoked(w->srv->tls, c->ca_serial, c->ca_serial_len)))
			continue;
		SP_LOG(SP_LOG_INFO, "conn_revoked", "worker=%d slot=%u", w->id, c->slot);
		sp_conn_goaway(c, SP_ERR_CERT_REVOKED, 0);
		sp_conn_close(c, SP_CLOSE_REVOKED,
		              c->state == SP_CS_AWAITING_HELLO ? SP_ERR_CERT_REVOKED : 0,
		              "the client certificate was revoked");
	}
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
	sp_worker_t *w = arg;
	uint64_t v;
	unsigned flags;
	ssize_t r;

	(void)what;
	r = read(fd, &v, sizeof(v));
	(void)r;
	w->now = sp_now_ms();
	atomic_store(&w->wake, 0);
	flags = atomic_exchange(&w->flags, 0);
	if (flags & SP_WF_STOP) {
		event_base_loopbreak(w->base);
		return;
	}
	if (flags & SP_WF_RELOAD) {
		close_revoked(w);
		sp_provider_reload(w);
	}
	if ((flags & SP_WF_PUBLISH) && w->id == 0)
		sp_cluster_publish_crl(w);
	if (flags & SP_WF_DRAIN)
		start_drain(w);
	drain_inbox(w);
	sp_worker_after(w);
}

static void tick_conn(sp_worker_t *w, sp_conn_t *c)
{
	const sp_server_config_t *cfg = &w->srv->cfg;
	uint64_t age = w->now - c->t_state;

	switch (c->state) {
	case SP_CS_HANDSHAKE:
		if ((c->flags & SP_CF_DEFERRED) && age > (uint64_t)cfg->handshake_timeout) {
			sp_metric_inc(&w->metrics, SP_M_CONN_REFUSED_HS_WAIT);
			c->close_reason = SP_CLOSE_HANDSHAKE;
			sp_conn_finish(c); /* never got a handshake slot */
		} else if (age > (uint64_t)cfg->handshake_timeout) {
			sp_metric_inc(&w->metrics, SP_M_HANDSHAKE_FAIL + SP_HS_TIMEOUT);
			sp_metric_inc(&w->metrics, SP_M_LIMIT_HITS + SP_LIMIT_HANDSHAKE_TIMEOUT);
			c->close_reason = SP_CLOSE_HANDSHAKE;
			sp_conn_finish(c);
		}
		return;
	case SP_CS_AWAITING_HELLO:
		if (age > (uint64_t)cfg->hello_timeout) {
			sp_metric_inc(&w->metrics, SP_M_LIMIT_HITS + SP_LIMIT_HELLO_TIMEOUT);
			sp_conn_close(c, SP_CLOSE_HELLO_TIMEOUT, SP_ERR_HELLO_TIMEOUT,
			              "no HELLO within the hello timeout");
		}
		return;
	case SP_CS_READY:
	case SP_CS_DRAINING:
		if (w->now - c->t_rx > (uint64_t)c->keepalive * 2000) {
			sp_metric_inc(&w->metrics, SP_M_LIMIT_HITS + SP_LIMIT_IDLE_TIMEOUT);
			sp_conn_close(c, SP_CLOSE_IDLE_TIMEOUT, SP_ERR_IDLE_TIMEOUT,
			              "nothing received for two keepalive intervals");
			return;
		}
		sp_session_tick(c);
		if (c->presence_due && w->now >= c->presence_due && (c->flags & SP_CF_REGISTERED))
			sp_cluster_renew(c, c->flags & SP_CF_RECHECK); /* daily, or a re-check */
		break;
	case SP_CS_CLOSING:
		if (age > CLOSING_MAX_MS)
			sp_conn_finish(c);
		return;
	}
	/* Release an output buffer that has stayed empty since the last tick. */
	if (!(c->flags & (SP_CF_DIRTY | SP_CF_FINISHED)))
		sp_conn_release_output(c);
}

/* The store's counters into w's metrics (the tick: the store counts on its own thread). */
static void store_counters(sp_worker_t *w)
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

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	sp_worker_t *w = arg;
	bool grace_over;

	(void)fd;
	(void)what;
	w->now = sp_now_ms();
	grace_over =
	        w->draining && w->now - w->drain_started > (uint64_t)w->srv->cfg.shutdown_grace;
	for (sp_conn_t *c = w->conns, *next; c; c = next) {
		next = c->next;
		if (c->flags & SP_CF_FINISHED)
			continue;
		if (grace_over) {
			c->close_reason = SP_CLOSE_SHUTDOWN;
			sp_conn_finish(c);
			continue;
		}
		tick_conn(w, c);
	}
	drain_inbox(w); /* a push that was mid-way at the last wake-up */
	sp_cluster_tick(w);
	if (grace_over && w->now - w->drain_logged >= 1000) {
		w->drain_logged = w->now;
		SP_LOG(SP_LOG_INFO, "drain_waiting", "worker=%d conns=%u messages=%u", w->id,
		       w->n_conns, w->live_msgs);
	}
	sp_provider_tick(w);
	store_counters(w);
	sp_directory_counters(w);
	sp_worker_after(w);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
	sp_worker_t *w = arg;

	(void)l;
	(void)sa;
	(void)len;
	w->now = sp_now_ms();
	sp_conn_accept(w, fd, l == w->anon_listener);
	if (++w->accepts_this_turn >= SP_ACCEPT_PER_TURN && !w->accept_paused) {
		evconnlistener_disable(l); /* ends libevent's accept loop; on_after resumes it */
		w->accept_paused = true;
	}
	sp_worker_after(w);
}

static void on_accept_retry(evutil_socket_t fd, short what, void *arg)
{
	sp_worker_t *w = arg;

	(void)fd;
	(void)what;
	if (w->spare_fd < 0)
		w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (w->listener && !w->draining && !w->announcing)
		evconnlistener_enable(w->listener);
	if (w->anon_listener && !w->draining)
		evconnlistener_enable(w->anon_listener);
}

/*
 * accept() failed. Out of descriptors: refuse one waiting connection cleanly by accepting it
 * on the spare descriptor and closing it, so clients are not left to time out. Another worker
 * may take the freed descriptor first (then that one serves its client); a worker left
 * without a spare stops accepting for ACCEPT_PAUSE_MS instead of spinning on EMFILE, like
 * nginx, and tries to get its spare back.
 */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
	sp_worker_t *w = arg;
	int err = EVUTIL_SOCKET_ERROR();
	struct timeval pause = {0, ACCEPT_PAUSE_MS * 1000};

	if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
		SP_LOG(SP_LOG_WARN, "accept_failed", "worker=%d errno=%d msg=\"%s\"", w->id, err,
		       strerror(err));
		return;
	}
	sp_metric_inc(&w->metrics, SP_M_LIMIT_HITS + SP_LIMIT_FILE_DESCRIPTORS);
	if (w->spare_fd >= 0) {
		int fd;

		close(w->spare_fd);
		fd = accept4(evconnlistener_get_fd(l), NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0) {
			close(fd);
			sp_metric_inc(&w->metrics, SP_M_CONN_REFUSED_FDS);
		}
		w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (w->spare_fd >= 0)
			return;
	}
	SP_LOG(SP_LOG_WARN, "out_of_descriptors",
	       "worker=%d msg=\"no descriptor left to refuse new connections with: pausing accept "
	       "for %d ms (raise the descriptor limit or lower max_connections)\"",
	       w->id, ACCEPT_PAUSE_MS);
	evconnlistener_disable(l);
	w->accept_paused = false; /* ev_accept_retry resumes it, not on_after */
	event_add(w->ev_accept_retry, &pause);
}

static void *worker_main(void *arg)
{
	sp_worker_t *w = arg;

	event_base_dispatch(w->base);
	atomic_fetch_add(&w->srv->workers_done, 1);
	return NULL;
}

static int worker_init(sp_server_t *srv, sp_worker_t *w, int id, char *err, size_t errlen)
{
	struct event_config *ec = event_config_new();
	struct timeval tick = {0, TICK_MS * 1000};

	w->srv = srv;
	w->id = id;
	sp_tokmap_init(&w->local);
	if (!ec)
		goto nomem;
	event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
	event_config_set_max_dispatch_interval(ec, NULL, SP_HANDSHAKE_STEPS, SP_PRIO_HANDSHAKE);
	w->base = event_base_new_with_config(ec);
	event_config_free(ec);
	if (!w->base || event_base_priority_init(w->base, SP_PRIO_COUNT) < 0)
		goto nomem;
	w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->efd < 0) {
		snprintf(err, errlen, "eventfd: %s", strerror(errno));
		return -1;
	}
	if (srv->cfg.redis && srv->cfg.redis[0]) {
		sp_store_limits_t lim;
		size_t rec = sp_store_record_size(SP_COLLAPSE_MAX, (size_t)srv->cfg.max_blob);

		sp_store_limits_default(&lim);
		lim.max_count = (uint32_t)srv->cfg.max_queue;
		lim.max_bytes = (uint64_t)srv->cfg.max_queue_bytes;
		lim.timeout_ms = (uint32_t)srv->cfg.store_timeout;
		lim.wait_replicas = (uint32_t)srv->cfg.wait_replicas;
		lim.wait_timeout_ms = (uint32_t)srv->cfg.wait_timeout;
		lim.max_batch = (uint32_t)srv->cfg.store_batch;
		w->store = sp_store_new(w->base, srv->cfg.redis, &lim, err, errlen);
		if (!w->store)
			return -1;
		w->record = malloc(rec);
		w->acks = malloc(SP_STORE_MAX_ACK * sizeof(*w->acks));
		if (!w->record || !w->acks)
			goto nomem;
		if (srv->cfg.cluster && sp_cluster_start(w, err, errlen) < 0)
			return -1;
	}
	w->scratch = malloc(SP_WORKER_SCRATCH);
	w->seal = malloc(SP_WORKER_SEAL);
	w->rlcx = sp_rl_crypto_new();
	w->batch = malloc((size_t)SP_MAX_RECIPIENTS_V1 * SP_RESULT_LEN);
	w->dedup = malloc((sizeof(uint32_t) + 1) * SP_MAX_RECIPIENTS_V1);
	w->ev_wake = event_new(w->base, w->efd, EV_READ | EV_PERSIST, on_wake, w);
	w->ev_tick = event_new(w->base, -1, EV_PERSIST, on_tick, w);
	w->ev_accept_retry = event_new(w->base, -1, 0, on_accept_retry, w);
	w->ev_after = event_new(w->base, -1, 0, on_after, w);
	if (!w->scratch || !w->seal || !w->rlcx || !w->batch || !w->dedup || !w->ev_wake ||
	    !w->ev_tick || !w->ev_accept_retry || !w->ev_after)
		goto nomem;
	event_priority_set(w->ev_wake, SP_PRIO_CONN);
	event_priority_set(w->ev_after, SP_PRIO_CONN);
	w->tio_env = (sp_tio_env_t){.scratch = w->scratch,
	                            .scratch_len = SP_WORKER_SCRATCH,
	                            .seal = w->seal,
	                            .seal_len = SP_WORKER_SEAL,
	                            .rlcx = w->rlcx,
	                            .tls = srv->tls,
	                            .reads_per_call = 16};
	event_add(w->ev_wake, NULL);
	event_add(w->ev_tick, &tick);
	/* In a cluster, devices are let in once the other relays know this one (sp_cluster.c):
	 * until then a presence naming it would look dead to them. */
	w->announcing = w->cl != NULL;
	w->listener = evconnlistener_new_bind(
	        w->base, on_accept, w,
	        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE |
	                LEV_OPT_REUSEABLE_PORT | (w->announcing ? LEV_OPT_DISABLED : 0),
	        (int)srv->cfg.backlog, (struct sockaddr *)&srv->listen_addr, srv->listen_addrlen);
	if (!w->listener) {
		snprintf(err, errlen, "cannot listen on %s: %s", srv->cfg.listen, strerror(errno));
		return -1;
	}
	evconnlistener_set_error_cb(w->listener, on_accept_error);
	/* The anonymous door (sp_anon.h) lets senders in from the start: an anonymous
	 * connection never receives, so it needs no presence the other relays must know. */
	if (sp_anon_enabled(srv)) {
		w->anon_listener = evconnlistener_new_bind(
		        w->base, on_accept, w,
		        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE |
		                LEV_OPT_REUSEABLE_PORT,
		        (int)srv->cfg.backlog, (struct sockaddr *)&srv->anon_addr,
		        srv->anon_addrlen);
		if (!w->anon_listener) {
			snprintf(err, errlen, "cannot listen on %s (anon_listen): %s",
			         srv->cfg.anon_listen, strerror(errno));
			return -1;
		}
		evconnlistener_set_error_cb(w->anon_listener, on_accept_error);
	}
	w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	w->now = sp_now_ms();
	if (sp_directory_start(w, err, errlen) < 0 || sp_anon_worker_start(w, err, errlen) < 0)
		return -1;
	return sp_provider_start(w, err, errlen);
nomem:
	snprintf(err, errlen, "out of memory");
	return -1;
}

static void worker_destroy(sp_worker_t *w)
{
	sp_mpsc_node_t *q;

	/* Threads are stopped: free what is left, messages last (nodes point into them). */
	sp_cluster_free(w);
	sp_provider_free(w);
	sp_anon_worker_free(w);
	while (w->conns) {
		sp_conn_t *c = w->conns;

		if (!(c->flags & SP_CF_FINISHED)) {
			c->inflight = c->pending = NULL; /* their messages are freed below */
			c->flags |= SP_CF_FINISHED;
			if (c->io.fd >= 0)
				close(c->io.fd);
			event_del(&c->ev_read);
			event_del(&c->ev_write);
		}
		sp_conn_free(c);
	}
	while ((q = sp_mpsc_pop(&w->inbox))) {
		sp_node_t *n = sp_node_of(q);

		if (n->kind == SP_NODE_REPLACE || n->kind == SP_NODE_KICK)
			free(n); /* the others live inside messages */
	}
	sp_msg_teardown(w);
	if (w->listener)
		evconnlistener_free(w->listener);
	if (w->anon_listener)
		evconnlistener_free(w->anon_listener);
	if (w->ev_wake)
		event_free(w->ev_wake);
	if (w->ev_tick)
		event_free(w->ev_tick);
	if (w->ev_accept_retry)
		event_free(w->ev_accept_retry);
	if (w->ev_after)
		event_free(w->ev_after);
	if (w->base)
		event_base_free(w->base);
	if (w->efd >= 0)
		close(w->efd);
	if (w->spare_fd >= 0)
		close(w->spare_fd);
	sp_tokmap_free(&w->local);
	free(w->slots);
	free(w->gens);
	free(w->free_list);
	free(w->record);
	free(w->acks);
	free(w->scratch);
	free(w->seal);
	sp_rl_crypto_free(w->rlcx);
	free(w->batch);
	free(w->dedup);
}

int sp_workers_start(sp_server_t *srv, char *err, size_t errlen)
{
	int i, started = 0;

	srv->workers = calloc((size_t)srv->n_workers, sizeof(*srv->workers));
	if (!srv->workers) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	/* What worker_destroy() touches is valid for every worker, even one whose init never
	 * ran because an earlier one failed. */
	for (i = 0; i < srv->n_workers; i++) {
		srv->workers[i].efd = -1;
		srv->workers[i].spare_fd = -1;
		sp_mpsc_init(&srv->workers[i].inbox);
	}
	for (i = 0; i < srv->n_workers; i++)
		if (worker_init(srv, &srv->workers[i], i, err, errlen) < 0)
			goto fail;
	for (; started < srv->n_workers; started++) {
		int r = pthread_create(&srv->workers[started].thread, NULL, worker_main,
		                       &srv->workers[started]);

		if (r) {
			snprintf(err, errlen, "cannot start a worker thread: %s", strerror(r));
			goto fail;
		}
	}
	srv->n_threads = srv->n_workers;
	atomic_store(&srv->listeners_up, true);
	return 0;
fail:
	srv->n_threads = started;
	sp_workers_signal(srv, SP_WF_STOP);
	sp_workers_join(srv);
	return -1;
}

void sp_workers_signal(sp_server_t *srv, unsigned flags)
{
	for (int i = 0; srv->workers && i < srv->n_threads; i++) {
		atomic_fetch_or(&srv->workers[i].flags, flags);
		atomic_store(&srv->workers[i].wake, 1);
		{
			uint64_t one = 1;
			ssize_t r = write(srv->workers[i].efd, &one, sizeof(one));

			(void)r;
		}
	}
}

void sp_workers_join(sp_server_t *srv)
{
	if (!srv->workers)
		return;
	for (int i = 0; i < srv->n_threads; i++)
		pthread_join(srv->workers[i].thread, NULL);
	/* Stores first: freeing one answers its pending requests, whose callbacks must then
	 * touch nothing (the messages they name are freed with their owners below). */
	atomic_store(&srv->stopping, true);
	for (int i = 0; i < srv->n_workers; i++) {
		sp_directory_stop(&srv->workers[i]); /* before its store, whose requests it has */
		sp_store_free(srv->workers[i].store);
		srv->workers[i].store = NULL;
	}
	/* Every thread is gone: messages owned by one worker may sit in another's lists. */
	for (int i = 0; i < srv->n_workers; i++) {
		sp_worker_t *w = &srv->workers[i];

		for (sp_conn_t *c = w->conns; c; c = c->next)
			c->inflight = c->pending = NULL;
	}
	for (int i = 0; i < srv->n_workers; i++)
		worker_destroy(&srv->workers[i]);
	free(srv->workers);
	srv->workers = NULL;
}
