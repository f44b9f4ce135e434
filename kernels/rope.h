/* rope: rotary position embedding, exactly as Hugging Face's default RoPE
 * ("rotate_half" layout: dimension i pairs with i + rot/2), and its YaRN
 * variant (gpt-oss, deepseek).
 *
 * Default: inv_freq[i] = 1 / theta^(2i / rot) and angle = pos * inv_freq[i],
 * both in float32 as the reference computes them, then cos/sin in float32.
 *
 * YaRN (transformers' _compute_yarn_parameters): each frequency is a blend of
 * the extrapolated one (as above) and the interpolated one (divided by
 * factor), with weight ramping linearly between the correction dims of
 * beta_fast and beta_slow over original_max_position_embeddings; cos and sin
 * are then multiplied by the attention factor. The layout and the rotation are
 * the same as the default, so rope_apply() serves both.
 */
#ifndef MOE_KERNELS_ROPE_H
#define MOE_KERNELS_ROPE_H

#include <stdbool.h>

#include "core/err.h"

typedef struct rope rope_t;

/* YaRN settings, as in a config's rope_parameters (rope_type "yarn"). Zero in
 * an optional field means "not given" and takes transformers' default. */
typedef struct rope_yarn {
    double theta;            /* rope_theta, > 0 */
    double factor;           /* factor, > 0 (used as written, even when
                                max_position_embeddings is smaller than
                                original_max_position_embeddings) */
    double original_max_pos; /* original_max_position_embeddings, > 0 */
    double beta_fast;        /* fast boundary in rotations; 0: 32 */
    double beta_slow;        /* slow boundary in rotations; 0: 1 */
    bool truncate;           /* floor/ceil the correction dims (transformers'
                                default when the key is absent is true) */
    double attention_factor; /* scales cos and sin; 0: from mscale, below */
    double mscale;           /* deepseek: with mscale_all_dim both nonzero,
                                attention factor = m(factor, mscale) /
                                m(factor, mscale_all_dim); otherwise
                                m(factor, 1), m(s, k) = 0.1 k ln s + 1 for
                                s > 1, else 1 */
    double mscale_all_dim;
} rope_yarn_t;

/* rot_dim: rotary width (even, >= 2); theta > 0. NULL + EINVAL/ENOMEM. */
rope_t *rope_new(int rot_dim, double theta, err_t *err);

/* The YaRN variant over rot_dim (even, >= 2; transformers' dim = head_dim *
 * partial_rotary_factor). NULL + EINVAL (a parameter out of range, or not
 * finite) or ENOMEM. */
rope_t *rope_new_yarn(int rot_dim, const rope_yarn_t *yarn, err_t *err);

void rope_destroy(rope_t **self_p);

/* The factor cos and sin are multiplied by (1 for the default RoPE), as
 * float32; and inverse frequency i < rot_dim / 2, for tests and logs. */
float rope_attention_factor(const rope_t *self);
float rope_inv_freq(const rope_t *self, int i);

/* Rotates the first rot_dim entries of every head of every row in place.
 *   x: n_rows rows with row stride ld; each row holds n_heads heads, head h
 *      starting at h * head_stride; pos[r] is row r's position (>= 0). */
void rope_apply(const rope_t *self, float *x, int ld, int n_rows, int n_heads,
                int head_stride, const int *pos);

#endif /* MOE_KERNELS_ROPE_H */
