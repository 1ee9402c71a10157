/*
 * sp_wpcache.c: the capability cache of the Web Push door (sp_wpcache.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sp_wpcache.h"

int sp_wpcache_init(sp_wpcache_t *c, uint32_t entries, uint64_t ttl_ms)
{
	uint32_t sets = 1;

	memset(c, 0, sizeof(*c));
	if (entries < SP_WPCACHE_WAYS || ttl_ms == 0)
		return 0;
	while ((uint64_t)sets * 2 * SP_WPCACHE_WAYS <= entries)
		sets *= 2;
	c->recs = calloc((size_t)sets * SP_WPCACHE_WAYS, sizeof(*c->recs));
	if (!c->recs)
		return -ENOMEM;
	c->n_sets = sets;
	c->ttl_ms = ttl_ms;
	return 0;
}

void sp_wpcache_free(sp_wpcache_t *c)
{
	if (!c)
		return;
	free(c->recs);
	c->recs = NULL;
	c->n_sets = 0;
}

/* The hash is a SHA-256 of random bytes: any four of its bytes spread evenly. */
static sp_wpcache_rec_t *set_of(sp_wpcache_t *c, const uint8_t hash[32])
{
	uint32_t h = (uint32_t)hash[0] | (uint32_t)hash[1] << 8 | (uint32_t)hash[2] << 16 |
	             (uint32_t)hash[3] << 24;

	return c->recs + (size_t)(h & (c->n_sets - 1)) * SP_WPCACHE_WAYS;
}

const sp_wpcache_rec_t *sp_wpcache_get(sp_wpcache_t *c, const uint8_t hash[32], uint64_t now,
                                       uint64_t epoch)
{
	sp_wpcache_rec_t *set;

	if (!c->recs) {
		c->misses++;
		return NULL;
	}
	set = set_of(c, hash);
	for (unsigned i = 0; i < SP_WPCACHE_WAYS; i++) {
		sp_wpcache_rec_t *e = &set[i];

		if (!e->used || memcmp(e->hash, hash, 32) != 0)
			continue;
		if (now >= e->expires || e->epoch != epoch) {
			e->used = false;
			c->stale++;
			c->misses++;
			return NULL;
		}
		c->hits++;
		return e;
	}
	c->misses++;
	return NULL;
}

void sp_wpcache_put(sp_wpcache_t *c, const uint8_t hash[32], const uint8_t token[32],
                    const uint8_t sub[SP_WP_SUB_ID_LEN], const uint8_t *ask, uint64_t now,
                    uint64_t epoch, uint64_t cur)
{
	sp_wpcache_rec_t *set, *e = NULL;

	if (!c->recs || epoch != cur)
		return;
	set = set_of(c, hash);
	for (unsigned i = 0; i < SP_WPCACHE_WAYS && !e; i++)
		if (set[i].used && memcmp(set[i].hash, hash, 32) == 0)
			e = &set[i];
	for (unsigned i = 0; i < SP_WPCACHE_WAYS && !e; i++)
		if (!set[i].used || now >= set[i].expires || set[i].epoch != cur)
			e = &set[i];
	if (!e) {
		e = &set[0];
		for (unsigned i = 1; i < SP_WPCACHE_WAYS; i++)
			if (set[i].expires < e->expires)
				e = &set[i];
		c->evictions++;
	}
	memcpy(e->hash, hash, 32);
	memcpy(e->token, token, 32);
	memcpy(e->sub, sub, SP_WP_SUB_ID_LEN);
	e->has_ask = ask != NULL;
	if (ask)
		memcpy(e->ask, ask, SP_VAPID_KEY_LEN);
	e->expires = now + c->ttl_ms;
	e->epoch = epoch;
	e->used = true;
}

void sp_wpcache_drop(sp_wpcache_t *c, const uint8_t hash[32])
{
	sp_wpcache_rec_t *set;

	if (!c->recs)
		return;
	set = set_of(c, hash);
	for (unsigned i = 0; i < SP_WPCACHE_WAYS; i++)
		if (set[i].used && memcmp(set[i].hash, hash, 32) == 0)
			set[i].used = false;
}
