/* test_expert_node: the moe-expert program as a coordinator sees it: real
 * processes, real sockets. It answers HELLO with its share of the default
 * placement (or of a placement file), computes the same partial sums as
 * experts_run in this process, answers every kind of hostile message with the
 * right ERROR and keeps serving, stops cleanly on SIGTERM and on SHUTDOWN,
 * and refuses a bad command line with one clear message. The server module
 * is also used in this process, for its constructor's errors and its
 * out-of-memory paths.
 *
 * Every receive has a timeout and every wait is bounded, so a broken node
 * fails a test instead of hanging it; nodes still running when a test ends
 * (failed or not) are killed in its teardown.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "core/mem.h"
#include "core/timer.h"
#include "engine/experts.h"
#include "engine/weights.h"
#include "expert_node/expert_server.h"
#include "model/config.h"
#include "model/placement.h"
#include "proto/data_plane.h"
#include "tests/fixture.h"
#include "tests/testutil.h"

enum {
    START_TIMEOUT_S = 20,   /* for the endpoint file to appear */
    EXIT_TIMEOUT_S = 10,    /* for a node to exit once told to */
    RECV_TIMEOUT_MS = 10000,
    MAX_NODES = 4,          /* started by one test */
    TEST_MAX_ROWS = 64,     /* --max-rows of the nodes the tests start */
};

typedef struct node {
    pid_t pid;              /* 0: not running */
    int exit_status;        /* once reaped: exit code, or -1 if killed */
    char endpoint[256];
    char dir[700];          /* endpoint, stdout and stderr files */
} node_t;

/* Shared by all tests (group setup). */
static char s_model[512];
static char s_bin[512];
static char *s_tmp;
static weights_t *s_w;           /* node 2 of 3's experts, for the reference */
static placement_t *s_place;     /* default split: 2 layers x 8 experts on 3 nodes */
static experts_t *s_ref;
static compute_t *s_ref_cx;      /* s_ref's products */
static void *s_ctx;              /* ZeroMQ context of this process */

/* Per test. */
static node_t s_nodes[MAX_NODES];
static int s_n_nodes;
static void *s_sock;             /* DEALER connected to s_nodes[0] */
static wire_inbox_t *s_inbox;

/* ===== processes ================================================================ */

/* Starts moe-expert with `args` (a shell-quoted tail after --model) and
 * returns its node_t; does not wait for it. */
static node_t *s_spawn(const char *args)
{
    assert_true(s_n_nodes < MAX_NODES);
    node_t *n = &s_nodes[s_n_nodes];
    memset(n, 0, sizeof *n);
    snprintf(n->dir, sizeof n->dir, "%s/node%d", s_tmp, s_n_nodes);
    s_n_nodes++;
    testutil_rmtree(n->dir);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && exec '%s' %s --endpoint-file '%s/endpoint' "
             "</dev/null >'%s/stdout' 2>'%s/stderr'", n->dir, s_bin, args, n->dir, n->dir,
             n->dir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    n->pid = pid;
    return n;
}

/* Reaps n if it has exited; true when it is no longer running. */
static bool s_reap(node_t *n, int options)
{
    if (n->pid <= 0)
        return true;
    int status;
    pid_t r = waitpid(n->pid, &status, options);
    if (r == 0)
        return false;
    n->exit_status = (r == n->pid && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
    n->pid = 0;
    return true;
}

static char *s_node_file(const node_t *n, const char *name)
{
    char path[800];
    snprintf(path, sizeof path, "%s/%s", n->dir, name);
    return testutil_read_file(path, NULL);
}

/* Waits (bounded) for the endpoint file; fails with the node's stderr if the
 * node exits or the time runs out. */
static void s_wait_ready(node_t *n)
{
    double t0 = timer_now();
    for (;;) {
        char *ep = s_node_file(n, "endpoint");
        char *nl = ep ? strchr(ep, '\n') : NULL;
        if (nl) {
            *nl = '\0';
            snprintf(n->endpoint, sizeof n->endpoint, "%s", ep);
            free(ep);
            return;
        }
        free(ep);
        if (s_reap(n, WNOHANG) || timer_now() - t0 > START_TIMEOUT_S) {
            char *text = s_node_file(n, "stderr");
            fail_msg("moe-expert did not start (exit %d): %s", n->exit_status,
                     text ? text : "(no stderr)");
        }
        usleep(20000);
    }
}

/* Waits (bounded) for n to exit; returns its exit code, or -2 on timeout. */
static int s_wait_exit(node_t *n, double seconds)
{
    double t0 = timer_now();
    while (!s_reap(n, WNOHANG)) {
        if (timer_now() - t0 > seconds)
            return -2;
        usleep(20000);
    }
    return n->exit_status;
}

/* Waits (bounded) for a clean exit: status 0, which under SANITIZE=1 also
 * means LeakSanitizer found nothing; fails with the node's stderr if not. */
static void s_expect_clean_exit(node_t *n)
{
    int rc = s_wait_exit(n, EXIT_TIMEOUT_S);
    if (rc != 0) {
        char *text = s_node_file(n, "stderr");
        fail_msg("moe-expert exited with %d (-2: still running after %d s): %s", rc,
                 EXIT_TIMEOUT_S, text ? text : "(no stderr)");
    }
}

static void *s_dealer(const char *endpoint)
{
    void *s = zmq_socket(s_ctx, ZMQ_DEALER);
    assert_non_null(s);
    int timeout = RECV_TIMEOUT_MS, linger = 0;
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_connect(s, endpoint), 0);
    return s;
}

/* Starts a node with `args`, waits for it and connects s_sock to it. */
static node_t *s_start(const char *args)
{
    node_t *n = s_spawn(args);
    s_wait_ready(n);
    if (!s_sock)
        s_sock = s_dealer(n->endpoint);
    return n;
}

static int s_setup_group(void **state)
{
    (void)state;
    snprintf(s_model, sizeof s_model, "%s/mixtral-A", fixture_root());
    snprintf(s_bin, sizeof s_bin, "%s/moe-expert", testutil_env("MOE_BIN", "build/bin"));
    s_tmp = testutil_mkdtemp("test_expert_node");
    err_t err = {0};
    s_place = placement_default(2, 8, 3, 1, &err);
    placement_node_t me = {s_place, 2};
    weights_select_t sel = {.hosts = placement_node_hosts, .hosts_ctx = &me};
    s_w = s_place ? weights_load(s_model, &sel, &err) : NULL;
    s_ref_cx = compute_new(1, &err);
    s_ref = s_w && s_ref_cx ? experts_new(&s_w->cfg, 512, 1024, s_ref_cx, &err) : NULL;
    s_ctx = zmq_ctx_new();
    if (!s_tmp || !s_ref || !s_ctx) {
        fprintf(stderr, "test_expert_node: setup failed: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int s_teardown_group(void **state)
{
    (void)state;
    if (s_ctx)
        zmq_ctx_term(s_ctx);
    experts_destroy(&s_ref);
    compute_destroy(&s_ref_cx);
    weights_destroy(&s_w);
    placement_destroy(&s_place);
    testutil_rmtree(s_tmp);
    free(s_tmp);
    return 0;
}

static int s_setup(void **state)
{
    (void)state;
    s_n_nodes = 0;
    s_sock = NULL;
    wire_limits_t lim = {.hidden = 64, .max_rows = 512, .max_assign = 1024, .n_layers = 2,
                         .n_experts = 8};
    err_t err = {0};
    s_inbox = wire_inbox_new(&lim, &err);
    return s_inbox ? 0 : -1;
}

/* Kills whatever a test left running, even after a failure. */
static int s_teardown(void **state)
{
    (void)state;
    if (s_sock)
        zmq_close(s_sock);
    s_sock = NULL;
    for (int i = 0; i < s_n_nodes; i++) {
        if (s_nodes[i].pid > 0) {
            kill(s_nodes[i].pid, SIGKILL);
            s_reap(&s_nodes[i], 0);
        }
    }
    s_n_nodes = 0;
    wire_inbox_destroy(&s_inbox);
    return 0;
}

/* The usual node: 2 of 3 by the default split. */
static node_t *s_start_default(void)
{
    char args[1024];
    snprintf(args, sizeof args, "--model '%s' --node-id 2 --nodes 3 --threads 1 "
             "--max-rows %d", s_model, TEST_MAX_ROWS);
    return s_start(args);
}

/* ===== messages ===================================================================== */

/* Receives one reply on sock (bounded by RECV_TIMEOUT_MS) or fails. */
static void s_recv(void *sock, wire_data_t *m)
{
    wire_data_error_t code = WIRE_DATA_OK;
    err_t err = {0};
    wire_peer_t from;
    if (wire_data_recv(s_inbox, sock, false, &from, m, &code, &err) < 0)
        fail_msg("no valid reply: %s (errno %d, code %d)", err.msg, errno, (int)code);
}

static void s_send(void *sock, const wire_data_t *m)
{
    err_t err = {0};
    if (wire_data_send(sock, NULL, m, &err) < 0)
        fail_msg("send failed: %s", err.msg);
}

/* Rows and assignments of one random request to node 2's experts. */
typedef struct request {
    int layer;
    int n_rows;
    float rows[TEST_MAX_ROWS * 64];       /* (n_rows, 64) */
    int n_assign;
    moe_assign_t assign[TEST_MAX_ROWS * 2];
    bool last_unassigned;                 /* the last row's sum must be zero */
} request_t;

static const int s_hosted[] = {1, 4, 7}; /* node 2 of 3 */

/* Each row goes to two distinct hosted experts, except the last of several,
 * which goes to none (so its partial sum is zero). */
static void s_make_request(request_t *r, testrng_t *rng, int layer, int n_rows)
{
    r->layer = layer;
    r->n_rows = n_rows;
    testrng_fill(rng, r->rows, (size_t)n_rows * 64, 1.0f);
    r->n_assign = 0;
    r->last_unassigned = n_rows > 1;
    for (int i = 0; i < n_rows - r->last_unassigned; i++) {
        int a = (int)(testrng_uniform(rng) * 3);
        int b = (a + 1 + (int)(testrng_uniform(rng) * 2)) % 3;
        float w = (float)testrng_uniform(rng);
        r->assign[r->n_assign++] = (moe_assign_t){i, s_hosted[a], w};
        r->assign[r->n_assign++] = (moe_assign_t){i, s_hosted[b], 1.0f - w};
    }
}

static wire_data_t s_request_msg(const request_t *r, uint64_t id)
{
    return (wire_data_t){.type = WIRE_EXPERT_REQUEST, .request_id = id, .layer = r->layer,
                         .n_rows = r->n_rows, .hidden = 64, .rows = r->rows,
                         .n_assign = r->n_assign, .assign = r->assign};
}

/* Receives the reply to r (request id `id`) and compares it with experts_run
 * in this process. */
static void s_expect_reply(void *sock, const request_t *r, uint64_t id)
{
    wire_data_t m;
    s_recv(sock, &m);
    if (m.type == WIRE_ERROR)
        fail_msg("request %llu: ERROR %d: %s", (unsigned long long)id, (int)m.error_code,
                 m.error_message);
    assert_int_equal(m.type, WIRE_EXPERT_REPLY);
    assert_int_equal(m.request_id, id);
    assert_int_equal(m.layer, r->layer);
    assert_int_equal(m.n_rows, r->n_rows);
    assert_int_equal(m.hidden, 64);
    assert_true(m.compute_seconds >= 0 && m.compute_seconds < 60);
    static float want[TEST_MAX_ROWS * 64];
    static double want_d[TEST_MAX_ROWS * 64];
    err_t err = {0};
    assert_int_equal(experts_run(s_ref, s_w, r->layer, r->rows, r->n_rows, r->assign,
                                 r->n_assign, want, &err), 0);
    size_t n = (size_t)r->n_rows * 64;
    for (size_t i = 0; i < n; i++)
        want_d[i] = want[i];
    double tol = 1e-5 * (1 + testutil_max_abs(want_d, n));
    assert_true(testutil_max_abs_diff(m.rows, want_d, n) < tol);
    assert_true(testutil_max_abs(want_d, n) > 0); /* the check means something */
    for (size_t j = n - 64; r->last_unassigned && j < n; j++)
        assert_true(m.rows[j] == 0.0f);          /* the unassigned last row */
}

/* One valid request round trip: the node still serves. */
static void s_expect_serving(void *sock, uint64_t id)
{
    static request_t r;
    testrng_t rng;
    testrng_init(&rng, id);
    s_make_request(&r, &rng, (int)(id % 2), 5);
    wire_data_t m = s_request_msg(&r, id);
    s_send(sock, &m);
    s_expect_reply(sock, &r, id);
}

/* ---- a hand-made protobuf encoder, for headers wire_data_send would never
 * write (it is the receiver's checks under test, not the sender's) ---------- */

typedef struct pb {
    size_t len;
    uint8_t buf[8192];
} pb_t;

static void s_pb_raw(pb_t *p, uint64_t v)
{
    do {
        assert_true(p->len < sizeof p->buf);
        p->buf[p->len++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
}

static void s_pb_varint(pb_t *p, int field, uint64_t v)
{
    s_pb_raw(p, (uint64_t)field << 3);
    s_pb_raw(p, v);
}

static void s_pb_packed_u32(pb_t *p, int field, const uint32_t *v, int n)
{
    pb_t tmp = {0};
    for (int i = 0; i < n; i++)
        s_pb_raw(&tmp, v[i]);
    s_pb_raw(p, (uint64_t)field << 3 | 2);
    s_pb_raw(p, tmp.len);
    memcpy(p->buf + p->len, tmp.buf, tmp.len);
    p->len += tmp.len;
}

static void s_pb_packed_float(pb_t *p, int field, const float *v, int n)
{
    s_pb_raw(p, (uint64_t)field << 3 | 2);
    s_pb_raw(p, (uint64_t)n * 4);
    memcpy(p->buf + p->len, v, (size_t)n * 4); /* little-endian hosts only */
    p->len += (size_t)n * 4;
}

/* What one hand-made EXPERT_REQUEST header says. */
typedef struct hdr {
    uint32_t version, type, layer, dtype, n_rows, hidden;
    uint64_t request_id;
    int n_assign;
    uint32_t row[8], expert[8];
    float weight[8];
} hdr_t;

/* A valid header for a 4-row request of layer 0 to experts 1 and 4. */
static hdr_t s_hdr(uint64_t id)
{
    return (hdr_t){.version = WIRE_PROTOCOL_VERSION, .type = WIRE_EXPERT_REQUEST,
                   .request_id = id, .layer = 0, .dtype = 1, .n_rows = 4, .hidden = 64,
                   .n_assign = 3, .row = {0, 1, 3}, .expert = {1, 4, 7},
                   .weight = {0.5f, 1.0f, -0.25f}};
}

static void s_encode(pb_t *p, const hdr_t *h)
{
    p->len = 0;
    s_pb_varint(p, 1, h->version);
    s_pb_varint(p, 2, h->type);
    s_pb_varint(p, 3, h->request_id);
    s_pb_varint(p, 4, h->layer);
    s_pb_varint(p, 5, h->dtype);
    s_pb_varint(p, 6, h->n_rows);
    s_pb_varint(p, 7, h->hidden);
    if (h->n_assign > 0) {
        s_pb_packed_u32(p, 8, h->row, h->n_assign);
        s_pb_packed_u32(p, 9, h->expert, h->n_assign);
        s_pb_packed_float(p, 10, h->weight, h->n_assign);
    }
}

/* Sends frames raw: n_frames buffers. */
static void s_send_frames(void *sock, int n_frames, const void *const *data,
                          const size_t *len)
{
    for (int i = 0; i < n_frames; i++)
        assert_int_equal(zmq_send(sock, data[i], len[i], i + 1 < n_frames ? ZMQ_SNDMORE : 0),
                         (int)len[i]);
}

/* Sends header h with a tensor frame of `tensor_bytes` bytes (< 0: none). */
static void s_send_hdr(void *sock, const hdr_t *h, long tensor_bytes)
{
    static pb_t p;
    static float tensor[TEST_MAX_ROWS * 64 * 2];
    s_encode(&p, h);
    assert_true(tensor_bytes <= (long)sizeof tensor);
    for (size_t i = 0; i < sizeof tensor / sizeof tensor[0]; i++)
        tensor[i] = (float)((int)(i % 13) - 6) * 0.1f;
    const void *data[] = {p.buf, tensor};
    size_t len[] = {p.len, tensor_bytes > 0 ? (size_t)tensor_bytes : 0};
    s_send_frames(sock, tensor_bytes < 0 ? 1 : 2, data, len);
}

/* Receives an ERROR; checks its code (any ERROR when code < 0) and that it
 * echoes id. */
static void s_expect_error(void *sock, int code, uint64_t id, const char *what)
{
    wire_data_t m;
    s_recv(sock, &m);
    if (m.type != WIRE_ERROR)
        fail_msg("%s: got message type %d, want an ERROR", what, (int)m.type);
    if (code >= 0 && (int)m.error_code != code)
        fail_msg("%s: got error %d (%s: %s), want %d (%s)", what, (int)m.error_code,
                 wire_data_error_name(m.error_code), m.error_message, code,
                 wire_data_error_name((wire_data_error_t)code));
    assert_int_equal(m.request_id, id);
    assert_non_null(m.error_message);
    assert_true(strlen(m.error_message) > 0);
}

/* HELLO with id on the test socket: its HELLO_REPLY into *m. */
static void s_hello(uint64_t id, wire_data_t *m)
{
    s_send(s_sock, &(wire_data_t){.type = WIRE_HELLO, .request_id = id});
    s_recv(s_sock, m);
    assert_int_equal(m->type, WIRE_HELLO_REPLY);
    assert_int_equal(m->request_id, id);
}

/* ===== tests ========================================================================== */

static void test_hello_lists_hosted_experts(void **state)
{
    (void)state;
    node_t *n = s_start_default();
    assert_non_null(strstr(n->endpoint, "tcp://127.0.0.1:"));
    wire_data_t m;
    s_hello(7, &m);
    assert_int_equal(m.node_id, 2);
    char want_id[WIRE_MAX_TEXT];
    config_model_id(&s_w->cfg, want_id, sizeof want_id);
    assert_non_null(m.model_id);
    assert_string_equal(m.model_id, want_id);
    /* Experts 1, 4, 7 of both layers, each once, in any order. */
    assert_int_equal(m.n_hosted, 6);
    bool seen[2][8] = {{false}};
    for (int i = 0; i < m.n_hosted; i++) {
        int l = m.hosted_layer[i], e = m.hosted_expert[i];
        assert_true(l >= 0 && l < 2 && e >= 0 && e < 8);
        assert_false(seen[l][e]);
        seen[l][e] = true;
        assert_int_equal(e % 3, 1);
    }
}

static void test_expert_request_matches_local_experts(void **state)
{
    (void)state;
    s_start_default();
    static request_t r;
    testrng_t rng;
    testrng_init(&rng, 42);
    const int sizes[] = {1, 2, 5, 17, TEST_MAX_ROWS};
    for (int i = 0; i < 5; i++) {
        s_make_request(&r, &rng, i % 2, sizes[i]);
        wire_data_t m = s_request_msg(&r, 100 + (uint64_t)i);
        s_send(s_sock, &m);
        s_expect_reply(s_sock, &r, 100 + (uint64_t)i);
    }
    /* Pipelined: three requests in flight, replies in order. */
    static request_t q[3];
    for (int i = 0; i < 3; i++) {
        s_make_request(&q[i], &rng, i % 2, 3 + i);
        wire_data_t m = s_request_msg(&q[i], 200 + (uint64_t)i);
        s_send(s_sock, &m);
    }
    for (int i = 0; i < 3; i++)
        s_expect_reply(s_sock, &q[i], 200 + (uint64_t)i);
}

static void test_heartbeat_and_two_peers(void **state)
{
    (void)state;
    node_t *n = s_start_default();
    s_send(s_sock, &(wire_data_t){.type = WIRE_HEARTBEAT, .request_id = 9});
    wire_data_t m;
    s_recv(s_sock, &m);
    assert_int_equal(m.type, WIRE_HEARTBEAT_REPLY);
    assert_int_equal(m.request_id, 9);

    /* A second peer gets its own replies. */
    void *other = s_dealer(n->endpoint);
    static request_t a, b;
    testrng_t rng;
    testrng_init(&rng, 3);
    s_make_request(&a, &rng, 0, 4);
    s_make_request(&b, &rng, 1, 6);
    wire_data_t ma = s_request_msg(&a, 11), mb = s_request_msg(&b, 12);
    s_send(s_sock, &ma);
    s_send(other, &mb);
    s_expect_reply(other, &b, 12);
    s_expect_reply(s_sock, &a, 11);
    zmq_close(other);
}

/* The one field s_spoil changes in a valid header. */
typedef enum spoil {
    SPOIL_NONE,       /* the header is valid: the tensor frame is not */
    SPOIL_VERSION,
    SPOIL_ROWS,
    SPOIL_HIDDEN,
    SPOIL_ROW1,       /* row[1] */
    SPOIL_LAYER,
    SPOIL_EXPERT1,    /* expert[1] */
    SPOIL_EXPERT2,    /* expert[2] */
    SPOIL_WEIGHT0,    /* weight[0] */
    SPOIL_TYPE_REPLY, /* an EXPERT_REPLY (without assignments) sent to a node */
} spoil_t;

static void s_spoil(hdr_t *h, spoil_t field, double value)
{
    switch (field) {
    case SPOIL_NONE: break;
    case SPOIL_VERSION: h->version = (uint32_t)value; break;
    case SPOIL_ROWS: h->n_rows = (uint32_t)value; break;
    case SPOIL_HIDDEN: h->hidden = (uint32_t)value; break;
    case SPOIL_ROW1: h->row[1] = (uint32_t)value; break;
    case SPOIL_LAYER: h->layer = (uint32_t)value; break;
    case SPOIL_EXPERT1: h->expert[1] = (uint32_t)value; break;
    case SPOIL_EXPERT2: h->expert[2] = (uint32_t)value; break;
    case SPOIL_WEIGHT0: h->weight[0] = (float)value; break;
    case SPOIL_TYPE_REPLY:
        h->type = WIRE_EXPERT_REPLY;
        h->n_assign = 0;
        break;
    }
}

/* A header a node refuses: s_hdr with one field spoiled, sent with a tensor
 * frame of tensor_bytes (< 0: none); the ERROR code it gets (-1: any). */
typedef struct bad_header {
    spoil_t field;
    double value;
    long tensor_bytes;
    int code;
    const char *what;
} bad_header_t;

enum { ROWS_BYTES = 4 * 64 * 4 }; /* the valid header's 4 rows of 64 floats */

static const bad_header_t s_bad_headers[] = {
    {SPOIL_VERSION, WIRE_PROTOCOL_VERSION + 1, ROWS_BYTES, WIRE_DATA_ERR_VERSION,
     "wrong version"},
    {SPOIL_VERSION, 0, ROWS_BYTES, WIRE_DATA_ERR_VERSION, "version 0"},
    {SPOIL_NONE, 0, ROWS_BYTES - 4, WIRE_DATA_ERR_SHAPE, "truncated tensor"},
    {SPOIL_NONE, 0, ROWS_BYTES + 4, WIRE_DATA_ERR_SHAPE, "oversized tensor"},
    {SPOIL_NONE, 0, -1, WIRE_DATA_ERR_MALFORMED, "missing tensor"},
    {SPOIL_ROWS, 5, ROWS_BYTES, WIRE_DATA_ERR_SHAPE, "5 rows, 4 in the frame"},
    {SPOIL_ROWS, 3, ROWS_BYTES, WIRE_DATA_ERR_SHAPE, "3 rows, 4 in the frame"},
    {SPOIL_ROWS, 0, 0, WIRE_DATA_ERR_SHAPE, "no rows"},
    {SPOIL_HIDDEN, 32, 4 * 32 * 4, WIRE_DATA_ERR_SHAPE, "hidden 32 of a 64 model"},
    {SPOIL_ROW1, 4, ROWS_BYTES, WIRE_DATA_ERR_SHAPE, "assignment to row 4 of 4"},
    {SPOIL_LAYER, 2, ROWS_BYTES, WIRE_DATA_ERR_UNKNOWN_EXPERT, "layer 2 of 2"},
    {SPOIL_EXPERT2, 8, ROWS_BYTES, WIRE_DATA_ERR_UNKNOWN_EXPERT, "expert 8 of 8"},
    {SPOIL_EXPERT1, 0, ROWS_BYTES, WIRE_DATA_ERR_UNKNOWN_EXPERT, "expert 0 is on node 1"},
    {SPOIL_WEIGHT0, NAN, ROWS_BYTES, -1, "NaN weight"},
    {SPOIL_ROWS, TEST_MAX_ROWS + 1, (TEST_MAX_ROWS + 1) * 64 * 4, WIRE_DATA_ERR_TOO_LARGE,
     "rows beyond --max-rows"},
    {SPOIL_TYPE_REPLY, 0, ROWS_BYTES, WIRE_DATA_ERR_UNEXPECTED, "EXPERT_REPLY to a node"},
};

static void test_hostile_messages_get_errors(void **state)
{
    (void)state;
    s_start_default();
    uint64_t id = 1000;

    /* A valid hand-made request first: the encoder speaks the protocol. */
    hdr_t h = s_hdr(id);
    s_send_hdr(s_sock, &h, 4 * 64 * 4);
    wire_data_t m;
    s_recv(s_sock, &m);
    if (m.type != WIRE_EXPERT_REPLY)
        fail_msg("hand-made request: type %d (%s)", (int)m.type,
                 m.type == WIRE_ERROR ? m.error_message : "");
    assert_int_equal(m.request_id, id);

    /* Random bytes, one and two frames, and an empty frame: the header cannot be
     * read (random bytes may happen to decode, with a wrong version). */
    testrng_t rng;
    testrng_init(&rng, 99);
    uint8_t junk[300];
    for (int round = 0; round < 20; round++) {
        for (size_t i = 0; i < sizeof junk; i++)
            junk[i] = (uint8_t)(testrng_uniform(&rng) * 256);
        const void *data[] = {junk, junk};
        size_t len[] = {1 + (size_t)(testrng_uniform(&rng) * 299), 64};
        s_send_frames(s_sock, 1 + round % 2, data, len);
        wire_data_t e;
        s_recv(s_sock, &e);
        assert_int_equal(e.type, WIRE_ERROR);
        assert_true(e.error_code == WIRE_DATA_ERR_MALFORMED ||
                    e.error_code == WIRE_DATA_ERR_VERSION ||
                    e.error_code == WIRE_DATA_ERR_UNEXPECTED);
    }
    {
        const void *data[] = {""};
        size_t len[] = {0};
        s_send_frames(s_sock, 1, data, len);
        s_expect_error(s_sock, -1, 0, "empty frame");
    }
    s_expect_serving(s_sock, ++id);

    /* Headers with one field wrong (a table: s_bad_headers). */
    for (size_t i = 0; i < sizeof s_bad_headers / sizeof *s_bad_headers; i++) {
        const bad_header_t *b = &s_bad_headers[i];
        h = s_hdr(++id);
        s_spoil(&h, b->field, b->value);
        s_send_hdr(s_sock, &h, b->tensor_bytes);
        s_expect_error(s_sock, b->code, id, b->what);
    }
    s_expect_serving(s_sock, ++id);

    /* A frame too many; assignment lists of different lengths. */
    {
        static pb_t p;
        h = s_hdr(++id);
        s_encode(&p, &h);
        static float rows[4 * 64];
        const void *data[] = {p.buf, rows, rows};
        size_t len[] = {p.len, sizeof rows, 4};
        s_send_frames(s_sock, 3, data, len);
        s_expect_error(s_sock, WIRE_DATA_ERR_MALFORMED, id, "extra frame");
    }
    h = s_hdr(++id);
    h.n_assign = 2; /* three rows, experts, weights given; lists then disagree */
    {
        static pb_t p;
        s_encode(&p, &h);
        uint32_t extra_row = 2;
        s_pb_packed_u32(&p, 8, &extra_row, 1);
        static float rows[4 * 64];
        const void *data[] = {p.buf, rows};
        size_t len[] = {p.len, sizeof rows};
        s_send_frames(s_sock, 2, data, len);
        s_expect_error(s_sock, -1, id, "assignment lists of different lengths");
    }
    s_expect_serving(s_sock, ++id);

    /* Types a node does not accept. */
    s_send(s_sock, &(wire_data_t){.type = WIRE_HELLO_REPLY, .request_id = ++id, .node_id = 1,
                                  .model_id = "x"});
    s_expect_error(s_sock, WIRE_DATA_ERR_UNEXPECTED, id, "HELLO_REPLY to a node");
    s_send(s_sock, &(wire_data_t){.type = WIRE_HEARTBEAT_REPLY, .request_id = ++id});
    s_expect_error(s_sock, WIRE_DATA_ERR_UNEXPECTED, id, "HEARTBEAT_REPLY to a node");
    /* An ERROR is not answered: the next reply is the next request's. */
    err_t err = {0};
    assert_int_equal(wire_data_send_error(s_sock, NULL, ++id, WIRE_DATA_ERR_INTERNAL,
                                          "a test error", &err), 0);
    s_expect_serving(s_sock, ++id);
}

/* A message beyond the node's size limit never reaches it: ZeroMQ drops the
 * connection; the peer reconnects and is served again. */
static void test_oversized_message_is_dropped(void **state)
{
    (void)state;
    s_start_default();
    s_expect_serving(s_sock, 1);
    const size_t big = (size_t)WIRE_MAX_HEADER_BYTES + 4 * (size_t)TEST_MAX_ROWS * 64 * 8;
    char *junk = calloc(1, big);
    assert_non_null(junk);
    assert_int_equal(zmq_send(s_sock, junk, big, 0), (int)big);
    free(junk);
    /* Nothing comes back; then the node serves again. */
    int timeout = 1000;
    zmq_setsockopt(s_sock, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    wire_data_t m;
    wire_data_error_t code;
    err_t err = {0};
    wire_peer_t from;
    assert_int_equal(wire_data_recv(s_inbox, s_sock, false, &from, &m, &code, &err), -1);
    assert_int_equal(errno, EAGAIN);
    timeout = RECV_TIMEOUT_MS;
    zmq_setsockopt(s_sock, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    s_expect_serving(s_sock, 2);
}

static void test_sigterm_exits_cleanly(void **state)
{
    (void)state;
    node_t *n = s_start_default();
    s_expect_serving(s_sock, 1);
    double t0 = timer_now();
    assert_int_equal(kill(n->pid, SIGTERM), 0);
    s_expect_clean_exit(n);
    printf("  SIGTERM to exit: %.3f s\n", timer_now() - t0);

    /* SIGINT too, even before any message arrived. */
    char args[1024];
    snprintf(args, sizeof args, "--model '%s' --node-id 1 --nodes 3 --threads 1", s_model);
    n = s_spawn(args);
    s_wait_ready(n);
    assert_int_equal(kill(n->pid, SIGINT), 0);
    s_expect_clean_exit(n);
}

static void test_shutdown_exits_cleanly(void **state)
{
    (void)state;
    node_t *n = s_start_default();
    s_expect_serving(s_sock, 1);
    s_send(s_sock, &(wire_data_t){.type = WIRE_SHUTDOWN, .request_id = 2});
    s_expect_clean_exit(n);
    /* The endpoint was the last line of stdout and the whole endpoint file. */
    char *out = s_node_file(n, "stdout");
    assert_non_null(out);
    char want[300];
    snprintf(want, sizeof want, "%s\n", n->endpoint);
    size_t lo = strlen(out), lw = strlen(want);
    assert_true(lo >= lw);
    assert_string_equal(out + lo - lw, want);
    free(out);
    char *ep = s_node_file(n, "endpoint");
    assert_non_null(ep);
    assert_string_equal(ep, want);
    free(ep);
    /* stderr names the OpenBLAS kernels and the node's share. */
    char *err_text = s_node_file(n, "stderr");
    assert_non_null(err_text);
    assert_non_null(strstr(err_text, "openblas"));
    assert_non_null(strstr(err_text, "node 2 of 3 hosts 6 experts"));
    free(err_text);
}

static void test_placement_file_and_replicas(void **state)
{
    (void)state;
    char path[800], args[2048];
    snprintf(path, sizeof path, "%s/placement.txt", s_tmp);
    const char *text = "nodes 2\nnode 1 layers * experts *\n"
                       "node 2 layers 0 experts 0,2-3 # a partial replica\n"
                       "node 2 layers 1 experts 6\n";
    assert_int_equal(testutil_write_file(path, text, strlen(text)), 0);
    snprintf(args, sizeof args, "--model '%s' --node-id 2 --nodes 2 --placement '%s' "
             "--threads 1", s_model, path);
    s_start(args);
    wire_data_t m;
    s_hello(1, &m);
    assert_int_equal(m.node_id, 2);
    assert_int_equal(m.n_hosted, 4);
    int code = 0;
    for (int i = 0; i < m.n_hosted; i++)
        code += 1 << (m.hosted_layer[i] * 8 + m.hosted_expert[i]);
    assert_int_equal(code, (1 << 0) | (1 << 2) | (1 << 3) | (1 << (8 + 6)));
    /* Expert 6 of layer 1 is served; expert 6 of layer 0 is not here. */
    static float rows[2 * 64];
    for (int i = 0; i < 2 * 64; i++)
        rows[i] = (float)(i % 7) * 0.1f;
    moe_assign_t a[] = {{0, 6, 1.0f}, {1, 6, 0.5f}};
    wire_data_t req = {.type = WIRE_EXPERT_REQUEST, .request_id = 2, .layer = 1,
                       .n_rows = 2, .hidden = 64, .rows = rows, .n_assign = 2, .assign = a};
    s_send(s_sock, &req);
    s_recv(s_sock, &m);
    assert_int_equal(m.type, WIRE_EXPERT_REPLY);
    req.layer = 0;
    req.request_id = 3;
    s_send(s_sock, &req);
    s_expect_error(s_sock, WIRE_DATA_ERR_UNKNOWN_EXPERT, 3, "expert 6 of layer 0");
    zmq_close(s_sock);
    s_sock = NULL;

    /* The default split with 2 replicas: node 2 of 3 also hosts 0, 3, 6. */
    snprintf(args, sizeof args, "--model '%s' --node-id 2 --nodes 3 --replicas 2 "
             "--threads 1", s_model);
    s_start(args);
    s_hello(4, &m);
    assert_int_equal(m.n_hosted, 12);
    for (int i = 0; i < m.n_hosted; i++)
        assert_true(m.hosted_expert[i] % 3 != 2);
}

/* Exit status `code` and exactly one error line holding `want` on stderr
 * (besides the OpenBLAS report); no endpoint announced. */
static void s_expect_cli_error(const char *args, int code, const char *want)
{
    testutil_expect_error("timeout -k 5 60", s_bin, args, code, want);
}

static void test_bad_command_lines(void **state)
{
    (void)state;
    char args[2048], path[800];
    static const testutil_error_case_t cases[] = {
        {"--model '%s/missing-model' --node-id 1 --nodes 3", 1, "missing-model"},
        {"--model '%s' --node-id 4 --nodes 3", 2, "--node-id 4 is out of range: nodes are 1..3"},
        {"--model '%s' --node-id 0 --nodes 3", 2, "--node-id must be an integer in [1, 2147483647]"},
        {"--model '%s' --node-id 1", 2, "--nodes are required"},
        {"--model '%s' --node-id 1 --nodes 3 --replicas 4", 2, "--replicas 4"},
        {"--model '%s' --node-id 1 --nodes 3 --frobnicate", 2, "--frobnicate"},
        {"--model '%s' --node-id 1 --nodes 3 --max-rows x", 2, "--max-rows"},
        {"--model '%s' --node-id 1 --nodes 3 --node 2", 2, "unknown or incomplete option"},
    };
    testutil_expect_errors("timeout -k 5 60", s_bin, cases, sizeof cases / sizeof *cases,
                           s_model);

    snprintf(path, sizeof path, "%s/bad-placement.txt", s_tmp);
    const char *bad = "nodes 3\nnode 1 layers * experts 0-3\nnode 7 layers * experts 4-7\n";
    assert_int_equal(testutil_write_file(path, bad, strlen(bad)), 0);
    snprintf(args, sizeof args, "--model '%s' --node-id 1 --nodes 3 --placement '%s'",
             s_model, path);
    char want[1024];
    snprintf(want, sizeof want, "%s:3: unknown node 7 (nodes are 1..3)", path);
    s_expect_cli_error(args, 1, want);
    snprintf(args, sizeof args, "--model '%s' --node-id 1 --nodes 2 --placement '%s'",
             s_model, path);
    snprintf(want, sizeof want, "%s:1: the placement is for 3 nodes but the cluster has 2",
             path);
    s_expect_cli_error(args, 1, want);
    snprintf(args, sizeof args, "--model '%s' --node-id 1 --nodes 3 --placement '%s/nope'",
             s_model, s_tmp);
    s_expect_cli_error(args, 1, "nope");
    snprintf(args, sizeof args, "--model '%s' --node-id 1 --nodes 3 --bind 'bogus://x'",
             s_model);
    s_expect_cli_error(args, 1, "cannot bind bogus://x");

    char *out = NULL, *err_text = NULL;
    assert_int_equal(testutil_run_program(NULL, s_bin, "--help", &out, &err_text), 0);
    assert_non_null(out);
    assert_non_null(strstr(out, "usage: moe-expert"));
    free(out);
    free(err_text);
}

/* The server as a library, in this process: its constructor's checks and
 * failure paths (which must leak nothing; LeakSanitizer checks). */
static void test_server_in_process(void **state)
{
    (void)state;
    err_t err = {0};
    expert_server_opts_t o = {.model_dir = s_model, .placement = s_place, .node_id = 2,
                              .bind = "tcp://127.0.0.1:*", .max_rows = 16};
    expert_server_t *srv = expert_server_new(&o, &err);
    if (!srv)
        fail_msg("%s", err.msg);
    assert_non_null(strstr(expert_server_endpoint(srv), "tcp://127.0.0.1:"));
    assert_int_equal(expert_server_n_hosted(srv), 6);
    volatile sig_atomic_t stop = 1;
    assert_int_equal(expert_server_run(srv, &stop, &err), 0); /* returns at once */

    /* The port is taken while srv lives. */
    expert_server_opts_t taken = o;
    taken.bind = expert_server_endpoint(srv);
    assert_null(expert_server_new(&taken, &err));
    assert_int_equal(errno, EADDRINUSE);
    assert_non_null(strstr(err.msg, taken.bind));
    expert_server_destroy(&srv);
    assert_null(srv);
    expert_server_destroy(&srv); /* safe twice */
    expert_server_destroy(NULL);

    expert_server_opts_t bad = o;
    bad.node_id = 4;
    assert_null(expert_server_new(&bad, &err));
    assert_int_equal(errno, EINVAL);
    assert_non_null(strstr(err.msg, "node id 4"));
    bad = o;
    bad.max_rows = 0;
    assert_null(expert_server_new(&bad, &err));
    assert_int_equal(errno, EINVAL);
    placement_t *other = placement_default(3, 8, 3, 1, &err); /* a 3-layer model's */
    assert_non_null(other);
    bad = o;
    bad.placement = other;
    assert_null(expert_server_new(&bad, &err));
    assert_int_equal(errno, EINVAL);
    assert_non_null(strstr(err.msg, "the placement is for 3 layers x 8 experts"));
    placement_destroy(&other);
    bad = o;
    bad.bind = "bogus://x";
    assert_null(expert_server_new(&bad, &err));
    assert_non_null(strstr(err.msg, "cannot bind bogus://x"));
}

/* A model whose first layer is dense (deepseek_v3-A: layer 0 has no experts):
 * the placement still covers every layer, but the node announces and loads
 * only the MoE layers' experts, and a request for layer 0 is refused. */
static void test_server_skips_dense_layers(void **state)
{
    (void)state;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/deepseek_v3-A", fixture_root());
    err_t err = {0};
    placement_t *p = placement_default(3, 16, 2, 1, &err);
    assert_non_null(p);
    assert_int_equal(placement_node_count(p, 1), 3 * 8);
    expert_server_opts_t o = {.model_dir = dir, .placement = p, .node_id = 1,
                              .bind = "tcp://127.0.0.1:*", .max_rows = 16};
    expert_server_t *srv = expert_server_new(&o, &err);
    if (!srv)
        fail_msg("%s", err.msg);
    assert_int_equal(expert_server_n_hosted(srv), 2 * 8);
    expert_server_destroy(&srv);
    placement_destroy(&p);
}

/* Fails the 1st, 2nd, ... allocation of expert_server_new until it succeeds. */
static void test_server_out_of_memory(void **state)
{
    (void)state;
    expert_server_opts_t o = {.model_dir = s_model, .placement = s_place, .node_id = 2,
                              .bind = "tcp://127.0.0.1:*", .max_rows = 16};
    int failures = 0;
    for (long n = 1; n < 10000; n++) {
        err_t err = {0};
        mem_fail_after(n);
        expert_server_t *srv = expert_server_new(&o, &err);
        int saved = errno;
        mem_fail_after(-1);
        if (srv) {
            expert_server_destroy(&srv);
            break;
        }
        if (saved != ENOMEM || strlen(err.msg) == 0)
            fail_msg("allocation %ld: errno %d, '%s'", n, saved, err.msg);
        failures++;
    }
    assert_true(failures > 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hello_lists_hosted_experts, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_expert_request_matches_local_experts, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_heartbeat_and_two_peers, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_hostile_messages_get_errors, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_oversized_message_is_dropped, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_exits_cleanly, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_exits_cleanly, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_placement_file_and_replicas, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_bad_command_lines, s_setup, s_teardown),
        cmocka_unit_test(test_server_in_process),
        cmocka_unit_test(test_server_skips_dense_layers),
        cmocka_unit_test(test_server_out_of_memory),
    };
    return cmocka_run_group_tests(tests, s_setup_group, s_teardown_group);
}
