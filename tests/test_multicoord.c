/* test_multicoord: several coordinators over one set of expert nodes, real
 * processes through cluster/local.sh --coordinators 2 (two coordinators,
 * two nodes, mixtral-A):
 *   - eight generations on each coordinator at once print what moe-run
 *     prints; moe-client given both endpoints
 *     crosschecks against moe-run (generate and logits); each coordinator's
 *     STATUS shows both nodes serving 2 coordinators; a rebalance is refused
 *     naming them; `local.sh status` shows each coordinator and `down` leaves
 *     no process behind;
 *   - a node answers requests of two coordinators that wait together (the
 *     node stopped while they are sent) from one computation, and each gets
 *     its rows bit for bit as when sent alone (its log counts the replies of
 *     shared computations);
 *   - a node killed (-9) mid-cluster and restarted with `local.sh
 *     restart-node` (which returns once every coordinator has it back)
 *     rejoins both: each coordinator generates moe-run's tokens again.
 * Short heartbeats (--heartbeat-ms 200) keep it quick; every wait is bounded
 * in count and time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/timer.h"
#include "model/config.h"
#include "proto/client_rpc.h"
#include "proto/data_plane.h"
#include "tests/crosscheck.h"
#include "tests/fixture.h"
#include "tests/localcluster.h"
#include "tests/testutil.h"

enum { N_COORD = 2, N_GEN = 8, MAX_PROMPT = 5, MAX_TOKENS = 40 };
enum { N_REQ = 3, REQ_ROWS = 2, ROUNDS = 5 }; /* the node-level batching case */
#define CLUSTER_OPTS "--coordinators 2 --heartbeat-ms 200 --threads 1 --node-threads 1"

static char s_bin[512];
static char s_root[512];
static char *s_tmp;
static char s_model[600];
static char s_want[N_GEN][1024];  /* moe-run's output for each prompt */
static int32_t s_prompt[N_GEN][MAX_PROMPT];
static int s_n_prompt[N_GEN];

/* A cluster of two coordinators: its run folder and each one's endpoint. */
typedef struct rig {
    char run_dir[700];
    char *endpoints;          /* "EP1,EP2", local.sh's last line */
    char endpoint[N_COORD][256];
} rig_t;

static int s_setup(void **state)
{
    snprintf(s_bin, sizeof s_bin, "%s", testutil_env("MOE_BIN", "build/bin"));
    if (!getcwd(s_root, sizeof s_root))
        return -1;
    s_tmp = testutil_mkdtemp("test_multicoord");
    if (!s_tmp)
        return -1;
    snprintf(s_model, sizeof s_model, "%s/mixtral-A", fixture_root());
    fixture_t *fx = fixture_load(s_model);
    if (!fx)
        return -1;
    crosscheck_prompts(s_bin, s_model, fx->vocab, 2015, N_GEN, MAX_PROMPT, MAX_TOKENS,
                       &s_prompt[0][0], s_n_prompt, &s_want[0][0], sizeof s_want[0]);
    fixture_destroy(&fx);
    *state = s_tmp;
    return 0;
}

static void s_rig_up(rig_t *rig, const char *name)
{
    memset(rig, 0, sizeof *rig);
    snprintf(rig->run_dir, sizeof rig->run_dir, "%s/%s", s_tmp, name);
    rig->endpoints = localcluster_up(s_model, 2, rig->run_dir, CLUSTER_OPTS);
    const char *comma = strchr(rig->endpoints, ',');
    if (!comma || strchr(comma + 1, ','))
        fail_msg("local.sh --coordinators 2 printed '%s', not two endpoints", rig->endpoints);
    snprintf(rig->endpoint[0], sizeof rig->endpoint[0], "%.*s",
             (int)(comma - rig->endpoints), rig->endpoints);
    snprintf(rig->endpoint[1], sizeof rig->endpoint[1], "%s", comma + 1);
}

static void s_rig_down(rig_t *rig)
{
    localcluster_down(rig->run_dir);
    free(rig->endpoints);
}

/* One generation as a client sees it. */
typedef struct gen {
    char got[1024];
    size_t used;
    int n_tokens;
    bool ended;
} gen_t;

/* Generations g_first..g_first+n-1 on each coordinator at once (request id
 * 100 + g on both); each must print moe-run's tokens. */
static void s_generate_on_both(const rig_t *rig, int g_first, int n)
{
    localcluster_conn_t conn[N_COORD];
    gen_t gen[N_COORD][N_GEN];
    memset(gen, 0, sizeof gen);
    for (int c = 0; c < N_COORD; c++) {
        localcluster_open(&conn[c], rig->endpoint[c]);
        for (int g = g_first; g < g_first + n; g++) {
            wire_request_t req = {.type = WIRE_REQ_GENERATE, .request_id = 100 + (uint64_t)g,
                                  .n_prompt = s_n_prompt[g], .prompt = s_prompt[g],
                                  .max_tokens = MAX_TOKENS};
            localcluster_send(&conn[c], &req);
        }
    }
    const double deadline = timer_now() + 60;
    for (int c = 0; c < N_COORD; c++) {
        for (int left = n; left > 0;) {
            if (timer_now() > deadline)
                fail_msg("coordinator %d: %d generations still running after 60 s", c + 1, left);
            wire_reply_t rep;
            localcluster_recv(&conn[c], &rep, "no reply from a coordinator");
            const int g = (int)rep.request_id - 100;
            assert_true(g >= g_first && g < g_first + n);
            gen_t *x = &gen[c][g];
            if (rep.type == WIRE_REP_ERROR)
                fail_msg("coordinator %d, generation %d failed: %s", c + 1, g,
                         rep.error_message ? rep.error_message : "");
            assert_int_equal(rep.type, WIRE_REP_TOKENS);
            assert_false(x->ended);
            for (int i = 0; i < rep.n_tokens && x->used < sizeof x->got - 16; i++)
                x->used += (size_t)snprintf(x->got + x->used, sizeof x->got - x->used, "%s%d",
                                            x->n_tokens++ ? "," : "", (int)rep.tokens[i]);
            if ((x->ended = rep.final))
                left--;
        }
        localcluster_close(&conn[c]);
    }
    for (int c = 0; c < N_COORD; c++)
        for (int g = g_first; g < g_first + n; g++)
            if (strcmp(gen[c][g].got, s_want[g]) != 0)
                fail_msg("coordinator %d, generation %d printed\n  %s\nbut moe-run\n  %s",
                         c + 1, g, gen[c][g].got, s_want[g]);
}

/* Polls coordinator c's STATUS until every node is up (up) or node `node`
 * is down (!up), and every node reports `coords` coordinators (0: any);
 * fails the test after `seconds`. */
static void s_wait_status(const rig_t *rig, int c, int node, bool up, int coords,
                          double seconds)
{
    const double t0 = timer_now();
    char seen[256] = "";
    for (int i = 0; i < 1000 && timer_now() - t0 < seconds; i++) {
        localcluster_conn_t conn;
        localcluster_open(&conn, rig->endpoint[c]);
        wire_reply_t rep;
        localcluster_status(&conn, 1, &rep);
        bool ok = rep.n_nodes == 2;
        size_t used = 0;
        for (int n = 0; n < rep.n_nodes; n++) {
            const wire_node_status_t *s = &rep.nodes[n];
            used += (size_t)snprintf(seen + used, sizeof seen - used, " node %d %s/%d",
                                     s->node_id, s->up ? "up" : "down", s->coordinators);
            if (up)
                ok &= s->up && (coords == 0 || s->coordinators == coords);
            else if (s->node_id == node)
                ok &= !s->up;
        }
        localcluster_close(&conn);
        if (ok)
            return;
        usleep(50 * 1000);
    }
    fail_msg("coordinator %d: nodes not as expected after %.0f s:%s", c + 1, seconds, seen);
}

/* The count in a node's last line "... requests served in N computations
 * (K shared one with other requests) ...": K. */
static long s_shared(const char *run_dir, int node)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "sed -n 's/.*(\\([0-9]*\\) shared one with other requests).*/\\1/p' "
             "'%s/expert-%d.log' | tail -n 1", run_dir, node);
    char *out = crosscheck_last_line(cmd);
    long k = atol(out);
    free(out);
    return k;
}

static void test_two_coordinators(void **state)
{
    (void)state;
    rig_t rig;
    s_rig_up(&rig, "two");
    pid_t pids[4] = {localcluster_pid(rig.run_dir, "coordinator"),
                     localcluster_pid(rig.run_dir, "coordinator-2"),
                     localcluster_pid(rig.run_dir, "expert-1"),
                     localcluster_pid(rig.run_dir, "expert-2")};
    const double t0 = timer_now();
    s_generate_on_both(&rig, 0, N_GEN);
    printf("  %d generations of %d tokens on each of 2 coordinators: %.2f s, all as moe-run\n",
           N_GEN, MAX_TOKENS, timer_now() - t0);

    /* The client spreads over both endpoints; answers equal moe-run's. */
    fixture_t *fx = fixture_load(s_model);
    assert_non_null(fx);
    crosscheck_fixture(fx, rig.endpoints, s_bin, s_tmp, "");
    fixture_destroy(&fx);

    for (int c = 0; c < N_COORD; c++)
        s_wait_status(&rig, c, 0, true, 2, 10);
    char cmd[2048], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' rebalance 2>&1", s_bin,
             rig.endpoint[0]);
    assert_int_not_equal(testutil_run(cmd, &out), 0);
    if (!strstr(out, "serves 2 coordinators"))
        fail_msg("rebalance with two coordinators: unclear refusal: %s", out);
    printf("  rebalance refused: %s", out);
    free(out);

    snprintf(cmd, sizeof cmd, "'%s/cluster/local.sh' status --run-dir '%s'", s_root,
             rig.run_dir);
    assert_int_equal(testutil_run(cmd, &out), 0);
    assert_non_null(strstr(out, "== coordinator at"));
    assert_non_null(strstr(out, "== coordinator-2 at"));
    assert_non_null(strstr(out, "serving 2 coordinators"));
    free(out);

    s_rig_down(&rig);
    for (int i = 0; i < 4; i++)
        if (testutil_running(pids[i]))
            fail_msg("process %d still runs after local.sh down", (int)pids[i]);
}

/* A request of the case: REQ_ROWS random rows for even experts (node 1's of
 * two) of layer 1. */
typedef struct req {
    float rows[REQ_ROWS * 256];
    moe_assign_t assign[REQ_ROWS * 8];
    wire_data_t m;
    float *want;               /* (REQ_ROWS, hidden): the reply when sent alone */
} req_t;

static void s_req_make(req_t *r, testrng_t *rng, const config_t *cfg, uint64_t id)
{
    assert_true(cfg->hidden_size <= 256 && cfg->n_experts_per_tok <= 8);
    testrng_fill(rng, r->rows, (size_t)REQ_ROWS * cfg->hidden_size, 1.0f);
    int n = 0;
    for (int row = 0; row < REQ_ROWS; row++)
        for (int k = 0; k < cfg->n_experts_per_tok; k++)
            r->assign[n++] = (moe_assign_t){
                row, 2 * ((row + k + (int)id) % (cfg->n_experts / 2)),
                0.5f + testrng_uniform(rng)};
    r->m = (wire_data_t){.type = WIRE_EXPERT_REQUEST, .request_id = id, .layer = 1,
                         .n_rows = REQ_ROWS, .hidden = cfg->hidden_size, .rows = r->rows,
                         .n_assign = n, .assign = r->assign};
}

/* The reply to request id on sock: its rows (into out when given, else
 * compared with want bit for bit). */
static void s_req_reply(void *sock, wire_inbox_t *inbox, const req_t *r, float *out,
                        int hidden)
{
    wire_data_t rep;
    err_t err = {0};
    if (wire_data_recv(inbox, sock, false, NULL, &rep, NULL, &err) < 0)
        fail_msg("no reply to request %llu: %s", (unsigned long long)r->m.request_id, err.msg);
    assert_int_equal(rep.type, WIRE_EXPERT_REPLY);
    assert_int_equal(rep.request_id, r->m.request_id);
    assert_int_equal(rep.n_rows, REQ_ROWS);
    const size_t bytes = (size_t)REQ_ROWS * hidden * sizeof(float);
    if (out)
        memcpy(out, rep.rows, bytes);
    else if (memcmp(rep.rows, r->want, bytes) != 0)
        fail_msg("request %llu: rows differ from its rows alone",
                 (unsigned long long)r->m.request_id);
}

static void test_node_batches_two_coordinators(void **state)
{
    (void)state;
    rig_t rig;
    s_rig_up(&rig, "batch");
    config_t cfg;
    err_t err = {0};
    if (config_load(&cfg, s_model, &err) < 0)
        fail_msg("config: %s", err.msg);
    char path[800];
    snprintf(path, sizeof path, "%s/expert-1.endpoint", rig.run_dir);
    char *ep = testutil_read_file(path, NULL);
    assert_non_null(ep);
    ep[strcspn(ep, "\n")] = '\0';
    /* Two more coordinators, as the node sees them: two DEALERs. */
    localcluster_conn_t c[2];
    for (int i = 0; i < 2; i++)
        localcluster_open(&c[i], ep);
    wire_limits_t lim = wire_limits_for_model(&cfg, 64);
    wire_inbox_t *inbox = wire_inbox_new(&lim, &err);
    assert_non_null(inbox);
    static req_t req[2][N_REQ];
    testrng_t rng;
    testrng_init(&rng, 1515);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < N_REQ; j++) {
            req_t *r = &req[i][j];
            s_req_make(r, &rng, &cfg, 1000 + (uint64_t)(i * N_REQ + j));
            r->want = malloc((size_t)REQ_ROWS * cfg.hidden_size * sizeof(float));
            assert_int_equal(wire_data_send(c[i].sock, NULL, &r->m, &err), 0);
            s_req_reply(c[i].sock, inbox, r, r->want, cfg.hidden_size);
        }
    /* With the node stopped, both send; it finds them all waiting. */
    const pid_t node = localcluster_pid(rig.run_dir, "expert-1");
    for (int round = 0; round < ROUNDS; round++) {
        assert_int_equal(kill(node, SIGSTOP), 0);
        for (int j = 0; j < N_REQ; j++)
            for (int i = 0; i < 2; i++)
                assert_int_equal(wire_data_send(c[i].sock, NULL, &req[i][j].m, &err), 0);
        usleep(100 * 1000); /* into the node's socket buffers */
        assert_int_equal(kill(node, SIGCONT), 0);
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < N_REQ; j++)
                s_req_reply(c[i].sock, inbox, &req[i][j], NULL, cfg.hidden_size);
    }
    for (int i = 0; i < 2; i++) {
        localcluster_close(&c[i]);
        for (int j = 0; j < N_REQ; j++)
            free(req[i][j].want);
    }
    wire_inbox_destroy(&inbox);
    free(ep);
    s_rig_down(&rig); /* the node logs its counts as it stops */
    const long shared = s_shared(rig.run_dir, 1);
    printf("  %d rounds of %d requests from each of 2 DEALERs, the node stopped while they "
           "were sent: all equal to alone; %ld replies from shared computations\n", ROUNDS,
           N_REQ, shared);
    assert_true(shared > 0);
}

static void test_node_restart_rejoins_both(void **state)
{
    (void)state;
    rig_t rig;
    s_rig_up(&rig, "restart");
    assert_int_equal(kill(localcluster_pid(rig.run_dir, "expert-2"), SIGKILL), 0);
    for (int c = 0; c < N_COORD; c++)
        s_wait_status(&rig, c, 2, false, 0, 10);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "MOE_BIN='%s' '%s/cluster/local.sh' restart-node --run-dir '%s' "
             "--node 2 >/dev/null", s_bin, s_root, rig.run_dir);
    const double t0 = timer_now();
    assert_int_equal(testutil_run(cmd, NULL), 0);
    printf("  node 2 restarted and back in both coordinators after %.2f s\n",
           timer_now() - t0);
    /* restart-node returned: both already have it, no waiting here. */
    for (int c = 0; c < N_COORD; c++)
        s_wait_status(&rig, c, 0, true, 0, 0.5);
    s_generate_on_both(&rig, 0, 2);
    s_rig_down(&rig);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_coordinators),
        cmocka_unit_test(test_node_batches_two_coordinators),
        cmocka_unit_test(test_node_restart_rejoins_both),
    };
    return cmocka_run_group_tests(tests, s_setup, NULL);
}
