/* matmul_f16: F16 and BF16 weights (kernels/matmul_tile.h has the kernels
 * and their numerics; above GEMM_SMALL_MAX_ROWS rows on the AVX-512 path,
 * kernels/matmul_f16_prefill.c). F16 on the AVX2 path needs F16C (every
 * AVX2 CPU we know has it; without it, the portable product). */
#include <stdbool.h>

#include "kernels/gemm_small.h"
#include "kernels/matmul_private.h"
#include "kernels/matmul_tile.h"

#define S_AVX2 __attribute__((target("avx2,fma,f16c")))
#define S_AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))

S_AVX2 static void s_part_f16_avx2(const tensor_t *w, float *y, int ldy, const float *x,
                                   int ldx, int m, int64_t j0, int64_t j1)
{
    mt_part256(w, y, ldy, x, ldx, m, j0, j1, MT_F16);
}

S_AVX2 static void s_part_bf16_avx2(const tensor_t *w, float *y, int ldy, const float *x,
                                    int ldx, int m, int64_t j0, int64_t j1)
{
    mt_part256(w, y, ldy, x, ldx, m, j0, j1, MT_BF16);
}

S_AVX2 static void s_dec_f16_avx2(const tensor_t *w, int64_t r, int64_t c0, int64_t n,
                                  float *out)
{
    mt_decode256(w, r, c0, n, out, MT_F16);
}

S_AVX2 static void s_dec_bf16_avx2(const tensor_t *w, int64_t r, int64_t c0, int64_t n,
                                   float *out)
{
    mt_decode256(w, r, c0, n, out, MT_BF16);
}

S_AVX512 static void s_part_f16_avx512(const tensor_t *w, float *y, int ldy, const float *x,
                                       int ldx, int m, int64_t j0, int64_t j1)
{
    mt_part512(w, y, ldy, x, ldx, m, j0, j1, MT_F16);
}

S_AVX512 static void s_part_bf16_avx512(const tensor_t *w, float *y, int ldy, const float *x,
                                        int ldx, int m, int64_t j0, int64_t j1)
{
    mt_part512(w, y, ldy, x, ldx, m, j0, j1, MT_BF16);
}

S_AVX512 static void s_dec_f16_avx512(const tensor_t *w, int64_t r, int64_t c0, int64_t n,
                                      float *out)
{
    mt_decode512(w, r, c0, n, out, MT_F16);
}

S_AVX512 static void s_dec_bf16_avx512(const tensor_t *w, int64_t r, int64_t c0, int64_t n,
                                       float *out)
{
    mt_decode512(w, r, c0, n, out, MT_BF16);
}

void matmul_f16(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                const tensor_t *w, int m)
{
    const bool bf = w->dtype == DTYPE_BF16;
    switch (compute_path(cx)) {
    case COMPUTE_PATH_AVX512:
        if (m > GEMM_SMALL_MAX_ROWS) {
            matmul_f16_prefill(cx, y, ldy, x, ldx, w, m);
            return;
        }
        matmul_run(cx, y, ldy, x, ldx, w, m, bf ? s_part_bf16_avx512 : s_part_f16_avx512,
                   bf ? s_dec_bf16_avx512 : s_dec_f16_avx512, 1);
        return;
    case COMPUTE_PATH_AVX2:
        if (bf || __builtin_cpu_supports("f16c")) {
            matmul_run(cx, y, ldy, x, ldx, w, m, bf ? s_part_bf16_avx2 : s_part_f16_avx2,
                       bf ? s_dec_bf16_avx2 : s_dec_f16_avx2, 1);
            return;
        }
        break;
    default:
        break;
    }
    matmul_generic(cx, y, ldy, x, ldx, w, m);
}

matmul_decode_fn *matmul_f16_decoder(compute_t *cx, const tensor_t *w)
{
    const bool bf = w->dtype == DTYPE_BF16;
    switch (compute_path(cx)) {
    case COMPUTE_PATH_AVX512:
        return bf ? s_dec_bf16_avx512 : s_dec_f16_avx512;
    case COMPUTE_PATH_AVX2:
        return bf ? s_dec_bf16_avx2 : __builtin_cpu_supports("f16c") ? s_dec_f16_avx2 : NULL;
    default:
        return NULL;
    }
}
