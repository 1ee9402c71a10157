/*
 * sp_tls.h: the server's TLS context (sp_tls.c). The per-connection OpenSSL transport it also
 * implements is reached through sp_transport.h (sp_tio_accept).
 */
#ifndef SP_TLS_H
#define SP_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "sp_server.h"

/* At most this many CRLs in the crl file (the root's and one per intermediate CA). */
#define SP_TLS_MAX_CRLS 64

/* Builds srv->tls (context and CRL) from srv->cfg, before the workers start. Returns 0, or -1
 * with err set; srv owns what was built until sp_tls_stop(). */
int sp_tls_start(sp_server_t *srv, char *err, size_t errlen);
/* Frees srv->tls (after the workers stopped; a no-op if never started). */
void sp_tls_stop(sp_server_t *srv);
/* Rebuilds the context and CRL from the files (SIGHUP) and swaps them in for new
 * connections. Returns 0, or -1 with err set (the old ones stay). Any thread. */
int sp_tls_reload(sp_server_t *srv, char *err, size_t errlen);
/* Installs the CRLs in pem[0, len) (another relay of the cluster published its crl file: the
 * root's CRL first, then the intermediate CAs') if the first is signed by the client CA and
 * they are newer than the current ones (the latest lastUpdate later, or the same second and
 * different). Returns 1 if installed, 0 if not newer, -1 with err set if it does not parse or
 * verify. Until the next reload (SIGHUP reads the file again). Any thread. */
int sp_tls_install_crl(sp_server_t *srv, const void *pem, size_t len, char *err, size_t errlen);
/* The version of the OpenSSL library in use (which may be newer than the one built against). */
const char *sp_tls_library_version(void);
/* Verifies the CA certificate ca (the enrollment intermediate) against the current client CA
 * and CRLs, as a client's chain would be. Returns 0, or -1 with the reason in why. Any
 * thread. */
int sp_tls_verify_ca(sp_server_t *srv, X509 *ca, char *why, size_t whylen);
/* Whether the certificate serial[0, len) is on one of tls's current CRLs (works after the hand-off:
 * no SSL needed). Any thread. */
bool sp_tls_revoked(sp_tls_server_t *tls, const uint8_t *serial, size_t len);

#endif
