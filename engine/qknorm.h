/* qknorm: the RMSNorm some families apply to queries and keys, where and how
 * config.qk_norm says (eps = rms_norm_eps):
 *   CONFIG_QK_NORM_HEAD       each head of q and k, before RoPE (qwen3_moe)
 *   CONFIG_QK_NORM_FULL       the whole q and k projections, before RoPE (olmoe)
 *   CONFIG_QK_NORM_HEAD_POST  each head, after RoPE (hunyuan_v1_moe)
 * The forward pass calls qknorm_apply() at both stages; the call does nothing
 * where the family has no norm at that stage, so the pass has no per-family
 * branches for it.
 */
#ifndef MOE_ENGINE_QKNORM_H
#define MOE_ENGINE_QKNORM_H

#include "engine/weights.h"
#include "model/config.h"

typedef enum qknorm_stage {
    QKNORM_BEFORE_ROPE = 0,
    QKNORM_AFTER_ROPE,
} qknorm_stage_t;

/* Normalises in place, when cfg->qk_norm acts at this stage:
 *   q: (n_rows, heads * head_dim), k: (n_rows, kv_heads * head_dim), dense;
 *   lw->q_norm / lw->k_norm hold the weights (shapes in weights.h). */
void qknorm_apply(const config_t *cfg, qknorm_stage_t stage, const layer_weights_t *lw,
                  float *q, float *k, int n_rows);

#endif /* MOE_ENGINE_QKNORM_H */
