/* weights: see weights.h. */
#include "engine/weights.h"

#include <errno.h>

#include "core/mem.h"
#include "engine/fused.h"
#include "model/arch.h"

/* Resolves one weight by role into *dst, checking its shape. */
static int s_resolve(weights_t *self, arch_weight_t w, int layer, int expert,
                     const float **dst, err_t *err)
{
    arch_tensor_t t;
    if (arch_tensor(&self->cfg, w, layer, expert, &t, err) < 0)
        return -1;
    *dst = safetensors_f32(self->st, t.name, t.slice, t.ndim, t.shape, err);
    return *dst ? 0 : -1;
}

/* Resolves one SwiGLU FFN's three matrices. */
static int s_resolve_ffn(weights_t *self, arch_weight_t gate, int layer, int expert,
                         expert_weights_t *ffn, err_t *err)
{
    /* gate, up, down are consecutive roles in arch_weight_t */
    if (s_resolve(self, gate, layer, expert, &ffn->gate, err) < 0 ||
        s_resolve(self, gate + 1, layer, expert, &ffn->up, err) < 0 ||
        s_resolve(self, gate + 2, layer, expert, &ffn->down, err) < 0)
        return -1;
    return 0;
}

/* The attention weights of layer l: plain (q/k/v/o with optional biases and
 * q/k norms) or MLA. */
static int s_load_attention(weights_t *self, int l, err_t *err)
{
    const config_t *cfg = &self->cfg;
    layer_weights_t *lw = &self->layers[l];
    if (s_resolve(self, ARCH_W_ATTN_NORM, l, 0, &lw->attn_norm, err) < 0 ||
        s_resolve(self, ARCH_W_O, l, 0, &lw->o, err) < 0)
        return -1;
    if (cfg->kv_lora_rank > 0) {
        if (cfg->q_lora_rank > 0) {
            if (s_resolve(self, ARCH_W_Q_A, l, 0, &lw->q_a, err) < 0 ||
                s_resolve(self, ARCH_W_Q_A_NORM, l, 0, &lw->q_a_norm, err) < 0 ||
                s_resolve(self, ARCH_W_Q_B, l, 0, &lw->q_b, err) < 0)
                return -1;
        } else if (s_resolve(self, ARCH_W_Q, l, 0, &lw->q, err) < 0) {
            return -1;
        }
        if (s_resolve(self, ARCH_W_KV_A, l, 0, &lw->kv_a, err) < 0 ||
            s_resolve(self, ARCH_W_KV_A_NORM, l, 0, &lw->kv_a_norm, err) < 0 ||
            s_resolve(self, ARCH_W_KV_B, l, 0, &lw->kv_b, err) < 0)
            return -1;
    } else if (s_resolve(self, ARCH_W_Q, l, 0, &lw->q, err) < 0 ||
               s_resolve(self, ARCH_W_K, l, 0, &lw->k, err) < 0 ||
               s_resolve(self, ARCH_W_V, l, 0, &lw->v, err) < 0) {
        return -1;
    }
    if (cfg->qkv_bias &&
        (s_resolve(self, ARCH_W_Q_BIAS, l, 0, &lw->q_bias, err) < 0 ||
         s_resolve(self, ARCH_W_K_BIAS, l, 0, &lw->k_bias, err) < 0 ||
         s_resolve(self, ARCH_W_V_BIAS, l, 0, &lw->v_bias, err) < 0))
        return -1;
    if (cfg->o_bias && s_resolve(self, ARCH_W_O_BIAS, l, 0, &lw->o_bias, err) < 0)
        return -1;
    if (cfg->qk_norm != CONFIG_QK_NORM_NONE &&
        (s_resolve(self, ARCH_W_Q_NORM, l, 0, &lw->q_norm, err) < 0 ||
         s_resolve(self, ARCH_W_K_NORM, l, 0, &lw->k_norm, err) < 0))
        return -1;
    if (cfg->attn_sinks && s_resolve(self, ARCH_W_SINKS, l, 0, &lw->sinks, err) < 0)
        return -1;
    return 0;
}

/* The FFN side of layer l that runs beside the experts: the router and the
 * shared expert of a MoE layer, or a dense layer's FFN. */
static int s_load_ffn_side(weights_t *self, int l, err_t *err)
{
    const config_t *cfg = &self->cfg;
    layer_weights_t *lw = &self->layers[l];
    if (s_resolve(self, ARCH_W_FFN_NORM, l, 0, &lw->ffn_norm, err) < 0)
        return -1;
    if (!config_layer_is_moe(cfg, l))
        return s_resolve_ffn(self, ARCH_W_DENSE_GATE, l, 0, &lw->dense, err);
    if (s_resolve(self, ARCH_W_ROUTER, l, 0, &lw->router, err) < 0)
        return -1;
    if (cfg->router_bias &&
        s_resolve(self, ARCH_W_ROUTER_BIAS, l, 0, &lw->router_bias, err) < 0)
        return -1;
    if (cfg->topk_method == CONFIG_TOPK_NOAUX_TC &&
        s_resolve(self, ARCH_W_SCORE_BIAS, l, 0, &lw->score_bias, err) < 0)
        return -1;
    if (cfg->shared != CONFIG_SHARED_NONE &&
        s_resolve_ffn(self, ARCH_W_SHARED_GATE, l, 0, &lw->shared, err) < 0)
        return -1;
    if (cfg->shared == CONFIG_SHARED_GATED &&
        s_resolve(self, ARCH_W_SHARED_EXPERT_GATE, l, 0, &lw->shared_gate, err) < 0)
        return -1;
    return 0;
}

static int s_load_dense(weights_t *self, err_t *err)
{
    const int n_layers = self->cfg.n_layers;
    if (s_resolve(self, ARCH_W_EMBED, 0, 0, &self->embed, err) < 0 ||
        s_resolve(self, ARCH_W_FINAL_NORM, 0, 0, &self->final_norm, err) < 0)
        return -1;
    if (self->cfg.tie_word_embeddings)
        self->lm_head = self->embed;
    else if (s_resolve(self, ARCH_W_LM_HEAD, 0, 0, &self->lm_head, err) < 0)
        return -1;
    for (int l = 0; l < n_layers; l++)
        if (s_load_attention(self, l, err) < 0 || s_load_ffn_side(self, l, err) < 0)
            return -1;
    self->has_dense = true;
    return 0;
}

static int s_load_experts(weights_t *self, weights_hosts_fn hosts, void *ctx, err_t *err)
{
    for (int l = 0; l < self->cfg.n_layers; l++) {
        if (!config_layer_is_moe(&self->cfg, l))
            continue; /* a dense layer has no experts to host */
        for (int e = 0; e < self->cfg.n_experts; e++) {
            if (!hosts(ctx, l, e))
                continue;
            layer_weights_t *lw = &self->layers[l];
            if (lw->expert_owned) {
                if (fused_load(self->st, &self->cfg, l, e, &lw->experts[e],
                               &lw->expert_biases[e], &lw->expert_owned[e], err) < 0)
                    return -1;
                continue;
            }
            if (s_resolve_ffn(self, ARCH_W_EXPERT_GATE, l, e, &self->layers[l].experts[e],
                              err) < 0)
                return -1;
        }
    }
    return 0;
}

/* gpt_oss's per-expert biases and owned buffers (engine/fused.h). */
static int s_alloc_fused(layer_weights_t *lw, int n_experts)
{
    lw->expert_biases = mem_calloc((size_t)n_experts, sizeof *lw->expert_biases);
    lw->expert_owned = mem_calloc((size_t)n_experts, sizeof *lw->expert_owned);
    return lw->expert_biases && lw->expert_owned ? 0 : -1;
}

weights_t *weights_load(const char *dir, const weights_select_t *select, err_t *err)
{
    weights_t *self = mem_calloc(1, sizeof *self);
    if (!self) {
        err_set(err, ENOMEM, "out of memory loading %s", dir);
        return NULL;
    }
    if (config_load(&self->cfg, dir, err) < 0)
        goto fail;
    self->layers = mem_calloc((size_t)self->cfg.n_layers, sizeof *self->layers);
    if (!self->layers) {
        err_set(err, ENOMEM, "out of memory loading %s", dir);
        goto fail;
    }
    for (int l = 0; l < self->cfg.n_layers; l++) {
        self->layers[l].experts =
            mem_calloc((size_t)self->cfg.n_experts, sizeof(expert_weights_t));
        if (!self->layers[l].experts) {
            err_set(err, ENOMEM, "out of memory loading %s", dir);
            goto fail;
        }
        if (self->cfg.expert_act == CONFIG_EXPERT_SWIGLU_OAI &&
            s_alloc_fused(&self->layers[l], self->cfg.n_experts) < 0) {
            err_set(err, ENOMEM, "out of memory loading %s", dir);
            goto fail;
        }
    }
    self->st = safetensors_open(dir, err);
    if (!self->st)
        goto fail;
    if (select->dense && s_load_dense(self, err) < 0)
        goto fail;
    if (select->hosts && s_load_experts(self, select->hosts, select->hosts_ctx, err) < 0)
        goto fail;
    return self;

fail:
    weights_destroy(&self);
    return NULL;
}

void weights_destroy(weights_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    weights_t *self = *self_p;
    int saved = errno;
    if (self->layers)
        for (int l = 0; l < self->cfg.n_layers; l++) {
            layer_weights_t *lw = &self->layers[l];
            mem_free(lw->experts);
            mem_free(lw->expert_biases);
            if (lw->expert_owned)
                for (int e = 0; e < self->cfg.n_experts; e++)
                    mem_free(lw->expert_owned[e]);
            mem_free(lw->expert_owned);
        }
    mem_free(self->layers);
    safetensors_destroy(&self->st);
    mem_free(self);
    *self_p = NULL;
    errno = saved;
}

bool weights_hosts_all(void *ctx, int layer, int expert)
{
    (void)ctx, (void)layer, (void)expert;
    return true;
}

bool weights_has_expert(const weights_t *self, int layer, int expert)
{
    if (layer < 0 || layer >= self->cfg.n_layers || expert < 0 ||
        expert >= self->cfg.n_experts)
        return false;
    return self->layers[layer].experts[expert].gate != NULL;
}
