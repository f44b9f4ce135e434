/* dispatch: see dispatch.h. */
#include "coordinator/dispatch.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "core/mem.h"
#include "core/timer.h"

/* What goes to one node in the current call. */
typedef struct node_batch {
    int n_rows;                /* distinct rows for this node */
    int n_assign;
    int *local_of;             /* (max_rows) batch row -> row in `rows`, or -1 */
    int *global_of;            /* (max_rows) row in `rows` -> batch row */
    float *rows;               /* (max_rows, hidden) */
    moe_assign_t *assign;      /* (max_assign) rows index into `rows` */
    bool waiting;              /* request sent, reply not yet combined */
} node_batch_t;

struct dispatch {
    peer_t **peers;            /* borrowed (n_peers) */
    int n_peers;
    int n_layers, n_experts, hidden, max_rows, max_assign;
    int reply_timeout_ms;
    dispatch_route_t *routes;  /* (n_layers * n_experts) */
    node_batch_t *batches;     /* (n_peers) */
    uint64_t *expert_tokens;   /* (n_layers * n_experts) */
    uint64_t next_request_id;
    wire_inbox_t *inbox;
    zmq_pollitem_t *items;     /* (2 * n_peers): data socket, link monitor */
    dispatch_stats_t stats;
    struct {                   /* the started call dispatch_finish completes */
        bool active;
        int layer;
        uint64_t request_id;
        double t_start;
        const moe_assign_t *assign; /* the caller's, alive until finish */
        int n_assign;
        int n_rows;
    } call;
};

dispatch_t *dispatch_new(peer_t **peers, int n_peers, const config_t *cfg,
                         const dispatch_route_t *routes, int max_rows,
                         int reply_timeout_ms, err_t *err)
{
    dispatch_t *self = mem_calloc(1, sizeof *self);
    if (!self)
        goto oom;
    self->peers = peers;
    self->n_peers = n_peers;
    self->n_layers = cfg->n_layers;
    self->n_experts = cfg->n_experts;
    self->hidden = cfg->hidden_size;
    self->max_rows = max_rows;
    self->max_assign = max_rows * cfg->n_experts_per_tok;
    self->reply_timeout_ms = reply_timeout_ms;
    const size_t n_routes = (size_t)cfg->n_layers * cfg->n_experts;
    self->routes = mem_alloc(n_routes * sizeof *self->routes);
    self->expert_tokens = mem_calloc(n_routes, sizeof *self->expert_tokens);
    self->batches = mem_calloc((size_t)n_peers, sizeof *self->batches);
    self->items = mem_calloc(2 * (size_t)n_peers, sizeof *self->items);
    if (!self->routes || !self->expert_tokens || !self->batches || !self->items)
        goto oom;
    memcpy(self->routes, routes, n_routes * sizeof *routes);
    for (int p = 0; p < n_peers; p++) {
        node_batch_t *b = &self->batches[p];
        b->local_of = mem_alloc((size_t)max_rows * sizeof(int));
        b->global_of = mem_alloc((size_t)max_rows * sizeof(int));
        b->rows = mem_alloc_aligned((size_t)max_rows * self->hidden * sizeof(float));
        b->assign = mem_alloc((size_t)self->max_assign * sizeof(moe_assign_t));
        if (!b->local_of || !b->global_of || !b->rows || !b->assign)
            goto oom;
        for (int r = 0; r < max_rows; r++)
            b->local_of[r] = -1;
    }
    wire_limits_t lim = {.hidden = self->hidden, .max_rows = max_rows,
                         .max_assign = self->max_assign, .n_layers = cfg->n_layers,
                         .n_experts = cfg->n_experts};
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
    if (self->batches)
        for (int p = 0; p < self->n_peers; p++) {
            mem_free(self->batches[p].local_of);
            mem_free(self->batches[p].global_of);
            mem_free(self->batches[p].rows);
            mem_free(self->batches[p].assign);
        }
    wire_inbox_destroy(&self->inbox);
    mem_free(self->batches);
    mem_free(self->items);
    mem_free(self->routes);
    mem_free(self->expert_tokens);
    mem_free(self);
    *self_p = NULL;
}

void dispatch_check_links(dispatch_t *self)
{
    for (int p = 0; p < self->n_peers; p++)
        peer_check_link(self->peers[p]);
}

/* The first live node hosting (layer, expert), or -1. */
static int s_pick(const dispatch_t *self, int layer, int expert)
{
    const dispatch_route_t *r = &self->routes[(size_t)layer * self->n_experts + expert];
    for (int i = 0; i < r->n; i++)
        if (peer_is_up(self->peers[r->peer[i]]))
            return r->peer[i];
    return -1;
}

static int s_no_node(const dispatch_t *self, int layer, int expert, err_t *err)
{
    const dispatch_route_t *r = &self->routes[(size_t)layer * self->n_experts + expert];
    if (r->n == 0)
        return err_set(err, EHOSTUNREACH, "expert %d of layer %d is hosted by no node",
                       expert, layer);
    const peer_t *first = self->peers[r->peer[0]];
    return err_set(err, EHOSTUNREACH, "expert %d of layer %d: no live node hosts it "
                   "(node %d at %s is down: %s)", expert, layer, peer_node_id(first),
                   peer_endpoint(first), peer_last_error(first));
}

/* Splits the assignments by node, each row once per node. */
static int s_split(dispatch_t *self, int layer, const float *u, const moe_assign_t *assign,
                   int n_assign, err_t *err)
{
    for (int i = 0; i < n_assign; i++) {
        const moe_assign_t *a = &assign[i];
        int p = s_pick(self, layer, a->expert);
        if (p < 0)
            return s_no_node(self, layer, a->expert, err);
        node_batch_t *b = &self->batches[p];
        int local = b->local_of[a->row];
        if (local < 0) {
            local = b->local_of[a->row] = b->n_rows++;
            b->global_of[local] = a->row;
            memcpy(b->rows + (size_t)local * self->hidden, u + (size_t)a->row * self->hidden,
                   (size_t)self->hidden * sizeof(float));
        }
        b->assign[b->n_assign++] = (moe_assign_t){local, a->expert, a->weight};
    }
    return 0;
}

/* Clears the per-call state of every node. */
static void s_reset(dispatch_t *self)
{
    for (int p = 0; p < self->n_peers; p++) {
        node_batch_t *b = &self->batches[p];
        for (int i = 0; i < b->n_rows; i++)
            b->local_of[b->global_of[i]] = -1;
        b->n_rows = b->n_assign = 0;
        b->waiting = false;
    }
}

static int s_send_all(dispatch_t *self, int layer, uint64_t request_id, err_t *err)
{
    for (int p = 0; p < self->n_peers; p++) {
        node_batch_t *b = &self->batches[p];
        if (b->n_assign == 0)
            continue;
        wire_data_t msg = {
            .type = WIRE_EXPERT_REQUEST, .request_id = request_id, .layer = layer,
            .n_rows = b->n_rows, .hidden = self->hidden, .rows = b->rows,
            .n_assign = b->n_assign, .assign = b->assign,
        };
        if (peer_send(self->peers[p], &msg, &self->stats.bytes_sent, err) < 0)
            return -1;
        b->waiting = true;
    }
    return 0;
}

/* Adds one node's partial sums into out. */
static int s_combine(dispatch_t *self, int p, int layer, const wire_data_t *reply,
                     float *out, double *max_compute, err_t *err)
{
    node_batch_t *b = &self->batches[p];
    peer_t *peer = self->peers[p];
    if (reply->type == WIRE_ERROR)
        return err_set(err, EPROTO, "node %d (%s) failed layer %d: %s: %s",
                       peer_node_id(peer), peer_endpoint(peer), layer,
                       wire_data_error_name(reply->error_code),
                       reply->error_message ? reply->error_message : "");
    if (reply->type != WIRE_EXPERT_REPLY || reply->layer != layer ||
        reply->n_rows != b->n_rows || reply->hidden != self->hidden)
        return err_set(err, EPROTO, "node %d (%s) sent a reply that does not match its "
                       "request (type %d, layer %d, %d rows, expected %d)",
                       peer_node_id(peer), peer_endpoint(peer), (int)reply->type,
                       reply->layer, reply->n_rows, b->n_rows);
    for (int i = 0; i < b->n_rows; i++) {
        float *dst = out + (size_t)b->global_of[i] * self->hidden;
        const float *src = reply->rows + (size_t)i * self->hidden;
        for (int j = 0; j < self->hidden; j++)
            dst[j] += src[j];
    }
    if (reply->compute_seconds > *max_compute)
        *max_compute = reply->compute_seconds;
    self->stats.bytes_received += wire_inbox_message_bytes(self->inbox);
    b->waiting = false;
    return 0;
}

/* Waits for every node sent to; -1 on the first failure. */
static int s_gather(dispatch_t *self, int layer, uint64_t request_id, double t_start,
                    float *out, err_t *err)
{
    const double deadline = t_start + self->reply_timeout_ms / 1000.0;
    double max_compute = 0;
    int n_waiting = 0;
    for (int p = 0; p < self->n_peers; p++)
        n_waiting += self->batches[p].waiting;

    while (n_waiting > 0) {
        int remaining_ms = (int)((deadline - timer_now()) * 1000.0);
        if (remaining_ms <= 0) {
            for (int p = 0; p < self->n_peers; p++)
                if (self->batches[p].waiting) {
                    peer_t *peer = self->peers[p];
                    char why[128];
                    snprintf(why, sizeof why, "no reply within %d ms", self->reply_timeout_ms);
                    peer_mark_down(peer, why);
                    return err_set(err, ETIMEDOUT, "node %d (%s) did not answer layer %d "
                                   "within %d ms", peer_node_id(peer), peer_endpoint(peer),
                                   layer, self->reply_timeout_ms);
                }
            return err_set(err, ETIMEDOUT, "layer %d: replies missing after %d ms", layer,
                           self->reply_timeout_ms);
        }
        for (int p = 0; p < self->n_peers; p++) {
            self->items[2 * p] = (zmq_pollitem_t){.socket = peer_socket(self->peers[p]),
                                                  .events = ZMQ_POLLIN};
            self->items[2 * p + 1] = (zmq_pollitem_t){
                .socket = peer_monitor_socket(self->peers[p]), .events = ZMQ_POLLIN};
        }
        if (zmq_poll(self->items, 2 * self->n_peers, remaining_ms) < 0) {
            if (errno == EINTR)
                return err_set(err, EINTR, "interrupted while waiting for layer %d", layer);
            continue;
        }
        for (int p = 0; p < self->n_peers; p++) {
            peer_t *peer = self->peers[p];
            if ((self->items[2 * p + 1].revents & ZMQ_POLLIN) && !peer_check_link(peer) &&
                self->batches[p].waiting)
                return err_set(err, EHOSTUNREACH, "node %d (%s) went down during layer %d: "
                               "%s", peer_node_id(peer), peer_endpoint(peer), layer,
                               peer_last_error(peer));
            if (!(self->items[2 * p].revents & ZMQ_POLLIN))
                continue;
            wire_data_t reply;
            wire_data_error_t code;
            err_t recv_err = {0};
            if (wire_data_recv(self->inbox, peer_socket(peer), false, NULL, &reply, &code,
                               &recv_err) < 0) {
                if (errno == EAGAIN)
                    continue;
                if (!self->batches[p].waiting)
                    continue; /* garbage from a node we are not waiting for */
                return err_set(err, EPROTO, "node %d (%s) sent an invalid reply: %s",
                               peer_node_id(peer), peer_endpoint(peer), recv_err.msg);
            }
            if (reply.request_id != request_id || !self->batches[p].waiting)
                continue; /* a late reply to an earlier call */
            if (s_combine(self, p, layer, &reply, out, &max_compute, err) < 0)
                return -1;
            peer_record_batch(peer, timer_now() - t_start);
            n_waiting--;
        }
    }
    self->stats.seconds_node_compute += max_compute;
    return 0;
}

int dispatch_start(void *ctx, int layer, const float *u, int n_rows,
                   const moe_assign_t *assign, int n_assign, float *out, err_t *err)
{
    dispatch_t *self = ctx;
    (void)out; /* written by dispatch_finish */
    if (self->call.active)
        return err_set(err, EINVAL, "layer %d started before layer %d finished", layer,
                       self->call.layer);
    if (n_rows > self->max_rows || n_assign > self->max_assign)
        return err_set(err, E2BIG, "batch of %d rows exceeds the dispatch limit of %d",
                       n_rows, self->max_rows);
    self->call.t_start = timer_now();
    self->call.request_id = ++self->next_request_id;
    self->call.layer = layer;
    self->call.assign = assign;
    self->call.n_assign = n_assign;
    self->call.n_rows = n_rows;
    dispatch_check_links(self);
    if (s_split(self, layer, u, assign, n_assign, err) < 0 ||
        s_send_all(self, layer, self->call.request_id, err) < 0) {
        s_reset(self);
        return -1;
    }
    self->call.active = true;
    return 0;
}

int dispatch_finish(void *ctx, int layer, float *out, err_t *err)
{
    dispatch_t *self = ctx;
    if (!self->call.active || self->call.layer != layer)
        return err_set(err, EINVAL, "layer %d was not started", layer);
    self->call.active = false;
    memset(out, 0, (size_t)self->call.n_rows * self->hidden * sizeof(float));
    int rc = s_gather(self, layer, self->call.request_id, self->call.t_start, out, err);
    s_reset(self);
    if (rc == 0) {
        for (int i = 0; i < self->call.n_assign; i++)
            self->expert_tokens[(size_t)layer * self->n_experts +
                                self->call.assign[i].expert]++;
        self->stats.calls++;
        self->stats.seconds_total += timer_now() - self->call.t_start;
    }
    return rc;
}

int dispatch_moe(void *ctx, int layer, const float *u, int n_rows,
                 const moe_assign_t *assign, int n_assign, float *out, err_t *err)
{
    if (dispatch_start(ctx, layer, u, n_rows, assign, n_assign, out, err) < 0)
        return -1;
    return dispatch_finish(ctx, layer, out, err);
}

const uint64_t *dispatch_expert_tokens(const dispatch_t *self)
{
    return self->expert_tokens;
}

const dispatch_stats_t *dispatch_stats(const dispatch_t *self)
{
    return &self->stats;
}
