/*
 * sp_router.h: where each recipient node goes, and which connection receives for a token.
 *
 * sp_route() decides for one node, on the worker that holds it:
 *   - the recipient is registered on this worker (its local map, no lock): delivered here
 *     (sp_delivery_push);
 *   - registered on another worker (the registry, one shard lock): pushed to that worker's
 *     inbox, which routes it again there (at most SP_ROUTE_MAX_HOPS times, so a token that
 *     moves between workers cannot bounce a node for ever);
 *   - nowhere: to the device's queue in Redis (QUEUED once stored), or refused at once
 *     (EXPIRED for ttl 0, DEVICE_OFFLINE without a store).
 * Registration is here too: a device's new connection replaces its old one on whichever
 * worker that is (GOAWAY replaced), and the inbox's other kinds (results, queue kicks,
 * replacements) are dispatched from here.
 */
#ifndef SP_ROUTER_H
#define SP_ROUTER_H

#include "sp_conn.h"
#include "sp_msg.h"

#define SP_ROUTE_MAX_HOPS 4

/* Routes one recipient node from worker w (a SEND, a reroute, or another worker's handoff). */
void sp_route(sp_worker_t *w, sp_node_t *n);
/* The device is not connected (or did not ACK in time): n goes to its queue, or is refused. */
void sp_route_offline(sp_worker_t *w, sp_node_t *n);
/* Handles a node popped from w's inbox (any sp_node_kind). */
void sp_router_inbox(sp_worker_t *w, sp_node_t *n);
/* Registers c as its token's receiving connection (registry and w's local map). A previous
 * connection of the same token is replaced: GOAWAY replaced, on its own worker. Returns 0 or
 * -ENOMEM (nothing registered). */
int sp_router_register(sp_conn_t *c);
/* Unregisters c if it is registered (and still the token's connection); no-op otherwise. */
void sp_router_unregister(sp_conn_t *c);
/* The device of c connected to another relay (sp_cluster.h): c is unregistered here and gets
 * GOAWAY replaced; what it had not acknowledged is routed again, to the new relay. */
void sp_router_replace_remote(sp_conn_t *c);

#endif
