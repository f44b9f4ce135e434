/* test_rmsnorm: rmsnorm() against a plain float64 reference on random rows of
 * odd widths, strided and in place.
 *
 * Each output goes through three float32 roundings (the reciprocal root,
 * x * r, w * that), so every entry must lie within 1e-6 of its own magnitude
 * (about 8 ulp) of the float64 value.
 */
#include <math.h>
#include <stdbool.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/rmsnorm.h"
#include "tests/testutil.h"

static const float s_sentinel = -777.25f;

static float *s_floats(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    assert_non_null(p);
    return p;
}

/* want: (n_rows, dim) dense; x: (n_rows, dim) with stride ldx. */
static void s_ref(double *want, const float *x, int ldx, const float *w,
                  int n_rows, int dim, float eps)
{
    for (int r = 0; r < n_rows; r++) {
        const float *xr = x + (size_t)r * ldx;
        double ss = 0.0;
        for (int i = 0; i < dim; i++)
            ss += (double)xr[i] * xr[i];
        double inv = 1.0 / sqrt(ss / dim + (double)eps);
        for (int i = 0; i < dim; i++)
            want[(size_t)r * dim + i] = (double)w[i] * xr[i] * inv;
    }
}

/* got: (n_rows, dim) with stride ld, padding must hold s_sentinel. */
static void s_check(const float *got, int ld, const double *want, int n_rows,
                    int dim)
{
    for (int r = 0; r < n_rows; r++) {
        for (int i = 0; i < dim; i++) {
            double g = got[(size_t)r * ld + i], e = want[(size_t)r * dim + i];
            if (!(fabs(g - e) <= 1e-6 * fabs(e) + 1e-30))
                fail_msg("row %d entry %d of %d: got %.9g want %.9g", r, i,
                         dim, g, e);
        }
        for (int i = dim; i < ld; i++)
            assert_true(got[(size_t)r * ld + i] == s_sentinel);
    }
}

static void s_case(testrng_t *rng, int n_rows, int dim, int pad, float scale,
                   float eps, bool in_place)
{
    int ldx = dim + pad, ldy = in_place ? ldx : dim + 2 * pad + 1;
    float *x = s_floats((size_t)n_rows * ldx);
    float *y = in_place ? x : s_floats((size_t)n_rows * ldy);
    float *w = s_floats((size_t)dim);
    double *want = malloc((size_t)n_rows * dim * sizeof *want);
    assert_non_null(want);

    testrng_fill(rng, x, (size_t)n_rows * ldx, scale);
    for (int r = 0; r < n_rows; r++)
        for (int i = dim; i < ldx; i++)
            x[(size_t)r * ldx + i] = s_sentinel;
    if (!in_place)
        for (size_t i = 0; i < (size_t)n_rows * ldy; i++)
            y[i] = s_sentinel;
    testrng_fill(rng, w, (size_t)dim, 1.0f);
    s_ref(want, x, ldx, w, n_rows, dim, eps);

    rmsnorm(y, ldy, x, ldx, w, n_rows, dim, eps);
    s_check(y, ldy, want, n_rows, dim);

    free(want);
    free(w);
    if (!in_place)
        free(y);
    free(x);
}

static void test_odd_widths(void **state)
{
    (void)state;
    static const int dims[] = {1, 3, 7, 17, 33, 65, 4097};
    testrng_t rng;
    testrng_init(&rng, 11);
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        s_case(&rng, 1, dims[i], 0, 1.0f, 1e-6f, false);
        s_case(&rng, 5, dims[i], 3, 1.0f, 1e-5f, false);
    }
}

static void test_in_place(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 12);
    s_case(&rng, 7, 33, 0, 1.0f, 1e-6f, true);
    s_case(&rng, 3, 65, 5, 2.0f, 1e-6f, true);
}

/* Far from 1 in either direction: eps matters for tiny rows, and squares of
 * big entries must not overflow (the float64 sum keeps 1e20^2). */
static void test_scales(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 13);
    s_case(&rng, 4, 17, 1, 1e-3f, 1e-6f, false);
    s_case(&rng, 4, 17, 1, 1e3f, 1e-6f, false);
    s_case(&rng, 2, 33, 0, 1e20f, 1e-6f, false);
}

/* A zero row gives zeros, not NaN: eps keeps the root positive. */
static void test_zero_row(void **state)
{
    (void)state;
    float x[3] = {0, 0, 0}, w[3] = {1, 2, 3}, y[3] = {NAN, NAN, NAN};
    rmsnorm(y, 3, x, 3, w, 1, 3, 1e-6f);
    assert_true(y[0] == 0 && y[1] == 0 && y[2] == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_odd_widths),
        cmocka_unit_test(test_in_place),
        cmocka_unit_test(test_scales),
        cmocka_unit_test(test_zero_row),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
