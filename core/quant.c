/* quant: see quant.h. Plain C on purpose: this is the reference every SIMD
 * path is held to, and quantizing a checkpoint at load is not the hot path. */
#include "core/quant.h"

#include <errno.h>
#include <math.h>
#include <string.h>

/* ggml's MAX and MIN macros, with their exact behaviour on NaN. */
#define S_MAX(a, b) ((a) > (b) ? (a) : (b))
#define S_MIN(a, b) ((a) < (b) ? (a) : (b))

uint16_t quant_f32_to_f16(float f)
{
    uint32_t w;
    memcpy(&w, &f, sizeof w);
    uint16_t sign = (uint16_t)((w >> 16) & 0x8000u);
    uint32_t a = w & 0x7fffffffu;
    if (a > 0x7f800000u)        /* NaN: ggml's portable converter's quiet NaN */
        return sign | 0x7e00u;
    if (a >= 0x477ff000u)       /* >= 65520: rounds to infinity (or is one) */
        return sign | 0x7c00u;
    if (a >= 0x38800000u) {     /* >= 2^-14: a normal half */
        uint32_t h = ((((a >> 23) - 127u + 15u) << 10) | ((a & 0x7fffffu) >> 13));
        uint32_t rest = a & 0x1fffu;
        if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
            h++;                /* a carry into the exponent is still right */
        return sign | (uint16_t)h;
    }
    if (a < 0x33000000u)        /* <= 2^-25 (a tie goes to even: 0) */
        return sign;
    /* A subnormal half: units of 2^-24. */
    uint32_t e = a >> 23;       /* 102 .. 112 */
    uint32_t m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e;  /* 14 .. 24 */
    uint32_t h = m >> shift;
    uint32_t rest = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    if (rest > half || (rest == half && (h & 1u)))
        h++;
    return sign | (uint16_t)h;
}

float quant_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu;
    uint32_t m = h & 0x3ffu;
    uint32_t w;
    if (e == 0x1fu) {
        w = sign | 0x7f800000u | (m << 13);
    } else if (e != 0) {
        w = sign | ((e + 112u) << 23) | (m << 13);
    } else if (m == 0) {
        w = sign;
    } else {                    /* subnormal: normalize */
        e = 113;
        while (!(m & 0x400u)) {
            m <<= 1;
            e--;
        }
        w = sign | (e << 23) | ((m & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &w, sizeof f);
    return f;
}

/* float -> int8 as ggml's x86-64 builds compute it: cvttss2si to int32
 * (0x80000000 for a NaN or a value out of range), then the low byte. */
static int8_t s_to_i8(float v)
{
    if (!(v >= -2147483648.0f && v < 2147483648.0f))
        return 0;
    return (int8_t)(uint8_t)((uint32_t)(int32_t)v & 0xffu);
}

static void s_put_f16(uint8_t *p, float d)
{
    uint16_t h = quant_f32_to_f16(d);
    p[0] = (uint8_t)(h & 0xffu);   /* little-endian, as GGUF stores it */
    p[1] = (uint8_t)(h >> 8);
}

int quant_row_q8_0(const float *x, void *dst, int64_t n)
{
    if (n < 0 || n % QUANT_BLOCK != 0) {
        errno = EINVAL;
        return -1;
    }
    uint8_t *out = dst;
    for (int64_t b = 0; b < n / QUANT_BLOCK; b++) {
        const float *xb = x + b * QUANT_BLOCK;
        uint8_t *ob = out + b * QUANT_Q8_0_BYTES;
        float amax = 0.0f;
        for (int j = 0; j < QUANT_BLOCK; j++)
            amax = S_MAX(amax, fabsf(xb[j]));
        const float d = amax / 127;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;   /* NaN d is "true" */
        s_put_f16(ob, d);
        for (int j = 0; j < QUANT_BLOCK; j++)
            ob[2 + j] = (uint8_t)s_to_i8(roundf(xb[j] * id));
    }
    return 0;
}

int quant_row_q4_0(const float *x, void *dst, int64_t n)
{
    if (n < 0 || n % QUANT_BLOCK != 0) {
        errno = EINVAL;
        return -1;
    }
    uint8_t *out = dst;
    for (int64_t b = 0; b < n / QUANT_BLOCK; b++) {
        const float *xb = x + b * QUANT_BLOCK;
        uint8_t *ob = out + b * QUANT_Q4_0_BYTES;
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QUANT_BLOCK; j++) {
            if (amax < fabsf(xb[j])) {
                amax = fabsf(xb[j]);
                max = xb[j];
            }
        }
        const float d = max / -8;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        s_put_f16(ob, d);
        for (int j = 0; j < QUANT_BLOCK / 2; j++) {
            int8_t q0 = s_to_i8(xb[j] * id + 8.5f);
            int8_t q1 = s_to_i8(xb[j + QUANT_BLOCK / 2] * id + 8.5f);
            uint8_t lo = (uint8_t)S_MIN(15, q0);
            uint8_t hi = (uint8_t)S_MIN(15, q1);
            ob[2 + j] = (uint8_t)(lo | (uint8_t)(hi << 4));
        }
    }
    return 0;
}

void quant_act_row(const float *x, int64_t n, int32_t sum_mul, int8_t *qs,
                   float *d, int32_t *sums)
{
    for (int64_t b = 0; b < n / QUANT_BLOCK; b++) {
        const float *xb = x + b * QUANT_BLOCK;
        int8_t *qb = qs + b * QUANT_BLOCK;
        float amax = 0.0f;
        for (int j = 0; j < QUANT_BLOCK; j++)
            amax = S_MAX(amax, fabsf(xb[j]));
        const float db = amax / 127;
        const float id = db != 0.0f ? 1.0f / db : 0.0f;
        d[b] = db;
        for (int j = 0; j < QUANT_BLOCK; j++)
            qb[j] = s_to_i8(roundf(xb[j] * id));
        if (sums) {
            for (int g = 0; g < QUANT_BLOCK / QUANT_ACT_GROUP; g++) {
                const int8_t *q = qb + g * QUANT_ACT_GROUP;
                sums[b * (QUANT_BLOCK / QUANT_ACT_GROUP) + g] =
                    -sum_mul * (q[0] + q[1] + q[2] + q[3]);
            }
        }
    }
}
