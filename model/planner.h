/* planner: a placement from measured loads, in the manner of DeepSeek's EPLB.
 *
 * Input: each (layer, expert)'s load (rows per second; any non-negative
 * unit), the nodes and how many expert copies each may hold (its memory
 * budget over one expert's bytes), a number R of redundant copies per layer,
 * and optionally a group size for group-limited routers. Each MoE layer is
 * planned on its own, because each layer's call waits for its slowest node:
 *
 *   1. items: the experts, or with group_size > 1 the groups of group_size
 *      consecutive experts, which then always move and replicate whole (a
 *      token's experts stay on at most topk_group nodes);
 *   2. replication: R times, the item with the highest load per copy gets
 *      one more copy (ties: the lower id), never more copies than nodes that
 *      can hold it; a copy takes load / copies (the coordinator's dispatch
 *      rotates an expert's calls evenly over its copies);
 *   3. packing: copies by load per copy, heaviest first, each to the node
 *      with the least load in this layer that has room and no copy of the
 *      item yet (ties: the least load over the layers planned so far, the
 *      fewest copies in this layer, then the lower node id): longest-processing-time first, whose heaviest
 *      node is at most the mean plus one copy's load when nothing else
 *      constrains it, and at most 4/3 of the optimum;
 *   4. refinement: while moving one copy off the heaviest node, or swapping
 *      it with a lighter copy of another node, lowers that node below its
 *      load without lifting the other to it, do the first such change (in
 *      node, then copy order); bounded in count;
 *   5. other copies: the greedy choice of step 2 is not always the best for
 *      the packing, so a few alternatives are tried (one redundant copy moved
 *      from a lightly loaded replicated item to a heavy one, steps 3-4
 *      again), keeping one that lowers the heaviest node; bounded (4 rounds
 *      of 4 x 4 tries).
 *
 * Memory: a node's budget (capacity, in expert copies) is spread over the MoE
 * layers, floor(capacity / L) each and one more for the first
 * (capacity mod L) layers, so the plan never exceeds it. Dense layers (no
 * routed experts: nothing to load) get their slots on the first node that
 * may hold experts, outside the budget; placements list every layer.
 * Everything is deterministic: the same input gives the same placement.
 */
#ifndef MOE_MODEL_PLANNER_H
#define MOE_MODEL_PLANNER_H

#include <stdbool.h>

#include "core/err.h"
#include "model/placement.h"

typedef struct planner_input {
    int n_layers;
    int n_experts;             /* routed experts per layer */
    int n_nodes;               /* node ids 1..n_nodes */
    const double *load;        /* (n_layers * n_experts): [layer * n_experts + expert],
                                  finite, >= 0 */
    const bool *moe_layer;     /* (n_layers): false for a dense layer; NULL: all MoE */
    const int *capacity;       /* (n_nodes): most expert copies node i + 1 may hold in
                                  all layers; < 0 no limit, 0 none (it is being
                                  drained); NULL: no limits */
    int redundant;             /* R >= 0: copies beyond one per item, per layer */
    int group_size;            /* > 1: groups of this many consecutive experts stay
                                  whole (must divide n_experts); 0 or 1: experts */
} planner_input_t;

/* Plans a placement as described above. Caller destroys. NULL with errno/err:
 *   EINVAL  a count out of range, a load negative or not finite, a group
 *           size that does not divide n_experts, no node that may hold
 *           experts;
 *   ENOSPC  the budgets cannot hold the plan: the message says how many
 *           copies a layer needs and how many the nodes hold;
 *   ENOMEM. */
placement_t *planner_plan(const planner_input_t *in, err_t *err);

/* The load each node carries in each layer under p, given a load per
 * (layer, expert) split evenly over its hosts: out[layer * n_nodes + node - 1]
 * for layer < n_layers, node 1..n_nodes of p. */
void planner_node_loads(const placement_t *p, const double *load, double *out);

#endif /* MOE_MODEL_PLANNER_H */
