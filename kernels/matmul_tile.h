/* matmul_tile: the tile kernels of the float formats (F16, BF16, F8_E4M3,
 * MXFP4), one template for all four, instantiated by kernels/matmul_f16.c,
 * matmul_fp8.c and matmul_mxfp4.c. Private to kernels/.
 *
 * The tile is gemm_small's (kernels/gemm_small.c): R rows of x (R <= 4)
 * against C rows of W (C <= 2 with AVX2, <= 4 with AVX-512), one vector
 * accumulator per output entry, k walked in vector-width steps. Each step
 * decodes C vectors of W to float32 in registers, exactly:
 *   F16   F16C's vcvtph2ps (exact, subnormals included);
 *   BF16  zero-extend and shift left 16;
 *   E4M3  rewritten as IEEE halves of 2^-8 times the value (mt_fp8_half),
 *         widened by vcvtph2ps, times 2^8 * scale_inv: the same real number
 *         as the float32 product e4m3 * scale_inv the format defines
 *         (fixtures-precision/README.md), rounded once, as the reference
 *         rounded it (for |scale_inv| < 2^120: a larger one would make 2^8 *
 *         scale_inv overflow; no checkpoint has weights near 2^128);
 *   MXFP4 the nibbles of 4 (8) bytes spread over the lanes by a variable
 *         shift of the broadcast word (low nibble first = little-endian nibble
 *         order), E2M1 by a table permute (vpermps), times 2^(s - 127)
 *         (exact: a power of two).
 * then multiplies it into the R rows of x with one FMA per entry. No format
 * is widened in memory: W is read once per group of R rows of x, in its own
 * bytes.
 *
 * Batch invariance: entry (i, j) has its own accumulator, fed lane by lane
 * fma(x[p], w[p], acc) over increasing p (the k tail through a zero-padded
 * copy of the row's last bytes and a masked load of x), then one fixed
 * horizontal sum. R, C and the thread split only decide which accumulators
 * are live together, never a rounding of any entry, so a row's results do
 * not depend on the other rows of the call. On the AVX2 and AVX-512 paths an
 * entry gets exactly gemm_small's result on the decoded weights.
 *
 * AVX512-BF16's vdpbf16ps is not used for BF16: it rounds the activations to
 * bfloat16, so its products are not those of the float32 reference; the
 * weights are widened in registers and multiplied by float32 FMAs instead.
 *
 * Each tile prefetches its W rows MT_PF_DIST bytes ahead: C interleaved row
 * streams are more than the hardware prefetcher follows well (as in
 * kernels/matmul_q.c).
 *
 * Scales are per segment of columns: FP8 one scale per block of block_k
 * columns (the kernels take block_k a multiple of the vector width; other
 * block sizes go to the portable product), MXFP4 one per 32 values.
 */
#ifndef MOE_KERNELS_MATMUL_TILE_H
#define MOE_KERNELS_MATMUL_TILE_H

#include <assert.h>
#include <immintrin.h>
#ifdef MT_EMULATE_AVX512
/* tests/test_matmul_avx512.c: the AVX-512 kernels on scalar stand-ins of
 * their intrinsics, so that every machine checks their logic. */
#include "tests/avx512emu.h"
#define MT_TARGET512 "avx2,fma,f16c"
#else
#define MT_TARGET512 "avx512f,avx2,fma,f16c"
#endif
#include <stdint.h>
#include <string.h>

#include "core/tensor.h"

enum mt_fmt { MT_F16, MT_BF16, MT_FP8, MT_MXFP4 };

enum {
    MT_ROWS = 4,   /* R */
    MT_W256 = 4,   /* C with AVX2: 4 for R <= 2, 2 above (8 ymm accumulators); a
                    * single row needs 4 W rows in flight to hide the FMA latency
                    * of its accumulator chains behind the decoding */
    MT_W512 = 4,   /* C with AVX-512: 16 zmm accumulators */
    MT_WMAX = 4,   /* the widest C: chunks of W rows are cut at its multiples */
    MT_PF_DIST = 8192, /* bytes ahead of each W row that a tile prefetches */
};

/* Bytes of column p of a row (p a multiple of the block for MXFP4). */
static inline size_t mt_offset(int fmt, int64_t p)
{
    switch (fmt) {
    case MT_F16:
    case MT_BF16: return (size_t)p * 2;
    case MT_FP8: return (size_t)p;
    default: return (size_t)p / 2;
    }
}

/* Columns of one scale segment. */
static inline int64_t mt_segment(const tensor_t *w, int fmt)
{
    return fmt == MT_FP8 ? w->block_k : fmt == MT_MXFP4 ? 32 : w->cols;
}

/* Row r's scales (of the view w): FP8 floats, MXFP4 E8M0 bytes; NULL for
 * the unscaled formats. Found once per tile, not per segment (a division). */
static inline const void *mt_scales(const tensor_t *w, int fmt, int64_t r)
{
    if (fmt == MT_FP8)
        return w->scale_inv + (size_t)((w->row0 + r) / w->block_n) * w->scale_stride;
    if (fmt == MT_MXFP4)
        return w->e8m0 + (size_t)r * w->scale_stride;
    return NULL;
}

/* The scale of segment s from mt_scales(); MXFP4's halved (2^(e - 128)),
 * since its codes decode to twice their E2M1 value (see mt_mx128). */
static inline float mt_scale(const void *scales, int fmt, int64_t s)
{
    if (fmt == MT_FP8) /* the 2^8 of mt_fp8_half(), exact short of 2^120 */
        return ((const float *)scales)[s] * 256.0f;
    if (fmt == MT_MXFP4) {
        uint8_t e = ((const uint8_t *)scales)[s];
        uint32_t u = e == 255 ? 0x7fc00000u : e == 0 ? 0x00200000u
                   : e == 1 ? 0x00400000u : (uint32_t)(e - 1) << 23;
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    return 1.0f;
}

/* ---- MXFP4 blocks ---------------------------------------------------------------- */

/* The 32 codes of an MXFP4 block (16 bytes, low nibble first) as signed
 * bytes holding twice their E2M1 value (0, 1, 2, 3, 4, 6, 8, 12 and the
 * negatives: integers, so a byte table lookup, pshufb, does it), values 0..15
 * in *a and 16..31 in *b. Their float conversion times the halved scale of
 * mt_scale() is the exact E2M1 value times 2^(s - 127) (both are exact: small
 * integers and powers of two), except that -0 comes out +0, which no sum can
 * tell apart from -0 but the sign of an all-zero result. */
__attribute__((target("avx2"), always_inline)) static inline void
mt_mx128(const uint8_t *block, __m128i *a, __m128i *b)
{
    const __m128i lut = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
    const __m128i nib = _mm_set1_epi8(0x0f);
    __m128i raw = _mm_loadu_si128((const __m128i *)block);
    __m128i lo = _mm_shuffle_epi8(lut, _mm_and_si128(raw, nib));
    __m128i hi = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(raw, 4), nib));
    *a = _mm_unpacklo_epi8(lo, hi);
    *b = _mm_unpackhi_epi8(lo, hi);
}

/* ---- FP8 E4M3 through half ------------------------------------------------------ */

/* 8 E4M3 bytes (the low 8 of q) as IEEE halves of 2^-8 times their values:
 * half has E4M3's layout with 2 more exponent bits and bias 15 = 7 + 8, so
 * the 7 magnitude bits shifted left 7 are the half of value * 2^-8, for the
 * subnormals as well; the sign goes to bit 15 (sign-extend, shift, clear
 * bit 14), and 0x7F/0xFF become 0xFFFF/0xBFFF... NaN halves. vcvtph2ps then
 * widens them exactly, with no float32 subnormal in sight (a subnormal
 * operand costs some CPUs a microcode assist per instruction), and the 2^8
 * is folded into the scale (mt_scale), so that the product e4m3 * scale_inv
 * is the same real number rounded once, as the format defines it. */
__attribute__((target("avx2"), always_inline)) static inline __m128i mt_fp8_half(__m128i q)
{
    __m128i v = _mm_cvtepi8_epi16(q);
    __m128i h = _mm_and_si128(_mm_slli_epi16(v, 7), _mm_set1_epi16((short)0xbfff));
    __m128i nan = _mm_cmpeq_epi16(_mm_and_si128(h, _mm_set1_epi16(0x3f80)),
                                  _mm_set1_epi16(0x3f80));
    return _mm_or_si128(h, nan);
}

/* The same for 16 bytes, in one 256-bit register of halves. */
__attribute__((target("avx2"), always_inline)) static inline __m256i mt_fp8_half16(__m128i q)
{
    __m256i v = _mm256_cvtepi8_epi16(q);
    __m256i h = _mm256_and_si256(_mm256_slli_epi16(v, 7), _mm256_set1_epi16((short)0xbfff));
    __m256i nan = _mm256_cmpeq_epi16(_mm256_and_si256(h, _mm256_set1_epi16(0x3f80)),
                                     _mm256_set1_epi16(0x3f80));
    return _mm256_or_si256(h, nan);
}

/* ---- AVX2 + FMA + F16C ---------------------------------------------------------- */

#define MT_AVX2 __attribute__((target("avx2,fma,f16c"), always_inline)) static inline

/* 8 values of a row at byte b (unscaled). */
MT_AVX2 __m256 mt_dec256(const uint8_t *b, int fmt)
{
    switch (fmt) {
    case MT_F16:
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)b));
    case MT_BF16:
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)b)), 16));
    case MT_FP8:
        return _mm256_cvtph_ps(mt_fp8_half(_mm_loadl_epi64((const __m128i *)b)));
    default:
        assert(0);
        return _mm256_setzero_ps();
    }
}

/* The same for the last n < 8 columns of a row at byte b: a zero-padded copy,
 * so that no byte past the row is read. */
MT_AVX2 __m256 mt_dec256_tail(const uint8_t *b, int64_t n, int fmt)
{
    uint8_t pad[32] = {0};
    memcpy(pad, b, mt_offset(fmt, n));
    return mt_dec256(pad, fmt);
}

MT_AVX2 float mt_hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Entries (i .. i+R, j .. j+C) of y = x W^T. */
MT_AVX2 void mt_tile256(const tensor_t *w, int64_t j, float *y, int ldy, const float *x,
                        int ldx, const int R, const int C, const int fmt)
{
    const int64_t k = w->cols;
    const int64_t seg = mt_segment(w, fmt);
    const uint8_t *row[MT_W256];
    const void *scales[MT_W256];
    __m256 acc[MT_ROWS][MT_W256], wv[MT_W256], sv[MT_W256];
#pragma GCC unroll 4
    for (int q = 0; q < C; q++) {
        row[q] = (const uint8_t *)w->data + (size_t)(j + q) * w->row_stride;
        scales[q] = mt_scales(w, fmt, j + q);
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int q = 0; q < C; q++)
            acc[r][q] = _mm256_setzero_ps();
    for (int64_t p0 = 0, s = 0; p0 < k; p0 += seg, s++) {
        const int64_t p1 = p0 + seg < k ? p0 + seg : k;
        if (fmt == MT_FP8 || fmt == MT_MXFP4)
#pragma GCC unroll 4
            for (int q = 0; q < C; q++)
                sv[q] = _mm256_set1_ps(mt_scale(scales[q], fmt, s));
        if (fmt == MT_MXFP4) { /* one block: 4 vectors of 8 */
            __m128i half[MT_W256][2];
#pragma GCC unroll 4
            for (int q = 0; q < C; q++)
                mt_mx128(row[q] + (size_t)p0 / 2, &half[q][0], &half[q][1]);
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) {
#pragma GCC unroll 4
                for (int q = 0; q < C; q++) {
                    __m128i c = half[q][v / 2];
                    if (v & 1)
                        c = _mm_srli_si128(c, 8);
                    wv[q] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c)), sv[q]);
                }
#pragma GCC unroll 4
                for (int r = 0; r < R; r++) {
                    __m256 xv = _mm256_loadu_ps(x + (size_t)r * ldx + p0 + 8 * v);
#pragma GCC unroll 4
                    for (int q = 0; q < C; q++)
                        acc[r][q] = _mm256_fmadd_ps(xv, wv[q], acc[r][q]);
                }
            }
            continue;
        }
        int64_t p = p0;
        if (fmt == MT_FP8) { /* 16 bytes at a time: half the integer work */
            for (; p + 16 <= p1; p += 16) {
                __m256i h[MT_W256];
#pragma GCC unroll 4
                for (int q = 0; q < C; q++)
                    h[q] = mt_fp8_half16(_mm_loadu_si128((const __m128i *)(row[q] + p)));
#pragma GCC unroll 2
                for (int v = 0; v < 2; v++) {
#pragma GCC unroll 4
                    for (int q = 0; q < C; q++)
                        wv[q] = _mm256_mul_ps(
                            _mm256_cvtph_ps(v ? _mm256_extracti128_si256(h[q], 1)
                                              : _mm256_castsi256_si128(h[q])), sv[q]);
#pragma GCC unroll 4
                    for (int r = 0; r < R; r++) {
                        __m256 xv = _mm256_loadu_ps(x + (size_t)r * ldx + p + 8 * v);
#pragma GCC unroll 4
                        for (int q = 0; q < C; q++)
                            acc[r][q] = _mm256_fmadd_ps(xv, wv[q], acc[r][q]);
                    }
                }
            }
        }
        for (; p + 8 <= p1; p += 8) {
#pragma GCC unroll 4
            for (int q = 0; q < C; q++) {
                _mm_prefetch((const char *)row[q] + mt_offset(fmt, p) + MT_PF_DIST, _MM_HINT_T0);
                wv[q] = mt_dec256(row[q] + mt_offset(fmt, p), fmt);
                if (fmt == MT_FP8 || fmt == MT_MXFP4)
                    wv[q] = _mm256_mul_ps(wv[q], sv[q]);
            }
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                __m256 xv = _mm256_loadu_ps(x + (size_t)r * ldx + p);
#pragma GCC unroll 4
                for (int q = 0; q < C; q++)
                    acc[r][q] = _mm256_fmadd_ps(xv, wv[q], acc[r][q]);
            }
        }
        if (p < p1) { /* the k tail (not for MXFP4: whole blocks) */
            __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(p1 - p)),
                                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
#pragma GCC unroll 4
            for (int q = 0; q < C; q++) {
                wv[q] = mt_dec256_tail(row[q] + mt_offset(fmt, p), p1 - p, fmt);
                if (fmt == MT_FP8 || fmt == MT_MXFP4)
                    wv[q] = _mm256_mul_ps(wv[q], sv[q]);
            }
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                __m256 xv = _mm256_maskload_ps(x + (size_t)r * ldx + p, mask);
#pragma GCC unroll 4
                for (int q = 0; q < C; q++)
                    acc[r][q] = _mm256_fmadd_ps(xv, wv[q], acc[r][q]);
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int q = 0; q < C; q++)
            y[(size_t)r * ldy + j + q] = mt_hsum256(acc[r][q]);
}

#define MT_T256(R, C) \
    case (R) * 8 + (C): mt_tile256(w, j, y, ldy, x, ldx, R, C, fmt); break;

/* An R x C tile for R, C known at run time. */
MT_AVX2 void mt_tile256_rc(const tensor_t *w, int64_t j, float *y, int ldy, const float *x,
                           int ldx, int R, int C, const int fmt)
{
    switch (R * 8 + C) {
    MT_T256(1, 1) MT_T256(1, 2) MT_T256(1, 3) MT_T256(1, 4)
    MT_T256(2, 1) MT_T256(2, 2) MT_T256(2, 3) MT_T256(2, 4)
    MT_T256(3, 1) MT_T256(3, 2) MT_T256(4, 1) MT_T256(4, 2)
    default: assert(0);
    }
}
#undef MT_T256

/* Rows [j0, j1) of W against the m rows of x: blocks of 4 W rows, each
 * against every group of up to 4 rows of x (as two tiles of 2 W rows when
 * the group has more than 2 rows of x). */
MT_AVX2 void mt_part256(const tensor_t *w, float *y, int ldy, const float *x, int ldx,
                        int m, int64_t j0, int64_t j1, const int fmt)
{
    for (int64_t j = j0; j < j1; j += 4) {
        const int cols = j1 - j < 4 ? (int)(j1 - j) : 4;
        for (int i = 0; i < m; i += MT_ROWS) {
            float *yi = y + (size_t)i * ldy;
            const float *xi = x + (size_t)i * ldx;
            const int rows = m - i < MT_ROWS ? m - i : MT_ROWS;
            if (rows <= 2) {
                mt_tile256_rc(w, j, yi, ldy, xi, ldx, rows, cols, fmt);
            } else {
                mt_tile256_rc(w, j, yi, ldy, xi, ldx, rows, cols < 2 ? cols : 2, fmt);
                if (cols > 2)
                    mt_tile256_rc(w, j + 2, yi, ldy, xi, ldx, rows, cols - 2, fmt);
            }
        }
    }
}

/* Row r, columns [c0, c0 + n) decoded to float32 (c0 a multiple of the
 * segment when scaled), for the prefill path. */
MT_AVX2 void mt_decode256(const tensor_t *w, int64_t r, int64_t c0, int64_t n, float *out,
                          const int fmt)
{
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_stride;
    const void *scales = mt_scales(w, fmt, r);
    const int64_t seg = mt_segment(w, fmt), end = c0 + n;
    for (int64_t p0 = c0; p0 < end; p0 += seg) {
        const int64_t p1 = p0 + seg < end ? p0 + seg : end;
        const __m256 sv = _mm256_set1_ps(mt_scale(scales, fmt, p0 / seg));
        if (fmt == MT_MXFP4) {
            __m128i half[2];
            mt_mx128(row + (size_t)p0 / 2, &half[0], &half[1]);
            for (int v = 0; v < 4; v++) {
                __m128i c = v & 1 ? _mm_srli_si128(half[v / 2], 8) : half[v / 2];
                _mm256_storeu_ps(out + (p0 - c0) + 8 * v,
                                 _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c)), sv));
            }
            continue;
        }
        int64_t p = p0;
        for (; p + 8 <= p1; p += 8) {
            __m256 v = mt_dec256(row + mt_offset(fmt, p), fmt);
            if (fmt == MT_FP8 || fmt == MT_MXFP4)
                v = _mm256_mul_ps(v, sv);
            _mm256_storeu_ps(out + (p - c0), v);
        }
        if (p < p1) {
            float tmp[8];
            __m256 v = mt_dec256_tail(row + mt_offset(fmt, p), p1 - p, fmt);
            if (fmt == MT_FP8 || fmt == MT_MXFP4)
                v = _mm256_mul_ps(v, sv);
            _mm256_storeu_ps(tmp, v);
            memcpy(out + (p - c0), tmp, (size_t)(p1 - p) * sizeof(float));
        }
    }
}

#undef MT_AVX2

/* ---- AVX-512F (+ F16C's 512-bit form, part of AVX-512F) ------------------------- */

#define MT_AVX512 __attribute__((target(MT_TARGET512), always_inline)) static inline

MT_AVX512 __m512 mt_dec512(const uint8_t *b, int fmt)
{
    switch (fmt) {
    case MT_F16:
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)b));
    case MT_BF16:
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)b)), 16));
    case MT_FP8: {
        __m256i v = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b));
        __m256i h = _mm256_and_si256(_mm256_slli_epi16(v, 7), _mm256_set1_epi16((short)0xbfff));
        __m256i nan = _mm256_cmpeq_epi16(_mm256_and_si256(h, _mm256_set1_epi16(0x3f80)),
                                         _mm256_set1_epi16(0x3f80));
        return _mm512_cvtph_ps(_mm256_or_si256(h, nan));
    }
    default:
        assert(0);
        return _mm512_setzero_ps();
    }
}

MT_AVX512 __m512 mt_dec512_tail(const uint8_t *b, int64_t n, int fmt)
{
    uint8_t pad[64] = {0};
    memcpy(pad, b, mt_offset(fmt, n));
    return mt_dec512(pad, fmt);
}

MT_AVX512 void mt_tile512(const tensor_t *w, int64_t j, float *y, int ldy, const float *x,
                          int ldx, const int R, const int C, const int fmt)
{
    const int64_t k = w->cols;
    const int64_t seg = mt_segment(w, fmt);
    const uint8_t *row[MT_W512];
    const void *scales[MT_W512];
    __m512 acc[MT_ROWS][MT_W512], wv[MT_W512], sv[MT_W512];
#pragma GCC unroll 4
    for (int q = 0; q < C; q++) {
        row[q] = (const uint8_t *)w->data + (size_t)(j + q) * w->row_stride;
        scales[q] = mt_scales(w, fmt, j + q);
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int q = 0; q < C; q++)
            acc[r][q] = _mm512_setzero_ps();
    for (int64_t p0 = 0, s = 0; p0 < k; p0 += seg, s++) {
        const int64_t p1 = p0 + seg < k ? p0 + seg : k;
        if (fmt == MT_FP8 || fmt == MT_MXFP4)
#pragma GCC unroll 4
            for (int q = 0; q < C; q++)
                sv[q] = _mm512_set1_ps(mt_scale(scales[q], fmt, s));
        if (fmt == MT_MXFP4) { /* one block: 2 vectors of 16 */
            __m128i half[MT_W512][2];
#pragma GCC unroll 4
            for (int q = 0; q < C; q++)
                mt_mx128(row[q] + (size_t)p0 / 2, &half[q][0], &half[q][1]);
#pragma GCC unroll 2
            for (int v = 0; v < 2; v++) {
#pragma GCC unroll 4
                for (int q = 0; q < C; q++)
                    wv[q] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(half[q][v])),
                                          sv[q]);
#pragma GCC unroll 4
                for (int r = 0; r < R; r++) {
                    __m512 xv = _mm512_loadu_ps(x + (size_t)r * ldx + p0 + 16 * v);
#pragma GCC unroll 4
                    for (int q = 0; q < C; q++)
                        acc[r][q] = _mm512_fmadd_ps(xv, wv[q], acc[r][q]);
                }
            }
            continue;
        }
        int64_t p = p0;
        for (; p + 16 <= p1; p += 16) {
#pragma GCC unroll 4
            for (int q = 0; q < C; q++) {
                _mm_prefetch((const char *)row[q] + mt_offset(fmt, p) + MT_PF_DIST, _MM_HINT_T0);
                wv[q] = mt_dec512(row[q] + mt_offset(fmt, p), fmt);
                if (fmt == MT_FP8 || fmt == MT_MXFP4)
                    wv[q] = _mm512_mul_ps(wv[q], sv[q]);
            }
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                __m512 xv = _mm512_loadu_ps(x + (size_t)r * ldx + p);
#pragma GCC unroll 4
                for (int q = 0; q < C; q++)
                    acc[r][q] = _mm512_fmadd_ps(xv, wv[q], acc[r][q]);
            }
        }
        if (p < p1) {
            __mmask16 mask = (__mmask16)((1u << (p1 - p)) - 1u);
#pragma GCC unroll 4
            for (int q = 0; q < C; q++) {
                wv[q] = mt_dec512_tail(row[q] + mt_offset(fmt, p), p1 - p, fmt);
                if (fmt == MT_FP8 || fmt == MT_MXFP4)
                    wv[q] = _mm512_mul_ps(wv[q], sv[q]);
            }
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                __m512 xv = _mm512_maskz_loadu_ps(mask, x + (size_t)r * ldx + p);
#pragma GCC unroll 4
                for (int q = 0; q < C; q++)
                    acc[r][q] = _mm512_fmadd_ps(xv, wv[q], acc[r][q]);
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int q = 0; q < C; q++)
            y[(size_t)r * ldy + j + q] = _mm512_reduce_add_ps(acc[r][q]);
}

#define MT_TILE512_ROWS(R)                                                            \
    case (R) * 8 + 4: mt_tile512(w, j, yi, ldy, xi, ldx, R, 4, fmt); break;          \
    case (R) * 8 + 3: mt_tile512(w, j, yi, ldy, xi, ldx, R, 3, fmt); break;          \
    case (R) * 8 + 2: mt_tile512(w, j, yi, ldy, xi, ldx, R, 2, fmt); break;          \
    case (R) * 8 + 1: mt_tile512(w, j, yi, ldy, xi, ldx, R, 1, fmt); break;

MT_AVX512 void mt_part512(const tensor_t *w, float *y, int ldy, const float *x, int ldx,
                          int m, int64_t j0, int64_t j1, const int fmt)
{
    for (int64_t j = j0; j < j1; j += MT_W512) {
        int cols = j1 - j < MT_W512 ? (int)(j1 - j) : MT_W512;
        for (int i = 0; i < m; i += MT_ROWS) {
            float *yi = y + (size_t)i * ldy;
            const float *xi = x + (size_t)i * ldx;
            int rows = m - i < MT_ROWS ? m - i : MT_ROWS;
            switch (rows * 8 + cols) {
            MT_TILE512_ROWS(4)
            MT_TILE512_ROWS(3)
            MT_TILE512_ROWS(2)
            MT_TILE512_ROWS(1)
            default: assert(0);
            }
        }
    }
}
#undef MT_TILE512_ROWS

MT_AVX512 void mt_decode512(const tensor_t *w, int64_t r, int64_t c0, int64_t n, float *out,
                            const int fmt)
{
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_stride;
    const void *scales = mt_scales(w, fmt, r);
    const int64_t seg = mt_segment(w, fmt), end = c0 + n;
    for (int64_t p0 = c0; p0 < end; p0 += seg) {
        const int64_t p1 = p0 + seg < end ? p0 + seg : end;
        const __m512 sv = _mm512_set1_ps(mt_scale(scales, fmt, p0 / seg));
        if (fmt == MT_MXFP4) {
            __m128i half[2];
            mt_mx128(row + (size_t)p0 / 2, &half[0], &half[1]);
            for (int v = 0; v < 2; v++)
                _mm512_storeu_ps(out + (p0 - c0) + 16 * v,
                                 _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(half[v])), sv));
            continue;
        }
        int64_t p = p0;
        for (; p + 16 <= p1; p += 16) {
            __m512 v = mt_dec512(row + mt_offset(fmt, p), fmt);
            if (fmt == MT_FP8 || fmt == MT_MXFP4)
                v = _mm512_mul_ps(v, sv);
            _mm512_storeu_ps(out + (p - c0), v);
        }
        if (p < p1) {
            __m512 v = mt_dec512_tail(row + mt_offset(fmt, p), p1 - p, fmt);
            if (fmt == MT_FP8 || fmt == MT_MXFP4)
                v = _mm512_mul_ps(v, sv);
            _mm512_mask_storeu_ps(out + (p - c0), (__mmask16)((1u << (p1 - p)) - 1u), v);
        }
    }
}

#undef MT_AVX512

#endif /* MOE_KERNELS_MATMUL_TILE_H */
