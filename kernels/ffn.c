/* ffn: element-wise SwiGLU of the expert feed-forward networks.
 *
 * silu is computed as g / (1 + expf(-g)), the form torch uses: for large
 * negative g, expf overflows to +inf and the result is an exact -0, never NaN.
 * The clamped variant's sigmoid is 1 / (1 + expf(-alpha g)) for the same
 * reason, after the reference's own float32 product alpha * g.
 */
#include "kernels/ffn.h"

#include <assert.h>
#include <math.h>

void ffn_swiglu(float *h, const float *gate, const float *up, size_t n)
{
    assert(n == 0 || (h && gate && up));
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        h[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void ffn_swiglu_clamped(float *h, const float *gate, const float *up, size_t n,
                        float alpha, float limit)
{
    assert(n == 0 || (h && gate && up));
    assert(limit > 0.0f);
    for (size_t i = 0; i < n; i++) {
        /* Comparisons that are false for NaN, so NaN passes as torch's
         * clamp lets it. */
        float g = gate[i] > limit ? limit : gate[i];
        float u = up[i] > limit ? limit : up[i] < -limit ? -limit : up[i];
        float sig = 1.0f / (1.0f + expf(-(g * alpha)));
        h[i] = (u + 1.0f) * (g * sig);
    }
}

void ffn_bias_add(float *y, int ld, const float *bias, int n_rows, int n)
{
    assert(n_rows >= 0 && n >= 0 && ld >= n);
    assert(n_rows == 0 || n == 0 || (y && bias));
    for (int r = 0; r < n_rows; r++) {
        float *yr = y + (size_t)r * ld;
        for (int j = 0; j < n; j++)
            yr[j] += bias[j];
    }
}
