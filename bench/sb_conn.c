/*
 * sb_conn.c: one bench connection (see sb_conn.h for its life). The socket, TLS and the output
 * buffer are the client transport's (client/sp_ctransport.h, shared with libsealpush); frames
 * are decoded with sp_frame_decode() in place over the read buffer.
 */
#include "sb_conn.h"

#include "sb_thread.h"
#include "sp_buf.h"
#include "sp_ctransport.h"
#include "sp_frame.h"
#include "sp_version.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>

#define SB_READ_CHUNK   (64 * 1024)
#define SB_MAX_IN_FRAME (SP_MAX_FRAME_V1)
#define SB_ACK_MAX      65535

static void conn_io(evutil_socket_t fd, short what, void *arg);

static void conn_report(sb_conn_t *c, const char *what)
{
	static _Atomic unsigned reported;
	unsigned long e = ERR_peek_error();

	if (atomic_fetch_add(&reported, 1) < 10)
		fprintf(stderr, "\nsealpush-bench: thread %u %s conn %u: %s%s%s\n", c->t->no,
		        c->sender ? "sender" : "receiver", c->idx, what, e ? ": " : "",
		        e ? ERR_reason_error_string(e) : "");
}

static void conn_not_starting(sb_conn_t *c)
{
	if (c->starting) {
		c->starting = false;
		c->t->starting--;
	}
}

/* Frees what a connection holds, except its buffers (kept for a reconnect, freed at exit). */
static void conn_teardown(sb_conn_t *c)
{
	if (c->state == CS_READY)
		sb_cnt_add(&c->t->s->c.ready, (uint64_t)-1);
	conn_not_starting(c);
	sp_ctransport_close(&c->tr); /* and the events on the socket */
	c->state = CS_DEAD;
	ERR_clear_error();
}

/*
 * Tears a broken connection down (no close_notify) and counts it. After the connect phase it
 * is marked for a reconnect; the handshake scenario counts a failed handshake.
 */
static void conn_fail(sb_conn_t *c, const char *why)
{
	const sb_run_t *r = c->t->r;
	const sb_opts_t *o = &r->opt;
	sb_thread_t *t = c->t;
	int ph = sb_phase_get(r);

	if (c->state == CS_DEAD || c->state == CS_IDLE)
		return;
	if (ph != PH_QUIT) {
		conn_report(c, why);
		sb_cnt_add(&t->s->c.errors, 1);
		sb_cnt_add(&t->s->c.dead, 1);
		if (o->scenario == SB_HANDSHAKE)
			sb_cnt_add(&t->s->c.hs_failed, 1);
	}
	conn_teardown(c);
	if (ph != PH_QUIT && ph != PH_CONNECT && !c->retry) {
		c->retry = true;
		t->n_retry++;
	}
}

/* Orderly close: close_notify (best effort on a non-blocking socket), then close. */
void sb_conn_close(sb_conn_t *c)
{
	if (c->state == CS_IDLE || c->state == CS_DEAD)
		return;
	if (c->state >= CS_TICKET)
		sp_ctransport_shutdown(&c->tr);
	conn_teardown(c);
}

int sb_conn_start(sb_conn_t *c)
{
	const sb_opts_t *o = &c->t->r->opt;
	sb_thread_t *t = c->t;
	int rc;

	c->in_len = c->n_acks = 0;
	c->owed = 0;
	c->got_ticket = false;
	c->state = CS_CONNECTING; /* so that conn_fail() below counts it */
	c->starting = true;
	t->starting++;
	c->t_start = sb_now_ns();
	{
		bool far = !c->sender && o->raddr_len;
		const struct sockaddr_storage *a = far ? &o->raddr : &o->addr;

		rc = sp_ctransport_socket(&c->tr, a->ss_family);
		if (rc == 0)
			rc = sp_ctransport_connect(&c->tr, (const struct sockaddr *)a,
			                           far ? o->raddr_len : o->addr_len);
	}
	if (rc < 0) {
		conn_fail(c, strerror(-rc));
		return -1;
	}
	c->tr.rev = event_new(t->base, c->tr.fd, EV_READ | EV_PERSIST, conn_io, c);
	c->tr.wev = event_new(t->base, c->tr.fd, EV_WRITE, conn_io, c);
	if (c->tr.rev == NULL || c->tr.wev == NULL) {
		conn_fail(c, "event_new");
		return -1;
	}
	event_add(c->tr.wev, NULL);
	if (sb_cnt_get(&t->s->c.first_connect_ns) == 0)
		sb_cnt_set(&t->s->c.first_connect_ns, c->t_start);
	return 0;
}

/* Appends the encoding of f to the output buffer. */
static int conn_put(sb_conn_t *c, sp_frame_t *f)
{
	int rc = sp_ctransport_put(&c->tr, f, NULL);

	if (rc < 0) {
		conn_fail(c, rc == SP_CT_NOMEM ? "out of memory" : "sp_frame_encode failed");
		return -1;
	}
	return 0;
}

int sb_conn_flush(sb_conn_t *c)
{
	int rc = sp_ctransport_flush(&c->tr);

	if (rc < 0) {
		conn_fail(c, rc == SP_CT_NOMEM ? "out of memory" : "SSL_write failed");
		return -1;
	}
	return 0;
}

static void msg_id_make(sb_conn_t *c, uint32_t seq, uint8_t id[SP_MSG_ID_LEN])
{
	const sb_run_t *r = c->t->r;
	memcpy(id, r->nonce, 8);
	id[8] = (uint8_t)(seq >> 24);
	id[9] = (uint8_t)(seq >> 16);
	id[10] = (uint8_t)(seq >> 8);
	id[11] = (uint8_t)seq;
	id[12] = (uint8_t)(c->t->no >> 8);
	id[13] = (uint8_t)c->t->no;
	id[14] = (uint8_t)(c->idx >> 8);
	id[15] = (uint8_t)c->idx;
}

static uint32_t msg_id_seq(const uint8_t *id)
{
	return ((uint32_t)id[8] << 24) | ((uint32_t)id[9] << 16) | ((uint32_t)id[10] << 8) | id[11];
}

/*
 * Encodes one SEND whose blob carries ts (the intended send time). Queue: message
 * q_first + sent * senders goes to device (index / senders) % devices.
 */
int sb_conn_send_one(sb_conn_t *c, uint64_t ts)
{
	const sb_run_t *r = c->t->r;
	const sb_opts_t *o = &r->opt;
	sb_thread_t *t = c->t;
	uint8_t id[SP_MSG_ID_LEN];
	sp_frame_t f = {.type = SP_SEND};
	uint32_t seq;

	if (o->scenario == SB_QUEUE) {
		seq = c->q_first + (uint32_t)c->sent * o->senders;
		f.recipients = r->recv_ids[(seq / o->senders) % o->devices].token;
	} else {
		seq = (uint32_t)c->sent;
		f.recipients = c->peer_tokens;
	}
	msg_id_make(c, seq, id);
	if (o->blob >= sizeof(ts))
		memcpy(t->blob, &ts, sizeof(ts));
	f.fields = SP_BIT(SP_F_MSG_ID) | SP_BIT(SP_F_RECIPIENTS) | SP_BIT(SP_F_BLOB);
	f.msg_id = id;
	f.n_recipients = c->n_peers;
	if (c->peer_keys) {
		f.fields |= SP_BIT(SP_F_ACCESS_KEYS);
		f.access_keys = c->peer_keys;
		f.n_access_keys = c->n_peers;
	}
	f.blob = t->blob;
	f.blob_len = o->blob;
	if (conn_put(c, &f) < 0)
		return -1;
	c->sent++;
	c->owed += c->n_peers;
	sb_cnt_add(&t->s->c.sent, 1);
	sb_cnt_add(&t->s->c.addressed, c->n_peers);
	return 0;
}

bool sb_conn_window_open(const sb_conn_t *c)
{
	return c->owed < (uint64_t)c->window * c->n_peers;
}

/* Closed loop: sends what the scenario and the phase allow now (open loop: thread_sched). */
int sb_conn_refill(sb_conn_t *c)
{
	const sb_run_t *r = c->t->r;
	const sb_opts_t *o = &r->opt;
	int ph = sb_phase_get(r);

	if (!c->sender || c->state != CS_READY)
		return 0;
	if (o->scenario == SB_QUEUE) {
		if (ph != PH_ENQUEUE)
			return 0;
		while (sb_conn_window_open(c) && c->sent < c->quota)
			if (sb_conn_send_one(c, sb_now_ns()) < 0)
				return -1;
		return 0;
	}
	if ((ph != PH_WARMUP && ph != PH_MEASURE) || sb_open_loop(o))
		return 0;
	while (sb_conn_window_open(c))
		if (sb_conn_send_one(c, sb_now_ns()) < 0)
			return -1;
	return 0;
}

static int conn_hello(sb_conn_t *c)
{
	const sb_opts_t *o = &c->t->r->opt;
	sp_frame_t f = {.type = SP_HELLO};
	static const uint8_t agent[] = "sealpush-bench/" SP_VERSION;

	f.flags = c->send_only ? SP_HELLO_SEND_ONLY : 0;
	f.fields = SP_BIT(SP_F_VERSION) | SP_BIT(SP_F_KEEPALIVE) | SP_BIT(SP_F_AGENT);
	f.version = SP_VERSION_1;
	f.keepalive = 3600;
	f.agent = agent;
	f.agent_len = (uint32_t)(sizeof(agent) - 1);
	if (!c->send_only) {
		f.fields |= SP_BIT(SP_F_WINDOW);
		f.window = (uint16_t)o->recv_window;
		if (o->anonymous) {
			f.fields |= SP_BIT(SP_F_CAPABILITIES);
			f.capabilities = SP_CAP_ANONYMOUS;
		}
	}
	return conn_put(c, &f);
}

void sb_access_key(const uint8_t token[32], uint8_t key[32])
{
	static const char label[] = "sealpush-bench access key";
	uint8_t in[sizeof(label) - 1 + 32];

	memcpy(in, label, sizeof(label) - 1);
	memcpy(in + sizeof(label) - 1, token, 32);
	SHA256(in, sizeof(in), key);
}

/* --anonymous receiver: its access key's verifier, registered as soon as it is ready. */
static int conn_access_set(sb_conn_t *c)
{
	uint8_t key[32], verifier[32], id[SP_MSG_ID_LEN] = {0};
	sp_frame_t f = {.type = SP_ACCESS_SET};

	sb_access_key(c->id->token, key);
	SHA256(key, sizeof(key), verifier);
	f.fields = SP_BIT(SP_F_MSG_ID) | SP_BIT(SP_F_ANON_MODE) | SP_BIT(SP_F_ACCESS_VERIFIERS);
	f.msg_id = id;
	f.anon_mode = SP_ANON_KEY_HOLDERS;
	f.access_verifiers = verifier;
	f.n_access_verifiers = 1;
	return conn_put(c, &f);
}

static int conn_ack_add(sb_conn_t *c, const uint8_t *id)
{
	if (sp_buf_reserve(&c->acks, &c->acks_cap, (c->n_acks + 1) * SP_MSG_ID_LEN, 4096) < 0)
		return -1;
	memcpy(c->acks + c->n_acks * SP_MSG_ID_LEN, id, SP_MSG_ID_LEN);
	c->n_acks++;
	return 0;
}

static int conn_ack_flush(sb_conn_t *c)
{
	size_t done = 0;

	while (done < c->n_acks) {
		size_t n = c->n_acks - done;
		sp_frame_t f = {.type = SP_ACK};

		if (n > SB_ACK_MAX)
			n = SB_ACK_MAX;
		f.fields = SP_BIT(SP_F_MSG_IDS);
		f.msg_ids = c->acks + done * SP_MSG_ID_LEN;
		f.n_msg_ids = (uint32_t)n;
		if (conn_put(c, &f) < 0)
			return -1;
		done += n;
	}
	sb_cnt_add(&c->t->s->c.acked, c->n_acks);
	c->n_acks = 0;
	return 0;
}

static int on_deliver(sb_conn_t *c, const sp_frame_t *f)
{
	const sb_run_t *r = c->t->r;
	const sb_opts_t *o = &r->opt;
	sb_thread_t *t = c->t;
	uint64_t now = sb_now_ns();

	sb_cnt_add(&t->s->c.delivered, 1);
	sb_cnt_set(&t->s->c.last_deliver_ns, now);
	if (o->scenario == SB_QUEUE) {
		uint32_t seq = msg_id_seq(f->msg_id);

		if (memcmp(f->msg_id, r->nonce, 8) != 0 || seq >= o->messages) {
			sb_cnt_add(&t->s->c.stale, 1);
		} else {
			uint8_t a = atomic_load_explicit(&r->arrived[seq], memory_order_relaxed);

			if (a == 0)
				sb_cnt_add(&t->s->c.unique, 1);
			else
				sb_cnt_add(&t->s->c.dups, 1);
			if (a < 255)
				atomic_store_explicit(&r->arrived[seq], (uint8_t)(a + 1),
				                      memory_order_relaxed);
		}
	} else if (sb_phase_get(r) == PH_MEASURE && f->blob_len >= 8 &&
	           memcmp(f->msg_id, r->nonce, 8) == 0) {
		uint64_t ts;

		memcpy(&ts, f->blob, sizeof(ts));
		sb_hist_add(&t->s->hist, now >= ts ? now - ts : 0);
	}
	if (conn_ack_add(c, f->msg_id) < 0) {
		conn_fail(c, "out of memory");
		return -1;
	}
	return 0;
}

static void on_send_result(sb_conn_t *c, const sp_frame_t *f)
{
	const sb_run_t *r = c->t->r;
	const sb_opts_t *o = &r->opt;
	sb_thread_t *t = c->t;

	for (uint32_t i = 0; i < f->n_results; i++) {
		uint16_t index;
		uint8_t st;

		sp_result_get(f, i, &index, &st);
		t->s->status[st]++;
		if (SP_STATUS_IS_ACCEPTED(st))
			sb_cnt_add(&t->s->c.accepted, 1);
		else
			sb_cnt_add(&t->s->c.refused, 1);
		if (o->scenario == SB_QUEUE && memcmp(f->msg_id, r->nonce, 8) == 0) {
			uint32_t seq = msg_id_seq(f->msg_id);

			if (seq < o->messages)
				atomic_store_explicit(&r->qstatus[seq], (uint8_t)(1 + st),
				                      memory_order_relaxed);
		}
	}
	c->owed = c->owed > f->n_results ? c->owed - f->n_results : 0;
	sb_cnt_add(&t->s->c.results, f->n_results);
	sb_cnt_set(&t->s->c.last_result_ns, sb_now_ns());
}

/*
 * Handshake scenario: one connection finished (ticket, or WELCOME with --hello). Counts it,
 * closes it and starts the next one on the same slot. Returns -1: the caller must stop
 * touching the connection it had.
 */
static int conn_hs_done(sb_conn_t *c)
{
	const sb_run_t *r = c->t->r;
	sb_thread_t *t = c->t;
	int ph = sb_phase_get(r);

	if (sp_ctransport_resumed(&c->tr))
		sb_cnt_add(&t->s->c.hs_resumed, 1);
	else
		sb_cnt_add(&t->s->c.hs_full, 1);
	if (ph == PH_MEASURE)
		sb_hist_add(&t->s->hist, sb_now_ns() - c->t_start);
	sb_conn_close(c);
	if (ph == PH_WARMUP || ph == PH_MEASURE)
		sb_conn_start(c);
	return -1;
}

/* Handles one decoded frame. Returns 0, or -1 if the connection died (or was recycled). */
static int conn_frame(sb_conn_t *c, const sp_frame_t *f)
{
	const sb_opts_t *o = &c->t->r->opt;
	char why[320];

	if (c->state == CS_HELLO_SENT) {
		if (f->type != SP_WELCOME) {
			snprintf(why, sizeof(why), "expected WELCOME, got %s",
			         sp_frame_type_name(f->type));
			conn_fail(c, why);
			return -1;
		}
		if (o->scenario == SB_HANDSHAKE)
			return conn_hs_done(c);
		conn_not_starting(c);
		c->state = CS_READY;
		sb_cnt_add(&c->t->s->c.ready, 1);
		if (c->sender) {
			c->window = sb_open_loop(o) ? f->send_window : o->window;
			if (c->window > f->send_window)
				c->window = f->send_window;
		} else if (o->anonymous && !c->send_only) {
			if (!(f->capabilities & SP_CAP_ANONYMOUS)) {
				conn_fail(c, "--anonymous: the relay has no anonymous door");
				return -1;
			}
			return conn_access_set(c);
		}
		return 0;
	}
	switch (f->type) {
	case SP_DELIVER:
		return on_deliver(c, f);
	case SP_SEND_RESULT:
		on_send_result(c, f);
		return 0;
	case SP_PING: {
		sp_frame_t p = {.type = SP_PONG};

		if (f->fields & SP_BIT(SP_F_DATA)) {
			p.fields = SP_BIT(SP_F_DATA);
			p.data = f->data;
		}
		return conn_put(c, &p);
	}
	case SP_PONG:
		return 0;
	case SP_ACCESS_STATE:
		if (f->status != 0) {
			snprintf(why, sizeof(why), "ACCESS_STATE status 0x%02x", f->status);
			conn_fail(c, why);
			return -1;
		}
		return 0;
	case SP_GOAWAY:
		snprintf(why, sizeof(why), "GOAWAY %s", sp_error_name(f->code));
		conn_fail(c, why);
		return -1;
	case SP_ERROR:
		snprintf(why, sizeof(why), "ERROR %s: %.*s", sp_error_name(f->code),
		         (int)f->reason_len, f->reason ? (const char *)f->reason : "");
		conn_fail(c, why);
		return -1;
	default:
		snprintf(why, sizeof(why), "unexpected %s", sp_frame_type_name(f->type));
		conn_fail(c, why);
		return -1;
	}
}

/* Decodes every complete frame in the read buffer. Returns 0 or -1 (dead or recycled). */
static int conn_decode(sb_conn_t *c)
{
	size_t off = 0;

	for (;;) {
		sp_frame_t f;
		size_t used = 0;
		int rc = sp_frame_decode(c->in + off, c->in_len - off, SB_MAX_IN_FRAME, &f, &used);

		if (rc == 0)
			break;
		if (rc < 0) {
			char why[256];

			sp_frame_strerror(rc, &f, why, sizeof(why));
			conn_fail(c, why);
			return -1;
		}
		off += used;
		if (conn_frame(c, &f) < 0)
			return -1;
	}
	if (off > 0) {
		memmove(c->in, c->in + off, c->in_len - off);
		c->in_len -= off;
	}
	return 0;
}

/* Reads what the records received hold. Returns 0 or -1 (dead or recycled). */
static int conn_read(sb_conn_t *c)
{
	for (;;) {
		int n;

		if (sp_buf_reserve(&c->in, &c->in_cap, c->in_len + SB_READ_CHUNK, 4096) < 0) {
			conn_fail(c, "out of memory");
			return -1;
		}
		n = sp_ctransport_read(&c->tr, c->in + c->in_len, c->in_cap - c->in_len);
		if (n > 0) {
			if (c->state == CS_TICKET) {
				conn_fail(c, "data before the session ticket");
				return -1;
			}
			c->in_len += (size_t)n;
			if (conn_decode(c) < 0)
				return -1;
			continue;
		}
		if (n == 0) {
			if (c->state == CS_TICKET && c->got_ticket)
				return conn_hs_done(c);
			return 0;
		}
		conn_fail(c, n == SP_CT_CLOSED ? "closed by the relay (close_notify)"
		                               : "connection broken");
		return -1;
	}
}

/* Returns 1 (handshake done, HELLO queued or waiting for the ticket), 0 (more to do), -1. */
static int conn_handshake(sb_conn_t *c)
{
	const sb_opts_t *o = &c->t->r->opt;
	int rc = sp_ctransport_handshake(&c->tr);

	if (rc == 0)
		return 0;
	if (rc < 0) {
		conn_fail(c, rc == SP_CT_ALPN ? "the relay selected no sealpush/1 ALPN"
		                              : "TLS handshake failed");
		return -1;
	}
	sb_cnt_add(&c->t->s->c.hs_group[sp_ctransport_group(&c->tr)], 1);
	if (o->scenario == SB_HANDSHAKE && !o->hello) {
		c->state = CS_TICKET;
		return 1;
	}
	if (conn_hello(c) < 0)
		return -1;
	c->state = CS_HELLO_SENT;
	return 1;
}

static int conn_connected(sb_conn_t *c)
{
	const sb_run_t *r = c->t->r;
	int rc = sp_ctransport_connected(&c->tr);

	if (rc < 0) {
		conn_fail(c, strerror(-rc));
		return -1;
	}
	/* --anonymous: the senders show no certificate (the relay's anonymous door) */
	rc = sp_ctransport_tls_begin(&c->tr, r->ctx, r->opt.host, r->opt.host_is_ip,
	                             c->sender && r->opt.anonymous ? NULL : c->id->cert,
	                             c->sender && r->opt.anonymous ? NULL : c->id->key, c->sess, c);
	if (rc < 0) {
		conn_fail(c, "SSL setup failed");
		return -1;
	}
	c->state = CS_HANDSHAKE;
	event_add(c->tr.rev, NULL);
	return 0;
}

/* Handshake scenario: keeps the newest ticket of the slot with --resume (else drops it). */
int sb_conn_on_new_session(SSL *ssl, SSL_SESSION *sess)
{
	sb_conn_t *c = SSL_get_app_data(ssl);

	if (c == NULL)
		return 0;
	c->got_ticket = true;
	if (!c->t->r->opt.resume)
		return 0;
	SSL_SESSION_free(c->sess);
	c->sess = sess;
	return 1;
}

static void conn_io(evutil_socket_t fd, short what, void *arg)
{
	sb_conn_t *c = arg;
	int rc;

	(void)fd;
	if (c->state == CS_CONNECTING) {
		if (conn_connected(c) < 0)
			return;
	}
	if ((what & EV_READ) && (rc = sp_ctransport_recv(&c->tr)) < 0) {
		conn_fail(c, rc == SP_CT_NOMEM ? "out of memory" : strerror(c->tr.err));
		return;
	}
	if (c->state == CS_HANDSHAKE) {
		int r = conn_handshake(c);

		if (r <= 0)
			return;
	}
	if (c->state != CS_HELLO_SENT && c->state != CS_READY && c->state != CS_TICKET)
		return;
	if ((what & EV_WRITE) && sb_conn_flush(c) < 0)
		return;
	if (conn_read(c) < 0)
		return;
	if (c->n_acks > 0 && conn_ack_flush(c) < 0)
		return;
	if (sb_conn_refill(c) < 0)
		return;
	if (sb_conn_flush(c) == 0 && !c->starting)
		sb_thread_pump(c->t);
}

bool sb_conn_has_output(const sb_conn_t *c)
{
	return sp_ctransport_pending(&c->tr);
}

void sb_conn_init(sb_conn_t *c)
{
	sp_ctransport_init(&c->tr, 0); /* buffers stay: no allocation per burst */
}

void sb_conn_free(sb_conn_t *c)
{
	sp_ctransport_release(&c->tr);
	free(c->in);
	free(c->acks);
	free(c->peer_tokens);
	free(c->peer_keys);
	SSL_SESSION_free(c->sess);
}
