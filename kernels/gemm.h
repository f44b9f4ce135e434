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
 * A one-row product (m == 1) runs as a matrix-vector product. */
void gemm(float *c, int ldc, const float *a, int lda, const float *b, int ldb,
          int m, int n, int k, bool b_trans, float alpha, float beta);

/* The linear layer y = x W^T, y: (m, n), x: (m, k), w: (n, k), all dense.
 * For m == 1 it uses a matrix-vector product, which streams W once at memory
 * speed where a one-row sgemm would not. */
void gemm_linear(float *y, const float *x, const float *w, int m, int n, int k);

/* Oracle with the same contract as gemm(), float64 accumulation, plain loops. */
void gemm_ref(float *c, int ldc, const float *a, int lda, const float *b, int ldb,
              int m, int n, int k, bool b_trans, float alpha, float beta);

#endif /* MOE_KERNELS_GEMM_H */
