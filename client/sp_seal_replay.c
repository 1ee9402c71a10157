/*
 * sp_seal_replay: the replay cache. An open-addressing hash table (linear probing) of 32-byte
 * entries keyed by the first 16 bytes of SHA-256(sender token || msg_id); it grows by doubling
 * and is rebuilt, without the dropped entries, whenever it has to make room.
 */
#include "sp_seal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#define SP_RP_KEY_LEN     16
#define SP_RP_MIN_CAP     64
#define SP_RP_MAGIC       "SPRPLAY1"
#define SP_RP_FILE_HEADER (8 + 8 + 4)
#define SP_RP_FILE_ENTRY  (SP_RP_KEY_LEN + 8 + 8)

struct sp_rp_entry {
	uint8_t key[SP_RP_KEY_LEN];
	uint64_t sent_at;
	uint64_t end; /* 0: empty slot */
};

struct sp_seal_replay {
	struct sp_rp_entry *slots;
	size_t cap; /* a power of two, at least twice count */
	size_t count;
	size_t limit;
	uint64_t floor;
	uint64_t duplicates, below_floor, expired, evicted;
};

int sp_seal_replay_new(size_t limit, struct sp_seal_replay **out)
{
	struct sp_seal_replay *r;

	if (out == NULL || limit > SP_SEAL_REPLAY_LIMIT_MAX)
		return -EINVAL;
	*out = NULL;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	r->limit = limit != 0 ? limit : SP_SEAL_REPLAY_LIMIT_DEFAULT;
	r->cap = SP_RP_MIN_CAP;
	r->slots = calloc(r->cap, sizeof(*r->slots));
	if (r->slots == NULL) {
		free(r);
		return -ENOMEM;
	}
	*out = r;
	return 0;
}

void sp_seal_replay_free(struct sp_seal_replay *r)
{
	if (r == NULL)
		return;
	free(r->slots);
	free(r);
}

static int sp_rp_key(const uint8_t sender[SP_TOKEN_LEN], const uint8_t msg_id[16],
                     uint8_t key[SP_RP_KEY_LEN])
{
	uint8_t in[SP_TOKEN_LEN + 16], md[32];

	memcpy(in, sender, SP_TOKEN_LEN);
	memcpy(in + SP_TOKEN_LEN, msg_id, 16);
	if (!EVP_Digest(in, sizeof(in), md, NULL, EVP_sha256(), NULL))
		return -ENOMEM;
	memcpy(key, md, SP_RP_KEY_LEN);
	return 0;
}

static size_t sp_rp_home(const uint8_t key[SP_RP_KEY_LEN], size_t cap)
{
	uint64_t h;

	memcpy(&h, key, sizeof(h));
	return (size_t)h & (cap - 1);
}

/* The slot holding key, or the empty slot where it would go. */
static struct sp_rp_entry *sp_rp_find(struct sp_rp_entry *slots, size_t cap,
                                      const uint8_t key[SP_RP_KEY_LEN])
{
	size_t i = sp_rp_home(key, cap);

	for (;;) {
		struct sp_rp_entry *e = &slots[i];

		if (e->end == 0 || memcmp(e->key, key, SP_RP_KEY_LEN) == 0)
			return e;
		i = (i + 1) & (cap - 1);
	}
}

/* Moves the entries that keep(e) accepts into a fresh table of cap slots. Returns 0 or -ENOMEM. */
static int sp_rp_rebuild(struct sp_seal_replay *r, size_t cap, uint64_t now, uint64_t drop_upto)
{
	struct sp_rp_entry *slots = calloc(cap, sizeof(*slots));
	size_t count = 0;

	if (slots == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < r->cap; i++) {
		struct sp_rp_entry *e = &r->slots[i];

		if (e->end == 0)
			continue;
		if (e->end < now) {
			r->expired++;
			continue;
		}
		if (drop_upto != 0 && e->sent_at <= drop_upto) {
			r->evicted++;
			continue;
		}
		*sp_rp_find(slots, cap, e->key) = *e;
		count++;
	}
	free(r->slots);
	r->slots = slots;
	r->cap = cap;
	r->count = count;
	return 0;
}

static int sp_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * Makes room for one more entry when the cache is at its limit: drops the closed windows, then,
 * if still full, the oldest eighth by sent_at, raising the floor to cover them.
 */
static int sp_rp_make_room(struct sp_seal_replay *r, uint64_t now)
{
	uint64_t *sent, cut;
	size_t n = 0, k;
	int rc = sp_rp_rebuild(r, r->cap, now, 0);

	if (rc != 0 || r->count < r->limit)
		return rc;
	sent = malloc(r->count * sizeof(*sent));
	if (sent == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < r->cap; i++)
		if (r->slots[i].end != 0)
			sent[n++] = r->slots[i].sent_at;
	qsort(sent, n, sizeof(*sent), sp_cmp_u64);
	k = n / 8 > 0 ? n / 8 : 1;
	cut = sent[k - 1];
	free(sent);
	if (cut == 0)
		cut = 1; /* a floor of 0 means "none"; sent_at 0 is long outside any window anyway
		          */
	rc = sp_rp_rebuild(r, r->cap, now, cut);
	if (rc == 0 && cut > r->floor)
		r->floor = cut;
	return rc;
}

int sp_seal_replay_seen(struct sp_seal_replay *r, const uint8_t sender[SP_TOKEN_LEN],
                        const uint8_t msg_id[16], uint64_t sent_at_ms)
{
	uint8_t key[SP_RP_KEY_LEN];

	if (r == NULL || sender == NULL || msg_id == NULL)
		return -EINVAL;
	if (r->floor != 0 && sent_at_ms <= r->floor) {
		r->below_floor++;
		return SP_SEAL_ERR_STALE;
	}
	if (sp_rp_key(sender, msg_id, key) != 0)
		return -ENOMEM;
	if (sp_rp_find(r->slots, r->cap, key)->end != 0) {
		r->duplicates++;
		return SP_SEAL_ERR_DUPLICATE;
	}
	return 0;
}

static int sp_rp_insert(struct sp_seal_replay *r, const uint8_t key[SP_RP_KEY_LEN],
                        uint64_t sent_at, uint64_t end, uint64_t now)
{
	struct sp_rp_entry *e;
	int rc;

	if (r->floor != 0 && sent_at <= r->floor)
		return SP_SEAL_ERR_STALE;
	if (end == 0)
		end = 1;
	e = sp_rp_find(r->slots, r->cap, key);
	if (e->end != 0) {
		if (end > e->end)
			e->end = end;
		return 0;
	}
	if (r->count >= r->limit) {
		rc = sp_rp_make_room(r, now);
		if (rc != 0)
			return rc;
		/* Making room may have raised the floor over this very message. */
		if (r->floor != 0 && sent_at <= r->floor)
			return SP_SEAL_ERR_STALE;
	}
	if (2 * (r->count + 1) > r->cap) {
		rc = sp_rp_rebuild(r, r->cap * 2, now, 0);
		if (rc != 0)
			return rc;
	}
	e = sp_rp_find(r->slots, r->cap, key);
	memcpy(e->key, key, SP_RP_KEY_LEN);
	e->sent_at = sent_at;
	e->end = end;
	r->count++;
	return 0;
}

int sp_seal_replay_add(struct sp_seal_replay *r, const uint8_t sender[SP_TOKEN_LEN],
                       const uint8_t msg_id[16], uint64_t sent_at_ms, uint64_t window_end_ms,
                       uint64_t now_ms)
{
	uint8_t key[SP_RP_KEY_LEN];

	if (r == NULL || sender == NULL || msg_id == NULL)
		return -EINVAL;
	if (sp_rp_key(sender, msg_id, key) != 0)
		return -ENOMEM;
	return sp_rp_insert(r, key, sent_at_ms, window_end_ms, now_ms);
}

size_t sp_seal_replay_expire(struct sp_seal_replay *r, uint64_t now_ms)
{
	size_t before;

	if (r == NULL)
		return 0;
	before = r->count;
	if (sp_rp_rebuild(r, r->cap, now_ms, 0) != 0)
		return 0;
	return before - r->count;
}

void sp_seal_replay_stats(const struct sp_seal_replay *r, struct sp_seal_replay_stats *out)
{
	*out = (struct sp_seal_replay_stats){
	        .entries = r->count,
	        .limit = r->limit,
	        .duplicates = r->duplicates,
	        .below_floor = r->below_floor,
	        .expired = r->expired,
	        .evicted = r->evicted,
	        .floor_ms = r->floor,
	};
}

static void sp_rp_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static uint64_t sp_rp_get(const uint8_t *p, size_t n)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/* File: "SPRPLAY1", floor u64, count u32, then count entries of key, sent_at u64, end u64. */
int sp_seal_replay_save(const struct sp_seal_replay *r, const char *path, uint64_t now_ms)
{
	char *tmp = NULL;
	uint8_t *buf = NULL, *p;
	size_t n = 0, len;
	int fd = -1, rc;

	if (r == NULL || path == NULL)
		return -EINVAL;
	buf = malloc(SP_RP_FILE_HEADER + r->count * SP_RP_FILE_ENTRY);
	tmp = malloc(strlen(path) + 16);
	if (buf == NULL || tmp == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	p = buf + SP_RP_FILE_HEADER;
	for (size_t i = 0; i < r->cap; i++) {
		const struct sp_rp_entry *e = &r->slots[i];

		if (e->end == 0 || e->end < now_ms)
			continue;
		memcpy(p, e->key, SP_RP_KEY_LEN);
		sp_rp_put64(p + SP_RP_KEY_LEN, e->sent_at);
		sp_rp_put64(p + SP_RP_KEY_LEN + 8, e->end);
		p += SP_RP_FILE_ENTRY;
		n++;
	}
	memcpy(buf, SP_RP_MAGIC, 8);
	sp_rp_put64(buf + 8, r->floor);
	for (int i = 0; i < 4; i++)
		buf[16 + i] = (uint8_t)(n >> (24 - 8 * i));
	len = (size_t)(p - buf);
	sprintf(tmp, "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		goto out;
	}
	for (size_t off = 0; off < len;) {
		ssize_t w = write(fd, buf + off, len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			rc = w < 0 ? -errno : -EIO;
			goto out;
		}
		off += (size_t)w;
	}
	if (fsync(fd) != 0 || close(fd) != 0) {
		fd = -1;
		rc = -errno;
		goto out;
	}
	fd = -1;
	rc = rename(tmp, path) == 0 ? 0 : -errno;
out:
	if (fd >= 0)
		close(fd);
	if (rc != 0 && tmp != NULL)
		unlink(tmp);
	free(tmp);
	free(buf);
	return rc;
}

int sp_seal_replay_load(struct sp_seal_replay *r, const char *path, uint64_t now_ms)
{
	struct stat st;
	uint8_t *buf = NULL;
	size_t len, count;
	int fd, rc;

	if (r == NULL || path == NULL)
		return -EINVAL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) != 0) {
		rc = -errno;
		goto out;
	}
	/* Sizes first: a file no cache could have written is refused before anything is read. */
	rc = SP_SEAL_ERR_REPLAY_FILE;
	if (!S_ISREG(st.st_mode) || st.st_size < SP_RP_FILE_HEADER ||
	    (uint64_t)st.st_size >
	            SP_RP_FILE_HEADER + (uint64_t)SP_SEAL_REPLAY_LIMIT_MAX * SP_RP_FILE_ENTRY ||
	    ((size_t)st.st_size - SP_RP_FILE_HEADER) % SP_RP_FILE_ENTRY != 0)
		goto out;
	len = (size_t)st.st_size;
	buf = malloc(len);
	if (buf == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t off = 0; off < len;) {
		ssize_t n = read(fd, buf + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : SP_SEAL_ERR_REPLAY_FILE;
			goto out;
		}
		off += (size_t)n;
	}
	count = (size_t)sp_rp_get(buf + 16, 4);
	if (memcmp(buf, SP_RP_MAGIC, 8) != 0 ||
	    count != (len - SP_RP_FILE_HEADER) / SP_RP_FILE_ENTRY)
		goto out;
	for (size_t i = 0; i < count; i++) {
		const uint8_t *e = buf + SP_RP_FILE_HEADER + i * SP_RP_FILE_ENTRY;

		if (sp_rp_get(e + SP_RP_KEY_LEN + 8, 8) == 0)
			goto out;
	}
	/* The file is sound: apply it. */
	{
		uint64_t floor = sp_rp_get(buf + 8, 8);

		if (floor > r->floor)
			r->floor = floor;
	}
	rc = 0;
	for (size_t i = 0; i < count && rc == 0; i++) {
		const uint8_t *e = buf + SP_RP_FILE_HEADER + i * SP_RP_FILE_ENTRY;
		uint64_t sent_at = sp_rp_get(e + SP_RP_KEY_LEN, 8);
		uint64_t end = sp_rp_get(e + SP_RP_KEY_LEN + 8, 8);

		if (end < now_ms)
			continue;
		rc = sp_rp_insert(r, e, sent_at, end, now_ms);
		if (rc == SP_SEAL_ERR_STALE) /* below the floor: covered by it */
			rc = 0;
	}
out:
	close(fd);
	free(buf);
	return rc;
}
