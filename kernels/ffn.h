/* ffn: the element-wise parts of the expert feed-forward networks.
 *
 * ffn_swiglu is the SwiGLU of llama-style experts (mixtral, qwen, ...);
 * ffn_swiglu_clamped and ffn_bias_add are the pieces gpt-oss's experts add
 * around the same three matrix products:
 *   gate = x Wg^T + bg, up = x Wu^T + bu          (gemm, then ffn_bias_add)
 *   h    = ffn_swiglu_clamped(gate, up)
 *   out  = h Wd^T + bd                             (gemm, then ffn_bias_add)
 */
#ifndef MOE_KERNELS_FFN_H
#define MOE_KERNELS_FFN_H

#include <stddef.h>

/* gpt-oss's constants: the sigmoid's slope, fixed in transformers'
 * GptOssExperts, and the clamp, config swiglu_limit (7.0 in every published
 * checkpoint and transformers' default when the config omits it). */
#define FFN_OSS_ALPHA 1.702f
#define FFN_OSS_LIMIT 7.0f

/* SwiGLU: h[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)).
 * h may equal gate or up. */
void ffn_swiglu(float *h, const float *gate, const float *up, size_t n);

/* gpt-oss's clamped SwiGLU, as transformers' GptOssExperts:
 *   g = min(gate[i], limit), u = clamp(up[i], -limit, limit),
 *   h[i] = (u + 1) * (g * sigmoid(alpha * g)),
 * all float32 in that order. The gate has no lower clamp (its sigmoid takes
 * it to -0 instead); a NaN stays NaN. h may equal gate or up. limit > 0. */
void ffn_swiglu_clamped(float *h, const float *gate, const float *up, size_t n,
                        float alpha, float limit);

/* Adds bias to each of n_rows rows of y, after a product (y = x W^T + b).
 *   y: (n_rows, n) with row stride ld >= n;  bias: (n) */
void ffn_bias_add(float *y, int ld, const float *bias, int n_rows, int n);

#endif /* MOE_KERNELS_FFN_H */
