/* attention: causal grouped-query attention of new query rows against a KV
 * cache, as Hugging Face's eager attention (scores in float32, softmax, P V).
 *
 * One call serves one sequence: n_q query rows at consecutive positions
 * pos0 .. pos0+n_q-1, whose keys and values are already in the cache, which
 * holds positions 0 .. pos0+n_q-1. Query head h reads KV head
 * h / (n_heads / n_kv_heads). Matrix products go through gemm().
 *
 * Attention sinks (gpt-oss, `self_attn.sinks`): with shape->sinks set, query
 * head h's softmax gets one more logit, sinks[h], in its denominator only, as
 * transformers' GptOss eager attention does: p_c = exp(s_c - m) / (sum over
 * visible c' of exp(s_c' - m) + exp(sinks[h] - m)), m the largest of the
 * visible scores and sinks[h]. The sink has no value, so a row's
 * probabilities sum to less than 1.
 */
#ifndef MOE_KERNELS_ATTENTION_H
#define MOE_KERNELS_ATTENTION_H

#include <stddef.h>

#include "kernels/compute.h"

typedef struct attention_shape {
    int n_heads;     /* query heads */
    int n_kv_heads;  /* key/value heads, divides n_heads */
    int head_dim;    /* width of one query/key head */
    int v_head_dim;  /* width of one value head (== head_dim but for MLA) */
    float scale;     /* multiplies q.k, usually 1/sqrt(head_dim) */
    int window;      /* sliding window in positions, 0 for none: position p
                        sees keys p-window+1 .. p (transformers' sliding
                        window convention: key c is seen when p - c <
                        window) */
    const float *sinks; /* (n_heads) per-head sink logits (borrowed, finite),
                           or NULL for none */
} attention_shape_t;

/* Scratch floats attention() needs for n_q query rows over n_ctx positions.
 * Grows with n_q and n_ctx, so one buffer sized for the largest chunk and
 * context serves every smaller call. Keys a row cannot see (future positions,
 * or before its sliding window) get probability exactly 0. */
size_t attention_scratch_floats(const attention_shape_t *shape, int n_q, int n_ctx);

/* out: (n_q, n_heads * v_head_dim), row stride ldo
 * q:   (n_q, n_heads * head_dim), row stride ldq
 * k:   (n_ctx, n_kv_heads * head_dim), row stride ldk  (n_ctx = pos0 + n_q)
 * v:   (n_ctx, n_kv_heads * v_head_dim), row stride ldv
 * scratch: attention_scratch_floats() floats
 * cx: the compute context of its products (borrowed) */
void attention(compute_t *cx, float *out, int ldo, const float *q, int ldq,
               const float *k, int ldk, const float *v, int ldv,
               const attention_shape_t *shape, int n_q, int pos0, float *scratch);

#endif /* MOE_KERNELS_ATTENTION_H */
