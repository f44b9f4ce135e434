/* softmax: numerically stable softmax of one row, in place.
 *
 * The row maximum is subtracted before exponentiating so that no finite input
 * overflows; -INFINITY entries (masked scores) give expf(-inf) == 0 exactly.
 * The exponentials are float32 as in the reference, their sum float64.
 *
 * Attention runs this on every score, so each pass is its own loop with
 * independent partial results: a single loop carrying the running sum across
 * the expf call serialises on the adds and spills around the call.
 */
#include "kernels/softmax.h"

#include <assert.h>
#include <math.h>

/* Largest entry of x: (n), n >= 1; NaNs are skipped unless x[0] is one. */
static float s_max(const float *x, int n)
{
    float m[4] = {x[0], x[0], x[0], x[0]};
    int i = 0;
    for (; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; j++)
            m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
    for (; i < n; i++)
        m[0] = x[i] > m[0] ? x[i] : m[0];
    float a = m[0] > m[1] ? m[0] : m[1];
    float b = m[2] > m[3] ? m[2] : m[3];
    return a > b ? a : b;
}

/* Sum of x: (n) in float64, four chains wide. */
static double s_sum(const float *x, int n)
{
    double s[4] = {0.0, 0.0, 0.0, 0.0};
    int i = 0;
    for (; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; j++)
            s[j] += x[i + j];
    for (; i < n; i++)
        s[0] += x[i];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

void softmax(float *x, int n)
{
    assert(x && n >= 1);
    float max = s_max(x, n);
    for (int i = 0; i < n; i++)
        x[i] = expf(x[i] - max);
    /* sum >= 1 when max is finite (softmax.h requires a finite entry and
     * none +inf): the maximum contributes expf(0) == 1. */
    float inv = (float)(1.0 / s_sum(x, n));
    for (int i = 0; i < n; i++)
        x[i] *= inv;
}
