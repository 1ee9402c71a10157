/*
 * sb_conn: one bench connection, driven by its bench thread's event base (sb_thread) and
 * touched by that thread only.
 *
 * Life: CS_IDLE -> sb_conn_start() -> CS_CONNECTING (TCP) -> CS_HANDSHAKE (mTLS, one client
 * certificate per connection, ALPN sealpush/1) -> CS_HELLO_SENT -> CS_READY (WELCOME), or for
 * the handshake scenario CS_TICKET (wait for the session ticket) and round again. A connection
 * that breaks is torn down at once (no close_notify), counted, and after the connect phase
 * marked for a reconnect (c->retry, picked up by the thread's tick); in the connect phase a
 * failure ends the run. The socket, TLS and the output buffer are the client transport's
 * (client/sp_ctransport.h, shared with libsealpush); frames are decoded in place from the
 * connection's read buffer. The buffers are kept across reconnects and freed by sb_conn_free().
 *
 * Message ids: run nonce (8 bytes) | sequence u32 (queue: message index) | thread u16 |
 * connection u16. Blobs: CLOCK_MONOTONIC nanoseconds (u64, host order) of the intended send
 * time, then zeros up to --blob bytes.
 */
#ifndef SB_CONN_H
#define SB_CONN_H

#include "sb.h"
#include "sp_ctransport.h"

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

struct event;
struct sb_thread;

enum sb_state {
	CS_IDLE,       /* not started (or waiting to reconnect) */
	CS_CONNECTING, /* TCP connect in progress */
	CS_HANDSHAKE,  /* TLS handshake in progress */
	CS_TICKET,     /* handshake scenario: handshake done, waiting for the session ticket */
	CS_HELLO_SENT, /* HELLO written, waiting for WELCOME */
	CS_READY,      /* WELCOME received */
	CS_DEAD,       /* torn down */
};

/* The access key the bench gives the device with this token (--anonymous): SHA-256 of a
 * fixed label and the token, so that senders know it without being told. */
void sb_access_key(const uint8_t token[32], uint8_t key[32]);

typedef struct sb_conn {
	struct sb_thread *t;
	sp_ctransport_t tr; /* socket, TLS, output buffer; tr.rev, tr.wev: our events on it */
	uint8_t state;
	bool sender;
	bool send_only;  /* HELLO with SEND_ONLY */
	bool starting;   /* counted in t->starting */
	bool retry;      /* reconnect at the next retry scan */
	bool got_ticket; /* handshake scenario: a NewSessionTicket arrived */
	uint16_t idx;    /* within the thread */
	const sb_ident_t *id;
	uint8_t *peer_tokens; /* sender: n_peers recipient tokens, 32 bytes each */
	uint8_t *peer_keys;   /* --anonymous sender: their access keys (sb_access_key) */
	uint16_t n_peers;
	SSL_SESSION *sess; /* handshake --resume: the last ticket of this slot */
	uint8_t *in;       /* plaintext read, decoded in place */
	size_t in_len, in_cap;
	uint8_t *acks; /* msg ids to acknowledge at the end of this read burst */
	size_t n_acks, acks_cap;
	uint32_t window;  /* most unanswered SENDs we keep */
	uint64_t owed;    /* result entries not yet received (n_peers per SEND) */
	uint64_t sent;    /* SENDs encoded on this connection */
	uint64_t quota;   /* queue: messages this sender sends; otherwise unlimited */
	uint32_t q_first; /* queue: message index of this sender's first message */
	uint64_t t_start; /* when the current connection attempt started */
} sb_conn_t;

/*
 * Starts a connection attempt (from CS_IDLE or CS_DEAD): non-blocking connect, the rest
 * happens in the connection's event callback. Returns 0, or -1 (it failed and was counted:
 * see the comment at the top).
 */
int sb_conn_start(sb_conn_t *c);

/* Orderly close: close_notify (best effort, never waits), then the socket. Any state. */
void sb_conn_close(sb_conn_t *c);

/* Whether a sender may put another SEND on the wire (its window is not full). */
bool sb_conn_window_open(const sb_conn_t *c);

/*
 * Encodes one SEND whose blob carries ts (the intended send time) into the output buffer
 * (not written yet: sb_conn_flush). Queue: message q_first + sent * senders goes to device
 * (index / senders) % devices. Returns 0, or -1 (the connection failed).
 */
int sb_conn_send_one(sb_conn_t *c, uint64_t ts);

/*
 * Closed loop: encodes the SENDs that the scenario, the phase and the window allow now (open
 * loop: nothing, the thread's schedule sends). Returns 0, or -1 (the connection failed).
 */
int sb_conn_refill(sb_conn_t *c);

/* Writes what the output buffer holds, as far as the socket takes it. 0, or -1 (failed). */
int sb_conn_flush(sb_conn_t *c);

/* Whether encoded frames wait to be written. */
bool sb_conn_has_output(const sb_conn_t *c);

/* Makes *c (zeroed, or freed with sb_conn_free) a connection that was never opened. */
void sb_conn_init(sb_conn_t *c);

/* Frees the buffers and the kept session of a connection that is closed (or never opened). */
void sb_conn_free(sb_conn_t *c);

/*
 * The SSL_CTX new-session callback of the handshake scenario: marks the connection's ticket
 * as arrived and, with --resume, keeps it for the slot's next handshake (returns 1: the
 * reference is ours), else returns 0.
 */
int sb_conn_on_new_session(SSL *ssl, SSL_SESSION *sess);

#endif
