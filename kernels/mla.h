/* mla: DeepSeek-V2/V3 multi-head latent attention of one sequence's new rows
 * against a cache of compressed latents, as Hugging Face's DeepseekV2Attention
 * and DeepseekV3Attention compute it, but without ever expanding keys and
 * values per head.
 *
 * Per position the cache holds one row of mla_cache_width() floats:
 *   [ c_kv (kv_lora_rank) | k_pe (qk_rope_head_dim) ]
 * c_kv = kv_a_layernorm(first kv_lora_rank columns of kv_a_proj_with_mqa(x)),
 * k_pe = the last qk_rope_head_dim columns, rotated, shared by every head and
 * stored in the rotate_half (NeoX) layout, whatever the checkpoint's layout.
 * That is (kv_lora_rank + qk_rope_head_dim) * 4 bytes per token per layer,
 * against n_heads * (qk_nope_head_dim + qk_rope_head_dim + v_head_dim) * 4 for
 * expanded keys and values: 128 vs 640 bytes for the fixtures (5x), 2304 vs
 * 163840 for DeepSeek-V3 (71x).
 *
 * Queries: q = q_b_proj(q_a_layernorm(q_a_proj(x))) with a q LoRA, else
 * q_proj(x); head h's slice of q is [q_nope (qk_nope_head_dim) | q_pe
 * (qk_rope_head_dim)]. The score of head h between a row and position s is
 *   scale * (q_nope . k_nope_h(s) + q_pe . k_pe(s)),
 * with [k_nope_h | v_h] = head h's (qk_nope_head_dim + v_head_dim) rows of
 * kv_b_proj applied to c_kv(s). It is computed absorbed: q_lat = W_uk_h^T
 * q_nope (width kv_lora_rank), so q_nope . k_nope_h(s) = q_lat . c_kv(s), and
 * [q_lat | q_pe] against the cache rows is one multi-query attention (one
 * KV head of width kv_lora_rank + qk_rope_head_dim, values the c_kv part) for
 * all heads at once; head h's latent output o_lat is then mapped by its
 * v_head_dim rows of kv_b_proj to v_h-space, and o_proj gives the result.
 *
 * RoPE: Hugging Face's DeepSeek rotates the rope columns as interleaved pairs
 * (x0, x1), (x2, x3), ... (DeepSeek-V2 always; V3 when rope_interleave is
 * true, as in its configs). With rope_interleaved set, this module moves the
 * even columns to the front and the odd ones to the back before the rotation
 * (exactly transformers' apply_rotary_pos_emb_interleave), then calls
 * rope_apply(), which rotates halves. A permutation applied alike to q_pe and
 * k_pe leaves every dot product unchanged. The caller's rope_t has rotary
 * width qk_rope_head_dim (config head_dim) and the model's theta / scaling.
 *
 * Scale: 1 / sqrt(qk_nope_head_dim + qk_rope_head_dim); configurations with
 * YaRN rope scaling multiply it by mscale^2, mscale = 0.1 * mscale_all_dim *
 * ln(factor) + 1 (factor > 1), which is the integrator's to compute.
 */
#ifndef MOE_KERNELS_MLA_H
#define MOE_KERNELS_MLA_H

#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"
#include "core/tensor.h"
#include "kernels/compute.h"
#include "kernels/rope.h"

typedef struct mla_shape {
    int hidden;             /* model width */
    int n_heads;            /* attention heads */
    int q_lora_rank;        /* q LoRA width, 0 when queries come from q_proj */
    int kv_lora_rank;       /* latent width of c_kv */
    int qk_nope_head_dim;   /* per-head query/key width without RoPE */
    int qk_rope_head_dim;   /* per-head RoPE width, shared k_pe width (even) */
    int v_head_dim;         /* per-head value width */
    float eps;              /* rms_norm_eps of q_a_layernorm and kv_a_layernorm */
    float scale;            /* multiplies the scores, see the file comment */
    bool rope_interleaved;  /* checkpoint's rope columns are interleaved pairs */
} mla_shape_t;

/* One layer's weights, borrowed, in the checkpoint's [out, in] layout
 * (y = x W^T + b). Matrices are tensors in any format kernels/matmul.h
 * takes (absent: NULL); vectors float32. Biases (attention_bias) may be
 * NULL. kv_b_proj's head blocks are used through row views of it (W_uk_h in
 * the absorbed x W_uk_h product, matmul_xw; W_uv_h, matmul), so a format
 * with block scales (FP8) keeps its block grid. */
typedef struct mla_weights {
    const tensor_t *q_a_proj;   /* (q_lora_rank, hidden), q LoRA only */
    const float *q_a_bias;      /* (q_lora_rank) or NULL */
    const float *q_a_norm;      /* (q_lora_rank), q LoRA only */
    const tensor_t *q_b_proj;   /* (n_heads * (nope + rope), q_lora_rank), q LoRA only */
    const tensor_t *q_proj;     /* (n_heads * (nope + rope), hidden), without q LoRA */
    const tensor_t *kv_a_proj;  /* (kv_lora_rank + rope, hidden): kv_a_proj_with_mqa */
    const float *kv_a_bias;     /* (kv_lora_rank + rope) or NULL */
    const float *kv_a_norm;     /* (kv_lora_rank): kv_a_layernorm */
    const tensor_t *kv_b_proj;  /* (n_heads * (nope + v), kv_lora_rank) */
    const tensor_t *o_proj;     /* (hidden, n_heads * v) */
    const float *o_bias;        /* (hidden) or NULL */
} mla_weights_t;

typedef struct mla mla_t;

/* Floats per position per layer in the latent cache: kv_lora_rank +
 * qk_rope_head_dim. */
int mla_cache_width(const mla_shape_t *shape);

/* Scratch for up to max_rows new rows per call over up to max_ctx positions
 * (cache rows included). NULL with EINVAL (a width < 1, an odd rope width,
 * max_rows < 1 or max_ctx < max_rows) or ENOMEM. The shape is copied. */
mla_t *mla_new(const mla_shape_t *shape, int max_rows, int max_ctx, err_t *err);
void mla_destroy(mla_t **self_p);

/* Attention of rows at positions pos0 .. pos0+n-1 of one sequence (causal;
 * pos0 > 0 continues a chunked prefill or decodes).
 *   out:   (n, hidden), row stride ldo; o_proj's result is added to it when
 *          accumulate (the residual), else written.
 *   x:     (n, hidden) dense: the input_layernorm'd hidden states.
 *   cache: (>= pos0 + n, mla_cache_width()) rows, dense; rows 0 .. pos0-1 hold
 *          earlier positions; rows pos0 .. pos0+n-1 are written here.
 *   rope:  rotary width qk_rope_head_dim, borrowed.
 *   cx:    the compute context of the products, borrowed.
 * 1 <= n <= max_rows and pos0 + n <= max_ctx (asserted). Does not allocate. */
void mla_run(mla_t *self, compute_t *cx, float *out, int ldo, bool accumulate,
             const float *x, int n, int pos0, float *cache, const mla_weights_t *w,
             const rope_t *rope);

#endif /* MOE_KERNELS_MLA_H */
