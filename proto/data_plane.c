/* data_plane: see data_plane.h.
 *
 * The protocol's part of a receive: s_data_fill checks an unpacked Header and
 * its frames (the frame layer, wire.c, has done framing, sizes and the
 * version) and builds the wire_data_t; wire_data_codec tells the frame layer
 * how big a Header within some limits unpacks, so that inboxes are sized for
 * it. Sending converts the assignments to the Header's three columns, and a
 * bf16 or fp8 tensor to its format (wire_tensor.h), in an outbox sized from
 * the same limits; receiving decodes such a tensor into the inbox's float32
 * buffer.
 */
#include "proto/data_plane.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "core/mem.h"
#include "proto/dataplane.pb-c.h"
#include "proto/wire_private.h"

enum { S_SEND_STACK_ASSIGN = 1024 };  /* assignments converted on the stack without an outbox */
enum { S_ASSIGN_BYTES = 3 * sizeof(uint32_t) }; /* one assignment on the wire: row, expert, weight */


static const char *const s_data_names[] = {
    [WIRE_DATA_OK] = "ok",
    [WIRE_DATA_ERR_VERSION] = "version",
    [WIRE_DATA_ERR_MALFORMED] = "malformed",
    [WIRE_DATA_ERR_SHAPE] = "shape",
    [WIRE_DATA_ERR_UNKNOWN_EXPERT] = "unknown_expert",
    [WIRE_DATA_ERR_TOO_LARGE] = "too_large",
    [WIRE_DATA_ERR_INTERNAL] = "internal",
    [WIRE_DATA_ERR_UNEXPECTED] = "unexpected",
    [WIRE_DATA_ERR_NO_ROOM] = "no_room",
    [WIRE_DATA_ERR_BUSY] = "busy",
};

const char *wire_data_error_name(wire_data_error_t code)
{
    if ((unsigned)code < sizeof s_data_names / sizeof s_data_names[0])
        return s_data_names[code];
    return "unknown";
}

static const char *const s_data_types[] = {
    [WIRE_HELLO] = "HELLO", [WIRE_HELLO_REPLY] = "HELLO_REPLY",
    [WIRE_EXPERT_REQUEST] = "EXPERT_REQUEST", [WIRE_EXPERT_REPLY] = "EXPERT_REPLY",
    [WIRE_HEARTBEAT] = "HEARTBEAT", [WIRE_HEARTBEAT_REPLY] = "HEARTBEAT_REPLY",
    [WIRE_SHUTDOWN] = "SHUTDOWN", [WIRE_ERROR] = "ERROR",
    [WIRE_PLACE] = "PLACE", [WIRE_DROP] = "DROP", [WIRE_PLACE_REPLY] = "PLACE_REPLY",
};

static bool s_data_type_known(uint32_t type)
{
    return type >= WIRE_HELLO && type <= WIRE_PLACE_REPLY;
}

static bool s_data_has_tensor(uint32_t type)
{
    return type == WIRE_EXPERT_REQUEST || type == WIRE_EXPERT_REPLY;
}

/* The header's dtype as a format (dtype checked to be one of the three). */
static wire_tensor_format_t s_format_of(Moe__Data__DType dtype)
{
    return (wire_tensor_format_t)(dtype - MOE__DATA__DTYPE__F32);
}

/* The tensor frame of EXPERT_REQUEST / EXPERT_REPLY against the header and
 * the limits; fills n_rows, hidden, dtype and rows (decoded to float32). */
static int s_data_tensor(wire_inbox_t *self, const Moe__Data__Header *h, wire_data_t *msg,
                         int *code, err_t *err)
{
    const wire_limits_t *lim = wire_inbox_limits(self);
    const char *what = s_data_types[h->type];
    if (h->dtype < MOE__DATA__DTYPE__F32 || h->dtype > MOE__DATA__DTYPE__FP8_E4M3)
        return wire_bad(code, WIRE_DATA_ERR_MALFORMED, err, "%s: dtype %d is not F32 (1), "
                      "BF16 (2) or FP8_E4M3 (3)", what, (int)h->dtype);
    const wire_tensor_format_t fmt = s_format_of(h->dtype);
    if (h->n_rows == 0 || h->hidden == 0)
        return wire_bad(code, WIRE_DATA_ERR_SHAPE, err, "%s: a %u x %u tensor is empty",
                      what, h->n_rows, h->hidden);
    if (h->n_rows > (uint32_t)(lim->max_rows > 0 ? lim->max_rows : INT32_MAX))
        return wire_bad(code, WIRE_DATA_ERR_TOO_LARGE, err, "%s: %u rows is more than the "
                      "limit of %d", what, h->n_rows, lim->max_rows > 0 ? lim->max_rows
                                                                        : INT32_MAX);
    if (lim->hidden > 0 ? h->hidden != (uint32_t)lim->hidden : h->hidden > INT32_MAX)
        return wire_bad(code, WIRE_DATA_ERR_SHAPE, err, "%s: hidden %u is not the model's %d",
                      what, h->hidden, lim->hidden);
    uint64_t floats = (uint64_t)h->n_rows * h->hidden;
    if (floats > WIRE_MAX_TENSOR_FLOATS)
        return wire_bad(code, WIRE_DATA_ERR_TOO_LARGE, err, "%s: %u x %u floats is too many",
                      what, h->n_rows, h->hidden);
    size_t bytes = wire_inbox_tensor_bytes(self);
    size_t want = wire_tensor_bytes(fmt, (int)h->n_rows, (int)h->hidden);
    if (bytes != want)
        return wire_bad(code, WIRE_DATA_ERR_SHAPE, err, "%s: the tensor frame has %zu bytes, "
                      "not the %zu of %u x %u %s values", what, bytes, want, h->n_rows,
                      h->hidden, wire_tensor_format_name(fmt));
    if (fmt == WIRE_TENSOR_F32) {
        if (wire_inbox_tensor(self, &msg->rows, err) < 0)
            return -1;
    } else {
        float *rows = wire_inbox_floats(self, (size_t)floats, err);
        if (!rows)
            return -1;
        wire_tensor_decode(fmt, wire_inbox_tensor_data(self), (int)h->n_rows,
                           (int)h->hidden, rows);
        msg->rows = rows;
    }
    msg->dtype = fmt;
    msg->n_rows = (int)h->n_rows;
    msg->hidden = (int)h->hidden;
    return 0;
}

/* A layer id against the limits. */
static int s_data_layer(const wire_limits_t *lim, const Moe__Data__Header *h,
                        wire_data_t *msg, int *code, err_t *err)
{
    if (h->layer >= (uint32_t)(lim->n_layers > 0 ? lim->n_layers : INT32_MAX))
        return wire_bad(code, WIRE_DATA_ERR_UNKNOWN_EXPERT, err, "%s: layer %u is out of "
                      "range (%d layers)", s_data_types[h->type], h->layer, lim->n_layers);
    msg->layer = (int)h->layer;
    return 0;
}

/* The assignments of an EXPERT_REQUEST (after its tensor). */
static int s_data_assign(wire_inbox_t *self, const Moe__Data__Header *h, wire_data_t *msg,
                         int *code, err_t *err)
{
    const wire_limits_t *lim = wire_inbox_limits(self);
    size_t n = h->n_assign_row;
    if (h->n_assign_expert != n || h->n_assign_weight != n)
        return wire_bad(code, WIRE_DATA_ERR_SHAPE, err, "EXPERT_REQUEST: %zu rows, %zu experts "
                      "and %zu weights in the assignments", n, h->n_assign_expert,
                      h->n_assign_weight);
    if (n == 0)
        return wire_bad(code, WIRE_DATA_ERR_SHAPE, err, "EXPERT_REQUEST: no assignment");
    size_t max = lim->max_assign > 0 ? (size_t)lim->max_assign : (size_t)INT32_MAX;
    if (n > max)
        return wire_bad(code, WIRE_DATA_ERR_TOO_LARGE, err, "EXPERT_REQUEST: %zu assignments "
                      "is more than the limit of %zu", n, max);
    uint32_t n_experts = lim->n_experts > 0 ? (uint32_t)lim->n_experts : INT32_MAX;
    for (size_t i = 0; i < n; i++) {
        if (h->assign_row[i] >= (uint32_t)msg->n_rows)
            return wire_bad(code, WIRE_DATA_ERR_SHAPE, err, "EXPERT_REQUEST: assignment %zu "
                          "names row %u of %d", i, h->assign_row[i], msg->n_rows);
        if (h->assign_expert[i] >= n_experts)
            return wire_bad(code, WIRE_DATA_ERR_UNKNOWN_EXPERT, err, "EXPERT_REQUEST: "
                          "assignment %zu names expert %u of %d", i, h->assign_expert[i],
                          lim->n_experts);
        if (!isfinite(h->assign_weight[i]))
            return wire_bad(code, WIRE_DATA_ERR_SHAPE, err, "EXPERT_REQUEST: assignment %zu "
                          "has a weight that is not finite", i);
    }
    moe_assign_t *a = wire_inbox_scratch(self, n * sizeof *a, err);
    if (!a)
        return -1;
    for (size_t i = 0; i < n; i++)
        a[i] = (moe_assign_t){.row = (int32_t)h->assign_row[i],
                              .expert = (int32_t)h->assign_expert[i],
                              .weight = h->assign_weight[i]};
    msg->n_assign = (int)n;
    msg->assign = a;
    return 0;
}

/* The coordinator count of a HELLO_REPLY, HEARTBEAT_REPLY or PLACE_REPLY. */
static int s_data_coordinators(const Moe__Data__Header *h, wire_data_t *msg, int *code,
                               err_t *err)
{
    if (h->n_coordinators > INT32_MAX)
        return wire_bad(code, WIRE_DATA_ERR_MALFORMED, err, "%s: %u coordinators",
                        s_data_types[h->type], h->n_coordinators);
    msg->n_coordinators = (int)h->n_coordinators;
    return 0;
}

/* The (layer, expert) pairs of a HELLO_REPLY, PLACE, DROP or PLACE_REPLY. */
static int s_data_pairs(const wire_limits_t *lim, const Moe__Data__Header *h,
                        wire_data_t *msg, int *code, err_t *err)
{
    const char *what = s_data_types[h->type];
    size_t n = h->n_hosted_layer;
    if (h->n_hosted_expert != n)
        return wire_bad(code, WIRE_DATA_ERR_SHAPE, err, "%s: %zu hosted layers but "
                      "%zu hosted experts", what, n, h->n_hosted_expert);
    uint32_t n_layers = lim->n_layers > 0 ? (uint32_t)lim->n_layers : INT32_MAX;
    uint32_t n_experts = lim->n_experts > 0 ? (uint32_t)lim->n_experts : INT32_MAX;
    if (lim->n_layers > 0 && lim->n_experts > 0 && n > (size_t)n_layers * n_experts)
        return wire_bad(code, WIRE_DATA_ERR_TOO_LARGE, err, "%s: %zu hosted experts "
                      "in a model of %u x %u", what, n, n_layers, n_experts);
    if (n > INT32_MAX)
        return wire_bad(code, WIRE_DATA_ERR_TOO_LARGE, err, "%s: %zu hosted experts", what,
                      n);
    for (size_t i = 0; i < n; i++)
        if (h->hosted_layer[i] >= n_layers || h->hosted_expert[i] >= n_experts)
            return wire_bad(code, WIRE_DATA_ERR_UNKNOWN_EXPERT, err, "%s: hosted "
                          "pair %zu (layer %u, expert %u) is out of range", what, i,
                          h->hosted_layer[i], h->hosted_expert[i]);
    msg->n_hosted = (int)n;
    /* uint32 and int32 may alias; every value is below INT32_MAX. */
    msg->hosted_layer = (const int32_t *)h->hosted_layer;
    msg->hosted_expert = (const int32_t *)h->hosted_expert;
    msg->memory_budget = h->memory_budget;
    msg->expert_bytes = h->expert_bytes;
    return s_data_coordinators(h, msg, code, err);
}

static int s_data_hello_reply(const wire_limits_t *lim, const Moe__Data__Header *h,
                              wire_data_t *msg, int *code, err_t *err)
{
    if (s_data_pairs(lim, h, msg, code, err) < 0)
        return -1;
    if (h->node_id > INT32_MAX)
        return wire_bad(code, WIRE_DATA_ERR_MALFORMED, err, "HELLO_REPLY: node id %u",
                      h->node_id);
    if (wire_text_len(h->model_id) < 0 || wire_text_len(h->weights) < 0)
        return wire_bad(code, WIRE_DATA_ERR_TOO_LARGE, err, "HELLO_REPLY: the model id or "
                      "the weights' description is longer than %d bytes", WIRE_MAX_TEXT - 1);
    msg->node_id = (int)h->node_id;
    msg->model_id = h->model_id;
    msg->weights = h->weights;
    return 0;
}

/* Everything after the version check. */
static int s_data_fill(wire_inbox_t *self, const void *header, int n_frames, void *out,
                       int *code, err_t *err)
{
    const Moe__Data__Header *h = header;
    wire_data_t *msg = out;
    if (h->type == MOE__DATA__MSG_TYPE__MSG_UNKNOWN)
        return wire_bad(code, WIRE_DATA_ERR_MALFORMED, err, "the header has no message type");
    if (!s_data_type_known(h->type))
        return wire_bad(code, WIRE_DATA_ERR_UNEXPECTED, err, "unknown message type %d",
                      (int)h->type);
    msg->type = (wire_data_type_t)h->type;
    const char *what = s_data_types[h->type];
    int want = s_data_has_tensor(h->type) ? 2 : 1;
    if (n_frames != want)
        return wire_bad(code, WIRE_DATA_ERR_MALFORMED, err, "%s: %d frames after the "
                      "identity, not %d", what, n_frames, want);
    switch (msg->type) {
    case WIRE_EXPERT_REQUEST:
        if (s_data_tensor(self, h, msg, code, err) < 0 ||
            s_data_layer(wire_inbox_limits(self), h, msg, code, err) < 0)
            return -1;
        msg->per_assignment = h->per_assignment;
        return s_data_assign(self, h, msg, code, err);
    case WIRE_EXPERT_REPLY:
        if (s_data_tensor(self, h, msg, code, err) < 0 ||
            s_data_layer(wire_inbox_limits(self), h, msg, code, err) < 0)
            return -1;
        if (!isfinite(h->compute_seconds) || h->compute_seconds < 0)
            return wire_bad(code, WIRE_DATA_ERR_MALFORMED, err, "EXPERT_REPLY: compute "
                          "seconds %g", h->compute_seconds);
        msg->compute_seconds = h->compute_seconds;
        return 0;
    case WIRE_HELLO_REPLY:
        return s_data_hello_reply(wire_inbox_limits(self), h, msg, code, err);
    case WIRE_PLACE:
    case WIRE_DROP:
    case WIRE_PLACE_REPLY:
        return s_data_pairs(wire_inbox_limits(self), h, msg, code, err);
    case WIRE_ERROR:
        if (h->error_code <= MOE__DATA__ERROR_CODE__ERR_NONE ||
            h->error_code > MOE__DATA__ERROR_CODE__ERR_BUSY)
            return wire_bad(code, WIRE_DATA_ERR_MALFORMED, err, "ERROR: unknown error code %d",
                          (int)h->error_code);
        if (wire_text_len(h->error_message) < 0)
            return wire_bad(code, WIRE_DATA_ERR_TOO_LARGE, err, "ERROR: the message is "
                          "longer than %d bytes", WIRE_MAX_TEXT - 1);
        msg->error_code = (wire_data_error_t)h->error_code;
        msg->error_message = h->error_message;
        return 0;
    case WIRE_HEARTBEAT_REPLY:
        return s_data_coordinators(h, msg, code, err);
    default: /* HELLO, HEARTBEAT, SHUTDOWN: the header is all */
        return 0;
    }
}

/* Arena bytes for any Header within lim: assignments, hosted pairs and two
 * texts; unbounded without max_assign or the model's size. */
static size_t s_data_arena_bytes(const wire_limits_t *lim, bool *grows)
{
    size_t n_assign = wire_limit(lim->max_assign);
    size_t n_hosted = wire_limit(lim->n_layers) * wire_limit(lim->n_experts);
    *grows = n_assign == 0 || n_hosted == 0;
    return sizeof(Moe__Data__Header) + wire_repeated_bytes(3 * n_assign, 4) +
           wire_repeated_bytes(2 * n_hosted, 4) + 2 * (WIRE_MAX_TEXT + WIRE_ARENA_ALIGN);
}

/* A received EXPERT_REQUEST's assignments. */
static size_t s_data_scratch_bytes(const wire_limits_t *lim)
{
    return wire_limit(lim->max_assign) * sizeof(moe_assign_t);
}

/* Scratch bytes rounded up so that what follows is aligned. */
static size_t s_align(size_t bytes)
{
    return (bytes + WIRE_ARENA_ALIGN - 1) / WIRE_ARENA_ALIGN * WIRE_ARENA_ALIGN;
}

/* A sent EXPERT_REQUEST's assignment columns (beyond what the stack holds),
 * then its or a reply's tensor in the largest format other than float32. */
static size_t s_data_send_bytes(const wire_limits_t *lim)
{
    size_t n = wire_limit(lim->max_assign);
    size_t cols = n > S_SEND_STACK_ASSIGN ? s_align(n * S_ASSIGN_BYTES) : 0;
    size_t coded = 0;
    for (int f = WIRE_TENSOR_F32 + 1; f < WIRE_TENSOR_COUNT; f++) {
        size_t b = wire_tensor_bytes((wire_tensor_format_t)f, lim->max_rows, lim->hidden);
        coded = b > coded ? b : coded;
    }
    return cols + coded;
}

const wire_codec_t wire_data_codec = {
    .desc = &moe__data__header__descriptor,
    .what = "header",
    .version_at = offsetof(Moe__Data__Header, version),
    .id_at = offsetof(Moe__Data__Header, request_id),
    .msg_size = sizeof(wire_data_t),
    .msg_id_at = offsetof(wire_data_t, request_id),
    .refused = {
        [WIRE_REFUSED_IDENTITY] = WIRE_DATA_ERR_MALFORMED,
        [WIRE_REFUSED_NO_HEADER] = WIRE_DATA_ERR_MALFORMED,
        [WIRE_REFUSED_TOO_BIG] = WIRE_DATA_ERR_TOO_LARGE,
        [WIRE_REFUSED_UNDECODABLE] = WIRE_DATA_ERR_MALFORMED,
        [WIRE_REFUSED_EXHAUSTED] = WIRE_DATA_ERR_TOO_LARGE,
        [WIRE_REFUSED_VERSION] = WIRE_DATA_ERR_VERSION,
    },
    .arena_bytes = s_data_arena_bytes,
    .scratch_bytes = s_data_scratch_bytes,
    .send_bytes = s_data_send_bytes,
    .fill = s_data_fill,
};

int wire_data_recv(wire_inbox_t *self, void *socket, bool with_identity,
                   wire_peer_t *from, wire_data_t *msg, wire_data_error_t *code,
                   err_t *err)
{
    int c = code ? (int)*code : 0;
    int rc = wire_codec_recv(&wire_data_codec, self, socket, with_identity, from, msg, &c,
                             err);
    if (code)
        *code = (wire_data_error_t)c;
    return rc;
}

int wire_data_decode(wire_inbox_t *self, const wire_frame_t *frames, int n_frames,
                     wire_data_t *msg, wire_data_error_t *code, err_t *err)
{
    int c = code ? (int)*code : 0;
    int rc = wire_codec_decode(&wire_data_codec, self, frames, n_frames, msg, &c, err);
    if (code)
        *code = (wire_data_error_t)c;
    return rc;
}

int wire_data_send(void *socket, const wire_peer_t *to, const wire_data_t *msg, err_t *err)
{
    return wire_data_send_sized(socket, NULL, to, msg, NULL, err);
}

int wire_data_send_sized(void *socket, wire_outbox_t *outbox, const wire_peer_t *to,
                         const wire_data_t *msg, size_t *sent_bytes, err_t *err)
{
    assert(socket);
    assert(msg);
    Moe__Data__Header h = MOE__DATA__HEADER__INIT;
    char clipped[WIRE_MAX_TEXT];
    uint32_t stack_row[S_SEND_STACK_ASSIGN];
    uint32_t stack_expert[S_SEND_STACK_ASSIGN];
    float stack_weight[S_SEND_STACK_ASSIGN];
    wire_outbox_t *tmp = NULL; /* no outbox sized for the assignments: one for this send */
    const void *tensor = NULL;
    size_t bytes = 0;
    int rc = -1;

    h.version = WIRE_PROTOCOL_VERSION;
    h.type = (Moe__Data__MsgType)msg->type;
    h.request_id = msg->request_id;
    switch (msg->type) {
    case WIRE_HEARTBEAT_REPLY:
        h.n_coordinators = msg->n_coordinators > 0 ? (uint32_t)msg->n_coordinators : 0;
        break;
    case WIRE_HELLO:
    case WIRE_HEARTBEAT:
    case WIRE_SHUTDOWN:
        break;
    case WIRE_PLACE:
    case WIRE_DROP:
    case WIRE_PLACE_REPLY:
    case WIRE_HELLO_REPLY: {
        const char *model_id = msg->model_id ? msg->model_id : "";
        const char *held = msg->weights ? msg->weights : "";
        if (msg->node_id < 0 || msg->n_hosted < 0 ||
            (msg->n_hosted > 0 && (!msg->hosted_layer || !msg->hosted_expert))) {
            err_set(err, EINVAL, "%s: node %d with %d hosted experts", s_data_types[msg->type],
                    msg->node_id, msg->n_hosted);
            goto cleanup;
        }
        if (wire_text_len(model_id) < 0 || wire_text_len(held) < 0) {
            err_set(err, EINVAL, "HELLO_REPLY: the model id or the weights' description "
                    "is longer than %d bytes", WIRE_MAX_TEXT - 1);
            goto cleanup;
        }
        for (int i = 0; i < msg->n_hosted; i++)
            if (msg->hosted_layer[i] < 0 || msg->hosted_expert[i] < 0) {
                err_set(err, EINVAL, "%s: hosted pair %d is negative", s_data_types[msg->type], i);
                goto cleanup;
            }
        h.node_id = (uint32_t)msg->node_id;
        h.model_id = (char *)model_id;
        h.weights = (char *)held;
        h.n_hosted_layer = h.n_hosted_expert = (size_t)msg->n_hosted;
        h.hosted_layer = (uint32_t *)msg->hosted_layer;
        h.hosted_expert = (uint32_t *)msg->hosted_expert;
        h.memory_budget = msg->memory_budget;
        h.expert_bytes = msg->expert_bytes;
        h.n_coordinators = msg->n_coordinators > 0 ? (uint32_t)msg->n_coordinators : 0;
        break;
    }
    case WIRE_EXPERT_REQUEST:
    case WIRE_EXPERT_REPLY: {
        if (!wire_send_tensor_bytes(msg->n_rows, msg->hidden, msg->rows) || msg->layer < 0 ||
            (unsigned)msg->dtype >= WIRE_TENSOR_COUNT) {
            err_set(err, EINVAL, "%s: a %d x %d tensor (format %d) at layer %d",
                    s_data_types[msg->type], msg->n_rows, msg->hidden, (int)msg->dtype,
                    msg->layer);
            goto cleanup;
        }
        const bool request = msg->type == WIRE_EXPERT_REQUEST;
        if (request && (msg->n_assign <= 0 || !msg->assign)) {
            err_set(err, EINVAL, "EXPERT_REQUEST: %d assignments", msg->n_assign);
            goto cleanup;
        }
        /* The outbox holds what the wire's layout needs beyond the message:
         * the assignments as three columns when they do not fit the stack,
         * then the tensor in its format when it is not float32. */
        const size_t n = request ? (size_t)msg->n_assign : 0;
        const size_t cols = n > S_SEND_STACK_ASSIGN ? s_align(n * S_ASSIGN_BYTES) : 0;
        bytes = wire_tensor_bytes(msg->dtype, msg->n_rows, msg->hidden);
        const size_t coded = msg->dtype == WIRE_TENSOR_F32 ? 0 : bytes;
        uint8_t *scratch = NULL;
        if (cols + coded && !(scratch = wire_outbox_borrow(outbox, &tmp, cols + coded, err)))
            goto cleanup;
        if (coded) {
            wire_tensor_encode(msg->dtype, msg->rows, msg->n_rows, msg->hidden,
                               scratch + cols);
            tensor = scratch + cols;
        } else {
            tensor = msg->rows;
        }
        h.layer = (uint32_t)msg->layer;
        h.dtype = (Moe__Data__DType)(MOE__DATA__DTYPE__F32 + msg->dtype);
        h.n_rows = (uint32_t)msg->n_rows;
        h.hidden = (uint32_t)msg->hidden;
        if (!request) {
            h.compute_seconds = msg->compute_seconds;
            break;
        }
        h.per_assignment = msg->per_assignment;
        if (cols) {
            uint32_t *c = (uint32_t *)(void *)scratch;
            h.assign_row = c;
            h.assign_expert = c + n;
            h.assign_weight = (float *)(void *)(c + 2 * n);
        } else {
            h.assign_row = stack_row;
            h.assign_expert = stack_expert;
            h.assign_weight = stack_weight;
        }
        for (size_t i = 0; i < n; i++) {
            const moe_assign_t *a = &msg->assign[i];
            if (a->row < 0 || a->row >= msg->n_rows || a->expert < 0 || !isfinite(a->weight)) {
                err_set(err, EINVAL, "EXPERT_REQUEST: assignment %zu (row %d, expert %d) of "
                        "%d rows", i, (int)a->row, (int)a->expert, msg->n_rows);
                goto cleanup;
            }
            h.assign_row[i] = (uint32_t)a->row;
            h.assign_expert[i] = (uint32_t)a->expert;
            h.assign_weight[i] = a->weight;
        }
        h.n_assign_row = h.n_assign_expert = h.n_assign_weight = n;
        break;
    }
    case WIRE_ERROR:
        if (msg->error_code <= WIRE_DATA_OK || msg->error_code > WIRE_DATA_ERR_BUSY) {
            err_set(err, EINVAL, "ERROR: error code %d", (int)msg->error_code);
            goto cleanup;
        }
        h.error_code = (Moe__Data__ErrorCode)msg->error_code;
        h.error_message = (char *)wire_clip(msg->error_message, clipped);
        break;
    default:
        err_set(err, EINVAL, "unknown data-plane message type %d", (int)msg->type);
        goto cleanup;
    }
    rc = wire_send(socket, to, &h.base, tensor, bytes, sent_bytes, err);

cleanup:
    wire_outbox_destroy(&tmp); /* keeps errno */
    return rc;
}

int wire_data_send_error(void *socket, const wire_peer_t *to, uint64_t request_id,
                         wire_data_error_t code, const char *message, err_t *err)
{
    wire_data_t msg = {.type = WIRE_ERROR, .request_id = request_id, .error_code = code,
                       .error_message = message};
    return wire_data_send(socket, to, &msg, err);
}

