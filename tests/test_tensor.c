/* test_tensor: the dtype table, the exact decoders against hand-made known
 * values (and against the formats' definitions, exhaustively where the
 * format is small), the encoders' rounding (nearest even, NaN kept, against
 * the CPU's own F16C conversion where it has one), tensor views (FP8's block
 * grid through row0, MXFP4's scales) and tensor_bytes.
 */
#include <errno.h>
#include <immintrin.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/tensor.h"
#include "tests/testutil.h"

static uint32_t s_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float s_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint16_t s_enc16(dtype_t dtype, float f)
{
    uint16_t h = 0;
    assert_int_equal(dtype_row_from_f32(dtype, &f, &h, 1), 0);
    return h;
}

static void test_table(void **state)
{
    (void)state;
    static const char *names[DTYPE_COUNT] = {"f32", "f16", "bf16", "f8_e4m3",
                                             "mxfp4", "q8_0", "q4_0"};
    for (int d = 0; d < DTYPE_COUNT; d++) {
        dtype_t got;
        assert_string_equal(dtype_info((dtype_t)d)->name, names[d]);
        assert_int_equal(dtype_parse(names[d], &got), 0);
        assert_int_equal(got, d);
    }
    dtype_t got;
    assert_int_equal(dtype_parse("bfloat16", &got), 0);
    assert_int_equal(got, DTYPE_BF16);
    assert_int_equal(dtype_parse("float16", &got), 0);
    assert_int_equal(got, DTYPE_F16);
    assert_int_equal(dtype_parse("float32", &got), 0);
    assert_int_equal(got, DTYPE_F32);
    errno = 0;
    assert_int_equal(dtype_parse("q5_k", &got), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(dtype_parse("", &got), -1);

    assert_int_equal(dtype_row_bytes(DTYPE_F32, 7), 28);
    assert_int_equal(dtype_row_bytes(DTYPE_F16, 7), 14);
    assert_int_equal(dtype_row_bytes(DTYPE_BF16, 7), 14);
    assert_int_equal(dtype_row_bytes(DTYPE_F8_E4M3, 7), 7);
    assert_int_equal(dtype_row_bytes(DTYPE_MXFP4, 64), 32);
    assert_int_equal(dtype_row_bytes(DTYPE_Q8_0, 64), 68);
    assert_int_equal(dtype_row_bytes(DTYPE_Q4_0, 64), 36);
    assert_int_equal(dtype_row_bytes(DTYPE_Q4_0, 48), 0);
    assert_int_equal(dtype_row_bytes(DTYPE_MXFP4, 31), 0);
    assert_int_equal(dtype_info(DTYPE_Q8_0)->block, 32);
    assert_int_equal(dtype_info(DTYPE_Q8_0)->block_bytes, 34);
}

static void test_f16_known(void **state)
{
    (void)state;
    assert_true(dtype_f16_value(0x3c00) == 1.0f);
    assert_true(dtype_f16_value(0xc000) == -2.0f);
    assert_true(dtype_f16_value(0x7bff) == 65504.0f);
    assert_true(dtype_f16_value(0x0001) == 0x1p-24f);
    assert_true(dtype_f16_value(0x03ff) == 1023.0f * 0x1p-24f);
    assert_true(dtype_f16_value(0x0400) == 0x1p-14f);
    assert_true(dtype_f16_value(0x3555) == 0x1.554p-2f);
    assert_true(dtype_f16_value(0x7c00) == INFINITY);
    assert_true(dtype_f16_value(0xfc00) == -INFINITY);
    assert_true(isnan(dtype_f16_value(0x7e00)));
    assert_true(isnan(dtype_f16_value(0xfc01)));
    assert_true(dtype_f16_value(0x8000) == 0.0f && signbit(dtype_f16_value(0x8000)));
    /* Every half: the definition, in double, and back through the encoder. */
    for (uint32_t h = 0; h < 65536; h++) {
        int e = (int)((h >> 10) & 31), mnt = (int)(h & 1023);
        double v = e == 0 ? ldexp(mnt, -24) : ldexp(1024 + mnt, e - 25);
        if (h & 0x8000)
            v = -v;
        float f = dtype_f16_value((uint16_t)h);
        if (e == 31) {
            assert_true(mnt ? isnan(f) : isinf(f));
            if (mnt)
                assert_true(isnan(dtype_f16_value(s_enc16(DTYPE_F16, f))));
            else
                assert_int_equal(s_enc16(DTYPE_F16, f), h);
            continue;
        }
        assert_true((double)f == v);
        assert_int_equal(s_enc16(DTYPE_F16, f), h);
    }
}

static void test_f16_rounding(void **state)
{
    (void)state;
    assert_int_equal(s_enc16(DTYPE_F16, 1.0f + 0x1p-11f), 0x3c00);      /* tie: even */
    assert_int_equal(s_enc16(DTYPE_F16, 1.0f + 3 * 0x1p-11f), 0x3c02);  /* tie: even */
    assert_int_equal(s_enc16(DTYPE_F16, 1.0f + 0x1.8p-11f), 0x3c01);
    assert_int_equal(s_enc16(DTYPE_F16, 65519.0f), 0x7bff);
    assert_int_equal(s_enc16(DTYPE_F16, 65520.0f), 0x7c00);
    assert_int_equal(s_enc16(DTYPE_F16, -1e6f), 0xfc00);
    assert_int_equal(s_enc16(DTYPE_F16, 0x1p-25f), 0x0000);             /* tie: even */
    assert_int_equal(s_enc16(DTYPE_F16, 0x1.000002p-25f), 0x0001);
    assert_int_equal(s_enc16(DTYPE_F16, 3 * 0x1p-25f), 0x0002);         /* tie: even */
    assert_int_equal(s_enc16(DTYPE_F16, 0x1.ff8p-15f), 0x03ff);
    assert_int_equal(s_enc16(DTYPE_F16, 0x1.ffap-15f), 0x03ff);
    assert_int_equal(s_enc16(DTYPE_F16, 0x1.ffcp-15f), 0x0400);         /* tie: up into normals */
    assert_int_equal(s_enc16(DTYPE_F16, -0x1p-30f), 0x8000);
    assert_true(isnan(dtype_f16_value(s_enc16(DTYPE_F16, NAN))));
    assert_true(isnan(dtype_f16_value(s_enc16(DTYPE_F16, s_float(0x7f800001u)))));
}

/* The CPU's conversion (round to nearest even), where it has F16C. */
__attribute__((target("f16c"))) static uint16_t s_hw_f16(float f)
{
    return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
}

static void test_f16_against_cpu(void **state)
{
    (void)state;
    if (!__builtin_cpu_supports("f16c")) {
        testutil_skip_unless_possible(false, "this CPU has no F16C to compare with");
        return;
    }
    testrng_t rng;
    testrng_init(&rng, 7);
    for (int i = 0; i < 200000; i++) {
        /* Exponents around half's range, every mantissa pattern. */
        uint32_t bits = (uint32_t)(testrng_uniform(&rng) * 4294967296.0);
        uint32_t exp = 96 + (uint32_t)(testrng_uniform(&rng) * 48); /* 2^-31 .. 2^16 */
        bits = (bits & 0x807fffffu) | (exp << 23);
        float f = s_float(bits);
        assert_int_equal(s_enc16(DTYPE_F16, f), s_hw_f16(f));
    }
}

static void test_bf16(void **state)
{
    (void)state;
    assert_true(dtype_bf16_value(0x3f80) == 1.0f);
    assert_true(dtype_bf16_value(0xc0a0) == -5.0f);
    assert_int_equal(s_enc16(DTYPE_BF16, 1.0f), 0x3f80);
    assert_int_equal(s_enc16(DTYPE_BF16, s_float(0x3f808000u)), 0x3f80); /* tie: even */
    assert_int_equal(s_enc16(DTYPE_BF16, s_float(0x3f818000u)), 0x3f82); /* tie: even */
    assert_int_equal(s_enc16(DTYPE_BF16, s_float(0x3f808001u)), 0x3f81);
    assert_int_equal(s_enc16(DTYPE_BF16, s_float(0x7f7fffffu)), 0x7f80); /* to inf */
    assert_int_equal(s_enc16(DTYPE_BF16, -INFINITY), 0xff80);
    assert_true(isnan(dtype_bf16_value(s_enc16(DTYPE_BF16, NAN))));
    /* A NaN whose payload sits in the low 16 bits stays NaN, not inf. */
    assert_true(isnan(dtype_bf16_value(s_enc16(DTYPE_BF16, s_float(0x7f800001u)))));
    for (uint32_t h = 0; h < 65536; h++) {
        float f = dtype_bf16_value((uint16_t)h);
        assert_int_equal(s_bits(f), h << 16);
        if (!isnan(f))
            assert_int_equal(s_enc16(DTYPE_BF16, f), h);
    }
}

static void test_e4m3(void **state)
{
    (void)state;
    assert_true(dtype_e4m3_value(0x00) == 0.0f);
    assert_true(signbit(dtype_e4m3_value(0x80)));
    assert_true(dtype_e4m3_value(0x01) == 0x1p-9f);
    assert_true(dtype_e4m3_value(0x07) == 7 * 0x1p-9f);
    assert_true(dtype_e4m3_value(0x08) == 0x1p-6f);
    assert_true(dtype_e4m3_value(0x38) == 1.0f);
    assert_true(dtype_e4m3_value(0x3c) == 1.5f);
    assert_true(dtype_e4m3_value(0x40) == 2.0f);
    assert_true(dtype_e4m3_value(0xc4) == -3.0f);
    assert_true(dtype_e4m3_value(0x7e) == 448.0f);
    assert_true(dtype_e4m3_value(0xfe) == -448.0f);
    assert_true(dtype_e4m3_value(0x78) == 256.0f);
    assert_true(isnan(dtype_e4m3_value(0x7f)));
    assert_true(isnan(dtype_e4m3_value(0xff)));
    for (int q = 0; q < 256; q++) {
        int e = (q >> 3) & 15, mnt = q & 7;
        if (e == 15 && mnt == 7)
            continue;
        double v = e == 0 ? ldexp(mnt, -9) : ldexp(8 + mnt, e - 10);
        if (q & 0x80)
            v = -v;
        assert_true((double)dtype_e4m3_value((uint8_t)q) == v);
    }
    static const float e2m1[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
    for (unsigned c = 0; c < 16; c++)
        assert_true(dtype_e2m1_value(c) == (c & 8 ? -e2m1[c & 7] : e2m1[c & 7]));
}

/* FP8 with a (2, 3) block grid over a (5, 7) matrix: partial edge blocks in
 * both directions, and a row view that starts inside a block row. */
static void test_fp8_tensor(void **state)
{
    (void)state;
    enum { R = 5, C = 7, BN = 2, BK = 3, GR = 3, GC = 3 };
    uint8_t q[R * C];
    float scale[GR * GC];
    for (int i = 0; i < R * C; i++)
        q[i] = (uint8_t)(0x30 + i % 40); /* 0.5 .. about 15 */
    for (int i = 0; i < GR * GC; i++)
        scale[i] = 0.1f * (float)(i + 1);
    tensor_t t = {.dtype = DTYPE_F8_E4M3, .rows = R, .cols = C, .data = q,
                  .row_stride = C, .scale_inv = scale, .block_n = BN, .block_k = BK,
                  .scale_stride = GC};
    float row[C];
    for (int r = 0; r < R; r++) {
        tensor_row_to_f32(&t, r, row);
        for (int c = 0; c < C; c++) {
            float want = dtype_e4m3_value(q[r * C + c]) * scale[(r / BN) * GC + c / BK];
            assert_true(row[c] == want);
        }
    }
    tensor_t v = tensor_rows(&t, 3, 2); /* rows 3 and 4: block rows 1 and 2 */
    assert_int_equal(v.row0, 3);
    assert_int_equal(v.rows, 2);
    float vrow[C];
    for (int r = 0; r < 2; r++) {
        tensor_row_to_f32(&v, r, vrow);
        tensor_row_to_f32(&t, 3 + r, row);
        assert_memory_equal(vrow, row, sizeof row);
    }
    tensor_t vv = tensor_rows(&v, 1, 1); /* a view of a view: row 4 */
    tensor_row_to_f32(&vv, 0, vrow);
    tensor_row_to_f32(&t, 4, row);
    assert_memory_equal(vrow, row, sizeof row);
    float part[4];
    tensor_row_range_to_f32(&t, 2, 3, 4, part);
    tensor_row_to_f32(&t, 2, row);
    assert_memory_equal(part, row + 3, sizeof part);
    assert_int_equal(tensor_bytes(&t), R * C + GR * GC * 4);
    assert_int_equal(tensor_bytes(&v), 2 * C + 2 * GC * 4);      /* block rows 1, 2 */
    assert_int_equal(tensor_bytes(&vv), 1 * C + 1 * GC * 4);
    uint8_t dst[8];
    errno = 0;
    assert_int_equal(dtype_row_from_f32(DTYPE_F8_E4M3, (float[1]){1}, dst, 1), -1);
    assert_int_equal(errno, EINVAL);
}

static void test_mxfp4_tensor(void **state)
{
    (void)state;
    /* Two rows of 64 values; row 1's second block has scale 255 (NaN). */
    uint8_t blocks[2][32];
    uint8_t scales[2][2] = {{127, 128}, {0, 255}};
    for (int r = 0; r < 2; r++)
        for (int i = 0; i < 32; i++)
            blocks[r][i] = (uint8_t)((i * 7 + r) & 0xff);
    tensor_t t = {.dtype = DTYPE_MXFP4, .rows = 2, .cols = 64, .data = blocks,
                  .row_stride = 32, .e8m0 = &scales[0][0], .scale_stride = 2};
    float row[64];
    tensor_row_to_f32(&t, 0, row);
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < 16; i++) {
            uint8_t byte = blocks[0][b * 16 + i];
            float s = b == 0 ? 1.0f : 2.0f;
            assert_true(row[b * 32 + 2 * i] == dtype_e2m1_value(byte & 15) * s);
            assert_true(row[b * 32 + 2 * i + 1] == dtype_e2m1_value(byte >> 4) * s);
        }
    /* 0x21: low nibble first, 0.5 then 1.0. */
    uint8_t one[16] = {0x21, 0x9f};
    uint8_t sc = 126;
    tensor_t u = {.dtype = DTYPE_MXFP4, .rows = 1, .cols = 32, .data = one,
                  .row_stride = 16, .e8m0 = &sc, .scale_stride = 1};
    float r1[32];
    tensor_row_to_f32(&u, 0, r1);
    assert_true(r1[0] == 0.25f && r1[1] == 0.5f && r1[2] == -3.0f && r1[3] == -0.25f);
    tensor_t v = tensor_rows(&t, 1, 1);
    tensor_row_to_f32(&v, 0, row);
    for (int i = 0; i < 16; i++) {
        uint8_t byte = blocks[1][i];
        assert_true(row[2 * i] == dtype_e2m1_value(byte & 15) * 0x1p-127f);
    }
    for (int i = 32; i < 64; i++)
        assert_true(isnan(row[i]));
    assert_int_equal(tensor_bytes(&t), 2 * 32 + 2 * 2);
    assert_int_equal(tensor_bytes(&v), 32 + 2);
}

static void test_q_blocks(void **state)
{
    (void)state;
    /* Q8_0: d = 0.5 (half 0x3800), qs = -16 .. 15. */
    uint8_t q8[34] = {0x00, 0x38};
    for (int i = 0; i < 32; i++)
        q8[2 + i] = (uint8_t)(int8_t)(i - 16);
    tensor_t t8 = {.dtype = DTYPE_Q8_0, .rows = 1, .cols = 32, .data = q8, .row_stride = 34};
    float row[32];
    tensor_row_to_f32(&t8, 0, row);
    for (int i = 0; i < 32; i++)
        assert_true(row[i] == 0.5f * (float)(i - 16));
    /* Q4_0: d = -2 (0xc000); value j < 16 the low nibble of qs[j], then the
     * high nibbles, minus 8. */
    uint8_t q4[18] = {0x00, 0xc0};
    for (int i = 0; i < 16; i++)
        q4[2 + i] = (uint8_t)(i | ((15 - i) << 4));
    tensor_t t4 = {.dtype = DTYPE_Q4_0, .rows = 1, .cols = 32, .data = q4, .row_stride = 18};
    tensor_row_to_f32(&t4, 0, row);
    for (int i = 0; i < 16; i++) {
        assert_true(row[i] == -2.0f * (float)(i - 8));
        assert_true(row[16 + i] == -2.0f * (float)(15 - i - 8));
    }
    assert_int_equal(tensor_bytes(&t4), 18);

    /* The encoders on x = j - 16, worked out by hand from ggml's reference:
     * Q8_0 d = 16 / 127 (half 0x3008), q = round(x * 127 / 16);
     * Q4_0 max = -16, d = 2 (0x4000), q = min(15, (int)(x / 2 + 8.5)). */
    float x[32];
    for (int j = 0; j < 32; j++)
        x[j] = (float)(j - 16);
    uint8_t e8[34], e4[18];
    assert_int_equal(dtype_row_from_f32(DTYPE_Q8_0, x, e8, 32), 0);
    assert_int_equal(e8[0] | e8[1] << 8, 0x3008);
    assert_int_equal((int8_t)e8[2], -127);
    assert_int_equal((int8_t)e8[2 + 16], 0);
    assert_int_equal((int8_t)e8[2 + 31], 119);
    assert_int_equal((int8_t)e8[2 + 1], -119);   /* -15 * 7.9375 = -119.06 */
    assert_int_equal(dtype_row_from_f32(DTYPE_Q4_0, x, e4, 32), 0);
    assert_int_equal(e4[0] | e4[1] << 8, 0x4000);
    assert_int_equal(e4[2 + 0], 0x80);
    assert_int_equal(e4[2 + 15], 0xf8);
    assert_int_equal(e4[2 + 1], 0x91); /* x = -15: 1; x = 1: 9 */
    errno = 0;
    assert_int_equal(dtype_row_from_f32(DTYPE_Q4_0, x, e4, 16), -1);
    assert_int_equal(errno, EINVAL);
}

static void test_views_and_f32(void **state)
{
    (void)state;
    float data[3 * 4];
    for (int i = 0; i < 12; i++)
        data[i] = (float)i;
    tensor_t t = tensor_f32(data, 3, 4);
    assert_int_equal(t.row_stride, 16);
    assert_int_equal(tensor_bytes(&t), 48);
    tensor_t v = tensor_rows(&t, 1, 2);
    float row[4];
    tensor_row_to_f32(&v, 1, row);
    assert_memory_equal(row, data + 8, sizeof row);
    float half[4];
    uint16_t enc[4];
    assert_int_equal(dtype_row_from_f32(DTYPE_F16, data + 4, enc, 4), 0);
    tensor_t h = {.dtype = DTYPE_F16, .rows = 1, .cols = 4, .data = enc, .row_stride = 8};
    tensor_row_to_f32(&h, 0, half);
    assert_memory_equal(half, data + 4, sizeof half);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_f16_known),
        cmocka_unit_test(test_f16_rounding),
        cmocka_unit_test(test_f16_against_cpu),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_e4m3),
        cmocka_unit_test(test_fp8_tensor),
        cmocka_unit_test(test_mxfp4_tensor),
        cmocka_unit_test(test_q_blocks),
        cmocka_unit_test(test_views_and_f32),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
