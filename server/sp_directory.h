/*
 * sp_directory: the key directory's frames on a device connection (PROTOCOL.md 15.6):
 * DIR_PUBLISH (a user card into the transparency log) and DIR_LOOKUP (a card by handle or
 * token, or the log's head), each answered by one DIR_ANSWER. The log itself is sp_dirlog.h;
 * this module checks what a device may publish, turns frames into log requests and answers
 * into frames, and counts both. Runs on the connection's worker.
 */
#ifndef SP_DIRECTORY_H
#define SP_DIRECTORY_H

#include <stdbool.h>

#include "sp_conn.h"

struct sp_server;

/* Loads the log key and compiles the handle pattern (main thread, before the workers).
 * Returns 0 (also when the directory is off: no directory_log_key), or -1 with err. */
int sp_directory_setup(struct sp_server *srv, char *err, size_t errlen);
/* Frees what sp_directory_setup made. */
void sp_directory_teardown(struct sp_server *srv);

/* The worker's log (after its store). 0 or -1 with err. */
int sp_directory_start(sp_worker_t *w, char *err, size_t errlen);
/* Before the worker's store is freed. */
void sp_directory_stop(sp_worker_t *w);
/* Whether the directory is on (WELCOME's capability bit). */
bool sp_directory_enabled(const sp_worker_t *w);
/* The log's counters into w's metrics (the tick). */
void sp_directory_counters(sp_worker_t *w);

/* A DIR_PUBLISH or DIR_LOOKUP frame from c. */
void sp_directory_frame(sp_conn_t *c, const sp_frame_t *f);

#endif
