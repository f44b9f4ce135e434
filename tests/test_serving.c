/* test_serving: the coordinator as a server, through real processes
 * (cluster/local.sh) and the real client protocol: EOS from
 * generation_config.json ends a generation as in moe-run; a deadline fails a
 * request, running or waiting, and frees its memory; an over-long prompt or
 * too many max tokens is refused with a clear error; a text prompt is
 * tokenized by the coordinator and the text printed is the decoded tokens
 * moe-run makes for the same ids; a seeded sampled request gives the same
 * tokens alone and among 15 others; and a load of 64
 * concurrent clients x 4 requests is answered in full, each request exactly
 * once, with memory back to its baseline afterwards; sequences sent together
 * run as two micro-batches, with the coordinator's overlap counted; a coordinator killed
 * mid-request fails its clients at once, and one started again on the same
 * endpoint serves them without restarting the nodes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "client/client.h"
#include "core/idlist.h"
#include "core/mem.h"
#include "core/timer.h"
#include "proto/client_rpc.h"
#include "tests/crosscheck.h"
#include "tests/fixture.h"
#include "tests/localcluster.h"
#include "tests/testutil.h"
#include "tokenizer/tokenizer.h"

static char s_bin[512];
static char *s_tmp;

static int s_setup(void **state)
{
    snprintf(s_bin, sizeof s_bin, "%s", testutil_env("MOE_BIN", "build/bin"));
    s_tmp = testutil_mkdtemp("test_serving");
    *state = s_tmp;
    return s_tmp ? 0 : -1;
}

/* A model folder that is mixtral-A's weights and config (linked) plus the
 * given generation_config.json text. */
static void s_fixture_with_genconfig(char *dir, size_t n, const char *name, const char *json)
{
    char cmd[3 * PATH_MAX + 64], path[1024], fixture[PATH_MAX];
    snprintf(dir, n, "%s/%s", s_tmp, name);
    snprintf(path, sizeof path, "%s/mixtral-A", fixture_root());
    assert_non_null(realpath(path, fixture)); /* the links must not be relative */
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && ln -sf '%s/config.json' '%s/model.safetensors' "
             "'%s/'", dir, fixture, fixture, dir);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    assert_int_equal(testutil_write_file(path, json, strlen(json)), 0);
}

/* The model's EOS id (generation_config.json) ends a generation after that
 * token, in moe-run and in the cluster alike; --ignore-eos runs to max
 * tokens; a broken generation_config.json stops the coordinator's start. */
static void test_eos_ends_generation(void **state)
{
    (void)state;
    char model[1024], run_dir[1024], cmd[4096];
    const char *prompt = "97,154,160";
    /* The plain fixture's greedy run: EOS will be its 4th token. */
    snprintf(cmd, sizeof cmd, "'%s/moe-run' --model '%s/mixtral-A' --prompt-ids %s "
             "--max-tokens 12 2>/dev/null", s_bin, fixture_root(), prompt);
    char *full = crosscheck_last_line(cmd);
    int32_t *ids = NULL;
    int n = 0;
    err_t err = {0};
    assert_int_equal(idlist_parse(full, &ids, &n, &err), 0);
    assert_int_equal(n, 12);
    int end = 0;
    while (ids[end] != ids[3])
        end++;
    char json[128], *want = idlist_format(ids, end + 1);
    snprintf(json, sizeof json, "{\"eos_token_id\": [%d], \"bos_token_id\": 1}\n", (int)ids[3]);
    s_fixture_with_genconfig(model, sizeof model, "eos-model", json);

    snprintf(cmd, sizeof cmd, "'%s/moe-run' --model '%s' --prompt-ids %s --max-tokens 12 "
             "2>/dev/null", s_bin, model, prompt);
    char *run = crosscheck_last_line(cmd);
    assert_string_equal(run, want);

    snprintf(run_dir, sizeof run_dir, "%s/eos", s_tmp);
    char *ep = localcluster_up(model, 2, run_dir, NULL);
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' generate --prompt-ids %s "
             "--max-tokens 12 2>/dev/null", s_bin, ep, prompt);
    char *got = crosscheck_last_line(cmd);
    assert_string_equal(got, want);
    /* Streaming names the reason; --ignore-eos gives the whole run. */
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' generate --prompt-ids %s "
             "--max-tokens 12 --stream 2>&1 >/dev/null", s_bin, ep, prompt);
    char *summary = crosscheck_last_line(cmd);
    assert_non_null(strstr(summary, "(eos)"));
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' generate --prompt-ids %s "
             "--max-tokens 12 --ignore-eos 2>/dev/null", s_bin, ep, prompt);
    char *ignored = crosscheck_last_line(cmd);
    assert_string_equal(ignored, full);
    printf("  EOS %d: %s (moe-run and cluster), ignoring it: %s\n", (int)ids[3], got, ignored);
    localcluster_down(run_dir);

    /* An EOS id outside the vocabulary: the start fails, naming the file. */
    s_fixture_with_genconfig(model, sizeof model, "bad-eos", "{\"eos_token_id\": 100000}");
    snprintf(cmd, sizeof cmd, "'%s/moe-run' --model '%s' --prompt-ids 1 2>&1", s_bin, model);
    char *out = NULL;
    assert_int_not_equal(testutil_run(cmd, &out), 0);
    assert_non_null(strstr(out, "generation_config.json"));
    free(out);
    free(ep);
    free(ignored);
    free(summary);
    free(got);
    free(run);
    mem_free(want);
    mem_free(ids);
    free(full);
}

/* Sends GENERATE and waits for its end: the final TOKENS reply (returns
 * OK) or an error reply (returns its code). *tokens counts tokens received. */
static wire_client_error_t s_generate_wire(localcluster_conn_t *conn,
                                           const wire_request_t *req, int *tokens,
                                           char *message, size_t message_size)
{
    localcluster_send(conn, req);
    *tokens = 0;
    for (int i = 0; i < 100000; i++) {
        wire_reply_t rep;
        localcluster_recv(conn, &rep, "GENERATE");
        if (rep.request_id != req->request_id)
            continue;
        if (rep.type == WIRE_REP_ERROR) {
            snprintf(message, message_size, "%s", rep.error_message);
            return rep.error_code;
        }
        assert_int_equal(rep.type, WIRE_REP_TOKENS);
        *tokens += rep.n_tokens;
        if (rep.final)
            return WIRE_CLIENT_OK;
    }
    fail_msg("request %llu never ended", (unsigned long long)req->request_id);
    return WIRE_CLIENT_INTERNAL;
}

/* A deadline fails a running request and a waiting one with
 * DEADLINE_EXCEEDED, within a bounded time, and frees their memory. */
static void test_deadline(void **state)
{
    (void)state;
    char cmd[4096];
    localcluster_t lc;
    localcluster_start(&lc, "mixtral-A", 2, s_tmp, "deadline", "--max-seqs 1");
    localcluster_conn_t conn;
    localcluster_open(&conn, lc.endpoint);
    int32_t prompt[3] = {5, 17, 2};
    /* Request 1 holds the only slot for long (no deadline); request 2 waits
     * behind it and must fail after its 150 ms. */
    wire_request_t hold = {.type = WIRE_REQ_GENERATE, .request_id = 1, .n_prompt = 3,
                           .prompt = prompt, .max_tokens = 500};
    wire_request_t waiting = hold;
    waiting.request_id = 2;
    waiting.deadline_ms = 150;
    localcluster_send(&conn, &hold);
    const double t0 = timer_now();
    char msg[WIRE_MAX_TEXT] = "";
    int tokens = 0;
    assert_int_equal(s_generate_wire(&conn, &waiting, &tokens, msg, sizeof msg),
                     WIRE_CLIENT_DEADLINE_EXCEEDED);
    const double waited = timer_now() - t0;
    printf("  waiting request: DEADLINE_EXCEEDED after %.3f s: %s\n", waited, msg);
    assert_true(waited >= 0.15 && waited < 10);
    assert_non_null(strstr(msg, "150 ms"));
    wire_request_t cancel = {.type = WIRE_REQ_CANCEL, .request_id = 3, .cancel_id = 1};
    localcluster_send(&conn, &cancel);

    /* A running request with a deadline shorter than its generation. */
    wire_request_t running = hold;
    running.request_id = 4;
    running.deadline_ms = 100;
    running.max_tokens = 500 - 3;
    running.prompt = prompt;
    /* Long enough to outlast 100 ms: the slowest configuration (sanitizers)
     * still makes 500 tokens in more than that; a faster machine may finish
     * first, which the check below tells apart. */
    const double t1 = timer_now();
    wire_client_error_t code = s_generate_wire(&conn, &running, &tokens, msg, sizeof msg);
    const double took = timer_now() - t1;
    printf("  running request: %s after %.3f s and %d tokens: %s\n",
           code == WIRE_CLIENT_OK ? "finished" : "failed", took, tokens, msg);
    if (code == WIRE_CLIENT_OK)
        assert_true(took < 0.1); /* finished inside its deadline: nothing to fail */
    else {
        assert_int_equal(code, WIRE_CLIENT_DEADLINE_EXCEEDED);
        assert_true(took >= 0.1 && took < 10);
        assert_true(tokens < running.max_tokens);
    }
    localcluster_sched_t st;
    localcluster_sched(lc.endpoint, &st);
    assert_int_equal(st.running, 0);
    assert_int_equal(st.queued, 0);
    assert_true(st.kv_bytes == 0);

    /* The same through moe-client: exit 1, one line naming the deadline. */
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' generate --prompt-ids 5,17,2 "
             "--max-tokens 497 --deadline-ms 1 2>&1 >/dev/null", s_bin, lc.endpoint);
    char *out = NULL;
    int rc = testutil_run(cmd, &out);
    printf("  moe-client --deadline-ms 1: exit %d: %s", rc, out);
    if (rc != 0) {
        assert_int_equal(rc, 1);
        assert_non_null(strstr(out, "deadline_exceeded"));
    }
    free(out);
    localcluster_close(&conn);
    localcluster_stop(&lc);
}

/* A prompt longer than the context, or max tokens past it, is refused with
 * a clear error, and the cluster serves on. */
static void test_limits_refused(void **state)
{
    (void)state;
    char cmd[12288];
    localcluster_t lc;
    localcluster_start(&lc, "mixtral-A", 2, s_tmp, "limits", NULL);
    /* mixtral-A has 512 positions. */
    int used = 0;
    char ids[4096];
    for (int i = 0; i < 600; i++)
        used += snprintf(ids + used, sizeof ids - (size_t)used, "%s%d", i ? "," : "", i % 200);
    static const struct {
        const char *args, *needle;
    } cases[] = {
        {"generate --prompt-ids %s --max-tokens 1", "%"},
        {"generate --prompt-ids 1,2,3 --max-tokens 600", "exceed the context limit of 512"},
        {"logits --prompt-ids %s --out /dev/null", "%"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char args[8192];
        snprintf(args, sizeof args, cases[c].args, ids);
        snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' %s 2>&1 >/dev/null", s_bin,
                 lc.endpoint, args);
        char *out = NULL;
        int rc = testutil_run(cmd, &out);
        const char *needle = strcmp(cases[c].needle, "%") == 0 ? "limit" : cases[c].needle;
        if (rc != 1 || !strstr(out, "invalid_argument") || !strstr(out, needle))
            fail_msg("case %zu: exit %d, stderr %s", c, rc, out);
        printf("  %.60s...: %s", cases[c].args, out);
        free(out);
    }
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' generate --prompt-ids 1,2,3 "
             "--max-tokens 4 2>/dev/null", s_bin, lc.endpoint);
    char *ok = crosscheck_last_line(cmd);
    assert_true(strlen(ok) > 0);
    free(ok);
    localcluster_stop(&lc);
}

/* Runs cmd and returns its whole stdout without the last newline (malloc'd),
 * failing the test when it fails. */
static char *s_output(const char *cmd)
{
    char *out = NULL;
    int rc = testutil_run(cmd, &out);
    if (rc != 0)
        fail_msg("%s: exit %d", cmd, rc);
    size_t n = strlen(out);
    if (n && out[n - 1] == '\n')
        out[n - 1] = '\0';
    return out;
}

/* A text prompt: the coordinator tokenizes it with the model's tokenizer.json
 * (written by moe-mkmodel) and moe-client prints the generated text, which is
 * the decoding of the ids moe-run generates for the same prompt ids, whole
 * and streamed. A model without a tokenizer refuses text with a clear error. */
static void test_text_prompt(void **state)
{
    (void)state;
    char model[1024], run_dir[1024], cmd[8192], path[1100];
    testutil_make_model(s_tmp, "tiny-text", "tiny", 5, model, sizeof model);
    snprintf(path, sizeof path, "%s/tokenizer.json", model);
    err_t err = {0};
    tokenizer_t *tok = tokenizer_load(path, &err);
    if (!tok)
        fail_msg("%s", err.msg);
    snprintf(run_dir, sizeof run_dir, "%s/text", s_tmp);
    char *ep = localcluster_up(model, 2, run_dir, NULL);
    static const char *prompts[] = {
        "Experts live on many machines.",
        "Caf\xc3\xa9 na\xc3\xafve \xe2\x80\x94 \xe6\x97\xa5\xe6\x9c\xac "
        "\xf0\x9f\x9a\x80!",
    };
    for (size_t p = 0; p < sizeof prompts / sizeof prompts[0]; p++) {
        int32_t *ids = NULL;
        size_t n = 0;
        assert_int_equal(tokenizer_encode(tok, prompts[p], strlen(prompts[p]), 1, &ids, &n,
                                          &err), 0);
        char *list = idlist_format(ids, (int)n);
        snprintf(cmd, sizeof cmd, "'%s/moe-run' --model '%s' --prompt-ids %s --max-tokens 16 "
                 "--ignore-eos 2>/dev/null", s_bin, model, list);
        char *run = crosscheck_last_line(cmd);
        int32_t *gen = NULL;
        int n_gen = 0;
        assert_int_equal(idlist_parse(run, &gen, &n_gen, &err), 0);
        /* What a reader sees: special tokens are left out of the text. */
        int n_text = 0;
        for (int i = 0; i < n_gen; i++)
            if (!tokenizer_is_special(tok, gen[i]))
                gen[n_text++] = gen[i];
        char *want = NULL;
        assert_int_equal(tokenizer_decode(tok, gen, (size_t)n_text, &want, &err), 0);
        char *got[2];
        for (int stream = 0; stream < 2; stream++) {
            snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' generate --prompt '%s' "
                     "--max-tokens 16 --ignore-eos %s 2>/dev/null", s_bin, ep, prompts[p],
                     stream ? "--stream" : "");
            got[stream] = s_output(cmd);
        }
        printf("  '%s' (%zu tokens) -> %d tokens, %d of them text: '%s'\n", prompts[p], n,
               n_gen, n_text, got[0]);
        assert_string_equal(got[0], want);
        assert_string_equal(got[1], want);
        /* Streamed text ends with a newline, before the counts on stderr (a
         * terminal shows both): they are not glued to the text. */
        snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' generate --prompt '%s' "
                 "--max-tokens 16 --ignore-eos --stream 2>&1", s_bin, ep, prompts[p]);
        char *both = NULL, expect[1024];
        assert_int_equal(testutil_run(cmd, &both), 0);
        snprintf(expect, sizeof expect, "%s\nmoe-client: ", want);
        if (strncmp(both, expect, strlen(expect)) != 0)
            fail_msg("streamed output '%s' does not start with '%s'", both, expect);
        free(both);
        free(got[0]);
        free(got[1]);
        mem_free(want);
        mem_free(gen);
        free(run);
        mem_free(list);
        mem_free(ids);
    }
    /* Text that is not UTF-8 is refused, and the cluster serves on. */
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' generate --prompt "
             "\"$(printf 'a\\377b')\" --max-tokens 2 2>&1 >/dev/null", s_bin, ep);
    char *out = NULL;
    assert_int_equal(testutil_run(cmd, &out), 1);
    printf("  invalid UTF-8: %s", out);
    assert_non_null(strstr(out, "invalid_argument"));
    free(out);
    localcluster_down(run_dir);
    free(ep);

    /* mixtral-A has no tokenizer.json: a text prompt gets a clear refusal. */
    snprintf(model, sizeof model, "%s/mixtral-A", fixture_root());
    snprintf(run_dir, sizeof run_dir, "%s/notext", s_tmp);
    ep = localcluster_up(model, 1, run_dir, NULL);
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' generate --prompt hello "
             "--max-tokens 2 2>&1 >/dev/null", s_bin, ep);
    assert_int_equal(testutil_run(cmd, &out), 1);
    printf("  no tokenizer: %s", out);
    assert_non_null(strstr(out, "no tokenizer.json"));
    free(out);
    localcluster_down(run_dir);
    free(ep);
    tokenizer_destroy(&tok);
}

/* A model with a shared expert (qwen2_moe): the coordinator computes it while
 * the routed experts are on the nodes, and says how long that took; the
 * answer is moe-run's. */
static void test_shared_expert_overlaps(void **state)
{
    (void)state;
    char cmd[4096];
    localcluster_t lc;
    localcluster_start(&lc, "qwen2_moe-A", 2, s_tmp, "overlap", NULL);
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' generate --prompt-ids 5,17,2,9 "
             "--max-tokens 12 2>/dev/null", s_bin, lc.endpoint);
    char *got = crosscheck_last_line(cmd);
    snprintf(cmd, sizeof cmd, "'%s/moe-run' --model '%s' --prompt-ids 5,17,2,9 "
             "--max-tokens 12 2>/dev/null", s_bin, lc.model);
    char *want = crosscheck_last_line(cmd);
    assert_string_equal(got, want);
    localcluster_conn_t conn;
    localcluster_open(&conn, lc.endpoint);
    wire_reply_t rep;
    localcluster_status(&conn, 1, &rep);
    printf("  %llu expert batches: %.6f s from send to last reply, of which %.6f s the "
           "coordinator spent on shared experts meanwhile\n",
           (unsigned long long)rep.timing.dispatch_calls, rep.timing.seconds_dispatch,
           rep.timing.seconds_overlap);
    assert_true(rep.timing.seconds_overlap > 0);
    assert_true(rep.timing.seconds_overlap < rep.timing.seconds_dispatch);
    localcluster_close(&conn);
    free(got);
    free(want);
    localcluster_stop(&lc);
}

enum { MB_SEQS = 4, MB_TOKENS = 12 };

/* Two micro-batches (--micro-batches 2): one sequence alone is
 * not split, and mixtral has no shared expert, so the coordinator computes
 * nothing while experts are away; four sequences sent at once share steps,
 * which are split, and the coordinator computes one micro-batch while the
 * other's experts are away (STATUS and the metrics say how long); every
 * sequence prints what moe-run prints for it alone. */
static void test_micro_batches_overlap(void **state)
{
    (void)state;
    char cmd[4096];
    localcluster_t lc;
    localcluster_start(&lc, "mixtral-A", 2, s_tmp, "microbatch", "--micro-batches 2");
    int32_t prompts[MB_SEQS][3];
    char *want[MB_SEQS];
    for (int q = 0; q < MB_SEQS; q++) {
        for (int i = 0; i < 3; i++)
            prompts[q][i] = (int32_t)(5 + 61 * q + 17 * i);
        char *ids = idlist_format(prompts[q], 3);
        snprintf(cmd, sizeof cmd, "'%s/moe-run' --model '%s' --prompt-ids %s "
                 "--max-tokens %d 2>/dev/null", s_bin, lc.model, ids, MB_TOKENS);
        want[q] = crosscheck_last_line(cmd);
        if (q == 0) {
            snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' generate "
                     "--prompt-ids %s --max-tokens %d 2>/dev/null", s_bin, lc.endpoint, ids,
                     MB_TOKENS);
            char *got = crosscheck_last_line(cmd);
            assert_string_equal(got, want[q]);
            free(got);
        }
        mem_free(ids);
    }
    localcluster_conn_t conn;
    localcluster_open(&conn, lc.endpoint);
    wire_reply_t rep;
    localcluster_status(&conn, 1, &rep);
    assert_true(rep.timing.seconds_dispatch > 0);
    assert_true(rep.timing.seconds_overlap == 0);

    /* All four queued before the first step, on one connection. */
    for (int q = 0; q < MB_SEQS; q++) {
        wire_request_t req = {.type = WIRE_REQ_GENERATE, .request_id = 10 + (uint64_t)q,
                              .n_prompt = 3, .prompt = prompts[q], .max_tokens = MB_TOKENS};
        localcluster_send(&conn, &req);
    }
    int32_t got[MB_SEQS][MB_TOKENS];
    int n_got[MB_SEQS] = {0}, n_final = 0;
    for (int i = 0; i < MB_SEQS * (MB_TOKENS + 2) && n_final < MB_SEQS; i++) {
        localcluster_recv(&conn, &rep, "a micro-batched generation");
        const int q = (int)rep.request_id - 10;
        assert_true(q >= 0 && q < MB_SEQS);
        assert_int_not_equal(rep.type, WIRE_REP_ERROR);
        for (int t = 0; t < rep.n_tokens && n_got[q] < MB_TOKENS; t++)
            got[q][n_got[q]++] = rep.tokens[t];
        n_final += rep.final;
    }
    assert_int_equal(n_final, MB_SEQS);
    for (int q = 0; q < MB_SEQS; q++) {
        char *ids = idlist_format(got[q], n_got[q]);
        assert_string_equal(ids, want[q]);
        mem_free(ids);
        free(want[q]);
    }
    localcluster_status(&conn, 2, &rep);
    printf("  %llu expert batches: experts away %.6f s, of which the coordinator computed "
           "%.6f s (the other micro-batch)\n", (unsigned long long)rep.timing.dispatch_calls,
           rep.timing.seconds_dispatch, rep.timing.seconds_overlap);
    assert_true(rep.timing.seconds_overlap > 0);
    assert_true(rep.timing.seconds_overlap < rep.timing.seconds_dispatch);
    assert_non_null(rep.metrics);
    assert_non_null(strstr(rep.metrics, "moe_overlap_seconds_total"));
    localcluster_close(&conn);
    localcluster_stop(&lc);
}

/* Runs cmd in the background, detached from our output pipe (so that
 * testutil_run returns at once); returns its pid: that of cmd itself when
 * it is a single program (exec), else of the subshell running it. */
static pid_t s_spawn(const char *cmd, bool single_program)
{
    char line[8400], *out = NULL;
    snprintf(line, sizeof line, "( %s%s ) </dev/null >/dev/null 2>&1 & echo $!",
             single_program ? "exec " : "", cmd);
    assert_int_equal(testutil_run(line, &out), 0);
    pid_t pid = (pid_t)atol(out);
    free(out);
    assert_true(pid > 0);
    return pid;
}

/* Waits (bounded) for pid, a child of a shell we no longer own: polls until
 * it is gone. True when it ended within seconds. */
static bool s_gone_within(pid_t pid, double seconds)
{
    for (double t0 = timer_now(); timer_now() - t0 < seconds; usleep(20000))
        if (!testutil_running(pid))
            return true;
    return false;
}

/* The coordinator dies mid-generation: the client fails at once with a clear
 * error instead of waiting out its timeout; a coordinator started again on
 * the same endpoint takes the nodes back (they need no restart) and serves
 * the same client object and new clients. */
static void test_coordinator_restart(void **state)
{
    (void)state;
    char model[1024], cmd[8192], path[1100];
    testutil_make_model(s_tmp, "small-restart", "small", 3, model, sizeof model);
    localcluster_t lc;
    localcluster_start(&lc, model, 2, s_tmp, "restart", NULL);
    err_t err = {0};
    client_t *client = client_connect(lc.endpoint, 20000, &err);
    assert_non_null(client);
    int32_t prompt[3] = {5, 17, 2}, *tokens = NULL;
    int n = 0;
    assert_int_equal(client_generate(client, prompt, 3, 4, NULL, NULL, &tokens, &n, &err), 0);
    mem_free(tokens);

    /* A long generation from another client, then kill -9 of the coordinator. */
    snprintf(path, sizeof path, "%s/restart-client.err", s_tmp);
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' --timeout 60 generate "
             "--prompt-ids 1,2,3 --max-tokens 4000 --ignore-eos >/dev/null 2>'%s'; "
             "echo $? >'%s.rc'", s_bin, lc.endpoint, path, path);
    pid_t waiter = s_spawn(cmd, false);
    localcluster_sched_t st = {0};
    for (double t0 = timer_now(); st.running == 0 && timer_now() - t0 < 10; usleep(20000))
        localcluster_sched(lc.endpoint, &st);
    assert_int_equal(st.running, 1);
    pid_t coordinator = localcluster_pid(lc.run_dir, "coordinator");
    const double t_kill = timer_now();
    assert_int_equal(kill(coordinator, SIGKILL), 0);
    assert_true(s_gone_within(waiter, 10));
    const double failed_after = timer_now() - t_kill;
    char rc_path[1200];
    snprintf(rc_path, sizeof rc_path, "%s.rc", path);
    char *rc = testutil_read_file(rc_path, NULL), *msg = testutil_read_file(path, NULL);
    assert_non_null(rc);
    assert_non_null(msg);
    printf("  coordinator killed: the client exited %d after %.3f s: %s", atoi(rc),
           failed_after, msg);
    assert_int_equal(atoi(rc), 1);
    assert_non_null(strstr(msg, "closed the connection"));
    assert_true(failed_after < 5);
    free(rc);
    free(msg);

    /* Start it again on the same endpoint with the same nodes. */
    char nodes[2][WIRE_MAX_TEXT];
    for (int i = 0; i < 2; i++) {
        char f[1100];
        snprintf(f, sizeof f, "%s/expert-%d.endpoint", lc.run_dir, i + 1);
        char *text = testutil_read_file(f, NULL);
        assert_non_null(text);
        text[strcspn(text, "\n")] = '\0';
        snprintf(nodes[i], sizeof nodes[i], "%s", text);
        free(text);
    }
    snprintf(path, sizeof path, "%s/coordinator.endpoint", lc.run_dir);
    unlink(path);
    snprintf(cmd, sizeof cmd, "'%s/moe-coordinator' --model '%s' --node '%s' --node '%s' "
             "--bind '%s' --endpoint-file '%s' >'%s/coordinator-2.log' 2>&1",
             s_bin, model, nodes[0], nodes[1], lc.endpoint, path, lc.run_dir);
    pid_t again = s_spawn(cmd, true);
    char pid_text[32], pid_path[1100];
    snprintf(pid_text, sizeof pid_text, "%d\n", (int)again);
    snprintf(pid_path, sizeof pid_path, "%s/coordinator.pid", lc.run_dir);
    assert_int_equal(testutil_write_file(pid_path, pid_text, strlen(pid_text)), 0);
    bool ready = false;
    for (double t0 = timer_now(); !ready && timer_now() - t0 < 30; usleep(20000))
        ready = access(path, F_OK) == 0;
    assert_true(ready);
    /* The client object of before, and a new client, are both served. */
    assert_int_equal(client_generate(client, prompt, 3, 4, NULL, NULL, &tokens, &n, &err), 0);
    assert_int_equal(n, 4);
    mem_free(tokens);
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' generate --prompt-ids 5,17,2 "
             "--max-tokens 4 2>/dev/null", s_bin, lc.endpoint);
    char *out = crosscheck_last_line(cmd);
    printf("  restarted on %s: served the old client object and a new client (%s)\n",
           lc.endpoint, out);
    free(out);
    client_destroy(&client);
    localcluster_stop(&lc);
}

enum { N_BATCH = 16 };

/* Sampling is per sequence: a seeded request prints the same tokens alone and
 * among 15 other sampled requests with other seeds and settings. */
static void test_seed_independent_of_batch(void **state)
{
    (void)state;
    char cmd[16384];
    localcluster_t lc;
    localcluster_start(&lc, "mixtral-A", 2, s_tmp, "seeds", NULL);
    const char *mine = "generate --prompt-ids 97,154,160 --max-tokens 24 --temperature 1.2 "
                       "--top-p 0.95 --seed 7";
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' %s 2>/dev/null", s_bin,
             lc.endpoint, mine);
    char *alone = crosscheck_last_line(cmd);
    /* All at once: mine is client 0; the others differ in prompt, seed,
     * temperature and top-k. Each output goes to its own file. */
    int used = snprintf(cmd, sizeof cmd, "(");
    for (int c = 0; c < N_BATCH; c++) {
        char other[256];
        snprintf(other, sizeof other, "generate --prompt-ids %d,%d --max-tokens %d "
                 "--temperature %.1f --top-k %d --seed %d", 3 + c, 40 + 7 * c, 8 + c,
                 0.5 + 0.1 * c, 5 + c, 100 + c);
        used += snprintf(cmd + used, sizeof cmd - (size_t)used,
                         "timeout 60 '%s/moe-client' --connect '%s' %s > '%s/seed-%d.out' "
                         "2>/dev/null & ", s_bin, lc.endpoint, c == 0 ? mine : other, s_tmp, c);
    }
    snprintf(cmd + used, sizeof cmd - (size_t)used, "wait)");
    assert_int_equal(testutil_run(cmd, NULL), 0);
    char path[1100];
    snprintf(path, sizeof path, "%s/seed-0.out", s_tmp);
    char *among = testutil_read_file(path, NULL);
    assert_non_null(among);
    among[strcspn(among, "\n")] = '\0';
    printf("  seed 7 alone: %s\n  among 16:     %s\n", alone, among);
    assert_string_equal(among, alone);
    free(among);
    free(alone);
    localcluster_stop(&lc);
}

enum { LOAD_CLIENTS = 64, LOAD_REQUESTS = 4, LOAD_TOKENS = 8, LOAD_PROMPTS = 8 };

typedef struct load_client {
    const char *endpoint;
    int index;
    int tokens[LOAD_REQUESTS][LOAD_TOKENS];
    int n_tokens[LOAD_REQUESTS];
    int finals[LOAD_REQUESTS];        /* final replies seen per request */
    int errors;                       /* error replies */
    int strays;                       /* replies with an unknown id, or after a final */
    char failure[WIRE_MAX_TEXT + 64];
} load_client_t;

/* The prompt of request r of client c: one of LOAD_PROMPTS fixed prompts. */
static void s_load_prompt(int c, int r, int32_t prompt[3])
{
    int p = (c + r) % LOAD_PROMPTS;
    prompt[0] = 11 + 29 * p;
    prompt[1] = 3 + 7 * p;
    prompt[2] = 200 - 13 * p;
}

/* One client: its own socket; four requests one after the other; then a
 * short wait to catch any reply that should not come. */
static void *s_load_client(void *arg)
{
    load_client_t *lc = arg;
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0, timeout = 60000;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_connect(sock, lc->endpoint);
    wire_limits_t lim = {0};
    err_t err = {0};
    wire_inbox_t *inbox = wire_inbox_new(&lim, &err);
    for (int r = 0; r < LOAD_REQUESTS && inbox; r++) {
        int32_t prompt[3];
        s_load_prompt(lc->index, r, prompt);
        wire_request_t req = {.type = WIRE_REQ_GENERATE, .request_id = (uint64_t)r + 1,
                              .n_prompt = 3, .prompt = prompt, .max_tokens = LOAD_TOKENS};
        if (wire_request_send(sock, &req, &err) < 0) {
            snprintf(lc->failure, sizeof lc->failure, "send: %s", err.msg);
            break;
        }
        bool ended = false;
        for (int i = 0; i < 1000 && !ended; i++) {
            wire_reply_t rep;
            if (wire_reply_recv(inbox, sock, &rep, &err) < 0) {
                snprintf(lc->failure, sizeof lc->failure, "request %d: %s", r + 1, err.msg);
                goto done;
            }
            if (rep.request_id != req.request_id) {
                lc->strays++;
                continue;
            }
            if (rep.type == WIRE_REP_ERROR) {
                lc->errors++;
                snprintf(lc->failure, sizeof lc->failure, "request %d: %s", r + 1,
                         rep.error_message);
                ended = true;
                continue;
            }
            for (int t = 0; t < rep.n_tokens; t++)
                if (lc->n_tokens[r] < LOAD_TOKENS)
                    lc->tokens[r][lc->n_tokens[r]++] = rep.tokens[t];
                else
                    lc->strays++;
            if (rep.final) {
                lc->finals[r]++;
                ended = true;
            }
        }
    }
    /* Nothing more may arrive: no duplicate answer, no late token. */
    int quiet = 300;
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &quiet, sizeof quiet);
    wire_reply_t extra;
    while (inbox && wire_reply_recv(inbox, sock, &extra, &err) == 0)
        lc->strays++;
done:
    wire_inbox_destroy(&inbox);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return NULL;
}

/* 64 clients at once, 4 requests each: every request answered once, with
 * what moe-run gives for its prompt alone; nothing left held afterwards. */
static void test_load_64_clients(void **state)
{
    (void)state;
    char cmd[4096];
    char *want[LOAD_PROMPTS];
    char model[1024];
    snprintf(model, sizeof model, "%s/mixtral-A", fixture_root());
    for (int p = 0; p < LOAD_PROMPTS; p++) {
        int32_t prompt[3];
        s_load_prompt(p, 0, prompt);
        snprintf(cmd, sizeof cmd, "'%s/moe-run' --model '%s' --prompt-ids %d,%d,%d "
                 "--max-tokens %d 2>/dev/null", s_bin, model, (int)prompt[0], (int)prompt[1],
                 (int)prompt[2], LOAD_TOKENS);
        want[p] = crosscheck_last_line(cmd);
    }
    /* 64 clients: 16 decode at once, the rest wait in a queue of 64. */
    localcluster_t lc;
    localcluster_start(&lc, model, 2, s_tmp, "load", "--max-seqs 16 --queue-limit 64");
    pid_t coordinator = localcluster_pid(lc.run_dir, "coordinator");
    /* Baseline after a warm-up: buffers that live as long as the server are
     * allocated by then. */
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' generate --prompt-ids 1,2,3 "
             "--max-tokens %d >/dev/null 2>&1", s_bin, lc.endpoint, LOAD_TOKENS);
    assert_int_equal(system(cmd), 0);
    const size_t rss_before = localcluster_rss(coordinator);

    load_client_t *clients = calloc(LOAD_CLIENTS, sizeof *clients);
    pthread_t threads[LOAD_CLIENTS];
    const double t0 = timer_now();
    for (int c = 0; c < LOAD_CLIENTS; c++) {
        clients[c].endpoint = lc.endpoint;
        clients[c].index = c;
        assert_int_equal(pthread_create(&threads[c], NULL, s_load_client, &clients[c]), 0);
    }
    for (int c = 0; c < LOAD_CLIENTS; c++)
        pthread_join(threads[c], NULL);
    const double seconds = timer_now() - t0;

    int answered = 0;
    for (int c = 0; c < LOAD_CLIENTS; c++) {
        load_client_t *cl = &clients[c];
        if (cl->failure[0] || cl->errors || cl->strays)
            fail_msg("client %d: %d errors, %d stray replies: %s", c, cl->errors, cl->strays,
                     cl->failure);
        for (int r = 0; r < LOAD_REQUESTS; r++) {
            assert_int_equal(cl->finals[r], 1);
            char *got = idlist_format(cl->tokens[r], cl->n_tokens[r]);
            const char *expect = want[(c + r) % LOAD_PROMPTS];
            if (strcmp(got, expect) != 0)
                fail_msg("client %d request %d: %s, alone %s", c, r + 1, got, expect);
            mem_free(got);
            answered++;
        }
    }
    localcluster_sched_t st;
    localcluster_sched(lc.endpoint, &st);
    const size_t rss_after = localcluster_rss(coordinator);
    printf("  %d requests from %d clients answered in %.2f s, each once and as moe-run; "
           "coordinator RSS %.1f MiB before, %.1f MiB after; %d running, %d queued, "
           "%llu KV bytes\n", answered, LOAD_CLIENTS, seconds, rss_before / 1048576.0,
           rss_after / 1048576.0, st.running, st.queued, (unsigned long long)st.kv_bytes);
    assert_int_equal(answered, LOAD_CLIENTS * LOAD_REQUESTS);
    assert_int_equal(st.running, 0);
    assert_int_equal(st.queued, 0);
    assert_true(st.kv_bytes == 0);
    /* Freed memory may stay with the allocator, but nothing may grow with the
     * requests served: allow 16 MiB (under AddressSanitizer its quarantine
     * of freed blocks counts too; see the log for the figures). */
    assert_true(rss_after <= rss_before + ((size_t)16 << 20));
    free(clients);
    for (int p = 0; p < LOAD_PROMPTS; p++)
        free(want[p]);
    localcluster_stop(&lc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eos_ends_generation),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_limits_refused),
        cmocka_unit_test(test_text_prompt),
        cmocka_unit_test(test_seed_independent_of_batch),
        cmocka_unit_test(test_shared_expert_overlaps),
        cmocka_unit_test(test_micro_batches_overlap),
        cmocka_unit_test(test_load_64_clients),
        cmocka_unit_test(test_coordinator_restart),
    };
    return cmocka_run_group_tests(tests, s_setup, testutil_tmpdir_teardown);
}
