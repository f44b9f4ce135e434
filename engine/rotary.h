/* rotary: a model's RoPE from its config, the one set-up both attention kinds
 * use (engine/forward for plain attention, engine/latent for MLA).
 *
 * The rotary width is config rope_dim (head_dim, or MLA's qk_rope_head_dim);
 * plain RoPE, or YaRN with the config's rope_parameters when rope_type is
 * yarn (kernels/rope.h has the math).
 */
#ifndef MOE_ENGINE_ROTARY_H
#define MOE_ENGINE_ROTARY_H

#include "core/err.h"
#include "kernels/rope.h"
#include "model/config.h"

/* NULL with EINVAL (a parameter out of range) or ENOMEM. Caller destroys
 * with rope_destroy(). */
rope_t *rotary_new(const config_t *cfg, err_t *err);

#endif /* MOE_ENGINE_ROTARY_H */
