/*
 * sp_conn.c: one client connection's I/O: TLS handshake, reading frames, writing frames,
 * closing. The session logic (sp_session.c) sees frames and calls sp_conn_send/close; it
 * never touches SSL.
 *
 * Buffers: reads go through the worker's shared scratch buffer and are decoded in place; only
 * a frame split across reads is copied, into the connection's decoder, which frees its buffer
 * again once the frame is complete. Frames are encoded straight into one contiguous output
 * array per connection, written with as few SSL_write calls (and TLS records) as possible;
 * the array is kept while the connection is busy, so a stream of messages allocates nothing,
 * and the worker's tick frees it once it is empty. An idle connection thus holds no I/O
 * buffer at all (and OpenSSL releases its own, SSL_MODE_RELEASE_BUFFERS).
 *
 * Closing: sp_conn_close() queues an ERROR (or nothing), stops reading, detaches the session
 * (unregisters the token, reroutes unacknowledged messages) and flushes; once the output is
 * written, sp_conn_finish() sends close_notify, closes the socket and puts the connection on
 * the worker's reap list. It is freed by sp_worker_after(), never inside its own callbacks.
 * A close that cannot flush (the peer does not read) is finished by the tick after 2 s.
 */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sp_identity.h"
#include "sp_log.h"
#include "sp_server.h"

#define SCRATCH_SIZE   SP_WORKER_SCRATCH
#define SEAL_SIZE      SP_WORKER_SEAL
#define READS_PER_CALL 16
#define OUT_MIN        4096 /* first output allocation */

#define CF_NO_SHUTDOWN 0x80 /* a fatal TLS error happened: no close_notify (OpenSSL forbids) */

static void on_read(evutil_socket_t fd, short what, void *arg);
static void conn_input(sp_conn_t *c, const uint8_t *buf, size_t n);
static void on_write(evutil_socket_t fd, short what, void *arg);

void sp_conn_set_state(sp_conn_t *c, enum sp_conn_state s)
{
	sp_metrics_t *m = &c->w->metrics;

	sp_metric_add(m, SP_M_CONNECTIONS + c->state, -1);
	sp_metric_inc(m, SP_M_CONNECTIONS + s);
	c->state = (uint8_t)s;
	c->t_state = c->w->now;
}

void sp_conn_accept(sp_worker_t *w, int fd)
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
	c->fd = fd;
	c->hs_cause = SP_HS_OTHER;
	c->state = SP_CS_HANDSHAKE;
	c->t_state = w->now;
	sp_decoder_init(&c->dec, SP_PREHELLO_MAX_FRAME);
	if (sp_worker_slot_alloc(w, c) < 0)
		goto fail;
	c->hs = calloc(1, sizeof(*c->hs));
	c->ssl = c->hs ? sp_tls_new(srv, c) : NULL;
	if (!c->ssl) {
		free(c->hs);
		sp_worker_slot_free(w, c);
		goto fail;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	event_assign(&c->ev_read, w->base, fd, EV_READ | EV_PERSIST, on_read, c);
	event_assign(&c->ev_write, w->base, fd, EV_WRITE | EV_PERSIST, on_write, c);
	if (event_add(&c->ev_read, NULL) < 0) {
		SSL_free(c->ssl);
		sp_worker_slot_free(w, c);
		goto fail;
	}
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	w->n_conns++;
	sp_metric_inc(&w->metrics, SP_M_CONN_ACCEPTED);
	sp_metric_inc(&w->metrics, SP_M_CONNECTIONS + SP_CS_HANDSHAKE);
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
static void conn_broken(sp_conn_t *c, int ssl_err)
{
	if (ssl_err == SSL_ERROR_SSL || ssl_err == SSL_ERROR_SYSCALL)
		c->flags |= CF_NO_SHUTDOWN;
	if (c->state != SP_CS_CLOSING)
		c->close_reason = SP_CLOSE_PEER;
	sp_conn_finish(c);
}

static void handshake_failed(sp_conn_t *c, enum sp_handshake_cause cause)
{
	sp_worker_t *w = c->w;

	sp_metric_inc(&w->metrics, SP_M_HANDSHAKE_FAIL + cause);
	if (cause == SP_HS_TIMEOUT)
		sp_metric_inc(&w->metrics, SP_M_LIMIT_HITS + SP_LIMIT_HANDSHAKE_TIMEOUT);
	SP_LOG(SP_LOG_DEBUG, "handshake_failed", "worker=%d cause=%d", w->id, (int)cause);
	ERR_clear_error();
	c->close_reason = SP_CLOSE_HANDSHAKE;
	sp_conn_finish(c);
}

static void handshake_step(sp_conn_t *c)
{
	int r, e, cause;

	ERR_clear_error();
	r = SSL_do_handshake(c->ssl);
	if (r != 1) {
		e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_WANT_READ) {
			want_write(c, false);
			return;
		}
		if (e == SSL_ERROR_WANT_WRITE) {
			want_write(c, true);
			return;
		}
		c->flags |= CF_NO_SHUTDOWN;
		handshake_failed(c, sp_tls_failure_cause(c, e));
		return;
	}
	want_write(c, false);
	cause = sp_tls_established(c->w->srv, c);
	if (cause < 0) {
		handshake_failed(c, (enum sp_handshake_cause) - cause);
		return;
	}
	sp_metric_inc(&c->w->metrics, SP_M_HANDSHAKE_OK);
	if (c->flags & SP_CF_RESUMED)
		sp_metric_inc(&c->w->metrics, SP_M_HANDSHAKE_RESUMED);
	/* From here on the record layer is ours (an idle connection then holds ~1 KiB instead
	 * of OpenSSL's ~23 KiB); if that cannot be done safely, OpenSSL carries on. */
	if (sp_tls_handoff(c) == 0)
		sp_metric_inc(&c->w->metrics, SP_M_HANDOFFS);
	sp_conn_set_state(c, SP_CS_AWAITING_HELLO);
}

/* ---- record layer (after the hand-off) ---------------------------------------------------- */

static void rl_fatal(sp_conn_t *c, int err)
{
	static const uint8_t alert_of[] = {
	        [SP_RL_ERR_DECODE] = 50,     /* decode_error */
	        [SP_RL_ERR_DECRYPT] = 20,    /* bad_record_mac */
	        [SP_RL_ERR_UNEXPECTED] = 10, /* unexpected_message */
	        [SP_RL_ERR_OVERFLOW] = 22,   /* record_overflow */
	        [SP_RL_ERR_INTERNAL] = 80,   /* internal_error */
	};
	unsigned e = (unsigned)-err;
	uint8_t alert[2] = {2, e < sizeof(alert_of) && alert_of[e] ? alert_of[e] : 80};
	uint8_t rec[2 + SP_RL_OVERHEAD];
	int n = sp_rl_seal(&c->rl, c->w->rlcx, SP_RL_CT_ALERT, alert, 2, rec, sizeof(rec));

	sp_metric_inc(&c->w->metrics, SP_M_RECORD_ERRORS);
	if (n > 0 && c->wpend_off == c->wpend_len) {
		ssize_t r = write(c->fd, rec, (size_t)n); /* best effort, then gone */

		(void)r;
	}
	c->flags |= CF_NO_SHUTDOWN;
	if (c->state != SP_CS_CLOSING)
		c->close_reason = SP_CLOSE_PROTOCOL;
	sp_conn_finish(c);
}

/* A handshake message after the handshake: only KeyUpdate (RFC 8446 4.6.3) is allowed. */
static int rl_handshake(sp_conn_t *c, const uint8_t *p, size_t n)
{
	if (n != 5 || p[0] != 24 || p[1] != 0 || p[2] != 0 || p[3] != 1 || p[4] > 1)
		return -SP_RL_ERR_UNEXPECTED;
	if (sp_rl_update(&c->rl, c->w->rlcx, SP_RL_READ) < 0)
		return -SP_RL_ERR_INTERNAL;
	if (p[4] == 1 && !(c->rl_flags & SP_RLF_KEY_UPDATE)) {
		c->rl_flags |= SP_RLF_KEY_UPDATE;
		sp_conn_mark_dirty(c);
	}
	return 0;
}

/* Decrypts and dispatches the complete record rec[0..len). Returns 0 or a negative error;
 * may end the connection (close_notify). */
static int rl_record(sp_conn_t *c, uint8_t *rec, size_t len)
{
	uint8_t type, *plain;
	int n = sp_rl_open(&c->rl, c->w->rlcx, rec, len, &type, &plain);

	if (n < 0)
		return n;
	switch (type) {
	case SP_RL_CT_APPDATA:
		sp_metric_add(&c->w->metrics, SP_M_BYTES_IN, n);
		conn_input(c, plain, (size_t)n);
		return 0;
	case SP_RL_CT_HANDSHAKE:
		return rl_handshake(c, plain, (size_t)n);
	case SP_RL_CT_ALERT:
		if (n != 2)
			return -SP_RL_ERR_DECODE;
		if (plain[1] == 0) { /* close_notify: answer with ours once our output is out */
			sp_conn_close(c, SP_CLOSE_PEER, 0, NULL);
			return 0;
		}
		if (plain[1] == 90) /* user_canceled: a warning, close_notify follows */
			return 0;
		c->flags |= CF_NO_SHUTDOWN; /* a fatal alert from the peer */
		c->close_reason = SP_CLOSE_PEER;
		sp_conn_finish(c);
		return 0;
	default:
		return -SP_RL_ERR_UNEXPECTED;
	}
}

static void rl_read(sp_conn_t *c)
{
	sp_worker_t *w = c->w;

	for (int i = 0; i < READS_PER_CALL && c->state < SP_CS_CLOSING; i++) {
		uint8_t *p = w->scratch;
		size_t have, want = SCRATCH_SIZE;
		ssize_t n;
		int r;

		if (c->rin) {
			/* Finish the partial record first, reading no more than it needs. */
			int total = sp_rl_record_len(c->rin, c->rin_len);

			want = total > 0 ? (size_t)total - c->rin_len : SP_RL_HEADER - c->rin_len;
			p = c->rin + c->rin_len;
		}
		n = read(c->fd, p, want);
		if (n == 0) {
			conn_broken(c, SSL_ERROR_SYSCALL); /* EOF without close_notify */
			return;
		}
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				return;
			conn_broken(c, SSL_ERROR_SYSCALL);
			return;
		}
		if (c->rin) {
			int total;

			c->rin_len += (uint32_t)n;
			total = sp_rl_record_len(c->rin, c->rin_len);
			if (total < 0) {
				rl_fatal(c, total);
				return;
			}
			if (total == 0 || c->rin_len < (uint32_t)total)
				continue;
			r = rl_record(c, c->rin, (size_t)total);
			free(c->rin);
			c->rin = NULL;
			c->rin_len = 0;
			if (r < 0) {
				rl_fatal(c, r);
				return;
			}
			continue;
		}
		/* Whole records in the scratch buffer are decrypted in place. */
		have = (size_t)n;
		while (have > 0 && c->state < SP_CS_CLOSING && !(c->flags & SP_CF_FINISHED)) {
			int total = sp_rl_record_len(p, have);

			if (total < 0) {
				rl_fatal(c, total);
				return;
			}
			if (total == 0 || (size_t)total > have) {
				c->rin = malloc(SP_RL_HEADER + SP_RL_MAX_CIPHER);
				if (!c->rin) {
					rl_fatal(c, -SP_RL_ERR_INTERNAL);
					return;
				}
				memcpy(c->rin, p, have);
				c->rin_len = (uint32_t)have;
				break;
			}
			r = rl_record(c, p, (size_t)total);
			if (r < 0) {
				rl_fatal(c, r);
				return;
			}
			p += total;
			have -= (size_t)total;
		}
		if ((size_t)n < want)
			return; /* the socket is drained */
	}
	if (c->state < SP_CS_CLOSING && !(c->flags & SP_CF_FINISHED))
		event_active(&c->ev_read, EV_READ, 1); /* out of budget: come back later */
}

/* Writes what the socket takes; keeps the rest in wpend. Returns 1 if all went, 0 if the
 * socket is full, -1 if the connection broke. */
static int rl_write(sp_conn_t *c, const uint8_t *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(c->fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				return -1;
			break;
		}
		p += n;
		len -= (size_t)n;
	}
	if (len == 0)
		return 1;
	if (c->wpend != p) {
		uint8_t *keep = malloc(len);

		if (!keep)
			return -1;
		memcpy(keep, p, len);
		free(c->wpend);
		c->wpend = keep;
		c->wpend_off = 0;
		c->wpend_len = (uint32_t)len;
	}
	return 0;
}

static void rl_flush(sp_conn_t *c)
{
	sp_worker_t *w = c->w;

	for (;;) {
		size_t blen = 0;
		int r;

		if (c->wpend) {
			const uint8_t *p = c->wpend + c->wpend_off;
			size_t left = c->wpend_len - c->wpend_off;

			while (left > 0) {
				ssize_t n = write(c->fd, p, left);

				if (n < 0 && errno == EINTR)
					continue;
				if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
					want_write(c, true);
					return;
				}
				if (n < 0) {
					conn_broken(c, SSL_ERROR_SYSCALL);
					return;
				}
				p += n;
				left -= (size_t)n;
				c->wpend_off += (uint32_t)n;
			}
			free(c->wpend);
			c->wpend = NULL;
			c->wpend_off = c->wpend_len = 0;
		}
		if (sp_rl_write_needs_update(&c->rl)) /* AEAD usage limits, RFC 8446 5.5 */
			c->rl_flags |= SP_RLF_KEY_UPDATE;
		if (c->out_off == c->out_len && !(c->rl_flags & SP_RLF_KEY_UPDATE))
			break;
		/* Seal as many records as fit the worker's buffer, then one write. */
		while (blen + SP_RL_MAX_PLAIN + SP_RL_OVERHEAD <= SEAL_SIZE) {
			if (c->out_off < c->out_len) {
				size_t chunk = c->out_len - c->out_off;

				if (chunk > SP_RL_MAX_PLAIN)
					chunk = SP_RL_MAX_PLAIN;
				r = sp_rl_seal(&c->rl, w->rlcx, SP_RL_CT_APPDATA,
				               c->out + c->out_off, chunk, w->seal + blen,
				               SEAL_SIZE - blen);
				if (r < 0)
					goto internal;
				blen += (size_t)r;
				c->out_off += (uint32_t)chunk;
				sp_metric_add(&w->metrics, SP_M_BYTES_OUT, (int64_t)chunk);
			} else if (c->rl_flags & SP_RLF_KEY_UPDATE) {
				/* Ours goes after everything sealed under the old key. */
				const uint8_t ku[5] = {24, 0, 0, 1, 0};

				r = sp_rl_seal(&c->rl, w->rlcx, SP_RL_CT_HANDSHAKE, ku, sizeof(ku),
				               w->seal + blen, SEAL_SIZE - blen);
				if (r < 0 || sp_rl_update(&c->rl, w->rlcx, SP_RL_WRITE) < 0)
					goto internal;
				blen += (size_t)r;
				c->rl_flags &= (uint8_t)~SP_RLF_KEY_UPDATE;
			} else {
				break;
			}
		}
		r = rl_write(c, w->seal, blen);
		if (r < 0) {
			conn_broken(c, SSL_ERROR_SYSCALL);
			return;
		}
		if (r == 0) {
			want_write(c, true);
			return;
		}
	}
	c->out_off = c->out_len = 0;
	want_write(c, false);
	if (c->state == SP_CS_CLOSING)
		sp_conn_finish(c);
	return;
internal:
	rl_fatal(c, -SP_RL_ERR_INTERNAL);
}

/* close_notify, once, without waiting: the socket is closed right after. */
static void rl_close_notify(sp_conn_t *c)
{
	const uint8_t alert[2] = {1, 0};
	uint8_t rec[2 + SP_RL_OVERHEAD];
	int n;

	if (c->wpend)
		return; /* it would land in the middle of a record */
	n = sp_rl_seal(&c->rl, c->w->rlcx, SP_RL_CT_ALERT, alert, 2, rec, sizeof(rec));
	if (n > 0) {
		ssize_t r = write(c->fd, rec, (size_t)n);

		(void)r;
	}
}

/* Decodes and dispatches every complete frame in buf; keeps a partial one in the decoder. */
static void conn_input(sp_conn_t *c, const uint8_t *buf, size_t n)
{
	sp_frame_t f;
	size_t used;
	int r;

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
					return; /* FRAME_TOO_LARGE: the connection is closing */
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
			return;
	}
	if (sp_decoder_idle(&c->dec))
		sp_decoder_release(&c->dec);
}

static void conn_read(sp_conn_t *c)
{
	sp_worker_t *w = c->w;

	if (c->rl_flags & SP_RLF_ACTIVE) {
		rl_read(c);
		return;
	}

	for (int i = 0; i < READS_PER_CALL && c->state < SP_CS_CLOSING; i++) {
		int n, e;

		ERR_clear_error();
		n = SSL_read(c->ssl, w->scratch, SCRATCH_SIZE);
		if (n > 0) {
			sp_metric_add(&w->metrics, SP_M_BYTES_IN, n);
			conn_input(c, w->scratch, (size_t)n);
			continue;
		}
		e = SSL_get_error(c->ssl, n);
		if (e == SSL_ERROR_WANT_READ)
			return;
		if (e == SSL_ERROR_WANT_WRITE) {
			c->flags |= SP_CF_READ_WAIT;
			want_write(c, true);
			return;
		}
		if (e == SSL_ERROR_ZERO_RETURN) {
			/* close_notify: answer with ours once our output is written. */
			sp_conn_close(c, SP_CLOSE_PEER, 0, NULL);
			return;
		}
		conn_broken(c, e);
		return;
	}
	/* Out of budget with plaintext still inside OpenSSL: no socket event would come. */
	if (c->state < SP_CS_CLOSING && SSL_has_pending(c->ssl))
		event_active(&c->ev_read, EV_READ, 1);
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
	sp_worker_t *w = c->w;

	if (c->flags & SP_CF_FINISHED || c->state == SP_CS_HANDSHAKE)
		return;
	if (c->rl_flags & SP_RLF_ACTIVE) {
		rl_flush(c);
		return;
	}
	while (c->out_off < c->out_len) {
		size_t len = c->out_len - c->out_off;
		int n, e;

		ERR_clear_error();
		n = SSL_write(c->ssl, c->out + c->out_off, len > INT_MAX ? INT_MAX : (int)len);
		if (n > 0) {
			c->out_off += (uint32_t)n;
			sp_metric_add(&w->metrics, SP_M_BYTES_OUT, n);
			continue;
		}
		e = SSL_get_error(c->ssl, n);
		if (e == SSL_ERROR_WANT_WRITE) {
			want_write(c, true);
			return;
		}
		if (e == SSL_ERROR_WANT_READ)
			return; /* the read event is armed; the write resumes from there */
		conn_broken(c, e);
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
	if (was != SP_CS_HANDSHAKE && !(c->flags & CF_NO_SHUTDOWN)) {
		if (c->rl_flags & SP_RLF_ACTIVE) {
			rl_close_notify(c);
		} else {
			ERR_clear_error();
			SSL_shutdown(c->ssl); /* one non-blocking attempt to send close_notify */
		}
	}
	ERR_clear_error();
	event_del(&c->ev_read);
	event_del(&c->ev_write);
	close(c->fd);
	c->fd = -1;
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
	SSL_free(c->ssl);
	if (c->hs) {
		OPENSSL_cleanse(c->hs, sizeof(*c->hs));
		free(c->hs);
	}
	sp_rl_wipe(&c->rl);
	free(c->rin);
	free(c->wpend);
	free(c->out);
	sp_decoder_release(&c->dec);
	free(c);
}
