/*
 * redis_harness: one private redis-server for a unit test of server/ (test_store, test_dirlog).
 *
 * rh_setup() makes a fresh temporary directory (no TCP port: a unix socket there, no
 * persistence) and registers an atexit handler that kills the server and removes the
 * directory; the server also gets PR_SET_PDEATHSIG, so it dies with a test that is killed
 * before atexit runs. rh_start() starts $REDIS_SERVER (e.g. valkey-server), else redis-server,
 * and opens rh_raw, a blocking hiredis context for raw inspection. A test without redis-server
 * on PATH sees rh_start() fail and skips its Redis cases.
 */
#ifndef REDIS_HARNESS_H
#define REDIS_HARNESS_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "sp_store.h"

extern char rh_dir[64];      /* the temporary directory */
extern char rh_sock[128];    /* the server's unix socket */
extern char rh_log[128];     /* its log file */
extern char rh_url[160];     /* "unix:" rh_sock, for sp_store_new() */
extern pid_t rh_pid;         /* the server, or -1 */
extern redisContext *rh_raw; /* blocking connection of the last rh_start(), or NULL */

uint64_t rh_mono_ms(void);
uint64_t rh_wall_ms(void);
void rh_sleep_ms(unsigned ms);

/* Makes the directory (mkdtemp of /tmp/PREFIX-XXXXXX) and the paths; registers the cleanup.
 * 0, or -1 (printed as a TAP bail-out line). */
int rh_setup(const char *prefix);
/* Starts the server on rh_sock and waits until it answers PING (rh_raw then connects to it).
 * 0, or -1 (not found or not ready within 10 s; the log is printed). Again after rh_kill():
 * a fresh, empty server on the same socket. */
int rh_start(void);
/* Sends sig to the server (after SIGCONT, in case the test stopped it) and reaps it. */
void rh_kill(int sig);
/* Prints the server's log as TAP comments. */
void rh_print_log(void);

/* Runs base until *flag is non-zero or ms passed; returns whether *flag got set. */
bool rh_run_until(struct event_base *base, const int *flag, unsigned ms);
/* Runs base until the store is up or ms passed; returns sp_store_up(s). */
bool rh_wait_up(struct event_base *base, sp_store_t *s, unsigned ms);

#endif
