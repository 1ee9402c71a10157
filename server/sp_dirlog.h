/*
 * sp_dirlog: the key directory's transparency log in Redis (PROTOCOL.md 15).
 *
 * Every directory change (a user card published for a handle) is one leaf of an append-only
 * RFC 9162 Merkle tree (common/sp_merkle.h). Redis keeps the leaves, every completed perfect
 * node of the tree, the directory's indexes (handle -> latest leaf, token -> handle) and the
 * latest signed tree head (STH), all under the hash tag {dir}, so every key of the log is in one
 * Redis Cluster slot (the log lives on one master: its appends are serialised there anyway).
 *
 * Appends are optimistic: read the size, read the nodes the append and the new root need, sign
 * the new head with the log key, then one Lua script writes leaf, nodes, indexes and head only
 * if the size is still the one read (else everything is retried after a random back-off of up
 * to one millisecond per attempt, up to max_retries attempts). So any
 * number of workers and relays append to one log and it stays one tree: no leaf is lost, none
 * written twice, and each head covers exactly the leaves before it. Within one sp_dirlog_t
 * appends go one at a time, in call order (a queue), so a worker never races itself.
 *
 * Scripts are called by SHA1 with a NOSCRIPT fallback to EVAL (sp_script.h).
 * A lookup is one script (index, entry and head read together) and one HMGET of the O(log n)
 * nodes of its inclusion proof; a head request is a GET and an HMGET for the consistency proof.
 * Nodes are immutable once written and written with (before) the head that covers them.
 *
 * One sp_dirlog_t per worker, on that worker's store (sp_store.h) and thread; not thread-safe
 * except sp_dirlog_counters(). Each request's callback runs exactly once, from the event loop,
 * unless the request call returned a negative error.
 */
#ifndef SP_DIRLOG_H
#define SP_DIRLOG_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/types.h>

#include "sp_merkle.h"
#include "sp_store.h"

typedef struct sp_dirlog sp_dirlog_t;

enum {
	SP_DIRLOG_OK = 0,
	SP_DIRLOG_NOT_FOUND,   /* lookup: no card for this handle or token */
	SP_DIRLOG_KEY_CHANGED, /* append: the handle belongs to another user key */
	SP_DIRLOG_TOKEN_TAKEN, /* append: a device of the card is listed by another handle */
	SP_DIRLOG_STALE,       /* append: issued_at is not later than the handle's last card */
	SP_DIRLOG_BUSY,        /* append: still conflicting after max_retries */
	SP_DIRLOG_UNAVAILABLE, /* the store is down or timed out */
	SP_DIRLOG_ERROR,       /* Redis answered something unexpected, or signing failed */
	SP_DIRLOG_LIMITED,     /* lookup, head: the requester is over its lookup rate */
};

const char *sp_dirlog_status_name(int status);

/* The head on the wire and in Redis: size u64 | timestamp_ms u64 | root[32] | sig_len u16 |
 * sig (DER ECDSA P-256 SHA-256 over SP_DIRLOG_HEAD_LABEL || size || timestamp_ms || root). */
#define SP_DIRLOG_HEAD_LABEL  "sealpush/1 tree head" /* signed with its NUL: 21 bytes */
#define SP_DIRLOG_HEAD_FIXED  (8 + 8 + SP_MERKLE_HASH_LEN + 2)
#define SP_DIRLOG_HEAD_MAX    (SP_DIRLOG_HEAD_FIXED + 80)
#define SP_DIRLOG_ENTRY_LABEL "sealpush/1 log entry" /* with its NUL: 21 bytes */
#define SP_DIRLOG_HANDLE_MAX  64
#define SP_DIRLOG_MAX_DEVICES 32

typedef struct sp_dirlog_head {
	uint64_t size;
	uint64_t timestamp_ms;
	uint8_t root[SP_MERKLE_HASH_LEN];
	const uint8_t *sig; /* into the parsed bytes */
	size_t sig_len;
} sp_dirlog_head_t;

/* Parses a head (no signature check). 0 or -EBADMSG. */
int sp_dirlog_head_parse(const uint8_t *p, size_t len, sp_dirlog_head_t *h);
/* Checks a parsed head's signature with the log's public key. 0 or -EBADMSG. */
int sp_dirlog_head_verify(const sp_dirlog_head_t *h, EVP_PKEY *log_pub);

/*
 * A log entry (leaf bytes): SP_DIRLOG_ENTRY_LABEL with its NUL || handle_len u8 || handle ||
 * card_len u32 || card. Writes it into out (room for sp_dirlog_entry_size()); returns its
 * length, or 0 for a bad handle length. Parse: 0 or -EBADMSG; pointers into p.
 */
size_t sp_dirlog_entry_size(size_t handle_len, size_t card_len);
size_t sp_dirlog_entry_build(uint8_t *out, const char *handle, size_t handle_len,
                             const uint8_t *card, size_t card_len);
int sp_dirlog_entry_parse(const uint8_t *p, size_t len, const char **handle, size_t *handle_len,
                          const uint8_t **card, size_t *card_len);

typedef struct sp_dirlog_limits {
	uint32_t max_retries;      /* append attempts before BUSY (>= 1) */
	uint32_t max_queue;        /* appends waiting in one sp_dirlog_t; more are refused -EBUSY */
	uint32_t lookup_limit;     /* lookups and head requests per requester and window; 0 = any */
	uint32_t lookup_window_ms; /* the window (a fixed window in Redis, shared by all relays) */
} sp_dirlog_limits_t;

/* 64 attempts, 1024 queued, 60 lookups per requester per 60 s. */
void sp_dirlog_limits_default(sp_dirlog_limits_t *lim);

typedef struct sp_dirlog_counters {
	uint64_t appends;        /* appends answered OK */
	uint64_t append_retries; /* attempts lost to a concurrent append and made again */
	uint64_t refused;        /* appends answered KEY_CHANGED, TOKEN_TAKEN or STALE */
	uint64_t lookups;        /* lookups answered OK */
	uint64_t not_found;      /* lookups answered NOT_FOUND */
	uint64_t heads;          /* head requests answered OK */
	uint64_t node_reads;     /* tree nodes read from Redis for proofs and appends */
	uint64_t failures;       /* requests answered UNAVAILABLE, ERROR or BUSY */
	uint64_t limited;        /* lookups and head requests answered LIMITED */
} sp_dirlog_counters_t;

/*
 * A log on `store` (whose event base is `base`), signing heads with `log_key` (a P-256 private key;
 * the log takes a reference). Returns NULL on a bad argument or out of memory.
 */
struct event_base;
sp_dirlog_t *sp_dirlog_new(struct event_base *base, sp_store_t *store, EVP_PKEY *log_key,
                           const sp_dirlog_limits_t *lim);
/* Frees the log (before its store): queued appends get UNAVAILABLE now, requests out in the
 * store get it when the store answers them (at the latest in sp_store_free), and the log's
 * memory goes with the last of them. Not from inside a log callback. NULL ok. */
void sp_dirlog_free(sp_dirlog_t *d);
void sp_dirlog_counters(const sp_dirlog_t *d, sp_dirlog_counters_t *out);

/* What a request answers with. Pointers are valid during the callback only. */
typedef struct sp_dirlog_answer {
	int status;
	uint64_t index;       /* append, lookup: the leaf */
	const uint8_t *entry; /* lookup: the leaf's bytes */
	size_t entry_len;
	const uint8_t *head; /* OK: the head (wire form) the proof is against */
	size_t head_len;
	uint64_t old_size; /* head: the size the consistency proof starts from (0: no proof) */
	uint32_t retry_after_ms; /* LIMITED: when the requester's window ends */
	uint32_t hist_left;      /* history: the handle's entries after this one */
	uint8_t proof[SP_MERKLE_MAX_PROOF][SP_MERKLE_HASH_LEN]; /* lookup: inclusion; head: cons. */
	unsigned proof_count;
	/* lookup with an old_size: the consistency proof from it to the same head */
	uint8_t cproof[SP_MERKLE_MAX_PROOF][SP_MERKLE_HASH_LEN];
	unsigned cproof_count;
} sp_dirlog_answer_t;

typedef void (*sp_dirlog_cb)(const sp_dirlog_answer_t *a, void *arg);

/*
 * Appends entry (built with sp_dirlog_entry_build for handle) as the handle's new card:
 * ukey_fp is SHA-256 of the user key's SPKI (a handle keeps its first user key for ever),
 * tokens the card's devices (each may belong to this handle only; tokens of the handle's
 * previous card that are not listed any more stop resolving), issued_at must exceed the
 * previous card's. Answers OK with index and the new head. Everything is copied. Returns 0,
 * -EINVAL, -ENOMEM, -EBUSY (max_queue appends waiting), -EAGAIN (the store refused the
 * request: closing), -ESHUTDOWN (the log is being freed); after a negative return cb never
 * runs.
 */
int sp_dirlog_append(sp_dirlog_t *d, const char *handle, size_t handle_len,
                     const uint8_t ukey_fp[32], const uint8_t (*tokens)[32], size_t n_tokens,
                     uint64_t issued_at, const uint8_t *entry, size_t entry_len, sp_dirlog_cb cb,
                     void *arg);

/* The latest card of a handle (token NULL) or of the handle listing device token (handle
 * NULL), with its inclusion proof in the current head and, with 0 < old_size <= the head's
 * size, the consistency proof from old_size to that same head (an old_size past it: answered
 * without one, old_size 0 in the answer). Returns as sp_dirlog_append. */
int sp_dirlog_lookup(sp_dirlog_t *d, const char *handle, size_t handle_len, const uint8_t token[32],
                     uint64_t old_size, const uint8_t requester[32], sp_dirlog_cb cb, void *arg);

/* An entry of the requester's own handle (the one whose card lists requester): the first with
 * an index above `after` (-1: the handle's first), with its inclusion proof and consistency
 * proof as sp_dirlog_lookup, and hist_left, the handle's entries after it. NOT_FOUND: no
 * handle lists the requester, or no entry comes after `after`. Counts against the requester's
 * lookup rate. Returns as sp_dirlog_append. */
int sp_dirlog_history(sp_dirlog_t *d, const uint8_t requester[32], int64_t after, uint64_t old_size,
                      sp_dirlog_cb cb, void *arg);

/* The current head and, with 0 < old_size <= its size, the consistency proof from old_size
 * (an old_size past the head, or no head yet: NOT_FOUND). Returns as sp_dirlog_append.
 *
 * Both count against `requester` (a device token; NULL: not limited): more than lookup_limit
 * in one lookup_window_ms window, on all relays together, is answered LIMITED with
 * retry_after_ms. The count lives in Redis (sp:{dir}:rl:TOKEN, expiring with the window). */
int sp_dirlog_head(sp_dirlog_t *d, uint64_t old_size, const uint8_t requester[32], sp_dirlog_cb cb,
                   void *arg);

/* The Lua source of "append" or "lookup" (tests and tools), or NULL. */
const char *sp_dirlog_script(const char *name);

#endif
