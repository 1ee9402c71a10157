/*
 * sp_cluster.h: several relays, one service (server/CLUSTER.md is the design and says why).
 *
 * With `cluster` on, relays that share one Redis (or one Redis Cluster) behave as one relay:
 * a device connects to any node and a sender on any node reaches it. The nodes share nothing
 * but Redis:
 *   - a lease per node (its incarnation, 8 random bytes drawn at start-up, in the hash
 *     sp:nodes, rewritten every cluster_lease / 3 by worker 0 and read as often by every
 *     worker into its own table of live incarnations);
 *   - presence: sp:p:{T} names the receiving connection of device T (incarnation, worker,
 *     connection reference), written with SET ... GET when its session becomes ready (the
 *     old value names the connection it replaces, which gets GOAWAY replaced through its
 *     node's inbox) and deleted on close only if it still names this connection. An entry
 *     naming an incarnation without a live lease counts as absent: no timer per device;
 *   - an inbox per worker, the stream sp:in:{<incarnation>.<worker>}, read by that worker with
 *     XREAD BLOCK on a store of its own (a blocking read would stall the store's pipeline).
 *     Records written to one inbox in one loop turn travel in one XADD entry.
 *
 * A node the router cannot place on this relay (sp_route: not registered on any worker) comes
 * here: its presence is read; naming another live node, it is forwarded there (FORWARD) and
 * kept in custody until that node answers (RESULT, with the status the sender then hears:
 * DELIVERED after the device's ACK, or QUEUED when the device had gone), or until its lease
 * ends, the XADD fails, or ack_timeout + cluster_lease pass: then it takes the offline path
 * here. A presence read naming another relay is reused by the same worker for a second
 * (PCACHE_MS) and dropped as soon as an answer says the device was not there (any status
 * but DELIVERED) or no answer came; a stale entry costs a message the detour through the
 * old relay's queue, never the message. Otherwise it takes the offline path at once, and once it is
 * stored the presence is read again, so that a device which connected elsewhere meanwhile is told
 * to read its queue (KICK). A forwarded node is never forwarded again: on the receiving node it is
 * delivered or stored.
 *
 * Everything here runs on the worker's own thread; sp_cluster_t is per worker.
 */
#ifndef SP_CLUSTER_H
#define SP_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "sp_conn.h"
#include "sp_msg.h"

typedef struct sp_cluster sp_cluster_t;

#define SP_CLUSTER_INC_HEX   16    /* an incarnation in hex */
#define SP_CLUSTER_INBOX_MAX 10000 /* XADD MAXLEN ~: entries an inbox keeps at most */

/* Starts w's part of the cluster (w->store must exist): its inbox reader (a second store on
 * w's base), the lease and table timer, the custody table. Returns 0, or -1 with err set. */
int sp_cluster_start(sp_worker_t *w, char *err, size_t errlen);
/* Frees w's part: nodes in custody take the offline path's answer TRY_LATER (teardown). */
void sp_cluster_free(sp_worker_t *w);

/* Node n is not registered on this relay: forward it to the node its device is on, or store
 * it (see the top). */
void sp_cluster_route(sp_worker_t *w, sp_node_t *n);
/* Something was stored for token and its device is not on this relay: tell its node, if any. */
void sp_cluster_queued(sp_worker_t *w, const uint8_t token[32]);
/* c's session is ready (registered): writes its presence; a connection on another node that
 * held it is replaced. */
void sp_cluster_ready(sp_conn_t *c);
/* c (registered) is going away: its presence goes too, if it still names c. */
void sp_cluster_gone(sp_conn_t *c);
/* Writes c's presence again if it still names c (the daily renewal; with recheck, after a
 * lease lapse, c also reads its queue); a live connection elsewhere holding it replaces c. */
void sp_cluster_renew(sp_conn_t *c, bool recheck);
/* A message forwarded here (msg->fwd) got its status: it goes back to the node it came from. */
void sp_cluster_result(sp_worker_t *w, const sp_msg_t *msg, uint8_t status);
/* End of the loop turn: the records gathered for each inbox go, one XADD per inbox. */
void sp_cluster_flush(sp_worker_t *w);
/* Worker 0, after a reload: the CRL file goes to the stream sp:events, from which every other
 * relay installs it (sp_tls_install_crl: only a CRL signed by the client CA and newer than its
 * own) and closes the connections it revokes. Worker 0 of each relay reads the stream five
 * times a second. */
void sp_cluster_publish_crl(sp_worker_t *w);
/* w starts draining (SIGTERM): worker 0 withdraws the relay's lease, so the others stop
 * forwarding here; past shutdown_grace the inbox is no longer read, so nothing new arrives. */
void sp_cluster_drain(sp_worker_t *w);
/* w's tick: custody deadlines. */
void sp_cluster_tick(sp_worker_t *w);

/* Pure helpers, for the tests. A presence value is "<incarnation hex>:<worker>:<connref hex>". */
int sp_cluster_presence_parse(const char *s, size_t len, uint64_t *inc, unsigned *worker,
                              uint64_t *ref);
size_t sp_cluster_presence_format(char *out, size_t outlen, uint64_t inc, unsigned worker,
                                  uint64_t ref);

#endif
