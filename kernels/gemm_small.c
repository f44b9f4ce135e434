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
 * products; OpenBLAS would not give us that for this shape. The pool's
 * workers spin for SPIN_NS after a job (the gate, up and down products of an
 * expert follow each other within microseconds), then sleep on a condition
 * variable, so idle processes on a shared machine leave the cores to the
 * busy one (the lesson of OPENBLAS_THREAD_TIMEOUT in docs/PERFORMANCE.md).
 * The pool is the module's only global state besides the chosen path; a
 * forked child starts with an empty pool (pthread_atfork).
 */
#include "kernels/gemm_small.h"

#include <assert.h>
#include <errno.h>
#include <immintrin.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

enum {
    MAX_THREADS = 16,          /* pool size cap (workers + caller) */
    TILE_ROWS = 4,             /* R: rows of x per tile */
    TILE_W512 = 4,             /* C with AVX-512: 16 zmm accumulators */
    TILE_W256 = 2,             /* C with AVX2: 8 ymm accumulators of 16 regs */
    TILE_WPORT = 4,            /* C for the portable path (cache blocking only) */
    PORT_LANES = 8,            /* partial sums per entry on the portable path */
};

/* Below this many bytes of W, the hand-off to a worker (a futex wake when it
 * sleeps, tens of microseconds) costs more than it saves. */
static const size_t SPLIT_MIN_BYTES = (size_t)1 << 20;
static const long SPIN_NS = 200000; /* worker and caller spin before sleeping */

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

/* ---- path selection ----------------------------------------------------------- */

static atomic_int s_path_now = GEMM_SMALL_AUTO; /* resolved on first use */

static bool s_cpu_runs(gemm_small_path_t path)
{
    __builtin_cpu_init();
    switch (path) {
    case GEMM_SMALL_PORTABLE: return true;
    case GEMM_SMALL_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case GEMM_SMALL_AVX512: return __builtin_cpu_supports("avx512f");
    default: return false;
    }
}

static gemm_small_path_t s_best(void)
{
    if (s_cpu_runs(GEMM_SMALL_AVX512))
        return GEMM_SMALL_AVX512;
    if (s_cpu_runs(GEMM_SMALL_AVX2))
        return GEMM_SMALL_AVX2;
    return GEMM_SMALL_PORTABLE;
}

gemm_small_path_t gemm_small_path(void)
{
    int path = atomic_load(&s_path_now);
    if (path == GEMM_SMALL_AUTO) {
        path = s_best();
        atomic_store(&s_path_now, path);
    }
    return (gemm_small_path_t)path;
}

int gemm_small_set_path(gemm_small_path_t path)
{
    if (path == GEMM_SMALL_AUTO) {
        atomic_store(&s_path_now, s_best());
        return 0;
    }
    if (path != GEMM_SMALL_PORTABLE && path != GEMM_SMALL_AVX2 &&
        path != GEMM_SMALL_AVX512) {
        errno = EINVAL;
        return -1;
    }
    if (!s_cpu_runs(path)) {
        errno = ENOTSUP;
        return -1;
    }
    atomic_store(&s_path_now, path);
    return 0;
}

const char *gemm_small_path_name(gemm_small_path_t path)
{
    switch (path) {
    case GEMM_SMALL_PORTABLE: return "portable";
    case GEMM_SMALL_AVX2: return "avx2";
    case GEMM_SMALL_AVX512: return "avx512";
    default: return "auto";
    }
}

static s_part_fn *s_part_for(gemm_small_path_t path)
{
    switch (path) {
    case GEMM_SMALL_AVX512: return s_part_avx512;
    case GEMM_SMALL_AVX2: return s_part_avx2;
    default: return s_part_port;
    }
}

/* ---- thread pool -------------------------------------------------------------- */

/* The product being computed; written by the caller before it bumps gen. */
typedef struct job {
    s_part_fn *part;     /* the path's kernel */
    float *c;            /* (m, n) with stride ldc */
    const float *a;      /* (m, k) with stride lda */
    const float *w;      /* (n, k) with stride ldw */
    int ldc, lda, ldw;
    int m, n, k;
    int n_parts;         /* threads taking part, caller included */
    float alpha, beta;
} job_t;

typedef struct pool {
    pthread_mutex_t busy;     /* held by the one caller using the pool */
    pthread_mutex_t lock;     /* guards the sleeps and wake-ups below */
    pthread_cond_t wake;      /* workers sleep here for a new gen */
    pthread_cond_t done;      /* the caller sleeps here for pending == 0 */
    int n_workers;            /* started so far (threads[0..n_workers)) */
    int n_sleeping;           /* workers waiting on wake */
    atomic_uint gen;          /* bumped once per job */
    unsigned start_gen;       /* gen when the newest workers were started */
    atomic_int pending;       /* workers yet to answer the job */
    job_t job;                /* valid from a gen bump to pending == 0 */
    pthread_t threads[MAX_THREADS];
} pool_t;

static pool_t s_pool = {
    .busy = PTHREAD_MUTEX_INITIALIZER,
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .done = PTHREAD_COND_INITIALIZER,
};
static pthread_once_t s_atfork_once = PTHREAD_ONCE_INIT;

/* The rows of part t of n_parts, split at multiples of the widest tile so that
 * every thread runs full tiles. */
static void s_split(int n, int n_parts, int t, int *j0, int *j1)
{
    int blocks = (n + TILE_WPORT - 1) / TILE_WPORT;
    int b0 = (int)((long)blocks * t / n_parts);
    int b1 = (int)((long)blocks * (t + 1) / n_parts);
    *j0 = b0 * TILE_WPORT < n ? b0 * TILE_WPORT : n;
    *j1 = b1 * TILE_WPORT < n ? b1 * TILE_WPORT : n;
}

static void s_run_part(const job_t *job, int t)
{
    int j0, j1;
    s_split(job->n, job->n_parts, t, &j0, &j1);
    if (j0 < j1)
        job->part(job->c, job->ldc, job->a, job->lda, job->w, job->ldw,
                  job->m, j0, j1, job->k, job->alpha, job->beta);
}

static long s_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void *s_worker(void *arg)
{
    const int t = (int)(size_t)arg; /* part index: the caller is part 0 */
    unsigned seen = s_pool.start_gen; /* the caller may have bumped gen already */
    for (;;) {
        long start = s_now_ns();
        for (int i = 0; atomic_load(&s_pool.gen) == seen; i++) {
            _mm_pause();
            if ((i & 63) == 63 && s_now_ns() - start > SPIN_NS)
                break;
        }
        pthread_mutex_lock(&s_pool.lock);
        s_pool.n_sleeping++;
        while (atomic_load(&s_pool.gen) == seen)
            pthread_cond_wait(&s_pool.wake, &s_pool.lock);
        s_pool.n_sleeping--;
        pthread_mutex_unlock(&s_pool.lock);
        seen = atomic_load(&s_pool.gen);
        /* Every worker answers every job, taking part or not, so that the
         * caller never rewrites the job while a worker may still read it. */
        if (t < s_pool.job.n_parts)
            s_run_part(&s_pool.job, t);
        if (atomic_fetch_sub(&s_pool.pending, 1) == 1) {
            pthread_mutex_lock(&s_pool.lock);
            pthread_cond_signal(&s_pool.done);
            pthread_mutex_unlock(&s_pool.lock);
        }
    }
    return NULL;
}

/* In a forked child only the forking thread exists: forget the workers. */
static void s_atfork_child(void)
{
    pthread_mutex_init(&s_pool.busy, NULL);
    pthread_mutex_init(&s_pool.lock, NULL);
    pthread_cond_init(&s_pool.wake, NULL);
    pthread_cond_init(&s_pool.done, NULL);
    s_pool.n_workers = 0;
    s_pool.n_sleeping = 0;
    atomic_store(&s_pool.pending, 0);
}

static void s_atfork_register(void)
{
    pthread_atfork(NULL, NULL, s_atfork_child);
}

/* Starts workers until n_parts - 1 exist (the caller holds busy); returns how
 * many parts can run. Workers block every signal: the process's handlers
 * belong to its main thread. */
static int s_pool_grow(int n_parts)
{
    pthread_once(&s_atfork_once, s_atfork_register);
    if (s_pool.n_workers >= n_parts - 1)
        return n_parts;
    s_pool.start_gen = atomic_load(&s_pool.gen);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    while (s_pool.n_workers < n_parts - 1) {
        pthread_t th;
        if (pthread_create(&th, NULL, s_worker,
                           (void *)(size_t)(s_pool.n_workers + 1)) != 0)
            break;
        pthread_detach(th);
        s_pool.threads[s_pool.n_workers++] = th;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return s_pool.n_workers + 1 < n_parts ? s_pool.n_workers + 1 : n_parts;
}

void gemm_small(float *c, int ldc, const float *a, int lda, const float *w,
                int ldw, int m, int n, int k, float alpha, float beta,
                int n_threads)
{
    assert(m >= 0 && n >= 0 && k >= 0);
    assert(m == 0 || n == 0 || (c && ldc >= n));
    assert(m == 0 || n == 0 || k == 0 || (a && lda >= k && w && ldw >= k));
    if (m == 0 || n == 0)
        return;
    job_t job = {
        .part = s_part_for(gemm_small_path()),
        .c = c, .a = a, .w = w, .ldc = ldc, .lda = lda, .ldw = ldw,
        .m = m, .n = n, .k = k, .n_parts = 1, .alpha = alpha, .beta = beta,
    };
    int want = n_threads < 1 ? 1 : n_threads > MAX_THREADS ? MAX_THREADS : n_threads;
    int blocks = (n + TILE_WPORT - 1) / TILE_WPORT;
    if (want > blocks)
        want = blocks;
    if (want < 2 || (size_t)n * (size_t)k * sizeof *w < SPLIT_MIN_BYTES ||
        pthread_mutex_trylock(&s_pool.busy) != 0) {
        s_run_part(&job, 0);
        return;
    }
    job.n_parts = s_pool_grow(want);
    if (job.n_parts < 2) {
        pthread_mutex_unlock(&s_pool.busy);
        s_run_part(&job, 0);
        return;
    }
    s_pool.job = job;
    atomic_store(&s_pool.pending, s_pool.n_workers);
    pthread_mutex_lock(&s_pool.lock);
    atomic_fetch_add(&s_pool.gen, 1);
    if (s_pool.n_sleeping > 0)
        pthread_cond_broadcast(&s_pool.wake);
    pthread_mutex_unlock(&s_pool.lock);

    s_run_part(&job, 0);

    long start = s_now_ns();
    for (int i = 0; atomic_load(&s_pool.pending) > 0; i++) {
        _mm_pause();
        if ((i & 63) == 63 && s_now_ns() - start > SPIN_NS)
            break;
    }
    pthread_mutex_lock(&s_pool.lock);
    while (atomic_load(&s_pool.pending) > 0)
        pthread_cond_wait(&s_pool.done, &s_pool.lock);
    pthread_mutex_unlock(&s_pool.lock);
    pthread_mutex_unlock(&s_pool.busy);
}
