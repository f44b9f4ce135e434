/* test_experts: expert FFNs over routed rows against a float64 reference,
 * and the checks that keep a bad assignment from reaching the math. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/experts.h"
#include "tests/testutil.h"

enum { HIDDEN = 7, INTER = 5, N_EXPERTS = 3, MAX_ROWS = 9 };

typedef struct fake_model {
    weights_t w;
    layer_weights_t layer;
    expert_weights_t experts[N_EXPERTS];
    float data[N_EXPERTS][3][INTER * HIDDEN];
} fake_model_t;

/* A one-layer model whose expert 2 is not hosted. */
static fake_model_t *s_model(void)
{
    fake_model_t *m = calloc(1, sizeof *m);
    testrng_t rng;
    testrng_init(&rng, 11);
    m->w.cfg = (config_t){.hidden_size = HIDDEN, .intermediate_size = INTER,
                          .n_experts = N_EXPERTS, .n_layers = 1, .n_experts_per_tok = 2};
    m->w.layers = &m->layer;
    m->layer.experts = m->experts;
    for (int e = 0; e < N_EXPERTS - 1; e++) {
        for (int p = 0; p < 3; p++)
            testrng_fill(&rng, m->data[e][p], INTER * HIDDEN, 0.5f);
        m->experts[e] = (expert_weights_t){m->data[e][0], m->data[e][1], m->data[e][2]};
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

static void test_weighted_sum_matches_reference(void **state)
{
    (void)state;
    fake_model_t *m = s_model();
    err_t err = {0};
    experts_t *ex = experts_new(&m->w.cfg, MAX_ROWS, 2 * MAX_ROWS, &err);
    assert_non_null(ex);
    testrng_t rng;
    testrng_init(&rng, 5);
    float u[MAX_ROWS * HIDDEN], out[MAX_ROWS * HIDDEN];
    testrng_fill(&rng, u, sizeof u / sizeof u[0], 1.0f);
    /* Row 3 gets nothing; row 5 goes to one expert twice (weights add). */
    moe_assign_t a[] = {{0, 0, 0.7f}, {0, 1, 0.3f}, {1, 1, 1.0f}, {2, 0, 0.25f},
                        {4, 1, 0.5f}, {4, 0, 0.5f}, {5, 0, 0.2f}, {5, 0, 0.3f},
                        {8, 1, -0.75f}};
    const int n_assign = sizeof a / sizeof a[0];
    assert_int_equal(experts_run(ex, &m->w, 0, u, MAX_ROWS, a, n_assign, out, &err), 0);

    double want[MAX_ROWS * HIDDEN] = {0}, y[HIDDEN];
    for (int i = 0; i < n_assign; i++) {
        s_ref_ffn(m, a[i].expert, u + a[i].row * HIDDEN, y);
        for (int j = 0; j < HIDDEN; j++)
            want[a[i].row * HIDDEN + j] += a[i].weight * y[j];
    }
    double tol = 1e-5 * (1 + testutil_max_abs(want, MAX_ROWS * HIDDEN));
    assert_true(testutil_max_abs_diff(out, want, MAX_ROWS * HIDDEN) < tol);
    for (int j = 0; j < HIDDEN; j++)
        assert_true(out[3 * HIDDEN + j] == 0.0f);
    experts_destroy(&ex);
    experts_destroy(&ex); /* safe twice */
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

static void test_bad_assignments_are_rejected(void **state)
{
    (void)state;
    fake_model_t *m = s_model();
    err_t err = {0};
    experts_t *ex = experts_new(&m->w.cfg, MAX_ROWS, 2 * MAX_ROWS, &err);
    assert_non_null(ex);
    s_expect_rejected(ex, m, 0, 4, (moe_assign_t){4, 0, 0.5f}, EINVAL);   /* row */
    s_expect_rejected(ex, m, 0, 4, (moe_assign_t){-1, 0, 0.5f}, EINVAL);  /* row */
    s_expect_rejected(ex, m, 0, 4, (moe_assign_t){1, 2, 0.5f}, EINVAL);   /* not hosted */
    s_expect_rejected(ex, m, 0, 4, (moe_assign_t){1, 3, 0.5f}, EINVAL);   /* no such expert */
    s_expect_rejected(ex, m, 0, 4, (moe_assign_t){1, -1, 0.5f}, EINVAL);
    s_expect_rejected(ex, m, 0, 4, (moe_assign_t){1, 0, NAN}, EINVAL);
    s_expect_rejected(ex, m, 0, 4, (moe_assign_t){1, 0, INFINITY}, EINVAL);
    s_expect_rejected(ex, m, 1, 4, (moe_assign_t){1, 0, 0.5f}, EINVAL);   /* layer */
    s_expect_rejected(ex, m, 0, MAX_ROWS + 1, (moe_assign_t){1, 0, 0.5f}, E2BIG);
    experts_destroy(&ex);
    free(m);
}

static void test_new_rejects_bad_sizes(void **state)
{
    (void)state;
    config_t cfg = {.hidden_size = HIDDEN, .intermediate_size = INTER, .n_experts = 2};
    err_t err = {0};
    assert_null(experts_new(&cfg, 0, 4, &err));
    assert_int_equal(errno, EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_weighted_sum_matches_reference),
        cmocka_unit_test(test_bad_assignments_are_rejected),
        cmocka_unit_test(test_new_rejects_bad_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
