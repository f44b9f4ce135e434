/* test_logitdiff: the KL divergence and top-1 agreement of bench-logit-diff
 * (issue 12's accuracy comparison), against values worked out by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>

#include "bench/logitdiff.h"

enum { VOCAB_MAX = 64 };

/* p = (1/2, 1/2), q = (1/4, 3/4): KL = ln(2)/2 + ln(2/3)/2 = 0.14384. */
static void test_known_value(void **state)
{
    (void)state;
    const float ref[2] = {0, 0}, test[2] = {0, (float)log(3.0)};
    double scratch[2 * 2];
    logitdiff_t d = {0};
    assert_int_equal(logitdiff_add(&d, ref, test, 2, scratch, NULL), 0);
    const double q1 = 3.0 / 4.0, q0 = 1.0 / 4.0;
    const double want = 0.5 * log(0.5 / q0) + 0.5 * log(0.5 / q1);
    assert_true(fabs(d.kl_sum - want) < 1e-6); /* the test row holds float32 ln 3 */
    assert_true(fabs(want - 0.143841) < 1e-6);
    assert_int_equal(d.positions, 1);
    assert_int_equal(d.agree, 0); /* a tie goes to id 0; the test's top is id 1 */
    assert_true(fabs(logitdiff_top1(&d)) < 1e-12);
}

/* Softmax ignores a shift; huge logits must not overflow. */
static void test_shift_and_large_logits(void **state)
{
    (void)state;
    float ref[VOCAB_MAX], test[VOCAB_MAX];
    for (int i = 0; i < VOCAB_MAX; i++) {
        ref[i] = (float)((i * 37) % 11) - 5.0f + 1000.0f;
        test[i] = ref[i] + 512.0f; /* exact in float32 */
    }
    double scratch[2 * VOCAB_MAX];
    logitdiff_t d = {0};
    assert_int_equal(logitdiff_add(&d, ref, test, VOCAB_MAX, scratch, NULL), 0);
    assert_int_equal(logitdiff_add(&d, ref, ref, VOCAB_MAX, scratch, NULL), 0);
    assert_true(isfinite(d.kl_sum));
    assert_true(logitdiff_kl_mean(&d) < 1e-12);
    assert_true(d.kl_max < 1e-12);
    assert_int_equal(d.agree, 2);
    assert_true(fabs(logitdiff_top1(&d) - 1.0) < 1e-12);
}

/* The mean and the largest over several positions. */
static void test_mean_and_max(void **state)
{
    (void)state;
    const float a[2] = {0, 0}, b[2] = {0, (float)log(3.0)}, c[2] = {2, 0};
    double scratch[2 * 2];
    logitdiff_t d = {0}, one = {0};
    assert_int_equal(logitdiff_add(&one, a, b, 2, scratch, NULL), 0);
    assert_int_equal(logitdiff_add(&d, a, b, 2, scratch, NULL), 0);
    assert_int_equal(logitdiff_add(&d, c, c, 2, scratch, NULL), 0);
    assert_int_equal(d.positions, 2);
    assert_true(fabs(logitdiff_kl_mean(&d) - one.kl_sum / 2) < 1e-15);
    assert_true(fabs(d.kl_max - one.kl_sum) < 1e-15);
    assert_int_equal(d.agree, 1);
    assert_true(fabs(logitdiff_top1(&d) - 0.5) < 1e-12);
}

/* A NaN or an infinity names its row and leaves the totals as they were. */
static void test_rejects_non_finite(void **state)
{
    (void)state;
    const float ok[3] = {1, 2, 3}, nan_row[3] = {1, NAN, 3}, inf_row[3] = {INFINITY, 2, 3};
    double scratch[2 * 3];
    logitdiff_t d = {0};
    int bad = 0;
    assert_int_equal(logitdiff_add(&d, ok, nan_row, 3, scratch, &bad), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(bad, LOGITDIFF_BAD_TEST);
    assert_int_equal(logitdiff_add(&d, inf_row, ok, 3, scratch, &bad), -1);
    assert_int_equal(bad, LOGITDIFF_BAD_REF);
    assert_int_equal(d.positions, 0);
    assert_true(logitdiff_kl_mean(&d) == 0 && logitdiff_top1(&d) == 0);
    assert_int_equal(logitdiff_add(&d, ok, ok, 3, scratch, &bad), 0);
    assert_int_equal(bad, 0);
    assert_int_equal(d.positions, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_value),
        cmocka_unit_test(test_shift_and_large_logits),
        cmocka_unit_test(test_mean_and_max),
        cmocka_unit_test(test_rejects_non_finite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
