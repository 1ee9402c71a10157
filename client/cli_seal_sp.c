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
 *	                   KEY", PROTOCOL.md 13.10), else a PEM X25519 key; both load
 *	phone.replay       the replay cache of `sealpush listen` (saved after each message)
 * (a key file not ending in ".key" gets ".seal.key" / ".replay" appended instead).
 */
#include "cli_seal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sp_card.h"
#include "sp_seal.h"
#include "sp_seal_replay.h"
#include "sp_time.h"

struct cli_seal {
	struct sp_sealer *sealer;
	struct sp_seal_replay *replay;
	char replay_path[PATH_MAX];
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
		return -EBADMSG;
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
	int e;

	if (sibling(key_file, ".seal.key", path_out, pathlen) < 0) {
		snprintf(err, errlen, "the key's path is too long");
		return -ENAMETOOLONG;
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
	char path[PATH_MAX];
	struct stat st;
	cli_seal_t *s;
	int e;

	*out = NULL;
	if (sibling(key_file, ".seal.key", path, sizeof(path)) < 0)
		return -ENAMETOOLONG;
	if (stat(path, &st) < 0) {
		snprintf(err, errlen, "no sealing key %s (run sealpush init)", path);
		return -ENOENT;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	e = sp_sealer_load(cert_file, key_file, path, &s->sealer);
	if (e == 0)
		e = sp_seal_replay_new(0, &s->replay);
	if (e == 0 && sibling(key_file, ".replay", s->replay_path, sizeof(s->replay_path)) == 0) {
		e = sp_seal_replay_load(s->replay, s->replay_path, sp_time_wall_ms());
		if (e == -ENOENT)
			e = 0;
	}
	if (e < 0) {
		errmsg(err, errlen, path, e);
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
	free(s);
}

int cli_seal_card_write(cli_seal_t *s, FILE *out, char *err, size_t errlen)
{
	char *json = NULL;
	int e = sp_card_make(s->sealer, (int64_t)(sp_time_wall_ms() / 1000), &json);

	if (e < 0) {
		errmsg(err, errlen, "cannot make the card", e);
		return map_err(e);
	}
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
	if (len == 0 || blob[0] != SP_SEAL_VERSION)
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
	if (e < 0) {
		free(p);
		errmsg(err, errlen, NULL, e);
		return map_err(e);
	}
	memcpy(out->sender, p->m.sender, SEALPUSH_TOKEN_LEN);
	out->ttl = p->m.ttl;
	out->wants_receipt = (p->m.flags & SP_SEAL_F_RECEIPT_WANTED) != 0 && p->m.has_reply;
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
}
