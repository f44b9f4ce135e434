/* quant: see quant.h. Each block has a plain C version (the reference,
 * written from ggml's algorithm) and an AVX2 one that gives the same bytes
 * (for speed at load: a checkpoint's weights pass through here once, and the
 * int8 kernels quantize every activation row); tests/test_quant.c holds the
 * second to the first. */
#include "core/quant.h"

#include <errno.h>
#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
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

/* ---- one block, plain C: the reference ---------------------------------------------- */

/* Q8_0's qs and float32 d of 32 values (quant_act_row's block too). */
static float s_q8_block_ref(const float *xb, int8_t *qs)
{
    float amax = 0.0f;
    for (int j = 0; j < QUANT_BLOCK; j++)
        amax = S_MAX(amax, fabsf(xb[j]));
    const float d = amax / 127;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;   /* NaN d is "true" */
    for (int j = 0; j < QUANT_BLOCK; j++)
        qs[j] = s_to_i8(roundf(xb[j] * id));
    return d;
}

/* Q4_0's packed nibbles and float32 d of 32 values. */
static float s_q4_block_ref(const float *xb, uint8_t *qs)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < QUANT_BLOCK; j++) {
        if (amax < fabsf(xb[j])) {
            amax = fabsf(xb[j]);
            max = xb[j];
        }
    }
    const float d = max / -8;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < QUANT_BLOCK / 2; j++) {
        int8_t q0 = s_to_i8(xb[j] * id + 8.5f);
        int8_t q1 = s_to_i8(xb[j + QUANT_BLOCK / 2] * id + 8.5f);
        uint8_t lo = (uint8_t)S_MIN(15, q0);
        uint8_t hi = (uint8_t)S_MIN(15, q1);
        qs[j] = (uint8_t)(lo | (uint8_t)(hi << 4));
    }
    return d;
}

/* ---- one block, AVX2: the same bytes --------------------------------------------------- */

/* The blocks without a NaN, vectorized; a block with one goes to the plain
 * versions (its NaN rules are positional). The same operations on the same
 * values: max of |x| is exact in any order, x * id (and + 8.5f: a separate
 * add, as ISO C does not contract) the same roundings; roundf's half away
 * from zero as t = trunc(v), t + sign(v) where |v - t| >= 0.5 (exact);
 * cvttps gives 0x80000000 out of range, whose low byte 0 is s_to_i8's. */
#define S_AVX2 __attribute__((target("avx2")))

S_AVX2 static bool s_load_block(const float *xb, __m256 v[4], __m256 *amax)
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m = _mm256_setzero_ps(), nan = _mm256_setzero_ps();
    for (int g = 0; g < 4; g++) {
        v[g] = _mm256_loadu_ps(xb + 8 * g);
        m = _mm256_max_ps(m, _mm256_and_ps(v[g], absmask));
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(v[g], v[g], _CMP_UNORD_Q));
    }
    *amax = m;
    return _mm256_movemask_ps(nan) == 0;
}

S_AVX2 static float s_hmax(__m256 m)
{
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    return _mm_cvtss_f32(m4);
}

/* Low bytes of 4 x 8 int32 lanes, in order, as 32 bytes. */
S_AVX2 static __m256i s_low_bytes(const __m256i q[4])
{
    const __m256i mask = _mm256_set1_epi32(0xff);
    __m256i a01 = _mm256_packus_epi32(_mm256_and_si256(q[0], mask), _mm256_and_si256(q[1], mask));
    __m256i a23 = _mm256_packus_epi32(_mm256_and_si256(q[2], mask), _mm256_and_si256(q[3], mask));
    __m256i bytes = _mm256_packus_epi16(a01, a23);
    /* the packs interleave 128-bit halves: dwords 0 4 1 5 2 6 3 7 */
    return _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

S_AVX2 static bool s_q8_block_avx2(const float *xb, int8_t *qs, float *d_out)
{
    __m256 v[4], m;
    if (!s_load_block(xb, v, &m))
        return false;
    const float d = s_hmax(m) / 127;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const __m256 idv = _mm256_set1_ps(id);
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256i q[4];
    for (int g = 0; g < 4; g++) {
        __m256 p = _mm256_mul_ps(v[g], idv);
        __m256 t = _mm256_round_ps(p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        __m256 frac = _mm256_and_ps(_mm256_sub_ps(p, t), absmask);
        __m256 up = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
        __m256 one = _mm256_or_ps(_mm256_and_ps(p, _mm256_set1_ps(-0.0f)), _mm256_set1_ps(1.0f));
        q[g] = _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_and_ps(up, one)));
    }
    _mm256_storeu_si256((__m256i *)qs, s_low_bytes(q));
    *d_out = d;
    return true;
}

S_AVX2 static bool s_q4_block_avx2(const float *xb, uint8_t *qs, float *d_out)
{
    __m256 v[4], m;
    if (!s_load_block(xb, v, &m))
        return false;
    const float amax = s_hmax(m);
    float max = 0.0f;   /* the scalar loop's start: +0 when every |x| is 0 */
    if (amax > 0.0f) {
        const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
        const __m256 am = _mm256_set1_ps(amax);
        uint32_t hits = 0;
        for (int g = 0; g < 4; g++)
            hits |= (uint32_t)_mm256_movemask_ps(
                        _mm256_cmp_ps(_mm256_and_ps(v[g], absmask), am, _CMP_EQ_OQ))
                    << (8 * g);
        max = xb[__builtin_ctz(hits)];   /* the first of largest |x| */
    }
    const float d = max / -8;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const __m256 idv = _mm256_set1_ps(id);
    __m256i r[4];
    for (int g = 0; g < 4; g++) {
        __m256i t = _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(v[g], idv),
                                                      _mm256_set1_ps(8.5f)));
        /* MIN(15, (int8_t)t): the low byte, sign-extended, then the min */
        t = _mm256_srai_epi32(_mm256_slli_epi32(t, 24), 24);
        r[g] = _mm256_min_epi32(t, _mm256_set1_epi32(15));
    }
    /* qs[j] = (uint8)lo_j | (uint8)(hi_j << 4), j < 16: values j and j + 16 */
    const __m256i ff = _mm256_set1_epi32(0xff);
    __m256i c0 = _mm256_or_si256(_mm256_and_si256(r[0], ff),
                                 _mm256_and_si256(_mm256_slli_epi32(r[2], 4), ff));
    __m256i c1 = _mm256_or_si256(_mm256_and_si256(r[1], ff),
                                 _mm256_and_si256(_mm256_slli_epi32(r[3], 4), ff));
    __m256i w16 = _mm256_packus_epi32(c0, c1);
    __m256i b8 = _mm256_packus_epi16(w16, w16);
    b8 = _mm256_permutevar8x32_epi32(b8, _mm256_setr_epi32(0, 4, 1, 5, 0, 4, 1, 5));
    _mm_storeu_si128((__m128i *)qs, _mm256_castsi256_si128(b8));
    *d_out = d;
    return true;
}

static bool s_avx2(void)
{
    return __builtin_cpu_supports("avx2");
}

/* ---- rows ------------------------------------------------------------------------------ */

static int s_check_n(int64_t n)
{
    if (n < 0 || n % QUANT_BLOCK != 0) {
        errno = EINVAL;
        return -1;
    }
    return 0;
}

static int s_row_q8_0(const float *x, void *dst, int64_t n, bool fast)
{
    if (s_check_n(n) != 0)
        return -1;
    uint8_t *out = dst;
    for (int64_t b = 0; b < n / QUANT_BLOCK; b++) {
        const float *xb = x + b * QUANT_BLOCK;
        uint8_t *ob = out + b * QUANT_Q8_0_BYTES;
        float d;
        if (!(fast && s_q8_block_avx2(xb, (int8_t *)(ob + 2), &d)))
            d = s_q8_block_ref(xb, (int8_t *)(ob + 2));
        s_put_f16(ob, d);
    }
    return 0;
}

static int s_row_q4_0(const float *x, void *dst, int64_t n, bool fast)
{
    if (s_check_n(n) != 0)
        return -1;
    uint8_t *out = dst;
    for (int64_t b = 0; b < n / QUANT_BLOCK; b++) {
        const float *xb = x + b * QUANT_BLOCK;
        uint8_t *ob = out + b * QUANT_Q4_0_BYTES;
        float d;
        if (!(fast && s_q4_block_avx2(xb, ob + 2, &d)))
            d = s_q4_block_ref(xb, ob + 2);
        s_put_f16(ob, d);
    }
    return 0;
}

int quant_row_q8_0(const float *x, void *dst, int64_t n)
{
    return s_row_q8_0(x, dst, n, s_avx2());
}

int quant_row_q4_0(const float *x, void *dst, int64_t n)
{
    return s_row_q4_0(x, dst, n, s_avx2());
}

int quant_row_q8_0_ref(const float *x, void *dst, int64_t n)
{
    return s_row_q8_0(x, dst, n, false);
}

int quant_row_q4_0_ref(const float *x, void *dst, int64_t n)
{
    return s_row_q4_0(x, dst, n, false);
}

/* Group sums of a block's 32 qs times -sum_mul. */
S_AVX2 static void s_sums_avx2(const int8_t *qb, int32_t sum_mul, int32_t *sums)
{
    __m256i bytes = _mm256_loadu_si256((const __m256i *)qb);
    __m256i s4 = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), bytes),
                                   _mm256_set1_epi16(1));
    _mm256_storeu_si256((__m256i *)sums, _mm256_mullo_epi32(s4, _mm256_set1_epi32(-sum_mul)));
}

static void s_sums_ref(const int8_t *qb, int32_t sum_mul, int32_t *sums)
{
    for (int g = 0; g < QUANT_BLOCK / QUANT_ACT_GROUP; g++) {
        const int8_t *q = qb + g * QUANT_ACT_GROUP;
        sums[g] = -sum_mul * (q[0] + q[1] + q[2] + q[3]);
    }
}

static void s_act_row(const float *x, int64_t n, int32_t sum_mul, int8_t *qs, float *d,
                      int32_t *sums, bool fast)
{
    for (int64_t b = 0; b < n / QUANT_BLOCK; b++) {
        const float *xb = x + b * QUANT_BLOCK;
        int8_t *qb = qs + b * QUANT_BLOCK;
        if (!(fast && s_q8_block_avx2(xb, qb, &d[b])))
            d[b] = s_q8_block_ref(xb, qb);
        if (sums) {
            int32_t *sb = sums + b * (QUANT_BLOCK / QUANT_ACT_GROUP);
            if (fast)
                s_sums_avx2(qb, sum_mul, sb);
            else
                s_sums_ref(qb, sum_mul, sb);
        }
    }
}

void quant_act_row(const float *x, int64_t n, int32_t sum_mul, int8_t *qs, float *d,
                   int32_t *sums)
{
    s_act_row(x, n, sum_mul, qs, d, sums, s_avx2());
}

void quant_act_row_ref(const float *x, int64_t n, int32_t sum_mul, int8_t *qs, float *d,
                       int32_t *sums)
{
    s_act_row(x, n, sum_mul, qs, d, sums, false);
}
