/*
 * Unit tests of sealing-key rotation (PROTOCOL.md 13.11; client/sp_seal_keyring, the key epochs
 * of client/sp_seal and cards version 3 of client/sp_card): messages sealed before a rotation
 * open during the grace period and fail with KEY_ERASED after it; the erased key's file is
 * overwritten in place and unlinked; the schedule rotates when due and not before; envelope
 * versions 1 and 2 (epoch named, signed, bound by the AEAD); receipts across epochs; cards
 * ordered by epoch; key files with an epoch.
 */
#include "sp_card.h"
#include "sp_seal.h"
#include "sp_seal_keyring.h"
#include "sp_test.h"
#include "tc_keys.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/pem.h>

static struct tc_dev alice;
static const int64_t T = 1795000000; /* the device's first key was made then (2026-11) */
static const uint32_t DAY = 86400;
static const char hello[] = "sealed before the rotation";

struct rdev {
	char dir[64];
	char key[PATH_MAX];  /* the certificate key (PEM) */
	char base[PATH_MAX]; /* the sealing key `init` made */
};

/* A device on disk: a certificate key and an epoch-0 sealing key made at T. */
static int rdev_make(struct rdev *d)
{
	struct timespec ts[2] = {{T, 0}, {T, 0}};
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	FILE *fp;
	int r = -1;

	snprintf(d->dir, sizeof(d->dir), "/tmp/sp-rotate-XXXXXX");
	if (k == NULL || mkdtemp(d->dir) == NULL)
		goto out;
	snprintf(d->key, sizeof(d->key), "%s/dev.key", d->dir);
	snprintf(d->base, sizeof(d->base), "%s/dev.seal.key", d->dir);
	fp = fopen(d->key, "w");
	if (fp == NULL || !PEM_write_PrivateKey(fp, k, NULL, NULL, 0, NULL, NULL)) {
		if (fp != NULL)
			fclose(fp);
		goto out;
	}
	fclose(fp);
	if (sp_seal_keygen_file(d->base) != 0 || utimensat(AT_FDCWD, d->base, ts, 0) != 0)
		goto out;
	r = 0;
out:
	EVP_PKEY_free(k);
	return r;
}

static void rdev_rm(struct rdev *d)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->dir);
	if (system(cmd) != 0)
		SP_FAIL("cannot remove %s", d->dir);
}

static struct sp_sealer *rdev_load(struct rdev *d)
{
	struct sp_sealer *s = NULL;
	int r = sp_seal_keyring_load(NULL, d->key, d->base, &s);

	if (r != 0)
		SP_FAIL("sp_seal_keyring_load: %s", sp_seal_strerror(r));
	return s;
}

/* The device's card, parsed and verified (what a sender holds). */
static int rdev_card(struct sp_sealer *s, int64_t at, struct sp_card *c)
{
	char *json = NULL;
	int r = sp_card_make(s, at, &json);

	if (r == 0)
		r = sp_card_parse(json, strlen(json), c);
	free(json);
	return r;
}

static uint8_t *seal_to(const struct sp_seal_peer *to, const uint8_t *mid, uint8_t flags,
                        uint64_t sent_at, size_t *len)
{
	struct sp_seal_msg m = {mid,           sent_at, 30 * DAY, flags, (const uint8_t *)hello,
	                        sizeof(hello), NULL};
	uint8_t *env = NULL;
	int r = sp_seal(alice.s, to, &m, &env, len);

	if (r != 0)
		SP_FAIL("sp_seal: %s", sp_seal_strerror(r));
	return env;
}

static int open_env(struct sp_sealer *s, const uint8_t *mid, const uint8_t *env, size_t len,
                    uint64_t now_ms, uint32_t *epoch)
{
	struct sp_seal_opened o;
	int r = sp_seal_open(s, NULL, mid, env, len, now_ms, &o);

	if (r == 0) {
		if (epoch != NULL)
			*epoch = o.key_epoch;
		if (o.payload_len != sizeof(hello) || memcmp(o.payload, hello, sizeof(hello)) != 0)
			r = -EBADMSG;
	}
	sp_seal_opened_clear(&o);
	return r;
}

static void test_key_file_epoch(void)
{
	char dir[] = "/tmp/sp-rotkf-XXXXXX", path[64];
	struct sp_seal_key_file k;
	uint8_t body[64] = {2, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 9, 1, 0, 0x20, 0, 32};

	SP_CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/k", dir);
	SP_CHECK_EQ_INT(sp_seal_keygen_file_epoch(path, 0, 0, T), -EINVAL);
	SP_CHECK_EQ_INT(sp_seal_keygen_file_epoch(path, 0, 7, T), 0);
	SP_CHECK_EQ_INT(sp_seal_keygen_file_epoch(path, 0, 8, T), -EEXIST);
	SP_CHECK_EQ_INT(sp_seal_key_file_read(path, &k), 0);
	SP_CHECK_EQ_INT(k.format, 3);
	SP_CHECK_EQ_INT(k.epoch, 7);
	SP_CHECK_EQ_INT(k.created_at, T);
	SP_CHECK_EQ_INT(k.has_seed, 0);
	sp_seal_key_file_clear(&k);
	unlink(path);
	/* A body of version 2 by hand: epoch 7, created_at 9, one X25519 key. */
	SP_CHECK_EQ_INT(sp_seal_key_body_parse(body, 18 + 32, &k), 0);
	SP_CHECK_EQ_INT(k.format, 3);
	SP_CHECK_EQ_INT(k.epoch, 7);
	SP_CHECK_EQ_INT(k.created_at, 9);
	/* Truncated, trailing bytes, epoch 0, no X25519 key: refused. */
	SP_CHECK_EQ_INT(sp_seal_key_body_parse(body, 18 + 31, &k), SP_SEAL_ERR_KEY_FILE);
	SP_CHECK_EQ_INT(sp_seal_key_body_parse(body, 18 + 33, &k), SP_SEAL_ERR_KEY_FILE);
	SP_CHECK_EQ_INT(sp_seal_key_body_parse(body, 12, &k), SP_SEAL_ERR_KEY_FILE);
	body[4] = 0;
	SP_CHECK_EQ_INT(sp_seal_key_body_parse(body, 18 + 32, &k), SP_SEAL_ERR_KEY_FILE);
	body[4] = 7;
	body[13] = 0;
	SP_CHECK_EQ_INT(sp_seal_key_body_parse(body, 14, &k), SP_SEAL_ERR_KEY_FILE);
	body[0] = 3;
	SP_CHECK_EQ_INT(sp_seal_key_body_parse(body, 18 + 32, &k), SP_SEAL_ERR_KEY_FILE);
	rmdir(dir);
}

/* The whole story: seal, rotate, open in the grace period, erase, fail with KEY_ERASED. */
static void test_rotate_grace_erase(void)
{
	struct rdev d;
	struct sp_sealer *s;
	struct sp_card c0, c1;
	struct stat st;
	uint8_t *e0, *e1, mid0[16] = {1}, mid1[16] = {2}, zero[4096] = {0}, buf[4096];
	uint64_t ms = (uint64_t)T * 1000;
	size_t l0, l1;
	uint32_t ep = 99, rotated;
	unsigned erased;
	char p1[PATH_MAX];
	int fd;
	ssize_t n;

	if (rdev_make(&d) != 0) {
		SP_FAIL("cannot make the device");
		return;
	}
	s = rdev_load(&d);
	if (s == NULL)
		return;
	SP_CHECK_EQ_INT(sp_sealer_epoch(s), 0);
	/* Before any rotation: the card has no epoch, the envelope is version 1. */
	SP_CHECK_EQ_INT(rdev_card(s, T, &c0), 0);
	SP_CHECK(c0.version <= SP_CARD_VERSION_V2);
	SP_CHECK_EQ_INT(c0.peer.epoch, 0);
	e0 = seal_to(&c0.peer, mid0, 0, ms, &l0);
	SP_CHECK_EQ_INT(e0[0], SP_SEAL_VERSION);

	/* Not due a second before the week is up; due at the week. */
	SP_CHECK_EQ_INT(sp_seal_keyring_maintain(d.base, T + 7 * DAY - 1, 7 * DAY, 30 * DAY,
	                                         &rotated, &erased),
	                0);
	SP_CHECK_EQ_INT(rotated, 0);
	SP_CHECK_EQ_INT(
	        sp_seal_keyring_maintain(d.base, T + 7 * DAY, 7 * DAY, 30 * DAY, &rotated, &erased),
	        0);
	SP_CHECK_EQ_INT(rotated, 1);
	SP_CHECK_EQ_INT(erased, 0);
	SP_CHECK_EQ_INT(sp_seal_keyring_path(d.base, 1, p1, sizeof(p1)), 0);
	SP_CHECK(stat(p1, &st) == 0 && (st.st_mode & 0777) == 0600);
	{
		char dir[PATH_MAX + 8];

		snprintf(dir, sizeof(dir), "%s.d", d.base);
		SP_CHECK(stat(dir, &st) == 0 && (st.st_mode & 0777) == 0700);
	}
	sp_sealer_free(s);
	s = rdev_load(&d);
	if (s == NULL)
		goto out;
	SP_CHECK_EQ_INT(sp_sealer_epoch(s), 1);
	SP_CHECK_EQ_INT(sp_sealer_old_keys(s), 1);
	/* The new card: version 3, epoch 1, a new key; the envelope names epoch 1. */
	SP_CHECK_EQ_INT(rdev_card(s, T + 7 * DAY, &c1), 0);
	SP_CHECK_EQ_INT(c1.version, SP_CARD_VERSION);
	SP_CHECK_EQ_INT(c1.epoch, 1);
	SP_CHECK_EQ_INT(c1.peer.epoch, 1);
	SP_CHECK(c1.peer.pub_len == c0.peer.pub_len &&
	         memcmp(c1.peer.pub, c0.peer.pub, c0.peer.pub_len) != 0);
	SP_CHECK_EQ_INT(sp_card_supersedes(&c0, &c1), 0);
	SP_CHECK_EQ_INT(sp_card_supersedes(&c1, &c0), SP_SEAL_ERR_CARD_STALE);
	e1 = seal_to(&c1.peer, mid1, 0, ms + 7000ull * DAY, &l1);
	SP_CHECK_EQ_INT(e1[0], SP_SEAL_VERSION_EPOCH);
	SP_CHECK_EQ_INT(e1[3] << 24 | e1[4] << 16 | e1[5] << 8 | e1[6], 1);

	/* Grace: both open, each with its own key. */
	SP_CHECK_EQ_INT(open_env(s, mid0, e0, l0, ms + 1000, &ep), 0);
	SP_CHECK_EQ_INT(ep, 0);
	SP_CHECK_EQ_INT(open_env(s, mid1, e1, l1, ms + 7000ull * DAY + 1000, &ep), 0);
	SP_CHECK_EQ_INT(ep, 1);

	/* A day short of the grace (30 days after the rotation): nothing erased. */
	SP_CHECK_EQ_INT(sp_seal_keyring_expire(d.base, T + 37 * DAY - 1, 30 * DAY, &erased), 0);
	SP_CHECK_EQ_INT(erased, 0);
	SP_CHECK(stat(d.base, &st) == 0);

	/* Past it: the epoch-0 key is erased: overwritten in place (a descriptor held from before
	 * reads zeros), then its name is gone. */
	fd = open(d.base, O_RDONLY);
	SP_CHECK(fd >= 0);
	SP_CHECK(fstat(fd, &st) == 0 && st.st_size > 0 && st.st_size < (off_t)sizeof(buf));
	SP_CHECK_EQ_INT(sp_seal_keyring_expire(d.base, T + 37 * DAY, 30 * DAY, &erased), 0);
	SP_CHECK_EQ_INT(erased, 1);
	n = pread(fd, buf, sizeof(buf), 0);
	SP_CHECK_EQ_INT(n, st.st_size);
	SP_CHECK(n > 0 && memcmp(buf, zero, (size_t)n) == 0);
	close(fd);
	SP_CHECK(stat(d.base, &st) != 0 && errno == ENOENT);
	SP_CHECK(stat(p1, &st) == 0); /* the current key stays */

	/* The running sealer still holds the key until it loads again (listen does, at once). */
	SP_CHECK_EQ_INT(open_env(s, mid0, e0, l0, ms + 1000, NULL), 0);
	sp_sealer_free(s);
	s = rdev_load(&d);
	if (s == NULL)
		goto out;
	SP_CHECK_EQ_INT(sp_sealer_epoch(s), 1);
	SP_CHECK_EQ_INT(sp_sealer_old_keys(s), 0);
	/* A version 1 envelope names no key: DECRYPT is all the device can say. */
	SP_CHECK_EQ_INT(open_env(s, mid0, e0, l0, ms + 1000, NULL), SP_SEAL_ERR_DECRYPT);
	SP_CHECK_EQ_INT(open_env(s, mid1, e1, l1, ms + 7000ull * DAY + 1000, NULL), 0);

	/* Rotate again (epoch 2) and let epoch 1 expire: the envelope naming it is KEY_ERASED. */
	SP_CHECK_EQ_INT(sp_seal_keyring_rotate(d.base, T + 40 * DAY, &rotated), 0);
	SP_CHECK_EQ_INT(rotated, 2);
	SP_CHECK_EQ_INT(sp_seal_keyring_expire(d.base, T + 70 * DAY - 1, 30 * DAY, &erased), 0);
	SP_CHECK_EQ_INT(erased, 0);
	sp_sealer_free(s);
	s = rdev_load(&d);
	if (s == NULL)
		goto out;
	SP_CHECK_EQ_INT(open_env(s, mid1, e1, l1, ms + 7000ull * DAY + 1000, &ep), 0);
	SP_CHECK_EQ_INT(ep, 1);
	SP_CHECK_EQ_INT(sp_seal_keyring_expire(d.base, T + 70 * DAY, 30 * DAY, &erased), 0);
	SP_CHECK_EQ_INT(erased, 1);
	SP_CHECK(stat(p1, &st) != 0 && errno == ENOENT);
	sp_sealer_free(s);
	s = rdev_load(&d);
	if (s == NULL)
		goto out;
	SP_CHECK_EQ_INT(sp_sealer_epoch(s), 2);
	SP_CHECK_EQ_INT(open_env(s, mid1, e1, l1, ms + 7000ull * DAY + 1000, NULL),
	                SP_SEAL_ERR_KEY_ERASED);
	SP_CHECK(strstr(sp_seal_strerror(SP_SEAL_ERR_KEY_ERASED), "erased") != NULL);
	free(e0);
	free(e1);
	sp_card_clear(&c0);
	sp_card_clear(&c1);
out:
	sp_sealer_free(s);
	rdev_rm(&d);
}

static void test_schedule(void)
{
	struct rdev d;
	struct sp_seal_keyring k;
	uint32_t rotated;
	unsigned erased;

	if (rdev_make(&d) != 0) {
		SP_FAIL("cannot make the device");
		return;
	}
	SP_CHECK_EQ_INT(sp_seal_keyring_scan(d.base, &k), 0);
	SP_CHECK_EQ_INT(k.n, 1);
	SP_CHECK_EQ_INT(k.e[0].epoch, 0);
	SP_CHECK_EQ_INT(k.e[0].created_at, T);
	SP_CHECK_EQ_INT(sp_seal_keyring_due(&k, T + DAY - 1, DAY), 0);
	SP_CHECK_EQ_INT(sp_seal_keyring_due(&k, T + DAY, DAY), 1);
	SP_CHECK_EQ_INT(sp_seal_keyring_due(&k, T + 100 * DAY, 0), 0); /* 0: never */
	SP_CHECK_EQ_INT(sp_seal_keyring_due(&k, T - 5, DAY), 0);       /* clock behind */
	/* Daily for ten days: ten rotations, and with a grace of 3 days the keys of more than 3
	 * days ago are erased as it goes. */
	for (int i = 1; i <= 10; i++) {
		SP_CHECK_EQ_INT(sp_seal_keyring_maintain(d.base, T + i * (int64_t)DAY + 10, DAY,
		                                         3 * DAY, &rotated, &erased),
		                0);
		SP_CHECK_EQ_INT(rotated, (uint32_t)i);
		/* again at the same time: nothing due */
		SP_CHECK_EQ_INT(sp_seal_keyring_maintain(d.base, T + i * (int64_t)DAY + 20, DAY,
		                                         3 * DAY, &rotated, &erased),
		                0);
		SP_CHECK_EQ_INT(rotated, 0);
	}
	SP_CHECK_EQ_INT(sp_seal_keyring_scan(d.base, &k), 0);
	/* epochs 7..10: 7, 8, 9 retired less than 3 days before day 10 (+20 s) */
	SP_CHECK_EQ_INT(k.n, 4);
	SP_CHECK_EQ_INT(k.e[0].epoch, 7);
	SP_CHECK_EQ_INT(k.e[3].epoch, 10);
	SP_CHECK_EQ_INT(k.e[3].created_at, T + 10 * (int64_t)DAY + 10);
	/* A race lost: the epoch exists already. */
	{
		char p[PATH_MAX];

		SP_CHECK_EQ_INT(sp_seal_keyring_path(d.base, 11, p, sizeof(p)), 0);
		SP_CHECK_EQ_INT(sp_seal_keygen_file_epoch(p, 0, 11, T + 11 * (int64_t)DAY), 0);
		/* a stray name is ignored; a file whose epoch is not its name's is refused */
		SP_CHECK_EQ_INT(sp_seal_keyring_scan(d.base, &k), 0);
		SP_CHECK_EQ_INT(k.e[k.n - 1].epoch, 11);
		SP_CHECK_EQ_INT(sp_seal_keyring_path(d.base, 12, p, sizeof(p)), 0);
		SP_CHECK_EQ_INT(sp_seal_keygen_file_epoch(p, 0, 13, T + 12 * (int64_t)DAY), 0);
		SP_CHECK_EQ_INT(sp_seal_keyring_scan(d.base, &k), SP_SEAL_ERR_KEY_FILE);
		unlink(p);
		SP_CHECK_EQ_INT(sp_seal_keyring_path(d.base, 0, p, sizeof(p)), 0);
		SP_CHECK(strcmp(p, d.base) == 0);
	}
	rdev_rm(&d);
	/* No key at all. */
	SP_CHECK_EQ_INT(sp_seal_keyring_scan("/nonexistent/x.seal.key", &k), -ENOENT);
}

/* Envelope version 2 in memory: the epoch is bound, unknown epochs have their own errors,
 * reply keys and receipts carry epochs both ways. */
static void test_epochs_in_envelopes(void)
{
	struct tc_dev bob;
	struct sp_seal_key_file old;
	struct sp_seal_peer to;
	struct sp_seal_opened o, r;
	uint8_t *env, *renv, mid[16] = {3}, rid[16] = {4};
	size_t len, rlen, elen = 32;
	uint64_t ms = (uint64_t)T * 1000;

	if (tc_dev_make(&bob, "bob") != 0) {
		SP_FAIL("cannot make bob");
		return;
	}
	/* bob: current epoch 5 (his tc key), earlier epoch 4 = alice's X25519 key bytes (any
	 * key will do: it only has to differ). */
	memset(&old, 0, sizeof(old));
	old.epoch = 4;
	SP_CHECK(EVP_PKEY_get_raw_private_key(alice.seal, old.x25519, &elen));
	SP_CHECK_EQ_INT(sp_sealer_add_old_key(bob.s, &old), -EINVAL); /* not below epoch 0 */
	SP_CHECK_EQ_INT(sp_sealer_set_epoch(bob.s, 5), 0);
	SP_CHECK_EQ_INT(sp_sealer_add_old_key(bob.s, &old), 0);
	SP_CHECK_EQ_INT(sp_sealer_add_old_key(bob.s, &old), -EINVAL); /* held already */
	SP_CHECK_EQ_INT(sp_sealer_set_epoch(bob.s, 4), -EINVAL);      /* not above the old one */
	sp_seal_key_file_clear(&old);
	sp_sealer_peer(bob.s, &to);
	SP_CHECK_EQ_INT(to.epoch, 5);

	/* alice (epoch 0) asks bob for a receipt: version 2 to bob; bob's receipt goes to
	 * alice's reply key, which has no epoch: version 1. */
	env = seal_to(&to, mid, SP_SEAL_F_RECEIPT_WANTED, ms, &len);
	SP_CHECK_EQ_INT(env[0], SP_SEAL_VERSION_EPOCH);
	SP_CHECK_EQ_INT((len - SP_SEAL_BUCKET_BASE) % SP_SEAL_PAD_DEFAULT, 0);
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid, env, len, ms + 1, &o), 0);
	SP_CHECK_EQ_INT(o.version, 2);
	SP_CHECK_EQ_INT(o.key_epoch, 5);
	SP_CHECK_EQ_INT(o.reply.epoch, 0);
	SP_CHECK_EQ_INT(
	        sp_seal_receipt(bob.s, &o, SP_SEAL_RECEIPT_RECEIVED, rid, ms + 2, 60, &renv, &rlen),
	        0);
	SP_CHECK_EQ_INT(renv[0], SP_SEAL_VERSION);
	SP_CHECK_EQ_INT(sp_seal_open(alice.s, NULL, rid, renv, rlen, ms + 3, &r), 0);
	SP_CHECK(r.flags & SP_SEAL_F_IS_RECEIPT);
	sp_seal_opened_clear(&r);
	free(renv);
	sp_seal_opened_clear(&o);

	/* The epoch is in the AAD and the signature: naming another held epoch fails to
	 * decrypt; an epoch below the current one not held is KEY_ERASED; above it KEY_EPOCH. */
	env[6] = 4;
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid, env, len, ms + 1, &o), SP_SEAL_ERR_DECRYPT);
	env[6] = 3;
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid, env, len, ms + 1, &o),
	                SP_SEAL_ERR_KEY_ERASED);
	env[6] = 6;
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid, env, len, ms + 1, &o),
	                SP_SEAL_ERR_KEY_EPOCH);
	env[6] = 5;
	/* Version 1 with the same bytes: no epoch field, so the layout is off: refused. */
	env[0] = SP_SEAL_VERSION;
	SP_CHECK(sp_seal_open(bob.s, NULL, mid, env, len, ms + 1, &o) != 0);
	env[0] = SP_SEAL_VERSION_EPOCH;
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid, env, len, ms + 1, &o), 0);
	sp_seal_opened_clear(&o);
	free(env);

	/* bob (epoch 5) asks alice for a receipt, to alice's version-3-less peer (epoch 0):
	 * version 1, his reply key without epoch; the receipt (version 1) opens by trying. */
	{
		struct sp_seal_msg m = {
		        mid,           ms,  60, SP_SEAL_F_RECEIPT_WANTED, (const uint8_t *)hello,
		        sizeof(hello), NULL};

		SP_CHECK_EQ_INT(sp_seal(bob.s, &alice.peer, &m, &env, &len), 0);
	}
	SP_CHECK_EQ_INT(env[0], SP_SEAL_VERSION);
	SP_CHECK_EQ_INT(sp_seal_open(alice.s, NULL, mid, env, len, ms + 1, &o), 0);
	SP_CHECK_EQ_INT(o.reply.epoch, 0);
	SP_CHECK_EQ_INT(sp_seal_receipt(alice.s, &o, SP_SEAL_RECEIPT_RECEIVED, rid, ms + 2, 60,
	                                &renv, &rlen),
	                0);
	SP_CHECK_EQ_INT(renv[0], SP_SEAL_VERSION);
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, rid, renv, rlen, ms + 3, &r), 0);
	SP_CHECK_EQ_INT(r.key_epoch, 5);
	sp_seal_opened_clear(&r);
	free(renv);
	sp_seal_opened_clear(&o);
	free(env);

	/* A rotated alice writing to rotated bob: the reply key carries alice's epoch (7), so
	 * bob's receipt names it. */
	SP_CHECK_EQ_INT(sp_sealer_set_epoch(alice.s, 7), 0);
	env = seal_to(&to, mid, SP_SEAL_F_RECEIPT_WANTED, ms, &len);
	SP_CHECK_EQ_INT(sp_seal_open(bob.s, NULL, mid, env, len, ms + 1, &o), 0);
	SP_CHECK_EQ_INT(o.reply.epoch, 7);
	SP_CHECK_EQ_INT(
	        sp_seal_receipt(bob.s, &o, SP_SEAL_RECEIPT_RECEIVED, rid, ms + 2, 60, &renv, &rlen),
	        0);
	SP_CHECK_EQ_INT(renv[0], SP_SEAL_VERSION_EPOCH);
	SP_CHECK_EQ_INT(renv[6], 7);
	SP_CHECK_EQ_INT(sp_seal_open(alice.s, NULL, rid, renv, rlen, ms + 3, &r), 0);
	SP_CHECK_EQ_INT(r.key_epoch, 7);
	sp_seal_opened_clear(&r);
	free(renv);
	sp_seal_opened_clear(&o);
	free(env);
	SP_CHECK_EQ_INT(sp_sealer_set_epoch(alice.s, 0), 0);
	tc_dev_free(&bob);
}

static void e_epoch(json_t *r, json_t *v)
{
	json_object_set_new(r, "epoch", v);
}

/* Cards version 3: the epoch is signed, required in v3 and refused before; ordering. */
static void test_card_epochs(void)
{
	struct sp_card a, b, c;
	char *j5 = NULL, *j6 = NULL, *bad;
	json_t *root;

	SP_CHECK_EQ_INT(sp_sealer_set_epoch(alice.s, 5), 0);
	SP_CHECK_EQ_INT(sp_card_make(alice.s, T, &j5), 0);
	SP_CHECK_EQ_INT(sp_sealer_set_epoch(alice.s, 6), 0);
	SP_CHECK_EQ_INT(sp_card_make(alice.s, T - 100, &j6), 0); /* a later epoch, issued earlier */
	SP_CHECK_EQ_INT(sp_card_parse(j5, strlen(j5), &a), 0);
	SP_CHECK_EQ_INT(sp_card_parse(j6, strlen(j6), &b), 0);
	SP_CHECK_EQ_INT(a.version, 3);
	SP_CHECK_EQ_INT(a.epoch, 5);
	SP_CHECK_EQ_INT(b.epoch, 6);
	SP_CHECK_EQ_INT(b.peer.epoch, 6);
	/* The higher epoch wins whatever issued_at says; the same epoch goes by issued_at. */
	SP_CHECK_EQ_INT(sp_card_supersedes(&a, &b), 0);
	SP_CHECK_EQ_INT(sp_card_supersedes(&b, &a), SP_SEAL_ERR_CARD_STALE);
	SP_CHECK_EQ_INT(sp_card_supersedes(&a, &a), 0);
	b.epoch = 5;
	SP_CHECK_EQ_INT(sp_card_supersedes(&a, &b), SP_SEAL_ERR_CARD_STALE);
	b.peer.token[0] ^= 1;
	SP_CHECK_EQ_INT(sp_card_supersedes(&a, &b), -EINVAL);
	/* Editing the epoch breaks the signature; a v3 without one, or with 0, or a v2 with one
	 * is malformed. */
	root = json_loads(j6, 0, NULL);
	e_epoch(root, json_integer(9));
	bad = json_dumps(root, JSON_COMPACT);
	SP_CHECK_EQ_INT(sp_card_parse(bad, strlen(bad), &c), SP_SEAL_ERR_CARD_SIGNATURE);
	free(bad);
	e_epoch(root, json_integer(0));
	bad = json_dumps(root, JSON_COMPACT);
	SP_CHECK_EQ_INT(sp_card_parse(bad, strlen(bad), &c), SP_SEAL_ERR_CARD_MALFORMED);
	free(bad);
	e_epoch(root, json_integer(4294967296LL));
	bad = json_dumps(root, JSON_COMPACT);
	SP_CHECK_EQ_INT(sp_card_parse(bad, strlen(bad), &c), SP_SEAL_ERR_CARD_MALFORMED);
	free(bad);
	e_epoch(root, json_string("6"));
	bad = json_dumps(root, JSON_COMPACT);
	SP_CHECK_EQ_INT(sp_card_parse(bad, strlen(bad), &c), SP_SEAL_ERR_CARD_MALFORMED);
	free(bad);
	json_object_del(root, "epoch");
	bad = json_dumps(root, JSON_COMPACT);
	SP_CHECK_EQ_INT(sp_card_parse(bad, strlen(bad), &c), SP_SEAL_ERR_CARD_MALFORMED);
	free(bad);
	json_object_set_new(root, "v", json_integer(2));
	e_epoch(root, json_integer(6));
	bad = json_dumps(root, JSON_COMPACT);
	SP_CHECK_EQ_INT(sp_card_parse(bad, strlen(bad), &c), SP_SEAL_ERR_CARD_MALFORMED);
	free(bad);
	json_decref(root);
	/* A rotated device can still make a v2 card (no epoch: senders seal version 1). */
	free(j5);
	SP_CHECK_EQ_INT(sp_card_make_version(alice.s, T, 2, &j5), 0);
	sp_card_clear(&c);
	SP_CHECK_EQ_INT(sp_card_parse(j5, strlen(j5), &c), 0);
	SP_CHECK_EQ_INT(c.epoch, 0);
	SP_CHECK_EQ_INT(c.peer.epoch, 0);
	sp_card_clear(&a);
	sp_card_clear(&b);
	sp_card_clear(&c);
	free(j5);
	free(j6);
	SP_CHECK_EQ_INT(sp_sealer_set_epoch(alice.s, 0), 0);
}

/* The cards-seen file: a lower epoch is refused, a higher one recorded, an earlier copy of the
 * same epoch passes without replacing the record; a damaged file is refused. */
static void test_cards_seen(void)
{
	char dir[] = "/tmp/sp-rotseen-XXXXXX", path[64], buf[512], hex[65];
	struct sp_card c4, c5, c5early, other;
	struct tc_dev bob;
	struct stat st;
	FILE *fp;
	size_t n;

	SP_CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/dev.cards", dir);
	SP_CHECK_EQ_INT(sp_sealer_set_epoch(alice.s, 4), 0);
	SP_CHECK_EQ_INT(rdev_card(alice.s, T, &c4), 0);
	SP_CHECK_EQ_INT(sp_sealer_set_epoch(alice.s, 5), 0);
	SP_CHECK_EQ_INT(rdev_card(alice.s, T + 10, &c5), 0);
	SP_CHECK_EQ_INT(rdev_card(alice.s, T + 5, &c5early), 0);
	SP_CHECK_EQ_INT(sp_sealer_set_epoch(alice.s, 0), 0);
	if (tc_dev_make(&bob, "bob") != 0) {
		SP_FAIL("cannot make bob");
		return;
	}
	SP_CHECK_EQ_INT(rdev_card(bob.s, T, &other), 0);
	/* Nothing recorded: any card passes; without record nothing is written. */
	SP_CHECK_EQ_INT(sp_card_seen_check(path, &c5, 0), 0);
	SP_CHECK(stat(path, &st) != 0);
	SP_CHECK_EQ_INT(sp_card_seen_check(path, &c4, 1), 0);
	SP_CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
	SP_CHECK_EQ_INT(sp_card_seen_check(path, &other, 1), 0);
	SP_CHECK_EQ_INT(sp_card_seen_check(path, &c5, 1), 0);
	SP_CHECK_EQ_INT(sp_card_seen_check(path, &c4, 1), SP_SEAL_ERR_CARD_STALE);
	SP_CHECK_EQ_INT(sp_card_seen_check(path, &c5early, 1), 0);
	/* The file: one line per device, alice's with epoch 5 and the later issued_at. */
	fp = fopen(path, "r");
	n = fp != NULL ? fread(buf, 1, sizeof(buf) - 1, fp) : 0;
	if (fp != NULL)
		fclose(fp);
	buf[n] = '\0';
	sp_token_hex(c5.peer.token, hex);
	SP_CHECK(strstr(buf, hex) != NULL);
	{
		char want[128];

		snprintf(want, sizeof(want), "%s 5 %lld\n", hex, (long long)(T + 10));
		SP_CHECK(strstr(buf, want) != NULL);
	}
	SP_CHECK_EQ_INT((int)(strchr(strchr(buf, '\n') + 1, '\n') - buf + 1), (int)n);
	/* Damaged: refused, whatever the card. */
	fp = fopen(path, "a");
	SP_CHECK(fp != NULL);
	if (fp != NULL) {
		fputs("not a line\n", fp);
		fclose(fp);
	}
	SP_CHECK_EQ_INT(sp_card_seen_check(path, &c5, 1), SP_SEAL_ERR_CARD_MALFORMED);
	unlink(path);
	rmdir(dir);
	sp_card_clear(&c4);
	sp_card_clear(&c5);
	sp_card_clear(&c5early);
	sp_card_clear(&other);
	tc_dev_free(&bob);
}

int main(void)
{
	if (tc_dev_make(&alice, "alice") != 0) {
		printf("Bail out! cannot make a test identity\n");
		return 1;
	}
	SP_RUN(test_key_file_epoch);
	SP_RUN(test_rotate_grace_erase);
	SP_RUN(test_schedule);
	SP_RUN(test_epochs_in_envelopes);
	SP_RUN(test_card_epochs);
	SP_RUN(test_cards_seen);
	tc_dev_free(&alice);
	return sp_test_done();
}
