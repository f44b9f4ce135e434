/* test_router: expert choice and weights against a float64 softmax, ties to
 * the lower id, renormalisation, and the flattening into assignments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>

#include "engine/router.h"
#include "tests/testutil.h"

/* Float64 reference: the k best of softmax(logits), descending, ties to the
 * lower id. */
static void s_ref(const float *logits, int n, int k, bool renorm, int32_t *ids, double *w)
{
    double p[64], mx = -INFINITY, sum = 0;
    for (int i = 0; i < n; i++)
        mx = fmax(mx, logits[i]);
    for (int i = 0; i < n; i++)
        sum += p[i] = exp(logits[i] - mx);
    for (int i = 0; i < n; i++)
        p[i] /= sum;
    double picked = 0;
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int i = 0; i < n; i++) {
            bool used = false;
            for (int t = 0; t < j; t++)
                used |= ids[t] == i;
            if (!used && (best < 0 || p[i] > p[best]))
                best = i;
        }
        ids[j] = best;
        picked += w[j] = p[best];
    }
    if (renorm)
        for (int j = 0; j < k; j++)
            w[j] /= picked;
}

static void test_matches_reference(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 7);
    const int sizes[][2] = {{8, 2}, {16, 4}, {3, 1}, {5, 5}, {64, 8}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        const int n = sizes[s][0], k = sizes[s][1], rows = 13;
        for (int renorm = 0; renorm < 2; renorm++) {
            float logits[13 * 64], copy[13 * 64], weights[13 * 8];
            int32_t ids[13 * 8], ref_ids[8];
            double ref_w[8];
            testrng_fill(&rng, logits, (size_t)rows * n, 2.0f);
            for (int i = 0; i < rows * n; i++)
                copy[i] = logits[i];
            router_select_softmax(logits, rows, n, k, renorm, ids, weights);
            for (int r = 0; r < rows; r++) {
                s_ref(copy + r * n, n, k, renorm, ref_ids, ref_w);
                for (int j = 0; j < k; j++) {
                    assert_int_equal(ids[r * k + j], ref_ids[j]);
                    assert_true(fabs(weights[r * k + j] - ref_w[j]) < 1e-6);
                }
            }
        }
    }
}

static void test_ties_go_to_lower_id(void **state)
{
    (void)state;
    float logits[6] = {1, 3, 3, 0, 3, -1};
    int32_t ids[3];
    float w[3];
    router_select_softmax(logits, 1, 6, 3, true, ids, w);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 2);
    assert_int_equal(ids[2], 4);
    assert_true(fabsf(w[0] - 1.0f / 3) < 1e-6f);
}

static void test_renormalised_weights_sum_to_one(void **state)
{
    (void)state;
    float logits[8] = {0.5f, -1, 2, 0, 1.5f, -3, 0.25f, 1};
    int32_t ids[2];
    float w[2];
    router_select_softmax(logits, 1, 8, 2, true, ids, w);
    assert_int_equal(ids[0], 2);
    assert_int_equal(ids[1], 4);
    assert_true(fabsf(w[0] + w[1] - 1.0f) < 1e-6f);
    assert_true(w[0] > w[1]);
}

static void test_assignments_flatten_row_major(void **state)
{
    (void)state;
    int32_t ids[6] = {3, 1, 0, 2, 7, 5};
    float w[6] = {0.6f, 0.4f, 0.9f, 0.1f, 0.5f, 0.5f};
    moe_assign_t a[6];
    router_assignments(ids, w, 3, 2, a);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(a[i].row, i / 2);
        assert_int_equal(a[i].expert, ids[i]);
        assert_true(a[i].weight == w[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_reference),
        cmocka_unit_test(test_ties_go_to_lower_id),
        cmocka_unit_test(test_renormalised_weights_sum_to_one),
        cmocka_unit_test(test_assignments_flatten_row_major),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
