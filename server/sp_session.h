/*
 * sp_session.h: the protocol state machine of one connection (PROTOCOL.md sections 6 and 7):
 * HELLO before WELCOME, then SEND, ACK, PING, GOAWAY and ERROR. A SEND is checked against the
 * limits and becomes a message whose recipients are routed (sp_router.h).
 */
#ifndef SP_SESSION_H
#define SP_SESSION_H

#include "sp_conn.h"

/* One decoded frame from c, in c's worker. f's fields may point into the decoder's buffer:
 * valid during the call only. */
void sp_session_frame(sp_conn_t *c, sp_frame_t *f);
/* The decoder refused c's input with err (a negative SP_ERR_*): an unknown frame type after
 * WELCOME is skipped, anything else is answered with ERROR and counted, fatal ones close c. */
void sp_session_decode_error(sp_conn_t *c, int err, const sp_frame_t *f);
/* The connection is going away: unregister it and reroute what it had not acknowledged. */
void sp_session_detach(sp_conn_t *c);
/* Periodic checks for one connection (ack timeouts, the end of a graceful drain). */
void sp_session_tick(sp_conn_t *c);
/* A DRAINING connection with no SEND outstanding and nothing in flight is closed (SHUTDOWN). */
void sp_session_drain_check(sp_conn_t *c);

#endif
