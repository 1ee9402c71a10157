/*
 * memctl.c: an LD_PRELOAD shim for bench/idle: lets the driver ask the daemon for glibc malloc
 * statistics and a malloc_trim(0), and (optionally) attributes OpenSSL's live heap to its
 * OPENSSL_malloc call sites. Not part of the build:
 *
 *   gcc -O2 -Wall -shared -fPIC -o /tmp/memctl.so bench/idle/memctl.c -lssl -lcrypto -lpthread -ldl
 *   MEMCTL=/tmp/idle-run/ctl [MEMCTL_TRACK=1] LD_PRELOAD=/tmp/memctl.so sealpushd ...
 *
 * Why not gdb: on this VM (kernel 6.18, gdb 13.1) `gdb -p PID -ex 'call malloc_trim(0)'` runs
 * the function but then fails with "Couldn't write extended state status: Bad address" while
 * restoring the registers, which can leave the stopped thread's interrupted system call
 * returning -ERESTART* to user space. A thread inside the process avoids ptrace entirely.
 *
 * Protocol: write a command into $MEMCTL.cmd (atomically: write elsewhere, then rename); within
 * 100 ms the shim runs it, writes its answer to $MEMCTL.out.tmp and renames that to
 * $MEMCTL.out. Commands:
 *   stats       mallinfo2() summed over all arenas, one line; malloc_stats() to stderr too
 *   trim        malloc_trim(0); answers its return value and mallinfo2() after it
 *   info PATH   malloc_info(0) as XML into PATH
 *   dump PATH   (MEMCTL_TRACK=1) live OpenSSL blocks by site into PATH
 *
 * With MEMCTL_TRACK=1 the shim installs CRYPTO_set_mem_functions() from its constructor
 * (before OpenSSL allocates anything) and keeps every live OpenSSL block in a hash table with
 * its site (file:line as passed to CRYPTO_malloc) and size; "dump" groups them by site with
 * the count, the requested bytes, and the bytes glibc really spends on them
 * (malloc_usable_size + 8 bytes of chunk header). Only OpenSSL's allocations are seen (libssl,
 * libcrypto, providers), not libevent's or the daemon's own. The table (64 MiB, touched as it
 * fills) inflates RSS, so take RSS figures from runs without MEMCTL_TRACK.
 *
 * Experiments without touching the daemon's code (it calls libssl dynamically, so these
 * interpose on its calls):
 *   MEMCTL_DROP_CHAIN=1  when SSL_do_handshake() succeeds on a server SSL, pop and free the
 *                        certificates of SSL_get_peer_cert_chain() (on a server it holds only
 *                        the extra certificates the client sent, not the leaf)
 *   MEMCTL_TICKETS=N     SSL_CTX_set_num_tickets(ctx, N) whatever the daemon asks for
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <malloc.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NB (1u << 22) /* hash slots for live blocks (open addressing) */
#define NS 8192       /* distinct sites */

typedef struct {
	void *p;
	uint32_t site;
	uint32_t size;
} blk_t;

typedef struct {
	const char *file;
	int line;
	long count, bytes, real;
} site_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static blk_t *blk;
static site_t sites[NS];
static int tracking;
static char ctl[512];

static uint32_t hp(void *p)
{
	uint64_t x = (uint64_t)(uintptr_t)p;

	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return (uint32_t)x & (NB - 1);
}

static uint32_t site_of(const char *file, int line)
{
	uint32_t h = ((uint32_t)(uintptr_t)file * 31u + (uint32_t)line) % NS;

	for (uint32_t i = 0; i < NS; i++, h = (h + 1) % NS) {
		if (sites[h].file == file && sites[h].line == line)
			return h;
		if (!sites[h].file) {
			sites[h].file = file;
			sites[h].line = line;
			return h;
		}
	}
	return 0;
}

static void add(void *p, size_t n, const char *file, int line)
{
	uint32_t i;
	site_t *s;

	if (!p)
		return;
	pthread_mutex_lock(&mu);
	for (i = hp(p); blk[i].p; i = (i + 1) & (NB - 1))
		;
	blk[i].p = p;
	blk[i].size = (uint32_t)n;
	blk[i].site = site_of(file ? file : "?", line);
	s = &sites[blk[i].site];
	s->count++;
	s->bytes += (long)n;
	s->real += (long)malloc_usable_size(p) + 8;
	pthread_mutex_unlock(&mu);
}

static void del(void *p)
{
	uint32_t i, j;

	if (!p)
		return;
	pthread_mutex_lock(&mu);
	for (i = hp(p); blk[i].p && blk[i].p != p; i = (i + 1) & (NB - 1))
		;
	if (blk[i].p) {
		site_t *s = &sites[blk[i].site];

		s->count--;
		s->bytes -= blk[i].size;
		s->real -= (long)malloc_usable_size(p) + 8;
		blk[i].p = NULL;
		for (j = (i + 1) & (NB - 1); blk[j].p; j = (j + 1) & (NB - 1)) {
			uint32_t home = hp(blk[j].p);

			if (((j - home) & (NB - 1)) >= ((j - i) & (NB - 1))) {
				blk[i] = blk[j];
				blk[j].p = NULL;
				i = j;
			}
		}
	}
	pthread_mutex_unlock(&mu);
}

static void *m_malloc(size_t n, const char *file, int line)
{
	void *p = malloc(n);

	add(p, n, file, line);
	return p;
}

static void *m_realloc(void *o, size_t n, const char *file, int line)
{
	void *p;

	if (o == NULL)
		return m_malloc(n, file, line);
	if (n == 0) {
		del(o);
		free(o);
		return NULL;
	}
	del(o);
	p = realloc(o, n);
	add(p ? p : o, p ? n : malloc_usable_size(o), file, line);
	return p;
}

static void m_free(void *p, const char *file, int line)
{
	(void)file;
	(void)line;
	del(p);
	free(p);
}

static int by_real(const void *a, const void *b)
{
	const site_t *x = a, *y = b;

	return (y->real > x->real) - (y->real < x->real);
}

static void dump(const char *path)
{
	static site_t copy[NS];
	long tb = 0, tr = 0, tc = 0;
	FILE *f = fopen(path, "w");

	if (!f)
		return;
	pthread_mutex_lock(&mu);
	memcpy(copy, sites, sizeof(copy));
	pthread_mutex_unlock(&mu);
	qsort(copy, NS, sizeof(copy[0]), by_real);
	for (uint32_t i = 0; i < NS; i++) {
		tb += copy[i].bytes;
		tr += copy[i].real;
		tc += copy[i].count;
	}
	fprintf(f, "# live OpenSSL blocks: %ld, requested %ld bytes, real (usable+8) %ld bytes\n",
	        tc, tb, tr);
	fprintf(f, "# count\trequested\treal\tsite\n");
	for (uint32_t i = 0; i < NS; i++)
		if (copy[i].file && copy[i].count)
			fprintf(f, "%ld\t%ld\t%ld\t%s:%d\n", copy[i].count, copy[i].bytes,
			        copy[i].real, copy[i].file, copy[i].line);
	fclose(f);
}

static int mi_line(char *buf, size_t len)
{
	struct mallinfo2 mi = mallinfo2();

	return snprintf(buf, len,
	                "arena=%zu inuse=%zu free=%zu mmap=%zu keepcost=%zu (bytes; arena = heap "
	                "obtained by sbrk/arena mmap, all arenas)",
	                mi.arena, mi.uordblks, mi.fordblks, mi.hblkhd, mi.keepcost);
}

static void *ctl_thread(void *arg)
{
	char cmdp[600], outp[600], tmpp[600], cmd[1024], out[1024];

	(void)arg;
	snprintf(cmdp, sizeof(cmdp), "%s.cmd", ctl);
	snprintf(outp, sizeof(outp), "%s.out", ctl);
	snprintf(tmpp, sizeof(tmpp), "%s.out.tmp", ctl);
	for (;;) {
		int fd = open(cmdp, O_RDONLY | O_CLOEXEC);
		ssize_t n;
		int o = 0;

		if (fd < 0) {
			usleep(100000);
			continue;
		}
		n = read(fd, cmd, sizeof(cmd) - 1);
		close(fd);
		unlink(cmdp);
		if (n <= 0)
			continue;
		cmd[n] = 0;
		cmd[strcspn(cmd, "\n")] = 0;
		if (strcmp(cmd, "stats") == 0) {
			malloc_stats();
			o = mi_line(out, sizeof(out));
		} else if (strcmp(cmd, "trim") == 0) {
			int r = malloc_trim(0);

			o = snprintf(out, sizeof(out), "malloc_trim=%d ", r);
			o += mi_line(out + o, sizeof(out) - (size_t)o);
		} else if (strncmp(cmd, "info ", 5) == 0) {
			FILE *f = fopen(cmd + 5, "w");

			if (f) {
				malloc_info(0, f);
				fclose(f);
			}
			o = snprintf(out, sizeof(out), "info written to %s", cmd + 5);
		} else if (strncmp(cmd, "dump ", 5) == 0 && tracking) {
			dump(cmd + 5);
			o = snprintf(out, sizeof(out), "dump written to %s", cmd + 5);
		} else {
			o = snprintf(out, sizeof(out), "unknown command (or MEMCTL_TRACK not set)");
		}
		fd = open(tmpp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd >= 0) {
			if (write(fd, out, (size_t)o) < 0 || write(fd, "\n", 1) < 0)
				(void)0;
			close(fd);
			rename(tmpp, outp);
		}
	}
	return NULL;
}

__attribute__((constructor)) static void memctl_init(void)
{
	const char *c = getenv("MEMCTL"), *t = getenv("MEMCTL_TRACK");
	pthread_t th;
	pthread_attr_t a;

	if (t && *t == '1') {
		blk = calloc(NB, sizeof(*blk));
		if (blk && CRYPTO_set_mem_functions(m_malloc, m_realloc, m_free))
			tracking = 1;
		else
			fprintf(stderr, "memctl: cannot install the OpenSSL allocator hooks\n");
	}
	if (c && *c) {
		snprintf(ctl, sizeof(ctl), "%s", c);
		pthread_attr_init(&a);
		pthread_attr_setstacksize(&a, 256 * 1024);
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		pthread_create(&th, &a, ctl_thread, NULL);
		pthread_attr_destroy(&a);
	}
}

static int drop_chain = -1;

int SSL_do_handshake(SSL *s)
{
	static int (*real)(SSL *);
	int r;

	if (!real)
		real = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_do_handshake");
	r = real(s);
	if (drop_chain < 0) {
		const char *e = getenv("MEMCTL_DROP_CHAIN");

		drop_chain = e && *e == '1';
	}
	if (r == 1 && drop_chain && SSL_is_server(s)) {
		STACK_OF(X509) *ch = SSL_get_peer_cert_chain(s);
		X509 *x;

		while (ch && (x = sk_X509_pop(ch)) != NULL)
			X509_free(x);
	}
	return r;
}

int SSL_CTX_set_num_tickets(SSL_CTX *ctx, size_t n)
{
	static int (*real)(SSL_CTX *, size_t);
	const char *e = getenv("MEMCTL_TICKETS");

	if (!real)
		real = (int (*)(SSL_CTX *, size_t))dlsym(RTLD_NEXT, "SSL_CTX_set_num_tickets");
	return real(ctx, e && *e ? (size_t)atoi(e) : n);
}
