/* test_experts: expert FFNs over routed rows against a float64 reference
 * (gpt_oss's from its fused layout), and the checks that keep a bad assignment from reaching the math. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/experts.h"
#include "model/expert_layout.h"
#include "tests/testutil.h"

enum { HIDDEN = 7, INTER = 5, N_EXPERTS = 3, MAX_ROWS = 9 };

typedef struct fake_model {
    weights_t w;
    layer_weights_t layer;
    expert_weights_t experts[N_EXPERTS];
    float data[N_EXPERTS][3][INTER * HIDDEN];
} fake_model_t;

/* w: one layer of cfg (HIDDEN, INTER, N_EXPERTS, top-2, with act and limit)
 * whose experts (and biases, or NULL) are the arrays given. */
static void s_one_layer(weights_t *w, layer_weights_t *layer, expert_weights_t *experts,
                        expert_biases_t *biases, config_expert_act_t act, float limit)
{
    w->cfg = (config_t){.hidden_size = HIDDEN, .intermediate_size = INTER,
                        .n_experts = N_EXPERTS, .n_layers = 1, .n_experts_per_tok = 2,
                        .expert_act = act, .swiglu_limit = limit};
    w->layers = layer;
    layer->experts = experts;
    layer->expert_biases = biases;
}

/* A one-layer model whose expert 2 is not hosted. */
static fake_model_t *s_model(void)
{
    fake_model_t *m = calloc(1, sizeof *m);
    s_one_layer(&m->w, &m->layer, m->experts, NULL, CONFIG_EXPERT_SWIGLU, 0);
    testrng_t rng;
    testrng_init(&rng, 11);
    for (int e = 0; e < N_EXPERTS - 1; e++) {
        for (int p = 0; p < 3; p++)
            testrng_fill(&rng, m->data[e][p], INTER * HIDDEN, 0.5f);
        m->experts[e] = (expert_weights_t){tensor_f32(m->data[e][0], INTER, HIDDEN),
                                           tensor_f32(m->data[e][1], INTER, HIDDEN),
                                           tensor_f32(m->data[e][2], HIDDEN, INTER)};
    }
    return m;
}

static void s_ref_ffn(const fake_model_t *m, int e, const float *x, double *y)
{
    double h[INTER];
    for (int i = 0; i < INTER; i++) {
        double g = 0, u = 0;
        for (int j = 0; j < HIDDEN; j++) {
            g += (double)m->data[e][0][i * HIDDEN + j] * x[j];
            u += (double)m->data[e][1][i * HIDDEN + j] * x[j];
        }
        h[i] = g / (1 + exp(-g)) * u;
    }
    for (int j = 0; j < HIDDEN; j++) {
        y[j] = 0;
        for (int i = 0; i < INTER; i++)
            y[j] += (double)m->data[e][2][j * INTER + i] * h[i];
    }
}

/* An experts_t of cfg for max_rows rows, on a one-thread compute context. */
typedef struct rig {
    compute_t *cx;
    experts_t *ex;
} rig_t;

static rig_t s_rig(const config_t *cfg, int max_rows)
{
    err_t err = {0};
    rig_t rig = {.cx = compute_new(1, NULL)};
    assert_non_null(rig.cx);
    rig.ex = experts_new(cfg, max_rows, 2 * max_rows, rig.cx, &err);
    assert_non_null(rig.ex);
    return rig;
}

static void s_rig_destroy(rig_t *r)
{
    experts_destroy(&r->ex);
    compute_destroy(&r->cx);
}

/* want[row] += weight * y: one assignment's share of the reference. */
static void s_add_share(double *want, moe_assign_t a, const double *y)
{
    for (int j = 0; j < HIDDEN; j++)
        want[a.row * HIDDEN + j] += a.weight * y[j];
}

/* out matches the float64 reference want[0..n) to 1e-5 relative. */
static void s_expect_close(const float *out, const double *want, size_t n)
{
    double tol = 1e-5 * (1 + testutil_max_abs(want, n));
    assert_true(testutil_max_abs_diff(out, want, n) < tol);
}

static void test_weighted_sum_matches_reference(void **state)
{
    (void)state;
    fake_model_t *m = s_model();
    rig_t rig = s_rig(&m->w.cfg, MAX_ROWS);
    err_t err = {0};
    testrng_t rng;
    testrng_init(&rng, 5);
    float u[MAX_ROWS * HIDDEN], out[MAX_ROWS * HIDDEN];
    testrng_fill(&rng, u, sizeof u / sizeof u[0], 1.0f);
    /* Row 3 gets nothing; row 5 goes to one expert twice (weights add). */
    moe_assign_t a[] = {{0, 0, 0.7f}, {0, 1, 0.3f}, {1, 1, 1.0f}, {2, 0, 0.25f},
                        {4, 1, 0.5f}, {4, 0, 0.5f}, {5, 0, 0.2f}, {5, 0, 0.3f},
                        {8, 1, -0.75f}};
    const int n_assign = sizeof a / sizeof a[0];
    assert_int_equal(experts_run(rig.ex, &m->w, 0, u, MAX_ROWS, a, n_assign, out, &err), 0);

    double want[MAX_ROWS * HIDDEN] = {0}, y[HIDDEN];
    for (int i = 0; i < n_assign; i++) {
        s_ref_ffn(m, a[i].expert, u + a[i].row * HIDDEN, y);
        s_add_share(want, a[i], y);
    }
    s_expect_close(out, want, MAX_ROWS * HIDDEN);
    for (int j = 0; j < HIDDEN; j++)
        assert_true(out[3 * HIDDEN + j] == 0.0f);
    s_rig_destroy(&rig);
    experts_destroy(&rig.ex); /* safe twice */
    free(m);
}

static void s_expect_rejected(experts_t *ex, const fake_model_t *m, int layer, int n_rows,
                              moe_assign_t bad, int code)
{
    float u[MAX_ROWS * HIDDEN] = {0}, out[MAX_ROWS * HIDDEN];
    for (int i = 0; i < MAX_ROWS * HIDDEN; i++)
        out[i] = 42.0f;
    err_t err = {0};
    moe_assign_t a[2] = {{0, 0, 0.5f}, bad};
    assert_int_equal(experts_run(ex, &m->w, layer, u, n_rows, a, 2, out, &err), -1);
    assert_int_equal(errno, code);
    assert_true(strlen(err.msg) > 0);
    for (int i = 0; i < MAX_ROWS * HIDDEN; i++)
        assert_true(out[i] == 42.0f); /* untouched */
}

/* experts_run_terms: each assignment's term alone; a row's terms added onto
 * zeros in expert order give experts_run's row bit for bit (what the
 * coordinator's combine relies on, coordinator/dispatch.h). */
static void test_terms_sum_to_run_exactly(void **state)
{
    (void)state;
    fake_model_t *m = s_model();
    rig_t rig = s_rig(&m->w.cfg, MAX_ROWS);
    err_t err = {0};
    testrng_t rng;
    testrng_init(&rng, 11);
    float u[MAX_ROWS * HIDDEN], out[MAX_ROWS * HIDDEN];
    testrng_fill(&rng, u, sizeof u / sizeof u[0], 1.0f);
    /* Rows with their experts listed in either order. */
    moe_assign_t a[] = {{0, 1, 0.7f}, {0, 0, 0.3f}, {1, 0, 0.6f}, {1, 1, 0.4f},
                        {2, 1, 1.0f}, {6, 0, 0.125f}, {6, 1, 0.875f}};
    enum { N = sizeof a / sizeof a[0] };
    float terms[N * HIDDEN];
    assert_int_equal(experts_run(rig.ex, &m->w, 0, u, MAX_ROWS, a, N, out, &err), 0);
    assert_int_equal(experts_run_terms(rig.ex, &m->w, 0, u, MAX_ROWS, a, N, terms, &err), 0);
    float sum[MAX_ROWS * HIDDEN] = {0};
    for (int e = 0; e < 2; e++)
        for (int i = 0; i < N; i++)
            if (a[i].expert == e)
                for (int j = 0; j < HIDDEN; j++)
                    sum[a[i].row * HIDDEN + j] += terms[i * HIDDEN + j];
    assert_memory_equal(sum, out, sizeof sum);
    s_rig_destroy(&rig);
    free(m);
}

static void test_bad_assignments_are_rejected(void **state)
{
    (void)state;
    fake_model_t *m = s_model();
    rig_t rig = s_rig(&m->w.cfg, MAX_ROWS);
    experts_t *ex = rig.ex;
    s_expect_rejected(ex, m, 0, 4, (moe_assign_t){4, 0, 0.5f}, EINVAL);   /* row */
    s_expect_rejected(ex, m, 0, 4, (moe_assign_t){-1, 0, 0.5f}, EINVAL);  /* row */
    s_expect_rejected(ex, m, 0, 4, (moe_assign_t){1, 2, 0.5f}, EINVAL);   /* not hosted */
    s_expect_rejected(ex, m, 0, 4, (moe_assign_t){1, 3, 0.5f}, EINVAL);   /* no such expert */
    s_expect_rejected(ex, m, 0, 4, (moe_assign_t){1, -1, 0.5f}, EINVAL);
    s_expect_rejected(ex, m, 0, 4, (moe_assign_t){1, 0, NAN}, EINVAL);
    s_expect_rejected(ex, m, 0, 4, (moe_assign_t){1, 0, INFINITY}, EINVAL);
    s_expect_rejected(ex, m, 1, 4, (moe_assign_t){1, 0, 0.5f}, EINVAL);   /* layer */
    s_expect_rejected(ex, m, 0, MAX_ROWS + 1, (moe_assign_t){1, 0, 0.5f}, E2BIG);
    s_rig_destroy(&rig);
    free(m);
}

/* gpt_oss: experts hold the fused layout's weights (y = x W + b, gate/up
 * interleaved by column), re-laid out as model/expert_layout does. */
enum { OSS_ROWS = 6 };
static const float OSS_LIMIT = 5.0f; /* not the default 7: the config's value is used */

typedef struct oss_model {
    weights_t w;
    layer_weights_t layer;
    expert_weights_t experts[N_EXPERTS];
    expert_biases_t biases[N_EXPERTS];
    /* the fused tensors, as a checkpoint holds them */
    float gate_up[N_EXPERTS][HIDDEN * 2 * INTER], gate_up_bias[N_EXPERTS][2 * INTER];
    float down_proj[N_EXPERTS][INTER * HIDDEN], down_bias[N_EXPERTS][HIDDEN];
    /* moecluster's layout */
    float gate[N_EXPERTS][INTER * HIDDEN], up[N_EXPERTS][INTER * HIDDEN];
    float down[N_EXPERTS][HIDDEN * INTER], gate_b[N_EXPERTS][INTER], up_b[N_EXPERTS][INTER];
} oss_model_t;

static oss_model_t *s_oss_model(void)
{
    oss_model_t *m = calloc(1, sizeof *m);
    s_one_layer(&m->w, &m->layer, m->experts, m->biases, CONFIG_EXPERT_SWIGLU_OAI, OSS_LIMIT);
    testrng_t rng;
    testrng_init(&rng, 23);
    for (int e = 0; e < N_EXPERTS; e++) {
        /* large enough that some pre-activations pass the clamp */
        testrng_fill(&rng, m->gate_up[e], HIDDEN * 2 * INTER, 2.5f);
        testrng_fill(&rng, m->gate_up_bias[e], 2 * INTER, 0.5f);
        testrng_fill(&rng, m->down_proj[e], INTER * HIDDEN, 0.5f);
        testrng_fill(&rng, m->down_bias[e], HIDDEN, 0.5f);
        expert_layout_split_gate_up(m->gate[e], m->up[e], m->gate_up[e], HIDDEN, INTER);
        expert_layout_split_gate_up_bias(m->gate_b[e], m->up_b[e], m->gate_up_bias[e], INTER);
        expert_layout_transpose_down(m->down[e], m->down_proj[e], HIDDEN, INTER);
        m->experts[e] = (expert_weights_t){tensor_f32(m->gate[e], INTER, HIDDEN),
                                           tensor_f32(m->up[e], INTER, HIDDEN),
                                           tensor_f32(m->down[e], HIDDEN, INTER)};
        m->biases[e] = (expert_biases_t){m->gate_b[e], m->up_b[e], m->down_bias[e]};
    }
    return m;
}

/* transformers' GptOssExperts for one row in float64, from the fused layout;
 * counts the pre-activations the clamp changes. */
static void s_ref_oss(const oss_model_t *m, int e, const float *x, double *y, int *clamped)
{
    double h[INTER];
    for (int i = 0; i < INTER; i++) {
        double g = m->gate_up_bias[e][2 * i], u = m->gate_up_bias[e][2 * i + 1];
        for (int k = 0; k < HIDDEN; k++) {
            g += (double)x[k] * m->gate_up[e][k * 2 * INTER + 2 * i];
            u += (double)x[k] * m->gate_up[e][k * 2 * INTER + 2 * i + 1];
        }
        *clamped += (g > OSS_LIMIT) + (fabs(u) > OSS_LIMIT);
        g = fmin(g, OSS_LIMIT);
        u = fmax(fmin(u, OSS_LIMIT), -OSS_LIMIT);
        h[i] = (u + 1) * (g / (1 + exp(-1.702 * g)));
    }
    for (int j = 0; j < HIDDEN; j++) {
        y[j] = m->down_bias[e][j];
        for (int i = 0; i < INTER; i++)
            y[j] += h[i] * m->down_proj[e][i * HIDDEN + j];
    }
}

static void test_gpt_oss_experts_match_fused_formula(void **state)
{
    (void)state;
    oss_model_t *m = s_oss_model();
    rig_t rig = s_rig(&m->w.cfg, OSS_ROWS);
    err_t err = {0};
    testrng_t rng;
    testrng_init(&rng, 7);
    float u[OSS_ROWS * HIDDEN], out[OSS_ROWS * HIDDEN];
    testrng_fill(&rng, u, OSS_ROWS * HIDDEN, 1.0f);
    moe_assign_t a[2 * OSS_ROWS];
    for (int r = 0; r < OSS_ROWS; r++) {
        a[2 * r] = (moe_assign_t){r, r % N_EXPERTS, 0.6f};
        a[2 * r + 1] = (moe_assign_t){r, (r + 1) % N_EXPERTS, 0.4f};
    }
    assert_int_equal(experts_run(rig.ex, &m->w, 0, u, OSS_ROWS, a, 2 * OSS_ROWS, out, &err), 0);

    double want[OSS_ROWS * HIDDEN] = {0}, y[HIDDEN];
    int clamped = 0;
    for (int i = 0; i < 2 * OSS_ROWS; i++) {
        s_ref_oss(m, a[i].expert, u + a[i].row * HIDDEN, y, &clamped);
        s_add_share(want, a[i], y);
    }
    printf("  %d of %d gate/up pre-activations beyond the clamp\n", clamped,
           2 * OSS_ROWS * 2 * INTER);
    assert_true(clamped > 0);
    s_expect_close(out, want, OSS_ROWS * HIDDEN);
    s_rig_destroy(&rig);
    free(m);
}

static void test_new_rejects_bad_sizes(void **state)
{
    (void)state;
    config_t cfg = {.hidden_size = HIDDEN, .intermediate_size = INTER, .n_experts = 2};
    err_t err = {0};
    compute_t *cx = compute_new(1, NULL);
    assert_non_null(cx);
    assert_null(experts_new(&cfg, 0, 4, cx, &err));
    assert_int_equal(errno, EINVAL);
    compute_destroy(&cx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_weighted_sum_matches_reference),
        cmocka_unit_test(test_terms_sum_to_run_exactly),
        cmocka_unit_test(test_bad_assignments_are_rejected),
        cmocka_unit_test(test_gpt_oss_experts_match_fused_formula),
        cmocka_unit_test(test_new_rejects_bad_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
