/*
 * sp_config: table-driven configuration for sealpush programs.
 *
 * A program describes its options once, in a const table of sp_option_t, each naming a field
 * of the program's own config struct:
 *
 *	struct cfg { char *listen; int64_t workers, max_frame, idle_ms; bool tls; int log_level;
 *		     bool help, version, check_config; };
 *	static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
 *	static const sp_option_t opts[] = {
 *		SP_OPTION_STRING(struct cfg, listen, "0.0.0.0:443", "address to listen on"),
 *		SP_OPTION_INT(struct cfg, workers, 4, 1, 256, "worker threads"),
 *		SP_OPTION_SIZE(struct cfg, max_frame, 65536, 4096, 16 << 20, "largest frame"),
 *		SP_OPTION_DURATION(struct cfg, idle_ms, 30000, 1000, 3600000, "idle timeout"),
 *		SP_OPTION_BOOL(struct cfg, tls, true, "serve TLS"),
 *		SP_OPTION_ENUM(struct cfg, log_level, SP_LOG_INFO, levels, "log threshold"),
 *		SP_OPTION_ACTION(struct cfg, help, 'h', "show this help and exit"),
 *		SP_OPTION_ACTION(struct cfg, version, 0, "show the version and exit"),
 *		SP_OPTION_ACTION(struct cfg, check_config, 0, "print the config and exit"),
 *	};
 *
 * sp_config_load() then fills the struct from, lowest precedence first: the table's defaults,
 * the JSON file of -c FILE / --config FILE (a flat object keyed by option name), and the
 * command-line flags (--max-frame 64k, --max-frame=64k, --tls / --no-tls / --tls=false).
 * Flags win over the file wherever -c appears. To reload (SIGHUP), call sp_config_load() again
 * with the same argv into a fresh struct: it re-reads the file and re-applies the flags.
 *
 * Action flags (--help, -h, --version, --check-config) are things the program does rather than
 * settings. The program declares them in the same table as SP_OPT_ACTION entries pointing at
 * bool fields, and sp_config_load() reports each one it sees by setting its field. They are
 * recorded in a first pass over argv, before the file is read, so --help and --version are
 * reported even when the config file is missing or broken: check them before the return
 * value. They are not config keys (a file naming one is an error) and are not dumped.
 *
 * Non-option arguments: parsing stops at the first argument that does not start with '-'
 * (or "-" itself), or after "--"; sp_config_load() reports where via *argi_out. A program that
 * takes no operands passes argi_out NULL and such an argument becomes an error.
 *
 * Field types: STRING char * (owned by the config, NULL when unset), INT / SIZE / DURATION
 * int64_t, BOOL bool, ENUM int (index into choices), ACTION bool. The SP_OPTION_* macros check
 * the field's type at compile time and name the option after the field.
 */
#ifndef SP_CONFIG_H
#define SP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum sp_opt_type {
	SP_OPT_STRING,   /* char *; JSON string or null; any flag value (valid UTF-8) */
	SP_OPT_INT,      /* int64_t in [min, max]; JSON integer; decimal flag value */
	SP_OPT_BOOL,     /* bool; JSON true/false; --name, --no-name, --name=true|false */
	SP_OPT_ENUM,     /* int index into choices; JSON string; flag value one of choices */
	SP_OPT_SIZE,     /* int64_t bytes in [min, max]; integer or "64k"/"16M"/"1g" (x1024) */
	SP_OPT_DURATION, /* int64_t ms in [min, max]; integer ms or "250ms"/"30s"/"5m"/"1h" */
	SP_OPT_ACTION,   /* bool, command line only, set when the flag is present */
} sp_opt_type_t;

typedef struct sp_option {
	const char *name; /* snake_case [a-z0-9_], <= 63 bytes; flag --name-with-dashes */
	sp_opt_type_t type;
	size_t offset;       /* offsetof(struct, field) of the field the option fills */
	int64_t def;         /* default: INT/SIZE/DURATION value, BOOL 0/1, ENUM index */
	const char *def_str; /* STRING default (strdup'd on load), NULL for none */
	int64_t min, max;    /* INT/SIZE/DURATION bounds, inclusive; SIZE/DURATION min >= 0 */
	const char *const *choices; /* ENUM: the allowed strings, NULL-terminated */
	char short_name;            /* optional one-letter alias ('h' for -h), 0 for none */
	const char *help;           /* one line for sp_config_usage() */
} sp_option_t;

/* Offset of st.field, failing to compile unless the field has type T. */
#define SP_OPT_OFFSET_(st, field, T)                                                               \
	(offsetof(st, field) + 0 * sizeof(char[_Generic(((st *)0)->field, T : 1, default : -1)]))

#define SP_OPTION_STRING(st, field, def_, help_)                                                   \
	{                                                                                          \
		.name = #field, .type = SP_OPT_STRING,                                             \
		.offset = SP_OPT_OFFSET_(st, field, char *), .def_str = (def_), .help = (help_)    \
	}
#define SP_OPTION_INT(st, field, def_, min_, max_, help_)                                          \
	{                                                                                          \
		.name = #field, .type = SP_OPT_INT, .offset = SP_OPT_OFFSET_(st, field, int64_t),  \
		.def = (def_), .min = (min_), .max = (max_), .help = (help_)                       \
	}
#define SP_OPTION_SIZE(st, field, def_, min_, max_, help_)                                         \
	{                                                                                          \
		.name = #field, .type = SP_OPT_SIZE, .offset = SP_OPT_OFFSET_(st, field, int64_t), \
		.def = (def_), .min = (min_), .max = (max_), .help = (help_)                       \
	}
#define SP_OPTION_DURATION(st, field, def_, min_, max_, help_)                                     \
	{                                                                                          \
		.name = #field, .type = SP_OPT_DURATION,                                           \
		.offset = SP_OPT_OFFSET_(st, field, int64_t), .def = (def_), .min = (min_),        \
		.max = (max_), .help = (help_)                                                     \
	}
#define SP_OPTION_BOOL(st, field, def_, help_)                                                     \
	{                                                                                          \
		.name = #field, .type = SP_OPT_BOOL, .offset = SP_OPT_OFFSET_(st, field, bool),    \
		.def = (def_), .help = (help_)                                                     \
	}
#define SP_OPTION_ENUM(st, field, def_, choices_, help_)                                           \
	{                                                                                          \
		.name = #field, .type = SP_OPT_ENUM, .offset = SP_OPT_OFFSET_(st, field, int),     \
		.def = (def_), .choices = (choices_), .help = (help_)                              \
	}
#define SP_OPTION_ACTION(st, field, short_, help_)                                                 \
	{                                                                                          \
		.name = #field, .type = SP_OPT_ACTION, .offset = SP_OPT_OFFSET_(st, field, bool),  \
		.short_name = (short_), .help = (help_)                                            \
	}

/*
 * Fills cfg from opts: defaults, then the -c/--config file if argv names one, then the flags
 * in argv[1..argc) (argv[0] is the program name). cfg must hold no owned strings on entry
 * (zero-initialized, or released with sp_config_free()); every field in the table is
 * overwritten, other fields are left alone.
 *
 * Returns 0, or a negative errno (-EINVAL malformed input or option table, -ERANGE a value out
 * of bounds, -ENOENT etc. the file could not be read, -ENOMEM) with a one-line message naming
 * the key or flag in err (always NUL-terminated if errlen > 0). Whatever it returns, cfg must
 * be released with sp_config_free(), and its ACTION fields tell which action flags argv holds
 * (see above).
 * *argi_out (if not NULL) is set to the index of the first non-option argument, or argc.
 * Does blocking file I/O; allocates only the strings it stores in cfg.
 */
int sp_config_load(const sp_option_t *opts, size_t n_opts, void *cfg, int argc, char **argv,
                   int *argi_out, char *err, size_t errlen);

/* Frees the STRING fields of cfg and sets them to NULL. Safe on NULL cfg, on a zeroed struct,
 * after a failed load, and twice. */
void sp_config_free(const sp_option_t *opts, size_t n_opts, void *cfg);

/* Prints the -c option and one line per option, "  --name-with-dashes TYPE  help (default: X,
 * range A..B)", to out. */
void sp_config_usage(FILE *out, const sp_option_t *opts, size_t n_opts);

/*
 * Writes the effective config as a pretty-printed JSON object in table order, with sizes and
 * durations as strings like "64k" and "30s", so that the output loads back as a config file.
 * ACTION options are left out. Returns 0, -ENOMEM, or -EIO if writing to out failed.
 */
int sp_config_dump_json(const sp_option_t *opts, size_t n_opts, const void *cfg, FILE *out);

/*
 * "HOST:PORT" into host (NUL-terminated) and port. HOST is an IPv4 address or a host name
 * ([A-Za-z0-9.-_]), or an IPv6 address in brackets ("[::1]:443", stored without them). PORT is
 * decimal 1..65535. Returns 0, -EINVAL for a malformed string, -ENOSPC if host does not fit.
 */
int sp_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port);

/* A Redis address: "redis://HOST:PORT", "redis://HOST" (port 6379), "unix:PATH" or
 * "unix://PATH". Fills host and port (TCP) or path (unix socket; host is then empty). Returns
 * 0, or -EINVAL for anything else or a part that does not fit. */
int sp_parse_redis_url(const char *url, char *host, size_t hostlen, uint16_t *port, char *path,
                       size_t pathlen);

/* "65536", "64k"/"64K" (x1024), "16m"/"16M", "1g"/"1G" into bytes. Digits first, no sign, no
 * spaces. Returns 0, -EINVAL for malformed input, -ERANGE if it does not fit int64_t. */
int sp_parse_size(const char *s, int64_t *out);

/* "250ms", "30s", "5m", "1h", or bare digits (milliseconds) into milliseconds. No sign, no
 * spaces, no fractions. Returns 0, -EINVAL for malformed input, -ERANGE if too large. */
int sp_parse_duration_ms(const char *s, int64_t *out);

#endif
