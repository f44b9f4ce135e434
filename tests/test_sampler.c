/* test_sampler: greedy against forward_argmax, sampled frequencies against a
 * float64 reference of the temperature / top-k / top-p pipeline, the top-k
 * and nucleus bounds, seeding and isolation between samplers, validation,
 * stop reasons, bad logits, out of memory, and a 32000-token vocabulary. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/mem.h"
#include "engine/forward.h"
#include "engine/sampler.h"
#include "tests/testutil.h"

enum { BIG_VOCAB = 32000 };

static sampler_params_t s_params(float t, int k, float p, uint64_t seed)
{
    sampler_params_t sp = sampler_params_default();
    sp.temperature = t;
    sp.top_k = k;
    sp.top_p = p;
    sp.seed = seed;
    return sp;
}

static int32_t s_draw(sampler_t *s, const float *logits)
{
    int32_t tok = -1;
    err_t err = {0};
    assert_int_equal(sampler_sample(s, logits, &tok, &err), 0);
    return tok;
}

/* Token ids ranked by logit descending, ties to the lower id. */
static const float *s_rank_key;
static int s_rank_cmp(const void *a, const void *b)
{
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (s_rank_key[i] != s_rank_key[j])
        return s_rank_key[i] > s_rank_key[j] ? -1 : 1;
    return (i > j) - (i < j);
}

static void s_rank(const float *logits, int n, int32_t *order)
{
    for (int i = 0; i < n; i++)
        order[i] = i;
    s_rank_key = logits;
    qsort(order, (size_t)n, sizeof *order, s_rank_cmp);
}

/* Float64 reference of the pipeline: prob[i] is the final probability of
 * token i (0 outside the kept set); returns how many tokens are kept. */
static int s_ref_probs(const float *logits, int n, double t, int k, double top_p,
                       double *prob)
{
    int32_t *order = malloc((size_t)n * sizeof *order);
    double *q = malloc((size_t)n * sizeof *q);
    assert_non_null(order);
    assert_non_null(q);
    s_rank(logits, n, order);
    int m = (k > 0 && k < n) ? k : n;
    double sum = 0;
    for (int j = 0; j < m; j++)
        sum += q[j] = exp((double)logits[order[j]] / t - (double)logits[order[0]] / t);
    int keep = 0;
    double cum = 0;
    while (keep < m) {
        cum += q[keep++] / sum;
        if (cum >= top_p)
            break;
    }
    double kept = 0;
    for (int j = 0; j < keep; j++)
        kept += q[j];
    for (int i = 0; i < n; i++)
        prob[i] = 0;
    for (int j = 0; j < keep; j++)
        prob[order[j]] = q[j] / kept;
    free(order);
    free(q);
    return keep;
}

static void test_greedy_is_argmax(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 11);
    float logits[257];
    sampler_params_t sp = s_params(0.0f, 5, 0.5f, 1);
    sampler_t *s = sampler_new(257, &sp, NULL);
    assert_non_null(s);
    for (int trial = 0; trial < 200; trial++) {
        testrng_fill(&rng, logits, 257, 3.0f);
        if (trial % 3 == 0) /* plant a tie for the maximum */
            logits[200] = logits[forward_argmax(logits, 257)];
        assert_int_equal(s_draw(s, logits), forward_argmax(logits, 257));
    }
    /* Ties go to the lowest index, masked tokens are skipped. */
    const float tie[6] = {-INFINITY, 1, 3, 3, 2, 3};
    sampler_t *s6 = sampler_new(6, &sp, NULL);
    assert_non_null(s6);
    assert_int_equal(s_draw(s6, tie), 2);
    const float flat[6] = {0, 0, 0, 0, 0, 0};
    assert_int_equal(s_draw(s6, flat), 0);
    sampler_destroy(&s6);
    sampler_destroy(&s);
}

/* 20000 draws per configuration. Each count is Binomial(N, p): the bound is
 * 5 standard deviations (+1 for discreteness), a two-sided tail of 5.7e-7
 * per cell, about 2e-5 over the 30 cells: the seed is fixed anyway, so the
 * test is deterministic, and any seed would pass. Tokens outside the kept set
 * must never appear. */
static void test_frequencies_match_reference(void **state)
{
    (void)state;
    enum { N = 20000, V = 5 };
    const float logits[V] = {1.0f, 0.5f, -0.3f, 2.0f, 0.0f};
    const struct { float t; int k; float p; } cfg[] = {
        {1.0f, 0, 1.0f}, {0.5f, 0, 1.0f}, {2.0f, 0, 1.0f},
        {1.0f, 3, 1.0f}, {1.0f, 0, 0.8f}, {0.7f, 4, 0.9f},
    };
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        sampler_params_t sp = s_params(cfg[c].t, cfg[c].k, cfg[c].p, 1000 + c);
        sampler_t *s = sampler_new(V, &sp, NULL);
        assert_non_null(s);
        double prob[V];
        s_ref_probs(logits, V, cfg[c].t, cfg[c].k, cfg[c].p, prob);
        int count[V] = {0};
        for (int d = 0; d < N; d++) {
            int32_t tok = s_draw(s, logits);
            assert_true(tok >= 0 && tok < V);
            count[tok]++;
        }
        for (int i = 0; i < V; i++) {
            double mean = N * prob[i];
            double bound = 5.0 * sqrt(N * prob[i] * (1.0 - prob[i])) + 1.0;
            if (prob[i] == 0.0)
                assert_int_equal(count[i], 0);
            if (fabs(count[i] - mean) > bound)
                fail_msg("config %zu token %d: %d draws, expected %.1f +- %.1f", c, i,
                         count[i], mean, bound);
        }
        sampler_destroy(&s);
    }
}

static void test_top_k_stays_in_k_best(void **state)
{
    (void)state;
    enum { V = 100 };
    testrng_t rng;
    testrng_init(&rng, 21);
    float logits[V];
    int32_t order[V];
    const int ks[] = {1, 2, 5, 17, 99};
    for (size_t t = 0; t < sizeof ks / sizeof ks[0]; t++) {
        testrng_fill(&rng, logits, V, 1.0f);
        s_rank(logits, V, order);
        bool allowed[V] = {false};
        for (int j = 0; j < ks[t]; j++)
            allowed[order[j]] = true;
        sampler_params_t sp = s_params(1.5f, ks[t], 1.0f, t);
        sampler_t *s = sampler_new(V, &sp, NULL);
        assert_non_null(s);
        bool seen[V] = {false};
        for (int d = 0; d < 3000; d++) {
            int32_t tok = s_draw(s, logits);
            assert_true(allowed[tok]);
            seen[tok] = true;
        }
        if (ks[t] <= 5) /* each of a few near-equal survivors does appear */
            for (int j = 0; j < ks[t]; j++)
                assert_true(seen[order[j]]);
        sampler_destroy(&s);
    }
    /* Ties at the boundary: exactly k tokens, the lower ids. */
    const float flat[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    sampler_params_t sp = s_params(1.0f, 3, 1.0f, 5);
    sampler_t *s = sampler_new(8, &sp, NULL);
    assert_non_null(s);
    for (int d = 0; d < 1000; d++)
        assert_true(s_draw(s, flat) < 3);
    /* top_k >= vocab is off: every token can appear. */
    sp.top_k = 8;
    assert_int_equal(sampler_reset(s, &sp, NULL), 0);
    bool seen[8] = {false};
    for (int d = 0; d < 1000; d++)
        seen[s_draw(s, flat)] = true;
    for (int i = 0; i < 8; i++)
        assert_true(seen[i]);
    sampler_destroy(&s);
}

/* The allowed set is the float64 nucleus for top_p (1 + 1e-9): the sampler's
 * own double sums may round the boundary differently, never by more. */
static void s_check_nucleus(int vocab, float scale, float t, int k, float top_p,
                            int draws, uint64_t seed)
{
    testrng_t rng;
    testrng_init(&rng, seed);
    float *logits = malloc((size_t)vocab * sizeof *logits);
    double *prob = malloc((size_t)vocab * sizeof *prob);
    assert_non_null(logits);
    assert_non_null(prob);
    testrng_fill(&rng, logits, (size_t)vocab, scale);
    double loose = fmin(1.0, (double)top_p * (1.0 + 1e-9));
    int n_allowed = s_ref_probs(logits, vocab, t, k, loose, prob);
    sampler_params_t sp = s_params(t, k, top_p, seed);
    sampler_t *s = sampler_new(vocab, &sp, NULL);
    assert_non_null(s);
    for (int d = 0; d < draws; d++) {
        int32_t tok = s_draw(s, logits);
        assert_true(tok >= 0 && tok < vocab);
        if (prob[tok] == 0.0)
            fail_msg("token %d outside the nucleus of %d (vocab %d, t %g, k %d, p %g)",
                     tok, n_allowed, vocab, (double)t, k, (double)top_p);
    }
    sampler_destroy(&s);
    free(prob);
    free(logits);
}

static void test_top_p_stays_in_nucleus(void **state)
{
    (void)state;
    const float ps[] = {0.3f, 0.5f, 0.9f, 0.95f, 0.999f};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
        s_check_nucleus(50, 2.0f, 1.0f, 0, ps[i], 2000, 31 + i);
        s_check_nucleus(50, 2.0f, 0.6f, 0, ps[i], 2000, 41 + i);
        s_check_nucleus(50, 2.0f, 1.3f, 10, ps[i], 2000, 51 + i); /* after top-k */
        s_check_nucleus(3, 0.1f, 1.0f, 0, ps[i], 500, 61 + i);   /* near-flat */
    }
    /* Tiny top_p: always the best token. */
    testrng_t rng;
    testrng_init(&rng, 71);
    float logits[64];
    testrng_fill(&rng, logits, 64, 0.01f);  /* close logits, still one best */
    sampler_params_t sp = s_params(2.0f, 0, 1e-6f, 3);
    sampler_t *s = sampler_new(64, &sp, NULL);
    assert_non_null(s);
    for (int d = 0; d < 1000; d++)
        assert_int_equal(s_draw(s, logits), forward_argmax(logits, 64));
    /* Equal logits: the nucleus of the ranking starts at the lowest id. */
    const float flat[4] = {0, 0, 0, 0};
    sampler_t *s4 = sampler_new(4, &sp, NULL);
    assert_non_null(s4);
    for (int d = 0; d < 100; d++)
        assert_int_equal(s_draw(s4, flat), 0);
    sampler_destroy(&s4);
    sampler_destroy(&s);
}

static void test_same_seed_same_draws(void **state)
{
    (void)state;
    enum { V = 40, N = 1000 };
    testrng_t rng;
    testrng_init(&rng, 81);
    float logits[V];
    testrng_fill(&rng, logits, V, 0.5f);
    sampler_params_t sp = s_params(1.0f, 20, 0.95f, 12345);
    sampler_t *a = sampler_new(V, &sp, NULL), *b = sampler_new(V, &sp, NULL);
    sp.seed = 12346;
    sampler_t *c = sampler_new(V, &sp, NULL);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    int32_t seq[N];
    int differ = 0;
    for (int d = 0; d < N; d++) {
        seq[d] = s_draw(a, logits);
        assert_int_equal(s_draw(b, logits), seq[d]);
        differ += s_draw(c, logits) != seq[d];
    }
    assert_true(differ > N / 2);  /* ~20 likely tokens: most draws differ */
    /* Reset to the first seed replays the sequence. */
    sp.seed = 12345;
    assert_int_equal(sampler_reset(c, &sp, NULL), 0);
    for (int d = 0; d < N; d++)
        assert_int_equal(s_draw(c, logits), seq[d]);
    /* Seed 0 is a valid seed too, and differs from seed 12345. */
    sp.seed = 0;
    assert_int_equal(sampler_reset(c, &sp, NULL), 0);
    differ = 0;
    for (int d = 0; d < N; d++)
        differ += s_draw(c, logits) != seq[d];
    assert_true(differ > N / 2);
    sampler_destroy(&a);
    sampler_destroy(&b);
    sampler_destroy(&c);
}

/* A alone, B alone, then A and B interleaved irregularly, with different
 * logits and settings, and a greedy sequence in between: same draws. */
static void test_interleaved_samplers_are_isolated(void **state)
{
    (void)state;
    enum { V = 30, N = 500 };
    testrng_t rng;
    testrng_init(&rng, 91);
    float la[V], lb[V];
    testrng_fill(&rng, la, V, 1.0f);
    testrng_fill(&rng, lb, V, 2.0f);
    sampler_params_t pa = s_params(0.8f, 0, 0.9f, 7);
    sampler_params_t pb = s_params(1.2f, 12, 1.0f, 7);  /* same seed, other settings */
    sampler_params_t pg = s_params(0.0f, 0, 1.0f, 7);
    int32_t alone_a[N], alone_b[N];
    sampler_t *a = sampler_new(V, &pa, NULL), *b = sampler_new(V, &pb, NULL);
    assert_non_null(a);
    assert_non_null(b);
    for (int d = 0; d < N; d++)
        alone_a[d] = s_draw(a, la);
    for (int d = 0; d < N; d++)
        alone_b[d] = s_draw(b, lb);
    sampler_destroy(&a);
    sampler_destroy(&b);

    a = sampler_new(V, &pa, NULL);
    b = sampler_new(V, &pb, NULL);
    sampler_t *g = sampler_new(V, &pg, NULL);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(g);
    int ia = 0, ib = 0;
    while (ia < N || ib < N) {
        int burst = (int)(testrng_uniform(&rng) * 4);
        for (int j = 0; j < burst && ia < N; j++, ia++)
            assert_int_equal(s_draw(a, la), alone_a[ia]);
        (void)s_draw(g, lb);
        burst = (int)(testrng_uniform(&rng) * 4);
        for (int j = 0; j < burst && ib < N; j++, ib++)
            assert_int_equal(s_draw(b, lb), alone_b[ib]);
    }
    sampler_destroy(&g);
    sampler_destroy(&a);
    sampler_destroy(&b);
}

static void s_expect_einval(const sampler_params_t *sp, int vocab, const char *needle)
{
    err_t err = {0};
    errno = 0;
    assert_int_equal(sampler_params_check(sp, vocab, &err), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(err.code, EINVAL);
    if (!strstr(err.msg, needle))
        fail_msg("message \"%s\" does not name \"%s\"", err.msg, needle);
    err_clear(&err);
    errno = 0;
    assert_null(sampler_new(vocab, sp, &err));
    assert_int_equal(errno, EINVAL);
    assert_non_null(strstr(err.msg, needle));
}

static void test_validation(void **state)
{
    (void)state;
    sampler_params_t ok = sampler_params_default();
    assert_int_equal(sampler_params_check(&ok, 10, NULL), 0);
    ok.temperature = 0.0f;
    ok.top_p = 1e-30f;
    ok.top_k = 1000;
    ok.n_stop = SAMPLER_MAX_STOP;
    ok.n_eos = SAMPLER_MAX_EOS;
    assert_int_equal(sampler_params_check(&ok, 10, NULL), 0);

    sampler_params_t sp = sampler_params_default();
    s_expect_einval(&sp, 0, "vocabulary");
    sp.temperature = -0.5f;
    s_expect_einval(&sp, 10, "temperature");
    sp.temperature = NAN;
    s_expect_einval(&sp, 10, "temperature");
    sp.temperature = INFINITY;
    s_expect_einval(&sp, 10, "temperature");
    sp = sampler_params_default();
    sp.top_k = -1;
    s_expect_einval(&sp, 10, "top_k");
    sp = sampler_params_default();
    const float bad_p[] = {0.0f, -0.1f, 1.0001f, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad_p / sizeof bad_p[0]; i++) {
        sp.top_p = bad_p[i];
        s_expect_einval(&sp, 10, "top_p");
    }
    sp = sampler_params_default();
    sp.max_tokens = -3;
    s_expect_einval(&sp, 10, "max_tokens");
    sp = sampler_params_default();
    sp.n_stop = SAMPLER_MAX_STOP + 1;
    s_expect_einval(&sp, 10, "stop ids");
    sp.n_stop = -1;
    s_expect_einval(&sp, 10, "stop ids");
    sp.n_stop = 2;
    sp.stop[0] = 3;
    sp.stop[1] = 10;
    s_expect_einval(&sp, 10, "stop id 10");
    sp = sampler_params_default();
    sp.n_eos = SAMPLER_MAX_EOS + 1;
    s_expect_einval(&sp, 10, "EOS ids");
    sp.n_eos = 1;
    sp.eos[0] = -2;
    s_expect_einval(&sp, 10, "EOS id -2");

    /* A failed reset changes nothing: the draws go on as on a twin. */
    float logits[10];
    for (int i = 0; i < 10; i++)
        logits[i] = (float)i * 0.1f;
    sampler_params_t good = s_params(1.0f, 0, 1.0f, 99);
    good.max_tokens = 4;
    sampler_t *s = sampler_new(10, &good, NULL), *twin = sampler_new(10, &good, NULL);
    assert_non_null(s);
    assert_non_null(twin);
    for (int d = 0; d < 10; d++)
        assert_int_equal(s_draw(s, logits), s_draw(twin, logits));
    err_t err = {0};
    sp = good;
    sp.top_p = 2.0f;
    assert_int_equal(sampler_reset(s, &sp, &err), -1);
    assert_int_equal(err.code, EINVAL);
    assert_int_equal(sampler_params(s)->max_tokens, 4);
    assert_true(sampler_params(s)->top_p == 1.0f);
    for (int d = 0; d < 100; d++)
        assert_int_equal(s_draw(s, logits), s_draw(twin, logits));
    sampler_destroy(&s);
    sampler_destroy(&twin);
}

static void test_stop_reasons(void **state)
{
    (void)state;
    sampler_params_t sp = sampler_params_default();
    sp.n_eos = 2;
    sp.eos[0] = 2;
    sp.eos[1] = 7;
    sp.n_stop = 2;
    sp.stop[0] = 5;
    sp.stop[1] = 7;  /* also EOS: EOS wins */
    sp.max_tokens = 3;
    sampler_t *s = sampler_new(10, &sp, NULL);
    assert_non_null(s);
    assert_int_equal(sampler_check_stop(s, 0, 1), SAMPLER_CONTINUE);
    assert_int_equal(sampler_check_stop(s, 2, 1), SAMPLER_STOP_EOS);
    assert_int_equal(sampler_check_stop(s, 7, 1), SAMPLER_STOP_EOS);
    assert_int_equal(sampler_check_stop(s, 5, 1), SAMPLER_STOP_ID);
    assert_int_equal(sampler_check_stop(s, 0, 2), SAMPLER_CONTINUE);
    assert_int_equal(sampler_check_stop(s, 0, 3), SAMPLER_STOP_LENGTH);
    assert_int_equal(sampler_check_stop(s, 0, 4), SAMPLER_STOP_LENGTH);
    assert_int_equal(sampler_check_stop(s, 5, 3), SAMPLER_STOP_ID);   /* over length */
    assert_int_equal(sampler_check_stop(s, 2, 3), SAMPLER_STOP_EOS);
    /* No limit, no ids: never stops. */
    sampler_params_t none = sampler_params_default();
    assert_int_equal(sampler_reset(s, &none, NULL), 0);
    for (int32_t t = 0; t < 10; t++)
        assert_int_equal(sampler_check_stop(s, t, 1000000), SAMPLER_CONTINUE);
    assert_string_equal(sampler_stop_name(SAMPLER_CONTINUE), "continue");
    assert_string_equal(sampler_stop_name(SAMPLER_STOP_EOS), "eos");
    assert_string_equal(sampler_stop_name(SAMPLER_STOP_ID), "stop");
    assert_string_equal(sampler_stop_name(SAMPLER_STOP_LENGTH), "length");
    assert_string_equal(sampler_stop_name((sampler_stop_t)42), "unknown");
    sampler_destroy(&s);
}

static void test_bad_and_masked_logits(void **state)
{
    (void)state;
    const float modes[][3] = {{0.0f, 0, 1.0f}, {1.0f, 0, 1.0f}, {1.0f, 2, 0.5f}};
    for (size_t m = 0; m < 3; m++) {
        sampler_params_t sp = s_params(modes[m][0], (int)modes[m][1], modes[m][2], 4);
        sampler_t *s = sampler_new(4, &sp, NULL), *twin = sampler_new(4, &sp, NULL);
        assert_non_null(s);
        assert_non_null(twin);
        const float bad[][4] = {
            {0, NAN, 1, 2}, {0, 1, INFINITY, 2},
            {-INFINITY, -INFINITY, -INFINITY, -INFINITY},
        };
        for (int b = 0; b < 3; b++) {
            int32_t tok = 77;
            err_t err = {0};
            errno = 0;
            assert_int_equal(sampler_sample(s, bad[b], &tok, &err), -1);
            assert_int_equal(errno, EINVAL);
            assert_int_equal(err.code, EINVAL);
            assert_int_equal(tok, 77);
        }
        /* -inf is a mask: never drawn; failures above drew nothing. */
        const float masked[4] = {-INFINITY, 0.5f, -INFINITY, 0.4f};
        for (int d = 0; d < 500; d++) {
            int32_t tok = s_draw(s, masked);
            assert_true(tok == 1 || tok == 3);
            assert_int_equal(s_draw(twin, masked), tok);
        }
        sampler_destroy(&s);
        sampler_destroy(&twin);
    }
}

static void test_out_of_memory_and_destroy(void **state)
{
    (void)state;
    sampler_params_t sp = sampler_params_default();
    for (long n = 1; n <= 2; n++) {
        err_t err = {0};
        mem_fail_after(n);
        errno = 0;
        sampler_t *s = sampler_new(100, &sp, &err);
        mem_fail_after(-1);
        assert_null(s);
        assert_int_equal(errno, ENOMEM);
        assert_int_equal(err.code, ENOMEM);
    }
    sampler_t *s = sampler_new(100, &sp, NULL);
    assert_non_null(s);
    sampler_destroy(&s);
    assert_null(s);
    sampler_destroy(&s);
    sampler_destroy(NULL);
}

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* 32000 tokens in each mode: results within the bounds, and each draw well
 * under a millisecond-scale budget (10 ms, loose enough for the sanitizers). */
static void test_large_vocab(void **state)
{
    (void)state;
    enum { DRAWS = 200 };
    testrng_t rng;
    testrng_init(&rng, 101);
    float *logits = malloc(BIG_VOCAB * sizeof *logits);
    int32_t *order = malloc(BIG_VOCAB * sizeof *order);
    double *prob = malloc(BIG_VOCAB * sizeof *prob);
    assert_non_null(logits);
    assert_non_null(order);
    assert_non_null(prob);
    testrng_fill(&rng, logits, BIG_VOCAB, 3.0f);
    s_rank(logits, BIG_VOCAB, order);
    const struct { float t; int k; float p; } cfg[] = {
        {0.0f, 0, 1.0f}, {0.8f, 0, 1.0f}, {0.8f, 50, 1.0f},
        {0.8f, 0, 0.9f}, {1.0f, 40, 0.95f}, {1.0f, 0, 1e-7f},
    };
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        sampler_params_t sp = s_params(cfg[c].t, cfg[c].k, cfg[c].p, 200 + c);
        sampler_t *s = sampler_new(BIG_VOCAB, &sp, NULL);
        assert_non_null(s);
        bool ranked = cfg[c].t > 0.0f && (cfg[c].k > 0 || cfg[c].p < 1.0f);
        if (ranked)
            s_ref_probs(logits, BIG_VOCAB, cfg[c].t, cfg[c].k,
                        fmin(1.0, cfg[c].p * (1.0 + 1e-9)), prob);
        double t0 = s_now();
        for (int d = 0; d < DRAWS; d++) {
            int32_t tok = s_draw(s, logits);
            assert_true(tok >= 0 && tok < BIG_VOCAB);
            if (cfg[c].t == 0.0f || cfg[c].p < 1e-6f)
                assert_int_equal(tok, order[0]);
            if (ranked)
                assert_true(prob[tok] > 0.0);
        }
        double per_draw = (s_now() - t0) / DRAWS;
        if (per_draw > 10e-3)
            fail_msg("config %zu: %.2f ms per draw", c, per_draw * 1e3);
        sampler_destroy(&s);
    }
    free(prob);
    free(order);
    free(logits);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_is_argmax),
        cmocka_unit_test(test_frequencies_match_reference),
        cmocka_unit_test(test_top_k_stays_in_k_best),
        cmocka_unit_test(test_top_p_stays_in_nucleus),
        cmocka_unit_test(test_same_seed_same_draws),
        cmocka_unit_test(test_interleaved_samplers_are_isolated),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_stop_reasons),
        cmocka_unit_test(test_bad_and_masked_logits),
        cmocka_unit_test(test_out_of_memory_and_destroy),
        cmocka_unit_test(test_large_vocab),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
