/*
 * sp_registry.h: which connection receives for which token, across all workers.
 *
 * A connection is named across threads by an sp_connref_t (worker, slot, generation), never
 * by pointer: only its worker may turn a reference back into a connection
 * (sp_worker_conn), and a stale one misses. The registry maps a device token to the
 * reference of its receiving connection; it is sharded, each shard with its own lock, and
 * any thread may call it.
 */
#ifndef SP_REGISTRY_H
#define SP_REGISTRY_H

#include <pthread.h>
#include <stdint.h>

#include "sp_tokmap.h"

/* A reference to a connection that any thread may hold: worker, slot and generation. */
typedef uint64_t sp_connref_t;
#define SP_CONNREF(worker, slot, gen)                                                              \
	(((uint64_t)(worker) << 56) | ((uint64_t)(slot) << 32) | (uint64_t)(gen))
#define SP_CONNREF_WORKER(r) ((unsigned)((r) >> 56))
#define SP_CONNREF_SLOT(r)   ((uint32_t)(((r) >> 32) & 0xFFFFFF))
#define SP_CONNREF_GEN(r)    ((uint32_t)(r))
#define SP_MAX_WORKERS       64

/* Global registry: token -> receiving connection. Sharded; each shard has its own lock. */
#define SP_REGISTRY_SHARDS 64
typedef struct sp_registry {
	struct {
		pthread_mutex_t lock;
		sp_tokmap_t map;
	} shard[SP_REGISTRY_SHARDS];
} sp_registry_t;

void sp_registry_init(sp_registry_t *r);
void sp_registry_destroy(sp_registry_t *r);
/* Returns the connection registered for token, or 0. */
sp_connref_t sp_registry_get(sp_registry_t *r, const uint8_t token[32]);
/* Registers ref for token; returns the reference it replaced (0 if none) or -ENOMEM. */
int sp_registry_set(sp_registry_t *r, const uint8_t token[32], sp_connref_t ref, sp_connref_t *old);
/* Unregisters token if (and only if) it still names ref. */
void sp_registry_del(sp_registry_t *r, const uint8_t token[32], sp_connref_t ref);

#endif
