/* server: see server.h. */
#include "coordinator/server.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "coordinator/load.h"
#include "coordinator/stepper.h"
#include "core/mem.h"
#include "core/timer.h"
#include "engine/forward.h"
#include "engine/kvcache.h"
#include "model/config.h"
#include "proto/wire.h"

enum { POLL_MS = 100 };     /* how often the loop looks at the stop flag and links */
enum { NAME_MAX_LEN = 1024 };
enum { REASON_MAX = 512 };
#define SERVER_VERSION "0.14" /* moe_build_info: the issue the API arrived with */

/* A node joining the cluster (server_node_add). */
typedef struct join {
    bool active;
    bool moving;               /* up, and its rebalance runs */
    bool done;                 /* result holds the outcome */
    int peer;                  /* its index */
    int redundant;
    double deadline;           /* timer_now() by which it must be up */
    mover_result_t result;
} join_t;

struct server {
    const weights_t *w;
    dispatch_t *dispatch;
    peer_t **peers;
    const server_node_info_t *nodes;
    server_config_t conf;
    char model_name[NAME_MAX_LEN];
    char model_arch[NAME_MAX_LEN];
    char weights[NAME_MAX_LEN];    /* what w is held as, and its size (status) */
    forward_t *fw;
    kvcache_t *kv;                 /* LOGITS requests, max_context positions */
    stepper_t *stepper;
    sched_t *sched;
    server_frontend_t fronts[SERVER_MAX_FRONTENDS];
    int n_fronts;
    server_node_status_t *node_status; /* (max peers of the dispatch) */
    int *live;                     /* (n_layers * n_experts) live replicas, for health */
    char reason[REASON_MAX];
    /* counters */
    uint64_t requests_served;
    uint64_t rows_forwarded;
    double seconds_forward;
    uint64_t outcomes[SERVER_OUTCOMES];
    uint64_t prompt_tokens;
    uint64_t generated_tokens;
    /* the same, and the rest, for /metrics and STATUS (core/metrics) */
    metrics_t *m;
    metric_child_t *m_outcome[SERVER_OUTCOMES];
    metric_child_t *m_prompt, *m_generated, *m_ttft, *m_tpot;
    metric_child_t *m_queue, *m_running, *m_kv_ratio, *m_kv_bytes, *m_rows;
    metric_child_t *m_dispatch_seconds, *m_overlap_seconds;
    metric_t *m_up, *m_rtt, *m_failovers, *m_sent, *m_received, *m_expert_tokens;
    double *node_tokens_seen;      /* (n_layers * n_experts * max peers) as last rendered */
    double *rates;                 /* (n_layers * n_experts) the load at the last status */
    double *node_load;             /* (max peers) the same per node */
    metric_t *m_expert_load, *m_node_load, *m_busy_ratio, *m_busy_seconds;
    metric_t *m_node_coords;    /* coordinators each node serves */
    mover_t *mover;                /* borrowed; NULL: the placement is fixed */
    server_join_fn join_fn;        /* makes the peer of a joining node (coordinator.c) */
    server_leave_fn leave_fn;
    void *join_ctx;
    join_t join;                   /* the node joining now (server_node_add) */
};

const char *server_outcome_name(server_outcome_t outcome)
{
    static const char *const names[SERVER_OUTCOMES] = {
        "stop", "length", "invalid", "busy", "unavailable", "internal", "cancelled", "deadline",
    };
    return outcome < SERVER_OUTCOMES ? names[outcome] : "internal";
}

static server_outcome_t s_outcome_of(sched_error_t code)
{
    switch (code) {
    case SCHED_OK: return SERVER_OUT_STOP;
    case SCHED_INVALID: return SERVER_OUT_INVALID;
    case SCHED_BUSY: return SERVER_OUT_BUSY;
    case SCHED_UNAVAILABLE: return SERVER_OUT_UNAVAILABLE;
    case SCHED_CANCELLED: return SERVER_OUT_CANCELLED;
    case SCHED_DEADLINE: return SERVER_OUT_DEADLINE;
    case SCHED_INTERNAL: break;
    }
    return SERVER_OUT_INTERNAL;
}

/* Counts one request's outcome. */
static void s_outcome(server_t *self, server_outcome_t o)
{
    self->outcomes[o]++;
    metric_child_add(self->m_outcome[o], 1);
}

/* The metric families (names as docs/HTTP.md lists them) and the handles of
 * what the loop updates, so that an update never allocates. */
static int s_metrics_new(server_t *self, err_t *err)
{
    static const char *const outcome[] = {"outcome", NULL};
    static const char *const node[] = {"node", NULL};
    static const char *const lex[] = {"layer", "expert", "node", NULL};
    static const char *const build[] = {"version", "protocol", "model", "arch", NULL};
    double b[16];
    const int nb = metrics_buckets_exponential(0.001, 2, 16, b); /* 1 ms .. 33 s */
    metrics_t *m = self->m = metrics_new();
    if (!m)
        return err_set(err, ENOMEM, "out of memory for the metrics");
    metric_t *req = metrics_counter(m, "moe_requests_total",
                                    "Requests ended, by outcome (stop, length, invalid, busy, "
                                    "unavailable, internal, cancelled, deadline).",
                                    outcome, err);
    metric_t *prompt = metrics_counter(m, "moe_prompt_tokens_total",
                                       "Prompt tokens of accepted requests.", NULL, err);
    metric_t *gen = metrics_counter(m, "moe_generation_tokens_total", "Tokens generated.",
                                    NULL, err);
    metric_t *ttft = metrics_histogram(m, "moe_time_to_first_token_seconds",
                                       "Time from a request's acceptance to its first token.",
                                       NULL, b, nb, err);
    metric_t *tpot = metrics_histogram(m, "moe_time_per_output_token_seconds",
                                       "Mean time per generated token after the first, per "
                                       "request.", NULL, b, nb, err);
    metric_t *queue = metrics_gauge(m, "moe_queue_length", "Requests waiting for a slot.",
                                    NULL, err);
    metric_t *running = metrics_gauge(m, "moe_running_sequences", "Sequences in slots.",
                                      NULL, err);
    metric_t *kv = metrics_gauge(m, "moe_kv_cache_usage_ratio",
                                 "Share of the KV cache budget held (0..1).", NULL, err);
    metric_t *kvb = metrics_gauge(m, "moe_kv_cache_bytes", "Bytes of KV cache held.", NULL,
                                  err);
    self->m_up = metrics_gauge(m, "moe_node_up", "1 when the expert node is live.", node, err);
    self->m_rtt = metrics_gauge(m, "moe_node_rtt_seconds",
                                "Last round-trip time of a batch to the node.", node, err);
    self->m_failovers = metrics_counter(m, "moe_node_failovers_total",
                                        "Batches whose work was sent again elsewhere after "
                                        "the node failed.", node, err);
    self->m_sent = metrics_counter(m, "moe_node_sent_bytes_total",
                                   "Bytes of expert requests sent to the node.", node, err);
    self->m_received = metrics_counter(m, "moe_node_received_bytes_total",
                                       "Bytes of expert replies received from the node.",
                                       node, err);
    self->m_expert_tokens = metrics_counter(m, "moe_expert_tokens_total",
                                            "Token rows routed to an expert of a layer, by "
                                            "the node that ran them.", lex, err);
    static const char *const le[] = {"layer", "expert", NULL};
    self->m_expert_load = metrics_gauge(m, "moe_expert_load_rows_per_second",
                                        "Token rows routed to an expert of a layer per "
                                        "second, moving average (--load-half-life-s).", le,
                                        err);
    self->m_node_load = metrics_gauge(m, "moe_node_load_rows_per_second",
                                      "Rows per second the node's experts take under the "
                                      "placement (each expert's load split over its copies).",
                                      node, err);
    self->m_busy_ratio = metrics_gauge(m, "moe_node_busy_ratio",
                                       "Seconds the node spends computing per second, "
                                       "moving average.", node, err);
    self->m_busy_seconds = metrics_counter(m, "moe_node_busy_seconds_total",
                                           "Seconds the node spent computing batches.",
                                           node, err);
    self->m_node_coords = metrics_gauge(m, "moe_node_coordinators",
                                        "Coordinators the node serves, this one included "
                                        "(0: the node does not say).", node, err);
    metric_t *away = metrics_counter(m, "moe_dispatch_seconds_total",
                                     "Seconds with routed experts away on the nodes (two "
                                     "micro-batches away together count once).", NULL, err);
    metric_t *overlap = metrics_counter(m, "moe_overlap_seconds_total",
                                        "Of those, seconds the coordinator computed (shared "
                                        "experts, the other micro-batch).", NULL, err);
    metric_t *info = metrics_gauge(m, "moe_build_info",
                                   "Always 1; the labels say what runs.", build, err);
    static const char *const format[] = {"format", NULL};
    metric_t *wire = metrics_gauge(m, "moe_wire_format_info", "Always 1; the label is the "
                                   "format rows travel in to the nodes and back (--wire).",
                                   format, err);
    metric_t *rows = metrics_counter(m, "moe_dispatch_rows_total",
                                     "Token rows sent to the nodes, over the MoE layers: the "
                                     "node byte counters over this are the bytes per token "
                                     "per layer.", NULL, err);
    if (!req || !prompt || !gen || !ttft || !tpot || !queue || !running || !kv || !kvb ||
        !self->m_up || !self->m_rtt || !self->m_failovers || !self->m_sent ||
        !self->m_received || !self->m_expert_tokens || !info || !self->m_expert_load ||
        !self->m_node_load || !self->m_busy_ratio || !self->m_busy_seconds || !wire || !rows ||
        !self->m_node_coords || !away || !overlap)
        return -1;
    for (int o = 0; o < SERVER_OUTCOMES; o++)
        if (!(self->m_outcome[o] = metric_child(req, (const char *const[]){
                  server_outcome_name((server_outcome_t)o)})))
            return err_set(err, ENOMEM, "out of memory for the metrics");
    char proto[16];
    snprintf(proto, sizeof proto, "%d", WIRE_PROTOCOL_VERSION);
    if (!(self->m_prompt = metric_child(prompt, NULL)) ||
        !(self->m_generated = metric_child(gen, NULL)) ||
        !(self->m_ttft = metric_child(ttft, NULL)) || !(self->m_tpot = metric_child(tpot, NULL)) ||
        !(self->m_queue = metric_child(queue, NULL)) ||
        !(self->m_running = metric_child(running, NULL)) ||
        !(self->m_kv_ratio = metric_child(kv, NULL)) ||
        !(self->m_kv_bytes = metric_child(kvb, NULL)) ||
        !(self->m_rows = metric_child(rows, NULL)) ||
        metrics_set(wire, (const char *const[]){
                        wire_tensor_format_name(dispatch_wire(self->dispatch))}, 1) < 0 ||
        !(self->m_dispatch_seconds = metric_child(away, NULL)) ||
        !(self->m_overlap_seconds = metric_child(overlap, NULL)) ||
        metrics_set(info, (const char *const[]){SERVER_VERSION, proto, self->model_name,
                                                 self->model_arch}, 1) < 0)
        return err_set(err, ENOMEM, "out of memory for the metrics");
    return 0;
}

server_t *server_new(const weights_t *w, dispatch_t *dispatch, peer_t **peers,
                     const server_node_info_t *nodes, int n_peers,
                     const server_config_t *conf, err_t *err)
{
    const config_t *cfg = &w->cfg;
    server_t *self = mem_calloc(1, sizeof *self);
    if (!self) {
        err_set(err, ENOMEM, "out of memory for the server");
        return NULL;
    }
    self->w = w;
    self->dispatch = dispatch;
    self->peers = peers;
    self->nodes = nodes;
    (void)n_peers; /* the dispatch counts the nodes, which may join later */
    self->conf = *conf;
    snprintf(self->model_name, sizeof self->model_name, "%s",
             conf->model_name ? conf->model_name : "");
    snprintf(self->model_arch, sizeof self->model_arch, "%s",
             conf->model_arch ? conf->model_arch : "");
    self->conf.model_name = self->model_name;
    self->conf.model_arch = self->model_arch;
    char held[96];
    snprintf(self->weights, sizeof self->weights, "%s, %.1f MiB",
             weights_describe(w, held, sizeof held), (double)weights_bytes(w) / (1 << 20));
    self->fw = forward_new(w, conf->prefill_rows, conf->max_context, dispatch_run, dispatch,
                           err);
    if (!self->fw)
        goto fail;
    /* The coordinator computes while the routed experts are on the nodes:
     * the shared experts, and the other micro-batch (forward.h). */
    forward_set_moe_async(self->fw, dispatch_start, dispatch_finish, conf->micro_batches);
    self->kv = kvcache_new(cfg, conf->max_context, err);
    if (!self->kv)
        goto fail;
    self->stepper = stepper_new(cfg, self->fw, conf->max_seqs, dispatch_row_lost, dispatch,
                                err);
    if (!self->stepper)
        goto fail;
    sched_config_t sc = {.max_seqs = conf->max_seqs, .queue_limit = conf->queue_limit,
                         .step_tokens = conf->prefill_rows, .kv_memory = conf->kv_memory,
                         .vocab_size = cfg->vocab_size, .n_eos = conf->n_eos,
                         .tokenizer = conf->tokenizer,
                         .default_deadline_ms = conf->default_deadline_ms};
    memcpy(sc.eos, conf->eos, sizeof sc.eos);
    const sched_engine_t engine = stepper_engine(self->stepper);
    self->sched = sched_new(&engine, &sc, err);
    if (!self->sched)
        goto fail;
    /* Per-node arrays have room for the nodes that may join (dispatch.h). */
    const int mp = dispatch_max_peers(dispatch) > 0 ? dispatch_max_peers(dispatch) : 1;
    self->node_status = mem_calloc((size_t)mp, sizeof *self->node_status);
    self->live = mem_calloc((size_t)cfg->n_layers * cfg->n_experts, sizeof *self->live);
    self->node_tokens_seen = mem_calloc((size_t)cfg->n_layers * cfg->n_experts * (size_t)mp,
                                        sizeof *self->node_tokens_seen);
    self->rates = mem_calloc((size_t)cfg->n_layers * cfg->n_experts, sizeof *self->rates);
    self->node_load = mem_calloc((size_t)mp, sizeof *self->node_load);
    if (!self->node_status || !self->live || !self->node_tokens_seen || !self->rates ||
        !self->node_load) {
        err_set(err, ENOMEM, "out of memory for the server");
        goto fail;
    }
    if (s_metrics_new(self, err) < 0)
        goto fail;
    return self;

fail:
    server_destroy(&self);
    return NULL;
}

void server_destroy(server_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    server_t *self = *self_p;
    int saved = errno;
    forward_destroy(&self->fw);
    kvcache_destroy(&self->kv);
    sched_destroy(&self->sched);
    stepper_destroy(&self->stepper);
    mem_free(self->node_status);
    mem_free(self->live);
    mem_free(self->node_tokens_seen);
    mem_free(self->rates);
    mem_free(self->node_load);
    metrics_destroy(&self->m);
    mem_free(self);
    *self_p = NULL;
    errno = saved;
}

int server_add_frontend(server_t *self, const server_frontend_t *fe)
{
    if (self->n_fronts == SERVER_MAX_FRONTENDS)
        return -1;
    self->fronts[self->n_fronts] = *fe;
    return self->n_fronts++;
}

const weights_t *server_weights(const server_t *self)
{
    return self->w;
}

const server_config_t *server_config(const server_t *self)
{
    return &self->conf;
}

int server_tokenize(server_t *self, const char *text, size_t len, bool add_special,
                    int32_t **ids, size_t *n, err_t *err)
{
    if (!self->conf.tokenizer)
        return err_set(err, ENOTSUP, "the model has no tokenizer.json: send the prompt as "
                       "token ids");
    /* The tokenizer's scratch is the loop thread's: only it calls here. */
    return tokenizer_encode((tokenizer_t *)self->conf.tokenizer, text, len, add_special, ids,
                            n, err);
}

/* Checks a prompt against the vocabulary and the context; -1 with err. */
static int s_check_prompt(const server_t *self, const int32_t *prompt, int n, int max_tokens,
                          err_t *err)
{
    const int vocab = self->w->cfg.vocab_size;
    if (n < 1)
        return err_set(err, EINVAL, "the prompt is empty");
    if (max_tokens < 0 || (long)n + max_tokens > self->conf.max_context)
        return err_set(err, EINVAL, "prompt (%d tokens) plus max tokens (%d) exceed the "
                       "context limit of %d positions", n, max_tokens, self->conf.max_context);
    for (int i = 0; i < n; i++)
        if (prompt[i] < 0 || prompt[i] >= vocab)
            return err_set(err, EINVAL, "token id %d at index %d is outside the vocabulary "
                           "[0, %d)", (int)prompt[i], i, vocab);
    return 0;
}

/* The per-client limits; -1 with *code and err when over. */
static int s_check_limits(server_t *self, const sched_client_t *client,
                          const sched_request_t *req, sched_error_t *code, err_t *err)
{
    const int max_tokens = self->conf.max_tokens_limit;
    const int per_client = self->conf.max_requests_per_client;
    if (max_tokens > 0 && req->max_tokens > max_tokens) {
        *code = SCHED_INVALID;
        return err_set(err, EINVAL, "max tokens %d exceeds this coordinator's limit of %d "
                       "per request", req->max_tokens, max_tokens);
    }
    int mine = per_client > 0 ? sched_client_requests(self->sched, client) : 0;
    if (per_client > 0 && mine >= per_client) {
        *code = SCHED_BUSY;
        return err_set(err, EBUSY, "this client already has %d requests queued or running, "
                       "the limit per client: wait for one to finish", mine);
    }
    return 0;
}

static int s_submit(server_t *self, const sched_client_t *client, const server_request_t *req,
                    sched_error_t *code, err_t *err)
{
    if (s_check_limits(self, client, &req->gen, code, err) < 0)
        return -1;
    sched_request_t gen = req->gen;
    int32_t *ids = NULL;
    *code = SCHED_INVALID;
    if (req->text) {
        size_t n = 0;
        if (server_tokenize(self, req->text, req->text_len, req->add_special, &ids, &n,
                            err) < 0) {
            *code = errno == ENOTSUP ? SCHED_INVALID : sched_error_of(errno);
            return -1;
        }
        if (n > (size_t)self->conf.max_context) {
            mem_free(ids);
            return err_set(err, EINVAL, "the prompt text is %zu tokens, more than the "
                           "context limit of %d positions", n, self->conf.max_context);
        }
        gen.prompt = ids;
        gen.n_prompt = (int)n;
    }
    int rc = s_check_prompt(self, gen.prompt, gen.n_prompt, gen.max_tokens, err);
    if (rc == 0)
        rc = sched_submit(self->sched, client, &gen, code, err);
    if (rc == 0) {
        self->prompt_tokens += (uint64_t)gen.n_prompt;
        metric_child_add(self->m_prompt, gen.n_prompt);
    }
    mem_free(ids);
    return rc;
}

int server_submit(server_t *self, const sched_client_t *client, const server_request_t *req,
                  sched_error_t *code, err_t *err)
{
    int rc = s_submit(self, client, req, code, err);
    if (rc < 0)
        s_outcome(self, s_outcome_of(*code));
    return rc;
}

int server_cancel(server_t *self, const sched_client_t *client, uint64_t request_id)
{
    return sched_cancel(self->sched, client, request_id);
}

int server_drop(server_t *self, const sched_client_t *client, uint64_t request_id)
{
    int rc = sched_drop(self->sched, client, request_id);
    if (rc == 0)
        s_outcome(self, SERVER_OUT_CANCELLED);
    return rc;
}

int server_logits(server_t *self, const int32_t *prompt, int n, float **out,
                  sched_error_t *code, err_t *err)
{
    *out = NULL;
    *code = SCHED_INVALID;
    if (s_check_prompt(self, prompt, n, 0, err) < 0)
        return -1;
    const int vocab = self->w->cfg.vocab_size;
    float *all = mem_alloc((size_t)n * vocab * sizeof(float));
    if (!all) {
        *code = SCHED_INTERNAL;
        return err_set(err, ENOMEM, "out of memory for the logits");
    }
    kvcache_truncate(self->kv, 0);
    const double t0 = timer_now();
    int rc = forward_run(self->fw, self->kv, prompt, n, FORWARD_LOGITS_ALL, all, err);
    self->seconds_forward += timer_now() - t0;
    if (rc < 0) {
        *code = sched_error_of(errno);
        mem_free(all);
        return -1;
    }
    self->rows_forwarded += (uint64_t)n;
    self->requests_served++;
    *out = all;
    return 0;
}

/* The nodes in the cluster now (nodes may join: dispatch_add_peer). */
static int s_n_peers(const server_t *self)
{
    return dispatch_n_peers(self->dispatch);
}

/* The pairs peer p hosts in the placement in use. */
static int s_hosted(const server_t *self, int p, const int32_t **layer, const int32_t **expert)
{
    if (self->mover)
        return mover_hosted(self->mover, p, layer, expert);
    *layer = self->nodes[p].hosted_layer;
    *expert = self->nodes[p].hosted_expert;
    return self->nodes[p].n_hosted;
}

/* Health: every (MoE layer, expert) needs a node that is up and hosts it. */
static bool s_health(server_t *self)
{
    const config_t *cfg = &self->w->cfg;
    memset(self->live, 0, (size_t)cfg->n_layers * cfg->n_experts * sizeof *self->live);
    for (int p = 0; p < s_n_peers(self); p++) {
        if (!peer_is_up(self->peers[p]))
            continue;
        const int32_t *hl, *he;
        const int n = s_hosted(self, p, &hl, &he);
        for (int j = 0; j < n; j++)
            self->live[hl[j] * cfg->n_experts + he[j]]++;
    }
    self->reason[0] = '\0';
    for (int l = 0; l < cfg->n_layers; l++) {
        if (!config_layer_is_moe(cfg, l))
            continue;
        for (int e = 0; e < cfg->n_experts; e++) {
            if (self->live[l * cfg->n_experts + e] > 0)
                continue;
            int down = 0;
            const char *why = "";
            for (int p = 0; p < s_n_peers(self); p++)
                if (!peer_is_up(self->peers[p])) {
                    if (!down++)
                        why = peer_last_error(self->peers[p]);
                }
            snprintf(self->reason, sizeof self->reason, "expert %d of layer %d has no live "
                     "replica (%d of %d nodes down%s%s)", e, l, down, s_n_peers(self),
                     why[0] ? ": " : "", why);
            return false;
        }
    }
    return true;
}

void server_status(server_t *self, server_status_t *out)
{
    dispatch_check_links(self->dispatch);
    const load_t *load = dispatch_load(self->dispatch);
    const double now = timer_now();
    load_route_rates(load, now, self->rates);
    dispatch_node_load(self->dispatch, self->rates, self->node_load);
    for (int p = 0; p < s_n_peers(self); p++) {
        const peer_t *peer = self->peers[p];
        const int32_t *hl, *he;
        const int n_hosted = s_hosted(self, p, &hl, &he);
        self->node_status[p] = (server_node_status_t){
            .node_id = peer_node_id(peer), .endpoint = peer_endpoint(peer),
            .up = peer_is_up(peer), .n_hosted = n_hosted,
            .hosted_layer = hl, .hosted_expert = he,
            .batches = peer_batches(peer), .rtt_last_ms = peer_rtt_last_ms(peer),
            .rtt_mean_ms = peer_rtt_mean_ms(peer), .last_error = peer_last_error(peer),
            .weights = peer_weights(peer), .coordinators = peer_n_coordinators(peer),
            .bytes_sent = dispatch_node_stats(self->dispatch)[p].bytes_sent,
            .bytes_received = dispatch_node_stats(self->dispatch)[p].bytes_received,
            .failovers = dispatch_node_stats(self->dispatch)[p].failovers,
            .load = self->node_load[p], .busy_ratio = load_busy_ratio(load, p, now),
            .busy_seconds = load_busy_total(load, p),
        };
    }
    const dispatch_stats_t *ds = dispatch_stats(self->dispatch);
    *out = (server_status_t){
        .model = self->model_name, .model_arch = self->model_arch,
        .weights = self->weights,
        .wire = wire_tensor_format_name(dispatch_wire(self->dispatch)),
        .n_nodes = s_n_peers(self), .nodes = self->node_status,
        .n_layers = self->w->cfg.n_layers, .n_experts = self->w->cfg.n_experts,
        .expert_tokens = dispatch_expert_tokens(self->dispatch),
        .expert_load = self->rates, .load_half_life_s = load_half_life(load),
        .requests_served = self->requests_served,
        .rows_forwarded = self->rows_forwarded, .dispatch_calls = ds->calls,
        .dispatch_rows = ds->rows,
        .bytes_sent = ds->bytes_sent, .bytes_received = ds->bytes_received,
        .failovers = ds->failovers, .seconds_forward = self->seconds_forward,
        .seconds_dispatch = ds->seconds_total, .seconds_node_compute = ds->seconds_node_compute,
        .seconds_overlap = forward_overlap_seconds(self->fw),
        .sequences_running = sched_running(self->sched),
        .requests_queued = sched_queued(self->sched),
        .kv_bytes = sched_kv_bytes(self->sched), .kv_budget = self->conf.kv_memory,
        .max_seqs = self->conf.max_seqs, .queue_limit = self->conf.queue_limit,
        .prompt_tokens = self->prompt_tokens, .generated_tokens = self->generated_tokens,
    };
    memcpy(out->outcomes, self->outcomes, sizeof out->outcomes);
    out->healthy = s_health(self);
    out->health_reason = self->reason;
}

/* Counts an event before its front end sees it. */
static void s_count(server_t *self, const sched_event_t *ev)
{
    switch (ev->kind) {
    case SCHED_TOKEN:
        self->generated_tokens++;
        metric_child_add(self->m_generated, 1);
        if (ev->index == 0 && ev->seconds_first > 0)
            metric_child_observe(self->m_ttft, ev->seconds_first);
        break;
    case SCHED_DONE:
        self->requests_served++;
        s_outcome(self, ev->finish_reason && strcmp(ev->finish_reason, "length") == 0
                            ? SERVER_OUT_LENGTH
                            : SERVER_OUT_STOP);
        if (ev->generated_tokens > 1)
            metric_child_observe(self->m_tpot, (ev->seconds - ev->seconds_first) /
                                                   (ev->generated_tokens - 1));
        break;
    case SCHED_FAILED:
        s_outcome(self, s_outcome_of(ev->code));
        break;
    }
}

/* Brings the gauges and the dispatch's counters up to now. */
static void s_metrics_update(server_t *self)
{
    server_status_t st;
    server_status(self, &st);
    metric_child_set(self->m_queue, st.requests_queued);
    metric_child_set(self->m_running, st.sequences_running);
    metric_child_set(self->m_kv_bytes, (double)st.kv_bytes);
    metric_child_set(self->m_kv_ratio, st.kv_budget ? (double)st.kv_bytes / st.kv_budget : 0);
    metric_child_add(self->m_rows, (double)st.dispatch_rows - metric_child_value(self->m_rows));
    metric_child_add(self->m_dispatch_seconds,
                     st.seconds_dispatch - metric_child_value(self->m_dispatch_seconds));
    metric_child_add(self->m_overlap_seconds,
                     st.seconds_overlap - metric_child_value(self->m_overlap_seconds));
    for (int p = 0; p < st.n_nodes; p++) {
        const server_node_status_t *n = &st.nodes[p];
        char id[16];
        snprintf(id, sizeof id, "%d", n->node_id);
        const char *const v[] = {id};
        metrics_set(self->m_up, v, n->up ? 1 : 0);
        metrics_set(self->m_rtt, v, n->rtt_last_ms / 1e3);
        /* counters: add what the dispatch counted since the last render */
        metric_child_t *c;
        if ((c = metric_child(self->m_failovers, v)))
            metric_child_add(c, (double)n->failovers - metric_child_value(c));
        if ((c = metric_child(self->m_sent, v)))
            metric_child_add(c, (double)n->bytes_sent - metric_child_value(c));
        if ((c = metric_child(self->m_received, v)))
            metric_child_add(c, (double)n->bytes_received - metric_child_value(c));
        if ((c = metric_child(self->m_busy_seconds, v)))
            metric_child_add(c, n->busy_seconds - metric_child_value(c));
        metrics_set(self->m_node_load, v, n->load);
        metrics_set(self->m_busy_ratio, v, n->busy_ratio);
        metrics_set(self->m_node_coords, v, n->coordinators);
    }
    for (int l = 0; l < st.n_layers; l++)
        for (int e = 0; e < st.n_experts; e++) {
            const double rate = st.expert_load[(size_t)l * st.n_experts + e];
            char ls[24], es[24];
            snprintf(ls, sizeof ls, "%d", l);
            snprintf(es, sizeof es, "%d", e);
            /* Experts never routed to are left out, as moe_expert_tokens_total's are. */
            if (st.expert_tokens[(size_t)l * st.n_experts + e] > 0)
                metrics_set(self->m_expert_load, (const char *const[]){ls, es}, rate);
        }
    const uint64_t *nt = dispatch_node_tokens(self->dispatch);
    const size_t routes = (size_t)st.n_layers * st.n_experts;
    for (size_t r = 0; r < routes; r++)
        for (int p = 0; p < st.n_nodes; p++) {
            const size_t k = r * (size_t)dispatch_max_peers(self->dispatch) + p;
            if ((double)nt[k] == self->node_tokens_seen[k])
                continue;
            char l[24], e[24], id[16];
            snprintf(l, sizeof l, "%zu", r / st.n_experts);
            snprintf(e, sizeof e, "%zu", r % st.n_experts);
            snprintf(id, sizeof id, "%d", st.nodes[p].node_id);
            if (metrics_add(self->m_expert_tokens, (const char *const[]){l, e, id},
                            (double)nt[k] - self->node_tokens_seen[k]) == 0)
                self->node_tokens_seen[k] = (double)nt[k];
        }
}

int server_metrics_text(server_t *self, char **out, size_t *len)
{
    s_metrics_update(self);
    return metrics_render_text(self->m, out, len);
}

json_t *server_metrics_json(server_t *self)
{
    s_metrics_update(self);
    return metrics_to_json(self->m);
}

/* Hands every event to its front end; a client that has gone, or that
 * needs no more, has its request freed. */
static void s_deliver_all(server_t *self)
{
    sched_event_t ev;
    while (sched_next_event(self->sched, &ev)) {
        s_count(self, &ev);
        const int f = ev.client->front;
        if (f < 0 || f >= self->n_fronts)
            continue;
        int rc = self->fronts[f].deliver(self->fronts[f].ctx, &ev);
        if (rc != 0 && ev.kind == SCHED_TOKEN) {
            const sched_client_t client = *ev.client;
            if (sched_drop(self->sched, &client, ev.request_id) == 0)
                s_outcome(self, rc > 0 ? SERVER_OUT_STOP : SERVER_OUT_CANCELLED);
        }
    }
}

void server_set_mover(server_t *self, mover_t *mover)
{
    self->mover = mover;
}

int server_rebalance(server_t *self, int redundant, int drain_node, err_t *err)
{
    if (!self->mover)
        return err_set(err, ENOTSUP, "this coordinator's placement is fixed");
    if (self->join.active)
        return err_set(err, EBUSY, "a node is joining");
    if (drain_node < 0 || drain_node > s_n_peers(self))
        return err_set(err, EINVAL, "no node %d (nodes are 1..%d)", drain_node,
                       s_n_peers(self));
    dispatch_check_links(self->dispatch); /* plan with the nodes' state of now */
    return mover_start(self->mover, redundant, drain_node - 1, err);
}

void server_set_joiner(server_t *self, server_join_fn join, server_leave_fn leave, void *ctx)
{
    self->join_fn = join;
    self->leave_fn = leave;
    self->join_ctx = ctx;
}

int server_node_add(server_t *self, const char *endpoint, int redundant, err_t *err)
{
    if (!self->join_fn || !self->mover)
        return err_set(err, ENOTSUP, "this coordinator cannot take new nodes");
    if (self->join.active || mover_busy(self->mover))
        return err_set(err, EBUSY, "a rebalance or another node's join is running");
    const int n = s_n_peers(self);
    for (int p = 0; p < n; p++)
        if (strcmp(peer_endpoint(self->peers[p]), endpoint) == 0)
            return err_set(err, EEXIST, "node %d is already at %s", p + 1, endpoint);
    if (n >= dispatch_max_peers(self->dispatch))
        return err_set(err, ENOSPC, "the coordinator has room for %d nodes (--max-nodes)",
                       dispatch_max_peers(self->dispatch));
    if (mover_may_move(self->mover, err) < 0)
        return -1;
    if (!self->join_fn(self->join_ctx, n + 1, endpoint, err))
        return -1;
    if (dispatch_add_peer(self->dispatch, err) < 0 || mover_add_node(self->mover, err) < 0) {
        if (s_n_peers(self) > n)
            dispatch_remove_last_peer(self->dispatch);
        self->leave_fn(self->join_ctx, n + 1);
        return -1;
    }
    self->join = (join_t){.active = true, .peer = n, .redundant = redundant,
                                          .deadline = timer_now() +
                                                      mover_timeout_ms(self->mover) / 1e3};
    fprintf(stderr, "moe-coordinator: node %d (%s) joining\n", n + 1, endpoint);
    return 0;
}

/* The joining node: up -> its rebalance; not up in time -> it is let go. */
static void s_join_tick(server_t *self, double now)
{
    if (!self->join.active || self->join.done)
        return;
    mover_result_t *res = &self->join.result;
    peer_t *peer = self->peers[self->join.peer];
    const int id = self->join.peer + 1;
    if (self->join.moving) {
        mover_result_t moved;
        if (!mover_take_result(self->mover, &moved))
            return;
        *res = moved;
        snprintf(res->message, sizeof res->message, "node %d joined at %.100s; %.380s", id,
                 peer_endpoint(peer), moved.message);
        self->join.done = true;
        return;
    }
    if (peer_is_up(peer)) {
        if (mover_busy(self->mover))
            return; /* an automatic move runs: the node's comes after it */
        err_t err = {0};
        if (mover_start(self->mover, self->join.redundant, -1, &err) < 0) {
            *res = (mover_result_t){.ok = false};
            snprintf(res->message, sizeof res->message, "node %d joined at %.100s but hosts "
                     "nothing: %.360s", id, peer_endpoint(peer), err.msg);
            self->join.done = true;
            return;
        }
        self->join.moving = true;
        return;
    }
    if (now < self->join.deadline)
        return;
    *res = (mover_result_t){.ok = false};
    snprintf(res->message, sizeof res->message, "node %d at %.100s did not join within %d "
             "ms: %.300s; it is not part of the cluster", id, peer_endpoint(peer),
             mover_timeout_ms(self->mover), peer_last_error(peer));
    mover_remove_last_node(self->mover);
    dispatch_remove_last_peer(self->dispatch);
    self->leave_fn(self->join_ctx, id);
    self->join.done = true;
}

int server_max_nodes(const server_t *self)
{
    return dispatch_max_peers(self->dispatch);
}

bool server_move_result(server_t *self, mover_result_t *out)
{
    if (self->join.active) {
        if (!self->join.done)
            return false;
        *out = self->join.result;
        self->join = (join_t){0};
        return true;
    }
    return self->mover && mover_take_result(self->mover, out);
}

int server_run(server_t *self, volatile sig_atomic_t *stop, err_t *err)
{
    zmq_pollitem_t items[SERVER_MAX_FRONTENDS];
    while (!*stop) {
        const bool busy = sched_has_work(self->sched);
        for (int f = 0; f < self->n_fronts; f++)
            items[f] = (zmq_pollitem_t){.socket = self->fronts[f].socket,
                                        .fd = self->fronts[f].fd, .events = ZMQ_POLLIN};
        int n = zmq_poll(items, self->n_fronts, busy ? 0 : POLL_MS);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return err_set(err, errno, "polling the front ends: %s", zmq_strerror(errno));
        }
        dispatch_check_links(self->dispatch);
        if (self->mover) { /* between two steps: no layer call is in flight */
            mover_tick(self->mover, timer_now());
            s_join_tick(self, timer_now());
        }
        for (int f = 0; f < self->n_fronts; f++)
            if (self->fronts[f].tick)
                self->fronts[f].tick(self->fronts[f].ctx);
        /* Between steps: each front end takes its waiting requests (bounded,
         * so that a flood cannot starve the running sequences). */
        for (int f = 0; f < self->n_fronts; f++)
            if (items[f].revents & ZMQ_POLLIN) {
                self->fronts[f].handle(self->fronts[f].ctx);
                s_deliver_all(self); /* cancels and refusals */
            }
        if (sched_has_work(self->sched)) {
            sched_step(self->sched, &self->seconds_forward, &self->rows_forwarded);
            s_deliver_all(self);
        }
    }
    return 0;
}
