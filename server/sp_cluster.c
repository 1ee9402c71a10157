/*
 * sp_cluster.c: leases, presence, inboxes and custody (see sp_cluster.h and CLUSTER.md).
 *
 * Inbox records, several per XADD entry (field "r"), each type u8 | length u32 | body, all
 * integers big-endian:
 *   FORWARD  fwd_id u64 | from_inc u64 | from_worker u8 | token[32] | msg_id[16] |
 *            expires_wall u64 | ttl u32 | priority u8 | has_priority u8 | collapse_len u8 |
 *            collapse | blob
 *   RESULT   fwd_id u64 | status u8
 *   REPLACE  connref u64 | token[32]
 *   KICK     connref u64 | token[32]
 * A record that does not parse ends the entry (counted); nothing in it is trusted beyond
 * what any writer of this Redis could already do to the devices' queues.
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sp_cluster.h"
#include "sp_delivery.h"
#include "sp_identity.h"
#include "sp_log.h"
#include "sp_router.h"
#include "sp_time.h"
#include "sp_tls.h"

enum { R_FORWARD = 1, R_RESULT = 2, R_REPLACE = 3, R_KICK = 4 };

#define REC_HEAD        5
#define FWD_FIXED       (8 + 8 + 1 + 32 + 16 + 8 + 4 + 1 + 1 + 1)
#define PRESENCE_TTL_MS (30ULL * 86400 * 1000) /* a presence key lives this long unless renewed */
#define PRESENCE_RENEW  (86400ULL * 1000)      /* ... and is written again this often */
#define READ_COUNT      "256"
#define RETRY_MS        100
#define NODES_KEY       "sp:nodes"
#define EVENTS_KEY      "sp:events"
#define EVENTS_MS       200
#define CRL_MAX         (8 << 20)
#define PCACHE_MS       1000  /* a presence read is reused this long by the same worker */
#define PCACHE_MAX      65536 /* entries; past it the cache starts again empty */
#define ANNOUNCE_MS     50
#define CTL_RETRY_MS    250  /* a failed kick or replacement is tried again this much later */
#define CTL_RETRY_MAX   4096 /* entries on the retry list; past it they are dropped (counted) */
#define CTL_LOOKUPS     40   /* presence reads tried for one kick (10 s) before it is dropped */
#define R_LOOKUP        0    /* on the retry list: read the presence, then kick */

/* A kick or replacement to try again (ctl_retry_add). */
struct ctl_retry {
	uint64_t inc, ref, due;
	uint8_t token[32];
	uint8_t type; /* R_KICK, R_REPLACE, or R_LOOKUP */
	uint8_t worker;
	uint16_t tries; /* R_LOOKUP: presence reads so far */
};

struct lease_write {
	struct sp_cluster *cl;
	uint64_t expires;
};

/* A live incarnation and the end of its lease (wall ms). */
struct live {
	uint64_t inc;
	uint64_t expires;
};

/* A node forwarded to another relay, until its answer comes (custody). */
struct fwd {
	sp_node_t *n;
	uint64_t id;  /* generation << 32 | slot */
	uint64_t inc; /* the node it went to */
	uint64_t deadline;
	struct fwd *prev, *next;
};

/* Records gathered for one inbox in this loop turn. */
struct outbox {
	uint64_t inc;
	unsigned worker;
	uint8_t *buf;
	size_t len, cap;
	uint64_t *fwds; /* the FORWARD ids in buf, to fall back if the XADD fails */
	size_t n_fwds, cap_fwds;
};

struct sp_cluster {
	sp_worker_t *w;
	sp_store_t *rs; /* the inbox reader's own store (XREAD BLOCK) */
	char inbox[64];
	size_t inbox_len;
	char last_id[48];
	bool reading, closing;
	bool leaving; /* draining: the lease is withdrawn; past the grace, the inbox is not read */
	uint32_t block_ms;
	uint64_t lease_ms;
	struct event *ev_read, *ev_lease, *ev_events;
	char ev_last[48]; /* the last sp:events entry seen (worker 0) */
	bool ev_reading;

	struct live *live;
	size_t n_live, cap_live;
	uint64_t table_ms; /* wall ms of the last node table read that answered */

	struct outbox *out;
	size_t n_out, cap_out;
	bool dirty;

	/* Presence read lately (token -> struct pcache): a device on another relay that gets
	 * many messages costs one GET per PCACHE_MS, not one per message. Only tokens whose
	 * presence named a live relay get in (connected devices: no sender chooses them). */
	sp_tokmap_t pcache;
	size_t n_pcache;

	struct fwd **slots;
	uint32_t *gens, *free_slots;
	uint32_t n_slots, n_free;
	struct fwd *head, *tail; /* custody, oldest first (deadlines in order) */
	uint64_t written;        /* worker 0: the expiry of the last lease Redis took (wall ms) */
	unsigned lapses_seen;    /* srv->cluster_lapses when this worker last re-checked */
	uint64_t downs_seen;     /* sp_store_downs(w->store) when this worker last re-checked */
	struct event *ev_announce;
	struct ctl_retry *retry; /* kicks and replacements whose write or read failed */
	size_t n_retry, cap_retry;
};

/* ---- small helpers ----------------------------------------------------------------------- */

static void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static void put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* "sp:p:{<64 hex>}": 71 bytes and a NUL. */
#define PKEY_LEN 71
static void presence_key(char out[PKEY_LEN + 1], const uint8_t token[32])
{
	memcpy(out, "sp:p:{", 6);
	sp_token_hex(token, out + 6);
	out[70] = '}';
	out[71] = 0;
}

static size_t inbox_key(char *out, size_t outlen, uint64_t inc, unsigned worker)
{
	int n = snprintf(out, outlen, "sp:in:{%016" PRIx64 ".%u}", inc, worker);

	return n > 0 && (size_t)n < outlen ? (size_t)n : 0;
}

size_t sp_cluster_presence_format(char *out, size_t outlen, uint64_t inc, unsigned worker,
                                  uint64_t ref)
{
	int n = snprintf(out, outlen, "%016" PRIx64 ":%u:%016" PRIx64, inc, worker, ref);

	return n > 0 && (size_t)n < outlen ? (size_t)n : 0;
}

static int parse_hex64(const char *s, size_t len, uint64_t *out)
{
	uint64_t v = 0;

	if (len != 16)
		return -1;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		unsigned d;

		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else
			return -1;
		v = v << 4 | d;
	}
	*out = v;
	return 0;
}

int sp_cluster_presence_parse(const char *s, size_t len, uint64_t *inc, unsigned *worker,
                              uint64_t *ref)
{
	const char *c1, *c2;
	unsigned wk = 0;

	if (len < 16 + 1 + 1 + 1 + 16 || s[16] != ':')
		return -EINVAL;
	c1 = s + 16;
	c2 = memchr(c1 + 1, ':', len - 17);
	if (!c2 || c2 == c1 + 1 || c2 - c1 - 1 > 2)
		return -EINVAL;
	for (const char *p = c1 + 1; p < c2; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		wk = wk * 10 + (unsigned)(*p - '0');
	}
	if (wk >= SP_MAX_WORKERS || parse_hex64(s, 16, inc) < 0 ||
	    parse_hex64(c2 + 1, len - (size_t)(c2 + 1 - s), ref) < 0)
		return -EINVAL;
	*worker = wk;
	return 0;
}

static bool is_live(const sp_cluster_t *cl, uint64_t inc)
{
	uint64_t now = sp_time_wall_ms();

	if (inc == cl->w->srv->incarnation)
		return true;
	for (size_t i = 0; i < cl->n_live; i++)
		if (cl->live[i].inc == inc)
			return cl->live[i].expires > now;
	return false;
}

/* The store answered after teardown began: touch nothing. */
static bool gone(const sp_worker_t *w)
{
	return atomic_load(&w->srv->stopping) || !w->cl || w->cl->closing;
}

static void command(sp_worker_t *w, sp_store_t *s, const char *key, size_t key_len, int argc,
                    const char **argv, const size_t *lens, sp_store_command_cb cb, void *arg)
{
	if (sp_store_command(s, key, key_len, argc, argv, lens, cb, arg) < 0)
		cb(SP_STORE_UNAVAILABLE, NULL, arg);
	(void)w;
}

/* ---- outboxes ---------------------------------------------------------------------------- */

static struct outbox *outbox_for(sp_cluster_t *cl, uint64_t inc, unsigned worker)
{
	struct outbox *o;

	for (size_t i = 0; i < cl->n_out; i++)
		if (cl->out[i].inc == inc && cl->out[i].worker == worker)
			return &cl->out[i];
	if (cl->n_out == cl->cap_out) {
		size_t cap = cl->cap_out ? 2 * cl->cap_out : 8;
		struct outbox *n = realloc(cl->out, cap * sizeof(*n));

		if (!n)
			return NULL;
		cl->out = n;
		cl->cap_out = cap;
	}
	o = &cl->out[cl->n_out++];
	memset(o, 0, sizeof(*o));
	o->inc = inc;
	o->worker = worker;
	return o;
}

/* Room for a record of body length len in o; returns where its body goes, or NULL. */
static uint8_t *outbox_record(sp_cluster_t *cl, struct outbox *o, uint8_t type, size_t len)
{
	uint8_t *p;

	if (o->len + REC_HEAD + len > o->cap) {
		size_t cap = o->cap ? o->cap : 4096;
		uint8_t *n;

		while (cap < o->len + REC_HEAD + len)
			cap *= 2;
		n = realloc(o->buf, cap);
		if (!n)
			return NULL;
		o->buf = n;
		o->cap = cap;
	}
	p = o->buf + o->len;
	p[0] = type;
	put_u32(p + 1, (uint32_t)len);
	o->len += REC_HEAD + len;
	if (!cl->dirty) {
		cl->dirty = true;
		sp_worker_after(cl->w);
	}
	return p + REC_HEAD;
}

static void control_record(sp_cluster_t *cl, uint8_t type, uint64_t inc, unsigned worker,
                           uint64_t ref, const uint8_t token[32])
{
	struct outbox *o = outbox_for(cl, inc, worker);
	uint8_t *p = o ? outbox_record(cl, o, type, 8 + 32) : NULL;

	if (!p)
		return; /* best effort: a lost kick or replacement is covered by the next one */
	put_u64(p, ref);
	memcpy(p + 8, token, 32);
}

/* A kick (or replacement) could not be written to its inbox, or the presence read before a
 * kick failed (type R_LOOKUP): it goes again after CTL_RETRY_MS. Best effort no longer means
 * "covered by the next one": a message stored for a device connected elsewhere, with no later
 * message to kick it, would wait for the device's next connection. */
static void ctl_retry_add(sp_cluster_t *cl, uint8_t type, uint64_t inc, unsigned worker,
                          uint64_t ref, const uint8_t token[32], uint16_t tries)
{
	struct ctl_retry *e;

	for (size_t i = 0; i < cl->n_retry; i++) {
		e = &cl->retry[i];
		if (e->type == type && e->inc == inc && e->ref == ref && e->worker == worker &&
		    memcmp(e->token, token, 32) == 0)
			return; /* one is enough */
	}
	if (cl->n_retry == cl->cap_retry) {
		size_t cap = cl->cap_retry ? 2 * cl->cap_retry : 16;
		struct ctl_retry *nr =
		        cap <= CTL_RETRY_MAX ? realloc(cl->retry, cap * sizeof(*nr)) : NULL;

		if (!nr) {
			sp_metric_inc(&cl->w->metrics, SP_M_CLUSTER_CTL_DROPPED);
			return;
		}
		cl->retry = nr;
		cl->cap_retry = cap;
	}
	e = &cl->retry[cl->n_retry++];
	e->type = type;
	e->inc = inc;
	e->worker = (uint8_t)worker;
	e->ref = ref;
	e->tries = tries;
	e->due = cl->w->now + CTL_RETRY_MS;
	memcpy(e->token, token, 32);
}

/* Whether this worker's view of the leases may be out of date: the table is read every
 * lease / 3, so a last answer older than lease / 2 means a read failed or was held up (its
 * store was away). A relay that looks dead in a fresh view is dead (or lapsed, and then it
 * re-checks its devices itself). */
static bool view_stale(const sp_cluster_t *cl)
{
	return sp_time_wall_ms() - cl->table_ms > cl->lease_ms / 2;
}

/* Whether a presence value names a connection on another relay, live or not. */
static bool names_other(const sp_worker_t *w, const redisReply *r)
{
	uint64_t inc, ref;
	unsigned worker;

	return r->type == REDIS_REPLY_STRING &&
	       sp_cluster_presence_parse(r->str, r->len, &inc, &worker, &ref) == 0 &&
	       inc != w->srv->incarnation;
}

/* A kick whose device's relay could not be reached or looked dead: its presence is read
 * again after CTL_RETRY_MS, at most CTL_LOOKUPS times in all. */
static void lookup_again(sp_cluster_t *cl, const uint8_t token[32], uint16_t tries)
{
	cl->w->now = sp_now_ms();
	if (tries + 1 < CTL_LOOKUPS)
		ctl_retry_add(cl, R_LOOKUP, 0, 0, 0, token, (uint16_t)(tries + 1));
	else
		sp_metric_inc(&cl->w->metrics, SP_M_CLUSTER_CTL_DROPPED);
}

/* ---- the presence cache ------------------------------------------------------------------- */

struct pcache {
	uint64_t inc;
	uint64_t expires; /* monotonic ms */
	unsigned worker;
};

static void pcache_clear(sp_cluster_t *cl)
{
	for (size_t i = 0; cl->pcache.slots && i <= cl->pcache.mask; i++)
		free((void *)cl->pcache.slots[i].value);
	sp_tokmap_free(&cl->pcache);
	sp_tokmap_init(&cl->pcache);
	cl->n_pcache = 0;
}

static void pcache_put(sp_cluster_t *cl, const uint8_t token[32], uint64_t inc, unsigned worker)
{
	struct pcache *e = (struct pcache *)sp_tokmap_get(&cl->pcache, token);
	uintptr_t old;

	if (!e) {
		if (cl->n_pcache >= PCACHE_MAX)
			pcache_clear(cl);
		e = malloc(sizeof(*e));
		if (!e || sp_tokmap_put(&cl->pcache, token, (uintptr_t)e, &old) < 0) {
			free(e);
			return;
		}
		cl->n_pcache++;
	}
	e->inc = inc;
	e->worker = worker;
	e->expires = cl->w->now + PCACHE_MS;
}

/* The device was not where the cache said (its node stored it, or no answer came). */
static void pcache_drop(sp_cluster_t *cl, const uint8_t token[32])
{
	struct pcache *e = (struct pcache *)sp_tokmap_get(&cl->pcache, token);

	if (e) {
		sp_tokmap_del(&cl->pcache, token, (uintptr_t)e);
		free(e);
		cl->n_pcache--;
	}
}

/* ---- custody ----------------------------------------------------------------------------- */

static struct fwd *custody_add(sp_cluster_t *cl, sp_node_t *n, uint64_t inc)
{
	struct fwd *f = calloc(1, sizeof(*f));
	uint32_t slot;

	if (!f)
		return NULL;
	if (!cl->n_free) {
		uint32_t ns = cl->n_slots ? 2 * cl->n_slots : 256;
		struct fwd **s = realloc(cl->slots, ns * sizeof(*s));
		uint32_t *g, *fl;

		if (s)
			cl->slots = s;
		g = s ? realloc(cl->gens, ns * sizeof(*g)) : NULL;
		if (g)
			cl->gens = g;
		fl = g ? realloc(cl->free_slots, ns * sizeof(*fl)) : NULL;
		if (!fl) {
			free(f);
			return NULL;
		}
		cl->free_slots = fl;
		for (uint32_t i = cl->n_slots; i < ns; i++) {
			cl->slots[i] = NULL;
			cl->gens[i] = 1;
			cl->free_slots[cl->n_free++] = ns - 1 - (i - cl->n_slots);
		}
		cl->n_slots = ns;
	}
	slot = cl->free_slots[--cl->n_free];
	cl->slots[slot] = f;
	f->n = n;
	f->inc = inc;
	f->id = (uint64_t)cl->gens[slot] << 32 | slot;
	f->deadline = cl->w->now + (uint64_t)cl->w->srv->cfg.ack_timeout + cl->lease_ms;
	f->prev = cl->tail;
	if (cl->tail)
		cl->tail->next = f;
	else
		cl->head = f;
	cl->tail = f;
	return f;
}

static struct fwd *custody_find(const sp_cluster_t *cl, uint64_t id)
{
	uint32_t slot = (uint32_t)id;
	struct fwd *f;

	if (slot >= cl->n_slots || !(f = cl->slots[slot]) || f->id != id)
		return NULL;
	return f;
}

/* Takes f out of custody and returns its node. */
static sp_node_t *custody_take(sp_cluster_t *cl, struct fwd *f)
{
	uint32_t slot = (uint32_t)f->id;
	sp_node_t *n = f->n;

	if (f->prev)
		f->prev->next = f->next;
	else
		cl->head = f->next;
	if (f->next)
		f->next->prev = f->prev;
	else
		cl->tail = f->prev;
	cl->slots[slot] = NULL;
	cl->gens[slot]++;
	cl->free_slots[cl->n_free++] = slot;
	free(f);
	return n;
}

/* No answer is coming for f: its node takes the offline path here. */
static void custody_fallback(sp_cluster_t *cl, struct fwd *f)
{
	sp_node_t *n = custody_take(cl, f);

	pcache_drop(cl, sp_node_token(n));
	sp_metric_inc(&cl->w->metrics, SP_M_CLUSTER_FALLBACKS);
	sp_route_offline(cl->w, n);
}

/* ---- the outgoing side ------------------------------------------------------------------- */

static void forward(sp_worker_t *w, sp_node_t *n, uint64_t inc, unsigned worker)
{
	sp_cluster_t *cl = w->cl;
	const sp_msg_t *msg = n->msg;
	struct outbox *o = outbox_for(cl, inc, worker);
	struct fwd *f = o ? custody_add(cl, n, inc) : NULL;
	uint8_t *p = NULL;

	if (f && o->n_fwds == o->cap_fwds) {
		size_t cap = o->cap_fwds ? 2 * o->cap_fwds : 16;
		uint64_t *nf = realloc(o->fwds, cap * sizeof(*nf));

		if (nf) {
			o->fwds = nf;
			o->cap_fwds = cap;
		}
	}
	if (f && o->n_fwds < o->cap_fwds)
		p = outbox_record(cl, o, R_FORWARD, FWD_FIXED + msg->collapse_len + msg->blob_len);
	if (!p) {
		if (f)
			custody_take(cl, f);
		sp_route_offline(w, n);
		return;
	}
	o->fwds[o->n_fwds++] = f->id;
	put_u64(p, f->id);
	put_u64(p + 8, w->srv->incarnation);
	p[16] = (uint8_t)w->id;
	memcpy(p + 17, sp_node_token(n), 32);
	memcpy(p + 49, msg->msg_id, 16);
	put_u64(p + 65, msg->expires_wall);
	put_u32(p + 73, msg->ttl);
	p[77] = msg->priority;
	p[78] = msg->has_priority;
	p[79] = msg->collapse_len;
	memcpy(p + FWD_FIXED, msg->collapse, msg->collapse_len);
	memcpy(p + FWD_FIXED + msg->collapse_len, msg->blob, msg->blob_len);
	sp_metric_inc(&w->metrics, SP_M_CLUSTER_FORWARDED);
}

struct xadd {
	sp_worker_t *w;
	uint64_t inc;
	unsigned worker;
	size_t n;
	uint8_t *ctl; /* the entry's KICK and REPLACE records (type | ref | token), n_ctl of them */
	size_t n_ctl;
	uint64_t fwds[];
};

#define CTL_REC (1 + 8 + 32)

static void on_xadd(int st, const redisReply *r, void *arg)
{
	struct xadd *x = arg;
	sp_worker_t *w = x->w;

	if (!gone(w) && (st != SP_STORE_OK || r->type != REDIS_REPLY_STRING)) {
		/* The inbox is gone (nil: its node's lease ended, or lost with a master) or Redis
		 * failed: the forwards in the entry fall back here; its kicks and replacements go
		 * again while their relay lives. */
		w->now = sp_now_ms();
		for (size_t i = 0; i < x->n; i++) {
			struct fwd *f = custody_find(w->cl, x->fwds[i]);

			if (f)
				custody_fallback(w->cl, f);
		}
		for (size_t i = 0; i < x->n_ctl; i++) {
			const uint8_t *c = x->ctl + i * CTL_REC;

			if (is_live(w->cl, x->inc))
				ctl_retry_add(w->cl, c[0], x->inc, x->worker, get_u64(c + 1), c + 9,
				              0);
			else if (c[0] == R_KICK && view_stale(w->cl))
				lookup_again(w->cl, c + 9, 0); /* it may be alive after all */
			else
				sp_metric_inc(&w->metrics, SP_M_CLUSTER_CTL_DROPPED);
		}
		sp_worker_after(w);
	}
	free(x);
}

void sp_cluster_flush(sp_worker_t *w)
{
	sp_cluster_t *cl = w->cl;

	if (!cl || !cl->dirty)
		return;
	cl->dirty = false;
	for (size_t i = 0; i < cl->n_out; i++) {
		struct outbox *o = &cl->out[i];
		char key[64];
		size_t klen = inbox_key(key, sizeof(key), o->inc, o->worker);
		const char *argv[] = {"XADD", key, "NOMKSTREAM",        "MAXLEN", "~", "10000",
		                      "*",    "r", (const char *)o->buf};
		size_t lens[] = {4, klen, 10, 6, 1, 5, 1, 1, o->len};
		struct xadd *x;
		size_t n_ctl = 0;

		if (!o->len)
			continue;
		for (size_t at = 0; at + REC_HEAD <= o->len;
		     at += REC_HEAD + get_u32(o->buf + at + 1))
			n_ctl += o->buf[at] == R_KICK || o->buf[at] == R_REPLACE;
		x = malloc(sizeof(*x) + o->n_fwds * sizeof(uint64_t) + n_ctl * CTL_REC);
		if (x) {
			x->w = w;
			x->inc = o->inc;
			x->worker = o->worker;
			x->n = o->n_fwds;
			if (o->n_fwds)
				memcpy(x->fwds, o->fwds, o->n_fwds * sizeof(uint64_t));
			x->ctl = (uint8_t *)(x->fwds + o->n_fwds);
			x->n_ctl = 0;
			for (size_t at = 0; at + REC_HEAD <= o->len;
			     at += REC_HEAD + get_u32(o->buf + at + 1)) {
				uint8_t *c = x->ctl + x->n_ctl * CTL_REC;

				if (o->buf[at] != R_KICK && o->buf[at] != R_REPLACE)
					continue;
				c[0] = o->buf[at];
				memcpy(c + 1, o->buf + at + REC_HEAD, 40);
				x->n_ctl++;
			}
			command(w, w->store, key, klen, 9, argv, lens, on_xadd, x);
		} else {
			for (size_t k = 0; k < o->n_fwds; k++) {
				struct fwd *f = custody_find(cl, o->fwds[k]);

				if (f)
					custody_fallback(cl, f);
			}
		}
		o->len = 0;
		o->n_fwds = 0;
	}
	/* Forget inboxes that stayed idle; at most a few dozen are kept. */
	if (cl->n_out > 64) {
		for (size_t i = 0; i < cl->n_out; i++) {
			free(cl->out[i].buf);
			free(cl->out[i].fwds);
		}
		cl->n_out = 0;
	}
}

/* Whether a presence read answered with a connection on another live relay (then named). */
static bool remote_presence(const sp_worker_t *w, int st, const redisReply *r, uint64_t *inc,
                            unsigned *worker, uint64_t *ref)
{
	return !gone(w) && st == SP_STORE_OK && r->type == REDIS_REPLY_STRING &&
	       sp_cluster_presence_parse(r->str, r->len, inc, worker, ref) == 0 &&
	       *inc != w->srv->incarnation && is_live(w->cl, *inc);
}

/* The presence of n's device was read: forward, or the offline path. */
static void on_lookup(int st, const redisReply *r, void *arg)
{
	sp_node_t *n = arg;
	sp_worker_t *w = n->at;
	uint64_t inc, ref;
	unsigned worker;

	if (gone(w))
		return; /* the message goes with its owner's teardown */
	w->now = sp_now_ms();
	if (remote_presence(w, st, r, &inc, &worker, &ref)) {
		pcache_put(w->cl, sp_node_token(n), inc, worker);
		forward(w, n, inc, worker);
	} else {
		sp_route_offline(w, n);
	}
	sp_worker_after(w);
}

void sp_cluster_route(sp_worker_t *w, sp_node_t *n)
{
	char key[PKEY_LEN + 1];
	const char *argv[] = {"GET", key};
	size_t lens[] = {3, PKEY_LEN};
	struct pcache *e;

	if (w->cl->leaving && w->now - w->drain_started > (uint64_t)w->srv->cfg.shutdown_grace) {
		/* the last moments of a drain: no detour through other relays, store it */
		sp_route_offline(w, n);
		return;
	}
	e = (struct pcache *)sp_tokmap_get(&w->cl->pcache, sp_node_token(n));
	if (e && w->now < e->expires && is_live(w->cl, e->inc)) {
		forward(w, n, e->inc, e->worker);
		return;
	}
	presence_key(key, sp_node_token(n));
	n->at = w;
	sp_metric_inc(&w->metrics, SP_M_CLUSTER_LOOKUPS);
	if (sp_store_command(w->store, key, PKEY_LEN, 2, argv, lens, on_lookup, n) < 0)
		sp_route_offline(w, n);
}

struct tokarg {
	sp_worker_t *w;
	uint8_t token[32];
	sp_connref_t ref;
	bool recheck;   /* a renewal after a lease lapse: a device still ours reads its queue */
	uint16_t tries; /* a kick's presence read: the reads so far */
};

static struct tokarg *tokarg_new(sp_worker_t *w, const uint8_t token[32], sp_connref_t ref)
{
	struct tokarg *a = malloc(sizeof(*a));

	if (a) {
		a->w = w;
		memcpy(a->token, token, 32);
		a->ref = ref;
		a->recheck = false;
		a->tries = 0;
	}
	return a;
}

static void on_queued_lookup(int st, const redisReply *r, void *arg)
{
	struct tokarg *a = arg;
	uint64_t inc, ref;
	unsigned worker;

	if (remote_presence(a->w, st, r, &inc, &worker, &ref)) {
		control_record(a->w->cl, R_KICK, inc, worker, ref, a->token);
		sp_metric_inc(&a->w->metrics, SP_M_CLUSTER_KICKS);
	} else if (!gone(a->w) &&
	           (st != SP_STORE_OK || (names_other(a->w, r) && view_stale(a->w->cl)))) {
		/* The presence could not be read (its master's failover), or it names a relay
		 * whose lease looks ended in a view that may be out of date (this relay's own
		 * reads of the node table failed meanwhile, as in a failover): that relay, alive,
		 * would never read the stored message, since it was not kicked and only a relay
		 * whose own lease lapsed re-checks its devices. So the presence is read again
		 * until it names a live relay (kick), none, a relay that is dead in a fresh view,
		 * or the tries run out (CTL_LOOKUPS; counted as dropped). A dead relay's devices
		 * cost nothing of this once the view is fresh: they read their queues where they
		 * connect next. */
		lookup_again(a->w->cl, a->token, a->tries);
	}
	free(a);
}

static void queued_lookup(sp_worker_t *w, const uint8_t token[32], uint16_t tries)
{
	char key[PKEY_LEN + 1];
	const char *argv[] = {"GET", key};
	size_t lens[] = {3, PKEY_LEN};
	struct tokarg *a = tokarg_new(w, token, 0);

	if (!a)
		return;
	a->tries = tries;
	presence_key(key, token);
	if (sp_store_command(w->store, key, PKEY_LEN, 2, argv, lens, on_queued_lookup, a) < 0)
		free(a);
}

void sp_cluster_queued(sp_worker_t *w, const uint8_t token[32])
{
	queued_lookup(w, token, 0);
}

/* The retry list: what is due goes again (a kick whose relay's lease ended reads the presence
 * again; a replacement is dropped). What fails again comes back through a callback, never
 * from inside this loop. */
static void ctl_retry_run(sp_cluster_t *cl)
{
	sp_worker_t *w = cl->w;
	size_t keep = 0;

	for (size_t i = 0; i < cl->n_retry; i++) {
		struct ctl_retry e = cl->retry[i];

		if (e.due > w->now) {
			cl->retry[keep++] = e;
			continue;
		}
		sp_metric_inc(&w->metrics, SP_M_CLUSTER_CTL_RETRIES);
		if (e.type == R_LOOKUP)
			queued_lookup(w, e.token, e.tries);
		else if (is_live(cl, e.inc))
			control_record(cl, e.type, e.inc, e.worker, e.ref, e.token);
		else if (e.type == R_KICK && view_stale(cl))
			queued_lookup(w, e.token, e.tries); /* it may be alive after all */
		else
			sp_metric_inc(&w->metrics, SP_M_CLUSTER_CTL_DROPPED);
	}
	cl->n_retry = keep;
}

static void on_presence_set(int st, const redisReply *r, void *arg)
{
	struct tokarg *a = arg;
	uint64_t inc, ref;
	unsigned worker;

	/* The value it replaced names a connection on another live node: replace it there. */
	if (remote_presence(a->w, st, r, &inc, &worker, &ref)) {
		char tok[SP_TOKEN_SHORT_LEN + 1];

		control_record(a->w->cl, R_REPLACE, inc, worker, ref, a->token);
		sp_metric_inc(&a->w->metrics, SP_M_CLUSTER_TAKEOVERS);
		sp_token_short(a->token, tok);
		SP_LOG(SP_LOG_INFO, "cluster_takeover", "worker=%d token=%s from=%016" PRIx64,
		       a->w->id, tok, inc);
	}
	free(a);
}

void sp_cluster_ready(sp_conn_t *c)
{
	sp_worker_t *w = c->w;
	char key[PKEY_LEN + 1], val[64], px[24];
	size_t vlen = sp_cluster_presence_format(val, sizeof(val), w->srv->incarnation,
	                                         (unsigned)w->id, sp_conn_ref(c));
	int pxlen = snprintf(px, sizeof(px), "%llu", (unsigned long long)PRESENCE_TTL_MS);
	const char *argv[] = {"SET", key, val, "PX", px, "GET"};
	size_t lens[] = {3, PKEY_LEN, vlen, 2, (size_t)pxlen, 3};
	struct tokarg *a = tokarg_new(w, c->token, sp_conn_ref(c));

	c->presence_due = w->now + PRESENCE_RENEW;
	if (!a)
		return;
	presence_key(key, c->token);
	if (sp_store_command(w->store, key, PKEY_LEN, 6, argv, lens, on_presence_set, a) < 0)
		free(a);
}

static void on_presence_del(int st, const redisReply *r, void *arg)
{
	(void)st;
	(void)r;
	(void)arg;
}

/* A renewal writes the presence again only if it still names c, or nothing: another
 * connection may have taken the device over while the REPLACE record for c was lost (our
 * inbox gone with a lapsed lease, a failover), and a blind SET would take it back from the
 * newer one. The script answers 1 (written) or the value that is there instead. */
static const char renew_script[] = "local v = redis.call('GET', KEYS[1]) "
                                   "if v and v ~= ARGV[1] then return v end "
                                   "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1";

static void on_renewed(int st, const redisReply *r, void *arg)
{
	struct tokarg *a = arg;
	sp_worker_t *w = a->w;
	sp_conn_t *c = gone(w) ? NULL : sp_worker_conn(w, a->ref);
	uint64_t inc, ref;
	unsigned worker;

	if (!c || c->state != SP_CS_READY || memcmp(c->token, a->token, 32) != 0) {
		free(a);
		return;
	}
	w->now = sp_now_ms();
	if (st != SP_STORE_OK || r->type == REDIS_REPLY_ERROR) {
		/* Redis is away (often so, right after a lapse), or the store's max_inflight is
		 * full (a re-check of many devices at once): the tick tries again */
		c->presence_due = w->now + RETRY_MS * 10;
		free(a);
		return;
	}
	c->flags &= ~SP_CF_RECHECK;
	if (r->type != REDIS_REPLY_STRING) {
		if (a->recheck)
			sp_delivery_kick(c);
	} else if (remote_presence(w, st, r, &inc, &worker, &ref)) {
		char tok[SP_TOKEN_SHORT_LEN + 1];

		sp_token_short(a->token, tok);
		SP_LOG(SP_LOG_INFO, "cluster_replaced", "worker=%d token=%s by=%016" PRIx64, w->id,
		       tok, inc);
		sp_router_replace_remote(c);
	} else if (sp_cluster_presence_parse(r->str, r->len, &inc, &worker, &ref) < 0 ||
	           inc != w->srv->incarnation) {
		/* a relay that is gone, or not a presence at all: c takes it */
		sp_cluster_ready(c);
		if (a->recheck)
			sp_delivery_kick(c);
	} /* else another connection of this relay: the local registry has decided */
	sp_worker_after(w);
	free(a);
}

void sp_cluster_renew(sp_conn_t *c, bool recheck)
{
	sp_worker_t *w = c->w;
	char key[PKEY_LEN + 1], val[64], px[24];
	size_t vlen = sp_cluster_presence_format(val, sizeof(val), w->srv->incarnation,
	                                         (unsigned)w->id, sp_conn_ref(c));
	int pxlen = snprintf(px, sizeof(px), "%llu", (unsigned long long)PRESENCE_TTL_MS);
	const char *argv[] = {"EVAL", renew_script, "1", key, val, px};
	size_t lens[] = {4, sizeof(renew_script) - 1, 1, PKEY_LEN, vlen, (size_t)pxlen};
	struct tokarg *a = tokarg_new(w, c->token, sp_conn_ref(c));

	c->presence_due = w->now + (a ? PRESENCE_RENEW : RETRY_MS * 10);
	if (recheck)
		c->flags |= SP_CF_RECHECK;
	if (!a)
		return;
	a->recheck = recheck;
	presence_key(key, c->token);
	if (sp_store_command(w->store, key, PKEY_LEN, 6, argv, lens, on_renewed, a) < 0) {
		c->presence_due = w->now + RETRY_MS * 10; /* the store is away: again soon */
		free(a);
	}
}

/* This relay's lease ran out before it was renewed (the process was paused, or Redis was
 * out of reach for longer than the lease). Meanwhile the other relays took its devices for
 * offline: they stored what they had for them, with no KICK (the presence named a dead
 * relay), and a device that connected elsewhere may have had its REPLACE record lost. So
 * once the renewed lease is known everywhere, every connected device's presence is checked
 * again: still ours, it reads its queue; held by a live connection elsewhere, it goes as
 * replaced. One script call per device, once. The same after every Redis outage of this
 * worker's store (on_lease): a presence write or a KICK may have been lost in it. */
static void recheck_all(sp_cluster_t *cl)
{
	sp_worker_t *w = cl->w;
	size_t n = 0;

	for (sp_conn_t *c = w->conns; c; c = c->next) {
		if (c->state == SP_CS_READY && (c->flags & SP_CF_REGISTERED) && c->presence_due) {
			sp_cluster_renew(c, true);
			n++;
		}
	}
	sp_metric_add(&w->metrics, SP_M_CLUSTER_RECHECKS, (int64_t)n);
	SP_LOG(SP_LOG_INFO, "cluster_recheck", "worker=%d devices=%zu", w->id, n);
}

/* Worker 0's lease write was taken. The first one, and one that lands after the last one
 * taken had expired (a lapse), start an announcement: from lease / 2 on, every other relay
 * has read the node table since (it does every lease / 3), so a presence naming this relay
 * looks live to all of them. Until then devices wait (the listeners) and after a lapse the
 * re-check waits (sp_cluster_tick, on every worker). */
static void on_lease_written(int st, const redisReply *r, void *arg)
{
	struct lease_write *lw = arg;
	sp_cluster_t *cl = lw->cl;
	sp_server_t *srv = cl->w->srv;
	uint64_t now = sp_time_wall_ms();

	if (!gone(cl->w) && st == SP_STORE_OK && r->type != REDIS_REPLY_ERROR) {
		if (!cl->written || now > cl->written) {
			if (cl->written) {
				atomic_fetch_add(&srv->cluster_lapses, 1);
				sp_metric_inc(&cl->w->metrics, SP_M_CLUSTER_LAPSES);
				SP_LOG(SP_LOG_WARN, "cluster_lease_lapsed", "expired_ms_ago=%llu",
				       (unsigned long long)(now - cl->written));
			}
			atomic_store(&srv->cluster_announced, now + cl->lease_ms / 2);
		}
		if (lw->expires > cl->written)
			cl->written = lw->expires;
	}
	free(lw);
}

/* Every worker, every ANNOUNCE_MS while something waits for the announcement: the listener
 * at start, the re-check after a lapse. */
static void on_announce(evutil_socket_t fd, short what, void *arg)
{
	sp_cluster_t *cl = arg;
	sp_worker_t *w = cl->w;
	uint64_t at = atomic_load(&w->srv->cluster_announced);
	unsigned lapses = atomic_load(&w->srv->cluster_lapses);
	struct timeval tv = {0, ANNOUNCE_MS * 1000};

	(void)fd;
	(void)what;
	w->now = sp_now_ms();
	if (!at || sp_time_wall_ms() < at) {
		evtimer_add(cl->ev_announce, &tv);
		return;
	}
	if (w->announcing) {
		w->announcing = false;
		if (w->listener && !w->draining)
			evconnlistener_enable(w->listener);
		if (w->id == 0)
			SP_LOG(SP_LOG_INFO, "cluster_announced", "incarnation=%016" PRIx64,
			       w->srv->incarnation);
	}
	if (lapses != cl->lapses_seen) {
		cl->lapses_seen = lapses;
		recheck_all(cl);
	}
	sp_worker_after(w);
}

void sp_cluster_gone(sp_conn_t *c)
{
	static const char script[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then "
	                             "return redis.call('DEL', KEYS[1]) end return 0";
	sp_worker_t *w = c->w;
	char key[PKEY_LEN + 1], val[64];
	size_t vlen = sp_cluster_presence_format(val, sizeof(val), w->srv->incarnation,
	                                         (unsigned)w->id, sp_conn_ref(c));
	const char *argv[] = {"EVAL", script, "1", key, val};
	size_t lens[] = {4, sizeof(script) - 1, 1, PKEY_LEN, vlen};

	presence_key(key, c->token);
	sp_store_command(w->store, key, PKEY_LEN, 5, argv, lens, on_presence_del, NULL);
}

void sp_cluster_result(sp_worker_t *w, const sp_msg_t *msg, uint8_t status)
{
	struct outbox *o = outbox_for(w->cl, msg->fwd_inc, msg->fwd_worker);
	uint8_t *p = o ? outbox_record(w->cl, o, R_RESULT, 9) : NULL;

	if (!p)
		return; /* the origin falls back when its custody ends */
	put_u64(p, msg->fwd_id);
	p[8] = status;
}

/* ---- the incoming side ------------------------------------------------------------------- */

static bool known_status(uint8_t st)
{
	return st == SP_ST_DELIVERED || st == SP_ST_QUEUED ||
	       (st >= SP_ST_BAD_DEVICE_TOKEN && st <= SP_ST_INTERNAL_ERROR);
}

/* A FORWARD: the node is routed here as if one of our own workers had pushed it, and its
 * status goes back (sp_cluster_result, from sp_msg_result). */
static int take_forward(sp_worker_t *w, const uint8_t *p, size_t len)
{
	uint64_t wall = sp_time_wall_ms(), expires_wall;
	size_t clen, blen;
	sp_msg_t *msg;

	if (len < FWD_FIXED || p[16] >= SP_MAX_WORKERS)
		return -EBADMSG;
	clen = p[79];
	if (clen > SP_COLLAPSE_MAX || FWD_FIXED + clen > len)
		return -EBADMSG;
	blen = len - FWD_FIXED - clen;
	if (blen > (size_t)w->srv->cfg.max_blob)
		return -EBADMSG;
	msg = sp_msg_new(w, 1, (uint32_t)blen);
	if (!msg) {
		struct outbox *o = outbox_for(w->cl, get_u64(p + 8), p[16]);
		uint8_t *r = o ? outbox_record(w->cl, o, R_RESULT, 9) : NULL;

		if (r) {
			put_u64(r, get_u64(p));
			r[8] = SP_ST_TRY_LATER;
		}
		return 0;
	}
	msg->fwd = 1;
	msg->fwd_id = get_u64(p);
	msg->fwd_inc = get_u64(p + 8);
	msg->fwd_worker = p[16];
	memcpy(msg->recipients, p + 17, 32);
	memcpy(msg->msg_id, p + 49, 16);
	expires_wall = get_u64(p + 65);
	msg->ttl = get_u32(p + 73);
	msg->priority = p[77];
	msg->has_priority = p[78] ? 1 : 0;
	msg->collapse_len = (uint8_t)clen;
	memcpy(msg->collapse, p + FWD_FIXED, clen);
	memcpy(msg->blob, p + FWD_FIXED + clen, blen);
	msg->expires_wall = expires_wall;
	msg->expires = msg->ttl ? w->now + (expires_wall > wall ? expires_wall - wall : 0) : 0;
	sp_metric_inc(&w->metrics, SP_M_CLUSTER_RECEIVED);
	sp_route(w, &msg->nodes[0]);
	return 0;
}

static int take_record(sp_worker_t *w, uint8_t type, const uint8_t *p, size_t len)
{
	sp_cluster_t *cl = w->cl;
	struct fwd *f;
	sp_conn_t *c;

	switch (type) {
	case R_FORWARD:
		return take_forward(w, p, len);
	case R_RESULT:
		if (len != 9)
			return -EBADMSG;
		f = custody_find(cl, get_u64(p));
		if (f) {
			sp_node_t *n = custody_take(cl, f);

			sp_metric_inc(&w->metrics, SP_M_CLUSTER_RESULTS);
			if (p[8] != SP_ST_DELIVERED)
				pcache_drop(cl, sp_node_token(n));
			sp_node_finish(w, n, known_status(p[8]) ? p[8] : SP_ST_INTERNAL_ERROR);
		}
		return 0;
	case R_REPLACE:
	case R_KICK:
		if (len != 40)
			return -EBADMSG;
		c = sp_worker_conn(w, get_u64(p));
		if (!c || c->state != SP_CS_READY || memcmp(c->token, p + 8, 32) != 0)
			return 0;
		if (type == R_KICK)
			sp_delivery_kick(c);
		else
			sp_router_replace_remote(c);
		return 0;
	default:
		return -EBADMSG;
	}
}

static void take_entry(sp_worker_t *w, const redisReply *fields)
{
	if (fields->type != REDIS_REPLY_ARRAY)
		return;
	for (size_t i = 0; i + 1 < fields->elements; i += 2) {
		const redisReply *k = fields->element[i], *v = fields->element[i + 1];
		const uint8_t *p;
		size_t left;

		if (k->type != REDIS_REPLY_STRING || k->len != 1 || k->str[0] != 'r' ||
		    v->type != REDIS_REPLY_STRING)
			continue;
		p = (const uint8_t *)v->str;
		left = v->len;
		while (left) {
			uint32_t len;

			if (left < REC_HEAD || (len = get_u32(p + 1)) > left - REC_HEAD ||
			    take_record(w, p[0], p + REC_HEAD, len) < 0) {
				sp_metric_inc(&w->metrics, SP_M_CLUSTER_BAD_RECORDS);
				break;
			}
			p += REC_HEAD + len;
			left -= REC_HEAD + len;
		}
	}
}

static void read_inbox(sp_cluster_t *cl);

static void on_read(int st, const redisReply *r, void *arg)
{
	sp_cluster_t *cl = arg;
	sp_worker_t *w = cl->w;

	if (gone(w))
		return;
	cl->reading = false;
	w->now = sp_now_ms();
	if (cl->leaving && w->now - w->drain_started > (uint64_t)w->srv->cfg.shutdown_grace)
		return; /* what arrives now falls back at its senders: our lease is gone */
	if (st != SP_STORE_OK) {
		struct timeval tv = {0, RETRY_MS * 1000};

		evtimer_add(cl->ev_read, &tv);
		return;
	}
	/* [[key, [[id, [field, value, ...]], ...]]], or nil when the block timed out. */
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
	    r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 2) {
		const redisReply *entries = r->element[0]->element[1];

		for (size_t i = 0; entries->type == REDIS_REPLY_ARRAY && i < entries->elements;
		     i++) {
			const redisReply *e = entries->element[i];

			if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
			    e->element[0]->type != REDIS_REPLY_STRING ||
			    e->element[0]->len >= sizeof(cl->last_id))
				continue;
			memcpy(cl->last_id, e->element[0]->str, e->element[0]->len);
			cl->last_id[e->element[0]->len] = 0;
			take_entry(w, e->element[1]);
		}
	}
	read_inbox(cl);
	sp_worker_after(w);
}

static void read_inbox(sp_cluster_t *cl)
{
	char block[16];
	int blen = snprintf(block, sizeof(block), "%u", cl->block_ms);
	const char *argv[] = {"XREAD", "COUNT",   READ_COUNT, "BLOCK",
	                      block,   "STREAMS", cl->inbox,  cl->last_id};
	size_t lens[] = {
	        5, 5, strlen(READ_COUNT), 5, (size_t)blen, 7, cl->inbox_len, strlen(cl->last_id)};

	if (cl->reading || cl->closing)
		return;
	cl->reading = true;
	if (sp_store_command(cl->rs, cl->inbox, cl->inbox_len, 8, argv, lens, on_read, cl) < 0) {
		struct timeval tv = {0, RETRY_MS * 1000};

		cl->reading = false;
		evtimer_add(cl->ev_read, &tv);
	}
}

static void on_read_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	read_inbox(arg);
}

/* ---- leases ------------------------------------------------------------------------------ */

/* Nodes whose lease ended: what is in custody there falls back now, not at its deadline. */
static void custody_dead(sp_cluster_t *cl)
{
	struct fwd *f = cl->head, *next;

	for (; f; f = next) {
		next = f->next;
		if (!is_live(cl, f->inc))
			custody_fallback(cl, f);
	}
}

static void on_table(int st, const redisReply *r, void *arg)
{
	sp_cluster_t *cl = arg;
	sp_worker_t *w = cl->w;
	uint64_t now = sp_time_wall_ms();
	size_t n = 0, live_nodes = 1;
	bool lost = false;

	if (gone(w) || st != SP_STORE_OK || r->type != REDIS_REPLY_ARRAY)
		return;
	w->now = sp_now_ms();
	if (r->elements / 2 > cl->cap_live) {
		struct live *nl = realloc(cl->live, r->elements / 2 * sizeof(*nl));

		if (!nl)
			return;
		cl->live = nl;
		cl->cap_live = r->elements / 2;
	}
	for (size_t i = 0; i + 1 < r->elements; i += 2) {
		const redisReply *k = r->element[i], *v = r->element[i + 1];
		uint64_t inc, exp;
		char num[24];
		size_t j = 0;

		if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
		    parse_hex64(k->str, k->len, &inc) < 0)
			continue;
		while (j < v->len && j < sizeof(num) - 1 && v->str[j] >= '0' && v->str[j] <= '9') {
			num[j] = v->str[j];
			j++;
		}
		num[j] = 0;
		exp = strtoull(num, NULL, 10);
		if (inc == w->srv->incarnation)
			continue;
		if (exp > now)
			live_nodes++;
		else if (w->id == 0 && exp + 20 * cl->lease_ms < now) {
			/* long dead: its field goes (worker 0 of any node does it) */
			const char *argv[] = {"HDEL", NODES_KEY, k->str};
			size_t lens[] = {4, sizeof(NODES_KEY) - 1, k->len};

			sp_store_command(w->store, NODES_KEY, sizeof(NODES_KEY) - 1, 3, argv, lens,
			                 on_presence_del, NULL);
		}
		/* a node whose lease ended (its field stays a while): custody there ends */
		if (exp <= now)
			lost = true;
		cl->live[n].inc = inc;
		cl->live[n].expires = exp;
		n++;
	}
	/* an incarnation that was live and whose field is gone altogether */
	for (size_t i = 0; i < cl->n_live && !lost; i++) {
		bool found = false;

		if (cl->live[i].expires <= now)
			continue;
		for (size_t j = 0; j < n && !found; j++)
			found = cl->live[j].inc == cl->live[i].inc;
		lost = !found;
	}
	cl->n_live = n;
	cl->table_ms = now;
	if (w->id == 0)
		atomic_store_explicit(&w->metrics.v[SP_M_CLUSTER_NODES], live_nodes,
		                      memory_order_relaxed);
	if (lost && cl->head)
		custody_dead(cl);
	sp_worker_after(w);
}

static void on_inbox_created(int st, const redisReply *r, void *arg)
{
	(void)st;
	(void)r;
	(void)arg;
}

static void on_inbox_expire(int st, const redisReply *r, void *arg)
{
	sp_cluster_t *cl = arg;
	char inc[SP_CLUSTER_INC_HEX + 1], px[24];

	if (gone(cl->w) || st != SP_STORE_OK || r->type != REDIS_REPLY_INTEGER || r->integer != 0)
		return;
	/* The inbox does not exist yet (or was lost with a master): make it, so that writers'
	 * NOMKSTREAM finds it, and give it its expiry. */
	snprintf(inc, sizeof(inc), "%016" PRIx64, cl->w->srv->incarnation);
	snprintf(px, sizeof(px), "%llu", (unsigned long long)(3 * cl->lease_ms));
	{
		const char *argv[] = {"XADD", cl->inbox, "MAXLEN", "~", "10000", "*", "hello", inc};
		size_t lens[] = {4, cl->inbox_len, 6, 1, 5, 1, 5, SP_CLUSTER_INC_HEX};
		const char *ev[] = {"PEXPIRE", cl->inbox, px};
		size_t evl[] = {7, cl->inbox_len, strlen(px)};

		sp_store_command(cl->w->store, cl->inbox, cl->inbox_len, 8, argv, lens,
		                 on_inbox_created, NULL);
		sp_store_command(cl->w->store, cl->inbox, cl->inbox_len, 3, ev, evl,
		                 on_inbox_created, NULL);
	}
}

static void on_lease(evutil_socket_t fd, short what, void *arg)
{
	sp_cluster_t *cl = arg;
	sp_worker_t *w = cl->w;
	char px[24], inc[SP_CLUSTER_INC_HEX + 1], val[128];
	int pxlen = snprintf(px, sizeof(px), "%llu", (unsigned long long)(3 * cl->lease_ms));
	const char *hget[] = {"HGETALL", NODES_KEY};
	size_t hgetl[] = {7, sizeof(NODES_KEY) - 1};
	const char *pexp[] = {"PEXPIRE", cl->inbox, px};
	size_t pexpl[] = {7, cl->inbox_len, (size_t)pxlen};

	(void)fd;
	(void)what;
	w->now = sp_now_ms();
	if (w->id == 0 && !cl->leaving) {
		uint64_t expires = sp_time_wall_ms() + cl->lease_ms;
		int vlen = snprintf(val, sizeof(val), "%llu %s", (unsigned long long)expires,
		                    w->srv->node_name);
		const char *hset[] = {"HSET", NODES_KEY, inc, val};
		size_t hsetl[] = {4, sizeof(NODES_KEY) - 1, SP_CLUSTER_INC_HEX, (size_t)vlen};

		struct lease_write *lw = malloc(sizeof(*lw));

		snprintf(inc, sizeof(inc), "%016" PRIx64, w->srv->incarnation);
		if (lw) {
			lw->cl = cl;
			lw->expires = expires;
			if (sp_store_command(w->store, NODES_KEY, sizeof(NODES_KEY) - 1, 4, hset,
			                     hsetl, on_lease_written, lw) < 0)
				free(lw);
		}
	}
	/* Back from a Redis outage: what this worker wrote or was told meanwhile may be lost (a
	 * presence write, a KICK that could not be appended), so its devices are re-checked too,
	 * at once (the others saw its lease live). */
	if (sp_store_downs(w->store) != cl->downs_seen && sp_store_up(w->store)) {
		cl->downs_seen = sp_store_downs(w->store);
		recheck_all(cl);
	}
	if (w->announcing || atomic_load(&w->srv->cluster_lapses) != cl->lapses_seen) {
		struct timeval tv = {0, ANNOUNCE_MS * 1000};

		evtimer_add(cl->ev_announce, &tv);
	}
	sp_store_command(w->store, NODES_KEY, sizeof(NODES_KEY) - 1, 2, hget, hgetl, on_table, cl);
	sp_store_command(w->store, cl->inbox, cl->inbox_len, 3, pexp, pexpl, on_inbox_expire, cl);
	if (strcmp(cl->last_id, "0") != 0) {
		/* what was read can go: the stream keeps only what is unread */
		const char *trim[] = {"XTRIM", cl->inbox, "MINID", cl->last_id};
		size_t triml[] = {5, cl->inbox_len, 5, strlen(cl->last_id)};

		sp_store_command(w->store, cl->inbox, cl->inbox_len, 4, trim, triml,
		                 on_inbox_created, NULL);
	}
	read_inbox(cl);
}

/* ---- revocations ------------------------------------------------------------------------ */

void sp_cluster_publish_crl(sp_worker_t *w)
{
	const char *file = w->srv->cfg.crl;
	char inc[SP_CLUSTER_INC_HEX + 1];
	FILE *f;
	char *pem;
	size_t n;

	if (!w->cl || !file || !file[0] || !(f = fopen(file, "rb")))
		return;
	pem = malloc(CRL_MAX);
	n = pem ? fread(pem, 1, CRL_MAX, f) : 0;
	fclose(f);
	if (n > 0 && n < CRL_MAX) {
		const char *argv[] = {"XADD", EVENTS_KEY, "MAXLEN", "~",   "100",
		                      "*",    "from",     inc,      "crl", pem};
		size_t lens[] = {4, sizeof(EVENTS_KEY) - 1, 6, 1, 3, 1,
		                 4, SP_CLUSTER_INC_HEX,     3, n};

		snprintf(inc, sizeof(inc), "%016" PRIx64, w->srv->incarnation);
		sp_store_command(w->store, EVENTS_KEY, sizeof(EVENTS_KEY) - 1, 10, argv, lens,
		                 on_presence_del, NULL);
		SP_LOG(SP_LOG_INFO, "cluster_crl_published", "bytes=%zu", n);
	}
	free(pem);
}

static void take_event(sp_worker_t *w, const redisReply *fields)
{
	const redisReply *from = NULL, *crl = NULL;
	char err[256];
	uint64_t inc;
	int rc;

	for (size_t i = 0; fields->type == REDIS_REPLY_ARRAY && i + 1 < fields->elements; i += 2) {
		const redisReply *k = fields->element[i], *v = fields->element[i + 1];

		if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
			continue;
		if (k->len == 4 && memcmp(k->str, "from", 4) == 0)
			from = v;
		else if (k->len == 3 && memcmp(k->str, "crl", 3) == 0)
			crl = v;
	}
	if (!crl || !from || parse_hex64(from->str, from->len, &inc) < 0 ||
	    inc == w->srv->incarnation)
		return;
	rc = sp_tls_install_crl(w->srv, crl->str, crl->len, err, sizeof(err));
	if (rc < 0) {
		SP_LOG(SP_LOG_WARN, "cluster_crl_refused", "from=%016" PRIx64 " msg=\"%s\"", inc,
		       err);
		return;
	}
	if (rc == 0)
		return;
	sp_metric_inc(&w->metrics, SP_M_CLUSTER_CRLS);
	SP_LOG(SP_LOG_INFO, "cluster_crl_installed", "from=%016" PRIx64, inc);
	sp_workers_signal(w->srv, SP_WF_RELOAD);
}

static void on_events(int st, const redisReply *r, void *arg)
{
	sp_cluster_t *cl = arg;

	if (gone(cl->w))
		return;
	cl->ev_reading = false;
	if (st != SP_STORE_OK || r->type != REDIS_REPLY_ARRAY || r->elements != 1 ||
	    r->element[0]->type != REDIS_REPLY_ARRAY || r->element[0]->elements != 2)
		return;
	r = r->element[0]->element[1];
	for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
		const redisReply *e = r->element[i];

		if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
		    e->element[0]->type != REDIS_REPLY_STRING ||
		    e->element[0]->len >= sizeof(cl->ev_last))
			continue;
		memcpy(cl->ev_last, e->element[0]->str, e->element[0]->len);
		cl->ev_last[e->element[0]->len] = 0;
		take_event(cl->w, e->element[1]);
	}
}

static void on_events_timer(evutil_socket_t fd, short what, void *arg)
{
	sp_cluster_t *cl = arg;
	const char *argv[] = {"XREAD", "COUNT", "16", "STREAMS", EVENTS_KEY, cl->ev_last};
	size_t lens[] = {5, 5, 2, 7, sizeof(EVENTS_KEY) - 1, strlen(cl->ev_last)};

	(void)fd;
	(void)what;
	if (cl->ev_reading)
		return;
	cl->ev_reading = true;
	if (sp_store_command(cl->w->store, EVENTS_KEY, sizeof(EVENTS_KEY) - 1, 6, argv, lens,
	                     on_events, cl) < 0)
		cl->ev_reading = false;
}

void sp_cluster_drain(sp_worker_t *w)
{
	sp_cluster_t *cl = w->cl;
	char inc[SP_CLUSTER_INC_HEX + 1];
	const char *argv[] = {"HDEL", NODES_KEY, inc};
	size_t lens[] = {4, sizeof(NODES_KEY) - 1, SP_CLUSTER_INC_HEX};

	if (!cl || cl->leaving)
		return;
	cl->leaving = true;
	if (w->id != 0)
		return;
	/* The others count this relay as gone from their next table read: they store what they
	 * would have forwarded, and what is in custody here falls back there. */
	snprintf(inc, sizeof(inc), "%016" PRIx64, w->srv->incarnation);
	sp_store_command(w->store, NODES_KEY, sizeof(NODES_KEY) - 1, 3, argv, lens, on_presence_del,
	                 NULL);
}

/* ---- lifecycle --------------------------------------------------------------------------- */

void sp_cluster_tick(sp_worker_t *w)
{
	sp_cluster_t *cl = w->cl;

	if (!cl)
		return;
	while (cl->head && cl->head->deadline <= w->now)
		custody_fallback(cl, cl->head);
	if (cl->n_retry)
		ctl_retry_run(cl);
	/* A drain past its grace waits for nobody: what is still out is stored here (the other
	 * relay may deliver it too: at-least-once), so that the worker can finish. */
	if (w->draining && w->now - w->drain_started > (uint64_t)w->srv->cfg.shutdown_grace)
		while (cl->head)
			custody_fallback(cl, cl->head);
}

int sp_cluster_start(sp_worker_t *w, char *err, size_t errlen)
{
	sp_server_t *srv = w->srv;
	sp_cluster_t *cl;
	sp_store_limits_t lim;
	struct timeval tv;

	if (!w->store) {
		snprintf(err, errlen, "cluster needs redis");
		return -1;
	}
	cl = calloc(1, sizeof(*cl));
	if (!cl) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	w->cl = cl;
	cl->w = w;
	cl->lease_ms = (uint64_t)srv->cfg.cluster_lease;
	cl->inbox_len = inbox_key(cl->inbox, sizeof(cl->inbox), srv->incarnation, (unsigned)w->id);
	strcpy(cl->last_id, "0");
	sp_tokmap_init(&cl->pcache);
	sp_store_limits_default(&lim);
	lim.timeout_ms = (uint32_t)srv->cfg.store_timeout;
	/* the block ends well before the store's request timeout would drop the link */
	cl->block_ms = lim.timeout_ms / 2 < 1000 ? lim.timeout_ms / 2 : 1000;
	if (cl->block_ms < 1)
		cl->block_ms = 1;
	cl->rs = sp_store_new(w->base, srv->cfg.redis, &lim, err, errlen);
	cl->ev_read = evtimer_new(w->base, on_read_retry, cl);
	cl->ev_lease = event_new(w->base, -1, EV_PERSIST, on_lease, cl);
	cl->ev_announce = evtimer_new(w->base, on_announce, cl);
	if (!cl->rs || !cl->ev_read || !cl->ev_lease || !cl->ev_announce) {
		if (cl->rs)
			snprintf(err, errlen, "out of memory");
		return -1; /* sp_cluster_free() undoes it */
	}
	if (w->id == 0) {
		struct timeval etv = {0, EVENTS_MS * 1000};

		/* events from now on: the CRL file was read at start */
		snprintf(cl->ev_last, sizeof(cl->ev_last), "%llu-0",
		         (unsigned long long)sp_time_wall_ms());
		cl->ev_events = event_new(w->base, -1, EV_PERSIST, on_events_timer, cl);
		if (!cl->ev_events || event_add(cl->ev_events, &etv) < 0) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
	}
	tv.tv_sec = (time_t)(cl->lease_ms / 3 / 1000);
	tv.tv_usec = (suseconds_t)(cl->lease_ms / 3 % 1000 * 1000);
	event_add(cl->ev_lease, &tv);
	event_active(cl->ev_lease, 0, 0); /* the first lease, table and inbox now */
	return 0;
}

void sp_cluster_free(sp_worker_t *w)
{
	sp_cluster_t *cl = w->cl;

	if (!cl)
		return;
	cl->closing = true;
	sp_store_free(cl->rs);
	if (cl->ev_read)
		event_free(cl->ev_read);
	if (cl->ev_lease)
		event_free(cl->ev_lease);
	if (cl->ev_announce)
		event_free(cl->ev_announce);
	if (cl->ev_events)
		event_free(cl->ev_events);
	while (cl->head)
		custody_take(cl, cl->head); /* the nodes go with their messages (teardown) */
	for (size_t i = 0; i < cl->n_out; i++) {
		free(cl->out[i].buf);
		free(cl->out[i].fwds);
	}
	free(cl->out);
	free(cl->retry);
	pcache_clear(cl);
	sp_tokmap_free(&cl->pcache);
	free(cl->live);
	free(cl->slots);
	free(cl->gens);
	free(cl->free_slots);
	free(cl);
	w->cl = NULL;
}
