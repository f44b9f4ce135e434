/* test_mxfp4: mxfp4_value() and mxfp4_dequant() against the format's
 * definition evaluated in float64: E2M1 from its bit fields (subnormal when
 * the exponent field is 0), E8M0 as 2^(S - 127), low nibble first; every
 * byte under every edge scale (the largest overflow float32 to inf, as
 * torch's float32 ldexp does), and a hand-made block.
 */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/mxfp4.h"

/* E2M1 by definition: sign s, exponent field e (bias 1), mantissa bit m. */
static double s_e2m1(unsigned code)
{
    int s = (code >> 3) & 1, e = (code >> 1) & 3, m = code & 1;
    double mag = e == 0 ? 0.5 * m : ldexp(1.0 + 0.5 * m, e - 1);
    return s ? -mag : mag;
}

/* A float64 value as float32 holds it: exact here, or +-inf beyond range. */
static double s_f32(double x)
{
    return fabs(x) > FLT_MAX ? copysign(INFINITY, x) : x;
}

static void test_values(void **state)
{
    (void)state;
    for (unsigned c = 0; c < 16; c++) {
        assert_true(mxfp4_value(c) == s_e2m1(c));
        assert_true(!!signbit(mxfp4_value(c)) == (c >= 8));
    }
    assert_true(mxfp4_value(7) == 6.0f && mxfp4_value(15) == -6.0f);
}

/* Block b holds the 16 bytes 16 b .. 16 b + 15 (every byte once over 16
 * blocks), under scale scales[b % n_scales]. */
static void test_every_byte(void **state)
{
    (void)state;
    static const uint8_t edge[] = {0, 1, 100, 126, 127, 128, 200, 253, 254};
    const size_t n_scales = sizeof edge / sizeof edge[0];
    for (size_t shift = 0; shift < n_scales; shift++) {
        uint8_t blocks[16 * 16], scales[16];
        for (int i = 0; i < 256; i++)
            blocks[i] = (uint8_t)i;
        for (int b = 0; b < 16; b++)
            scales[b] = edge[(b + shift) % n_scales];
        float out[16 * 32 + 1];
        out[16 * 32] = 42.0f;
        mxfp4_dequant(out, blocks, scales, 16);
        for (int b = 0; b < 16; b++) {
            double scale = pow(2.0, (double)scales[b] - 127.0);
            for (int i = 0; i < 16; i++) {
                uint8_t byte = blocks[b * 16 + i];
                double lo = s_f32(s_e2m1(byte & 15) * scale);
                double hi = s_f32(s_e2m1(byte >> 4) * scale);
                if (!(out[b * 32 + 2 * i] == lo &&
                      out[b * 32 + 2 * i + 1] == hi))
                    fail_msg("byte 0x%02x scale %u: got (%g, %g) want (%g, "
                             "%g)", byte, scales[b], out[b * 32 + 2 * i],
                             out[b * 32 + 2 * i + 1], lo, hi);
            }
        }
        assert_true(out[16 * 32] == 42.0f);
    }
}

/* By hand: byte 0x72 is (lo 2, hi 7) = (1, 6); 0xf9 is (-0.5, -6); scale
 * 128 doubles them, 125 quarters them; 255 is NaN. */
static void test_hand(void **state)
{
    (void)state;
    uint8_t blocks[3 * 16];
    memset(blocks, 0, sizeof blocks);
    blocks[0] = 0x72;
    blocks[15] = 0xf9;
    blocks[16] = 0x72;
    blocks[32] = 0x72;
    const uint8_t scales[3] = {128, 125, 255};
    float out[3 * 32];
    mxfp4_dequant(out, blocks, scales, 3);
    assert_true(out[0] == 2.0f && out[1] == 12.0f);
    assert_true(out[30] == -1.0f && out[31] == -12.0f);
    for (int i = 2; i < 30; i++)
        assert_true(out[i] == 0.0f);
    assert_true(out[32] == 0.25f && out[33] == 1.5f);
    for (int i = 64; i < 96; i++)
        assert_true(isnan(out[i]));
    mxfp4_dequant(NULL, NULL, NULL, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_every_byte),
        cmocka_unit_test(test_hand),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
