/* test_matmul: matmul() and matmul_xw() for every dtype, on every code path
 * this CPU runs (compute_path_runs), one thread and several, against the
 * float64 oracles matmul_ref()/matmul_xw_ref(); the oracles against plain
 * products on the decoded rows; batch invariance (a row alone is
 * bit-identical to the same row among 16, whatever the thread count); row
 * views (FP8 views that start inside a block row, MXFP4 views, strided rows).
 *
 * Shapes are random within bounds and include the edges: k not a multiple
 * of the vector width, k above the kernels' slice sizes, FP8 block grids
 * with non-square blocks and partial edge blocks, odd m, m above 16.
 *
 * The tolerance is the bound for a float32 dot product of length k over the
 * exact decoded weights, |err| <= (k + 2) u sum |x_p w_p| (u = 2^-24), per
 * entry, plus a few float32 subnormals: exact arithmetic, never flaky.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/mem.h"
#include "core/tensor.h"
#include "kernels/compute.h"
#include "kernels/gemm.h"
#include "kernels/gemm_small.h"
#include "kernels/matmul.h"
#include "kernels/matmul_private.h"
#include "tests/testutil.h"

/* A weight of some dtype with its own buffers. */
typedef struct wbuf {
    tensor_t t;
    uint8_t *data;
    float *scales;
    uint8_t *e8m0;
} wbuf_t;

static void *s_alloc(size_t n)
{
    void *p = calloc(n ? n : 1, 1);
    assert_non_null(p);
    return p;
}

/* A random (rows, cols) weight of dtype; stride_rows >= 1 spaces the rows
 * (every stride_rows-th row of a bigger tensor, as fused checkpoints do).
 * FP8 uses block (bn, bk). Values are random normal (the float formats,
 * through their encoders), random codes (FP8 without NaN codes, MXFP4) with
 * random scales. */
static wbuf_t s_weight(testrng_t *rng, dtype_t dtype, int64_t rows, int64_t cols,
                       int stride_rows, int bn, int bk)
{
    wbuf_t w = {0};
    size_t row_bytes = dtype_row_bytes(dtype, cols);
    assert_true(row_bytes > 0 || cols == 0);
    size_t stride = row_bytes * (size_t)stride_rows + (stride_rows > 1 ? 3 : 0);
    if (dtype == DTYPE_F32 || dtype == DTYPE_Q8_0 || dtype == DTYPE_Q4_0 ||
        dtype == DTYPE_MXFP4 || dtype == DTYPE_F16 || dtype == DTYPE_BF16)
        stride = (stride + 3) / 4 * 4; /* F32 rows: whole floats */
    w.data = s_alloc(stride * (size_t)(rows ? rows : 1) + 64);
    w.t = (tensor_t){.dtype = dtype, .rows = rows, .cols = cols, .data = w.data,
                     .row_stride = stride};
    float *tmp = s_alloc((size_t)(cols ? cols : 1) * sizeof(float));
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *row = w.data + (size_t)r * stride;
        switch (dtype) {
        case DTYPE_F8_E4M3:
        case DTYPE_MXFP4:
            for (size_t b = 0; b < row_bytes; b++) {
                uint8_t q = (uint8_t)(testrng_uniform(rng) * 256);
                if (dtype == DTYPE_F8_E4M3 && (q & 0x7f) == 0x7f)
                    q = 0x3f;
                row[b] = q;
            }
            break;
        default:
            testrng_fill(rng, tmp, (size_t)cols, 1.0f);
            assert_int_equal(dtype_row_from_f32(dtype, tmp, row, cols), 0);
        }
    }
    if (dtype == DTYPE_F8_E4M3) {
        int64_t gr = (rows + bn - 1) / bn, gc = (cols + bk - 1) / bk;
        size_t ss = (size_t)gc + 1; /* a padded scale row */
        w.scales = s_alloc(ss * (size_t)(gr ? gr : 1) * sizeof(float));
        for (int64_t i = 0; i < gr * (int64_t)ss; i++)
            w.scales[i] = (float)(0.001 + testrng_uniform(rng) * 0.01);
        w.t.scale_inv = w.scales;
        w.t.block_n = bn;
        w.t.block_k = bk;
        w.t.scale_stride = ss;
    }
    if (dtype == DTYPE_MXFP4) {
        size_t ss = (size_t)(cols / 32) + 2;
        w.e8m0 = s_alloc(ss * (size_t)(rows ? rows : 1));
        for (size_t i = 0; i < ss * (size_t)rows; i++)
            w.e8m0[i] = (uint8_t)(120 + testrng_uniform(rng) * 10);
        w.t.e8m0 = w.e8m0;
        w.t.scale_stride = ss;
    }
    free(tmp);
    return w;
}

static void s_weight_free(wbuf_t *w)
{
    free(w->data);
    free(w->scales);
    free(w->e8m0);
}

/* Q8_0 and Q4_0 quantize each block of 32 activations to 8 bits (kquant's
 * kernels/matmul_q.c): x becomes q dx with dx = amax / 127, off by at most
 * dx / 2 (plus a few roundings of x * id), so the product moves by at most
 * sum over blocks of (dx / 2 (1 + (k + 8) u) + 4 u amax) sum |w| there. */
static double s_act_bound(const float *x, const float *w, int64_t k)
{
    double e = 0;
    for (int64_t b = 0; b + 32 <= k; b += 32) {
        double amax = 0, sw = 0;
        for (int p = 0; p < 32; p++) {
            amax = fmax(amax, fabs((double)x[b + p]));
            sw += fabs((double)w[b + p]);
        }
        double dx = amax / 127;
        e += (dx / 2 * (1 + (double)(k + 8) * 0x1p-24) + 4 * 0x1p-24 * amax) * sw;
    }
    return e;
}

/* bound[i][j] = (k + 2) u sum_p |x_ip w_jp| + 1e-30 (+ s_act_bound for
 * Q8_0 and Q4_0). */
static void s_bound(double *bound, const float *x, int ldx, const tensor_t *w, int m)
{
    float *row = s_alloc((size_t)(w->cols ? w->cols : 1) * sizeof(float));
    for (int64_t j = 0; j < w->rows; j++) {
        tensor_row_to_f32(w, j, row);
        for (int i = 0; i < m; i++) {
            double s = 0;
            for (int64_t p = 0; p < w->cols; p++)
                s += fabs((double)x[(size_t)i * ldx + p] * row[p]);
            bound[(size_t)i * w->rows + j] = (double)(w->cols + 2) * 0x1p-24 * s + 1e-30;
            if (w->dtype == DTYPE_Q8_0 || w->dtype == DTYPE_Q4_0)
                bound[(size_t)i * w->rows + j] += s_act_bound(x + (size_t)i * ldx, row, w->cols);
        }
    }
    free(row);
}

static void s_expect_close(const float *y, int ldy, const float *ref, int ldr,
                           const double *bound, int m, int64_t n, const char *what)
{
    for (int i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double d = fabs((double)y[(size_t)i * ldy + j] - ref[(size_t)i * ldr + j]);
            if (!(d <= bound[(size_t)i * n + j]))
                fail_msg("%s: entry (%d, %ld): %.9g vs oracle %.9g (bound %.3g)", what, i,
                         (long)j, y[(size_t)i * ldy + j], ref[(size_t)i * ldr + j],
                         bound[(size_t)i * n + j]);
        }
}

/* The paths this CPU runs, with a note for the others. */
static int s_paths(compute_path_t *paths)
{
    static const compute_path_t all[] = {COMPUTE_PATH_PORTABLE, COMPUTE_PATH_AVX2,
                                         COMPUTE_PATH_AVX512};
    static bool noted[3];
    int n = 0;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (compute_path_runs(all[i]))
            paths[n++] = all[i];
        else if (!noted[i] && (noted[i] = true))
            print_message("  matmul: this CPU cannot run the %s path, not tested here\n",
                          compute_path_name(all[i]));
    }
    return n;
}

static compute_t *s_context(compute_path_t path, int threads)
{
    compute_t *cx = compute_new(threads, NULL);
    assert_non_null(cx);
    assert_int_equal(compute_set_path(cx, path), 0);
    return cx;
}

static const dtype_t s_dtypes[] = {DTYPE_F32, DTYPE_F16, DTYPE_BF16, DTYPE_F8_E4M3,
                                   DTYPE_MXFP4, DTYPE_Q8_0, DTYPE_Q4_0};
enum { N_DTYPES = sizeof s_dtypes / sizeof s_dtypes[0] };

static bool s_blocked(dtype_t d)
{
    return dtype_info(d)->block > 1;
}

/* FP8 block sizes: square, non-square, larger than the matrix, 1. */
static const int s_blocks[][2] = {{32, 32}, {3, 5}, {7, 2}, {4, 16}, {128, 128}, {1, 1}, {16, 48}};

/* One product of each dtype on each path and thread count against the
 * oracle, for a given shape. */
static void s_check_shape(testrng_t *rng, dtype_t dtype, int m, int64_t n, int64_t k,
                          int stride_rows, int bi)
{
    compute_path_t paths[3];
    int n_paths = s_paths(paths);
    wbuf_t w = s_weight(rng, dtype, n, k, stride_rows, s_blocks[bi][0], s_blocks[bi][1]);
    int ldx = (int)k + 3, ldy = (int)n + 5;
    float *x = s_alloc((size_t)m * ldx * sizeof(float));
    testrng_fill(rng, x, (size_t)m * ldx, 1.0f);
    float *ref = s_alloc((size_t)m * n * sizeof(float));
    double *bound = s_alloc((size_t)m * n * sizeof(double));
    float *y = s_alloc((size_t)m * ldy * sizeof(float));
    matmul_ref(ref, (int)n, x, ldx, &w.t, m);
    s_bound(bound, x, ldx, &w.t, m);
    char what[160];
    for (int pi = 0; pi < n_paths; pi++) {
        for (int threads = 1; threads <= 2; threads++) {
            compute_t *cx = s_context(paths[pi], threads);
            for (size_t q = 0; q < (size_t)m * ldy; q++)
                y[q] = NAN; /* y is written, never read */
            matmul(cx, y, ldy, x, ldx, &w.t, m);
            snprintf(what, sizeof what, "%s %s %d thr m=%d n=%ld k=%ld stride_rows=%d blk=%dx%d",
                     dtype_info(dtype)->name, compute_path_name(paths[pi]), threads, m,
                     (long)n, (long)k, stride_rows, s_blocks[bi][0], s_blocks[bi][1]);
            s_expect_close(y, ldy, ref, (int)n, bound, m, n, what);
            compute_destroy(&cx);
        }
    }
    free(y);
    free(bound);
    free(ref);
    free(x);
    s_weight_free(&w);
}

static void test_against_oracle(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 12);
    static const int ms[] = {1, 2, 3, 5, 16, 17, 33};
    for (int d = 0; d < N_DTYPES; d++) {
        dtype_t dtype = s_dtypes[d];
        for (int trial = 0; trial < 12; trial++) {
            int m = ms[trial % 7];
            int64_t n = 1 + (int64_t)(testrng_uniform(&rng) * 70);
            int64_t k = s_blocked(dtype) ? 32 * (1 + (int64_t)(testrng_uniform(&rng) * 9))
                                         : 1 + (int64_t)(testrng_uniform(&rng) * 300);
            int stride_rows = trial % 3 == 2 ? 2 : 1;
            s_check_shape(&rng, dtype, m, n, k, stride_rows, trial % 7);
        }
        /* Long rows (beyond the kernels' slices) and big enough to split. */
        int64_t big_k = s_blocked(dtype) ? 4160 : 4133;
        s_check_shape(&rng, dtype, 2, 67, big_k, 1, 0);
        s_check_shape(&rng, dtype, 3, 300, 1024, 1, 4);
        /* The prefill path over several row and column tiles. */
        s_check_shape(&rng, dtype, 19, 300, big_k, 1, 0);
    }
}

/* F16 and BF16 above 16 rows (the AVX-512 path's own prefill kernel, the
 * tiles and OpenBLAS elsewhere): m in tiles of 12 with a remainder, W rows
 * not a multiple of its blocks of 32, k across its column blocks of 256 and
 * not a multiple of 16, a strided row view. */
static void test_prefill_f16(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 15);
    static const struct { int m; int64_t n, k; int stride_rows; } shapes[] = {
        {17, 33, 96, 1}, {40, 300, 1000, 1}, {128, 67, 257, 2}, {29, 64, 2816, 1},
    };
    for (int bf = 0; bf < 2; bf++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            s_check_shape(&rng, bf ? DTYPE_BF16 : DTYPE_F16, shapes[s].m, shapes[s].n,
                          shapes[s].k, shapes[s].stride_rows, 0);
}

/* Above 16 rows the F16 and BF16 kernels multiply the exact weights: with x
 * the identity, y = W^T, for every finite 16-bit pattern (F16 subnormals
 * included; the infinities and NaNs, which would make 0 x w a NaN, are left
 * out). */
static void test_prefill_f16_exact(void **state)
{
    (void)state;
    compute_path_t paths[3];
    int n_paths = s_paths(paths);
    enum { N = 256 };
    uint16_t *data = s_alloc((size_t)N * N * sizeof *data);
    float *x = s_alloc((size_t)N * N * sizeof *x);
    float *y = s_alloc((size_t)N * N * sizeof *y);
    float *row = s_alloc((size_t)N * sizeof *row);
    for (int i = 0; i < N; i++)
        x[(size_t)i * N + i] = 1.0f;
    for (int bf = 0; bf < 2; bf++) {
        const uint16_t special = bf ? 0x7f80 : 0x7c00; /* exponent all ones */
        for (uint32_t v = 0; v < N * N; v++)
            data[v] = (v & special) == special ? 0 : (uint16_t)v;
        tensor_t w = {.dtype = bf ? DTYPE_BF16 : DTYPE_F16, .rows = N, .cols = N,
                      .data = data, .row_stride = N * sizeof *data};
        for (int pi = 0; pi < n_paths; pi++) {
            compute_t *cx = s_context(paths[pi], 2);
            matmul(cx, y, N, x, N, &w, N);
            for (int64_t j = 0; j < N; j++) {
                tensor_row_to_f32(&w, j, row);
                for (int i = 0; i < N; i++)
                    if (!(y[(size_t)i * N + j] == row[i]))
                        fail_msg("%s %s: W[%ld][%d] = %a, the product gave %a",
                                 dtype_info(w.dtype)->name, compute_path_name(paths[pi]),
                                 (long)j, i, row[i], y[(size_t)i * N + j]);
            }
            compute_destroy(&cx);
        }
    }
    free(row);
    free(y);
    free(x);
    free(data);
}

/* A row of x alone gives bit-identical results to the same row among 16
 * others, on every path, with one thread and two. */
static void test_batch_invariance(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 34);
    compute_path_t paths[3];
    int n_paths = s_paths(paths);
    enum { M = 16 };
    for (int d = 0; d < N_DTYPES; d++) {
        dtype_t dtype = s_dtypes[d];
        int64_t n = 203, k = s_blocked(dtype) ? 1088 : 1043;
        wbuf_t w = s_weight(&rng, dtype, n, k, 1, 7, 48);
        float *x = s_alloc((size_t)M * k * sizeof(float));
        testrng_fill(&rng, x, (size_t)M * k, 1.0f);
        float *all = s_alloc((size_t)M * n * sizeof(float));
        float *one = s_alloc((size_t)n * sizeof(float));
        for (int pi = 0; pi < n_paths; pi++) {
            compute_t *cx2 = s_context(paths[pi], 2);
            compute_t *cx1 = s_context(paths[pi], 1);
            matmul(cx2, all, (int)n, x, (int)k, &w.t, M);
            for (int i = 0; i < M; i++) {
                matmul(i % 2 ? cx1 : cx2, one, (int)n, x + (size_t)i * k, (int)k, &w.t, 1);
                if (memcmp(one, all + (size_t)i * n, (size_t)n * sizeof(float)) != 0)
                    fail_msg("%s %s: row %d alone differs from the same row among %d",
                             dtype_info(dtype)->name, compute_path_name(paths[pi]), i, M);
            }
            /* and among 5 (a different tile split) */
            matmul(cx1, all, (int)n, x + 3 * k, (int)k, &w.t, 5);
            matmul(cx2, one, (int)n, x + 5 * k, (int)k, &w.t, 1);
            assert_memory_equal(one, all + 2 * n, (size_t)n * sizeof(float));
            compute_destroy(&cx1);
            compute_destroy(&cx2);
        }
        free(one);
        free(all);
        free(x);
        s_weight_free(&w);
    }
}

/* A view of rows [first, first + len) computes the same entries as those
 * rows of the whole tensor (FP8 views start inside block rows). */
static void test_row_views(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 56);
    compute_t *cx = compute_new(2, NULL);
    assert_non_null(cx);
    for (int d = 0; d < N_DTYPES; d++) {
        dtype_t dtype = s_dtypes[d];
        int64_t n = 37, k = 96;
        wbuf_t w = s_weight(&rng, dtype, n, k, 1, 5, 40);
        float x[3 * 96];
        testrng_fill(&rng, x, 3 * 96, 1.0f);
        float whole[3 * 37], part[3 * 37], part_ref[3 * 37], whole_ref[3 * 37];
        matmul(cx, whole, (int)n, x, (int)k, &w.t, 3);
        matmul_ref(whole_ref, (int)n, x, (int)k, &w.t, 3);
        static const int64_t firsts[][2] = {{0, 37}, {3, 9}, {12, 1}, {36, 1}, {7, 30}};
        for (size_t f = 0; f < sizeof firsts / sizeof firsts[0]; f++) {
            tensor_t v = tensor_rows(&w.t, firsts[f][0], firsts[f][1]);
            matmul(cx, part, (int)v.rows, x, (int)k, &v, 3);
            matmul_ref(part_ref, (int)v.rows, x, (int)k, &v, 3);
            for (int i = 0; i < 3; i++)
                for (int64_t j = 0; j < v.rows; j++) {
                    assert_true(part[i * v.rows + j] == whole[i * n + firsts[f][0] + j]);
                    assert_true(part_ref[i * v.rows + j] ==
                                whole_ref[i * n + firsts[f][0] + j]);
                }
        }
        s_weight_free(&w);
    }
    compute_destroy(&cx);
}

/* The oracle itself against a product written out on the decoded rows. */
static void test_oracles(void **state)
{
    (void)state;
    /* W = [[1, 2], [3, 4], [5, 6]] in F16 (exact), x = [[1, -1], [0.5, 2]]. */
    float wf[6] = {1, 2, 3, 4, 5, 6};
    uint16_t wh[6];
    assert_int_equal(dtype_row_from_f32(DTYPE_F16, wf, wh, 6), 0);
    tensor_t w = {.dtype = DTYPE_F16, .rows = 3, .cols = 2, .data = wh, .row_stride = 4};
    float x[4] = {1, -1, 0.5f, 2};
    float y[6], want[6] = {-1, -1, -1, 4.5f, 9.5f, 14.5f};
    matmul_ref(y, 3, x, 2, &w, 2);
    assert_memory_equal(y, want, sizeof want);
    compute_t *cx = compute_new(1, NULL);
    assert_non_null(cx);
    matmul(cx, y, 3, x, 2, &w, 2);
    assert_memory_equal(y, want, sizeof want);
    /* x W: x (2, 3) times W (3, 2). */
    float x3[6] = {1, 0, -1, 2, 1, 0.5f};
    float y2[4], want2[4] = {-4, -4, 7.5f, 11};
    matmul_xw_ref(y2, 2, x3, 3, &w, 2);
    assert_memory_equal(y2, want2, sizeof want2);
    matmul_xw(cx, y2, 2, x3, 3, &w, 2);
    assert_memory_equal(y2, want2, sizeof want2);
    compute_destroy(&cx);
}

static void test_xw(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 78);
    compute_path_t paths[3];
    int n_paths = s_paths(paths);
    for (int d = 0; d < N_DTYPES; d++) {
        dtype_t dtype = s_dtypes[d];
        for (int trial = 0; trial < 6; trial++) {
            int m = 1 + trial * 3;
            int64_t rows = 1 + (int64_t)(testrng_uniform(&rng) * 150);
            int64_t cols = s_blocked(dtype) ? 32 * (1 + (int64_t)(testrng_uniform(&rng) * 20))
                                            : 1 + (int64_t)(testrng_uniform(&rng) * 700);
            if (trial == 5)
                rows = 1500; /* big enough to be split */
            wbuf_t w = s_weight(&rng, dtype, rows, cols, 1 + trial % 2, s_blocks[trial][0],
                                s_blocks[trial][1]);
            int ldx = (int)rows + 1, ldy = (int)cols + 2;
            float *x = s_alloc((size_t)m * ldx * sizeof(float));
            testrng_fill(&rng, x, (size_t)m * ldx, 1.0f);
            float *ref = s_alloc((size_t)m * cols * sizeof(float));
            float *y = s_alloc((size_t)m * ldy * sizeof(float));
            double *bound = s_alloc((size_t)m * cols * sizeof(double));
            float *row = s_alloc((size_t)cols * sizeof(float));
            matmul_xw_ref(ref, (int)cols, x, ldx, &w.t, m);
            for (size_t q = 0; q < (size_t)m * cols; q++)
                bound[q] = 0;
            for (int64_t p = 0; p < rows; p++) {
                tensor_row_to_f32(&w.t, p, row);
                for (int i = 0; i < m; i++)
                    for (int64_t c = 0; c < cols; c++)
                        bound[i * cols + c] += fabs((double)x[(size_t)i * ldx + p] * row[c]);
            }
            for (size_t q = 0; q < (size_t)m * cols; q++)
                bound[q] = bound[q] * (double)(rows + 2) * 0x1p-24 + 1e-30;
            for (int pi = 0; pi < n_paths; pi++)
                for (int threads = 1; threads <= 2; threads++) {
                    compute_t *cx = s_context(paths[pi], threads);
                    matmul_xw(cx, y, ldy, x, ldx, &w.t, m);
                    char what[120];
                    snprintf(what, sizeof what, "xw %s %s %d thr m=%d rows=%ld cols=%ld",
                             dtype_info(dtype)->name, compute_path_name(paths[pi]), threads,
                             m, (long)rows, (long)cols);
                    s_expect_close(y, ldy, ref, (int)cols, bound, m, cols, what);
                    compute_destroy(&cx);
                }
            free(row);
            free(bound);
            free(y);
            free(ref);
            free(x);
            s_weight_free(&w);
        }
    }
}

/* Exactness of the kernels: up to 16 rows each path computes every entry as
 * gemm_small does on the same path, so matmul on a weight in any float
 * format equals, bit for bit, gemm_small on its decoded float32 rows; any
 * decoding error would show here, not only beyond the tolerance. FP8 block
 * columns are whole vectors (the kernels' case). */
static void test_exact_as_decoded(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 91);
    compute_path_t paths[3];
    int n_paths = s_paths(paths);
    static const dtype_t fmts[] = {DTYPE_F16, DTYPE_BF16, DTYPE_F8_E4M3, DTYPE_MXFP4};
    static const int ms[] = {1, 2, 3, 4, 7, 16};
    for (size_t d = 0; d < sizeof fmts / sizeof fmts[0]; d++) {
        for (int trial = 0; trial < 6; trial++) {
            const dtype_t dtype = fmts[d];
            const int m = ms[trial];
            const int64_t n = 1 + (int64_t)(testrng_uniform(&rng) * 40);
            const int64_t k = dtype == DTYPE_MXFP4 ? 32 * (1 + trial * 3)
                                                   : 1 + (int64_t)(testrng_uniform(&rng) * 400);
            wbuf_t w = s_weight(&rng, dtype, n, k, 1 + trial % 2, 16 + 3 * trial,
                                trial % 2 ? 16 : 32);
            float *wf = s_alloc((size_t)n * k * sizeof(float));
            for (int64_t j = 0; j < n; j++)
                tensor_row_to_f32(&w.t, j, wf + (size_t)j * k);
            float *x = s_alloc((size_t)m * k * sizeof(float));
            testrng_fill(&rng, x, (size_t)m * k, 1.0f);
            float *y = s_alloc((size_t)m * n * sizeof(float));
            float *want = s_alloc((size_t)m * n * sizeof(float));
            for (int pi = 0; pi < n_paths; pi++) {
                compute_t *cx = s_context(paths[pi], 2);
                gemm_small(cx, want, (int)n, x, (int)k, wf, (int)k, m, (int)n, (int)k, 1.0f, 0.0f);
                matmul(cx, y, (int)n, x, (int)k, &w.t, m);
                for (size_t q = 0; q < (size_t)m * n; q++)
                    if (!(y[q] == want[q]))
                        fail_msg("%s %s m=%d n=%ld k=%ld: entry %zu: %.9g, gemm_small on "
                                 "the decoded weight %.9g", dtype_info(dtype)->name,
                                 compute_path_name(paths[pi]), m, (long)n, (long)k, q, y[q],
                                 want[q]);
                compute_destroy(&cx);
            }
            free(want);
            free(y);
            free(x);
            free(wf);
            s_weight_free(&w);
        }
    }
}

/* The vector decoders (the prefill path's and matmul_xw's) against
 * tensor_row_range_to_f32 on every code: all halves, all E4M3 bytes, all
 * E2M1 codes with the edge scales (0, 1, 2, 127, 253, 254, 255). */
static void test_vector_decoders(void **state)
{
    (void)state;
    compute_path_t paths[3];
    int n_paths = s_paths(paths);
    enum { K = 512, ROWS = 128 };
    static const uint8_t e8[] = {0, 1, 2, 127, 253, 254, 255, 100};
    for (int pi = 0; pi < n_paths; pi++) {
        compute_t *cx = s_context(paths[pi], 1);
        for (int d = 0; d < 4; d++) {
            dtype_t dtype = (dtype_t[]){DTYPE_F16, DTYPE_BF16, DTYPE_F8_E4M3, DTYPE_MXFP4}[d];
            size_t rb = dtype_row_bytes(dtype, K);
            uint8_t *data = s_alloc(rb * ROWS);
            for (size_t i = 0; i < rb * ROWS; i++) /* every 16-bit and 8-bit pattern */
                data[i] = (uint8_t)(dtype == DTYPE_F16 || dtype == DTYPE_BF16
                                        ? (i % 2 ? i / 512 : i / 2) : i * 13);
            float scales[ROWS / 16 * K / 32];
            uint8_t e8m0[ROWS * K / 32];
            for (size_t i = 0; i < sizeof scales / sizeof scales[0]; i++)
                scales[i] = i % 5 == 0 ? 0x1p-140f : (float)(i + 1) * 0.37f;
            for (size_t i = 0; i < sizeof e8m0; i++)
                e8m0[i] = e8[i % 8];
            tensor_t t = {.dtype = dtype, .rows = ROWS, .cols = K, .data = data,
                          .row_stride = rb, .scale_inv = scales, .block_n = 16,
                          .block_k = 32, .scale_stride = dtype == DTYPE_MXFP4 ? K / 32 : K / 32,
                          .e8m0 = e8m0};
            int64_t align;
            matmul_decode_fn *decode = matmul_decoder(cx, &t, &align);
            if (!decode) {
                assert_int_equal(paths[pi], COMPUTE_PATH_PORTABLE);
                free(data);
                continue;
            }
            float got[K], want[K];
            for (int64_t r = 0; r < ROWS; r++) {
                int64_t c0 = (r % 4) * 32, n = K - c0 - (r % 3) * 32 - (r % 7);
                if (dtype == DTYPE_MXFP4)
                    n -= n % 32;
                decode(&t, r, c0, n, got);
                tensor_row_range_to_f32(&t, r, c0, n, want);
                for (int64_t c = 0; c < n; c++)
                    if (!(got[c] == want[c] || (isnan(got[c]) && isnan(want[c]))))
                        fail_msg("%s %s decoder: row %ld col %ld: %a, tensor_row %a",
                                 dtype_info(dtype)->name, compute_path_name(paths[pi]),
                                 (long)r, (long)(c0 + c), got[c], want[c]);
            }
            free(data);
        }
        compute_destroy(&cx);
    }
}

/* The prefill path's tile is a per-thread allocation: a thread whose first
 * prefill cannot allocate it computes with the decode path's tiles, right. */
typedef struct oom_job {
    compute_t *cx;
    float *y;
    const float *x;
    const tensor_t *w;
    int m;
} oom_job_t;

static void *s_oom_thread(void *arg)
{
    oom_job_t *job = arg;
    mem_fail_after(1);
    matmul(job->cx, job->y, (int)job->w->rows, job->x, (int)job->w->cols, job->w, job->m);
    mem_fail_after(-1);
    return NULL;
}

static void test_prefill_without_memory(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 77);
    enum { M = 21, N = 70, K = 333 };
    wbuf_t w = s_weight(&rng, DTYPE_BF16, N, K, 1, 1, 1);
    float *x = s_alloc((size_t)M * K * sizeof(float));
    testrng_fill(&rng, x, (size_t)M * K, 1.0f);
    float *y = s_alloc((size_t)M * N * sizeof(float));
    float *ref = s_alloc((size_t)M * N * sizeof(float));
    double *bound = s_alloc((size_t)M * N * sizeof(double));
    /* The AVX2 path: on AVX-512 BF16 has a kernel that needs no tile. */
    compute_t *cx = s_context(compute_path_runs(COMPUTE_PATH_AVX2) ? COMPUTE_PATH_AVX2
                                                                    : COMPUTE_PATH_PORTABLE, 1);
    oom_job_t job = {.cx = cx, .y = y, .x = x, .w = &w.t, .m = M};
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, s_oom_thread, &job), 0);
    assert_int_equal(pthread_join(thread, NULL), 0);
    matmul_ref(ref, N, x, K, &w.t, M);
    s_bound(bound, x, K, &w.t, M);
    s_expect_close(y, N, ref, N, bound, M, N, "bf16 prefill without its tile");
    compute_destroy(&cx);
    free(bound);
    free(ref);
    free(y);
    free(x);
    s_weight_free(&w);
}

/* F32 weights go to gemm(): the same bits. */
static void test_f32_is_gemm(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 90);
    compute_t *cx = compute_new(2, NULL);
    assert_non_null(cx);
    enum { M = 5, N = 40, K = 77 };
    float w[N * K], x[M * K], y1[M * N], y2[M * N];
    testrng_fill(&rng, w, N * K, 1.0f);
    testrng_fill(&rng, x, M * K, 1.0f);
    tensor_t t = tensor_f32(w, N, K);
    matmul(cx, y1, N, x, K, &t, M);
    gemm_linear(cx, y2, x, w, M, N, K);
    assert_memory_equal(y1, y2, sizeof y1);
    compute_destroy(&cx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_oracles),
        cmocka_unit_test(test_f32_is_gemm),
        cmocka_unit_test(test_exact_as_decoded),
        cmocka_unit_test(test_vector_decoders),
        cmocka_unit_test(test_prefill_without_memory),
        cmocka_unit_test(test_against_oracle),
        cmocka_unit_test(test_prefill_f16),
        cmocka_unit_test(test_prefill_f16_exact),
        cmocka_unit_test(test_batch_invariance),
        cmocka_unit_test(test_row_views),
        cmocka_unit_test(test_xw),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
