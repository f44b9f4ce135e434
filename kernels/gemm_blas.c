/* gemm_blas: gemm.h on OpenBLAS, the fast path every build links.
 *
 * Row-major throughout (CblasRowMajor), so the shapes in gemm.h map one to
 * one onto cblas arguments. Degenerate sizes never reach OpenBLAS: a zero
 * dimension would make it reject leading dimensions that gemm.h allows (its
 * xerbla prints and returns), and our own loops are exact for them anyway.
 * Products with the weight layout (b_trans) and up to GEMM_SMALL_MAX_ROWS
 * rows, which is every decode step and every expert of a batched step, run
 * in gemm_small: it streams B once for all rows at near memory speed, where
 * OpenBLAS's sgemm spends most of its time packing B and sgemv reads B once
 * per row. It also makes such rows batch-invariant (see gemm_small.h). It
 * uses the threads of the caller's compute context; OpenBLAS its own.
 */
#include "kernels/gemm.h"

#include <assert.h>
#include <cblas.h>
#include <string.h>

#include "kernels/compute.h"
#include "kernels/gemm_small.h"
#include "kernels/pool.h"

/* Up to this many rows, one matrix-vector product per row beats sgemm for
 * B in the (k, n) layout: at a few rows OpenBLAS's sgemm spends as long
 * packing B as using it (measured on a (2816 x 1024) weight, 2 threads:
 * 2 rows 32 vs 16 GB/s, 4 rows 22 vs 13 GB/s, 8 rows 13 vs 13 GB/s). */
enum { GEMV_MAX_ROWS = 4 };

enum {
    SPLIT_COLS = 64,                 /* chunks of C start at multiples of this */
    SPLIT_CHUNKS_PER_THREAD = 2,     /* a late thread still finds work */
};
/* Below this many multiply-adds an sgemm runs on the calling thread: a
 * worker's wake-up (a few microseconds) would cost more than it saves. */
static const double SPLIT_MIN_MACS = 2e6;

/* C = beta * C for the k == 0 product; beta == 0 writes zeros without reading
 * C, as gemm.h promises.
 *   c: (m, n) with row stride ldc */
static void s_scale(float *c, int ldc, int m, int n, float beta)
{
    for (int i = 0; i < m; i++) {
        float *row = c + (size_t)i * ldc; /* (n) */
        if (beta == 0.0f) {
            memset(row, 0, (size_t)n * sizeof *row);
        } else {
            for (int j = 0; j < n; j++)
                row[j] = beta * row[j];
        }
    }
}

/* y = alpha * op(B) x + beta * y, one output row: a one-row sgemm would pack
 * the whole of B before using it once, sgemv streams it.
 *   y: (n), x: (k), b: (n, k) with row stride ldb when b_trans, else (k, n) */
static void s_gemv(float *y, const float *x, const float *b, int ldb, int n,
                   int k, bool b_trans, float alpha, float beta)
{
    /* BLAS says y "need not be set" when beta == 0, but some OpenBLAS gemv
     * kernels and releases have multiplied the old y by zero, turning garbage
     * NaNs into NaN outputs. Clearing y costs n stores against n * k loads. */
    if (beta == 0.0f)
        memset(y, 0, (size_t)n * sizeof *y);
    if (b_trans)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, alpha, b, ldb, x, 1,
                    beta, y, 1);
    else
        cblas_sgemv(CblasRowMajor, CblasTrans, k, n, alpha, b, ldb, x, 1,
                    beta, y, 1);
}

/* One cblas_sgemm over columns [n0, n1) of C, and the job of a split one. */
typedef struct sgemm_job {
    float *c;
    const float *a, *b;
    int ldc, lda, ldb, m, n, k, n_chunks;
    bool b_trans;
    float alpha, beta;
} sgemm_job_t;

static void s_sgemm_chunk(void *arg, int t)
{
    const sgemm_job_t *j = arg;
    const int units = (j->n + SPLIT_COLS - 1) / SPLIT_COLS;
    const int u0 = (int)((long)units * t / j->n_chunks);
    const int u1 = (int)((long)units * (t + 1) / j->n_chunks);
    const int n0 = u0 * SPLIT_COLS, n1 = u1 * SPLIT_COLS < j->n ? u1 * SPLIT_COLS : j->n;
    if (n0 >= n1)
        return;
    const float *b = j->b_trans ? j->b + (size_t)n0 * j->ldb : j->b + n0;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, j->b_trans ? CblasTrans : CblasNoTrans, j->m,
                n1 - n0, j->k, j->alpha, j->a, j->lda, b, j->ldb, j->beta, j->c + n0,
                j->ldc);
}

static void s_sgemm(compute_t *cx, float *c, int ldc, const float *a, int lda,
                    const float *b, int ldb, int m, int n, int k, bool b_trans,
                    float alpha, float beta)
{
    sgemm_job_t job = {.c = c, .a = a, .b = b, .ldc = ldc, .lda = lda, .ldb = ldb, .m = m,
                       .n = n, .k = k, .n_chunks = 1, .b_trans = b_trans, .alpha = alpha,
                       .beta = beta};
    pool_t *pool = compute_pool(cx);
    const int units = (n + SPLIT_COLS - 1) / SPLIT_COLS;
    if ((double)m * n * k >= SPLIT_MIN_MACS && pool_threads(pool) > 1 && units > 1) {
        int want = pool_threads(pool) * SPLIT_CHUNKS_PER_THREAD;
        job.n_chunks = want < units ? want : units;
    }
    pool_run(pool, s_sgemm_chunk, &job, job.n_chunks);
}

void gemm(compute_t *cx, float *c, int ldc, const float *a, int lda,
          const float *b, int ldb, int m, int n, int k, bool b_trans,
          float alpha, float beta)
{
    const bool no_c = m == 0 || n == 0;    /* nothing to write */
    const bool no_ab = no_c || k == 0;     /* nothing to read from A, B */
    assert(cx);
    assert(no_c || (c && ldc >= n));
    assert(no_ab || (a && lda >= k));
    assert(no_ab || (b && ldb >= (b_trans ? k : n)));
    assert(m >= 0 && n >= 0 && k >= 0);
    if (no_c)
        return;
    if (no_ab) {
        s_scale(c, ldc, m, n, beta);
        return;
    }
    if (b_trans && m <= GEMM_SMALL_MAX_ROWS) {
        gemm_small(cx, c, ldc, a, lda, b, ldb, m, n, k, alpha, beta);
        return;
    }
    if (m <= GEMV_MAX_ROWS) {
        for (int i = 0; i < m; i++)
            s_gemv(c + (size_t)i * ldc, a + (size_t)i * lda, b, ldb, n, k, b_trans, alpha,
                   beta);
        return;
    }
    s_sgemm(cx, c, ldc, a, lda, b, ldb, m, n, k, b_trans, alpha, beta);
}

void gemm_linear(compute_t *cx, float *y, const float *x, const float *w, int m,
                 int n, int k)
{
    /* gemm() already runs a few rows of W (n, k) row-major in gemm_small. */
    gemm(cx, y, n, x, k, w, k, m, n, k, true, 1.0f, 0.0f);
}
