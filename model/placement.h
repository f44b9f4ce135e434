/* placement: which expert node hosts which (layer, expert).
 *
 * Nodes are numbered 1..n_nodes (0 is the coordinator). Every (layer, expert)
 * of the model is hosted by at least one node; when several nodes host it
 * (replicas), they are kept in order of preference, which is the order in
 * which they were listed. A placement is immutable once made, so one object
 * may be read from anywhere.
 *
 * The default placement splits every layer's experts evenly: expert e of each
 * layer goes to node 1 + (e % n_nodes), and replica j (0 <= j < replicas) to
 * node 1 + ((e + j) % n_nodes).
 *
 * The grouped placement (placement_grouped) is for group-limited routers
 * (DeepSeek-V2/V3), which pick topk_group of n_groups groups of consecutive
 * experts before picking experts inside them: it puts each group whole on one
 * node, so that a token's experts of one layer are on at most topk_group
 * nodes. Group g (experts [g E/G, (g+1) E/G)) of every layer goes to node
 * 1 + floor(g N / G), and replica j to node 1 + ((floor(g N / G) + j) % N);
 * each node gets floor(G/N) or ceil(G/N) groups.
 *
 * A placement file is text (docs/PLACEMENT.md):
 *
 *     # comments start with '#'; blank lines are ignored
 *     nodes 3
 *     node 1 layers * experts 0-3
 *     node 2 layers * experts 4-7
 *     node 3 layers 0 experts 0,1     # replicas of experts 0 and 1 of layer 0
 *
 * The first line that is not blank or a comment is `nodes N`; every other one
 * is `node <id> layers <spec> experts <spec>`, where a spec is `*` (all) or a
 * comma list of ids and inclusive ranges with no spaces, e.g. `0-3,7`. Tokens
 * are separated by spaces or tabs. A (layer, expert) listed by two nodes has
 * replicas; the same node listing the same (layer, expert) twice is an error.
 */
#ifndef MOE_MODEL_PLACEMENT_H
#define MOE_MODEL_PLACEMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/err.h"

enum { PLACEMENT_MAX_NODES = 1024 };       /* node ids are 1..n_nodes <= this */
enum { PLACEMENT_MAX_FILE = 16 << 20 };    /* bytes of a placement file */

typedef struct placement placement_t;

/* The default split described above for a model of n_layers x n_experts on
 * n_nodes nodes, each expert on `replicas` distinct nodes. EINVAL when a
 * count is below 1, n_nodes is above PLACEMENT_MAX_NODES or replicas is above
 * n_nodes; ENOMEM. Caller destroys. */
placement_t *placement_default(int n_layers, int n_experts, int n_nodes, int replicas,
                               err_t *err);

/* The grouped placement described above for a model of n_layers x n_experts
 * whose router has n_groups expert groups, on n_nodes nodes, each group on
 * `replicas` distinct nodes. EINVAL, with a message saying why, when
 * n_groups <= 1 (the model has no groups), n_groups does not divide
 * n_experts, n_nodes > n_groups (a group is never split, so some node would
 * host nothing), or for the reasons of placement_default; ENOMEM. Caller
 * destroys. */
placement_t *placement_grouped(int n_layers, int n_experts, int n_groups, int n_nodes,
                               int replicas, err_t *err);

/* An empty placement of n_layers x n_experts on n_nodes nodes for a planner
 * to fill with placement_add and finish with placement_check (until then it
 * is not a valid placement). EINVAL for counts out of range; ENOMEM. Caller
 * destroys. */
placement_t *placement_new_empty(int n_layers, int n_experts, int n_nodes, err_t *err);

/* Adds node `node` as the least preferred host of (layer, expert). EINVAL
 * for an id out of range, EEXIST when it hosts it already. */
int placement_add(placement_t *self, int node, int layer, int expert, err_t *err);

/* 0 when every (layer, expert) has a host, else -1 with EINVAL naming the
 * first that has none. */
int placement_check(const placement_t *self, err_t *err);

/* Reads a placement file for a model of n_layers x n_experts on n_nodes nodes
 * (n_nodes 0: take the count the file gives). Caller destroys. NULL with
 * errno/err on failure; err names the file and, where one is at fault, the
 * line ("p.txt:4: unknown node 5 (nodes are 1..3)"):
 *   EINVAL  syntax error, node count other than n_nodes, unknown node, layer
 *           or expert out of range, a node listing a (layer, expert) twice,
 *           a (layer, expert) hosted by no node;
 *   EFBIG   file larger than PLACEMENT_MAX_FILE;
 *   ENOENT, EACCES, ...  the file cannot be read; ENOMEM. */
placement_t *placement_load(const char *path, int n_layers, int n_experts, int n_nodes,
                            err_t *err);

/* Same as placement_load for text already in memory (len bytes, need not be
 * NUL-terminated); origin names it in messages, as a file name would. */
placement_t *placement_parse(const char *text, size_t len, const char *origin,
                             int n_layers, int n_experts, int n_nodes, err_t *err);

/* Writes self in the file format above, one `nodes` line then as few entry
 * lines as it can (`*` and ranges where they fit), ordered so that reading it
 * back gives an equal placement, preference order included. 0, or -1 with
 * errno EIO and err when out fails. */
int placement_write(const placement_t *self, FILE *out, err_t *err);

/* Destroys *self_p and sets it to NULL; accepts NULL and a NULL *self_p. */
void placement_destroy(placement_t **self_p);

int placement_n_nodes(const placement_t *self);
int placement_n_layers(const placement_t *self);
int placement_n_experts(const placement_t *self);

/* The nodes hosting expert `expert` of layer `layer`, most preferred first:
 * returns their count (>= 1) and sets *nodes to a borrowed array of node ids,
 * valid while self lives. Returns 0 with *nodes NULL when layer or expert is
 * out of range. */
int placement_nodes_of(const placement_t *self, int layer, int expert,
                       const int **nodes);

/* True when node `node` hosts expert `expert` of layer `layer`; false for any
 * id out of range. */
bool placement_hosts(const placement_t *self, int node, int layer, int expert);

/* How many (layer, expert) pairs node `node` hosts; 0 for an unknown node. */
int placement_node_count(const placement_t *self, int node);

/* Fills layer[i], expert[i] with the pairs node `node` hosts, by layer then
 * expert; both arrays have room for placement_node_count(self, node) entries.
 * Returns that count. */
int placement_node_experts(const placement_t *self, int node, int32_t *layer,
                           int32_t *expert);

/* One node's view of a placement, the context of placement_node_hosts. */
typedef struct placement_node {
    const placement_t *placement;  /* borrowed */
    int node;                      /* 1..n_nodes */
} placement_node_t;

/* A weights_hosts_fn (engine/weights.h): ctx is a placement_node_t; true when
 * that node hosts expert `expert` of layer `layer`, so that a node loads only
 * its own experts:
 *     placement_node_t me = {p, node_id};
 *     weights_select_t sel = {.hosts = placement_node_hosts, .hosts_ctx = &me}; */
bool placement_node_hosts(void *ctx, int layer, int expert);

#endif /* MOE_MODEL_PLACEMENT_H */
