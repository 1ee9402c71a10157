/*
 * sp_conn.c: one client connection's I/O: handshake, reading frames, writing frames, closing.
 * Below it is the transport (sp_transport.h: OpenSSL, then the record layer), reached only
 * through sp_tio_*(); above it the session (sp_session.c), which sees frames and calls
 * sp_conn_send/close. Nothing here knows OpenSSL.
 *
 * Buffers: reads go through the worker's shared scratch buffer and are decoded in place; only
 * a frame split across reads is copied, into the connection's decoder, which frees its buffer
 * again once the frame is complete. Frames are encoded straight into one contiguous output
 * array per connection, handed to the transport in one piece (as few TLS records as possible);
 * the array is kept while the connection is busy, so a stream of messages allocates nothing,
 * and the worker's tick frees it once it is empty. An idle connection thus holds no I/O
 * buffer at all (and OpenSSL releases its own, SSL_MODE_RELEASE_BUFFERS).
 *
 * Closing: sp_conn_close() queues an ERROR (or nothing), stops reading, detaches the session
 * (unregisters the token, reroutes unacknowledged messages) and flushes; once the output is
 * written, sp_conn_finish() sends close_notify, closes the socket and puts the connection on
 * the worker's reap list. It is freed by sp_worker_after(), never inside its own callbacks.
 * A close that cannot flush (the peer does not read) is finished by the tick after 2 s.
 *
 * Admission (reconnect storms): a worker runs at most max_handshakes TLS handshakes at a time
 * (w->hs_running). A connection accepted beyond that is deferred: it is a connection in
 * SP_CS_HANDSHAKE with SP_CF_DEFERRED, its socket open and unread and no transport yet (so no
 * OpenSSL state), in the worker's FIFO (hs_head/hs_tail). Every handshake that ends, done or
 * failed, leaves SP_CS_HANDSHAKE through sp_conn_set_state(), which starts the oldest waiting
 * connection; its ClientHello is in the socket already. Handshake events run at the base's
 * lower priority (SP_PRIO_HANDSHAKE), so a loop turn serves connected devices first and
 * libevent looks for their events again after a few handshake steps (sp_worker.c).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sp_conn.h"
#include "sp_identity.h"
#include "sp_log.h"
#include "sp_session.h"

#define OUT_MIN 4096 /* first output allocation */

static void on_read(evutil_socket_t fd, short what, void *arg);
static void on_write(evutil_socket_t fd, short what, void *arg);

static void hs_unqueue(sp_conn_t *c)
{
	sp_worker_t *w = c->w;

	if (c->hs_prev)
		c->hs_prev->hs_next = c->hs_next;
	else
		w->hs_head = c->hs_next;
	if (c->hs_next)
		c->hs_next->hs_prev = c->hs_prev;
	else
		w->hs_tail = c->hs_prev;
	c->hs_prev = c->hs_next = NULL;
	c->flags &= (uint8_t)~SP_CF_DEFERRED;
	w->hs_waiting--;
	sp_metric_add(&w->metrics, SP_M_HANDSHAKE_WAITING, -1);
}

/* Starts c's handshake: its transport, its read event. Counts it running even on failure
 * (-1): the caller then finishes c, which ends the count. */
static int hs_start(sp_conn_t *c)
{
	sp_worker_t *w = c->w;

	w->hs_running++;
	sp_metric_inc(&w->metrics, SP_M_HANDSHAKE_IN_FLIGHT);
	c->t_state = w->now;
	if (sp_tio_accept(&c->io, &w->tio_env, c->io.fd) < 0 || event_add(&c->ev_read, NULL) < 0)
		return -1;
	return 0;
}

/* A running handshake ended: start waiting connections while there is room. */
static void hs_ended(sp_worker_t *w)
{
	int64_t max = w->srv->cfg.max_handshakes;

	w->hs_running--;
	sp_metric_add(&w->metrics, SP_M_HANDSHAKE_IN_FLIGHT, -1);
	while (w->hs_head && !w->draining && (max == 0 || w->hs_running < (uint64_t)max)) {
		sp_conn_t *c = w->hs_head;

		hs_unqueue(c);
		if (hs_start(c) < 0) {
			c->close_reason = SP_CLOSE_INTERNAL;
			sp_conn_finish(c); /* ends its count: back here for the next one */
		}
	}
}

void sp_conn_set_state(sp_conn_t *c, enum sp_conn_state s)
{
	sp_metrics_t *m = &c->w->metrics;
	bool hs_end = c->state == SP_CS_HANDSHAKE && s != SP_CS_HANDSHAKE;

	sp_metric_add(m, SP_M_CONNECTIONS + c->state, -1);
	sp_metric_inc(m, SP_M_CONNECTIONS + s);
	c->state = (uint8_t)s;
	c->t_state = c->w->now;
	if (hs_end) {
		if (c->flags & SP_CF_DEFERRED)
			hs_unqueue(c); /* it never started */
		else
			hs_ended(c->w);
	}
}

void sp_conn_accept(sp_worker_t *w, int fd, bool anon)
{
	sp_server_t *srv = w->srv;
	sp_conn_t *c;
	int one = 1;

	if (atomic_load(&srv->draining)) {
		sp_metric_inc(&w->metrics, SP_M_CONN_REFUSED_DRAIN);
		close(fd);
		return;
	}
	if (atomic_fetch_add(&srv->n_conns, 1) >= srv->cfg.max_connections) {
		atomic_fetch_sub(&srv->n_conns, 1);
		sp_metric_inc(&w->metrics, SP_M_CONN_REFUSED_MAX);
		sp_metric_inc(&w->metrics, SP_M_LIMIT_HITS + SP_LIMIT_MAX_CONNECTIONS);
		close(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		goto fail;
	c->w = w;
	c->io.fd = fd;
	c->anon = anon;
	if (anon)
		c->io.flags |= SP_TIO_ANON; /* no certificate asked, no session resumed */
	c->state = SP_CS_HANDSHAKE;
	c->t_state = w->now;
	sp_decoder_init(&c->dec, SP_PREHELLO_MAX_FRAME);
	if (sp_worker_slot_alloc(w, c) < 0)
		goto fail;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	event_assign(&c->ev_read, w->base, fd, EV_READ | EV_PERSIST, on_read, c);
	event_assign(&c->ev_write, w->base, fd, EV_WRITE | EV_PERSIST, on_write, c);
	event_priority_set(&c->ev_read, SP_PRIO_HANDSHAKE);
	event_priority_set(&c->ev_write, SP_PRIO_HANDSHAKE);
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	w->n_conns++;
	sp_metric_inc(&w->metrics, SP_M_CONN_ACCEPTED);
	sp_metric_inc(&w->metrics, SP_M_CONNECTIONS + SP_CS_HANDSHAKE);
	if (w->srv->cfg.max_handshakes > 0 &&
	    w->hs_running >= (uint64_t)w->srv->cfg.max_handshakes) {
		c->flags |= SP_CF_DEFERRED;
		c->hs_prev = w->hs_tail;
		if (w->hs_tail)
			w->hs_tail->hs_next = c;
		else
			w->hs_head = c;
		w->hs_tail = c;
		w->hs_waiting++;
		sp_metric_inc(&w->metrics, SP_M_HANDSHAKE_DEFERRED);
		sp_metric_inc(&w->metrics, SP_M_HANDSHAKE_WAITING);
		sp_metric_inc(&w->metrics, SP_M_LIMIT_HITS + SP_LIMIT_MAX_HANDSHAKES);
		return;
	}
	if (hs_start(c) < 0) {
		c->close_reason = SP_CLOSE_INTERNAL;
		sp_conn_finish(c);
	}
	return;
fail:
	free(c);
	atomic_fetch_sub(&srv->n_conns, 1);
	sp_metric_inc(&w->metrics, SP_M_CONN_CLOSED + SP_CLOSE_INTERNAL);
	close(fd);
}

static void want_write(sp_conn_t *c, bool on)
{
	if (on && !(c->flags & SP_CF_WRITE_WAIT)) {
		event_add(&c->ev_write, NULL);
		c->flags |= SP_CF_WRITE_WAIT;
	} else if (!on && (c->flags & SP_CF_WRITE_WAIT)) {
		event_del(&c->ev_write);
		c->flags &= (uint8_t)~SP_CF_WRITE_WAIT;
	}
}

/* The connection broke (reset, EOF without close_notify, TLS error): no goodbye possible. */
static void conn_broken(sp_conn_t *c)
{
	if (c->state != SP_CS_CLOSING)
		c->close_reason = SP_CLOSE_PEER;
	sp_conn_finish(c);
}

/* The peer broke the record layer (the transport sent the alert). */
static void conn_protocol(sp_conn_t *c)
{
	sp_metric_inc(&c->w->metrics, SP_M_RECORD_ERRORS);
	if (c->state != SP_CS_CLOSING)
		c->close_reason = SP_CLOSE_PROTOCOL;
	sp_conn_finish(c);
}

static void handshake_failed(sp_conn_t *c, enum sp_handshake_cause cause)
{
	sp_worker_t *w = c->w;

	sp_metric_inc(&w->metrics, SP_M_HANDSHAKE_FAIL + cause);
	if (cause == SP_HS_TIMEOUT)
		sp_metric_inc(&w->metrics, SP_M_LIMIT_HITS + SP_LIMIT_HANDSHAKE_TIMEOUT);
	SP_LOG(SP_LOG_DEBUG, "handshake_failed", "worker=%d cause=%d", w->id, (int)cause);
	c->close_reason = SP_CLOSE_HANDSHAKE;
	sp_conn_finish(c);
}

static void handshake_step(sp_conn_t *c)
{
	sp_peer_t peer;

	switch (sp_tio_handshake(&c->io, &peer)) {
	case SP_IO_WANT_READ:
		want_write(c, false);
		return;
	case SP_IO_WANT_WRITE:
		want_write(c, true);
		return;
	case SP_IO_DONE:
		break;
	default:
		handshake_failed(c, (enum sp_handshake_cause)c->io.hs_cause);
		return;
	}
	want_write(c, false);
	/* Connected now: its events run with the other connected devices' (not active here: a
	 * persistent event is off the active queue while its callback runs). */
	event_priority_set(&c->ev_read, SP_PRIO_CONN);
	event_priority_set(&c->ev_write, SP_PRIO_CONN);
	memcpy(c->token, peer.token, sizeof(c->token));
	memcpy(c->serial, peer.serial, sizeof(c->serial));
	c->serial_len = peer.serial_len;
	memcpy(c->ca_serial, peer.ca_serial, sizeof(c->ca_serial));
	c->ca_serial_len = peer.ca_serial_len;
	sp_metric_inc(&c->w->metrics, SP_M_HANDSHAKE_OK);
	sp_metric_inc(&c->w->metrics,
	              SP_M_HANDSHAKE_GROUP + (peer.group < SP_TG_COUNT ? peer.group : SP_TG_OTHER));
	if (peer.resumed) {
		c->flags |= SP_CF_RESUMED;
		sp_metric_inc(&c->w->metrics, SP_M_HANDSHAKE_RESUMED);
	}
	if (peer.handed_off)
		sp_metric_inc(&c->w->metrics, SP_M_HANDOFFS);
	sp_conn_set_state(c, SP_CS_AWAITING_HELLO);
}

/* Whether c still takes input (not closing, not finished). */
static bool conn_open(const sp_conn_t *c)
{
	return c->state < SP_CS_CLOSING && !(c->flags & SP_CF_FINISHED);
}

/* The transport's input function: decodes and dispatches every complete frame in buf; keeps
 * a partial one in the decoder. Returns whether c wants more. */
static bool conn_input(void *arg, const uint8_t *buf, size_t n)
{
	sp_conn_t *c = arg;
	sp_frame_t f;
	size_t used;
	int r;

	sp_metric_add(&c->w->metrics, SP_M_BYTES_IN, (int64_t)n);
	while (n > 0 && c->state < SP_CS_CLOSING) {
		if (sp_decoder_idle(&c->dec)) {
			/* Fast path: the frame is whole in the read buffer, decode it in place. */
			r = sp_frame_decode(buf, n, c->dec.max_frame, &f, &used);
			if (r != 0) {
				if (r == 1)
					sp_session_frame(c, &f);
				else
					sp_session_decode_error(c, r, &f);
				if (used == 0)
					return false; /* FRAME_TOO_LARGE: the connection is closing
					               */
				buf += used;
				n -= used;
				continue;
			}
		}
		r = sp_decoder_feed(&c->dec, buf, n, &used, &f);
		buf += used;
		n -= used;
		if (r == 1)
			sp_session_frame(c, &f);
		else if (r < 0)
			sp_session_decode_error(c, r, &f);
		if (r < 0 && c->dec.err)
			return false;
	}
	if (sp_decoder_idle(&c->dec))
		sp_decoder_release(&c->dec);
	return conn_open(c);
}

static void conn_read(sp_conn_t *c)
{
	int r = sp_tio_read(&c->io, conn_input, c);

	if (c->flags & SP_CF_FINISHED)
		return;
	if (c->io.flags & SP_TIO_KEY_UPDATE)
		sp_conn_mark_dirty(c); /* the peer asked for our KeyUpdate */
	switch (r) {
	case SP_IO_AGAIN:
		if (conn_open(c))
			event_active(&c->ev_read, EV_READ, 1); /* out of budget: come back later */
		break;
	case SP_IO_WANT_WRITE:
		c->flags |= SP_CF_READ_WAIT;
		want_write(c, true);
		break;
	case SP_IO_CLOSED: /* close_notify: answer with ours once our output is written */
		sp_conn_close(c, SP_CLOSE_PEER, 0, NULL);
		break;
	case SP_IO_BROKEN:
		conn_broken(c);
		break;
	case SP_IO_PROTOCOL:
		conn_protocol(c);
		break;
	default: /* drained, or the connection wants no more */
		break;
	}
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
	sp_conn_t *c = arg;
	sp_worker_t *w = c->w;

	(void)fd;
	(void)what;
	w->now = sp_now_ms();
	if (c->state == SP_CS_HANDSHAKE)
		handshake_step(c);
	if (c->state > SP_CS_HANDSHAKE && c->state < SP_CS_CLOSING && !(c->flags & SP_CF_FINISHED))
		conn_read(c);
	sp_worker_after(w);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
	sp_conn_t *c = arg;
	sp_worker_t *w = c->w;

	(void)fd;
	(void)what;
	w->now = sp_now_ms();
	if (c->state == SP_CS_HANDSHAKE) {
		handshake_step(c);
	} else {
		if (c->flags & SP_CF_READ_WAIT) {
			c->flags &= (uint8_t)~SP_CF_READ_WAIT;
			conn_read(c);
		}
		if (!(c->flags & SP_CF_FINISHED))
			sp_conn_flush(c);
	}
	sp_worker_after(w);
}

uint64_t sp_conn_output_bytes(const sp_conn_t *c)
{
	return (uint64_t)(c->out_len - c->out_off) + c->pending_bytes;
}

void sp_conn_release_output(sp_conn_t *c)
{
	if (c->out && c->out_off == c->out_len) {
		free(c->out);
		c->out = NULL;
		c->out_off = c->out_len = c->out_cap = 0;
	}
}

/* Room for `need` more bytes at out + out_len: compacts, then grows (doubling). */
static int out_reserve(sp_conn_t *c, size_t need)
{
	size_t want, cap;
	uint8_t *p;

	if (c->out_cap - c->out_len >= need)
		return 0;
	if (c->out_off) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
		if (c->out_cap - c->out_len >= need)
			return 0;
	}
	want = (size_t)c->out_len + need;
	if (want > UINT32_MAX / 2)
		return -ENOMEM;
	for (cap = c->out_cap ? c->out_cap : OUT_MIN; cap < want; cap *= 2)
		;
	p = realloc(c->out, cap);
	if (!p)
		return -ENOMEM;
	c->out = p;
	c->out_cap = (uint32_t)cap;
	return 0;
}

void sp_conn_mark_dirty(sp_conn_t *c)
{
	if (c->flags & (SP_CF_DIRTY | SP_CF_FINISHED))
		return;
	c->flags |= SP_CF_DIRTY;
	c->dirty_next = c->w->dirty;
	c->w->dirty = c;
}

int sp_conn_send(sp_conn_t *c, sp_frame_t *f)
{
	sp_worker_t *w = c->w;
	size_t need = 0;
	int r;

	if (c->flags & SP_CF_FINISHED)
		return -EPIPE;
	/* Usually the buffer has room: one encoding pass; otherwise grow to what it said. */
	r = sp_frame_encode(f, c->out ? c->out + c->out_len : NULL,
	                    c->out ? c->out_cap - c->out_len : 0, &need);
	if (r == -SP_ERR_NOSPACE) {
		if (out_reserve(c, need) < 0)
			return -ENOMEM;
		r = sp_frame_encode(f, c->out + c->out_len, need, &need);
	}
	if (r < 0) {
		char why[160];

		SP_LOG(SP_LOG_ERROR, "encode_failed", "worker=%d msg=\"%s\"", w->id,
		       sp_frame_strerror(r, f, why, sizeof(why)));
		return -EINVAL;
	}
	c->out_len += (uint32_t)need;
	sp_metric_inc(&w->metrics, SP_M_FRAMES_OUT + sp_metric_frame_index(f->type));
	sp_conn_mark_dirty(c);
	/* ERROR and GOAWAY are how a connection ends: never refused for the cap. */
	if (f->type != SP_ERROR && f->type != SP_GOAWAY)
		return sp_conn_check_output(c);
	return 0;
}

int sp_conn_check_output(sp_conn_t *c)
{
	sp_worker_t *w = c->w;

	/* A peer that does not read cannot make us buffer without bound. */
	if (sp_conn_output_bytes(c) <= (uint64_t)w->srv->cfg.output_buffer_max)
		return 0;
	sp_metric_inc(&w->metrics, SP_M_LIMIT_HITS + SP_LIMIT_OUTPUT_BUFFER);
	sp_conn_close(c, SP_CLOSE_SLOW_CONSUMER, SP_ERR_SLOW_CONSUMER,
	              "the output buffer cap was reached: the connection does not read");
	return -ENOBUFS;
}

void sp_conn_flush(sp_conn_t *c)
{
	size_t taken = 0;
	int r;

	if (c->flags & SP_CF_FINISHED || c->state == SP_CS_HANDSHAKE)
		return;
	r = sp_tio_write(&c->io, c->out ? c->out + c->out_off : NULL, c->out_len - c->out_off,
	                 &taken);
	c->out_off += (uint32_t)taken;
	sp_metric_add(&c->w->metrics, SP_M_BYTES_OUT, (int64_t)taken);
	switch (r) {
	case SP_IO_DONE:
		break;
	case SP_IO_WANT_WRITE:
		want_write(c, true);
		return;
	case SP_IO_WANT_READ:
		return; /* the read event is armed; the write resumes from there */
	case SP_IO_PROTOCOL:
		conn_protocol(c);
		return;
	default:
		conn_broken(c);
		return;
	}
	c->out_off = c->out_len = 0;
	want_write(c, false);
	if (c->state == SP_CS_CLOSING)
		sp_conn_finish(c);
}

void sp_conn_error(sp_conn_t *c, unsigned code, bool closing, const char *reason,
                   const sp_frame_t *about)
{
	sp_frame_t f = {.type = SP_ERROR,
	                .flags = closing ? SP_ERROR_CLOSING : 0,
	                .fields = SP_BIT(SP_F_CODE),
	                .code = (uint16_t)code};

	if (reason) {
		f.fields |= SP_BIT(SP_F_REASON);
		f.reason = (const uint8_t *)reason;
		f.reason_len = (uint32_t)strnlen(reason, SP_REASON_MAX);
	}
	if (about) {
		f.fields |= SP_BIT(SP_F_FRAME_TYPE);
		f.frame_type = about->type;
		if (about->msg_id) {
			f.fields |= SP_BIT(SP_F_MSG_ID);
			f.msg_id = about->msg_id;
		}
	}
	sp_metric_inc(&c->w->metrics, SP_M_ERRORS_SENT + sp_metric_error_index(code));
	sp_conn_send(c, &f);
}

void sp_conn_goaway(sp_conn_t *c, unsigned code, uint32_t retry_after_ms)
{
	sp_frame_t f = {.type = SP_GOAWAY, .fields = SP_BIT(SP_F_CODE), .code = (uint16_t)code};

	if (c->state != SP_CS_READY && c->state != SP_CS_DRAINING)
		return;
	if (retry_after_ms) {
		f.fields |= SP_BIT(SP_F_RETRY_AFTER);
		f.retry_after = retry_after_ms;
	}
	sp_metric_inc(&c->w->metrics, SP_M_ERRORS_SENT + sp_metric_error_index(code));
	sp_conn_send(c, &f);
	if (c->state == SP_CS_READY)
		sp_conn_set_state(c, SP_CS_DRAINING);
}

void sp_conn_close(sp_conn_t *c, enum sp_close_reason why, unsigned code, const char *reason)
{
	if (c->state == SP_CS_CLOSING || (c->flags & SP_CF_FINISHED))
		return;
	c->close_reason = (uint8_t)why;
	if (c->state == SP_CS_HANDSHAKE) {
		sp_conn_finish(c);
		return;
	}
	if (code)
		sp_conn_error(c, code, true, reason, NULL);
	event_del(&c->ev_read);
	sp_conn_set_state(c, SP_CS_CLOSING);
	sp_session_detach(c);
	if (why == SP_CLOSE_SLOW_CONSUMER) {
		/* Its output is stuck by definition: try once, then drop it. */
		sp_conn_flush(c);
		sp_conn_finish(c);
		return;
	}
	sp_conn_flush(c);
}

void sp_conn_finish(sp_conn_t *c)
{
	sp_worker_t *w = c->w;
	enum sp_conn_state was = c->state;

	if (c->flags & SP_CF_FINISHED)
		return;
	if (c->state != SP_CS_CLOSING) {
		sp_conn_set_state(c, SP_CS_CLOSING);
		sp_session_detach(c);
	}
	if (was != SP_CS_HANDSHAKE)
		sp_tio_shutdown(&c->io); /* one non-blocking close_notify, if it may be sent */
	event_del(&c->ev_read);
	event_del(&c->ev_write);
	close(c->io.fd);
	c->io.fd = -1;
	c->flags |= SP_CF_FINISHED;
	sp_metric_inc(&w->metrics, SP_M_CONN_CLOSED + c->close_reason);
	sp_metric_add(&w->metrics, SP_M_CONNECTIONS + SP_CS_CLOSING, -1);
	atomic_fetch_sub(&w->srv->n_conns, 1);
	c->reap_next = w->reap;
	w->reap = c;
}

void sp_conn_free(sp_conn_t *c)
{
	sp_worker_t *w;

	if (!c)
		return;
	w = c->w;
	if (c->prev)
		c->prev->next = c->next;
	else if (w->conns == c)
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	w->n_conns--;
	sp_worker_slot_free(w, c);
	sp_tio_free(&c->io);
	free(c->out);
	sp_decoder_release(&c->dec);
	free(c);
}
