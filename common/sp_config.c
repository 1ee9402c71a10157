/*
 * sp_config: defaults, then a flat JSON file, then command-line flags (see sp_config.h).
 *
 * sp_config_load() runs in five steps: check the option table (a bad table is a programming
 * error, reported like any other), store the defaults, walk argv once to find -c and the action
 * flags and to reject malformed flags, load the file, then walk argv again to apply the flag
 * values. Every value, from either source, goes through the same parser and bounds check.
 */
#include "sp_config.h"
#include "sp_log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN 63
#define QUOTED_MAX   96 /* bytes of a quoted untrusted key or value in a message */

/* Where a value comes from, for the prefix of an error message. */
typedef struct origin {
	const char *file; /* the config file, or NULL for a flag */
	const char *flag; /* the flag as written ("--workers", "-w"), flaglen bytes of it */
	int flaglen;
	char *err;
	size_t errlen;
} origin_t;

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static int fail_at(const origin_t *at, const sp_option_t *o, int rc, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	if (errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

/* "config FILE: key "name": <message>" or "option --flag: <message>". */
static int fail_at(const origin_t *at, const sp_option_t *o, int rc, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (at->errlen == 0)
		return rc;
	if (at->file != NULL)
		n = snprintf(at->err, at->errlen, "config %s: key \"%s\": ", at->file, o->name);
	else
		n = snprintf(at->err, at->errlen, "option %.*s: ", at->flaglen, at->flag);
	if (n >= 0 && (size_t)n < at->errlen) {
		va_start(ap, fmt);
		vsnprintf(at->err + n, at->errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return rc;
}

static void *field(void *cfg, const sp_option_t *o)
{
	return (char *)cfg + o->offset;
}

static const void *cfield(const void *cfg, const sp_option_t *o)
{
	return (const char *)cfg + o->offset;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static void quote(char *dst, size_t dstlen, const char *s)
{
	sp_log_quote(dst, dstlen, s, s != NULL ? strlen(s) : 0);
}

/* ---- number formats ---------------------------------------------------------------------- */

/* Decimal digits (and a '-' if allow_neg) up to *end; rejects an empty number and overflow. */
static int parse_i64_prefix(const char *s, bool allow_neg, int64_t *out, char **end)
{
	const char *p = s;

	if (allow_neg && *p == '-')
		p++;
	if (!is_digit(*p)) /* also rules out the spaces and '+' that strtoll would take */
		return -EINVAL;
	errno = 0;
	long long v = strtoll(s, end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	*out = v;
	return 0;
}

static int parse_int(const char *s, int64_t *out)
{
	char *end;
	int64_t v;
	int rc = parse_i64_prefix(s, true, &v, &end);

	if (rc < 0)
		return rc;
	if (*end != '\0')
		return -EINVAL;
	*out = v;
	return 0;
}

static int scale(int64_t v, int64_t mult, int64_t *out)
{
	if (v > INT64_MAX / mult)
		return -ERANGE;
	*out = v * mult;
	return 0;
}

int sp_parse_size(const char *s, int64_t *out)
{
	char *end;
	int64_t v, mult = 1;

	if (s == NULL)
		return -EINVAL;
	int rc = parse_i64_prefix(s, false, &v, &end);
	if (rc < 0)
		return rc;
	switch (*end) {
	case '\0':
		break;
	case 'k':
	case 'K':
		mult = INT64_C(1) << 10;
		end++;
		break;
	case 'm':
	case 'M':
		mult = INT64_C(1) << 20;
		end++;
		break;
	case 'g':
	case 'G':
		mult = INT64_C(1) << 30;
		end++;
		break;
	default:
		return -EINVAL;
	}
	if (*end != '\0')
		return -EINVAL;
	return scale(v, mult, out);
}

int sp_parse_duration_ms(const char *s, int64_t *out)
{
	char *end;
	int64_t v, mult = 1;

	if (s == NULL)
		return -EINVAL;
	int rc = parse_i64_prefix(s, false, &v, &end);
	if (rc < 0)
		return rc;
	if (strcmp(end, "ms") == 0 || *end == '\0')
		mult = 1;
	else if (strcmp(end, "s") == 0)
		mult = 1000;
	else if (strcmp(end, "m") == 0)
		mult = 60 * 1000;
	else if (strcmp(end, "h") == 0)
		mult = 60 * 60 * 1000;
	else
		return -EINVAL;
	return scale(v, mult, out);
}

int sp_parse_redis_url(const char *url, char *host, size_t hostlen, uint16_t *port, char *path,
                       size_t pathlen)
{
	if (!url || hostlen == 0 || pathlen == 0)
		return -EINVAL;
	host[0] = path[0] = '\0';
	*port = 0;
	if (strncmp(url, "unix:", 5) == 0) {
		const char *p = url + 5;

		if (strncmp(p, "//", 2) == 0)
			p += 2;
		if (!*p || strlen(p) >= pathlen)
			return -EINVAL;
		memcpy(path, p, strlen(p) + 1);
		return 0;
	}
	if (strncmp(url, "redis://", 8) == 0) {
		const char *hp = url + 8;

		if (strchr(hp, ':') || hp[0] == '[')
			return sp_parse_hostport(hp, host, hostlen, port) < 0 ? -EINVAL : 0;
		if (!*hp || strlen(hp) >= hostlen || strchr(hp, '/'))
			return -EINVAL;
		memcpy(host, hp, strlen(hp) + 1);
		*port = 6379;
		return 0;
	}
	return -EINVAL;
}

int sp_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port)
{
	const char *h, *colon;
	size_t hl;

	if (s == NULL)
		return -EINVAL;
	if (s[0] == '[') {
		char addr[INET6_ADDRSTRLEN];
		struct in6_addr in6;
		const char *rb = strchr(s, ']');

		if (rb == NULL || rb[1] != ':')
			return -EINVAL;
		h = s + 1;
		hl = (size_t)(rb - h);
		colon = rb + 1;
		if (hl == 0 || hl >= sizeof addr)
			return -EINVAL;
		memcpy(addr, h, hl);
		addr[hl] = '\0';
		if (inet_pton(AF_INET6, addr, &in6) != 1)
			return -EINVAL;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL || colon == s)
			return -EINVAL;
		h = s;
		hl = (size_t)(colon - s);
		/* A host name or IPv4 address; this also rejects IPv6 without brackets. */
		for (size_t i = 0; i < hl; i++) {
			char c = h[i];
			if (!is_digit(c) && !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') &&
			    c != '.' && c != '-' && c != '_')
				return -EINVAL;
		}
	}

	const char *p = colon + 1;
	size_t pl = strlen(p);
	unsigned v = 0;
	if (pl == 0 || pl > 5)
		return -EINVAL;
	for (size_t i = 0; i < pl; i++) {
		if (!is_digit(p[i]))
			return -EINVAL;
		v = v * 10 + (unsigned)(p[i] - '0');
	}
	if (v == 0 || v > 65535)
		return -EINVAL;
	if (hl >= hostlen)
		return -ENOSPC;
	memcpy(host, h, hl);
	host[hl] = '\0';
	*port = (uint16_t)v;
	return 0;
}

/* The shortest exact spelling: 65536 -> "64k", 1536 -> "1536". */
static void format_size(char *buf, size_t len, int64_t v)
{
	static const char units[] = "gmk";
	for (int i = 0; i < 3; i++) {
		int64_t m = INT64_C(1) << (10 * (3 - i));
		if (v != 0 && v % m == 0) {
			snprintf(buf, len, "%" PRId64 "%c", v / m, units[i]);
			return;
		}
	}
	snprintf(buf, len, "%" PRId64, v);
}

/* 30000 -> "30s", 1500 -> "1500ms". */
static void format_duration(char *buf, size_t len, int64_t v)
{
	static const struct {
		int64_t ms;
		const char *unit;
	} units[] = {{3600000, "h"}, {60000, "m"}, {1000, "s"}};
	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
		if (v != 0 && v % units[i].ms == 0) {
			snprintf(buf, len, "%" PRId64 "%s", v / units[i].ms, units[i].unit);
			return;
		}
	}
	snprintf(buf, len, "%" PRId64 "ms", v);
}

static void format_value(char *buf, size_t len, const sp_option_t *o, int64_t v)
{
	if (o->type == SP_OPT_SIZE)
		format_size(buf, len, v);
	else if (o->type == SP_OPT_DURATION)
		format_duration(buf, len, v);
	else
		snprintf(buf, len, "%" PRId64, v);
}

/* ---- the table ---------------------------------------------------------------------------- */

static size_t count_choices(const char *const *choices)
{
	size_t n = 0;
	while (choices[n] != NULL)
		n++;
	return n;
}

static int check_option(const sp_option_t *o, char *err, size_t errlen)
{
	const char *bad = NULL;
	size_t len = o->name != NULL ? strlen(o->name) : 0;

	if (len == 0 || len > NAME_MAX_LEN || !(o->name[0] >= 'a' && o->name[0] <= 'z'))
		bad = "name must be 1-63 bytes of [a-z0-9_] starting with a letter";
	for (size_t i = 0; bad == NULL && i < len; i++) {
		char c = o->name[i];
		if (!(c >= 'a' && c <= 'z') && !is_digit(c) && c != '_')
			bad = "name must be 1-63 bytes of [a-z0-9_] starting with a letter";
	}
	if (bad == NULL && strcmp(o->name, "config") == 0)
		bad = "\"config\" is reserved for -c/--config";
	if (bad == NULL && o->help == NULL)
		bad = "help is missing";
	char sn = o->short_name;
	if (bad == NULL && sn != 0 &&
	    (sn == 'c' || !((sn >= 'a' && sn <= 'z') || (sn >= 'A' && sn <= 'Z'))))
		bad = "short name must be a letter other than 'c'";
	if (bad == NULL) {
		switch (o->type) {
		case SP_OPT_INT:
		case SP_OPT_SIZE:
		case SP_OPT_DURATION:
			if (o->min > o->max || o->def < o->min || o->def > o->max)
				bad = "default outside [min, max]";
			else if (o->type != SP_OPT_INT && o->min < 0)
				bad = "sizes and durations need min >= 0";
			break;
		case SP_OPT_BOOL:
			if (o->def != 0 && o->def != 1)
				bad = "bool default must be 0 or 1";
			break;
		case SP_OPT_ENUM:
			if (o->choices == NULL || o->choices[0] == NULL || o->def < 0 ||
			    (size_t)o->def >= count_choices(o->choices))
				bad = "enum needs choices and a default index into them";
			break;
		case SP_OPT_STRING:
		case SP_OPT_ACTION:
			break;
		default:
			bad = "unknown type";
		}
	}
	if (bad != NULL)
		return fail(err, errlen, -EINVAL, "option table: %s: %s",
		            o->name != NULL ? o->name : "(null)", bad);
	return 0;
}

static int check_table(const sp_option_t *opts, size_t n_opts, char *err, size_t errlen)
{
	for (size_t i = 0; i < n_opts; i++) {
		int rc = check_option(&opts[i], err, errlen);
		if (rc < 0)
			return rc;
		for (size_t j = 0; j < i; j++) {
			if (strcmp(opts[i].name, opts[j].name) == 0 ||
			    (opts[i].short_name != 0 && opts[i].short_name == opts[j].short_name))
				return fail(err, errlen, -EINVAL,
				            "option table: %s: duplicate name or short name",
				            opts[i].name);
		}
	}
	return 0;
}

static const sp_option_t *find_key(const sp_option_t *opts, size_t n_opts, const char *key)
{
	for (size_t i = 0; i < n_opts; i++)
		if (strcmp(opts[i].name, key) == 0)
			return &opts[i];
	return NULL;
}

/* A flag name ("max-frame", len bytes) matches the option whose name has '_' for each '-'. */
static const sp_option_t *find_flag(const sp_option_t *opts, size_t n_opts, const char *flag,
                                    size_t len)
{
	for (size_t i = 0; i < n_opts; i++) {
		const char *name = opts[i].name;
		size_t k = 0;
		while (k < len && name[k] != '\0' &&
		       (flag[k] == '-' ? name[k] == '_' : flag[k] != '_' && flag[k] == name[k]))
			k++;
		if (k == len && name[k] == '\0')
			return &opts[i];
	}
	return NULL;
}

static const sp_option_t *find_short(const sp_option_t *opts, size_t n_opts, char c)
{
	for (size_t i = 0; i < n_opts; i++)
		if (opts[i].short_name == c)
			return &opts[i];
	return NULL;
}

/* ---- storing values ------------------------------------------------------------------------ */

static int store_string(const origin_t *at, const sp_option_t *o, void *cfg, const char *s)
{
	char **p = field(cfg, o);
	char *copy = NULL;

	if (s != NULL) {
		copy = strdup(s);
		if (copy == NULL)
			return fail_at(at, o, -ENOMEM, "out of memory");
	}
	free(*p);
	*p = copy;
	return 0;
}

static int store_int(const origin_t *at, const sp_option_t *o, void *cfg, int64_t v)
{
	char a[32], b[32];

	if (v < o->min || v > o->max) {
		format_value(a, sizeof a, o, v);
		format_value(b, sizeof b, o, v < o->min ? o->min : o->max);
		return fail_at(at, o, -ERANGE, "%s is %s %s", a,
		               v < o->min ? "below the minimum" : "above the maximum", b);
	}
	int64_t *p = field(cfg, o);
	*p = v;
	return 0;
}

static int store_enum(const origin_t *at, const sp_option_t *o, void *cfg, const char *s)
{
	char list[256], q[QUOTED_MAX];
	size_t n = 0;

	for (size_t i = 0; o->choices[i] != NULL; i++) {
		if (strcmp(s, o->choices[i]) == 0) {
			int *p = field(cfg, o);
			*p = (int)i;
			return 0;
		}
	}
	list[0] = '\0';
	for (size_t i = 0; o->choices[i] != NULL && n < sizeof list; i++) {
		int w = snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", o->choices[i]);
		if (w < 0)
			break;
		n += (size_t)w;
	}
	quote(q, sizeof q, s);
	return fail_at(at, o, -EINVAL, "%s is not one of %s", q, list);
}

/* A value given as text (a flag, or a JSON string for a size, duration or enum). */
static int store_text(const origin_t *at, const sp_option_t *o, void *cfg, const char *s)
{
	char q[QUOTED_MAX];
	int64_t v;
	int rc;

	switch (o->type) {
	case SP_OPT_STRING: {
		json_t *utf8 = json_string(s); /* jansson's validator: NULL if not UTF-8 */
		if (utf8 == NULL)
			return fail_at(at, o, -EINVAL, "value is not valid UTF-8");
		json_decref(utf8);
		return store_string(at, o, cfg, s);
	}
	case SP_OPT_INT:
		rc = parse_int(s, &v);
		quote(q, sizeof q, s);
		if (rc == -ERANGE)
			return fail_at(at, o, rc, "integer %s is out of range", q);
		if (rc < 0)
			return fail_at(at, o, rc, "invalid integer %s", q);
		return store_int(at, o, cfg, v);
	case SP_OPT_SIZE:
		rc = sp_parse_size(s, &v);
		quote(q, sizeof q, s);
		if (rc == -ERANGE)
			return fail_at(at, o, rc, "size %s is too large", q);
		if (rc < 0)
			return fail_at(at, o, rc,
			               "invalid size %s (bytes, or with a k, m or g suffix: 64k)",
			               q);
		return store_int(at, o, cfg, v);
	case SP_OPT_DURATION:
		rc = sp_parse_duration_ms(s, &v);
		quote(q, sizeof q, s);
		if (rc == -ERANGE)
			return fail_at(at, o, rc, "duration %s is too large", q);
		if (rc < 0)
			return fail_at(at, o, rc,
			               "invalid duration %s (milliseconds, or with a ms, s, m or h "
			               "suffix: 30s)",
			               q);
		return store_int(at, o, cfg, v);
	case SP_OPT_BOOL: {
		bool *p = field(cfg, o);
		if (strcmp(s, "true") == 0 || strcmp(s, "false") == 0) {
			*p = s[0] == 't';
			return 0;
		}
		quote(q, sizeof q, s);
		return fail_at(at, o, -EINVAL, "expected true or false, got %s", q);
	}
	case SP_OPT_ENUM:
		return store_enum(at, o, cfg, s);
	case SP_OPT_ACTION:
		break;
	}
	return fail_at(at, o, -EINVAL, "takes no value");
}

static const char *json_kind(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_ARRAY:
		return "an array";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
		return "an integer";
	case JSON_REAL:
		return "a real number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "a boolean";
	case JSON_NULL:
		break;
	}
	return "null";
}

static int store_json(const origin_t *at, const sp_option_t *o, void *cfg, const json_t *v)
{
	const char *want = "a string";

	switch (o->type) {
	case SP_OPT_STRING:
		if (json_is_string(v))
			return store_string(at, o, cfg, json_string_value(v));
		if (json_is_null(v))
			return store_string(at, o, cfg, NULL);
		want = "a string or null";
		break;
	case SP_OPT_INT:
		if (json_is_integer(v))
			return store_int(at, o, cfg, json_integer_value(v));
		want = "an integer";
		break;
	case SP_OPT_SIZE:
	case SP_OPT_DURATION:
		if (json_is_integer(v))
			return store_int(at, o, cfg, json_integer_value(v));
		if (json_is_string(v))
			return store_text(at, o, cfg, json_string_value(v));
		want = o->type == SP_OPT_SIZE
		               ? "an integer or a size like \"64k\""
		               : "an integer (milliseconds) or a duration like \"30s\"";
		break;
	case SP_OPT_BOOL:
		if (json_is_boolean(v)) {
			bool *p = field(cfg, o);
			*p = json_is_true(v);
			return 0;
		}
		want = "true or false";
		break;
	case SP_OPT_ENUM:
		if (json_is_string(v))
			return store_enum(at, o, cfg, json_string_value(v));
		break;
	case SP_OPT_ACTION:
		return fail_at(at, o, -EINVAL, "is a command-line flag, not a config key");
	}
	return fail_at(at, o, -EINVAL, "expected %s, got %s", want, json_kind(v));
}

static int load_file(const sp_option_t *opts, size_t n_opts, void *cfg, const char *path, char *err,
                     size_t errlen)
{
	origin_t at = {.file = path, .err = err, .errlen = errlen};
	json_error_t jerr;
	const char *key;
	json_t *val;
	int rc = 0;

	FILE *f = fopen(path, "re");
	if (f == NULL) {
		int e = errno;
		return fail(err, errlen, -e, "config %s: %s", path, strerror(e));
	}
	errno = 0;
	json_t *root = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
	int read_errno = ferror(f) ? (errno != 0 ? errno : EIO) : 0;
	fclose(f);
	if (root == NULL && read_errno != 0) /* jansson would call it an early end of file */
		return fail(err, errlen, -read_errno, "config %s: %s", path, strerror(read_errno));
	if (root == NULL) {
		if (jerr.line > 0)
			return fail(err, errlen, -EINVAL, "config %s: line %d, column %d: %s", path,
			            jerr.line, jerr.column, jerr.text);
		return fail(err, errlen, -EINVAL, "config %s: %s", path, jerr.text);
	}
	if (!json_is_object(root)) {
		rc = fail(err, errlen, -EINVAL, "config %s: top level must be an object, got %s",
		          path, json_kind(root));
		goto Exit;
	}
	json_object_foreach(root, key, val)
	{
		const sp_option_t *o = find_key(opts, n_opts, key);
		if (o == NULL) {
			char q[QUOTED_MAX];
			quote(q, sizeof q, key);
			rc = fail(err, errlen, -EINVAL, "config %s: unknown key %s", path, q);
			goto Exit;
		}
		rc = store_json(&at, o, cfg, val);
		if (rc < 0)
			goto Exit;
	}
Exit:
	json_decref(root);
	return rc;
}

/* ---- the command line ---------------------------------------------------------------------- */

/*
 * One pass over argv[1..argc). The scan pass (apply false) records the config path and the
 * action flags and rejects unknown flags, missing values and a second -c; the apply pass
 * stores the values. Either way *argi is where the operands start.
 */
static int walk_argv(const sp_option_t *opts, size_t n_opts, void *cfg, int argc, char **argv,
                     bool apply, const char **config_path, int *argi, char *err, size_t errlen)
{
	int i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		const sp_option_t *o = NULL;
		const char *val = NULL;
		bool config = false, negated = false;

		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		if (a[0] != '-' || a[1] == '\0')
			break;

		origin_t at = {
		        .flag = a, .flaglen = (int)strcspn(a, "="), .err = err, .errlen = errlen};
		if (at.flaglen > 80)
			at.flaglen = 80;
		if (a[1] != '-') {
			if (a[2] == '\0' && a[1] == 'c')
				config = true;
			else if (a[2] == '\0')
				o = find_short(opts, n_opts, a[1]);
		} else {
			const char *name = a + 2;
			size_t len = strcspn(name, "=");

			if (name[len] == '=')
				val = name + len + 1;
			if (len == 6 && memcmp(name, "config", 6) == 0) {
				config = true;
			} else {
				o = find_flag(opts, n_opts, name, len);
				if (o == NULL && len > 3 && memcmp(name, "no-", 3) == 0) {
					o = find_flag(opts, n_opts, name + 3, len - 3);
					if (o != NULL && o->type != SP_OPT_BOOL)
						o = NULL;
					negated = o != NULL;
				}
			}
		}
		if (!config && o == NULL)
			return fail(err, errlen, -EINVAL, "unknown option %.*s", at.flaglen, a);

		if (config || (o->type != SP_OPT_BOOL && o->type != SP_OPT_ACTION)) {
			if (val == NULL) {
				if (i + 1 >= argc)
					return fail(err, errlen, -EINVAL,
					            "option %.*s needs a value", at.flaglen, a);
				val = argv[++i];
			}
		} else if ((negated || o->type == SP_OPT_ACTION) && val != NULL) {
			return fail(err, errlen, -EINVAL, "option %.*s takes no value", at.flaglen,
			            a);
		}

		if (config) {
			if (!apply && *config_path != NULL)
				return fail(err, errlen, -EINVAL,
				            "option %.*s: config file given twice", at.flaglen, a);
			*config_path = val;
		} else if (o->type == SP_OPT_ACTION) {
			bool *p = field(cfg, o);
			*p = true;
		} else if (apply) {
			int rc;
			if (o->type == SP_OPT_BOOL && val == NULL) {
				bool *p = field(cfg, o);
				*p = !negated;
				rc = 0;
			} else {
				rc = store_text(&at, o, cfg, val);
			}
			if (rc < 0)
				return rc;
		}
	}
	*argi = i;
	return 0;
}

static int apply_defaults(const sp_option_t *opts, size_t n_opts, void *cfg)
{
	int rc = 0;

	for (size_t i = 0; i < n_opts; i++) {
		const sp_option_t *o = &opts[i];
		void *p = field(cfg, o);

		switch (o->type) {
		case SP_OPT_STRING: {
			char **s = p;
			*s = o->def_str != NULL ? strdup(o->def_str) : NULL;
			if (o->def_str != NULL && *s == NULL)
				rc = -ENOMEM;
			break;
		}
		case SP_OPT_INT:
		case SP_OPT_SIZE:
		case SP_OPT_DURATION:
			*(int64_t *)p = o->def;
			break;
		case SP_OPT_BOOL:
			*(bool *)p = o->def != 0;
			break;
		case SP_OPT_ENUM:
			*(int *)p = (int)o->def;
			break;
		case SP_OPT_ACTION:
			*(bool *)p = false;
			break;
		}
	}
	return rc;
}

int sp_config_load(const sp_option_t *opts, size_t n_opts, void *cfg, int argc, char **argv,
                   int *argi_out, char *err, size_t errlen)
{
	const char *path = NULL;
	int argi = argc > 0 ? argc : 1;
	int rc;

	if (errlen > 0)
		err[0] = '\0';
	if (argi_out != NULL)
		*argi_out = argi;
	if ((opts == NULL && n_opts > 0) || cfg == NULL || (argv == NULL && argc > 0))
		return fail(err, errlen, -EINVAL, "sp_config_load: invalid arguments");
	rc = check_table(opts, n_opts, err, errlen);
	if (rc < 0)
		return rc;
	rc = apply_defaults(opts, n_opts, cfg);
	if (rc < 0)
		return fail(err, errlen, rc, "out of memory");

	rc = walk_argv(opts, n_opts, cfg, argc, argv, false, &path, &argi, err, errlen);
	if (rc < 0)
		return rc;
	if (argi_out != NULL)
		*argi_out = argi;
	else if (argi < argc) {
		char q[QUOTED_MAX];
		quote(q, sizeof q, argv[argi]);
		return fail(err, errlen, -EINVAL, "unexpected argument %s", q);
	}
	if (path != NULL) {
		rc = load_file(opts, n_opts, cfg, path, err, errlen);
		if (rc < 0)
			return rc;
	}
	return walk_argv(opts, n_opts, cfg, argc, argv, true, &path, &argi, err, errlen);
}

void sp_config_free(const sp_option_t *opts, size_t n_opts, void *cfg)
{
	if (opts == NULL || cfg == NULL)
		return;
	for (size_t i = 0; i < n_opts; i++) {
		if (opts[i].type == SP_OPT_STRING) {
			char **s = field(cfg, &opts[i]);
			free(*s);
			*s = NULL;
		}
	}
}

/* ---- output ------------------------------------------------------------------------------- */

static void format_flag(char *buf, size_t len, const sp_option_t *o)
{
	static const char *const type_names[] = {
	        [SP_OPT_STRING] = " STRING",
	        [SP_OPT_INT] = " INT",
	        [SP_OPT_SIZE] = " SIZE",
	        [SP_OPT_DURATION] = " DURATION",
	};
	char dashed[NAME_MAX_LEN + 1];
	size_t n = 0;
	int w;

	for (size_t i = 0; o->name[i] != '\0' && i < NAME_MAX_LEN; i++)
		dashed[i] = o->name[i] == '_' ? '-' : o->name[i];
	dashed[strnlen(o->name, NAME_MAX_LEN)] = '\0';

	if (o->short_name != 0) {
		w = snprintf(buf, len, "-%c, ", o->short_name);
		n = w > 0 ? (size_t)w : 0;
	}
	switch (o->type) {
	case SP_OPT_BOOL:
		snprintf(buf + n, len - n, "--[no-]%s", dashed);
		break;
	case SP_OPT_ACTION:
		snprintf(buf + n, len - n, "--%s", dashed);
		break;
	case SP_OPT_ENUM:
		w = snprintf(buf + n, len - n, "--%s ", dashed);
		n += w > 0 ? (size_t)w : 0;
		for (size_t i = 0; o->choices != NULL && o->choices[i] != NULL && n < len; i++) {
			w = snprintf(buf + n, len - n, "%s%s", i ? "|" : "", o->choices[i]);
			n += w > 0 ? (size_t)w : 0;
		}
		break;
	default:
		snprintf(buf + n, len - n, "--%s%s", dashed, type_names[o->type]);
	}
}

static void format_default(char *buf, size_t len, const sp_option_t *o)
{
	char def[32], lo[32], hi[32];

	buf[0] = '\0';
	switch (o->type) {
	case SP_OPT_STRING:
		if (o->def_str != NULL)
			snprintf(buf, len, " (default: \"%s\")", o->def_str);
		break;
	case SP_OPT_BOOL:
		snprintf(buf, len, " (default: %s)", o->def ? "true" : "false");
		break;
	case SP_OPT_ENUM:
		if (o->choices != NULL && o->def >= 0 && (size_t)o->def < count_choices(o->choices))
			snprintf(buf, len, " (default: %s)", o->choices[o->def]);
		break;
	case SP_OPT_INT:
	case SP_OPT_SIZE:
	case SP_OPT_DURATION:
		format_value(def, sizeof def, o, o->def);
		format_value(lo, sizeof lo, o, o->min);
		format_value(hi, sizeof hi, o, o->max);
		if (o->min == INT64_MIN && o->max == INT64_MAX)
			snprintf(buf, len, " (default: %s)", def);
		else if (o->max == INT64_MAX)
			snprintf(buf, len, " (default: %s, min %s)", def, lo);
		else if (o->min == INT64_MIN)
			snprintf(buf, len, " (default: %s, max %s)", def, hi);
		else
			snprintf(buf, len, " (default: %s, range %s..%s)", def, lo, hi);
		break;
	case SP_OPT_ACTION:
		break;
	}
}

void sp_config_usage(FILE *out, const sp_option_t *opts, size_t n_opts)
{
	static const char config_flag[] = "-c, --config FILE";
	char left[256], right[128];
	int width = (int)strlen(config_flag);

	for (size_t i = 0; i < n_opts; i++) {
		format_flag(left, sizeof left, &opts[i]);
		if ((int)strlen(left) > width)
			width = (int)strlen(left);
	}
	if (width > 36)
		width = 36; /* a longer flag just pushes its own help to the right */
	fprintf(out, "  %-*s  read options from this JSON file; flags override it\n", width,
	        config_flag);
	for (size_t i = 0; i < n_opts; i++) {
		format_flag(left, sizeof left, &opts[i]);
		format_default(right, sizeof right, &opts[i]);
		fprintf(out, "  %-*s  %s%s\n", width, left, opts[i].help, right);
	}
}

static json_t *value_json(const sp_option_t *o, const void *cfg)
{
	const void *p = cfield(cfg, o);
	char buf[32];

	switch (o->type) {
	case SP_OPT_STRING: {
		const char *const *s = p;
		return *s != NULL ? json_string(*s) : json_null();
	}
	case SP_OPT_INT:
		return json_integer(*(const int64_t *)p);
	case SP_OPT_SIZE:
	case SP_OPT_DURATION:
		format_value(buf, sizeof buf, o, *(const int64_t *)p);
		return json_string(buf);
	case SP_OPT_BOOL:
		return json_boolean(*(const bool *)p);
	case SP_OPT_ENUM: {
		int idx = *(const int *)p;
		if (idx < 0 || (size_t)idx >= count_choices(o->choices))
			return json_null(); /* the program stored something odd */
		return json_string(o->choices[idx]);
	}
	case SP_OPT_ACTION:
		break;
	}
	return NULL;
}

int sp_config_dump_json(const sp_option_t *opts, size_t n_opts, const void *cfg, FILE *out)
{
	json_t *root = json_object();
	int rc = 0;

	if (root == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n_opts; i++) {
		if (opts[i].type == SP_OPT_ACTION)
			continue;
		/* NULL only on allocation failure or a non-UTF-8 string stored by the program. */
		if (json_object_set_new(root, opts[i].name, value_json(&opts[i], cfg)) < 0) {
			rc = -ENOMEM;
			goto Exit;
		}
	}
	if (json_dumpf(root, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0 ||
	    fputc('\n', out) == EOF || fflush(out) == EOF || ferror(out))
		rc = -EIO;
Exit:
	json_decref(root);
	return rc;
}
