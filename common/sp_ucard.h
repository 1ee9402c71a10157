/*
 * sp_ucard: user cards of the key directory (PROTOCOL.md 15.1).
 *
 * A user has a user identity key (P-256, made on the user's first device) and a handle. The
 * user card lists the user's device cards (PROTOCOL.md 13.8) and is signed by the user key, so
 * a device is the user's only if the user key said so: the relay that stores and serves the
 * card cannot add one. The signature covers the handle, the user key, each device's token and
 * the SHA-256 of its card's signature (so a device card cannot be swapped for another of the
 * same token, older or newer), and issued_at.
 *
 * This module reads the card's frame and checks the user signature; it does not check the
 * device cards themselves (that is sp_card_parse, client side: it needs the sealing suites).
 * The relay uses it to refuse cards that are not signed (and to index tokens); clients use it
 * and then verify every device card. Pure, thread-safe; functions return 0 or a negative
 * errno: -EINVAL (arguments), -EBADMSG (malformed), -EKEYREJECTED (the signature does not
 * hold), -ENOMEM.
 */
#ifndef SP_UCARD_H
#define SP_UCARD_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/types.h>

#define SP_UCARD_VERSION     1
#define SP_UCARD_MAX_JSON    65536 /* a user card's text, at most */
#define SP_UCARD_HANDLE_MAX  64
#define SP_UCARD_MAX_DEVICES 32
#define SP_UCARD_SPKI_MAX    128

struct sp_ucard_device {
	uint8_t token[32];
	char *card; /* the device card, compact JSON text (NUL-terminated, malloc'd) */
	size_t card_len;
};

typedef struct sp_ucard {
	char handle[SP_UCARD_HANDLE_MAX + 1];
	size_t handle_len;
	uint8_t ukey[SP_UCARD_SPKI_MAX]; /* the user key's DER SubjectPublicKeyInfo */
	size_t ukey_len;
	uint8_t ukey_fp[32]; /* SHA-256 of ukey: what the log indexes a handle by */
	int64_t issued_at;
	size_t n_devices;
	struct sp_ucard_device dev[SP_UCARD_MAX_DEVICES];
} sp_ucard_t;

/*
 * Whether a handle is well formed: 1 to 64 bytes of a-z, 0-9, '.', '_', '-', starting with a
 * letter or digit. (An operator may allow fewer: sealpushd's directory_handle_pattern.)
 */
int sp_ucard_handle_ok(const char *handle, size_t len);

/*
 * Makes a user card for handle, listing the device cards (JSON texts, each with "token" and
 * "sig" members as PROTOCOL.md 13.8 has them) in that order, signed with user_key (a P-256
 * private key). *json is malloc'd compact JSON. Tokens must not repeat.
 */
int sp_ucard_make(EVP_PKEY *user_key, const char *handle, int64_t issued_at,
                  const char *const *device_cards, size_t n, char **json);

/* Parses json[0..len) and checks the user signature. out is filled (free with
 * sp_ucard_clear) on success, cleared otherwise. */
int sp_ucard_parse(const char *json, size_t len, sp_ucard_t *out);
void sp_ucard_clear(sp_ucard_t *c);

/* The user key of a parsed card as an EVP_PKEY (the caller frees), or NULL. */
EVP_PKEY *sp_ucard_user_key(const sp_ucard_t *c);

#endif
