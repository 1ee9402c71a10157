/*
 * libsealpush: the client library of the sealpush push relay (protocol sealpush/1).
 *
 * One sp_client_t is one device (or sender) identity, a certificate and its key, holding at
 * most one mutual-TLS connection to one relay. It is event-driven: it runs on an event_base
 * the application owns and never blocks that loop (files are read, once, in sp_client_new()).
 *
 *	struct event_base *base = event_base_new();
 *	sp_client_config_t cfg = {.server = "push.example.org:7443", .ca_file = "ca.crt",
 *	                          .cert_file = "phone.crt", .key_file = "phone.key"};
 *	sp_client_callbacks_t cb = {.event = on_event, .result = on_result,
 *	                            .message = on_message, .arg = app};
 *	sp_client_t *c;
 *	if (sp_client_new(base, &cfg, &cb, &c, err, sizeof err) < 0) ...
 *	sp_client_start(c);
 *	event_base_dispatch(base);
 *
 * What the library does by itself:
 *   - connects (TCP, TLS 1.3 with ALPN sealpush/1, HELLO/WELCOME), checks that the relay's
 *     view of the token (WELCOME) is the token of its own certificate;
 *   - keeps the connection alive: PING after `keepalive` seconds without sending anything,
 *     and treats the connection as dead when no PONG comes within `ping_timeout_ms`;
 *   - reconnects after a connection ends, after an exponential backoff with full jitter
 *     (a random delay in [0, min(backoff_max, backoff_min * 2^attempt)]), reset by every
 *     WELCOME; after GOAWAY SHUTDOWN it waits the relay's `retry_after` plus jitter. It does
 *     NOT reconnect after GOAWAY REPLACED (another connection of the same device took over)
 *     or CERT_REVOKED: it stops and reports why;
 *   - resumes the TLS session on reconnect (TLS 1.3 ticket kept from the previous
 *     connection), see sp_client_resumed();
 *   - respects the limits of WELCOME: at most `send_window` SENDs unanswered (more wait in a
 *     local queue), blobs over `max_blob` and SENDs over `max_recipients` are answered
 *     locally with PAYLOAD_TOO_LARGE / TOO_MANY_RECIPIENTS without being sent;
 *   - retries, after a reconnect, every SEND that was not fully answered, with the same
 *     msg_id and only to the recipients that have no status yet (the relay deduplicates by
 *     msg_id, PROTOCOL.md 7.3); with `resend = SP_CLIENT_RESEND_FAIL` it reports those
 *     recipients as SEALPUSH_ST_NOT_SENT instead;
 *   - remembers the last `dedup` message ids the application acknowledged and acknowledges a
 *     redelivery of one of them itself, without calling `message` again;
 *   - sends the last acknowledgement it could not write as HELLO `resume_id` (7.4).
 *
 * Thread-safety. A client belongs to the thread that runs its event_base: every function
 * taking an sp_client_t must be called from that thread (typically from the application's
 * own callbacks on that loop), and every callback runs on it. Nothing in a client is locked.
 * Different clients on different bases may run in different threads at the same time. The
 * base may be created with EVENT_BASE_FLAG_NOLOCK. sp_client_status_name() and the other
 * name functions are pure and may be called from anywhere.
 *
 * Callbacks. They are called only from the event loop, never from inside a call the
 * application made (sp_client_send() never calls `result` before it returns). Inside a
 * callback the application may call any function of this header, sp_client_free() included
 * (the client is then freed when the callback returns). Pointers handed to a callback are
 * valid only until it returns.
 *
 * Errors: functions return 0 or a negative errno value; none of them aborts.
 */
#ifndef SEALPUSH_H
#define SEALPUSH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct event_base;

typedef struct sp_client sp_client_t;

#define SEALPUSH_TOKEN_LEN    32 /* a device token: SHA-256 of its certificate's SPKI */
#define SEALPUSH_TOKEN_HEX    64 /* characters of a token written in hex */
#define SEALPUSH_MSG_ID_LEN   16
#define SEALPUSH_COLLAPSE_MAX 64

/* Per-recipient statuses (PROTOCOL.md 9.2): below 0x10 accepted, from 0x10 refused. */
enum sealpush_status {
	SEALPUSH_ST_DELIVERED = 0x00,
	SEALPUSH_ST_QUEUED = 0x01,
	SEALPUSH_ST_BAD_DEVICE_TOKEN = 0x10,
	SEALPUSH_ST_PAYLOAD_TOO_LARGE = 0x11,
	SEALPUSH_ST_TOO_MANY_RECIPIENTS = 0x12,
	SEALPUSH_ST_TOO_MANY_REQUESTS = 0x13,
	SEALPUSH_ST_QUOTA_EXCEEDED = 0x14,
	SEALPUSH_ST_EXPIRED = 0x15,
	SEALPUSH_ST_DEVICE_OFFLINE = 0x16,
	SEALPUSH_ST_FORBIDDEN = 0x17,
	SEALPUSH_ST_TRY_LATER = 0x18,
	SEALPUSH_ST_SHUTDOWN = 0x19,
	SEALPUSH_ST_INTERNAL_ERROR = 0x1A,
	SEALPUSH_ST_ACCESS_DENIED =
	        0x1B,                /* anonymous send: no valid access key (PROTOCOL.md 17.3) */
	SEALPUSH_ST_BAD_SIZE = 0x1C, /* the blob is not on the relay's padding buckets (17.6) */
	/* Local statuses, never on the wire: the library gave up on a recipient. */
	SEALPUSH_ST_TIMEOUT = 0xFD,  /* no answer within send_timeout_ms */
	SEALPUSH_ST_NOT_SENT = 0xFE, /* the connection ended (resend FAIL) or the client
	                                stopped before the relay answered; it may or may not
	                                have been routed: retry with the same msg_id */
};
#define SEALPUSH_STATUS_ACCEPTED(s) ((s) < 0x10)

/* Where a client is. */
enum sp_client_state {
	SP_CLIENT_IDLE,       /* created, not started */
	SP_CLIENT_CONNECTING, /* resolving, TCP, TLS, HELLO sent and WELCOME awaited */
	SP_CLIENT_READY,      /* WELCOME received */
	SP_CLIENT_DRAINING,   /* GOAWAY received: no new SENDs go out, the relay closes soon */
	SP_CLIENT_WAITING,    /* no connection; waiting to reconnect (backoff) */
	SP_CLIENT_CLOSING,    /* sp_client_close(): finishing what is owed */
	SP_CLIENT_STOPPED,    /* for good: closed, gave up, replaced or revoked */
};

/* Why a connection ended (or could not be made). */
enum sp_client_cause {
	SP_CLIENT_C_NONE = 0,
	SP_CLIENT_C_RESOLVE,   /* the host name did not resolve */
	SP_CLIENT_C_CONNECT,   /* TCP connect failed (refused, unreachable) */
	SP_CLIENT_C_TIMEOUT,   /* no WELCOME within connect_timeout_ms */
	SP_CLIENT_C_TLS,       /* TLS failed: a certificate was refused by either side, no
	                          common version or ALPN, ... (detail says which) */
	SP_CLIENT_C_CLOSED,    /* the relay closed the connection */
	SP_CLIENT_C_BROKEN,    /* read or write error, connection reset */
	SP_CLIENT_C_DEAD_PEER, /* no PONG within ping_timeout_ms */
	SP_CLIENT_C_PROTOCOL,  /* the relay sent an ERROR with CLOSING (code) or a frame
	                          that breaks the protocol */
	SP_CLIENT_C_GOAWAY,    /* the relay said GOAWAY (code) and closed */
	SP_CLIENT_C_TOKEN,     /* WELCOME names another token than our certificate's */
	SP_CLIENT_C_LOCAL,     /* the application: sp_client_reconnect(), sp_client_close() */
	SP_CLIENT_C_GAVE_UP,   /* max_attempts connection attempts in a row failed */
	SP_CLIENT_C_NOMEM,
};

enum sp_client_event_type {
	SP_CLIENT_EV_CONNECTED,    /* WELCOME received: token, limits, resumed are set */
	SP_CLIENT_EV_DISCONNECTED, /* a connection (or attempt) ended; will_retry says whether
	                              the client reconnects, after retry_in_ms */
	SP_CLIENT_EV_STOPPED,      /* the client stopped for good (cause: LOCAL after
	                              sp_client_close(), GOAWAY with code REPLACED or
	                              CERT_REVOKED, TOKEN, GAVE_UP) */
	SP_CLIENT_EV_ERROR,        /* the relay sent an ERROR without CLOSING (code, detail);
	                              the connection goes on */
	SP_CLIENT_EV_RENEWED,      /* the certificate was renewed (PROTOCOL.md 16.4) and written
	                              to cert_file; the next connection uses it (detail) */
};

/* The relay's limits, from WELCOME. */
typedef struct sp_client_limits {
	uint32_t max_frame;
	uint32_t max_blob;
	uint16_t max_recipients;
	uint16_t window;      /* deliveries unacknowledged at once */
	uint16_t send_window; /* SENDs unanswered at once */
	uint16_t keepalive;   /* seconds, in force */
} sp_client_limits_t;

typedef struct sp_client_event {
	int type;           /* enum sp_client_event_type */
	int cause;          /* enum sp_client_cause (DISCONNECTED, STOPPED) */
	unsigned code;      /* the wire error code of an ERROR or GOAWAY (PROTOCOL.md 9.1), or 0 */
	const char *detail; /* one line for humans (never NULL); relay texts are escaped */
	bool will_retry;    /* DISCONNECTED: the client reconnects by itself */
	uint32_t retry_in_ms;
	/* CONNECTED only: */
	bool resumed;         /* the TLS session was resumed */
	const uint8_t *token; /* SEALPUSH_TOKEN_LEN bytes, as the relay sees us */
	const sp_client_limits_t *limits;
} sp_client_event_t;

/* The complete answer to one sp_client_send(): one status per recipient, in the order given. */
typedef struct sp_client_result {
	const uint8_t *msg_id;   /* SEALPUSH_MSG_ID_LEN bytes */
	size_t n;                /* recipients */
	const uint8_t *tokens;   /* n * SEALPUSH_TOKEN_LEN bytes, as given to sp_client_send() */
	const uint8_t *statuses; /* n statuses (enum sealpush_status) */
	uint32_t retry_after_ms; /* the largest retry_after the relay gave (TRY_LATER,
	                            TOO_MANY_REQUESTS), or 0 */
	void *user;              /* sp_client_send_opts_t.user */
} sp_client_result_t;

/* One message delivered to this device. Acknowledge it with sp_client_ack() once it has been
 * processed (stored, shown), now or later; until then the relay counts it in the window and
 * delivers it again on a later connection. */
typedef struct sp_client_message {
	const uint8_t *msg_id; /* SEALPUSH_MSG_ID_LEN bytes */
	const uint8_t *blob;
	size_t blob_len;
	const uint8_t *collapse_id; /* NULL if none */
	size_t collapse_id_len;
	uint8_t priority; /* 10, 5 or 1 */
	bool stored;      /* it was queued while the device was away */
} sp_client_message_t;

/* The relay's answer to sp_client_subscribe() (a SUBSCRIPTION frame, PROTOCOL.md 14.5).
 * Pointers are valid during the callback only. */
typedef struct sp_client_subscription {
	const uint8_t *req_id; /* SEALPUSH_MSG_ID_LEN bytes: what sp_client_subscribe() gave */
	uint8_t status;        /* SEALPUSH_ST_DELIVERED (0) when done, else a refusal */
	const uint8_t *sub_id; /* 16 bytes, or NULL */
	const char *endpoint;  /* the push resource URL (subscribe), or NULL */
	size_t endpoint_len;
	const uint8_t *app_key; /* 65 bytes, or NULL */
	const uint8_t *sub_ids; /* LIST: n_sub_ids * 16 bytes */
	size_t n_sub_ids;
	const char *reason; /* refusals: the relay's reason (untrusted text), or NULL */
	size_t reason_len;
} sp_client_subscription_t;

/* The relay's answer to sp_client_dir_publish() or sp_client_dir_lookup() (a DIR_ANSWER frame,
 * PROTOCOL.md 15.6), not yet verified: check it with sp_dir_verify() (sp_dir.h) before using
 * anything in it. Pointers are valid during the callback only; absent fields are NULL / 0. */
typedef struct sp_client_dir_answer {
	const uint8_t *req_id; /* SEALPUSH_MSG_ID_LEN bytes: what the request call gave */
	uint8_t status;        /* SEALPUSH_ST_DELIVERED (0) when done, else a refusal */
	const uint8_t *entry;  /* the log entry (15.2) */
	size_t entry_len;
	bool has_index;
	uint64_t index;      /* its leaf index */
	const uint8_t *head; /* the signed tree head (15.3) */
	size_t head_len;
	const uint8_t *inclusion; /* wire proofs (15.4) */
	size_t inclusion_len;
	const uint8_t *consistency;
	size_t consistency_len;
	uint32_t retry_after_ms;
	const char *reason; /* refusals: the relay's reason (untrusted text), or NULL */
	size_t reason_len;
	bool has_hist_left;
	uint32_t hist_left; /* sp_client_dir_history(): the handle's entries after this one */
} sp_client_dir_answer_t;

/* The relay's answer to sp_client_access_set() (an ACCESS_STATE frame, PROTOCOL.md 17.4).
 * Pointers are valid during the callback only. */
typedef struct sp_client_access_state {
	const uint8_t *req_id; /* SEALPUSH_MSG_ID_LEN bytes: what sp_client_access_set() gave */
	uint8_t status;        /* SEALPUSH_ST_DELIVERED (0) when done; QUOTA_EXCEEDED (more keys
	                          than the relay's anon_max_keys), FORBIDDEN (no anonymous door),
	                          TRY_LATER (with retry_after_ms), INTERNAL_ERROR */
	bool has_mode;
	uint8_t anon_mode; /* with status 0: the SP_CLIENT_ANON_* mode now in force */
	uint32_t retry_after_ms;
	const char *reason; /* the relay's reason (untrusted text), or NULL */
	size_t reason_len;
} sp_client_access_state_t;

typedef struct sp_client_callbacks {
	void (*event)(sp_client_t *c, const sp_client_event_t *ev, void *arg);
	void (*result)(sp_client_t *c, const sp_client_result_t *r, void *arg);
	void (*message)(sp_client_t *c, const sp_client_message_t *m, void *arg);
	void *arg;
	void (*subscription)(sp_client_t *c, const sp_client_subscription_t *s, void *arg);
	void (*dir_answer)(sp_client_t *c, const sp_client_dir_answer_t *a, void *arg);
	void (*access_state)(sp_client_t *c, const sp_client_access_state_t *s, void *arg);
} sp_client_callbacks_t;

enum { SP_CLIENT_RESEND_RETRY = 0, SP_CLIENT_RESEND_FAIL = 1 };

/*
 * Configuration. Zero means "the default" for every number, so a zero-initialised struct with
 * the four strings set is a working configuration. Strings are copied by sp_client_new().
 */
#define SP_CLIENT_MAX_SERVERS 8

typedef struct sp_client_config {
	const char *server;       /* "HOST:PORT", "[v6]:PORT" (required); or several relays of
	                             one cluster, "HOST:PORT,HOST:PORT" (at most
	                             SP_CLIENT_MAX_SERVERS): each new attempt takes the next */
	const char *ca_file;      /* PEM CA the relay's certificate must chain to (required) */
	const char *cert_file;    /* PEM device certificate (chain) (required unless anonymous) */
	const char *key_file;     /* PEM private key of the certificate (ditto) */
	bool anonymous;           /* sealed sender (PROTOCOL.md 17): server is the relay's
	                             anonymous door (anon_listen); no certificate is presented
	                             (cert_file, key_file unused), the connection only sends
	                             (send_only implied), every send needs access_keys, and the
	                             relay sees no token */
	const char *server_name;  /* the name to verify in the relay's certificate and send as
	                             SNI; default: HOST (an IP address is checked as an IP) */
	const char *agent;        /* HELLO agent; default "libsealpush/VERSION" */
	bool send_only;           /* HELLO SEND_ONLY: only send, take no deliveries, and neither
	                             replace nor get replaced by the device's receiving connection */
	bool no_reconnect;        /* do not reconnect after an established connection ends:
	                             stop instead (cause of the end) */
	uint16_t keepalive;       /* seconds wished in HELLO; default 60 (the relay clamps it) */
	uint16_t window;          /* deliveries wished at once; default: the relay's */
	uint32_t ping_timeout_ms; /* PONG wait; default: the keepalive in force */
	uint32_t connect_timeout_ms; /* TCP + TLS + WELCOME; default 10 s */
	uint32_t backoff_min_ms;     /* default 500 ms */
	uint32_t backoff_max_ms;     /* default 60 s */
	unsigned max_attempts;       /* failed connection attempts in a row before giving up
	                                (EV_STOPPED cause GAVE_UP); default 0: never give up */
	unsigned max_queued;         /* sends kept before -ENOBUFS (queued + in flight);
	                                default 4096 */
	uint32_t send_timeout_ms;    /* a send not answered in time is reported with
	                                SEALPUSH_ST_TIMEOUT; default 0: no limit */
	uint32_t close_timeout_ms;   /* sp_client_close() waits this long for answers owed;
	                                default 5 s */
	unsigned dedup;              /* acknowledged msg_ids remembered; default 1024 */
	int resend;                  /* SP_CLIENT_RESEND_RETRY (default) or _FAIL */
	const char *tls_groups;      /* TLS key-exchange groups in OpenSSL's syntax; default:
	                                X25519MLKEM768 (if this OpenSSL has it), X25519, P-256 */
	double renew_at;             /* renewal (PROTOCOL.md 16.4): once this share of the
	                                certificate's lifetime is gone, and the relay offers it
	                                (capability 0x04), the client sends RENEW with a CSR of its
	                                key over its connection and writes the new chain over
	                                cert_file (same key: the token stays). 0: 0.75; >= 1 or
	                                < 0: never. After a refusal it tries again an hour later. */
} sp_client_config_t;

typedef struct sp_client_send_opts {
	const uint8_t *msg_id; /* SEALPUSH_MSG_ID_LEN bytes; NULL: 16 random bytes (RAND_bytes) */
	bool has_ttl;          /* without it the relay's default (its max_ttl) applies */
	uint32_t ttl;          /* seconds; 0 = deliver now or never */
	uint8_t priority;      /* 10, 5 or 1; 0 = 10 */
	const uint8_t *collapse_id; /* 1..64 bytes, or NULL */
	size_t collapse_id_len;
	const uint8_t *access_keys; /* anonymous client: one 32-byte access key per recipient
	                               (from each recipient's card), n * 32 bytes; else ignored */
	void *user;                 /* handed back in the result */
} sp_client_send_opts_t;

/* Counters since sp_client_new(), for logs and metrics. */
typedef struct sp_client_stats {
	uint64_t connects;    /* attempts started */
	uint64_t welcomes;    /* connections that got WELCOME */
	uint64_t resumed;     /* of those, with a resumed TLS session */
	uint64_t disconnects; /* connections or attempts that ended */
	uint64_t sends;       /* SEND frames written (retries included) */
	uint64_t results;     /* sends completed (result callbacks) */
	uint64_t messages;    /* DELIVERs handed to the application */
	uint64_t duplicates;  /* DELIVERs of already acknowledged ids, acknowledged again */
	uint64_t acks;        /* message ids acknowledged on the wire */
	uint64_t pings;       /* PINGs sent */
	uint64_t bytes_in;    /* application bytes (frames) received */
	uint64_t bytes_out;   /* application bytes (frames) sent */
} sp_client_stats_t;

/*
 * Creates a client on base (which the caller keeps; it must outlive the client). Reads the
 * CA, certificate and key files (blocking, once), checks that the key matches the certificate
 * and computes the token. Does not connect: see sp_client_start(). cb may be NULL or have
 * NULL members. Returns 0 with *out set, or -EINVAL (a bad argument, an unparsable server),
 * -ENOENT / -EACCES (a file), -EPROTO (a file that is not the PEM it should be, key and
 * certificate that do not match), -ENOMEM; err (if errlen > 0) then holds one line.
 */
int sp_client_new(struct event_base *base, const sp_client_config_t *cfg,
                  const sp_client_callbacks_t *cb, sp_client_t **out, char *err, size_t errlen);

/* Starts connecting (from IDLE). Returns 0, or -EALREADY if started before. */
int sp_client_start(sp_client_t *c);

/*
 * Sends blob to n tokens (tokens: n * SEALPUSH_TOKEN_LEN bytes, 1 <= n <= 65535). Tokens
 * and blob are copied; the send is queued and written when the connection is READY and the
 * send window allows. Exactly one `result` callback follows, with a status for every
 * recipient, unless the client is freed first. msg_id_out (may be NULL) receives the id.
 * Returns 0, -EINVAL (n, priority, collapse id, a blob over 16 MiB, or an anonymous client's
 * send without access_keys), -EMSGSIZE (blob
 * larger than the relay's max_blob, when known), -ENOBUFS (max_queued sends pending),
 * -EEXIST (opts->msg_id is the id of a send still pending: results are matched by id),
 * -ESHUTDOWN (closing or stopped), -ENOMEM.
 */
int sp_client_send(sp_client_t *c, const uint8_t *tokens, size_t n, const uint8_t *blob,
                   size_t blob_len, const sp_client_send_opts_t *opts,
                   uint8_t msg_id_out[SEALPUSH_MSG_ID_LEN]);

/*
 * Acknowledges a delivered message: the relay removes it and frees its window slot. ACKs are
 * batched and written from the loop. The id is remembered (dedup). If there is no connection
 * now, it is sent as HELLO resume_id on the next one (the relay then also drops it). An id
 * the relay does not hold outstanding is ignored by it. Returns 0, -ESHUTDOWN once stopped,
 * -ENOMEM.
 */
int sp_client_ack(sp_client_t *c, const uint8_t msg_id[SEALPUSH_MSG_ID_LEN]);

/* Ends the current connection (close_notify) and connects again at once, e.g. after the
 * network changed. Unanswered sends follow the resend policy. Returns 0, or -ESHUTDOWN when
 * closing or stopped, -EAGAIN when not started. */
int sp_client_reconnect(sp_client_t *c);
/*
 * Web Push subscriptions (PROTOCOL.md 14.5), while connected to a relay whose WELCOME said it
 * has a Web Push door: op SP_CLIENT_SUB_NEW (optionally restricted to app_key, 65 bytes or
 * NULL), SP_CLIENT_SUB_REMOVE (sub_id, 16 bytes) or SP_CLIENT_SUB_LIST. Writes the request id
 * to req_id; the answer comes to the subscription callback. Returns 0, -EAGAIN (not
 * connected), -ENOTSUP (the relay has no door), -EINVAL, -ENOMEM. Not kept across
 * reconnections: a request whose connection ends gets no answer.
 */
enum { SP_CLIENT_SUB_NEW = 0, SP_CLIENT_SUB_REMOVE = 1, SP_CLIENT_SUB_LIST = 2 };
int sp_client_subscribe(sp_client_t *c, int op, const uint8_t *app_key, const uint8_t *sub_id,
                        uint8_t req_id[SEALPUSH_MSG_ID_LEN]);

/*
 * The key directory (PROTOCOL.md 15.6), while connected to a relay whose WELCOME said it has
 * one. Publish a user card (JSON, sp_dir_card_make), or look up a handle (token NULL) or a
 * device token (handle NULL), or with head_only just the log's head; tree_size (0: none) is the
 * size of the head the caller kept, for a consistency proof. Writes the request id to req_id;
 * the answer comes to the dir_answer callback. Returns 0, -EAGAIN (not connected), -ENOTSUP
 * (no directory), -EINVAL, -ENOMEM. A request whose connection ends gets no answer.
 */
int sp_client_dir_publish(sp_client_t *c, const char *card, size_t len,
                          uint8_t req_id[SEALPUSH_MSG_ID_LEN]);
int sp_client_dir_lookup(sp_client_t *c, const char *handle, const uint8_t *token,
                         uint64_t tree_size, bool head_only, uint8_t req_id[SEALPUSH_MSG_ID_LEN]);
/* An entry of this device's own handle (the one whose card lists this device), for an audit:
 * the first with a leaf index above `after` (-1: the handle's first entry), answered as a
 * lookup plus hist_left, the number of the handle's entries after it (PROTOCOL.md 15.6,
 * HISTORY). Returns as sp_client_dir_lookup. */
int sp_client_dir_history(sp_client_t *c, int64_t after, uint64_t tree_size,
                          uint8_t req_id[SEALPUSH_MSG_ID_LEN]);

/*
 * Sealed sender (PROTOCOL.md 17.4): registers who may send to this device through the relay's
 * anonymous door, over this (identified) connection, while connected to a relay whose WELCOME
 * said it has one (capability ANONYMOUS). mode SP_CLIENT_ANON_REFUSE (keys ignored: everything
 * registered is removed), SP_CLIENT_ANON_KEY_HOLDERS (senders holding one of keys: n_keys
 * 32-byte access keys, 1 <= n_keys <= 16) or SP_CLIENT_ANON_ANYONE (keys optional). Each call
 * replaces what was registered before, so rotating a key is one call with the new key alone:
 * every sender holding only the old one is then ACCESS_DENIED. The keys do not leave the
 * library: it sends their SHA-256 (the verifiers). Writes the request id to req_id; the answer
 * comes to the access_state callback. Returns 0, -EAGAIN (not connected), -ENOTSUP (the relay
 * has no anonymous door), -EINVAL (mode, n_keys, an anonymous client), -ENOMEM. A request
 * whose connection ends gets no answer: call again after the next CONNECTED.
 */
#define SEALPUSH_ACCESS_KEY_LEN  32
#define SEALPUSH_ACCESS_KEYS_MAX 16
enum { SP_CLIENT_ANON_REFUSE = 0, SP_CLIENT_ANON_KEY_HOLDERS = 1, SP_CLIENT_ANON_ANYONE = 2 };
int sp_client_access_set(sp_client_t *c, int mode, const uint8_t *keys, size_t n_keys,
                         uint8_t req_id[SEALPUSH_MSG_ID_LEN]);

/*
 * Closes cleanly: takes no new sends, waits (up to close_timeout_ms) for the answers owed to
 * the sends already made (queued ones are still sent if connected), writes pending ACKs,
 * sends TLS close_notify and closes. Then calls `event` with EV_STOPPED, cause LOCAL, and
 * reports every send still unanswered as SEALPUSH_ST_NOT_SENT. When not connected, it stops
 * at once (from the loop). Calling it again does nothing.
 */
void sp_client_close(sp_client_t *c);

/* Frees the client at once: close_notify on a connection (best effort), no callbacks. NULL
 * is fine; inside a callback the client is freed when the callback returns. */
void sp_client_free(sp_client_t *c);

int sp_client_state(const sp_client_t *c); /* enum sp_client_state */

/* Whether the last connection that got WELCOME resumed its TLS session. */
bool sp_client_resumed(const sp_client_t *c);

/* The key-exchange group of the last connection that got WELCOME: "X25519MLKEM768" (hybrid
 * post-quantum), "X25519", "P-256" or "other"; NULL before the first WELCOME. */
const char *sp_client_tls_group(const sp_client_t *c);

/* This client's token (SEALPUSH_TOKEN_LEN bytes), computed from its certificate. */
const uint8_t *sp_client_token(const sp_client_t *c);

/* The limits of the last WELCOME, or NULL before the first. */
const sp_client_limits_t *sp_client_limits(const sp_client_t *c);

/* Sends not yet answered (queued and in flight). */
size_t sp_client_pending(const sp_client_t *c);

void sp_client_get_stats(const sp_client_t *c, sp_client_stats_t *out);

/* Names for humans: "QUEUED", "TRY_LATER", "NOT_SENT" ... "?" for unknown values. */
const char *sp_client_status_name(unsigned status);
const char *sp_client_cause_name(int cause);
const char *sp_client_error_name(unsigned code); /* wire error codes, "SHUTDOWN" ... */
const char *sp_client_state_name(int state);
const char *sp_client_version(void);

/*
 * Enrollment (PROTOCOL.md 16), for a device that has no certificate yet: makes a P-256 key,
 * sends a CSR of it with the one-time enrollment code to POST /enroll on the relay's provider
 * door at server ("HOST:PORT", server-authenticated TLS checked against ca_file), and writes
 * the key (PEM PKCS #8, 0600) to key_file and the certificate chain the relay answered (the
 * device's certificate, then the intermediate CA's) to cert_file; neither may exist yet.
 * Checks that the certificate is of the new key. Blocks, at most timeout_s per socket
 * operation (<= 0: 30 s); needs no event loop. Returns 0 with *out filled, or a negative
 * errno with err set: -EEXIST a file exists, -EACCES the relay refused (bad code, bad CSR),
 * -EAGAIN try later (rate limit, Redis down), -EPROTO/-ECONNREFUSED/... transport.
 */
typedef struct sp_client_enrolled {
	char token_hex[SEALPUSH_TOKEN_HEX + 1];
	char serial[48];    /* the certificate's serial, hex */
	char not_after[32]; /* "YYYY-MM-DDTHH:MM:SSZ" */
} sp_client_enrolled_t;
int sp_client_enroll(const char *server, const char *ca_file, const char *code,
                     const char *cert_file, const char *key_file, double timeout_s,
                     sp_client_enrolled_t *out, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
