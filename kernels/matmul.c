/* matmul: the dispatch on the weight's dtype, the portable product for any
 * dtype (matmul_private.h) and the float64 oracles.
 *
 * F32 weights go to gemm() (gemm_small up to 16 rows, OpenBLAS above), Q8_0
 * and Q4_0 to kernels/matmul_q.c, the float formats to their kernels; every
 * kernel falls back to matmul_generic() for the portable path.
 */
#include "kernels/matmul.h"

#include <assert.h>
#include <cblas.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "kernels/gemm.h"
#include "kernels/gemm_small.h"
#include "kernels/matmul_private.h"
#include "kernels/matmul_q.h"
#include "kernels/pool.h"

enum {
    SEG = 2048,          /* floats of a W row decoded at once (8 KB of stack) */
    GROUP = 16,          /* rows of x whose accumulators are live at once */
    LANES = 8,           /* partial sums per entry (gemm_small's portable path) */
    XW_COLS = 256,       /* output columns of one matmul_xw chunk */
    CHUNKS_PER_THREAD = 4,
};

/* A product reading fewer bytes of W runs on the calling thread. Measured in
 * bytes of the format, not weights: a Q4_0 attention projection of 1024 x 1024
 * is 576 KB, and left on one thread (the old 1 MB rule, made for float32) it
 * kept the other core idle for a tenth of every decoded token. A spinning
 * worker takes a chunk within about a microsecond, a sleeping one in tens. */
static const size_t SPLIT_MIN_BYTES = (size_t)128 << 10;

int matmul_chunks(compute_t *cx, size_t bytes, int64_t units)
{
    int threads = pool_threads(compute_pool(cx));
    if (threads < 2 || bytes < SPLIT_MIN_BYTES || units < 2)
        return 1;
    int64_t n = (int64_t)threads * CHUNKS_PER_THREAD;
    return (int)(n < units ? n : units);
}

/* ---- the portable product --------------------------------------------------- */

typedef struct g_job {
    float *y;
    const float *x;
    const tensor_t *w;
    int ldy, ldx, m, n_chunks;
} g_job_t;

/* Rows [j0, j1) of W against every row of x. */
static void s_generic_rows(const g_job_t *job, int64_t j0, int64_t j1)
{
    const tensor_t *w = job->w;
    const int64_t k = w->cols;
    const bool one_seg = k <= SEG;
    float buf[SEG];
    for (int64_t j = j0; j < j1; j++) {
        bool decoded = false;
        for (int ig = 0; ig < job->m; ig += GROUP) {
            int gn = job->m - ig < GROUP ? job->m - ig : GROUP;
            float acc[GROUP][LANES];
            memset(acc, 0, sizeof acc);
            for (int64_t p0 = 0; p0 < k; p0 += SEG) {
                int64_t len = k - p0 < SEG ? k - p0 : SEG;
                if (!(one_seg && decoded))
                    tensor_row_range_to_f32(w, j, p0, len, buf);
                decoded = true;
                for (int i = 0; i < gn; i++) {
                    const float *xi = job->x + (size_t)(ig + i) * job->ldx + p0;
                    float *s = acc[i];
                    int64_t p = 0;
                    for (; p + LANES <= len; p += LANES)
                        for (int l = 0; l < LANES; l++)
                            s[l] += xi[p + l] * buf[p + l];
                    for (int l = 0; p + l < len; l++)
                        s[l] += xi[p + l] * buf[p + l];
                }
            }
            for (int i = 0; i < gn; i++) {
                const float *s = acc[i];
                job->y[(size_t)(ig + i) * job->ldy + j] =
                    ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
            }
        }
    }
}

static void s_generic_chunk(void *arg, int t)
{
    const g_job_t *job = arg;
    int64_t n = job->w->rows;
    s_generic_rows(job, n * t / job->n_chunks, n * (t + 1) / job->n_chunks);
}

void matmul_generic(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                    const tensor_t *w, int m)
{
    if (m == 0 || w->rows == 0)
        return;
    g_job_t job = {.y = y, .x = x, .w = w, .ldy = ldy, .ldx = ldx, .m = m};
    job.n_chunks = matmul_chunks(cx, tensor_bytes(w), w->rows);
    pool_run(compute_pool(cx), s_generic_chunk, &job, job.n_chunks);
}

/* y = x W: each chunk owns XW_COLS output columns, walks W's rows in order
 * and adds x[i][p] * W[p][c] into y, so entry (i, c) is the same sequence of
 * products and sums whatever m and the split. W's slices are decoded by the
 * format's vector decoder where there is one (the AVX2 and AVX-512 paths),
 * and the sums are FMAs there (mul then add on the portable path). */
typedef struct xw_job {
    float *y;
    const float *x;
    const tensor_t *w;
    matmul_decode_fn *decode;  /* NULL: tensor_row_range_to_f32 */
    bool fma;                  /* the AVX2 axpy */
    int ldy, ldx, m;
    int64_t n_col_chunks, n_chunks;
} xw_job_t;

/* y[c] += a * w[c], c < n, by FMAs. */
__attribute__((target("avx2,fma"))) static void s_axpy_avx2(float *y, float a, const float *w,
                                                           int64_t n)
{
    const __m256 av = _mm256_set1_ps(a);
    int64_t c = 0;
    for (; c + 8 <= n; c += 8)
        _mm256_storeu_ps(y + c, _mm256_fmadd_ps(av, _mm256_loadu_ps(w + c),
                                                _mm256_loadu_ps(y + c)));
    for (; c < n; c++)
        y[c] = __builtin_fmaf(a, w[c], y[c]);
}

static void s_xw_cols(const xw_job_t *job, int64_t c0, int64_t c1)
{
    const tensor_t *w = job->w;
    float buf[XW_COLS];
    for (int i = 0; i < job->m; i++)
        memset(job->y + (size_t)i * job->ldy + c0, 0, (size_t)(c1 - c0) * sizeof(float));
    for (int64_t p = 0; p < w->rows; p++) {
        if (job->decode)
            job->decode(w, p, c0, c1 - c0, buf);
        else
            tensor_row_range_to_f32(w, p, c0, c1 - c0, buf);
        for (int i = 0; i < job->m; i++) {
            float xv = job->x[(size_t)i * job->ldx + p];
            float *yi = job->y + (size_t)i * job->ldy + c0;
            if (job->fma) {
                s_axpy_avx2(yi, xv, buf, c1 - c0);
                continue;
            }
            for (int64_t c = 0; c < c1 - c0; c++)
                yi[c] += xv * buf[c];
        }
    }
}

static void s_xw_chunk(void *arg, int t)
{
    const xw_job_t *job = arg;
    int64_t b0 = job->n_col_chunks * t / job->n_chunks;
    int64_t b1 = job->n_col_chunks * (t + 1) / job->n_chunks;
    for (int64_t b = b0; b < b1; b++) {
        int64_t c0 = b * XW_COLS;
        int64_t c1 = c0 + XW_COLS < job->w->cols ? c0 + XW_COLS : job->w->cols;
        s_xw_cols(job, c0, c1);
    }
}

void matmul_xw_generic(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                       const tensor_t *w, int m)
{
    if (m == 0 || w->cols == 0)
        return;
    xw_job_t job = {.y = y, .x = x, .w = w, .ldy = ldy, .ldx = ldx, .m = m};
    if (compute_path(cx) != COMPUTE_PATH_PORTABLE) {
        job.fma = true;
        int64_t align = 1;
        job.decode = matmul_decoder(cx, w, &align);
        if (XW_COLS % align != 0)
            job.decode = NULL;
    }
    job.n_col_chunks = (w->cols + XW_COLS - 1) / XW_COLS;
    job.n_chunks = matmul_chunks(cx, tensor_bytes(w), job.n_col_chunks);
    pool_run(compute_pool(cx), s_xw_chunk, &job, (int)job.n_chunks);
}

/* ---- a format's kernels: decode path and prefill path ------------------------- */

typedef struct run_job {
    matmul_part_fn *part;
    float *y;
    const float *x;
    const tensor_t *w;
    int ldy, ldx, m;
    int64_t n_blocks;    /* of MT_WMAX W rows */
    int n_chunks;
} run_job_t;

enum { WBLOCK = 4 };     /* chunks are cut at multiples of the widest tile */

static void s_run_chunk(void *arg, int t)
{
    const run_job_t *job = arg;
    int64_t b0 = job->n_blocks * t / job->n_chunks;
    int64_t b1 = job->n_blocks * (t + 1) / job->n_chunks;
    int64_t j0 = b0 * WBLOCK < job->w->rows ? b0 * WBLOCK : job->w->rows;
    int64_t j1 = b1 * WBLOCK < job->w->rows ? b1 * WBLOCK : job->w->rows;
    if (j0 < j1)
        job->part(job->w, job->y, job->ldy, job->x, job->ldx, job->m, j0, j1);
}

static void s_run_parts(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                        const tensor_t *w, int m, matmul_part_fn *part)
{
    run_job_t job = {.part = part, .y = y, .x = x, .w = w, .ldy = ldy, .ldx = ldx, .m = m};
    job.n_blocks = (w->rows + WBLOCK - 1) / WBLOCK;
    job.n_chunks = matmul_chunks(cx, tensor_bytes(w), job.n_blocks);
    pool_run(compute_pool(cx), s_run_chunk, &job, job.n_chunks);
}

/* The prefill path (more than GEMM_SMALL_MAX_ROWS rows; F16 and BF16 on the
 * AVX-512 path have a kernel of their own, kernels/matmul_f16_prefill.c,
 * about twice as fast there): blocks of PF_ROWS x
 * PF_COLS weights decoded into a float tile (1 MB, in L2/L3) by the format's
 * vector decoder, then OpenBLAS's sgemm on the tile, accumulating over the
 * column blocks (beta 1 after the first). Chosen over running the decode
 * path's own tiles on all the rows by measurement (m = 128 on a (1024 x
 * 2816) weight, one thread, interleaved pairs on the 2-core AMD EPYC
 * development machine under load: 1.4x to 5x more GFLOP/s for BF16 and
 * MXFP4, never less): sgemm runs near the cores' float peak, while the
 * dot-product tiles reread x for every 4 rows of W and decode W again for
 * every 4 rows of x. Decoding costs one pass over W per call, a few percent
 * of the sgemm at 128 rows. The tile is a per-thread buffer kept for the
 * thread's life (a pthread key frees it at thread exit): the hot path does
 * not allocate after a thread's first prefill; when that one allocation
 * fails, the decode path's tiles run instead (slower, never wrong). Rows
 * above 16 are not batch-invariant (matmul.h promises it up to 16). */
enum {
    PF_ROWS = 256,
    PF_COLS = 1024,
    PF_ROW_ALIGN = 16,   /* chunks of W rows start at multiples of this (of WBLOCK too) */
};

static pthread_key_t s_tile_key;
static pthread_once_t s_tile_once = PTHREAD_ONCE_INIT;
static bool s_tile_key_ok;

static void s_tile_key_init(void)
{
    s_tile_key_ok = pthread_key_create(&s_tile_key, mem_free) == 0;
}

static float *s_tile(void)
{
    pthread_once(&s_tile_once, s_tile_key_init);
    if (!s_tile_key_ok)
        return NULL;
    float *tile = pthread_getspecific(s_tile_key);
    if (!tile) {
        tile = mem_alloc_aligned((size_t)PF_ROWS * PF_COLS * sizeof *tile);
        if (tile && pthread_setspecific(s_tile_key, tile) != 0) {
            mem_free(tile);
            tile = NULL;
        }
    }
    return tile;
}

/* Rows [j0, j1) of the prefill path: tiles of up to nb_max rows and kb_max
 * columns decoded and multiplied, accumulating over the column blocks. */
typedef struct pf_job {
    float *y;
    const float *x;
    const tensor_t *w;
    matmul_part_fn *part;
    matmul_decode_fn *decode;
    int ldy, ldx, m;
    int64_t kb_max, rows_per_chunk;
} pf_job_t;

static void s_prefill_chunk(void *arg, int t)
{
    const pf_job_t *job = arg;
    const tensor_t *w = job->w;
    const int64_t j0 = (int64_t)t * job->rows_per_chunk;
    const int64_t nb = w->rows - j0 < job->rows_per_chunk ? w->rows - j0 : job->rows_per_chunk;
    float *tile = s_tile();
    if (!tile) {   /* this thread's tile could not be made: the decode tiles */
        job->part(w, job->y, job->ldy, job->x, job->ldx, job->m, j0, j0 + nb);
        return;
    }
    for (int64_t p0 = 0; p0 < w->cols; p0 += job->kb_max) {
        const int64_t kb = w->cols - p0 < job->kb_max ? w->cols - p0 : job->kb_max;
        for (int64_t r = 0; r < nb; r++)
            job->decode(w, j0 + r, p0, kb, tile + r * kb);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, job->m, (int)nb, (int)kb, 1.0f,
                    job->x + p0, job->ldx, tile, (int)kb, p0 == 0 ? 0.0f : 1.0f,
                    job->y + j0, job->ldy);
    }
}

void matmul_run(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                const tensor_t *w, int m, matmul_part_fn *part, matmul_decode_fn *decode,
                int64_t align)
{
    if (m == 0 || w->rows == 0)
        return;
    /* (A scale block wider than the whole tile, absurd but valid, takes the
     * tiles too.) */
    const bool prefill = m > GEMM_SMALL_MAX_ROWS && w->cols > 0 &&
                         align <= (int64_t)PF_ROWS * PF_COLS;
    if (!prefill) {
        s_run_parts(cx, y, ldy, x, ldx, w, m, part);
        return;
    }
    /* Chunks of W rows, each decoded and multiplied by one thread on its own
     * tile (OpenBLAS runs single-threaded: core/blas.h): at most a tile's
     * rows, and few enough rows that every thread gets about two chunks. */
    const int64_t kb_max = PF_COLS / align * align > 0 ? PF_COLS / align * align : align;
    const int64_t nb_max = (int64_t)PF_ROWS * PF_COLS / kb_max;
    const int64_t threads = pool_threads(compute_pool(cx));
    int64_t rows = (w->rows + 2 * threads - 1) / (2 * threads);
    rows = (rows + PF_ROW_ALIGN - 1) / PF_ROW_ALIGN * PF_ROW_ALIGN;
    rows = rows < nb_max ? rows : nb_max > PF_ROW_ALIGN ? nb_max / PF_ROW_ALIGN * PF_ROW_ALIGN
                                                        : nb_max;
    pf_job_t job = {.y = y, .x = x, .w = w, .part = part, .decode = decode, .ldy = ldy,
                    .ldx = ldx, .m = m, .kb_max = kb_max, .rows_per_chunk = rows};
    int64_t n_chunks = (w->rows + rows - 1) / rows;
    assert(n_chunks <= POOL_MAX_CHUNKS);
    pool_run(compute_pool(cx), s_prefill_chunk, &job, (int)n_chunks);
}

matmul_decode_fn *matmul_decoder(compute_t *cx, const tensor_t *w, int64_t *align)
{
    *align = 1;
    switch (w->dtype) {
    case DTYPE_F16:
    case DTYPE_BF16:
        return matmul_f16_decoder(cx, w);
    case DTYPE_F8_E4M3:
        *align = w->block_k;
        return matmul_fp8_decoder(cx, w);
    case DTYPE_MXFP4:
        *align = 32;
        return matmul_mxfp4_decoder(cx, w);
    default:
        return NULL;
    }
}

/* ---- dispatch ------------------------------------------------------------------ */

static void s_check(const tensor_t *w)
{
    (void)w;
    assert((unsigned)w->dtype < DTYPE_COUNT);
    assert(w->rows >= 0 && w->cols >= 0);
    assert(w->rows == 0 || w->cols == 0 || w->data);
    assert(w->row_stride >= dtype_row_bytes(w->dtype, w->cols));
    assert(dtype_row_bytes(w->dtype, w->cols) > 0 || w->cols == 0);
}

void matmul(compute_t *cx, float *y, int ldy, const float *x, int ldx,
            const tensor_t *w, int m)
{
    assert(cx && w && m >= 0);
    s_check(w);
    assert(m == 0 || w->rows == 0 || (y && ldy >= w->rows));
    assert(m == 0 || w->cols == 0 || (x && ldx >= w->cols));
    switch (w->dtype) {
    case DTYPE_F32:
        assert(w->row_stride % sizeof(float) == 0);
        gemm(cx, y, ldy, x, ldx, w->data, (int)(w->row_stride / sizeof(float)), m,
             (int)w->rows, (int)w->cols, true, 1.0f, 0.0f);
        return;
    case DTYPE_Q8_0:
        matmul_q8_0(cx, y, ldy, x, ldx, w, m);
        return;
    case DTYPE_Q4_0:
        matmul_q4_0(cx, y, ldy, x, ldx, w, m);
        return;
    case DTYPE_F16:
    case DTYPE_BF16:
        matmul_f16(cx, y, ldy, x, ldx, w, m);
        return;
    case DTYPE_F8_E4M3:
        matmul_fp8(cx, y, ldy, x, ldx, w, m);
        return;
    case DTYPE_MXFP4:
        matmul_mxfp4(cx, y, ldy, x, ldx, w, m);
        return;
    default:
        break;
    }
    matmul_generic(cx, y, ldy, x, ldx, w, m);
}

void matmul_many(compute_t *cx, const matmul_op_t *ops, int n)
{
    assert(cx && n >= 0 && (n == 0 || ops));
    /* Runs of quantized products go to their kernels as one batch each;
     * the rest one by one (their order is free: the products are
     * independent). */
    for (int i = 0; i < n;) {
        int j = i;
        while (j < n && (ops[j].w->dtype == DTYPE_Q8_0 || ops[j].w->dtype == DTYPE_Q4_0))
            j++;
        if (j > i) {
            matmul_q_many(cx, ops + i, j - i);
            i = j;
            continue;
        }
        matmul(cx, ops[i].y, ops[i].ldy, ops[i].x, ops[i].ldx, ops[i].w, ops[i].m);
        i++;
    }
}

void matmul_xw(compute_t *cx, float *y, int ldy, const float *x, int ldx,
               const tensor_t *w, int m)
{
    assert(cx && w && m >= 0);
    s_check(w);
    assert(m == 0 || w->cols == 0 || (y && ldy >= w->cols));
    assert(m == 0 || w->rows == 0 || (x && ldx >= w->rows));
    if (w->dtype == DTYPE_F32) {
        assert(w->row_stride % sizeof(float) == 0);
        gemm(cx, y, ldy, x, ldx, w->data, (int)(w->row_stride / sizeof(float)), m,
             (int)w->cols, (int)w->rows, false, 1.0f, 0.0f);
        return;
    }
    matmul_xw_generic(cx, y, ldy, x, ldx, w, m);
}

/* ---- oracles ---------------------------------------------------------------------- */

static float *s_row_buffer(int64_t n)
{
    float *buf = malloc((size_t)(n > 0 ? n : 1) * sizeof *buf);
    if (!buf)
        abort(); /* an oracle of the tests: no way to report, nothing to keep */
    return buf;
}

void matmul_ref(float *y, int ldy, const float *x, int ldx, const tensor_t *w, int m)
{
    float *row = s_row_buffer(w->cols);
    for (int64_t j = 0; j < w->rows; j++) {
        tensor_row_to_f32(w, j, row);
        for (int i = 0; i < m; i++) {
            const float *xi = x + (size_t)i * ldx;
            double sum = 0.0;
            for (int64_t p = 0; p < w->cols; p++)
                sum += (double)xi[p] * (double)row[p];
            y[(size_t)i * ldy + j] = (float)sum;
        }
    }
    free(row);
}

void matmul_xw_ref(float *y, int ldy, const float *x, int ldx, const tensor_t *w, int m)
{
    double *acc = malloc((size_t)(w->cols > 0 ? w->cols : 1) * sizeof *acc);
    float *row = s_row_buffer(w->cols);
    if (!acc)
        abort();
    for (int i = 0; i < m; i++) {
        const float *xi = x + (size_t)i * ldx;
        for (int64_t c = 0; c < w->cols; c++)
            acc[c] = 0.0;
        for (int64_t p = 0; p < w->rows; p++) {
            tensor_row_to_f32(w, p, row);
            for (int64_t c = 0; c < w->cols; c++)
                acc[c] += (double)xi[p] * (double)row[c];
        }
        for (int64_t c = 0; c < w->cols; c++)
            y[(size_t)i * ldy + c] = (float)acc[c];
    }
    free(row);
    free(acc);
}
