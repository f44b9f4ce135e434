/* qwen2_moe and qwen3_moe (Qwen2MoeForCausalLM, Qwen3MoeForCausalLM).
 * qwen2_moe: q/k/v biases (qkv_bias, on unless false), softmax top-k with
 * norm_topk_prob, a shared expert behind a sigmoid gate. qwen3_moe: biases
 * per attention_bias, per-head q/k RMSNorm before RoPE, no shared expert.
 * Both: dense layers per mlp_only_layers / decoder_sparse_step. */
#include "model/fam_common.h"

static const char *const s_qwen2_names[ARCH_W_COUNT] = {
    FAM_COMMON_NAMES, FAM_MLP_EXPERTS, FAM_MLP_DENSE,
    [ARCH_W_ROUTER] = FAM_LAYER "mlp.gate.weight",
    [ARCH_W_SHARED_GATE] = FAM_LAYER "mlp.shared_expert.gate_proj.weight",
    [ARCH_W_SHARED_UP] = FAM_LAYER "mlp.shared_expert.up_proj.weight",
    [ARCH_W_SHARED_DOWN] = FAM_LAYER "mlp.shared_expert.down_proj.weight",
    [ARCH_W_SHARED_EXPERT_GATE] = FAM_LAYER "mlp.shared_expert_gate.weight",
};

static const char *const s_qwen3_names[ARCH_W_COUNT] = {
    FAM_COMMON_NAMES, FAM_MLP_EXPERTS, FAM_MLP_DENSE,
    [ARCH_W_ROUTER] = FAM_LAYER "mlp.gate.weight",
    [ARCH_W_Q_NORM] = FAM_ATTN "q_norm.weight",
    [ARCH_W_K_NORM] = FAM_ATTN "k_norm.weight",
};

static const int s_roles[] = {FAM_LLAMA_MOE_ROLES};

/* Finer experts than mixtral, top-4 to top-8. */
static const family_preset_t s_qwen2_presets[] = {
    {.name = "tiny", .hidden = 64, .n_layers = 2, .n_experts = 16, .top_k = 4,
     .inter = 32, .n_heads = 4, .n_kv_heads = 2, .vocab = 512,
     .dense_inter = 128, .shared_inter = 64},
    {.name = "small", .hidden = 256, .n_layers = 4, .n_experts = 16,
     .top_k = 4, .inter = 128, .n_heads = 8, .n_kv_heads = 2, .vocab = 2048,
     .dense_inter = 512, .shared_inter = 512},
    {.name = "medium", .hidden = 1024, .n_layers = 8, .n_experts = 32,
     .top_k = 4, .inter = 704, .n_heads = 16, .n_kv_heads = 4,
     .vocab = 32000, .dense_inter = 2816, .shared_inter = 2816},
};

static const family_preset_t s_qwen3_presets[] = {
    {.name = "tiny", .hidden = 64, .n_layers = 2, .n_experts = 16, .top_k = 4,
     .inter = 32, .n_heads = 4, .n_kv_heads = 2, .vocab = 512,
     .dense_inter = 128},
    {.name = "small", .hidden = 256, .n_layers = 4, .n_experts = 32,
     .top_k = 8, .inter = 128, .n_heads = 8, .n_kv_heads = 2, .vocab = 2048,
     .dense_inter = 512},
    {.name = "medium", .hidden = 1024, .n_layers = 8, .n_experts = 64,
     .top_k = 8, .inter = 352, .n_heads = 16, .n_kv_heads = 4,
     .vocab = 32000, .dense_inter = 2816},
};

/* The layers: MoE unless listed in mlp_only_layers or off the
 * decoder_sparse_step grid. */
static int s_layers(config_t *c, const json_t *root, const char *origin,
                    err_t *err)
{
    int step = 1;
    if (cfgjson_int(root, "decoder_sparse_step", false, true, 1, &step, origin,
                    err) ||
        cfgjson_range("decoder_sparse_step", step, 1, CONFIG_MAX_LAYERS,
                      origin, err))
        return -1;
    for (int l = 0; l < c->n_layers; l++)
        if ((l + 1) % step != 0)
            c->layer_flags[l] |= CONFIG_LAYER_DENSE;
    const json_t *only = json_object_get(root, "mlp_only_layers");
    if (only && !json_is_null(only)) {
        if (!json_is_array(only))
            return err_set(err, EINVAL, "%s: field 'mlp_only_layers' must be a "
                           "list, not %s", origin, cfgjson_type_name(only));
        size_t i;
        const json_t *x;
        json_array_foreach(only, i, x) {
            if (!json_is_integer(x) || json_integer_value(x) < 0 ||
                json_integer_value(x) >= c->n_layers)
                return err_set(err, EINVAL, "%s: field 'mlp_only_layers' entry "
                               "%zu is not a layer index", origin, i);
            c->layer_flags[json_integer_value(x)] |= CONFIG_LAYER_DENSE;
        }
    }
    /* Without layer_types, qwen slides only when use_sliding_window says so,
     * and then from max_window_layers on: not implemented. */
    int has_types = cfgjson_layer_types(c, root, origin, err);
    if (has_types < 0)
        return -1;
    if (!has_types) {
        bool use = false;
        if (cfgjson_bool(root, "use_sliding_window", false, &use, origin, err))
            return -1;
        if (use)
            return err_set(err, EINVAL, "%s: field 'use_sliding_window' = true "
                           "is not supported without 'layer_types'", origin);
    }
    return 0;
}

static int s_parse(config_t *c, const json_t *root, const family_t *f,
                   const char *origin, err_t *err)
{
    if (cfgjson_int(root, "moe_intermediate_size", true, false, 0,
                    &c->intermediate_size, origin, err) ||
        cfgjson_bool(root, "norm_topk_prob", false, &c->norm_topk_prob, origin,
                     err) ||
        s_layers(c, root, origin, err))
        return -1;
    if (f->arch == CONFIG_ARCH_QWEN2_MOE) {
        bool bias = true;
        if (cfgjson_bool(root, "qkv_bias", true, &bias, origin, err) ||
            cfgjson_int(root, "shared_expert_intermediate_size", true, false, 0,
                        &c->shared_intermediate_size, origin, err) ||
            cfgjson_range("shared_expert_intermediate_size",
                          c->shared_intermediate_size, 1, CONFIG_DIM_MAX,
                          origin, err))
            return -1;
        c->qkv_bias = bias;
        c->shared = CONFIG_SHARED_GATED;
        c->n_shared_experts = 1;
        return 0;
    }
    bool bias = false;
    if (cfgjson_bool(root, "attention_bias", false, &bias, origin, err))
        return -1;
    c->qkv_bias = c->o_bias = bias;
    c->qk_norm = CONFIG_QK_NORM_HEAD;
    return 0;
}

static void s_write(json_t *o, const config_t *c, bool *ok)
{
    if (c->arch == CONFIG_ARCH_QWEN2_MOE) {
        cfgjson_put(o, "qkv_bias", json_boolean(c->qkv_bias), ok);
        cfgjson_put(o, "shared_expert_intermediate_size",
                    json_integer(c->shared_intermediate_size), ok);
    } else {
        cfgjson_put(o, "attention_bias", json_boolean(c->qkv_bias), ok);
    }
    cfgjson_put(o, "norm_topk_prob", json_boolean(c->norm_topk_prob), ok);
    cfgjson_put(o, "decoder_sparse_step", json_integer(1), ok);
    cfgjson_put(o, "mlp_only_layers", cfgjson_dense_layers(c), ok);
    cfgjson_put(o, "use_sliding_window", json_false(), ok);
}

static void s_preset_qwen2(config_t *c, const family_preset_t *p)
{
    c->dense_intermediate_size = p->dense_inter;
    c->qkv_bias = true;
    c->shared = CONFIG_SHARED_GATED;
    c->shared_intermediate_size = p->shared_inter;
    c->n_shared_experts = 1;
}

static void s_preset_qwen3(config_t *c, const family_preset_t *p)
{
    c->dense_intermediate_size = p->dense_inter;
    c->norm_topk_prob = true;
    c->qk_norm = CONFIG_QK_NORM_HEAD;
}

/* What the two share. */
#define S_QWEN                                                               \
    .topk_key = "num_experts_per_tok", .moe_inter_key = true,                \
    .default_rope_theta = 1e4, .preset_rope_theta = 1e6, .supported = true, \
    .parse = s_parse, .write = s_write

const family_t family_qwen2_moe = {
    S_QWEN,
    .arch = CONFIG_ARCH_QWEN2_MOE, .model_type = "qwen2_moe",
    .class_name = "Qwen2MoeForCausalLM",
    .experts_keys = {"num_experts"}, .experts_key_out = "num_experts",
    FAM_TABLES(s_qwen2_names, s_roles, s_qwen2_presets), .preset = s_preset_qwen2,
};

/* transformers 5 writes qwen3_moe's expert count as num_local_experts. */
const family_t family_qwen3_moe = {
    S_QWEN,
    .arch = CONFIG_ARCH_QWEN3_MOE, .model_type = "qwen3_moe",
    .class_name = "Qwen3MoeForCausalLM",
    .experts_keys = {"num_experts", "num_local_experts"},
    .experts_key_out = "num_local_experts",
    FAM_TABLES(s_qwen3_names, s_roles, s_qwen3_presets), .preset = s_preset_qwen3,
};
