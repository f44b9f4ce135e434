/* machine: see machine.h. */
#include "bench/machine.h"

#include <cblas.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "core/mem.h"
#include "core/timer.h"

/* 64 bytes of floats: gcc and clang turn this into whole-vector loads. */
typedef float vec16_t __attribute__((vector_size(64)));

double machine_sgemm_peak(int n, int repeat)
{
    size_t count = (size_t)n * n;
    float *a = mem_alloc_aligned(count * sizeof(float));
    float *b = mem_alloc_aligned(count * sizeof(float));
    float *c = mem_alloc_aligned(count * sizeof(float));
    double best = 0;
    if (a && b && c) {
        for (size_t i = 0; i < count; i++) {
            a[i] = (float)(i % 7) * 0.25f;
            b[i] = (float)(i % 5) * 0.5f;
        }
        for (int r = 0; r < repeat; r++) {
            double t0 = timer_now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b,
                        n, 0.0f, c, n);
            double rate = 2.0 * n * (double)n * n / (timer_now() - t0);
            best = rate > best ? rate : best;
        }
    }
    mem_free(a);
    mem_free(b);
    mem_free(c);
    return best;
}

typedef struct reader {
    const vec16_t *data;
    size_t n_vec;
    float sink;        /* the sum, kept so the reads cannot be optimised away */
} reader_t;

/* Sums 32-byte vectors into four accumulators: with AVX2 four ymm registers,
 * otherwise eight xmm, so that no accumulator spills to the stack (a 64-byte
 * vector type without AVX-512 did, and read at about 2/3 of the speed of
 * plain loads on a 2-vCPU AMD EPYC). The clone runs the widest loads the CPU
 * has, as the decode kernels do. */
typedef float vec8_t __attribute__((vector_size(32)));

__attribute__((target_clones("avx2", "default")))
static void *s_read(void *arg)
{
    reader_t *r = arg;
    const vec8_t *v = (const vec8_t *)r->data;
    const size_t n = r->n_vec * (sizeof(vec16_t) / sizeof(vec8_t));
    vec8_t acc0 = {0}, acc1 = {0}, acc2 = {0}, acc3 = {0};
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        acc0 += v[i];
        acc1 += v[i + 1];
        acc2 += v[i + 2];
        acc3 += v[i + 3];
    }
    for (; i < n; i++)
        acc0 += v[i];
    acc0 += acc1 + acc2 + acc3;
    float s = 0;
    for (int j = 0; j < 8; j++)
        s += acc0[j];
    r->sink = s;
    return NULL;
}

static vec16_t *s_read_buffer; /* machine_init() .. machine_release() */
static size_t s_read_vecs;

int machine_init(size_t read_bytes)
{
    machine_release();
    s_read_vecs = read_bytes / sizeof(vec16_t);
    s_read_buffer = mem_alloc_aligned(s_read_vecs * sizeof(vec16_t));
    if (!s_read_buffer)
        return -1;
    memset(s_read_buffer, 1, s_read_vecs * sizeof(vec16_t)); /* touch every page */
    return 0;
}

void machine_release(void)
{
    mem_free(s_read_buffer);
    s_read_buffer = NULL;
    s_read_vecs = 0;
}

double machine_read_bandwidth(int n_threads, int repeat)
{
    enum { MAX_THREADS = 64 };
    if (n_threads < 1 || n_threads > MAX_THREADS || !s_read_buffer)
        return 0;
    const vec16_t *data = s_read_buffer;
    const size_t n_vec = s_read_vecs;
    reader_t readers[MAX_THREADS];
    pthread_t threads[MAX_THREADS];
    double best = 0;
    for (int r = 0; r < repeat; r++) {
        double t0 = timer_now();
        for (int t = 0; t < n_threads; t++) {
            size_t first = n_vec * (size_t)t / (size_t)n_threads;
            size_t last = n_vec * (size_t)(t + 1) / (size_t)n_threads;
            readers[t] = (reader_t){.data = data + first, .n_vec = last - first};
            pthread_create(&threads[t], NULL, s_read, &readers[t]);
        }
        for (int t = 0; t < n_threads; t++)
            pthread_join(threads[t], NULL);
        double rate = (double)(n_vec * sizeof(vec16_t)) / (timer_now() - t0);
        best = rate > best ? rate : best;
    }
    return best;
}

double machine_sgemv_bandwidth(int rows, int cols, int repeat)
{
    size_t count = (size_t)rows * cols;
    float *w = mem_alloc_aligned(count * sizeof(float));
    float *x = mem_alloc_aligned((size_t)cols * sizeof(float));
    float *y = mem_alloc_aligned((size_t)rows * sizeof(float));
    double best = 0;
    if (w && x && y) {
        for (size_t i = 0; i < count; i++)
            w[i] = (float)(i % 11) * 0.125f;
        for (int i = 0; i < cols; i++)
            x[i] = 1.0f;
        for (int r = 0; r < repeat; r++) {
            double t0 = timer_now();
            cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, cols, 1.0f, w, cols, x, 1, 0.0f,
                        y, 1);
            double rate = (double)(count * sizeof(float)) / (timer_now() - t0);
            best = rate > best ? rate : best;
        }
    }
    mem_free(w);
    mem_free(x);
    mem_free(y);
    return best;
}
