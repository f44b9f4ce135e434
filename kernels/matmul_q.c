/* matmul_q: see matmul_q.h.
 *
 * The decode algorithm (m <= GEMM_SMALL_MAX_ROWS):
 *   1. each row of x is quantized once per call to 8-bit blocks of 32 with a
 *      float32 scale dx (quant_act_row(): Q8_0's reference algorithm, d kept
 *      in float32 where llama.cpp rounds it to fp16);
 *   2. each weight block b (32 values q_w, scale dw from its fp16) is dotted
 *      with the activation block in integers, in 8 lanes of 4 consecutive
 *      values: p_l = sum_{t<4} q_w[4l+t] * q_x[4l+t] (exact; Q4_0's q_w is
 *      its nibble minus 8);
 *   3. each output keeps 8 float32 lanes, acc_l = fma((float)p_l, dw * dx,
 *      acc_l) over increasing b (dw * dx one float32 product), and ends with
 *      the fixed sum ((a0+a4)+(a2+a6))+((a1+a5)+(a3+a7)).
 * Every path computes exactly that (the integer sums are exact, the float
 * operations the same in the same order), so the AVX-512 (VNNI), AVX2 and
 * portable paths give the same bits; tests/test_matmul_q.c holds them to a
 * plain model. Steps 2-3 are per output and step 1 per row, so a row's
 * result never depends on m, the other rows or the thread split.
 *
 * Tiles: 1-2 rows of x by 4 rows of W, each output its own 8-lane
 * accumulator (4 x 2 tiles were a third slower per product: their 8 x
 * loads per W block cost more than the spills they saved). Per W block and
 * W row: one broadcast load and two ops unpack Q4_0's nibbles, the scale is
 * broadcast straight from the fp16 table (a load, no vector op), then per x
 * row maddubs, madd, add (group sums), cvt, mul (dw dx), fma. W rows are
 * split over the compute pool in chunks (as gemm_small), so W streams from
 * memory once per call whatever m, and a tile's W rows stay in L1 while all
 * rows of x pass (x is small: about 1.1 bytes per value, read from L1 as
 * memory operands). Each tile prefetches its W rows PF_DIST bytes ahead:
 * four interleaved row streams defeat the hardware prefetcher, and without
 * it Q4_0 decode ran at a third of the read bandwidth although its
 * arithmetic alone (W in L2) goes faster than memory.
 *
 * The prefill kernels (m > 16) are described where they are defined. With
 * AVX-512 VNNI a tile of 4 W rows runs two rows per 512-bit register
 * (s_tile_vnni2; the prefetch reaches PF_DIST = 8 KB ahead, which measured
 * best against 2 and 16 KB on the medium model, weights in huge pages).
 * Measured on the Zen 5 machine of 2026-12-07 (bench-gemm --threads 2, 64
 * experts: past the caches, read bandwidth 59 GB/s): m = 1 Q4_0 29-33 GB/s,
 * Q8_0 30-31; prefill m = 128 620-755 GFLOP/s.
 * Measured earlier (q4fast, issue 12, bench-gemm --threads 2 on the medium expert
 * shapes 2816 x 1024 and 1024 x 2816, 8 experts (13 MB of Q4_0: L3), the
 * shared 2-vCPU machine at load average 0.5, so still rough, read
 * bandwidth 26.6 GB/s): m = 1: Q4_0 27.7 GB/s of its bytes (1.04 of the read
 * bandwidth; 7-10 GB/s before the prefetch), Q8_0 20.5-22.3 (0.77-0.84),
 * f32 23.6-24.7; m = 2 / 4 / 16: Q4_0 17-18 / 9.7 / 2.1-2.3 GB/s: about
 * 0.9 ns per (x row, W block) and thread, the int8 dot of one block.
 * Prefill (m = 128, GFLOP/s): f32 (OpenBLAS) 127-140, Q8_0 163-191, Q4_0
 * 215-243. Earlier (kquant): decoding W to float32 for OpenBLAS costs
 * more than the whole int8 product (16384 x 4096, m = 128: decoding 202 ms +
 * sgemm 137 ms against 162 ms for the decode-order int8 kernel), so prefill
 * stays in int8, in the packed kernels below.
 *
 * Scratch: the quantized x (about 1.1 to 2.1 bytes per value) lives in a
 * buffer of the calling thread, grown when a call needs more and freed when
 * the thread ends; if it cannot grow, the call computes on the portable
 * path, quantizing each x block where it is used (the same bits, slowly), so
 * a product still cannot fail.
 */
#include "kernels/matmul_q.h"

#include <assert.h>
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "core/quant.h"
#include "kernels/gemm_small.h"
#include "kernels/matmul_private.h"

enum {
    QB = QUANT_BLOCK,   /* values per block */
    LANES = 8,          /* float lanes per output */
    UNIT_ROWS = 8,      /* W rows per unit of the thread split (whole tiles) */
    PF_DIST = 8192,  /* bytes ahead of each W row that a tile prefetches */
    Q_BATCH_MAX = 32, /* products of one pool job (matmul_q_many cuts longer lists) */
};

/* Whether block b's tile step issues the prefetch of its W rows. A
 * prefetch is a load: one per block (18 or 34 bytes) and row requests each
 * 64-byte line two to four times, and the Q4_0 decode tile's loads were
 * where it stalled. Q4_0 prefetches on even blocks only: two blocks span 36
 * bytes, less than a line, so every line is still asked for ahead of use.
 * Q8_0's two blocks span 68 bytes and would skip lines, so it keeps one per
 * block. Medium preset, q4_0, bench-core decode, 2 threads, Zen 5: 8
 * interleaved pairs of runs, 197-216 tokens/s (every block) against
 * 212-249 (even blocks). */
static inline bool s_prefetch_step(bool q4, int64_t b)
{
    return !q4 || (b & 1) == 0;
}

/* The activations of a call: row i's qs at qs + i * ld, its scales at
 * d + i * nb. */
typedef struct act {
    const int8_t *qs;
    const float *d;
    size_t ld;          /* = k */
    int64_t nb;         /* blocks per row */
    const int32_t *sums; /* row i's group sums (times -8 or -128) at sums + i * ld / 4,
                            or NULL when the kernel needs none */
    const int32_t *bsums; /* the prefill Q4_0 kernel's block sums times -8, row i at
                             bsums + i * nb, or NULL */
} act_t;

typedef void s_part_fn(float *y, int ldy, const act_t *a, const tensor_t *w,
                       int m, int64_t j0, int64_t j1);

static inline const uint8_t *s_wrow(const tensor_t *w, int64_t j)
{
    return (const uint8_t *)w->data + (size_t)j * w->row_stride;
}

static inline uint16_t s_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (uint16_t)p[1] << 8);
}

/* ---- portable C --------------------------------------------------------------- */

/* The 32 signed weights of block b of a W row (Q4_0: nibble - 8), and its
 * scale. */
static inline float s_wblock(dtype_t dt, const uint8_t *row, int64_t b, int8_t *q)
{
    if (dt == DTYPE_Q8_0) {
        const uint8_t *blk = row + b * QUANT_Q8_0_BYTES;
        memcpy(q, blk + 2, QB);
        return quant_f16_to_f32(s_le16(blk));
    }
    const uint8_t *blk = row + b * QUANT_Q4_0_BYTES;
    for (int j = 0; j < QB / 2; j++) {
        q[j] = (int8_t)((blk[2 + j] & 0x0f) - 8);
        q[j + QB / 2] = (int8_t)((blk[2 + j] >> 4) - 8);
    }
    return quant_f16_to_f32(s_le16(blk));
}

/* Steps 2-3 for one block into the 8 lanes. */
static inline void s_block_port(float *acc, const int8_t *qw, const int8_t *qx, float s)
{
    for (int l = 0; l < LANES; l++) {
        int32_t p = 0;
        for (int t = 0; t < 4; t++)
            p += (int32_t)qw[4 * l + t] * (int32_t)qx[4 * l + t];
        acc[l] = fmaf((float)p, s, acc[l]);
    }
}

static inline float s_hsum_port(const float *a)
{
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

static void s_part_port(float *y, int ldy, const act_t *a, const tensor_t *w,
                        int m, int64_t j0, int64_t j1)
{
    int8_t qw[QB];
    for (int64_t jb = j0; jb < j1; jb += 4) {
        int64_t je = jb + 4 < j1 ? jb + 4 : j1;
        for (int i = 0; i < m; i++) {
            for (int64_t j = jb; j < je; j++) {
                const uint8_t *row = s_wrow(w, j);
                float acc[LANES] = {0};
                for (int64_t b = 0; b < a->nb; b++) {
                    float dw = s_wblock(w->dtype, row, b, qw);
                    s_block_port(acc, qw, a->qs + (size_t)i * a->ld + (size_t)b * QB,
                                 dw * a->d[(size_t)i * (size_t)a->nb + (size_t)b]);
                }
                y[(size_t)i * (size_t)ldy + (size_t)j] = s_hsum_port(acc);
            }
        }
    }
}

/* No scratch: the portable product quantizing each x block where it is used
 * (quant_act_row_ref on 32 values gives the bytes of the whole row's). */
static void s_matmul_noscratch(float *y, int ldy, const float *x, int ldx,
                               const tensor_t *w, int m)
{
    int8_t qw[QB], qx[QB];
    int64_t nb = w->cols / QB;
    bool b_order = m > GEMM_SMALL_MAX_ROWS; /* s_part_port_b's */
    for (int i = 0; i < m; i++) {
        for (int64_t j = 0; j < w->rows; j++) {
            const uint8_t *row = s_wrow(w, j);
            float acc[LANES] = {0};
            for (int64_t b = 0; b < nb; b++) {
                float dx;
                quant_act_row_ref(x + (size_t)i * (size_t)ldx + (size_t)b * QB, QB, 0,
                                  qx, &dx, NULL);
                float dw = s_wblock(w->dtype, row, b, qw);
                if (b_order) {
                    int32_t isum = 0;
                    for (int t = 0; t < QB; t++)
                        isum += (int32_t)qw[t] * (int32_t)qx[t];
                    acc[0] = fmaf((float)isum, dw * dx, acc[0]);
                } else {
                    s_block_port(acc, qw, qx, dw * dx);
                }
            }
            y[(size_t)i * (size_t)ldy + (size_t)j] = b_order ? acc[0] : s_hsum_port(acc);
        }
    }
}

/* Every fp16 as float32, for the weights' scales: a load where F16C's
 * conversion of a scalar costs 4 to 5 instructions per block (exact either
 * way). Filled once per process. */
static float s_f16_table[1 << 16];
static pthread_once_t s_f16_once = PTHREAD_ONCE_INIT;

static void s_f16_init(void)
{
    for (uint32_t h = 0; h < (1u << 16); h++)
        s_f16_table[h] = quant_f16_to_f32((uint16_t)h);
}

/* ---- AVX2 (+ FMA, F16C) and AVX-512 VNNI ------------------------------------------- */

/* How a tile computes p_l (the same integers every way):
 *   MODE_AVX2_Q8:  maddubs(|w|, sign(x, w)), madd with ones;
 *   MODE_AVX2_Q4:  maddubs(nibbles, x), madd with ones, plus the x group sums
 *                  times -8 (sum (n - 8) x = sum n x - 8 sum x);
 *   MODE_VNNI_Q8:  vpdpbusd(x group sums times -128, w + 128, x);
 *   MODE_VNNI_Q4:  vpdpbusd(x group sums times -8, nibbles, x).
 * maddubs multiplies unsigned by signed bytes into int16 pair sums: |w| <=
 * 128 (or nibbles <= 15) and |x| <= 127 keep them below 32767, so nothing
 * saturates; vpdpbusd sums 4 products into int32 exactly. */
enum { MODE_AVX2_Q8, MODE_AVX2_Q4, MODE_VNNI_Q8, MODE_VNNI_Q4 };

#define S_AVX2 __attribute__((target("avx2,fma,f16c"), always_inline)) static inline
#define S_VNNI_TARGET "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"
#define S_SIMD __attribute__((target(S_VNNI_TARGET), always_inline)) static inline

/* Block b of a Q8_0 row: 32 signed bytes, and its scale broadcast (the
 * table's load broadcast straight into a register: no vector op). */
S_AVX2 __m256i s_wload_q8(const uint8_t *row, int64_t b, __m256 *dw)
{
    const uint8_t *blk = row + b * QUANT_Q8_0_BYTES;
    *dw = _mm256_broadcast_ss(&s_f16_table[s_le16(blk)]);
    return _mm256_loadu_si256((const __m256i *)(blk + 2));
}

/* Block b of a Q4_0 row: its 32 nibbles as bytes in value order (low
 * nibbles first), and its scale broadcast. Two vector ops: the 16 bytes
 * broadcast to both halves by the load, the upper half's 32-bit lanes
 * shifted right by 4 (each byte's low nibble is then its high nibble; the
 * next byte's bits above are masked off), one and. */
S_AVX2 __m256i s_wload_q4(const uint8_t *row, int64_t b, __m256 *dw)
{
    const uint8_t *blk = row + b * QUANT_Q4_0_BYTES;
    *dw = _mm256_broadcast_ss(&s_f16_table[s_le16(blk)]);
    __m256i q = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(blk + 2)));
    q = _mm256_srlv_epi32(q, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    return _mm256_and_si256(q, _mm256_set1_epi8(0x0f));
}

S_AVX2 float s_hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The lanes p_l of one (W block, x block) pair; wa, wb as the tile prepares
 * them (see there), xs the x block's group sums times the mode's factor. */
S_AVX2 __m256i s_pair_avx2(const int mode, __m256i wa, __m256i wb, __m256i xv,
                           const int32_t *xs)
{
    const __m256i ones = _mm256_set1_epi16(1);
    if (mode == MODE_AVX2_Q8)
        return _mm256_madd_epi16(_mm256_maddubs_epi16(wa, _mm256_sign_epi8(xv, wb)), ones);
    return _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(wa, xv), ones),
                            _mm256_loadu_si256((const __m256i *)xs));
}

S_SIMD __m256i s_pair_vnni(const int mode, __m256i wa, __m256i wb, __m256i xv,
                           const int32_t *xs)
{
    (void)mode;
    (void)wb;
    return _mm256_dpbusd_epi32(_mm256_loadu_si256((const __m256i *)xs), wa, xv);
}

/* An R x C tile over all blocks; mode, R, C constants after inlining. Each
 * W block is loaded and unpacked once, then dotted with the R rows of x
 * (their bytes, group sums and scales read from L1 as memory operands, so
 * that registers hold only the R x C accumulators and one W block). */
#define S_DEFINE_TILE(TILE_NAME, TILE_ATTR, TILE_PAIR) \
TILE_ATTR void TILE_NAME(float *y, int ldy, const act_t *a, int i0, \
                   const uint8_t *const *wrow, const int mode, const int R, const int C) \
{ \
    __m256 acc[2][4]; \
    const bool q4 = mode == MODE_AVX2_Q4 || mode == MODE_VNNI_Q4; \
_Pragma("GCC unroll 4") \
    for (int r = 0; r < R; r++) \
_Pragma("GCC unroll 4") \
        for (int c = 0; c < C; c++) \
            acc[r][c] = _mm256_setzero_ps(); \
    const size_t ld = a->ld, nbr = (size_t)a->nb; \
    const int8_t *qx = a->qs + (size_t)i0 * ld; \
    const float *dx = a->d + (size_t)i0 * nbr; \
    const int32_t *sx = a->sums ? a->sums + (size_t)i0 * (ld / 4) : NULL; \
    const uint8_t *w0 = wrow[0], *w1 = wrow[C > 1 ? 1 : 0]; \
    const uint8_t *w2 = wrow[C > 2 ? 2 : 0], *w3 = wrow[C > 3 ? 3 : 0]; \
    for (int64_t b = 0; b < a->nb; b++) { \
_Pragma("GCC unroll 4") \
        for (int c = 0; c < C; c++) { \
            const uint8_t *wr = c == 0 ? w0 : c == 1 ? w1 : c == 2 ? w2 : w3; \
            __m256 dwv; \
            if (s_prefetch_step(q4, b)) \
                _mm_prefetch((const char *)wr + b * (q4 ? QUANT_Q4_0_BYTES : QUANT_Q8_0_BYTES) + PF_DIST, _MM_HINT_T0); \
            __m256i w = q4 ? s_wload_q4(wr, b, &dwv) : s_wload_q8(wr, b, &dwv); \
            __m256i wa, wb = w; \
            if (mode == MODE_AVX2_Q8) \
                wa = _mm256_sign_epi8(w, w);    /* |w| */ \
            else if (mode == MODE_VNNI_Q8) \
                wa = _mm256_xor_si256(w, _mm256_set1_epi8((char)0x80));  /* w + 128 */ \
            else \
                wa = w; \
_Pragma("GCC unroll 4") \
            for (int r = 0; r < R; r++) { \
                __m256i xv = _mm256_loadu_si256( \
                    (const __m256i *)(qx + (size_t)r * ld + (size_t)b * QB)); \
                const int32_t *xs = sx ? sx + (size_t)r * (ld / 4) + (size_t)b * 8 : NULL; \
                __m256i p = TILE_PAIR(mode, wa, wb, xv, xs); \
                __m256 s = _mm256_mul_ps(dwv, _mm256_broadcast_ss(&dx[(size_t)r * nbr + (size_t)b])); \
                acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), s, acc[r][c]); \
            } \
        } \
    } \
_Pragma("GCC unroll 4") \
    for (int r = 0; r < R; r++) \
_Pragma("GCC unroll 4") \
        for (int c = 0; c < C; c++) \
            y[(size_t)r * (size_t)ldy + (size_t)c] = s_hsum256(acc[r][c]); \
}

S_DEFINE_TILE(s_tile_avx2, S_AVX2, s_pair_avx2)
S_DEFINE_TILE(s_tile_vnni, S_SIMD, s_pair_vnni)

/* The VNNI tile for 4 W rows, two per 512-bit register: W row c's block in
 * the low 256 bits, row c + 1's in the high (the x block, its group sums and
 * dx broadcast to both halves), so one instruction each unpacks, multiplies,
 * converts, scales and accumulates two rows' blocks; each half is exactly
 * the 8-lane accumulator of s_tile_vnni, so the bits are the same. A third
 * fewer instructions per W block than s_tile_vnni (decode is bound by them
 * once W streams at memory speed). */
S_SIMD __m512 s_join256(__m256 lo, __m256 hi)
{
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(lo)),
                                               _mm256_castps_pd(hi), 1));
}

/* Block b of Q8_0 rows r0 and r1 in the two halves, and their scales. */
S_SIMD __m512i s_wload2_q8(const uint8_t *r0, const uint8_t *r1, int64_t b, __m512 *dw)
{
    __m256 d0, d1;
    __m256i lo = s_wload_q8(r0, b, &d0), hi = s_wload_q8(r1, b, &d1);
    *dw = s_join256(d0, d1);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

S_SIMD void s_tile_vnni2(float *y, int ldy, const act_t *a, int i0,
                         const uint8_t *const *wrow, const int mode, const int R)
{
    __m512 acc[2][2];
    const bool q4 = mode == MODE_VNNI_Q4;
    const size_t bbytes = q4 ? QUANT_Q4_0_BYTES : QUANT_Q8_0_BYTES;
#pragma GCC unroll 2
    for (int r = 0; r < R; r++)
        acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    const size_t ld = a->ld, nbr = (size_t)a->nb;
    const int8_t *qx = a->qs + (size_t)i0 * ld;
    const float *dx = a->d + (size_t)i0 * nbr;
    const int32_t *sx = a->sums + (size_t)i0 * (ld / 4);
    const __m512i shift = _mm512_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4, 0, 0, 0, 0, 4, 4, 4, 4);
    for (int64_t b = 0; b < a->nb; b++) {
        if (s_prefetch_step(q4, b))
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++)
                _mm_prefetch((const char *)wrow[c] + (size_t)b * bbytes + PF_DIST, _MM_HINT_T0);
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const uint8_t *w0 = wrow[2 * h], *w1 = wrow[2 * h + 1];
            __m512i wa;
            __m512 dwv;
            if (q4) {
                const uint8_t *b0 = w0 + (size_t)b * bbytes, *b1 = w1 + (size_t)b * bbytes;
                dwv = s_join256(_mm256_broadcast_ss(&s_f16_table[s_le16(b0)]),
                                _mm256_broadcast_ss(&s_f16_table[s_le16(b1)]));
                __m512i q = _mm512_inserti64x4(
                    _mm512_castsi256_si512(
                        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(b0 + 2)))),
                    _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(b1 + 2))), 1);
                wa = _mm512_and_si512(_mm512_srlv_epi32(q, shift), _mm512_set1_epi8(0x0f));
            } else {
                wa = _mm512_xor_si512(s_wload2_q8(w0, w1, b, &dwv),
                                      _mm512_set1_epi8((char)0x80));
            }
#pragma GCC unroll 2
            for (int r = 0; r < R; r++) {
                __m512i xv = _mm512_broadcast_i64x4(
                    _mm256_loadu_si256((const __m256i *)(qx + (size_t)r * ld + (size_t)b * QB)));
                __m512i xs = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                    (const __m256i *)(sx + (size_t)r * (ld / 4) + (size_t)b * 8)));
                __m512i p = _mm512_dpbusd_epi32(xs, wa, xv);
                __m512 sc = _mm512_mul_ps(dwv, _mm512_set1_ps(dx[(size_t)r * nbr + (size_t)b]));
                acc[r][h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), sc, acc[r][h]);
            }
        }
    }
#pragma GCC unroll 2
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            y[(size_t)r * (size_t)ldy + 2 * h] = s_hsum256(_mm512_castps512_ps256(acc[r][h]));
            y[(size_t)r * (size_t)ldy + 2 * h + 1] =
                s_hsum256(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[r][h]), 1)));
        }
}

/* Rows [j0, j1) of W in groups of 4, each one tile per 1 or 2 rows of x
 * (8 accumulators at most; 4 x 2 tiles measured a third slower per
 * product, 0.92 against 1.3 ns, W in L2). */
#define S_PART(NAME, TARGET, TILE, TILE4, MODE_)                                 \
    __attribute__((target(TARGET))) static void NAME(                            \
        float *y, int ldy, const act_t *a, const tensor_t *w, int m,             \
        int64_t j0, int64_t j1)                                                  \
    {                                                                            \
        enum { MODE = MODE_ };                                                   \
        for (int64_t j = j0; j < j1; j += 4) {                                   \
            int cw = j1 - j < 4 ? (int)(j1 - j) : 4;                             \
            const uint8_t *wrow[4];                                              \
            for (int c = 0; c < 4; c++)                                          \
                wrow[c] = s_wrow(w, c < cw ? j + c : j);                         \
            for (int i = 0; i < m; i += 2) {                                     \
                float *yt = y + (size_t)i * (size_t)ldy + (size_t)j;             \
                const uint8_t *const *wr = wrow;                                 \
                switch ((m - i < 2 ? 0 : 4) + cw) {                              \
                case 8: TILE4(yt, ldy, a, i, wr, MODE, 2); break;                \
                case 7: TILE(yt, ldy, a, i, wr, MODE, 2, 3); break;              \
                case 6: TILE(yt, ldy, a, i, wr, MODE, 2, 2); break;              \
                case 5: TILE(yt, ldy, a, i, wr, MODE, 2, 1); break;              \
                case 4: TILE4(yt, ldy, a, i, wr, MODE, 1); break;                \
                case 3: TILE(yt, ldy, a, i, wr, MODE, 1, 3); break;              \
                case 2: TILE(yt, ldy, a, i, wr, MODE, 1, 2); break;              \
                default: TILE(yt, ldy, a, i, wr, MODE, 1, 1); break;             \
                }                                                                \
            }                                                                    \
        }                                                                        \
    }

/* The AVX2 path's 4-row tile. */
#define S_TILE4_AVX2(yt, ldy, a, i, wr, mode, R) s_tile_avx2(yt, ldy, a, i, wr, mode, R, 4)

S_PART(s_part_avx2_q8, "avx2,fma,f16c", s_tile_avx2, S_TILE4_AVX2, MODE_AVX2_Q8)
S_PART(s_part_avx2_q4, "avx2,fma,f16c", s_tile_avx2, S_TILE4_AVX2, MODE_AVX2_Q4)
S_PART(s_part_vnni_q8, S_VNNI_TARGET, s_tile_vnni, s_tile_vnni2, MODE_VNNI_Q8)
S_PART(s_part_vnni_q4, S_VNNI_TARGET, s_tile_vnni, s_tile_vnni2, MODE_VNNI_Q4)

/* ---- prefill Q4_0: W rows in lanes ------------------------------------------------------ */

/* For m > GEMM_SMALL_MAX_ROWS, both formats have a kernel of their own (as
 * F32 goes to OpenBLAS there): W is repacked per call, 8 rows at a time, so
 * that one register holds 4 weights of each of 8 rows, and a broadcast of 4
 * activation bytes makes maddubs compute 8 outputs at once (the decode
 * kernel's lanes are positions in the block; these are outputs). Q4_0: the
 * nibbles multiply directly, the 8 groups of a block add up in int16
 * (8 x 2 x 15 x 127 < 32767: exact), one madd makes each row's block sum of
 * nibble x, and the x block sum times -8 makes it sum (n - 8) x. Q8_0: the
 * sign trick per group and a madd to int32 per group (its pair sums reach
 * 32258). Either way each output gets the exact isum_b of each block, and
 * its float order is, per output:
 *   acc = fma((float)isum_b, dw * dx, acc) over increasing b, y = acc,
 * the same on every path (s_part_port_b is the plain version; with AVX-512
 * VNNI, s_part_vnni_b_* below), so the paths still agree to the bit, and a
 * row's result does not depend on the other rows or the thread split among
 * calls of more than 16 rows. Per product it takes about half the decode
 * kernel's instructions for Q4_0, three quarters for Q8_0.
 * W is packed in slices of PK_SLICE blocks (a stack buffer); between slices
 * each output's accumulator waits in y (a float store and load: exact). */
enum { PK_ROWS = 8, PK_SLICE = 64, PACK_AHEAD = 16 };

static void s_part_port_b(float *y, int ldy, const act_t *a, const tensor_t *w, int m,
                          int64_t j0, int64_t j1)
{
    int8_t qw[QB];
    for (int64_t j = j0; j < j1; j++) {
        const uint8_t *row = s_wrow(w, j);
        for (int i = 0; i < m; i++) {
            const int8_t *qx = a->qs + (size_t)i * a->ld;
            float acc = 0.0f;
            for (int64_t b = 0; b < a->nb; b++) {
                float dw = s_wblock(w->dtype, row, b, qw);
                int32_t isum = 0;
                for (int t = 0; t < QB; t++)
                    isum += (int32_t)qw[t] * (int32_t)qx[b * QB + t];
                acc = fmaf((float)isum, dw * a->d[(size_t)i * (size_t)a->nb + (size_t)b], acc);
            }
            y[(size_t)i * (size_t)ldy + (size_t)j] = acc;
        }
    }
}

/* Packs blocks [b0, b0 + nbs) of W rows j .. j + nrows - 1 (zeros beyond):
 * pk[bb][g][r] = the 4 nibbles (as bytes) of group g of row r, dw[bb][r]. */
/* The packing of s_pack for rows j .. j + nrows - 1 (nrows <= 8) into a
 * layout of any width: block bb's group g of these 8 rows at pk + bb *
 * blk_stride + g * (blk_stride / 8) + off, 32 bytes; their scales at dw[bb *
 * dw_stride + r]. s_pack is the 8-row layout; the AVX-512 kernel packs 16
 * rows as two halves (off 0 and 32 of 64-byte groups), and Q8_0's weights
 * biased by 128 (xor 0x80: vpdpbusd takes them unsigned). */
__attribute__((target("avx2,fma,f16c"))) static void
s_pack_into(const tensor_t *w, int64_t j, int nrows, int64_t b0, int nbs, uint8_t *pk,
            size_t blk_stride, size_t off, float *dw, int dw_stride, bool bias128)
{
    const bool q4 = w->dtype == DTYPE_Q4_0;
    const size_t gstride = blk_stride / 8;
    const size_t bytes = q4 ? QUANT_Q4_0_BYTES : QUANT_Q8_0_BYTES;
    for (int bb = 0; bb < nbs; bb++) {
        __m256i v[PK_ROWS];
        for (int r = 0; r < PK_ROWS; r++) {
            if (r < nrows) {
                __m256 d;
                /* The same blocks PACK_AHEAD rows on, which the part packs
                 * next (or after next): a pack reads 8 rows at once, streams
                 * the hardware prefetcher follows poorly, and the prefill
                 * kernel otherwise waited on them (the packs took 40 % of
                 * its time in perf). Medium preset, 128-token prefill, 2
                 * threads, Zen 5, 6 interleaved runs: q4_0 1080 -> 1204
                 * tokens/s, q8_0 1034 -> 1122 (medians). */
                if (s_prefetch_step(q4, b0 + bb) && j + r + PACK_AHEAD < w->rows)
                    _mm_prefetch((const char *)s_wrow(w, j + r + PACK_AHEAD) +
                                     (size_t)(b0 + bb) * bytes, _MM_HINT_T0);
                v[r] = q4 ? s_wload_q4(s_wrow(w, j + r), b0 + bb, &d)
                          : s_wload_q8(s_wrow(w, j + r), b0 + bb, &d);
                if (bias128)
                    v[r] = _mm256_xor_si256(v[r], _mm256_set1_epi8((char)0x80));
                dw[bb * dw_stride + r] = _mm256_cvtss_f32(d);
            } else {
                v[r] = _mm256_setzero_si256();
                dw[bb * dw_stride + r] = 0.0f;
            }
        }
        /* An 8 x 8 transpose of 4-byte groups. */
        __m256i t[8], u[8];
        for (int q = 0; q < 4; q++) {
            t[2 * q] = _mm256_unpacklo_epi32(v[2 * q], v[2 * q + 1]);
            t[2 * q + 1] = _mm256_unpackhi_epi32(v[2 * q], v[2 * q + 1]);
        }
        for (int q = 0; q < 2; q++) {
            u[4 * q + 0] = _mm256_unpacklo_epi64(t[4 * q + 0], t[4 * q + 2]);
            u[4 * q + 1] = _mm256_unpackhi_epi64(t[4 * q + 0], t[4 * q + 2]);
            u[4 * q + 2] = _mm256_unpacklo_epi64(t[4 * q + 1], t[4 * q + 3]);
            u[4 * q + 3] = _mm256_unpackhi_epi64(t[4 * q + 1], t[4 * q + 3]);
        }
        uint8_t *out = pk + (size_t)bb * blk_stride + off;
        for (int g = 0; g < 4; g++) {
            _mm256_storeu_si256((__m256i *)(out + g * gstride),
                                _mm256_permute2x128_si256(u[g], u[4 + g], 0x20));
            _mm256_storeu_si256((__m256i *)(out + (4 + g) * gstride),
                                _mm256_permute2x128_si256(u[g], u[4 + g], 0x31));
        }
    }
}

__attribute__((target("avx2,fma,f16c"))) static void
s_pack(const tensor_t *w, int64_t j, int nrows, int64_t b0, int nbs, uint8_t *pk,
       float *dw)
{
    s_pack_into(w, j, nrows, b0, nbs, pk, PK_ROWS * QB, 0, dw, PK_ROWS, false);
}

/* R rows of x (from i0) against a packed slice; acc from y unless first. */
S_AVX2 void s_tile_b(float *y, int ldy, const act_t *a, int i0, const uint8_t *pk,
                     const float *dw, int64_t b0, int nbs, bool first, int nvalid,
                     const bool q4, const int R)
{
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(nvalid), lane);
    __m256 acc[4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
        acc[r] = first ? _mm256_setzero_ps()
                       : _mm256_maskload_ps(y + (size_t)r * (size_t)ldy, mask);
    const int8_t *qx = a->qs + (size_t)i0 * a->ld;
    const float *dx = a->d + (size_t)i0 * (size_t)a->nb;
    const int32_t *bs = q4 ? a->bsums + (size_t)i0 * (size_t)a->nb : NULL;
    for (int bb = 0; bb < nbs; bb++) {
        int64_t b = b0 + bb;
        __m256i s16[4]; /* Q4_0: int16 pair sums; Q8_0: int32 sums */
#pragma GCC unroll 4
        for (int r = 0; r < R; r++)
            s16[r] = _mm256_setzero_si256();
        const __m256i *wp = (const __m256i *)(pk + (size_t)bb * PK_ROWS * QB);
#pragma GCC unroll 2
        for (int g = 0; g < 8; g++) {
            __m256i wv = _mm256_loadu_si256(wp + g);
            __m256i wabs = q4 ? wv : _mm256_sign_epi8(wv, wv);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                int32_t x4;
                memcpy(&x4, qx + (size_t)r * a->ld + (size_t)b * QB + 4 * g, sizeof x4);
                __m256i xb = _mm256_set1_epi32(x4);
                if (q4)   /* nibbles: 8 groups add up in int16 exactly */
                    s16[r] = _mm256_add_epi16(s16[r], _mm256_maddubs_epi16(wv, xb));
                else      /* |w| x pairs reach 32258: widen every group */
                    s16[r] = _mm256_add_epi32(
                        s16[r], _mm256_madd_epi16(_mm256_maddubs_epi16(
                                                      wabs, _mm256_sign_epi8(xb, wv)),
                                                  ones));
            }
        }
        __m256 dwv = _mm256_loadu_ps(dw + bb * PK_ROWS);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            size_t rb = (size_t)r * (size_t)a->nb + (size_t)b;
            __m256i p = q4 ? _mm256_add_epi32(_mm256_madd_epi16(s16[r], ones),
                                              _mm256_set1_epi32(bs[rb]))
                           : s16[r];
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                                     _mm256_mul_ps(dwv, _mm256_set1_ps(dx[rb])), acc[r]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
        _mm256_maskstore_ps(y + (size_t)r * (size_t)ldy, mask, acc[r]);
}

#define S_PART_B(NAME, Q4)                                                       \
    __attribute__((target("avx2,fma,f16c"))) static void NAME(                   \
        float *y, int ldy, const act_t *a, const tensor_t *w, int m, int64_t j0, \
        int64_t j1)                                                              \
    {                                                                            \
        _Alignas(32) uint8_t pk[PK_SLICE * PK_ROWS * QB];                         \
        _Alignas(32) float dw[PK_SLICE * PK_ROWS];                                \
        for (int64_t j = j0; j < j1; j += PK_ROWS) {                             \
            int nvalid = j1 - j < PK_ROWS ? (int)(j1 - j) : PK_ROWS;             \
            for (int64_t b0 = 0; b0 < a->nb; b0 += PK_SLICE) {                   \
                int nbs = a->nb - b0 < PK_SLICE ? (int)(a->nb - b0) : PK_SLICE;  \
                s_pack(w, j, nvalid, b0, nbs, pk, dw);                           \
                bool first = b0 == 0;                                            \
                for (int i = 0; i < m; i += 4) {                                 \
                    float *yt = y + (size_t)i * (size_t)ldy + (size_t)j;         \
                    switch (m - i < 4 ? m - i : 4) {                             \
                    case 4: s_tile_b(yt, ldy, a, i, pk, dw, b0, nbs, first, nvalid, Q4, 4); break; \
                    case 3: s_tile_b(yt, ldy, a, i, pk, dw, b0, nbs, first, nvalid, Q4, 3); break; \
                    case 2: s_tile_b(yt, ldy, a, i, pk, dw, b0, nbs, first, nvalid, Q4, 2); break; \
                    default: s_tile_b(yt, ldy, a, i, pk, dw, b0, nbs, first, nvalid, Q4, 1); break; \
                    }                                                            \
                }                                                                \
            }                                                                    \
        }                                                                        \
    }

S_PART_B(s_part_avx2_b_q4, true)
S_PART_B(s_part_avx2_b_q8, false)

/* ---- prefill with AVX-512 VNNI: 16 W rows in lanes --------------------------------------- */

/* The prefill kernel above, 16 W rows per register and vpdpbusd: per group of
 * 4 values one instruction multiplies 4 unsigned weight bytes (Q4_0's nibbles,
 * Q8_0's w + 128) by 4 activation bytes broadcast from memory and adds the
 * sums to 16 int32 lanes, one per W row. A block's 8 groups give each row the
 * exact integer dot product of its 32 values, and the block sum of x times
 * -8 (Q4_0) or -128 (Q8_0), precomputed per block, makes it isum_b exactly.
 * The float steps are those of s_tile_b: acc = fma((float)isum_b, dw * dx,
 * acc) per block in increasing b, so this path gives the AVX2 path's bits.
 * About a fifth of the AVX2 kernel's instructions per product. */
enum { VK_ROWS = 16, VK_XROWS = 8 };

#define S_VK __attribute__((target(S_VNNI_TARGET), always_inline)) static inline

/* R rows of x (from i0) against a packed slice of 16 W rows. */
S_VK void s_tile_vk(float *y, int ldy, const act_t *a, int i0, const uint8_t *pk,
                    const float *dw, int64_t b0, int nbs, bool first, __mmask16 valid,
                    const int R)
{
    __m512 acc[VK_XROWS];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
        acc[r] = first ? _mm512_setzero_ps()
                       : _mm512_maskz_loadu_ps(valid, y + (size_t)r * (size_t)ldy);
    const int8_t *qx = a->qs + (size_t)i0 * a->ld;
    const float *dx = a->d + (size_t)i0 * (size_t)a->nb;
    const int32_t *bs = a->bsums + (size_t)i0 * (size_t)a->nb;
    for (int bb = 0; bb < nbs; bb++) {
        const int64_t b = b0 + bb;
        __m512i isum[VK_XROWS];
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)
            isum[r] = _mm512_set1_epi32(bs[(size_t)r * (size_t)a->nb + (size_t)b]);
        const uint8_t *wp = pk + (size_t)bb * VK_ROWS * QB;
#pragma GCC unroll 8
        for (int g = 0; g < 8; g++) {
            __m512i wv = _mm512_loadu_si512((const void *)(wp + 64 * g));
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                int32_t x4;
                memcpy(&x4, qx + (size_t)r * a->ld + (size_t)b * QB + 4 * g, sizeof x4);
                isum[r] = _mm512_dpbusd_epi32(isum[r], wv, _mm512_set1_epi32(x4));
            }
        }
        __m512 dwv = _mm512_loadu_ps(dw + bb * VK_ROWS);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m512 sc = _mm512_mul_ps(dwv, _mm512_set1_ps(dx[(size_t)r * (size_t)a->nb +
                                                             (size_t)b]));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[r]), sc, acc[r]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
        _mm512_mask_storeu_ps(y + (size_t)r * (size_t)ldy, valid, acc[r]);
}

#define S_VK_CASE(R) \
    case R: s_tile_vk(yt, ldy, a, i, pk, dw, b0, nbs, first, valid, R); break;

#define S_PART_VK(NAME, BIAS128)                                                 \
    __attribute__((target(S_VNNI_TARGET))) static void NAME(                     \
        float *y, int ldy, const act_t *a, const tensor_t *w, int m, int64_t j0, \
        int64_t j1)                                                              \
    {                                                                            \
        _Alignas(64) uint8_t pk[PK_SLICE * VK_ROWS * QB];                         \
        _Alignas(64) float dw[PK_SLICE * VK_ROWS];                                \
        for (int64_t j = j0; j < j1; j += VK_ROWS) {                             \
            int nvalid = j1 - j < VK_ROWS ? (int)(j1 - j) : VK_ROWS;             \
            __mmask16 valid = (__mmask16)((1u << nvalid) - 1u);                   \
            for (int64_t b0 = 0; b0 < a->nb; b0 += PK_SLICE) {                   \
                int nbs = a->nb - b0 < PK_SLICE ? (int)(a->nb - b0) : PK_SLICE;  \
                int lo = nvalid < PK_ROWS ? nvalid : PK_ROWS;                    \
                s_pack_into(w, j, lo, b0, nbs, pk, VK_ROWS * QB, 0, dw, VK_ROWS, \
                            BIAS128);                                            \
                s_pack_into(w, j + PK_ROWS, nvalid - lo, b0, nbs, pk,            \
                            VK_ROWS * QB, 32, dw + PK_ROWS, VK_ROWS, BIAS128);    \
                bool first = b0 == 0;                                            \
                for (int i = 0; i < m; i += VK_XROWS) {                          \
                    float *yt = y + (size_t)i * (size_t)ldy + (size_t)j;         \
                    switch (m - i < VK_XROWS ? m - i : VK_XROWS) {               \
                    S_VK_CASE(8) S_VK_CASE(7) S_VK_CASE(6) S_VK_CASE(5)          \
                    S_VK_CASE(4) S_VK_CASE(3) S_VK_CASE(2)                       \
                    default: s_tile_vk(yt, ldy, a, i, pk, dw, b0, nbs, first, valid, 1); \
                    }                                                            \
                }                                                                \
            }                                                                    \
        }                                                                        \
    }

S_PART_VK(s_part_vnni_b_q4, false)
S_PART_VK(s_part_vnni_b_q8, true)

/* ---- the product ----------------------------------------------------------------------- */

/* The calling thread's scratch for quantized activations, freed at its end. */
static pthread_key_t s_key;
static pthread_once_t s_key_once = PTHREAD_ONCE_INIT;
typedef struct scratch {
    void *p;
    size_t size;
} scratch_t;

static void s_scratch_free(void *arg)
{
    scratch_t *s = arg;
    mem_free(s->p);
    mem_free(s);
}

static void s_key_init(void)
{
    if (pthread_key_create(&s_key, s_scratch_free) != 0)
        s_key = (pthread_key_t)-1;
}

/* At least size bytes, MEM_ALIGN-aligned, or NULL when memory is short.
 * It allocates only when a call needs more than any before on this thread
 * (a quarter more, so a growing batch does not allocate every step). */
static void *s_scratch(size_t size)
{
    pthread_once(&s_key_once, s_key_init);
    if (s_key == (pthread_key_t)-1)
        return NULL;
    scratch_t *s = pthread_getspecific(s_key);
    if (!s) {
        s = mem_calloc(1, sizeof *s);
        if (!s)
            return NULL;
        if (pthread_setspecific(s_key, s) != 0) {
            mem_free(s);
            return NULL;
        }
    }
    if (s->size < size) {
        size_t want = size + size / 4;
        void *p = mem_alloc_aligned(want);
        if (!p)
            return NULL;
        mem_free(s->p);
        s->p = p;
        s->size = want;
    }
    return s->p;
}

/* One product of a batch as the kernels see it: its W rows are units
 * [unit0, unit0 + units) of the batch's numbering. */
typedef struct q_op {
    s_part_fn *part;
    float *y;
    int ldy;
    act_t a;
    const tensor_t *w;
    int m;
    int64_t unit0, units;
} q_op_t;

/* A batch's one pool job: its units cut into n_chunks equal ranges, so a
 * chunk may end one product and start the next. */
typedef struct job {
    const q_op_t *ops;
    int n_ops;
    int64_t units;
    int n_chunks;
} job_t;

static void s_run_chunk(void *arg, int t)
{
    const job_t *job = arg;
    const int64_t u0 = job->units * t / job->n_chunks;
    const int64_t u1 = job->units * (t + 1) / job->n_chunks;
    for (int i = 0; i < job->n_ops; i++) {
        const q_op_t *op = &job->ops[i];
        int64_t a = u0 - op->unit0, b = u1 - op->unit0;
        a = a < 0 ? 0 : a;
        b = b < op->units ? b : op->units;
        if (a >= b)
            continue;
        int64_t n = op->w->rows;
        int64_t j0 = a * UNIT_ROWS, j1 = b * UNIT_ROWS < n ? b * UNIT_ROWS : n;
        op->part(op->y, op->ldy, &op->a, op->w, op->m, j0, j1);
    }
}

/* Which kernel runs path for dtype and m (the portable one when the CPU
 * lacks an instruction the fast one needs). */
static s_part_fn *s_part_for(compute_path_t path, dtype_t dt, int m)
{
    bool q4 = dt == DTYPE_Q4_0;
    bool avx2 = (path == COMPUTE_PATH_AVX512 || path == COMPUTE_PATH_AVX2) &&
                __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                __builtin_cpu_supports("f16c");
    const bool vnni = avx2 && path == COMPUTE_PATH_AVX512 &&
                      __builtin_cpu_supports("avx512vnni") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
    if (m > GEMM_SMALL_MAX_ROWS) {
        if (vnni)
            return q4 ? s_part_vnni_b_q4 : s_part_vnni_b_q8;
        return !avx2 ? s_part_port_b : q4 ? s_part_avx2_b_q4 : s_part_avx2_b_q8;
    }
    if (vnni)
        return q4 ? s_part_vnni_q4 : s_part_vnni_q8;
    if (avx2)
        return q4 ? s_part_avx2_q4 : s_part_avx2_q8;
    return s_part_port;
}

/* What a kernel needs of its activations: the group sums' factor (0: none)
 * and the prefill kernels' block sums' factor (0: none). */
static int32_t s_sum_mul(s_part_fn *part)
{
    return part == s_part_avx2_q4 || part == s_part_vnni_q4 ? 8
         : part == s_part_vnni_q8                           ? 128
                                                            : 0;
}

static int32_t s_bsum_mul(s_part_fn *part)
{
    return part == s_part_avx2_b_q4 || part == s_part_vnni_b_q4 ? -8
         : part == s_part_vnni_b_q8                             ? -128
                                                                : 0;
}

/* Where the quantized x of an (m, k) product for part lies in its scratch:
 * bytes, then scales, group sums and block sums (each 64-byte aligned; the
 * sums only where part needs them). Returns the bytes it takes. */
typedef struct act_layout {
    size_t d, sums, bsums, total;
} act_layout_t;

static act_layout_t s_act_layout(s_part_fn *part, int m, int64_t k)
{
    const size_t nb = (size_t)k / QB;
    act_layout_t l = {.d = ((size_t)m * (size_t)k + 63) & ~(size_t)63};
    l.sums = l.d + (((size_t)m * nb * sizeof(float) + 63) & ~(size_t)63);
    l.bsums = l.sums + (s_sum_mul(part) ? (size_t)m * (size_t)k / 4 * sizeof(int32_t) : 0);
    l.total = l.bsums + (s_bsum_mul(part) ? (size_t)m * nb * sizeof(int32_t) : 0);
    l.total = (l.total + 63) & ~(size_t)63;
    return l;
}

/* Quantizes the m rows of x (stride ldx, k values) for part into buf
 * (s_act_layout()'s total) and describes them in *a. */
static void s_quantize(s_part_fn *part, const float *x, int ldx, int m, int64_t k,
                       uint8_t *buf, act_t *a)
{
    const int64_t nb = k / QB;
    const int32_t sum_mul = s_sum_mul(part), bsum_mul = s_bsum_mul(part);
    const act_layout_t l = s_act_layout(part, m, k);
    int8_t *qs = (int8_t *)buf;
    float *d = (float *)(buf + l.d);
    int32_t *sums = sum_mul ? (int32_t *)(buf + l.sums) : NULL;
    int32_t *bsums = bsum_mul ? (int32_t *)(buf + l.bsums) : NULL;
    for (int i = 0; i < m; i++) {
        const float *xi = x + (size_t)i * (size_t)ldx;
        int8_t *qi = qs + (size_t)i * (size_t)k;
        float *di = d + (size_t)i * (size_t)nb;
        int32_t *si = sums ? sums + (size_t)i * (size_t)k / 4 : NULL;
        if (part != s_part_port && part != s_part_port_b)
            quant_act_row(xi, k, sum_mul, qi, di, si);      /* AVX2 inside */
        else
            quant_act_row_ref(xi, k, 0, qi, di, NULL);
        if (bsums) {
            for (int64_t b = 0; b < nb; b++) {
                int32_t t = 0;
                for (int j = 0; j < QB; j++)
                    t += qi[b * QB + j];
                bsums[(size_t)i * (size_t)nb + (size_t)b] = bsum_mul * t;
            }
        }
    }
    *a = (act_t){.qs = qs, .d = d, .ld = (size_t)k, .nb = nb, .sums = sums, .bsums = bsums};
}

/* The earlier op of ops[0 .. i) whose quantized x op i can reuse (the same
 * rows of x for the same kernel family), or -1. */
static int s_same_act(const matmul_op_t *ops, const s_part_fn *const *parts, int i)
{
    for (int j = 0; j < i; j++)
        if (ops[j].x == ops[i].x && ops[j].ldx == ops[i].ldx && ops[j].m == ops[i].m &&
            ops[j].w->cols == ops[i].w->cols && s_sum_mul(parts[j]) == s_sum_mul(parts[i]) &&
            s_bsum_mul(parts[j]) == s_bsum_mul(parts[i]) &&
            (parts[j] == s_part_port || parts[j] == s_part_port_b) ==
                (parts[i] == s_part_port || parts[i] == s_part_port_b))
            return j;
    return -1;
}

/* Up to Q_BATCH_MAX products (none empty), each x quantized once, as one pool
 * job. */
static void s_matmul_batch(compute_t *cx, const matmul_op_t *ops, int n)
{
    assert(n >= 1 && n <= Q_BATCH_MAX);
    pthread_once(&s_f16_once, s_f16_init);
    const compute_path_t path = compute_path(cx);
    s_part_fn *parts[Q_BATCH_MAX];
    int shared[Q_BATCH_MAX];
    size_t offset[Q_BATCH_MAX], total = 0, w_bytes = 0;
    for (int i = 0; i < n; i++) {
        parts[i] = s_part_for(path, ops[i].w->dtype, ops[i].m);
        shared[i] = s_same_act(ops, (const s_part_fn *const *)parts, i);
        offset[i] = total;
        if (shared[i] < 0)
            total += s_act_layout(parts[i], ops[i].m, ops[i].w->cols).total;
        w_bytes += (size_t)ops[i].w->rows * ops[i].w->row_stride;
    }
    uint8_t *buf = s_scratch(total);
    if (!buf) {
        for (int i = 0; i < n; i++)
            s_matmul_noscratch(ops[i].y, ops[i].ldy, ops[i].x, ops[i].ldx, ops[i].w, ops[i].m);
        return;
    }
    q_op_t q[Q_BATCH_MAX];
    int64_t units = 0;
    for (int i = 0; i < n; i++) {
        const matmul_op_t *o = &ops[i];
        q[i] = (q_op_t){.part = parts[i], .y = o->y, .ldy = o->ldy, .w = o->w, .m = o->m,
                        .unit0 = units, .units = (o->w->rows + UNIT_ROWS - 1) / UNIT_ROWS};
        if (shared[i] < 0)
            s_quantize(parts[i], o->x, o->ldx, o->m, o->w->cols, buf + offset[i], &q[i].a);
        else
            q[i].a = q[shared[i]].a;
        units += q[i].units;
    }
    job_t job = {.ops = q, .n_ops = n, .units = units, .n_chunks = 1};
    job.n_chunks = matmul_chunks(cx, w_bytes, units);
    pool_run(compute_pool(cx), s_run_chunk, &job, job.n_chunks);
}

void matmul_q_many(compute_t *cx, const matmul_op_t *ops, int n)
{
    assert(cx && n >= 0 && (n == 0 || ops));
    matmul_op_t live[Q_BATCH_MAX];
    int n_live = 0;
    for (int i = 0; i < n; i++) {
        const matmul_op_t *o = &ops[i];
        assert(o->w->dtype == DTYPE_Q8_0 || o->w->dtype == DTYPE_Q4_0);
        assert(o->m >= 0 && o->w->cols % QB == 0);
        assert(o->m == 0 || o->w->rows == 0 || (o->y && o->ldy >= o->w->rows));
        assert(o->m == 0 || (o->x && o->ldx >= o->w->cols));
        if (o->m == 0 || o->w->rows == 0)
            continue;
        live[n_live++] = *o;
        if (n_live == Q_BATCH_MAX) {
            s_matmul_batch(cx, live, n_live);
            n_live = 0;
        }
    }
    if (n_live > 0)
        s_matmul_batch(cx, live, n_live);
}

void matmul_q8_0(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                 const tensor_t *w, int m)
{
    assert(w->dtype == DTYPE_Q8_0);
    matmul_q_many(cx, &(matmul_op_t){.y = y, .ldy = ldy, .x = x, .ldx = ldx, .w = w, .m = m}, 1);
}

void matmul_q4_0(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                 const tensor_t *w, int m)
{
    assert(w->dtype == DTYPE_Q4_0);
    matmul_q_many(cx, &(matmul_op_t){.y = y, .ldy = ldy, .x = x, .ldx = ldx, .w = w, .m = m}, 1);
}
