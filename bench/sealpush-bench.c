/*
 * sealpush-bench: the load generator for a sealpush relay (issue 6).
 *
 * Scenarios: "throughput" (P sender->receiver pairs), "fanout" (each SEND to N recipients),
 * "queue" (enqueue to offline devices, then drain), "idle" (hold N connections, relay RSS per
 * connection) and "handshake" (new mTLS connections per second, full or resumed). All use one
 * lean client path (sb_conn): TLS 1.3, ALPN sealpush/1, one client certificate per connection,
 * on non-blocking sockets driven by libevent.
 *
 * The modules: sb_opts (command line), sb_conn (one connection), sb_thread (bench threads),
 * sb_scen (the scenarios, run by the orchestrator), sb_report (totals, progress, report),
 * sb_ident (identities), sb_hist (histograms); what they share is in sb.h. This file sets a
 * run up and launches the workers.
 *
 * Who owns what. The main process parses options, loads identities and maps one shared
 * region (sb.h) that holds the global phase, one slot per bench thread and, for the queue
 * scenario, the per-message arrays. With --processes K > 1 it forks K children, each running
 * --threads bench threads over its share of the connections, and only orchestrates; with
 * K = 1 the threads run in the main process. Connections are started at most --inflight at a
 * time per thread (the rest wait their turn); one that breaks after the connect phase is
 * counted and reconnected after SB_RETRY_MS (what it had in flight is lost and shows as
 * unanswered). In the connect phase a failure ends the run: it means the set-up is wrong.
 */
#include "sb.h"
#include "sb_conn.h"
#include "sb_opts.h"
#include "sb_scen.h"
#include "sb_thread.h"
#include "sp_frame.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

volatile sig_atomic_t sb_interrupted, sb_child_died;

/* The run, for the SIGCHLD handler only (everything else gets it passed). */
static sb_run_t *g_run;

/* What the orchestrator runs, by enum sb_scenario. */
static int (*const scenario_run[])(sb_run_t *r, FILE *out) = {
        [SB_THROUGHPUT] = sb_scen_traffic,  [SB_FANOUT] = sb_scen_traffic,
        [SB_QUEUE] = sb_scen_queue,         [SB_IDLE] = sb_scen_idle,
        [SB_HANDSHAKE] = sb_scen_handshake,
};

static int tls_setup(sb_run_t *r)
{
	const sb_opts_t *o = &r->opt;
	char path[PATH_MAX];

	r->ctx = SSL_CTX_new(TLS_client_method());
	if (r->ctx == NULL)
		return -1;
	SSL_CTX_set_min_proto_version(r->ctx, TLS1_3_VERSION);
	SSL_CTX_set_mode(r->ctx,
	                 SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (!o->send_chain)
		SSL_CTX_set_mode(r->ctx, SSL_MODE_NO_AUTO_CHAIN);
	if (o->tls_ciphersuites != NULL &&
	    SSL_CTX_set_ciphersuites(r->ctx, o->tls_ciphersuites) != 1) {
		fprintf(stderr, "sealpush-bench: bad --tls-ciphersuites '%s'\n",
		        o->tls_ciphersuites);
		return -1;
	}
	if (sp_tls_set_groups(r->ctx, o->tls_groups, false) < 0) {
		fprintf(stderr, "sealpush-bench: bad --tls-groups '%s'\n", o->tls_groups);
		return -1;
	}
	if (o->scenario == SB_HANDSHAKE) {
		/* Tickets reach on_new_session(); nothing is cached inside OpenSSL. */
		SSL_CTX_set_session_cache_mode(r->ctx, SSL_SESS_CACHE_CLIENT |
		                                               SSL_SESS_CACHE_NO_INTERNAL_STORE);
		SSL_CTX_sess_set_new_cb(r->ctx, sb_conn_on_new_session);
	} else {
		SSL_CTX_set_session_cache_mode(r->ctx, SSL_SESS_CACHE_OFF);
	}
	if (SSL_CTX_set_alpn_protos(r->ctx, (const unsigned char *)"\x0a" SP_ALPN,
	                            1 + strlen(SP_ALPN)) != 0)
		return -1;
	snprintf(path, sizeof(path), "%s/ca.crt", o->ca_dir);
	if (SSL_CTX_load_verify_locations(r->ctx, path, NULL) != 1) {
		fprintf(stderr, "sealpush-bench: cannot load %s\n", path);
		return -1;
	}
	SSL_CTX_set_verify(r->ctx, SSL_VERIFY_PEER, NULL);
	return 0;
}

static void on_signal(int sig)
{
	(void)sig;
	sb_interrupted = 1;
}

static void on_sigchld(int sig)
{
	int saved = errno;

	(void)sig;
	if (g_run != NULL && g_run->sh != NULL && sb_phase_get(g_run) != PH_QUIT)
		sb_child_died = 1;
	errno = saved;
}

/* The connection counts and identities of the scenario. Returns 0 or -1 (said why). */
static int idents_setup(sb_run_t *r)
{
	const sb_opts_t *o = &r->opt;
	unsigned minted = 0;
	const char *tool = sb_ident_tool(o->ca_tool);
	uint64_t t = sb_now_ns();

	switch (o->scenario) {
	case SB_THROUGHPUT:
	case SB_FANOUT:
		r->n_send = r->n_send_ids = o->senders;
		r->n_recv = r->n_recv_ids = o->receivers;
		break;
	case SB_QUEUE:
		r->n_send = r->n_send_ids = o->senders;
		r->n_recv = r->n_recv_ids = o->devices;
		break;
	case SB_IDLE:
		r->n_recv = o->conns;
		r->n_recv_ids = o->register_idle ? o->conns : o->devices;
		break;
	case SB_HANDSHAKE:
		r->n_recv = o->conns;
		r->n_recv_ids = o->devices;
		break;
	}
	if (r->n_recv_ids > r->n_recv)
		r->n_recv_ids = r->n_recv;
	r->send_ids = calloc(r->n_send_ids + 1, sizeof(*r->send_ids));
	r->recv_ids = calloc(r->n_recv_ids + 1, sizeof(*r->recv_ids));
	if (r->send_ids == NULL || r->recv_ids == NULL)
		return -1;
	/* SEND_ONLY connections of idle and handshake use sender identities (bench-sI). */
	if (sb_ident_load(o->ca_dir, tool, "bench-s", r->n_send_ids, r->send_ids, &minted) < 0 ||
	    sb_ident_load(o->ca_dir, tool,
	                  (o->scenario == SB_IDLE && !o->register_idle) ||
	                                  o->scenario == SB_HANDSHAKE
	                          ? "bench-s"
	                          : "bench-r",
	                  r->n_recv_ids, r->recv_ids, &minted) < 0)
		return -1;
	if (minted > 0)
		fprintf(stderr, "sealpush-bench: issued %u identities with %s in %.1f s\n", minted,
		        tool, sb_ns_to_s(sb_now_ns() - t));
	return 0;
}

/* Raises the descriptor limit and checks that each process's share of connections fits. */
static int fds_setup(sb_run_t *r)
{
	const sb_opts_t *o = &r->opt;
	struct rlimit rl;
	uint64_t per = ((uint64_t)r->n_send + r->n_recv + o->processes - 1) / o->processes;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    per + SB_FD_RESERVE > rl.rlim_cur) {
		fprintf(stderr,
		        "sealpush-bench: %" PRIu64 " connections per process do not fit the "
		        "descriptor limit %llu: use more --processes\n",
		        per, (unsigned long long)rl.rlim_cur);
		return -1;
	}
	return 0;
}

/* Maps the shared region (slots, phase, queue arrays). */
static int shared_setup(sb_run_t *r)
{
	const sb_opts_t *o = &r->opt;
	size_t sz = sizeof(sb_shared_t) + (size_t)r->nslots * sizeof(sb_slot_t);

	r->sh = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (r->sh == MAP_FAILED) {
		r->sh = NULL;
		return -1;
	}
	for (unsigned k = 0; k < r->nslots; k++) {
		sb_hist_init(&r->sh->slots[k].hist);
		sb_hist_init(&r->sh->slots[k].lag);
	}
	atomic_store(&r->sh->phase, o->scenario == SB_HANDSHAKE ? PH_WARMUP : PH_CONNECT);
	if (o->scenario == SB_QUEUE) {
		r->qstatus = mmap(NULL, o->messages, PROT_READ | PROT_WRITE,
		                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		r->arrived = mmap(NULL, o->messages, PROT_READ | PROT_WRITE,
		                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (r->qstatus == MAP_FAILED || r->arrived == MAP_FAILED)
			return -1;
	}
	return 0;
}

/* Forks the bench processes (K > 1) or starts the threads here. Returns 0 in the parent. */
static int workers_launch(sb_run_t *r)
{
	const sb_opts_t *o = &r->opt;
	pid_t parent = getpid();

	if (o->processes == 1)
		return sb_workers_start(r, 0);
	r->children = calloc(o->processes, sizeof(*r->children));
	if (r->children == NULL)
		return -1;
	signal(SIGCHLD, on_sigchld);
	for (unsigned p = 0; p < o->processes; p++) {
		pid_t pid = fork();

		if (pid < 0) {
			perror("sealpush-bench: fork");
			return -1;
		}
		if (pid == 0) {
			/* A bench process: its threads run until the orchestrator says PH_QUIT. */
			signal(SIGINT, SIG_IGN);
			signal(SIGTERM, SIG_DFL);
			signal(SIGCHLD, SIG_DFL);
			prctl(PR_SET_PDEATHSIG, SIGTERM);
			if (getppid() != parent)
				_exit(1);
			if (sb_workers_start(r, p * o->threads) < 0)
				_exit(1);
			sb_workers_join(r);
			_exit(0);
		}
		r->children[p] = pid;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static sb_run_t run; /* large (the per-second figures): not on the stack */
	sb_run_t *r = &run;
	const sb_opts_t *o = &r->opt;
	FILE *out;
	int rc = 1;

	if (sb_opts_parse(&r->opt, argc, argv) < 0)
		return 2;
	g_run = r;
	out = o->json ? stderr : stdout;
	r->progress = !o->quiet && isatty(STDERR_FILENO);
	r->nslots = o->processes * o->threads;
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (tls_setup(r) < 0) {
		ERR_print_errors_fp(stderr);
		goto out;
	}
	if (idents_setup(r) < 0 || fds_setup(r) < 0)
		goto out;
	if (RAND_bytes(r->nonce, sizeof(r->nonce)) != 1 || shared_setup(r) < 0) {
		fprintf(stderr, "sealpush-bench: set-up failed\n");
		goto out;
	}
	if (workers_launch(r) < 0) {
		if (r->sh != NULL)
			sb_workers_stop(r);
		goto out;
	}
	rc = scenario_run[o->scenario](r, out);
out:
	sb_ident_free(r->send_ids, r->n_send_ids);
	sb_ident_free(r->recv_ids, r->n_recv_ids);
	free(r->send_ids);
	free(r->recv_ids);
	free(r->children);
	SSL_CTX_free(r->ctx);
	return rc;
}
