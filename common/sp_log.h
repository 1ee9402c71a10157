/*
 * sp_log: structured logging, one logfmt line per event:
 *
 *	ts=2026-11-22T11:00:00.123Z level=info event=conn_open worker=1 token=3fa9c2e1 msg="hi"
 *
 * The caller writes everything after "event=..." as key=value pairs through a printf format.
 * Values that come from a peer or a file (reason texts, paths, agent strings) must go through
 * sp_log_quote() first; as a last line of defence sp_log() replaces any control byte left in
 * the caller's part with '?', so an event is always exactly one line.
 *
 *	char q[SP_LOG_QUOTE_SIZE(SP_REASON_MAX)];
 *	sp_log_quote(q, sizeof q, reason, reason_len);
 *	SP_LOG(SP_LOG_WARN, "peer_error", "worker=%d code=%u reason=%s", w, code, q);
 *
 * Logging is process-wide: the level threshold and the output stream are the only globals.
 * Any thread may log at any time. Each line is formatted into a stack buffer of
 * SP_LOG_LINE_MAX bytes (longer lines are cut and end in SP_LOG_TRUNCATED) and handed to the
 * stream with one fwrite + fflush under the stream lock, so lines never interleave; a line fits
 * PIPE_BUF, so it is also written whole into a pipe shared with other processes.
 */
#ifndef SP_LOG_H
#define SP_LOG_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>

/* Levels, lowest first. They equal the index of their name in "debug", "info", "warn", "error",
 * so a config enum with those choices in that order maps straight to a level. */
enum {
	SP_LOG_DEBUG = 0,
	SP_LOG_INFO = 1,
	SP_LOG_WARN = 2,
	SP_LOG_ERROR = 3,
};

#define SP_LOG_LINE_MAX  4096 /* bytes per line including the newline (= PIPE_BUF on Linux) */
#define SP_LOG_TRUNCATED "...[truncated]"

/* Bytes sp_log_quote() needs to quote n source bytes without truncating them. */
#define SP_LOG_QUOTE_SIZE(n) (4 * (size_t)(n) + 3)

/* The current threshold: lines below it are dropped. Read it only through SP_LOG (a relaxed
 * atomic load), change it only with sp_log_set_level(). Default SP_LOG_INFO. */
extern atomic_int sp_log_threshold;

/* Logs one event unless lvl is below the threshold. A filtered-out line costs one integer
 * compare: the arguments are not evaluated and nothing is formatted. The variadic part is a
 * printf format and its arguments producing the key=value pairs; an event without fields
 * passes "%s", "" (an empty format trips -Wformat-zero-length). */
#define SP_LOG(lvl, event, ...)                                                                    \
	do {                                                                                       \
		if ((lvl) >= atomic_load_explicit(&sp_log_threshold, memory_order_relaxed))        \
			sp_log((lvl), (event), __VA_ARGS__);                                       \
	} while (0)

/* Sets the threshold; safe to call from a signal-driven reload while other threads log. Any int
 * is accepted: above SP_LOG_ERROR silences everything. */
void sp_log_set_level(int level);

/* Parses "debug", "info", "warn" or "error" (exactly, lower case) into a level; returns the
 * level, or -EINVAL for anything else (including NULL). */
int sp_log_level_parse(const char *s);

/* Directs log lines to out, or back to stderr if out is NULL. The stream stays the caller's: it
 * must stay open until another one is set. Set it before starting threads; lines already being
 * written by other threads may still go to the old stream. */
void sp_log_set_output(FILE *out);

/* Writes one line at level for event (a short snake_case name, not quoted) with the fields
 * produced by fmt. Checks the threshold itself; SP_LOG is the cheap way to call it. Never fails
 * visibly: a write error is ignored (there is nowhere left to report it). */
void sp_log(int level, const char *event, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/*
 * Writes src[0..srclen) to dst as a logfmt-safe quoted value: surrounded by double quotes, with
 * '"' and '\' backslash-escaped, \n \r \t as such, and every other byte below 0x20 or above 0x7e
 * as \xNN. dst is always NUL-terminated and always holds a complete quoted value: if the
 * escaped text does not fit, it is cut at an escape boundary and ends in ...". A dstlen of
 * SP_LOG_QUOTE_SIZE(srclen) never truncates; below 6 bytes there is only room for "" (or, below
 * 3, for an empty string). src may be NULL if srclen is 0.
 */
void sp_log_quote(char *dst, size_t dstlen, const char *src, size_t srclen);

#endif
