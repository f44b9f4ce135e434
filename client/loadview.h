/* loadview: the measured load of a cluster as moe-client placement shows it.
 *
 * Reads a client_status_t (client.h): which node hosts which experts, each
 * expert's moving-average load (rows per second) and each node's share of it
 * and busy time, and renders it as text or JSON. The imbalance is the
 * heaviest node's load over the mean load of the nodes that host experts
 * (1 when balanced; 0 when nothing was measured yet).
 */
#ifndef MOE_CLIENT_LOADVIEW_H
#define MOE_CLIENT_LOADVIEW_H

#include <stdio.h>

#include <jansson.h>

#include "client/client.h"

/* Heaviest node load / mean over nodes that host at least one expert; 0
 * when there is no load. */
double loadview_imbalance(const client_status_t *st);

/* {"load_half_life_s", "imbalance", "nodes": [{"node_id", "endpoint", "up",
 *  "experts": [[layer, expert], ...], "load", "busy_ratio", "busy_seconds"}],
 *  "expert_load": [[rows per second of each expert] per layer]}; NULL when
 * out of memory. Caller json_decref's. */
json_t *loadview_json(const client_status_t *st);

/* The same as tables on out: one line per node, then each layer's hottest
 * experts with the nodes that host them. -1 (EIO) when out fails. */
int loadview_print(const client_status_t *st, FILE *out);

#endif /* MOE_CLIENT_LOADVIEW_H */
