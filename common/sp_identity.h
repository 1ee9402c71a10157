/*
 * sp_identity: device identity helpers.
 *
 * A device token is SHA-256 over the DER SubjectPublicKeyInfo (SPKI) of a device's certificate:
 * 32 bytes, written as 64 lowercase hex characters. The token depends only on the public key,
 * so re-issuing a certificate for the same key keeps the token, and nobody (the relay
 * included) can mint a token for a key they do not hold. Logs show only the short form.
 *
 * All functions are pure (no I/O, no global state), thread-safe, and never block. They take
 * no ownership of their arguments. Functions that can fail return 0 or a negative errno-style
 * code and leave their output untouched on failure.
 */
#ifndef SP_IDENTITY_H
#define SP_IDENTITY_H

#include <stdint.h>

#include <openssl/types.h>

/* Bytes in a token, hex characters in its full form, hex characters in its log form. */
#define SP_TOKEN_LEN       32
#define SP_TOKEN_HEX_LEN   64
#define SP_TOKEN_SHORT_LEN 8

/*
 * Computes the token of a certificate: SHA-256 over the DER encoding of its
 * SubjectPublicKeyInfo (i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert))). The certificate is only
 * read; the caller keeps ownership. Returns 0, -EINVAL if cert or token is NULL or the
 * certificate carries no usable public key, -ENOMEM if OpenSSL could not encode or hash it.
 */
int sp_token_from_cert(X509 *cert, uint8_t token[SP_TOKEN_LEN]);

/*
 * Computes the token of a public (or private) key: SHA-256 over the DER SPKI of its public
 * half (i2d_PUBKEY), so sp_token_from_pkey(k) == sp_token_from_cert(c) whenever c certifies k.
 * The key is only read; the caller keeps ownership. Returns 0, -EINVAL if pkey or token is
 * NULL or the key cannot be encoded, -ENOMEM if OpenSSL could not hash it.
 */
int sp_token_from_pkey(EVP_PKEY *pkey, uint8_t token[SP_TOKEN_LEN]);

/* Writes the 64 lowercase hex characters of token and a terminating NUL into out. */
void sp_token_hex(const uint8_t token[SP_TOKEN_LEN], char out[SP_TOKEN_HEX_LEN + 1]);

/*
 * Parses a token from exactly 64 hex characters (either case) followed by the end of the
 * string; no prefix, whitespace or separators. Returns 0, or -EINVAL (s NULL, wrong length,
 * or a non-hex character), in which case token is unchanged.
 */
int sp_token_parse_hex(const char *s, uint8_t token[SP_TOKEN_LEN]);

/*
 * Writes the short form used in logs, the first SP_TOKEN_SHORT_LEN lowercase hex characters of
 * the token, and a terminating NUL into out. It identifies a device to an operator reading logs
 * without publishing the full address.
 */
void sp_token_short(const uint8_t token[SP_TOKEN_LEN], char out[SP_TOKEN_SHORT_LEN + 1]);

/* A P-256 public key from its 65-byte uncompressed point (0x04 || X || Y), as Web Push and
 * VAPID carry it; NULL if the point is not on the curve. The caller frees it. */
#define SP_P256_POINT_LEN 65
EVP_PKEY *sp_p256_point_key(const uint8_t point[SP_P256_POINT_LEN]);

#endif
