/* tensor: the dtype table, views, and the exact scalar decoders and encoders
 * every kernel and test agrees with (see tensor.h).
 *
 * Decoding is exact by construction: each stored value is built as float32
 * bits, or as a product of float32 values that the format defines as exact
 * (E2M1 times a power of two); the one rounding the formats themselves
 * prescribe is FP8's float32 product e4m3(q) * scale_inv, computed here as
 * the reference computed it. Float contraction stays off (ISO C mode), so a
 * * b is never fused into an FMA by the compiler.
 */
#include "core/tensor.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <string.h>
#include <strings.h>

#include "core/quant.h"

static const dtype_info_t s_info[DTYPE_COUNT] = {
    [DTYPE_F32] = {"f32", 1, 4},
    [DTYPE_F16] = {"f16", 1, 2},
    [DTYPE_BF16] = {"bf16", 1, 2},
    [DTYPE_F8_E4M3] = {"f8_e4m3", 1, 1},
    [DTYPE_MXFP4] = {"mxfp4", 32, 16},
    [DTYPE_Q8_0] = {"q8_0", 32, 34},
    [DTYPE_Q4_0] = {"q4_0", 32, 18},
};

/* Other names users and checkpoints give the formats. */
static const struct {
    const char *name;
    dtype_t dtype;
} s_alias[] = {
    {"float32", DTYPE_F32}, {"float16", DTYPE_F16}, {"half", DTYPE_F16},
    {"bfloat16", DTYPE_BF16}, {"fp8", DTYPE_F8_E4M3}, {"f8_e4m3fn", DTYPE_F8_E4M3},
    {"float8_e4m3fn", DTYPE_F8_E4M3},
};

static const float s_e2m1[16] = {
    0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
    -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f,
};

static float s_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t s_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

const dtype_info_t *dtype_info(dtype_t dtype)
{
    assert((unsigned)dtype < DTYPE_COUNT);
    return &s_info[dtype];
}

int dtype_parse(const char *name, dtype_t *out)
{
    if (name) {
        for (int d = 0; d < DTYPE_COUNT; d++) {
            if (strcasecmp(name, s_info[d].name) == 0) {
                *out = (dtype_t)d;
                return 0;
            }
        }
        for (size_t i = 0; i < sizeof s_alias / sizeof s_alias[0]; i++) {
            if (strcasecmp(name, s_alias[i].name) == 0) {
                *out = s_alias[i].dtype;
                return 0;
            }
        }
    }
    errno = EINVAL;
    return -1;
}

size_t dtype_row_bytes(dtype_t dtype, int64_t cols)
{
    const dtype_info_t *info = dtype_info(dtype);
    if (cols < 0 || cols % info->block != 0)
        return 0;
    return (size_t)(cols / info->block) * (size_t)info->block_bytes;
}

/* ---- scalar decoders ------------------------------------------------------- */

float dtype_f16_value(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) { /* zero or subnormal: mant * 2^-24, exact in float32 */
        float v = (float)mant * 0x1p-24f;
        return sign ? -v : v;
    }
    if (exp == 31) /* inf, NaN (payload kept) */
        return s_float(sign | 0x7f800000u | (mant << 13));
    return s_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

float dtype_bf16_value(uint16_t h)
{
    return s_float((uint32_t)h << 16);
}

float dtype_e4m3_value(uint8_t q)
{
    if ((q & 0x7fu) == 0x7fu)
        return NAN;
    /* The 7 magnitude bits placed as a float32's top exponent/mantissa bits
     * read as 2^-120 times the value (a float32 subnormal for E4M3's
     * subnormals), so one exact multiplication by 2^120 finishes it. */
    float v = s_float((uint32_t)(q & 0x7fu) << 20) * 0x1p120f;
    return (q & 0x80u) ? -v : v;
}

float dtype_e2m1_value(unsigned code)
{
    assert(code < 16);
    return s_e2m1[code];
}

/* 2^(s - 127) for an E8M0 byte, NaN for 255. */
static float s_e8m0(uint8_t s)
{
    if (s == 255)
        return NAN;
    if (s == 0)
        return 0x1p-127f; /* a float32 subnormal */
    return s_float((uint32_t)s << 23);
}

/* ---- tensors ----------------------------------------------------------------- */

tensor_t tensor_f32(const float *data, int64_t rows, int64_t cols)
{
    tensor_t t = {
        .dtype = DTYPE_F32, .rows = rows, .cols = cols, .data = data,
        .row_stride = (size_t)cols * sizeof(float),
    };
    return t;
}

tensor_t tensor_rows(const tensor_t *t, int64_t first, int64_t n)
{
    assert(first >= 0 && n >= 0 && first + n <= t->rows);
    tensor_t v = *t;
    v.rows = n;
    v.data = (const uint8_t *)t->data + (size_t)first * t->row_stride;
    if (t->dtype == DTYPE_F8_E4M3)
        v.row0 = t->row0 + first; /* the scales stay: the grid is the parent's */
    if (t->dtype == DTYPE_MXFP4)
        v.e8m0 = t->e8m0 + (size_t)first * t->scale_stride;
    return v;
}

void tensor_row_range_to_f32(const tensor_t *t, int64_t r, int64_t c0, int64_t n,
                             float *out)
{
    const int block = dtype_info(t->dtype)->block;
    assert(r >= 0 && r < t->rows);
    assert(c0 >= 0 && n >= 0 && c0 + n <= t->cols);
    assert(c0 % block == 0 && (n % block == 0 || c0 + n == t->cols));
    const uint8_t *row = (const uint8_t *)t->data + (size_t)r * t->row_stride;
    switch (t->dtype) {
    case DTYPE_F32:
        memcpy(out, row + (size_t)c0 * 4, (size_t)n * sizeof *out);
        break;
    case DTYPE_F16:
    case DTYPE_BF16:
        for (int64_t j = 0; j < n; j++) {
            uint16_t h;
            memcpy(&h, row + (size_t)(c0 + j) * 2, 2);
            out[j] = t->dtype == DTYPE_F16 ? dtype_f16_value(h) : dtype_bf16_value(h);
        }
        break;
    case DTYPE_F8_E4M3: {
        assert(t->scale_inv && t->block_n > 0 && t->block_k > 0);
        const float *sc = t->scale_inv + (size_t)((t->row0 + r) / t->block_n) * t->scale_stride;
        for (int64_t j = 0; j < n; j++) {
            int64_t c = c0 + j;
            out[j] = dtype_e4m3_value(row[c]) * sc[c / t->block_k];
        }
        break;
    }
    case DTYPE_MXFP4: {
        assert(t->e8m0);
        const uint8_t *sc = t->e8m0 + (size_t)r * t->scale_stride;
        for (int64_t b = c0 / 32; b < (c0 + n) / 32; b++) {
            const uint8_t *q = row + (size_t)b * 16;
            float s = s_e8m0(sc[b]);
            float *o = out + (b * 32 - c0);
            for (int i = 0; i < 16; i++) {
                o[2 * i] = s_e2m1[q[i] & 0x0fu] * s;
                o[2 * i + 1] = s_e2m1[q[i] >> 4] * s;
            }
        }
        break;
    }
    case DTYPE_Q8_0:
        for (int64_t b = c0 / 32; b < (c0 + n) / 32; b++) {
            const uint8_t *q = row + (size_t)b * 34;
            uint16_t h;
            memcpy(&h, q, 2);
            float d = dtype_f16_value(h);
            float *o = out + (b * 32 - c0);
            for (int i = 0; i < 32; i++)
                o[i] = (float)(int8_t)q[2 + i] * d;
        }
        break;
    case DTYPE_Q4_0:
        for (int64_t b = c0 / 32; b < (c0 + n) / 32; b++) {
            const uint8_t *q = row + (size_t)b * 18;
            uint16_t h;
            memcpy(&h, q, 2);
            float d = dtype_f16_value(h);
            float *o = out + (b * 32 - c0);
            for (int i = 0; i < 16; i++) {
                o[i] = (float)((int)(q[2 + i] & 0x0fu) - 8) * d;
                o[i + 16] = (float)((int)(q[2 + i] >> 4) - 8) * d;
            }
        }
        break;
    default:
        assert(0);
    }
}

void tensor_row_to_f32(const tensor_t *t, int64_t r, float *out)
{
    tensor_row_range_to_f32(t, r, 0, t->cols, out);
}

size_t tensor_bytes(const tensor_t *t)
{
    size_t bytes = (size_t)t->rows * dtype_row_bytes(t->dtype, t->cols);
    if (t->dtype == DTYPE_F8_E4M3 && t->rows > 0 && t->block_n > 0 && t->block_k > 0) {
        int64_t first = t->row0 / t->block_n;
        int64_t last = (t->row0 + t->rows - 1) / t->block_n;
        int64_t per_row = (t->cols + t->block_k - 1) / t->block_k;
        bytes += (size_t)(last - first + 1) * (size_t)per_row * sizeof(float);
    }
    if (t->dtype == DTYPE_MXFP4)
        bytes += (size_t)t->rows * (size_t)(t->cols / 32);
    return bytes;
}

/* ---- encoders ------------------------------------------------------------------ */

/* float32 -> IEEE half, round to nearest even, NaN stays NaN (quiet, the
 * top of its payload kept), overflow to inf, subnormals rounded exactly. */
static uint16_t s_to_f16(float f)
{
    uint32_t x = s_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) /* NaN */
        return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    if (ax >= 0x477ff000u) /* >= 65520 rounds to inf (inf included) */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) { /* below 2^-14: a half subnormal or zero */
        /* The value in units of 2^-24, rounded to nearest even by the FPU:
         * adding 0.5 (2^-1 in those units) through float addition would not
         * do, so shift the mantissa with an explicit even rounding. */
        if (ax < 0x33000000u) /* < 2^-25: rounds to zero (2^-25 is a tie to 0) */
            return sign;
        uint32_t e = ax >> 23;             /* 102 .. 112 */
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e;         /* value = m * 2^(e - 150) -> units 2^-24 */
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u)))
            q++;
        return (uint16_t)(sign | q); /* q == 0x400 becomes the smallest normal */
    }
    /* normal: rebias the exponent, round the 13 dropped bits to nearest even;
     * a carry into the exponent is right (up to inf at the top). */
    uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u);
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

static uint16_t s_to_bf16(float f)
{
    uint32_t x = s_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x0040u); /* quiet NaN, sign kept */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

int dtype_row_from_f32(dtype_t dtype, const float *src, void *dst, int64_t n)
{
    if ((unsigned)dtype >= DTYPE_COUNT || n < 0 || n % dtype_info(dtype)->block != 0) {
        errno = EINVAL;
        return -1;
    }
    uint8_t *out = dst;
    switch (dtype) {
    case DTYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof *src);
        return 0;
    case DTYPE_F16:
    case DTYPE_BF16:
        for (int64_t j = 0; j < n; j++) {
            uint16_t h = dtype == DTYPE_F16 ? s_to_f16(src[j]) : s_to_bf16(src[j]);
            memcpy(out + (size_t)j * 2, &h, 2);
        }
        return 0;
    case DTYPE_Q8_0:
        quant_row_q8_0(src, dst, n);
        return 0;
    case DTYPE_Q4_0:
        quant_row_q4_0(src, dst, n);
        return 0;
    default:
        errno = EINVAL;
        return -1;
    }
}
