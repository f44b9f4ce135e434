/* routing: see routing.h. */
#include "engine/routing.h"

#include <assert.h>

#include "engine/router.h"
#include "kernels/matmul.h"

void routing_select(compute_t *cx, const config_t *cfg, const layer_weights_t *lw,
                    const float *xn, int n_rows, float *logits, int32_t *ids, float *weights)
{
    assert(cx && cfg && lw && lw->router.data);
    const int n_experts = cfg->n_experts, k = cfg->n_experts_per_tok;
    matmul(cx, logits, n_experts, xn, cfg->hidden_size, &lw->router, n_rows);
    switch (cfg->topk_method) {
    case CONFIG_TOPK_NOAUX_TC:
        router_select_grouped_sigmoid(logits, lw->score_bias, n_rows, n_experts,
                                      cfg->n_group, cfg->topk_group, k, cfg->norm_topk_prob,
                                      cfg->routed_scaling_factor, ids, weights);
        return;
    case CONFIG_TOPK_GROUP_LIMITED:
        router_select_grouped_softmax(logits, n_rows, n_experts, cfg->n_group,
                                      cfg->topk_group, k, false, cfg->routed_scaling_factor,
                                      ids, weights);
        return;
    case CONFIG_TOPK_GREEDY:
        break;
    }
    if (cfg->scoring == CONFIG_SCORING_TOPK_SOFTMAX) {
        router_select_topk_softmax(logits, lw->router_bias, n_rows, n_experts, k, ids,
                                   weights);
    } else if (cfg->arch == CONFIG_ARCH_DEEPSEEK_V2) {
        /* DeepSeek-V2 "greedy": no group limit, still routed scaling. */
        router_select_grouped_softmax(logits, n_rows, n_experts, 1, 1, k, false,
                                      cfg->routed_scaling_factor, ids, weights);
    } else {
        router_select_softmax(logits, n_rows, n_experts, k, cfg->norm_topk_prob, ids,
                              weights);
    }
}
