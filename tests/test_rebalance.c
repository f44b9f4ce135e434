/* test_rebalance: the live placement of issue 16 with real processes
 * (cluster/local.sh, real sockets), on the mixtral-A fixture:
 *   - the load is measured: STATUS (and moe-client placement --json) gives
 *     each expert's rows per second and each node's share and busy time,
 *     consistent with each other and with the tokens routed;
 *   - a skewed placement file (the hot experts on node 1) under sixteen
 *     concurrent generations, rebalanced with 2 redundant copies in the
 *     middle of them: the heaviest node then carries at most 1.15x the mean,
 *     no request failed, every output equals moe-run's;
 *   - a model with four experts per token (olmoe-A): its logits are bit for
 *     bit moe-run's before and after a rebalance (the combine does not
 *     depend on the placement);
 *   - a node added under sixteen concurrent generations (local.sh add-node:
 *     started empty, taken in, given its share by a rebalance): none fails,
 *     outputs unchanged, the new node then serves; bad input (an endpoint
 *     that is not one, a node already in, an unknown node to drain) gets
 *     one clear error each;
 *   - node drain under load: the node ends hosting nothing, the generations
 *     are unharmed, and the node can then be stopped with nothing failing;
 *   - a node killed in the middle of a move (its load slowed down with
 *     --place-delay-ms): the move fails with a clear error, the old placement
 *     serves on, the generations are unharmed;
 *   - --rebalance-every: the coordinator rebalances a skewed placement by
 *     itself once the imbalance passes the threshold, and not again while it
 *     stays below it;
 *   - memory budgets too small for the plan: refused with a clear error,
 *     placement unchanged; a plan that fits goes through.
 * Every wait is bounded in count and time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "client/client.h"
#include "core/mem.h"
#include "core/timer.h"
#include "proto/client_rpc.h"
#include "tests/crosscheck.h"
#include "tests/fixture.h"
#include "tests/generations.h"
#include "tests/localcluster.h"
#include "tests/testutil.h"

enum {
    N_GEN = 16,            /* concurrent generations */
    MAX_PROMPT = 6,        /* prompt g has 1 + g % 6 ids (crosscheck_prompts) */
    MAX_TOKENS = 60,
};
#define CLUSTER_OPTS "--reply-timeout-ms 1000 --heartbeat-ms 200 --heartbeat-misses 3"

static char s_bin[512];
static char s_root[512];
static char *s_tmp;
static char s_model[600];
static char s_want[N_GEN][2048];  /* moe-run's output for each prompt */
static int32_t s_prompt[N_GEN][MAX_PROMPT];
static int s_n_prompt[N_GEN];

/* The cluster under test and a client socket for the generations. */
typedef struct rig {
    char run_dir[700];
    char *endpoint;
    localcluster_conn_t conn;
    generations_t gens;
} rig_t;

/* Sixteen prompts and what moe-run prints for each. */
static int s_setup(void **state)
{
    snprintf(s_bin, sizeof s_bin, "%s", testutil_env("MOE_BIN", "build/bin"));
    if (!getcwd(s_root, sizeof s_root))
        return -1;
    s_tmp = testutil_mkdtemp("test_rebalance");
    if (!s_tmp)
        return -1;
    snprintf(s_model, sizeof s_model, "%s/mixtral-A", fixture_root());
    fixture_t *fx = fixture_load(s_model);
    if (!fx)
        return -1;
    crosscheck_prompts(s_bin, s_model, fx->vocab, 16, N_GEN, MAX_PROMPT, MAX_TOKENS,
                       &s_prompt[0][0], s_n_prompt, &s_want[0][0], sizeof s_want[0]);
    fixture_destroy(&fx);
    *state = s_tmp;
    return 0;
}

static void s_rig_up(rig_t *rig, const char *name, int nodes, const char *extra)
{
    memset(rig, 0, sizeof *rig);
    snprintf(rig->run_dir, sizeof rig->run_dir, "%s/%s", s_tmp, name);
    char opts[1024];
    snprintf(opts, sizeof opts, "%s %s", CLUSTER_OPTS, extra ? extra : "");
    rig->endpoint = localcluster_up(s_model, nodes, rig->run_dir, opts);
    localcluster_open(&rig->conn, rig->endpoint);
    rig->gens = (generations_t){.n = N_GEN, .max_tokens = MAX_TOKENS,
                                .prompts = &s_prompt[0][0], .stride = MAX_PROMPT,
                                .len = s_n_prompt, .want = &s_want[0][0],
                                .want_size = sizeof s_want[0]};
}

static void s_rig_down(rig_t *rig)
{
    localcluster_close(&rig->conn);
    localcluster_down(rig->run_dir);
    free(rig->endpoint);
}

/* Runs moe-client with args against the rig; its stdout (malloc'd) and
 * exit status. */
static int s_client(const rig_t *rig, const char *args, char **out)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect %s %s 2>&1", s_bin, rig->endpoint,
             args);
    return testutil_run(cmd, out);
}

/* moe-client placement --json, parsed. */
static json_t *s_placement(const rig_t *rig)
{
    char *out = NULL;
    assert_int_equal(s_client(rig, "placement --json", &out), 0);
    json_error_t jerr;
    json_t *root = json_loads(out, 0, &jerr);
    if (!root)
        fail_msg("placement --json is not JSON (%s): %s", jerr.text, out);
    free(out);
    return root;
}

/* Sixteen generations, then the load in STATUS and in placement --json:
 * every expert that took rows has a load and no other has; the nodes' loads
 * add up to the experts'; each node was busy; the imbalance is the heaviest
 * node over the mean. */
static void test_load_measured(void **state)
{
    (void)state;
    rig_t rig;
    s_rig_up(&rig, "load", 2, "--load-half-life-s 30");
    generations_send_all(&rig.gens, &rig.conn);
    generations_pump(&rig.gens, &rig.conn, -1, 60);
    generations_expect_all(&rig.gens, "two nodes");

    wire_reply_t rep;
    localcluster_status(&rig.conn, 1, &rep);
    assert_non_null(rep.expert_load);
    assert_true(rep.load_half_life_s == 30.0);
    const int cells = rep.n_layers * rep.n_experts;
    double experts = 0, nodes = 0;
    for (int i = 0; i < cells; i++) {
        assert_true((rep.expert_tokens[i] > 0) == (rep.expert_load[i] > 0));
        experts += rep.expert_load[i];
    }
    for (int i = 0; i < rep.n_nodes; i++) {
        assert_true(rep.nodes[i].busy_seconds > 0);
        assert_true(rep.nodes[i].busy_ratio > 0 && rep.nodes[i].busy_ratio < 2);
        nodes += rep.nodes[i].load;
    }
    assert_true(experts > 0);
    assert_true(fabs(nodes - experts) < 1e-6 * experts);
    assert_non_null(strstr(rep.metrics, "moe_node_busy_seconds_total"));
    assert_non_null(strstr(rep.metrics, "moe_node_load_rows_per_second"));

    json_t *root = s_placement(&rig);
    json_t *jnodes = json_object_get(root, "nodes");
    assert_int_equal(json_array_size(jnodes), 2);
    double max = 0, sum = 0;
    for (size_t i = 0; i < 2; i++) {
        double l = json_real_value(json_object_get(json_array_get(jnodes, i), "load"));
        assert_true(l > 0);
        max = l > max ? l : max;
        sum += l;
    }
    const double imb = json_real_value(json_object_get(root, "imbalance"));
    assert_true(fabs(imb - max / (sum / 2)) < 1e-9);
    assert_int_equal(json_array_size(json_object_get(root, "expert_load")), rep.n_layers);
    json_decref(root);
    char *text = NULL;
    assert_int_equal(s_client(&rig, "placement", &text), 0);
    assert_non_null(strstr(text, "imbalance: heaviest node"));
    free(text);
    s_rig_down(&rig);
}

/* The hosted pairs of every node as text, "1:0.3,0.4;2:..." (malloc'd). */
static char *s_hosted_text(const rig_t *rig)
{
    localcluster_conn_t conn;
    localcluster_open(&conn, rig->endpoint);
    wire_reply_t rep;
    localcluster_status(&conn, 1, &rep);
    size_t size = 65536, used = 0;
    char *out = malloc(size);
    assert_non_null(out);
    out[0] = '\0';
    for (int i = 0; i < rep.n_nodes; i++) {
        used += (size_t)snprintf(out + used, size - used, "%s%d:", i ? ";" : "",
                                 rep.nodes[i].node_id);
        for (int j = 0; j < rep.nodes[i].n_hosted && used < size - 32; j++)
            used += (size_t)snprintf(out + used, size - used, "%s%d.%d", j ? "," : "",
                                     (int)rep.nodes[i].hosted_layer[j],
                                     (int)rep.nodes[i].hosted_expert[j]);
    }
    localcluster_close(&conn);
    return out;
}

/* The imbalance in STATUS now: heaviest node load / mean of the nodes
 * hosting experts; and the number of experts node `node` hosts. */
static double s_imbalance(const rig_t *rig, int node, int *n_hosted)
{
    localcluster_conn_t conn;
    localcluster_open(&conn, rig->endpoint);
    wire_reply_t rep;
    localcluster_status(&conn, 1, &rep);
    double max = 0, sum = 0;
    int n = 0;
    for (int i = 0; i < rep.n_nodes; i++) {
        if (rep.nodes[i].node_id == node && n_hosted)
            *n_hosted = rep.nodes[i].n_hosted;
        if (rep.nodes[i].n_hosted == 0)
            continue;
        n++;
        sum += rep.nodes[i].load;
        max = fmax(max, rep.nodes[i].load);
    }
    localcluster_close(&conn);
    return n && sum > 0 ? max / (sum / n) : 0;
}

/* Writes the skewed placement: the experts that mixtral-A's router prefers
 * on these prompts (3, 4, 5, 7) all on node 1. */
static void s_skewed_file(char *path, size_t size)
{
    snprintf(path, size, "%s/skewed.txt", s_tmp);
    const char text[] = "nodes 3\n"
                        "node 1 layers * experts 3,4,5,7\n"
                        "node 2 layers * experts 0,1,2\n"
                        "node 3 layers * experts 6\n";
    assert_int_equal(testutil_write_file(path, text, sizeof text - 1), 0);
}

/* Rebalance through the client library; fails the test on an error. */
static void s_rebalance(const rig_t *rig, int redundant, int drain, client_move_t *m)
{
    err_t e = {0};
    client_t *c = client_connect(rig->endpoint, 60000, &e);
    assert_non_null(c);
    if (client_rebalance(c, redundant, drain, m, &e) < 0)
        fail_msg("rebalance (%d redundant, drain %d): %s", redundant, drain, e.msg);
    client_destroy(&c);
}

static void test_rebalance_skewed(void **state)
{
    (void)state;
    char file[700], opts[1024];
    s_skewed_file(file, sizeof file);
    snprintf(opts, sizeof opts, "--placement %s", file);
    rig_t rig;
    s_rig_up(&rig, "skewed", 3, opts);
    /* A first round measures the load. */
    generations_send_all(&rig.gens, &rig.conn);
    generations_pump(&rig.gens, &rig.conn, -1, 60);
    generations_expect_all(&rig.gens, "skewed placement");
    const double before = s_imbalance(&rig, 0, NULL);
    /* The second round is rebalanced in its middle. */
    generations_send_all(&rig.gens, &rig.conn);
    generations_pump(&rig.gens, &rig.conn, 10, 60);
    const double t0 = timer_now();
    client_move_t m;
    s_rebalance(&rig, 2, 0, &m);
    const double took = timer_now() - t0;
    const double after = s_imbalance(&rig, 0, NULL);
    generations_pump(&rig.gens, &rig.conn, -1, 60);
    printf("  skewed placement: imbalance %.3f; rebalance (R = 2) in %.3f s under 16 "
           "generations: %s; measured after: %.3f\n", before, took, m.summary, after);
    generations_expect_all(&rig.gens, "rebalanced mid-generation");
    assert_true(before > 1.3);
    assert_true(after <= 1.15);
    assert_true(m.copies_loaded > 0);
    /* And again after: still moe-run's outputs on the new placement. */
    generations_send_all(&rig.gens, &rig.conn);
    generations_pump(&rig.gens, &rig.conn, -1, 60);
    generations_expect_all(&rig.gens, "after the rebalance");
    /* A node restarted with its first arguments (the skewed file) after the
     * move is given its share of the new placement again as it rejoins. */
    char *hosted = s_hosted_text(&rig);
    assert_int_equal(kill(localcluster_pid(rig.run_dir, "expert-2"), SIGKILL), 0);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "MOE_BIN='%s' '%s/cluster/local.sh' restart-node --run-dir '%s' "
             "--node 2 >/dev/null 2>&1", s_bin, s_root, rig.run_dir);
    assert_int_equal(testutil_run(cmd, NULL), 0);
    char *hosted_again = s_hosted_text(&rig);
    assert_string_equal(hosted_again, hosted);
    generations_send_all(&rig.gens, &rig.conn);
    generations_pump(&rig.gens, &rig.conn, -1, 60);
    generations_expect_all(&rig.gens, "after node 2 restarted with its first placement");
    snprintf(cmd, sizeof cmd, "grep -q 'node 2 .* is back after .* loaded again' "
             "'%s/coordinator.log'", rig.run_dir);
    assert_int_equal(testutil_run(cmd, NULL), 0);
    free(hosted);
    free(hosted_again);
    s_rig_down(&rig);
}

/* Lines of the coordinator's log that match pattern (grep -c). */
static int s_log_count(const rig_t *rig, const char *pattern)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "grep -c '%s' '%s/coordinator.log'", pattern, rig->run_dir);
    char *out = NULL;
    testutil_run(cmd, &out);
    const int n = out ? atoi(out) : 0;
    free(out);
    return n;
}

static void test_auto_rebalance(void **state)
{
    (void)state;
    char file[700], opts[1024];
    s_skewed_file(file, sizeof file);
    snprintf(opts, sizeof opts, "--placement %s --rebalance-every 1 --rebalance-threshold-pct "
             "120 --rebalance-redundant 2", file);
    rig_t rig;
    s_rig_up(&rig, "auto", 3, opts);
    generations_send_all(&rig.gens, &rig.conn);
    generations_pump(&rig.gens, &rig.conn, -1, 60);
    generations_expect_all(&rig.gens, "auto, first round");
    double imbalance = 0;
    const double t0 = timer_now();
    for (int i = 0; i < 100; i++) { /* bounded: 10 s */
        imbalance = s_imbalance(&rig, 0, NULL);
        if (s_log_count(&rig, "moe-coordinator: rebalanced:") > 0 && imbalance <= 1.15)
            break;
        usleep(100 * 1000);
    }
    printf("  --rebalance-every 1 (threshold 1.20): balanced by itself %.1f s after the "
           "traffic, imbalance %.3f\n", timer_now() - t0, imbalance);
    assert_int_equal(s_log_count(&rig, "moe-coordinator: rebalanced:"), 1);
    assert_true(imbalance <= 1.15);
    generations_send_all(&rig.gens, &rig.conn);
    generations_pump(&rig.gens, &rig.conn, -1, 60);
    generations_expect_all(&rig.gens, "auto, after its move");
    usleep(2500 * 1000); /* two more checks: below the threshold, no move */
    assert_int_equal(s_log_count(&rig, "moe-coordinator: rebalanc"), 2); /* ing + ed */
    s_rig_down(&rig);
}

/* LOGITS of one prompt as raw bytes (malloc'd, *n floats). */
static float *s_logits(const rig_t *rig, const int32_t *prompt, int n_prompt, size_t *n)
{
    err_t e = {0};
    client_t *c = client_connect(rig->endpoint, 60000, &e);
    assert_non_null(c);
    float *logits = NULL;
    int rows = 0, vocab = 0;
    if (client_logits(c, prompt, n_prompt, &logits, &rows, &vocab, &e) < 0)
        fail_msg("logits: %s", e.msg);
    client_destroy(&c);
    *n = (size_t)rows * (size_t)vocab;
    return logits;
}

static void test_exact_combine(void **state)
{
    (void)state;
    char model[700], ref[800], cmd[4096];
    snprintf(model, sizeof model, "%s/olmoe-A", fixture_root());
    const int32_t prompt[] = {5, 17, 2, 99, 3, 44, 8, 61};
    snprintf(ref, sizeof ref, "%s/olmoe-ref.f32", s_tmp);
    snprintf(cmd, sizeof cmd, "'%s/moe-run' --model '%s' --prompt-ids 5,17,2,99,3,44,8,61 "
             "--max-tokens 1 --dump-logits '%s' >/dev/null 2>&1", s_bin, model, ref);
    assert_int_equal(testutil_run(cmd, NULL), 0);
    size_t ref_bytes = 0;
    char *want = testutil_read_file(ref, &ref_bytes);
    assert_non_null(want);

    rig_t rig;
    memset(&rig, 0, sizeof rig);
    snprintf(rig.run_dir, sizeof rig.run_dir, "%s/exact", s_tmp);
    rig.endpoint = localcluster_up(model, 3, rig.run_dir, CLUSTER_OPTS);
    localcluster_open(&rig.conn, rig.endpoint);
    size_t n = 0;
    float *got = s_logits(&rig, prompt, 8, &n);
    assert_int_equal(n * sizeof(float), ref_bytes);
    assert_memory_equal(got, want, ref_bytes);
    mem_free(got);
    client_move_t m;
    s_rebalance(&rig, 2, 0, &m);
    got = s_logits(&rig, prompt, 8, &n);
    assert_memory_equal(got, want, ref_bytes);
    mem_free(got);
    printf("  olmoe-A (4 experts per token), 3 nodes: logits bit for bit moe-run's before "
           "and after a rebalance (%s)\n", m.summary);
    free(want);
    s_rig_down(&rig);
}

static void test_add_node_under_load(void **state)
{
    (void)state;
    rig_t rig;
    s_rig_up(&rig, "add", 2, NULL);
    generations_send_all(&rig.gens, &rig.conn);
    generations_pump(&rig.gens, &rig.conn, 10, 60);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "MOE_BIN='%s' '%s/cluster/local.sh' add-node --run-dir '%s' "
             "--redundant 1 2>&1", s_bin, s_root, rig.run_dir);
    char *out = NULL;
    const double t0 = timer_now();
    const int rc = testutil_run(cmd, &out);
    const double took = timer_now() - t0;
    if (rc != 0)
        fail_msg("add-node failed (%d): %s", rc, out ? out : "");
    assert_string_equal(testutil_last_line(out), "3");
    free(out);
    int hosted = 0;
    s_imbalance(&rig, 3, &hosted);
    assert_true(hosted > 0);
    generations_pump(&rig.gens, &rig.conn, -1, 60);
    generations_expect_all(&rig.gens, "node 3 added mid-generation");
    generations_send_all(&rig.gens, &rig.conn);
    generations_pump(&rig.gens, &rig.conn, -1, 60);
    generations_expect_all(&rig.gens, "after node 3 joined");
    printf("  node 3 added to 2 under 16 generations in %.3f s: it hosts %d experts; none "
           "failed\n", took, hosted);

    /* Bad input: one clear error each, the cluster unharmed. */
    assert_int_equal(s_client(&rig, "node add garbage", &out), 1);
    assert_non_null(strstr(out, "not an endpoint"));
    free(out);
    char args[1200];
    char *ep1 = NULL;
    snprintf(args, sizeof args, "%s/expert-1.endpoint", rig.run_dir);
    ep1 = testutil_read_file(args, NULL);
    assert_non_null(ep1);
    testutil_last_line(ep1);
    snprintf(args, sizeof args, "node add %s", ep1);
    assert_int_equal(s_client(&rig, args, &out), 1);
    assert_non_null(strstr(out, "already at"));
    free(out);
    free(ep1);
    assert_int_equal(s_client(&rig, "node drain 9", &out), 1);
    assert_non_null(strstr(out, "no node 9"));
    free(out);
    assert_int_equal(s_client(&rig, "node remove 1", &out), 2);
    free(out);
    generations_send_all(&rig.gens, &rig.conn);
    generations_pump(&rig.gens, &rig.conn, -1, 60);
    generations_expect_all(&rig.gens, "after bad requests");
    s_rig_down(&rig);
}

static void test_drain_under_load(void **state)
{
    (void)state;
    rig_t rig;
    s_rig_up(&rig, "drain", 3, NULL);
    generations_send_all(&rig.gens, &rig.conn);
    generations_pump(&rig.gens, &rig.conn, 10, 60);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "MOE_BIN='%s' '%s/cluster/local.sh' drain-node --run-dir '%s' "
             "--node 2 2>&1", s_bin, s_root, rig.run_dir);
    char *out = NULL;
    const int rc = testutil_run(cmd, &out);
    if (rc != 0)
        fail_msg("drain-node failed (%d): %s", rc, out ? out : "");
    free(out);
    int hosted = -1;
    s_imbalance(&rig, 2, &hosted);
    assert_int_equal(hosted, 0);
    generations_pump(&rig.gens, &rig.conn, -1, 60);
    generations_expect_all(&rig.gens, "node 2 drained and stopped mid-generation");
    /* Node 2 is gone: everything still runs. */
    generations_send_all(&rig.gens, &rig.conn);
    generations_pump(&rig.gens, &rig.conn, -1, 60);
    generations_expect_all(&rig.gens, "after the drain");
    printf("  node 2 of 3 drained and stopped under 16 generations: none failed\n");
    s_rig_down(&rig);
}

static void test_kill_mid_move(void **state)
{
    (void)state;
    char file[700], opts[1024];
    s_skewed_file(file, sizeof file);
    /* Every expert on two nodes too, so that losing one node loses nothing;
     * loading is slowed down so that the kill falls inside the move. */
    snprintf(opts, sizeof opts, "--replicas 2 --place-delay-ms 1500");
    rig_t rig;
    s_rig_up(&rig, "kill-move", 3, opts);
    generations_send_all(&rig.gens, &rig.conn);
    generations_pump(&rig.gens, &rig.conn, -1, 60);
    char *hosted_before = s_hosted_text(&rig);
    generations_send_all(&rig.gens, &rig.conn);
    generations_pump(&rig.gens, &rig.conn, 10, 60);
    /* The REBALANCE goes on a connection of its own; its answer waits. */
    localcluster_conn_t mv;
    localcluster_open(&mv, rig.endpoint);
    wire_request_t req = {.type = WIRE_REQ_REBALANCE, .request_id = 7, .redundant = 1};
    localcluster_send(&mv, &req);
    /* Which node loads? Kill the first that logs it (bounded wait). */
    int victim = 0;
    for (int i = 0; i < 100 && !victim; i++) {
        for (int n = 1; n <= 3 && !victim; n++) {
            char cmd[1024];
            snprintf(cmd, sizeof cmd, "grep -q 'loading .* experts in the background' "
                     "'%s/expert-%d.log'", rig.run_dir, n);
            if (testutil_run(cmd, NULL) == 0)
                victim = n;
        }
        if (!victim)
            usleep(20 * 1000);
    }
    assert_true(victim > 0);
    char name[32];
    snprintf(name, sizeof name, "expert-%d", victim);
    assert_int_equal(kill(localcluster_pid(rig.run_dir, name), SIGKILL), 0);
    wire_reply_t rep;
    localcluster_recv(&mv, &rep, "no answer to the rebalance");
    assert_int_equal(rep.type, WIRE_REP_ERROR);
    assert_int_equal(rep.error_code, WIRE_CLIENT_UNAVAILABLE);
    assert_non_null(strstr(rep.error_message, "unchanged"));
    printf("  node %d killed while loading: %s\n", victim, rep.error_message);
    localcluster_close(&mv);
    char *hosted_after = s_hosted_text(&rig);
    assert_string_equal(hosted_after, hosted_before);
    generations_pump(&rig.gens, &rig.conn, -1, 60);
    generations_expect_all(&rig.gens, "node killed in the middle of a move");
    free(hosted_before);
    free(hosted_after);
    s_rig_down(&rig);
}

static void test_budget_too_small(void **state)
{
    (void)state;
    rig_t rig;
    /* mixtral-A's experts are 48 KiB: 0.5 MiB holds 10 per node, 5 per layer. */
    s_rig_up(&rig, "budget", 2, "--memory-budget 0.5");
    generations_send_all(&rig.gens, &rig.conn);
    generations_pump(&rig.gens, &rig.conn, -1, 60);
    char *before = s_hosted_text(&rig);
    char *out = NULL;
    assert_int_equal(s_client(&rig, "rebalance --redundant 4", &out), 1);
    if (!strstr(out, "memory budgets") || !strstr(out, "needs 12 expert copies"))
        fail_msg("unclear refusal: %s", out);
    printf("  refused: %s", out);
    free(out);
    char *after = s_hosted_text(&rig);
    assert_string_equal(after, before);
    free(after);
    /* Two redundant copies fit (8 + 2 <= 10 per layer). */
    assert_int_equal(s_client(&rig, "rebalance --redundant 2", &out), 0);
    free(out);
    generations_send_all(&rig.gens, &rig.conn);
    generations_pump(&rig.gens, &rig.conn, -1, 60);
    generations_expect_all(&rig.gens, "after a rebalance within the budgets");
    free(before);
    s_rig_down(&rig);
}

/* A case that failed midway left its cluster running: stop every one of
 * them before the scratch folder goes (local.sh down needs its pid files). */
static int s_teardown(void **state)
{
    static const char *const names[] = {"load", "skewed", "exact", "add", "drain",
                                        "kill-move", "budget", "auto"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char cmd[2048];
        snprintf(cmd, sizeof cmd, "MOE_BIN='%s' '%s/cluster/local.sh' down --run-dir "
                 "'%s/%s' >/dev/null 2>&1", s_bin, s_root, s_tmp, names[i]);
        testutil_run(cmd, NULL);
    }
    return testutil_tmpdir_teardown(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_measured),
        cmocka_unit_test(test_rebalance_skewed),
        cmocka_unit_test(test_exact_combine),
        cmocka_unit_test(test_add_node_under_load),
        cmocka_unit_test(test_drain_under_load),
        cmocka_unit_test(test_kill_mid_move),
        cmocka_unit_test(test_budget_too_small),
        cmocka_unit_test(test_auto_rebalance),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
