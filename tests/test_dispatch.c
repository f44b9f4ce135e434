/* test_dispatch: the expert dispatch and its peers in one process.
 *
 * Each fake expert node is a thread with a ROUTER bound to inproc://, speaking
 * the real data plane through the wire API: it answers HELLO with its hosted
 * experts, HEARTBEAT, and EXPERT_REQUEST with partial sums computed as
 * sum over its assignments of weight * MULT[expert] * row, in the request's
 * order. The test can tell a node to drop expert requests (never answer), to
 * delay its replies, or to die (close its socket). Counters and switches are
 * atomics the node thread reads and writes; every loop is bounded in count
 * and time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "coordinator/dispatch.h"
#include "coordinator/peer.h"
#include "core/timer.h"
#include "proto/wire.h"

enum { LAYERS = 2, EXPERTS = 4, HIDDEN = 8, MAX_ROWS = 8, TOP_K = 3, MAX_NODES = 3 };
enum { REPLY_TIMEOUT_MS = 300, HELLO_TIMEOUT_MS = 2000, NODE_LIFETIME_S = 60 };
static const char MODEL_ID[] = "fake-model";

typedef enum node_mode { NODE_SERVE, NODE_DROP, NODE_DIE } node_mode_t;

typedef struct fake_node {
    int node_id;
    char endpoint[64];
    void *router;                  /* the node thread's once started */
    pthread_t thread;
    int n_hosted;
    int32_t hosted_layer[LAYERS * EXPERTS], hosted_expert[LAYERS * EXPERTS];
    const float *mult;             /* (EXPERTS) expert e's output is mult[e] * row */
    atomic_int mode;               /* node_mode_t */
    atomic_int delay_ms;           /* before each expert reply */
    atomic_int stop;
    atomic_int n_requests;         /* EXPERT_REQUESTs received */
    atomic_int hits[EXPERTS];      /* assignments received per expert */
    atomic_int order;              /* when it last replied (a shared counter's value) */
    bool joined;                   /* the thread has ended and been joined */
} fake_node_t;

static atomic_int s_reply_clock; /* orders the replies of all nodes */

static void s_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void s_answer_experts(fake_node_t *n, const wire_peer_t *from, const wire_data_t *msg)
{
    atomic_fetch_add(&n->n_requests, 1);
    for (int i = 0; i < msg->n_assign; i++)
        atomic_fetch_add(&n->hits[msg->assign[i].expert], 1);
    if (atomic_load(&n->mode) == NODE_DROP)
        return;
    for (int waited = 0; waited < atomic_load(&n->delay_ms) && !atomic_load(&n->stop);
         waited += 5)
        s_sleep_ms(5);
    /* Partial sums per row, or with per_assignment one term per assignment
     * (docs/PROTOCOL.md), as a real node does. */
    float out[MAX_ROWS * TOP_K * HIDDEN] = {0};
    for (int i = 0; i < msg->n_assign; i++) {
        const moe_assign_t *a = &msg->assign[i];
        const int at = msg->per_assignment ? i : a->row;
        for (int j = 0; j < HIDDEN; j++)
            out[at * HIDDEN + j] += a->weight * (n->mult[a->expert] *
                                                 msg->rows[a->row * HIDDEN + j]);
    }
    wire_data_t reply = {.type = WIRE_EXPERT_REPLY, .request_id = msg->request_id,
                         .layer = msg->layer,
                         .n_rows = msg->per_assignment ? msg->n_assign : msg->n_rows,
                         .hidden = HIDDEN, .rows = out};
    atomic_store(&n->order, atomic_fetch_add(&s_reply_clock, 1));
    wire_data_send(n->router, from, &reply, NULL);
}

static void *s_node_main(void *arg)
{
    fake_node_t *n = arg;
    wire_limits_t lim = {.hidden = HIDDEN, .max_rows = MAX_ROWS,
                         .max_assign = MAX_ROWS * TOP_K, .n_layers = LAYERS,
                         .n_experts = EXPERTS};
    wire_inbox_t *inbox = wire_inbox_new(&lim, NULL);
    const double end = timer_now() + NODE_LIFETIME_S;
    while (inbox && !atomic_load(&n->stop) && atomic_load(&n->mode) != NODE_DIE &&
           timer_now() < end) {
        zmq_pollitem_t item = {.socket = n->router, .events = ZMQ_POLLIN};
        if (zmq_poll(&item, 1, 10) <= 0)
            continue;
        wire_peer_t from;
        wire_data_t msg;
        wire_data_error_t code;
        if (wire_data_recv(inbox, n->router, true, &from, &msg, &code, NULL) < 0)
            continue;
        if (msg.type == WIRE_HELLO) {
            wire_data_t reply = {.type = WIRE_HELLO_REPLY, .request_id = msg.request_id,
                                 .node_id = n->node_id, .model_id = MODEL_ID,
                                 .n_hosted = n->n_hosted, .hosted_layer = n->hosted_layer,
                                 .hosted_expert = n->hosted_expert};
            wire_data_send(n->router, &from, &reply, NULL);
        } else if (msg.type == WIRE_HEARTBEAT) {
            wire_data_t reply = {.type = WIRE_HEARTBEAT_REPLY, .request_id = msg.request_id};
            wire_data_send(n->router, &from, &reply, NULL);
        } else if (msg.type == WIRE_EXPERT_REQUEST) {
            s_answer_experts(n, &from, &msg);
        }
    }
    zmq_close(n->router); /* a dying node's links drop */
    n->router = NULL;
    wire_inbox_destroy(&inbox);
    return NULL;
}

/* A cluster: nodes, their peers and a dispatch over the given routes. */
typedef struct cluster {
    void *ctx;
    int n_nodes;
    fake_node_t nodes[MAX_NODES];
    peer_t *peers[MAX_NODES];
    dispatch_t *dispatch;
    config_t cfg;
    float u[MAX_ROWS * HIDDEN];      /* the call's rows */
    float out[MAX_ROWS * HIDDEN];
} cluster_t;

static int s_seq; /* unique inproc names */

/* Starts n_nodes nodes hosting what routes give them, connects and checks
 * each (HELLO), and makes the dispatch. */
static void s_up(cluster_t *c, int n_nodes, const dispatch_route_t *routes, const float *mult)
{
    memset(c, 0, sizeof *c);
    c->cfg = (config_t){.n_layers = LAYERS, .n_experts = EXPERTS, .hidden_size = HIDDEN,
                        .n_experts_per_tok = TOP_K};
    c->ctx = zmq_ctx_new();
    assert_non_null(c->ctx);
    c->n_nodes = n_nodes;
    int linger = 0;
    for (int p = 0; p < n_nodes; p++) {
        fake_node_t *n = &c->nodes[p];
        n->node_id = p + 1;
        n->mult = mult;
        snprintf(n->endpoint, sizeof n->endpoint, "inproc://fake-node-%d", ++s_seq);
        for (int r = 0; r < LAYERS * EXPERTS; r++)
            for (int i = 0; i < routes[r].n; i++)
                if (routes[r].peer[i] == p) {
                    n->hosted_layer[n->n_hosted] = r / EXPERTS;
                    n->hosted_expert[n->n_hosted++] = r % EXPERTS;
                }
        n->router = zmq_socket(c->ctx, ZMQ_ROUTER);
        assert_non_null(n->router);
        zmq_setsockopt(n->router, ZMQ_LINGER, &linger, sizeof linger);
        assert_int_equal(zmq_bind(n->router, n->endpoint), 0);
        /* From here the ROUTER is the node thread's. */
        assert_int_equal(pthread_create(&n->thread, NULL, s_node_main, n), 0);
    }
    wire_limits_t lim = {.hidden = HIDDEN, .max_rows = MAX_ROWS,
                         .max_assign = MAX_ROWS * TOP_K, .n_layers = LAYERS,
                         .n_experts = EXPERTS};
    wire_inbox_t *inbox = wire_inbox_new(&lim, NULL);
    assert_non_null(inbox);
    err_t err = {0};
    for (int p = 0; p < n_nodes; p++) {
        fake_node_t *n = &c->nodes[p];
        c->peers[p] = peer_new(c->ctx, n->node_id, n->endpoint, &lim, NULL, NULL, &err);
        assert_non_null(c->peers[p]);
        if (peer_hello(c->peers[p], inbox, MODEL_ID, n->hosted_layer, n->hosted_expert,
                       n->n_hosted, HELLO_TIMEOUT_MS, &err) < 0)
            fail_msg("%s", err.msg);
        assert_true(peer_is_up(c->peers[p]));
    }
    wire_inbox_destroy(&inbox);
    c->dispatch = dispatch_new(c->peers, n_nodes, n_nodes, &c->cfg, routes, MAX_ROWS,
                               REPLY_TIMEOUT_MS, &err);
    assert_non_null(c->dispatch);
    for (int i = 0; i < MAX_ROWS * HIDDEN; i++)
        c->u[i] = (float)(i % 13) * 0.25f - 1.0f;
}

static void s_down(cluster_t *c)
{
    dispatch_destroy(&c->dispatch);
    for (int p = 0; p < c->n_nodes; p++) {
        atomic_store(&c->nodes[p].stop, 1);
        if (!c->nodes[p].joined)
            pthread_join(c->nodes[p].thread, NULL);
        peer_destroy(&c->peers[p]);
    }
    zmq_ctx_term(c->ctx);
}

/* One dispatch call (start, then finish) of layer over n_rows rows. */
static int s_call(cluster_t *c, int layer, int n_rows, const moe_assign_t *assign,
                  int n_assign, err_t *err)
{
    return dispatch_run(c->dispatch, layer, c->u, n_rows, assign, n_assign, c->out, err);
}

/* The output the dispatch must give when node_of[i] computed assignment i.
 * With more than two experts per token (TOP_K here is 3) the coordinator asks
 * for one term per assignment and adds each row's terms onto zeros in expert
 * order, whatever node computed them (dispatch.h): node_of does not matter.
 * (With two, each node's partial sums in assignment order are added node by
 * node in index order: the second loop, kept for TOP_K <= 2.) */
static void s_expect_from(const cluster_t *c, int row0, const moe_assign_t *assign,
                          int n_assign, const int *node_of, const float *mult, int n_rows,
                          float *want)
{
    const float *u = c->u + (size_t)row0 * HIDDEN; /* the call's rows */
    memset(want, 0, (size_t)n_rows * HIDDEN * sizeof(float));
    if (TOP_K > 2) {
        for (int e = 0; e < EXPERTS; e++)
            for (int i = 0; i < n_assign; i++) {
                const moe_assign_t *a = &assign[i];
                if (a->expert != e)
                    continue;
                for (int j = 0; j < HIDDEN; j++)
                    want[a->row * HIDDEN + j] += a->weight * (mult[a->expert] *
                                                              u[a->row * HIDDEN + j]);
            }
        return;
    }
    for (int p = 0; p < c->n_nodes; p++) {
        float partial[MAX_ROWS * HIDDEN] = {0};
        bool touched[MAX_ROWS] = {0};
        for (int i = 0; i < n_assign; i++) {
            if (node_of[i] != p)
                continue;
            const moe_assign_t *a = &assign[i];
            touched[a->row] = true;
            for (int j = 0; j < HIDDEN; j++)
                partial[a->row * HIDDEN + j] += a->weight * (mult[a->expert] *
                                                             u[a->row * HIDDEN + j]);
        }
        for (int r = 0; r < n_rows; r++)
            for (int j = 0; touched[r] && j < HIDDEN; j++)
                want[r * HIDDEN + j] += partial[r * HIDDEN + j];
    }
}

/* The same for a call whose rows start at row 0 of u. */
static void s_expect(const cluster_t *c, const moe_assign_t *assign, int n_assign,
                     const int *node_of, const float *mult, int n_rows, float *want)
{
    s_expect_from(c, 0, assign, n_assign, node_of, mult, n_rows, want);
}

static const float MULT[EXPERTS] = {0.5f, -1.25f, 2.0f, 0.75f};

/* Every (layer, expert) on both nodes, `first` preferred. */
static void s_routes_on_both(dispatch_route_t *routes, int first, int second)
{
    for (int r = 0; r < LAYERS * EXPERTS; r++)
        routes[r] = (dispatch_route_t){.n = 2, .peer = {first, second}};
}

/* Four rows, each with three of the four experts. */
static const moe_assign_t ASSIGN[] = {
    {0, 0, 0.5f}, {0, 1, 0.3f}, {0, 2, 0.2f},
    {1, 1, 0.6f}, {1, 3, 0.3f}, {1, 0, 0.1f},
    {2, 2, 0.7f}, {2, 3, 0.2f}, {2, 1, 0.1f},
    {3, 3, 0.4f}, {3, 0, 0.4f}, {3, 2, 0.2f},
};
enum { N_ASSIGN = sizeof ASSIGN / sizeof ASSIGN[0] };

/* The call's output is ASSIGN's over 4 rows, every assignment computed on node p. */
static void s_assert_all_on(const cluster_t *c, int p)
{
    int node_of[N_ASSIGN];
    for (int i = 0; i < N_ASSIGN; i++)
        node_of[i] = p;
    float want[MAX_ROWS * HIDDEN];
    s_expect(c, ASSIGN, N_ASSIGN, node_of, MULT, 4, want);
    assert_memory_equal(c->out, want, 4 * HIDDEN * sizeof(float));
}

/* Every expert on one node (expert e on node e % 3): each node gets one
 * request with its experts' assignments only, the output is the node-order
 * sum, and the counters add up. */
static void test_placement_and_counters(void **state)
{
    (void)state;
    dispatch_route_t routes[LAYERS * EXPERTS];
    for (int r = 0; r < LAYERS * EXPERTS; r++)
        routes[r] = (dispatch_route_t){.n = 1, .peer = {(r % EXPERTS) % 3}};
    cluster_t c;
    s_up(&c, 3, routes, MULT);
    err_t err = {0};
    assert_int_equal(s_call(&c, 1, 4, ASSIGN, N_ASSIGN, &err), 0);
    int node_of[N_ASSIGN];
    for (int i = 0; i < N_ASSIGN; i++)
        node_of[i] = ASSIGN[i].expert % 3;
    float want[MAX_ROWS * HIDDEN];
    s_expect(&c, ASSIGN, N_ASSIGN, node_of, MULT, 4, want);
    assert_memory_equal(c.out, want, 4 * HIDDEN * sizeof(float));
    for (int p = 0; p < 3; p++) {
        assert_int_equal(atomic_load(&c.nodes[p].n_requests), 1);
        for (int e = 0; e < EXPERTS; e++)
            assert_int_equal(atomic_load(&c.nodes[p].hits[e]) > 0, e % 3 == p);
        assert_int_equal(peer_batches(c.peers[p]), 1);
        assert_true(peer_rtt_last_ms(c.peers[p]) > 0);
    }
    const uint64_t *tokens = dispatch_expert_tokens(c.dispatch);
    for (int e = 0; e < EXPERTS; e++) {
        assert_int_equal(tokens[0 * EXPERTS + e], 0);
        assert_int_equal(tokens[1 * EXPERTS + e], 3); /* each expert serves 3 rows */
    }
    const dispatch_stats_t *st = dispatch_stats(c.dispatch);
    assert_int_equal(st->calls, 1);
    assert_true(st->bytes_sent > 4 * HIDDEN * sizeof(float));
    assert_true(st->bytes_received > 4 * HIDDEN * sizeof(float));
    assert_int_equal(st->failovers, 0);
    assert_true(st->seconds_total > 0);
    /* Too many rows for the dispatch: refused before anything is sent. */
    assert_int_equal(dispatch_start(c.dispatch, 0, 0, c.u, 0, MAX_ROWS + 1, ASSIGN,
                                    N_ASSIGN, c.out, &err), -1);
    assert_int_equal(errno, E2BIG);
    assert_int_equal(dispatch_start(c.dispatch, 0, 0, c.u, 4, MAX_ROWS - 3, ASSIGN,
                                    N_ASSIGN, c.out, &err), -1);
    assert_int_equal(errno, E2BIG);
    assert_int_equal(dispatch_finish(c.dispatch, 0, 0, c.out, &err), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(dispatch_start(c.dispatch, 2, 0, c.u, 0, 4, ASSIGN, N_ASSIGN, c.out,
                                    &err), -1);
    assert_int_equal(errno, EINVAL);
    s_down(&c);
}

/* Every expert on both nodes: call by call the work rotates over the
 * replicas, all of a call on one node, with the same result each time. */
static void test_replica_rotation(void **state)
{
    (void)state;
    dispatch_route_t routes[LAYERS * EXPERTS];
    s_routes_on_both(routes, 0, 1);
    cluster_t c;
    s_up(&c, 2, routes, MULT);
    err_t err = {0};
    float first[4 * HIDDEN];
    for (int call = 1; call <= 4; call++) {
        assert_int_equal(s_call(&c, 0, 4, ASSIGN, N_ASSIGN, &err), 0);
        /* Call k uses replica k % 2: node 2, node 1, node 2, node 1. */
        assert_int_equal(atomic_load(&c.nodes[1].n_requests), (call + 1) / 2);
        assert_int_equal(atomic_load(&c.nodes[0].n_requests), call / 2);
        if (call == 1)
            memcpy(first, c.out, sizeof first);
        else
            assert_memory_equal(c.out, first, sizeof first);
    }
    assert_int_equal(dispatch_stats(c.dispatch)->calls, 4);
    s_down(&c);
}

/* A node that takes the request and never answers is given up after the
 * reply timeout and its work is sent to the other replica within the same
 * call: the same output, one failover, the node down. */
static void test_resend_on_silent_node(void **state)
{
    (void)state;
    dispatch_route_t routes[LAYERS * EXPERTS];
    s_routes_on_both(routes, 0, 1);
    cluster_t c;
    s_up(&c, 2, routes, MULT);
    atomic_store(&c.nodes[1].mode, NODE_DROP); /* the first call picks node 2 */
    err_t err = {0};
    const double t0 = timer_now();
    assert_int_equal(s_call(&c, 0, 4, ASSIGN, N_ASSIGN, &err), 0);
    const double took = timer_now() - t0;
    assert_true(took >= REPLY_TIMEOUT_MS / 1000.0 && took < 5.0);
    s_assert_all_on(&c, 0);
    assert_int_equal(atomic_load(&c.nodes[1].n_requests), 1);
    assert_int_equal(atomic_load(&c.nodes[0].n_requests), 1);
    assert_false(peer_is_up(c.peers[1]));
    assert_int_equal(dispatch_stats(c.dispatch)->failovers, 1);
    /* The next call goes to the live node only, at once. */
    assert_int_equal(s_call(&c, 0, 4, ASSIGN, N_ASSIGN, &err), 0);
    assert_int_equal(atomic_load(&c.nodes[1].n_requests), 1);
    assert_int_equal(atomic_load(&c.nodes[0].n_requests), 2);
    /* It answers again: with heartbeats on, it rejoins between calls. */
    atomic_store(&c.nodes[1].mode, NODE_SERVE);
    dispatch_set_health(c.dispatch, 20, 3, NULL);
    for (int i = 0; i < 200 && !peer_is_up(c.peers[1]); i++) {
        dispatch_check_links(c.dispatch);
        s_sleep_ms(10);
    }
    assert_true(peer_is_up(c.peers[1]));
    s_down(&c);
}

/* A node that dies (closes its socket) before the call: its share still
 * reaches the other replica, with the same output. */
static void test_resend_on_dead_node(void **state)
{
    (void)state;
    dispatch_route_t routes[LAYERS * EXPERTS];
    s_routes_on_both(routes, 1, 0);
    cluster_t c;
    s_up(&c, 2, routes, MULT);
    atomic_store(&c.nodes[0].mode, NODE_DIE); /* the first call picks node 1 */
    pthread_join(c.nodes[0].thread, NULL);
    c.nodes[0].joined = true;
    err_t err = {0};
    assert_int_equal(s_call(&c, 0, 4, ASSIGN, N_ASSIGN, &err), 0);
    s_assert_all_on(&c, 1);
    assert_false(peer_is_up(c.peers[0]));
    assert_int_equal(atomic_load(&c.nodes[1].n_requests), 1);
    s_down(&c);
}

/* Two nodes: expert 3 only on node 2, which is silent; the rest on node 1. */
static void s_up_expert3_silent(cluster_t *c)
{
    dispatch_route_t routes[LAYERS * EXPERTS];
    for (int r = 0; r < LAYERS * EXPERTS; r++)
        routes[r] = (dispatch_route_t){.n = 1, .peer = {(r % EXPERTS) == 3 ? 1 : 0}};
    s_up(c, 2, routes, MULT);
    atomic_store(&c->nodes[1].mode, NODE_DROP);
}

/* An expert whose only node is silent: the call fails (EHOSTUNREACH) naming
 * it, and exactly the rows that needed it are marked lost. */
static void test_no_live_replica(void **state)
{
    (void)state;
    cluster_t c;
    s_up_expert3_silent(&c);
    err_t err = {0};
    assert_int_equal(s_call(&c, 0, 4, ASSIGN, N_ASSIGN, &err), -1);
    assert_int_equal(errno, EHOSTUNREACH);
    assert_non_null(strstr(err.msg, "expert 3 of layer 0"));
    /* Rows 1, 2 and 3 have expert 3; row 0 does not. */
    assert_false(dispatch_row_lost(c.dispatch, 0));
    for (int r = 1; r < 4; r++)
        assert_true(dispatch_row_lost(c.dispatch, r));
    assert_false(dispatch_row_lost(c.dispatch, MAX_ROWS)); /* out of range */
    /* Without those rows the call goes through. */
    const moe_assign_t row0[] = {ASSIGN[0], ASSIGN[1], ASSIGN[2]};
    assert_int_equal(s_call(&c, 0, 1, row0, 3, &err), 0);
    s_down(&c);
}

/* Starts the two micro-batches of a step: ASSIGN over rows 0..3 (mb 0) and
 * over rows 4..7 (mb 1) of layer 0, both in flight together. */
static void s_start_both(cluster_t *c)
{
    err_t err = {0};
    if (dispatch_start(c->dispatch, 0, 0, c->u, 0, 4, ASSIGN, N_ASSIGN, c->out, &err) < 0 ||
        dispatch_start(c->dispatch, 1, 0, c->u + 4 * HIDDEN, 4, 4, ASSIGN, N_ASSIGN,
                       c->out + 4 * HIDDEN, &err) < 0)
        fail_msg("%s", err.msg);
}

/* Two calls in flight (the forward pass's micro-batches): each is finished
 * with its own output, whichever reply comes first and whichever finish
 * waits; a call's rows may not overlap the other's. The first call goes to
 * node 2 (rotation), which drops it: while finish(mb 0) waits for it, mb 1's
 * reply from node 1 arrives and is kept, and after the reply timeout mb 0's
 * work is sent again to node 1 within its call. */
static void test_two_calls_in_flight(void **state)
{
    (void)state;
    dispatch_route_t routes[LAYERS * EXPERTS];
    s_routes_on_both(routes, 0, 1);
    cluster_t c;
    s_up(&c, 2, routes, MULT);
    err_t err = {0};
    /* Both calls answered: finished in the other order than started. */
    s_start_both(&c);
    assert_int_equal(dispatch_start(c.dispatch, 0, 0, c.u, 2, 2, ASSIGN, 0, c.out, &err), -1);
    assert_int_equal(errno, EINVAL); /* mb 0 is in flight */
    assert_int_equal(dispatch_finish(c.dispatch, 1, 0, c.out + 4 * HIDDEN, &err), 0);
    assert_int_equal(dispatch_finish(c.dispatch, 0, 0, c.out, &err), 0);
    float want[MAX_ROWS * HIDDEN];
    int node_of[N_ASSIGN] = {0};
    s_expect_from(&c, 0, ASSIGN, N_ASSIGN, node_of, MULT, 4, want);
    s_expect_from(&c, 4, ASSIGN, N_ASSIGN, node_of, MULT, 4, want + 4 * HIDDEN);
    assert_memory_equal(c.out, want, sizeof want);
    assert_int_equal(dispatch_stats(c.dispatch)->calls, 2);
    /* Node 2 silent while both are in flight. */
    memset(c.out, 0, sizeof c.out);
    atomic_store(&c.nodes[1].mode, NODE_DROP);
    s_start_both(&c); /* mb 0 to node 2, mb 1 to node 1 */
    assert_int_equal(dispatch_finish(c.dispatch, 0, 0, c.out, &err), 0);
    assert_false(peer_is_up(c.peers[1]));
    assert_int_equal(dispatch_finish(c.dispatch, 1, 0, c.out + 4 * HIDDEN, &err), 0);
    assert_memory_equal(c.out, want, sizeof want);
    assert_int_equal(dispatch_stats(c.dispatch)->failovers, 1);
    assert_int_equal(dispatch_stats(c.dispatch)->calls, 4);
    s_down(&c);
}

/* An expert whose only node goes silent while two calls are in flight: both
 * fail with EHOSTUNREACH (the second at once, from what the first's wait
 * saw), and exactly the step rows that needed it, in both, are lost. */
static void test_two_calls_lose_rows(void **state)
{
    (void)state;
    cluster_t c;
    s_up_expert3_silent(&c);
    err_t err = {0};
    s_start_both(&c);
    assert_int_equal(dispatch_finish(c.dispatch, 0, 0, c.out, &err), -1);
    assert_int_equal(errno, EHOSTUNREACH);
    const double t0 = timer_now();
    assert_int_equal(dispatch_finish(c.dispatch, 1, 0, c.out + 4 * HIDDEN, &err), -1);
    assert_int_equal(errno, EHOSTUNREACH);
    assert_non_null(strstr(err.msg, "expert 3 of layer 0"));
    assert_true(timer_now() - t0 < REPLY_TIMEOUT_MS / 1000.0);
    /* Rows 1, 2, 3 of each call have expert 3; rows 0 and 4 do not. */
    for (int r = 0; r < 8; r++)
        assert_int_equal(dispatch_row_lost(c.dispatch, r), r % 4 != 0);
    /* The next step forgets them, and its calls go through without expert 3. */
    const moe_assign_t row0[] = {ASSIGN[0], ASSIGN[1], ASSIGN[2]};
    assert_int_equal(s_call(&c, 0, 1, row0, 3, &err), 0);
    for (int r = 0; r < 8; r++)
        assert_false(dispatch_row_lost(c.dispatch, r));
    s_down(&c);
}

/* Partial sums are added in node order, not in the order replies arrive:
 * with these outputs the two orders differ in float arithmetic. */
static void test_combine_in_node_order(void **state)
{
    (void)state;
    static const float mult[EXPERTS] = {1.0f, 1e8f, -1e8f, 0.0f};
    dispatch_route_t routes[LAYERS * EXPERTS];
    for (int r = 0; r < LAYERS * EXPERTS; r++)
        routes[r] = (dispatch_route_t){.n = 1, .peer = {(r % EXPERTS) % 3}};
    cluster_t c;
    s_up(&c, 3, routes, mult);
    for (int i = 0; i < HIDDEN; i++)
        c.u[i] = 1.0f;
    /* Node 3 answers first, node 1 last. */
    atomic_store(&c.nodes[0].delay_ms, 150);
    atomic_store(&c.nodes[1].delay_ms, 75);
    const moe_assign_t assign[] = {{0, 0, 1.0f}, {0, 1, 1.0f}, {0, 2, 1.0f}};
    err_t err = {0};
    assert_int_equal(s_call(&c, 0, 1, assign, 3, &err), 0);
    assert_true(atomic_load(&c.nodes[2].order) < atomic_load(&c.nodes[1].order));
    assert_true(atomic_load(&c.nodes[1].order) < atomic_load(&c.nodes[0].order));
    volatile float in_node_order = ((0.0f + 1.0f) + 1e8f) + -1e8f;
    volatile float in_arrival_order = ((0.0f + -1e8f) + 1e8f) + 1.0f;
    assert_true(in_node_order != in_arrival_order); /* the test can tell them apart */
    for (int j = 0; j < HIDDEN; j++)
        assert_true(c.out[j] == in_node_order);
    s_down(&c);
}

/* With more than two experts per token the sum is in expert order whatever
 * node computed which expert: two placements whose node order differs from
 * the expert order give the same bits, moe-run's order (issue 16). */
static void test_combine_independent_of_placement(void **state)
{
    (void)state;
    static const float mult[EXPERTS] = {1e8f, 1.0f, -1e8f, 0.0f};
    const moe_assign_t assign[] = {{0, 0, 1.0f}, {0, 1, 1.0f}, {0, 2, 1.0f}};
    volatile float in_expert_order = ((0.0f + 1e8f) + 1.0f) + -1e8f;
    /* The first placement's node order: expert 2, then 0, then 1. */
    volatile float in_node_order = ((0.0f + -1e8f) + 1e8f) + 1.0f;
    assert_true(in_expert_order != in_node_order);
    const int placements[2][EXPERTS] = {{1, 2, 0, 0}, {2, 0, 1, 1}}; /* expert -> node */
    for (int k = 0; k < 2; k++) {
        dispatch_route_t routes[LAYERS * EXPERTS];
        for (int r = 0; r < LAYERS * EXPERTS; r++)
            routes[r] = (dispatch_route_t){.n = 1, .peer = {placements[k][r % EXPERTS]}};
        cluster_t c;
        s_up(&c, 3, routes, mult);
        for (int i = 0; i < HIDDEN; i++)
            c.u[i] = 1.0f;
        err_t err = {0};
        assert_int_equal(s_call(&c, 0, 1, assign, 3, &err), 0);
        for (int j = 0; j < HIDDEN; j++)
            assert_true(c.out[j] == in_expert_order);
        s_down(&c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_placement_and_counters),
        cmocka_unit_test(test_replica_rotation),
        cmocka_unit_test(test_resend_on_silent_node),
        cmocka_unit_test(test_resend_on_dead_node),
        cmocka_unit_test(test_no_live_replica),
        cmocka_unit_test(test_two_calls_in_flight),
        cmocka_unit_test(test_two_calls_lose_rows),
        cmocka_unit_test(test_combine_in_node_order),
        cmocka_unit_test(test_combine_independent_of_placement),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
