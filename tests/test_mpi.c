/* test_mpi: moe-mpi started by a real mpirun on loopback, as a user runs it:
 * four ranks (a coordinator and three nodes) become ready by writing the
 * client endpoint file; moe-client's answers equal moe-run's and status shows
 * three nodes up; SIGTERM to the ranks stops them all with exit status 0, and
 * SIGTERM to mpirun leaves no rank behind. A model whose checkpoint is
 * truncated makes the node ranks fail: mpirun exits non-zero, in bounded time,
 * with a message naming the failing rank and host. With --coordinators 2,
 * ranks 0 and 1 are coordinators over nodes on ranks 2 and 3: both
 * endpoints come back comma-separated, moe-client given both crosschecks
 * against moe-run, each coordinator's status shows both nodes up and
 * serving 2 coordinators, and SIGTERM stops all four ranks cleanly.
 *
 * This test makes no MPI call; it runs mpirun. As root, Open MPI needs
 * OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM); the machine has few cores, hence
 * --oversubscribe; only the loopback interface is used. Under the sanitizers
 * leak detection is off in the ranks (see s_setup). */
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
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/idlist.h"
#include "core/mem.h"
#include "tests/crosscheck.h"
#include "tests/fixture.h"
#include "tests/testutil.h"

enum { READY_TIMEOUT_S = 60, STOP_TIMEOUT_S = 20, FAIL_TIMEOUT_S = 60 };

static char s_bin[512];
static char s_root[512];
static char *s_tmp;
static pid_t s_mpirun = -1;   /* a running mpirun (its own process group) */

static const char s_mpi_opts[] =
    "--oversubscribe --mca btl self,tcp --mca oob_tcp_if_include lo "
    "--mca btl_tcp_if_include lo";

static int s_setup(void **state)
{
    (void)state;
    snprintf(s_bin, sizeof s_bin, "%s", testutil_env("MOE_BIN", "build/bin"));
    if (!getcwd(s_root, sizeof s_root))
        return -1;
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    /* Open MPI's plugins allocate memory they never free and are unloaded
     * at MPI_Finalize, so LeakSanitizer reports them as "<unknown module>"
     * frames that no suppression can name (tried: suppressions for
     * libmpi/libopen-pal/libopen-rte/mca_* with
     * OMPI_MCA_mca_base_component_disable_dlclose=1). Leak detection is
     * therefore off in the ranks under SANITIZE=1; ASan/UBSan errors still
     * fail the test (the log is checked for "Sanitizer"). TODO: re-enable. */
    setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
    s_tmp = testutil_mkdtemp("test_mpi");
    return s_tmp ? 0 : -1;
}

/* Kills what a failed test left: mpirun's whole process group. */
static void s_kill_leftovers(void)
{
    if (s_mpirun > 0) {
        kill(-s_mpirun, SIGKILL);
        waitpid(s_mpirun, NULL, 0);
        s_mpirun = -1;
    }
}

static int s_teardown(void **state)
{
    (void)state;
    s_kill_leftovers();
    testutil_rmtree(s_tmp);
    free(s_tmp);
    return 0;
}

static int s_test_teardown(void **state)
{
    (void)state;
    s_kill_leftovers();
    return 0;
}

/* Starts `mpirun <opts> -np n moe-mpi <args>` in its own process group with
 * stdout and stderr to log. */
static pid_t s_launch(int n, const char *args, const char *log)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "exec mpirun %s -np %d '%s/moe-mpi' %s >'%s' 2>&1", s_mpi_opts,
             n, s_bin, args, log);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setpgid(0, 0);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid);
    s_mpirun = pid;
    return pid;
}

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Waits at most limit_s for pid; returns its wait status or -1 on timeout. */
static int s_wait_for(pid_t pid, double limit_s)
{
    double end = s_now() + limit_s;
    while (s_now() < end) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        usleep(50 * 1000);
    }
    return -1;
}

static void s_print_log(const char *log)
{
    char *text = testutil_read_file(log, NULL);
    printf("---- %s\n%s----\n", log, text ? text : "(none)");
    free(text);
}

/* Waits for the endpoint file; fails when mpirun exits first or on timeout.
 * Returns the endpoint (malloc'd). */
static char *s_wait_ready(pid_t pid, const char *ep_file, const char *log)
{
    double end = s_now() + READY_TIMEOUT_S;
    while (s_now() < end) {
        size_t n = 0;
        char *ep = testutil_read_file(ep_file, &n);
        if (ep && n > 0 && ep[n - 1] == '\n') {
            ep[n - 1] = '\0';
            assert_true(strncmp(ep, "tcp://", 6) == 0);
            return ep;
        }
        free(ep);
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            s_mpirun = -1;
            s_print_log(log);
            fail_msg("mpirun exited (status %d) before the cluster was ready", st);
        }
        usleep(100 * 1000);
    }
    s_print_log(log);
    fail_msg("no endpoint in %s after %d s", ep_file, READY_TIMEOUT_S);
    return NULL;
}

/* True when no process of pid's group is left. */
static bool s_group_gone(pid_t pgid)
{
    return kill(-pgid, 0) < 0 && errno == ESRCH;
}

/* Sends sig to mpirun's children (the ranks) by pid. */
static void s_signal_ranks(pid_t mpirun, int sig)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "pgrep -P %ld", (long)mpirun);
    char *out = NULL;
    assert_int_equal(testutil_run(cmd, &out), 0);
    int n = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        pid_t p = (pid_t)atol(line);
        if (p > 0 && kill(p, sig) == 0)
            n++;
    }
    free(out);
    printf("  SIGTERM to %d rank processes\n", n);
    assert_true(n > 0);
}

static void s_assert_no_sanitizer_report(const char *log)
{
    char *text = testutil_read_file(log, NULL);
    assert_non_null(text);
    if (strstr(text, "Sanitizer")) {
        s_print_log(log);
        fail_msg("sanitizer report in %s", log);
    }
    free(text);
}

/* mpirun -np n of moe-mpi on mixtral-A, ready: its client endpoint
 * (malloc'd), *pid the mpirun; extra options follow the usual ones. The log
 * is s_tmp/NAME.log (into log[700]). */
static char *s_up(int n, const char *name, const char *extra, char log[700], pid_t *pid)
{
    char model[700], ep_file[700], args[2048];
    snprintf(model, sizeof model, "%s/mixtral-A", fixture_root());
    snprintf(ep_file, sizeof ep_file, "%s/%s.endpoint", s_tmp, name);
    snprintf(log, 700, "%s/%s.log", s_tmp, name);
    snprintf(args, sizeof args, "--model '%s' --endpoint-file '%s' --bind-host 127.0.0.1 "
             "--threads 1 %s", model, ep_file, extra);
    *pid = s_launch(n, args, log);
    return s_wait_ready(*pid, ep_file, log);
}

/* moe-client through endpoint(s) answers as moe-run, for mixtral-A. */
static void s_crosscheck(const char *endpoints)
{
    char model[700];
    snprintf(model, sizeof model, "%s/mixtral-A", fixture_root());
    fixture_t *fx = fixture_load(model);
    assert_non_null(fx);
    crosscheck_fixture(fx, endpoints, s_bin, s_tmp, "");
    fixture_destroy(&fx);
}

/* SIGTERM to every rank, which must all stop cleanly: mpirun exits 0. */
static void s_stop_cleanly(pid_t pid, const char *log, int n)
{
    s_signal_ranks(pid, SIGTERM);
    int st = s_wait_for(pid, STOP_TIMEOUT_S);
    if (st == -1) {
        s_print_log(log);
        fail_msg("mpirun still running %d s after SIGTERM to its ranks", STOP_TIMEOUT_S);
    }
    s_mpirun = -1;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        s_print_log(log);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char *text = testutil_read_file(log, NULL), want[64];
    snprintf(want, sizeof want, "all %d ranks stopped cleanly", n);
    assert_non_null(strstr(text, want));
    free(text);
    assert_true(s_group_gone(pid));
    s_assert_no_sanitizer_report(log);
}

static void test_mpirun_cluster(void **state)
{
    (void)state;
    char log[700], cmd[2048];
    pid_t pid;
    char *ep = s_up(4, "mpirun", "", log, &pid);
    printf("  mpirun -np 4: ready at %s\n", ep);

    s_crosscheck(ep);

    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' status", s_bin, ep);
    char *status = NULL;
    assert_int_equal(testutil_run(cmd, &status), 0);
    assert_non_null(strstr(status, "nodes: 3 up, 0 down"));
    free(status);

    s_stop_cleanly(pid, log, 4);
    free(ep);
}

static void test_mpirun_two_coordinators(void **state)
{
    (void)state;
    char log[700], cmd[2048];
    /* Two coordinators need a third rank for a node: a usage error. */
    snprintf(log, sizeof log, "%s/c2-short.log", s_tmp);
    pid_t pid = s_launch(2, "--model m --coordinators 2", log);
    int st = s_wait_for(pid, FAIL_TIMEOUT_S);
    s_mpirun = -1;
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    char *text = testutil_read_file(log, NULL);
    assert_non_null(text);
    if (!strstr(text, "needs at least 3 ranks (2 coordinators and a node); got 2"))
        fail_msg("-np 2 --coordinators 2 did not say why:\n%s", text);
    free(text);
    char *eps = s_up(4, "mpirun-c2", "--coordinators 2 --heartbeat-ms 200", log, &pid);
    char *comma = strchr(eps, ',');
    if (!comma || strchr(comma + 1, ','))
        fail_msg("--coordinators 2: endpoint file holds '%s', not two endpoints", eps);
    printf("  mpirun -np 4 --coordinators 2: ready at %s\n", eps);

    s_crosscheck(eps);

    /* Each coordinator: both nodes up; the nodes count both (a heartbeat
     * or two after the start). */
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' status", s_bin, eps);
    char *status = NULL;
    for (int i = 0; i < 50; i++) {
        free(status);
        status = NULL;
        assert_int_equal(testutil_run(cmd, &status), 0);
        const char *second = strstr(status, "== coordinator 2 at");
        if (second && strstr(status, "nodes: 2 up, 0 down") &&
            strstr(second, "nodes: 2 up, 0 down") &&
            strstr(strstr(status, "serving 2 coordinators"), "== coordinator 2 at") &&
            strstr(second, "serving 2 coordinators"))
            break;
        usleep(100 * 1000);
    }
    if (!strstr(status, "== coordinator 2 at") || !strstr(status, "serving 2 coordinators"))
        fail_msg("status of both coordinators:\n%s", status);
    free(status);
    s_stop_cleanly(pid, log, 4);
    free(eps);
}

/* A listening TCP socket on 127.0.0.1 whose port is one above a free one:
 * the fd, the free port in *below. */
static int s_busy_port_above_free(int *below)
{
    for (int tries = 0; tries < 20; tries++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof a;
        assert_true(fd >= 0);
        assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
        assert_int_equal(listen(fd, 1), 0);
        assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
        const int port = ntohs(a.sin_port);
        int probe = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in b = a;
        b.sin_port = htons((uint16_t)(port - 1));
        const bool free_below = bind(probe, (struct sockaddr *)&b, sizeof b) == 0;
        close(probe);
        if (free_below) {
            *below = port - 1;
            return fd;
        }
        close(fd);
    }
    fail_msg("no port with a free one below it");
    return -1;
}

/* The second coordinator cannot start (its HTTP port, the first's + 1, is
 * taken): rank 0 hears it, stops its own coordinator and the nodes, and the
 * launch fails naming coordinator 2. */
static void test_second_coordinator_fails(void **state)
{
    (void)state;
    char model[700], log[700], args[2048];
    int port = 0;
    const int busy = s_busy_port_above_free(&port);
    snprintf(model, sizeof model, "%s/mixtral-A", fixture_root());
    snprintf(log, sizeof log, "%s/c2-fail.log", s_tmp);
    snprintf(args, sizeof args, "--model '%s' --bind-host 127.0.0.1 --threads 1 "
             "--coordinators 2 --http 127.0.0.1:%d", model, port);
    pid_t pid = s_launch(4, args, log);
    int st = s_wait_for(pid, FAIL_TIMEOUT_S);
    close(busy);
    if (st == -1) {
        s_print_log(log);
        fail_msg("mpirun did not exit within %d s", FAIL_TIMEOUT_S);
    }
    s_mpirun = -1;
    char *text = testutil_read_file(log, NULL);
    assert_non_null(text);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 1 || !strstr(text, "coordinator 2 (rank 1): "))
        fail_msg("exit %d, log:\n%s", WIFEXITED(st) ? WEXITSTATUS(st) : -1, text);
    char *line = strstr(text, "moe-mpi: serve: ");
    assert_non_null(line);
    line[strcspn(line, "\n")] = '\0';
    printf("  %s\n", line);
    free(text);
    const double end = s_now() + STOP_TIMEOUT_S;
    while (!s_group_gone(pid) && s_now() < end)
        usleep(50 * 1000);
    assert_true(s_group_gone(pid));
}

/* SIGTERM to mpirun (as Ctrl-C would): mpirun forwards it and ends the job;
 * every rank is gone within the bound. Open MPI's own exit status for a
 * signalled job is not ours to choose, so only "gone" is checked. */
static void test_mpirun_sigterm(void **state)
{
    (void)state;
    char log[700];
    pid_t pid;
    char *ep = s_up(3, "mpirun2", "", log, &pid);
    assert_int_equal(kill(pid, SIGTERM), 0);
    int st = s_wait_for(pid, STOP_TIMEOUT_S);
    if (st == -1) {
        s_print_log(log);
        fail_msg("mpirun still running %d s after SIGTERM", STOP_TIMEOUT_S);
    }
    s_mpirun = -1;
    double end = s_now() + STOP_TIMEOUT_S;
    while (!s_group_gone(pid) && s_now() < end)
        usleep(50 * 1000);
    assert_true(s_group_gone(pid));
    printf("  SIGTERM to mpirun: exit status %d, no rank left\n",
           WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    free(ep);
}

/* Node ranks cannot load their experts from a truncated checkpoint. */
static void test_failing_rank(void **state)
{
    (void)state;
    char model[700], log[700], args[2048], path[800];
    snprintf(model, sizeof model, "%s/truncated", s_tmp);
    assert_int_equal(mkdir(model, 0755), 0);
    const char *src = fixture_root();
    size_t n = 0;
    snprintf(path, sizeof path, "%s/mixtral-A/config.json", src);
    char *cfg = testutil_read_file(path, &n);
    assert_non_null(cfg);
    snprintf(path, sizeof path, "%s/config.json", model);
    assert_int_equal(testutil_write_file(path, cfg, n), 0);
    free(cfg);
    snprintf(path, sizeof path, "%s/mixtral-A/model.safetensors", src);
    char *st_bytes = testutil_read_file(path, &n);
    assert_non_null(st_bytes);
    snprintf(path, sizeof path, "%s/model.safetensors", model);
    assert_int_equal(testutil_write_file(path, st_bytes, n / 3), 0); /* header intact */
    free(st_bytes);

    snprintf(log, sizeof log, "%s/fail.log", s_tmp);
    snprintf(args, sizeof args, "--model '%s' --bind-host 127.0.0.1 --threads 1", model);
    pid_t pid = s_launch(3, args, log);
    int st = s_wait_for(pid, FAIL_TIMEOUT_S);
    if (st == -1) {
        s_print_log(log);
        fail_msg("mpirun did not exit within %d s", FAIL_TIMEOUT_S);
    }
    s_mpirun = -1;
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) != 0);
    char host[256] = "";
    gethostname(host, sizeof host);
    char want[400];
    snprintf(want, sizeof want, "moe-mpi: start: rank 1 (host %s): ", host);
    char *text = testutil_read_file(log, NULL);
    assert_non_null(text);
    if (!strstr(text, want))
        s_print_log(log);
    assert_non_null(strstr(text, want));
    char *line = strstr(text, want);
    char *nl = strchr(line, '\n');
    if (nl)
        *nl = '\0';
    printf("  %s\n", line);
    free(text);
    double end = s_now() + STOP_TIMEOUT_S;
    while (!s_group_gone(pid) && s_now() < end)
        usleep(50 * 1000);
    assert_true(s_group_gone(pid));
}

/* The coordinator options moe-mpi shares with moe-coordinator
 * (coordinator/coord_options.h). */
static const char *const s_coord_options[] = {
    "--placement", "--placement-groups", "--replicas", "--endpoint-file", "--threads",
    "--reply-timeout-ms", "--hello-timeout-ms", "--heartbeat-ms", "--heartbeat-misses",
    "--max-context", "--prefill-rows", "--max-seqs", "--queue-limit", "--kv-memory",
    "--deadline-ms", "--curve-key", "--curve-nodes", "--curve-clients",
    "--max-tokens-limit", "--max-requests-per-client",
};

/* Both programs list every shared option and refuse a bad value of each
 * numeric one with the same message. */
static void test_shares_coordinator_options(void **state)
{
    (void)state;
    char cmd[4096], log[700];
    snprintf(log, sizeof log, "%s/help.log", s_tmp);
    snprintf(cmd, sizeof cmd, "'%s/moe-coordinator' --help", s_bin);
    char *coord_help = NULL;
    assert_int_equal(testutil_run(cmd, &coord_help), 0);
    pid_t pid = s_launch(2, "--help", log);
    int st = s_wait_for(pid, FAIL_TIMEOUT_S);
    s_mpirun = -1;
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char *mpi_help = testutil_read_file(log, NULL);
    assert_non_null(mpi_help);
    for (size_t i = 0; i < sizeof s_coord_options / sizeof *s_coord_options; i++) {
        char line[128];
        snprintf(line, sizeof line, "\n  %s ", s_coord_options[i]);
        if (!strstr(coord_help, line) || !strstr(mpi_help, line))
            fail_msg("%s is not in both helps", s_coord_options[i]);
    }
    free(mpi_help);
    free(coord_help);

    const char *bad[] = {"--heartbeat-ms 0", "--max-seqs x", "--kv-memory -1",
                         "--max-requests-per-client 2147483648"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(cmd, sizeof cmd, "'%s/moe-coordinator' --model m --node tcp://x:1 %s 2>&1",
                 s_bin, bad[i]);
        char *coord_err = NULL;
        assert_int_equal(testutil_run(cmd, &coord_err), 2);
        char args[256];
        snprintf(args, sizeof args, "--model m %s", bad[i]);
        pid = s_launch(2, args, log);
        st = s_wait_for(pid, FAIL_TIMEOUT_S);
        s_mpirun = -1;
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) != 0);
        char *mpi_err = testutil_read_file(log, NULL);
        assert_non_null(mpi_err);
        /* "moe-coordinator: MSG (see --help)" and "moe-mpi: args: rank 0 (...): MSG" */
        char *msg = strstr(coord_err, ": ");
        assert_non_null(msg);
        msg += 2;
        char *end = strstr(msg, " (see --help)");
        assert_non_null(end);
        *end = '\0';
        printf("  %s: %s\n", bad[i], msg);
        if (!strstr(mpi_err, msg))
            fail_msg("moe-mpi did not say '%s':\n%s", msg, mpi_err);
        free(mpi_err);
        free(coord_err);
    }
}

/* The shared options reach rank 0's coordinator: a generation above
 * --max-tokens-limit is refused, --heartbeat-ms is taken, and STATUS shows the
 * nodes up. */
static void test_coordinator_options_applied(void **state)
{
    (void)state;
    char log[700], cmd[2048];
    pid_t pid;
    char *ep = s_up(3, "options", "--max-tokens-limit 2 --heartbeat-ms 100 "
                    "--heartbeat-misses 2 --max-seqs 1 --queue-limit 1", log, &pid);
    char *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' generate --prompt-ids 1,2 "
             "--max-tokens 2 --ignore-eos", s_bin, ep);
    assert_int_equal(testutil_run(cmd, &out), 0);
    free(out);
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' generate --prompt-ids 1,2 "
             "--max-tokens 3 2>&1", s_bin, ep);
    assert_int_equal(testutil_run(cmd, &out), 1);
    printf("  --max-tokens 3 above --max-tokens-limit 2: %s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' status", s_bin, ep);
    assert_int_equal(testutil_run(cmd, &out), 0);
    assert_non_null(strstr(out, "nodes: 2 up, 0 down"));
    assert_non_null(strstr(out, "requests served: 1"));
    free(out);
    kill(pid, SIGTERM);
    s_wait_for(pid, STOP_TIMEOUT_S);
    s_mpirun = -1;
    free(ep);
}

/* CURVE through moe-mpi: rank 0 serves clients of keys/clients and greets
 * nodes that load keys/node-I.key and allow keys/coordinators; an allowed
 * client is answered (the nodes are up), a client without CURVE is not, and
 * the options must come all together. */
static void test_curve(void **state)
{
    (void)state;
    char keys[700], cmd[4096], extra[4096], log[700];
    snprintf(keys, sizeof keys, "%s/keys", s_tmp);
    snprintf(cmd, sizeof cmd, "'%s/moe-keygen' --out '%s' --name coordinator --name node-1 "
             "--name node-2 --name alice >/dev/null && cd '%s' && mkdir clients coordinators "
             "&& cp alice.pub clients/ && cp coordinator.pub coordinators/", s_bin, keys, keys);
    assert_int_equal(testutil_run(cmd, NULL), 0);
    snprintf(extra, sizeof extra, "--curve-key '%s/coordinator.key' --curve-nodes '%s' "
             "--curve-clients '%s/clients' --curve-coordinators '%s/coordinators'", keys, keys,
             keys, keys);
    pid_t pid;
    char *ep = s_up(3, "curve", extra, log, &pid);
    char *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' --curve-key '%s/alice.key' "
             "--curve-server '%s/coordinator.pub' status", s_bin, ep, keys, keys);
    assert_int_equal(testutil_run(cmd, &out), 0);
    assert_non_null(strstr(out, "nodes: 2 up, 0 down"));
    free(out);
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' --timeout 1 status 2>&1", s_bin,
             ep);
    assert_int_equal(testutil_run(cmd, &out), 1);
    printf("  a client without CURVE: %s", out);
    free(out);
    kill(pid, SIGTERM);
    s_wait_for(pid, STOP_TIMEOUT_S);
    s_mpirun = -1;
    free(ep);

    snprintf(extra, sizeof extra, "--model m --curve-key '%s/coordinator.key'", keys);
    pid = s_launch(2, extra, log);
    int st = s_wait_for(pid, FAIL_TIMEOUT_S);
    s_mpirun = -1;
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    char *text = testutil_read_file(log, NULL);
    assert_non_null(strstr(text, "CURVE needs all of --curve-key, --curve-nodes, "
                                 "--curve-clients and --curve-coordinators"));
    free(text);
}

/* Binding a wildcard address in plain TCP warns, once per bound socket
 * (the coordinator's client endpoint and each node's); 127.0.0.1 does not.
 * Only loopback traffic: the coordinator reaches its nodes at 0.0.0.0, which
 * is this host. */
static void test_plain_bind_warning(void **state)
{
    (void)state;
    char log[700], cmd[2048];
    pid_t pid;
    char *ep = s_up(2, "wildcard", "--bind-host 0.0.0.0", log, &pid);
    kill(pid, SIGTERM);
    s_wait_for(pid, STOP_TIMEOUT_S);
    s_mpirun = -1;
    char *text = testutil_read_file(log, NULL);
    assert_non_null(text);
    snprintf(cmd, sizeof cmd, "moe-mpi: coordinator: warning: %s is bound in plain TCP "
             "without CURVE", ep);
    if (!strstr(text, cmd) || !strstr(text, "moe-mpi: node 1: warning: tcp://0.0.0.0:"))
        fail_msg("no plain-TCP warning in:\n%s", text);
    free(text);
    free(ep);

    ep = s_up(2, "loopback", "", log, &pid);
    kill(pid, SIGTERM);
    s_wait_for(pid, STOP_TIMEOUT_S);
    s_mpirun = -1;
    text = testutil_read_file(log, NULL);
    assert_null(strstr(text, "warning: tcp://"));
    free(text);
    free(ep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_shares_coordinator_options, s_test_teardown),
        cmocka_unit_test_teardown(test_coordinator_options_applied, s_test_teardown),
        cmocka_unit_test_teardown(test_curve, s_test_teardown),
        cmocka_unit_test_teardown(test_plain_bind_warning, s_test_teardown),
        cmocka_unit_test_teardown(test_mpirun_cluster, s_test_teardown),
        cmocka_unit_test_teardown(test_mpirun_two_coordinators, s_test_teardown),
        cmocka_unit_test_teardown(test_second_coordinator_fails, s_test_teardown),
        cmocka_unit_test_teardown(test_mpirun_sigterm, s_test_teardown),
        cmocka_unit_test_teardown(test_failing_rank, s_test_teardown),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
