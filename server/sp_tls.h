/*
 * sp_tls.h: the server's TLS context (sp_tls.c). The per-connection OpenSSL transport it also
 * implements is reached through sp_transport.h (sp_tio_accept).
 */
#ifndef SP_TLS_H
#define SP_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sp_server.h"

/* Builds srv->tls (context and CRL) from srv->cfg, before the workers start. Returns 0, or -1
 * with err set; srv owns what was built until sp_tls_stop(). */
int sp_tls_start(sp_server_t *srv, char *err, size_t errlen);
/* Frees srv->tls (after the workers stopped; a no-op if never started). */
void sp_tls_stop(sp_server_t *srv);
/* Rebuilds the context and CRL from the files (SIGHUP) and swaps them in for new
 * connections. Returns 0, or -1 with err set (the old ones stay). Any thread. */
int sp_tls_reload(sp_server_t *srv, char *err, size_t errlen);
/* Installs the CRL in pem[0, len) (another relay of the cluster published it) if it is signed
 * by the client CA and newer than the current one (lastUpdate later, or the same second and
 * different). Returns 1 if installed, 0 if not newer, -1 with err set if it does not parse or
 * verify. Until the next reload (SIGHUP reads the file again). Any thread. */
int sp_tls_install_crl(sp_server_t *srv, const void *pem, size_t len, char *err, size_t errlen);
/* The version of the OpenSSL library in use (which may be newer than the one built against). */
const char *sp_tls_library_version(void);
/* Whether the certificate serial[0, len) is on tls's current CRL (works after the hand-off:
 * no SSL needed). Any thread. */
bool sp_tls_revoked(sp_tls_server_t *tls, const uint8_t *serial, size_t len);

#endif
