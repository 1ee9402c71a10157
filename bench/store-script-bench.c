/*
 * store-script-bench: what the offline store's Lua scripts cost Redis, per message, without the
 * relay or TLS in the way. It loads the relay's own scripts (sp_store_script()), enqueues
 * MESSAGES messages to DEVICES device queues in ENQUEUE calls of BATCH messages each (pipelined,
 * as a busy relay sends them), then drains every queue as the relay does (a page of 100: the
 * purge script, ZRANGEBYSCORE, HMGET; then ACK in halves of 50), and reports Redis's own CPU time
 * per message for each phase (INFO cpu: used_cpu_user + used_cpu_sys), which other load on the
 * machine barely changes.
 *
 *   store-script-bench --redis unix:/tmp/r.sock [--devices 100] [--messages 100000]
 *                      [--batch 10] [--blob 256] --flush
 *
 * It deletes everything in the Redis database it is pointed at (FLUSHDB), so it insists on
 * --flush: never point it at a Redis that holds real queues.
 */
#include <errno.h>
#include <getopt.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sp_config.h"
#include "sp_store.h"
#include "sp_time.h"

#define PIPELINE 32
#define PAGE     100
#define ACK_N    50

static double redis_cpu(redisContext *c)
{
	redisReply *r = redisCommand(c, "INFO cpu");
	double u = -1, s = -1;
	const char *p;

	if (r && r->type == REDIS_REPLY_STRING) {
		if ((p = strstr(r->str, "used_cpu_user:")))
			u = atof(p + 14);
		if ((p = strstr(r->str, "used_cpu_sys:")))
			s = atof(p + 13);
	}
	if (r)
		freeReplyObject(r);
	return u < 0 || s < 0 ? -1 : u + s;
}

static double now_s(void)
{
	return (double)sp_time_mono_ms() / 1000.0;
}

static void keys_of(char keys[5][80], int device)
{
	for (int k = 0; k < 5; k++)
		snprintf(keys[k], 80, "sp:{%064d}:%c", device, "qemcs"[k]);
}

/* Reads and checks one reply; returns it (the caller frees) or NULL after printing why. */
static redisReply *reply_of(redisContext *c)
{
	redisReply *r = NULL;

	if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) {
		fprintf(stderr, "store-script-bench: redis: %s\n", c->errstr);
		return NULL;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		fprintf(stderr, "store-script-bench: script error: %s\n", r->str);
		freeReplyObject(r);
		return NULL;
	}
	return r;
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: store-script-bench --redis unix:PATH|redis://HOST:PORT --flush\n"
	        "         [--devices D] [--messages M] [--batch B] [--blob BYTES]\n"
	        "Redis CPU per message for the store's scripts; FLUSHDB first (hence --flush).\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {{"redis", required_argument, NULL, 'r'},
	                                     {"devices", required_argument, NULL, 'd'},
	                                     {"messages", required_argument, NULL, 'm'},
	                                     {"batch", required_argument, NULL, 'b'},
	                                     {"blob", required_argument, NULL, 'l'},
	                                     {"flush", no_argument, NULL, 'f'},
	                                     {"help", no_argument, NULL, 'h'},
	                                     {NULL, 0, NULL, 0}};
	const char *url = NULL;
	int devices = 100, messages = 100000, batch = 10, blob = 256, flush = 0, opt;
	char host[256], path[256], sha[4][41], keys[5][80], exps[24], nows[24];
	uint16_t port;
	redisContext *c;
	redisReply *r;
	uint8_t *rec, *body;
	size_t len, nav;
	const char **av;
	size_t *al;
	uint8_t(*ids)[16];
	uint64_t now = sp_time_wall_ms();
	long sent = 0, got = 0;
	int pending = 0, rounds;
	double c0, c1, t0, t1;

	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 'r':
			url = optarg;
			break;
		case 'd':
			devices = atoi(optarg);
			break;
		case 'm':
			messages = atoi(optarg);
			break;
		case 'b':
			batch = atoi(optarg);
			break;
		case 'l':
			blob = atoi(optarg);
			break;
		case 'f':
			flush = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!url || !flush || devices < 1 || messages < devices || batch < 1 ||
	    batch > SP_STORE_MAX_BATCH || blob < 0 || blob > 65536) {
		usage(stderr);
		return 2;
	}
	if (sp_parse_redis_url(url, host, sizeof(host), &port, path, sizeof(path)) < 0) {
		fprintf(stderr, "store-script-bench: bad --redis %s\n", url);
		return 2;
	}
	c = path[0] ? redisConnectUnix(path) : redisConnect(host, port);
	if (!c || c->err) {
		fprintf(stderr, "store-script-bench: cannot connect to %s\n", url);
		return 1;
	}
	len = sp_store_record_size(0, (size_t)blob);
	rec = malloc(len);
	body = calloc(1, (size_t)blob + 1);
	nav = 11 + 4 * (size_t)batch > 2 + PAGE ? 11 + 4 * (size_t)batch : 2 + PAGE;
	nav = nav > 8 + ACK_N ? nav : 8 + ACK_N;
	av = malloc(sizeof(*av) * nav);
	al = malloc(sizeof(*al) * nav);
	ids = malloc(sizeof(*ids) * (size_t)batch);
	if (!rec || !body || !av || !al || !ids)
		return 1;
	memset(body, 0x5a, (size_t)blob);
	snprintf(exps, sizeof(exps), "%llu", (unsigned long long)(now + 3600000));
	snprintf(nows, sizeof(nows), "%llu", (unsigned long long)now);
	sp_store_record_build(rec, len, now + 3600000, 10, NULL, 0, body, (size_t)blob);
	freeReplyObject(redisCommand(c, "FLUSHDB"));
	for (int k = 0; k < 4; k++) {
		static const char *const names[] = {"enqueue", "purge", "ack", "depth"};

		r = redisCommand(c, "SCRIPT LOAD %s", sp_store_script(names[k]));
		if (!r || r->type != REDIS_REPLY_STRING || r->len != 40) {
			fprintf(stderr, "store-script-bench: SCRIPT LOAD %s failed\n", names[k]);
			return 1;
		}
		memcpy(sha[k], r->str, 41);
		freeReplyObject(r);
	}

	/* Enqueue: round robin over the devices, BATCH messages per call, PIPELINE calls out. */
	c0 = redis_cpu(c);
	t0 = now_s();
	rounds = messages / devices / batch;
	for (int round = 0; round < rounds; round++) {
		for (int d = 0; d < devices; d++) {
			int n = 0;

			keys_of(keys, d);
			av[n] = "EVALSHA", al[n++] = 7;
			av[n] = sha[0], al[n++] = 40;
			av[n] = "5", al[n++] = 1;
			for (int k = 0; k < 5; k++)
				av[n] = keys[k], al[n++] = strlen(keys[k]);
			av[n] = "10000000", al[n++] = 8;
			av[n] = "100000000000", al[n++] = 12;
			av[n] = nows, al[n++] = strlen(nows);
			for (int b = 0; b < batch; b++) {
				uint32_t x = (uint32_t)(round * batch + b);

				memset(ids[b], 0x11, 16);
				memcpy(ids[b], &x, 4);
				memcpy(ids[b] + 4, &d, sizeof(d));
				av[n] = (const char *)ids[b], al[n++] = 16;
				av[n] = (const char *)rec, al[n++] = len;
				av[n] = exps, al[n++] = strlen(exps);
				av[n] = "", al[n++] = 0;
			}
			redisAppendCommandArgv(c, n, av, al);
			sent += batch;
			if (++pending == PIPELINE || (round == rounds - 1 && d == devices - 1)) {
				for (; pending > 0; pending--) {
					if (!(r = reply_of(c)))
						return 1;
					freeReplyObject(r);
				}
			}
		}
	}
	t1 = now_s();
	c1 = redis_cpu(c);
	printf("enqueue: %ld messages, %d per call: Redis %.2f us CPU per message (%.0f/s on "
	       "the clock)\n",
	       sent, batch, (c1 - c0) * 1e6 / (double)sent, (double)sent / (t1 - t0));

	/* Drain: per device, a page (purge script and range pipelined, then the records), then
	 * ACK it in halves (pipelined), until a page comes back empty. */
	c0 = redis_cpu(c);
	t0 = now_s();
	for (int d = 0; d < devices; d++) {
		char after[32] = "(0";

		keys_of(keys, d);
		for (;;) {
			int n = 0;
			size_t items, acks = 0;
			redisReply *h;

			av[n] = "EVALSHA", al[n++] = 7;
			av[n] = sha[1], al[n++] = 40;
			av[n] = "5", al[n++] = 1;
			for (int k = 0; k < 5; k++)
				av[n] = keys[k], al[n++] = strlen(keys[k]);
			av[n] = nows, al[n++] = strlen(nows);
			redisAppendCommandArgv(c, n, av, al);
			redisAppendCommand(c, "ZRANGEBYSCORE %s %s +inf WITHSCORES LIMIT 0 %d",
			                   keys[0], after, PAGE);
			if (!(r = reply_of(c)))
				return 1;
			freeReplyObject(r);
			if (!(r = reply_of(c)) || r->type != REDIS_REPLY_ARRAY)
				return 1;
			items = r->elements / 2;
			if (items == 0) {
				freeReplyObject(r);
				break;
			}
			snprintf(after, sizeof(after), "(%s", r->element[2 * items - 1]->str);
			n = 0;
			av[n] = "HMGET", al[n++] = 5;
			av[n] = keys[2], al[n++] = strlen(keys[2]);
			for (size_t i = 0; i < items; i++)
				av[n] = r->element[2 * i]->str, al[n++] = 16;
			redisAppendCommandArgv(c, n, av, al);
			if (!(h = reply_of(c)))
				return 1;
			freeReplyObject(h);
			av[0] = "EVALSHA", al[0] = 7;
			av[1] = sha[2], al[1] = 40;
			av[2] = "5", al[2] = 1;
			for (int k = 0; k < 5; k++)
				av[3 + k] = keys[k], al[3 + k] = strlen(keys[k]);
			for (size_t h0 = 0; h0 < items; h0 += ACK_N, acks++) {
				int m = 8;

				for (size_t i = h0; i < items && i < h0 + ACK_N; i++)
					av[m] = r->element[2 * i]->str, al[m++] = 16;
				redisAppendCommandArgv(c, m, av, al);
			}
			for (; acks > 0; acks--) {
				redisReply *a = reply_of(c);

				if (!a)
					return 1;
				freeReplyObject(a);
			}
			got += (long)items;
			freeReplyObject(r);
		}
	}
	t1 = now_s();
	c1 = redis_cpu(c);
	printf("drain: %ld messages, pages of %d: Redis %.2f us CPU per message (%.0f/s on the "
	       "clock, one page at a time)\n",
	       got, PAGE, (c1 - c0) * 1e6 / (double)got, (double)got / (t1 - t0));
	redisFree(c);
	free(rec);
	free(body);
	free(av);
	free(al);
	free(ids);
	return got == sent ? 0 : 1;
}
