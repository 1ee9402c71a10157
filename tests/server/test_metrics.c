/*
 * Unit tests for server/sp_metrics: updates, sums over worker sets (with negative gauge
 * parts), the label index mappings, and the Prometheus text rendering, which is parsed back
 * line by line and checked for format, completeness and values.
 */
#include "sp_metrics.h"

#include <ctype.h>
#include <limits.h>
#include <stdbool.h>

#include "sp_frame.h"
#include "sp_test.h"

static sp_metrics_t *new_set(void)
{
	sp_metrics_t *m = calloc(1, sizeof(*m));

	if (!m)
		abort();
	for (unsigned i = 0; i < SP_M_COUNT; i++)
		atomic_init(&m->v[i], 0);
	return m;
}

static uint64_t get(sp_metrics_t *m, unsigned i)
{
	return atomic_load(&m->v[i]);
}

static bool is_gauge(unsigned i)
{
	return i == SP_M_DEVICES || i == SP_M_STORE_UP || i == SP_M_CLUSTER_NODES ||
	       i == SP_M_HANDSHAKE_WAITING || i == SP_M_HANDSHAKE_IN_FLIGHT ||
	       i == SP_M_PROVIDER_CONNECTIONS ||
	       (i >= SP_M_CONNECTIONS && i <= SP_M_CONNECTIONS_LAST);
}

static void test_add_inc(void)
{
	sp_metrics_t *m = new_set();
	static uint64_t want[SP_M_COUNT];

	sp_metric_inc(m, SP_M_CONN_ACCEPTED);
	sp_metric_inc(m, SP_M_CONN_ACCEPTED);
	SP_CHECK_EQ_INT(get(m, SP_M_CONN_ACCEPTED), 2);
	want[SP_M_CONN_ACCEPTED] = 2;
	sp_metric_add(m, SP_M_BYTES_IN, 1000);
	sp_metric_add(m, SP_M_BYTES_IN, 24);
	sp_metric_add(m, SP_M_BYTES_IN, 0);
	SP_CHECK_EQ_INT(get(m, SP_M_BYTES_IN), 1024);
	want[SP_M_BYTES_IN] = 1024;

	/* Large values do not saturate or truncate. */
	sp_metric_add(m, SP_M_BYTES_OUT, INT64_MAX);
	sp_metric_add(m, SP_M_BYTES_OUT, 2);
	SP_CHECK(get(m, SP_M_BYTES_OUT) == (uint64_t)INT64_MAX + 2);
	want[SP_M_BYTES_OUT] = (uint64_t)INT64_MAX + 2;

	/* A gauge goes down, and a worker's part may go below zero (two's complement). */
	sp_metric_add(m, SP_M_DEVICES, 3);
	sp_metric_add(m, SP_M_DEVICES, -5);
	SP_CHECK(get(m, SP_M_DEVICES) == (uint64_t)-2);
	want[SP_M_DEVICES] = (uint64_t)-2;
	sp_metric_inc(m, SP_M_DEVICES);
	sp_metric_inc(m, SP_M_DEVICES);
	SP_CHECK_EQ_INT(get(m, SP_M_DEVICES), 0);
	want[SP_M_DEVICES] = 0;

	/* The last index works, and only the indexes touched changed. */
	sp_metric_inc(m, SP_M_COUNT - 1);
	want[SP_M_COUNT - 1]++;
	for (unsigned i = 0; i < SP_M_COUNT; i++)
		if (get(m, i) != want[i])
			SP_FAIL("index %u: %" PRIu64 ", want %" PRIu64, i, get(m, i), want[i]);
	free(m);
}

static void test_sum(void)
{
	sp_metrics_t *s[3] = {new_set(), new_set(), new_set()};
	unsigned ready = SP_M_CONNECTIONS + SP_STATE_READY;

	sp_metric_add(s[0], SP_M_MESSAGES_ACCEPTED, 5);
	sp_metric_add(s[1], SP_M_MESSAGES_ACCEPTED, 7);
	sp_metric_add(s[2], SP_M_MESSAGES_ACCEPTED, 30);
	SP_CHECK_EQ_INT(sp_metrics_sum(s, 3, SP_M_MESSAGES_ACCEPTED), 42);
	SP_CHECK_EQ_INT(sp_metrics_sum(s, 2, SP_M_MESSAGES_ACCEPTED), 12);
	SP_CHECK_EQ_INT(sp_metrics_sum(s + 2, 1, SP_M_MESSAGES_ACCEPTED), 30);
	SP_CHECK_EQ_INT(sp_metrics_sum(s, 0, SP_M_MESSAGES_ACCEPTED), 0);
	SP_CHECK_EQ_INT(sp_metrics_sum(NULL, 0, SP_M_MESSAGES_ACCEPTED), 0);

	/* A device registered on one worker and unregistered on another: parts +1 and -1. */
	sp_metric_add(s[0], SP_M_DEVICES, 4);
	sp_metric_add(s[1], SP_M_DEVICES, -3);
	sp_metric_add(s[2], SP_M_DEVICES, 1);
	SP_CHECK_EQ_INT(sp_metrics_sum(s, 3, SP_M_DEVICES), 2);
	SP_CHECK_EQ_INT(sp_metrics_sum(s + 1, 1, SP_M_DEVICES), -3);
	SP_CHECK_EQ_INT(sp_metrics_sum(s + 1, 2, SP_M_DEVICES), -2);

	sp_metric_add(s[0], ready, -10);
	sp_metric_add(s[1], ready, -10);
	sp_metric_add(s[2], ready, 25);
	SP_CHECK_EQ_INT(sp_metrics_sum(s, 3, ready), 5);
	SP_CHECK_EQ_INT(sp_metrics_sum(s, 2, ready), -20);

	/* Neighbouring indexes are untouched. */
	SP_CHECK_EQ_INT(sp_metrics_sum(s, 3, ready - 1), 0);
	SP_CHECK_EQ_INT(sp_metrics_sum(s, 3, ready + 1), 0);
	for (int i = 0; i < 3; i++)
		free(s[i]);
}

static void test_frame_index(void)
{
	static const unsigned unknown[] = {0,       SP_FRAME_TYPE_MAX + 1, 0x7F, 0xFF, 0x100, 0x101,
	                                   UINT_MAX};

	for (unsigned t = 1; t <= SP_FRAME_TYPE_MAX; t++)
		SP_CHECK_EQ_INT(sp_metric_frame_index(t),
		                strcmp(sp_frame_type_name(t), "?") == 0 ? 0 : t); /* reserved: 0 */
	for (size_t k = 0; k < sizeof(unknown) / sizeof(unknown[0]); k++)
		SP_CHECK_EQ_INT(sp_metric_frame_index(unknown[k]), 0);
	SP_CHECK_EQ_INT(SP_FRAME_TYPE_MAX + 1, SP_FRAME_LABELS);
}

static void test_status_index(void)
{
	const unsigned internal = sp_metric_status_index(SP_ST_INTERNAL_ERROR);
	unsigned used[SP_STATUS_LABELS] = {0};
	unsigned defined = 0;

	SP_CHECK(internal < SP_STATUS_LABELS);
	for (unsigned s = 0; s <= 0x1FF; s++) {
		unsigned i = sp_metric_status_index(s);
		bool known = s <= 0xFF && strcmp(sp_status_name(s), "?") != 0;

		if (i >= SP_STATUS_LABELS) {
			SP_FAIL("status %#x: index %u out of range", s, i);
			continue;
		}
		if (known) {
			defined++;
			if (used[i]++)
				SP_FAIL("status %#x: index %u shared", s, i);
		} else if (i != internal) {
			SP_FAIL("unknown status %#x: index %u, not INTERNAL_ERROR's %u", s, i,
			        internal);
		}
	}
	SP_CHECK_EQ_INT(defined, SP_STATUS_LABELS);
	SP_CHECK_EQ_INT(sp_metric_status_index(UINT_MAX), internal);
	SP_CHECK_EQ_INT(sp_metric_status_index(0x100 | SP_ST_QUEUED), internal);
	SP_CHECK(sp_metric_status_index(SP_ST_DELIVERED) != sp_metric_status_index(SP_ST_QUEUED));
}

/* Codes 1..SP_ERROR_LABELS and types 1..SP_FRAME_TYPE_MAX reserved for other features: no
 * name, never counted, not rendered. */
static unsigned n_reserved_errors(void)
{
	unsigned n = 0;

	for (unsigned c = 1; c <= SP_ERROR_LABELS; c++)
		n += strcmp(sp_error_name(c), "?") == 0;
	return n;
}

static unsigned n_reserved_types(void)
{
	unsigned n = 0;

	for (unsigned t = 1; t <= SP_FRAME_TYPE_MAX; t++)
		n += strcmp(sp_frame_type_name(t), "?") == 0;
	return n;
}

/* Whether metric index i is one of those reserved slots. */
static bool reserved_index(unsigned i)
{
	if (i > SP_M_FRAMES_IN && i <= SP_M_FRAMES_IN_LAST)
		return strcmp(sp_frame_type_name(i - SP_M_FRAMES_IN), "?") == 0;
	if (i > SP_M_FRAMES_OUT && i <= SP_M_FRAMES_OUT_LAST)
		return strcmp(sp_frame_type_name(i - SP_M_FRAMES_OUT), "?") == 0;
	if (i >= SP_M_ERRORS_SENT && i <= SP_M_ERRORS_SENT_LAST)
		return strcmp(sp_error_name(i - SP_M_ERRORS_SENT + 1), "?") == 0;
	return false;
}

static void test_error_index(void)
{
	const unsigned internal = SP_ERR_INTERNAL_ERROR - 1;
	unsigned defined = 0;

	for (unsigned c = 0; c <= 0x10000; c++) {
		unsigned i = sp_metric_error_index(c);
		bool known = strcmp(sp_error_name(c), "?") != 0;

		if (i >= SP_ERROR_LABELS) {
			SP_FAIL("code %u: index %u out of range", c, i);
			continue;
		}
		if (known) {
			defined++;
			if (i != c - 1)
				SP_FAIL("code %u: index %u", c, i);
		} else if (i != internal) {
			SP_FAIL("unknown code %u: index %u, not INTERNAL_ERROR's %u", c, i,
			        internal);
		}
	}
	SP_CHECK_EQ_INT(defined, SP_ERROR_LABELS - n_reserved_errors());
	SP_CHECK_EQ_INT(sp_metric_error_index(UINT_MAX), internal);
	SP_CHECK_EQ_INT(sp_metric_error_index(SP_ERR_NOSPACE), internal);
	SP_CHECK_EQ_INT(sp_metric_error_index(SP_ERR_ANONYMOUS), SP_ERROR_LABELS - 1);
}

/* ---- Parsing the rendered text ---- */

#define MAX_LINES 512

struct sample {
	char name[128];
	char label[64]; /* "" if none */
	char value[128];
	char series[320];
	double v;
};

struct family {
	char name[128];
	char type[16];
	bool help, typed, sampled, closed;
};

struct parsed {
	struct sample s[MAX_LINES];
	size_t n;
	struct family f[MAX_LINES];
	size_t nf;
	size_t errors;
};

static bool name_char(int c, bool first, bool colon)
{
	return c == '_' || isalpha(c) || (!first && isdigit(c)) || (colon && c == ':');
}

/* Length of the metric (colon) or label name at p, 0 if none. */
static size_t name_len(const char *p, bool colon)
{
	size_t n = 0;

	while (name_char((unsigned char)p[n], n == 0, colon))
		n++;
	return n;
}

static struct family *family_of(struct parsed *P, const char *name, size_t len)
{
	for (size_t i = 0; i < P->nf; i++)
		if (strlen(P->f[i].name) == len && memcmp(P->f[i].name, name, len) == 0)
			return &P->f[i];
	if (P->nf == MAX_LINES || len >= sizeof(P->f[0].name))
		abort();
	memset(&P->f[P->nf], 0, sizeof(P->f[0]));
	memcpy(P->f[P->nf].name, name, len);
	return &P->f[P->nf++];
}

#define PERR(P, ...)                                                                               \
	do {                                                                                       \
		SP_FAIL(__VA_ARGS__);                                                              \
		(P)->errors++;                                                                     \
	} while (0)

static void parse_comment(struct parsed *P, const char *line, size_t lineno)
{
	bool help = strncmp(line, "# HELP ", 7) == 0, type = strncmp(line, "# TYPE ", 7) == 0;
	const char *p = line + 7;
	size_t n;
	struct family *f;

	if (!help && !type)
		return; /* a plain comment */
	n = name_len(p, true);
	if (!n || p[n] != ' ' || !p[n + 1]) {
		PERR(P, "line %zu: bad HELP/TYPE: %s", lineno, line);
		return;
	}
	f = family_of(P, p, n);
	if (f->sampled)
		PERR(P, "line %zu: %s after samples of %s", lineno, help ? "HELP" : "TYPE",
		     f->name);
	if (help) {
		if (f->help)
			PERR(P, "line %zu: second HELP for %s", lineno, f->name);
		f->help = true;
		return;
	}
	if (f->typed)
		PERR(P, "line %zu: second TYPE for %s", lineno, f->name);
	f->typed = true;
	snprintf(f->type, sizeof(f->type), "%s", p + n + 1);
	if (strcmp(f->type, "counter") != 0 && strcmp(f->type, "gauge") != 0)
		PERR(P, "line %zu: type \"%s\" for %s", lineno, f->type, f->name);
}

static void parse_sample(struct parsed *P, const char *line, size_t lineno)
{
	struct sample *s = &P->s[P->n];
	const char *p = line, *q;
	struct family *f;
	char *end;
	size_t n = name_len(p, true);

	if (!n || n >= sizeof(s->name) || (p[n] != ' ' && p[n] != '{')) {
		PERR(P, "line %zu: not a sample: %s", lineno, line);
		return;
	}
	memset(s, 0, sizeof(*s));
	memcpy(s->name, p, n);
	p += n;
	if (*p == '{') {
		/* Exactly one label="value": the families here have at most one label. */
		size_t ln = name_len(p + 1, false);

		if (!ln || p[1 + ln] != '=' || p[2 + ln] != '"') {
			PERR(P, "line %zu: bad label: %s", lineno, line);
			return;
		}
		q = p + 3 + ln;
		while (*q && *q != '"' && *q != '\\')
			q++;
		if (*q != '"' || q[1] != '}' || q == p + 3 + ln ||
		    (size_t)(q + 2 - p) >= sizeof(s->label)) {
			PERR(P, "line %zu: bad label value: %s", lineno, line);
			return;
		}
		memcpy(s->label, p, (size_t)(q + 2 - p)); /* "{name=\"value\"}" */
		p = q + 2;
	}
	if (*p != ' ' || !p[1] || isspace((unsigned char)p[1])) {
		PERR(P, "line %zu: no value: %s", lineno, line);
		return;
	}
	snprintf(s->value, sizeof(s->value), "%s", p + 1);
	s->v = strtod(s->value, &end);
	if (end == s->value || *end) {
		PERR(P, "line %zu: bad value \"%s\"", lineno, s->value);
		return;
	}
	{
		/* name and label always fit (128 + 64 < 320); memcpy of distinct members keeps
		 * gcc's -Wrestrict (which misreads snprintf into an array element) quiet. */
		size_t nl = strlen(s->name), ll = strlen(s->label);

		memcpy(s->series, s->name, nl);
		memcpy(s->series + nl, s->label, ll + 1);
	}

	f = family_of(P, s->name, strlen(s->name));
	if (!f->help || !f->typed)
		PERR(P, "line %zu: %s has no HELP or TYPE before its samples", lineno, s->name);
	if (f->closed)
		PERR(P, "line %zu: samples of %s are not together", lineno, s->name);
	for (size_t i = 0; i < P->nf; i++)
		if (&P->f[i] != f && P->f[i].sampled)
			P->f[i].closed = true;
	f->sampled = true;
	if (strcmp(f->type, "counter") == 0) {
		/* Counters are whole and non-negative, and named *_total. */
		const char *c = s->value;

		while (isdigit((unsigned char)*c))
			c++;
		if (*c || c == s->value)
			PERR(P, "line %zu: counter value \"%s\"", lineno, s->value);
		n = strlen(s->name);
		if (n < 6 || strcmp(s->name + n - 6, "_total") != 0)
			PERR(P, "line %zu: counter %s not named *_total", lineno, s->name);
	}
	if (strstr(s->label, "\"?\"") || strstr(s->label, "=\"\""))
		PERR(P, "line %zu: label without a name: %s", lineno, line);
	for (size_t i = 0; i < P->n; i++)
		if (strcmp(P->s[i].series, s->series) == 0)
			PERR(P, "line %zu: duplicate series %s", lineno, s->series);
	P->n++;
}

/* Renders and parses; P->errors counts format violations (each already reported). */
static void render_parse(struct parsed *P, sp_metrics_t *const *sets, size_t n,
                         const struct sp_gauge *extra, size_t n_extra)
{
	char *buf = NULL, *line, *save = NULL;
	size_t len = 0, lineno = 0;
	FILE *out = open_memstream(&buf, &len);

	if (!out)
		abort();
	sp_metrics_render(out, sets, n, extra, n_extra);
	fclose(out);
	memset(P, 0, sizeof(*P));
	if (!len || buf[len - 1] != '\n')
		PERR(P, "output does not end with a newline");
	if (memchr(buf, '\0', len) || strchr(buf, '\r'))
		PERR(P, "output holds NUL or CR");
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		lineno++;
		if (P->n == MAX_LINES)
			abort();
		if (line[0] == '#')
			parse_comment(P, line, lineno);
		else
			parse_sample(P, line, lineno);
	}
	/* strtok_r skips empty lines: count them separately. */
	for (size_t i = 1; i < len; i++)
		if (buf[i] == '\n' && buf[i - 1] == '\n')
			PERR(P, "empty line in the output");
	for (size_t i = 0; i < P->nf; i++)
		if (!P->f[i].help || !P->f[i].typed || !P->f[i].sampled)
			PERR(P, "family %s: help %d, type %d, samples %d", P->f[i].name,
			     P->f[i].help, P->f[i].typed, P->f[i].sampled);
	free(buf);
}

static const struct sample *find(const struct parsed *P, const char *series)
{
	for (size_t i = 0; i < P->n; i++)
		if (strcmp(P->s[i].series, series) == 0)
			return &P->s[i];
	return NULL;
}

/* The value of series, or -12345 (with a failure) if it is missing. */
static double value_of(const struct parsed *P, const char *series)
{
	const struct sample *s = find(P, series);

	if (!s) {
		SP_FAIL("series %s missing", series);
		return -12345;
	}
	return s->v;
}

static const char *family_type(const struct parsed *P, const char *name)
{
	for (size_t i = 0; i < P->nf; i++)
		if (strcmp(P->f[i].name, name) == 0)
			return P->f[i].type;
	return "";
}

/* A distinct expected value per metric index. */
static int64_t expect_of(unsigned i)
{
	return 1000 * ((int64_t)i + 1) + 7;
}

/*
 * Every index gets its own value, split over three worker sets (gauges with negative parts,
 * one set idle): the rendered samples must be exactly those values, each once.
 */
static void test_render_complete(void)
{
	static struct parsed P;
	sp_metrics_t *s[3] = {new_set(), new_set(), new_set()};
	unsigned hits[SP_M_COUNT] = {0};

	for (unsigned i = 0; i < SP_M_COUNT; i++) {
		if (reserved_index(i))
			continue;
		if (is_gauge(i)) {
			sp_metric_add(s[0], i, 2 * expect_of(i));
			sp_metric_add(s[2], i, -expect_of(i));
		} else {
			sp_metric_add(s[0], i, i + 1);
			sp_metric_add(s[2], i, expect_of(i) - (i + 1));
		}
	}
	render_parse(&P, s, 3, NULL, 0);
	SP_CHECK_EQ_INT(P.errors, 0);
	SP_CHECK_EQ_INT(P.n, SP_M_COUNT - 2 * n_reserved_types() - n_reserved_errors());
	for (size_t k = 0; k < P.n; k++) {
		double v = P.s[k].v;
		long long i = (long long)(v - 7) / 1000 - 1;

		if (i < 0 || i >= SP_M_COUNT || v != (double)expect_of((unsigned)i)) {
			SP_FAIL("%s has value %s, which belongs to no index", P.s[k].series,
			        P.s[k].value);
			continue;
		}
		hits[i]++;
		if (is_gauge((unsigned)i) != (strcmp(family_type(&P, P.s[k].name), "gauge") == 0))
			SP_FAIL("%s (index %lld): TYPE %s", P.s[k].series, i,
			        family_type(&P, P.s[k].name));
	}
	for (unsigned i = 0; i < SP_M_COUNT; i++)
		if (hits[i] != (reserved_index(i) ? 0u : 1u))
			SP_FAIL("metric index %u rendered %u times", i, hits[i]);

	/* A few families spelled out. */
	SP_CHECK(value_of(&P, "sealpush_frames_received_total{type=\"SEND\"}") ==
	         (double)expect_of(SP_M_FRAMES_IN + SP_SEND));
	SP_CHECK(value_of(&P, "sealpush_frames_sent_total{type=\"DELIVER\"}") ==
	         (double)expect_of(SP_M_FRAMES_OUT + SP_DELIVER));
	SP_CHECK(value_of(&P, "sealpush_connections{state=\"ready\"}") ==
	         (double)expect_of(SP_M_CONNECTIONS + SP_STATE_READY));
	SP_CHECK(value_of(&P, "sealpush_devices_connected") == (double)expect_of(SP_M_DEVICES));
	SP_CHECK(value_of(&P, "sealpush_connections_accepted_total") ==
	         (double)expect_of(SP_M_CONN_ACCEPTED));
	SP_CHECK(value_of(&P, "sealpush_connections_refused_total{reason=\"draining\"}") ==
	         (double)expect_of(SP_M_CONN_REFUSED_DRAIN));
	SP_CHECK(value_of(&P, "sealpush_connections_closed_total{reason=\"slow_consumer\"}") ==
	         (double)expect_of(SP_M_CONN_CLOSED + SP_CLOSE_SLOW_CONSUMER));
	SP_CHECK(value_of(&P, "sealpush_handshake_failures_total{cause=\"unknown_ca\"}") ==
	         (double)expect_of(SP_M_HANDSHAKE_FAIL + SP_HS_UNKNOWN_CA));
	SP_CHECK(value_of(&P, "sealpush_limit_hits_total{limit=\"send_rate\"}") ==
	         (double)expect_of(SP_M_LIMIT_HITS + SP_LIMIT_SEND_RATE));
	SP_CHECK(value_of(&P, "sealpush_reload_failures_total") ==
	         (double)expect_of(SP_M_RELOADS_FAILED));
	SP_CHECK_EQ_INT(strcmp(family_type(&P, "sealpush_connections"), "gauge"), 0);
	SP_CHECK_EQ_INT(strcmp(family_type(&P, "sealpush_frames_received_total"), "counter"), 0);
	for (int i = 0; i < 3; i++)
		free(s[i]);
}

/* Counting through the index functions lands on the series labelled with that name. */
static void test_render_labels(void)
{
	static struct parsed P;
	sp_metrics_t *s[2] = {new_set(), new_set()};
	char series[256];

	for (unsigned t = 0; t <= 0xFF; t++) {
		sp_metric_add(s[t % 2], SP_M_FRAMES_IN + sp_metric_frame_index(t), t + 1);
		sp_metric_inc(s[t % 2], SP_M_FRAMES_OUT + sp_metric_frame_index(t));
		sp_metric_add(s[t % 2], SP_M_SEND_RESULTS + sp_metric_status_index(t), t + 1);
	}
	for (unsigned c = 0; c <= 100; c++)
		sp_metric_add(s[c % 2], SP_M_ERRORS_SENT + sp_metric_error_index(c), c + 1);
	render_parse(&P, s, 2, NULL, 0);
	SP_CHECK_EQ_INT(P.errors, 0);

	for (unsigned t = 1; t <= SP_FRAME_TYPE_MAX; t++) {
		if (strcmp(sp_frame_type_name(t), "?") == 0)
			continue; /* reserved: counted as unknown, below */
		snprintf(series, sizeof(series), "sealpush_frames_received_total{type=\"%s\"}",
		         sp_frame_type_name(t));
		SP_CHECK(value_of(&P, series) == t + 1);
		snprintf(series, sizeof(series), "sealpush_frames_sent_total{type=\"%s\"}",
		         sp_frame_type_name(t));
		SP_CHECK(value_of(&P, series) == 1);
	}
	/* Type 0 and 11..255: sum of t + 1 over those. */
	{
		double unknown = 1;

		for (unsigned t = 1; t <= 0xFF; t++)
			if (t > SP_FRAME_TYPE_MAX || strcmp(sp_frame_type_name(t), "?") == 0)
				unknown += t + 1;
		SP_CHECK(value_of(&P, "sealpush_frames_received_total{type=\"unknown\"}") ==
		         unknown);
		SP_CHECK(value_of(&P, "sealpush_frames_sent_total{type=\"unknown\"}") ==
		         256 - SP_FRAME_TYPE_MAX + n_reserved_types());
	}

	/* Statuses: each defined one under its name; the rest folded into INTERNAL_ERROR. */
	{
		double internal = 0;

		for (unsigned t = 0; t <= 0xFF; t++) {
			if (strcmp(sp_status_name(t), "?") == 0 || t == SP_ST_INTERNAL_ERROR) {
				internal += t + 1;
				continue;
			}
			snprintf(series, sizeof(series),
			         "sealpush_send_results_total{status=\"%s\"}", sp_status_name(t));
			SP_CHECK(value_of(&P, series) == t + 1);
		}
		SP_CHECK(value_of(&P, "sealpush_send_results_total{status=\"INTERNAL_ERROR\"}") ==
		         internal);
	}
	{
		double internal = 0;

		for (unsigned c = 0; c <= 100; c++) {
			if (strcmp(sp_error_name(c), "?") == 0 || c == SP_ERR_INTERNAL_ERROR) {
				internal += c + 1;
				continue;
			}
			snprintf(series, sizeof(series), "sealpush_errors_sent_total{code=\"%s\"}",
			         sp_error_name(c));
			SP_CHECK(value_of(&P, series) == c + 1);
		}
		SP_CHECK(value_of(&P, "sealpush_errors_sent_total{code=\"INTERNAL_ERROR\"}") ==
		         internal);
	}
	free(s[0]);
	free(s[1]);
}

static void test_render_extra(void)
{
	static struct parsed P;
	sp_metrics_t *s = new_set();
	const struct sp_gauge extra[] = {
	        {"sealpush_uptime_seconds", "Seconds since the relay started.", 12.5},
	        {"sealpush_redis_up", "Whether the Redis health check passes.", 1},
	        {"sealpush_test_tiny", "A value with no short decimal form.", 0.1},
	        {"sealpush_test_huge", "A large value.", 1e20},
	        {"sealpush_test_negative", "A negative value.", -3.25},
	        {"sealpush_test_third", "A value that needs 17 digits.", 1.0 / 3.0},
	        {"sealpush_test_precise", "Another.", 86400.123456789},
	};
	const size_t n_extra = sizeof(extra) / sizeof(extra[0]);

	sp_metric_inc(s, SP_M_CONN_ACCEPTED);
	render_parse(&P, &s, 1, extra, n_extra);
	SP_CHECK_EQ_INT(P.errors, 0);
	SP_CHECK_EQ_INT(P.n, SP_M_COUNT - 2 * n_reserved_types() - n_reserved_errors() + n_extra);
	for (size_t k = 0; k < n_extra; k++) {
		SP_CHECK(value_of(&P, extra[k].name) == extra[k].value);
		SP_CHECK_EQ_INT(strcmp(family_type(&P, extra[k].name), "gauge"), 0);
	}
	SP_CHECK(value_of(&P, "sealpush_connections_accepted_total") == 1);
	/* The extras come after the built-in families. */
	SP_CHECK_EQ_INT(strcmp(P.s[P.n - n_extra].name, extra[0].name), 0);

	/* No extras, and no sets at all: every series is there, at zero. */
	render_parse(&P, NULL, 0, NULL, 0);
	SP_CHECK_EQ_INT(P.errors, 0);
	SP_CHECK_EQ_INT(P.n, SP_M_COUNT - 2 * n_reserved_types() - n_reserved_errors());
	for (size_t k = 0; k < P.n; k++)
		if (P.s[k].v != 0)
			SP_FAIL("%s is %s with no sets", P.s[k].series, P.s[k].value);
	free(s);
}

int main(void)
{
	SP_RUN(test_add_inc);
	SP_RUN(test_sum);
	SP_RUN(test_frame_index);
	SP_RUN(test_status_index);
	SP_RUN(test_error_index);
	SP_RUN(test_render_complete);
	SP_RUN(test_render_labels);
	SP_RUN(test_render_extra);
	return sp_test_done();
}
