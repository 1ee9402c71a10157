/*
 * sp_script.c: EVALSHA with a NOSCRIPT fallback to EVAL over sp_store_command (sp_script.h).
 *
 * A call keeps one block: the call's state, then the argument vectors, then a copy of the
 * arguments' bytes (for the EVAL resend; hiredis has sent the first by then, but
 * sp_store_command copies its arguments, so only ours have to stay).
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sp_script.h"

struct call {
	sp_store_t *s;
	const sp_script_t *sc;
	sp_store_command_cb cb;
	void *arg;
	const char *key;
	size_t key_len;
	int argc; /* including the two in front */
	const char **argv;
	size_t *lens;
};

int sp_script_init(sp_script_t *sc, const char *src, size_t len)
{
	uint8_t md[SHA_DIGEST_LENGTH];

	if (sc == NULL || src == NULL || SHA1((const uint8_t *)src, len, md) == NULL)
		return -ENOMEM;
	sc->src = src;
	sc->len = len;
	for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
		snprintf(sc->sha + 2 * i, 3, "%02x", md[i]);
	return 0;
}

static int call_send(struct call *c);

static void on_reply(int status, const redisReply *reply, void *arg)
{
	struct call *c = arg;

	if (status == SP_STORE_ERROR && reply != NULL && reply->type == REDIS_REPLY_ERROR &&
	    reply->len >= 8 && strncmp(reply->str, "NOSCRIPT", 8) == 0 && c->argv[0][4] == 'S') {
		c->argv[0] = "EVAL";
		c->lens[0] = 4;
		c->argv[1] = c->sc->src;
		c->lens[1] = c->sc->len;
		if (call_send(c) == 0)
			return;
		c->cb(SP_STORE_UNAVAILABLE, NULL, c->arg);
		free(c);
		return;
	}
	c->cb(status, reply, c->arg);
	free(c);
}

static int call_send(struct call *c)
{
	return sp_store_command(c->s, c->key, c->key_len, c->argc, c->argv, c->lens, on_reply, c);
}

int sp_script_eval(sp_store_t *s, const sp_script_t *sc, const char *key, size_t key_len, int argc,
                   const char *const *argv, const size_t *argvlen, sp_store_command_cb cb,
                   void *arg)
{
	size_t data = key_len, n;
	struct call *c;
	char *p;
	int r;

	if (s == NULL || sc == NULL || key == NULL || cb == NULL || argc < 1 ||
	    argc > SP_STORE_MAX_ARGS - 2 || argv == NULL || argvlen == NULL)
		return -EINVAL;
	for (int i = 0; i < argc; i++)
		data += argvlen[i];
	n = (size_t)argc + 2;
	c = malloc(sizeof(*c) + n * (sizeof(*c->argv) + sizeof(*c->lens)) + data + 1);
	if (c == NULL)
		return -ENOMEM;
	*c = (struct call){
	        .s = s, .sc = sc, .cb = cb, .arg = arg, .key_len = key_len, .argc = (int)n};
	c->argv = (const char **)(c + 1);
	c->lens = (size_t *)(c->argv + n);
	p = (char *)(c->lens + n);
	memcpy(p, key, key_len);
	c->key = p;
	p += key_len;
	c->argv[0] = "EVALSHA";
	c->lens[0] = 7;
	c->argv[1] = sc->sha;
	c->lens[1] = 40;
	for (int i = 0; i < argc; i++) {
		memcpy(p, argv[i], argvlen[i]);
		c->argv[2 + i] = p;
		c->lens[2 + i] = argvlen[i];
		p += argvlen[i];
	}
	r = call_send(c);
	if (r < 0)
		free(c);
	return r;
}
