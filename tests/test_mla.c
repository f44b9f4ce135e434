/* test_mla: latent-cache multi-head latent attention against a naive float64
 * reference that expands k_nope and v per head from kv_b_proj and rotates the
 * rope part in the checkpoint's own layout (complex pairs when interleaved),
 * for whole prefill, chunked prefill and decode, with and without q LoRA,
 * with and without biases; plus the cache contents, accumulation into a
 * residual, and the constructor's failures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "kernels/mla.h"
#include "tests/testutil.h"

enum { T_MAX = 16 };
static const double THETA = 10000.0;

/* Random weights of one layer in the fixtures' spread. */
typedef struct model {
    mla_shape_t shape;
    mla_weights_t w;
    struct { float *q_a, *q_b, *q, *kv_a, *kv_b, *o; } f;  /* w's matrices as floats */
    tensor_t q_a, q_b, q, kv_a, kv_b, o;                  /* and as tensors */
    float *mem[11];   /* owned arrays behind w */
    int n_mem;
} model_t;

static float *s_arr(model_t *m, testrng_t *rng, size_t n, float scale, float add)
{
    float *a = malloc(n * sizeof *a);
    assert_non_null(a);
    testrng_fill(rng, a, n, scale);
    for (size_t i = 0; i < n; i++)
        a[i] += add;
    m->mem[m->n_mem++] = a;
    return a;
}

static void s_model_init(model_t *m, uint64_t seed, int q_lora, bool interleaved,
                         bool biases)
{
    memset(m, 0, sizeof *m);
    testrng_t rng;
    testrng_init(&rng, seed);
    m->shape = (mla_shape_t){
        .hidden = 64, .n_heads = 4, .q_lora_rank = q_lora, .kv_lora_rank = 24,
        .qk_nope_head_dim = 16, .qk_rope_head_dim = 8, .v_head_dim = 16,
        .eps = 1e-6f, .scale = (float)(1.0 / sqrt(16.0 + 8.0)),
        .rope_interleaved = interleaved,
    };
    const mla_shape_t *s = &m->shape;
    const size_t H = 4, D = 24, hid = 64, R = 24, P = 8, N = 16, V = 16;
    if (q_lora) {
        m->f.q_a = s_arr(m, &rng, (size_t)q_lora * hid, 0.1f, 0);
        m->w.q_a_norm = s_arr(m, &rng, (size_t)q_lora, 0.1f, 1);
        m->f.q_b = s_arr(m, &rng, H * D * (size_t)q_lora, 0.1f, 0);
        m->q_a = tensor_f32(m->f.q_a, q_lora, (int64_t)hid);
        m->q_b = tensor_f32(m->f.q_b, (int64_t)(H * D), q_lora);
        m->w.q_a_proj = &m->q_a;
        m->w.q_b_proj = &m->q_b;
        if (biases)
            m->w.q_a_bias = s_arr(m, &rng, (size_t)q_lora, 0.05f, 0);
    } else {
        m->f.q = s_arr(m, &rng, H * D * hid, 0.1f, 0);
        m->q = tensor_f32(m->f.q, (int64_t)(H * D), (int64_t)hid);
        m->w.q_proj = &m->q;
    }
    m->f.kv_a = s_arr(m, &rng, (R + P) * hid, 0.1f, 0);
    m->w.kv_a_norm = s_arr(m, &rng, R, 0.1f, 1);
    m->f.kv_b = s_arr(m, &rng, H * (N + V) * R, 0.1f, 0);
    m->f.o = s_arr(m, &rng, hid * H * V, 0.1f, 0);
    m->kv_a = tensor_f32(m->f.kv_a, (int64_t)(R + P), (int64_t)hid);
    m->kv_b = tensor_f32(m->f.kv_b, (int64_t)(H * (N + V)), (int64_t)R);
    m->o = tensor_f32(m->f.o, (int64_t)hid, (int64_t)(H * V));
    m->w.kv_a_proj = &m->kv_a;
    m->w.kv_b_proj = &m->kv_b;
    m->w.o_proj = &m->o;
    if (biases) {
        m->w.kv_a_bias = s_arr(m, &rng, R + P, 0.05f, 0);
        m->w.o_bias = s_arr(m, &rng, hid, 0.05f, 0);
    }
    (void)s;
}

static void s_model_fini(model_t *m)
{
    for (int i = 0; i < m->n_mem; i++)
        free(m->mem[i]);
}

/* y (n_out) = W x + b in float64; w: (n_out, n_in). */
static void s_lin(double *y, const float *w, const float *b, const double *x,
                  int n_out, int n_in)
{
    for (int o = 0; o < n_out; o++) {
        double acc = b ? b[o] : 0.0;
        for (int i = 0; i < n_in; i++)
            acc += (double)w[(size_t)o * n_in + i] * x[i];
        y[o] = acc;
    }
}

static void s_rms(double *x, const float *w, int n, double eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    double inv = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++)
        x[i] = w[i] * (x[i] * inv);
}

/* Rotates one rope vector (p) at position pos in the checkpoint's layout:
 * interleaved pairs (2i, 2i+1) as complex numbers, else halves (i, i+p/2). */
static void s_rot(double *v, int p, int pos, bool interleaved)
{
    for (int i = 0; i < p / 2; i++) {
        double ang = pos * pow(THETA, -2.0 * i / p);
        double c = cos(ang), s = sin(ang);
        int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + p / 2;
        double x0 = v[a], x1 = v[b];
        v[a] = x0 * c - x1 * s;
        v[b] = x1 * c + x0 * s;
    }
}

/* Float64 reference of the whole sequence x: (t, hidden) at positions
 * 0..t-1: out (t, hidden); c (t, R) the normed latents; pe (t, P) the rotated
 * k_pe in the checkpoint's layout. Keys and values are expanded per head. */
static void s_reference(const model_t *m, const float *x, int t, double *out,
                        double *c, double *pe)
{
    const mla_shape_t *s = &m->shape;
    const int H = s->n_heads, R = s->kv_lora_rank, P = s->qk_rope_head_dim;
    const int N = s->qk_nope_head_dim, V = s->v_head_dim, D = N + P;
    const int hid = s->hidden, qr = s->q_lora_rank;
    static double q[T_MAX][4 * 24], kn[T_MAX][4 * 16], v[T_MAX][4 * 16];
    double xd[64], tmp[64], o[4 * 16];
    for (int r = 0; r < t; r++) {
        for (int i = 0; i < hid; i++)
            xd[i] = x[r * hid + i];
        if (qr) {
            s_lin(tmp, m->f.q_a, m->w.q_a_bias, xd, qr, hid);
            s_rms(tmp, m->w.q_a_norm, qr, s->eps);
            s_lin(q[r], m->f.q_b, NULL, tmp, H * D, qr);
        } else {
            s_lin(q[r], m->f.q, NULL, xd, H * D, hid);
        }
        for (int h = 0; h < H; h++)
            s_rot(q[r] + h * D + N, P, r, s->rope_interleaved);
        s_lin(tmp, m->f.kv_a, m->w.kv_a_bias, xd, R + P, hid);
        s_rms(tmp, m->w.kv_a_norm, R, s->eps);
        memcpy(c + r * R, tmp, R * sizeof *c);
        memcpy(pe + r * P, tmp + R, P * sizeof *pe);
        s_rot(pe + r * P, P, r, s->rope_interleaved);
        double kv[4 * 32];
        s_lin(kv, m->f.kv_b, NULL, c + r * R, H * (N + V), R);
        for (int h = 0; h < H; h++) {
            memcpy(kn[r] + h * N, kv + h * (N + V), N * sizeof(double));
            memcpy(v[r] + h * V, kv + h * (N + V) + N, V * sizeof(double));
        }
    }
    for (int r = 0; r < t; r++) {
        for (int h = 0; h < H; h++) {
            double sc[T_MAX], mx = -INFINITY, sum = 0;
            for (int j = 0; j <= r; j++) {
                double d = 0;
                for (int i = 0; i < N; i++)
                    d += q[r][h * D + i] * kn[j][h * N + i];
                for (int i = 0; i < P; i++)
                    d += q[r][h * D + N + i] * pe[j * P + i];
                sc[j] = d * s->scale;
                mx = fmax(mx, sc[j]);
            }
            for (int j = 0; j <= r; j++)
                sum += sc[j] = exp(sc[j] - mx);
            for (int i = 0; i < V; i++) {
                double acc = 0;
                for (int j = 0; j <= r; j++)
                    acc += sc[j] / sum * v[j][h * V + i];
                o[h * V + i] = acc;
            }
        }
        s_lin(out + r * hid, m->f.o, m->w.o_bias, o, hid, H * V);
    }
}

/* Runs the module over x in chunks of the given sizes (summing to t) and
 * checks output and cache rows against the reference; returns the largest
 * output error relative to the largest reference output. */
static double s_check(const model_t *m, const int *chunks, int n_chunks,
                      bool accumulate)
{
    const mla_shape_t *s = &m->shape;
    const int hid = s->hidden, R = s->kv_lora_rank, P = s->qk_rope_head_dim;
    const int W = mla_cache_width(s);
    int t = 0, max_chunk = 0;
    for (int i = 0; i < n_chunks; i++) {
        t += chunks[i];
        max_chunk = chunks[i] > max_chunk ? chunks[i] : max_chunk;
    }
    assert_true(t <= T_MAX);
    testrng_t rng;
    testrng_init(&rng, 99);
    float x[T_MAX * 64], out[T_MAX * 64], resid[T_MAX * 64], cache[T_MAX * 32];
    testrng_fill(&rng, x, (size_t)t * hid, 1.0f);
    testrng_fill(&rng, resid, (size_t)t * hid, 1.0f);
    for (int i = 0; i < t * hid; i++)
        out[i] = accumulate ? resid[i] : NAN; /* written, never read, if not */
    for (int i = 0; i < T_MAX * W; i++)
        cache[i] = NAN; /* rows not yet written must not be read */

    rope_t *rope = rope_new(P, THETA, NULL);
    mla_t *mla = mla_new(s, max_chunk, T_MAX, NULL);
    compute_t *cx = compute_new(1, NULL);
    assert_non_null(rope);
    assert_non_null(mla);
    assert_non_null(cx);
    int pos0 = 0;
    for (int i = 0; i < n_chunks; i++) {
        mla_run(mla, cx, out + pos0 * hid, hid, accumulate, x + pos0 * hid,
                chunks[i], pos0, cache, &m->w, rope);
        pos0 += chunks[i];
    }
    mla_destroy(&mla);
    assert_null(mla);
    compute_destroy(&cx);
    rope_destroy(&rope);

    double ref[T_MAX * 64], c[T_MAX * 24], pe[T_MAX * 8];
    s_reference(m, x, t, ref, c, pe);
    if (accumulate)
        for (int i = 0; i < t * hid; i++)
            ref[i] += resid[i];
    double err = testutil_max_abs_diff(out, ref, (size_t)t * hid);
    double rel = err / testutil_max_abs(ref, (size_t)t * hid);
    /* Cache: c_kv as is, k_pe in the rotate_half layout. */
    double cerr = 0;
    for (int r = 0; r < t; r++) {
        for (int i = 0; i < R; i++)
            cerr = fmax(cerr, fabs(cache[r * W + i] - c[r * R + i]));
        for (int i = 0; i < P; i++) {
            int src = !s->rope_interleaved ? i
                      : i < P / 2          ? 2 * i
                                           : 2 * (i - P / 2) + 1;
            cerr = fmax(cerr, fabs(cache[r * W + R + i] - pe[r * P + src]));
        }
    }
    print_message("  q_lora %2d interleaved %d chunks %d (t %2d): out err %.2e "
                  "(rel %.2e), cache err %.2e\n", s->q_lora_rank,
                  s->rope_interleaved, n_chunks, t, err, rel, cerr);
    assert_true(rel < 2e-5);
    assert_true(cerr < 2e-5);
    return rel;
}

static const int PREFILL[] = {13};
static const int CHUNKED[] = {5, 1, 4, 3};
static const int DECODE[] = {4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

static void s_three_ways(const model_t *m)
{
    s_check(m, PREFILL, 1, false);
    s_check(m, CHUNKED, 4, false);
    s_check(m, DECODE, 13, false);
}

/* deepseek_v2-A: no q LoRA, interleaved rope. */
static void test_without_q_lora(void **state)
{
    (void)state;
    model_t m;
    s_model_init(&m, 1, 0, true, false);
    s_three_ways(&m);
    s_model_fini(&m);
}

/* deepseek_v3-A: q LoRA 32, rope_interleave true. */
static void test_with_q_lora(void **state)
{
    (void)state;
    model_t m;
    s_model_init(&m, 2, 32, true, false);
    s_three_ways(&m);
    s_model_fini(&m);
}

/* A V3 config with rope_interleave false rotates halves directly. */
static void test_rotate_half_layout(void **state)
{
    (void)state;
    model_t m;
    s_model_init(&m, 3, 32, false, false);
    s_three_ways(&m);
    s_model_fini(&m);
}

/* attention_bias: q_a_proj, kv_a_proj_with_mqa and o_proj biases. */
static void test_biases(void **state)
{
    (void)state;
    model_t m;
    s_model_init(&m, 4, 32, true, true);
    s_three_ways(&m);
    s_model_fini(&m);
}

/* accumulate adds o_proj's result to what out holds (the residual). */
static void test_accumulate_into_residual(void **state)
{
    (void)state;
    model_t m;
    s_model_init(&m, 5, 0, true, false);
    s_check(&m, CHUNKED, 4, true);
    s_model_fini(&m);
}

/* The check can fail: a wrong scale moves the output well past tolerance. */
static void test_reference_is_sensitive(void **state)
{
    (void)state;
    model_t m;
    s_model_init(&m, 6, 0, true, false);
    const mla_shape_t good = m.shape;
    m.shape.scale *= 1.01f;
    float x[4 * 64], out[4 * 64], cache[4 * 32];
    testrng_t rng;
    testrng_init(&rng, 5);
    testrng_fill(&rng, x, 4 * 64, 1.0f);
    rope_t *rope = rope_new(8, THETA, NULL);
    mla_t *mla = mla_new(&m.shape, 4, 4, NULL);
    compute_t *cx = compute_new(1, NULL);
    assert_non_null(cx);
    mla_run(mla, cx, out, 64, false, x, 4, 0, cache, &m.w, rope);
    m.shape = good;
    double ref[T_MAX * 64], c[T_MAX * 24], pe[T_MAX * 8];
    s_reference(&m, x, 4, ref, c, pe);
    assert_true(testutil_max_abs_diff(out, ref, 4 * 64) /
                testutil_max_abs(ref, 4 * 64) > 1e-4);
    mla_destroy(&mla);
    compute_destroy(&cx);
    rope_destroy(&rope);
    s_model_fini(&m);
}

static void test_new_rejects_and_fails_cleanly(void **state)
{
    (void)state;
    model_t m;
    s_model_init(&m, 7, 0, true, false);
    err_t err;
    mla_shape_t bad = m.shape;
    bad.qk_rope_head_dim = 7;
    errno = 0;
    assert_null(mla_new(&bad, 4, 8, &err));
    assert_int_equal(errno, EINVAL);
    assert_null(mla_new(&m.shape, 8, 4, &err)); /* max_ctx < max_rows */
    assert_int_equal(errno, EINVAL);
    assert_int_equal(mla_cache_width(&m.shape), 32);
    for (long n = 1; n <= 3; n++) {
        mem_fail_after(n);
        mla_t *mla = mla_new(&m.shape, 4, 8, &err);
        mem_fail_after(-1);
        assert_null(mla);
        assert_int_equal(errno, ENOMEM);
    }
    mla_t *mla = mla_new(&m.shape, 4, 8, &err);
    assert_non_null(mla);
    mla_destroy(&mla);
    mla_destroy(&mla); /* safe twice */
    s_model_fini(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_without_q_lora),
        cmocka_unit_test(test_with_q_lora),
        cmocka_unit_test(test_rotate_half_layout),
        cmocka_unit_test(test_biases),
        cmocka_unit_test(test_accumulate_into_residual),
        cmocka_unit_test(test_reference_is_sensitive),
        cmocka_unit_test(test_new_rejects_and_fails_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
