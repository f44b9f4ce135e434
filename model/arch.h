/* arch: where each architecture keeps each weight.
 *
 * The math asks for a weight by role (the query projection of layer 3, the
 * up projection of expert 5 of layer 3, ...); arch answers with the tensor's
 * name in the Hugging Face checkpoint, the slice of it (for architectures that
 * stack all experts in one tensor per projection) and the float32 shape the
 * math expects. The names are the family descriptor's (family.h); which
 * tensors a model has is arch_present()'s, the one rule the loader
 * (engine/weights) and the writer (synth) both follow.
 */
#ifndef MOE_MODEL_ARCH_H
#define MOE_MODEL_ARCH_H

#include <stdbool.h>
#include <stdint.h>

#include "core/err.h"
#include "model/config.h"

/* Roles: model-wide first, then per layer, then per expert (the order
 * arch_tensor() relies on). Shapes are (out_features, in_features) for
 * matrices. */
typedef enum arch_weight {
    ARCH_W_EMBED,        /* (vocab, hidden) */
    ARCH_W_LM_HEAD,      /* (vocab, hidden) */
    ARCH_W_FINAL_NORM,   /* (hidden) */
    /* per layer */
    ARCH_W_ATTN_NORM,    /* (hidden) */
    ARCH_W_FFN_NORM,     /* (hidden) */
    ARCH_W_Q,            /* (heads * head_dim, hidden); MLA without q LoRA:
                            (heads * (nope + rope), hidden) */
    ARCH_W_K,            /* (kv_heads * head_dim, hidden) */
    ARCH_W_V,            /* (kv_heads * head_dim, hidden) */
    ARCH_W_O,            /* (hidden, heads * head_dim); MLA: (hidden, heads * v_head_dim) */
    ARCH_W_Q_BIAS,       /* (heads * head_dim) */
    ARCH_W_K_BIAS,       /* (kv_heads * head_dim) */
    ARCH_W_V_BIAS,       /* (kv_heads * head_dim) */
    ARCH_W_O_BIAS,       /* (hidden) */
    ARCH_W_Q_NORM,       /* (head_dim), or (heads * head_dim) for CONFIG_QK_NORM_FULL */
    ARCH_W_K_NORM,       /* (head_dim), or (kv_heads * head_dim) for CONFIG_QK_NORM_FULL */
    ARCH_W_SINKS,        /* (heads) gpt_oss attention sinks */
    ARCH_W_Q_A,          /* (q_lora_rank, hidden) MLA */
    ARCH_W_Q_A_NORM,     /* (q_lora_rank) MLA */
    ARCH_W_Q_B,          /* (heads * (nope + rope), q_lora_rank) MLA */
    ARCH_W_KV_A,         /* (kv_lora_rank + rope, hidden) MLA */
    ARCH_W_KV_A_NORM,    /* (kv_lora_rank) MLA */
    ARCH_W_KV_B,         /* (heads * (nope + v_head_dim), kv_lora_rank) MLA */
    ARCH_W_ROUTER,       /* (n_experts, hidden) */
    ARCH_W_ROUTER_BIAS,  /* (n_experts) gpt_oss */
    ARCH_W_SCORE_BIAS,   /* (n_experts) deepseek_v3 e_score_correction_bias */
    ARCH_W_SHARED_GATE,  /* (shared_inter, hidden) shared expert / shared MLP */
    ARCH_W_SHARED_UP,    /* (shared_inter, hidden) */
    ARCH_W_SHARED_DOWN,  /* (hidden, shared_inter) */
    ARCH_W_SHARED_EXPERT_GATE, /* (1, hidden) qwen2_moe's sigmoid gate */
    ARCH_W_DENSE_GATE,   /* (dense_inter, hidden) FFN of a dense layer */
    ARCH_W_DENSE_UP,     /* (dense_inter, hidden) */
    ARCH_W_DENSE_DOWN,   /* (hidden, dense_inter) */
    /* per expert */
    ARCH_W_EXPERT_GATE,  /* (intermediate, hidden) */
    ARCH_W_EXPERT_UP,    /* (intermediate, hidden) */
    ARCH_W_EXPERT_DOWN,  /* (hidden, intermediate) */
    ARCH_W_EXPERT_DOWN_BIAS, /* (hidden) gpt_oss: a slice of down_proj_bias */
    ARCH_W_COUNT
} arch_weight_t;

enum { ARCH_NAME_MAX = 160, ARCH_MAX_DIMS = 3 };

typedef struct arch_tensor {
    char name[ARCH_NAME_MAX];      /* tensor name in the checkpoint */
    int64_t slice;                 /* index along dim 0, or -1 for the whole tensor */
    int ndim;                      /* rank of the (sliced) tensor */
    int64_t shape[ARCH_MAX_DIMS];  /* expected shape of the (sliced) tensor */
} arch_tensor_t;

/* Fills *out for weight w of layer (ignored for model-wide weights) and expert
 * (ignored unless w is an expert weight). Returns 0, or -1 with EINVAL when
 * the architecture has no such weight or layer/expert is out of range.
 * Whether a model HAS an optional weight (a bias, a shared expert) is the
 * config's to say; arch only names it. */
int arch_tensor(const config_t *cfg, arch_weight_t w, int layer, int expert,
                arch_tensor_t *out, err_t *err);

/* True when the architecture names weight w at all. */
int arch_has(const config_t *cfg, arch_weight_t w);

/* True when a model with config cfg has weight w in layer `layer` (ignored
 * for model-wide weights; any expert of a MoE layer), as its config says:
 * biases, q/k norms, MLA or plain attention, shared experts, dense or MoE
 * layer, tied embeddings. arch_tensor() fails for one the family cannot
 * name. */
bool arch_present(const config_t *cfg, arch_weight_t w, int layer);

/* Short role name for messages, e.g. "q_proj" (borrowed, static). */
const char *arch_weight_name(arch_weight_t w);

#endif /* MOE_MODEL_ARCH_H */
