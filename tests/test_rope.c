/* test_rope: rope_new() argument checks and failure paths, and rope_apply()
 * against float64 references.
 *
 * rope.h fixes the angle in float32 (pos * inv_freq, as torch computes it),
 * which at position 4095 already differs from the exact angle by ~1e-4 rad;
 * so the main reference takes that float32 angle from the contract and does
 * the rest (cos, sin, the rotation) in float64. A second reference is float64
 * throughout and holds small positions to the exact frequencies
 * 1 / theta^(2i / rot).
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/mem.h"
#include "kernels/rope.h"
#include "tests/testutil.h"

static const float s_sentinel = 31337.0f;

/* The contract's float32 angle for pair i of a rot_dim-wide rotation. */
static float s_angle_f32(int pos, int i, int rot_dim, double theta)
{
    float inv = 1.0f / powf((float)theta, (float)(2 * i) / (float)rot_dim);
    return (float)pos * inv;
}

static void test_new_bad_args(void **state)
{
    (void)state;
    static const int bad_rot[] = {0, 1, 3, 7, -2, -1};
    static const double bad_theta[] = {0.0, -1.0, 1e300, NAN, INFINITY,
                                       -INFINITY};
    for (size_t i = 0; i < sizeof bad_rot / sizeof bad_rot[0]; i++) {
        err_t err = {0};
        errno = 0;
        assert_null(rope_new(bad_rot[i], 10000.0, &err));
        assert_int_equal(errno, EINVAL);
        assert_int_equal(err.code, EINVAL);
        assert_true(err.msg[0] != '\0');
        errno = 0;
        assert_null(rope_new(bad_rot[i], 10000.0, NULL));
        assert_int_equal(errno, EINVAL);
    }
    for (size_t i = 0; i < sizeof bad_theta / sizeof bad_theta[0]; i++) {
        err_t err = {0};
        errno = 0;
        assert_null(rope_new(64, bad_theta[i], &err));
        assert_int_equal(errno, EINVAL);
        assert_int_equal(err.code, EINVAL);
    }
}

static void test_new_out_of_memory(void **state)
{
    (void)state;
    err_t err = {0};
    mem_fail_after(1);
    errno = 0;
    rope_t *rope = rope_new(64, 10000.0, &err);
    mem_fail_after(-1);
    assert_null(rope);
    assert_int_equal(errno, ENOMEM);
    assert_int_equal(err.code, ENOMEM);
}

static void test_new_destroy(void **state)
{
    (void)state;
    rope_t *rope = rope_new(2, 1.5, NULL);
    assert_non_null(rope);
    rope_destroy(&rope);
    assert_null(rope);
    rope_destroy(&rope); /* twice is harmless */
    rope_destroy(&rope);
}

/* By hand: rot_dim 4, theta 10000 gives frequencies 1 and 1/100, and entry i
 * pairs with i + 2 (rotate_half), not with its neighbour. */
static void test_hand(void **state)
{
    (void)state;
    rope_t *rope = rope_new(4, 10000.0, NULL);
    assert_non_null(rope);
    float x[4] = {1, 2, 3, 4};
    const int pos = 3;
    rope_apply(rope, x, 4, 1, 1, 4, &pos);
    double c0 = cos(3.0), s0 = sin(3.0), c1 = cos(0.03), s1 = sin(0.03);
    const double want[4] = {1 * c0 - 3 * s0, 2 * c1 - 4 * s1,
                            3 * c0 + 1 * s0, 4 * c1 + 2 * s1};
    for (int i = 0; i < 4; i++)
        assert_true(fabs(x[i] - want[i]) <= 1e-6 * 5);

    /* Position 0 is the identity, bit for bit. */
    float y[4] = {1.5f, -2.25f, 3e-3f, -4e5f};
    const float y0[4] = {1.5f, -2.25f, 3e-3f, -4e5f};
    const int zero = 0;
    rope_apply(rope, y, 4, 1, 1, 4, &zero);
    assert_memory_equal(y, y0, sizeof y);
    rope_destroy(&rope);
}

/* Rotates random rows and checks every rotated pair against a reference,
 * every other entry (a head's tail past rot_dim, the row's padding) for
 * being untouched. exact_angle picks the all-float64 reference. */
static void s_case(testrng_t *rng, int rot_dim, double theta, int n_heads,
                   int head_stride, int pad, const int *pos, int n_rows,
                   bool exact_angle, double tol)
{
    rope_t *rope = rope_new(rot_dim, theta, NULL);
    assert_non_null(rope);
    int ld = n_heads * head_stride + pad;
    float *x = malloc((size_t)n_rows * ld * sizeof *x);
    float *x0 = malloc((size_t)n_rows * ld * sizeof *x0);
    assert_true(x && x0);
    testrng_fill(rng, x0, (size_t)n_rows * ld, 1.0f);
    for (int r = 0; r < n_rows; r++)
        for (int j = n_heads * head_stride; j < ld; j++)
            x0[(size_t)r * ld + j] = s_sentinel;
    memcpy(x, x0, (size_t)n_rows * ld * sizeof *x);

    rope_apply(rope, x, ld, n_rows, n_heads, head_stride, pos);

    int half = rot_dim / 2;
    for (int r = 0; r < n_rows; r++) {
        for (int h = 0; h < n_heads; h++) {
            size_t base = (size_t)r * ld + (size_t)h * head_stride;
            for (int i = 0; i < half; i++) {
                double ang = exact_angle
                                 ? pos[r] * pow(theta, -2.0 * i / rot_dim)
                                 : (double)s_angle_f32(pos[r], i, rot_dim,
                                                       theta);
                double x1 = x0[base + i], x2 = x0[base + i + half];
                double w1 = x1 * cos(ang) - x2 * sin(ang);
                double w2 = x2 * cos(ang) + x1 * sin(ang);
                double bound = tol * (fabs(x1) + fabs(x2));
                if (!(fabs(x[base + i] - w1) <= bound &&
                      fabs(x[base + i + half] - w2) <= bound))
                    fail_msg("row %d pos %d head %d pair %d of rot %d: got "
                             "(%.9g, %.9g) want (%.9g, %.9g)", r, pos[r], h,
                             i, rot_dim, x[base + i], x[base + i + half], w1,
                             w2);
            }
            for (int j = rot_dim; j < head_stride; j++)
                assert_true(x[base + j] == x0[base + j]);
        }
        for (int j = n_heads * head_stride; j < ld; j++)
            assert_true(x[(size_t)r * ld + j] == s_sentinel);
    }
    free(x0);
    free(x);
    rope_destroy(&rope);
}

static void test_apply_random(void **state)
{
    (void)state;
    static const int pos[] = {0, 1, 3, 7, 17, 33, 65, 1000, 4095, 4096,
                              32767, 131071};
    const int n_rows = (int)(sizeof pos / sizeof pos[0]);
    testrng_t rng;
    testrng_init(&rng, 41);
    /* Whole heads, one or several. */
    s_case(&rng, 2, 10000.0, 1, 2, 0, pos, n_rows, false, 1e-6);
    s_case(&rng, 64, 10000.0, 1, 64, 0, pos, n_rows, false, 1e-6);
    s_case(&rng, 128, 500000.0, 4, 128, 3, pos, n_rows, false, 1e-6);
    s_case(&rng, 6, 10000.0, 3, 6, 1, pos, n_rows, false, 1e-6);
    /* Partial rotation: heads wider than rot_dim keep their tails. */
    s_case(&rng, 16, 10000.0, 4, 33, 5, pos, n_rows, false, 1e-6);
    s_case(&rng, 32, 1e6, 3, 64, 0, pos, n_rows, false, 1e-6);
    s_case(&rng, 2, 100.0, 5, 7, 2, pos, n_rows, false, 1e-6);
}

/* The frequencies themselves against float64: at small positions the float32
 * angle is within a few ulp of the exact one. */
static void test_apply_exact_frequencies(void **state)
{
    (void)state;
    static const int pos[] = {0, 1, 2, 3, 5, 7};
    const int n_rows = (int)(sizeof pos / sizeof pos[0]);
    testrng_t rng;
    testrng_init(&rng, 42);
    s_case(&rng, 64, 10000.0, 2, 64, 0, pos, n_rows, true, 1e-5);
    s_case(&rng, 128, 500000.0, 1, 160, 0, pos, n_rows, true, 1e-5);
    s_case(&rng, 10, 10000.0, 3, 17, 1, pos, n_rows, true, 1e-5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_bad_args),
        cmocka_unit_test(test_new_out_of_memory),
        cmocka_unit_test(test_new_destroy),
        cmocka_unit_test(test_hand),
        cmocka_unit_test(test_apply_random),
        cmocka_unit_test(test_apply_exact_frequencies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
