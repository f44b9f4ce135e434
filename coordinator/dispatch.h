/* dispatch: runs one layer's routed experts on the expert nodes.
 *
 * Implements forward_moe_fn for the coordinator: the assignments of a batch
 * are split by the node that hosts each expert (the first live replica in the
 * route's order); each node gets one EXPERT_REQUEST carrying each row it needs
 * once plus its (row, expert, weight) list; all nodes are sent to before any
 * reply is awaited; the partial-sum rows that come back are added into the
 * output. A node that is down, drops its connection, answers with an error or
 * not within the reply timeout fails the call (EHOSTUNREACH / ETIMEDOUT /
 * EPROTO) with a message naming it; forward_run then rolls the sequence back.
 * Replies to an earlier, failed call are recognised by request id and dropped.
 */
#ifndef MOE_COORDINATOR_DISPATCH_H
#define MOE_COORDINATOR_DISPATCH_H

#include <stdint.h>

#include "coordinator/peer.h"
#include "core/assign.h"
#include "core/err.h"
#include "model/config.h"

enum { DISPATCH_MAX_REPLICAS = 8 };

/* The nodes (indices into the peer array) that host one (layer, expert), in
 * order of preference. */
typedef struct dispatch_route {
    int n;
    int peer[DISPATCH_MAX_REPLICAS];
} dispatch_route_t;

/* Time spent per phase, summed over calls (seconds). */
typedef struct dispatch_stats {
    uint64_t calls;
    uint64_t bytes_sent;        /* every frame of EXPERT_REQUESTs */
    uint64_t bytes_received;    /* every frame of the EXPERT_REPLYs combined */
    double seconds_total;       /* from the first send to the last reply combined */
    double seconds_node_compute;/* per call, the slowest node's compute_seconds */
} dispatch_stats_t;

typedef struct dispatch dispatch_t;

/* routes: (n_layers * n_experts) entries, [layer * n_experts + expert], copied.
 * peers: borrowed, must outlive the dispatch. max_rows: rows per call. */
dispatch_t *dispatch_new(peer_t **peers, int n_peers, const config_t *cfg,
                         const dispatch_route_t *routes, int max_rows,
                         int reply_timeout_ms, err_t *err);
void dispatch_destroy(dispatch_t **self_p);

/* forward_moe_fn: ctx is the dispatch_t. Sends and waits. */
int dispatch_moe(void *ctx, int layer, const float *u, int n_rows,
                 const moe_assign_t *assign, int n_assign, float *out, err_t *err);

/* The same in two halves, for forward_set_moe_finish: dispatch_start splits
 * and sends (a forward_moe_fn; out is only remembered), dispatch_finish waits
 * for every reply and writes out. After a failed start there is nothing to
 * finish; a start must be followed by its finish before the next start. */
int dispatch_start(void *ctx, int layer, const float *u, int n_rows,
                   const moe_assign_t *assign, int n_assign, float *out, err_t *err);
int dispatch_finish(void *ctx, int layer, float *out, err_t *err);

/* Tokens routed to each expert so far: (n_layers * n_experts), borrowed. */
const uint64_t *dispatch_expert_tokens(const dispatch_t *self);
const dispatch_stats_t *dispatch_stats(const dispatch_t *self);

/* Reads link events of every node (marks dropped ones down). */
void dispatch_check_links(dispatch_t *self);

#endif /* MOE_COORDINATOR_DISPATCH_H */
