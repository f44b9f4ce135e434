/* test_wire: both protocols (proto/data_plane.h, proto/client_rpc.h) over
 * proto/wire.h's frame I/O, on real ZeroMQ sockets.
 *
 * Good messages make the round trip of every type over ROUTER <-> DEALER
 * pairs (tcp on 127.0.0.1 ephemeral ports, and inproc). Hostile messages are
 * written by hand with a small protobuf writer (as a peer in another language
 * would write them, and without calling protobuf-c, which only the three
 * proto modules, proto/wire, proto/data_plane and proto/client_rpc, do):
 * each must be refused with the documented code, and the next good message
 * must still arrive intact, which shows that the bad one was consumed whole.
 * Every socket has a receive timeout, so no test can hang.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <zmq.h>

#include "core/mem.h"
#include "model/config.h"
#include "proto/client_rpc.h"
#include "proto/data_plane.h"
#include "tests/testutil.h"

enum { T_TIMEOUT_MS = 3000 };  /* every receive gives up after this */
enum { T_MAX = 80 };           /* array entries a hand-written header holds */

/* A node's (and coordinator's) data-plane limits, and a coordinator's and a
 * client's client-RPC limits. */
static const wire_limits_t T_NODE = {.hidden = 8, .max_rows = 16, .max_assign = 32,
                                     .n_layers = 4, .n_experts = 8};
static const wire_limits_t T_COORD = {.max_prompt = 64, .vocab = 100};
static const wire_limits_t T_CLIENT = {.vocab = 100, .max_logit_rows = 64};

/* ---- a hand-written protobuf encoder ------------------------------------------------ */

typedef struct pb {
    uint8_t *buf;
    size_t n, cap;
} pb_t;

static void pb_raw(pb_t *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = (b->n + n) * 2 + 64;
        b->buf = mem_realloc(b->buf, cap);
        assert_non_null(b->buf);
        b->cap = cap;
    }
    memcpy(b->buf + b->n, p, n);
    b->n += n;
}

static void pb_varint(pb_t *b, uint64_t v)
{
    while (v >= 0x80) {
        uint8_t c = (uint8_t)(v | 0x80);
        pb_raw(b, &c, 1);
        v >>= 7;
    }
    uint8_t c = (uint8_t)v;
    pb_raw(b, &c, 1);
}

static size_t pb_varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static void pb_key(pb_t *b, unsigned field, unsigned wire_type)
{
    pb_varint(b, (uint64_t)field << 3 | wire_type);
}

/* A varint field; proto3 leaves zeros out. */
static void pb_uint(pb_t *b, unsigned field, uint64_t v)
{
    if (v) {
        pb_key(b, field, 0);
        pb_varint(b, v);
    }
}

static void pb_bytes(pb_t *b, unsigned field, const void *p, size_t n)
{
    pb_key(b, field, 2);
    pb_varint(b, n);
    pb_raw(b, p, n);
}

static void pb_str(pb_t *b, unsigned field, const char *s)
{
    if (s && *s)
        pb_bytes(b, field, s, strlen(s));
}

static void pb_double(pb_t *b, unsigned field, double d)
{
    if (d != 0) {
        pb_key(b, field, 1);
        pb_raw(b, &d, 8);  /* little-endian host */
    }
}

/* Repeated varints, packed (as protoc does for proto3) or one field each. */
static void pb_varints(pb_t *b, unsigned field, const uint64_t *v, size_t n, bool unpacked)
{
    if (!n)
        return;
    if (unpacked) {
        for (size_t i = 0; i < n; i++) {
            pb_key(b, field, 0);
            pb_varint(b, v[i]);
        }
        return;
    }
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += pb_varint_len(v[i]);
    pb_key(b, field, 2);
    pb_varint(b, len);
    for (size_t i = 0; i < n; i++)
        pb_varint(b, v[i]);
}

static void pb_u32s(pb_t *b, unsigned field, const uint32_t *v, size_t n, bool unpacked)
{
    uint64_t w[T_MAX];
    assert_true(n <= T_MAX);
    for (size_t i = 0; i < n; i++)
        w[i] = v[i];
    pb_varints(b, field, w, n, unpacked);
}

static void pb_floats(pb_t *b, unsigned field, const float *v, size_t n, bool unpacked)
{
    if (!n)
        return;
    if (unpacked) {
        for (size_t i = 0; i < n; i++) {
            pb_key(b, field, 5);
            pb_raw(b, &v[i], 4);
        }
        return;
    }
    pb_key(b, field, 2);
    pb_varint(b, 4 * n);
    pb_raw(b, v, 4 * n);
}

static void pb_free(pb_t *b)
{
    mem_free(b->buf);
    *b = (pb_t){0};
}

/* Value of varint field `field` in an encoded message (0 when absent). */
static uint64_t pb_find(const uint8_t *p, size_t n, unsigned field)
{
    size_t i = 0;
    uint64_t found = 0;
    while (i < n) {
        uint64_t key = 0, v = 0;
        for (int s = 0; i < n; s += 7) {
            key |= (uint64_t)(p[i] & 0x7f) << s;
            if (!(p[i++] & 0x80))
                break;
        }
        switch (key & 7) {
        case 0:
            for (int s = 0; i < n; s += 7) {
                v |= (uint64_t)(p[i] & 0x7f) << s;
                if (!(p[i++] & 0x80))
                    break;
            }
            if (key >> 3 == field)
                found = v;
            break;
        case 1: i += 8; break;
        case 5: i += 4; break;
        case 2:
            for (int s = 0; i < n; s += 7) {
                v |= (uint64_t)(p[i] & 0x7f) << s;
                if (!(p[i++] & 0x80))
                    break;
            }
            i += (size_t)v;
            break;
        default: fail_msg("wire type %d", (int)(key & 7));
        }
    }
    return found;
}

/* ---- a data-plane header, written by hand ------------------------------------------ */

typedef struct th {
    uint64_t version, type, request_id, layer, dtype, n_rows, hidden, node_id, error_code;
    size_t n_row, n_expert, n_weight, n_hl, n_he;
    uint32_t row[T_MAX], expert[T_MAX], hl[T_MAX], he[T_MAX];
    float weight[T_MAX];
    const char *model_id, *error_message;
    double compute_seconds;
    bool unpacked;      /* repeated fields one element per field */
    size_t pad;         /* bytes of unknown field 99 (a newer peer's field) */
} th_t;

/* Rows of the good EXPERT_REQUEST: 4 x 8. */
static float s_rows[4 * 8];

/* A good EXPERT_REQUEST: 4 rows of hidden 8 at layer 1, 6 assignments. */
static void th_request(th_t *h, uint64_t request_id)
{
    *h = (th_t){.version = WIRE_PROTOCOL_VERSION, .type = WIRE_EXPERT_REQUEST,
                .request_id = request_id, .layer = 1, .dtype = 1, .n_rows = 4, .hidden = 8,
                .n_row = 6, .n_expert = 6, .n_weight = 6};
    for (int i = 0; i < 6; i++) {
        h->row[i] = (uint32_t)(i % 4);
        h->expert[i] = (uint32_t)(i + 2) % 8;
        h->weight[i] = 0.25f * (float)(i + 1);
    }
    for (int i = 0; i < 4 * 8; i++)
        s_rows[i] = (float)i * 0.5f - 3.0f;
}

static void th_encode(const th_t *h, pb_t *b)
{
    pb_uint(b, 1, h->version);
    pb_uint(b, 2, h->type);
    pb_uint(b, 3, h->request_id);
    pb_uint(b, 4, h->layer);
    pb_uint(b, 5, h->dtype);
    pb_uint(b, 6, h->n_rows);
    pb_uint(b, 7, h->hidden);
    pb_u32s(b, 8, h->row, h->n_row, h->unpacked);
    pb_u32s(b, 9, h->expert, h->n_expert, h->unpacked);
    pb_floats(b, 10, h->weight, h->n_weight, h->unpacked);
    pb_uint(b, 11, h->node_id);
    pb_str(b, 12, h->model_id);
    pb_u32s(b, 13, h->hl, h->n_hl, h->unpacked);
    pb_u32s(b, 14, h->he, h->n_he, h->unpacked);
    pb_uint(b, 15, h->error_code);
    pb_str(b, 16, h->error_message);
    pb_double(b, 17, h->compute_seconds);
    if (h->pad) {
        uint8_t *zeros = mem_calloc(1, h->pad);
        assert_non_null(zeros);
        pb_bytes(b, 99, zeros, h->pad);
        mem_free(zeros);
    }
}

/* ---- sockets ------------------------------------------------------------------------- */

typedef struct net {
    void *ctx;
    void *router;       /* an expert node, or the coordinator's client endpoint */
    void *dealer;       /* the coordinator's connection, or a client */
    char endpoint[256];
    wire_inbox_t *rin;  /* the router's inbox */
    wire_inbox_t *din;  /* the dealer's inbox */
} net_t;

static void *s_socket(void *ctx, int type, int timeout_ms)
{
    void *s = zmq_socket(ctx, type);
    assert_non_null(s);
    int zero = 0;
    assert_int_equal(zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero), 0);
    assert_int_equal(zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms), 0);
    assert_int_equal(zmq_setsockopt(s, ZMQ_SNDTIMEO, &timeout_ms, sizeof timeout_ms), 0);
    return s;
}

static void *s_dealer(net_t *n)
{
    void *d = s_socket(n->ctx, ZMQ_DEALER, T_TIMEOUT_MS);
    assert_int_equal(zmq_connect(d, n->endpoint), 0);
    return d;
}

/* A ROUTER bound on tcp (ephemeral port) or inproc, a DEALER connected to it,
 * and their inboxes. limit: the router sets ZMQ_MAXMSGSIZE from rlim. */
static net_t *s_net(bool tcp, const wire_limits_t *rlim, const wire_limits_t *dlim, bool limit)
{
    static int counter;
    net_t *n = mem_calloc(1, sizeof *n);
    assert_non_null(n);
    n->ctx = zmq_ctx_new();
    assert_non_null(n->ctx);
    n->router = s_socket(n->ctx, ZMQ_ROUTER, T_TIMEOUT_MS);
    err_t err = {0};
    if (limit)
        assert_int_equal(wire_socket_set_limit(n->router, rlim, &err), 0);
    char bind[64];
    if (tcp)
        snprintf(bind, sizeof bind, "tcp://127.0.0.1:*");
    else
        snprintf(bind, sizeof bind, "inproc://test-wire-%d", counter++);
    assert_int_equal(zmq_bind(n->router, bind), 0);
    size_t len = sizeof n->endpoint;
    assert_int_equal(zmq_getsockopt(n->router, ZMQ_LAST_ENDPOINT, n->endpoint, &len), 0);
    n->dealer = s_dealer(n);
    n->rin = wire_inbox_new(rlim, &err);
    n->din = wire_inbox_new(dlim, &err);
    assert_non_null(n->rin);
    assert_non_null(n->din);
    return n;
}

static void s_net_close(net_t **n_p)
{
    net_t *n = *n_p;
    wire_inbox_destroy(&n->rin);
    wire_inbox_destroy(&n->din);
    zmq_close(n->router);
    if (n->dealer)
        zmq_close(n->dealer);
    zmq_ctx_term(n->ctx);
    mem_free(n);
    *n_p = NULL;
}

static int setup_data_tcp(void **state)
{
    *state = s_net(true, &T_NODE, &T_NODE, true);
    return 0;
}

static int setup_data_inproc(void **state)
{
    *state = s_net(false, &T_NODE, &T_NODE, false);
    return 0;
}

static int setup_client_tcp(void **state)
{
    *state = s_net(true, &T_COORD, &T_CLIENT, true);
    return 0;
}

static int setup_client_inproc(void **state)
{
    *state = s_net(false, &T_COORD, &T_CLIENT, false);
    return 0;
}

static int teardown(void **state)
{
    net_t *n = *state;
    s_net_close(&n);
    return 0;
}

/* Sends frames (data[i], len[i]) as one multipart message. */
static void s_send_frames(void *socket, int n, const void *const *data, const size_t *len)
{
    for (int i = 0; i < n; i++)
        assert_int_equal(zmq_send(socket, data[i], len[i], i + 1 < n ? ZMQ_SNDMORE : 0),
                         (int)len[i]);
}

/* Sends [id] header [tensor of n_floats floats when >= 0] [n_extra frames]. */
static void s_send_raw(void *socket, const wire_peer_t *to, const pb_t *hdr, long n_floats,
                       int n_extra)
{
    static float tensor[4096];
    static const char extra[] = "extra";
    const void *data[8];
    size_t len[8];
    int n = 0;
    assert_true(n_floats < 4096 && n_extra <= 4);
    if (to) {
        data[n] = to->id;
        len[n++] = to->len;
    }
    data[n] = hdr->buf;
    len[n++] = hdr->n;
    if (n_floats >= 0) {
        for (long i = 0; i < n_floats; i++)
            tensor[i] = i < 32 ? s_rows[i] : 1.0f;
        data[n] = tensor;
        len[n++] = (size_t)n_floats * sizeof(float);
    }
    for (int i = 0; i < n_extra; i++) {
        data[n] = extra;
        len[n++] = sizeof extra;
    }
    s_send_frames(socket, n, data, len);
}

/* ---- data-plane helpers ---------------------------------------------------------------- */

/* Receives a good data-plane message on the router. */
static void s_router_recv(net_t *n, wire_peer_t *from, wire_data_t *msg)
{
    err_t err = {0};
    wire_data_error_t code = WIRE_DATA_ERR_INTERNAL;
    int rc = wire_data_recv(n->rin, n->router, true, from, msg, &code, &err);
    if (rc < 0)
        fail_msg("wire_data_recv: errno %d, code %s: %s", errno, wire_data_error_name(code),
                 err.msg);
    assert_int_equal(code, WIRE_DATA_OK);
}

static void s_dealer_recv(net_t *n, wire_data_t *msg)
{
    err_t err = {0};
    wire_data_error_t code = WIRE_DATA_ERR_INTERNAL;
    int rc = wire_data_recv(n->din, n->dealer, false, NULL, msg, &code, &err);
    if (rc < 0)
        fail_msg("wire_data_recv: errno %d, code %s: %s", errno, wire_data_error_name(code),
                 err.msg);
    assert_int_equal(code, WIRE_DATA_OK);
}

static void s_data_send(void *socket, const wire_peer_t *to, const wire_data_t *msg)
{
    err_t err = {0};
    if (wire_data_send(socket, to, msg, &err) < 0)
        fail_msg("wire_data_send: %s", err.msg);
}

/* Checks that msg is th_request's EXPERT_REQUEST with request_id id. */
static void s_check_request(const wire_data_t *msg, uint64_t id)
{
    th_t h;
    th_request(&h, id);
    assert_int_equal(msg->type, WIRE_EXPERT_REQUEST);
    assert_int_equal(msg->request_id, id);
    assert_int_equal(msg->layer, 1);
    assert_int_equal(msg->n_rows, 4);
    assert_int_equal(msg->hidden, 8);
    assert_non_null(msg->rows);
    assert_int_equal((uintptr_t)msg->rows % sizeof(float), 0);
    assert_memory_equal(msg->rows, s_rows, sizeof s_rows);
    assert_int_equal(msg->n_assign, 6);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(msg->assign[i].row, h.row[i]);
        assert_int_equal(msg->assign[i].expert, h.expert[i]);
        assert_true(msg->assign[i].weight == h.weight[i]);
    }
}

/* The good EXPERT_REQUEST sent with wire_data_send arrives intact: the socket
 * is on a message boundary. */
static void s_expect_in_sync(net_t *n)
{
    static uint64_t id = 5000;
    th_t h;
    th_request(&h, ++id);
    moe_assign_t assign[6];
    for (int i = 0; i < 6; i++)
        assign[i] = (moe_assign_t){(int32_t)h.row[i], (int32_t)h.expert[i], h.weight[i]};
    wire_data_t out = {.type = WIRE_EXPERT_REQUEST, .request_id = id, .layer = 1,
                       .n_rows = 4, .hidden = 8, .rows = s_rows, .n_assign = 6,
                       .assign = assign};
    s_data_send(n->dealer, NULL, &out);
    wire_data_t in;
    wire_peer_t from;
    s_router_recv(n, &from, &in);
    s_check_request(&in, id);
}

/* The router refuses the next message with code (and reports request id),
 * then receives a good one. */
static void s_expect_refused_msg(net_t *n, wire_data_error_t code, uint64_t id)
{
    err_t err = {0};
    wire_data_t msg;
    wire_peer_t from = {0};
    wire_data_error_t got = WIRE_DATA_OK;
    int rc = wire_data_recv(n->rin, n->router, true, &from, &msg, &got, &err);
    if (rc == 0 || errno != EPROTO || got != code)
        fail_msg("expected EPROTO/%s, got rc %d errno %d code %s (%s)",
                 wire_data_error_name(code), rc, errno, wire_data_error_name(got), err.msg);
    assert_true(strlen(err.msg) > 0);
    assert_int_equal(msg.request_id, id);
    assert_null(msg.rows);
    assert_null(msg.assign);
    assert_true(from.len > 0);  /* the sender can be told */
    s_expect_in_sync(n);
}

/* Sends header h (with a tensor of n_floats when >= 0, and n_extra more
 * frames) from the dealer and expects the router to refuse it. */
static void s_expect_refused(net_t *n, const th_t *h, long n_floats, int n_extra,
                             wire_data_error_t code, uint64_t id)
{
    pb_t b = {0};
    th_encode(h, &b);
    s_send_raw(n->dealer, NULL, &b, n_floats, n_extra);
    pb_free(&b);
    s_expect_refused_msg(n, code, id);
}

/* ===== tests ============================================================== */

static void test_error_names(void **state)
{
    (void)state;
    assert_string_equal(wire_data_error_name(WIRE_DATA_OK), "ok");
    assert_string_equal(wire_data_error_name(WIRE_DATA_ERR_VERSION), "version");
    assert_string_equal(wire_data_error_name(WIRE_DATA_ERR_MALFORMED), "malformed");
    assert_string_equal(wire_data_error_name(WIRE_DATA_ERR_SHAPE), "shape");
    assert_string_equal(wire_data_error_name(WIRE_DATA_ERR_UNKNOWN_EXPERT), "unknown_expert");
    assert_string_equal(wire_data_error_name(WIRE_DATA_ERR_TOO_LARGE), "too_large");
    assert_string_equal(wire_data_error_name(WIRE_DATA_ERR_INTERNAL), "internal");
    assert_string_equal(wire_data_error_name(WIRE_DATA_ERR_UNEXPECTED), "unexpected");
    assert_string_equal(wire_data_error_name((wire_data_error_t)99), "unknown");
    assert_string_equal(wire_data_error_name((wire_data_error_t)-1), "unknown");
    assert_string_equal(wire_client_error_name(WIRE_CLIENT_OK), "ok");
    assert_string_equal(wire_client_error_name(WIRE_CLIENT_VERSION_MISMATCH),
                        "version_mismatch");
    assert_string_equal(wire_client_error_name(WIRE_CLIENT_INVALID_ARGUMENT),
                        "invalid_argument");
    assert_string_equal(wire_client_error_name(WIRE_CLIENT_DEADLINE_EXCEEDED),
                        "deadline_exceeded");
    assert_string_equal(wire_client_error_name((wire_client_error_t)9), "unknown");
    /* One errno <-> client error mapping, both ways. */
    static const struct { int errnum; wire_client_error_t code; } of[] = {
        {EHOSTUNREACH, WIRE_CLIENT_UNAVAILABLE}, {ETIMEDOUT, WIRE_CLIENT_UNAVAILABLE},
        {EPROTO, WIRE_CLIENT_UNAVAILABLE}, {EINVAL, WIRE_CLIENT_INVALID_ARGUMENT},
        {ENOSPC, WIRE_CLIENT_INVALID_ARGUMENT}, {E2BIG, WIRE_CLIENT_INVALID_ARGUMENT},
        {EINTR, WIRE_CLIENT_CANCELLED}, {ENOMEM, WIRE_CLIENT_INTERNAL},
        {0, WIRE_CLIENT_INTERNAL},
    }, back[] = {
        {EINVAL, WIRE_CLIENT_INVALID_ARGUMENT}, {EBUSY, WIRE_CLIENT_BUSY},
        {EHOSTUNREACH, WIRE_CLIENT_UNAVAILABLE}, {EPROTO, WIRE_CLIENT_VERSION_MISMATCH},
        {ETIMEDOUT, WIRE_CLIENT_DEADLINE_EXCEEDED}, {ECANCELED, WIRE_CLIENT_CANCELLED},
        {EIO, WIRE_CLIENT_INTERNAL}, {EIO, WIRE_CLIENT_MALFORMED},
    };
    for (size_t i = 0; i < sizeof of / sizeof of[0]; i++)
        assert_int_equal(wire_client_error_of(of[i].errnum), of[i].code);
    for (size_t i = 0; i < sizeof back / sizeof back[0]; i++)
        assert_int_equal(wire_client_error_errno(back[i].code), back[i].errnum);
}

static void test_max_message_bytes(void **state)
{
    (void)state;
    /* A node: the header plus its largest tensor. */
    assert_int_equal(wire_max_message_bytes(&T_NODE), WIRE_MAX_HEADER_BYTES + 16 * 8 * 4);
    /* A coordinator's client endpoint receives headers only. */
    wire_limits_t rpc = {.max_prompt = 64};
    assert_int_equal(wire_max_message_bytes(&rpc), WIRE_MAX_HEADER_BYTES);
    /* A client bounding its logits. */
    assert_int_equal(wire_max_message_bytes(&T_CLIENT), WIRE_MAX_HEADER_BYTES + 64 * 100 * 4);
    /* The larger tensor of the two kinds counts. */
    wire_limits_t both = {.hidden = 8, .max_rows = 16, .vocab = 100, .max_logit_rows = 2};
    assert_int_equal(wire_max_message_bytes(&both), WIRE_MAX_HEADER_BYTES + 800);
    /* Knowing nothing, or half a tensor shape, bounds nothing. */
    wire_limits_t none = {0};
    assert_int_equal(wire_max_message_bytes(&none), -1);
    assert_int_equal(wire_max_message_bytes(&T_COORD), -1);  /* vocab, no logit rows */
    wire_limits_t rows_only = {.max_rows = 16, .max_assign = 8};
    assert_int_equal(wire_max_message_bytes(&rows_only), -1);
    /* fp8 sends a row of one value as 5 bytes, its scale included. */
    wire_limits_t narrow = {.hidden = 1, .max_rows = 16};
    assert_int_equal(wire_max_message_bytes(&narrow), WIRE_MAX_HEADER_BYTES + 16 * 5);
    /* Huge limits do not overflow. */
    wire_limits_t huge = {.hidden = INT32_MAX, .max_rows = INT32_MAX};
    int64_t v = wire_max_message_bytes(&huge);
    assert_true(v > WIRE_MAX_HEADER_BYTES);
    assert_int_equal(v, WIRE_MAX_HEADER_BYTES + (int64_t)INT32_MAX * 4);
}

static void test_socket_set_limit(void **state)
{
    (void)state;
    void *ctx = zmq_ctx_new();
    void *s = s_socket(ctx, ZMQ_ROUTER, T_TIMEOUT_MS);
    err_t err = {0};
    int64_t got;
    size_t len = sizeof got;
    assert_int_equal(wire_socket_set_limit(s, &T_NODE, &err), 0);
    assert_int_equal(zmq_getsockopt(s, ZMQ_MAXMSGSIZE, &got, &len), 0);
    assert_int_equal(got, wire_max_message_bytes(&T_NODE));
    wire_limits_t none = {0};
    assert_int_equal(wire_socket_set_limit(s, &none, &err), 0);
    assert_int_equal(zmq_getsockopt(s, ZMQ_MAXMSGSIZE, &got, &len), 0);
    assert_int_equal(got, -1);
    zmq_close(s);
    /* Something that is not a socket fails cleanly. */
    static uint64_t not_a_socket[1 << 13];
    assert_int_equal(wire_socket_set_limit(not_a_socket, &T_NODE, &err), -1);
    assert_int_equal(errno, ENOTSOCK);
    assert_true(strlen(err.msg) > 0);
    zmq_ctx_term(ctx);
}

static void test_inbox_new_and_destroy(void **state)
{
    (void)state;
    err_t err = {0};
    wire_inbox_t *in = wire_inbox_new(&T_NODE, &err);
    assert_non_null(in);
    wire_inbox_destroy(&in);
    assert_null(in);
    wire_inbox_destroy(&in);  /* twice is fine */
    wire_inbox_destroy(NULL);
    in = wire_inbox_new(NULL, &err);  /* no limits: a client that knows nothing */
    assert_non_null(in);
    wire_inbox_destroy(&in);
    /* Every allocation can fail, leaving nothing behind. */
    for (long k = 1; k <= 8; k++) {
        mem_fail_after(k);
        in = wire_inbox_new(&T_NODE, &err);
        mem_fail_after(-1);
        if (in) {
            wire_inbox_destroy(&in);
            assert_true(k >= 5);  /* the inbox, arena, tensor copy, assignments */
            continue;
        }
        assert_int_equal(errno, ENOMEM);
        assert_int_equal(err.code, ENOMEM);
    }
    /* Absurd limits are refused. */
    wire_limits_t huge = {.max_assign = INT32_MAX};
    assert_null(wire_inbox_new(&huge, &err));
    assert_int_equal(errno, EINVAL);
    wire_limits_t cells = {.n_layers = 1 << 16, .n_experts = 1 << 16};
    assert_null(wire_inbox_new(&cells, &err));
    assert_int_equal(errno, EINVAL);
}

/* Every data-plane type, both ways. */
/* wire_*_decode: the decoders on frames in memory, as fuzz/ drives them, give
 * what the receive functions give: a good message field by field, the same
 * refusals, and an inbox that serves sockets and memory alike. */
static void test_decode_from_memory(void **state)
{
    (void)state;
    err_t err = {0};
    wire_inbox_t *in = wire_inbox_new(&T_NODE, &err);
    assert_non_null(in);
    th_t h;
    th_request(&h, 42);
    pb_t b = {0};
    th_encode(&h, &b);
    wire_frame_t frames[3] = {{b.buf, b.n}, {s_rows, sizeof s_rows}, {"x", 1}};
    wire_data_t msg;
    wire_data_error_t code = WIRE_DATA_ERR_INTERNAL;
    assert_int_equal(wire_data_decode(in, frames, 2, &msg, &code, &err), 0);
    assert_int_equal(code, WIRE_DATA_OK);
    assert_int_equal(msg.type, WIRE_EXPERT_REQUEST);
    assert_int_equal(msg.request_id, 42);
    assert_int_equal(msg.layer, 1);
    assert_int_equal(msg.n_rows, 4);
    assert_int_equal(msg.hidden, 8);
    assert_memory_equal(msg.rows, s_rows, sizeof s_rows);
    assert_int_equal(msg.n_assign, 6);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(msg.assign[i].row, (int)h.row[i]);
        assert_int_equal(msg.assign[i].expert, (int)h.expert[i]);
        assert_true(msg.assign[i].weight == h.weight[i]);
    }
    assert_int_equal(wire_inbox_message_bytes(in), b.n + sizeof s_rows);

    /* A missing or extra frame is refused as on a socket, with the id. */
    for (int n_frames = 0; n_frames <= 3; n_frames += 1 + (n_frames == 1)) {
        code = WIRE_DATA_OK;
        errno = 0;
        assert_int_equal(wire_data_decode(in, frames, n_frames, &msg, &code, &err), -1);
        assert_int_equal(errno, EPROTO);
        assert_int_equal(code, WIRE_DATA_ERR_MALFORMED);
        assert_int_equal(msg.request_id, n_frames ? 42 : 0);
        assert_null(msg.rows);
    }
    /* The tensor frame one float short. */
    frames[1].size -= sizeof(float);
    assert_int_equal(wire_data_decode(in, frames, 2, &msg, &code, &err), -1);
    assert_int_equal(code, WIRE_DATA_ERR_SHAPE);
    frames[1].size += sizeof(float);
    pb_free(&b);

    /* A client request and a reply decode the same way. */
    pb_t r = {0};
    pb_uint(&r, 1, WIRE_PROTOCOL_VERSION);
    pb_uint(&r, 2, WIRE_REQ_STATUS);
    pb_uint(&r, 3, 7);
    wire_frame_t one = {r.buf, r.n};
    wire_request_t req;
    wire_client_error_t ccode = WIRE_CLIENT_INTERNAL;
    assert_int_equal(wire_request_decode(in, &one, 1, &req, &ccode, &err), 0);
    assert_int_equal(ccode, WIRE_CLIENT_OK);
    assert_int_equal(req.type, WIRE_REQ_STATUS);
    assert_int_equal(req.request_id, 7);
    wire_reply_t rep;
    pb_uint(&r, 2, WIRE_REP_ERROR);  /* the last value of a field wins */
    pb_uint(&r, 6, WIRE_CLIENT_BUSY);
    pb_str(&r, 7, "full");
    one = (wire_frame_t){r.buf, r.n};
    assert_int_equal(wire_reply_decode(in, &one, 1, &rep, &err), 0);
    assert_int_equal(rep.type, WIRE_REP_ERROR);
    assert_int_equal(rep.error_code, WIRE_CLIENT_BUSY);
    assert_string_equal(rep.error_message, "full");
    assert_int_equal(wire_reply_decode(in, NULL, 0, &rep, &err), -1);
    assert_int_equal(errno, EPROTO);
    pb_free(&r);
    wire_inbox_destroy(&in);
}

static void test_data_round_trip(void **state)
{
    net_t *n = *state;
    wire_data_t in;
    wire_peer_t coord;

    wire_data_t hello = {.type = WIRE_HELLO, .request_id = 1};
    s_data_send(n->dealer, NULL, &hello);
    s_router_recv(n, &coord, &in);
    assert_int_equal(in.type, WIRE_HELLO);
    assert_int_equal(in.request_id, 1);
    assert_int_equal(in.n_rows, 0);
    assert_null(in.rows);
    assert_true(coord.len > 0);

    const int32_t hl[4] = {0, 1, 2, 3}, he[4] = {0, 4, 7, 3};
    const char *model_id = "mixtral:h8:l4:e8:k2:i16:v100:a2/1x4";
    wire_data_t hello_reply = {.type = WIRE_HELLO_REPLY, .request_id = 1, .node_id = 3,
                               .model_id = model_id, .n_hosted = 4, .hosted_layer = hl,
                               .hosted_expert = he, .n_coordinators = 2,
                               .n_rows = 99, .rows = NULL}; /* unused fields are ignored */
    s_data_send(n->router, &coord, &hello_reply);
    s_dealer_recv(n, &in);
    assert_int_equal(in.type, WIRE_HELLO_REPLY);
    assert_int_equal(in.request_id, 1);
    assert_int_equal(in.node_id, 3);
    assert_string_equal(in.model_id, model_id);
    assert_int_equal(in.n_hosted, 4);
    assert_memory_equal(in.hosted_layer, hl, sizeof hl);
    assert_memory_equal(in.hosted_expert, he, sizeof he);
    assert_int_equal(in.n_coordinators, 2);
    assert_int_equal(in.n_rows, 0);

    /* A node with no experts and no model id is still a valid reply; one
     * that does not count its coordinators says 0. */
    wire_data_t empty_reply = {.type = WIRE_HELLO_REPLY, .request_id = 2};
    s_data_send(n->router, &coord, &empty_reply);
    s_dealer_recv(n, &in);
    assert_int_equal(in.n_coordinators, 0);
    assert_int_equal(in.n_hosted, 0);
    assert_int_equal(in.node_id, 0);
    assert_true(in.model_id == NULL || in.model_id[0] == '\0');

    s_expect_in_sync(n);  /* an EXPERT_REQUEST, checked field by field */
    {
        /* per_assignment travels (issue 16): absent is false. */
        moe_assign_t one = {0, 1, 0.5f};
        float row[8] = {0};
        wire_data_t pa = {.type = WIRE_EXPERT_REQUEST, .request_id = 70, .layer = 0,
                          .n_rows = 1, .hidden = 8, .rows = row, .n_assign = 1,
                          .assign = &one, .per_assignment = true};
        s_data_send(n->dealer, NULL, &pa);
        s_router_recv(n, &coord, &in);
        assert_true(in.per_assignment);
        pa.per_assignment = false;
        s_data_send(n->dealer, NULL, &pa);
        s_router_recv(n, &coord, &in);
        assert_false(in.per_assignment);
    }

    float partial[4 * 8];
    for (int i = 0; i < 4 * 8; i++)
        partial[i] = -(float)i / 7.0f;
    wire_data_t reply = {.type = WIRE_EXPERT_REPLY, .request_id = 77, .layer = 3,
                         .n_rows = 4, .hidden = 8, .rows = partial,
                         .compute_seconds = 0.125};
    s_data_send(n->router, &coord, &reply);
    s_dealer_recv(n, &in);
    assert_int_equal(in.type, WIRE_EXPERT_REPLY);
    assert_int_equal(in.request_id, 77);
    assert_int_equal(in.layer, 3);
    assert_int_equal(in.n_rows, 4);
    assert_int_equal(in.hidden, 8);
    assert_memory_equal(in.rows, partial, sizeof partial);
    assert_true(in.compute_seconds == 0.125);
    assert_int_equal(in.n_assign, 0);

    wire_data_t beat = {.type = WIRE_HEARTBEAT, .request_id = 5};
    s_data_send(n->dealer, NULL, &beat);
    s_router_recv(n, &coord, &in);
    assert_int_equal(in.type, WIRE_HEARTBEAT);
    assert_int_equal(in.request_id, 5);
    /* Issue 15: a node says how many coordinators it serves. */
    wire_data_t beat_reply = {.type = WIRE_HEARTBEAT_REPLY, .request_id = 5,
                              .n_coordinators = 3};
    s_data_send(n->router, &coord, &beat_reply);
    s_dealer_recv(n, &in);
    assert_int_equal(in.type, WIRE_HEARTBEAT_REPLY);
    assert_int_equal(in.request_id, 5);
    assert_int_equal(in.n_coordinators, 3);

    err_t err = {0};
    assert_int_equal(wire_data_send_error(n->router, &coord, 9, WIRE_DATA_ERR_SHAPE,
                                          "row 3 is bad", &err), 0);
    s_dealer_recv(n, &in);
    assert_int_equal(in.type, WIRE_ERROR);
    assert_int_equal(in.request_id, 9);
    assert_int_equal(in.error_code, WIRE_DATA_ERR_SHAPE);
    assert_string_equal(in.error_message, "row 3 is bad");
    /* The other way, with no message. */
    assert_int_equal(wire_data_send_error(n->dealer, NULL, 10, WIRE_DATA_ERR_UNEXPECTED, NULL,
                                          &err), 0);
    s_router_recv(n, &coord, &in);
    assert_int_equal(in.type, WIRE_ERROR);
    assert_int_equal(in.request_id, 10);
    assert_int_equal(in.error_code, WIRE_DATA_ERR_UNEXPECTED);
    assert_string_equal(in.error_message, "");

    /* Issue 16: PLACE, DROP and PLACE_REPLY carry pairs (and the reply the
     * node's budget); ERR_NO_ROOM travels. */
    wire_data_t place = {.type = WIRE_PLACE, .request_id = 12, .n_hosted = 4,
                         .hosted_layer = hl, .hosted_expert = he};
    s_data_send(n->dealer, NULL, &place);
    s_router_recv(n, &coord, &in);
    assert_int_equal(in.type, WIRE_PLACE);
    assert_int_equal(in.n_hosted, 4);
    assert_memory_equal(in.hosted_layer, hl, sizeof hl);
    assert_memory_equal(in.hosted_expert, he, sizeof he);
    wire_data_t drop = {.type = WIRE_DROP, .request_id = 13, .n_hosted = 1,
                        .hosted_layer = hl + 2, .hosted_expert = he + 2};
    s_data_send(n->dealer, NULL, &drop);
    s_router_recv(n, &coord, &in);
    assert_int_equal(in.type, WIRE_DROP);
    assert_int_equal(in.n_hosted, 1);
    assert_int_equal(in.hosted_layer[0], 2);
    assert_int_equal(in.hosted_expert[0], 7);
    wire_data_t placed = {.type = WIRE_PLACE_REPLY, .request_id = 12, .node_id = 3,
                          .n_hosted = 3, .hosted_layer = hl, .hosted_expert = he,
                          .memory_budget = UINT64_C(1) << 33, .expert_bytes = 49152,
                          .n_coordinators = 2};
    s_data_send(n->router, &coord, &placed);
    s_dealer_recv(n, &in);
    assert_int_equal(in.type, WIRE_PLACE_REPLY);
    assert_int_equal(in.n_coordinators, 2);
    assert_int_equal(in.n_hosted, 3);
    assert_true(in.memory_budget == UINT64_C(1) << 33);
    assert_true(in.expert_bytes == 49152);
    assert_int_equal(wire_data_send_error(n->router, &coord, 12, WIRE_DATA_ERR_NO_ROOM,
                                          "beyond the budget", &err), 0);
    s_dealer_recv(n, &in);
    assert_int_equal(in.error_code, WIRE_DATA_ERR_NO_ROOM);
    assert_string_equal(wire_data_error_name(in.error_code), "no_room");

    wire_data_t bye = {.type = WIRE_SHUTDOWN, .request_id = 11};
    s_data_send(n->dealer, NULL, &bye);
    s_router_recv(n, &coord, &in);
    assert_int_equal(in.type, WIRE_SHUTDOWN);
    assert_int_equal(in.request_id, 11);
}

/* The frames on the wire are what PROTOCOL.md says: [identity] header tensor,
 * the header's fields at their numbers, the tensor raw float32. */
static void test_data_frames_on_the_wire(void **state)
{
    net_t *n = *state;
    th_t h;
    th_request(&h, 42);
    moe_assign_t assign[6];
    for (int i = 0; i < 6; i++)
        assign[i] = (moe_assign_t){(int32_t)h.row[i], (int32_t)h.expert[i], h.weight[i]};
    wire_data_t out = {.type = WIRE_EXPERT_REQUEST, .request_id = 42, .layer = 1, .n_rows = 4,
                       .hidden = 8, .rows = s_rows, .n_assign = 6, .assign = assign};
    s_data_send(n->dealer, NULL, &out);

    zmq_msg_t f[3];
    for (int i = 0; i < 3; i++) {
        zmq_msg_init(&f[i]);
        assert_true(zmq_msg_recv(&f[i], n->router, 0) >= 0);
        assert_int_equal(zmq_msg_more(&f[i]), i < 2);
    }
    const uint8_t *hp = zmq_msg_data(&f[1]);
    size_t hn = zmq_msg_size(&f[1]);
    assert_int_equal(pb_find(hp, hn, 1), WIRE_PROTOCOL_VERSION);
    assert_int_equal(pb_find(hp, hn, 2), WIRE_EXPERT_REQUEST);
    assert_int_equal(pb_find(hp, hn, 3), 42);
    assert_int_equal(pb_find(hp, hn, 4), 1);
    assert_int_equal(pb_find(hp, hn, 5), 1);  /* F32 */
    assert_int_equal(pb_find(hp, hn, 6), 4);
    assert_int_equal(pb_find(hp, hn, 7), 8);
    /* The assignments are packed, as a proto3 encoder writes them. */
    pb_t want = {0};
    pb_u32s(&want, 8, h.row, 6, false);
    assert_non_null(memmem(hp, hn, want.buf, want.n));
    pb_free(&want);
    assert_int_equal(zmq_msg_size(&f[2]), sizeof s_rows);
    assert_memory_equal(zmq_msg_data(&f[2]), s_rows, sizeof s_rows);
    for (int i = 0; i < 3; i++)
        zmq_msg_close(&f[i]);
}

static void s_free_nothing(void *data, void *hint)
{
    (void)data;
    (void)hint;
}

/* Over inproc the tensor frame arrives at the sender's address: an aligned one
 * is used in place, a misaligned one is copied to aligned memory. */
static void test_data_tensor_in_place_or_copied(void **state)
{
    net_t *n = *state;
    static _Alignas(64) uint8_t buf[4 + sizeof s_rows];
    th_t h;
    th_request(&h, 31);
    pb_t b = {0};
    th_encode(&h, &b);
    for (size_t offset = 0; offset < 4; offset++) {
        memcpy(buf + offset, s_rows, sizeof s_rows);
        assert_int_equal(zmq_send(n->dealer, b.buf, b.n, ZMQ_SNDMORE), (int)b.n);
        zmq_msg_t t;
        assert_int_equal(zmq_msg_init_data(&t, buf + offset, sizeof s_rows, s_free_nothing,
                                           NULL), 0);
        assert_int_equal(zmq_msg_send(&t, n->dealer, 0), (int)sizeof s_rows);
        wire_data_t in;
        wire_peer_t from;
        s_router_recv(n, &from, &in);
        s_check_request(&in, 31);
        if (offset == 0)
            assert_ptr_equal(in.rows, buf);       /* no copy */
        else
            assert_ptr_not_equal(in.rows, buf + offset);
    }
    pb_free(&b);
}

/* A peer in another language may write repeated fields unpacked, put fields
 * in any order, or add fields of a newer minor revision: all are accepted. */
static void test_data_hand_encoded(void **state)
{
    net_t *n = *state;
    th_t h;
    th_request(&h, 61);
    s_expect_in_sync(n);
    h.unpacked = true;
    pb_t b = {0};
    th_encode(&h, &b);
    s_send_raw(n->dealer, NULL, &b, 32, 0);
    pb_free(&b);
    wire_data_t in;
    wire_peer_t from;
    s_router_recv(n, &from, &in);
    s_check_request(&in, 61);

    /* The most assignments the limits allow, unpacked, plus an unknown field. */
    th_request(&h, 62);
    h.unpacked = true;
    h.pad = 100;
    h.n_row = h.n_expert = h.n_weight = (size_t)T_NODE.max_assign;
    for (size_t i = 0; i < h.n_row; i++) {
        h.row[i] = (uint32_t)i % 4;
        h.expert[i] = (uint32_t)i % 8;
        h.weight[i] = 1.0f;
    }
    th_encode(&h, &b);
    s_send_raw(n->dealer, NULL, &b, 32, 0);
    pb_free(&b);
    s_router_recv(n, &from, &in);
    assert_int_equal(in.n_assign, T_NODE.max_assign);
    assert_int_equal(in.assign[31].row, 3);
    assert_int_equal(in.assign[31].expert, 7);

    /* A HELLO_REPLY whose hosted pairs fill the model. */
    th_t r = {.version = 1, .type = WIRE_HELLO_REPLY, .request_id = 63, .node_id = 2,
              .model_id = "m", .n_hl = 32, .n_he = 32, .unpacked = true};
    for (int i = 0; i < 32; i++) {
        r.hl[i] = (uint32_t)i / 8;
        r.he[i] = (uint32_t)i % 8;
    }
    th_encode(&r, &b);
    s_send_raw(n->dealer, NULL, &b, -1, 0);
    pb_free(&b);
    s_router_recv(n, &from, &in);
    assert_int_equal(in.type, WIRE_HELLO_REPLY);
    assert_int_equal(in.n_hosted, 32);
    assert_int_equal(in.hosted_layer[31], 3);
    assert_int_equal(in.hosted_expert[31], 7);
    assert_string_equal(in.model_id, "m");
}

/* Random bytes as a header never crash the receiver nor desynchronise it. */
static void test_data_random_headers(void **state)
{
    net_t *n = *state;
    testrng_t rng;
    int refused = 0;
    for (uint64_t seed = 1; seed <= 300; seed++) {
        testrng_init(&rng, seed);
        uint8_t junk[96];
        size_t len = 1 + (size_t)(testrng_uniform(&rng) * (sizeof junk - 1));
        for (size_t i = 0; i < len; i++)
            junk[i] = (uint8_t)(testrng_uniform(&rng) * 256);
        if (seed % 3 == 0)
            junk[0] = 0x08;  /* starts like a header: field 1, varint */
        pb_t b = {.buf = junk, .n = len};
        s_send_raw(n->dealer, NULL, &b, seed % 5 == 0 ? 8 : -1, (int)(seed % 7 == 0));
        err_t err = {0};
        wire_data_t msg;
        wire_peer_t from;
        wire_data_error_t code = WIRE_DATA_OK;
        int rc = wire_data_recv(n->rin, n->router, true, &from, &msg, &code, &err);
        if (rc < 0) {
            assert_int_equal(errno, EPROTO);
            assert_true(code > WIRE_DATA_OK && code <= WIRE_DATA_ERR_UNEXPECTED);
            refused++;
        }
        s_expect_in_sync(n);
    }
    assert_true(refused >= 290);
}

static void test_data_bad_version(void **state)
{
    net_t *n = *state;
    th_t h;
    th_request(&h, 71);
    h.version = 2;
    s_expect_refused(n, &h, 32, 0, WIRE_DATA_ERR_VERSION, 71);
    th_request(&h, 72);
    h.version = 0;  /* no version at all */
    s_expect_refused(n, &h, 32, 0, WIRE_DATA_ERR_VERSION, 72);
    /* The version wins over every other fault. */
    th_t v = {.version = 7, .type = 200, .request_id = 73};
    s_expect_refused(n, &v, -1, 2, WIRE_DATA_ERR_VERSION, 73);
    /* A newer version that this one cannot even decode (field 2 as bytes). */
    pb_t b = {0};
    pb_uint(&b, 1, 9);
    pb_uint(&b, 3, 74);
    pb_bytes(&b, 2, "new", 3);
    s_send_raw(n->dealer, NULL, &b, -1, 0);
    pb_free(&b);
    s_expect_refused_msg(n, WIRE_DATA_ERR_VERSION, 74);
}

static void test_data_bad_frames(void **state)
{
    net_t *n = *state;
    th_t h;
    th_request(&h, 81);
    s_expect_refused(n, &h, -1, 0, WIRE_DATA_ERR_MALFORMED, 81);  /* no tensor frame */
    s_expect_refused(n, &h, 32, 1, WIRE_DATA_ERR_MALFORMED, 81);  /* one extra frame */
    s_expect_refused(n, &h, 32, 3, WIRE_DATA_ERR_MALFORMED, 81);  /* three extra */
    th_t beat = {.version = 1, .type = WIRE_HEARTBEAT, .request_id = 82};
    s_expect_refused(n, &beat, 8, 0, WIRE_DATA_ERR_MALFORMED, 82);  /* tensor on a heartbeat */

    /* An empty header frame, and an empty message (the identity alone is all
     * a ROUTER can see of it). */
    pb_t empty = {0};
    s_send_raw(n->dealer, NULL, &empty, 32, 0);
    s_expect_refused_msg(n, WIRE_DATA_ERR_MALFORMED, 0);
    assert_int_equal(zmq_send(n->dealer, "", 0, 0), 0);
    s_expect_refused_msg(n, WIRE_DATA_ERR_MALFORMED, 0);

    /* An identity frame and nothing else, seen by a receiver that expects an
     * identity; then a first frame too long to be one. */
    wire_data_t in;
    wire_peer_t coord;
    wire_data_t beat_msg = {.type = WIRE_HEARTBEAT, .request_id = 83};
    s_data_send(n->dealer, NULL, &beat_msg);
    s_router_recv(n, &coord, &in);
    wire_data_t pong = {.type = WIRE_HEARTBEAT_REPLY, .request_id = 83};
    s_data_send(n->router, &coord, &pong);
    err_t err = {0};
    wire_data_error_t code = WIRE_DATA_OK;
    wire_peer_t from;
    assert_int_equal(wire_data_recv(n->din, n->dealer, true, &from, &in, &code, &err), -1);
    assert_int_equal(errno, EPROTO);
    assert_int_equal(code, WIRE_DATA_ERR_MALFORMED);
    uint8_t long_id[WIRE_MAX_IDENTITY + 1] = {1};
    const void *data[2] = {coord.id, long_id};
    size_t len[2] = {coord.len, sizeof long_id};
    s_send_frames(n->router, 2, data, len);
    assert_int_equal(wire_data_recv(n->din, n->dealer, true, &from, &in, &code, &err), -1);
    assert_int_equal(errno, EPROTO);
    assert_int_equal(code, WIRE_DATA_ERR_MALFORMED);
    /* The dealer's side is in sync too. */
    s_data_send(n->router, &coord, &pong);
    s_dealer_recv(n, &in);
    assert_int_equal(in.type, WIRE_HEARTBEAT_REPLY);
    assert_int_equal(in.request_id, 83);
}

static void test_data_bad_shapes(void **state)
{
    net_t *n = *state;
    th_t h;
    th_request(&h, 91);
    s_expect_refused(n, &h, 31, 0, WIRE_DATA_ERR_SHAPE, 91);   /* truncated tensor */
    s_expect_refused(n, &h, 33, 0, WIRE_DATA_ERR_SHAPE, 91);   /* oversized tensor */
    s_expect_refused(n, &h, 0, 0, WIRE_DATA_ERR_SHAPE, 91);    /* empty tensor frame */
    h.n_rows = 3;                                               /* disagrees with the frame */
    s_expect_refused(n, &h, 32, 0, WIRE_DATA_ERR_SHAPE, 91);
    th_request(&h, 92);
    h.hidden = 4;                                               /* not the model's 8 */
    h.n_rows = 8;
    s_expect_refused(n, &h, 32, 0, WIRE_DATA_ERR_SHAPE, 92);
    th_request(&h, 93);
    h.n_rows = 17;                                              /* over max_rows */
    s_expect_refused(n, &h, 17 * 8, 0, WIRE_DATA_ERR_TOO_LARGE, 93);
    h.n_rows = 0x80000000u;                                     /* huge, frame too small */
    s_expect_refused(n, &h, 32, 0, WIRE_DATA_ERR_TOO_LARGE, 93);
    h.n_rows = 0;
    s_expect_refused(n, &h, 32, 0, WIRE_DATA_ERR_SHAPE, 93);
    th_request(&h, 94);
    h.dtype = 0;                                                /* no format */
    s_expect_refused(n, &h, 32, 0, WIRE_DATA_ERR_MALFORMED, 94);
    h.dtype = 4;                                                /* past FP8_E4M3 */
    s_expect_refused(n, &h, 32, 0, WIRE_DATA_ERR_MALFORMED, 94);
    /* Each format's frame has its own size: 4 x 8 values are 64 bytes in
     * BF16 (16 floats' worth), 4 x (8 + a 4-byte scale) = 48 in FP8 (12). */
    h.dtype = 2;
    s_expect_refused(n, &h, 32, 0, WIRE_DATA_ERR_SHAPE, 94);    /* F32's size */
    s_expect_refused(n, &h, 15, 0, WIRE_DATA_ERR_SHAPE, 94);
    s_expect_refused(n, &h, 12, 0, WIRE_DATA_ERR_SHAPE, 94);    /* FP8's */
    h.dtype = 3;
    s_expect_refused(n, &h, 32, 0, WIRE_DATA_ERR_SHAPE, 94);
    s_expect_refused(n, &h, 16, 0, WIRE_DATA_ERR_SHAPE, 94);    /* BF16's */
    s_expect_refused(n, &h, 11, 0, WIRE_DATA_ERR_SHAPE, 94);
    s_expect_refused(n, &h, 13, 0, WIRE_DATA_ERR_SHAPE, 94);
    /* An EXPERT_REPLY is held to the same shape rules. */
    th_t r = {.version = 1, .type = WIRE_EXPERT_REPLY, .request_id = 95, .layer = 1,
              .dtype = 1, .n_rows = 4, .hidden = 8};
    s_expect_refused(n, &r, 30, 0, WIRE_DATA_ERR_SHAPE, 95);
    r.compute_seconds = NAN;
    s_expect_refused(n, &r, 32, 0, WIRE_DATA_ERR_MALFORMED, 95);
}

static void test_data_bad_assignments(void **state)
{
    net_t *n = *state;
    th_t h;
    th_request(&h, 101);
    h.row[5] = 4;                                 /* row index out of range */
    s_expect_refused(n, &h, 32, 0, WIRE_DATA_ERR_SHAPE, 101);
    th_request(&h, 102);
    h.expert[2] = 8;                              /* expert out of range */
    s_expect_refused(n, &h, 32, 0, WIRE_DATA_ERR_UNKNOWN_EXPERT, 102);
    th_request(&h, 103);
    h.layer = 4;                                  /* layer out of range */
    s_expect_refused(n, &h, 32, 0, WIRE_DATA_ERR_UNKNOWN_EXPERT, 103);
    th_request(&h, 104);
    h.weight[0] = NAN;
    s_expect_refused(n, &h, 32, 0, WIRE_DATA_ERR_SHAPE, 104);
    h.weight[0] = -INFINITY;
    s_expect_refused(n, &h, 32, 0, WIRE_DATA_ERR_SHAPE, 104);
    th_request(&h, 105);
    h.n_row = 5;                                  /* mismatched array lengths */
    s_expect_refused(n, &h, 32, 0, WIRE_DATA_ERR_SHAPE, 105);
    th_request(&h, 105);
    h.n_expert = 0;
    s_expect_refused(n, &h, 32, 0, WIRE_DATA_ERR_SHAPE, 105);
    th_request(&h, 105);
    h.n_weight = 7;
    s_expect_refused(n, &h, 32, 0, WIRE_DATA_ERR_SHAPE, 105);
    th_request(&h, 106);
    h.n_row = h.n_expert = h.n_weight = 0;        /* no work */
    s_expect_refused(n, &h, 32, 0, WIRE_DATA_ERR_SHAPE, 106);
    th_request(&h, 107);
    h.n_row = h.n_expert = h.n_weight = (size_t)T_NODE.max_assign + 1;  /* too many */
    for (size_t i = 6; i < h.n_row; i++)
        h.weight[i] = 1.0f;
    s_expect_refused(n, &h, 32, 0, WIRE_DATA_ERR_TOO_LARGE, 107);
}

static void test_data_bad_types(void **state)
{
    net_t *n = *state;
    th_t t = {.version = 1, .type = 0, .request_id = 111};          /* no type */
    s_expect_refused(n, &t, -1, 0, WIRE_DATA_ERR_MALFORMED, 111);
    t.type = 42;                                                     /* unknown type */
    s_expect_refused(n, &t, -1, 0, WIRE_DATA_ERR_UNEXPECTED, 111);
    th_t e = {.version = 1, .type = WIRE_ERROR, .request_id = 112, .error_code = 99};
    s_expect_refused(n, &e, -1, 0, WIRE_DATA_ERR_MALFORMED, 112);    /* unknown error code */
    e.error_code = 0;
    s_expect_refused(n, &e, -1, 0, WIRE_DATA_ERR_MALFORMED, 112);
    char long_text[WIRE_MAX_TEXT + 1];
    memset(long_text, 'x', WIRE_MAX_TEXT);
    long_text[WIRE_MAX_TEXT] = '\0';
    e.error_code = WIRE_DATA_ERR_SHAPE;
    e.error_message = long_text;                                     /* text too long */
    s_expect_refused(n, &e, -1, 0, WIRE_DATA_ERR_TOO_LARGE, 112);
    th_t r = {.version = 1, .type = WIRE_HELLO_REPLY, .request_id = 113, .n_hl = 2,
              .n_he = 3};                                            /* mismatched pairs */
    s_expect_refused(n, &r, -1, 0, WIRE_DATA_ERR_SHAPE, 113);
    r.n_he = 2;
    r.he[1] = 8;                                                     /* expert out of range */
    s_expect_refused(n, &r, -1, 0, WIRE_DATA_ERR_UNKNOWN_EXPERT, 113);
    r.he[1] = 0;
    r.hl[0] = 4;                                                     /* layer out of range */
    s_expect_refused(n, &r, -1, 0, WIRE_DATA_ERR_UNKNOWN_EXPERT, 113);
    r.hl[0] = 0;
    r.model_id = long_text;
    s_expect_refused(n, &r, -1, 0, WIRE_DATA_ERR_TOO_LARGE, 113);
    th_t many = {.version = 1, .type = WIRE_HELLO_REPLY, .request_id = 114, .n_hl = 33,
                 .n_he = 33};                                        /* more than 4 x 8 */
    s_expect_refused(n, &many, -1, 0, WIRE_DATA_ERR_TOO_LARGE, 114);
}

static void test_data_header_limits(void **state)
{
    net_t *n = *state;
    /* One byte over WIRE_MAX_HEADER_BYTES: refused, its id still read. */
    th_t h = {.version = 1, .type = WIRE_HEARTBEAT, .request_id = 121};
    pb_t b = {0};
    th_encode(&h, &b);
    size_t prefix = b.n;
    pb_free(&b);
    h.pad = WIRE_MAX_HEADER_BYTES + 1 - prefix - 2 - 3;  /* key 2 bytes, length 3 */
    s_expect_refused(n, &h, -1, 0, WIRE_DATA_ERR_TOO_LARGE, 121);
    th_encode(&h, &b);
    assert_int_equal(b.n, WIRE_MAX_HEADER_BYTES + 1);
    pb_free(&b);
    /* Exactly at the limit, it only fails for want of arena: still too large. */
    h.pad -= 1;
    h.request_id = 122;
    s_expect_refused(n, &h, -1, 0, WIRE_DATA_ERR_TOO_LARGE, 122);
    /* Far below the header limit but beyond what the limits need. */
    h.pad = 200000;
    h.request_id = 123;
    s_expect_refused(n, &h, -1, 0, WIRE_DATA_ERR_TOO_LARGE, 123);
}

/* A message larger than ZMQ_MAXMSGSIZE never reaches the receiver: libzmq
 * closes that connection, and other peers carry on. */
static void test_data_oversized_message_dropped(void **state)
{
    (void)state;
    net_t *n = s_net(true, &T_NODE, &T_NODE, true);
    int short_ms = 400;
    assert_int_equal(zmq_setsockopt(n->router, ZMQ_RCVTIMEO, &short_ms, sizeof short_ms), 0);
    s_expect_in_sync(n);  /* the connection is up */
    th_t h;
    th_request(&h, 131);
    pb_t b = {0};
    th_encode(&h, &b);
    size_t big = (size_t)wire_max_message_bytes(&T_NODE) + 1;
    uint8_t *tensor = mem_calloc(1, big);
    assert_non_null(tensor);
    const void *data[2] = {b.buf, tensor};
    size_t len[2] = {b.n, big};
    s_send_frames(n->dealer, 2, data, len);
    mem_free(tensor);
    pb_free(&b);
    err_t err = {0};
    wire_data_t msg;
    wire_peer_t from;
    wire_data_error_t code;
    int rc = wire_data_recv(n->rin, n->router, true, &from, &msg, &code, &err);
    assert_int_equal(rc, -1);
    assert_true(errno == EAGAIN || errno == EPROTO);
    zmq_close(n->dealer);
    n->dealer = s_dealer(n);
    assert_int_equal(zmq_setsockopt(n->router, ZMQ_RCVTIMEO, &(int){T_TIMEOUT_MS},
                                    sizeof(int)), 0);
    s_expect_in_sync(n);
    s_net_close(&n);
}

static void test_data_send_rejects(void **state)
{
    net_t *n = *state;
    err_t err = {0};
    moe_assign_t a[2] = {{0, 1, 0.5f}, {1, 2, 0.5f}};
    float rows[2 * 8] = {0};
    const wire_data_t bad[] = {
        {.type = (wire_data_type_t)0},
        {.type = (wire_data_type_t)12}, /* past PLACE_REPLY (11) */
        {.type = WIRE_PLACE, .n_hosted = 1},              /* pairs missing */
        {.type = WIRE_PLACE_REPLY, .n_hosted = -1},
        {.type = WIRE_EXPERT_REQUEST, .n_rows = 0, .hidden = 8, .rows = rows, .n_assign = 2,
         .assign = a},
        {.type = WIRE_EXPERT_REQUEST, .n_rows = 2, .hidden = 8, .rows = NULL, .n_assign = 2,
         .assign = a},
        {.type = WIRE_EXPERT_REQUEST, .n_rows = 2, .hidden = 8, .rows = rows, .n_assign = 0,
         .assign = a},
        {.type = WIRE_EXPERT_REQUEST, .n_rows = 1, .hidden = 8, .rows = rows, .n_assign = 2,
         .assign = a},  /* row 1 of 1 */
        {.type = WIRE_EXPERT_REQUEST, .n_rows = 2, .hidden = 8, .rows = rows, .n_assign = 2,
         .assign = a, .layer = -1},
        {.type = WIRE_EXPERT_REPLY, .n_rows = 2, .hidden = -8, .rows = rows},
        {.type = WIRE_HELLO_REPLY, .n_hosted = 1},
        {.type = WIRE_HELLO_REPLY, .node_id = -1},
        {.type = WIRE_ERROR, .error_code = WIRE_DATA_OK},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err_clear(&err);
        assert_int_equal(wire_data_send(n->dealer, NULL, &bad[i], &err), -1);
        assert_int_equal(errno, EINVAL);
        assert_true(strlen(err.msg) > 0);
    }
    moe_assign_t nan_weight = {0, 1, NAN};
    wire_data_t w = {.type = WIRE_EXPERT_REQUEST, .n_rows = 1, .hidden = 8, .rows = rows,
                     .n_assign = 1, .assign = &nan_weight};
    assert_int_equal(wire_data_send(n->dealer, NULL, &w, &err), -1);
    assert_int_equal(errno, EINVAL);
    char long_id[WIRE_MAX_TEXT + 10];
    memset(long_id, 'm', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    wire_data_t hr = {.type = WIRE_HELLO_REPLY, .model_id = long_id};
    assert_int_equal(wire_data_send(n->dealer, NULL, &hr, &err), -1);
    assert_int_equal(errno, EINVAL);
    wire_peer_t nobody = {.len = 0};
    wire_data_t beat = {.type = WIRE_HEARTBEAT};
    assert_int_equal(wire_data_send(n->router, &nobody, &beat, &err), -1);
    assert_int_equal(errno, EINVAL);
    s_expect_in_sync(n);  /* nothing of the refused sends went out */

    /* A long error message is cut to fit, never inside a UTF-8 sequence. */
    char text[WIRE_MAX_TEXT + 8];
    memset(text, 'e', WIRE_MAX_TEXT - 2);
    memcpy(text + WIRE_MAX_TEXT - 2, "\xc3\xa9\xc3\xa9\xc3\xa9", 7);  /* "ééé" */
    assert_int_equal(wire_data_send_error(n->dealer, NULL, 141, WIRE_DATA_ERR_INTERNAL, text,
                                          &err), 0);
    wire_data_t in;
    wire_peer_t from;
    s_router_recv(n, &from, &in);
    assert_int_equal(in.type, WIRE_ERROR);
    assert_int_equal(in.request_id, 141);
    assert_int_equal(strlen(in.error_message), WIRE_MAX_TEXT - 2);
    assert_memory_equal(in.error_message, text, WIRE_MAX_TEXT - 2);
}

/* A receiver without limits (tools, tests) takes any size, growing its
 * buffers; a sender with more assignments than fit its stack uses the heap. */
static void test_data_unbounded_inbox(void **state)
{
    (void)state;
    wire_limits_t none = {0};
    net_t *n = s_net(false, &none, &none, false);
    enum { ROWS = 600, HIDDEN = 24, ASSIGN = 20000 };  /* the arena grows 3 times */
    float *rows = mem_alloc(ROWS * HIDDEN * sizeof *rows);
    moe_assign_t *a = mem_alloc(ASSIGN * sizeof *a);
    assert_non_null(rows);
    assert_non_null(a);
    for (int i = 0; i < ROWS * HIDDEN; i++)
        rows[i] = (float)i;
    for (int i = 0; i < ASSIGN; i++)
        a[i] = (moe_assign_t){i % ROWS, i % 1000, 1.0f / (float)(i + 1)};
    wire_data_t out = {.type = WIRE_EXPERT_REQUEST, .request_id = 151, .layer = 70,
                       .n_rows = ROWS, .hidden = HIDDEN, .rows = rows, .n_assign = ASSIGN,
                       .assign = a};
    for (int k = 0; k < 2; k++) {
        s_data_send(n->dealer, NULL, &out);
        wire_data_t in;
        wire_peer_t from;
        s_router_recv(n, &from, &in);
        assert_int_equal(in.n_rows, ROWS);
        assert_int_equal(in.hidden, HIDDEN);
        assert_int_equal(in.layer, 70);
        assert_memory_equal(in.rows, rows, ROWS * HIDDEN * sizeof *rows);
        assert_int_equal(in.n_assign, ASSIGN);
        assert_memory_equal(in.assign, a, ASSIGN * sizeof *a);
    }
    /* Out of memory while growing: ENOMEM, and the message is still consumed
     * whole (a fresh inbox has to grow again). */
    wire_inbox_destroy(&n->rin);
    err_t err = {0};
    n->rin = wire_inbox_new(&none, &err);
    assert_non_null(n->rin);
    s_data_send(n->dealer, NULL, &out);
    mem_fail_after(1);
    wire_data_t in;
    wire_peer_t from;
    wire_data_error_t code = WIRE_DATA_ERR_INTERNAL;
    int rc = wire_data_recv(n->rin, n->router, true, &from, &in, &code, &err);
    mem_fail_after(-1);
    assert_int_equal(rc, -1);
    assert_int_equal(errno, ENOMEM);
    assert_int_equal(code, WIRE_DATA_OK);
    s_expect_in_sync(n);
    mem_free(a);
    mem_free(rows);
    s_net_close(&n);
}

/* A prefill batch of 256 rows at top-8 (2,048 assignments, past the 1,024 a
 * sender converts on the stack) goes out through an outbox and comes in
 * through an inbox, both sized by wire_limits_for_model, while every
 * allocation fails: the hot path allocates nothing. */
/* EXPERT_REQUEST and EXPERT_REPLY in BF16 and FP8 (--wire): the rows arrive
 * as the codec's round trip of what was sent, float32 and aligned, the
 * format named; the frames are the format's size; through an outbox sized
 * from the limits, nothing is allocated on the way. */
static void test_data_formats(void **state)
{
    (void)state;
    enum { ROWS = 16, HIDDEN = 200 }; /* two fp8 blocks a row, the second short */
    const wire_limits_t lim = {.hidden = HIDDEN, .max_rows = ROWS, .max_assign = ROWS,
                               .n_layers = 2, .n_experts = 4};
    net_t *n = s_net(true, &lim, &lim, true);
    err_t err = {0};
    wire_outbox_t *outbox = wire_outbox_new(&lim, &err);
    float *rows = mem_alloc(ROWS * HIDDEN * sizeof *rows);
    float *want = mem_alloc(ROWS * HIDDEN * sizeof *want);
    uint8_t *frame = mem_alloc(wire_tensor_bytes(WIRE_TENSOR_BF16, ROWS, HIDDEN));
    assert_true(outbox && rows && want && frame);
    for (int i = 0; i < ROWS * HIDDEN; i++)
        rows[i] = sinf((float)i) * (float)(1 + i % 37);
    moe_assign_t a[ROWS];
    for (int i = 0; i < ROWS; i++)
        a[i] = (moe_assign_t){i, i % 4, 0.5f};
    for (wire_tensor_format_t f = WIRE_TENSOR_BF16; f <= WIRE_TENSOR_FP8; f++) {
        wire_tensor_encode(f, rows, ROWS, HIDDEN, frame);
        wire_tensor_decode(f, frame, ROWS, HIDDEN, want);
        wire_data_t out = {.type = WIRE_EXPERT_REQUEST, .request_id = 300 + f, .layer = 1,
                           .n_rows = ROWS, .hidden = HIDDEN, .rows = rows, .n_assign = ROWS,
                           .assign = a, .dtype = f};
        wire_data_t in, back;
        wire_peer_t from;
        wire_data_error_t code = WIRE_DATA_ERR_INTERNAL, back_code = WIRE_DATA_ERR_INTERNAL;
        size_t sent = 0;
        mem_fail_after(1);
        int sent_rc = wire_data_send_sized(n->dealer, outbox, NULL, &out, &sent, &err);
        int recv_rc = wire_data_recv(n->rin, n->router, true, &from, &in, &code, &err);
        /* The node answers in the request's format. */
        wire_data_t rep = {.type = WIRE_EXPERT_REPLY, .request_id = in.request_id,
                           .layer = 1, .n_rows = ROWS, .hidden = HIDDEN, .rows = rows,
                           .dtype = in.dtype};
        int reply_rc = recv_rc == 0
                           ? wire_data_send_sized(n->router, outbox, &from, &rep, NULL, &err)
                           : -1;
        int back_rc = reply_rc == 0 ? wire_data_recv(n->din, n->dealer, false, NULL, &back,
                                                     &back_code, &err)
                                    : -1;
        mem_fail_after(-1);
        if (sent_rc || recv_rc || reply_rc || back_rc)
            fail_msg("%s: %d %d %d %d: %s", wire_tensor_format_name(f), sent_rc, recv_rc,
                     reply_rc, back_rc, err.msg);
        assert_int_equal(in.dtype, f);
        assert_int_equal(back.dtype, f);
        assert_int_equal((uintptr_t)in.rows % sizeof(float), 0);
        assert_memory_equal(in.rows, want, ROWS * HIDDEN * sizeof *want);
        assert_memory_equal(back.rows, want, ROWS * HIDDEN * sizeof *want);
        assert_int_equal(sent + from.len, wire_inbox_message_bytes(n->rin));
        assert_true(wire_inbox_message_bytes(n->din) >
                    wire_tensor_bytes(f, ROWS, HIDDEN));
        assert_true(wire_inbox_message_bytes(n->din) <
                    wire_tensor_bytes(f, ROWS, HIDDEN) + 64);
    }
    mem_free(frame);
    mem_free(want);
    mem_free(rows);
    wire_outbox_destroy(&outbox);
    s_net_close(&n);
}

static void test_data_prefill_batch_without_allocating(void **state)
{
    (void)state;
    enum { ROWS = 256, TOP_K = 8, HIDDEN = 64, EXPERTS = 16, ASSIGN = ROWS * TOP_K };
    config_t cfg = {0};
    cfg.hidden_size = HIDDEN;
    cfg.n_layers = 3;
    cfg.n_experts = EXPERTS;
    cfg.n_experts_per_tok = TOP_K;
    wire_limits_t lim = wire_limits_for_model(&cfg, ROWS);
    assert_int_equal(lim.hidden, HIDDEN);
    assert_int_equal(lim.max_rows, ROWS);
    assert_int_equal(lim.max_assign, ASSIGN);
    assert_int_equal(lim.n_layers, 3);
    assert_int_equal(lim.n_experts, EXPERTS);
    assert_int_equal(lim.max_prompt, 0);

    net_t *n = s_net(false, &lim, &lim, true);
    err_t err = {0};
    wire_outbox_t *outbox = wire_outbox_new(&lim, &err);
    assert_non_null(outbox);
    float *rows = mem_alloc(ROWS * HIDDEN * sizeof *rows);
    moe_assign_t *a = mem_alloc(ASSIGN * sizeof *a);
    assert_non_null(rows);
    assert_non_null(a);
    for (int i = 0; i < ROWS * HIDDEN; i++)
        rows[i] = (float)i * 0.25f;
    for (int i = 0; i < ASSIGN; i++)
        a[i] = (moe_assign_t){i / TOP_K, (i * 3) % EXPERTS, 1.0f / (float)(i % TOP_K + 1)};
    wire_data_t out = {.type = WIRE_EXPERT_REQUEST, .request_id = 256, .layer = 2,
                       .n_rows = ROWS, .hidden = HIDDEN, .rows = rows, .n_assign = ASSIGN,
                       .assign = a};

    mem_fail_after(1);
    /* The hook is live: without an outbox this batch needs the heap. */
    assert_int_equal(wire_data_send_sized(n->dealer, NULL, NULL, &out, NULL, &err), -1);
    assert_int_equal(errno, ENOMEM);
    size_t sent = 0;
    int sent_rc = wire_data_send_sized(n->dealer, outbox, NULL, &out, &sent, &err);
    wire_data_t in;
    wire_peer_t from;
    wire_data_error_t code = WIRE_DATA_ERR_INTERNAL;
    int recv_rc = wire_data_recv(n->rin, n->router, true, &from, &in, &code, &err);
    /* The partial sums go back the same way. */
    wire_data_t rep = {.type = WIRE_EXPERT_REPLY, .request_id = 256, .layer = 2,
                       .n_rows = ROWS, .hidden = HIDDEN, .rows = in.rows,
                       .compute_seconds = 0.5};
    int reply_rc = recv_rc == 0 ? wire_data_send(n->router, &from, &rep, &err) : -1;
    wire_data_t back;
    wire_data_error_t back_code = WIRE_DATA_ERR_INTERNAL;
    int back_rc = reply_rc == 0
                      ? wire_data_recv(n->din, n->dealer, false, NULL, &back, &back_code, &err)
                      : -1;
    mem_fail_after(-1);

    assert_int_equal(sent_rc, 0);
    assert_int_equal(recv_rc, 0);
    assert_int_equal(code, WIRE_DATA_OK);
    assert_int_equal(sent + from.len, wire_inbox_message_bytes(n->rin));
    assert_int_equal(in.type, WIRE_EXPERT_REQUEST);
    assert_int_equal(in.n_rows, ROWS);
    assert_int_equal(in.hidden, HIDDEN);
    assert_memory_equal(in.rows, rows, ROWS * HIDDEN * sizeof *rows);
    assert_int_equal(in.n_assign, ASSIGN);
    assert_memory_equal(in.assign, a, ASSIGN * sizeof *a);
    assert_int_equal(reply_rc, 0);
    assert_int_equal(back_rc, 0);
    assert_int_equal(back_code, WIRE_DATA_OK);
    assert_int_equal(back.type, WIRE_EXPERT_REPLY);
    assert_int_equal(back.n_rows, ROWS);
    assert_memory_equal(back.rows, rows, ROWS * HIDDEN * sizeof *rows);

    /* An outbox too small for a message falls back to the heap. */
    wire_limits_t small = lim;
    small.max_assign = 8;
    small.max_rows = 1; /* its room to encode bf16 and fp8 rows is small too */
    wire_outbox_t *tiny = wire_outbox_new(&small, &err);
    assert_non_null(tiny);
    mem_fail_after(1);
    assert_int_equal(wire_data_send_sized(n->dealer, tiny, NULL, &out, NULL, &err), -1);
    mem_fail_after(-1);
    assert_int_equal(errno, ENOMEM);
    /* Nothing of it went out: the next batch is the next message. */
    out.request_id = 257;
    assert_int_equal(wire_data_send_sized(n->dealer, outbox, NULL, &out, NULL, &err), 0);
    s_router_recv(n, &from, &in);
    assert_int_equal(in.request_id, 257);
    assert_int_equal(in.n_assign, ASSIGN);

    wire_outbox_destroy(&tiny);
    wire_outbox_destroy(&outbox);
    assert_null(outbox);
    wire_outbox_destroy(&outbox); /* twice is fine */
    wire_outbox_destroy(NULL);
    mem_free(a);
    mem_free(rows);
    s_net_close(&n);
}

/* EAGAIN when nothing comes, and the last message stays readable. */
static void test_recv_timeout(void **state)
{
    net_t *n = *state;
    s_expect_in_sync(n);
    th_t h;
    th_request(&h, 161);
    moe_assign_t assign[6];
    for (int i = 0; i < 6; i++)
        assign[i] = (moe_assign_t){(int32_t)h.row[i], (int32_t)h.expert[i], h.weight[i]};
    wire_data_t out = {.type = WIRE_EXPERT_REQUEST, .request_id = 161, .layer = 1,
                       .n_rows = 4, .hidden = 8, .rows = s_rows, .n_assign = 6,
                       .assign = assign};
    s_data_send(n->dealer, NULL, &out);
    wire_data_t in, none;
    wire_peer_t from;
    s_router_recv(n, &from, &in);
    int short_ms = 50;
    assert_int_equal(zmq_setsockopt(n->router, ZMQ_RCVTIMEO, &short_ms, sizeof short_ms), 0);
    err_t err = {0};
    wire_data_error_t code = WIRE_DATA_OK;
    memset(&none, 0x5a, sizeof none);
    assert_int_equal(wire_data_recv(n->rin, n->router, true, &from, &none, &code, &err), -1);
    assert_int_equal(errno, EAGAIN);
    assert_int_equal(((const uint8_t *)&none)[0], 0x5a);  /* untouched */
    s_check_request(&in, 161);
    wire_request_t req;
    assert_int_equal(wire_request_recv(n->rin, n->router, &from, &req, NULL, &err), -1);
    assert_int_equal(errno, EAGAIN);
    s_check_request(&in, 161);
}

/* ---- client RPC ---------------------------------------------------------- */

static void s_request_send(net_t *n, const wire_request_t *req)
{
    err_t err = {0};
    if (wire_request_send(n->dealer, req, &err) < 0)
        fail_msg("wire_request_send: %s", err.msg);
}

static void s_request_recv(net_t *n, wire_peer_t *from, wire_request_t *req)
{
    err_t err = {0};
    wire_client_error_t code = WIRE_CLIENT_INTERNAL;
    if (wire_request_recv(n->rin, n->router, from, req, &code, &err) < 0)
        fail_msg("wire_request_recv: errno %d, code %s: %s", errno,
                 wire_client_error_name(code), err.msg);
    assert_int_equal(code, WIRE_CLIENT_OK);
}

static void s_reply_send(net_t *n, const wire_peer_t *to, const wire_reply_t *rep)
{
    err_t err = {0};
    if (wire_reply_send(n->router, to, rep, &err) < 0)
        fail_msg("wire_reply_send: %s", err.msg);
}

static void s_reply_recv(net_t *n, wire_reply_t *rep)
{
    err_t err = {0};
    if (wire_reply_recv(n->din, n->dealer, rep, &err) < 0)
        fail_msg("wire_reply_recv: errno %d: %s", errno, err.msg);
}

/* A STATUS request from the client, so that the coordinator knows its id. */
static void s_client_hello(net_t *n, wire_peer_t *client)
{
    wire_request_t req = {.type = WIRE_REQ_STATUS, .request_id = 900};
    wire_request_t in;
    s_request_send(n, &req);
    s_request_recv(n, client, &in);
    assert_int_equal(in.type, WIRE_REQ_STATUS);
}

/* A GENERATE request and its TOKENS reply make the round trip. */
static void s_client_in_sync(net_t *n, const wire_peer_t *client)
{
    static uint64_t id = 7000;
    const int32_t prompt[3] = {5, 6, 99};
    wire_request_t req = {.type = WIRE_REQ_GENERATE, .request_id = ++id, .n_prompt = 3,
                          .prompt = prompt, .max_tokens = 4};
    wire_request_t in;
    wire_peer_t from;
    s_request_send(n, &req);
    s_request_recv(n, &from, &in);
    assert_int_equal(in.request_id, id);
    assert_int_equal(in.n_prompt, 3);
    assert_memory_equal(in.prompt, prompt, sizeof prompt);
    assert_int_equal(from.len, client->len);
    assert_memory_equal(from.id, client->id, client->len);
    const int32_t tokens[2] = {1, 2};
    wire_reply_t rep = {.type = WIRE_REP_TOKENS, .request_id = id, .n_tokens = 2,
                        .tokens = tokens, .final = true};
    s_reply_send(n, client, &rep);
    wire_reply_t got;
    s_reply_recv(n, &got);
    assert_int_equal(got.type, WIRE_REP_TOKENS);
    assert_int_equal(got.request_id, id);
    assert_int_equal(got.n_tokens, 2);
    assert_memory_equal(got.tokens, tokens, sizeof tokens);
}

static void test_client_round_trip(void **state)
{
    net_t *n = *state;
    wire_peer_t client;
    wire_request_t in;
    wire_reply_t got;

    const int32_t prompt[4] = {1, 17, 42, 3};
    wire_request_t gen = {.type = WIRE_REQ_GENERATE, .request_id = 11, .n_prompt = 4,
                          .prompt = prompt, .max_tokens = 5};
    s_request_send(n, &gen);
    s_request_recv(n, &client, &in);
    assert_int_equal(in.type, WIRE_REQ_GENERATE);
    assert_int_equal(in.request_id, 11);
    assert_int_equal(in.n_prompt, 4);
    assert_memory_equal(in.prompt, prompt, sizeof prompt);
    assert_int_equal(in.max_tokens, 5);
    /* Streamed tokens, then the final reply with counts and timings. */
    const int32_t t1[1] = {7}, t2[2] = {8, 9};
    wire_reply_t part = {.type = WIRE_REP_TOKENS, .request_id = 11, .n_tokens = 1,
                         .tokens = t1};
    s_reply_send(n, &client, &part);
    wire_reply_t last = {.type = WIRE_REP_TOKENS, .request_id = 11, .n_tokens = 2,
                         .tokens = t2, .final = true, .prompt_tokens = 4,
                         .generated_tokens = 3, .seconds = 0.5};
    s_reply_send(n, &client, &last);
    s_reply_recv(n, &got);
    assert_int_equal(got.type, WIRE_REP_TOKENS);
    assert_int_equal(got.request_id, 11);
    assert_int_equal(got.n_tokens, 1);
    assert_int_equal(got.tokens[0], 7);
    assert_false(got.final);
    s_reply_recv(n, &got);
    assert_int_equal(got.n_tokens, 2);
    assert_memory_equal(got.tokens, t2, sizeof t2);
    assert_true(got.final);
    assert_int_equal(got.prompt_tokens, 4);
    assert_int_equal(got.generated_tokens, 3);
    assert_true(got.seconds == 0.5);

    wire_request_t lg = {.type = WIRE_REQ_LOGITS, .request_id = 12, .n_prompt = 2,
                         .prompt = prompt};
    s_request_send(n, &lg);
    s_request_recv(n, &client, &in);
    assert_int_equal(in.type, WIRE_REQ_LOGITS);
    assert_int_equal(in.n_prompt, 2);
    float logits[2 * 100];
    for (int i = 0; i < 200; i++)
        logits[i] = (float)i * 0.01f - 1.0f;
    wire_reply_t lr = {.type = WIRE_REP_LOGITS, .request_id = 12, .rows = 2, .vocab = 100,
                       .logits = logits, .final = true};
    s_reply_send(n, &client, &lr);
    s_reply_recv(n, &got);
    assert_int_equal(got.type, WIRE_REP_LOGITS);
    assert_int_equal(got.request_id, 12);
    assert_int_equal(got.rows, 2);
    assert_int_equal(got.vocab, 100);
    assert_int_equal((uintptr_t)got.logits % sizeof(float), 0);
    assert_memory_equal(got.logits, logits, sizeof logits);

    wire_request_t st = {.type = WIRE_REQ_STATUS, .request_id = 13};
    s_request_send(n, &st);
    s_request_recv(n, &client, &in);
    assert_int_equal(in.type, WIRE_REQ_STATUS);
    assert_int_equal(in.n_prompt, 0);
    const int32_t l0[2] = {0, 1}, e0[2] = {0, 0}, l1[2] = {0, 3}, e1[2] = {1, 7};
    const wire_node_status_t nodes[3] = {
        {.node_id = 1, .endpoint = "tcp://10.0.0.1:5000", .up = true, .n_hosted = 2,
         .hosted_layer = l0, .hosted_expert = e0, .batches = 100, .rtt_last_ms = 1.5,
         .rtt_mean_ms = 2.25, .last_error = "", .coordinators = 2},
        {.node_id = 2, .endpoint = "tcp://10.0.0.2:5000", .up = false, .n_hosted = 2,
         .hosted_layer = l1, .hosted_expert = e1, .batches = 7,
         .last_error = "no heartbeat for 3 s"},
        {.node_id = 3, .endpoint = NULL, .up = true},
    };
    uint64_t counts[4 * 8];
    for (int i = 0; i < 32; i++)
        counts[i] = (uint64_t)i * 1000 + 1;
    wire_reply_t sr = {.type = WIRE_REP_STATUS, .request_id = 13, .model = "mixtral (tiny)",
                       .n_nodes = 3, .nodes = nodes, .n_layers = 4, .n_experts = 8,
                       .expert_tokens = counts, .requests_served = 12};
    s_reply_send(n, &client, &sr);
    s_reply_recv(n, &got);
    assert_int_equal(got.type, WIRE_REP_STATUS);
    assert_int_equal(got.request_id, 13);
    assert_string_equal(got.model, "mixtral (tiny)");
    assert_int_equal(got.n_nodes, 3);
    assert_int_equal(got.n_layers, 4);
    assert_int_equal(got.n_experts, 8);
    assert_memory_equal(got.expert_tokens, counts, sizeof counts);
    assert_int_equal(got.requests_served, 12);
    for (int i = 0; i < 3; i++) {
        const wire_node_status_t *a = &nodes[i], *b = &got.nodes[i];
        assert_int_equal(b->node_id, a->node_id);
        assert_string_equal(b->endpoint, a->endpoint ? a->endpoint : "");
        assert_int_equal(b->up, a->up);
        assert_int_equal(b->n_hosted, a->n_hosted);
        if (a->n_hosted) {
            assert_memory_equal(b->hosted_layer, a->hosted_layer, 2 * sizeof(int32_t));
            assert_memory_equal(b->hosted_expert, a->hosted_expert, 2 * sizeof(int32_t));
        }
        assert_int_equal(b->batches, a->batches);
        assert_true(b->rtt_last_ms == a->rtt_last_ms);
        assert_true(b->rtt_mean_ms == a->rtt_mean_ms);
        assert_int_equal(b->coordinators, a->coordinators);
        assert_string_equal(b->last_error, a->last_error ? a->last_error : "");
    }

    wire_request_t cancel = {.type = WIRE_REQ_CANCEL, .request_id = 14, .cancel_id = 11};
    s_request_send(n, &cancel);
    s_request_recv(n, &client, &in);
    assert_int_equal(in.type, WIRE_REQ_CANCEL);
    assert_int_equal(in.request_id, 14);
    assert_int_equal(in.cancel_id, 11);
    err_t err = {0};
    assert_int_equal(wire_reply_send_error(n->router, &client, 11, WIRE_CLIENT_CANCELLED,
                                           "cancelled by request 14", &err), 0);
    s_reply_recv(n, &got);
    assert_int_equal(got.type, WIRE_REP_ERROR);
    assert_int_equal(got.request_id, 11);
    assert_int_equal(got.error_code, WIRE_CLIENT_CANCELLED);
    assert_string_equal(got.error_message, "cancelled by request 14");
    assert_true(got.final);
    assert_int_equal(wire_reply_send_error(n->router, &client, 15, WIRE_CLIENT_BUSY, NULL,
                                           &err), 0);
    s_reply_recv(n, &got);
    assert_int_equal(got.error_code, WIRE_CLIENT_BUSY);
    assert_string_equal(got.error_message, "");
}

/* A streamed token's text goes out while every allocation fails: streaming
 * allocates nothing per token. */
static void test_client_token_text_without_allocating(void **state)
{
    net_t *n = *state;
    wire_peer_t client;
    s_client_hello(n, &client);
    int32_t token = 7;
    wire_reply_t rep = {.type = WIRE_REP_TOKENS, .request_id = 901, .n_tokens = 1,
                        .tokens = &token, .text = " hello", .text_len = 6};
    err_t err = {0};
    mem_fail_after(1);
    int rc = wire_reply_send(n->router, &client, &rep, &err);
    mem_fail_after(-1);
    assert_int_equal(rc, 0);
    wire_reply_t got;
    s_reply_recv(n, &got);
    assert_int_equal(got.request_id, 901);
    assert_int_equal(got.n_tokens, 1);
    assert_int_equal(got.tokens[0], 7);
    assert_int_equal(got.text_len, 6);
    assert_string_equal(got.text, " hello");
}

/* The coordinator refuses bad requests with the code that goes back to the
 * client, and the request id when it could read one. */
static void s_expect_bad_request(net_t *n, const pb_t *b, int n_extra,
                                 wire_client_error_t code, uint64_t id)
{
    s_send_raw(n->dealer, NULL, b, -1, n_extra);
    err_t err = {0};
    wire_request_t req;
    wire_peer_t from = {0};
    wire_client_error_t got = WIRE_CLIENT_OK;
    int rc = wire_request_recv(n->rin, n->router, &from, &req, &got, &err);
    if (rc == 0 || errno != EPROTO || got != code)
        fail_msg("expected EPROTO/%s, got rc %d errno %d code %s (%s)",
                 wire_client_error_name(code), rc, errno, wire_client_error_name(got),
                 err.msg);
    assert_int_equal(req.request_id, id);
    assert_null(req.prompt);
    assert_true(from.len > 0);
    s_client_in_sync(n, &from);
}

/* A request written by hand: prompt ids as varints (negative ones as 10 bytes). */
static void s_request_pb(pb_t *b, uint64_t version, uint64_t type, uint64_t id,
                         const int64_t *prompt, size_t n_prompt)
{
    uint64_t v[T_MAX];
    assert_true(n_prompt <= T_MAX);
    for (size_t i = 0; i < n_prompt; i++)
        v[i] = (uint64_t)prompt[i];
    pb_uint(b, 1, version);
    pb_uint(b, 2, type);
    pb_uint(b, 3, id);
    pb_varints(b, 4, v, n_prompt, false);
}

/* A float field (wire type 5) in a hand-made protobuf. */
static void pb_float(pb_t *b, unsigned field, float f)
{
    pb_key(b, field, 5);
    pb_raw(b, &f, sizeof f);
}

static void test_client_sampling_fields(void **state)
{
    net_t *n = *state;
    wire_peer_t client;
    wire_request_t in;
    const int32_t prompt[2] = {5, 6}, stop[3] = {2, 9, 11};
    wire_request_t gen = {.type = WIRE_REQ_GENERATE, .request_id = 31, .n_prompt = 2,
                          .prompt = prompt, .max_tokens = 8, .temperature = 0.7f,
                          .top_k = 40, .top_p = 0.9f, .seed = 1234567890123ull,
                          .n_stop = 3, .stop_ids = stop};
    s_request_send(n, &gen);
    s_request_recv(n, &client, &in);
    assert_true(in.temperature == 0.7f);
    assert_int_equal(in.top_k, 40);
    assert_true(in.top_p == 0.9f);
    assert_true(in.seed == 1234567890123ull);
    assert_int_equal(in.n_stop, 3);
    assert_memory_equal(in.stop_ids, stop, sizeof stop);

    /* Absent fields mean greedy decoding. */
    wire_request_t plain = {.type = WIRE_REQ_GENERATE, .request_id = 32, .n_prompt = 2,
                            .prompt = prompt, .max_tokens = 1};
    s_request_send(n, &plain);
    s_request_recv(n, &client, &in);
    assert_true(in.temperature == 0.0f && in.top_k == 0 && in.top_p == 0.0f);
    assert_int_equal(in.n_stop, 0);

    /* Out-of-range values, hand-encoded, get INVALID_ARGUMENT. */
    const int64_t p[2] = {1, 2};
    const float bad_temperature[] = {-1.0f, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad_temperature / sizeof bad_temperature[0]; i++) {
        pb_t b = {0};
        s_request_pb(&b, 1, WIRE_REQ_GENERATE, 40 + i, p, 2);
        pb_float(&b, 7, bad_temperature[i]);
        s_expect_bad_request(n, &b, 0, WIRE_CLIENT_INVALID_ARGUMENT, 40 + i);
        pb_free(&b);
    }
    const float bad_top_p[] = {-0.5f, 1.5f, NAN};
    for (size_t i = 0; i < sizeof bad_top_p / sizeof bad_top_p[0]; i++) {
        pb_t b = {0};
        s_request_pb(&b, 1, WIRE_REQ_GENERATE, 50 + i, p, 2);
        pb_float(&b, 9, bad_top_p[i]);
        s_expect_bad_request(n, &b, 0, WIRE_CLIENT_INVALID_ARGUMENT, 50 + i);
        pb_free(&b);
    }
    uint64_t many[WIRE_MAX_STOP_IDS + 1];
    for (size_t i = 0; i < WIRE_MAX_STOP_IDS + 1; i++)
        many[i] = i;
    pb_t b = {0};
    s_request_pb(&b, 1, WIRE_REQ_GENERATE, 60, p, 2);
    pb_varints(&b, 11, many, WIRE_MAX_STOP_IDS + 1, false);
    s_expect_bad_request(n, &b, 0, WIRE_CLIENT_INVALID_ARGUMENT, 60);
    pb_free(&b);
    s_request_send(n, &gen); /* still in step */
    s_request_recv(n, &client, &in);
    assert_int_equal(in.request_id, 31);
}

static void test_client_bad_requests(void **state)
{
    net_t *n = *state;
    const int64_t p[3] = {1, 2, 3};
    pb_t b = {0};
    s_request_pb(&b, 1, WIRE_REQ_GENERATE, 201, p, 3);
    s_send_raw(n->dealer, NULL, &b, -1, 0);  /* a good one, by hand */
    wire_request_t in;
    wire_peer_t from;
    s_request_recv(n, &from, &in);
    assert_int_equal(in.request_id, 201);
    assert_int_equal(in.prompt[2], 3);
    s_expect_bad_request(n, &b, 1, WIRE_CLIENT_MALFORMED, 201);  /* extra frame */
    pb_free(&b);

    s_request_pb(&b, 2, WIRE_REQ_GENERATE, 202, p, 3);
    s_expect_bad_request(n, &b, 0, WIRE_CLIENT_VERSION_MISMATCH, 202);
    pb_free(&b);
    pb_uint(&b, 1, 2);  /* a newer version that this one cannot decode */
    pb_uint(&b, 3, 211);
    pb_bytes(&b, 4, "\xff", 1);
    s_expect_bad_request(n, &b, 0, WIRE_CLIENT_VERSION_MISMATCH, 211);
    pb_free(&b);
    s_request_pb(&b, 1, 9, 203, p, 3);
    s_expect_bad_request(n, &b, 0, WIRE_CLIENT_INVALID_ARGUMENT, 203);  /* unknown type */
    pb_free(&b);
    s_request_pb(&b, 1, 0, 204, p, 3);
    s_expect_bad_request(n, &b, 0, WIRE_CLIENT_INVALID_ARGUMENT, 204);  /* no type */
    pb_free(&b);
    s_request_pb(&b, 1, WIRE_REQ_LOGITS, 205, p, 0);
    s_expect_bad_request(n, &b, 0, WIRE_CLIENT_INVALID_ARGUMENT, 205);  /* empty prompt */
    pb_free(&b);
    const int64_t neg[2] = {4, -1};
    s_request_pb(&b, 1, WIRE_REQ_GENERATE, 206, neg, 2);
    s_expect_bad_request(n, &b, 0, WIRE_CLIENT_INVALID_ARGUMENT, 206);  /* negative id */
    pb_free(&b);
    const int64_t big[2] = {4, 100};
    s_request_pb(&b, 1, WIRE_REQ_GENERATE, 207, big, 2);
    s_expect_bad_request(n, &b, 0, WIRE_CLIENT_INVALID_ARGUMENT, 207);  /* id >= vocab */
    pb_free(&b);
    int64_t longp[T_MAX] = {0};
    s_request_pb(&b, 1, WIRE_REQ_GENERATE, 208, longp, 65);
    s_expect_bad_request(n, &b, 0, WIRE_CLIENT_INVALID_ARGUMENT, 208);  /* over max_prompt */
    pb_free(&b);
    /* Far too long for the arena: refused before it is even decoded. */
    pb_uint(&b, 1, 1);
    pb_uint(&b, 2, WIRE_REQ_GENERATE);
    pb_uint(&b, 3, 209);
    pb_key(&b, 4, 2);
    pb_varint(&b, 40000);
    for (int i = 0; i < 40000; i++)
        pb_varint(&b, 1);
    s_expect_bad_request(n, &b, 0, WIRE_CLIENT_INVALID_ARGUMENT, 209);
    pb_free(&b);
    pb_uint(&b, 1, 1);
    pb_uint(&b, 2, WIRE_REQ_GENERATE);
    pb_uint(&b, 3, 210);
    pb_uint(&b, 5, (uint64_t)INT32_MAX + 1);  /* max_tokens */
    pb_varints(&b, 4, (const uint64_t[]){1}, 1, false);
    s_expect_bad_request(n, &b, 0, WIRE_CLIENT_INVALID_ARGUMENT, 210);
    pb_free(&b);
    /* Junk that protobuf refuses. */
    uint8_t junk[4] = {0x0f, 0xff, 0xff, 0xff};
    pb_t j = {.buf = junk, .n = sizeof junk};
    s_expect_bad_request(n, &j, 0, WIRE_CLIENT_MALFORMED, 0);
    pb_t empty = {0};
    s_expect_bad_request(n, &empty, 0, WIRE_CLIENT_MALFORMED, 0);
    /* Random bytes, many seeds. */
    testrng_t rng;
    for (uint64_t seed = 1; seed <= 200; seed++) {
        testrng_init(&rng, seed * 7919);
        uint8_t r[64];
        size_t len = 1 + (size_t)(testrng_uniform(&rng) * (sizeof r - 1));
        for (size_t i = 0; i < len; i++)
            r[i] = (uint8_t)(testrng_uniform(&rng) * 256);
        pb_t rb = {.buf = r, .n = len};
        s_send_raw(n->dealer, NULL, &rb, -1, (int)(seed % 4 == 0));
        err_t err = {0};
        wire_request_t req;
        wire_client_error_t code;
        if (wire_request_recv(n->rin, n->router, &from, &req, &code, &err) < 0) {
            assert_int_equal(errno, EPROTO);
            assert_true(code > WIRE_CLIENT_OK && code <= WIRE_CLIENT_INVALID_ARGUMENT);
        }
        s_client_in_sync(n, &from);
    }
}

/* The coordinator sends raw frames to the client; the client refuses them. */
static void s_expect_bad_reply(net_t *n, const wire_peer_t *client, const pb_t *b,
                               long n_floats, int n_extra, uint64_t id)
{
    s_send_raw(n->router, client, b, n_floats, n_extra);
    err_t err = {0};
    wire_reply_t rep;
    int rc = wire_reply_recv(n->din, n->dealer, &rep, &err);
    if (rc == 0 || errno != EPROTO)
        fail_msg("expected EPROTO, got rc %d errno %d (%s)", rc, errno, err.msg);
    assert_true(strlen(err.msg) > 0);
    assert_int_equal(rep.request_id, id);
    assert_null(rep.logits);
    assert_null(rep.nodes);
    s_client_in_sync(n, client);
}

static void s_reply_pb(pb_t *b, uint64_t version, uint64_t type, uint64_t id)
{
    pb_uint(b, 1, version);
    pb_uint(b, 2, type);
    pb_uint(b, 3, id);
}

static void test_client_bad_replies(void **state)
{
    net_t *n = *state;
    wire_peer_t client;
    s_client_hello(n, &client);
    pb_t b = {0};

    s_reply_pb(&b, 1, WIRE_REP_LOGITS, 301);  /* 2 x 10 logits */
    pb_uint(&b, 8, 2);
    pb_uint(&b, 9, 10);
    s_send_raw(n->router, &client, &b, 20, 0);
    wire_reply_t got;
    s_reply_recv(n, &got);
    assert_int_equal(got.rows, 2);
    assert_int_equal(got.vocab, 10);
    s_expect_bad_reply(n, &client, &b, 19, 0, 301);  /* frame too short */
    s_expect_bad_reply(n, &client, &b, 21, 0, 301);  /* frame too long */
    s_expect_bad_reply(n, &client, &b, -1, 0, 301);  /* frame missing */
    s_expect_bad_reply(n, &client, &b, 20, 1, 301);  /* an extra frame */
    pb_free(&b);
    s_reply_pb(&b, 1, WIRE_REP_LOGITS, 302);
    pb_uint(&b, 8, 65);  /* over max_logit_rows */
    pb_uint(&b, 9, 1);
    s_expect_bad_reply(n, &client, &b, 65, 0, 302);
    pb_free(&b);
    s_reply_pb(&b, 1, WIRE_REP_LOGITS, 303);
    pb_uint(&b, 8, 1);
    pb_uint(&b, 9, 101);  /* over the vocabulary limit */
    s_expect_bad_reply(n, &client, &b, -1, 0, 303);
    pb_free(&b);

    s_reply_pb(&b, 3, WIRE_REP_TOKENS, 304);  /* another version */
    s_expect_bad_reply(n, &client, &b, -1, 0, 304);
    pb_free(&b);
    s_reply_pb(&b, 1, 7, 305);  /* unknown type */
    s_expect_bad_reply(n, &client, &b, -1, 0, 305);
    pb_free(&b);
    s_reply_pb(&b, 1, WIRE_REP_TOKENS, 306);
    s_expect_bad_reply(n, &client, &b, 4, 0, 306);  /* tokens with a tensor */
    pb_varints(&b, 4, (const uint64_t[]){5, 100}, 2, false);  /* token >= vocab */
    s_expect_bad_reply(n, &client, &b, -1, 0, 306);
    pb_free(&b);
    s_reply_pb(&b, 1, WIRE_REP_ERROR, 307);
    pb_uint(&b, 6, 42);  /* unknown error code */
    s_expect_bad_reply(n, &client, &b, -1, 0, 307);
    pb_free(&b);

    /* STATUS_DATA: expert_tokens must be n_layers x n_experts long. */
    s_reply_pb(&b, 1, WIRE_REP_STATUS, 308);
    pb_uint(&b, 12, 2);
    pb_uint(&b, 13, 3);
    pb_varints(&b, 14, (const uint64_t[]){1, 2, 3, 4, 5}, 5, false);
    s_expect_bad_reply(n, &client, &b, -1, 0, 308);
    pb_varints(&b, 14, (const uint64_t[]){6}, 1, false);  /* now 6: accepted */
    s_send_raw(n->router, &client, &b, -1, 0);
    s_reply_recv(n, &got);
    assert_int_equal(got.type, WIRE_REP_STATUS);
    assert_int_equal(got.expert_tokens[5], 6);
    /* A node whose hosted pairs do not pair up, or fall outside the model. */
    pb_t node = {0};
    pb_uint(&node, 1, 1);
    pb_varints(&node, 4, (const uint64_t[]){0, 1}, 2, false);
    pb_varints(&node, 5, (const uint64_t[]){2}, 1, false);
    pb_t with_node = {0};
    pb_raw(&with_node, b.buf, b.n);
    pb_bytes(&with_node, 11, node.buf, node.n);
    s_expect_bad_reply(n, &client, &with_node, -1, 0, 308);
    pb_free(&node);
    pb_free(&with_node);
    pb_uint(&node, 1, 1);
    pb_varints(&node, 4, (const uint64_t[]){2}, 1, false);  /* layer 2 of 2 */
    pb_varints(&node, 5, (const uint64_t[]){0}, 1, false);
    pb_raw(&with_node, b.buf, b.n);
    pb_bytes(&with_node, 11, node.buf, node.n);
    s_expect_bad_reply(n, &client, &with_node, -1, 0, 308);
    pb_free(&node);
    pb_free(&with_node);
    pb_free(&b);

    /* Junk, and an empty frame. */
    uint8_t junk[3] = {0x0a, 0x05, 0x01};
    pb_t j = {.buf = junk, .n = sizeof junk};
    s_expect_bad_reply(n, &client, &j, -1, 0, 0);
    pb_t empty = {0};
    s_expect_bad_reply(n, &client, &empty, -1, 0, 0);
}

/* A client that knows no limits takes a large STATUS_DATA and large logits,
 * its buffers growing. */
static void test_client_unbounded_replies(void **state)
{
    (void)state;
    wire_limits_t none = {0};
    net_t *n = s_net(true, &T_COORD, &none, true);
    wire_peer_t client;
    s_client_hello(n, &client);

    enum { NODES = 3000, LAYERS = 60, EXPERTS = 64 };
    wire_node_status_t *nodes = mem_calloc(NODES, sizeof *nodes);
    uint64_t *counts = mem_calloc(LAYERS * EXPERTS, sizeof *counts);
    assert_non_null(nodes);
    assert_non_null(counts);
    static const int32_t layers[2] = {59, 0}, experts[2] = {63, 1};
    char endpoint[NODES][40];
    for (int i = 0; i < NODES; i++) {
        snprintf(endpoint[i], sizeof endpoint[i], "tcp://10.%d.%d.1:5555", i / 256, i % 256);
        nodes[i] = (wire_node_status_t){.node_id = i, .endpoint = endpoint[i], .up = i % 2,
                                        .n_hosted = 2, .hosted_layer = layers,
                                        .hosted_expert = experts, .batches = (uint64_t)i};
    }
    for (int i = 0; i < LAYERS * EXPERTS; i++)
        counts[i] = (uint64_t)i << 33;
    wire_reply_t sr = {.type = WIRE_REP_STATUS, .request_id = 401, .model = "big",
                       .n_nodes = NODES, .nodes = nodes, .n_layers = LAYERS,
                       .n_experts = EXPERTS, .expert_tokens = counts};
    s_reply_send(n, &client, &sr);
    wire_reply_t got;
    s_reply_recv(n, &got);
    assert_int_equal(got.n_nodes, NODES);
    assert_string_equal(got.nodes[NODES - 1].endpoint, endpoint[NODES - 1]);
    assert_int_equal(got.nodes[NODES - 1].hosted_layer[0], 59);
    assert_int_equal(got.nodes[NODES - 1].batches, NODES - 1);
    assert_memory_equal(got.expert_tokens, counts, LAYERS * EXPERTS * sizeof *counts);

    enum { ROWS = 300, VOCAB = 5000 };
    float *logits = mem_alloc(ROWS * VOCAB * sizeof *logits);
    assert_non_null(logits);
    for (int i = 0; i < ROWS * VOCAB; i++)
        logits[i] = (float)(i % 977) - 300.0f;
    wire_reply_t lr = {.type = WIRE_REP_LOGITS, .request_id = 402, .rows = ROWS,
                       .vocab = VOCAB, .logits = logits};
    s_reply_send(n, &client, &lr);
    s_reply_recv(n, &got);
    assert_int_equal(got.rows, ROWS);
    assert_int_equal(got.vocab, VOCAB);
    assert_memory_equal(got.logits, logits, ROWS * VOCAB * sizeof *logits);
    mem_free(logits);
    mem_free(counts);
    mem_free(nodes);
    s_net_close(&n);
}

static void test_client_send_rejects(void **state)
{
    net_t *n = *state;
    err_t err = {0};
    const int32_t p[1] = {1};
    const wire_request_t bad_req[] = {
        {.type = (wire_request_type_t)0},
        {.type = (wire_request_type_t)8}, /* past NODE_ADD (7) */
        {.type = WIRE_REQ_REBALANCE, .redundant = -1},
        {.type = WIRE_REQ_NODE_DRAIN, .node_id = 0},
        {.type = WIRE_REQ_NODE_ADD, .endpoint = NULL},
        {.type = WIRE_REQ_NODE_ADD, .endpoint = ""},
        {.type = WIRE_REQ_GENERATE, .n_prompt = -1},
        {.type = WIRE_REQ_GENERATE, .n_prompt = 1, .prompt = NULL},
        {.type = WIRE_REQ_LOGITS, .n_prompt = 1, .prompt = p, .max_tokens = -2},
    };
    for (size_t i = 0; i < sizeof bad_req / sizeof bad_req[0]; i++) {
        assert_int_equal(wire_request_send(n->dealer, &bad_req[i], &err), -1);
        assert_int_equal(errno, EINVAL);
    }
    wire_peer_t client;
    s_client_hello(n, &client);
    uint64_t counts[1] = {0};
    const wire_node_status_t neg = {.node_id = -1};
    char long_text[WIRE_MAX_TEXT + 1];
    memset(long_text, 'z', WIRE_MAX_TEXT);
    long_text[WIRE_MAX_TEXT] = '\0';
    const wire_node_status_t long_ep = {.endpoint = long_text};
    const wire_reply_t bad_rep[] = {
        {.type = (wire_reply_type_t)0},
        {.type = WIRE_REP_TOKENS, .n_tokens = 2, .tokens = NULL},
        {.type = WIRE_REP_LOGITS, .rows = 2, .vocab = 0, .logits = (const float *)counts},
        {.type = WIRE_REP_LOGITS, .rows = 1, .vocab = 1, .logits = NULL},
        {.type = WIRE_REP_STATUS, .n_layers = 2, .n_experts = 2, .expert_tokens = NULL},
        {.type = WIRE_REP_STATUS, .n_nodes = 1, .nodes = &neg},
        {.type = WIRE_REP_STATUS, .n_nodes = 1, .nodes = &long_ep},
        {.type = WIRE_REP_STATUS, .model = long_text},
        {.type = WIRE_REP_ERROR, .error_code = WIRE_CLIENT_OK},
    };
    for (size_t i = 0; i < sizeof bad_rep / sizeof bad_rep[0]; i++) {
        err_clear(&err);
        assert_int_equal(wire_reply_send(n->router, &client, &bad_rep[i], &err), -1);
        assert_int_equal(errno, EINVAL);
        assert_true(strlen(err.msg) > 0);
    }
    s_client_in_sync(n, &client);
    /* A long last_error is cut, not refused. */
    const wire_node_status_t long_err = {.node_id = 4, .last_error = long_text};
    wire_reply_t sr = {.type = WIRE_REP_STATUS, .request_id = 501, .n_nodes = 1,
                       .nodes = &long_err};
    s_reply_send(n, &client, &sr);
    wire_reply_t got;
    s_reply_recv(n, &got);
    assert_int_equal(got.n_nodes, 1);
    assert_int_equal(strlen(got.nodes[0].last_error), WIRE_MAX_TEXT - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_names),
        cmocka_unit_test(test_max_message_bytes),
        cmocka_unit_test(test_socket_set_limit),
        cmocka_unit_test(test_inbox_new_and_destroy),
        cmocka_unit_test(test_data_prefill_batch_without_allocating),
        cmocka_unit_test(test_data_formats),
        cmocka_unit_test_setup_teardown(test_client_token_text_without_allocating,
                                        setup_client_inproc, teardown),
        cmocka_unit_test(test_decode_from_memory),
        cmocka_unit_test_setup_teardown(test_data_round_trip, setup_data_tcp, teardown),
        cmocka_unit_test_setup_teardown(test_data_round_trip, setup_data_inproc, teardown),
        cmocka_unit_test_setup_teardown(test_data_frames_on_the_wire, setup_data_tcp,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_data_tensor_in_place_or_copied,
                                        setup_data_inproc, teardown),
        cmocka_unit_test_setup_teardown(test_data_hand_encoded, setup_data_tcp, teardown),
        cmocka_unit_test_setup_teardown(test_data_random_headers, setup_data_inproc,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_data_bad_version, setup_data_tcp, teardown),
        cmocka_unit_test_setup_teardown(test_data_bad_frames, setup_data_tcp, teardown),
        cmocka_unit_test_setup_teardown(test_data_bad_shapes, setup_data_tcp, teardown),
        cmocka_unit_test_setup_teardown(test_data_bad_assignments, setup_data_tcp, teardown),
        cmocka_unit_test_setup_teardown(test_data_bad_types, setup_data_tcp, teardown),
        cmocka_unit_test_setup_teardown(test_data_header_limits, setup_data_inproc, teardown),
        cmocka_unit_test(test_data_oversized_message_dropped),
        cmocka_unit_test_setup_teardown(test_data_send_rejects, setup_data_tcp, teardown),
        cmocka_unit_test(test_data_unbounded_inbox),
        cmocka_unit_test_setup_teardown(test_recv_timeout, setup_data_inproc, teardown),
        cmocka_unit_test_setup_teardown(test_client_round_trip, setup_client_tcp, teardown),
        cmocka_unit_test_setup_teardown(test_client_round_trip, setup_client_inproc,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_client_sampling_fields, setup_client_tcp, teardown),
        cmocka_unit_test_setup_teardown(test_client_bad_requests, setup_client_tcp, teardown),
        cmocka_unit_test_setup_teardown(test_client_bad_replies, setup_client_tcp, teardown),
        cmocka_unit_test(test_client_unbounded_replies),
        cmocka_unit_test_setup_teardown(test_client_send_rejects, setup_client_inproc,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
