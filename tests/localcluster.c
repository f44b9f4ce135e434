/* localcluster: see localcluster.h. */
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

#include "proto/client_rpc.h"
#include "tests/fixture.h"
#include "tests/localcluster.h"
#include "tests/testutil.h"

/* The repository root: tests run from it (make test). */
static const char *s_root(void)
{
    static char root[1024];
    if (!root[0] && !getcwd(root, sizeof root))
        fail_msg("getcwd failed");
    return root;
}

/* The processes of clusters this program started and has not stopped. A case
 * that fails midway jumps past its localcluster_down (and its temporary
 * folder, pid files included, may be gone before the program ends): these
 * are stopped when the program exits, so a failed test leaves no process
 * behind. */
enum { MAX_UP = 64, MAX_UP_PIDS = 16 };
typedef struct up_cluster {
    char *run_dir;
    int n_pids;
    pid_t pids[MAX_UP_PIDS];
} up_cluster_t;
static up_cluster_t s_up[MAX_UP];

static void s_forget(const char *run_dir)
{
    for (int i = 0; i < MAX_UP; i++)
        if (s_up[i].run_dir && strcmp(s_up[i].run_dir, run_dir) == 0) {
            free(s_up[i].run_dir);
            s_up[i] = (up_cluster_t){0};
        }
}

/* True while pid runs one of this project's programs (not a reused pid). */
static bool s_ours(pid_t pid)
{
    if (!testutil_running(pid))
        return false;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    size_t n = 0;
    char *cmdline = testutil_read_file(path, &n);
    const bool ours = cmdline && n > 0 && strstr(cmdline, "moe-") != NULL;
    free(cmdline);
    return ours;
}

static void s_stop_leftovers(void)
{
    for (int i = 0; i < MAX_UP; i++) {
        up_cluster_t *c = &s_up[i];
        for (int k = 0; k < c->n_pids; k++)
            if (s_ours(c->pids[k])) {
                fprintf(stderr, "localcluster: stopping pid %d, left running in %s\n",
                        (int)c->pids[k], c->run_dir);
                kill(c->pids[k], SIGKILL);
            }
        free(c->run_dir);
        *c = (up_cluster_t){0};
    }
}

/* Notes the pids of the cluster just started in run_dir. */
static void s_remember(const char *run_dir)
{
    static bool registered;
    if (!registered)
        registered = atexit(s_stop_leftovers) == 0;
    s_forget(run_dir);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cat '%s'/*.pid 2>/dev/null", run_dir);
    char *out = NULL;
    testutil_run(cmd, &out);
    for (int i = 0; i < MAX_UP; i++)
        if (!s_up[i].run_dir) {
            up_cluster_t *c = &s_up[i];
            c->run_dir = strdup(run_dir);
            for (char *p = out; p && *p && c->n_pids < MAX_UP_PIDS;) {
                char *end;
                long pid = strtol(p, &end, 10);
                if (end == p)
                    break;
                if (pid > 0)
                    c->pids[c->n_pids++] = (pid_t)pid;
                p = end;
            }
            break;
        }
    free(out);
}

char *localcluster_up(const char *model, int nodes, const char *run_dir, const char *extra)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "MOE_BIN='%s' '%s/cluster/local.sh' up --model '%s' --nodes %d "
             "--run-dir '%s' %s", testutil_env("MOE_BIN", "build/bin"), s_root(), model, nodes,
             run_dir, extra ? extra : "");
    char *out = NULL;
    int rc = testutil_run(cmd, &out);
    if (rc != 0)
        fail_msg("local.sh up failed (%d): %s", rc, out ? out : "");
    char *ep = strdup(testutil_last_line(out));
    free(out);
    s_remember(run_dir);
    assert_true(strncmp(ep, "tcp://", 6) == 0);
    return ep;
}

void localcluster_down(const char *run_dir)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s/cluster/local.sh' down --run-dir '%s'", s_root(), run_dir);
    s_forget(run_dir);
    assert_int_equal(testutil_run(cmd, NULL), 0);
    snprintf(cmd, sizeof cmd, "grep -l 'Sanitizer' '%s'/*.log", run_dir);
    char *found = NULL;
    if (testutil_run(cmd, &found) == 0)
        fail_msg("sanitizer report in %s", found);
    free(found);
}

void localcluster_start(localcluster_t *lc, const char *model, int nodes, const char *tmp,
                        const char *name, const char *extra)
{
    if (strchr(model, '/'))
        snprintf(lc->model, sizeof lc->model, "%s", model);
    else
        snprintf(lc->model, sizeof lc->model, "%s/%s", fixture_root(), model);
    snprintf(lc->run_dir, sizeof lc->run_dir, "%s/%s", tmp, name);
    lc->endpoint = localcluster_up(lc->model, nodes, lc->run_dir, extra);
}

void localcluster_stop(localcluster_t *lc)
{
    localcluster_down(lc->run_dir);
    free(lc->endpoint);
    lc->endpoint = NULL;
}

pid_t localcluster_pid(const char *run_dir, const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.pid", run_dir, name);
    char *text = testutil_read_file(path, NULL);
    if (!text)
        fail_msg("no pid file %s", path);
    pid_t pid = (pid_t)atol(text);
    free(text);
    assert_true(pid > 0);
    return pid;
}

size_t localcluster_rss(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    unsigned long size = 0, resident = 0;
    int got = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    return got == 2 ? (size_t)resident * (size_t)sysconf(_SC_PAGESIZE) : 0;
}

void *localcluster_dealer(void *zmq_ctx, const char *endpoint)
{
    void *sock = zmq_socket(zmq_ctx, ZMQ_DEALER);
    int linger = 0, timeout = 20000;
    assert_non_null(sock);
    assert_int_equal(zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger), 0);
    assert_int_equal(zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeout, sizeof timeout), 0);
    assert_int_equal(zmq_connect(sock, endpoint), 0);
    return sock;
}

void localcluster_open(localcluster_conn_t *conn, const char *endpoint)
{
    conn->ctx = zmq_ctx_new();
    assert_non_null(conn->ctx);
    conn->sock = localcluster_dealer(conn->ctx, endpoint);
    wire_limits_t lim = {0};
    err_t err = {0};
    conn->inbox = wire_inbox_new(&lim, &err);
    if (!conn->inbox)
        fail_msg("inbox: %s", err.msg);
}

void localcluster_close(localcluster_conn_t *conn)
{
    wire_inbox_destroy(&conn->inbox);
    if (conn->sock)
        zmq_close(conn->sock);
    if (conn->ctx)
        zmq_ctx_term(conn->ctx);
    *conn = (localcluster_conn_t){0};
}

void localcluster_send(localcluster_conn_t *conn, const wire_request_t *req)
{
    err_t err = {0};
    if (wire_request_send(conn->sock, req, &err) < 0)
        fail_msg("send: %s", err.msg);
}

void localcluster_recv(localcluster_conn_t *conn, wire_reply_t *rep, const char *what)
{
    err_t err = {0};
    if (wire_reply_recv(conn->inbox, conn->sock, rep, &err) < 0)
        fail_msg("%s: %s", what, err.msg);
}

void localcluster_status(localcluster_conn_t *conn, uint64_t request_id, wire_reply_t *rep)
{
    wire_request_t st = {.type = WIRE_REQ_STATUS, .request_id = request_id};
    localcluster_send(conn, &st);
    localcluster_recv(conn, rep, "STATUS");
    assert_int_equal(rep->type, WIRE_REP_STATUS);
}

void localcluster_sched(const char *endpoint, localcluster_sched_t *out)
{
    localcluster_conn_t conn;
    localcluster_open(&conn, endpoint);
    wire_reply_t rep;
    localcluster_status(&conn, 1, &rep);
    out->running = rep.sequences_running;
    out->queued = rep.requests_queued;
    out->kv_bytes = rep.kv_bytes;
    localcluster_close(&conn);
}
