/* matmul_fp8: F8_E4M3 weights with block scales (DeepSeek-V3).
 *
 * Each weight is decoded and multiplied by its block's scale_inv in float32
 * before its FMA with x: the exact value e4m3(q) * scale_inv the format
 * defines and the reference computed (kernels/matmul_tile.h). Multiplying a
 * column block's partial sum by the scale instead would save one multiply
 * per weight but change the rounding (about 1e-7 relative, within the
 * fixtures' 1e-4): not needed, since decode is memory-bound and the multiply
 * is hidden under the load of the next bytes.
 *
 * The kernels take a scale segment (block_k columns) in whole vectors:
 * block_k a multiple of 16 on the AVX-512 path, of 8 on the AVX2 path
 * (DeepSeek-V3's 128 and every size a real checkpoint uses); other block
 * sizes, valid but unusual, use the portable product. */
#include "kernels/matmul_private.h"
#include "kernels/matmul_tile.h"

#define S_AVX2 __attribute__((target("avx2,fma,f16c")))
#define S_AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))

S_AVX2 static void s_part_avx2(const tensor_t *w, float *y, int ldy, const float *x, int ldx,
                               int m, int64_t j0, int64_t j1)
{
    mt_part256(w, y, ldy, x, ldx, m, j0, j1, MT_FP8);
}

S_AVX2 static void s_dec_avx2(const tensor_t *w, int64_t r, int64_t c0, int64_t n, float *out)
{
    mt_decode256(w, r, c0, n, out, MT_FP8);
}

S_AVX512 static void s_part_avx512(const tensor_t *w, float *y, int ldy, const float *x,
                                   int ldx, int m, int64_t j0, int64_t j1)
{
    mt_part512(w, y, ldy, x, ldx, m, j0, j1, MT_FP8);
}

S_AVX512 static void s_dec_avx512(const tensor_t *w, int64_t r, int64_t c0, int64_t n,
                                  float *out)
{
    mt_decode512(w, r, c0, n, out, MT_FP8);
}

void matmul_fp8(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                const tensor_t *w, int m)
{
    const compute_path_t path = compute_path(cx);
    if (path == COMPUTE_PATH_AVX512 && w->block_k % 16 == 0) {
        matmul_run(cx, y, ldy, x, ldx, w, m, s_part_avx512, s_dec_avx512, w->block_k);
        return;
    }
    if (path != COMPUTE_PATH_PORTABLE && w->block_k % 8 == 0) {
        matmul_run(cx, y, ldy, x, ldx, w, m, s_part_avx2, s_dec_avx2, w->block_k);
        return;
    }
    matmul_generic(cx, y, ldy, x, ldx, w, m);
}

matmul_decode_fn *matmul_fp8_decoder(compute_t *cx, const tensor_t *w)
{
    const compute_path_t path = compute_path(cx);
    if (path == COMPUTE_PATH_AVX512 && w->block_k % 16 == 0)
        return s_dec_avx512;
    if (path != COMPUTE_PATH_PORTABLE && w->block_k % 8 == 0)
        return s_dec_avx2;
    return NULL;
}
