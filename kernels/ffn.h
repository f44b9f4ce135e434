/* ffn: the element-wise parts of the expert feed-forward networks. */
#ifndef MOE_KERNELS_FFN_H
#define MOE_KERNELS_FFN_H

#include <stddef.h>

/* SwiGLU: h[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)).
 * h may equal gate or up. */
void ffn_swiglu(float *h, const float *gate, const float *up, size_t n);

#endif /* MOE_KERNELS_FFN_H */
