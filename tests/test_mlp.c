/* test_mlp: the shared-expert / dense FFN block against a float64 oracle,
 * with and without its sigmoid gate, adding onto what out holds; bad sizes
 * and out-of-memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "engine/mlp.h"
#include "tests/testutil.h"

enum { HIDDEN = 12, WIDTH = 7, MAX_WIDTH = 9, ROWS = 5 };

/* out[r] + g_r * down(silu(gate u) * up u), all in float64. */
static void s_oracle(const float *gate, const float *up, const float *down,
                     const float *gate_w, const float *u, int n, const float *out0,
                     double *want)
{
    for (int r = 0; r < n; r++) {
        const float *x = u + (size_t)r * HIDDEN;
        double h[WIDTH], g = 1;
        for (int i = 0; i < WIDTH; i++) {
            double a = 0, b = 0;
            for (int j = 0; j < HIDDEN; j++) {
                a += (double)gate[i * HIDDEN + j] * x[j];
                b += (double)up[i * HIDDEN + j] * x[j];
            }
            h[i] = a / (1 + exp(-a)) * b;
        }
        if (gate_w) {
            double s = 0;
            for (int j = 0; j < HIDDEN; j++)
                s += (double)gate_w[j] * x[j];
            g = 1 / (1 + exp(-s));
        }
        for (int j = 0; j < HIDDEN; j++) {
            double y = 0;
            for (int i = 0; i < WIDTH; i++)
                y += (double)down[j * WIDTH + i] * h[i];
            want[r * HIDDEN + j] = out0[r * HIDDEN + j] + g * y;
        }
    }
}

static void test_matches_oracle(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 7);
    float gate[WIDTH * HIDDEN], up[WIDTH * HIDDEN], down[HIDDEN * WIDTH], gate_w[HIDDEN];
    float u[ROWS * HIDDEN], out[ROWS * HIDDEN], out0[ROWS * HIDDEN];
    double want[ROWS * HIDDEN];
    testrng_fill(&rng, gate, WIDTH * HIDDEN, 0.5f);
    testrng_fill(&rng, up, WIDTH * HIDDEN, 0.5f);
    testrng_fill(&rng, down, HIDDEN * WIDTH, 0.5f);
    testrng_fill(&rng, gate_w, HIDDEN, 1.0f);
    testrng_fill(&rng, u, ROWS * HIDDEN, 1.0f);
    testrng_fill(&rng, out0, ROWS * HIDDEN, 1.0f);
    expert_weights_t w = {.gate = tensor_f32(gate, WIDTH, HIDDEN),
                          .up = tensor_f32(up, WIDTH, HIDDEN),
                          .down = tensor_f32(down, HIDDEN, WIDTH)};
    err_t err = {0};
    compute_t *cx = compute_new(1, NULL);
    assert_non_null(cx);
    mlp_t *m = mlp_new(HIDDEN, MAX_WIDTH, ROWS, cx, &err);
    assert_non_null(m);
    for (int gated = 0; gated < 2; gated++) {
        for (int n = 0; n <= ROWS; n++) {
            memcpy(out, out0, sizeof out);
            mlp_add(m, &w, WIDTH, gated ? gate_w : NULL, u, n, out);
            s_oracle(gate, up, down, gated ? gate_w : NULL, u, n, out0, want);
            double err_max = testutil_max_abs_diff(out, want, (size_t)n * HIDDEN);
            assert_true(err_max <= 1e-5 * (1 + testutil_max_abs(want, (size_t)n * HIDDEN)));
            /* rows past n are untouched */
            assert_memory_equal(out + n * HIDDEN, out0 + n * HIDDEN,
                                (size_t)(ROWS - n) * HIDDEN * sizeof(float));
        }
    }
    mlp_destroy(&m);
    assert_null(m);
    mlp_destroy(&m); /* twice is fine */
    mlp_destroy(NULL);
    compute_destroy(&cx);
}

/* One mlp_new on cx (a testutil_attempt_fn), destroyed again. */
static int s_try_new(void *ctx, err_t *err)
{
    mlp_t *m = mlp_new(HIDDEN, MAX_WIDTH, ROWS, ctx, err);
    if (!m)
        return -1;
    mlp_destroy(&m);
    return 0;
}

static void test_bad_sizes_and_oom(void **state)
{
    (void)state;
    err_t err = {0};
    compute_t *cx = compute_new(1, NULL);
    assert_non_null(cx);
    errno = 0;
    assert_null(mlp_new(0, 4, 4, cx, &err));
    assert_int_equal(errno, EINVAL);
    assert_null(mlp_new(4, 0, 4, cx, &err));
    assert_null(mlp_new(4, 4, 0, cx, &err));
    assert_true(testutil_oom_sweep(20, s_try_new, cx) >= 1);
    compute_destroy(&cx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_oracle),
        cmocka_unit_test(test_bad_sizes_and_oom),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
