/*
 * sp_registry.c: which connection receives for which token, across all workers.
 *
 * The router asks it only when the recipient is not registered on its own worker (whose local
 * map it checks first, without a lock), so on the same-worker path no lock is taken. Shards
 * are picked by a token byte: tokens are SHA-256 outputs, spread evenly, and an attacker who
 * names tokens in a SEND only chooses which shard it reads.
 */
#include "sp_registry.h"

static unsigned shard_of(const uint8_t *token)
{
	return token[31] % SP_REGISTRY_SHARDS;
}

void sp_registry_init(sp_registry_t *r)
{
	for (unsigned i = 0; i < SP_REGISTRY_SHARDS; i++) {
		pthread_mutex_init(&r->shard[i].lock, NULL);
		sp_tokmap_init(&r->shard[i].map);
	}
}

void sp_registry_destroy(sp_registry_t *r)
{
	for (unsigned i = 0; i < SP_REGISTRY_SHARDS; i++) {
		sp_tokmap_free(&r->shard[i].map);
		pthread_mutex_destroy(&r->shard[i].lock);
	}
}

sp_connref_t sp_registry_get(sp_registry_t *r, const uint8_t token[32])
{
	unsigned s = shard_of(token);
	sp_connref_t ref;

	pthread_mutex_lock(&r->shard[s].lock);
	ref = (sp_connref_t)sp_tokmap_get(&r->shard[s].map, token);
	pthread_mutex_unlock(&r->shard[s].lock);
	return ref;
}

int sp_registry_set(sp_registry_t *r, const uint8_t token[32], sp_connref_t ref, sp_connref_t *old)
{
	unsigned s = shard_of(token);
	uintptr_t prev = 0;
	int rc;

	pthread_mutex_lock(&r->shard[s].lock);
	rc = sp_tokmap_put(&r->shard[s].map, token, (uintptr_t)ref, &prev);
	pthread_mutex_unlock(&r->shard[s].lock);
	*old = (sp_connref_t)prev;
	return rc;
}

void sp_registry_del(sp_registry_t *r, const uint8_t token[32], sp_connref_t ref)
{
	unsigned s = shard_of(token);

	pthread_mutex_lock(&r->shard[s].lock);
	sp_tokmap_del(&r->shard[s].map, token, (uintptr_t)ref);
	pthread_mutex_unlock(&r->shard[s].lock);
}
