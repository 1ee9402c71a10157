/* Unit tests for common/sp_log: levels, line format, quoting, truncation. */
#include "sp_log.h"

#include <errno.h>
#include <stdbool.h>

#include "sp_test.h"

static char *buf;
static size_t buflen;
static FILE *mem;

/* Sends log lines to a fresh memory stream. */
static void capture(void)
{
	free(buf);
	buf = NULL;
	buflen = 0;
	mem = open_memstream(&buf, &buflen);
	if (mem == NULL)
		SP_FAIL("open_memstream failed");
	sp_log_set_output(mem);
}

/* Stops capturing; buf/buflen then hold everything logged since capture(). */
static void release(void)
{
	sp_log_set_output(NULL);
	if (mem != NULL)
		fclose(mem);
	mem = NULL;
}

static size_t count_lines(const char *s, size_t len)
{
	size_t n = 0;
	for (size_t i = 0; i < len; i++)
		n += s[i] == '\n';
	return n;
}

static bool is_digits(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

/* "ts=2026-11-22T11:00:00.123Z " */
static bool valid_ts(const char *s)
{
	return strncmp(s, "ts=", 3) == 0 && is_digits(s + 3, 4) && s[7] == '-' &&
	       is_digits(s + 8, 2) && s[10] == '-' && is_digits(s + 11, 2) && s[13] == 'T' &&
	       is_digits(s + 14, 2) && s[16] == ':' && is_digits(s + 17, 2) && s[19] == ':' &&
	       is_digits(s + 20, 2) && s[22] == '.' && is_digits(s + 23, 3) && s[26] == 'Z' &&
	       s[27] == ' ';
}

static void test_level_parse(void)
{
	SP_CHECK_EQ_INT(sp_log_level_parse("debug"), SP_LOG_DEBUG);
	SP_CHECK_EQ_INT(sp_log_level_parse("info"), SP_LOG_INFO);
	SP_CHECK_EQ_INT(sp_log_level_parse("warn"), SP_LOG_WARN);
	SP_CHECK_EQ_INT(sp_log_level_parse("error"), SP_LOG_ERROR);
	static const char *const bad[] = {"", "INFO", "warning", "err", "info ", "debugx", "3"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		SP_CHECK(sp_log_level_parse(bad[i]) < 0);
	SP_CHECK_EQ_INT(sp_log_level_parse(NULL), -EINVAL);
	SP_CHECK(SP_LOG_DEBUG < SP_LOG_INFO && SP_LOG_INFO < SP_LOG_WARN &&
	         SP_LOG_WARN < SP_LOG_ERROR);
}

static void test_line_format(void)
{
	capture();
	SP_LOG(SP_LOG_INFO, "conn_open", "worker=%d token=%s msg=\"client hello\"", 1, "3fa9c2e1");
	release();

	const char *rest = " level=info event=conn_open worker=1 token=3fa9c2e1 msg=\"client "
	                   "hello\"\n";
	SP_CHECK(buf != NULL && buflen == 27 + strlen(rest));
	if (buf == NULL || buflen != 27 + strlen(rest))
		return;
	SP_CHECK(valid_ts(buf));
	SP_CHECK(strcmp(buf + 27, rest) == 0);

	/* Each level's name; no fields means no trailing space. */
	sp_log_set_level(SP_LOG_DEBUG);
	capture();
	sp_log(SP_LOG_DEBUG, "a", "k=%d", 1);
	sp_log(SP_LOG_WARN, "b", "k=%d", 2);
	sp_log(SP_LOG_ERROR, "c", "%s", "");
	release();
	sp_log_set_level(SP_LOG_INFO);
	SP_CHECK_EQ_INT(count_lines(buf, buflen), 3);
	SP_CHECK(strstr(buf, " level=debug event=a k=1\n") != NULL);
	SP_CHECK(strstr(buf, " level=warn event=b k=2\n") != NULL);
	SP_CHECK(strstr(buf, " level=error event=c\n") != NULL);
}

static void test_level_filter(void)
{
	int evaluated = 0;

	SP_CHECK_EQ_INT(atomic_load(&sp_log_threshold), SP_LOG_INFO); /* the default */
	capture();
	SP_LOG(SP_LOG_DEBUG, "dropped", "n=%d", ++evaluated);
	SP_LOG(SP_LOG_INFO, "kept", "n=%d", 1);
	sp_log_set_level(SP_LOG_WARN);
	SP_LOG(SP_LOG_INFO, "dropped", "n=%d", ++evaluated);
	sp_log(SP_LOG_INFO, "dropped", "n=%d", 2); /* the function filters too */
	SP_LOG(SP_LOG_WARN, "kept", "n=%d", 3);
	SP_LOG(SP_LOG_ERROR, "kept", "n=%d", 4);
	sp_log_set_level(SP_LOG_ERROR + 1);
	SP_LOG(SP_LOG_ERROR, "dropped", "n=%d", ++evaluated);
	sp_log_set_level(SP_LOG_DEBUG);
	SP_LOG(SP_LOG_DEBUG, "kept", "n=%d", 5);
	release();
	sp_log_set_level(SP_LOG_INFO);

	SP_CHECK_EQ_INT(evaluated, 0); /* filtered lines evaluate no arguments */
	SP_CHECK_EQ_INT(count_lines(buf, buflen), 4);
	SP_CHECK(buf != NULL && strstr(buf, "dropped") == NULL);
	SP_CHECK(buf != NULL && strstr(buf, "level=info event=kept n=1\n") != NULL);
	SP_CHECK(buf != NULL && strstr(buf, "level=warn event=kept n=3\n") != NULL);
	SP_CHECK(buf != NULL && strstr(buf, "level=error event=kept n=4\n") != NULL);
	SP_CHECK(buf != NULL && strstr(buf, "level=debug event=kept n=5\n") != NULL);
}

static void test_quote(void)
{
	char q[SP_LOG_QUOTE_SIZE(32)];
	const char hostile[] = "a\"b\\c\n\r\t\x01\x1b[2J\x7f\xff \xc3\xa9\0z";
	const char *want = "\"a\\\"b\\\\c\\n\\r\\t\\x01\\x1b[2J\\x7f\\xff \\xc3\\xa9\\x00z\"";

	sp_log_quote(q, sizeof q, hostile, sizeof hostile - 1);
	SP_CHECK(strcmp(q, want) == 0);
	if (strcmp(q, want) != 0)
		printf("# got %s\n", q);

	sp_log_quote(q, sizeof q, "", 0);
	SP_CHECK(strcmp(q, "\"\"") == 0);
	sp_log_quote(q, sizeof q, NULL, 0);
	SP_CHECK(strcmp(q, "\"\"") == 0);
	sp_log_quote(q, sizeof q, "plain text=1", 12);
	SP_CHECK(strcmp(q, "\"plain text=1\"") == 0);

	/* Every byte value survives as printable ASCII. */
	char all[256];
	char qall[SP_LOG_QUOTE_SIZE(256)];
	for (int i = 0; i < 256; i++)
		all[i] = (char)i;
	sp_log_quote(qall, sizeof qall, all, sizeof all);
	for (size_t i = 0; qall[i] != '\0'; i++)
		if ((unsigned char)qall[i] < 0x20 || (unsigned char)qall[i] > 0x7e)
			SP_FAIL("byte 0x%02x survived quoting", (unsigned char)qall[i]);
	SP_CHECK(strstr(qall, "...") == NULL); /* SP_LOG_QUOTE_SIZE is enough */
}

/* For every buffer size: never a byte past dstlen, always NUL-terminated, always a complete
 * quoted value that is a prefix of the full one, cut only between escapes. */
static void test_quote_truncation(void)
{
	const char src[] = "ab\"\xff\ncd\\e\x01xyz";
	const size_t srclen = sizeof src - 1;
	char full[SP_LOG_QUOTE_SIZE(sizeof src)];
	sp_log_quote(full, sizeof full, src, srclen);
	size_t fulllen = strlen(full);

	for (size_t dstlen = 0; dstlen <= fulllen + 2; dstlen++) {
		char dst[64];
		memset(dst, '#', sizeof dst);
		sp_log_quote(dst, dstlen, src, srclen);
		for (size_t i = dstlen; i < sizeof dst; i++)
			if (dst[i] != '#')
				SP_FAIL("dstlen %zu: byte %zu written", dstlen, i);
		if (dstlen == 0)
			continue;
		size_t len = strnlen(dst, dstlen);
		if (len == dstlen) {
			SP_FAIL("dstlen %zu: not NUL-terminated", dstlen);
			continue;
		}
		if (dstlen < 3) {
			SP_CHECK_EQ_INT(len, 0);
			continue;
		}
		if (dstlen < 6 && len != fulllen) {
			SP_CHECK(strcmp(dst, "\"\"") == 0);
			continue;
		}
		if (dstlen > fulllen) {
			SP_CHECK(strcmp(dst, full) == 0);
			continue;
		}
		/* Cut: "<prefix of full>..." where the prefix ends on an escape boundary. */
		SP_CHECK(len >= 5 && strcmp(dst + len - 4, "...\"") == 0);
		size_t body = len - 4;
		SP_CHECK(strncmp(dst, full, body) == 0);
		static const size_t bounds[] = {1, 2, 3, 5, 9, 11, 12, 13, 15, 16, 20, 21, 22, 23};
		bool ok = false;
		for (size_t i = 0; i < sizeof bounds / sizeof bounds[0]; i++)
			ok = ok || body == bounds[i];
		if (!ok)
			SP_FAIL("dstlen %zu: cut inside an escape: %s", dstlen, dst);
		/* It used the room it had: one more escape (<= 4 bytes) would not have fit. */
		SP_CHECK(len + 5 > dstlen);
	}
}

static void test_hostile_fields(void)
{
	/* A caller that forgot to quote still cannot break the line. */
	capture();
	SP_LOG(SP_LOG_WARN, "peer_error", "reason=%s", "bad\nlevel=error event=forged\r\x1b[2J");
	release();
	SP_CHECK_EQ_INT(count_lines(buf, buflen), 1);
	SP_CHECK(buf != NULL && strstr(buf, "reason=bad?level=error event=forged??[2J\n") != NULL);

	/* The intended way. */
	const char reason[] = "\"quoted\" \\ \xfe";
	char q[SP_LOG_QUOTE_SIZE(sizeof reason)];
	sp_log_quote(q, sizeof q, reason, sizeof reason - 1);
	capture();
	SP_LOG(SP_LOG_WARN, "peer_error", "code=%d reason=%s", 7, q);
	release();
	SP_CHECK(buf != NULL &&
	         strstr(buf, " code=7 reason=\"\\\"quoted\\\" \\\\ \\xfe\"\n") != NULL);
}

static void test_truncation(void)
{
	const size_t big = 100 * 1024;
	char *msg = malloc(big + 1);
	SP_CHECK(msg != NULL);
	if (msg == NULL)
		return;
	memset(msg, 'A', big);
	msg[big] = '\0';

	capture();
	SP_LOG(SP_LOG_ERROR, "huge", "msg=%s", msg);
	SP_LOG(SP_LOG_ERROR, "after", "n=%d", 1);
	release();
	free(msg);

	SP_CHECK_EQ_INT(count_lines(buf, buflen), 2);
	char *nl = buf != NULL ? memchr(buf, '\n', buflen) : NULL;
	SP_CHECK(nl != NULL);
	if (nl == NULL)
		return;
	size_t first = (size_t)(nl - buf) + 1;
	SP_CHECK_EQ_INT(first, SP_LOG_LINE_MAX);
	const char *marker = SP_LOG_TRUNCATED "\n";
	SP_CHECK(first > strlen(marker) &&
	         memcmp(nl + 1 - strlen(marker), marker, strlen(marker)) == 0);
	SP_CHECK(valid_ts(buf));
	SP_CHECK(strstr(buf, " level=error event=huge msg=AAAA") != NULL);
	SP_CHECK(valid_ts(nl + 1));
	SP_CHECK(strstr(nl + 1, " level=error event=after n=1\n") != NULL);

	/* Exactly at the limit: a line that just fits is not cut. */
	size_t head = strlen("ts=2026-11-22T11:00:00.123Z level=info event=fit k=");
	size_t n = SP_LOG_LINE_MAX - strlen(SP_LOG_TRUNCATED) - head - 1;
	char *fit = malloc(n + 2);
	SP_CHECK(fit != NULL);
	if (fit == NULL)
		return;
	memset(fit, 'b', n + 1);
	fit[n] = '\0';
	capture();
	SP_LOG(SP_LOG_INFO, "fit", "k=%s", fit);
	fit[n] = 'b';
	fit[n + 1] = '\0';
	SP_LOG(SP_LOG_INFO, "fit", "k=%s", fit);
	release();
	free(fit);
	nl = buf != NULL ? memchr(buf, '\n', buflen) : NULL;
	SP_CHECK(nl != NULL && (size_t)(nl - buf) + 1 == head + n + 1);
	SP_CHECK(nl != NULL && memcmp(nl - 1, "b\n", 2) == 0);
	SP_CHECK(nl != NULL && strstr(nl + 1, SP_LOG_TRUNCATED "\n") != NULL);
}

int main(void)
{
	SP_RUN(test_level_filter); /* first: it checks the default threshold */
	SP_RUN(test_level_parse);
	SP_RUN(test_line_format);
	SP_RUN(test_quote);
	SP_RUN(test_quote_truncation);
	SP_RUN(test_hostile_fields);
	SP_RUN(test_truncation);
	free(buf);
	return sp_test_done();
}
