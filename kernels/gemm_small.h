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
 * (Paths differ from one another in rounding; a process uses one path.)
 *
 * Code paths: AVX-512F, AVX2+FMA, and portable C, picked once at run time from
 * the CPU (__builtin_cpu_supports), so one binary runs on any x86-64. Tests
 * force each path with gemm_small_set_path().
 *
 * Threads: the n output rows are split over up to n_threads threads (a small
 * persistent pool, started on first use; workers sleep on a condition variable
 * after a short spin, so an idle process does not take cores from the others
 * on the machine). One caller at a time uses the pool; a concurrent caller
 * computes on its own thread. Products below about a megabyte of W run on
 * the calling thread alone.
 */
#ifndef MOE_KERNELS_GEMM_SMALL_H
#define MOE_KERNELS_GEMM_SMALL_H

/* Row counts up to this take gemm_small in gemm() (b_trans only). Chosen from
 * bench-gemm: above it OpenBLAS's sgemm is as fast and better for prefill. */
enum { GEMM_SMALL_MAX_ROWS = 16 };

/* The code paths; GEMM_SMALL_AUTO means "the best this CPU runs". */
typedef enum gemm_small_path {
    GEMM_SMALL_AUTO = 0,
    GEMM_SMALL_PORTABLE,
    GEMM_SMALL_AVX2,
    GEMM_SMALL_AVX512,
} gemm_small_path_t;

/* C = alpha * A * W^T + beta * C
 *   c: (m, n) with row stride ldc
 *   a: (m, k) with row stride lda
 *   w: (n, k) with row stride ldw (the weight layout)
 * With beta == 0, C is written without being read (it may hold garbage).
 * Any m >= 0 works; it is fast for m <= GEMM_SMALL_MAX_ROWS. n_threads < 1
 * counts as 1. Cannot fail. */
void gemm_small(float *c, int ldc, const float *a, int lda, const float *w,
                int ldw, int m, int n, int k, float alpha, float beta,
                int n_threads);

/* Selects the code path for the whole process (for tests and benchmarks);
 * GEMM_SMALL_AUTO restores the CPU's best. 0, or -1 with ENOTSUP when this
 * CPU cannot run it (the path is then unchanged), EINVAL for an unknown one.
 * Not to be called while another thread is inside gemm_small(). */
int gemm_small_set_path(gemm_small_path_t path);

/* The path gemm_small() runs now (never GEMM_SMALL_AUTO). */
gemm_small_path_t gemm_small_path(void);

/* "portable", "avx2", "avx512" or "auto" (static storage). */
const char *gemm_small_path_name(gemm_small_path_t path);

#endif /* MOE_KERNELS_GEMM_SMALL_H */
