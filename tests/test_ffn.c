/* test_ffn: ffn_swiglu() and gpt-oss's ffn_swiglu_clamped() against plain
 * float64 references, out of place and in place over either input, at odd
 * lengths and extreme gate values (and, clamped, values beyond the clamp);
 * ffn_bias_add() exactly.
 *
 * silu(g) * u takes a float32 exp and three roundings, so every entry must be
 * within 1e-6 of its own magnitude of the float64 value, or within 1e-30:
 * below g = -88.7 expf(-g) overflows and silu(g) flushes to -0, as it does in
 * torch's float32 silu, where the true value is under 1e-36.
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

#include "kernels/ffn.h"
#include "tests/testutil.h"

enum { WHERE_NEW, WHERE_GATE, WHERE_UP }; /* where the output goes */

static double s_clamped_ref(double g, double u, double alpha, double limit);
static double s_clamped_max_err; /* largest error / bound, for the log */

/* Runs ffn_swiglu(), or ffn_swiglu_clamped() at alpha and limit when
 * clamped, on copies of gate and up with the output where `where` says, and
 * checks every entry against the float64 reference within its bound (the
 * file comment; for the clamped one, s_clamped_case's). */
static void s_check(const float *gate, const float *up, size_t n, int where, bool clamped,
                    float alpha, float limit)
{
    float *g = malloc((n ? n : 1) * sizeof *g);
    float *u = malloc((n ? n : 1) * sizeof *u);
    float *h = malloc((n + 1) * sizeof *h);
    assert_true(g && u && h);
    memcpy(g, gate, n * sizeof *g);
    memcpy(u, up, n * sizeof *u);
    h[n] = 42.0f; /* one past the end stays put */
    float *out = where == WHERE_GATE ? g : where == WHERE_UP ? u : h;

    if (clamped)
        ffn_swiglu_clamped(out, g, u, n, alpha, limit);
    else
        ffn_swiglu(out, g, u, n);

    for (size_t i = 0; i < n; i++) {
        double want, bound;
        if (clamped) {
            want = s_clamped_ref(gate[i], up[i], alpha, limit);
            double gc = fmin(gate[i], limit);
            double uc = fmin(fmax(up[i], -limit), limit);
            double glu = fabs(gc / (1.0 + exp(-alpha * gc)));
            double rel = 1e-6 + fabs(alpha * gc) * 0x1p-24;
            bound = rel * (fabs(uc) + 1.0) * glu + 1e-30;
        } else {
            double gi = gate[i];
            want = gi / (1.0 + exp(-gi)) * (double)up[i];
            bound = 1e-6 * fabs(want) + 1e-30;
        }
        double err = fabs(out[i] - want);
        if (clamped && err / bound > s_clamped_max_err)
            s_clamped_max_err = err / bound;
        if (!(err <= bound))
            fail_msg("entry %zu of %zu: gate %.9g up %.9g: got %.9g want "
                     "%.9g", i, n, gate[i], up[i], out[i], want);
    }
    assert_true(h[n] == 42.0f);
    free(h);
    free(u);
    free(g);
}

static void s_case(const float *gate, const float *up, size_t n, int where)
{
    s_check(gate, up, n, where, false, 0, 0);
}

static void test_random(void **state)
{
    (void)state;
    static const size_t ns[] = {0, 1, 3, 7, 17, 33, 65, 1025};
    testrng_t rng;
    testrng_init(&rng, 31);
    float gate[1025], up[1025];
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++)
        for (int where = WHERE_NEW; where <= WHERE_UP; where++) {
            testrng_fill(&rng, gate, ns[i], 3.0f);
            testrng_fill(&rng, up, ns[i], 1.0f);
            s_case(gate, up, ns[i], where);
        }
}

/* Saturated gates: silu(g) ~ g for large g, ~ g e^g for very negative g, and
 * exactly -0 once exp(-g) overflows; never NaN. */
static void test_extremes(void **state)
{
    (void)state;
    const float gate[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 20.0f, -20.0f, 88.0f,
                          -88.0f, 89.0f, -89.0f, 100.0f, -100.0f, 1e4f,
                          -1e4f, 3e38f, -3e38f};
    const size_t n = sizeof gate / sizeof gate[0];
    float up[sizeof gate / sizeof gate[0]];
    for (size_t i = 0; i < n; i++)
        up[i] = (i % 2) ? -1.5f : 0.75f;
    s_case(gate, up, n, WHERE_NEW);

    float h[2], g2[2] = {-1e4f, -3e38f}, u2[2] = {2.0f, 2.0f};
    ffn_swiglu(h, g2, u2, 2);
    assert_true(h[0] == 0.0f && h[1] == 0.0f);
}

/* ---- gpt-oss ------------------------------------------------------- */

/* float64 clamped SwiGLU from its definition. */
static double s_clamped_ref(double g, double u, double alpha, double limit)
{
    g = fmin(g, limit);
    u = fmin(fmax(u, -limit), limit);
    return (u + 1.0) * g / (1.0 + exp(-alpha * g));
}

/* The error bound: a few float32 roundings of each factor; u + 1 near 0
 * cancels, so the bound scales with |u| + 1, not |u + 1|; the float32 product
 * alpha g (the reference's too) moves the sigmoid of a very negative gate by
 * up to |alpha g| 2^-24 relative; 1e-30 covers the flush to -0 far below the
 * gate's sigmoid range. alpha is the float32 value in both. */
static void s_clamped_case(const float *gate, const float *up, size_t n,
                           int where, float alpha, float limit)
{
    s_check(gate, up, n, where, true, alpha, limit);
}

/* Spreads wide enough that a good share of gates and ups lie beyond the
 * clamp at 7 on both sides. */
static void test_clamped_random(void **state)
{
    (void)state;
    static const size_t ns[] = {0, 1, 3, 7, 17, 33, 65, 1025};
    testrng_t rng;
    testrng_init(&rng, 32);
    float gate[1025], up[1025];
    int beyond = 0;
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++)
        for (int where = WHERE_NEW; where <= WHERE_UP; where++) {
            testrng_fill(&rng, gate, ns[i], 8.0f);
            testrng_fill(&rng, up, ns[i], 8.0f);
            for (size_t j = 0; j < ns[i]; j++)
                beyond += gate[j] > 7.0f || fabsf(up[j]) > 7.0f;
            s_clamped_case(gate, up, ns[i], where, FFN_OSS_ALPHA,
                           FFN_OSS_LIMIT);
        }
    assert_true(beyond > 500);
    /* Another slope and clamp: the constants are parameters. */
    testrng_fill(&rng, gate, 1025, 3.0f);
    testrng_fill(&rng, up, 1025, 3.0f);
    s_clamped_case(gate, up, 1025, WHERE_NEW, 1.0f, 2.5f);
    print_message("clamped swiglu: max error / bound = %.3g\n",
                  s_clamped_max_err);
}

/* By hand at the clamp's edges and beyond; NaN stays NaN; very negative
 * gates give -0 (times u + 1), never NaN. */
static void test_clamped_extremes(void **state)
{
    (void)state;
    const float gate[] = {7.0f, 7.5f, 1e30f, 3e38f, -7.5f, -100.0f, -1e4f,
                          -3e38f, 0.0f, -0.0f, 6.999f, 1.0f, 1.0f, 1.0f};
    const float up[] = {7.0f, 8.0f, -1e30f, 3e38f, -8.0f, 1.0f, 5.0f,
                        -3e38f, 3.0f, 1.0f, -6.999f, -1.0f, -7.0f, 1e9f};
    const size_t n = sizeof gate / sizeof gate[0];
    s_clamped_case(gate, up, n, WHERE_NEW, FFN_OSS_ALPHA, FFN_OSS_LIMIT);

    float h[14];
    ffn_swiglu_clamped(h, gate, up, n, FFN_OSS_ALPHA, FFN_OSS_LIMIT);
    /* Beyond the clamp the output is the clamp's, bit for bit. */
    float at[4];
    const float g7[4] = {7.0f, 7.0f, 7.0f, 7.0f};
    const float u7[4] = {7.0f, 7.0f, -7.0f, 7.0f};
    ffn_swiglu_clamped(at, g7, u7, 4, FFN_OSS_ALPHA, FFN_OSS_LIMIT);
    assert_true(h[1] == at[0] && h[2] == at[2] && h[3] == at[3]);
    double want = 8.0 * 7.0 / (1.0 + exp(-1.702 * 7.0));
    assert_true(fabs(at[0] - want) <= 1e-6 * want);
    assert_true(at[2] < 0.0f && fabs(at[2] + 6.0 / 8.0 * want) <= 1e-5);
    for (size_t i = 0; i < n; i++)
        assert_false(isnan(h[i]));
    assert_true(h[6] == 0.0f && h[7] == 0.0f); /* -0 == 0 */
    assert_true(h[11] == 0.0f);                /* u = -1: (u + 1) == 0 */

    const float gn[2] = {NAN, 1.0f}, un[2] = {1.0f, NAN};
    ffn_swiglu_clamped(h, gn, un, 2, FFN_OSS_ALPHA, FFN_OSS_LIMIT);
    assert_true(isnan(h[0]) && isnan(h[1]));
}

static void test_bias_add(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 33);
    float y[5 * 9], y0[5 * 9], b[7];
    testrng_fill(&rng, y0, 45, 1.0f);
    testrng_fill(&rng, b, 7, 1.0f);
    memcpy(y, y0, sizeof y);
    ffn_bias_add(y, 9, b, 5, 7);
    for (int r = 0; r < 5; r++)
        for (int j = 0; j < 9; j++)
            assert_true(y[r * 9 + j] == (j < 7 ? y0[r * 9 + j] + b[j]
                                               : y0[r * 9 + j]));
    ffn_bias_add(NULL, 0, NULL, 0, 0);
    ffn_bias_add(y, 9, b, 0, 7);
    ffn_bias_add(y, 9, NULL, 5, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_extremes),
        cmocka_unit_test(test_clamped_random),
        cmocka_unit_test(test_clamped_extremes),
        cmocka_unit_test(test_bias_add),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
