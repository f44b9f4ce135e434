/* bench-gemm: how fast the expert products of a batched decode step stream
 * their weights, old path (OpenBLAS: one sgemv per row up to 4 rows, sgemm
 * above) against gemm_small, as GB/s of W read and as a ratio to the
 * machine's read bandwidth measured in the same run with the same threads.
 *
 * Shapes are the medium preset's expert weights, (2816, 1024) for gate and up
 * and (1024, 2816) for down, with --experts distinct copies of each (8: 92 MB
 * per shape, far past the caches) used in turn, as a decode step reads them.
 * One sample = one product on every copy; each figure is the median of
 * --repeat samples, old and new interleaved so that both see the same noise.
 *
 * Then the same shapes with the weight in each format of core/tensor.h
 * through matmul() (kernels/matmul.h): decode rows (m = 1, 2, 4, 16) as GB/s
 * of the format's own bytes (tensor_bytes: data and scales) and as a ratio
 * to the read bandwidth (issue 12's goal: >= 0.8), and a prefill row
 * (m = --prefill, default 128) as GFLOP/s against float32 (OpenBLAS sgemm).
 * --formats picks the formats (default all: f32,f16,bf16,f8_e4m3,mxfp4,q8_0,
 * q4_0); --formats none skips them. FP8 uses DeepSeek-V3's 128 x 128 blocks.
 *
 *   bench-gemm [--threads 1,2] [--repeat 15] [--experts 8] [--formats LIST]
 *              [--prefill 128]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "bench/machine.h"
#include "bench/workload.h"
#include "core/arg.h"
#include "core/blas.h"
#include "core/idlist.h"
#include "core/mem.h"
#include "core/timer.h"
#include "core/tensor.h"
#include "kernels/gemm_small.h"
#include "kernels/matmul.h"

enum { MAX_REPEAT = 101, MAX_EXPERTS = 64, MAX_ROWS = 16, MAX_THREAD_COUNTS = 8,
       MAX_PREFILL = 512 };
static const size_t READ_BUFFER_BYTES = (size_t)1 << 30; /* far past any cache */
static const int ROW_COUNTS[] = {1, 2, 4, 8, 16};
static const int SHAPES[][2] = {{2816, 1024}, {1024, 2816}}; /* W: (n, k) */

typedef struct options {
    const char *threads;
    int repeat;
    int experts;
    const char *formats;
    int prefill;
} options_t;

static void s_usage(FILE *out)
{
    fprintf(out, "usage: bench-gemm [--threads 1,2] [--repeat 15] [--experts 8]\n"
                 "                  [--formats f32,f16,bf16,f8_e4m3,mxfp4,q8_0,q4_0|none]\n"
                 "                  [--prefill 128]\n");
}

/* 0 with *opt filled, or -1 after a usage error (printed); exits after --help. */
static int s_parse(int argc, char **argv, options_t *opt)
{
    *opt = (options_t){.threads = "1,2", .repeat = 15, .experts = 8,
                       .formats = "f32,f16,bf16,f8_e4m3,mxfp4,q8_0,q4_0", .prefill = 128};
    const arg_opt_t table[] = {
        ARG_OPT_STRING("--threads", &opt->threads),
        ARG_OPT_INT("--repeat", &opt->repeat, 1, MAX_REPEAT),
        ARG_OPT_INT("--experts", &opt->experts, 1, MAX_EXPERTS),
        ARG_OPT_STRING("--formats", &opt->formats),
        ARG_OPT_INT("--prefill", &opt->prefill, 17, MAX_PREFILL),
        ARG_OPT_END,
    };
    return arg_parse_main("bench-gemm", argc, argv, table, s_usage, NULL, NULL);
}

/* What gemm() did before gemm_small, for W (n, k) row-major:
 *   y: (m, n), x: (m, k) */
static void s_old(float *y, const float *x, const float *w, int m, int n, int k)
{
    if (m <= 4) {
        for (int i = 0; i < m; i++) {
            memset(y + (size_t)i * n, 0, (size_t)n * sizeof *y);
            cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, w, k,
                        x + (size_t)i * k, 1, 0.0f, y + (size_t)i * n, 1);
        }
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, x, k, w,
                k, 0.0f, y, n);
}

/* Bytes/s of W over one product on each of the n_w weights; gemm_small runs
 * in cx. */
static double s_sample(bool new_path, float *y, const float *x, float *const *w,
                       int n_w, int m, int n, int k, compute_t *cx)
{
    double t0 = timer_now();
    for (int e = 0; e < n_w; e++) {
        if (new_path)
            gemm_small(cx, y, n, x, k, w[e], k, m, n, k, 1.0f, 0.0f);
        else
            s_old(y, x, w[e], m, n, k);
    }
    return (double)n_w * n * k * sizeof(float) / (timer_now() - t0);
}

static int s_bench_formats(const options_t *opt, float *const *w[2], float *x, float *y,
                           int threads, double bw);

static int s_bench_threads(const options_t *opt, float *const *w[2], float *x,
                           float *y, int threads)
{
    double bw[2 * MAX_REPEAT], old_s[MAX_REPEAT], new_s[MAX_REPEAT];
    blas_set_threads(threads);
    err_t err = {0};
    compute_t *cx = compute_new(threads, &err);
    if (!cx) {
        fprintf(stderr, "bench-gemm: %s\n", err.msg);
        return -1;
    }
    for (int r = 0; r < opt->repeat; r++)
        bw[r] = machine_read_bandwidth(threads, 1);
    printf("threads %d: GB/s of W streamed (medians of %d), ratio to read "
           "bandwidth\n", threads, opt->repeat);
    printf("  %-12s %4s %9s %9s %7s %7s %8s\n", "W (n x k)", "m", "old GB/s",
           "new GB/s", "old r", "new r", "new/old");
    double rows[2][sizeof ROW_COUNTS / sizeof ROW_COUNTS[0]][2];
    for (int s = 0; s < 2; s++) {
        const int n = SHAPES[s][0], k = SHAPES[s][1];
        for (size_t im = 0; im < sizeof ROW_COUNTS / sizeof ROW_COUNTS[0]; im++) {
            const int m = ROW_COUNTS[im];
            s_sample(false, y, x, w[s], opt->experts, m, n, k, cx); /* warm */
            s_sample(true, y, x, w[s], opt->experts, m, n, k, cx);
            for (int r = 0; r < opt->repeat; r++) {
                old_s[r] = s_sample(false, y, x, w[s], opt->experts, m, n, k, cx);
                new_s[r] = s_sample(true, y, x, w[s], opt->experts, m, n, k, cx);
            }
            rows[s][im][0] = workload_median(old_s, opt->repeat);
            rows[s][im][1] = workload_median(new_s, opt->repeat);
        }
    }
    compute_destroy(&cx);
    for (int r = opt->repeat; r < 2 * opt->repeat; r++)
        bw[r] = machine_read_bandwidth(threads, 1);
    const double bw_best = workload_max(bw, 2 * opt->repeat);
    for (int s = 0; s < 2; s++)
        for (size_t im = 0; im < sizeof ROW_COUNTS / sizeof ROW_COUNTS[0]; im++) {
            char shape[32];
            snprintf(shape, sizeof shape, "%d x %d", SHAPES[s][0], SHAPES[s][1]);
            double o = rows[s][im][0], nw = rows[s][im][1];
            printf("  %-12s %4d %9.1f %9.1f %7.2f %7.2f %8.2f\n", shape,
                   ROW_COUNTS[im], o / 1e9, nw / 1e9, o / bw_best, nw / bw_best,
                   nw / o);
        }
    printf("  machine read bandwidth (best of %d, before and after): %.1f GB/s\n",
           2 * opt->repeat, bw_best / 1e9);
    return s_bench_formats(opt, w, x, y, threads, bw_best);
}

/* ---- the weight formats through matmul() ------------------------------------ */

static const int FORMAT_ROWS[] = {1, 2, 4, 16};

/* A copy of the float weight w (n, k) in dtype, made as a checkpoint or a
 * quantizer would (FP8: random codes and 128 x 128 scales; MXFP4: random
 * codes and scales near 1). One allocation (data, then scales) into *buf
 * (caller frees with mem_free); -1 when out of memory. */
static int s_format_weight(dtype_t dtype, const float *w, int n, int k, unsigned seed,
                           tensor_t *t, void **buf)
{
    const size_t row_bytes = dtype_row_bytes(dtype, k);
    const int gr = (n + 127) / 128, gc = (k + 127) / 128;
    size_t scale_bytes = dtype == DTYPE_F8_E4M3 ? (size_t)gr * gc * sizeof(float)
                       : dtype == DTYPE_MXFP4  ? (size_t)n * (size_t)(k / 32) : 0;
    uint8_t *b = mem_alloc((size_t)n * row_bytes + scale_bytes + 64);
    if (!b)
        return -1;
    *t = (tensor_t){.dtype = dtype, .rows = n, .cols = k, .data = b, .row_stride = row_bytes};
    uint8_t *scales = b + (size_t)n * row_bytes;
    uint32_t r = seed * 2654435761u + 1;
    switch (dtype) {
    case DTYPE_F8_E4M3:
    case DTYPE_MXFP4:
        for (size_t i = 0; i < (size_t)n * row_bytes; i++) {
            r = r * 1664525u + 1013904223u;
            b[i] = (uint8_t)(r >> 24);
            if (dtype == DTYPE_F8_E4M3 && (b[i] & 0x7f) == 0x7f)
                b[i] = 0x3f;
        }
        if (dtype == DTYPE_F8_E4M3) {
            float *sc = (float *)(void *)scales;
            for (int i = 0; i < gr * gc; i++)
                sc[i] = 1e-3f * (float)(1 + i % 7);
            t->scale_inv = sc;
            t->block_n = t->block_k = 128;
            t->scale_stride = (size_t)gc;
        } else {
            for (size_t i = 0; i < scale_bytes; i++)
                scales[i] = (uint8_t)(120 + i % 8);
            t->e8m0 = scales;
            t->scale_stride = (size_t)(k / 32);
        }
        break;
    default:
        for (int i = 0; i < n; i++)
            if (dtype_row_from_f32(dtype, w + (size_t)i * k, b + (size_t)i * row_bytes, k) < 0) {
                mem_free(b);
                errno = EINVAL;
                return -1;
            }
    }
    *buf = b;
    return 0;
}

/* Seconds of one matmul on each of the n_w weights. */
static double s_format_sample(compute_t *cx, float *y, const float *x, const tensor_t *t,
                              int n_w, int m)
{
    double t0 = timer_now();
    for (int e = 0; e < n_w; e++)
        matmul(cx, y, (int)t[e].rows, x, (int)t[e].cols, &t[e], m);
    return timer_now() - t0;
}

/* The formats of opt->formats on both shapes, threads threads; bw: the
 * machine's read bandwidth measured in this run. */
static int s_bench_formats(const options_t *opt, float *const *w[2], float *x, float *y,
                           int threads, double bw)
{
    if (strcmp(opt->formats, "none") == 0)
        return 0;
    char list[128];
    snprintf(list, sizeof list, "%s", opt->formats);
    err_t err = {0};
    compute_t *cx = compute_new(threads, &err);
    if (!cx) {
        fprintf(stderr, "bench-gemm: %s\n", err.msg);
        return -1;
    }
    int rc = 0;
    double samples[MAX_REPEAT];
    printf("threads %d, %s path: matmul per format, decode GB/s of the format's bytes "
           "(ratio to %.1f GB/s read), prefill m=%d GFLOP/s\n", threads,
           compute_path_name(compute_path(cx)), bw / 1e9, opt->prefill);
    printf("  %-8s %-12s", "format", "W (n x k)");
    for (size_t im = 0; im < sizeof FORMAT_ROWS / sizeof FORMAT_ROWS[0]; im++)
        printf("   m=%-2d GB/s (r)", FORMAT_ROWS[im]);
    printf("  prefill GFLOP/s\n");
    char *save = NULL;
    for (char *name = strtok_r(list, ",", &save); name && rc == 0;
         name = strtok_r(NULL, ",", &save)) {
        dtype_t dtype;
        if (dtype_parse(name, &dtype) < 0) {
            fprintf(stderr, "bench-gemm: --formats: unknown format '%s'\n", name);
            rc = -1;
            break;
        }
        for (int s = 0; s < 2 && rc == 0; s++) {
            const int n = SHAPES[s][0], k = SHAPES[s][1];
            tensor_t t[MAX_EXPERTS];
            void *buf[MAX_EXPERTS] = {NULL};
            for (int e = 0; e < opt->experts && rc == 0; e++)
                if (s_format_weight(dtype, w[s][e], n, k, (unsigned)e, &t[e], &buf[e]) < 0) {
                    fprintf(stderr, "bench-gemm: out of memory\n");
                    rc = -1;
                }
            if (rc == 0) {
                double bytes = 0;
                for (int e = 0; e < opt->experts; e++)
                    bytes += (double)tensor_bytes(&t[e]);
                char shape[32];
                snprintf(shape, sizeof shape, "%d x %d", n, k);
                printf("  %-8s %-12s", dtype_info(dtype)->name, shape);
                for (size_t im = 0; im < sizeof FORMAT_ROWS / sizeof FORMAT_ROWS[0]; im++) {
                    const int m = FORMAT_ROWS[im];
                    s_format_sample(cx, y, x, t, opt->experts, m); /* warm */
                    for (int r = 0; r < opt->repeat; r++)
                        samples[r] = bytes / s_format_sample(cx, y, x, t, opt->experts, m);
                    double gbs = workload_median(samples, opt->repeat);
                    printf("   %6.1f (%4.2f)", gbs / 1e9, gbs / bw);
                }
                const int pr = opt->repeat / 3 + 1;
                s_format_sample(cx, y, x, t, 1, opt->prefill);
                for (int r = 0; r < pr; r++)
                    samples[r] = 2.0 * opt->prefill * n * k * opt->experts /
                                 s_format_sample(cx, y, x, t, opt->experts, opt->prefill);
                printf("  %8.1f\n", workload_median(samples, pr) / 1e9);
                fflush(stdout);
            }
            for (int e = 0; e < opt->experts; e++)
                mem_free(buf[e]);
        }
    }
    compute_destroy(&cx);
    return rc;
}

/* The path a compute context picks on this CPU. */
static compute_path_t s_best_path(void)
{
    compute_t *cx = compute_new(1, NULL);
    compute_path_t path = cx ? compute_path(cx) : COMPUTE_PATH_AUTO;
    compute_destroy(&cx);
    return path;
}

int main(int argc, char **argv)
{
    blas_ensure_native(argv);
    options_t opt;
    if (s_parse(argc, argv, &opt) < 0)
        return 2;
    int32_t *threads = NULL;
    int n_threads = 0, rc = 1;
    float *w_all[2][MAX_EXPERTS] = {{NULL}};
    float *const *w[2] = {w_all[0], w_all[1]};
    size_t w_floats = (size_t)SHAPES[0][0] * SHAPES[0][1];
    float *x = mem_alloc((size_t)MAX_PREFILL * 2816 * sizeof *x);
    float *y = mem_alloc((size_t)MAX_PREFILL * 2816 * sizeof *y);
    if (idlist_option("bench-gemm", "--threads", opt.threads, &threads, &n_threads) < 0)
        goto done;
    if (!x || !y || machine_init(READ_BUFFER_BYTES) < 0)
        goto oom;
    for (int s = 0; s < 2; s++)
        for (int e = 0; e < opt.experts; e++) {
            w_all[s][e] = mem_alloc(w_floats * sizeof(float));
            if (!w_all[s][e])
                goto oom;
            for (size_t i = 0; i < w_floats; i++) /* small values, no denormals */
                w_all[s][e][i] = (float)((i * 2654435761u + (size_t)e) % 1000) * 1e-3f - 0.5f;
        }
    for (size_t i = 0; i < (size_t)MAX_PREFILL * 2816; i++)
        x[i] = (float)(i % 97) * 1e-2f - 0.48f;
    printf("bench-gemm: openblas %s kernels, gemm_small %s path, %d experts per shape\n",
           blas_core_name(), compute_path_name(s_best_path()), opt.experts);
    rc = 0;
    for (int i = 0; rc == 0 && i < n_threads && i < MAX_THREAD_COUNTS; i++)
        rc = s_bench_threads(&opt, w, x, y, threads[i]) < 0 ? 1 : 0;
    goto done;
oom:
    fprintf(stderr, "bench-gemm: out of memory\n");
done:
    for (int s = 0; s < 2; s++)
        for (int e = 0; e < MAX_EXPERTS; e++)
            mem_free(w_all[s][e]);
    mem_free(y);
    mem_free(x);
    mem_free(threads);
    machine_release();
    return rc;
}
