/*
 * sb_scen: the scenarios, run by the orchestrator (the main process) once the bench threads
 * or processes are started (sb_thread, main). Each one moves the global phase, waits for the
 * totals (printing progress), stops the workers (sb_workers_stop) and prints the report
 * (sb_report) on `out` (stdout, or stderr with --json; the JSON goes to stdout).
 *
 * Each returns the exit status: 0 if nothing was lost, refused or broken, 1 otherwise. They
 * block for the run's duration; the workers are stopped and joined when they return.
 */
#ifndef SB_SCEN_H
#define SB_SCEN_H

#include "sb.h"

#include <stdio.h>

/* throughput and fanout: connect all, warm up, measure, collect what is owed. */
int sb_scen_traffic(sb_run_t *r, FILE *out);

/* queue: connect the senders, enqueue every message, then the devices connect and drain. */
int sb_scen_queue(sb_run_t *r, FILE *out);

/* idle: connect every connection, settle (reading the relay's RSS with --pid), hold. */
int sb_scen_idle(sb_run_t *r, FILE *out);

/* handshake: the slots cycle on their own from the start; warm up, measure. */
int sb_scen_handshake(sb_run_t *r, FILE *out);

#endif
