/* sp_log: logfmt lines on a process-wide stream (see sp_log.h). */
#include "sp_log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

atomic_int sp_log_threshold = SP_LOG_INFO;

/* NULL means stderr, which is not a constant we could initialise with. */
static _Atomic(FILE *) sp_log_out;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void sp_log_set_level(int level)
{
	atomic_store_explicit(&sp_log_threshold, level, memory_order_relaxed);
}

int sp_log_level_parse(const char *s)
{
	if (s == NULL)
		return -EINVAL;
	for (int i = 0; i < (int)(sizeof level_names / sizeof level_names[0]); i++)
		if (strcmp(s, level_names[i]) == 0)
			return i;
	return -EINVAL;
}

void sp_log_set_output(FILE *out)
{
	atomic_store(&sp_log_out, out);
}

static const char *level_name(int level)
{
	if (level < SP_LOG_DEBUG)
		return level_names[SP_LOG_DEBUG];
	if (level > SP_LOG_ERROR)
		return level_names[SP_LOG_ERROR];
	return level_names[level];
}

/* "2026-11-22T11:00:00.123Z" into buf; buf must hold 25 bytes. */
static void format_ts(char *buf, size_t len)
{
	struct timespec now;
	struct tm tm;

	if (clock_gettime(CLOCK_REALTIME, &now) != 0 || gmtime_r(&now.tv_sec, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
		snprintf(buf, len, "1970-01-01T00:00:00.000Z");
		return;
	}
	size_t n = strlen(buf);
	snprintf(buf + n, len - n, ".%03ldZ", now.tv_nsec / 1000000);
}

void sp_log(int level, const char *event, const char *fmt, ...)
{
	char line[SP_LOG_LINE_MAX];
	char ts[32];
	const size_t tail = sizeof SP_LOG_TRUNCATED; /* marker + newline, no NUL needed */
	va_list ap;

	if (level < atomic_load_explicit(&sp_log_threshold, memory_order_relaxed))
		return;

	format_ts(ts, sizeof ts);
	int head = snprintf(line, sizeof line, "ts=%s level=%s event=%s ", ts, level_name(level),
	                    event != NULL ? event : "-");
	if (head < 0)
		return;
	size_t len = (size_t)head;
	if (len > sizeof line - tail - 1)
		len = sizeof line - tail - 1; /* absurdly long event name */

	va_start(ap, fmt);
	int body = vsnprintf(line + len, sizeof line - len, fmt, ap);
	va_end(ap);
	if (body < 0)
		body = 0;
	bool truncated = (size_t)body > sizeof line - len - tail;

	/* One event, one line: no control byte of the caller's survives. */
	size_t end = truncated ? sizeof line - tail : len + (size_t)body;
	for (size_t i = 0; i < end; i++) {
		unsigned char c = (unsigned char)line[i];
		if (c < 0x20 || c == 0x7f)
			line[i] = '?';
	}
	if (truncated) {
		memcpy(line + end, SP_LOG_TRUNCATED, sizeof SP_LOG_TRUNCATED - 1);
		end += sizeof SP_LOG_TRUNCATED - 1;
	} else if (body == 0) {
		end--; /* no fields: drop the space after the event */
	}
	line[end++] = '\n';

	FILE *out = atomic_load(&sp_log_out);
	if (out == NULL)
		out = stderr;
	flockfile(out);
	fwrite(line, 1, end, out);
	fflush(out);
	funlockfile(out);
}

/* The escape for c into esc; returns its length (1, 2 or 4). */
static size_t escape(unsigned char c, char esc[4])
{
	static const char hex[] = "0123456789abcdef";

	if (c == '"' || c == '\\') {
		esc[0] = '\\';
		esc[1] = (char)c;
		return 2;
	}
	if (c == '\n' || c == '\r' || c == '\t') {
		esc[0] = '\\';
		esc[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
		return 2;
	}
	if (c < 0x20 || c > 0x7e) {
		esc[0] = '\\';
		esc[1] = 'x';
		esc[2] = hex[c >> 4];
		esc[3] = hex[c & 0xf];
		return 4;
	}
	esc[0] = (char)c;
	return 1;
}

void sp_log_quote(char *dst, size_t dstlen, const char *src, size_t srclen)
{
	char esc[4];
	size_t o = 0, total = 3; /* quotes and NUL */

	if (dstlen == 0)
		return;
	if (dstlen < 3) {
		dst[0] = '\0';
		return;
	}
	for (size_t i = 0; i < srclen && total <= dstlen; i++)
		total += escape((unsigned char)src[i], esc);
	/* Cutting needs room for the "..." after the last escape that fits. */
	size_t reserve = total <= dstlen ? 0 : 3;

	dst[o++] = '"';
	for (size_t i = 0; i < srclen; i++) {
		size_t n = escape((unsigned char)src[i], esc);
		if (o + n + reserve + 2 > dstlen) {
			if (o + 5 <= dstlen) {
				memcpy(dst + o, "...", 3);
				o += 3;
			}
			break;
		}
		memcpy(dst + o, esc, n);
		o += n;
	}
	dst[o++] = '"';
	dst[o] = '\0';
}
