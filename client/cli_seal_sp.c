/*
 * cli_seal_sp.c: the sealpush CLI's sealing (cli_seal.h) over sp_seal.h and sp_card.h.
 *
 * Receipts (PROTOCOL.md 13.7): cli_seal_seal() asks for one with SP_SEAL_F_RECEIPT_WANTED;
 * cli_seal_open() says whether an opened message wants one or is one; cli_seal_receipt() seals
 * it with sp_seal_receipt() to the reply key inside the original.
 *
 * Files, all beside the device key KEY (e.g. phone.key):
 *	phone.seal.key     the sealing key (mode 0600), made by `sealpush init`: with the hybrid
 *	                   suite in the build an X25519 key and an X-Wing seed ("SEALPUSH SEALING
 *	                   KEY", PROTOCOL.md 13.10), else a PEM X25519 key; both load. Epoch 0.
 *	phone.seal.key.d/  the keys of later epochs, N.key (sp_seal_keyring.h, 13.11): made by
 *	                   rotation (`sealpush rotate`, `listen` on its schedule), erased once
 *	                   past their grace period (phone.seal.key too)
 *	phone.replay       the replay cache of `sealpush listen` (saved after each message)
 *	phone.cards        the newest card seen per recipient (`send`; sp_card_seen_check)
 * (a key file not ending in ".key" gets ".seal.key" / ".replay" / ".cards" appended instead).
 */
#include "cli_seal.h"

#include <fcntl.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "sp_card.h"
#include "sp_seal.h"
#include "sp_seal_keyring.h"
#include "sp_seal_replay.h"
#include "sp_time.h"

_Static_assert(CLI_SEAL_ROTATE_DEFAULT_S == SP_SEAL_ROTATE_DEFAULT_S &&
                       CLI_SEAL_GRACE_DEFAULT_S == SP_SEAL_GRACE_DEFAULT_S &&
                       CLI_SEAL_GRACE_MAX_S == SP_SEAL_GRACE_MAX_S,
               "cli_seal.h and sp_seal_keyring.h agree");

struct cli_seal {
	struct sp_sealer *sealer;
	struct sp_seal_replay *replay;
	char replay_path[PATH_MAX];
	char base[PATH_MAX]; /* the epoch-0 sealing key file: the keyring's name */
	char cards_path[PATH_MAX];
	char access_path[PATH_MAX]; /* KEY.access: the access key (sealed sender), hex */
	/* That key as cli_seal_seal() puts it into messages that ask for a receipt: read from
	 * KEY.access the first time (one read for all recipients of a send). */
	int reply_access; /* 0: not read yet, 1: have it, -1: none */
	uint8_t reply_key[CLI_ACCESS_KEY_LEN];
	char *cert_file, *key_file;
	uint64_t every_s, grace_s;
};

struct cli_card {
	struct sp_card card;
};

/* Opened-message bookkeeping kept in cli_opened_t.priv. */
typedef struct opened_priv {
	struct sp_seal_opened m;
} opened_priv_t;

static void errmsg(char *err, size_t errlen, const char *what, int e)
{
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s%s%s", what ? what : "", what ? ": " : "",
		         sp_seal_strerror(e));
}

/* Maps sp_seal codes onto the errno values cli_seal.h promises. */
static int map_err(int e)
{
	switch (e) {
	case SP_SEAL_ERR_MALFORMED:
	case SP_SEAL_ERR_VERSION:
	case SP_SEAL_ERR_SUITE:
	case SP_SEAL_ERR_TOO_LARGE:
	case SP_SEAL_ERR_DECRYPT:
	case SP_SEAL_ERR_RECIPIENT:
	case SP_SEAL_ERR_SENDER_KEY:
	case SP_SEAL_ERR_SIGNATURE:
	case SP_SEAL_ERR_STALE:
	case SP_SEAL_ERR_FUTURE:
	case SP_SEAL_ERR_DUPLICATE:
	case SP_SEAL_ERR_CARD_MALFORMED:
	case SP_SEAL_ERR_CARD_TOKEN:
	case SP_SEAL_ERR_CARD_SIGNATURE:
	case SP_SEAL_ERR_PEER_KEY:
	case SP_SEAL_ERR_KEY_EPOCH:
	case SP_SEAL_ERR_CARD_STALE:
		return -EBADMSG;
	case SP_SEAL_ERR_KEY_ERASED:
		return -EKEYEXPIRED;
	case SP_SEAL_ERR_KEY_FILE:
	case SP_SEAL_ERR_KEY_PERMS:
	case SP_SEAL_ERR_KEY_MISMATCH:
	case SP_SEAL_ERR_KEY_TYPE:
	case SP_SEAL_ERR_REPLAY_FILE:
		return -EACCES;
	default:
		return e < 0 && e > -1000 ? e : -EIO;
	}
}

/* KEY's sibling: "dir/phone.key" -> "dir/phone" + suffix. */
static int sibling(const char *key_file, const char *suffix, char *out, size_t outlen)
{
	size_t n = strlen(key_file);
	int r;

	if (n > 4 && strcmp(key_file + n - 4, ".key") == 0)
		n -= 4;
	r = snprintf(out, outlen, "%.*s%s", (int)n, key_file, suffix);
	return r < 0 || (size_t)r >= outlen ? -ENAMETOOLONG : 0;
}

int cli_seal_available(void)
{
	return 1;
}

int cli_seal_init(const char *cert_file, const char *key_file, char *path_out, size_t pathlen,
                  char *err, size_t errlen)
{
	struct sp_sealer *s = NULL;
	struct sp_seal_keyring k;
	int e;

	if (sibling(key_file, ".seal.key", path_out, pathlen) < 0) {
		snprintf(err, errlen, "the key's path is too long");
		return -ENAMETOOLONG;
	}
	/* A device that rotated and erased its first key has its keys in the folder only. */
	if (sp_seal_keyring_scan(path_out, &k) != -ENOENT) {
		snprintf(err, errlen, "%s exists already (this device has sealing keys: %s.d/)",
		         path_out, path_out);
		return -EEXIST;
	}
	e = sp_seal_keygen_file(path_out);
	if (e == -EEXIST) {
		snprintf(err, errlen, "%s exists already (this device has a sealing key)",
		         path_out);
		return -EEXIST;
	}
	if (e < 0) {
		errmsg(err, errlen, path_out, e);
		return map_err(e);
	}
	/* Check that the whole identity loads (certificate and key belong together). */
	e = sp_sealer_load(cert_file, key_file, path_out, &s);
	sp_sealer_free(s);
	if (e < 0) {
		errmsg(err, errlen, "the new sealing identity does not load", e);
		return map_err(e);
	}
	return 0;
}

int cli_seal_load(const char *cert_file, const char *key_file, cli_seal_t **out, char *err,
                  size_t errlen)
{
	struct sp_seal_keyring k;
	cli_seal_t *s;
	int e;

	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->every_s = SP_SEAL_ROTATE_DEFAULT_S;
	s->grace_s = SP_SEAL_GRACE_DEFAULT_S;
	s->cert_file = cert_file != NULL ? strdup(cert_file) : NULL;
	s->key_file = strdup(key_file);
	if ((cert_file != NULL && s->cert_file == NULL) || s->key_file == NULL) {
		cli_seal_free(s);
		return -ENOMEM;
	}
	if (sibling(key_file, ".seal.key", s->base, sizeof(s->base)) < 0 ||
	    sibling(key_file, ".cards", s->cards_path, sizeof(s->cards_path)) < 0 ||
	    sibling(key_file, ".access", s->access_path, sizeof(s->access_path)) < 0) {
		cli_seal_free(s);
		return -ENAMETOOLONG;
	}
	if (sp_seal_keyring_scan(s->base, &k) == -ENOENT) {
		snprintf(err, errlen, "no sealing key %s (run sealpush init)", s->base);
		cli_seal_free(s);
		return -ENOENT;
	}
	e = sp_seal_keyring_load(cert_file, key_file, s->base, &s->sealer);
	if (e == 0)
		e = sp_seal_replay_new(0, &s->replay);
	if (e == 0 && sibling(key_file, ".replay", s->replay_path, sizeof(s->replay_path)) == 0) {
		e = sp_seal_replay_load(s->replay, s->replay_path, sp_time_wall_ms());
		if (e == -ENOENT)
			e = 0;
	}
	if (e < 0) {
		errmsg(err, errlen, s->base, e);
		cli_seal_free(s);
		return map_err(e);
	}
	*out = s;
	return 0;
}

void cli_seal_free(cli_seal_t *s)
{
	if (s == NULL)
		return;
	sp_sealer_free(s->sealer);
	sp_seal_replay_free(s->replay);
	free(s->cert_file);
	free(s->key_file);
	OPENSSL_cleanse(s->reply_key, sizeof(s->reply_key));
	free(s);
}

void cli_seal_set_rotation(cli_seal_t *s, uint64_t every_s, uint64_t grace_s)
{
	s->every_s = every_s;
	s->grace_s = grace_s;
}

uint32_t cli_seal_epoch(const cli_seal_t *s)
{
	return sp_sealer_epoch(s->sealer);
}

/* Loads the keyring again (after a rotation or an erasure, here or by another process). */
static int reload(cli_seal_t *s, char *err, size_t errlen)
{
	struct sp_sealer *n = NULL;
	int e = sp_seal_keyring_load(s->cert_file, s->key_file, s->base, &n);

	if (e < 0) {
		errmsg(err, errlen, s->base, e);
		return map_err(e);
	}
	sp_sealer_free(s->sealer);
	s->sealer = n;
	return 0;
}

int cli_seal_maintain(cli_seal_t *s, bool force, uint32_t *rotated, unsigned *erased, char *err,
                      size_t errlen)
{
	int64_t now = (int64_t)(sp_time_wall_ms() / 1000);
	struct sp_seal_keyring k;
	uint32_t ep = 0;
	unsigned n = 0;
	int e;

	*rotated = 0;
	*erased = 0;
	if (force) {
		e = sp_seal_keyring_rotate(s->base, now, &ep);
		if (e == 0)
			e = sp_seal_keyring_expire(s->base, now, s->grace_s, &n);
	} else {
		e = sp_seal_keyring_maintain(s->base, now, s->every_s, s->grace_s, &ep, &n);
	}
	if (e < 0) {
		errmsg(err, errlen, force ? "cannot rotate the sealing key" : "sealing keys", e);
		return map_err(e);
	}
	*rotated = ep;
	*erased = n;
	/* Load again if anything changed, here or in another process (its rotation, its erasure).
	 */
	e = sp_seal_keyring_scan(s->base, &k);
	if (e == 0 && ep == 0 && n == 0 && k.e[k.n - 1].epoch == sp_sealer_epoch(s->sealer) &&
	    k.n - 1 == sp_sealer_old_keys(s->sealer))
		return 0;
	return reload(s, err, errlen);
}

int cli_seal_access_key(cli_seal_t *s, uint8_t key[CLI_ACCESS_KEY_LEN], char *err, size_t errlen)
{
	FILE *f = fopen(s->access_path, "r");
	char line[2 * CLI_ACCESS_KEY_LEN + 4];
	int ok = 0;

	if (f == NULL) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "cannot read %s: %s", s->access_path, strerror(errno));
		return -errno;
	}
	if (fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		ok = strlen(line) == 2 * CLI_ACCESS_KEY_LEN;
		for (size_t i = 0; ok && i < CLI_ACCESS_KEY_LEN; i++) {
			unsigned v;

			ok = sscanf(line + 2 * i, "%2x", &v) == 1;
			key[i] = (uint8_t)v;
		}
	}
	OPENSSL_cleanse(line, sizeof(line));
	fclose(f);
	if (!ok) {
		snprintf(err, errlen, "%s: want one line of %d hexadecimal digits", s->access_path,
		         2 * CLI_ACCESS_KEY_LEN);
		return -EBADMSG;
	}
	return 1;
}

int cli_seal_access_store(cli_seal_t *s, const uint8_t *key, char *err, size_t errlen)
{
	char tmp[PATH_MAX + 8];
	FILE *f;
	int fd, e;

	if (key == NULL) {
		if (unlink(s->access_path) != 0 && errno != ENOENT) {
			e = -errno;
			snprintf(err, errlen, "cannot remove %s: %s", s->access_path,
			         strerror(errno));
			return e;
		}
		return 0;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", s->access_path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (f == NULL) {
		e = -errno;
		snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
		if (fd >= 0)
			close(fd);
		return e;
	}
	for (size_t i = 0; i < CLI_ACCESS_KEY_LEN; i++)
		fprintf(f, "%02x", key[i]);
	fputc('\n', f);
	if (fflush(f) != 0 || fsync(fileno(f)) != 0 || fclose(f) != 0 ||
	    rename(tmp, s->access_path) != 0) {
		e = -errno;
		snprintf(err, errlen, "cannot write %s: %s", s->access_path, strerror(errno));
		unlink(tmp);
		return e;
	}
	return 0;
}

/* The card for contacts (with the access key, if the device has one) or, public, without. */
static int card_make(cli_seal_t *s, bool public, char **json, char *err, size_t errlen)
{
	uint8_t key[CLI_ACCESS_KEY_LEN];
	int has = public ? 0 : cli_seal_access_key(s, key, err, errlen), e;

	if (has < 0)
		return has;
	e = sp_card_make_access(s->sealer, (int64_t)(sp_time_wall_ms() / 1000), 0, has ? key : NULL,
	                        json);
	OPENSSL_cleanse(key, sizeof(key));
	if (e < 0) {
		errmsg(err, errlen, "cannot make the card", e);
		return map_err(e);
	}
	return 0;
}

int cli_seal_card_json(cli_seal_t *s, char **json, char *err, size_t errlen)
{
	return card_make(s, false, json, err, errlen);
}

int cli_seal_card_write_public(cli_seal_t *s, FILE *out, char *err, size_t errlen)
{
	char *json = NULL;
	int e = card_make(s, true, &json, err, errlen);

	if (e < 0)
		return e;
	fprintf(out, "%s\n", json);
	free(json);
	return 0;
}

bool cli_card_access_key(const cli_card_t *card, uint8_t key[CLI_ACCESS_KEY_LEN])
{
	if (!card->card.has_access)
		return false;
	memcpy(key, card->card.access_key, CLI_ACCESS_KEY_LEN);
	return true;
}

int cli_card_write_file(const char *path, const char *json, char *err, size_t errlen)
{
	char tmp[PATH_MAX + 8];
	FILE *f;
	int e;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (f == NULL || fprintf(f, "%s\n", json) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0) {
		e = -errno;
		snprintf(err, errlen, "cannot write the card to %s: %s", tmp, strerror(errno));
		if (f != NULL)
			fclose(f);
		unlink(tmp);
		return e;
	}
	if (fclose(f) != 0 || rename(tmp, path) != 0) {
		e = -errno;
		snprintf(err, errlen, "cannot write the card to %s: %s", path, strerror(errno));
		unlink(tmp);
		return e;
	}
	return 0;
}

int cli_seal_card_seen(cli_seal_t *s, const cli_card_t *card, char *err, size_t errlen)
{
	int e = sp_card_seen_check(s->cards_path, &card->card, 1);
	char hex[SP_TOKEN_HEX_LEN + 1];

	if (e == 0)
		return 0;
	sp_token_hex(card->card.peer.token, hex);
	if (e == SP_SEAL_ERR_CARD_STALE) {
		snprintf(err, errlen,
		         "the card of %s is older (key epoch %u) than one used before for it (%s): "
		         "refusing to seal to an older key; get the device's current card",
		         hex, (unsigned)card->card.epoch, s->cards_path);
		return -ESTALE;
	}
	errmsg(err, errlen, s->cards_path, e);
	return map_err(e);
}

int cli_seal_card_write(cli_seal_t *s, FILE *out, char *err, size_t errlen)
{
	char *json = NULL;
	int e = card_make(s, false, &json, err, errlen);

	if (e < 0)
		return e;
	fprintf(out, "%s\n", json);
	free(json);
	return 0;
}

int cli_card_load(const char *path, cli_card_t **out, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	char *buf;
	size_t n;
	cli_card_t *c;
	int e;

	*out = NULL;
	if (f == NULL) {
		e = -errno;
		snprintf(err, errlen, "cannot read the card: %s", strerror(errno));
		return e;
	}
	buf = malloc(SP_CARD_MAX_JSON + 1);
	c = calloc(1, sizeof(*c));
	if (buf == NULL || c == NULL) {
		fclose(f);
		free(buf);
		free(c);
		return -ENOMEM;
	}
	n = fread(buf, 1, SP_CARD_MAX_JSON + 1, f);
	fclose(f);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
		n--;
	e = n > SP_CARD_MAX_JSON ? SP_SEAL_ERR_CARD_MALFORMED : sp_card_parse(buf, n, &c->card);
	free(buf);
	if (e < 0) {
		errmsg(err, errlen, "verification failed", e);
		free(c);
		return map_err(e);
	}
	*out = c;
	return 0;
}

void cli_card_token(const cli_card_t *card, uint8_t token[SEALPUSH_TOKEN_LEN])
{
	memcpy(token, card->card.peer.token, SEALPUSH_TOKEN_LEN);
}

void cli_card_free(cli_card_t *card)
{
	if (card == NULL)
		return;
	sp_card_clear(&card->card);
	free(card);
}

int cli_seal_seal(cli_seal_t *s, const cli_card_t *to, const char *suite,
                  const uint8_t msg_id[SEALPUSH_MSG_ID_LEN], uint32_t ttl, bool want_receipt,
                  const uint8_t *msg, size_t len, uint8_t **blob, size_t *blob_len, char *err,
                  size_t errlen)
{
	const struct sp_seal_peer *peer = &to->card.peer;
	struct sp_seal_peer forced;
	struct sp_seal_msg m = {.msg_id = msg_id,
	                        .sent_at_ms = sp_time_wall_ms(),
	                        .ttl = ttl,
	                        .flags = want_receipt ? SP_SEAL_F_RECEIPT_WANTED : 0,
	                        .payload = msg,
	                        .payload_len = len};
	char aerr[64];
	int e;

	if (suite != NULL) {
		uint16_t id = sp_seal_suite_by_name(suite);

		if (id == 0) {
			snprintf(err, errlen, "--suite %s: no such suite (PROTOCOL.md 13.2)",
			         suite);
			return -EINVAL;
		}
		if (!sp_seal_suite_implemented(id)) {
			snprintf(err, errlen,
			         "--suite %s: not in this build (it needs OpenSSL 3.5: pq-seal)",
			         suite);
			return -ENOTSUP;
		}
		if (sp_card_pick(&to->card, &id, 1, &forced) != 0) {
			snprintf(err, errlen, "--suite %s: the card does not list it", suite);
			return -EINVAL;
		}
		peer = &forced;
	}
	/* The receipt may come back anonymously when this device has an access key (17.6). */
	if (want_receipt && s->reply_access == 0)
		s->reply_access =
		        cli_seal_access_key(s, s->reply_key, aerr, sizeof(aerr)) == 1 ? 1 : -1;
	if (want_receipt && s->reply_access == 1) {
		m.flags |= SP_SEAL_F_REPLY_ACCESS;
		m.reply_access = s->reply_key;
	}
	e = sp_seal(s->sealer, peer, &m, blob, blob_len);
	if (e < 0) {
		errmsg(err, errlen, NULL, e);
		return map_err(e);
	}
	return 0;
}

int cli_seal_open(cli_seal_t *s, const uint8_t msg_id[SEALPUSH_MSG_ID_LEN], const uint8_t *blob,
                  size_t len, cli_opened_t *out, char *err, size_t errlen)
{
	opened_priv_t *p;
	int e;

	memset(out, 0, sizeof(*out));
	if (len == 0 || (blob[0] != SP_SEAL_VERSION && blob[0] != SP_SEAL_VERSION_EPOCH))
		return -ENOMSG; /* not an envelope: a raw message */
	if (s == NULL) {
		snprintf(err, errlen,
		         "a sealed message, and this device has no sealing key "
		         "(sealpush init)");
		return -ENOKEY;
	}
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return -ENOMEM;
	e = sp_seal_open(s->sealer, s->replay, msg_id, blob, len, sp_time_wall_ms(), &p->m);
	/* Sealed to a newer key: another process rotated; load the keys again and retry once. */
	if (e == SP_SEAL_ERR_KEY_EPOCH && reload(s, err, errlen) == 0)
		e = sp_seal_open(s->sealer, s->replay, msg_id, blob, len, sp_time_wall_ms(), &p->m);
	if (e < 0) {
		free(p);
		if (e == SP_SEAL_ERR_KEY_ERASED || e == SP_SEAL_ERR_KEY_EPOCH) {
			unsigned ep = (unsigned)((uint32_t)blob[3] << 24 | (uint32_t)blob[4] << 16 |
			                         (uint32_t)blob[5] << 8 | blob[6]);

			snprintf(err, errlen,
			         "sealed to sealing key epoch %u, %s (this device is at "
			         "epoch %u)",
			         ep,
			         e == SP_SEAL_ERR_KEY_ERASED
			                 ? "erased after its grace period: it can never be opened"
			                 : "which this device never had",
			         (unsigned)sp_sealer_epoch(s->sealer));
		} else {
			errmsg(err, errlen, NULL, e);
		}
		return map_err(e);
	}
	memcpy(out->sender, p->m.sender, SEALPUSH_TOKEN_LEN);
	out->ttl = p->m.ttl;
	out->wants_receipt = (p->m.flags & SP_SEAL_F_RECEIPT_WANTED) != 0 && p->m.has_reply;
	if (out->wants_receipt && p->m.has_reply_access) {
		out->has_reply_access = true;
		memcpy(out->reply_access, p->m.reply_access, CLI_ACCESS_KEY_LEN);
	}
	if (p->m.flags & SP_SEAL_F_IS_RECEIPT) {
		e = sp_seal_receipt_parse(&p->m, out->receipt_for, &out->receipt_status);
		if (e < 0) {
			/* Authentic but not a well-formed receipt: refused like any bad envelope.
			 */
			sp_seal_opened_clear(&p->m);
			free(p);
			errmsg(err, errlen, "receipt", e);
			return map_err(e);
		}
		out->is_receipt = true;
	}
	out->text = malloc(p->m.payload_len ? p->m.payload_len : 1);
	if (out->text == NULL) {
		sp_seal_opened_clear(&p->m);
		free(p);
		return -ENOMEM;
	}
	memcpy(out->text, p->m.payload, p->m.payload_len);
	out->text_len = p->m.payload_len;
	out->priv = p;
	return 0;
}

int cli_seal_receipt(cli_seal_t *s, const cli_opened_t *o,
                     const uint8_t receipt_msg_id[SEALPUSH_MSG_ID_LEN], uint32_t ttl,
                     uint8_t to_token[SEALPUSH_TOKEN_LEN], uint8_t **blob, size_t *blob_len,
                     char *err, size_t errlen)
{
	const opened_priv_t *p = o->priv;
	int e;

	if (s == NULL || p == NULL || !o->wants_receipt) {
		snprintf(err, errlen, "the message asks for no receipt");
		return -EINVAL;
	}
	e = sp_seal_receipt(s->sealer, &p->m, SP_SEAL_RECEIPT_RECEIVED, receipt_msg_id,
	                    sp_time_wall_ms(), ttl, blob, blob_len);
	if (e < 0) {
		errmsg(err, errlen, NULL, e);
		return map_err(e);
	}
	memcpy(to_token, p->m.reply.token, SEALPUSH_TOKEN_LEN);
	return 0;
}

const char *cli_receipt_status_name(uint8_t status, char buf[16])
{
	if (status == SP_SEAL_RECEIPT_RECEIVED)
		return "received";
	if (status == SP_SEAL_RECEIPT_READ)
		return "read";
	snprintf(buf, 16, "status-0x%02x", status);
	return buf;
}

void cli_seal_done(cli_seal_t *s, cli_opened_t *o, int processed)
{
	opened_priv_t *p;

	if (o == NULL)
		return;
	p = o->priv;
	if (p != NULL && processed && s != NULL) {
		uint64_t now = sp_time_wall_ms();

		/* Remembered before the ACK: a crash in between gets it delivered again. */
		if (sp_seal_opened_remember(s->replay, &p->m, now) == 0 && s->replay_path[0])
			(void)sp_seal_replay_save(s->replay, s->replay_path, now);
	}
	if (p != NULL) {
		sp_seal_opened_clear(&p->m);
		free(p);
	}
	free(o->text);
	o->text = NULL;
	o->priv = NULL;
	OPENSSL_cleanse(o->reply_access, sizeof(o->reply_access));
	o->has_reply_access = false;
}
