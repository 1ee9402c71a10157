/*
 * test_wpcache: the capability cache of the Web Push door: a hit returns what was put, a record
 * is used at most ttl_ms, a removal (epoch bump) makes every older record stale, a look-up
 * sent before a removal keeps nothing, the size bound holds with evictions counted, drop
 * forgets, and a cache of 0 entries is off.
 */
#include <string.h>

#include "sp_test.h"
#include "sp_wpcache.h"

static void key(uint8_t h[32], uint32_t i)
{
	memset(h, 0, 32);
	memcpy(h, &i, sizeof(i)); /* the set index comes from the first four bytes */
	h[31] = (uint8_t)(i * 7 + 1);
}

static void test_hit_ttl(void)
{
	sp_wpcache_t c;
	uint8_t h[32], tok[32], sub[SP_WP_SUB_ID_LEN], ask[SP_VAPID_KEY_LEN];
	const sp_wpcache_rec_t *r;

	SP_CHECK_EQ_INT(sp_wpcache_init(&c, 64, 1000), 0);
	key(h, 5);
	memset(tok, 0xAA, sizeof(tok));
	memset(sub, 0xBB, sizeof(sub));
	memset(ask, 0x04, sizeof(ask));
	SP_CHECK(sp_wpcache_get(&c, h, 100, 0) == NULL);
	sp_wpcache_put(&c, h, tok, sub, ask, 100, 0, 0);
	r = sp_wpcache_get(&c, h, 1099, 0);
	SP_CHECK(r != NULL);
	if (r) {
		SP_CHECK_MEM(r->token, tok, 32);
		SP_CHECK_MEM(r->sub, sub, SP_WP_SUB_ID_LEN);
		SP_CHECK(r->has_ask);
		SP_CHECK_MEM(r->ask, ask, SP_VAPID_KEY_LEN);
	}
	/* a hit does not extend the record's life */
	SP_CHECK(sp_wpcache_get(&c, h, 1100, 0) == NULL);
	SP_CHECK_EQ_INT(c.hits, 1);
	SP_CHECK_EQ_INT(c.misses, 2);
	SP_CHECK_EQ_INT(c.stale, 1);
	sp_wpcache_put(&c, h, tok, sub, NULL, 2000, 0, 0);
	r = sp_wpcache_get(&c, h, 2001, 0);
	SP_CHECK(r != NULL && !r->has_ask);
	sp_wpcache_free(&c);
	sp_wpcache_free(&c); /* twice is safe */
}

static void test_epoch(void)
{
	sp_wpcache_t c;
	uint8_t h[32], h2[32], tok[32] = {1}, sub[SP_WP_SUB_ID_LEN] = {2};

	SP_CHECK_EQ_INT(sp_wpcache_init(&c, 64, 60000), 0);
	key(h, 1);
	key(h2, 2);
	sp_wpcache_put(&c, h, tok, sub, NULL, 0, 3, 3);
	SP_CHECK(sp_wpcache_get(&c, h, 1, 3) != NULL);
	/* a subscription was removed (anywhere on this relay): every record read before is out */
	SP_CHECK(sp_wpcache_get(&c, h, 2, 4) == NULL);
	SP_CHECK_EQ_INT(c.stale, 1);
	SP_CHECK(sp_wpcache_get(&c, h, 3, 3) == NULL); /* dropped, not kept for later */
	/* a look-up sent at epoch 4 whose answer comes after the epoch moved to 5 keeps nothing */
	sp_wpcache_put(&c, h2, tok, sub, NULL, 4, 4, 5);
	SP_CHECK(sp_wpcache_get(&c, h2, 5, 4) == NULL);
	SP_CHECK(sp_wpcache_get(&c, h2, 5, 5) == NULL);
	/* drop forgets one record only */
	sp_wpcache_put(&c, h, tok, sub, NULL, 10, 5, 5);
	sp_wpcache_put(&c, h2, tok, sub, NULL, 10, 5, 5);
	sp_wpcache_drop(&c, h);
	SP_CHECK(sp_wpcache_get(&c, h, 11, 5) == NULL);
	SP_CHECK(sp_wpcache_get(&c, h2, 11, 5) != NULL);
	sp_wpcache_free(&c);
}

static void test_bound(void)
{
	sp_wpcache_t c;
	uint8_t h[32], tok[32] = {0}, sub[SP_WP_SUB_ID_LEN] = {0};
	unsigned found = 0;

	/* 100 entries: 16 sets of 4 ways (the largest power of two of sets that fits) */
	SP_CHECK_EQ_INT(sp_wpcache_init(&c, 100, 60000), 0);
	SP_CHECK_EQ_INT(c.n_sets, 16);
	for (uint32_t i = 0; i < 1000; i++) {
		key(h, i);
		tok[0] = (uint8_t)i;
		sp_wpcache_put(&c, h, tok, sub, NULL, i, 0, 0);
	}
	SP_CHECK_EQ_INT(c.evictions, 1000 - 64);
	for (uint32_t i = 0; i < 1000; i++) {
		const sp_wpcache_rec_t *r;

		key(h, i);
		r = sp_wpcache_get(&c, h, 1000, 0);
		if (r) {
			found++;
			SP_CHECK_EQ_INT(r->token[0], (uint8_t)i);
			SP_CHECK(i >= 1000 - 64); /* the oldest went first */
		}
	}
	SP_CHECK_EQ_INT(found, 64);
	/* the same record put again replaces itself, evicting nothing */
	key(h, 999);
	sp_wpcache_put(&c, h, tok, sub, NULL, 1001, 0, 0);
	SP_CHECK_EQ_INT(c.evictions, 1000 - 64);
	sp_wpcache_free(&c);
}

static void test_off(void)
{
	sp_wpcache_t c;
	uint8_t h[32] = {0}, tok[32] = {0}, sub[SP_WP_SUB_ID_LEN] = {0};

	SP_CHECK_EQ_INT(sp_wpcache_init(&c, 0, 1000), 0);
	sp_wpcache_put(&c, h, tok, sub, NULL, 0, 0, 0);
	SP_CHECK(sp_wpcache_get(&c, h, 1, 0) == NULL);
	SP_CHECK_EQ_INT(c.misses, 1);
	sp_wpcache_drop(&c, h);
	sp_wpcache_free(&c);
}

int main(void)
{
	SP_RUN(test_hit_ttl);
	SP_RUN(test_epoch);
	SP_RUN(test_bound);
	SP_RUN(test_off);
	return sp_test_done();
}
