/*
 * sb_report.c: the figures of a run: totals over the slots, the progress line, and the report
 * (a table on stdout, or stderr with --json, and one JSON object on stdout with --json).
 */
#include "sb_report.h"

#include "sb_opts.h"
#include "sp_frame.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/crypto.h>

void sb_totals_get(const sb_run_t *r, sb_totals_t *s)
{
	memset(s, 0, sizeof(*s));
	for (unsigned k = 0; k < r->nslots; k++) {
		sb_counters_t *c = &r->sh->slots[k].c;
		uint64_t fc = sb_cnt_get(&c->first_connect_ns);

		s->ready += sb_cnt_get(&c->ready);
		s->dead += sb_cnt_get(&c->dead);
		s->reconnects += sb_cnt_get(&c->reconnects);
		s->sent += sb_cnt_get(&c->sent);
		s->addressed += sb_cnt_get(&c->addressed);
		s->results += sb_cnt_get(&c->results);
		s->delivered += sb_cnt_get(&c->delivered);
		s->acked += sb_cnt_get(&c->acked);
		s->accepted += sb_cnt_get(&c->accepted);
		s->refused += sb_cnt_get(&c->refused);
		s->errors += sb_cnt_get(&c->errors);
		s->stalled += sb_cnt_get(&c->stalled);
		s->unique += sb_cnt_get(&c->unique);
		s->dups += sb_cnt_get(&c->dups);
		s->stale += sb_cnt_get(&c->stale);
		s->hs_full += sb_cnt_get(&c->hs_full);
		s->hs_resumed += sb_cnt_get(&c->hs_resumed);
		s->hs_failed += sb_cnt_get(&c->hs_failed);
		s->stopped += sb_cnt_get(&c->stopped);
		for (int g = 0; g < SP_TG_COUNT; g++)
			s->hs_group[g] += sb_cnt_get(&c->hs_group[g]);
		if (sb_cnt_get(&c->last_result_ns) > s->last_result_ns)
			s->last_result_ns = sb_cnt_get(&c->last_result_ns);
		if (sb_cnt_get(&c->last_deliver_ns) > s->last_deliver_ns)
			s->last_deliver_ns = sb_cnt_get(&c->last_deliver_ns);
		if (fc != 0 && (s->first_connect_ns == 0 || fc < s->first_connect_ns))
			s->first_connect_ns = fc;
	}
}

static const char *phase_name(int ph)
{
	static const char *const names[] = {"connect", "warmup", "measure", "stop",
	                                    "enqueue", "drain",  "quit"};

	return ph >= 0 && ph <= PH_QUIT ? names[ph] : "?";
}

static uint64_t main_figure(const sb_opts_t *o, const sb_totals_t *s)
{
	return o->scenario == SB_HANDSHAKE ? s->hs_full + s->hs_resumed : s->delivered;
}

void sb_progress(sb_run_t *r, uint64_t t0, sb_totals_t *prev)
{
	const sb_opts_t *o = &r->opt;
	sb_totals_t s;
	uint64_t now = sb_now_ns();

	sb_totals_get(r, &s);
	if (sb_phase_get(r) == PH_MEASURE && r->ps_prev_ns != 0 && r->n_ps < SB_MAX_SECONDS)
		r->ps[r->n_ps++] = (double)(main_figure(o, &s) - main_figure(o, prev)) /
		                   sb_ns_to_s(now - r->ps_prev_ns);
	r->ps_prev_ns = now;
	if (r->progress && o->scenario == SB_HANDSHAKE)
		fprintf(stderr,
		        "\r[%6.1fs %-7s] handshakes %" PRIu64 "/s (full %" PRIu64
		        " resumed %" PRIu64 ") failed %" PRIu64 "   ",
		        sb_ns_to_s(now - t0), phase_name(sb_phase_get(r)),
		        main_figure(o, &s) - main_figure(o, prev), s.hs_full - prev->hs_full,
		        s.hs_resumed - prev->hs_resumed, s.hs_failed);
	else if (r->progress)
		fprintf(stderr,
		        "\r[%6.1fs %-7s] ready %" PRIu64 " sent %" PRIu64 "/s results %" PRIu64
		        "/s delivered %" PRIu64 "/s refused %" PRIu64 " errors %" PRIu64
		        " reconnects %" PRIu64 "   ",
		        sb_ns_to_s(now - t0), phase_name(sb_phase_get(r)), s.ready,
		        s.sent - prev->sent, s.results - prev->results,
		        s.delivered - prev->delivered, s.refused, s.errors, s.reconnects);
	*prev = s;
}

void sb_progress_end(const sb_run_t *r)
{
	if (r->progress)
		fprintf(stderr, "\n");
}

static json_t *env_json(void)
{
	struct utsname u;
	double load[3] = {0, 0, 0};

	uname(&u);
	if (getloadavg(load, 3) < 0)
		load[0] = load[1] = load[2] = -1;
	return json_pack("{s:I, s:s, s:s, s:s, s:s, s:[f,f,f]}", "nproc",
	                 (json_int_t)sysconf(_SC_NPROCESSORS_ONLN), "kernel", u.release, "machine",
	                 u.machine, "openssl", OpenSSL_version(OPENSSL_VERSION), "libevent",
	                 event_get_version(), "loadavg_at_end", load[0], load[1], load[2]);
}

void sb_json_merge(json_t *p, json_t *o)
{
	json_object_update(p, o);
	json_decref(o);
}

static json_t *params_json(const sb_run_t *r)
{
	const sb_opts_t *o = &r->opt;
	json_t *p = json_pack("{s:s, s:s, s:I, s:s, s:I, s:I, s:I, s:b, s:s?, s:s?}", "scenario",
	                      sb_scenario_names[o->scenario], "server_host", o->host, "server_port",
	                      (json_int_t)o->port, "ca_dir", o->ca_dir, "threads",
	                      (json_int_t)o->threads, "processes", (json_int_t)o->processes,
	                      "inflight", (json_int_t)o->inflight, "send_chain", o->send_chain,
	                      "tls_ciphersuites", o->tls_ciphersuites, "tls_groups", o->tls_groups);
	json_int_t ids = r->n_recv_ids;

	if (p && o->raddr_len)
		json_object_set_new(p, "receivers_on_second_server", json_true());

	switch (o->scenario) {
	case SB_QUEUE:
		sb_json_merge(p,
		              json_pack("{s:I, s:I, s:I, s:I, s:I}", "blob", (json_int_t)o->blob,
		                        "window", (json_int_t)o->window, "messages",
		                        (json_int_t)o->messages, "devices", (json_int_t)o->devices,
		                        "senders", (json_int_t)o->senders));
		break;
	case SB_THROUGHPUT:
	case SB_FANOUT:
		sb_json_merge(p, json_pack("{s:I, s:I, s:I, s:I, s:I, s:f, s:I, s:f, s:f}", "blob",
		                           (json_int_t)o->blob, "window", (json_int_t)o->window,
		                           "senders", (json_int_t)o->senders, "receivers",
		                           (json_int_t)o->receivers, "recipients",
		                           (json_int_t)o->recipients, "rate", o->rate, "tick_us",
		                           (json_int_t)o->tick_us, "duration_s", o->duration,
		                           "warmup_s", o->warmup));
		if (o->scenario == SB_THROUGHPUT)
			json_object_set_new(p, "pairs", json_integer(o->pairs));
		break;
	case SB_IDLE:
		sb_json_merge(p, json_pack("{s:I, s:I, s:b, s:I, s:f, s:f}", "conns",
		                           (json_int_t)o->conns, "devices", ids, "register",
		                           o->register_idle, "pid", (json_int_t)o->pid, "settle_s",
		                           o->settle, "hold_s", o->hold));
		break;
	case SB_HANDSHAKE:
		sb_json_merge(p, json_pack("{s:I, s:I, s:b, s:b, s:f, s:f}", "conns",
		                           (json_int_t)o->conns, "devices", ids, "resume",
		                           o->resume, "hello", o->hello, "duration_s", o->duration,
		                           "warmup_s", o->warmup));
		break;
	}
	return p;
}

json_t *sb_report_status(const sb_run_t *r, FILE *out)
{
	json_t *o = json_object();

	for (unsigned st = 0; st < 256; st++) {
		uint64_t n = 0;

		for (unsigned k = 0; k < r->nslots; k++)
			n += r->sh->slots[k].status[st];
		if (n == 0)
			continue;
		json_object_set_new(o, sp_status_name(st), json_integer((json_int_t)n));
		fprintf(out, "  status %-22s %12" PRIu64 "\n", sp_status_name(st), n);
	}
	return o;
}

json_t *sb_report_latency(const sb_run_t *r, FILE *out, const char *label, bool lag)
{
	static const double pcts[] = {50, 90, 99, 99.9};
	static const char *const pnames[] = {"p50", "p90", "p99", "p99.9"};
	json_t *lat = json_object();
	sb_hist_t *h = malloc(sizeof(*h));

	if (h == NULL)
		return lat;
	sb_hist_init(h);
	for (unsigned k = 0; k < r->nslots; k++)
		sb_hist_merge(h, lag ? &r->sh->slots[k].lag : &r->sh->slots[k].hist);
	fprintf(out, "  %s samples %*s%12" PRIu64 "\n", label, (int)(19 - strlen(label)), "",
	        h->total);
	for (unsigned i = 0; i < 4; i++) {
		uint64_t v = sb_hist_percentile(h, pcts[i]);

		fprintf(out, "  %s %-6s %*s%12.3f ms\n", label, pnames[i],
		        (int)(19 - strlen(label)), "", (double)v / 1e6);
		json_object_set_new(lat, pnames[i], json_real((double)v / 1e6));
	}
	fprintf(out, "  %s max    %*s%12.3f ms\n", label, (int)(19 - strlen(label)), "",
	        (double)(h->total ? h->max : 0) / 1e6);
	json_object_set_new(lat, "max", json_real((double)(h->total ? h->max : 0) / 1e6));
	json_object_set_new(lat, "samples", json_integer((json_int_t)h->total));
	json_object_set_new(lat, "unit", json_string("ms"));
	free(h);
	return lat;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

json_t *sb_report_per_second(const sb_run_t *r, FILE *out, const char *unit)
{
	static double v[SB_MAX_SECONDS];

	if (r->n_ps == 0)
		return json_null();
	memcpy(v, r->ps, r->n_ps * sizeof(double));
	qsort(v, r->n_ps, sizeof(double), cmp_double);
	fprintf(out, "  per second min/median/max   %12.0f / %.0f / %.0f %s\n", v[0],
	        v[r->n_ps / 2], v[r->n_ps - 1], unit);
	return json_pack("{s:f, s:f, s:f, s:I}", "min", v[0], "median", v[r->n_ps / 2], "max",
	                 v[r->n_ps - 1], "seconds", (json_int_t)r->n_ps);
}

/* Handshakes by the key-exchange group the relay chose, e.g. {"X25519MLKEM768": 100}. */
static json_t *groups_json(const sb_run_t *r)
{
	sb_totals_t s;
	json_t *g = json_object();

	sb_totals_get(r, &s);
	for (int i = 0; i < SP_TG_COUNT; i++)
		if (s.hs_group[i] > 0)
			json_object_set_new(g, sp_tls_group_label((enum sp_tls_group)i),
			                    json_integer((json_int_t)s.hs_group[i]));
	return g;
}

void sb_report_print(const sb_run_t *r, json_t *results, FILE *out)
{
	json_t *root = json_object();

	json_object_set_new(root, "params", params_json(r));
	json_object_set_new(root, "environment", env_json());
	json_t *groups = groups_json(r);
	const char *k;
	json_t *v;

	fprintf(out, "  key exchange (handshakes)  ");
	json_object_foreach(groups, k, v)
	        fprintf(out, " %s %" JSON_INTEGER_FORMAT, k, json_integer_value(v));
	fprintf(out, "\n");
	json_object_set_new(results, "tls_groups", groups);
	json_object_set_new(root, "results", results);
	if (r->opt.json) {
		char *s = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);

		if (s != NULL)
			printf("%s\n", s);
		free(s);
	}
	json_decref(root);
	fflush(out);
	fflush(stdout);
}
