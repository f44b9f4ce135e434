/* dispatch: see dispatch.h. */
#include "coordinator/dispatch.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "core/mem.h"
#include "core/timer.h"

/* One call, a micro-batch's layer, from dispatch_start to dispatch_finish.
 * Two may be in flight (DISPATCH_MAX_CALLS); their rows are disjoint rows of
 * one step, so the per-node partial sums share one buffer indexed by step row. */
typedef struct call {
    bool active;
    int layer;
    double t_start;
    const float *u;             /* (n_rows, hidden) the caller's, alive until finish */
    const moe_assign_t *assign; /* (n_assign) the caller's, alive until finish */
    int n_assign;
    int n_rows;
    int row0;                   /* the call's first row in the step */
    float *out;                 /* (n_rows, hidden) zeroed at start, summed at finish */
    double max_compute;         /* the slowest node's compute seconds */
    int failed;                 /* errno of a failure met while the other call waited;
                                   0: none (finish then returns it) */
    err_t fail_err;             /* that failure's text */
    int *target;                /* (max_assign) peer of each assignment, -1: none */
    float *terms;               /* exact only: (max_assign, hidden) term of each assignment */
    int *touched_rows;          /* (max_peers, max_rows) step rows each node's partial holds */
    int *n_touched;             /* (max_peers) */
} call_t;

/* One EXPERT_REQUEST in flight: what came from where, to combine its reply or
 * to re-send its work when its node fails. */
typedef struct send {
    int peer;                  /* index into peers; -1: the record is free */
    call_t *call;              /* the call it serves */
    uint64_t request_id;
    double deadline;           /* timer_now() after which the node is given up */
    int n_rows;
    int *global_of;            /* (max_rows) row in the message -> batch row */
    int n_items;
    int *items;                /* (max_assign) the call's assignments it carries */
} send_t;

struct dispatch {
    peer_t **peers;            /* borrowed (n_peers, room for max_peers) */
    int n_peers;               /* nodes in the cluster now */
    int max_peers;             /* per-node arrays are sized for this many */
    int n_layers, n_experts, hidden, max_rows, max_assign;
    int reply_timeout_ms;
    dispatch_route_t *routes;  /* (n_layers * n_experts) */
    send_t *sends;             /* (max_sends) */
    int max_sends;
    int *pending;              /* (max_assign) assignments still to place */
    int *order;                /* (max_assign) pending, grouped by peer */
    int *count;                /* (max_peers + 1) */
    int *local_of;             /* (max_rows) batch row -> message row, or -1 */
    float *rows;               /* (max_rows, hidden) a message's rows */
    moe_assign_t *msg_assign;  /* (max_assign) a message's assignments */
    uint8_t *row_lost;         /* (max_rows) step rows the failed calls could not serve */
    /* Per-assignment terms (more than two experts per token, dispatch.h): a
     * call's assignments grouped by row, each row's in expert order. */
    bool exact;
    int *by_expert;            /* (max_assign) */
    int *by_row;               /* (max_assign) */
    int *ecount;               /* (n_experts + 1) */
    int *rcount;               /* (max_rows + 1) */
    /* Replies are kept per node and added into out in node order when the
     * call completes, not as they arrive: float addition is not associative,
     * so arrival order would make the last bits of a row that several nodes
     * serve vary from run to run. */
    float *partial;            /* (max_peers, max_rows, hidden) by step row */
    uint8_t *touched;          /* (max_peers, max_rows) partial row holds a sum */
    uint64_t *expert_tokens;   /* (n_layers * n_experts) */
    uint64_t *node_tokens;     /* (n_layers * n_experts * max_peers) rows each node served */
    dispatch_node_stats_t *node_stats; /* (max_peers) */
    load_t *load;              /* rows per route, compute seconds per peer */
    uint64_t next_request_id;
    uint64_t rotation;         /* calls started: which replica each expert uses */
    FILE *log;                 /* one line per failover; NULL: quiet */
    wire_inbox_t *inbox;
    wire_tensor_format_t wire; /* the rows' format on the wire (--wire) */
    zmq_pollitem_t *items;     /* (2 * max_peers): data socket, link monitor */
    dispatch_stats_t stats;
    call_t calls[DISPATCH_MAX_CALLS]; /* by micro-batch */
    int n_active;              /* calls started and not finished */
    double busy_since;         /* when n_active last left 0 */
};

dispatch_t *dispatch_new(peer_t **peers, int n_peers, int max_peers, const config_t *cfg,
                         const dispatch_route_t *routes, int max_rows,
                         int reply_timeout_ms, err_t *err)
{
    dispatch_t *self = mem_calloc(1, sizeof *self);
    if (!self)
        goto oom;
    self->peers = peers;
    self->n_peers = n_peers;
    self->max_peers = max_peers > n_peers ? max_peers : n_peers;
    const int mp = self->max_peers;
    self->n_layers = cfg->n_layers;
    self->n_experts = cfg->n_experts;
    self->hidden = cfg->hidden_size;
    self->max_rows = max_rows;
    self->max_assign = max_rows * cfg->n_experts_per_tok;
    self->reply_timeout_ms = reply_timeout_ms;
    self->exact = cfg->n_experts_per_tok > 2;
    /* Per call one send per node, and room to re-send after a few failures. */
    self->max_sends = 4 * mp * DISPATCH_MAX_CALLS;
    const size_t n_routes = (size_t)cfg->n_layers * cfg->n_experts;
    const size_t ma = (size_t)self->max_assign;
    self->routes = mem_alloc(n_routes * sizeof *self->routes);
    self->expert_tokens = mem_calloc(n_routes, sizeof *self->expert_tokens);
    self->node_tokens = mem_calloc(n_routes * (size_t)mp, sizeof *self->node_tokens);
    self->node_stats = mem_calloc((size_t)mp, sizeof *self->node_stats);
    self->sends = mem_calloc((size_t)self->max_sends, sizeof *self->sends);
    self->items = mem_calloc(2 * (size_t)mp, sizeof *self->items);
    self->pending = mem_alloc(ma * sizeof(int));
    self->order = mem_alloc(ma * sizeof(int));
    self->count = mem_alloc(((size_t)mp + 1) * sizeof(int));
    self->local_of = mem_alloc((size_t)max_rows * sizeof(int));
    self->rows = mem_alloc_aligned((size_t)max_rows * self->hidden * sizeof(float));
    self->msg_assign = mem_alloc(ma * sizeof(moe_assign_t));
    self->row_lost = mem_calloc((size_t)max_rows, 1);
    const size_t cells = (size_t)mp * (size_t)max_rows;
    self->partial = mem_alloc_aligned(cells * (size_t)self->hidden * sizeof(float));
    self->touched = mem_calloc(cells, 1);
    for (int c = 0; c < DISPATCH_MAX_CALLS; c++) {
        call_t *call = &self->calls[c];
        call->target = mem_alloc(ma * sizeof(int));
        call->touched_rows = mem_alloc(cells * sizeof(int));
        call->n_touched = mem_calloc((size_t)mp, sizeof(int));
        if (self->exact)
            call->terms = mem_alloc_aligned(ma * (size_t)self->hidden * sizeof(float));
        if (!call->target || !call->touched_rows || !call->n_touched ||
            (self->exact && !call->terms))
            goto oom;
    }
    if (self->exact) {
        self->by_expert = mem_alloc(ma * sizeof(int));
        self->by_row = mem_alloc(ma * sizeof(int));
        self->ecount = mem_alloc(((size_t)cfg->n_experts + 1) * sizeof(int));
        self->rcount = mem_alloc(((size_t)max_rows + 1) * sizeof(int));
        if (!self->by_expert || !self->by_row || !self->ecount ||
            !self->rcount)
            goto oom;
    }
    if (!self->routes || !self->expert_tokens || !self->sends || !self->items ||
        !self->pending || !self->order || !self->count || !self->local_of ||
        !self->rows || !self->msg_assign || !self->row_lost || !self->partial ||
        !self->touched || !self->node_tokens ||
        !self->node_stats)
        goto oom;
    memcpy(self->routes, routes, n_routes * sizeof *routes);
    for (int r = 0; r < max_rows; r++)
        self->local_of[r] = -1;
    for (int i = 0; i < self->max_sends; i++) {
        send_t *s = &self->sends[i];
        s->peer = -1;
        s->global_of = mem_alloc((size_t)max_rows * sizeof(int));
        s->items = mem_alloc(ma * sizeof(int));
        if (!s->global_of || !s->items)
            goto oom;
    }
    self->load = load_new((int)n_routes, mp, DISPATCH_LOAD_HALF_LIFE_S, timer_now(),
                          err);
    if (!self->load)
        goto fail;
    wire_limits_t lim = dispatch_limits(cfg, max_rows);
    self->inbox = wire_inbox_new(&lim, err);
    if (!self->inbox)
        goto fail;
    return self;

oom:
    err_set(err, ENOMEM, "out of memory for expert dispatch (%d nodes, %d rows)", n_peers,
            max_rows);
fail:
    dispatch_destroy(&self);
    return NULL;
}

void dispatch_destroy(dispatch_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dispatch_t *self = *self_p;
    if (self->sends)
        for (int i = 0; i < self->max_sends; i++) {
            mem_free(self->sends[i].global_of);
            mem_free(self->sends[i].items);
        }
    wire_inbox_destroy(&self->inbox);
    load_destroy(&self->load);
    for (int c = 0; c < DISPATCH_MAX_CALLS; c++) {
        mem_free(self->calls[c].target);
        mem_free(self->calls[c].terms);
        mem_free(self->calls[c].touched_rows);
        mem_free(self->calls[c].n_touched);
    }
    mem_free(self->by_expert);
    mem_free(self->by_row);
    mem_free(self->ecount);
    mem_free(self->rcount);
    mem_free(self->partial);
    mem_free(self->touched);
    mem_free(self->sends);
    mem_free(self->items);
    mem_free(self->pending);
    mem_free(self->order);
    mem_free(self->count);
    mem_free(self->local_of);
    mem_free(self->rows);
    mem_free(self->msg_assign);
    mem_free(self->row_lost);
    mem_free(self->routes);
    mem_free(self->expert_tokens);
    mem_free(self->node_tokens);
    mem_free(self->node_stats);
    mem_free(self);
    *self_p = NULL;
}

void dispatch_set_health(dispatch_t *self, int heartbeat_ms, int misses, FILE *log)
{
    for (int p = 0; p < self->n_peers; p++)
        peer_set_health(self->peers[p], heartbeat_ms, misses, log);
    self->log = log;
}

/* Reads every message waiting on peer p's socket outside a call: replies to
 * heartbeats and rejoin HELLOs, late replies of earlier calls (dropped). */
static void s_drain(dispatch_t *self, int p, double now)
{
    peer_t *peer = self->peers[p];
    for (int n = 0; n < 64; n++) { /* bounded: the step must go on */
        wire_data_t msg;
        wire_data_error_t code;
        if (wire_data_recv(self->inbox, peer_socket(peer), false, NULL, &msg, &code,
                           NULL) < 0) {
            if (errno == EAGAIN || errno == EINTR || errno == ETERM)
                return;
            continue; /* an invalid message: consumed, nothing to do */
        }
        peer_handle(peer, &msg, now);
    }
}

void dispatch_check_links(dispatch_t *self)
{
    const double now = timer_now();
    for (int p = 0; p < self->n_peers; p++) {
        peer_check_link(self->peers[p]);
        /* In a call the replies are the gather's to read: a drain would drop
         * them as late. */
        if (self->n_active == 0)
            s_drain(self, p, now);
        peer_tick(self->peers[p], now);
    }
}

/* The live node that hosts (layer, expert) in this call, or -1. Every expert
 * of a call uses the same replica index (rotating per call), so that experts
 * that share a node in the placement's first column share one in every
 * column, and all of an expert's rows go to one node: an expert's output for
 * a row then does not depend on which replica computed it. */
static int s_pick(const dispatch_t *self, int layer, int expert)
{
    const dispatch_route_t *r = &self->routes[(size_t)layer * self->n_experts + expert];
    int live[DISPATCH_MAX_REPLICAS], n_live = 0;
    for (int i = 0; i < r->n; i++)
        if (peer_is_up(self->peers[r->peer[i]]))
            live[n_live++] = r->peer[i];
    return n_live ? live[self->rotation % (uint64_t)n_live] : -1;
}

/* Fails call c for the assignments in pending[0..n) that have no live node:
 * marks their step rows lost and names the first such expert and its nodes. */
static int s_lost(dispatch_t *self, call_t *c, int n, err_t *err)
{
    const int layer = c->layer;
    int first = -1, n_lost_rows = 0;
    for (int k = 0; k < n; k++) {
        const int i = self->pending[k];
        if (c->target[i] >= 0)
            continue;
        if (first < 0)
            first = i;
        const int row = c->row0 + c->assign[i].row;
        n_lost_rows += !self->row_lost[row];
        self->row_lost[row] = 1;
    }
    const int expert = c->assign[first].expert;
    const dispatch_route_t *r = &self->routes[(size_t)layer * self->n_experts + expert];
    if (r->n == 0)
        return err_set(err, EHOSTUNREACH, "expert %d of layer %d is hosted by no node",
                       expert, layer);
    char nodes[256] = "";
    size_t used = 0;
    for (int j = 0; j < r->n && used < sizeof nodes; j++) {
        const peer_t *peer = self->peers[r->peer[j]];
        int w = snprintf(nodes + used, sizeof nodes - used, "%snode %d (%s): %s",
                         j ? "; " : "", peer_node_id(peer), peer_endpoint(peer),
                         peer_last_error(peer));
        used += w > 0 ? (size_t)w : 0;
    }
    return err_set(err, EHOSTUNREACH, "expert %d of layer %d has no live replica (%s); "
                   "%d row(s) of the batch need a missing expert", expert, layer, nodes,
                   n_lost_rows);
}

/* A free send record, or NULL. */
static send_t *s_new_send(dispatch_t *self)
{
    for (int i = 0; i < self->max_sends; i++)
        if (self->sends[i].peer < 0)
            return &self->sends[i];
    return NULL;
}

/* Sends call c's assignments items[0..n) to peer p in one EXPERT_REQUEST,
 * each row once. -1/EHOSTUNREACH when the node cannot take it (it is then
 * down). */
static int s_send_to(dispatch_t *self, call_t *c, int p, const int *items, int n,
                     err_t *err)
{
    send_t *s = s_new_send(self);
    if (!s)
        return err_set(err, ENOSPC, "layer %d: more than %d node failures within one "
                       "call", c->layer,
                       self->max_sends / DISPATCH_MAX_CALLS - self->n_peers);
    s->n_rows = 0;
    for (int k = 0; k < n; k++) {
        const moe_assign_t *a = &c->assign[items[k]];
        int local = self->local_of[a->row];
        if (local < 0) {
            local = self->local_of[a->row] = s->n_rows;
            s->global_of[s->n_rows++] = a->row;
            memcpy(self->rows + (size_t)local * self->hidden,
                   c->u + (size_t)a->row * self->hidden,
                   (size_t)self->hidden * sizeof(float));
        }
        self->msg_assign[k] = (moe_assign_t){local, a->expert, a->weight};
        s->items[k] = items[k];
    }
    for (int i = 0; i < s->n_rows; i++)
        self->local_of[s->global_of[i]] = -1;
    s->n_items = n;
    s->request_id = ++self->next_request_id;
    wire_data_t msg = {
        .type = WIRE_EXPERT_REQUEST, .request_id = s->request_id, .layer = c->layer,
        .n_rows = s->n_rows, .hidden = self->hidden, .rows = self->rows,
        .n_assign = n, .assign = self->msg_assign, .per_assignment = self->exact,
        .dtype = self->wire,
    };
    const uint64_t before = self->stats.bytes_sent;
    const int rc = peer_send(self->peers[p], &msg, &self->stats.bytes_sent, err);
    self->node_stats[p].bytes_sent += self->stats.bytes_sent - before;
    if (rc < 0)
        return -1;
    s->peer = p;
    s->call = c;
    s->deadline = timer_now() + self->reply_timeout_ms / 1000.0;
    return 0;
}

/* Places call c's assignments pending[0..n) on live nodes and sends them,
 * one request per node; a node that refuses the send is down, and its share
 * is placed again on the others (bounded: each round loses a node). */
static int s_place(dispatch_t *self, call_t *c, int n, err_t *err)
{
    while (n > 0) {
        bool lost = false;
        for (int k = 0; k < n; k++) {
            const int i = self->pending[k];
            c->target[i] = s_pick(self, c->layer, c->assign[i].expert);
            lost |= c->target[i] < 0;
        }
        if (lost)
            return s_lost(self, c, n, err);
        /* Group by node, keeping the call's order within a node. */
        memset(self->count, 0, ((size_t)self->n_peers + 1) * sizeof(int));
        for (int k = 0; k < n; k++)
            self->count[c->target[self->pending[k]] + 1]++;
        for (int p = 0; p < self->n_peers; p++)
            self->count[p + 1] += self->count[p];
        for (int k = 0; k < n; k++)
            self->order[self->count[c->target[self->pending[k]]]++] = self->pending[k];
        int n_again = 0, begin = 0;
        for (int p = 0; p < self->n_peers; p++) {
            const int end = self->count[p]; /* after the grouping, the end of p's run */
            if (end == begin)
                continue;
            if (s_send_to(self, c, p, self->order + begin, end - begin, err) < 0) {
                if (errno != EHOSTUNREACH)
                    return -1;
                for (int k = begin; k < end; k++)
                    self->pending[n_again++] = self->order[k];
            }
            begin = end;
        }
        n = n_again;
    }
    return 0;
}

/* Forgets the sends of call c (their late replies are then dropped). */
static void s_drop_sends(dispatch_t *self, const call_t *c)
{
    for (int i = 0; i < self->max_sends; i++)
        if (self->sends[i].call == c)
            self->sends[i].peer = -1;
}

/* Call c failed while the other call was being waited for: its sends are
 * dropped and its finish returns the failure (errno and e). The rows it
 * marked lost stay marked. */
static void s_fail_later(dispatch_t *self, call_t *c, const err_t *e)
{
    if (!c->failed) {
        c->failed = e->code ? e->code : EPROTO;
        c->fail_err = *e;
    }
    s_drop_sends(self, c);
}

/* The node of send s failed: its work goes to live replicas. */
static int s_failover(dispatch_t *self, send_t *s, err_t *err)
{
    call_t *c = s->call;
    memcpy(self->pending, s->items, (size_t)s->n_items * sizeof(int));
    const int n = s->n_items;
    const peer_t *peer = self->peers[s->peer];
    if (self->log)
        fprintf(self->log, "moe-coordinator: layer %d: node %d failed with %d routed rows "
                "in flight; sending them to replicas\n", c->layer,
                peer_node_id(peer), n);
    self->node_stats[s->peer].failovers++;
    s->peer = -1;
    self->stats.failovers++;
    return s_place(self, c, n, err);
}

/* Fails over every send waiting on peer p (which is down), of every call in
 * flight; -1 when the work of call `waiting` has no live node left (a
 * failure of the other call is kept for its finish). */
static int s_failover_peer(dispatch_t *self, int p, const call_t *waiting, err_t *err)
{
    for (int i = 0; i < self->max_sends; i++) {
        send_t *s = &self->sends[i];
        if (s->peer != p)
            continue;
        call_t *c = s->call;
        err_t e = {0};
        if (s_failover(self, s, &e) == 0)
            continue;
        if (c == waiting) {
            if (err)
                *err = e;
            errno = e.code;
            return -1;
        }
        s_fail_later(self, c, &e);
    }
    return 0;
}

/* Clears call c's per-call state. */
static void s_reset(dispatch_t *self, call_t *c)
{
    s_drop_sends(self, c);
    for (int p = 0; p < self->n_peers; p++) {
        uint8_t *touched = self->touched + (size_t)p * self->max_rows;
        const int *rows = c->touched_rows + (size_t)p * self->max_rows;
        for (int i = 0; i < c->n_touched[p]; i++)
            touched[rows[i]] = 0;
        c->n_touched[p] = 0;
    }
}

/* out = every row's terms added onto zeros in expert order (dispatch.h):
 * call c's assignments sorted by expert, then stably by row. */
static void s_add_terms(dispatch_t *self, const call_t *c)
{
    const size_t hidden = (size_t)self->hidden;
    const moe_assign_t *assign = c->assign;
    const int n = c->n_assign;
    memset(self->ecount, 0, ((size_t)self->n_experts + 1) * sizeof(int));
    for (int i = 0; i < n; i++)
        self->ecount[assign[i].expert + 1]++;
    for (int e = 0; e < self->n_experts; e++)
        self->ecount[e + 1] += self->ecount[e];
    for (int i = 0; i < n; i++)
        self->by_expert[self->ecount[assign[i].expert]++] = i;
    memset(self->rcount, 0, ((size_t)c->n_rows + 1) * sizeof(int));
    for (int i = 0; i < n; i++)
        self->rcount[assign[i].row + 1]++;
    for (int r = 0; r < c->n_rows; r++)
        self->rcount[r + 1] += self->rcount[r];
    for (int k = 0; k < n; k++) {
        const int i = self->by_expert[k];
        self->by_row[self->rcount[assign[i].row]++] = i;
    }
    for (int k = 0; k < n; k++) {
        const int i = self->by_row[k];
        float *dst = c->out + (size_t)assign[i].row * hidden;
        const float *src = c->terms + (size_t)i * hidden;
        for (size_t j = 0; j < hidden; j++)
            dst[j] += src[j];
    }
}

/* out += every node's partial sums for call c, node by node in index order. */
static void s_add_partials(dispatch_t *self, const call_t *c)
{
    if (self->exact) {
        s_add_terms(self, c);
        return;
    }
    const size_t hidden = (size_t)self->hidden;
    for (int p = 0; p < self->n_peers; p++) {
        const float *partial = self->partial + (size_t)p * self->max_rows * hidden;
        const int *rows = c->touched_rows + (size_t)p * self->max_rows;
        for (int i = 0; i < c->n_touched[p]; i++) {
            float *dst = c->out + (size_t)(rows[i] - c->row0) * hidden;
            const float *src = partial + (size_t)rows[i] * hidden;
            for (size_t j = 0; j < hidden; j++)
                dst[j] += src[j];
        }
    }
}

/* Keeps one node's reply to send s, in its node's partial sums (or its
 * assignments' terms), as it arrives; the call's finish adds them up. */
static int s_combine(dispatch_t *self, send_t *s, const wire_data_t *reply, err_t *err)
{
    peer_t *peer = self->peers[s->peer];
    call_t *c = s->call;
    const int layer = c->layer;
    if (reply->type == WIRE_ERROR)
        return err_set(err, EPROTO, "node %d (%s) failed layer %d: %s: %s",
                       peer_node_id(peer), peer_endpoint(peer), layer,
                       wire_data_error_name(reply->error_code),
                       reply->error_message ? reply->error_message : "");
    const int want_rows = self->exact ? s->n_items : s->n_rows;
    if (reply->type != WIRE_EXPERT_REPLY || reply->layer != layer ||
        reply->n_rows != want_rows || reply->hidden != self->hidden ||
        reply->dtype != self->wire)
        return err_set(err, EPROTO, "node %d (%s) sent a reply that does not match its "
                       "request (type %d, layer %d, %s, %d rows, expected %s, %d%s)",
                       peer_node_id(peer), peer_endpoint(peer), (int)reply->type,
                       reply->layer, wire_tensor_format_name(reply->dtype), reply->n_rows,
                       wire_tensor_format_name(self->wire), want_rows,
                       self->exact ? ", one per assignment: is the node older than "
                                     "the coordinator?" : "");
    if (self->exact) {
        /* Each term to its assignment; they are added at finish. */
        for (int i = 0; i < s->n_items; i++)
            memcpy(c->terms + (size_t)s->items[i] * self->hidden,
                   reply->rows + (size_t)i * self->hidden, (size_t)self->hidden * sizeof(float));
        goto combined;
    }
    /* Into the node's partial sums, by step row (a node that took over
     * another's work in this call may answer twice: those add in arrival
     * order). */
    const size_t hidden = (size_t)self->hidden;
    float *partial = self->partial + (size_t)s->peer * self->max_rows * hidden;
    uint8_t *touched = self->touched + (size_t)s->peer * self->max_rows;
    int *rows = c->touched_rows + (size_t)s->peer * self->max_rows;
    for (int i = 0; i < s->n_rows; i++) {
        const int g = c->row0 + s->global_of[i];
        float *dst = partial + (size_t)g * hidden;
        const float *src = reply->rows + (size_t)i * hidden;
        if (!touched[g]) {
            touched[g] = 1;
            rows[c->n_touched[s->peer]++] = g;
            memcpy(dst, src, hidden * sizeof(float));
        } else {
            for (size_t j = 0; j < hidden; j++)
                dst[j] += src[j];
        }
    }
    load_add_busy(self->load, s->peer, reply->compute_seconds, timer_now());
combined:
    if (reply->compute_seconds > c->max_compute)
        c->max_compute = reply->compute_seconds;
    self->stats.bytes_received += wire_inbox_message_bytes(self->inbox);
    self->node_stats[s->peer].bytes_received += wire_inbox_message_bytes(self->inbox);
    peer_record_batch(peer, timer_now() - c->t_start);
    s->peer = -1;
    return 0;
}

/* The waiting send of peer p with this request id, or NULL. */
static send_t *s_find(dispatch_t *self, int p, uint64_t request_id)
{
    for (int i = 0; i < self->max_sends; i++)
        if (self->sends[i].peer == p && self->sends[i].request_id == request_id)
            return &self->sends[i];
    return NULL;
}

/* True when call c (any call when NULL) waits on peer p. */
static bool s_waits_on(const dispatch_t *self, int p, const call_t *c)
{
    for (int i = 0; i < self->max_sends; i++)
        if (self->sends[i].peer == p && (!c || self->sends[i].call == c))
            return true;
    return false;
}

/* Reads what peer p sent, for whichever call in flight it answers; -1 on a
 * reply that fails call `waiting` (one that fails the other call is kept for
 * its finish). */
static int s_receive(dispatch_t *self, int p, const call_t *waiting, err_t *err)
{
    peer_t *peer = self->peers[p];
    for (;;) {
        wire_data_t reply;
        wire_data_error_t code;
        err_t recv_err = {0};
        if (wire_data_recv(self->inbox, peer_socket(peer), false, NULL, &reply, &code,
                           &recv_err) < 0) {
            if (errno == EAGAIN)
                return 0;
            if (errno == EINTR)
                return err_set(err, EINTR, "interrupted while waiting for layer %d",
                               waiting->layer);
            if (!s_waits_on(self, p, NULL))
                continue; /* garbage from a node we are not waiting for */
            err_t e;
            err_set(&e, EPROTO, "node %d (%s) sent an invalid reply: %s",
                    peer_node_id(peer), peer_endpoint(peer), recv_err.msg);
            if (s_waits_on(self, p, waiting)) {
                if (err)
                    *err = e;
                errno = EPROTO;
                return -1;
            }
            for (int c = 0; c < DISPATCH_MAX_CALLS; c++)
                if (s_waits_on(self, p, &self->calls[c]))
                    s_fail_later(self, &self->calls[c], &e);
            continue;
        }
        peer_handle(peer, &reply, timer_now());
        send_t *s = s_find(self, p, reply.request_id);
        if (!s)
            continue; /* a late reply to an earlier call, or a control reply */
        call_t *c = s->call;
        err_t e = {0};
        if (s_combine(self, s, &reply, &e) == 0)
            continue;
        if (c == waiting) {
            if (err)
                *err = e;
            errno = e.code;
            return -1;
        }
        s_fail_later(self, c, &e);
    }
}

/* Waits until every send of call c is combined, failing over the work of
 * nodes that go down or do not answer in time (the other call's too, and
 * keeping the replies to it that arrive meanwhile); -1 when some of c's work
 * has no live node left, or on a node's error reply to c. */
static int s_gather(dispatch_t *self, call_t *c, err_t *err)
{
    for (;;) {
        const double now = timer_now();
        double first_deadline = 0;
        int n_waiting = 0;
        bool changed = false;
        for (int i = 0; i < self->max_sends; i++) {
            send_t *s = &self->sends[i];
            if (s->peer < 0)
                continue;
            peer_t *peer = self->peers[s->peer];
            if (now >= s->deadline || !peer_is_up(peer)) {
                char why[128];
                snprintf(why, sizeof why, "no reply to layer %d within %d ms",
                         s->call->layer, self->reply_timeout_ms);
                if (peer_is_up(peer))
                    peer_mark_down(peer, why);
                if (s_failover_peer(self, s->peer, c, err) < 0)
                    return -1;
                changed = true; /* the sends changed: look again */
                break;
            }
            n_waiting += s->call == c;
            if (first_deadline == 0 || s->deadline < first_deadline)
                first_deadline = s->deadline;
        }
        if (changed)
            continue;
        if (n_waiting == 0)
            return 0;
        for (int p = 0; p < self->n_peers; p++) {
            self->items[2 * p] = (zmq_pollitem_t){.socket = peer_socket(self->peers[p]),
                                                  .events = ZMQ_POLLIN};
            self->items[2 * p + 1] = (zmq_pollitem_t){
                .socket = peer_monitor_socket(self->peers[p]), .events = ZMQ_POLLIN};
        }
        int wait_ms = (int)((first_deadline - now) * 1000.0) + 1;
        if (zmq_poll(self->items, 2 * self->n_peers, wait_ms) < 0) {
            if (errno == EINTR)
                return err_set(err, EINTR, "interrupted while waiting for layer %d",
                               c->layer);
            continue;
        }
        for (int p = 0; p < self->n_peers; p++) {
            if ((self->items[2 * p + 1].revents & ZMQ_POLLIN) &&
                !peer_check_link(self->peers[p]) && s_failover_peer(self, p, c, err) < 0)
                return -1;
            if ((self->items[2 * p].revents & ZMQ_POLLIN) && s_receive(self, p, c, err) < 0)
                return -1;
        }
    }
}

/* The call of micro-batch mb, or NULL (EINVAL) when mb is out of range. */
static call_t *s_call(dispatch_t *self, int mb, int layer, err_t *err)
{
    if (mb < 0 || mb >= DISPATCH_MAX_CALLS) {
        err_set(err, EINVAL, "layer %d: micro-batch %d is not in [0, %d)", layer, mb,
                DISPATCH_MAX_CALLS);
        return NULL;
    }
    return &self->calls[mb];
}

int dispatch_start(void *ctx, int mb, int layer, const float *u, int row0, int n_rows,
                   const moe_assign_t *assign, int n_assign, float *out, err_t *err)
{
    dispatch_t *self = ctx;
    call_t *c = s_call(self, mb, layer, err);
    if (!c)
        return -1;
    if (c->active)
        return err_set(err, EINVAL, "layer %d started before layer %d finished", layer,
                       c->layer);
    if (row0 < 0 || n_rows > self->max_rows - row0 || n_assign > self->max_assign)
        return err_set(err, E2BIG, "batch of %d rows from row %d exceeds the dispatch "
                       "limit of %d", n_rows, row0, self->max_rows);
    for (int o = 0; o < DISPATCH_MAX_CALLS; o++) {
        const call_t *other = &self->calls[o];
        if (other->active && row0 < other->row0 + other->n_rows &&
            other->row0 < row0 + n_rows)
            return err_set(err, EINVAL, "layer %d: rows %d..%d are in flight in another "
                           "call", layer, row0, row0 + n_rows - 1);
    }
    c->t_start = timer_now();
    c->layer = layer;
    c->u = u;
    c->assign = assign;
    c->n_assign = n_assign;
    c->n_rows = n_rows;
    c->row0 = row0;
    c->out = out;
    c->max_compute = 0;
    c->failed = 0;
    self->rotation++;
    if (self->n_active == 0) {
        /* The first call of a step: what an earlier step lost is forgotten
         * (a failure ends the step, so the marks of both calls stand). */
        memset(self->row_lost, 0, (size_t)self->max_rows);
        dispatch_check_links(self);
    }
    for (int i = 0; i < n_assign; i++)
        self->pending[i] = i;
    /* The partial sums are added into out at finish. */
    memset(out, 0, (size_t)n_rows * self->hidden * sizeof(float));
    if (s_place(self, c, n_assign, err) < 0) {
        s_reset(self, c);
        return -1;
    }
    c->active = true;
    if (self->n_active++ == 0)
        self->busy_since = c->t_start;
    return 0;
}

int dispatch_finish(void *ctx, int mb, int layer, float *out, err_t *err)
{
    dispatch_t *self = ctx;
    call_t *c = s_call(self, mb, layer, err);
    if (!c)
        return -1;
    if (!c->active || c->layer != layer || out != c->out)
        return err_set(err, EINVAL, "layer %d was not started", layer);
    c->active = false;
    int rc;
    if (c->failed) {
        if (err)
            *err = c->fail_err;
        errno = c->failed;
        rc = -1;
    } else {
        rc = s_gather(self, c, err);
    }
    const int saved = errno;
    if (rc == 0)
        s_add_partials(self, c);
    s_reset(self, c);
    const double now = timer_now();
    if (--self->n_active == 0)
        self->stats.seconds_total += now - self->busy_since;
    if (rc == 0) {
        for (int i = 0; i < c->n_assign; i++) {
            const size_t route = (size_t)layer * self->n_experts + c->assign[i].expert;
            self->expert_tokens[route]++;
            load_add_rows(self->load, (int)route, 1, now);
            if (c->target[i] >= 0)
                self->node_tokens[route * self->max_peers + c->target[i]]++;
        }
        self->stats.calls++;
        self->stats.rows += (uint64_t)c->n_rows;
        self->stats.seconds_node_compute += c->max_compute;
    }
    errno = saved;
    return rc;
}

int dispatch_run(void *ctx, int layer, const float *u, int n_rows,
                 const moe_assign_t *assign, int n_assign, float *out, err_t *err)
{
    if (dispatch_start(ctx, 0, layer, u, 0, n_rows, assign, n_assign, out, err) < 0)
        return -1;
    return dispatch_finish(ctx, 0, layer, out, err);
}

bool dispatch_row_lost(void *ctx, int row)
{
    const dispatch_t *self = ctx;
    return row >= 0 && row < self->max_rows && self->row_lost[row];
}

const uint64_t *dispatch_expert_tokens(const dispatch_t *self)
{
    return self->expert_tokens;
}

const uint64_t *dispatch_node_tokens(const dispatch_t *self)
{
    return self->node_tokens;
}

const dispatch_node_stats_t *dispatch_node_stats(const dispatch_t *self)
{
    return self->node_stats;
}

const dispatch_stats_t *dispatch_stats(const dispatch_t *self)
{
    return &self->stats;
}

const load_t *dispatch_load(const dispatch_t *self)
{
    return self->load;
}

int dispatch_set_load_half_life(dispatch_t *self, double half_life_s, err_t *err)
{
    load_t *fresh = load_new(self->n_layers * self->n_experts, self->max_peers, half_life_s,
                             timer_now(), err);
    if (!fresh)
        return -1;
    load_destroy(&self->load);
    self->load = fresh;
    return 0;
}

void dispatch_node_load(const dispatch_t *self, const double *rate, double *node_load)
{
    for (int p = 0; p < self->n_peers; p++)
        node_load[p] = 0;
    const int n_routes = self->n_layers * self->n_experts;
    for (int r = 0; r < n_routes; r++) {
        const dispatch_route_t *route = &self->routes[r];
        for (int i = 0; i < route->n; i++)
            node_load[route->peer[i]] += rate[r] / route->n;
    }
}

int dispatch_set_routes(dispatch_t *self, const dispatch_route_t *routes, err_t *err)
{
    if (self->n_active > 0)
        return err_set(err, EBUSY, "the routes cannot change during a layer's call");
    memcpy(self->routes, routes,
           (size_t)self->n_layers * self->n_experts * sizeof *self->routes);
    return 0;
}

void dispatch_set_wire(dispatch_t *self, wire_tensor_format_t wire)
{
    assert(self);
    assert((unsigned)wire < WIRE_TENSOR_COUNT);
    self->wire = wire;
}

wire_tensor_format_t dispatch_wire(const dispatch_t *self)
{
    return self->wire;
}

wire_limits_t dispatch_limits(const config_t *cfg, int max_rows)
{
    wire_limits_t lim = wire_limits_for_model(cfg, max_rows);
    if (cfg->n_experts_per_tok > 2)
        lim.max_rows = lim.max_assign; /* replies of one term per assignment */
    return lim;
}

int dispatch_add_peer(dispatch_t *self, err_t *err)
{
    if (self->n_active > 0)
        return err_set(err, EBUSY, "a node cannot join during a layer's call");
    if (self->n_peers >= self->max_peers)
        return err_set(err, ENOSPC, "the coordinator has room for %d nodes (--max-nodes)",
                       self->max_peers);
    self->n_peers++;
    return 0;
}

void dispatch_remove_last_peer(dispatch_t *self)
{
    if (self->n_active == 0 && self->n_peers > 0)
        self->n_peers--;
}

int dispatch_n_peers(const dispatch_t *self)
{
    return self->n_peers;
}

int dispatch_max_peers(const dispatch_t *self)
{
    return self->max_peers;
}
