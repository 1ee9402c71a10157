/*
 * sp_directory.c: DIR_PUBLISH and DIR_LOOKUP on a device connection (see sp_directory.h).
 *
 * A request becomes an sp_dirlog request whose callback carries a struct dreq: the
 * connection's reference (it may be gone when the answer comes: then the answer is dropped),
 * the request id, and what the answer needs. What a device may publish: a user card that
 * parses and whose user signature holds (sp_ucard), for a handle the operator's pattern allows,
 * that lists the publishing device itself (a device cannot publish for a user it is not part
 * of). The relay does not decide whose handle it is beyond that: the log does (a handle keeps
 * its first user key, a device belongs to one handle, cards only move forward in time), and
 * every client checks the rest itself.
 */
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sp_directory.h"
#include "sp_dirlog.h"
#include "sp_log.h"
#include "sp_metrics.h"
#include "sp_ucard.h"
#include "sp_worker.h"

struct dreq {
	sp_worker_t *w;
	sp_connref_t ref;
	uint8_t msg_id[SP_MSG_ID_LEN];
	int kind; /* SP_DIR_PUBLISH, SP_DIR_LOOKUP */
	bool head_only, history;
};

int sp_directory_setup(sp_server_t *srv, char *err, size_t errlen)
{
	sp_server_config_t *cfg = &srv->cfg;
	FILE *fp;
	int r;

	if (cfg->directory_log_key == NULL || cfg->directory_log_key[0] == '\0')
		return 0;
	if (cfg->redis == NULL || cfg->redis[0] == '\0') {
		snprintf(err, errlen,
		         "key \"directory_log_key\": the directory lives in Redis; "
		         "\"redis\" must be set");
		return -1;
	}
	fp = fopen(cfg->directory_log_key, "r");
	if (fp == NULL) {
		snprintf(err, errlen, "key \"directory_log_key\": %s: %s", cfg->directory_log_key,
		         strerror(errno));
		return -1;
	}
	srv->dir_key = PEM_read_PrivateKey(fp, NULL, NULL, NULL);
	fclose(fp);
	if (srv->dir_key == NULL || !EVP_PKEY_is_a(srv->dir_key, "EC") ||
	    EVP_PKEY_get_bits(srv->dir_key) != 256) {
		EVP_PKEY_free(srv->dir_key);
		srv->dir_key = NULL;
		snprintf(err, errlen,
		         "key \"directory_log_key\": %s is not a P-256 private key (PEM)",
		         cfg->directory_log_key);
		return -1;
	}
	if (cfg->directory_handle_pattern != NULL && cfg->directory_handle_pattern[0] != '\0') {
		r = regcomp(&srv->dir_re, cfg->directory_handle_pattern, REG_EXTENDED | REG_NOSUB);
		if (r != 0) {
			char why[128];

			regerror(r, &srv->dir_re, why, sizeof(why));
			snprintf(err, errlen, "key \"directory_handle_pattern\": %s", why);
			EVP_PKEY_free(srv->dir_key);
			srv->dir_key = NULL;
			return -1;
		}
		srv->dir_re_set = true;
	}
	return 0;
}

void sp_directory_teardown(sp_server_t *srv)
{
	if (srv->dir_re_set)
		regfree(&srv->dir_re);
	srv->dir_re_set = false;
	EVP_PKEY_free(srv->dir_key);
	srv->dir_key = NULL;
}

int sp_directory_start(sp_worker_t *w, char *err, size_t errlen)
{
	sp_server_config_t *cfg = &w->srv->cfg;
	sp_dirlog_limits_t lim;

	if (w->srv->dir_key == NULL || w->store == NULL)
		return 0;
	sp_dirlog_limits_default(&lim);
	lim.lookup_limit = (uint32_t)cfg->directory_lookup_limit;
	lim.lookup_window_ms = (uint32_t)cfg->directory_lookup_window;
	lim.max_queue = (uint32_t)cfg->directory_max_queue;
	w->dirlog = sp_dirlog_new(w->base, w->store, w->srv->dir_key, &lim);
	if (w->dirlog == NULL) {
		snprintf(err, errlen, "out of memory (directory log)");
		return -1;
	}
	return 0;
}

void sp_directory_stop(sp_worker_t *w)
{
	sp_dirlog_free(w->dirlog);
	w->dirlog = NULL;
}

bool sp_directory_enabled(const sp_worker_t *w)
{
	return w->dirlog != NULL;
}

void sp_directory_counters(sp_worker_t *w)
{
	sp_dirlog_counters_t dc;
	uint64_t v[SP_M_DIR_LOG_LAST - SP_M_DIR_LOG + 1];

	_Static_assert(sizeof(dc) == sizeof(v), "one metric per log counter");
	if (w->dirlog == NULL)
		return;
	sp_dirlog_counters(w->dirlog, &dc);
	memcpy(v, &dc, sizeof(v));
	for (unsigned i = 0; i <= SP_M_DIR_LOG_LAST - SP_M_DIR_LOG; i++)
		atomic_store_explicit(&w->metrics.v[SP_M_DIR_LOG + i], v[i], memory_order_relaxed);
}

/* Sends the DIR_ANSWER (a is NULL for a refusal made here, before the log). */
static void answer(sp_worker_t *w, sp_connref_t ref, const uint8_t *msg_id, uint8_t status,
                   const char *reason, const sp_dirlog_answer_t *a, bool with_entry, bool history)
{
	sp_conn_t *c = sp_worker_conn(w, ref);
	uint8_t idx[8], incl[SP_MERKLE_PROOF_WIRE_MAX], cons[SP_MERKLE_PROOF_WIRE_MAX];
	sp_frame_t f = {.type = SP_DIR_ANSWER,
	                .fields = SP_BIT(SP_F_MSG_ID) | SP_BIT(SP_F_STATUS),
	                .msg_id = msg_id,
	                .status = status};

	if (c == NULL || c->state >= SP_CS_CLOSING)
		return;
	if (reason != NULL) {
		f.fields |= SP_BIT(SP_F_REASON);
		f.reason = (const uint8_t *)reason;
		f.reason_len = (uint32_t)strlen(reason);
	}
	if (a != NULL && a->status == SP_DIRLOG_LIMITED) {
		f.fields |= SP_BIT(SP_F_RETRY_AFTER);
		f.retry_after = a->retry_after_ms;
	}
	if (a != NULL && a->status == SP_DIRLOG_OK) {
		f.fields |= SP_BIT(SP_F_TREE_HEAD);
		f.tree_head = a->head;
		f.tree_head_len = (uint32_t)a->head_len;
		if (with_entry) {
			for (int i = 0; i < 8; i++)
				idx[i] = (uint8_t)(a->index >> (56 - 8 * i));
			f.fields |= SP_BIT(SP_F_LEAF_INDEX);
			f.leaf_index = idx;
		}
		if (history) {
			f.fields |= SP_BIT(SP_F_HIST_LEFT);
			f.hist_left = a->hist_left;
		}
		if (with_entry && a->entry != NULL) {
			f.fields |= SP_BIT(SP_F_DIR_ENTRY) | SP_BIT(SP_F_INCLUSION);
			f.dir_entry = a->entry;
			f.dir_entry_len = (uint32_t)a->entry_len;
			f.inclusion = incl;
			f.inclusion_len = (uint32_t)sp_merkle_proof_encode(
			        (const uint8_t *)a->proof, a->proof_count, incl);
			if (a->old_size > 0) {
				f.fields |= SP_BIT(SP_F_CONSISTENCY);
				f.consistency = cons;
				f.consistency_len = (uint32_t)sp_merkle_proof_encode(
				        (const uint8_t *)a->cproof, a->cproof_count, cons);
			}
		} else if (!with_entry && a->old_size > 0) {
			f.fields |= SP_BIT(SP_F_CONSISTENCY);
			f.consistency = cons;
			f.consistency_len = (uint32_t)sp_merkle_proof_encode(
			        (const uint8_t *)a->proof, a->proof_count, cons);
		}
	}
	sp_conn_send(c, &f);
	sp_worker_after(w);
}

static uint8_t status_of(int s)
{
	switch (s) {
	case SP_DIRLOG_OK:
		return SP_ST_DELIVERED;
	case SP_DIRLOG_NOT_FOUND:
		return SP_ST_BAD_DEVICE_TOKEN;
	case SP_DIRLOG_KEY_CHANGED:
	case SP_DIRLOG_TOKEN_TAKEN:
	case SP_DIRLOG_STALE:
		return SP_ST_FORBIDDEN;
	case SP_DIRLOG_LIMITED:
		return SP_ST_TOO_MANY_REQUESTS;
	case SP_DIRLOG_BUSY:
	case SP_DIRLOG_UNAVAILABLE:
		return SP_ST_TRY_LATER;
	default:
		return SP_ST_INTERNAL_ERROR;
	}
}

static const char *reason_of(int s)
{
	switch (s) {
	case SP_DIRLOG_NOT_FOUND:
		return "no card";
	case SP_DIRLOG_KEY_CHANGED:
		return "the handle belongs to another user key";
	case SP_DIRLOG_TOKEN_TAKEN:
		return "a device of the card is listed by another handle";
	case SP_DIRLOG_STALE:
		return "issued_at is not later than the handle's last card";
	case SP_DIRLOG_LIMITED:
		return "too many lookups";
	case SP_DIRLOG_BUSY:
	case SP_DIRLOG_UNAVAILABLE:
		return "the directory is unavailable";
	case SP_DIRLOG_OK:
		return NULL;
	default:
		return "directory error";
	}
}

static void on_answer(const sp_dirlog_answer_t *a, void *arg)
{
	struct dreq *q = arg;
	sp_worker_t *w = q->w;
	unsigned m;

	if (!atomic_load(&w->srv->stopping)) {
		if (q->kind == SP_DIR_PUBLISH)
			m = SP_M_DIR_PUBLISH + (a->status == SP_DIRLOG_OK                 ? 0
			                        : status_of(a->status) == SP_ST_FORBIDDEN ? 1
			                                                                  : 3);
		else
			m = SP_M_DIR_LOOKUP + (a->status == SP_DIRLOG_OK          ? 0
			                       : a->status == SP_DIRLOG_NOT_FOUND ? 1
			                       : a->status == SP_DIRLOG_LIMITED   ? 2
			                                                          : 3);
		sp_metric_inc(&w->metrics, m);
		answer(w, q->ref, q->msg_id, status_of(a->status), reason_of(a->status), a,
		       !q->head_only, q->history);
	}
	free(q);
}

static void refuse(sp_conn_t *c, const sp_frame_t *f, uint8_t status, const char *why, unsigned m)
{
	sp_metric_inc(&c->w->metrics, m);
	answer(c->w, sp_conn_ref(c), f->msg_id, status, why, NULL, false, false);
}

static struct dreq *dreq_new(sp_conn_t *c, const sp_frame_t *f)
{
	struct dreq *q = calloc(1, sizeof(*q));

	if (q != NULL) {
		q->w = c->w;
		q->ref = sp_conn_ref(c);
		memcpy(q->msg_id, f->msg_id, SP_MSG_ID_LEN);
		q->kind = f->type;
	}
	return q;
}

static uint64_t u64_of(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static void on_publish(sp_conn_t *c, const sp_frame_t *f)
{
	sp_server_t *srv = c->w->srv;
	sp_ucard_t card;
	uint8_t(*tokens)[32] = NULL, *entry = NULL;
	struct dreq *q = NULL;
	bool mine = false;
	size_t len;
	int r;

	r = sp_ucard_parse((const char *)f->dir_card, f->dir_card_len, &card);
	if (r < 0) {
		refuse(c, f, SP_ST_FORBIDDEN,
		       r == -EKEYREJECTED ? "the user card's signature does not hold"
		                          : "the user card is malformed",
		       SP_M_DIR_PUBLISH + 2);
		return;
	}
	if (srv->dir_re_set && regexec(&srv->dir_re, card.handle, 0, NULL, 0) != 0) {
		refuse(c, f, SP_ST_FORBIDDEN, "this relay does not allow that handle",
		       SP_M_DIR_PUBLISH + 2);
		goto out;
	}
	tokens = malloc(card.n_devices * sizeof(*tokens));
	entry = malloc(sp_dirlog_entry_size(card.handle_len, f->dir_card_len));
	q = dreq_new(c, f);
	if (tokens == NULL || entry == NULL || q == NULL) {
		refuse(c, f, SP_ST_INTERNAL_ERROR, "out of memory", SP_M_DIR_PUBLISH + 3);
		goto out;
	}
	for (size_t i = 0; i < card.n_devices; i++) {
		memcpy(tokens[i], card.dev[i].token, 32);
		mine |= memcmp(card.dev[i].token, c->token, 32) == 0;
	}
	if (!mine) {
		refuse(c, f, SP_ST_FORBIDDEN, "the card does not list the publishing device",
		       SP_M_DIR_PUBLISH + 2);
		goto out;
	}
	len = sp_dirlog_entry_build(entry, card.handle, card.handle_len, f->dir_card,
	                            f->dir_card_len);
	r = sp_dirlog_append(c->w->dirlog, card.handle, card.handle_len, card.ukey_fp,
	                     (const uint8_t(*)[32])tokens, card.n_devices, (uint64_t)card.issued_at,
	                     entry, len, on_answer, q);
	if (r < 0) {
		refuse(c, f, SP_ST_TRY_LATER,
		       r == -EBUSY ? "too many directory changes waiting"
		                   : "the directory is unavailable",
		       SP_M_DIR_PUBLISH + 3);
		goto out;
	}
	q = NULL;
out:
	free(q);
	free(tokens);
	free(entry);
	sp_ucard_clear(&card);
}

static void on_lookup(sp_conn_t *c, const sp_frame_t *f)
{
	bool head = (f->flags & SP_DIR_LOOKUP_HEAD) != 0;
	bool history = !head && (f->flags & SP_DIR_LOOKUP_HISTORY) != 0;
	bool by_handle = (f->fields & SP_BIT(SP_F_HANDLE)) != 0;
	bool by_token = (f->fields & SP_BIT(SP_F_TOKEN)) != 0;
	uint64_t old = f->fields & SP_BIT(SP_F_TREE_SIZE) ? u64_of(f->tree_size) : 0;
	struct dreq *q;
	int r;

	if (history ? by_handle || by_token
	            : !head && (by_handle == by_token || (f->fields & SP_BIT(SP_F_LEAF_INDEX)))) {
		refuse(c, f, SP_ST_FORBIDDEN,
		       history ? "a history lookup names no handle or token: it is the device's own"
		               : "a lookup names one handle or one token",
		       SP_M_DIR_LOOKUP + 3);
		return;
	}
	if (history && (f->fields & SP_BIT(SP_F_LEAF_INDEX)) &&
	    u64_of(f->leaf_index) >= (UINT64_C(1) << 53)) {
		refuse(c, f, SP_ST_FORBIDDEN, "leaf_index out of range", SP_M_DIR_LOOKUP + 3);
		return;
	}
	q = dreq_new(c, f);
	if (q == NULL) {
		refuse(c, f, SP_ST_INTERNAL_ERROR, "out of memory", SP_M_DIR_LOOKUP + 3);
		return;
	}
	q->head_only = head;
	q->history = history;
	if (history)
		r = sp_dirlog_history(
		        c->w->dirlog, c->token,
		        f->fields & SP_BIT(SP_F_LEAF_INDEX) ? (int64_t)u64_of(f->leaf_index) : -1,
		        old, on_answer, q);
	else if (head)
		r = sp_dirlog_head(c->w->dirlog, old, c->token, on_answer, q);
	else
		r = sp_dirlog_lookup(c->w->dirlog, by_handle ? (const char *)f->handle : NULL,
		                     by_handle ? f->handle_len : 0, by_token ? f->token : NULL, old,
		                     c->token, on_answer, q);
	if (r < 0) {
		free(q);
		refuse(c, f, SP_ST_TRY_LATER, "the directory is unavailable", SP_M_DIR_LOOKUP + 3);
	}
}

void sp_directory_frame(sp_conn_t *c, const sp_frame_t *f)
{
	if (c->w->dirlog == NULL) {
		refuse(c, f, SP_ST_FORBIDDEN, "this relay has no key directory",
		       f->type == SP_DIR_PUBLISH ? SP_M_DIR_PUBLISH + 2 : SP_M_DIR_LOOKUP + 3);
		return;
	}
	if (f->type == SP_DIR_PUBLISH)
		on_publish(c, f);
	else
		on_lookup(c, f);
}
