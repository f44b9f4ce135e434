/* mixtral (MixtralForCausalLM): Llama attention, experts as
 * block_sparse_moe.experts.E.w1/w2/w3, softmax top-k always renormalised,
 * every layer sliding when sliding_window is set. */
#include "model/fam_common.h"

static const char *const s_names[ARCH_W_COUNT] = {
    FAM_COMMON_NAMES,
    [ARCH_W_ROUTER] = FAM_LAYER "block_sparse_moe.gate.weight",
    [ARCH_W_EXPERT_GATE] = FAM_LAYER "block_sparse_moe.experts.%d.w1.weight",
    [ARCH_W_EXPERT_UP] = FAM_LAYER "block_sparse_moe.experts.%d.w3.weight",
    [ARCH_W_EXPERT_DOWN] = FAM_LAYER "block_sparse_moe.experts.%d.w2.weight",
};

static const int s_roles[] = {
    ARCH_W_EMBED,
    ARCH_W_ATTN_NORM, ARCH_W_Q, ARCH_W_K, ARCH_W_V, ARCH_W_O, ARCH_W_FFN_NORM,
    ARCH_W_ROUTER,
    ARCH_W_EXPERT_GATE, ARCH_W_EXPERT_DOWN, ARCH_W_EXPERT_UP, /* w1 w2 w3 */
    ARCH_W_FINAL_NORM, ARCH_W_LM_HEAD,
};

/* tiny: fixture-sized; small: a few MB; medium: about 2.6 GB of float32
 * (the benchmark size). */
static const family_preset_t s_presets[] = {
    {.name = "tiny", .hidden = 64, .n_layers = 2, .n_experts = 8, .top_k = 2,
     .inter = 128, .n_heads = 4, .n_kv_heads = 2, .vocab = 512},
    {.name = "small", .hidden = 256, .n_layers = 4, .n_experts = 8, .top_k = 2,
     .inter = 512, .n_heads = 8, .n_kv_heads = 2, .vocab = 2048},
    {.name = "medium", .hidden = 1024, .n_layers = 8, .n_experts = 8,
     .top_k = 2, .inter = 2816, .n_heads = 16, .n_kv_heads = 4,
     .vocab = 32000},
};

static int s_parse(config_t *c, const json_t *root, const family_t *f,
                   const char *origin, err_t *err)
{
    (void)root, (void)f, (void)origin, (void)err;
    c->norm_topk_prob = true;
    for (int l = 0; l < c->n_layers && c->sliding_window > 0; l++)
        c->layer_flags[l] |= CONFIG_LAYER_SLIDING;
    return 0;
}

static void s_write(json_t *o, const config_t *c, bool *ok)
{
    cfgjson_put(o, "sliding_window",
                cfgjson_int_or_null(c->sliding_window, c->sliding_window == 0),
                ok);
    cfgjson_put(o, "router_jitter_noise", json_real(0.0), ok);
}

static void s_preset(config_t *c, const family_preset_t *p)
{
    (void)p;
    c->norm_topk_prob = true;
}

const family_t family_mixtral = {
    .arch = CONFIG_ARCH_MIXTRAL, .model_type = "mixtral",
    .class_name = "MixtralForCausalLM",
    .experts_keys = {"num_local_experts"}, .experts_key_out = "num_local_experts",
    .topk_key = "num_experts_per_tok",
    .default_rope_theta = 1e6, .preset_rope_theta = 1e6,
    .supported = true,
    FAM_TABLES(s_names, s_roles, s_presets),
    .parse = s_parse, .write = s_write, .preset = s_preset,
};
