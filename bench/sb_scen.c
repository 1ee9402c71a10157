/*
 * sb_scen.c: the scenarios, as the orchestrator runs them: move the phase, wait (printing
 * progress), read the totals, print the report. The bench threads do the work (sb_thread).
 */
#include "sb_scen.h"

#include "sb_report.h"
#include "sb_thread.h"
#include "sp_frame.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* A condition on the totals the orchestrator waits for. */
typedef bool sb_cond_fn(const sb_run_t *r, const sb_totals_t *s);

/* Waits seconds, with progress at each whole second from the start. False on an interrupt. */
static bool wait_seconds(sb_run_t *r, double seconds, uint64_t t0, sb_totals_t *prev)
{
	uint64_t start = sb_now_ns(), end = start + (uint64_t)(seconds * 1e9);
	uint64_t next = start + 1000000000u;

	for (uint64_t now = start; !sb_stop_now() && now < end; now = sb_now_ns()) {
		if (now >= next) {
			sb_progress(r, t0, prev);
			next += 1000000000u;
		}
		sb_sleep_ms(5);
	}
	if (!sb_stop_now() && sb_now_ns() + 20000000u >= next)
		sb_progress(r, t0, prev); /* the last whole second */
	return !sb_stop_now();
}

/* Waits (printing progress) until cond() holds or timeout seconds pass. Returns cond(). */
static bool wait_until(sb_run_t *r, sb_cond_fn *cond, double timeout, uint64_t t0,
                       sb_totals_t *prev)
{
	uint64_t start = sb_now_ns(), last = sb_now_ns();
	sb_totals_t s;

	for (;;) {
		sb_totals_get(r, &s);
		if (cond(r, &s))
			return true;
		if (sb_stop_now() || sb_ns_to_s(sb_now_ns() - start) > timeout)
			return false;
		sb_sleep_ms(2);
		if (sb_now_ns() - last >= 1000000000u) {
			last = sb_now_ns();
			sb_progress(r, t0, prev);
		}
	}
}

static bool all_ready(const sb_run_t *r, const sb_totals_t *s)
{
	return s->ready == (uint64_t)r->n_send + r->n_recv || s->dead > 0;
}

static bool all_ready_senders(const sb_run_t *r, const sb_totals_t *s)
{
	return s->ready == r->opt.senders || s->dead > 0;
}

/* Every thread has seen the stop (a thread, in this process or another, that has not may
 * still send one more SEND: counted as addressed after this read of its slot, it would look
 * answered), and every SEND it made is answered. */
static bool all_answered(const sb_run_t *r, const sb_totals_t *s)
{
	return (s->stopped == r->nslots && s->results == s->addressed) || s->ready == 0;
}

static bool all_enqueued(const sb_run_t *r, const sb_totals_t *s)
{
	return s->results == r->opt.messages || s->ready == 0;
}

static bool all_drained(const sb_run_t *r, const sb_totals_t *s)
{
	return s->unique >= r->drain_expect;
}

/* ---- scenarios ----------------------------------------------------------------------------- */

/* Waits until every connection of the connect phase is READY; false (said why) if not. */
static bool connect_all(sb_run_t *r, sb_cond_fn *cond, uint64_t want, uint64_t t0,
                        sb_totals_t *prev)
{
	sb_totals_t s;
	uint64_t start = sb_now_ns(); /* identities are made before this: not counted */

	wait_until(r, cond, r->opt.connect_timeout, t0, prev);
	sb_totals_get(r, &s);
	if (s.ready == want)
		return true;
	sb_progress_end(r);
	fprintf(stderr,
	        "sealpush-bench: only %" PRIu64 " of %" PRIu64
	        " connections ready after %.1f s%s (%" PRIu64 " failed)\n",
	        s.ready, want, sb_ns_to_s(sb_now_ns() - start),
	        sb_child_died    ? ", a bench process died"
	        : sb_interrupted ? ", interrupted"
	        : s.dead         ? ""
	                         : ", timed out (--connect-timeout)",
	        s.dead);
	return false;
}

/*
 * Warm-up (in PH_WARMUP already), then the measured window: totals at its start (*s0) and
 * end (*s1). Leaves the phase at PH_STOP_SENDING. Returns the measured seconds.
 */
static double measure(sb_run_t *r, uint64_t t0, sb_totals_t *prev, sb_totals_t *s0, sb_totals_t *s1)
{
	uint64_t m0, m1;

	wait_seconds(r, r->opt.warmup, t0, prev);
	sb_totals_get(r, s0);
	m0 = sb_now_ns();
	r->ps_prev_ns = m0;
	*prev = *s0;
	sb_phase_set(r, PH_MEASURE);
	wait_seconds(r, r->opt.duration, t0, prev);
	sb_phase_set(r, PH_STOP_SENDING);
	m1 = sb_now_ns();
	sb_totals_get(r, s1);
	return sb_ns_to_s(m1 - m0);
}

/* throughput and fanout. */
int sb_scen_traffic(sb_run_t *r, FILE *out)
{
	const sb_opts_t *o = &r->opt;
	uint64_t t0 = sb_now_ns(), lost;
	sb_totals_t prev = {0}, s0, s1, s;
	json_t *r_json = json_object();
	double secs, rate, sends;

	if (!connect_all(r, all_ready, (uint64_t)r->n_send + r->n_recv, t0, &prev)) {
		sb_workers_stop(r);
		return 1;
	}
	sb_phase_set(r, PH_WARMUP);
	secs = measure(r, t0, &prev, &s0, &s1);
	wait_until(r, all_answered, SB_DRAIN_TIMEOUT, t0, &prev);
	sb_workers_stop(r);
	sb_progress_end(r);
	sb_totals_get(r, &s);

	rate = (double)(s1.delivered - s0.delivered) / secs;
	sends = (double)(s1.sent - s0.sent) / secs;
	lost = s.addressed - s.results;
	if (o->scenario == SB_THROUGHPUT)
		fprintf(out, "sealpush-bench throughput: %u pairs, ", o->pairs);
	else
		fprintf(out,
		        "sealpush-bench fanout: %u senders, %u recipients per SEND out of %u "
		        "receivers, ",
		        o->senders, o->recipients, o->receivers);
	fprintf(out, "%s, blob %u B, %u process(es) x %u thread(s), %.1f s\n",
	        sb_open_loop(o) ? "open loop" : "closed loop", o->blob, o->processes, o->threads,
	        secs);
	if (sb_open_loop(o))
		fprintf(out, "  target rate                 %12.0f SEND/s\n", o->rate);
	else
		fprintf(out, "  window per sender           %12u SENDs\n", o->window);
	fprintf(out, "  delivered                   %12.0f msg/s\n", rate);
	fprintf(out, "  SENDs                       %12.0f /s\n", sends);
	json_object_set_new(r_json, "per_second", sb_report_per_second(r, out, "delivered/s"));
	json_object_set_new(r_json, "latency", sb_report_latency(r, out, "latency", false));
	if (sb_open_loop(o))
		json_object_set_new(r_json, "send_lag",
		                    sb_report_latency(r, out, "send lag", true));
	fprintf(out, "  SENDs / recipients (all)    %12" PRIu64 " / %" PRIu64 "\n", s.sent,
	        s.addressed);
	fprintf(out, "  result entries / delivered  %12" PRIu64 " / %" PRIu64 "\n", s.results,
	        s.delivered);
	fprintf(out, "  unanswered at the end       %12" PRIu64 "\n", lost);
	if (sb_open_loop(o))
		fprintf(out, "  open-loop sends held back   %12" PRIu64 "\n", s.stalled);
	fprintf(out, "  errors / reconnects         %12" PRIu64 " / %" PRIu64 "\n", s.errors,
	        s.reconnects);
	sb_json_merge(r_json,
	              json_pack("{s:f, s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
	                        "delivered_per_s", rate, "sends_per_s", sends, "measured_s", secs,
	                        "sent", (json_int_t)s.sent, "addressed", (json_int_t)s.addressed,
	                        "answered", (json_int_t)s.results, "delivered",
	                        (json_int_t)s.delivered, "unanswered", (json_int_t)lost,
	                        "held_back", (json_int_t)s.stalled, "errors", (json_int_t)s.errors,
	                        "reconnects", (json_int_t)s.reconnects));
	json_object_set_new(r_json, "status", sb_report_status(r, out));
	sb_report_print(r, r_json, out);
	return lost != 0 || s.errors != 0 || s.refused != 0 || sb_stop_now();
}

int sb_scen_queue(sb_run_t *r, FILE *out)
{
	const sb_opts_t *o = &r->opt;
	uint64_t t0 = sb_now_ns(), e0, queued = 0, missing = 0;
	sb_totals_t prev = {0}, s, se;
	json_t *r_json = json_object();
	double enq_s, drain_s;
	bool drained;

	if (!connect_all(r, all_ready_senders, o->senders, t0, &prev)) {
		sb_workers_stop(r);
		return 1;
	}
	e0 = sb_now_ns();
	sb_phase_set(r, PH_ENQUEUE);
	/* No deadline while results keep coming: wait in SB_DRAIN_TIMEOUT slices of progress. */
	for (uint64_t last = 0;;) {
		if (wait_until(r, all_enqueued, SB_DRAIN_TIMEOUT, t0, &prev))
			break;
		sb_totals_get(r, &s);
		if (s.results == last || sb_stop_now())
			break;
		last = s.results;
	}
	sb_totals_get(r, &se);
	enq_s = sb_ns_to_s(se.last_result_ns - e0);
	for (uint32_t i = 0; i < o->messages; i++)
		if (atomic_load_explicit(&r->qstatus[i], memory_order_relaxed) == 1 + SP_ST_QUEUED)
			queued++;
	r->drain_expect = queued;
	for (unsigned k = 0; k < r->nslots; k++)
		sb_cnt_set(&r->sh->slots[k].c.first_connect_ns, 0);
	sb_phase_set(r, PH_DRAIN);
	drained = false;
	for (uint64_t last = UINT64_MAX;;) {
		if (wait_until(r, all_drained, SB_DRAIN_TIMEOUT, t0, &prev)) {
			drained = true;
			break;
		}
		sb_totals_get(r, &s);
		if (s.delivered == last || sb_stop_now())
			break;
		last = s.delivered;
	}
	/* Let the last ACKs go out (they are written in the DELIVER's callback already). */
	sb_sleep_ms(300);
	sb_totals_get(r, &s);
	sb_workers_stop(r);
	sb_progress_end(r);
	drain_s = s.first_connect_ns && s.last_deliver_ns > s.first_connect_ns
	                  ? sb_ns_to_s(s.last_deliver_ns - s.first_connect_ns)
	                  : 0;
	for (uint32_t i = 0; i < o->messages; i++)
		if (atomic_load_explicit(&r->qstatus[i], memory_order_relaxed) ==
		            1 + SP_ST_QUEUED &&
		    atomic_load_explicit(&r->arrived[i], memory_order_relaxed) == 0)
			missing++;

	fprintf(out,
	        "sealpush-bench queue: %u messages, %u devices, %u senders (window %u), "
	        "blob %u B, %u process(es) x %u thread(s)\n",
	        o->messages, o->devices, o->senders, o->window, o->blob, o->processes, o->threads);
	fprintf(out, "  enqueue                     %12.0f QUEUED/s (%.3f s)\n",
	        enq_s > 0 ? (double)queued / enq_s : 0, enq_s);
	fprintf(out, "  drain                       %12.0f DELIVER+ACK/s (%.3f s)\n",
	        drain_s > 0 ? (double)s.delivered / drain_s : 0, drain_s);
	fprintf(out, "  sent / answered             %12" PRIu64 " / %" PRIu64 "\n", se.sent,
	        se.results);
	fprintf(out, "  queued                      %12" PRIu64 "\n", queued);
	fprintf(out, "  delivered (all DELIVERs)    %12" PRIu64 "\n", s.delivered);
	fprintf(out, "  unique delivered            %12" PRIu64 "\n", s.unique);
	fprintf(out, "  missing (QUEUED, never came)%12" PRIu64 "\n", missing);
	fprintf(out, "  duplicates                  %12" PRIu64 "\n", s.dups);
	fprintf(out, "  stale (from earlier runs)   %12" PRIu64 "\n", s.stale);
	fprintf(out, "  errors / reconnects         %12" PRIu64 " / %" PRIu64 "\n", s.errors,
	        s.reconnects);
	sb_json_merge(r_json,
	              json_pack("{s:f, s:f, s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
	                        "s:I, s:I, s:b}",
	                        "enqueue_per_s", enq_s > 0 ? (double)queued / enq_s : 0,
	                        "enqueue_s", enq_s, "drain_per_s",
	                        drain_s > 0 ? (double)s.delivered / drain_s : 0, "drain_s", drain_s,
	                        "sent", (json_int_t)se.sent, "answered", (json_int_t)se.results,
	                        "queued", (json_int_t)queued, "delivered", (json_int_t)s.delivered,
	                        "unique", (json_int_t)s.unique, "missing", (json_int_t)missing,
	                        "duplicates", (json_int_t)s.dups, "stale", (json_int_t)s.stale,
	                        "errors", (json_int_t)s.errors, "reconnects",
	                        (json_int_t)s.reconnects, "complete", drained));
	json_object_set_new(r_json, "status", sb_report_status(r, out));
	sb_report_print(r, r_json, out);
	return !drained || missing != 0 || queued != o->messages || se.sent != se.results ||
	       s.errors != 0 || sb_stop_now();
}

/* VmRSS of a process in KiB, or -1. */
static long rss_kib(long pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/status", pid);
	f = fopen(path, "r");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

int sb_scen_idle(sb_run_t *r, FILE *out)
{
	const sb_opts_t *o = &r->opt;
	uint64_t t0 = sb_now_ns(), t_up;
	sb_totals_t prev = {0}, s;
	json_t *r_json = json_object();
	long before = -1, at_ready = -1, settled = -1;
	double up_s;
	bool ok, rate_ok;

	if (o->pid > 0 && (before = rss_kib(o->pid)) < 0) {
		fprintf(stderr, "sealpush-bench: cannot read VmRSS of pid %ld\n", o->pid);
		sb_workers_stop(r);
		return 1;
	}
	sb_phase_set(r, PH_CONNECT);
	ok = connect_all(r, all_ready, r->n_recv, t0, &prev);
	t_up = sb_now_ns();
	if (ok) {
		sb_phase_set(r, PH_MEASURE);
		if (o->pid > 0)
			at_ready = rss_kib(o->pid);
		wait_seconds(r, o->settle, t0, &prev);
		if (o->pid > 0)
			settled = rss_kib(o->pid);
		sb_totals_get(r, &s);
		if (o->hold > 0) {
			sb_progress_end(r);
			fprintf(stderr,
			        "sealpush-bench: %" PRIu64 " connections up, holding %.0f s\n",
			        s.ready, o->hold);
			wait_seconds(r, o->hold, t0, &prev);
		}
	}
	sb_totals_get(r, &s);
	sb_workers_stop(r);
	sb_progress_end(r);
	up_s = s.first_connect_ns ? sb_ns_to_s(t_up - s.first_connect_ns) : 0;
	fprintf(out, "sealpush-bench idle: %u connections (%s), %u process(es) x %u thread(s)\n",
	        o->conns, o->register_idle ? "receivers, one identity each" : "SEND_ONLY",
	        o->processes, o->threads);
	/* A rate only when every connection came up over a measurable time. */
	rate_ok = ok && s.ready > 0 && up_s >= 0.001;
	if (rate_ok)
		fprintf(out, "  connected in                %12.2f s (%.0f connections/s)\n", up_s,
		        s.ready / up_s);
	else
		fprintf(out, "  connected                   %12" PRIu64 " of %u ready (no rate)\n",
		        s.ready, o->conns);
	fprintf(out, "  errors / reconnects         %12" PRIu64 " / %" PRIu64 "\n", s.errors,
	        s.reconnects);
	sb_json_merge(r_json,
	              json_pack("{s:b, s:f, s:f, s:I, s:I}", "connected", ok, "connect_s", up_s,
	                        "connects_per_s", rate_ok ? s.ready / up_s : 0, "errors",
	                        (json_int_t)s.errors, "reconnects", (json_int_t)s.reconnects));
	if (o->pid > 0 && ok) {
		double per = (double)(settled - before) / o->conns;

		fprintf(out, "  relay RSS before            %12ld KiB\n", before);
		fprintf(out, "  relay RSS all ready         %12ld KiB (%.2f KiB/conn)\n", at_ready,
		        (double)(at_ready - before) / o->conns);
		fprintf(out, "  relay RSS settled           %12ld KiB (%.0f s later)\n", settled,
		        o->settle);
		fprintf(out, "  relay RSS per connection    %12.2f KiB\n", per);
		sb_json_merge(r_json, json_pack("{s:I, s:I, s:I, s:f}", "rss_before_kib",
		                                (json_int_t)before, "rss_ready_kib",
		                                (json_int_t)at_ready, "rss_settled_kib",
		                                (json_int_t)settled, "kib_per_conn", per));
	}
	sb_report_print(r, r_json, out);
	return !ok || s.errors != 0 || sb_stop_now();
}

int sb_scen_handshake(sb_run_t *r, FILE *out)
{
	const sb_opts_t *o = &r->opt;
	uint64_t t0 = sb_now_ns();
	sb_totals_t prev = {0}, s0, s1, s;
	json_t *r_json = json_object();
	double secs, full, resumed;

	/* The slots start at once (no connect phase); their first handshakes are full. */
	secs = measure(r, t0, &prev, &s0, &s1);
	sb_workers_stop(r);
	sb_progress_end(r);
	sb_totals_get(r, &s);
	full = (double)(s1.hs_full - s0.hs_full) / secs;
	resumed = (double)(s1.hs_resumed - s0.hs_resumed) / secs;
	fprintf(out,
	        "sealpush-bench handshake: %s, %u concurrent, %u identities, %s, %u process(es) x "
	        "%u thread(s), %.1f s\n",
	        o->resume ? "resumed sessions" : "full handshakes", o->conns, r->n_recv_ids,
	        o->hello ? "handshake + HELLO/WELCOME" : "handshake + session ticket", o->processes,
	        o->threads, secs);
	fprintf(out, "  full handshakes             %12.0f /s\n", full);
	fprintf(out, "  resumed handshakes          %12.0f /s\n", resumed);
	json_object_set_new(r_json, "per_second", sb_report_per_second(r, out, "handshakes/s"));
	json_object_set_new(r_json, "latency", sb_report_latency(r, out, "latency", false));
	fprintf(out, "  failed (all)                %12" PRIu64 "\n", s.hs_failed);
	sb_json_merge(r_json,
	              json_pack("{s:f, s:f, s:f, s:f, s:I, s:I, s:I}", "full_per_s", full,
	                        "resumed_per_s", resumed, "handshakes_per_s", full + resumed,
	                        "measured_s", secs, "full", (json_int_t)(s1.hs_full - s0.hs_full),
	                        "resumed", (json_int_t)(s1.hs_resumed - s0.hs_resumed), "failed",
	                        (json_int_t)s.hs_failed));
	sb_report_print(r, r_json, out);
	return s.hs_failed != 0 || (o->resume ? resumed : full) <= 0 || sb_stop_now();
}
