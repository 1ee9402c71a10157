/*
 * Unit tests for server/sp_tokmap: put/get/del contracts, growth, backward-shift deletion
 * (including clusters that wrap around the end of the table), a randomized comparison with a
 * trivially correct model, and the keyed hash.
 *
 * Tokens and operations come from a seeded PRNG so that a failure can be replayed: the seed is
 * printed, and SP_TEST_SEED=<n> in the environment overrides it. Each map still draws its own
 * random key, so slot layouts differ between runs; no check depends on a particular layout.
 */
#include "sp_tokmap.h"

#include <stdbool.h>

#include "sp_test.h"

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* splitmix64 */
	uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static size_t rnd_below(size_t n)
{
	return (size_t)(rnd() % n);
}

static void rnd_token(uint8_t t[32])
{
	for (int i = 0; i < 32; i += 8) {
		uint64_t v = rnd();

		memcpy(t + i, &v, 8);
	}
}

static void shuffle(size_t *a, size_t n)
{
	for (size_t i = n; i > 1; i--) {
		size_t j = rnd_below(i), tmp = a[i - 1];

		a[i - 1] = a[j];
		a[j] = tmp;
	}
}

static size_t *identity_perm(size_t n)
{
	size_t *p = malloc(n * sizeof(*p));

	if (!p)
		abort();
	for (size_t i = 0; i < n; i++)
		p[i] = i;
	return p;
}

static uintptr_t put(sp_tokmap_t *m, const uint8_t *t, uintptr_t v)
{
	uintptr_t old = 0xDEAD;
	int rc = sp_tokmap_put(m, t, v, &old);

	SP_CHECK_EQ_INT(rc, 0);
	return old;
}

/* The home slot of t in m as it is now. */
static size_t home_of(const sp_tokmap_t *m, const uint8_t *t)
{
	return (size_t)sp_tokmap_hash(m, t) & m->mask;
}

static void test_empty_map(void)
{
	sp_tokmap_t m;
	uint8_t t[32] = {1};

	sp_tokmap_init(&m);
	SP_CHECK(m.slots == NULL);
	SP_CHECK_EQ_INT(m.count, 0);
	SP_CHECK_EQ_INT(sp_tokmap_get(&m, t), 0);
	SP_CHECK_EQ_INT(sp_tokmap_del(&m, t, 0), 0);
	SP_CHECK_EQ_INT(sp_tokmap_del(&m, t, 5), 0);
	SP_CHECK_EQ_INT(m.count, 0);
	sp_tokmap_free(&m);
	sp_tokmap_free(&m); /* twice is fine */
	sp_tokmap_free(NULL);

	/* A freed map is empty and usable again. */
	SP_CHECK_EQ_INT(sp_tokmap_get(&m, t), 0);
	SP_CHECK_EQ_INT(put(&m, t, 7), 0);
	SP_CHECK_EQ_INT(sp_tokmap_get(&m, t), 7);
	SP_CHECK_EQ_INT(m.count, 1);
	sp_tokmap_free(&m);
	SP_CHECK_EQ_INT(m.count, 0);
	SP_CHECK_EQ_INT(sp_tokmap_get(&m, t), 0);
}

static void test_basics(void)
{
	sp_tokmap_t m;
	uint8_t a[32], b[32], c[32];

	rnd_token(a);
	memcpy(b, a, 32);
	b[31] ^= 1; /* differs from a in one bit of the last byte */
	memcpy(c, a, 32);
	c[0] ^= 0x80; /* differs in the first byte */

	sp_tokmap_init(&m);
	SP_CHECK_EQ_INT(put(&m, a, 100), 0);
	SP_CHECK_EQ_INT(m.count, 1);
	SP_CHECK_EQ_INT(sp_tokmap_get(&m, a), 100);
	SP_CHECK_EQ_INT(sp_tokmap_get(&m, b), 0);
	SP_CHECK_EQ_INT(sp_tokmap_get(&m, c), 0);

	SP_CHECK_EQ_INT(put(&m, b, 200), 0);
	SP_CHECK_EQ_INT(put(&m, c, 300), 0);
	SP_CHECK_EQ_INT(m.count, 3);
	SP_CHECK_EQ_INT(sp_tokmap_get(&m, a), 100);
	SP_CHECK_EQ_INT(sp_tokmap_get(&m, b), 200);
	SP_CHECK_EQ_INT(sp_tokmap_get(&m, c), 300);

	/* Overwrite returns the old value and does not change the count. */
	SP_CHECK_EQ_INT(put(&m, a, 101), 100);
	SP_CHECK_EQ_INT(put(&m, a, 102), 101);
	SP_CHECK_EQ_INT(m.count, 3);
	SP_CHECK_EQ_INT(sp_tokmap_get(&m, a), 102);

	/* Overwriting with the same value is an overwrite too. */
	SP_CHECK_EQ_INT(put(&m, a, 102), 102);
	SP_CHECK_EQ_INT(m.count, 3);

	/* del with a wrong value does nothing. */
	SP_CHECK_EQ_INT(sp_tokmap_del(&m, a, 100), 0);
	SP_CHECK_EQ_INT(sp_tokmap_del(&m, a, 999), 0);
	SP_CHECK_EQ_INT(m.count, 3);
	SP_CHECK_EQ_INT(sp_tokmap_get(&m, a), 102);

	/* del with the right value removes exactly that token. */
	SP_CHECK_EQ_INT(sp_tokmap_del(&m, a, 102), 1);
	SP_CHECK_EQ_INT(m.count, 2);
	SP_CHECK_EQ_INT(sp_tokmap_get(&m, a), 0);
	SP_CHECK_EQ_INT(sp_tokmap_get(&m, b), 200);
	SP_CHECK_EQ_INT(sp_tokmap_get(&m, c), 300);

	/* del of an absent token (removed, or never there) does nothing. */
	SP_CHECK_EQ_INT(sp_tokmap_del(&m, a, 102), 0);
	SP_CHECK_EQ_INT(sp_tokmap_del(&m, a, 0), 0);
	SP_CHECK_EQ_INT(m.count, 2);

	/* del with value 0 removes whatever is there. */
	SP_CHECK_EQ_INT(sp_tokmap_del(&m, b, 0), 1);
	SP_CHECK_EQ_INT(sp_tokmap_get(&m, b), 0);
	SP_CHECK_EQ_INT(m.count, 1);

	/* Re-insertion after deletion counts as new. */
	SP_CHECK_EQ_INT(put(&m, a, 103), 0);
	SP_CHECK_EQ_INT(m.count, 2);
	SP_CHECK_EQ_INT(sp_tokmap_get(&m, a), 103);

	/* The all-zero and all-ones tokens are ordinary keys. */
	{
		uint8_t z[32] = {0}, o[32];

		memset(o, 0xFF, 32);
		SP_CHECK_EQ_INT(put(&m, z, 1), 0);
		SP_CHECK_EQ_INT(put(&m, o, UINTPTR_MAX), 0);
		SP_CHECK_EQ_INT(sp_tokmap_get(&m, z), 1);
		SP_CHECK_EQ_INT(sp_tokmap_get(&m, o), (long long)UINTPTR_MAX);
		SP_CHECK_EQ_INT(m.count, 4);
	}
	sp_tokmap_free(&m);
}

/* 100k random tokens through every size; delete in random order, checking the survivors. */
static void test_growth(void)
{
	enum { N = 100000, BATCH = 2500 };
	uint8_t(*tok)[32] = malloc((size_t)N * 32);
	size_t *order = identity_perm(N);
	bool *gone = calloc(N, sizeof(*gone));
	sp_tokmap_t m;
	size_t last_mask = 0, bad = 0;
	int sizes = 0;

	if (!tok || !gone)
		abort();
	sp_tokmap_init(&m);
	for (size_t i = 0; i < N; i++) {
		rnd_token(tok[i]);
		if (put(&m, tok[i], i + 1) != 0)
			bad++;
		if (m.mask != last_mask) {
			sizes++;
			last_mask = m.mask;
		}
		/* The load stays under 3/4. */
		if (m.count * 4 > (m.mask + 1) * 3)
			bad++;
	}
	SP_CHECK_EQ_INT(bad, 0);
	SP_CHECK_EQ_INT(m.count, N);
	SP_CHECK(sizes >= 10); /* 16 .. 256k slots */
	for (size_t i = 0; i < N; i++)
		if (sp_tokmap_get(&m, tok[i]) != i + 1)
			bad++;
	SP_CHECK_EQ_INT(bad, 0);

	shuffle(order, N);
	for (size_t done = 0; done < N; done += BATCH) {
		for (size_t k = done; k < done + BATCH; k++) {
			size_t i = order[k];

			if (sp_tokmap_del(&m, tok[i], i + 1) != 1)
				bad++;
			gone[i] = true;
		}
		if (m.count != N - done - BATCH)
			bad++;
		for (size_t i = 0; i < N; i++)
			if (sp_tokmap_get(&m, tok[i]) != (gone[i] ? 0 : i + 1))
				bad++;
		if (bad) {
			SP_FAIL("after deleting %zu tokens: %zu wrong answers", done + BATCH, bad);
			break;
		}
	}
	SP_CHECK_EQ_INT(m.count, 0);
	sp_tokmap_free(&m);
	free(tok);
	free(order);
	free(gone);
}

/*
 * 200k random operations on a small universe of tokens, each checked against an array that
 * holds the value of every universe token. A quarter of the universe shares its first 24
 * bytes, so besides the random collisions of a small table there are tokens that differ only
 * late.
 */
static void model_run(size_t universe, size_t ops, size_t batch)
{
	uint8_t(*tok)[32] = malloc(universe * 32);
	uintptr_t *model = calloc(universe, sizeof(*model));
	size_t model_count = 0, bad = 0;
	sp_tokmap_t m;
	uint8_t prefix[32];

	if (!tok || !model)
		abort();
	rnd_token(prefix);
	for (size_t i = 0; i < universe; i++) {
		rnd_token(tok[i]);
		if (i % 4 == 1)
			memcpy(tok[i], prefix, 24);
	}

	sp_tokmap_init(&m);
	for (size_t op = 0; op < ops && !bad; op++) {
		size_t i = rnd_below(universe);
		unsigned kind = (unsigned)rnd_below(10);
		uintptr_t v = (uintptr_t)(rnd() | 1), old = 0xDEAD;
		int r;

		if (kind < 5) { /* put */
			if (sp_tokmap_put(&m, tok[i], v, &old) != 0 || old != model[i]) {
				SP_FAIL("op %zu: put token %zu: old %#jx, model %#jx", op, i,
				        (uintmax_t)old, (uintmax_t)model[i]);
				bad++;
			}
			model_count += model[i] == 0;
			model[i] = v;
		} else {
			/* del: by the right value, by any value, or by a wrong one. */
			uintptr_t want = kind < 7 ? model[i] : kind < 9 ? 0 : (model[i] ^ 2) | 1;
			int expect = model[i] != 0 && (want == 0 || want == model[i]);

			if (kind < 7 && !want)
				want = v; /* absent: any non-zero value */
			r = sp_tokmap_del(&m, tok[i], want);
			if (r != expect) {
				SP_FAIL("op %zu: del token %zu by %#jx: %d, model %d", op, i,
				        (uintmax_t)want, r, expect);
				bad++;
			}
			if (expect) {
				model[i] = 0;
				model_count--;
			}
		}
		if (m.count != model_count) {
			SP_FAIL("op %zu: count %zu, model %zu", op, m.count, model_count);
			bad++;
		}
		if ((op + 1) % batch == 0 || op + 1 == ops) {
			for (size_t k = 0; k < universe; k++) {
				uintptr_t got = sp_tokmap_get(&m, tok[k]);

				if (got != model[k]) {
					SP_FAIL("after op %zu: token %zu is %#jx, model %#jx", op,
					        k, (uintmax_t)got, (uintmax_t)model[k]);
					bad++;
				}
			}
		}
	}
	SP_CHECK_EQ_INT(bad, 0);
	sp_tokmap_free(&m);
	free(tok);
	free(model);
}

static void test_model_small(void)
{
	/* 11 tokens stay in 16 slots (12 would trigger growth on an overwrite at the threshold);
	 * check every token after every operation. */
	model_run(11, 40000, 1);
}

static void test_model_medium(void)
{
	model_run(64, 80000, 8);
}

static void test_model_large(void)
{
	model_run(1000, 80000, 128);
}

/*
 * Clusters built on purpose: choose tokens whose home slot lies in a narrow window around the
 * end of a 64-slot table (half just before the end, half just after the start, alternating),
 * so that the cluster always wraps and its members have different homes. Then
 * delete in random order and check every survivor after each deletion. This is where a
 * backward shift that moves an entry before its home, or forgets the wrap, loses tokens.
 */
static void test_wrapping_clusters(void)
{
	enum { CAP = 64, FILL = 40, ROUNDS = 300 };
	size_t bad = 0;

	for (int round = 0; round < ROUNDS && !bad; round++) {
		sp_tokmap_t m;
		uint8_t tok[FILL][32], filler[25][32];
		size_t wrapped = 0;
		size_t order[FILL];
		size_t width = 2 + (size_t)round % 12; /* homes: CAP +- width, mod CAP */
		bool present[FILL];

		sp_tokmap_init(&m);
		/* Grow to 64 slots (the 25th token does it), then empty the table again: it
		 * never shrinks. */
		for (int i = 0; i < 25; i++) {
			rnd_token(filler[i]);
			put(&m, filler[i], 1);
		}
		for (int i = 0; i < 25; i++)
			sp_tokmap_del(&m, filler[i], 1);
		SP_CHECK_EQ_INT(m.count, 0);
		SP_CHECK_EQ_INT(m.mask, CAP - 1);

		for (size_t i = 0; i < FILL; i++) {
			size_t h;

			do {
				rnd_token(tok[i]);
				h = home_of(&m, tok[i]);
			} while (i % 2 ? h >= width : h < CAP - width);
			put(&m, tok[i], i + 1);
			present[i] = true;
			order[i] = i;
		}
		/* No growth: the homes are still the ones chosen. */
		SP_CHECK_EQ_INT(m.mask, CAP - 1);
		SP_CHECK_EQ_INT(m.count, FILL);
		for (size_t i = 0; i < (size_t)CAP; i++)
			if (m.slots[i].value && home_of(&m, m.slots[i].token) > i)
				wrapped++;
		if (!wrapped)
			SP_FAIL("round %d: no entry wrapped around the end", round);

		shuffle(order, FILL);
		for (size_t k = 0; k < FILL && !bad; k++) {
			size_t d = order[k];

			/* A wrong value first: must not move anything. */
			if (sp_tokmap_del(&m, tok[d], d + 1000) != 0)
				bad++;
			if (sp_tokmap_del(&m, tok[d], d + 1) != 1)
				bad++;
			present[d] = false;
			if (m.count != FILL - k - 1)
				bad++;
			for (size_t i = 0; i < FILL; i++)
				if (sp_tokmap_get(&m, tok[i]) != (present[i] ? i + 1 : 0))
					bad++;
			/* Every entry still sits between its home and the first hole after it. */
			for (size_t i = 0; i < (size_t)CAP; i++) {
				size_t h;

				if (!m.slots[i].value)
					continue;
				for (h = home_of(&m, m.slots[i].token); h != i;
				     h = (h + 1) & m.mask)
					if (!m.slots[h].value) {
						bad++;
						break;
					}
			}
			if (bad)
				SP_FAIL("round %d (width %zu): wrong after deleting %zu of %d",
				        round, width, k + 1, FILL);
		}
		sp_tokmap_free(&m);
	}
	SP_CHECK_EQ_INT(bad, 0);
}

/*
 * Adversarial tokens: 256 that share all but the last byte, and 1000 that share their first
 * 16 bytes. Whatever the hash does with them, the map must stay correct.
 */
static void adversarial_run(size_t n, size_t shared)
{
	uint8_t(*tok)[32] = malloc(n * 32);
	size_t *order = identity_perm(n);
	bool *gone = calloc(n, sizeof(*gone));
	size_t bad = 0;
	sp_tokmap_t m;

	if (!tok || !gone)
		abort();
	rnd_token(tok[0]);
	for (size_t i = 0; i < n; i++) {
		memcpy(tok[i], tok[0], shared);
		/* The unshared tail is i, big-endian, so the tokens are distinct. */
		memset(tok[i] + shared, 0, 32 - shared);
		for (size_t b = 0; b < sizeof(i) && b < 32 - shared; b++)
			tok[i][31 - b] = (uint8_t)(i >> (8 * b));
	}
	sp_tokmap_init(&m);
	for (size_t i = 0; i < n; i++)
		if (put(&m, tok[i], i + 1) != 0)
			bad++;
	SP_CHECK_EQ_INT(m.count, n);
	for (size_t i = 0; i < n; i++)
		if (sp_tokmap_get(&m, tok[i]) != i + 1)
			bad++;
	SP_CHECK_EQ_INT(bad, 0);
	shuffle(order, n);
	for (size_t k = 0; k < n && !bad; k++) {
		size_t d = order[k];

		if (sp_tokmap_del(&m, tok[d], d + 1) != 1)
			bad++;
		gone[d] = true;
		if (k % 64 == 0 || k + 1 == n)
			for (size_t i = 0; i < n; i++)
				if (sp_tokmap_get(&m, tok[i]) != (gone[i] ? 0 : i + 1))
					bad++;
		if (bad)
			SP_FAIL("shared %zu: wrong after deleting %zu of %zu", shared, k + 1, n);
	}
	SP_CHECK_EQ_INT(m.count, 0);
	sp_tokmap_free(&m);
	free(tok);
	free(order);
	free(gone);
}

static void test_adversarial_last_byte(void)
{
	adversarial_run(256, 31);
}

static void test_adversarial_shared_half(void)
{
	adversarial_run(1000, 16);
}

/* Distinct slots among the home slots (in a 2^16-slot space) of tokens t[0..n). */
static size_t distinct_homes(const sp_tokmap_t *m, uint8_t (*t)[32], size_t n)
{
	static uint8_t seen[1 << 16];
	size_t d = 0;

	memset(seen, 0, sizeof(seen));
	for (size_t i = 0; i < n; i++) {
		size_t h = (size_t)sp_tokmap_hash(m, t[i]) & 0xFFFF;

		d += !seen[h];
		seen[h] = 1;
	}
	return d;
}

/*
 * The slot must depend on every byte of the token: tokens chosen by a sender that differ in
 * one byte position must spread over the slots. For 256 tokens and 65536 slots, a fair hash
 * gives about 255.5 distinct slots; 200 is far below any plausible chance outcome.
 *
 * Every byte position is held to it.
 */
static void test_hash_spread(void)
{
	uint8_t(*t)[32] = malloc(256 * 32);
	sp_tokmap_t m;
	uint8_t base[32];

	if (!t)
		abort();
	sp_tokmap_init(&m);
	rnd_token(base);
	for (int pos = 0; pos < 32; pos++) {
		size_t d;

		for (int v = 0; v < 256; v++) {
			memcpy(t[v], base, 32);
			t[v][pos] = (uint8_t)v;
		}
		d = distinct_homes(&m, t, 256);
		if (d < 200)
			SP_FAIL("varying byte %d: 256 tokens in only %zu slot(s)", pos, d);
	}
	sp_tokmap_free(&m);
	free(t);
}

/* Two maps have different keys, so (with overwhelming probability) different hashes. */
static void test_hash_keyed(void)
{
	sp_tokmap_t a, b;
	uint8_t t[32];
	int same = 0;

	sp_tokmap_init(&a);
	sp_tokmap_init(&b);
	SP_CHECK(a.key != b.key);
	for (int i = 0; i < 64; i++) {
		rnd_token(t);
		SP_CHECK_EQ_INT(sp_tokmap_hash(&a, t), sp_tokmap_hash(&a, t)); /* deterministic */
		same += sp_tokmap_hash(&a, t) == sp_tokmap_hash(&b, t);
	}
	SP_CHECK_EQ_INT(same, 0);

	/* The key survives growth: hashes of one map do not change. */
	{
		uint64_t h = sp_tokmap_hash(&a, t);

		for (int i = 0; i < 100; i++) {
			uint8_t u[32];

			rnd_token(u);
			put(&a, u, 1);
		}
		SP_CHECK_EQ_INT(sp_tokmap_hash(&a, t), h);
	}
	sp_tokmap_free(&a);
	sp_tokmap_free(&b);
}

int main(void)
{
	const char *s = getenv("SP_TEST_SEED");

	rng_state = s ? strtoull(s, NULL, 0) : 0x5EA1F00D2024ull;
	printf("# seed %" PRIu64 " (set SP_TEST_SEED to replay)\n", rng_state);

	SP_RUN(test_empty_map);
	SP_RUN(test_basics);
	SP_RUN(test_growth);
	SP_RUN(test_model_small);
	SP_RUN(test_model_medium);
	SP_RUN(test_model_large);
	SP_RUN(test_wrapping_clusters);
	SP_RUN(test_adversarial_last_byte);
	SP_RUN(test_adversarial_shared_half);
	SP_RUN(test_hash_spread);
	SP_RUN(test_hash_keyed);
	return sp_test_done();
}
