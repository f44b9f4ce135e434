/* mover: see mover.h. */
#include "coordinator/mover.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "core/timer.h"
#include "model/planner.h"

enum { DROP_WAIT_MS = 10000 }; /* a DROP's answer is awaited this long */

typedef enum phase {
    PHASE_IDLE = 0,
    PHASE_PLANNING,    /* the planner runs on its own thread */
    PHASE_LOADING,     /* PLACEs sent, waiting for every gaining node */
    PHASE_DROPPING,    /* switched; DROPs sent, waiting for their answers */
    PHASE_ROLLBACK,    /* failed; undoing what gaining nodes loaded */
} phase_t;

/* One node's pairs: (layer[i], expert[i]) for i < n, MoE layers only. */
typedef struct pairs {
    int32_t *layer, *expert;   /* (n_layers * n_experts) room */
    int n;
} pairs_t;

struct mover {
    dispatch_t *dispatch;      /* borrowed */
    peer_t **peers;            /* borrowed (n_peers); peer p is node p + 1 */
    int n_peers;               /* nodes now; per-node arrays have room for max_peers */
    int max_peers;
    config_t cfg;
    int group_size;
    FILE *log;
    placement_t *cur;          /* in use */
    placement_t *next;         /* during a move */
    pairs_t *hosted;           /* (n_peers) under cur */
    pairs_t *gain, *lose;      /* (n_peers) of the move */
    pairs_t *target;           /* (n_peers) what each node hosts after it */
    bool *rollback;            /* (n_peers) a gaining node whose load must be undone */
    bool *retired;             /* (n_peers) drained: later plans give it nothing */
    int draining;              /* the node this move drains, or -1 */
    dispatch_route_t *routes;  /* (n_layers * n_experts) scratch */
    double *rates;             /* (n_layers * n_experts) the load when planning */
    double *node_load;         /* (n_layers * n_peers) scratch */
    phase_t phase;
    double t_phase;            /* timer_now() when the phase began */
    int timeout_ms;
    bool requested;            /* the move came from mover_start (a client waits) */
    bool has_result;
    mover_result_t result;
    int auto_every_s;
    double auto_threshold;
    int auto_redundant;
    double auto_last;
    /* The plan being made (PHASE_PLANNING): the planner runs on a thread of
     * its own, so that the loop keeps stepping (58 layers x 256 experts, R =
     * 32: about half a second). It reads only plan_in's arrays, which
     * nothing else touches until it is joined. */
    pthread_t planner;
    atomic_bool planned;       /* the thread's plan_out / plan_err are set */
    planner_input_t plan_in;
    double *plan_rates;        /* (n_layers * n_experts) the load it plans from */
    int *plan_capacity;        /* (max_peers) */
    bool *plan_moe;            /* (n_layers) */
    placement_t *plan_out;
    err_t plan_err;
    double plan_min_gain;      /* of the move being planned (s_begin's) */
};

static size_t s_cells(const mover_t *self)
{
    return (size_t)self->cfg.n_layers * (size_t)self->cfg.n_experts;
}

/* A copy of p on n_nodes >= p's nodes (the extra ones hosting nothing). */
static placement_t *s_copy(const placement_t *p, int n_nodes, err_t *err)
{
    const int L = placement_n_layers(p), E = placement_n_experts(p);
    placement_t *c = placement_new_empty(L, E, n_nodes, err);
    for (int l = 0; c && l < L; l++)
        for (int e = 0; e < E; e++) {
            const int *nodes;
            const int n = placement_nodes_of(p, l, e, &nodes);
            for (int j = 0; j < n; j++)
                if (placement_add(c, nodes[j], l, e, err) < 0) {
                    placement_destroy(&c);
                    return NULL;
                }
        }
    return c;
}

/* out[p] = the MoE-layer pairs node p + 1 hosts under pl. */
static void s_hosted(const mover_t *self, const placement_t *pl, pairs_t *out)
{
    for (int p = 0; p < self->n_peers; p++) {
        out[p].n = 0;
        for (int l = 0; l < self->cfg.n_layers; l++)
            for (int e = 0; e < self->cfg.n_experts && config_layer_is_moe(&self->cfg, l); e++)
                if (placement_hosts(pl, p + 1, l, e)) {
                    out[p].layer[out[p].n] = l;
                    out[p].expert[out[p].n++] = e;
                }
    }
}

/* out[p] = pairs node p + 1 hosts under a but not under b. */
static void s_diff(const mover_t *self, const placement_t *a, const placement_t *b,
                   pairs_t *out)
{
    for (int p = 0; p < self->n_peers; p++) {
        out[p].n = 0;
        for (int l = 0; l < self->cfg.n_layers; l++)
            for (int e = 0; e < self->cfg.n_experts && config_layer_is_moe(&self->cfg, l); e++)
                if (placement_hosts(a, p + 1, l, e) && !placement_hosts(b, p + 1, l, e)) {
                    out[p].layer[out[p].n] = l;
                    out[p].expert[out[p].n++] = e;
                }
    }
}

/* Routes of pl into self->routes; EINVAL beyond DISPATCH_MAX_REPLICAS. */
static int s_routes(mover_t *self, const placement_t *pl, err_t *err)
{
    memset(self->routes, 0, s_cells(self) * sizeof *self->routes);
    for (int l = 0; l < self->cfg.n_layers; l++)
        for (int e = 0; e < self->cfg.n_experts && config_layer_is_moe(&self->cfg, l); e++) {
            const int *nodes;
            const int n = placement_nodes_of(pl, l, e, &nodes);
            if (n > DISPATCH_MAX_REPLICAS)
                return err_set(err, EINVAL, "the plan gives expert %d of layer %d %d copies; "
                               "at most %d are served", e, l, n, DISPATCH_MAX_REPLICAS);
            dispatch_route_t *r = &self->routes[(size_t)l * self->cfg.n_experts + e];
            for (int j = 0; j < n; j++)
                r->peer[r->n++] = nodes[j] - 1;
        }
    return 0;
}

/* Heaviest node / mean of the nodes hosting experts, under pl and rates. */
static double s_imbalance(mover_t *self, const placement_t *pl, const double *rates)
{
    planner_node_loads(pl, rates, self->node_load);
    double max = 0, sum = 0;
    int n = 0;
    const int N = placement_n_nodes(pl);
    for (int p = 0; p < N; p++) {
        double total = 0;
        bool hosts = false;
        for (int l = 0; l < self->cfg.n_layers; l++) {
            total += self->node_load[(size_t)l * N + p];
            for (int e = 0; e < self->cfg.n_experts && !hosts &&
                            config_layer_is_moe(&self->cfg, l); e++)
                hosts = placement_hosts(pl, p + 1, l, e);
        }
        if (!hosts)
            continue;
        n++;
        sum += total;
        max = total > max ? total : max;
    }
    return n && sum > 0 ? max / (sum / n) : 0;
}

mover_t *mover_new(dispatch_t *dispatch, peer_t **peers, int n_peers, const config_t *cfg,
                   const placement_t *initial, int group_size, FILE *log, err_t *err)
{
    mover_t *self = mem_calloc(1, sizeof *self);
    if (!self)
        goto oom;
    self->dispatch = dispatch;
    self->peers = peers;
    self->n_peers = n_peers;
    self->max_peers = dispatch_max_peers(dispatch) > n_peers ? dispatch_max_peers(dispatch)
                                                              : n_peers;
    const int mp = self->max_peers;
    self->cfg = *cfg;
    self->group_size = group_size;
    self->log = log;
    self->timeout_ms = MOVER_TIMEOUT_MS;
    const size_t cells = s_cells(self);
    self->hosted = mem_calloc((size_t)mp, sizeof(pairs_t));
    self->gain = mem_calloc((size_t)mp, sizeof(pairs_t));
    self->lose = mem_calloc((size_t)mp, sizeof(pairs_t));
    self->target = mem_calloc((size_t)mp, sizeof(pairs_t));
    self->rollback = mem_calloc((size_t)mp, sizeof(bool));
    self->retired = mem_calloc((size_t)mp, sizeof(bool));
    self->routes = mem_alloc(cells * sizeof *self->routes);
    self->rates = mem_calloc(cells, sizeof *self->rates);
    self->node_load = mem_alloc((size_t)cfg->n_layers * (size_t)mp * sizeof(double));
    self->plan_rates = mem_calloc(cells, sizeof *self->plan_rates);
    self->plan_capacity = mem_calloc((size_t)mp, sizeof *self->plan_capacity);
    self->plan_moe = mem_calloc((size_t)cfg->n_layers, sizeof *self->plan_moe);
    if (!self->hosted || !self->gain || !self->lose || !self->target || !self->rollback ||
        !self->retired || !self->routes || !self->rates || !self->node_load ||
        !self->plan_rates || !self->plan_capacity || !self->plan_moe)
        goto oom;
    pairs_t *all[4] = {self->hosted, self->gain, self->lose, self->target};
    for (int k = 0; k < 4; k++)
        for (int p = 0; p < mp; p++) {
            all[k][p].layer = mem_alloc(cells * sizeof(int32_t));
            all[k][p].expert = mem_alloc(cells * sizeof(int32_t));
            if (!all[k][p].layer || !all[k][p].expert)
                goto oom;
        }
    self->cur = s_copy(initial, n_peers, err);
    if (!self->cur)
        goto fail;
    s_hosted(self, self->cur, self->hosted);
    return self;

oom:
    err_set(err, ENOMEM, "out of memory for the mover of %d nodes", n_peers);
fail:
    mover_destroy(&self);
    return NULL;
}

void mover_destroy(mover_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    mover_t *self = *self_p;
    if (self->phase == PHASE_PLANNING) {
        pthread_join(self->planner, NULL);
        placement_destroy(&self->plan_out);
    }
    mem_free(self->plan_rates);
    mem_free(self->plan_capacity);
    mem_free(self->plan_moe);
    pairs_t *all[4] = {self->hosted, self->gain, self->lose, self->target};
    for (int k = 0; k < 4; k++)
        for (int p = 0; all[k] && p < self->max_peers; p++) {
            mem_free(all[k][p].layer);
            mem_free(all[k][p].expert);
        }
    mem_free(self->hosted);
    mem_free(self->gain);
    mem_free(self->lose);
    mem_free(self->target);
    mem_free(self->rollback);
    mem_free(self->retired);
    mem_free(self->routes);
    mem_free(self->rates);
    mem_free(self->node_load);
    placement_destroy(&self->cur);
    placement_destroy(&self->next);
    mem_free(self);
    *self_p = NULL;
}

const placement_t *mover_placement(const mover_t *self)
{
    return self->cur;
}

int mover_hosted(const mover_t *self, int p, const int32_t **layer, const int32_t **expert)
{
    *layer = self->hosted[p].layer;
    *expert = self->hosted[p].expert;
    return self->hosted[p].n;
}

void mover_set_timeout(mover_t *self, int timeout_ms)
{
    self->timeout_ms = timeout_ms > 0 ? timeout_ms : MOVER_TIMEOUT_MS;
}

int mover_timeout_ms(const mover_t *self)
{
    return self->timeout_ms;
}

void mover_set_auto(mover_t *self, int every_s, double threshold, int redundant)
{
    self->auto_every_s = every_s > 0 ? every_s : 0;
    self->auto_threshold = threshold > 1 ? threshold : 1;
    self->auto_redundant = redundant > 0 ? redundant : 0;
    self->auto_last = timer_now();
}

bool mover_busy(const mover_t *self)
{
    return self->phase != PHASE_IDLE;
}

double mover_imbalance(const mover_t *self)
{
    mover_t *m = (mover_t *)self; /* scratch only: rates and node_load */
    load_route_rates(dispatch_load(m->dispatch), timer_now(), m->rates);
    return s_imbalance(m, m->cur, m->rates);
}

/* The move ended: back to idle with the result (kept for a client). */
static void s_finish(mover_t *self, bool ok)
{
    self->result.ok = ok;
    self->phase = PHASE_IDLE;
    if (ok && self->draining >= 0)
        self->retired[self->draining] = true;
    self->has_result = self->requested;
    placement_destroy(&self->next);
    if (self->log)
        fprintf(self->log, "moe-coordinator: %s: %s\n", ok ? "rebalanced" : "rebalance failed",
                self->result.message);
}

/* Fails the move before its switch: the old placement stays; nodes that
 * loaded experts for it drop them again (once their load is over). */
static void s_fail(mover_t *self, double now, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void s_fail(mover_t *self, double now, const char *fmt, ...)
{
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    snprintf(self->result.message, sizeof self->result.message,
             "%s; the placement in use is unchanged", why);
    self->result.imbalance_after = self->result.imbalance_before;
    self->result.copies_loaded = self->result.copies_dropped = 0;
    for (int p = 0; p < self->n_peers; p++)
        self->rollback[p] = self->gain[p].n > 0 && peer_is_up(self->peers[p]) &&
                            peer_control_state(self->peers[p], NULL) != PEER_CONTROL_FAILED;
    self->phase = PHASE_ROLLBACK;
    self->t_phase = now;
}

/* Sends DROP of each node's `lose` pairs; the count sent. */
static int s_send_drops(mover_t *self)
{
    int n = 0;
    for (int p = 0; p < self->n_peers; p++)
        if (self->lose[p].n > 0 &&
            peer_control_send(self->peers[p], WIRE_DROP, self->lose[p].layer,
                              self->lose[p].expert, self->lose[p].n, NULL) == 0)
            n += self->lose[p].n;
    return n;
}

/* Between two steps: the new placement serves from the next call on. */
static int s_switch(mover_t *self, double now, err_t *err)
{
    if (s_routes(self, self->next, err) < 0 ||
        dispatch_set_routes(self->dispatch, self->routes, err) < 0)
        return -1;
    placement_destroy(&self->cur);
    self->cur = self->next;
    self->next = NULL;
    s_hosted(self, self->cur, self->hosted);
    for (int p = 0; p < self->n_peers; p++)
        peer_set_want(self->peers[p], self->hosted[p].layer, self->hosted[p].expert,
                      self->hosted[p].n);
    self->result.copies_dropped = s_send_drops(self);
    self->phase = PHASE_DROPPING;
    self->t_phase = now;
    return 0;
}

static int s_planned(mover_t *self, double now, err_t *err);

static void *s_plan_main(void *arg)
{
    mover_t *self = arg;
    self->plan_out = planner_plan(&self->plan_in, &self->plan_err);
    atomic_store(&self->planned, true);
    return NULL;
}

/* Starts planning a move (PHASE_PLANNING; s_planned goes on when the plan
 * is made); with min_gain > 0 it is applied only when it lowers the
 * imbalance by that share (automatic moves). */
/* The nodes refuse PLACE and DROP while shared too; this says so before
 * anything moves. */
int mover_may_move(const mover_t *self, err_t *err)
{
    for (int p = 0; p < self->n_peers; p++)
        if (peer_n_coordinators(self->peers[p]) > 1)
            return err_set(err, EPERM, "node %d serves %d coordinators: experts are "
                           "moved only in a cluster of one coordinator",
                           peer_node_id(self->peers[p]),
                           peer_n_coordinators(self->peers[p]));
    return 0;
}

static int s_begin(mover_t *self, int redundant, int drain, double min_gain, double now,
                   err_t *err)
{
    if (self->phase != PHASE_IDLE)
        return err_set(err, EBUSY, "a rebalance is already running");
    if (mover_may_move(self, err) < 0)
        return -1;
    const int N = self->n_peers;
    uint64_t each = 0; /* one expert's bytes, from any node that knows */
    for (int p = 0; p < N; p++)
        each = peer_expert_bytes(self->peers[p]) > each ? peer_expert_bytes(self->peers[p])
                                                        : each;
    for (int p = 0; p < N; p++) {
        const uint64_t budget = peer_memory_budget(self->peers[p]);
        int *capacity = &self->plan_capacity[p];
        *capacity = -1;
        if (!peer_is_up(self->peers[p]) || p == drain || self->retired[p])
            *capacity = 0;
        else if (budget && each)
            *capacity = budget / each > INT32_MAX ? INT32_MAX : (int)(budget / each);
    }
    for (int l = 0; l < self->cfg.n_layers; l++)
        self->plan_moe[l] = config_layer_is_moe(&self->cfg, l);
    load_route_rates(dispatch_load(self->dispatch), now, self->plan_rates);
    self->plan_in = (planner_input_t){.n_layers = self->cfg.n_layers,
                                      .n_experts = self->cfg.n_experts, .n_nodes = N,
                                      .load = self->plan_rates, .moe_layer = self->plan_moe,
                                      .capacity = self->plan_capacity,
                                      .redundant = redundant,
                                      .group_size = self->group_size};
    self->plan_err = (err_t){0};
    self->plan_out = NULL;
    self->plan_min_gain = min_gain;
    self->requested = min_gain <= 0;
    self->draining = drain;
    self->phase = PHASE_PLANNING;
    self->t_phase = now;
    atomic_store(&self->planned, false);
    if (pthread_create(&self->planner, NULL, s_plan_main, self) != 0) {
        /* No thread to spare: plan here (the loop waits for it). */
        self->phase = PHASE_IDLE;
        self->plan_out = planner_plan(&self->plan_in, &self->plan_err);
        return s_planned(self, now, err);
    }
    return 0;
}

/* The plan is made (self->plan_out, or NULL and plan_err): starts loading
 * (or switches at once when nothing is to load). -1 with err when the move
 * cannot start; the placement in use is unchanged then. */
static int s_planned(mover_t *self, double now, err_t *err)
{
    const int N = self->n_peers;
    const double min_gain = self->plan_min_gain;
    const int drain = self->draining;
    const int redundant = self->plan_in.redundant;
    placement_t *next = self->plan_out;
    self->plan_out = NULL;
    if (!next) {
        *err = self->plan_err;
        return -1;
    }
    if (s_routes(self, next, err) < 0) {
        placement_destroy(&next);
        return -1;
    }
    const double before = s_imbalance(self, self->cur, self->plan_rates);
    const double after = s_imbalance(self, next, self->plan_rates);
    if (min_gain > 0 && !(after < before * (1 - min_gain))) {
        placement_destroy(&next);
        return 0; /* nothing worth moving */
    }
    self->next = next;
    s_diff(self, next, self->cur, self->gain);
    s_diff(self, self->cur, next, self->lose);
    s_hosted(self, next, self->target);
    self->result = (mover_result_t){.imbalance_before = before, .imbalance_after = after};
    int n_gain = 0, n_lose = 0, n_nodes = 0;
    for (int p = 0; p < N; p++) {
        n_gain += self->gain[p].n;
        n_lose += self->lose[p].n;
        n_nodes += self->gain[p].n > 0;
        self->rollback[p] = false;
    }
    self->result.copies_loaded = n_gain;
    if (self->log)
        fprintf(self->log, "moe-coordinator: rebalancing (%d redundant%s): imbalance %.3f -> "
                "%.3f, %d expert copies to load on %d node(s), %d to drop\n", redundant,
                drain >= 0 ? ", draining a node" : "", before, after, n_gain, n_nodes, n_lose);
    self->phase = PHASE_LOADING;
    self->t_phase = now;
    for (int p = 0; p < N; p++) {
        err_t why = {0};
        /* PLACE carries the node's whole new set: it loads what it lacks
         * and checks its budget against the set it will keep. */
        if (self->gain[p].n > 0 &&
            peer_control_send(self->peers[p], WIRE_PLACE, self->target[p].layer,
                              self->target[p].expert, self->target[p].n, &why) < 0) {
            s_fail(self, now, "%s", why.msg);
            break;
        }
    }
    if (self->phase == PHASE_LOADING && n_gain == 0) {
        /* Only drops (or nothing): switch at once. */
        if (s_switch(self, now, err) < 0) {
            placement_destroy(&self->next);
            self->phase = PHASE_IDLE;
            return -1;
        }
    }
    return 0;
}

/* Planning: once the thread is done, the move starts, or ends failed (the
 * client that asked for it is told why; an automatic one is logged). */
static void s_tick_planning(mover_t *self, double now)
{
    if (!atomic_load(&self->planned))
        return;
    pthread_join(self->planner, NULL);
    self->phase = PHASE_IDLE;
    err_t err = {0};
    if (s_planned(self, now, &err) == 0)
        return;
    if (self->requested) {
        self->result = (mover_result_t){.ok = false,
                                        .refused = err.code == ENOSPC || err.code == EINVAL};
        snprintf(self->result.message, sizeof self->result.message, "%s", err.msg);
        self->has_result = true;
    } else if (self->log) {
        fprintf(self->log, "moe-coordinator: automatic rebalance not possible: %s\n",
                err.msg);
    }
}

int mover_start(mover_t *self, int redundant, int drain, err_t *err)
{
    if (drain >= self->n_peers)
        return err_set(err, EINVAL, "no node %d (nodes are 1..%d)", drain + 1, self->n_peers);
    return s_begin(self, redundant, drain, 0, timer_now(), err);
}

/* Phase 1: every gaining node ready -> switch; a failure -> rollback. */
static void s_tick_loading(mover_t *self, double now)
{
    bool waiting = false;
    for (int p = 0; p < self->n_peers; p++) {
        if (self->gain[p].n == 0)
            continue;
        peer_t *peer = self->peers[p];
        const char *why = "";
        const peer_control_t st = peer_control_state(peer, &why);
        if (!peer_is_up(peer)) {
            s_fail(self, now, "node %d (%s) went down while loading experts: %s",
                   peer_node_id(peer), peer_endpoint(peer), peer_last_error(peer));
            return;
        }
        if (st == PEER_CONTROL_FAILED) {
            s_fail(self, now, "node %d (%s) could not load its experts: %s",
                   peer_node_id(peer), peer_endpoint(peer), why);
            return;
        }
        waiting |= st == PEER_CONTROL_WAITING;
    }
    if (waiting && (now - self->t_phase) * 1000 > self->timeout_ms) {
        s_fail(self, now, "the nodes were not ready within %d ms", self->timeout_ms);
        return;
    }
    if (waiting)
        return;
    err_t err = {0};
    if (s_switch(self, now, &err) < 0)
        s_fail(self, now, "%s", err.msg);
}

/* Phase 3: DROPs answered (or their nodes gone, or the wait over). */
static void s_tick_dropping(mover_t *self, double now)
{
    for (int p = 0; p < self->n_peers; p++)
        if (self->lose[p].n > 0 && peer_is_up(self->peers[p]) &&
            peer_control_state(self->peers[p], NULL) == PEER_CONTROL_WAITING &&
            (now - self->t_phase) * 1000 < DROP_WAIT_MS)
            return;
    int n_nodes = 0;
    for (int p = 0; p < self->n_peers; p++)
        n_nodes += self->gain[p].n > 0 || self->lose[p].n > 0;
    snprintf(self->result.message, sizeof self->result.message,
             "%d expert copies loaded and %d dropped on %d node(s); imbalance %.3f -> %.3f",
             self->result.copies_loaded, self->result.copies_dropped, n_nodes,
             self->result.imbalance_before, self->result.imbalance_after);
    s_finish(self, true);
}

/* After a failure: each gaining node, once its load is over, drops what it
 * loaded for the move (bounded by the move timeout). */
static void s_tick_rollback(mover_t *self, double now)
{
    bool waiting = false;
    for (int p = 0; p < self->n_peers; p++) {
        if (!self->rollback[p])
            continue;
        peer_t *peer = self->peers[p];
        const peer_control_t st = peer_control_state(peer, NULL);
        if (!peer_is_up(peer) || st == PEER_CONTROL_FAILED) {
            self->rollback[p] = false;
        } else if (st == PEER_CONTROL_DONE) {
            peer_control_send(peer, WIRE_DROP, self->gain[p].layer, self->gain[p].expert,
                              self->gain[p].n, NULL);
            self->rollback[p] = false;
        } else {
            waiting = true;
        }
    }
    if (!waiting || (now - self->t_phase) * 1000 > self->timeout_ms)
        s_finish(self, false);
}

void mover_tick(mover_t *self, double now)
{
    switch (self->phase) {
    case PHASE_PLANNING: s_tick_planning(self, now); return;
    case PHASE_LOADING: s_tick_loading(self, now); return;
    case PHASE_DROPPING: s_tick_dropping(self, now); return;
    case PHASE_ROLLBACK: s_tick_rollback(self, now); return;
    case PHASE_IDLE: break;
    }
    if (self->auto_every_s == 0 || now - self->auto_last < self->auto_every_s)
        return;
    self->auto_last = now;
    load_route_rates(dispatch_load(self->dispatch), now, self->rates);
    const double imbalance = s_imbalance(self, self->cur, self->rates);
    if (imbalance <= self->auto_threshold)
        return;
    err_t err = {0};
    if (s_begin(self, self->auto_redundant, -1, MOVER_MARGIN, now, &err) < 0 && self->log)
        fprintf(self->log, "moe-coordinator: automatic rebalance (imbalance %.3f) not "
                "possible: %s\n", imbalance, err.msg);
}

int mover_add_node(mover_t *self, err_t *err)
{
    if (self->phase != PHASE_IDLE)
        return err_set(err, EBUSY, "a rebalance is running");
    if (self->n_peers >= self->max_peers)
        return err_set(err, ENOSPC, "room for %d nodes only", self->max_peers);
    placement_t *bigger = s_copy(self->cur, self->n_peers + 1, err);
    if (!bigger)
        return -1;
    placement_destroy(&self->cur);
    self->cur = bigger;
    self->retired[self->n_peers] = false;
    self->hosted[self->n_peers++].n = 0;
    return 0;
}

void mover_remove_last_node(mover_t *self)
{
    if (self->phase != PHASE_IDLE || self->n_peers <= 1 || self->hosted[self->n_peers - 1].n)
        return;
    err_t ignored = {0};
    placement_t *smaller = placement_new_empty(self->cfg.n_layers, self->cfg.n_experts,
                                               self->n_peers - 1, &ignored);
    if (!smaller)
        return;
    for (int l = 0; l < self->cfg.n_layers; l++)
        for (int e = 0; e < self->cfg.n_experts; e++) {
            const int *nodes;
            const int n = placement_nodes_of(self->cur, l, e, &nodes);
            for (int j = 0; j < n; j++)
                if (nodes[j] < self->n_peers)
                    placement_add(smaller, nodes[j], l, e, &ignored);
        }
    placement_destroy(&self->cur);
    self->cur = smaller;
    self->n_peers--;
}

bool mover_take_result(mover_t *self, mover_result_t *out)
{
    if (!self->has_result)
        return false;
    *out = self->result;
    self->has_result = false;
    return true;
}
