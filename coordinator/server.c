/* server: see server.h. */
#include "coordinator/server.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "coordinator/stepper.h"
#include "core/mem.h"
#include "core/timer.h"
#include "engine/forward.h"
#include "engine/kvcache.h"
#include "model/config.h"

enum { POLL_MS = 100 };     /* how often the loop looks at the stop flag and links */
enum { NAME_MAX_LEN = 1024 };
enum { REASON_MAX = 512 };

const double server_hist_bounds[SERVER_HIST_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
};

struct server {
    const weights_t *w;
    dispatch_t *dispatch;
    peer_t **peers;
    const server_node_info_t *nodes;
    int n_peers;
    server_config_t conf;
    char model_name[NAME_MAX_LEN];
    char model_arch[NAME_MAX_LEN];
    forward_t *fw;
    kvcache_t *kv;                 /* LOGITS requests, max_context positions */
    stepper_t *stepper;
    sched_t *sched;
    server_frontend_t fronts[SERVER_MAX_FRONTENDS];
    int n_fronts;
    server_node_status_t *node_status; /* (n_peers) */
    int *live;                     /* (n_layers * n_experts) live replicas, for health */
    char reason[REASON_MAX];
    /* counters */
    uint64_t requests_served;
    uint64_t rows_forwarded;
    double seconds_forward;
    uint64_t outcomes[SERVER_OUTCOMES];
    uint64_t prompt_tokens;
    uint64_t generated_tokens;
    server_hist_t ttft;
    server_hist_t tpot;
};

const char *server_outcome_name(server_outcome_t outcome)
{
    static const char *const names[SERVER_OUTCOMES] = {
        "ok", "invalid", "busy", "unavailable", "internal", "cancelled", "deadline",
    };
    return outcome < SERVER_OUTCOMES ? names[outcome] : "internal";
}

static server_outcome_t s_outcome_of(sched_error_t code)
{
    switch (code) {
    case SCHED_OK: return SERVER_OUT_OK;
    case SCHED_INVALID: return SERVER_OUT_INVALID;
    case SCHED_BUSY: return SERVER_OUT_BUSY;
    case SCHED_UNAVAILABLE: return SERVER_OUT_UNAVAILABLE;
    case SCHED_CANCELLED: return SERVER_OUT_CANCELLED;
    case SCHED_DEADLINE: return SERVER_OUT_DEADLINE;
    case SCHED_INTERNAL: break;
    }
    return SERVER_OUT_INTERNAL;
}

static void s_hist_add(server_hist_t *h, double v)
{
    int b = 0;
    while (b < SERVER_HIST_BUCKETS && v > server_hist_bounds[b])
        b++;
    h->counts[b]++;
    h->count++;
    h->sum += v;
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
    self->n_peers = n_peers;
    self->conf = *conf;
    snprintf(self->model_name, sizeof self->model_name, "%s",
             conf->model_name ? conf->model_name : "");
    snprintf(self->model_arch, sizeof self->model_arch, "%s",
             conf->model_arch ? conf->model_arch : "");
    self->conf.model_name = self->model_name;
    self->conf.model_arch = self->model_arch;
    self->fw = forward_new(w, conf->prefill_rows, conf->max_context, dispatch_start, dispatch,
                           err);
    if (!self->fw)
        goto fail;
    /* Shared experts run while the routed ones are on the nodes. */
    forward_set_moe_finish(self->fw, dispatch_finish);
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
    self->node_status = mem_calloc((size_t)(n_peers > 0 ? n_peers : 1),
                                   sizeof *self->node_status);
    self->live = mem_calloc((size_t)cfg->n_layers * cfg->n_experts, sizeof *self->live);
    if (!self->node_status || !self->live) {
        err_set(err, ENOMEM, "out of memory for the server");
        goto fail;
    }
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
    if (rc == 0)
        self->prompt_tokens += (uint64_t)gen.n_prompt;
    mem_free(ids);
    return rc;
}

int server_submit(server_t *self, const sched_client_t *client, const server_request_t *req,
                  sched_error_t *code, err_t *err)
{
    int rc = s_submit(self, client, req, code, err);
    if (rc < 0)
        self->outcomes[s_outcome_of(*code)]++;
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
        self->outcomes[SERVER_OUT_CANCELLED]++;
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

/* Health: every (MoE layer, expert) needs a node that is up and hosts it. */
static bool s_health(server_t *self)
{
    const config_t *cfg = &self->w->cfg;
    memset(self->live, 0, (size_t)cfg->n_layers * cfg->n_experts * sizeof *self->live);
    for (int p = 0; p < self->n_peers; p++) {
        if (!peer_is_up(self->peers[p]))
            continue;
        const server_node_info_t *ni = &self->nodes[p];
        for (int j = 0; j < ni->n_hosted; j++)
            self->live[ni->hosted_layer[j] * cfg->n_experts + ni->hosted_expert[j]]++;
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
            for (int p = 0; p < self->n_peers; p++)
                if (!peer_is_up(self->peers[p])) {
                    if (!down++)
                        why = peer_last_error(self->peers[p]);
                }
            snprintf(self->reason, sizeof self->reason, "expert %d of layer %d has no live "
                     "replica (%d of %d nodes down%s%s)", e, l, down, self->n_peers,
                     why[0] ? ": " : "", why);
            return false;
        }
    }
    return true;
}

void server_status(server_t *self, server_status_t *out)
{
    dispatch_check_links(self->dispatch);
    for (int p = 0; p < self->n_peers; p++) {
        const peer_t *peer = self->peers[p];
        self->node_status[p] = (server_node_status_t){
            .node_id = peer_node_id(peer), .endpoint = peer_endpoint(peer),
            .up = peer_is_up(peer), .n_hosted = self->nodes[p].n_hosted,
            .hosted_layer = self->nodes[p].hosted_layer,
            .hosted_expert = self->nodes[p].hosted_expert,
            .batches = peer_batches(peer), .rtt_last_ms = peer_rtt_last_ms(peer),
            .rtt_mean_ms = peer_rtt_mean_ms(peer), .last_error = peer_last_error(peer),
        };
    }
    const dispatch_stats_t *ds = dispatch_stats(self->dispatch);
    *out = (server_status_t){
        .model = self->model_name, .model_arch = self->model_arch,
        .n_nodes = self->n_peers, .nodes = self->node_status,
        .n_layers = self->w->cfg.n_layers, .n_experts = self->w->cfg.n_experts,
        .expert_tokens = dispatch_expert_tokens(self->dispatch),
        .requests_served = self->requests_served,
        .rows_forwarded = self->rows_forwarded, .dispatch_calls = ds->calls,
        .bytes_sent = ds->bytes_sent, .bytes_received = ds->bytes_received,
        .failovers = ds->failovers, .seconds_forward = self->seconds_forward,
        .seconds_dispatch = ds->seconds_total, .seconds_node_compute = ds->seconds_node_compute,
        .seconds_overlap = forward_overlap_seconds(self->fw),
        .sequences_running = sched_running(self->sched),
        .requests_queued = sched_queued(self->sched),
        .kv_bytes = sched_kv_bytes(self->sched), .kv_budget = self->conf.kv_memory,
        .max_seqs = self->conf.max_seqs, .queue_limit = self->conf.queue_limit,
        .prompt_tokens = self->prompt_tokens, .generated_tokens = self->generated_tokens,
        .ttft = self->ttft, .tpot = self->tpot,
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
        break;
    case SCHED_DONE:
        self->outcomes[SERVER_OUT_OK]++;
        self->requests_served++;
        if (ev->generated_tokens > 0) {
            s_hist_add(&self->ttft, ev->seconds_first);
            if (ev->generated_tokens > 1)
                s_hist_add(&self->tpot, (ev->seconds - ev->seconds_first) /
                                            (ev->generated_tokens - 1));
        }
        break;
    case SCHED_FAILED:
        self->outcomes[s_outcome_of(ev->code)]++;
        break;
    }
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
                self->outcomes[rc > 0 ? SERVER_OUT_OK : SERVER_OUT_CANCELLED]++;
        }
    }
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
