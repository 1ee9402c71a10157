/*
 * cli_dir: the sealpush CLI's key directory commands (PROTOCOL.md 15): user init, device
 * add/remove/list, log-head, audit. Each connects once (SEND_ONLY), verifies every answer with
 * sp_dir before it believes it, and keeps the last tree head seen beside the key
 * (KEY.dirhead), checking each newer one against it. The user key is KEY.user.key (made by
 * `user init` on the user's first device), the handle KEY.user.handle, the last card this
 * device published KEY.user.card (audit compares the directory with it). The log's
 * certificate is $SEALPUSH_LOG_CERT, else log.crt beside the CA file.
 */
#ifndef CLI_DIR_H
#define CLI_DIR_H

#include <stddef.h>
#include <stdint.h>

typedef struct cli_dir_settings {
	const char *server, *ca, *cert, *key;
	double connect_timeout;
	const char *tls_groups;
} cli_dir_settings_t;

/* Whether cmd is one of the directory's commands. */
int cli_dir_is_command(const char *cmd);
/* Runs cmd with its arguments args[0..n); returns the process exit status. */
int cli_dir_main(const cli_dir_settings_t *s, const char *cmd, int n, char **args);

/*
 * send --to-user: looks handle up (verified, as device list does) and, if this device has a
 * user (KEY.user.handle), its own user too; writes each device card, but this device's own, to
 * a file in a fresh temporary folder (its path into dir), and returns the paths (*paths,
 * malloc'd). Returns 0 or an exit status (reported). Free with cli_dir_resolve_free.
 */
int cli_dir_resolve(const cli_dir_settings_t *s, const char *handle, char *dir, size_t dirlen,
                    char ***paths, size_t *n);
/* listen --users: the verified handle whose card lists token (out: NUL-terminated, or "" when
 * the directory has none); answers are cached for the process. Returns 0 or -1 (reported). */
int cli_dir_user_of(const cli_dir_settings_t *s, const uint8_t token[32], char out[65]);

/* Removes the files and the folder, frees the paths. */
void cli_dir_resolve_free(const char *dir, char **paths, size_t n);

#endif
