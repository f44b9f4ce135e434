/* quant: ggml's Q8_0 and Q4_0 block quantizers, bit-identical to ggml's
 * reference ones (quantize_row_q8_0_ref, quantize_row_q4_0_ref), so that the
 * blocks we make are the blocks a GGUF file holds (core/tensor.h gives the
 * layouts).
 *
 * (A first portable version by kfloat so the tensor module links; kquant
 * owns this module and replaces it.)
 */
#ifndef MOE_CORE_QUANT_H
#define MOE_CORE_QUANT_H

#include <stdint.h>

/* The n values of x (n a multiple of 32) as n / 32 block_q8_0 (34 bytes
 * each) into dst. */
void quant_row_q8_0(const float *x, void *dst, int64_t n);

/* The same as n / 32 block_q4_0 (18 bytes each). */
void quant_row_q4_0(const float *x, void *dst, int64_t n);

#endif /* MOE_CORE_QUANT_H */
