/*
 * Unit tests for the router (server/sp_router.c) with the delivery window (sp_delivery.c)
 * and message results (sp_msg.c): real workers (inboxes, eventfds, slot tables, local maps),
 * the real registry, and connections on different workers whose transport is a capture
 * buffer (a third sp_transport_t: what the relay would write to the socket is decoded here
 * frame by frame). No threads: a test drains a worker's inbox itself, so every interleaving
 * (a token that moves between workers while a node is on its way) is exact.
 *
 * Without a store, "offline" is DEVICE_OFFLINE (ttl > 0) or EXPIRED (ttl 0).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sp_delivery.h"
#include "sp_msg.h"
#include "sp_router.h"
#include "sp_session.h"
#include "sp_test.h"

#define N_WORKERS 2
#define CAP_FDS   1024
#define CAP_BYTES (1u << 20)

/* ---- a transport that captures ----------------------------------------------------------- */

static struct {
	uint8_t *buf;
	size_t len, off; /* written, and read by next_frame */
} cap[CAP_FDS];

/* Which capture a connection writes to: its socket number, kept after finish closes it. */
static struct {
	const sp_conn_t *c;
	int fd;
} fds[256];
static unsigned n_fds;

static int fd_of(const sp_conn_t *c)
{
	for (unsigned i = n_fds; i-- > 0;)
		if (fds[i].c == c)
			return fds[i].fd;
	SP_CHECK(!"unknown connection");
	return 0;
}

static int cap_handshake(sp_tio_t *t, sp_peer_t *peer)
{
	(void)t;
	(void)peer;
	return SP_IO_DONE;
}

static int cap_read(sp_tio_t *t, sp_tio_input_fn *input, void *arg)
{
	(void)t;
	(void)input;
	(void)arg;
	return SP_IO_WANT_READ;
}

static int cap_write(sp_tio_t *t, const uint8_t *p, size_t len, size_t *taken)
{
	if (cap[t->fd].len + len > CAP_BYTES)
		return SP_IO_BROKEN;
	if (len)
		memcpy(cap[t->fd].buf + cap[t->fd].len, p, len);
	cap[t->fd].len += len;
	*taken = len;
	return SP_IO_DONE;
}

static void cap_shutdown(sp_tio_t *t)
{
	(void)t;
}

static void cap_free(sp_tio_t *t)
{
	(void)t;
}

static const sp_transport_t cap_transport = {
        "capture", cap_handshake, cap_read, cap_write, cap_shutdown, cap_free,
};

/* ---- workers and connections ------------------------------------------------------------- */

static sp_server_t srv;
static sp_worker_t workers[N_WORKERS];

static void noop_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

static void setup(void)
{
	memset(&srv, 0, sizeof(srv));
	srv.cfg.window = 16;
	srv.cfg.ack_timeout = 10000;
	srv.cfg.max_ttl = 3600;
	srv.cfg.output_buffer_max = 1 << 20;
	srv.cfg.drain_page = 64;
	srv.cfg.send_window = 64;
	srv.cfg.max_recipients = 100;
	srv.cfg.max_blob = 4096;
	srv.cfg.max_errors = 10;
	sp_registry_init(&srv.registry);
	srv.n_workers = N_WORKERS;
	memset(workers, 0, sizeof(workers));
	srv.workers = workers;
	for (int i = 0; i < N_WORKERS; i++) {
		sp_worker_t *w = &srv.workers[i];

		w->srv = &srv;
		w->id = i;
		w->base = event_base_new();
		w->ev_after = event_new(w->base, -1, 0, noop_cb, NULL);
		sp_mpsc_init(&w->inbox);
		w->efd = eventfd(0, EFD_NONBLOCK);
		sp_tokmap_init(&w->local);
		w->batch = malloc((size_t)SP_MAX_RECIPIENTS_V1 * SP_RESULT_LEN);
		w->dedup = malloc((sizeof(uint32_t) + 1) * SP_MAX_RECIPIENTS_V1);
		w->now = 1000000;
	}
}

/* Frees what the reaper would have: connections closed since the last call. */
static void reap(sp_worker_t *w)
{
	while (w->reap) {
		sp_conn_t *c = w->reap;

		w->reap = c->reap_next;
		sp_conn_free(c);
	}
}

/* A READY connection on w for the device whose token is all `tok` bytes (registered unless
 * send_only). Its socket is one end of a socketpair, only so that closing it is real. */
static sp_conn_t *conn_new(sp_worker_t *w, uint8_t tok, bool send_only)
{
	sp_conn_t *c = calloc(1, sizeof(*c));
	int sv[2];

	SP_CHECK(c != NULL);
	SP_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	close(sv[1]);
	SP_CHECK(sv[0] < CAP_FDS);
	if (!cap[sv[0]].buf)
		cap[sv[0]].buf = malloc(CAP_BYTES);
	cap[sv[0]].len = cap[sv[0]].off = 0;
	SP_CHECK(n_fds < sizeof(fds) / sizeof(fds[0]));
	fds[n_fds].c = c;
	fds[n_fds++].fd = sv[0];
	c->w = w;
	SP_CHECK(sp_worker_slot_alloc(w, c) == 0);
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	w->n_conns++;
	atomic_fetch_add(&srv.n_conns, 1);
	c->io.tr = &cap_transport;
	c->io.fd = sv[0];
	event_assign(&c->ev_read, w->base, sv[0], EV_READ, noop_cb, NULL);
	event_assign(&c->ev_write, w->base, sv[0], EV_WRITE, noop_cb, NULL);
	sp_decoder_init(&c->dec, 65536);
	memset(c->token, tok, sizeof(c->token));
	c->window = (uint16_t)srv.cfg.window;
	sp_conn_set_state(c, SP_CS_READY);
	if (send_only)
		c->flags |= SP_CF_SEND_ONLY;
	else
		SP_CHECK(sp_router_register(c) == 0);
	return c;
}

/* The next frame c's device got (after flushing c), or false if there is none. */
static bool next_frame(sp_conn_t *c, sp_frame_t *f)
{
	size_t used = 0;
	int fd = fd_of(c);

	sp_conn_flush(c);
	if (cap[fd].off == cap[fd].len)
		return false;
	SP_CHECK_EQ_INT(sp_frame_decode(cap[fd].buf + cap[fd].off, cap[fd].len - cap[fd].off,
	                                1 << 20, f, &used),
	                1);
	cap[fd].off += used;
	return true;
}

/* Skips to c's next frame of type `type`; fails the test if there is none. */
static void expect_frame(sp_conn_t *c, uint8_t type, sp_frame_t *f)
{
	while (next_frame(c, f))
		if (f->type == type)
			return;
	SP_CHECK(!"expected frame not sent");
	memset(f, 0, sizeof(*f));
}

static bool no_frame_of(sp_conn_t *c, uint8_t type)
{
	sp_frame_t f;

	while (next_frame(c, &f))
		if (f.type == type)
			return false;
	return true;
}

/* Handles what w's inbox holds, as its thread would; returns how many nodes. */
static int run_inbox(sp_worker_t *w)
{
	sp_mpsc_node_t *q;
	int n = 0;

	atomic_store(&w->wake, 0);
	while ((q = sp_mpsc_pop(&w->inbox))) {
		sp_router_inbox(w, sp_node_of(q));
		n++;
	}
	return n;
}

/* Runs every inbox until all are empty. */
static void settle(void)
{
	int n;

	do {
		n = 0;
		for (int i = 0; i < N_WORKERS; i++)
			n += run_inbox(&srv.workers[i]);
	} while (n);
}

static void teardown(void)
{
	for (int i = 0; i < N_WORKERS; i++)
		for (sp_conn_t *c = srv.workers[i].conns; c; c = c->next)
			sp_conn_finish(c);
	settle(); /* what the connections had goes offline and back to its owners */
	for (int i = 0; i < N_WORKERS; i++) {
		sp_worker_t *w = &srv.workers[i];

		reap(w);
		SP_CHECK_EQ_INT(w->live_msgs, 0);
		sp_msg_teardown(w);
		sp_tokmap_free(&w->local);
		free(w->slots);
		free(w->gens);
		free(w->free_list);
		free(w->batch);
		free(w->dedup);
		close(w->efd);
		event_free(w->ev_after);
		event_base_free(w->base);
	}
	sp_registry_destroy(&srv.registry);
	for (unsigned i = 0; i < CAP_FDS; i++) {
		free(cap[i].buf);
		cap[i].buf = NULL;
	}
	n_fds = 0;
}

static uint64_t metric(const sp_worker_t *w, unsigned m)
{
	return atomic_load(&w->metrics.v[m]);
}

/* A one-recipient message from sender s to the device `tok`, routed at once. */
static sp_msg_t *send_to(sp_conn_t *s, uint8_t tok, uint8_t id, uint32_t ttl)
{
	sp_msg_t *msg = sp_msg_new(s->w, 1, 3);

	SP_CHECK(msg != NULL);
	msg->sender = sp_conn_ref(s);
	msg->ttl = ttl;
	msg->expires = ttl ? s->w->now + (uint64_t)ttl * 1000 : 0;
	memset(msg->msg_id, id, SP_MSG_ID_LEN);
	memset(msg->recipients, tok, SP_TOKEN_LEN);
	memcpy(msg->blob, "abc", 3);
	s->sends_outstanding++;
	sp_route(s->w, &msg->nodes[0]);
	return msg;
}

/* Expects DELIVER of message `id` on r; ACKs it from r's device. */
static void expect_deliver_ack(sp_conn_t *r, uint8_t id)
{
	uint8_t want[SP_MSG_ID_LEN];
	sp_frame_t f;

	memset(want, id, sizeof(want));
	expect_frame(r, SP_DELIVER, &f);
	SP_CHECK(f.msg_id && memcmp(f.msg_id, want, SP_MSG_ID_LEN) == 0);
	SP_CHECK_EQ_INT(f.blob_len, 3);
	sp_delivery_ack(r, want, 1);
}

/* Expects a SEND_RESULT on s for message `id` whose entries are statuses[0..n). */
static void expect_result(sp_conn_t *s, uint8_t id, const uint8_t *statuses, uint32_t n)
{
	uint8_t want[SP_MSG_ID_LEN];
	uint8_t got[SP_MAX_RECIPIENTS_V1];
	uint32_t seen = 0;
	sp_frame_t f;

	memset(want, id, sizeof(want));
	memset(got, 0xFF, sizeof(got));
	sp_msg_flush_results(s->w);
	while (seen < n && next_frame(s, &f)) {
		if (f.type != SP_SEND_RESULT || memcmp(f.msg_id, want, SP_MSG_ID_LEN) != 0)
			continue;
		for (uint32_t i = 0; i < f.n_results; i++) {
			uint16_t index;
			uint8_t st;

			sp_result_get(&f, i, &index, &st);
			SP_CHECK(index < n);
			if (index < n)
				got[index] = st;
			seen++;
		}
	}
	SP_CHECK_EQ_INT(seen, n);
	for (uint32_t i = 0; i < n; i++)
		SP_CHECK_EQ_INT(got[i], statuses[i]);
}

/* ---- cases ------------------------------------------------------------------------------- */

static void test_local(void)
{
	sp_worker_t *w0 = &workers[0];
	sp_conn_t *s, *r;
	const uint8_t st[] = {SP_ST_DELIVERED};

	setup();
	s = conn_new(w0, 0x01, true);
	r = conn_new(w0, 0xA1, false);
	send_to(s, 0xA1, 1, 60);
	SP_CHECK_EQ_INT(metric(w0, SP_M_DELIVERIES_LOCAL), 1);
	SP_CHECK_EQ_INT(r->n_inflight, 1);
	SP_CHECK_EQ_INT(w0->live_msgs, 1);
	expect_deliver_ack(r, 1);
	SP_CHECK_EQ_INT(r->n_inflight, 0);
	expect_result(s, 1, st, 1);
	SP_CHECK_EQ_INT(w0->live_msgs, 0);
	SP_CHECK_EQ_INT(s->sends_outstanding, 0);
	teardown();
}

static void test_remote(void)
{
	sp_worker_t *w0 = &workers[0], *w1 = &workers[1];
	const uint8_t st[] = {SP_ST_DELIVERED};
	sp_conn_t *s, *r;
	uint64_t ev = 0;

	setup();
	s = conn_new(w0, 0x01, true);
	r = conn_new(w1, 0xB1, false);
	send_to(s, 0xB1, 2, 60);
	SP_CHECK_EQ_INT(metric(w0, SP_M_DELIVERIES_REMOTE), 1);
	SP_CHECK_EQ_INT(r->n_inflight, 0); /* not yet: it is in w1's inbox */
	SP_CHECK_EQ_INT(atomic_load(&w1->wake), 1);
	SP_CHECK(read(w1->efd, &ev, sizeof(ev)) == sizeof(ev) && ev == 1);
	SP_CHECK_EQ_INT(run_inbox(w1), 1);
	SP_CHECK_EQ_INT(metric(w1, SP_M_DELIVERIES_LOCAL), 1);
	expect_deliver_ack(r, 2);
	/* The status goes back to the owner's inbox: nothing is answered on w1. */
	SP_CHECK_EQ_INT(w0->live_msgs, 1);
	SP_CHECK_EQ_INT(run_inbox(w0), 1);
	expect_result(s, 2, st, 1);
	SP_CHECK_EQ_INT(w0->live_msgs, 0);
	teardown();
}

static void test_offline(void)
{
	sp_worker_t *w0 = &workers[0];
	const uint8_t off[] = {SP_ST_DEVICE_OFFLINE}, exp[] = {SP_ST_EXPIRED};
	sp_conn_t *s, *r;
	sp_msg_t *m;

	setup();
	s = conn_new(w0, 0x01, true);
	send_to(s, 0xC1, 3, 60); /* nobody has 0xC1, no store */
	expect_result(s, 3, off, 1);
	send_to(s, 0xC1, 4, 0); /* ttl 0: now or never */
	expect_result(s, 4, exp, 1);
	/* A node whose ttl passed while it travelled is EXPIRED wherever it arrives. */
	r = conn_new(w0, 0xC2, false);
	m = sp_msg_new(w0, 1, 0);
	m->sender = sp_conn_ref(s);
	m->ttl = 1;
	m->expires = w0->now - 1;
	memset(m->msg_id, 5, SP_MSG_ID_LEN);
	memset(m->recipients, 0xC2, SP_TOKEN_LEN);
	s->sends_outstanding++;
	sp_route(w0, &m->nodes[0]);
	expect_result(s, 5, exp, 1);
	SP_CHECK(no_frame_of(r, SP_DELIVER));
	SP_CHECK_EQ_INT(metric(w0, SP_M_DELIVERIES_LOCAL), 0);
	SP_CHECK_EQ_INT(w0->live_msgs, 0);
	teardown();
}

/* One SEND through the session: local, remote, offline and repeated recipients. */
static void test_send_fanout(void)
{
	sp_worker_t *w0 = &workers[0], *w1 = &workers[1];
	const uint8_t st[] = {SP_ST_DELIVERED, SP_ST_DELIVERED, SP_ST_DEVICE_OFFLINE,
	                      SP_ST_BAD_DEVICE_TOKEN, SP_ST_BAD_DEVICE_TOKEN};
	uint8_t rcpt[5 * SP_TOKEN_LEN], id[SP_MSG_ID_LEN];
	sp_frame_t f = {.type = SP_SEND};
	sp_conn_t *s, *r0, *r1;

	setup();
	s = conn_new(w0, 0x01, true);
	r0 = conn_new(w0, 0xD0, false);
	r1 = conn_new(w1, 0xD1, false);
	memset(rcpt, 0xD0, SP_TOKEN_LEN);
	memset(rcpt + SP_TOKEN_LEN, 0xD1, SP_TOKEN_LEN);
	memset(rcpt + 2 * SP_TOKEN_LEN, 0xDF, SP_TOKEN_LEN);
	memset(rcpt + 3 * SP_TOKEN_LEN, 0xD0, SP_TOKEN_LEN); /* a repeat */
	memset(rcpt + 4 * SP_TOKEN_LEN, 0x00, SP_TOKEN_LEN); /* the zero token */
	memset(id, 6, sizeof(id));
	f.fields = SP_BIT(SP_F_MSG_ID) | SP_BIT(SP_F_RECIPIENTS) | SP_BIT(SP_F_BLOB) |
	           SP_BIT(SP_F_TTL);
	f.msg_id = id;
	f.recipients = rcpt;
	f.n_recipients = 5;
	f.blob = (const uint8_t *)"abc";
	f.blob_len = 3;
	f.ttl = 60;
	sp_session_frame(s, &f);
	SP_CHECK_EQ_INT(s->sends_outstanding, 1);
	SP_CHECK_EQ_INT(metric(w0, SP_M_MESSAGES_ACCEPTED), 3);
	expect_deliver_ack(r0, 6);
	settle();
	expect_deliver_ack(r1, 6);
	settle();
	expect_result(s, 6, st, 5);
	SP_CHECK_EQ_INT(s->sends_outstanding, 0);
	SP_CHECK_EQ_INT(w0->live_msgs, 0);
	teardown();
}

/* The window: past it, deliveries wait, in order, until ACKs open it again. */
static void test_window(void)
{
	sp_worker_t *w0 = &workers[0];
	const uint8_t st[] = {SP_ST_DELIVERED};
	sp_conn_t *s, *r;

	setup();
	s = conn_new(w0, 0x01, true);
	r = conn_new(w0, 0xE1, false);
	r->window = 2;
	for (uint8_t i = 1; i <= 4; i++)
		send_to(s, 0xE1, i, 60);
	SP_CHECK_EQ_INT(r->n_inflight, 2);
	SP_CHECK_EQ_INT(r->n_pending, 2);
	SP_CHECK_EQ_INT(r->pending_bytes, 6);
	expect_deliver_ack(r, 1);
	SP_CHECK_EQ_INT(r->n_inflight, 2); /* the third went out */
	SP_CHECK_EQ_INT(r->n_pending, 1);
	expect_deliver_ack(r, 2);
	expect_deliver_ack(r, 3);
	expect_deliver_ack(r, 4);
	SP_CHECK_EQ_INT(r->n_inflight, 0);
	SP_CHECK_EQ_INT(r->n_pending, 0);
	SP_CHECK_EQ_INT(r->pending_bytes, 0);
	for (uint8_t i = 1; i <= 4; i++)
		expect_result(s, i, st, 1);
	teardown();
}

/* A device reconnects on the other worker while a node is on its way to the old connection:
 * the old one is replaced (GOAWAY replaced), and what it had not acknowledged follows the
 * device to the new one. */
static void test_token_moves(void)
{
	sp_worker_t *w0 = &workers[0], *w1 = &workers[1];
	const uint8_t st[] = {SP_ST_DELIVERED};
	sp_conn_t *s, *old, *new;
	sp_frame_t f;

	setup();
	s = conn_new(w0, 0x01, true);
	old = conn_new(w1, 0xF1, false);
	send_to(s, 0xF1, 7, 60);   /* in w1's inbox */
	new = conn_new(w0, 0xF1, false); /* and a REPLACE after it */
	SP_CHECK_EQ_INT(sp_registry_get(&srv.registry, new->token), sp_conn_ref(new));
	SP_CHECK_EQ_INT(run_inbox(w1), 2);
	/* The old connection got the DELIVER first, then GOAWAY replaced, and was closed. */
	expect_frame(old, SP_DELIVER, &f);
	expect_frame(old, SP_GOAWAY, &f);
	SP_CHECK_EQ_INT(f.code, SP_ERR_REPLACED);
	SP_CHECK(old->flags & SP_CF_FINISHED);
	SP_CHECK_EQ_INT(metric(w1, SP_M_REDELIVERIES), 1);
	SP_CHECK_EQ_INT(metric(w1, SP_M_DEVICES), 0);
	reap(w1);
	/* The unacknowledged node was rerouted to the device's new connection. */
	SP_CHECK_EQ_INT(run_inbox(w0), 1);
	expect_deliver_ack(new, 7);
	expect_result(s, 7, st, 1);
	SP_CHECK_EQ_INT(metric(w0, SP_M_DEVICES), 1);
	SP_CHECK_EQ_INT(w0->live_msgs, 0);
	teardown();
}

/* The same device twice on one worker: the first connection is replaced at once. */
static void test_replace_local(void)
{
	sp_worker_t *w0 = &workers[0];
	const uint8_t st[] = {SP_ST_DELIVERED};
	sp_conn_t *s, *a, *b;
	sp_frame_t f;

	setup();
	s = conn_new(w0, 0x01, true);
	a = conn_new(w0, 0x71, false);
	send_to(s, 0x71, 8, 60);
	SP_CHECK_EQ_INT(a->n_inflight, 1);
	b = conn_new(w0, 0x71, false);
	expect_frame(a, SP_DELIVER, &f);
	expect_frame(a, SP_GOAWAY, &f);
	SP_CHECK_EQ_INT(f.code, SP_ERR_REPLACED);
	SP_CHECK(a->flags & SP_CF_FINISHED);
	SP_CHECK_EQ_INT(metric(w0, SP_M_DEVICES), 1);
	SP_CHECK_EQ_INT(sp_tokmap_get(&w0->local, b->token), (uintptr_t)b);
	reap(w0);
	expect_deliver_ack(b, 8);
	expect_result(s, 8, st, 1);
	teardown();
}

/* A registry entry that keeps naming the other worker (a token moving back and forth) moves
 * a node at most SP_ROUTE_MAX_HOPS times; then it is handled as offline. */
static void test_hop_limit(void)
{
	sp_worker_t *w0 = &workers[0];
	const uint8_t st[] = {SP_ST_DEVICE_OFFLINE};
	uint8_t tok[SP_TOKEN_LEN];
	sp_connref_t old;
	sp_conn_t *s;
	int hops = 0;

	setup();
	s = conn_new(w0, 0x01, true);
	memset(tok, 0x99, sizeof(tok));
	SP_CHECK(sp_registry_set(&srv.registry, tok, SP_CONNREF(1, 5, 1), &old) == 0);
	send_to(s, 0x99, 9, 60);
	for (int round = 0; round < 10; round++) {
		for (int i = 0; i < N_WORKERS; i++) {
			sp_worker_t *w = &srv.workers[i];
			int n;

			/* Before each worker routes, the entry names the other one. */
			SP_CHECK(sp_registry_set(&srv.registry, tok, SP_CONNREF(1 - i, 5, 1),
			                         &old) == 0);
			n = run_inbox(w);
			hops += n;
		}
	}
	/* Four hops through the inboxes; then the owner (w0) answered it at once. */
	SP_CHECK_EQ_INT(hops, SP_ROUTE_MAX_HOPS);
	SP_CHECK_EQ_INT(metric(&srv.workers[0], SP_M_DELIVERIES_REMOTE) +
	                        metric(&srv.workers[1], SP_M_DELIVERIES_REMOTE),
	                SP_ROUTE_MAX_HOPS);
	expect_result(s, 9, st, 1);
	sp_registry_del(&srv.registry, tok, SP_CONNREF(1, 5, 1));
	sp_registry_del(&srv.registry, tok, SP_CONNREF(0, 5, 1));
	teardown();
}

/* No ACK within ack_timeout: the node is handled as for an offline device. */
static void test_ack_timeout(void)
{
	sp_worker_t *w0 = &workers[0], *w1 = &workers[1];
	const uint8_t st[] = {SP_ST_DEVICE_OFFLINE};
	sp_conn_t *s, *r;

	setup();
	s = conn_new(w0, 0x01, true);
	r = conn_new(w1, 0x51, false);
	send_to(s, 0x51, 10, 60);
	settle();
	SP_CHECK_EQ_INT(r->n_inflight, 1);
	w1->now += (uint64_t)srv.cfg.ack_timeout - 1;
	sp_session_tick(r);
	SP_CHECK_EQ_INT(r->n_inflight, 1);
	w1->now += 1;
	sp_session_tick(r);
	SP_CHECK_EQ_INT(r->n_inflight, 0);
	SP_CHECK_EQ_INT(metric(w1, SP_M_LIMIT_HITS + SP_LIMIT_ACK_TIMEOUT), 1);
	settle();
	expect_result(s, 10, st, 1);
	teardown();
}

/* The sender went away before its results came back: the message is still freed, and the
 * recipient's delivery is unaffected. */
static void test_sender_gone(void)
{
	sp_worker_t *w0 = &workers[0], *w1 = &workers[1];
	sp_conn_t *s, *r;

	setup();
	s = conn_new(w0, 0x01, true);
	r = conn_new(w1, 0x61, false);
	send_to(s, 0x61, 11, 60);
	sp_conn_finish(s);
	reap(w0);
	settle();
	expect_deliver_ack(r, 11);
	SP_CHECK_EQ_INT(w0->live_msgs, 1);
	settle();
	SP_CHECK_EQ_INT(w0->live_msgs, 0);
	SP_CHECK_EQ_INT(metric(w0, SP_M_SEND_RESULTS + sp_metric_status_index(SP_ST_DELIVERED)),
	                1);
	teardown();
}

int main(void)
{
	SP_RUN(test_local);
	SP_RUN(test_remote);
	SP_RUN(test_offline);
	SP_RUN(test_send_fanout);
	SP_RUN(test_window);
	SP_RUN(test_token_moves);
	SP_RUN(test_replace_local);
	SP_RUN(test_hop_limit);
	SP_RUN(test_ack_timeout);
	SP_RUN(test_sender_gone);
	return sp_test_done();
}
