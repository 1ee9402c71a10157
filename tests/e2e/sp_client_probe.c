/*
 * sp_client_probe: a small program over libsealpush for the end-to-end tests (test_client.py).
 *
 *	sp_client_probe --server H:P --ca F --cert F --key F [--backoff-min MS] [--backoff-max MS]
 *	                [--keepalive S] [--ping-timeout MS] [--send-only] [--no-ack]
 *	                [--anonymous]    (the relay's anonymous door: no --cert, --key)
 *
 * Reports what the library tells it, one line each on stdout (flushed):
 *	connected resumed=yes|no token=HEX window=N
 *	disconnected cause=NAME code=N retry=yes|no in=MS detail=...
 *	stopped cause=NAME code=N detail=...
 *	error code=N detail=...
 *	message id=HEX stored=0|1 len=N blob=TEXT      (then ACKs it unless --no-ack)
 *	result id=HEX STATUS[,STATUS...]
 *	access id=HEX status=STATUS mode=N|-       (the answer to an access command)
 *	stats welcomes=N resumed=N disconnects=N duplicates=N pings=N
 * and takes commands on stdin, one per line:
 *	send TOKEN[,TOKEN...] TEXT | asend TOKEN[,TOKEN...] KEY[,KEY...] TEXT (anonymous, one
 *	access key per token) | access MODE [KEY[,KEY...]] (ACCESS_SET: 0 refuse, 1 key holders,
 *	2 anyone) | reconnect | ack HEX | stats | close | quit
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "sealpush.h"

static sp_client_t *cl;
static struct event_base *base;
static int no_ack;

static void hex(const uint8_t *p, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", p[i]);
}

static int unhex(const char *s, uint8_t *out, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned v;

		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (uint8_t)v;
	}
	return s[2 * n] == '\0' || s[2 * n] == ',' || s[2 * n] == ' ' ? 0 : -1;
}

static void on_event(sp_client_t *c, const sp_client_event_t *ev, void *arg)
{
	char tok[65];

	(void)arg;
	switch (ev->type) {
	case SP_CLIENT_EV_CONNECTED:
		hex(ev->token, 32, tok);
		printf("connected resumed=%s token=%s window=%u\n", ev->resumed ? "yes" : "no", tok,
		       ev->limits->window);
		break;
	case SP_CLIENT_EV_DISCONNECTED:
		printf("disconnected cause=%s code=%u retry=%s in=%u detail=%s\n",
		       sp_client_cause_name(ev->cause), ev->code, ev->will_retry ? "yes" : "no",
		       ev->retry_in_ms, ev->detail);
		break;
	case SP_CLIENT_EV_STOPPED:
		printf("stopped cause=%s code=%u detail=%s\n", sp_client_cause_name(ev->cause),
		       ev->code, ev->detail);
		event_base_loopexit(base, NULL);
		break;
	case SP_CLIENT_EV_ERROR:
		printf("error code=%u detail=%s\n", ev->code, ev->detail);
		break;
	}
	(void)c;
	fflush(stdout);
}

static void on_result(sp_client_t *c, const sp_client_result_t *r, void *arg)
{
	char id[33];

	(void)c;
	(void)arg;
	hex(r->msg_id, 16, id);
	printf("result id=%s", id);
	for (size_t i = 0; i < r->n; i++)
		printf("%c%s", i ? ',' : ' ', sp_client_status_name(r->statuses[i]));
	printf("\n");
	fflush(stdout);
}

static void on_access(sp_client_t *c, const sp_client_access_state_t *a, void *arg)
{
	char id[33];

	(void)c;
	(void)arg;
	hex(a->req_id, 16, id);
	if (a->has_mode)
		printf("access id=%s status=%s mode=%u\n", id, sp_client_status_name(a->status),
		       a->anon_mode);
	else
		printf("access id=%s status=%s mode=-\n", id, sp_client_status_name(a->status));
	fflush(stdout);
}

static void on_message(sp_client_t *c, const sp_client_message_t *m, void *arg)
{
	char id[33];
	size_t n = 0;

	(void)arg;
	hex(m->msg_id, 16, id);

	/* The blob as text up to its first NUL or line break: one line per message, also for a
	 * sealed blob (a hybrid envelope's 1,120-byte enc comes right after a non-NUL suite id). */
	while (n < m->blob_len && m->blob[n] != 0 && m->blob[n] != '\n' && m->blob[n] != '\r')
		n++;
	printf("message id=%s stored=%d len=%zu blob=%.*s\n", id, m->stored, m->blob_len, (int)n,
	       (const char *)m->blob);
	fflush(stdout);
	if (!no_ack)
		sp_client_ack(c, m->msg_id);
}

static void on_stdin(evutil_socket_t fd, short what, void *arg)
{
	char line[8192];
	uint8_t toks[32 * 64], id[16];
	size_t n = 0;

	(void)what;
	(void)arg;
	if (fgets(line, sizeof(line), stdin) == NULL) {
		event_base_loopexit(base, NULL);
		return;
	}
	line[strcspn(line, "\n")] = '\0';
	if (strncmp(line, "send ", 5) == 0) {
		char *p = line + 5, *text = strchr(p, ' ');
		uint8_t mid[16];
		char idh[33];
		int r;

		if (text == NULL)
			goto bad;
		*text++ = '\0';
		for (char *t = strtok(p, ","); t != NULL && n < 64; t = strtok(NULL, ","), n++)
			if (unhex(t, toks + 32 * n, 32) < 0)
				goto bad;
		r = sp_client_send(cl, toks, n, (const uint8_t *)text, strlen(text), NULL, mid);
		hex(mid, 16, idh);
		printf("queued id=%s rc=%d\n", idh, r);
	} else if (strncmp(line, "asend ", 6) == 0) {
		char *p = line + 6, *ks = strchr(p, ' '), *text, *save = NULL;
		uint8_t keys[32 * 64], mid[16];
		sp_client_send_opts_t o = {.access_keys = keys};
		size_t nk = 0;
		char idh[33];
		int r;

		if (ks == NULL)
			goto bad;
		*ks++ = '\0';
		text = strchr(ks, ' ');
		if (text == NULL)
			goto bad;
		*text++ = '\0';
		for (char *t = strtok_r(p, ",", &save); t != NULL && n < 64;
		     t = strtok_r(NULL, ",", &save), n++)
			if (unhex(t, toks + 32 * n, 32) < 0)
				goto bad;
		for (char *t = strtok_r(ks, ",", &save); t != NULL && nk < 64;
		     t = strtok_r(NULL, ",", &save), nk++)
			if (unhex(t, keys + 32 * nk, 32) < 0)
				goto bad;
		if (nk != n)
			goto bad;
		r = sp_client_send(cl, toks, n, (const uint8_t *)text, strlen(text), &o, mid);
		hex(mid, 16, idh);
		printf("queued id=%s rc=%d\n", idh, r);
	} else if (strncmp(line, "access ", 7) == 0) {
		char *ks = strchr(line + 7, ' '), *save = NULL;
		uint8_t keys[32 * 16], rid[16] = {0};
		char idh[33];
		int mode = atoi(line + 7), r;

		if (ks != NULL)
			for (char *t = strtok_r(ks + 1, ",", &save); t != NULL && n < 16;
			     t = strtok_r(NULL, ",", &save), n++)
				if (unhex(t, keys + 32 * n, 32) < 0)
					goto bad;
		r = sp_client_access_set(cl, mode, keys, n, rid);
		hex(rid, 16, idh);
		printf("access_queued id=%s rc=%d\n", r == 0 ? idh : "-", r);
	} else if (strcmp(line, "reconnect") == 0) {
		printf("reconnect rc=%d\n", sp_client_reconnect(cl));
	} else if (strncmp(line, "ack ", 4) == 0) {
		if (unhex(line + 4, id, 16) < 0)
			goto bad;
		printf("ack rc=%d\n", sp_client_ack(cl, id));
	} else if (strcmp(line, "stats") == 0) {
		sp_client_stats_t s;

		sp_client_get_stats(cl, &s);
		printf("stats welcomes=%llu resumed=%llu disconnects=%llu duplicates=%llu "
		       "pings=%llu\n",
		       (unsigned long long)s.welcomes, (unsigned long long)s.resumed,
		       (unsigned long long)s.disconnects, (unsigned long long)s.duplicates,
		       (unsigned long long)s.pings);
	} else if (strcmp(line, "close") == 0) {
		sp_client_close(cl);
	} else if (strcmp(line, "quit") == 0) {
		event_base_loopexit(base, NULL);
	} else {
		goto bad;
	}
	fflush(stdout);
	(void)fd;
	return;
bad:
	printf("bad command\n");
	fflush(stdout);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
	        {"server", required_argument, NULL, 's'},
	        {"ca", required_argument, NULL, 'a'},
	        {"cert", required_argument, NULL, 'c'},
	        {"key", required_argument, NULL, 'k'},
	        {"backoff-min", required_argument, NULL, 'm'},
	        {"backoff-max", required_argument, NULL, 'M'},
	        {"keepalive", required_argument, NULL, 'K'},
	        {"ping-timeout", required_argument, NULL, 'P'},
	        {"send-only", no_argument, NULL, 'o'},
	        {"no-ack", no_argument, NULL, 'n'},
	        {"anonymous", no_argument, NULL, 'A'},
	        {NULL, 0, NULL, 0},
	};
	sp_client_config_t cfg = {0};
	sp_client_callbacks_t cb = {.event = on_event,
	                            .result = on_result,
	                            .message = on_message,
	                            .access_state = on_access};
	struct event *in;
	char err[512];
	int ch;

	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 's':
			cfg.server = optarg;
			break;
		case 'a':
			cfg.ca_file = optarg;
			break;
		case 'c':
			cfg.cert_file = optarg;
			break;
		case 'k':
			cfg.key_file = optarg;
			break;
		case 'm':
			cfg.backoff_min_ms = (uint32_t)atoi(optarg);
			break;
		case 'M':
			cfg.backoff_max_ms = (uint32_t)atoi(optarg);
			break;
		case 'K':
			cfg.keepalive = (uint16_t)atoi(optarg);
			break;
		case 'A':
			cfg.anonymous = true;
			break;
		case 'P':
			cfg.ping_timeout_ms = (uint32_t)atoi(optarg);
			break;
		case 'o':
			cfg.send_only = true;
			break;
		case 'n':
			no_ack = 1;
			break;
		default:
			return 64;
		}
	}
	setvbuf(stdin, NULL, _IONBF, 0); /* lines are read one by one as they come */
	base = event_base_new();
	if (base == NULL || sp_client_new(base, &cfg, &cb, &cl, err, sizeof(err)) < 0) {
		fprintf(stderr, "sp_client_probe: %s\n", err);
		return 1;
	}
	in = event_new(base, STDIN_FILENO, EV_READ | EV_PERSIST, on_stdin, NULL);
	event_add(in, NULL);
	sp_client_start(cl);
	event_base_dispatch(base);
	event_free(in);
	sp_client_free(cl);
	event_base_free(base);
	return 0;
}
