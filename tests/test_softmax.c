/* test_softmax: softmax() against a plain float64 reference on random rows of
 * odd lengths, with masked (-INFINITY) entries and huge values.
 *
 * Probabilities are at most 1, and float32 exp, the shift and the scaling
 * cost a few ulp of 1 at most, so every entry must lie within 1e-6 of the
 * float64 value; masked entries must be exactly 0.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/softmax.h"
#include "tests/testutil.h"

/* want: (n), from the float inputs x: (n). */
static void s_ref(double *want, const float *x, int n)
{
    double max = -INFINITY, sum = 0.0;
    for (int i = 0; i < n; i++)
        if (x[i] > max)
            max = x[i];
    for (int i = 0; i < n; i++) {
        want[i] = exp((double)x[i] - max);
        sum += want[i];
    }
    for (int i = 0; i < n; i++)
        want[i] /= sum;
}

/* Runs softmax on a copy of x and checks it against the reference. */
static void s_check(const float *x, int n)
{
    float *got = malloc((size_t)n * sizeof *got);
    double *want = malloc((size_t)n * sizeof *want);
    assert_non_null(got);
    assert_non_null(want);
    memcpy(got, x, (size_t)n * sizeof *got);
    s_ref(want, x, n);
    softmax(got, n);
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        if (x[i] == -INFINITY)
            assert_true(got[i] == 0.0f);
        if (!(fabs(got[i] - want[i]) <= 1e-6))
            fail_msg("entry %d of %d: got %.9g want %.9g", i, n, got[i],
                     want[i]);
        sum += got[i];
    }
    assert_true(fabs(sum - 1.0) <= 1e-5);
    free(want);
    free(got);
}

static void test_random_rows(void **state)
{
    (void)state;
    static const int ns[] = {1, 2, 3, 7, 17, 33, 65, 1001};
    static const float scales[] = {1.0f, 10.0f, 0.01f};
    testrng_t rng;
    testrng_init(&rng, 21);
    float *x = malloc(1001 * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++)
        for (size_t s = 0; s < sizeof scales / sizeof scales[0]; s++) {
            testrng_fill(&rng, x, (size_t)ns[i], scales[s]);
            s_check(x, ns[i]);
        }
    free(x);
}

/* Masked entries anywhere, including the first and the last, become exact
 * zeros, and the rest sums to 1. */
static void test_masked(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 22);
    float x[33];
    testrng_fill(&rng, x, 33, 3.0f);
    for (int i = 0; i < 33; i += 3)
        x[i] = -INFINITY;
    x[32] = -INFINITY;
    s_check(x, 33);

    /* Only one visible entry: it gets exactly 1. */
    float one[7] = {-INFINITY, -INFINITY, -INFINITY, 0.3f,
                    -INFINITY, -INFINITY, -INFINITY};
    softmax(one, 7);
    for (int i = 0; i < 7; i++)
        assert_true(one[i] == (i == 3 ? 1.0f : 0.0f));

    float single = -123.0f;
    softmax(&single, 1);
    assert_true(single == 1.0f);
}

/* Values whose exponentials overflow float32 (and float64) unless the maximum
 * is subtracted first. */
static void test_huge_values(void **state)
{
    (void)state;
    float x[5] = {1e30f, 1e30f, -1e30f, 3e38f, 3e38f};
    float got[5];
    memcpy(got, x, sizeof got);
    softmax(got, 5);
    assert_true(got[0] == 0 && got[1] == 0 && got[2] == 0);
    assert_true(got[3] == 0.5f && got[4] == 0.5f);

    const float y[4] = {1000.0f, 999.0f, 998.5f, -INFINITY};
    s_check(y, 4);
    const float z[3] = {-1e4f, -1e4f + 1.0f, -1e4f - 2.0f};
    s_check(z, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_rows),
        cmocka_unit_test(test_masked),
        cmocka_unit_test(test_huge_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
