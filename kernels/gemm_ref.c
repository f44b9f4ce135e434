/* gemm_ref: the oracle for gemm.h, plain loops with float64 accumulation.
 *
 * Slow on purpose: no blocking, no reordering, each sum in double and rounded
 * once, so its error is far below any float32 gemm's and tests can hold the
 * fast path to it. Not used on the hot path.
 */
#include "kernels/gemm.h"

#include <assert.h>
#include <stddef.h>

void gemm_ref(float *c, int ldc, const float *a, int lda, const float *b,
              int ldb, int m, int n, int k, bool b_trans, float alpha,
              float beta)
{
    assert(m >= 0 && n >= 0 && k >= 0);
    for (int i = 0; i < m; i++) {
        const float *ai = a + (size_t)i * lda; /* (k) */
        float *ci = c + (size_t)i * ldc;       /* (n) */
        for (int j = 0; j < n; j++) {
            double sum = 0.0;
            for (int p = 0; p < k; p++) {
                float bpj = b_trans ? b[(size_t)j * ldb + p]
                                    : b[(size_t)p * ldb + j];
                sum += (double)ai[p] * (double)bpj;
            }
            double r = (double)alpha * sum;
            /* beta == 0 must not read C: it may hold garbage, even NaN. */
            if (beta != 0.0f)
                r += (double)beta * (double)ci[j];
            ci[j] = (float)r;
        }
    }
}
