/*
 * sealpushd: the sealpush relay.
 *
 * main() loads the configuration (defaults < -c FILE < flags), checks it, builds the TLS
 * context, starts the admin listener and the workers, and then runs the main event base,
 * which handles signals and the admin HTTP server:
 *   SIGTERM, SIGINT  drain: GOAWAY to every client, finish what is in flight, exit 0 within
 *                    shutdown_grace (a second signal stops at once);
 *   SIGHUP           reload the TLS certificate, key, client CA and CRL; connections stay,
 *                    and those whose certificate the new CRL revokes are closed.
 */
#include <errno.h>
#include <event2/event.h>
#include <openssl/rand.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "sp_admin.h"
#include "sp_anon.h"
#include "sp_bucket.h"
#include "sp_config.h"
#include "sp_directory.h"
#include "sp_enroll.h"
#include "sp_frame.h"
#include "sp_log.h"
#include "sp_tls.h"
#include "sp_tlsgroup.h"
#include "sp_version.h"
#include "sp_webpush.h"
#include "sp_worker.h"

#define C sp_server_config_t

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

static const sp_option_t options[] = {
        SP_OPTION_STRING(C, listen, "0.0.0.0:7443", "address and port for device connections"),
        SP_OPTION_STRING(C, tls_cert, NULL, "server certificate chain (PEM); required"),
        SP_OPTION_STRING(C, tls_key, NULL, "server private key (PEM); required"),
        SP_OPTION_STRING(C, client_ca, NULL, "CA that issues device certificates (PEM); required"),
        SP_OPTION_STRING(C, crl, NULL, "CRL of the device CA (PEM); none if unset"),
        SP_OPTION_STRING(C, redis, "redis://127.0.0.1:6379",
                         "Redis: redis://HOST:PORT, unix:PATH or a Redis Cluster "
                         "redis-cluster://HOST:PORT,HOST:PORT...; \"\" for none"),
        SP_OPTION_STRING(
                C, admin_listen, NULL,
                "admin HTTP (/healthz /readyz /metrics), e.g. 127.0.0.1:9090; off if unset"),
        SP_OPTION_INT(C, workers, 0, 0, SP_MAX_WORKERS, "worker threads; 0 = one per core"),
        SP_OPTION_ENUM(C, log_level, SP_LOG_INFO, log_levels, "lowest level logged"),
        SP_OPTION_INT(C, max_connections, 0, 0, 10000000,
                      "open connections at most, refused at accept beyond; 0 = what the "
                      "descriptor limit allows"),
        SP_OPTION_SIZE(C, max_frame, 65536, SP_MIN_MAX_FRAME, SP_MAX_FRAME_V1,
                       "largest frame body accepted after WELCOME"),
        SP_OPTION_SIZE(C, max_blob, 16384, 1, SP_MAX_FRAME_V1, "largest blob in a SEND"),
        SP_OPTION_INT(C, max_recipients, 100, 1, SP_MAX_RECIPIENTS_V1, "recipients per SEND"),
        SP_OPTION_INT(C, window, 64, 1, 1024, "unacknowledged DELIVERs per device"),
        SP_OPTION_INT(C, send_window, 256, 1, 65535, "unanswered SENDs per connection"),
        SP_OPTION_INT(C, keepalive, 60, 1, 65535,
                      "keepalive interval in seconds, if HELLO has none"),
        SP_OPTION_INT(C, keepalive_min, 10, 1, 65535, "shortest keepalive granted, seconds"),
        SP_OPTION_INT(C, keepalive_max, 3600, 1, 65535, "longest keepalive granted, seconds"),
        SP_OPTION_DURATION(C, handshake_timeout, 10000, 100, 300000,
                           "time allowed for the TLS handshake"),
        SP_OPTION_INT(C, max_handshakes, 64, 0, 1000000,
                      "TLS handshakes in flight per worker; connections accepted beyond wait "
                      "(at most handshake_timeout) for one to end; 0 = unlimited"),
        SP_OPTION_DURATION(C, hello_timeout, 10000, 100, 300000,
                           "time allowed for HELLO after TLS"),
        SP_OPTION_DURATION(C, ack_timeout, 30000, 100, 3600000,
                           "time a device has to ACK before its message counts as undelivered"),
        SP_OPTION_DURATION(C, shutdown_grace, 10000, 0, 600000,
                           "time a drain may take before connections are cut"),
        SP_OPTION_SIZE(C, output_buffer_max, 1 << 20, 16384, (int64_t)1 << 30,
                       "output buffered for one connection before it is closed as a slow reader"),
        SP_OPTION_INT(C, send_rate, 10000, 0, 100000000,
                      "messages per second per connection (recipients count); 0 = unlimited"),
        SP_OPTION_INT(C, send_burst, 0, 0, 100000000, "send_rate burst; 0 = one second's worth"),
        SP_OPTION_INT(C, max_errors, 16, 0, 65535,
                      "non-fatal errors (unknown frame types) before a connection is closed"),
        SP_OPTION_INT(C, max_ttl, 2592000, 0, 315360000, "longest message ttl in seconds"),
        SP_OPTION_INT(C, max_queue, 1000, 1, 10000000, "messages queued per offline device"),
        SP_OPTION_SIZE(C, max_queue_bytes, 4 << 20, 1024, (int64_t)1 << 32,
                       "bytes queued per offline device"),
        SP_OPTION_DURATION(C, store_timeout, 2000, 10, 60000,
                           "time a Redis request may take before senders get TRY_LATER"),
        SP_OPTION_INT(C, wait_replicas, 0, 0, 100,
                      "> 0: answer QUEUED only once this many Redis replicas have the message"),
        SP_OPTION_DURATION(C, wait_timeout, 1000, 1, 60000, "time to wait for those replicas"),
        SP_OPTION_INT(C, store_batch, 64, 1, SP_STORE_MAX_BATCH,
                      "most messages for one device written to Redis in one request"),
        SP_OPTION_INT(C, drain_page, 100, 1, SP_STORE_MAX_FETCH,
                      "messages read from Redis per page when a device drains its queue"),
        SP_OPTION_INT(C, tls_session_cache, 0, 0, 10000000,
                      "sessions kept for resumption (stateful tickets); 0 = stateless tickets"),
        SP_OPTION_STRING(C, tls_groups, "",
                         "TLS key-exchange groups, OpenSSL syntax; empty = " SP_TLS_GROUPS_DEFAULT),
        SP_OPTION_INT(C, backlog, 1024, 1, 65535, "listen backlog per worker"),
        SP_OPTION_BOOL(C, cluster, false,
                       "several relays share this Redis (or Redis Cluster): presence, "
                       "forwarding between nodes, takeovers"),
        SP_OPTION_DURATION(C, cluster_lease, 3000, 300, 600000,
                           "a node whose lease is not renewed for this long counts as dead"),
        SP_OPTION_STRING(C, node_name, "", "this node's name in the node table; empty = host name"),
        SP_OPTION_STRING(C, provider_listen, NULL,
                         "Web Push provider door (HTTPS, HTTP/2 and HTTP/1.1), e.g. "
                         "0.0.0.0:8443; off if unset"),
        SP_OPTION_STRING(C, provider_origin, NULL,
                         "the door's origin as app servers reach it (VAPID aud, push resource "
                         "URLs), e.g. https://push.example.org; derived from provider_listen "
                         "if unset"),
        SP_OPTION_INT(C, provider_max_connections, 1000, 1, 10000000,
                      "provider connections at most, all workers; refused at accept beyond"),
        SP_OPTION_INT(C, provider_max_streams, 100, 1, 100000,
                      "concurrent requests (HTTP/2 streams) per provider connection"),
        SP_OPTION_SIZE(C, provider_max_header, 8192, 1024, 1 << 20,
                       "header bytes of one provider request"),
        SP_OPTION_SIZE(C, provider_max_body, 4096, 4096, 1 << 24,
                       "body bytes of one push message (at least 4096, RFC 8030)"),
        SP_OPTION_DURATION(C, provider_request_timeout, 10000, 100, 600000,
                           "time a provider request may take to send its headers and body"),
        SP_OPTION_DURATION(C, provider_idle_timeout, 120000, 100, 3600000,
                           "time a provider connection may stay without requests"),
        SP_OPTION_BOOL(C, provider_require_key, false,
                       "refuse Web Push subscriptions without an application server key"),
        SP_OPTION_STRING(C, directory_log_key, NULL,
                         "key directory (PROTOCOL.md 15): the P-256 private key (PEM) that signs "
                         "the transparency log's heads; off if unset (needs redis)"),
        SP_OPTION_STRING(C, directory_handle_pattern, "",
                         "POSIX extended regex every published handle must match; empty = any "
                         "valid handle"),
        SP_OPTION_INT(C, directory_lookup_limit, 60, 0, 100000000,
                      "directory lookups (and head requests) per device per window, counted "
                      "in Redis over all relays; 0 = unlimited"),
        SP_OPTION_DURATION(C, directory_lookup_window, 60000, 1000, 86400000,
                           "the window of directory_lookup_limit"),
        SP_OPTION_INT(C, directory_max_queue, 1024, 1, 1000000,
                      "directory changes waiting for the log, per worker; more get TRY_LATER"),
        SP_OPTION_INT(C, provider_max_subscriptions, 256, 1, 4096,
                      "Web Push subscriptions a device may hold; a SUBSCRIBE past it is "
                      "refused (QUOTA_EXCEEDED)"),
        SP_OPTION_INT(C, provider_cache_entries, 4096, 0, 1 << 24,
                      "capability records each worker keeps, so a busy subscription is not "
                      "read from Redis at every push; 0 = read every time"),
        SP_OPTION_DURATION(C, provider_cache_ttl, 2000, 1, 3600000,
                           "how long a cached capability record is used: a subscription "
                           "removed through another relay is refused here this much later at "
                           "most (through this relay: at once)"),
        SP_OPTION_STRING(C, enroll_ca_cert, NULL,
                         "intermediate CA (PEM, sealpush-ca intermediate) that signs devices "
                         "enrolling at POST /enroll on the provider door and renewing; off "
                         "if unset"),
        SP_OPTION_STRING(C, enroll_ca_key, NULL, "the key of enroll_ca_cert (PEM)"),
        SP_OPTION_INT(C, enroll_cert_days, 90, 1, 825,
                      "lifetime of an enrolled or renewed device certificate, days"),
        SP_OPTION_INT(C, enroll_rate_per_addr, 10, 1, 1000000,
                      "enrollments per source address per minute (all relays sharing Redis)"),
        SP_OPTION_INT(C, enroll_rate_per_code, 60, 1, 1000000,
                      "enrollments per code per minute (a code for many devices)"),
        SP_OPTION_DURATION(C, renew_min_interval, 60000, 0, 86400000,
                           "time between two renewals on one device connection"),
        SP_OPTION_STRING(C, anon_listen, NULL,
                         "sealed sender (PROTOCOL.md 17): address and port of the anonymous "
                         "door, TLS without a client certificate, where SENDs carry access "
                         "keys instead of an identity; off if unset (needs redis)"),
        SP_OPTION_INT(C, anon_key_rate, 600, 0, 100000000,
                      "anonymous messages accepted per access key per anon_rate_window, all "
                      "relays; 0 = unlimited"),
        SP_OPTION_INT(C, anon_recipient_rate, 1200, 0, 100000000,
                      "anonymous messages accepted per recipient per anon_rate_window, all "
                      "relays; 0 = unlimited"),
        SP_OPTION_DURATION(C, anon_rate_window, 60000, 1000, 86400000,
                           "the window of anon_key_rate and anon_recipient_rate"),
        SP_OPTION_INT(C, anon_max_keys, 4, 1, SP_ACCESS_SET_MAX,
                      "access-key verifiers one device may register (ACCESS_SET)"),
        SP_OPTION_INT(C, pad_block, 0, 0, SP_BUCKET_BLOCK_MAX,
                      "SEND blobs (messages and receipts, both doors) must be 51 + k * "
                      "pad_block bytes long, the sealer's padding buckets (PROTOCOL.md 13.1); "
                      "others are answered BAD_SIZE; 0 = any length (256: the clients' default)"),
        SP_OPTION_INT(C, anon_cache_entries, 4096, 0, 1048576,
                      "anonymous door: recipients (switch, verifiers, rate counts) cached per "
                      "worker; 0 = off (one Redis script per recipient)"),
        SP_OPTION_DURATION(C, anon_cache_ttl, 2000, 0, 600000,
                           "how long a cached recipient is used: an ACCESS_SET made through "
                           "another relay takes effect here within it; 0 = no cache"),
        SP_OPTION_DURATION(C, anon_flush_interval, 100, 0, 60000,
                           "how often the rate counts accepted by a worker are added in Redis "
                           "(the delay before other workers and relays see them)"),
        SP_OPTION_ACTION(C, help, 'h', "show this help and exit"),
        SP_OPTION_ACTION(C, version, 0, "show the version and exit"),
        SP_OPTION_ACTION(
                C, check_config, 0,
                "check the configuration and the TLS files, print the effective config, exit"),
};

#define N_OPTIONS (sizeof(options) / sizeof(options[0]))

struct main_state {
	sp_server_t *srv;
	struct event_base *base;
	struct event *ev_drain;
	uint64_t drain_started;
	bool stop_sent;
};

static void usage(FILE *out)
{
	fprintf(out, "usage: sealpushd [-c FILE] [--OPTION VALUE]...\n\n"
	             "The sealpush relay. Every option can be a key of the JSON config file\n"
	             "(-c FILE) or a flag; a flag wins over the file.\n\n");
	sp_config_usage(out, options, N_OPTIONS);
	fprintf(out,
	        "\nSignals: SIGTERM/SIGINT drain and exit, SIGHUP reloads certificates and CRL.\n"
	        "Exit status: 0 after a drain (or --check-config OK), 1 on a configuration or\n"
	        "start-up error (the message names the key or file).\n");
}

/* Resolves the HOST:PORT of option `key` (value text) into *addr. */
static int resolve_addr(const char *key, const char *text, struct sockaddr_storage *addr,
                        int *addrlen, char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
	                         .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	char host[256], port_s[8];
	uint16_t port;
	int r;

	if (!text || sp_parse_hostport(text, host, sizeof(host), &port) < 0) {
		snprintf(err, errlen, "key \"%s\": \"%s\" is not HOST:PORT", key, text ? text : "");
		return -1;
	}
	snprintf(port_s, sizeof(port_s), "%u", port);
	r = getaddrinfo(host, port_s, &hints, &res);
	if (r != 0 || !res) {
		snprintf(err, errlen, "key \"%s\": cannot resolve \"%s\": %s", key, host,
		         gai_strerror(r));
		return -1;
	}
	memcpy(addr, res->ai_addr, res->ai_addrlen);
	*addrlen = (int)res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

static int resolve_listen(sp_server_t *srv, char *err, size_t errlen)
{
	if (resolve_addr("listen", srv->cfg.listen, &srv->listen_addr, &srv->listen_addrlen, err,
	                 errlen) < 0)
		return -1;
	if (sp_anon_enabled(srv) &&
	    resolve_addr("anon_listen", srv->cfg.anon_listen, &srv->anon_addr, &srv->anon_addrlen,
	                 err, errlen) < 0)
		return -1;
	return 0;
}

static int check_config(sp_server_t *srv, char *err, size_t errlen)
{
	sp_server_config_t *cfg = &srv->cfg;
	int64_t need = cfg->max_blob + (int64_t)SP_TOKEN_LEN * cfg->max_recipients + 128;

	if (!cfg->tls_cert || !cfg->tls_key || !cfg->client_ca) {
		snprintf(err, errlen, "key \"%s\" is required",
		         !cfg->tls_cert  ? "tls_cert"
		         : !cfg->tls_key ? "tls_key"
		                         : "client_ca");
		return -1;
	}
	if (cfg->max_frame < need) {
		snprintf(err, errlen,
		         "key \"max_frame\": %lld is too small for a SEND of max_recipients (%lld) "
		         "and max_blob (%lld): it must be at least %lld",
		         (long long)cfg->max_frame, (long long)cfg->max_recipients,
		         (long long)cfg->max_blob, (long long)need);
		return -1;
	}
	if (cfg->keepalive_min > cfg->keepalive_max || cfg->keepalive < cfg->keepalive_min ||
	    cfg->keepalive > cfg->keepalive_max) {
		snprintf(err, errlen,
		         "keys \"keepalive_min\" <= \"keepalive\" <= \"keepalive_max\" must hold "
		         "(%lld, %lld, %lld)",
		         (long long)cfg->keepalive_min, (long long)cfg->keepalive,
		         (long long)cfg->keepalive_max);
		return -1;
	}
	if (cfg->cluster && (!cfg->redis || !cfg->redis[0])) {
		snprintf(err, errlen,
		         "key \"cluster\": the nodes of a cluster share a Redis; "
		         "\"redis\" must be set");
		return -1;
	}
	if (cfg->cluster && cfg->cluster_lease < 3 * cfg->store_timeout / 2) {
		snprintf(err, errlen,
		         "key \"cluster_lease\" (%lld ms) must be at least 1.5 times "
		         "\"store_timeout\" (%lld ms), or a slow Redis ends every lease",
		         (long long)cfg->cluster_lease, (long long)cfg->store_timeout);
		return -1;
	}
	if (cfg->provider_listen && cfg->provider_listen[0] &&
	    cfg->provider_max_body + SP_WP_BLOB_HEADER > cfg->max_blob) {
		snprintf(err, errlen,
		         "key \"max_blob\": %lld is too small for provider_max_body (%lld) and the "
		         "%d bytes of the Web Push wrapper",
		         (long long)cfg->max_blob, (long long)cfg->provider_max_body,
		         SP_WP_BLOB_HEADER);
		return -1;
	}
	if (resolve_listen(srv, err, errlen) < 0)
		return -1;
	srv->n_workers = (int)cfg->workers;
	if (srv->n_workers == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		srv->n_workers = n < 1 ? 1 : n > SP_MAX_WORKERS ? SP_MAX_WORKERS : (int)n;
	}
	return 0;
}

/* Raises the descriptor limit as far as allowed and keeps max_connections inside it. */
static void fit_descriptors(sp_server_t *srv)
{
	struct rlimit rl;
	int64_t reserve = 64 + 4 * (int64_t)srv->n_workers;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur == RLIM_INFINITY) {
		if (srv->cfg.max_connections == 0)
			srv->cfg.max_connections = 10000000;
		return;
	}
	if (srv->cfg.max_connections == 0) {
		int64_t fit = (int64_t)rl.rlim_cur - reserve;

		srv->cfg.max_connections = fit < 1 ? 1 : fit;
		return;
	}
	if ((int64_t)rl.rlim_cur - reserve < srv->cfg.max_connections) {
		int64_t fit = (int64_t)rl.rlim_cur - reserve;

		if (fit < 1)
			fit = 1;
		SP_LOG(SP_LOG_WARN, "max_connections_lowered",
		       "configured=%lld now=%lld nofile=%llu msg=\"raise the descriptor limit "
		       "(LimitNOFILE, ulimit -n) to allow more\"",
		       (long long)srv->cfg.max_connections, (long long)fit,
		       (unsigned long long)rl.rlim_cur);
		srv->cfg.max_connections = fit;
	}
}

static void on_drain_timer(evutil_socket_t fd, short what, void *arg)
{
	struct main_state *ms = arg;
	sp_server_t *srv = ms->srv;

	(void)fd;
	(void)what;
	if (atomic_load(&srv->workers_done) == srv->n_workers) {
		event_base_loopbreak(ms->base);
		return;
	}
	if (!ms->stop_sent) {
		/* All drained at once: nothing is in flight between them any more (a node in
		 * transit belongs to a message whose owner is not drained), so they may all stop.
		 */
		int drained = 0;

		for (int i = 0; i < srv->n_workers; i++)
			drained += atomic_load_explicit(&srv->workers[i].drained,
			                                memory_order_relaxed);
		if (drained == srv->n_workers) {
			sp_workers_signal(srv, SP_WF_STOP);
			ms->stop_sent = true;
			return;
		}
	}
	if (!ms->stop_sent &&
	    sp_now_ms() - ms->drain_started > (uint64_t)srv->cfg.shutdown_grace + 3000) {
		SP_LOG(SP_LOG_WARN, "drain_overdue", "msg=\"stopping workers\"");
		sp_workers_signal(srv, SP_WF_STOP);
		ms->stop_sent = true;
	}
}

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
	struct main_state *ms = arg;
	sp_server_t *srv = ms->srv;
	struct timeval tv = {0, 100000};

	(void)what;
	if (atomic_load(&srv->draining)) {
		SP_LOG(SP_LOG_WARN, "stop_now", "signal=%d msg=\"second signal: stopping now\"",
		       (int)sig);
		sp_workers_signal(srv, SP_WF_STOP);
		ms->stop_sent = true;
		return;
	}
	SP_LOG(SP_LOG_INFO, "draining", "signal=%d grace_ms=%lld", (int)sig,
	       (long long)srv->cfg.shutdown_grace);
	atomic_store(&srv->draining, true);
	atomic_store(&srv->listeners_up, false);
	ms->drain_started = sp_now_ms();
	sp_workers_signal(srv, SP_WF_DRAIN);
	ms->ev_drain = event_new(ms->base, -1, EV_PERSIST, on_drain_timer, ms);
	if (ms->ev_drain)
		event_add(ms->ev_drain, &tv);
	else
		event_base_loopbreak(ms->base);
}

static void on_hup(evutil_socket_t sig, short what, void *arg)
{
	struct main_state *ms = arg;
	sp_server_t *srv = ms->srv;
	char err[512];

	(void)sig;
	(void)what;
	if (sp_tls_reload(srv, err, sizeof(err)) < 0) {
		sp_metric_inc(&srv->metrics, SP_M_RELOADS_FAILED);
		SP_LOG(SP_LOG_ERROR, "reload_failed",
		       "msg=\"%s; keeping the previous certificates\"", err);
		return;
	}
	sp_metric_inc(&srv->metrics, SP_M_RELOADS_OK);
	sp_enroll_reload(srv);
	SP_LOG(SP_LOG_INFO, "reloaded", "crl=%s", srv->cfg.crl && srv->cfg.crl[0] ? "yes" : "no");
	sp_workers_signal(srv, SP_WF_RELOAD | (srv->cfg.cluster ? SP_WF_PUBLISH : 0));
}

int main(int argc, char **argv)
{
	static sp_server_t srv;
	struct main_state ms = {.srv = &srv};
	struct event *sigs[4] = {NULL};
	sp_admin_t *admin = NULL;
	struct timespec now;
	char err[512];
	int rc, status = 1;

	rc = sp_config_load(options, N_OPTIONS, &srv.cfg, argc, argv, NULL, err, sizeof(err));
	if (srv.cfg.help) {
		usage(stdout);
		sp_config_free(options, N_OPTIONS, &srv.cfg);
		return 0;
	}
	if (srv.cfg.version) {
		printf("sealpushd %s (protocol %s; OpenSSL %s; features: %s)\n", SP_VERSION,
		       SP_ALPN, sp_tls_library_version(), SP_FEATURES[0] ? SP_FEATURES : "none");
		sp_config_free(options, N_OPTIONS, &srv.cfg);
		return 0;
	}
	if (rc < 0) {
		fprintf(stderr, "sealpushd: %s (see sealpushd --help)\n", err);
		sp_config_free(options, N_OPTIONS, &srv.cfg);
		return 1;
	}
	sp_log_set_level(srv.cfg.log_level);
	if (check_config(&srv, err, sizeof(err)) < 0) {
		fprintf(stderr, "sealpushd: %s\n", err);
		goto out_cfg;
	}
	if (sp_tls_start(&srv, err, sizeof(err)) < 0) {
		fprintf(stderr, "sealpushd: %s\n", err);
		goto out_cfg;
	}
	if (sp_directory_setup(&srv, err, sizeof(err)) < 0 ||
	    sp_anon_setup(&srv, err, sizeof(err)) < 0 ||
	    sp_enroll_start(&srv, err, sizeof(err)) < 0) {
		fprintf(stderr, "sealpushd: %s\n", err);
		goto out_tls;
	}
	if (srv.cfg.check_config) {
		sp_config_dump_json(options, N_OPTIONS, &srv.cfg, stdout);
		fprintf(stderr, "sealpushd: configuration OK\n");
		status = 0;
		goto out_tls;
	}

	signal(SIGPIPE, SIG_IGN);
	fit_descriptors(&srv);
	clock_gettime(CLOCK_REALTIME, &now);
	srv.started_ms = (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
	sp_registry_init(&srv.registry);
	if (RAND_bytes((unsigned char *)&srv.incarnation, sizeof(srv.incarnation)) != 1) {
		fprintf(stderr, "sealpushd: no randomness for the incarnation\n");
		goto out_registry;
	}
	if (srv.cfg.node_name && srv.cfg.node_name[0])
		snprintf(srv.node_name, sizeof(srv.node_name), "%s", srv.cfg.node_name);
	else if (gethostname(srv.node_name, sizeof(srv.node_name) - 1) < 0)
		strcpy(srv.node_name, "unknown");
	for (char *p = srv.node_name; *p; p++)
		if (*p <= ' ' || *p > '~')
			*p = '_';
	ms.base = event_base_new();
	if (!ms.base) {
		fprintf(stderr, "sealpushd: cannot create the event base\n");
		goto out_registry;
	}
	sigs[0] = evsignal_new(ms.base, SIGTERM, on_stop_signal, &ms);
	sigs[1] = evsignal_new(ms.base, SIGINT, on_stop_signal, &ms);
	sigs[2] = evsignal_new(ms.base, SIGHUP, on_hup, &ms);
	for (int i = 0; i < 3; i++)
		if (!sigs[i] || event_add(sigs[i], NULL) < 0) {
			fprintf(stderr, "sealpushd: cannot install signal handlers\n");
			goto out_base;
		}
	if (sp_admin_start(&srv, ms.base, &admin, err, sizeof(err)) < 0) {
		fprintf(stderr, "sealpushd: %s\n", err);
		goto out_base;
	}
	if (sp_workers_start(&srv, err, sizeof(err)) < 0) {
		fprintf(stderr, "sealpushd: %s\n", err);
		goto out_workers;
	}
	SP_LOG(SP_LOG_INFO, "ready",
	       "version=%s listen=%s workers=%d admin=%s redis=%s crl=%s "
	       "max_connections=%lld cluster=%s incarnation=%016llx node=%s",
	       SP_VERSION, srv.cfg.listen, srv.n_workers,
	       srv.cfg.admin_listen ? srv.cfg.admin_listen : "off",
	       srv.cfg.redis && srv.cfg.redis[0] ? srv.cfg.redis : "none",
	       srv.cfg.crl ? srv.cfg.crl : "none", (long long)srv.cfg.max_connections,
	       srv.cfg.cluster ? "on" : "off", (unsigned long long)srv.incarnation, srv.node_name);
	event_base_dispatch(ms.base);
	status = 0;
out_workers:
	sp_workers_signal(&srv, SP_WF_STOP);
	sp_workers_join(&srv);
	sp_admin_stop(admin);
	if (status == 0)
		SP_LOG(SP_LOG_INFO, "stopped", "msg=\"bye\"");
out_base:
	for (int i = 0; i < 3; i++)
		if (sigs[i])
			event_free(sigs[i]);
	if (ms.ev_drain)
		event_free(ms.ev_drain);
	event_base_free(ms.base);
out_registry:
	sp_registry_destroy(&srv.registry);
out_tls:
	sp_directory_teardown(&srv);
	sp_enroll_stop(&srv);
	sp_tls_stop(&srv);
out_cfg:
	sp_config_free(options, N_OPTIONS, &srv.cfg);
	return status;
}
