/*
 * sp_seal_keyring: a device's sealing keys over time (PROTOCOL.md 13.11). The device rotates
 * its sealing key on a schedule and on demand, keeps each earlier key for a grace period (so
 * that messages sealed to it while it was current, and stored by the relay up to its max_ttl,
 * still open), and then erases it from disk, so that whoever takes the device later cannot open
 * the messages of before.
 *
 * On disk, beside the device's key, with BASE the sealing key file `sealpush init` made (e.g.
 * phone.seal.key):
 *	BASE            the epoch-0 key, as long as it is not erased (any format of 13.10)
 *	BASE.d/         folder, mode 0700: one file per later epoch, "N.key" (N >= 1 in decimal,
 *	                a v2 key file of body version 2, which records N and its creation time)
 * The current key is the highest epoch there. An earlier key was retired when the next epoch
 * was made (that file's created_at); it is erased once it has been retired for the grace
 * period: its file is overwritten with zeros and fsync'ed, then unlinked, and the folder
 * fsync'ed. (On flash or copy-on-write file systems the old blocks may survive the overwrite;
 * THREATS.md says what that leaves.)
 *
 * Who calls what:
 *  - sp_seal_keyring_load() makes the sealer: the current key and every earlier one on disk.
 *  - sp_seal_keyring_maintain(): rotates if the current key is older than the rotation period,
 *    erases what is past its grace; run at start and then periodically (`sealpush listen` does
 *    it each minute); if it changed anything, load again and, after a rotation, publish the new
 *    card (sp_card_make()).
 *  - sp_seal_keyring_rotate() rotates now (`sealpush rotate`).
 * Two processes may share the files: rotation creates the next epoch's file with O_EXCL (the
 * loser of a race gets -EEXIST and the winner's key), and a process that holds a sealer learns
 * of a newer key from SP_SEAL_ERR_KEY_EPOCH (load again). Every function here blocks on disk
 * I/O; none keeps state between calls.
 */
#ifndef SP_SEAL_KEYRING_H
#define SP_SEAL_KEYRING_H

#include <stddef.h>
#include <stdint.h>

#include "sp_seal.h"

#define SP_SEAL_KEYRING_MAX      (1 + SP_SEAL_OLD_KEYS_MAX) /* keys on disk at most */
#define SP_SEAL_ROTATE_DEFAULT_S (7u * 86400)               /* rotation period: weekly */
#define SP_SEAL_GRACE_DEFAULT_S  (30u * 86400) /* sealpushd's default max_ttl (30 days) */
#define SP_SEAL_ROTATE_MIN_S     60            /* the shortest rotation period accepted */
#define SP_SEAL_GRACE_MAX_S      (366u * 86400)

/* One key on disk. */
struct sp_seal_keyring_entry {
	uint32_t epoch;
	int64_t created_at; /* Unix seconds (epoch 0: its file's mtime) */
	int hybrid;         /* it has an MLKEM768-X25519 seed */
};

/* The keys on disk, oldest first; the last one is current. */
struct sp_seal_keyring {
	size_t n;
	struct sp_seal_keyring_entry e[SP_SEAL_KEYRING_MAX];
};

/* The path of epoch's key file into out: BASE for 0, BASE.d/N.key otherwise. Returns 0 or
 * -ENAMETOOLONG. */
int sp_seal_keyring_path(const char *base, uint32_t epoch, char *out, size_t outlen);

/*
 * Lists the keys on disk into *out (each file read and checked: its epoch must be the one its
 * name says). Returns 0, -ENOENT (no key at all: run init), SP_SEAL_ERR_KEY_FILE (a file in
 * BASE.d that is not a key of its epoch; names not of the form N.key are ignored),
 * SP_SEAL_ERR_KEY_PERMS, -E2BIG (more than SP_SEAL_KEYRING_MAX keys), -errno.
 */
int sp_seal_keyring_scan(const char *base, struct sp_seal_keyring *out);

/* 1 if the current key was made at least every_s seconds before now (every_s 0: never), else
 * 0. */
int sp_seal_keyring_due(const struct sp_seal_keyring *k, int64_t now, uint64_t every_s);

/*
 * Rotates: makes the key of the next epoch, created at now (hybrid if this build has the hybrid
 * suite), in BASE.d (made 0700 if missing). With SP_SEAL_KEYRING_MAX keys on disk already it
 * first erases the oldest one (its grace cut short). *epoch (may be NULL) gets the new epoch.
 * Returns 0, -EEXIST (another process made that epoch first), the errors of scan, -errno.
 */
int sp_seal_keyring_rotate(const char *base, int64_t now, uint32_t *epoch);

/*
 * Erases every earlier key retired at least grace_s seconds before now (never the current one):
 * sp_seal_erase_file() on each. *erased (may be NULL) gets how many. Returns 0 or the first
 * error (the keys before it are erased).
 */
int sp_seal_keyring_expire(const char *base, int64_t now, uint64_t grace_s, unsigned *erased);

/*
 * Rotates if due (sp_seal_keyring_due with every_s), then expires (grace_s). *rotated gets the
 * new epoch or 0, *erased how many keys were erased (either may be NULL). A lost rotation race
 * (-EEXIST) counts as done by the other process. Returns 0 or an error of the steps.
 */
int sp_seal_keyring_maintain(const char *base, int64_t now, uint64_t every_s, uint64_t grace_s,
                             uint32_t *rotated, unsigned *erased);

/*
 * Loads the device's sealer (as sp_sealer_load() with cert_path and key_path) with the current
 * key of the keyring and every earlier one on disk. Returns as sp_sealer_load() and scan.
 */
int sp_seal_keyring_load(const char *cert_path, const char *key_path, const char *base,
                         struct sp_sealer **out);

/*
 * Erases a key file: overwrites its bytes with zeros, fsyncs, unlinks it and fsyncs its folder.
 * Refuses a symbolic link or anything not a regular file (-EINVAL). Returns 0 or -errno.
 */
int sp_seal_erase_file(const char *path);

#endif
