/*
 * merkle_mem.h: an in-memory node store for the sp_merkle tests: leaves appended with
 * sp_merkle_append(), nodes kept per level, read back through the sp_merkle_node_fn callback.
 * Header-only, test code.
 */
#ifndef MERKLE_MEM_H
#define MERKLE_MEM_H

#include "sp_merkle.h"

#include <stdlib.h>
#include <string.h>

struct merkle_mem {
	uint64_t size;
	uint64_t cap[SP_MERKLE_MAX_PROOF];
	uint8_t (*lv[SP_MERKLE_MAX_PROOF])[SP_MERKLE_HASH_LEN];
	unsigned reads; /* nodes read since the counter was last cleared */
};

static inline int merkle_mem_get(void *ctx, unsigned level, uint64_t index,
                                 uint8_t out[SP_MERKLE_HASH_LEN])
{
	struct merkle_mem *m = ctx;

	if (level >= SP_MERKLE_MAX_PROOF || (index + 1) << level > m->size)
		return SP_MERKLE_EINVAL; /* a node that is not complete must never be read */
	memcpy(out, m->lv[level][index], SP_MERKLE_HASH_LEN);
	m->reads++;
	return 0;
}

static inline int merkle_mem_append(struct merkle_mem *m, const uint8_t *data, size_t len)
{
	uint8_t leaf[SP_MERKLE_HASH_LEN], hashes[SP_MERKLE_MAX_PROOF][SP_MERKLE_HASH_LEN];
	unsigned levels[SP_MERKLE_MAX_PROOF], n = 0;
	int r;

	if ((r = sp_merkle_leaf_hash(data, len, leaf)) < 0 ||
	    (r = sp_merkle_append(m->size, leaf, merkle_mem_get, m, levels, hashes, &n)) < 0)
		return r;
	for (unsigned i = 0; i < n; i++) {
		unsigned l = levels[i];
		uint64_t idx = m->size >> l;

		if (idx >= m->cap[l]) {
			uint64_t nc = m->cap[l] ? m->cap[l] * 2 : 16;
			void *p = realloc(m->lv[l], nc * SP_MERKLE_HASH_LEN);

			if (p == NULL)
				return -1;
			m->lv[l] = p;
			m->cap[l] = nc;
		}
		memcpy(m->lv[l][idx], hashes[i], SP_MERKLE_HASH_LEN);
	}
	m->size++;
	return 0;
}

static inline void merkle_mem_free(struct merkle_mem *m)
{
	for (unsigned l = 0; l < SP_MERKLE_MAX_PROOF; l++)
		free(m->lv[l]);
	memset(m, 0, sizeof(*m));
}

#endif
