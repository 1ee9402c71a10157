/*
 * sealpush-healthcheck: asks sealpushd's admin endpoint whether the relay is healthy, for
 * container health checks in images that have no shell, curl or wget.
 *
 *	sealpush-healthcheck [--timeout SECONDS] http://127.0.0.1:9090/readyz
 *
 * It sends one "GET PATH HTTP/1.0" to HOST:PORT, prints the status code and the first line of
 * the body ("503 not ready: Redis is unreachable"), and exits 0 for a 2xx status, 1 for any
 * other status, a refused connection or no complete answer within the timeout (default 5 s,
 * for connect, send and receive together), and 2 for bad usage. Only plain http:// URLs with a
 * numeric port; the admin endpoint speaks nothing else.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sp_config.h"

#define RESPONSE_MAX 4096 /* the status line and the start of the body are all we look at */
#define PATH_MAX_LEN 1024

struct target {
	char host[256];
	char hostport[300]; /* as given, for the Host header */
	char path[PATH_MAX_LEN];
	uint16_t port;
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Milliseconds left until deadline, 0 once it has passed. */
static int remaining(uint64_t deadline)
{
	uint64_t now = now_ms();

	return now >= deadline ? 0 : (int)(deadline - now);
}

/* Splits "http://HOST:PORT[/PATH]". Returns 0 or -EINVAL with a message in err. */
static int parse_url(const char *url, struct target *t, char *err, size_t errlen)
{
	const char *hp, *slash;
	size_t hplen;

	if (strncmp(url, "http://", 7) != 0) {
		snprintf(err, errlen, "\"%s\" is not an http:// URL", url);
		return -EINVAL;
	}
	hp = url + 7;
	slash = strchr(hp, '/');
	hplen = slash ? (size_t)(slash - hp) : strlen(hp);
	if (hplen == 0 || hplen >= sizeof(t->hostport)) {
		snprintf(err, errlen, "\"%s\": HOST:PORT is missing or too long", url);
		return -EINVAL;
	}
	memcpy(t->hostport, hp, hplen);
	t->hostport[hplen] = '\0';
	if (sp_parse_hostport(t->hostport, t->host, sizeof(t->host), &t->port) < 0) {
		snprintf(err, errlen, "\"%s\": \"%s\" is not HOST:PORT", url, t->hostport);
		return -EINVAL;
	}
	if (!slash)
		slash = "/";
	if (strlen(slash) >= sizeof(t->path)) {
		snprintf(err, errlen, "\"%s\": the path is too long", url);
		return -EINVAL;
	}
	for (const char *p = slash; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f) {
			snprintf(err, errlen, "\"%s\": the path has a space or control character",
			         url);
			return -EINVAL;
		}
	memcpy(t->path, slash, strlen(slash) + 1);
	return 0;
}

/* Waits until fd is ready for events or the deadline passes. Returns 0, -ETIMEDOUT or -errno. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
	struct pollfd p = {.fd = fd, .events = events};
	int r;

	do {
		r = poll(&p, 1, remaining(deadline));
	} while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	return r == 0 ? -ETIMEDOUT : 0;
}

/* Connects to one address before the deadline. Returns the socket or -errno. */
static int connect_one(const struct addrinfo *ai, uint64_t deadline)
{
	int fd, r, soerr = 0;
	socklen_t len = sizeof(soerr);

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0)
		return -errno;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
		return fd;
	if (errno != EINPROGRESS) {
		r = -errno;
		goto fail;
	}
	r = wait_fd(fd, POLLOUT, deadline);
	if (r < 0)
		goto fail;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0) {
		r = -errno;
		goto fail;
	}
	if (soerr != 0) {
		r = -soerr;
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return r;
}

/*
 * Sends the request and reads the answer into buf (NUL-terminated) until the peer closes or
 * buf is full. Returns the number of bytes read or -errno / -ETIMEDOUT.
 */
static int exchange(int fd, const struct target *t, char *buf, size_t buflen, uint64_t deadline)
{
	char req[PATH_MAX_LEN + 512];
	size_t off = 0, got = 0;
	int len, r;

	len = snprintf(req, sizeof(req),
	               "GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: sealpush-healthcheck\r\n"
	               "Connection: close\r\n\r\n",
	               t->path, t->hostport);
	if (len < 0 || (size_t)len >= sizeof(req))
		return -EINVAL;
	while (off < (size_t)len) {
		ssize_t n = send(fd, req + off, (size_t)len - off, MSG_NOSIGNAL);

		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			r = wait_fd(fd, POLLOUT, deadline);
			if (r < 0)
				return r;
			continue;
		}
		if (n < 0)
			return -errno;
		off += (size_t)n;
	}
	while (got < buflen - 1) {
		ssize_t n = recv(fd, buf + got, buflen - 1 - got, 0);

		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			r = wait_fd(fd, POLLIN, deadline);
			if (r < 0)
				return r;
			continue;
		}
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	buf[got] = '\0';
	return (int)got;
}

/* The status code of "HTTP/1.x NNN ...", or -EPROTO. */
static int status_code(const char *resp)
{
	if (strncmp(resp, "HTTP/1.", 7) != 0 || !resp[7] || resp[8] != ' ')
		return -EPROTO;
	for (int i = 9; i < 12; i++)
		if (resp[i] < '0' || resp[i] > '9')
			return -EPROTO;
	if (resp[12] != ' ' && resp[12] != '\r' && resp[12] != '\n')
		return -EPROTO;
	return (resp[9] - '0') * 100 + (resp[10] - '0') * 10 + (resp[11] - '0');
}

/* Prints the code and the first line of the body, control bytes replaced. */
static void print_answer(int code, const char *resp)
{
	const char *body = strstr(resp, "\r\n\r\n");
	size_t n;

	printf("%d", code);
	if (body) {
		body += 4;
		n = strcspn(body, "\r\n");
		if (n > 200)
			n = 200;
		putchar(' ');
		for (size_t i = 0; i < n; i++)
			putchar((unsigned char)body[i] < ' ' ? '?' : body[i]);
	}
	putchar('\n');
}

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: sealpush-healthcheck [--timeout SECONDS] URL\n\n"
	        "GETs URL (http://HOST:PORT/PATH, e.g. http://127.0.0.1:9090/readyz) and exits\n"
	        "0 for a 2xx answer, 1 otherwise (other status, refused, no answer within\n"
	        "the timeout; default 5 seconds), 2 for bad usage.\n");
}

int main(int argc, char **argv)
{
	struct addrinfo hints = {
	        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	struct target t;
	const char *url = NULL;
	char err[512], port_s[8], resp[RESPONSE_MAX];
	long timeout = 5;
	uint64_t deadline;
	int r, fd = -1, code, status = 1;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
			char *end;

			errno = 0;
			timeout = strtol(argv[++i], &end, 10);
			if (errno || *end || end == argv[i] || timeout < 1 || timeout > 3600) {
				fprintf(stderr,
				        "sealpush-healthcheck: --timeout: \"%s\" is not 1..3600 "
				        "seconds\n",
				        argv[i]);
				return 2;
			}
		} else if (argv[i][0] == '-' || url) {
			fprintf(stderr, "sealpush-healthcheck: unexpected argument \"%s\"\n",
			        argv[i]);
			usage(stderr);
			return 2;
		} else {
			url = argv[i];
		}
	}
	if (!url) {
		usage(stderr);
		return 2;
	}
	if (parse_url(url, &t, err, sizeof(err)) < 0) {
		fprintf(stderr, "sealpush-healthcheck: %s\n", err);
		return 2;
	}
	deadline = now_ms() + (uint64_t)timeout * 1000;
	snprintf(port_s, sizeof(port_s), "%u", t.port);
	r = getaddrinfo(t.host, port_s, &hints, &res);
	if (r != 0 || !res) {
		printf("cannot resolve %s: %s\n", t.host, gai_strerror(r));
		goto out;
	}
	r = -ECONNREFUSED;
	for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
		fd = connect_one(ai, deadline);
		if (fd < 0)
			r = fd;
	}
	if (fd < 0) {
		printf("cannot connect to %s: %s\n", t.hostport, strerror(-r));
		goto out;
	}
	r = exchange(fd, &t, resp, sizeof(resp), deadline);
	if (r < 0) {
		printf("no answer from %s: %s\n", t.hostport, strerror(-r));
		goto out;
	}
	code = status_code(resp);
	if (code < 0) {
		printf("%s did not answer HTTP\n", t.hostport);
		goto out;
	}
	print_answer(code, resp);
	status = code >= 200 && code < 300 ? 0 : 1;
out:
	if (fd >= 0)
		close(fd);
	if (res)
		freeaddrinfo(res);
	fflush(stdout);
	return status;
}
