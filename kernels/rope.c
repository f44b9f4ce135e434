/* rope: rotary position embedding in Hugging Face's default "rotate_half"
 * layout: within a head, dimension i < rot/2 pairs with i + rot/2.
 *
 * Every step is float32 in the reference's order so that results match torch
 * bit for bit where libm agrees: inv_freq = 1 / powf(theta, 2i / rot), angle =
 * (float)pos * inv_freq, then cosf/sinf. The build is ISO C (-std=c11), which
 * keeps GCC from contracting the products and sums below into FMAs.
 */
#include "kernels/rope.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>

#include "core/mem.h"

struct rope {
    int rot_dim;        /* rotary width: the first rot_dim entries of a head */
    float inv_freq[];   /* (rot_dim / 2): 1 / theta^(2i / rot_dim), float32 */
};

rope_t *rope_new(int rot_dim, double theta, err_t *err)
{
    if (rot_dim < 2 || rot_dim % 2 != 0) {
        err_set(err, EINVAL, "rope: rotary width %d is not even and >= 2",
                rot_dim);
        return NULL;
    }
    /* theta is converted to float32, as torch does with the Python scalar. */
    if (!(theta > 0.0) || !isfinite((float)theta)) {
        err_set(err, EINVAL, "rope: theta %g is not a positive finite float",
                theta);
        return NULL;
    }
    int half = rot_dim / 2;
    rope_t *self = mem_alloc(sizeof *self + (size_t)half * sizeof(float));
    if (!self) {
        err_set(err, ENOMEM, "rope: out of memory for %d frequencies", half);
        return NULL;
    }
    self->rot_dim = rot_dim;
    float base = (float)theta;
    for (int i = 0; i < half; i++) {
        float expo = (float)(2 * i) / (float)rot_dim;
        self->inv_freq[i] = 1.0f / powf(base, expo);
    }
    return self;
}

void rope_destroy(rope_t **self_p)
{
    assert(self_p);
    mem_free(*self_p);
    *self_p = NULL;
}

void rope_apply(const rope_t *self, float *x, int ld, int n_rows, int n_heads,
                int head_stride, const int *pos)
{
    assert(self);
    assert(n_rows == 0 || (x && pos));
    assert(n_rows >= 0 && n_heads >= 0);
    assert(n_heads <= 1 || head_stride >= self->rot_dim);
    int half = self->rot_dim / 2;
    for (int r = 0; r < n_rows; r++) {
        assert(pos[r] >= 0);
        float p = (float)pos[r];
        float *xr = x + (size_t)r * ld; /* (n_heads * head_stride) */
        /* One cos/sin per frequency serves every head of the row. */
        for (int i = 0; i < half; i++) {
            float angle = p * self->inv_freq[i];
            float c = cosf(angle);
            float s = sinf(angle);
            for (int h = 0; h < n_heads; h++) {
                float *xh = xr + (size_t)h * head_stride; /* (rot_dim) */
                float x1 = xh[i];
                float x2 = xh[i + half];
                xh[i] = x1 * c - x2 * s;
                xh[i + half] = x2 * c + x1 * s;
            }
        }
    }
}
