/* wire_tensor: see wire_tensor.h.
 *
 * bf16 is core/tensor's converter (dtype_row_from_f32, dtype_bf16_value),
 * and fp8 decodes through its dtype_e4m3_value: one definition of each
 * format in the code base. E4M3 has no encoder there (checkpoints arrive
 * already quantized), so the one the wire needs is here.
 */
#include "proto/wire_tensor.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include "core/tensor.h"

static const char *const s_names[WIRE_TENSOR_COUNT] = {
    [WIRE_TENSOR_F32] = "f32", [WIRE_TENSOR_BF16] = "bf16", [WIRE_TENSOR_FP8] = "fp8",
};

const char *wire_tensor_format_name(wire_tensor_format_t fmt)
{
    return (unsigned)fmt < WIRE_TENSOR_COUNT ? s_names[fmt] : "unknown";
}

int wire_tensor_parse(const char *text, const char *name, void *dest, err_t *err)
{
    for (int i = 0; i < WIRE_TENSOR_COUNT; i++)
        if (strcmp(text, s_names[i]) == 0) {
            *(wire_tensor_format_t *)dest = (wire_tensor_format_t)i;
            return 0;
        }
    return err_set(err, EINVAL, "%s must be f32, bf16 or fp8 (got '%s')", name, text);
}

static size_t s_blocks(int width)
{
    return ((size_t)width + WIRE_TENSOR_FP8_BLOCK - 1) / WIRE_TENSOR_FP8_BLOCK;
}

size_t wire_tensor_row_bytes(wire_tensor_format_t fmt, int width)
{
    if (width < 1)
        return 0;
    switch (fmt) {
    case WIRE_TENSOR_BF16:
        return (size_t)width * 2;
    case WIRE_TENSOR_FP8:
        return (size_t)width + s_blocks(width) * sizeof(float);
    default:
        return (size_t)width * sizeof(float);
    }
}

size_t wire_tensor_bytes(wire_tensor_format_t fmt, int n_rows, int width)
{
    size_t row = wire_tensor_row_bytes(fmt, width);
    if (n_rows < 1 || row == 0 || row > SIZE_MAX / 2 / (size_t)n_rows)
        return 0;
    return row * (size_t)n_rows;
}

static uint32_t s_bits(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    return x;
}

uint8_t wire_tensor_e4m3(float v)
{
    uint32_t x = s_bits(v);
    uint8_t sign = (uint8_t)((x >> 24) & 0x80u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u)           /* NaN, +-inf: E4M3fn has no infinity */
        return sign | 0x7fu;
    if (ax >= 0x43e00000u)           /* >= 448: saturate */
        return sign | 0x7eu;
    if (ax < 0x3c800000u)            /* below 2^-6: a subnormal, units of 2^-9; the
                                        product is exact and nearbyintf rounds half
                                        to even; 8 units is the code of 2^-6 */
        return sign | (uint8_t)nearbyintf(fabsf(v) * 512.0f);
    /* Normal: round the 20 dropped mantissa bits to nearest even (a carry into
     * the exponent is right), then rebias the exponent from 127 to 7. Below
     * 448 the result stays at most 0x7E. */
    uint32_t r = (ax + 0x7ffffu + ((ax >> 20) & 1u)) >> 20;
    return sign | (uint8_t)(r - (120u << 3));
}

/* One row's fp8 blocks: scales into sc (any alignment), codes into q. */
static void s_fp8_row(const float *x, int width, uint8_t *sc, uint8_t *q)
{
    for (int b0 = 0, k = 0; b0 < width; b0 += WIRE_TENSOR_FP8_BLOCK, k++) {
        int n = width - b0 < WIRE_TENSOR_FP8_BLOCK ? width - b0 : WIRE_TENSOR_FP8_BLOCK;
        float amax = 0.0f;
        for (int j = 0; j < n; j++)
            if (isfinite(x[b0 + j]) && fabsf(x[b0 + j]) > amax)
                amax = fabsf(x[b0 + j]);
        float scale = amax / WIRE_TENSOR_FP8_MAX;
        if (amax > 0.0f && scale == 0.0f)
            scale = FLT_TRUE_MIN; /* amax is a few subnormals: keep them */
        memcpy(sc + (size_t)k * sizeof scale, &scale, sizeof scale);
        const float s = scale > 0.0f ? scale : 1.0f; /* an all-zero block: codes 0 */
        for (int j = 0; j < n; j++)
            q[b0 + j] = wire_tensor_e4m3(x[b0 + j] / s);
    }
}

void wire_tensor_encode(wire_tensor_format_t fmt, const float *src, int n_rows, int width,
                        void *dst)
{
    const size_t n = (size_t)n_rows * (size_t)width;
    switch (fmt) {
    case WIRE_TENSOR_BF16:
        dtype_row_from_f32(DTYPE_BF16, src, dst, (int64_t)n);
        return;
    case WIRE_TENSOR_FP8: {
        const size_t nb = s_blocks(width);
        uint8_t *sc = dst;
        uint8_t *q = sc + (size_t)n_rows * nb * sizeof(float);
        for (int r = 0; r < n_rows; r++)
            s_fp8_row(src + (size_t)r * width, width, sc + (size_t)r * nb * sizeof(float),
                      q + (size_t)r * width);
        return;
    }
    default:
        memcpy(dst, src, n * sizeof(float));
        return;
    }
}

void wire_tensor_decode(wire_tensor_format_t fmt, const void *src, int n_rows, int width,
                        float *dst)
{
    const size_t n = (size_t)n_rows * (size_t)width;
    const uint8_t *p = src;
    switch (fmt) {
    case WIRE_TENSOR_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, sizeof h);
            dst[i] = dtype_bf16_value(h);
        }
        return;
    case WIRE_TENSOR_FP8: {
        float value[256]; /* every code once, not once per element */
        for (int c = 0; c < 256; c++)
            value[c] = dtype_e4m3_value((uint8_t)c);
        const size_t nb = s_blocks(width);
        const uint8_t *q = p + (size_t)n_rows * nb * sizeof(float);
        for (int r = 0; r < n_rows; r++)
            for (size_t k = 0; k < nb; k++) {
                float scale;
                memcpy(&scale, p + ((size_t)r * nb + k) * sizeof(float), sizeof scale);
                size_t j0 = k * WIRE_TENSOR_FP8_BLOCK;
                size_t j1 = j0 + WIRE_TENSOR_FP8_BLOCK < (size_t)width
                                ? j0 + WIRE_TENSOR_FP8_BLOCK : (size_t)width;
                for (size_t j = j0; j < j1; j++)
                    dst[(size_t)r * width + j] = value[q[(size_t)r * width + j]] * scale;
            }
        return;
    }
    default:
        memcpy(dst, src, n * sizeof(float));
        return;
    }
}
