/* test_expert_layout: the re-layout of gpt-oss's fused experts, on small
 * hand-made arrays whose entries name their own position, and end to end: one
 * expert of random fused tensors run through the re-laid-out matrices with
 * moecluster's kernels (gemm_linear, ffn_bias_add, ffn_swiglu_clamped)
 * against a float64 evaluation of transformers' GptOssExperts formula on the
 * fused layout itself.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/ffn.h"
#include "kernels/gemm.h"
#include "model/expert_layout.h"
#include "tests/testutil.h"

/* hidden 3, inter 2: gate_up (3, 4) holds 10 * row + column; even columns
 * gate, odd columns up. */
static void test_hand(void **state)
{
    (void)state;
    const float gate_up[3 * 4] = {0, 1, 2, 3,
                                  10, 11, 12, 13,
                                  20, 21, 22, 23};
    const float want_gate[2 * 3] = {0, 10, 20,
                                    2, 12, 22};
    const float want_up[2 * 3] = {1, 11, 21,
                                  3, 13, 23};
    float gate[6], up[6];
    expert_layout_split_gate_up(gate, up, gate_up, 3, 2);
    assert_memory_equal(gate, want_gate, sizeof gate);
    assert_memory_equal(up, want_up, sizeof up);

    const float bias[4] = {-1, 1, -2, 2};
    float bg[2], bu[2];
    expert_layout_split_gate_up_bias(bg, bu, bias, 2);
    assert_true(bg[0] == -1 && bg[1] == -2 && bu[0] == 1 && bu[1] == 2);

    /* down_proj (inter 2, hidden 3) -> down (3, 2) */
    const float down_proj[2 * 3] = {0, 1, 2,
                                    10, 11, 12};
    const float want_down[3 * 2] = {0, 10,
                                    1, 11,
                                    2, 12};
    float down[6];
    expert_layout_transpose_down(down, down_proj, 3, 2);
    assert_memory_equal(down, want_down, sizeof down);

    /* Row-interleaved (dequantised MXFP4): rows (4, 3), even rows gate. */
    const float rows[4 * 3] = {0, 1, 2,
                               10, 11, 12,
                               20, 21, 22,
                               30, 31, 32};
    const float want_rg[2 * 3] = {0, 1, 2, 20, 21, 22};
    const float want_ru[2 * 3] = {10, 11, 12, 30, 31, 32};
    expert_layout_split_rows(gate, up, rows, 3, 2);
    assert_memory_equal(gate, want_rg, sizeof gate);
    assert_memory_equal(up, want_ru, sizeof up);

    /* One by one: hidden 1, inter 1. */
    const float one[2] = {5, 7};
    expert_layout_split_gate_up(gate, up, one, 1, 1);
    assert_true(gate[0] == 5 && up[0] == 7);
    expert_layout_transpose_down(down, one, 1, 1);
    assert_true(down[0] == 5);
}

static double s_max_abs_err; /* largest |error| over all outputs, for the log */

/* Expert e of E random fused experts, n rows of x. */
static void s_expert_case(testrng_t *rng, int n_experts, int e, int hidden,
                          int inter, int n, int *n_clamped, double *max_ratio)
{
    size_t n_gu = (size_t)n_experts * hidden * 2 * inter;
    size_t n_dn = (size_t)n_experts * inter * hidden;
    float *gu = malloc(n_gu * sizeof *gu);
    float *gub = malloc((size_t)n_experts * 2 * inter * sizeof *gub);
    float *dn = malloc(n_dn * sizeof *dn);
    float *dnb = malloc((size_t)n_experts * hidden * sizeof *dnb);
    float *x = malloc((size_t)n * hidden * sizeof *x);
    float *wg = malloc((size_t)inter * hidden * sizeof *wg);
    float *wu = malloc((size_t)inter * hidden * sizeof *wu);
    float *wd = malloc((size_t)hidden * inter * sizeof *wd);
    float *bg = malloc((size_t)inter * sizeof *bg);
    float *bu = malloc((size_t)inter * sizeof *bu);
    float *g = malloc((size_t)n * inter * sizeof *g);
    float *u = malloc((size_t)n * inter * sizeof *u);
    float *y = malloc((size_t)n * hidden * sizeof *y);
    double *h = malloc((size_t)inter * sizeof *h);
    double *mag = malloc((size_t)inter * sizeof *mag);
    assert_true(gu && gub && dn && dnb && x && wg && wu && wd && bg && bu &&
                g && u && y && h && mag);
    /* The fixtures' spreads: gate/up N(0, 0.45), so some reach the clamp. */
    testrng_fill(rng, gu, n_gu, 0.45f);
    testrng_fill(rng, gub, (size_t)n_experts * 2 * inter, 0.05f);
    testrng_fill(rng, dn, n_dn, 0.1f);
    testrng_fill(rng, dnb, (size_t)n_experts * hidden, 0.05f);
    testrng_fill(rng, x, (size_t)n * hidden, 1.0f);

    const float *gu_e = gu + (size_t)e * hidden * 2 * inter;
    const float *gub_e = gub + (size_t)e * 2 * inter;
    const float *dn_e = dn + (size_t)e * inter * hidden;
    const float *dnb_e = dnb + (size_t)e * hidden;
    expert_layout_split_gate_up(wg, wu, gu_e, hidden, inter);
    expert_layout_split_gate_up_bias(bg, bu, gub_e, inter);
    expert_layout_transpose_down(wd, dn_e, hidden, inter);

    /* What an integrator's expert FFN does with them. */
    compute_t *cx = compute_new(1, NULL);
    assert_non_null(cx);
    gemm_linear(cx, g, x, wg, n, inter, hidden);
    ffn_bias_add(g, inter, bg, n, inter);
    gemm_linear(cx, u, x, wu, n, inter, hidden);
    ffn_bias_add(u, inter, bu, n, inter);
    ffn_swiglu_clamped(g, g, u, (size_t)n * inter, FFN_OSS_ALPHA,
                       FFN_OSS_LIMIT);
    gemm_linear(cx, y, g, wd, n, hidden, inter);
    ffn_bias_add(y, hidden, dnb_e, n, hidden);
    compute_destroy(&cx);

    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * hidden;
        /* transformers: gate_up = x @ W + b; gate, up = [..., ::2], [1::2] */
        for (int i = 0; i < inter; i++) {
            double a = gub_e[2 * i], b = gub_e[2 * i + 1], m = 0.0;
            for (int k = 0; k < hidden; k++) {
                a += (double)xr[k] * gu_e[(size_t)k * 2 * inter + 2 * i];
                b += (double)xr[k] * gu_e[(size_t)k * 2 * inter + 2 * i + 1];
                m += fabs(xr[k]) * (fabs(gu_e[(size_t)k * 2 * inter + 2 * i]) +
                      fabs(gu_e[(size_t)k * 2 * inter + 2 * i + 1]));
            }
            *n_clamped += a > 7.0 || fabs(b) > 7.0;
            double gc = fmin(a, 7.0), uc = fmin(fmax(b, -7.0), 7.0);
            h[i] = (uc + 1.0) * gc / (1.0 + exp(-(double)FFN_OSS_ALPHA * gc));
            /* |d h / d pre-activation| <= 10 over the clamped range, so a
             * pre-activation error of 1e-6 m moves h by at most 1e-5 m. */
            mag[i] = fabs(h[i]) + 10.0 * m;
        }
        for (int j = 0; j < hidden; j++) {
            double want = dnb_e[j], bound = 1e-6;
            for (int i = 0; i < inter; i++) {
                want += h[i] * dn_e[(size_t)i * hidden + j];
                bound += 1e-6 * mag[i] * fabs(dn_e[(size_t)i * hidden + j]);
            }
            double err = fabs(y[(size_t)r * hidden + j] - want);
            if (err > s_max_abs_err)
                s_max_abs_err = err;
            if (err / bound > *max_ratio)
                *max_ratio = err / bound;
            if (!(err <= bound))
                fail_msg("expert %d row %d out %d: got %.9g want %.9g (bound "
                         "%.3g)", e, r, j, y[(size_t)r * hidden + j], want,
                         bound);
        }
    }
    free(mag);
    free(h);
    free(y);
    free(u);
    free(g);
    free(bu);
    free(bg);
    free(wd);
    free(wu);
    free(wg);
    free(x);
    free(dnb);
    free(dn);
    free(gub);
    free(gu);
}

static void test_expert_ffn(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 61);
    int n_clamped = 0;
    double max_ratio = 0.0;
    /* gpt_oss-A's sizes (hidden 64, inter 48, 8 experts), then odd ones. */
    s_expert_case(&rng, 8, 0, 64, 48, 7, &n_clamped, &max_ratio);
    s_expert_case(&rng, 8, 5, 64, 48, 1, &n_clamped, &max_ratio);
    s_expert_case(&rng, 8, 7, 64, 48, 23, &n_clamped, &max_ratio);
    s_expert_case(&rng, 3, 2, 17, 5, 4, &n_clamped, &max_ratio);
    s_expert_case(&rng, 1, 0, 5, 33, 9, &n_clamped, &max_ratio);
    print_message("expert ffn: %d clamped pre-activations, max |error| %.3g, "
                  "max error / bound %.3g\n", n_clamped, s_max_abs_err,
                  max_ratio);
    assert_true(n_clamped > 0); /* the clamp was exercised */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand),
        cmocka_unit_test(test_expert_ffn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
