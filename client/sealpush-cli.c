/*
 * sealpush: the command-line client of a sealpush relay, over libsealpush.
 *
 *	sealpush [OPTIONS] COMMAND [ARGS]      (sealpush --help for the whole story)
 *
 * One process runs one command: it resolves the global settings (flags, then the config file,
 * then the environment), runs the command on one event loop (send and listen) and exits with a
 * code that says what went wrong (see usage()). Sealing goes through cli_seal.h only.
 */
#include <errno.h>
#include <stdarg.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "cli_seal.h"
#include "cli_dir.h"
#include "cli_webpush.h"
#include "sp_b64.h"
#include "sealpush.h"
#include "sp_identity.h"
#include "sp_tlsgroup.h"
#include "sp_version.h"

/* Exit codes (also in usage() and client/README.md). */
enum {
	EXIT_OK = 0,
	EXIT_TIMEOUT = 1,   /* listen: --timeout ended it before --count (or with no message) */
	EXIT_USAGE = 64,    /* bad command line, a setting missing */
	EXIT_VERIFY = 65,   /* verification failed: a card, a sealed message */
	EXIT_NOINPUT = 66,  /* a file could not be read (certificate, key, card, --file) */
	EXIT_CONNECT = 69,  /* the relay could not be reached, or the connection was lost */
	EXIT_INTERNAL = 70, /* internal error; sealing not available in this build */
	EXIT_TLS = 71,      /* TLS failed: a certificate refused (either side), revoked */
	EXIT_IOERR = 74,    /* writing the output failed */
	EXIT_REFUSED = 75,  /* send: the relay refused at least one recipient */
	EXIT_PROTOCOL = 76, /* the relay broke the protocol or sent ERROR; token mismatch */
	EXIT_CONFIG = 78,   /* the config file is unreadable or malformed */
};

#define MAX_TO      1024
#define MAX_MESSAGE (16u << 20)
#define SEAL_DEFAULT_TTL                                                                           \
	(30u * 86400) /* sealpushd's default max_ttl: what a SEND without                          \
	                  --ttl gets */

static const char *prog = "sealpush";
static int verbose;

static void die_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One line on stderr: "sealpush: ...". */
static void die_line(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: sealpush [OPTIONS] COMMAND [ARGS]\n"
	        "\n"
	        "Commands:\n"
	        "  init                  create this device's sealing key beside its key\n"
	        "  token                 print this device's token (SHA-256 of its certificate's "
	        "key)\n"
	        "  card                  print this device's contact card\n"
	        "  send --to CARD|TOKEN [--to ...] [--message TEXT | --file F | stdin]\n"
	        "                        send one message; prints \"TOKEN STATUS\" per recipient\n"
	        "  listen                print messages as they arrive, acknowledging each once "
	        "printed;\n"
	        "                        answers a message that asks for a receipt with a sealed\n"
	        "                        receipt, and prints the receipts it gets\n"
	        "  verify-card FILE      check a contact card; prints its token\n"
	        "  rotate                make a new sealing key now (next key epoch), erase the\n"
	        "                        ones past their grace; prints the new contact card\n"
	        "  listen --users        also name each sender's user, from the directory\n"
	        "                        (verified): HANDLE:TOKEN\n"
	        "  send --to-user HANDLE ...  seal to every verified device of HANDLE (and of\n"
	        "                        our own user's other devices), one SEND each\n"
	        "  user init HANDLE      make this device's user key (KEY.user.key) and publish\n"
	        "                        a user card for HANDLE listing this device (the key\n"
	        "                        directory, PROTOCOL.md 15)\n"
	        "  device add CARD_FILE  add a device (its contact card) to the user's card;\n"
	        "                        on the device that holds the user key\n"
	        "  device remove TOKEN   take a device out of the user's card\n"
	        "  device list [HANDLE|TOKEN]  a user's devices, verified (default: our own)\n"
	        "  log-head              the directory log's signed head, checked against the\n"
	        "                        last one seen (KEY.dirhead); prints size, root and a\n"
	        "                        fingerprint to compare out of band\n"
	        "  audit                 check that the directory's card for our handle is the\n"
	        "                        one this device published, and that every log entry\n"
	        "                        for it is signed by our user key; warns loudly\n"
	        "                        otherwise (exit 65)\n"
	        "  Directory answers are verified with the log's certificate: $SEALPUSH_LOG_CERT,\n"
	        "  else log.crt beside the CA file.\n"
	        "  enroll --code CODE [--card FILE]\n"
	        "                        from nothing: make --key, get --cert from the relay's\n"
	        "                        provider door (--server HOST:PORT of provider_listen),\n"
	        "                        make the sealing key and the card (default CERT.card);\n"
	        "                        prints the token\n"
	        "\n"
	        "Global options (any position):\n"
	        "  --server HOST:PORT    the relay            (config: server, env "
	        "SEALPUSH_SERVER)\n"
	        "  --ca FILE             CA of the relay's certificate   (ca, SEALPUSH_CA)\n"
	        "  --cert FILE           this device's certificate       (cert, SEALPUSH_CERT)\n"
	        "  --key FILE            this device's private key       (key, SEALPUSH_KEY)\n"
	        "  --config FILE         config file (default $SEALPUSH_CONFIG, else\n"
	        "                        ${XDG_CONFIG_HOME:-~/.config}/sealpush/config if it "
	        "exists)\n"
	        "  --connect-timeout S   seconds to get connected (default 10)\n"
	        "  --tls-groups LIST     TLS key exchange, OpenSSL syntax "
	        "(default " SP_TLS_GROUPS_DEFAULT ")\n"
	        "  --rotate-every D      rotate the sealing key this often (listen; default 7d;\n"
	        "                        D: seconds or Ns/Nm/Nh/Nd/Nw; 0 never) (rotate_every)\n"
	        "  --key-grace D         keep a rotated-out key this long, then erase it (default\n"
	        "                        30d, the relay's default max_ttl) (key_grace)\n"
	        "  --card-file FILE      listen and rotate write the new card there too "
	        "(card_file)\n"
	        "  -v, --verbose         connection events on stderr\n"
	        "  -h, --help            this help;  -V, --version  the version\n"
	        "A setting is taken from the command line, else the config file, else the\n"
	        "environment. The config file has lines \"key = value\" (keys server, ca, cert, "
	        "key,\n"
	        "rotate_every, key_grace, card_file, anon_server, receipt_delay;\n"
	        "'#' starts a comment); relative paths in it are relative to its directory.\n"
	        "\n");
	/* Two strings: C17 promises string literals of 4,095 characters only. */
	fprintf(f,
	        "send options:\n"
	        "  --to CARD_FILE|TOKEN  a recipient (repeatable); a bare 64-hex token needs "
	        "--raw\n"
	        "  --message TEXT | --file FILE   the message (default: standard input)\n"
	        "  --ttl SECONDS         how long the relay may keep it (0: now or never: an\n"
	        "                        ephemeral signal, never stored, EXPIRED if offline)\n"
	        "  --priority 10|5|1     (default 10)\n"
	        "  --collapse ID         a newer message with the same ID replaces a queued one\n"
	        "  --id HEX              the message id (32 hex digits; default random): resend\n"
	        "                        with the same id to retry without duplicates\n"
	        "  --raw                 send the bytes as given, not sealed\n"
	        "  --receipt             ask each recipient for a delivery receipt (sealed only;\n"
	        "                        it comes back to this device's `listen` as a line\n"
	        "                        \"receipt TOKEN MSG_ID received\")\n"
	        "  --suite NAME          seal with this suite of the card (PROTOCOL.md 13.2, e.g.\n"
	        "                        X25519-SHA256-ChaCha20Poly1305); default: the first the\n"
	        "                        card lists that this build has\n"
	        "  --timeout SECONDS     wait at most this long for the answers (default 60)\n"
	        "  --json                one JSON object instead of the lines\n"
	        "listen options:\n"
	        "  --count N             exit after N messages\n"
	        "  --renew-at SHARE      renew the certificate over the connection once this "
	        "share\n"
	        "                        of its lifetime is gone (default 0.75; 1: never)\n"
	        "  --receipt-delay MS    send each receipt after a random delay of up to MS\n"
	        "                        milliseconds (default 1000; 0: at once) (receipt_delay)\n"
	        "  --timeout SECONDS     exit after SECONDS\n"
	        "  --json                one JSON object per line instead of the lines below\n"
	        "                        (\"kind\": \"message\" or \"receipt\")\n"
	        "  A message: \"SENDER MSG_ID LENGTH PAYLOAD\" (SENDER is \"unsealed\" for a raw\n"
	        "  message; PAYLOAD is LENGTH bytes as they are). A receipt for a message this\n"
	        "  device sent with --receipt: \"receipt SENDER MSG_ID STATUS\" (MSG_ID: the id\n"
	        "  send printed; STATUS: received or read). A message that asks for a receipt\n"
	        "  gets one, sealed after it is printed and before it is acknowledged, sent after\n"
	        "  --receipt-delay (at once when listen stops), through the anonymous door\n"
	        "  (anon_server) when the sender sealed its access key in; a receipt that cannot\n"
	        "  be sent is reported on stderr and the message is kept as printed.\n"
	        "  --count counts messages and receipts. listen rotates the sealing key when due\n"
	        "  (--rotate-every) and prints the new card as \"card EPOCH JSON\" (--json:\n"
	        "  \"kind\": \"card\"); a message sealed to a key erased since is reported and\n"
	        "  acknowledged (it can never open).\n"
	        "\n"
	        "Exit status:\n"
	        "  0 ok; 1 listen --timeout passed before --count messages (or, without --count,\n"
	        "  with none); 64 usage; 65 verification failed (a card; listen: a message was\n"
	        "  dropped, also when --timeout ended it); 66 input file unreadable;\n"
	        "  69 relay unreachable or connection lost; 70 internal error or sealing not\n"
	        "  available; 71 TLS failure (certificate refused or revoked); 74 output error;\n"
	        "  75 send: a recipient was refused; 76 protocol error; 78 bad config file.\n");
	fprintf(f,
	        "\nWeb Push (a relay with a provider door, proto/PROTOCOL.md 14):\n"
	        "  subscribe [--app-server-key KEY]\n"
	        "                        a Web Push subscription (the relay's provider door):\n"
	        "                        makes its RFC 8291 keys (kept in KEY.webpush/) and "
	        "prints\n"
	        "                        it as browsers do: {endpoint, keys: {p256dh, auth}}; "
	        "with\n"
	        "                        KEY (VAPID public key, base64url) only that app server\n"
	        "                        may push; listen prints its messages as \"webpush SUB "
	        "ID LEN TEXT\"\n"
	        "  unsubscribe ID        remove a subscription (its endpoint answers 410)\n"
	        "  subscriptions         list this device's subscription ids and endpoints\n"
	        "\nSealed sender (a relay with an anonymous door, proto/PROTOCOL.md 17):\n"
	        "  access enable|rotate  register this device's access key (kept in KEY.access;\n"
	        "                        rotate: a new one, the old one is locked out) and print\n"
	        "                        the card carrying it, for contacts only; card and listen\n"
	        "                        then include it (the directory never gets it)\n"
	        "  access disable|anyone refuse anonymous messages (the key is removed) | take\n"
	        "                        them from anyone (rate limited by the relay)\n"
	        "  send sends through the anonymous door (--anon-server HOST:PORT, config\n"
	        "  anon_server, env SEALPUSH_ANON_SERVER) when every recipient's card carries an\n"
	        "  access key: the relay does not learn the sender; --identified: never.\n");
}

/* ---- settings: flags > config file > environment ---------------------------------------- */

typedef struct settings {
	char *server, *ca, *cert, *key;
	char *rotate_every, *key_grace, *card_file; /* sealing-key rotation (PROTOCOL.md 13.11) */
	char *anon_server;   /* the relay's anonymous door, HOST:PORT (sealed sender, 17) */
	char *receipt_delay; /* listen: the most a receipt waits, in ms (PROTOCOL.md 17.6) */
} settings_t;

static char *xstrdup(const char *s)
{
	char *p = strdup(s);

	if (p == NULL) {
		die_line("out of memory");
		exit(EXIT_INTERNAL);
	}
	return p;
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

/* Reads "key = value" lines into the settings not yet set. Returns 0 or an exit code. */
static int config_read(const char *path, bool must_exist, settings_t *s)
{
	FILE *f = fopen(path, "r");
	char line[4096], dir[PATH_MAX];
	const char *slash;
	unsigned no = 0;

	if (f == NULL) {
		if (!must_exist && errno == ENOENT)
			return 0;
		die_line("cannot read the config file %s: %s", path, strerror(errno));
		return EXIT_CONFIG;
	}
	slash = strrchr(path, '/');
	snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
	if (slash == path)
		snprintf(dir, sizeof(dir), "/");
	while (fgets(line, sizeof(line), f) != NULL) {
		char *k, *v, *eq, **dst = NULL;
		bool is_path = true;

		no++;
		if (strchr(line, '\n') == NULL && !feof(f)) {
			die_line("%s:%u: line too long", path, no);
			fclose(f);
			return EXIT_CONFIG;
		}
		k = trim(line);
		if (*k == '#' || *k == '\0')
			continue;
		eq = strchr(k, '=');
		if (eq == NULL) {
			die_line("%s:%u: want \"key = value\"", path, no);
			fclose(f);
			return EXIT_CONFIG;
		}
		*eq = '\0';
		k = trim(k);
		v = trim(eq + 1);
		if (strcmp(k, "server") == 0) {
			dst = &s->server;
			is_path = false;
		} else if (strcmp(k, "ca") == 0)
			dst = &s->ca;
		else if (strcmp(k, "cert") == 0)
			dst = &s->cert;
		else if (strcmp(k, "key") == 0)
			dst = &s->key;
		else if (strcmp(k, "card_file") == 0)
			dst = &s->card_file;
		else if (strcmp(k, "anon_server") == 0) {
			dst = &s->anon_server;
			is_path = false;
		} else if (strcmp(k, "rotate_every") == 0 || strcmp(k, "key_grace") == 0) {
			dst = k[0] == 'r' ? &s->rotate_every : &s->key_grace;
			is_path = false;
		} else if (strcmp(k, "receipt_delay") == 0) {
			dst = &s->receipt_delay;
			is_path = false;
		} else {
			die_line("%s:%u: unknown key \"%s\" (known: server, ca, cert, key, "
			         "rotate_every, key_grace, card_file, anon_server, receipt_delay)",
			         path, no, k);
			fclose(f);
			return EXIT_CONFIG;
		}
		if (*v == '\0') {
			die_line("%s:%u: %s has no value", path, no, k);
			fclose(f);
			return EXIT_CONFIG;
		}
		if (*dst != NULL)
			continue; /* a flag set it */
		if (is_path && v[0] != '/') {
			char full[PATH_MAX * 2];

			snprintf(full, sizeof(full), "%s/%s", dir, v);
			*dst = xstrdup(full);
		} else {
			*dst = xstrdup(v);
		}
	}
	fclose(f);
	return 0;
}

static int settings_resolve(settings_t *s, const char *config_flag)
{
	const char *env, *home;
	char path[PATH_MAX];
	int r = 0;

	if (config_flag != NULL) {
		r = config_read(config_flag, true, s);
	} else if ((env = getenv("SEALPUSH_CONFIG")) != NULL && *env) {
		r = config_read(env, true, s);
	} else {
		if ((env = getenv("XDG_CONFIG_HOME")) != NULL && *env)
			snprintf(path, sizeof(path), "%s/sealpush/config", env);
		else if ((home = getenv("HOME")) != NULL && *home)
			snprintf(path, sizeof(path), "%s/.config/sealpush/config", home);
		else
			path[0] = '\0';
		if (path[0])
			r = config_read(path, false, s);
	}
	if (r != 0)
		return r;
	if (s->server == NULL && (env = getenv("SEALPUSH_SERVER")) != NULL && *env)
		s->server = xstrdup(env);
	if (s->ca == NULL && (env = getenv("SEALPUSH_CA")) != NULL && *env)
		s->ca = xstrdup(env);
	if (s->cert == NULL && (env = getenv("SEALPUSH_CERT")) != NULL && *env)
		s->cert = xstrdup(env);
	if (s->key == NULL && (env = getenv("SEALPUSH_KEY")) != NULL && *env)
		s->key = xstrdup(env);
	if (s->anon_server == NULL && (env = getenv("SEALPUSH_ANON_SERVER")) != NULL && *env)
		s->anon_server = xstrdup(env);
	return 0;
}

static int need(const char *cmd, const char *val, const char *flag, const char *key,
                const char *env)
{
	if (val != NULL)
		return 0;
	die_line("%s needs %s (or \"%s = ...\" in the config file, or %s)", cmd, flag, key, env);
	return EXIT_USAGE;
}

/* ---- the event loop side ---------------------------------------------------------------- */

typedef struct job {
	uint8_t msg_id[SEALPUSH_MSG_ID_LEN];
	uint8_t *tokens;
	size_t n;
	uint8_t *blob;
	size_t blob_len;
	const char **labels;                    /* per recipient: what --to said */
	uint8_t access_key[CLI_ACCESS_KEY_LEN]; /* anonymous door: the recipient card's key */
} job_t;

/* listen --receipt-delay (receipt_delay): the default, and the most it takes. */
#define CLI_RECEIPT_DELAY_DEFAULT_MS 1000u
#define CLI_RECEIPT_DELAY_MAX_MS     60000u

/* A sealed receipt on its way to its SEND, waiting out its random delay (PROTOCOL.md 17.6)
 * on the list of the waiting ones if it has one. */
typedef struct delayed_receipt {
	struct delayed_receipt *next;
	struct run *r;
	struct event *ev;
	uint8_t to[SEALPUSH_TOKEN_LEN];
	uint8_t rid[SEALPUSH_MSG_ID_LEN];     /* the receipt's own msg_id */
	uint8_t orig_id[SEALPUSH_MSG_ID_LEN]; /* the message it acknowledges */
	char id[2 * SEALPUSH_MSG_ID_LEN + 1]; /* the same, in hex, for warnings */
	uint32_t ttl;
	uint8_t *blob;
	size_t blob_len;
	bool anon;                          /* through the anonymous door, with access */
	uint8_t access[CLI_ACCESS_KEY_LEN]; /* the original sender's access key */
} delayed_receipt_t;

typedef struct run {
	struct event_base *base;
	sp_client_t *c;
	int exit_code; /* set by the first failure */
	int conn_exit; /* exit code of the last connection failure */
	char conn_err[512];
	bool connected; /* got WELCOME at least once */
	bool finished;
	/* send */
	job_t *jobs;
	size_t n_jobs, next_job, answered; /* answered: jobs with their complete result */
	sp_client_send_opts_t sopts;
	bool any_refused, any_unanswered, json;
	json_t *jresults;
	uint8_t msg_id[SEALPUSH_MSG_ID_LEN];
	/* listen */
	cli_seal_t *seal;
	unsigned long count, got;
	bool verify_failed;
	/* Rotation (PROTOCOL.md 13.11): the timer that checks the schedule, where the new card
	 * goes besides stdout. */
	struct event *rotate_ev;
	const char *card_file;
	/* Receipts sent and not yet answered: the message each is for (slot = user - 1). The
	 * slots are reused once none is outstanding, so this stays as small as the most receipts
	 * in flight at once (at most the library's max_queued). */
	uint8_t (*receipt_for)[SEALPUSH_MSG_ID_LEN];
	size_t n_receipts, receipts_pending;
	/* Receipts are sent after a random delay of up to receipt_delay_ms; those waiting. */
	uint32_t receipt_delay_ms;
	delayed_receipt_t *delayed;
	/* Receipts to senders that gave their access key go through the anonymous door
	 * (PROTOCOL.md 17.6), on a second client made when the first is due; the loop ends when
	 * both have stopped. */
	const settings_t *settings;
	const struct cmd_opts *opts;
	sp_client_t *anon_c;
	bool main_stopped, anon_stopped;
	size_t anon_pending;         /* receipts sent on anon_c and not answered yet */
	struct event *anon_close_ev; /* closes anon_c at the end even if they never are */
	/* subscribe, unsubscribe, subscriptions (Web Push, cli_webpush.h) */
	int wp_cmd; /* 0: none; else SP_CLIENT_SUB_* + 1 */
	bool wp_sent, wp_has_key;
	uint8_t wp_req[SEALPUSH_MSG_ID_LEN];
	uint8_t wp_key[65];
	uint8_t wp_sub[16];
	const char *key_file;
	/* listen --users */
	const cli_dir_settings_t *dir;
} run_t;

static int exit_for_cause(int cause, unsigned code)
{
	switch (cause) {
	case SP_CLIENT_C_TLS:
		return EXIT_TLS;
	case SP_CLIENT_C_PROTOCOL:
	case SP_CLIENT_C_TOKEN:
		return EXIT_PROTOCOL;
	case SP_CLIENT_C_GOAWAY:
		return code == 17 /* CERT_REVOKED */ ? EXIT_TLS : EXIT_CONNECT;
	case SP_CLIENT_C_NOMEM:
		return EXIT_INTERNAL;
	default:
		return EXIT_CONNECT;
	}
}

/* A duration in seconds as a timeval, for event timers. */
static struct timeval tv_of(double seconds)
{
	return (struct timeval){.tv_sec = (time_t)seconds,
	                        .tv_usec =
	                                (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6)};
}

static void receipts_flush(run_t *r);
static void anon_close(run_t *r);
static void delayed_done(run_t *r, delayed_receipt_t *d, bool send);

static void finish(run_t *r, int code)
{
	if (r->exit_code == 0)
		r->exit_code = code;
	if (!r->finished) {
		r->finished = true;
		receipts_flush(r); /* the receipts still waiting go now, before the close */
		sp_client_close(r->c);
		anon_close(r);
	}
}

/* The loop ends once the device's client and the anonymous one (if made) have stopped. */
static void maybe_exit(run_t *r)
{
	if (r->main_stopped && (r->anon_c == NULL || r->anon_stopped))
		event_base_loopexit(r->base, NULL);
}

static void on_event(sp_client_t *c, const sp_client_event_t *ev, void *arg)
{
	run_t *r = arg;

	(void)c;
	switch (ev->type) {
	case SP_CLIENT_EV_CONNECTED:
		r->connected = true;
		if (verbose)
			fprintf(stderr, "%s: %s\n", prog, ev->detail);
		if (r->wp_cmd && !r->wp_sent) {
			int e = sp_client_subscribe(c, r->wp_cmd - 1,
			                            r->wp_has_key ? r->wp_key : NULL, r->wp_sub,
			                            r->wp_req);

			r->wp_sent = true;
			if (e < 0) {
				die_line("%s", e == -ENOTSUP ? "this relay has no Web Push door"
				                             : "cannot ask for the subscription");
				finish(r, e == -ENOTSUP ? EXIT_REFUSED : EXIT_INTERNAL);
			}
		}
		break;
	case SP_CLIENT_EV_DISCONNECTED:
		r->conn_exit = exit_for_cause(ev->cause, ev->code);
		snprintf(r->conn_err, sizeof(r->conn_err), "%s", ev->detail);
		if (verbose || (!r->finished && r->connected && ev->will_retry))
			fprintf(stderr, "%s: %s%s\n", prog, ev->detail,
			        ev->will_retry ? " (reconnecting)" : "");
		/* Listen: a first connection that fails is an error, not something to wait out. */
		if (!r->connected && !r->finished) {
			die_line("%s", ev->detail);
			r->exit_code = r->conn_exit;
			r->finished = true;
			sp_client_close(r->c);
		}
		break;
	case SP_CLIENT_EV_STOPPED:
		if (ev->cause != SP_CLIENT_C_LOCAL && !r->finished) {
			die_line("%s", ev->detail);
			if (r->exit_code == 0)
				r->exit_code = exit_for_cause(ev->cause, ev->code);
		}
		r->finished = true;
		r->main_stopped = true;
		anon_close(r);
		maybe_exit(r);
		break;
	case SP_CLIENT_EV_ERROR:
		fprintf(stderr, "%s: warning: %s\n", prog, ev->detail);
		break;
	case SP_CLIENT_EV_RENEWED:
		fprintf(stderr, "%s: %s\n", prog, ev->detail);
		break;
	}
}

/* ---- send ---------------------------------------------------------------------------------- */

/* Hands every job to the client at once: it sends them in the same write (one per sealed copy,
 * each with its own blob and msg_id; up to the relay's send_window unanswered, the rest as
 * answers come), so N devices cost one round trip, not N. Finishes when all are answered. */
static void submit_all(run_t *r)
{
	while (r->next_job < r->n_jobs) {
		job_t *j = &r->jobs[r->next_job];
		int e;

		r->sopts.msg_id = j->msg_id;
		r->sopts.user = j;
		r->sopts.access_keys = j->access_key; /* used by an anonymous client only */
		e = sp_client_send(r->c, j->tokens, j->n, j->blob, j->blob_len, &r->sopts, NULL);
		if (e < 0) {
			die_line("cannot send: %s",
			         e == -EMSGSIZE ? "the message is larger than the relay's "
			                          "max_blob"
			                        : strerror(-e));
			finish(r, e == -EMSGSIZE ? EXIT_REFUSED : EXIT_INTERNAL);
			return;
		}
		r->next_job++;
	}
}

static void on_result(sp_client_t *c, const sp_client_result_t *res, void *arg)
{
	run_t *r = arg;
	job_t *j = res->user;
	char hex[SEALPUSH_TOKEN_HEX + 1];

	(void)c;
	for (size_t i = 0; i < res->n; i++) {
		unsigned st = res->statuses[i];

		sp_token_hex(res->tokens + i * SEALPUSH_TOKEN_LEN, hex);
		if (st == SEALPUSH_ST_NOT_SENT || st == SEALPUSH_ST_TIMEOUT)
			r->any_unanswered = true;
		else if (!SEALPUSH_STATUS_ACCEPTED(st))
			r->any_refused = true;
		if (r->json) {
			char id[2 * SEALPUSH_MSG_ID_LEN + 1];
			json_t *o;

			for (size_t b = 0; b < SEALPUSH_MSG_ID_LEN; b++)
				snprintf(id + 2 * b, 3, "%02x", res->msg_id[b]);
			o = json_pack("{s:s, s:s, s:s, s:s, s:b}", "to", j->labels[i], "token", hex,
			              "msg_id", id, "status", sp_client_status_name(st), "accepted",
			              SEALPUSH_STATUS_ACCEPTED(st));

			if (o && res->retry_after_ms)
				json_object_set_new(o, "retry_after_ms",
				                    json_integer(res->retry_after_ms));
			json_array_append_new(r->jresults, o);
		} else {
			printf("%s %s\n", hex, sp_client_status_name(st));
		}
	}
	fflush(stdout);
	if (++r->answered == r->n_jobs && !r->finished)
		finish(r, 0);
}

static int hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

static int parse_hex(const char *s, uint8_t *out, size_t n)
{
	if (strlen(s) != 2 * n)
		return -1;
	for (size_t i = 0; i < n; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

/* Reads a whole stream (at most MAX_MESSAGE bytes). Returns 0 or an exit code. */
static int read_all(FILE *f, const char *what, uint8_t **out, size_t *len)
{
	size_t cap = 4096, n = 0;
	uint8_t *buf = malloc(cap);

	if (buf == NULL)
		return EXIT_INTERNAL;
	for (;;) {
		size_t got;

		if (n == cap) {
			uint8_t *p;

			if (cap > MAX_MESSAGE) {
				free(buf);
				die_line("%s is larger than %u bytes", what, MAX_MESSAGE);
				return EXIT_USAGE;
			}
			p = realloc(buf, cap * 2);
			if (p == NULL) {
				free(buf);
				return EXIT_INTERNAL;
			}
			buf = p;
			cap *= 2;
		}
		got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		free(buf);
		die_line("cannot read %s: %s", what, strerror(errno));
		return EXIT_NOINPUT;
	}
	if (n > MAX_MESSAGE) {
		free(buf);
		die_line("%s is larger than %u bytes", what, MAX_MESSAGE);
		return EXIT_USAGE;
	}
	*out = buf;
	*len = n;
	return 0;
}

static int seal_exit(int e)
{
	switch (e) {
	case -ENOTSUP:
		return EXIT_INTERNAL;
	case -EBADMSG:
	case -ESTALE:
	case -EKEYEXPIRED:
		return EXIT_VERIFY;
	case -ENOENT:
	case -EACCES:
	case -ENOKEY:
		return EXIT_NOINPUT;
	default:
		return EXIT_INTERNAL;
	}
}

typedef struct cmd_opts {
	const char *to[MAX_TO];
	size_t n_to;
	const char *message, *file, *collapse, *id;
	const char *suite; /* --suite: a card name of 13.2, or NULL */
	bool raw, json, has_ttl, receipt;
	long ttl, priority;
	double timeout;
	bool has_timeout;
	unsigned long count;
	double connect_timeout;
	double renew_at; /* listen: share of the certificate's life after which it renews; 0: the
	                    library's default */
	const char *tls_groups;     /* NULL: the library's default */
	const char *app_server_key; /* subscribe: base64url P-256 point */
	const char *to_user;        /* send --to-user: a handle of the key directory */
	bool users;                 /* listen --users: name the sender's user (directory) */
	const char *code;           /* enroll: the one-time enrollment code */
	const char *card;           /* enroll: where the card goes */
	bool identified;            /* send --identified: never the anonymous door */
} cmd_opts_t;

static void on_message(sp_client_t *c, const sp_client_message_t *m, void *arg);
static void on_receipt_result(sp_client_t *c, const sp_client_result_t *res, void *arg);

/* The relay's answer to subscribe, unsubscribe or subscriptions. */
static void on_subscription(sp_client_t *c, const sp_client_subscription_t *sub, void *arg)
{
	run_t *r = arg;
	char err[512];

	(void)c;
	if (!r->wp_cmd || memcmp(sub->req_id, r->wp_req, SEALPUSH_MSG_ID_LEN) != 0)
		return;
	if (sub->status != SEALPUSH_ST_DELIVERED) {
		die_line("the relay refused: %s%s%.*s", sp_client_status_name(sub->status),
		         sub->reason ? ": " : "", sub->reason ? (int)sub->reason_len : 0,
		         sub->reason ? sub->reason : "");
		finish(r, EXIT_REFUSED);
		return;
	}
	if (r->wp_cmd - 1 == SP_CLIENT_SUB_NEW) {
		if (!sub->sub_id || !sub->endpoint ||
		    cli_wp_create(r->key_file, sub->sub_id, sub->endpoint, sub->endpoint_len,
		                  stdout, err, sizeof(err)) < 0) {
			die_line("%s",
			         sub->sub_id ? err : "the relay's answer has no subscription");
			finish(r, EXIT_IOERR);
			return;
		}
	} else if (r->wp_cmd - 1 == SP_CLIENT_SUB_REMOVE) {
		cli_wp_forget(r->key_file, r->wp_sub);
	} else {
		cli_wp_print_list(r->key_file, sub->sub_ids, sub->n_sub_ids, stdout);
	}
	fflush(stdout);
	finish(r, 0);
}

static int client_make(run_t *r, const settings_t *s, const cmd_opts_t *o, bool send_only,
                       bool anonymous)
{
	sp_client_config_t cfg = {.server = anonymous ? s->anon_server : s->server,
	                          .anonymous = anonymous,
	                          .ca_file = s->ca,
	                          .cert_file = s->cert,
	                          .key_file = s->key,
	                          .send_only = send_only,
	                          .connect_timeout_ms = (uint32_t)(o->connect_timeout * 1000),
	                          .tls_groups = o->tls_groups,
	                          .agent = "sealpush-cli/" SP_VERSION,
	                          .renew_at = o->renew_at};
	sp_client_callbacks_t cb = {.event = on_event, .arg = r, .subscription = on_subscription};
	char err[512];
	int e;

	if (send_only) {
		cb.result = on_result;
	} else {
		cb.message = on_message;
		cb.result = on_receipt_result;
	}
	if (send_only) {
		cfg.no_reconnect = true;
		cfg.max_attempts = 1;
		cfg.resend = SP_CLIENT_RESEND_FAIL;
		cfg.send_timeout_ms = (uint32_t)(o->timeout * 1000);
		cfg.close_timeout_ms = 2000;
	} else if (o->count > 0) {
		cfg.window = o->count < 64 ? (uint16_t)o->count : 64;
	}
	r->base = event_base_new();
	if (r->base == NULL) {
		die_line("cannot create an event base");
		return EXIT_INTERNAL;
	}
	e = sp_client_new(r->base, &cfg, &cb, &r->c, err, sizeof(err));
	if (e < 0) {
		event_base_free(r->base);
		r->base = NULL;
		die_line("%s", err);
		return e == -EINVAL ? EXIT_USAGE : e == -ENOMEM ? EXIT_INTERNAL : EXIT_NOINPUT;
	}
	return 0;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	run_t *r = arg;

	(void)what;
	if (r->finished) {
		event_base_loopbreak(r->base);
		return;
	}
	if (verbose)
		fprintf(stderr, "%s: signal %d, closing\n", prog, (int)sig);
	finish(r, r->got || r->count == 0 ? 0 : EXIT_TIMEOUT);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
	run_t *r = arg;

	(void)fd;
	(void)what;
	if (!r->finished) {
		if (r->c && sp_client_state(r->c) != SP_CLIENT_READY && !r->connected &&
		    r->conn_err[0])
			die_line("%s", r->conn_err);
		finish(r, (r->count ? r->got < r->count : r->got == 0) ? EXIT_TIMEOUT : 0);
	}
}

static int run_loop(run_t *r, double timeout)
{
	struct event *sigint = evsignal_new(r->base, SIGINT, on_signal, r);
	struct event *sigterm = evsignal_new(r->base, SIGTERM, on_signal, r);
	struct event *tmo = evtimer_new(r->base, on_timeout, r);

	if (sigint == NULL || sigterm == NULL || tmo == NULL) {
		die_line("cannot set up the event loop");
		r->exit_code = EXIT_INTERNAL;
	} else {
		evsignal_add(sigint, NULL);
		evsignal_add(sigterm, NULL);
		if (timeout > 0) {
			struct timeval tv = tv_of(timeout);

			evtimer_add(tmo, &tv);
		}
		sp_client_start(r->c);
		event_base_dispatch(r->base);
	}
	if (sigint)
		event_free(sigint);
	if (sigterm)
		event_free(sigterm);
	if (tmo)
		event_free(tmo);
	if (r->rotate_ev)
		event_free(r->rotate_ev);
	r->rotate_ev = NULL;
	while (r->delayed != NULL) { /* the connection stopped for good before they were due */
		fprintf(stderr, "%s: warning: no receipt for message %s: the connection stopped\n",
		        prog, r->delayed->id);
		delayed_done(r, r->delayed, false);
	}
	sp_client_free(r->c);
	r->c = NULL;
	sp_client_free(r->anon_c);
	r->anon_c = NULL;
	if (r->anon_close_ev)
		event_free(r->anon_close_ev);
	r->anon_close_ev = NULL;
	event_base_free(r->base);
	return r->exit_code;
}

static int cmd_send(const settings_t *s, const cmd_opts_t *o)
{
	run_t r = {.json = o->json};
	uint8_t *msg = NULL;
	size_t msg_len = 0;
	cli_card_t *cards[MAX_TO] = {0};
	cli_seal_t *seal = NULL;
	char err[512];
	uint8_t keybuf[CLI_ACCESS_KEY_LEN];
	bool anon = false;
	int rc = 0, e;

	if (o->n_to == 0) {
		die_line("send needs at least one --to CARD_FILE|TOKEN");
		return EXIT_USAGE;
	}
	if ((rc = need("send", s->server, "--server", "server", "SEALPUSH_SERVER")) ||
	    (rc = need("send", s->ca, "--ca", "ca", "SEALPUSH_CA")) ||
	    (rc = need("send", s->cert, "--cert", "cert", "SEALPUSH_CERT")) ||
	    (rc = need("send", s->key, "--key", "key", "SEALPUSH_KEY")))
		return rc;
	if (o->message && o->file) {
		die_line("give --message or --file, not both");
		return EXIT_USAGE;
	}
	if (o->raw && o->suite != NULL) {
		die_line("--suite names a sealing suite: drop --raw");
		return EXIT_USAGE;
	}
	if (o->raw && o->receipt) {
		die_line("--receipt needs a sealed message (receipts are sealed): drop --raw");
		return EXIT_USAGE;
	}
	if (o->id != NULL) {
		if (parse_hex(o->id, r.msg_id, sizeof(r.msg_id)) < 0) {
			die_line("--id wants 32 hexadecimal digits, got \"%s\"", o->id);
			return EXIT_USAGE;
		}
		if (!o->raw && o->n_to > 1) {
			die_line(
			        "--id takes one sealed recipient: each sealed copy has its own id");
			return EXIT_USAGE;
		}
	}
	/* Recipients first: a bad one is a usage error before anything is read or sent. */
	uint8_t *tokens = calloc(o->n_to, SEALPUSH_TOKEN_LEN);
	if (tokens == NULL)
		return EXIT_INTERNAL;
	for (size_t i = 0; i < o->n_to; i++) {
		if (sp_token_parse_hex(o->to[i], tokens + i * SEALPUSH_TOKEN_LEN) == 0) {
			if (!o->raw) {
				die_line("--to %s: a bare token takes only --raw messages; sealed "
				         "messages go to a contact card file",
				         o->to[i]);
				rc = EXIT_USAGE;
				goto out;
			}
			continue;
		}
		e = cli_card_load(o->to[i], &cards[i], err, sizeof(err));
		if (e < 0) {
			die_line("--to %s: %s", o->to[i], err);
			rc = seal_exit(e);
			goto out;
		}
		cli_card_token(cards[i], tokens + i * SEALPUSH_TOKEN_LEN);
	}
	if (o->message != NULL) {
		msg_len = strlen(o->message);
		msg = (uint8_t *)xstrdup(o->message);
	} else if (o->file != NULL) {
		FILE *f = fopen(o->file, "rb");

		if (f == NULL) {
			die_line("cannot read --file %s: %s", o->file, strerror(errno));
			rc = EXIT_NOINPUT;
			goto out;
		}
		rc = read_all(f, o->file, &msg, &msg_len);
		fclose(f);
		if (rc)
			goto out;
	} else {
		if ((rc = read_all(stdin, "standard input", &msg, &msg_len)) != 0)
			goto out;
	}
	if (!o->raw) {
		e = cli_seal_load(s->cert, s->key, &seal, err, sizeof(err));
		if (e < 0) {
			die_line("%s", err);
			rc = seal_exit(e);
			goto out;
		}
		/* A card older (lower key epoch) than one used before for that device is refused,
		 * not silently sealed to (PROTOCOL.md 13.11). */
		for (size_t i = 0; i < o->n_to; i++) {
			e = cli_seal_card_seen(seal, cards[i], err, sizeof(err));
			if (e < 0) {
				die_line("--to %s: %s", o->to[i], err);
				rc = e == -ESTALE ? EXIT_VERIFY : seal_exit(e);
				goto out;
			}
		}
	}
	/* Sealed sender (PROTOCOL.md 17.7): through the anonymous door when one is configured and
	 * every recipient's card carries its access key, unless --identified. */
	anon = !o->raw && !o->identified && s->anon_server != NULL;
	for (size_t i = 0; anon && i < o->n_to; i++)
		anon = cards[i] != NULL && cli_card_access_key(cards[i], keybuf);
	if (verbose)
		fprintf(stderr, "%s: sending %s\n", prog,
		        anon ? "anonymously (the anonymous door, access keys)"
		             : "identified (this device's certificate)");
	/* Raw: one SEND to everyone. Sealed: one envelope, so one SEND, per recipient. */
	r.n_jobs = o->raw ? 1 : o->n_to;
	r.jobs = calloc(r.n_jobs, sizeof(*r.jobs));
	r.jresults = json_array();
	if (r.jobs == NULL || r.jresults == NULL) {
		rc = EXIT_INTERNAL;
		goto out;
	}
	for (size_t k = 0; k < r.n_jobs; k++) {
		job_t *j = &r.jobs[k];

		/* A sealed copy is bound to its id: every recipient's copy gets its own. */
		if (o->id != NULL) {
			memcpy(j->msg_id, r.msg_id, sizeof(j->msg_id));
		} else if (RAND_bytes(j->msg_id, sizeof(j->msg_id)) != 1) {
			die_line("no random bytes for the message id");
			rc = EXIT_INTERNAL;
			goto out;
		}
		j->n = o->raw ? o->n_to : 1;
		if (anon)
			cli_card_access_key(cards[k], j->access_key);
		j->tokens = tokens + (o->raw ? 0 : k * SEALPUSH_TOKEN_LEN);
		j->labels = (const char **)(o->to + (o->raw ? 0 : k));
		if (o->raw) {
			j->blob = msg;
			j->blob_len = msg_len;
		} else {
			e = cli_seal_seal(seal, cards[k], o->suite, j->msg_id,
			                  o->has_ttl ? (uint32_t)o->ttl : SEAL_DEFAULT_TTL,
			                  o->receipt, msg, msg_len, &j->blob, &j->blob_len, err,
			                  sizeof(err));
			if (e < 0) {
				die_line("cannot seal for %s: %s", o->to[k], err);
				rc = e == -EINVAL ? EXIT_USAGE : seal_exit(e);
				goto out;
			}
		}
	}
	r.sopts.has_ttl = o->has_ttl;
	r.sopts.ttl = (uint32_t)o->ttl;
	r.sopts.priority = (uint8_t)o->priority;
	if (o->collapse) {
		r.sopts.collapse_id = (const uint8_t *)o->collapse;
		r.sopts.collapse_id_len = strlen(o->collapse);
	}
	if ((rc = client_make(&r, s, o, true, anon)) != 0)
		goto out;
	submit_all(&r);
	rc = run_loop(&r, 0);
	if (r.json) {
		json_t *top = json_pack("{s:O}", "results", r.jresults);

		if (top) {
			json_dumpf(top, stdout, JSON_COMPACT);
			fputc('\n', stdout);
			json_decref(top);
		}
	}
	if (fflush(stdout) != 0 || ferror(stdout)) {
		die_line("cannot write the results: %s", strerror(errno));
		rc = rc ? rc : EXIT_IOERR;
	}
	if (rc == 0 && (r.any_unanswered || r.answered < r.n_jobs)) {
		if (r.conn_err[0])
			die_line("%s", r.conn_err);
		else
			die_line("no answer from the relay within %.0f s", o->timeout);
		rc = r.conn_exit ? r.conn_exit : EXIT_CONNECT;
	}
	if (rc == 0 && r.any_refused)
		rc = EXIT_REFUSED;
out:
	if (r.jobs != NULL && !o->raw)
		for (size_t k = 0; k < r.n_jobs; k++)
			free(r.jobs[k].blob);
	if (r.jobs != NULL)
		OPENSSL_cleanse(r.jobs, r.n_jobs * sizeof(*r.jobs));
	free(r.jobs);
	json_decref(r.jresults);
	for (size_t i = 0; i < o->n_to; i++)
		cli_card_free(cards[i]);
	cli_seal_free(seal);
	free(tokens);
	free(msg);
	return rc;
}

/* ---- listen ------------------------------------------------------------------------------- */

static void hex_id(const uint8_t id[SEALPUSH_MSG_ID_LEN], char out[2 * SEALPUSH_MSG_ID_LEN + 1])
{
	for (size_t i = 0; i < SEALPUSH_MSG_ID_LEN; i++)
		snprintf(out + 2 * i, 3, "%02x", id[i]);
}

/* The answer to a receipt's SEND: said on stderr unless the relay took it. */
static void on_receipt_result(sp_client_t *c, const sp_client_result_t *res, void *arg)
{
	run_t *r = arg;
	uintptr_t k = (uintptr_t)res->user;
	char orig[2 * SEALPUSH_MSG_ID_LEN + 1] = "?", hex[SEALPUSH_TOKEN_HEX + 1];
	unsigned st = res->n ? res->statuses[0] : SEALPUSH_ST_NOT_SENT;

	if (c == r->anon_c && r->anon_pending > 0 && --r->anon_pending == 0 && r->finished)
		sp_client_close(c); /* its last answer (anon_close) */
	if (k >= 1 && k <= r->n_receipts)
		hex_id(r->receipt_for[k - 1], orig);
	if (r->receipts_pending > 0 && --r->receipts_pending == 0)
		r->n_receipts = 0;
	sp_token_hex(res->tokens, hex);
	if (!SEALPUSH_STATUS_ACCEPTED(st))
		fprintf(stderr, "%s: warning: the receipt for message %s to %s was not taken: %s\n",
		        prog, orig, hex, sp_client_status_name(st));
	else if (verbose)
		fprintf(stderr, "%s: receipt for message %s to %s: %s\n", prog, orig, hex,
		        sp_client_status_name(st));
}

static void on_anon_event(sp_client_t *c, const sp_client_event_t *ev, void *arg)
{
	run_t *r = arg;

	(void)c;
	if (ev->type == SP_CLIENT_EV_STOPPED) {
		r->anon_stopped = true;
		maybe_exit(r);
	} else if (verbose && ev->detail != NULL) {
		fprintf(stderr, "%s: anonymous door: %s\n", prog, ev->detail);
	}
}

/* The client of the anonymous door, made and started when the first receipt needs it. */
static sp_client_t *anon_client(run_t *r)
{
	const settings_t *s = r->settings;
	sp_client_config_t cfg = {.server = s->anon_server,
	                          .anonymous = true,
	                          .ca_file = s->ca,
	                          .connect_timeout_ms = (uint32_t)(r->opts->connect_timeout * 1000),
	                          .tls_groups = r->opts->tls_groups,
	                          .agent = "sealpush-cli/" SP_VERSION};
	sp_client_callbacks_t cb = {.event = on_anon_event, .result = on_receipt_result, .arg = r};
	char err[512];

	if (r->anon_c == NULL && !r->anon_stopped) {
		if (sp_client_new(r->base, &cfg, &cb, &r->anon_c, err, sizeof(err)) < 0) {
			fprintf(stderr, "%s: warning: no anonymous door for receipts: %s\n", prog,
			        err);
			r->anon_stopped = true; /* not tried again */
			return NULL;
		}
		sp_client_start(r->anon_c);
	}
	return r->anon_c;
}

static void on_anon_close(evutil_socket_t fd, short what, void *arg)
{
	run_t *r = arg;

	(void)fd;
	(void)what;
	sp_client_close(r->anon_c);
}

/*
 * The end of the anonymous client: closed once its receipts are answered (a client closed
 * before it is connected drops what it queued), or after the connect timeout and some more.
 */
static void anon_close(run_t *r)
{
	struct timeval tv;

	if (r->anon_c == NULL)
		return;
	if (r->anon_pending == 0) {
		sp_client_close(r->anon_c);
		return;
	}
	tv = tv_of(r->opts->connect_timeout + 5);
	if (r->anon_close_ev == NULL &&
	    ((r->anon_close_ev = evtimer_new(r->base, on_anon_close, r)) == NULL ||
	     evtimer_add(r->anon_close_ev, &tv) != 0))
		sp_client_close(r->anon_c);
}

/* The SEND of a sealed receipt, which it frees: through the anonymous door with the original
 * sender's access key if d->anon, else identified. A failure is said on stderr. */
static void receipt_submit(run_t *r, delayed_receipt_t *d)
{
	sp_client_send_opts_t so = {.msg_id = d->rid,
	                            .has_ttl = true,
	                            .ttl = d->ttl,
	                            .access_keys = d->anon ? d->access : NULL};
	sp_client_t *c = d->anon ? anon_client(r) : r->c;
	uint8_t(*more)[SEALPUSH_MSG_ID_LEN];
	int e = -ENOMEM;

	if (c == NULL) {
		fprintf(stderr, "%s: warning: no receipt for message %s: no anonymous door\n", prog,
		        d->id);
		goto out;
	}
	more = realloc(r->receipt_for, (r->n_receipts + 1) * sizeof(*more));
	if (more == NULL)
		goto failed;
	r->receipt_for = more;
	memcpy(r->receipt_for[r->n_receipts++], d->orig_id, SEALPUSH_MSG_ID_LEN);
	so.user = (void *)(uintptr_t)r->n_receipts;
	e = sp_client_send(c, d->to, 1, d->blob, d->blob_len, &so, NULL);
	if (e < 0) {
		r->n_receipts--;
		goto failed;
	}
	r->receipts_pending++;
	if (c == r->anon_c)
		r->anon_pending++;
	goto out;
failed:
	fprintf(stderr, "%s: warning: no receipt for message %s: cannot send: %s\n", prog, d->id,
	        strerror(-e));
out:
	free(d->blob);
	OPENSSL_cleanse(d, sizeof(*d));
	free(d);
}

/* Unlinks d from the waiting receipts and frees it, after sending it if send. */
static void delayed_done(run_t *r, delayed_receipt_t *d, bool send)
{
	delayed_receipt_t **pp = &r->delayed;

	while (*pp != d)
		pp = &(*pp)->next;
	*pp = d->next;
	event_free(d->ev);
	if (send) {
		receipt_submit(r, d);
		return;
	}
	free(d->blob);
	OPENSSL_cleanse(d, sizeof(*d));
	free(d);
}

static void on_receipt_due(evutil_socket_t fd, short what, void *arg)
{
	delayed_receipt_t *d = arg;

	(void)fd;
	(void)what;
	delayed_done(d->r, d, true);
}

static void receipts_flush(run_t *r)
{
	while (r->delayed != NULL)
		delayed_done(r, r->delayed, true);
}

/*
 * Seals the receipt an opened message asks for, after it was printed and before it is
 * acknowledged, and sends it after a random delay of up to receipt_delay_ms (so that its SEND
 * does not follow the DELIVER at once; at once when listen is stopping). A failure is said on
 * stderr; the message stays printed and is acknowledged all the same (a receipt is a
 * courtesy, the message must not be lost for it).
 */
static void send_receipt(run_t *r, const cli_opened_t *op, const char *id,
                         const uint8_t orig_id[SEALPUSH_MSG_ID_LEN])
{
	delayed_receipt_t *d = calloc(1, sizeof(*d));
	struct timeval tv;
	uint32_t rnd = 0, ms;
	char err[256];
	int e;

	if (d == NULL) {
		fprintf(stderr, "%s: warning: no receipt for message %s: out of memory\n", prog,
		        id);
		return;
	}
	if (RAND_bytes(d->rid, sizeof(d->rid)) != 1 ||
	    RAND_bytes((unsigned char *)&rnd, sizeof(rnd)) != 1) {
		fprintf(stderr, "%s: warning: no receipt for message %s: no random bytes\n", prog,
		        id);
		free(d);
		return;
	}
	e = cli_seal_receipt(r->seal, op, d->rid, op->ttl, d->to, &d->blob, &d->blob_len, err,
	                     sizeof(err));
	if (e < 0) {
		fprintf(stderr, "%s: warning: no receipt for message %s: %s\n", prog, id, err);
		free(d);
		return;
	}
	d->r = r;
	d->ttl = op->ttl;
	memcpy(d->orig_id, orig_id, sizeof(d->orig_id));
	snprintf(d->id, sizeof(d->id), "%s", id);
	/* Anonymously when the sender gave its access key and there is an anonymous door. */
	if (op->has_reply_access && r->settings->anon_server != NULL) {
		d->anon = true;
		memcpy(d->access, op->reply_access, sizeof(d->access));
	}
	ms = (uint32_t)(rnd % ((uint64_t)r->receipt_delay_ms + 1));
	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	if (ms == 0 || r->finished || (d->ev = evtimer_new(r->base, on_receipt_due, d)) == NULL ||
	    evtimer_add(d->ev, &tv) != 0) {
		if (d->ev != NULL)
			event_free(d->ev);
		receipt_submit(r, d); /* no delay, or no timer for it: now */
		return;
	}
	d->next = r->delayed;
	r->delayed = d;
}

/* Prints one message or receipt (text line or JSON object). Returns 0 or -1 (output error). */
static int print_delivery(run_t *r, const sp_client_message_t *m, const char *id,
                          const char *sender, bool sealed, const cli_opened_t *op,
                          const uint8_t *text, size_t text_len)
{
	char for_id[2 * SEALPUSH_MSG_ID_LEN + 1], sbuf[16], user[65] = "", named[64 + 1 + 65];
	const char *status = NULL;

	/* listen --users: "HANDLE:TOKEN" (or "-:TOKEN"), the user as the directory, verified,
	 * names the sending device. */
	if (sealed && r->dir != NULL && cli_dir_user_of(r->dir, op->sender, user) == 0) {
		snprintf(named, sizeof(named), "%s:%s", user[0] ? user : "-", sender);
		if (!r->json)
			sender = named;
	}
	if (sealed && op->is_receipt) {
		hex_id(op->receipt_for, for_id);
		status = cli_receipt_status_name(op->receipt_status, sbuf);
	}
	if (r->json) {
		json_t *o;

		if (status != NULL) {
			o = json_pack("{s:s, s:s, s:s, s:s, s:s}", "kind", "receipt", "sender",
			              sender, "msg_id", for_id, "status", status, "receipt_id", id);
		} else {
			json_t *p = json_stringn((const char *)text, text_len);

			o = json_pack("{s:s, s:s?, s:b, s:s, s:i, s:b, s:I}", "kind", "message",
			              "sender", sealed ? sender : NULL, "sealed", sealed, "msg_id",
			              id, "priority", m->priority, "stored", m->stored, "length",
			              (json_int_t)text_len);
			if (o != NULL && m->collapse_id != NULL)
				json_object_set_new(o, "collapse_id",
				                    json_stringn((const char *)m->collapse_id,
				                                 m->collapse_id_len));
			if (o != NULL && sealed && op->wants_receipt)
				json_object_set_new(o, "receipt_wanted", json_true());
			if (o != NULL && user[0] != '\0')
				json_object_set_new(o, "user", json_string(user));
			if (o != NULL && p != NULL) {
				json_object_set_new(o, "payload", p);
			} else if (o != NULL) {
				size_t bl = 4 * ((text_len + 2) / 3) + 1;
				char *b64 = malloc(bl);

				if (b64 != NULL) {
					EVP_EncodeBlock((unsigned char *)b64, text, (int)text_len);
					json_object_set_new(o, "payload_base64", json_string(b64));
					free(b64);
				}
			}
		}
		if (o == NULL)
			return -1;
		json_dumpf(o, stdout, JSON_COMPACT);
		fputc('\n', stdout);
		json_decref(o);
	} else if (status != NULL) {
		printf("receipt %s %s %s\n", sender, for_id, status);
	} else {
		printf("%s %s %zu ", sender, id, text_len);
		fwrite(text, 1, text_len, stdout);
		fputc('\n', stdout);
	}
	return fflush(stdout) != 0 || ferror(stdout) ? -1 : 0;
}

/* A Web Push message (PROTOCOL.md 14.4): opened with the subscription's keys and printed;
 * one that cannot be opened is reported and acknowledged all the same (it never will). */
static void on_webpush(run_t *r, sp_client_t *c, const sp_client_message_t *m, const char *id)
{
	char subhex[33] = "?";
	uint8_t *text = malloc(m->blob_len + 1);
	size_t n = 0;
	int e = text ? cli_wp_open(r->key_file, m->blob, m->blob_len, subhex, text, m->blob_len, &n)
	             : -ENOMEM;

	if (e < 0) {
		die_line("web push message %s for subscription %s %s (dropped)", id, subhex,
		         e == -ENOENT ? "has no keys here" : "does not decrypt");
		r->verify_failed = true;
	} else if (r->json) {
		json_t *o =
		        json_pack("{s:s, s:s, s:s, s:i, s:b, s:s%}", "kind", "webpush",
		                  "subscription_id", subhex, "msg_id", id, "priority", m->priority,
		                  "stored", m->stored, "payload", (const char *)text, n);

		if (o)
			json_dumpf(o, stdout, JSON_COMPACT);
		fputc('\n', stdout);
		json_decref(o);
	} else {
		printf("webpush %s %s %zu ", subhex, id, n);
		fwrite(text, 1, n, stdout);
		fputc('\n', stdout);
	}
	fflush(stdout);
	free(text);
	sp_client_ack(c, m->msg_id);
	r->got++;
	if (r->count && r->got >= r->count)
		finish(r, 0);
}

static void on_message(sp_client_t *c, const sp_client_message_t *m, void *arg)
{
	run_t *r = arg;
	cli_opened_t op = {0};
	char id[2 * SEALPUSH_MSG_ID_LEN + 1], sender[SEALPUSH_TOKEN_HEX + 1], err[256];
	const uint8_t *text = m->blob;
	size_t text_len = m->blob_len;
	bool sealed = false;
	int e;

	if (r->finished)
		return; /* not printed, not acknowledged: delivered again next time */
	hex_id(m->msg_id, id);
	if (m->blob_len > 0 && m->blob[0] == 0x57) {
		on_webpush(r, c, m, id);
		return;
	}
	e = cli_seal_open(r->seal, m->msg_id, m->blob, m->blob_len, &op, err, sizeof(err));
	if (e == 0) {
		sealed = true;
		sp_token_hex(op.sender, sender);
		text = op.text;
		text_len = op.text_len;
	} else if (e == -ENOMSG) {
		snprintf(sender, sizeof(sender), "unsealed");
	} else {
		/* It can never open: say so, and acknowledge it so that it does not come back. */
		if (e == -EKEYEXPIRED)
			die_line("message %s cannot be opened: %s (dropped)", id, err);
		else
			die_line("message %s failed verification: %s (dropped)", id, err);
		r->verify_failed = true;
		sp_client_ack(c, m->msg_id);
		return;
	}
	if (print_delivery(r, m, id, sender, sealed, &op, text, text_len) < 0) {
		if (sealed)
			cli_seal_done(r->seal, &op, 0);
		die_line("cannot write the message: %s", strerror(errno));
		finish(r, EXIT_IOERR);
		return;
	}
	if (sealed && op.wants_receipt)
		send_receipt(r, &op, id, m->msg_id);
	if (sealed)
		cli_seal_done(r->seal, &op, 1);
	sp_client_ack(c, m->msg_id);
	r->got++;
	if (r->count && r->got >= r->count)
		finish(r, 0);
}

/* ---- sealing-key rotation (PROTOCOL.md 13.11) ------------------------------------------ */

/* A duration: N seconds, or N with a unit s, m, h, d, w; "never" is 0. */
static int parse_duration(const char *what, const char *v, uint64_t max, uint64_t *out)
{
	static const struct {
		char unit;
		uint64_t s;
	} units[] = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}, {'w', 7 * 86400}};
	uint64_t mul = 1;
	unsigned long long n;
	char *end;

	if (strcmp(v, "never") == 0) {
		*out = 0;
		return 0;
	}
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno == 0 && end != v && v[0] != '-' && *end != '\0' && end[1] == '\0') {
		mul = 0;
		for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
			if (*end == units[i].unit)
				mul = units[i].s;
		if (mul != 0)
			end++;
	}
	if (errno || end == v || *end || v[0] == '-' || mul == 0 || n > max / mul) {
		die_line("%s wants a duration (N seconds, or Ns Nm Nh Nd Nw; at most %llu s), got "
		         "\"%s\"",
		         what, (unsigned long long)max, v);
		return EXIT_USAGE;
	}
	*out = n * mul;
	return 0;
}

/* listen's receipt_delay: the most a receipt waits before its SEND, in ms (0: none). */
static int receipt_delay_setting(const settings_t *s, uint32_t *ms)
{
	unsigned long v;
	char *end;

	*ms = CLI_RECEIPT_DELAY_DEFAULT_MS;
	if (s->receipt_delay == NULL)
		return 0;
	errno = 0;
	v = strtoul(s->receipt_delay, &end, 10);
	if (errno || end == s->receipt_delay || *end || s->receipt_delay[0] == '-' ||
	    v > CLI_RECEIPT_DELAY_MAX_MS) {
		die_line("receipt_delay wants milliseconds, 0 to %u, got \"%s\"",
		         CLI_RECEIPT_DELAY_MAX_MS, s->receipt_delay);
		return EXIT_USAGE;
	}
	*ms = (uint32_t)v;
	return 0;
}

/* The schedule and grace period of the settings (defaults: weekly, 30 days). */
static int rotation_settings(const settings_t *s, uint64_t *every, uint64_t *grace)
{
	int rc;

	*every = CLI_SEAL_ROTATE_DEFAULT_S;
	*grace = CLI_SEAL_GRACE_DEFAULT_S;
	if (s->rotate_every != NULL &&
	    (rc = parse_duration("rotate_every", s->rotate_every, 10u * 366 * 86400, every)))
		return rc;
	if (s->key_grace != NULL &&
	    (rc = parse_duration("key_grace", s->key_grace, CLI_SEAL_GRACE_MAX_S, grace)))
		return rc;
	return 0;
}

/*
 * Publishes this device's card after a rotation: into card_file if set, and, with line, on
 * stdout as "card EPOCH JSON" (json: {"kind":"card","epoch":N,"card":{...}}); without line,
 * the bare card (what `sealpush card` prints). Returns 0 or an exit code.
 */
static int publish_card(cli_seal_t *seal, const char *card_file, bool line, bool json)
{
	char err[512], *card = NULL;
	int e = cli_seal_card_json(seal, &card, err, sizeof(err));

	if (e == 0 && card_file != NULL)
		e = cli_card_write_file(card_file, card, err, sizeof(err));
	if (e < 0) {
		free(card);
		die_line("%s", err);
		return e == -ENOMEM ? EXIT_INTERNAL : EXIT_IOERR;
	}
	if (!line) {
		printf("%s\n", card);
	} else if (json) {
		json_t *c = json_loads(card, 0, NULL);
		json_t *o = json_pack("{s:s, s:I, s:o?}", "kind", "card", "epoch",
		                      (json_int_t)cli_seal_epoch(seal), "card", c);

		if (o != NULL)
			json_dumpf(o, stdout, JSON_COMPACT);
		fputc('\n', stdout);
		json_decref(o);
	} else {
		printf("card %u %s\n", (unsigned)cli_seal_epoch(seal), card);
	}
	free(card);
	return fflush(stdout) != 0 || ferror(stdout) ? EXIT_IOERR : 0;
}

/* Rotates if due and erases what is past its grace; says what it did. Returns 0 or an exit
 * code (a failure is also said). */
static int rotate_step(run_t *r, bool force)
{
	char err[512];
	uint32_t rotated;
	unsigned erased;
	int e = cli_seal_maintain(r->seal, force, &rotated, &erased, err, sizeof(err));

	if (e < 0) {
		die_line("%s", err);
		return seal_exit(e);
	}
	if (erased > 0)
		fprintf(stderr, "%s: erased %u sealing key%s past the grace period\n", prog, erased,
		        erased == 1 ? "" : "s");
	if (rotated == 0)
		return 0;
	fprintf(stderr, "%s: rotated the sealing key: epoch %u\n", prog, (unsigned)rotated);
	return publish_card(r->seal, r->card_file, !force, r->json);
}

static void on_rotate_tick(evutil_socket_t fd, short what, void *arg)
{
	run_t *r = arg;

	(void)fd;
	(void)what;
	/* A failure (disk full, say) is said and tried again at the next tick. */
	(void)rotate_step(r, false);
}

/* The check interval: a quarter of the shorter period, 1 s to 60 s. */
static double rotate_tick_s(uint64_t every, uint64_t grace)
{
	uint64_t m = every != 0 && every < grace ? every : grace;
	double t = (double)m / 4;

	return t < 1 ? 1 : t > 60 ? 60 : t;
}

static int cmd_rotate(const settings_t *s)
{
	run_t r = {.card_file = s->card_file};
	uint64_t every, grace;
	char err[512];
	int rc, e;

	if ((rc = need("rotate", s->key, "--key", "key", "SEALPUSH_KEY")) ||
	    (rc = rotation_settings(s, &every, &grace)))
		return rc;
	e = cli_seal_load(s->cert, s->key, &r.seal, err, sizeof(err));
	if (e < 0) {
		die_line("%s", err);
		return seal_exit(e);
	}
	cli_seal_set_rotation(r.seal, every, grace);
	rc = rotate_step(&r, true);
	cli_seal_free(r.seal);
	return rc;
}

static int cmd_listen(const settings_t *s, const cmd_opts_t *o)
{
	run_t r = {.json = o->json,
	           .count = o->count,
	           .key_file = s->key,
	           .card_file = s->card_file,
	           .settings = s,
	           .opts = o};
	uint64_t every, grace;
	cli_dir_settings_t ds = {.server = s->server,
	                         .ca = s->ca,
	                         .cert = s->cert,
	                         .key = s->key,
	                         .connect_timeout = o->connect_timeout,
	                         .tls_groups = o->tls_groups};
	char err[512];
	int rc, e;

	if (o->users)
		r.dir = &ds;
	if ((rc = need("listen", s->server, "--server", "server", "SEALPUSH_SERVER")) ||
	    (rc = need("listen", s->ca, "--ca", "ca", "SEALPUSH_CA")) ||
	    (rc = need("listen", s->cert, "--cert", "cert", "SEALPUSH_CERT")) ||
	    (rc = need("listen", s->key, "--key", "key", "SEALPUSH_KEY")) ||
	    (rc = rotation_settings(s, &every, &grace)) ||
	    (rc = receipt_delay_setting(s, &r.receipt_delay_ms)))
		return rc;
	if (cli_seal_available()) {
		e = cli_seal_load(s->cert, s->key, &r.seal, err, sizeof(err));
		if (e < 0 && e != -ENOENT) {
			die_line("%s", err);
			return seal_exit(e);
		}
		if (e == -ENOENT && verbose)
			fprintf(stderr,
			        "%s: no sealing key (sealpush init): sealed messages cannot "
			        "be opened\n",
			        prog);
	}
	/* Rotation: due now (a device that did not listen for a while), then on its schedule. */
	if (r.seal != NULL) {
		cli_seal_set_rotation(r.seal, every, grace);
		if ((rc = rotate_step(&r, false)) != 0) {
			cli_seal_free(r.seal);
			return rc;
		}
	}
	if ((rc = client_make(&r, s, o, false, false)) != 0) {
		cli_seal_free(r.seal);
		return rc;
	}
	if (r.seal != NULL) {
		struct timeval tv = tv_of(rotate_tick_s(every, grace));

		r.rotate_ev = event_new(r.base, -1, EV_PERSIST, on_rotate_tick, &r);
		if (r.rotate_ev == NULL || event_add(r.rotate_ev, &tv) != 0) {
			die_line("cannot set up the rotation timer");
			cli_seal_free(r.seal);
			return EXIT_INTERNAL;
		}
	}
	rc = run_loop(&r, o->has_timeout ? o->timeout : 0);
	cli_seal_free(r.seal);
	free(r.receipt_for);
	/* A message dropped because it failed verification outweighs a --timeout. */
	if ((rc == 0 || rc == EXIT_TIMEOUT) && r.verify_failed)
		rc = EXIT_VERIFY;
	return rc;
}

/* subscribe [--app-server-key KEY], unsubscribe ID, subscriptions: one request on a SEND_ONLY
 * connection (so a running listen is not replaced). */
static int cmd_webpush(const settings_t *s, const cmd_opts_t *o, int op, const char *arg)
{
	run_t r = {.wp_cmd = op + 1, .key_file = s->key};
	int rc;

	if ((rc = need("subscribe", s->server, "--server", "server", "SEALPUSH_SERVER")) ||
	    (rc = need("subscribe", s->ca, "--ca", "ca", "SEALPUSH_CA")) ||
	    (rc = need("subscribe", s->cert, "--cert", "cert", "SEALPUSH_CERT")) ||
	    (rc = need("subscribe", s->key, "--key", "key", "SEALPUSH_KEY")))
		return rc;
	if (op == SP_CLIENT_SUB_REMOVE && cli_wp_parse_id(arg, r.wp_sub) < 0) {
		die_line("unsubscribe takes a subscription id (32 hex digits)");
		return EXIT_USAGE;
	}
	if (o->app_server_key) {
		if (sp_b64url_decode(o->app_server_key, strlen(o->app_server_key), r.wp_key, 65) !=
		            65 ||
		    r.wp_key[0] != 0x04) {
			die_line(
			        "--app-server-key wants the base64url of an uncompressed P-256 key "
			        "(65 bytes, as web-push's generateVAPIDKeys() gives)");
			return EXIT_USAGE;
		}
		r.wp_has_key = true;
	}
	if ((rc = client_make(&r, s, o, true, false)) != 0)
		return rc;
	return run_loop(&r, o->timeout);
}

/* ---- the small commands -------------------------------------------------------------------- */

static int cmd_token(const settings_t *s)
{
	FILE *f;
	X509 *cert;
	uint8_t tok[SEALPUSH_TOKEN_LEN];
	char hex[SEALPUSH_TOKEN_HEX + 1];
	int rc;

	if ((rc = need("token", s->cert, "--cert", "cert", "SEALPUSH_CERT")))
		return rc;
	f = fopen(s->cert, "r");
	if (f == NULL) {
		die_line("cannot read the certificate %s: %s", s->cert, strerror(errno));
		return EXIT_NOINPUT;
	}
	cert = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (cert == NULL || sp_token_from_cert(cert, tok) < 0) {
		X509_free(cert);
		die_line("%s is not a PEM certificate", s->cert);
		return EXIT_NOINPUT;
	}
	X509_free(cert);
	sp_token_hex(tok, hex);
	printf("%s\n", hex);
	return fflush(stdout) == 0 ? EXIT_OK : EXIT_IOERR;
}

static int cmd_init(const settings_t *s)
{
	char path[PATH_MAX], err[512];
	int rc, e;

	if ((rc = need("init", s->cert, "--cert", "cert", "SEALPUSH_CERT")) ||
	    (rc = need("init", s->key, "--key", "key", "SEALPUSH_KEY")))
		return rc;
	e = cli_seal_init(s->cert, s->key, path, sizeof(path), err, sizeof(err));
	if (e < 0) {
		die_line("%s", err);
		return e == -EEXIST ? EXIT_USAGE : seal_exit(e);
	}
	printf("%s\n", path);
	return EXIT_OK;
}

/* access enable|rotate|disable|anyone: ACCESS_SET over an identified SEND_ONLY connection
 * (PROTOCOL.md 17.4). enable keeps the device's access key (KEY.access) or makes one, rotate
 * makes a new one (the old one is locked out), both register it and print the card with it;
 * disable refuses anonymous messages and removes the key; anyone accepts them from anyone. */
typedef struct access_run {
	struct event_base *base;
	int mode;
	const uint8_t *key;
	bool answered, sent;
	uint8_t req[SEALPUSH_MSG_ID_LEN];
	sp_client_access_state_t st;
	char reason[256], fail[512];
	int fail_exit;
} access_run_t;

static void on_access_event(sp_client_t *c, const sp_client_event_t *ev, void *arg)
{
	access_run_t *a = arg;
	int e;

	if (ev->type == SP_CLIENT_EV_CONNECTED && !a->sent) {
		e = sp_client_access_set(c, a->mode, a->key, a->key ? 1 : 0, a->req);
		a->sent = true;
		if (e < 0) {
			snprintf(a->fail, sizeof(a->fail), "%s",
			         e == -ENOTSUP
			                 ? "the relay has no anonymous door (its WELCOME lacks "
			                   "the ANONYMOUS capability)"
			                 : strerror(-e));
			a->fail_exit = e == -ENOTSUP ? EXIT_REFUSED : EXIT_INTERNAL;
			event_base_loopexit(a->base, NULL);
		}
	} else if (ev->type == SP_CLIENT_EV_STOPPED || ev->type == SP_CLIENT_EV_DISCONNECTED) {
		if (!a->answered && a->fail[0] == '\0') {
			snprintf(a->fail, sizeof(a->fail), "connection: %s (%s)",
			         sp_client_cause_name(ev->cause), ev->detail ? ev->detail : "");
			a->fail_exit = exit_for_cause(ev->cause, ev->code);
		}
		event_base_loopexit(a->base, NULL);
	}
}

static void on_access_state(sp_client_t *c, const sp_client_access_state_t *st, void *arg)
{
	access_run_t *a = arg;

	(void)c;
	if (memcmp(st->req_id, a->req, sizeof(a->req)) != 0)
		return;
	a->answered = true;
	a->st = *st;
	snprintf(a->reason, sizeof(a->reason), "%.*s", st->reason ? (int)st->reason_len : 0,
	         st->reason ? st->reason : "");
	event_base_loopexit(a->base, NULL);
}

static int cmd_access(const settings_t *s, const cmd_opts_t *o, const char *what)
{
	access_run_t a = {.mode = SP_CLIENT_ANON_KEY_HOLDERS};
	sp_client_config_t cfg = {.server = s->server,
	                          .ca_file = s->ca,
	                          .cert_file = s->cert,
	                          .key_file = s->key,
	                          .send_only = true,
	                          .no_reconnect = true,
	                          .max_attempts = 1,
	                          .connect_timeout_ms = (uint32_t)(o->connect_timeout * 1000),
	                          .tls_groups = o->tls_groups,
	                          .agent = "sealpush-cli/" SP_VERSION};
	sp_client_callbacks_t cb = {
	        .event = on_access_event, .access_state = on_access_state, .arg = &a};
	struct timeval tv = {.tv_sec = (time_t)o->timeout};
	uint8_t key[CLI_ACCESS_KEY_LEN];
	cli_seal_t *seal = NULL;
	sp_client_t *c = NULL;
	char err[512];
	int rc, e;

	if ((rc = need("access", s->server, "--server", "server", "SEALPUSH_SERVER")) ||
	    (rc = need("access", s->ca, "--ca", "ca", "SEALPUSH_CA")) ||
	    (rc = need("access", s->cert, "--cert", "cert", "SEALPUSH_CERT")) ||
	    (rc = need("access", s->key, "--key", "key", "SEALPUSH_KEY")))
		return rc;
	e = cli_seal_load(s->cert, s->key, &seal, err, sizeof(err));
	if (e < 0) {
		die_line("%s", err);
		return seal_exit(e);
	}
	if (strcmp(what, "disable") == 0) {
		a.mode = SP_CLIENT_ANON_REFUSE;
	} else if (strcmp(what, "anyone") == 0) {
		a.mode = SP_CLIENT_ANON_ANYONE;
	} else {
		e = strcmp(what, "enable") == 0 ? cli_seal_access_key(seal, key, err, sizeof(err))
		                                : 0;
		if (e < 0) {
			die_line("%s", err);
			rc = EXIT_NOINPUT;
			goto out;
		}
		if (e == 0 && RAND_bytes(key, sizeof(key)) != 1) {
			die_line("no random bytes for the access key");
			rc = EXIT_INTERNAL;
			goto out;
		}
		a.key = key;
	}
	a.base = event_base_new();
	if (a.base == NULL) {
		rc = EXIT_INTERNAL;
		goto out;
	}
	e = sp_client_new(a.base, &cfg, &cb, &c, err, sizeof(err));
	if (e < 0) {
		die_line("%s", err);
		rc = e == -EINVAL ? EXIT_USAGE : e == -ENOMEM ? EXIT_INTERNAL : EXIT_NOINPUT;
		goto out;
	}
	sp_client_start(c);
	event_base_loopexit(a.base, &tv);
	event_base_dispatch(a.base);
	if (!a.answered) {
		die_line("access %s: %s", what,
		         a.fail[0] ? a.fail : "no answer from the relay in time (--timeout)");
		rc = a.fail[0] ? (a.fail_exit ? a.fail_exit : EXIT_CONNECT) : EXIT_CONNECT;
		goto out;
	}
	if (a.st.status != SEALPUSH_ST_DELIVERED) {
		die_line("access %s: the relay refused: %s%s%s", what,
		         sp_client_status_name(a.st.status), a.reason[0] ? ": " : "", a.reason);
		rc = EXIT_REFUSED;
		goto out;
	}
	/* Registered: keep the key (or remove it), then show the card contacts need. */
	e = cli_seal_access_store(seal, a.mode == SP_CLIENT_ANON_KEY_HOLDERS ? key : NULL, err,
	                          sizeof(err));
	if (e < 0) {
		die_line("%s", err);
		rc = EXIT_IOERR;
		goto out;
	}
	fprintf(stderr, "%s: anonymous mode %u registered%s\n", prog, (unsigned)a.st.anon_mode,
	        a.mode == SP_CLIENT_ANON_KEY_HOLDERS
	                ? "; hand this card (it carries the access key) to your contacts only"
	                : "");
	if (a.mode == SP_CLIENT_ANON_KEY_HOLDERS) {
		e = cli_seal_card_write(seal, stdout, err, sizeof(err));
		if (e < 0) {
			die_line("%s", err);
			rc = seal_exit(e);
			goto out;
		}
	}
	rc = fflush(stdout) == 0 ? EXIT_OK : EXIT_IOERR;
out:
	OPENSSL_cleanse(key, sizeof(key));
	sp_client_free(c);
	if (a.base)
		event_base_free(a.base);
	cli_seal_free(seal);
	return rc;
}

static int cmd_card(const settings_t *s)
{
	cli_seal_t *seal = NULL;
	char err[512];
	int rc, e;

	if ((rc = need("card", s->cert, "--cert", "cert", "SEALPUSH_CERT")) ||
	    (rc = need("card", s->key, "--key", "key", "SEALPUSH_KEY")))
		return rc;
	e = cli_seal_load(s->cert, s->key, &seal, err, sizeof(err));
	if (e == 0)
		e = cli_seal_card_write(seal, stdout, err, sizeof(err));
	cli_seal_free(seal);
	if (e < 0) {
		die_line("%s", err);
		return seal_exit(e);
	}
	return fflush(stdout) == 0 ? EXIT_OK : EXIT_IOERR;
}

/* enroll: from nothing to a device that can connect: key, CSR, certificate (POST /enroll on
 * the provider door), sealing key, card. */
static int cmd_enroll(const settings_t *s, const cmd_opts_t *o)
{
	sp_client_enrolled_t got;
	char path[PATH_MAX], card[PATH_MAX], err[512];
	cli_seal_t *seal = NULL;
	FILE *f;
	int rc, e;

	if ((rc = need("enroll", s->server, "--server", "server", "SEALPUSH_SERVER")) ||
	    (rc = need("enroll", s->ca, "--ca", "ca", "SEALPUSH_CA")) ||
	    (rc = need("enroll", s->cert, "--cert", "cert", "SEALPUSH_CERT")) ||
	    (rc = need("enroll", s->key, "--key", "key", "SEALPUSH_KEY")))
		return rc;
	if (!o->code) {
		die_line("enroll needs --code CODE (from sealpush-ca enroll-code or the relay's "
		         "admin POST /enroll-codes)");
		return EXIT_USAGE;
	}
	if ((size_t)snprintf(card, sizeof(card), "%s.card", s->cert) >= sizeof(card) && !o->card) {
		die_line("the certificate path is too long");
		return EXIT_USAGE;
	}
	e = sp_client_enroll(s->server, s->ca, o->code, s->cert, s->key, o->connect_timeout, &got,
	                     err, sizeof(err));
	if (e < 0) {
		die_line("%s", err);
		return e == -EEXIST || e == -EINVAL ? EXIT_USAGE
		       : e == -EACCES               ? EXIT_REFUSED
		       : e == -EAGAIN               ? EXIT_REFUSED
		       : e == -ENOENT               ? EXIT_NOINPUT
		       : e == -EPROTO               ? EXIT_TLS
		                                    : EXIT_CONNECT;
	}
	if (verbose)
		fprintf(stderr, "%s: enrolled: serial %s, valid until %s\n", prog, got.serial,
		        got.not_after);
	e = cli_seal_init(s->cert, s->key, path, sizeof(path), err, sizeof(err));
	if (e == 0)
		e = cli_seal_load(s->cert, s->key, &seal, err, sizeof(err));
	if (e < 0) {
		cli_seal_free(seal);
		die_line("enrolled, but the sealing key: %s", err);
		return seal_exit(e);
	}
	f = fopen(o->card ? o->card : card, "wx");
	if (!f) {
		cli_seal_free(seal);
		die_line("enrolled, but cannot write the card %s: %s", o->card ? o->card : card,
		         strerror(errno));
		return EXIT_IOERR;
	}
	e = cli_seal_card_write(seal, f, err, sizeof(err));
	cli_seal_free(seal);
	if (fclose(f) != 0 && e == 0) {
		die_line("writing the card: %s", strerror(errno));
		return EXIT_IOERR;
	}
	if (e < 0) {
		die_line("%s", err);
		return seal_exit(e);
	}
	printf("%s\n", got.token_hex);
	return fflush(stdout) == 0 ? EXIT_OK : EXIT_IOERR;
}

static int cmd_verify_card(const char *path)
{
	cli_card_t *card = NULL;
	uint8_t tok[SEALPUSH_TOKEN_LEN];
	char hex[SEALPUSH_TOKEN_HEX + 1], err[512];
	int e = cli_card_load(path, &card, err, sizeof(err));

	if (e < 0) {
		die_line("%s: %s", path, err);
		return seal_exit(e);
	}
	cli_card_token(card, tok);
	cli_card_free(card);
	sp_token_hex(tok, hex);
	printf("%s\n", hex);
	return EXIT_OK;
}

/* ---- main ------------------------------------------------------------------------------------ */

enum {
	O_SERVER = 256,
	O_CA,
	O_CERT,
	O_KEY,
	O_CONFIG,
	O_CONNECT_TIMEOUT,
	O_TLS_GROUPS,
	O_TO,
	O_MESSAGE,
	O_FILE,
	O_TTL,
	O_PRIORITY,
	O_COLLAPSE,
	O_ID,
	O_RAW,
	O_TIMEOUT,
	O_JSON,
	O_RECEIPT,
	O_SUITE,
	O_COUNT,
	O_APP_SERVER_KEY,
	O_ROTATE_EVERY,
	O_KEY_GRACE,
	O_CARD_FILE,
	O_TO_USER,
	O_USERS,
	O_CODE,
	O_CARD,
	O_ANON_SERVER,
	O_IDENTIFIED,
	O_RECEIPT_DELAY,
	O_RENEW_AT, /* the last: seen[] is indexed up to it */
};

/* Which command each command-specific option belongs to. */
static const struct {
	int opt;
	const char *name;
	const char *cmds;
} scoped[] = {
        {O_TO, "--to", "send"},
        {O_MESSAGE, "--message", "send"},
        {O_FILE, "--file", "send"},
        {O_TTL, "--ttl", "send"},
        {O_PRIORITY, "--priority", "send"},
        {O_COLLAPSE, "--collapse", "send"},
        {O_ID, "--id", "send"},
        {O_RAW, "--raw", "send"},
        {O_RECEIPT, "--receipt", "send"},
        {O_SUITE, "--suite", "send"},
        {O_TIMEOUT, "--timeout", "send listen subscribe unsubscribe subscriptions access"},
        {O_JSON, "--json", "send listen"},
        {O_COUNT, "--count", "listen"},
        {O_APP_SERVER_KEY, "--app-server-key", "subscribe"},
        {O_TO_USER, "--to-user", "send"},
        {O_USERS, "--users", "listen"},
        {O_CODE, "--code", "enroll"},
        {O_CARD, "--card", "enroll"},
        {O_RENEW_AT, "--renew-at", "listen"},
        {O_RECEIPT_DELAY, "--receipt-delay", "listen"},
        {O_IDENTIFIED, "--identified", "send"},
};

static bool word_in(const char *word, const char *list)
{
	size_t n = strlen(word);

	for (const char *p = list; (p = strstr(p, word)) != NULL; p += n)
		if ((p == list || p[-1] == ' ') && (p[n] == '\0' || p[n] == ' '))
			return true;
	return false;
}

static int parse_seconds(const char *flag, const char *v, double max, double *out)
{
	char *end;
	double d;

	errno = 0;
	d = strtod(v, &end);
	if (errno || end == v || *end || !(d >= 0) || d > max) {
		die_line("%s wants a number of seconds from 0 to %.0f, got \"%s\"", flag, max, v);
		return EXIT_USAGE;
	}
	*out = d;
	return 0;
}

static int parse_ulong(const char *flag, const char *v, unsigned long lo, unsigned long hi,
                       unsigned long *out)
{
	char *end;
	unsigned long n;

	errno = 0;
	n = strtoul(v, &end, 10);
	if (errno || end == v || *end || v[0] == '-' || n < lo || n > hi) {
		die_line("%s wants a whole number from %lu to %lu, got \"%s\"", flag, lo, hi, v);
		return EXIT_USAGE;
	}
	*out = n;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	        {"server", required_argument, NULL, O_SERVER},
	        {"ca", required_argument, NULL, O_CA},
	        {"cert", required_argument, NULL, O_CERT},
	        {"key", required_argument, NULL, O_KEY},
	        {"config", required_argument, NULL, O_CONFIG},
	        {"connect-timeout", required_argument, NULL, O_CONNECT_TIMEOUT},
	        {"tls-groups", required_argument, NULL, O_TLS_GROUPS},
	        {"to", required_argument, NULL, O_TO},
	        {"to-user", required_argument, NULL, O_TO_USER},
	        {"users", no_argument, NULL, O_USERS},
	        {"message", required_argument, NULL, O_MESSAGE},
	        {"file", required_argument, NULL, O_FILE},
	        {"ttl", required_argument, NULL, O_TTL},
	        {"priority", required_argument, NULL, O_PRIORITY},
	        {"collapse", required_argument, NULL, O_COLLAPSE},
	        {"id", required_argument, NULL, O_ID},
	        {"raw", no_argument, NULL, O_RAW},
	        {"receipt", no_argument, NULL, O_RECEIPT},
	        {"suite", required_argument, NULL, O_SUITE},
	        {"timeout", required_argument, NULL, O_TIMEOUT},
	        {"json", no_argument, NULL, O_JSON},
	        {"count", required_argument, NULL, O_COUNT},
	        {"app-server-key", required_argument, NULL, O_APP_SERVER_KEY},
	        {"rotate-every", required_argument, NULL, O_ROTATE_EVERY},
	        {"key-grace", required_argument, NULL, O_KEY_GRACE},
	        {"card-file", required_argument, NULL, O_CARD_FILE},
	        {"code", required_argument, NULL, O_CODE},
	        {"card", required_argument, NULL, O_CARD},
	        {"renew-at", required_argument, NULL, O_RENEW_AT},
	        {"receipt-delay", required_argument, NULL, O_RECEIPT_DELAY},
	        {"anon-server", required_argument, NULL, O_ANON_SERVER},
	        {"identified", no_argument, NULL, O_IDENTIFIED},
	        {"verbose", no_argument, NULL, 'v'},
	        {"help", no_argument, NULL, 'h'},
	        {"version", no_argument, NULL, 'V'},
	        {NULL, 0, NULL, 0},
	};
	settings_t s = {0};
	cmd_opts_t o = {.priority = 0, .timeout = 60, .connect_timeout = 10};
	const char *config = NULL, *cmd;
	bool seen[O_RENEW_AT + 1] = {0};
	unsigned long ul;
	int ch, rc = 0;

	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":vhV", longopts, NULL)) != -1) {
		if (ch >= O_SERVER && ch <= O_RENEW_AT)
			seen[ch] = true;
		switch (ch) {
		case O_SERVER:
			free(s.server);
			s.server = xstrdup(optarg);
			break;
		case O_CA:
			free(s.ca);
			s.ca = xstrdup(optarg);
			break;
		case O_CERT:
			free(s.cert);
			s.cert = xstrdup(optarg);
			break;
		case O_KEY:
			free(s.key);
			s.key = xstrdup(optarg);
			break;
		case O_CONFIG:
			config = optarg;
			break;
		case O_ROTATE_EVERY:
			free(s.rotate_every);
			s.rotate_every = xstrdup(optarg);
			break;
		case O_KEY_GRACE:
			free(s.key_grace);
			s.key_grace = xstrdup(optarg);
			break;
		case O_CARD_FILE:
			free(s.card_file);
			s.card_file = xstrdup(optarg);
			break;
		case O_TLS_GROUPS:
			o.tls_groups = optarg;
			break;
		case O_CONNECT_TIMEOUT:
			if ((rc = parse_seconds("--connect-timeout", optarg, 3600,
			                        &o.connect_timeout)))
				goto out;
			if (o.connect_timeout < 0.001)
				o.connect_timeout = 0.001;
			break;
		case O_TO:
			if (o.n_to == MAX_TO) {
				die_line("at most %d --to", MAX_TO);
				rc = EXIT_USAGE;
				goto out;
			}
			o.to[o.n_to++] = optarg;
			break;
		case O_MESSAGE:
			o.message = optarg;
			break;
		case O_FILE:
			o.file = optarg;
			break;
		case O_TTL:
			if ((rc = parse_ulong("--ttl", optarg, 0, UINT32_MAX, &ul)))
				goto out;
			o.ttl = (long)ul;
			o.has_ttl = true;
			break;
		case O_PRIORITY:
			if ((rc = parse_ulong("--priority", optarg, 1, 10, &ul)))
				goto out;
			if (ul != 10 && ul != 5 && ul != 1) {
				die_line("--priority wants 10, 5 or 1, got \"%s\"", optarg);
				rc = EXIT_USAGE;
				goto out;
			}
			o.priority = (long)ul;
			break;
		case O_COLLAPSE:
			if (!*optarg || strlen(optarg) > SEALPUSH_COLLAPSE_MAX) {
				die_line("--collapse wants 1 to %d bytes", SEALPUSH_COLLAPSE_MAX);
				rc = EXIT_USAGE;
				goto out;
			}
			o.collapse = optarg;
			break;
		case O_ID:
			o.id = optarg;
			break;
		case O_RAW:
			o.raw = true;
			break;
		case O_RECEIPT:
			o.receipt = true;
			break;
		case O_SUITE:
			o.suite = optarg;
			break;
		case O_TIMEOUT:
			if ((rc = parse_seconds("--timeout", optarg, 86400 * 365, &o.timeout)))
				goto out;
			o.has_timeout = true;
			break;
		case O_JSON:
			o.json = true;
			break;
		case O_COUNT:
			if ((rc = parse_ulong("--count", optarg, 1, ULONG_MAX, &o.count)))
				goto out;
			break;
		case O_APP_SERVER_KEY:
			o.app_server_key = optarg;
			break;
		case O_TO_USER:
			o.to_user = optarg;
			break;
		case O_USERS:
			o.users = true;
			break;
		case O_CODE:
			o.code = optarg;
			break;
		case O_ANON_SERVER:
			free(s.anon_server);
			s.anon_server = xstrdup(optarg);
			break;
		case O_IDENTIFIED:
			o.identified = true;
			break;
		case O_RECEIPT_DELAY:
			free(s.receipt_delay);
			s.receipt_delay = xstrdup(optarg);
			break;
		case O_CARD:
			o.card = optarg;
			break;
		case O_RENEW_AT: {
			char *end;

			errno = 0;
			o.renew_at = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(o.renew_at > 0) || o.renew_at > 1) {
				die_line("--renew-at wants a share of the certificate's lifetime, "
				         "above 0 and at most 1 (1: never), got \"%s\"",
				         optarg);
				rc = EXIT_USAGE;
				goto out;
			}
			break;
		}
		case 'v':
			verbose = 1;
			break;
		case 'h':
			usage(stdout);
			rc = EXIT_OK;
			goto out;
		case 'V':
			printf("sealpush %s (libsealpush %s; features: %s)\n", SP_VERSION,
			       sp_client_version(), SP_FEATURES[0] ? SP_FEATURES : "none");
			rc = EXIT_OK;
			goto out;
		case ':':
			die_line("%s needs a value (sealpush --help)", argv[optind - 1]);
			rc = EXIT_USAGE;
			goto out;
		default:
			die_line("unknown option %s (sealpush --help)", argv[optind - 1]);
			rc = EXIT_USAGE;
			goto out;
		}
	}
	if (optind >= argc) {
		die_line("no command given (init, token, card, send, listen, verify-card, rotate; "
		         "sealpush --help)");
		rc = EXIT_USAGE;
		goto out;
	}
	cmd = argv[optind++];
	if (!word_in(cmd, "init token card send listen verify-card rotate subscribe unsubscribe "
	                  "subscriptions enroll access") &&
	    !cli_dir_is_command(cmd)) {
		die_line("unknown command \"%s\" (sealpush --help)", cmd);
		rc = EXIT_USAGE;
		goto out;
	}
	for (size_t i = 0; i < sizeof(scoped) / sizeof(scoped[0]); i++)
		if (seen[scoped[i].opt] && !word_in(cmd, scoped[i].cmds)) {
			die_line("%s is not an option of %s (sealpush --help)", scoped[i].name,
			         cmd);
			rc = EXIT_USAGE;
			goto out;
		}
	if (strcmp(cmd, "verify-card") == 0 && argc - optind != 1) {
		die_line("verify-card takes one FILE");
		rc = EXIT_USAGE;
		goto out;
	}
	if (strcmp(cmd, "unsubscribe") == 0 && argc - optind != 1) {
		die_line("unsubscribe takes one subscription id");
		rc = EXIT_USAGE;
		goto out;
	}
	if (strcmp(cmd, "access") == 0 &&
	    (argc - optind != 1 || !word_in(argv[optind], "enable rotate disable anyone"))) {
		die_line("access takes one of enable, rotate, disable, anyone");
		rc = EXIT_USAGE;
		goto out;
	}
	if (strcmp(cmd, "verify-card") != 0 && strcmp(cmd, "unsubscribe") != 0 &&
	    strcmp(cmd, "access") != 0 && !cli_dir_is_command(cmd) && optind != argc) {
		die_line("unexpected argument \"%s\"", argv[optind]);
		rc = EXIT_USAGE;
		goto out;
	}
	if ((rc = settings_resolve(&s, config)) != 0)
		goto out;
	if (cli_dir_is_command(cmd)) {
		cli_dir_settings_t ds = {.server = s.server,
		                         .ca = s.ca,
		                         .cert = s.cert,
		                         .key = s.key,
		                         .connect_timeout = o.connect_timeout,
		                         .tls_groups = o.tls_groups};

		rc = cli_dir_main(&ds, cmd, argc - optind, argv + optind);
	} else if (strcmp(cmd, "token") == 0)
		rc = cmd_token(&s);
	else if (strcmp(cmd, "init") == 0)
		rc = cmd_init(&s);
	else if (strcmp(cmd, "card") == 0)
		rc = cmd_card(&s);
	else if (strcmp(cmd, "rotate") == 0)
		rc = cmd_rotate(&s);
	else if (strcmp(cmd, "verify-card") == 0)
		rc = cmd_verify_card(argv[optind]);
	else if (strcmp(cmd, "send") == 0 && o.to_user != NULL) {
		/* The user's verified devices, and our own user's other devices, as card files. */
		cli_dir_settings_t ds = {.server = s.server,
		                         .ca = s.ca,
		                         .cert = s.cert,
		                         .key = s.key,
		                         .connect_timeout = o.connect_timeout,
		                         .tls_groups = o.tls_groups};
		char dir[256], **paths = NULL;
		size_t n = 0;

		rc = cli_dir_resolve(&ds, o.to_user, dir, sizeof(dir), &paths, &n);
		for (size_t i = 0; rc == 0 && i < n; i++) {
			if (o.n_to == MAX_TO) {
				die_line("at most %d recipients", MAX_TO);
				rc = EXIT_USAGE;
				break;
			}
			o.to[o.n_to++] = paths[i];
		}
		if (rc == 0)
			rc = cmd_send(&s, &o);
		cli_dir_resolve_free(dir, paths, n);
	} else if (strcmp(cmd, "send") == 0)
		rc = cmd_send(&s, &o);
	else if (strcmp(cmd, "subscribe") == 0)
		rc = cmd_webpush(&s, &o, SP_CLIENT_SUB_NEW, NULL);
	else if (strcmp(cmd, "unsubscribe") == 0)
		rc = cmd_webpush(&s, &o, SP_CLIENT_SUB_REMOVE, argv[optind]);
	else if (strcmp(cmd, "enroll") == 0)
		rc = cmd_enroll(&s, &o);
	else if (strcmp(cmd, "access") == 0)
		rc = cmd_access(&s, &o, argv[optind]);
	else if (strcmp(cmd, "subscriptions") == 0)
		rc = cmd_webpush(&s, &o, SP_CLIENT_SUB_LIST, NULL);
	else
		rc = cmd_listen(&s, &o);
out:
	free(s.server);
	free(s.ca);
	free(s.cert);
	free(s.key);
	free(s.rotate_every);
	free(s.key_grace);
	free(s.card_file);
	free(s.anon_server);
	free(s.receipt_delay);
	return rc;
}
