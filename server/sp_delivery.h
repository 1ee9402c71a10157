/*
 * sp_delivery.h: delivering to one device: its in-flight window, its pending list, and the
 * drain of its offline queue.
 *
 * A node delivered to a connection is sent as DELIVER while fewer than `window` are
 * unacknowledged, else it waits in the pending list. It stays in the in-flight list until the
 * device ACKs it (DELIVERED to its sender), the connection ends (rerouted: to the device's
 * new connection or its queue), or the ack timeout passes (handled as offline, PROTOCOL.md
 * 7.2). After WELCOME a device first reads its queue, page by page (PROTOCOL.md 7.3); live
 * messages that arrive meanwhile are held back and go after the stored ones. A stored
 * message leaves Redis only when the device ACKs it.
 */
#ifndef SP_DELIVERY_H
#define SP_DELIVERY_H

#include <stddef.h>
#include <stdint.h>

#include "sp_conn.h"
#include "sp_msg.h"

/* Delivers n to r (READY, on r's worker): now, after the window opens, or after the drain. */
void sp_delivery_push(sp_conn_t *r, sp_node_t *n);
/* c's session just became READY: drops the message it could not ACK last time (resume_id, or
 * NULL), samples its queue depth, and starts reading its queue. */
void sp_delivery_start(sp_conn_t *c, const uint8_t *resume_id);
/* The device acknowledged n_ids message ids: each in-flight one is DELIVERED (stored ones
 * leave Redis), unknown ones are counted; then the window moves on. */
void sp_delivery_ack(sp_conn_t *c, const uint8_t *ids, uint32_t n_ids);
/* Something was queued for c's device: read its queue (now, or after the current page). */
void sp_delivery_kick(sp_conn_t *c);
/* Periodic work for c: ack timeouts, a queue read that failed while Redis was away. */
void sp_delivery_tick(sp_conn_t *c);
/* c is going away: what it had not acknowledged, not sent, and held back is rerouted in that
 * order (stored messages just stay in Redis). */
void sp_delivery_detach(sp_conn_t *c);

#endif
