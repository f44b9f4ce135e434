/* expert_server: see expert_server.h.
 *
 * Invariants: the ROUTER socket is only touched by the thread that calls
 * expert_server_run; every reply is sent from buffers sized in
 * expert_server_new; a request reaches experts_run only after wire_data_recv
 * has checked it against limits made from the model and max_rows.
 *
 * Batching: an EXPERT_REQUEST is copied into the batch (expert_batch) and
 * answered when no further one that may join is waiting: the loop drains
 * what the socket holds without waiting for more, so a lone request is run
 * at once. Any other message runs the batch first, so that a DROP or a
 * SHUTDOWN never overtakes requests that came before it.
 */
#include "expert_node/expert_server.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "core/blas.h"
#include "core/endpoint.h"
#include "core/lograte.h"
#include "core/mem.h"
#include "core/timer.h"
#include "engine/experts.h"
#include "engine/weights.h"
#include "expert_node/expert_batch.h"
#include "expert_node/expert_loader.h"
#include "expert_node/expert_set.h"
#include "expert_node/roster.h"
#include "kernels/compute.h"
#include "model/config.h"
#include "proto/data_plane.h"
#include "security/keypair.h"
#include "security/zap.h"

struct expert_server {
    int node_id;
    int max_rows;             /* rows per request */
    int max_assign;           /* assignments per request: max_rows * top_k */
    expert_set_t *set;        /* this node's experts only (no dense part) */
    compute_t *cx;            /* the experts' pool and code path */
    experts_t *experts;       /* scratch for max_rows / max_assign */
    expert_batch_t *batch;    /* EXPERT_REQUESTs waiting to run together */
    roster_t *roster;         /* the coordinators heard from lately */
    int n_coordinators;       /* roster_count at the last message */
    float *out;               /* (max_assign, hidden) partial sums or terms of a reply */
    int n_hosted;             /* (layer, expert) pairs hosted in MoE layers */
    int32_t *hosted_layer;    /* (n_layers * n_experts): the first n_hosted used */
    int32_t *hosted_expert;   /* (n_layers * n_experts) */
    char model_dir[4096];     /* where PLACE loads from */
    wformat_t format;         /* what PLACE loads as */
    uint64_t memory_budget;   /* bytes of experts; 0: no limit */
    int place_delay_ms;
    expert_loader_t *loader;  /* the PLACE loading now, or NULL */
    wire_peer_t place_from;   /* who asked for it */
    uint64_t place_id;        /* its request id */
    int32_t *place_layer;     /* (n_place) the pairs it loads */
    int32_t *place_expert;
    int n_place;
    uint64_t n_keep;          /* experts the node keeps after the PLACE */
    char model_id[WIRE_MAX_TEXT];
    wire_inbox_t *inbox;      /* received messages point into it */
    wire_outbox_t *outbox;    /* EXPERT_REPLYs in bf16 or fp8 are encoded in it */
    void *ctx;                /* ZeroMQ context, one per server */
    void *sock;               /* ROUTER, bound */
    zap_t *zap;               /* with CURVE: allows coordinators by key */
    char endpoint[WIRE_MAX_TEXT];
    char weights_text[128];   /* what the weights are held as, their size */
    char held_kind[96];       /* what they are held as ("f32"), from the first load */
    FILE *log;                /* NULL: quiet */
    lograte_t logs;           /* log lines, rate-limited per cause */
    unsigned long n_served;   /* EXPERT_REPLYs sent */
    unsigned long n_rejected; /* ERRORs sent */
    unsigned long n_calls;    /* expert computations (batches) run */
    unsigned long n_shared;   /* EXPERT_REPLYs of batches of more than one request */
};

/* The hosted lists from the set. A placement covers every layer; a dense
 * layer (deepseek's first ones) has no experts, so its slots are neither
 * loaded nor announced. Also the weights' text. */
static void s_update_hosted(expert_server_t *self)
{
    const config_t *cfg = &expert_set_weights(self->set)->cfg;
    expert_set_pairs(self->set, self->hosted_layer, self->hosted_expert);
    const int n = expert_set_count(self->set);
    int kept = 0;
    for (int i = 0; i < n; i++)
        if (config_layer_is_moe(cfg, self->hosted_layer[i])) {
            self->hosted_layer[kept] = self->hosted_layer[i];
            self->hosted_expert[kept++] = self->hosted_expert[i];
        }
    self->n_hosted = kept;
    snprintf(self->weights_text, sizeof self->weights_text, "%s, %.1f MiB",
             self->held_kind, (double)expert_set_bytes(self->set) / (1 << 20));
}

/* Bytes one hosted expert takes; 0 when none is held. */
static uint64_t s_expert_bytes(const expert_server_t *self)
{
    return self->n_hosted ? expert_set_bytes(self->set) / (uint64_t)self->n_hosted : 0;
}

/* Loads the node's experts and sizes every buffer from the model. */
static int s_load(expert_server_t *self, const expert_server_opts_t *opts, err_t *err)
{
    const placement_t *p = opts->placement;
    placement_node_t me = {p, opts->node_id};
    weights_select_t select = {.dense = false, .hosts = placement_node_hosts,
                               .hosts_ctx = &me, .format = opts->format, .log = opts->log,
                               .name = "moe-expert", .resident = opts->preload};
    weights_t *w = weights_load(opts->model_dir, &select, err);
    if (!w)
        return -1;
    char held[96];
    snprintf(self->weights_text, sizeof self->weights_text, "%s, %.1f MiB",
             weights_describe(w, held, sizeof held), (double)weights_bytes(w) / (1 << 20));
    snprintf(self->held_kind, sizeof self->held_kind, "%s", held);
    if (opts->preload)
        weights_preload(w, opts->log, "moe-expert");
    self->set = expert_set_new(&w, err);
    weights_destroy(&w);
    if (!self->set)
        return -1;
    const config_t *cfg = &expert_set_weights(self->set)->cfg;
    if (cfg->n_layers != placement_n_layers(p) || cfg->n_experts != placement_n_experts(p))
        return err_set(err, EINVAL, "the placement is for %d layers x %d experts but the "
                       "model in %s has %d x %d", placement_n_layers(p),
                       placement_n_experts(p), opts->model_dir, cfg->n_layers,
                       cfg->n_experts);
    if (opts->max_rows > INT_MAX / cfg->n_experts_per_tok)
        return err_set(err, EINVAL, "max rows %d is too large", opts->max_rows);
    self->max_rows = opts->max_rows;
    self->max_assign = opts->max_rows * cfg->n_experts_per_tok;
    /* gemm_small uses as many threads as OpenBLAS is set to. */
    self->cx = compute_new(blas_threads(), err);
    if (!self->cx)
        return -1;
    self->experts = experts_new(cfg, self->max_rows, self->max_assign, self->cx, err);
    if (!self->experts)
        return -1;
    self->batch = expert_batch_new(cfg, self->max_rows, self->max_assign, err);
    if (!self->batch)
        return -1;
    self->roster = roster_new(EXPERT_SERVER_ROSTER_WINDOW_S);
    if (!self->roster)
        return err_set(err, ENOMEM, "out of memory for the coordinators' roster");
    self->out = mem_alloc_aligned((size_t)self->max_assign * (size_t)cfg->hidden_size *
                                  sizeof(float));
    const size_t cells = (size_t)cfg->n_layers * (size_t)cfg->n_experts;
    self->hosted_layer = mem_calloc(cells, sizeof(int32_t));
    self->hosted_expert = mem_calloc(cells, sizeof(int32_t));
    if (!self->out || !self->hosted_layer || !self->hosted_expert)
        return err_set(err, ENOMEM, "out of memory for %d rows of %d", self->max_assign,
                       cfg->hidden_size);
    s_update_hosted(self);
    snprintf(self->model_dir, sizeof self->model_dir, "%s", opts->model_dir);
    self->format = opts->format;
    self->memory_budget = opts->memory_budget;
    self->place_delay_ms = opts->place_delay_ms;
    config_model_id(cfg, self->model_id, sizeof self->model_id);
    wire_limits_t lim = wire_limits_for_model(cfg, self->max_rows);
    self->inbox = wire_inbox_new(&lim, err);
    if (!self->inbox)
        return -1;
    /* A reply has up to one row per assignment, encoded here when the
     * request came in bf16 or fp8. */
    wire_limits_t reply = lim;
    reply.max_rows = self->max_assign;
    self->outbox = wire_outbox_new(&reply, err);
    return self->outbox ? 0 : -1;
}

/* With CURVE: the key checker (before the socket binds: without one, libzmq
 * lets every client in) and the socket's server key. */
static int s_secure(expert_server_t *self, const expert_server_opts_t *opts, err_t *err)
{
    if (!opts->curve_key && !opts->curve_coordinators)
        return 0;
    if (!opts->curve_key || !opts->curve_coordinators)
        return err_set(err, EINVAL, "CURVE needs both --curve-key and --curve-coordinators");
    keypair_t key;
    int rc = -1;
    char who[64];
    snprintf(who, sizeof who, "moe-expert: node %d", self->node_id);
    if (keypair_load(&key, opts->curve_key, err) == 0 &&
        (self->zap = zap_new(self->ctx, opts->curve_coordinators, who, self->log, err)) &&
        keypair_set_server(self->sock, &key, "data-plane", err) == 0)
        rc = 0;
    memset(&key, 0, sizeof key);
    return rc;
}

/* Makes the ROUTER socket and binds it. */
static int s_bind(expert_server_t *self, const expert_server_opts_t *opts, err_t *err)
{
    const char *endpoint = opts->bind;
    const config_t *cfg = &expert_set_weights(self->set)->cfg;
    wire_limits_t lim = wire_limits_for_model(cfg, self->max_rows);
    self->ctx = zmq_ctx_new();
    if (!self->ctx)
        return err_set(err, errno, "cannot create a ZeroMQ context: %s",
                       zmq_strerror(errno));
    self->sock = zmq_socket(self->ctx, ZMQ_ROUTER);
    if (!self->sock)
        return err_set(err, errno, "cannot create a socket: %s", zmq_strerror(errno));
    int zero = 0;
    /* Linger 0: at shutdown, replies to a peer that went away are dropped
     * instead of holding the process. Receive timeout 0: we poll first. */
    if (zmq_setsockopt(self->sock, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
        zmq_setsockopt(self->sock, ZMQ_RCVTIMEO, &zero, sizeof zero) < 0)
        return err_set(err, errno, "cannot set socket options: %s", zmq_strerror(errno));
    if (wire_socket_set_limit(self->sock, &lim, err) < 0 || s_secure(self, opts, err) < 0)
        return -1;
    if (endpoint_bind(self->sock, endpoint, err) < 0)
        return -1;
    size_t len = sizeof self->endpoint;
    if (zmq_getsockopt(self->sock, ZMQ_LAST_ENDPOINT, self->endpoint, &len) < 0)
        return err_set(err, errno, "cannot read the bound endpoint of %s: %s", endpoint,
                       zmq_strerror(errno));
    return 0;
}

expert_server_t *expert_server_new(const expert_server_opts_t *opts, err_t *err)
{
    assert(opts);
    assert(opts->model_dir);
    assert(opts->placement);
    assert(opts->bind);
    const int n_nodes = placement_n_nodes(opts->placement);
    if (opts->node_id < 1 || opts->node_id > n_nodes) {
        err_set(err, EINVAL, "node id %d is out of range: the placement has nodes 1..%d",
                opts->node_id, n_nodes);
        return NULL;
    }
    if (opts->max_rows < 1) {
        err_set(err, EINVAL, "max rows must be at least 1 (got %d)", opts->max_rows);
        return NULL;
    }
    expert_server_t *self = mem_calloc(1, sizeof *self);
    if (!self) {
        err_set(err, ENOMEM, "out of memory for the expert server");
        return NULL;
    }
    self->node_id = opts->node_id;
    self->log = opts->log;
    char who[64];
    snprintf(who, sizeof who, "moe-expert: node %d", opts->node_id);
    lograte_init(&self->logs, self->log, who, LOGRATE_BURST, LOGRATE_INTERVAL_S);
    if (s_load(self, opts, err) < 0 || s_bind(self, opts, err) < 0) {
        expert_server_destroy(&self);
        return NULL;
    }
    return self;
}

void expert_server_destroy(expert_server_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    expert_server_t *self = *self_p;
    int saved = errno;
    lograte_fini(&self->logs);
    expert_loader_destroy(&self->loader); /* before the context its socket lives in */
    mem_free(self->place_layer);
    mem_free(self->place_expert);
    if (self->sock)
        zmq_close(self->sock);
    zap_destroy(&self->zap); /* its sockets live in ctx */
    if (self->ctx)
        zmq_ctx_term(self->ctx);
    wire_inbox_destroy(&self->inbox);
    wire_outbox_destroy(&self->outbox);
    mem_free(self->hosted_expert);
    mem_free(self->hosted_layer);
    mem_free(self->out);
    roster_destroy(&self->roster);
    expert_batch_destroy(&self->batch);
    experts_destroy(&self->experts);
    compute_destroy(&self->cx);
    expert_set_destroy(&self->set);
    mem_free(self);
    *self_p = NULL;
    errno = saved;
}

const char *expert_server_endpoint(const expert_server_t *self)
{
    return self->endpoint;
}

int expert_server_n_hosted(const expert_server_t *self)
{
    return self->n_hosted;
}

const char *expert_server_weights_text(const expert_server_t *self)
{
    return self->weights_text;
}

/* ===== serving ================================================================ */

/* Who sent a message, for a person: "127.0.0.1" or "a peer". */
static const char *s_who(const wire_peer_t *from)
{
    return from && from->address[0] ? from->address : "a peer";
}

/* Logs one line (fmt, after "moe-expert: node N: ") under cause (static
 * text), rate-limited per cause: a flood of garbage or of vanishing peers
 * costs the log a few lines and a count. */
static void s_log(expert_server_t *self, const char *cause, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void s_log(expert_server_t *self, const char *cause, const char *fmt, ...)
{
    char line[2 * WIRE_MAX_TEXT];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    lograte_printf(&self->logs, cause, "moe-expert: node %d: %s", self->node_id, line);
}

/* A failed send loses one reply (the peer's own timeout handles that); only a
 * terminated context ends the loop. */
static int s_sent(expert_server_t *self, int rc, const wire_peer_t *to, uint64_t request_id,
                  const err_t *why, err_t *err)
{
    if (rc == 0)
        return 0;
    if (errno == ETERM)
        return err_set(err, ETERM, "the ZeroMQ context was terminated");
    const unsigned long long id = request_id;
    if (errno == EHOSTUNREACH)
        s_log(self, "peer went away before its answer",
              "peer %s went away before its answer (request %llu)", s_who(to), id);
    else
        s_log(self, "answer not sent", "cannot send an answer to %s (request %llu): %s",
              s_who(to), id, why->msg);
    return 0;
}

/* The cause under which a refused message is logged (static text). */
static const char *s_cause(wire_data_error_t code)
{
    switch (code) {
    case WIRE_DATA_ERR_VERSION: return "message of another protocol version";
    case WIRE_DATA_ERR_MALFORMED: return "malformed message";
    case WIRE_DATA_ERR_SHAPE: return "message whose shapes do not fit the model";
    case WIRE_DATA_ERR_UNKNOWN_EXPERT: return "request for an expert not hosted here";
    case WIRE_DATA_ERR_TOO_LARGE: return "request too large";
    case WIRE_DATA_ERR_UNEXPECTED: return "message of a type a node does not accept";
    case WIRE_DATA_ERR_INTERNAL: return "request failed on this node";
    default: return "request refused";
    }
}

static int s_send_error(expert_server_t *self, const wire_peer_t *to, uint64_t request_id,
                        wire_data_error_t code, const char *message, err_t *err)
{
    err_t why = {0};
    self->n_rejected++;
    s_log(self, s_cause(code), "%s from %s (request %llu): %s", s_cause(code), s_who(to),
          (unsigned long long)request_id, message);
    int rc = wire_data_send_error(self->sock, to, request_id, code, message, &why);
    return s_sent(self, rc, to, request_id, &why, err);
}

/* Answers one request of the batch: its rows of out, or the error its
 * computation gave. */
static int s_answer(expert_server_t *self, const expert_batch_part_t *p, int first, int n,
                    double seconds, err_t *err)
{
    err_t why = {0};
    const int hidden = expert_set_weights(self->set)->cfg.hidden_size;
    wire_data_t rep = {.type = WIRE_EXPERT_REPLY, .request_id = p->request_id,
                       .layer = expert_batch_layer(self->batch), .n_rows = n,
                       .hidden = hidden, .rows = self->out + (size_t)first * (size_t)hidden,
                       .dtype = p->dtype, /* the request's: any coordinator's --wire */
                       .compute_seconds = seconds};
    self->n_served++;
    int rc = wire_data_send_sized(self->sock, self->outbox, &p->from, &rep, NULL, &why);
    return s_sent(self, rc, &p->from, p->request_id, &why, err);
}

static int s_refuse_run(expert_server_t *self, const expert_batch_part_t *p, err_t *why,
                        err_t *err)
{
    /* wire_data_recv has checked the sizes, rows, weights and id ranges
     * against the limits, so what experts_run can still refuse (EINVAL) is an
     * expert that this node does not host. */
    wire_data_error_t code = errno == EINVAL ? WIRE_DATA_ERR_UNKNOWN_EXPERT
                             : errno == E2BIG ? WIRE_DATA_ERR_TOO_LARGE
                                              : WIRE_DATA_ERR_INTERNAL;
    err_wrap(why, "node %d", self->node_id);
    return s_send_error(self, &p->from, p->request_id, code, why->msg, err);
}

/* Runs the waiting EXPERT_REQUESTs in one computation and answers each with
 * its rows; its seconds are shared out by assignments. When the computation
 * fails (a request names an expert not held here), each request runs alone,
 * so that one bad request costs only its own answer. */
static int s_flush(expert_server_t *self, err_t *err)
{
    expert_batch_t *b = self->batch;
    const int n = expert_batch_count(b);
    if (n == 0)
        return 0;
    const weights_t *w = expert_set_weights(self->set);
    const expert_batch_part_t *last = expert_batch_part(b, n - 1);
    const double n_assign = (double)(last->assign0 + last->n_assign);
    err_t why = {0};
    double t0 = timer_now();
    const bool together = expert_batch_run(b, self->experts, w, self->out, &why) == 0;
    const double seconds = timer_now() - t0;
    self->n_calls++;
    if (together && n > 1)
        self->n_shared += (unsigned long)n;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const expert_batch_part_t *p = expert_batch_part(b, i);
        double share = seconds * (double)p->n_assign / n_assign;
        if (!together) {
            why = (err_t){0};
            t0 = timer_now();
            if (expert_batch_run_part(b, i, self->experts, w, self->out, &why) < 0) {
                rc = s_refuse_run(self, p, &why, err);
                continue;
            }
            share = timer_now() - t0;
        }
        rc = s_answer(self, p, expert_batch_reply_first(b, i), expert_batch_reply_rows(b, i),
                      share, err);
    }
    expert_batch_clear(b);
    return rc;
}

/* PLACE_REPLY: every pair held now. */
static int s_place_reply(expert_server_t *self, const wire_peer_t *to, uint64_t request_id,
                         err_t *err)
{
    err_t why = {0};
    wire_data_t rep = {.type = WIRE_PLACE_REPLY, .request_id = request_id,
                       .node_id = self->node_id, .model_id = self->model_id,
                       .weights = self->weights_text, .n_hosted = self->n_hosted,
                       .hosted_layer = self->hosted_layer,
                       .hosted_expert = self->hosted_expert,
                       .memory_budget = self->memory_budget,
                       .expert_bytes = s_expert_bytes(self),
                       .n_coordinators = self->n_coordinators};
    return s_sent(self, wire_data_send(self->sock, to, &rep, &why), to, request_id, &why, err);
}

/* PLACE: starts loading the pairs not held yet (answered when the loader is
 * done, s_place_done), or answers at once when there are none. */
static int s_place(expert_server_t *self, const wire_peer_t *from, const wire_data_t *m,
                   err_t *err)
{
    if (self->loader)
        return s_send_error(self, from, m->request_id, WIRE_DATA_ERR_BUSY,
                            "another PLACE is still loading", err);
    const config_t *cfg = &expert_set_weights(self->set)->cfg;
    int32_t *layer = mem_alloc((size_t)(m->n_hosted + 1) * sizeof(int32_t));
    int32_t *expert = mem_alloc((size_t)(m->n_hosted + 1) * sizeof(int32_t));
    int n = 0, rc = 0;
    if (!layer || !expert) {
        rc = s_send_error(self, from, m->request_id, WIRE_DATA_ERR_NO_ROOM,
                          "out of memory for the PLACE", err);
        goto done;
    }
    for (int i = 0; i < m->n_hosted; i++)
        if (config_layer_is_moe(cfg, m->hosted_layer[i]) &&
            !expert_set_holds(self->set, m->hosted_layer[i], m->hosted_expert[i])) {
            layer[n] = m->hosted_layer[i];
            expert[n++] = m->hosted_expert[i];
        }
    /* The budget is for the set the node keeps (m's whole list); for a
     * moment it also holds what it will drop (docs/OPERATIONS.md). */
    int n_keep = 0;
    for (int i = 0; i < m->n_hosted; i++)
        n_keep += config_layer_is_moe(cfg, m->hosted_layer[i]);
    const uint64_t each = s_expert_bytes(self);
    if (self->memory_budget && each && (uint64_t)n_keep * each > self->memory_budget) {
        char why[256];
        snprintf(why, sizeof why, "node %d: %d experts of %.2f MiB would pass its memory "
                 "budget of %.2f MiB", self->node_id, n_keep, (double)each / (1 << 20),
                 (double)self->memory_budget / (1 << 20));
        rc = s_send_error(self, from, m->request_id, WIRE_DATA_ERR_NO_ROOM, why, err);
        goto done;
    }
    if (n == 0) {
        rc = s_place_reply(self, from, m->request_id, err);
        goto done;
    }
    err_t why = {0};
    self->loader = expert_loader_start(self->ctx, self->model_dir, layer, expert, n,
                                       self->format, self->place_delay_ms, &why);
    if (!self->loader) {
        rc = s_send_error(self, from, m->request_id, WIRE_DATA_ERR_NO_ROOM, why.msg, err);
        goto done;
    }
    self->place_from = *from;
    self->place_id = m->request_id;
    self->place_layer = layer;
    self->place_expert = expert;
    self->n_place = n;
    self->n_keep = (uint64_t)n_keep;
    layer = expert = NULL; /* kept until the loader is done */
    s_log(self, "place", "loading %d experts in the background", n);
done:
    mem_free(layer);
    mem_free(expert);
    return rc;
}

/* The loader is done: its experts join the set (or the PLACE fails). */
static int s_place_done(expert_server_t *self, err_t *err)
{
    err_t why = {0};
    char msg[ERR_MSG_MAX + 64] = "";
    weights_t *part = expert_loader_finish(&self->loader, &why);
    if (part && expert_set_add(self->set, &part, &why) < 0)
        weights_destroy(&part);
    if (!part && !why.msg[0]) { /* added */
        s_update_hosted(self);
        /* A node that held no expert could not size one before loading. */
        if (self->memory_budget && self->n_keep * s_expert_bytes(self) > self->memory_budget) {
            snprintf(msg, sizeof msg, "node %d: the experts would take %.1f MiB, beyond its "
                     "memory budget of %.1f MiB", self->node_id,
                     (double)expert_set_bytes(self->set) / (1 << 20),
                     (double)self->memory_budget / (1 << 20));
            expert_set_drop(self->set, self->place_layer, self->place_expert, self->n_place);
            s_update_hosted(self);
        }
    } else {
        snprintf(msg, sizeof msg, "node %d: loading experts failed: %s", self->node_id,
                 why.msg);
    }
    mem_free(self->place_layer);
    mem_free(self->place_expert);
    self->place_layer = self->place_expert = NULL;
    self->n_place = 0;
    if (msg[0])
        return s_send_error(self, &self->place_from, self->place_id, WIRE_DATA_ERR_NO_ROOM,
                            msg, err);
    s_log(self, "place", "experts loaded; %d held (%s)", self->n_hosted, self->weights_text);
    return s_place_reply(self, &self->place_from, self->place_id, err);
}

/* The name of a message type that a node does not accept (static). */
static const char *s_type_name(wire_data_type_t type)
{
    switch (type) {
    case WIRE_HELLO_REPLY: return "HELLO_REPLY";
    case WIRE_EXPERT_REPLY: return "EXPERT_REPLY";
    case WIRE_HEARTBEAT_REPLY: return "HEARTBEAT_REPLY";
    default: return "this message type";
    }
}

/* A message from a coordinator: it counts as served (roster). */
static void s_heard(expert_server_t *self, const wire_peer_t *from)
{
    const double now = timer_now();
    const bool joined = roster_touch(self->roster, from, now);
    const int n = roster_count(self->roster, now);
    if (joined)
        s_log(self, "coordinators", "a coordinator at %s joins; serving %d coordinator%s",
              s_who(from), n, n == 1 ? "" : "s");
    else if (n < self->n_coordinators) /* noticed when the next message comes */
        s_log(self, "coordinators", "a coordinator went silent; serving %d coordinator%s",
              n, n == 1 ? "" : "s");
    self->n_coordinators = n;
}

/* Placement changes come from one coordinator; while several share the node
 * the others would route to experts it no longer holds (docs/OPERATIONS.md,
 * "Several coordinators"). Returns 1 after refusing, 0 to go on, -1. */
static int s_refuse_placement(expert_server_t *self, const wire_peer_t *from,
                              const wire_data_t *m, err_t *err)
{
    if (self->n_coordinators <= 1)
        return 0;
    char why[256];
    snprintf(why, sizeof why, "node %d serves %d coordinators: experts are placed or "
             "dropped only in a cluster of one coordinator", self->node_id,
             self->n_coordinators);
    return s_send_error(self, from, m->request_id, WIRE_DATA_ERR_UNEXPECTED, why, err) < 0
               ? -1 : 1;
}

/* Receives and answers one message, or keeps an EXPERT_REQUEST in the batch.
 * Returns 1 after SHUTDOWN, 0 to go on, -1 when the socket failed. */
static int s_serve_one(expert_server_t *self, err_t *err)
{
    wire_peer_t from = {0};
    wire_data_t m = {0};
    wire_data_error_t code = WIRE_DATA_OK;
    err_t why = {0};
    if (wire_data_recv(self->inbox, self->sock, true, &from, &m, &code, &why) < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return 0;
        if (errno == EPROTO)
            return s_send_error(self, &from, m.request_id,
                                code != WIRE_DATA_OK ? code : WIRE_DATA_ERR_MALFORMED,
                                why.msg, err);
        if (errno == ENOMEM) /* the message is consumed; the node goes on */
            return s_send_error(self, &from, m.request_id, WIRE_DATA_ERR_INTERNAL,
                                why.msg, err);
        return err_set(err, errno, "receive failed: %s",
                       why.msg[0] ? why.msg : zmq_strerror(errno));
    }
    if (m.type == WIRE_HELLO || m.type == WIRE_HEARTBEAT || m.type == WIRE_EXPERT_REQUEST ||
        m.type == WIRE_PLACE || m.type == WIRE_DROP)
        s_heard(self, &from);
    if (m.type == WIRE_EXPERT_REQUEST) {
        if (!expert_batch_fits(self->batch, &m) && s_flush(self, err) < 0)
            return -1;
        expert_batch_add(self->batch, &from, &m);
        return 0;
    }
    /* m stays valid: the batch's rows were copied out of the inbox. */
    if (s_flush(self, err) < 0)
        return -1;
    int refused = 0;
    wire_data_t rep = {.request_id = m.request_id, .n_coordinators = self->n_coordinators};
    switch (m.type) {
    case WIRE_HELLO:
        rep.type = WIRE_HELLO_REPLY;
        rep.node_id = self->node_id;
        rep.model_id = self->model_id;
        rep.weights = self->weights_text;
        rep.n_hosted = self->n_hosted;
        rep.hosted_layer = self->hosted_layer;
        rep.hosted_expert = self->hosted_expert;
        rep.memory_budget = self->memory_budget;
        rep.expert_bytes = s_expert_bytes(self);
        return s_sent(self, wire_data_send(self->sock, &from, &rep, &why), &from,
                      m.request_id, &why, err);
    case WIRE_PLACE:
        if ((refused = s_refuse_placement(self, &from, &m, err)) != 0)
            return refused < 0 ? -1 : 0;
        return s_place(self, &from, &m, err);
    case WIRE_DROP:
        if ((refused = s_refuse_placement(self, &from, &m, err)) != 0)
            return refused < 0 ? -1 : 0;
        expert_set_drop(self->set, m.hosted_layer, m.hosted_expert, m.n_hosted);
        s_update_hosted(self);
        s_log(self, "drop", "dropped %d experts; %d held (%s)", m.n_hosted, self->n_hosted,
              self->weights_text);
        return s_place_reply(self, &from, m.request_id, err);
    case WIRE_HEARTBEAT:
        rep.type = WIRE_HEARTBEAT_REPLY;
        return s_sent(self, wire_data_send(self->sock, &from, &rep, &why), &from,
                      m.request_id, &why, err);
    case WIRE_SHUTDOWN:
        s_log(self, "shutdown", "shutdown requested by %s (request %llu)", s_who(&from),
              (unsigned long long)m.request_id);
        return 1;
    case WIRE_ERROR:
        s_log(self, "error reported by a peer", "error reported by %s (request %llu): %s",
              s_who(&from), (unsigned long long)m.request_id,
              m.error_message ? m.error_message : wire_data_error_name(m.error_code));
        return 0;
    default: /* HELLO_REPLY, EXPERT_REPLY, HEARTBEAT_REPLY */
        snprintf(why.msg, sizeof why.msg, "node %d: an expert node does not accept %s",
                 self->node_id, s_type_name(m.type));
        return s_send_error(self, &from, m.request_id, WIRE_DATA_ERR_UNEXPECTED, why.msg,
                            err);
    }
}

int expert_server_run(expert_server_t *self, const volatile sig_atomic_t *interrupted,
                      err_t *err)
{
    assert(self);
    assert(interrupted);
    while (!*interrupted) {
        /* Nothing queued: the pool's workers sleep now rather than spin
         * while the coordinator, on the same cores in a local cluster,
         * computes. */
        int events = 0;
        size_t size = sizeof events;
        if (zmq_getsockopt(self->sock, ZMQ_EVENTS, &events, &size) == 0 &&
            !(events & ZMQ_POLLIN))
            pool_rest(compute_pool(self->cx));
        zmq_pollitem_t items[2] = {{.socket = self->sock, .events = ZMQ_POLLIN}};
        if (self->loader)
            items[1] = (zmq_pollitem_t){.socket = expert_loader_socket(self->loader),
                                        .events = ZMQ_POLLIN};
        /* With requests in the batch, only what is already waiting may join. */
        const bool pending = expert_batch_count(self->batch) > 0;
        int rc = zmq_poll(items, self->loader ? 2 : 1, pending ? 0 : EXPERT_SERVER_POLL_MS);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0)
            return err_set(err, errno, "poll failed: %s", zmq_strerror(errno));
        lograte_tick(&self->logs);
        if (self->loader && (items[1].revents & ZMQ_POLLIN) && s_place_done(self, err) < 0)
            return -1;
        if (rc == 0 || !(items[0].revents & ZMQ_POLLIN)) {
            if (s_flush(self, err) < 0)
                return -1;
            continue;
        }
        rc = s_serve_one(self, err);
        if (rc < 0)
            return -1;
        if (rc == 1)
            break;
    }
    lograte_flush(&self->logs);
    if (self->log)
        fprintf(self->log, "moe-expert: node %d stops: %lu requests served in %lu "
                "computations (%lu shared one with other requests), %lu rejected\n",
                self->node_id, self->n_served, self->n_calls, self->n_shared,
                self->n_rejected);
    return 0;
}
