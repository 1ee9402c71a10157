/*
 * cli_webpush: the sealpush CLI's Web Push side: the RFC 8291 keys of each subscription, kept
 * beside the device's key file (KEY.webpush/<sub id hex>.json, mode 0600, in a 0700 folder),
 * the subscription JSON as browsers write it (PushSubscription.toJSON()), and opening the
 * Web Push DELIVERs ('W' | sub id | aes128gcm body, PROTOCOL.md 14.4) with libsealpush.
 */
#ifndef CLI_WEBPUSH_H
#define CLI_WEBPUSH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Makes keys for a new subscription sub (16 bytes) with endpoint, stores them, and prints the
 * subscription JSON (with "subscription_id") to out. Returns 0 or -errno (err set). */
int cli_wp_create(const char *key_file, const uint8_t sub[16], const char *endpoint,
                  size_t endpoint_len, FILE *out, char *err, size_t errlen);
/* Forgets sub's keys. Returns 0 or -errno. */
int cli_wp_forget(const char *key_file, const uint8_t sub[16]);
/* Prints one line per subscription id: the id, and the endpoint if its keys are here. */
void cli_wp_print_list(const char *key_file, const uint8_t *ids, size_t n, FILE *out);
/* A DELIVER blob: -ENOMSG if it is not a Web Push message; else writes the sub id (32 hex
 * digits) and opens the body into out (cap bytes): 0, -ENOENT (no keys for this subscription
 * here), or -EBADMSG (it does not decrypt: it never will). */
int cli_wp_open(const char *key_file, const uint8_t *blob, size_t len, char subhex[33],
                uint8_t *out, size_t cap, size_t *out_len);
/* Parses a subscription id (32 hex digits). 0 or -EINVAL. */
int cli_wp_parse_id(const char *s, uint8_t sub[16]);

#endif
