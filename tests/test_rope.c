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

/* One s_case() shape: rotary width, theta, heads, head stride, padding. */
typedef struct s_shape {
    int rot;
    double theta;
    int heads, stride, pad;
} s_shape_t;

/* s_case() of every shape over the positions, from one generator. */
static void s_cases(uint64_t seed, const s_shape_t *shapes, size_t n_shapes, const int *pos,
                    int n_rows, bool exact, double tol)
{
    testrng_t rng;
    testrng_init(&rng, seed);
    for (size_t i = 0; i < n_shapes; i++)
        s_case(&rng, shapes[i].rot, shapes[i].theta, shapes[i].heads, shapes[i].stride,
               shapes[i].pad, pos, n_rows, exact, tol);
}

static void test_apply_random(void **state)
{
    (void)state;
    static const int pos[] = {0, 1, 3, 7, 17, 33, 65, 1000, 4095, 4096,
                              32767, 131071};
    static const s_shape_t shapes[] = {
        /* Whole heads, one or several. */
        {2, 10000.0, 1, 2, 0}, {64, 10000.0, 1, 64, 0}, {128, 500000.0, 4, 128, 3},
        {6, 10000.0, 3, 6, 1},
        /* Partial rotation: heads wider than rot_dim keep their tails. */
        {16, 10000.0, 4, 33, 5}, {32, 1e6, 3, 64, 0}, {2, 100.0, 5, 7, 2},
    };
    s_cases(41, shapes, sizeof shapes / sizeof shapes[0], pos,
            (int)(sizeof pos / sizeof pos[0]), false, 1e-6);
}

/* The frequencies themselves against float64: at small positions the float32
 * angle is within a few ulp of the exact one. */
static void test_apply_exact_frequencies(void **state)
{
    (void)state;
    static const int pos[] = {0, 1, 2, 3, 5, 7};
    static const s_shape_t shapes[] = {
        {64, 10000.0, 2, 64, 0}, {128, 500000.0, 1, 160, 0}, {10, 10000.0, 3, 17, 1},
    };
    s_cases(42, shapes, sizeof shapes / sizeof shapes[0], pos,
            (int)(sizeof pos / sizeof pos[0]), true, 1e-5);
}

/* ---- YaRN ---------------------------------------------------------- */

/* transformers' YaRN from its formulas, all float64: inverse frequencies
 * inv: (rot_dim / 2) and the attention factor. */
static double s_yarn_ref(double *inv, int rot_dim, const rope_yarn_t *y)
{
    double bf = y->beta_fast != 0.0 ? y->beta_fast : 32.0;
    double bs = y->beta_slow != 0.0 ? y->beta_slow : 1.0;
    double denom = 2.0 * log(y->theta);
    double low = rot_dim * log(y->original_max_pos / (bf * 2.0 * M_PI)) / denom;
    double high = rot_dim * log(y->original_max_pos / (bs * 2.0 * M_PI)) / denom;
    if (y->truncate) {
        low = floor(low);
        high = ceil(high);
    }
    low = fmax(low, 0.0);
    high = fmin(high, rot_dim - 1.0);
    if (low == high)
        high += 0.001;
    for (int i = 0; i < rot_dim / 2; i++) {
        double extra = pow(y->theta, -2.0 * i / rot_dim);
        double ramp = fmin(fmax((i - low) / (high - low), 0.0), 1.0);
        /* weight of the extrapolated frequency is 1 - ramp */
        inv[i] = extra / y->factor * ramp + extra * (1.0 - ramp);
    }
    if (y->attention_factor != 0.0)
        return y->attention_factor;
    double m = y->factor <= 1.0 ? 1.0 : 0.1 * log(y->factor) + 1.0;
    if (y->mscale != 0.0 && y->mscale_all_dim != 0.0 && y->factor > 1.0)
        m = (0.1 * y->mscale * log(y->factor) + 1.0) /
            (0.1 * y->mscale_all_dim * log(y->factor) + 1.0);
    return m;
}

/* Frequencies and attention factor against the float64 formulas, then
 * rotations of random rows: the reference takes the kernel's float32 angle
 * (pos * inv_freq, as the contract says) and does cos, sin, scale and the
 * rotation in float64. Returns the largest relative frequency error. */
static double s_yarn_case(testrng_t *rng, int rot_dim, const rope_yarn_t *y,
                          int n_heads, int head_stride)
{
    rope_t *rope = rope_new_yarn(rot_dim, y, NULL);
    assert_non_null(rope);
    int half = rot_dim / 2;
    double inv[256];
    assert_true(half <= 256);
    double attn = s_yarn_ref(inv, rot_dim, y);
    assert_true(fabs(rope_attention_factor(rope) - attn) <= 1e-7 * attn);
    double max_rel = 0.0;
    for (int i = 0; i < half; i++) {
        double rel = fabs(rope_inv_freq(rope, i) - inv[i]) / inv[i];
        if (!(rel <= 2e-6))
            fail_msg("rot %d pair %d: inv_freq %.9g want %.9g", rot_dim, i,
                     rope_inv_freq(rope, i), inv[i]);
        max_rel = fmax(max_rel, rel);
    }

    static const int pos[] = {0, 1, 2, 7, 8, 100, 511, 4095, 4096, 131071};
    const int n_rows = (int)(sizeof pos / sizeof pos[0]);
    int ld = n_heads * head_stride;
    float *x = malloc((size_t)n_rows * ld * sizeof *x);
    float *x0 = malloc((size_t)n_rows * ld * sizeof *x0);
    assert_true(x && x0);
    testrng_fill(rng, x0, (size_t)n_rows * ld, 1.0f);
    memcpy(x, x0, (size_t)n_rows * ld * sizeof *x);
    rope_apply(rope, x, ld, n_rows, n_heads, head_stride, pos);
    for (int r = 0; r < n_rows; r++)
        for (int h = 0; h < n_heads; h++) {
            size_t base = (size_t)r * ld + (size_t)h * head_stride;
            for (int i = 0; i < half; i++) {
                double ang = (double)((float)pos[r] * rope_inv_freq(rope, i));
                double x1 = x0[base + i], x2 = x0[base + i + half];
                double w1 = attn * (x1 * cos(ang) - x2 * sin(ang));
                double w2 = attn * (x2 * cos(ang) + x1 * sin(ang));
                double bound = 1e-6 * attn * (fabs(x1) + fabs(x2));
                if (!(fabs(x[base + i] - w1) <= bound &&
                      fabs(x[base + i + half] - w2) <= bound))
                    fail_msg("yarn row %d pos %d head %d pair %d: got "
                             "(%.9g, %.9g) want (%.9g, %.9g)", r, pos[r], h, i,
                             x[base + i], x[base + i + half], w1, w2);
            }
            for (int j = rot_dim; j < head_stride; j++)
                assert_true(x[base + j] == x0[base + j]);
        }
    free(x0);
    free(x);
    rope_destroy(&rope);
    return max_rel;
}

/* gpt_oss-A's rope_parameters (factor 32, original 4096, theta 150000, beta
 * 32 / 1, truncate false, head_dim 16), checked against the formulas and by
 * hand: the correction range is [2.023, 4.349] in pair indices, so pairs 0-2
 * keep their frequency exactly, pairs 5-7 are divided by 32, pairs 3 and 4
 * blend; the attention factor is 0.1 ln 32 + 1 = 1.34657. */
static void test_yarn_gpt_oss(void **state)
{
    (void)state;
    const rope_yarn_t y = {.theta = 150000.0, .factor = 32.0,
                           .original_max_pos = 4096.0, .beta_fast = 32.0,
                           .beta_slow = 1.0, .truncate = false};
    testrng_t rng;
    testrng_init(&rng, 43);
    double rel = s_yarn_case(&rng, 16, &y, 4, 16);
    print_message("yarn gpt_oss-A: max relative inv_freq error %.3g\n", rel);

    rope_t *rope = rope_new_yarn(16, &y, NULL);
    assert_non_null(rope);
    assert_true(fabs(rope_attention_factor(rope) - 1.3465735902799727) < 1e-7);
    assert_true(rope_inv_freq(rope, 0) == 1.0f);
    for (int i = 0; i < 8; i++) {
        double plain = pow(150000.0, -2.0 * i / 16);
        double got = rope_inv_freq(rope, i);
        if (i <= 2)
            assert_true(fabs(got - plain) <= 1e-6 * plain);
        else if (i >= 5)
            assert_true(fabs(got - plain / 32.0) <= 1e-6 * plain / 32.0);
        else
            assert_true(got < plain * (1 - 1e-3) && got > plain / 32.0 * 1.01);
    }
    /* Pair 3's ramp is (3 - low) / (high - low), low and high by hand. */
    double low = 16 * log(4096 / (64 * M_PI)) / (2 * log(150000.0));
    double high = 16 * log(4096 / (2 * M_PI)) / (2 * log(150000.0));
    assert_true(fabs(low - 2.0230) < 1e-3 && fabs(high - 4.3490) < 1e-3);
    double r3 = (3 - low) / (high - low), p3 = pow(150000.0, -6.0 / 16);
    double want3 = p3 / 32 * r3 + p3 * (1 - r3);
    assert_true(fabs(rope_inv_freq(rope, 3) - want3) <= 1e-6 * want3);
    rope_destroy(&rope);
}

/* Other settings: truncate (floor/ceil of the range), a given attention
 * factor, deepseek's mscale pair, factor <= 1 (attention factor 1), partial
 * rotation, wide heads, a range that clamps at 0 and at rot_dim - 1. */
static void test_yarn_variants(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 44);
    rope_yarn_t y = {.theta = 150000.0, .factor = 32.0,
                     .original_max_pos = 4096.0, .beta_fast = 32.0,
                     .beta_slow = 1.0, .truncate = true};
    s_yarn_case(&rng, 16, &y, 2, 16);
    y.truncate = false;
    y.attention_factor = 0.75;
    s_yarn_case(&rng, 64, &y, 2, 64);
    rope_yarn_t ds = {.theta = 10000.0, .factor = 40.0,
                      .original_max_pos = 4096.0, .truncate = true,
                      .mscale = 1.0, .mscale_all_dim = 0.707};
    s_yarn_case(&rng, 64, &ds, 3, 80);   /* defaults for beta 32 / 1 */
    rope_yarn_t small = {.theta = 10000.0, .factor = 0.5,
                         .original_max_pos = 2048.0, .beta_fast = 32.0,
                         .beta_slow = 1.0};
    s_yarn_case(&rng, 128, &small, 1, 128);
    rope_t *r = rope_new_yarn(8, &small, NULL);
    assert_non_null(r);
    assert_true(rope_attention_factor(r) == 1.0f);
    rope_destroy(&r);
    /* Tiny original context: the fast boundary falls below 0; huge: the
     * slow one beyond rot_dim - 1. */
    rope_yarn_t lo = {.theta = 10000.0, .factor = 4.0,
                      .original_max_pos = 16.0, .beta_fast = 32.0,
                      .beta_slow = 1.0};
    s_yarn_case(&rng, 32, &lo, 2, 40);
    rope_yarn_t hi = {.theta = 10.0, .factor = 4.0, .original_max_pos = 1e9,
                      .beta_fast = 32.0, .beta_slow = 1.0, .truncate = true};
    s_yarn_case(&rng, 8, &hi, 2, 8);
    /* A zero-width range: the ramp gets width 0.001 and is a step. */
    rope_yarn_t step = {.theta = 10.0, .factor = 4.0, .original_max_pos = 1e9,
                        .beta_fast = 1e8, .beta_slow = 1.0, .truncate = true};
    s_yarn_case(&rng, 8, &step, 1, 8);
}

static void test_yarn_bad_args(void **state)
{
    (void)state;
    const rope_yarn_t good = {.theta = 150000.0, .factor = 32.0,
                              .original_max_pos = 4096.0};
    rope_yarn_t bad[8];
    for (int i = 0; i < 8; i++)
        bad[i] = good;
    bad[0].factor = 0.0;
    bad[1].factor = -2.0;
    bad[2].original_max_pos = 0.0;
    bad[3].beta_fast = -1.0;
    bad[4].beta_slow = NAN;
    bad[5].attention_factor = -1.0;
    bad[6].theta = 0.0;
    bad[7].factor = INFINITY;
    for (int i = 0; i < 8; i++) {
        err_t err = {0};
        errno = 0;
        assert_null(rope_new_yarn(16, &bad[i], &err));
        assert_int_equal(errno, EINVAL);
        assert_int_equal(err.code, EINVAL);
    }
    errno = 0;
    assert_null(rope_new_yarn(15, &good, NULL));
    assert_int_equal(errno, EINVAL);
    mem_fail_after(1);
    errno = 0;
    rope_t *r = rope_new_yarn(16, &good, NULL);
    mem_fail_after(-1);
    assert_null(r);
    assert_int_equal(errno, ENOMEM);
    /* The default RoPE has attention factor 1 and its plain frequencies. */
    r = rope_new(16, 150000.0, NULL);
    assert_non_null(r);
    assert_true(rope_attention_factor(r) == 1.0f);
    assert_true(rope_inv_freq(r, 0) == 1.0f);
    rope_destroy(&r);
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
        cmocka_unit_test(test_yarn_gpt_oss),
        cmocka_unit_test(test_yarn_variants),
        cmocka_unit_test(test_yarn_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
