/* arch: see arch.h. One naming table per architecture; shapes come from the
 * config because they are the same function of it in every architecture
 * supported so far. */
#include "model/arch.h"

#include <errno.h>
#include <stdio.h>

/* printf formats of tensor names; a per-layer format takes the layer, a
 * per-expert format takes the layer then the expert. */
typedef struct arch_names {
    config_arch_t arch;
    const char *fmt[ARCH_W_COUNT];
} arch_names_t;

static const arch_names_t s_mixtral = {
    .arch = CONFIG_ARCH_MIXTRAL,
    .fmt = {
        [ARCH_W_EMBED] = "model.embed_tokens.weight",
        [ARCH_W_LM_HEAD] = "lm_head.weight",
        [ARCH_W_FINAL_NORM] = "model.norm.weight",
        [ARCH_W_ATTN_NORM] = "model.layers.%d.input_layernorm.weight",
        [ARCH_W_FFN_NORM] = "model.layers.%d.post_attention_layernorm.weight",
        [ARCH_W_Q] = "model.layers.%d.self_attn.q_proj.weight",
        [ARCH_W_K] = "model.layers.%d.self_attn.k_proj.weight",
        [ARCH_W_V] = "model.layers.%d.self_attn.v_proj.weight",
        [ARCH_W_O] = "model.layers.%d.self_attn.o_proj.weight",
        [ARCH_W_ROUTER] = "model.layers.%d.block_sparse_moe.gate.weight",
        [ARCH_W_EXPERT_GATE] = "model.layers.%d.block_sparse_moe.experts.%d.w1.weight",
        [ARCH_W_EXPERT_UP] = "model.layers.%d.block_sparse_moe.experts.%d.w3.weight",
        [ARCH_W_EXPERT_DOWN] = "model.layers.%d.block_sparse_moe.experts.%d.w2.weight",
    },
};

static const char *const s_role_names[ARCH_W_COUNT] = {
    [ARCH_W_EMBED] = "embed_tokens", [ARCH_W_LM_HEAD] = "lm_head",
    [ARCH_W_FINAL_NORM] = "norm", [ARCH_W_ATTN_NORM] = "input_layernorm",
    [ARCH_W_FFN_NORM] = "post_attention_layernorm", [ARCH_W_Q] = "q_proj",
    [ARCH_W_K] = "k_proj", [ARCH_W_V] = "v_proj", [ARCH_W_O] = "o_proj",
    [ARCH_W_ROUTER] = "router", [ARCH_W_EXPERT_GATE] = "expert gate_proj",
    [ARCH_W_EXPERT_UP] = "expert up_proj", [ARCH_W_EXPERT_DOWN] = "expert down_proj",
};

const char *arch_weight_name(arch_weight_t w)
{
    return (w >= 0 && w < ARCH_W_COUNT) ? s_role_names[w] : "unknown weight";
}

static const arch_names_t *s_names_of(config_arch_t arch)
{
    return arch == CONFIG_ARCH_MIXTRAL ? &s_mixtral : NULL;
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

    switch (w) {
    case ARCH_W_EMBED:
    case ARCH_W_LM_HEAD:
        shape[0] = cfg->vocab_size, shape[1] = hidden;
        return 2;
    case ARCH_W_FINAL_NORM:
    case ARCH_W_ATTN_NORM:
    case ARCH_W_FFN_NORM:
        shape[0] = hidden;
        return 1;
    case ARCH_W_Q:
        shape[0] = q_width, shape[1] = hidden;
        return 2;
    case ARCH_W_K:
    case ARCH_W_V:
        shape[0] = kv_width, shape[1] = hidden;
        return 2;
    case ARCH_W_O:
        shape[0] = hidden, shape[1] = q_width;
        return 2;
    case ARCH_W_ROUTER:
        shape[0] = cfg->n_experts, shape[1] = hidden;
        return 2;
    case ARCH_W_EXPERT_GATE:
    case ARCH_W_EXPERT_UP:
        shape[0] = inter, shape[1] = hidden;
        return 2;
    case ARCH_W_EXPERT_DOWN:
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

    int n;
    if (s_is_per_expert(w))
        n = snprintf(out->name, sizeof out->name, names->fmt[w], layer, expert);
    else if (s_is_per_layer(w))
        n = snprintf(out->name, sizeof out->name, names->fmt[w], layer);
    else
        n = snprintf(out->name, sizeof out->name, "%s", names->fmt[w]);
    if (n < 0 || (size_t)n >= sizeof out->name)
        return err_set(err, EINVAL, "tensor name too long for %s", arch_weight_name(w));
    out->slice = -1;
    out->ndim = s_shape(cfg, w, out->shape);
    return 0;
}
