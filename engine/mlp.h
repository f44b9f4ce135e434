/* mlp: the SwiGLU FFNs that run beside the routed experts, on the caller's
 * side (moe-run, or the coordinator in cluster mode): a shared expert
 * (qwen2_moe shared_expert behind its sigmoid gate, hunyuan shared_mlp,
 * deepseek shared_experts) and the FFN of a dense layer.
 *
 * y = down(silu(gate u) * up u), optionally scaled per row by
 * sigmoid(gate_w . u), and ADDED into out, so that a shared expert sums onto
 * the routed experts' output as Hugging Face does (experts + shared) before
 * the residual. Scratch is sized once; mlp_add() never allocates.
 */
#ifndef MOE_ENGINE_MLP_H
#define MOE_ENGINE_MLP_H

#include "core/err.h"
#include "engine/weights.h"
#include "kernels/compute.h"

typedef struct mlp mlp_t;

/* Scratch for up to max_rows rows of FFNs up to max_width wide.
 * The products run in cx (borrowed, must outlive the mlp_t).
 * NULL with errno/err (EINVAL, ENOMEM) on failure. Caller destroys. */
mlp_t *mlp_new(int hidden, int max_width, int max_rows, compute_t *cx, err_t *err);
void mlp_destroy(mlp_t **self_p);

/* out[r] += g_r * ffn(u[r]) for r < n_rows, g_r = sigmoid(gate_w . u[r]) when
 * gate_w is given, else 1.
 *   w: the FFN, width columns (<= max_width); gate_w: (hidden) or NULL;
 *   u: (n_rows, hidden); out: (n_rows, hidden), must not overlap u.
 * n_rows <= max_rows (asserted: sizes are the caller's own). */
void mlp_add(mlp_t *self, const expert_weights_t *w, int width, const float *gate_w,
             const float *u, int n_rows, float *out);

/* The one SwiGLU block, of routed experts (engine/experts) and of the FFNs
 * here: y = down(act(gate x, up x)) over n dense rows, where act is
 * silu(g) * u, or, when eb is given (gpt_oss), the gate/up biases then
 * ffn_swiglu_clamped() at limit, and down's bias after.
 *   y: (n, hidden); x: (n, hidden); gate, up: scratch (n, width), gate
 *   holds act() after. The products run in cx (borrowed). Does not
 *   allocate. */
void mlp_swiglu(compute_t *cx, float *y, const float *x, int n, int hidden,
                int width, const expert_weights_t *w, const expert_biases_t *eb,
                float limit, float *gate, float *up);

/* One SwiGLU block of mlp_swiglu_many(): mlp_swiglu()'s arguments but the
 * shared ones (cx, hidden, width, limit). */
typedef struct mlp_block {
    float *y;
    const float *x;
    int n;
    const expert_weights_t *w;
    const expert_biases_t *eb;
    float *gate, *up;
} mlp_block_t;

/* mlp_swiglu() of each block, the same results to the bit, the products of
 * all of them fused where the weights' format allows (matmul_many(): the
 * gate and up projections of every block in one job, then every down
 * projection in one): a decoded token's experts join the compute pool's
 * threads twice instead of three times each. Blocks must not overlap. */
void mlp_swiglu_many(compute_t *cx, int hidden, int width, float limit,
                     const mlp_block_t *blocks, int n_blocks);

#endif /* MOE_ENGINE_MLP_H */
