/* router: see router.h. */
#include "engine/router.h"

#include <assert.h>
#include <math.h>
#include <stddef.h>

#include "kernels/softmax.h"

/* Index of the largest p[i] not yet taken; ties go to the lower index because
 * the scan is in increasing index order and only a strictly larger value wins. */
static int s_argmax_free(const float *p, int n, const int32_t *taken, int n_taken)
{
    int best = -1;
    for (int i = 0; i < n; i++) {
        int used = 0;
        for (int t = 0; t < n_taken; t++)
            used |= taken[t] == i;
        if (used)
            continue;
        if (best < 0 || p[i] > p[best] || (isnan(p[best]) && !isnan(p[i])))
            best = i;
    }
    return best;
}

void router_select_softmax(float *logits, int n_rows, int n_experts, int k,
                           bool renormalize, int32_t *ids, float *weights)
{
    for (int r = 0; r < n_rows; r++) {
        float *p = logits + (size_t)r * n_experts;
        int32_t *row_ids = ids + (size_t)r * k;
        float *row_w = weights + (size_t)r * k;
        softmax(p, n_experts);
        float sum = 0.0f;
        for (int j = 0; j < k; j++) {
            row_ids[j] = s_argmax_free(p, n_experts, row_ids, j);
            row_w[j] = p[row_ids[j]];
            sum += row_w[j];
        }
        if (renormalize)
            for (int j = 0; j < k; j++)
                row_w[j] /= sum;
    }
}

/* score[e] (+ add[e] when add is not NULL): the value a top-k ranks. */
static inline float s_val(const float *score, const float *add, int e)
{
    return add ? score[e] + add[e] : score[e];
}

/* The k largest s_val over 0..n-1, skipping experts whose group (e /
 * group_size) has keep[g] == 0 when keep is not NULL, into ids in descending
 * order. An insertion list: a later (higher) id moves ahead only when
 * strictly larger, so ties stay with the lower id. The caller guarantees at
 * least k candidates. */
static void s_topk(const float *score, const float *add,
                   const unsigned char *keep, int group_size, int n, int k,
                   int32_t *ids)
{
    int cnt = 0;
    for (int e = 0; e < n; e++) {
        if (keep && !keep[e / group_size])
            continue;
        float v = s_val(score, add, e);
        if (cnt == k && !(v > s_val(score, add, ids[k - 1])))
            continue;
        int j = cnt < k ? cnt : k - 1; /* the slot freed (or dropped) */
        while (j > 0 && v > s_val(score, add, ids[j - 1])) {
            ids[j] = ids[j - 1];
            j--;
        }
        ids[j] = e;
        if (cnt < k)
            cnt++;
    }
    assert(cnt == k);
}

/* Marks in keep the topk_group groups of best gscore, ties to the lower group. */
static void s_keep_groups(const float *gscore, int n_groups, int topk_group,
                          unsigned char *keep)
{
    int32_t gid[ROUTER_MAX_GROUPS];
    s_topk(gscore, NULL, NULL, 1, n_groups, topk_group, gid);
    for (int g = 0; g < n_groups; g++)
        keep[g] = 0;
    for (int j = 0; j < topk_group; j++)
        keep[gid[j]] = 1;
}

static void s_check_groups(int n_experts, int n_groups, int topk_group, int k)
{
    assert(n_groups >= 1 && n_groups <= ROUTER_MAX_GROUPS);
    assert(n_experts % n_groups == 0);
    assert(topk_group >= 1 && topk_group <= n_groups);
    assert(k >= 1 && k <= topk_group * (n_experts / n_groups));
    (void)n_experts, (void)n_groups, (void)topk_group, (void)k;
}

/* Weights of the chosen: w[j] = base[ids[j]], optionally divided by
 * (their sum + tiny), then times scale. */
static void s_weights(const float *base, const int32_t *ids, int k,
                      bool renormalize, float tiny, float scale, float *w)
{
    float sum = 0.0f;
    for (int j = 0; j < k; j++) {
        w[j] = base[ids[j]];
        sum += w[j];
    }
    for (int j = 0; j < k; j++) {
        if (renormalize)
            w[j] /= sum + tiny;
        w[j] *= scale;
    }
}

void router_select_grouped_softmax(float *logits, int n_rows, int n_experts,
                                   int n_groups, int topk_group, int k,
                                   bool renormalize, float scale,
                                   int32_t *ids, float *weights)
{
    assert(n_rows == 0 || (logits && ids && weights));
    s_check_groups(n_experts, n_groups, topk_group, k);
    const int gs = n_experts / n_groups;
    for (int r = 0; r < n_rows; r++) {
        float *p = logits + (size_t)r * n_experts;
        int32_t *row_ids = ids + (size_t)r * k;
        softmax(p, n_experts);
        float gscore[ROUTER_MAX_GROUPS];
        unsigned char keep[ROUTER_MAX_GROUPS];
        for (int g = 0; g < n_groups; g++) {
            float m = p[g * gs];
            for (int i = 1; i < gs; i++)
                m = p[g * gs + i] > m ? p[g * gs + i] : m;
            gscore[g] = m;
        }
        s_keep_groups(gscore, n_groups, topk_group, keep);
        s_topk(p, NULL, keep, gs, n_experts, k, row_ids);
        s_weights(p, row_ids, k, renormalize, 0.0f, scale,
                  weights + (size_t)r * k);
        for (int e = 0; e < n_experts; e++)
            if (!keep[e / gs])
                p[e] = -INFINITY;
    }
}

void router_select_grouped_sigmoid(float *logits, const float *bias,
                                   int n_rows, int n_experts, int n_groups,
                                   int topk_group, int k, bool renormalize,
                                   float scale, int32_t *ids, float *weights)
{
    assert(n_rows == 0 || (logits && bias && ids && weights));
    s_check_groups(n_experts, n_groups, topk_group, k);
    const int gs = n_experts / n_groups;
    assert(gs >= 2); /* a group's score is the sum of its two best */
    for (int r = 0; r < n_rows; r++) {
        float *s = logits + (size_t)r * n_experts;
        int32_t *row_ids = ids + (size_t)r * k;
        /* s holds the unbiased scores until the weights are taken; the biased
         * ones are recomputed (s + bias, the same float32 sum) where ranked. */
        for (int e = 0; e < n_experts; e++)
            s[e] = 1.0f / (1.0f + expf(-s[e]));
        float gscore[ROUTER_MAX_GROUPS];
        unsigned char keep[ROUTER_MAX_GROUPS];
        for (int g = 0; g < n_groups; g++) {
            float m1 = -INFINITY, m2 = -INFINITY;
            for (int e = g * gs; e < (g + 1) * gs; e++) {
                float v = s[e] + bias[e];
                if (v > m1) {
                    m2 = m1;
                    m1 = v;
                } else if (v > m2) {
                    m2 = v;
                }
            }
            gscore[g] = m1 + m2;
        }
        s_keep_groups(gscore, n_groups, topk_group, keep);
        s_topk(s, bias, keep, gs, n_experts, k, row_ids);
        s_weights(s, row_ids, k, renormalize, 1e-20f, scale,
                  weights + (size_t)r * k);
        for (int e = 0; e < n_experts; e++)
            s[e] = keep[e / gs] ? s[e] + bias[e] : -INFINITY;
    }
}

void router_select_topk_softmax(float *logits, const float *bias, int n_rows,
                                int n_experts, int k, int32_t *ids,
                                float *weights)
{
    assert(n_rows == 0 || (logits && ids && weights));
    assert(k >= 1 && k <= n_experts);
    for (int r = 0; r < n_rows; r++) {
        float *l = logits + (size_t)r * n_experts;
        int32_t *row_ids = ids + (size_t)r * k;
        float *row_w = weights + (size_t)r * k;
        if (bias)
            for (int e = 0; e < n_experts; e++)
                l[e] += bias[e];
        s_topk(l, NULL, NULL, 1, n_experts, k, row_ids);
        for (int j = 0; j < k; j++)
            row_w[j] = l[row_ids[j]];
        softmax(row_w, k);
    }
}

void router_assignments(const int32_t *ids, const float *weights, int n_rows, int k,
                        moe_assign_t *out)
{
    for (int r = 0; r < n_rows; r++) {
        for (int j = 0; j < k; j++) {
            size_t i = (size_t)r * k + j;
            out[i].row = r;
            out[i].expert = ids[i];
            out[i].weight = weights[i];
        }
    }
}
