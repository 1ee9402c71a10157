/*
 * sb_report: the figures of a run. Totals over every slot of the shared region (the
 * orchestrator reads them while the threads run), the progress line on stderr with the
 * per-second values of the main figure, and the final report: a table on `out` and, with
 * --json, one object {params, environment, results} on stdout. Main process only.
 */
#ifndef SB_REPORT_H
#define SB_REPORT_H

#include "sb.h"

#include <stdbool.h>
#include <stdio.h>

#include <jansson.h>

/* The sum (maximum, minimum for first_connect_ns) of every slot's counters at one moment. */
typedef struct sb_totals {
	uint64_t ready, dead, reconnects, sent, addressed, results, delivered, acked, accepted;
	uint64_t refused, errors, stalled, unique, dups, stale, hs_full, hs_resumed, hs_failed;
	uint64_t last_result_ns, last_deliver_ns, first_connect_ns;
	uint64_t stopped; /* threads that saw PH_STOP_SENDING */
	uint64_t hs_group[SP_TG_COUNT];
} sb_totals_t;

/* Fills *s from every slot (relaxed reads: each counter is exact, the set is not a snapshot). */
void sb_totals_get(const sb_run_t *r, sb_totals_t *s);

/*
 * One progress step: in PH_MEASURE records the main figure's rate since the last step in
 * r->ps; prints the progress line (with r->progress) with rates against *prev; then *prev
 * becomes the current totals. t0: when the scenario started.
 */
void sb_progress(sb_run_t *r, uint64_t t0, sb_totals_t *prev);

/* Ends the progress line (a newline, if one is printed). */
void sb_progress_end(const sb_run_t *r);

/* Adds every member of the new object o to p and drops o (json_pack shorthand). */
void sb_json_merge(json_t *p, json_t *o);

/* Prints the SEND_RESULT statuses of every slot to out; returns them as a new JSON object. */
json_t *sb_report_status(const sb_run_t *r, FILE *out);

/*
 * Prints the percentiles (p50, p90, p99, p99.9, max) of every slot's latency histogram (or
 * with lag, the send-lag histogram) merged, in ms, each line starting with label; returns
 * them as a new JSON object. Call only after every bench thread has stopped.
 */
json_t *sb_report_latency(const sb_run_t *r, FILE *out, const char *label, bool lag);

/* Prints min/median/max of r->ps (unit names it); returns them as new JSON (null if none). */
json_t *sb_report_per_second(const sb_run_t *r, FILE *out, const char *unit);

/*
 * Puts results (a new reference, taken over) with the params and the environment into one
 * object and prints it as JSON on stdout with --json; flushes out and stdout.
 */
void sb_report_print(const sb_run_t *r, json_t *results, FILE *out);

#endif
