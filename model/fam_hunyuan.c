/* hunyuan_v1_moe (HunYuanMoEV1ForCausalLM): Llama attention with per-head
 * q/k RMSNorm after RoPE; softmax top-k always renormalised; a shared MLP of
 * intermediate_size. num_experts and moe_topk may be per-layer lists (equal
 * entries only). The original Tencent options that change the math are
 * refused. */
#include "model/fam_common.h"

static const char *const s_names[ARCH_W_COUNT] = {
    FAM_COMMON_NAMES, FAM_MLP_EXPERTS,
    [ARCH_W_ROUTER] = FAM_LAYER "mlp.gate.wg.weight",
    [ARCH_W_Q_NORM] = FAM_ATTN "query_layernorm.weight",
    [ARCH_W_K_NORM] = FAM_ATTN "key_layernorm.weight",
    [ARCH_W_SHARED_GATE] = FAM_LAYER "mlp.shared_mlp.gate_proj.weight",
    [ARCH_W_SHARED_UP] = FAM_LAYER "mlp.shared_mlp.up_proj.weight",
    [ARCH_W_SHARED_DOWN] = FAM_LAYER "mlp.shared_mlp.down_proj.weight",
};

static const int s_roles[] = {FAM_LLAMA_MOE_ROLES};

static const family_preset_t s_presets[] = {
    {.name = "tiny", .hidden = 64, .n_layers = 2, .n_experts = 8, .top_k = 2,
     .inter = 48, .n_heads = 4, .n_kv_heads = 2, .vocab = 512},
    {.name = "small", .hidden = 256, .n_layers = 4, .n_experts = 16,
     .top_k = 2, .inter = 256, .n_heads = 8, .n_kv_heads = 2, .vocab = 2048},
    {.name = "medium", .hidden = 1024, .n_layers = 8, .n_experts = 16,
     .top_k = 2, .inter = 1408, .n_heads = 16, .n_kv_heads = 4,
     .vocab = 32000},
};

static int s_parse(config_t *c, const json_t *root, const family_t *f,
                   const char *origin, err_t *err)
{
    (void)f;
    bool bias = false, qk = true, mixed = true;
    int n_shared = 1;
    if (cfgjson_bool(root, "attention_bias", false, &bias, origin, err) ||
        cfgjson_refuse(root, "use_cla", "cross-layer attention is not "
                       "implemented", origin, err) ||
        cfgjson_bool(root, "use_qk_norm", true, &qk, origin, err) ||
        cfgjson_bool(root, "use_mixed_mlp_moe", true, &mixed, origin, err) ||
        (json_object_get(root, "num_shared_expert") &&
         cfgjson_uniform_int(root, "num_shared_expert", &n_shared, origin,
                             err)))
        return -1;
    if (!qk)
        return err_set(err, EINVAL, "%s: field 'use_qk_norm' = false is not "
                       "supported", origin);
    if (!mixed)
        return err_set(err, EINVAL, "%s: field 'use_mixed_mlp_moe' = false is "
                       "not supported", origin);
    if (n_shared != 1)
        return err_set(err, EINVAL, "%s: field 'num_shared_expert' = %d is not "
                       "supported (supported: 1)", origin, n_shared);
    c->qkv_bias = c->o_bias = bias;
    c->qk_norm = CONFIG_QK_NORM_HEAD_POST;
    c->norm_topk_prob = true;
    c->shared = CONFIG_SHARED_PLAIN;
    c->shared_intermediate_size = c->dense_intermediate_size;
    c->n_shared_experts = 1;
    c->sliding_window = 0;
    return 0;
}

static void s_write(json_t *o, const config_t *c, bool *ok)
{
    cfgjson_put(o, "attention_bias", json_boolean(c->qkv_bias), ok);
    cfgjson_put(o, "use_qk_norm", json_true(), ok);
    cfgjson_put(o, "use_mixed_mlp_moe", json_true(), ok);
}

static void s_preset(config_t *c, const family_preset_t *p)
{
    c->norm_topk_prob = true;
    c->qk_norm = CONFIG_QK_NORM_HEAD_POST;
    c->shared = CONFIG_SHARED_PLAIN;
    c->shared_intermediate_size = p->inter;
    c->n_shared_experts = 1;
}

const family_t family_hunyuan_v1_moe = {
    .arch = CONFIG_ARCH_HUNYUAN_V1_MOE, .model_type = "hunyuan_v1_moe",
    .class_name = "HunYuanMoEV1ForCausalLM",
    .experts_keys = {"num_experts"}, .experts_key_out = "num_experts",
    .topk_key = "moe_topk", .layer_lists = true,
    .default_rope_theta = 1e4, .preset_rope_theta = 1e4,
    .supported = true,
    FAM_TABLES(s_names, s_roles, s_presets),
    .parse = s_parse, .write = s_write, .preset = s_preset,
};
