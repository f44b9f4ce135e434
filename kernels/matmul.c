/* matmul: the dispatch on the weight's dtype, the portable product for any
 * dtype (matmul_private.h) and the float64 oracles.
 *
 * F32 weights go to gemm() (gemm_small up to 16 rows, OpenBLAS above), Q8_0
 * and Q4_0 to kernels/matmul_q.c, the float formats to their kernels; every
 * kernel falls back to matmul_generic() for the portable path.
 */
#include "kernels/matmul.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gemm.h"
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

static const size_t SPLIT_MIN_BYTES = (size_t)1 << 20;

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
 * products and sums whatever m and the split. */
typedef struct xw_job {
    float *y;
    const float *x;
    const tensor_t *w;
    int ldy, ldx, m;
    int64_t n_col_chunks, n_chunks;
} xw_job_t;

static void s_xw_cols(const xw_job_t *job, int64_t c0, int64_t c1)
{
    const tensor_t *w = job->w;
    float buf[XW_COLS];
    for (int i = 0; i < job->m; i++)
        memset(job->y + (size_t)i * job->ldy + c0, 0, (size_t)(c1 - c0) * sizeof(float));
    for (int64_t p = 0; p < w->rows; p++) {
        tensor_row_range_to_f32(w, p, c0, c1 - c0, buf);
        for (int i = 0; i < job->m; i++) {
            float xv = job->x[(size_t)i * job->ldx + p];
            float *yi = job->y + (size_t)i * job->ldy + c0;
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
    job.n_col_chunks = (w->cols + XW_COLS - 1) / XW_COLS;
    job.n_chunks = matmul_chunks(cx, tensor_bytes(w), job.n_col_chunks);
    pool_run(compute_pool(cx), s_xw_chunk, &job, (int)job.n_chunks);
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
    default:
        break;
    }
    matmul_generic(cx, y, ldy, x, ldx, w, m);
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
