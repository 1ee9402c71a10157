/*
 * sp_ctransport: the client side of one sealpush connection below the protocol: a
 * non-blocking TCP socket, TLS 1.3 over two memory BIOs, a plaintext buffer that frames are
 * encoded into, and a buffer of TLS records waiting for send(). Used by libsealpush
 * (sp_client.c) and by the load generator (bench/sb_conn.c); what a frame means, timers,
 * reconnects and error reporting stay with them.
 *
 * Who calls what. The owner creates the socket (sp_ctransport_socket/_connect), its read and
 * write events on it (on its own event base, into t->rev and t->wev: sp_ctransport_close()
 * frees them), and, once connected, calls sp_ctransport_tls_begin().
 * Then, from its event callbacks: sp_ctransport_recv() when readable (moves what the socket
 * has into OpenSSL), sp_ctransport_handshake() until it returns 1, sp_ctransport_read() until
 * it returns 0 (plaintext into the owner's buffer, which it decodes in place), then
 * sp_ctransport_put() for each frame to send and one sp_ctransport_flush() per pass (one
 * SSL_write for many frames, one send() for the records). When the socket is full the
 * transport arms the owner's write event (t->wev); when it fires, sp_ctransport_send().
 *
 * Bytes go out with send(MSG_NOSIGNAL | MSG_DONTWAIT) and come in with recv(MSG_DONTWAIT):
 * nothing here blocks or raises SIGPIPE. No allocation per frame: the buffers grow to the
 * largest burst and stay (or, with keep != 0, are released once empty if larger than keep).
 * One thread at a time; nothing is freed inside a call except what the call replaces.
 *
 * Return values: 0 or a negative SP_CT_* code, except where said. The socket functions
 * return -errno. After SP_CT_SEND or SP_CT_RECV, t->err holds the errno; after SP_CT_TLS the
 * OpenSSL error queue says why (the owner reads it, then clears it).
 */
#ifndef SP_CTRANSPORT_H
#define SP_CTRANSPORT_H

#include "sp_frame.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

struct event;

enum {
	SP_CT_NOMEM = -1,  /* out of memory */
	SP_CT_ENCODE = -2, /* sp_frame_encode() refused the frame */
	SP_CT_SEND = -3,   /* send() failed: t->err */
	SP_CT_RECV = -4,   /* recv() failed: t->err */
	SP_CT_TLS = -5,    /* OpenSSL failed (handshake, record, write): the error queue */
	SP_CT_ALPN = -6,   /* the handshake finished without ALPN sealpush/1 */
	SP_CT_CLOSED = -7, /* the relay sent close_notify */
	SP_CT_EOF = -8,    /* the relay closed the connection without close_notify */
};

typedef struct sp_ctransport {
	int fd;            /* -1 when closed */
	SSL *ssl;          /* NULL until sp_ctransport_tls_begin() */
	BIO *rbio, *wbio;  /* owned by ssl */
	struct event *rev; /* the owner's read event on fd (freed by sp_ctransport_close) */
	struct event *wev; /* the owner's write event on fd (armed here when the socket is full) */
	uint8_t *pt;       /* plaintext frames waiting for SSL_write */
	size_t pt_len, pt_cap;
	uint8_t *raw; /* TLS records waiting for send() */
	size_t raw_len, raw_off, raw_cap;
	size_t keep;       /* release an emptied buffer larger than this; 0 = never */
	int err;           /* errno of the last SP_CT_SEND / SP_CT_RECV */
	bool eof;          /* recv() saw the end of the stream */
	bool tls_done;     /* the handshake finished (and ALPN matched) */
	bool write_failed; /* send() failed: records are dropped, reading goes on */
} sp_ctransport_t;

/* Makes *t an empty, closed transport (fd -1, no buffers). keep: see the struct. */
void sp_ctransport_init(sp_ctransport_t *t, size_t keep);

/* Opens a non-blocking, close-on-exec TCP socket with TCP_NODELAY into t->fd. 0 or -errno. */
int sp_ctransport_socket(sp_ctransport_t *t, int family);

/* Starts connecting t->fd. Returns 0 (connected or in progress: wait for EV_WRITE) or -errno. */
int sp_ctransport_connect(sp_ctransport_t *t, const struct sockaddr *sa, socklen_t len);

/* After EV_WRITE on a connecting socket: 0 (connected) or -errno (why it failed). */
int sp_ctransport_connected(sp_ctransport_t *t);

/*
 * Sets TLS up on the connected socket, as a client of ctx: the peer is checked against name
 * (an IP address literal if name_is_ip, else a host name, also sent as SNI). cert and key (may
 * be NULL: the ctx's) are this connection's client identity; sess (may be NULL) is offered for
 * resumption (a session OpenSSL refuses means a full handshake); app is SSL_get_app_data()'s
 * (for the ctx's session callback). Returns 0, SP_CT_NOMEM or SP_CT_TLS (nothing kept).
 */
int sp_ctransport_tls_begin(sp_ctransport_t *t, SSL_CTX *ctx, const char *name, bool name_is_ip,
                            X509 *cert, EVP_PKEY *key, SSL_SESSION *sess, void *app);

/*
 * Runs the handshake as far as the bytes received allow and sends what it produced. Returns
 * 1 (done, ALPN sealpush/1 selected), 0 (more to read), SP_CT_NOMEM, SP_CT_SEND, SP_CT_TLS
 * (also when the stream ended) or SP_CT_ALPN.
 */
int sp_ctransport_handshake(sp_ctransport_t *t);

/*
 * Moves what the socket has into OpenSSL (until it would block or a short read), noting the
 * end of the stream in t->eof. Returns 0, SP_CT_NOMEM or SP_CT_RECV.
 */
int sp_ctransport_recv(sp_ctransport_t *t);

/*
 * Decrypts into dst[0..cap) what the records received hold. Returns the bytes (> 0; call
 * again), 0 (nothing more until the next recv), SP_CT_CLOSED, SP_CT_EOF or SP_CT_TLS.
 */
int sp_ctransport_read(sp_ctransport_t *t, uint8_t *dst, size_t cap);

/*
 * Encodes f at the end of the plaintext buffer (written by the next flush); *len (may be
 * NULL) gets its size. Returns 0, SP_CT_NOMEM or SP_CT_ENCODE (nothing added).
 */
int sp_ctransport_put(sp_ctransport_t *t, sp_frame_t *f, size_t *len);

/*
 * After the handshake: hands the plaintext buffer to TLS and the records to the socket (as
 * far as it takes them; the rest waits for t->wev). Does nothing before the handshake.
 * Returns 0, SP_CT_TLS, SP_CT_NOMEM or SP_CT_SEND.
 */
int sp_ctransport_flush(sp_ctransport_t *t);

/* Sends the records that wait (when t->wev fired). Returns 0 or SP_CT_SEND. */
int sp_ctransport_send(sp_ctransport_t *t);

/* send() failed: drop the records that wait and send nothing more (reading goes on). */
void sp_ctransport_write_failed(sp_ctransport_t *t);

/* Bytes waiting to go out: plaintext not yet flushed, or records not yet sent. */
static inline bool sp_ctransport_pending(const sp_ctransport_t *t)
{
	return t->pt_len > 0 || t->raw_off < t->raw_len;
}

/* Bytes of TLS records not yet taken by the socket. */
static inline size_t sp_ctransport_unsent(const sp_ctransport_t *t)
{
	return t->raw_len - t->raw_off;
}

/* Whether the handshake resumed a session. */
bool sp_ctransport_resumed(const sp_ctransport_t *t);

/* The key-exchange group the handshake used (enum sp_tls_group, sp_tlsgroup.h); SP_TG_OTHER
 * before the handshake is done. */
int sp_ctransport_group(const sp_ctransport_t *t);

/*
 * close_notify, best effort: only after the handshake, before the end of the stream and
 * while sends work; whatever the socket takes now, never waiting.
 */
void sp_ctransport_shutdown(sp_ctransport_t *t);

/*
 * Frees the owner's events (t->rev, t->wev), the TLS state and the socket; unwritten bytes
 * are dropped, the buffers are kept for the next connection. Accepts a closed transport.
 */
void sp_ctransport_close(sp_ctransport_t *t);

/* Frees the buffers (after sp_ctransport_close). Accepts a transport with none. */
void sp_ctransport_release(sp_ctransport_t *t);

#endif
