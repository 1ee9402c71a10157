#include "sp_tokmap.h"

#include <errno.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#define MIN_CAP 16

void sp_tokmap_init(sp_tokmap_t *m)
{
	memset(m, 0, sizeof(*m));
	if (RAND_bytes((unsigned char *)&m->key, sizeof(m->key)) != 1)
		m->key = (uint64_t)(uintptr_t)m ^ 0x9E3779B97F4A7C15ull;
	m->key |= 1;
}

void sp_tokmap_free(sp_tokmap_t *m)
{
	if (!m)
		return;
	free(m->slots);
	m->slots = NULL;
	m->mask = 0;
	m->count = 0;
}

static uint64_t fmix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

uint64_t sp_tokmap_hash(const sp_tokmap_t *m, const uint8_t token[32])
{
	uint64_t h = m->key, w;

	/* Every byte of the token reaches every bit of the result. */
	for (int i = 0; i < 4; i++) {
		memcpy(&w, token + 8 * i, 8);
		h = fmix64(h ^ w) + (uint64_t)i;
	}
	return fmix64(h);
}

static size_t slot_of(const sp_tokmap_t *m, const uint8_t *token)
{
	return (size_t)sp_tokmap_hash(m, token) & m->mask;
}

uintptr_t sp_tokmap_get(const sp_tokmap_t *m, const uint8_t token[32])
{
	if (!m->slots)
		return 0;
	for (size_t i = slot_of(m, token);; i = (i + 1) & m->mask) {
		const sp_tokmap_entry_t *e = &m->slots[i];

		if (!e->value)
			return 0;
		if (memcmp(e->token, token, 32) == 0)
			return e->value;
	}
}

static int grow(sp_tokmap_t *m)
{
	size_t cap = m->slots ? (m->mask + 1) * 2 : MIN_CAP;
	sp_tokmap_entry_t *old = m->slots, *slots;
	size_t old_cap = m->slots ? m->mask + 1 : 0;

	slots = calloc(cap, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	m->slots = slots;
	m->mask = cap - 1;
	for (size_t j = 0; j < old_cap; j++) {
		size_t i;

		if (!old[j].value)
			continue;
		for (i = slot_of(m, old[j].token); slots[i].value; i = (i + 1) & m->mask)
			;
		slots[i] = old[j];
	}
	free(old);
	return 0;
}

int sp_tokmap_put(sp_tokmap_t *m, const uint8_t token[32], uintptr_t value, uintptr_t *old)
{
	size_t i;

	*old = 0;
	if (!value)
		return -EINVAL; /* 0 marks an empty slot */
	if (m->slots) {
		for (i = slot_of(m, token); m->slots[i].value; i = (i + 1) & m->mask) {
			if (memcmp(m->slots[i].token, token, 32) == 0) {
				*old = m->slots[i].value;
				m->slots[i].value = value;
				return 0;
			}
		}
	}
	/* A new entry: keep the load under 3/4. */
	if (!m->slots || (m->count + 1) * 4 > (m->mask + 1) * 3) {
		int r = grow(m);

		if (r < 0)
			return r;
	}
	for (i = slot_of(m, token); m->slots[i].value; i = (i + 1) & m->mask)
		;
	memcpy(m->slots[i].token, token, 32);
	m->slots[i].value = value;
	m->count++;
	return 0;
}

int sp_tokmap_del(sp_tokmap_t *m, const uint8_t token[32], uintptr_t value)
{
	size_t i, j;

	if (!m->slots)
		return 0;
	for (i = slot_of(m, token);; i = (i + 1) & m->mask) {
		if (!m->slots[i].value)
			return 0;
		if (memcmp(m->slots[i].token, token, 32) == 0)
			break;
	}
	if (value && m->slots[i].value != value)
		return 0;
	/* Backward-shift: move later members of the cluster into the hole when allowed. */
	for (j = (i + 1) & m->mask; m->slots[j].value; j = (j + 1) & m->mask) {
		size_t home = slot_of(m, m->slots[j].token);

		/* Entry j may move to i if its home is not in the (i, j] cyclic range. */
		if (((j - home) & m->mask) >= ((j - i) & m->mask)) {
			m->slots[i] = m->slots[j];
			i = j;
		}
	}
	memset(&m->slots[i], 0, sizeof(m->slots[i]));
	m->count--;
	return 1;
}
