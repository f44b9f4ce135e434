/* rotary: see rotary.h. */
#include "engine/rotary.h"

rope_t *rotary_new(const config_t *cfg, err_t *err)
{
    if (cfg->rope_type != CONFIG_ROPE_YARN)
        return rope_new(cfg->rope_dim, cfg->rope_theta, err);
    const rope_yarn_t yarn = {
        .theta = cfg->rope_theta,
        .factor = cfg->rope_factor,
        .original_max_pos = cfg->rope_orig_max_pos,
        .beta_fast = cfg->rope_beta_fast,
        .beta_slow = cfg->rope_beta_slow,
        .truncate = cfg->rope_truncate,
        .attention_factor = cfg->rope_attention_factor,
        .mscale = cfg->rope_mscale,
        .mscale_all_dim = cfg->rope_mscale_all_dim,
    };
    return rope_new_yarn(cfg->rope_dim, &yarn, err);
}
