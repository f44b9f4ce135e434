/* ffn: element-wise SwiGLU of the expert feed-forward networks.
 *
 * silu is computed as g / (1 + expf(-g)), the form torch uses: for large
 * negative g, expf overflows to +inf and the result is an exact -0, never NaN.
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
