/* test_forward: properties of the forward pass that the fixtures alone do not
 * pin down: chunked prefill and decoding with the KV cache give the logits of
 * one full pass, batched steps equal each sequence alone, and bad input (or
 * a failed expert call) changes nothing; a step split into two micro-batches
 * in ping-pong (forward_set_moe_async) gives each sequence's bits alone. Runs on the fixture model of every
 * family (<model_type>-A for each of model/family.c's list), so that biases,
 * q/k norms, shared experts, MLA's latent cache and dense layers are held to
 * the same properties as mixtral. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/experts.h"
#include "engine/forward.h"
#include "engine/weights.h"
#include "kernels/compute.h"
#include "model/family.h"
#include "tests/testutil.h"

enum { N_TOKENS = 11 };
static const int32_t TOKENS[N_TOKENS] = {97, 154, 160, 246, 227, 217, 149, 3, 0, 255, 42};

static weights_t *s_weights;
static char s_model[64];      /* the fixture the current group runs on */


static int s_setup(void **state)
{
    (void)state;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", testutil_env("MOE_FIXTURES", "../shared/fixtures"),
             s_model);
    err_t err = {0};
    s_weights = weights_load_all(dir, &err);
    if (!s_weights)
        fprintf(stderr, "test_forward: %s\n", err.msg);
    return s_weights ? 0 : -1;
}

static int s_teardown(void **state)
{
    (void)state;
    weights_destroy(&s_weights);
    return 0;
}

/* All N_TOKENS rows of logits from one pass with chunks of max_rows. */
static float *s_full_logits(int max_rows)
{
    err_t err = {0};
    const int vocab = s_weights->cfg.vocab_size;
    forward_t *fw = forward_new(s_weights, max_rows, N_TOKENS, NULL, NULL, &err);
    kvcache_t *kv = kvcache_new(&s_weights->cfg, N_TOKENS, &err);
    float *logits = malloc((size_t)N_TOKENS * vocab * sizeof(float));
    assert_non_null(fw);
    assert_non_null(kv);
    assert_int_equal(forward_run(fw, kv, TOKENS, N_TOKENS, FORWARD_LOGITS_ALL, logits, &err), 0);
    assert_int_equal(kvcache_len(kv), N_TOKENS);
    kvcache_destroy(&kv);
    forward_destroy(&fw);
    return logits;
}

static void s_assert_close(const float *a, const float *b, size_t n)
{
    double max_ref = 0, max_err = 0;
    for (size_t i = 0; i < n; i++) {
        max_ref = fmax(max_ref, fabs(b[i]));
        max_err = fmax(max_err, fabs((double)a[i] - b[i]));
    }
    assert_true(max_err <= 1e-5 * max_ref);
}

static void test_chunked_prefill_equals_one_pass(void **state)
{
    (void)state;
    const size_t n = (size_t)N_TOKENS * s_weights->cfg.vocab_size;
    float *whole = s_full_logits(N_TOKENS);
    for (int rows = 1; rows <= 4; rows++) {
        float *chunked = s_full_logits(rows);
        s_assert_close(chunked, whole, n);
        free(chunked);
    }
    free(whole);
}

static void test_decode_equals_one_pass(void **state)
{
    (void)state;
    err_t err = {0};
    const int vocab = s_weights->cfg.vocab_size;
    float *whole = s_full_logits(N_TOKENS);
    forward_t *fw = forward_new(s_weights, 4, N_TOKENS, NULL, NULL, &err);
    kvcache_t *kv = kvcache_new(&s_weights->cfg, N_TOKENS, &err);
    float *step = malloc((size_t)vocab * sizeof(float));
    assert_int_equal(forward_run(fw, kv, TOKENS, 4, FORWARD_LOGITS_LAST, step, &err), 0);
    s_assert_close(step, whole + 3 * vocab, (size_t)vocab);
    for (int t = 4; t < N_TOKENS; t++) {
        assert_int_equal(forward_run(fw, kv, &TOKENS[t], 1, FORWARD_LOGITS_LAST, step, &err), 0);
        s_assert_close(step, whole + (size_t)t * vocab, (size_t)vocab);
    }
    free(step);
    free(whole);
    kvcache_destroy(&kv);
    forward_destroy(&fw);
}

static int s_failing_moe(void *ctx, int layer, const float *u, int n_rows,
                         const moe_assign_t *assign, int n_assign, float *out, err_t *err)
{
    (void)ctx, (void)u, (void)n_rows, (void)assign, (void)n_assign, (void)out;
    return layer == 1 ? err_set(err, EHOSTUNREACH, "node 2 is down") : 0;
}

static void test_bad_input_changes_nothing(void **state)
{
    (void)state;
    err_t err = {0};
    const int vocab = s_weights->cfg.vocab_size;
    float *logits = malloc((size_t)vocab * sizeof(float));
    forward_t *fw = forward_new(s_weights, 4, 6, NULL, NULL, &err);
    kvcache_t *kv = kvcache_new(&s_weights->cfg, 6, &err);
    assert_int_equal(forward_run(fw, kv, TOKENS, 3, FORWARD_LOGITS_LAST, logits, &err), 0);

    int32_t bad[2] = {5, 256};
    assert_int_equal(forward_run(fw, kv, bad, 2, FORWARD_LOGITS_LAST, logits, &err), -1);
    assert_int_equal(errno, EINVAL);
    bad[1] = -1;
    assert_int_equal(forward_run(fw, kv, bad, 2, FORWARD_LOGITS_LAST, logits, &err), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(forward_run(fw, kv, TOKENS, 4, FORWARD_LOGITS_LAST, logits, &err), -1);
    assert_int_equal(errno, ENOSPC);
    assert_int_equal(forward_run(fw, kv, TOKENS, 0, FORWARD_LOGITS_LAST, logits, &err), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(kvcache_len(kv), 3);
    forward_destroy(&fw);

    /* A failing expert call leaves the cache as it was. */
    fw = forward_new(s_weights, 2, 6, s_failing_moe, NULL, &err);
    assert_non_null(fw);
    assert_int_equal(forward_run(fw, kv, TOKENS, 3, FORWARD_LOGITS_LAST, logits, &err), -1);
    assert_int_equal(errno, EHOSTUNREACH);
    assert_non_null(strstr(err.msg, "node 2 is down"));
    assert_int_equal(kvcache_len(kv), 3);
    free(logits);
    kvcache_destroy(&kv);
    forward_destroy(&fw);
}

static bool s_hosts_even(void *ctx, int layer, int expert)
{
    (void)ctx, (void)layer;
    return expert % 2 == 0;
}

static void test_needs_every_expert_without_callback(void **state)
{
    (void)state;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", testutil_env("MOE_FIXTURES", "../shared/fixtures"),
             s_model);
    err_t err = {0};
    weights_select_t some = {.dense = true, .hosts = s_hosts_even};
    weights_t *w = weights_load(dir, &some, &err);
    assert_non_null(w);
    assert_true(weights_has_expert(w, 1, 4));
    assert_false(weights_has_expert(w, 1, 5));
    assert_null(forward_new(w, 4, 8, NULL, NULL, &err));
    assert_int_equal(errno, EINVAL);
    weights_select_t experts_only = {.hosts = s_hosts_even};
    weights_t *node = weights_load(dir, &experts_only, &err);
    assert_non_null(node);
    assert_false(node->has_dense);
    assert_null(forward_new(node, 4, 8, NULL, NULL, &err));
    weights_destroy(&node);
    weights_destroy(&w);
}

enum { N_SEQS = 16, N_STEPS = 12, MAX_PROMPT = 9 };

/* Greedy tokens of one sequence alone, from forward_run. */
static void s_alone(const int32_t *prompt, int n, int32_t *out, float *last_logits)
{
    err_t err = {0};
    const int vocab = s_weights->cfg.vocab_size;
    forward_t *fw = forward_new(s_weights, MAX_PROMPT, MAX_PROMPT + N_STEPS, NULL, NULL, &err);
    kvcache_t *kv = kvcache_new(&s_weights->cfg, MAX_PROMPT + N_STEPS, &err);
    float *logits = malloc((size_t)vocab * sizeof(float));
    assert_int_equal(forward_run(fw, kv, prompt, n, FORWARD_LOGITS_LAST, logits, &err), 0);
    for (int t = 0; t < N_STEPS; t++) {
        out[t] = forward_argmax(logits, vocab);
        assert_int_equal(forward_run(fw, kv, &out[t], 1, FORWARD_LOGITS_LAST, logits, &err), 0);
    }
    memcpy(last_logits, logits, (size_t)vocab * sizeof(float));
    free(logits);
    kvcache_destroy(&kv);
    forward_destroy(&fw);
}

static void test_batched_steps_equal_each_sequence_alone(void **state)
{
    (void)state;
    err_t err = {0};
    const int vocab = s_weights->cfg.vocab_size;
    int32_t prompts[N_SEQS][MAX_PROMPT];
    int lens[N_SEQS];
    testrng_t rng;
    testrng_init(&rng, 99);
    for (int q = 0; q < N_SEQS; q++) {
        lens[q] = 1 + q % MAX_PROMPT;
        for (int i = 0; i < lens[q]; i++)
            prompts[q][i] = (int32_t)(testrng_uniform(&rng) * vocab);
    }
    int32_t alone[N_SEQS][N_STEPS];
    float *alone_logits = malloc((size_t)N_SEQS * vocab * sizeof(float));
    for (int q = 0; q < N_SEQS; q++)
        s_alone(prompts[q], lens[q], alone[q], alone_logits + (size_t)q * vocab);

    /* All sixteen together: one step prefills every prompt, then each step
     * decodes one token of every sequence. */
    const int max_rows = N_SEQS * MAX_PROMPT;
    forward_t *fw = forward_new(s_weights, max_rows, MAX_PROMPT + N_STEPS, NULL, NULL, &err);
    assert_non_null(fw);
    kvcache_t *kv[N_SEQS];
    float *logits = malloc((size_t)N_SEQS * vocab * sizeof(float));
    int32_t next[N_SEQS];
    forward_seq_t seqs[N_SEQS];
    for (int q = 0; q < N_SEQS; q++) {
        kv[q] = kvcache_new(&s_weights->cfg, MAX_PROMPT + N_STEPS, &err);
        seqs[q] = (forward_seq_t){kv[q], prompts[q], lens[q], FORWARD_LOGITS_LAST,
                                  logits + (size_t)q * vocab};
    }
    assert_int_equal(forward_step(fw, seqs, N_SEQS, &err), 0);
    for (int t = 0; t < N_STEPS; t++) {
        for (int q = 0; q < N_SEQS; q++) {
            next[q] = forward_argmax(seqs[q].logits, vocab);
            if (next[q] != alone[q][t])
                fail_msg("sequence %d step %d: %d in the batch, %d alone", q, t, next[q],
                         alone[q][t]);
            seqs[q].tokens = &next[q];
            seqs[q].n = 1;
        }
        assert_int_equal(forward_step(fw, seqs, N_SEQS, &err), 0);
    }
    s_assert_close(logits, alone_logits, (size_t)N_SEQS * vocab);
    for (int q = 0; q < N_SEQS; q++)
        assert_int_equal(kvcache_len(kv[q]), lens[q] + N_STEPS);

    /* Bad steps change no sequence. */
    seqs[1].kv = kv[0];
    assert_int_equal(forward_step(fw, seqs, 2, &err), -1);   /* a shared cache */
    assert_int_equal(errno, EINVAL);
    seqs[1].kv = kv[1];
    forward_t *small = forward_new(s_weights, 4, MAX_PROMPT + N_STEPS, NULL, NULL, &err);
    assert_int_equal(forward_step(small, seqs, 5, &err), -1); /* 5 rows > 4 */
    assert_int_equal(errno, E2BIG);
    assert_int_equal(forward_step(fw, seqs, N_SEQS, &err), -1); /* caches are full */
    assert_int_equal(errno, ENOSPC);
    for (int q = 0; q < N_SEQS; q++)
        assert_int_equal(kvcache_len(kv[q]), lens[q] + N_STEPS);
    forward_destroy(&small);
    for (int q = 0; q < N_SEQS; q++)
        kvcache_destroy(&kv[q]);
    forward_destroy(&fw);
    free(logits);
    free(alone_logits);
}

/* An asynchronous MoE port in this process: start computes the micro-batch's
 * experts at once and remembers it is away, finish checks that the same
 * call is completed; it can fail the finish of micro-batch 1 at one layer. */
typedef struct fake_port {
    compute_t *cx;
    experts_t *experts;
    int away[2];        /* the layer each micro-batch has away, or -1 */
    float *out[2];      /* the out each start was given */
    int max_away;       /* the most calls away at once */
    int n_starts, n_finishes;
    int fail_layer;     /* micro-batch 1's finish of this layer fails; -1: none */
} fake_port_t;

static int s_fake_sync(void *ctx, int layer, const float *u, int n_rows,
                       const moe_assign_t *assign, int n_assign, float *out, err_t *err)
{
    fake_port_t *f = ctx;
    return experts_run(f->experts, s_weights, layer, u, n_rows, assign, n_assign, out, err);
}

static int s_fake_start(void *ctx, int mb, int layer, const float *u, int row0, int n_rows,
                        const moe_assign_t *assign, int n_assign, float *out, err_t *err)
{
    fake_port_t *f = ctx;
    (void)row0;
    assert_true(mb == 0 || mb == 1);
    assert_int_equal(f->away[mb], -1);
    f->away[mb] = layer;
    f->out[mb] = out;
    f->n_starts++;
    const int n_away = (f->away[0] >= 0) + (f->away[1] >= 0);
    f->max_away = n_away > f->max_away ? n_away : f->max_away;
    return experts_run(f->experts, s_weights, layer, u, n_rows, assign, n_assign, out, err);
}

static int s_fake_finish(void *ctx, int mb, int layer, float *out, err_t *err)
{
    fake_port_t *f = ctx;
    assert_int_equal(f->away[mb], layer);
    assert_ptr_equal(f->out[mb], out);
    f->away[mb] = -1;
    f->n_finishes++;
    if (mb == 1 && layer == f->fail_layer)
        return err_set(err, EHOSTUNREACH, "fake: layer %d lost", layer);
    return 0;
}

enum { MB_SEQS = 4 };

/* Four sequences stepped together through the asynchronous port with two
 * micro-batches: both are away at once (ping-pong), every start is finished,
 * the overlap is counted, and each sequence's logits are bit for bit its
 * logits alone (no step exceeds GEMM_SMALL_MAX_ROWS rows: the products are
 * batch-invariant). A failed finish fails the step, finishes the other
 * micro-batch and leaves every cache as it was. */
static void test_micro_batches_equal_each_sequence_alone(void **state)
{
    (void)state;
    err_t err = {0};
    const config_t *cfg = &s_weights->cfg;
    const int vocab = cfg->vocab_size, ctx = MAX_PROMPT + N_STEPS;
    int32_t prompts[MB_SEQS][MAX_PROMPT];
    int lens[MB_SEQS];
    testrng_t rng;
    testrng_init(&rng, 7);
    for (int q = 0; q < MB_SEQS; q++) {
        lens[q] = 1 + q;
        for (int i = 0; i < lens[q]; i++)
            prompts[q][i] = (int32_t)(testrng_uniform(&rng) * vocab);
    }
    int32_t alone[MB_SEQS][N_STEPS];
    float *alone_logits = malloc((size_t)MB_SEQS * vocab * sizeof(float));
    for (int q = 0; q < MB_SEQS; q++)
        s_alone(prompts[q], lens[q], alone[q], alone_logits + (size_t)q * vocab);

    fake_port_t f = {.away = {-1, -1}, .fail_layer = -1};
    f.cx = compute_new(1, &err);
    assert_non_null(f.cx);
    f.experts = experts_new(cfg, 16, 16 * cfg->n_experts_per_tok, f.cx, &err);
    assert_non_null(f.experts);
    forward_t *fw = forward_new(s_weights, 16, ctx, s_fake_sync, &f, &err);
    assert_non_null(fw);
    forward_set_moe_async(fw, s_fake_start, s_fake_finish, 2);
    kvcache_t *kv[MB_SEQS];
    float *logits = malloc((size_t)MB_SEQS * vocab * sizeof(float));
    int32_t next[MB_SEQS];
    forward_seq_t seqs[MB_SEQS];
    for (int q = 0; q < MB_SEQS; q++) {
        kv[q] = kvcache_new(cfg, ctx, &err);
        seqs[q] = (forward_seq_t){kv[q], prompts[q], lens[q], FORWARD_LOGITS_LAST,
                                  logits + (size_t)q * vocab};
    }
    assert_int_equal(forward_step(fw, seqs, MB_SEQS, &err), 0);
    for (int t = 0; t < N_STEPS - 1; t++) {
        for (int q = 0; q < MB_SEQS; q++) {
            next[q] = forward_argmax(seqs[q].logits, vocab);
            assert_int_equal(next[q], alone[q][t]);
            seqs[q].tokens = &next[q];
            seqs[q].n = 1;
        }
        assert_int_equal(forward_step(fw, seqs, MB_SEQS, &err), 0);
    }
    for (int q = 0; q < MB_SEQS; q++) {
        next[q] = forward_argmax(seqs[q].logits, vocab);
        assert_int_equal(next[q], alone[q][N_STEPS - 1]);
    }
    /* The last token's logits: alone ran one more step. */
    for (int q = 0; q < MB_SEQS; q++)
        assert_int_equal(forward_step(fw, &seqs[q], 1, &err), 0);
    assert_memory_equal(logits, alone_logits, (size_t)MB_SEQS * vocab * sizeof(float));
    assert_int_equal(f.max_away, 2);
    assert_int_equal(f.n_starts, f.n_finishes);
    assert_true(forward_overlap_seconds(fw) > 0);

    /* Micro-batch 1 loses its experts at the last MoE layer: the step fails,
     * micro-batch 0's call is finished too, and no cache moves. */
    for (int l = 0; l < cfg->n_layers; l++)
        if (config_layer_is_moe(cfg, l))
            f.fail_layer = l;
    for (int q = 0; q < MB_SEQS; q++)
        seqs[q].tokens = &next[q];
    kvcache_t *grown[MB_SEQS];
    for (int q = 0; q < MB_SEQS; q++) {
        grown[q] = kvcache_new(cfg, ctx + 1, &err);
        assert_non_null(grown[q]);
        seqs[q].kv = grown[q];
    }
    assert_int_equal(forward_step(fw, seqs, MB_SEQS, &err), -1);
    assert_int_equal(errno, EHOSTUNREACH);
    assert_non_null(strstr(err.msg, "fake"));
    assert_int_equal(f.n_starts, f.n_finishes);
    for (int q = 0; q < MB_SEQS; q++)
        assert_int_equal(kvcache_len(grown[q]), 0);

    /* One sequence is not split, and with no shared expert nothing overlaps. */
    forward_t *one = forward_new(s_weights, 16, ctx, s_fake_sync, &f, &err);
    assert_non_null(one);
    forward_set_moe_async(one, s_fake_start, s_fake_finish, 2);
    f.fail_layer = -1;
    f.max_away = 0;
    seqs[0].kv = grown[0];
    assert_int_equal(forward_step(one, seqs, 1, &err), 0);
    assert_int_equal(f.max_away, 1);
    assert_int_equal(forward_overlap_seconds(one) > 0, cfg->shared != CONFIG_SHARED_NONE);
    forward_destroy(&one);

    for (int q = 0; q < MB_SEQS; q++) {
        kvcache_destroy(&kv[q]);
        kvcache_destroy(&grown[q]);
    }
    forward_destroy(&fw);
    experts_destroy(&f.experts);
    compute_destroy(&f.cx);
    free(logits);
    free(alone_logits);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunked_prefill_equals_one_pass),
        cmocka_unit_test(test_decode_equals_one_pass),
        cmocka_unit_test(test_bad_input_changes_nothing),
        cmocka_unit_test(test_needs_every_expert_without_callback),
        cmocka_unit_test(test_batched_steps_equal_each_sequence_alone),
        cmocka_unit_test(test_micro_batches_equal_each_sequence_alone),
    };
    int failed = 0;
    /* The fixture <model_type>-A of each family model/family.c lists. */
    for (size_t i = 0; i < family_count(); i++) {
        snprintf(s_model, sizeof s_model, "%s-A", family_at(i)->model_type);
        failed += _cmocka_run_group_tests(s_model, tests, sizeof tests / sizeof tests[0],
                                          s_setup, s_teardown);
    }
    return failed;
}
