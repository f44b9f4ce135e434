/* matmul_mxfp4: MXFP4 weights (gpt-oss experts): E2M1 codes through a
 * 16-entry table permute, times 2^(s - 127) per block of 32, exact
 * (kernels/matmul_tile.h). */
#include "kernels/matmul_private.h"
#include "kernels/matmul_tile.h"

#define S_AVX2 __attribute__((target("avx2,fma,f16c")))
#define S_AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))

S_AVX2 static void s_part_avx2(const tensor_t *w, float *y, int ldy, const float *x, int ldx,
                               int m, int64_t j0, int64_t j1)
{
    mt_part256(w, y, ldy, x, ldx, m, j0, j1, MT_MXFP4);
}

S_AVX2 static void s_dec_avx2(const tensor_t *w, int64_t r, int64_t c0, int64_t n, float *out)
{
    mt_decode256(w, r, c0, n, out, MT_MXFP4);
}

S_AVX512 static void s_part_avx512(const tensor_t *w, float *y, int ldy, const float *x,
                                   int ldx, int m, int64_t j0, int64_t j1)
{
    mt_part512(w, y, ldy, x, ldx, m, j0, j1, MT_MXFP4);
}

S_AVX512 static void s_dec_avx512(const tensor_t *w, int64_t r, int64_t c0, int64_t n,
                                  float *out)
{
    mt_decode512(w, r, c0, n, out, MT_MXFP4);
}

void matmul_mxfp4(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                  const tensor_t *w, int m)
{
    switch (compute_path(cx)) {
    case COMPUTE_PATH_AVX512:
        matmul_run(cx, y, ldy, x, ldx, w, m, s_part_avx512, s_dec_avx512, 32);
        return;
    case COMPUTE_PATH_AVX2:
        matmul_run(cx, y, ldy, x, ldx, w, m, s_part_avx2, s_dec_avx2, 32);
        return;
    default:
        matmul_generic(cx, y, ldy, x, ldx, w, m);
    }
}

matmul_decode_fn *matmul_mxfp4_decoder(compute_t *cx, const tensor_t *w)
{
    (void)w;
    switch (compute_path(cx)) {
    case COMPUTE_PATH_AVX512: return s_dec_avx512;
    case COMPUTE_PATH_AVX2: return s_dec_avx2;
    default: return NULL;
    }
}
