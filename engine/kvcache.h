/* kvcache: the keys and values of one sequence, every layer, every position
 * seen so far.
 *
 * Sized once for a capacity of positions, so that decoding never allocates.
 * Per layer, keys are (capacity, kv_heads * head_dim) and values
 * (capacity, kv_heads * head_dim), row-major: the rows of positions
 * 0 .. len-1 hold data.
 *
 * Latent mode, chosen when the config has multi-head latent attention
 * (DeepSeek, config_is_mla()): per layer one plane of (capacity,
 * kv_lora_rank + qk_rope_head_dim) rows [c_kv | k_pe] (kernels/mla.h), and no
 * values; keys and values are then never expanded per head.
 */
#ifndef MOE_ENGINE_KVCACHE_H
#define MOE_ENGINE_KVCACHE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"
#include "model/config.h"

typedef struct kvcache kvcache_t;

/* NULL with EINVAL (capacity < 1) or ENOMEM (err names the bytes wanted). */
kvcache_t *kvcache_new(const config_t *cfg, int capacity, err_t *err);
void kvcache_destroy(kvcache_t **self_p);

int kvcache_len(const kvcache_t *self);        /* positions held */
int kvcache_capacity(const kvcache_t *self);
int kvcache_row_width(const kvcache_t *self);  /* floats per key (and value) row;
                                                  latent mode: per latent row */
size_t kvcache_bytes(const kvcache_t *self);   /* memory held */
bool kvcache_is_latent(const kvcache_t *self);

/* Bytes one position takes over all layers in a cache for cfg (what
 * kvcache_bytes() grows by per position of capacity): 2 * n_layers *
 * kv_heads * head_dim * 4, or in latent mode n_layers * (kv_lora_rank +
 * qk_rope_head_dim) * 4. For schedulers that budget memory before they
 * make a cache. */
size_t kvcache_position_bytes(const config_t *cfg);

/* Layer l's key or value rows, row 0 = position 0 (borrowed). Not in latent
 * mode (asserted). */
float *kvcache_keys(kvcache_t *self, int layer);
float *kvcache_values(kvcache_t *self, int layer);

/* Layer l's latent rows [c_kv | k_pe], row 0 = position 0 (borrowed). Latent
 * mode only (asserted). */
float *kvcache_latent(kvcache_t *self, int layer);

/* Marks n more positions as held, after the caller wrote their rows in every
 * layer. -1 with ENOSPC when that would pass the capacity. */
int kvcache_advance(kvcache_t *self, int n, err_t *err);

/* Forgets the positions from len on (len <= kvcache_len): 0 empties the
 * cache for the next sequence, keeping its memory. */
void kvcache_truncate(kvcache_t *self, int len);

#endif /* MOE_ENGINE_KVCACHE_H */
