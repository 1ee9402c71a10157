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

/*
 * Versions: 1 has one sealing suite ("seal": {suite, pub}); 2 lists up to SP_CARD_SEAL_MAX
 * ("seal": [{suite, pub}, ...], in the device's order of preference), so that a hybrid device
 * can offer MLKEM768-X25519 first and X25519 to senders without ML-KEM; 3 is 2 with the key
 * epoch of those keys ("epoch", >= 1, signed: PROTOCOL.md 13.11), made by a device that has
 * rotated its sealing key. All three verify here.
 */
#define SP_CARD_VERSION    3 /* the newest version this library reads and makes */
#define SP_CARD_VERSION_V1 1
#define SP_CARD_VERSION_V2 2
#define SP_CARD_MAX_JSON   16384 /* the longest card text accepted */
#define SP_CARD_CERT_MAX   8192  /* the largest certificate (DER) a card may carry */
#define SP_CARD_SEAL_MAX   4     /* suites a v2 card lists at most */
#define SP_CARD_NAME_MAX   64    /* the longest suite name */
#define SP_CARD_PUB_MAX    4096  /* the largest public key of a suite this library does not know */
#define SP_CARD_ACCESS_LEN 32    /* an access key (sealed sender, PROTOCOL.md 17) */

/* One sealing suite a card lists. */
struct sp_card_seal {
	uint16_t suite; /* its id (PROTOCOL.md 13.2), or 0 for a name this library does not know */
	char name[SP_CARD_NAME_MAX + 1];
	uint8_t *pub; /* its public key (owned by the card) */
	size_t pub_len;
};

/* A verified card. */
struct sp_card {
	/* token, and the first listed suite this build implements, with its public key: what
	 * sp_seal() takes (sp_card_pick() chooses otherwise) */
	struct sp_seal_peer peer;
	int version;  /* 1 or 2 */
	size_t nseal; /* suites listed, in the device's order of preference (1 in a v1 card) */
	struct sp_card_seal seal[SP_CARD_SEAL_MAX];
	uint8_t *spki; /* DER SubjectPublicKeyInfo of the certificate key */
	size_t spki_len;
	uint8_t *cert; /* DER certificate, or NULL if the card carries none */
	size_t cert_len;
	int64_t issued_at; /* Unix seconds; of two valid cards for one token, the later wins */
	uint32_t epoch;    /* the sealing keys' epoch (version 3; 0 in versions 1 and 2) */
	/* sealed sender (PROTOCOL.md 13.8, 17.7): the access key the device hands its contacts
	 * for the relay's anonymous door, when the card carries one (member "access", signed) */
	int has_access;
	uint8_t access_key[SP_CARD_ACCESS_LEN];
};

/*
 * Makes the card of the sealer's device, issued at issued_at (Unix seconds, >= 0): compact JSON,
 * NUL-terminated, malloc'd into *json (the caller frees it). Carries the certificate if the
 * sealer has one, and the suites of sp_sealer_suites(): a v3 card with the sealer's key epoch
 * once it has one (sp_sealer_epoch() >= 1: it has rotated), else a v2 card if there are several
 * suites (a hybrid device: MLKEM768-X25519 first, then X25519), else a v1 card, which verifiers
 * of every version accept. Returns 0, -EINVAL, -ENOMEM, SP_SEAL_ERR_CRYPTO.
 */
int sp_card_make(const struct sp_sealer *s, int64_t issued_at, char **json);

/* The same with the version chosen: 1 (the sealer's preferred suite alone), 2, or 3 (the
 * sealer must have an epoch, else -EINVAL). Versions 1 and 2 carry no epoch: senders then seal
 * envelopes of version 1, which the device opens by trying its keys. */
int sp_card_make_version(const struct sp_sealer *s, int64_t issued_at, int version, char **json);

/*
 * sp_card_make() (version 0) or sp_card_make_version() with, if access_key is not NULL, the
 * SP_CARD_ACCESS_LEN-byte access key of the device's registration on the relay's anonymous
 * door (sp_client_access_set(), PROTOCOL.md 17.4) as member "access", signed with the rest.
 * Such a card is a secret of the device's contacts: hand it to them, never publish it (the
 * key directory gets the card without it).
 */
int sp_card_make_access(const struct sp_sealer *s, int64_t issued_at, int version,
                        const uint8_t *access_key, char **json);

/*
 * The suite to seal to: the first suite the card lists (its order of preference) that is among
 * the n ids of accept, or, with accept NULL, that this build implements; into *out with the
 * card's token. Returns 0, or SP_SEAL_ERR_SUITE if the card lists none of them.
 */
int sp_card_pick(const struct sp_card *c, const uint16_t *accept, size_t n,
                 struct sp_seal_peer *out);

/*
 * Parses and verifies a card of len bytes of JSON. Checks, in this order: size and JSON syntax,
 * version, fields (names, types, encodings, lengths; unknown fields refused): each
 * SP_SEAL_ERR_CARD_MALFORMED, except a version other than 1 or 2 (SP_SEAL_ERR_VERSION) and, in
 * a v1 card, an unknown suite (SP_SEAL_ERR_SUITE); then that SHA-256 of the SPKI equals the
 * token and that the certificate, if present, carries that SPKI (SP_SEAL_ERR_CARD_TOKEN); then
 * the signature by the SPKI's key (SP_SEAL_ERR_CARD_SIGNATURE; the optional "access" member,
 * of any version, is signed too, so an edited or removed one fails here); then, for a v2 card, that
 * it lists a suite this build implements (SP_SEAL_ERR_SUITE; names it does not know are kept, with
 * suite 0, and skipped). On success fills *out (release with sp_card_clear); on failure *out is
 * cleared.
 */
int sp_card_parse(const char *json, size_t len, struct sp_card *out);

/*
 * Whether the verified card got may replace the verified card have of the same device (13.11):
 * 0 if got's key epoch is higher, or equal with an issued_at at least as late; otherwise
 * SP_SEAL_ERR_CARD_STALE (an older card, e.g. replayed by whoever carries cards: the caller
 * keeps have). -EINVAL if the tokens differ.
 */
int sp_card_supersedes(const struct sp_card *have, const struct sp_card *got);

/*
 * What a sender has seen (13.11): a small file of the newest card seen per device, one line
 * "TOKEN EPOCH ISSUED_AT" each (64 hex digits, decimal, decimal; at most SP_CARD_SEEN_MAX
 * lines), so that a card older than one already used for that device is noticed rather than
 * silently sealed to.
 *
 * sp_card_seen_check(): 0 if the verified card c has at least the key epoch of the one recorded
 * for its token, or none is recorded; then, with record, records c if it supersedes the record
 * (sp_card_supersedes; the file is written anew, mode 0600, and renamed into place).
 * SP_SEAL_ERR_CARD_STALE if c's epoch is lower (nothing written); an earlier card of the same
 * epoch (the same keys) passes. SP_SEAL_ERR_CARD_MALFORMED if the file has a line that does not
 * parse, -ENOSPC if it is full, -errno. A missing file is an empty one. Blocks on disk I/O.
 */
#define SP_CARD_SEEN_MAX 65536
int sp_card_seen_check(const char *path, const struct sp_card *c, int record);

/* Parses one line of that file (without its newline): pure, no I/O. Returns 0 or
 * SP_SEAL_ERR_CARD_MALFORMED. */
int sp_card_seen_line(const char *line, size_t len, uint8_t token[SP_TOKEN_LEN], uint32_t *epoch,
                      int64_t *issued_at);

/* Frees what a card owns and zeroes it. Accepts NULL and cleared cards. */
void sp_card_clear(struct sp_card *c);

#endif
