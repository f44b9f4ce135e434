/* test_rebalance: the live placement of issue 16 with real processes
 * (cluster/local.sh, real sockets), on the mixtral-A fixture:
 *   - the load is measured: STATUS (and moe-client placement --json) gives
 *     each expert's rows per second and each node's share and busy time,
 *     consistent with each other and with the tokens routed.
 * Every wait is bounded in count and time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "core/timer.h"
#include "proto/client_rpc.h"
#include "tests/crosscheck.h"
#include "tests/fixture.h"
#include "tests/localcluster.h"
#include "tests/testutil.h"

enum {
    N_GEN = 16,            /* concurrent generations */
    MAX_TOKENS = 60,
};
#define CLUSTER_OPTS "--reply-timeout-ms 1000 --heartbeat-ms 200 --heartbeat-misses 3"

static char s_bin[512];
static char s_root[512];
static char *s_tmp;
static char s_model[600];
static char s_want[N_GEN][2048];  /* moe-run's output for each prompt */
static int32_t s_prompt[N_GEN][8];
static int s_n_prompt[N_GEN];

/* One generation as a client sees it. */
typedef struct gen {
    char got[2048];            /* token ids, "a,b,c" */
    size_t used;
    int n_tokens;
    bool ended;
    bool failed;
    char error[512];
} gen_t;

/* The cluster under test and a client socket for the generations. */
typedef struct rig {
    char run_dir[700];
    char *endpoint;
    localcluster_conn_t conn;
    gen_t gen[N_GEN];
} rig_t;

static void s_ids_text(const int32_t *ids, int n, char *out, size_t size)
{
    size_t used = 0;
    for (int i = 0; i < n && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%d", i ? "," : "", (int)ids[i]);
}

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
    testrng_t rng;
    testrng_init(&rng, 16);
    for (int g = 0; g < N_GEN; g++) {
        s_n_prompt[g] = 1 + g % 6;
        for (int i = 0; i < s_n_prompt[g]; i++)
            s_prompt[g][i] = (int32_t)(testrng_uniform(&rng) * fx->vocab);
        char ids[128], cmd[2048];
        s_ids_text(s_prompt[g], s_n_prompt[g], ids, sizeof ids);
        snprintf(cmd, sizeof cmd, "'%s/moe-run' --model '%s' --prompt-ids %s --max-tokens %d "
                 "2>/dev/null", s_bin, s_model, ids, MAX_TOKENS);
        char *want = crosscheck_last_line(cmd);
        snprintf(s_want[g], sizeof s_want[g], "%s", want);
        free(want);
    }
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
}

static void s_rig_down(rig_t *rig)
{
    localcluster_close(&rig->conn);
    localcluster_down(rig->run_dir);
    free(rig->endpoint);
}

static void s_send_all(rig_t *rig)
{
    for (int g = 0; g < N_GEN; g++) {
        rig->gen[g] = (gen_t){0};
        wire_request_t req = {.type = WIRE_REQ_GENERATE, .request_id = 100 + (uint64_t)g,
                              .n_prompt = s_n_prompt[g], .prompt = s_prompt[g],
                              .max_tokens = MAX_TOKENS};
        localcluster_send(&rig->conn, &req);
    }
}

/* Receives replies until every generation has at least min_tokens tokens or
 * ended (min_tokens < 0: until all ended). Fails the test after `seconds`. */
static void s_pump(rig_t *rig, int min_tokens, double seconds)
{
    const double deadline = timer_now() + seconds;
    for (;;) {
        bool enough = true;
        for (int g = 0; g < N_GEN; g++)
            enough &= rig->gen[g].ended ||
                      (min_tokens >= 0 && rig->gen[g].n_tokens >= min_tokens);
        if (enough)
            return;
        if (timer_now() > deadline)
            fail_msg("generations still running after %.0f s", seconds);
        wire_reply_t rep;
        localcluster_recv(&rig->conn, &rep, "no reply from the coordinator");
        const int g = (int)rep.request_id - 100;
        assert_true(g >= 0 && g < N_GEN);
        gen_t *gen = &rig->gen[g];
        assert_false(gen->ended);
        if (rep.type == WIRE_REP_ERROR) {
            gen->ended = gen->failed = true;
            snprintf(gen->error, sizeof gen->error, "%s",
                     rep.error_message ? rep.error_message : "");
            continue;
        }
        assert_int_equal(rep.type, WIRE_REP_TOKENS);
        for (int i = 0; i < rep.n_tokens && gen->used < sizeof gen->got - 16; i++)
            gen->used += (size_t)snprintf(gen->got + gen->used, sizeof gen->got - gen->used,
                                          "%s%d", gen->n_tokens++ ? "," : "",
                                          (int)rep.tokens[i]);
        gen->ended = rep.final;
    }
}

/* Every generation completed with moe-run's output. */
static void s_expect_all_equal(const rig_t *rig, const char *what)
{
    for (int g = 0; g < N_GEN; g++) {
        const gen_t *gen = &rig->gen[g];
        if (gen->failed)
            fail_msg("%s: generation %d failed: %s", what, g, gen->error);
        if (strcmp(gen->got, s_want[g]) != 0)
            fail_msg("%s: generation %d printed\n  %s\nbut moe-run\n  %s", what, g, gen->got,
                     s_want[g]);
    }
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
    s_send_all(&rig);
    s_pump(&rig, -1, 60);
    s_expect_all_equal(&rig, "two nodes");

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_measured),
    };
    return cmocka_run_group_tests(tests, s_setup, testutil_tmpdir_teardown);
}
