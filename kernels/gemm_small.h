/* gemm_small: the product of a few rows with a weight, y = alpha x W^T + beta y,
 * streaming W from memory once for all the rows.
 *
 * Batched decoding gives each expert a handful of rows per step (16 sequences,
 * 8 experts, top-2: about 4). OpenBLAS has nothing for that shape: sgemv reads
 * W once per row, and a small sgemm spends most of its time packing W. Here
 * each block of a few W rows is loaded once and multiplied into every row of x
 * while it sits in registers and L1, so the cost is one pass over W.
 *
 * Batch invariance (the contract the cluster's "alone equals among others"
 * guarantee rests on): output entry (i, j) is computed from row i of x and
 * row j of W alone, by a sequence of float operations that depends only on k,
 * alpha, beta and the code path, never on m, n, the row's position in the
 * batch, the strides or the thread split. So a row gives bit-identical results
 * whatever other rows share its call, for every m up to GEMM_SMALL_MAX_ROWS.
 * (Paths differ from one another in rounding; a context uses one path.)
 *
 * Code paths: AVX-512F, AVX2+FMA, and portable C, the one of the caller's
 * compute context (kernels/compute.h: picked from the CPU, forced by tests).
 *
 * Threads: the n output rows are cut into chunks that the caller and the
 * workers of the context's pool claim one at a time (kernels/pool.h), on up
 * to pool_threads() threads. One caller at a time uses the pool; a concurrent
 * caller computes on its own thread. Products below about a megabyte of W
 * run on the calling thread alone.
 */
#ifndef MOE_KERNELS_GEMM_SMALL_H
#define MOE_KERNELS_GEMM_SMALL_H

#include "kernels/compute.h"

/* Row counts up to this take gemm_small in gemm() (b_trans only). Chosen from
 * bench-gemm: above it OpenBLAS's sgemm is as fast and better for prefill. */
enum { GEMM_SMALL_MAX_ROWS = 16 };

/* C = alpha * A * W^T + beta * C, in cx's code path and pool (borrowed)
 *   c: (m, n) with row stride ldc
 *   a: (m, k) with row stride lda
 *   w: (n, k) with row stride ldw (the weight layout)
 * With beta == 0, C is written without being read (it may hold garbage).
 * Any m >= 0 works; it is fast for m <= GEMM_SMALL_MAX_ROWS. Cannot fail,
 * never allocates. */
void gemm_small(compute_t *cx, float *c, int ldc, const float *a, int lda,
                const float *w, int ldw, int m, int n, int k, float alpha,
                float beta);

#endif /* MOE_KERNELS_GEMM_SMALL_H */
