/*
 * sp_seal_keyring: rotation, grace and erasure of a device's sealing keys (sp_seal_keyring.h,
 * PROTOCOL.md 13.11).
 */
#include "sp_seal_keyring.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sp_xwing.h"

int sp_seal_keyring_path(const char *base, uint32_t epoch, char *out, size_t outlen)
{
	int r = epoch == 0 ? snprintf(out, outlen, "%s", base)
	                   : snprintf(out, outlen, "%s.d/%u.key", base, (unsigned)epoch);

	return r < 0 || (size_t)r >= outlen ? -ENAMETOOLONG : 0;
}

/* "N.key" with N in 1..2^32-1, decimal without leading zeros: N into *epoch. */
static int sp_keyring_name(const char *name, uint32_t *epoch)
{
	char *end;
	unsigned long v;

	if (name[0] < '1' || name[0] > '9')
		return 0;
	errno = 0;
	v = strtoul(name, &end, 10);
	if (errno != 0 || v > UINT32_MAX || strcmp(end, ".key") != 0)
		return 0;
	*epoch = (uint32_t)v;
	return 1;
}

/* Reads one key's entry (and checks its epoch). */
static int sp_keyring_entry(const char *base, uint32_t epoch, struct sp_seal_keyring_entry *e)
{
	struct sp_seal_key_file k;
	char path[PATH_MAX];
	int r = sp_seal_keyring_path(base, epoch, path, sizeof(path));

	if (r != 0)
		return r;
	r = sp_seal_key_file_read(path, &k);
	if (r != 0)
		return r;
	if (k.epoch != epoch)
		r = SP_SEAL_ERR_KEY_FILE;
	e->epoch = epoch;
	e->created_at = k.created_at;
	e->hybrid = k.has_seed;
	sp_seal_key_file_clear(&k);
	return r;
}

static int sp_keyring_cmp(const void *a, const void *b)
{
	const struct sp_seal_keyring_entry *x = a, *y = b;

	return x->epoch < y->epoch ? -1 : x->epoch > y->epoch;
}

int sp_seal_keyring_scan(const char *base, struct sp_seal_keyring *out)
{
	char dir[PATH_MAX];
	struct dirent *de;
	struct stat st;
	DIR *d;
	uint32_t epoch;
	int r;

	if (base == NULL || out == NULL)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	if (stat(base, &st) == 0) {
		r = sp_keyring_entry(base, 0, &out->e[out->n]);
		if (r != 0)
			return r;
		out->n++;
	} else if (errno != ENOENT) {
		return -errno;
	}
	r = snprintf(dir, sizeof(dir), "%s.d", base);
	if (r < 0 || (size_t)r >= sizeof(dir))
		return -ENAMETOOLONG;
	d = opendir(dir);
	if (d == NULL) {
		if (errno != ENOENT)
			return -errno;
		return out->n > 0 ? 0 : -ENOENT;
	}
	r = 0;
	while (r == 0 && (de = readdir(d)) != NULL) {
		if (!sp_keyring_name(de->d_name, &epoch))
			continue;
		if (out->n >= SP_SEAL_KEYRING_MAX) {
			r = -E2BIG;
			break;
		}
		r = sp_keyring_entry(base, epoch, &out->e[out->n]);
		if (r == 0)
			out->n++;
	}
	closedir(d);
	if (r != 0)
		return r;
	if (out->n == 0)
		return -ENOENT;
	qsort(out->e, out->n, sizeof(out->e[0]), sp_keyring_cmp);
	return 0;
}

int sp_seal_keyring_due(const struct sp_seal_keyring *k, int64_t now, uint64_t every_s)
{
	int64_t made;

	if (k == NULL || k->n == 0 || every_s == 0)
		return 0;
	made = k->e[k->n - 1].created_at;
	return now >= made && (uint64_t)(now - made) >= every_s;
}

/* fsync of the folder holding path, so that an unlink or a new file is on disk. */
static int sp_fsync_parent(const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	int fd, r = 0;

	if (slash == NULL) {
		snprintf(dir, sizeof(dir), ".");
	} else {
		if ((size_t)(slash - path) >= sizeof(dir))
			return -ENAMETOOLONG;
		memcpy(dir, path, (size_t)(slash - path));
		dir[slash - path] = '\0';
		if (dir[0] == '\0')
			snprintf(dir, sizeof(dir), "/");
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) != 0)
		r = -errno;
	close(fd);
	return r;
}

int sp_seal_erase_file(const char *path)
{
	static const uint8_t zero[4096];
	struct stat st;
	off_t left;
	int fd, r = 0;

	if (path == NULL)
		return -EINVAL;
	fd = open(path, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ELOOP ? -EINVAL : -errno;
	if (fstat(fd, &st) != 0) {
		r = -errno;
		close(fd);
		return r;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	/* Overwrite in place (no O_TRUNC: that would free the blocks unwritten). */
	for (left = st.st_size; left > 0 && r == 0;) {
		size_t n = left > (off_t)sizeof(zero) ? sizeof(zero) : (size_t)left;
		ssize_t w = write(fd, zero, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			r = w < 0 ? -errno : -EIO;
		else
			left -= w;
	}
	if (r == 0 && fsync(fd) != 0)
		r = -errno;
	close(fd);
	if (r != 0)
		return r;
	if (unlink(path) != 0)
		return -errno;
	return sp_fsync_parent(path);
}

/* Erases the key of entry i of k. */
static int sp_keyring_erase(const char *base, const struct sp_seal_keyring *k, size_t i)
{
	char path[PATH_MAX];
	int r = sp_seal_keyring_path(base, k->e[i].epoch, path, sizeof(path));

	return r != 0 ? r : sp_seal_erase_file(path);
}

int sp_seal_keyring_rotate(const char *base, int64_t now, uint32_t *epoch)
{
	struct sp_seal_keyring k;
	char dir[PATH_MAX], path[PATH_MAX];
	uint32_t next;
	int r;

	if (base == NULL || now < 0)
		return -EINVAL;
	r = sp_seal_keyring_scan(base, &k);
	if (r != 0)
		return r;
	next = k.e[k.n - 1].epoch + 1;
	if (next == 0)
		return -EOVERFLOW;
	if (k.n >= SP_SEAL_KEYRING_MAX) {
		r = sp_keyring_erase(base, &k, 0);
		if (r != 0)
			return r;
	}
	r = snprintf(dir, sizeof(dir), "%s.d", base);
	if (r < 0 || (size_t)r >= sizeof(dir))
		return -ENAMETOOLONG;
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return -errno;
	r = sp_seal_keyring_path(base, next, path, sizeof(path));
	if (r == 0)
		r = sp_seal_keygen_file_epoch(path, sp_xwing_available(), next, now);
	if (r == 0)
		r = sp_fsync_parent(path);
	if (r == 0 && epoch != NULL)
		*epoch = next;
	return r;
}

int sp_seal_keyring_expire(const char *base, int64_t now, uint64_t grace_s, unsigned *erased)
{
	struct sp_seal_keyring k;
	unsigned n = 0;
	int r;

	if (erased != NULL)
		*erased = 0;
	if (base == NULL)
		return -EINVAL;
	r = sp_seal_keyring_scan(base, &k);
	if (r != 0)
		return r;
	/* Key i was retired when key i + 1 was made. */
	for (size_t i = 0; i + 1 < k.n && r == 0; i++) {
		int64_t retired = k.e[i + 1].created_at;

		if (now < retired || (uint64_t)(now - retired) < grace_s)
			continue;
		r = sp_keyring_erase(base, &k, i);
		if (r == 0)
			n++;
	}
	if (erased != NULL)
		*erased = n;
	return r;
}

int sp_seal_keyring_maintain(const char *base, int64_t now, uint64_t every_s, uint64_t grace_s,
                             uint32_t *rotated, unsigned *erased)
{
	struct sp_seal_keyring k;
	uint32_t epoch = 0;
	int r;

	if (rotated != NULL)
		*rotated = 0;
	if (erased != NULL)
		*erased = 0;
	r = sp_seal_keyring_scan(base, &k);
	if (r != 0)
		return r;
	if (sp_seal_keyring_due(&k, now, every_s)) {
		r = sp_seal_keyring_rotate(base, now, &epoch);
		if (r == -EEXIST)
			r = 0; /* another process rotated at the same time: its key is the new one
			        */
		if (r != 0)
			return r;
		if (rotated != NULL)
			*rotated = epoch;
	}
	return sp_seal_keyring_expire(base, now, grace_s, erased);
}

int sp_seal_keyring_load(const char *cert_path, const char *key_path, const char *base,
                         struct sp_sealer **out)
{
	struct sp_seal_keyring k;
	struct sp_seal_key_file f;
	char path[PATH_MAX];
	int r;

	if (out == NULL || base == NULL)
		return -EINVAL;
	*out = NULL;
	r = sp_seal_keyring_scan(base, &k);
	if (r == 0)
		r = sp_seal_keyring_path(base, k.e[k.n - 1].epoch, path, sizeof(path));
	if (r == 0)
		r = sp_sealer_load(cert_path, key_path, path, out);
	for (size_t i = 0; r == 0 && i + 1 < k.n; i++) {
		r = sp_seal_keyring_path(base, k.e[i].epoch, path, sizeof(path));
		if (r == 0)
			r = sp_seal_key_file_read(path, &f);
		if (r == 0)
			r = sp_sealer_add_old_key(*out, &f);
		sp_seal_key_file_clear(&f);
	}
	if (r != 0) {
		sp_sealer_free(*out);
		*out = NULL;
	}
	return r;
}
