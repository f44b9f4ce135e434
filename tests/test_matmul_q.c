/* test_matmul_q: the int8 Q8_0 / Q4_0 kernels (kernels/matmul_q.c).
 *
 *   - bit-exact against a plain-C model of the algorithm written here (the
 *     activation blocks of quant_act_row, lane sums of 4 products, fma into 8
 *     lanes with dw * dx, the fixed final sum), on every path this CPU runs,
 *     one thread and three: the integer sums are exact and the float
 *     operations the same in the same order, so any difference is a bug;
 *   - against the float64 oracle matmul_ref() on the decoded weights, within
 *     the bound of the activations' 8-bit quantization (|x - q dx| <= dx / 2
 *     per value, dx = amax / 127 per block) plus float32 rounding;
 *   - batch invariance: each row alone equals the same row among m = 2 .. 40
 *     (decode and prefill sizes), whatever the thread count;
 *   - matmul_many: a fused batch equals its products called one by one;
 *   - activations that stress the SIMD quantizer: exact ties of roundf, zero
 *     and subnormal blocks, huge and tiny scales, a NaN (that output NaN).
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/mem.h"
#include "core/quant.h"
#include "core/tensor.h"
#include "kernels/compute.h"
#include "kernels/matmul.h"
#include "tests/testutil.h"

static void *s_alloc(size_t n)
{
    void *p = calloc(n ? n : 1, 1);
    assert_non_null(p);
    return p;
}

/* ---- the model ------------------------------------------------------------- */

static float s_f16(const uint8_t *p)
{
    return quant_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
}

/* Row r of w as signed values (Q4_0: nibble - 8) and per-block scales. */
static void s_model_wrow(const tensor_t *w, int64_t r, int8_t *q, float *d)
{
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_stride;
    for (int64_t b = 0; b < w->cols / 32; b++) {
        if (w->dtype == DTYPE_Q8_0) {
            const uint8_t *blk = row + b * 34;
            d[b] = s_f16(blk);
            memcpy(q + b * 32, blk + 2, 32);
        } else {
            const uint8_t *blk = row + b * 18;
            d[b] = s_f16(blk);
            for (int j = 0; j < 16; j++) {
                q[b * 32 + j] = (int8_t)((blk[2 + j] & 15) - 8);
                q[b * 32 + 16 + j] = (int8_t)((blk[2 + j] >> 4) - 8);
            }
        }
    }
}

/* y = the int8 algorithm of matmul_q.c, plainly. */
static void s_model(float *y, int ldy, const float *x, int ldx, const tensor_t *w, int m)
{
    int64_t k = w->cols, nb = k / 32;
    int8_t *qx = s_alloc((size_t)k), *qw = s_alloc((size_t)k);
    float *dx = s_alloc((size_t)nb * sizeof(float)), *dw = s_alloc((size_t)nb * sizeof(float));
    for (int i = 0; i < m; i++) {
        quant_act_row_ref(x + (size_t)i * ldx, k, 0, qx, dx, NULL);
        for (int64_t r = 0; r < w->rows; r++) {
            s_model_wrow(w, r, qw, dw);
            if (m > 16) {
                /* The prefill kernel's order: whole-block integer sums, one
                 * accumulator per output. */
                float acc = 0;
                for (int64_t b = 0; b < nb; b++) {
                    int32_t p = 0;
                    for (int t = 0; t < 32; t++)
                        p += qw[b * 32 + t] * qx[b * 32 + t];
                    acc = fmaf((float)p, dw[b] * dx[b], acc);
                }
                y[(size_t)i * ldy + r] = acc;
                continue;
            }
            float a[8] = {0};
            for (int64_t b = 0; b < nb; b++) {
                float s = dw[b] * dx[b];
                for (int l = 0; l < 8; l++) {
                    int32_t p = 0;
                    for (int t = 0; t < 4; t++)
                        p += qw[b * 32 + 4 * l + t] * qx[b * 32 + 4 * l + t];
                    a[l] = fmaf((float)p, s, a[l]);
                }
            }
            y[(size_t)i * ldy + r] =
                ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
        }
    }
    free(dw);
    free(dx);
    free(qw);
    free(qx);
}

/* ---- data --------------------------------------------------------------------- */

static uint64_t s_state = 0x2545f4914f6cdd1du;
static float s_u(void)
{
    s_state ^= s_state << 13;
    s_state ^= s_state >> 7;
    s_state ^= s_state << 17;
    return (float)((s_state >> 40) * (1.0 / 16777216.0));
}
static float s_n(void) { return (s_u() + s_u() + s_u() + s_u() - 2.0f) * 1.7f; }

typedef struct wbuf {
    tensor_t t;
    uint8_t *data;
} wbuf_t;

/* A (rows, cols) weight of dtype from random normal values; rows spaced
 * stride_pad bytes more than needed (a view of a fused tensor). */
static wbuf_t s_weight(dtype_t dt, int64_t rows, int64_t cols, size_t stride_pad)
{
    size_t rb = dtype_row_bytes(dt, cols);
    size_t stride = rb + stride_pad;
    wbuf_t w = {.data = s_alloc(stride * (size_t)rows + 64)};
    float *tmp = s_alloc((size_t)cols * sizeof(float));
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++)
            tmp[c] = s_n() * (r % 5 == 4 ? 30.0f : 0.05f);
        assert_int_equal(dtype_row_from_f32(dt, tmp, w.data + (size_t)r * stride, cols), 0);
    }
    free(tmp);
    w.t = (tensor_t){.dtype = dt, .rows = rows, .cols = cols, .data = w.data,
                     .row_stride = stride};
    return w;
}

/* Activations of m rows (stride ldx) with hard blocks mixed in. */
static void s_acts(float *x, int m, int ldx, int64_t k, bool hard)
{
    for (int i = 0; i < m; i++)
        for (int64_t b = 0; b < k / 32; b++) {
            float *xb = x + (size_t)i * ldx + b * 32;
            int kind = hard ? (int)((i * 7 + b) % 9) : 0;
            for (int j = 0; j < 32; j++) {
                float v = s_n();
                switch (kind) {
                case 1: v = j == 0 ? 127.0f : (float)(j - 16) + 0.5f; break; /* ties */
                case 2: v = 0; break;
                case 3: v *= 1e-41f; break;         /* subnormal: 1 / d is infinite */
                case 4: v *= 1e30f; break;
                case 5: v *= 1e-30f; break;
                case 6: v = j == 3 ? -254.0f : (float)(2 * j + 1); break; /* x id = j + .5 */
                case 7: v = j == 31 ? -1e4f : v; break;
                default: break;
                }
                xb[j] = v;
            }
        }
}

/* ---- checks --------------------------------------------------------------------- */

static int s_paths(compute_path_t *paths)
{
    static const compute_path_t all[] = {COMPUTE_PATH_PORTABLE, COMPUTE_PATH_AVX2,
                                         COMPUTE_PATH_AVX512};
    static bool noted[3];
    int n = 0;
    for (size_t i = 0; i < 3; i++) {
        if (compute_path_runs(all[i]))
            paths[n++] = all[i];
        else if (!noted[i] && (noted[i] = true))
            print_message("  matmul_q: this CPU cannot run the %s path, not tested here\n",
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

/* Every path and thread count bit-exact to the model; the model within the
 * oracle's bound. y's padding columns are never written. */
static void s_check(dtype_t dt, int m, int64_t n, int64_t k, size_t pad, bool hard)
{
    wbuf_t w = s_weight(dt, n, k, pad);
    int ldx = (int)k + 5, ldy = (int)n + 3;
    float *x = s_alloc((size_t)m * ldx * sizeof(float));
    s_acts(x, m, ldx, k, hard);
    float *model = s_alloc((size_t)m * ldy * sizeof(float));
    float *y = s_alloc((size_t)m * ldy * sizeof(float));
    float *ref = s_alloc((size_t)m * n * sizeof(float));
    s_model(model, ldy, x, ldx, &w.t, m);
    compute_path_t paths[3];
    int n_paths = s_paths(paths);
    for (int pi = 0; pi < n_paths; pi++) {
        for (int threads = 1; threads <= 3; threads += 2) {
            compute_t *cx = s_context(paths[pi], threads);
            for (size_t q = 0; q < (size_t)m * ldy; q++)
                y[q] = -7.25f;
            matmul(cx, y, ldy, x, ldx, &w.t, m);
            for (int i = 0; i < m; i++) {
                for (int64_t j = 0; j < n; j++) {
                    float a = y[(size_t)i * ldy + j], b = model[(size_t)i * ldy + j];
                    if (memcmp(&a, &b, sizeof a) != 0 && !(isnan(a) && isnan(b)))
                        fail_msg("%s %s %d thr m=%d n=%ld k=%ld: (%d, %ld) = %a, model %a",
                                 dtype_info(dt)->name, compute_path_name(paths[pi]),
                                 threads, m, (long)n, (long)k, i, (long)j, (double)a,
                                 (double)b);
                }
                for (int j = (int)n; j < ldy; j++)
                    assert_true(y[(size_t)i * ldy + j] == -7.25f);
            }
            compute_destroy(&cx);
        }
    }
    if (!hard) {
        /* The model against the oracle on the decoded weights. */
        matmul_ref(ref, (int)n, x, ldx, &w.t, m);
        float *row = s_alloc((size_t)k * sizeof(float));
        for (int64_t j = 0; j < n; j++) {
            tensor_row_to_f32(&w.t, j, row);
            for (int i = 0; i < m; i++) {
                const float *xi = x + (size_t)i * ldx;
                double bound = 1e-30, sxw = 0;
                for (int64_t b = 0; b < k; b += 32) {
                    double amax = 0, sw = 0;
                    for (int p = 0; p < 32; p++) {
                        amax = fmax(amax, fabs((double)xi[b + p]));
                        sw += fabs((double)row[b + p]);
                        sxw += fabs((double)xi[b + p] * row[b + p]);
                    }
                    double dx = amax / 127;
                    bound += (dx / 2 * (1 + (double)(k + 8) * 0x1p-24) +
                              4 * 0x1p-24 * amax) * sw;
                }
                bound += (double)(k + 2) * 0x1p-24 * sxw;
                double e = fabs((double)model[(size_t)i * ldy + j] - ref[(size_t)i * n + j]);
                if (!(e <= bound))
                    fail_msg("%s m=%d n=%ld k=%ld: (%d, %ld) = %.9g, oracle %.9g, bound %.3g",
                             dtype_info(dt)->name, m, (long)n, (long)k, i, (long)j,
                             model[(size_t)i * ldy + j], ref[(size_t)i * n + j], bound);
            }
        }
        free(row);
    }
    free(ref);
    free(y);
    free(model);
    free(x);
    free(w.data);
}

static void test_exact_and_oracle(void **state)
{
    (void)state;
    static const dtype_t dts[] = {DTYPE_Q8_0, DTYPE_Q4_0};
    static const int ms[] = {1, 2, 3, 4, 5, 16, 17, 33};
    for (int d = 0; d < 2; d++) {
        for (int t = 0; t < 8; t++) {
            int64_t n = 1 + (int64_t)(s_u() * 70);
            int64_t k = 32 * (1 + (int64_t)(s_u() * 12));
            s_check(dts[d], ms[t], n, k, t % 3 == 2 ? 7 : 0, false);
        }
        s_check(dts[d], 2, 131, 4096, 0, false);   /* long rows, split over threads */
        s_check(dts[d], 40, 300, 256, 3, false);   /* prefill sized, split */
        s_check(dts[d], 21, 45, 32 * 150, 0, false); /* Q4_0 prefill: W packed in slices */
    }
}

static void test_hard_activations(void **state)
{
    (void)state;
    s_check(DTYPE_Q8_0, 9, 37, 32 * 9, 0, true);
    s_check(DTYPE_Q4_0, 9, 37, 32 * 9, 0, true);
    s_check(DTYPE_Q8_0, 18, 300, 32 * 27, 5, true);
    s_check(DTYPE_Q4_0, 18, 300, 32 * 27, 5, true);
    s_check(DTYPE_Q4_0, 19, 13, 32 * 70, 1, true);
}

/* Each row alone equals the same row among m <= 16, and (the prefill
 * kernels above 16 rows have a float order of their own) among 17 equals
 * among 40, whatever the thread count. */
static void test_batch_invariance(void **state)
{
    (void)state;
    compute_path_t paths[3];
    int n_paths = s_paths(paths);
    enum { M = 40 };
    const int64_t n = 203, k = 32 * 34;
    for (int d = 0; d < 2; d++) {
        wbuf_t w = s_weight(d ? DTYPE_Q4_0 : DTYPE_Q8_0, n, k, 0);
        float *x = s_alloc((size_t)M * k * sizeof(float));
        s_acts(x, M, (int)k, k, d == 1);
        float *alone = s_alloc((size_t)M * n * sizeof(float));
        float *y = s_alloc((size_t)M * n * sizeof(float));
        float *among17 = s_alloc((size_t)17 * n * sizeof(float));
        int among17_first = 0;
        for (int pi = 0; pi < n_paths; pi++) {
            compute_t *cx1 = s_context(paths[pi], 1);
            for (int i = 0; i < M; i++)
                matmul(cx1, alone + (size_t)i * n, (int)n, x + (size_t)i * k, (int)k, &w.t, 1);
            compute_destroy(&cx1);
            static const int ms[] = {2, 5, 16, 17, 40};
            for (int threads = 1; threads <= 3; threads++) {
                compute_t *cx = s_context(paths[pi], threads);
                for (int mi = 0; mi < 5; mi++) {
                    int m = ms[mi], first = (mi * 7) % (M - m + 1);
                    if (m == 17)
                        among17_first = first;
                    if (m == 40)
                        assert_true(among17_first >= first && among17_first + 17 <= first + m);
                    matmul(cx, y, (int)n, x + (size_t)first * k, (int)k, &w.t, m);
                    if (m > 16) {
                        /* above 16 rows: against the same rows among 17 */
                        if (m == 17)
                            memcpy(among17, y, (size_t)17 * n * sizeof *y);
                        else if (memcmp(y + (size_t)(among17_first - first) * n, among17,
                                        (size_t)17 * n * sizeof *y) != 0)
                            fail_msg("%s %s %d thr: rows %d..%d among %d differ from "
                                     "among 17", d ? "q4_0" : "q8_0",
                                     compute_path_name(paths[pi]), threads,
                                     among17_first, among17_first + 16, m);
                        continue;
                    }
                    if (memcmp(y, alone + (size_t)first * n, (size_t)m * n * sizeof *y) != 0)
                        fail_msg("%s %s %d thr: rows %d..%d among %d differ from alone",
                                 d ? "q4_0" : "q8_0", compute_path_name(paths[pi]), threads,
                                 first, first + m - 1, m);
                }
                compute_destroy(&cx);
            }
        }
        free(among17);
        free(y);
        free(alone);
        free(x);
        free(w.data);
    }
}

/* matmul_many: a batch of products (Q8_0 and Q4_0 mixed, decode and
 * prefill sizes, several sharing one x as an expert's gate and up do, an
 * empty one, a float32 one in the middle, more than one pool job's worth)
 * equals the same products called one by one, to the bit, on every path
 * and thread count. */
static void test_many(void **state)
{
    (void)state;
    compute_path_t paths[3];
    int n_paths = s_paths(paths);
    enum { OPS = 37, XS = 5, MMAX = 20 };
    const int64_t k = 32 * 9;
    wbuf_t w[OPS];
    float *x[XS], *y_many[OPS], *y_one[OPS];
    matmul_op_t ops[OPS];
    float *f32 = s_alloc((size_t)70 * k * sizeof(float));
    for (int64_t i = 0; i < 70 * k; i++)
        f32[i] = s_n();
    tensor_t wf32 = {.dtype = DTYPE_F32, .rows = 70, .cols = k, .data = f32,
                     .row_stride = (size_t)k * sizeof(float)};
    for (int i = 0; i < XS; i++) {
        x[i] = s_alloc((size_t)MMAX * k * sizeof(float));
        s_acts(x[i], MMAX, (int)k, k, i == 1);
    }
    for (int i = 0; i < OPS; i++) {
        int64_t rows = 8 + (i * 13) % 61;
        w[i] = s_weight(i % 3 == 0 ? DTYPE_Q8_0 : DTYPE_Q4_0, rows, k, 0);
        int m = i == 5 ? 0 : i % 7 == 3 ? 17 + i % 4 : 1 + i % 4;
        const tensor_t *wi = i == 11 ? &wf32 : &w[i].t;
        y_many[i] = s_alloc((size_t)MMAX * (size_t)wi->rows * sizeof(float));
        y_one[i] = s_alloc((size_t)MMAX * (size_t)wi->rows * sizeof(float));
        ops[i] = (matmul_op_t){.y = y_many[i], .ldy = (int)wi->rows, .x = x[i % XS],
                               .ldx = (int)k, .w = wi, .m = m};
    }
    for (int pi = 0; pi < n_paths; pi++)
        for (int threads = 1; threads <= 3; threads++) {
            compute_t *cx = s_context(paths[pi], threads);
            for (int i = 0; i < OPS; i++) {
                size_t bytes = (size_t)MMAX * (size_t)ops[i].ldy * sizeof(float);
                memset(y_many[i], 0x7f, bytes);
                memset(y_one[i], 0x7f, bytes);
                matmul(cx, y_one[i], ops[i].ldy, ops[i].x, ops[i].ldx, ops[i].w, ops[i].m);
            }
            matmul_many(cx, ops, OPS);
            for (int i = 0; i < OPS; i++)
                if (memcmp(y_many[i], y_one[i],
                           (size_t)MMAX * (size_t)ops[i].ldy * sizeof(float)) != 0)
                    fail_msg("%s %d thr: product %d of the batch differs from its own call",
                             compute_path_name(paths[pi]), threads, i);
            compute_destroy(&cx);
        }
    for (int i = 0; i < OPS; i++) {
        free(w[i].data);
        free(y_many[i]);
        free(y_one[i]);
    }
    for (int i = 0; i < XS; i++)
        free(x[i]);
    free(f32);
}

/* A NaN activation makes its row's outputs NaN (its block's scale is NaN
 * when it is last in the block), never a crash; m = 0 and empty W write
 * nothing. */
static void test_edges(void **state)
{
    (void)state;
    wbuf_t w = s_weight(DTYPE_Q8_0, 9, 64, 0);
    float x[2 * 64], y[2 * 9];
    for (int j = 0; j < 128; j++)
        x[j] = s_n();
    x[31] = NAN;
    compute_path_t paths[3];
    int n_paths = s_paths(paths);
    for (int pi = 0; pi < n_paths; pi++) {
        compute_t *cx = s_context(paths[pi], 2);
        matmul(cx, y, 9, x, 64, &w.t, 2);
        for (int j = 0; j < 9; j++) {
            assert_true(isnan(y[j]));
            assert_false(isnan(y[9 + j]));
        }
        y[0] = 3.5f;
        matmul(cx, y, 9, x, 64, &w.t, 0);
        assert_true(y[0] == 3.5f);
        tensor_t empty = w.t;
        empty.rows = 0;
        matmul(cx, y, 9, x, 64, &empty, 2);
        assert_true(y[0] == 3.5f);
        compute_destroy(&cx);
    }
    free(w.data);
}

/* Out of memory for the activations' scratch: the call still computes, on
 * the portable path block by block, the same bits as the model, in both
 * orders (m <= 16 and m > 16). A fresh thread, whose scratch is empty. */
typedef struct oom {
    compute_t *cx;
    float *y;
    const float *x;
    const tensor_t *w;
    int m, k;
} oom_t;

static void *s_oom_thread(void *arg)
{
    oom_t *o = arg;
    mem_fail_after(1);
    matmul(o->cx, o->y, (int)o->w->rows, o->x, o->k, o->w, o->m);
    mem_fail_after(-1);
    return NULL;
}

static void test_out_of_memory(void **state)
{
    (void)state;
    for (int d = 0; d < 2; d++) {
        for (int m = 3; m <= 20; m += 17) {
            const int64_t n = 21, k = 32 * 5;
            wbuf_t w = s_weight(d ? DTYPE_Q4_0 : DTYPE_Q8_0, n, k, 0);
            float *x = s_alloc((size_t)m * k * sizeof(float));
            s_acts(x, m, (int)k, k, true);
            float *y = s_alloc((size_t)m * n * sizeof(float));
            float *model = s_alloc((size_t)m * n * sizeof(float));
            s_model(model, (int)n, x, (int)k, &w.t, m);
            compute_t *cx = s_context(COMPUTE_PATH_AUTO, 1);
            oom_t o = {.cx = cx, .y = y, .x = x, .w = &w.t, .m = m, .k = (int)k};
            pthread_t th;
            assert_int_equal(pthread_create(&th, NULL, s_oom_thread, &o), 0);
            assert_int_equal(pthread_join(th, NULL), 0);
            for (size_t q = 0; q < (size_t)m * n; q++)
                if (memcmp(&y[q], &model[q], sizeof *y) != 0 && !(isnan(y[q]) && isnan(model[q])))
                    fail_msg("%s m=%d out of memory: entry %zu = %a, model %a",
                             d ? "q4_0" : "q8_0", m, q, (double)y[q], (double)model[q]);
            compute_destroy(&cx);
            free(model);
            free(y);
            free(x);
            free(w.data);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_and_oracle),
        cmocka_unit_test(test_hard_activations),
        cmocka_unit_test(test_batch_invariance),
        cmocka_unit_test(test_many),
        cmocka_unit_test(test_edges),
        cmocka_unit_test(test_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
