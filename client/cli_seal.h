/*
 * cli_seal: the one seam between the sealpush CLI and end-to-end sealing.
 *
 * The CLI calls only these functions for anything that touches sealing keys, contact cards or
 * envelopes. cli_seal_sp.c implements them over the sealing library (HPKE envelopes and
 * contact cards: client/sp_seal.h, client/sp_card.h), so the CLI itself never touches HPKE or
 * card formats.
 *
 * Errors (negative errno values): -ENOTSUP no sealing in this build; -ENOENT / -EACCES a file;
 * -EEXIST init found a sealing key already; -EBADMSG verification failed (a card whose
 * signature or token does not check, an envelope that does not open or whose sender is not
 * authentic); -ENOMSG the blob is not a sealed envelope; -ENOKEY an envelope but this device
 * has no sealing key; -EKEYEXPIRED an envelope sealed to a sealing key this device has erased
 * (rotated out past its grace period: it can never open); -ESTALE a card older than one used
 * before for its device; -ENOMEM. err (if errlen > 0) then holds one line.
 */
#ifndef CLI_SEAL_H
#define CLI_SEAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "sealpush.h"

typedef struct cli_seal cli_seal_t; /* this device's sealing identity */
typedef struct cli_card cli_card_t; /* a contact card, verified against its token */

/* Receipt statuses (PROTOCOL.md 13.7), as in receipts received. */
#define CLI_RECEIPT_RECEIVED 0x01 /* opened and accepted by the recipient's software */
#define CLI_RECEIPT_READ     0x02 /* shown to the user */

#define CLI_ACCESS_KEY_LEN   32 /* an access key (sealed sender, PROTOCOL.md 17) */

/* A message opened by cli_seal_open(): hand it back with cli_seal_done() once printed. */
typedef struct cli_opened {
	uint8_t sender[SEALPUSH_TOKEN_LEN]; /* authenticated sender token */
	uint8_t *text;                      /* the plaintext (owned); empty for a receipt */
	size_t text_len;
	uint32_t ttl;       /* the ttl the sender sealed in (seconds; 0: ephemeral) */
	bool wants_receipt; /* the sender asked for a receipt: cli_seal_receipt() */
	bool is_receipt;    /* a receipt: receipt_for and receipt_status say what for */
	uint8_t receipt_for[SEALPUSH_MSG_ID_LEN]; /* the msg_id of the message it acknowledges */
	uint8_t receipt_status;                   /* CLI_RECEIPT_RECEIVED, _READ, or another */
	/* The sender's access key, given for the receipt (PROTOCOL.md 17.6): send it through the
	 * anonymous door with this key. */
	bool has_reply_access;
	uint8_t reply_access[CLI_ACCESS_KEY_LEN];
	void *priv; /* implementation data (replay bookkeeping) */
} cli_opened_t;

/* Whether this build can seal. */
int cli_seal_available(void);

/* Creates the sealing key beside the device key (key_file's directory) and writes its path
 * into path_out. -EEXIST if there is one already. */
int cli_seal_init(const char *cert_file, const char *key_file, char *path_out, size_t pathlen,
                  char *err, size_t errlen);

/* Loads this device's sealing identity (certificate, key, sealing key beside the key). */
int cli_seal_load(const char *cert_file, const char *key_file, cli_seal_t **out, char *err,
                  size_t errlen);
void cli_seal_free(cli_seal_t *s);

/* Writes this device's contact card (JSON) to out: with its access key (sealed sender,
 * PROTOCOL.md 17.7) if it has one (KEY.access). A card for contacts only. */
int cli_seal_card_write(cli_seal_t *s, FILE *out, char *err, size_t errlen);

/* The same card without the access key: what may be published (the key directory). */
int cli_seal_card_write_public(cli_seal_t *s, FILE *out, char *err, size_t errlen);

/* This device's card for contacts (JSON, malloc'ed into *json), as cli_seal_card_write. */
int cli_seal_card_json(cli_seal_t *s, char **json, char *err, size_t errlen);

/* Sealed sender (PROTOCOL.md 17): this device's access key, kept beside the key (KEY.access,
 * 0600, hex). cli_seal_access_key: 1 with key filled, 0 if there is none, or -errno /
 * -EBADMSG. cli_seal_access_store: writes key (a temporary file renamed into place), or with
 * key NULL removes the file. */
int cli_seal_access_key(cli_seal_t *s, uint8_t key[CLI_ACCESS_KEY_LEN], char *err, size_t errlen);
int cli_seal_access_store(cli_seal_t *s, const uint8_t *key, char *err, size_t errlen);

/* Writes a card's JSON to path (a temporary file renamed into place). */
int cli_card_write_file(const char *path, const char *json, char *err, size_t errlen);

/*
 * Rotation (PROTOCOL.md 13.11, sp_seal_keyring.h). The schedule and the grace period (seconds;
 * every_s 0: never rotate by schedule); defaults weekly and 30 days.
 */
#define CLI_SEAL_ROTATE_DEFAULT_S (7u * 86400)   /* weekly */
#define CLI_SEAL_GRACE_DEFAULT_S  (30u * 86400)  /* sealpushd's default max_ttl */
#define CLI_SEAL_GRACE_MAX_S      (366u * 86400) /* the longest grace period accepted */
void cli_seal_set_rotation(cli_seal_t *s, uint64_t every_s, uint64_t grace_s);

/* The epoch of this device's current sealing key. */
uint32_t cli_seal_epoch(const cli_seal_t *s);

/*
 * Rotates if due (force: now), erases the keys past their grace period, and loads the keys
 * again if anything changed on disk (here or by another process). *rotated gets the new epoch
 * (0: none), *erased how many keys were erased.
 */
int cli_seal_maintain(cli_seal_t *s, bool force, uint32_t *rotated, unsigned *erased, char *err,
                      size_t errlen);

/* Before sealing to a card: -ESTALE if it is older than the newest card used for its device
 * (kept beside the key), else records it and returns 0. */
int cli_seal_card_seen(cli_seal_t *s, const cli_card_t *card, char *err, size_t errlen);

/* Reads and verifies a contact card file; -EBADMSG if it does not verify. */
int cli_card_load(const char *path, cli_card_t **out, char *err, size_t errlen);
void cli_card_token(const cli_card_t *card, uint8_t token[SEALPUSH_TOKEN_LEN]);
/* Whether the card carries its device's access key (copied to key). */
bool cli_card_access_key(const cli_card_t *card, uint8_t key[CLI_ACCESS_KEY_LEN]);
void cli_card_free(cli_card_t *card);

/* Seals msg for one recipient card, bound to msg_id and the SEND's ttl (seconds), asking for
 * a delivery receipt if want_receipt (with this device's access key inside, if it has one,
 * for the receipt to come through the anonymous door: PROTOCOL.md 17.6); *blob is malloc'ed. suite:
 * a suite's card name to use
 * (-EINVAL if unknown or not on the card, -ENOTSUP if not in this build), or NULL for the
 * first suite the card lists that this build has. */
int cli_seal_seal(cli_seal_t *s, const cli_card_t *to, const char *suite,
                  const uint8_t msg_id[SEALPUSH_MSG_ID_LEN], uint32_t ttl, bool want_receipt,
                  const uint8_t *msg, size_t len, uint8_t **blob, size_t *blob_len, char *err,
                  size_t errlen);

/* Opens a delivered blob (s may be NULL: no sealing key). 0 with *out filled, -ENOMSG not an
 * envelope (print it as unsealed), -EBADMSG / -ENOKEY / -ENOMEM. */
int cli_seal_open(cli_seal_t *s, const uint8_t msg_id[SEALPUSH_MSG_ID_LEN], const uint8_t *blob,
                  size_t len, cli_opened_t *out, char *err, size_t errlen);

/*
 * Seals the receipt (status CLI_RECEIPT_RECEIVED) for an opened message that wants one, before
 * cli_seal_done(): to the sender's token (written to to_token) and the reply key the message
 * carried, with the fresh receipt_msg_id its own SEND uses, for a SEND with ttl seconds.
 * *blob is malloc'ed. -EINVAL if the message wants no receipt.
 */
int cli_seal_receipt(cli_seal_t *s, const cli_opened_t *o,
                     const uint8_t receipt_msg_id[SEALPUSH_MSG_ID_LEN], uint32_t ttl,
                     uint8_t to_token[SEALPUSH_TOKEN_LEN], uint8_t **blob, size_t *blob_len,
                     char *err, size_t errlen);

/* The name of a receipt status: "received", "read", or "status-0xNN" (into buf). */
const char *cli_receipt_status_name(uint8_t status, char buf[16]);

/* The message was printed: remember it (replay protection) and free what open allocated.
 * Also frees when processed is 0 (not printed). */
void cli_seal_done(cli_seal_t *s, cli_opened_t *o, int processed);

#endif
