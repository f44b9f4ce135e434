/* softmax: numerically stable softmax over a row (max subtracted first). */
#ifndef MOE_KERNELS_SOFTMAX_H
#define MOE_KERNELS_SOFTMAX_H

/* In place over x[0..n). Entries equal to -INFINITY become exactly 0; n >= 1
 * and at least one finite entry; a +INFINITY or NaN
 * entry makes the row NaN (the caller's bug, not a case to handle). */
void softmax(float *x, int n);

#endif /* MOE_KERNELS_SOFTMAX_H */
