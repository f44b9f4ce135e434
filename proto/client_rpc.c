/* client_rpc: see client_rpc.h.
 *
 * The protocol's part of a receive: s_request_fill (coordinator side) and
 * s_reply_fill (client side) check an unpacked Request or Reply and its frames
 * (the frame layer, wire.c, has done framing, sizes and the version) and
 * build the C struct; the codecs tell the frame layer how big a message
 * within some limits unpacks. A client's inbox has no limits on replies: its
 * arena and scratch grow as STATUS_DATA replies need.
 */
#include "proto/client_rpc.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "core/mem.h"
#include "proto/client.pb-c.h"
#include "proto/wire_private.h"

enum { S_MAX_STATUS_NODES = 1 << 16 }; /* nodes in one STATUS_DATA */

/* Bytes of prompt text a request may carry under lim. */
static size_t s_prompt_text_limit(const wire_limits_t *lim)
{
    size_t n = wire_limit(lim->max_prompt) * WIRE_PROMPT_TEXT_PER_TOKEN;
    return n > WIRE_MIN_PROMPT_TEXT ? n : WIRE_MIN_PROMPT_TEXT;
}


static const char *const s_client_names[] = {
    [WIRE_CLIENT_OK] = "ok",
    [WIRE_CLIENT_VERSION_MISMATCH] = "version_mismatch",
    [WIRE_CLIENT_MALFORMED] = "malformed",
    [WIRE_CLIENT_INVALID_ARGUMENT] = "invalid_argument",
    [WIRE_CLIENT_BUSY] = "busy",
    [WIRE_CLIENT_UNAVAILABLE] = "unavailable",
    [WIRE_CLIENT_INTERNAL] = "internal",
    [WIRE_CLIENT_CANCELLED] = "cancelled",
    [WIRE_CLIENT_DEADLINE_EXCEEDED] = "deadline_exceeded",
};

const char *wire_client_error_name(wire_client_error_t code)
{
    if ((unsigned)code < sizeof s_client_names / sizeof s_client_names[0])
        return s_client_names[code];
    return "unknown";
}

static const char *const s_request_types[] = {
    [WIRE_REQ_GENERATE] = "GENERATE", [WIRE_REQ_LOGITS] = "LOGITS",
    [WIRE_REQ_STATUS] = "STATUS", [WIRE_REQ_CANCEL] = "CANCEL",
    [WIRE_REQ_REBALANCE] = "REBALANCE", [WIRE_REQ_NODE_DRAIN] = "NODE_DRAIN",
    [WIRE_REQ_NODE_ADD] = "NODE_ADD",
};

static int s_request_fill(wire_inbox_t *inbox, const void *header, int n_frames, void *out,
                          int *code, err_t *err)
{
    const wire_limits_t *lim = wire_inbox_limits(inbox);
    const Moe__Client__Request *r = header;
    wire_request_t *req = out;
    if (r->type < MOE__CLIENT__REQUEST_TYPE__GENERATE ||
        r->type > MOE__CLIENT__REQUEST_TYPE__NODE_ADD)
        return wire_bad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "unknown request type %d",
                      (int)r->type);
    const char *what = s_request_types[r->type];
    if (n_frames != 1)
        return wire_bad(code, WIRE_CLIENT_MALFORMED, err, "%s: %d frames after the identity, "
                      "not 1", what, n_frames);
    req->type = (wire_request_type_t)r->type;
    switch (req->type) {
    case WIRE_REQ_GENERATE:
    case WIRE_REQ_LOGITS: {
        size_t n = r->n_prompt_ids;
        size_t max = lim->max_prompt > 0 ? (size_t)lim->max_prompt : (size_t)INT32_MAX;
        const size_t text_len = r->prompt_text ? strlen(r->prompt_text) : 0;
        if (text_len > 0 && req->type != WIRE_REQ_GENERATE)
            return wire_bad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "%s: a text prompt is for "
                          "GENERATE only; give prompt_ids", what);
        if (text_len > 0 && n > 0)
            return wire_bad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "%s: both prompt_ids and "
                          "prompt_text; give one", what);
        if (text_len > s_prompt_text_limit(lim))
            return wire_bad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "%s: a prompt text of %zu "
                          "bytes is more than the limit of %zu", what, text_len,
                          s_prompt_text_limit(lim));
        if (n == 0 && text_len == 0)
            return wire_bad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "%s: empty prompt", what);
        if (n > max)
            return wire_bad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "%s: %zu prompt tokens is "
                          "more than the limit of %zu", what, n, max);
        for (size_t i = 0; i < n; i++)
            if (r->prompt_ids[i] < 0 || (lim->vocab > 0 && r->prompt_ids[i] >= lim->vocab))
                return wire_bad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "%s: prompt token %zu "
                              "is %d, outside the vocabulary of %d", what, i,
                              (int)r->prompt_ids[i], lim->vocab);
        if (r->max_tokens > INT32_MAX)
            return wire_bad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "%s: max_tokens %u", what,
                          r->max_tokens);
        if (!isfinite(r->temperature) || r->temperature < 0 || !isfinite(r->top_p) ||
            r->top_p < 0 || r->top_p > 1 || r->top_k > INT32_MAX)
            return wire_bad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "%s: temperature %g, "
                          "top_k %u, top_p %g (need temperature >= 0, top_p in [0, 1])",
                          what, (double)r->temperature, r->top_k, (double)r->top_p);
        if (r->n_stop_ids > WIRE_MAX_STOP_IDS)
            return wire_bad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "%s: %zu stop ids is more "
                          "than the limit of %d", what, r->n_stop_ids, WIRE_MAX_STOP_IDS);
        req->n_prompt = (int)n;
        req->prompt = r->prompt_ids;
        req->max_tokens = (int)r->max_tokens;
        req->temperature = r->temperature;
        req->top_k = (int)r->top_k;
        req->top_p = r->top_p;
        req->seed = r->seed;
        req->n_stop = (int)r->n_stop_ids;
        req->stop_ids = r->stop_ids;
        if (r->deadline_ms > INT32_MAX)
            return wire_bad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "%s: deadline_ms %u is more "
                          "than %d", what, r->deadline_ms, INT32_MAX);
        req->deadline_ms = (int)r->deadline_ms;
        req->ignore_eos = r->ignore_eos;
        if (text_len > 0) {
            req->prompt_text = r->prompt_text;
            req->prompt_text_len = text_len;
        }
        return 0;
    }
    case WIRE_REQ_CANCEL:
        req->cancel_id = r->cancel_id;
        return 0;
    case WIRE_REQ_NODE_ADD:
        if (!r->endpoint || !r->endpoint[0] || wire_text_len(r->endpoint) < 0)
            return wire_bad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "%s: an endpoint of 1 to "
                          "%d bytes is needed", what, WIRE_MAX_TEXT - 1);
        req->endpoint = r->endpoint;
        if (r->redundant > WIRE_MAX_REDUNDANT)
            return wire_bad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "%s: %u redundant copies "
                          "is more than the limit of %d", what, r->redundant,
                          WIRE_MAX_REDUNDANT);
        req->redundant = (int)r->redundant;
        return 0;
    case WIRE_REQ_NODE_DRAIN:
        if (r->node_id < 1 || r->node_id > INT32_MAX)
            return wire_bad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "%s: node_id %u (nodes "
                          "are numbered from 1)", what, r->node_id);
        req->node_id = (int)r->node_id;
        __attribute__((fallthrough)); /* and its redundant copies */
    case WIRE_REQ_REBALANCE:
        if (r->redundant > WIRE_MAX_REDUNDANT)
            return wire_bad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "%s: %u redundant copies "
                          "is more than the limit of %d", what, r->redundant,
                          WIRE_MAX_REDUNDANT);
        req->redundant = (int)r->redundant;
        return 0;
    default: /* STATUS */
        return 0;
    }
}

int wire_request_send(void *socket, const wire_request_t *req, err_t *err)
{
    assert(socket);
    assert(req);
    Moe__Client__Request r = MOE__CLIENT__REQUEST__INIT;
    r.version = WIRE_PROTOCOL_VERSION;
    r.type = (Moe__Client__RequestType)req->type;
    r.request_id = req->request_id;
    switch (req->type) {
    case WIRE_REQ_GENERATE:
    case WIRE_REQ_LOGITS:
        if (req->n_prompt < 0 || (req->n_prompt > 0 && !req->prompt) || req->max_tokens < 0 ||
            req->deadline_ms < 0 ||
            (req->prompt_text && memchr(req->prompt_text, 0, req->prompt_text_len)))
            return err_set(err, EINVAL, "%s: %d prompt tokens, max_tokens %d",
                           s_request_types[req->type], req->n_prompt, req->max_tokens);
        if (req->n_stop < 0 || req->n_stop > WIRE_MAX_STOP_IDS ||
            (req->n_stop > 0 && !req->stop_ids) || req->top_k < 0)
            return err_set(err, EINVAL, "%s: %d stop ids, top_k %d", s_request_types[req->type],
                           req->n_stop, req->top_k);
        r.n_prompt_ids = (size_t)req->n_prompt;
        r.prompt_ids = (int32_t *)req->prompt;
        r.max_tokens = (uint32_t)req->max_tokens;
        r.temperature = req->temperature;
        r.top_k = (uint32_t)req->top_k;
        r.top_p = req->top_p;
        r.seed = req->seed;
        r.n_stop_ids = (size_t)req->n_stop;
        r.stop_ids = (int32_t *)req->stop_ids;
        r.deadline_ms = (uint32_t)req->deadline_ms;
        r.ignore_eos = req->ignore_eos;
        if (req->prompt_text)
            r.prompt_text = (char *)req->prompt_text; /* NUL-terminated: checked above */
        break;
    case WIRE_REQ_CANCEL:
        r.cancel_id = req->cancel_id;
        break;
    case WIRE_REQ_STATUS:
        break;
    case WIRE_REQ_REBALANCE:
    case WIRE_REQ_NODE_DRAIN:
    case WIRE_REQ_NODE_ADD:
        if (req->redundant < 0 || req->redundant > WIRE_MAX_REDUNDANT ||
            (req->type == WIRE_REQ_NODE_DRAIN && req->node_id < 1) ||
            (req->type == WIRE_REQ_NODE_ADD &&
             (!req->endpoint || !req->endpoint[0] || wire_text_len(req->endpoint) < 0)))
            return err_set(err, EINVAL, "%s: %d redundant copies, node %d",
                           s_request_types[req->type], req->redundant, req->node_id);
        r.redundant = (uint32_t)req->redundant;
        r.node_id = (uint32_t)req->node_id;
        if (req->type == WIRE_REQ_NODE_ADD)
            r.endpoint = (char *)req->endpoint;
        break;
    default:
        return err_set(err, EINVAL, "unknown request type %d", (int)req->type);
    }
    return wire_send(socket, NULL, &r.base, NULL, 0, NULL, err);
}

/* ---- replies (client side) ---------------------------------------------------------- */

static int s_reply_status(wire_inbox_t *self, const Moe__Client__Reply *r, wire_reply_t *rep,
                          err_t *err)
{
    if (r->n_nodes > S_MAX_STATUS_NODES)
        return err_set(err, EPROTO, "STATUS_DATA: %zu nodes (at most %d)", r->n_nodes,
                       S_MAX_STATUS_NODES);
    if (r->n_layers > INT32_MAX || r->n_experts > INT32_MAX ||
        (uint64_t)r->n_layers * r->n_experts > INT32_MAX)
        return err_set(err, EPROTO, "STATUS_DATA: %u layers x %u experts", r->n_layers,
                       r->n_experts);
    uint64_t cells = (uint64_t)r->n_layers * r->n_experts;
    if (r->n_expert_tokens != cells)
        return err_set(err, EPROTO, "STATUS_DATA: %zu expert token counts for %u layers x %u "
                       "experts", r->n_expert_tokens, r->n_layers, r->n_experts);
    if (r->n_expert_load != 0 && r->n_expert_load != cells)
        return err_set(err, EPROTO, "STATUS_DATA: %zu expert loads for %u layers x %u "
                       "experts", r->n_expert_load, r->n_layers, r->n_experts);
    for (size_t i = 0; i < r->n_expert_load; i++)
        if (!isfinite(r->expert_load[i]) || r->expert_load[i] < 0)
            return err_set(err, EPROTO, "STATUS_DATA: expert load %zu is not a finite "
                           "non-negative number", i);
    if (!isfinite(r->load_half_life_s) || r->load_half_life_s < 0)
        return err_set(err, EPROTO, "STATUS_DATA: a load half-life of %g s",
                       r->load_half_life_s);
    if (wire_text_len(r->model) < 0 || wire_text_len(r->model_arch) < 0 ||
        wire_text_len(r->weights) < 0 || wire_text_len(r->wire) < 0)
        return err_set(err, EPROTO, "STATUS_DATA: the model name or architecture is longer "
                       "than %d bytes", WIRE_MAX_TEXT - 1);
    uint32_t n_layers = r->n_layers > 0 ? r->n_layers : INT32_MAX;
    uint32_t n_experts = r->n_experts > 0 ? r->n_experts : INT32_MAX;
    for (size_t i = 0; i < r->n_nodes; i++) {
        const Moe__Client__NodeStatus *s = r->nodes[i];
        size_t n = s->n_hosted_layer;
        if (s->n_hosted_expert != n || n > INT32_MAX || (cells > 0 && n > cells))
            return err_set(err, EPROTO, "STATUS_DATA: node %zu has %zu hosted layers and "
                           "%zu hosted experts", i, n, s->n_hosted_expert);
        for (size_t j = 0; j < n; j++)
            if (s->hosted_layer[j] >= n_layers || s->hosted_expert[j] >= n_experts)
                return err_set(err, EPROTO, "STATUS_DATA: node %zu hosts (layer %u, expert "
                               "%u), out of range", i, s->hosted_layer[j],
                               s->hosted_expert[j]);
        if (s->node_id > INT32_MAX || wire_text_len(s->endpoint) < 0 ||
            wire_text_len(s->last_error) < 0 || wire_text_len(s->weights) < 0 ||
            !isfinite(s->rtt_last_ms) ||
            !isfinite(s->rtt_mean_ms) || !isfinite(s->load) || !isfinite(s->busy_ratio) ||
            !isfinite(s->busy_seconds))
            return err_set(err, EPROTO, "STATUS_DATA: node %zu has a bad id, text or time", i);
    }
    wire_node_status_t *nodes = NULL;
    if (r->n_nodes > 0 &&
        !(nodes = wire_inbox_scratch(self, r->n_nodes * sizeof *nodes, err)))
        return -1;
    for (size_t i = 0; i < r->n_nodes; i++) {
        const Moe__Client__NodeStatus *s = r->nodes[i];
        nodes[i] = (wire_node_status_t){
            .node_id = (int)s->node_id,
            .endpoint = s->endpoint,
            .up = s->up,
            .n_hosted = (int)s->n_hosted_layer,
            .hosted_layer = (const int32_t *)s->hosted_layer, /* all below INT32_MAX */
            .hosted_expert = (const int32_t *)s->hosted_expert,
            .batches = s->batches,
            .rtt_last_ms = s->rtt_last_ms,
            .rtt_mean_ms = s->rtt_mean_ms,
            .last_error = s->last_error,
            .weights = s->weights,
            .load = s->load,
            .busy_ratio = s->busy_ratio,
            .busy_seconds = s->busy_seconds,
            .coordinators = s->coordinators > INT32_MAX ? INT32_MAX : (int)s->coordinators,
        };
    }
    rep->model = r->model;
    rep->model_arch = r->model_arch;
    rep->weights = r->weights;
    rep->wire = r->wire;
    rep->n_nodes = (int)r->n_nodes;
    rep->nodes = nodes;
    rep->n_layers = (int)r->n_layers;
    rep->n_experts = (int)r->n_experts;
    rep->expert_tokens = r->expert_tokens;
    rep->expert_load = r->n_expert_load ? r->expert_load : NULL;
    rep->load_half_life_s = r->load_half_life_s;
    rep->requests_served = r->requests_served;
    rep->timing = (wire_timing_t){
        .tokens = r->timing_tokens, .dispatch_calls = r->timing_dispatch_calls,
        .dispatch_rows = r->timing_dispatch_rows,
        .bytes_sent = r->timing_bytes_sent, .bytes_received = r->timing_bytes_received,
        .seconds_forward = r->timing_seconds_forward,
        .seconds_dispatch = r->timing_seconds_dispatch,
        .seconds_node_compute = r->timing_seconds_node_compute,
        .seconds_overlap = r->timing_seconds_overlap,
    };
    if (r->sequences_running > INT32_MAX || r->requests_queued > INT32_MAX)
        return err_set(err, EPROTO, "STATUS_DATA: %u sequences, %u queued",
                       r->sequences_running, r->requests_queued);
    rep->sequences_running = (int)r->sequences_running;
    rep->requests_queued = (int)r->requests_queued;
    rep->kv_bytes = r->kv_bytes;
    if (r->metrics && strlen(r->metrics) > WIRE_MAX_METRICS)
        return err_set(err, EPROTO, "STATUS_DATA: metrics of %zu bytes (at most %d)",
                       strlen(r->metrics), WIRE_MAX_METRICS);
    rep->metrics = r->metrics;
    return 0;
}

static int s_reply_logits(wire_inbox_t *self, const Moe__Client__Reply *r, wire_reply_t *rep,
                          err_t *err)
{
    const wire_limits_t *lim = wire_inbox_limits(self);
    if (r->rows == 0 || r->vocab == 0)
        return err_set(err, EPROTO, "LOGITS_DATA: %u x %u logits", r->rows, r->vocab);
    if (r->rows > (uint32_t)(lim->max_logit_rows > 0 ? lim->max_logit_rows : INT32_MAX))
        return err_set(err, EPROTO, "LOGITS_DATA: %u rows is more than the limit of %d",
                       r->rows, lim->max_logit_rows);
    if (r->vocab > (uint32_t)(lim->vocab > 0 ? lim->vocab : INT32_MAX))
        return err_set(err, EPROTO, "LOGITS_DATA: vocabulary %u is more than the limit of "
                       "%d", r->vocab, lim->vocab);
    uint64_t floats = (uint64_t)r->rows * r->vocab;
    if (floats > WIRE_MAX_TENSOR_FLOATS)
        return err_set(err, EPROTO, "LOGITS_DATA: %u x %u logits is too many", r->rows,
                       r->vocab);
    size_t bytes = wire_inbox_tensor_bytes(self);
    if (bytes != floats * sizeof(float))
        return err_set(err, EPROTO, "LOGITS_DATA: the logits frame has %zu bytes, not the "
                       "%u x %u x 4 of the header", bytes, r->rows, r->vocab);
    if (wire_inbox_tensor(self, &rep->logits, err) < 0)
        return -1;
    rep->rows = (int)r->rows;
    rep->vocab = (int)r->vocab;
    return 0;
}

static int s_reply_fill(wire_inbox_t *self, const void *header, int n_frames, void *out,
                        int *code, err_t *err)
{
    const Moe__Client__Reply *r = header;
    wire_reply_t *rep = out;
    const int vocab = wire_inbox_limits(self)->vocab;
    (void)code; /* a client answers no reply: a bad one is only EPROTO */
    if (r->type < MOE__CLIENT__REPLY_TYPE__TOKENS ||
        r->type > MOE__CLIENT__REPLY_TYPE__REBALANCED)
        return err_set(err, EPROTO, "unknown reply type %d", (int)r->type);
    int want = r->type == MOE__CLIENT__REPLY_TYPE__LOGITS_DATA ? 2 : 1;
    if (n_frames != want)
        return err_set(err, EPROTO, "a reply of type %d in %d frames, not %d", (int)r->type,
                       n_frames, want);
    rep->type = (wire_reply_type_t)r->type;
    rep->final = r->final;
    switch (rep->type) {
    case WIRE_REP_TOKENS:
        if (r->n_tokens > INT32_MAX || r->prompt_tokens > INT32_MAX ||
            r->generated_tokens > INT32_MAX || !isfinite(r->seconds) || r->seconds < 0)
            return err_set(err, EPROTO, "TOKENS: %zu tokens, counts %u and %u, %g seconds",
                           r->n_tokens, r->prompt_tokens, r->generated_tokens, r->seconds);
        for (size_t i = 0; i < r->n_tokens; i++)
            if (r->tokens[i] < 0 || (vocab > 0 && r->tokens[i] >= vocab))
                return err_set(err, EPROTO, "TOKENS: token %zu is %d, outside the "
                               "vocabulary of %d", i, (int)r->tokens[i], vocab);
        rep->n_tokens = (int)r->n_tokens;
        rep->tokens = r->tokens;
        rep->prompt_tokens = (int)r->prompt_tokens;
        rep->generated_tokens = (int)r->generated_tokens;
        rep->seconds = r->seconds;
        rep->text = r->text ? r->text : "";
        rep->text_len = strlen(rep->text);
        if (wire_text_len(r->finish_reason) < 0)
            return err_set(err, EPROTO, "TOKENS: a finish reason longer than %d bytes",
                           WIRE_MAX_TEXT - 1);
        rep->finish_reason = r->finish_reason && r->finish_reason[0] ? r->finish_reason : NULL;
        return 0;
    case WIRE_REP_LOGITS:
        return s_reply_logits(self, r, rep, err);
    case WIRE_REP_STATUS:
        return s_reply_status(self, r, rep, err);
    case WIRE_REP_REBALANCED:
        if (wire_text_len(r->move_summary) < 0 || !isfinite(r->imbalance_before) ||
            !isfinite(r->imbalance_after) || r->copies_loaded > INT32_MAX ||
            r->copies_dropped > INT32_MAX)
            return err_set(err, EPROTO, "REBALANCED: a summary longer than %d bytes, or "
                           "counts out of range", WIRE_MAX_TEXT - 1);
        rep->move_summary = r->move_summary ? r->move_summary : "";
        rep->imbalance_before = r->imbalance_before;
        rep->imbalance_after = r->imbalance_after;
        rep->copies_loaded = (int)r->copies_loaded;
        rep->copies_dropped = (int)r->copies_dropped;
        return 0;
    default: /* ERROR */
        if (r->error_code <= MOE__CLIENT__ERROR_CODE__OK ||
            r->error_code > MOE__CLIENT__ERROR_CODE__DEADLINE_EXCEEDED)
            return err_set(err, EPROTO, "ERROR_REPLY: unknown error code %d",
                           (int)r->error_code);
        if (wire_text_len(r->error_message) < 0)
            return err_set(err, EPROTO, "ERROR_REPLY: the message is longer than %d bytes",
                           WIRE_MAX_TEXT - 1);
        rep->error_code = (wire_client_error_t)r->error_code;
        rep->error_message = r->error_message;
        return 0;
    }
}

/* Fills the NodeStatus messages of a STATUS_DATA into s (n) and ptrs (n). */
static int s_pack_nodes(const wire_reply_t *rep, Moe__Client__NodeStatus *s,
                        Moe__Client__NodeStatus **ptrs, char (*clipped)[WIRE_MAX_TEXT],
                        err_t *err)
{
    for (int i = 0; i < rep->n_nodes; i++) {
        const wire_node_status_t *n = &rep->nodes[i];
        const char *endpoint = n->endpoint ? n->endpoint : "";
        const char *held = n->weights ? n->weights : "";
        if (n->node_id < 0 || n->n_hosted < 0 ||
            (n->n_hosted > 0 && (!n->hosted_layer || !n->hosted_expert)) ||
            wire_text_len(endpoint) < 0 || wire_text_len(held) < 0)
            return err_set(err, EINVAL, "STATUS_DATA: node %d (id %d, %d hosted, endpoint "
                           "of %zu bytes)", i, n->node_id, n->n_hosted, strlen(endpoint));
        for (int j = 0; j < n->n_hosted; j++)
            if (n->hosted_layer[j] < 0 || n->hosted_expert[j] < 0)
                return err_set(err, EINVAL, "STATUS_DATA: node %d hosts a negative id", i);
        moe__client__node_status__init(&s[i]);
        s[i].node_id = (uint32_t)n->node_id;
        s[i].endpoint = (char *)endpoint;
        s[i].up = n->up;
        s[i].n_hosted_layer = s[i].n_hosted_expert = (size_t)n->n_hosted;
        s[i].hosted_layer = (uint32_t *)n->hosted_layer;
        s[i].hosted_expert = (uint32_t *)n->hosted_expert;
        s[i].batches = n->batches;
        s[i].rtt_last_ms = n->rtt_last_ms;
        s[i].rtt_mean_ms = n->rtt_mean_ms;
        s[i].last_error = (char *)wire_clip(n->last_error, clipped[i]);
        s[i].weights = (char *)held;
        s[i].load = n->load;
        s[i].busy_ratio = n->busy_ratio;
        s[i].busy_seconds = n->busy_seconds;
        s[i].coordinators = n->coordinators > 0 ? (uint32_t)n->coordinators : 0;
        ptrs[i] = &s[i];
    }
    return 0;
}

int wire_reply_send(void *socket, const wire_peer_t *to, const wire_reply_t *rep, err_t *err)
{
    assert(socket);
    assert(rep);
    Moe__Client__Reply r = MOE__CLIENT__REPLY__INIT;
    char clipped[WIRE_MAX_TEXT];
    char small[256];     /* TOKENS: a streamed token's text, NUL-terminated */
    wire_outbox_t *tmp = NULL; /* a longer text (a final reply's), NUL-terminated, or
                                  STATUS_DATA's NodeStatus[n], pointers[n], texts[n] */
    const float *tensor = NULL;
    size_t bytes = 0;
    int rc = -1;

    r.version = WIRE_PROTOCOL_VERSION;
    r.type = (Moe__Client__ReplyType)rep->type;
    r.request_id = rep->request_id;
    r.final = rep->final;
    switch (rep->type) {
    case WIRE_REP_TOKENS:
        if (rep->n_tokens < 0 || (rep->n_tokens > 0 && !rep->tokens) ||
            rep->prompt_tokens < 0 || rep->generated_tokens < 0) {
            err_set(err, EINVAL, "TOKENS: %d tokens, counts %d and %d", rep->n_tokens,
                    rep->prompt_tokens, rep->generated_tokens);
            goto cleanup;
        }
        r.n_tokens = (size_t)rep->n_tokens;
        r.tokens = (int32_t *)rep->tokens;
        r.prompt_tokens = (uint32_t)rep->prompt_tokens;
        r.generated_tokens = (uint32_t)rep->generated_tokens;
        r.seconds = rep->seconds;
        if (rep->text_len > 0) {
            /* protobuf-c sends strings up to their NUL. A token's text fits
             * the stack, so streaming allocates nothing per token. */
            char *t = small;
            if (rep->text_len >= sizeof small &&
                !(t = wire_outbox_borrow(NULL, &tmp, rep->text_len + 1, err)))
                goto cleanup;
            memcpy(t, rep->text, rep->text_len);
            t[rep->text_len] = '\0';
            r.text = t;
        }
        if (rep->finish_reason)
            r.finish_reason = (char *)rep->finish_reason;
        break;
    case WIRE_REP_LOGITS:
        if (!(bytes = wire_send_tensor_bytes(rep->rows, rep->vocab, rep->logits))) {
            err_set(err, EINVAL, "LOGITS_DATA: %d x %d logits", rep->rows, rep->vocab);
            goto cleanup;
        }
        tensor = rep->logits;
        r.rows = (uint32_t)rep->rows;
        r.vocab = (uint32_t)rep->vocab;
        break;
    case WIRE_REP_STATUS: {
        const char *model = rep->model ? rep->model : "";
        const char *arch = rep->model_arch ? rep->model_arch : "";
        const char *held = rep->weights ? rep->weights : "";
        const char *wire = rep->wire ? rep->wire : "";
        int64_t cells = (int64_t)rep->n_layers * rep->n_experts;
        if (rep->n_nodes < 0 || rep->n_nodes > S_MAX_STATUS_NODES ||
            (rep->n_nodes > 0 && !rep->nodes) || rep->n_layers < 0 || rep->n_experts < 0 ||
            cells > INT32_MAX || (cells > 0 && !rep->expert_tokens) || wire_text_len(model) < 0 ||
            wire_text_len(arch) < 0 || wire_text_len(held) < 0 || wire_text_len(wire) < 0) {
            err_set(err, EINVAL, "STATUS_DATA: %d nodes, %d layers x %d experts",
                    rep->n_nodes, rep->n_layers, rep->n_experts);
            goto cleanup;
        }
        size_t n = (size_t)rep->n_nodes;
        if (n) {
            size_t each = sizeof(Moe__Client__NodeStatus) + sizeof(Moe__Client__NodeStatus *) +
                          WIRE_MAX_TEXT;
            void *block = wire_outbox_borrow(NULL, &tmp, n * each, err);
            if (!block)
                goto cleanup;
            Moe__Client__NodeStatus *s = block;
            Moe__Client__NodeStatus **ptrs = (Moe__Client__NodeStatus **)(s + n);
            char (*texts)[WIRE_MAX_TEXT] = (char (*)[WIRE_MAX_TEXT])(ptrs + n);
            if (s_pack_nodes(rep, s, ptrs, texts, err) < 0)
                goto cleanup;
            r.n_nodes = n;
            r.nodes = ptrs;
        }
        r.model = (char *)model;
        r.model_arch = (char *)arch;
        r.weights = (char *)held;
        r.wire = (char *)wire;
        r.n_layers = (uint32_t)rep->n_layers;
        r.n_experts = (uint32_t)rep->n_experts;
        r.n_expert_tokens = (size_t)cells;
        r.expert_tokens = (uint64_t *)rep->expert_tokens;
        if (rep->expert_load) {
            r.n_expert_load = (size_t)cells;
            r.expert_load = (double *)rep->expert_load;
        }
        r.load_half_life_s = rep->load_half_life_s;
        r.requests_served = rep->requests_served;
        r.timing_tokens = rep->timing.tokens;
        r.timing_dispatch_calls = rep->timing.dispatch_calls;
        r.timing_dispatch_rows = rep->timing.dispatch_rows;
        r.timing_bytes_sent = rep->timing.bytes_sent;
        r.timing_bytes_received = rep->timing.bytes_received;
        r.timing_seconds_forward = rep->timing.seconds_forward;
        r.timing_seconds_dispatch = rep->timing.seconds_dispatch;
        r.timing_seconds_node_compute = rep->timing.seconds_node_compute;
        r.timing_seconds_overlap = rep->timing.seconds_overlap;
        r.sequences_running = rep->sequences_running > 0 ? (uint32_t)rep->sequences_running : 0;
        r.requests_queued = rep->requests_queued > 0 ? (uint32_t)rep->requests_queued : 0;
        r.kv_bytes = rep->kv_bytes;
        r.metrics = (char *)(rep->metrics && strlen(rep->metrics) <= WIRE_MAX_METRICS
                                 ? rep->metrics
                                 : "");
        break;
    }
    case WIRE_REP_ERROR:
        if (rep->error_code <= WIRE_CLIENT_OK ||
            rep->error_code > WIRE_CLIENT_DEADLINE_EXCEEDED) {
            err_set(err, EINVAL, "ERROR_REPLY: error code %d", (int)rep->error_code);
            goto cleanup;
        }
        r.error_code = (Moe__Client__ErrorCode)rep->error_code;
        r.error_message = (char *)wire_clip(rep->error_message, clipped);
        break;
    case WIRE_REP_REBALANCED:
        if (rep->copies_loaded < 0 || rep->copies_dropped < 0) {
            err_set(err, EINVAL, "REBALANCED: %d copies loaded, %d dropped",
                    rep->copies_loaded, rep->copies_dropped);
            goto cleanup;
        }
        r.move_summary = (char *)wire_clip(rep->move_summary, clipped);
        r.imbalance_before = rep->imbalance_before;
        r.imbalance_after = rep->imbalance_after;
        r.copies_loaded = (uint32_t)rep->copies_loaded;
        r.copies_dropped = (uint32_t)rep->copies_dropped;
        break;
    default:
        err_set(err, EINVAL, "unknown reply type %d", (int)rep->type);
        goto cleanup;
    }
    rc = wire_send(socket, to, &r.base, tensor, bytes, NULL, err);

cleanup:
    wire_outbox_destroy(&tmp); /* keeps errno */
    return rc;
}

int wire_reply_send_error(void *socket, const wire_peer_t *to, uint64_t request_id,
                          wire_client_error_t code, const char *message, err_t *err)
{
    wire_reply_t rep = {.type = WIRE_REP_ERROR, .request_id = request_id, .final = true,
                        .error_code = code, .error_message = message};
    return wire_reply_send(socket, to, &rep, err);
}

/* ---- codecs ------------------------------------------------------------------------------ */

/* Arena bytes for any Request within lim: the prompt ids and text; unbounded
 * without max_prompt. */
static size_t s_request_arena_bytes(const wire_limits_t *lim, bool *grows)
{
    size_t n_prompt = wire_limit(lim->max_prompt);
    *grows = n_prompt == 0;
    return sizeof(Moe__Client__Request) + wire_repeated_bytes(n_prompt, 4) +
           s_prompt_text_limit(lim) + WIRE_ARENA_ALIGN;
}

/* Replies are never bounded by the limits: a client's arena grows. */
static size_t s_reply_arena_bytes(const wire_limits_t *lim, bool *grows)
{
    (void)lim;
    *grows = true;
    return 0;
}

/* How each refusal of the frame layer reads to a client: a request the
 * limits cannot hold is a request too long, the client's to change. */
const wire_codec_t wire_request_codec = {
    .desc = &moe__client__request__descriptor,
    .what = "request",
    .version_at = offsetof(Moe__Client__Request, version),
    .id_at = offsetof(Moe__Client__Request, request_id),
    .msg_size = sizeof(wire_request_t),
    .msg_id_at = offsetof(wire_request_t, request_id),
    .refused = {
        [WIRE_REFUSED_IDENTITY] = WIRE_CLIENT_MALFORMED,
        [WIRE_REFUSED_NO_HEADER] = WIRE_CLIENT_MALFORMED,
        [WIRE_REFUSED_TOO_BIG] = WIRE_CLIENT_MALFORMED,
        [WIRE_REFUSED_UNDECODABLE] = WIRE_CLIENT_MALFORMED,
        [WIRE_REFUSED_EXHAUSTED] = WIRE_CLIENT_INVALID_ARGUMENT,
        [WIRE_REFUSED_VERSION] = WIRE_CLIENT_VERSION_MISMATCH,
    },
    .arena_bytes = s_request_arena_bytes,
    .fill = s_request_fill,
};

/* A client sends no error back for a bad reply: no codes. */
const wire_codec_t wire_reply_codec = {
    .desc = &moe__client__reply__descriptor,
    .what = "reply",
    .version_at = offsetof(Moe__Client__Reply, version),
    .id_at = offsetof(Moe__Client__Reply, request_id),
    .msg_size = sizeof(wire_reply_t),
    .msg_id_at = offsetof(wire_reply_t, request_id),
    .arena_bytes = s_reply_arena_bytes,
    .fill = s_reply_fill,
};

int wire_request_recv(wire_inbox_t *self, void *socket, wire_peer_t *from,
                      wire_request_t *req, wire_client_error_t *code, err_t *err)
{
    int c = code ? (int)*code : 0;
    int rc = wire_codec_recv(&wire_request_codec, self, socket, true, from, req, &c, err);
    if (code)
        *code = (wire_client_error_t)c;
    return rc;
}

int wire_request_decode(wire_inbox_t *self, const wire_frame_t *frames, int n_frames,
                        wire_request_t *req, wire_client_error_t *code, err_t *err)
{
    int c = code ? (int)*code : 0;
    int rc = wire_codec_decode(&wire_request_codec, self, frames, n_frames, req, &c, err);
    if (code)
        *code = (wire_client_error_t)c;
    return rc;
}

int wire_reply_recv(wire_inbox_t *self, void *socket, wire_reply_t *rep, err_t *err)
{
    int ignored = 0;
    return wire_codec_recv(&wire_reply_codec, self, socket, false, NULL, rep, &ignored, err);
}

int wire_reply_decode(wire_inbox_t *self, const wire_frame_t *frames, int n_frames,
                      wire_reply_t *rep, err_t *err)
{
    int ignored = 0;
    return wire_codec_decode(&wire_reply_codec, self, frames, n_frames, rep, &ignored, err);
}

/* ---- errors and errno --------------------------------------------------------------------- */

wire_client_error_t wire_client_error_of(int errnum)
{
    switch (errnum) {
    case EHOSTUNREACH:
    case ETIMEDOUT:
    case EPROTO:
        return WIRE_CLIENT_UNAVAILABLE;
    case EINVAL:
    case ENOSPC:
    case E2BIG:
        return WIRE_CLIENT_INVALID_ARGUMENT;
    case EINTR:
        return WIRE_CLIENT_CANCELLED;
    default:
        return WIRE_CLIENT_INTERNAL;
    }
}

int wire_client_error_errno(wire_client_error_t code)
{
    switch (code) {
    case WIRE_CLIENT_INVALID_ARGUMENT: return EINVAL;
    case WIRE_CLIENT_BUSY: return EBUSY;
    case WIRE_CLIENT_UNAVAILABLE: return EHOSTUNREACH;
    case WIRE_CLIENT_VERSION_MISMATCH: return EPROTO;
    case WIRE_CLIENT_DEADLINE_EXCEEDED: return ETIMEDOUT;
    case WIRE_CLIENT_CANCELLED: return ECANCELED;
    default: return EIO;
    }
}
