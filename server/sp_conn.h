/*
 * sp_conn.h: a client connection: its socket events, transport, output buffer and frame
 * decoder (sp_conn.c), and the session and delivery state the other modules keep in it.
 *
 * A connection belongs to the worker that accepted it, for its lifetime; other threads name it
 * by reference (sp_conn_ref), and only its worker turns the reference back into a pointer.
 */
#ifndef SP_CONN_H
#define SP_CONN_H

#include <event2/event_struct.h>
#include <stdbool.h>
#include <stdint.h>

#include "sp_frame.h"
#include "sp_transport.h"
#include "sp_worker.h"

/* Connection states (PROTOCOL.md 6.1). */
enum sp_conn_state {
	SP_CS_HANDSHAKE,
	SP_CS_AWAITING_HELLO,
	SP_CS_READY,
	SP_CS_DRAINING,
	SP_CS_CLOSING,
};

/* Queue states of a receiving connection (with a store). */
enum { SP_Q_NONE, SP_Q_FETCHING, SP_Q_PAGED, SP_Q_DONE };

/* Connection flags. */
#define SP_CF_SEND_ONLY  0x01
#define SP_CF_REGISTERED 0x02 /* in the registry and the worker's local map */
#define SP_CF_DIRTY      0x04 /* on the worker's dirty list */
#define SP_CF_WRITE_WAIT 0x08 /* the transport wants the socket writable */
#define SP_CF_READ_WAIT  0x10 /* the transport (reading) wants the socket writable */
#define SP_CF_RESUMED    0x20
#define SP_CF_FINISHED   0x40  /* socket closed, on the reap list */
#define SP_CF_DEFERRED   0x80  /* accepted, waiting for a handshake slot (no transport yet) */
#define SP_CF_RECHECK    0x100 /* cluster: its presence is re-checked after a lease lapse */

struct sp_conn {
	sp_worker_t *w;
	sp_conn_t *prev, *next;
	sp_conn_t *dirty_next;
	sp_conn_t *reap_next;
	sp_conn_t *hs_prev, *hs_next; /* the worker's queue of connections waiting to handshake */
	sp_tio_t io;                  /* the transport: TLS, then (usually) the record layer */
	struct event ev_read;
	struct event ev_write;
	uint8_t *out;     /* output bytes [out_off, out_len): allocated on first output, kept */
	uint32_t out_off; /* while the connection is busy, freed by the tick when it idles */
	uint32_t out_len;
	uint32_t out_cap;
	sp_decoder_t dec;
	uint32_t slot;
	uint32_t gen;
	uint8_t state;
	uint16_t flags;
	uint8_t close_reason;
	uint8_t serial_len;
	uint8_t serial[20]; /* the client certificate's serial, for revocation checks */
	uint8_t ca_serial_len;
	uint8_t ca_serial[20]; /* its issuing intermediate CA's serial, if any (sp_peer_t) */
	uint16_t errors;       /* non-fatal errors so far */
	uint16_t window;
	uint16_t keepalive;    /* seconds */
	uint64_t t_state;      /* when the current state began (ms) */
	uint64_t t_rx;         /* last frame received (ms) */
	uint64_t presence_due; /* cluster: when its presence is written again (ms), or 0 */
	uint8_t token[32];     /* all zero on an anonymous connection */
	bool anon;             /* accepted on anon_listen: no certificate, no token (sp_anon.h) */

	/* Deliveries to this device: in flight (sent, not ACKed; oldest first) and pending. */
	sp_node_t *inflight, *inflight_tail;
	sp_node_t *pending, *pending_tail;
	uint32_t n_inflight;
	uint32_t n_pending;
	uint64_t pending_bytes;

	/* Its offline queue: drained after WELCOME, page by page, before live messages. */
	uint8_t qstate;    /* SP_Q_* */
	uint8_t qmore;     /* something was queued while a page was out: fetch again after it */
	uint64_t qseq;     /* last seq fetched */
	uint32_t q_unsent; /* stored messages in the pending list */
	sp_node_t *held, *held_tail; /* live messages waiting for the drain to finish */

	/* This connection as a sender. */
	uint32_t sends_outstanding;
	double rate_tokens;
	uint64_t rate_t;
	uint64_t renew_t; /* when it last renewed its certificate (ms), or 0 (sp_enroll_renew) */
};

/* Takes ownership of an accepted socket on w: refuses it (closed, counted) while draining or
 * over max_connections, else makes a connection in SP_CS_HANDSHAKE; the tick enforces
 * handshake_timeout. Admission: at most max_handshakes handshakes run on a worker at a time;
 * a connection accepted beyond that is deferred (SP_CF_DEFERRED: its socket is open but not
 * read and it has no transport yet) in the worker's FIFO, and starts when a handshake ends
 * (sp_conn_set_state out of SP_CS_HANDSHAKE); the tick refuses one that waited longer than
 * handshake_timeout (sealpush_connections_refused_total{reason="handshake_wait"}). */
void sp_conn_accept(sp_worker_t *w, int fd, bool anon);
/* Queues a frame for c (encoded into its output buffer) and marks c for flushing. */
int sp_conn_send(sp_conn_t *c, sp_frame_t *f);
/* Sends ERROR (fatal codes set CLOSING) or, with goaway, GOAWAY; then closes gracefully. */
void sp_conn_close(sp_conn_t *c, enum sp_close_reason why, unsigned code, const char *reason);
/* Queues GOAWAY (with a reconnect hint if retry_after_ms > 0) to a READY or DRAINING
 * connection and moves it to DRAINING; no effect in any other state. */
void sp_conn_goaway(sp_conn_t *c, unsigned code, uint32_t retry_after_ms);
/* Queues an ERROR frame (counted): code, reason, and the type and msg_id of the frame it is
 * about (if any). With closing, the CLOSING flag; the caller then closes. */
void sp_conn_error(sp_conn_t *c, unsigned code, bool closing, const char *reason,
                   const sp_frame_t *about);
/* Ends the connection now: close_notify if possible, socket closed, freed after the callback. */
void sp_conn_finish(sp_conn_t *c);
/* Writes c's pending output to the socket now (through its transport, sp_tio_write) until it
 * is empty or the socket would block (then waits for writable); never blocks. */
void sp_conn_flush(sp_conn_t *c);
/* Puts c on its worker's dirty list (once) so that the end of the loop turn flushes it. */
void sp_conn_mark_dirty(sp_conn_t *c);
/* Moves c to state s, keeping the per-state connection gauges and t_state. */
void sp_conn_set_state(sp_conn_t *c, enum sp_conn_state s);
/* Frees a finished connection (the reaper calls it; never from c's own callbacks): unlinks it,
 * frees its slot (later references to it go stale) and everything it holds. NULL is a no-op. */
void sp_conn_free(sp_conn_t *c);
/* The one place output_buffer_max is enforced: if c's queued bytes (sp_conn_output_bytes) are
 * over it, counts the limit hit and closes c as a slow consumer (-ENOBUFS), else returns 0.
 * sp_conn_send() calls it for every frame but ERROR and GOAWAY; the router after queueing a
 * delivery that was not encoded yet. */
int sp_conn_check_output(sp_conn_t *c);
/* Bytes queued for c and not yet written: encoded output plus pending deliveries. */
uint64_t sp_conn_output_bytes(const sp_conn_t *c);
/* Frees the output buffer if it is empty (the tick calls it for idle connections). */
void sp_conn_release_output(sp_conn_t *c);

static inline sp_connref_t sp_conn_ref(const sp_conn_t *c)
{
	return SP_CONNREF(c->w->id, c->slot, c->gen);
}

#endif
