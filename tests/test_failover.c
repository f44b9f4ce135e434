/* test_failover: a cluster of real processes (cluster/local.sh, real sockets)
 * losing a node in the middle of sixteen concurrent generations:
 *   - kill -9 with every expert on two nodes: all sixteen complete and print
 *     what moe-run prints (the failed node's in-flight work went to replicas,
 *     for each of the two micro-batches the steps are split into, with
 *     --micro-batches 2);
 *   - kill -9 with one copy of each expert: the requests that needed the node
 *     fail with UNAVAILABLE naming it, quickly; the coordinator keeps serving;
 *     after `local.sh restart-node` the node rejoins and requests succeed;
 *   - SIGSTOP with two copies: the reply timeout notices it mid-generation and
 *     the work moves on, outputs unchanged; after SIGCONT it rejoins; stopped
 *     again while idle, the heartbeats notice it.
 * Short timeouts (--reply-timeout-ms 1000 --heartbeat-ms 200) keep it quick;
 * every wait is bounded in count and time. */
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
#include <zmq.h>

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
    MAX_TOKENS = 300,      /* long enough that a node dies in the middle */
    REPLY_TIMEOUT_MS = 1000,
    HEARTBEAT_MS = 200,
    HEARTBEAT_MISSES = 3,
};
#define CLUSTER_OPTS "--reply-timeout-ms 1000 --heartbeat-ms 200 --heartbeat-misses 3"

static char s_bin[512];
static char s_root[512];
static char *s_tmp;
static char s_model[600];
static char s_want[N_GEN][4096];  /* moe-run's output for each prompt */
static int32_t s_prompt[N_GEN][MAX_PROMPT];
static int s_n_prompt[N_GEN];

/* The cluster under test: a client socket for the generations. */
typedef struct rig {
    char run_dir[700];
    char *endpoint;
    localcluster_conn_t conn;
    generations_t gens;
} rig_t;

/* The last line of a command's output whatever its status (grep -c). */
static char *s_last_line_any(const char *cmd)
{
    char *out = NULL;
    testutil_run(cmd, &out);
    if (!out)
        return strdup("");
    testutil_last_line(out); /* drops the final newline */
    return out;
}

/* Sixteen prompts and what moe-run prints for each: the no-failure outputs. */
static int s_setup(void **state)
{
    snprintf(s_bin, sizeof s_bin, "%s", testutil_env("MOE_BIN", "build/bin"));
    if (!getcwd(s_root, sizeof s_root))
        return -1;
    s_tmp = testutil_mkdtemp("test_failover");
    if (!s_tmp)
        return -1;
    snprintf(s_model, sizeof s_model, "%s/mixtral-A", fixture_root());
    fixture_t *fx = fixture_load(s_model);
    if (!fx)
        return -1;
    crosscheck_prompts(s_bin, s_model, fx->vocab, 77, N_GEN, MAX_PROMPT, MAX_TOKENS,
                       &s_prompt[0][0], s_n_prompt, &s_want[0][0], sizeof s_want[0]);
    fixture_destroy(&fx);
    *state = s_tmp;
    return 0;
}

static void s_rig_up(rig_t *rig, const char *name, int nodes, const char *extra)
{
    memset(rig, 0, sizeof *rig);
    snprintf(rig->run_dir, sizeof rig->run_dir, "%s/%s", s_tmp, name);
    char opts[512];
    snprintf(opts, sizeof opts, "%s %s", CLUSTER_OPTS, extra);
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

/* Node node_id's state from a STATUS request on its own socket. */
static bool s_node_up(const rig_t *rig, int node_id, char *last_error, size_t size)
{
    localcluster_conn_t conn;
    localcluster_open(&conn, rig->endpoint);
    wire_reply_t rep;
    localcluster_status(&conn, 1, &rep);
    bool up = false, found = false;
    for (int i = 0; i < rep.n_nodes; i++)
        if (rep.nodes[i].node_id == node_id) {
            found = true;
            up = rep.nodes[i].up;
            if (last_error)
                snprintf(last_error, size, "%s",
                         rep.nodes[i].last_error ? rep.nodes[i].last_error : "");
        }
    assert_true(found);
    localcluster_close(&conn);
    return up;
}

/* Polls STATUS until node_id is up (or down); returns the seconds it took,
 * failing the test after `seconds`. */
static double s_wait_node(const rig_t *rig, int node_id, bool up, double seconds)
{
    const double t0 = timer_now();
    for (int i = 0; i < 2000; i++) {
        if (s_node_up(rig, node_id, NULL, 0) == up)
            return timer_now() - t0;
        if (timer_now() - t0 > seconds)
            break;
        usleep(20 * 1000);
    }
    fail_msg("node %d not %s after %.1f s", node_id, up ? "up" : "down", seconds);
    return 0;
}

static void s_signal_node(const rig_t *rig, int node_id, int sig)
{
    char name[32];
    snprintf(name, sizeof name, "expert-%d", node_id);
    assert_int_equal(kill(localcluster_pid(rig->run_dir, name), sig), 0);
}

/* One generation through a fresh request; true when it succeeded (and then
 * it must equal moe-run's). */
static bool s_try_one(rig_t *rig, int g, char *error, size_t size)
{
    generations_send(&rig->gens, &rig->conn, g);
    const generation_t *gen = &rig->gens.gen[g];
    const double deadline = timer_now() + 20;
    while (!gen->ended && timer_now() < deadline) {
        wire_reply_t rep;
        localcluster_recv(&rig->conn, &rep, "no reply from the coordinator");
        assert_int_equal((int)rep.request_id, 100 + g);
        generations_take(&rig->gens, &rep);
        if (gen->failed) {
            snprintf(error, size, "%s", gen->error);
            return false;
        }
    }
    assert_true(gen->ended);
    assert_string_equal(gen->got, s_want[g]);
    return true;
}

static void test_kill_with_replicas(void **state)
{
    (void)state;
    rig_t rig;
    s_rig_up(&rig, "kill-r2", 3, "--replicas 2 --micro-batches 2");
    generations_send_all(&rig.gens, &rig.conn);
    generations_pump(&rig.gens, &rig.conn, 10, 30); /* all sixteen under way */
    for (int g = 0; g < N_GEN; g++)
        assert_false(rig.gens.gen[g].ended);
    const double t_kill = timer_now();
    s_signal_node(&rig, 2, SIGKILL);
    const double gap = generations_pump(&rig.gens, &rig.conn, -1, 30);
    printf("  kill -9 of node 2 (of 3, 2 replicas) mid-generation: all %d completed %.3f s "
           "later (longest pause %.3f s)\n", N_GEN, timer_now() - t_kill, gap);
    generations_expect_all(&rig.gens, "kill -9, 2 replicas");
    /* The sixteen ran as two micro-batches (--micro-batches 2):
     * the kill found two calls in flight, and each call re-sent its own. */
    localcluster_conn_t conn;
    localcluster_open(&conn, rig.endpoint);
    wire_reply_t rep;
    localcluster_status(&conn, 1, &rep);
    printf("  coordinator computed %.3f s with experts away (micro-batches)\n",
           rep.timing.seconds_overlap);
    assert_true(rep.timing.seconds_overlap > 0);
    localcluster_close(&conn);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "grep -c 'node 2 failed with .* in flight' '%s/coordinator.log'",
             rig.run_dir);
    char *n_failovers = s_last_line_any(cmd);
    printf("  re-sends of in-flight work logged: %s (0 when the kill fell between calls)\n",
           n_failovers);
    free(n_failovers);
    char why[512];
    assert_false(s_node_up(&rig, 2, why, sizeof why));
    printf("  status: node 2 down: %s\n", why);
    s_rig_down(&rig);
}

static void test_kill_without_replicas(void **state)
{
    (void)state;
    rig_t rig;
    s_rig_up(&rig, "kill-r1", 2, "--replicas 1 --micro-batches 2");
    generations_send_all(&rig.gens, &rig.conn);
    generations_pump(&rig.gens, &rig.conn, 10, 30);
    const double t_kill = timer_now();
    s_signal_node(&rig, 2, SIGKILL);
    generations_pump(&rig.gens, &rig.conn, -1, 30);
    const double ended = timer_now() - t_kill;
    int n_failed = 0;
    for (int g = 0; g < N_GEN; g++) {
        const generation_t *gen = &rig.gens.gen[g];
        if (!gen->failed) { /* it never needed node 2 after the kill */
            assert_string_equal(gen->got, s_want[g]);
            continue;
        }
        n_failed++;
        assert_int_equal(gen->code, WIRE_CLIENT_UNAVAILABLE);
        if (!strstr(gen->error, "no live replica") || !strstr(gen->error, "node 2"))
            fail_msg("generation %d failed with an unclear error: %s", g, gen->error);
    }
    printf("  kill -9 of node 2 (of 2, 1 replica): %d of %d failed within %.3f s, e.g. %s\n",
           n_failed, N_GEN, ended, rig.gens.gen[0].failed ? rig.gens.gen[0].error : "");
    assert_true(n_failed > 0);
    assert_true(ended < 10.0);

    /* The coordinator is still serving and shows the node down. */
    assert_int_equal(kill(localcluster_pid(rig.run_dir, "coordinator"), 0), 0);
    assert_false(s_node_up(&rig, 2, NULL, 0));
    char cmd[2048], why[512] = "";
    assert_false(s_try_one(&rig, 0, why, sizeof why));
    assert_non_null(strstr(why, "node 2"));

    /* The contract's restart: the node comes back on its endpoint and rejoins. */
    snprintf(cmd, sizeof cmd, "MOE_BIN='%s' '%s/cluster/local.sh' restart-node --run-dir '%s' "
             "--node 2 >/dev/null", s_bin, s_root, rig.run_dir);
    const double t_restart = timer_now();
    assert_int_equal(testutil_run(cmd, NULL), 0);
    const double t_ready = timer_now();
    const double rejoin = s_wait_node(&rig, 2, true, 15);
    printf("  restart-node took %.3f s; node 2 up again %.3f s later\n", t_ready - t_restart,
           rejoin);
    for (int g = 0; g < 4; g++)
        if (!s_try_one(&rig, g, why, sizeof why))
            fail_msg("after the restart, generation %d failed: %s", g, why);
    s_rig_down(&rig);
}

static void test_stopped_node(void **state)
{
    (void)state;
    rig_t rig;
    s_rig_up(&rig, "stop-r2", 3, "--replicas 2");
    generations_send_all(&rig.gens, &rig.conn);
    generations_pump(&rig.gens, &rig.conn, 10, 30);
    const double t_stop = timer_now();
    s_signal_node(&rig, 2, SIGSTOP);
    const double gap = generations_pump(&rig.gens, &rig.conn, -1, 30);
    const double done = timer_now() - t_stop;
    char why[512];
    const bool up = s_node_up(&rig, 2, why, sizeof why);
    printf("  SIGSTOP of node 2 mid-generation: all %d completed %.3f s later, longest pause "
           "%.3f s (reply timeout %d ms); node 2: %s\n", N_GEN, done, gap, REPLY_TIMEOUT_MS,
           up ? "up" : why);
    generations_expect_all(&rig.gens, "SIGSTOP, 2 replicas");
    assert_false(up);
    /* The stopped node had work in flight: it went to the replicas. */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "grep -q 'node 2 failed with .* in flight' '%s/coordinator.log'",
             rig.run_dir);
    assert_int_equal(testutil_run(cmd, NULL), 0);
    assert_true(gap < REPLY_TIMEOUT_MS / 1e3 + 2.0);

    s_signal_node(&rig, 2, SIGCONT);
    printf("  SIGCONT: node 2 up again %.3f s later\n", s_wait_node(&rig, 2, true, 10));

    /* Idle: only the heartbeats can notice. */
    s_signal_node(&rig, 2, SIGSTOP);
    const double detect = s_wait_node(&rig, 2, false, 10);
    s_node_up(&rig, 2, why, sizeof why);
    printf("  SIGSTOP of idle node 2: down after %.3f s (heartbeat %d ms x %d): %s\n", detect,
           HEARTBEAT_MS, HEARTBEAT_MISSES, why);
    assert_true(detect < HEARTBEAT_MS * (HEARTBEAT_MISSES + 1) / 1e3 + 1.5);
    assert_non_null(strstr(why, "heartbeat"));
    s_signal_node(&rig, 2, SIGCONT);
    s_wait_node(&rig, 2, true, 10);
    if (!s_try_one(&rig, 5, why, sizeof why))
        fail_msg("after SIGCONT: %s", why);
    s_rig_down(&rig);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_with_replicas),
        cmocka_unit_test(test_kill_without_replicas),
        cmocka_unit_test(test_stopped_node),
    };
    return cmocka_run_group_tests(tests, s_setup, testutil_tmpdir_teardown);
}
