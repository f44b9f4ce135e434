/* fused: one routed expert of a checkpoint that fuses every expert of a layer
 * into a few tensors (gpt_oss), as the separate matrices and biases the
 * expert FFN takes (engine/experts.c), in the format the checkpoint stores.
 *
 * gpt_oss keeps, per layer, mlp.experts.gate_up_proj (E, hidden, 2 * inter)
 * with gate/up interleaved by column, gate_up_proj_bias (E, 2 * inter),
 * down_proj (E, inter, hidden) and down_proj_bias (E, hidden), all used as
 * y = x W + b (model/expert_layout.h). Real checkpoints store the two weight
 * tensors as MXFP4 instead: <name>_blocks and <name>_scales (U8, rows in
 * (out_features, in_features) order, model/mxfp4.h); either form loads.
 *
 * MXFP4 experts are used in place: gate and up are views of every other row
 * of gate_up_proj_blocks (row_stride two rows), down a view of its slice of
 * down_proj_blocks, each with its E8M0 scales (a scale of 255, NaN, is an
 * error naming the tensor). Float experts (F32, F16, BF16) are transposed
 * into the (out, in) layout in one owned buffer of the stored dtype. The
 * gate/up biases are split into an owned float32 buffer; the down bias is
 * its slice of down_proj_bias, widened to float32 by the checkpoint.
 */
#ifndef MOE_ENGINE_FUSED_H
#define MOE_ENGINE_FUSED_H

#include "core/err.h"
#include "engine/weights.h"
#include "engine/wstore.h"
#include "model/config.h"
#include "model/safetensors.h"

/* Loads expert e of layer l from st into *ew and *eb, which then point into
 * st's mapping or buffers of store. cfg must keep its experts stacked
 * (config_experts_stacked()). *owned gets the buffer holding the re-laid out
 * float matrices (NULL for MXFP4 views), for a caller that converts them
 * and frees it. Returns 0, or -1 with errno/err naming the tensor (ENOENT
 * missing, EINVAL wrong shape or dtype, EPROTO a NaN scale, ENOMEM). */
int fused_load(safetensors_t *st, wstore_t *store, const config_t *cfg, int layer,
               int expert, expert_weights_t *ew, expert_biases_t *eb, const void **owned,
               err_t *err);

#endif /* MOE_ENGINE_FUSED_H */
