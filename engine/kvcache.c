/* kvcache: see kvcache.h. One allocation holds all layers' keys then values
 * (latent mode: all layers' latent rows). */
#include "engine/kvcache.h"

#include <assert.h>
#include <errno.h>
#include <stdint.h>

#include "core/mem.h"

struct kvcache {
    int n_layers;
    int capacity;    /* positions per layer */
    int row_width;   /* kv_heads * head_dim; latent: kv_lora_rank + rope */
    int n_planes;    /* 2 (keys, values), or 1 in latent mode */
    int len;         /* positions held */
    float *data;     /* [n_planes][n_layers][capacity][row_width] */
};

/* Latent mode for MLA configs: the row is kernels/mla.h's mla_cache_width(). */
static bool s_latent(const config_t *cfg) { return config_is_mla(cfg); }

static int s_row_width(const config_t *cfg)
{
    return s_latent(cfg) ? cfg->kv_lora_rank + cfg->qk_rope_head_dim
                         : cfg->n_kv_heads * cfg->head_dim;
}

size_t kvcache_position_bytes(const config_t *cfg)
{
    return (s_latent(cfg) ? 1 : 2) * (size_t)cfg->n_layers * (size_t)s_row_width(cfg) *
           sizeof(float);
}

kvcache_t *kvcache_new(const config_t *cfg, int capacity, err_t *err)
{
    if (capacity < 1) {
        err_set(err, EINVAL, "KV cache capacity must be at least 1 (got %d)", capacity);
        return NULL;
    }
    kvcache_t *self = mem_calloc(1, sizeof *self);
    if (!self) {
        err_set(err, ENOMEM, "out of memory for a KV cache");
        return NULL;
    }
    self->n_layers = cfg->n_layers;
    self->capacity = capacity;
    self->row_width = s_row_width(cfg);
    self->n_planes = s_latent(cfg) ? 1 : 2;
    size_t floats = (size_t)self->n_planes * (size_t)self->n_layers * (size_t)capacity * (size_t)self->row_width;
    self->data = mem_alloc_aligned(floats * sizeof(float));
    if (!self->data) {
        err_set(err, ENOMEM, "out of memory for a KV cache of %zu bytes (%d positions)",
                floats * sizeof(float), capacity);
        mem_free(self);
        return NULL;
    }
    return self;
}

void kvcache_destroy(kvcache_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    mem_free((*self_p)->data);
    mem_free(*self_p);
    *self_p = NULL;
}

int kvcache_len(const kvcache_t *self) { return self->len; }
int kvcache_capacity(const kvcache_t *self) { return self->capacity; }
int kvcache_row_width(const kvcache_t *self) { return self->row_width; }

bool kvcache_is_latent(const kvcache_t *self) { return self->n_planes == 1; }

size_t kvcache_bytes(const kvcache_t *self)
{
    return (size_t)self->n_planes * (size_t)self->n_layers * (size_t)self->capacity *
           (size_t)self->row_width * sizeof(float);
}

float *kvcache_keys(kvcache_t *self, int layer)
{
    assert(self->n_planes == 2);
    return self->data + (size_t)layer * self->capacity * self->row_width;
}

float *kvcache_values(kvcache_t *self, int layer)
{
    assert(self->n_planes == 2);
    return self->data +
           (size_t)(self->n_layers + layer) * self->capacity * self->row_width;
}

float *kvcache_latent(kvcache_t *self, int layer)
{
    assert(self->n_planes == 1);
    return self->data + (size_t)layer * self->capacity * self->row_width;
}

int kvcache_advance(kvcache_t *self, int n, err_t *err)
{
    if (n < 0 || n > self->capacity - self->len)
        return err_set(err, ENOSPC,
                       "sequence of %d positions does not fit its KV cache of %d",
                       self->len + n, self->capacity);
    self->len += n;
    return 0;
}

void kvcache_truncate(kvcache_t *self, int len)
{
    if (len >= 0 && len < self->len)
        self->len = len;
}
