/* Unit tests for common/sp_config: sources and precedence, every error path, parsers, output. */
#include "sp_config.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <unistd.h>

#include "sp_test.h"

struct tcfg {
	char *listen;
	char *tls_cert;
	int64_t workers;
	int64_t max_frame;
	int64_t idle_timeout;
	bool tls_verify;
	int log_level;
	int64_t skew;
	bool help;
	bool version;
	bool check_config;
	int untouched; /* not in the table: load must leave it alone */
};

static const char *const levels[] = {"debug", "info", "warn", "error", NULL};

static const sp_option_t opts[] = {
        SP_OPTION_STRING(struct tcfg, listen, "0.0.0.0:443", "address to listen on"),
        SP_OPTION_STRING(struct tcfg, tls_cert, NULL, "server certificate (PEM)"),
        SP_OPTION_INT(struct tcfg, workers, 4, 1, 256, "worker threads"),
        SP_OPTION_SIZE(struct tcfg, max_frame, 65536, 4096, 16 << 20, "largest frame body"),
        SP_OPTION_DURATION(struct tcfg, idle_timeout, 30000, 100, 3600000, "idle timeout"),
        SP_OPTION_BOOL(struct tcfg, tls_verify, true, "verify client certificates"),
        SP_OPTION_ENUM(struct tcfg, log_level, 1, levels, "log threshold"),
        SP_OPTION_INT(struct tcfg, skew, 0, INT64_MIN, INT64_MAX, "clock skew"),
        SP_OPTION_ACTION(struct tcfg, help, 'h', "show this help and exit"),
        SP_OPTION_ACTION(struct tcfg, version, 0, "show the version and exit"),
        SP_OPTION_ACTION(struct tcfg, check_config, 0, "print the effective config and exit"),
};
#define N_OPTS (sizeof opts / sizeof opts[0])

static char tmpdir[] = "/tmp/sp_test_config.XXXXXX";
static char path[PATH_MAX];  /* the file write_file() wrote last */
static char path2[PATH_MAX]; /* a second file for the tests that need two */

static void write_to(char *dst, const char *name, const char *content)
{
	snprintf(dst, PATH_MAX, "%s/%s", tmpdir, name);
	FILE *f = fopen(dst, "w");
	if (f == NULL) {
		SP_FAIL("cannot create %s", dst);
		return;
	}
	fputs(content, f);
	fclose(f);
}

static void write_file(const char *content)
{
	write_to(path, "c.json", content);
}

/* Loads argv (NULL-terminated, program name first) into a zeroed *c. */
static int load_argv(struct tcfg *c, char *err, size_t errlen, int *argi, const char **argv)
{
	int argc = 0;
	while (argv[argc] != NULL)
		argc++;
	memset(c, 0, sizeof *c);
	c->untouched = 77;
	return sp_config_load(opts, N_OPTS, c, argc, (char **)argv, argi, err, errlen);
}

#define LOAD(c, err, ...)                                                                          \
	load_argv(&(c), (err), sizeof(err), NULL, (const char *[]){"prog", __VA_ARGS__, NULL})
#define LOAD_ARGI(c, err, argi, ...)                                                               \
	load_argv(&(c), (err), sizeof(err), (argi), (const char *[]){"prog", __VA_ARGS__, NULL})

/* rc is an error and err holds needle. */
#define CHECK_ERR(rc, err, needle)                                                                 \
	do {                                                                                       \
		SP_CHECK((rc) < 0);                                                                \
		if (strstr((err), (needle)) == NULL)                                               \
			SP_FAIL("error \"%s\" lacks \"%s\"", (err), (needle));                     \
		if (strchr((err), '\n') != NULL)                                                   \
			SP_FAIL("error \"%s\" is not one line", (err));                            \
	} while (0)

/* The error for a config file holding content. */
#define CHECK_FILE_ERR(content, needle)                                                            \
	do {                                                                                       \
		struct tcfg c_;                                                                    \
		char e_[512];                                                                      \
		write_file(content);                                                               \
		int rc_ = LOAD(c_, e_, "-c", path);                                                \
		CHECK_ERR(rc_, e_, needle);                                                        \
		sp_config_free(opts, N_OPTS, &c_);                                                 \
	} while (0)

/* The error for a command line. */
#define CHECK_FLAG_ERR(needle, ...)                                                                \
	do {                                                                                       \
		struct tcfg c_;                                                                    \
		char e_[512];                                                                      \
		int rc_ = LOAD(c_, e_, __VA_ARGS__);                                               \
		CHECK_ERR(rc_, e_, needle);                                                        \
		sp_config_free(opts, N_OPTS, &c_);                                                 \
	} while (0)

static void test_defaults(void)
{
	struct tcfg c;
	char err[256];
	const char *argv[] = {"prog", NULL};

	int rc = load_argv(&c, err, sizeof err, NULL, argv);
	SP_CHECK_EQ_INT(rc, 0);
	SP_CHECK_EQ_INT(err[0], '\0');
	SP_CHECK(c.listen != NULL && strcmp(c.listen, "0.0.0.0:443") == 0);
	SP_CHECK(c.tls_cert == NULL);
	SP_CHECK_EQ_INT(c.workers, 4);
	SP_CHECK_EQ_INT(c.max_frame, 65536);
	SP_CHECK_EQ_INT(c.idle_timeout, 30000);
	SP_CHECK(c.tls_verify);
	SP_CHECK_EQ_INT(c.log_level, 1);
	SP_CHECK_EQ_INT(c.skew, 0);
	SP_CHECK(!c.help && !c.version && !c.check_config);
	SP_CHECK_EQ_INT(c.untouched, 77);
	sp_config_free(opts, N_OPTS, &c);
	SP_CHECK(c.listen == NULL);
	sp_config_free(opts, N_OPTS, &c); /* idempotent */
	sp_config_free(opts, N_OPTS, NULL);
	sp_config_free(NULL, 0, &c);

	/* argc 0 (no argv at all) is just the defaults. */
	memset(&c, 0, sizeof c);
	SP_CHECK_EQ_INT(sp_config_load(opts, N_OPTS, &c, 0, NULL, NULL, err, sizeof err), 0);
	SP_CHECK_EQ_INT(c.workers, 4);
	sp_config_free(opts, N_OPTS, &c);
}

static void test_file_values(void)
{
	struct tcfg c;
	char err[256];

	write_file("{\n"
	           "  \"listen\": \"[::1]:8443\",\n"
	           "  \"tls_cert\": \"/etc/sealpush/cert.pem\",\n"
	           "  \"workers\": 16,\n"
	           "  \"max_frame\": \"1m\",\n"
	           "  \"idle_timeout\": \"5m\",\n"
	           "  \"tls_verify\": false,\n"
	           "  \"log_level\": \"debug\",\n"
	           "  \"skew\": -5\n"
	           "}\n");
	int rc = LOAD(c, err, "-c", path);
	SP_CHECK_EQ_INT(rc, 0);
	SP_CHECK(c.listen != NULL && strcmp(c.listen, "[::1]:8443") == 0);
	SP_CHECK(c.tls_cert != NULL && strcmp(c.tls_cert, "/etc/sealpush/cert.pem") == 0);
	SP_CHECK_EQ_INT(c.workers, 16);
	SP_CHECK_EQ_INT(c.max_frame, 1 << 20);
	SP_CHECK_EQ_INT(c.idle_timeout, 300000);
	SP_CHECK(!c.tls_verify);
	SP_CHECK_EQ_INT(c.log_level, 0);
	SP_CHECK_EQ_INT(c.skew, -5);
	sp_config_free(opts, N_OPTS, &c);

	/* Bare integers for sizes (bytes) and durations (ms); null unsets a string; {} is fine. */
	write_file("{\"max_frame\": 5000, \"idle_timeout\": 250, \"listen\": null}");
	rc = LOAD(c, err, "--config", path);
	SP_CHECK_EQ_INT(rc, 0);
	SP_CHECK_EQ_INT(c.max_frame, 5000);
	SP_CHECK_EQ_INT(c.idle_timeout, 250);
	SP_CHECK(c.listen == NULL);
	sp_config_free(opts, N_OPTS, &c);

	write_file("{}");
	rc = LOAD(c, err, "--config=", path); /* "--config=" then a path: the path is an operand */
	CHECK_ERR(rc, err, "unexpected argument");
	sp_config_free(opts, N_OPTS, &c);

	char eq[PATH_MAX + 16];
	snprintf(eq, sizeof eq, "--config=%s", path);
	rc = LOAD(c, err, eq);
	SP_CHECK_EQ_INT(rc, 0);
	SP_CHECK_EQ_INT(c.workers, 4);
	sp_config_free(opts, N_OPTS, &c);
}

static void test_flag_beats_file(void)
{
	struct tcfg c;
	char err[256];

	write_file("{\"workers\": 16, \"listen\": \"a:1\", \"tls_verify\": false, "
	           "\"log_level\": \"error\"}");
	/* Flag after -c. */
	int rc = LOAD(c, err, "-c", path, "--workers", "8", "--listen", "b:2", "--tls-verify");
	SP_CHECK_EQ_INT(rc, 0);
	SP_CHECK_EQ_INT(c.workers, 8);
	SP_CHECK(c.listen != NULL && strcmp(c.listen, "b:2") == 0);
	SP_CHECK(c.tls_verify);
	SP_CHECK_EQ_INT(c.log_level, 3); /* from the file, no flag for it */
	sp_config_free(opts, N_OPTS, &c);

	/* Flag before -c: still wins. */
	rc = LOAD(c, err, "--workers=8", "--listen=b:2", "--tls-verify=true", "--config", path);
	SP_CHECK_EQ_INT(rc, 0);
	SP_CHECK_EQ_INT(c.workers, 8);
	SP_CHECK(c.listen != NULL && strcmp(c.listen, "b:2") == 0);
	SP_CHECK(c.tls_verify);
	sp_config_free(opts, N_OPTS, &c);

	/* The same flag twice: the last one wins (and the first string is not leaked). */
	rc = LOAD(c, err, "--listen", "x:1", "--listen", "y:2", "--workers", "2", "--workers", "3");
	SP_CHECK_EQ_INT(rc, 0);
	SP_CHECK(c.listen != NULL && strcmp(c.listen, "y:2") == 0);
	SP_CHECK_EQ_INT(c.workers, 3);
	sp_config_free(opts, N_OPTS, &c);
}

static void test_bool_flags(void)
{
	struct tcfg c;
	char err[256];

	SP_CHECK_EQ_INT(LOAD(c, err, "--no-tls-verify"), 0);
	SP_CHECK(!c.tls_verify);
	sp_config_free(opts, N_OPTS, &c);
	SP_CHECK_EQ_INT(LOAD(c, err, "--no-tls-verify", "--tls-verify"), 0);
	SP_CHECK(c.tls_verify);
	sp_config_free(opts, N_OPTS, &c);
	SP_CHECK_EQ_INT(LOAD(c, err, "--tls-verify=false"), 0);
	SP_CHECK(!c.tls_verify);
	sp_config_free(opts, N_OPTS, &c);

	/* A bool flag never takes the next argument as its value. */
	int argi = -1;
	SP_CHECK_EQ_INT(LOAD_ARGI(c, err, &argi, "--no-tls-verify", "true"), 0);
	SP_CHECK(!c.tls_verify);
	SP_CHECK_EQ_INT(argi, 2);
	sp_config_free(opts, N_OPTS, &c);

	CHECK_FLAG_ERR("option --tls-verify: expected true or false, got \"yes\"",
	               "--tls-verify=yes");
	CHECK_FLAG_ERR("option --tls-verify: expected true or false, got \"\"", "--tls-verify=");
	CHECK_FLAG_ERR("option --no-tls-verify takes no value", "--no-tls-verify=true");
	CHECK_FLAG_ERR("unknown option --no-workers", "--no-workers");
	CHECK_FLAG_ERR("unknown option --no-", "--no-");
	CHECK_FILE_ERR("{\"tls_verify\": \"true\"}",
	               "key \"tls_verify\": expected true or false, got a string");
	CHECK_FILE_ERR("{\"tls_verify\": 1}",
	               "key \"tls_verify\": expected true or false, got an integer");
}

static void test_enum(void)
{
	struct tcfg c;
	char err[256];

	SP_CHECK_EQ_INT(LOAD(c, err, "--log-level", "warn"), 0);
	SP_CHECK_EQ_INT(c.log_level, 2);
	sp_config_free(opts, N_OPTS, &c);
	CHECK_FLAG_ERR("option --log-level: \"verbose\" is not one of debug, info, warn, error",
	               "--log-level", "verbose");
	CHECK_FLAG_ERR("\"INFO\" is not one of", "--log-level=INFO");
	CHECK_FILE_ERR("{\"log_level\": \"loud\"}",
	               "key \"log_level\": \"loud\" is not one of debug, info, warn, error");
	CHECK_FILE_ERR("{\"log_level\": 1}",
	               "key \"log_level\": expected a string, got an integer");
}

static void test_file_errors(void)
{
	struct tcfg c;
	char err[512], want[PATH_MAX + 64];

	/* The exact message for an unknown key: file and key named. */
	write_file("{\"workers\": 2, \"listn\": \"x:1\"}");
	int rc = LOAD(c, err, "-c", path);
	snprintf(want, sizeof want, "config %s: unknown key \"listn\"", path);
	SP_CHECK(rc == -EINVAL);
	SP_CHECK(strcmp(err, want) == 0);
	sp_config_free(opts, N_OPTS, &c);

	/* Ill-typed values. */
	write_file("{\"workers\": \"8\"}");
	rc = LOAD(c, err, "-c", path);
	snprintf(want, sizeof want, "config %s: key \"workers\": expected an integer, got a string",
	         path);
	SP_CHECK(rc == -EINVAL);
	SP_CHECK(strcmp(err, want) == 0);
	sp_config_free(opts, N_OPTS, &c);
	CHECK_FILE_ERR("{\"workers\": 1.5}", "key \"workers\": expected an integer, got a real");
	CHECK_FILE_ERR("{\"workers\": 2.0}", "key \"workers\": expected an integer, got a real");
	CHECK_FILE_ERR("{\"workers\": true}",
	               "key \"workers\": expected an integer, got a boolean");
	CHECK_FILE_ERR("{\"workers\": null}", "key \"workers\": expected an integer, got null");
	CHECK_FILE_ERR("{\"workers\": [1]}", "key \"workers\": expected an integer, got an array");
	CHECK_FILE_ERR("{\"listen\": 443}", "key \"listen\": expected a string or null, got an");
	CHECK_FILE_ERR("{\"listen\": {}}", "key \"listen\": expected a string or null, got an obj");
	CHECK_FILE_ERR("{\"max_frame\": 1.5}", "key \"max_frame\": expected an integer or a size");
	CHECK_FILE_ERR("{\"idle_timeout\": false}",
	               "key \"idle_timeout\": expected an integer (milliseconds) or a duration");

	/* Out of range. */
	write_file("{\"workers\": 0}");
	rc = LOAD(c, err, "-c", path);
	snprintf(want, sizeof want, "config %s: key \"workers\": 0 is below the minimum 1", path);
	SP_CHECK(rc == -ERANGE);
	SP_CHECK(strcmp(err, want) == 0);
	sp_config_free(opts, N_OPTS, &c);
	CHECK_FILE_ERR("{\"workers\": 257}", "key \"workers\": 257 is above the maximum 256");
	CHECK_FILE_ERR("{\"workers\": -9223372036854775808}",
	               "key \"workers\": -9223372036854775808 is below the minimum 1");
	CHECK_FILE_ERR("{\"workers\": 9223372036854775808}",
	               "line 1, column"); /* jansson: too big */

	/* JSON syntax, with line and column. */
	CHECK_FILE_ERR("{\n  \"workers\": 2,\n  \"listen\" \"x\"\n}", "line 3, column");
	CHECK_FILE_ERR("{\"workers\": 2,}", "line 1, column");
	CHECK_FILE_ERR("", "line 1, column");
	CHECK_FILE_ERR("{} {}", "line 1, column");
	CHECK_FILE_ERR("{\"listen\": \"\\u0000\"}", "line 1, column");
	CHECK_FILE_ERR("{\"listen\": \"\xff\"}", "line 1, column"); /* not UTF-8 */
	CHECK_FILE_ERR("{\"workers\": 2, \"workers\": 3}", "duplicate");

	/* Top level. */
	CHECK_FILE_ERR("[1, 2]", "top level must be an object, got an array");
	CHECK_FILE_ERR("{\"help\": true}",
	               "key \"help\": is a command-line flag, not a config key");

	/* A hostile key is quoted and cut, never copied raw into the message. */
	CHECK_FILE_ERR("{\"a\\nb\\u001b[31m\": 1}", "unknown key \"a\\nb\\x1b[31m\"");
	char big[4096];
	memset(big, 'k', sizeof big);
	memcpy(big, "{\"", 2);
	memcpy(big + sizeof big - 8, "\": 1}\n", 7);
	CHECK_FILE_ERR(big, "unknown key \"kkk");
	CHECK_FILE_ERR(big, "...\"");

	/* A file that cannot be read. */
	snprintf(want, sizeof want, "%s/missing.json", tmpdir);
	rc = LOAD(c, err, "-c", want);
	SP_CHECK_EQ_INT(rc, -ENOENT);
	CHECK_ERR(rc, err, "missing.json: No such file or directory");
	sp_config_free(opts, N_OPTS, &c);
	rc = LOAD(c, err, "-c", tmpdir);
	SP_CHECK_EQ_INT(rc, -EISDIR);
	CHECK_ERR(rc, err, ": Is a directory");
	sp_config_free(opts, N_OPTS, &c);

	/* A file error after earlier keys were stored: nothing leaks, free still works. */
	write_file("{\"tls_cert\": \"x.pem\", \"listen\": \"a:1\", \"workers\": 0}");
	rc = LOAD(c, err, "-c", path, "--listen", "b:1");
	CHECK_ERR(rc, err, "below the minimum");
	sp_config_free(opts, N_OPTS, &c);
	SP_CHECK(c.tls_cert == NULL && c.listen == NULL);
}

static void test_flag_errors(void)
{
	struct tcfg c;
	char err[512];

	int rc = LOAD(c, err, "--workers", "2", "--listn", "x");
	SP_CHECK(rc == -EINVAL);
	SP_CHECK(strcmp(err, "unknown option --listn") == 0);
	sp_config_free(opts, N_OPTS, &c);

	CHECK_FLAG_ERR("unknown option --listn", "--listn=x:1");
	CHECK_FLAG_ERR("unknown option --tls_cert", "--tls_cert", "x"); /* dashes only */
	CHECK_FLAG_ERR("unknown option --Workers", "--Workers", "2");
	CHECK_FLAG_ERR("unknown option --work", "--work", "2"); /* no prefix matching */
	CHECK_FLAG_ERR("unknown option -x", "-x");
	CHECK_FLAG_ERR("unknown option -hh", "-hh");
	CHECK_FLAG_ERR("unknown option ---workers", "---workers", "2");
	CHECK_FLAG_ERR("unknown option --", "--=");
	CHECK_FLAG_ERR("option --workers needs a value", "--workers");
	CHECK_FLAG_ERR("option -c needs a value", "-c");
	CHECK_FLAG_ERR("option --config needs a value", "--config");
	CHECK_FLAG_ERR("option --help takes no value", "--help=yes");
	CHECK_FLAG_ERR("config file given twice", "-c", "a.json", "--config", "b.json");
	CHECK_FLAG_ERR("unexpected argument \"serve\"", "--workers", "2", "serve");
	CHECK_FLAG_ERR("unexpected argument \"-\"", "-");

	CHECK_FLAG_ERR("option --workers: invalid integer \"12x\"", "--workers", "12x");
	CHECK_FLAG_ERR("option --workers: invalid integer \"\"", "--workers=");
	CHECK_FLAG_ERR("option --workers: invalid integer \" 5\"", "--workers", " 5");
	CHECK_FLAG_ERR("option --workers: invalid integer \"5 \"", "--workers", "5 ");
	CHECK_FLAG_ERR("option --workers: invalid integer \"+5\"", "--workers", "+5");
	CHECK_FLAG_ERR("option --workers: invalid integer \"1.5\"", "--workers", "1.5");
	CHECK_FLAG_ERR("option --workers: invalid integer \"0x10\"", "--workers", "0x10");
	CHECK_FLAG_ERR("option --workers: invalid integer \"-\"", "--workers", "-");
	CHECK_FLAG_ERR("option --workers: integer \"99999999999999999999\" is out of range",
	               "--workers", "99999999999999999999");
	CHECK_FLAG_ERR("option --workers: 0 is below the minimum 1", "--workers", "0");
	CHECK_FLAG_ERR("option --workers: -1 is below the minimum 1", "--workers=-1");
	CHECK_FLAG_ERR("option --workers: 1000 is above the maximum 256", "--workers", "1000");
	CHECK_FLAG_ERR("option --listen: value is not valid UTF-8", "--listen", "\xff:1");

	/* A flag error is found even when the file is fine, and names the flag as written. */
	write_file("{\"workers\": 2}");
	CHECK_FLAG_ERR("option --max-frame: invalid size \"64q\"", "-c", path, "--max-frame=64q");
}

static void test_int_bounds(void)
{
	struct tcfg c;
	char err[256];

	SP_CHECK_EQ_INT(LOAD(c, err, "--skew", "-9223372036854775808"), 0);
	SP_CHECK(c.skew == INT64_MIN);
	sp_config_free(opts, N_OPTS, &c);
	SP_CHECK_EQ_INT(LOAD(c, err, "--skew=9223372036854775807"), 0);
	SP_CHECK(c.skew == INT64_MAX);
	sp_config_free(opts, N_OPTS, &c);
	SP_CHECK_EQ_INT(LOAD(c, err, "--workers", "1", "--skew", "-0"), 0);
	SP_CHECK_EQ_INT(c.workers, 1);
	SP_CHECK_EQ_INT(c.skew, 0);
	sp_config_free(opts, N_OPTS, &c);
	SP_CHECK_EQ_INT(LOAD(c, err, "--workers", "256", "--skew", "007"), 0);
	SP_CHECK_EQ_INT(c.workers, 256);
	SP_CHECK_EQ_INT(c.skew, 7);
	sp_config_free(opts, N_OPTS, &c);
	CHECK_FLAG_ERR("out of range", "--skew", "9223372036854775808");
	CHECK_FLAG_ERR("out of range", "--skew", "-9223372036854775809");
}

static void test_parse_size(void)
{
	static const struct {
		const char *s;
		int64_t v;
	} good[] = {
	        {"0", 0},
	        {"1", 1},
	        {"65536", 65536},
	        {"64k", 65536},
	        {"64K", 65536},
	        {"16m", 16 << 20},
	        {"16M", 16 << 20},
	        {"1g", INT64_C(1) << 30},
	        {"3G", INT64_C(3) << 30},
	        {"0k", 0},
	        {"9223372036854775807", INT64_MAX},
	        {"8589934591g", (INT64_C(8589934591) << 30)},
	};
	static const char *const bad[] = {"",     "k",    "-1", "+1",  " 1",   "1 ",  "1kb",
	                                  "1KiB", "1.5k", "1t", "1kk", "0x10", "1e3", "k1"};
	int64_t v;

	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		v = -1;
		int rc = sp_parse_size(good[i].s, &v);
		if (rc != 0 || v != good[i].v)
			SP_FAIL("sp_parse_size(\"%s\") = %d, %" PRId64, good[i].s, rc, v);
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		v = 42;
		int rc = sp_parse_size(bad[i], &v);
		if (rc != -EINVAL || v != 42)
			SP_FAIL("sp_parse_size(\"%s\") = %d, not -EINVAL", bad[i], rc);
	}
	SP_CHECK_EQ_INT(sp_parse_size(NULL, &v), -EINVAL);
	SP_CHECK_EQ_INT(sp_parse_size("9223372036854775808", &v), -ERANGE);
	SP_CHECK_EQ_INT(sp_parse_size("8589934592g", &v), -ERANGE);
	SP_CHECK_EQ_INT(sp_parse_size("9007199254740992k", &v), -ERANGE);
	SP_CHECK_EQ_INT(sp_parse_size("99999999999999999999999k", &v), -ERANGE);

	/* As an option: suffixes from flags and JSON strings, bounds in the same units. */
	struct tcfg c;
	char err[256];
	SP_CHECK_EQ_INT(LOAD(c, err, "--max-frame", "1M"), 0);
	SP_CHECK_EQ_INT(c.max_frame, 1 << 20);
	sp_config_free(opts, N_OPTS, &c);
	write_file("{\"max_frame\": \"16m\"}");
	SP_CHECK_EQ_INT(LOAD(c, err, "-c", path), 0);
	SP_CHECK_EQ_INT(c.max_frame, 16 << 20);
	sp_config_free(opts, N_OPTS, &c);
	CHECK_FLAG_ERR("option --max-frame: 32m is above the maximum 16m", "--max-frame", "32m");
	CHECK_FLAG_ERR("option --max-frame: 1k is below the minimum 4k", "--max-frame", "1k");
	CHECK_FLAG_ERR("option --max-frame: 4095 is below the minimum 4k", "--max-frame", "4095");
	CHECK_FLAG_ERR("option --max-frame: size \"9999999999g\" is too large", "--max-frame",
	               "9999999999g");
	CHECK_FLAG_ERR("option --max-frame: invalid size \"64 k\"", "--max-frame", "64 k");
	CHECK_FILE_ERR("{\"max_frame\": \"-4k\"}", "key \"max_frame\": invalid size \"-4k\"");
	CHECK_FILE_ERR("{\"max_frame\": -4096}", "key \"max_frame\": -4k is below the minimum 4k");
}

static void test_parse_duration(void)
{
	static const struct {
		const char *s;
		int64_t v;
	} good[] = {
	        {"0", 0},
	        {"1500", 1500},
	        {"250ms", 250},
	        {"30s", 30000},
	        {"5m", 300000},
	        {"1h", 3600000},
	        {"0ms", 0},
	        {"0h", 0},
	        {"9223372036854775807", INT64_MAX},
	        {"9223372036854775807ms", INT64_MAX},
	};
	static const char *const bad[] = {"",     "s",     "ms",  "1d",  "1.5s", "-1s",
	                                  "+1s",  "1S",    "1H",  "1 s", " 1s",  "1sm",
	                                  "1mss", "1msec", "1h1", "1hm", "1e3"};
	int64_t v;

	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		v = -1;
		int rc = sp_parse_duration_ms(good[i].s, &v);
		if (rc != 0 || v != good[i].v)
			SP_FAIL("sp_parse_duration_ms(\"%s\") = %d, %" PRId64, good[i].s, rc, v);
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		v = 42;
		int rc = sp_parse_duration_ms(bad[i], &v);
		if (rc != -EINVAL || v != 42)
			SP_FAIL("sp_parse_duration_ms(\"%s\") = %d, not -EINVAL", bad[i], rc);
	}
	SP_CHECK_EQ_INT(sp_parse_duration_ms(NULL, &v), -EINVAL);
	SP_CHECK_EQ_INT(sp_parse_duration_ms("9223372036854775807s", &v), -ERANGE);
	SP_CHECK_EQ_INT(sp_parse_duration_ms("2562047788015216h", &v), -ERANGE);
	SP_CHECK_EQ_INT(sp_parse_duration_ms("153722867280913m", &v), -ERANGE);
	SP_CHECK_EQ_INT(sp_parse_duration_ms("9223372036854775808", &v), -ERANGE);

	struct tcfg c;
	char err[256];
	SP_CHECK_EQ_INT(LOAD(c, err, "--idle-timeout=250ms"), 0);
	SP_CHECK_EQ_INT(c.idle_timeout, 250);
	sp_config_free(opts, N_OPTS, &c);
	SP_CHECK_EQ_INT(LOAD(c, err, "--idle-timeout", "1h"), 0);
	SP_CHECK_EQ_INT(c.idle_timeout, 3600000);
	sp_config_free(opts, N_OPTS, &c);
	SP_CHECK_EQ_INT(LOAD(c, err, "--idle-timeout", "100"), 0);
	SP_CHECK_EQ_INT(c.idle_timeout, 100);
	sp_config_free(opts, N_OPTS, &c);
	CHECK_FLAG_ERR("option --idle-timeout: 2h is above the maximum 1h", "--idle-timeout", "2h");
	CHECK_FLAG_ERR("option --idle-timeout: 99ms is below the minimum 100ms", "--idle-timeout",
	               "99");
	CHECK_FLAG_ERR("option --idle-timeout: invalid duration \"1d\"", "--idle-timeout", "1d");
	CHECK_FLAG_ERR("option --idle-timeout: duration \"9223372036854775807h\" is too large",
	               "--idle-timeout", "9223372036854775807h");
	CHECK_FILE_ERR("{\"idle_timeout\": 50}",
	               "key \"idle_timeout\": 50ms is below the minimum 100ms");
	CHECK_FILE_ERR("{\"idle_timeout\": \"2.5s\"}",
	               "key \"idle_timeout\": invalid duration \"2.5s\"");
}

static void test_actions_and_operands(void)
{
	struct tcfg c;
	char err[256];
	int argi = -1;

	/* Operands: parsing stops at the first one; argi says where. */
	SP_CHECK_EQ_INT(LOAD_ARGI(c, err, &argi, "--workers", "3", "send", "--workers", "9"), 0);
	SP_CHECK_EQ_INT(argi, 3);
	SP_CHECK_EQ_INT(c.workers, 3);
	sp_config_free(opts, N_OPTS, &c);
	SP_CHECK_EQ_INT(LOAD_ARGI(c, err, &argi, "--", "--workers"), 0);
	SP_CHECK_EQ_INT(argi, 2);
	SP_CHECK_EQ_INT(c.workers, 4);
	sp_config_free(opts, N_OPTS, &c);
	SP_CHECK_EQ_INT(LOAD_ARGI(c, err, &argi, "--workers", "5"), 0);
	SP_CHECK_EQ_INT(argi, 3);
	sp_config_free(opts, N_OPTS, &c);
	SP_CHECK_EQ_INT(LOAD_ARGI(c, err, &argi, "-"), 0);
	SP_CHECK_EQ_INT(argi, 1);
	sp_config_free(opts, N_OPTS, &c);
	/* A value that looks like a flag is still the value. */
	SP_CHECK_EQ_INT(LOAD_ARGI(c, err, &argi, "--listen", "--x", "--skew", "-3"), 0);
	SP_CHECK(c.listen != NULL && strcmp(c.listen, "--x") == 0);
	SP_CHECK_EQ_INT(c.skew, -3);
	sp_config_free(opts, N_OPTS, &c);

	/* Action flags land in their fields and nowhere else. */
	SP_CHECK_EQ_INT(LOAD(c, err, "-h"), 0);
	SP_CHECK(c.help && !c.version && !c.check_config);
	sp_config_free(opts, N_OPTS, &c);
	SP_CHECK_EQ_INT(LOAD(c, err, "--version", "--check-config", "--workers", "2"), 0);
	SP_CHECK(!c.help && c.version && c.check_config);
	SP_CHECK_EQ_INT(c.workers, 2);
	sp_config_free(opts, N_OPTS, &c);

	/* --help is reported although the file is missing, broken, or a value is bad. */
	char missing[PATH_MAX];
	snprintf(missing, sizeof missing, "%s/nope.json", tmpdir);
	int rc = LOAD(c, err, "-c", missing, "--help");
	SP_CHECK(rc < 0);
	SP_CHECK(c.help);
	sp_config_free(opts, N_OPTS, &c);
	write_file("{\"workers\": ");
	rc = LOAD(c, err, "--version", "-c", path);
	SP_CHECK(rc < 0);
	SP_CHECK(c.version && !c.help);
	sp_config_free(opts, N_OPTS, &c);
	rc = LOAD(c, err, "--workers", "0", "--help");
	SP_CHECK(rc < 0);
	SP_CHECK(c.help);
	sp_config_free(opts, N_OPTS, &c);
}

/* sp_config_usage() output as a malloc'd string. */
static char *capture_usage(void)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (f == NULL)
		return NULL;
	sp_config_usage(f, opts, N_OPTS);
	fclose(f);
	return buf;
}

static void test_usage(void)
{
	char *u = capture_usage();
	SP_CHECK(u != NULL);
	if (u == NULL)
		return;
	static const char *const want[] = {
	        "-c, --config FILE",
	        "--listen STRING  ",
	        "address to listen on (default: \"0.0.0.0:443\")\n",
	        "--tls-cert STRING  ",
	        "server certificate (PEM)\n",
	        "--workers INT  ",
	        "worker threads (default: 4, range 1..256)\n",
	        "--max-frame SIZE  ",
	        "(default: 64k, range 4k..16m)\n",
	        "--idle-timeout DURATION  ",
	        "(default: 30s, range 100ms..1h)\n",
	        "--[no-]tls-verify  ",
	        "verify client certificates (default: true)\n",
	        "--log-level debug|info|warn|error  ",
	        "log threshold (default: info)\n",
	        "--skew INT  ",
	        "clock skew (default: 0)\n",
	        "-h, --help  ",
	        "show this help and exit\n",
	        "--version  ",
	        "--check-config  ",
	};
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
		if (strstr(u, want[i]) == NULL)
			SP_FAIL("usage lacks \"%s\":\n%s", want[i], u);
	size_t lines = 0;
	for (const char *p = u; *p != '\0'; p++)
		lines += *p == '\n';
	SP_CHECK_EQ_INT(lines, N_OPTS + 1);
	free(u);
}

static void test_dump_roundtrip(void)
{
	struct tcfg c, d;
	char err[256];

	int rc = LOAD(c, err, "--workers", "7", "--max-frame", "5000", "--idle-timeout", "90s",
	              "--no-tls-verify", "--log-level", "error", "--tls-cert", "a \"quoted\"\npath",
	              "--skew", "-9223372036854775808", "--check-config");
	SP_CHECK_EQ_INT(rc, 0);

	snprintf(path2, sizeof path2, "%s/dump.json", tmpdir);
	FILE *f = fopen(path2, "w");
	SP_CHECK(f != NULL);
	if (f == NULL)
		return;
	SP_CHECK_EQ_INT(sp_config_dump_json(opts, N_OPTS, &c, f), 0);
	fclose(f);

	json_error_t jerr;
	json_t *root = json_load_file(path2, 0, &jerr);
	SP_CHECK(root != NULL && json_is_object(root));
	if (root != NULL) {
		SP_CHECK_EQ_INT(json_object_size(root), N_OPTS - 3); /* not the three actions */
		for (size_t i = 0; i < N_OPTS; i++) {
			json_t *v = json_object_get(root, opts[i].name);
			if ((v != NULL) != (opts[i].type != SP_OPT_ACTION))
				SP_FAIL("dump has the wrong presence of %s", opts[i].name);
		}
		const char *mf = json_string_value(json_object_get(root, "max_frame"));
		const char *it = json_string_value(json_object_get(root, "idle_timeout"));
		SP_CHECK(mf != NULL && strcmp(mf, "5000") == 0);
		SP_CHECK(it != NULL && strcmp(it, "90s") == 0);
		SP_CHECK(json_is_null(json_object_get(root, "listen")) == 0);
		json_decref(root);
	}

	/* The dump loads back to the same config. */
	rc = load_argv(&d, err, sizeof err, NULL, (const char *[]){"prog", "-c", path2, NULL});
	SP_CHECK_EQ_INT(rc, 0);
	SP_CHECK(strcmp(c.listen, d.listen) == 0);
	SP_CHECK(d.tls_cert != NULL && strcmp(d.tls_cert, "a \"quoted\"\npath") == 0);
	SP_CHECK_EQ_INT(d.workers, 7);
	SP_CHECK_EQ_INT(d.max_frame, 5000);
	SP_CHECK_EQ_INT(d.idle_timeout, 90000);
	SP_CHECK(!d.tls_verify);
	SP_CHECK_EQ_INT(d.log_level, 3);
	SP_CHECK(d.skew == INT64_MIN);
	SP_CHECK(!d.check_config);
	sp_config_free(opts, N_OPTS, &d);

	/* A NULL string dumps as null and loads back as NULL. */
	free(c.listen);
	c.listen = NULL;
	char *buf = NULL;
	size_t len = 0;
	f = open_memstream(&buf, &len);
	SP_CHECK_EQ_INT(sp_config_dump_json(opts, N_OPTS, &c, f), 0);
	fclose(f);
	SP_CHECK(buf != NULL && strstr(buf, "\"listen\": null") != NULL);
	SP_CHECK(buf != NULL && strstr(buf, "\"workers\": 7") != NULL);
	SP_CHECK(buf != NULL && len > 0 && buf[len - 1] == '\n');
	free(buf);
	sp_config_free(opts, N_OPTS, &c);

	/* A write error is reported. */
	f = fopen("/dev/full", "w");
	if (f != NULL) {
		setvbuf(f, NULL, _IONBF, 0);
		SP_CHECK_EQ_INT(sp_config_dump_json(opts, N_OPTS, &d, f), -EIO);
		fclose(f);
	}
}

struct bcfg {
	int64_t n;
	int64_t m;
	bool b;
	int e;
};
static const char *const no_choices[] = {NULL};

static void test_bad_tables(void)
{
	const sp_option_t t_range[] = {SP_OPTION_INT(struct bcfg, n, 0, 1, 10, "n")};
	const sp_option_t t_minmax[] = {SP_OPTION_INT(struct bcfg, n, 5, 10, 1, "n")};
	const sp_option_t t_neg[] = {SP_OPTION_SIZE(struct bcfg, n, 0, -1, 10, "n")};
	const sp_option_t t_dup[] = {SP_OPTION_INT(struct bcfg, n, 0, 0, 1, "n"),
	                             {.name = "n", .type = SP_OPT_BOOL, .offset = 0, .help = "x"}};
	const sp_option_t t_dup_short[] = {{.name = "a",
	                                    .type = SP_OPT_BOOL,
	                                    .short_name = 'v',
	                                    .offset = offsetof(struct bcfg, b),
	                                    .help = "a"},
	                                   {.name = "b",
	                                    .type = SP_OPT_BOOL,
	                                    .short_name = 'v',
	                                    .offset = offsetof(struct bcfg, b),
	                                    .help = "b"}};
	const sp_option_t t_short_c[] = {{.name = "a",
	                                  .type = SP_OPT_BOOL,
	                                  .short_name = 'c',
	                                  .offset = offsetof(struct bcfg, b),
	                                  .help = "a"}};
	const sp_option_t t_name[] = {{.name = "Big", .type = SP_OPT_BOOL, .help = "x"}};
	const sp_option_t t_dash[] = {{.name = "a-b", .type = SP_OPT_BOOL, .help = "x"}};
	const sp_option_t t_config[] = {{.name = "config", .type = SP_OPT_BOOL, .help = "x"}};
	const sp_option_t t_noname[] = {{.name = NULL, .type = SP_OPT_BOOL, .help = "x"}};
	const sp_option_t t_nohelp[] = {{.name = "a", .type = SP_OPT_BOOL}};
	const sp_option_t t_enum[] = {SP_OPTION_ENUM(struct bcfg, e, 0, no_choices, "e")};
	const sp_option_t t_enum_def[] = {SP_OPTION_ENUM(struct bcfg, e, 4, levels, "e")};
	const sp_option_t t_bool[] = {SP_OPTION_BOOL(struct bcfg, b, 2, "b")};
	const sp_option_t t_type[] = {{.name = "a", .type = (sp_opt_type_t)99, .help = "x"}};
	const struct {
		const sp_option_t *t;
		size_t n;
		const char *needle;
	} cases[] = {
	        {t_range, 1, "option table: n: default outside"},
	        {t_minmax, 1, "option table: n: default outside"},
	        {t_neg, 1, "option table: n: sizes and durations need min >= 0"},
	        {t_dup, 2, "option table: n: duplicate"},
	        {t_dup_short, 2, "option table: b: duplicate"},
	        {t_short_c, 1, "option table: a: short name"},
	        {t_name, 1, "option table: Big: name must be"},
	        {t_dash, 1, "option table: a-b: name must be"},
	        {t_config, 1, "option table: config: \"config\" is reserved"},
	        {t_noname, 1, "option table: (null): name must be"},
	        {t_nohelp, 1, "option table: a: help is missing"},
	        {t_enum, 1, "option table: e: enum needs choices"},
	        {t_enum_def, 1, "option table: e: enum needs choices"},
	        {t_bool, 1, "option table: b: bool default"},
	        {t_type, 1, "option table: a: unknown type"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct bcfg c = {0};
		char err[256];
		char *argv[] = {(char *)"prog", NULL};
		int rc = sp_config_load(cases[i].t, cases[i].n, &c, 1, argv, NULL, err, sizeof err);
		CHECK_ERR(rc, err, cases[i].needle);
	}

	/* Bad arguments, and a zero-length error buffer (nothing written, still an error). */
	struct tcfg c = {0};
	char err[8] = "xxxxxxx";
	SP_CHECK_EQ_INT(sp_config_load(opts, N_OPTS, NULL, 0, NULL, NULL, err, sizeof err),
	                -EINVAL);
	SP_CHECK_EQ_INT(err[7], '\0');
	char *argv[] = {(char *)"prog", (char *)"--nope", NULL};
	memcpy(err, "xxxxxxx", 8);
	SP_CHECK_EQ_INT(sp_config_load(opts, N_OPTS, &c, 2, argv, NULL, err, 0), -EINVAL);
	SP_CHECK(strcmp(err, "xxxxxxx") == 0);
	sp_config_free(opts, N_OPTS, &c);
	/* A tiny error buffer is truncated, NUL-terminated. */
	SP_CHECK_EQ_INT(sp_config_load(opts, N_OPTS, &c, 2, argv, NULL, err, sizeof err), -EINVAL);
	SP_CHECK(strcmp(err, "unknown") == 0);
	sp_config_free(opts, N_OPTS, &c);
}

static void test_redis_url(void)
{
	char host[64], upath[64];
	uint16_t port;

	SP_CHECK_EQ_INT(sp_parse_redis_url("redis://10.0.0.1:6380", host, sizeof(host), &port,
	                                   upath, sizeof(upath)),
	                0);
	SP_CHECK(!strcmp(host, "10.0.0.1") && port == 6380 && upath[0] == '\0');
	SP_CHECK_EQ_INT(sp_parse_redis_url("redis://cache", host, sizeof(host), &port, upath,
	                                   sizeof(upath)),
	                0);
	SP_CHECK(!strcmp(host, "cache") && port == 6379);
	SP_CHECK_EQ_INT(sp_parse_redis_url("redis://[::1]:7000", host, sizeof(host), &port, upath,
	                                   sizeof(upath)),
	                0);
	SP_CHECK(!strcmp(host, "::1") && port == 7000);
	SP_CHECK_EQ_INT(sp_parse_redis_url("unix:/run/r.sock", host, sizeof(host), &port, upath,
	                                   sizeof(upath)),
	                0);
	SP_CHECK(!strcmp(upath, "/run/r.sock") && host[0] == '\0');
	SP_CHECK_EQ_INT(sp_parse_redis_url("unix:///run/r.sock", host, sizeof(host), &port, upath,
	                                   sizeof(upath)),
	                0);
	SP_CHECK(!strcmp(upath, "/run/r.sock"));
	static const char *const bad[] = {"",
	                                  "redis://",
	                                  "unix:",
	                                  "unix://",
	                                  "http://x:1",
	                                  "redis://h:0",
	                                  "redis://h:70000",
	                                  "redis://h/db",
	                                  "redis://:6379",
	                                  "6379"};
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++)
		if (sp_parse_redis_url(bad[k], host, sizeof(host), &port, upath, sizeof(upath)) !=
		    -EINVAL)
			SP_FAIL("\"%s\" accepted", bad[k]);
	SP_CHECK_EQ_INT(
	        sp_parse_redis_url("unix:/a/very/long/upath/that/does/not/fit/in/sixty-four/"
	                           "bytes/at/all.sock",
	                           host, sizeof(host), &port, upath, sizeof(upath)),
	        -EINVAL);
}

static void test_hostport(void)
{
	static const struct {
		const char *s;
		const char *host;
		uint16_t port;
	} good[] = {
	        {"1.2.3.4:443", "1.2.3.4", 443},
	        {"[::1]:443", "::1", 443},
	        {"[2001:db8::17]:8443", "2001:db8::17", 8443},
	        {"[::ffff:192.0.2.1]:1", "::ffff:192.0.2.1", 1},
	        {"localhost:443", "localhost", 443},
	        {"push-1.example.com:65535", "push-1.example.com", 65535},
	        {"0.0.0.0:00443", "0.0.0.0", 443},
	        {"redis_host:6379", "redis_host", 6379},
	};
	static const char *const bad[] = {
	        "",           ":443",        "localhost",
	        "localhost:", "localhost:0", "host:65536",
	        "host:99999", "host:123456", "host:-1",
	        "host:+1",    "host:44 3",   "host:443 ",
	        " host:443",  "::1:443",     "[::1]",
	        "[::1]443",   "[]:443",      "[::1]:",
	        "[::1]:0",    "[zz::1]:443", "[1.2.3.4]:1",
	        "[::1:443",   "::1]:443",    "host:0x1bb",
	        "ho st:443",  "host/x:443",  "[fe80::1%eth0]:443",
	        "host:443:",
	};
	char host[64];
	uint16_t port;

	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		port = 0;
		host[0] = '\0';
		int rc = sp_parse_hostport(good[i].s, host, sizeof host, &port);
		if (rc != 0 || strcmp(host, good[i].host) != 0 || port != good[i].port)
			SP_FAIL("sp_parse_hostport(\"%s\") = %d, \"%s\", %u", good[i].s, rc, host,
			        port);
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		port = 7;
		strcpy(host, "same");
		int rc = sp_parse_hostport(bad[i], host, sizeof host, &port);
		if (rc != -EINVAL || port != 7 || strcmp(host, "same") != 0)
			SP_FAIL("sp_parse_hostport(\"%s\") = %d, not -EINVAL", bad[i], rc);
	}
	SP_CHECK_EQ_INT(sp_parse_hostport(NULL, host, sizeof host, &port), -EINVAL);
	SP_CHECK_EQ_INT(sp_parse_hostport("abcdefgh:1", host, 8, &port), -ENOSPC);
	SP_CHECK_EQ_INT(sp_parse_hostport("abcdefg:1", host, 8, &port), 0);
	SP_CHECK(strcmp(host, "abcdefg") == 0);
	SP_CHECK_EQ_INT(sp_parse_hostport("[::1]:1", host, 3, &port), -ENOSPC);
	SP_CHECK_EQ_INT(sp_parse_hostport("[::1]:1", host, 4, &port), 0);
	SP_CHECK_EQ_INT(sp_parse_hostport("a:1", host, 0, &port), -ENOSPC);
}

/* Loads and frees many times with strings set from every source; ASan reports any leak. */
static void test_strings_freed(void)
{
	struct tcfg c;
	char err[256];

	write_file("{\"listen\": \"file:1\", \"tls_cert\": \"file.pem\"}");
	for (int i = 0; i < 50; i++) {
		int rc = LOAD(c, err, "-c", path, "--tls-cert", "flag.pem", "--listen", "f:2");
		SP_CHECK_EQ_INT(rc, 0);
		sp_config_free(opts, N_OPTS, &c);
		rc = LOAD(c, err, "-c", path, "--tls-cert", "flag.pem", "--workers", "x");
		SP_CHECK(rc < 0);
		sp_config_free(opts, N_OPTS, &c);
	}
}

int main(void)
{
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	SP_RUN(test_defaults);
	SP_RUN(test_file_values);
	SP_RUN(test_flag_beats_file);
	SP_RUN(test_bool_flags);
	SP_RUN(test_enum);
	SP_RUN(test_file_errors);
	SP_RUN(test_flag_errors);
	SP_RUN(test_int_bounds);
	SP_RUN(test_parse_size);
	SP_RUN(test_parse_duration);
	SP_RUN(test_actions_and_operands);
	SP_RUN(test_usage);
	SP_RUN(test_dump_roundtrip);
	SP_RUN(test_bad_tables);
	SP_RUN(test_hostport);
	SP_RUN(test_redis_url);
	SP_RUN(test_strings_freed);

	unlink(path);
	unlink(path2);
	if (rmdir(tmpdir) != 0)
		printf("# rmdir %s failed\n", tmpdir);
	return sp_test_done();
}
