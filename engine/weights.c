/* weights: see weights.h. */
#include "engine/weights.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/mem.h"
#include "core/progress.h"
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

/* ---- preload ---------------------------------------------------------------- */

/* One loaded view: fn(ctx, data, bytes). */
typedef void (*s_view_fn)(void *ctx, const float *data, size_t n_bytes);

/* Calls fn for the view of weight w (layer l, expert e) at data, when loaded. */
static void s_view(const weights_t *self, arch_weight_t w, int l, int e, const float *data,
                   s_view_fn fn, void *ctx)
{
    arch_tensor_t t;
    if (!data || arch_tensor(&self->cfg, w, l, e, &t, NULL) < 0)
        return;
    size_t n = sizeof(float);
    for (int d = 0; d < t.ndim; d++)
        n *= (size_t)t.shape[d];
    fn(ctx, data, n);
}

/* Calls fn for every view weights_load resolved (the gpt_oss experts it
 * converted live in owned buffers, resident already, and are left out). */
static void s_each_view(const weights_t *self, s_view_fn fn, void *ctx)
{
    s_view(self, ARCH_W_EMBED, 0, 0, self->embed, fn, ctx);
    s_view(self, ARCH_W_FINAL_NORM, 0, 0, self->final_norm, fn, ctx);
    if (self->lm_head != self->embed)
        s_view(self, ARCH_W_LM_HEAD, 0, 0, self->lm_head, fn, ctx);
    for (int l = 0; l < self->cfg.n_layers; l++) {
        const layer_weights_t *lw = &self->layers[l];
        for (size_t i = 0; i < sizeof s_layer_roles / sizeof s_layer_roles[0]; i++)
            s_view(self, s_layer_roles[i].w, l, 0,
                   *(const float *const *)((const char *)lw + s_layer_roles[i].at), fn, ctx);
        if (lw->expert_owned)
            continue;
        for (int e = 0; e < self->cfg.n_experts; e++) {
            const expert_weights_t *ew = &lw->experts[e];
            s_view(self, ARCH_W_EXPERT_GATE, l, e, ew->gate, fn, ctx);
            s_view(self, ARCH_W_EXPERT_UP, l, e, ew->up, fn, ctx);
            s_view(self, ARCH_W_EXPERT_DOWN, l, e, ew->down, fn, ctx);
        }
    }
}

static void s_count_view(void *ctx, const float *data, size_t n_bytes)
{
    (void)data;
    *(uint64_t *)ctx += n_bytes;
}

typedef struct s_reader {
    progress_t progress;
    size_t page;
    unsigned char sum;   /* what was read, so that the reads are not optimized away */
} s_reader_t;

/* Reads one byte of every page of the view, asking the kernel to read the
 * span ahead first (a hint: its failure only costs speed). */
static void s_read_view(void *ctx, const float *data, size_t n_bytes)
{
    s_reader_t *r = ctx;
    const uintptr_t start = (uintptr_t)data & ~(uintptr_t)(r->page - 1);
    (void)madvise((void *)start, (uintptr_t)data + n_bytes - start, MADV_WILLNEED);
    const volatile unsigned char *bytes = (const volatile unsigned char *)data;
    const size_t chunk = (size_t)16 << 20;  /* a progress step */
    for (size_t at = 0; at < n_bytes; at += chunk) {
        const size_t end = n_bytes - at < chunk ? n_bytes : at + chunk;
        for (size_t i = at; i < end; i += r->page)
            r->sum ^= bytes[i];
        r->sum ^= bytes[end - 1];
        progress_add(&r->progress, end - at);
    }
}

uint64_t weights_preload(const weights_t *self, FILE *log, const char *name)
{
    uint64_t total = 0;
    s_each_view(self, s_count_view, &total);
    s_reader_t r = {.page = (size_t)sysconf(_SC_PAGESIZE)};
    progress_init(&r.progress, log, name, "reading weights", total);
    s_each_view(self, s_read_view, &r);
    progress_fini(&r.progress);
    return r.progress.done;
}
