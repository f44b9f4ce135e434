/* safetensors_private: the element conversions the reader, the writer and the
 * model tests share.
 *
 * safetensors data is little-endian; we read F32 tensors in place, so the
 * host must be little-endian too. Half-precision values are read and written
 * byte by byte and are independent of the host order.
 */
#ifndef MOE_MODEL_SAFETENSORS_PRIVATE_H
#define MOE_MODEL_SAFETENSORS_PRIVATE_H

#include <stdint.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error                                                                         \
    "moecluster reads safetensors F32 data in place: little-endian hosts only"
#endif /* !__BYTE_ORDER__ || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__ */

static inline uint32_t st_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float st_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* IEEE binary16 -> float32, exact: subnormals, infinities and NaNs kept. */
static inline float st_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) /* zero or subnormal: mant * 2^-24, exact in float32 */
        return st_bits_f32(sign | st_f32_bits((float)mant * 0x1p-24f));
    if (exp == 31) /* inf or NaN, payload kept */
        return st_bits_f32(sign | 0x7f800000u | (mant << 13));
    return st_bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

/* bfloat16 -> float32: the top half of the float32 bits, exact. */
static inline float st_bf16_to_f32(uint16_t b)
{
    return st_bits_f32((uint32_t)b << 16);
}

/* float32 -> IEEE binary16, round to nearest even; overflow gives inf, NaN
 * stays a (quiet) NaN. */
static inline uint16_t st_f32_to_f16(float f)
{
    uint32_t x = st_f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t a = x & 0x7fffffffu;
    if (a > 0x7f800000u) /* NaN: quiet bit set, some payload kept */
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) /* >= 65520 rounds past 65504: inf */
        return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x38800000u) { /* normal half: rebias, round the 13 lost bits */
        uint32_t r = a - 0x38000000u;
        r += 0x0fffu + ((r >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));
    }
    /* subnormal half (or zero): units of 2^-24 */
    uint32_t e = a >> 23;
    uint32_t shift = 126u - e; /* >= 14 here */
    if (shift > 24)
        return sign; /* below 2^-25: rounds to zero */
    uint32_t m = (a & 0x7fffffu) | 0x800000u;
    uint32_t q = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u)))
        q++;
    return (uint16_t)(sign | q);
}

/* float32 -> bfloat16, round to nearest even; NaN stays a quiet NaN. */
static inline uint16_t st_f32_to_bf16(float f)
{
    uint32_t x = st_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x0040u);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

/* Little-endian 16-bit load and store. */
static inline uint16_t st_load_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline void st_store_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v & 0xffu);
    p[1] = (uint8_t)(v >> 8);
}

#endif /* MOE_MODEL_SAFETENSORS_PRIVATE_H */
