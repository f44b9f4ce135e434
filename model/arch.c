/* arch: see arch.h. The names are the family descriptors' (family.h);
 * shapes and presence come from the config, the same function of it in every
 * family. */
#include "model/arch.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>

#include "model/family.h"

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

/* The family's name format of w, or NULL. */
static const char *s_format(const config_t *cfg, arch_weight_t w)
{
    const family_t *f = family_of(cfg->arch);
    return f && w >= 0 && w < ARCH_W_COUNT ? f->names[w] : NULL;
}

int arch_has(const config_t *cfg, arch_weight_t w)
{
    return s_format(cfg, w) != NULL;
}

bool arch_present(const config_t *cfg, arch_weight_t w, int layer)
{
    const bool moe = config_layer_is_moe(cfg, layer);
    const bool mla = config_is_mla(cfg);
    switch (w) {
    case ARCH_W_LM_HEAD: return !cfg->tie_word_embeddings;
    case ARCH_W_Q: return !mla || cfg->q_lora_rank == 0;
    case ARCH_W_K:
    case ARCH_W_V: return !mla;
    case ARCH_W_Q_A:
    case ARCH_W_Q_A_NORM:
    case ARCH_W_Q_B: return mla && cfg->q_lora_rank > 0;
    case ARCH_W_KV_A:
    case ARCH_W_KV_A_NORM:
    case ARCH_W_KV_B: return mla;
    case ARCH_W_Q_BIAS:
    case ARCH_W_K_BIAS:
    case ARCH_W_V_BIAS: return cfg->qkv_bias;
    case ARCH_W_O_BIAS: return cfg->o_bias;
    case ARCH_W_Q_NORM:
    case ARCH_W_K_NORM: return cfg->qk_norm != CONFIG_QK_NORM_NONE;
    case ARCH_W_SINKS: return cfg->attn_sinks;
    case ARCH_W_ROUTER: return moe;
    case ARCH_W_ROUTER_BIAS: return moe && cfg->router_bias;
    case ARCH_W_SCORE_BIAS: return moe && cfg->topk_method == CONFIG_TOPK_NOAUX_TC;
    case ARCH_W_SHARED_GATE:
    case ARCH_W_SHARED_UP:
    case ARCH_W_SHARED_DOWN: return moe && cfg->shared != CONFIG_SHARED_NONE;
    case ARCH_W_SHARED_EXPERT_GATE: return moe && cfg->shared == CONFIG_SHARED_GATED;
    case ARCH_W_DENSE_GATE:
    case ARCH_W_DENSE_UP:
    case ARCH_W_DENSE_DOWN: return !moe;
    case ARCH_W_EXPERT_GATE:
    case ARCH_W_EXPERT_UP:
    case ARCH_W_EXPERT_DOWN:
    case ARCH_W_EXPERT_DOWN_BIAS: return moe;
    default: return true; /* embeddings, norms, o_proj */
    }
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
    const bool mla = config_is_mla(cfg);
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
        if (config_experts_stacked(cfg)) {
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
        if (config_experts_stacked(cfg)) {
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
    const char *fmt = s_format(cfg, w);
    if (!fmt)
        return err_set(err, EINVAL, "architecture %s has no %s weight",
                       config_arch_name(cfg->arch), arch_weight_name(w));
    if (s_is_per_layer(w) && (layer < 0 || layer >= cfg->n_layers))
        return err_set(err, EINVAL, "layer %d out of range (model has %d)",
                       layer, cfg->n_layers);
    if (s_is_per_expert(w) && (expert < 0 || expert >= cfg->n_experts))
        return err_set(err, EINVAL, "expert %d out of range (model has %d)",
                       expert, cfg->n_experts);

    /* Stacked experts: one slice of the layer's tensor. */
    const bool stacked = s_is_per_expert(w) && config_experts_stacked(cfg);
    int n;
    if (s_is_per_expert(w) && !stacked)
        n = snprintf(out->name, sizeof out->name, fmt, layer, expert);
    else if (s_is_per_layer(w))
        n = snprintf(out->name, sizeof out->name, fmt, layer);
    else
        n = snprintf(out->name, sizeof out->name, "%s", fmt);
    if (n < 0 || (size_t)n >= sizeof out->name)
        return err_set(err, EINVAL, "tensor name too long for %s", arch_weight_name(w));
    out->slice = stacked ? expert : -1;
    out->ndim = s_shape(cfg, w, out->shape);
    return 0;
}
