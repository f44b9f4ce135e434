/* test_cluster: the whole system as a user runs it: cluster/local.sh starts a
 * coordinator and expert nodes as real processes on loopback, moe-client
 * queries them, and the answers must equal moe-run's. Also: a malformed client
 * request gets an error reply, a node killed mid-request fails that request
 * within a bounded time while the coordinator keeps serving and shows the node
 * down, and a node hosting a quarter of the medium model's experts stays
 * within its share of memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "core/idlist.h"
#include "core/mem.h"
#include "core/timer.h"
#include "model/config.h"
#include "proto/client_rpc.h"
#include "proto/data_plane.h"
#include "tests/crosscheck.h"
#include "tests/fixture.h"
#include "tests/localcluster.h"
#include "tests/testutil.h"

static char s_bin[512];
static char s_root[512];   /* the repository (cluster/local.sh is there) */
static char *s_tmp;

static int s_setup(void **state)
{
    snprintf(s_bin, sizeof s_bin, "%s", testutil_env("MOE_BIN", "build/bin"));
    if (!getcwd(s_root, sizeof s_root))
        return -1;
    s_tmp = testutil_mkdtemp("test_cluster");
    *state = s_tmp;
    return s_tmp ? 0 : -1;
}

/* Every fixture of a family the engine runs (its config loads), through
 * clusters of 1..3 nodes, bit-identical to moe-run. */
static void test_fixtures_through_clusters(void **state)
{
    (void)state;
    char **paths = NULL;
    int n = fixture_list(fixture_root(), "", &paths);
    assert_true(n > 0);
    int n_run = 0;
    for (int f = 0; f < n; f++) {
        config_t cfg;
        err_t err = {0};
        if (config_load(&cfg, paths[f], &err) < 0)
            fail_msg("%s: %s", paths[f], err.msg); /* every fixture family is served */
        n_run++;
        fixture_t *fx = fixture_load(paths[f]);
        assert_non_null(fx);
        for (int nodes = 1; nodes <= 3; nodes++) {
            char run_dir[700];
            snprintf(run_dir, sizeof run_dir, "%s/%s-%d", s_tmp, fx->name, nodes);
            char *ep = localcluster_up(fx->dir, nodes, run_dir, NULL);
            printf("  %s on %d node(s) at %s\n", fx->name, nodes, ep);
            crosscheck_fixture(fx, ep, s_bin, s_tmp, "");
            localcluster_down(run_dir);
            free(ep);
        }
        fixture_destroy(&fx);
    }
    fixture_free_list(paths, n);
    assert_true(n_run > 0);
}

static void s_expect_status_ok(localcluster_conn_t *conn, int down_node)
{
    wire_reply_t rep;
    localcluster_status(conn, 99, &rep);
    for (int i = 0; i < rep.n_nodes; i++)
        assert_int_equal(rep.nodes[i].up, rep.nodes[i].node_id != down_node);
}

static void test_malformed_client_request(void **state)
{
    (void)state;
    localcluster_t lc;
    localcluster_start(&lc, "mixtral-A", 2, s_tmp, "malformed", NULL);
    localcluster_conn_t conn;
    localcluster_open(&conn, lc.endpoint);

    const char garbage[] = "\x08\x96\x01 this is not a request \xff\xff";
    assert_int_equal(zmq_send(conn.sock, garbage, sizeof garbage, 0), (int)sizeof garbage);
    wire_reply_t rep;
    localcluster_recv(&conn, &rep, "reply");
    assert_int_equal(rep.type, WIRE_REP_ERROR);
    printf("  garbage -> %s: %s\n", wire_client_error_name(rep.error_code), rep.error_message);

    int32_t bad_ids[2] = {3, 999};
    wire_request_t req = {.type = WIRE_REQ_GENERATE, .request_id = 5, .n_prompt = 2,
                          .prompt = bad_ids, .max_tokens = 2};
    localcluster_send(&conn, &req);
    localcluster_recv(&conn, &rep, "reply");
    assert_int_equal(rep.type, WIRE_REP_ERROR);
    assert_int_equal(rep.error_code, WIRE_CLIENT_INVALID_ARGUMENT);
    assert_int_equal(rep.request_id, 5);
    s_expect_status_ok(&conn, -1);

    localcluster_close(&conn);
    localcluster_stop(&lc);
}

/* The small preset (4096 positions: room for long generations), made once. */
static void s_small_model(char *model, size_t n)
{
    testutil_make_model(s_tmp, "small", "small", 3, model, n);
}

static void test_node_killed_mid_request(void **state)
{
    (void)state;
    char run_dir[700], model[700], cmd[2048];
    snprintf(run_dir, sizeof run_dir, "%s/kill", s_tmp);
    s_small_model(model, sizeof model);
    /* The dropped connection is normally seen at once; the reply timeout is
     * the bound if that notice is late. */
    char *ep = localcluster_up(model, 2, run_dir, "--reply-timeout-ms 3000");
    localcluster_conn_t conn;
    localcluster_open(&conn, ep);
    err_t err = {0};

    int32_t prompt[4] = {1, 2, 3, 4};
    wire_request_t req = {.type = WIRE_REQ_GENERATE, .request_id = 7, .n_prompt = 4,
                          .prompt = prompt, .max_tokens = 4000};
    localcluster_send(&conn, &req);
    int tokens = 0;
    wire_reply_t rep;
    while (tokens < 20) { /* a few tokens first: the request is under way */
        localcluster_recv(&conn, &rep, "reply");
        assert_int_equal(rep.type, WIRE_REP_TOKENS);
        assert_false(rep.final);
        tokens += rep.n_tokens;
    }
    char pid_path[800];
    snprintf(pid_path, sizeof pid_path, "%s/expert-2.pid", run_dir);
    char *pid_text = testutil_read_file(pid_path, NULL);
    assert_non_null(pid_text);
    const double t_kill = timer_now();
    assert_int_equal(kill((pid_t)atoi(pid_text), SIGKILL), 0);
    free(pid_text);

    /* Tokens may still arrive; the request must end in an error, quickly. */
    for (;;) {
        if (wire_reply_recv(conn.inbox, conn.sock, &rep, &err) < 0) {
            /* Seen intermittently, cause not yet found: keep the evidence. */
            snprintf(cmd, sizeof cmd, "tail -n 40 '%s/coordinator.log' '%s'/expert-*.log >&2",
                     run_dir, run_dir);
            if (system(cmd) != 0)
                fprintf(stderr, "(no logs in %s)\n", run_dir);
            fail_msg("no answer after the node was killed: %s", err.msg);
        }
        if (rep.type == WIRE_REP_ERROR || rep.final)
            break;
    }
    const double waited = timer_now() - t_kill;
    printf("  request failed %.3f s after the kill: %s: %s\n", waited,
           wire_client_error_name(rep.error_code), rep.error_message ? rep.error_message : "");
    assert_int_equal(rep.type, WIRE_REP_ERROR);
    assert_int_equal(rep.error_code, WIRE_CLIENT_UNAVAILABLE);
    assert_non_null(strstr(rep.error_message, "node 2"));
    assert_true(waited < 10.0);
    s_expect_status_ok(&conn, 2);

    /* A new request that needs node 2 fails at once with the same kind. */
    req.request_id = 8;
    req.max_tokens = 3;
    localcluster_send(&conn, &req);
    localcluster_recv(&conn, &rep, "reply");
    assert_int_equal(rep.type, WIRE_REP_ERROR);
    assert_int_equal(rep.error_code, WIRE_CLIENT_UNAVAILABLE);

    localcluster_close(&conn);
    localcluster_down(run_dir);
    free(ep);
}

static void test_sampling_and_streaming(void **state)
{
    (void)state;
    char cmd[4096];
    localcluster_t lc;
    localcluster_start(&lc, "mixtral-A", 2, s_tmp, "sampling", NULL);
    const char *gen = "generate --prompt-ids 97,154,160 --max-tokens 12";
    char *out[6];
    const char *extra[6] = {
        "",                                       /* greedy */
        "--temperature 1.5 --seed 7",             /* sampled */
        "--temperature 1.5 --seed 7",             /* the same seed again */
        "--temperature 1.5 --seed 8 --top-k 20 --top-p 0.9",
        "--stream",                               /* greedy, streamed */
        NULL,                                     /* greedy, with a stop id (below) */
    };
    char stop_arg[64], want_stopped[256] = "";
    for (int i = 0; i < 6; i++) {
        if (i == 5) {
            /* Stop at the greedy run's 4th token: the output ends at its first use. */
            int32_t *ids = NULL;
            int n = 0;
            err_t err = {0};
            assert_int_equal(idlist_parse(out[0], &ids, &n, &err), 0);
            assert_true(n >= 4);
            snprintf(stop_arg, sizeof stop_arg, "--stop-ids %d", (int)ids[3]);
            int end = 0;
            while (ids[end] != ids[3])
                end++;
            char *prefix = idlist_format(ids, end + 1);
            snprintf(want_stopped, sizeof want_stopped, "%s", prefix);
            mem_free(prefix);
            mem_free(ids);
            extra[5] = stop_arg;
        }
        snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' %s %s 2>/dev/null", s_bin,
                 lc.endpoint, gen, extra[i]);
        out[i] = crosscheck_last_line(cmd);
        printf("  %-52s -> %s\n", *extra[i] ? extra[i] : "(greedy)", out[i]);
    }
    assert_string_equal(out[1], out[2]);        /* reproducible */
    assert_string_not_equal(out[0], out[1]);    /* not greedy */
    assert_string_not_equal(out[1], out[3]);
    assert_string_equal(out[4], out[0]);        /* streaming prints the same ids */
    assert_string_equal(out[5], want_stopped);
    for (int i = 0; i < 6; i++)
        free(out[i]);
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' %s --top-p 1.5 2>/dev/null",
             s_bin, lc.endpoint, gen);
    assert_int_equal(testutil_run(cmd, NULL), 2);
    localcluster_stop(&lc);
}

enum { N_CONCURRENT = 16 };

/* Sixteen clients at once on one fixture: every sequence shares forward steps
 * with the others, split into two micro-batches (--micro-batches 2), and each
 * prints exactly what moe-run prints for it alone (batch invariance). */
static void s_concurrent_on(const char *model, const char *name, int vocab)
{
    char run_dir[700], cmd[8192];
    snprintf(run_dir, sizeof run_dir, "%s/concurrent-%s", s_tmp, name);
    char *ep = localcluster_up(model, 2, run_dir, "--micro-batches 2");
    char prompts[N_CONCURRENT][128];
    testrng_t rng;
    testrng_init(&rng, 2024);
    for (int c = 0; c < N_CONCURRENT; c++) {
        int len = 1 + c % 9, used = 0;
        for (int i = 0; i < len; i++)
            used += snprintf(prompts[c] + used, sizeof prompts[c] - (size_t)used, "%s%d",
                             i ? "," : "", (int)(testrng_uniform(&rng) * vocab));
    }
    /* All at once, each to its own file; the whole run is bounded. */
    int used = snprintf(cmd, sizeof cmd, "(");
    for (int c = 0; c < N_CONCURRENT; c++)
        used += snprintf(cmd + used, sizeof cmd - (size_t)used,
                         "timeout 60 '%s/moe-client' --connect '%s' generate --prompt-ids %s "
                         "--max-tokens 10 > '%s/conc-%d.out' 2>&1 & ", s_bin, ep, prompts[c],
                         s_tmp, c);
    snprintf(cmd + used, sizeof cmd - (size_t)used, "wait)");
    assert_int_equal(testutil_run(cmd, NULL), 0);
    for (int c = 0; c < N_CONCURRENT; c++) {
        char path[800], alone[4096];
        snprintf(path, sizeof path, "%s/conc-%d.out", s_tmp, c);
        char *got = testutil_read_file(path, NULL);
        assert_non_null(got);
        got[strcspn(got, "\n")] = '\0';
        snprintf(alone, sizeof alone, "'%s/moe-run' --model '%s' --prompt-ids %s "
                 "--max-tokens 10 2>/dev/null", s_bin, model, prompts[c]);
        char *want = crosscheck_last_line(alone);
        if (strcmp(got, want) != 0)
            fail_msg("%s client %d (prompt %s): %s among 16, %s alone", name, c, prompts[c],
                     got, want);
        free(got);
        free(want);
    }
    printf("  %s: %d concurrent clients each printed what moe-run prints alone\n", name,
           N_CONCURRENT);
    localcluster_down(run_dir);
    free(ep);
}

static void test_concurrent_clients_batched(void **state)
{
    (void)state;
    char **paths = NULL;
    int n = fixture_list(fixture_root(), "", &paths);
    int n_run = 0;
    for (int f = 0; f < n; f++) {
        config_t cfg;
        err_t err = {0};
        if (config_load(&cfg, paths[f], &err) < 0)
            fail_msg("%s: %s", paths[f], err.msg);
        const char *name = strrchr(paths[f], '/') ? strrchr(paths[f], '/') + 1 : paths[f];
        s_concurrent_on(paths[f], name, cfg.vocab_size);
        n_run++;
    }
    fixture_free_list(paths, n);
    assert_true(n_run > 0);
}

/* One slot and a queue of one: the third request is refused at once with
 * BUSY; CANCEL ends a waiting and a running request; the cluster serves on. */
static void test_full_queue_and_cancel(void **state)
{
    (void)state;
    char run_dir[700], model[700];
    snprintf(run_dir, sizeof run_dir, "%s/busy", s_tmp);
    s_small_model(model, sizeof model);
    char *ep = localcluster_up(model, 2, run_dir, "--max-seqs 1 --queue-limit 1");
    localcluster_conn_t conn;
    localcluster_open(&conn, ep);
    int32_t prompt[3] = {5, 17, 2};
    for (uint64_t id = 1; id <= 3; id++) {
        wire_request_t req = {.type = WIRE_REQ_GENERATE, .request_id = id, .n_prompt = 3,
                              .prompt = prompt, .max_tokens = 4000};
        localcluster_send(&conn, &req);
    }
    /* Until request 3's BUSY: tokens of request 1 may come first. */
    wire_reply_t rep;
    bool busy = false, saw_2 = false;
    for (int i = 0; i < 4000 && !busy; i++) {
        localcluster_recv(&conn, &rep, "reply");
        saw_2 |= rep.request_id == 2;
        if (rep.type == WIRE_REP_ERROR) {
            assert_int_equal(rep.request_id, 3);
            assert_int_equal(rep.error_code, WIRE_CLIENT_BUSY);
            busy = true;
        }
    }
    assert_true(busy);
    assert_false(saw_2); /* request 2 waits for the slot */
    for (uint64_t id = 2; id >= 1; id--) { /* the waiting one, then the running one */
        wire_request_t cancel = {.type = WIRE_REQ_CANCEL, .request_id = 100 + id,
                                 .cancel_id = id};
        localcluster_send(&conn, &cancel);
        bool ended = false;
        for (int i = 0; i < 4000 && !ended; i++) {
            localcluster_recv(&conn, &rep, "reply");
            if (rep.request_id == id && rep.type == WIRE_REP_ERROR) {
                assert_int_equal(rep.error_code, WIRE_CLIENT_CANCELLED);
                ended = true;
            }
            if (rep.request_id == id && rep.type == WIRE_REP_TOKENS && rep.final)
                fail_msg("request %d finished (%d generated) before its cancel", (int)id,
                         rep.generated_tokens);
        }
        assert_true(ended);
    }
    /* Nothing runs or waits now, and no KV cache is held. */
    wire_request_t st = {.type = WIRE_REQ_STATUS, .request_id = 150};
    localcluster_send(&conn, &st);
    do
        localcluster_recv(&conn, &rep, "reply");
    while (rep.request_id != 150);
    assert_int_equal(rep.type, WIRE_REP_STATUS);
    assert_int_equal(rep.sequences_running, 0);
    assert_int_equal(rep.requests_queued, 0);
    assert_true(rep.kv_bytes == 0);
    /* A cancel of nothing is refused; a new request runs to its end. */
    wire_request_t none = {.type = WIRE_REQ_CANCEL, .request_id = 200, .cancel_id = 77};
    localcluster_send(&conn, &none);
    do
        localcluster_recv(&conn, &rep, "reply");
    while (rep.request_id != 200);
    assert_int_equal(rep.error_code, WIRE_CLIENT_INVALID_ARGUMENT);
    wire_request_t again = {.type = WIRE_REQ_GENERATE, .request_id = 300, .n_prompt = 3,
                            .prompt = prompt, .max_tokens = 4};
    localcluster_send(&conn, &again);
    int tokens = 0;
    do {
        localcluster_recv(&conn, &rep, "reply");
        if (rep.request_id == 300)
            tokens += rep.n_tokens;
    } while (!(rep.request_id == 300 && (rep.final || rep.type == WIRE_REP_ERROR)));
    assert_int_equal(rep.type, WIRE_REP_TOKENS);
    assert_int_equal(tokens, 4);
    localcluster_close(&conn);
    localcluster_down(run_dir);
    free(ep);
}

/* A client that goes away mid-generation: its sequence and KV cache are
 * freed (noticed on the next token the coordinator sends it). */
static void test_disconnect_frees_sequence(void **state)
{
    (void)state;
    char run_dir[700], model[700], cmd[4096];
    snprintf(run_dir, sizeof run_dir, "%s/disconnect", s_tmp);
    s_small_model(model, sizeof model);
    char *ep = localcluster_up(model, 2, run_dir, NULL);
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' generate --prompt-ids 1,2,3 "
             "--max-tokens 4000 >/dev/null 2>&1 & echo $!", s_bin, ep);
    char *pid_text = NULL;
    assert_int_equal(testutil_run(cmd, &pid_text), 0);
    pid_t client = (pid_t)atoi(pid_text);
    free(pid_text);
    localcluster_sched_t st = {0};
    for (double t0 = timer_now(); st.running == 0 && timer_now() - t0 < 10; usleep(20000))
        localcluster_sched(ep, &st);
    assert_int_equal(st.running, 1);
    assert_true(st.kv_bytes > 0);
    printf("  while generating: 1 sequence, %llu bytes of KV cache\n",
           (unsigned long long)st.kv_bytes);
    assert_int_equal(kill(client, SIGKILL), 0);
    for (double t0 = timer_now(); st.running != 0 && timer_now() - t0 < 10; usleep(20000))
        localcluster_sched(ep, &st);
    assert_int_equal(st.running, 0);
    assert_true(st.kv_bytes == 0);
    localcluster_down(run_dir);
    free(ep);
}

static void test_two_clusters_side_by_side(void **state)
{
    (void)state;
    char dir_a[700], dir_b[700], model[700], cmd[2048];
    snprintf(dir_a, sizeof dir_a, "%s/side-a", s_tmp);
    snprintf(dir_b, sizeof dir_b, "%s/side-b", s_tmp);
    snprintf(model, sizeof model, "%s/mixtral-A", fixture_root());
    char *ep_a = localcluster_up(model, 1, dir_a, NULL);
    char *ep_b = localcluster_up(model, 2, dir_b, NULL);
    assert_string_not_equal(ep_a, ep_b);
    const char *eps[2] = {ep_a, ep_b};
    char *outs[2];
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' generate --prompt-ids 5,17,2 "
                 "--max-tokens 4", s_bin, eps[i]);
        outs[i] = crosscheck_last_line(cmd);
    }
    assert_string_equal(outs[0], outs[1]);
    localcluster_down(dir_a);
    /* b still serves after a is gone. */
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' status >/dev/null", s_bin, ep_b);
    assert_int_equal(testutil_run(cmd, NULL), 0);
    localcluster_down(dir_b);
    free(outs[0]);
    free(outs[1]);
    free(ep_a);
    free(ep_b);
}

static void test_failed_start_stops_the_rest(void **state)
{
    (void)state;
    char run_dir[700], model[700], placement[700], cmd[4096];
    snprintf(run_dir, sizeof run_dir, "%s/failed-start", s_tmp);
    snprintf(model, sizeof model, "%s/mixtral-A", fixture_root());
    snprintf(placement, sizeof placement, "%s/bad-placement.txt", s_tmp);
    /* Node 2 hosts nothing of layer 1: every node refuses this placement. */
    const char *text = "nodes 2\nnode 1 layers * experts 0-3\nnode 2 layers 0 experts 4-7\n";
    assert_int_equal(testutil_write_file(placement, text, strlen(text)), 0);
    snprintf(cmd, sizeof cmd, "MOE_BIN='%s' '%s/cluster/local.sh' up --model '%s' --nodes 2 "
             "--run-dir '%s' --placement '%s' 2>&1", s_bin, s_root, model, run_dir, placement);
    char *out = NULL;
    int rc = testutil_run(cmd, &out);
    printf("  local.sh up with a bad placement: exit %d\n%s", rc, out ? out : "");
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(out, "failed") ? strstr(out, "failed") : strstr(out, "exited"));
    assert_non_null(strstr(out, "hosted by no node"));
    free(out);
    /* Nothing is left running: no pid file, no live process of the run dir. */
    snprintf(cmd, sizeof cmd, "ls '%s'/*.pid 2>/dev/null | wc -l", run_dir);
    char *count = NULL;
    assert_int_equal(testutil_run(cmd, &count), 0);
    assert_int_equal(atoi(count), 0);
    free(count);
}

static void test_node_memory_follows_its_share(void **state)
{
    (void)state;
    const char *models = testutil_env("MOE_MODELS", "build/models");
    char model[700], cmd[2048], ep_path[700];
    snprintf(model, sizeof model, "%s/mixtral-medium/config.json", models);
    if (access(model, F_OK) != 0)
        printf("  making the medium model (2.4 GB) in %s/mixtral-medium, kept for later "
               "runs and the benchmarks (make clean-models removes it)\n", models);
    testutil_make_model(models, "mixtral-medium", "medium", 1, model, sizeof model);
    snprintf(ep_path, sizeof ep_path, "%s/memory-node.endpoint", s_tmp);
    snprintf(cmd, sizeof cmd, "'%s/moe-expert' --model '%s' --node-id 1 --nodes 4 --threads 1 "
             "--endpoint-file '%s' </dev/null >/dev/null 2>&1 & echo $!", s_bin, model, ep_path);
    char *pid_text = NULL;
    assert_int_equal(testutil_run(cmd, &pid_text), 0);
    pid_t pid = (pid_t)atoi(pid_text);
    free(pid_text);
    char *ep = NULL;
    for (double t0 = timer_now(); !ep && timer_now() - t0 < 120; usleep(50000)) {
        ep = testutil_read_file(ep_path, NULL);
        if (ep && !strchr(ep, '\n')) {
            free(ep);
            ep = NULL;
        }
    }
    assert_non_null(ep);
    *strchr(ep, '\n') = '\0';

    /* One row through every hosted expert of every layer pages them all in. */
    const int hidden = 1024, layers = 8;
    void *ctx = zmq_ctx_new();
    void *sock = localcluster_dealer(ctx, ep);
    wire_limits_t lim = {.hidden = hidden, .max_rows = 1};
    err_t err = {0};
    wire_inbox_t *inbox = wire_inbox_new(&lim, &err);
    float row[1024];
    for (int i = 0; i < hidden; i++)
        row[i] = (float)((i % 17) - 8) * 0.01f;
    for (int l = 0; l < layers; l++) {
        moe_assign_t a[2] = {{0, 0, 0.5f}, {0, 4, 0.5f}}; /* node 1 of 4: experts 0, 4 */
        wire_data_t req = {.type = WIRE_EXPERT_REQUEST, .request_id = (uint64_t)l + 1,
                           .layer = l, .n_rows = 1, .hidden = hidden, .rows = row,
                           .n_assign = 2, .assign = a};
        assert_int_equal(wire_data_send(sock, NULL, &req, &err), 0);
        wire_data_t rep;
        wire_data_error_t code;
        if (wire_data_recv(inbox, sock, false, NULL, &rep, &code, &err) < 0)
            fail_msg("layer %d: %s", l, err.msg);
        assert_int_equal(rep.type, WIRE_EXPERT_REPLY);
    }
    const double all_expert_bytes = 8.0 * 8 * 3 * 1024 * 2816 * 4;
    const size_t rss = localcluster_rss(pid);
    printf("  node hosting 1/4 of the experts: RSS %.1f MB = %.3f x all expert bytes "
           "(%.1f MB; limit 0.35)\n", rss / 1e6, rss / all_expert_bytes, all_expert_bytes / 1e6);
    kill(pid, SIGTERM);
    wire_inbox_destroy(&inbox);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    free(ep);
    assert_true(rss > 0);
    assert_true(rss < 0.35 * all_expert_bytes);
}

/* Token rows and bytes of EXPERT_REQUESTs so far, from the coordinator's STATUS. */
static void s_wire_status(const char *ep, uint64_t *rows, uint64_t *bytes_sent)
{
    localcluster_conn_t conn;
    localcluster_open(&conn, ep);
    wire_reply_t rep;
    localcluster_status(&conn, 1, &rep);
    *rows = rep.timing.tokens;
    *bytes_sent = rep.timing.bytes_sent;
    localcluster_close(&conn);
}

/* --placement-groups (docs/PLACEMENT.md): refused for a model without expert
 * groups by every program; on the deepseek_v3-A fixture (16 experts in 4
 * groups, topk_group 2, top-4) on 4 nodes, the same prompt gives the same
 * tokens as with the default split while the coordinator sends fewer bytes
 * per token row (each token reaches at most 2 nodes per layer instead of up
 * to 4). */
static void test_grouped_placement_saves_traffic(void **state)
{
    (void)state;
    char model[700], run_dir[700], cmd[4096];
    snprintf(model, sizeof model, "%s/mixtral-A", fixture_root());
    snprintf(run_dir, sizeof run_dir, "%s/groups-refused", s_tmp);
    for (int i = 0; i < 3; i++) {
        if (i == 0)
            snprintf(cmd, sizeof cmd, "MOE_BIN='%s' '%s/cluster/local.sh' up --model '%s' "
                     "--nodes 2 --run-dir '%s' --placement-groups 2>&1", s_bin, s_root, model,
                     run_dir);
        else if (i == 1)
            snprintf(cmd, sizeof cmd, "'%s/moe-expert' --model '%s' --node-id 1 --nodes 2 "
                     "--placement-groups 2>&1", s_bin, model);
        else
            snprintf(cmd, sizeof cmd, "'%s/moe-coordinator' --model '%s' --node "
                     "tcp://127.0.0.1:9 --placement-groups --hello-timeout-ms 100 2>&1",
                     s_bin, model);
        char *out = NULL;
        int rc = testutil_run(cmd, &out);
        printf("  refused (exit %d): %s", rc, out ? out : "\n");
        assert_int_not_equal(rc, 0);
        assert_non_null(strstr(out, "no expert groups"));
        free(out);
    }

    snprintf(model, sizeof model, "%s/deepseek_v3-A", fixture_root());
    config_t cfg;
    err_t err = {0};
    if (config_load(&cfg, model, &err) < 0)
        fail_msg("%s", err.msg);
    assert_true(cfg.n_group > 1 && cfg.topk_group < cfg.n_group);
    const int nodes = 4;
    const char *extra[2] = {NULL, "--placement-groups"};
    double per_row[2];
    char *out[2];
    for (int s = 0; s < 2; s++) {
        snprintf(run_dir, sizeof run_dir, "%s/groups-%d", s_tmp, s);
        char *ep = localcluster_up(model, nodes, run_dir, extra[s]);
        snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' generate --prompt-ids "
                 "1,7,42,99,3,250,17,64,5,128,33,9 --max-tokens 12", s_bin, ep);
        out[s] = crosscheck_last_line(cmd);
        uint64_t rows = 0, bytes = 0;
        s_wire_status(ep, &rows, &bytes);
        assert_true(rows > 0);
        per_row[s] = (double)bytes / (double)rows;
        printf("  deepseek_v3-A on %d nodes, %s split: %llu bytes sent over %llu token rows, "
               "%.0f per row\n", nodes, s ? "grouped" : "default", (unsigned long long)bytes,
               (unsigned long long)rows, per_row[s]);
        if (s == 1) {
            /* local.sh wrote the placement it used: group g whole on node g + 1. */
            snprintf(cmd, sizeof cmd, "%s/placement.txt", run_dir);
            char *text = testutil_read_file(cmd, NULL);
            assert_non_null(text);
            assert_non_null(strstr(text, "node 1 layers * experts 0-3\n"));
            assert_non_null(strstr(text, "node 4 layers * experts 12-15\n"));
            free(text);
        }
        localcluster_down(run_dir);
        free(ep);
    }
    /* The placement changes where experts run, not what they compute. */
    assert_string_equal(out[0], out[1]);
    /* Per MoE layer a row goes to at most topk_group = 2 nodes instead of up
     * to 4 (3.14 expected for uniform choices, docs/PLACEMENT.md). */
    printf("  grouped / default bytes per row: %.3f\n", per_row[1] / per_row[0]);
    assert_true(per_row[1] < per_row[0]);
    free(out[0]);
    free(out[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures_through_clusters),
        cmocka_unit_test(test_malformed_client_request),
        cmocka_unit_test(test_node_killed_mid_request),
        cmocka_unit_test(test_sampling_and_streaming),
        cmocka_unit_test(test_concurrent_clients_batched),
        cmocka_unit_test(test_full_queue_and_cancel),
        cmocka_unit_test(test_disconnect_frees_sequence),
        cmocka_unit_test(test_two_clusters_side_by_side),
        cmocka_unit_test(test_failed_start_stops_the_rest),
        cmocka_unit_test(test_node_memory_follows_its_share),
        cmocka_unit_test(test_grouped_placement_saves_traffic),
    };
    return cmocka_run_group_tests(tests, s_setup, testutil_tmpdir_teardown);
}
