/* fam_common: what the family descriptors (fam_*.c) share: the tensor names
 * and role runs of Llama-style checkpoints. Private to model/. */
#ifndef MOE_MODEL_FAM_COMMON_H
#define MOE_MODEL_FAM_COMMON_H

#include <errno.h>

#include "model/cfgjson.h"
#include "model/family.h"

#define FAM_COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* A descriptor's tables and hooks, named as every fam_*.c names them. */
#define FAM_TABLES(names_, roles_, presets_)                                 \
    .names = names_, .roles = roles_, .n_roles = FAM_COUNT(roles_),          \
    .presets = presets_, .n_presets = FAM_COUNT(presets_)

#define FAM_LAYER "model.layers.%d."
#define FAM_ATTN FAM_LAYER "self_attn."

/* Names every family shares, MLA included. */
#define FAM_BASE_NAMES                                                       \
    [ARCH_W_EMBED] = "model.embed_tokens.weight",                            \
    [ARCH_W_LM_HEAD] = "lm_head.weight",                                     \
    [ARCH_W_FINAL_NORM] = "model.norm.weight",                               \
    [ARCH_W_ATTN_NORM] = FAM_LAYER "input_layernorm.weight",                 \
    [ARCH_W_FFN_NORM] = FAM_LAYER "post_attention_layernorm.weight",         \
    [ARCH_W_Q] = FAM_ATTN "q_proj.weight",                                   \
    [ARCH_W_O] = FAM_ATTN "o_proj.weight",                                   \
    [ARCH_W_O_BIAS] = FAM_ATTN "o_proj.bias"

/* Names every Llama-style family shares; each table adds its own. */
#define FAM_COMMON_NAMES                                                     \
    FAM_BASE_NAMES,                                                          \
    [ARCH_W_K] = FAM_ATTN "k_proj.weight", [ARCH_W_V] = FAM_ATTN "v_proj.weight", \
    [ARCH_W_Q_BIAS] = FAM_ATTN "q_proj.bias",                                \
    [ARCH_W_K_BIAS] = FAM_ATTN "k_proj.bias", [ARCH_W_V_BIAS] = FAM_ATTN "v_proj.bias"

/* Experts stored one by one as mlp.experts.E.{gate,up,down}_proj. */
#define FAM_MLP_EXPERTS                                                      \
    [ARCH_W_EXPERT_GATE] = FAM_LAYER "mlp.experts.%d.gate_proj.weight",      \
    [ARCH_W_EXPERT_UP] = FAM_LAYER "mlp.experts.%d.up_proj.weight",          \
    [ARCH_W_EXPERT_DOWN] = FAM_LAYER "mlp.experts.%d.down_proj.weight"

/* A dense layer's FFN, mlp.{gate,up,down}_proj. */
#define FAM_MLP_DENSE                                                        \
    [ARCH_W_DENSE_GATE] = FAM_LAYER "mlp.gate_proj.weight",                  \
    [ARCH_W_DENSE_UP] = FAM_LAYER "mlp.up_proj.weight",                      \
    [ARCH_W_DENSE_DOWN] = FAM_LAYER "mlp.down_proj.weight"

/* Llama-style attention roles of a layer, in checkpoint order (what a model
 * has of them is the config's to say). */
#define FAM_ATTN_ROLES                                                       \
    ARCH_W_ATTN_NORM, ARCH_W_Q, ARCH_W_Q_BIAS, ARCH_W_K, ARCH_W_K_BIAS,      \
        ARCH_W_V, ARCH_W_V_BIAS, ARCH_W_Q_NORM, ARCH_W_K_NORM, ARCH_W_O,     \
        ARCH_W_O_BIAS, ARCH_W_SINKS, ARCH_W_FFN_NORM

/* qwen2_moe, qwen3_moe, olmoe and hunyuan_v1_moe write these, each what its
 * config has (biases, q/k norms, shared expert, dense layers). */
#define FAM_LLAMA_MOE_ROLES                                                  \
    ARCH_W_EMBED,                                                            \
    FAM_ATTN_ROLES,                                                          \
    ARCH_W_DENSE_GATE, ARCH_W_DENSE_UP, ARCH_W_DENSE_DOWN,                   \
    ARCH_W_ROUTER,                                                           \
    ARCH_W_EXPERT_GATE, ARCH_W_EXPERT_UP, ARCH_W_EXPERT_DOWN,                \
    ARCH_W_SHARED_GATE, ARCH_W_SHARED_UP, ARCH_W_SHARED_DOWN,                \
    ARCH_W_SHARED_EXPERT_GATE,                                               \
    ARCH_W_FINAL_NORM, ARCH_W_LM_HEAD

#endif /* MOE_MODEL_FAM_COMMON_H */
