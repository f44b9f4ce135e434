/* rope: rotary position embedding in Hugging Face's default "rotate_half"
 * layout: within a head, dimension i < rot/2 pairs with i + rot/2; default
 * frequencies or YaRN's.
 *
 * Every step is float32 in the reference's order so that results match torch
 * bit for bit where libm agrees: inv_freq = 1 / powf(theta, 2i / rot), angle =
 * (float)pos * inv_freq, then cosf/sinf. The build is ISO C (-std=c11), which
 * keeps GCC from contracting the products and sums below into FMAs.
 *
 * YaRN follows transformers' _compute_yarn_parameters step by step with the
 * same precision per step: the correction range in float64 (Python floats),
 * everything on the frequency vectors in float32 with the Python scalars
 * converted to float32 (torch does so for a tensor-scalar op on CPU).
 */
#include "kernels/rope.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>

#include "core/mem.h"

struct rope {
    int rot_dim;        /* rotary width: the first rot_dim entries of a head */
    float scale;        /* multiplies cos and sin: 1, or YaRN's attention
                           factor */
    float inv_freq[];   /* (rot_dim / 2): 1 / theta^(2i / rot_dim), or YaRN's
                           blend, float32 */
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
    self->scale = 1.0f;
    float base = (float)theta;
    for (int i = 0; i < half; i++) {
        float expo = (float)(2 * i) / (float)rot_dim;
        self->inv_freq[i] = 1.0f / powf(base, expo);
    }
    return self;
}

/* m(s, k) of rope.h: YaRN's attention temperature for a scale s. */
static double s_mscale(double s, double k)
{
    return s <= 1.0 ? 1.0 : 0.1 * k * log(s) + 1.0;
}

/* The dimension (in rot_dim units, fractional) at which a frequency turns
 * n_rot times over max_pos positions. */
static double s_correction_dim(double n_rot, int rot_dim, double base,
                               double max_pos)
{
    return (rot_dim * log(max_pos / (n_rot * 2.0 * M_PI))) /
           (2.0 * log(base));
}

static bool s_positive_finite(double x)
{
    return x > 0.0 && isfinite(x);
}

rope_t *rope_new_yarn(int rot_dim, const rope_yarn_t *yarn, err_t *err)
{
    assert(yarn);
    double beta_fast = yarn->beta_fast != 0.0 ? yarn->beta_fast : 32.0;
    double beta_slow = yarn->beta_slow != 0.0 ? yarn->beta_slow : 1.0;
    if (!s_positive_finite(yarn->factor) ||
        !isfinite((float)yarn->factor) ||
        !s_positive_finite(yarn->original_max_pos) ||
        !s_positive_finite(beta_fast) || !s_positive_finite(beta_slow) ||
        !(yarn->attention_factor >= 0.0) || !isfinite(yarn->attention_factor) ||
        !isfinite(yarn->mscale) || !isfinite(yarn->mscale_all_dim)) {
        err_set(err, EINVAL, "rope: YaRN parameters out of range (factor %g, "
                "original max positions %g, beta fast %g, slow %g, attention "
                "factor %g)", yarn->factor, yarn->original_max_pos, beta_fast,
                beta_slow, yarn->attention_factor);
        return NULL;
    }
    rope_t *self = rope_new(rot_dim, yarn->theta, err);
    if (!self)
        return NULL;

    double attn = yarn->attention_factor;
    if (attn == 0.0) {
        if (yarn->mscale != 0.0 && yarn->mscale_all_dim != 0.0)
            attn = s_mscale(yarn->factor, yarn->mscale) /
                   s_mscale(yarn->factor, yarn->mscale_all_dim);
        else
            attn = s_mscale(yarn->factor, 1.0);
    }
    self->scale = (float)attn;

    /* Correction range [low, high] in pair indices: below low the frequency
     * turns more than beta_fast times over the original context and is kept
     * (extrapolated); above high it turns fewer than beta_slow times and is
     * divided by factor (interpolated); in between the two are blended. */
    double low = s_correction_dim(beta_fast, rot_dim, yarn->theta,
                                  yarn->original_max_pos);
    double high = s_correction_dim(beta_slow, rot_dim, yarn->theta,
                                   yarn->original_max_pos);
    if (yarn->truncate) {
        low = floor(low);
        high = ceil(high);
    }
    if (low < 0.0)
        low = 0.0;
    if (high > rot_dim - 1)
        high = rot_dim - 1;
    if (low == high)
        high += 0.001; /* as transformers: no zero-width ramp */
    const float f_low = (float)low, f_width = (float)(high - low);
    const float factor = (float)yarn->factor, base = (float)yarn->theta;

    for (int i = 0; i < rot_dim / 2; i++) {
        float pos_freq = powf(base, (float)(2 * i) / (float)rot_dim);
        float extra = 1.0f / pos_freq;
        float inter = 1.0f / (factor * pos_freq);
        float ramp = ((float)i - f_low) / f_width;
        ramp = ramp < 0.0f ? 0.0f : ramp > 1.0f ? 1.0f : ramp;
        float extra_w = 1.0f - ramp;
        /* (1 - extra_w) is not ramp in float32; keep the reference's form. */
        self->inv_freq[i] = inter * (1.0f - extra_w) + extra * extra_w;
    }
    return self;
}

float rope_attention_factor(const rope_t *self)
{
    assert(self);
    return self->scale;
}

float rope_inv_freq(const rope_t *self, int i)
{
    assert(self);
    assert(i >= 0 && i < self->rot_dim / 2);
    return self->inv_freq[i];
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
            float c = cosf(angle) * self->scale;
            float s = sinf(angle) * self->scale;
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
