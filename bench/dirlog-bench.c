/*
 * dirlog-bench: the directory's transparency log (server/sp_dirlog) against a running Redis:
 * append rate, lookup + client-side verification time, proof and head sizes, Redis memory per
 * entry. No relay, no TLS: what the log itself costs.
 *
 *	dirlog-bench URL ENTRIES [WRITERS [LOOKUPS [ENTRY_BYTES]]]
 *
 * URL as sp_store_new takes it ("unix:/path/redis.sock"). WRITERS stores, each with its own log
 * (as separate workers or relays would have), append ENTRIES entries together, each a new
 * handle with one device, ENTRY_BYTES (default 700) long, keeping 256 appends queued each. Then
 * LOOKUPS (default 10000) lookups of random handles, one at a time, each verified as a client
 * does (head signature with the log key, RFC 9162 inclusion proof). Expects an empty Redis.
 */
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sp_dirlog.h"
#include "sp_time.h"

#define MAX_WRITERS 16
#define DEPTH       256

static struct event_base *base;
static EVP_PKEY *key;
static uint64_t next_entry, entries, done_appends, failed;
static size_t entry_bytes = 700;
static sp_dirlog_t *logs[MAX_WRITERS];
static unsigned writers = 1;

static void append_one(sp_dirlog_t *d);

static void on_append(const sp_dirlog_answer_t *a, void *arg)
{
	sp_dirlog_t *d = arg;

	done_appends++;
	if (a->status != SP_DIRLOG_OK)
		failed++;
	append_one(d);
	if (done_appends == entries)
		event_base_loopbreak(base);
}

static void append_one(sp_dirlog_t *d)
{
	uint8_t tok[1][32] = {{0}}, ukey[32] = {0}, card[4096], entry[4200];
	char handle[32];
	uint64_t i;
	size_t len;

	if (next_entry >= entries)
		return;
	i = next_entry++;
	snprintf(handle, sizeof(handle), "user%" PRIu64, i);
	memcpy(tok[0], &i, sizeof(i));
	tok[0][31] = 0x5a;
	memcpy(ukey, &i, sizeof(i));
	memset(card, 'c', entry_bytes);
	len = sp_dirlog_entry_build(entry, handle, strlen(handle), card,
	                            entry_bytes - (26 + strlen(handle)));
	if (sp_dirlog_append(d, handle, strlen(handle), ukey, (const uint8_t(*)[32])tok, 1, 1,
	                     entry, len, on_append, d) < 0) {
		failed++;
		done_appends++;
	}
}

struct look {
	int done;
	int ok;
	size_t proof_bytes, head_bytes;
};

static void on_lookup(const sp_dirlog_answer_t *a, void *arg)
{
	struct look *l = arg;
	sp_dirlog_head_t h;
	uint8_t leaf[32];

	l->done = 1;
	l->ok = a->status == SP_DIRLOG_OK && sp_dirlog_head_parse(a->head, a->head_len, &h) == 0 &&
	        sp_dirlog_head_verify(&h, key) == 0 &&
	        sp_merkle_leaf_hash(a->entry, a->entry_len, leaf) == 0 &&
	        sp_merkle_verify_inclusion(a->index, h.size, leaf, (const uint8_t *)a->proof,
	                                   a->proof_count, h.root) == 0;
	l->proof_bytes = 1 + (size_t)a->proof_count * 32;
	l->head_bytes = a->head_len;
	event_base_loopbreak(base);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static long long info_used_memory(const char *url)
{
	redisContext *c = strncmp(url, "unix:", 5) == 0 ? redisConnectUnix(url + 5) : NULL;
	redisReply *r;
	long long v = -1;
	const char *p;

	if (c == NULL || c->err)
		return -1;
	r = redisCommand(c, "INFO memory");
	if (r && r->type == REDIS_REPLY_STRING && (p = strstr(r->str, "used_memory:")) != NULL)
		v = strtoll(p + 12, NULL, 10);
	if (r)
		freeReplyObject(r);
	redisFree(c);
	return v;
}

int main(int argc, char **argv)
{
	sp_store_t *stores[MAX_WRITERS];
	sp_store_limits_t lim;
	uint64_t lookups = 10000, t0, t1, *lat;
	long long mem0, mem1;
	size_t proof_sum = 0, head_sum = 0;
	char err[256];
	unsigned ok = 0;

	if (argc < 3) {
		fprintf(stderr,
		        "usage: dirlog-bench URL ENTRIES [WRITERS [LOOKUPS [ENTRY_BYTES]]]\n");
		return 2;
	}
	entries = strtoull(argv[2], NULL, 10);
	if (argc > 3)
		writers = (unsigned)atoi(argv[3]);
	if (argc > 4)
		lookups = strtoull(argv[4], NULL, 10);
	if (argc > 5)
		entry_bytes = (size_t)atoi(argv[5]);
	if (writers < 1 || writers > MAX_WRITERS || entries < 1 || entry_bytes < 100 ||
	    entry_bytes > 4000) {
		fprintf(stderr, "dirlog-bench: bad arguments\n");
		return 2;
	}
	base = event_base_new();
	key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	sp_store_limits_default(&lim);
	mem0 = info_used_memory(argv[1]);
	for (unsigned w = 0; w < writers; w++) {
		stores[w] = sp_store_new(base, argv[1], &lim, err, sizeof(err));
		if (stores[w] == NULL) {
			fprintf(stderr, "dirlog-bench: %s\n", err);
			return 1;
		}
		while (!sp_store_up(stores[w]))
			event_base_loop(base, EVLOOP_ONCE);
		logs[w] = sp_dirlog_new(base, stores[w], key, NULL);
	}
	t0 = sp_time_mono_ms();
	for (unsigned w = 0; w < writers; w++)
		for (unsigned k = 0; k < DEPTH; k++)
			append_one(logs[w]);
	event_base_dispatch(base);
	t1 = sp_time_mono_ms();
	mem1 = info_used_memory(argv[1]);
	{
		sp_dirlog_counters_t c, sum = {0};

		for (unsigned w = 0; w < writers; w++) {
			sp_dirlog_counters(logs[w], &c);
			sum.append_retries += c.append_retries;
			sum.node_reads += c.node_reads;
		}
		printf("appends: %" PRIu64 " in %.2f s = %.0f/s (%u writers, %" PRIu64
		       " failed, %" PRIu64 " retried after a lost race, %.1f node reads each)\n",
		       entries, (double)(t1 - t0) / 1000.0,
		       (double)entries * 1000.0 / (double)(t1 - t0 ? t1 - t0 : 1), writers, failed,
		       sum.append_retries, (double)sum.node_reads / (double)entries);
	}
	if (mem0 >= 0 && mem1 >= 0)
		printf("redis used_memory: %lld bytes more = %.0f bytes per entry (entry %zu "
		       "bytes)\n",
		       mem1 - mem0, (double)(mem1 - mem0) / (double)entries, entry_bytes);
	lat = calloc(lookups ? lookups : 1, sizeof(*lat));
	srand(7);
	for (uint64_t i = 0; i < lookups; i++) {
		struct look l = {0};
		char handle[32];
		uint64_t a, b;
		struct timespec ts;

		snprintf(handle, sizeof(handle), "user%" PRIu64,
		         ((uint64_t)rand() * (uint64_t)RAND_MAX + (uint64_t)rand()) % entries);
		clock_gettime(CLOCK_MONOTONIC, &ts);
		a = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
		if (sp_dirlog_lookup(logs[0], handle, strlen(handle), NULL, 0, NULL, on_lookup,
		                     &l) < 0)
			break;
		while (!l.done)
			event_base_loop(base, EVLOOP_ONCE);
		clock_gettime(CLOCK_MONOTONIC, &ts);
		b = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
		lat[i] = b - a;
		ok += (unsigned)l.ok;
		proof_sum += l.proof_bytes;
		head_sum += l.head_bytes;
	}
	if (lookups > 0) {
		qsort(lat, lookups, sizeof(*lat), cmp_u64);
		printf("lookups + verification: %" PRIu64
		       " (%u verified), p50 %.3f ms, p99 %.3f ms, "
		       "max %.3f ms\n",
		       lookups, ok, (double)lat[lookups / 2] / 1e6,
		       (double)lat[lookups * 99 / 100] / 1e6, (double)lat[lookups - 1] / 1e6);
		printf("inclusion proof: %.0f bytes on average; signed head: %.0f bytes\n",
		       (double)proof_sum / (double)lookups, (double)head_sum / (double)lookups);
	}
	free(lat);
	for (unsigned w = 0; w < writers; w++)
		sp_dirlog_free(logs[w]);
	for (unsigned w = 0; w < writers; w++)
		sp_store_free(stores[w]);
	EVP_PKEY_free(key);
	event_base_free(base);
	return ok == lookups && failed == 0 ? 0 : 1;
}
