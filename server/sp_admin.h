/*
 * sp_admin.h: the admin HTTP listener (/healthz, /readyz from the stores, /metrics), on the
 * main thread's event base.
 */
#ifndef SP_ADMIN_H
#define SP_ADMIN_H

#include <event2/event.h>
#include <stddef.h>

#include "sp_server.h"

typedef struct sp_admin sp_admin_t;
/* Binds admin_listen (if set) on base. Returns 0 with *out set (free with sp_admin_stop), or -1
 * with err set. Reads the workers' stores and metrics from the main thread. */
int sp_admin_start(sp_server_t *srv, struct event_base *base, sp_admin_t **out, char *err,
                   size_t errlen);
/* Closes the listener and frees a; NULL is a no-op. */
void sp_admin_stop(sp_admin_t *a);

#endif
