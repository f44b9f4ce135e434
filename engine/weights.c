/* weights: see weights.h. */
#include "engine/weights.h"

#include <errno.h>

#include "core/mem.h"
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
    for (int l = 0; l < n_layers; l++) {
        layer_weights_t *lw = &self->layers[l];
        if (s_resolve(self, ARCH_W_ATTN_NORM, l, 0, &lw->attn_norm, err) < 0 ||
            s_resolve(self, ARCH_W_Q, l, 0, &lw->q, err) < 0 ||
            s_resolve(self, ARCH_W_K, l, 0, &lw->k, err) < 0 ||
            s_resolve(self, ARCH_W_V, l, 0, &lw->v, err) < 0 ||
            s_resolve(self, ARCH_W_O, l, 0, &lw->o, err) < 0 ||
            s_resolve(self, ARCH_W_FFN_NORM, l, 0, &lw->ffn_norm, err) < 0 ||
            s_resolve(self, ARCH_W_ROUTER, l, 0, &lw->router, err) < 0)
            return -1;
    }
    self->has_dense = true;
    return 0;
}

static int s_load_experts(weights_t *self, weights_hosts_fn hosts, void *ctx, err_t *err)
{
    for (int l = 0; l < self->cfg.n_layers; l++) {
        for (int e = 0; e < self->cfg.n_experts; e++) {
            if (!hosts(ctx, l, e))
                continue;
            expert_weights_t *ew = &self->layers[l].experts[e];
            if (s_resolve(self, ARCH_W_EXPERT_GATE, l, e, &ew->gate, err) < 0 ||
                s_resolve(self, ARCH_W_EXPERT_UP, l, e, &ew->up, err) < 0 ||
                s_resolve(self, ARCH_W_EXPERT_DOWN, l, e, &ew->down, err) < 0)
                return -1;
        }
    }
    return 0;
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
        for (int l = 0; l < self->cfg.n_layers; l++)
            mem_free(self->layers[l].experts);
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
