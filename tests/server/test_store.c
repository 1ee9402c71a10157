/*
 * test_store: the offline store (server/sp_store.c) against a real redis-server, which this
 * test starts itself (redis_harness.h: no TCP port, a unix socket in a fresh temporary
 * directory, no persistence, always killed at exit). Raw inspection goes through its blocking
 * hiredis context.
 * Without redis-server on PATH every case is skipped.
 */
#include <errno.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include "sp_store.h"
#include "redis_harness.h"
#include "sp_test.h"

static struct event_base *base;
static struct event *ev_poll;
static sp_store_t *st; /* default limits, short timeout */
static unsigned token_serial;

/* ---- helpers ----------------------------------------------------------------------------- */

static void new_token(uint8_t token[32])
{
	token_serial++;
	for (int i = 0; i < 32; i++)
		token[i] = (uint8_t)(0xa0 + i * 7 + token_serial * 13);
	token[0] = (uint8_t)token_serial;
}

static void make_id(uint8_t id[16], unsigned n)
{
	memset(id, 0x5a, 16);
	id[0] = (uint8_t)(n >> 8);
	id[1] = (uint8_t)n;
	id[15] = 0; /* a NUL inside: ids are binary */
}

static void key_of(char *out, size_t outlen, const uint8_t token[32], char suffix)
{
	char hex[65];

	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", token[i]);
	snprintf(out, outlen, "sp:{%s}:%c", hex, suffix);
}

/* A raw command on the inspection connection; the caller frees the reply. */
static redisReply *raw(const char *fmt, ...)
{
	va_list ap;
	redisReply *r;

	va_start(ap, fmt);
	r = redisvCommand(rh_raw, fmt, ap);
	va_end(ap);
	if (!r)
		printf("# raw command failed: %s\n", rh_raw->errstr);
	return r;
}

static long long raw_int(const char *fmt, ...)
{
	va_list ap;
	redisReply *r;
	long long v = -999999;

	va_start(ap, fmt);
	r = redisvCommand(rh_raw, fmt, ap);
	va_end(ap);
	if (r && r->type == REDIS_REPLY_INTEGER)
		v = r->integer;
	else if (r && r->type == REDIS_REPLY_STRING)
		v = strtoll(r->str, NULL, 10);
	else if (r && r->type == REDIS_REPLY_NIL)
		v = -1000000;
	if (r)
		freeReplyObject(r);
	return v;
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* ---- synchronous wrappers ---------------------------------------------------------------- */

struct item {
	uint64_t seq;
	bool gone; /* handed over without a record: expired or removed meanwhile */
	uint8_t id[16];
	uint8_t rec[512];
	size_t len;
};

struct result {
	int done;
	int calls;
	int status;
	uint64_t seq;
	size_t n;
	struct item items[64];
	uint64_t count, bytes;
	bool early; /* the callback ran inside the request call */
};

static bool in_request;

static void enq_cb(int status, uint64_t seq, void *arg)
{
	struct result *r = arg;

	r->early |= in_request;
	r->status = status;
	r->seq = seq;
	r->calls++;
	r->done = 1;
}

static void fetch_cb(int status, const sp_store_item_t *items, size_t n, void *arg)
{
	struct result *r = arg;

	r->early |= in_request;
	r->status = status;
	r->n = 0;
	for (size_t i = 0; i < n && i < sizeof(r->items) / sizeof(r->items[0]); i++) {
		r->items[i].seq = items[i].seq;
		memcpy(r->items[i].id, items[i].id, 16);
		r->items[i].len = items[i].record_len;
		r->items[i].gone = items[i].record == NULL;
		if (items[i].record && items[i].record_len <= sizeof(r->items[i].rec))
			memcpy(r->items[i].rec, items[i].record, items[i].record_len);
		r->n++;
	}
	r->calls++;
	r->done = 1;
}

static void ack_cb(int status, size_t removed, void *arg)
{
	struct result *r = arg;

	r->early |= in_request;
	r->status = status;
	r->n = removed;
	r->calls++;
	r->done = 1;
}

static void depth_cb(int status, uint64_t count, uint64_t bytes, void *arg)
{
	struct result *r = arg;

	r->early |= in_request;
	r->status = status;
	r->count = count;
	r->bytes = bytes;
	r->calls++;
	r->done = 1;
}

/* Builds a record with `blob_len` bytes of blob and stores it; returns the status. */
static int enq_start(sp_store_t *s, const uint8_t token[32], const uint8_t id[16], size_t blob_len,
                     uint64_t expires_ms, const char *collapse, struct result *r)
{
	size_t clen = collapse ? strlen(collapse) : 0;
	uint8_t blob[400], rec[512];
	size_t len = sp_store_record_size(clen, blob_len);
	int rc;

	memset(r, 0, sizeof(*r));
	memset(blob, 0xb0 + id[1], sizeof(blob));
	if (len == 0 || len > sizeof(rec) || blob_len > sizeof(blob))
		return -1;
	if (sp_store_record_build(rec, sizeof(rec), expires_ms, 10, (const uint8_t *)collapse, clen,
	                          blob, blob_len) != 0)
		return -1;
	in_request = true;
	rc = sp_store_enqueue(s, token, id, rec, len, expires_ms, (const uint8_t *)collapse, clen,
	                      enq_cb, r);
	in_request = false;
	memset(rec, 0, sizeof(rec)); /* the store copied it */
	return rc;
}

static int enq(sp_store_t *s, const uint8_t token[32], const uint8_t id[16], size_t blob_len,
               uint64_t expires_ms, const char *collapse, uint64_t *seq)
{
	struct result r;

	if (enq_start(s, token, id, blob_len, expires_ms, collapse, &r) != 0)
		return -100;
	if (!rh_run_until(base, &r.done, 5000))
		return -101;
	if (r.early)
		return -102;
	if (seq)
		*seq = r.seq;
	return r.status;
}

static int fetch(sp_store_t *s, const uint8_t token[32], uint64_t after, unsigned count,
                 struct result *r)
{
	memset(r, 0, sizeof(*r));
	in_request = true;
	if (sp_store_fetch(s, token, after, count, fetch_cb, r) != 0) {
		in_request = false;
		return -100;
	}
	in_request = false;
	if (!rh_run_until(base, &r->done, 5000))
		return -101;
	return r->early ? -102 : r->status;
}

static int ack(sp_store_t *s, const uint8_t token[32], const uint8_t (*ids)[16], size_t n,
               size_t *removed)
{
	struct result r;

	memset(&r, 0, sizeof(r));
	in_request = true;
	if (sp_store_ack(s, token, ids, n, ack_cb, &r) != 0) {
		in_request = false;
		return -100;
	}
	in_request = false;
	if (!rh_run_until(base, &r.done, 5000))
		return -101;
	*removed = r.n;
	return r.early ? -102 : r.status;
}

static int depth(sp_store_t *s, const uint8_t token[32], uint64_t *count, uint64_t *bytes)
{
	struct result r;

	memset(&r, 0, sizeof(r));
	if (sp_store_depth(s, token, depth_cb, &r) != 0)
		return -100;
	if (!rh_run_until(base, &r.done, 5000))
		return -101;
	*count = r.count;
	*bytes = r.bytes;
	return r.status;
}

static sp_store_t *store_new(uint32_t max_count, uint64_t max_bytes, uint32_t timeout_ms)
{
	sp_store_limits_t lim;
	char err[256];
	sp_store_t *s;

	sp_store_limits_default(&lim);
	lim.max_count = max_count;
	lim.max_bytes = max_bytes;
	lim.timeout_ms = timeout_ms;
	s = sp_store_new(base, rh_url, &lim, err, sizeof(err));
	if (!s)
		printf("# sp_store_new: %s\n", err);
	return s;
}

/* ---- cases ------------------------------------------------------------------------------- */

static void test_record(void)
{
	uint8_t rec[128], blob[20];
	sp_store_record_t r;
	size_t len = sp_store_record_size(3, sizeof(blob));

	memset(blob, 7, sizeof(blob));
	SP_CHECK_EQ_INT(len, 11 + 3 + 20);
	SP_CHECK_EQ_INT(sp_store_record_size(65, 1), 0);
	SP_CHECK_EQ_INT(sp_store_record_size(0, SIZE_MAX), 0);
	SP_CHECK_EQ_INT(sp_store_record_build(rec, len, UINT64_C(0x0102030405060708), 5,
	                                      (const uint8_t *)"abc", 3, blob, sizeof(blob)),
	                0);
	SP_CHECK_EQ_INT(rec[0], 1);
	SP_CHECK_EQ_INT(rec[1], 1);
	SP_CHECK_EQ_INT(rec[8], 8);
	SP_CHECK_EQ_INT(sp_store_record_parse(rec, len, &r), 0);
	SP_CHECK(r.expires_ms == UINT64_C(0x0102030405060708));
	SP_CHECK_EQ_INT(r.priority, 5);
	SP_CHECK_EQ_INT(r.collapse_len, 3);
	SP_CHECK_MEM(r.collapse, "abc", 3);
	SP_CHECK_EQ_INT(r.blob_len, 20);
	SP_CHECK_MEM(r.blob, blob, 20);
	SP_CHECK_EQ_INT(sp_store_record_build(rec, len - 1, 1, 5, (const uint8_t *)"abc", 3, blob,
	                                      sizeof(blob)),
	                -EINVAL);
	/* strictness: every truncation of the header, a wrong version, a collapse length that
	 * runs past the end or over the limit */
	for (size_t n = 0; n < 14; n++)
		SP_CHECK_EQ_INT(sp_store_record_parse(rec, n, &r), -EBADMSG);
	rec[0] = 2;
	SP_CHECK_EQ_INT(sp_store_record_parse(rec, len, &r), -EBADMSG);
	rec[0] = 1;
	rec[10] = 65;
	SP_CHECK_EQ_INT(sp_store_record_parse(rec, sizeof(rec), &r), -EBADMSG);
	rec[10] = 30;
	SP_CHECK_EQ_INT(sp_store_record_parse(rec, 11 + 29, &r), -EBADMSG);
	SP_CHECK_EQ_INT(sp_store_record_parse(rec, 11 + 30, &r), 0);
	SP_CHECK_EQ_INT(r.blob_len, 0);
	SP_CHECK_EQ_INT(strcmp(sp_store_status_name(SP_STORE_UNAVAILABLE), "unavailable"), 0);
	SP_CHECK_EQ_INT(strcmp(sp_store_status_name(99), "unknown"), 0);
}

static void test_bad_arguments(void)
{
	sp_store_limits_t lim;
	char err[256];
	uint8_t token[32] = {1}, id[16] = {2}, rec[64];
	struct result r;
	size_t len = sp_store_record_size(1, 4);

	sp_store_limits_default(&lim);
	SP_CHECK(sp_store_new(base, "http://x", &lim, err, sizeof(err)) == NULL);
	SP_CHECK(sp_store_new(base, "unix:", &lim, err, sizeof(err)) == NULL);
	SP_CHECK(sp_store_new(base, "redis://host:99999", &lim, err, sizeof(err)) == NULL);
	lim.timeout_ms = 0;
	SP_CHECK(sp_store_new(base, rh_url, &lim, err, sizeof(err)) == NULL);
	memset(&r, 0, sizeof(r));
	SP_CHECK_EQ_INT(sp_store_record_build(rec, sizeof(rec), 5000, 10, (const uint8_t *)"k", 1,
	                                      (const uint8_t *)"blob", 4),
	                0);
	/* the record's expiry and collapse id must agree with the arguments */
	SP_CHECK_EQ_INT(sp_store_enqueue(st, token, id, rec, len, 5001, (const uint8_t *)"k", 1,
	                                 enq_cb, &r),
	                -EINVAL);
	SP_CHECK_EQ_INT(sp_store_enqueue(st, token, id, rec, len, 5000, (const uint8_t *)"j", 1,
	                                 enq_cb, &r),
	                -EINVAL);
	SP_CHECK_EQ_INT(sp_store_enqueue(st, token, id, rec, len, 5000, NULL, 0, enq_cb, &r),
	                -EINVAL);
	SP_CHECK_EQ_INT(
	        sp_store_enqueue(st, token, id, rec, 5, 5000, (const uint8_t *)"k", 1, enq_cb, &r),
	        -EINVAL);
	SP_CHECK_EQ_INT(sp_store_fetch(st, token, 0, 0, fetch_cb, &r), -EINVAL);
	SP_CHECK_EQ_INT(sp_store_fetch(st, token, 0, SP_STORE_MAX_FETCH + 1, fetch_cb, &r),
	                -EINVAL);
	SP_CHECK_EQ_INT(sp_store_ack(st, token, (const uint8_t(*)[16])id, 0, NULL, NULL), -EINVAL);
	SP_CHECK_EQ_INT(r.calls, 0);
}

static void test_order(void)
{
	uint8_t token[32], id[16];
	uint64_t seqs[5];
	struct result r;

	new_token(token);
	for (unsigned i = 0; i < 5; i++) {
		make_id(id, i);
		SP_CHECK_EQ_INT(enq(st, token, id, 10 + i, rh_wall_ms() + 60000, NULL, &seqs[i]),
		                SP_STORE_STORED);
		if (i > 0)
			SP_CHECK(seqs[i] > seqs[i - 1]);
	}
	SP_CHECK_EQ_INT(fetch(st, token, 0, 10, &r), SP_STORE_OK);
	SP_CHECK_EQ_INT(r.n, 5);
	for (unsigned i = 0; i < r.n; i++) {
		sp_store_record_t rec;

		make_id(id, i);
		SP_CHECK_MEM(r.items[i].id, id, 16);
		SP_CHECK(r.items[i].seq == seqs[i]);
		SP_CHECK_EQ_INT(sp_store_record_parse(r.items[i].rec, r.items[i].len, &rec), 0);
		SP_CHECK_EQ_INT(rec.blob_len, 10 + i);
		SP_CHECK_EQ_INT(rec.priority, 10);
		SP_CHECK_EQ_INT(rec.blob[0], 0xb0 + i);
	}
}

/* The counter goes back under a connected device's cursor: a promoted replica that had not
 * got the last writes, or a Redis restarted from an older AOF. What is stored afterwards must
 * still come after that cursor, all of it. */
static void test_counter_back(void)
{
	uint8_t token[32], id[16];
	uint64_t seqs[3], cursor;
	char hex[65];
	struct result r;

	new_token(token);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", token[i]);
	for (unsigned i = 0; i < 3; i++) {
		make_id(id, 40 + i);
		SP_CHECK_EQ_INT(enq(st, token, id, 10, rh_wall_ms() + 60000, NULL, &seqs[i]),
		                SP_STORE_STORED);
	}
	SP_CHECK_EQ_INT(fetch(st, token, 0, 10, &r), SP_STORE_OK);
	SP_CHECK_EQ_INT(r.n, 3);
	cursor = r.items[2].seq;
	/* the replica had only the first: the last two and the counter past them are gone */
	for (unsigned i = 1; i < 3; i++) {
		make_id(id, 40 + i);
		freeReplyObject(raw("ZREM sp:{%s}:q %b", hex, id, (size_t)16));
		freeReplyObject(raw("ZREM sp:{%s}:e %b", hex, id, (size_t)16));
		freeReplyObject(raw("HDEL sp:{%s}:m %b", hex, id, (size_t)16));
	}
	freeReplyObject(raw("HSET sp:{%s}:s seq %llu", hex, (unsigned long long)seqs[0]));
	for (unsigned i = 0; i < 5; i++) {
		make_id(id, 50 + i);
		SP_CHECK_EQ_INT(enq(st, token, id, 10, rh_wall_ms() + 60000, NULL, NULL),
		                SP_STORE_STORED);
	}
	SP_CHECK_EQ_INT(fetch(st, token, cursor, 10, &r), SP_STORE_OK);
	SP_CHECK_EQ_INT(r.n, 5);
	for (unsigned i = 0; i < r.n && i < 5; i++) {
		make_id(id, 50 + i);
		SP_CHECK_MEM(r.items[i].id, id, 16);
	}
}

static void test_paging(void)
{
	uint8_t token[32], id[16];
	struct result r;
	uint64_t after = 0;
	unsigned got = 0, pages = 0;

	new_token(token);
	for (unsigned i = 0; i < 7; i++) {
		make_id(id, i);
		SP_CHECK_EQ_INT(enq(st, token, id, 8, rh_wall_ms() + 60000, NULL, NULL),
		                SP_STORE_STORED);
	}
	for (;;) {
		SP_CHECK_EQ_INT(fetch(st, token, after, 3, &r), SP_STORE_OK);
		pages++;
		if (r.n == 0 || pages > 5)
			break;
		SP_CHECK(r.n <= 3);
		for (unsigned i = 0; i < r.n; i++) {
			make_id(id, got + i);
			SP_CHECK_MEM(r.items[i].id, id, 16);
			SP_CHECK(r.items[i].seq > after);
		}
		got += (unsigned)r.n;
		after = r.items[r.n - 1].seq;
	}
	SP_CHECK_EQ_INT(got, 7);
	SP_CHECK_EQ_INT(pages, 4); /* 3 + 3 + 1 + the empty page */
}

static void test_duplicate(void)
{
	uint8_t token[32], id[16];
	uint64_t seq1 = 0, seq2 = 0, count, bytes, bytes1;
	sp_store_counters_t c0, c1;

	new_token(token);
	make_id(id, 1);
	sp_store_counters(st, &c0);
	SP_CHECK_EQ_INT(enq(st, token, id, 20, rh_wall_ms() + 60000, "dup", &seq1),
	                SP_STORE_STORED);
	SP_CHECK_EQ_INT(depth(st, token, &count, &bytes1), SP_STORE_OK);
	SP_CHECK_EQ_INT(enq(st, token, id, 20, rh_wall_ms() + 60000, "dup", &seq2),
	                SP_STORE_DUPLICATE);
	SP_CHECK(seq1 == seq2 && seq1 > 0);
	SP_CHECK_EQ_INT(depth(st, token, &count, &bytes), SP_STORE_OK);
	SP_CHECK_EQ_INT(count, 1);
	SP_CHECK_EQ_INT(bytes, bytes1);
	SP_CHECK_EQ_INT(bytes, sp_store_record_size(3, 20));
	sp_store_counters(st, &c1);
	SP_CHECK_EQ_INT(c1.duplicates - c0.duplicates, 1);
	SP_CHECK_EQ_INT(c1.enqueued - c0.enqueued, 1);
}

static void test_collapse(void)
{
	uint8_t token[32], a[16], b[16], c[16];
	uint64_t count, bytes;
	struct result r;
	char key[128];
	redisReply *rep;

	new_token(token);
	make_id(a, 1);
	make_id(b, 2);
	make_id(c, 3);
	SP_CHECK_EQ_INT(enq(st, token, a, 10, rh_wall_ms() + 60000, "score", NULL),
	                SP_STORE_STORED);
	SP_CHECK_EQ_INT(enq(st, token, b, 20, rh_wall_ms() + 60000, NULL, NULL), SP_STORE_STORED);
	SP_CHECK_EQ_INT(enq(st, token, c, 30, rh_wall_ms() + 60000, "score", NULL),
	                SP_STORE_STORED);
	SP_CHECK_EQ_INT(fetch(st, token, 0, 10, &r), SP_STORE_OK);
	SP_CHECK_EQ_INT(r.n, 2);
	if (r.n == 2) {
		SP_CHECK_MEM(r.items[0].id, b, 16);
		SP_CHECK_MEM(r.items[1].id, c, 16);
	}
	SP_CHECK_EQ_INT(depth(st, token, &count, &bytes), SP_STORE_OK);
	SP_CHECK_EQ_INT(count, 2);
	SP_CHECK_EQ_INT(bytes, sp_store_record_size(0, 20) + sp_store_record_size(5, 30));
	key_of(key, sizeof(key), token, 'c');
	rep = raw("HGET %s score", key);
	SP_CHECK(rep && rep->type == REDIS_REPLY_STRING && rep->len == 16 &&
	         memcmp(rep->str, c, 16) == 0);
	if (rep)
		freeReplyObject(rep);
	key_of(key, sizeof(key), token, 'm');
	SP_CHECK_EQ_INT(raw_int("HEXISTS %s %b", key, a, (size_t)16), 0);
	key_of(key, sizeof(key), token, 'e');
	SP_CHECK_EQ_INT(raw_int("ZCARD %s", key), 2);
}

/* Caps, and the collapse fix: a replacement needs no extra room, and a refused replacement
 * leaves the older message in place. */
static void test_caps(void)
{
	sp_store_t *s = store_new(3, 200, 2000);
	uint8_t token[32], id[16];
	uint64_t count, bytes;
	sp_store_counters_t c0, c1;
	struct result r;

	SP_CHECK(s && rh_wait_up(base, s, 5000));
	if (!s)
		return;
	sp_store_counters(s, &c0);
	new_token(token);
	make_id(id, 1);
	SP_CHECK_EQ_INT(enq(s, token, id, 10, rh_wall_ms() + 60000, "k", NULL), SP_STORE_STORED);
	make_id(id, 2);
	SP_CHECK_EQ_INT(enq(s, token, id, 10, rh_wall_ms() + 60000, NULL, NULL), SP_STORE_STORED);
	make_id(id, 3);
	SP_CHECK_EQ_INT(enq(s, token, id, 10, rh_wall_ms() + 60000, NULL, NULL), SP_STORE_STORED);
	make_id(id, 4);
	SP_CHECK_EQ_INT(enq(s, token, id, 10, rh_wall_ms() + 60000, NULL, NULL),
	                SP_STORE_FULL_COUNT);
	/* full, but a replacement of message 1 fits */
	make_id(id, 5);
	SP_CHECK_EQ_INT(enq(s, token, id, 20, rh_wall_ms() + 60000, "k", NULL), SP_STORE_STORED);
	SP_CHECK_EQ_INT(depth(s, token, &count, &bytes), SP_STORE_OK);
	SP_CHECK_EQ_INT(count, 3);
	SP_CHECK_EQ_INT(bytes, 2 * sp_store_record_size(0, 10) + sp_store_record_size(1, 20));
	/* a replacement too big for the byte cap is refused and message 5 stays */
	make_id(id, 6);
	SP_CHECK_EQ_INT(enq(s, token, id, 200, rh_wall_ms() + 60000, "k", NULL),
	                SP_STORE_FULL_BYTES);
	SP_CHECK_EQ_INT(fetch(s, token, 0, 10, &r), SP_STORE_OK);
	SP_CHECK_EQ_INT(r.n, 3);
	make_id(id, 5);
	if (r.n == 3)
		SP_CHECK_MEM(r.items[2].id, id, 16);
	/* byte cap on a fresh queue: 3 x 60 + 3 x 11 = 213 > 200 */
	new_token(token);
	make_id(id, 1);
	SP_CHECK_EQ_INT(enq(s, token, id, 60, rh_wall_ms() + 60000, NULL, NULL), SP_STORE_STORED);
	make_id(id, 2);
	SP_CHECK_EQ_INT(enq(s, token, id, 60, rh_wall_ms() + 60000, NULL, NULL), SP_STORE_STORED);
	make_id(id, 3);
	SP_CHECK_EQ_INT(enq(s, token, id, 60, rh_wall_ms() + 60000, NULL, NULL),
	                SP_STORE_FULL_BYTES);
	make_id(id, 4);
	SP_CHECK_EQ_INT(enq(s, token, id, 60 - 13, rh_wall_ms() + 60000, NULL, NULL),
	                SP_STORE_STORED); /* exactly 200 */
	SP_CHECK_EQ_INT(depth(s, token, &count, &bytes), SP_STORE_OK);
	SP_CHECK_EQ_INT(bytes, 200);
	sp_store_counters(s, &c1);
	SP_CHECK_EQ_INT(c1.refused_full - c0.refused_full, 3);
	sp_store_free(s);
}

static void test_expiry(void)
{
	uint8_t token[32], id[16];
	uint64_t count, bytes, now = rh_wall_ms();
	sp_store_counters_t c0, c1;
	struct result r;
	const char sfx[] = "qemcs";
	char key[128];

	new_token(token);
	sp_store_counters(st, &c0);
	make_id(id, 1);
	SP_CHECK_EQ_INT(enq(st, token, id, 10, now + 300, "x", NULL), SP_STORE_STORED);
	make_id(id, 2);
	SP_CHECK_EQ_INT(enq(st, token, id, 10, now + 300, NULL, NULL), SP_STORE_STORED);
	make_id(id, 3);
	SP_CHECK_EQ_INT(enq(st, token, id, 30, now + 60000, NULL, NULL), SP_STORE_STORED);
	make_id(id, 4);
	SP_CHECK_EQ_INT(enq(st, token, id, 10, now - 1, NULL, NULL), SP_STORE_EXPIRED);
	/* every key has a TTL, the latest expiry */
	for (int k = 0; k < 5; k++) {
		long long pttl;

		key_of(key, sizeof(key), token, sfx[k]);
		pttl = raw_int("PTTL %s", key);
		/* the message's expiry, rounded up to the hour (sp_store.c) */
		if (pttl <= 55000 || pttl > 60000 + 3600000)
			SP_FAIL("PTTL %s = %lld", key, pttl);
	}
	SP_CHECK_EQ_INT(depth(st, token, &count, &bytes), SP_STORE_OK);
	SP_CHECK_EQ_INT(count, 3);
	SP_CHECK_EQ_INT(bytes, sp_store_record_size(1, 10) + sp_store_record_size(0, 10) +
	                               sp_store_record_size(0, 30));
	rh_sleep_ms(500);
	SP_CHECK_EQ_INT(fetch(st, token, 0, 10, &r), SP_STORE_OK);
	SP_CHECK_EQ_INT(r.n, 1);
	make_id(id, 3);
	if (r.n == 1)
		SP_CHECK_MEM(r.items[0].id, id, 16);
	key_of(key, sizeof(key), token, 's');
	SP_CHECK_EQ_INT(raw_int("HGET %s bytes", key), sp_store_record_size(0, 30));
	key_of(key, sizeof(key), token, 'c');
	SP_CHECK_EQ_INT(raw_int("HLEN %s", key), 0);
	SP_CHECK_EQ_INT(depth(st, token, &count, &bytes), SP_STORE_OK);
	SP_CHECK_EQ_INT(count, 1);
	sp_store_counters(st, &c1);
	SP_CHECK_EQ_INT(c1.expired_purged - c0.expired_purged, 2);
	SP_CHECK_EQ_INT(c1.expired - c0.expired, 1);
}

/* More expired messages than one purge batch (100): FETCH still returns only live ones. */
static void test_expiry_many(void)
{
	uint8_t token[32], id[16];
	uint64_t count, bytes, now = rh_wall_ms();
	struct result *r = calloc(130, sizeof(*r));
	struct result f;
	int all = 0, gone = 0, live = 0;
	uint64_t after = 0;
	sp_store_counters_t c0, c1;

	if (!r) {
		SP_FAIL("out of memory");
		return;
	}

	new_token(token);
	for (unsigned i = 0; i < 130; i++) {
		make_id(id, i);
		SP_CHECK_EQ_INT(enq_start(st, token, id, 5, now + 1000, NULL, &r[i]), 0);
	}
	for (unsigned i = 0; i < 130; i++) {
		rh_run_until(base, &r[i].done, 5000);
		all += r[i].status == SP_STORE_STORED;
	}
	SP_CHECK_EQ_INT(all, 130);
	make_id(id, 999);
	SP_CHECK_EQ_INT(enq(st, token, id, 5, now + 60000, NULL, NULL), SP_STORE_STORED);
	rh_sleep_ms(1200);
	sp_store_counters(st, &c0);
	/* A fetch purges up to 100 expired messages first; of the 30 left, the 10 the first page
	 * meets come as items without records (a full page, so paging goes on) and are removed
	 * too; the next fetch's purge takes the other 20. The live message comes last, once. */
	for (int pages = 0; pages < 10; pages++) {
		SP_CHECK_EQ_INT(fetch(st, token, after, 10, &f), SP_STORE_OK);
		for (size_t i = 0; i < f.n; i++) {
			if (f.items[i].gone) {
				gone++;
			} else {
				live++;
				SP_CHECK_MEM(f.items[i].id, id, 16);
			}
			SP_CHECK(f.items[i].seq > after);
		}
		if (f.n > 0)
			after = f.items[f.n - 1].seq;
		if (f.n < 10)
			break;
	}
	SP_CHECK_EQ_INT(live, 1);
	SP_CHECK_EQ_INT(gone, 10);
	SP_CHECK_EQ_INT(depth(st, token, &count, &bytes), SP_STORE_OK);
	SP_CHECK_EQ_INT(count, 1); /* the store removed what it handed over as expired */
	SP_CHECK_EQ_INT(bytes, sp_store_record_size(0, 5));
	sp_store_counters(st, &c1);
	SP_CHECK_EQ_INT(c1.expired_purged - c0.expired_purged, 130);
	free(r);
}

static void test_ack(void)
{
	uint8_t token[32], ids[5][16];
	uint8_t sel[3][16];
	uint64_t count, bytes;
	size_t removed = 99;
	struct result r;

	new_token(token);
	for (unsigned i = 0; i < 4; i++) {
		make_id(ids[i], i);
		SP_CHECK_EQ_INT(enq(st, token, ids[i], 10 + i, rh_wall_ms() + 60000,
		                    i == 2 ? "col" : NULL, NULL),
		                SP_STORE_STORED);
	}
	memcpy(sel[0], ids[0], 16);
	memcpy(sel[1], ids[2], 16);
	make_id(sel[2], 777); /* unknown */
	SP_CHECK_EQ_INT(ack(st, token, (const uint8_t(*)[16])sel, 3, &removed), SP_STORE_OK);
	SP_CHECK_EQ_INT(removed, 2);
	SP_CHECK_EQ_INT(fetch(st, token, 0, 10, &r), SP_STORE_OK);
	SP_CHECK_EQ_INT(r.n, 2);
	if (r.n == 2) {
		SP_CHECK_MEM(r.items[0].id, ids[1], 16);
		SP_CHECK_MEM(r.items[1].id, ids[3], 16);
	}
	SP_CHECK_EQ_INT(depth(st, token, &count, &bytes), SP_STORE_OK);
	SP_CHECK_EQ_INT(count, 2);
	SP_CHECK_EQ_INT(bytes, sp_store_record_size(0, 11) + sp_store_record_size(0, 13));
	{
		char key[128];

		key_of(key, sizeof(key), token, 'c');
		SP_CHECK_EQ_INT(raw_int("EXISTS %s", key), 0);
	}
	/* only unknown ids, and an ack of a whole queue */
	SP_CHECK_EQ_INT(ack(st, token, (const uint8_t(*)[16])sel, 2, &removed), SP_STORE_OK);
	SP_CHECK_EQ_INT(removed, 0);
	SP_CHECK_EQ_INT(ack(st, token, (const uint8_t(*)[16])ids[1], 3, &removed), SP_STORE_OK);
	SP_CHECK_EQ_INT(removed, 2);
	SP_CHECK_EQ_INT(depth(st, token, &count, &bytes), SP_STORE_OK);
	SP_CHECK_EQ_INT(count, 0);
	SP_CHECK_EQ_INT(bytes, 0);
	/* no callback is fine */
	SP_CHECK_EQ_INT(sp_store_ack(st, token, (const uint8_t(*)[16])sel, 1, NULL, NULL), 0);
	SP_CHECK_EQ_INT(depth(st, token, &count, &bytes), SP_STORE_OK);
}

/* Every key is one of the five documented ones, with only the documented contents. */
static void test_layout(void)
{
	redisReply *keys = raw("KEYS *");
	size_t checked = 0;

	SP_CHECK(keys && keys->type == REDIS_REPLY_ARRAY && keys->elements > 0);
	for (size_t i = 0; keys && i < keys->elements; i++) {
		const char *k = keys->element[i]->str;
		size_t len = keys->element[i]->len;
		char sfx;
		redisReply *v;

		if (len != 71 || strncmp(k, "sp:{", 4) != 0 || strncmp(k + 68, "}:", 2) != 0 ||
		    strspn(k + 4, "0123456789abcdef") < 64) {
			SP_FAIL("unexpected key %s", k);
			continue;
		}
		sfx = k[70];
		if (raw_int("PTTL %s", k) <= 0)
			SP_FAIL("key %s has no TTL", k);
		if (sfx == 'q' || sfx == 'e') {
			v = raw("ZRANGE %s 0 -1", k);
			for (size_t j = 0; v && j < v->elements; j++)
				if (v->element[j]->len != 16)
					SP_FAIL("%s member of %zu bytes", k, v->element[j]->len);
		} else if (sfx == 'm') {
			v = raw("HGETALL %s", k);
			for (size_t j = 0; v && j + 1 < v->elements; j += 2) {
				sp_store_record_t rec;

				if (v->element[j]->len != 16 ||
				    sp_store_record_parse((const uint8_t *)v->element[j + 1]->str,
				                          v->element[j + 1]->len, &rec) != 0)
					SP_FAIL("%s has a bad entry", k);
			}
		} else if (sfx == 'c') {
			v = raw("HGETALL %s", k);
			for (size_t j = 0; v && j + 1 < v->elements; j += 2)
				if (v->element[j + 1]->len != 16)
					SP_FAIL("%s maps to a non-id", k);
		} else if (sfx == 's') {
			v = raw("HGETALL %s", k);
			for (size_t j = 0; v && j + 1 < v->elements; j += 2)
				if (strcmp(v->element[j]->str, "seq") != 0 &&
				    strcmp(v->element[j]->str, "bytes") != 0 &&
				    strcmp(v->element[j]->str, "kexp") != 0)
					SP_FAIL("%s has field %s", k, v->element[j]->str);
		} else {
			SP_FAIL("unexpected key %s", k);
			continue;
		}
		if (v)
			freeReplyObject(v);
		checked++;
	}
	SP_CHECK(checked > 10);
	if (keys)
		freeReplyObject(keys);
}

/* A record that is not ours, written behind the store's back: FETCH hands it over, the parser
 * rejects it, ACK and the purge cope with it. */
static void test_malformed(void)
{
	uint8_t token[32], good[16], bad[16], shorty[16];
	char kq[128], ke[128], km[128];
	struct result r;
	size_t removed = 0;
	uint64_t exp = rh_wall_ms() + 60000;
	const char garbage[] = "\x02\x00\x00\x01\x7f\xff\xff\xff\xff\xff\x0a\xff\xff";

	new_token(token);
	make_id(good, 1);
	make_id(bad, 2);
	make_id(shorty, 3);
	SP_CHECK_EQ_INT(enq(st, token, good, 10, exp, NULL, NULL), SP_STORE_STORED);
	key_of(kq, sizeof(kq), token, 'q');
	key_of(ke, sizeof(ke), token, 'e');
	key_of(km, sizeof(km), token, 'm');
	freeReplyObject(raw("HSET %s %b %b", km, bad, (size_t)16, garbage, sizeof(garbage) - 1));
	freeReplyObject(raw("ZADD %s 8000000000000000 %b", kq, bad, (size_t)16));
	freeReplyObject(raw("ZADD %s %llu %b", ke, (unsigned long long)exp, bad, (size_t)16));
	freeReplyObject(raw("HSET %s %b x", km, shorty, (size_t)16));
	freeReplyObject(raw("ZADD %s 8000000000000001 %b", kq, shorty, (size_t)16));
	freeReplyObject(raw("ZADD %s %llu %b", ke, (unsigned long long)exp, shorty, (size_t)16));
	SP_CHECK_EQ_INT(fetch(st, token, 0, 10, &r), SP_STORE_OK);
	SP_CHECK_EQ_INT(r.n, 3);
	if (r.n == 3) {
		sp_store_record_t rec;

		SP_CHECK_EQ_INT(sp_store_record_parse(r.items[0].rec, r.items[0].len, &rec), 0);
		SP_CHECK_MEM(r.items[1].id, bad, 16);
		SP_CHECK_EQ_INT(sp_store_record_parse(r.items[1].rec, r.items[1].len, &rec),
		                -EBADMSG);
		SP_CHECK_MEM(r.items[2].id, shorty, 16);
		SP_CHECK_EQ_INT(sp_store_record_parse(r.items[2].rec, r.items[2].len, &rec),
		                -EBADMSG);
	}
	{
		uint8_t both[2][16];

		memcpy(both[0], bad, 16);
		memcpy(both[1], shorty, 16);
		SP_CHECK_EQ_INT(ack(st, token, (const uint8_t(*)[16])both, 2, &removed),
		                SP_STORE_OK);
		SP_CHECK_EQ_INT(removed, 2);
	}
	SP_CHECK_EQ_INT(fetch(st, token, 0, 10, &r), SP_STORE_OK);
	SP_CHECK_EQ_INT(r.n, 1);
	/* a reply of the wrong shape is an ERROR, never a crash: a queue key of the wrong type */
	{
		uint8_t t2[32];
		char k2[128];

		new_token(t2);
		key_of(k2, sizeof(k2), t2, 'q');
		freeReplyObject(raw("SET %s notazset", k2));
		SP_CHECK_EQ_INT(fetch(st, t2, 0, 10, &r), SP_STORE_ERROR);
		SP_CHECK_EQ_INT(enq(st, t2, good, 10, exp, NULL, NULL), SP_STORE_ERROR);
		freeReplyObject(raw("DEL %s", k2));
	}
}

/* SCRIPT FLUSH behind the store's back: EVALSHA gets NOSCRIPT and falls back to EVAL. */
/* ---- batches ----------------------------------------------------------------------------- */

struct enq_res {
	int done, status, order;
	uint64_t seq;
};

static int enq_order;

static void enq_res_cb(int status, uint64_t seq, void *arg)
{
	struct enq_res *r = arg;

	r->done++;
	r->status = status;
	r->seq = seq;
	r->order = enq_order++;
}

struct op {
	unsigned id; /* from a small pool, so that retries happen */
	size_t blob_len;
	int64_t expires_in; /* ms from now; <= 0 is already expired */
	const char *collapse;
};

static int enq_async(sp_store_t *s, const uint8_t token[32], const struct op *o, uint64_t now,
                     struct enq_res *r)
{
	uint8_t id[16], blob[400], rec[512];
	size_t clen = o->collapse ? strlen(o->collapse) : 0;
	size_t len = sp_store_record_size(clen, o->blob_len);
	uint64_t exp = (uint64_t)((int64_t)now + o->expires_in);

	make_id(id, o->id);
	memset(blob, 0xb0 + (int)o->id, sizeof(blob));
	memset(r, 0, sizeof(*r));
	if (sp_store_record_build(rec, sizeof(rec), exp, 5, (const uint8_t *)o->collapse, clen,
	                          blob, o->blob_len) != 0)
		return -1;
	return sp_store_enqueue(s, token, id, rec, len, exp, (const uint8_t *)o->collapse, clen,
	                        enq_res_cb, r);
}

/* Reads the whole queue of token into ids[] (message ids as numbers) and their record lengths. */
static size_t read_queue(sp_store_t *s, const uint8_t token[32], unsigned *ids, size_t *lens,
                         size_t max)
{
	struct result r;
	uint64_t after = 0;
	size_t n = 0;

	for (;;) {
		if (fetch(s, token, after, 50, &r) != SP_STORE_OK)
			return (size_t)-1;
		for (size_t i = 0; i < r.n && n < max; i++, n++) {
			ids[n] = (unsigned)r.items[i].id[0] << 8 | r.items[i].id[1];
			lens[n] = r.items[i].len;
			after = r.items[i].seq;
		}
		if (r.n < 50)
			return n;
	}
}

/* Messages sent in batches (many enqueues per loop turn, some while the token's previous batch
 * is out) get exactly the answers and leave exactly the queue that one-at-a-time enqueues give:
 * duplicates, collapse replacements (also of a message earlier in the same batch), retries of
 * a replaced message, caps by count and bytes, and expired messages, decided in call order. */
static void test_batch_equivalence(void)
{
	enum { NOPS = 400 };
	static struct op ops[NOPS];
	static struct enq_res one[NOPS], many[NOPS];
	static unsigned qa[NOPS], qb[NOPS];
	static size_t la[NOPS], lb[NOPS];
	static const char *const cids[] = {"alpha", "beta", "gamma"};
	uint8_t ta[32], tb[32];
	uint64_t rng = 0x9e3779b97f4a7c15ULL, now = rh_wall_ms();
	sp_store_t *s = store_new(25, 4000, 2000);
	sp_store_counters_t c0, c1;
	size_t na, nb, i = 0;
	int mismatches = 0, nstatus[8] = {0};

	SP_CHECK(s != NULL && rh_wait_up(base, s, 5000));
	if (!s)
		return;
	new_token(ta);
	new_token(tb);
	for (size_t k = 0; k < NOPS; k++) {
		rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
		ops[k].id = 1 + (unsigned)(rng % 60);
		ops[k].blob_len = (size_t)(rng >> 8) % 300;
		ops[k].expires_in = (rng >> 20) % 23 == 0 ? -1000 : 600000;
		ops[k].collapse = (rng >> 30) % 3 == 0 ? cids[(rng >> 40) % 3] : NULL;
	}
	/* one at a time */
	for (size_t k = 0; k < NOPS; k++) {
		SP_CHECK_EQ_INT(enq_async(s, ta, &ops[k], now, &one[k]), 0);
		if (!rh_run_until(base, &one[k].done, 5000))
			SP_FAIL("op %zu: no answer", k);
	}
	/* in batches of random size, sometimes running the loop once in between */
	sp_store_counters(s, &c0);
	enq_order = 0;
	while (i < NOPS) {
		size_t chunk = 1 + (size_t)((rng = rng * 6364136223846793005ULL + 1) >> 33) % 90;

		for (size_t k = 0; k < chunk && i < NOPS; k++, i++)
			SP_CHECK_EQ_INT(enq_async(s, tb, &ops[i], now, &many[i]), 0);
		if ((rng >> 40) & 1)
			event_base_loop(base, EVLOOP_NONBLOCK);
	}
	SP_CHECK(rh_run_until(base, &many[NOPS - 1].done, 5000));
	sp_store_counters(s, &c1);
	for (size_t k = 0; k < NOPS; k++) {
		bool same = one[k].status == many[k].status && many[k].done == 1 &&
		            many[k].order == (int)k;

		/* a duplicate names the seq of the stored copy: the same op in both runs */
		for (size_t j = 0; same && j < k && one[k].status == SP_STORE_DUPLICATE; j++)
			if (one[j].seq == one[k].seq)
				same = many[j].seq == many[k].seq;
		if (!same && mismatches++ < 5)
			SP_FAIL("op %zu (id %u, %s): one at a time %s, batched %s (answered %d "
			        "times, "
			        "as #%d)",
			        k, ops[k].id, ops[k].collapse ? ops[k].collapse : "-",
			        sp_store_status_name(one[k].status),
			        sp_store_status_name(many[k].status), many[k].done, many[k].order);
		if (one[k].status >= 0 && one[k].status < 8)
			nstatus[one[k].status]++;
	}
	SP_CHECK_EQ_INT(mismatches, 0);
	/* the case mix is what this test is about: every outcome happened */
	SP_CHECK(nstatus[SP_STORE_STORED] > 20 && nstatus[SP_STORE_DUPLICATE] > 5 &&
	         nstatus[SP_STORE_FULL_COUNT] > 5 && nstatus[SP_STORE_EXPIRED] > 3);
	printf("# %d stored, %d duplicate, %d full (count), %d full (bytes), %d expired; "
	       "%llu requests for %d enqueues\n",
	       nstatus[SP_STORE_STORED], nstatus[SP_STORE_DUPLICATE], nstatus[SP_STORE_FULL_COUNT],
	       nstatus[SP_STORE_FULL_BYTES], nstatus[SP_STORE_EXPIRED],
	       (unsigned long long)(c1.enqueue_calls - c0.enqueue_calls), NOPS);
	SP_CHECK(c1.enqueue_calls - c0.enqueue_calls < NOPS / 4);
	na = read_queue(s, ta, qa, la, NOPS);
	nb = read_queue(s, tb, qb, lb, NOPS);
	SP_CHECK(na != (size_t)-1 && na > 0);
	SP_CHECK_EQ_INT(na, nb);
	if (na == nb && na != (size_t)-1) {
		SP_CHECK(memcmp(qa, qb, na * sizeof(qa[0])) == 0);
		SP_CHECK(memcmp(la, lb, na * sizeof(la[0])) == 0);
	}
	{
		uint64_t ca, ba, cb, bb;

		SP_CHECK_EQ_INT(depth(s, ta, &ca, &ba), SP_STORE_OK);
		SP_CHECK_EQ_INT(depth(s, tb, &cb, &bb), SP_STORE_OK);
		SP_CHECK_EQ_INT(ca, na);
		SP_CHECK_EQ_INT(cb, ca);
		SP_CHECK_EQ_INT(bb, ba);
	}
	sp_store_free(s);
}

/* A batch never exceeds max_batch messages, and messages for different tokens never share a
 * request (each script touches one hash slot). */
static void test_batch_limits(void)
{
	sp_store_limits_t lim;
	char err[256];
	sp_store_t *s;
	static struct enq_res r[100];
	uint8_t t1[32], t2[32];
	sp_store_counters_t c0, c1;
	uint64_t now = rh_wall_ms();

	sp_store_limits_default(&lim);
	SP_CHECK_EQ_INT(lim.max_batch, 64);
	lim.max_batch = 0;
	SP_CHECK(sp_store_new(base, rh_url, &lim, err, sizeof(err)) == NULL);
	lim.max_batch = SP_STORE_MAX_BATCH + 1;
	SP_CHECK(sp_store_new(base, rh_url, &lim, err, sizeof(err)) == NULL);
	lim.max_batch = 7;
	s = sp_store_new(base, rh_url, &lim, err, sizeof(err));
	SP_CHECK(s != NULL && rh_wait_up(base, s, 5000));
	if (!s)
		return;
	new_token(t1);
	new_token(t2);
	sp_store_counters(s, &c0);
	for (unsigned k = 0; k < 100; k++) {
		struct op o = {1000 + k, 10, 60000, NULL};

		SP_CHECK_EQ_INT(enq_async(s, k % 2 ? t2 : t1, &o, now, &r[k]), 0);
	}
	SP_CHECK(rh_run_until(base, &r[99].done, 5000));
	sp_store_counters(s, &c1);
	for (unsigned k = 0; k < 100; k++)
		SP_CHECK_EQ_INT(r[k].status, SP_STORE_STORED);
	/* 50 per token in requests of at most 7: at least 8 each */
	SP_CHECK(c1.enqueue_calls - c0.enqueue_calls >= 16);
	SP_CHECK(c1.enqueue_calls - c0.enqueue_calls <= 20);
	SP_CHECK_EQ_INT(c1.enqueued - c0.enqueued, 100);
	sp_store_free(s);
}

static void test_noscript(void)
{
	uint8_t token[32], id[16];
	struct result r;

	new_token(token);
	freeReplyObject(raw("SCRIPT FLUSH"));
	make_id(id, 1);
	SP_CHECK_EQ_INT(enq(st, token, id, 10, rh_wall_ms() + 60000, NULL, NULL), SP_STORE_STORED);
	SP_CHECK_EQ_INT(fetch(st, token, 0, 10, &r), SP_STORE_OK);
	SP_CHECK_EQ_INT(r.n, 1);
}

/* wait_replicas with no replica: UNAVAILABLE, and so is the retry (not DUPLICATE), while the
 * message is stored once. */
static void test_wait(void)
{
	sp_store_limits_t lim;
	char err[256];
	sp_store_t *s;
	uint8_t token[32], id[16];
	uint64_t count, bytes;

	sp_store_limits_default(&lim);
	lim.wait_replicas = 1;
	lim.wait_timeout_ms = 50;
	s = sp_store_new(base, rh_url, &lim, err, sizeof(err));
	SP_CHECK(s && rh_wait_up(base, s, 5000));
	if (!s)
		return;
	new_token(token);
	make_id(id, 1);
	SP_CHECK_EQ_INT(enq(s, token, id, 10, rh_wall_ms() + 60000, NULL, NULL),
	                SP_STORE_UNAVAILABLE);
	SP_CHECK_EQ_INT(enq(s, token, id, 10, rh_wall_ms() + 60000, NULL, NULL),
	                SP_STORE_UNAVAILABLE);
	SP_CHECK_EQ_INT(depth(s, token, &count, &bytes), SP_STORE_OK);
	SP_CHECK_EQ_INT(count, 1);
	sp_store_free(s);
}

/* Freeing with requests in flight and requests deferred: each callback runs once, with
 * UNAVAILABLE, before sp_store_free returns; requests from those callbacks are refused. */
static sp_store_t *freeing;
static int refused_in_cb;

static void enq_cb_reenter(int status, uint64_t seq, void *arg)
{
	uint8_t token[32] = {9};

	enq_cb(status, seq, arg);
	if (sp_store_depth(freeing, token, depth_cb, arg) == -ESHUTDOWN)
		refused_in_cb++;
}

static void test_free_pending(void)
{
	sp_store_t *s = store_new(1000, 1 << 20, 2000);
	static struct result r[20];
	uint8_t token[32], id[16], rec[64];
	size_t len = sp_store_record_size(0, 4);
	int calls = 0, unavailable = 0;

	SP_CHECK(s && rh_wait_up(base, s, 5000));
	if (!s)
		return;
	freeing = s;
	refused_in_cb = 0;
	new_token(token);
	SP_CHECK_EQ_INT(sp_store_record_build(rec, sizeof(rec), rh_wall_ms() + 60000, 10, NULL, 0,
	                                      (const uint8_t *)"blob", 4),
	                0);
	memset(r, 0, sizeof(r));
	for (unsigned i = 0; i < 20; i++) {
		sp_store_record_t pr;

		make_id(id, i);
		sp_store_record_parse(rec, len, &pr);
		SP_CHECK_EQ_INT(sp_store_enqueue(s, token, id, rec, len, pr.expires_ms, NULL, 0,
		                                 enq_cb_reenter, &r[i]),
		                0);
	}
	sp_store_free(s);
	for (unsigned i = 0; i < 20; i++) {
		calls += r[i].calls;
		unavailable += r[i].status == SP_STORE_UNAVAILABLE;
	}
	SP_CHECK_EQ_INT(calls, 20);
	SP_CHECK_EQ_INT(unavailable, 20);
	SP_CHECK_EQ_INT(refused_in_cb, 20);
	/* and a store that never came up, with deferred answers pending */
	{
		sp_store_limits_t lim;
		char err[256];
		struct result d;

		sp_store_limits_default(&lim);
		s = sp_store_new(base, "unix:/nonexistent/redis.sock", &lim, err, sizeof(err));
		SP_CHECK(s != NULL);
		memset(&d, 0, sizeof(d));
		SP_CHECK_EQ_INT(sp_store_depth(s, token, depth_cb, &d), 0);
		SP_CHECK_EQ_INT(d.calls, 0);
		sp_store_free(s);
		SP_CHECK_EQ_INT(d.calls, 1);
		SP_CHECK_EQ_INT(d.status, SP_STORE_UNAVAILABLE);
	}
	rh_run_until(base, &(int){0}, 50); /* nothing may fire after the free */
}

/* A Redis that stops answering: requests time out within timeout_ms (+ one tick and a margin)
 * and the store comes back by itself when Redis does. */
static void test_hung_redis(void)
{
	sp_store_t *s = store_new(1000, 1 << 20, 300);
	uint8_t token[32], id[16];
	sp_store_counters_t c;
	struct result r;
	uint64_t t0, took, count, bytes;
	int status;

	SP_CHECK(s && rh_wait_up(base, s, 5000));
	if (!s)
		return;
	new_token(token);
	make_id(id, 1);
	kill(rh_pid, SIGSTOP);
	t0 = rh_mono_ms();
	SP_CHECK_EQ_INT(enq(s, token, id, 10, rh_wall_ms() + 60000, NULL, NULL),
	                SP_STORE_UNAVAILABLE);
	took = rh_mono_ms() - t0;
	printf("# hung redis: UNAVAILABLE after %llu ms\n", (unsigned long long)took);
	SP_CHECK(took >= 300 && took < 300 + 400);
	SP_CHECK(!sp_store_up(s));
	/* while down: answered at once, never from inside the call */
	t0 = rh_mono_ms();
	SP_CHECK_EQ_INT(fetch(s, token, 0, 10, &r), SP_STORE_UNAVAILABLE);
	SP_CHECK(rh_mono_ms() - t0 < 100);
	sp_store_counters(s, &c);
	SP_CHECK(c.timeouts >= 1);
	kill(rh_pid, SIGCONT);
	SP_CHECK(rh_wait_up(base, s, 10000));
	/* The timed-out enqueue was in Redis's socket buffer and may have run after all: the
	 * retry is STORED or DUPLICATE, and the message is there once. */
	status = enq(s, token, id, 10, rh_wall_ms() + 60000, NULL, NULL);
	SP_CHECK(status == SP_STORE_STORED || status == SP_STORE_DUPLICATE);
	SP_CHECK_EQ_INT(depth(s, token, &count, &bytes), SP_STORE_OK);
	SP_CHECK_EQ_INT(count, 1);

	/* Idle: no request goes out, yet a Redis that hangs is noticed by the idle PING (at most a
	 * second after the last one, plus timeout_ms and a tick) and the store counts itself down:
	 * /readyz has no other source. */
	SP_CHECK(rh_wait_up(base, s, 5000));
	kill(rh_pid, SIGSTOP);
	t0 = rh_mono_ms();
	rh_run_until(base, &(int){0}, 1000 + 300 + 400);
	took = rh_mono_ms() - t0;
	SP_CHECK(!sp_store_up(s));
	printf("# idle hung redis: store down within %llu ms\n", (unsigned long long)took);
	kill(rh_pid, SIGCONT);
	SP_CHECK(rh_wait_up(base, s, 10000));
	sp_store_free(s);
}

/* Redis killed, then restarted on the same socket. */
static void test_redis_restart(void)
{
	uint8_t token[32], id[16];
	sp_store_counters_t c0, c1;
	static struct result r[5];
	uint64_t t0, took;
	int status;

	SP_CHECK(rh_wait_up(base, st, 5000));
	sp_store_counters(st, &c0);
	new_token(token);
	make_id(id, 1);
	SP_CHECK_EQ_INT(enq(st, token, id, 10, rh_wall_ms() + 60000, NULL, NULL), SP_STORE_STORED);
	/* requests in flight when Redis dies */
	for (unsigned i = 0; i < 5; i++) {
		make_id(id, 10 + i);
		SP_CHECK_EQ_INT(enq_start(st, token, id, 10, rh_wall_ms() + 60000, NULL, &r[i]), 0);
	}
	rh_kill(SIGKILL);
	t0 = rh_mono_ms();
	for (unsigned i = 0; i < 5; i++) {
		SP_CHECK(rh_run_until(base, &r[i].done, 2000));
		SP_CHECK(!r[i].early);
		/* sent before the kill: stored or not, never anything else */
		SP_CHECK(r[i].status == SP_STORE_STORED || r[i].status == SP_STORE_UNAVAILABLE);
	}
	make_id(id, 2);
	status = enq(st, token, id, 10, rh_wall_ms() + 60000, NULL, NULL);
	took = rh_mono_ms() - t0;
	SP_CHECK_EQ_INT(status, SP_STORE_UNAVAILABLE);
	printf("# killed redis: UNAVAILABLE after %llu ms\n", (unsigned long long)took);
	SP_CHECK(took < 2000 + 500);
	SP_CHECK(!sp_store_up(st));
	rh_sleep_ms(300); /* let a reconnect attempt or two fail */
	rh_run_until(base, &(int){0}, 300);
	SP_CHECK_EQ_INT(rh_start(), 0);
	SP_CHECK(rh_wait_up(base, st, 10000));
	make_id(id, 3);
	SP_CHECK_EQ_INT(enq(st, token, id, 10, rh_wall_ms() + 60000, NULL, NULL), SP_STORE_STORED);
	SP_CHECK_EQ_INT(fetch(st, token, 0, 10, &r[0]), SP_STORE_OK);
	SP_CHECK_EQ_INT(r[0].n, 1); /* no AOF in this test: the rest is gone */
	sp_store_counters(st, &c1);
	SP_CHECK(c1.reconnects > c0.reconnects);
	SP_CHECK(c1.unavailable > c0.unavailable);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	if (rh_setup("sp-store") < 0)
		return 1;
	SP_RUN(test_record);
	if (rh_start() < 0) {
		printf("# redis-server not found or not starting: skipping the store cases\n");
		return sp_test_done();
	}
	base = event_base_new();
	ev_poll = event_new(base, -1, EV_PERSIST, on_poll, NULL);
	event_add(ev_poll, &(struct timeval){0, 10000});
	st = store_new(1000, 1 << 20, 2000);
	if (!st || !rh_wait_up(base, st, 5000)) {
		printf("Bail out! the store did not come up\n");
		rh_print_log();
		return 1;
	}
	SP_RUN(test_bad_arguments);
	SP_RUN(test_order);
	SP_RUN(test_paging);
	SP_RUN(test_counter_back);
	SP_RUN(test_duplicate);
	SP_RUN(test_collapse);
	SP_RUN(test_caps);
	SP_RUN(test_expiry);
	SP_RUN(test_expiry_many);
	SP_RUN(test_ack);
	SP_RUN(test_layout);
	SP_RUN(test_malformed);
	SP_RUN(test_batch_equivalence);
	SP_RUN(test_batch_limits);
	SP_RUN(test_noscript);
	SP_RUN(test_wait);
	SP_RUN(test_free_pending);
	SP_RUN(test_hung_redis);
	SP_RUN(test_redis_restart);
	sp_store_free(st);
	event_free(ev_poll);
	event_base_free(base);
	return sp_test_done();
}
