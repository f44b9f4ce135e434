/* matmul: the product of activations with a weight held in any format
 * (core/tensor.h), y = x W^T, the linear layer of every projection.
 *
 * Dispatch is on the weight's dtype: F32 goes to gemm_linear() (gemm_small up
 * to GEMM_SMALL_MAX_ROWS rows, OpenBLAS above), every other format to its own
 * kernel (kernels/matmul_*.c) on the compute context's code path (AVX-512,
 * AVX2+FMA or portable) and pool (kernels/compute.h).
 *
 * Numerics: activations are float32. The float formats (F16, BF16, F8_E4M3,
 * MXFP4) compute on the exact decoded weight values with float32 products,
 * so a checkpoint stored in them gives the results of its float32 widening
 * to float32 rounding. Q8_0 and Q4_0 may quantize the activations to 8 bits
 * per block of 32 inside their dot products, as llama.cpp does (documented in
 * their kernels).
 *
 * Batch invariance (the cluster's "alone equals among others"): up to
 * GEMM_SMALL_MAX_ROWS rows, row i of y depends only on row i of x and on W,
 * never on m, the other rows or the thread split.
 */
#ifndef MOE_KERNELS_MATMUL_H
#define MOE_KERNELS_MATMUL_H

#include "core/tensor.h"
#include "kernels/compute.h"

/* y = x W^T.  y: (m, w->rows) with row stride ldy; x: (m, w->cols) with row
 * stride ldx. y is written without being read. Cannot fail. */
void matmul(compute_t *cx, float *y, int ldy, const float *x, int ldx,
            const tensor_t *w, int m);

/* One product of matmul_many(): y = x W^T over m rows, as matmul() takes it. */
typedef struct matmul_op {
    float *y;
    int ldy;
    const float *x;
    int ldx;
    const tensor_t *w;
    int m;
} matmul_op_t;

/* matmul() of each of ops[0 .. n), with the same results to the bit, the
 * products being independent (no op's y overlaps another's x or y). Where
 * the formats allow (Q8_0, Q4_0), they run as one job on cx's pool, so its
 * threads join once for all of them instead of once per product, and ops
 * that share x quantize it once: an expert's gate and up projections, or
 * the projections of all the experts a decoded token routes to. Other
 * formats run one after the other. Cannot fail. */
void matmul_many(compute_t *cx, const matmul_op_t *ops, int n);

/* y = x W (W not transposed: MLA's absorbed kv_b).  y: (m, w->cols) with row
 * stride ldy; x: (m, w->rows) with row stride ldx. Cannot fail. */
void matmul_xw(compute_t *cx, float *y, int ldy, const float *x, int ldx,
               const tensor_t *w, int m);

/* The oracles: the same contracts in float64 over tensor_row_to_f32(), plain
 * loops; what the tests hold every kernel to. */
void matmul_ref(float *y, int ldy, const float *x, int ldx, const tensor_t *w, int m);
void matmul_xw_ref(float *y, int ldy, const float *x, int ldx, const tensor_t *w, int m);

#endif /* MOE_KERNELS_MATMUL_H */
