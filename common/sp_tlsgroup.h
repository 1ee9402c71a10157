/*
 * sp_tlsgroup: the TLS key-exchange groups sealpush offers, and which one a handshake used.
 *
 * Both ends prefer the hybrid post-quantum group X25519MLKEM768 (ML-KEM-768 with X25519,
 * draft-ietf-tls-ecdhe-mlkem) when the OpenSSL they were built with has it (3.5 and later:
 * SP_HAVE_PQ_TLS), then X25519, then P-256. The group changes only the handshake; the
 * record layer after it is the same. `tls_groups` (daemon) and the library's and CLI's
 * setting override the list in OpenSSL's syntax (e.g. "X25519MLKEM768" to insist on it).
 */
#ifndef SP_TLSGROUP_H
#define SP_TLSGROUP_H

#include <stdbool.h>

#include "sp_version.h"

/* OpenSSL's SSL and SSL_CTX, opaque here: this header needs none of OpenSSL's. */
struct ssl_st;
struct ssl_ctx_st;

/* The relay's list is two preference tuples (OpenSSL 3.5 syntax): a client that supports the
 * hybrid group gets it, with a HelloRetryRequest if its key share was classical; among the
 * classical groups the client's key share wins (no extra round trip). The client sends key
 * shares for both X25519MLKEM768 and X25519, so neither kind of relay needs a retry. */
#if SP_HAVE_PQ_TLS
#define SP_TLS_GROUPS_DEFAULT        "X25519MLKEM768:X25519:P-256"
#define SP_TLS_GROUPS_SERVER_DEFAULT "X25519MLKEM768 / X25519:P-256"
#define SP_TLS_GROUPS_CLIENT_DEFAULT "*X25519MLKEM768:*X25519:P-256"
#else
#define SP_TLS_GROUPS_DEFAULT        "X25519:P-256"
#define SP_TLS_GROUPS_SERVER_DEFAULT SP_TLS_GROUPS_DEFAULT
#define SP_TLS_GROUPS_CLIENT_DEFAULT SP_TLS_GROUPS_DEFAULT
#endif

/* The groups a handshake may end with, as counted in /metrics (label "group"). */
enum sp_tls_group {
	SP_TG_X25519MLKEM768 = 0,
	SP_TG_X25519,
	SP_TG_P256,
	SP_TG_OTHER, /* any other group a tls_groups setting allowed */
	SP_TG_COUNT,
};

/* The label of group g ("X25519MLKEM768", "X25519", "P-256", "other"); never NULL. */
const char *sp_tls_group_label(enum sp_tls_group g);

/* The group ssl's completed handshake used (SP_TG_OTHER if OpenSSL cannot say). */
enum sp_tls_group sp_tls_group_of(struct ssl_st *ssl);

/* OpenSSL's own name of the group ssl's handshake used ("x25519", "X25519MLKEM768", ...), or
 * "unknown"; valid while ssl lives. */
const char *sp_tls_group_name(struct ssl_st *ssl);

/* Sets ctx's groups to list (NULL or "": the server's or the client's default above, as
 * server says). Returns 0, or -1 if OpenSSL refuses the list (a group it does not know, such
 * as X25519MLKEM768 before OpenSSL 3.5). */
int sp_tls_set_groups(struct ssl_ctx_st *ctx, const char *list, bool server);

#endif
