/* test_latent: MLA's shape from a config (the deepseek fixtures' and a
 * DeepSeek-V3-like YaRN one), the softmax scale with YaRN's mscale^2 as
 * transformers' DeepseekV3Attention sets it (computed here in float64), the
 * constructor's failures, and latent_run() itself: a prefill then decode
 * steps against a float64 reference written out here the way transformers
 * computes it (q/kv LoRA, RMSNorms, k_nope and v from kv_b_proj, RoPE on the
 * rotary part, causal softmax per head, o_proj), for q LoRA (v3) and q_proj
 * (v2) configurations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "engine/latent.h"
#include "tests/testutil.h"

static config_t s_load(const char *name)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", testutil_env("MOE_FIXTURES", "../shared/fixtures"),
             name);
    config_t cfg;
    err_t err = {0};
    if (config_load(&cfg, dir, &err) != 0)
        fail_msg("%s: %s", name, err.msg);
    return cfg;
}

static void test_shape_of_the_fixtures(void **state)
{
    (void)state;
    config_t v3 = s_load("deepseek_v3-A"), v2 = s_load("deepseek_v2-A");
    assert_true(latent_applies(&v3) && latent_applies(&v2));
    config_t mixtral = s_load("mixtral-A");
    assert_false(latent_applies(&mixtral));
    mla_shape_t s = latent_shape(&v3);
    assert_int_equal(s.hidden, 64);
    assert_int_equal(s.n_heads, 4);
    assert_int_equal(s.q_lora_rank, 32);
    assert_int_equal(s.kv_lora_rank, 24);
    assert_int_equal(s.qk_nope_head_dim, 16);
    assert_int_equal(s.qk_rope_head_dim, 8);
    assert_int_equal(s.v_head_dim, 16);
    assert_true(s.rope_interleaved);
    assert_true(s.eps == v3.rms_norm_eps);
    assert_true(fabs(s.scale - 1.0 / sqrt(24.0)) <= 1e-7);
    assert_int_equal(mla_cache_width(&s), 32);
    s = latent_shape(&v2);
    assert_int_equal(s.q_lora_rank, 0);
    assert_true(s.rope_interleaved); /* V2 always rotates pairs */
}

static void test_yarn_scale(void **state)
{
    (void)state;
    config_t c = s_load("deepseek_v3-A");
    c.rope_type = CONFIG_ROPE_YARN;
    c.rope_factor = 40;
    c.rope_orig_max_pos = 4096;
    c.rope_beta_fast = 32, c.rope_beta_slow = 1;
    c.rope_mscale = 1, c.rope_mscale_all_dim = 1;
    c.rope_truncate = true;
    const double base = 1.0 / sqrt(24.0), m = 0.1 * log(40.0) + 1.0;
    mla_shape_t s = latent_shape(&c);
    printf("  yarn factor 40, mscale_all_dim 1: scale %.7g = %.7g x %.6g\n", s.scale, base,
           m * m);
    assert_true(fabs(s.scale - base * m * m) <= 1e-6 * base * m * m);
    c.rope_mscale_all_dim = 0.707; /* DeepSeek-V2's value */
    const double m2 = 0.1 * 0.707 * log(40.0) + 1.0;
    assert_true(fabs(latent_shape(&c).scale - base * m2 * m2) <= 1e-6 * base * m2 * m2);
    c.rope_mscale_all_dim = 0; /* absent: no change */
    assert_true(fabs(latent_shape(&c).scale - base) <= 1e-7);
    c.rope_mscale_all_dim = 1, c.rope_factor = 1; /* factor 1: mscale 1 */
    assert_true(fabs(latent_shape(&c).scale - base) <= 1e-7);
    c.rope_factor = 40;
    err_t err = {0};
    compute_t *cx = compute_new(1, NULL);
    assert_non_null(cx);
    latent_t *lat = latent_new(&c, 4, 16, cx, &err); /* the YaRN rope builds */
    if (!lat)
        fail_msg("%s", err.msg);
    latent_destroy(&lat);
    assert_null(lat);
    latent_destroy(&lat);
    latent_destroy(NULL);
    compute_destroy(&cx);
}

static void test_new_fails_cleanly(void **state)
{
    (void)state;
    err_t err = {0};
    compute_t *cx = compute_new(1, NULL);
    assert_non_null(cx);
    config_t mixtral = s_load("mixtral-A");
    assert_null(latent_new(&mixtral, 4, 16, cx, &err));
    assert_int_equal(errno, EINVAL);
    config_t v3 = s_load("deepseek_v3-A");
    assert_null(latent_new(&v3, 0, 16, cx, &err));
    assert_int_equal(errno, EINVAL);
    /* More rows than positions: one call never needs more than max_ctx. */
    latent_t *lat = latent_new(&v3, 64, 8, cx, &err);
    assert_non_null(lat);
    latent_destroy(&lat);
    int failures = 0;
    for (long n = 1; n < 100; n++) {
        mem_fail_after(n);
        lat = latent_new(&v3, 4, 16, cx, &err);
        int saved = errno;
        mem_fail_after(-1);
        if (lat) {
            latent_destroy(&lat);
            break;
        }
        assert_int_equal(saved, ENOMEM);
        failures++;
    }
    assert_true(failures >= 3);
    compute_destroy(&cx);
}

/* ---- latent_run against a float64 reference ------------------------------ */

/* Random MLA weights of cfg's shape (owned arrays, one per role). */
typedef struct s_mla_model {
    float *q_a, *q_a_norm, *q_b, *q, *kv_a, *kv_a_norm, *kv_b, *o;
    layer_weights_t lw;
} s_mla_model_t;

static float *s_random(testrng_t *rng, size_t n, float scale, float mean)
{
    float *x = malloc(n * sizeof *x);
    assert_non_null(x);
    testrng_fill(rng, x, n, scale);
    for (size_t i = 0; i < n; i++)
        x[i] += mean;
    return x;
}

static void s_model_init(s_mla_model_t *m, const config_t *c, uint64_t seed)
{
    testrng_t rng;
    testrng_init(&rng, seed);
    const size_t hid = (size_t)c->hidden_size, H = (size_t)c->n_heads;
    const size_t N = (size_t)c->qk_nope_head_dim, P = (size_t)c->qk_rope_head_dim;
    const size_t R = (size_t)c->kv_lora_rank, V = (size_t)c->v_head_dim;
    const size_t QL = (size_t)c->q_lora_rank;
    memset(m, 0, sizeof *m);
    if (QL > 0) {
        m->q_a = s_random(&rng, QL * hid, 1.0f / sqrtf((float)hid), 0);
        m->q_a_norm = s_random(&rng, QL, 0.1f, 1);
        m->q_b = s_random(&rng, H * (N + P) * QL, 1.0f / sqrtf((float)QL), 0);
    } else {
        m->q = s_random(&rng, H * (N + P) * hid, 1.0f / sqrtf((float)hid), 0);
    }
    m->kv_a = s_random(&rng, (R + P) * hid, 1.0f / sqrtf((float)hid), 0);
    m->kv_a_norm = s_random(&rng, R, 0.1f, 1);
    m->kv_b = s_random(&rng, H * (N + V) * R, 1.0f / sqrtf((float)R), 0);
    m->o = s_random(&rng, hid * H * V, 1.0f / sqrtf((float)(H * V)), 0);
    m->lw = (layer_weights_t){.q_a_norm = m->q_a_norm, .kv_a_norm = m->kv_a_norm};
    if (QL > 0) {
        m->lw.q_a = tensor_f32(m->q_a, (int64_t)QL, (int64_t)hid);
        m->lw.q_b = tensor_f32(m->q_b, (int64_t)(H * (N + P)), (int64_t)QL);
    } else {
        m->lw.q = tensor_f32(m->q, (int64_t)(H * (N + P)), (int64_t)hid);
    }
    m->lw.kv_a = tensor_f32(m->kv_a, (int64_t)(R + P), (int64_t)hid);
    m->lw.kv_b = tensor_f32(m->kv_b, (int64_t)(H * (N + V)), (int64_t)R);
    m->lw.o = tensor_f32(m->o, (int64_t)hid, (int64_t)(H * V));
}

static void s_model_free(s_mla_model_t *m)
{
    free(m->q_a), free(m->q_a_norm), free(m->q_b), free(m->q);
    free(m->kv_a), free(m->kv_a_norm), free(m->kv_b), free(m->o);
}

/* y = W x, W (out, in) float32, in float64. */
static void s_matvec(double *y, const float *w, const double *x, size_t out, size_t in)
{
    for (size_t i = 0; i < out; i++) {
        double acc = 0;
        for (size_t j = 0; j < in; j++)
            acc += (double)w[i * in + j] * x[j];
        y[i] = acc;
    }
}

static void s_rmsnorm(double *x, const float *w, size_t n, double eps)
{
    double ss = 0;
    for (size_t i = 0; i < n; i++)
        ss += x[i] * x[i];
    const double inv = 1.0 / sqrt(ss / (double)n + eps);
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] * inv * w[i];
}

/* Rotates x (width P) for position pos: pairs (2i, 2i+1) when interleaved
 * (transformers' apply_rotary_pos_emb_interleave, up to the same permutation
 * of q and k, which leaves q . k unchanged), else (i, i + P/2). */
static void s_rotate(double *x, size_t P, int pos, double theta, bool interleaved)
{
    for (size_t i = 0; i < P / 2; i++) {
        const double ang = pos * pow(theta, -2.0 * (double)i / (double)P);
        const size_t a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + P / 2;
        const double xa = x[a], xb = x[b];
        x[a] = xa * cos(ang) - xb * sin(ang);
        x[b] = xb * cos(ang) + xa * sin(ang);
    }
}

/* out[t] = o_proj(MLA attention of row t over rows 0..t), t < n, for inputs
 * xn (n, hidden) at positions 0..n-1: transformers' unabsorbed form. */
static void s_reference(double *out, const config_t *c, const s_mla_model_t *m,
                        const float *xn, int n)
{
    const size_t hid = (size_t)c->hidden_size, H = (size_t)c->n_heads;
    const size_t N = (size_t)c->qk_nope_head_dim, P = (size_t)c->qk_rope_head_dim;
    const size_t R = (size_t)c->kv_lora_rank, V = (size_t)c->v_head_dim;
    const size_t QL = (size_t)c->q_lora_rank, D = N + P, T = (size_t)n;
    double *q = calloc(T * H * D, sizeof *q), *k = calloc(T * H * D, sizeof *k);
    double *v = calloc(T * H * V, sizeof *v), *x = calloc(hid, sizeof *x);
    double *tmp = calloc(QL + R + P + H * (N + V) + 1, sizeof *tmp);
    double *att = calloc(H * V, sizeof *att), *p = calloc(T, sizeof *p);
    assert_true(q && k && v && x && tmp && att && p);
    for (size_t t = 0; t < T; t++) {
        for (size_t j = 0; j < hid; j++)
            x[j] = xn[t * hid + j];
        if (QL > 0) {
            s_matvec(tmp, m->q_a, x, QL, hid);
            s_rmsnorm(tmp, m->q_a_norm, QL, c->rms_norm_eps);
            s_matvec(q + t * H * D, m->q_b, tmp, H * D, QL);
        } else {
            s_matvec(q + t * H * D, m->q, x, H * D, hid);
        }
        double *ckv = tmp; /* [c (R) | k_pe (P)] */
        s_matvec(ckv, m->kv_a, x, R + P, hid);
        s_rmsnorm(ckv, m->kv_a_norm, R, c->rms_norm_eps);
        s_rotate(ckv + R, P, (int)t, c->rope_theta, c->rope_interleave);
        double *kvb = tmp + R + P; /* per head [k_nope (N) | v (V)] */
        s_matvec(kvb, m->kv_b, ckv, H * (N + V), R);
        for (size_t h = 0; h < H; h++) {
            double *qh = q + (t * H + h) * D, *kh = k + (t * H + h) * D;
            s_rotate(qh + N, P, (int)t, c->rope_theta, c->rope_interleave);
            memcpy(kh, kvb + h * (N + V), N * sizeof *kh);
            memcpy(kh + N, ckv + R, P * sizeof *kh);
            memcpy(v + (t * H + h) * V, kvb + h * (N + V) + N, V * sizeof *v);
        }
    }
    const double scale = 1.0 / sqrt((double)D);
    for (size_t t = 0; t < T; t++) {
        for (size_t h = 0; h < H; h++) {
            double mx = -INFINITY, sum = 0;
            for (size_t s2 = 0; s2 <= t; s2++) {
                double dot = 0;
                for (size_t d = 0; d < D; d++)
                    dot += q[(t * H + h) * D + d] * k[(s2 * H + h) * D + d];
                p[s2] = dot * scale;
                mx = p[s2] > mx ? p[s2] : mx;
            }
            for (size_t s2 = 0; s2 <= t; s2++)
                sum += (p[s2] = exp(p[s2] - mx));
            for (size_t d = 0; d < V; d++) {
                double acc = 0;
                for (size_t s2 = 0; s2 <= t; s2++)
                    acc += p[s2] / sum * v[(s2 * H + h) * V + d];
                att[h * V + d] = acc;
            }
        }
        s_matvec(out + t * hid, m->o, att, hid, H * V);
    }
    free(q), free(k), free(v), free(x), free(tmp), free(att), free(p);
}

/* A prefill of n0 rows, then one-row decode steps up to n rows in all: each
 * call adds its rows' attention onto x; all match the reference. */
static void s_check_run(const char *fixture, uint64_t seed)
{
    const config_t c = s_load(fixture);
    const int n = 7, n0 = 4, hid = c.hidden_size;
    s_mla_model_t m;
    s_model_init(&m, &c, seed);
    testrng_t rng;
    testrng_init(&rng, seed + 1);
    float *xn = s_random(&rng, (size_t)n * hid, 1.0f, 0);
    float *x = s_random(&rng, (size_t)n * hid, 1.0f, 0);
    float *x0 = malloc((size_t)n * hid * sizeof *x0);
    double *want = calloc((size_t)n * hid, sizeof *want);
    const mla_shape_t shape = latent_shape(&c);
    float *cache = calloc((size_t)n * mla_cache_width(&shape), sizeof *cache);
    assert_true(x0 && want && cache);
    memcpy(x0, x, (size_t)n * hid * sizeof *x0);
    s_reference(want, &c, &m, xn, n);
    for (size_t i = 0; i < (size_t)n * hid; i++)
        want[i] += x0[i];

    err_t err = {0};
    compute_t *cx = compute_new(1, NULL);
    assert_non_null(cx);
    latent_t *lat = latent_new(&c, n0, n, cx, &err);
    if (!lat)
        fail_msg("%s: %s", fixture, err.msg);
    latent_run(lat, &m.lw, x, hid, xn, n0, 0, cache);
    for (int t = n0; t < n; t++)
        latent_run(lat, &m.lw, x + (size_t)t * hid, hid, xn + (size_t)t * hid, 1, t, cache);
    latent_destroy(&lat);
    compute_destroy(&cx);

    const double diff = testutil_max_abs_diff(x, want, (size_t)n * hid);
    const double size = testutil_max_abs(want, (size_t)n * hid);
    printf("  %s: max |latent_run - reference| %.3g (values up to %.3g)\n", fixture, diff,
           size);
    assert_true(diff <= 1e-4 * (size > 1 ? size : 1));
    free(xn), free(x), free(x0), free(want), free(cache);
    s_model_free(&m);
}

static void test_run_matches_reference(void **state)
{
    (void)state;
    s_check_run("deepseek_v3-A", 11); /* q LoRA, interleaved rotary pairs */
    s_check_run("deepseek_v2-A", 12); /* q_proj */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shape_of_the_fixtures),
        cmocka_unit_test(test_yarn_scale),
        cmocka_unit_test(test_new_fails_cleanly),
        cmocka_unit_test(test_run_matches_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
