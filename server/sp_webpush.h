/*
 * sp_webpush: the pure parts of the Web Push door (RFC 8030 push, RFC 8188/8291 bodies):
 * header values, the aes128gcm header check, capabilities and their Redis names. Nothing here
 * does I/O or keeps state; sp_provider.c calls it for each request, the tests directly.
 *
 * The relay never decrypts: of an aes128gcm body it checks only the shape of the RFC 8188
 * header (salt, record size, key id = the application server's ephemeral P-256 point, as
 * RFC 8291 section 4 requires) and that the body is one record.
 */
#ifndef SP_WEBPUSH_H
#define SP_WEBPUSH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SP_WP_CAP_BYTES        32   /* random bytes of a capability */
#define SP_WP_CAP_CHARS        43   /* their base64url */
#define SP_WP_SUB_ID_LEN       16   /* a subscription's id, inside DELIVER blobs */
#define SP_WP_BLOB_MAGIC       0x57 /* 'W': first byte of a Web Push DELIVER blob (PROTOCOL.md 14) */
#define SP_WP_BLOB_HEADER      (1 + SP_WP_SUB_ID_LEN)
#define SP_WP_TOPIC_MAX        32
#define SP_WP_AES128GCM_HEADER 86 /* salt 16, rs 4, idlen 1, keyid 65 */
#define SP_WP_KEY_LEN          65 /* an uncompressed P-256 point */

/* TTL header: decimal digits only (RFC 8030 5.2), saturating at UINT32_MAX. 0 or -EINVAL. */
int sp_wp_parse_ttl(const char *v, size_t n, uint32_t *ttl);
/* Urgency header (RFC 8030 5.3) to a sealpush priority: very-low and low 1, normal 5,
 * high 10. Returns the priority or -EINVAL. */
int sp_wp_parse_urgency(const char *v, size_t n);
/* Topic header (RFC 8030 5.4): 1 to 32 characters of the base64url alphabet. */
bool sp_wp_topic_ok(const char *v, size_t n);
/* Checks an aes128gcm body (RFC 8188 2.1, RFC 8291 4): the 86-byte header (record size at
 * least 18, key id 65 bytes starting 0x04) and exactly one record of 17..rs bytes after it.
 * Returns 0, or -EINVAL with a short reason in *why. */
int sp_wp_check_aes128gcm(const uint8_t *body, size_t len, const char **why);
/* A new capability: SP_WP_CAP_BYTES random bytes as base64url into cap (SP_WP_CAP_CHARS + 1
 * bytes) and their SHA-256 into hash. Returns 0, or -EIO if the random generator failed. */
int sp_wp_capability_new(char *cap, uint8_t hash[32]);
/* The SHA-256 of a capability as written in a URL; -EINVAL if it is not the base64url of
 * SP_WP_CAP_BYTES bytes (so malformed paths never reach Redis). */
int sp_wp_capability_hash(const char *cap, size_t len, uint8_t hash[32]);
/* Redis names: the capability's record "sp:wp:cap:<hex hash>" (a hash: token, sub, ask, or
 * gone) and a device's set of its subscriptions "sp:{<hex token>}:wp:subs" (the device's hash
 * tag, so a device's keys share a cluster slot). out holds at least 96 bytes. */
void sp_wp_key_cap(char *out, size_t len, const uint8_t hash[32]);
void sp_wp_key_subs(char *out, size_t len, const uint8_t token[32]);

#endif
