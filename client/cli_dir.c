/*
 * cli_dir.c: the key directory commands of the sealpush CLI (see cli_dir.h).
 */
#include "cli_dir.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli_seal.h"
#include "sealpush.h"
#include "sp_dir.h"
#include "sp_identity.h"
#include "sp_ucard.h"

/* The CLI's exit statuses (sealpush --help). */
enum {
	CX_OK = 0,
	CX_USAGE = 64,
	CX_VERIFY = 65,
	CX_NOINPUT = 66,
	CX_CONNECT = 69,
	CX_INTERNAL = 70,
	CX_IOERR = 74,
	CX_REFUSED = 75,
};

enum { R_PUBLISH, R_LOOKUP, R_HEAD, R_HISTORY };

struct sess {
	const cli_dir_settings_t *s;
	struct event_base *base;
	struct event *tmo;
	sp_client_t *c;
	bool connected, stopped, answered;
	char conn_err[512];
	uint8_t req[SEALPUSH_MSG_ID_LEN];
	int64_t after; /* R_HISTORY: the entry after this index (-1: the first) */
	/* the answer, copied */
	sp_client_dir_answer_t a;
	uint8_t *buf; /* entry, head, proofs, reason */
};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	fputs("sealpush: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void on_event(sp_client_t *c, const sp_client_event_t *ev, void *arg)
{
	struct sess *x = arg;

	(void)c;
	if (ev->type == SP_CLIENT_EV_CONNECTED) {
		x->connected = true;
		event_base_loopexit(x->base, NULL);
	} else if (ev->type == SP_CLIENT_EV_DISCONNECTED || ev->type == SP_CLIENT_EV_STOPPED) {
		snprintf(x->conn_err, sizeof(x->conn_err), "%s", ev->detail);
		if (ev->type == SP_CLIENT_EV_STOPPED)
			x->stopped = true;
		x->connected = false;
		event_base_loopexit(x->base, NULL);
	}
}

static void on_dir_answer(sp_client_t *c, const sp_client_dir_answer_t *a, void *arg)
{
	struct sess *x = arg;
	size_t n = a->entry_len + a->head_len + a->inclusion_len + a->consistency_len +
	           a->reason_len + 1;
	uint8_t *p;

	(void)c;
	if (memcmp(a->req_id, x->req, SEALPUSH_MSG_ID_LEN) != 0 || x->answered)
		return;
	free(x->buf);
	x->buf = p = malloc(n);
	if (p == NULL)
		return;
	x->a = *a;
	x->a.req_id = x->req;
#define TAKE(ptr, len)                                                                             \
	if (a->ptr != NULL) {                                                                      \
		memcpy(p, a->ptr, a->len);                                                         \
		x->a.ptr = (void *)p;                                                              \
		p += a->len;                                                                       \
	}
	TAKE(entry, entry_len)
	TAKE(head, head_len)
	TAKE(inclusion, inclusion_len)
	TAKE(consistency, consistency_len)
	TAKE(reason, reason_len)
#undef TAKE
	x->answered = true;
	event_base_loopexit(x->base, NULL);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct sess *x = arg;

	(void)fd;
	(void)what;
	snprintf(x->conn_err, sizeof(x->conn_err), "timed out");
	x->stopped = true;
	event_base_loopexit(x->base, NULL);
}

static int sess_open(struct sess *x, const cli_dir_settings_t *s)
{
	sp_client_config_t cfg = {.server = s->server,
	                          .ca_file = s->ca,
	                          .cert_file = s->cert,
	                          .key_file = s->key,
	                          .send_only = true,
	                          .no_reconnect = true,
	                          .max_attempts = 1,
	                          .connect_timeout_ms = (uint32_t)(s->connect_timeout * 1000),
	                          .tls_groups = s->tls_groups,
	                          .agent = "sealpush-cli/directory"};
	sp_client_callbacks_t cb = {.event = on_event, .dir_answer = on_dir_answer, .arg = x};
	struct timeval tv = {30, 0};
	char err[512];

	memset(x, 0, sizeof(*x));
	x->s = s;
	x->base = event_base_new();
	x->tmo = x->base ? evtimer_new(x->base, on_timeout, x) : NULL;
	if (x->tmo == NULL)
		return CX_INTERNAL;
	if (sp_client_new(x->base, &cfg, &cb, &x->c, err, sizeof(err)) < 0) {
		say("%s", err);
		return CX_NOINPUT;
	}
	evtimer_add(x->tmo, &tv);
	sp_client_start(x->c);
	while (!x->connected && !x->stopped)
		event_base_dispatch(x->base);
	if (!x->connected) {
		say("cannot reach the relay: %s", x->conn_err);
		return CX_CONNECT;
	}
	return CX_OK;
}

static void sess_close(struct sess *x)
{
	if (x->c != NULL)
		sp_client_free(x->c);
	if (x->tmo != NULL)
		event_free(x->tmo);
	if (x->base != NULL)
		event_base_free(x->base);
	free(x->buf);
	memset(x, 0, sizeof(*x));
}

/* One request, waited for. Returns CX_OK with x->a the answer (any status). */
static int sess_do(struct sess *x, int kind, const char *card, const char *handle,
                   const uint8_t *token, uint64_t tree_size)
{
	int e;

	x->answered = false;
	if (kind == R_PUBLISH)
		e = sp_client_dir_publish(x->c, card, strlen(card), x->req);
	else if (kind == R_HISTORY)
		e = sp_client_dir_history(x->c, x->after, tree_size, x->req);
	else
		e = sp_client_dir_lookup(x->c, handle, token, tree_size, kind == R_HEAD, x->req);
	if (e == -ENOTSUP) {
		say("this relay has no key directory");
		return CX_REFUSED;
	}
	if (e < 0) {
		say("cannot send the request: %s", strerror(-e));
		return CX_INTERNAL;
	}
	while (!x->answered && !x->stopped && x->connected)
		event_base_dispatch(x->base);
	if (!x->answered) {
		say("no answer from the relay: %s", x->conn_err);
		return CX_CONNECT;
	}
	return CX_OK;
}

static void refused(const sp_client_dir_answer_t *a)
{
	say("the relay refused: %s%s%.*s", sp_client_status_name(a->status), a->reason ? ": " : "",
	    a->reason ? (int)a->reason_len : 0, a->reason ? a->reason : "");
}

/* ---- files beside the key ------------------------------------------------------------------- */

static void path_of(char *out, size_t len, const char *key, const char *suffix)
{
	size_t n = strlen(key);

	if (n > 4 && strcmp(key + n - 4, ".key") == 0)
		n -= 4;
	snprintf(out, len, "%.*s%s", (int)n, key, suffix);
}

static char *read_text(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t cap = 0, n = 0, r;

	if (f == NULL)
		return NULL;
	do {
		if (n + 4096 + 1 > cap) {
			char *p = realloc(buf, cap = (cap ? cap * 2 : 8192));

			if (p == NULL) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = p;
		}
		r = fread(buf + n, 1, cap - n - 1, f);
		n += r;
	} while (r > 0 && n < (1u << 20));
	fclose(f);
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	return buf;
}

static int write_private(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	size_t n = strlen(text);
	int ok;

	if (fd < 0)
		return -1;
	ok = write(fd, text, n) == (ssize_t)n && write(fd, "\n", 1) == 1;
	return close(fd) == 0 && ok ? 0 : -1;
}

static EVP_PKEY *log_key(const cli_dir_settings_t *s)
{
	const char *env = getenv("SEALPUSH_LOG_CERT");
	char path[4096], *dup;
	EVP_PKEY *k;

	if (env != NULL && env[0] != '\0') {
		snprintf(path, sizeof(path), "%s", env);
	} else {
		dup = strdup(s->ca);
		if (dup == NULL)
			return NULL;
		snprintf(path, sizeof(path), "%s/log.crt", dirname(dup));
		free(dup);
	}
	k = sp_dir_log_key(path, s->ca);
	if (k == NULL)
		say("cannot use the log's certificate %s (a P-256 certificate from the relay's CA; "
		    "set SEALPUSH_LOG_CERT)",
		    path);
	return k;
}

static EVP_PKEY *user_key_load(const char *key)
{
	char path[4096];
	FILE *f;
	EVP_PKEY *k;

	path_of(path, sizeof(path), key, ".user.key");
	f = fopen(path, "r");
	if (f == NULL) {
		say("no user key %s on this device (sealpush user init HANDLE on the user's first "
		    "device)",
		    path);
		return NULL;
	}
	k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (k == NULL)
		say("%s is not a PEM private key", path);
	return k;
}

static int fp_of(EVP_PKEY *k, uint8_t fp[32])
{
	unsigned char *der = NULL;
	int n = i2d_PUBKEY(k, &der);

	if (n <= 0)
		return -1;
	SHA256(der, (size_t)n, fp);
	OPENSSL_free(der);
	return 0;
}

/* This device's own contact card (JSON text, malloc'd). */
static char *own_card(const cli_dir_settings_t *s)
{
	cli_seal_t *seal = NULL;
	char err[512], *text = NULL;
	size_t len = 0;
	FILE *m;
	int e;

	if (cli_seal_load(s->cert, s->key, &seal, err, sizeof(err)) < 0) {
		say("%s (sealpush init first)", err);
		return NULL;
	}
	m = open_memstream(&text, &len);
	e = m ? cli_seal_card_write_public(seal, m, err, sizeof(err))
	      : -ENOMEM; /* never the access key (17.7) */
	if (m)
		fclose(m);
	cli_seal_free(seal);
	if (e < 0) {
		say("%s", err);
		free(text);
		return NULL;
	}
	while (len > 0 && text[len - 1] == '\n')
		text[--len] = '\0';
	return text;
}

/* Writes the new kept head if it moved. */
static int check_and_keep(const cli_dir_settings_t *s, const sp_dir_head_t *kept,
                          const sp_dir_head_t *now)
{
	char path[4096];

	if (kept->size == now->size && memcmp(kept->root, now->root, 32) == 0)
		return CX_OK;
	path_of(path, sizeof(path), s->key, ".dirhead");
	if (sp_dir_head_save(path, now) != SP_DIR_OK) {
		say("cannot write %s", path);
		return CX_IOERR;
	}
	return CX_OK;
}

static void loud(const char *what, int err)
{
	fprintf(stderr,
	        "sealpush: WARNING: %s: %s\n"
	        "sealpush: WARNING: the relay may be lying; do not trust this directory answer\n",
	        what, sp_dir_strerror(err));
}

/* Looks up handle (or token), verifies, keeps the head. *card is the verified card. */
static int verified_lookup(struct sess *x, EVP_PKEY *lk, const char *handle, const uint8_t *token,
                           sp_ucard_t *card, int *status)
{
	char path[4096];
	sp_dir_head_t kept, before;
	int rc, e;

	path_of(path, sizeof(path), x->s->key, ".dirhead");
	if (sp_dir_head_load(path, &kept) != SP_DIR_OK) {
		say("cannot read %s", path);
		return CX_IOERR;
	}
	before = kept;
	if ((rc = sess_do(x, R_LOOKUP, NULL, handle, token, kept.size)) != CX_OK)
		return rc;
	*status = x->a.status;
	if (x->a.status != SEALPUSH_ST_DELIVERED)
		return CX_OK;
	e = sp_dir_check_lookup(&x->a, lk, handle, token, &kept, card);
	if (e != SP_DIR_OK) {
		loud(handle ? handle : "the device's card", e);
		return CX_VERIFY;
	}
	return check_and_keep(x->s, &before, &kept);
}

static uint64_t now_s(void)
{
	return (uint64_t)time(NULL);
}

/* Signs and publishes a card for handle listing cards[0..n); saves it as the last published. */
static int publish(struct sess *x, EVP_PKEY *uk, const char *handle, const char *const *cards,
                   size_t n, uint64_t issued_at)
{
	char *json = NULL, path[4096];
	int e, rc;

	e = sp_ucard_make(uk, handle, (int64_t)issued_at, cards, n, &json);
	if (e < 0) {
		say("cannot make the user card: %s", strerror(-e));
		return CX_INTERNAL;
	}
	rc = sess_do(x, R_PUBLISH, json, NULL, NULL, 0);
	if (rc == CX_OK && x->a.status != SEALPUSH_ST_DELIVERED) {
		refused(&x->a);
		rc = CX_REFUSED;
	}
	if (rc == CX_OK) {
		path_of(path, sizeof(path), x->s->key, ".user.card");
		if (write_private(path, json) < 0) {
			say("cannot write %s", path);
			rc = CX_IOERR;
		}
		printf("published %s: %zu device%s, log entry %llu\n", handle, n, n == 1 ? "" : "s",
		       (unsigned long long)x->a.index);
	}
	free(json);
	return rc;
}

/* ---- the commands --------------------------------------------------------------------------- */

static int cmd_user_init(const cli_dir_settings_t *s, const char *handle)
{
	char path[4096], hpath[4096], *card = NULL;
	EVP_PKEY *uk = NULL;
	struct sess x = {0};
	FILE *f;
	int fd, rc;

	if (!sp_ucard_handle_ok(handle, strlen(handle))) {
		say("a handle is 1 to 64 of a-z 0-9 . _ - (starting with a letter or digit)");
		return CX_USAGE;
	}
	path_of(path, sizeof(path), s->key, ".user.key");
	path_of(hpath, sizeof(hpath), s->key, ".user.handle");
	if (access(path, F_OK) == 0) {
		say("%s exists: this device already holds a user key", path);
		return CX_USAGE;
	}
	if ((card = own_card(s)) == NULL)
		return CX_NOINPUT;
	uk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	fd = uk ? open(path, O_WRONLY | O_CREAT | O_EXCL, 0600) : -1;
	f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (f == NULL || !PEM_write_PrivateKey(f, uk, NULL, NULL, 0, NULL, NULL) ||
	    fclose(f) != 0 || write_private(hpath, handle) < 0) {
		say("cannot write the user key %s", path);
		rc = CX_IOERR;
		goto out;
	}
	if ((rc = sess_open(&x, s)) == CX_OK)
		rc = publish(&x, uk, handle, (const char *const *)&card, 1, now_s());
	if (rc != CX_OK) {
		unlink(path); /* nothing was published: the handle is not ours */
		unlink(hpath);
	}
out:
	sess_close(&x);
	EVP_PKEY_free(uk);
	free(card);
	return rc;
}

static char *own_handle(const cli_dir_settings_t *s)
{
	char path[4096];
	char *h;

	path_of(path, sizeof(path), s->key, ".user.handle");
	h = read_text(path);
	if (h == NULL)
		say("no handle on this device (%s; sealpush user init HANDLE)", path);
	return h;
}

static void print_card(const sp_ucard_t *c)
{
	char hex[SEALPUSH_TOKEN_HEX + 1];

	printf("user %s, card of %lld, %zu device%s:\n", c->handle, (long long)c->issued_at,
	       c->n_devices, c->n_devices == 1 ? "" : "s");
	for (size_t i = 0; i < c->n_devices; i++) {
		sp_token_hex(c->dev[i].token, hex);
		printf("  %s\n", hex);
	}
}

/* device add CARD_FILE | device remove TOKEN */
static int cmd_device_change(const cli_dir_settings_t *s, bool add, const char *arg)
{
	char *handle = NULL, *newcard = NULL;
	const char *cards[SP_UCARD_MAX_DEVICES];
	uint8_t tok[32], fp[32];
	EVP_PKEY *uk = NULL, *lk = NULL;
	sp_ucard_t cur = {0};
	struct sess x = {0};
	size_t n = 0;
	int rc, status = 0;
	bool found = false;

	if ((handle = own_handle(s)) == NULL || (uk = user_key_load(s->key)) == NULL ||
	    (lk = log_key(s)) == NULL) {
		rc = CX_NOINPUT;
		goto out;
	}
	if (add) {
		cli_card_t *cc = NULL;
		char err[512];

		if ((newcard = read_text(arg)) == NULL ||
		    cli_card_load(arg, &cc, err, sizeof(err)) < 0) {
			say("%s: %s", arg, newcard ? err : strerror(errno));
			rc = CX_VERIFY;
			goto out;
		}
		cli_card_token(cc, tok);
		cli_card_free(cc);
	} else if (sp_token_parse_hex(arg, tok) < 0) {
		say("device remove takes a token (64 hex digits)");
		rc = CX_USAGE;
		goto out;
	}
	if ((rc = sess_open(&x, s)) != CX_OK ||
	    (rc = verified_lookup(&x, lk, handle, NULL, &cur, &status)) != CX_OK)
		goto out;
	if (status != SEALPUSH_ST_DELIVERED) {
		refused(&x.a);
		rc = CX_REFUSED;
		goto out;
	}
	if (fp_of(uk, fp) < 0 || memcmp(fp, cur.ukey_fp, 32) != 0) {
		fprintf(stderr,
		        "sealpush: WARNING: the directory's card for %s is signed by another "
		        "user key than this device's\n",
		        handle);
		rc = CX_VERIFY;
		goto out;
	}
	for (size_t i = 0; i < cur.n_devices; i++) {
		if (memcmp(cur.dev[i].token, tok, 32) == 0) {
			found = true;
			if (!add)
				continue;
			cards[n++] = newcard; /* a newer card of that device replaces its old one */
			continue;
		}
		cards[n++] = cur.dev[i].card;
	}
	if (add && !found) {
		if (n >= SP_UCARD_MAX_DEVICES) {
			say("a user has at most %d devices", SP_UCARD_MAX_DEVICES);
			rc = CX_USAGE;
			goto out;
		}
		cards[n++] = newcard;
	}
	if (!add && !found) {
		say("%s is not one of %s's devices", arg, handle);
		rc = CX_USAGE;
		goto out;
	}
	if (n == 0) {
		say("a user keeps at least one device");
		rc = CX_USAGE;
		goto out;
	}
	rc = publish(&x, uk, handle, cards, n,
	             now_s() > (uint64_t)cur.issued_at ? now_s() : (uint64_t)cur.issued_at + 1);
out:
	sess_close(&x);
	sp_ucard_clear(&cur);
	EVP_PKEY_free(uk);
	EVP_PKEY_free(lk);
	free(handle);
	free(newcard);
	return rc;
}

/* device list [HANDLE|TOKEN] */
static int cmd_device_list(const cli_dir_settings_t *s, const char *arg)
{
	char *handle = NULL;
	uint8_t tok[32];
	bool by_token = arg != NULL && sp_token_parse_hex(arg, tok) == 0;
	EVP_PKEY *lk = NULL;
	sp_ucard_t c = {0};
	struct sess x = {0};
	int rc, status = 0;

	if (arg == NULL && (handle = own_handle(s)) == NULL)
		return CX_NOINPUT;
	if ((lk = log_key(s)) == NULL) {
		rc = CX_NOINPUT;
		goto out;
	}
	if ((rc = sess_open(&x, s)) != CX_OK ||
	    (rc = verified_lookup(&x, lk,
	                          by_token ? NULL
	                          : arg    ? arg
	                                   : handle,
	                          by_token ? tok : NULL, &c, &status)) != CX_OK)
		goto out;
	if (status != SEALPUSH_ST_DELIVERED) {
		refused(&x.a);
		rc = status == SEALPUSH_ST_BAD_DEVICE_TOKEN ? CX_REFUSED : CX_CONNECT;
		goto out;
	}
	print_card(&c);
	rc = fflush(stdout) == 0 ? CX_OK : CX_IOERR;
out:
	sess_close(&x);
	sp_ucard_clear(&c);
	EVP_PKEY_free(lk);
	free(handle);
	return rc;
}

static int cmd_log_head(const cli_dir_settings_t *s)
{
	char path[4096], fpr[65];
	EVP_PKEY *lk = log_key(s);
	sp_dir_head_t kept, before, h;
	struct sess x = {0};
	int rc, e;

	if (lk == NULL)
		return CX_NOINPUT;
	path_of(path, sizeof(path), s->key, ".dirhead");
	if (sp_dir_head_load(path, &kept) != SP_DIR_OK) {
		say("cannot read %s", path);
		rc = CX_IOERR;
		goto out;
	}
	before = kept;
	if ((rc = sess_open(&x, s)) != CX_OK ||
	    (rc = sess_do(&x, R_HEAD, NULL, NULL, NULL, kept.size)) != CX_OK)
		goto out;
	if (x.a.status != SEALPUSH_ST_DELIVERED) {
		refused(&x.a);
		rc = CX_REFUSED;
		goto out;
	}
	e = sp_dir_check_head(x.a.head, x.a.head_len, lk, x.a.consistency, x.a.consistency_len,
	                      &kept, &h);
	if (e != SP_DIR_OK) {
		loud("the log's head", e);
		rc = CX_VERIFY;
		goto out;
	}
	if ((rc = check_and_keep(s, &before, &kept)) != CX_OK)
		goto out;
	sp_dir_fingerprint(&h, fpr);
	printf("size %llu\n", (unsigned long long)h.size);
	printf("root ");
	for (int i = 0; i < 32; i++)
		printf("%02x", h.root[i]);
	printf("\nfingerprint %.16s\n", fpr);
	rc = fflush(stdout) == 0 ? CX_OK : CX_IOERR;
out:
	sess_close(&x);
	EVP_PKEY_free(lk);
	return rc;
}

/* Lookups an audit may wait out (TOO_MANY_REQUESTS, each at most 60 s) before it gives up. */
#define AUDIT_MAX_WAITS 20

/*
 * Every entry of our handle in the log (the relay's history of it, 15.6 HISTORY), each
 * verified as a lookup is (head, consistency, inclusion, the entry being for our handle, the
 * user card's signature, every device card) and then required to be one of this user's own
 * changes: signed by our user key, and later (issued_at) than the entry before it, so that an
 * older card of ours replayed is not taken for one. Warns loudly on each entry that fails and
 * goes on with the next. *checked: the entries that passed. CX_VERIFY if any failed.
 */
static int audit_history(struct sess *x, EVP_PKEY *lk, const char *handle, const uint8_t ufp[32],
                         size_t *checked)
{
	char path[4096];
	sp_dir_head_t kept, before;
	int64_t last_iat = -1;
	uint32_t left = 1;
	unsigned waits = 0;
	bool bad = false;
	int rc, e;

	path_of(path, sizeof(path), x->s->key, ".dirhead");
	if (sp_dir_head_load(path, &kept) != SP_DIR_OK) {
		say("cannot read %s", path);
		return CX_IOERR;
	}
	before = kept;
	x->after = -1;
	while (left > 0) {
		sp_ucard_t c = {0};

		if ((rc = sess_do(x, R_HISTORY, NULL, NULL, NULL, kept.size)) != CX_OK)
			return rc;
		if (x->a.status == SEALPUSH_ST_TOO_MANY_REQUESTS && waits++ < AUDIT_MAX_WAITS) {
			uint32_t ms = x->a.retry_after_ms > 60000 ? 60000 : x->a.retry_after_ms;
			struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

			say("over the lookup rate: waiting %u ms", (unsigned)ms);
			nanosleep(&ts, NULL);
			continue;
		}
		if (x->a.status != SEALPUSH_ST_DELIVERED) {
			if (x->after >= 0) {
				fprintf(stderr,
				        "sealpush: WARNING: the relay announced %u more log entr%s "
				        "for "
				        "%s after entry %lld, then gave none (%s)\n",
				        (unsigned)left, left == 1 ? "y" : "ies", handle,
				        (long long)x->after, sp_client_status_name(x->a.status));
				bad = true;
				break;
			}
			refused(&x->a);
			return CX_REFUSED;
		}
		if (!x->a.has_index || !x->a.has_hist_left ||
		    (x->after >= 0 && x->a.index <= (uint64_t)x->after) ||
		    x->a.index >= (UINT64_C(1) << 53)) {
			fprintf(stderr,
			        "sealpush: WARNING: the relay's history answer for %s is "
			        "malformed (no index, or not after the last)\n",
			        handle);
			bad = true;
			break;
		}
		e = sp_dir_check_lookup(&x->a, lk, handle, NULL, &kept, &c);
		if (e != SP_DIR_OK) {
			fprintf(stderr,
			        "sealpush: WARNING: log entry %llu for %s cannot be attributed to "
			        "this user: %s\n",
			        (unsigned long long)x->a.index, handle, sp_dir_strerror(e));
			bad = true;
		} else if (memcmp(c.ukey_fp, ufp, 32) != 0) {
			fprintf(stderr,
			        "sealpush: WARNING: log entry %llu for %s is signed by ANOTHER "
			        "user "
			        "key: not a change by any of this user's devices\n",
			        (unsigned long long)x->a.index, handle);
			print_card(&c);
			bad = true;
		} else if (c.issued_at <= last_iat) {
			fprintf(stderr,
			        "sealpush: WARNING: log entry %llu for %s is not later than the "
			        "one "
			        "before it (issued_at %lld <= %lld): an older card replayed\n",
			        (unsigned long long)x->a.index, handle, (long long)c.issued_at,
			        (long long)last_iat);
			bad = true;
		} else {
			last_iat = c.issued_at;
			++*checked;
		}
		sp_ucard_clear(&c);
		x->after = (int64_t)x->a.index;
		left = x->a.hist_left;
	}
	if (bad)
		fprintf(stderr,
		        "sealpush: WARNING: the relay may be lying about %s: entries in its "
		        "log for this handle were not made by this user's devices\n",
		        handle);
	rc = check_and_keep(x->s, &before, &kept);
	return bad ? CX_VERIFY : rc;
}

/* audit: the directory's card for our handle must be the one this device published last, and
 * every entry of the handle in the log one of this user's own changes (audit_history). */
static int cmd_audit(const cli_dir_settings_t *s)
{
	char *handle = NULL, *mine = NULL, path[4096];
	EVP_PKEY *lk = NULL, *uk = NULL;
	sp_ucard_t c = {0}, m = {0};
	uint8_t fp[32];
	struct sess x = {0};
	size_t checked = 0;
	int rc, status = 0;

	if ((handle = own_handle(s)) == NULL || (lk = log_key(s)) == NULL ||
	    (uk = user_key_load(s->key)) == NULL) {
		rc = CX_NOINPUT;
		goto out;
	}
	path_of(path, sizeof(path), s->key, ".user.card");
	mine = read_text(path);
	if ((rc = sess_open(&x, s)) != CX_OK ||
	    (rc = verified_lookup(&x, lk, handle, NULL, &c, &status)) != CX_OK)
		goto out;
	if (status != SEALPUSH_ST_DELIVERED) {
		fprintf(stderr, "sealpush: WARNING: the directory has no card for %s (%s)\n",
		        handle, sp_client_status_name(status));
		rc = CX_VERIFY;
		goto out;
	}
	if (fp_of(uk, fp) < 0 || memcmp(fp, c.ukey_fp, 32) != 0) {
		fprintf(stderr,
		        "sealpush: WARNING: the directory's card for %s is signed by ANOTHER user "
		        "key: someone else holds the handle\n",
		        handle);
		rc = CX_VERIFY;
		goto out;
	}
	if (mine == NULL || sp_ucard_parse(mine, strlen(mine), &m) != 0 ||
	    m.issued_at != c.issued_at || m.n_devices != c.n_devices) {
		fprintf(stderr,
		        "sealpush: WARNING: the directory's card for %s is not the one this device "
		        "published last: it was made elsewhere with the user key\n",
		        handle);
		print_card(&c);
		rc = CX_VERIFY;
		goto out;
	}
	for (size_t i = 0; i < c.n_devices; i++)
		if (memcmp(c.dev[i].token, m.dev[i].token, 32) != 0) {
			fprintf(stderr,
			        "sealpush: WARNING: the directory lists other devices for %s "
			        "than this device published\n",
			        handle);
			rc = CX_VERIFY;
			goto out;
		}
	if ((rc = audit_history(&x, lk, handle, fp, &checked)) != CX_OK)
		goto out;
	printf("audit ok: %s, %zu device%s, as published by this device; %zu log entr%s for %s, "
	       "each a change by this user\n",
	       handle, c.n_devices, c.n_devices == 1 ? "" : "s", checked,
	       checked == 1 ? "y" : "ies", handle);
	rc = fflush(stdout) == 0 ? CX_OK : CX_IOERR;
out:
	sess_close(&x);
	sp_ucard_clear(&c);
	sp_ucard_clear(&m);
	EVP_PKEY_free(lk);
	EVP_PKEY_free(uk);
	free(handle);
	free(mine);
	return rc;
}

/* Appends the device cards of c (but skip's) to the folder dir as files. */
static int add_cards(const sp_ucard_t *c, const uint8_t *skip, const char *dir, char ***paths,
                     size_t *n)
{
	for (size_t i = 0; i < c->n_devices; i++) {
		char path[512], **p;
		bool dup = false;

		if (skip != NULL && memcmp(c->dev[i].token, skip, 32) == 0)
			continue;
		for (size_t k = 0; k < *n; k++) {
			char *t = read_text((*paths)[k]);

			dup |= t != NULL && strcmp(t, c->dev[i].card) == 0;
			free(t);
		}
		if (dup)
			continue;
		snprintf(path, sizeof(path), "%s/%zu.card", dir, *n);
		p = realloc(*paths, (*n + 1) * sizeof(**paths));
		if (p == NULL)
			return CX_INTERNAL;
		*paths = p;
		if (write_private(path, c->dev[i].card) < 0 ||
		    ((*paths)[*n] = strdup(path)) == NULL) {
			say("cannot write %s", path);
			return CX_IOERR;
		}
		(*n)++;
	}
	return CX_OK;
}

int cli_dir_resolve(const cli_dir_settings_t *s, const char *handle, char *dir, size_t dirlen,
                    char ***paths, size_t *n)
{
	const char *tmp = getenv("TMPDIR");
	char *mine = NULL, hpath[4096];
	EVP_PKEY *lk = NULL;
	sp_ucard_t c = {0}, own = {0};
	struct sess x = {0};
	uint8_t self[32];
	int rc, status = 0;

	*paths = NULL;
	*n = 0;
	dir[0] = '\0';
	if (s->server == NULL || s->ca == NULL || s->cert == NULL || s->key == NULL) {
		say("send --to-user needs --server, --ca, --cert and --key");
		return CX_USAGE;
	}
	snprintf(dir, dirlen, "%s/sealpush-to-user-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL) {
		say("cannot make a temporary folder: %s", strerror(errno));
		dir[0] = '\0';
		return CX_IOERR;
	}
	if ((lk = log_key(s)) == NULL) {
		rc = CX_NOINPUT;
		goto out;
	}
	path_of(hpath, sizeof(hpath), s->key, ".user.handle");
	mine = access(hpath, R_OK) == 0 ? read_text(hpath) : NULL;
	if ((rc = sess_open(&x, s)) != CX_OK ||
	    (rc = verified_lookup(&x, lk, handle, NULL, &c, &status)) != CX_OK)
		goto out;
	if (status != SEALPUSH_ST_DELIVERED) {
		refused(&x.a);
		rc = CX_REFUSED;
		goto out;
	}
	sp_client_token(x.c) != NULL ? memcpy(self, sp_client_token(x.c), 32) : memset(self, 0, 32);
	if ((rc = add_cards(&c, self, dir, paths, n)) != CX_OK)
		goto out;
	if (mine != NULL && strcmp(mine, handle) != 0) {
		if ((rc = verified_lookup(&x, lk, mine, NULL, &own, &status)) != CX_OK)
			goto out;
		if (status == SEALPUSH_ST_DELIVERED && (rc = add_cards(&own, self, dir, paths, n)))
			goto out;
	}
	if (*n == 0) {
		say("%s has no device to send to", handle);
		rc = CX_USAGE;
	}
out:
	sess_close(&x);
	sp_ucard_clear(&c);
	sp_ucard_clear(&own);
	EVP_PKEY_free(lk);
	free(mine);
	return rc;
}

int cli_dir_user_of(const cli_dir_settings_t *s, const uint8_t token[32], char out[65])
{
	static struct {
		uint8_t token[32];
		char handle[65];
	} cache[64];
	static size_t n_cache, next;
	EVP_PKEY *lk;
	sp_ucard_t c = {0};
	struct sess x = {0};
	int rc, status = 0;

	for (size_t i = 0; i < n_cache; i++)
		if (memcmp(cache[i].token, token, 32) == 0) {
			memcpy(out, cache[i].handle, 65);
			return 0;
		}
	if ((lk = log_key(s)) == NULL)
		return -1;
	out[0] = '\0';
	rc = sess_open(&x, s);
	if (rc == CX_OK)
		rc = verified_lookup(&x, lk, NULL, token, &c, &status);
	if (rc == CX_OK && status == SEALPUSH_ST_DELIVERED)
		snprintf(out, 65, "%s", c.handle);
	else if (rc == CX_OK && status != SEALPUSH_ST_BAD_DEVICE_TOKEN)
		rc = CX_REFUSED;
	sess_close(&x);
	sp_ucard_clear(&c);
	EVP_PKEY_free(lk);
	if (rc != CX_OK)
		return -1;
	memcpy(cache[next].token, token, 32);
	memcpy(cache[next].handle, out, 65);
	next = (next + 1) % 64;
	if (n_cache < 64)
		n_cache++;
	return 0;
}

void cli_dir_resolve_free(const char *dir, char **paths, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unlink(paths[i]);
		free(paths[i]);
	}
	free(paths);
	if (dir != NULL && dir[0] != '\0')
		rmdir(dir);
}

int cli_dir_is_command(const char *cmd)
{
	return strcmp(cmd, "user") == 0 || strcmp(cmd, "device") == 0 ||
	       strcmp(cmd, "log-head") == 0 || strcmp(cmd, "audit") == 0;
}

int cli_dir_main(const cli_dir_settings_t *s, const char *cmd, int n, char **args)
{
	if (s->server == NULL || s->ca == NULL || s->cert == NULL || s->key == NULL) {
		say("%s needs --server, --ca, --cert and --key (or the config file)", cmd);
		return CX_USAGE;
	}
	if (strcmp(cmd, "user") == 0 && n == 2 && strcmp(args[0], "init") == 0)
		return cmd_user_init(s, args[1]);
	if (strcmp(cmd, "device") == 0 && n == 2 && strcmp(args[0], "add") == 0)
		return cmd_device_change(s, true, args[1]);
	if (strcmp(cmd, "device") == 0 && n == 2 && strcmp(args[0], "remove") == 0)
		return cmd_device_change(s, false, args[1]);
	if (strcmp(cmd, "device") == 0 && (n == 1 || n == 2) && strcmp(args[0], "list") == 0)
		return cmd_device_list(s, n == 2 ? args[1] : NULL);
	if (strcmp(cmd, "log-head") == 0 && n == 0)
		return cmd_log_head(s);
	if (strcmp(cmd, "audit") == 0 && n == 0)
		return cmd_audit(s);
	say("usage: sealpush user init HANDLE | device add CARD_FILE | device remove TOKEN | "
	    "device list [HANDLE|TOKEN] | log-head | audit");
	return CX_USAGE;
}
