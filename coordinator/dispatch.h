/* dispatch: runs one layer's routed experts on the expert nodes.
 *
 * Implements forward_moe_fn for the coordinator. Each (layer, expert) has a
 * route: the nodes hosting it (replicas), in order of preference. A call
 * gives each expert to one live replica, all of its rows together: replica
 * index `calls % live replicas`, the same index for every expert of the call,
 * so the work rotates over the replicas call by call while experts that share
 * a node keep sharing one. Each node gets one EXPERT_REQUEST carrying each row
 * it needs once plus its (row, expert, weight) list; all nodes are sent to
 * before any reply is awaited; what comes back is added into the output.
 *
 * The combine does not depend on the placement. moe-run adds a row's expert
 * outputs (weight * ffn_e(u)) onto zeros in expert order. With at most two
 * experts per token any order gives the same bits (float addition
 * commutes), so nodes reply one partial sum per row, added in node order.
 * With more (qwen, olmoe, deepseek, gpt_oss), which experts share a node
 * would change the grouping of the additions, so the nodes are asked for one
 * term per assignment (EXPERT_REQUEST per_assignment) and the dispatch adds
 * each row's terms onto zeros in expert order itself: bit for bit moe-run's
 * sum whatever node computed which expert, before and after a rebalance.
 *
 * Failover: when a node fails during the call (its connection drops, a send
 * is refused, or no reply within the reply timeout) it is marked down and the
 * work it had is sent again, within the same call, to live replicas of its
 * experts (each expert again whole to one node), so the call completes with
 * the same expert outputs. Only when some expert of the batch has no live
 * replica left does the call fail: EHOSTUNREACH, naming the expert and its
 * nodes, with the batch rows that needed a missing expert marked
 * (dispatch_row_lost) so that the caller can drop just those and run again;
 * forward_step leaves every cache as it was. A node's ERROR reply fails the
 * call (EPROTO). Replies to an earlier, failed call are recognised by request
 * id and dropped. Every wait is bounded: at most (node failures + 1) reply
 * timeouts per call.
 *
 * Between calls, dispatch_check_links reads link events and control replies
 * and lets each peer send heartbeats and rejoin HELLOs (peer.h).
 */
#ifndef MOE_COORDINATOR_DISPATCH_H
#define MOE_COORDINATOR_DISPATCH_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "coordinator/load.h"
#include "coordinator/peer.h"
#include "core/assign.h"
#include "core/err.h"
#include "model/config.h"
#include "proto/wire_tensor.h"

enum { DISPATCH_MAX_REPLICAS = 8 };
#define DISPATCH_LOAD_HALF_LIFE_S 60.0 /* default half-life of the load measurement */

/* The nodes (indices into the peer array) that host one (layer, expert), in
 * order of preference. */
typedef struct dispatch_route {
    int n;
    int peer[DISPATCH_MAX_REPLICAS];
} dispatch_route_t;

/* Time spent per phase, summed over calls (seconds). */
typedef struct dispatch_stats {
    uint64_t calls;
    uint64_t rows;              /* batch rows over the calls: tokens x MoE layers */
    uint64_t bytes_sent;        /* every frame of EXPERT_REQUESTs */
    uint64_t bytes_received;    /* every frame of the EXPERT_REPLYs combined */
    double seconds_total;       /* wall time with at least one call in flight, from
                                   its start to the finish of the last (two calls in
                                   flight together count once) */
    double seconds_node_compute;/* per call, the slowest node's compute_seconds */
    uint64_t failovers;         /* requests whose work was sent again elsewhere */
} dispatch_stats_t;

/* One node's share of the counters. */
typedef struct dispatch_node_stats {
    uint64_t bytes_sent;
    uint64_t bytes_received;
    uint64_t failovers;         /* requests to it whose work was sent again elsewhere */
} dispatch_node_stats_t;

typedef struct dispatch dispatch_t;

/* routes: (n_layers * n_experts) entries, [layer * n_experts + expert], copied.
 * peers: borrowed, must outlive the dispatch; the first n_peers are the
 * cluster, and the array has room for max_peers (nodes that join later:
 * dispatch_add_peer). max_rows: rows per call. */
dispatch_t *dispatch_new(peer_t **peers, int n_peers, int max_peers, const config_t *cfg,
                         const dispatch_route_t *routes, int max_rows,
                         int reply_timeout_ms, err_t *err);
void dispatch_destroy(dispatch_t **self_p);

/* One call in two halves, for forward_set_moe_async (forward.h): dispatch_start
 * splits and sends the rows of micro-batch mb (0 or 1) and returns at once,
 * dispatch_finish waits for every reply and writes out. Up to
 * DISPATCH_MAX_CALLS calls, one per micro-batch, are in flight together: the
 * forward pass computes one micro-batch while the nodes run the other's
 * experts (ping-pong). Their replies are told apart by request id and kept as
 * they arrive, whichever finish is waiting; each call's failover re-sends its
 * own work, and a failure of the call not being waited for is kept for its
 * own finish.
 *   u: (n_rows, hidden), assign rows in [0, n_rows), out: (n_rows, hidden);
 *   out is zeroed at start and the replies are added at finish; u and assign
 *   must stay unchanged until the finish, which may send them again.
 *   row0: the call's first row in the step, for dispatch_row_lost; the rows
 *   [row0, row0 + n_rows) of calls in flight together must not overlap, and
 *   row0 + n_rows <= max_rows (E2BIG).
 * After a failed start there is nothing to finish; a start must be followed
 * by its finish before the next start of the same mb. */
enum { DISPATCH_MAX_CALLS = 2 };
int dispatch_start(void *ctx, int mb, int layer, const float *u, int row0, int n_rows,
                   const moe_assign_t *assign, int n_assign, float *out, err_t *err);
int dispatch_finish(void *ctx, int mb, int layer, float *out, err_t *err);
/* Both halves of micro-batch 0 at once: a forward_moe_fn whose ctx is the
 * dispatch_t (the whole step as one call). */
int dispatch_run(void *ctx, int layer, const float *u, int n_rows,
                 const moe_assign_t *assign, int n_assign, float *out, err_t *err);

/* Tokens routed to each expert so far: (n_layers * n_experts), borrowed. */
const uint64_t *dispatch_expert_tokens(const dispatch_t *self);
const dispatch_stats_t *dispatch_stats(const dispatch_t *self);
/* (max_peers), in peer order. */
const dispatch_node_stats_t *dispatch_node_stats(const dispatch_t *self);
/* Rows each node served: [(layer * n_experts + expert) * max_peers + peer]. */
const uint64_t *dispatch_node_tokens(const dispatch_t *self);

/* The measured load (load.h): rows routed per (layer, expert) and each
 * node's compute seconds, counted by every completed call; borrowed. Its
 * node indices are peer indices. */
const load_t *dispatch_load(const dispatch_t *self);

/* Starts the load measurement again with half-life half_life_s (> 0; the
 * default is DISPATCH_LOAD_HALF_LIFE_S). 0, or -1 with EINVAL/ENOMEM and
 * the old measurement kept. */
int dispatch_set_load_half_life(dispatch_t *self, double half_life_s, err_t *err);

/* What each node carries under the current routes, given a rate per route
 * (rate[layer * n_experts + expert]): the sum over the routes it hosts of
 * the route's rate divided by its number of replicas (the work rotates
 * evenly over them). Into node_load[0..n_peers). */
void dispatch_node_load(const dispatch_t *self, const double *rate, double *node_load);

/* Replaces the routes (same layout as dispatch_new's; copied) between two
 * calls: the next call places work by them. EBUSY during a call. */
int dispatch_set_routes(dispatch_t *self, const dispatch_route_t *routes, err_t *err);

/* The format the rows travel in to the nodes and back (--wire; the default
 * is f32, exact). Set it before the first call. */
void dispatch_set_wire(dispatch_t *self, wire_tensor_format_t wire);
wire_tensor_format_t dispatch_wire(const dispatch_t *self);

/* The data-plane limits of a coordinator's links for a model served
 * max_rows rows per call: a reply may carry one row per assignment. */
wire_limits_t dispatch_limits(const config_t *cfg, int max_rows);

/* Between calls: peers[n_peers] (set by the caller) joins the cluster; it
 * takes work once routes name it. ENOSPC beyond max_peers, EBUSY in a call. */
int dispatch_add_peer(dispatch_t *self, err_t *err);
/* Undoes the last dispatch_add_peer (a node that never joined). */
void dispatch_remove_last_peer(dispatch_t *self);
int dispatch_n_peers(const dispatch_t *self);
int dispatch_max_peers(const dispatch_t *self);

/* Reads link events of every node (marks dropped ones down), reads replies
 * to heartbeats and rejoin HELLOs, and sends the heartbeats and HELLOs that
 * are due. Call it between steps, at least every heartbeat period. */
void dispatch_check_links(dispatch_t *self);

/* Heartbeats and rejoin for every node (peer_set_health). */
void dispatch_set_health(dispatch_t *self, int heartbeat_ms, int misses, FILE *log);

/* After a call failed with EHOSTUNREACH: true when batch row `row` needed an
 * expert that no live node hosts (ctx is the dispatch_t; a sched_row_lost_fn). */
bool dispatch_row_lost(void *ctx, int row);

#endif /* MOE_COORDINATOR_DISPATCH_H */
