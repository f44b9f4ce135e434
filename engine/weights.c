/* weights: see weights.h. */
#include "engine/weights.h"

#include <errno.h>
#include <stddef.h>

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

/* The weights of one layer outside its routed experts, in load order (the
 * first missing one is the one an error names). */
#define S_AT(field) offsetof(layer_weights_t, field)
static const struct {
    arch_weight_t w;
    size_t at;            /* offset of its pointer in layer_weights_t */
} s_layer_roles[] = {
    {ARCH_W_ATTN_NORM, S_AT(attn_norm)}, {ARCH_W_O, S_AT(o)},
    {ARCH_W_Q_A, S_AT(q_a)}, {ARCH_W_Q_A_NORM, S_AT(q_a_norm)},
    {ARCH_W_Q_B, S_AT(q_b)}, {ARCH_W_Q, S_AT(q)},
    {ARCH_W_KV_A, S_AT(kv_a)}, {ARCH_W_KV_A_NORM, S_AT(kv_a_norm)},
    {ARCH_W_KV_B, S_AT(kv_b)}, {ARCH_W_K, S_AT(k)}, {ARCH_W_V, S_AT(v)},
    {ARCH_W_Q_BIAS, S_AT(q_bias)}, {ARCH_W_K_BIAS, S_AT(k_bias)},
    {ARCH_W_V_BIAS, S_AT(v_bias)}, {ARCH_W_O_BIAS, S_AT(o_bias)},
    {ARCH_W_Q_NORM, S_AT(q_norm)}, {ARCH_W_K_NORM, S_AT(k_norm)},
    {ARCH_W_SINKS, S_AT(sinks)}, {ARCH_W_FFN_NORM, S_AT(ffn_norm)},
    {ARCH_W_DENSE_GATE, S_AT(dense.gate)}, {ARCH_W_DENSE_UP, S_AT(dense.up)},
    {ARCH_W_DENSE_DOWN, S_AT(dense.down)}, {ARCH_W_ROUTER, S_AT(router)},
    {ARCH_W_ROUTER_BIAS, S_AT(router_bias)}, {ARCH_W_SCORE_BIAS, S_AT(score_bias)},
    {ARCH_W_SHARED_GATE, S_AT(shared.gate)}, {ARCH_W_SHARED_UP, S_AT(shared.up)},
    {ARCH_W_SHARED_DOWN, S_AT(shared.down)},
    {ARCH_W_SHARED_EXPERT_GATE, S_AT(shared_gate)},
};
#undef S_AT

/* Layer l's weights that the model has (arch_present(), the rule synth
 * writes by too): attention, norms, router, shared and dense FFNs. */
static int s_load_layer(weights_t *self, int l, err_t *err)
{
    char *lw = (char *)&self->layers[l];
    for (size_t i = 0; i < sizeof s_layer_roles / sizeof s_layer_roles[0]; i++) {
        const arch_weight_t w = s_layer_roles[i].w;
        if (arch_present(&self->cfg, w, l) &&
            s_resolve(self, w, l, 0, (const float **)(lw + s_layer_roles[i].at), err) < 0)
            return -1;
    }
    return 0;
}

static int s_load_dense(weights_t *self, err_t *err)
{
    const int n_layers = self->cfg.n_layers;
    if (s_resolve(self, ARCH_W_EMBED, 0, 0, &self->embed, err) < 0 ||
        s_resolve(self, ARCH_W_FINAL_NORM, 0, 0, &self->final_norm, err) < 0)
        return -1;
    if (!arch_present(&self->cfg, ARCH_W_LM_HEAD, 0))
        self->lm_head = self->embed; /* tied */
    else if (s_resolve(self, ARCH_W_LM_HEAD, 0, 0, &self->lm_head, err) < 0)
        return -1;
    for (int l = 0; l < n_layers; l++)
        if (s_load_layer(self, l, err) < 0)
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
            expert_weights_t *ew = &lw->experts[e];
            if (s_resolve(self, ARCH_W_EXPERT_GATE, l, e, &ew->gate, err) < 0 ||
                s_resolve(self, ARCH_W_EXPERT_UP, l, e, &ew->up, err) < 0 ||
                s_resolve(self, ARCH_W_EXPERT_DOWN, l, e, &ew->down, err) < 0)
                return -1;
        }
    }
    return 0;
}

/* Stacked (gpt_oss) experts' per-expert biases and owned buffers
 * (engine/fused.h). */
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
        if (config_experts_stacked(&self->cfg) &&
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

weights_t *weights_load_all(const char *dir, err_t *err)
{
    const weights_select_t all = {.dense = true, .hosts = weights_hosts_all};
    return weights_load(dir, &all, err);
}

bool weights_has_expert(const weights_t *self, int layer, int expert)
{
    if (layer < 0 || layer >= self->cfg.n_layers || expert < 0 ||
        expert >= self->cfg.n_experts)
        return false;
    return self->layers[layer].experts[expert].gate != NULL;
}
