#include "sp_metrics.h"

#include "sp_frame.h"

#include <string.h>

static const char *const close_labels[SP_CLOSE_REASON_COUNT] = {
        "peer",         "handshake",     "protocol_error",  "hello_timeout",
        "idle_timeout", "slow_consumer", "too_many_errors", "replaced",
        "revoked",      "shutdown",      "internal",
};

static const char *const handshake_labels[SP_HS_CAUSE_COUNT] = {
        "no_cert", "unknown_ca", "expired", "revoked", "bad_cert",
        "no_alpn", "protocol",   "timeout", "other",
};

static const char *const group_labels[SP_TG_COUNT] = {
        "X25519MLKEM768",
        "X25519",
        "P-256",
        "other",
};

static const char *const limit_labels[SP_LIMIT_COUNT] = {
        "max_connections", "file_descriptors", "max_frame",         "prehello_frame",
        "max_blob",        "max_recipients",   "send_window",       "send_rate",
        "output_buffer",   "max_errors",       "handshake_timeout", "hello_timeout",
        "idle_timeout",    "ack_timeout",      "max_handshakes",    "pad_block",
};

static const char *const state_labels[SP_STATE_COUNT] = {
        "handshake", "awaiting_hello", "ready", "draining", "closing",
};

static const uint8_t status_values[SP_STATUS_LABELS] = {
        SP_ST_DELIVERED,           SP_ST_QUEUED,
        SP_ST_BAD_DEVICE_TOKEN,    SP_ST_PAYLOAD_TOO_LARGE,
        SP_ST_TOO_MANY_RECIPIENTS, SP_ST_TOO_MANY_REQUESTS,
        SP_ST_QUOTA_EXCEEDED,      SP_ST_EXPIRED,
        SP_ST_DEVICE_OFFLINE,      SP_ST_FORBIDDEN,
        SP_ST_TRY_LATER,           SP_ST_SHUTDOWN,
        SP_ST_ACCESS_DENIED,       SP_ST_BAD_SIZE,
        SP_ST_INTERNAL_ERROR,
};

/* Types and codes reserved for other features (no name yet) count as unknown / internal and
 * are not rendered, so every rendered label is a name. */
unsigned sp_metric_frame_index(unsigned type)
{
	return type >= 1 && type <= SP_FRAME_TYPE_MAX && strcmp(sp_frame_type_name(type), "?") != 0
	               ? type
	               : 0;
}

unsigned sp_metric_status_index(unsigned status)
{
	for (unsigned i = 0; i < SP_STATUS_LABELS; i++)
		if (status_values[i] == status)
			return i;
	return SP_STATUS_LABELS - 1; /* unknown statuses count as internal errors */
}

unsigned sp_metric_error_index(unsigned code)
{
	return code >= 1 && code <= SP_ERROR_LABELS && strcmp(sp_error_name(code), "?") != 0
	               ? code - 1
	               : SP_ERR_INTERNAL_ERROR - 1;
}

int64_t sp_metrics_sum(sp_metrics_t *const *sets, size_t n, unsigned i)
{
	uint64_t sum = 0;

	for (size_t k = 0; k < n; k++)
		sum += atomic_load_explicit(&sets[k]->v[i], memory_order_relaxed);
	return (int64_t)sum;
}

enum label_kind { L_NONE, L_TABLE, L_FRAME, L_STATUS, L_ERROR };

struct family {
	const char *name;
	const char *type;
	const char *help;
	unsigned base;
	unsigned count;
	const char *label;
	uint8_t kind;
	const char *const *values;
};

#define ONE(n, t, h, b)                                                                            \
	{                                                                                          \
		n, t, h, b, 1, NULL, L_NONE, NULL                                                  \
	}

static const struct family families[] = {
        ONE("sealpush_connections_accepted_total", "counter", "TCP connections accepted.",
            SP_M_CONN_ACCEPTED),
        {"sealpush_connections_refused_total", "counter",
         "Connections refused before TLS, by reason.", SP_M_CONN_REFUSED_MAX, 4, "reason", L_TABLE,
         (const char *const[]){"max_connections", "file_descriptors", "draining",
                               "handshake_wait"}},
        {"sealpush_connections_closed_total", "counter", "Connections closed, by reason.",
         SP_M_CONN_CLOSED, SP_CLOSE_REASON_COUNT, "reason", L_TABLE, close_labels},
        {"sealpush_connections", "gauge", "Open connections, by state.", SP_M_CONNECTIONS,
         SP_STATE_COUNT, "state", L_TABLE, state_labels},
        ONE("sealpush_devices_connected", "gauge",
            "Devices with a registered receiving connection.", SP_M_DEVICES),
        ONE("sealpush_handshakes_total", "counter", "Completed mTLS handshakes.",
            SP_M_HANDSHAKE_OK),
        ONE("sealpush_handshakes_resumed_total", "counter",
            "Completed mTLS handshakes that resumed a session.", SP_M_HANDSHAKE_RESUMED),
        {"sealpush_handshakes_by_group_total", "counter",
         "Completed mTLS handshakes, by key-exchange group.", SP_M_HANDSHAKE_GROUP, SP_TG_COUNT,
         "group", L_TABLE, group_labels},
        {"sealpush_handshake_failures_total", "counter", "Failed TLS handshakes, by cause.",
         SP_M_HANDSHAKE_FAIL, SP_HS_CAUSE_COUNT, "cause", L_TABLE, handshake_labels},
        ONE("sealpush_handshakes_deferred_total", "counter",
            "Accepted connections that waited for a handshake slot (max_handshakes per worker).",
            SP_M_HANDSHAKE_DEFERRED),
        ONE("sealpush_handshakes_waiting", "gauge",
            "Accepted connections waiting for a handshake slot.", SP_M_HANDSHAKE_WAITING),
        ONE("sealpush_handshakes_in_flight", "gauge", "TLS handshakes running.",
            SP_M_HANDSHAKE_IN_FLIGHT),
        {"sealpush_frames_received_total", "counter", "Frames received, by type.", SP_M_FRAMES_IN,
         SP_FRAME_LABELS, "type", L_FRAME, NULL},
        {"sealpush_frames_sent_total", "counter", "Frames sent, by type.", SP_M_FRAMES_OUT,
         SP_FRAME_LABELS, "type", L_FRAME, NULL},
        {"sealpush_errors_sent_total", "counter", "ERROR and GOAWAY frames sent, by code.",
         SP_M_ERRORS_SENT, SP_ERROR_LABELS, "code", L_ERROR, NULL},
        ONE("sealpush_errors_received_total", "counter", "ERROR frames received from clients.",
            SP_M_ERRORS_RECEIVED),
        {"sealpush_send_results_total", "counter", "Per-recipient SEND results, by status.",
         SP_M_SEND_RESULTS, SP_STATUS_LABELS, "status", L_STATUS, NULL},
        {"sealpush_limit_hits_total", "counter", "Times a configured limit was hit, by limit.",
         SP_M_LIMIT_HITS, SP_LIMIT_COUNT, "limit", L_TABLE, limit_labels},
        ONE("sealpush_received_bytes_total", "counter", "Bytes received inside TLS.",
            SP_M_BYTES_IN),
        ONE("sealpush_sent_bytes_total", "counter", "Bytes sent inside TLS.", SP_M_BYTES_OUT),
        ONE("sealpush_messages_accepted_total", "counter",
            "Recipients of accepted SENDs routed to a device or refused after routing.",
            SP_M_MESSAGES_ACCEPTED),
        ONE("sealpush_deliveries_local_total", "counter",
            "Messages routed to a recipient on the sender's worker.", SP_M_DELIVERIES_LOCAL),
        ONE("sealpush_deliveries_remote_total", "counter",
            "Messages handed to another worker for their recipient.", SP_M_DELIVERIES_REMOTE),
        ONE("sealpush_cluster_lookups_total", "counter",
            "Presence reads for devices not connected to this relay.", SP_M_CLUSTER_LOOKUPS),
        ONE("sealpush_cluster_forwarded_total", "counter",
            "Messages forwarded to the relay their device is connected to.",
            SP_M_CLUSTER_FORWARDED),
        ONE("sealpush_cluster_received_total", "counter",
            "Messages forwarded to this relay by another one.", SP_M_CLUSTER_RECEIVED),
        ONE("sealpush_cluster_results_total", "counter",
            "Answers received from other relays for forwarded messages.", SP_M_CLUSTER_RESULTS),
        ONE("sealpush_cluster_fallbacks_total", "counter",
            "Forwarded messages that got no answer (lease ended, timeout, inbox write failed) "
            "and were stored by this relay.",
            SP_M_CLUSTER_FALLBACKS),
        ONE("sealpush_cluster_takeovers_total", "counter",
            "Devices taken over from their connection on another relay (GOAWAY replaced there).",
            SP_M_CLUSTER_TAKEOVERS),
        ONE("sealpush_cluster_kicks_total", "counter",
            "Queue kicks sent to the relay a device is connected to.", SP_M_CLUSTER_KICKS),
        ONE("sealpush_cluster_bad_records_total", "counter",
            "Inbox records from other relays that did not parse.", SP_M_CLUSTER_BAD_RECORDS),
        ONE("sealpush_cluster_nodes", "gauge", "Live relays in the cluster, this one included.",
            SP_M_CLUSTER_NODES),
        ONE("sealpush_cluster_crls_installed_total", "counter",
            "CRLs another relay published (after its reload) and this one installed.",
            SP_M_CLUSTER_CRLS),
        ONE("sealpush_cluster_lease_lapses_total", "counter",
            "Times this relay renewed its lease after it had run out (paused, or Redis gone "
            "longer than the lease); each is followed by a presence re-check of every "
            "connected device.",
            SP_M_CLUSTER_LAPSES),
        ONE("sealpush_cluster_rechecks_total", "counter",
            "Connected devices whose presence was re-checked after a lease lapse.",
            SP_M_CLUSTER_RECHECKS),
        ONE("sealpush_cluster_control_retries_total", "counter",
            "Queue kicks and replacements for another relay tried again because their inbox "
            "write or the presence read before it failed (a failover of a Redis master).",
            SP_M_CLUSTER_CTL_RETRIES),
        ONE("sealpush_cluster_control_dropped_total", "counter",
            "Queue kicks and replacements given up: their relay's lease ended, the presence "
            "stayed unreadable, or the retry list was full.",
            SP_M_CLUSTER_CTL_DROPPED),
        ONE("sealpush_redeliveries_total", "counter",
            "Unacknowledged messages routed again after their connection ended.",
            SP_M_REDELIVERIES),
        ONE("sealpush_acks_unknown_total", "counter",
            "Acknowledged message ids that were not outstanding.", SP_M_ACKS_UNKNOWN),
        ONE("sealpush_queue_delivered_total", "counter",
            "Stored messages delivered and acknowledged (then removed from Redis).",
            SP_M_QUEUE_DELIVERED),
        ONE("sealpush_queue_fetched_total", "counter",
            "Stored messages read from Redis for delivery.", SP_M_QUEUE_FETCHED),
        ONE("sealpush_queue_depth_samples_total", "counter",
            "Devices whose queue depth was sampled as they connected.", SP_M_QUEUE_DEPTH_SAMPLES),
        ONE("sealpush_queue_depth_messages_total", "counter",
            "Messages queued for those devices as they connected (sum; divide by the count).",
            SP_M_QUEUE_DEPTH_SUM),
        ONE("sealpush_queue_depth_bytes_total", "counter",
            "Bytes queued for those devices as they connected (sum).", SP_M_QUEUE_BYTES_SUM),
        {"sealpush_store_operations_total", "counter",
         "Store (Redis) outcomes, by kind: enqueued, duplicates, refused_full, expired, "
         "expired_purged, "
         "fetched, acked, unavailable, errors, timeouts, reconnects, enqueue_calls (Redis "
         "requests that carried the enqueued messages, in batches per device), and on Redis "
         "Cluster (0 otherwise) cluster_moved, cluster_ask (redirects followed), "
         "cluster_retries (TRYAGAIN and CLUSTERDOWN sent again), cluster_refreshes, "
         "cluster_refresh_failures (slot map refreshes), cluster_conn_lost (master connections "
         "lost) and cluster_resent (requests sent again after a lost connection).",
         SP_M_STORE, 19, "kind", L_TABLE,
         (const char *const[]){"enqueued", "duplicates", "refused_full", "expired",
                               "expired_purged", "fetched", "acked", "unavailable", "errors",
                               "timeouts", "reconnects", "enqueue_calls", "cluster_moved",
                               "cluster_ask", "cluster_retries", "cluster_refreshes",
                               "cluster_refresh_failures", "cluster_conn_lost", "cluster_resent"}},
        ONE("sealpush_store_up", "gauge", "Workers whose Redis connection is up.", SP_M_STORE_UP),
        ONE("sealpush_tls_handoffs_total", "counter",
            "Handshakes after which the relay's record layer took over from OpenSSL.",
            SP_M_HANDOFFS),
        ONE("sealpush_tls_record_errors_total", "counter",
            "Connections ended by a malformed or forged TLS record.", SP_M_RECORD_ERRORS),
        ONE("sealpush_reloads_total", "counter", "Successful certificate and CRL reloads.",
            SP_M_RELOADS_OK),
        ONE("sealpush_reload_failures_total", "counter",
            "Failed reloads (the previous certificates stay in use).", SP_M_RELOADS_FAILED),
        ONE("sealpush_provider_connections_accepted_total", "counter",
            "Web Push provider connections accepted.", SP_M_PROVIDER_ACCEPTED),
        ONE("sealpush_provider_connections", "gauge", "Open Web Push provider connections.",
            SP_M_PROVIDER_CONNECTIONS),
        ONE("sealpush_provider_handshake_failures_total", "counter",
            "Failed TLS handshakes on the provider door.", SP_M_PROVIDER_HANDSHAKE_FAIL),
        {"sealpush_provider_refusals_total", "counter",
         "Provider door refusals and cuts, by the limit that caused them.", SP_M_PROVIDER_REFUSED,
         SP_PROVIDER_LIMIT_COUNT, "limit", L_TABLE,
         (const char *const[]){"connections", "streams", "header_bytes", "body_bytes",
                               "request_timeout", "idle_timeout", "handshake_timeout", "output",
                               "subscriptions", "store_timeout"}},
        {"sealpush_provider_responses_total", "counter",
         "Provider door (Web Push) responses, by HTTP status.", SP_M_PROVIDER_RESPONSES,
         SP_PROVIDER_STATUS_LABELS, "status", L_TABLE,
         (const char *const[]){"201", "400", "401", "403", "404", "405", "408", "410", "411", "413",
                               "415", "429", "431", "500", "503"}},
        {"sealpush_directory_publishes_total", "counter",
         "Key directory DIR_PUBLISH answers, by result.", SP_M_DIR_PUBLISH, 4, "result", L_TABLE,
         (const char *const[]){"ok", "refused", "invalid", "failed"}},
        {"sealpush_directory_lookups_total", "counter",
         "Key directory DIR_LOOKUP answers (head requests included), by result.", SP_M_DIR_LOOKUP,
         4, "result", L_TABLE, (const char *const[]){"found", "not_found", "limited", "failed"}},
        {"sealpush_directory_log_total", "counter",
         "The transparency log's own counters (sp_dirlog.h), by kind.", SP_M_DIR_LOG, 9, "kind",
         L_TABLE,
         (const char *const[]){"appends", "append_retries", "refused", "lookups", "not_found",
                               "heads", "node_reads", "failures", "limited"}},
        {"sealpush_provider_cache_total", "counter",
         "Capability look-ups of the provider door answered by the workers' caches (hit) or "
         "not (miss); records dropped as too old or older than a removal (stale), or evicted "
         "for room (evicted).",
         SP_M_PROVIDER_CACHE, 4, "result", L_TABLE,
         (const char *const[]){"hit", "miss", "stale", "evicted"}},
        {"sealpush_provider_vapid_total", "counter",
         "VAPID headers of the provider door verified with ES256 (verified, failures "
         "included), or found verified before on the same connection (remembered).",
         SP_M_PROVIDER_VAPID, 2, "result", L_TABLE,
         (const char *const[]){"verified", "remembered"}},
        ONE("sealpush_enroll_issued_total", "counter",
            "Enrollments (POST /enroll) answered with a certificate.", SP_M_ENROLL_ISSUED),
        ONE("sealpush_enroll_renewed_total", "counter",
            "Renewals (RENEW over the device connection) answered with a certificate.",
            SP_M_ENROLL_RENEWED),
        ONE("sealpush_enroll_codes_made_total", "counter",
            "Enrollment codes made through the admin endpoint (POST /enroll-codes).",
            SP_M_ENROLL_CODES_MADE),
        {"sealpush_enroll_refusals_total", "counter",
         "Enrollments and renewals refused, by reason.", SP_M_ENROLL_REFUSED,
         SP_ENROLL_REFUSAL_LABELS, "reason", L_TABLE,
         (const char *const[]){"disabled", "method", "request", "csr_der", "key_type", "key_size",
                               "signature", "extensions", "subject", "code", "code_expired",
                               "rate_addr", "rate_code", "store", "ca", "internal", "renew_rate"}},
        ONE("sealpush_anon_connections_total", "counter",
            "Anonymous (sealed-sender) connections on anon_listen that completed HELLO.",
            SP_M_ANON_CONNECTIONS),
        {"sealpush_anon_sends_total", "counter",
         "Recipients of anonymous SENDs, by the result of their access-key check: accepted "
         "(routed), denied (ACCESS_DENIED: wrong, old or no key, or the recipient refuses), "
         "rate_key and rate_recipient (TOO_MANY_REQUESTS: anon_key_rate, anon_recipient_rate), "
         "unavailable (TRY_LATER).",
         SP_M_ANON_SENDS, 5, "result", L_TABLE,
         (const char *const[]){"accepted", "denied", "rate_key", "rate_recipient", "unavailable"}},
        {"sealpush_anon_access_sets_total", "counter",
         "ACCESS_SET answers (a device registering its access-key verifiers), by result.",
         SP_M_ANON_SETS, 3, "result", L_TABLE,
         (const char *const[]){"ok", "refused", "unavailable"}},
        ONE("sealpush_anon_refused_frames_total", "counter",
            "Frames an anonymous connection may not send, answered with ERROR ANONYMOUS.",
            SP_M_ANON_REFUSED_FRAMES),
        {"sealpush_anon_cache_total", "counter",
         "The recipient cache of the anonymous door (anon_cache_entries, anon_cache_ttl): "
         "look-ups that hit, missed (one Redis fetch) or found a stale entry (older than "
         "anon_cache_ttl, or an ACCESS_SET since: fetched again), and entries evicted to make "
         "room.",
         SP_M_ANON_CACHE, 4, "result", L_TABLE,
         (const char *const[]){"hit", "miss", "stale", "evicted"}},
        {"sealpush_anon_flushes_total", "counter",
         "Writes of the anonymous rate counts accepted here to Redis (one script per "
         "recipient every anon_flush_interval), by result; a failed one is retried.",
         SP_M_ANON_FLUSHES, 2, "result", L_TABLE, (const char *const[]){"ok", "failed"}},
};

static const char *label_value(const struct family *f, unsigned i, char *buf, size_t len)
{
	switch (f->kind) {
	case L_FRAME:
		return i == 0 ? "unknown" : sp_frame_type_name(i);
	case L_STATUS:
		return sp_status_name(status_values[i]);
	case L_ERROR:
		return sp_error_name(i + 1);
	case L_TABLE:
		return f->values[i];
	default:
		snprintf(buf, len, "%u", i);
		return buf;
	}
}

void sp_metrics_render(FILE *out, sp_metrics_t *const *sets, size_t n, const struct sp_gauge *extra,
                       size_t n_extra)
{
	char buf[16];

	for (size_t k = 0; k < sizeof(families) / sizeof(families[0]); k++) {
		const struct family *f = &families[k];

		fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, f->type);
		for (unsigned i = 0; i < f->count; i++) {
			int64_t v = sp_metrics_sum(sets, n, f->base + i);

			/* Reserved frame types and error codes (no name): never counted. */
			if (((f->kind == L_FRAME && i > 0) || f->kind == L_ERROR) &&
			    strcmp(label_value(f, i, buf, sizeof(buf)), "?") == 0)
				continue;

			if (f->kind == L_NONE)
				fprintf(out, "%s %lld\n", f->name, (long long)v);
			else
				fprintf(out, "%s{%s=\"%s\"} %lld\n", f->name, f->label,
				        label_value(f, i, buf, sizeof(buf)), (long long)v);
		}
	}
	for (size_t k = 0; k < n_extra; k++)
		fprintf(out, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", extra[k].name,
		        extra[k].help, extra[k].name, extra[k].name, extra[k].value);
}
