/* router: see router.h. */
#include "engine/router.h"

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
