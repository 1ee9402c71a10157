/*
 * sp_wpcrypt: a Web Push user agent's cryptography (RFC 8291, with RFC 8188 aes128gcm): the
 * device's P-256 key pair and 16-byte auth secret (the subscription's keys.p256dh and
 * keys.auth), and opening the messages application servers encrypt to them. Composed from
 * OpenSSL's ECDH, HMAC-SHA-256 (HKDF, RFC 5869) and AES-128-GCM. No state; any thread.
 */
#ifndef SP_WPCRYPT_H
#define SP_WPCRYPT_H

#include <stddef.h>
#include <stdint.h>

#define SP_WP_PRIV_LEN 32
#define SP_WP_PUB_LEN  65 /* uncompressed point */
#define SP_WP_AUTH_LEN 16

/* Outcomes (negative) of sp_wp_open. */
enum sp_wp_open_err {
	SP_WP_E_MALFORMED = 1, /* not an aes128gcm body of one record with a P-256 key id */
	SP_WP_E_KEY,           /* the key id is not a point on P-256 */
	SP_WP_E_DECRYPT,       /* the tag does not verify: not for these keys, or altered */
	SP_WP_E_PADDING,       /* no 0x02 delimiter: not the last record */
	SP_WP_E_SPACE,         /* out is too small */
	SP_WP_E_INTERNAL,
};

/* Makes a key pair and an auth secret. Returns 0 or -SP_WP_E_INTERNAL. */
int sp_wp_keys_new(uint8_t priv[SP_WP_PRIV_LEN], uint8_t pub[SP_WP_PUB_LEN],
                   uint8_t auth[SP_WP_AUTH_LEN]);
/* The public point of a private scalar (for keys read back from a file). 0 or negative. */
int sp_wp_public(const uint8_t priv[SP_WP_PRIV_LEN], uint8_t pub[SP_WP_PUB_LEN]);
/* Opens an aes128gcm message (RFC 8291 section 3.4, one record) sent to (priv, pub, auth):
 * writes the plaintext to out (cap bytes) and its length to *out_len. Returns 0 or
 * -SP_WP_E_*. */
int sp_wp_open(const uint8_t priv[SP_WP_PRIV_LEN], const uint8_t pub[SP_WP_PUB_LEN],
               const uint8_t auth[SP_WP_AUTH_LEN], const uint8_t *body, size_t len, uint8_t *out,
               size_t cap, size_t *out_len);

#endif
