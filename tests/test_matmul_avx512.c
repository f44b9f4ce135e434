/* test_matmul_avx512: the AVX-512 kernels of kernels/matmul_tile.h (tiles and
 * decoders of F16, BF16, F8_E4M3, MXFP4) run on scalar stand-ins of their
 * intrinsics (tests/avx512emu.h), on every machine, against a scalar model of
 * the order they promise: entry (i, j) accumulates fma(x[p], w[p]) in lane
 * p mod 16 over increasing p, then the fixed reduction, bit for bit; and the
 * decoders against tensor_row_range_to_f32. test_matmul runs the real
 * instructions where the CPU has them; this checks the kernels' indexing,
 * scales, tails and splits where it has not (the development machine).
 */
#define MT_EMULATE_AVX512 1

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/tensor.h"
#include "kernels/compute.h"
#include "kernels/matmul_tile.h"
#include "tests/testutil.h"

/* The kernels, compiled for the instructions the stand-ins run on. */
__attribute__((target("avx2,fma,f16c"))) static void
s_part(const tensor_t *w, float *y, int ldy, const float *x, int ldx, int m, int64_t j0,
       int64_t j1, int fmt)
{
    switch (fmt) {
    case MT_F16: mt_part512(w, y, ldy, x, ldx, m, j0, j1, MT_F16); break;
    case MT_BF16: mt_part512(w, y, ldy, x, ldx, m, j0, j1, MT_BF16); break;
    case MT_FP8: mt_part512(w, y, ldy, x, ldx, m, j0, j1, MT_FP8); break;
    default: mt_part512(w, y, ldy, x, ldx, m, j0, j1, MT_MXFP4); break;
    }
}

__attribute__((target("avx2,fma,f16c"))) static void
s_decode(const tensor_t *w, int64_t r, int64_t c0, int64_t n, float *out, int fmt)
{
    switch (fmt) {
    case MT_F16: mt_decode512(w, r, c0, n, out, MT_F16); break;
    case MT_BF16: mt_decode512(w, r, c0, n, out, MT_BF16); break;
    case MT_FP8: mt_decode512(w, r, c0, n, out, MT_FP8); break;
    default: mt_decode512(w, r, c0, n, out, MT_MXFP4); break;
    }
}

/* What the AVX-512 path computes for one entry. */
static float s_model(const float *x, const float *w, int64_t k)
{
    float acc[16] = {0};
    for (int64_t p = 0; p < k; p++)
        acc[p % 16] = fmaf(x[p], w[p], acc[p % 16]);
    emu_ps v;
    memcpy(&v, acc, sizeof v);
    return emu_reduce_add_ps(v);
}

static void *s_alloc(size_t n)
{
    void *p = calloc(n ? n : 1, 1);
    assert_non_null(p);
    return p;
}

static void test_avx512_kernels_emulated(void **state)
{
    (void)state;
    if (!compute_path_runs(COMPUTE_PATH_AVX2)) { /* the 256-bit parts are real */
        testutil_skip_unless_possible(false, "the stand-ins need AVX2, which this CPU lacks");
        return;
    }
    static const dtype_t dts[] = {DTYPE_F16, DTYPE_BF16, DTYPE_F8_E4M3, DTYPE_MXFP4};
    static const int fmts[] = {MT_F16, MT_BF16, MT_FP8, MT_MXFP4};
    testrng_t rng;
    testrng_init(&rng, 512);
    for (int trial = 0; trial < 200; trial++) {
        const int d = trial % 4;
        const dtype_t dt = dts[d];
        const int fmt = fmts[d];
        const int64_t n = 1 + (int64_t)(testrng_uniform(&rng) * 23);
        const int m = 1 + (int)(testrng_uniform(&rng) * 16);
        const int64_t k = dt == DTYPE_MXFP4 ? 32 * (1 + (int64_t)(testrng_uniform(&rng) * 12))
                                            : 1 + (int64_t)(testrng_uniform(&rng) * 300);
        const int bk = 16 * (1 + (int)(testrng_uniform(&rng) * 4));
        const int bn = 1 + (int)(testrng_uniform(&rng) * 9);
        const int64_t row0 = trial % 5;
        const size_t rb = dtype_row_bytes(dt, k), stride = rb + (trial % 3 == 0 ? 6 : 0);
        uint8_t *data = s_alloc(stride * (size_t)n + 64);
        float *tmp = s_alloc((size_t)k * sizeof(float));
        for (int64_t r = 0; r < n; r++) {
            if (dt == DTYPE_F8_E4M3 || dt == DTYPE_MXFP4) {
                for (size_t b = 0; b < rb; b++)
                    data[(size_t)r * stride + b] = (uint8_t)(testrng_uniform(&rng) * 256);
            } else {
                testrng_fill(&rng, tmp, (size_t)k, 1.0f);
                assert_int_equal(dtype_row_from_f32(dt, tmp, data + (size_t)r * stride, k), 0);
            }
        }
        const int64_t gr = (n + row0 + bn - 1) / bn, gc = (k + bk - 1) / bk;
        float *sc = s_alloc((size_t)(gr * (gc + 1)) * sizeof(float));
        for (int64_t i = 0; i < gr * (gc + 1); i++)
            sc[i] = (float)(0.001 + testrng_uniform(&rng) * 0.1);
        const size_t es = (size_t)(k / 32 + 3);
        uint8_t *e8 = s_alloc(es * (size_t)n);
        for (size_t i = 0; i < es * (size_t)n; i++)
            e8[i] = (uint8_t)(110 + testrng_uniform(&rng) * 30);
        tensor_t t = {.dtype = dt, .rows = n, .cols = k, .data = data, .row_stride = stride,
                      .scale_inv = sc, .block_n = bn, .block_k = bk, .row0 = row0,
                      .e8m0 = e8, .scale_stride = dt == DTYPE_MXFP4 ? es : (size_t)gc + 1};
        const int ldx = (int)k + 3, ldy = (int)n + 2;
        float *x = s_alloc((size_t)m * ldx * sizeof(float));
        testrng_fill(&rng, x, (size_t)m * ldx, 1.0f);
        float *y = s_alloc((size_t)m * ldy * sizeof(float));
        const int64_t split = n / 8 * 4; /* two chunks, cut at a multiple of 4 */
        s_part(&t, y, ldy, x, ldx, m, 0, split, fmt);
        s_part(&t, y, ldy, x, ldx, m, split, n, fmt);
        float *wr = s_alloc((size_t)k * sizeof(float)), *dec = s_alloc((size_t)k * sizeof(float));
        for (int64_t j = 0; j < n; j++) {
            tensor_row_to_f32(&t, j, wr);
            int64_t c0 = fmt == MT_FP8 ? bk * (j % 2) : fmt == MT_MXFP4 ? 32 * (j % 2) : j % 5;
            if (c0 > k)
                c0 = 0;
            s_decode(&t, j, c0, k - c0, dec, fmt);
            for (int64_t c = 0; c < k - c0; c++)
                if (!(dec[c] == wr[c0 + c] || (isnan(dec[c]) && isnan(wr[c0 + c]))))
                    fail_msg("%s decoder: row %ld col %ld: %a, tensor_row %a",
                             dtype_info(dt)->name, (long)j, (long)(c0 + c), dec[c], wr[c0 + c]);
            for (int i = 0; i < m; i++) {
                float want = s_model(x + (size_t)i * ldx, wr, k), got = y[(size_t)i * ldy + j];
                if (!(got == want || (isnan(got) && isnan(want))))
                    fail_msg("%s m=%d n=%ld k=%ld block %dx%d: entry (%d, %ld): %a, model %a",
                             dtype_info(dt)->name, m, (long)n, (long)k, bn, bk, i, (long)j,
                             got, want);
            }
        }
        free(dec);
        free(wr);
        free(y);
        free(x);
        free(e8);
        free(sc);
        free(tmp);
        free(data);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_avx512_kernels_emulated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
