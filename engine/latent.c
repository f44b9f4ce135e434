/* latent: see latent.h. */
#include "engine/latent.h"

#include <assert.h>
#include <errno.h>
#include <math.h>

#include "core/mem.h"
#include "engine/rotary.h"

struct latent {
    const config_t *cfg;
    int max_rows;
    mla_t *mla;
    rope_t *rope;    /* rotary width rope_dim = qk_rope_head_dim */
    compute_t *cx;   /* the products' context, borrowed */
};

bool latent_applies(const config_t *cfg) { return config_is_mla(cfg); }

/* yarn_get_mscale of transformers' DeepSeek models. */
static double s_mscale(double factor, double k)
{
    return factor <= 1 ? 1.0 : 0.1 * k * log(factor) + 1.0;
}

mla_shape_t latent_shape(const config_t *cfg)
{
    double scale = 1.0 / sqrt((double)(cfg->qk_nope_head_dim + cfg->qk_rope_head_dim));
    if (cfg->rope_type == CONFIG_ROPE_YARN && cfg->rope_mscale_all_dim != 0) {
        double m = s_mscale(cfg->rope_factor, cfg->rope_mscale_all_dim);
        scale *= m * m;
    }
    return (mla_shape_t){
        .hidden = cfg->hidden_size,
        .n_heads = cfg->n_heads,
        .q_lora_rank = cfg->q_lora_rank,
        .kv_lora_rank = cfg->kv_lora_rank,
        .qk_nope_head_dim = cfg->qk_nope_head_dim,
        .qk_rope_head_dim = cfg->qk_rope_head_dim,
        .v_head_dim = cfg->v_head_dim,
        .eps = cfg->rms_norm_eps,
        .scale = (float)scale,
        .rope_interleaved = cfg->rope_interleave,
    };
}

latent_t *latent_new(const config_t *cfg, int max_rows, int max_ctx, compute_t *cx,
                     err_t *err)
{
    assert(cfg && cx);
    if (!config_is_mla(cfg) || max_rows < 1 || max_ctx < 1) {
        err_set(err, EINVAL, "latent attention needs an MLA config (kv_lora_rank %d) "
                "and positive sizes (%d rows, %d positions)", cfg->kv_lora_rank,
                max_rows, max_ctx);
        return NULL;
    }
    latent_t *self = mem_calloc(1, sizeof *self);
    if (!self) {
        err_set(err, ENOMEM, "out of memory for latent attention");
        return NULL;
    }
    self->cfg = cfg;
    self->cx = cx;
    /* One call sees one sequence's rows: never more than its positions. */
    self->max_rows = max_rows < max_ctx ? max_rows : max_ctx;
    mla_shape_t shape = latent_shape(cfg);
    self->rope = rotary_new(cfg, err);
    if (!self->rope)
        goto fail;
    self->mla = mla_new(&shape, self->max_rows, max_ctx, err);
    if (!self->mla)
        goto fail;
    return self;

fail:
    latent_destroy(&self);
    return NULL;
}

void latent_destroy(latent_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    latent_t *self = *self_p;
    int saved = errno;
    mla_destroy(&self->mla);
    rope_destroy(&self->rope);
    mem_free(self);
    *self_p = NULL;
    errno = saved;
}

void latent_run(latent_t *self, const layer_weights_t *lw, float *x, int ldx,
                const float *xn, int n, int pos0, float *cache)
{
    assert(self && lw && x && xn && cache);
    assert(n >= 1 && n <= self->max_rows);
    /* attention_bias models would carry q_a / kv_a biases; the config
     * refuses them, so these stay NULL. */
    const mla_weights_t w = {
        .q_a_proj = &lw->q_a,
        .q_a_norm = lw->q_a_norm,
        .q_b_proj = &lw->q_b,
        .q_proj = self->cfg->q_lora_rank > 0 ? NULL : &lw->q,
        .kv_a_proj = &lw->kv_a,
        .kv_a_norm = lw->kv_a_norm,
        .kv_b_proj = &lw->kv_b,
        .o_proj = &lw->o,
        .o_bias = lw->o_bias,
    };
    mla_run(self->mla, self->cx, x, ldx, true, xn, n, pos0, cache, &w, self->rope);
}
