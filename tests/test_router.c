/* test_router: expert choice and weights against float64 re-implementations
 * (Mixtral softmax, DeepSeek-V2 group-limited softmax, DeepSeek-V3 grouped
 * sigmoid with correction bias, gpt-oss top-k softmax), ties to the lower id,
 * renormalisation and scaling, hand-built cases where the group limit changes
 * the choice, and the flattening into assignments. */
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

/* ---- group-limited and gpt-oss routers ------------------------------------ */

typedef enum ref_kind { REF_SOFTMAX, REF_SIGMOID, REF_TOPK } ref_kind_t;

/* Indices 0..n-1 ordered by v descending, ties to the lower index, by a plain
 * selection sort (independent of the insertion list under test). */
static void s_order(const double *v, int n, int *order)
{
    for (int i = 0; i < n; i++)
        order[i] = i;
    for (int i = 0; i < n; i++) {
        int best = i;
        for (int j = i + 1; j < n; j++)
            if (v[order[j]] > v[order[best]] ||
                (v[order[j]] == v[order[best]] && order[j] < order[best]))
                best = j;
        int t = order[i];
        order[i] = order[best];
        order[best] = t;
    }
}

/* Float64 reference of one row. n_groups 1 / topk_group 1 means no group
 * limit. rank gets the routing score (-INFINITY for dropped groups); returns
 * the smallest of the expert margin and the group margin, so that a caller
 * can skip rows a float32 router may legitimately decide the other way. */
static double s_ref_row(ref_kind_t kind, const float *logits, const float *bias,
                        int n, int n_groups, int topk_group, int k, bool renorm,
                        double scale, int32_t *ids, double *w, double *rank)
{
    double base[256], gscore[64] = {0};
    int order[256], gorder[64];
    bool keep[64];
    const int gs = n / n_groups;
    if (kind == REF_SOFTMAX) {
        double mx = -INFINITY, sum = 0;
        for (int i = 0; i < n; i++)
            mx = fmax(mx, logits[i]);
        for (int i = 0; i < n; i++)
            sum += base[i] = exp((double)logits[i] - mx);
        for (int i = 0; i < n; i++)
            rank[i] = base[i] /= sum;
    } else if (kind == REF_SIGMOID) {
        for (int i = 0; i < n; i++) {
            base[i] = 1.0 / (1.0 + exp(-(double)logits[i]));
            rank[i] = base[i] + bias[i];
        }
    } else {
        for (int i = 0; i < n; i++)
            base[i] = rank[i] = (double)logits[i] + (bias ? bias[i] : 0.0);
    }
    for (int g = 0; g < n_groups; g++) {
        int o[256];
        s_order(rank + g * gs, gs, o);
        gscore[g] = kind == REF_SIGMOID ? rank[g * gs + o[0]] + rank[g * gs + o[1]]
                                        : rank[g * gs + o[0]];
    }
    s_order(gscore, n_groups, gorder);
    double margin = INFINITY;
    if (topk_group < n_groups)
        margin = gscore[gorder[topk_group - 1]] - gscore[gorder[topk_group]];
    for (int g = 0; g < n_groups; g++)
        keep[g] = false;
    for (int j = 0; j < topk_group; j++)
        keep[gorder[j]] = true;
    for (int i = 0; i < n; i++)
        if (!keep[i / gs])
            rank[i] = -INFINITY;
    s_order(rank, n, order);
    if (k < topk_group * gs)
        margin = fmin(margin, rank[order[k - 1]] - rank[order[k]]);
    double sum = 0, mx = rank[order[0]];
    for (int j = 0; j < k; j++) {
        ids[j] = order[j];
        w[j] = kind == REF_TOPK ? exp(base[order[j]] - mx) : base[order[j]];
        sum += w[j];
    }
    for (int j = 0; j < k; j++) {
        if (kind == REF_TOPK || renorm)
            w[j] /= sum;
        if (kind != REF_TOPK)
            w[j] *= scale;
    }
    return margin;
}

/* Runs the router under test on rows x n random logits of spread 2 and checks
 * ids, weights and the exposed routing scores against s_ref_row. */
static void s_check_random(testrng_t *rng, ref_kind_t kind, int n, int n_groups,
                           int topk_group, int k, bool renorm, float scale,
                           bool with_bias)
{
    enum { ROWS = 40 };
    float logits[ROWS * 256], copy[ROWS * 256], bias[256], weights[ROWS * 16];
    int32_t ids[ROWS * 16], ref_ids[16];
    double ref_w[16], rank[256];
    testrng_fill(rng, logits, (size_t)ROWS * n, 2.0f);
    for (int i = 0; i < n; i++) /* like the fixtures' correction bias */
        bias[i] = kind == REF_SIGMOID ? 0.12f * (float)testrng_uniform(rng)
                                      : 0.5f * testrng_normal(rng);
    for (int i = 0; i < ROWS * n; i++)
        copy[i] = logits[i];
    const float *b = with_bias ? bias : NULL;
    if (kind == REF_SOFTMAX)
        router_select_grouped_softmax(logits, ROWS, n, n_groups, topk_group, k,
                                      renorm, scale, ids, weights);
    else if (kind == REF_SIGMOID)
        router_select_grouped_sigmoid(logits, bias, ROWS, n, n_groups,
                                      topk_group, k, renorm, scale, ids, weights);
    else
        router_select_topk_softmax(logits, b, ROWS, n, k, ids, weights);
    int checked = 0;
    for (int r = 0; r < ROWS; r++) {
        double margin = s_ref_row(kind, copy + r * n, b, n, n_groups, topk_group,
                                  k, renorm, scale, ref_ids, ref_w, rank);
        for (int i = 0; i < n; i++) {
            if (isinf(rank[i]))
                assert_true(isinf(logits[r * n + i]) && logits[r * n + i] < 0);
            else
                assert_true(fabs(logits[r * n + i] - rank[i]) <=
                            1e-6 * fmax(1.0, fabs(rank[i])));
        }
        if (margin < 1e-5) /* a near-tie: float32 may pick either side */
            continue;
        checked++;
        for (int j = 0; j < k; j++) {
            assert_int_equal(ids[r * k + j], ref_ids[j]);
            assert_true(fabs(weights[r * k + j] - ref_w[j]) <=
                        2e-6 * fmax(1.0, fabs(ref_w[j])));
        }
    }
    assert_true(checked >= ROWS - 2);
}

static void test_grouped_softmax_matches_reference(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 11);
    /* n, groups, kept, k */
    const int cases[][4] = {{16, 4, 2, 4}, {64, 8, 3, 6}, {8, 1, 1, 2},
                            {12, 4, 4, 3}, {160, 8, 3, 6}, {32, 8, 1, 4}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int renorm = 0; renorm < 2; renorm++)
            s_check_random(&rng, REF_SOFTMAX, cases[c][0], cases[c][1],
                           cases[c][2], cases[c][3], renorm, 1.5f, false);
}

static void test_grouped_sigmoid_matches_reference(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 12);
    const int cases[][4] = {{16, 4, 2, 4}, {256, 8, 4, 8}, {8, 1, 1, 2},
                            {12, 4, 4, 3}, {32, 8, 1, 2}, {64, 4, 2, 8}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int renorm = 0; renorm < 2; renorm++)
            s_check_random(&rng, REF_SIGMOID, cases[c][0], cases[c][1],
                           cases[c][2], cases[c][3], renorm, 2.5f, true);
}

static void test_topk_softmax_matches_reference(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 13);
    const int cases[][2] = {{8, 2}, {32, 4}, {128, 4}, {5, 5}, {3, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int with_bias = 0; with_bias < 2; with_bias++)
            s_check_random(&rng, REF_TOPK, cases[c][0], 1, 1, cases[c][1],
                           false, 1.0f, with_bias);
}

/* 8 experts in 4 groups of 2, one group kept, k = 2. Group 0 has the single
 * best expert, group 1 the best pair: the V2 rule (a group's best) keeps
 * group 0, the V3 rule (sum of the two best) keeps group 1, and both differ
 * from a plain top-2, which takes experts 0 and 2. */
static void test_group_limit_changes_choice(void **state)
{
    (void)state;
    const float logits[8] = {3.0f, -4.0f, 2.5f, 2.4f, -1, -1, 0, -2};
    float l[8], w[2], bias[8] = {0};
    int32_t ids[2];

    for (int i = 0; i < 8; i++)
        l[i] = logits[i];
    router_select_softmax(l, 1, 8, 2, false, ids, w);
    assert_int_equal(ids[0], 0);
    assert_int_equal(ids[1], 2);

    for (int i = 0; i < 8; i++)
        l[i] = logits[i];
    router_select_grouped_softmax(l, 1, 8, 4, 1, 2, false, 1.5f, ids, w);
    assert_int_equal(ids[0], 0);
    assert_int_equal(ids[1], 1);
    for (int i = 2; i < 8; i++) /* dropped groups are masked */
        assert_true(isinf(l[i]) && l[i] < 0);
    /* weights: probabilities over all 8 experts, times 1.5, not renormalised */
    double sum = 0;
    for (int i = 0; i < 8; i++)
        sum += exp(logits[i]);
    assert_true(fabs(w[0] - 1.5 * exp(3.0) / sum) < 1e-6);
    assert_true(fabs(w[1] - 1.5 * exp(-4.0) / sum) < 1e-6);

    for (int i = 0; i < 8; i++)
        l[i] = logits[i];
    router_select_grouped_sigmoid(l, bias, 1, 8, 4, 1, 2, true, 2.5f, ids, w);
    assert_int_equal(ids[0], 2);
    assert_int_equal(ids[1], 3);
    assert_true(fabsf(w[0] + w[1] - 2.5f) < 1e-6f); /* renormalised, scaled */
    assert_true(isinf(l[0]) && isinf(l[1]));
}

/* The correction bias steers the choice but not the weights. */
static void test_sigmoid_bias_selects_but_does_not_weigh(void **state)
{
    (void)state;
    float l[4] = {1.0f, 0.9f, 0.0f, -1.0f};
    const float bias[4] = {0.0f, 0.2f, 0.0f, 0.0f};
    float w[1];
    int32_t ids[1];
    router_select_grouped_sigmoid(l, bias, 1, 4, 1, 1, 1, false, 1.0f, ids, w);
    assert_int_equal(ids[0], 1);
    assert_true(fabs(w[0] - 1.0 / (1.0 + exp(-0.9))) < 1e-6);
    assert_true(fabs(l[1] - (1.0 / (1.0 + exp(-0.9)) + 0.2)) < 1e-6);
}

static void test_grouped_ties_go_to_lower_id(void **state)
{
    (void)state;
    /* Groups 1 and 2 tie for best; group 1 wins; within it the tie of
     * experts 2 and 3 goes to 2. */
    float l[8] = {0, 0, 2, 2, 2, 2, 1, 1};
    float w[3];
    int32_t ids[3];
    router_select_grouped_softmax(l, 1, 8, 4, 1, 2, false, 1.0f, ids, w);
    assert_int_equal(ids[0], 2);
    assert_int_equal(ids[1], 3);
    float s[8] = {0, 0, 2, 2, 2, 2, 1, 1};
    const float bias[8] = {0};
    router_select_grouped_sigmoid(s, bias, 1, 8, 4, 2, 3, false, 1.0f, ids, w);
    assert_int_equal(ids[0], 2);
    assert_int_equal(ids[1], 3);
    assert_int_equal(ids[2], 4);
    assert_true(w[0] == w[2]);
    float g[6] = {1, 3, 3, 0, 3, -1};
    router_select_topk_softmax(g, NULL, 1, 6, 3, ids, w);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 2);
    assert_int_equal(ids[2], 4);
    assert_true(fabsf(w[0] - 1.0f / 3) < 1e-6f);
}

/* gpt-oss: the bias is part of the ranked logit, and the weights are a
 * softmax over the k chosen logits only. */
static void test_topk_softmax_bias_and_weights(void **state)
{
    (void)state;
    float l[4] = {1.0f, 0.5f, 0.0f, 0.9f};
    const float bias[4] = {0.0f, 1.0f, 0.0f, 0.0f};
    float w[2];
    int32_t ids[2];
    router_select_topk_softmax(l, bias, 1, 4, 2, ids, w);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 0);
    assert_true(l[1] == 1.5f);
    assert_true(fabs(w[0] - 1.0 / (1.0 + exp(-0.5))) < 1e-6);
    assert_true(fabsf(w[0] + w[1] - 1.0f) < 1e-6f);
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
        cmocka_unit_test(test_grouped_softmax_matches_reference),
        cmocka_unit_test(test_grouped_sigmoid_matches_reference),
        cmocka_unit_test(test_topk_softmax_matches_reference),
        cmocka_unit_test(test_group_limit_changes_choice),
        cmocka_unit_test(test_sigmoid_bias_selects_but_does_not_weigh),
        cmocka_unit_test(test_grouped_ties_go_to_lower_id),
        cmocka_unit_test(test_topk_softmax_bias_and_weights),
        cmocka_unit_test(test_assignments_flatten_row_major),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
