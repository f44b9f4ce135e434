/* roster: the coordinators an expert node serves.
 *
 * A node's ROUTER gives each connection a routing identity; every message a
 * coordinator sends (HELLO, HEARTBEAT, EXPERT_REQUEST, PLACE, DROP) names it
 * as present. A coordinator counts while it was heard from in the last
 * window_s seconds: an idle coordinator pings its nodes every --heartbeat-ms
 * (1 s by default), so one that stopped or lost its link drops out of the
 * count a window later. The count goes to the coordinators in HELLO_REPLY,
 * HEARTBEAT_REPLY and PLACE_REPLY, so that they can refuse placement changes
 * while more than one shares the node (docs/OPERATIONS.md), and to the log.
 * Fixed size, no allocation after roster_new; owned by the node's thread.
 */
#ifndef MOE_EXPERT_NODE_ROSTER_H
#define MOE_EXPERT_NODE_ROSTER_H

#include "proto/wire.h"

/* Identities kept at once: beyond it the one heard from longest ago is
 * forgotten (counted again when it speaks). */
enum { ROSTER_MAX = 64 };

typedef struct roster roster_t;

/* A roster counting coordinators heard from within window_s (> 0) seconds.
 * NULL with errno ENOMEM. */
roster_t *roster_new(double window_s);
void roster_destroy(roster_t **self_p);

/* from spoke at time now (timer_now()). Returns true when it was not in the
 * count before (a new coordinator, or one back after a silence). */
bool roster_touch(roster_t *self, const wire_peer_t *from, double now);

/* Coordinators heard from within the window before now. */
int roster_count(const roster_t *self, double now);

#endif /* MOE_EXPERT_NODE_ROSTER_H */
