/*
 * sealpush-ca: the operator's PKI command. It keeps one directory DIR:
 *
 *	ca.key, ca.crt        the device CA (ECDSA P-256), made by "init"
 *	server.key/.crt       the relay's TLS certificate, made (and rotated) by "server"
 *	NAME.key/.crt         one device or sender, made by "device"
 *	intermediate.key/.crt the current intermediate CA for the relay's online enrollment, made
 *	                      (and rotated) by "intermediate"; every one also under intermediates/
 *	crl.pem               the CRLs the relay loads (the root's, then one per intermediate CA),
 *	                      rewritten by "init", "intermediate", "revoke*" and "crl"
 *	index.json, certs/, devices/, revoked.log
 *	                      every certificate issued, its serial, token and revocation, and the
 *	                      number of the last CRL; one file per certificate, so that issuing
 *	                      costs the same at any fleet size (see "the index" below)
 *
 * "enroll-code" is the exception: it writes a hashed one-time code into the relay's Redis and
 * touches no DIR.
 *
 * Each command takes an exclusive flock() on DIR for its whole run, so two commands never
 * interleave their read-modify-write of the index. Every file is written through a temporary
 * file created 0600 with O_EXCL, fsync'ed, then renamed over its name (or linked to it when an
 * existing file must not be replaced), then DIR is fsync'ed: a reader sees the old file or the
 * whole new one, and a private key is never readable by anyone else, not even briefly.
 *
 * The relay only reads DIR's files; nothing here runs inside the daemon. Crypto is OpenSSL's:
 * keys from EVP_PKEY_Q_keygen, certificates and CRLs from the X509 and X509_CRL APIs.
 *
 * Exit status: 0 success, 1 failure (one line "sealpush-ca: ..." on stderr), 2 usage error.
 */
#include "sp_config.h"
#include "sp_enrollcode.h"
#include "sp_identity.h"
#include "sp_version.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define CA_EXIT_FAIL           1
#define CA_EXIT_USAGE          2

#define CA_DEFAULT_CA_DAYS     3650
#define CA_DEFAULT_LEAF_DAYS   825
#define CA_DEFAULT_CRL_DAYS    30
#define CA_MAX_DAYS            36500 /* 100 years: anything longer is a typo */
#define CA_MAX_SANS            64    /* per kind (--name, --ip) */
#define CA_NAME_MAX            64    /* device names, and the X.509 upper bound of a CN */
#define CA_DNS_MAX             253
#define CA_PEM_MAX             (1 << 20)
#define CA_INDEX_MAX           (64 << 20)
#define CA_SERIAL_BITS         128
#define CA_CRL_NUMBER_MAX      ((json_int_t)1 << 53) /* far from overflow, exact in any JSON */
#define CA_MAX_CREATED         4
#define CA_TIME_LEN            sizeof("YYYY-MM-DDTHH:MM:SSZ")

#define CA_DEFAULT_CN          "sealpush device CA"
#define CA_SERVER_CN           "sealpush relay" /* when the first host name is too long for a CN */
#define CA_INDEX_VERSION       2
#define CA_SERIAL_HEX_MAX      40 /* 20 bytes, the RFC 5280 bound */
#define CA_ENTRY_FILE_MAX      (CA_SERIAL_HEX_MAX + 16)
#define CA_DEFAULT_INT_CN      "sealpush enrollment CA"
#define CA_DEFAULT_INT_DAYS    1825
#define CA_DEFAULT_CODE_TTL_MS (24LL * 3600 * 1000)
#define CA_MAX_CODE_TTL_MS     (366LL * 24 * 3600 * 1000)
#define CA_FILE_KEY_MODE       0600
#define CA_FILE_PUB_MODE       0644
#define CA_FILE_CA_KEY         "ca.key"
#define CA_FILE_CA_CRT         "ca.crt"
#define CA_FILE_SRV_KEY        "server.key"
#define CA_FILE_SRV_CRT        "server.crt"
#define CA_FILE_CRL            "crl.pem"
#define CA_FILE_INDEX          "index.json"
#define CA_FILE_REVOKED        "revoked.log"
#define CA_FILE_INT_KEY        "intermediate.key"
#define CA_FILE_INT_CRT        "intermediate.crt"
#define CA_DIR_CERTS           "certs"
#define CA_DIR_DEVICES         "devices"
#define CA_DIR_INTERMEDIATES   "intermediates"
#define CA_KIND_INTERMEDIATE   "intermediate"
#define CA_KIND_SERVER         "server"
#define CA_KIND_DEVICE         "device"
#define CA_TIME_FORMAT         "%Y-%m-%dT%H:%M:%SZ"

static const char ca_usage[] =
        "usage: sealpush-ca COMMAND DIR [ARGS] [OPTIONS]\n"
        "\n"
        "Commands:\n"
        "  init DIR [--days N] [--name CN]\n"
        "      Create a device CA (ECDSA P-256) in DIR, created 0700 if missing:\n"
        "      ca.key, ca.crt, index.json and an empty crl.pem. Valid 3650 days by\n"
        "      default; CN \"" CA_DEFAULT_CN "\" by default. Refuses to overwrite\n"
        "      an existing CA.\n"
        "  server DIR --name HOST [--name HOST]... [--ip ADDR]... [--days N]\n"
        "      Issue the relay's TLS certificate server.key, server.crt for every HOST\n"
        "      and ADDR (IPv4 or IPv6), valid 825 days by default. Replaces (rotates)\n"
        "      an existing server certificate.\n"
        "  device DIR NAME [--days N] [--backdate DAYS]\n"
        "      Issue a device (or sender) certificate NAME.key, NAME.crt with CN=NAME,\n"
        "      valid 825 days by default, and print its token (64 hex characters) on\n"
        "      stdout. --backdate moves the validity period DAYS into the past.\n"
        "      NAME is 1 to 64 of A-Z a-z 0-9 . _ -, does not start with '.', and is\n"
        "      not \"ca\" or \"server\". Refuses to overwrite an existing NAME.\n"
        "  intermediate DIR [--days N] [--name CN]\n"
        "      Issue an intermediate CA (intermediate.key, intermediate.crt; kept also\n"
        "      under intermediates/SERIAL.*) for the relay's online enrollment, valid\n"
        "      1825 days by default, and print its serial on stdout. The root key stays\n"
        "      here; copy only intermediate.key and .crt to the relay. Run it again to\n"
        "      rotate: the old one keeps its CRL in crl.pem until it expires.\n"
        "  revoke DIR NAME\n"
        "      Revoke device NAME and rewrite crl.pem.\n"
        "  revoke-serial DIR SERIAL\n"
        "      Revoke the certificate with this serial (hex): one issued here (an\n"
        "      intermediate CA, a server, a device), or else a device the relay enrolled\n"
        "      with the current intermediate CA. Rewrites crl.pem.\n"
        "  crl DIR [--days N]\n"
        "      Rewrite crl.pem with every revoked certificate; its next update is in\n"
        "      N days (30 by default). Run it again before then, or the relay will\n"
        "      refuse clients.\n"
        "  enroll-code --redis URL [--uses N] [--expires DURATION] [--label TEXT]\n"
        "      Make a one-time enrollment code (printed on stdout) for N devices (1 by\n"
        "      default), valid for DURATION (24h by default; 30m, 7d...). Only its\n"
        "      SHA-256 is stored, in the relay's Redis at URL (redis://HOST[:PORT] or\n"
        "      unix:PATH). Takes no DIR.\n"
        "\n"
        "Options:\n"
        "  -h, --help     show this help and exit\n"
        "  --version      show the version and exit\n"
        "\n"
        "Exit status: 0 success, 1 failure, 2 usage error.\n";

/* ---- reporting ---- */

static void ca_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prints one line "sealpush-ca: ..." on stderr. */
static void ca_err(const char *fmt, ...)
{
	va_list ap;

	fputs("sealpush-ca: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* Reports a failed OpenSSL call with the reason of the newest queued error; clears the queue. */
static void ca_ossl_err(const char *what)
{
	unsigned long e = ERR_peek_last_error();
	const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;

	ca_err("%s: %s", what, reason != NULL ? reason : "OpenSSL error");
	ERR_clear_error();
}

/* ---- arguments ---- */

enum {
	CA_OPT_DAYS = 1 << 0,
	CA_OPT_NAME = 1 << 1,
	CA_OPT_IP = 1 << 2,
	CA_OPT_BACKDATE = 1 << 3,
	CA_OPT_REDIS = 1 << 4,
	CA_OPT_USES = 1 << 5,
	CA_OPT_EXPIRES = 1 << 6,
	CA_OPT_LABEL = 1 << 7,
};

struct ca_args {
	const char *pos[2]; /* DIR, then NAME for device and revoke */
	size_t npos;
	long days; /* 0: the command's default */
	long backdate;
	const char *names[CA_MAX_SANS];
	size_t nnames;
	const char *ips[CA_MAX_SANS];
	size_t nips;
	const char *redis; /* enroll-code */
	long uses;
	int64_t expires_ms;
	const char *label;
	bool help;
};

struct ca_command {
	const char *name;
	const char *synopsis;
	unsigned opts;
	size_t npos;
	int (*run)(const struct ca_args *a);
};

/* Parses a decimal number in [min, max]. Returns 0 or -EINVAL. */
static int ca_parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	if (s[0] < '0' || s[0] > '9')
		return -EINVAL;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

/*
 * Parses the arguments after the command name into a. Options may come before, between or after
 * the positional arguments, as "--opt VALUE" or "--opt=VALUE"; "--" ends the options. Returns 0,
 * or -EINVAL after printing one line on stderr.
 */
static int ca_parse_args(const struct ca_command *cmd, int argc, char **argv, struct ca_args *a)
{
	static const struct {
		const char *name;
		unsigned opt;
	} table[] = {
	        {"--days", CA_OPT_DAYS},         {"--name", CA_OPT_NAME},   {"--ip", CA_OPT_IP},
	        {"--backdate", CA_OPT_BACKDATE}, {"--redis", CA_OPT_REDIS}, {"--uses", CA_OPT_USES},
	        {"--expires", CA_OPT_EXPIRES},   {"--label", CA_OPT_LABEL},
	};
	bool only_pos = false;

	for (int i = 0; i < argc; i++) {
		const char *arg = argv[i], *val, *eq;
		size_t len;
		unsigned opt = 0;

		if (only_pos || arg[0] != '-' || arg[1] == '\0') {
			if (a->npos == cmd->npos) {
				ca_err("unexpected argument '%s'; usage: sealpush-ca %s", arg,
				       cmd->synopsis);
				return -EINVAL;
			}
			a->pos[a->npos++] = arg;
			continue;
		}
		if (strcmp(arg, "--") == 0) {
			only_pos = true;
			continue;
		}
		if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
			a->help = true;
			continue;
		}
		eq = strchr(arg, '=');
		len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
		for (size_t t = 0; t < sizeof(table) / sizeof(table[0]); t++) {
			if (strlen(table[t].name) == len && strncmp(arg, table[t].name, len) == 0)
				opt = table[t].opt;
		}
		if ((opt & cmd->opts) == 0) {
			ca_err("%s: unknown option '%.*s'; usage: sealpush-ca %s", cmd->name,
			       (int)len, arg, cmd->synopsis);
			return -EINVAL;
		}
		if (eq != NULL) {
			val = eq + 1;
		} else if (i + 1 < argc) {
			val = argv[++i];
		} else {
			ca_err("option %s needs a value", arg);
			return -EINVAL;
		}
		switch (opt) {
		case CA_OPT_DAYS:
			if (ca_parse_long(val, 1, CA_MAX_DAYS, &a->days) < 0) {
				ca_err("--days: expected a number of days from 1 to %d, not '%s'",
				       CA_MAX_DAYS, val);
				return -EINVAL;
			}
			break;
		case CA_OPT_BACKDATE:
			if (ca_parse_long(val, 0, CA_MAX_DAYS, &a->backdate) < 0) {
				ca_err("--backdate: expected a number of days from 0 to %d, not "
				       "'%s'",
				       CA_MAX_DAYS, val);
				return -EINVAL;
			}
			break;
		case CA_OPT_REDIS:
			a->redis = val;
			break;
		case CA_OPT_LABEL:
			a->label = val;
			break;
		case CA_OPT_USES:
			if (ca_parse_long(val, 1, SP_ENROLL_USES_MAX, &a->uses) < 0) {
				ca_err("--uses: expected a number from 1 to %d, not '%s'",
				       SP_ENROLL_USES_MAX, val);
				return -EINVAL;
			}
			break;
		case CA_OPT_EXPIRES:
			if (sp_parse_duration_ms(val, &a->expires_ms) < 0 || a->expires_ms < 1000 ||
			    a->expires_ms > CA_MAX_CODE_TTL_MS) {
				ca_err("--expires: expected a duration from 1s to 366 days (e.g. "
				       "30m, "
				       "24h), not '%s'",
				       val);
				return -EINVAL;
			}
			break;
		case CA_OPT_NAME:
			if (a->nnames == CA_MAX_SANS) {
				ca_err("at most %d --name options", CA_MAX_SANS);
				return -EINVAL;
			}
			a->names[a->nnames++] = val;
			break;
		case CA_OPT_IP:
			if (a->nips == CA_MAX_SANS) {
				ca_err("at most %d --ip options", CA_MAX_SANS);
				return -EINVAL;
			}
			a->ips[a->nips++] = val;
			break;
		default:
			return -EINVAL;
		}
	}
	if (!a->help && a->npos != cmd->npos) {
		ca_err("missing argument; usage: sealpush-ca %s", cmd->synopsis);
		return -EINVAL;
	}
	return 0;
}

/* A device name is a safe file stem: [A-Za-z0-9._-]{1,64}, no leading '.', not a CA file. */
static bool ca_valid_device_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > CA_NAME_MAX || s[0] == '.')
		return false;
	/* Case-insensitively, so "CA" cannot clobber ca.key on a case-folding file system. */
	if (strcasecmp(s, "ca") == 0 || strcasecmp(s, "server") == 0 ||
	    strcasecmp(s, "intermediate") == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* A host name: dot-separated labels of letters, digits and inner hyphens; "*." may lead. */
static bool ca_valid_dns_name(const char *s)
{
	size_t n = strlen(s), label = 0;

	if (n == 0 || n > CA_DNS_MAX)
		return false;
	if (strncmp(s, "*.", 2) == 0 && n > 2)
		s += 2;
	for (const char *p = s;; p++) {
		char c = *p;

		if (c == '.' || c == '\0') {
			if (label == 0 || label > 63 || p[-1] == '-')
				return false;
			if (c == '\0')
				return true;
			label = 0;
			continue;
		}
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      (c == '-' && label > 0)))
			return false;
		label++;
	}
}

/* A CA common name: 1 to 64 bytes of UTF-8 without control characters. */
static bool ca_valid_cn(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > CA_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	}
	return true;
}

/* Parses an IPv4 or IPv6 address into addr. Returns its length (4 or 16), or -EINVAL. */
static int ca_parse_ip(const char *s, unsigned char addr[16])
{
	if (inet_pton(AF_INET, s, addr) == 1)
		return 4;
	if (inet_pton(AF_INET6, s, addr) == 1)
		return 16;
	return -EINVAL;
}

/* ---- time ---- */

/* Formats t as "YYYY-MM-DDTHH:MM:SSZ". Returns 0 or -EINVAL. */
static int ca_time_str(time_t t, char out[CA_TIME_LEN])
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(out, CA_TIME_LEN, CA_TIME_FORMAT, &tm) == 0)
		return -EINVAL;
	return 0;
}

/* Formats an ASN1_TIME like ca_time_str. Returns 0 or -EINVAL. */
static int ca_asn1_time_str(const ASN1_TIME *t, char out[CA_TIME_LEN])
{
	struct tm tm;

	if (!ASN1_TIME_to_tm(t, &tm) || strftime(out, CA_TIME_LEN, CA_TIME_FORMAT, &tm) == 0)
		return -EINVAL;
	return 0;
}

/* Parses what ca_time_str writes. Returns 0 or -EINVAL. */
static int ca_time_parse(const char *s, time_t *out)
{
	struct tm tm;
	const char *end;

	memset(&tm, 0, sizeof(tm));
	end = strptime(s, CA_TIME_FORMAT, &tm);
	if (end == NULL || *end != '\0')
		return -EINVAL;
	*out = timegm(&tm);
	return 0;
}

/* ---- the directory ---- */

struct ca_dir {
	const char *path;
	int fd; /* the directory, flock()ed exclusively while open */
};

/* Files this run created, so that a failure half-way can remove them again. */
struct ca_created {
	const char *names[CA_MAX_CREATED];
	size_t n;
};

/*
 * Opens DIR (creating it 0700 first if create is set) and locks it against other sealpush-ca
 * runs; blocks while another run holds the lock. Returns 0 or a negative errno, reported.
 */
static int ca_dir_open(const char *path, bool create, struct ca_dir *d)
{
	int r;

	d->path = path;
	d->fd = -1;
	if (create && mkdir(path, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		ca_err("cannot create %s: %s", path, strerror(errno));
		return r;
	}
	d->fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (d->fd < 0) {
		r = -errno;
		ca_err("%s: %s", path, strerror(errno));
		return r;
	}
	while (flock(d->fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			r = -errno;
			ca_err("%s: cannot lock: %s", path, strerror(errno));
			return r;
		}
	}
	return 0;
}

/* Unlocks and closes; accepts a directory that never opened. */
static void ca_dir_close(struct ca_dir *d)
{
	if (d->fd >= 0)
		close(d->fd);
	d->fd = -1;
}

/* Returns 1 if DIR/name exists, 0 if not, or a negative errno (reported). */
static int ca_exists(const struct ca_dir *d, const char *name)
{
	struct stat st;
	int r;

	if (fstatat(d->fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return 1;
	if (errno == ENOENT)
		return 0;
	r = -errno;
	ca_err("%s/%s: %s", d->path, name, strerror(-r));
	return r;
}

/*
 * Reads DIR/name whole, refusing files over max bytes. On success *out is a NUL-terminated
 * OPENSSL_malloc'ed buffer the caller frees with OPENSSL_clear_free(*out, *len + 1) (it may
 * hold a private key). Returns 0 or a negative errno, reported.
 */
static int ca_read_file(const struct ca_dir *d, const char *name, size_t max, char **out,
                        size_t *len)
{
	struct stat st;
	char *buf = NULL;
	size_t size = 0, got = 0;
	int fd, r;

	fd = openat(d->fd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		ca_err("%s/%s: %s", d->path, name, strerror(errno));
		goto out;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		ca_err("%s/%s: %s", d->path, name, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode) || st.st_size < 0 || (uintmax_t)st.st_size > max) {
		r = -EFBIG;
		ca_err("%s/%s: not a regular file of at most %zu bytes", d->path, name, max);
		goto out;
	}
	size = (size_t)st.st_size;
	buf = OPENSSL_malloc(size + 1);
	if (buf == NULL) {
		r = -ENOMEM;
		ca_err("%s/%s: out of memory", d->path, name);
		goto out;
	}
	while (got < size) {
		ssize_t n = read(fd, buf + got, size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			ca_err("%s/%s: %s", d->path, name,
			       n < 0 ? strerror(errno) : "file shrank while reading");
			goto out;
		}
		got += (size_t)n;
	}
	buf[size] = '\0';
	*out = buf;
	*len = size;
	buf = NULL;
	r = 0;
out:
	OPENSSL_clear_free(buf, size + 1);
	if (fd >= 0)
		close(fd);
	return r;
}

/*
 * Writes data to DIR/name atomically with the given mode, through a temporary file created 0600
 * with O_EXCL. With replace, an existing DIR/name is replaced; without, the call fails with
 * -EEXIST and leaves it alone. If created is not NULL, name is recorded there once it is in
 * place, so that a later failure can remove it again (name must then outlive created). Returns 0
 * or a negative errno, reported.
 */
static int ca_write_file(const struct ca_dir *d, const char *name, const void *data, size_t len,
                         mode_t mode, bool replace, struct ca_created *created)
{
	char tmp[NAME_MAX + 1], sub[NAME_MAX + 1];
	unsigned char rnd[6];
	const char *p = data, *slash = strchr(name, '/'), *base = name;
	bool have_tmp = false;
	int fd = -1, dfd = d->fd, r, n;

	/* A name in a subdirectory ("certs/X.json"): the temporary file goes beside it there. */
	if (slash != NULL) {
		if ((size_t)(slash - name) >= sizeof(sub) || strchr(slash + 1, '/') != NULL) {
			r = -ENAMETOOLONG;
			ca_err("%s/%s: %s", d->path, name, strerror(ENAMETOOLONG));
			goto out;
		}
		memcpy(sub, name, (size_t)(slash - name));
		sub[slash - name] = '\0';
		base = slash + 1;
		dfd = openat(d->fd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0) {
			r = -errno;
			ca_err("%s/%s: %s", d->path, sub, strerror(errno));
			goto out;
		}
	}
	if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
		ca_ossl_err("random bytes");
		r = -EIO;
		goto out;
	}
	n = snprintf(tmp, sizeof(tmp), ".%s.%02x%02x%02x%02x%02x%02x.tmp", base, rnd[0], rnd[1],
	             rnd[2], rnd[3], rnd[4], rnd[5]);
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		r = -ENAMETOOLONG;
		ca_err("%s/%s: %s", d->path, name, strerror(ENAMETOOLONG));
		goto out;
	}
	fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		ca_err("%s/%s: %s", d->path, name, strerror(errno));
		goto out;
	}
	have_tmp = true;
	if (fchmod(fd, mode) < 0) {
		r = -errno;
		ca_err("%s/%s: %s", d->path, name, strerror(errno));
		goto out;
	}
	while (len > 0) {
		ssize_t w = write(fd, p, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			r = w < 0 ? -errno : -EIO;
			ca_err("%s/%s: %s", d->path, name, w < 0 ? strerror(errno) : "short write");
			goto out;
		}
		p += w;
		len -= (size_t)w;
	}
	if (fsync(fd) < 0) {
		r = -errno;
		ca_err("%s/%s: %s", d->path, name, strerror(errno));
		goto out;
	}
	n = close(fd);
	fd = -1;
	if (n < 0) {
		r = -errno;
		ca_err("%s/%s: %s", d->path, name, strerror(errno));
		goto out;
	}
	if (replace) {
		if (renameat(dfd, tmp, dfd, base) < 0) {
			r = -errno;
			ca_err("%s/%s: %s", d->path, name, strerror(errno));
			goto out;
		}
		have_tmp = false;
	} else {
		/* link() fails if name exists, where rename() would replace it. */
		if (linkat(dfd, tmp, dfd, base, 0) < 0) {
			r = -errno;
			if (errno == EEXIST)
				ca_err("%s/%s already exists; not overwriting it", d->path, name);
			else
				ca_err("%s/%s: %s", d->path, name, strerror(errno));
			goto out;
		}
	}
	if (created != NULL && created->n < CA_MAX_CREATED)
		created->names[created->n++] = name;
	if (fsync(dfd) < 0) {
		r = -errno;
		ca_err("%s: %s", d->path, strerror(errno));
		goto out;
	}
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	if (have_tmp)
		unlinkat(dfd, tmp, 0);
	if (dfd != d->fd && dfd >= 0)
		close(dfd);
	return r;
}

/* Removes the files a failed run created. */
static void ca_rollback(const struct ca_dir *d, struct ca_created *created)
{
	for (size_t i = created->n; i > 0; i--)
		unlinkat(d->fd, created->names[i - 1], 0);
	if (created->n > 0)
		fsync(d->fd);
	created->n = 0;
}

/* Writes the memory BIO's contents to DIR/name (see ca_write_file). */
static int ca_write_bio(const struct ca_dir *d, const char *name, BIO *bio, mode_t mode,
                        bool replace, struct ca_created *created)
{
	char *data;
	long len = BIO_get_mem_data(bio, &data);

	if (len <= 0) {
		ca_err("%s/%s: nothing to write", d->path, name);
		return -EIO;
	}
	return ca_write_file(d, name, data, (size_t)len, mode, replace, created);
}

/* Writes key as unencrypted PEM PKCS#8, mode 0600. Returns 0 or a negative errno, reported. */
static int ca_write_key(const struct ca_dir *d, const char *name, EVP_PKEY *key, bool replace,
                        struct ca_created *created)
{
	/* secmem: the buffer is cleansed when freed. */
	BIO *bio = BIO_new(BIO_s_secmem());
	int r;

	if (bio == NULL || !PEM_write_bio_PKCS8PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL)) {
		ca_ossl_err("encoding the private key");
		r = -EIO;
		goto out;
	}
	r = ca_write_bio(d, name, bio, CA_FILE_KEY_MODE, replace, created);
out:
	BIO_free(bio);
	return r;
}

/* Writes a certificate as PEM, mode 0644. Returns 0 or a negative errno, reported. */
static int ca_write_cert(const struct ca_dir *d, const char *name, X509 *x, bool replace,
                         struct ca_created *created)
{
	BIO *bio = BIO_new(BIO_s_mem());
	int r;

	if (bio == NULL || !PEM_write_bio_X509(bio, x)) {
		ca_ossl_err("encoding the certificate");
		r = -EIO;
		goto out;
	}
	r = ca_write_bio(d, name, bio, CA_FILE_PUB_MODE, replace, created);
out:
	BIO_free(bio);
	return r;
}

/*
 * Writes a key and its certificate as DIR/key_file and DIR/crt_file (see ca_write_key and
 * ca_write_cert), the key first: a reader between the two writes of a replacement pairs the old
 * certificate with the new key and fails loudly, rather than silently using something
 * unexpected. Returns 0 or a negative errno, reported.
 */
static int ca_write_pair(const struct ca_dir *d, const char *key_file, EVP_PKEY *key,
                         const char *crt_file, X509 *cert, bool replace, struct ca_created *created)
{
	int r = ca_write_key(d, key_file, key, replace, created);

	return r < 0 ? r : ca_write_cert(d, crt_file, cert, replace, created);
}

/* A PEM passphrase callback that has none: encrypted keys fail instead of prompting. */
static int ca_no_passphrase(char *buf, int size, int rwflag, void *u)
{
	return 0;
}

/*
 * Loads and cross-checks a CA certificate and key: DIR/crt_file and DIR/key_file. On success
 * the caller owns *ca and *key. Returns 0 or a negative errno, reported.
 */
static int ca_load_pair(const struct ca_dir *d, const char *crt_file, const char *key_file,
                        X509 **ca, EVP_PKEY **key)
{
	char *crt_pem = NULL, *key_pem = NULL;
	size_t crt_len = 0, key_len = 0;
	BIO *bio = NULL;
	X509 *x = NULL;
	EVP_PKEY *k = NULL;
	char what[PATH_MAX];
	int r;

	r = ca_read_file(d, crt_file, CA_PEM_MAX, &crt_pem, &crt_len);
	if (r < 0)
		goto out;
	r = ca_read_file(d, key_file, CA_PEM_MAX, &key_pem, &key_len);
	if (r < 0)
		goto out;
	r = -EINVAL;
	bio = BIO_new_mem_buf(crt_pem, (int)crt_len);
	x = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	if (x == NULL) {
		snprintf(what, sizeof(what), "%s/%s", d->path, crt_file);
		ca_ossl_err(what);
		goto out;
	}
	BIO_free(bio);
	bio = BIO_new_mem_buf(key_pem, (int)key_len);
	k = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, ca_no_passphrase, NULL) : NULL;
	if (k == NULL) {
		snprintf(what, sizeof(what), "%s/%s (encrypted keys are unsupported)", d->path,
		         key_file);
		ca_ossl_err(what);
		goto out;
	}
	if (X509_check_private_key(x, k) != 1) {
		ERR_clear_error();
		ca_err("%s: %s does not match %s", d->path, key_file, crt_file);
		goto out;
	}
	*ca = x;
	*key = k;
	x = NULL;
	k = NULL;
	r = 0;
out:
	BIO_free(bio);
	X509_free(x);
	EVP_PKEY_free(k);
	OPENSSL_free(crt_pem);
	OPENSSL_clear_free(key_pem, key_len + 1);
	return r;
}

/* Loads the root CA of DIR (see ca_load_pair). */
static int ca_load_ca(const struct ca_dir *d, X509 **ca, EVP_PKEY **key)
{
	int r = ca_exists(d, CA_FILE_CA_CRT);

	if (r == 0) {
		ca_err("%s: no CA here (run 'sealpush-ca init %s' first)", d->path, d->path);
		r = -ENOENT;
	}
	if (r < 0)
		return r;
	return ca_load_pair(d, CA_FILE_CA_CRT, CA_FILE_CA_KEY, ca, key);
}

/* ---- the index: index.json, certs/, devices/, revoked.log ---- */

/*
 * What the CA has issued, laid out so that issuing and revoking cost the same however many
 * certificates there are (index version 2):
 *
 *	index.json         { "version": 2, "crl_number": N }; rewritten only with a new CRL
 *	certs/SERIAL.json  ENTRY of one certificate: created (never replaced) when it is issued,
 *	                   rewritten when it is revoked. SERIAL is uppercase hex.
 *	devices/NAME.json  a symbolic link to ../certs/SERIAL.json of device NAME's certificate
 *	revoked.log        one line "SERIAL ISSUER_SERIAL YYYY-MM-DDTHH:MM:SSZ" per revocation,
 *	                   appended; the CRLs are built from it, at a cost of the number revoked
 *	                   (which a CRL lists anyway), not the number issued
 *
 *	ENTRY: { "name", "kind": "server"|"device"|"intermediate", "serial", "issuer": serial of
 *	         the signing CA, "token": 64 hex (devices), "dns": [...], "ip": [...] (servers),
 *	         "not_after": UTC time, "revoked_at": UTC time or null }
 *
 * crl_number is the number of the newest crl.pem (0: none yet). Entries are never removed; a
 * rotated server certificate keeps its old entry. A directory of index version 1 (one
 * index.json holding every entry, rewritten whole for every certificate) is converted the
 * first time a command opens it.
 */

/* Makes DIR/sub (0700) unless it exists. Returns 0 or a negative errno, reported. */
static int ca_mkdir(const struct ca_dir *d, const char *sub)
{
	int r;

	if (mkdirat(d->fd, sub, 0700) == 0 || errno == EEXIST)
		return 0;
	r = -errno;
	ca_err("cannot create %s/%s: %s", d->path, sub, strerror(errno));
	return r;
}

static int ca_index_dirs(const struct ca_dir *d)
{
	int r = ca_mkdir(d, CA_DIR_CERTS);

	if (r == 0)
		r = ca_mkdir(d, CA_DIR_DEVICES);
	if (r == 0)
		r = ca_mkdir(d, CA_DIR_INTERMEDIATES);
	return r;
}

/* Writes a JSON value atomically, mode 0600, with a final newline (see ca_write_file). */
static int ca_json_save(const struct ca_dir *d, const char *name, const json_t *v, bool replace,
                        struct ca_created *created)
{
	/* JSON_INDENT output ends without a newline; the file gets one. */
	char *text = json_dumps(v, JSON_INDENT(2)), *nl;
	size_t n;
	int r;

	if (text == NULL) {
		ca_err("%s/%s: out of memory", d->path, name);
		return -ENOMEM;
	}
	n = strlen(text);
	nl = realloc(text, n + 2);
	if (nl == NULL) {
		r = -ENOMEM;
		ca_err("%s/%s: out of memory", d->path, name);
		goto out;
	}
	text = nl;
	text[n++] = '\n';
	text[n] = '\0';
	r = ca_write_file(d, name, text, n, CA_FILE_KEY_MODE, replace, created);
out:
	free(text);
	return r;
}

/* Loads DIR/name as a JSON object; the caller owns *out. Returns 0 or a negative errno,
 * reported. */
static int ca_json_load(const struct ca_dir *d, const char *name, size_t max, json_t **out)
{
	char *buf = NULL;
	size_t len = 0;
	json_error_t jerr;
	int r;

	r = ca_read_file(d, name, max, &buf, &len);
	if (r < 0)
		return r;
	*out = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	OPENSSL_free(buf);
	if (*out == NULL || !json_is_object(*out)) {
		ca_err("%s/%s:%d: %s", d->path, name, jerr.line,
		       *out == NULL ? jerr.text : "not a JSON object");
		json_decref(*out);
		*out = NULL;
		return -EINVAL;
	}
	return 0;
}

/* Checks one ENTRY so that later code can trust it. Returns 0 or -EINVAL with *why set. */
static int ca_entry_check(const json_t *e, const char **why)
{
	const char *kind = json_string_value(json_object_get(e, "kind"));
	const json_t *rev = json_object_get(e, "revoked_at");
	time_t t;

	if (!json_is_string(json_object_get(e, "name")) ||
	    !json_is_string(json_object_get(e, "serial")) || kind == NULL ||
	    (strcmp(kind, CA_KIND_SERVER) != 0 && strcmp(kind, CA_KIND_DEVICE) != 0 &&
	     strcmp(kind, CA_KIND_INTERMEDIATE) != 0)) {
		*why = "an entry lacks name, kind or serial";
		return -EINVAL;
	}
	if (!json_is_null(rev) &&
	    (!json_is_string(rev) || ca_time_parse(json_string_value(rev), &t) < 0)) {
		*why = "an entry has a bad revoked_at";
		return -EINVAL;
	}
	return 0;
}

/* "certs/SERIAL.json" into out. */
static void ca_entry_file(const char *serial, char out[CA_ENTRY_FILE_MAX])
{
	snprintf(out, CA_ENTRY_FILE_MAX, CA_DIR_CERTS "/%s.json", serial);
}

/* Loads the entry in DIR/file (certs/SERIAL.json, or devices/NAME.json through its link);
 * the caller owns *out. Returns 0, -ENOENT (not reported) or another negative errno,
 * reported. */
static int ca_entry_load(const struct ca_dir *d, const char *file, json_t **out)
{
	const char *why = NULL;
	int r = ca_exists(d, file);

	if (r == 0)
		return -ENOENT;
	if (r < 0)
		return r;
	r = ca_json_load(d, file, CA_PEM_MAX, out);
	if (r < 0)
		return r;
	if (ca_entry_check(*out, &why) < 0) {
		ca_err("%s/%s: %s", d->path, file, why);
		json_decref(*out);
		*out = NULL;
		return -EINVAL;
	}
	return 0;
}

/* Writes entry e to certs/SERIAL.json: a new one (fails with -EEXIST) or, with replace, over
 * the old. Returns 0 or a negative errno, reported. */
static int ca_entry_save(const struct ca_dir *d, const json_t *e, bool replace)
{
	char file[CA_ENTRY_FILE_MAX];

	ca_entry_file(json_string_value(json_object_get(e, "serial")), file);
	return ca_json_save(d, file, e, replace, NULL);
}

/*
 * Points devices/NAME.json at certs/SERIAL.json: a new link (fails with -EEXIST if the name is
 * taken) or, with replace, over the old one. Returns 0 or a negative errno, reported.
 */
static int ca_device_link(const struct ca_dir *d, const char *name, const char *serial,
                          bool replace)
{
	char target[CA_ENTRY_FILE_MAX + 3], link[CA_NAME_MAX + 16], tmp[CA_NAME_MAX + 48];
	unsigned char rnd[6];
	int r = 0;

	snprintf(target, sizeof(target), "../" CA_DIR_CERTS "/%s.json", serial);
	snprintf(link, sizeof(link), CA_DIR_DEVICES "/%s.json", name);
	if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
		ca_ossl_err("random bytes");
		return -EIO;
	}
	snprintf(tmp, sizeof(tmp), CA_DIR_DEVICES "/.%s.%02x%02x%02x%02x%02x%02x.tmp", name, rnd[0],
	         rnd[1], rnd[2], rnd[3], rnd[4], rnd[5]);
	if (symlinkat(target, d->fd, tmp) < 0) {
		r = -errno;
		ca_err("%s/%s: %s", d->path, link, strerror(errno));
		return r;
	}
	/* linkat() without AT_SYMLINK_FOLLOW links the symbolic link itself, and fails if the
	 * name exists, where renameat() replaces it. */
	if (replace ? renameat(d->fd, tmp, d->fd, link) < 0
	            : linkat(d->fd, tmp, d->fd, link, 0) < 0) {
		r = -errno;
		if (errno == EEXIST)
			ca_err("device %s already exists; refusing to overwrite it", name);
		else
			ca_err("%s/%s: %s", d->path, link, strerror(errno));
	}
	if (!replace || r < 0)
		unlinkat(d->fd, tmp, 0);
	if (r == 0) {
		int dfd = openat(d->fd, CA_DIR_DEVICES, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		if (dfd < 0 || fsync(dfd) < 0) {
			r = -errno;
			ca_err("%s/" CA_DIR_DEVICES ": %s", d->path, strerror(errno));
		}
		if (dfd >= 0)
			close(dfd);
	}
	return r;
}

/* Appends "SERIAL ISSUER WHEN" to revoked.log and syncs it. Returns 0 or a negative errno,
 * reported. */
static int ca_revoked_append(const struct ca_dir *d, const char *serial, const char *issuer,
                             time_t when)
{
	char line[2 * CA_SERIAL_HEX_MAX + CA_TIME_LEN + 4], t[CA_TIME_LEN];
	int fd, r = 0, n;

	if (ca_time_str(when, t) < 0)
		return -EINVAL;
	n = snprintf(line, sizeof(line), "%s %s %s\n", serial, issuer, t);
	if (n < 0 || (size_t)n >= sizeof(line)) {
		ca_err("a serial number too long for " CA_FILE_REVOKED);
		return -EINVAL;
	}
	fd = openat(d->fd, CA_FILE_REVOKED, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
	            CA_FILE_KEY_MODE);
	if (fd < 0 || write(fd, line, (size_t)n) != n || fsync(fd) < 0) {
		r = errno != 0 ? -errno : -EIO;
		ca_err("%s/" CA_FILE_REVOKED ": %s", d->path, strerror(-r));
	}
	if (fd >= 0)
		close(fd);
	if (r == 0 && fsync(d->fd) < 0) {
		r = -errno;
		ca_err("%s: %s", d->path, strerror(errno));
	}
	return r;
}

/*
 * Calls fn for every line of revoked.log (none if it does not exist yet): serial, issuer and
 * time of each revocation. Stops at the first negative return of fn and returns it; returns 0
 * or a negative errno, reported.
 */
static int ca_revoked_each(const struct ca_dir *d,
                           int (*fn)(void *arg, const char *serial, const char *issuer, time_t t),
                           void *arg)
{
	char *buf = NULL, *line, *save = NULL;
	size_t len = 0;
	int r = ca_exists(d, CA_FILE_REVOKED), lineno = 0;

	if (r <= 0)
		return r;
	r = ca_read_file(d, CA_FILE_REVOKED, CA_INDEX_MAX, &buf, &len);
	if (r < 0)
		return r;
	for (line = strtok_r(buf, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		char serial[CA_SERIAL_HEX_MAX + 1], issuer[CA_SERIAL_HEX_MAX + 1],
		        when[CA_TIME_LEN];
		time_t t;

		lineno++;
		if (sscanf(line, "%40s %40s %20s", serial, issuer, when) != 3 ||
		    ca_time_parse(when, &t) < 0) {
			ca_err("%s/" CA_FILE_REVOKED ":%d: malformed line", d->path, lineno);
			r = -EINVAL;
			break;
		}
		r = fn(arg, serial, issuer, t);
		if (r < 0)
			break;
	}
	OPENSSL_free(buf);
	return r;
}

/*
 * Converts an index of version 1 (every entry in index.json) to version 2: each entry to its
 * certs/ file, each device name to its devices/ link (the unrevoked certificate, else the last
 * revoked one), revoked.log written whole, index.json last. Every step replaces what a failed
 * earlier run may have left, so it can simply run again. Returns 0 or a negative errno,
 * reported.
 */
static int ca_index_migrate(const struct ca_dir *d, json_t *index, const char *ca_serial)
{
	json_t *certs = json_object_get(index, "certificates"), *e;
	char *log = NULL;
	size_t loglen = 0, i;
	const char *why = NULL;
	int r = ca_index_dirs(d);

	if (r < 0)
		return r;
	if (!json_is_array(certs)) {
		ca_err("%s/" CA_FILE_INDEX ": version 1 without certificates", d->path);
		return -EINVAL;
	}
	/* Revoked entries first, so that the link of a name ends at its live certificate. */
	for (int pass = 0; pass < 2; pass++) {
		json_array_foreach(certs, i, e)
		{
			const json_t *rev = json_object_get(e, "revoked_at");
			const char *serial, *name, *kind;

			if (ca_entry_check(e, &why) < 0) {
				ca_err("%s/" CA_FILE_INDEX ": %s", d->path, why);
				r = -EINVAL;
				goto out;
			}
			if ((pass == 0) == json_is_null(rev))
				continue;
			serial = json_string_value(json_object_get(e, "serial"));
			name = json_string_value(json_object_get(e, "name"));
			kind = json_string_value(json_object_get(e, "kind"));
			if (json_object_get(e, "issuer") == NULL &&
			    json_object_set_new(e, "issuer", json_string(ca_serial)) < 0) {
				r = -ENOMEM;
				ca_err("out of memory");
				goto out;
			}
			r = ca_entry_save(d, e, true);
			if (r == 0 && strcmp(kind, CA_KIND_DEVICE) == 0 &&
			    ca_valid_device_name(name))
				r = ca_device_link(d, name, serial, true);
			if (r < 0)
				goto out;
			if (!json_is_null(rev)) {
				size_t add = strlen(serial) + strlen(ca_serial) +
				             strlen(json_string_value(rev)) + 3;
				char *grown = realloc(log, loglen + add + 1);

				if (grown == NULL) {
					r = -ENOMEM;
					ca_err("out of memory");
					goto out;
				}
				log = grown;
				loglen +=
				        (size_t)snprintf(log + loglen, add + 1, "%s %s %s\n",
				                         serial, ca_serial, json_string_value(rev));
			}
		}
	}
	if (loglen > 0) {
		r = ca_write_file(d, CA_FILE_REVOKED, log, loglen, CA_FILE_KEY_MODE, true, NULL);
		if (r < 0)
			goto out;
	}
	json_object_del(index, "certificates");
	if (json_object_set_new(index, "version", json_integer(CA_INDEX_VERSION)) < 0) {
		r = -ENOMEM;
		ca_err("out of memory");
		goto out;
	}
	r = ca_json_save(d, CA_FILE_INDEX, index, true, NULL);
	if (r == 0)
		fprintf(stderr,
		        "sealpush-ca: converted %s/" CA_FILE_INDEX " to version %d (%zu "
		        "certificates, one file each under " CA_DIR_CERTS "/)\n",
		        d->path, CA_INDEX_VERSION, json_array_size(certs));
out:
	free(log);
	return r;
}

/* Loads DIR/index.json (converting a version 1 index); the caller owns *out. Returns 0 or a
 * negative errno, reported. */
static int ca_index_load(const struct ca_dir *d, const char *ca_serial, json_t **out)
{
	json_t *index = NULL;
	const json_t *num;
	int r;

	r = ca_json_load(d, CA_FILE_INDEX, CA_INDEX_MAX, &index);
	if (r < 0)
		return r;
	if (json_integer_value(json_object_get(index, "version")) == 1) {
		r = ca_index_migrate(d, index, ca_serial);
		if (r < 0)
			goto out;
	}
	num = json_object_get(index, "crl_number");
	if (json_integer_value(json_object_get(index, "version")) != CA_INDEX_VERSION ||
	    !json_is_integer(num) || json_integer_value(num) < 0 ||
	    json_integer_value(num) > CA_CRL_NUMBER_MAX) {
		ca_err("%s/" CA_FILE_INDEX ": not version %d with a crl_number", d->path,
		       CA_INDEX_VERSION);
		r = -EINVAL;
		goto out;
	}
	r = ca_index_dirs(d);
	if (r < 0)
		goto out;
	*out = index;
	index = NULL;
out:
	json_decref(index);
	return r;
}

/* Writes index.json atomically, mode 0600. Returns 0 or a negative errno, reported. */
static int ca_index_save(const struct ca_dir *d, const json_t *index, struct ca_created *created)
{
	return ca_json_save(d, CA_FILE_INDEX, index, true, created);
}

/* Returns whether serial (hex) already has an entry or is the CA's own (d may be NULL: a new
 * CA has none). */
static bool ca_serial_taken(const struct ca_dir *d, const char *serial, const char *ca_serial)
{
	char file[CA_ENTRY_FILE_MAX];
	struct stat st;

	if (ca_serial != NULL && strcasecmp(serial, ca_serial) == 0)
		return true;
	if (d == NULL)
		return false;
	ca_entry_file(serial, file);
	return fstatat(d->fd, file, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

/* Returns the hex of an ASN1 serial, OPENSSL_malloc'ed, or NULL (reported). */
static char *ca_serial_hex(const ASN1_INTEGER *serial)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(serial, NULL);
	char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;

	if (hex == NULL)
		ca_ossl_err("encoding a serial number");
	BN_free(bn);
	return hex;
}

/*
 * Draws a random positive 128-bit serial that neither DIR's entries (d may be NULL) nor
 * ca_serial (may be NULL) already uses. On success the caller owns *out and *hex
 * (OPENSSL_free). Returns 0 or -EIO, reported.
 */
static int ca_new_serial(const struct ca_dir *d, const char *ca_serial, ASN1_INTEGER **out,
                         char **hex)
{
	BIGNUM *bn = BN_new();
	char *h = NULL;
	int r = -EIO;

	if (bn == NULL)
		goto fail;
	for (int tries = 0; tries < 16; tries++) {
		OPENSSL_free(h);
		h = NULL;
		if (!BN_rand(bn, CA_SERIAL_BITS, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY))
			goto fail;
		if (BN_is_zero(bn))
			continue;
		h = BN_bn2hex(bn);
		if (h == NULL)
			goto fail;
		if (ca_serial_taken(d, h, ca_serial))
			continue;
		*out = BN_to_ASN1_INTEGER(bn, NULL);
		if (*out == NULL)
			goto fail;
		*hex = h;
		h = NULL;
		r = 0;
		goto out;
	}
fail:
	ca_ossl_err("drawing a serial number");
out:
	OPENSSL_free(h);
	BN_free(bn);
	return r;
}

/* ---- certificates and CRLs ---- */

struct ca_profile {
	const char *cn;
	long days;
	long backdate; /* days */
	const char *basic_constraints;
	const char *key_usage;
	const char *ext_key_usage; /* NULL: none */
	GENERAL_NAMES *san;        /* NULL: none */
};

/* Adds one extension given in OpenSSL's config syntax. Returns 0 or -EIO, reported. */
static int ca_add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
	int ok = ext != NULL && X509_add_ext(x, ext, -1);

	X509_EXTENSION_free(ext);
	if (!ok) {
		ca_ossl_err(OBJ_nid2ln(nid));
		return -EIO;
	}
	return 0;
}

/*
 * Builds and signs a certificate for key per profile p. With issuer NULL it is a self-signed CA
 * certificate (signed by key); otherwise issuer_key signs it and it carries the issuer's key id.
 * Validity runs from now - p->backdate days for p->days days. On success the caller owns *out.
 * Returns 0 or a negative errno, reported.
 */
static int ca_sign_cert(const struct ca_profile *p, EVP_PKEY *key, ASN1_INTEGER *serial, time_t now,
                        X509 *issuer, EVP_PKEY *issuer_key, X509 **out)
{
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();
	X509V3_CTX ctx;
	int r = -EIO;

	if (x == NULL || name == NULL || !X509_set_version(x, X509_VERSION_3) ||
	    !X509_set_serialNumber(x, serial) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)p->cn, -1,
	                                -1, 0) ||
	    !X509_set_subject_name(x, name) ||
	    !X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name) ||
	    X509_time_adj_ex(X509_getm_notBefore(x), -(int)p->backdate, 0, &now) == NULL ||
	    X509_time_adj_ex(X509_getm_notAfter(x), (int)(p->days - p->backdate), 0, &now) ==
	            NULL ||
	    !X509_set_pubkey(x, key)) {
		ca_ossl_err("building the certificate");
		goto out;
	}
	X509V3_set_ctx(&ctx, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
	if (ca_add_ext(x, &ctx, NID_basic_constraints, p->basic_constraints) < 0 ||
	    ca_add_ext(x, &ctx, NID_key_usage, p->key_usage) < 0 ||
	    (p->ext_key_usage != NULL &&
	     ca_add_ext(x, &ctx, NID_ext_key_usage, p->ext_key_usage) < 0) ||
	    ca_add_ext(x, &ctx, NID_subject_key_identifier, "hash") < 0 ||
	    (issuer != NULL &&
	     ca_add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always") < 0))
		goto out;
	if (p->san != NULL &&
	    X509_add1_ext_i2d(x, NID_subject_alt_name, p->san, 0, X509V3_ADD_DEFAULT) != 1) {
		ca_ossl_err("subjectAltName");
		goto out;
	}
	if (X509_sign(x, issuer_key != NULL ? issuer_key : key, EVP_sha256()) <= 0) {
		ca_ossl_err("signing the certificate");
		goto out;
	}
	*out = x;
	x = NULL;
	r = 0;
out:
	X509_NAME_free(name);
	X509_free(x);
	return r;
}

/* Makes a P-256 key; the caller owns it. Returns NULL on failure, reported. */
static EVP_PKEY *ca_keygen(void)
{
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

	if (key == NULL)
		ca_ossl_err("generating a P-256 key");
	return key;
}

/* Adds one revoked entry to crl. Returns 0 or -EINVAL/-EIO, reported. */
static int ca_crl_add(X509_CRL *crl, const char *serial_hex, time_t when)
{
	BIGNUM *bn = NULL;
	ASN1_INTEGER *serial = NULL;
	ASN1_TIME *t = NULL;
	X509_REVOKED *rev = NULL;
	int r = -EIO, n;

	n = BN_hex2bn(&bn, serial_hex);
	if (n <= 0 || (size_t)n != strlen(serial_hex) || bn == NULL || BN_is_zero(bn) ||
	    BN_is_negative(bn)) {
		ca_err(CA_FILE_INDEX ": bad serial '%s'", serial_hex);
		r = -EINVAL;
		goto out;
	}
	serial = BN_to_ASN1_INTEGER(bn, NULL);
	t = ASN1_TIME_set(NULL, when);
	rev = X509_REVOKED_new();
	if (serial == NULL || t == NULL || rev == NULL ||
	    !X509_REVOKED_set_serialNumber(rev, serial) ||
	    !X509_REVOKED_set_revocationDate(rev, t) || !X509_CRL_add0_revoked(crl, rev)) {
		ca_ossl_err("adding to the CRL");
		goto out;
	}
	rev = NULL;
	r = 0;
out:
	X509_REVOKED_free(rev);
	ASN1_TIME_free(t);
	ASN1_INTEGER_free(serial);
	BN_free(bn);
	return r;
}

struct ca_crl_fill {
	X509_CRL *crl;
	const char *issuer;
};

static int ca_crl_fill_one(void *arg, const char *serial, const char *issuer, time_t t)
{
	struct ca_crl_fill *f = arg;

	if (strcasecmp(issuer, f->issuer) != 0)
		return 0;
	return ca_crl_add(f->crl, serial, t);
}

/*
 * Builds and signs the CRL numbered number of the CA ca: every revocation in revoked.log that
 * ca issued, next update in days days. On success the caller owns *out. Returns 0 or a
 * negative errno, reported.
 */
static int ca_build_crl(const struct ca_dir *d, X509 *ca, EVP_PKEY *cakey, json_int_t number,
                        long days, time_t now, X509_CRL **out)
{
	X509_CRL *crl = X509_CRL_new();
	ASN1_TIME *last = ASN1_TIME_set(NULL, now);
	ASN1_TIME *next = ASN1_TIME_adj(NULL, now, (int)days, 0);
	ASN1_INTEGER *num = ASN1_INTEGER_new();
	X509_EXTENSION *aki = NULL;
	char *issuer = NULL;
	struct ca_crl_fill fill;
	X509V3_CTX ctx;
	int r = -EIO;

	if (crl == NULL || last == NULL || next == NULL || num == NULL ||
	    !X509_CRL_set_version(crl, X509_CRL_VERSION_2) ||
	    !X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca)) ||
	    !X509_CRL_set1_lastUpdate(crl, last) || !X509_CRL_set1_nextUpdate(crl, next) ||
	    !ASN1_INTEGER_set_int64(num, (int64_t)number) ||
	    X509_CRL_add1_ext_i2d(crl, NID_crl_number, num, 0, X509V3_ADD_DEFAULT) != 1) {
		ca_ossl_err("building the CRL");
		goto out;
	}
	X509V3_set_ctx(&ctx, ca, NULL, NULL, crl, 0);
	aki = X509V3_EXT_conf_nid(NULL, &ctx, NID_authority_key_identifier, "keyid:always");
	if (aki == NULL || !X509_CRL_add_ext(crl, aki, -1)) {
		ca_ossl_err("CRL authorityKeyIdentifier");
		goto out;
	}
	issuer = ca_serial_hex(X509_get0_serialNumber(ca));
	if (issuer == NULL)
		goto out;
	fill = (struct ca_crl_fill){.crl = crl, .issuer = issuer};
	r = ca_revoked_each(d, ca_crl_fill_one, &fill);
	if (r < 0)
		goto out;
	r = -EIO;
	if (!X509_CRL_sort(crl) || X509_CRL_sign(crl, cakey, EVP_sha256()) <= 0) {
		ca_ossl_err("signing the CRL");
		goto out;
	}
	*out = crl;
	crl = NULL;
	r = 0;
out:
	OPENSSL_free(issuer);
	X509_EXTENSION_free(aki);
	ASN1_INTEGER_free(num);
	ASN1_TIME_free(next);
	ASN1_TIME_free(last);
	X509_CRL_free(crl);
	return r;
}

/* Builds the CRL of ca (see ca_build_crl) and appends it as PEM to bio. */
static int ca_crl_to_bio(const struct ca_dir *d, X509 *ca, EVP_PKEY *cakey, json_int_t number,
                         long days, time_t now, BIO *bio)
{
	X509_CRL *crl = NULL;
	int r = ca_build_crl(d, ca, cakey, number, days, now, &crl);

	if (r == 0 && !PEM_write_bio_X509_CRL(bio, crl)) {
		ca_ossl_err("encoding the CRL");
		r = -EIO;
	}
	X509_CRL_free(crl);
	return r;
}

/*
 * Appends the CRL of every intermediate CA under intermediates/ that has not expired (its
 * certificates cannot verify any more once it has). Returns 0 or a negative errno, reported.
 */
static int ca_intermediate_crls(const struct ca_dir *d, json_int_t number, long days, time_t now,
                                BIO *bio)
{
	int fd = openat(d->fd, CA_DIR_INTERMEDIATES, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;
	int r = 0;

	if (dir == NULL) {
		if (fd >= 0)
			close(fd);
		if (errno == ENOENT)
			return 0;
		r = -errno;
		ca_err("%s/" CA_DIR_INTERMEDIATES ": %s", d->path, strerror(errno));
		return r;
	}
	while (r == 0 && (de = readdir(dir)) != NULL) {
		size_t n = strlen(de->d_name);
		char crt[NAME_MAX + 32], key[NAME_MAX + 32];
		X509 *x = NULL;
		EVP_PKEY *k = NULL;

		if (de->d_name[0] == '.' || n < 5 || strcmp(de->d_name + n - 4, ".crt") != 0)
			continue;
		snprintf(crt, sizeof(crt), CA_DIR_INTERMEDIATES "/%s", de->d_name);
		snprintf(key, sizeof(key), CA_DIR_INTERMEDIATES "/%.*s.key", (int)(n - 4),
		         de->d_name);
		r = ca_load_pair(d, crt, key, &x, &k);
		if (r == 0 && X509_cmp_time(X509_get0_notAfter(x), &now) > 0)
			r = ca_crl_to_bio(d, x, k, number, days, now, bio);
		X509_free(x);
		EVP_PKEY_free(k);
	}
	closedir(dir);
	return r;
}

/*
 * Publishes new CRLs: the root CA's, then one per intermediate CA, all in crl.pem, with the
 * next CRL number; records that number in index.json, then writes crl.pem. index.json goes
 * first, so a number is never reused even if writing crl.pem fails. Returns 0 or a negative
 * errno, reported.
 */
static int ca_publish_crl(const struct ca_dir *d, X509 *ca, EVP_PKEY *cakey, json_t *index,
                          long days, time_t now, struct ca_created *created)
{
	json_int_t number = json_integer_value(json_object_get(index, "crl_number")) + 1;
	BIO *bio = BIO_new(BIO_s_mem());
	int r = -EIO;

	if (bio == NULL) {
		ca_ossl_err("encoding the CRL");
		goto out;
	}
	r = ca_crl_to_bio(d, ca, cakey, number, days, now, bio);
	if (r == 0)
		r = ca_intermediate_crls(d, number, days, now, bio);
	if (r < 0)
		goto out;
	r = -EIO;
	if (json_object_set_new(index, "crl_number", json_integer(number)) < 0) {
		ca_err("out of memory");
		goto out;
	}
	r = ca_index_save(d, index, created);
	if (r < 0)
		goto out;
	r = ca_write_bio(d, CA_FILE_CRL, bio, CA_FILE_PUB_MODE, true, created);
	if (r < 0 && created == NULL)
		ca_err("index.json is updated; run 'sealpush-ca crl %s' to retry crl.pem", d->path);
out:
	BIO_free(bio);
	return r;
}

/*
 * Makes the entry of a newly issued certificate: token (64 hex) for a device, the --name/--ip
 * lists of san for a server (NULL otherwise), issuer the signing CA's serial. On success the
 * caller owns *out. Returns 0 or a negative errno, reported.
 */
static int ca_entry_new(const char *name, const char *kind, const char *serial, const char *issuer,
                        const char *token, const struct ca_args *san, X509 *cert, json_t **out)
{
	char not_after[CA_TIME_LEN];
	json_t *e = NULL, *dns = NULL, *ips = NULL;
	int r = -ENOMEM;

	if (ca_asn1_time_str(X509_get0_notAfter(cert), not_after) < 0) {
		ca_err("%s: unrepresentable notAfter", name);
		return -EINVAL;
	}
	e = json_pack("{s:s, s:s, s:s, s:s}", "name", name, "kind", kind, "serial", serial,
	              "issuer", issuer);
	if (e == NULL)
		goto out;
	if (token != NULL && json_object_set_new(e, "token", json_string(token)) < 0)
		goto out;
	if (san != NULL) {
		dns = json_array();
		ips = json_array();
		if (dns == NULL || ips == NULL)
			goto out;
		for (size_t i = 0; i < san->nnames; i++) {
			if (json_array_append_new(dns, json_string(san->names[i])) < 0)
				goto out;
		}
		for (size_t i = 0; i < san->nips; i++) {
			if (json_array_append_new(ips, json_string(san->ips[i])) < 0)
				goto out;
		}
		if (json_object_set_new(e, "dns", dns) < 0) {
			dns = NULL;
			goto out;
		}
		dns = NULL;
		if (json_object_set_new(e, "ip", ips) < 0) {
			ips = NULL;
			goto out;
		}
		ips = NULL;
	}
	if (json_object_set_new(e, "not_after", json_string(not_after)) < 0 ||
	    json_object_set_new(e, "revoked_at", json_null()) < 0)
		goto out;
	*out = e;
	e = NULL;
	r = 0;
out:
	if (r < 0)
		ca_err("out of memory");
	json_decref(ips);
	json_decref(dns);
	json_decref(e);
	return r;
}

/* Refuses to issue from an expired CA. Returns 0, or -EINVAL (reported). */
static int ca_check_expiry(X509 *ca, time_t now)
{
	char when[CA_TIME_LEN] = "?";

	if (X509_cmp_time(X509_get0_notAfter(ca), &now) <= 0) {
		ca_asn1_time_str(X509_get0_notAfter(ca), when);
		ca_err("the CA certificate expired at %s; create a new CA", when);
		return -EINVAL;
	}
	return 0;
}

/* Warns on stderr if cert expires after the CA certificate (it stops verifying then). */
static void ca_warn_outlives(X509 *ca, X509 *cert, const char *file)
{
	char when[CA_TIME_LEN] = "?";

	if (ASN1_TIME_compare(X509_get0_notAfter(cert), X509_get0_notAfter(ca)) > 0) {
		ca_asn1_time_str(X509_get0_notAfter(ca), when);
		ca_err("warning: %s outlives the CA certificate, which expires at %s", file, when);
	}
}

/*
 * What a command that works on an existing CA holds: the locked directory, the CA certificate,
 * key and serial, the index, and the certificate it issues (if any) with its key and serial.
 * ca_session_open() fills it; ca_session_close() frees all of it, whatever was or was not
 * loaded.
 */
struct ca_session {
	struct ca_dir d;
	time_t now;
	X509 *ca;
	EVP_PKEY *cakey;
	char *ca_serial;
	json_t *index;
	/* ca_session_issue(): */
	EVP_PKEY *key;
	ASN1_INTEGER *serial;
	char *serial_hex;
	X509 *cert;
};

/*
 * Opens DIR (locked) and loads its CA certificate, key and index. When `issuing`, also refuses
 * a CA that has expired. Returns 0 or a negative errno (already reported); the caller closes
 * the session whatever the result.
 */
static int ca_session_open(struct ca_session *s, const char *path, bool issuing)
{
	int r;

	*s = (struct ca_session){.d = {.fd = -1}, .now = time(NULL)};
	r = ca_dir_open(path, false, &s->d);
	if (r < 0)
		return r;
	r = ca_load_ca(&s->d, &s->ca, &s->cakey);
	if (r < 0)
		return r;
	s->ca_serial = ca_serial_hex(X509_get0_serialNumber(s->ca));
	if (s->ca_serial == NULL)
		return -EIO;
	r = ca_index_load(&s->d, s->ca_serial, &s->index);
	if (r < 0 || !issuing)
		return r;
	return ca_check_expiry(s->ca, s->now);
}

/* Makes a key and a serial and signs s->cert per profile p. Returns 0 or a negative errno,
 * reported. */
static int ca_session_issue(struct ca_session *s, const struct ca_profile *p)
{
	int r;

	s->key = ca_keygen();
	if (s->key == NULL)
		return -EIO;
	r = ca_new_serial(&s->d, s->ca_serial, &s->serial, &s->serial_hex);
	if (r < 0)
		return r;
	return ca_sign_cert(p, s->key, s->serial, s->now, s->ca, s->cakey, &s->cert);
}

/*
 * Records what ca_session_issue() made as a new certificate of its own: the key and certificate
 * as new files DIR/key_file and DIR/crt_file (noted in created, for ca_rollback), then its
 * entry in certs/ (name, kind, token as ca_entry_new), last, so that nothing is on record as
 * issued unless its files are there. Returns 0 or a negative errno, reported.
 */
static int ca_session_record(struct ca_session *s, const char *name, const char *kind,
                             const char *token_hex, const char *key_file, const char *crt_file,
                             struct ca_created *created)
{
	json_t *e = NULL;
	int r;

	r = ca_entry_new(name, kind, s->serial_hex, s->ca_serial, token_hex, NULL, s->cert, &e);
	if (r == 0)
		r = ca_write_pair(&s->d, key_file, s->key, crt_file, s->cert, false, created);
	if (r == 0)
		r = ca_entry_save(&s->d, e, false);
	json_decref(e);
	return r;
}

/* Closes the directory and frees everything; returns the command's exit code for r. */
static int ca_session_close(struct ca_session *s, int r)
{
	ca_dir_close(&s->d);
	json_decref(s->index);
	OPENSSL_free(s->serial_hex);
	OPENSSL_free(s->ca_serial);
	ASN1_INTEGER_free(s->serial);
	X509_free(s->cert);
	X509_free(s->ca);
	EVP_PKEY_free(s->key);
	EVP_PKEY_free(s->cakey);
	return r < 0 ? CA_EXIT_FAIL : 0;
}

/* ---- commands ---- */

static int ca_cmd_init(const struct ca_args *a)
{
	struct ca_session s = {.d = {.fd = -1}, .now = time(NULL)};
	struct ca_created created = {.n = 0};
	struct ca_profile prof = {
	        .cn = a->nnames > 0 ? a->names[0] : CA_DEFAULT_CN,
	        .days = a->days > 0 ? a->days : CA_DEFAULT_CA_DAYS,
	        .backdate = 0,
	        /* pathlen 1: one intermediate CA (sealpush-ca intermediate) may sit below. */
	        .basic_constraints = "critical,CA:TRUE,pathlen:1",
	        .key_usage = "critical,keyCertSign,cRLSign",
	        .ext_key_usage = NULL,
	        .san = NULL,
	};
	const char *const files[] = {CA_FILE_CA_KEY, CA_FILE_CA_CRT, CA_FILE_INDEX};
	char until[CA_TIME_LEN] = "?";
	int r;

	if (a->nnames > 1 || !ca_valid_cn(prof.cn)) {
		ca_err("init: --name takes one CA name of 1 to %d characters", CA_NAME_MAX);
		return CA_EXIT_USAGE;
	}
	r = ca_dir_open(a->pos[0], true, &s.d);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		r = ca_exists(&s.d, files[i]);
		if (r > 0) {
			ca_err("%s already holds a CA (%s); refusing to overwrite it", s.d.path,
			       files[i]);
			r = -EEXIST;
		}
		if (r < 0)
			goto out;
	}
	r = ca_index_dirs(&s.d);
	if (r < 0)
		goto out;
	r = -ENOMEM;
	s.index = json_pack("{s:i, s:I}", "version", CA_INDEX_VERSION, "crl_number", (json_int_t)0);
	if (s.index == NULL) {
		ca_err("out of memory");
		goto out;
	}
	r = -EIO;
	s.cakey = ca_keygen();
	if (s.cakey == NULL)
		goto out;
	r = ca_new_serial(NULL, NULL, &s.serial, &s.serial_hex);
	if (r < 0)
		goto out;
	r = ca_sign_cert(&prof, s.cakey, s.serial, s.now, NULL, NULL, &s.ca);
	if (r < 0)
		goto out;
	r = ca_write_pair(&s.d, CA_FILE_CA_KEY, s.cakey, CA_FILE_CA_CRT, s.ca, false, &created);
	if (r < 0)
		goto out;
	/* An empty CRL from the start: the relay loads crl.pem even when nothing is revoked. */
	r = ca_publish_crl(&s.d, s.ca, s.cakey, s.index, CA_DEFAULT_CRL_DAYS, s.now, &created);
	if (r < 0)
		goto out;
	ca_asn1_time_str(X509_get0_notAfter(s.ca), until);
	fprintf(stderr, "sealpush-ca: created CA \"%s\" in %s, valid until %s\n", prof.cn, s.d.path,
	        until);
out:
	if (r < 0)
		ca_rollback(&s.d, &created);
	return ca_session_close(&s, r);
}

/* Builds the subjectAltName of every --name and --ip; the caller owns *out. */
static int ca_build_san(const struct ca_args *a, GENERAL_NAMES **out)
{
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
	GENERAL_NAME *g = NULL;
	int r = -EIO;

	if (gens == NULL)
		goto fail;
	for (size_t i = 0; i < a->nnames + a->nips; i++) {
		ASN1_STRING *s = NULL;
		unsigned char addr[16];
		int len;

		g = GENERAL_NAME_new();
		if (g == NULL)
			goto fail;
		if (i < a->nnames) {
			s = ASN1_IA5STRING_new();
			if (s == NULL || !ASN1_STRING_set(s, a->names[i], -1)) {
				ASN1_IA5STRING_free(s);
				goto fail;
			}
			GENERAL_NAME_set0_value(g, GEN_DNS, s);
		} else {
			len = ca_parse_ip(a->ips[i - a->nnames], addr);
			s = ASN1_OCTET_STRING_new();
			if (len < 0 || s == NULL || !ASN1_OCTET_STRING_set(s, addr, len)) {
				ASN1_OCTET_STRING_free(s);
				goto fail;
			}
			GENERAL_NAME_set0_value(g, GEN_IPADD, s);
		}
		if (!sk_GENERAL_NAME_push(gens, g))
			goto fail;
		g = NULL;
	}
	*out = gens;
	return 0;
fail:
	ca_ossl_err("building subjectAltName");
	GENERAL_NAME_free(g);
	GENERAL_NAMES_free(gens);
	return r;
}

static int ca_cmd_server(const struct ca_args *a)
{
	struct ca_session s;
	struct ca_profile prof = {
	        .cn = CA_SERVER_CN,
	        .days = a->days > 0 ? a->days : CA_DEFAULT_LEAF_DAYS,
	        .backdate = 0,
	        .basic_constraints = "critical,CA:FALSE",
	        .key_usage = "critical,digitalSignature",
	        .ext_key_usage = "serverAuth",
	        .san = NULL,
	};
	char until[CA_TIME_LEN] = "?";
	unsigned char addr[16];
	json_t *e = NULL;
	int r;

	if (a->nnames == 0) {
		ca_err("server: at least one --name HOST is needed");
		return CA_EXIT_USAGE;
	}
	for (size_t i = 0; i < a->nnames; i++) {
		if (inet_pton(AF_INET, a->names[i], addr) == 1 || strchr(a->names[i], ':')) {
			ca_err("server: '%s' is an address; use --ip for it", a->names[i]);
			return CA_EXIT_USAGE;
		}
		if (!ca_valid_dns_name(a->names[i])) {
			ca_err("server: '%s' is not a valid host name", a->names[i]);
			return CA_EXIT_USAGE;
		}
	}
	for (size_t i = 0; i < a->nips; i++) {
		if (ca_parse_ip(a->ips[i], addr) < 0) {
			ca_err("server: '%s' is not an IPv4 or IPv6 address", a->ips[i]);
			return CA_EXIT_USAGE;
		}
	}
	/* Clients match the subjectAltName; the CN is only a label, and holds at most 64. */
	if (strlen(a->names[0]) <= CA_NAME_MAX)
		prof.cn = a->names[0];

	r = ca_session_open(&s, a->pos[0], true);
	if (r < 0)
		goto out;
	r = ca_build_san(a, &prof.san);
	if (r < 0)
		goto out;
	r = ca_session_issue(&s, &prof);
	if (r < 0)
		goto out;
	r = ca_exists(&s.d, CA_FILE_SRV_CRT);
	if (r < 0)
		goto out;
	if (r > 0)
		fprintf(stderr,
		        "sealpush-ca: replacing the existing %s/" CA_FILE_SRV_KEY
		        " and " CA_FILE_SRV_CRT " (rotation)\n",
		        s.d.path);
	r = ca_entry_new(CA_KIND_SERVER, CA_KIND_SERVER, s.serial_hex, s.ca_serial, NULL, a, s.cert,
	                 &e);
	if (r < 0)
		goto out;
	/* The entry first: what is in use is always on record. */
	r = ca_entry_save(&s.d, e, false);
	if (r < 0)
		goto out;
	r = ca_write_pair(&s.d, CA_FILE_SRV_KEY, s.key, CA_FILE_SRV_CRT, s.cert, true, NULL);
	if (r < 0)
		goto out;
	ca_warn_outlives(s.ca, s.cert, CA_FILE_SRV_CRT);
	ca_asn1_time_str(X509_get0_notAfter(s.cert), until);
	fprintf(stderr, "sealpush-ca: issued %s/" CA_FILE_SRV_CRT " (serial %s), valid until %s\n",
	        s.d.path, s.serial_hex, until);
out:
	json_decref(e);
	GENERAL_NAMES_free(prof.san);
	return ca_session_close(&s, r);
}

static void ca_usage_name(const char *cmd)
{
	ca_err("%s: a NAME is 1 to %d of A-Z a-z 0-9 . _ -, does not start with '.', and is not "
	       "\"ca\", \"server\" or \"intermediate\"",
	       cmd, CA_NAME_MAX);
}

static int ca_cmd_device(const struct ca_args *a)
{
	struct ca_session s;
	struct ca_created created = {.n = 0};
	const char *name = a->pos[1];
	struct ca_profile prof = {
	        .cn = name,
	        .days = a->days > 0 ? a->days : CA_DEFAULT_LEAF_DAYS,
	        .backdate = a->backdate,
	        .basic_constraints = "critical,CA:FALSE",
	        .key_usage = "critical,digitalSignature",
	        .ext_key_usage = "clientAuth",
	        .san = NULL,
	};
	char key_file[CA_NAME_MAX + sizeof(".key")], crt_file[CA_NAME_MAX + sizeof(".crt")];
	char link[CA_NAME_MAX + 16];
	uint8_t token[SP_TOKEN_LEN];
	char token_hex[SP_TOKEN_HEX_LEN + 1];
	json_t *old = NULL;
	int r;

	if (!ca_valid_device_name(name)) {
		ca_usage_name("device");
		return CA_EXIT_USAGE;
	}
	snprintf(key_file, sizeof(key_file), "%s.key", name);
	snprintf(crt_file, sizeof(crt_file), "%s.crt", name);
	snprintf(link, sizeof(link), CA_DIR_DEVICES "/%s.json", name);

	r = ca_session_open(&s, a->pos[0], true);
	if (r < 0)
		goto out;
	r = ca_exists(&s.d, key_file);
	if (r == 0)
		r = ca_exists(&s.d, crt_file);
	if (r == 0) {
		/* A name whose certificate was revoked (and its files removed) may be reissued. */
		r = ca_entry_load(&s.d, link, &old);
		if (r == -ENOENT)
			r = 0;
		else if (r == 0)
			r = json_is_null(json_object_get(old, "revoked_at")) ? 1 : 0;
	}
	if (r > 0) {
		ca_err("device %s already exists; refusing to overwrite it", name);
		r = -EEXIST;
	}
	if (r < 0)
		goto out;
	r = ca_session_issue(&s, &prof);
	if (r < 0)
		goto out;
	r = sp_token_from_cert(s.cert, token);
	if (r < 0) {
		ca_err("computing the token: %s", strerror(-r));
		goto out;
	}
	sp_token_hex(token, token_hex);
	/* The entry last: a device is only issued once the index can revoke it. */
	r = ca_session_record(&s, name, CA_KIND_DEVICE, token_hex, key_file, crt_file, &created);
	if (r < 0)
		goto out;
	r = ca_device_link(&s.d, name, s.serial_hex, old != NULL);
	if (r < 0)
		goto out;
	created.n = 0; /* committed */
	ca_warn_outlives(s.ca, s.cert, crt_file);
	if (printf("%s\n", token_hex) < 0 || fflush(stdout) != 0) {
		/* Issued and recorded all the same: the token is in devices/NAME.json. */
		ca_err("writing the token to stdout: %s", strerror(errno));
		r = -EIO;
	}
out:
	if (r < 0)
		ca_rollback(&s.d, &created);
	json_decref(old);
	return ca_session_close(&s, r);
}

/* Revokes the certificate of entry e (issued by the CA whose serial is the entry's issuer):
 * revoked.log first (the CRLs' source), then the entry, then the CRLs. */
static int ca_revoke_entry(struct ca_session *s, json_t *e)
{
	const char *serial = json_string_value(json_object_get(e, "serial"));
	const char *issuer = json_string_value(json_object_get(e, "issuer"));
	char when[CA_TIME_LEN];
	int r;

	if (!json_is_null(json_object_get(e, "revoked_at"))) {
		ca_err("%s: %s %s (serial %s) is already revoked (at %s)", s->d.path,
		       json_string_value(json_object_get(e, "kind")),
		       json_string_value(json_object_get(e, "name")), serial,
		       json_string_value(json_object_get(e, "revoked_at")));
		return -EALREADY;
	}
	r = ca_revoked_append(&s->d, serial, issuer != NULL ? issuer : s->ca_serial, s->now);
	if (r < 0)
		return r;
	if (ca_time_str(s->now, when) < 0 ||
	    json_object_set_new(e, "revoked_at", json_string(when)) < 0) {
		ca_err("out of memory");
		return -ENOMEM;
	}
	r = ca_entry_save(&s->d, e, true);
	if (r < 0)
		return r;
	return ca_publish_crl(&s->d, s->ca, s->cakey, s->index, CA_DEFAULT_CRL_DAYS, s->now, NULL);
}

static int ca_cmd_revoke(const struct ca_args *a)
{
	struct ca_session s;
	const char *name = a->pos[1];
	char link[CA_NAME_MAX + 16];
	json_t *e = NULL;
	int r;

	if (!ca_valid_device_name(name)) {
		ca_usage_name("revoke");
		return CA_EXIT_USAGE;
	}
	snprintf(link, sizeof(link), CA_DIR_DEVICES "/%s.json", name);
	r = ca_session_open(&s, a->pos[0], false);
	if (r < 0)
		goto out;
	r = ca_entry_load(&s.d, link, &e);
	if (r == -ENOENT)
		ca_err("%s: no device named %s", s.d.path, name);
	if (r < 0)
		goto out;
	r = ca_revoke_entry(&s, e);
	if (r < 0)
		goto out;
	fprintf(stderr, "sealpush-ca: revoked %s (serial %s); %s/" CA_FILE_CRL " rewritten\n", name,
	        json_string_value(json_object_get(e, "serial")), s.d.path);
out:
	json_decref(e);
	return ca_session_close(&s, r);
}

/* A serial as given: hex digits (any case, an optional "0x" or ':' separators as openssl
 * prints them), into canonical uppercase hex in whole bytes as BN_bn2hex writes it (no leading
 * zero byte; one leading zero digit where the first byte needs it). Returns 0 or -EINVAL. */
static int ca_parse_serial(const char *s, char out[CA_SERIAL_HEX_MAX + 1])
{
	size_t n = 0;

	if (strncmp(s, "0x", 2) == 0 || strncmp(s, "0X", 2) == 0)
		s += 2;
	for (; *s != '\0'; s++) {
		if (*s == ':')
			continue;
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f') ||
		      (*s >= 'A' && *s <= 'F')))
			return -EINVAL;
		if (n == 0 && *s == '0')
			continue;
		if (n == CA_SERIAL_HEX_MAX)
			return -EINVAL;
		out[n++] = (char)(*s >= 'a' ? *s - 'a' + 'A' : *s);
	}
	if (n % 2 == 1) {
		/* Whole bytes, as BN_bn2hex writes them (and so the entries' file names): the
		 * openssl CLI prints 0x03C9... as 3C9... */
		memmove(out + 1, out, n++);
		out[0] = '0';
	}
	out[n] = '\0';
	return n > 0 ? 0 : -EINVAL;
}

static int ca_cmd_revoke_serial(const struct ca_args *a)
{
	struct ca_session s;
	char serial[CA_SERIAL_HEX_MAX + 1], file[CA_ENTRY_FILE_MAX];
	json_t *e = NULL;
	X509 *im = NULL;
	EVP_PKEY *imkey = NULL;
	char *im_serial = NULL;
	int r;

	if (ca_parse_serial(a->pos[1], serial) < 0) {
		ca_err("revoke-serial: '%s' is not a serial number (hex)", a->pos[1]);
		return CA_EXIT_USAGE;
	}
	r = ca_session_open(&s, a->pos[0], false);
	if (r < 0)
		goto out;
	if (strcmp(serial, s.ca_serial) == 0) {
		ca_err("%s: %s is the root CA itself; a root is retired, not revoked", s.d.path,
		       serial);
		r = -EINVAL;
		goto out;
	}
	ca_entry_file(serial, file);
	r = ca_entry_load(&s.d, file, &e);
	if (r == 0) {
		r = ca_revoke_entry(&s, e);
		if (r == 0)
			fprintf(stderr,
			        "sealpush-ca: revoked %s %s (serial %s); %s/" CA_FILE_CRL
			        " rewritten\n",
			        json_string_value(json_object_get(e, "kind")),
			        json_string_value(json_object_get(e, "name")), serial, s.d.path);
		goto out;
	}
	if (r != -ENOENT)
		goto out;
	/* Not issued here: a device the relay enrolled with the current intermediate CA. */
	r = ca_exists(&s.d, CA_FILE_INT_CRT);
	if (r == 0) {
		ca_err("%s: no certificate with serial %s (and no intermediate CA that could have "
		       "issued it)",
		       s.d.path, serial);
		r = -ENOENT;
	}
	if (r < 0)
		goto out;
	r = ca_load_pair(&s.d, CA_FILE_INT_CRT, CA_FILE_INT_KEY, &im, &imkey);
	if (r < 0)
		goto out;
	r = -EIO;
	im_serial = ca_serial_hex(X509_get0_serialNumber(im));
	if (im_serial == NULL)
		goto out;
	r = ca_revoked_append(&s.d, serial, im_serial, s.now);
	if (r < 0)
		goto out;
	r = ca_publish_crl(&s.d, s.ca, s.cakey, s.index, CA_DEFAULT_CRL_DAYS, s.now, NULL);
	if (r < 0)
		goto out;
	fprintf(stderr,
	        "sealpush-ca: revoked serial %s, issued by the intermediate CA (serial %s); "
	        "%s/" CA_FILE_CRL " rewritten\n",
	        serial, im_serial, s.d.path);
out:
	OPENSSL_free(im_serial);
	X509_free(im);
	EVP_PKEY_free(imkey);
	json_decref(e);
	return ca_session_close(&s, r);
}

static int ca_cmd_intermediate(const struct ca_args *a)
{
	struct ca_session s;
	struct ca_created created = {.n = 0};
	struct ca_profile prof = {
	        .cn = a->nnames > 0 ? a->names[0] : CA_DEFAULT_INT_CN,
	        .days = a->days > 0 ? a->days : CA_DEFAULT_INT_DAYS,
	        .backdate = 0,
	        .basic_constraints = "critical,CA:TRUE,pathlen:0",
	        .key_usage = "critical,keyCertSign,cRLSign",
	        .ext_key_usage = NULL,
	        .san = NULL,
	};
	char key_file[CA_ENTRY_FILE_MAX], crt_file[CA_ENTRY_FILE_MAX], until[CA_TIME_LEN] = "?";
	long pathlen;
	int r;

	if (a->nnames > 1 || !ca_valid_cn(prof.cn)) {
		ca_err("intermediate: --name takes one CA name of 1 to %d characters", CA_NAME_MAX);
		return CA_EXIT_USAGE;
	}
	r = ca_session_open(&s, a->pos[0], true);
	if (r < 0)
		goto out;
	pathlen = X509_get_pathlen(s.ca);
	if (pathlen == 0) {
		ca_err("%s: this CA was made with pathlen 0 (before intermediates existed) and "
		       "cannot sign one; make a new CA with 'sealpush-ca init'",
		       s.d.path);
		r = -EINVAL;
		goto out;
	}
	r = ca_session_issue(&s, &prof);
	if (r < 0)
		goto out;
	snprintf(key_file, sizeof(key_file), CA_DIR_INTERMEDIATES "/%s.key", s.serial_hex);
	snprintf(crt_file, sizeof(crt_file), CA_DIR_INTERMEDIATES "/%s.crt", s.serial_hex);
	r = ca_session_record(&s, prof.cn, CA_KIND_INTERMEDIATE, NULL, key_file, crt_file,
	                      &created);
	if (r < 0)
		goto out;
	created.n = 0; /* committed: kept under intermediates/ to sign its CRL */
	r = ca_exists(&s.d, CA_FILE_INT_CRT);
	if (r < 0)
		goto out;
	if (r > 0)
		fprintf(stderr,
		        "sealpush-ca: replacing %s/" CA_FILE_INT_CRT
		        " (rotation: the old one stays "
		        "under " CA_DIR_INTERMEDIATES "/ and keeps its CRL until it expires)\n",
		        s.d.path);
	/* The current one, for the relay (enroll_ca_cert, enroll_ca_key). */
	r = ca_write_pair(&s.d, CA_FILE_INT_KEY, s.key, CA_FILE_INT_CRT, s.cert, true, NULL);
	if (r < 0)
		goto out;
	/* Its own (empty) CRL at once: the relay checks the CRL of every CA in a chain. */
	r = ca_publish_crl(&s.d, s.ca, s.cakey, s.index, CA_DEFAULT_CRL_DAYS, s.now, NULL);
	if (r < 0)
		goto out;
	ca_warn_outlives(s.ca, s.cert, CA_FILE_INT_CRT);
	ca_asn1_time_str(X509_get0_notAfter(s.cert), until);
	fprintf(stderr,
	        "sealpush-ca: issued the intermediate CA %s/" CA_FILE_INT_CRT
	        " (serial %s), valid until %s\n",
	        s.d.path, s.serial_hex, until);
	if (printf("%s\n", s.serial_hex) < 0 || fflush(stdout) != 0)
		r = -EIO;
out:
	if (r < 0)
		ca_rollback(&s.d, &created);
	return ca_session_close(&s, r);
}

static int ca_cmd_crl(const struct ca_args *a)
{
	struct ca_session s;
	long days = a->days > 0 ? a->days : CA_DEFAULT_CRL_DAYS;
	int r;

	r = ca_session_open(&s, a->pos[0], false);
	if (r < 0)
		goto out;
	r = ca_publish_crl(&s.d, s.ca, s.cakey, s.index, days, s.now, NULL);
	if (r < 0)
		goto out;
	fprintf(stderr,
	        "sealpush-ca: wrote %s/" CA_FILE_CRL " (number %" JSON_INTEGER_FORMAT
	        ", next update in %ld days)\n",
	        s.d.path, json_integer_value(json_object_get(s.index, "crl_number")), days);
out:
	return ca_session_close(&s, r);
}

/* enroll-code: a one-time enrollment code, written hashed into the relay's Redis. */
static int ca_cmd_enroll_code(const struct ca_args *a)
{
	char host[256], path[256], code[SP_ENROLL_CODE_LEN + 1], key[SP_ENROLL_KEY_LEN + 1];
	char uses[24], exp_s[24], exp_ms[24], when[CA_TIME_LEN] = "?";
	uint16_t port = 0;
	redisContext *rc = NULL;
	redisReply *rep = NULL;
	struct timeval tv = {.tv_sec = 5};
	long long use_n = a->uses > 0 ? a->uses : 1;
	int64_t ttl_ms = a->expires_ms > 0 ? a->expires_ms : CA_DEFAULT_CODE_TTL_MS;
	const char *label = a->label != NULL ? a->label : "";
	time_t exp;
	int r = -EIO;

	if (a->redis == NULL) {
		ca_err("enroll-code: --redis URL is needed (the relay's redis, e.g. "
		       "redis://127.0.0.1:6379 or unix:/run/redis.sock)");
		return CA_EXIT_USAGE;
	}
	if (sp_parse_redis_url(a->redis, host, sizeof(host), &port, path, sizeof(path)) < 0) {
		ca_err("enroll-code: '%s' is not redis://HOST[:PORT] or unix:PATH", a->redis);
		return CA_EXIT_USAGE;
	}
	if (!sp_enroll_label_valid(label, strlen(label))) {
		ca_err("enroll-code: --label is at most %d printable ASCII characters, without "
		       "'\"' "
		       "or '\\'",
		       SP_ENROLL_LABEL_MAX);
		return CA_EXIT_USAGE;
	}
	if (sp_enroll_code_new(code) < 0 || sp_enroll_code_key(code, strlen(code), key) < 0) {
		ca_ossl_err("drawing a code");
		return CA_EXIT_FAIL;
	}
	exp = time(NULL) + (time_t)(ttl_ms / 1000);
	snprintf(uses, sizeof(uses), "%lld", use_n);
	snprintf(exp_s, sizeof(exp_s), "%lld", (long long)exp);
	snprintf(exp_ms, sizeof(exp_ms), "%lld", (long long)exp * 1000);
	rc = path[0] ? redisConnectUnixWithTimeout(path, tv)
	             : redisConnectWithTimeout(host, port, tv);
	if (rc == NULL || rc->err) {
		ca_err("enroll-code: cannot reach redis at %s: %s", a->redis,
		       rc != NULL ? rc->errstr : "out of memory");
		goto out;
	}
	redisSetTimeout(rc, tv);
	rep = redisCommand(rc, "EVAL %s 1 %s %s %s %s %s", SP_ENROLL_CREATE_LUA, key, uses, exp_s,
	                   label, exp_ms);
	if (rep == NULL || rep->type != REDIS_REPLY_INTEGER || rep->integer != 1) {
		ca_err("enroll-code: redis refused the code: %s", rep == NULL ? rc->errstr
		                                                  : rep->type == REDIS_REPLY_ERROR
		                                                          ? rep->str
		                                                          : "the key exists");
		goto out;
	}
	ca_time_str(exp, when);
	fprintf(stderr, "sealpush-ca: enrollment code for %lld device%s%s%s, valid until %s\n",
	        use_n, use_n == 1 ? "" : "s", label[0] ? ", label " : "", label, when);
	r = printf("%s\n", code) < 0 || fflush(stdout) != 0 ? -EIO : 0;
out:
	OPENSSL_cleanse(code, sizeof(code));
	if (rep != NULL)
		freeReplyObject(rep);
	if (rc != NULL)
		redisFree(rc);
	return r < 0 ? CA_EXIT_FAIL : 0;
}

static const struct ca_command ca_commands[] = {
        {"init", "init DIR [--days N] [--name CN]", CA_OPT_DAYS | CA_OPT_NAME, 1, ca_cmd_init},
        {"server", "server DIR --name HOST [--name HOST]... [--ip ADDR]... [--days N]",
         CA_OPT_DAYS | CA_OPT_NAME | CA_OPT_IP, 1, ca_cmd_server},
        {"device", "device DIR NAME [--days N] [--backdate DAYS]", CA_OPT_DAYS | CA_OPT_BACKDATE, 2,
         ca_cmd_device},
        {"intermediate", "intermediate DIR [--days N] [--name CN]", CA_OPT_DAYS | CA_OPT_NAME, 1,
         ca_cmd_intermediate},
        {"revoke", "revoke DIR NAME", 0, 2, ca_cmd_revoke},
        {"revoke-serial", "revoke-serial DIR SERIAL", 0, 2, ca_cmd_revoke_serial},
        {"crl", "crl DIR [--days N]", CA_OPT_DAYS, 1, ca_cmd_crl},
        {"enroll-code", "enroll-code --redis URL [--uses N] [--expires DURATION] [--label TEXT]",
         CA_OPT_REDIS | CA_OPT_USES | CA_OPT_EXPIRES | CA_OPT_LABEL, 0, ca_cmd_enroll_code},
};

int main(int argc, char **argv)
{
	const struct ca_command *cmd = NULL;
	struct ca_args a;

	/* Belt and braces: every file is also created 0600 and chmod'ed explicitly. */
	umask(077);
	if (argc < 2) {
		fputs(ca_usage, stderr);
		return CA_EXIT_USAGE;
	}
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		fputs(ca_usage, stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0) {
		puts("sealpush-ca " SP_VERSION);
		return 0;
	}
	for (size_t i = 0; i < sizeof(ca_commands) / sizeof(ca_commands[0]); i++) {
		if (strcmp(argv[1], ca_commands[i].name) == 0)
			cmd = &ca_commands[i];
	}
	if (cmd == NULL) {
		ca_err("unknown command '%s' (see sealpush-ca --help)", argv[1]);
		return CA_EXIT_USAGE;
	}
	memset(&a, 0, sizeof(a));
	if (ca_parse_args(cmd, argc - 2, argv + 2, &a) < 0)
		return CA_EXIT_USAGE;
	if (a.help) {
		fputs(ca_usage, stdout);
		return 0;
	}
	return cmd->run(&a);
}
