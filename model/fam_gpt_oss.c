/* gpt_oss (GptOssForCausalLM): attention biases and sinks, sliding layers
 * per layer_types, YaRN, a router with a bias (softmax over the top-k
 * logits), clamped SwiGLU experts with biases, stacked per layer: each
 * projection one [E, ...] tensor, gate/up fused and interleaved by column,
 * y = x W + b (engine/fused de-interleaves and transposes one expert). */
#include "model/fam_common.h"

#include <math.h>

static const char *const s_names[ARCH_W_COUNT] = {
    FAM_COMMON_NAMES,
    [ARCH_W_SINKS] = FAM_ATTN "sinks",
    [ARCH_W_ROUTER] = FAM_LAYER "mlp.router.weight",
    [ARCH_W_ROUTER_BIAS] = FAM_LAYER "mlp.router.bias",
    [ARCH_W_EXPERT_GATE] = FAM_LAYER "mlp.experts.gate_up_proj",
    [ARCH_W_EXPERT_UP] = FAM_LAYER "mlp.experts.gate_up_proj_bias",
    [ARCH_W_EXPERT_DOWN] = FAM_LAYER "mlp.experts.down_proj",
    [ARCH_W_EXPERT_DOWN_BIAS] = FAM_LAYER "mlp.experts.down_proj_bias",
};

static const int s_roles[] = {
    ARCH_W_EMBED,
    FAM_ATTN_ROLES,
    ARCH_W_ROUTER, ARCH_W_ROUTER_BIAS,
    ARCH_W_EXPERT_GATE, ARCH_W_EXPERT_UP, ARCH_W_EXPERT_DOWN,
    ARCH_W_EXPERT_DOWN_BIAS,
    ARCH_W_FINAL_NORM, ARCH_W_LM_HEAD,
};

/* Layers alternate sliding (even) and full attention. */
static const family_preset_t s_presets[] = {
    {.name = "tiny", .hidden = 64, .n_layers = 2, .n_experts = 8, .top_k = 2,
     .inter = 48, .n_heads = 4, .n_kv_heads = 2, .vocab = 512, .window = 8},
    {.name = "small", .hidden = 256, .n_layers = 4, .n_experts = 16,
     .top_k = 4, .inter = 128, .n_heads = 8, .n_kv_heads = 2, .vocab = 2048,
     .window = 32},
    {.name = "medium", .hidden = 1024, .n_layers = 8, .n_experts = 32,
     .top_k = 4, .inter = 704, .n_heads = 16, .n_kv_heads = 4,
     .vocab = 32000, .window = 128},
};

static int s_parse(config_t *c, const json_t *root, const family_t *f,
                   const char *origin, err_t *err)
{
    (void)f;
    bool bias = true;
    double limit = 7.0;
    if (cfgjson_bool(root, "attention_bias", true, &bias, origin, err) ||
        cfgjson_number(root, "swiglu_limit", false, 7.0, &limit, origin, err))
        return -1;
    if (!(limit > 0) || !isfinite(limit))
        return err_set(err, EINVAL, "%s: field 'swiglu_limit' = %g must be "
                       "finite and > 0", origin, limit);
    if (cfgjson_layer_types(c, root, origin, err) < 0)
        return -1;
    c->qkv_bias = c->o_bias = bias;
    c->attn_sinks = true;
    c->router_bias = true;
    c->scoring = CONFIG_SCORING_TOPK_SOFTMAX;
    c->expert_act = CONFIG_EXPERT_SWIGLU_OAI;
    c->swiglu_limit = (float)limit;
    return 0;
}

static void s_write(json_t *o, const config_t *c, bool *ok)
{
    cfgjson_put(o, "attention_bias", json_boolean(c->qkv_bias), ok);
    cfgjson_put(o, "sliding_window",
                cfgjson_int_or_null(c->sliding_window, c->sliding_window == 0),
                ok);
    cfgjson_put(o, "layer_types", cfgjson_layer_types_list(c), ok);
    cfgjson_put(o, "swiglu_limit",
                json_real(cfgjson_float_decimal(c->swiglu_limit)), ok);
}

static void s_preset(config_t *c, const family_preset_t *p)
{
    c->qkv_bias = c->o_bias = true;
    c->attn_sinks = true;
    c->router_bias = true;
    c->scoring = CONFIG_SCORING_TOPK_SOFTMAX;
    c->expert_act = CONFIG_EXPERT_SWIGLU_OAI;
    c->swiglu_limit = 7.0f;
    c->sliding_window = p->window;
    for (int l = 0; l < c->n_layers; l += 2)
        c->layer_flags[l] |= CONFIG_LAYER_SLIDING;
    /* gpt-oss's YaRN: 4096 positions stretched 32 times */
    c->rope_type = CONFIG_ROPE_YARN;
    c->rope_factor = 32, c->rope_orig_max_pos = 4096;
    c->rope_beta_fast = 32, c->rope_beta_slow = 1, c->rope_truncate = false;
}

const family_t family_gpt_oss = {
    .arch = CONFIG_ARCH_GPT_OSS, .model_type = "gpt_oss",
    .class_name = "GptOssForCausalLM",
    .experts_keys = {"num_local_experts"}, .experts_key_out = "num_local_experts",
    .topk_key = "num_experts_per_tok",
    .default_rope_theta = 1.5e5, .preset_rope_theta = 1.5e5,
    .supported = true, .yarn = true, .experts_layout = CONFIG_EXPERTS_STACKED,
    FAM_TABLES(s_names, s_roles, s_presets),
    .parse = s_parse, .write = s_write, .preset = s_preset,
};
