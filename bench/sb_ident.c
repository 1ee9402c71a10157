/* sb_ident: see sb_ident.h. */
#include "sb_ident.h"
#include "sp_identity.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/pem.h>

const char *sb_ident_tool(const char *explicit_path)
{
	static char path[PATH_MAX + 32];
	char exe[PATH_MAX];
	ssize_t n;

	if (explicit_path != NULL)
		return explicit_path;
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		char *dir = dirname(exe);

		snprintf(path, sizeof(path), "%s/sealpush-ca", dir);
		if (access(path, X_OK) == 0)
			return path;
		snprintf(path, sizeof(path), "%s/../tools/sealpush-ca", dir);
		if (access(path, X_OK) == 0)
			return path;
	}
	return "sealpush-ca";
}

/* Runs "tool device dir name" with stdout discarded. Returns 0 if it exited 0. */
static int ident_mint(const char *tool, const char *dir, const char *name)
{
	pid_t pid;
	int status;

	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int fd = open("/dev/null", O_WRONLY);

		if (fd >= 0)
			dup2(fd, STDOUT_FILENO);
		execlp(tool, tool, "device", dir, name, (char *)NULL);
		fprintf(stderr, "sealpush-bench: cannot run %s: %s\n", tool, strerror(errno));
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static int ident_read(const char *dir, const char *name, sb_ident_t *id)
{
	char path[PATH_MAX];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s.crt", dir, name);
	f = fopen(path, "r");
	if (f == NULL)
		return -1;
	id->cert = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	snprintf(path, sizeof(path), "%s/%s.key", dir, name);
	f = fopen(path, "r");
	if (f == NULL)
		return -1;
	id->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (id->cert == NULL || id->key == NULL)
		return -1;
	return sp_token_from_cert(id->cert, id->token) == 0 ? 0 : -1;
}

int sb_ident_load(const char *dir, const char *tool, const char *prefix, unsigned n,
                  sb_ident_t *out, unsigned *minted)
{
	char name[96], crt[PATH_MAX], key[PATH_MAX];

	for (unsigned i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "%s%u", prefix, i);
		snprintf(crt, sizeof(crt), "%s/%s.crt", dir, name);
		snprintf(key, sizeof(key), "%s/%s.key", dir, name);
		if (access(crt, R_OK) != 0 || access(key, R_OK) != 0) {
			if (ident_mint(tool, dir, name) < 0) {
				fprintf(stderr, "sealpush-bench: '%s device %s %s' failed\n", tool,
				        dir, name);
				return -1;
			}
			(*minted)++;
		}
		memset(&out[i], 0, sizeof(out[i]));
		if (ident_read(dir, name, &out[i]) < 0) {
			fprintf(stderr, "sealpush-bench: cannot load identity %s/%s.{crt,key}\n",
			        dir, name);
			return -1;
		}
	}
	return 0;
}

void sb_ident_free(sb_ident_t *ids, unsigned n)
{
	if (ids == NULL)
		return;
	for (unsigned i = 0; i < n; i++) {
		X509_free(ids[i].cert);
		EVP_PKEY_free(ids[i].key);
	}
}
