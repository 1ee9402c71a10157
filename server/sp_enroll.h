/*
 * sp_enroll.h: device enrollment (PROTOCOL.md 16): a new device, holding a one-time code,
 * sends a CSR to POST /enroll on the provider door (server-authenticated TLS, no client
 * certificate) and gets a certificate from the relay's intermediate CA, and its token.
 *
 * Who calls what
 * --------------
 * sealpushd's main thread: sp_enroll_start() once (srv->enroll, NULL when enroll_ca_cert is
 * unset), sp_enroll_reload() after each SIGHUP reload of the TLS files (the intermediate is
 * read again and checked against the new CRLs: a revoked or expired one turns enrollment off
 * until a reload brings a good one), sp_enroll_stop() at exit. The intermediate's certificate
 * and key are swapped under a lock; a request takes its own references.
 *
 * A worker's provider door: sp_enroll_request() for a request to SP_ENROLL_PATH once its
 * body is in. The checks that need nothing else run first (method, JSON, the CSR:
 * sp_enroll_check_csr); then two Redis scripts on the door's connection: the per-address
 * rate limit (INCR of sp:enroll:rate:<address> in a one-minute window) and the code's use
 * (sp_enrollcode.h: a use taken, the code's own per-minute limit, expiry); then the relay
 * signs (sp_enroll_sign) and answers 201 with JSON. Every refusal is counted by reason
 * (sealpush_enroll_refusals_total) and answered with a one-line reason.
 */
#ifndef SP_ENROLL_H
#define SP_ENROLL_H

#include <hiredis/async.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "sp_frame.h"
#include "sp_server.h"

#define SP_ENROLL_PATH    "/enroll"
#define SP_ENROLL_CSR_MAX 2048 /* DER bytes of a CSR: a P-256 one is about 200 */
#define SP_ENROLL_SKEW_S  300  /* notBefore this far in the past, for devices' clocks */

typedef struct sp_enroll sp_enroll_t;
typedef struct preq sp_preq_t; /* a provider door request (sp_provider.c) */

/* Main thread, before the workers: loads enroll_ca_cert / enroll_ca_key into srv->enroll if
 * set (and checks them against the client CA and CRLs: a CA that does not verify is logged
 * and leaves enrollment off). Returns 0, or -1 with err set (unreadable files, a key that
 * does not match, enroll_* set without provider_listen). */
int sp_enroll_start(sp_server_t *srv, char *err, size_t errlen);
/* Main thread, after a successful sp_tls_reload: reads the files again and checks them
 * against the new CRLs. On failure enrollment is off (logged, counted as refusals "ca")
 * until a reload succeeds. */
void sp_enroll_reload(sp_server_t *srv);
/* Frees srv->enroll (workers stopped). NULL-safe. */
void sp_enroll_stop(sp_server_t *srv);

/* Worker thread, from the session: a RENEW frame (PROTOCOL.md 16.4) of READY connection c.
 * Answers RENEWED, or ERROR RENEW_REFUSED / RENEW_UNAVAILABLE (non-fatal). */
void sp_enroll_renew(sp_conn_t *c, const sp_frame_t *f);
/* Whether this relay renews (WELCOME then advertises SP_CAP_RENEW). */
bool sp_enroll_enabled(const sp_server_t *srv);

/* Worker thread: handles one POST /enroll whose body is in. Answers r (now or when Redis
 * has answered). */
void sp_enroll_request(sp_worker_t *w, sp_preq_t *r);

/*
 * Pure: checks a DER CSR strictly and returns its public key. Refuses: anything but exact DER
 * of at most SP_ENROLL_CSR_MAX bytes, a version other than 1, a key other than EC P-256, a
 * signature that does not verify (a tampered CSR), any attribute (extension requests
 * included: the relay decides every extension), a subject other than empty or one CN, and a
 * CN of 64 hex digits (a token is the key's hash; a subject cannot pick one). Returns 0 with
 * *key set (the caller frees it), or a negative enum sp_enroll_refusal with *why set.
 */
int sp_enroll_check_csr(const uint8_t *der, size_t len, EVP_PKEY **key, const char **why);

/*
 * Pure: signs a device certificate for key with the CA ca/cakey: a random 128-bit serial,
 * CN = the token in hex, valid from now - SP_ENROLL_SKEW_S for days days (never past the
 * CA's own notAfter), CA:FALSE, digitalSignature, clientAuth, key identifiers. Returns 0 with
 * *out set (the caller frees it), or -1.
 */
int sp_enroll_sign(X509 *ca, EVP_PKEY *cakey, EVP_PKEY *key, int64_t days, time_t now, X509 **out);

#endif
