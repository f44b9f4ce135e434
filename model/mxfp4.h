/* mxfp4: dequantisation of OCP Microscaling MXFP4 weights, the format of
 * real gpt-oss checkpoints' expert tensors.
 *
 * A block is 32 values sharing one scale. Each value is FP4 E2M1 (sign bit,
 * 2 exponent bits with bias 1, 1 mantissa bit: 0, 0.5, 1, 1.5, 2, 3, 4, 6
 * and their negatives); two values per byte, the low nibble first. The scale
 * is E8M0, one byte S meaning 2^(S - 127); S = 255 is NaN by the spec (torch's
 * ldexp in transformers would give inf instead; no real checkpoint has it).
 *
 * gpt-oss stores, per layer, mlp.experts.gate_up_proj_blocks (E, 2 * inter,
 * hidden / 32, 16) U8 with gate_up_proj_scales (E, 2 * inter, hidden / 32) U8,
 * and down_proj_blocks (E, hidden, inter / 32, 16) with down_proj_scales (E,
 * hidden, inter / 32): rows in (out_features, in_features) order, so one
 * expert's slice dequantises straight to gate_up rows (2 * inter, hidden),
 * even rows gate and odd rows up (expert_layout_split_rows), and to down
 * (hidden, inter) as moecluster takes it. The biases stay float (BF16 on
 * disk) in the fused layout of expert_layout.h.
 */
#ifndef MOE_MODEL_MXFP4_H
#define MOE_MODEL_MXFP4_H

#include <stddef.h>
#include <stdint.h>

enum { MXFP4_BLOCK = 32,        /* values per block */
       MXFP4_BLOCK_BYTES = 16 }; /* packed bytes per block */

/* The E2M1 value of a 4-bit code (0..15). */
float mxfp4_value(unsigned code);

/* Dequantises n_blocks consecutive blocks. Exact: each value is a float32,
 * except beyond float32's range (|E2M1| >= 2 with S = 254, >= 4 with
 * S = 253), which becomes +-inf as in torch.
 *   out: (n_blocks * 32);  blocks: (n_blocks, 16) bytes;  scales: (n_blocks) */
void mxfp4_dequant(float *out, const uint8_t *blocks, const uint8_t *scales,
                   size_t n_blocks);

#endif /* MOE_MODEL_MXFP4_H */
