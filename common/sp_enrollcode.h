/*
 * sp_enrollcode: one-time enrollment codes, as both the operator's tools (sealpush-ca
 * enroll-code, the relay's admin endpoint) and the relay's enrollment (sp_enroll.c) see them.
 *
 * A code is SP_ENROLL_CODE_LEN base64url characters of 18 random bytes (144 bits). It is
 * never stored: Redis holds only its SHA-256, as the key "sp:enroll:code:<64 hex>", a hash
 *	uses   enrollments left (>= 1; the key is deleted when the last one is used)
 *	exp    expiry, Unix seconds (the key also expires then, PEXPIREAT)
 *	label  the operator's label (may be empty)
 *	ws, wn start (Unix seconds) and count of the current one-minute window, for the
 *	       per-code rate limit (set by the relay)
 * SP_ENROLL_CREATE_LUA creates such a record only if the key is new; SP_ENROLL_USE_LUA
 * (sp_enroll.c) takes one use.
 */
#ifndef SP_ENROLLCODE_H
#define SP_ENROLLCODE_H

#include <stddef.h>
#include <stdint.h>

#define SP_ENROLL_CODE_BYTES 18
#define SP_ENROLL_CODE_LEN   24 /* base64url of 18 bytes, no padding */
#define SP_ENROLL_KEY_PREFIX "sp:enroll:code:"
#define SP_ENROLL_KEY_LEN    (sizeof(SP_ENROLL_KEY_PREFIX) - 1 + 64)
#define SP_ENROLL_LABEL_MAX  64
#define SP_ENROLL_USES_MAX   1000000

/* KEYS[1] the code's key; ARGV: uses, exp (Unix s), label, exp in ms. Returns 1, or 0 if the
 * key exists already. */
#define SP_ENROLL_CREATE_LUA                                                                       \
	"if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end "                                 \
	"redis.call('HSET', KEYS[1], 'uses', ARGV[1], 'exp', ARGV[2], 'label', ARGV[3], "          \
	"'ws', '0', 'wn', '0') "                                                                   \
	"redis.call('PEXPIREAT', KEYS[1], ARGV[4]) return 1"

/* Draws a new code into out (SP_ENROLL_CODE_LEN characters and a NUL). Returns 0, or -EIO if
 * OpenSSL has no randomness. */
int sp_enroll_code_new(char out[SP_ENROLL_CODE_LEN + 1]);

/* Whether s (len bytes) has the shape of a code: SP_ENROLL_CODE_LEN base64url characters. */
int sp_enroll_code_valid(const char *s, size_t len);

/* The Redis key of code s (len bytes): SP_ENROLL_KEY_PREFIX and the hex SHA-256 of s, into
 * out (SP_ENROLL_KEY_LEN + 1 bytes). Returns 0 or -EIO. */
int sp_enroll_code_key(const char *s, size_t len, char out[SP_ENROLL_KEY_LEN + 1]);

/* Whether label (len bytes) is acceptable: at most SP_ENROLL_LABEL_MAX bytes of printable
 * ASCII other than '"' and '\\' (it is logged and put into JSON). */
int sp_enroll_label_valid(const char *label, size_t len);

#endif
