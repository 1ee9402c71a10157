/*
 * sp_tokmap: a hash map from 32-byte device tokens to a pointer-sized value.
 *
 * Open addressing with linear probing and backward-shift deletion (no tombstones), so lookups
 * stay short however many devices come and go. The slot comes from a keyed mix of all 32
 * bytes, with the key drawn at creation. The map only ever holds tokens of connected devices
 * (SHA-256 of keys the operator's CA certified), which no sender can choose; a sender can only
 * choose which tokens are looked up, and an absent token costs one cluster scan. Sets of
 * sender-chosen tokens are not kept in such a map (see repeated() in sp_session.c). Not
 * thread-safe: each owner (a worker, or a registry shard under its lock) has its own.
 */
#ifndef SP_TOKMAP_H
#define SP_TOKMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct sp_tokmap_entry {
	uint8_t token[32];
	uintptr_t value; /* 0 means empty: values must be non-zero */
} sp_tokmap_entry_t;

typedef struct sp_tokmap {
	sp_tokmap_entry_t *slots;
	size_t mask; /* capacity - 1; capacity is a power of two, 0 slots until first insert */
	size_t count;
	uint64_t key;
} sp_tokmap_t;

/* Initialises an empty map with a random key; allocates nothing. */
void sp_tokmap_init(sp_tokmap_t *m);
void sp_tokmap_free(sp_tokmap_t *m);

/* The map's keyed hash of a token (for callers that build their own short-lived sets). */
uint64_t sp_tokmap_hash(const sp_tokmap_t *m, const uint8_t token[32]);

/* Returns the value for token, or 0. */
uintptr_t sp_tokmap_get(const sp_tokmap_t *m, const uint8_t token[32]);

/* Sets token to value (non-zero). Returns 0 and the previous value (0 if none) in *old,
 * -EINVAL for value 0, or -ENOMEM if the map had to grow and could not. */
int sp_tokmap_put(sp_tokmap_t *m, const uint8_t token[32], uintptr_t value, uintptr_t *old);

/* Removes token if its value is `value` (or any value if `value` is 0). Returns 1 if removed. */
int sp_tokmap_del(sp_tokmap_t *m, const uint8_t token[32], uintptr_t value);

#endif
