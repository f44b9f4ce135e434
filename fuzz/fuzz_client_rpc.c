/* fuzz_client_rpc: the client RPC decoders on arbitrary frames: requests as
 * the coordinator decodes them (wire_request_decode) and replies as a client
 * decodes them (wire_reply_decode), the steps of wire_request_recv and
 * wire_reply_recv after the socket.
 *
 * Input layout: fuzz_frames.h; flag bit 2 picks the reply decoder, bit 3
 * decodes with an unbounded inbox (a client's, which knows no model), else
 * with a coordinator's limits. A message that decodes must keep what
 * client_rpc.h promises: counts and ids inside the limits, logits matching their frame.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_frames.h"
#include "fuzz/fuzz_verbose.h"
#include "proto/client_rpc.h"

static const wire_limits_t S_COORD = {
    .hidden = 8, .max_rows = 6, .max_assign = 16, .n_layers = 4, .n_experts = 8,
    .max_prompt = 64, .vocab = 300, .max_logit_rows = 4,
};

static void s_check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_client_rpc: broken promise: %s\n", what);
        abort();
    }
}

static void s_request(wire_inbox_t *inbox, bool limited, const wire_frame_t *frames,
                      int n_frames)
{
    wire_request_t req;
    wire_client_error_t code;
    err_t err = {0};
    int rc = wire_request_decode(inbox, frames, n_frames, &req, &code, &err);
    fuzz_verbose("request", rc, err.msg);
    if (rc < 0) {
        s_check(code != WIRE_CLIENT_OK || errno == ENOMEM, "a refusal without a code");
        return;
    }
    s_check(code == WIRE_CLIENT_OK, "success with an error code");
    s_check(req.type >= WIRE_REQ_GENERATE && req.type <= WIRE_REQ_NODE_ADD, "type");
    volatile int64_t sink = 0;
    s_check(req.n_prompt >= 0 && (req.n_prompt == 0 || req.prompt), "prompt");
    if (limited)
        s_check(req.n_prompt <= S_COORD.max_prompt, "prompt length");
    for (int i = 0; i < req.n_prompt; i++) {
        s_check(req.prompt[i] >= 0, "prompt id");
        if (limited)
            s_check(req.prompt[i] < S_COORD.vocab, "prompt id range");
        sink += req.prompt[i];
    }
    s_check(req.n_stop >= 0 && req.n_stop <= WIRE_MAX_STOP_IDS, "stop ids");
    for (int i = 0; i < req.n_stop; i++)
        sink += req.stop_ids[i];
    if (req.prompt_text) {
        s_check(req.type == WIRE_REQ_GENERATE && req.n_prompt == 0, "text prompt");
        for (size_t i = 0; i < req.prompt_text_len; i++)
            sink += req.prompt_text[i];
    }
    if (req.type == WIRE_REQ_GENERATE || req.type == WIRE_REQ_LOGITS) {
        s_check(req.n_prompt > 0 || req.prompt_text_len > 0, "empty prompt");
        s_check(isfinite(req.temperature) && req.temperature >= 0, "temperature");
        s_check(req.top_p >= 0 && req.top_p <= 1 && req.top_k >= 0, "top_p, top_k");
        s_check(req.max_tokens >= 0 && req.deadline_ms >= 0, "max_tokens, deadline");
    }
    (void)sink;
}

static void s_reply(wire_inbox_t *inbox, bool limited, const wire_frame_t *frames,
                    int n_frames)
{
    wire_reply_t rep;
    err_t err = {0};
    int rc = wire_reply_decode(inbox, frames, n_frames, &rep, &err);
    fuzz_verbose("reply", rc, err.msg);
    if (rc < 0)
        return;
    s_check(rep.type >= WIRE_REP_TOKENS && rep.type <= WIRE_REP_REBALANCED, "type");
    volatile double sink = 0;
    s_check(rep.n_tokens >= 0 && (rep.n_tokens == 0 || rep.tokens), "tokens");
    for (int i = 0; i < rep.n_tokens; i++) {
        s_check(rep.tokens[i] >= 0, "token id");
        if (limited)
            s_check(rep.tokens[i] < S_COORD.vocab, "token id range");
    }
    if (rep.text)
        s_check(strlen(rep.text) == rep.text_len, "text length");
    if (rep.finish_reason)
        sink += (double)strlen(rep.finish_reason);
    if (rep.error_message)
        s_check(strlen(rep.error_message) < WIRE_MAX_TEXT, "error message");
    if (rep.type == WIRE_REP_LOGITS) {
        s_check(rep.rows > 0 && rep.vocab > 0 && rep.logits, "logits shape");
        s_check(n_frames == 2 && (size_t)rep.rows * (size_t)rep.vocab * sizeof(float) ==
                frames[1].size, "logits frame");
        if (limited)
            s_check(rep.rows <= S_COORD.max_logit_rows && rep.vocab <= S_COORD.vocab,
                    "logits limits");
        for (size_t i = 0; i < (size_t)rep.rows * (size_t)rep.vocab; i++)
            sink += rep.logits[i];
    }
    if (rep.type == WIRE_REP_STATUS) {
        s_check(rep.model && strlen(rep.model) < WIRE_MAX_TEXT, "model");
        s_check(rep.n_layers >= 0 && rep.n_experts >= 0, "layers, experts");
        for (size_t i = 0; i < (size_t)rep.n_layers * (size_t)rep.n_experts; i++)
            sink += (double)rep.expert_tokens[i];
        for (int i = 0; i < rep.n_nodes; i++) {
            const wire_node_status_t *s = &rep.nodes[i];
            s_check(strlen(s->endpoint) < WIRE_MAX_TEXT && strlen(s->last_error) <
                    WIRE_MAX_TEXT, "node text");
            for (int j = 0; j < s->n_hosted; j++) {
                s_check(s->hosted_layer[j] >= 0 && s->hosted_expert[j] >= 0, "hosted");
                if (rep.n_layers > 0 && rep.n_experts > 0)
                    s_check(s->hosted_layer[j] < rep.n_layers &&
                            s->hosted_expert[j] < rep.n_experts, "hosted range");
            }
            sink += s->rtt_last_ms + s->rtt_mean_ms;
        }
    }
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input_t in;
    fuzz_input_read(&in, data, size, &S_COORD, 8);
    if (in.flags & 4)
        s_reply(in.inbox, in.limited, in.frames, in.n_frames);
    else
        s_request(in.inbox, in.limited, in.frames, in.n_frames);
    return 0;
}
