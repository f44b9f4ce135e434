/* quant: ggml's reference quantizers, transcribed (ggml-quants.c,
 * quantize_row_q8_0_ref and quantize_row_q4_0_ref) with ggml's portable
 * float32 -> float16 conversion (round to nearest even, NaN -> 0x7E00), the
 * one its F16C path computes too. The scale used for quantizing is the
 * float32 one; only the stored d is rounded to half, as in ggml. */
#include "core/quant.h"

#include <assert.h>
#include <math.h>
#include <string.h>

enum { QK = 32 };

static uint32_t s_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float s_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ggml_compute_fp32_to_fp16 (from Maratyszcza's FP16 library). */
static uint16_t s_f16(float f)
{
    const float scale_to_inf = 0x1.0p+112f;
    const float scale_to_zero = 0x1.0p-110f;
    float base = (fabsf(f) * scale_to_inf) * scale_to_zero;
    const uint32_t w = s_bits(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u)
        bias = 0x71000000u;
    base = s_float((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = s_bits(base);
    const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
    const uint32_t mantissa_bits = bits & 0x00000FFFu;
    const uint32_t nonsign = exp_bits + mantissa_bits;
    return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

void quant_row_q8_0(const float *x, void *dst, int64_t n)
{
    assert(n % QK == 0);
    uint8_t *out = dst;
    for (int64_t b = 0; b < n / QK; b++, x += QK, out += 2 + QK) {
        float amax = 0.0f;
        for (int j = 0; j < QK; j++)
            amax = amax > fabsf(x[j]) ? amax : fabsf(x[j]); /* ggml's MAX */
        const float d = amax / ((1 << 7) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        uint16_t h = s_f16(d);
        memcpy(out, &h, 2);
        for (int j = 0; j < QK; j++)
            out[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
    }
}

void quant_row_q4_0(const float *x, void *dst, int64_t n)
{
    assert(n % QK == 0);
    uint8_t *out = dst;
    for (int64_t b = 0; b < n / QK; b++, x += QK, out += 2 + QK / 2) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK; j++) {
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        const float d = max / -8;
        const float id = d ? 1.0f / d : 0.0f;
        uint16_t h = s_f16(d);
        memcpy(out, &h, 2);
        for (int j = 0; j < QK / 2; j++) {
            const float x0 = x[j] * id;
            const float x1 = x[QK / 2 + j] * id;
            int8_t q0 = (int8_t)(x0 + 8.5f);
            int8_t q1 = (int8_t)(x1 + 8.5f);
            const uint8_t xi0 = (uint8_t)(q0 < 15 ? q0 : 15);
            const uint8_t xi1 = (uint8_t)(q1 < 15 ? q1 : 15);
            out[2 + j] = (uint8_t)(xi0 | (xi1 << 4));
        }
    }
}
