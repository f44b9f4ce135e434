/* planner: see planner.h. */
#include "model/planner.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

enum {
    REFINE_ROUNDS = 64,  /* bound of step 4: changes per packing */
    SWAP_ROUNDS = 4,     /* bound of step 5: rounds of trying other copies */
    SWAP_WIDTH = 4,      /* ... each trying this many donors x receivers */
};

/* One copy of an item in one layer's plan. */
typedef struct copy {
    int item;
    int index;      /* 0 .. copies of the item - 1 */
    double load;    /* the item's load / its copies */
    int node;       /* 0-based; -1 before packing */
} copy_t;

/* Scratch for one layer, sized once for every layer. */
typedef struct plan {
    const planner_input_t *in;
    int n_items, size;         /* items per layer, experts per item */
    int n_moe;                 /* MoE layers */
    double *item_load;         /* (n_items) */
    int *copies;               /* (n_items) */
    copy_t *copy;              /* (n_items * n_nodes) at most */
    int n_copies;
    double *node_load;         /* (n_nodes) this layer */
    double *total_load;        /* (n_nodes) the layers planned so far */
    int *used;                 /* (n_nodes) experts this layer */
    int *quota;                /* (n_nodes) experts this layer may take */
    uint8_t *hosts;            /* (n_items * n_nodes) item i has a copy on node n */
} plan_t;

static int s_by_load(const void *a, const void *b)
{
    const copy_t *x = a, *y = b;
    if (x->load != y->load)
        return x->load > y->load ? -1 : 1;
    if (x->item != y->item)
        return x->item < y->item ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* The budget of node n in the k-th MoE layer (in experts). */
static int s_quota(const planner_input_t *in, int n, int k, int n_moe)
{
    if (!in->capacity || in->capacity[n] < 0)
        return INT_MAX;
    const int c = in->capacity[n];
    return c / n_moe + (k < c % n_moe ? 1 : 0);
}

/* True when node n may take a copy of item i (room, no copy yet). */
static bool s_fits(const plan_t *pl, int i, int n)
{
    return pl->used[n] <= pl->quota[n] - pl->size &&
           !pl->hosts[(size_t)i * pl->in->n_nodes + n];
}

static void s_put(plan_t *pl, copy_t *c, int n)
{
    c->node = n;
    pl->node_load[n] += c->load;
    pl->used[n] += pl->size;
    pl->hosts[(size_t)c->item * pl->in->n_nodes + n] = 1;
}

static void s_take(plan_t *pl, copy_t *c)
{
    const int n = c->node;
    pl->node_load[n] -= c->load;
    pl->used[n] -= pl->size;
    pl->hosts[(size_t)c->item * pl->in->n_nodes + n] = 0;
    c->node = -1;
}

/* Step 4: one improving move or swap off the heaviest node; false when
 * there is none. */
static bool s_refine_once(plan_t *pl)
{
    const int N = pl->in->n_nodes;
    int h = 0;
    for (int n = 1; n < N; n++)
        if (pl->node_load[n] > pl->node_load[h])
            h = n;
    const double top = pl->node_load[h];
    for (int a = 0; a < pl->n_copies; a++) {
        copy_t *ca = &pl->copy[a];
        if (ca->node != h || ca->load <= 0)
            continue;
        for (int n = 0; n < N; n++) {
            if (n == h)
                continue;
            /* Move a to n. */
            if (s_fits(pl, ca->item, n) && pl->node_load[n] + ca->load < top) {
                s_take(pl, ca);
                s_put(pl, ca, n);
                return true;
            }
            /* Swap a with a lighter copy b of n. */
            for (int b = 0; b < pl->n_copies; b++) {
                copy_t *cb = &pl->copy[b];
                if (cb->node != n || cb->load >= ca->load || cb->item == ca->item ||
                    pl->hosts[(size_t)ca->item * N + n] || pl->hosts[(size_t)cb->item * N + h])
                    continue;
                if (pl->node_load[n] - cb->load + ca->load >= top)
                    continue;
                s_take(pl, ca);
                s_take(pl, cb);
                s_put(pl, ca, n);
                s_put(pl, cb, h);
                return true;
            }
        }
    }
    return false;
}

/* Steps 3 and 4 for the current copies of layer l: packs them and returns
 * the heaviest node's load, or -1 (ENOSPC) when some copy has no room. */
static double s_pack(plan_t *pl, int l, err_t *err)
{
    const int N = pl->in->n_nodes, I = pl->n_items, S = pl->size;
    memset(pl->hosts, 0, (size_t)I * N);
    for (int n = 0; n < N; n++) {
        pl->node_load[n] = 0;
        pl->used[n] = 0;
    }
    pl->n_copies = 0;
    for (int i = 0; i < I; i++)
        for (int c = 0; c < pl->copies[i]; c++)
            pl->copy[pl->n_copies++] = (copy_t){
                .item = i, .index = c, .load = pl->item_load[i] / pl->copies[i], .node = -1};
    qsort(pl->copy, (size_t)pl->n_copies, sizeof *pl->copy, s_by_load);
    for (int c = 0; c < pl->n_copies; c++) {
        copy_t *cp = &pl->copy[c];
        int best = -1;
        for (int n = 0; n < N; n++) {
            if (!s_fits(pl, cp->item, n))
                continue;
            /* Ties (unmeasured experts load 0): the least load over the
             * layers so far, then the fewest copies, then the lower id. */
            if (best < 0 || pl->node_load[n] < pl->node_load[best] ||
                (pl->node_load[n] == pl->node_load[best] &&
                 (pl->total_load[n] < pl->total_load[best] ||
                  (pl->total_load[n] == pl->total_load[best] &&
                   pl->used[n] < pl->used[best]))))
                best = n;
        }
        if (best < 0) {
            err_set(err, ENOSPC, "the plan does not fit the nodes' memory budgets: no node "
                    "has room for copy %d of expert %s%d of layer %d", cp->index + 1,
                    S > 1 ? "group " : "", cp->item, l);
            return -1;
        }
        s_put(pl, cp, best);
    }
    for (int round = 0; round < REFINE_ROUNDS; round++)
        if (!s_refine_once(pl))
            break;
    double max = 0;
    for (int n = 0; n < N; n++)
        max = pl->node_load[n] > max ? pl->node_load[n] : max;
    return max;
}

/* Step 5's candidates in a fixed order: donors (donor true) are items with
 * more than one copy, lightest per copy first; receivers are items by their
 * load per copy once they get one more, heaviest first. The one after
 * `after` (-1: the first), or -1. Ties by id. */
static int s_next(const plan_t *pl, int after, bool donor)
{
    int best = -1;
    double best_key = 0, after_key = 0;
    if (after >= 0)
        after_key = donor ? pl->item_load[after] / pl->copies[after]
                          : -pl->item_load[after] / (pl->copies[after] + 1);
    for (int i = 0; i < pl->n_items; i++) {
        if (donor && pl->copies[i] < 2)
            continue;
        const double key = donor ? pl->item_load[i] / pl->copies[i]
                                 : -pl->item_load[i] / (pl->copies[i] + 1);
        if (after >= 0 && (key < after_key || (key == after_key && i <= after)))
            continue;
        if (best < 0 || key < best_key)
            best = i, best_key = key;
    }
    return best;
}

/* Plans MoE layer l (the k-th MoE layer) into p. */
static int s_plan_layer(plan_t *pl, placement_t *p, int l, int k, err_t *err)
{
    const planner_input_t *in = pl->in;
    const int N = in->n_nodes, I = pl->n_items, S = pl->size;
    const double *load = in->load + (size_t)l * in->n_experts;
    int n_room = 0, room = 0;  /* nodes that can hold an item; items they hold */
    for (int n = 0; n < N; n++) {
        pl->quota[n] = s_quota(in, n, k, pl->n_moe);
        pl->node_load[n] = 0;
        pl->used[n] = 0;
        const int fit = pl->quota[n] / S;
        n_room += fit > 0;
        room += fit < I ? fit : I; /* a node holds an item once */
    }
    int want = I + in->redundant;
    if (room < want) {
        char nodes[256] = "";
        size_t used = 0;
        for (int n = 0; n < N && used < sizeof nodes; n++) {
            int w = snprintf(nodes + used, sizeof nodes - used, "%snode %d: %d", n ? ", " : "",
                             n + 1, pl->quota[n] == INT_MAX ? -1 : pl->quota[n]);
            used += w > 0 ? (size_t)w : 0;
        }
        return err_set(err, ENOSPC, "the plan does not fit the nodes' memory budgets: layer "
                       "%d needs %d expert copies (%d experts + %d redundant), the nodes "
                       "hold %d in that layer (%s)", l, want * S, in->n_experts,
                       in->redundant * S, room * S, nodes);
    }
    for (int i = 0; i < I; i++) {
        pl->item_load[i] = 0;
        for (int j = 0; j < S; j++)
            pl->item_load[i] += load[i * S + j];
        pl->copies[i] = 1;
    }
    /* Step 2: replication. */
    for (int r = 0; r < in->redundant; r++) {
        int best = -1;
        for (int i = 0; i < I; i++)
            if (pl->copies[i] < n_room &&
                (best < 0 || pl->item_load[i] / pl->copies[i] >
                                 pl->item_load[best] / pl->copies[best]))
                best = i;
        if (best < 0)
            break;
        pl->copies[best]++;
    }
    /* Steps 3 and 4, then 5: the greedy copies are not always the best
     * ones for the packing (measured against brute force in
     * tests/test_planner.c); try moving one redundant copy from a lightly
     * loaded replicated item to a heavy one, keeping a change that lowers
     * the heaviest node. */
    double best_max = s_pack(pl, l, err);
    if (best_max < 0)
        return -1;
    for (int round = 0; round < SWAP_ROUNDS && in->redundant > 0; round++) {
        bool improved = false;
        int tried_from = 0;
        for (int a = s_next(pl, -1, true); a >= 0 && tried_from < SWAP_WIDTH && !improved;
             a = s_next(pl, a, true), tried_from++) {
            int tried_to = 0;
            for (int b = s_next(pl, -1, false); b >= 0 && tried_to < SWAP_WIDTH && !improved;
                 b = s_next(pl, b, false), tried_to++) {
                if (b == a || pl->copies[b] >= n_room)
                    continue;
                pl->copies[a]--;
                pl->copies[b]++;
                err_t ignored = {0};
                const double m = s_pack(pl, l, &ignored);
                if (m >= 0 && m < best_max * (1 - 1e-12)) {
                    best_max = m;
                    improved = true;
                } else {
                    pl->copies[a]++;
                    pl->copies[b]--;
                }
            }
        }
        if (!improved)
            break;
    }
    if (s_pack(pl, l, err) < 0) /* the best copies again: the packing is deterministic */
        return -1;
    /* Into the placement: each expert's hosts in node order. */
    for (int i = 0; i < I; i++)
        for (int n = 0; n < N; n++) {
            if (!pl->hosts[(size_t)i * N + n])
                continue;
            for (int j = 0; j < S; j++)
                if (placement_add(p, n + 1, l, i * S + j, err) < 0)
                    return -1;
        }
    for (int n = 0; n < N; n++)
        pl->total_load[n] += pl->node_load[n];
    return 0;
}

/* Checks the input; 0 or -1 with EINVAL. */
static int s_check(const planner_input_t *in, err_t *err)
{
    if (in->n_layers < 1 || in->n_experts < 1 || in->n_nodes < 1 ||
        in->n_nodes > PLACEMENT_MAX_NODES || in->redundant < 0 || in->group_size < 0 ||
        !in->load)
        return err_set(err, EINVAL, "planner: %d layers x %d experts on %d nodes with %d "
                       "redundant copies", in->n_layers, in->n_experts, in->n_nodes,
                       in->redundant);
    if (in->group_size > 1 && in->n_experts % in->group_size != 0)
        return err_set(err, EINVAL, "planner: groups of %d do not divide %d experts",
                       in->group_size, in->n_experts);
    for (size_t i = 0; i < (size_t)in->n_layers * in->n_experts; i++)
        if (!isfinite(in->load[i]) || in->load[i] < 0)
            return err_set(err, EINVAL, "planner: the load of expert %zu of layer %zu is %g",
                           i % (size_t)in->n_experts, i / (size_t)in->n_experts, in->load[i]);
    bool any = false;
    for (int n = 0; n < in->n_nodes; n++)
        any |= !in->capacity || in->capacity[n] != 0;
    if (!any)
        return err_set(err, EINVAL, "planner: no node may hold experts (every budget is 0)");
    return 0;
}

placement_t *planner_plan(const planner_input_t *in, err_t *err)
{
    if (s_check(in, err) < 0)
        return NULL;
    const int N = in->n_nodes;
    plan_t pl = {.in = in, .size = in->group_size > 1 ? in->group_size : 1};
    pl.n_items = in->n_experts / pl.size;
    for (int l = 0; l < in->n_layers; l++)
        pl.n_moe += !in->moe_layer || in->moe_layer[l];
    const size_t max_copies = (size_t)pl.n_items * (size_t)N;
    pl.item_load = mem_alloc((size_t)pl.n_items * sizeof *pl.item_load);
    pl.copies = mem_alloc((size_t)pl.n_items * sizeof *pl.copies);
    pl.copy = mem_alloc(max_copies * sizeof *pl.copy);
    pl.node_load = mem_alloc((size_t)N * sizeof *pl.node_load);
    pl.total_load = mem_calloc((size_t)N, sizeof *pl.total_load);
    pl.used = mem_alloc((size_t)N * sizeof *pl.used);
    pl.quota = mem_alloc((size_t)N * sizeof *pl.quota);
    pl.hosts = mem_alloc(max_copies);
    placement_t *p = placement_new_empty(in->n_layers, in->n_experts, N, err);
    if (!p)
        goto fail;
    if (!pl.item_load || !pl.copies || !pl.copy || !pl.node_load || !pl.total_load ||
        !pl.used || !pl.quota || !pl.hosts) {
        err_set(err, ENOMEM, "planner: out of memory for %d experts on %d nodes",
                in->n_experts, N);
        goto fail;
    }
    int first = 0; /* the first node that may hold experts: dense layers' slots */
    while (in->capacity && in->capacity[first] == 0)
        first++;
    for (int l = 0, k = 0; l < in->n_layers; l++) {
        if (in->moe_layer && !in->moe_layer[l]) {
            for (int e = 0; e < in->n_experts; e++)
                if (placement_add(p, first + 1, l, e, err) < 0)
                    goto fail;
            continue;
        }
        if (s_plan_layer(&pl, p, l, k++, err) < 0)
            goto fail;
    }
    if (placement_check(p, err) < 0)
        goto fail;
    goto done;

fail:
    placement_destroy(&p);
done:
    mem_free(pl.item_load);
    mem_free(pl.copies);
    mem_free(pl.copy);
    mem_free(pl.node_load);
    mem_free(pl.total_load);
    mem_free(pl.used);
    mem_free(pl.quota);
    mem_free(pl.hosts);
    return p;
}

void planner_node_loads(const placement_t *p, const double *load, double *out)
{
    const int L = placement_n_layers(p), E = placement_n_experts(p), N = placement_n_nodes(p);
    for (size_t i = 0; i < (size_t)L * N; i++)
        out[i] = 0;
    for (int l = 0; l < L; l++)
        for (int e = 0; e < E; e++) {
            const int *nodes;
            const int n = placement_nodes_of(p, l, e, &nodes);
            for (int j = 0; j < n; j++)
                out[(size_t)l * N + nodes[j] - 1] += load[(size_t)l * E + e] / n;
        }
}
