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
 * megabyte (a worker's wake-up costs more), else about 4 per thread (the
 * rule of gemm_small.c). */
int matmul_chunks(compute_t *cx, size_t bytes, int64_t units);

#endif /* MOE_KERNELS_MATMUL_PRIVATE_H */
