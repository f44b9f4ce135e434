/* gemm: every matrix product of moecluster.
 *
 * Storage is row-major. The build links gemm_blas.c (OpenBLAS) as gemm() and
 * gemm_linear(); gemm_ref.c is the float64-accumulating oracle the tests hold
 * the fast path to, exported under its own name so both can be linked at once.
 */
#ifndef MOE_KERNELS_GEMM_H
#define MOE_KERNELS_GEMM_H

#include <stdbool.h>

#include "kernels/compute.h"

/* C = alpha * A * op(B) + beta * C, in the compute context cx (borrowed)
 *   c: (m, n) with row stride ldc
 *   a: (m, k) with row stride lda
 *   b: (n, k) with row stride ldb when b_trans (op(B) = B^T, the weight layout),
 *      else (k, n) with row stride ldb.
 * With beta == 0, C is written without being read (it may hold garbage).
 * With b_trans and m <= GEMM_SMALL_MAX_ROWS (16) it runs gemm_small, which
 * streams B once for all rows, and each row of C is then bit-identical
 * whatever the other rows of the call (see gemm_small.h); larger products
 * go to OpenBLAS, and a few rows without b_trans to one sgemv per row.
 * gemm_small runs on cx's path and pool, OpenBLAS on its own threads. */
void gemm(compute_t *cx, float *c, int ldc, const float *a, int lda,
          const float *b, int ldb, int m, int n, int k, bool b_trans,
          float alpha, float beta);

/* The linear layer y = x W^T, y: (m, n), x: (m, k), w: (n, k), all dense.
 * Up to GEMM_SMALL_MAX_ROWS rows it streams W once at memory speed, and each
 * row of y depends only on its row of x and on W (gemm_small.h). cx as for
 * gemm(). */
void gemm_linear(compute_t *cx, float *y, const float *x, const float *w,
                 int m, int n, int k);

/* Oracle with the same contract as gemm(), float64 accumulation, plain loops. */
void gemm_ref(float *c, int ldc, const float *a, int lda, const float *b, int ldb,
              int m, int n, int k, bool b_trans, float alpha, float beta);

#endif /* MOE_KERNELS_GEMM_H */
