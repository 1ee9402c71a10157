/*
 * cli_seal.c: the sealpush CLI without end-to-end sealing (see cli_seal.h). Every operation
 * that needs sealing says so; raw messages (--raw) work in full.
 */
#include "cli_seal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

static int unavailable(char *err, size_t errlen)
{
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "sealing not available in this build");
	return -ENOTSUP;
}

int cli_seal_available(void)
{
	return 0;
}

int cli_seal_init(const char *cert_file, const char *key_file, char *path_out, size_t pathlen,
                  char *err, size_t errlen)
{
	(void)cert_file;
	(void)key_file;
	(void)path_out;
	(void)pathlen;
	return unavailable(err, errlen);
}

int cli_seal_load(const char *cert_file, const char *key_file, cli_seal_t **out, char *err,
                  size_t errlen)
{
	(void)cert_file;
	(void)key_file;
	*out = NULL;
	return unavailable(err, errlen);
}

void cli_seal_free(cli_seal_t *s)
{
	(void)s;
}

int cli_seal_card_write(cli_seal_t *s, FILE *out, char *err, size_t errlen)
{
	(void)s;
	(void)out;
	return unavailable(err, errlen);
}

int cli_card_load(const char *path, cli_card_t **out, char *err, size_t errlen)
{
	(void)path;
	*out = NULL;
	return unavailable(err, errlen);
}

void cli_card_token(const cli_card_t *card, uint8_t token[SEALPUSH_TOKEN_LEN])
{
	(void)card;
	(void)token;
}

void cli_card_free(cli_card_t *card)
{
	(void)card;
}

int cli_seal_seal(cli_seal_t *s, const cli_card_t *to, const uint8_t msg_id[SEALPUSH_MSG_ID_LEN],
                  uint32_t ttl, const uint8_t *msg, size_t len, uint8_t **blob, size_t *blob_len,
                  char *err, size_t errlen)
{
	(void)s;
	(void)to;
	(void)msg_id;
	(void)ttl;
	(void)msg;
	(void)len;
	*blob = NULL;
	*blob_len = 0;
	return unavailable(err, errlen);
}

int cli_seal_open(cli_seal_t *s, const uint8_t msg_id[SEALPUSH_MSG_ID_LEN], const uint8_t *blob,
                  size_t len, cli_opened_t *out, char *err, size_t errlen)
{
	(void)s;
	(void)msg_id;
	(void)blob;
	(void)len;
	(void)out;
	(void)err;
	(void)errlen;
	return -ENOMSG; /* nothing here opens envelopes: every blob is shown as it is */
}

void cli_seal_done(cli_seal_t *s, cli_opened_t *o, int processed)
{
	(void)s;
	(void)processed;
	if (o != NULL) {
		free(o->text);
		o->text = NULL;
	}
}
