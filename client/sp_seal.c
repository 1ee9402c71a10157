/*
 * sp_seal: sealed envelopes. Layout and rules: PROTOCOL.md section 13. The parsers here check
 * every length against what is left before using it and allocate only after the lengths are
 * known.
 */
#include "sp_seal.h"
#include "sp_hpke.h"
#include "sp_xwing.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

/* HPKE info of every envelope (13.3). */
static const uint8_t sp_seal_info[] = "sealpush/1 envelope";
#define SP_SEAL_INFO_LEN (sizeof(sp_seal_info) - 1)
/* Domain separation of the sender's signature (13.5), NUL included. */
static const uint8_t sp_seal_sig_label[] = "sealpush/1 signed message";
#define SP_SEAL_SIG_LABEL_LEN sizeof(sp_seal_sig_label)

#define SP_SEAL_SIG_MAX       80 /* buffer size for a signature */
#define SP_SEAL_P256_SIG_MAX  72 /* a DER ECDSA P-256 signature is at most 72 bytes */
/* Fixed part of the inner plaintext: flags, sent_at, ttl, recipient, spki_len. */
#define SP_SEAL_INNER_FIXED (1 + 8 + 4 + SP_TOKEN_LEN + 2)
#define SP_SEAL_RECEIPT_LEN (SP_SEAL_MSG_ID_LEN + 1)
#define SP_SEAL_MAX_SKEW_MS (24u * 3600 * 1000)

struct sp_seal_suite_def {
	uint16_t id;
	struct sp_hpke_suite hpke;
	size_t enc_len, pub_len;
	const char *name;
};

static const struct sp_seal_suite_def sp_seal_suites[] = {
        {SP_SEAL_SUITE_X25519_CHACHA20POLY1305,
         {SP_HPKE_KEM_X25519_SHA256, SP_HPKE_KDF_HKDF_SHA256, SP_HPKE_AEAD_CHACHA20POLY1305},
         32,
         32,
         "X25519-SHA256-ChaCha20Poly1305"},
        {SP_SEAL_SUITE_X25519_AES128GCM,
         {SP_HPKE_KEM_X25519_SHA256, SP_HPKE_KDF_HKDF_SHA256, SP_HPKE_AEAD_AES128GCM},
         32,
         32,
         "X25519-SHA256-AES128GCM"},
        /* Implemented where sp_hpke has the KEM (OpenSSL 3.5 and later: SP_HAVE_PQ_SEAL). */
        {SP_SEAL_SUITE_MLKEM768_X25519_CHACHA20POLY1305,
         {SP_HPKE_KEM_MLKEM768_X25519, SP_HPKE_KDF_HKDF_SHA256, SP_HPKE_AEAD_CHACHA20POLY1305},
         SP_XWING_CT_LEN,
         SP_XWING_PK_LEN,
         "MLKEM768-X25519-SHA256-ChaCha20Poly1305"},
};

/* Sealing key files, v2 (sp_seal.h). */
static const char sp_seal_key_pem_name[] = "SEALPUSH SEALING KEY";
#define SP_SEAL_KEY_FILE_VERSION       1
#define SP_SEAL_KEY_FILE_VERSION_EPOCH 2    /* with epoch and created_at (13.10) */
#define SP_SEAL_KEY_FILE_MAX           1024 /* the longest v2 body read */

/* An earlier sealing key (rotated out, 13.11), kept to open envelopes sealed to it. */
struct sp_seal_oldkey {
	uint32_t epoch;
	EVP_PKEY *x; /* X25519 */
	uint8_t pk[SP_HPKE_X25519_LEN];
	struct sp_xwing_key *xw; /* NULL: none */
};

struct sp_sealer {
	EVP_PKEY *sign_key;
	EVP_PKEY *seal_key; /* kept parsed: importing it again would cost an X25519 operation */
	X509 *cert;
	uint8_t *spki;
	size_t spki_len;
	uint8_t token[SP_TOKEN_LEN];
	uint8_t seal_pk[SP_HPKE_X25519_LEN];
	struct sp_xwing_key *xw;    /* the MLKEM768-X25519 key, expanded once; NULL: none */
	uint32_t epoch;             /* of the keys above (13.11) */
	struct sp_seal_oldkey *old; /* earlier keys, newest first */
	size_t nold;
	uint16_t suite;
	uint32_t skew_ms;
	uint32_t pad;
	size_t max_envelope;
	/* Prepared HPKE key schedules, one per sp_seal_suites entry (envelope info, no export). */
	struct sp_hpke_sched *scheds;
	struct sp_seal_pkey_cache *keys; /* parsed sender keys, by token; NULL: no cache */
	struct sp_seal_pkey_cache *pks;  /* parsed recipient ML-KEM halves, by key; NULL: none */
};

/*
 * The key caches: direct-mapped tables of parsed public keys (EVP_PKEY), each slot holding the
 * id it was filed under and serving only that id; a new key replaces whatever its slot held
 * (an eviction). A mutex guards the table and the counters; keys are handed out with a
 * reference of their own, so a replaced key lives on until its last user is done.
 *  - Sender keys (keys): id = the sender's token (SHA-256 of the SPKI, so equal tokens mean
 *    equal SPKIs), slot by its first 8 bytes. Only keys whose signature verified are added.
 *  - Recipient keys of suite 0x0101 (pks): id = the ML-KEM-768 half of the recipient's public
 *    key, parsed and checked, so that sealing to a recipient again skips its import (about 20
 *    us with OpenSSL 3.5, a third of what the hybrid suite adds to a seal); slot by 8 bytes of
 *    its seed rho (the last 32 bytes, uniform). A key goes in after an encapsulation to it
 *    succeeded.
 */
struct sp_seal_pkey_cache {
	pthread_mutex_t lock;
	size_t limit, entries;
	uint64_t hits, misses, evictions;
	size_t id_len, hash_at; /* the ids' length; where in an id the slot's 8 bytes are */
	EVP_PKEY **keys;        /* [limit]; NULL: an empty slot */
	uint8_t ids[];          /* [limit][id_len] */
};

#define SP_SEAL_NSUITES (sizeof(sp_seal_suites) / sizeof(sp_seal_suites[0]))

/* A registered suite, implemented here or not; NULL for an unregistered id. */
static const struct sp_seal_suite_def *sp_seal_suite_reg(uint16_t id)
{
	for (size_t i = 0; i < SP_SEAL_NSUITES; i++)
		if (sp_seal_suites[i].id == id)
			return &sp_seal_suites[i];
	return NULL;
}

/* A suite this build seals and opens; NULL otherwise. */
static const struct sp_seal_suite_def *sp_seal_suite(uint16_t id)
{
	const struct sp_seal_suite_def *d = sp_seal_suite_reg(id);

	return d != NULL && sp_hpke_suite_supported(&d->hpke) ? d : NULL;
}

int sp_seal_suite_implemented(uint16_t suite)
{
	return sp_seal_suite(suite) != NULL;
}

int sp_seal_suite_info(uint16_t suite, size_t *enc_len, size_t *pub_len, const char **name)
{
	const struct sp_seal_suite_def *d = sp_seal_suite_reg(suite);

	if (d == NULL)
		return SP_SEAL_ERR_SUITE;
	if (enc_len != NULL)
		*enc_len = d->enc_len;
	if (pub_len != NULL)
		*pub_len = d->pub_len;
	if (name != NULL)
		*name = d->name;
	return 0;
}

uint16_t sp_seal_suite_by_name(const char *name)
{
	for (size_t i = 0; name != NULL && i < SP_SEAL_NSUITES; i++)
		if (strcmp(sp_seal_suites[i].name, name) == 0)
			return sp_seal_suites[i].id;
	return 0;
}

const char *sp_seal_strerror(int err)
{
	switch (err) {
	case 0:
		return "success";
	case SP_SEAL_ERR_MALFORMED:
		return "malformed envelope or sealed content";
	case SP_SEAL_ERR_VERSION:
		return "unknown envelope or card version";
	case SP_SEAL_ERR_SUITE:
		return "unknown or unsupported suite";
	case SP_SEAL_ERR_TOO_LARGE:
		return "envelope larger than allowed";
	case SP_SEAL_ERR_DECRYPT:
		return "cannot decrypt: not sealed to this key, or changed on the way";
	case SP_SEAL_ERR_RECIPIENT:
		return "sealed to another recipient";
	case SP_SEAL_ERR_SENDER_KEY:
		return "sender key is not a canonical P-256 public key";
	case SP_SEAL_ERR_SIGNATURE:
		return "sender signature does not verify";
	case SP_SEAL_ERR_STALE:
		return "outside the replay window (too old)";
	case SP_SEAL_ERR_FUTURE:
		return "sent in the future (clock skew too large)";
	case SP_SEAL_ERR_DUPLICATE:
		return "duplicate of an accepted message";
	case SP_SEAL_ERR_NO_RECEIPT:
		return "no receipt requested, or not a receipt";
	case SP_SEAL_ERR_PEER_KEY:
		return "recipient sealing key is unusable";
	case SP_SEAL_ERR_CARD_MALFORMED:
		return "malformed contact card";
	case SP_SEAL_ERR_CARD_TOKEN:
		return "contact card token does not match its key";
	case SP_SEAL_ERR_CARD_SIGNATURE:
		return "contact card signature does not verify";
	case SP_SEAL_ERR_KEY_FILE:
		return "cannot read or parse a key or certificate file";
	case SP_SEAL_ERR_KEY_PERMS:
		return "sealing key file is readable by group or others (chmod 600)";
	case SP_SEAL_ERR_KEY_MISMATCH:
		return "certificate and key do not belong together";
	case SP_SEAL_ERR_KEY_TYPE:
		return "key of the wrong type (want P-256 certificate key, X25519 or sealpush "
		       "sealing "
		       "key)";
	case SP_SEAL_ERR_REPLAY_FILE:
		return "replay cache file is damaged or not a replay cache";
	case SP_SEAL_ERR_CRYPTO:
		return "cryptographic library failure";
	case SP_SEAL_ERR_KEY_ERASED:
		return "sealed to an earlier sealing key that this device has erased (rotated out "
		       "past its grace period): it can never be opened";
	case SP_SEAL_ERR_KEY_EPOCH:
		return "sealed to a sealing key epoch newer than this device's";
	case SP_SEAL_ERR_CARD_STALE:
		return "contact card older than one already seen for this device (lower key epoch)";
	default:
		return err < 0 && err > -4096 ? strerror(-err) : "unknown error";
	}
}

/* Big-endian helpers. */
static uint8_t *sp_put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
	return p + 2;
}

static uint8_t *sp_put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (24 - 8 * i));
	return p + 4;
}

static uint8_t *sp_put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
	return p + 8;
}

static uint64_t sp_get_be(const uint8_t *p, size_t n)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/* ---- keys and the sealer ---- */

/* 1 if pkey is an EC key on P-256. */
static int sp_is_p256(EVP_PKEY *pkey)
{
	char group[32];
	size_t len = 0;

	return EVP_PKEY_is_a(pkey, "EC") &&
	       EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group,
	                                      sizeof(group), &len) &&
	       strcmp(group, "prime256v1") == 0;
}

static void pkey_cache_free(struct sp_seal_pkey_cache *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->limit; i++)
		EVP_PKEY_free(c->keys[i]);
	free(c->keys);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* A cache of limit slots for ids of id_len bytes (*out NULL for limit 0: no cache). */
static int pkey_cache_new(size_t limit, size_t id_len, size_t hash_at,
                          struct sp_seal_pkey_cache **out)
{
	struct sp_seal_pkey_cache *c;

	*out = NULL;
	if (limit == 0)
		return 0;
	c = calloc(1, sizeof(*c) + limit * id_len);
	if (c == NULL || (c->keys = calloc(limit, sizeof(*c->keys))) == NULL) {
		free(c);
		return -ENOMEM;
	}
	if (pthread_mutex_init(&c->lock, NULL) != 0) {
		free(c->keys);
		free(c);
		return -ENOMEM;
	}
	c->limit = limit;
	c->id_len = id_len;
	c->hash_at = hash_at;
	*out = c;
	return 0;
}

static size_t pkey_slot(const struct sp_seal_pkey_cache *c, const uint8_t *id)
{
	return (size_t)(sp_get_be(id + c->hash_at, 8) % c->limit);
}

/* The cached key of id with a reference for the caller, or NULL (a miss). */
static EVP_PKEY *pkey_cache_get(struct sp_seal_pkey_cache *c, const uint8_t *id)
{
	EVP_PKEY *key = NULL;
	size_t i;

	if (c == NULL || pthread_mutex_lock(&c->lock) != 0)
		return NULL;
	i = pkey_slot(c, id);
	if (c->keys[i] != NULL && memcmp(c->ids + i * c->id_len, id, c->id_len) == 0 &&
	    EVP_PKEY_up_ref(c->keys[i]))
		key = c->keys[i];
	if (key != NULL)
		c->hits++;
	else
		c->misses++;
	pthread_mutex_unlock(&c->lock);
	return key;
}

/* Files key under id (the cache takes a reference of its own). */
static void pkey_cache_put(struct sp_seal_pkey_cache *c, const uint8_t *id, EVP_PKEY *key)
{
	EVP_PKEY *old = NULL;
	size_t i;

	if (c == NULL || pthread_mutex_lock(&c->lock) != 0)
		return;
	i = pkey_slot(c, id);
	if ((c->keys[i] == NULL || memcmp(c->ids + i * c->id_len, id, c->id_len) != 0) &&
	    EVP_PKEY_up_ref(key)) {
		old = c->keys[i];
		if (old != NULL)
			c->evictions++;
		else
			c->entries++;
		memcpy(c->ids + i * c->id_len, id, c->id_len);
		c->keys[i] = key;
	}
	pthread_mutex_unlock(&c->lock);
	EVP_PKEY_free(old);
}

static void pkey_cache_stats(struct sp_seal_pkey_cache *c, struct sp_seal_key_cache_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (c == NULL || pthread_mutex_lock(&c->lock) != 0)
		return;
	out->entries = c->entries;
	out->limit = c->limit;
	out->hits = c->hits;
	out->misses = c->misses;
	out->evictions = c->evictions;
	pthread_mutex_unlock(&c->lock);
}

/* The two caches of a sealer, made with entries slots (0: none). */
static int keys_cache_new(size_t entries, struct sp_seal_pkey_cache **out)
{
	return pkey_cache_new(entries, SP_TOKEN_LEN, 0, out);
}

static int pks_cache_new(size_t entries, struct sp_seal_pkey_cache **out)
{
	*out = NULL;
	if (!sp_xwing_available())
		return 0;
	return pkey_cache_new(entries, SP_XWING_MLKEM_PK_LEN, SP_XWING_MLKEM_PK_LEN - 32, out);
}

/* Replaces *slot with a new cache of entries slots (at most max), made by make. */
static int cache_replace(struct sp_seal_pkey_cache **slot, size_t entries, size_t max,
                         int (*make)(size_t, struct sp_seal_pkey_cache **))
{
	struct sp_seal_pkey_cache *c;
	int r;

	if (entries > max)
		return -EINVAL;
	r = make(entries, &c);
	if (r != 0)
		return r;
	pkey_cache_free(*slot);
	*slot = c;
	return 0;
}

int sp_sealer_set_peer_cache(struct sp_sealer *s, size_t entries)
{
	return s == NULL ? -EINVAL
	                 : cache_replace(&s->pks, entries, SP_SEAL_PEER_CACHE_MAX, pks_cache_new);
}

void sp_sealer_peer_cache_stats(const struct sp_sealer *s, struct sp_seal_key_cache_stats *out)
{
	pkey_cache_stats(s->pks, out);
}

int sp_sealer_set_key_cache(struct sp_sealer *s, size_t entries)
{
	return s == NULL ? -EINVAL
	                 : cache_replace(&s->keys, entries, SP_SEAL_KEY_CACHE_MAX, keys_cache_new);
}

void sp_sealer_key_cache_stats(const struct sp_sealer *s, struct sp_seal_key_cache_stats *out)
{
	pkey_cache_stats(s->keys, out);
}

int sp_sealer_new(EVP_PKEY *sign_key, X509 *cert, EVP_PKEY *seal_key, struct sp_sealer **out)
{
	struct sp_sealer *s = NULL;
	unsigned char *der = NULL;
	size_t len;
	int n, r;

	if (sign_key == NULL || seal_key == NULL || out == NULL)
		return -EINVAL;
	*out = NULL;
	if (!sp_is_p256(sign_key) || !EVP_PKEY_is_a(seal_key, "X25519"))
		return SP_SEAL_ERR_KEY_TYPE;
	if (cert != NULL && X509_check_private_key(cert, sign_key) != 1)
		return SP_SEAL_ERR_KEY_MISMATCH;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	r = -ENOMEM;
	n = i2d_PUBKEY(sign_key, &der);
	if (n <= 0 || n > SP_SEAL_SPKI_MAX)
		goto fail;
	s->spki_len = (size_t)n;
	s->spki = malloc(s->spki_len);
	if (s->spki == NULL)
		goto fail;
	memcpy(s->spki, der, s->spki_len);
	if (!EVP_Digest(s->spki, s->spki_len, s->token, NULL, EVP_sha256(), NULL))
		goto fail;
	len = sizeof(s->seal_pk);
	if (!EVP_PKEY_get_raw_public_key(seal_key, s->seal_pk, &len) || len != sizeof(s->seal_pk))
		goto fail;
	if (!EVP_PKEY_up_ref(sign_key))
		goto fail;
	s->sign_key = sign_key;
	if (!EVP_PKEY_up_ref(seal_key))
		goto fail;
	s->seal_key = seal_key;
	if (cert != NULL) {
		if (!X509_up_ref(cert))
			goto fail;
		s->cert = cert;
	}
	s->scheds = calloc(SP_SEAL_NSUITES, sizeof(*s->scheds));
	if (s->scheds == NULL)
		goto fail;
	for (size_t i = 0; i < SP_SEAL_NSUITES; i++) {
		if (!sp_hpke_suite_supported(&sp_seal_suites[i].hpke))
			continue; /* never used: sp_seal_suite() refuses it */
		r = sp_hpke_sched_init(&s->scheds[i], &sp_seal_suites[i].hpke, sp_seal_info,
		                       SP_SEAL_INFO_LEN, 0);
		if (r != 0) {
			r = r == -ENOMEM ? -ENOMEM : SP_SEAL_ERR_CRYPTO;
			goto fail;
		}
	}
	r = keys_cache_new(SP_SEAL_KEY_CACHE_DEFAULT, &s->keys);
	if (r == 0)
		r = pks_cache_new(SP_SEAL_PEER_CACHE_DEFAULT, &s->pks);
	if (r != 0)
		goto fail;
	r = -ENOMEM;
	s->suite = SP_SEAL_SUITE_DEFAULT;
	s->skew_ms = SP_SEAL_SKEW_DEFAULT_MS;
	s->pad = SP_SEAL_PAD_DEFAULT;
	s->max_envelope = SP_SEAL_MAX_ENVELOPE_DEFAULT;
	OPENSSL_free(der);
	*out = s;
	return 0;
fail:
	OPENSSL_free(der);
	sp_sealer_free(s);
	return r;
}

void sp_sealer_free(struct sp_sealer *s)
{
	if (s == NULL)
		return;
	EVP_PKEY_free(s->sign_key);
	EVP_PKEY_free(s->seal_key);
	sp_xwing_key_free(s->xw);
	for (size_t i = 0; i < s->nold; i++) {
		EVP_PKEY_free(s->old[i].x);
		sp_xwing_key_free(s->old[i].xw);
	}
	free(s->old);
	X509_free(s->cert);
	free(s->spki);
	for (size_t i = 0; s->scheds != NULL && i < SP_SEAL_NSUITES; i++)
		sp_hpke_sched_clear(&s->scheds[i]);
	free(s->scheds);
	pkey_cache_free(s->keys);
	pkey_cache_free(s->pks);
	OPENSSL_cleanse(s, sizeof(*s));
	free(s);
}

/* Opens a file for reading; with check_perms, refuses one that group or others can read. */
static int sp_open_key_file(const char *path, int check_perms, FILE **out)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return SP_SEAL_ERR_KEY_FILE;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return SP_SEAL_ERR_KEY_FILE;
	}
	if (check_perms && (st.st_mode & 077) != 0) {
		close(fd);
		return SP_SEAL_ERR_KEY_PERMS;
	}
	*out = fdopen(fd, "r");
	if (*out == NULL) {
		close(fd);
		return -ENOMEM;
	}
	return 0;
}

static int sp_read_pkey(const char *path, int check_perms, EVP_PKEY **out)
{
	FILE *fp = NULL;
	int r = sp_open_key_file(path, check_perms, &fp);

	if (r != 0)
		return r;
	*out = PEM_read_PrivateKey(fp, NULL, NULL, NULL);
	fclose(fp);
	return *out != NULL ? 0 : SP_SEAL_ERR_KEY_FILE;
}

void sp_seal_key_file_clear(struct sp_seal_key_file *k)
{
	if (k != NULL)
		OPENSSL_cleanse(k, sizeof(*k));
}

int sp_seal_key_body_parse(const uint8_t *b, size_t len, struct sp_seal_key_file *out)
{
	size_t n, i, klen;
	uint16_t kem;
	int has_x = 0;

	if (b == NULL || out == NULL)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	if (len < 2)
		goto bad;
	if (b[0] == SP_SEAL_KEY_FILE_VERSION) {
		out->format = 2;
		b++;
		len--;
	} else if (b[0] == SP_SEAL_KEY_FILE_VERSION_EPOCH) {
		/* version, epoch (4), created_at (8), then as version 1 */
		if (len < 1 + 4 + 8 + 1)
			goto bad;
		out->format = 3;
		out->epoch = (uint32_t)sp_get_be(b + 1, 4);
		out->created_at = (int64_t)sp_get_be(b + 5, 8);
		if (out->epoch == 0 || out->created_at < 0)
			goto bad;
		b += 13;
		len -= 13;
	} else {
		goto bad;
	}
	n = b[0];
	b++;
	len--;
	for (i = 0; i < n; i++) {
		if (len < 4)
			goto bad;
		kem = (uint16_t)sp_get_be(b, 2);
		klen = (size_t)sp_get_be(b + 2, 2);
		if (len - 4 < klen)
			goto bad;
		if (kem == SP_HPKE_KEM_X25519_SHA256) {
			if (has_x || klen != SP_HPKE_X25519_LEN)
				goto bad;
			memcpy(out->x25519, b + 4, klen);
			has_x = 1;
		} else if (kem == SP_HPKE_KEM_MLKEM768_X25519) {
			if (out->has_seed || klen != SP_XWING_SEED_LEN)
				goto bad;
			memcpy(out->seed, b + 4, klen);
			out->has_seed = 1;
		} /* another KEM: a later version's key, skipped */
		b += 4 + klen;
		len -= 4 + klen;
	}
	if (len == 0 && has_x)
		return 0;
bad:
	sp_seal_key_file_clear(out);
	return SP_SEAL_ERR_KEY_FILE;
}

int sp_seal_key_file_read(const char *path, struct sp_seal_key_file *out)
{
	FILE *fp = NULL;
	char *name = NULL, *header = NULL;
	unsigned char *data = NULL;
	EVP_PKEY *x = NULL;
	struct stat st;
	long len = 0;
	size_t xl = SP_HPKE_X25519_LEN;
	int r;

	if (path == NULL || out == NULL)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	r = sp_open_key_file(path, 1, &fp);
	if (r != 0)
		return r;
	if (fstat(fileno(fp), &st) != 0) {
		fclose(fp);
		return SP_SEAL_ERR_KEY_FILE;
	}
	if (PEM_read(fp, &name, &header, &data, &len) == 1 &&
	    strcmp(name, sp_seal_key_pem_name) == 0) {
		r = len > 0 && len <= SP_SEAL_KEY_FILE_MAX
		            ? sp_seal_key_body_parse(data, (size_t)len, out)
		            : SP_SEAL_ERR_KEY_FILE;
	} else {
		/* v1: a PKCS#8 private key, which must be X25519. */
		rewind(fp);
		x = PEM_read_PrivateKey(fp, NULL, NULL, NULL);
		if (x == NULL)
			r = SP_SEAL_ERR_KEY_FILE;
		else if (!EVP_PKEY_is_a(x, "X25519"))
			r = SP_SEAL_ERR_KEY_TYPE;
		else if (!EVP_PKEY_get_raw_private_key(x, out->x25519, &xl) ||
		         xl != SP_HPKE_X25519_LEN)
			r = SP_SEAL_ERR_KEY_FILE;
		else
			out->format = 1;
	}
	/* Without an epoch record the key is as old as its file. */
	if (r == 0 && out->format != 3)
		out->created_at = (int64_t)st.st_mtime;
	fclose(fp);
	EVP_PKEY_free(x);
	OPENSSL_free(name);
	OPENSSL_free(header);
	if (data != NULL)
		OPENSSL_clear_free(data, (size_t)len);
	if (r != 0)
		sp_seal_key_file_clear(out);
	return r;
}

int sp_sealer_load(const char *cert_path, const char *key_path, const char *seal_key_path,
                   struct sp_sealer **out)
{
	EVP_PKEY *sign_key = NULL, *seal_key = NULL;
	X509 *cert = NULL;
	FILE *fp = NULL;
	struct sp_seal_key_file k;
	int r;

	memset(&k, 0, sizeof(k));
	if (key_path == NULL || seal_key_path == NULL || out == NULL)
		return -EINVAL;
	*out = NULL;
	if (cert_path != NULL) {
		r = sp_open_key_file(cert_path, 0, &fp);
		if (r != 0)
			goto out;
		cert = PEM_read_X509(fp, NULL, NULL, NULL);
		fclose(fp);
		if (cert == NULL) {
			r = SP_SEAL_ERR_KEY_FILE;
			goto out;
		}
	}
	r = sp_read_pkey(key_path, 0, &sign_key);
	if (r == 0)
		r = sp_seal_key_file_read(seal_key_path, &k);
	if (r == 0) {
		seal_key = EVP_PKEY_new_raw_private_key_ex(NULL, "X25519", NULL, k.x25519,
		                                           sizeof(k.x25519));
		r = seal_key != NULL ? 0 : SP_SEAL_ERR_KEY_FILE;
	}
	if (r == 0)
		r = sp_sealer_new(sign_key, cert, seal_key, out);
	if (r == 0)
		(*out)->epoch = k.epoch;
	/* A seed this build cannot use leaves the sealer with its X25519 key alone. */
	if (r == 0 && k.has_seed && sp_xwing_available()) {
		r = sp_sealer_set_hybrid_key(*out, k.seed, sizeof(k.seed));
		if (r != 0) {
			sp_sealer_free(*out);
			*out = NULL;
		}
	}
out:
	sp_seal_key_file_clear(&k);
	EVP_PKEY_free(sign_key);
	EVP_PKEY_free(seal_key);
	X509_free(cert);
	return r;
}

int sp_sealer_set_epoch(struct sp_sealer *s, uint32_t epoch)
{
	if (s == NULL || (s->nold > 0 && s->old[0].epoch >= epoch))
		return -EINVAL;
	s->epoch = epoch;
	return 0;
}

uint32_t sp_sealer_epoch(const struct sp_sealer *s)
{
	return s->epoch;
}

size_t sp_sealer_old_keys(const struct sp_sealer *s)
{
	return s->nold;
}

int sp_sealer_add_old_key(struct sp_sealer *s, const struct sp_seal_key_file *k)
{
	struct sp_seal_oldkey o, *grown;
	size_t len = SP_HPKE_X25519_LEN, i;
	int r;

	if (s == NULL || k == NULL || k->epoch >= s->epoch)
		return -EINVAL;
	for (i = 0; i < s->nold; i++)
		if (s->old[i].epoch == k->epoch)
			return -EINVAL;
	if (s->nold >= SP_SEAL_OLD_KEYS_MAX)
		return -ENOSPC;
	memset(&o, 0, sizeof(o));
	o.epoch = k->epoch;
	o.x = EVP_PKEY_new_raw_private_key_ex(NULL, "X25519", NULL, k->x25519, sizeof(k->x25519));
	if (o.x == NULL)
		return SP_SEAL_ERR_CRYPTO;
	r = SP_SEAL_ERR_CRYPTO;
	if (!EVP_PKEY_get_raw_public_key(o.x, o.pk, &len) || len != sizeof(o.pk))
		goto fail;
	if (k->has_seed && sp_xwing_available()) {
		r = sp_xwing_key_new(k->seed, &o.xw);
		if (r != 0) {
			r = r == -ENOMEM ? -ENOMEM : SP_SEAL_ERR_CRYPTO;
			goto fail;
		}
	}
	r = -ENOMEM;
	grown = realloc(s->old, (s->nold + 1) * sizeof(*s->old));
	if (grown == NULL)
		goto fail;
	s->old = grown;
	/* Newest first. */
	for (i = s->nold; i > 0 && s->old[i - 1].epoch < o.epoch; i--)
		s->old[i] = s->old[i - 1];
	s->old[i] = o;
	s->nold++;
	return 0;
fail:
	EVP_PKEY_free(o.x);
	sp_xwing_key_free(o.xw);
	return r;
}

/* Writes a new key file at path (0600, never over an existing one): v1 with the PKCS#8 of key,
 * or, with body != NULL, v2 with that body. */
static int sp_seal_write_key_file(const char *path, EVP_PKEY *key, const uint8_t *body,
                                  size_t body_len)
{
	FILE *fp = NULL;
	int fd, r, ok;

	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	fp = fdopen(fd, "w");
	if (fp == NULL) {
		r = -errno;
		close(fd);
		unlink(path);
		return r;
	}
	errno = 0;
	ok = body != NULL ? PEM_write(fp, sp_seal_key_pem_name, "", body, (long)body_len) > 0
	                  : PEM_write_PrivateKey(fp, key, NULL, NULL, 0, NULL, NULL) == 1;
	if (!ok || fflush(fp) != 0 || fsync(fileno(fp)) != 0) {
		r = errno != 0 ? -errno : SP_SEAL_ERR_CRYPTO;
		fclose(fp);
		unlink(path);
		return r;
	}
	r = fclose(fp) == 0 ? 0 : -errno;
	if (r != 0)
		unlink(path);
	return r;
}

/* Makes a key file: v1 PEM (!hybrid, epoch 0), v2 body version 1 (hybrid, epoch 0) or v2 body
 * version 2 (epoch >= 1, with created_at). */
static int sp_seal_keygen(const char *path, int hybrid, uint32_t epoch, int64_t created_at)
{
	/* [version 2: epoch, created_at], version, count, then (kem, length, key) for X25519 and
	 * for MLKEM768-X25519 */
	uint8_t body[1 + 12 + 1 + 2 * (4 + 32)], *p = body, pk[SP_XWING_PK_LEN];
	EVP_PKEY *key = NULL;
	size_t len = SP_HPKE_X25519_LEN;
	int r;

	if (path == NULL || created_at < 0)
		return -EINVAL;
	if (hybrid && !sp_xwing_available())
		return SP_SEAL_ERR_SUITE;
	key = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
	if (key == NULL)
		return SP_SEAL_ERR_CRYPTO;
	if (!hybrid && epoch == 0) {
		r = sp_seal_write_key_file(path, key, NULL, 0);
		goto out;
	}
	if (epoch == 0) {
		*p++ = SP_SEAL_KEY_FILE_VERSION;
	} else {
		*p++ = SP_SEAL_KEY_FILE_VERSION_EPOCH;
		p = sp_put_u32(p, epoch);
		p = sp_put_u64(p, (uint64_t)created_at);
	}
	*p++ = hybrid ? 2 : 1;
	p = sp_put_u16(p, SP_HPKE_KEM_X25519_SHA256);
	p = sp_put_u16(p, SP_HPKE_X25519_LEN);
	r = SP_SEAL_ERR_CRYPTO;
	if (!EVP_PKEY_get_raw_private_key(key, p, &len) || len != SP_HPKE_X25519_LEN)
		goto out;
	p += SP_HPKE_X25519_LEN;
	if (hybrid) {
		p = sp_put_u16(p, SP_HPKE_KEM_MLKEM768_X25519);
		p = sp_put_u16(p, SP_XWING_SEED_LEN);
		/* GenerateKeyPair of the KEM: a random seed (checked to expand). */
		if (sp_hpke_kem_generate_keypair(SP_HPKE_KEM_MLKEM768_X25519, p, SP_XWING_SEED_LEN,
		                                 pk, sizeof(pk)) != 0)
			goto out;
		p += SP_XWING_SEED_LEN;
	}
	r = sp_seal_write_key_file(path, NULL, body, (size_t)(p - body));
out:
	OPENSSL_cleanse(body, sizeof(body));
	EVP_PKEY_free(key);
	return r;
}

int sp_seal_keygen_file_ex(const char *path, int hybrid)
{
	return sp_seal_keygen(path, hybrid, 0, 0);
}

int sp_seal_keygen_file_epoch(const char *path, int hybrid, uint32_t epoch, int64_t created_at)
{
	if (epoch == 0)
		return -EINVAL;
	return sp_seal_keygen(path, hybrid, epoch, created_at);
}

int sp_seal_keygen_file(const char *path)
{
	return sp_seal_keygen_file_ex(path, sp_xwing_available());
}

const uint8_t *sp_sealer_token(const struct sp_sealer *s)
{
	return s->token;
}

int sp_sealer_set_hybrid_key(struct sp_sealer *s, const uint8_t *seed, size_t seed_len)
{
	struct sp_xwing_key *k;
	int r;

	if (s == NULL || seed == NULL || seed_len != SP_XWING_SEED_LEN)
		return -EINVAL;
	if (sp_seal_suite(SP_SEAL_SUITE_HYBRID) == NULL)
		return SP_SEAL_ERR_SUITE;
	r = sp_xwing_key_new(seed, &k);
	if (r != 0)
		return r == -ENOMEM ? -ENOMEM : SP_SEAL_ERR_CRYPTO;
	sp_xwing_key_free(s->xw);
	s->xw = k;
	s->suite = SP_SEAL_SUITE_HYBRID;
	return 0;
}

int sp_sealer_has_hybrid_key(const struct sp_sealer *s)
{
	return s != NULL && s->xw != NULL;
}

/* The sealer's public key for a suite's KEM into pub (*len set), or 0 if it has none. */
static int sp_sealer_own_pub(const struct sp_sealer *s, const struct sp_seal_suite_def *d,
                             const uint8_t **pub)
{
	if (d->hpke.kem == SP_HPKE_KEM_X25519_SHA256) {
		*pub = s->seal_pk;
		return 1;
	}
	if (d->hpke.kem == SP_HPKE_KEM_MLKEM768_X25519 && s->xw != NULL) {
		*pub = sp_xwing_key_pk(s->xw);
		return 1;
	}
	return 0;
}

int sp_sealer_peer_suite(const struct sp_sealer *s, uint16_t suite, struct sp_seal_peer *out)
{
	const struct sp_seal_suite_def *d = sp_seal_suite(suite);
	const uint8_t *pub;

	memset(out, 0, sizeof(*out));
	if (d == NULL || !sp_sealer_own_pub(s, d, &pub))
		return SP_SEAL_ERR_SUITE;
	memcpy(out->token, s->token, SP_TOKEN_LEN);
	out->suite = suite;
	out->pub_len = d->pub_len;
	memcpy(out->pub, pub, d->pub_len);
	out->epoch = s->epoch;
	return 0;
}

void sp_sealer_peer(const struct sp_sealer *s, struct sp_seal_peer *out)
{
	/* s->suite always has a key (sp_sealer_set_suite checks). */
	(void)sp_sealer_peer_suite(s, s->suite, out);
}

size_t sp_sealer_suites(const struct sp_sealer *s, uint16_t *out, size_t max)
{
	size_t n = 0;

	if (max > n)
		out[n++] = s->suite;
	if (s->xw != NULL && max > n)
		out[n++] = s->suite == SP_SEAL_SUITE_HYBRID ? SP_SEAL_SUITE_DEFAULT
		                                            : SP_SEAL_SUITE_HYBRID;
	return n;
}

const uint8_t *sp_sealer_spki(const struct sp_sealer *s, size_t *len)
{
	*len = s->spki_len;
	return s->spki;
}

X509 *sp_sealer_cert(const struct sp_sealer *s)
{
	return s->cert;
}

int sp_sealer_set_suite(struct sp_sealer *s, uint16_t suite)
{
	const struct sp_seal_suite_def *d = sp_seal_suite(suite);
	const uint8_t *pub;

	if (d == NULL || !sp_sealer_own_pub(s, d, &pub))
		return SP_SEAL_ERR_SUITE;
	s->suite = suite;
	return 0;
}

int sp_sealer_set_skew(struct sp_sealer *s, uint32_t skew_ms)
{
	if (skew_ms > SP_SEAL_MAX_SKEW_MS)
		return -EINVAL;
	s->skew_ms = skew_ms;
	return 0;
}

int sp_sealer_set_pad(struct sp_sealer *s, uint32_t block)
{
	if (block == 0 || block > SP_BUCKET_BLOCK_MAX)
		return -EINVAL;
	s->pad = block;
	return 0;
}

int sp_sealer_set_max_envelope(struct sp_sealer *s, size_t max)
{
	if (max < 1024 || max > (1u << 30))
		return -EINVAL;
	s->max_envelope = max;
	return 0;
}

/* The padding that puts an envelope of len bytes (content unpadded) into its bucket. */
static size_t sp_seal_bucket_pad(const struct sp_sealer *s, size_t len)
{
	if (s->pad <= 1)
		return 0;
	/* Every suite's header and tag come to at least SP_SEAL_BUCKET_BASE bytes. */
	return (s->pad - (len - SP_SEAL_BUCKET_BASE) % s->pad) % s->pad;
}

/* The reply key an envelope of suite d carries: of d itself if the sealer has one (the
 * recipient implements d), else the preferred one. */
static void sp_sealer_reply_key(const struct sp_sealer *s, const struct sp_seal_suite_def *d,
                                struct sp_seal_peer *own)
{
	if (sp_sealer_peer_suite(s, d->id, own) != 0)
		sp_sealer_peer(s, own);
}

size_t sp_seal_max_payload_suite(const struct sp_sealer *s, uint16_t suite, size_t max_blob,
                                 int reply_key)
{
	const struct sp_seal_suite_def *d = sp_seal_suite(suite);
	struct sp_seal_peer own;
	size_t overhead, fixed, env;

	if (d == NULL)
		return 0;
	sp_sealer_reply_key(s, d, &own);
	/* At its longest: version 2, with the key epoch in the header and in the reply key. */
	overhead = 7 + d->enc_len + SP_HPKE_NT;
	fixed = SP_SEAL_INNER_FIXED + s->spki_len +
	        (reply_key ? 8 + own.pub_len + SP_SEAL_ACCESS_LEN : 0) + 4 + 1 +
	        SP_SEAL_P256_SIG_MAX;
	if (max_blob > s->max_envelope)
		max_blob = s->max_envelope;
	if (max_blob < overhead + fixed)
		return 0;
	/* The largest envelope size of a bucket (SP_SEAL_BUCKET_BASE + k * pad) within max_blob. */
	env = s->pad <= 1 ? max_blob : max_blob - (max_blob - SP_SEAL_BUCKET_BASE) % s->pad;
	return env >= overhead + fixed ? env - overhead - fixed : 0;
}

size_t sp_seal_max_payload(const struct sp_sealer *s, size_t max_blob, int reply_key)
{
	return sp_seal_max_payload_suite(s, s->suite, max_blob, reply_key);
}

/* ---- the signature (13.5) ---- */

/* The fields the signature covers, in transcript order. */
struct sp_seal_signed {
	uint8_t version; /* 2: key_epoch and the reply key's epoch are covered */
	uint16_t suite;
	uint32_t key_epoch;
	const uint8_t *enc;
	size_t enc_len;
	const uint8_t *msg_id;
	const uint8_t *recipient;
	const uint8_t *sender;
	uint8_t flags;
	uint64_t sent_at_ms;
	uint32_t ttl;
	const struct sp_seal_peer *reply; /* NULL without REPLY_KEY */
	const uint8_t *reply_access;      /* NULL without REPLY_ACCESS */
	const uint8_t *payload;
	size_t payload_len;
};

/* Feeds the transcript to a DigestSign or DigestVerify context. Returns 1 or 0. */
static int sp_seal_transcript(EVP_MD_CTX *md, int sign, const struct sp_seal_signed *t)
{
	uint8_t head[SP_SEAL_SIG_LABEL_LEN + 7 + SP_SEAL_MSG_ID_LEN + 2 * SP_TOKEN_LEN + 1 + 8 + 4];
	uint8_t reply[2 + 4 + 2 + SP_SEAL_PUB_MAX], plen[4], *p = head;
	int (*update)(EVP_MD_CTX *, const void *, size_t) =
	        sign ? EVP_DigestSignUpdate : EVP_DigestVerifyUpdate;

	memcpy(p, sp_seal_sig_label, SP_SEAL_SIG_LABEL_LEN);
	p += SP_SEAL_SIG_LABEL_LEN;
	*p++ = t->version;
	p = sp_put_u16(p, t->suite);
	if (t->version == SP_SEAL_VERSION_EPOCH)
		p = sp_put_u32(p, t->key_epoch);
	if (!update(md, head, (size_t)(p - head)) || !update(md, t->enc, t->enc_len))
		return 0;
	p = head;
	memcpy(p, t->msg_id, SP_SEAL_MSG_ID_LEN);
	p += SP_SEAL_MSG_ID_LEN;
	memcpy(p, t->recipient, SP_TOKEN_LEN);
	p += SP_TOKEN_LEN;
	memcpy(p, t->sender, SP_TOKEN_LEN);
	p += SP_TOKEN_LEN;
	*p++ = t->flags;
	p = sp_put_u64(p, t->sent_at_ms);
	p = sp_put_u32(p, t->ttl);
	if (!update(md, head, (size_t)(p - head)))
		return 0;
	if (t->reply != NULL) {
		p = sp_put_u16(reply, t->reply->suite);
		if (t->version == SP_SEAL_VERSION_EPOCH)
			p = sp_put_u32(p, t->reply->epoch);
		p = sp_put_u16(p, (uint16_t)t->reply->pub_len);
		memcpy(p, t->reply->pub, t->reply->pub_len);
		p += t->reply->pub_len;
		if (!update(md, reply, (size_t)(p - reply)))
			return 0;
	}
	if (t->reply_access != NULL && !update(md, t->reply_access, SP_SEAL_ACCESS_LEN))
		return 0;
	sp_put_u32(plen, (uint32_t)t->payload_len);
	return update(md, plen, 4) &&
	       (t->payload_len == 0 || update(md, t->payload, t->payload_len));
}

int sp_sealer_sign(const struct sp_sealer *s, const uint8_t *data, size_t len,
                   uint8_t sig[SP_SEAL_SIG_MAX], size_t *sig_len)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int r = SP_SEAL_ERR_CRYPTO;

	*sig_len = SP_SEAL_SIG_MAX;
	if (md != NULL &&
	    EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, s->sign_key, NULL) == 1 &&
	    EVP_DigestSign(md, sig, sig_len, data, len) == 1)
		r = 0;
	EVP_MD_CTX_free(md);
	return r;
}

static int sp_seal_sign(const struct sp_sealer *s, const struct sp_seal_signed *t,
                        uint8_t sig[SP_SEAL_SIG_MAX], size_t *sig_len)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int r = SP_SEAL_ERR_CRYPTO;

	*sig_len = SP_SEAL_SIG_MAX;
	if (md != NULL &&
	    EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, s->sign_key, NULL) == 1 &&
	    sp_seal_transcript(md, 1, t) && EVP_DigestSignFinal(md, sig, sig_len) == 1)
		r = 0;
	EVP_MD_CTX_free(md);
	return r;
}

/* ---- sealing ---- */

static int sp_seal_inner(const struct sp_sealer *s, const struct sp_seal_peer *to,
                         const struct sp_seal_msg *m, uint8_t flags, uint8_t **env, size_t *env_len)
{
	const struct sp_seal_suite_def *d;
	struct sp_seal_peer own;
	struct sp_seal_signed t;
	struct sp_hpke_ctx hc;
	uint8_t enc[SP_SEAL_ENC_MAX], sig[SP_SEAL_SIG_MAX], aad[SP_SEAL_HEADER_MAX + 16];
	uint8_t ss[SP_XWING_SS_LEN];
	struct sp_hpke_sched *sched;
	uint8_t *buf = NULL, *p;
	size_t sig_len, inner_len, header_len, total, pad;
	int r, has_reply = (flags & SP_SEAL_F_REPLY_KEY) != 0, v2;
	size_t access_len = (flags & SP_SEAL_F_REPLY_ACCESS) ? SP_SEAL_ACCESS_LEN : 0;

	if (s == NULL || to == NULL || m == NULL || env == NULL || env_len == NULL ||
	    m->msg_id == NULL || (m->payload == NULL && m->payload_len > 0))
		return -EINVAL;
	*env = NULL;
	*env_len = 0;
	if ((flags & ~SP_SEAL_F_ALL) != 0 ||
	    ((flags & SP_SEAL_F_RECEIPT_WANTED) && (flags & SP_SEAL_F_IS_RECEIPT)) ||
	    (access_len && (!has_reply || m->reply_access == NULL)))
		return -EINVAL;
	d = sp_seal_suite(to->suite);
	if (d == NULL)
		return SP_SEAL_ERR_SUITE;
	if (to->pub_len != d->pub_len)
		return SP_SEAL_ERR_PEER_KEY;
	/* To a key with an epoch (a version 3 card, a version 2 reply key): version 2. */
	v2 = to->epoch != 0;
	header_len = (v2 ? 7 : 3) + d->enc_len;
	/* Sizes first, in 64-bit arithmetic that cannot wrap for payloads below 2^32. */
	if (m->payload_len > s->max_envelope)
		return SP_SEAL_ERR_TOO_LARGE;
	sp_sealer_reply_key(s, d, &own);

	sched = &s->scheds[d - sp_seal_suites];
	if (d->hpke.kem == SP_HPKE_KEM_X25519_SHA256) {
		r = sp_hpke_sched_setup_s(sched, to->pub, NULL, 0, enc, &hc, NULL);
	} else {
		/* MLKEM768-X25519: X-Wing's encapsulation, its secret into the key schedule; a
		 * repeat recipient's ML-KEM key comes parsed from the cache. */
		EVP_PKEY *pk_m = pkey_cache_get(s->pks, to->pub);
		int cached = pk_m != NULL;

		r = cached ? 0 : sp_xwing_import_mlkem(to->pub, &pk_m);
		if (r == 0)
			r = sp_xwing_encap_mlkem(pk_m, to->pub, NULL, enc, ss);
		if (r == 0 && !cached)
			pkey_cache_put(s->pks, to->pub, pk_m);
		EVP_PKEY_free(pk_m);
		if (r == 0)
			r = sp_hpke_sched_ss(sched, ss, &hc, NULL);
		OPENSSL_cleanse(ss, sizeof(ss));
	}
	if (r == -EKEYREJECTED)
		return SP_SEAL_ERR_PEER_KEY;
	if (r != 0)
		return r == -ENOMEM ? -ENOMEM : SP_SEAL_ERR_CRYPTO;

	t = (struct sp_seal_signed){
	        .version = v2 ? SP_SEAL_VERSION_EPOCH : SP_SEAL_VERSION,
	        .suite = to->suite,
	        .key_epoch = to->epoch,
	        .enc = enc,
	        .enc_len = d->enc_len,
	        .msg_id = m->msg_id,
	        .recipient = to->token,
	        .sender = s->token,
	        .flags = flags,
	        .sent_at_ms = m->sent_at_ms,
	        .ttl = m->ttl,
	        .reply = has_reply ? &own : NULL,
	        .reply_access = access_len ? m->reply_access : NULL,
	        .payload = m->payload,
	        .payload_len = m->payload_len,
	};
	r = sp_seal_sign(s, &t, sig, &sig_len);
	if (r != 0)
		goto out;

	inner_len = SP_SEAL_INNER_FIXED + s->spki_len +
	            (has_reply ? (v2 ? 8 : 4) + own.pub_len : 0) + access_len + 4 + m->payload_len +
	            1 + sig_len;
	pad = sp_seal_bucket_pad(s, header_len + inner_len + SP_HPKE_NT);
	inner_len += pad;
	total = header_len + inner_len + SP_HPKE_NT;
	if (total > s->max_envelope) {
		r = SP_SEAL_ERR_TOO_LARGE;
		goto out;
	}
	buf = malloc(total);
	if (buf == NULL) {
		r = -ENOMEM;
		goto out;
	}
	/* Header: version, suite, [key epoch], enc. */
	p = buf;
	*p++ = t.version;
	p = sp_put_u16(p, to->suite);
	if (v2)
		p = sp_put_u32(p, to->epoch);
	memcpy(p, enc, d->enc_len);
	p += d->enc_len;
	/* Inner plaintext (13.4), sealed in place below. */
	*p++ = flags;
	p = sp_put_u64(p, m->sent_at_ms);
	p = sp_put_u32(p, m->ttl);
	memcpy(p, to->token, SP_TOKEN_LEN);
	p += SP_TOKEN_LEN;
	p = sp_put_u16(p, (uint16_t)s->spki_len);
	memcpy(p, s->spki, s->spki_len);
	p += s->spki_len;
	if (has_reply) {
		p = sp_put_u16(p, own.suite);
		if (v2)
			p = sp_put_u32(p, own.epoch);
		p = sp_put_u16(p, (uint16_t)own.pub_len);
		memcpy(p, own.pub, own.pub_len);
		p += own.pub_len;
	}
	if (access_len) {
		memcpy(p, m->reply_access, access_len);
		p += access_len;
	}
	p = sp_put_u32(p, (uint32_t)m->payload_len);
	if (m->payload_len > 0)
		memcpy(p, m->payload, m->payload_len);
	p += m->payload_len;
	*p++ = (uint8_t)sig_len;
	memcpy(p, sig, sig_len);
	p += sig_len;
	memset(p, 0, pad);

	/* AAD: the header and the msg_id (13.3). */
	memcpy(aad, buf, header_len);
	memcpy(aad + header_len, m->msg_id, SP_SEAL_MSG_ID_LEN);
	r = sp_hpke_seal(&hc, aad, header_len + SP_SEAL_MSG_ID_LEN, buf + header_len, inner_len,
	                 buf + header_len);
	if (r != 0) {
		r = r == -ENOMEM ? -ENOMEM : SP_SEAL_ERR_CRYPTO;
		goto out;
	}
	*env = buf;
	*env_len = total;
	buf = NULL;
out:
	sp_hpke_ctx_clear(&hc);
	free(buf);
	return r;
}

int sp_seal(const struct sp_sealer *s, const struct sp_seal_peer *to, const struct sp_seal_msg *m,
            uint8_t **env, size_t *env_len)
{
	uint8_t flags;

	if (m == NULL)
		return -EINVAL;
	if (m->flags & SP_SEAL_F_IS_RECEIPT)
		return -EINVAL;
	flags = m->flags;
	if (flags & SP_SEAL_F_RECEIPT_WANTED)
		flags |= SP_SEAL_F_REPLY_KEY;
	return sp_seal_inner(s, to, m, flags, env, env_len);
}

/* ---- opening ---- */

/* A bounds-checked reader over the inner plaintext. */
struct sp_rd {
	const uint8_t *p;
	size_t left;
};

static const uint8_t *sp_rd_take(struct sp_rd *rd, size_t n)
{
	const uint8_t *p = rd->p;

	if (n > rd->left)
		return NULL;
	rd->p += n;
	rd->left -= n;
	return p;
}

/*
 * The DER of a P-256 SubjectPublicKeyInfo with an uncompressed point is these 27 bytes
 * (SEQUENCE, AlgorithmIdentifier id-ecPublicKey prime256v1, BIT STRING, 0x04) then X and Y.
 */
static const uint8_t sp_p256_spki_prefix[27] = {
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
        0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04};
#define SP_P256_SPKI_LEN (sizeof(sp_p256_spki_prefix) + 64)

int sp_seal_spki_key(const uint8_t *spki, size_t len, EVP_PKEY **out)
{
	EVP_PKEY_CTX *pctx = NULL;
	EVP_PKEY *pkey = NULL;
	OSSL_PARAM params[3];
	int r = SP_SEAL_ERR_SENDER_KEY;

	/*
	 * The token is over these very bytes: they must be the one DER encoding a certificate
	 * carries, or one key would have two tokens. For P-256 that encoding is fixed, so a byte
	 * comparison checks it (and spares OpenSSL 3.0's decoder, about 5x slower than fromdata).
	 */
	if (spki == NULL || out == NULL || len != SP_P256_SPKI_LEN ||
	    memcmp(spki, sp_p256_spki_prefix, sizeof(sp_p256_spki_prefix)) != 0)
		return SP_SEAL_ERR_SENDER_KEY;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME,
	                                             (char *)"prime256v1", 0);
	params[1] =
	        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)(spki + 26), 65);
	params[2] = OSSL_PARAM_construct_end();
	/* fromdata decodes the point and refuses one that is not on the curve. */
	pctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (pctx == NULL) {
		r = -ENOMEM;
		goto out;
	}
	if (EVP_PKEY_fromdata_init(pctx) != 1 ||
	    EVP_PKEY_fromdata(pctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
		goto out;
	*out = pkey;
	r = 0;
out:
	EVP_PKEY_CTX_free(pctx);
	return r;
}

static int sp_seal_verify(EVP_PKEY *key, const struct sp_seal_signed *t, const uint8_t *sig,
                          size_t sig_len)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int r = SP_SEAL_ERR_SIGNATURE;

	if (md == NULL)
		return -ENOMEM;
	if (EVP_DigestVerifyInit_ex(md, NULL, "SHA256", NULL, NULL, key, NULL) == 1 &&
	    sp_seal_transcript(md, 0, t) && EVP_DigestVerifyFinal(md, sig, sig_len) == 1)
		r = 0;
	EVP_MD_CTX_free(md);
	return r;
}

int sp_seal_open(const struct sp_sealer *s, struct sp_seal_replay *replay,
                 const uint8_t msg_id[SP_SEAL_MSG_ID_LEN], const uint8_t *env, size_t env_len,
                 uint64_t now_ms, struct sp_seal_opened *out)
{
	const struct sp_seal_suite_def *d;
	struct sp_hpke_ctx hc;
	struct sp_seal_signed t;
	struct sp_rd rd;
	EVP_PKEY *sender_key = NULL;
	uint8_t aad[SP_SEAL_HEADER_MAX + SP_SEAL_MSG_ID_LEN], ss[SP_XWING_SS_LEN];
	struct sp_hpke_sched *sched;
	const uint8_t *recipient, *sig, *q;
	uint8_t *buf = NULL, version;
	struct sp_seal_oldkey cur;
	const struct sp_seal_oldkey *cand[1 + SP_SEAL_OLD_KEYS_MAX];
	size_t header_len, inner_len, spki_len, sig_len, enc_off, ncand = 0;
	uint64_t life_ms;
	uint32_t key_epoch = 0;
	int r, cached, hybrid;

	if (out != NULL)
		memset(out, 0, sizeof(*out));
	if (s == NULL || msg_id == NULL || env == NULL || out == NULL)
		return -EINVAL;
	memset(&hc, 0, sizeof(hc));
	/* Header (13.1). */
	if (env_len > s->max_envelope)
		return SP_SEAL_ERR_TOO_LARGE;
	if (env_len < 3)
		return SP_SEAL_ERR_MALFORMED;
	version = env[0];
	if (version != SP_SEAL_VERSION && version != SP_SEAL_VERSION_EPOCH)
		return SP_SEAL_ERR_VERSION;
	d = sp_seal_suite((uint16_t)sp_get_be(env + 1, 2));
	if (d == NULL)
		return SP_SEAL_ERR_SUITE;
	hybrid = d->hpke.kem == SP_HPKE_KEM_MLKEM768_X25519;
	/* A suite of a KEM this sealer has no key for is one it never announced. */
	if (hybrid && s->xw == NULL) {
		size_t i = 0;

		while (i < s->nold && s->old[i].xw == NULL)
			i++;
		if (i == s->nold)
			return SP_SEAL_ERR_SUITE;
	}
	enc_off = version == SP_SEAL_VERSION_EPOCH ? 7 : 3;
	header_len = enc_off + d->enc_len;
	if (env_len < header_len + SP_HPKE_NT + SP_SEAL_INNER_FIXED)
		return SP_SEAL_ERR_MALFORMED;
	/* The keys to try (13.11): the one of the named epoch; without one, every key held,
	 * newest first. A key without the suite's KEM is one that never announced it. */
	cur = (struct sp_seal_oldkey){s->epoch, s->seal_key, {0}, s->xw};
	memcpy(cur.pk, s->seal_pk, sizeof(cur.pk));
	if (version == SP_SEAL_VERSION_EPOCH) {
		uint32_t e = (uint32_t)sp_get_be(env + 3, 4);

		if (e == s->epoch)
			cand[ncand++] = &cur;
		for (size_t i = 0; ncand == 0 && i < s->nold; i++)
			if (s->old[i].epoch == e)
				cand[ncand++] = &s->old[i];
		if (ncand == 0)
			return e < s->epoch ? SP_SEAL_ERR_KEY_ERASED : SP_SEAL_ERR_KEY_EPOCH;
		if (hybrid && cand[0]->xw == NULL)
			return SP_SEAL_ERR_SUITE;
	} else {
		if (!hybrid || cur.xw != NULL)
			cand[ncand++] = &cur;
		for (size_t i = 0; i < s->nold; i++)
			if (!hybrid || s->old[i].xw != NULL)
				cand[ncand++] = &s->old[i];
		if (ncand == 0)
			return SP_SEAL_ERR_SUITE;
	}

	/* Decrypt (13.3): any change to the header, the ciphertext or the msg_id fails here. */
	sched = &s->scheds[d - sp_seal_suites];
	inner_len = env_len - header_len - SP_HPKE_NT;
	buf = malloc(inner_len);
	if (buf == NULL)
		return -ENOMEM;
	memcpy(aad, env, header_len);
	memcpy(aad + header_len, msg_id, SP_SEAL_MSG_ID_LEN);
	r = SP_SEAL_ERR_DECRYPT;
	for (size_t i = 0; i < ncand && r == SP_SEAL_ERR_DECRYPT; i++) {
		const struct sp_seal_oldkey *k = cand[i];

		sp_hpke_ctx_clear(&hc);
		if (!hybrid) {
			r = sp_hpke_sched_setup_r(sched, env + enc_off, k->x, k->pk, &hc, NULL);
		} else {
			/* ML-KEM rejects implicitly: a changed enc gives another secret (DECRYPT).
			 */
			r = sp_xwing_decap_key(k->xw, env + enc_off, ss);
			if (r == 0)
				r = sp_hpke_sched_ss(sched, ss, &hc, NULL);
			OPENSSL_cleanse(ss, sizeof(ss));
		}
		if (r == 0) {
			r = sp_hpke_open(&hc, aad, header_len + SP_SEAL_MSG_ID_LEN,
			                 env + header_len, inner_len + SP_HPKE_NT, buf);
			if (r == -EBADMSG)
				r = -EKEYREJECTED;
		}
		if (r == 0)
			key_epoch = k->epoch;
		r = r == 0               ? 0
		    : r == -EKEYREJECTED ? SP_SEAL_ERR_DECRYPT
		    : r == -ENOMEM       ? -ENOMEM
		                         : SP_SEAL_ERR_CRYPTO;
	}
	if (r != 0)
		goto out;

	/* Inner plaintext (13.4), every length checked against what is left. */
	r = SP_SEAL_ERR_MALFORMED;
	rd = (struct sp_rd){buf, inner_len};
	if ((q = sp_rd_take(&rd, SP_SEAL_INNER_FIXED)) == NULL)
		goto out;
	out->flags = q[0];
	out->sent_at_ms = sp_get_be(q + 1, 8);
	out->ttl = (uint32_t)sp_get_be(q + 9, 4);
	recipient = q + 13;
	spki_len = (size_t)sp_get_be(q + 13 + SP_TOKEN_LEN, 2);
	if ((out->flags & ~SP_SEAL_F_ALL) != 0 ||
	    ((out->flags & SP_SEAL_F_RECEIPT_WANTED) && !(out->flags & SP_SEAL_F_REPLY_KEY)) ||
	    ((out->flags & SP_SEAL_F_RECEIPT_WANTED) && (out->flags & SP_SEAL_F_IS_RECEIPT)) ||
	    ((out->flags & SP_SEAL_F_REPLY_ACCESS) && !(out->flags & SP_SEAL_F_REPLY_KEY)))
		goto out;
	if (spki_len == 0 || spki_len > SP_SEAL_SPKI_MAX ||
	    (out->sender_spki = sp_rd_take(&rd, spki_len)) == NULL)
		goto out;
	out->sender_spki_len = spki_len;
	if (out->flags & SP_SEAL_F_REPLY_KEY) {
		const struct sp_seal_suite_def *rs;

		if ((q = sp_rd_take(&rd, version == SP_SEAL_VERSION_EPOCH ? 8 : 4)) == NULL)
			goto out;
		out->reply.suite = (uint16_t)sp_get_be(q, 2);
		if (version == SP_SEAL_VERSION_EPOCH) {
			out->reply.epoch = (uint32_t)sp_get_be(q + 2, 4);
			q += 4;
		}
		out->reply.pub_len = (size_t)sp_get_be(q + 2, 2);
		rs = sp_seal_suite(out->reply.suite);
		if (rs == NULL) {
			r = SP_SEAL_ERR_SUITE;
			goto out;
		}
		if (out->reply.pub_len != rs->pub_len || (q = sp_rd_take(&rd, rs->pub_len)) == NULL)
			goto out;
		memcpy(out->reply.pub, q, rs->pub_len);
		out->has_reply = 1;
	}
	if (out->flags & SP_SEAL_F_REPLY_ACCESS) {
		if ((q = sp_rd_take(&rd, SP_SEAL_ACCESS_LEN)) == NULL)
			goto out;
		memcpy(out->reply_access, q, SP_SEAL_ACCESS_LEN);
		out->has_reply_access = 1;
	}
	if ((q = sp_rd_take(&rd, 4)) == NULL)
		goto out;
	out->payload_len = (size_t)sp_get_be(q, 4);
	if ((out->payload = sp_rd_take(&rd, out->payload_len)) == NULL)
		goto out;
	if ((q = sp_rd_take(&rd, 1)) == NULL)
		goto out;
	sig_len = q[0];
	if (sig_len == 0 || (sig = sp_rd_take(&rd, sig_len)) == NULL)
		goto out;
	/* Padding: whatever is left, all zero. */
	for (size_t i = 0; i < rd.left; i++)
		if (rd.p[i] != 0)
			goto out;

	/* Addressed to us? (The relay cannot change this; a sender can misdirect.) */
	if (CRYPTO_memcmp(recipient, s->token, SP_TOKEN_LEN) != 0) {
		r = SP_SEAL_ERR_RECIPIENT;
		goto out;
	}
	/* Who sent it, and did they? A repeat sender's key comes parsed from the cache. */
	if (!EVP_Digest(out->sender_spki, spki_len, out->sender, NULL, EVP_sha256(), NULL)) {
		r = SP_SEAL_ERR_CRYPTO;
		goto out;
	}
	sender_key = pkey_cache_get(s->keys, out->sender);
	cached = sender_key != NULL;
	if (!cached) {
		r = sp_seal_spki_key(out->sender_spki, spki_len, &sender_key);
		if (r != 0)
			goto out;
	}
	if (out->has_reply)
		memcpy(out->reply.token, out->sender, SP_TOKEN_LEN);
	t = (struct sp_seal_signed){
	        .version = version,
	        .suite = d->id,
	        .key_epoch = version == SP_SEAL_VERSION_EPOCH ? (uint32_t)sp_get_be(env + 3, 4) : 0,
	        .enc = env + enc_off,
	        .enc_len = d->enc_len,
	        .msg_id = msg_id,
	        .recipient = recipient,
	        .sender = out->sender,
	        .flags = out->flags,
	        .sent_at_ms = out->sent_at_ms,
	        .ttl = out->ttl,
	        .reply = out->has_reply ? &out->reply : NULL,
	        .reply_access = out->has_reply_access ? out->reply_access : NULL,
	        .payload = out->payload,
	        .payload_len = out->payload_len,
	};
	r = sp_seal_verify(sender_key, &t, sig, sig_len);
	if (r != 0)
		goto out;
	if (!cached)
		pkey_cache_put(s->keys, out->sender, sender_key);

	/* The replay window (13.6). */
	life_ms = (uint64_t)out->ttl * 1000 + s->skew_ms;
	out->window_end_ms =
	        out->sent_at_ms > UINT64_MAX - life_ms ? UINT64_MAX : out->sent_at_ms + life_ms;
	if (out->sent_at_ms > now_ms + s->skew_ms) {
		r = SP_SEAL_ERR_FUTURE;
		goto out;
	}
	if (now_ms > out->window_end_ms) {
		r = SP_SEAL_ERR_STALE;
		goto out;
	}
	if (replay != NULL) {
		r = sp_seal_replay_seen(replay, out->sender, msg_id, out->sent_at_ms);
		if (r != 0)
			goto out;
	}
	memcpy(out->msg_id, msg_id, SP_SEAL_MSG_ID_LEN);
	out->suite = d->id;
	out->version = version;
	out->key_epoch = key_epoch;
	out->buf = buf;
	out->buf_len = inner_len;
	buf = NULL;
	r = 0;
out:
	sp_hpke_ctx_clear(&hc);
	EVP_PKEY_free(sender_key);
	if (buf != NULL) {
		OPENSSL_cleanse(buf, inner_len);
		free(buf);
	}
	if (r != 0)
		memset(out, 0, sizeof(*out));
	return r;
}

int sp_seal_opened_remember(struct sp_seal_replay *replay, const struct sp_seal_opened *m,
                            uint64_t now_ms)
{
	if (replay == NULL || m == NULL || m->buf == NULL)
		return -EINVAL;
	return sp_seal_replay_add(replay, m->sender, m->msg_id, m->sent_at_ms, m->window_end_ms,
	                          now_ms);
}

void sp_seal_opened_clear(struct sp_seal_opened *m)
{
	if (m == NULL)
		return;
	if (m->buf != NULL) {
		OPENSSL_cleanse(m->buf, m->buf_len);
		free(m->buf);
	}
	OPENSSL_cleanse(m, sizeof(*m)); /* reply_access is a key */
}

/* ---- receipts (13.7) ---- */

int sp_seal_receipt(const struct sp_sealer *s, const struct sp_seal_opened *orig, uint8_t status,
                    const uint8_t receipt_msg_id[SP_SEAL_MSG_ID_LEN], uint64_t sent_at_ms,
                    uint32_t ttl, uint8_t **env, size_t *env_len)
{
	uint8_t payload[SP_SEAL_RECEIPT_LEN];
	struct sp_seal_msg m;

	if (s == NULL || orig == NULL || receipt_msg_id == NULL)
		return -EINVAL;
	if (!(orig->flags & SP_SEAL_F_RECEIPT_WANTED) || !orig->has_reply)
		return SP_SEAL_ERR_NO_RECEIPT;
	memcpy(payload, orig->msg_id, SP_SEAL_MSG_ID_LEN);
	payload[SP_SEAL_MSG_ID_LEN] = status;
	m = (struct sp_seal_msg){
	        .msg_id = receipt_msg_id,
	        .sent_at_ms = sent_at_ms,
	        .ttl = ttl,
	        .payload = payload,
	        .payload_len = sizeof(payload),
	};
	return sp_seal_inner(s, &orig->reply, &m, SP_SEAL_F_IS_RECEIPT, env, env_len);
}

int sp_seal_receipt_parse(const struct sp_seal_opened *m, uint8_t msg_id[SP_SEAL_MSG_ID_LEN],
                          uint8_t *status)
{
	if (m == NULL || msg_id == NULL || status == NULL)
		return -EINVAL;
	if (!(m->flags & SP_SEAL_F_IS_RECEIPT))
		return SP_SEAL_ERR_NO_RECEIPT;
	if (m->payload_len != SP_SEAL_RECEIPT_LEN)
		return SP_SEAL_ERR_MALFORMED;
	memcpy(msg_id, m->payload, SP_SEAL_MSG_ID_LEN);
	*status = m->payload[SP_SEAL_MSG_ID_LEN];
	return 0;
}
