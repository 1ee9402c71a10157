/*
 * sp_anoncache.c: the sealed-sender recipient cache (sp_anoncache.h).
 */
#include <errno.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "sp_anoncache.h"

int sp_anoncache_init(sp_anoncache_t *c, uint32_t entries, uint64_t ttl_ms, uint64_t window_ms)
{
	uint32_t sets = 1;

	memset(c, 0, sizeof(*c));
	c->window_ms = window_ms;
	if (entries < SP_ANONCACHE_WAYS || ttl_ms == 0)
		return 0;
	while ((uint64_t)sets * 2 * SP_ANONCACHE_WAYS <= entries)
		sets *= 2;
	c->ents = calloc((size_t)sets * SP_ANONCACHE_WAYS, sizeof(*c->ents));
	c->dirty = calloc((size_t)sets * SP_ANONCACHE_WAYS, sizeof(*c->dirty));
	if (!c->ents || !c->dirty) {
		sp_anoncache_free(c);
		return -ENOMEM;
	}
	c->n_sets = sets;
	c->ttl_ms = ttl_ms;
	return 0;
}

void sp_anoncache_free(sp_anoncache_t *c)
{
	if (!c)
		return;
	free(c->ents);
	free(c->dirty);
	c->ents = NULL;
	c->dirty = NULL;
	c->n_sets = 0;
	c->n_dirty = 0;
}

bool sp_anoncache_on(const sp_anoncache_t *c)
{
	return c->ents != NULL;
}

/* Tokens are SHA-256 outputs (of the device's key): any four of their bytes spread evenly. */
static sp_anoncache_ent_t *set_of(sp_anoncache_t *c, const uint8_t token[SP_TOKEN_LEN])
{
	uint32_t h = (uint32_t)token[0] | (uint32_t)token[1] << 8 | (uint32_t)token[2] << 16 |
	             (uint32_t)token[3] << 24;

	return c->ents + (size_t)(h & (c->n_sets - 1)) * SP_ANONCACHE_WAYS;
}

static sp_anoncache_ent_t *find(sp_anoncache_t *c, const uint8_t token[SP_TOKEN_LEN])
{
	sp_anoncache_ent_t *set = set_of(c, token);

	for (unsigned i = 0; i < SP_ANONCACHE_WAYS; i++)
		if (set[i].used && memcmp(set[i].token, token, SP_TOKEN_LEN) == 0)
			return &set[i];
	return NULL;
}

sp_anoncache_ent_t *sp_anoncache_get(sp_anoncache_t *c, const uint8_t token[SP_TOKEN_LEN],
                                     uint64_t now, uint64_t epoch, enum sp_anoncache_found *found)
{
	sp_anoncache_ent_t *e;

	*found = SP_ANONCACHE_MISS;
	if (!c->ents || !(e = find(c, token)))
		return NULL;
	if (now >= e->expires || e->epoch != epoch) {
		*found = SP_ANONCACHE_STALE;
		return NULL;
	}
	*found = SP_ANONCACHE_HIT;
	return e;
}

static void fill_flush(const sp_anoncache_ent_t *e, sp_anoncache_flush_t *f)
{
	memcpy(f->token, e->token, SP_TOKEN_LEN);
	f->id = e->id;
	f->mode = e->mode;
	f->n_ver = e->n_ver;
	memcpy(f->ver, e->ver, (size_t)e->n_ver * SP_ACCESS_KEY_LEN);
	f->d_all = e->p_all;
	memcpy(f->d_key, e->p_key, sizeof(f->d_key));
}

static void mark_dirty(sp_anoncache_t *c, sp_anoncache_ent_t *e)
{
	e->dirty = true;
	if (!e->listed) {
		e->listed = true;
		c->dirty[c->n_dirty++] = (uint32_t)(e - c->ents);
	}
}

sp_anoncache_ent_t *sp_anoncache_put(sp_anoncache_t *c, const uint8_t token[SP_TOKEN_LEN],
                                     uint64_t now, uint64_t epoch, uint8_t mode,
                                     const uint8_t (*ver)[SP_ACCESS_KEY_LEN], unsigned n_ver,
                                     int64_t all, const int64_t *keys, int64_t pttl_ms,
                                     sp_anoncache_flush_t *evicted, bool *has_evicted)
{
	sp_anoncache_ent_t *e, *set, old;
	bool listed;

	*has_evicted = false;
	if (!c->ents)
		return NULL;
	if (n_ver > SP_ACCESS_SET_MAX)
		n_ver = SP_ACCESS_SET_MAX;
	e = find(c, token);
	if (!e) {
		set = set_of(c, token);
		for (unsigned i = 0; i < SP_ANONCACHE_WAYS && !e; i++)
			if (!set[i].used || (now >= set[i].expires && !set[i].dirty))
				e = &set[i];
		for (unsigned i = 0; i < SP_ANONCACHE_WAYS && !e; i++)
			if (now >= set[i].expires)
				e = &set[i];
		if (!e) {
			e = &set[0];
			for (unsigned i = 1; i < SP_ANONCACHE_WAYS; i++)
				if (set[i].expires < e->expires)
					e = &set[i];
		}
		if (e->used && now < e->expires)
			c->evictions++;
		if (e->used && e->dirty) {
			fill_flush(e, evicted);
			*has_evicted = true;
		}
		e->used = false;
	}
	old = *e;
	listed = e->listed;
	memset(e, 0, sizeof(*e));
	memcpy(e->token, token, SP_TOKEN_LEN);
	e->used = true;
	e->listed = listed;
	e->mode = mode;
	e->n_ver = (uint8_t)n_ver;
	if (n_ver > 0)
		memcpy(e->ver, ver, (size_t)n_ver * SP_ACCESS_KEY_LEN);
	e->id = ++c->next_id;
	e->expires = now + c->ttl_ms;
	e->epoch = epoch;
	e->win_end = now + (pttl_ms > 0 ? (uint64_t)pttl_ms : c->window_ms);
	e->n_all = pttl_ms > 0 ? all : 0;
	for (unsigned i = 0; i < n_ver; i++)
		e->n_key[i] = pttl_ms > 0 ? keys[i] : 0;
	if (old.used && old.dirty) { /* the same token: what was accepted here stays counted */
		e->p_all = old.p_all;
		e->n_all += old.p_all;
		for (unsigned i = 0; i < n_ver; i++)
			for (unsigned j = 0; j < old.n_ver; j++)
				if (memcmp(e->ver[i], old.ver[j], SP_ACCESS_KEY_LEN) == 0) {
					e->p_key[i] = old.p_key[j];
					e->n_key[i] += old.p_key[j];
				}
		mark_dirty(c, e);
	}
	return e;
}

enum sp_anoncache_verdict sp_anoncache_decide(sp_anoncache_t *c, sp_anoncache_ent_t *e,
                                              const uint8_t verifier[SP_ACCESS_KEY_LEN],
                                              uint64_t now, int64_t key_limit,
                                              int64_t recipient_limit, bool *newly_dirty)
{
	int held = -1;
	int64_t k;

	*newly_dirty = false;
	/* Every listed verifier is compared, whatever matches, so that the work does not
	 * depend on which one (if any) the key is. */
	for (unsigned i = 0; i < e->n_ver; i++)
		if (CRYPTO_memcmp(e->ver[i], verifier, SP_ACCESS_KEY_LEN) == 0)
			held = (int)i;
	if (!(e->mode == SP_ANON_ANYONE || (e->mode == SP_ANON_KEY_HOLDERS && held >= 0)))
		return SP_ANONCACHE_DENIED;
	if (now >= e->win_end) { /* the window Redis knew has ended: only what is pending */
		e->n_all = e->p_all;
		memcpy(e->n_key, e->p_key, sizeof(e->n_key));
		e->win_end = now + c->window_ms;
	}
	k = e->mode == SP_ANON_KEY_HOLDERS ? e->n_key[held] : e->n_all;
	if (recipient_limit > 0 && e->n_all >= recipient_limit)
		return SP_ANONCACHE_RATE_RECIPIENT;
	if (key_limit > 0 && k >= key_limit)
		return SP_ANONCACHE_RATE_KEY;
	e->n_all++;
	e->p_all++;
	if (e->mode == SP_ANON_KEY_HOLDERS) {
		e->n_key[held]++;
		e->p_key[held]++;
	}
	*newly_dirty = !e->dirty;
	mark_dirty(c, e);
	return SP_ANONCACHE_ACCEPTED;
}

bool sp_anoncache_take(sp_anoncache_t *c, sp_anoncache_flush_t *out)
{
	while (c->n_dirty > 0) {
		sp_anoncache_ent_t *e = &c->ents[c->dirty[--c->n_dirty]];

		e->listed = false;
		if (!e->used || !e->dirty)
			continue;
		fill_flush(e, out);
		e->p_all = 0;
		memset(e->p_key, 0, sizeof(e->p_key));
		e->dirty = false;
		return true;
	}
	return false;
}

void sp_anoncache_applied(sp_anoncache_t *c, const sp_anoncache_flush_t *f, bool ok, int64_t all,
                          const int64_t *keys, int64_t pttl_ms, uint64_t now)
{
	sp_anoncache_ent_t *e;

	if (!c->ents || !(e = find(c, f->token)) || e->id != f->id)
		return;
	if (!ok) {
		e->p_all += f->d_all;
		for (unsigned i = 0; i < e->n_ver; i++)
			e->p_key[i] += f->d_key[i];
		mark_dirty(c, e);
		return;
	}
	e->n_all = all + e->p_all;
	for (unsigned i = 0; i < e->n_ver; i++)
		e->n_key[i] = (e->mode == SP_ANON_KEY_HOLDERS ? keys[i] : 0) + e->p_key[i];
	e->win_end = now + (pttl_ms > 0 ? (uint64_t)pttl_ms : c->window_ms);
}
