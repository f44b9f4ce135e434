/* matmul_q: the portable Q8_0 / Q4_0 products, on the decoded weights
 * through matmul_generic() (correct and batch-invariant, not fast). */
#include "kernels/matmul_q.h"

#include <assert.h>

#include "kernels/matmul_private.h"

void matmul_q8_0(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                 const tensor_t *w, int m)
{
    assert(w->dtype == DTYPE_Q8_0);
    matmul_generic(cx, y, ldy, x, ldx, w, m);
}

void matmul_q4_0(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                 const tensor_t *w, int m)
{
    assert(w->dtype == DTYPE_Q4_0);
    matmul_generic(cx, y, ldy, x, ldx, w, m);
}
