/* rmsnorm: root-mean-square norm of rows, as Hugging Face's LlamaRMSNorm.
 *
 * The sum of squares is accumulated in float64 and the reciprocal root rounded
 * to float32 once; the products then follow the reference's float32 order,
 * (x * r) first and the weight last.
 */
#include "kernels/rmsnorm.h"

#include <assert.h>
#include <math.h>
#include <stddef.h>

void rmsnorm(float *y, int ldy, const float *x, int ldx, const float *w,
             int n_rows, int dim, float eps)
{
    assert(y && x && w);
    assert(n_rows >= 0 && dim >= 1);
    assert(ldy >= dim && ldx >= dim);
    for (int r = 0; r < n_rows; r++) {
        const float *xr = x + (size_t)r * ldx; /* (dim) */
        float *yr = y + (size_t)r * ldy;       /* (dim), may alias xr */
        double ss = 0.0;
        for (int i = 0; i < dim; i++)
            ss += (double)xr[i] * (double)xr[i];
        float inv = (float)(1.0 / sqrt(ss / dim + (double)eps));
        for (int i = 0; i < dim; i++)
            yr[i] = w[i] * (xr[i] * inv);
    }
}
