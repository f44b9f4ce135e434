/* router: each row's choice of experts, and the weight of each choice.
 *
 * Mixtral's rule (Hugging Face MixtralSparseMoeBlock): probabilities are the
 * float32 softmax of the router logits; the k most probable experts are kept,
 * in descending probability with ties to the lower id (as the reference
 * fixtures order them); with renormalisation their probabilities are divided
 * by their sum.
 *
 * The other routers follow the same conventions: ids and weights are
 * (n_rows, k), each row in descending routing score with ties to the lower
 * id (the fixtures' "selected_experts_order"), and the logits are overwritten
 * with the score the router ranks (the fixtures' "routing_score_space"), so
 * that a caller can measure routing margins: the k-th selected score minus
 * the best unselected one. Experts of groups a group-limited router dropped
 * get -INFINITY there.
 *
 * Group-limited routers (DeepSeek) split the experts into n_groups equal runs
 * of consecutive ids, keep the topk_group best groups of each row (ties to
 * the lower group id), and choose the k experts among the kept groups only.
 * Preconditions (asserted; a loader checks config values before): 1 <= n_groups
 * <= ROUTER_MAX_GROUPS, n_experts % n_groups == 0, 1 <= topk_group <= n_groups,
 * 1 <= k <= topk_group * (n_experts / n_groups).
 */
#ifndef MOE_ENGINE_ROUTER_H
#define MOE_ENGINE_ROUTER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/assign.h"


/* logits: (n_rows, n_experts) router logits, overwritten with probabilities.
 * ids, weights: (n_rows, k) outputs. 1 <= k <= n_experts. */
void router_select_softmax(float *logits, int n_rows, int n_experts, int k,
                           bool renormalize, int32_t *ids, float *weights);

enum { ROUTER_MAX_GROUPS = 64 };

/* DeepSeek-V2 "group_limited_greedy" (Hugging Face DeepseekV2Moe):
 * probabilities p = float32 softmax(logits); a group's score is its largest p;
 * the k largest p among the kept groups are chosen; weight = p, divided by
 * the sum of the k chosen when renormalize, then times scale
 * (routed_scaling_factor).
 * Note for callers: transformers' DeepseekV2Moe ignores norm_topk_prob (never
 * renormalises; every published V2 checkpoint has it false), so pass false to
 * match it. DeepSeek's own V2 code, with norm_topk_prob true, renormalises
 * and does not scale: pass true and scale 1 for that.
 * logits: (n_rows, n_experts), overwritten with p (dropped groups -INFINITY).
 * ids, weights: (n_rows, k). */
void router_select_grouped_softmax(float *logits, int n_rows, int n_experts,
                                   int n_groups, int topk_group, int k,
                                   bool renormalize, float scale,
                                   int32_t *ids, float *weights);

/* DeepSeek-V3 "noaux_tc" (Hugging Face DeepseekV3TopkRouter / MoE):
 * s = float32 sigmoid(logits); selection ranks b = s + bias (the
 * e_score_correction_bias); a group's score is the sum of its two largest b
 * (so n_experts / n_groups >= 2); the k largest b among the kept groups are
 * chosen; weight = s (unbiased), divided by (sum of the k chosen s + 1e-20)
 * when renormalize (norm_topk_prob), then times scale (routed_scaling_factor).
 * Dropped groups' experts are excluded outright. transformers instead sets
 * their b to 0.0 and takes the top k of all experts, which differs only when a
 * kept expert's b is below 0 (never with the fixtures' bias in [0, 0.12]).
 * logits: (n_rows, n_experts), overwritten with b (dropped groups -INFINITY).
 * bias: (n_experts). ids, weights: (n_rows, k). */
void router_select_grouped_sigmoid(float *logits, const float *bias,
                                   int n_rows, int n_experts, int n_groups,
                                   int topk_group, int k, bool renormalize,
                                   float scale, int32_t *ids, float *weights);

/* gpt-oss (Hugging Face GptOssTopKRouter): l = logits + bias (bias may be
 * NULL when the caller added it already); the k largest l are chosen; weights
 * are the float32 softmax over those k values.
 * logits: (n_rows, n_experts), overwritten with l. bias: (n_experts) or NULL.
 * ids, weights: (n_rows, k), 1 <= k <= n_experts. */
void router_select_topk_softmax(float *logits, const float *bias, int n_rows,
                                int n_experts, int k, int32_t *ids,
                                float *weights);

/* Flattens (n_rows, k) choices into n_rows * k assignments, row-major. */
void router_assignments(const int32_t *ids, const float *weights, int n_rows, int k,
                        moe_assign_t *out);

#endif /* MOE_ENGINE_ROUTER_H */
