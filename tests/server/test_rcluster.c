/*
 * test_rcluster: the Redis Cluster client (server/sp_rcluster.c).
 *
 * Pure cases: key slots (the Redis Cluster specification's examples and hash-tag rules),
 * error replies (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, malformed ones), CLUSTER SLOTS replies
 * (built by hand).
 *
 * Live cases, against a real cluster: six redis-server processes (cluster-enabled, 1 s node
 * timeout) on loopback ports below the ephemeral range (checked to be ours by process_id;
 * three tries on other ports) in a temporary directory, joined with
 * `redis-cli --cluster create ... --cluster-replicas 1`: the map is learnt from one seed;
 * 1,000 keys written and read back through the three masters; a slot migrated by hand
 * (SETSLOT IMPORTING/MIGRATING: ASK for a new key; MIGRATE, SETSLOT NODE: MOVED for the old);
 * kill -9 of a master under a stream of writes: the replica is promoted and the client
 * writes again by itself (the time it took is printed). The store on the same cluster:
 * SCRIPT FLUSH on every master (NOSCRIPT, then EVAL: every message still stored); a
 * MIGRATING slot nobody imports, i.e. an ASK/MOVED loop, ends at the redirect cap with the
 * last error reply (the router's counters and the store's, as /metrics shows them, count
 * every redirection); 3000 writes in flight at kill -9 of a second master, each answered
 * exactly once and all OK; kill -9 of a third master: a message confirmed by WAIT 1 before
 * survives, enqueues are STORED again by themselves (the time from the kill is printed);
 * the three killed masters restarted rejoin as replicas and WAIT 1 confirms on every
 * master again. One cluster serves every case, in that order. Every process is stopped and the
 * directory removed at the end (KEEP=1 keeps it). $REDIS_SERVER picks the server (e.g.
 * valkey-server). Without the server or redis-cli the live cases are skipped.
 */
#include <errno.h>
#include <stdarg.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sp_rcluster.h"
#include "sp_store.h"
#include "sp_test.h"
#include "sp_time.h"

#define N_NODES 6

static char dir[64];
static int ports[N_NODES];
static pid_t pids[N_NODES];
static struct event_base *base;
static bool live;

/* ---- pure ---------------------------------------------------------------------------------- */

static uint16_t slot_of(const char *k)
{
	return sp_rc_keyslot(k, strlen(k));
}

static void test_keyslot(void)
{
	/* The specification's examples and rules. */
	SP_CHECK_EQ_INT(slot_of("123456789"), 0x31c3 & 16383); /* CRC16-XMODEM check value */
	SP_CHECK_EQ_INT(slot_of("foo"), 12182);
	SP_CHECK_EQ_INT(slot_of("bar"), 5061);
	SP_CHECK_EQ_INT(slot_of("{user1000}.following"), slot_of("{user1000}.followers"));
	SP_CHECK_EQ_INT(slot_of("{user1000}.following"), slot_of("user1000"));
	SP_CHECK_EQ_INT(slot_of("foo{}{bar}"), sp_rc_keyslot("foo{}{bar}", 10)); /* whole key */
	SP_CHECK(slot_of("foo{}{bar}") != slot_of("bar"));
	SP_CHECK_EQ_INT(slot_of("foo{{bar}}zap"), slot_of("{bar"));
	SP_CHECK_EQ_INT(slot_of("foo{bar}{zap}"), slot_of("bar"));
	SP_CHECK_EQ_INT(slot_of("{}"), sp_rc_keyslot("{}", 2));
	SP_CHECK_EQ_INT(slot_of("no-close{x"), sp_rc_keyslot("no-close{x", 10));
	SP_CHECK_EQ_INT(sp_rc_keyslot("", 0), 0);
	/* Binary keys: the tag rules work on bytes. */
	SP_CHECK_EQ_INT(sp_rc_keyslot("a\0{b}", 5), slot_of("b"));
}

static void test_parse_error(void)
{
	sp_rc_redirect_t r;

	SP_CHECK_EQ_INT(sp_rc_parse_error("MOVED 3999 127.0.0.1:6381", 25, &r), SP_RC_MOVED);
	SP_CHECK_EQ_INT(r.slot, 3999);
	SP_CHECK_EQ_INT(r.port, 6381);
	SP_CHECK(strcmp(r.host, "127.0.0.1") == 0);
	SP_CHECK_EQ_INT(sp_rc_parse_error("ASK 16383 ::1:7000", 18, &r), SP_RC_ASK);
	SP_CHECK_EQ_INT(r.slot, 16383);
	SP_CHECK(strcmp(r.host, "::1") == 0 && r.port == 7000);
	SP_CHECK_EQ_INT(sp_rc_parse_error("TRYAGAIN Multiple keys request during rehashing of "
	                                  "slot",
	                                  56, &r),
	                SP_RC_TRYAGAIN);
	SP_CHECK_EQ_INT(sp_rc_parse_error("CLUSTERDOWN The cluster is down", 31, &r),
	                SP_RC_CLUSTERDOWN);
	/* Not ours, or malformed: the caller's error. */
	SP_CHECK_EQ_INT(sp_rc_parse_error("ERR unknown command", 19, &r), SP_RC_NONE);
	SP_CHECK_EQ_INT(sp_rc_parse_error("NOSCRIPT No matching script", 27, &r), SP_RC_NONE);
	SP_CHECK_EQ_INT(sp_rc_parse_error("MOVED 16384 h:1", 15, &r), SP_RC_NONE);
	SP_CHECK_EQ_INT(sp_rc_parse_error("MOVED 1 h:0", 11, &r), SP_RC_NONE);
	SP_CHECK_EQ_INT(sp_rc_parse_error("MOVED 1 h", 9, &r), SP_RC_NONE);
	SP_CHECK_EQ_INT(sp_rc_parse_error("MOVED", 5, &r), SP_RC_NONE);
	SP_CHECK_EQ_INT(sp_rc_parse_error("MOVEDX 1 h:1", 12, &r), SP_RC_NONE);
	SP_CHECK_EQ_INT(sp_rc_parse_error("ASK 1 :1", 8, &r), SP_RC_NONE);
}

/* A redisReply tree by hand (freed with freeReplyObject). */
static redisReply *rr_int(long long v)
{
	redisReply *r = calloc(1, sizeof(*r));

	r->type = REDIS_REPLY_INTEGER;
	r->integer = v;
	return r;
}

static redisReply *rr_str(const char *s)
{
	redisReply *r = calloc(1, sizeof(*r));

	r->type = REDIS_REPLY_STRING;
	r->len = strlen(s);
	r->str = strdup(s);
	return r;
}

static redisReply *rr_arr(size_t n, ...)
{
	redisReply *r = calloc(1, sizeof(*r));
	va_list ap;

	r->type = REDIS_REPLY_ARRAY;
	r->elements = n;
	r->element = calloc(n ? n : 1, sizeof(*r->element));
	va_start(ap, n);
	for (size_t i = 0; i < n; i++)
		r->element[i] = va_arg(ap, redisReply *);
	va_end(ap);
	return r;
}

static redisReply *rr_range(long long lo, long long hi, const char *host, long long port)
{
	return rr_arr(4, rr_int(lo), rr_int(hi),
	              rr_arr(3, rr_str(host), rr_int(port), rr_str("id")),
	              rr_arr(3, rr_str(host), rr_int(port + 1), rr_str("replica")));
}

static void test_map_from_slots(void)
{
	sp_rc_map_t *m = malloc(sizeof(*m));
	redisReply *r =
	        rr_arr(4, rr_range(0, 5460, "10.0.0.1", 7000), rr_range(5461, 10922, "", 7002),
	               rr_range(10923, 16000, "?", 7004), rr_range(16001, 16383, "10.0.0.1", 7000));

	SP_CHECK_EQ_INT(sp_rc_map_from_slots(m, r, "seed.example"), 0);
	SP_CHECK_EQ_INT(m->n_slots, 16384);
	SP_CHECK_EQ_INT(m->n_nodes, 3);
	SP_CHECK_EQ_INT(m->slot_node[0], m->slot_node[16383]);
	SP_CHECK(strcmp(m->node[m->slot_node[6000]].host, "seed.example") == 0);
	SP_CHECK_EQ_INT(m->node[m->slot_node[6000]].port, 7002);
	SP_CHECK(strcmp(m->node[m->slot_node[12000]].host, "seed.example") == 0);
	freeReplyObject(r);
	/* A hole: those slots have no master. */
	r = rr_arr(1, rr_range(0, 99, "h", 1));
	SP_CHECK_EQ_INT(sp_rc_map_from_slots(m, r, "x"), 0);
	SP_CHECK_EQ_INT(m->n_slots, 100);
	SP_CHECK_EQ_INT(m->slot_node[100], SP_RC_NO_NODE);
	freeReplyObject(r);
	/* Wrong shapes. */
	r = rr_arr(1, rr_arr(2, rr_int(0), rr_int(1)));
	SP_CHECK_EQ_INT(sp_rc_map_from_slots(m, r, "x"), -EPROTO);
	freeReplyObject(r);
	r = rr_arr(1, rr_range(5, 16384, "h", 1));
	SP_CHECK_EQ_INT(sp_rc_map_from_slots(m, r, "x"), -EPROTO);
	freeReplyObject(r);
	r = rr_int(1);
	SP_CHECK_EQ_INT(sp_rc_map_from_slots(m, r, "x"), -EPROTO);
	freeReplyObject(r);
	free(m);
}

/* ---- a real cluster ------------------------------------------------------------------------ */

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd);
}

/* The first line of a command's output, or "" (static buffer). */
static const char *output(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *output(const char *fmt, ...)
{
	static char line[512];
	char cmd[1024];
	va_list ap;
	FILE *p;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	line[0] = 0;
	p = popen(cmd, "r");
	if (!p)
		return line;
	if (!fgets(line, sizeof(line), p))
		line[0] = 0;
	pclose(p);
	line[strcspn(line, "\r\n")] = 0;
	return line;
}

/* $REDIS_SERVER (e.g. valkey-server), else redis-server; redis-cli drives either. */
static const char *server_bin(void)
{
	const char *s = getenv("REDIS_SERVER");

	return s && s[0] ? s : "redis-server";
}

static pid_t start_node(int i)
{
	pid_t parent = getpid(), pid = fork();
	char port[16], conf[160], logf[160], nd[128];

	if (pid != 0)
		return pid;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(127);
	snprintf(port, sizeof(port), "%d", ports[i]);
	snprintf(nd, sizeof(nd), "%s/n%d", dir, i);
	snprintf(conf, sizeof(conf), "%s/nodes.conf", nd);
	snprintf(logf, sizeof(logf), "%s/log", nd);
	execlp(server_bin(), server_bin(), "--port", port, "--bind", "127.0.0.1",
	       "--cluster-enabled", "yes", "--cluster-config-file", conf, "--cluster-node-timeout",
	       "1000", "--cluster-replica-validity-factor", "0", "--repl-diskless-sync-delay", "0",
	       "--save", "", "--appendonly", "no", "--dir", nd, "--logfile", logf, "--daemonize",
	       "no", (char *)NULL);
	_exit(127);
}

static void stop_all(void)
{
	for (int i = 0; i < N_NODES; i++)
		if (pids[i] > 0) {
			kill(pids[i], SIGKILL);
			waitpid(pids[i], NULL, 0);
			pids[i] = 0;
		}
	if (!getenv("KEEP") && dir[0] == '/' && strncmp(dir, "/tmp/sp-test-rcluster.", 22) == 0)
		run("rm -rf '%s'", dir);
}

static bool cluster_ok(void)
{
	for (int i = 0; i < N_NODES; i++)
		if (pids[i] > 0 && strcmp(output("redis-cli -p %d cluster info 2>/dev/null | grep "
		                                 "'^cluster_state:'",
		                                 ports[i]),
		                          "cluster_state:ok") != 0)
			return false;
	return true;
}

/* Starts six servers on base_port.. and joins them. 0, or -1 (with the reason printed). */
static int cluster_start_at(int base_port)
{
	char cmd[1024];
	int off, up = 0;

	snprintf(dir, sizeof(dir), "/tmp/sp-test-rcluster.XXXXXX");
	if (!mkdtemp(dir)) {
		dir[0] = 0;
		return -1;
	}
	for (int i = 0; i < N_NODES; i++) {
		ports[i] = base_port + i;
		run("mkdir -p %s/n%d", dir, i);
		pids[i] = start_node(i);
	}
	for (int t = 0; t < 100 && up < N_NODES; t++) { /* all answer PING */
		up = 0;
		for (int i = 0; i < N_NODES; i++)
			up += strcmp(output("redis-cli -p %d ping 2>/dev/null", ports[i]),
			             "PONG") == 0;
		if (up < N_NODES)
			usleep(100000);
	}
	/* A port may be somebody else's server (ours then failed to bind): never build a
	 * cluster out of that one. */
	for (int i = 0; i < N_NODES; i++) {
		char want[32];

		snprintf(want, sizeof(want), "process_id:%d", (int)pids[i]);
		if (strcmp(output("redis-cli -p %d info server 2>/dev/null | grep '^process_id:' | "
		                  "tr -d '\\r'",
		                  ports[i]),
		           want) != 0) {
			printf("# port %d: not our redis-server\n", ports[i]);
			return -1;
		}
	}
	off = snprintf(cmd, sizeof(cmd), "redis-cli --cluster create");
	for (int i = 0; i < N_NODES; i++)
		off += snprintf(cmd + off, sizeof(cmd) - (size_t)off, " 127.0.0.1:%d", ports[i]);
	snprintf(cmd + off, sizeof(cmd) - (size_t)off,
	         " --cluster-replicas 1 --cluster-yes >%s/create.log 2>&1", dir);
	if (system(cmd) != 0) {
		printf("# redis-cli --cluster create failed\n");
		return -1;
	}
	for (int t = 0; t < 300; t++) {
		if (cluster_ok())
			break;
		usleep(100000);
	}
	/* Every master's replica in sync, so WAIT and failovers work from the first case. */
	for (int t = 0; t < 400; t++) {
		int synced = 0;

		for (int i = 0; i < N_NODES; i++)
			synced += strcmp(output("redis-cli -p %d info replication | grep -c "
			                        "'state=online'",
			                        ports[i]),
			                 "1") == 0;
		if (synced == N_NODES / 2 && cluster_ok())
			return 0;
		usleep(100000);
	}
	printf("# the cluster on %d..%d is not ok or not in sync after 70 s\n", ports[0],
	       ports[N_NODES - 1]);
	return -1;
}

/* Up to three tries on other ports. The ports and their cluster bus ports (+10000) stay
 * below 32768, out of Linux's default ephemeral range, so no outgoing connection can be
 * holding one. */
static int cluster_start(void)
{
	unsigned pick = (unsigned)getpid() * 7919u;

	if (run("command -v '%s' >/dev/null && command -v redis-cli >/dev/null", server_bin()) != 0)
		return -1;
	for (int attempt = 0; attempt < 3; attempt++) {
		if (cluster_start_at(20000 + (int)((pick + (unsigned)attempt * 97u) % 270u) * 10) ==
		    0)
			return 0;
		printf("# the cluster did not start on %d..%d (try %d of 3)\n", ports[0],
		       ports[N_NODES - 1], attempt + 1);
		stop_all();
	}
	return -1;
}

/* Runs the loop until *flag or ms pass. */
static void loop_until(const bool *flag, unsigned ms)
{
	uint64_t end = sp_time_mono_ms() + ms;

	while (!*flag && sp_time_mono_ms() < end)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(1000);
}

static void loop_until_up(sp_rcluster_t *c, unsigned ms)
{
	uint64_t end = sp_time_mono_ms() + ms;

	while (!sp_rcluster_up(c) && sp_time_mono_ms() < end)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(1000);
}

struct batch {
	unsigned want, done, ok, failed;
	bool all;
	char expect[64]; /* for GET: the value every reply must have ("" = SET) */
};

static void on_batch(struct redisAsyncContext *ac, void *reply, void *priv)
{
	struct batch *b = priv;
	redisReply *r = reply;

	(void)ac;
	b->done++;
	if (!r)
		b->failed++;
	else if (b->expect[0] ? r->type == REDIS_REPLY_STRING && strcmp(r->str, b->expect) == 0
	                      : r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0)
		b->ok++;
	else
		printf("# unexpected reply type %d: %s\n", r->type, r->str ? r->str : "");
	b->all = b->done == b->want;
}

static int cmd2(sp_rcluster_t *c, struct batch *b, const char *verb, const char *key,
                const char *val)
{
	const char *argv[3] = {verb, key, val};
	size_t len[3] = {strlen(verb), strlen(key), val ? strlen(val) : 0};

	b->want++;
	b->all = false;
	return sp_rcluster_command(c, sp_rc_keyslot(key, strlen(key)), on_batch, b, val ? 3 : 2,
	                           argv, len);
}

static sp_rcluster_t *client(unsigned max_redirects)
{
	char seeds[64], err[256];
	sp_rcluster_opts_t o = {
	        .refresh_ms = 1000, .retry_max_ms = 200, .max_redirects = max_redirects};
	sp_rcluster_t *c;

	snprintf(seeds, sizeof(seeds), "127.0.0.1:%d", ports[N_NODES - 1]); /* likely a replica */
	c = sp_rcluster_new(base, seeds, &o, err, sizeof(err));
	if (!c)
		printf("# sp_rcluster_new: %s\n", err);
	return c;
}

static void test_live_keys(void)
{
	sp_rcluster_t *c;
	struct batch b = {0};
	char key[32];
	unsigned used[SP_RC_MAX_NODES] = {0}, masters = 0;

	c = client(16);
	SP_CHECK(c != NULL);
	if (!c)
		return;
	loop_until_up(c, 10000);
	SP_CHECK(sp_rcluster_up(c));
	SP_CHECK_EQ_INT(sp_rcluster_map(c)->n_slots, SP_RC_SLOTS);
	SP_CHECK_EQ_INT(sp_rcluster_map(c)->n_nodes, 3);
	for (int i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "{t%d}k", i);
		used[sp_rcluster_map(c)->slot_node[sp_rc_keyslot(key, strlen(key))]]++;
		SP_CHECK_EQ_INT(cmd2(c, &b, "SET", key, "v1"), 0);
	}
	loop_until(&b.all, 10000);
	SP_CHECK_EQ_INT(b.ok, 1000);
	for (unsigned i = 0; i < SP_RC_MAX_NODES; i++)
		masters += used[i] > 0;
	SP_CHECK_EQ_INT(masters, 3);
	b = (struct batch){.expect = "v1"};
	for (int i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "{t%d}k", i);
		cmd2(c, &b, "GET", key, NULL);
	}
	loop_until(&b.all, 10000);
	SP_CHECK_EQ_INT(b.ok, 1000);
	sp_rcluster_free(c);
}

static void test_live_migration(void)
{
	sp_rcluster_t *c;
	sp_rcluster_counters_t n;
	struct batch b = {0};
	const char *k_old = "{mig}old", *k_new = "{mig}new";
	int slot = (int)sp_rc_keyslot(k_old, strlen(k_old)), src = -1, dst = -1;
	char src_id[64] = "", dst_id[64] = "";
	const sp_rc_map_t *m;

	c = client(16);
	if (!c)
		return;
	loop_until_up(c, 10000);
	SP_CHECK_EQ_INT(cmd2(c, &b, "SET", k_old, "v1"), 0);
	loop_until(&b.all, 5000);
	SP_CHECK_EQ_INT(b.ok, 1);
	/* The source is the master the map names; the destination another master. */
	m = sp_rcluster_map(c);
	for (int i = 0; i < N_NODES; i++) {
		const sp_rc_node_t *node = &m->node[m->slot_node[slot]];

		if (ports[i] == node->port)
			src = i;
	}
	for (int i = 0; i < N_NODES && dst < 0; i++)
		if (i != src &&
		    strcmp(output("redis-cli -p %d role | head -n 1", ports[i]), "master") == 0)
			dst = i;
	SP_CHECK(src >= 0 && dst >= 0);
	if (src < 0 || dst < 0)
		goto out;
	snprintf(src_id, sizeof(src_id), "%s", output("redis-cli -p %d cluster myid", ports[src]));
	snprintf(dst_id, sizeof(dst_id), "%s", output("redis-cli -p %d cluster myid", ports[dst]));
	SP_CHECK_EQ_INT(run("redis-cli -p %d cluster setslot %d importing %s >/dev/null",
	                    ports[dst], slot, src_id),
	                0);
	SP_CHECK_EQ_INT(run("redis-cli -p %d cluster setslot %d migrating %s >/dev/null",
	                    ports[src], slot, dst_id),
	                0);
	/* A key the source does not have: -ASK, then ASKING + the command on the destination. */
	b = (struct batch){0};
	cmd2(c, &b, "SET", k_new, "v2");
	loop_until(&b.all, 5000);
	SP_CHECK_EQ_INT(b.ok, 1);
	b = (struct batch){.expect = "v2"};
	cmd2(c, &b, "GET", k_new, NULL);
	loop_until(&b.all, 5000);
	SP_CHECK_EQ_INT(b.ok, 1);
	sp_rcluster_counters(c, &n);
	SP_CHECK(n.ask >= 2);
	SP_CHECK_EQ_INT(strcmp(output("printf 'ASKING\\nGET %s\\n' | redis-cli -p %d | tail -n 1",
	                              k_new, ports[dst]),
	                       "v2"),
	                0); /* it went to the destination */
	/* Move the old key, give the slot to the destination: -MOVED from the source. */
	SP_CHECK_EQ_INT(run("redis-cli -p %d migrate 127.0.0.1 %d '' 0 5000 keys '%s' >/dev/null",
	                    ports[src], ports[dst], k_old),
	                0);
	for (int i = 0; i < N_NODES; i++)
		if (strcmp(output("redis-cli -p %d role | head -n 1", ports[i]), "master") == 0)
			run("redis-cli -p %d cluster setslot %d node %s >/dev/null", ports[i], slot,
			    dst_id);
	b = (struct batch){.expect = "v1"};
	cmd2(c, &b, "GET", k_old, NULL);
	loop_until(&b.all, 5000);
	SP_CHECK_EQ_INT(b.ok, 1);
	sp_rcluster_counters(c, &n);
	SP_CHECK(n.moved >= 1);
	SP_CHECK_EQ_INT(m->node[m->slot_node[slot]].port, ports[dst]); /* the map followed */
	printf("# migration: %llu ASK, %llu MOVED, %llu refreshes\n", (unsigned long long)n.ask,
	       (unsigned long long)n.moved, (unsigned long long)n.refreshes);
out:
	sp_rcluster_free(c);
}

struct stream {
	unsigned sent, ok, failed;
	uint64_t first_fail_ms, recovered_ms; /* first NULL reply; first OK after a failure */
	bool fail_seen;
};

static void on_stream(struct redisAsyncContext *ac, void *reply, void *priv)
{
	struct stream *s = priv;
	redisReply *r = reply;

	(void)ac;
	if (r && r->type == REDIS_REPLY_STATUS) {
		s->ok++;
		if (s->fail_seen && !s->recovered_ms)
			s->recovered_ms = sp_time_mono_ms();
	} else {
		s->failed++;
	}
}

static void test_live_failover(void)
{
	sp_rcluster_t *c;
	struct stream s = {0};
	const char *key = "{fo}k", *argv[3] = {"SET", key, "x"};
	size_t len[3] = {3, 5, 1};
	uint16_t slot = sp_rc_keyslot(key, 5);
	int victim = -1;
	uint64_t kill_ms = 0, end, promoted_ms = 0;

	c = client(100); /* a budget for the whole failover */
	if (!c)
		return;
	loop_until_up(c, 10000);
	for (int i = 0; i < N_NODES; i++)
		if (ports[i] == sp_rcluster_map(c)->node[sp_rcluster_map(c)->slot_node[slot]].port)
			victim = i;
	SP_CHECK(victim >= 0);
	if (victim < 0)
		goto out;
	end = sp_time_mono_ms() + 20000;
	while (sp_time_mono_ms() < end) {
		if (sp_rcluster_command(c, slot, on_stream, &s, 3, argv, len) == 0)
			s.sent++;
		for (int t = 0; t < 20; t++) {
			event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
			usleep(1000);
		}
		if (!kill_ms && s.ok >= 20) {
			kill(pids[victim], SIGKILL);
			waitpid(pids[victim], NULL, 0);
			pids[victim] = 0;
			kill_ms = sp_time_mono_ms();
			s.fail_seen = true;
		}
		if (kill_ms && !promoted_ms &&
		    sp_rcluster_map(c)->node[sp_rcluster_map(c)->slot_node[slot]].port !=
		            ports[victim])
			promoted_ms = sp_time_mono_ms(); /* the map names the promoted replica */
		if (s.recovered_ms && s.ok >= s.sent - 1 &&
		    sp_time_mono_ms() - s.recovered_ms > 1000)
			break;
	}
	for (int t = 0; t < 2000 && s.ok + s.failed < s.sent; t++) {
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		usleep(1000);
	}
	{
		sp_rcluster_counters_t n;

		sp_rcluster_counters(c, &n);
		printf("# counters: moved %llu ask %llu tryagain %llu clusterdown %llu lost %llu "
		       "refreshes %llu refresh failures %llu failed %llu connects %llu disconnects "
		       "%llu; %s; slot %u -> port %u\n",
		       (unsigned long long)n.moved, (unsigned long long)n.ask,
		       (unsigned long long)n.tryagain, (unsigned long long)n.clusterdown,
		       (unsigned long long)n.resent_lost, (unsigned long long)n.refreshes,
		       (unsigned long long)n.refresh_failures, (unsigned long long)n.failed,
		       (unsigned long long)n.connects, (unsigned long long)n.disconnects,
		       sp_rcluster_error(c), slot,
		       sp_rcluster_map(c)->node[sp_rcluster_map(c)->slot_node[slot]].port);
	}
	SP_CHECK(kill_ms > 0);
	SP_CHECK(s.recovered_ms > 0);
	SP_CHECK_EQ_INT(s.failed, 0); /* every write rode out the failover */
	SP_CHECK_EQ_INT(s.ok, s.sent);
	printf("# failover: kill -9 of the master; the map named the promoted replica after %llu "
	       "ms; writing again after %llu ms (%lld ms after the test saw the map change); %u "
	       "writes, %u failed\n",
	       (unsigned long long)(promoted_ms ? promoted_ms - kill_ms : 0),
	       (unsigned long long)(s.recovered_ms ? s.recovered_ms - kill_ms : 0),
	       s.recovered_ms && promoted_ms ? (long long)s.recovered_ms - (long long)promoted_ms
	                                     : 0LL,
	       s.sent, s.failed);
out:
	sp_rcluster_free(c);
}

/* ---- the store on the cluster ---------------------------------------------------------- */

#define N_TOK 60

struct st_count {
	unsigned stored, fetched, acked, other, answers;
	bool done;
	unsigned want;
};

static void on_enq(int status, uint64_t seq, void *arg)
{
	struct st_count *c = arg;

	(void)seq;
	if (status == SP_STORE_STORED)
		c->stored++;
	else
		c->other++;
	c->done = ++c->answers == c->want;
}

static void on_fetch(int status, const sp_store_item_t *items, size_t n, void *arg)
{
	struct st_count *c = arg;

	if (status == SP_STORE_OK) {
		for (size_t i = 0; i < n; i++)
			c->fetched += items[i].record != NULL;
	} else {
		c->other++;
	}
	c->done = ++c->answers == c->want;
}

static void on_ack(int status, size_t removed, void *arg)
{
	struct st_count *c = arg;

	if (status == SP_STORE_OK)
		c->acked += (unsigned)removed;
	else
		c->other++;
	c->done = ++c->answers == c->want;
}

static void store_round(unsigned wait_replicas)
{
	sp_store_limits_t lim;
	sp_store_t *st;
	char url[96], err[256];
	uint8_t tok[N_TOK][32], id[16], rec[128];
	uint64_t expires = (uint64_t)time(NULL) * 1000 + 600000;
	struct st_count c = {0};
	bool up = false;
	size_t len;

	sp_store_limits_default(&lim);
	lim.wait_replicas = wait_replicas;
	lim.wait_timeout_ms = 2000;
	snprintf(url, sizeof(url), "redis-cluster://127.0.0.1:%d,127.0.0.1:%d", ports[0], ports[1]);
	st = sp_store_new(base, url, &lim, err, sizeof(err));
	SP_CHECK(st != NULL);
	if (!st) {
		printf("# sp_store_new: %s\n", err);
		return;
	}
	for (int t = 0; t < 10000 && !up; t++) {
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		usleep(1000);
		up = sp_store_up(st);
	}
	SP_CHECK(up);
	len = sp_store_record_size(0, 32);
	SP_CHECK(len <= sizeof(rec));
	memset(rec, 0, sizeof(rec));
	SP_CHECK_EQ_INT(sp_store_record_build(rec, sizeof(rec), expires, 10, NULL, 0,
	                                      (const uint8_t *)"0123456789abcdef0123456789abcdef",
	                                      32),
	                0);
	c.want = N_TOK * 3;
	for (int i = 0; i < N_TOK; i++) {
		memset(tok[i], 0, 32);
		tok[i][0] = (uint8_t)i;
		tok[i][1] = (uint8_t)wait_replicas;
		tok[i][31] = 0x5a;
		for (int m = 0; m < 3; m++) {
			memset(id, m + 1, sizeof(id));
			SP_CHECK_EQ_INT(sp_store_enqueue(st, tok[i], id, rec, len, expires, NULL, 0,
			                                 on_enq, &c),
			                0);
		}
	}
	loop_until(&c.done, 10000);
	SP_CHECK_EQ_INT(c.stored, N_TOK * 3);
	SP_CHECK_EQ_INT(c.other, 0);
	c = (struct st_count){.want = N_TOK};
	for (int i = 0; i < N_TOK; i++)
		SP_CHECK_EQ_INT(sp_store_fetch(st, tok[i], 0, 10, on_fetch, &c), 0);
	loop_until(&c.done, 10000);
	SP_CHECK_EQ_INT(c.fetched, N_TOK * 3);
	c = (struct st_count){.want = N_TOK};
	for (int i = 0; i < N_TOK; i++) {
		uint8_t ids[3][16];

		for (int m = 0; m < 3; m++)
			memset(ids[m], m + 1, 16);
		SP_CHECK_EQ_INT(sp_store_ack(st, tok[i], (const uint8_t(*)[16])ids, 3, on_ack, &c),
		                0);
	}
	loop_until(&c.done, 10000);
	SP_CHECK_EQ_INT(c.acked, N_TOK * 3);
	SP_CHECK_EQ_INT(c.other, 0);
	sp_store_free(st);
}

/* The offline store on the cluster: 60 devices' queues (so all three masters), stored,
 * fetched and acknowledged; then again with wait_replicas 1 (WAIT on each master). */
static void test_live_store(void)
{
	store_round(0);
	store_round(1);
}

/* ---- more live cases: scripts, redirect loops, failovers, rejoins ------------------------- */

/* A command on a fresh blocking connection to port (NULL if it does not answer). */
static redisReply *raw(int port, const char *fmt, ...)
{
	struct timeval tv = {1, 0};
	redisContext *r = redisConnectWithTimeout("127.0.0.1", port, tv);
	redisReply *rep = NULL;
	va_list ap;

	if (r && !r->err) {
		redisSetTimeout(r, tv);
		va_start(ap, fmt);
		rep = redisvCommand(r, fmt, ap);
		va_end(ap);
	}
	if (r)
		redisFree(r);
	return rep;
}

/* Whether the text reply of the command on port contains want. */
static bool raw_has(int port, const char *want, const char *fmt, ...)
{
	struct timeval tv = {1, 0};
	redisContext *r = redisConnectWithTimeout("127.0.0.1", port, tv);
	redisReply *rep = NULL;
	bool ok;
	va_list ap;

	if (r && !r->err) {
		redisSetTimeout(r, tv);
		va_start(ap, fmt);
		rep = redisvCommand(r, fmt, ap);
		va_end(ap);
	}
	if (r)
		redisFree(r);
	ok = rep && rep->str && strstr(rep->str, want);
	if (rep)
		freeReplyObject(rep);
	return ok;
}

static bool is_master(int i)
{
	return pids[i] > 0 && raw_has(ports[i], "role:master", "INFO replication");
}

/* The index of the node that serves slot, as a live node's CLUSTER SLOTS says, or -1. */
static int owner_of(uint16_t slot)
{
	for (int i = 0; i < N_NODES; i++) {
		redisReply *rep;
		int found = -1;

		if (pids[i] <= 0 || !(rep = raw(ports[i], "CLUSTER SLOTS")))
			continue;
		for (size_t k = 0; rep->type == REDIS_REPLY_ARRAY && k < rep->elements; k++) {
			redisReply *e = rep->element[k];

			if (e->element[0]->integer <= slot && slot <= e->element[1]->integer)
				for (int j = 0; j < N_NODES; j++)
					if (ports[j] == e->element[2]->element[1]->integer)
						found = j;
		}
		freeReplyObject(rep);
		return found;
	}
	return -1;
}

/* A live master whose replica is in sync (so that it can fail over), or -1. */
static int master_with_replica(void)
{
	for (int i = 0; i < N_NODES; i++) {
		char want[32];

		if (!is_master(i))
			continue;
		snprintf(want, sizeof(want), "master_port:%d", ports[i]);
		for (int j = 0; j < N_NODES; j++)
			if (j != i && pids[j] > 0 && raw_has(ports[j], want, "INFO replication") &&
			    raw_has(ports[j], "master_link_status:up", "INFO replication"))
				return i;
	}
	return -1;
}

static void kill_node(int i)
{
	if (pids[i] > 0) {
		kill(pids[i], SIGKILL);
		waitpid(pids[i], NULL, 0);
		pids[i] = 0;
	}
}

/* Device token number t (the store's keys have its hex as their hash tag) and its slot. */
static uint16_t token_of(unsigned t, uint8_t tok[32])
{
	char hex[65];

	for (int i = 0; i < 32; i++)
		tok[i] = (uint8_t)(t * 131u + (unsigned)i * 7u + 3u);
	tok[0] = (uint8_t)t; /* distinct for every t below 65536 */
	tok[1] = (uint8_t)(t >> 8);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", tok[i]);
	return sp_rc_keyslot(hex, 64);
}

/* A store on the cluster (every node a seed), up; NULL if it does not come up in 10 s. */
static sp_store_t *store_open(unsigned wait_replicas, unsigned timeout_ms)
{
	sp_store_limits_t lim;
	char url[256], err[256];
	int off = snprintf(url, sizeof(url), "redis-cluster://");
	sp_store_t *st;
	uint64_t end = sp_time_mono_ms() + 10000;

	for (int i = 0; i < N_NODES; i++)
		off += snprintf(url + off, sizeof(url) - (size_t)off, "%s127.0.0.1:%d",
		                i ? "," : "", ports[i]);
	sp_store_limits_default(&lim);
	lim.timeout_ms = timeout_ms;
	lim.wait_replicas = wait_replicas;
	lim.wait_timeout_ms = 1000;
	st = sp_store_new(base, url, &lim, err, sizeof(err));
	if (!st) {
		printf("# sp_store_new: %s\n", err);
		return NULL;
	}
	while (!sp_store_up(st) && sp_time_mono_ms() < end)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(1000);
	if (!sp_store_up(st)) {
		printf("# the store did not come up\n");
		sp_store_free(st);
		return NULL;
	}
	return st;
}

struct one {
	bool done;
	int status;
	unsigned n;
};

static void on_one(int status, uint64_t seq, void *arg)
{
	struct one *o = arg;

	(void)seq;
	o->done = true;
	o->status = status;
}

/* Enqueues message number n for tok and waits for the answer: its status, or -1. */
static int enqueue_one(sp_store_t *st, const uint8_t tok[32], unsigned n)
{
	uint8_t id[16], rec[128];
	uint64_t expires = (uint64_t)time(NULL) * 1000 + 600000;
	size_t len = sp_store_record_size(0, 32);
	struct one o = {0};

	memset(id, 0xa5, sizeof(id));
	id[0] = (uint8_t)n;
	id[1] ^= (uint8_t)(n >> 8);
	if (sp_store_record_build(rec, sizeof(rec), expires, 10, NULL, 0,
	                          (const uint8_t *)"0123456789abcdef0123456789abcdef", 32) != 0 ||
	    sp_store_enqueue(st, tok, id, rec, len, expires, NULL, 0, on_one, &o) != 0)
		return -1;
	loop_until(&o.done, 10000);
	return o.done ? o.status : -1;
}

static void on_fetch_one(int status, const sp_store_item_t *items, size_t n, void *arg)
{
	struct one *o = arg;

	o->done = true;
	o->status = status;
	o->n = 0;
	for (size_t i = 0; i < n; i++)
		o->n += items[i].record != NULL;
}

/* The messages queued for tok (-1 if the fetch failed). */
static int fetch_count(sp_store_t *st, const uint8_t tok[32])
{
	struct one o = {0};

	if (sp_store_fetch(st, tok, 0, 100, on_fetch_one, &o) != 0)
		return -1;
	loop_until(&o.done, 10000);
	return o.done && o.status == SP_STORE_OK ? (int)o.n : -1;
}

/* Runs the loop for ms (the store's tick copies the router's counters). */
static void run_for(unsigned ms)
{
	bool never = false;

	loop_until(&never, ms);
}

/* SCRIPT FLUSH on every master: the next EVALSHA answers NOSCRIPT, the store sends EVAL
 * (which caches the script there again), and every message is still stored. */
static void test_live_script_flush(void)
{
	sp_store_t *st = store_open(0, 2000);
	uint8_t tok[30][32];
	int stored = 0, dup = 0, queued = 0, flushed = 0;
	sp_store_counters_t sc;

	SP_CHECK(st != NULL);
	if (!st)
		return;
	for (unsigned t = 0; t < 30; t++) {
		token_of(1000 + t, tok[t]);
		stored += enqueue_one(st, tok[t], 1) == SP_STORE_STORED;
	}
	for (int i = 0; i < N_NODES; i++)
		if (is_master(i))
			flushed += raw_has(ports[i], "OK", "SCRIPT FLUSH");
	SP_CHECK_EQ_INT(flushed, 3);
	for (unsigned t = 0; t < 30; t++) {
		stored += enqueue_one(st, tok[t], 2) == SP_STORE_STORED;
		dup += enqueue_one(st, tok[t], 2) == SP_STORE_DUPLICATE;
		queued += fetch_count(st, tok[t]);
	}
	SP_CHECK_EQ_INT(stored, 60);
	SP_CHECK_EQ_INT(dup, 30);
	SP_CHECK_EQ_INT(queued, 60);
	sp_store_counters(st, &sc);
	SP_CHECK_EQ_INT(sc.errors, 0);
	SP_CHECK_EQ_INT(sc.unavailable, 0);
	printf("# SCRIPT FLUSH on 3 masters: %d stored, %d duplicates, %d queued, no error\n",
	       stored, dup, queued);
	sp_store_free(st);
}

struct one_reply {
	bool done;
	int type;
	char str[128];
};

static void on_one_reply(struct redisAsyncContext *ac, void *reply, void *priv)
{
	struct one_reply *o = priv;
	redisReply *r = reply;

	(void)ac;
	o->done = true;
	o->type = r ? r->type : -1;
	if (r && r->str)
		snprintf(o->str, sizeof(o->str), "%.*s", (int)r->len, r->str);
}

/* A redirect loop: the slot's master says MIGRATING but no node is IMPORTING, so a new key
 * is ASKed over to the other master, which answers MOVED back. The cap ends it with the last
 * error reply, for the router and for the store; the counters (and the store's, for
 * /metrics) show every redirection followed. */
static void test_live_redirect_cap(void)
{
	uint8_t tok[32];
	char hex[65], key[80], idb[64];
	uint16_t slot = token_of(7, tok);
	int a = owner_of(slot), b = -1, status;
	sp_rcluster_t *c = client(5);
	sp_rcluster_counters_t n0, n1;
	sp_store_counters_t sc;
	sp_store_t *st = NULL;
	struct one_reply o = {0};
	const char *argv[3] = {"SET", key, "v"};
	size_t len[3] = {3, 0, 1};

	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", tok[i]);
	snprintf(key, sizeof(key), "sp:{%s}:loop", hex);
	len[1] = strlen(key);
	for (int i = 0; i < N_NODES && a >= 0; i++)
		if (i != a && is_master(i))
			b = i;
	SP_CHECK(a >= 0 && b >= 0 && c != NULL);
	if (a < 0 || b < 0 || !c)
		goto out;
	loop_until_up(c, 10000);
	snprintf(idb, sizeof(idb), "%s", output("redis-cli -p %d cluster myid", ports[b]));
	SP_CHECK(raw_has(ports[a], "OK", "CLUSTER SETSLOT %u MIGRATING %s", slot, idb));
	sp_rcluster_counters(c, &n0);
	SP_CHECK_EQ_INT(sp_rcluster_command(c, slot, on_one_reply, &o, 3, argv, len), 0);
	loop_until(&o.done, 5000);
	sp_rcluster_counters(c, &n1);
	SP_CHECK(o.done);
	SP_CHECK_EQ_INT(o.type, REDIS_REPLY_ERROR); /* the last MOVED or ASK, not a success */
	SP_CHECK(strncmp(o.str, "MOVED ", 6) == 0 || strncmp(o.str, "ASK ", 4) == 0);
	SP_CHECK_EQ_INT((n1.moved - n0.moved) + (n1.ask - n0.ask), 5);
	SP_CHECK(strstr(sp_rcluster_error(c), "gave up") != NULL);
	printf("# redirect loop: %llu ASK + %llu MOVED followed, then \"%s\" (%s)\n",
	       (unsigned long long)(n1.ask - n0.ask), (unsigned long long)(n1.moved - n0.moved),
	       o.str, sp_rcluster_error(c));
	/* The store: an enqueue for that device answers ERROR, and its counters count. */
	st = store_open(0, 2000);
	SP_CHECK(st != NULL);
	if (st) {
		status = enqueue_one(st, tok, 1);
		SP_CHECK_EQ_INT(status, SP_STORE_ERROR);
		run_for(300);
		sp_store_counters(st, &sc);
		SP_CHECK(sc.cluster_moved + sc.cluster_ask >= 16);
		SP_CHECK(sc.cluster_moved >= 8 && sc.cluster_ask >= 8);
		SP_CHECK(sc.cluster_refreshes >= 1);
		printf("# store counters: cluster_moved %llu cluster_ask %llu cluster_refreshes "
		       "%llu\n",
		       (unsigned long long)sc.cluster_moved, (unsigned long long)sc.cluster_ask,
		       (unsigned long long)sc.cluster_refreshes);
	}
	SP_CHECK(raw_has(ports[a], "OK", "CLUSTER SETSLOT %u STABLE", slot));
	o = (struct one_reply){0};
	SP_CHECK_EQ_INT(sp_rcluster_command(c, slot, on_one_reply, &o, 3, argv, len), 0);
	loop_until(&o.done, 5000);
	SP_CHECK_EQ_INT(o.type, REDIS_REPLY_STATUS);
	if (st)
		SP_CHECK_EQ_INT(enqueue_one(st, tok, 1), SP_STORE_STORED);
out:
	sp_store_free(st);
	sp_rcluster_free(c);
}

#define N_FLIGHT 3000

struct flight {
	unsigned calls[N_FLIGHT];
	bool ok_at[N_FLIGHT], on_victim[N_FLIGHT];
	unsigned answered, ok, null, err;
};

static struct flight flight;

static void on_flight(struct redisAsyncContext *ac, void *reply, void *priv)
{
	unsigned *calls = priv;
	redisReply *r = reply;

	(void)ac;
	(*calls)++;
	flight.answered++;
	if (!r)
		flight.null++;
	else if (r->type == REDIS_REPLY_STATUS)
		flight.ok++, flight.ok_at[calls - flight.calls] = true;
	else
		flight.err++;
}

/* 3000 writes over every master out at once, then kill -9 of a master: each is answered
 * exactly once (the ones on the dead master's connection are sent again to the promoted
 * replica), none with an error reply, and every one on the live masters succeeds. Those of
 * the dead master succeed when the promotion comes within their retry budget, else they give
 * up (NULL): how many is a matter of timing, printed, not asserted (a loaded run saw 409 of
 * 1004 give up after a promotion that took 2.9 s). */
static void test_live_inflight_failover(void)
{
	sp_rcluster_t *c = client(16);
	int victim = master_with_replica();
	unsigned on_victim = 0, twice = 0, never = 0, live_failed = 0;
	bool all = false;
	uint64_t t_kill, t_done = 0, t_map = 0;
	int vslot = -1;

	memset(&flight, 0, sizeof(flight));
	SP_CHECK(c != NULL && victim >= 0);
	if (!c || victim < 0)
		goto out;
	loop_until_up(c, 10000);
	for (int i = 0; i < N_FLIGHT; i++) {
		char key[32];
		const char *argv[3] = {"SET", key, "v"};
		size_t len[3] = {3, 0, 1};
		uint16_t slot;

		snprintf(key, sizeof(key), "{fl%d}k", i);
		len[1] = strlen(key);
		slot = sp_rc_keyslot(key, len[1]);
		if (sp_rcluster_map(c)->node[sp_rcluster_map(c)->slot_node[slot]].port ==
		    ports[victim]) {
			on_victim++;
			vslot = slot;
			flight.on_victim[i] = true;
		}
		SP_CHECK_EQ_INT(
		        sp_rcluster_command(c, slot, on_flight, &flight.calls[i], 3, argv, len), 0);
	}
	event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK); /* the writes go out */
	kill_node(victim);
	t_kill = sp_time_mono_ms();
	while (!all && sp_time_mono_ms() - t_kill < 20000) {
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(1000);
		all = flight.answered >= N_FLIGHT;
		if (!t_map && vslot >= 0 &&
		    sp_rcluster_map(c)->node[sp_rcluster_map(c)->slot_node[vslot]].port !=
		            ports[victim])
			t_map = sp_time_mono_ms(); /* the map names the promoted replica */
	}
	if (all)
		t_done = sp_time_mono_ms();
	run_for(200); /* nothing answered twice later */
	sp_rcluster_free(c);
	c = NULL;
	for (int i = 0; i < N_FLIGHT; i++) {
		twice += flight.calls[i] > 1;
		never += flight.calls[i] == 0;
	}
	SP_CHECK_EQ_INT(flight.answered, N_FLIGHT);
	SP_CHECK_EQ_INT(twice, 0);
	SP_CHECK_EQ_INT(never, 0);
	SP_CHECK_EQ_INT(flight.err, 0);
	for (int i = 0; i < N_FLIGHT; i++)
		live_failed += !flight.on_victim[i] && !flight.ok_at[i];
	SP_CHECK_EQ_INT(live_failed, 0);
	printf("# %d in flight at kill -9 (%u for the dead master): the map changed after %llu ms, "
	       "all answered once after %llu ms, %u ok, %u failed, %u error replies\n",
	       N_FLIGHT, on_victim, (unsigned long long)(t_map ? t_map - t_kill : 0),
	       (unsigned long long)(t_done ? t_done - t_kill : 0), flight.ok, flight.null,
	       flight.err);
out:
	sp_rcluster_free(c);
}

/* cluster-require-full-coverage on every live node. */
static void full_coverage(bool on)
{
	for (int i = 0; i < N_NODES; i++) {
		redisReply *r =
		        pids[i] > 0 ? raw(ports[i], "CONFIG SET cluster-require-full-coverage %s",
		                          on ? "yes" : "no")
		                    : NULL;

		if (r)
			freeReplyObject(r);
	}
}

/* The store through a failover: a message confirmed by WAIT 1 before kill -9 of its master
 * is still there after the promotion, and enqueues are STORED again by themselves (the time
 * from the kill is what deploy/OPERATIONS.md quotes). */
static void test_live_store_failover(void)
{
	int victim = master_with_replica(), tries = 0, status = -1, healthy_failed = 0,
	    replica = -1;
	uint8_t tok[32], other[32];
	sp_store_t *st1 = NULL, *st0 = NULL;
	sp_store_counters_t sc;
	uint64_t t_kill, t_ok = 0, t_promoted = 0;
	unsigned t = 0;
	char want[32];

	SP_CHECK(victim >= 0);
	if (victim < 0)
		return;
	/* its replica, whose promotion the store's recovery is timed from (the target: writing
	 * again within 1 s of it) */
	snprintf(want, sizeof(want), "master_port:%d", ports[victim]);
	for (int j = 0; j < N_NODES && replica < 0; j++)
		if (j != victim && pids[j] > 0 && raw_has(ports[j], want, "INFO replication"))
			replica = j;
	while (owner_of(token_of(2000 + t, tok)) != victim && t < 10000)
		t++;
	t = 0;
	while (owner_of(token_of(5000 + t, other)) == victim && t < 10000)
		t++;
	st1 = store_open(1, 1000);
	st0 = store_open(0, 1000);
	SP_CHECK(st1 && st0);
	if (!st1 || !st0)
		goto out;
	SP_CHECK_EQ_INT(enqueue_one(st1, tok, 1), SP_STORE_STORED); /* a replica has it */
	/* With Redis's default (cluster-require-full-coverage yes) every master answers
	 * CLUSTERDOWN while a slot has no master, between the FAIL flag and the promotion; the
	 * store's part is that nothing else holds the other masters' slots up. */
	full_coverage(false);
	kill_node(victim);
	t_kill = sp_time_mono_ms();
	while (sp_time_mono_ms() - t_kill < 20000) {
		if (!t_promoted && replica >= 0 &&
		    raw_has(ports[replica], "role:master", "INFO replication"))
			t_promoted = sp_time_mono_ms();
		status = enqueue_one(st0, tok, 2);
		tries++;
		/* another master's slots are not held up by this one's failover */
		healthy_failed += enqueue_one(st0, other, 100 + (unsigned)tries) != SP_STORE_STORED;
		if (status == SP_STORE_STORED) {
			t_ok = sp_time_mono_ms();
			break;
		}
		if (status != SP_STORE_UNAVAILABLE)
			SP_FAIL("during the failover: status %d", status);
		run_for(20);
	}
	full_coverage(true);
	SP_CHECK_EQ_INT(status, SP_STORE_STORED);
	SP_CHECK_EQ_INT(healthy_failed, 0);
	SP_CHECK_EQ_INT(fetch_count(st0, tok), 2); /* the confirmed one survived */
	/* Under wait_replicas 1 the promoted master has no replica yet: not confirmed. */
	SP_CHECK_EQ_INT(enqueue_one(st1, tok, 3), SP_STORE_UNAVAILABLE);
	run_for(300);
	sp_store_counters(st0, &sc);
	SP_CHECK(sc.cluster_conn_lost >= 1);
	SP_CHECK(sc.cluster_refreshes >= 2);
	printf("# store failover: STORED again %llu ms after kill -9 of the master, %lld ms after "
	       "its replica's promotion was first seen (polled with each try) (%d tries, the "
	       "others TRY_LATER); the WAIT-confirmed message survived; counters: timeouts %llu "
	       "reconnects %llu cluster_conn_lost %llu cluster_resent %llu cluster_refreshes %llu "
	       "cluster_refresh_failures %llu cluster_retries %llu\n",
	       (unsigned long long)(t_ok ? t_ok - t_kill : 0),
	       t_ok && t_promoted ? (long long)t_ok - (long long)t_promoted : -1LL, tries,
	       (unsigned long long)sc.timeouts, (unsigned long long)sc.reconnects,
	       (unsigned long long)sc.cluster_conn_lost, (unsigned long long)sc.cluster_resent,
	       (unsigned long long)sc.cluster_refreshes,
	       (unsigned long long)sc.cluster_refresh_failures,
	       (unsigned long long)sc.cluster_retries);
out:
	sp_store_free(st0);
	sp_store_free(st1);
}

/* The masters killed above come back (with their nodes.conf): they rejoin as replicas of the
 * promoted ones, and WAIT 1 confirms writes on every master again. */
static void test_live_rejoin(void)
{
	bool back[N_NODES] = {false};
	int restarted = 0, stored = 0, masters = 0, status;
	bool used[N_NODES] = {false};
	uint64_t t0 = sp_time_mono_ms(), rejoin_ms;
	sp_store_t *st;

	for (int i = 0; i < N_NODES; i++)
		if (pids[i] <= 0) {
			pids[i] = start_node(i);
			back[i] = pids[i] > 0;
			restarted += back[i];
		}
	SP_CHECK(restarted >= 2);
	for (int i = 0; i < N_NODES; i++)
		while (back[i] && sp_time_mono_ms() - t0 < 30000 &&
		       !(raw_has(ports[i], "role:slave", "INFO replication") &&
		         raw_has(ports[i], "master_link_status:up", "INFO replication") &&
		         raw_has(ports[i], "cluster_state:ok", "CLUSTER INFO")))
			usleep(50000);
	/* ... and every master sees its replica online. */
	for (int synced = 0; synced < 3 && sp_time_mono_ms() - t0 < 30000; usleep(50000)) {
		synced = 0;
		for (int i = 0; i < N_NODES; i++)
			synced += is_master(i) &&
			          raw_has(ports[i], "state=online", "INFO replication");
	}
	rejoin_ms = sp_time_mono_ms() - t0;
	SP_CHECK(rejoin_ms < 30000);
	st = store_open(1, 2000);
	SP_CHECK(st != NULL);
	if (!st)
		return;
	for (unsigned t = 0; t < 30; t++) {
		uint8_t tok[32];
		int o = owner_of(token_of(3000 + t, tok));

		if (o >= 0)
			used[o] = true;
		status = enqueue_one(st, tok, 1);
		stored += status == SP_STORE_STORED;
		if (status != SP_STORE_STORED)
			printf("# token %u (master %d): %s\n", t, o, sp_store_status_name(status));
	}
	for (int i = 0; i < N_NODES; i++)
		masters += used[i];
	SP_CHECK_EQ_INT(masters, 3);
	SP_CHECK_EQ_INT(stored, 30);
	printf("# rejoin: %d killed masters back as synced replicas %llu ms after their restart; "
	       "WAIT 1 confirms on all 3 masters (%d of 30 stored)\n",
	       restarted, (unsigned long long)rejoin_ms, stored);
	sp_store_free(st);
}

static void test_free_with_pending(void)
{
	sp_rcluster_t *c;
	struct batch b = {0};
	char seeds[] = "127.0.0.1:1"; /* nothing listens: requests wait */
	char err[128];

	c = sp_rcluster_new(base, seeds, NULL, err, sizeof(err));
	SP_CHECK(c != NULL);
	if (!c)
		return;
	for (int i = 0; i < 10; i++)
		cmd2(c, &b, "SET", "{x}k", "v");
	for (int t = 0; t < 50; t++) {
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		usleep(1000);
	}
	SP_CHECK(!sp_rcluster_up(c));
	sp_rcluster_free(c); /* every pending request is answered, with NULL */
	SP_CHECK_EQ_INT(b.done, 10);
	SP_CHECK_EQ_INT(b.failed, 10);
	SP_CHECK(sp_rcluster_new(base, "nohostport", NULL, err, sizeof(err)) == NULL);
	SP_CHECK(sp_rcluster_new(base, "h:0", NULL, err, sizeof(err)) == NULL);
	SP_CHECK(sp_rcluster_new(base, "", NULL, err, sizeof(err)) == NULL);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	base = event_base_new();
	SP_RUN(test_keyslot);
	SP_RUN(test_parse_error);
	SP_RUN(test_map_from_slots);
	SP_RUN(test_free_with_pending);
	live = cluster_start() == 0;
	if (!live)
		printf("# no Redis Cluster (redis-server and redis-cli needed): live cases "
		       "skipped\n");
	if (live) {
		SP_RUN(test_live_keys);
		SP_RUN(test_live_store);
		SP_RUN(test_live_script_flush);
		SP_RUN(test_live_migration);
		SP_RUN(test_live_redirect_cap);
		SP_RUN(test_live_failover);
		SP_RUN(test_live_inflight_failover);
		SP_RUN(test_live_store_failover);
		SP_RUN(test_live_rejoin);
	} else {
		static const char *const names[] = {"test_live_keys",
		                                    "test_live_store",
		                                    "test_live_script_flush",
		                                    "test_live_migration",
		                                    "test_live_redirect_cap",
		                                    "test_live_failover",
		                                    "test_live_inflight_failover",
		                                    "test_live_store_failover",
		                                    "test_live_rejoin"};

		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			sp_test_skip(names[i], "no Redis Cluster");
	}
	stop_all();
	event_base_free(base);
	return sp_test_done();
}
