/* fuzz_data_plane: the data-plane decoder (wire_data_decode, the step of
 * wire_data_recv after the socket) on arbitrary frames.
 *
 * Input layout: fuzz_frames.h; flag bit 2 decodes with an unbounded inbox
 * (no limits: its arena grows), else with a node's limits. Beyond "no
 * crash", a message that decodes must keep what data_plane.h promises: the
 * tensor frame is its format's size for the header's shape (f32, bf16, fp8:
 * wire_tensor.h), the rows float32 and aligned, and every id is inside the
 * limits.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_frames.h"
#include "fuzz/fuzz_verbose.h"
#include "proto/data_plane.h"

static const wire_limits_t S_NODE = {
    .hidden = 8, .max_rows = 6, .max_assign = 16, .n_layers = 4, .n_experts = 8,
};

static void s_check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_data_plane: broken promise: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input_t in;
    fuzz_input_read(&in, data, size, &S_NODE, 4);
    bool limited = in.limited;

    wire_data_t msg;
    wire_data_error_t code;
    err_t err = {0};
    int rc = wire_data_decode(in.inbox, in.frames, in.n_frames, &msg, &code, &err);
    fuzz_verbose("data plane", rc, err.msg);
    if (rc < 0) {
        s_check(code != WIRE_DATA_OK || errno == ENOMEM, "a refusal without a code");
        s_check(strlen(err.msg) < sizeof err.msg, "error text");
        return 0;
    }
    s_check(code == WIRE_DATA_OK, "success with an error code");
    s_check(msg.type >= WIRE_HELLO && msg.type <= WIRE_PLACE_REPLY, "type");
    volatile float sink = 0;
    if (msg.n_rows > 0) {
        s_check(msg.rows && msg.hidden > 0, "rows without data");
        s_check(in.n_frames == 2, "rows without a tensor frame");
        s_check((unsigned)msg.dtype < WIRE_TENSOR_COUNT, "tensor format");
        s_check(wire_tensor_bytes(msg.dtype, msg.n_rows, msg.hidden) == in.frames[1].size,
                "tensor size");
        s_check((uintptr_t)msg.rows % sizeof(float) == 0, "rows aligned");
        if (limited)
            s_check(msg.n_rows <= S_NODE.max_rows && msg.hidden == S_NODE.hidden, "shape");
        for (size_t i = 0; i < (size_t)msg.n_rows * (size_t)msg.hidden; i++)
            sink += msg.rows[i];
    }
    if (msg.n_assign > 0) {
        s_check(msg.assign != NULL, "assignments");
        if (limited)
            s_check(msg.n_assign <= S_NODE.max_assign, "assignment count");
        for (int i = 0; i < msg.n_assign; i++) {
            s_check(msg.assign[i].row >= 0 && msg.assign[i].row < msg.n_rows, "assigned row");
            s_check(msg.assign[i].expert >= 0, "assigned expert");
            if (limited)
                s_check(msg.assign[i].expert < S_NODE.n_experts, "assigned expert range");
            sink += msg.assign[i].weight;
        }
    }
    if (limited && (msg.type == WIRE_EXPERT_REQUEST || msg.type == WIRE_EXPERT_REPLY))
        s_check(msg.layer >= 0 && msg.layer < S_NODE.n_layers, "layer");
    for (int i = 0; i < msg.n_hosted; i++) {
        s_check(msg.hosted_layer[i] >= 0 && msg.hosted_expert[i] >= 0, "hosted");
        if (limited)
            s_check(msg.hosted_layer[i] < S_NODE.n_layers &&
                    msg.hosted_expert[i] < S_NODE.n_experts, "hosted range");
    }
    s_check(msg.n_coordinators >= 0, "coordinator count");
    if (msg.model_id)
        s_check(strlen(msg.model_id) < WIRE_MAX_TEXT, "model id length");
    if (msg.error_message)
        s_check(strlen(msg.error_message) < WIRE_MAX_TEXT, "error message length");
    (void)sink;
    return 0;
}
