/* qknorm: see qknorm.h. */
#include "engine/qknorm.h"

#include <assert.h>

#include "kernels/rmsnorm.h"

void qknorm_apply(const config_t *cfg, qknorm_stage_t stage, const layer_weights_t *lw,
                  float *q, float *k, int n_rows)
{
    const int hd = cfg->head_dim;
    const int q_width = cfg->n_heads * hd, kv_width = cfg->n_kv_heads * hd;
    const float eps = cfg->rms_norm_eps;
    switch (cfg->qk_norm) {
    case CONFIG_QK_NORM_NONE:
        return;
    case CONFIG_QK_NORM_HEAD:
    case CONFIG_QK_NORM_HEAD_POST: {
        const qknorm_stage_t at =
            cfg->qk_norm == CONFIG_QK_NORM_HEAD ? QKNORM_BEFORE_ROPE : QKNORM_AFTER_ROPE;
        if (stage != at)
            return;
        assert(lw->q_norm && lw->k_norm);
        /* Rows are dense, so the heads of all rows are n_rows * heads rows of
         * head_dim. */
        rmsnorm(q, hd, q, hd, lw->q_norm, n_rows * cfg->n_heads, hd, eps);
        rmsnorm(k, hd, k, hd, lw->k_norm, n_rows * cfg->n_kv_heads, hd, eps);
        return;
    }
    case CONFIG_QK_NORM_FULL:
        if (stage != QKNORM_BEFORE_ROPE)
            return;
        assert(lw->q_norm && lw->k_norm);
        rmsnorm(q, q_width, q, q_width, lw->q_norm, n_rows, q_width, eps);
        rmsnorm(k, kv_width, k, kv_width, lw->k_norm, n_rows, kv_width, eps);
        return;
    }
}
