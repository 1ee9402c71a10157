/*
 * sp_b64: base64url (RFC 4648 section 5) without padding, as Web Push (RFC 8030, 8291, 8292)
 * and JWTs write keys, secrets and signatures. Pure functions, no allocation.
 */
#ifndef SP_B64_H
#define SP_B64_H

#include <stddef.h>
#include <stdint.h>

/* Characters needed to encode n bytes (no padding), without the terminating NUL. */
#define SP_B64URL_LEN(n) (((n)*4 + 2) / 3)

/* Writes the base64url of in[0, n) and a NUL to out, which holds SP_B64URL_LEN(n) + 1 bytes.
 * Returns the length written (without the NUL). */
size_t sp_b64url_encode(const uint8_t *in, size_t n, char *out);
/* Decodes s[0, len) (base64url; '=' padding at the end is tolerated, nothing else is) into
 * out, which holds cap bytes. Returns the decoded length, or -1 for a bad character, a
 * length that no encoding has, non-zero trailing bits, or more than cap bytes. */
long sp_b64url_decode(const char *s, size_t len, uint8_t *out, size_t cap);

#endif
