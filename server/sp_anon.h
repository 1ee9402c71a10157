/*
 * sp_anon.h: sealed sender (PROTOCOL.md 17): the anonymous door, access-key verifiers and the
 * abuse limits that work without knowing the sender.
 *
 * Who calls what: sealpushd calls sp_anon_setup() once (config checks, the scripts' SHA-1).
 * The worker accepts connections on anon_listen as anonymous (SP_CF_ANON, sp_conn.h): their
 * TLS asks for no certificate and resumes no session (sp_tls.c), their token is all zero, and
 * the session (sp_session.c) lets them do nothing but HELLO with SEND_ONLY, SEND with one
 * access key per recipient, ACK-free PING/PONG and ERROR. Each recipient of an anonymous SEND
 * goes through sp_anon_route(): one Redis script in the recipient's slot checks the key's
 * verifier and the recipient's switch and counts the rate limits, then the node is routed
 * like any other (sp_route) or finished with ACCESS_DENIED, TOO_MANY_REQUESTS or TRY_LATER.
 * An identified connection registers its verifiers and switch with ACCESS_SET
 * (sp_anon_access_set), answered by ACCESS_STATE.
 *
 * Nothing here logs, below debug or at it, anything that links the anonymous connection to a
 * recipient; the metrics are aggregate counters (sealpush_anon_*).
 */
#ifndef SP_ANON_H
#define SP_ANON_H

#include <stdbool.h>
#include <stdint.h>

#include "sp_frame.h"
#include "sp_server.h"

/* Results of the per-recipient check (the label "result" of sealpush_anon_sends_total). */
enum sp_anon_result {
	SP_ANON_R_ACCEPTED,       /* a valid key (or a recipient open to anyone): routed */
	SP_ANON_R_DENIED,         /* wrong, old or no key, the recipient refuses, or unknown */
	SP_ANON_R_RATE_KEY,       /* over anon_key_rate for this access key */
	SP_ANON_R_RATE_RECIPIENT, /* over anon_recipient_rate for this recipient */
	SP_ANON_R_UNAVAILABLE,    /* Redis down or slow: TRY_LATER */
	SP_ANON_R_COUNT
};

/* Checks the anon_* options against the rest (an anonymous door needs Redis: the verifiers
 * live there) and prepares the scripts. Returns 0 or -1 with err set. Main thread. */
int sp_anon_setup(sp_server_t *srv, char *err, size_t errlen);
/* Whether the relay has an anonymous door (anon_listen is set). Any thread. */
bool sp_anon_enabled(const sp_server_t *srv);
/* The most recipients an anonymous SEND may have: max_recipients, lowered if needed so that
 * the access keys (32 bytes each) fit in max_frame beside max_blob. */
uint16_t sp_anon_max_recipients(const sp_server_config_t *cfg);

/* Node n of an anonymous SEND, with the access key the sender gave for its recipient
 * (SP_ACCESS_KEY_LEN bytes, copied): verified in Redis, then routed (sp_route) or finished
 * with its status. On n's owner worker w. */
void sp_anon_route(sp_worker_t *w, sp_node_t *n, const uint8_t *key);

/* w's part of sealed sender: the cache of recipients (anon_cache_entries, anon_cache_ttl;
 * sp_anoncache.h) and the timer that writes its counts to Redis (anon_flush_interval).
 * Nothing without an anonymous door. 0, or -1 with err set. w's thread or before it runs. */
int sp_anon_worker_start(sp_worker_t *w, char *err, size_t errlen);
/* Frees it (counts not yet written are lost to the limits). NULL-safe part. */
void sp_anon_worker_free(sp_worker_t *w);

/* ACCESS_SET from identified connection c (PROTOCOL.md 17.4): stores the verifiers and the
 * switch under c's token and answers ACCESS_STATE (or refuses it at once). */
void sp_anon_access_set(sp_conn_t *c, const sp_frame_t *f);

/* The Lua source of the script "check" or "set" (tests, bench), or NULL. */
const char *sp_anon_script(const char *name);

#endif
