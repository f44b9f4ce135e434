/* rpc: see rpc.h. */
#include "coordinator/rpc.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "core/endpoint.h"
#include "core/lograte.h"
#include "core/mem.h"
#include "core/timer.h"
#include "engine/forward.h"
#include "engine/kvcache.h"
#include "coordinator/sched.h"
#include "coordinator/stepper.h"

enum { POLL_MS = 100 }; /* how often the loop looks at the stop flag and links */
enum { MAX_REQUESTS_PER_STEP = 256 }; /* requests taken between two steps */

struct rpc {
    const weights_t *w;
    dispatch_t *dispatch;
    peer_t **peers;
    const rpc_node_info_t *nodes;
    int n_peers;
    rpc_config_t conf;
    char endpoint[WIRE_MAX_TEXT];
    char model_name[WIRE_MAX_TEXT];  /* conf.model_name, copied */
    char model_arch[WIRE_MAX_TEXT];  /* conf.model_arch, copied */
    char weights[WIRE_MAX_TEXT];     /* what w is held as, and its size */
    void *socket;                  /* ROUTER for clients */
    wire_inbox_t *inbox;
    forward_t *fw;                 /* experts through dispatch_start/finish */
    kvcache_t *kv;                 /* LOGITS requests, max_context positions */
    stepper_t *stepper;            /* the scheduler's steps over fw */
    sched_t *sched;                /* GENERATE requests, batched */
    wire_node_status_t *status;    /* (n_peers) */
    uint64_t requests_served;
    uint64_t rows_forwarded;       /* token rows through the forward pass */
    double seconds_forward;        /* inside forward_run */
    lograte_t logs;                /* stderr, rate-limited per cause */
};

/* forward_run, timed and counted for the status time split. */
static int s_forward(rpc_t *self, const int32_t *tokens, int n, forward_logits_t want,
                     float *logits, err_t *err)
{
    const double t0 = timer_now();
    int rc = forward_run(self->fw, self->kv, tokens, n, want, logits, err);
    self->seconds_forward += timer_now() - t0;
    if (rc == 0)
        self->rows_forwarded += (uint64_t)n;
    return rc;
}

rpc_t *rpc_new(void *zmq_ctx, const weights_t *w, dispatch_t *dispatch, peer_t **peers,
               const rpc_node_info_t *nodes, int n_peers, const rpc_config_t *conf,
               err_t *err)
{
    const config_t *cfg = &w->cfg;
    rpc_t *self = mem_calloc(1, sizeof *self);
    if (!self) {
        err_set(err, ENOMEM, "out of memory for the client endpoint");
        return NULL;
    }
    lograte_init(&self->logs, stderr, "moe-coordinator", LOGRATE_BURST, LOGRATE_INTERVAL_S);
    self->w = w;
    self->dispatch = dispatch;
    self->peers = peers;
    self->nodes = nodes;
    self->n_peers = n_peers;
    self->conf = *conf;
    snprintf(self->model_name, sizeof self->model_name, "%s", conf->model_name);
    self->conf.model_name = self->model_name;
    snprintf(self->model_arch, sizeof self->model_arch, "%s",
             conf->model_arch ? conf->model_arch : "");
    self->conf.model_arch = self->model_arch;
    char held[96];
    snprintf(self->weights, sizeof self->weights, "%s, %.1f MiB",
             weights_describe(w, held, sizeof held), (double)weights_bytes(w) / (1 << 20));
    wire_limits_t lim = {.max_prompt = conf->max_context};
    self->inbox = wire_inbox_new(&lim, err);
    if (!self->inbox)
        goto fail;
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
    self->status = mem_calloc((size_t)n_peers, sizeof *self->status);
    if (!self->status) {
        err_set(err, ENOMEM, "out of memory for the client endpoint");
        goto fail;
    }
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
    forward_destroy(&self->fw);
    kvcache_destroy(&self->kv);
    sched_destroy(&self->sched);
    stepper_destroy(&self->stepper);
    mem_free(self->status);
    mem_free(self);
    *self_p = NULL;
    errno = saved;
}

const char *rpc_endpoint(const rpc_t *self)
{
    return self->endpoint;
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

/* Checks a prompt request; replies with the error and returns -1 if bad. */
static int s_check_prompt(rpc_t *self, const wire_peer_t *to, const wire_request_t *req,
                          int max_tokens)
{
    char msg[256];
    const int vocab = self->w->cfg.vocab_size;
    if (req->n_prompt < 1)
        snprintf(msg, sizeof msg, "the prompt is empty");
    else if (max_tokens < 0 || (long)req->n_prompt + max_tokens > self->conf.max_context)
        snprintf(msg, sizeof msg, "prompt (%d) plus max tokens (%d) exceed the context "
                 "limit of %d positions", req->n_prompt, max_tokens, self->conf.max_context);
    else {
        for (int i = 0; i < req->n_prompt; i++)
            if (req->prompt[i] < 0 || req->prompt[i] >= vocab) {
                snprintf(msg, sizeof msg, "token id %d at index %d is outside the "
                         "vocabulary [0, %d)", (int)req->prompt[i], i, vocab);
                goto bad;
            }
        return 0;
    }
bad:
    s_reply_error(self, to, req->request_id, WIRE_CLIENT_INVALID_ARGUMENT, msg);
    return -1;
}

/* Delivers a scheduler event to its client; -1 when the client has gone. */
static int s_deliver(rpc_t *self, const sched_event_t *ev)
{
    err_t err = {0};
    switch (ev->kind) {
    case SCHED_TOKEN: {
        wire_reply_t rep = {.type = WIRE_REP_TOKENS, .request_id = ev->request_id,
                            .n_tokens = 1, .tokens = &ev->token, .text = ev->text,
                            .text_len = ev->text_len};
        if (wire_reply_send(self->socket, ev->client, &rep, &err) == 0)
            return 0;
        if (errno == EHOSTUNREACH)
            return -1; /* the caller frees its sequence; nothing to log */
        s_unsent(self, ev->client, ev->request_id, errno, &err);
        return 0;
    }
    case SCHED_DONE: {
        wire_reply_t done = {.type = WIRE_REP_TOKENS, .request_id = ev->request_id,
                             .final = true, .prompt_tokens = ev->prompt_tokens,
                             .generated_tokens = ev->generated_tokens, .seconds = ev->seconds,
                             .text = ev->text, .text_len = ev->text_len,
                             .finish_reason = ev->finish_reason};
        if (wire_reply_send(self->socket, ev->client, &done, &err) == 0)
            self->requests_served++;
        else
            s_unsent(self, ev->client, ev->request_id, errno, &err);
        return 0;
    }
    case SCHED_FAILED:
        s_reply_error(self, ev->client, ev->request_id, ev->code, ev->message);
        return 0;
    }
    return 0;
}

/* Delivers every event the scheduler has; a client that has gone gets no
 * more, and its sequence is freed. */
static void s_deliver_all(rpc_t *self)
{
    sched_event_t ev;
    while (sched_next_event(self->sched, &ev))
        if (s_deliver(self, &ev) < 0) {
            const wire_peer_t client = *ev.client;
            sched_drop(self->sched, &client, ev.request_id);
        }
}

/* A text prompt becomes ids with the model's tokenizer (its template's special
 * tokens added, as Hugging Face does by default). *ids is mem_alloc'd. */
static int s_tokenize(rpc_t *self, const wire_peer_t *to, wire_request_t *req, int32_t **ids)
{
    err_t err = {0};
    size_t n = 0;
    if (!self->conf.tokenizer) {
        s_reply_error(self, to, req->request_id, WIRE_CLIENT_INVALID_ARGUMENT,
                      "the model has no tokenizer.json: send the prompt as token ids");
        return -1;
    }
    if (tokenizer_encode((tokenizer_t *)self->conf.tokenizer, req->prompt_text,
                         req->prompt_text_len, 1, ids, &n, &err) < 0) {
        s_reply_error(self, to, req->request_id,
                      wire_client_error_of(errno), err.msg);
        return -1;
    }
    if (n > (size_t)self->conf.max_context) {
        char msg[160];
        snprintf(msg, sizeof msg, "the prompt text is %zu tokens, more than the context "
                 "limit of %d positions", n, self->conf.max_context);
        s_reply_error(self, to, req->request_id, WIRE_CLIENT_INVALID_ARGUMENT, msg);
        mem_free(*ids);
        *ids = NULL;
        return -1;
    }
    req->prompt = *ids;
    req->n_prompt = (int)n;
    return 0;
}

/* The per-client limits; replies with the error and returns -1 when over. */
static int s_check_limits(rpc_t *self, const wire_peer_t *to, const wire_request_t *req)
{
    char msg[256];
    const int max_tokens = self->conf.max_tokens_limit;
    const int per_client = self->conf.max_requests_per_client;
    if (max_tokens > 0 && req->max_tokens > max_tokens) {
        snprintf(msg, sizeof msg, "max tokens %d exceeds this coordinator's limit of %d "
                 "per request", req->max_tokens, max_tokens);
        s_reply_error(self, to, req->request_id, WIRE_CLIENT_INVALID_ARGUMENT, msg);
        return -1;
    }
    int mine = per_client > 0 ? sched_client_requests(self->sched, to) : 0;
    if (per_client > 0 && mine >= per_client) {
        snprintf(msg, sizeof msg, "this client already has %d requests queued or running, "
                 "the limit per client: wait for one to finish", mine);
        s_reply_error(self, to, req->request_id, WIRE_CLIENT_BUSY, msg);
        return -1;
    }
    return 0;
}

static void s_generate(rpc_t *self, const wire_peer_t *to, wire_request_t *req)
{
    int32_t *ids = NULL;
    if (s_check_limits(self, to, req) < 0)
        return;
    if (req->prompt_text && s_tokenize(self, to, req, &ids) < 0)
        return;
    if (s_check_prompt(self, to, req, req->max_tokens) == 0) {
        wire_client_error_t code;
        err_t err = {0};
        if (sched_submit(self->sched, to, req, &code, &err) < 0)
            s_reply_error(self, to, req->request_id, code, err.msg);
    }
    mem_free(ids);
}

static void s_cancel(rpc_t *self, const wire_peer_t *to, const wire_request_t *req)
{
    if (sched_cancel(self->sched, to, req->cancel_id) < 0)
        s_reply_error(self, to, req->request_id, WIRE_CLIENT_INVALID_ARGUMENT,
                      "no running or waiting request with that id");
    s_deliver_all(self);
}

static void s_logits(rpc_t *self, const wire_peer_t *to, const wire_request_t *req)
{
    if (s_check_prompt(self, to, req, 0) < 0)
        return;
    const int vocab = self->w->cfg.vocab_size;
    err_t err = {0};
    float *all = mem_alloc((size_t)req->n_prompt * vocab * sizeof(float));
    if (!all) {
        s_reply_error(self, to, req->request_id, WIRE_CLIENT_INTERNAL,
                      "out of memory for the logits");
        return;
    }
    kvcache_truncate(self->kv, 0);
    if (s_forward(self, req->prompt, req->n_prompt, FORWARD_LOGITS_ALL, all, &err) < 0) {
        s_reply_error(self, to, req->request_id, wire_client_error_of(errno), err.msg);
    } else {
        wire_reply_t rep = {.type = WIRE_REP_LOGITS, .request_id = req->request_id,
                            .final = true, .rows = req->n_prompt, .vocab = vocab,
                            .logits = all};
        if (wire_reply_send(self->socket, to, &rep, &err) == 0)
            self->requests_served++;
    }
    mem_free(all);
}

static void s_status(rpc_t *self, const wire_peer_t *to, const wire_request_t *req)
{
    dispatch_check_links(self->dispatch);
    for (int p = 0; p < self->n_peers; p++) {
        const peer_t *peer = self->peers[p];
        self->status[p] = (wire_node_status_t){
            .node_id = peer_node_id(peer), .endpoint = peer_endpoint(peer),
            .up = peer_is_up(peer), .n_hosted = self->nodes[p].n_hosted,
            .hosted_layer = self->nodes[p].hosted_layer,
            .hosted_expert = self->nodes[p].hosted_expert,
            .batches = peer_batches(peer), .rtt_last_ms = peer_rtt_last_ms(peer),
            .rtt_mean_ms = peer_rtt_mean_ms(peer), .last_error = peer_last_error(peer),
            .weights = peer_weights(peer),
        };
    }
    wire_reply_t rep = {
        .type = WIRE_REP_STATUS, .request_id = req->request_id, .final = true,
        .model = self->conf.model_name, .model_arch = self->conf.model_arch,
        .weights = self->weights,
        .n_nodes = self->n_peers, .nodes = self->status,
        .n_layers = self->w->cfg.n_layers, .n_experts = self->w->cfg.n_experts,
        .expert_tokens = dispatch_expert_tokens(self->dispatch),
        .requests_served = self->requests_served,
    };
    const dispatch_stats_t *ds = dispatch_stats(self->dispatch);
    rep.timing = (wire_timing_t){
        .tokens = self->rows_forwarded, .dispatch_calls = ds->calls, .bytes_sent = ds->bytes_sent,
        .bytes_received = ds->bytes_received, .seconds_forward = self->seconds_forward,
        .seconds_dispatch = ds->seconds_total, .seconds_node_compute = ds->seconds_node_compute,
        .seconds_overlap = forward_overlap_seconds(self->fw),
    };
    rep.sequences_running = sched_running(self->sched);
    rep.requests_queued = sched_queued(self->sched);
    rep.kv_bytes = sched_kv_bytes(self->sched);
    err_t err = {0};
    if (wire_reply_send(self->socket, to, &rep, &err) < 0)
        s_unsent(self, to, req->request_id, errno, &err);
}

/* Handles one waiting request; false when none was waiting. */
static bool s_handle(rpc_t *self)
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
    default:
        s_reply_error(self, &from, req.request_id, WIRE_CLIENT_INVALID_ARGUMENT,
                      "unknown request type");
    }
    return true;
}

int rpc_run(rpc_t *self, volatile sig_atomic_t *stop, err_t *err)
{
    while (!*stop) {
        /* Between steps: take every waiting request (bounded, so that a flood
         * cannot starve the running sequences), then run one step. */
        const bool busy = sched_has_work(self->sched);
        zmq_pollitem_t item = {.socket = self->socket, .events = ZMQ_POLLIN};
        int n = zmq_poll(&item, 1, busy ? 0 : POLL_MS);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return err_set(err, errno, "polling the client endpoint: %s",
                           zmq_strerror(errno));
        }
        dispatch_check_links(self->dispatch);
        lograte_tick(&self->logs);
        for (int i = 0; i < MAX_REQUESTS_PER_STEP && (item.revents & ZMQ_POLLIN); i++)
            if (!s_handle(self))
                break;
        if (sched_has_work(self->sched)) {
            sched_step(self->sched, &self->seconds_forward, &self->rows_forwarded);
            s_deliver_all(self);
        }
    }
    return 0;
}
