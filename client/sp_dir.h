/*
 * sp_dir: a client's side of the key directory (PROTOCOL.md 15): checking what the relay
 * answers before anything in it is used, and keeping the last tree head seen.
 *
 * A lookup answer is believed only if, in this order: the head parses and is signed by the
 * log key; it extends the head the caller kept (same size: same root; larger: the consistency
 * proof holds; smaller: a fork); the entry's inclusion proof reaches the head's root; the entry
 * is for the handle asked (or its card lists the token asked); the user card's signature holds
 * (sp_ucard); and every device card in it verifies (sp_card_parse). Only then is the kept head
 * advanced. Pure functions over buffers, plus two that read and write a head file.
 */
#ifndef SP_DIR_H
#define SP_DIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/types.h>

#include "sealpush.h"
#include "sp_ucard.h"

enum {
	SP_DIR_OK = 0,
	SP_DIR_ERR_HEAD = -2000,   /* a head that does not parse or is not signed by the log key */
	SP_DIR_ERR_FORK,           /* a head that does not extend the kept one: the log forked */
	SP_DIR_ERR_INCLUSION,      /* the entry is not in the head's tree */
	SP_DIR_ERR_ENTRY,          /* a malformed entry, or one for another handle or token */
	SP_DIR_ERR_USER_SIGNATURE, /* the user card is not signed by its user key */
	SP_DIR_ERR_DEVICE_CARD,    /* a device card in it does not verify */
	SP_DIR_ERR_MISSING,        /* the answer lacks a field a verified answer needs */
	SP_DIR_ERR_IO,             /* a head file that cannot be read or written */
};

/* A short English description of an SP_DIR_* code. */
const char *sp_dir_strerror(int err);

typedef struct sp_dir_head {
	uint64_t size; /* 0: none kept yet */
	uint64_t timestamp_ms;
	uint8_t root[32];
} sp_dir_head_t;

/* The log key from the log's certificate (PEM). With ca_file, the certificate must chain to
 * that CA (the relay's device CA). Returns the public key (the caller frees it) or NULL. */
EVP_PKEY *sp_dir_log_key(const char *cert_file, const char *ca_file);

/* Checks a signed head (and, with a kept head of size > 0, that it extends it, using the
 * consistency proof in wire form, or none). On success *out is the new head and, if kept is
 * not NULL, *kept = *out. Returns SP_DIR_OK or an SP_DIR_ERR_* code; kept is then unchanged. */
int sp_dir_check_head(const uint8_t *head, size_t len, EVP_PKEY *log_pub,
                      const uint8_t *consistency, size_t consistency_len, sp_dir_head_t *kept,
                      sp_dir_head_t *out);

/* Checks a lookup answer for handle (token NULL) or token (handle NULL) as the file comment
 * says; *card is the verified user card (free with sp_ucard_clear). */
int sp_dir_check_lookup(const sp_client_dir_answer_t *a, EVP_PKEY *log_pub, const char *handle,
                        const uint8_t *token, sp_dir_head_t *kept, sp_ucard_t *card);

/* A head's fingerprint for comparing out of band: hex of SHA-256(size u64 || root). */
void sp_dir_fingerprint(const sp_dir_head_t *h, char out[65]);

/* The kept head in a file (48 bytes: size, timestamp_ms, root). Load: a missing file gives a
 * head of size 0. Save: written to a temporary file and renamed, mode 0600. */
int sp_dir_head_load(const char *path, sp_dir_head_t *h);
int sp_dir_head_save(const char *path, const sp_dir_head_t *h);

#endif
