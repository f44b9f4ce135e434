/* test_routing: routing_select() picks each family's rule, checked against a
 * float64 oracle of the Hugging Face formulas (fixtures README, "Routing
 * score spaces"): mixtral/qwen3 softmax renormalised, qwen2/olmoe softmax as
 * is, deepseek_v2 group-limited softmax times routed_scaling_factor (never
 * renormalised), deepseek_v2 "greedy" (no groups, still scaled), deepseek_v3
 * sigmoid + correction bias with groups ranked by their two best, weights the
 * unbiased scores renormalised and scaled, gpt_oss softmax over the top-k
 * biased logits. The router matrix is the identity, so the logits are the
 * input rows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "engine/routing.h"
#include "tests/testutil.h"

enum { E = 16, ROWS = 64, KMAX = 8 };

/* The k largest of v[0..n) with keep[i], descending, ties to the lower id. */
static void s_topk(const double *v, const bool *keep, int n, int k, int *ids)
{
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int i = 0; i < n; i++) {
            bool taken = !keep[i];
            for (int t = 0; t < j; t++)
                taken |= ids[t] == i;
            if (!taken && (best < 0 || v[i] > v[best]))
                best = i;
        }
        ids[j] = best;
    }
}

/* One row's expected ids and weights, in float64. */
static void s_oracle(const config_t *c, const float *logit, const float *bias, int *ids,
                     double *w)
{
    const int k = c->n_experts_per_tok, G = c->n_group, per = E / G;
    double p[E], rank[E];
    bool keep[E];
    for (int i = 0; i < E; i++)
        keep[i] = true;
    if (c->scoring == CONFIG_SCORING_TOPK_SOFTMAX) {
        for (int i = 0; i < E; i++)
            rank[i] = (double)logit[i] + bias[i];
        s_topk(rank, keep, E, k, ids);
        double sum = 0;
        for (int j = 0; j < k; j++)
            sum += exp(rank[ids[j]] - rank[ids[0]]);
        for (int j = 0; j < k; j++)
            w[j] = exp(rank[ids[j]] - rank[ids[0]]) / sum;
        return;
    }
    if (c->scoring == CONFIG_SCORING_SIGMOID) {
        for (int i = 0; i < E; i++) {
            p[i] = 1.0 / (1.0 + exp(-(double)logit[i]));
            rank[i] = p[i] + bias[i];
        }
    } else {
        double max = logit[0], sum = 0;
        for (int i = 1; i < E; i++)
            max = fmax(max, logit[i]);
        for (int i = 0; i < E; i++)
            sum += p[i] = exp((double)logit[i] - max);
        for (int i = 0; i < E; i++)
            rank[i] = p[i] /= sum;
    }
    if (c->topk_method != CONFIG_TOPK_GREEDY) {
        double gscore[E];
        bool all[E];
        for (int g = 0; g < G; g++) {
            int top[2];
            bool in[E] = {false};
            for (int i = 0; i < per; i++)
                in[g * per + i] = true;
            s_topk(rank, in, E, 2, top);
            gscore[g] = c->topk_method == CONFIG_TOPK_NOAUX_TC ? rank[top[0]] + rank[top[1]]
                                                                : rank[top[0]];
            all[g] = true;
        }
        int kept[E];
        s_topk(gscore, all, G, c->topk_group, kept);
        for (int i = 0; i < E; i++) {
            keep[i] = false;
            for (int t = 0; t < c->topk_group; t++)
                keep[i] |= i / per == kept[t];
        }
    }
    s_topk(rank, keep, E, k, ids);
    double sum = 0;
    for (int j = 0; j < k; j++)
        sum += p[ids[j]];
    const bool renorm = c->norm_topk_prob && c->arch != CONFIG_ARCH_DEEPSEEK_V2;
    for (int j = 0; j < k; j++)
        w[j] = (renorm ? p[ids[j]] / (sum + (c->scoring == CONFIG_SCORING_SIGMOID ? 1e-20 : 0))
                       : p[ids[j]]) * c->routed_scaling_factor;
}

static void s_check(const char *name, const config_t *c)
{
    static float router[E * E], x[ROWS * E], logits[ROWS * E], bias[E], weights[ROWS * KMAX];
    static int32_t ids[ROWS * KMAX];
    memset(router, 0, sizeof router);
    for (int i = 0; i < E; i++)
        router[i * E + i] = 1.0f;
    testrng_t rng;
    testrng_init(&rng, 2024);
    testrng_fill(&rng, x, ROWS * E, 2.0f);
    for (int i = 0; i < E; i++)
        bias[i] = (float)(0.12 * testrng_uniform(&rng));
    layer_weights_t lw = {.router = tensor_f32(router, E, E)};
    if (c->scoring == CONFIG_SCORING_TOPK_SOFTMAX)
        lw.router_bias = bias;
    if (c->topk_method == CONFIG_TOPK_NOAUX_TC)
        lw.score_bias = bias;
    static const float zero[E];
    compute_t *cx = compute_new(1, NULL);
    assert_non_null(cx);
    routing_select(cx, c, &lw, x, ROWS, logits, ids, weights);
    compute_destroy(&cx);
    const int k = c->n_experts_per_tok;
    double max_err = 0;
    config_t ungrouped = *c;
    ungrouped.topk_method = CONFIG_TOPK_GREEDY;
    int changed = 0; /* rows whose choice the group limit changes */
    for (int r = 0; r < ROWS; r++) {
        int want[KMAX], plain[KMAX];
        double ww[KMAX], pw[KMAX];
        s_oracle(c, x + r * E, lw.router_bias || lw.score_bias ? bias : zero, want, ww);
        s_oracle(&ungrouped, x + r * E, lw.router_bias || lw.score_bias ? bias : zero, plain,
                 pw);
        changed += memcmp(want, plain, (size_t)k * sizeof *want) != 0;
        for (int j = 0; j < k; j++) {
            if (ids[r * k + j] != want[j])
                fail_msg("%s row %d choice %d: expert %d, oracle %d", name, r, j,
                         ids[r * k + j], want[j]);
            max_err = fmax(max_err, fabs(weights[r * k + j] - ww[j]) / fmax(1.0, fabs(ww[j])));
        }
    }
    printf("  %-24s max weight error %.2g, %d of %d rows changed by the group limit\n",
           name, max_err, changed, ROWS);
    assert_true(max_err <= 2e-6);
    /* The group limit must matter, or this test could not see it. */
    assert_true(c->topk_method == CONFIG_TOPK_GREEDY || changed > 0);
}

static config_t s_cfg(config_arch_t arch, int k)
{
    return (config_t){.arch = arch, .hidden_size = E, .n_experts = E, .n_experts_per_tok = k,
                      .n_group = 1, .topk_group = 1, .routed_scaling_factor = 1};
}

static void test_softmax_families(void **state)
{
    (void)state;
    config_t c = s_cfg(CONFIG_ARCH_MIXTRAL, 2);
    c.norm_topk_prob = true;
    s_check("mixtral (renormalised)", &c);
    c = s_cfg(CONFIG_ARCH_QWEN2_MOE, 4);
    s_check("qwen2_moe (as is)", &c);
}

static void test_deepseek_v2(void **state)
{
    (void)state;
    config_t c = s_cfg(CONFIG_ARCH_DEEPSEEK_V2, 4);
    c.topk_method = CONFIG_TOPK_GROUP_LIMITED;
    c.n_group = 4, c.topk_group = 2, c.routed_scaling_factor = 1.5f;
    c.norm_topk_prob = true; /* ignored, as transformers does */
    s_check("deepseek_v2 grouped", &c);
    c.topk_method = CONFIG_TOPK_GREEDY;
    s_check("deepseek_v2 greedy", &c);
}

static void test_deepseek_v3(void **state)
{
    (void)state;
    config_t c = s_cfg(CONFIG_ARCH_DEEPSEEK_V3, 4);
    c.scoring = CONFIG_SCORING_SIGMOID;
    c.topk_method = CONFIG_TOPK_NOAUX_TC;
    c.n_group = 4, c.topk_group = 2, c.routed_scaling_factor = 2.5f;
    c.norm_topk_prob = true;
    s_check("deepseek_v3", &c);
    c.norm_topk_prob = false;
    c.n_experts_per_tok = 8;
    s_check("deepseek_v3 (no renorm)", &c);
}

static void test_gpt_oss(void **state)
{
    (void)state;
    config_t c = s_cfg(CONFIG_ARCH_GPT_OSS, 4);
    c.scoring = CONFIG_SCORING_TOPK_SOFTMAX;
    s_check("gpt_oss", &c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_softmax_families),
        cmocka_unit_test(test_deepseek_v2),
        cmocka_unit_test(test_deepseek_v3),
        cmocka_unit_test(test_gpt_oss),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
