/* olmoe (OlmoeForCausalLM): q/k RMSNorm over the whole projections before
 * RoPE; softmax top-k with norm_topk_prob; no sliding window. */
#include "model/fam_common.h"

static const char *const s_names[ARCH_W_COUNT] = {
    FAM_COMMON_NAMES, FAM_MLP_EXPERTS,
    [ARCH_W_ROUTER] = FAM_LAYER "mlp.gate.weight",
    [ARCH_W_Q_NORM] = FAM_ATTN "q_norm.weight",
    [ARCH_W_K_NORM] = FAM_ATTN "k_norm.weight",
};

static const int s_roles[] = {FAM_LLAMA_MOE_ROLES};

static const family_preset_t s_presets[] = {
    {.name = "tiny", .hidden = 64, .n_layers = 2, .n_experts = 16, .top_k = 4,
     .inter = 32, .n_heads = 4, .n_kv_heads = 2, .vocab = 512},
    {.name = "small", .hidden = 256, .n_layers = 4, .n_experts = 32,
     .top_k = 8, .inter = 128, .n_heads = 8, .n_kv_heads = 8, .vocab = 2048},
    {.name = "medium", .hidden = 1024, .n_layers = 8, .n_experts = 64,
     .top_k = 8, .inter = 352, .n_heads = 16, .n_kv_heads = 16,
     .vocab = 32000},
};

static int s_parse(config_t *c, const json_t *root, const family_t *f,
                   const char *origin, err_t *err)
{
    (void)f;
    bool bias = false;
    if (cfgjson_bool(root, "attention_bias", false, &bias, origin, err) ||
        cfgjson_bool(root, "norm_topk_prob", false, &c->norm_topk_prob, origin,
                     err) ||
        cfgjson_refuse(root, "clip_qkv", "q/k/v clamping is not implemented",
                       origin, err))
        return -1;
    c->qkv_bias = c->o_bias = bias;
    c->qk_norm = CONFIG_QK_NORM_FULL;
    c->sliding_window = 0;
    return 0;
}

static void s_write(json_t *o, const config_t *c, bool *ok)
{
    cfgjson_put(o, "attention_bias", json_boolean(c->qkv_bias), ok);
    cfgjson_put(o, "norm_topk_prob", json_boolean(c->norm_topk_prob), ok);
    cfgjson_put(o, "clip_qkv", json_null(), ok);
}

static void s_preset(config_t *c, const family_preset_t *p)
{
    (void)p;
    c->qk_norm = CONFIG_QK_NORM_FULL;
}

const family_t family_olmoe = {
    .arch = CONFIG_ARCH_OLMOE, .model_type = "olmoe",
    .class_name = "OlmoeForCausalLM",
    .experts_keys = {"num_experts"}, .experts_key_out = "num_experts",
    .topk_key = "num_experts_per_tok",
    .default_rope_theta = 1e4, .preset_rope_theta = 1e4,
    .supported = true,
    FAM_TABLES(s_names, s_roles, s_presets),
    .parse = s_parse, .write = s_write, .preset = s_preset,
};
