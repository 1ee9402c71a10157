/*
 * sp_vapid: VAPID (RFC 8292) for the Web Push door: the "vapid t=<JWT>, k=<key>" credentials
 * of an Authorization header, the ES256 JWT (RFC 7515, 7518 3.4) verified with OpenSSL, and
 * its claims: aud = this push service's origin, exp in the future and at most 24 hours ahead.
 *
 * Pure apart from OpenSSL's verification: no state, no I/O; any thread.
 */
#ifndef SP_VAPID_H
#define SP_VAPID_H

#include <stddef.h>
#include <stdint.h>

#define SP_VAPID_KEY_LEN 65    /* an uncompressed P-256 point */
#define SP_VAPID_MAX_EXP 86400 /* seconds: RFC 8292 2, exp no further than 24 hours ahead */
#define SP_VAPID_SKEW    60    /* seconds of clock difference tolerated on exp */

/* Outcomes (negative) of sp_vapid_check. */
enum sp_vapid_err {
	SP_VAPID_ABSENT = 1, /* no Authorization header, or not the "vapid" scheme */
	SP_VAPID_MALFORMED,  /* t or k missing or not decodable, the JWT not three parts */
	SP_VAPID_BAD_ALG,    /* header is not {"alg":"ES256"} (typ JWT if present) */
	SP_VAPID_BAD_SIG,    /* the signature does not verify with k */
	SP_VAPID_BAD_AUD,    /* aud is missing or not the origin */
	SP_VAPID_EXPIRED,    /* exp missing, past, or more than 24 h ahead */
};

/* Checks the value of an Authorization header (auth[0, len); NULL or len 0 = absent) for
 * origin at unix time now. On success returns 0, copies the application server's public
 * key (k) into key and, if exp is not NULL, the JWT's exp into *exp (the same header is valid
 * until then: a caller may remember it). Otherwise returns -SP_VAPID_* and points *why at a
 * short reason. */
int sp_vapid_check(const char *auth, size_t len, const char *origin, int64_t now,
                   uint8_t key[SP_VAPID_KEY_LEN], int64_t *exp, const char **why);

#endif
