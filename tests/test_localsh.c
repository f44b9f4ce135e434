/* test_localsh: cluster/local.sh as a user drives it, and the readiness it
 * promises (issue 13):
 *   - --help exits 0 with the usage;
 *   - two `up` at once on one run directory: one starts the cluster, the
 *     other is refused with a clear error and starts nothing, and after
 *     `down` no process of either is left;
 *   - after kill -9 of the coordinator, `up` again is refused naming the live
 *     nodes, and `down` still stops them;
 *   - more nodes than the placement gives work to is refused unless
 *     --allow-idle-nodes;
 *   - `restart-node` returns once the coordinator has the node back: a
 *     request right after it succeeds;
 *   - moe-expert --preload has its hosted weights resident when it announces
 *     its endpoint, and without it not.
 * Every process is found by its command line (which names the run directory),
 * not only by the pid files the script under test writes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/timer.h"
#include "model/config.h"
#include "proto/client_rpc.h"
#include "tests/fixture.h"
#include "tests/localcluster.h"
#include "tests/testutil.h"

static char s_bin[512];
static char s_root[512];   /* the repository (cluster/local.sh is there) */
static char *s_tmp;
static char s_model[700];  /* the mixtral-A fixture: 8 experts, 2 layers */

static int s_setup(void **state)
{
    snprintf(s_bin, sizeof s_bin, "%s", testutil_env("MOE_BIN", "build/bin"));
    if (!getcwd(s_root, sizeof s_root))
        return -1;
    snprintf(s_model, sizeof s_model, "%s/mixtral-A", fixture_root());
    s_tmp = testutil_mkdtemp("test_localsh");
    *state = s_tmp;
    return s_tmp ? 0 : -1;
}

static int s_pids_naming(const char *needle, pid_t *pids, int cap);

/* A case that failed midway may have left processes of its run directory
 * (they name it): stop them, by pid, before removing it. */
static int s_teardown(void **state)
{
    (void)state;
    pid_t pids[64];
    const int n = s_pids_naming(s_tmp, pids, 64);
    for (int i = 0; i < n; i++)
        kill(pids[i], SIGKILL);
    testutil_rmtree(s_tmp);
    free(s_tmp);
    return 0;
}

/* Runs `local.sh ARGS` (stdout into *out, stderr into *err_text, either may be
 * NULL); returns its exit status. */
static int s_localsh(const char *args, char **out, char **err_text)
{
    char prefix[1200], prog[600];
    snprintf(prefix, sizeof prefix, "env MOE_BIN='%s' MOE_START_TIMEOUT=60 timeout 120",
             s_bin);
    snprintf(prog, sizeof prog, "%s/cluster/local.sh", s_root);
    return testutil_run_program(prefix, prog, args, out, err_text);
}

/* The pids of the live processes whose command line holds needle (the run
 * directory), at most cap into pids; returns the count. */
static int s_pids_naming(const char *needle, pid_t *pids, int cap)
{
    int n = 0;
    DIR *proc = opendir("/proc");
    if (!proc)
        return 0;
    for (struct dirent *de; (de = readdir(proc)) && n < cap;) {
        const pid_t pid = (pid_t)atol(de->d_name);
        if (pid <= 0 || pid == getpid())
            continue;
        char path[300], cmd[4096];
        snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        const size_t len = fread(cmd, 1, sizeof cmd - 1, f);
        fclose(f);
        for (size_t i = 0; i < len; i++)
            if (cmd[i] == '\0')
                cmd[i] = ' ';
        cmd[len] = '\0';
        /* moe-* programs only: not the shell of a local.sh still exiting. */
        if (strstr(cmd, needle) && strstr(cmd, "/moe-"))
            pids[n++] = pid;
    }
    closedir(proc);
    return n;
}

/* Waits (bounded) until no process names dir; fails the test naming one left. */
static void s_expect_none_left(const char *dir)
{
    pid_t pids[64];
    int n = 0;
    for (double t0 = timer_now(); timer_now() - t0 < 15; usleep(100000))
        if ((n = s_pids_naming(dir, pids, 64)) == 0)
            return;
    fail_msg("%d process(es) of %s left, e.g. pid %d", n, dir, (int)pids[0]);
}

static void s_run_dir(char *dir, size_t size, const char *name)
{
    snprintf(dir, size, "%s/%s", s_tmp, name);
}

static void test_help_exits_0(void **state)
{
    (void)state;
    char *out = NULL;
    assert_int_equal(s_localsh("--help", &out, NULL), 0);
    assert_non_null(strstr(out, "local.sh up"));
    assert_non_null(strstr(out, "restart-node"));
    free(out);
    out = NULL;
    assert_int_equal(s_localsh("up --help", &out, NULL), 0);
    assert_non_null(strstr(out, "local.sh down"));
    free(out);
    /* A usage error still exits 2, its text on stderr. */
    assert_int_equal(s_localsh("", NULL, NULL), 2);
}

static void test_concurrent_up(void **state)
{
    (void)state;
    char dir[800], cmd[4096];
    s_run_dir(dir, sizeof dir, "concurrent");
    /* Both at once, from one shell: each one's status and stderr in files. */
    snprintf(cmd, sizeof cmd,
             "for k in 1 2; do (MOE_BIN='%s' MOE_START_TIMEOUT=60 timeout 120 "
             "'%s/cluster/local.sh' up --model '%s' --nodes 2 --run-dir '%s' "
             ">'%s/out'$k 2>'%s/err'$k; echo $? >'%s/rc'$k) & done; wait",
             s_bin, s_root, s_model, dir, s_tmp, s_tmp, s_tmp);
    assert_int_equal(testutil_run(cmd, NULL), 0);
    int rc[2], winner = -1;
    char *err_text[2];
    for (int k = 0; k < 2; k++) {
        char path[900];
        snprintf(path, sizeof path, "%s/rc%d", s_tmp, k + 1);
        char *text = testutil_read_file(path, NULL);
        assert_non_null(text);
        rc[k] = atoi(text);
        free(text);
        snprintf(path, sizeof path, "%s/err%d", s_tmp, k + 1);
        err_text[k] = testutil_read_file(path, NULL);
        assert_non_null(err_text[k]);
        if (rc[k] == 0)
            winner = k;
    }
    printf("  two up at once: exit %d and %d; the refused one said: %s", rc[0], rc[1],
           err_text[winner == 0 ? 1 : 0]);
    assert_true(winner >= 0);
    const int loser = 1 - winner;
    assert_int_equal(rc[loser], 1);
    const char *why = err_text[loser];
    assert_non_null(strstr(why, "local.sh: "));
    assert_true(strstr(why, "another local.sh") || strstr(why, "still running"));
    assert_null(strstr(why, "No such file"));
    /* Exactly the winner's cluster runs: a coordinator and 2 nodes. */
    pid_t pids[64];
    assert_int_equal(s_pids_naming(dir, pids, 64), 3);
    char args[1000];
    snprintf(args, sizeof args, "down --run-dir '%s'", dir);
    assert_int_equal(s_localsh(args, NULL, NULL), 0);
    s_expect_none_left(dir);
    free(err_text[0]);
    free(err_text[1]);
}

/* `local.sh up` of nodes nodes on dir is refused (exit 1) with an error
 * holding every one of needles (NULL-ended); what names the case. */
static void s_expect_up_refused(const char *dir, int nodes, const char *what,
                                const char *const *needles)
{
    char args[2000];
    snprintf(args, sizeof args, "up --model '%s' --nodes %d --run-dir '%s'", s_model, nodes,
             dir);
    char *why = NULL;
    assert_int_equal(s_localsh(args, NULL, &why), 1);
    printf("  %s: %s", what, why);
    for (int i = 0; needles[i]; i++)
        if (!strstr(why, needles[i]))
            fail_msg("the error does not say '%s'", needles[i]);
    free(why);
}

static void test_up_after_kill9_of_coordinator(void **state)
{
    (void)state;
    char dir[800], args[2000];
    s_run_dir(dir, sizeof dir, "kill9");
    char *ep = localcluster_up(s_model, 2, dir, NULL);
    free(ep);
    const pid_t coord = localcluster_pid(dir, "coordinator");
    assert_int_equal(kill(coord, SIGKILL), 0);
    for (double t0 = timer_now(); testutil_running(coord) && timer_now() - t0 < 10;)
        usleep(20000);
    s_expect_up_refused(dir, 2, "up after kill -9 of the coordinator",
                        (const char *[]){"expert-1 (pid", "expert-2 (pid", "local.sh down", NULL});
    pid_t pids[64];
    assert_int_equal(s_pids_naming(dir, pids, 64), 2); /* the nodes, nothing new */
    snprintf(args, sizeof args, "down --run-dir '%s'", dir);
    assert_int_equal(s_localsh(args, NULL, NULL), 0);
    s_expect_none_left(dir);
}

static void test_idle_nodes_refused(void **state)
{
    (void)state;
    char dir[800];
    s_run_dir(dir, sizeof dir, "idle");
    s_expect_up_refused(dir, 9, "up --nodes 9 on 8 experts",
                        (const char *[]){"node(s) 9 of 9 would host no expert",
                                         "--allow-idle-nodes", NULL});
    s_expect_none_left(dir);
}

/* --coordinators out of range, or several coordinators with an HTTP port
 * that cannot be counted on: one clear error each, nothing started; status
 * of a folder without a cluster says so. (A cluster of two coordinators is
 * tests/test_multicoord.c's.) */
static void test_bad_coordinators(void **state)
{
    (void)state;
    char dir[800], args[2000];
    s_run_dir(dir, sizeof dir, "coords");
    const struct {
        const char *opts, *needle;
    } bad[] = {
        {"--coordinators 0", "--coordinators must be an integer from 1 to 99"},
        {"--coordinators two", "--coordinators must be an integer from 1 to 99"},
        {"--coordinators 100", "--coordinators must be an integer from 1 to 99"},
        {"--coordinators 2 --http 127.0.0.1:web", "a numeric port for several coordinators"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(args, sizeof args, "up --model '%s' --nodes 2 --run-dir '%s' %s", s_model,
                 dir, bad[i].opts);
        char *why = NULL;
        assert_int_equal(s_localsh(args, NULL, &why), 1);
        if (!strstr(why, bad[i].needle))
            fail_msg("%s: the error does not say '%s': %s", bad[i].opts, bad[i].needle, why);
        free(why);
    }
    s_expect_none_left(dir);
    snprintf(args, sizeof args, "status --run-dir '%s'", dir);
    char *why = NULL;
    assert_int_equal(s_localsh(args, NULL, &why), 1);
    assert_non_null(strstr(why, "no coordinator in"));
    free(why);
}

/* A node that fails to start: the nodes this `up` started are stopped, the
 * error names the node and shows its log, and nothing is left. */
static void test_failed_start_stops_what_it_started(void **state)
{
    (void)state;
    char dir[800], fake[800], cmd[8000], args[2000];
    s_run_dir(dir, sizeof dir, "failed");
    s_run_dir(fake, sizeof fake, "fakebin");
    /* The programs of $MOE_BIN, but node 3 of moe-expert dies after a moment. */
    char real_bin[700];
    if (!realpath(s_bin, real_bin))
        fail_msg("no %s", s_bin);
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s' && for p in '%s'/moe-*; do ln -sf \"$p\" '%s'/; done "
             "&& rm '%s/moe-expert' && printf '%%s\\n' '#!/bin/sh' "
             "'case \"$*\" in *\"--node-id 3 \"*) sleep 1; echo node 3 broke >&2; exit 1;; esac' "
             "'exec \"%s/moe-expert\" \"$@\"' >'%s/moe-expert' && chmod +x '%s/moe-expert'",
             fake, real_bin, fake, fake, real_bin, fake, fake);
    assert_int_equal(testutil_run(cmd, NULL), 0);
    char prefix[1000], prog[600];
    snprintf(prefix, sizeof prefix, "env MOE_BIN='%s' timeout 120", fake);
    snprintf(prog, sizeof prog, "%s/cluster/local.sh", s_root);
    snprintf(args, sizeof args, "up --model '%s' --nodes 4 --run-dir '%s'", s_model, dir);
    char *why = NULL;
    assert_int_equal(testutil_run_program(prefix, prog, args, NULL, &why), 1);
    printf("  a node failing at start: %s", why);
    assert_non_null(strstr(why, "local.sh: expert-3 exited during start"));
    assert_non_null(strstr(why, "node 3 broke"));
    free(why);
    s_expect_none_left(dir);
    snprintf(cmd, sizeof cmd, "ls '%s'/*.pid", dir);
    assert_int_not_equal(testutil_run(cmd, NULL), 0); /* no stale pid file */
}

/* True when `moe-client status` shows node `node` DOWN. */
static bool s_node_down(const char *ep, int node)
{
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --timeout 5 --connect '%s' status | "
             "awk '$1 == %d && $2 == \"DOWN\" { f = 1 } END { exit !f }'", s_bin, ep, node);
    return testutil_run(cmd, NULL) == 0;
}

static void test_restart_node_then_request(void **state)
{
    (void)state;
    char dir[800], args[2000], cmd[3000];
    s_run_dir(dir, sizeof dir, "restart");
    char *ep = localcluster_up(s_model, 2, dir, NULL);
    assert_int_equal(kill(localcluster_pid(dir, "expert-2"), SIGKILL), 0);
    bool down = false;
    for (double t0 = timer_now(); !down && timer_now() - t0 < 20; usleep(200000))
        down = s_node_down(ep, 2);
    assert_true(down);
    snprintf(args, sizeof args, "restart-node --run-dir '%s' --node 2", dir);
    const double t0 = timer_now();
    char *out = NULL;
    assert_int_equal(s_localsh(args, &out, NULL), 0);
    const double took = timer_now() - t0;
    /* At once: a generation long enough to need node 2's experts (half of
     * them, 1 replica) succeeds. */
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --timeout 30 --connect '%s' generate "
             "--prompt-ids 1,5,9,13,17,21,25,29 --max-tokens 8 >/dev/null", s_bin, ep);
    const int rc = testutil_run(cmd, NULL);
    printf("  restart-node returned after %.2f s (%s); a generation right after: exit %d\n",
           took, testutil_last_line(out), rc);
    free(out);
    assert_int_equal(rc, 0);
    localcluster_down(dir);
    free(ep);
    s_expect_none_left(dir);
}

/* Starts moe-expert node 1 of 2 of model (extra options), waits for its
 * endpoint and returns its resident bytes then; stops it. */
static size_t s_node_rss(const char *model, const char *extra)
{
    char ep_path[900], cmd[3000];
    snprintf(ep_path, sizeof ep_path, "%s/rss-node.endpoint", s_tmp);
    unlink(ep_path);
    snprintf(cmd, sizeof cmd, "'%s/moe-expert' --model '%s' --node-id 1 --nodes 2 --threads 1 "
             "--endpoint-file '%s' %s </dev/null >/dev/null 2>&1 & echo $!", s_bin, model,
             ep_path, extra);
    char *pid_text = NULL;
    assert_int_equal(testutil_run(cmd, &pid_text), 0);
    const pid_t pid = (pid_t)atoi(pid_text);
    free(pid_text);
    bool ready = false;
    for (double t0 = timer_now(); !ready && timer_now() - t0 < 60; usleep(20000))
        ready = access(ep_path, F_OK) == 0;
    const size_t rss = localcluster_rss(pid);
    kill(pid, SIGTERM);
    for (double t0 = timer_now(); testutil_running(pid) && timer_now() - t0 < 10;)
        usleep(20000);
    assert_true(ready);
    return rss;
}

static void test_preload_makes_weights_resident(void **state)
{
    (void)state;
    char model[900];
    testutil_make_model(s_tmp, "small", "small", 1, model, sizeof model);
    config_t cfg;
    err_t err = {0};
    if (config_load(&cfg, model, &err) < 0)
        fail_msg("%s", err.msg);
    /* Node 1 of 2, default split: half the experts of every layer. */
    const double hosted = (double)cfg.n_layers * (cfg.n_experts / 2) * 3.0 *
                          cfg.hidden_size * cfg.intermediate_size * sizeof(float);
    const size_t lazy = s_node_rss(model, "");
    const size_t preloaded = s_node_rss(model, "--preload");
    printf("  node hosting %.1f MB of experts: RSS at ready %.1f MB without --preload, "
           "%.1f MB with it\n", hosted / 1e6, lazy / 1e6, preloaded / 1e6);
    assert_true(lazy > 0);
    assert_true((double)preloaded - (double)lazy >= 0.95 * hosted);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help_exits_0),
        cmocka_unit_test(test_concurrent_up),
        cmocka_unit_test(test_up_after_kill9_of_coordinator),
        cmocka_unit_test(test_idle_nodes_refused),
        cmocka_unit_test(test_bad_coordinators),
        cmocka_unit_test(test_failed_start_stops_what_it_started),
        cmocka_unit_test(test_restart_node_then_request),
        cmocka_unit_test(test_preload_makes_weights_resident),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
