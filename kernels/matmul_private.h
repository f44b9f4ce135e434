/* matmul_private: what the kernels of kernels/matmul*.c share.
 *
 * matmul_generic() is the portable product for any dtype: it decodes a slice
 * of one W row at a time into a small stack buffer (tensor_row_range_to_f32)
 * and dots it with every row of x in float32, with the summation order of
 * gemm_small's portable path (8 lanes, lane p mod 8, a fixed pairwise sum),
 * so it is batch-invariant and gives the F32 portable path's results on the
 * decoded weights. Every format's kernel falls back to it for the portable
 * path and for shapes it does not handle.
 */
#ifndef MOE_KERNELS_MATMUL_PRIVATE_H
#define MOE_KERNELS_MATMUL_PRIVATE_H

#include "core/tensor.h"
#include "kernels/compute.h"

/* matmul() for any dtype on the portable path (matmul.h's contract). */
void matmul_generic(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                    const tensor_t *w, int m);

/* matmul_xw() for any dtype, portable. */
void matmul_xw_generic(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                       const tensor_t *w, int m);

/* How many chunks a product streaming `bytes` of W over `units` independent
 * units of work (rows or column blocks) is cut into for cx's pool: 1 below a
 * 128 KB (a worker's wake-up costs more), else about 4 per thread (the
 * rule of gemm_small.c). */
int matmul_chunks(compute_t *cx, size_t bytes, int64_t units);

/* The kernels of one format on one path:
 * part: rows [j0, j1) of y = x W^T for all m rows (j0 a multiple of 4), a
 *   batch-invariant tile kernel (kernels/matmul_tile.h);
 * decode: columns [c0, c0 + n) of row r of W to float32 (c0 a multiple of
 *   the format's scale segment), exactly tensor_row_range_to_f32(). */
typedef void matmul_part_fn(const tensor_t *w, float *y, int ldy, const float *x, int ldx,
                            int m, int64_t j0, int64_t j1);
typedef void matmul_decode_fn(const tensor_t *w, int64_t r, int64_t c0, int64_t n,
                              float *out);

/* y = x W^T with a format's kernels: up to MATMUL_DECODE_MAX_ROWS rows the
 * part kernel over chunks of W rows on cx's pool (W streamed once, batch
 * invariant); above, the prefill path (matmul.c says which and why). align:
 * the column multiple decode needs (FP8's block_k, 32 for MXFP4, 1). */
void matmul_run(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                const tensor_t *w, int m, matmul_part_fn *part, matmul_decode_fn *decode,
                int64_t align);

/* The vector decoder of w's format on cx's path, NULL when there is none
 * (the portable path, Q8_0/Q4_0, F32); *align: the column multiple it needs. */
matmul_decode_fn *matmul_decoder(compute_t *cx, const tensor_t *w, int64_t *align);
matmul_decode_fn *matmul_f16_decoder(compute_t *cx, const tensor_t *w);
matmul_decode_fn *matmul_fp8_decoder(compute_t *cx, const tensor_t *w);
matmul_decode_fn *matmul_mxfp4_decoder(compute_t *cx, const tensor_t *w);

/* matmul() for F16 and BF16 weights and more than GEMM_SMALL_MAX_ROWS rows
 * of x on the AVX-512 path (cx's path must be COMPUTE_PATH_AVX512): the
 * weights decoded in registers for FMAs near the cores' peak
 * (kernels/matmul_f16_prefill.c). */
void matmul_f16_prefill(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                        const tensor_t *w, int m);

/* The float formats' entry points (kernels/matmul_f16.c, matmul_fp8.c,
 * matmul_mxfp4.c): matmul() for their dtype on cx's path. */
void matmul_f16(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                const tensor_t *w, int m);  /* F16 and BF16 */
void matmul_fp8(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                const tensor_t *w, int m);
void matmul_mxfp4(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                  const tensor_t *w, int m);

#endif /* MOE_KERNELS_MATMUL_PRIVATE_H */
