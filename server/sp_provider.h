/*
 * sp_provider.h: the provider door: Web Push (RFC 8030 push, RFC 8291 bodies, RFC 8292
 * VAPID) over HTTP/2 (nghttp2) and HTTP/1.1, on TLS with the relay's server certificate.
 *
 * Who calls what
 * --------------
 * Each worker that has `provider_listen` set owns one sp_provider_t (w->provider): its own
 * listening socket on the shared address (SO_REUSEPORT, like the device listener), its TLS
 * context (ALPN h2, http/1.1; no client certificate), its connections, and one async Redis
 * connection for capability look-ups. sp_worker.c calls only the five functions below.
 *
 * A request: headers and body are read under the limits (streams per connection, header
 * bytes, body bytes, request and idle timeouts); the pure checks (sp_webpush.h) and VAPID
 * (sp_vapid.h) run; the capability's record is read from Redis (HGETALL sp:wp:cap:<hash>);
 * then the body, wrapped for the device (PROTOCOL.md 14), becomes a one-recipient message
 * owned by this worker (sp_msg_new) whose node is routed like a SEND's (sp_route): live
 * delivery with the device's ACK, else the device's Redis queue with expiry and collapse.
 * The node's status comes back through msg->on_result (sp_provider_result) and becomes the
 * HTTP answer (201 Created with Location and TTL, or a refusal). The relay never decrypts.
 *
 * A request whose connection ends while its message is out is detached (msg->origin = NULL):
 * the message still completes, nobody is answered. Connections are freed only by the
 * provider's reaper event, never inside their own callbacks.
 */
#ifndef SP_PROVIDER_H
#define SP_PROVIDER_H

#include <hiredis/async.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sp_conn.h"
#include "sp_msg.h"
#include "sp_worker.h"

typedef struct sp_provider sp_provider_t;

/* w's thread, from worker_init: makes w->provider (listener, TLS context, Redis) if
 * provider_listen is set; otherwise leaves it NULL and returns 0. -1 with err set on error. */
int sp_provider_start(sp_worker_t *w, char *err, size_t errlen);
/* w's thread, every worker tick: timeouts, Redis reconnection. NULL-safe. */
void sp_provider_tick(sp_worker_t *w);
/* The TLS files were reloaded (SIGHUP): new provider connections get the new certificate and
 * key; on failure the old ones stay (logged). */
void sp_provider_reload(sp_worker_t *w);
/* w's thread, when the worker drains: stops accepting, GOAWAY to HTTP/2 connections, closes
 * idle ones. NULL-safe. */
void sp_provider_drain(sp_worker_t *w);
/* Teardown (threads stopped): frees every connection, request and the Redis context. */
void sp_provider_free(sp_worker_t *w);
/* The msg->on_result of a provider message: its one node is back with a status on its owner
 * w; answers the request (unless detached) and frees the message. */
void sp_provider_result(sp_worker_t *w, sp_node_t *n);

/* w's thread, from the session: a SUBSCRIBE frame of device connection c (PROTOCOL.md
 * 14.5): subscribe (optionally restricted to app_key), REMOVE sub_id, or LIST. Answers
 * SUBSCRIPTION when Redis has answered (or at once if it cannot be done). */
void sp_provider_subscribe(sp_conn_t *c, const sp_frame_t *f);
/* Whether w has a provider door (WELCOME then advertises SP_CAP_WEBPUSH). */
bool sp_provider_enabled(const sp_worker_t *w);

/*
 * For sp_enroll.c, which handles POST /enroll (the door routes it there once the body is in).
 * All on the request's worker. A request waiting for Redis (sp_provider_req_wait) may lose
 * its connection: the Redis callback then calls sp_provider_req_resume, which frees it and
 * returns NULL (or NULL at teardown); otherwise it returns r, ready to be answered.
 */
typedef struct preq sp_preq_t;
const uint8_t *sp_provider_req_body(sp_preq_t *r, size_t *len);
const char *sp_provider_req_method(sp_preq_t *r);
/* The peer's numeric address into host. Returns 0 or -1. */
int sp_provider_req_peer(sp_preq_t *r, char *host, size_t len);
/* The door's Redis connection if it is up, else NULL. */
redisAsyncContext *sp_provider_redis(sp_preq_t *r);
void sp_provider_req_wait(sp_preq_t *r);
sp_preq_t *sp_provider_req_resume(sp_preq_t *r);
void sp_provider_req_retry_after(sp_preq_t *r, uint32_t seconds);
/* Answers r: with ctype NULL, body is a one-line reason (text/plain, NUL-terminated); else
 * body[0, len) is copied and sent with that (static) content type. */
void sp_provider_req_answer(sp_preq_t *r, int status, const char *ctype, const char *body,
                            size_t len);

#endif
