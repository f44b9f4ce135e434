/* rope: rotary position embedding, exactly as Hugging Face's default RoPE
 * ("rotate_half" layout: dimension i pairs with i + rot/2).
 *
 * inv_freq[i] = 1 / theta^(2i / rot) and angle = pos * inv_freq[i], both in
 * float32 as the reference computes them, then cos/sin in float32.
 */
#ifndef MOE_KERNELS_ROPE_H
#define MOE_KERNELS_ROPE_H

#include "core/err.h"

typedef struct rope rope_t;

/* rot_dim: rotary width (even, >= 2); theta > 0. NULL + EINVAL/ENOMEM. */
rope_t *rope_new(int rot_dim, double theta, err_t *err);
void rope_destroy(rope_t **self_p);

/* Rotates the first rot_dim entries of every head of every row in place.
 *   x: n_rows rows with row stride ld; each row holds n_heads heads, head h
 *      starting at h * head_stride; pos[r] is row r's position (>= 0). */
void rope_apply(const rope_t *self, float *x, int ld, int n_rows, int n_heads,
                int head_stride, const int *pos);

#endif /* MOE_KERNELS_ROPE_H */
