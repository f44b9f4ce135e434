/* rmsnorm: root-mean-square layer norm, as Hugging Face's LlamaRMSNorm:
 * y = w * x / sqrt(mean(x^2) + eps), the mean accumulated in float32 order-free
 * (we accumulate in float64, then round: at least as exact as the reference). */
#ifndef MOE_KERNELS_RMSNORM_H
#define MOE_KERNELS_RMSNORM_H

/* y, x: (n_rows, dim) with row strides ldy, ldx; w: (dim). y may equal x when ldy == ldx. */
void rmsnorm(float *y, int ldy, const float *x, int ldx, const float *w,
             int n_rows, int dim, float eps);

#endif /* MOE_KERNELS_RMSNORM_H */
