/* fused: one routed expert of a checkpoint that fuses every expert of a layer
 * into a few tensors (gpt_oss), loaded as the separate matrices and biases
 * the expert FFN takes (engine/experts.c).
 *
 * gpt_oss keeps, per layer, mlp.experts.gate_up_proj (E, hidden, 2 * inter)
 * with gate/up interleaved by column, gate_up_proj_bias (E, 2 * inter),
 * down_proj (E, inter, hidden) and down_proj_bias (E, hidden), all used as
 * y = x W + b (model/expert_layout.h). Real checkpoints store the two weight
 * tensors as MXFP4 instead: <name>_blocks and <name>_scales (U8, rows in
 * (out_features, in_features) order, model/mxfp4.h); either form loads.
 *
 * The weights must be re-laid out, so each expert gets one owned buffer
 * (gate, up, down, gate bias, up bias): a process pays only for the experts
 * it hosts. The down bias is used in place (a slice of down_proj_bias).
 */
#ifndef MOE_ENGINE_FUSED_H
#define MOE_ENGINE_FUSED_H

#include "core/err.h"
#include "engine/weights.h"
#include "model/config.h"
#include "model/safetensors.h"

/* Loads expert e of layer l from st into *ew and *eb, which then point into
 * *owned (caller frees with mem_free; it is set only on success) and into st.
 * cfg must keep its experts stacked (config_experts_stacked()). Returns 0, or
 * -1 with errno/err naming the tensor (ENOENT missing, EINVAL wrong shape or
 * dtype, ENOMEM). */
int fused_load(safetensors_t *st, const config_t *cfg, int layer, int expert,
               expert_weights_t *ew, expert_biases_t *eb, float **owned, err_t *err);

#endif /* MOE_ENGINE_FUSED_H */
