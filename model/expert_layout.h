/* expert_layout: gpt-oss's fused expert tensors re-laid out as one expert's
 * separate matrices in moecluster's linear-layer layout.
 *
 * gpt-oss (transformers' GptOssExperts, float checkpoints) stores all E
 * experts of a layer in four tensors multiplied from the left, y = x W + b:
 *   mlp.experts.gate_up_proj       (E, hidden, 2 * inter)  even columns are
 *                                  the gate, odd columns the up projection
 *   mlp.experts.gate_up_proj_bias  (E, 2 * inter)          interleaved alike
 *   mlp.experts.down_proj          (E, inter, hidden)
 *   mlp.experts.down_proj_bias     (E, hidden)
 * moecluster's experts take row-major (out_features, in_features) weights,
 * y = x W^T (gemm_linear): gate (inter, hidden), up (inter, hidden), down
 * (hidden, inter), and separate biases. Expert e's slices start at
 *   gate_up_proj + e * hidden * 2 * inter,  gate_up_proj_bias + e * 2 * inter,
 *   down_proj + e * inter * hidden,         down_proj_bias + e * hidden
 * (the down bias needs no re-layout: its slice is used as it is).
 *
 * The functions copy (no arithmetic), so results are bit-exact; outputs must
 * not overlap inputs. None fails or allocates.
 */
#ifndef MOE_MODEL_EXPERT_LAYOUT_H
#define MOE_MODEL_EXPERT_LAYOUT_H

/* Splits and transposes one expert's gate_up slice.
 *   gate, up: (inter, hidden) each, out
 *   gate_up:  (hidden, 2 * inter), expert e's slice of gate_up_proj
 * gate[i][k] = gate_up[k][2i], up[i][k] = gate_up[k][2i + 1]. */
void expert_layout_split_gate_up(float *gate, float *up, const float *gate_up,
                                 int hidden, int inter);

/* Splits one expert's gate_up bias.
 *   gate_bias, up_bias: (inter) each, out;  gate_up_bias: (2 * inter)
 * gate_bias[i] = gate_up_bias[2i], up_bias[i] = gate_up_bias[2i + 1]. */
void expert_layout_split_gate_up_bias(float *gate_bias, float *up_bias,
                                      const float *gate_up_bias, int inter);

/* Transposes one expert's down slice.
 *   down: (hidden, inter), out;  down_proj: (inter, hidden)
 * down[j][i] = down_proj[i][j]. */
void expert_layout_transpose_down(float *down, const float *down_proj,
                                  int hidden, int inter);

/* Splits row-interleaved weights: the (out_features, in_features) layout of
 * MXFP4 checkpoints once dequantised (gate_up_proj_blocks holds (E, 2 *
 * inter, hidden) rows, even rows gate, odd rows up).
 *   gate, up: (inter, hidden) each, out;  rows: (2 * inter, hidden) */
void expert_layout_split_rows(float *gate, float *up, const float *rows,
                              int hidden, int inter);

#endif /* MOE_MODEL_EXPERT_LAYOUT_H */
