/* routing: which router a model's MoE layers use, in one place.
 *
 * Computes a layer's router logits from the normalised rows and selects each
 * row's experts with the rule of the config's family (engine/router.h):
 *   softmax scoring, greedy:  router_select_softmax, renormalised when
 *       norm_topk_prob (mixtral, qwen2/3_moe, olmoe, hunyuan);
 *   softmax scoring, DeepSeek-V2 group_limited_greedy:
 *       router_select_grouped_softmax, never renormalised (transformers'
 *       DeepseekV2Moe ignores norm_topk_prob), times routed_scaling_factor;
 *       DeepSeek-V2 "greedy" is the same with one group;
 *   sigmoid scoring, noaux_tc (DeepSeek-V3): router_select_grouped_sigmoid
 *       with the layer's e_score_correction_bias, norm_topk_prob and
 *       routed_scaling_factor;
 *   top-k softmax (gpt_oss): router_select_topk_softmax with the router bias.
 * The weights returned are the factors that multiply each expert's output
 * (after renormalisation and routed scaling), as the fixtures'
 * routing_weights.
 */
#ifndef MOE_ENGINE_ROUTING_H
#define MOE_ENGINE_ROUTING_H

#include <stdint.h>

#include "engine/weights.h"
#include "kernels/compute.h"

/* logits: (n_rows, n_experts) scratch, left holding the routing scores;
 * xn: (n_rows, hidden) the post_attention_layernorm'd rows;
 * ids, weights: (n_rows, k) outputs. lw must be a MoE layer's (router set).
 * The router product runs in cx (borrowed). */
void routing_select(compute_t *cx, const config_t *cfg, const layer_weights_t *lw,
                    const float *xn, int n_rows, float *logits, int32_t *ids, float *weights);

#endif /* MOE_ENGINE_ROUTING_H */
