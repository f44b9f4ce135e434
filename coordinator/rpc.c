/* rpc: see rpc.h. */
#include "coordinator/rpc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "core/endpoint.h"
#include "core/lograte.h"
#include "core/mem.h"
#include "proto/client_rpc.h"

enum { MAX_REQUESTS_PER_TURN = 256 }; /* requests taken between two steps */

_Static_assert((int)SCHED_CLIENT_ID_MAX >= (int)WIRE_MAX_IDENTITY,
               "a routing id fits a sched client");
_Static_assert((int)SCHED_CLIENT_USER_MAX >= (int)WIRE_MAX_USER,
               "a ZAP user fits a sched client");
_Static_assert((int)SCHED_MAX_STOP >= (int)WIRE_MAX_STOP_IDS, "the wire's stop ids fit");

struct rpc {
    server_t *server;
    int front;                     /* this front end's index in the server */
    char endpoint[WIRE_MAX_TEXT];
    void *socket;                  /* ROUTER for clients */
    wire_inbox_t *inbox;
    wire_node_status_t *status;    /* (n_nodes) for STATUS replies */
    int n_status;
    lograte_t logs;                /* stderr, rate-limited per cause */
    /* The REBALANCE / NODE_DRAIN whose answer waits for the move's end. */
    bool moving;
    wire_peer_t move_from;
    uint64_t move_id;
};

static wire_client_error_t s_wire_code(sched_error_t code)
{
    switch (code) {
    case SCHED_OK: return WIRE_CLIENT_OK;
    case SCHED_INVALID: return WIRE_CLIENT_INVALID_ARGUMENT;
    case SCHED_BUSY: return WIRE_CLIENT_BUSY;
    case SCHED_UNAVAILABLE: return WIRE_CLIENT_UNAVAILABLE;
    case SCHED_CANCELLED: return WIRE_CLIENT_CANCELLED;
    case SCHED_DEADLINE: return WIRE_CLIENT_DEADLINE_EXCEEDED;
    case SCHED_INTERNAL: break;
    }
    return WIRE_CLIENT_INTERNAL;
}

/* The scheduler's client for a ZeroMQ peer, and back. */
static sched_client_t s_client(const rpc_t *self, const wire_peer_t *peer)
{
    sched_client_t c = {.front = self->front, .len = peer->len};
    memcpy(c.id, peer->id, peer->len);
    snprintf(c.user, sizeof c.user, "%s", peer->user);
    snprintf(c.address, sizeof c.address, "%s", peer->address);
    return c;
}

static wire_peer_t s_peer(const sched_client_t *c)
{
    wire_peer_t p = {.len = c->len};
    memcpy(p.id, c->id, c->len);
    snprintf(p.user, sizeof p.user, "%s", c->user);
    snprintf(p.address, sizeof p.address, "%s", c->address);
    return p;
}

/* Who a client is, for a person: its address, or "a client". */
static const char *s_who(const wire_peer_t *client)
{
    return client->address[0] ? client->address : "a client";
}

/* Logs an answer that could not be sent (errno_sent: the send's errno),
 * rate-limited per cause: a flood of vanishing clients costs a few lines. */
static void s_unsent(rpc_t *self, const wire_peer_t *to, uint64_t id, int errno_sent,
                     const err_t *why)
{
    if (errno_sent == EHOSTUNREACH)
        lograte_printf(&self->logs, "client went away before its answer",
                       "moe-coordinator: client %s went away before its answer (request "
                       "%llu)", s_who(to), (unsigned long long)id);
    else
        lograte_printf(&self->logs, "answer not sent",
                       "moe-coordinator: cannot answer client %s (request %llu): %s",
                       s_who(to), (unsigned long long)id, why->msg);
}

static void s_reply_error(rpc_t *self, const wire_peer_t *to, uint64_t id,
                          wire_client_error_t code, const char *message)
{
    err_t err = {0};
    if (wire_reply_send_error(self->socket, to, id, code, message, &err) < 0)
        s_unsent(self, to, id, errno, &err);
}

/* A scheduler event for one of our clients; -1 when the client has gone. */
static int s_deliver(void *ctx, const sched_event_t *ev)
{
    rpc_t *self = ctx;
    err_t err = {0};
    const wire_peer_t to = s_peer(ev->client);
    switch (ev->kind) {
    case SCHED_TOKEN: {
        wire_reply_t rep = {.type = WIRE_REP_TOKENS, .request_id = ev->request_id,
                            .n_tokens = 1, .tokens = &ev->token, .text = ev->text,
                            .text_len = ev->text_len};
        if (wire_reply_send(self->socket, &to, &rep, &err) == 0)
            return 0;
        if (errno == EHOSTUNREACH)
            return -1; /* the server frees its sequence; nothing to log */
        s_unsent(self, &to, ev->request_id, errno, &err);
        return 0;
    }
    case SCHED_DONE: {
        wire_reply_t done = {.type = WIRE_REP_TOKENS, .request_id = ev->request_id,
                             .final = true, .prompt_tokens = ev->prompt_tokens,
                             .generated_tokens = ev->generated_tokens, .seconds = ev->seconds,
                             .text = ev->text, .text_len = ev->text_len,
                             .finish_reason = ev->finish_reason};
        if (wire_reply_send(self->socket, &to, &done, &err) < 0)
            s_unsent(self, &to, ev->request_id, errno, &err);
        return 0;
    }
    case SCHED_FAILED:
        s_reply_error(self, &to, ev->request_id, s_wire_code(ev->code), ev->message);
        return 0;
    }
    return 0;
}

static void s_generate(rpc_t *self, const wire_peer_t *from, const wire_request_t *req)
{
    server_request_t sr = {
        .gen = {.request_id = req->request_id, .prompt = req->prompt,
                .n_prompt = req->n_prompt, .max_tokens = req->max_tokens,
                .temperature = req->temperature, .top_k = req->top_k, .top_p = req->top_p,
                .seed = req->seed, .n_stop = req->n_stop, .stop_ids = req->stop_ids,
                .deadline_ms = req->deadline_ms, .ignore_eos = req->ignore_eos},
        .text = req->prompt_text, .text_len = req->prompt_text_len, .add_special = true,
    };
    const sched_client_t client = s_client(self, from);
    sched_error_t code;
    err_t err = {0};
    if (server_submit(self->server, &client, &sr, &code, &err) < 0)
        s_reply_error(self, from, req->request_id, s_wire_code(code), err.msg);
}

static void s_cancel(rpc_t *self, const wire_peer_t *from, const wire_request_t *req)
{
    const sched_client_t client = s_client(self, from);
    if (server_cancel(self->server, &client, req->cancel_id) < 0)
        s_reply_error(self, from, req->request_id, WIRE_CLIENT_INVALID_ARGUMENT,
                      "no running or waiting request with that id");
}

static void s_logits(rpc_t *self, const wire_peer_t *from, const wire_request_t *req)
{
    float *all = NULL;
    sched_error_t code;
    err_t err = {0};
    if (server_logits(self->server, req->prompt, req->n_prompt, &all, &code, &err) < 0) {
        s_reply_error(self, from, req->request_id, s_wire_code(code), err.msg);
        return;
    }
    wire_reply_t rep = {.type = WIRE_REP_LOGITS, .request_id = req->request_id,
                        .final = true, .rows = req->n_prompt,
                        .vocab = server_weights(self->server)->cfg.vocab_size, .logits = all};
    if (wire_reply_send(self->socket, from, &rep, &err) < 0)
        s_unsent(self, from, req->request_id, errno, &err);
    mem_free(all);
}

static void s_status(rpc_t *self, const wire_peer_t *from, const wire_request_t *req)
{
    /* The same counters as /metrics; the expert rows go in expert_tokens.
     * First: rendering them takes a status of its own, and the one below
     * (whose buffers the server reuses) must be the one sent. */
    json_t *metrics = server_metrics_json(self->server);
    json_object_del(metrics, "moe_expert_tokens_total");
    json_object_del(metrics, "moe_expert_load_rows_per_second"); /* in expert_load */
    char *text = metrics ? json_dumps(metrics, JSON_COMPACT) : NULL;
    json_decref(metrics);
    server_status_t st;
    server_status(self->server, &st);
    for (int p = 0; p < st.n_nodes && p < self->n_status; p++) {
        const server_node_status_t *n = &st.nodes[p];
        self->status[p] = (wire_node_status_t){
            .node_id = n->node_id, .endpoint = n->endpoint, .up = n->up,
            .n_hosted = n->n_hosted, .hosted_layer = n->hosted_layer,
            .hosted_expert = n->hosted_expert, .batches = n->batches,
            .rtt_last_ms = n->rtt_last_ms, .rtt_mean_ms = n->rtt_mean_ms,
            .last_error = n->last_error, .weights = n->weights,
            .coordinators = n->coordinators,
            .load = n->load, .busy_ratio = n->busy_ratio, .busy_seconds = n->busy_seconds,
        };
    }
    wire_reply_t rep = {
        .type = WIRE_REP_STATUS, .request_id = req->request_id, .final = true,
        .model = st.model, .model_arch = st.model_arch, .weights = st.weights,
        .wire = st.wire,
        .n_nodes = st.n_nodes < self->n_status ? st.n_nodes : self->n_status,
        .nodes = self->status, .n_layers = st.n_layers, .n_experts = st.n_experts,
        .expert_tokens = st.expert_tokens, .requests_served = st.requests_served,
        .expert_load = st.expert_load, .load_half_life_s = st.load_half_life_s,
        .sequences_running = st.sequences_running, .requests_queued = st.requests_queued,
        .kv_bytes = st.kv_bytes,
    };
    rep.timing = (wire_timing_t){
        .tokens = st.rows_forwarded, .dispatch_calls = st.dispatch_calls,
        .dispatch_rows = st.dispatch_rows,
        .bytes_sent = st.bytes_sent, .bytes_received = st.bytes_received,
        .seconds_forward = st.seconds_forward, .seconds_dispatch = st.seconds_dispatch,
        .seconds_node_compute = st.seconds_node_compute,
        .seconds_overlap = st.seconds_overlap,
    };
    rep.metrics = text && strlen(text) <= WIRE_MAX_METRICS ? text : NULL;
    err_t err = {0};
    if (wire_reply_send(self->socket, from, &rep, &err) < 0)
        s_unsent(self, from, req->request_id, errno, &err);
    free(text); /* jansson's allocation */
}

/* REBALANCE, NODE_DRAIN and NODE_ADD: answered when the move is over
 * (s_tick). */
static void s_rebalance(rpc_t *self, const wire_peer_t *from, const wire_request_t *req)
{
    if (self->moving) {
        s_reply_error(self, from, req->request_id, WIRE_CLIENT_BUSY,
                      "a rebalance is already running");
        return;
    }
    err_t err = {0};
    const int drain = req->type == WIRE_REQ_NODE_DRAIN ? req->node_id : 0;
    const int rc = req->type == WIRE_REQ_NODE_ADD
                       ? server_node_add(self->server, req->endpoint, req->redundant, &err)
                       : server_rebalance(self->server, req->redundant, drain, &err);
    if (rc < 0) {
        s_reply_error(self, from, req->request_id,
                      errno == EBUSY ? WIRE_CLIENT_BUSY : WIRE_CLIENT_INVALID_ARGUMENT,
                      err.msg);
        return;
    }
    self->moving = true;
    self->move_from = *from;
    self->move_id = req->request_id;
}

/* Handles one waiting request; false when none was waiting. */
static bool s_handle_one(rpc_t *self)
{
    wire_peer_t from = {0};
    wire_request_t req;
    wire_client_error_t code = WIRE_CLIENT_OK;
    err_t err = {0};
    if (wire_request_recv(self->inbox, self->socket, &from, &req, &code, &err) < 0) {
        if (errno == EAGAIN)
            return false;
        if (errno == EPROTO) {
            lograte_printf(&self->logs, "malformed request",
                           "moe-coordinator: malformed request from %s: %s", s_who(&from),
                           err.msg);
            if (from.len > 0)
                s_reply_error(self, &from, req.request_id, code, err.msg);
        }
        return true;
    }
    switch (req.type) {
    case WIRE_REQ_GENERATE: s_generate(self, &from, &req); break;
    case WIRE_REQ_LOGITS: s_logits(self, &from, &req); break;
    case WIRE_REQ_STATUS: s_status(self, &from, &req); break;
    case WIRE_REQ_CANCEL: s_cancel(self, &from, &req); break;
    case WIRE_REQ_REBALANCE:
    case WIRE_REQ_NODE_DRAIN:
    case WIRE_REQ_NODE_ADD: s_rebalance(self, &from, &req); break;
    default:
        s_reply_error(self, &from, req.request_id, WIRE_CLIENT_INVALID_ARGUMENT,
                      "unknown request type");
    }
    return true;
}

static void s_handle(void *ctx)
{
    rpc_t *self = ctx;
    for (int i = 0; i < MAX_REQUESTS_PER_TURN; i++)
        if (!s_handle_one(self))
            break;
}

static void s_tick(void *ctx)
{
    rpc_t *self = ctx;
    lograte_tick(&self->logs);
    mover_result_t res;
    if (!self->moving || !server_move_result(self->server, &res))
        return;
    self->moving = false;
    if (!res.ok) {
        s_reply_error(self, &self->move_from, self->move_id,
                      res.refused ? WIRE_CLIENT_INVALID_ARGUMENT : WIRE_CLIENT_UNAVAILABLE,
                      res.message);
        return;
    }
    wire_reply_t rep = {.type = WIRE_REP_REBALANCED, .request_id = self->move_id,
                        .final = true, .move_summary = res.message,
                        .imbalance_before = res.imbalance_before,
                        .imbalance_after = res.imbalance_after,
                        .copies_loaded = res.copies_loaded,
                        .copies_dropped = res.copies_dropped};
    err_t err = {0};
    if (wire_reply_send(self->socket, &self->move_from, &rep, &err) < 0)
        s_unsent(self, &self->move_from, self->move_id, errno, &err);
}

rpc_t *rpc_new(void *zmq_ctx, server_t *server, const rpc_config_t *conf, err_t *err)
{
    rpc_t *self = mem_calloc(1, sizeof *self);
    if (!self) {
        err_set(err, ENOMEM, "out of memory for the client endpoint");
        return NULL;
    }
    lograte_init(&self->logs, stderr, "moe-coordinator", LOGRATE_BURST, LOGRATE_INTERVAL_S);
    self->server = server;
    const server_config_t *sc = server_config(server);
    self->n_status = server_max_nodes(server); /* nodes may join */
    self->status = mem_calloc((size_t)(self->n_status > 0 ? self->n_status : 1),
                              sizeof *self->status);
    if (!self->status) {
        err_set(err, ENOMEM, "out of memory for the client endpoint");
        goto fail;
    }
    wire_limits_t lim = {.max_prompt = sc->max_context};
    self->inbox = wire_inbox_new(&lim, err);
    if (!self->inbox)
        goto fail;
    int linger = 0, mandatory = 1, no_wait = 0, no_hwm = 0;
    size_t len = sizeof self->endpoint;
    self->socket = zmq_socket(zmq_ctx, ZMQ_ROUTER);
    /* ROUTER_MANDATORY: a reply to a client that has gone fails (EHOSTUNREACH)
     * instead of vanishing, so its sequence is cancelled and freed. */
    if (!self->socket || zmq_setsockopt(self->socket, ZMQ_LINGER, &linger, sizeof linger) < 0 ||
        zmq_setsockopt(self->socket, ZMQ_ROUTER_MANDATORY, &mandatory, sizeof mandatory) < 0 ||
        /* No send limit: with ROUTER_MANDATORY a full queue to a slow reader
         * would fail sends (EAGAIN); replies are bounded by max_tokens anyway. */
        zmq_setsockopt(self->socket, ZMQ_SNDHWM, &no_hwm, sizeof no_hwm) < 0 ||
        zmq_setsockopt(self->socket, ZMQ_RCVTIMEO, &no_wait, sizeof no_wait) < 0 ||
        wire_socket_set_limit(self->socket, &lim, err) < 0 ||
        (conf->curve_key && keypair_set_server(self->socket, conf->curve_key, "clients",
                                               err) < 0) ||
        endpoint_bind(self->socket, conf->bind, NULL) < 0 ||
        zmq_getsockopt(self->socket, ZMQ_LAST_ENDPOINT, self->endpoint, &len) < 0) {
        err_set(err, errno, "cannot bind the client endpoint %s: %s", conf->bind,
                zmq_strerror(errno));
        goto fail;
    }
    const server_frontend_t fe = {.ctx = self, .socket = self->socket, .fd = -1,
                                  .handle = s_handle, .deliver = s_deliver, .tick = s_tick};
    self->front = server_add_frontend(server, &fe);
    if (self->front < 0) {
        err_set(err, ENOSPC, "too many front ends");
        goto fail;
    }
    return self;

fail:
    rpc_destroy(&self);
    return NULL;
}

void rpc_destroy(rpc_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    rpc_t *self = *self_p;
    int saved = errno;
    lograte_fini(&self->logs);
    if (self->socket)
        zmq_close(self->socket);
    wire_inbox_destroy(&self->inbox);
    mem_free(self->status);
    mem_free(self);
    *self_p = NULL;
    errno = saved;
}

const char *rpc_endpoint(const rpc_t *self)
{
    return self->endpoint;
}
