/*
 * test_dirlog: the directory's transparency log (server/sp_dirlog.c) against a real
 * redis-server started by the test (a unix socket in a fresh temporary directory, no
 * persistence; killed at exit). Two stores with a log each stand for two relays appending to one
 * log at once. Every head is checked with the log key, every proof with common/sp_merkle, and
 * the root against one recomputed from the leaves Redis holds. Without redis-server on PATH
 * the Redis cases are skipped.
 */
#include <errno.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include "../common/merkle_mem.h"
#include "sp_dirlog.h"
#include "sp_store.h"
#include "redis_harness.h"
#include "sp_test.h"

static struct event_base *base;
static struct event *ev_poll;

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* ---- synchronous wrappers ---------------------------------------------------------------- */

static EVP_PKEY *log_key;
static bool in_request;

struct res {
	int done, early, status;
	uint64_t index, old_size;
	uint8_t entry[4096];
	size_t entry_len;
	uint8_t head[SP_DIRLOG_HEAD_MAX];
	size_t head_len;
	uint8_t proof[SP_MERKLE_MAX_PROOF][SP_MERKLE_HASH_LEN];
	unsigned count;
	uint8_t cproof[SP_MERKLE_MAX_PROOF][SP_MERKLE_HASH_LEN];
	unsigned ccount;
	uint32_t hist_left;
};

static void res_cb(const sp_dirlog_answer_t *a, void *arg)
{
	struct res *r = arg;

	r->early |= in_request;
	r->status = a->status;
	r->index = a->index;
	r->old_size = a->old_size;
	r->entry_len = a->entry_len <= sizeof(r->entry) ? a->entry_len : 0;
	if (a->entry != NULL)
		memcpy(r->entry, a->entry, r->entry_len);
	r->head_len = a->head_len <= sizeof(r->head) ? a->head_len : 0;
	if (a->head != NULL)
		memcpy(r->head, a->head, r->head_len);
	r->count = a->proof_count;
	memcpy(r->proof, a->proof, sizeof(r->proof));
	r->ccount = a->cproof_count;
	memcpy(r->cproof, a->cproof, sizeof(r->cproof));
	r->hist_left = a->hist_left;
	r->done++;
}

static void token_of(uint8_t t[32], unsigned n)
{
	memset(t, 0, 32);
	t[0] = 0x7d;
	t[30] = (uint8_t)(n >> 8);
	t[31] = (uint8_t)n;
}

static size_t entry_of(uint8_t *out, const char *handle, unsigned serial)
{
	char card[96];
	int n = snprintf(card, sizeof(card), "{\"card\":%u,\"handle\":\"%s\"}", serial, handle);

	return sp_dirlog_entry_build(out, handle, strlen(handle), (const uint8_t *)card, (size_t)n);
}

/* Starts an append of handle's card number serial listing tokens [t0, t0 + nt). */
static int append_async(sp_dirlog_t *d, const char *handle, unsigned serial, unsigned t0,
                        unsigned nt, uint64_t iat, const uint8_t ukey[32], struct res *r)
{
	uint8_t toks[8][32], entry[512];
	size_t len = entry_of(entry, handle, serial);
	int rc;

	for (unsigned i = 0; i < nt; i++)
		token_of(toks[i], t0 + i);
	memset(r, 0, sizeof(*r));
	in_request = true;
	rc = sp_dirlog_append(d, handle, strlen(handle), ukey, (const uint8_t(*)[32])toks, nt, iat,
	                      entry, len, res_cb, r);
	in_request = false;
	return rc;
}

static int append_sync(sp_dirlog_t *d, const char *handle, unsigned serial, unsigned t0,
                       unsigned nt, uint64_t iat, const uint8_t ukey[32], struct res *r)
{
	if (append_async(d, handle, serial, t0, nt, iat, ukey, r) < 0 ||
	    !rh_run_until(base, &r->done, 5000))
		return -1;
	return r->status;
}

static int lookup_sync(sp_dirlog_t *d, const char *handle, const uint8_t *token, struct res *r)
{
	int rc;

	memset(r, 0, sizeof(*r));
	in_request = true;
	rc = sp_dirlog_lookup(d, handle, handle ? strlen(handle) : 0, token, 0, NULL, res_cb, r);
	in_request = false;
	if (rc < 0 || !rh_run_until(base, &r->done, 5000))
		return -1;
	return r->status;
}

static int head_sync(sp_dirlog_t *d, uint64_t old_size, struct res *r)
{
	int rc;

	memset(r, 0, sizeof(*r));
	in_request = true;
	rc = sp_dirlog_head(d, old_size, NULL, res_cb, r);
	in_request = false;
	if (rc < 0 || !rh_run_until(base, &r->done, 5000))
		return -1;
	return r->status;
}

/* Checks a lookup answer as a client would: head signature, inclusion of the entry. */
static bool lookup_verifies(const struct res *r, sp_dirlog_head_t *h)
{
	uint8_t leaf[SP_MERKLE_HASH_LEN];

	return sp_dirlog_head_parse(r->head, r->head_len, h) == 0 &&
	       sp_dirlog_head_verify(h, log_key) == 0 &&
	       sp_merkle_leaf_hash(r->entry, r->entry_len, leaf) == 0 &&
	       sp_merkle_verify_inclusion(r->index, h->size, leaf, (const uint8_t *)r->proof,
	                                  r->count, h->root) == 0;
}

/* Rebuilds the tree from the leaves Redis holds and compares its root with the head's. Returns
 * the number of leaves, or -1. */
static long check_tree_against_redis(void)
{
	struct merkle_mem m = {0};
	redisReply *r = redisCommand(rh_raw, "GET sp:{dir}:sth");
	sp_dirlog_head_t h;
	uint8_t root[SP_MERKLE_HASH_LEN];
	long n = -1;

	if (r == NULL || r->type != REDIS_REPLY_STRING ||
	    sp_dirlog_head_parse((const uint8_t *)r->str, r->len, &h) < 0 ||
	    sp_dirlog_head_verify(&h, log_key) < 0)
		goto out;
	for (uint64_t i = 0; i < h.size; i++) {
		redisReply *l =
		        redisCommand(rh_raw, "HGET sp:{dir}:leaf %llu", (unsigned long long)i);
		int ok = l && l->type == REDIS_REPLY_STRING &&
		         merkle_mem_append(&m, (const uint8_t *)l->str, l->len) == 0;

		if (l)
			freeReplyObject(l);
		if (!ok)
			goto out;
	}
	if (sp_merkle_root(h.size, merkle_mem_get, &m, root) == 0 && memcmp(root, h.root, 32) == 0)
		n = (long)h.size;
out:
	if (r)
		freeReplyObject(r);
	merkle_mem_free(&m);
	return n;
}

static sp_store_t *store_new(void)
{
	sp_store_limits_t lim;
	char err[256];
	sp_store_t *s;

	sp_store_limits_default(&lim);
	s = sp_store_new(base, rh_url, &lim, err, sizeof(err));
	if (s == NULL)
		printf("# store: %s\n", err);
	else if (!rh_wait_up(base, s, 5000))
		printf("# store did not come up\n");
	return s;
}

static sp_store_t *st1, *st2;
static sp_dirlog_t *dlog1, *dlog2;
static const uint8_t ukey_a[32] = {0xaa}, ukey_b[32] = {0xbb};

/* ---- cases ------------------------------------------------------------------------------- */

static void test_formats(void)
{
	uint8_t e[256];
	const char *h;
	const uint8_t *c;
	size_t hl, cl, len = entry_of(e, "alice", 1);

	SP_CHECK(len > 0);
	SP_CHECK(sp_dirlog_entry_parse(e, len, &h, &hl, &c, &cl) == 0);
	SP_CHECK(hl == 5 && memcmp(h, "alice", 5) == 0);
	SP_CHECK(cl == len - 26 - 5);
	SP_CHECK(sp_dirlog_entry_parse(e, len - 1, &h, &hl, &c, &cl) == -EBADMSG);
	e[0] ^= 1;
	SP_CHECK(sp_dirlog_entry_parse(e, len, &h, &hl, &c, &cl) == -EBADMSG);
	SP_CHECK(sp_dirlog_entry_build(e, "", 0, (const uint8_t *)"x", 1) == 0);
}

static void test_empty(void)
{
	struct res r;

	SP_CHECK_EQ_INT(head_sync(dlog1, 0, &r), SP_DIRLOG_NOT_FOUND);
	SP_CHECK_EQ_INT(lookup_sync(dlog1, "nobody", NULL, &r), SP_DIRLOG_NOT_FOUND);
	SP_CHECK(!r.early);
}

static void test_append_and_lookup(void)
{
	struct res r, l;
	sp_dirlog_head_t h;
	uint8_t tok[32], e[512];

	SP_CHECK_EQ_INT(append_sync(dlog1, "alice", 1, 1, 2, 100, ukey_a, &r), SP_DIRLOG_OK);
	SP_CHECK(!r.early);
	SP_CHECK_EQ_INT(r.index, 0);
	SP_CHECK_EQ_INT(append_sync(dlog1, "bob", 1, 10, 1, 100, ukey_b, &r), SP_DIRLOG_OK);
	SP_CHECK_EQ_INT(r.index, 1);
	SP_CHECK(sp_dirlog_head_parse(r.head, r.head_len, &h) == 0 && h.size == 2);
	SP_CHECK(sp_dirlog_head_verify(&h, log_key) == 0);
	SP_CHECK_EQ_INT(lookup_sync(dlog2, "alice", NULL, &l), SP_DIRLOG_OK);
	SP_CHECK(lookup_verifies(&l, &h));
	SP_CHECK_EQ_INT(l.entry_len, entry_of(e, "alice", 1));
	SP_CHECK_MEM(l.entry, e, l.entry_len);
	token_of(tok, 2);
	SP_CHECK_EQ_INT(lookup_sync(dlog2, NULL, tok, &l), SP_DIRLOG_OK);
	SP_CHECK_EQ_INT(l.index, 0);
	SP_CHECK(lookup_verifies(&l, &h));
	token_of(tok, 3);
	SP_CHECK_EQ_INT(lookup_sync(dlog2, NULL, tok, &l), SP_DIRLOG_NOT_FOUND);
	/* A tampered answer does not verify: another entry at the same index. */
	SP_CHECK_EQ_INT(lookup_sync(dlog2, "bob", NULL, &l), SP_DIRLOG_OK);
	SP_CHECK(lookup_verifies(&l, &h));
	l.entry[l.entry_len - 2] ^= 1;
	SP_CHECK(!lookup_verifies(&l, &h));
}

static void test_refusals_and_removal(void)
{
	struct res r, l;
	uint8_t tok[32];

	/* alice's handle keeps alice's user key; bob cannot list alice's device; no replays. */
	SP_CHECK_EQ_INT(append_sync(dlog1, "alice", 2, 1, 2, 200, ukey_b, &r),
	                SP_DIRLOG_KEY_CHANGED);
	SP_CHECK_EQ_INT(append_sync(dlog1, "bob", 2, 1, 1, 200, ukey_b, &r), SP_DIRLOG_TOKEN_TAKEN);
	SP_CHECK_EQ_INT(append_sync(dlog1, "alice", 2, 1, 2, 100, ukey_a, &r), SP_DIRLOG_STALE);
	/* alice removes device 2: it stops resolving; device 1 still does, to the new card. */
	SP_CHECK_EQ_INT(append_sync(dlog1, "alice", 3, 1, 1, 300, ukey_a, &r), SP_DIRLOG_OK);
	token_of(tok, 2);
	SP_CHECK_EQ_INT(lookup_sync(dlog1, NULL, tok, &l), SP_DIRLOG_NOT_FOUND);
	token_of(tok, 1);
	SP_CHECK_EQ_INT(lookup_sync(dlog1, NULL, tok, &l), SP_DIRLOG_OK);
	SP_CHECK_EQ_INT(l.index, r.index);
	/* ... and the removed device may now join another user. */
	SP_CHECK_EQ_INT(append_sync(dlog1, "bob", 3, 2, 1, 400, ukey_b, &r), SP_DIRLOG_OK);
	SP_CHECK(check_tree_against_redis() == 4);
	/* Three appends in one batch, the middle one refused: the others are written, in order,
	 * and the batch's check sees the first one (carol's device 40 is hers from then on). */
	{
		struct res a, b, c;

		SP_CHECK(append_async(dlog1, "carol", 1, 40, 1, 10, ukey_a, &a) == 0);
		SP_CHECK(append_async(dlog1, "dave", 1, 40, 1, 10, ukey_b, &b) == 0);
		SP_CHECK(append_async(dlog1, "carol", 2, 40, 2, 20, ukey_a, &c) == 0);
		SP_CHECK(rh_run_until(base, &c.done, 5000) && a.done && b.done);
		SP_CHECK_EQ_INT(a.status, SP_DIRLOG_OK);
		SP_CHECK_EQ_INT(b.status, SP_DIRLOG_TOKEN_TAKEN);
		SP_CHECK_EQ_INT(c.status, SP_DIRLOG_OK);
		SP_CHECK_EQ_INT(c.index, a.index + 1);
		SP_CHECK(check_tree_against_redis() == 6);
	}
}

/* The history of the requester's own handle: every entry of sp:{dir}:hist, in order, each with
 * a proof that verifies, and hist_left counting down to 0; nothing for a device no handle
 * lists or after the last entry. */
static void test_history(void)
{
	uint8_t tok[32];
	char want[256] = "", got[256] = "";
	int64_t after = -1;
	uint32_t left = 1;
	struct res r;
	redisReply *x;

	x = redisCommand(rh_raw, "HGET sp:{dir}:hist alice");
	SP_CHECK(x != NULL && x->type == REDIS_REPLY_STRING && x->len < sizeof(want));
	if (x != NULL && x->type == REDIS_REPLY_STRING && x->len < sizeof(want))
		memcpy(want, x->str, x->len);
	if (x)
		freeReplyObject(x);
	token_of(tok, 1); /* alice's */
	for (int n = 0; left > 0 && n < 20; n++) {
		sp_dirlog_head_t h;
		const char *handle;
		const uint8_t *card;
		size_t hl, cl;

		memset(&r, 0, sizeof(r));
		SP_CHECK(sp_dirlog_history(dlog2, tok, after, 0, res_cb, &r) == 0);
		SP_CHECK(rh_run_until(base, &r.done, 5000));
		SP_CHECK_EQ_INT(r.status, SP_DIRLOG_OK);
		if (r.status != SP_DIRLOG_OK)
			return;
		SP_CHECK((int64_t)r.index > after);
		SP_CHECK(lookup_verifies(&r, &h));
		SP_CHECK(sp_dirlog_entry_parse(r.entry, r.entry_len, &handle, &hl, &card, &cl) ==
		                 0 &&
		         hl == 5 && memcmp(handle, "alice", 5) == 0);
		snprintf(got + strlen(got), sizeof(got) - strlen(got), "%llu,",
		         (unsigned long long)r.index);
		after = (int64_t)r.index;
		left = r.hist_left;
	}
	SP_CHECK(strcmp(got, want) == 0 && want[0] != '\0');
	memset(&r, 0, sizeof(r));
	SP_CHECK(sp_dirlog_history(dlog2, tok, after, 0, res_cb, &r) == 0);
	SP_CHECK(rh_run_until(base, &r.done, 5000) && r.status == SP_DIRLOG_NOT_FOUND);
	token_of(tok, 999);
	memset(&r, 0, sizeof(r));
	SP_CHECK(sp_dirlog_history(dlog2, tok, -1, 0, res_cb, &r) == 0);
	SP_CHECK(rh_run_until(base, &r.done, 5000) && r.status == SP_DIRLOG_NOT_FOUND);
	SP_CHECK(sp_dirlog_history(dlog2, tok, -2, 0, res_cb, &r) == -EINVAL);
}

#define RACE_N 150

/* Two relays append at once, several appends queued in each; one tree comes out. */
static void test_concurrent_relays(void)
{
	static struct res r1[RACE_N], r2[RACE_N];
	sp_dirlog_counters_t c1, c2;
	uint64_t before;
	struct res h0;
	int all = 0;

	SP_CHECK_EQ_INT(head_sync(dlog1, 0, &h0), SP_DIRLOG_OK);
	before = (uint64_t)check_tree_against_redis();
	for (unsigned i = 0; i < RACE_N; i++) {
		char ha[16], hb[16];

		snprintf(ha, sizeof(ha), "r1-%u", i);
		snprintf(hb, sizeof(hb), "r2-%u", i);
		SP_CHECK(append_async(dlog1, ha, i, 1000 + i, 1, 1, ukey_a, &r1[i]) == 0);
		SP_CHECK(append_async(dlog2, hb, i, 2000 + i, 1, 1, ukey_b, &r2[i]) == 0);
	}
	for (uint64_t until = rh_mono_ms() + 30000; rh_mono_ms() < until && !all;) {
		event_base_loop(base, EVLOOP_ONCE);
		all = 1;
		for (unsigned i = 0; i < RACE_N; i++)
			all &= r1[i].done && r2[i].done;
	}
	SP_CHECK(all);
	{
		static uint8_t seen[2 * RACE_N + 16];

		for (unsigned i = 0; i < RACE_N; i++) {
			SP_CHECK_EQ_INT(r1[i].status, SP_DIRLOG_OK);
			SP_CHECK_EQ_INT(r2[i].status, SP_DIRLOG_OK);
			if (r1[i].index - before < sizeof(seen))
				seen[r1[i].index - before]++;
			if (r2[i].index - before < sizeof(seen))
				seen[r2[i].index - before]++;
			if (i > 0 && r1[i].index <= r1[i - 1].index)
				SP_FAIL("relay 1's appends out of call order at %u", i);
		}
		for (unsigned i = 0; i < 2 * RACE_N; i++)
			if (seen[i] != 1)
				SP_FAIL("leaf %u was given to %u appends", i + (unsigned)before,
				        seen[i]);
	}
	SP_CHECK_EQ_INT(check_tree_against_redis(), (long)before + 2 * RACE_N);
	sp_dirlog_counters(dlog1, &c1);
	sp_dirlog_counters(dlog2, &c2);
	printf("# %llu + %llu appends lost a race and were retried\n",
	       (unsigned long long)c1.append_retries, (unsigned long long)c2.append_retries);
	/* Every head each relay saw is consistent with the final one. */
	{
		struct res fin, c;
		sp_dirlog_head_t hf, hi;

		SP_CHECK_EQ_INT(head_sync(dlog2, 0, &fin), SP_DIRLOG_OK);
		SP_CHECK(sp_dirlog_head_parse(fin.head, fin.head_len, &hf) == 0);
		for (unsigned i = 0; i < RACE_N; i += 7) {
			SP_CHECK(sp_dirlog_head_parse(r1[i].head, r1[i].head_len, &hi) == 0);
			SP_CHECK(sp_dirlog_head_verify(&hi, log_key) == 0);
			SP_CHECK_EQ_INT(head_sync(dlog1, hi.size, &c), SP_DIRLOG_OK);
			SP_CHECK(sp_merkle_verify_consistency(hi.size, hf.size, hi.root, hf.root,
			                                      (const uint8_t *)c.proof,
			                                      c.count) == 0);
			if (hi.size < hf.size &&
			    sp_merkle_verify_consistency(hi.size, hf.size, hf.root, hf.root,
			                                 (const uint8_t *)c.proof, c.count) == 0)
				SP_FAIL("a consistency proof verified against the wrong old root");
		}
		SP_CHECK_EQ_INT(head_sync(dlog1, hf.size + 1, &c), SP_DIRLOG_NOT_FOUND);
		/* A lookup that brings the consistency proof from an old head along. */
		{
			struct res l = {0};
			sp_dirlog_head_t hl;

			SP_CHECK(sp_dirlog_head_parse(r1[3].head, r1[3].head_len, &hi) == 0);
			SP_CHECK(sp_dirlog_lookup(dlog2, "r1-5", 4, NULL, hi.size, NULL, res_cb,
			                          &l) == 0);
			SP_CHECK(rh_run_until(base, &l.done, 5000));
			SP_CHECK(lookup_verifies(&l, &hl));
			SP_CHECK_EQ_INT(l.old_size, hi.size);
			SP_CHECK(sp_merkle_verify_consistency(hi.size, hl.size, hi.root, hl.root,
			                                      (const uint8_t *)l.cproof,
			                                      l.ccount) == 0);
		}
	}
}

/* A malicious operator rewrites a leaf in Redis: the proof the relay serves for it stops
 * verifying, and the signed root no longer matches the leaves. */
static void test_tampered_leaf_detected(void)
{
	struct res l, before;
	sp_dirlog_head_t h0, h1;
	redisReply *x;

	SP_CHECK_EQ_INT(lookup_sync(dlog1, "alice", NULL, &before), SP_DIRLOG_OK);
	SP_CHECK(lookup_verifies(&before, &h0));
	x = redisCommand(rh_raw, "HSET sp:{dir}:leaf %llu %b", (unsigned long long)before.index,
	                 "forged", (size_t)6);
	if (x)
		freeReplyObject(x);
	SP_CHECK_EQ_INT(lookup_sync(dlog1, "alice", NULL, &l), SP_DIRLOG_OK);
	SP_CHECK(!lookup_verifies(&l, &h1));
	/* The signed root no longer matches the leaves: an auditor who rebuilds the tree sees it.
	 */
	SP_CHECK(check_tree_against_redis() < 0);
	x = redisCommand(rh_raw, "HSET sp:{dir}:leaf %llu %b", (unsigned long long)before.index,
	                 before.entry, before.entry_len);
	if (x)
		freeReplyObject(x);
	SP_CHECK(check_tree_against_redis() > 0);
}

/* The scripts go by SHA1 (EVALSHA); after SCRIPT FLUSH (as after a restart or a failover) a
 * request answered NOSCRIPT is sent again as EVAL, which caches the script again. */
static int scripts_cached(void)
{
	static const char *const names[] = {"append", "lookup", "head"};
	int n = 0;

	for (int i = 0; i < 3; i++) {
		uint8_t md[20];
		char hex[41];
		const char *src = sp_dirlog_script(names[i]);
		redisReply *x;

		SHA1((const uint8_t *)src, strlen(src), md);
		for (int j = 0; j < 20; j++)
			snprintf(hex + 2 * j, 3, "%02x", md[j]);
		x = redisCommand(rh_raw, "SCRIPT EXISTS %s", hex);
		if (x && x->type == REDIS_REPLY_ARRAY && x->elements == 1 &&
		    x->element[0]->integer == 1)
			n++;
		if (x)
			freeReplyObject(x);
	}
	return n;
}

static void test_noscript_fallback(void)
{
	struct res r, h;
	redisReply *x;

	SP_CHECK_EQ_INT(lookup_sync(dlog1, "alice", NULL, &r), SP_DIRLOG_OK);
	SP_CHECK_EQ_INT(head_sync(dlog2, 0, &h), SP_DIRLOG_OK);
	SP_CHECK(append_sync(dlog1, "nos", 1, 700, 1, 1, ukey_b, &r) == SP_DIRLOG_OK);
	SP_CHECK_EQ_INT(scripts_cached(), 3);
	x = redisCommand(rh_raw, "SCRIPT FLUSH");
	if (x)
		freeReplyObject(x);
	SP_CHECK_EQ_INT(scripts_cached(), 0);
	SP_CHECK_EQ_INT(lookup_sync(dlog1, "alice", NULL, &r), SP_DIRLOG_OK);
	SP_CHECK_EQ_INT(head_sync(dlog2, 0, &h), SP_DIRLOG_OK);
	SP_CHECK(append_sync(dlog2, "nos", 2, 700, 1, 2, ukey_b, &r) == SP_DIRLOG_OK);
	SP_CHECK_EQ_INT(scripts_cached(), 3);
	SP_CHECK_EQ_INT(lookup_sync(dlog1, "nos", NULL, &r), SP_DIRLOG_OK);
}

/* Lookups and head requests count against the requester, on every log sharing the Redis. */
static void test_rate_limit(void)
{
	sp_dirlog_limits_t lim;
	sp_dirlog_t *a, *b;
	uint8_t dev1[32], dev2[32];
	struct res r;

	sp_dirlog_limits_default(&lim);
	lim.lookup_limit = 3;
	lim.lookup_window_ms = 700;
	a = sp_dirlog_new(base, st1, log_key, &lim);
	b = sp_dirlog_new(base, st2, log_key, &lim);
	token_of(dev1, 901);
	token_of(dev2, 902);
	for (int i = 0; i < 2; i++) {
		memset(&r, 0, sizeof(r));
		SP_CHECK(sp_dirlog_lookup(i ? b : a, "alice", 5, NULL, 0, dev1, res_cb, &r) == 0);
		SP_CHECK(rh_run_until(base, &r.done, 5000) && r.status == SP_DIRLOG_OK);
	}
	memset(&r, 0, sizeof(r));
	SP_CHECK(sp_dirlog_head(b, 0, dev1, res_cb, &r) == 0);
	SP_CHECK(rh_run_until(base, &r.done, 5000) && r.status == SP_DIRLOG_OK);
	memset(&r, 0, sizeof(r));
	SP_CHECK(sp_dirlog_lookup(a, "alice", 5, NULL, 0, dev1, res_cb, &r) == 0);
	SP_CHECK(rh_run_until(base, &r.done, 5000));
	SP_CHECK_EQ_INT(r.status, SP_DIRLOG_LIMITED);
	memset(&r, 0, sizeof(r));
	SP_CHECK(sp_dirlog_lookup(a, "alice", 5, NULL, 0, dev2, res_cb, &r) == 0);
	SP_CHECK(rh_run_until(base, &r.done, 5000) && r.status == SP_DIRLOG_OK);
	rh_sleep_ms(800);
	memset(&r, 0, sizeof(r));
	SP_CHECK(sp_dirlog_lookup(b, "alice", 5, NULL, 0, dev1, res_cb, &r) == 0);
	SP_CHECK(rh_run_until(base, &r.done, 5000) && r.status == SP_DIRLOG_OK);
	{
		sp_dirlog_counters_t c;

		sp_dirlog_counters(a, &c);
		SP_CHECK_EQ_INT(c.limited, 1);
	}
	sp_dirlog_free(a);
	sp_dirlog_free(b);
}

static void test_store_down(void)
{
	struct res r;

	rh_kill(SIGKILL);
	SP_CHECK_EQ_INT(lookup_sync(dlog1, "alice", NULL, &r), SP_DIRLOG_UNAVAILABLE);
	SP_CHECK(append_sync(dlog1, "alice", 9, 1, 1, 900, ukey_a, &r) == SP_DIRLOG_UNAVAILABLE ||
	         r.status == SP_DIRLOG_UNAVAILABLE);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	if (rh_setup("sp-dirlog") < 0)
		return 1;
	log_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	SP_RUN(test_formats);
	if (rh_start() < 0) {
		printf("# redis-server not found or not starting: skipping the log cases\n");
		sp_test_skip("test_dirlog_redis", "no redis-server");
		return sp_test_done();
	}
	base = event_base_new();
	ev_poll = event_new(base, -1, EV_PERSIST, on_poll, NULL);
	event_add(ev_poll, &(struct timeval){0, 10000});
	st1 = store_new();
	st2 = store_new();
	dlog1 = sp_dirlog_new(base, st1, log_key, NULL);
	dlog2 = sp_dirlog_new(base, st2, log_key, NULL);
	if (!st1 || !st2 || !dlog1 || !dlog2) {
		printf("Bail out! no store or log\n");
		return 1;
	}
	SP_RUN(test_empty);
	SP_RUN(test_append_and_lookup);
	SP_RUN(test_refusals_and_removal);
	SP_RUN(test_history);
	SP_RUN(test_concurrent_relays);
	SP_RUN(test_tampered_leaf_detected);
	SP_RUN(test_noscript_fallback);
	SP_RUN(test_rate_limit);
	SP_RUN(test_store_down);
	sp_dirlog_free(dlog1);
	sp_dirlog_free(dlog2);
	sp_store_free(st1);
	sp_store_free(st2);
	event_free(ev_poll);
	event_base_free(base);
	EVP_PKEY_free(log_key);
	return sp_test_done();
}
