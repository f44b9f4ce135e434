/* test_logflood: a flood of garbage cannot flood the logs.
 *
 * FLOOD_CONNECTIONS connections each send a message of random bytes to an
 * expert node and to the coordinator, and go away at once (so the answer
 * finds nobody). Each log may grow by a handful of lines per cause plus the
 * lines that count what was not logged one by one, the lines say what
 * happened in words a user understands, and the cluster then still answers
 * exactly as moe-run does, and STATUS (model_path and model_arch apart). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <jansson.h>
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
#include "tests/localcluster.h"
#include "tests/testutil.h"

enum { FLOOD_CONNECTIONS = 300 };
enum { FLOOD_SECONDS = 60 };  /* the flood of one endpoint takes at most this */
enum { MAX_NEW_LINES = 30 };  /* per log: a handful per cause + counts */

static char s_bin[512];
static char *s_tmp;

static int s_setup(void **state)
{
    snprintf(s_bin, sizeof s_bin, "%s", testutil_env("MOE_BIN", "build/bin"));
    s_tmp = testutil_mkdtemp("test_logflood");
    *state = s_tmp;
    return s_tmp ? 0 : -1;
}

/* Lines of path, and how many contain needle (NULL: none asked). */
static int s_lines(const char *path, const char *needle, int *n_match)
{
    size_t n = 0;
    char *text = testutil_read_file(path, &n);
    if (!text)
        fail_msg("cannot read %s", path);
    int lines = 0, match = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lines++;
        if (needle && strstr(line, needle))
            match++;
    }
    if (n_match)
        *n_match = match;
    free(text);
    return lines;
}

/* Sends n messages of random bytes to endpoint, each from a new connection
 * that closes right after its send. */
static void s_flood(const char *endpoint, int n, unsigned seed)
{
    void *ctx = zmq_ctx_new();
    assert_non_null(ctx);
    const double t0 = timer_now();
    for (int i = 0; i < n && timer_now() - t0 < FLOOD_SECONDS; i++) {
        void *s = zmq_socket(ctx, ZMQ_DEALER);
        assert_non_null(s);
        int linger = 500; /* ms: time enough to deliver, then gone */
        assert_int_equal(zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger), 0);
        assert_int_equal(zmq_connect(s, endpoint), 0);
        int frames = 1 + (int)(rand_r(&seed) % 3);
        for (int f = 0; f < frames; f++) {
            unsigned char bytes[64];
            size_t len = 1 + rand_r(&seed) % sizeof bytes;
            for (size_t b = 0; b < len; b++)
                bytes[b] = (unsigned char)rand_r(&seed);
            zmq_send(s, bytes, len, f + 1 < frames ? ZMQ_SNDMORE : 0);
        }
        zmq_close(s);
    }
    zmq_ctx_term(ctx); /* bounded by the linger */
}

/* Waits (bounded) until path stops growing for a second. */
static void s_settle(const char *path)
{
    long last = -1;
    for (int i = 0; i < 20; i++) {
        size_t n = 0;
        char *text = testutil_read_file(path, &n);
        free(text);
        if ((long)n == last)
            return;
        last = (long)n;
        sleep(1);
    }
}

static void test_flood_logs_bounded(void **state)
{
    (void)state;
    localcluster_t lc;
    localcluster_start(&lc, "mixtral-A", 1, s_tmp, "flood", NULL);
    char node_log[1200], coord_log[1200], node_ep_path[1200];
    snprintf(node_log, sizeof node_log, "%s/expert-1.log", lc.run_dir);
    snprintf(coord_log, sizeof coord_log, "%s/coordinator.log", lc.run_dir);
    snprintf(node_ep_path, sizeof node_ep_path, "%s/expert-1.endpoint", lc.run_dir);
    size_t n = 0;
    char *node_ep = testutil_read_file(node_ep_path, &n);
    assert_non_null(node_ep);
    node_ep[strcspn(node_ep, "\n")] = '\0';
    const int node_before = s_lines(node_log, NULL, NULL);
    const int coord_before = s_lines(coord_log, NULL, NULL);

    const double t0 = timer_now();
    s_flood(node_ep, FLOOD_CONNECTIONS, 1);
    s_flood(lc.endpoint, FLOOD_CONNECTIONS, 2);
    const double seconds = timer_now() - t0;
    s_settle(node_log);
    s_settle(coord_log);

    /* The cluster still serves, exactly. */
    char fx_dir[1200];
    snprintf(fx_dir, sizeof fx_dir, "%s/mixtral-A", fixture_root());
    fixture_t *fx = fixture_load(fx_dir);
    assert_non_null(fx);
    crosscheck_fixture(fx, lc.endpoint, s_bin, s_tmp, "");
    fixture_destroy(&fx);

    /* STATUS still answers, with the model's folder and architecture apart. */
    char cmd[2600];
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' status --json", s_bin,
             lc.endpoint);
    char *json = NULL;
    const int status_rc = testutil_run(cmd, &json);
    json_error_t jerr;
    json_t *root = json ? json_loads(json, 0, &jerr) : NULL;
    const char *path = json_string_value(json_object_get(root, "model_path"));
    const char *arch = json_string_value(json_object_get(root, "model_arch"));
    const bool status_ok = status_rc == 0 && path && arch && strcmp(arch, "mixtral") == 0 &&
                           strcmp(path, fx_dir) == 0;

    /* Stopping writes what is still counted (and stops the processes before
     * any check below can fail the test). */
    localcluster_stop(&lc);
    if (!status_ok)
        fail_msg("status --json: exit %d, %.300s", status_rc, json ? json : "");
    json_decref(root);
    free(json);
    int node_malformed = 0, node_counts = 0, coord_gone = 0, coord_counts = 0;
    const int node_new = s_lines(node_log, "malformed message from", &node_malformed) -
                         node_before;
    (void)s_lines(node_log, "not logged one by one", &node_counts);
    const int coord_new = s_lines(coord_log, "went away before its answer", &coord_gone) -
                          coord_before;
    (void)s_lines(coord_log, "not logged one by one", &coord_counts);
    printf("  %d connections to each in %.1f s: node log +%d lines (%d malformed, %d "
           "counts), coordinator log +%d lines (%d went away, %d counts)\n",
           FLOOD_CONNECTIONS, seconds, node_new, node_malformed, node_counts, coord_new,
           coord_gone, coord_counts);
    snprintf(cmd, sizeof cmd, "tail -n 8 '%s' '%s'", node_log, coord_log);
    fflush(stdout);
    if (system(cmd) != 0)
        printf("  (cannot show the logs)\n");
    if (node_new > MAX_NEW_LINES || coord_new > MAX_NEW_LINES) {
        fail_msg("the flood wrote %d lines to the node's log and %d to the coordinator's "
                 "(at most %d each)", node_new, coord_new, MAX_NEW_LINES);
    }
    assert_true(node_malformed >= 1);
    assert_true(node_counts >= 1);
    assert_true(coord_counts >= 1);
    free(node_ep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flood_logs_bounded),
    };
    return cmocka_run_group_tests(tests, s_setup, testutil_tmpdir_teardown);
}
