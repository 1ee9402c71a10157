/*
 * sp_seal_replay: the replay cache of a recipient (PROTOCOL.md 13.6). It remembers which
 * (sender token, msg_id) pairs were accepted until each one's replay window has closed, so that
 * a copy arriving while its window is open is refused as a duplicate, and a copy arriving later
 * is refused as stale by the window check itself.
 *
 * Who calls what: sp_seal_open() asks sp_seal_replay_seen() and refuses duplicates; once the
 * application has processed (stored, shown) a message it calls sp_seal_replay_add(), so that a
 * crash between the two gets the message delivered again rather than lost. The cache is bounded
 * by a limit on entries. When it is full it first drops entries whose window has closed; if
 * that is not enough it drops the entries with the oldest sent_at and raises its floor to the
 * newest sent_at dropped: from then on a message sent at or before the floor is refused as
 * stale (fail safe: under pressure the window shrinks; a replay is never let through).
 *
 * Not thread-safe: one cache per recipient, used by one thread at a time. Nothing blocks except
 * save and load (file I/O). Functions return 0 or a negative code (sp_seal.h errors, errno).
 */
#ifndef SP_SEAL_REPLAY_H
#define SP_SEAL_REPLAY_H

#include <stddef.h>
#include <stdint.h>

#include "sp_identity.h"

#define SP_SEAL_REPLAY_LIMIT_DEFAULT 65536
#define SP_SEAL_REPLAY_LIMIT_MAX     (1u << 24)

struct sp_seal_replay;

/* Counters, for metrics. */
struct sp_seal_replay_stats {
	size_t entries;       /* remembered now */
	size_t limit;         /* most entries */
	uint64_t duplicates;  /* sp_seal_replay_seen() answers that were duplicates */
	uint64_t below_floor; /* answers refused because the message was at or below the floor */
	uint64_t expired;     /* entries dropped because their window had closed */
	uint64_t evicted;     /* entries dropped early because the cache was full */
	uint64_t floor_ms;    /* messages sent at or before this are refused (0: none) */
};

/*
 * Makes an empty cache holding at most limit entries (1 to SP_SEAL_REPLAY_LIMIT_MAX; 0 means
 * SP_SEAL_REPLAY_LIMIT_DEFAULT). Memory grows with use, to at most 128 bytes per entry.
 * Returns 0 and *out, -EINVAL, -ENOMEM.
 */
int sp_seal_replay_new(size_t limit, struct sp_seal_replay **out);

/* Frees the cache. Accepts NULL. */
void sp_seal_replay_free(struct sp_seal_replay *r);

/*
 * Asks whether a message may be accepted: returns 0 if it is new, SP_SEAL_ERR_DUPLICATE if the
 * pair is remembered, SP_SEAL_ERR_STALE if sent_at_ms is at or below the floor. Records
 * nothing.
 */
int sp_seal_replay_seen(struct sp_seal_replay *r, const uint8_t sender[SP_TOKEN_LEN],
                        const uint8_t msg_id[16], uint64_t sent_at_ms);

/*
 * Remembers an accepted message until window_end_ms (the last moment its window is open). now_ms
 * drives eviction. Returns 0 (also if it was remembered already), SP_SEAL_ERR_STALE if sent_at_ms
 * is at or below the floor, -EINVAL, -ENOMEM.
 */
int sp_seal_replay_add(struct sp_seal_replay *r, const uint8_t sender[SP_TOKEN_LEN],
                       const uint8_t msg_id[16], uint64_t sent_at_ms, uint64_t window_end_ms,
                       uint64_t now_ms);

/* Drops the entries whose window closed before now_ms. Returns how many it dropped. */
size_t sp_seal_replay_expire(struct sp_seal_replay *r, uint64_t now_ms);

void sp_seal_replay_stats(const struct sp_seal_replay *r, struct sp_seal_replay_stats *out);

/*
 * Writes the cache (its floor and its entries still open at now_ms) to path atomically: a
 * temporary file (mode 0600) in the same directory, fsync, rename. Blocks on disk I/O. Returns
 * 0 or -errno.
 */
int sp_seal_replay_save(const struct sp_seal_replay *r, const char *path, uint64_t now_ms);

/*
 * Adds the entries of a file written by sp_seal_replay_save() that are still open at now_ms,
 * and raises the floor to the file's floor. A missing file is -ENOENT (the caller decides
 * whether a first start is fine); a file that is not a replay cache, or is truncated, is
 * SP_SEAL_ERR_REPLAY_FILE and changes nothing. Blocks on disk I/O.
 */
int sp_seal_replay_load(struct sp_seal_replay *r, const char *path, uint64_t now_ms);

#endif
