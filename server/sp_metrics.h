/*
 * sp_metrics: the relay's counters and gauges, rendered in the Prometheus text format.
 *
 * Each worker owns one sp_metrics_t and is its only writer; the admin thread reads all of
 * them and sums. Values are relaxed atomics updated by load+store (one writer), which costs
 * a plain add on x86 and keeps the reader free of data races. Gauges are stored the same way
 * and summed as signed values (a worker's part may be negative, the sum never is).
 *
 * A family is a metric name with at most one label; its values live at base + label index.
 */
#ifndef SP_METRICS_H
#define SP_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "sp_frame.h"
#include <stdio.h>

#include "sp_tlsgroup.h"

/* Why a connection ended (label "reason" of sealpush_connections_closed_total). */
enum sp_close_reason {
	SP_CLOSE_PEER,          /* the client closed or the connection broke */
	SP_CLOSE_HANDSHAKE,     /* the TLS handshake failed (see handshake failures) */
	SP_CLOSE_PROTOCOL,      /* a fatal protocol error, either side */
	SP_CLOSE_HELLO_TIMEOUT, /* no HELLO in time */
	SP_CLOSE_IDLE_TIMEOUT,  /* missed keepalives */
	SP_CLOSE_SLOW_CONSUMER, /* the output cap was reached */
	SP_CLOSE_TOO_MANY_ERRORS,
	SP_CLOSE_REPLACED,
	SP_CLOSE_REVOKED,
	SP_CLOSE_SHUTDOWN,
	SP_CLOSE_INTERNAL,
	SP_CLOSE_REASON_COUNT
};

/* Why a TLS handshake failed (label "cause"). */
enum sp_handshake_cause {
	SP_HS_NO_CERT,
	SP_HS_UNKNOWN_CA,
	SP_HS_EXPIRED,
	SP_HS_REVOKED,
	SP_HS_BAD_CERT,
	SP_HS_NO_ALPN,
	SP_HS_PROTOCOL, /* not TLS, TLS < 1.3, or another protocol error */
	SP_HS_TIMEOUT,
	SP_HS_OTHER,
	SP_HS_CAUSE_COUNT
};

/* Which limit was hit (label "limit"). */
enum sp_limit {
	SP_LIMIT_MAX_CONNECTIONS,
	SP_LIMIT_FILE_DESCRIPTORS,
	SP_LIMIT_MAX_FRAME,
	SP_LIMIT_PREHELLO_FRAME,
	SP_LIMIT_MAX_BLOB,
	SP_LIMIT_MAX_RECIPIENTS,
	SP_LIMIT_SEND_WINDOW,
	SP_LIMIT_SEND_RATE,
	SP_LIMIT_OUTPUT_BUFFER,
	SP_LIMIT_MAX_ERRORS,
	SP_LIMIT_HANDSHAKE_TIMEOUT,
	SP_LIMIT_HELLO_TIMEOUT,
	SP_LIMIT_IDLE_TIMEOUT,
	SP_LIMIT_ACK_TIMEOUT,
	SP_LIMIT_MAX_HANDSHAKES, /* an accepted connection waited for a handshake slot */
	SP_LIMIT_PAD_BLOCK,      /* a SEND's blob was not on a padding bucket (pad_block) */
	SP_LIMIT_COUNT
};

/* Which provider door limit refused something (label "limit" of
 * sealpush_provider_refusals_total). */
enum sp_provider_limit {
	SP_PROVIDER_LIMIT_CONNECTIONS,
	SP_PROVIDER_LIMIT_STREAMS,
	SP_PROVIDER_LIMIT_HEADER_BYTES,
	SP_PROVIDER_LIMIT_BODY_BYTES,
	SP_PROVIDER_LIMIT_REQUEST_TIMEOUT,
	SP_PROVIDER_LIMIT_IDLE_TIMEOUT,
	SP_PROVIDER_LIMIT_HANDSHAKE_TIMEOUT,
	SP_PROVIDER_LIMIT_OUTPUT,
	SP_PROVIDER_LIMIT_SUBSCRIPTIONS, /* a SUBSCRIBE past provider_max_subscriptions */
	SP_PROVIDER_LIMIT_STORE_TIMEOUT, /* the door's Redis gave no answer within store_timeout */
	SP_PROVIDER_LIMIT_COUNT
};
/* Why an enrollment (PROTOCOL.md 16) or a renewal was refused: the label of
 * sealpush_enroll_refusals_total (names in sp_metrics.c). */
enum sp_enroll_refusal {
	SP_ENROLL_R_DISABLED = 1, /* enrollment is not configured here */
	SP_ENROLL_R_METHOD,       /* not POST */
	SP_ENROLL_R_REQUEST,      /* malformed request (JSON, fields) */
	SP_ENROLL_R_CSR_DER,      /* not a CSR in exact DER, too large, wrong version */
	SP_ENROLL_R_KEY_TYPE,     /* not an EC key */
	SP_ENROLL_R_KEY_SIZE,     /* EC, but not P-256 */
	SP_ENROLL_R_SIGNATURE,    /* the CSR's signature does not verify (tampered) */
	SP_ENROLL_R_EXTENSIONS,   /* attributes or extension requests */
	SP_ENROLL_R_SUBJECT,      /* a subject other than empty or one CN, or a CN naming a token */
	SP_ENROLL_R_CODE,         /* unknown or used-up code */
	SP_ENROLL_R_CODE_EXPIRED, /* the code's expiry has passed */
	SP_ENROLL_R_RATE_ADDR,    /* over enroll_rate_per_addr */
	SP_ENROLL_R_RATE_CODE,    /* over enroll_rate_per_code */
	SP_ENROLL_R_STORE,        /* Redis unavailable */
	SP_ENROLL_R_CA,           /* the intermediate CA is revoked, expired or unusable */
	SP_ENROLL_R_INTERNAL,     /* out of memory, signing failed */
	SP_ENROLL_R_RENEW_TOO_SOON, /* renewal: sooner than renew_min_interval on a connection */
	SP_ENROLL_R_END
};
#define SP_ENROLL_REFUSAL_LABELS  (SP_ENROLL_R_END - 1)

#define SP_PROVIDER_STATUS_LABELS 15 /* HTTP statuses the door answers (sp_provider.c) */

/* Connection states (label "state" of the sealpush_connections gauge). */
enum sp_conn_state_label {
	SP_STATE_HANDSHAKE,
	SP_STATE_AWAITING_HELLO,
	SP_STATE_READY,
	SP_STATE_DRAINING,
	SP_STATE_CLOSING,
	SP_STATE_COUNT
};

#define SP_FRAME_LABELS  (SP_FRAME_TYPE_MAX + 1) /* index 0: unknown type, then the v1 types */
#define SP_STATUS_LABELS 15
#define SP_ERROR_LABELS  22 /* codes 1..22 (gaps unlabelled) */

enum sp_metric {
	SP_M_CONN_ACCEPTED,
	SP_M_CONN_REFUSED_MAX, /* refused: max_connections */
	SP_M_CONN_REFUSED_FDS, /* refused: out of descriptors (EMFILE/ENFILE) */
	SP_M_CONN_REFUSED_DRAIN,
	SP_M_CONN_REFUSED_HS_WAIT, /* refused: waited handshake_timeout for a handshake slot */
	SP_M_CONN_CLOSED,
	SP_M_CONN_CLOSED_LAST = SP_M_CONN_CLOSED + SP_CLOSE_REASON_COUNT - 1,
	SP_M_CONNECTIONS, /* gauge, by state */
	SP_M_CONNECTIONS_LAST = SP_M_CONNECTIONS + SP_STATE_COUNT - 1,
	SP_M_DEVICES, /* gauge: registered receiving connections */
	SP_M_HANDSHAKE_OK,
	SP_M_HANDSHAKE_RESUMED,
	SP_M_HANDSHAKE_GROUP, /* completed handshakes, by key-exchange group (enum sp_tls_group) */
	SP_M_HANDSHAKE_GROUP_LAST = SP_M_HANDSHAKE_GROUP + SP_TG_COUNT - 1,
	SP_M_HANDSHAKE_FAIL,
	SP_M_HANDSHAKE_FAIL_LAST = SP_M_HANDSHAKE_FAIL + SP_HS_CAUSE_COUNT - 1,
	SP_M_HANDSHAKE_DEFERRED,  /* accepted connections that had to wait for a handshake slot */
	SP_M_HANDSHAKE_WAITING,   /* gauge: connections waiting for one now */
	SP_M_HANDSHAKE_IN_FLIGHT, /* gauge: handshakes running (at most max_handshakes a worker) */
	SP_M_FRAMES_IN,
	SP_M_FRAMES_IN_LAST = SP_M_FRAMES_IN + SP_FRAME_LABELS - 1,
	SP_M_FRAMES_OUT,
	SP_M_FRAMES_OUT_LAST = SP_M_FRAMES_OUT + SP_FRAME_LABELS - 1,
	SP_M_ERRORS_SENT,
	SP_M_ERRORS_SENT_LAST = SP_M_ERRORS_SENT + SP_ERROR_LABELS - 1,
	SP_M_ERRORS_RECEIVED,
	SP_M_SEND_RESULTS,
	SP_M_SEND_RESULTS_LAST = SP_M_SEND_RESULTS + SP_STATUS_LABELS - 1,
	SP_M_LIMIT_HITS,
	SP_M_LIMIT_HITS_LAST = SP_M_LIMIT_HITS + SP_LIMIT_COUNT - 1,
	SP_M_BYTES_IN,
	SP_M_BYTES_OUT,
	SP_M_MESSAGES_ACCEPTED, /* SENDs accepted for routing (per recipient) */
	SP_M_DELIVERIES_LOCAL,  /* recipient on the sender's worker */
	SP_M_DELIVERIES_REMOTE, /* recipient on another worker */
	SP_M_REDELIVERIES,      /* unacknowledged messages routed again after a connection ended */
	SP_M_ACKS_UNKNOWN,      /* ACKed ids that were not outstanding */
	SP_M_QUEUE_DELIVERED,   /* stored messages a device acknowledged */
	SP_M_QUEUE_FETCHED,     /* stored messages read for delivery */
	SP_M_QUEUE_DEPTH_SAMPLES, /* devices whose queue depth was sampled as they connected */
	SP_M_QUEUE_DEPTH_SUM,     /* ... the messages they had queued, summed */
	SP_M_QUEUE_BYTES_SUM,     /* ... and the bytes */
	SP_M_STORE, /* the store's own counters (sp_store_counters_t), copied by the tick */
	SP_M_STORE_LAST = SP_M_STORE + 18,
	SP_M_STORE_UP,            /* gauge: 1 while the worker's store is connected */
	SP_M_HANDOFFS,            /* handshakes whose session moved to the relay's record layer */
	SP_M_RECORD_ERRORS,       /* connections ended by a bad record (after the hand-off) */
	SP_M_CLUSTER_LOOKUPS,     /* presence reads for devices not on this relay */
	SP_M_CLUSTER_FORWARDED,   /* messages forwarded to the relay their device is on */
	SP_M_CLUSTER_RECEIVED,    /* messages forwarded here by another relay */
	SP_M_CLUSTER_RESULTS,     /* answers to our forwards */
	SP_M_CLUSTER_FALLBACKS,   /* forwards that got no answer (lease ended, timeout, XADD
	                           * failed) and took the offline path here */
	SP_M_CLUSTER_TAKEOVERS,   /* devices taken over from a connection on another relay */
	SP_M_CLUSTER_KICKS,       /* queue kicks sent to another relay */
	SP_M_CLUSTER_BAD_RECORDS, /* inbox records that did not parse */
	SP_M_CLUSTER_NODES,       /* gauge: live relays, this one included (worker 0) */
	SP_M_CLUSTER_CRLS,        /* CRLs published by another relay and installed here */
	SP_M_CLUSTER_LAPSES,      /* times this relay found its own lease had run out */
	SP_M_CLUSTER_RECHECKS,    /* presence re-checks of connected devices after a lapse */
	SP_M_CLUSTER_CTL_RETRIES, /* kicks/replacements sent again after a failed write or read */
	SP_M_CLUSTER_CTL_DROPPED, /* ... and given up (target gone, or the retry list full) */
	SP_M_RELOADS_OK,
	SP_M_RELOADS_FAILED,
	SP_M_PROVIDER_ACCEPTED,       /* provider (Web Push) TCP connections accepted */
	SP_M_PROVIDER_CONNECTIONS,    /* gauge: open provider connections */
	SP_M_PROVIDER_HANDSHAKE_FAIL, /* provider TLS handshakes that failed */
	SP_M_PROVIDER_REFUSED,
	SP_M_PROVIDER_REFUSED_LAST = SP_M_PROVIDER_REFUSED + SP_PROVIDER_LIMIT_COUNT - 1,
	SP_M_PROVIDER_RESPONSES, /* by HTTP status */
	SP_M_PROVIDER_RESPONSES_LAST = SP_M_PROVIDER_RESPONSES + SP_PROVIDER_STATUS_LABELS - 1,
	SP_M_DIR_PUBLISH, /* DIR_PUBLISH answers: ok, refused (by the log), invalid, failed */
	SP_M_DIR_PUBLISH_LAST = SP_M_DIR_PUBLISH + 3,
	SP_M_DIR_LOOKUP, /* DIR_LOOKUP answers: found, not_found, limited, failed */
	SP_M_DIR_LOOKUP_LAST = SP_M_DIR_LOOKUP + 3,
	SP_M_DIR_LOG, /* the log's counters (sp_dirlog_counters_t), copied by the tick */
	SP_M_DIR_LOG_LAST = SP_M_DIR_LOG + 8,
	SP_M_PROVIDER_CACHE, /* capability cache (sp_wpcache.h): hit, miss, stale, evicted */
	SP_M_PROVIDER_CACHE_LAST = SP_M_PROVIDER_CACHE + 3,
	SP_M_PROVIDER_VAPID, /* VAPID headers verified (ES256), or taken from the memo */
	SP_M_PROVIDER_VAPID_LAST = SP_M_PROVIDER_VAPID + 1,
	SP_M_ENROLL_ISSUED,     /* enrollments answered with a certificate */
	SP_M_ENROLL_RENEWED,    /* renewals answered with a certificate */
	SP_M_ENROLL_CODES_MADE, /* enrollment codes made through the admin endpoint */
	SP_M_ENROLL_REFUSED,    /* by enum sp_enroll_refusal - 1 */
	SP_M_ENROLL_REFUSED_LAST = SP_M_ENROLL_REFUSED + SP_ENROLL_REFUSAL_LABELS - 1,
	SP_M_ANON_CONNECTIONS, /* anonymous connections that reached READY (sealed sender, 17) */
	SP_M_ANON_SENDS,       /* anonymous recipients checked, by enum sp_anon_result */
	SP_M_ANON_SENDS_LAST = SP_M_ANON_SENDS + 4,
	SP_M_ANON_SETS, /* ACCESS_SET answers: ok, refused, unavailable */
	SP_M_ANON_SETS_LAST = SP_M_ANON_SETS + 2,
	SP_M_ANON_REFUSED_FRAMES, /* frames an anonymous connection may not send (ANONYMOUS) */
	SP_M_ANON_CACHE,          /* recipient cache look-ups: hit, miss, stale; then evictions */
	SP_M_ANON_CACHE_LAST = SP_M_ANON_CACHE + 3,
	SP_M_ANON_FLUSHES, /* writes of cached counts to Redis: ok, failed */
	SP_M_ANON_FLUSHES_LAST = SP_M_ANON_FLUSHES + 1,
	SP_M_COUNT
};

typedef struct sp_metrics {
	_Atomic uint64_t v[SP_M_COUNT];
} sp_metrics_t;

/* Only the owning thread calls these. */
static inline void sp_metric_add(sp_metrics_t *m, unsigned i, int64_t n)
{
	uint64_t cur = atomic_load_explicit(&m->v[i], memory_order_relaxed);

	atomic_store_explicit(&m->v[i], cur + (uint64_t)n, memory_order_relaxed);
}

static inline void sp_metric_inc(sp_metrics_t *m, unsigned i)
{
	sp_metric_add(m, i, 1);
}

/* Label index of a frame type, a send status, an error code. */
unsigned sp_metric_frame_index(unsigned type);
unsigned sp_metric_status_index(unsigned status);
unsigned sp_metric_error_index(unsigned code);

/* Sum of one metric over n sets (as a signed value, for gauges). */
int64_t sp_metrics_sum(sp_metrics_t *const *sets, size_t n, unsigned i);

/*
 * Writes every family in the Prometheus text format (version 0.0.4) to out: the counters
 * summed over the n sets, then the extra gauges the caller passes as name/value pairs.
 */
struct sp_gauge {
	const char *name;
	const char *help;
	double value;
};
void sp_metrics_render(FILE *out, sp_metrics_t *const *sets, size_t n, const struct sp_gauge *extra,
                       size_t n_extra);

#endif
