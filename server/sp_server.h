/*
 * sp_server.h: the relay as a whole: its configuration and the state its threads share.
 *
 * Who owns what
 * -------------
 * - sp_server_t (here): built by main() before the workers start; read-only afterwards except
 *   the fields marked "atomic" and the TLS context (sp_tls.c swaps it under its own lock).
 * - sp_worker_t (sp_worker.h): one thread and one event base. Everything in it is touched by
 *   that thread only, except its inbox, flags and wake-up (atomics) and its metrics.
 * - sp_conn_t (sp_conn.h): a client connection, owned by the worker that accepted it, for its
 *   lifetime. Other threads name it by reference (sp_registry.h), never by pointer.
 * - sp_msg_t (sp_msg.h): one accepted SEND, owned by its sender's worker; one sp_node_t per
 *   recipient travels to the recipient's worker and back with a status.
 *
 * Data flow of one SEND: socket -> transport (sp_transport.h: sp_tls.c, then sp_record.c) ->
 * connection (sp_conn.c) -> frame decoder -> session (sp_session.c: the frame state machine)
 * -> message (sp_msg.c) -> router (sp_router.c: this worker | another worker's inbox | the
 * store) -> delivery (sp_delivery.c: the device's window and queue drain) -> encoder ->
 * transport -> socket; the device's ACK goes back the same way to the sender's SEND_RESULT.
 */
#ifndef SP_SERVER_H
#define SP_SERVER_H

#include <stdatomic.h>
#include <regex.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/types.h>

#include "sp_metrics.h"
#include "sp_registry.h"

typedef struct sp_server sp_server_t;
typedef struct sp_worker sp_worker_t;
typedef struct sp_conn sp_conn_t;
typedef struct sp_msg sp_msg_t;
typedef struct sp_node sp_node_t;
typedef struct sp_tls_server sp_tls_server_t; /* context + CRL, owned by sp_tls.c */
typedef struct sp_enroll sp_enroll_t;         /* the enrollment CA, owned by sp_enroll.c */

/* The daemon's configuration (filled by sp_config from the table in sealpushd.c). */
typedef struct sp_server_config {
	char *listen;
	char *tls_cert;
	char *tls_key;
	char *client_ca;
	char *crl;
	char *redis;
	char *admin_listen;
	int64_t workers;
	int log_level;
	int64_t max_connections;
	int64_t max_frame;
	int64_t max_blob;
	int64_t max_recipients;
	int64_t window;
	int64_t send_window;
	int64_t keepalive;
	int64_t keepalive_min;
	int64_t keepalive_max;
	int64_t handshake_timeout; /* ms */
	int64_t max_handshakes;    /* TLS handshakes in flight per worker, 0 = unlimited */
	int64_t hello_timeout;     /* ms */
	int64_t ack_timeout;       /* ms */
	int64_t shutdown_grace;    /* ms */
	int64_t output_buffer_max; /* bytes */
	int64_t send_rate;         /* messages per second per connection, 0 = unlimited */
	int64_t send_burst;        /* messages; 0 = one second's worth of send_rate */
	int64_t max_errors;
	int64_t max_ttl;           /* seconds */
	int64_t max_queue;         /* messages queued per offline device */
	int64_t max_queue_bytes;   /* bytes queued per offline device */
	int64_t store_timeout;     /* ms a Redis request may take */
	int64_t wait_replicas;     /* > 0: QUEUED only once that many replicas have the write */
	int64_t wait_timeout;      /* ms for WAIT */
	int64_t drain_page;        /* messages fetched per page when a device drains its queue */
	int64_t store_batch;       /* most messages of one device per Redis enqueue request */
	char *tls_groups;          /* key-exchange groups (OpenSSL syntax); "" = the default */
	int64_t tls_session_cache; /* > 0: stateful TLS 1.3 tickets, this many sessions cached */
	int64_t backlog;
	bool cluster;          /* other relays share this Redis (sp_cluster.h) */
	int64_t cluster_lease; /* ms a node's lease lasts */
	char *node_name;       /* shown in the node table; "" = the host name */
	/* The Web Push provider door (sp_provider.h); off unless provider_listen is set. */
	char *provider_listen;
	char *provider_origin; /* "https://host[:port]"; derived from the listen address */
	int64_t provider_max_connections; /* all workers */
	int64_t provider_max_streams;     /* concurrent requests per connection */
	int64_t provider_max_header;      /* header bytes per request */
	int64_t provider_max_body;        /* body bytes per request (>= 4096, RFC 8030 7.2) */
	int64_t provider_request_timeout; /* ms for a request's headers and body */
	int64_t provider_idle_timeout;    /* ms a connection may stay without requests */
	bool provider_require_key; /* refuse subscriptions without an application server key */
	/* The key directory (sp_directory.h); off unless directory_log_key is set. */
	char *directory_log_key;            /* PEM P-256 private key that signs the log's heads */
	char *directory_handle_pattern;     /* POSIX ERE a handle must match; "" = any valid one */
	int64_t directory_lookup_limit;     /* lookups per device per window, all relays; 0 = any */
	int64_t directory_lookup_window;    /* ms */
	int64_t directory_max_queue;        /* directory changes waiting per worker */
	int64_t provider_max_subscriptions; /* per device */
	int64_t provider_cache_entries;     /* capability records cached per worker; 0 = none */
	int64_t provider_cache_ttl;         /* ms a cached record is used (cross-relay removals) */
	/* Enrollment and renewal (sp_enroll.h, PROTOCOL.md 16); off unless enroll_ca_cert. */
	char *enroll_ca_cert;         /* the intermediate CA (PEM) that signs enrolled devices */
	char *enroll_ca_key;          /* its key */
	int64_t enroll_cert_days;     /* lifetime of an enrolled or renewed certificate */
	int64_t enroll_rate_per_addr; /* enrollments per source address per minute */
	int64_t enroll_rate_per_code; /* enrollments per code per minute */
	int64_t renew_min_interval;   /* ms between two renewals on one connection */
	/* Sealed sender (sp_anon.h, PROTOCOL.md 17); off unless anon_listen is set. */
	char *anon_listen;     /* address of the anonymous door (TLS, no client certificate) */
	int64_t anon_key_rate; /* anonymous messages per access key per window; 0 = any */
	int64_t anon_recipient_rate; /* anonymous messages per recipient per window; 0 = any */
	int64_t anon_rate_window;    /* ms */
	int64_t anon_max_keys;       /* access-key verifiers a device may register */
	int64_t anon_cache_entries;  /* recipients cached per worker (sp_anoncache.h); 0 = off */
	int64_t anon_cache_ttl;      /* ms an entry is used after its fetch; 0 = off */
	int64_t anon_flush_interval; /* ms between writes of the cached counts; 0 = next turn */
	int64_t pad_block; /* SEND blobs must be on its padding buckets (sp_bucket.h); 0 = any */
	bool help;
	bool version;
	bool check_config;
} sp_server_config_t;

#define SP_MAX_WORKERS 64
#define SP_ANON_EPOCHS 4096

/* Worker flags set by other threads (atomic), acted on at the next wake-up. */
#define SP_WF_DRAIN   0x1u /* send GOAWAY SHUTDOWN to everyone and finish */
#define SP_WF_RELOAD  0x2u /* the TLS context changed: close revoked connections */
#define SP_WF_STOP    0x4u /* leave the event loop now */
#define SP_WF_PUBLISH 0x8u /* worker 0, cluster: the CRL file was reloaded; tell the others */

struct sp_server {
	sp_server_config_t cfg;
	const char *config_file; /* for messages */
	int n_workers;
	int n_threads; /* worker threads running (joined at exit) */
	sp_worker_t *workers;
	sp_registry_t registry;
	uint64_t incarnation; /* random, drawn at start: this process's name in the cluster */
	char node_name[256];

	sp_tls_server_t *tls; /* TLS context and CRL (sp_tls.h) */
	sp_enroll_t *enroll;  /* the enrollment CA (sp_enroll.h), or NULL */

	struct sockaddr_storage listen_addr;
	int listen_addrlen;
	struct sockaddr_storage anon_addr; /* anon_listen, resolved (if set) */
	int anon_addrlen;

	atomic_int n_conns; /* open connections, all workers */
	atomic_bool draining;
	atomic_int workers_done; /* workers that left their loop */
	atomic_bool listeners_up;
	/* cluster: wall ms from which every relay knows this one's lease (0: not yet), and the
	 * times the lease was renewed after it had run out (sp_cluster.c) */
	_Atomic uint64_t cluster_announced;
	atomic_uint cluster_lapses;
	atomic_bool stopping; /* teardown: store callbacks touch nothing */
	/* Web Push: bumped when a subscription is removed here; the workers' capability caches
	 * drop every record read before (sp_wpcache.h). */
	_Atomic uint64_t wp_epoch;
	/* Sealed sender: bumped (slot of the token, sp_anon.c) when an ACCESS_SET is stored
	 * here; the workers' recipient caches drop entries fetched before (sp_anoncache.h). */
	_Atomic uint32_t anon_epochs[SP_ANON_EPOCHS];
	uint64_t started_ms;  /* wall clock at start, for the uptime gauge */
	sp_metrics_t metrics; /* main thread's own counters (reloads) */

	EVP_PKEY *dir_key; /* the directory's log key (sp_directory.h), or NULL: no directory */
	regex_t dir_re;
	bool dir_re_set;
};

#endif
