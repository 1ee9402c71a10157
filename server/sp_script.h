/*
 * sp_script: a Lua script called through the store's generic command (sp_store_command) by
 * its SHA1 (EVALSHA), with the source sent (EVAL) only when Redis answers NOSCRIPT: after a
 * restart, a SCRIPT FLUSH, a failover, or on a master of a Redis Cluster that has not seen the
 * script yet. The EVAL also puts the script into that Redis's cache, so the next call is an
 * EVALSHA again. This is what sp_store.c does for its own four scripts (there the SHA1s come
 * from SCRIPT LOAD on each connect), for modules whose scripts go through sp_store_command.
 *
 * No state is kept per connection: each call tries EVALSHA first and falls back to EVAL at most
 * once. The arguments are copied, so the caller's may go as soon as the call returns.
 */
#ifndef SP_SCRIPT_H
#define SP_SCRIPT_H

#include <stddef.h>

#include "sp_store.h"

typedef struct sp_script {
	const char *src; /* not copied: a static string */
	size_t len;
	char sha[41]; /* hex SHA1 of src, NUL-terminated */
} sp_script_t;

/* Sets sc for the script src (len bytes, static for as long as sc is used). 0 or -ENOMEM. */
int sp_script_init(sp_script_t *sc, const char *src, size_t len);

/*
 * Runs the script: EVALSHA sha numkeys args... (argv are the numkeys, the keys, then the
 * script's arguments: argc of them, at most SP_STORE_MAX_ARGS - 2), and on NOSCRIPT the same
 * as EVAL once. `key` picks the slot as in sp_store_command. cb gets what sp_store_command's
 * callback gets for the last of the two, exactly once, unless this returns a negative error
 * (then as sp_store_command: -EINVAL, -ENOMEM, -ESHUTDOWN, ...). sc must outlive the call's
 * answer.
 */
int sp_script_eval(sp_store_t *s, const sp_script_t *sc, const char *key, size_t key_len, int argc,
                   const char *const *argv, const size_t *argvlen, sp_store_command_cb cb,
                   void *arg);

#endif
