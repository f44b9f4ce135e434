/* gemm_small: see gemm_small.h.
 *
 * Each path has one tile kernel: R rows of x (R <= 4) against C rows of W
 * (C <= 4 with AVX-512, <= 2 with AVX2), one vector accumulator per output
 * entry, k walked in vector-width chunks. The tile loop runs over blocks of W
 * rows on the outside and blocks of x rows inside, so a block of W comes from
 * memory once and from cache for the remaining x rows.
 *
 * Why the results do not depend on the batch: entry (i, j) always gets its own
 * accumulator, fed lane by lane with fma(x[p], w[p], acc) over increasing p,
 * the k tail by masked loads (zeros), then one fixed horizontal sum, then
 * alpha and beta. R and C only decide how many such independent accumulators
 * are live at once, and the thread split only which rows of W a thread takes,
 * so neither changes a single rounding of any entry.
 *
 * Threads: measured with bench-gemm on the medium expert shapes, one thread
 * reads W at about 30 GB/s, two at about 55 (the machine's two-thread read
 * bandwidth), so a second thread nearly halves the time of the expert
 * products; OpenBLAS would not give us that for this shape. The threads are
 * those of the caller's compute context (kernels/compute.h, kernels/pool.h),
 * whose workers spin a little after a job and then sleep, so idle processes
 * on a shared machine leave the cores to the busy one (the lesson of
 * OPENBLAS_THREAD_TIMEOUT in docs/PERFORMANCE.md). The module keeps no state.
 */
#include "kernels/gemm_small.h"

#include <assert.h>
#include <immintrin.h>
#include <stdbool.h>
#include <stddef.h>

enum {
    TILE_ROWS = 4,             /* R: rows of x per tile */
    TILE_W512 = 4,             /* C with AVX-512: 16 zmm accumulators */
    TILE_W256 = 2,             /* C with AVX2: 8 ymm accumulators of 16 regs */
    TILE_WPORT = 4,            /* C for the portable path (cache blocking only) */
    PORT_LANES = 8,            /* partial sums per entry on the portable path */
    CHUNKS_PER_THREAD = 4,     /* chunks of a split product per pool thread */
};

/* Below this many bytes of W, the hand-off to a worker (a futex wake when it
 * sleeps, tens of microseconds) costs more than it saves. */
static const size_t SPLIT_MIN_BYTES = (size_t)1 << 20;

/* One part of a product: rows [j0, j1) of W and C. */
typedef void s_part_fn(float *c, int ldc, const float *a, int lda,
                       const float *w, int ldw, int m, int j0, int j1, int k,
                       float alpha, float beta);

/* alpha s + beta c, not reading c when beta == 0, the same expression on
 * every path. */
static inline float s_out(float s, float alpha, float beta, const float *c)
{
    return beta == 0.0f ? alpha * s : alpha * s + beta * *c;
}

/* ---- portable C ----------------------------------------------------------- */

/* One entry: PORT_LANES partial sums (lane l takes p = l mod PORT_LANES), then
 * a fixed pairwise sum. ISO C mode does not contract a * b + s into fma. */
static float s_dot_port(const float *x, const float *w, int k)
{
    float s[PORT_LANES] = {0};
    int p = 0;
    for (; p + PORT_LANES <= k; p += PORT_LANES)
        for (int l = 0; l < PORT_LANES; l++)
            s[l] += x[p + l] * w[p + l];
    for (int l = 0; p + l < k; l++)
        s[l] += x[p + l] * w[p + l];
    return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

static void s_part_port(float *c, int ldc, const float *a, int lda,
                        const float *w, int ldw, int m, int j0, int j1, int k,
                        float alpha, float beta)
{
    for (int jb = j0; jb < j1; jb += TILE_WPORT) {
        int je = jb + TILE_WPORT < j1 ? jb + TILE_WPORT : j1;
        for (int i = 0; i < m; i++) {
            const float *x = a + (size_t)i * lda;
            float *ci = c + (size_t)i * ldc;
            for (int j = jb; j < je; j++)
                ci[j] = s_out(s_dot_port(x, w + (size_t)j * ldw, k), alpha,
                              beta, ci + j);
        }
    }
}

/* ---- AVX2 + FMA ------------------------------------------------------------- */

/* The fixed horizontal sum of 8 lanes: halves, then quarters, then pairs. */
__attribute__((target("avx2,fma"), always_inline)) static inline float
s_hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* An R x C tile; R and C are constants after inlining. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
s_tile256(float *c, int ldc, const float *a, int lda, const float *w, int ldw,
          int k, float alpha, float beta, const int R, const int C)
{
    __m256 acc[TILE_ROWS][TILE_W256];
    __m256 wv[TILE_W256];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int q = 0; q < C; q++)
            acc[r][q] = _mm256_setzero_ps();
    int p = 0;
    for (; p + 8 <= k; p += 8) {
#pragma GCC unroll 4
        for (int q = 0; q < C; q++)
            wv[q] = _mm256_loadu_ps(w + (size_t)q * ldw + p);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            __m256 xv = _mm256_loadu_ps(a + (size_t)r * lda + p);
#pragma GCC unroll 4
            for (int q = 0; q < C; q++)
                acc[r][q] = _mm256_fmadd_ps(xv, wv[q], acc[r][q]);
        }
    }
    if (p < k) {
        __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(k - p), lane);
#pragma GCC unroll 4
        for (int q = 0; q < C; q++)
            wv[q] = _mm256_maskload_ps(w + (size_t)q * ldw + p, mask);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            __m256 xv = _mm256_maskload_ps(a + (size_t)r * lda + p, mask);
#pragma GCC unroll 4
            for (int q = 0; q < C; q++)
                acc[r][q] = _mm256_fmadd_ps(xv, wv[q], acc[r][q]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int q = 0; q < C; q++) {
            float *cij = c + (size_t)r * ldc + q;
            *cij = s_out(s_hsum256(acc[r][q]), alpha, beta, cij);
        }
}

__attribute__((target("avx2,fma"))) static void
s_part_avx2(float *c, int ldc, const float *a, int lda, const float *w,
            int ldw, int m, int j0, int j1, int k, float alpha, float beta)
{
    for (int j = j0; j < j1; j += TILE_W256) {
        const float *wj = w + (size_t)j * ldw;
        bool full = j + TILE_W256 <= j1;
        for (int i = 0; i < m; i += TILE_ROWS) {
            float *cij = c + (size_t)i * ldc + j;
            const float *ai = a + (size_t)i * lda;
            int rows = m - i < TILE_ROWS ? m - i : TILE_ROWS;
            switch (rows * 2 + (full ? 1 : 0)) {
            case 9: s_tile256(cij, ldc, ai, lda, wj, ldw, k, alpha, beta, 4, 2); break;
            case 8: s_tile256(cij, ldc, ai, lda, wj, ldw, k, alpha, beta, 4, 1); break;
            case 7: s_tile256(cij, ldc, ai, lda, wj, ldw, k, alpha, beta, 3, 2); break;
            case 6: s_tile256(cij, ldc, ai, lda, wj, ldw, k, alpha, beta, 3, 1); break;
            case 5: s_tile256(cij, ldc, ai, lda, wj, ldw, k, alpha, beta, 2, 2); break;
            case 4: s_tile256(cij, ldc, ai, lda, wj, ldw, k, alpha, beta, 2, 1); break;
            case 3: s_tile256(cij, ldc, ai, lda, wj, ldw, k, alpha, beta, 1, 2); break;
            default: s_tile256(cij, ldc, ai, lda, wj, ldw, k, alpha, beta, 1, 1); break;
            }
        }
    }
}

/* ---- AVX-512F ----------------------------------------------------------------- */

/* An R x C tile; R and C are constants after inlining. The k tail is a masked
 * load, so no lane reads past a row. */
__attribute__((target("avx512f"), always_inline)) static inline void
s_tile512(float *c, int ldc, const float *a, int lda, const float *w, int ldw,
          int k, float alpha, float beta, const float *pf, int pf_rows,
          const int R, const int C)
{
    __m512 acc[TILE_ROWS][TILE_W512];
    __m512 wv[TILE_W512];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int q = 0; q < C; q++)
            acc[r][q] = _mm512_setzero_ps();
    int p = 0;
    for (; p + 16 <= k; p += 16) {
        for (int q = 0; q < pf_rows; q++)
            _mm_prefetch((const char *)(pf + (size_t)q * ldw + p), _MM_HINT_T1);
#pragma GCC unroll 4
        for (int q = 0; q < C; q++)
            wv[q] = _mm512_loadu_ps(w + (size_t)q * ldw + p);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            __m512 xv = _mm512_loadu_ps(a + (size_t)r * lda + p);
#pragma GCC unroll 4
            for (int q = 0; q < C; q++)
                acc[r][q] = _mm512_fmadd_ps(xv, wv[q], acc[r][q]);
        }
    }
    if (p < k) {
        __mmask16 mask = (__mmask16)((1u << (k - p)) - 1u);
#pragma GCC unroll 4
        for (int q = 0; q < C; q++)
            wv[q] = _mm512_maskz_loadu_ps(mask, w + (size_t)q * ldw + p);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            __m512 xv = _mm512_maskz_loadu_ps(mask, a + (size_t)r * lda + p);
#pragma GCC unroll 4
            for (int q = 0; q < C; q++)
                acc[r][q] = _mm512_fmadd_ps(xv, wv[q], acc[r][q]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int q = 0; q < C; q++) {
            float *cij = c + (size_t)r * ldc + q;
            *cij = s_out(_mm512_reduce_add_ps(acc[r][q]), alpha, beta, cij);
        }
}

/* Four tiles of R rows, for C = 4, 3, 2, 1 W rows. */
#define S_TILE512_ROWS(R)                                                      \
    case (R) * 8 + 4: s_tile512(cij, ldc, ai, lda, wj, ldw, k, alpha, beta, pf, pf_rows, R, 4); break; \
    case (R) * 8 + 3: s_tile512(cij, ldc, ai, lda, wj, ldw, k, alpha, beta, pf, pf_rows, R, 3); break; \
    case (R) * 8 + 2: s_tile512(cij, ldc, ai, lda, wj, ldw, k, alpha, beta, pf, pf_rows, R, 2); break; \
    case (R) * 8 + 1: s_tile512(cij, ldc, ai, lda, wj, ldw, k, alpha, beta, pf, pf_rows, R, 1); break;

__attribute__((target("avx512f"))) static void
s_part_avx512(float *c, int ldc, const float *a, int lda, const float *w,
              int ldw, int m, int j0, int j1, int k, float alpha, float beta)
{
    const int n_blocks = (m + TILE_ROWS - 1) / TILE_ROWS; /* of x rows */
    for (int j = j0; j < j1; j += TILE_W512) {
        const float *wj = w + (size_t)j * ldw;
        int cols = j1 - j < TILE_W512 ? j1 - j : TILE_W512;
        /* The next block of W rows, prefetched into L2 while this one is
         * used, its rows shared out over the blocks of x rows so that memory
         * keeps streaming while the kernel computes from cache. */
        int next = j1 - (j + cols) < TILE_W512 ? j1 - (j + cols) : TILE_W512;
        for (int i = 0, b = 0; i < m; i += TILE_ROWS, b++) {
            float *cij = c + (size_t)i * ldc + j;
            const float *ai = a + (size_t)i * lda;
            int rows = m - i < TILE_ROWS ? m - i : TILE_ROWS;
            int q0 = n_blocks >= next ? (b < next ? b : next) : b * next / n_blocks;
            int q1 = n_blocks >= next ? (b + 1 < next ? b + 1 : next)
                                      : (b + 1) * next / n_blocks;
            const float *pf = wj + (size_t)(cols + q0) * ldw;
            int pf_rows = q1 - q0;
            switch (rows * 8 + cols) {
            S_TILE512_ROWS(4)
            S_TILE512_ROWS(3)
            S_TILE512_ROWS(2)
            S_TILE512_ROWS(1)
            default: assert(0);
            }
        }
    }
}
#undef S_TILE512_ROWS

/* ---- the product, cut into chunks for the pool ------------------------------- */

static s_part_fn *s_part_for(compute_path_t path)
{
    switch (path) {
    case COMPUTE_PATH_AVX512: return s_part_avx512;
    case COMPUTE_PATH_AVX2: return s_part_avx2;
    default: return s_part_port;
    }
}

/* The product being computed, cut into n_chunks chunks of W rows that the
 * caller and the pool's workers claim one at a time (kernels/pool.h says why
 * chunks and not one part per thread). */
typedef struct job {
    s_part_fn *part;     /* the path's kernel */
    float *c;            /* (m, n) with stride ldc */
    const float *a;      /* (m, k) with stride lda */
    const float *w;      /* (n, k) with stride ldw */
    int ldc, lda, ldw;
    int m, n, k;
    int n_chunks;        /* chunks of W rows, at multiples of TILE_WPORT */
    float alpha, beta;
} job_t;

/* Computes chunk t of the job: rows [j0, j1) of W and C, split at multiples
 * of the widest tile so that every chunk runs full tiles. */
static void s_run_chunk(void *arg, int t)
{
    const job_t *job = arg;
    int blocks = (job->n + TILE_WPORT - 1) / TILE_WPORT;
    int b0 = (int)((long)blocks * t / job->n_chunks);
    int b1 = (int)((long)blocks * (t + 1) / job->n_chunks);
    int j0 = b0 * TILE_WPORT < job->n ? b0 * TILE_WPORT : job->n;
    int j1 = b1 * TILE_WPORT < job->n ? b1 * TILE_WPORT : job->n;
    if (j0 < j1)
        job->part(job->c, job->ldc, job->a, job->lda, job->w, job->ldw,
                  job->m, j0, j1, job->k, job->alpha, job->beta);
}

void gemm_small(compute_t *cx, float *c, int ldc, const float *a, int lda,
                const float *w, int ldw, int m, int n, int k, float alpha,
                float beta)
{
    assert(cx);
    assert(m >= 0 && n >= 0 && k >= 0);
    assert(m == 0 || n == 0 || (c && ldc >= n));
    assert(m == 0 || n == 0 || k == 0 || (a && lda >= k && w && ldw >= k));
    if (m == 0 || n == 0)
        return;
    job_t job = {
        .part = s_part_for(compute_path(cx)),
        .c = c, .a = a, .w = w, .ldc = ldc, .lda = lda, .ldw = ldw,
        .m = m, .n = n, .k = k, .n_chunks = 1, .alpha = alpha, .beta = beta,
    };
    pool_t *pool = compute_pool(cx);
    int blocks = (n + TILE_WPORT - 1) / TILE_WPORT;
    int threads = pool_threads(pool) < blocks ? pool_threads(pool) : blocks;
    if (threads >= 2 && (size_t)n * (size_t)k * sizeof *w >= SPLIT_MIN_BYTES)
        job.n_chunks = threads * CHUNKS_PER_THREAD < blocks ? threads * CHUNKS_PER_THREAD
                                                            : blocks;
    pool_run(pool, s_run_chunk, &job, job.n_chunks);
}
