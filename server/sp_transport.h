/*
 * sp_transport.h: the interface between a connection (sp_conn.c) and the TLS that carries it.
 *
 * A connection owns one sp_tio_t and moves plaintext through it: the transport reads the
 * socket and hands plaintext to the connection's input function, takes plaintext from the
 * connection's output buffer and writes it protected, and says when it must wait for the
 * socket. sp_conn.c calls only the functions below (compare Redis's ConnectionType): it never
 * sees an OpenSSL type, and nothing in this header needs OpenSSL's headers.
 *
 * Two implementations:
 *   - sp_tls_transport (sp_tls.c): OpenSSL, from the first ClientHello on. When the handshake
 *     is done it hands the session over to the record layer if it can (the application
 *     traffic secrets and sequence numbers, then SSL_free), switching t->tr; else it carries on
 *     with SSL_read/SSL_write.
 *   - sp_record_transport (sp_record.c): TLS 1.3 records after the hand-off, sealed and
 *     opened by sp_record in the worker's shared buffers (an idle connection holds ~1 KiB
 *     instead of OpenSSL's ~23 KiB). It answers KeyUpdate and rekeys before the AEAD limits.
 *
 * Threads: a tio belongs to its connection's worker; the env is the worker's and is shared by
 * all its connections (one read, one seal buffer, one AEAD context). No call blocks.
 */
#ifndef SP_TRANSPORT_H
#define SP_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sp_record.h"

typedef struct sp_tio sp_tio_t;
typedef struct sp_tls_server sp_tls_server_t; /* context + CRL, owned by sp_tls.c */
struct ssl_st;                                /* OpenSSL's SSL, opaque here */
struct sp_hs;                                 /* handshake capture, private to sp_tls.c */

/* What a worker lends its connections' transports (set up once, read-only afterwards). */
typedef struct sp_tio_env {
	uint8_t *scratch; /* read buffer */
	size_t scratch_len;
	uint8_t *seal; /* sealed output buffer, at least 4 full records */
	size_t seal_len;
	sp_rl_crypto_t *rlcx;    /* the worker's AEAD context and algorithms */
	sp_tls_server_t *tls;    /* the server's TLS context and CRL */
	unsigned reads_per_call; /* read() calls one read may make before it yields */
} sp_tio_env_t;

/* What the handshake learnt about the peer. */
typedef struct sp_peer {
	uint8_t token[32];  /* derived from the client certificate's key (sp_identity) */
	uint8_t serial[20]; /* the certificate's serial, for revocation checks after reloads */
	uint8_t serial_len;
	uint8_t ca_serial[20]; /* the serial of the intermediate CA that issued it, if any */
	uint8_t ca_serial_len; /* 0: issued by the root itself, or a resumed session */
	uint8_t group;         /* enum sp_tls_group: the key exchange the handshake used */
	bool resumed;    /* a resumed session (no chain verification happened: checked here) */
	bool handed_off; /* the record layer carries the connection from now on */
} sp_peer_t;

/* Results of transport calls. */
enum sp_io {
	SP_IO_DONE = 0,   /* handshake complete / all output taken and written / socket drained */
	SP_IO_AGAIN,      /* read: out of budget with input left; call again soon */
	SP_IO_WANT_READ,  /* wait until the socket is readable, then call again */
	SP_IO_WANT_WRITE, /* wait until the socket is writable, then call again */
	SP_IO_CLOSED,     /* read: the peer sent close_notify; answer with shutdown() */
	SP_IO_BROKEN,     /* reset, EOF without close_notify, a fatal alert or TLS error: gone */
	SP_IO_PROTOCOL,   /* the peer broke the record layer; an alert was sent: gone */
	SP_IO_FAILED,     /* handshake: refused; t->hs_cause says why (sp_handshake_cause) */
};

/* Tio flags. */
#define SP_TIO_DEAD       0x01 /* no close_notify may be sent (fatal TLS error) */
#define SP_TIO_KEY_UPDATE 0x02 /* the record layer owes a KeyUpdate: call write() soon */
#define SP_TIO_NO_HANDOFF 0x04 /* stay on OpenSSL after the handshake (tests, diagnostics) */
#define SP_TIO_ANON       0x08 /* the anonymous door: no client certificate, no resumption */

/* Takes plaintext from the transport; returns false when the connection wants no more input
 * (it is closing): the transport then stops reading. p is valid during the call only. */
typedef bool sp_tio_input_fn(void *arg, const uint8_t *p, size_t n);

typedef struct sp_transport {
	const char *name;
	/* Advances the handshake. DONE fills *peer (and may switch t->tr), WANT_READ/WANT_WRITE,
	 * or FAILED with t->hs_cause set. */
	int (*handshake)(sp_tio_t *t, sp_peer_t *peer);
	/* Reads what the socket has (up to env->reads_per_call reads) and passes the plaintext
	 * to input. Returns WANT_READ (wait until readable: the record layer drained the
	 * socket; OpenSSL, which reads one record at a time, may leave bytes in it, which a
	 * level-triggered read event brings back at once; also after input returned false),
	 * AGAIN (out of budget with input left where no socket event would report it), WANT_WRITE
	 * (OpenSSL renegotiation-like states: call read again when writable), CLOSED, BROKEN or
	 * PROTOCOL. */
	int (*read)(sp_tio_t *t, sp_tio_input_fn *input, void *arg);
	/* Protects and writes p[0, len); *taken is what it consumed (now the transport's to
	 * write). Returns DONE when everything taken is on the socket, WANT_WRITE (call again
	 * with the rest when writable), WANT_READ, BROKEN or PROTOCOL. len may be 0: flushes the
	 * transport's own pending bytes (a KeyUpdate, a partial record). */
	int (*write)(sp_tio_t *t, const uint8_t *p, size_t len, size_t *taken);
	/* One non-blocking attempt to send close_notify (none after SP_TIO_DEAD). */
	void (*shutdown)(sp_tio_t *t);
	/* Frees and wipes everything the transport holds; the socket is the caller's. */
	void (*free)(sp_tio_t *t);
} sp_transport_t;

/* One connection's transport state, embedded in its connection. */
struct sp_tio {
	const sp_transport_t *tr;
	const sp_tio_env_t *env;
	int fd;
	uint8_t flags;      /* SP_TIO_* */
	uint8_t hs_cause;   /* enum sp_handshake_cause noted during the handshake */
	struct ssl_st *ssl; /* sp_tls_transport: during the handshake, or if no hand-off */
	struct sp_hs *hs;   /* sp_tls_transport: during the handshake only */
	sp_rl_t rl;         /* sp_record_transport: the record protection state */
	uint8_t *rin;       /* a partial incoming record, [0, rin_len) of SP_RL_MAX_RECORD bytes */
	uint32_t rin_len;
	uint8_t *wpend; /* sealed bytes the socket did not take yet: [wpend_off, wpend_len) */
	uint32_t wpend_off;
	uint32_t wpend_len;
};

extern const sp_transport_t sp_tls_transport;
extern const sp_transport_t sp_record_transport;

/* Starts a server-side TLS transport on the accepted socket fd with env's current TLS
 * context. Returns 0 (t->tr is sp_tls_transport), or -1 (out of memory, OpenSSL failure:
 * nothing to free). */
int sp_tio_accept(sp_tio_t *t, const sp_tio_env_t *env, int fd);

static inline int sp_tio_handshake(sp_tio_t *t, sp_peer_t *peer)
{
	return t->tr->handshake(t, peer);
}
static inline int sp_tio_read(sp_tio_t *t, sp_tio_input_fn *input, void *arg)
{
	return t->tr->read(t, input, arg);
}
static inline int sp_tio_write(sp_tio_t *t, const uint8_t *p, size_t len, size_t *taken)
{
	return t->tr->write(t, p, len, taken);
}
static inline void sp_tio_shutdown(sp_tio_t *t)
{
	t->tr->shutdown(t);
}
/* Frees what the transport holds (a tio never started, tr NULL, is a no-op). */
static inline void sp_tio_free(sp_tio_t *t)
{
	if (t->tr)
		t->tr->free(t);
	t->tr = NULL;
}

#endif
