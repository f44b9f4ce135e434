/* test_multihost: the cluster across hosts with real addresses. Five test
 * hosts are network namespaces joined by a bridge (cluster/netns.sh); expert
 * nodes and the coordinator run on hosts 1-4 and the client on host 5, so
 * every byte crosses a (virtual) network link; one case limits the links to
 * 1 Gbit/s and 10 Gbit/s (tc tbf). Skipped, with the reason, only
 * where namespaces cannot be created; where they can (root and `ip netns`
 * work) or under CI, a failure to set the hosts up fails every case. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/idlist.h"
#include "core/mem.h"
#include "core/timer.h"
#include "tests/crosscheck.h"
#include "tests/fixture.h"
#include "tests/testutil.h"

enum { N_HOSTS = 5, MAX_PROCS = 16 };

static char s_root[512];
static char s_bin[512];
static char s_tag[16];
static char *s_tmp;
static bool s_hosts_up;
static bool s_netns_possible;  /* root and `ip netns add` work: the cases could run */
static pid_t s_procs[MAX_PROCS];   /* started on the hosts; killed in teardown */
static int s_n_procs;

static int s_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int s_sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return testutil_run(cmd, NULL);
}

static void s_addr(int host, char *buf, size_t n)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s/cluster/netns.sh' addr --tag %s --host %d", s_root, s_tag,
             host);
    char *out = NULL;
    assert_int_equal(testutil_run(cmd, &out), 0);
    out[strcspn(out, "\n")] = '\0';
    snprintf(buf, n, "%s", out);
    free(out);
}

static int s_setup(void **state)
{
    (void)state;
    if (!getcwd(s_root, sizeof s_root))
        return -1;
    snprintf(s_bin, sizeof s_bin, "%s", testutil_env("MOE_BIN", "build/bin"));
    snprintf(s_tag, sizeof s_tag, "mh%d", (int)getpid() % 100000);
    s_tmp = testutil_mkdtemp("test_multihost");
    if (!s_tmp)
        return -1;
    /* Hosts of earlier runs that died before their teardown (their tag holds
     * their pid) are removed first. */
    s_sh("for t in $(ip netns list 2>/dev/null | sed -n 's/^moe-\\(mh[0-9]*\\)-.*/\\1/p' | "
         "sort -u); do kill -0 \"${t#mh}\" 2>/dev/null || '%s/cluster/netns.sh' destroy "
         "--tag \"$t\"; done", s_root);
    s_sh("'%s/cluster/netns.sh' destroy --tag %s", s_root, s_tag);
    s_hosts_up = s_sh("'%s/cluster/netns.sh' create --tag %s --hosts %d >&2", s_root, s_tag,
                      N_HOSTS) == 0;
    if (!s_hosts_up && geteuid() == 0)
        s_netns_possible = s_sh("ip netns add moe-probe-%d && ip netns delete moe-probe-%d",
                                (int)getpid(), (int)getpid()) == 0;
    return 0;
}

static void s_kill_procs(void)
{
    for (int i = 0; i < s_n_procs; i++)
        kill(s_procs[i], SIGKILL);
    s_n_procs = 0;
}

static int s_teardown(void **state)
{
    (void)state;
    s_kill_procs();
    /* Always runs: removes the namespaces and whatever still runs in them. */
    s_sh("'%s/cluster/netns.sh' destroy --tag %s", s_root, s_tag);
    testutil_rmtree(s_tmp);
    free(s_tmp);
    return 0;
}

/* Starts a program on a host in the background; returns its pid. */
static pid_t s_spawn(int host, const char *log, const char *args)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s/cluster/netns.sh' exec --tag %s --host %d -- %s "
             "</dev/null >'%s' 2>&1 & echo $!", s_root, s_tag, host, args, log);
    char *out = NULL;
    assert_int_equal(testutil_run(cmd, &out), 0);
    pid_t pid = (pid_t)atoi(out);
    free(out);
    assert_true(pid > 0);
    if (s_n_procs < MAX_PROCS)
        s_procs[s_n_procs++] = pid;
    return pid;
}

/* Starts a program on a host as a child of this process (so that its exit
 * status can be collected); returns its pid. */
static pid_t s_spawn_child(int host, const char *log, const char *args)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "exec '%s/cluster/netns.sh' exec --tag %s --host %d -- %s "
             "</dev/null >'%s' 2>&1", s_root, s_tag, host, args, log);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    if (s_n_procs < MAX_PROCS)
        s_procs[s_n_procs++] = pid;
    return pid;
}

/* Prints the end of a process's log, to explain a failure. */
static void s_show_log(const char *log)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "tail -n 30 '%s' >&2", log);
    if (system(cmd) != 0)
        fprintf(stderr, "(no log at %s)\n", log);
}

/* Waits (bounded) for a one-line file; returns its line (malloc'd). On
 * failure shows the end of `log` (may be NULL). */
static char *s_wait_line_log(const char *path, pid_t pid, double seconds, const char *log)
{
    for (double t0 = timer_now(); timer_now() - t0 < seconds; usleep(50000)) {
        char *text = testutil_read_file(path, NULL);
        if (text && strchr(text, '\n')) {
            *strchr(text, '\n') = '\0';
            return text;
        }
        free(text);
        if (pid > 0 && kill(pid, 0) != 0) {
            if (log)
                s_show_log(log);
            fail_msg("process %d exited before writing %s", (int)pid, path);
        }
    }
    if (log)
        s_show_log(log);
    fail_msg("%s did not appear within %.0f s", path, seconds);
    return NULL;
}

/* Waits (bounded) for a one-line file; returns its line (malloc'd). */
static char *s_wait_line(const char *path, pid_t pid, double seconds)
{
    for (double t0 = timer_now(); timer_now() - t0 < seconds; usleep(50000)) {
        char *text = testutil_read_file(path, NULL);
        if (text && strchr(text, '\n')) {
            *strchr(text, '\n') = '\0';
            return text;
        }
        free(text);
        if (pid > 0 && kill(pid, 0) != 0)
            fail_msg("process %d exited before writing %s", (int)pid, path);
    }
    fail_msg("%s did not appear within %.0f s", path, seconds);
    return NULL;
}

/* Runs a client command on host 5; returns its exit status and last line. */
static int s_client(const char *args, char **last_line)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s/cluster/netns.sh' exec --tag %s --host 5 -- '%s/moe-client' %s",
             s_root, s_tag, s_bin, args);
    char *out = NULL;
    int rc = testutil_run(cmd, &out);
    if (last_line) {
        size_t n = out ? strlen(out) : 0;
        while (n && out[n - 1] == '\n')
            out[--n] = '\0';
        char *nl = out ? strrchr(out, '\n') : NULL;
        *last_line = strdup(nl ? nl + 1 : out ? out : "");
    }
    free(out);
    return rc;
}

/* Tokens and logits through the cluster at endpoint, asked from host 5,
 * equal moe-run's. */
static void s_crosscheck(const fixture_t *fx, const char *endpoint)
{
    char prefix[1024];
    snprintf(prefix, sizeof prefix, "'%s/cluster/netns.sh' exec --tag %s --host 5 --", s_root,
             s_tag);
    crosscheck_fixture(fx, endpoint, s_bin, s_tmp, prefix);
}

/* Nodes on hosts 2-4 and the coordinator on host 1, started by hand with
 * explicit endpoints; node_opts and coord_opts are extra options of the
 * nodes and of the coordinator (e.g. the same --replicas on both). Returns
 * the client endpoint (malloc'd). */
static char *s_start_by_hand(const char *model, const char *name, int reply_timeout_ms,
                             const char *node_opts, const char *coord_opts)
{
    char args[4096], log[700], ep_file[700], addr[64];
    char nodes[2048] = "";
    for (int n = 1; n <= 3; n++) {
        s_addr(n + 1, addr, sizeof addr);
        snprintf(ep_file, sizeof ep_file, "%s/%s-node%d.ep", s_tmp, name, n);
        snprintf(log, sizeof log, "%s/%s-node%d.log", s_tmp, name, n);
        snprintf(args, sizeof args, "'%s/moe-expert' --model '%s' --node-id %d --nodes 3 "
                 "--threads 1 --bind 'tcp://%s:*' --endpoint-file '%s' %s", s_bin, model, n,
                 addr, ep_file, node_opts);
        pid_t pid = s_spawn(n + 1, log, args);
        char *ep = s_wait_line(ep_file, pid, 60);
        assert_true(strstr(ep, addr) != NULL); /* bound on its host's address */
        size_t len = strlen(nodes);
        snprintf(nodes + len, sizeof nodes - len, " --node '%s'", ep);
        free(ep);
    }
    s_addr(1, addr, sizeof addr);
    snprintf(ep_file, sizeof ep_file, "%s/%s-coord.ep", s_tmp, name);
    snprintf(log, sizeof log, "%s/%s-coord.log", s_tmp, name);
    snprintf(args, sizeof args, "'%s/moe-coordinator' --model '%s' %s --bind 'tcp://%s:*' "
             "--reply-timeout-ms %d --endpoint-file '%s' %s", s_bin, model, nodes, addr,
             reply_timeout_ms, ep_file, coord_opts);
    pid_t pid = s_spawn(1, log, args);
    return s_wait_line(ep_file, pid, 60);
}

static void test_started_by_hand_across_hosts(void **state)
{
    (void)state;
    if (!s_hosts_up)
        testutil_skip_unless_possible(s_netns_possible, "network namespaces cannot be "
                                      "created here (needs root with CAP_SYS_ADMIN)");
    char **paths = NULL;
    int n = fixture_list(fixture_root(), "mixtral-", &paths);
    assert_true(n > 0);
    for (int f = 0; f < n; f++) {
        fixture_t *fx = fixture_load(paths[f]);
        assert_non_null(fx);
        char *ep = s_start_by_hand(fx->dir, fx->name, 30000, "", "");
        printf("  %s: coordinator on host 1 at %s, nodes on hosts 2-4, client on host 5\n",
               fx->name, ep);
        s_crosscheck(fx, ep);
        free(ep);
        s_kill_procs();
        fixture_destroy(&fx);
    }
    fixture_free_list(paths, n);
}

/* A receiver on host 1 and a sender on host 2 (python3, bounded by timeouts):
 * the sender prints the seconds that `bytes` took to cross, acknowledged. */
static const char s_xfer_py[] =
    "import socket, sys, time\n"
    "mode, addr, n = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
    "if mode == 'recv':\n"
    "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "    s.bind((addr, 5999)); s.listen(1); s.settimeout(20)\n"
    "    c, _ = s.accept(); c.settimeout(20); got = 0\n"
    "    while got < n:\n"
    "        b = c.recv(1 << 20)\n"
    "        if not b: break\n"
    "        got += len(b)\n"
    "    c.sendall(b'k')\n"
    "else:\n"
    "    for _ in range(100):\n"
    "        try: c = socket.create_connection((addr, 5999), timeout=20); break\n"
    "        except OSError: time.sleep(0.05)\n"
    "    c.settimeout(20); buf = bytes(1 << 20); t = time.time(); sent = 0\n"
    "    while sent < n:\n"
    "        k = min(len(buf), n - sent); c.sendall(buf[:k]); sent += k\n"
    "    c.recv(1); print('%.4f' % (time.time() - t))\n";

/* Seconds that `bytes` take from host 2 to host 1 over the links as shaped now. */
static double s_transfer_seconds(long bytes)
{
    char py[700], addr[64], log[700];
    snprintf(py, sizeof py, "%s/xfer.py", s_tmp);
    assert_int_equal(testutil_write_file(py, s_xfer_py, sizeof s_xfer_py - 1), 0);
    s_addr(1, addr, sizeof addr);
    snprintf(log, sizeof log, "%s/xfer-recv.log", s_tmp);
    char args[2048];
    snprintf(args, sizeof args, "python3 '%s' recv %s %ld", py, addr, bytes);
    s_spawn(1, log, args);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s/cluster/netns.sh' exec --tag %s --host 2 -- timeout 30 "
             "python3 '%s' send %s %ld", s_root, s_tag, py, addr, bytes);
    char *out = NULL;
    assert_int_equal(testutil_run(cmd, &out), 0);
    double seconds = atof(out);
    free(out);
    return seconds;
}

/* The links limited to 1 Gbit/s, then 10 Gbit/s, each way (cluster/netns.sh
 * shape): a bulk transfer cannot beat the rate, and the cluster across the
 * limited links gives moe-run's tokens and logits. */
static void test_shaped_links(void **state)
{
    (void)state;
    if (!s_hosts_up)
        testutil_skip_unless_possible(s_netns_possible, "network namespaces cannot be "
                                      "created here (needs root with CAP_SYS_ADMIN)");
    const long bytes = 25 * 1000 * 1000;
    assert_int_not_equal(s_sh("'%s/cluster/netns.sh' shape --tag %s --host all --rate 3xbit "
                              "2>/dev/null", s_root, s_tag), 0);
    assert_int_equal(s_sh("'%s/cluster/netns.sh' shape --tag %s --host all --rate 1gbit",
                          s_root, s_tag), 0);
    double seconds = s_transfer_seconds(bytes);
    printf("  25 MB over a 1 Gbit/s link: %.3f s (%.2f Gbit/s)\n", seconds,
           bytes * 8 / seconds / 1e9);
    /* 0.2 s at 1 Gbit/s; the bucket's burst lets a little more through, a busy
     * machine only makes it slower. Unshaped it takes a fraction of that. */
    assert_true(seconds >= 0.8 * bytes * 8 / 1e9);
    char **paths = NULL;
    int n = fixture_list(fixture_root(), "mixtral-", &paths);
    assert_true(n > 0);
    const char *rates[] = {"1gbit", "10gbit"};
    for (int r = 0; r < 2; r++) {
        assert_int_equal(s_sh("'%s/cluster/netns.sh' shape --tag %s --host all --rate %s",
                              s_root, s_tag, rates[r]), 0);
        fixture_t *fx = fixture_load(paths[r % n]);
        assert_non_null(fx);
        char name[300]; /* its own files: another case's endpoint files stay behind */
        snprintf(name, sizeof name, "%s-%s", fx->name, rates[r]);
        char *ep = s_start_by_hand(fx->dir, name, 30000, "", "");
        printf("  %s over %s links: coordinator on host 1, nodes on hosts 2-4\n", fx->name,
               rates[r]);
        s_crosscheck(fx, ep);
        free(ep);
        s_kill_procs();
        fixture_destroy(&fx);
    }
    fixture_free_list(paths, n);
    assert_int_equal(s_sh("'%s/cluster/netns.sh' shape --tag %s --host all --rate off",
                          s_root, s_tag), 0);
}

static void test_link_down_mid_generation(void **state)
{
    (void)state;
    if (!s_hosts_up)
        testutil_skip_unless_possible(s_netns_possible, "network namespaces cannot be "
                                      "created here (needs root with CAP_SYS_ADMIN)");
    char model[700], args[4096], log[700];
    testutil_make_model(s_tmp, "small", "small", 5, model, sizeof model);
    const int timeout_ms = 2000;
    char *ep = s_start_by_hand(model, "linkdown", timeout_ms, "", "");

    /* A long generation from host 5, in the background. */
    snprintf(log, sizeof log, "%s/linkdown-client.log", s_tmp);
    snprintf(args, sizeof args, "'%s/moe-client' --connect '%s' --timeout 30 generate "
             "--prompt-ids 1,2,3,4 --max-tokens 4000", s_bin, ep);
    pid_t client = s_spawn_child(5, log, args);
    usleep(700000); /* let it get going */
    assert_int_equal(kill(client, 0), 0); /* still generating */
    const double t_down = timer_now();
    assert_int_equal(s_sh("'%s/cluster/netns.sh' link --tag %s --host 3 down", s_root, s_tag), 0);

    int status = 0;
    pid_t done = 0;
    while ((done = waitpid(client, &status, WNOHANG)) == 0 && timer_now() - t_down < 20)
        usleep(50000);
    const double waited = timer_now() - t_down;
    char *text = testutil_read_file(log, NULL);
    printf("  link of host 3 (node 2) down: the client ended after %.2f s: %s", waited,
           text ? text : "(no output)\n");
    assert_true(done == client);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    assert_non_null(strstr(text, "unavailable"));
    assert_non_null(strstr(text, "node 2"));
    assert_true(waited < timeout_ms / 1000.0 + 5);
    free(text);

    /* The coordinator keeps running and reports the node down. */
    char *line = NULL;
    snprintf(args, sizeof args, "--connect '%s' status --json", ep);
    assert_int_equal(s_client(args, &line), 0);
    assert_non_null(strstr(line, "\"node_id\":2,"));
    const char *node2 = strstr(line, "\"node_id\":2,");
    assert_non_null(strstr(node2, "\"up\":false"));
    assert_true(strstr(node2, "\"up\":false") < strstr(node2, "\"node_id\":3,") ||
                !strstr(node2, "\"node_id\":3,"));
    free(line);
    assert_int_equal(s_sh("'%s/cluster/netns.sh' link --tag %s --host 3 up", s_root, s_tag), 0);
    s_kill_procs();
    free(ep);
}

/* Node node_id's state in `moe-client status --json` asked from host 5. */
static bool s_node_up(const char *ep, int node_id)
{
    char args[1024], key[32];
    snprintf(args, sizeof args, "--connect '%s' --timeout 10 status --json", ep);
    snprintf(key, sizeof key, "\"node_id\":%d,", node_id);
    char *line = NULL;
    assert_int_equal(s_client(args, &line), 0);
    const char *node = strstr(line, key);
    assert_non_null(node);
    const char *up = strstr(node, "\"up\":");
    assert_non_null(up);
    const bool is_up = strncmp(up, "\"up\":true", 9) == 0;
    free(line);
    return is_up;
}

/* Polls the status until node_id is up (or down); returns the seconds it
 * took, failing the test after `seconds`. */
static double s_wait_node(const char *ep, int node_id, bool up, double seconds)
{
    const double t0 = timer_now();
    for (int i = 0; i < 1000 && timer_now() - t0 < seconds; i++) {
        if (s_node_up(ep, node_id) == up)
            return timer_now() - t0;
        usleep(50 * 1000);
    }
    fail_msg("node %d not %s after %.0f s", node_id, up ? "up" : "down", seconds);
    return 0;
}

static long s_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

enum { LD_GEN = 6, LD_TOKENS = 300 };

/* Every expert on two of the three nodes: host 3's link goes down while six
 * generations stream to host 5. The coordinator notices it by the reply
 * timeout (TCP does not), sends node 2's work to the replicas, and every
 * generation ends with moe-run's tokens after a pause of about the timeout.
 * Plugged in again, node 2 rejoins and serves. */
static void test_link_down_with_replicas(void **state)
{
    (void)state;
    if (!s_hosts_up)
        testutil_skip_unless_possible(s_netns_possible, "network namespaces cannot be "
                                      "created here (needs root with CAP_SYS_ADMIN)");
    const int timeout_ms = 1000;
    char model[700], args[8192], out[LD_GEN][700], err[LD_GEN][720], log[700], ids[LD_GEN][128];
    char *want[LD_GEN];
    snprintf(model, sizeof model, "%s/mixtral-A", fixture_root());
    fixture_t *fx = fixture_load(model);
    assert_non_null(fx);
    testrng_t rng;
    testrng_init(&rng, 31);
    for (int g = 0; g < LD_GEN; g++) {
        size_t used = 0;
        for (int i = 0; i < 1 + g % 4; i++)
            used += (size_t)snprintf(ids[g] + used, sizeof ids[g] - used, "%s%d", i ? "," : "",
                                     (int)(testrng_uniform(&rng) * fx->vocab));
        snprintf(args, sizeof args, "'%s/moe-run' --model '%s' --prompt-ids %s --max-tokens %d "
                 "--ignore-eos --threads 1 2>/dev/null", s_bin, model, ids[g], LD_TOKENS);
        char *text = NULL;
        assert_int_equal(testutil_run(args, &text), 0);
        text[strcspn(text, "\n")] = '\0';
        want[g] = text;
    }
    fixture_destroy(&fx);
    assert_int_equal(s_sh("'%s/cluster/netns.sh' link --tag %s --host 3 up", s_root, s_tag), 0);
    char *ep = s_start_by_hand(model, "failover", timeout_ms, "--replicas 2",
                               "--replicas 2 --heartbeat-ms 200 --heartbeat-misses 3");

    /* The generations stream from host 5: each output file grows token by
     * token (their summaries go to err[g]), so a pause shows as a time when no
     * file grew. */
    /* Starting a program on a host takes tens of ms, so each client waits
     * (at most 10 s) for a go file: they all start together. */
    char go[700];
    snprintf(go, sizeof go, "%s/failover.go", s_tmp);
    pid_t client[LD_GEN];
    for (int g = 0; g < LD_GEN; g++) {
        snprintf(out[g], sizeof out[g], "%s/failover-gen%d.out", s_tmp, g);
        snprintf(err[g], sizeof err[g], "%s/failover-gen%d.err", s_tmp, g);
        snprintf(args, sizeof args, "sh -c \"for i in \\$(seq 1000); do [ -e '%s' ] && break; "
                 "sleep 0.01; done; exec '%s/moe-client' --connect '%s' --timeout 30 "
                 "generate --prompt-ids %s --max-tokens %d --ignore-eos --stream "
                 "2>'%s'\"", go, s_bin, ep, ids[g], LD_TOKENS, err[g]);
        client[g] = s_spawn_child(5, out[g], args);
    }
    usleep(300 * 1000); /* time for the last one to reach its wait */
    assert_int_equal(s_sh("touch '%s'", go), 0);
    /* Mid-generation: every client has streamed some tokens, none has ended. */
    const double t_start = timer_now();
    for (bool going = false; !going; usleep(5000)) {
        going = true;
        for (int g = 0; g < LD_GEN; g++)
            going &= s_file_size(out[g]) >= 60;
        if (timer_now() - t_start > 20)
            fail_msg("the generations did not start within 20 s");
    }
    int status[LD_GEN];
    bool ended[LD_GEN] = {false};
    for (int g = 0; g < LD_GEN; g++)
        assert_int_equal(waitpid(client[g], &status[g], WNOHANG), 0); /* still generating */
    long size[LD_GEN];
    for (int g = 0; g < LD_GEN; g++)
        size[g] = s_file_size(out[g]);
    const double t_down = timer_now();
    assert_int_equal(s_sh("'%s/cluster/netns.sh' link --tag %s --host 3 down", s_root, s_tag), 0);

    /* Until all have ended (bounded): the longest time no output grew. */
    double last = timer_now(), gap = 0;
    int n_ended = 0;
    for (int i = 0; n_ended < LD_GEN; i++) {
        if (timer_now() - t_down > 30 || i > 30 * 1000)
            fail_msg("%d of %d generations still running 30 s after the link went down",
                     LD_GEN - n_ended, LD_GEN);
        bool grew = false;
        for (int g = 0; g < LD_GEN; g++) {
            const long now_size = s_file_size(out[g]);
            grew |= now_size != size[g];
            size[g] = now_size;
            if (!ended[g] && waitpid(client[g], &status[g], WNOHANG) == client[g]) {
                ended[g] = true;
                n_ended++;
            }
        }
        const double now = timer_now();
        if (grew) {
            gap = now - last > gap ? now - last : gap;
            last = now;
        }
        usleep(2000);
    }
    const double done = timer_now() - t_down;
    for (int g = 0; g < LD_GEN; g++) {
        char *text = testutil_read_file(out[g], NULL);
        assert_non_null(text);
        text[strcspn(text, "\n")] = '\0';
        if (!WIFEXITED(status[g]) || WEXITSTATUS(status[g]) != 0) {
            s_show_log(err[g]);
            fail_msg("generation %d failed (status 0x%x)", g, status[g]);
        }
        if (strcmp(text, want[g]) != 0)
            fail_msg("generation %d printed\n  %s\nbut moe-run\n  %s", g, text, want[g]);
        free(text);
    }
    printf("  link of host 3 (node 2) down mid-generation, R = 2: all %d generations of %d "
           "tokens completed %.2f s later, equal to moe-run's; longest pause %.3f s (reply "
           "timeout %d ms)\n", LD_GEN, LD_TOKENS, done, gap, timeout_ms);
    /* The pause is the reply timeout: node 2 had work in flight when its
     * link went down, and nothing but the timeout noticed it. */
    assert_true(gap > timeout_ms / 1000.0 * 0.5);
    assert_true(gap < timeout_ms / 1000.0 + 2.0);

    /* The coordinator reports node 2 down, and says why in its log. */
    assert_false(s_node_up(ep, 2));
    snprintf(log, sizeof log, "%s/failover-coord.log", s_tmp);
    char *coord_log = testutil_read_file(log, NULL);
    assert_non_null(coord_log);
    const char *down = strstr(coord_log, "node 2 (");
    assert_non_null(down);
    assert_non_null(strstr(down, "is down: no reply to layer"));
    assert_non_null(strstr(coord_log, "node 2 failed with"));
    assert_non_null(strstr(coord_log, "sending them to replicas"));
    free(coord_log);

    /* Plugged in again, node 2 rejoins and a new request succeeds. */
    assert_int_equal(s_sh("'%s/cluster/netns.sh' link --tag %s --host 3 up", s_root, s_tag), 0);
    const double back = s_wait_node(ep, 2, true, 20);
    printf("  link up again: node 2 up %.2f s later (%.2f s after the link went down)\n", back,
           timer_now() - t_down);
    char *line = NULL;
    snprintf(args, sizeof args, "--connect '%s' --timeout 30 generate --prompt-ids %s "
             "--max-tokens %d --ignore-eos", ep, ids[0], LD_TOKENS);
    assert_int_equal(s_client(args, &line), 0);
    assert_string_equal(line, want[0]);
    free(line);
    coord_log = testutil_read_file(log, NULL);
    assert_non_null(coord_log);
    assert_non_null(strstr(coord_log, "is back after"));
    free(coord_log);
    s_kill_procs();
    free(ep);
    for (int g = 0; g < LD_GEN; g++)
        free(want[g]);
}

static void test_mpirun_across_hosts(void **state)
{
    (void)state;
    if (!s_hosts_up)
        testutil_skip_unless_possible(s_netns_possible, "network namespaces cannot be "
                                      "created here (needs root with CAP_SYS_ADMIN)");
    char fx_dir[700], ep_file[700], log[700], subnet[64], args[8192], hosts[512] = "";
    snprintf(fx_dir, sizeof fx_dir, "%s/mixtral-A", fixture_root());
    snprintf(ep_file, sizeof ep_file, "%s/mpi.ep", s_tmp);
    snprintf(log, sizeof log, "%s/mpirun.log", s_tmp);
    char *out = NULL;
    snprintf(args, sizeof args, "'%s/cluster/netns.sh' subnet --tag %s", s_root, s_tag);
    assert_int_equal(testutil_run(args, &out), 0);
    out[strcspn(out, "\n")] = '\0';
    snprintf(subnet, sizeof subnet, "%s", out);
    free(out);
    for (int h = 1; h <= 4; h++) {
        size_t len = strlen(hosts);
        snprintf(hosts + len, sizeof hosts - len, "%smoe-%s-h%d", h > 1 ? "," : "", s_tag, h);
    }
    /* mpirun runs on host 1 and starts every rank through the namespace agent. */
    snprintf(args, sizeof args, "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
             "ASAN_OPTIONS=detect_leaks=0 mpirun --oversubscribe -np 4 -H %s "
             "--mca plm_rsh_agent '%s/cluster/netns-agent.sh' --mca oob_tcp_if_include %s "
             "--mca btl_tcp_if_include %s --mca btl self,tcp '%s/moe-mpi' --model '%s' "
             "--threads 1 --endpoint-file '%s'", hosts, s_root, subnet, subnet, s_bin, fx_dir,
             ep_file);
    pid_t mpirun = s_spawn_child(1, log, args);
    char *ep = s_wait_line_log(ep_file, mpirun, 90, log);
    assert_non_null(ep);
    char addr[64];
    s_addr(1, addr, sizeof addr);
    printf("  mpirun: coordinator (rank 0) on host 1 at %s, ranks 1-3 on hosts 2-4\n",
           ep ? ep : "?");
    assert_non_null(strstr(ep, addr));
    fixture_t *fx = fixture_load(fx_dir);
    assert_non_null(fx);
    s_crosscheck(fx, ep);
    fixture_destroy(&fx);
    kill(mpirun, SIGTERM);
    int status;
    for (double t0 = timer_now(); waitpid(mpirun, &status, WNOHANG) == 0; usleep(50000))
        if (timer_now() - t0 > 30)
            fail_msg("mpirun did not stop within 30 s of SIGTERM");
    free(ep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_started_by_hand_across_hosts),
        cmocka_unit_test(test_mpirun_across_hosts),
        cmocka_unit_test(test_shaped_links),
        /* Last: they unplug host 3, whose neighbours may remember it as gone. */
        cmocka_unit_test(test_link_down_mid_generation),
        cmocka_unit_test(test_link_down_with_replicas),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
