/* redis_harness.c: a private redis-server for unit tests (redis_harness.h). */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "redis_harness.h"

char rh_dir[64];
char rh_sock[128];
char rh_log[128];
char rh_url[160];
pid_t rh_pid = -1;
redisContext *rh_raw;

uint64_t rh_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t rh_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void rh_sleep_ms(unsigned ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

void rh_kill(int sig)
{
	if (rh_pid > 0) {
		kill(rh_pid, SIGCONT);
		kill(rh_pid, sig);
		waitpid(rh_pid, NULL, 0);
		rh_pid = -1;
	}
}

static void cleanup(void)
{
	if (rh_raw)
		redisFree(rh_raw);
	rh_raw = NULL;
	rh_kill(SIGKILL);
	if (rh_dir[0]) {
		unlink(rh_sock);
		unlink(rh_log);
		rmdir(rh_dir);
		rh_dir[0] = '\0';
	}
}

int rh_setup(const char *prefix)
{
	snprintf(rh_dir, sizeof(rh_dir), "/tmp/%s-XXXXXX", prefix);
	if (!mkdtemp(rh_dir)) {
		printf("Bail out! mkdtemp: %s\n", strerror(errno));
		rh_dir[0] = '\0';
		return -1;
	}
	snprintf(rh_sock, sizeof(rh_sock), "%s/redis.sock", rh_dir);
	snprintf(rh_log, sizeof(rh_log), "%s/redis.log", rh_dir);
	snprintf(rh_url, sizeof(rh_url), "unix:%s", rh_sock);
	atexit(cleanup);
	return 0;
}

void rh_print_log(void)
{
	FILE *f = fopen(rh_log, "r");
	char line[512];

	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		printf("# redis: %s", line);
	fclose(f);
}

int rh_start(void)
{
	pid_t parent = getpid();
	pid_t pid = fork();
	uint64_t until;

	if (pid < 0)
		return -1;
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
		}
		const char *server = getenv("REDIS_SERVER"); /* e.g. valkey-server */

		if (!server || !server[0])
			server = "redis-server";
		execlp(server, server, "--port", "0", "--unixsocket", rh_sock, "--unixsocketperm",
		       "700", "--save", "", "--appendonly", "no", "--dir", rh_dir, "--logfile",
		       rh_log, "--daemonize", "no", (char *)NULL);
		_exit(127);
	}
	rh_pid = pid;
	until = rh_mono_ms() + 10000;
	while (rh_mono_ms() < until) {
		int wstatus;
		redisContext *c;

		if (waitpid(pid, &wstatus, WNOHANG) == pid) {
			rh_pid = -1;
			return -1;
		}
		c = redisConnectUnix(rh_sock);
		if (c && !c->err) {
			redisReply *r = redisCommand(c, "PING");
			bool ok = r && r->type == REDIS_REPLY_STATUS;

			if (r)
				freeReplyObject(r);
			if (ok) {
				if (rh_raw)
					redisFree(rh_raw);
				rh_raw = c;
				return 0;
			}
		}
		if (c)
			redisFree(c);
		rh_sleep_ms(20);
	}
	rh_print_log();
	return -1;
}

bool rh_run_until(struct event_base *base, const int *flag, unsigned ms)
{
	uint64_t until = rh_mono_ms() + ms;

	while (!*flag && rh_mono_ms() < until)
		event_base_loop(base, EVLOOP_ONCE);
	return *flag != 0;
}

bool rh_wait_up(struct event_base *base, sp_store_t *s, unsigned ms)
{
	uint64_t until = rh_mono_ms() + ms;

	while (!sp_store_up(s) && rh_mono_ms() < until)
		event_base_loop(base, EVLOOP_ONCE);
	return sp_store_up(s);
}
