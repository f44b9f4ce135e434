/* arch: see arch.h. One naming table per architecture; shapes come from the
 * config, the same function of it in every architecture. */
#include "model/arch.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>

/* printf formats of tensor names; a per-layer format takes the layer, a
 * per-expert format takes the layer then the expert. */
typedef struct arch_names {
    config_arch_t arch;
    const char *fmt[ARCH_W_COUNT];
} arch_names_t;

#define S_LAYER "model.layers.%d."
#define S_ATTN S_LAYER "self_attn."

/* Names every Llama-style family shares; each table adds its own. */
#define S_COMMON_NAMES                                                       \
    [ARCH_W_EMBED] = "model.embed_tokens.weight",                            \
    [ARCH_W_LM_HEAD] = "lm_head.weight",                                     \
    [ARCH_W_FINAL_NORM] = "model.norm.weight",                               \
    [ARCH_W_ATTN_NORM] = S_LAYER "input_layernorm.weight",                   \
    [ARCH_W_FFN_NORM] = S_LAYER "post_attention_layernorm.weight",           \
    [ARCH_W_Q] = S_ATTN "q_proj.weight", [ARCH_W_K] = S_ATTN "k_proj.weight", \
    [ARCH_W_V] = S_ATTN "v_proj.weight", [ARCH_W_O] = S_ATTN "o_proj.weight", \
    [ARCH_W_Q_BIAS] = S_ATTN "q_proj.bias",                                  \
    [ARCH_W_K_BIAS] = S_ATTN "k_proj.bias",                                  \
    [ARCH_W_V_BIAS] = S_ATTN "v_proj.bias",                                  \
    [ARCH_W_O_BIAS] = S_ATTN "o_proj.bias"

/* Experts stored one by one as mlp.experts.E.{gate,up,down}_proj. */
#define S_MLP_EXPERTS                                                        \
    [ARCH_W_EXPERT_GATE] = S_LAYER "mlp.experts.%d.gate_proj.weight",        \
    [ARCH_W_EXPERT_UP] = S_LAYER "mlp.experts.%d.up_proj.weight",            \
    [ARCH_W_EXPERT_DOWN] = S_LAYER "mlp.experts.%d.down_proj.weight"

/* A dense layer's FFN, mlp.{gate,up,down}_proj. */
#define S_MLP_DENSE                                                          \
    [ARCH_W_DENSE_GATE] = S_LAYER "mlp.gate_proj.weight",                    \
    [ARCH_W_DENSE_UP] = S_LAYER "mlp.up_proj.weight",                        \
    [ARCH_W_DENSE_DOWN] = S_LAYER "mlp.down_proj.weight"

static const arch_names_t s_mixtral = {
    .arch = CONFIG_ARCH_MIXTRAL,
    .fmt = {
        S_COMMON_NAMES,
        [ARCH_W_ROUTER] = S_LAYER "block_sparse_moe.gate.weight",
        [ARCH_W_EXPERT_GATE] = S_LAYER "block_sparse_moe.experts.%d.w1.weight",
        [ARCH_W_EXPERT_UP] = S_LAYER "block_sparse_moe.experts.%d.w3.weight",
        [ARCH_W_EXPERT_DOWN] = S_LAYER "block_sparse_moe.experts.%d.w2.weight",
    },
};

static const arch_names_t s_qwen2_moe = {
    .arch = CONFIG_ARCH_QWEN2_MOE,
    .fmt = {
        S_COMMON_NAMES, S_MLP_EXPERTS, S_MLP_DENSE,
        [ARCH_W_ROUTER] = S_LAYER "mlp.gate.weight",
        [ARCH_W_SHARED_GATE] = S_LAYER "mlp.shared_expert.gate_proj.weight",
        [ARCH_W_SHARED_UP] = S_LAYER "mlp.shared_expert.up_proj.weight",
        [ARCH_W_SHARED_DOWN] = S_LAYER "mlp.shared_expert.down_proj.weight",
        [ARCH_W_SHARED_EXPERT_GATE] = S_LAYER "mlp.shared_expert_gate.weight",
    },
};

/* qwen3_moe and olmoe: q_norm / k_norm (per head or whole projection, as
 * config.qk_norm says). */
static const arch_names_t s_qwen3_moe = {
    .arch = CONFIG_ARCH_QWEN3_MOE,
    .fmt = {
        S_COMMON_NAMES, S_MLP_EXPERTS, S_MLP_DENSE,
        [ARCH_W_ROUTER] = S_LAYER "mlp.gate.weight",
        [ARCH_W_Q_NORM] = S_ATTN "q_norm.weight",
        [ARCH_W_K_NORM] = S_ATTN "k_norm.weight",
    },
};

static const arch_names_t s_olmoe = {
    .arch = CONFIG_ARCH_OLMOE,
    .fmt = {
        S_COMMON_NAMES, S_MLP_EXPERTS,
        [ARCH_W_ROUTER] = S_LAYER "mlp.gate.weight",
        [ARCH_W_Q_NORM] = S_ATTN "q_norm.weight",
        [ARCH_W_K_NORM] = S_ATTN "k_norm.weight",
    },
};

static const arch_names_t s_hunyuan = {
    .arch = CONFIG_ARCH_HUNYUAN_V1_MOE,
    .fmt = {
        S_COMMON_NAMES, S_MLP_EXPERTS,
        [ARCH_W_ROUTER] = S_LAYER "mlp.gate.wg.weight",
        [ARCH_W_Q_NORM] = S_ATTN "query_layernorm.weight",
        [ARCH_W_K_NORM] = S_ATTN "key_layernorm.weight",
        [ARCH_W_SHARED_GATE] = S_LAYER "mlp.shared_mlp.gate_proj.weight",
        [ARCH_W_SHARED_UP] = S_LAYER "mlp.shared_mlp.up_proj.weight",
        [ARCH_W_SHARED_DOWN] = S_LAYER "mlp.shared_mlp.down_proj.weight",
    },
};

/* deepseek_v2 / v3: MLA (q_proj when q_lora_rank is 0), shared_experts,
 * a dense FFN in the first_k_dense_replace layers. */
#define S_DEEPSEEK_NAMES                                                     \
    [ARCH_W_EMBED] = "model.embed_tokens.weight",                            \
    [ARCH_W_LM_HEAD] = "lm_head.weight",                                     \
    [ARCH_W_FINAL_NORM] = "model.norm.weight",                               \
    [ARCH_W_ATTN_NORM] = S_LAYER "input_layernorm.weight",                   \
    [ARCH_W_FFN_NORM] = S_LAYER "post_attention_layernorm.weight",           \
    [ARCH_W_Q] = S_ATTN "q_proj.weight", [ARCH_W_O] = S_ATTN "o_proj.weight", \
    [ARCH_W_O_BIAS] = S_ATTN "o_proj.bias",                                  \
    [ARCH_W_Q_A] = S_ATTN "q_a_proj.weight",                                 \
    [ARCH_W_Q_A_NORM] = S_ATTN "q_a_layernorm.weight",                       \
    [ARCH_W_Q_B] = S_ATTN "q_b_proj.weight",                                 \
    [ARCH_W_KV_A] = S_ATTN "kv_a_proj_with_mqa.weight",                      \
    [ARCH_W_KV_A_NORM] = S_ATTN "kv_a_layernorm.weight",                     \
    [ARCH_W_KV_B] = S_ATTN "kv_b_proj.weight",                               \
    [ARCH_W_ROUTER] = S_LAYER "mlp.gate.weight",                             \
    [ARCH_W_SHARED_GATE] = S_LAYER "mlp.shared_experts.gate_proj.weight",    \
    [ARCH_W_SHARED_UP] = S_LAYER "mlp.shared_experts.up_proj.weight",        \
    [ARCH_W_SHARED_DOWN] = S_LAYER "mlp.shared_experts.down_proj.weight",    \
    S_MLP_EXPERTS, S_MLP_DENSE

static const arch_names_t s_deepseek_v2 = {
    .arch = CONFIG_ARCH_DEEPSEEK_V2,
    .fmt = {S_DEEPSEEK_NAMES},
};

static const arch_names_t s_deepseek_v3 = {
    .arch = CONFIG_ARCH_DEEPSEEK_V3,
    .fmt = {
        S_DEEPSEEK_NAMES,
        [ARCH_W_SCORE_BIAS] = S_LAYER "mlp.gate.e_score_correction_bias",
    },
};

/* gpt_oss: experts fused per layer ([E, hidden, 2I] gate/up interleaved by
 * column, y = x W + b): the expert roles name the fused tensors, whose
 * per-expert slice engine/fused de-interleaves and transposes (arch_tensor
 * gives slice = expert and the stored shape). */
static const arch_names_t s_gpt_oss = {
    .arch = CONFIG_ARCH_GPT_OSS,
    .fmt = {
        S_COMMON_NAMES,
        [ARCH_W_SINKS] = S_ATTN "sinks",
        [ARCH_W_ROUTER] = S_LAYER "mlp.router.weight",
        [ARCH_W_ROUTER_BIAS] = S_LAYER "mlp.router.bias",
        [ARCH_W_EXPERT_GATE] = S_LAYER "mlp.experts.gate_up_proj",
        [ARCH_W_EXPERT_UP] = S_LAYER "mlp.experts.gate_up_proj_bias",
        [ARCH_W_EXPERT_DOWN] = S_LAYER "mlp.experts.down_proj",
        [ARCH_W_EXPERT_DOWN_BIAS] = S_LAYER "mlp.experts.down_proj_bias",
    },
};

static const arch_names_t *const s_tables[] = {
    &s_mixtral, &s_qwen2_moe, &s_qwen3_moe, &s_olmoe, &s_hunyuan,
    &s_deepseek_v2, &s_deepseek_v3, &s_gpt_oss,
};

static const char *const s_role_names[ARCH_W_COUNT] = {
    [ARCH_W_EMBED] = "embed_tokens", [ARCH_W_LM_HEAD] = "lm_head",
    [ARCH_W_FINAL_NORM] = "norm", [ARCH_W_ATTN_NORM] = "input_layernorm",
    [ARCH_W_FFN_NORM] = "post_attention_layernorm", [ARCH_W_Q] = "q_proj",
    [ARCH_W_K] = "k_proj", [ARCH_W_V] = "v_proj", [ARCH_W_O] = "o_proj",
    [ARCH_W_Q_BIAS] = "q_proj bias", [ARCH_W_K_BIAS] = "k_proj bias",
    [ARCH_W_V_BIAS] = "v_proj bias", [ARCH_W_O_BIAS] = "o_proj bias",
    [ARCH_W_Q_NORM] = "q_norm", [ARCH_W_K_NORM] = "k_norm",
    [ARCH_W_SINKS] = "sinks", [ARCH_W_Q_A] = "q_a_proj",
    [ARCH_W_Q_A_NORM] = "q_a_layernorm", [ARCH_W_Q_B] = "q_b_proj",
    [ARCH_W_KV_A] = "kv_a_proj_with_mqa", [ARCH_W_KV_A_NORM] = "kv_a_layernorm",
    [ARCH_W_KV_B] = "kv_b_proj", [ARCH_W_ROUTER_BIAS] = "router bias",
    [ARCH_W_SCORE_BIAS] = "e_score_correction_bias",
    [ARCH_W_SHARED_GATE] = "shared gate_proj", [ARCH_W_SHARED_UP] = "shared up_proj",
    [ARCH_W_SHARED_DOWN] = "shared down_proj",
    [ARCH_W_SHARED_EXPERT_GATE] = "shared_expert_gate",
    [ARCH_W_DENSE_GATE] = "dense gate_proj", [ARCH_W_DENSE_UP] = "dense up_proj",
    [ARCH_W_DENSE_DOWN] = "dense down_proj",
    [ARCH_W_ROUTER] = "router", [ARCH_W_EXPERT_GATE] = "expert gate_proj",
    [ARCH_W_EXPERT_UP] = "expert up_proj", [ARCH_W_EXPERT_DOWN] = "expert down_proj",
    [ARCH_W_EXPERT_DOWN_BIAS] = "expert down_proj bias",
};

const char *arch_weight_name(arch_weight_t w)
{
    return (w >= 0 && w < ARCH_W_COUNT) ? s_role_names[w] : "unknown weight";
}

static const arch_names_t *s_names_of(config_arch_t arch)
{
    for (size_t i = 0; i < sizeof s_tables / sizeof s_tables[0]; i++)
        if (s_tables[i]->arch == arch)
            return s_tables[i];
    return NULL;
}

int arch_has(const config_t *cfg, arch_weight_t w)
{
    const arch_names_t *names = s_names_of(cfg->arch);
    return names && w >= 0 && w < ARCH_W_COUNT && names->fmt[w] != NULL;
}

static int s_is_per_layer(arch_weight_t w)
{
    return w >= ARCH_W_ATTN_NORM;
}

static int s_is_per_expert(arch_weight_t w)
{
    return w >= ARCH_W_EXPERT_GATE;
}

/* Shape of weight w as the math uses it: (out_features, in_features). */
static int s_shape(const config_t *cfg, arch_weight_t w, int64_t *shape)
{
    const int64_t hidden = cfg->hidden_size;
    const int64_t q_width = (int64_t)cfg->n_heads * cfg->head_dim;
    const int64_t kv_width = (int64_t)cfg->n_kv_heads * cfg->head_dim;
    const int64_t inter = cfg->intermediate_size;
    const int64_t shared = cfg->shared_intermediate_size;
    const int64_t dense = cfg->dense_intermediate_size;
    const bool full = cfg->qk_norm == CONFIG_QK_NORM_FULL;
    const bool mla = cfg->kv_lora_rank > 0;
    const int64_t qk_head = (int64_t)cfg->qk_nope_head_dim + cfg->qk_rope_head_dim;

    switch (w) {
    case ARCH_W_EMBED:
    case ARCH_W_LM_HEAD:
        shape[0] = cfg->vocab_size, shape[1] = hidden;
        return 2;
    case ARCH_W_FINAL_NORM:
    case ARCH_W_ATTN_NORM:
    case ARCH_W_FFN_NORM:
    case ARCH_W_O_BIAS:
        shape[0] = hidden;
        return 1;
    case ARCH_W_Q:
        shape[0] = mla ? cfg->n_heads * qk_head : q_width, shape[1] = hidden;
        return 2;
    case ARCH_W_K:
    case ARCH_W_V:
        shape[0] = kv_width, shape[1] = hidden;
        return 2;
    case ARCH_W_O:
        shape[0] = hidden;
        shape[1] = mla ? (int64_t)cfg->n_heads * cfg->v_head_dim : q_width;
        return 2;
    case ARCH_W_Q_BIAS:
        shape[0] = q_width;
        return 1;
    case ARCH_W_K_BIAS:
    case ARCH_W_V_BIAS:
        shape[0] = kv_width;
        return 1;
    case ARCH_W_Q_NORM:
        shape[0] = full ? q_width : cfg->head_dim;
        return 1;
    case ARCH_W_K_NORM:
        shape[0] = full ? kv_width : cfg->head_dim;
        return 1;
    case ARCH_W_SINKS:
        shape[0] = cfg->n_heads;
        return 1;
    case ARCH_W_Q_A:
        shape[0] = cfg->q_lora_rank, shape[1] = hidden;
        return 2;
    case ARCH_W_Q_A_NORM:
        shape[0] = cfg->q_lora_rank;
        return 1;
    case ARCH_W_Q_B:
        shape[0] = cfg->n_heads * qk_head, shape[1] = cfg->q_lora_rank;
        return 2;
    case ARCH_W_KV_A:
        shape[0] = (int64_t)cfg->kv_lora_rank + cfg->qk_rope_head_dim;
        shape[1] = hidden;
        return 2;
    case ARCH_W_KV_A_NORM:
        shape[0] = cfg->kv_lora_rank;
        return 1;
    case ARCH_W_KV_B:
        shape[0] = (int64_t)cfg->n_heads * (cfg->qk_nope_head_dim + cfg->v_head_dim);
        shape[1] = cfg->kv_lora_rank;
        return 2;
    case ARCH_W_ROUTER:
        shape[0] = cfg->n_experts, shape[1] = hidden;
        return 2;
    case ARCH_W_ROUTER_BIAS:
    case ARCH_W_SCORE_BIAS:
        shape[0] = cfg->n_experts;
        return 1;
    case ARCH_W_SHARED_GATE:
    case ARCH_W_SHARED_UP:
        shape[0] = shared, shape[1] = hidden;
        return 2;
    case ARCH_W_SHARED_DOWN:
        shape[0] = hidden, shape[1] = shared;
        return 2;
    case ARCH_W_SHARED_EXPERT_GATE:
        shape[0] = 1, shape[1] = hidden;
        return 2;
    case ARCH_W_DENSE_GATE:
    case ARCH_W_DENSE_UP:
        shape[0] = dense, shape[1] = hidden;
        return 2;
    case ARCH_W_DENSE_DOWN:
        shape[0] = hidden, shape[1] = dense;
        return 2;
    case ARCH_W_EXPERT_GATE:
    case ARCH_W_EXPERT_UP:
        if (cfg->expert_act == CONFIG_EXPERT_SWIGLU_OAI) {
            /* fused gate_up_proj (hidden, 2I) / its bias (2I), one expert */
            if (w == ARCH_W_EXPERT_UP) {
                shape[0] = 2 * inter;
                return 1;
            }
            shape[0] = hidden, shape[1] = 2 * inter;
            return 2;
        }
        shape[0] = inter, shape[1] = hidden;
        return 2;
    case ARCH_W_EXPERT_DOWN_BIAS:
        shape[0] = hidden;
        return 1;
    case ARCH_W_EXPERT_DOWN:
        if (cfg->expert_act == CONFIG_EXPERT_SWIGLU_OAI) {
            shape[0] = inter, shape[1] = hidden; /* y = x W: (I, hidden) */
            return 2;
        }
        shape[0] = hidden, shape[1] = inter;
        return 2;
    default:
        return 0;
    }
}

int arch_tensor(const config_t *cfg, arch_weight_t w, int layer, int expert,
                arch_tensor_t *out, err_t *err)
{
    const arch_names_t *names = s_names_of(cfg->arch);
    if (!names || w < 0 || w >= ARCH_W_COUNT || !names->fmt[w])
        return err_set(err, EINVAL, "architecture %s has no %s weight",
                       config_arch_name(cfg->arch), arch_weight_name(w));
    if (s_is_per_layer(w) && (layer < 0 || layer >= cfg->n_layers))
        return err_set(err, EINVAL, "layer %d out of range (model has %d)",
                       layer, cfg->n_layers);
    if (s_is_per_expert(w) && (expert < 0 || expert >= cfg->n_experts))
        return err_set(err, EINVAL, "expert %d out of range (model has %d)",
                       expert, cfg->n_experts);

    /* gpt_oss stacks its experts: one slice of the layer's fused tensor. */
    const bool stacked = s_is_per_expert(w) && cfg->expert_act == CONFIG_EXPERT_SWIGLU_OAI;
    int n;
    if (s_is_per_expert(w) && !stacked)
        n = snprintf(out->name, sizeof out->name, names->fmt[w], layer, expert);
    else if (s_is_per_layer(w))
        n = snprintf(out->name, sizeof out->name, names->fmt[w], layer);
    else
        n = snprintf(out->name, sizeof out->name, "%s", names->fmt[w]);
    if (n < 0 || (size_t)n >= sizeof out->name)
        return err_set(err, EINVAL, "tensor name too long for %s", arch_weight_name(w));
    out->slice = stacked ? expert : -1;
    out->ndim = s_shape(cfg, w, out->shape);
    return 0;
}
