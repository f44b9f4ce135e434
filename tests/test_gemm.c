/* test_gemm: gemm_ref against hand-computed products, then gemm(),
 * gemm_linear() and gemm_small() (each code path forced through a compute
 * context, on one thread and on several) against gemm_ref, the float64
 * oracle, and gemm_small's batch invariance: a row's result is bit-identical
 * whatever rows share its call.
 *
 * The tolerance is the classic bound for a float32 dot product of length k,
 * |err| <= k * u * sum |a_p b_p| (u = FLT_EPSILON / 2), plus a few roundings
 * for alpha, beta and the oracle's own final rounding, all taken per entry.
 * It is exact arithmetic, not a guess, so it never flakes, and it is about
 * 1e-5 of the magnitude at the sizes used here.
 */
#include <errno.h>
#include <float.h>
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

#include "core/blas.h"
#include "kernels/compute.h"
#include "kernels/gemm.h"
#include "kernels/gemm_small.h"
#include "tests/testutil.h"

static const float s_sentinel = 12345.5f; /* padding beyond a row's width */

/* The context of the tests that do not force a path: the CPU's best, as many
 * threads as OpenBLAS, as forward_new() makes it. */
static compute_t *s_cx;

/* A context of n_threads on path; NULL (with a note) when this CPU cannot run
 * the path. Caller destroys. */
static compute_t *s_context(compute_path_t path, int n_threads)
{
    compute_t *cx = compute_new(n_threads, NULL);
    assert_non_null(cx);
    if (compute_set_path(cx, path) == 0) {
        assert_int_equal(compute_path(cx), path);
        return cx;
    }
    assert_int_equal(errno, ENOTSUP);
    printf("  gemm_small: this CPU cannot run the %s path, skipped\n",
           compute_path_name(path));
    compute_destroy(&cx);
    return NULL;
}

static float *s_floats(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    assert_non_null(p);
    return p;
}

static double *s_doubles(size_t n)
{
    double *p = malloc((n ? n : 1) * sizeof *p);
    assert_non_null(p);
    return p;
}

static void s_fill_const(float *x, size_t n, float value)
{
    for (size_t i = 0; i < n; i++)
        x[i] = value;
}

/* bound[i][j] = sum_p |alpha a_ip op(B)_pj| + |beta c_ij|, in float64.
 *   bound: (m, n) dense; c: the C given to the call, (m, n) with stride ldc */
static void s_abs_bound(double *bound, const float *c, int ldc, const float *a,
                        int lda, const float *b, int ldb, int m, int n, int k,
                        bool b_trans, float alpha, float beta)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0.0;
            for (int p = 0; p < k; p++) {
                float bpj = b_trans ? b[(size_t)j * ldb + p]
                                    : b[(size_t)p * ldb + j];
                s += fabs((double)a[(size_t)i * lda + p] * bpj);
            }
            s *= fabs((double)alpha);
            if (beta != 0.0f)
                s += fabs((double)beta * c[(size_t)i * ldc + j]);
            bound[(size_t)i * n + j] = s;
        }
}

/* Checks got against want entry by entry within (k + 4) * FLT_EPSILON of the
 * bound (twice the worst case), and that the padding of got is untouched.
 *   got, want: (m, n) with stride ldc; bound: (m, n) dense */
static void s_check(const float *got, const float *want, const double *bound,
                    int ldc, int m, int n, int k)
{
    double rel = (double)(k + 4) * FLT_EPSILON;
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            size_t at = (size_t)i * ldc + j;
            double err = fabs((double)got[at] - (double)want[at]);
            double tol = rel * bound[(size_t)i * n + j] + 1e-30;
            if (!(err <= tol))
                fail_msg("entry (%d, %d) of (%d, %d), k %d: got %.9g, want "
                         "%.9g, tolerance %.3g", i, j, m, n, k, got[at],
                         want[at], tol);
        }
        for (int j = n; j < ldc; j++)
            assert_true(got[(size_t)i * ldc + j] == s_sentinel);
    }
}

/* Hand-computed: A = [1 2 3; 4 5 6], B = [7 8; 9 10; 11 12], A B = [58 64;
 * 139 154], in both layouts of B, then with alpha and beta. */
static void test_ref_hand(void **state)
{
    (void)state;
    const float a[6] = {1, 2, 3, 4, 5, 6};      /* (2, 3) */
    const float b[6] = {7, 8, 9, 10, 11, 12};   /* (3, 2) */
    const float bt[6] = {7, 9, 11, 8, 10, 12};  /* (2, 3) = b^T */
    float c[4];                                 /* (2, 2) */

    s_fill_const(c, 4, NAN); /* beta == 0 must not read C */
    gemm_ref(c, 2, a, 3, b, 2, 2, 2, 3, false, 1.0f, 0.0f);
    assert_true(c[0] == 58 && c[1] == 64 && c[2] == 139 && c[3] == 154);

    s_fill_const(c, 4, NAN);
    gemm_ref(c, 2, a, 3, bt, 3, 2, 2, 3, true, 1.0f, 0.0f);
    assert_true(c[0] == 58 && c[1] == 64 && c[2] == 139 && c[3] == 154);

    /* 0.5 * AB + 2 * [1 2; 3 4] = [31 36; 75.5 85] */
    const float c0[4] = {1, 2, 3, 4};
    memcpy(c, c0, sizeof c);
    gemm_ref(c, 2, a, 3, bt, 3, 2, 2, 3, true, 0.5f, 2.0f);
    assert_true(c[0] == 31 && c[1] == 36 && c[2] == 75.5f && c[3] == 85);

    /* One row of a strided A: the second row only, lda 3, m 1. */
    s_fill_const(c, 4, NAN);
    gemm_ref(c, 2, a + 3, 3, b, 2, 1, 2, 3, false, 1.0f, 0.0f);
    assert_true(c[0] == 139 && c[1] == 154);
    assert_true(isnan(c[2]) && isnan(c[3]));
}

/* Float64 accumulation: 1 + 1e8 - 1e8 loses the 1 in float32, not here. */
static void test_ref_accumulates_in_double(void **state)
{
    (void)state;
    const float a[3] = {1.0f, 1e8f, -1e8f};
    const float b[3] = {1.0f, 1.0f, 1.0f}; /* (3, 1) */
    float c = NAN;
    gemm_ref(&c, 1, a, 3, b, 1, 1, 1, 3, false, 1.0f, 0.0f);
    assert_true(c == 1.0f);
}

/* One gemm() call or, with small, gemm_small() call (then b_trans must hold)
 * in cx on random data against gemm_ref: strides pad every row, C starts as
 * NaN when beta == 0 (it must not be read) and as random data otherwise. */
static void s_case_with(testrng_t *rng, compute_t *cx, bool small, int m, int n,
                        int k, bool b_trans, float alpha, float beta, int pad)
{
    int lda = k + pad, ldc = n + pad;
    int b_rows = b_trans ? n : k, b_cols = b_trans ? k : n;
    int ldb = b_cols + pad;
    float *a = s_floats((size_t)m * lda);
    float *b = s_floats((size_t)b_rows * ldb);
    float *c0 = s_floats((size_t)m * ldc);
    float *got = s_floats((size_t)m * ldc);
    float *want = s_floats((size_t)m * ldc);
    double *bound = s_doubles((size_t)m * n);

    testrng_fill(rng, a, (size_t)m * lda, 1.0f);
    testrng_fill(rng, b, (size_t)b_rows * ldb, 1.0f);
    testrng_fill(rng, c0, (size_t)m * ldc, 1.0f);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < ldc; j++)
            if (j >= n)
                c0[(size_t)i * ldc + j] = s_sentinel;
            else if (beta == 0.0f)
                c0[(size_t)i * ldc + j] = NAN;
    memcpy(got, c0, (size_t)m * ldc * sizeof *got);
    memcpy(want, c0, (size_t)m * ldc * sizeof *want);

    gemm_ref(want, ldc, a, lda, b, ldb, m, n, k, b_trans, alpha, beta);
    if (small)
        gemm_small(cx, got, ldc, a, lda, b, ldb, m, n, k, alpha, beta);
    else
        gemm(cx, got, ldc, a, lda, b, ldb, m, n, k, b_trans, alpha, beta);
    s_abs_bound(bound, c0, ldc, a, lda, b, ldb, m, n, k, b_trans, alpha, beta);
    s_check(got, want, bound, ldc, m, n, k);

    free(bound);
    free(want);
    free(got);
    free(c0);
    free(b);
    free(a);
}

static void s_case(testrng_t *rng, int m, int n, int k, bool b_trans,
                   float alpha, float beta, int pad)
{
    s_case_with(rng, s_cx, false, m, n, k, b_trans, alpha, beta, pad);
}

static void test_gemm_odd_sizes(void **state)
{
    (void)state;
    static const int sizes[] = {1, 3, 7, 17, 33, 65};
    const int n_sizes = (int)(sizeof sizes / sizeof sizes[0]);
    testrng_t rng;
    testrng_init(&rng, 1);
    for (int im = 0; im < n_sizes; im++)
        for (int in = 0; in < n_sizes; in++)
            for (int ik = 0; ik < n_sizes; ik++)
                for (int t = 0; t < 2; t++)
                    s_case(&rng, sizes[im], sizes[in], sizes[ik], t == 1,
                           1.0f, 0.0f, (im + in + ik) % 3 == 0 ? 0 : 3);
}

static void test_gemm_alpha_beta(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 2);
    for (int t = 0; t < 2; t++) {
        s_case(&rng, 17, 33, 7, t == 1, 0.37f, -1.5f, 5);
        s_case(&rng, 1, 65, 33, t == 1, -2.0f, 0.5f, 2);   /* one row */
        s_case(&rng, 65, 1, 17, t == 1, 1.25f, 1.0f, 1);   /* one column */
        s_case(&rng, 33, 17, 65, t == 1, 0.125f, 0.0f, 4);
        s_case(&rng, 3, 3, 3, t == 1, 0.0f, 2.0f, 1);      /* alpha 0 */
    }
}

/* Large enough for OpenBLAS to block and to use its threads. */
static void test_gemm_large(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 3);
    s_case(&rng, 257, 129, 513, true, 1.0f, 0.0f, 7);
    s_case(&rng, 130, 257, 259, false, 0.5f, 0.25f, 0);
    s_case(&rng, 1, 1031, 777, true, 1.0f, 0.0f, 1);
    s_case(&rng, 1, 1031, 777, false, 1.0f, 0.0f, 1);
}

/* k == 0: C = beta C exactly, and beta == 0 clears NaN garbage. m or n == 0
 * touches nothing. */
static void test_gemm_degenerate(void **state)
{
    (void)state;
    float c[6] = {1, 2, NAN, 4, 5, NAN}; /* (2, 2) with ldc 3 */
    const float dummy[1] = {0};
    gemm(s_cx, c, 3, dummy, 1, dummy, 1, 2, 2, 0, true, 1.0f, 2.0f);
    assert_true(c[0] == 2 && c[1] == 4 && c[3] == 8 && c[4] == 10);
    assert_true(isnan(c[2]) && isnan(c[5]));

    float g[6] = {NAN, NAN, 7, NAN, NAN, 7};
    gemm(s_cx, g, 3, dummy, 1, dummy, 1, 2, 2, 0, false, 1.0f, 0.0f);
    assert_true(g[0] == 0 && g[1] == 0 && g[3] == 0 && g[4] == 0);
    assert_true(g[2] == 7 && g[5] == 7);

    float z[2] = {7, 7};
    gemm(s_cx, z, 1, dummy, 1, dummy, 1, 0, 2, 3, false, 1.0f, 0.0f);
    gemm(s_cx, z, 1, dummy, 1, dummy, 1, 2, 0, 3, false, 1.0f, 0.0f);
    assert_true(z[0] == 7 && z[1] == 7);
}

/* gemm_linear: y = x W^T, dense; m == 1 goes through sgemv and must also
 * ignore garbage in y. */
static void test_gemm_linear(void **state)
{
    (void)state;
    static const int ms[] = {1, 3, 17, 65};
    static const int nks[][2] = {{1, 1}, {7, 33}, {33, 7}, {65, 17},
                                 {513, 257}};
    testrng_t rng;
    testrng_init(&rng, 4);
    for (size_t im = 0; im < sizeof ms / sizeof ms[0]; im++) {
        for (size_t ink = 0; ink < sizeof nks / sizeof nks[0]; ink++) {
            int m = ms[im], n = nks[ink][0], k = nks[ink][1];
            float *x = s_floats((size_t)m * k);
            float *w = s_floats((size_t)n * k);
            float *got = s_floats((size_t)m * n);
            float *want = s_floats((size_t)m * n);
            double *bound = s_doubles((size_t)m * n);
            testrng_fill(&rng, x, (size_t)m * k, 1.0f);
            testrng_fill(&rng, w, (size_t)n * k, 0.5f);
            s_fill_const(got, (size_t)m * n, NAN);
            gemm_ref(want, n, x, k, w, k, m, n, k, true, 1.0f, 0.0f);
            gemm_linear(s_cx, got, x, w, m, n, k);
            s_abs_bound(bound, got, n, x, k, w, k, m, n, k, true, 1.0f, 0.0f);
            s_check(got, want, bound, n, m, n, k);
            free(bound);
            free(want);
            free(got);
            free(w);
            free(x);
        }
    }
}

static const compute_path_t s_paths[] = {
    COMPUTE_PATH_PORTABLE, COMPUTE_PATH_AVX2, COMPUTE_PATH_AVX512,
};
enum { N_PATHS = 3 };

/* Every path, every m in 1..20 (past GEMM_SMALL_MAX_ROWS, so also through
 * OpenBLAS in gemm()), n and k that are not multiples of any vector width or
 * tile (k < 16 is all tail), padded strides, beta 0 over NaN, beta 1, and
 * other alpha/beta, on 1 and 2 threads and through gemm(). */
static void test_small_paths(void **state)
{
    (void)state;
    static const int nks[][2] = {{1, 1}, {5, 7}, {37, 23}, {67, 45}, {13, 131}};
    static const float ab[][2] = {{1.0f, 0.0f}, {1.0f, 1.0f}, {-0.37f, 0.5f},
                                  {2.5f, 0.0f}};
    testrng_t rng;
    testrng_init(&rng, 5);
    for (int ip = 0; ip < N_PATHS; ip++) {
        compute_t *one = s_context(s_paths[ip], 1);
        compute_t *two = one ? s_context(s_paths[ip], 2) : NULL;
        if (!two) {
            compute_destroy(&one);
            continue;
        }
        for (int m = 1; m <= 20; m++)
            for (size_t ink = 0; ink < sizeof nks / sizeof nks[0]; ink++)
                for (size_t iab = 0; iab < sizeof ab / sizeof ab[0]; iab++) {
                    int n = nks[ink][0], k = nks[ink][1];
                    int pad = (int)((m + ink + iab) % 4);
                    float alpha = ab[iab][0], beta = ab[iab][1];
                    s_case_with(&rng, one, true, m, n, k, true, alpha, beta, pad);
                    s_case_with(&rng, two, true, m, n, k, true, alpha, beta, pad);
                    s_case_with(&rng, two, false, m, n, k, true, alpha, beta, pad);
                }
        compute_destroy(&two);
        compute_destroy(&one);
    }
}

/* Products big enough to be split over threads (>= 1 MB of W), odd n and k,
 * on 1, 2, 3 and 5 threads, every path. */
static void test_small_threads(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 6);
    for (int ip = 0; ip < N_PATHS; ip++) {
        static const int threads[] = {1, 2, 3, 5};
        for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
            compute_t *cx = s_context(s_paths[ip], threads[t]);
            if (!cx)
                break;
            assert_int_equal(pool_threads(compute_pool(cx)), threads[t]);
            s_case_with(&rng, cx, true, 4, 1031, 263, true, 1.0f, 0.0f, 3);
            s_case_with(&rng, cx, true, 13, 263, 1031, true, 0.5f, 1.0f, 1);
            /* through gemm() */
            s_case_with(&rng, cx, false, 16, 2817, 1025, true, 1.0f, 0.0f, 5);
            compute_destroy(&cx);
        }
    }
}

/* Batch invariance: row r of x alone (m = 1), or at another position among
 * other rows, with other strides and thread counts, gives bit-identical
 * results to the same row in the full call, through gemm_small and gemm(). */
static void test_small_batch_invariant(void **state)
{
    (void)state;
    enum { M = GEMM_SMALL_MAX_ROWS, N = 1027, K = 301, PAD = 3, N_CX = 3 };
    testrng_t rng;
    testrng_init(&rng, 7);
    float *x = s_floats((size_t)M * K);         /* (M, K) */
    float *xs = s_floats((size_t)M * (K + PAD)); /* shuffled rows, stride K + PAD */
    float *w = s_floats((size_t)N * K);         /* (N, K) */
    float *full = s_floats((size_t)M * N);      /* (M, N) */
    float *part = s_floats((size_t)M * (N + PAD));
    testrng_fill(&rng, x, (size_t)M * K, 1.0f);
    testrng_fill(&rng, w, (size_t)N * K, 1.0f);
    for (int ip = 0; ip < N_PATHS; ip++) {
        compute_t *cx[N_CX] = {NULL}; /* cx[t]: t + 1 threads */
        for (int t = 0; t < N_CX; t++)
            if (!(cx[t] = s_context(s_paths[ip], t + 1)))
                break;
        if (!cx[N_CX - 1])
            goto next;
        gemm_small(cx[0], full, N, x, K, w, K, M, N, K, 1.0f, 0.0f);
        for (int m = 1; m <= M; m++) {
            /* Rows (r0 + 5 i) mod M for i < m: every row at every position. */
            int r0 = (m * 7) % M;
            for (int i = 0; i < m; i++)
                memcpy(xs + (size_t)i * (K + PAD), x + (size_t)((r0 + 5 * i) % M) * K,
                       K * sizeof *x);
            s_fill_const(part, (size_t)M * (N + PAD), NAN);
            if (m % 2)
                gemm_small(cx[m % 3], part, N + PAD, xs, K + PAD, w, K, m, N, K, 1.0f,
                           0.0f);
            else
                gemm(cx[m % 3], part, N + PAD, xs, K + PAD, w, K, m, N, K, true, 1.0f,
                     0.0f);
            for (int i = 0; i < m; i++)
                if (memcmp(part + (size_t)i * (N + PAD),
                           full + (size_t)((r0 + 5 * i) % M) * N, N * sizeof *full) != 0)
                    fail_msg("%s: row %d alone among %d differs from the full call",
                             compute_path_name(s_paths[ip]), (r0 + 5 * i) % M, m);
        }
    next:
        for (int t = 0; t < N_CX; t++)
            compute_destroy(&cx[t]);
    }
    free(part);
    free(full);
    free(w);
    free(xs);
    free(x);
}

/* The path is the context's: forcing one context leaves another, and a new
 * one, on the CPU's best. */
static void test_context_path(void **state)
{
    (void)state;
    compute_t *a = compute_new(1, NULL), *b = compute_new(1, NULL);
    assert_non_null(a);
    assert_non_null(b);
    const compute_path_t best = compute_path(a);
    assert_int_not_equal(best, COMPUTE_PATH_AUTO);
    assert_true(compute_path_runs(best));
    errno = 0;
    assert_int_equal(compute_set_path(a, (compute_path_t)99), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(compute_path(a), best);
    assert_int_equal(compute_set_path(a, COMPUTE_PATH_PORTABLE), 0);
    assert_int_equal(compute_path(a), COMPUTE_PATH_PORTABLE);
    assert_int_equal(compute_path(b), best);
    compute_t *c = compute_new(2, NULL);
    assert_non_null(c);
    assert_int_equal(compute_path(c), best);
    for (int ip = 0; ip < N_PATHS; ip++) {
        errno = 0;
        int rc = compute_set_path(c, s_paths[ip]);
        assert_int_equal(rc, compute_path_runs(s_paths[ip]) ? 0 : -1);
        assert_true(rc == 0 || errno == ENOTSUP);
    }
    assert_int_equal(compute_set_path(a, COMPUTE_PATH_AUTO), 0);
    assert_int_equal(compute_path(a), best);
    assert_string_equal(compute_path_name(COMPUTE_PATH_AUTO), "auto");
    printf("  gemm_small: this CPU runs the %s path\n", compute_path_name(best));
    compute_destroy(&c);
    compute_destroy(&b);
    compute_destroy(&a);
    compute_destroy(&a); /* twice is harmless */
    assert_null(a);
}

/* Two threads multiplying at once in one context: one gets the pool, the
 * other computes alone, and both get the one-thread result bit for bit. */
typedef struct concurrent {
    compute_t *cx;
    const float *x, *w; /* (4, K), (N, K) */
    float *y;           /* (4, N) */
} concurrent_t;

enum { CONC_N = 2053, CONC_K = 263, CONC_REPEAT = 20 };

static void *s_concurrent_main(void *arg)
{
    concurrent_t *c = arg;
    for (int r = 0; r < CONC_REPEAT; r++)
        gemm_small(c->cx, c->y, CONC_N, c->x, CONC_K, c->w, CONC_K, 4, CONC_N, CONC_K,
                   1.0f, 0.0f);
    return NULL;
}

static void test_small_concurrent_callers(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 8);
    float *x = s_floats(4 * CONC_K), *w = s_floats((size_t)CONC_N * CONC_K);
    float *want = s_floats(4 * CONC_N), *y[2] = {s_floats(4 * CONC_N), s_floats(4 * CONC_N)};
    testrng_fill(&rng, x, 4 * CONC_K, 1.0f);
    testrng_fill(&rng, w, (size_t)CONC_N * CONC_K, 1.0f);
    compute_t *one = compute_new(1, NULL), *three = compute_new(3, NULL);
    assert_non_null(one);
    assert_non_null(three);
    gemm_small(one, want, CONC_N, x, CONC_K, w, CONC_K, 4, CONC_N, CONC_K, 1.0f, 0.0f);
    concurrent_t c[2] = {{three, x, w, y[0]}, {three, x, w, y[1]}};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, s_concurrent_main, &c[1]), 0);
    s_concurrent_main(&c[0]);
    assert_int_equal(pthread_join(th, NULL), 0);
    for (int i = 0; i < 2; i++)
        assert_memory_equal(y[i], want, 4 * CONC_N * sizeof *want);
    compute_destroy(&three);
    compute_destroy(&one);
    free(y[1]);
    free(y[0]);
    free(want);
    free(w);
    free(x);
}

static int s_setup(void **state)
{
    (void)state;
    s_cx = compute_new(blas_threads(), NULL);
    return s_cx ? 0 : -1;
}

static int s_teardown(void **state)
{
    (void)state;
    compute_destroy(&s_cx);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ref_hand),
        cmocka_unit_test(test_ref_accumulates_in_double),
        cmocka_unit_test(test_gemm_odd_sizes),
        cmocka_unit_test(test_gemm_alpha_beta),
        cmocka_unit_test(test_gemm_large),
        cmocka_unit_test(test_gemm_degenerate),
        cmocka_unit_test(test_gemm_linear),
        cmocka_unit_test(test_small_paths),
        cmocka_unit_test(test_small_threads),
        cmocka_unit_test(test_small_batch_invariant),
        cmocka_unit_test(test_small_concurrent_callers),
        cmocka_unit_test(test_context_path),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
