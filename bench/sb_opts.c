/*
 * sb_opts.c: the command line of sealpush-bench. The scenario name comes first, then long
 * options; each option says which scenarios it applies to, and an option given to a scenario
 * it does not apply to is refused.
 */
#include "sb_opts.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const sb_scenario_names[] = {"throughput", "fanout", "queue", "idle", "handshake"};

static const sb_opts_t defaults = {
        .scenario = SB_THROUGHPUT,
        .host = "127.0.0.1",
        .port = 7443,
        .threads = 1,
        .processes = 1,
        .pairs = 100,
        .window = 32,
        .blob = 256,
        .duration = 10,
        .warmup = 2,
        .messages = 100000,
        .devices = 0,
        .recipients = 10,
        .recv_window = 1024,
        .conns = 0,
        .inflight = 64,
        .connect_timeout = 60,
        .tick_us = 20,
        .settle = 5,
};

void sb_opts_usage(FILE *f)
{
	fprintf(f,
	        "usage: sealpush-bench SCENARIO --ca-dir DIR [OPTIONS]\n"
	        "\n"
	        "Scenarios:\n"
	        "  throughput  P sender->receiver pairs; closed loop (--window) or open loop\n"
	        "              (--rate); delivered/s, send statuses, end-to-end latency\n"
	        "  fanout      S senders, each SEND to N of R receivers; deliveries/s, SENDs/s,\n"
	        "              latency per delivery; closed or open loop as throughput\n"
	        "  queue       M messages to D offline devices, then the devices drain;\n"
	        "              enqueue/s and drain/s, every QUEUED message checked\n"
	        "  idle        hold N connections; with --pid, the relay's RSS per connection\n"
	        "  handshake   C connections at a time: connect, mTLS handshake (full, or resumed\n"
	        "              with --resume), wait for the session ticket (or HELLO/WELCOME with\n"
	        "              --hello), close, again; handshakes/s and handshake latency\n"
	        "\n"
	        "Options:\n"
	        "  --server HOST:PORT   relay address (default 127.0.0.1:7443); given twice, "
	        "senders\n"
	        "                       use the first and receivers the second (relays of a\n"
	        "                       cluster: every message crosses nodes)\n"
	        "  --ca-dir DIR         sealpush-ca directory: ca.crt verifies the relay, and\n"
	        "                       bench-sN / bench-rN device identities live (or are made) "
	        "here\n"
	        "  --sealpush-ca PATH   the sealpush-ca command (default: next to this binary, "
	        "else PATH)\n"
	        "  --processes K        bench processes (default 1); the connections are split\n"
	        "                       over them, so the descriptor limit applies per process\n"
	        "  --threads N          bench threads per process, one event base each "
	        "(default 1)\n"
	        "  --inflight N         connections on their way up at a time, per thread "
	        "(default 64)\n"
	        "  --connect-timeout S  seconds for every connection to be ready (default 60)\n"
	        "  --duration S         measured seconds (default 10)\n"
	        "  --warmup S           seconds before measuring, not in the figures (default 2)\n"
	        "  --json               one JSON object on stdout (the table goes to stderr)\n"
	        "  --quiet              no progress line (it is also off when stderr is no tty)\n"
	        "  --send-chain         send the CA certificate after the leaf, as clients that\n"
	        "                       load the CA as trust store do by default (default: leaf)\n"
	        "  --tls-ciphersuites L TLS 1.3 suites to offer (OpenSSL syntax)\n"
	        "  --tls-groups L       key-exchange groups to offer, e.g. P-256 or X25519\n"
	        "throughput, fanout, queue:\n"
	        "  --blob N             blob bytes (default 256, at least 8 for latency)\n"
	        "  --window W           unanswered SENDs per sender (default 32)\n"
	        "throughput, fanout:\n");
	fprintf(f,
	        "  --anonymous          sealed sender: the senders connect without a certificate\n"
	        "                       to the first --server (the relay's anon_listen), the\n"
	        "                       receivers register an access key each (ACCESS_SET) on\n"
	        "                       the second, and every SEND carries its recipients' keys\n"
	        "  --rate R             open loop: R SENDs/s in total (default: closed loop)\n"
	        "  --tick-us U          open loop: least timer interval (default 20); sends are\n"
	        "                       scheduled evenly, latency counts from the intended time\n"
	        "throughput:\n"
	        "  --pairs P            sender/receiver pairs (default 100)\n"
	        "fanout:\n"
	        "  --senders S          sending connections (default 10)\n"
	        "  --recipients N       recipients per SEND (default 10)\n"
	        "  --receivers R        receiving connections (default S x N, at least N)\n"
	        "queue:\n"
	        "  --messages M         messages (default 100000)\n"
	        "  --devices D          offline devices (default 100)\n"
	        "  --senders S          sending connections (default 100)\n"
	        "idle:\n"
	        "  --conns N            connections (default 1000)\n"
	        "  --devices D          SEND_ONLY identities shared round robin (default 10)\n"
	        "  --register           connections are receivers, one identity each (bench-rI)\n"
	        "  --pid PID            the relay's pid: VmRSS before and after, KiB per "
	        "connection\n"
	        "  --settle S           seconds between all ready and the RSS reading "
	        "(default 5)\n"
	        "  --hold S             then keep the connections up S more seconds\n"
	        "handshake:\n"
	        "  --conns C            connections at a time (default 32)\n"
	        "  --devices D          identities, used round robin (default 10)\n"
	        "  --resume             resume TLS 1.3 sessions (tickets) after each slot's "
	        "first\n"
	        "  --hello              also HELLO/WELCOME before closing\n"
	        "\n"
	        "Exit status: 0 if nothing was lost, refused or broken; 1 otherwise; 2 usage.\n");
}

static int parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -1;
	*out = (unsigned)v;
	return 0;
}

static int parse_double(const char *s, double lo, double hi, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= lo) || !(v <= hi))
		return -1;
	*out = v;
	return 0;
}

static int parse_server(sb_opts_t *o, const char *arg)
{
	char host[256];
	const char *colon = strrchr(arg, ':');
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	unsigned port;
	size_t hl;
	struct in6_addr a6;

	if (colon == NULL || parse_uint(colon + 1, 1, 65535, &port) < 0)
		return -1;
	hl = (size_t)(colon - arg);
	if (hl > 0 && arg[0] == '[' && arg[hl - 1] == ']') {
		arg++;
		hl -= 2;
	}
	if (hl == 0 || hl >= sizeof(host))
		return -1;
	memcpy(host, arg, hl);
	host[hl] = '\0';
	if (getaddrinfo(host, NULL, &hints, &ai) != 0 || ai == NULL)
		return -1;
	memcpy(&o->addr, ai->ai_addr, ai->ai_addrlen);
	o->addr_len = ai->ai_addrlen;
	freeaddrinfo(ai);
	if (o->addr.ss_family == AF_INET)
		((struct sockaddr_in *)&o->addr)->sin_port = htons((uint16_t)port);
	else
		((struct sockaddr_in6 *)&o->addr)->sin6_port = htons((uint16_t)port);
	o->host_is_ip = inet_pton(AF_INET, host, &a6) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
	o->host = strdup(host);
	o->port = (uint16_t)port;
	return o->host != NULL ? 0 : -1;
}

/* Which scenarios an option applies to (bits of enum sb_scenario; 0 = all). */
#define S_(x)   (1u << (x))
#define S_SEND  (S_(SB_THROUGHPUT) | S_(SB_FANOUT) | S_(SB_QUEUE))
#define S_TRAF  (S_(SB_THROUGHPUT) | S_(SB_FANOUT))
#define S_TIMED (S_TRAF | S_(SB_HANDSHAKE))

/*
 * Every long option, in one place: its enum value, its spelling, whether it takes an
 * argument, and the scenarios it applies to (0 = all). The getopt table, the enum and the
 * scenario check are made from it.
 */
#define SB_OPTIONS(X)                                                                              \
	X(O_SERVER, "server", 1, 0)                                                                \
	X(O_CA_DIR, "ca-dir", 1, 0)                                                                \
	X(O_CA_TOOL, "sealpush-ca", 1, 0)                                                          \
	X(O_THREADS, "threads", 1, 0)                                                              \
	X(O_PROCESSES, "processes", 1, 0)                                                          \
	X(O_PAIRS, "pairs", 1, S_(SB_THROUGHPUT))                                                  \
	X(O_WINDOW, "window", 1, S_SEND)                                                           \
	X(O_RATE, "rate", 1, S_TRAF)                                                               \
	X(O_BLOB, "blob", 1, S_SEND)                                                               \
	X(O_DURATION, "duration", 1, S_TIMED)                                                      \
	X(O_WARMUP, "warmup", 1, S_TIMED)                                                          \
	X(O_MESSAGES, "messages", 1, S_(SB_QUEUE))                                                 \
	X(O_DEVICES, "devices", 1, S_(SB_QUEUE) | S_(SB_IDLE) | S_(SB_HANDSHAKE))                  \
	X(O_SENDERS, "senders", 1, S_(SB_QUEUE) | S_(SB_FANOUT))                                   \
	X(O_RECEIVERS, "receivers", 1, S_(SB_FANOUT))                                              \
	X(O_RECIPIENTS, "recipients", 1, S_(SB_FANOUT))                                            \
	X(O_CONNS, "conns", 1, S_(SB_IDLE) | S_(SB_HANDSHAKE))                                     \
	X(O_INFLIGHT, "inflight", 1, 0)                                                            \
	X(O_CONNECT_TIMEOUT, "connect-timeout", 1, 0)                                              \
	X(O_TICK_US, "tick-us", 1, S_TRAF)                                                         \
	X(O_PID, "pid", 1, S_(SB_IDLE))                                                            \
	X(O_SETTLE, "settle", 1, S_(SB_IDLE))                                                      \
	X(O_HOLD, "hold", 1, S_(SB_IDLE))                                                          \
	X(O_REGISTER, "register", 0, S_(SB_IDLE))                                                  \
	X(O_RESUME, "resume", 0, S_(SB_HANDSHAKE))                                                 \
	X(O_HELLO, "hello", 0, S_(SB_HANDSHAKE))                                                   \
	X(O_ANONYMOUS, "anonymous", 0, S_TRAF)                                                     \
	X(O_JSON, "json", 0, 0)                                                                    \
	X(O_QUIET, "quiet", 0, 0)                                                                  \
	X(O_SEND_CHAIN, "send-chain", 0, 0)                                                        \
	X(O_TLS_CIPHERSUITES, "tls-ciphersuites", 1, 0)                                            \
	X(O_TLS_GROUPS, "tls-groups", 1, 0)

enum {
	O_BEFORE_FIRST = 255,
#define X(id, name, arg, scen) id,
	SB_OPTIONS(X)
#undef X
};

/* clang-format off */
static const struct option lopts[] = {
#define X(id, name, arg, scen) {name, (arg) ? required_argument : no_argument, NULL, id},
	SB_OPTIONS(X)
#undef X
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};
/* clang-format on */

/* Indexed by option - O_SERVER: the scenarios each one means something for (0 = all). */
static const unsigned applies[] = {
#define X(id, name, arg, scen) [id - O_SERVER] = (scen),
        SB_OPTIONS(X)
#undef X
};

int sb_opts_parse(sb_opts_t *o, int argc, char **argv)
{
	bool server_set = false;
	int ch, bad = 0;
	unsigned sc;

	*o = defaults;

	if (argc < 2 || argv[1][0] == '-') {
		if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
			sb_opts_usage(stdout);
			exit(0);
		}
		sb_opts_usage(stderr);
		return -1;
	}
	for (sc = 0; sc <= SB_HANDSHAKE; sc++)
		if (!strcmp(argv[1], sb_scenario_names[sc]))
			break;
	if (sc > SB_HANDSHAKE) {
		fprintf(stderr, "sealpush-bench: unknown scenario '%s' (try --help)\n", argv[1]);
		return -1;
	}
	o->scenario = (enum sb_scenario)sc;
	optind = 2;
	while ((ch = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		unsigned pid = 0;

		if (ch >= O_SERVER &&
		    (size_t)(ch - O_SERVER) < sizeof(applies) / sizeof(applies[0]) &&
		    applies[ch - O_SERVER] != 0 && !(applies[ch - O_SERVER] & S_(o->scenario))) {
			fprintf(stderr, "sealpush-bench: %s does not apply to the %s scenario\n",
			        argv[optind - 1], sb_scenario_names[o->scenario]);
			return -1;
		}
		switch (ch) {
		case O_SERVER:
			if (server_set && !o->raddr_len) {
				/* a second --server: the receivers' relay (cross-node through a
				 * cluster); the first stays the senders' */
				struct sockaddr_storage a = o->addr;
				socklen_t al = o->addr_len;
				const char *h = o->host;
				uint16_t p = o->port;

				bad |= parse_server(o, optarg);
				o->raddr = o->addr;
				o->raddr_len = o->addr_len;
				free((char *)o->host);
				o->addr = a;
				o->addr_len = al;
				o->host = h;
				o->port = p;
			} else {
				bad |= server_set || parse_server(o, optarg);
			}
			server_set = true;
			break;
		case O_CA_DIR:
			o->ca_dir = optarg;
			break;
		case O_CA_TOOL:
			o->ca_tool = optarg;
			break;
		case O_THREADS:
			bad |= parse_uint(optarg, 1, 64, &o->threads);
			break;
		case O_PROCESSES:
			bad |= parse_uint(optarg, 1, 64, &o->processes);
			break;
		case O_PAIRS:
			bad |= parse_uint(optarg, 1, 30000, &o->pairs);
			break;
		case O_WINDOW:
			bad |= parse_uint(optarg, 1, 65535, &o->window);
			break;
		case O_RATE:
			bad |= parse_double(optarg, 0, 1e9, &o->rate);
			break;
		case O_BLOB:
			bad |= parse_uint(optarg, 0, 16 << 20, &o->blob);
			break;
		case O_DURATION:
			bad |= parse_double(optarg, 1, SB_MAX_SECONDS - 1, &o->duration);
			break;
		case O_WARMUP:
			bad |= parse_double(optarg, 0, SB_MAX_SECONDS, &o->warmup);
			break;
		case O_MESSAGES:
			bad |= parse_uint(optarg, 1, 100000000, &o->messages);
			break;
		case O_DEVICES:
			bad |= parse_uint(optarg, 1, 1000000, &o->devices);
			break;
		case O_SENDERS:
			bad |= parse_uint(optarg, 1, 30000, &o->senders);
			break;
		case O_RECEIVERS:
			bad |= parse_uint(optarg, 1, 30000, &o->receivers);
			break;
		case O_RECIPIENTS:
			bad |= parse_uint(optarg, 1, 65535, &o->recipients);
			break;
		case O_CONNS:
			bad |= parse_uint(optarg, 1, 1000000, &o->conns);
			break;
		case O_INFLIGHT:
			bad |= parse_uint(optarg, 1, 65535, &o->inflight);
			break;
		case O_CONNECT_TIMEOUT:
			bad |= parse_double(optarg, 1, SB_MAX_SECONDS, &o->connect_timeout);
			break;
		case O_TICK_US:
			bad |= parse_uint(optarg, 1, 1000000, &o->tick_us);
			break;
		case O_PID:
			bad |= parse_uint(optarg, 1, INT_MAX, &pid);
			o->pid = (long)pid;
			break;
		case O_SETTLE:
			bad |= parse_double(optarg, 0, SB_MAX_SECONDS, &o->settle);
			break;
		case O_HOLD:
			bad |= parse_double(optarg, 0, SB_MAX_SECONDS * 30.0, &o->hold);
			break;
		case O_REGISTER:
			o->register_idle = true;
			break;
		case O_ANONYMOUS:
			o->anonymous = true;
			break;
		case O_RESUME:
			o->resume = true;
			break;
		case O_HELLO:
			o->hello = true;
			break;
		case O_JSON:
			o->json = true;
			break;
		case O_QUIET:
			o->quiet = true;
			break;
		case O_SEND_CHAIN:
			o->send_chain = true;
			break;
		case O_TLS_CIPHERSUITES:
			o->tls_ciphersuites = optarg;
			break;
		case O_TLS_GROUPS:
			o->tls_groups = optarg;
			break;
		case 'h':
			sb_opts_usage(stdout);
			exit(0);
		default:
			return -1;
		}
		if (bad) {
			fprintf(stderr, "sealpush-bench: bad value for %s\n", argv[optind - 1]);
			return -1;
		}
	}
	if (optind != argc || o->ca_dir == NULL) {
		sb_opts_usage(stderr);
		return -1;
	}
	if (!server_set && parse_server(o, "127.0.0.1:7443") < 0)
		return -1;
	if (o->anonymous && !o->raddr_len) {
		fprintf(stderr,
		        "sealpush-bench: --anonymous needs two --server: the relay's "
		        "anonymous door (anon_listen) for the senders, then its device door\n");
		return -1;
	}
	switch (o->scenario) {
	case SB_THROUGHPUT:
		o->senders = o->receivers = o->pairs;
		o->recipients = 1;
		break;
	case SB_FANOUT:
		if (o->senders == 0)
			o->senders = 10;
		if (o->receivers == 0)
			o->receivers = o->senders * o->recipients > 30000
			                       ? 30000
			                       : o->senders * o->recipients;
		if (o->recipients > o->receivers) {
			fprintf(stderr,
			        "sealpush-bench: --recipients %u needs at least as many "
			        "--receivers\n",
			        o->recipients);
			return -1;
		}
		break;
	case SB_QUEUE:
		if (o->senders == 0)
			o->senders = 100;
		if (o->devices == 0)
			o->devices = 100;
		if (o->devices > 30000) {
			fprintf(stderr, "sealpush-bench: at most 30000 --devices for queue\n");
			return -1;
		}
		if (o->senders > o->messages)
			o->senders = o->messages;
		o->recipients = 1;
		break;
	case SB_IDLE:
		if (o->conns == 0)
			o->conns = 1000;
		if (o->devices == 0)
			o->devices = 10;
		break;
	case SB_HANDSHAKE:
		if (o->conns == 0)
			o->conns = 32;
		if (o->devices == 0)
			o->devices = 10;
		break;
	}
	if (o->processes * o->threads > UINT16_MAX) {
		fprintf(stderr, "sealpush-bench: too many processes x threads\n");
		return -1;
	}
	return 0;
}
