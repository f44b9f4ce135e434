/* latent: a DeepSeek layer's multi-head latent attention (MLA), wired to a
 * config, its layer weights and a latent KV cache.
 *
 * The math is kernels/mla.h's (absorbed form, one cache row [c_kv | k_pe] per
 * position); this module derives its shape from the config, builds the RoPE
 * (engine/rotary, over rope_dim = qk_rope_head_dim) and maps a layer's
 * weights onto it. The forward pass calls it in place of the per-head
 * attention when config_is_mla().
 *
 * Scale: 1 / sqrt(qk_nope_head_dim + qk_rope_head_dim); with YaRN RoPE and a
 * nonzero mscale_all_dim, times mscale^2 where mscale = 0.1 * mscale_all_dim
 * * ln(factor) + 1 (1 when factor <= 1), as Hugging Face's
 * DeepseekV2Attention / DeepseekV3Attention set self.scaling. The YaRN cos/sin
 * factor itself (mscale / mscale_all_dim) is kernels/rope's.
 */
#ifndef MOE_ENGINE_LATENT_H
#define MOE_ENGINE_LATENT_H

#include <stdbool.h>

#include "core/err.h"
#include "engine/weights.h"
#include "kernels/mla.h"

typedef struct latent latent_t;

/* True when cfg's attention is MLA: config_is_mla(), the one test, under
 * this module's name for its tests. */
bool latent_applies(const config_t *cfg);

/* The kernel shape of cfg's MLA, scale included (see above). */
mla_shape_t latent_shape(const config_t *cfg);

/* Scratch for up to max_rows new rows of one sequence per call over up to
 * max_ctx positions. NULL with EINVAL (cfg is not MLA, a bad shape, sizes
 * below 1) or ENOMEM. cfg and cx (the products' context) are borrowed and
 * must outlive the latent_t. */
latent_t *latent_new(const config_t *cfg, int max_rows, int max_ctx, compute_t *cx,
                     err_t *err);
void latent_destroy(latent_t **self_p);

/* x[r] += attention output of rows at positions pos0 .. pos0+n-1 of one
 * sequence, for r < n.
 *   x:     (n, hidden) residual rows, row stride ldx;
 *   xn:    (n, hidden) dense, the input_layernorm'd rows;
 *   cache: the sequence's latent rows of this layer (kvcache_latent()); rows
 *          pos0 .. pos0+n-1 are written here.
 * 1 <= n <= max_rows and pos0 + n <= max_ctx (asserted). Does not allocate. */
void latent_run(latent_t *self, const layer_weights_t *lw, float *x, int ldx,
                const float *xn, int n, int pos0, float *cache);

#endif /* MOE_ENGINE_LATENT_H */
