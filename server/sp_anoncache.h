/*
 * sp_anoncache: a worker's cache of sealed-sender recipients (sp_anon.c, PROTOCOL.md 17.5),
 * so that an anonymous recipient does not cost a Redis script per message.
 *
 * An entry holds what Redis has for one recipient token: its switch (anon_mode), its
 * verifiers, and the counters of the current rate window (anonymous messages accepted for
 * the recipient, and per verifier). A recipient that never registered, or refuses, is kept
 * like any other (mode 0, no verifiers): every refusal costs the same work, a fetch on a
 * miss and a local compare on a hit.
 *
 * Lifetime: an entry is used at most ttl_ms after its fetch (never refreshed by a hit), and
 * only while the epoch it was fetched at is still the epoch of its token (sp_server_t.
 * anon_epochs, bumped by an ACCESS_SET on this relay): stale, it is fetched again, keeping
 * the counts accepted here and not yet written.
 *
 * Counting: an accepted message counts at once in the entry (n_*) and as pending (p_*); the
 * caller takes the pending counts of dirty entries (sp_anoncache_take) and adds them in Redis
 * in one script per recipient, whose answer (the totals of every relay) replaces the entry's
 * view (sp_anoncache_applied). The limits are thus exact for the traffic of one worker, and
 * other workers' and relays' counts are seen one flush later.
 *
 * Bounded: at most `entries` entries (4-way set associative; a new token takes a free or
 * expired way, else evicts the one that expires first, handing back its pending counts).
 * Pure: no I/O, no locks; one cache per worker, used only by its thread.
 */
#ifndef SP_ANONCACHE_H
#define SP_ANONCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sp_frame.h"

#define SP_ANONCACHE_WAYS 4

typedef struct sp_anoncache_ent {
	uint8_t token[SP_TOKEN_LEN];
	bool used;
	bool dirty;  /* has pending counts */
	bool listed; /* its index is in the dirty list */
	uint8_t mode;
	uint8_t n_ver;
	uint8_t ver[SP_ACCESS_SET_MAX][SP_ACCESS_KEY_LEN];
	uint64_t id;      /* this fetch's number: a flush answer for another is ignored */
	uint64_t expires; /* monotonic ms */
	uint64_t epoch;
	uint64_t win_end; /* monotonic ms: the end of the rate window as Redis last said */
	int64_t n_all, n_key[SP_ACCESS_SET_MAX]; /* accepted in the window, as known here */
	int64_t p_all, p_key[SP_ACCESS_SET_MAX]; /* accepted here, not yet in Redis */
} sp_anoncache_ent_t;

/* Pending counts of one recipient, to add in Redis (a copy: the entry may go meanwhile). */
typedef struct sp_anoncache_flush {
	uint8_t token[SP_TOKEN_LEN];
	uint64_t id;
	uint8_t mode;
	uint8_t n_ver;
	uint8_t ver[SP_ACCESS_SET_MAX][SP_ACCESS_KEY_LEN];
	int64_t d_all, d_key[SP_ACCESS_SET_MAX];
} sp_anoncache_flush_t;

typedef struct sp_anoncache {
	sp_anoncache_ent_t *ents; /* n_sets * SP_ANONCACHE_WAYS, NULL when off */
	uint32_t n_sets;          /* a power of two */
	uint32_t *dirty;          /* indexes of listed entries */
	uint32_t n_dirty;
	uint64_t ttl_ms;
	uint64_t window_ms;
	uint64_t next_id;
	uint64_t evictions; /* entries of another token replaced before they expired */
} sp_anoncache_t;

/* What sp_anoncache_get found. */
enum sp_anoncache_found { SP_ANONCACHE_HIT, SP_ANONCACHE_MISS, SP_ANONCACHE_STALE };

/* Results of sp_anoncache_decide, in the order of enum sp_anon_result (sp_anon.h). */
enum sp_anoncache_verdict {
	SP_ANONCACHE_ACCEPTED,
	SP_ANONCACHE_DENIED,
	SP_ANONCACHE_RATE_KEY,
	SP_ANONCACHE_RATE_RECIPIENT
};

/* Makes a cache of at most entries entries (rounded down to a power of two times the ways;
 * fewer than the ways, or ttl_ms 0 = off: every get misses); window_ms is anon_rate_window.
 * 0, or -ENOMEM. */
int sp_anoncache_init(sp_anoncache_t *c, uint32_t entries, uint64_t ttl_ms, uint64_t window_ms);
/* Frees it; NULL-safe, and safe on a zeroed or failed cache. */
void sp_anoncache_free(sp_anoncache_t *c);
/* Whether the cache is on. */
bool sp_anoncache_on(const sp_anoncache_t *c);
/* The entry of token if younger than ttl_ms and fetched at epoch; NULL otherwise, with *found
 * saying why (an entry too old or of another epoch is STALE, and stays until the next put,
 * which keeps its pending counts). The pointer is valid until the next put. */
sp_anoncache_ent_t *sp_anoncache_get(sp_anoncache_t *c, const uint8_t token[SP_TOKEN_LEN],
                                     uint64_t now, uint64_t epoch, enum sp_anoncache_found *found);
/* Keeps what a fetch sent at epoch read from Redis: mode (0 to 2), n_ver verifiers, the
 * window's counters (all, and one per verifier, in the order of ver) and its remaining
 * lifetime pttl_ms (<= 0: no window yet). Replaces the entry of the same token (keeping its
 * pending counts, per verifier where the verifier stays), else takes a way; if that evicts
 * another token's entry with pending counts, they are copied to *evicted and true is stored
 * in *has_evicted. Returns the entry (NULL when off). */
sp_anoncache_ent_t *sp_anoncache_put(sp_anoncache_t *c, const uint8_t token[SP_TOKEN_LEN],
                                     uint64_t now, uint64_t epoch, uint8_t mode,
                                     const uint8_t (*ver)[SP_ACCESS_KEY_LEN], unsigned n_ver,
                                     int64_t all, const int64_t *keys, int64_t pttl_ms,
                                     sp_anoncache_flush_t *evicted, bool *has_evicted);
/* The check of one message with verifier for e's recipient, against key_limit and
 * recipient_limit (0 = none), as the script of sp_anon.c does it: mode 2 accepts any key
 * (the key limit then applies to the recipient's count), mode 1 a listed verifier (compared
 * with every listed one, in constant time), mode 0 none. An accepted message is counted;
 * *newly_dirty is set when e had nothing pending before. */
enum sp_anoncache_verdict sp_anoncache_decide(sp_anoncache_t *c, sp_anoncache_ent_t *e,
                                              const uint8_t verifier[SP_ACCESS_KEY_LEN],
                                              uint64_t now, int64_t key_limit,
                                              int64_t recipient_limit, bool *newly_dirty);
/* Takes the pending counts of one dirty entry into *out (they are pending no more). false
 * when no entry is dirty. */
bool sp_anoncache_take(sp_anoncache_t *c, sp_anoncache_flush_t *out);
/* The answer to a flush: ok with Redis's totals after the addition (all, and per verifier in
 * the order of f->ver) and the window's remaining pttl_ms; or !ok (Redis failed): the counts
 * are pending again. Ignored when f's entry was replaced meanwhile (the counts of a failed
 * flush are then lost to the limits). */
void sp_anoncache_applied(sp_anoncache_t *c, const sp_anoncache_flush_t *f, bool ok, int64_t all,
                          const int64_t *keys, int64_t pttl_ms, uint64_t now);

#endif
