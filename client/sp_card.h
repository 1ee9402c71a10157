/*
 * sp_card: contact cards (PROTOCOL.md 13.8). A card is a small JSON document by which a device
 * publishes what others need to seal to it: its token, its certificate key (SPKI, optionally
 * the certificate), its sealing public key and suite, and when it was issued, all signed by the
 * certificate key. Anyone holding a card can check it against the token without trusting the
 * relay or whoever handed the card over: the token is SHA-256 of the key that signed the card.
 *
 * Cards are pure data: making one needs the device's sealer, checking one needs nothing.
 * Functions return 0 or a negative code from sp_seal.h (or -EINVAL, -ENOMEM) and never block.
 */
#ifndef SP_CARD_H
#define SP_CARD_H

#include <stddef.h>
#include <stdint.h>

#include "sp_seal.h"

#define SP_CARD_VERSION  1
#define SP_CARD_MAX_JSON 16384 /* the longest card text accepted */
#define SP_CARD_CERT_MAX 8192  /* the largest certificate (DER) a card may carry */

/* A verified card. */
struct sp_card {
	struct sp_seal_peer peer; /* token, sealing suite and public key: what sp_seal() takes */
	uint8_t *spki;            /* DER SubjectPublicKeyInfo of the certificate key */
	size_t spki_len;
	uint8_t *cert; /* DER certificate, or NULL if the card carries none */
	size_t cert_len;
	int64_t issued_at; /* Unix seconds; of two valid cards for one token, the later wins */
};

/*
 * Makes the card of the sealer's device, issued at issued_at (Unix seconds, >= 0): compact JSON,
 * NUL-terminated, malloc'd into *json (the caller frees it). Carries the certificate if the
 * sealer has one. Returns 0, -EINVAL, -ENOMEM, SP_SEAL_ERR_CRYPTO.
 */
int sp_card_make(const struct sp_sealer *s, int64_t issued_at, char **json);

/*
 * Parses and verifies a card of len bytes of JSON. Checks, in this order: size and JSON syntax,
 * version, fields (names, types, encodings, lengths; unknown fields refused): each
 * SP_SEAL_ERR_CARD_MALFORMED, except a version other than 1 (SP_SEAL_ERR_VERSION) and an
 * unknown suite (SP_SEAL_ERR_SUITE); then that SHA-256 of the SPKI equals the token and that the
 * certificate, if present, carries that SPKI (SP_SEAL_ERR_CARD_TOKEN); then the signature by
 * the SPKI's key (SP_SEAL_ERR_CARD_SIGNATURE). On success fills *out (release with
 * sp_card_clear); on failure *out is cleared.
 */
int sp_card_parse(const char *json, size_t len, struct sp_card *out);

/* Frees what a card owns and zeroes it. Accepts NULL and cleared cards. */
void sp_card_clear(struct sp_card *c);

#endif
