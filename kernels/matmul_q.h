/* matmul_q: matmul() (kernels/matmul.h) for weights in ggml's Q8_0 and Q4_0
 * blocks (core/tensor.h), y = x W^T.
 *
 * This first version (kfloat's) decodes the blocks to float32 and computes
 * on the exact decoded values with float32 products, batch-invariant; the
 * fast int8 kernels replace it.
 */
#ifndef MOE_KERNELS_MATMUL_Q_H
#define MOE_KERNELS_MATMUL_Q_H

#include "core/tensor.h"
#include "kernels/compute.h"

/* y: (m, w->rows) with row stride ldy; x: (m, w->cols) with stride ldx;
 * w->dtype DTYPE_Q8_0 (resp. DTYPE_Q4_0). Cannot fail. */
void matmul_q8_0(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                 const tensor_t *w, int m);
void matmul_q4_0(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                 const tensor_t *w, int m);

#endif /* MOE_KERNELS_MATMUL_Q_H */
