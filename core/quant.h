/* quant: ggml's Q8_0 and Q4_0 quantizers, bit-identical to its reference
 * quantizers (quantize_row_q8_0_ref, quantize_row_q4_0_ref), and the 8-bit
 * quantization of activations that the int8 kernels (kernels/matmul_q.c) dot
 * those weights with.
 *
 * Block layouts (core/tensor.h): 32 values per block; Q8_0 is {fp16 d;
 * int8 qs[32]} (34 bytes), Q4_0 is {fp16 d; uint8 qs[16]} (18 bytes; value j
 * is the low nibble of qs[j] for j < 16, the high nibble of qs[j - 16] after,
 * minus 8, times d). Written byte for byte as ggml writes them, so GGUF files
 * can be read later without conversion.
 *
 * The algorithms, per block of 32 values x:
 *   Q8_0: amax = max |x| (ggml's MAX(a, b) = a > b ? a : b, in order);
 *         d = amax / 127; id = d ? 1 / d : 0; qs = roundf(x * id) (half away
 *         from zero); d stored as fp16.
 *   Q4_0: max = the first x of largest |x|, keeping its sign; d = max / -8;
 *         id = d ? 1 / d : 0; q = MIN(15, (int8_t)(x * id + 8.5f)) (the cast
 *         truncates toward zero); d stored as fp16.
 * A Q4_0 block of zeros keeps max = 0, so d = -0 (fp16 0x8000), as ggml
 * stores it. fp16 is ggml's float32 -> fp16 conversion: round to nearest even, overflow
 * to infinity, subnormals kept.
 *
 * Non-finite input (ggml does not check it; neither do we, we reproduce it):
 * a float -> int8 cast of a NaN or of a value out of int32 range is undefined
 * in C, and ggml's x86-64 builds get 0 for it (cvttss2si's 0x80000000, low
 * byte); in range it keeps the low byte. We compute that explicitly, so our
 * bytes are ggml's on x86-64 and defined everywhere. Consequences: Q8_0 with
 * an infinity: d = inf (fp16 0x7C00), id = 0, every q 0 (inf * 0 is NaN).
 * Q8_0 with a NaN: ggml's MAX lets a NaN replace amax and the next value
 * replace the NaN, so only a NaN last in its block makes d NaN (fp16 0x7E00
 * with the NaN's sign: ggml's portable converter; x86's F16C instruction would
 * keep the payload's top bits instead) and every q 0; elsewhere the NaN's q is
 * 0. Q4_0 skips NaNs when it looks for max (amax < NaN is false); a NaN's q is
 * MIN(15, 0) = 0; an infinite max gives d = -inf or inf, id = -0 or 0 and every
 * other q 8 (the infinity's own q is 0).
 */
#ifndef MOE_CORE_QUANT_H
#define MOE_CORE_QUANT_H

#include <stddef.h>
#include <stdint.h>

enum {
    QUANT_BLOCK = 32,       /* values per Q8_0 / Q4_0 block */
    QUANT_Q8_0_BYTES = 34,  /* bytes per block_q8_0 */
    QUANT_Q4_0_BYTES = 18,  /* bytes per block_q4_0 */
    QUANT_ACT_GROUP = 4,    /* values per activation group sum (quant_act_row) */
};

/* n values of x (n a multiple of QUANT_BLOCK) into n / 32 ggml block_q8_0
 * (34 bytes each) at dst. 0, or -1 with EINVAL when n is not whole blocks or
 * negative (dst untouched). */
int quant_row_q8_0(const float *x, void *dst, int64_t n);

/* The same into n / 32 block_q4_0 (18 bytes each). */
int quant_row_q4_0(const float *x, void *dst, int64_t n);

/* ggml's float32 -> fp16 (round to nearest even; NaN -> 0x7E00 with the
 * sign) and fp16 -> float32 (exact). */
uint16_t quant_f32_to_f16(float f);
float quant_f16_to_f32(uint16_t h);

/* The activations of an int8 product: n values of x (a multiple of
 * QUANT_BLOCK) quantized per block of 32 with Q8_0's reference algorithm
 * (amax, d = amax / 127, id = d ? 1 / d : 0, qs = roundf(x * id)), except
 * that d stays a float32 (it never leaves the process: no fp16 rounding, as
 * ggml's fp16 d would add, and no conversion in the kernels).
 *   qs: (n) int8;  d: (n / 32) floats;
 *   sums: (n / 4) int32 or NULL: sums[g] = -sum_mul * (qs[4g] + ... +
 *         qs[4g + 3]), the correction that lets a kernel multiply unsigned
 *         weights (Q4_0's nibbles, Q8_0's bytes + 128) by signed qs.
 * Non-finite x as for quant_row_q8_0 (q = 0 for a NaN or an infinity's
 * products out of range). The kernels' SIMD versions of this are held to
 * its bytes (tests/test_quant.c). */
void quant_act_row(const float *x, int64_t n, int32_t sum_mul, int8_t *qs,
                   float *d, int32_t *sums);

#endif /* MOE_CORE_QUANT_H */
