/*
 * sp_admin.c: the admin HTTP listener (evhttp), on the main thread's event base.
 *
 *   GET /healthz  200 while the process runs its loop.
 *   GET /readyz   200 when the listeners are up, the server is not draining, and (if a Redis
 *                 URL is configured) every worker's store is up; 503 with the reason otherwise.
 *   GET /metrics  every counter and gauge in the Prometheus text format.
 *
 * Whether Redis is there is the stores' answer (sp_store_up): each worker's store keeps its
 * own connection, pings it when idle and counts it down after a failed or unanswered request.
 * The admin has no Redis connection of its own, so readiness has one source of truth.
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sp_admin.h"
#include "sp_config.h"
#include "sp_log.h"
#include "sp_time.h"
#include "sp_version.h"
#include "sp_worker.h"

struct sp_admin {
	sp_server_t *srv;
	struct event_base *base;
	struct evhttp *http;
	bool redis_enabled;
};

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
	if (a->http)
		evhttp_free(a->http);
	free(a);
}
