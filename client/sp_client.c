/*
 * sp_client.c: libsealpush, one client = one identity = at most one connection at a time.
 *
 * Who calls what. Everything runs on the application's event_base, from five libevent
 * callbacks: io_cb (socket readable/writable), timer_cb (one timer for every deadline: connect,
 * keepalive, PONG, backoff, close, send timeouts; re-armed to the earliest), kick_cb (work the
 * application asked for from outside the loop: write sends and ACKs, close, reconnect),
 * dns_cb (evdns) and nothing else. Each of them enters with enter() and leaves with leave();
 * sp_client_free() inside a callback only marks the client dead, and leave() frees it when
 * the outermost callback returns. After c->dead is set no user callback is called again.
 *
 * The socket and TLS are the client transport's (sp_ctransport.h, shared with the load
 * generator): TLS over two memory BIOs, bytes sent with send(MSG_NOSIGNAL), so the library
 * never raises SIGPIPE in the application and never blocks. Frames are encoded into the
 * transport's plaintext buffer and handed to SSL_write() once per loop pass (one record for
 * many small frames).
 *
 * The connection's life: C_NONE -> C_RESOLVING (only for host names) -> C_TCP -> C_TLS ->
 * C_HELLO (HELLO sent) -> C_READY (WELCOME). conn_drop() ends any of them and decides what
 * comes next: stop() for good, or WAITING with a backoff timer, or at once.
 */
#include "sp_buf.h"
#include "sp_ctransport.h"
#include "sealpush.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "sp_config.h"
#include "sp_enroll_client.h"
#include "sp_frame.h"
#include "sp_identity.h"
#include "sp_time.h"
#include "sp_tlsgroup.h"
#include "sp_version.h"

/* The public statuses are the wire's (sealpush.h re-declares them for applications, which do
 * not see sp_frame.h): a new or renumbered status must change both. */
#define SAME_STATUS(n) _Static_assert((int)SEALPUSH_ST_##n == (int)SP_ST_##n, "SEALPUSH_ST_" #n)
SAME_STATUS(DELIVERED);
SAME_STATUS(QUEUED);
SAME_STATUS(BAD_DEVICE_TOKEN);
SAME_STATUS(PAYLOAD_TOO_LARGE);
SAME_STATUS(TOO_MANY_RECIPIENTS);
SAME_STATUS(TOO_MANY_REQUESTS);
SAME_STATUS(QUOTA_EXCEEDED);
SAME_STATUS(EXPIRED);
SAME_STATUS(DEVICE_OFFLINE);
SAME_STATUS(FORBIDDEN);
SAME_STATUS(TRY_LATER);
SAME_STATUS(SHUTDOWN);
SAME_STATUS(INTERNAL_ERROR);
SAME_STATUS(ACCESS_DENIED);
SAME_STATUS(BAD_SIZE);
#undef SAME_STATUS
_Static_assert(SEALPUSH_ACCESS_KEY_LEN == SP_ACCESS_KEY_LEN &&
                       SEALPUSH_ACCESS_KEYS_MAX == SP_ACCESS_SET_MAX &&
                       (int)SP_CLIENT_ANON_ANYONE == (int)SP_ANON_ANYONE &&
                       (int)SP_CLIENT_ANON_KEY_HOLDERS == (int)SP_ANON_KEY_HOLDERS,
               "access-set constants");
_Static_assert((int)SEALPUSH_ST_TIMEOUT > (int)SP_ST_INTERNAL_ERROR &&
                       (int)SEALPUSH_ST_NOT_SENT > (int)SP_ST_INTERNAL_ERROR,
               "the library's own statuses stay clear of the wire's");

#define DEF_KEEPALIVE      60
#define DEF_CONNECT_MS     10000
#define DEF_BACKOFF_MIN_MS 500
#define DEF_BACKOFF_MAX_MS 60000
#define DEF_MAX_QUEUED     4096
#define DEF_CLOSE_MS       5000
#define DEF_DEDUP          1024
#define PRE_WELCOME_FRAME  65536   /* largest frame accepted before WELCOME */
#define DELIVER_SLACK      1024    /* a DELIVER may exceed max_frame by its fixed fields */
#define DEF_RENEW_AT       0.75    /* renew once three quarters of the lifetime are gone */
#define RENEW_RETRY_MS     3600000 /* after a refusal (or a renewal), an hour */
#define READ_CHUNK         16384
#define NO_STATUS          0xFF

enum { C_NONE, C_RESOLVING, C_TCP, C_TLS, C_HELLO, C_READY };

typedef struct sp_send {
	TAILQ_ENTRY(sp_send) link;
	uint8_t msg_id[SP_MSG_ID_LEN];
	uint32_t n;
	uint32_t n_done;
	uint32_t n_wire; /* recipients in the SEND frame last written */
	uint8_t *tokens; /* n * 32 */
	uint8_t *status; /* n, NO_STATUS until answered */
	uint16_t *wire;  /* wire index -> index in tokens, for the frame last written */
	uint8_t *blob;
	uint8_t *keys; /* anonymous: n * 32 access keys, or NULL */
	uint32_t blob_len;
	uint32_t ttl;
	bool has_ttl;
	uint8_t priority;
	uint8_t collapse_len;
	uint8_t collapse[SP_COLLAPSE_MAX];
	uint32_t retry_after;
	uint64_t deadline; /* monotonic ms, 0 = none */
	void *user;
} sp_send_t;

TAILQ_HEAD(send_list, sp_send);

struct sp_client {
	struct event_base *base;
	sp_client_callbacks_t cb;
	uint32_t caps; /* the last WELCOME's capabilities */

	/* configuration */
	char *servers;                  /* the configured list, "HOST:PORT[,HOST:PORT...]" */
	unsigned n_servers, cur_server; /* relays in it; the one in host/port now */
	char host[256];
	char *server_name;
	char *agent;
	uint16_t port;
	bool host_is_ip;
	struct sockaddr_storage ip_addr;
	socklen_t ip_addr_len;
	bool send_only, no_reconnect;
	bool anonymous; /* sealed sender: no certificate, access keys (PROTOCOL.md 17) */
	uint16_t keepalive_wish, window_wish;
	uint32_t ping_timeout_ms, connect_ms, backoff_min, backoff_max, send_timeout_ms, close_ms;
	unsigned max_attempts, max_queued;
	int resend;
	SSL_CTX *ctx;
	uint8_t token[SP_TOKEN_LEN];

	/* renewal (PROTOCOL.md 16.4) */
	char *cert_file;
	EVP_PKEY *key;           /* the certificate's key, for the CSR */
	time_t cert_nb, cert_na; /* the current certificate's validity */
	double renew_at;         /* share of the lifetime; <= 0: never */
	bool renew_out;          /* a RENEW is unanswered */
	uint8_t renew_id[SP_MSG_ID_LEN];
	uint64_t renew_retry; /* monotonic ms before which no RENEW goes out */

	/* state */
	int state;
	int cstate;
	unsigned attempt;       /* failed attempts in a row */
	uint64_t retry_at;      /* WAITING: when to connect */
	uint64_t conn_deadline; /* CONNECTING: WELCOME by then */
	uint64_t close_deadline;
	bool closing, want_reconnect, started;
	int busy;
	bool dead;

	/* connection */
	sp_ctransport_t tr; /* socket, TLS, output buffers; tr.rev, tr.wev: our events on it */
	struct evdns_base *dns;
	struct evdns_getaddrinfo_request *dns_req;
	bool goaway;
	unsigned goaway_code;
	uint32_t goaway_retry;
	sp_decoder_t dec;
	uint64_t last_tx;
	bool ping_out;
	uint64_t ping_deadline;
	uint8_t ping_data[SP_PING_LEN];
	sp_client_limits_t lim;
	bool have_lim;
	bool resumed;
	const char *group; /* sp_tls_group_label() of the last WELCOMEd connection */
	SSL_SESSION *session;

	/* sends */
	struct send_list queue, inflight;
	size_t n_queue, n_inflight;

	/* receiving */
	uint8_t *acks; /* ids to ACK */
	size_t n_acks, acks_cap;
	uint8_t last_ack[SP_MSG_ID_LEN];
	bool have_last_ack;
	uint8_t resume_id[SP_MSG_ID_LEN];
	bool have_resume;
	uint8_t *dedup;
	unsigned dedup_cap, dedup_n, dedup_pos;

	struct event *tev, *kick;
	sp_client_stats_t st;
};

/* ---- small helpers ---------------------------------------------------------------------- */

static void seterr(char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static uint64_t now_ms(void)
{
	return sp_time_mono_ms();
}

static uint32_t rand_below(uint32_t n)
{
	uint32_t r = 0;

	if (n == 0)
		return 0;
	if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
		r = (uint32_t)now_ms() * 2654435761u;
	return r % n;
}

/* Escapes relay text (untrusted) for a detail line. */
static void quote_text(char *dst, size_t dstlen, const uint8_t *s, size_t n)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o + 5 < dstlen; i++) {
		if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\')
			dst[o++] = (char)s[i];
		else
			o += (size_t)snprintf(dst + o, dstlen - o, "\\x%02x", s[i]);
	}
	if (dstlen)
		dst[o < dstlen ? o : dstlen - 1] = '\0';
}

static void send_free(sp_send_t *s)
{
	if (s == NULL)
		return;
	free(s->tokens);
	free(s->status);
	free(s->wire);
	free(s->blob);
	free(s->keys);
	free(s);
}

/* ---- callbacks to the application ------------------------------------------------------- */

static void enter(sp_client_t *c)
{
	c->busy++;
}

static void destroy(sp_client_t *c);

static void leave(sp_client_t *c)
{
	if (--c->busy == 0 && c->dead)
		destroy(c);
}

static void emit_event(sp_client_t *c, sp_client_event_t *ev)
{
	if (c->dead || c->cb.event == NULL)
		return;
	if (ev->detail == NULL)
		ev->detail = "";
	c->busy++;
	c->cb.event(c, ev, c->cb.arg);
	c->busy--;
}

/* Removes s from its list, reports it and frees it. Missing statuses become st. */
static void send_complete(sp_client_t *c, sp_send_t *s, bool inflight, uint8_t st)
{
	sp_client_result_t r;

	if (inflight) {
		TAILQ_REMOVE(&c->inflight, s, link);
		c->n_inflight--;
	} else {
		TAILQ_REMOVE(&c->queue, s, link);
		c->n_queue--;
	}
	for (uint32_t i = 0; i < s->n; i++)
		if (s->status[i] == NO_STATUS)
			s->status[i] = st;
	c->st.results++;
	if (!c->dead && c->cb.result != NULL) {
		r = (sp_client_result_t){.msg_id = s->msg_id,
		                         .n = s->n,
		                         .tokens = s->tokens,
		                         .statuses = s->status,
		                         .retry_after_ms = s->retry_after,
		                         .user = s->user};
		c->busy++;
		c->cb.result(c, &r, c->cb.arg);
		c->busy--;
	}
	send_free(s);
}

static void fail_all_sends(sp_client_t *c, uint8_t st)
{
	while (!TAILQ_EMPTY(&c->inflight))
		send_complete(c, TAILQ_FIRST(&c->inflight), true, st);
	while (!TAILQ_EMPTY(&c->queue))
		send_complete(c, TAILQ_FIRST(&c->queue), false, st);
}

/* ---- renewal (PROTOCOL.md 16.4) ------------------------------------------------------------ */

static time_t asn1_unix(const ASN1_TIME *t)
{
	struct tm tm;

	return t && ASN1_TIME_to_tm(t, &tm) ? timegm(&tm) : 0;
}

/* When (monotonic ms) the next RENEW is due on the current connection, or UINT64_MAX. */
static uint64_t renew_due(const sp_client_t *c)
{
	uint64_t now = now_ms(), due;
	double wall = (double)time(NULL), at;

	if (c->cstate != C_READY || !(c->caps & SP_CAP_RENEW) || c->renew_out || c->renew_at <= 0 ||
	    c->cert_na <= c->cert_nb)
		return UINT64_MAX;
	at = (double)c->cert_nb + c->renew_at * (double)(c->cert_na - c->cert_nb);
	due = at <= wall ? now : now + (uint64_t)((at - wall) * 1000.0);
	return due > c->renew_retry ? due : c->renew_retry;
}

static int flush(sp_client_t *c);
static int out_frame(sp_client_t *c, sp_frame_t *f);

/* Sends RENEW with a CSR of our key. Returns 0, or -1 if the connection ended. */
static int renew_send(sp_client_t *c)
{
	uint8_t *der = NULL;
	size_t len = 0;
	sp_frame_t f = {.type = SP_RENEW, .fields = SP_BIT(SP_F_MSG_ID) | SP_BIT(SP_F_CSR)};
	int r;

	if (sp_enroll_make_csr(c->key, &der, &len) < 0 || len > SP_CSR_MAX ||
	    RAND_bytes(c->renew_id, sizeof(c->renew_id)) != 1) {
		OPENSSL_free(der);
		c->renew_retry = now_ms() + RENEW_RETRY_MS;
		return 0;
	}
	f.msg_id = c->renew_id;
	f.csr = der;
	f.csr_len = (uint32_t)len;
	r = out_frame(c, &f);
	OPENSSL_free(der);
	if (r < 0)
		return r;
	c->renew_out = true;
	return flush(c);
}

/* Writes data over path atomically (a temporary file beside it, renamed). Returns 0 or a
 * negative errno. */
static int replace_file(const char *path, const void *data, size_t len)
{
	char tmp[4096];
	int fd, r = 0;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.renew-tmp", path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (write(fd, data, len) != (ssize_t)len || fsync(fd) < 0)
		r = errno ? -errno : -EIO;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	return r;
}

/* RENEWED: checks the chain (ours: the same key, so the same token), writes it over
 * cert_file and puts it into the TLS context for the next connection. */
static int on_renewed(sp_client_t *c, const sp_frame_t *f)
{
	sp_client_event_t ev = {.type = SP_CLIENT_EV_RENEWED};
	BIO *b;
	X509 *x = NULL;
	uint8_t tok[SP_TOKEN_LEN];
	char buf[256], when[32];
	struct tm tm;
	time_t na;
	int r;

	if (!c->renew_out || memcmp(f->msg_id, c->renew_id, SP_MSG_ID_LEN) != 0)
		return 0; /* not ours (a stale answer) */
	c->renew_out = false;
	c->renew_retry = now_ms() + RENEW_RETRY_MS;
	b = BIO_new_mem_buf(f->cert_chain, (int)f->cert_chain_len);
	x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	if (!x || sp_token_from_cert(x, tok) < 0 || memcmp(tok, c->token, SP_TOKEN_LEN) != 0 ||
	    memcmp(f->token, c->token, SP_TOKEN_LEN) != 0 ||
	    X509_check_private_key(x, c->key) != 1) {
		snprintf(buf, sizeof(buf),
		         "the relay's renewed certificate is not of our key; kept "
		         "the old one");
		goto report;
	}
	r = replace_file(c->cert_file, f->cert_chain, f->cert_chain_len);
	if (r < 0) {
		snprintf(buf, sizeof(buf), "renewed, but writing %s failed: %s", c->cert_file,
		         strerror(-r));
		goto report;
	}
	if (SSL_CTX_use_certificate_chain_file(c->ctx, c->cert_file) != 1 ||
	    SSL_CTX_use_PrivateKey(c->ctx, c->key) != 1) {
		snprintf(buf, sizeof(buf), "renewed and written to %s, but it did not load",
		         c->cert_file);
		goto report;
	}
	/* The next connection shows the new certificate: no resumption of the old session. */
	SSL_SESSION_free(c->session);
	c->session = NULL;
	c->cert_nb = asn1_unix(X509_get0_notBefore(x));
	na = c->cert_na = asn1_unix(X509_get0_notAfter(x));
	gmtime_r(&na, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	snprintf(buf, sizeof(buf), "renewed the certificate (%s), valid until %s", c->cert_file,
	         when);
	c->renew_retry = 0;
report:
	ERR_clear_error();
	X509_free(x);
	ev.detail = buf;
	emit_event(c, &ev);
	return c->dead ? -1 : 0;
}

/* ---- timer ------------------------------------------------------------------------------- */

static void arm_timer(sp_client_t *c)
{
	uint64_t t = UINT64_MAX, now = now_ms();
	struct timeval tv;
	sp_send_t *s;

	if (c->dead)
		return;
	if (c->state == SP_CLIENT_CONNECTING ||
	    (c->state == SP_CLIENT_CLOSING && c->cstate != C_NONE && c->cstate != C_READY))
		t = c->conn_deadline;
	if (c->state == SP_CLIENT_WAITING)
		t = c->retry_at;
	if (c->cstate == C_READY) {
		uint64_t k;

		if (c->ping_out)
			k = c->ping_deadline;
		else
			k = c->last_tx + (uint64_t)c->lim.keepalive * 1000;
		if (k < t)
			t = k;
		k = renew_due(c);
		if (k < t)
			t = k;
	}
	if (c->state == SP_CLIENT_CLOSING && c->close_deadline < t)
		t = c->close_deadline;
	TAILQ_FOREACH(s, &c->queue, link)
	if (s->deadline && s->deadline < t)
		t = s->deadline;
	TAILQ_FOREACH(s, &c->inflight, link)
	if (s->deadline && s->deadline < t)
		t = s->deadline;
	if (t == UINT64_MAX) {
		evtimer_del(c->tev);
		return;
	}
	t = t > now ? t - now : 0;
	tv.tv_sec = (time_t)(t / 1000);
	tv.tv_usec = (suseconds_t)(t % 1000) * 1000;
	evtimer_add(c->tev, &tv);
}

static void kick(sp_client_t *c)
{
	if (!c->dead)
		event_active(c->kick, 0, 0);
}

/* ---- output ------------------------------------------------------------------------------ */

/* Encodes f into the plaintext buffer. Returns 0, -ENOMEM or -EINVAL (a codec error). */
static int out_frame(sp_client_t *c, sp_frame_t *f)
{
	size_t need = 0;
	int r = sp_ctransport_put(&c->tr, f, &need);

	if (r < 0)
		return r == SP_CT_NOMEM ? -ENOMEM : -EINVAL;
	c->st.bytes_out += need;
	c->last_tx = now_ms();
	return 0;
}

/* ---- connection teardown and what comes next ---------------------------------------------- */

static void conn_begin(sp_client_t *c);

static void conn_release(sp_client_t *c, bool graceful)
{
	if (c->dns_req != NULL) {
		evdns_getaddrinfo_cancel(c->dns_req);
		c->dns_req = NULL;
	}
	if (graceful)
		sp_ctransport_shutdown(&c->tr); /* close_notify, best effort */
	sp_ctransport_close(&c->tr);            /* and the events on the socket */
	sp_decoder_release(&c->dec);
	sp_ctransport_release(&c->tr);
	/* ACKs not written: the last one goes into the next HELLO as resume_id. */
	if (c->n_acks > 0 && c->have_last_ack) {
		memcpy(c->resume_id, c->last_ack, SP_MSG_ID_LEN);
		c->have_resume = true;
	}
	c->n_acks = 0;
	c->cstate = C_NONE;
	c->ping_out = false;
	ERR_clear_error();
}

static void stop(sp_client_t *c, int cause, unsigned code, const char *detail)
{
	sp_client_event_t ev = {
	        .type = SP_CLIENT_EV_STOPPED, .cause = cause, .code = code, .detail = detail};

	if (c->state == SP_CLIENT_STOPPED)
		return;
	c->state = SP_CLIENT_STOPPED;
	fail_all_sends(c, SEALPUSH_ST_NOT_SENT);
	if (c->tev)
		evtimer_del(c->tev);
	emit_event(c, &ev);
}

/*
 * Ends the connection (or attempt) for cause and decides what comes next. graceful: send
 * close_notify. Calls the application (DISCONNECTED, results of failed sends, STOPPED).
 */
static void conn_drop(sp_client_t *c, int cause, unsigned code, const char *detail, bool graceful)
{
	bool was_ready = c->cstate == C_READY;
	bool goaway = c->goaway;
	unsigned gcode = c->goaway_code;
	uint32_t gretry = c->goaway_retry;
	sp_client_event_t ev = {.type = SP_CLIENT_EV_DISCONNECTED, .detail = detail};
	char buf[400];
	sp_send_t *s;
	uint32_t delay = 0;
	int final = 0;

	if (c->state == SP_CLIENT_STOPPED)
		return;
	c->st.disconnects++;
	conn_release(c, graceful);
	c->renew_out = false; /* asked again on the next connection */
	c->goaway = false;
	if (goaway && (cause == SP_CLIENT_C_CLOSED || cause == SP_CLIENT_C_BROKEN)) {
		snprintf(buf, sizeof(buf), "the relay closed the connection after GOAWAY %s",
		         sp_error_name(gcode));
		cause = SP_CLIENT_C_GOAWAY;
		code = gcode;
		detail = buf;
	}
	ev.cause = cause;
	ev.code = code;
	ev.detail = detail;

	/* Sends written on this connection and not fully answered. */
	if (c->resend == SP_CLIENT_RESEND_FAIL) {
		while (!TAILQ_EMPTY(&c->inflight))
			send_complete(c, TAILQ_FIRST(&c->inflight), true, SEALPUSH_ST_NOT_SENT);
	} else {
		while ((s = TAILQ_LAST(&c->inflight, send_list)) != NULL) {
			TAILQ_REMOVE(&c->inflight, s, link);
			c->n_inflight--;
			TAILQ_INSERT_HEAD(&c->queue, s, link);
			c->n_queue++;
		}
	}
	if (c->dead)
		return;

	if (c->closing) {
		final = SP_CLIENT_C_LOCAL;
	} else if (cause == SP_CLIENT_C_TOKEN ||
	           (cause == SP_CLIENT_C_GOAWAY &&
	            (code == SP_ERR_REPLACED || code == SP_ERR_CERT_REVOKED))) {
		final = cause;
	} else if (was_ready && c->no_reconnect) {
		final = cause;
	} else if (cause == SP_CLIENT_C_LOCAL) {
		delay = 0;
	} else {
		if (!was_ready)
			c->attempt++;
		if (c->max_attempts && c->attempt >= c->max_attempts) {
			final = SP_CLIENT_C_GAVE_UP;
		} else if (cause == SP_CLIENT_C_GOAWAY && gretry) {
			delay = gretry + rand_below(c->backoff_min + 1);
		} else {
			uint64_t cap = (uint64_t)c->backoff_min
			               << (c->attempt < 20 ? c->attempt : 20);

			if (cap > c->backoff_max)
				cap = c->backoff_max;
			delay = rand_below((uint32_t)cap + 1);
		}
	}
	ev.will_retry = final == 0;
	ev.retry_in_ms = final == 0 ? delay : 0;
	emit_event(c, &ev);
	if (c->dead || c->state == SP_CLIENT_STOPPED)
		return;
	if (final) {
		if (final == SP_CLIENT_C_LOCAL)
			stop(c, final, 0, "closed by the application");
		else if (final == SP_CLIENT_C_GAVE_UP) {
			snprintf(buf, sizeof(buf), "gave up after %u failed attempts; last: %.300s",
			         c->attempt, detail);
			stop(c, final, code, buf);
		} else
			stop(c, final, code, detail);
		return;
	}
	c->state = SP_CLIENT_WAITING;
	c->retry_at = now_ms() + delay;
	arm_timer(c);
}

/* A failure of the TLS layer: the detail says what OpenSSL saw. */
static void conn_tls_fail(sp_client_t *c, const char *what)
{
	char buf[400], reason[256] = "";
	unsigned long e = ERR_peek_last_error();
	long vr = c->tr.ssl ? SSL_get_verify_result(c->tr.ssl) : X509_V_OK;
	int cause = c->cstate == C_READY ? SP_CLIENT_C_BROKEN : SP_CLIENT_C_TLS;

	if (e != 0)
		ERR_error_string_n(e, reason, sizeof(reason));
	if (c->cstate <= C_TLS && vr != X509_V_OK)
		snprintf(buf, sizeof(buf), "%s: the relay's certificate: %s", what,
		         X509_verify_cert_error_string(vr));
	else if (c->tr.eof && e == 0)
		snprintf(buf, sizeof(buf), "%s: the relay closed the connection%s", what,
		         c->cstate < C_READY ? " before WELCOME" : "");
	else {
		const char *r = e ? ERR_reason_error_string(e) : NULL;

		snprintf(buf, sizeof(buf), "%s: %s", what,
		         r ? r : (e ? reason : "connection broken"));
	}
	if (c->tr.eof && e == 0 && c->cstate >= C_HELLO)
		cause = SP_CLIENT_C_CLOSED;
	conn_drop(c, cause, 0, buf, false);
}

/* A protocol error by the relay: tell it (ERROR, CLOSING) and close. */
static void conn_protocol_error(sp_client_t *c, int err, const sp_frame_t *f, const char *why)
{
	char reason[SP_REASON_MAX], buf[400];
	sp_frame_t e = {.type = SP_ERROR, .flags = SP_ERROR_CLOSING};

	if (why == NULL)
		why = sp_frame_strerror(err, f, reason, sizeof(reason));
	else
		snprintf(reason, sizeof(reason), "%s", why);
	e.fields = SP_BIT(SP_F_CODE) | SP_BIT(SP_F_REASON);
	e.code = (uint16_t)(err < 0 ? -err : err);
	e.reason = (const uint8_t *)reason;
	e.reason_len = (uint32_t)strlen(reason);
	if (f != NULL && f->type != 0) {
		e.fields |= SP_BIT(SP_F_FRAME_TYPE);
		e.frame_type = f->type;
	}
	if (c->tr.ssl != NULL && c->tr.tls_done && out_frame(c, &e) == 0)
		(void)sp_ctransport_flush(&c->tr);
	snprintf(buf, sizeof(buf), "protocol error by the relay: %s", reason);
	conn_drop(c, SP_CLIENT_C_PROTOCOL, e.code, buf, true);
}

/* ---- writing sends and ACKs -------------------------------------------------------------- */

/* Writes the first queued send (c->cstate READY). Returns 0, or -1 if the connection ended. */
static int write_send(sp_client_t *c, sp_send_t *s)
{
	sp_frame_t f = {.type = SP_SEND};
	uint8_t *rcpt;
	uint32_t k = 0;
	size_t need = 0;
	int r;

	for (uint32_t i = 0; i < s->n; i++)
		if (s->status[i] == NO_STATUS)
			s->wire[k++] = (uint16_t)i;
	s->n_wire = k;
	if (k > c->lim.max_recipients) {
		send_complete(c, s, false, SEALPUSH_ST_TOO_MANY_RECIPIENTS);
		return 0;
	}
	if (s->blob_len > c->lim.max_blob) {
		send_complete(c, s, false, SEALPUSH_ST_PAYLOAD_TOO_LARGE);
		return 0;
	}
	rcpt = malloc((size_t)k * SP_TOKEN_LEN);
	if (rcpt == NULL) {
		conn_drop(c, SP_CLIENT_C_NOMEM, 0, "out of memory", true);
		return -1;
	}
	for (uint32_t i = 0; i < k; i++)
		memcpy(rcpt + (size_t)i * SP_TOKEN_LEN,
		       s->tokens + (size_t)s->wire[i] * SP_TOKEN_LEN, SP_TOKEN_LEN);
	f.fields = SP_BIT(SP_F_MSG_ID) | SP_BIT(SP_F_RECIPIENTS) | SP_BIT(SP_F_BLOB) |
	           SP_BIT(SP_F_PRIORITY);
	f.msg_id = s->msg_id;
	f.recipients = rcpt;
	f.n_recipients = k;
	f.blob = s->blob;
	f.blob_len = s->blob_len;
	f.priority = s->priority;
	if (s->keys) { /* anonymous (PROTOCOL.md 17.3): the keys of the recipients written */
		uint8_t *keys = malloc((size_t)k * SP_ACCESS_KEY_LEN);

		if (keys == NULL) {
			free(rcpt);
			conn_drop(c, SP_CLIENT_C_NOMEM, 0, "out of memory", true);
			return -1;
		}
		for (uint32_t i = 0; i < k; i++)
			memcpy(keys + (size_t)i * SP_ACCESS_KEY_LEN,
			       s->keys + (size_t)s->wire[i] * SP_ACCESS_KEY_LEN, SP_ACCESS_KEY_LEN);
		f.fields |= SP_BIT(SP_F_ACCESS_KEYS);
		f.access_keys = keys;
		f.n_access_keys = k;
	}
	if (s->has_ttl) {
		f.fields |= SP_BIT(SP_F_TTL);
		f.ttl = s->ttl;
	}
	if (s->collapse_len) {
		f.fields |= SP_BIT(SP_F_COLLAPSE_ID);
		f.collapse_id = s->collapse;
		f.collapse_id_len = s->collapse_len;
	}
	r = sp_frame_encode(&f, NULL, 0, &need);
	if (r == -SP_ERR_NOSPACE && need - SP_HEADER_LEN > c->lim.max_frame) {
		free(rcpt);
		send_complete(c, s, false, SEALPUSH_ST_PAYLOAD_TOO_LARGE);
		return 0;
	}
	r = out_frame(c, &f);
	free(rcpt);
	free((void *)f.access_keys);
	if (r < 0) {
		send_complete(c, s, false, SEALPUSH_ST_INTERNAL_ERROR);
		return 0;
	}
	TAILQ_REMOVE(&c->queue, s, link);
	c->n_queue--;
	TAILQ_INSERT_TAIL(&c->inflight, s, link);
	c->n_inflight++;
	c->st.sends++;
	return 0;
}

static int write_acks(sp_client_t *c)
{
	size_t per = (c->lim.max_frame - 16) / SP_MSG_ID_LEN, off = 0;

	if (per > 65535)
		per = 65535;
	while (off < c->n_acks) {
		size_t n = c->n_acks - off < per ? c->n_acks - off : per;
		sp_frame_t f = {.type = SP_ACK, .fields = SP_BIT(SP_F_MSG_IDS)};

		f.msg_ids = c->acks + off * SP_MSG_ID_LEN;
		f.n_msg_ids = (uint32_t)n;
		if (out_frame(c, &f) < 0)
			return -1;
		c->st.acks += n;
		off += n;
	}
	c->n_acks = 0;
	if (c->acks_cap > 4096) {
		free(c->acks);
		c->acks = NULL;
		c->acks_cap = 0;
	}
	return 0;
}

static int read_step(sp_client_t *c);

/*
 * send() failed. The relay may have said why just before it closed (a TLS alert refusing our
 * certificate, an ERROR): read what arrived first, so the reason is that and not "reset".
 */
static void conn_write_failed(sp_client_t *c, int err)
{
	char b[160];

	if (c->tr.ssl != NULL && !c->tr.write_failed) {
		sp_ctransport_write_failed(&c->tr);
		if (read_step(c) < 0)
			return; /* it ended the connection with a better reason */
	}
	if (c->cstate == C_NONE)
		return;
	snprintf(b, sizeof(b), "write to the relay failed: %s", strerror(err));
	conn_drop(c, c->cstate < C_HELLO ? SP_CLIENT_C_TLS : SP_CLIENT_C_BROKEN, 0, b, false);
}

/* Hands the plaintext to TLS and the records to the socket. Returns 0, or -1 if the
 * connection ended. */
static int flush(sp_client_t *c)
{
	switch (sp_ctransport_flush(&c->tr)) {
	case 0:
		return 0;
	case SP_CT_TLS:
		conn_tls_fail(c, "TLS write failed");
		return -1;
	case SP_CT_NOMEM:
		conn_drop(c, SP_CLIENT_C_NOMEM, 0, "out of memory", false);
		return -1;
	default: /* SP_CT_SEND */
		conn_write_failed(c, c->tr.err);
		return -1;
	}
}

static void finish_close(sp_client_t *c)
{
	conn_release(c, true);
	stop(c, SP_CLIENT_C_LOCAL, 0, "closed by the application");
}

/* Writes what may be written now: queued sends within the window, ACKs; then flushes. */
static int pump(sp_client_t *c)
{
	if (c->cstate != C_READY)
		return 0;
	if (!c->goaway) {
		while (!c->dead && !TAILQ_EMPTY(&c->queue) && c->n_inflight < c->lim.send_window)
			if (write_send(c, TAILQ_FIRST(&c->queue)) < 0)
				return -1;
		if (c->dead || c->cstate != C_READY)
			return -1;
	}
	if (c->n_acks > 0 && write_acks(c) < 0) {
		conn_drop(c, SP_CLIENT_C_NOMEM, 0, "out of memory", false);
		return -1;
	}
	if (flush(c) < 0)
		return -1;
	if (c->state == SP_CLIENT_CLOSING && c->n_inflight == 0 && (c->n_queue == 0 || c->goaway) &&
	    sp_ctransport_unsent(&c->tr) == 0) {
		finish_close(c);
		return -1;
	}
	return 0;
}

/* ---- frames from the relay --------------------------------------------------------------- */

static bool dedup_has(sp_client_t *c, const uint8_t *id)
{
	for (unsigned i = 0; i < c->dedup_n; i++)
		if (memcmp(c->dedup + (size_t)i * SP_MSG_ID_LEN, id, SP_MSG_ID_LEN) == 0)
			return true;
	return false;
}

static void dedup_add(sp_client_t *c, const uint8_t *id)
{
	if (c->dedup_cap == 0 || dedup_has(c, id))
		return;
	memcpy(c->dedup + (size_t)c->dedup_pos * SP_MSG_ID_LEN, id, SP_MSG_ID_LEN);
	c->dedup_pos = (c->dedup_pos + 1) % c->dedup_cap;
	if (c->dedup_n < c->dedup_cap)
		c->dedup_n++;
}

static int ack_add(sp_client_t *c, const uint8_t *id)
{
	if (c->n_acks >= 65535 * 16)
		return -ENOBUFS;
	if (sp_buf_reserve(&c->acks, &c->acks_cap, (c->n_acks + 1) * SP_MSG_ID_LEN, 1024) < 0)
		return -ENOMEM;
	memcpy(c->acks + c->n_acks * SP_MSG_ID_LEN, id, SP_MSG_ID_LEN);
	c->n_acks++;
	memcpy(c->last_ack, id, SP_MSG_ID_LEN);
	c->have_last_ack = true;
	return 0;
}

static int on_welcome(sp_client_t *c, const sp_frame_t *f)
{
	sp_client_event_t ev = {.type = SP_CLIENT_EV_CONNECTED, .detail = "connected"};
	char a[SP_TOKEN_HEX_LEN + 1], b[SP_TOKEN_HEX_LEN + 1], buf[512];

	if (memcmp(f->token, c->token, SP_TOKEN_LEN) != 0) {
		sp_token_hex(f->token, a);
		sp_token_hex(c->token, b);
		snprintf(buf, sizeof(buf), "the relay sees token %s, our certificate's is %s", a,
		         b);
		conn_drop(c, SP_CLIENT_C_TOKEN, 0, buf, true);
		return -1;
	}
	c->lim = (sp_client_limits_t){.max_frame = f->max_frame,
	                              .max_blob = f->max_blob,
	                              .max_recipients = f->max_recipients,
	                              .window = f->window,
	                              .send_window = f->send_window,
	                              .keepalive = f->keepalive};
	c->have_lim = true;
	c->dec.max_frame = f->max_frame + DELIVER_SLACK > SP_MAX_FRAME_V1
	                           ? SP_MAX_FRAME_V1
	                           : f->max_frame + DELIVER_SLACK;
	c->caps = (f->fields & SP_BIT(SP_F_CAPABILITIES)) ? f->capabilities : 0;
	c->cstate = C_READY;
	if (c->state == SP_CLIENT_CONNECTING)
		c->state = SP_CLIENT_READY;
	c->attempt = 0;
	c->have_resume = false;
	c->resumed = sp_ctransport_resumed(&c->tr);
	c->group = sp_tls_group_label((enum sp_tls_group)sp_ctransport_group(&c->tr));
	c->st.welcomes++;
	if (c->resumed)
		c->st.resumed++;
	ev.resumed = c->resumed;
	ev.token = f->token;
	ev.limits = &c->lim;
	snprintf(buf, sizeof(buf), "connected to %s:%u (%s TLS session, %s)", c->host, c->port,
	         c->resumed ? "resumed" : "new", c->group);
	ev.detail = buf;
	emit_event(c, &ev);
	if (c->dead)
		return -1;
	/* A certificate already past its renewal point renews at once (else the timer does). */
	if (renew_due(c) <= now_ms() && renew_send(c) < 0)
		return -1;
	arm_timer(c);
	return 0;
}

static int on_send_result(sp_client_t *c, const sp_frame_t *f)
{
	sp_send_t *s;

	TAILQ_FOREACH(s, &c->inflight, link)
	if (memcmp(s->msg_id, f->msg_id, SP_MSG_ID_LEN) == 0)
		break;
	if (s == NULL)
		return 0; /* answered already (timed out here) */
	for (uint32_t i = 0; i < f->n_results; i++) {
		uint16_t idx;
		uint8_t st;

		sp_result_get(f, i, &idx, &st);
		if (idx >= s->n_wire || s->status[s->wire[idx]] != NO_STATUS)
			continue;
		s->status[s->wire[idx]] = st;
		s->n_done++;
	}
	if ((f->fields & SP_BIT(SP_F_RETRY_AFTER)) && f->retry_after > s->retry_after)
		s->retry_after = f->retry_after;
	if (s->n_done == s->n)
		send_complete(c, s, true, NO_STATUS);
	return c->dead ? -1 : 0;
}

static int on_deliver(sp_client_t *c, const sp_frame_t *f)
{
	sp_client_message_t m;

	if (dedup_has(c, f->msg_id)) {
		c->st.duplicates++;
		return ack_add(c, f->msg_id) < 0 ? -1 : 0;
	}
	m = (sp_client_message_t){.msg_id = f->msg_id,
	                          .blob = f->blob,
	                          .blob_len = f->blob_len,
	                          .priority = f->priority,
	                          .stored = (f->flags & SP_DELIVER_STORED) != 0};
	if (f->fields & SP_BIT(SP_F_COLLAPSE_ID)) {
		m.collapse_id = f->collapse_id;
		m.collapse_id_len = f->collapse_id_len;
	}
	c->st.messages++;
	if (c->cb.message != NULL) {
		c->busy++;
		c->cb.message(c, &m, c->cb.arg);
		c->busy--;
	} else {
		dedup_add(c, f->msg_id);
		ack_add(c, f->msg_id);
	}
	return c->dead ? -1 : 0;
}

static int on_frame(sp_client_t *c, const sp_frame_t *f)
{
	char buf[400], q[SP_REASON_MAX * 4 + 1] = "";

	if (f->type == SP_ERROR || f->type == SP_GOAWAY) {
		if (f->fields & SP_BIT(SP_F_REASON))
			quote_text(q, sizeof(q), f->reason, f->reason_len);
	}
	switch (f->type) {
	case SP_WELCOME:
		if (c->cstate != C_HELLO)
			break;
		return on_welcome(c, f);
	case SP_ERROR:
		snprintf(buf, sizeof(buf), "the relay sent ERROR %s%s%.300s",
		         sp_error_name(f->code), q[0] ? ": " : "", q);
		if ((f->flags & SP_ERROR_CLOSING) || c->cstate != C_READY) {
			conn_drop(c, SP_CLIENT_C_PROTOCOL, f->code, buf, true);
			return -1;
		} else {
			sp_client_event_t ev = {
			        .type = SP_CLIENT_EV_ERROR, .code = f->code, .detail = buf};

			if ((f->code == SP_ERR_RENEW_REFUSED ||
			     f->code == SP_ERR_RENEW_UNAVAILABLE) &&
			    c->renew_out) {
				c->renew_out = false;
				c->renew_retry = now_ms() + RENEW_RETRY_MS;
			}

			emit_event(c, &ev);
			return c->dead ? -1 : 0;
		}
	case SP_GOAWAY:
		c->goaway = true;
		c->goaway_code = f->code;
		c->goaway_retry = (f->fields & SP_BIT(SP_F_RETRY_AFTER)) ? f->retry_after : 0;
		if (c->cstate != C_READY) {
			snprintf(buf, sizeof(buf), "the relay said GOAWAY %s%s%.300s",
			         sp_error_name(f->code), q[0] ? ": " : "", q);
			conn_drop(c, SP_CLIENT_C_GOAWAY, f->code, buf, true);
			return -1;
		}
		if (c->state == SP_CLIENT_READY)
			c->state = SP_CLIENT_DRAINING;
		return 0;
	case SP_PING:
		if (c->cstate != C_READY)
			break;
		{
			sp_frame_t p = {.type = SP_PONG};

			if (f->fields & SP_BIT(SP_F_DATA)) {
				p.fields = SP_BIT(SP_F_DATA);
				p.data = f->data;
			}
			return out_frame(c, &p) < 0 ? -1 : 0;
		}
	case SP_PONG:
		if (c->ping_out && (f->fields & SP_BIT(SP_F_DATA)) &&
		    memcmp(f->data, c->ping_data, SP_PING_LEN) == 0)
			c->ping_out = false;
		return 0;
	case SP_SEND_RESULT:
		if (c->cstate != C_READY)
			break;
		return on_send_result(c, f);
	case SP_DELIVER:
		if (c->cstate != C_READY)
			break;
		return on_deliver(c, f);
	case SP_RENEWED:
		if (c->cstate != C_READY)
			break;
		return on_renewed(c, f);
	case SP_SUBSCRIPTION:
		if (c->cstate != C_READY)
			break;
		if (c->cb.subscription != NULL) {
			sp_client_subscription_t s = {
			        .req_id = f->msg_id,
			        .status = f->status,
			        .sub_id = (f->fields & SP_BIT(SP_F_SUB_ID)) ? f->sub_id : NULL,
			        .endpoint = (const char *)f->endpoint,
			        .endpoint_len = f->endpoint_len,
			        .app_key = (f->fields & SP_BIT(SP_F_APP_KEY)) ? f->app_key : NULL,
			        .sub_ids = f->sub_ids,
			        .n_sub_ids = f->n_sub_ids,
			        .reason = (const char *)f->reason,
			        .reason_len = f->reason_len};

			c->cb.subscription(c, &s, c->cb.arg);
		}
		return c->dead ? -1 : 0;
	case SP_ACCESS_STATE:
		if (c->cstate != C_READY || c->anonymous)
			break;
		if (c->cb.access_state != NULL) {
			sp_client_access_state_t a = {.req_id = f->msg_id, .status = f->status};

			if (f->fields & SP_BIT(SP_F_ANON_MODE))
				a.has_mode = true, a.anon_mode = f->anon_mode;
			if (f->fields & SP_BIT(SP_F_RETRY_AFTER))
				a.retry_after_ms = f->retry_after;
			if (f->fields & SP_BIT(SP_F_REASON))
				a.reason = (const char *)f->reason, a.reason_len = f->reason_len;
			c->cb.access_state(c, &a, c->cb.arg);
		}
		return c->dead ? -1 : 0;
	case SP_DIR_ANSWER:
		if (c->cstate != C_READY)
			break;
		if (c->cb.dir_answer != NULL) {
			sp_client_dir_answer_t a = {.req_id = f->msg_id, .status = f->status};

			if (f->fields & SP_BIT(SP_F_DIR_ENTRY))
				a.entry = f->dir_entry, a.entry_len = f->dir_entry_len;
			if (f->fields & SP_BIT(SP_F_LEAF_INDEX)) {
				a.has_index = true;
				for (int i = 0; i < 8; i++)
					a.index = a.index << 8 | f->leaf_index[i];
			}
			if (f->fields & SP_BIT(SP_F_TREE_HEAD))
				a.head = f->tree_head, a.head_len = f->tree_head_len;
			if (f->fields & SP_BIT(SP_F_INCLUSION))
				a.inclusion = f->inclusion, a.inclusion_len = f->inclusion_len;
			if (f->fields & SP_BIT(SP_F_CONSISTENCY))
				a.consistency = f->consistency,
				a.consistency_len = f->consistency_len;
			if (f->fields & SP_BIT(SP_F_RETRY_AFTER))
				a.retry_after_ms = f->retry_after;
			if (f->fields & SP_BIT(SP_F_REASON))
				a.reason = (const char *)f->reason, a.reason_len = f->reason_len;
			if (f->fields & SP_BIT(SP_F_HIST_LEFT))
				a.has_hist_left = true, a.hist_left = f->hist_left;
			c->cb.dir_answer(c, &a, c->cb.arg);
		}
		return c->dead ? -1 : 0;
	default:
		break;
	}
	snprintf(buf, sizeof(buf), "%s frame (type 0x%02x) is not expected %s",
	         sp_frame_type_name(f->type), f->type,
	         c->cstate == C_READY ? "from a relay" : "before WELCOME");
	conn_protocol_error(c, -SP_ERR_UNEXPECTED_FRAME, f, buf);
	return -1;
}

/* Decodes and handles the plaintext bytes p[0..n). Returns 0 or -1 (connection ended). */
static int on_plaintext(sp_client_t *c, const uint8_t *p, size_t n)
{
	c->st.bytes_in += n;
	while (n > 0) {
		sp_frame_t f;
		size_t used = 0;
		int r = sp_decoder_feed(&c->dec, p, n, &used, &f);

		p += used;
		n -= used;
		if (r == 1) {
			if (on_frame(c, &f) < 0 || c->cstate == C_NONE)
				return -1;
		} else if (r == -SP_ERR_UNKNOWN_FRAME_TYPE) {
			continue; /* a later version's frame: skipped (PROTOCOL.md 10) */
		} else if (r < 0) {
			conn_protocol_error(c, r, &f, NULL);
			return -1;
		}
	}
	return 0;
}

/* ---- TLS and socket events -------------------------------------------------------------- */

static int send_hello(sp_client_t *c)
{
	sp_frame_t f = {.type = SP_HELLO};

	f.fields = SP_BIT(SP_F_VERSION) | SP_BIT(SP_F_KEEPALIVE) | SP_BIT(SP_F_AGENT);
	f.version = SP_VERSION_1;
	f.keepalive = c->keepalive_wish;
	f.agent = (const uint8_t *)c->agent;
	f.agent_len = (uint32_t)strlen(c->agent);
	if (c->window_wish) {
		f.fields |= SP_BIT(SP_F_WINDOW);
		f.window = c->window_wish;
	}
	if (c->have_resume && !c->send_only) {
		f.fields |= SP_BIT(SP_F_RESUME_ID);
		f.resume_id = c->resume_id;
	}
	if (c->send_only)
		f.flags = SP_HELLO_SEND_ONLY;
	return out_frame(c, &f);
}

/* Runs the handshake; on completion checks ALPN and sends HELLO. Returns 1 done, 0 more, -1
 * the connection ended. */
static int tls_step(sp_client_t *c)
{
	switch (sp_ctransport_handshake(&c->tr)) {
	case 1:
		break;
	case 0:
		return 0;
	case SP_CT_NOMEM:
		conn_drop(c, SP_CLIENT_C_NOMEM, 0, "out of memory", false);
		return -1;
	case SP_CT_SEND:
		conn_write_failed(c, c->tr.err);
		return -1;
	case SP_CT_ALPN:
		conn_drop(c, SP_CLIENT_C_TLS, 0,
		          "TLS handshake: the relay selected no sealpush/1 ALPN", true);
		return -1;
	default: /* SP_CT_TLS */
		conn_tls_fail(c, "TLS handshake failed");
		return -1;
	}
	c->cstate = C_HELLO;
	if (send_hello(c) < 0 || flush(c) < 0) {
		if (c->cstate != C_NONE)
			conn_drop(c, SP_CLIENT_C_NOMEM, 0, "cannot write HELLO", false);
		return -1;
	}
	return 1;
}

/* Reads the socket into the read BIO, then TLS records into frames. */
static int read_step(sp_client_t *c)
{
	uint8_t buf[READ_CHUNK];
	int r = sp_ctransport_recv(&c->tr);

	if (r == SP_CT_NOMEM) {
		conn_drop(c, SP_CLIENT_C_NOMEM, 0, "out of memory", false);
		return -1;
	}
	if (r < 0) {
		char b[128];

		snprintf(b, sizeof(b), "read from the relay failed: %s", strerror(c->tr.err));
		conn_drop(c, c->cstate < C_HELLO ? SP_CLIENT_C_TLS : SP_CLIENT_C_BROKEN, 0, b,
		          false);
		return -1;
	}
	if (c->cstate == C_TLS) {
		r = tls_step(c);
		if (r <= 0)
			return r;
	}
	for (;;) {
		int n = sp_ctransport_read(&c->tr, buf, sizeof(buf));

		if (n > 0) {
			if (on_plaintext(c, buf, (size_t)n) < 0)
				return -1;
			continue;
		}
		if (n == 0)
			break;
		if (n == SP_CT_CLOSED) {
			/* close_notify: conn_release answers it with ours. */
			conn_drop(c, SP_CLIENT_C_CLOSED, 0,
			          c->cstate == C_READY
			                  ? "the relay closed the connection"
			                  : "the relay closed the connection before WELCOME",
			          true);
			return -1;
		}
		if (n == SP_CT_EOF) {
			conn_drop(c, c->cstate == C_READY ? SP_CLIENT_C_BROKEN : SP_CLIENT_C_CLOSED,
			          0,
			          c->cstate == C_READY
			                  ? "the relay closed the connection without close_notify"
			                  : "the relay closed the connection before WELCOME",
			          false);
			return -1;
		}
		conn_tls_fail(c, c->cstate == C_READY ? "TLS error" : "TLS refused");
		return -1;
	}
	return 0;
}

static int tcp_connected(sp_client_t *c)
{
	int err = -sp_ctransport_connected(&c->tr);
	char buf[512];

	if (err != 0) {
		snprintf(buf, sizeof(buf), "cannot connect to %s:%u: %s", c->host, c->port,
		         strerror(err));
		conn_drop(c, SP_CLIENT_C_CONNECT, 0, buf, false);
		return -1;
	}
	if (sp_ctransport_tls_begin(&c->tr, c->ctx, c->server_name ? c->server_name : c->host,
	                            c->host_is_ip && c->server_name == NULL, NULL, NULL, c->session,
	                            c) < 0) {
		conn_drop(c, SP_CLIENT_C_NOMEM, 0, "cannot set up TLS", false);
		return -1;
	}
	sp_decoder_init(&c->dec, PRE_WELCOME_FRAME);
	c->cstate = C_TLS;
	event_add(c->tr.rev, NULL);
	return tls_step(c) < 0 ? -1 : 0;
}

static void io_cb(evutil_socket_t fd, short what, void *arg)
{
	sp_client_t *c = arg;

	(void)fd;
	enter(c);
	if (c->cstate == C_TCP) {
		if (what & EV_WRITE)
			tcp_connected(c);
		goto out;
	}
	if ((what & EV_WRITE) && sp_ctransport_unsent(&c->tr) > 0 && !c->tr.write_failed) {
		if (sp_ctransport_send(&c->tr) < 0) {
			conn_write_failed(c, c->tr.err);
			goto out;
		}
	}
	if ((what & EV_READ) && read_step(c) < 0)
		goto out;
	if (pump(c) < 0)
		goto out;
	arm_timer(c);
out:
	leave(c);
}

static void tcp_start(sp_client_t *c, const struct sockaddr *sa, socklen_t len)
{
	char buf[512];
	int r = sp_ctransport_socket(&c->tr, sa->sa_family);

	if (r < 0) {
		snprintf(buf, sizeof(buf), "socket: %s", strerror(-r));
		conn_drop(c, SP_CLIENT_C_CONNECT, 0, buf, false);
		return;
	}
	c->tr.rev = event_new(c->base, c->tr.fd, EV_READ | EV_PERSIST, io_cb, c);
	c->tr.wev = event_new(c->base, c->tr.fd, EV_WRITE, io_cb, c);
	if (c->tr.rev == NULL || c->tr.wev == NULL) {
		conn_drop(c, SP_CLIENT_C_NOMEM, 0, "event_new failed", false);
		return;
	}
	c->cstate = C_TCP;
	r = sp_ctransport_connect(&c->tr, sa, len);
	if (r < 0) {
		snprintf(buf, sizeof(buf), "cannot connect to %s:%u: %s", c->host, c->port,
		         strerror(-r));
		conn_drop(c, SP_CLIENT_C_CONNECT, 0, buf, false);
		return;
	}
	event_add(c->tr.wev, NULL);
}

static void dns_cb(int result, struct evutil_addrinfo *res, void *arg)
{
	sp_client_t *c = arg;
	char buf[400];

	if (result == EVUTIL_EAI_CANCEL)
		return;
	enter(c);
	c->dns_req = NULL;
	if (result != 0 || res == NULL) {
		snprintf(buf, sizeof(buf), "cannot resolve %s: %s", c->host,
		         evutil_gai_strerror(result));
		conn_drop(c, SP_CLIENT_C_RESOLVE, 0, buf, false);
	} else {
		tcp_start(c, res->ai_addr, (socklen_t)res->ai_addrlen);
	}
	if (res != NULL)
		evutil_freeaddrinfo(res);
	arm_timer(c);
	leave(c);
}

static int select_server(sp_client_t *c, unsigned i);

static void conn_begin(sp_client_t *c)
{
	/* Several relays (a cluster): every attempt after the first goes to the next one, so a
	 * relay that drains (GOAWAY SHUTDOWN) or is gone sends the device to the others. */
	if (c->n_servers > 1 && c->st.connects > 0)
		select_server(c, (c->cur_server + 1) % c->n_servers);
	c->state = c->closing ? SP_CLIENT_CLOSING : SP_CLIENT_CONNECTING;
	c->st.connects++;
	c->conn_deadline = now_ms() + c->connect_ms;
	c->goaway = false;
	c->ping_out = false;
	if (c->host_is_ip) {
		tcp_start(c, (struct sockaddr *)&c->ip_addr, c->ip_addr_len);
	} else {
		struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC,
		                                .ai_socktype = SOCK_STREAM,
		                                .ai_protocol = IPPROTO_TCP,
		                                .ai_flags = EVUTIL_AI_ADDRCONFIG};
		char port[8];

		if (c->dns == NULL)
			c->dns = evdns_base_new(c->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
		if (c->dns == NULL) {
			conn_drop(c, SP_CLIENT_C_RESOLVE, 0, "cannot set up the DNS resolver",
			          false);
			return;
		}
		snprintf(port, sizeof(port), "%u", c->port);
		c->cstate = C_RESOLVING;
		/* The callback may run before this returns (hosts file, failure). */
		c->dns_req = evdns_getaddrinfo(c->dns, c->host, port, &hints, dns_cb, c);
	}
	arm_timer(c);
}

/* ---- timer and kick ----------------------------------------------------------------------- */

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	sp_client_t *c = arg;
	uint64_t now = now_ms();
	sp_send_t *s, *next;
	char buf[160];

	(void)fd;
	(void)what;
	enter(c);
	/* Sends past their deadline. */
	for (s = TAILQ_FIRST(&c->inflight); s != NULL && !c->dead; s = next) {
		next = TAILQ_NEXT(s, link);
		if (s->deadline && s->deadline <= now)
			send_complete(c, s, true, SEALPUSH_ST_TIMEOUT);
	}
	for (s = TAILQ_FIRST(&c->queue); s != NULL && !c->dead; s = next) {
		next = TAILQ_NEXT(s, link);
		if (s->deadline && s->deadline <= now)
			send_complete(c, s, false, SEALPUSH_ST_TIMEOUT);
	}
	if (c->dead)
		goto out;
	if (c->state == SP_CLIENT_WAITING && now >= c->retry_at) {
		conn_begin(c);
		goto out;
	}
	if (c->cstate != C_NONE && c->cstate != C_READY && now >= c->conn_deadline) {
		static const char *const phase[] = {"", "resolving the name", "connecting",
		                                    "in the TLS handshake", "waiting for WELCOME"};

		snprintf(buf, sizeof(buf), "timed out after %u ms %s", c->connect_ms,
		         phase[c->cstate]);
		conn_drop(c, SP_CLIENT_C_TIMEOUT, 0, buf, c->cstate == C_HELLO);
		goto out;
	}
	if (c->state == SP_CLIENT_CLOSING && now >= c->close_deadline) {
		finish_close(c);
		goto out;
	}
	if (c->cstate == C_READY) {
		if (c->ping_out && now >= c->ping_deadline) {
			snprintf(buf, sizeof(buf), "no PONG within %llu ms",
			         (unsigned long long)(c->ping_deadline - c->last_tx));
			conn_drop(c, SP_CLIENT_C_DEAD_PEER, 0, buf, false);
			goto out;
		}
		if (!c->ping_out && now >= c->last_tx + (uint64_t)c->lim.keepalive * 1000) {
			sp_frame_t p = {.type = SP_PING, .fields = SP_BIT(SP_F_DATA)};

			RAND_bytes(c->ping_data, sizeof(c->ping_data));
			p.data = c->ping_data;
			if (out_frame(c, &p) == 0) {
				c->ping_out = true;
				c->ping_deadline =
				        now + (c->ping_timeout_ms
				                       ? c->ping_timeout_ms
				                       : (uint64_t)c->lim.keepalive * 1000);
				c->st.pings++;
			}
			if (flush(c) < 0)
				goto out;
		}
		if (renew_due(c) <= now && renew_send(c) < 0)
			goto out;
	}
	arm_timer(c);
out:
	leave(c);
}

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
	sp_client_t *c = arg;

	(void)fd;
	(void)what;
	enter(c);
	if (c->state == SP_CLIENT_STOPPED)
		goto out;
	if (c->closing && c->state != SP_CLIENT_CLOSING) {
		if (c->cstate == C_READY) {
			c->state = SP_CLIENT_CLOSING;
			c->close_deadline = now_ms() + c->close_ms;
		} else {
			conn_release(c, true);
			stop(c, SP_CLIENT_C_LOCAL, 0, "closed by the application");
			goto out;
		}
	}
	if (c->want_reconnect) {
		c->want_reconnect = false;
		if (c->cstate != C_NONE)
			conn_drop(c, SP_CLIENT_C_LOCAL, 0, "reconnect asked by the application",
			          true);
		else if (c->state == SP_CLIENT_WAITING)
			conn_begin(c);
		goto out;
	}
	if (pump(c) < 0)
		goto out;
	arm_timer(c);
out:
	leave(c);
}

/* ---- public API -------------------------------------------------------------------------- */

static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	sp_client_t *c = SSL_get_app_data(ssl);

	if (c == NULL || !SSL_SESSION_is_resumable(sess))
		return 0;
	SSL_SESSION_free(c->session);
	c->session = sess;
	return 1; /* we keep the reference */
}

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

static int load_files(sp_client_t *c, const sp_client_config_t *cfg, char *err, size_t errlen)
{
	FILE *f;
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	int r = -EPROTO;

	c->ctx = SSL_CTX_new(TLS_client_method());
	if (c->ctx == NULL) {
		seterr(err, errlen, "cannot create a TLS context");
		return -ENOMEM;
	}
	SSL_CTX_set_min_proto_version(c->ctx, TLS1_3_VERSION);
	SSL_CTX_set_mode(c->ctx, SSL_MODE_RELEASE_BUFFERS);
	if (sp_tls_set_groups(c->ctx, cfg->tls_groups, false) < 0) {
		seterr(err, errlen, "cannot use the TLS groups %s (a group this OpenSSL lacks?)",
		       cfg->tls_groups);
		return -EINVAL;
	}
	SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_session_cache_mode(c->ctx,
	                               SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(c->ctx, new_session_cb);
	if (SSL_CTX_set_alpn_protos(c->ctx, (const unsigned char *)"\x0a" SP_ALPN,
	                            1 + strlen(SP_ALPN)) != 0) {
		seterr(err, errlen, "cannot set ALPN");
		return -ENOMEM;
	}

	const char *paths[3] = {cfg->ca_file, cfg->cert_file, cfg->key_file};
	const char *what[3] = {"CA file", "certificate", "key"};
	for (int i = 0; i < (cfg->anonymous ? 1 : 3); i++) {
		f = fopen(paths[i], "r");
		if (f == NULL) {
			r = -errno;
			seterr(err, errlen, "cannot open the %s %s: %s", what[i], paths[i],
			       strerror(errno));
			return r;
		}
		fclose(f);
	}
	if (SSL_CTX_load_verify_file(c->ctx, cfg->ca_file) != 1) {
		seterr(err, errlen, "the CA file %s holds no PEM certificate", cfg->ca_file);
		goto out;
	}
	if (cfg->anonymous) {
		/* No certificate: the relay's anonymous door asks for none, and the WELCOME
		 * token is the all-zero one (c->token stays zero). */
		r = 0;
		goto out;
	}
	if (SSL_CTX_use_certificate_chain_file(c->ctx, cfg->cert_file) != 1) {
		seterr(err, errlen, "the certificate %s is not a PEM certificate", cfg->cert_file);
		goto out;
	}
	f = fopen(cfg->key_file, "r");
	if (f != NULL) {
		key = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
		fclose(f);
	}
	if (key == NULL) {
		seterr(err, errlen, "the key %s is not an unencrypted PEM private key",
		       cfg->key_file);
		goto out;
	}
	if (SSL_CTX_use_PrivateKey(c->ctx, key) != 1 || SSL_CTX_check_private_key(c->ctx) != 1) {
		seterr(err, errlen, "the key %s does not belong to the certificate %s",
		       cfg->key_file, cfg->cert_file);
		goto out;
	}
	cert = SSL_CTX_get0_certificate(c->ctx);
	if (cert == NULL || sp_token_from_cert(cert, c->token) < 0) {
		seterr(err, errlen, "cannot compute the token of %s", cfg->cert_file);
		goto out;
	}
	c->cert_nb = asn1_unix(X509_get0_notBefore(cert));
	c->cert_na = asn1_unix(X509_get0_notAfter(cert));
	c->cert_file = strdup(cfg->cert_file);
	if (c->cert_file == NULL) {
		r = -ENOMEM;
		goto out;
	}
	c->key = key;
	key = NULL;
	r = 0;
out:
	EVP_PKEY_free(key);
	ERR_clear_error();
	return r;
}

/* Makes relay i of the configured list the one to connect to (host, port, ip_addr). */
static int select_server(sp_client_t *c, unsigned i)
{
	const char *p = c->servers, *end;
	char one[300];
	struct sockaddr_in *v4 = (struct sockaddr_in *)&c->ip_addr;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&c->ip_addr;

	for (unsigned k = 0; k < i && p; k++) {
		p = strchr(p, ',');
		p = p ? p + 1 : NULL;
	}
	if (!p)
		return -1;
	end = strchr(p, ',');
	if (!end)
		end = p + strlen(p);
	if ((size_t)(end - p) >= sizeof(one))
		return -1;
	memcpy(one, p, (size_t)(end - p));
	one[end - p] = 0;
	if (sp_parse_hostport(one, c->host, sizeof(c->host), &c->port) < 0)
		return -1;
	c->cur_server = i;
	c->host_is_ip = false;
	memset(&c->ip_addr, 0, sizeof(c->ip_addr));
	if (inet_pton(AF_INET, c->host, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons(c->port);
		c->ip_addr_len = sizeof(*v4);
		c->host_is_ip = true;
	} else if (inet_pton(AF_INET6, c->host, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons(c->port);
		c->ip_addr_len = sizeof(*v6);
		c->host_is_ip = true;
	}
	return 0;
}

int sp_client_new(struct event_base *base, const sp_client_config_t *cfg,
                  const sp_client_callbacks_t *cb, sp_client_t **out, char *err, size_t errlen)
{
	sp_client_t *c;
	char agent[SP_AGENT_MAX + 1];
	int r;

	if (out != NULL)
		*out = NULL;
	if (base == NULL || cfg == NULL || out == NULL || cfg->server == NULL ||
	    cfg->ca_file == NULL ||
	    (!cfg->anonymous && (cfg->cert_file == NULL || cfg->key_file == NULL))) {
		seterr(err, errlen, "server, ca_file, cert_file and key_file are required");
		return -EINVAL;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		seterr(err, errlen, "out of memory");
		return -ENOMEM;
	}
	c->base = base;
	sp_ctransport_init(&c->tr, 65536);
	TAILQ_INIT(&c->queue);
	TAILQ_INIT(&c->inflight);
	if (cb != NULL)
		c->cb = *cb;
	r = -EINVAL;
	c->servers = strdup(cfg->server);
	if (c->servers == NULL) {
		r = -ENOMEM;
		goto fail;
	}
	for (const char *p = c->servers; p; p = strchr(p, ','), p = p ? p + 1 : NULL)
		c->n_servers++;
	for (unsigned i = c->n_servers; i-- > 0;) {
		if (c->n_servers > SP_CLIENT_MAX_SERVERS || select_server(c, i) < 0) {
			seterr(err, errlen,
			       "bad server address %s (want HOST:PORT or [IPv6]:PORT, at most %d "
			       "separated by commas)",
			       cfg->server, SP_CLIENT_MAX_SERVERS);
			goto fail;
		}
	}
	c->send_only = cfg->send_only || cfg->anonymous;
	c->anonymous = cfg->anonymous;
	c->no_reconnect = cfg->no_reconnect;
	c->keepalive_wish = cfg->keepalive ? cfg->keepalive : DEF_KEEPALIVE;
	c->window_wish = cfg->window;
	c->ping_timeout_ms = cfg->ping_timeout_ms;
	c->connect_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms : DEF_CONNECT_MS;
	c->backoff_min = cfg->backoff_min_ms ? cfg->backoff_min_ms : DEF_BACKOFF_MIN_MS;
	c->backoff_max = cfg->backoff_max_ms ? cfg->backoff_max_ms : DEF_BACKOFF_MAX_MS;
	if (c->backoff_max < c->backoff_min)
		c->backoff_max = c->backoff_min;
	c->max_attempts = cfg->max_attempts;
	c->max_queued = cfg->max_queued ? cfg->max_queued : DEF_MAX_QUEUED;
	c->send_timeout_ms = cfg->send_timeout_ms;
	c->close_ms = cfg->close_timeout_ms ? cfg->close_timeout_ms : DEF_CLOSE_MS;
	c->resend = cfg->resend == SP_CLIENT_RESEND_FAIL ? SP_CLIENT_RESEND_FAIL
	                                                 : SP_CLIENT_RESEND_RETRY;
	c->dedup_cap = cfg->dedup ? cfg->dedup : DEF_DEDUP;
	c->renew_at = cfg->renew_at == 0                       ? DEF_RENEW_AT
	              : cfg->renew_at > 0 && cfg->renew_at < 1 ? cfg->renew_at
	                                                       : 0;
	snprintf(agent, sizeof(agent), "libsealpush/%s", SP_VERSION);
	if (cfg->agent != NULL) {
		size_t n = strlen(cfg->agent);

		for (size_t i = 0; i < n; i++)
			if (cfg->agent[i] < 0x20 || cfg->agent[i] > 0x7e)
				n = 0;
		if (n == 0 || n > SP_AGENT_MAX) {
			seterr(err, errlen, "agent must be 1 to 64 printable ASCII characters");
			goto fail;
		}
	}
	c->agent = strdup(cfg->agent ? cfg->agent : agent);
	c->server_name = cfg->server_name ? strdup(cfg->server_name) : NULL;
	c->dedup = calloc(c->dedup_cap, SP_MSG_ID_LEN);
	c->tev = evtimer_new(base, timer_cb, c);
	c->kick = event_new(base, -1, 0, kick_cb, c);
	r = -ENOMEM;
	if (c->agent == NULL || (cfg->server_name && c->server_name == NULL) || c->dedup == NULL ||
	    c->tev == NULL || c->kick == NULL) {
		seterr(err, errlen, "out of memory");
		goto fail;
	}
	r = load_files(c, cfg, err, errlen);
	if (r < 0)
		goto fail;
	*out = c;
	return 0;
fail:
	destroy(c);
	return r;
}

int sp_client_start(sp_client_t *c)
{
	if (c->started)
		return -EALREADY;
	c->started = true;
	c->state = SP_CLIENT_WAITING;
	c->retry_at = now_ms();
	arm_timer(c);
	return 0;
}

/* The pending send with this id (a caller-chosen id may repeat one still pending). */
static sp_send_t *send_find(sp_client_t *c, const uint8_t *id)
{
	sp_send_t *s;

	TAILQ_FOREACH(s, &c->inflight, link)
	if (memcmp(s->msg_id, id, SP_MSG_ID_LEN) == 0)
		return s;
	TAILQ_FOREACH(s, &c->queue, link)
	if (memcmp(s->msg_id, id, SP_MSG_ID_LEN) == 0)
		return s;
	return NULL;
}

int sp_client_send(sp_client_t *c, const uint8_t *tokens, size_t n, const uint8_t *blob,
                   size_t blob_len, const sp_client_send_opts_t *o, uint8_t msg_id_out[16])
{
	sp_client_send_opts_t none = {0};
	sp_send_t *s;

	if (o == NULL)
		o = &none;
	if (c->closing || c->state == SP_CLIENT_STOPPED || c->dead)
		return -ESHUTDOWN;
	if (tokens == NULL || n == 0 || n > SP_MAX_RECIPIENTS_V1 || (blob == NULL && blob_len) ||
	    blob_len > SP_MAX_FRAME_V1 ||
	    (o->priority && o->priority != 10 && o->priority != 5 && o->priority != 1) ||
	    (o->collapse_id && (o->collapse_id_len == 0 || o->collapse_id_len > SP_COLLAPSE_MAX)))
		return -EINVAL;
	if (c->have_lim && blob_len > c->lim.max_blob)
		return -EMSGSIZE;
	if (c->n_queue + c->n_inflight >= c->max_queued)
		return -ENOBUFS;
	if (o->msg_id != NULL && send_find(c, o->msg_id) != NULL)
		return -EEXIST;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->n = (uint32_t)n;
	s->tokens = malloc(n * SP_TOKEN_LEN);
	s->status = malloc(n);
	s->wire = malloc(n * sizeof(uint16_t));
	s->blob = malloc(blob_len ? blob_len : 1);
	if (s->tokens == NULL || s->status == NULL || s->wire == NULL || s->blob == NULL) {
		send_free(s);
		return -ENOMEM;
	}
	memcpy(s->tokens, tokens, n * SP_TOKEN_LEN);
	if (c->anonymous) {
		s->keys = o->access_keys ? malloc(n * SP_ACCESS_KEY_LEN) : NULL;
		if (s->keys == NULL) {
			send_free(s);
			return o->access_keys ? -ENOMEM : -EINVAL;
		}
		memcpy(s->keys, o->access_keys, n * SP_ACCESS_KEY_LEN);
	}
	memset(s->status, NO_STATUS, n);
	if (blob_len)
		memcpy(s->blob, blob, blob_len);
	s->blob_len = (uint32_t)blob_len;
	if (o->msg_id != NULL)
		memcpy(s->msg_id, o->msg_id, SP_MSG_ID_LEN);
	else if (RAND_bytes(s->msg_id, SP_MSG_ID_LEN) != 1) {
		send_free(s);
		return -EIO;
	}
	s->has_ttl = o->has_ttl;
	s->ttl = o->ttl;
	s->priority = o->priority ? o->priority : SP_PRIORITY_HIGH;
	if (o->collapse_id) {
		memcpy(s->collapse, o->collapse_id, o->collapse_id_len);
		s->collapse_len = (uint8_t)o->collapse_id_len;
	}
	s->user = o->user;
	if (c->send_timeout_ms)
		s->deadline = now_ms() + c->send_timeout_ms;
	TAILQ_INSERT_TAIL(&c->queue, s, link);
	c->n_queue++;
	if (msg_id_out != NULL)
		memcpy(msg_id_out, s->msg_id, SP_MSG_ID_LEN);
	if (s->deadline && c->busy == 0)
		arm_timer(c);
	kick(c);
	return 0;
}

int sp_client_ack(sp_client_t *c, const uint8_t msg_id[16])
{
	if (c->state == SP_CLIENT_STOPPED || c->dead)
		return -ESHUTDOWN;
	dedup_add(c, msg_id);
	if (c->cstate != C_READY) {
		memcpy(c->resume_id, msg_id, SP_MSG_ID_LEN);
		c->have_resume = true;
		return 0;
	}
	if (ack_add(c, msg_id) < 0)
		return -ENOMEM;
	kick(c);
	return 0;
}

int sp_client_subscribe(sp_client_t *c, int op, const uint8_t *app_key, const uint8_t *sub_id,
                        uint8_t req_id[SEALPUSH_MSG_ID_LEN])
{
	sp_frame_t f = {.type = SP_SUBSCRIBE, .fields = SP_BIT(SP_F_MSG_ID)};

	if (c->state == SP_CLIENT_STOPPED || c->dead || c->cstate != C_READY)
		return -EAGAIN;
	if (!(c->caps & SP_CAP_WEBPUSH))
		return -ENOTSUP;
	if ((op == SP_CLIENT_SUB_REMOVE && !sub_id) || op < 0 || op > SP_CLIENT_SUB_LIST)
		return -EINVAL;
	if (RAND_bytes(req_id, SEALPUSH_MSG_ID_LEN) != 1)
		return -ENOMEM;
	f.msg_id = req_id;
	if (op == SP_CLIENT_SUB_REMOVE) {
		f.flags = SP_SUBSCRIBE_REMOVE;
		f.fields |= SP_BIT(SP_F_SUB_ID);
		f.sub_id = sub_id;
	} else if (op == SP_CLIENT_SUB_LIST) {
		f.flags = SP_SUBSCRIBE_LIST;
	} else if (app_key) {
		f.fields |= SP_BIT(SP_F_APP_KEY);
		f.app_key = app_key;
	}
	if (out_frame(c, &f) < 0)
		return -ENOMEM;
	kick(c);
	return 0;
}

int sp_client_dir_publish(sp_client_t *c, const char *card, size_t len,
                          uint8_t req_id[SEALPUSH_MSG_ID_LEN])
{
	sp_frame_t f = {.type = SP_DIR_PUBLISH,
	                .fields = SP_BIT(SP_F_MSG_ID) | SP_BIT(SP_F_DIR_CARD)};

	if (c->state == SP_CLIENT_STOPPED || c->dead || c->cstate != C_READY)
		return -EAGAIN;
	if (!(c->caps & SP_CAP_DIRECTORY))
		return -ENOTSUP;
	if (card == NULL || len == 0 || len > SP_DIR_CARD_MAX)
		return -EINVAL;
	if (RAND_bytes(req_id, SEALPUSH_MSG_ID_LEN) != 1)
		return -ENOMEM;
	f.msg_id = req_id;
	f.dir_card = (const uint8_t *)card;
	f.dir_card_len = (uint32_t)len;
	if (out_frame(c, &f) < 0)
		return -ENOMEM;
	kick(c);
	return 0;
}

int sp_client_access_set(sp_client_t *c, int mode, const uint8_t *keys, size_t n_keys,
                         uint8_t req_id[SEALPUSH_MSG_ID_LEN])
{
	sp_frame_t f = {.type = SP_ACCESS_SET,
	                .fields = SP_BIT(SP_F_MSG_ID) | SP_BIT(SP_F_ANON_MODE)};
	uint8_t vs[SP_ACCESS_KEY_LEN * SP_ACCESS_SET_MAX];
	int r = 0;

	if (c->anonymous || mode < SP_ANON_REFUSE || mode > SP_ANON_ANYONE ||
	    n_keys > SP_ACCESS_SET_MAX || (n_keys > 0 && keys == NULL) ||
	    (mode == SP_ANON_KEY_HOLDERS && n_keys == 0))
		return -EINVAL;
	if (c->state == SP_CLIENT_STOPPED || c->dead || c->cstate != C_READY)
		return -EAGAIN;
	if (!(c->caps & SP_CAP_ANONYMOUS))
		return -ENOTSUP;
	if (RAND_bytes(req_id, SEALPUSH_MSG_ID_LEN) != 1)
		return -ENOMEM;
	f.msg_id = req_id;
	f.anon_mode = (uint8_t)mode;
	if (mode != SP_ANON_REFUSE && n_keys > 0) {
		/* The verifiers (17.4): SHA-256 of each key; the keys stay here. */
		for (size_t i = 0; i < n_keys; i++)
			if (EVP_Digest(keys + i * SP_ACCESS_KEY_LEN, SP_ACCESS_KEY_LEN,
			               vs + i * SP_ACCESS_KEY_LEN, NULL, EVP_sha256(), NULL) != 1)
				r = -ENOMEM;
		f.fields |= SP_BIT(SP_F_ACCESS_VERIFIERS);
		f.access_verifiers = vs;
		f.n_access_verifiers = (uint32_t)n_keys;
	}
	if (r == 0 && out_frame(c, &f) < 0)
		r = -ENOMEM;
	OPENSSL_cleanse(vs, sizeof(vs));
	if (r < 0)
		return r;
	kick(c);
	return 0;
}

/* -EAGAIN unless connected, -ENOTSUP unless the relay has a directory, else 0. */
static int dir_ready(const sp_client_t *c)
{
	if (c->state == SP_CLIENT_STOPPED || c->dead || c->cstate != C_READY)
		return -EAGAIN;
	return c->caps & SP_CAP_DIRECTORY ? 0 : -ENOTSUP;
}

/* Sends the DIR_LOOKUP f with a new request id and, with tree_size > 0, that size. */
static int dir_lookup_send(sp_client_t *c, sp_frame_t *f, uint64_t tree_size,
                           uint8_t req_id[SEALPUSH_MSG_ID_LEN])
{
	uint8_t size[8];

	if (RAND_bytes(req_id, SEALPUSH_MSG_ID_LEN) != 1)
		return -ENOMEM;
	f->fields |= SP_BIT(SP_F_MSG_ID);
	f->msg_id = req_id;
	if (tree_size > 0) {
		for (int i = 0; i < 8; i++)
			size[i] = (uint8_t)(tree_size >> (56 - 8 * i));
		f->fields |= SP_BIT(SP_F_TREE_SIZE);
		f->tree_size = size;
	}
	if (out_frame(c, f) < 0)
		return -ENOMEM;
	kick(c);
	return 0;
}

int sp_client_dir_lookup(sp_client_t *c, const char *handle, const uint8_t *token,
                         uint64_t tree_size, bool head_only, uint8_t req_id[SEALPUSH_MSG_ID_LEN])
{
	sp_frame_t f = {.type = SP_DIR_LOOKUP};
	int e = dir_ready(c);

	if (e < 0)
		return e;
	if (!head_only && (handle == NULL) == (token == NULL))
		return -EINVAL;
	if (handle != NULL && (strlen(handle) == 0 || strlen(handle) > SP_DIR_HANDLE_MAX))
		return -EINVAL;
	if (head_only) {
		f.flags = SP_DIR_LOOKUP_HEAD;
	} else if (handle != NULL) {
		f.fields |= SP_BIT(SP_F_HANDLE);
		f.handle = (const uint8_t *)handle;
		f.handle_len = (uint32_t)strlen(handle);
	} else {
		f.fields |= SP_BIT(SP_F_TOKEN);
		f.token = token;
	}
	return dir_lookup_send(c, &f, tree_size, req_id);
}

int sp_client_dir_history(sp_client_t *c, int64_t after, uint64_t tree_size,
                          uint8_t req_id[SEALPUSH_MSG_ID_LEN])
{
	sp_frame_t f = {.type = SP_DIR_LOOKUP, .flags = SP_DIR_LOOKUP_HISTORY};
	uint8_t idx[8];
	int e = dir_ready(c);

	if (e < 0)
		return e;
	if (after < -1)
		return -EINVAL;
	if (after >= 0) {
		for (int i = 0; i < 8; i++)
			idx[i] = (uint8_t)((uint64_t)after >> (56 - 8 * i));
		f.fields |= SP_BIT(SP_F_LEAF_INDEX);
		f.leaf_index = idx;
	}
	return dir_lookup_send(c, &f, tree_size, req_id);
}

int sp_client_reconnect(sp_client_t *c)
{
	if (c->closing || c->state == SP_CLIENT_STOPPED)
		return -ESHUTDOWN;
	if (!c->started)
		return -EAGAIN;
	c->want_reconnect = true;
	kick(c);
	return 0;
}

void sp_client_close(sp_client_t *c)
{
	if (c == NULL || c->closing || c->state == SP_CLIENT_STOPPED)
		return;
	c->closing = true;
	kick(c);
}

static void destroy(sp_client_t *c)
{
	sp_send_t *s;

	if (c == NULL)
		return;
	conn_release(c, true);
	while ((s = TAILQ_FIRST(&c->inflight)) != NULL) {
		TAILQ_REMOVE(&c->inflight, s, link);
		send_free(s);
	}
	while ((s = TAILQ_FIRST(&c->queue)) != NULL) {
		TAILQ_REMOVE(&c->queue, s, link);
		send_free(s);
	}
	if (c->dns != NULL)
		evdns_base_free(c->dns, 0);
	if (c->tev != NULL)
		event_free(c->tev);
	if (c->kick != NULL)
		event_free(c->kick);
	SSL_SESSION_free(c->session);
	SSL_CTX_free(c->ctx);
	EVP_PKEY_free(c->key);
	free(c->cert_file);
	free(c->acks);
	free(c->dedup);
	free(c->agent);
	free(c->server_name);
	free(c->servers);
	free(c);
}

void sp_client_free(sp_client_t *c)
{
	if (c == NULL)
		return;
	c->dead = true;
	if (c->busy == 0)
		destroy(c);
}

int sp_client_state(const sp_client_t *c)
{
	return c->state;
}

const char *sp_client_tls_group(const sp_client_t *c)
{
	return c->group;
}

bool sp_client_resumed(const sp_client_t *c)
{
	return c->resumed;
}

const uint8_t *sp_client_token(const sp_client_t *c)
{
	return c->token;
}

const sp_client_limits_t *sp_client_limits(const sp_client_t *c)
{
	return c->have_lim ? &c->lim : NULL;
}

size_t sp_client_pending(const sp_client_t *c)
{
	return c->n_queue + c->n_inflight;
}

void sp_client_get_stats(const sp_client_t *c, sp_client_stats_t *out)
{
	*out = c->st;
}

const char *sp_client_status_name(unsigned status)
{
	if (status == SEALPUSH_ST_TIMEOUT)
		return "TIMEOUT";
	if (status == SEALPUSH_ST_NOT_SENT)
		return "NOT_SENT";
	return sp_status_name(status);
}

const char *sp_client_error_name(unsigned code)
{
	return sp_error_name(code);
}

const char *sp_client_cause_name(int cause)
{
	static const char *const names[] = {
	        [SP_CLIENT_C_NONE] = "none",         [SP_CLIENT_C_RESOLVE] = "resolve",
	        [SP_CLIENT_C_CONNECT] = "connect",   [SP_CLIENT_C_TIMEOUT] = "timeout",
	        [SP_CLIENT_C_TLS] = "tls",           [SP_CLIENT_C_CLOSED] = "closed",
	        [SP_CLIENT_C_BROKEN] = "broken",     [SP_CLIENT_C_DEAD_PEER] = "dead_peer",
	        [SP_CLIENT_C_PROTOCOL] = "protocol", [SP_CLIENT_C_GOAWAY] = "goaway",
	        [SP_CLIENT_C_TOKEN] = "token",       [SP_CLIENT_C_LOCAL] = "local",
	        [SP_CLIENT_C_GAVE_UP] = "gave_up",   [SP_CLIENT_C_NOMEM] = "nomem",
	};

	if (cause < 0 || (size_t)cause >= sizeof(names) / sizeof(names[0]) || !names[cause])
		return "?";
	return names[cause];
}

const char *sp_client_state_name(int state)
{
	static const char *const names[] = {"idle",    "connecting", "ready",  "draining",
	                                    "waiting", "closing",    "stopped"};

	if (state < 0 || (size_t)state >= sizeof(names) / sizeof(names[0]))
		return "?";
	return names[state];
}

const char *sp_client_version(void)
{
	return SP_VERSION;
}
