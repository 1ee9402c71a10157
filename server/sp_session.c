/*
 * sp_session.c: the protocol state machine of a connection (PROTOCOL.md sections 6 and 7).
 *
 * HELLO makes the session READY: it registers the device (sp_router_register), answers
 * WELCOME and starts the drain of its queue (sp_delivery_start). A SEND is checked against
 * the send window, the rate limit and the size limits (refused whole, with one SEND_RESULT,
 * if it fails one), becomes one sp_msg_t, and each recipient node but repeats is routed on
 * its own (sp_route). An ACK moves the device's window (sp_delivery_ack).
 *
 * An anonymous connection (the sealed-sender door, sp_anon.h) has no token: its HELLO must
 * be SEND_ONLY, each recipient of its SENDs goes through sp_anon_route() with the access key
 * given for it, and any frame but SEND, PING, PONG and ERROR is refused (ANONYMOUS).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sp_anon.h"
#include "sp_bucket.h"
#include "sp_delivery.h"
#include "sp_directory.h"
#include "sp_enroll.h"
#include "sp_identity.h"
#include "sp_log.h"
#include "sp_msg.h"
#include "sp_provider.h"
#include "sp_router.h"
#include "sp_session.h"
#include "sp_time.h"

static const uint8_t zero_token[SP_TOKEN_LEN];

/* A fatal error about frame `about`: ERROR with CLOSING, the frame's type and msg_id. */
static void fail(sp_conn_t *c, unsigned code, const char *reason, const sp_frame_t *about)
{
	char tok[SP_TOKEN_SHORT_LEN + 1] = "-";
	char q[SP_LOG_QUOTE_SIZE(SP_REASON_MAX)];

	if (c->state >= SP_CS_READY)
		sp_token_short(c->token, tok);
	sp_log_quote(q, sizeof(q), reason, strlen(reason));
	SP_LOG(SP_LOG_INFO, "protocol_error", "worker=%d token=%s code=%s reason=%s", c->w->id, tok,
	       sp_error_name(code), q);
	sp_conn_error(c, code, true, reason, about);
	sp_conn_close(c,
	              code == SP_ERR_HELLO_TIMEOUT     ? SP_CLOSE_HELLO_TIMEOUT
	              : code == SP_ERR_IDLE_TIMEOUT    ? SP_CLOSE_IDLE_TIMEOUT
	              : code == SP_ERR_TOO_MANY_ERRORS ? SP_CLOSE_TOO_MANY_ERRORS
	              : code == SP_ERR_INTERNAL_ERROR  ? SP_CLOSE_INTERNAL
	                                               : SP_CLOSE_PROTOCOL,
	              0, NULL);
}

/* Answers every recipient of a SEND that was refused before routing. */
static void refuse_all(sp_conn_t *c, const sp_frame_t *send, uint8_t status, uint32_t retry_ms)
{
	sp_worker_t *w = c->w;
	sp_frame_t f = {.type = SP_SEND_RESULT,
	                .fields = SP_BIT(SP_F_MSG_ID) | SP_BIT(SP_F_RESULTS),
	                .msg_id = send->msg_id,
	                .results = w->batch,
	                .n_results = send->n_recipients};

	sp_msg_flush_results(w); /* w->batch is reused below */
	for (uint32_t i = 0; i < send->n_recipients; i++)
		sp_result_put(w->batch + (size_t)i * SP_RESULT_LEN, (uint16_t)i, status);
	if (retry_ms) {
		f.fields |= SP_BIT(SP_F_RETRY_AFTER);
		f.retry_after = retry_ms;
	}
	sp_metric_add(&w->metrics, SP_M_SEND_RESULTS + sp_metric_status_index(status),
	              send->n_recipients);
	sp_conn_send(c, &f);
}

void sp_session_drain_check(sp_conn_t *c)
{
	if (c->state == SP_CS_DRAINING && c->sends_outstanding == 0 && c->n_inflight == 0)
		sp_conn_close(c, SP_CLOSE_SHUTDOWN, 0, NULL);
}

static uint16_t clamp16(int64_t v, int64_t lo, int64_t hi)
{
	return (uint16_t)(v < lo ? lo : v > hi ? hi : v);
}

static void on_hello(sp_conn_t *c, const sp_frame_t *f)
{
	const sp_server_config_t *cfg = &c->w->srv->cfg;
	sp_frame_t wf = {.type = SP_WELCOME};
	char tok[SP_TOKEN_SHORT_LEN + 1];

	if (f->version != SP_VERSION_1) {
		fail(c, SP_ERR_UNSUPPORTED_VERSION, "this server speaks sealpush version 1", f);
		return;
	}
	c->keepalive = clamp16((f->fields & SP_BIT(SP_F_KEEPALIVE)) ? f->keepalive : cfg->keepalive,
	                       cfg->keepalive_min, cfg->keepalive_max);
	c->window = (uint16_t)cfg->window;
	if ((f->fields & SP_BIT(SP_F_WINDOW)) && f->window < c->window)
		c->window = f->window;
	if (c->anon && !(f->flags & SP_HELLO_SEND_ONLY)) {
		fail(c, SP_ERR_ANONYMOUS,
		     "an anonymous connection only sends: HELLO must have the SEND_ONLY flag", f);
		return;
	}
	if (f->flags & SP_HELLO_SEND_ONLY)
		c->flags |= SP_CF_SEND_ONLY;
	else if (sp_router_register(c) < 0) {
		fail(c, SP_ERR_INTERNAL_ERROR, "out of memory", f);
		return;
	}
	wf.fields = SP_BIT(SP_F_VERSION) | SP_BIT(SP_F_TOKEN) | SP_BIT(SP_F_MAX_FRAME) |
	            SP_BIT(SP_F_MAX_BLOB) | SP_BIT(SP_F_MAX_RECIPIENTS) | SP_BIT(SP_F_WINDOW) |
	            SP_BIT(SP_F_SEND_WINDOW) | SP_BIT(SP_F_KEEPALIVE) | SP_BIT(SP_F_KEEPALIVE_MIN) |
	            SP_BIT(SP_F_KEEPALIVE_MAX);
	wf.version = SP_VERSION_1;
	if (sp_provider_enabled(c->w)) {
		wf.fields |= SP_BIT(SP_F_CAPABILITIES);
		wf.capabilities = SP_CAP_WEBPUSH;
	}
	if (sp_directory_enabled(c->w)) {
		wf.fields |= SP_BIT(SP_F_CAPABILITIES);
		wf.capabilities |= SP_CAP_DIRECTORY;
	}
	if (sp_enroll_enabled(c->w->srv)) {
		wf.fields |= SP_BIT(SP_F_CAPABILITIES);
		wf.capabilities |= SP_CAP_RENEW;
	}
	if (sp_anon_enabled(c->w->srv)) {
		wf.fields |= SP_BIT(SP_F_CAPABILITIES);
		wf.capabilities |= SP_CAP_ANONYMOUS;
	}
	if (c->anon) /* only sending: none of the doors that need an identity */
		wf.capabilities = SP_CAP_ANONYMOUS;
	wf.token = c->token;
	wf.max_frame = (uint32_t)cfg->max_frame;
	wf.max_blob = (uint32_t)cfg->max_blob;
	wf.max_recipients = c->anon ? sp_anon_max_recipients(cfg) : (uint16_t)cfg->max_recipients;
	wf.window = c->window;
	wf.send_window = (uint16_t)cfg->send_window;
	wf.keepalive = c->keepalive;
	wf.keepalive_min = (uint16_t)cfg->keepalive_min;
	wf.keepalive_max = (uint16_t)cfg->keepalive_max;
	c->dec.max_frame = (uint32_t)cfg->max_frame;
	c->rate_tokens = (double)(cfg->send_burst ? cfg->send_burst : cfg->send_rate);
	c->rate_t = c->w->now;
	sp_conn_set_state(c, SP_CS_READY);
	c->t_rx = c->w->now;
	sp_conn_send(c, &wf);
	if (c->anon) {
		sp_metric_inc(&c->w->metrics, SP_M_ANON_CONNECTIONS);
		return; /* nothing to deliver; and no log line, even at debug */
	}
	sp_delivery_start(c, (f->fields & SP_BIT(SP_F_RESUME_ID)) ? f->resume_id : NULL);
	sp_token_short(c->token, tok);
	SP_LOG(SP_LOG_DEBUG, "conn_ready", "worker=%d token=%s send_only=%d keepalive=%u window=%u",
	       c->w->id, tok, !!(c->flags & SP_CF_SEND_ONLY), c->keepalive, c->window);
}

/* Token bucket per connection; returns the milliseconds to wait, or 0 if n may go now. */
static uint32_t rate_take(sp_conn_t *c, uint32_t n)
{
	const sp_server_config_t *cfg = &c->w->srv->cfg;
	double burst = (double)(cfg->send_burst ? cfg->send_burst : cfg->send_rate);
	double rate = (double)cfg->send_rate;

	if (!cfg->send_rate)
		return 0;
	c->rate_tokens += (double)(c->w->now - c->rate_t) * rate / 1000.0;
	c->rate_t = c->w->now;
	if (c->rate_tokens > burst)
		c->rate_tokens = burst;
	if (c->rate_tokens >= n) {
		c->rate_tokens -= n;
		return 0;
	}
	return (uint32_t)((n - c->rate_tokens) * 1000.0 / rate) + 1;
}

static int cmp_recipient(const void *a, const void *b, void *arg)
{
	const uint8_t *r = arg;
	uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
	int c = memcmp(r + (size_t)i * SP_TOKEN_LEN, r + (size_t)j * SP_TOKEN_LEN, SP_TOKEN_LEN);

	return c ? c : (i > j) - (i < j);
}

/*
 * Marks in rep[i] the recipients that repeat an earlier one (or are all zero). Sorting the
 * indexes by token costs O(n log n) whatever tokens the sender picks; a hash set of
 * sender-chosen keys could be driven into collisions.
 */
static void find_repeats(sp_worker_t *w, const uint8_t *recipients, uint32_t n, uint8_t *rep)
{
	uint32_t *idx = w->dedup;

	for (uint32_t i = 0; i < n; i++) {
		idx[i] = i;
		rep[i] = memcmp(recipients + (size_t)i * SP_TOKEN_LEN, zero_token, SP_TOKEN_LEN) ==
		         0;
	}
	if (n <= 1)
		return;
	qsort_r(idx, n, sizeof(*idx), cmp_recipient, (void *)recipients);
	for (uint32_t k = 1; k < n; k++)
		if (memcmp(recipients + (size_t)idx[k] * SP_TOKEN_LEN,
		           recipients + (size_t)idx[k - 1] * SP_TOKEN_LEN, SP_TOKEN_LEN) == 0)
			rep[idx[k]] = 1; /* equal tokens sort by index: later ones repeat */
}

static sp_msg_t *msg_new(sp_worker_t *w, sp_conn_t *c, const sp_frame_t *f)
{
	const sp_server_config_t *cfg = &w->srv->cfg;
	sp_msg_t *msg = sp_msg_new(w, f->n_recipients, f->blob_len);
	uint32_t ttl;

	if (!msg)
		return NULL;
	msg->sender = sp_conn_ref(c);
	ttl = (f->fields & SP_BIT(SP_F_TTL)) ? f->ttl : (uint32_t)cfg->max_ttl;
	if (ttl > cfg->max_ttl)
		ttl = (uint32_t)cfg->max_ttl;
	msg->ttl = ttl;
	msg->expires = ttl ? w->now + (uint64_t)ttl * 1000 : 0;
	msg->expires_wall = ttl ? sp_time_wall_ms() + (uint64_t)ttl * 1000 : 0;
	memcpy(msg->msg_id, f->msg_id, SP_MSG_ID_LEN);
	msg->has_priority = !!(f->fields & SP_BIT(SP_F_PRIORITY));
	msg->priority = f->priority;
	msg->collapse_len = (uint8_t)f->collapse_id_len;
	if (f->collapse_id_len)
		memcpy(msg->collapse, f->collapse_id, f->collapse_id_len);
	memcpy(msg->recipients, f->recipients, (size_t)f->n_recipients * SP_TOKEN_LEN);
	if (f->blob_len)
		memcpy(msg->blob, f->blob, f->blob_len);
	return msg;
}

static void on_send(sp_conn_t *c, const sp_frame_t *f)
{
	sp_worker_t *w = c->w;
	const sp_server_config_t *cfg = &w->srv->cfg;
	uint32_t wait;
	uint8_t *rep;
	sp_msg_t *msg;

	if (c->state == SP_CS_DRAINING) {
		refuse_all(c, f, SP_ST_SHUTDOWN, 0);
		return;
	}
	if (c->sends_outstanding >= cfg->send_window) {
		sp_metric_inc(&w->metrics, SP_M_LIMIT_HITS + SP_LIMIT_SEND_WINDOW);
		refuse_all(c, f, SP_ST_TOO_MANY_REQUESTS, 100);
		return;
	}
	if ((wait = rate_take(c, f->n_recipients)) > 0) {
		sp_metric_inc(&w->metrics, SP_M_LIMIT_HITS + SP_LIMIT_SEND_RATE);
		refuse_all(c, f, SP_ST_TOO_MANY_REQUESTS, wait);
		return;
	}
	if (f->n_recipients > (c->anon ? sp_anon_max_recipients(cfg) : cfg->max_recipients)) {
		sp_metric_inc(&w->metrics, SP_M_LIMIT_HITS + SP_LIMIT_MAX_RECIPIENTS);
		refuse_all(c, f, SP_ST_TOO_MANY_RECIPIENTS, 0);
		return;
	}
	if (f->blob_len > cfg->max_blob) {
		sp_metric_inc(&w->metrics, SP_M_LIMIT_HITS + SP_LIMIT_MAX_BLOB);
		refuse_all(c, f, SP_ST_PAYLOAD_TOO_LARGE, 0);
		return;
	}
	/* Padding buckets (PROTOCOL.md 17.6): on both doors, so receipts too. */
	if (!sp_bucket_ok(f->blob_len, (uint32_t)cfg->pad_block)) {
		sp_metric_inc(&w->metrics, SP_M_LIMIT_HITS + SP_LIMIT_PAD_BLOCK);
		refuse_all(c, f, SP_ST_BAD_SIZE, 0);
		return;
	}
	if (c->anon && !(f->fields & SP_BIT(SP_F_ACCESS_KEYS))) {
		sp_metric_add(&w->metrics, SP_M_ANON_SENDS + SP_ANON_R_DENIED, f->n_recipients);
		refuse_all(c, f, SP_ST_ACCESS_DENIED, 0); /* no key: as a wrong one (17.3) */
		return;
	}
	msg = msg_new(w, c, f);
	if (!msg) {
		refuse_all(c, f, SP_ST_INTERNAL_ERROR, 0);
		return;
	}
	c->sends_outstanding++;
	rep = (uint8_t *)(w->dedup + SP_MAX_RECIPIENTS_V1);
	find_repeats(w, msg->recipients, msg->n, rep);
	for (uint32_t i = 0; i < msg->n; i++) {
		sp_node_t *n = &msg->nodes[i];

		if (rep[i]) {
			sp_node_finish(w, n, SP_ST_BAD_DEVICE_TOKEN);
			continue;
		}
		if (c->anon) {
			sp_anon_route(w, n, f->access_keys + (size_t)i * SP_ACCESS_KEY_LEN);
			continue;
		}
		sp_metric_inc(&w->metrics, SP_M_MESSAGES_ACCEPTED);
		sp_route(w, n);
	}
}

static void on_ack(sp_conn_t *c, const sp_frame_t *f)
{
	sp_delivery_ack(c, f->msg_ids, f->n_msg_ids);
	sp_session_drain_check(c);
}

static void on_error_frame(sp_conn_t *c, const sp_frame_t *f)
{
	char q[SP_LOG_QUOTE_SIZE(SP_REASON_MAX)] = "\"\"";
	char tok[SP_TOKEN_SHORT_LEN + 1];

	sp_metric_inc(&c->w->metrics, SP_M_ERRORS_RECEIVED);
	if (f->reason_len)
		sp_log_quote(q, sizeof(q), (const char *)f->reason, f->reason_len);
	sp_token_short(c->token, tok);
	SP_LOG(SP_LOG_INFO, "client_error", "worker=%d token=%s code=%u closing=%d reason=%s",
	       c->w->id, tok, f->code, !!(f->flags & SP_ERROR_CLOSING), q);
	if (f->flags & SP_ERROR_CLOSING)
		sp_conn_close(c, SP_CLOSE_PEER, 0, NULL);
}

void sp_session_frame(sp_conn_t *c, sp_frame_t *f)
{
	sp_metric_inc(&c->w->metrics, SP_M_FRAMES_IN + sp_metric_frame_index(f->type));
	c->t_rx = c->w->now;
	if (c->state == SP_CS_AWAITING_HELLO) {
		if (f->type == SP_HELLO)
			on_hello(c, f);
		else
			fail(c, SP_ERR_UNEXPECTED_FRAME, "only HELLO may come before WELCOME", f);
		return;
	}
	if (c->state != SP_CS_READY && c->state != SP_CS_DRAINING)
		return;
	if (c->anon && f->type != SP_SEND && f->type != SP_PING && f->type != SP_PONG &&
	    f->type != SP_ERROR) {
		char why[96];

		sp_metric_inc(&c->w->metrics, SP_M_ANON_REFUSED_FRAMES);
		snprintf(why, sizeof(why), "an anonymous connection may not send %s",
		         sp_frame_type_name(f->type));
		fail(c, SP_ERR_ANONYMOUS, why, f);
		return;
	}
	switch (f->type) {
	case SP_SEND:
		on_send(c, f);
		break;
	case SP_ACK:
		on_ack(c, f);
		break;
	case SP_PING: {
		sp_frame_t pong = {
		        .type = SP_PONG, .fields = f->fields & SP_BIT(SP_F_DATA), .data = f->data};

		sp_conn_send(c, &pong);
		break;
	}
	case SP_PONG:
		break;
	case SP_SUBSCRIBE:
		sp_provider_subscribe(c, f);
		break;
	case SP_DIR_PUBLISH:
	case SP_DIR_LOOKUP:
		sp_directory_frame(c, f);
		break;
	case SP_RENEW:
		sp_enroll_renew(c, f); /* PROTOCOL.md 16.4 */
		break;
	case SP_ACCESS_SET:
		sp_anon_access_set(c, f); /* PROTOCOL.md 17.4 */
		break;
	case SP_ERROR:
		on_error_frame(c, f);
		break;
	default: {
		char why[96];

		snprintf(why, sizeof(why), "a client may not send %s", sp_frame_type_name(f->type));
		fail(c, SP_ERR_UNEXPECTED_FRAME, why, f);
		break;
	}
	}
}

void sp_session_decode_error(sp_conn_t *c, int err, const sp_frame_t *f)
{
	sp_worker_t *w = c->w;
	unsigned code = (unsigned)-err;
	char why[SP_REASON_MAX];

	if (code == SP_ERR_UNKNOWN_FRAME_TYPE && c->state >= SP_CS_READY) {
		sp_metric_inc(&w->metrics, SP_M_FRAMES_IN);
		c->t_rx = w->now;
		if (++c->errors > w->srv->cfg.max_errors) {
			sp_metric_inc(&w->metrics, SP_M_LIMIT_HITS + SP_LIMIT_MAX_ERRORS);
			fail(c, SP_ERR_TOO_MANY_ERRORS, "too many frames of unknown types", f);
			return;
		}
		sp_conn_error(c, code, false, sp_frame_strerror(err, f, why, sizeof(why)), f);
		return;
	}
	if (code == SP_ERR_UNKNOWN_FRAME_TYPE) {
		fail(c, SP_ERR_UNEXPECTED_FRAME, "only HELLO may come before WELCOME", f);
		return;
	}
	if (code == SP_ERR_FRAME_TOO_LARGE)
		sp_metric_inc(&w->metrics, SP_M_LIMIT_HITS + (c->state == SP_CS_AWAITING_HELLO
		                                                      ? SP_LIMIT_PREHELLO_FRAME
		                                                      : SP_LIMIT_MAX_FRAME));
	if (code == SP_ERR_NOMEM) {
		fail(c, SP_ERR_INTERNAL_ERROR, "out of memory", f);
		return;
	}
	fail(c, code, sp_frame_strerror(err, f, why, sizeof(why)), f);
}

void sp_session_detach(sp_conn_t *c)
{
	sp_router_unregister(c);
	sp_delivery_detach(c);
}

void sp_session_tick(sp_conn_t *c)
{
	sp_delivery_tick(c);
	sp_session_drain_check(c);
}
