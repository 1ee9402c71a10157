/*
 * sp_admin.c: the admin HTTP listener (evhttp), on the main thread's event base.
 *
 *   GET /healthz  200 while the process runs its loop.
 *   GET /readyz   200 when the listeners are up, the server is not draining, and (if a Redis
 *                 URL is configured) every worker's store is up; 503 with the reason otherwise.
 *   GET /metrics  every counter and gauge in the Prometheus text format.
 *   POST /enroll-codes?uses=N&expires=DURATION&label=TEXT
 *                 makes a one-time enrollment code (sp_enrollcode.h) in Redis, as
 *                 `sealpush-ca enroll-code` does, for an app backend: 201 with JSON
 *                 {"code", "uses", "expires_at", "label"}. The admin listener is the
 *                 operator's (bind it to localhost or a private network): whoever reaches
 *                 it can make codes.
 *
 * Whether Redis is there is the stores' answer (sp_store_up): each worker's store keeps its
 * own connection, pings it when idle and counts it down after a failed or unanswered request.
 * Readiness never looks at the admin's own Redis connection (made lazily for
 * /enroll-codes only), so it has one source of truth.
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sp_admin.h"
#include "sp_config.h"
#include "sp_enrollcode.h"
#include "sp_log.h"
#include "sp_time.h"
#include "sp_version.h"
#include "sp_worker.h"

struct sp_admin {
	sp_server_t *srv;
	struct event_base *base;
	struct evhttp *http;
	bool redis_enabled;
	redisAsyncContext *ac; /* for /enroll-codes, connected on first use */
	bool ac_up;
};

#define CODE_DEFAULT_TTL_MS (24LL * 3600 * 1000)
#define CODE_MAX_TTL_MS     (366LL * 24 * 3600 * 1000)

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *body)
{
	struct evbuffer *b = evbuffer_new();

	if (!b) {
		evhttp_send_error(req, 500, NULL);
		return;
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	                  "text/plain; charset=utf-8");
	evbuffer_add(b, body, strlen(body));
	evhttp_send_reply(req, code, reason, b);
	evbuffer_free(b);
}

static bool get_only(struct evhttp_request *req)
{
	if (evhttp_request_get_command(req) == EVHTTP_REQ_GET ||
	    evhttp_request_get_command(req) == EVHTTP_REQ_HEAD)
		return true;
	evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
	reply_text(req, 405, "Method Not Allowed", "only GET\n");
	return false;
}

static void on_healthz(struct evhttp_request *req, void *arg)
{
	(void)arg;
	if (get_only(req))
		reply_text(req, 200, "OK", "ok\n");
}

/* 1 if every worker's store is connected with its scripts loaded (or there is no store). */
static int stores_up(const sp_server_t *srv)
{
	for (int i = 0; i < srv->n_workers && srv->workers; i++)
		if (srv->workers[i].store && !sp_store_up(srv->workers[i].store))
			return 0;
	return 1;
}

/* The reason the relay is not ready, or NULL if it is. */
static const char *not_ready(const sp_admin_t *a)
{
	const sp_server_t *srv = a->srv;

	if (atomic_load(&srv->draining))
		return "not ready: draining\n";
	if (!atomic_load(&srv->listeners_up))
		return "not ready: listeners are not up\n";
	if (a->redis_enabled && !stores_up(srv))
		return "not ready: Redis is unreachable\n";
	if (srv->cfg.cluster && a->redis_enabled) {
		uint64_t at = atomic_load(&srv->cluster_announced);

		if (!at || sp_time_wall_ms() < at)
			return "not ready: the other relays do not know this one yet\n";
	}
	return NULL;
}

static void on_readyz(struct evhttp_request *req, void *arg)
{
	sp_admin_t *a = arg;
	const char *why;

	if (!get_only(req))
		return;
	why = not_ready(a);
	if (why)
		reply_text(req, 503, "Service Unavailable", why);
	else
		reply_text(req, 200, "OK", "ready\n");
}

static void on_metrics(struct evhttp_request *req, void *arg)
{
	sp_admin_t *a = arg;
	sp_server_t *srv = a->srv;
	sp_metrics_t *sets[SP_MAX_WORKERS + 1];
	size_t n = 0, len = 0;
	char *text = NULL;
	FILE *out;
	struct timespec now;
	struct evbuffer *b;

	if (!get_only(req))
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	sets[n++] = &srv->metrics;
	for (int i = 0; i < srv->n_workers && srv->workers; i++)
		sets[n++] = &srv->workers[i].metrics;
	{
		bool ready = not_ready(a) == NULL;
		const struct sp_gauge extra[] = {
		        {"sealpush_up", "1 while the relay runs.", 1},
		        {"sealpush_ready", "1 while /readyz answers 200.", ready},
		        {"sealpush_redis_up",
		         "1 while every worker's store reaches Redis (1 if no Redis is "
		         "configured).",
		         !a->redis_enabled || stores_up(srv)},
		        {"sealpush_workers", "Worker threads.", srv->n_workers},
		        {"sealpush_max_connections", "The max_connections limit.",
		         (double)srv->cfg.max_connections},
		        {"sealpush_start_time_seconds", "Start time, seconds since the epoch.",
		         (double)srv->started_ms / 1000.0},
		        {"sealpush_uptime_seconds", "Seconds since start.",
		         (double)now.tv_sec - (double)srv->started_ms / 1000.0},
		};

		out = open_memstream(&text, &len);
		if (!out) {
			evhttp_send_error(req, 500, NULL);
			return;
		}
		fprintf(out,
		        "# HELP sealpush_build_info Version of the relay.\n"
		        "# TYPE sealpush_build_info gauge\n"
		        "sealpush_build_info{version=\"%s\"} 1\n",
		        SP_VERSION);
		sp_metrics_render(out, sets, n, extra, sizeof(extra) / sizeof(extra[0]));
		fclose(out);
	}
	b = evbuffer_new();
	if (!b) {
		free(text);
		evhttp_send_error(req, 500, NULL);
		return;
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	                  "text/plain; version=0.0.4; charset=utf-8");
	evbuffer_add(b, text, len);
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
	free(text);
}

/* ---- /enroll-codes ---- */

struct code_op {
	struct evhttp_request *req; /* NULL once its connection closed */
	sp_admin_t *a;
	char code[SP_ENROLL_CODE_LEN + 1];
	long long uses;
	long long exp;
	char label[SP_ENROLL_LABEL_MAX + 1];
};

static void on_admin_redis_connect(const redisAsyncContext *ac, int status)
{
	sp_admin_t *a = ac->data;

	if (status != REDIS_OK)
		a->ac = NULL; /* hiredis frees it */
	else
		a->ac_up = true;
}

static void on_admin_redis_disconnect(const redisAsyncContext *ac, int status)
{
	sp_admin_t *a = ac->data;

	(void)status;
	a->ac = NULL;
	a->ac_up = false;
}

/* The admin's Redis connection, connecting if there is none (commands queue until it is up).
 */
static redisAsyncContext *admin_redis(sp_admin_t *a)
{
	char host[256], path[256];
	uint16_t port = 0;
	redisAsyncContext *ac;

	if (a->ac)
		return a->ac;
	if (sp_parse_redis_url(a->srv->cfg.redis, host, sizeof(host), &port, path, sizeof(path)) <
	    0)
		return NULL;
	ac = path[0] ? redisAsyncConnectUnix(path) : redisAsyncConnect(host, port);
	if (!ac || ac->err) {
		if (ac)
			redisAsyncFree(ac);
		return NULL;
	}
	ac->data = a;
	if (redisLibeventAttach(ac, a->base) != REDIS_OK) {
		redisAsyncFree(ac);
		return NULL;
	}
	redisAsyncSetConnectCallback(ac, on_admin_redis_connect);
	redisAsyncSetDisconnectCallback(ac, on_admin_redis_disconnect);
	a->ac = ac;
	return ac;
}

static void on_code_conn_close(struct evhttp_connection *conn, void *arg)
{
	struct code_op *op = arg;

	(void)conn;
	op->req = NULL;
}

static void on_code_made(redisAsyncContext *ac, void *reply, void *arg)
{
	struct code_op *op = arg;
	const redisReply *rep = reply;
	char when[32], *body = NULL;
	struct tm tm;
	time_t t = (time_t)op->exp;
	struct evbuffer *b;

	(void)ac;
	if (!op->req)
		goto out;
	evhttp_connection_set_closecb(evhttp_request_get_connection(op->req), NULL, NULL);
	if (!rep || rep->type != REDIS_REPLY_INTEGER || rep->integer != 1) {
		reply_text(op->req, 503, "Service Unavailable", "the code store is unavailable\n");
		goto out;
	}
	gmtime_r(&t, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (asprintf(&body,
	             "{\"code\":\"%s\",\"uses\":%lld,\"expires_at\":\"%s\",\"label\":\"%s\"}\n",
	             op->code, op->uses, when, op->label) < 0 ||
	    !(b = evbuffer_new())) {
		reply_text(op->req, 500, "Internal Server Error", "out of memory\n");
		goto out;
	}
	sp_metric_inc(&op->a->srv->metrics, SP_M_ENROLL_CODES_MADE);
	SP_LOG(SP_LOG_INFO, "enroll_code_made", "uses=%lld expires=%s label=\"%s\"", op->uses, when,
	       op->label);
	evhttp_add_header(evhttp_request_get_output_headers(op->req), "Content-Type",
	                  "application/json");
	evhttp_add_header(evhttp_request_get_output_headers(op->req), "Cache-Control", "no-store");
	evbuffer_add(b, body, strlen(body));
	evhttp_send_reply(op->req, 201, "Created", b);
	evbuffer_free(b);
out:
	if (body)
		OPENSSL_cleanse(body, strlen(body));
	free(body);
	OPENSSL_cleanse(op->code, sizeof(op->code));
	free(op);
}

static void on_enroll_codes(struct evhttp_request *req, void *arg)
{
	sp_admin_t *a = arg;
	struct evkeyvalq q = {0};
	const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
	const char *v;
	char key[SP_ENROLL_KEY_LEN + 1], uses[24], exp_s[24], exp_ms[24];
	int64_t ttl = CODE_DEFAULT_TTL_MS;
	struct code_op *op = NULL;
	redisAsyncContext *ac;
	struct timespec now;

	if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
		reply_text(req, 405, "Method Not Allowed", "only POST\n");
		return;
	}
	if (!a->redis_enabled) {
		reply_text(req, 404, "Not Found", "enrollment codes need a Redis (redis)\n");
		return;
	}
	op = calloc(1, sizeof(*op));
	if (!op || (query && evhttp_parse_query_str(query, &q) < 0)) {
		reply_text(req, 400, "Bad Request", "a malformed query\n");
		goto fail;
	}
	op->req = req;
	op->a = a;
	op->uses = 1;
	if ((v = evhttp_find_header(&q, "uses")) != NULL) {
		char *end;

		op->uses = strtoll(v, &end, 10);
		if (*v < '0' || *v > '9' || *end || op->uses < 1 || op->uses > SP_ENROLL_USES_MAX) {
			reply_text(req, 400, "Bad Request", "uses: 1 to 1000000\n");
			goto fail;
		}
	}
	if ((v = evhttp_find_header(&q, "expires")) != NULL &&
	    (sp_parse_duration_ms(v, &ttl) < 0 || ttl < 1000 || ttl > CODE_MAX_TTL_MS)) {
		reply_text(req, 400, "Bad Request", "expires: a duration from 1s to 366 days\n");
		goto fail;
	}
	v = evhttp_find_header(&q, "label");
	if (v && !sp_enroll_label_valid(v, strlen(v))) {
		reply_text(req, 400, "Bad Request",
		           "label: at most 64 printable ASCII characters, no '\"' or '\\'\n");
		goto fail;
	}
	snprintf(op->label, sizeof(op->label), "%s", v ? v : "");
	if (sp_enroll_code_new(op->code) < 0 ||
	    sp_enroll_code_key(op->code, strlen(op->code), key) < 0) {
		reply_text(req, 500, "Internal Server Error", "no randomness\n");
		goto fail;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	op->exp = (long long)now.tv_sec + ttl / 1000;
	snprintf(uses, sizeof(uses), "%lld", op->uses);
	snprintf(exp_s, sizeof(exp_s), "%lld", op->exp);
	snprintf(exp_ms, sizeof(exp_ms), "%lld", op->exp * 1000);
	ac = admin_redis(a);
	if (!ac || redisAsyncCommand(ac, on_code_made, op, "EVAL %s 1 %s %s %s %s %s",
	                             SP_ENROLL_CREATE_LUA, key, uses, exp_s, op->label,
	                             exp_ms) != REDIS_OK) {
		reply_text(req, 503, "Service Unavailable", "the code store is unavailable\n");
		goto fail;
	}
	evhttp_connection_set_closecb(evhttp_request_get_connection(req), on_code_conn_close, op);
	evhttp_clear_headers(&q);
	return;
fail:
	evhttp_clear_headers(&q);
	if (op)
		OPENSSL_cleanse(op->code, sizeof(op->code));
	free(op);
}

static void on_other(struct evhttp_request *req, void *arg)
{
	(void)arg;
	reply_text(req, 404, "Not Found", "try /healthz, /readyz or /metrics\n");
}

int sp_admin_start(sp_server_t *srv, struct event_base *base, sp_admin_t **out, char *err,
                   size_t errlen)
{
	sp_admin_t *a = calloc(1, sizeof(*a));

	*out = NULL;
	if (!a) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	a->srv = srv;
	a->base = base;
	a->redis_enabled = srv->cfg.redis && srv->cfg.redis[0];
	if (srv->cfg.admin_listen && srv->cfg.admin_listen[0]) {
		char host[256];
		uint16_t port;

		if (sp_parse_hostport(srv->cfg.admin_listen, host, sizeof(host), &port) < 0) {
			snprintf(err, errlen, "key \"admin_listen\": \"%s\" is not HOST:PORT",
			         srv->cfg.admin_listen);
			goto fail;
		}
		a->http = evhttp_new(base);
		if (!a->http)
			goto nomem;
		evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD |
		                                            EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
		                                            EVHTTP_REQ_DELETE);
		evhttp_set_max_headers_size(a->http, 8192);
		evhttp_set_max_body_size(a->http, 0);
		evhttp_set_timeout(a->http, 10);
		evhttp_set_cb(a->http, "/healthz", on_healthz, a);
		evhttp_set_cb(a->http, "/readyz", on_readyz, a);
		evhttp_set_cb(a->http, "/metrics", on_metrics, a);
		evhttp_set_cb(a->http, "/enroll-codes", on_enroll_codes, a);
		evhttp_set_gencb(a->http, on_other, a);
		if (!evhttp_bind_socket_with_handle(a->http, host, port)) {
			snprintf(err, errlen, "cannot listen on admin_listen %s: %s",
			         srv->cfg.admin_listen, strerror(errno));
			goto fail;
		}
	}
	*out = a;
	return 0;
nomem:
	snprintf(err, errlen, "out of memory");
fail:
	sp_admin_stop(a);
	return -1;
}

void sp_admin_stop(sp_admin_t *a)
{
	if (!a)
		return;
	/* Pending /enroll-codes answer 503 while evhttp still holds their requests. */
	if (a->ac)
		redisAsyncFree(a->ac);
	a->ac = NULL;
	if (a->http)
		evhttp_free(a->http);
	free(a);
}
