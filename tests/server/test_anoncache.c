/*
 * test_anoncache: the sealed-sender recipient cache: a hit decides as the Redis script does
 * (mode 0, 1 with a listed or unlisted verifier, 2), an entry is used at most ttl_ms and only
 * at its epoch, the limits hold by the local count, pending counts are taken once and come
 * back after a failed flush, a flush answer brings in the other relays' counts, a re-fetch
 * keeps what was pending, eviction hands pending counts back, and a cache of 0 entries is off.
 */
#include <string.h>

#include "sp_anoncache.h"
#include "sp_test.h"

static void tok(uint8_t t[SP_TOKEN_LEN], uint32_t i)
{
	memset(t, 0, SP_TOKEN_LEN);
	memcpy(t, &i, sizeof(i)); /* the set index comes from the first four bytes */
	t[31] = (uint8_t)(i * 7 + 1);
}

static const int64_t zero[SP_ACCESS_SET_MAX];

static void test_decide(void)
{
	sp_anoncache_t c;
	sp_anoncache_flush_t ev;
	sp_anoncache_ent_t *e;
	enum sp_anoncache_found found;
	uint8_t t[SP_TOKEN_LEN], ver[2][SP_ACCESS_KEY_LEN], other[SP_ACCESS_KEY_LEN];
	bool has, nd;

	SP_CHECK_EQ_INT(sp_anoncache_init(&c, 64, 1000, 60000), 0);
	tok(t, 1);
	memset(ver[0], 1, SP_ACCESS_KEY_LEN);
	memset(ver[1], 2, SP_ACCESS_KEY_LEN);
	memset(other, 3, SP_ACCESS_KEY_LEN);
	SP_CHECK(sp_anoncache_get(&c, t, 0, 0, &found) == NULL);
	SP_CHECK_EQ_INT(found, SP_ANONCACHE_MISS);
	/* never registered: mode 0, denied whatever the key */
	e = sp_anoncache_put(&c, t, 0, 0, SP_ANON_REFUSE, NULL, 0, 0, zero, -2, &ev, &has);
	SP_CHECK(e != NULL && !has);
	SP_CHECK_EQ_INT(sp_anoncache_decide(&c, e, ver[0], 1, 0, 0, &nd), SP_ANONCACHE_DENIED);
	SP_CHECK(!nd && c.n_dirty == 0);
	/* key holders: a listed verifier passes, another does not */
	e = sp_anoncache_put(&c, t, 10, 0, SP_ANON_KEY_HOLDERS,
	                     (const uint8_t(*)[SP_ACCESS_KEY_LEN])ver, 2, 0, zero, -2, &ev, &has);
	SP_CHECK(sp_anoncache_get(&c, t, 500, 0, &found) == e && found == SP_ANONCACHE_HIT);
	SP_CHECK_EQ_INT(sp_anoncache_decide(&c, e, other, 11, 0, 0, &nd), SP_ANONCACHE_DENIED);
	SP_CHECK_EQ_INT(sp_anoncache_decide(&c, e, ver[1], 11, 0, 0, &nd), SP_ANONCACHE_ACCEPTED);
	SP_CHECK(nd);
	SP_CHECK_EQ_INT(sp_anoncache_decide(&c, e, ver[1], 11, 0, 0, &nd), SP_ANONCACHE_ACCEPTED);
	SP_CHECK(!nd);
	/* ttl and epoch */
	SP_CHECK(sp_anoncache_get(&c, t, 1010, 0, &found) == NULL && found == SP_ANONCACHE_STALE);
	SP_CHECK(sp_anoncache_get(&c, t, 20, 1, &found) == NULL && found == SP_ANONCACHE_STALE);
	/* a re-fetch (rotation: only ver[0] now) keeps the count pending for the recipient */
	e = sp_anoncache_put(&c, t, 30, 1, SP_ANON_KEY_HOLDERS,
	                     (const uint8_t(*)[SP_ACCESS_KEY_LEN])ver, 1, 5, (int64_t[]){3}, 1000,
	                     &ev, &has);
	SP_CHECK_EQ_INT(sp_anoncache_decide(&c, e, ver[1], 31, 0, 0, &nd), SP_ANONCACHE_DENIED);
	SP_CHECK_EQ_INT((int)e->n_all, 7);
	SP_CHECK_EQ_INT((int)e->p_all, 2);
	/* mode 2: anyone, the key limit counts the recipient's messages */
	e = sp_anoncache_put(&c, t, 40, 1, SP_ANON_ANYONE, NULL, 0, 0, zero, -2, &ev, &has);
	SP_CHECK_EQ_INT(sp_anoncache_decide(&c, e, other, 41, 3, 0, &nd), SP_ANONCACHE_ACCEPTED);
	SP_CHECK_EQ_INT(sp_anoncache_decide(&c, e, other, 41, 3, 0, &nd), SP_ANONCACHE_RATE_KEY);
	sp_anoncache_free(&c);
}

static void test_limits_flush(void)
{
	sp_anoncache_t c;
	sp_anoncache_flush_t f, ev;
	sp_anoncache_ent_t *e;
	uint8_t t[SP_TOKEN_LEN], ver[2][SP_ACCESS_KEY_LEN];
	bool has, nd;
	int acc = 0;

	SP_CHECK_EQ_INT(sp_anoncache_init(&c, 64, 10000, 60000), 0);
	tok(t, 2);
	memset(ver[0], 1, SP_ACCESS_KEY_LEN);
	memset(ver[1], 2, SP_ACCESS_KEY_LEN);
	e = sp_anoncache_put(&c, t, 0, 0, SP_ANON_KEY_HOLDERS,
	                     (const uint8_t(*)[SP_ACCESS_KEY_LEN])ver, 2, 0, zero, -2, &ev, &has);
	for (int i = 0; i < 20; i++)
		acc += sp_anoncache_decide(&c, e, ver[0], 1, 4, 6, &nd) == SP_ANONCACHE_ACCEPTED;
	SP_CHECK_EQ_INT(acc, 4);
	SP_CHECK_EQ_INT(sp_anoncache_decide(&c, e, ver[0], 1, 4, 6, &nd), SP_ANONCACHE_RATE_KEY);
	acc = 0;
	for (int i = 0; i < 20; i++)
		acc += sp_anoncache_decide(&c, e, ver[1], 1, 4, 6, &nd) == SP_ANONCACHE_ACCEPTED;
	SP_CHECK_EQ_INT(acc, 2);
	SP_CHECK_EQ_INT(sp_anoncache_decide(&c, e, ver[1], 1, 4, 6, &nd),
	                SP_ANONCACHE_RATE_RECIPIENT);
	/* taken once */
	SP_CHECK(sp_anoncache_take(&c, &f));
	SP_CHECK_EQ_INT((int)f.d_all, 6);
	SP_CHECK_EQ_INT((int)f.d_key[0], 4);
	SP_CHECK_EQ_INT((int)f.d_key[1], 2);
	SP_CHECK(!sp_anoncache_take(&c, &f));
	/* a failed flush: pending again */
	sp_anoncache_applied(&c, &f, false, 0, NULL, 0, 2);
	SP_CHECK(sp_anoncache_take(&c, &f));
	SP_CHECK_EQ_INT((int)f.d_all, 6);
	/* the answer brings another relay's counts: 6 here + 3 there */
	sp_anoncache_applied(&c, &f, true, 9, (int64_t[]){5, 4}, 500, 3);
	SP_CHECK_EQ_INT((int)e->n_all, 9);
	SP_CHECK_EQ_INT((int)e->n_key[1], 4);
	/* the window ends: the counts start again */
	SP_CHECK_EQ_INT(sp_anoncache_decide(&c, e, ver[1], 504, 4, 6, &nd), SP_ANONCACHE_ACCEPTED);
	SP_CHECK_EQ_INT((int)e->n_all, 1);
	sp_anoncache_free(&c);
}

static void test_evict_off(void)
{
	sp_anoncache_t c;
	sp_anoncache_flush_t ev;
	sp_anoncache_ent_t *e;
	enum sp_anoncache_found found;
	uint8_t t[SP_TOKEN_LEN];
	bool has, nd, evicted = false;

	/* 4 entries: one set; the fifth token evicts one, handing back its pending count */
	SP_CHECK_EQ_INT(sp_anoncache_init(&c, 4, 1000, 60000), 0);
	for (uint32_t i = 0; i < 5; i++) {
		tok(t, i << 8); /* same set */
		t[31] = (uint8_t)i;
		e = sp_anoncache_put(&c, t, i, 0, SP_ANON_ANYONE, NULL, 0, 0, zero, -2, &ev, &has);
		SP_CHECK(e != NULL);
		SP_CHECK_EQ_INT(sp_anoncache_decide(&c, e, t, i, 0, 0, &nd), SP_ANONCACHE_ACCEPTED);
		evicted |= has;
	}
	SP_CHECK(evicted);
	SP_CHECK_EQ_INT((int)ev.d_all, 1);
	SP_CHECK_EQ_INT((int)c.evictions, 1);
	sp_anoncache_free(&c);
	SP_CHECK_EQ_INT(sp_anoncache_init(&c, 0, 1000, 60000), 0);
	SP_CHECK(!sp_anoncache_on(&c));
	SP_CHECK(sp_anoncache_get(&c, t, 0, 0, &found) == NULL);
	SP_CHECK(sp_anoncache_put(&c, t, 0, 0, SP_ANON_ANYONE, NULL, 0, 0, zero, -2, &ev, &has) ==
	         NULL);
	sp_anoncache_free(&c);
}

int main(void)
{
	SP_RUN(test_decide);
	SP_RUN(test_limits_flush);
	SP_RUN(test_evict_off);
	return sp_test_done();
}
