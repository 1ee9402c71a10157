/*
 * sp_wpcache: a worker's cache of capability records (the Web Push door, sp_provider.c), so
 * that a push to a busy subscription does not cost a Redis look-up each time.
 *
 * Bounded: at most `entries` records (4-way set associative: a record evicts the oldest of its
 * set), each kept at most ttl_ms from its look-up (never refreshed by a hit). Only records
 * that name a device are kept (no 404s, no removed ones: an unknown capability always asks
 * Redis, so random paths cannot evict anything).
 *
 * Removal: a record carries the removal epoch read when its look-up was sent. The relay
 * bumps its epoch (sp_server_t.wp_epoch, shared by the workers) when a REMOVE is written,
 * before the device is answered; a record of an older epoch is never used again. So, on this
 * relay, a push that starts after the device's REMOVE was answered always reads Redis (410).
 * A REMOVE made through another relay on the same Redis is seen here at most ttl_ms later.
 *
 * Pure: no I/O, no locks; one cache per worker, used only by its thread.
 */
#ifndef SP_WPCACHE_H
#define SP_WPCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sp_vapid.h"
#include "sp_webpush.h"

#define SP_WPCACHE_WAYS 4

typedef struct sp_wpcache_rec {
	uint8_t hash[32]; /* the capability's SHA-256 */
	uint8_t token[32];
	uint8_t sub[SP_WP_SUB_ID_LEN];
	uint8_t ask[SP_VAPID_KEY_LEN];
	bool has_ask;
	bool used;
	uint64_t expires; /* monotonic ms */
	uint64_t epoch;
} sp_wpcache_rec_t;

typedef struct sp_wpcache {
	sp_wpcache_rec_t *recs; /* n_sets * SP_WPCACHE_WAYS, NULL when off */
	uint32_t n_sets;        /* a power of two */
	uint64_t ttl_ms;
	uint64_t hits, misses, stale, evictions; /* read by the owner's metrics */
} sp_wpcache_t;

/* Makes a cache of at most entries records (rounded down to a power of two times the ways;
 * 0 or ttl_ms 0 = off: every get misses, put does nothing). 0, or -ENOMEM. */
int sp_wpcache_init(sp_wpcache_t *c, uint32_t entries, uint64_t ttl_ms);
/* Frees it; NULL-safe, and safe on a zeroed or failed cache. */
void sp_wpcache_free(sp_wpcache_t *c);
/* The record of hash if it is younger than ttl_ms and of the current epoch; NULL otherwise
 * (a record too old or of an older epoch is dropped and counted as stale). The pointer is
 * valid until the next put or drop. */
const sp_wpcache_rec_t *sp_wpcache_get(sp_wpcache_t *c, const uint8_t hash[32], uint64_t now,
                                       uint64_t epoch);
/* Keeps the record read by a look-up sent at epoch (ask NULL: unrestricted), until
 * now + ttl_ms; replaces one of the same hash, else takes a free or expired way, else evicts
 * the one that expires first. Nothing is kept if epoch is no longer the current epoch cur. */
void sp_wpcache_put(sp_wpcache_t *c, const uint8_t hash[32], const uint8_t token[32],
                    const uint8_t sub[SP_WP_SUB_ID_LEN], const uint8_t *ask, uint64_t now,
                    uint64_t epoch, uint64_t cur);
/* Forgets hash (its subscription was removed here). */
void sp_wpcache_drop(sp_wpcache_t *c, const uint8_t hash[32]);

#endif
