/* deepseek_v2 and deepseek_v3 (DeepseekV2ForCausalLM, DeepseekV3ForCausalLM):
 * MLA (q_proj when q_lora_rank is 0, else q_a/q_b), first_k_dense_replace
 * dense layers, shared experts, grouped routing with a routed scaling
 * factor; v3 adds sigmoid scoring with e_score_correction_bias (noaux_tc). */
#include "model/fam_common.h"

#include <math.h>

#define S_NAMES                                                              \
    FAM_BASE_NAMES,                                                          \
    [ARCH_W_Q_A] = FAM_ATTN "q_a_proj.weight",                               \
    [ARCH_W_Q_A_NORM] = FAM_ATTN "q_a_layernorm.weight",                     \
    [ARCH_W_Q_B] = FAM_ATTN "q_b_proj.weight",                               \
    [ARCH_W_KV_A] = FAM_ATTN "kv_a_proj_with_mqa.weight",                    \
    [ARCH_W_KV_A_NORM] = FAM_ATTN "kv_a_layernorm.weight",                   \
    [ARCH_W_KV_B] = FAM_ATTN "kv_b_proj.weight",                             \
    [ARCH_W_ROUTER] = FAM_LAYER "mlp.gate.weight",                           \
    [ARCH_W_SHARED_GATE] = FAM_LAYER "mlp.shared_experts.gate_proj.weight",  \
    [ARCH_W_SHARED_UP] = FAM_LAYER "mlp.shared_experts.up_proj.weight",      \
    [ARCH_W_SHARED_DOWN] = FAM_LAYER "mlp.shared_experts.down_proj.weight",  \
    FAM_MLP_EXPERTS, FAM_MLP_DENSE

static const char *const s_v2_names[ARCH_W_COUNT] = {S_NAMES};

static const char *const s_v3_names[ARCH_W_COUNT] = {
    S_NAMES,
    [ARCH_W_SCORE_BIAS] = FAM_LAYER "mlp.gate.e_score_correction_bias",
};

static const int s_roles[] = {
    ARCH_W_EMBED,
    ARCH_W_ATTN_NORM, ARCH_W_Q, ARCH_W_Q_A, ARCH_W_Q_A_NORM, ARCH_W_Q_B,
    ARCH_W_KV_A, ARCH_W_KV_A_NORM, ARCH_W_KV_B, ARCH_W_O, ARCH_W_FFN_NORM,
    ARCH_W_DENSE_GATE, ARCH_W_DENSE_UP, ARCH_W_DENSE_DOWN,
    ARCH_W_ROUTER, ARCH_W_SCORE_BIAS,
    ARCH_W_EXPERT_GATE, ARCH_W_EXPERT_UP, ARCH_W_EXPERT_DOWN,
    ARCH_W_SHARED_GATE, ARCH_W_SHARED_UP, ARCH_W_SHARED_DOWN,
    ARCH_W_FINAL_NORM, ARCH_W_LM_HEAD,
};

/* Groups of experts such that the top-k usually spans more groups than
 * topk_group keeps, so the group limit changes choices. */
static const family_preset_t s_v2_presets[] = {
    {.name = "tiny", .hidden = 64, .n_layers = 3, .n_experts = 16, .top_k = 4,
     .inter = 24, .n_heads = 4, .n_kv_heads = 4, .vocab = 512,
     .dense_inter = 96, .n_shared = 2, .first_dense = 1, .n_group = 4,
     .topk_group = 2, .kv_lora = 24, .nope = 16, .rope = 8, .v_head = 16},
    {.name = "small", .hidden = 256, .n_layers = 4, .n_experts = 32,
     .top_k = 6, .inter = 128, .n_heads = 8, .n_kv_heads = 8, .vocab = 2048,
     .dense_inter = 1024, .n_shared = 2, .first_dense = 1, .n_group = 8,
     .topk_group = 3, .kv_lora = 64, .nope = 32, .rope = 16, .v_head = 32},
    {.name = "medium", .hidden = 1024, .n_layers = 8, .n_experts = 64,
     .top_k = 6, .inter = 352, .n_heads = 16, .n_kv_heads = 16,
     .vocab = 32000, .dense_inter = 2816, .n_shared = 2, .first_dense = 1,
     .n_group = 8, .topk_group = 3, .kv_lora = 256, .nope = 64, .rope = 32,
     .v_head = 64},
};

static const family_preset_t s_v3_presets[] = {
    {.name = "tiny", .hidden = 64, .n_layers = 3, .n_experts = 16, .top_k = 4,
     .inter = 24, .n_heads = 4, .n_kv_heads = 4, .vocab = 512,
     .dense_inter = 96, .n_shared = 1, .first_dense = 1, .n_group = 4,
     .topk_group = 2, .q_lora = 32, .kv_lora = 24, .nope = 16, .rope = 8,
     .v_head = 16},
    {.name = "small", .hidden = 256, .n_layers = 4, .n_experts = 32,
     .top_k = 8, .inter = 128, .n_heads = 8, .n_kv_heads = 8, .vocab = 2048,
     .dense_inter = 1024, .n_shared = 1, .first_dense = 1, .n_group = 8,
     .topk_group = 4, .q_lora = 96, .kv_lora = 64, .nope = 32, .rope = 16,
     .v_head = 32},
    {.name = "medium", .hidden = 1024, .n_layers = 8, .n_experts = 64,
     .top_k = 8, .inter = 352, .n_heads = 16, .n_kv_heads = 16,
     .vocab = 32000, .dense_inter = 2816, .n_shared = 1, .first_dense = 1,
     .n_group = 8, .topk_group = 4, .q_lora = 384, .kv_lora = 256,
     .nope = 64, .rope = 32, .v_head = 64},
};

static int s_parse(config_t *c, const json_t *root, const family_t *f,
                   const char *origin, err_t *err)
{
    const bool v3 = f->arch == CONFIG_ARCH_DEEPSEEK_V3;
    bool bias = false;
    double scale = 1;
    if (cfgjson_int(root, "moe_intermediate_size", true, false, 0,
                  &c->intermediate_size, origin, err) ||
        cfgjson_int(root, "n_shared_experts", false, true, 0,
                  &c->n_shared_experts, origin, err) ||
        cfgjson_range("n_shared_experts", c->n_shared_experts, 0, 64, origin,
                      err) ||
        cfgjson_int(root, "first_k_dense_replace", false, true, 0,
                  &c->first_k_dense, origin, err) ||
        cfgjson_range("first_k_dense_replace", c->first_k_dense, 0, c->n_layers,
                      origin, err) ||
        cfgjson_int(root, "n_group", false, true, 1, &c->n_group, origin, err) ||
        cfgjson_int(root, "topk_group", false, true, 1, &c->topk_group, origin,
                  err) ||
        cfgjson_range("n_group", c->n_group, 1, c->n_experts, origin, err) ||
        cfgjson_range("topk_group", c->topk_group, 1, c->n_group, origin,
                      err) ||
        cfgjson_number(root, "routed_scaling_factor", false, 1, &scale, origin,
                     err) ||
        cfgjson_bool(root, "norm_topk_prob", false, &c->norm_topk_prob, origin,
                   err) ||
        cfgjson_bool(root, "attention_bias", false, &bias, origin, err) ||
        cfgjson_require_int(root, "moe_layer_freq", 1, origin, err) ||
        cfgjson_int(root, "q_lora_rank", false, true, 0, &c->q_lora_rank, origin,
                  err) ||
        cfgjson_int(root, "kv_lora_rank", true, false, 0, &c->kv_lora_rank,
                  origin, err) ||
        cfgjson_int(root, "qk_nope_head_dim", true, false, 0,
                  &c->qk_nope_head_dim, origin, err) ||
        cfgjson_int(root, "qk_rope_head_dim", true, false, 0,
                  &c->qk_rope_head_dim, origin, err) ||
        cfgjson_int(root, "v_head_dim", true, false, 0, &c->v_head_dim, origin,
                  err) ||
        cfgjson_range("q_lora_rank", c->q_lora_rank, 0, CONFIG_DIM_MAX, origin,
                      err) ||
        cfgjson_range("kv_lora_rank", c->kv_lora_rank, 1, CONFIG_DIM_MAX, origin,
                      err) ||
        cfgjson_range("qk_nope_head_dim", c->qk_nope_head_dim, 0, CONFIG_DIM_MAX,
                      origin, err) ||
        cfgjson_range("qk_rope_head_dim", c->qk_rope_head_dim, 2, CONFIG_DIM_MAX,
                      origin, err) ||
        cfgjson_range("v_head_dim", c->v_head_dim, 1, CONFIG_DIM_MAX, origin, err))
        return -1;
    if (c->n_experts % c->n_group != 0)
        return err_set(err, EINVAL, "%s: n_group = %d does not divide "
                       "n_routed_experts = %d", origin, c->n_group, c->n_experts);
    if (c->qk_rope_head_dim % 2 != 0)
        return err_set(err, EINVAL, "%s: qk_rope_head_dim = %d must be even",
                       origin, c->qk_rope_head_dim);
    if (!(scale > 0) || !isfinite(scale))
        return err_set(err, EINVAL, "%s: field 'routed_scaling_factor' = %g "
                       "must be finite and > 0", origin, scale);
    c->routed_scaling_factor = (float)scale;
    c->qkv_bias = c->o_bias = bias;
    c->sliding_window = 0;

    int scoring = v3 ? CONFIG_SCORING_SIGMOID : CONFIG_SCORING_SOFTMAX;
    int method = v3 ? CONFIG_TOPK_NOAUX_TC : CONFIG_TOPK_GREEDY;
    static const char *const v2_methods[] = {"greedy", "group_limited_greedy"};
    static const int v2_values[] = {CONFIG_TOPK_GREEDY,
                                    CONFIG_TOPK_GROUP_LIMITED};
    static const char *const v3_methods[] = {"noaux_tc"};
    static const int v3_values[] = {CONFIG_TOPK_NOAUX_TC};
    static const char *const softmax_name[] = {"softmax"};
    static const char *const sigmoid_name[] = {"sigmoid"};
    static const int softmax_value[] = {CONFIG_SCORING_SOFTMAX};
    static const int sigmoid_value[] = {CONFIG_SCORING_SIGMOID};
    if (cfgjson_choice(root, "topk_method", v3 ? v3_methods : v2_methods,
                     v3 ? v3_values : v2_values, v3 ? 1 : 2, method, &method,
                     origin, err) ||
        cfgjson_choice(root, "scoring_func", v3 ? sigmoid_name : softmax_name,
                     v3 ? sigmoid_value : softmax_value, 1, scoring, &scoring,
                     origin, err))
        return -1;
    c->topk_method = (config_topk_method_t)method;
    c->scoring = (config_scoring_t)scoring;
    /* The grouped routers' preconditions (engine/router.h: at most 64
     * groups; k experts must fit the kept groups; V3 ranks a group by the sum
     * of its two best). */
    const int group_size = c->n_experts / c->n_group;
    if (c->n_group > 64)
        return err_set(err, EINVAL, "%s: n_group = %d is above 64", origin,
                       c->n_group);
    if (c->topk_method != CONFIG_TOPK_GREEDY &&
        c->n_experts_per_tok > c->topk_group * group_size)
        return err_set(err, EINVAL, "%s: num_experts_per_tok = %d exceeds the "
                       "%d experts of topk_group = %d groups", origin,
                       c->n_experts_per_tok, c->topk_group * group_size,
                       c->topk_group);
    if (v3 && group_size < 2)
        return err_set(err, EINVAL, "%s: deepseek_v3 needs at least 2 experts "
                       "per group (n_routed_experts %d, n_group %d)", origin,
                       c->n_experts, c->n_group);
    /* HF DeepseekV2 rotates with complex pairs; V3 as rope_interleave says. */
    bool interleave = true;
    if (v3 && cfgjson_bool(root, "rope_interleave", true, &interleave, origin,
                         err))
        return -1;
    c->rope_interleave = interleave;
    c->shared = c->n_shared_experts > 0 ? CONFIG_SHARED_PLAIN
                                        : CONFIG_SHARED_NONE;
    c->shared_intermediate_size = c->n_shared_experts * c->intermediate_size;
    for (int l = 0; l < c->first_k_dense; l++)
        c->layer_flags[l] |= CONFIG_LAYER_DENSE;
    return 0;
}

static void s_write(json_t *o, const config_t *c, bool *ok)
{
    const bool v3 = c->arch == CONFIG_ARCH_DEEPSEEK_V3;
    cfgjson_put(o, "attention_bias", json_boolean(c->qkv_bias), ok);
    cfgjson_put(o, "n_shared_experts", json_integer(c->n_shared_experts), ok);
    cfgjson_put(o, "first_k_dense_replace", json_integer(c->first_k_dense), ok);
    cfgjson_put(o, "n_group", json_integer(c->n_group), ok);
    cfgjson_put(o, "topk_group", json_integer(c->topk_group), ok);
    cfgjson_put(o, "routed_scaling_factor",
                json_real(cfgjson_float_decimal(c->routed_scaling_factor)), ok);
    cfgjson_put(o, "norm_topk_prob", json_boolean(c->norm_topk_prob), ok);
    cfgjson_put(o, "q_lora_rank",
                cfgjson_int_or_null(c->q_lora_rank, c->q_lora_rank == 0), ok);
    cfgjson_put(o, "kv_lora_rank", json_integer(c->kv_lora_rank), ok);
    cfgjson_put(o, "qk_nope_head_dim", json_integer(c->qk_nope_head_dim), ok);
    cfgjson_put(o, "qk_rope_head_dim", json_integer(c->qk_rope_head_dim), ok);
    cfgjson_put(o, "qk_head_dim",
                json_integer(c->qk_nope_head_dim + c->qk_rope_head_dim), ok);
    cfgjson_put(o, "v_head_dim", json_integer(c->v_head_dim), ok);
    cfgjson_put(o, "topk_method",
                json_string(v3 ? "noaux_tc"
                            : c->topk_method == CONFIG_TOPK_GROUP_LIMITED
                                ? "group_limited_greedy"
                                : "greedy"),
                ok);
    cfgjson_put(o, "scoring_func", json_string(v3 ? "sigmoid" : "softmax"), ok);
    if (v3)
        cfgjson_put(o, "rope_interleave", json_boolean(c->rope_interleave), ok);
}

static void s_preset(config_t *c, const family_preset_t *p)
{
    const bool v3 = c->arch == CONFIG_ARCH_DEEPSEEK_V3;
    c->dense_intermediate_size = p->dense_inter;
    /* transformers' DeepseekV3Config sets head_dim = qk_rope_head_dim; the
     * math reads rope_dim and the MLA widths, never head_dim. */
    c->head_dim = p->rope;
    c->q_lora_rank = p->q_lora;
    c->kv_lora_rank = p->kv_lora;
    c->qk_nope_head_dim = p->nope;
    c->qk_rope_head_dim = p->rope;
    c->v_head_dim = p->v_head;
    c->rope_interleave = true;
    c->scoring = v3 ? CONFIG_SCORING_SIGMOID : CONFIG_SCORING_SOFTMAX;
    c->topk_method = v3 ? CONFIG_TOPK_NOAUX_TC : CONFIG_TOPK_GROUP_LIMITED;
    c->norm_topk_prob = v3;
    c->n_group = p->n_group;
    c->topk_group = p->topk_group;
    c->routed_scaling_factor = v3 ? 2.5f : 1.5f;
    c->shared = CONFIG_SHARED_PLAIN;
    c->n_shared_experts = p->n_shared;
    c->shared_intermediate_size = p->n_shared * p->inter;
    c->first_k_dense = p->first_dense;
    for (int l = 0; l < p->first_dense; l++)
        c->layer_flags[l] |= CONFIG_LAYER_DENSE;
}

/* What the two share. */
#define S_DEEPSEEK                                                           \
    .experts_keys = {"n_routed_experts"}, .experts_key_out = "n_routed_experts", \
    .topk_key = "num_experts_per_tok", .moe_inter_key = true,                \
    .default_rope_theta = 1e4, .preset_rope_theta = 1e4, .supported = true, \
    .yarn = true, .attn = CONFIG_ATTN_MLA, .parse = s_parse,                 \
    .write = s_write,                                                        \
    .preset = s_preset

const family_t family_deepseek_v2 = {
    S_DEEPSEEK,
    .arch = CONFIG_ARCH_DEEPSEEK_V2, .model_type = "deepseek_v2",
    .class_name = "DeepseekV2ForCausalLM",
    FAM_TABLES(s_v2_names, s_roles, s_v2_presets),
};

const family_t family_deepseek_v3 = {
    S_DEEPSEEK,
    .arch = CONFIG_ARCH_DEEPSEEK_V3, .model_type = "deepseek_v3",
    .class_name = "DeepseekV3ForCausalLM",
    FAM_TABLES(s_v3_names, s_roles, s_v3_presets),
};
