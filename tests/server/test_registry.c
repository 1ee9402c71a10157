/*
 * Unit tests for the registry in server/sp_registry.c: set/get/del semantics, then four
 * threads at once, on tokens of their own (exact final contents) and on shared tokens (every
 * reference a set replaces must be handed back exactly once, so that no update is lost).
 * The build uses ASan rather than TSan, so the threaded cases check outcomes, not just that
 * nothing crashed.
 */
#include "sp_registry.h"

#include <sched.h>
#include <stdbool.h>

#include "sp_test.h"

enum { THREADS = 4 };

static void rnd_token(uint64_t *state, uint8_t t[32])
{
	for (int i = 0; i < 32; i += 8) {
		/* splitmix64 */
		uint64_t z = (*state += 0x9E3779B97F4A7C15ull);

		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
		z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
		z ^= z >> 31;
		memcpy(t + i, &z, 8);
	}
}

static uint64_t rnd(uint64_t *state)
{
	uint8_t t[32];
	uint64_t v;

	rnd_token(state, t);
	memcpy(&v, t, 8);
	return v;
}

/* Entries in all shards (read with no thread running). */
static size_t registry_count(sp_registry_t *r)
{
	size_t n = 0;

	for (unsigned s = 0; s < SP_REGISTRY_SHARDS; s++)
		n += r->shard[s].map.count;
	return n;
}

static sp_connref_t set(sp_registry_t *r, const uint8_t *t, sp_connref_t ref)
{
	sp_connref_t old = 0xDEAD;

	SP_CHECK_EQ_INT(sp_registry_set(r, t, ref, &old), 0);
	return old;
}

static void test_semantics(void)
{
	static sp_registry_t r;
	uint64_t st = 1;
	uint8_t a[32], b[32], c[32];
	const sp_connref_t r1 = SP_CONNREF(0, 0, 1), r2 = SP_CONNREF(1, 5, 1),
	                   r3 = SP_CONNREF(0, 0, 2),
	                   big = SP_CONNREF(SP_MAX_WORKERS - 1, 0xFFFFFF, 0xFFFFFFFFu);

	rnd_token(&st, a);
	memcpy(b, a, 32);
	b[0] ^= 1; /* same shard as a (if shards go by any one byte but the first) */
	memcpy(c, a, 32);
	c[31] ^= 1; /* another shard, if shards go by the last byte */

	sp_registry_init(&r);
	SP_CHECK_EQ_INT(sp_registry_get(&r, a), 0);
	sp_registry_del(&r, a, r1); /* absent: nothing happens */
	SP_CHECK_EQ_INT(registry_count(&r), 0);

	SP_CHECK_EQ_INT(set(&r, a, r1), 0);
	SP_CHECK_EQ_INT(sp_registry_get(&r, a), r1);
	SP_CHECK_EQ_INT(sp_registry_get(&r, b), 0);
	SP_CHECK_EQ_INT(sp_registry_get(&r, c), 0);

	/* set returns the reference it replaced. */
	SP_CHECK_EQ_INT(set(&r, a, r2), r1);
	SP_CHECK_EQ_INT(sp_registry_get(&r, a), r2);
	SP_CHECK_EQ_INT(registry_count(&r), 1);

	/* del with a stale reference leaves the newer one alone. */
	sp_registry_del(&r, a, r1);
	SP_CHECK_EQ_INT(sp_registry_get(&r, a), r2);
	sp_registry_del(&r, a, r3);
	SP_CHECK_EQ_INT(sp_registry_get(&r, a), r2);

	/* Neighbouring tokens are independent. */
	SP_CHECK_EQ_INT(set(&r, b, r3), 0);
	SP_CHECK_EQ_INT(set(&r, c, r1), 0);
	SP_CHECK_EQ_INT(registry_count(&r), 3);
	sp_registry_del(&r, b, r2); /* a's reference, b's token */
	SP_CHECK_EQ_INT(sp_registry_get(&r, b), r3);

	/* del with the current reference removes it, once. */
	sp_registry_del(&r, a, r2);
	SP_CHECK_EQ_INT(sp_registry_get(&r, a), 0);
	sp_registry_del(&r, a, r2);
	SP_CHECK_EQ_INT(sp_registry_get(&r, a), 0);
	SP_CHECK_EQ_INT(sp_registry_get(&r, b), r3);
	SP_CHECK_EQ_INT(sp_registry_get(&r, c), r1);
	SP_CHECK_EQ_INT(registry_count(&r), 2);

	/* Re-registering after removal reports nothing replaced. */
	SP_CHECK_EQ_INT(set(&r, a, r3), 0);

	/* All 64 bits of a reference survive (worker in the top byte). */
	SP_CHECK_EQ_INT(set(&r, a, big), r3);
	SP_CHECK(sp_registry_get(&r, a) == big);
	SP_CHECK_EQ_INT(SP_CONNREF_WORKER(sp_registry_get(&r, a)), SP_MAX_WORKERS - 1);
	SP_CHECK_EQ_INT(SP_CONNREF_SLOT(sp_registry_get(&r, a)), 0xFFFFFF);
	SP_CHECK_EQ_INT(SP_CONNREF_GEN(sp_registry_get(&r, a)), 0xFFFFFFFFu);
	sp_registry_del(&r, a, SP_CONNREF(0, 0xFFFFFF, 0xFFFFFFFFu)); /* differs in the worker */
	SP_CHECK(sp_registry_get(&r, a) == big);
	sp_registry_del(&r, a, big);
	SP_CHECK_EQ_INT(sp_registry_get(&r, a), 0);
	sp_registry_destroy(&r);
}

/* Many tokens, over every value of every byte that might pick a shard. */
static void test_many_tokens(void)
{
	enum { N = 256 * 40 };
	static sp_registry_t r;
	static uint8_t tok[N][32];
	uint64_t st = 2;
	size_t bad = 0;

	sp_registry_init(&r);
	for (uint32_t i = 0; i < N; i++) {
		rnd_token(&st, tok[i]);
		tok[i][0] = tok[i][31] = (uint8_t)i;
		if (set(&r, tok[i], SP_CONNREF(i % 64, i, 1)) != 0)
			bad++;
	}
	SP_CHECK_EQ_INT(registry_count(&r), N);
	for (uint32_t i = 0; i < N; i++)
		if (sp_registry_get(&r, tok[i]) != SP_CONNREF(i % 64, i, 1))
			bad++;
	for (uint32_t i = 0; i < N; i += 2)
		sp_registry_del(&r, tok[i], SP_CONNREF(i % 64, i, 1));
	for (uint32_t i = 0; i < N; i++)
		if (sp_registry_get(&r, tok[i]) != (i % 2 ? SP_CONNREF(i % 64, i, 1) : 0))
			bad++;
	SP_CHECK_EQ_INT(bad, 0);
	SP_CHECK_EQ_INT(registry_count(&r), N / 2);
	sp_registry_destroy(&r); /* with entries left: ASan sees any leak */
}

/* ---- Threads on their own tokens ---- */

enum { OWN_TOKENS = 3000, OWN_ROUNDS = 12 };

struct own {
	pthread_t thread;
	unsigned id;
	sp_registry_t *r;
	pthread_barrier_t *start;
	uint8_t (*tok)[32];             /* all threads' tokens: [THREADS * OWN_TOKENS] */
	sp_connref_t model[OWN_TOKENS]; /* what this thread's tokens should hold */
	size_t bad;
};

static void *own_run(void *arg)
{
	struct own *o = arg;
	uint8_t(*mine)[32] = o->tok + (size_t)o->id * OWN_TOKENS;
	uint64_t st = 1000 + o->id;

	pthread_barrier_wait(o->start);
	for (uint32_t round = 1; round <= OWN_ROUNDS; round++) {
		for (uint32_t i = 0; i < OWN_TOKENS; i++) {
			sp_connref_t ref = SP_CONNREF(o->id, i, round), old = 0xDEAD;
			unsigned op = (unsigned)(rnd(&st) % 4);

			if (op < 2) {
				if (sp_registry_set(o->r, mine[i], ref, &old) != 0 ||
				    old != o->model[i])
					o->bad++;
				o->model[i] = ref;
			} else if (op == 2) {
				/* Stale first (must not remove), then the current one. */
				sp_registry_del(o->r, mine[i], SP_CONNREF(o->id, i, round + 1000));
				if (sp_registry_get(o->r, mine[i]) != o->model[i])
					o->bad++;
				sp_registry_del(o->r, mine[i], o->model[i] ? o->model[i] : ref);
				o->model[i] = 0;
			}
			if (sp_registry_get(o->r, mine[i]) != o->model[i])
				o->bad++;
			/* Meddle with another thread's token using a reference it never sets. */
			{
				unsigned other =
				        (o->id + 1 + (unsigned)(rnd(&st) % (THREADS - 1))) %
				        THREADS;
				uint32_t j = (uint32_t)(rnd(&st) % OWN_TOKENS);

				sp_registry_del(o->r, o->tok[(size_t)other * OWN_TOKENS + j],
				                SP_CONNREF(o->id + 8, j, round));
			}
		}
		if (round % 4 == 0)
			sched_yield();
	}
	return NULL;
}

static void test_threads_disjoint(void)
{
	static sp_registry_t r;
	static struct own own[THREADS];
	static uint8_t tok[THREADS * OWN_TOKENS][32];
	pthread_barrier_t start;
	uint64_t st = 3;
	size_t bad = 0, live = 0;

	sp_registry_init(&r);
	for (size_t i = 0; i < THREADS * OWN_TOKENS; i++)
		rnd_token(&st, tok[i]);
	pthread_barrier_init(&start, NULL, THREADS);
	for (unsigned t = 0; t < THREADS; t++) {
		memset(&own[t], 0, sizeof(own[t]));
		own[t].id = t;
		own[t].r = &r;
		own[t].start = &start;
		own[t].tok = tok;
		if (pthread_create(&own[t].thread, NULL, own_run, &own[t]) != 0)
			abort();
	}
	for (unsigned t = 0; t < THREADS; t++)
		pthread_join(own[t].thread, NULL);
	for (unsigned t = 0; t < THREADS; t++) {
		if (own[t].bad)
			SP_FAIL("thread %u saw %zu wrong answers", t, own[t].bad);
		for (uint32_t i = 0; i < OWN_TOKENS; i++) {
			sp_connref_t got = sp_registry_get(&r, tok[(size_t)t * OWN_TOKENS + i]);

			live += own[t].model[i] != 0;
			if (got != own[t].model[i])
				bad++;
		}
	}
	SP_CHECK_EQ_INT(bad, 0);
	SP_CHECK(live > THREADS * OWN_TOKENS / 4); /* the final contents are not trivial */
	SP_CHECK_EQ_INT(registry_count(&r), live);
	pthread_barrier_destroy(&start);
	sp_registry_destroy(&r);
}

/* ---- Threads on shared tokens ---- */

enum { SHARED_TOKENS = 600, SHARED_OPS = 100000 };

struct shared {
	pthread_t thread;
	unsigned id;
	sp_registry_t *r;
	pthread_barrier_t *start;
	uint8_t (*tok)[32];
	size_t ntok;                     /* tokens in use: tok[0..ntok) */
	bool with_del;                   /* each set is followed by a del of the same reference */
	uint16_t tok_of[SHARED_OPS];     /* token index of op k */
	sp_connref_t old_of[SHARED_OPS]; /* what set k replaced */
	size_t bad;
};

/* Op k of thread t writes SP_CONNREF(t, 0, k + 1): unique, and decodable. */
static bool decode(sp_connref_t ref, unsigned *t, uint32_t *k)
{
	*t = SP_CONNREF_WORKER(ref);
	*k = SP_CONNREF_GEN(ref) - 1;
	return ref == SP_CONNREF(*t, 0, *k + 1) && *t < THREADS && *k < SHARED_OPS;
}

static void *shared_run(void *arg)
{
	struct shared *s = arg;
	uint64_t st = 2000 + s->id;

	pthread_barrier_wait(s->start);
	for (uint32_t k = 0; k < SHARED_OPS; k++) {
		uint16_t i = (uint16_t)(rnd(&st) % s->ntok);
		sp_connref_t ref = SP_CONNREF(s->id, 0, k + 1), got;
		unsigned t;
		uint32_t kk;

		s->tok_of[k] = i;
		if (sp_registry_set(s->r, s->tok[i], ref, &s->old_of[k]) != 0)
			s->bad++;
		/* A del that matches nothing ever written. */
		sp_registry_del(s->r, s->tok[(i + 1) % s->ntok], SP_CONNREF(s->id, 1, k + 1));
		got = sp_registry_get(s->r, s->tok[(i + 7) % s->ntok]);
		if (got && !decode(got, &t, &kk))
			s->bad++;
		if (s->with_del)
			sp_registry_del(s->r, s->tok[i], ref);
		if (k % 1024 == 0)
			sched_yield();
	}
	return NULL;
}

/* The threads' state and records (large: kept out of the stack, shared by the cases). */
static struct shared sh[THREADS];
static uint8_t shared_tok[SHARED_TOKENS][32];

static void run_shared(sp_registry_t *r, size_t ntok, bool with_del)
{
	pthread_barrier_t start;
	uint64_t st = 4 + ntok;

	for (size_t i = 0; i < ntok; i++)
		rnd_token(&st, shared_tok[i]);

	pthread_barrier_init(&start, NULL, THREADS);
	for (unsigned t = 0; t < THREADS; t++) {
		sh[t].id = t;
		sh[t].r = r;
		sh[t].start = &start;
		sh[t].tok = shared_tok;
		sh[t].ntok = ntok;
		sh[t].with_del = with_del;
		sh[t].bad = 0;
		if (pthread_create(&sh[t].thread, NULL, shared_run, &sh[t]) != 0)
			abort();
	}
	for (unsigned t = 0; t < THREADS; t++)
		pthread_join(sh[t].thread, NULL);
	pthread_barrier_destroy(&start);
	for (unsigned t = 0; t < THREADS; t++)
		if (sh[t].bad)
			SP_FAIL("thread %u saw %zu bad answers", t, sh[t].bad);
}

/*
 * Only sets (and dels that match nothing): per token, the references written form one chain.
 * Each is replaced at most once (handed back as `old` by exactly one later set) or is the final
 * value, exactly one set per token found it empty, and an old value always came from the same
 * token. A lost update breaks one of these.
 */
static void shared_set(size_t ntok)
{
	static sp_registry_t r;
	static uint8_t replaced[THREADS][SHARED_OPS];
	unsigned empty_found[SHARED_TOKENS] = {0}, written[SHARED_TOKENS] = {0};
	size_t bad = 0, used = 0, finals = 0;

	memset(replaced, 0, sizeof(replaced));
	sp_registry_init(&r);
	run_shared(&r, ntok, false);

	for (unsigned t = 0; t < THREADS; t++) {
		for (uint32_t k = 0; k < SHARED_OPS; k++) {
			sp_connref_t old = sh[t].old_of[k];
			unsigned ot;
			uint32_t ok;

			written[sh[t].tok_of[k]]++;
			if (!old) {
				empty_found[sh[t].tok_of[k]]++;
				continue;
			}
			if (!decode(old, &ot, &ok) || sh[ot].tok_of[ok] != sh[t].tok_of[k]) {
				if (bad++ < 10)
					SP_FAIL("thread %u op %u replaced %#" PRIx64
					        ", not a reference of its token",
					        t, k, old);
				continue;
			}
			if (replaced[ot][ok]++ && bad++ < 10)
				SP_FAIL("reference of thread %u op %u replaced twice", ot, ok);
		}
	}
	for (size_t i = 0; i < ntok; i++) {
		sp_connref_t got = sp_registry_get(&r, shared_tok[i]);
		unsigned ot;
		uint32_t ok;

		used += written[i] != 0;
		if (empty_found[i] != (written[i] != 0) && bad++ < 10)
			SP_FAIL("token %zu: %u sets found it empty", i, empty_found[i]);
		if (!written[i]) {
			if (got)
				bad++;
			continue;
		}
		if (!decode(got, &ot, &ok) || sh[ot].tok_of[ok] != i || replaced[ot][ok]) {
			if (bad++ < 10)
				SP_FAIL("token %zu: final value %#" PRIx64
				        " is not the chain's end",
				        i, got);
			continue;
		}
		replaced[ot][ok] = 1;
		finals++;
	}
	/* Every reference written was replaced once or is a final value. */
	for (unsigned t = 0; t < THREADS; t++)
		for (uint32_t k = 0; k < SHARED_OPS; k++)
			if (replaced[t][k] != 1 && bad++ < 10)
				SP_FAIL("reference of thread %u op %u was lost", t, k);
	SP_CHECK_EQ_INT(bad, 0);
	SP_CHECK_EQ_INT(finals, used);
	SP_CHECK_EQ_INT(registry_count(&r), used);
	sp_registry_destroy(&r);
}

/*
 * Every set is followed by a del of the reference it wrote: whoever set last also deletes
 * last, so at the end every token is gone, and no map's count has drifted.
 */
static void shared_set_del(size_t ntok)
{
	static sp_registry_t r;
	size_t left = 0;

	sp_registry_init(&r);
	run_shared(&r, ntok, true);
	for (size_t i = 0; i < ntok; i++)
		left += sp_registry_get(&r, shared_tok[i]) != 0;
	SP_CHECK_EQ_INT(left, 0);
	SP_CHECK_EQ_INT(registry_count(&r), 0);
	sp_registry_destroy(&r);
}

/* Many tokens: maps grow while other threads use them. */
static void test_threads_shared_set(void)
{
	shared_set(SHARED_TOKENS);
}

static void test_threads_shared_set_del(void)
{
	shared_set_del(SHARED_TOKENS);
}

/* Few tokens, so few shards: every operation contends for a lock. */
static void test_threads_hot_set(void)
{
	shared_set(12);
}

static void test_threads_hot_set_del(void)
{
	shared_set_del(12);
}

int main(void)
{
	SP_RUN(test_semantics);
	SP_RUN(test_many_tokens);
	SP_RUN(test_threads_disjoint);
	SP_RUN(test_threads_shared_set);
	SP_RUN(test_threads_shared_set_del);
	SP_RUN(test_threads_hot_set);
	SP_RUN(test_threads_hot_set_del);
	return sp_test_done();
}
