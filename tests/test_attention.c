/* test_attention: attention() against a plain float64 reference of causal
 * grouped-query attention, over prefill, decode and chunked-prefill calls,
 * with and without a sliding window, strided rows and v_head_dim != head_dim,
 * with and without attention sinks (gpt-oss).
 *
 * Each output is a convex mix of value rows, so its error is a small multiple
 * of the float32 error of the scores times the size of the values: every
 * entry must be within 1e-5 of the largest |v| of the float64 value. The
 * scratch is allocated at exactly attention_scratch_floats(), so the
 * sanitizer build catches any overrun.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/attention.h"
#include "tests/testutil.h"

static const float s_sentinel = -4242.0f;

/* want: (n_q, n_heads * v_head_dim) dense; the inputs as attention() takes
 * them. */
static void s_ref(double *want, const float *q, int ldq, const float *k,
                  int ldk, const float *v, int ldv,
                  const attention_shape_t *sh, int n_q, int pos0)
{
    int hd = sh->head_dim, vd = sh->v_head_dim;
    int group = sh->n_heads / sh->n_kv_heads;
    int n_ctx = pos0 + n_q;
    double *p = malloc((size_t)n_ctx * sizeof *p);
    assert_non_null(p);
    for (int r = 0; r < n_q; r++) {
        int pos = pos0 + r;
        int first = sh->window > 0 && pos - sh->window + 1 > 0
                        ? pos - sh->window + 1 : 0;
        for (int h = 0; h < sh->n_heads; h++) {
            int g = h / group;
            const float *qh = q + (size_t)r * ldq + (size_t)h * hd;
            /* A sink joins the max and the denominator only. */
            double max = sh->sinks ? sh->sinks[h] : -INFINITY, sum = 0.0;
            for (int c = first; c <= pos; c++) {
                const float *kc = k + (size_t)c * ldk + (size_t)g * hd;
                double s = 0.0;
                for (int d = 0; d < hd; d++)
                    s += (double)qh[d] * kc[d];
                p[c] = (double)sh->scale * s;
                if (p[c] > max)
                    max = p[c];
            }
            for (int c = first; c <= pos; c++) {
                p[c] = exp(p[c] - max);
                sum += p[c];
            }
            if (sh->sinks)
                sum += exp((double)sh->sinks[h] - max);
            double *o = want + ((size_t)r * sh->n_heads + h) * vd;
            for (int d = 0; d < vd; d++)
                o[d] = 0.0;
            for (int c = first; c <= pos; c++) {
                const float *vc = v + (size_t)c * ldv + (size_t)g * vd;
                for (int d = 0; d < vd; d++)
                    o[d] += p[c] / sum * vc[d];
            }
        }
    }
    free(p);
}

/* One attention() call on random q, k, v with every row padded by pad
 * sentinel-free floats (out's padding holds a sentinel that must survive). */
static bool s_sinks_on;      /* s_case draws sinks for every head */
static float s_sinks_scale;  /* their spread, N(0, s_sinks_scale) */
static double s_max_err;     /* largest error / max|v| seen, for the log */

static void s_case(testrng_t *rng, int n_heads, int n_kv_heads, int head_dim,
                   int v_head_dim, int window, int n_q, int pos0, int pad)
{
    float *sinks = malloc((size_t)n_heads * sizeof *sinks);
    assert_non_null(sinks);
    if (s_sinks_on)
        testrng_fill(rng, sinks, (size_t)n_heads, s_sinks_scale);
    attention_shape_t sh = {
        .n_heads = n_heads, .n_kv_heads = n_kv_heads, .head_dim = head_dim,
        .v_head_dim = v_head_dim, .scale = 1.0f / sqrtf((float)head_dim),
        .window = window, .sinks = s_sinks_on ? sinks : NULL,
    };
    int n_ctx = pos0 + n_q;
    int ldq = n_heads * head_dim + pad, ldo = n_heads * v_head_dim + pad;
    int ldk = n_kv_heads * head_dim + 2 * pad;
    int ldv = n_kv_heads * v_head_dim + 3 * pad;
    float *q = malloc((size_t)n_q * ldq * sizeof *q);
    float *k = malloc((size_t)n_ctx * ldk * sizeof *k);
    float *v = malloc((size_t)n_ctx * ldv * sizeof *v);
    float *out = malloc((size_t)n_q * ldo * sizeof *out);
    size_t n_scratch = attention_scratch_floats(&sh, n_q, n_ctx);
    float *scratch = malloc((n_scratch ? n_scratch : 1) * sizeof *scratch);
    size_t n_want = (size_t)n_q * n_heads * v_head_dim;
    double *want = malloc((n_want ? n_want : 1) * sizeof *want);
    assert_true(q && k && v && out && scratch && want);

    testrng_fill(rng, q, (size_t)n_q * ldq, 1.0f);
    testrng_fill(rng, k, (size_t)n_ctx * ldk, 1.0f);
    testrng_fill(rng, v, (size_t)n_ctx * ldv, 1.0f);
    for (size_t i = 0; i < (size_t)n_q * ldo; i++)
        out[i] = (i % (size_t)ldo) < (size_t)n_heads * v_head_dim
                     ? NAN : s_sentinel;

    s_ref(want, q, ldq, k, ldk, v, ldv, &sh, n_q, pos0);
    compute_t *cx = compute_new(1, NULL);
    assert_non_null(cx);
    attention(cx, out, ldo, q, ldq, k, ldk, v, ldv, &sh, n_q, pos0, scratch);
    compute_destroy(&cx);

    double v_max = 0.0;
    for (size_t i = 0; i < (size_t)n_ctx * ldv; i++)
        if (fabs(v[i]) > v_max)
            v_max = fabs(v[i]);
    double tol = 1e-5 * v_max;
    int width = n_heads * v_head_dim;
    for (int r = 0; r < n_q; r++) {
        for (int j = 0; j < width; j++) {
            double g = out[(size_t)r * ldo + j];
            double e = want[(size_t)r * width + j];
            if (fabs(g - e) / v_max > s_max_err)
                s_max_err = fabs(g - e) / v_max;
            if (!(fabs(g - e) <= tol))
                fail_msg("heads %d/%d dims %d/%d window %d n_q %d pos0 %d: "
                         "row %d entry %d: got %.9g want %.9g", n_heads,
                         n_kv_heads, head_dim, v_head_dim, window, n_q, pos0,
                         r, j, g, e);
        }
        for (int j = width; j < ldo; j++)
            assert_true(out[(size_t)r * ldo + j] == s_sentinel);
    }
    free(want);
    free(scratch);
    free(out);
    free(v);
    free(k);
    free(q);
    free(sinks);
}

/* The three call patterns of a sequence, each over the GQA layouts. */
static void s_patterns(testrng_t *rng, int window, int pad)
{
    static const int heads[][2] = {{4, 2}, {8, 1}, {4, 4}, {3, 1}};
    for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++) {
        int nh = heads[i][0], nkv = heads[i][1];
        s_case(rng, nh, nkv, 16, 16, window, 9, 0, pad);   /* prefill */
        s_case(rng, nh, nkv, 16, 16, window, 1, 12, pad);  /* decode */
        s_case(rng, nh, nkv, 16, 16, window, 4, 5, pad);   /* chunked */
        s_case(rng, nh, nkv, 16, 12, window, 9, 0, pad);   /* v narrower */
        s_case(rng, nh, nkv, 7, 5, window, 1, 12, pad);    /* odd widths */
        s_case(rng, nh, nkv, 17, 33, window, 4, 5, pad);   /* v wider */
        s_case(rng, nh, nkv, 3, 3, window, 1, 0, pad);     /* first token */
    }
}

static void test_no_window(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 51);
    s_patterns(&rng, 0, 0);
    s_patterns(&rng, 0, 3);
}

static void test_window(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 52);
    static const int windows[] = {1, 2, 3, 4, 7, 64};
    for (size_t i = 0; i < sizeof windows / sizeof windows[0]; i++)
        s_patterns(&rng, windows[i], 1);
}

/* Long enough for attention() to split the query rows into blocks and, with
 * a window, to skip keys: blocks must line up with the causal diagonal and
 * the window edges. */
static void test_long(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 53);
    s_case(&rng, 4, 2, 16, 16, 0, 150, 0, 1);     /* 64 rows a block */
    s_case(&rng, 2, 2, 8, 8, 0, 300, 7, 0);       /* 128 rows a block */
    s_case(&rng, 4, 2, 16, 16, 5, 150, 0, 1);
    s_case(&rng, 8, 1, 16, 12, 37, 100, 40, 2);   /* 16 rows a block */
    s_case(&rng, 4, 1, 32, 32, 0, 1, 1000, 0);    /* decode, long context */
    s_case(&rng, 4, 1, 32, 32, 100, 1, 1000, 0);
    s_case(&rng, 300, 2, 4, 4, 3, 3, 20, 0);      /* group over 128 rows */
}

/* Three rows at positions 2..4 over five positions: q (3 rows), k and v (5
 * rows) random from seed, dense, and out (3 rows) from attention(). */
static void s_three_rows(const attention_shape_t *sh, uint64_t seed, float *q, float *k,
                         float *v, float *out)
{
    const int qw = sh->n_heads * sh->head_dim, kw = sh->n_kv_heads * sh->head_dim;
    const int vw = sh->n_kv_heads * sh->v_head_dim, ow = sh->n_heads * sh->v_head_dim;
    testrng_t rng;
    testrng_init(&rng, seed);
    testrng_fill(&rng, q, 3 * (size_t)qw, 1.0f);
    testrng_fill(&rng, k, 5 * (size_t)kw, 1.0f);
    testrng_fill(&rng, v, 5 * (size_t)vw, 1.0f);
    float *scratch = malloc(attention_scratch_floats(sh, 3, 5) * sizeof *scratch);
    assert_non_null(scratch);
    compute_t *cx = compute_new(1, NULL);
    assert_non_null(cx);
    attention(cx, out, ow, q, qw, k, kw, v, vw, sh, 3, 2, scratch);
    compute_destroy(&cx);
    free(scratch);
}

/* A window of one: each row sees only its own key, so its output is its own
 * value row, exactly. */
static void test_window_one_is_exact(void **state)
{
    (void)state;
    attention_shape_t sh = {.n_heads = 2, .n_kv_heads = 1, .head_dim = 3,
                            .v_head_dim = 2, .scale = 0.5f, .window = 1};
    float q[3 * 6], k[5 * 3], v[5 * 2], out[3 * 4];
    s_three_rows(&sh, 54, q, k, v, out);
    for (int r = 0; r < 3; r++)
        for (int h = 0; h < 2; h++)
            for (int d = 0; d < 2; d++)
                assert_true(out[r * 4 + h * 2 + d] == v[(2 + r) * 2 + d]);
}

/* The scratch size grows with n_q and n_ctx, so one buffer sized for the
 * largest call serves all smaller ones; no query rows, no scratch. */
static void test_scratch_size(void **state)
{
    (void)state;
    attention_shape_t sh = {.n_heads = 8, .n_kv_heads = 2, .head_dim = 64,
                            .v_head_dim = 32, .scale = 0.125f, .window = 0};
    assert_int_equal(attention_scratch_floats(&sh, 0, 10), 0);
    for (int w = 0; w <= 16; w += 16) {
        sh.window = w;
        size_t prev = 0;
        for (int n_q = 1; n_q <= 300; n_q += 7) {
            size_t s = attention_scratch_floats(&sh, n_q, n_q + 50);
            assert_true(s >= prev);
            assert_true(s >= attention_scratch_floats(&sh, n_q, n_q));
            prev = s;
        }
    }
}

/* Sinks of the fixtures' spread (N(0, 0.5)) and of a spread that lets them
 * dominate some rows and vanish from others, over every call pattern, with
 * and without windows (gpt_oss-A: window 8 on layer 0), GQA, chunks. */
static void test_sinks(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 55);
    static const float spreads[] = {0.5f, 4.0f};
    static const int windows[] = {0, 1, 3, 8};
    s_sinks_on = true;
    s_max_err = 0.0;
    for (size_t i = 0; i < sizeof spreads / sizeof spreads[0]; i++) {
        s_sinks_scale = spreads[i];
        for (size_t w = 0; w < sizeof windows / sizeof windows[0]; w++)
            s_patterns(&rng, windows[w], (int)w % 2);
        /* gpt_oss-A's layout over its longest prompt, whole and chunked. */
        s_case(&rng, 4, 2, 16, 16, 8, 23, 0, 0);
        s_case(&rng, 4, 2, 16, 16, 8, 12, 11, 0);
        s_case(&rng, 4, 2, 16, 16, 0, 1, 34, 0);
        s_case(&rng, 4, 2, 16, 16, 8, 1, 34, 0);
        s_case(&rng, 4, 2, 16, 16, 8, 150, 0, 1);   /* several blocks */
        s_case(&rng, 8, 1, 16, 12, 37, 100, 40, 2);
    }
    s_sinks_on = false;
    print_message("sinks: max |error| / max |v| = %.3g\n", s_max_err);
}

/* A window of one with sinks: row r of head h sees only its own key c, so
 * its output is v_c * e^s / (e^s + e^sink_h), s = scale q.k_c; heads of one
 * KV group get different sinks, so a head/sink mix-up shows. */
static void test_sinks_hand(void **state)
{
    (void)state;
    const float sinks[4] = {-1.0f, 0.25f, 2.0f, 30.0f};
    attention_shape_t sh = {.n_heads = 4, .n_kv_heads = 2, .head_dim = 3,
                            .v_head_dim = 2, .scale = 0.5f, .window = 1,
                            .sinks = sinks};
    float q[3 * 12], k[5 * 6], v[5 * 4], out[3 * 8];
    s_three_rows(&sh, 56, q, k, v, out);
    for (int r = 0; r < 3; r++)
        for (int h = 0; h < 4; h++) {
            int g = h / 2, c = 2 + r;
            double s = 0.0;
            for (int d = 0; d < 3; d++)
                s += (double)q[r * 12 + h * 3 + d] * k[c * 6 + g * 3 + d];
            s *= 0.5;
            double w = 1.0 / (1.0 + exp(sinks[h] - s));
            for (int d = 0; d < 2; d++) {
                double want = w * v[c * 4 + g * 2 + d];
                assert_true(fabs(out[r * 8 + h * 2 + d] - want) <= 1e-6);
            }
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_window),
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_long),
        cmocka_unit_test(test_window_one_is_exact),
        cmocka_unit_test(test_scratch_size),
        cmocka_unit_test(test_sinks),
        cmocka_unit_test(test_sinks_hand),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
