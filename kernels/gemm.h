/* gemm: every matrix product of moecluster.
 *
 * Storage is row-major. The build links gemm_blas.c (OpenBLAS) as gemm() and
 * gemm_linear(); gemm_ref.c is the float64-accumulating oracle the tests hold
 * the fast path to, exported under its own name so both can be linked at once.
 */
#ifndef MOE_KERNELS_GEMM_H
#define MOE_KERNELS_GEMM_H

#include <stdbool.h>

/* C = alpha * A * op(B) + beta * C
 *   c: (m, n) with row stride ldc
 *   a: (m, k) with row stride lda
 *   b: (n, k) with row stride ldb when b_trans (op(B) = B^T, the weight layout),
 *      else (k, n) with row stride ldb.
 * With beta == 0, C is written without being read (it may hold garbage).
 * A product of a few rows (m <= 4) runs as one matrix-vector product per row,
 * which streams B faster than a small sgemm does. */
void gemm(float *c, int ldc, const float *a, int lda, const float *b, int ldb,
          int m, int n, int k, bool b_trans, float alpha, float beta);

/* The linear layer y = x W^T, y: (m, n), x: (m, k), w: (n, k), all dense.
 * For a few rows it uses matrix-vector products, which stream W at memory
 * speed where a small sgemm would not. */
void gemm_linear(float *y, const float *x, const float *w, int m, int n, int k);

/* Oracle with the same contract as gemm(), float64 accumulation, plain loops. */
void gemm_ref(float *c, int ldc, const float *a, int lda, const float *b, int ldb,
              int m, int n, int k, bool b_trans, float alpha, float beta);

#endif /* MOE_KERNELS_GEMM_H */
