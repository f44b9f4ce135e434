/* matmul_q: see matmul_q.h.
 *
 * The algorithm (llama.cpp's, with one difference in the activations):
 *   1. each row of x is quantized once per call to 8-bit blocks of 32 with a
 *      float32 scale dx (quant_act_row(): Q8_0's reference algorithm, d kept
 *      in float32 instead of llama.cpp's fp16);
 *   2. each weight block b (32 values q_w, scale dw from its fp16) is dotted
 *      with the activation block in integers, in 8 lanes of 4 consecutive
 *      values: p_l = sum_{t<4} q_w[4l+t] * q_x[4l+t] (exact; Q4_0's q_w is
 *      its nibble minus 8);
 *   3. each output keeps 8 float32 lanes, acc_l = fma((float)p_l, dw * dx,
 *      acc_l) over increasing b (dw * dx one float32 product), and ends with
 *      the fixed sum ((a0+a4)+(a2+a6))+((a1+a5)+(a3+a7)).
 * Every path computes exactly that, so the AVX-512 (VNNI), AVX2 and portable
 * paths give the same bits (the integer sums are exact, the float operations
 * the same in the same order), and tests/test_matmul_q.c holds them to it.
 * A row's result depends on its own x row and W only (step 1 is per row,
 * steps 2-3 per output), never on m, the other rows or the thread split: the
 * kernel is batch-invariant for every m, prefill included.
 *
 * Integer dot per block, per path:
 *   AVX2: maddubs(|w|, sign(x, w)) then madd with ones (llama.cpp's trick:
 *     maddubs multiplies unsigned by signed bytes; |w| <= 128 and |x| <= 127
 *     keep its int16 pair sums below 32767, so nothing saturates);
 *   AVX-512 with VNNI: vpdpbusd(|w|, sign(x, w)), the same products summed
 *     in one instruction (4 to a lane: the same lanes);
 *   portable: the plain sums.
 * Q4_0's nibbles are unpacked to 32 bytes (low nibbles first) and offset by
 * -8 before the same dot.
 *
 * Tiles: R rows of x by C rows of W (4 x 2), each output its own 8-lane
 * accumulator, the W blocks of a tile loaded once per block for its R x rows.
 * W rows are split over the compute pool in chunks (as gemm_small), so W is
 * streamed from memory once per call whatever m; a tile's W rows stay in L1
 * while all rows of x pass (x is small: about 1.1 bytes per value).
 *
 * Prefill: this same int8 kernel (measured against decoding W to float32 and
 * OpenBLAS sgemm: docs/PERFORMANCE.md, "issue 12"); it keeps batch
 * invariance for every m.
 *
 * Scratch: the quantized x (m * (k + k / 8) bytes) lives in a buffer of the
 * calling thread, grown when a call needs more and freed when the thread
 * ends; if it cannot grow, the call computes on the portable path,
 * quantizing each x block where it is used (the same bits, slowly), so a
 * product still cannot fail.
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

#include "core/quant.h"
#include "kernels/matmul_private.h"

enum {
    QB = QUANT_BLOCK,   /* values per block */
    TILE_R = 4,         /* rows of x per tile */
    TILE_C = 2,         /* rows of W per tile */
    LANES = 8,          /* float lanes per output */
};

/* The activations of a call: row i's qs at qs + i * ld, its scales at
 * d + i * nb. */
typedef struct act {
    const int8_t *qs;
    const float *d;
    size_t ld;          /* = k */
    int64_t nb;         /* blocks per row */
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
    for (int64_t jb = j0; jb < j1; jb += TILE_R) {
        int64_t je = jb + TILE_R < j1 ? jb + TILE_R : j1;
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
 * (quant_act_row on 32 values gives the bytes of the whole row's). */
static void s_matmul_noscratch(float *y, int ldy, const float *x, int ldx,
                               const tensor_t *w, int m)
{
    int8_t qw[QB], qx[QB];
    int64_t nb = w->cols / QB;
    for (int i = 0; i < m; i++) {
        for (int64_t j = 0; j < w->rows; j++) {
            const uint8_t *row = s_wrow(w, j);
            float acc[LANES] = {0};
            for (int64_t b = 0; b < nb; b++) {
                float dx;
                quant_act_row(x + (size_t)i * (size_t)ldx + (size_t)b * QB, QB, 0,
                              qx, &dx, NULL);
                float dw = s_wblock(w->dtype, row, b, qw);
                s_block_port(acc, qw, qx, dw * dx);
            }
            y[(size_t)i * (size_t)ldy + (size_t)j] = s_hsum_port(acc);
        }
    }
}

/* ---- AVX2 (+ FMA, F16C) ----------------------------------------------------------- */

#define S_AVX2 __attribute__((target("avx2,fma,f16c"), always_inline)) static inline

/* Block b of a W row as 32 signed bytes, and its scale. */
S_AVX2 __m256i s_wload_q8(const uint8_t *row, int64_t b, float *dw)
{
    const uint8_t *blk = row + b * QUANT_Q8_0_BYTES;
    *dw = _cvtsh_ss(s_le16(blk));
    return _mm256_loadu_si256((const __m256i *)(blk + 2));
}

S_AVX2 __m256i s_wload_q4(const uint8_t *row, int64_t b, float *dw)
{
    const uint8_t *blk = row + b * QUANT_Q4_0_BYTES;
    *dw = _cvtsh_ss(s_le16(blk));
    __m128i q = _mm_loadu_si128((const __m128i *)(blk + 2));
    __m128i m4 = _mm_set1_epi8(0x0f);
    __m128i lo = _mm_and_si128(q, m4);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
    return _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
}

S_AVX2 float s_hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* An R x C tile over all blocks; R, C, Q4 constants after inlining. */
S_AVX2 void s_tile_avx2(float *y, int ldy, const act_t *a, int i0,
                        const uint8_t *const *wrow, const bool q4, const int R,
                        const int C)
{
    __m256 acc[TILE_R][TILE_C];
    __m256i wabs[TILE_C], wv[TILE_C];
    float dw[TILE_C];
    const __m256i ones = _mm256_set1_epi16(1);
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int c = 0; c < C; c++)
            acc[r][c] = _mm256_setzero_ps();
    const int8_t *qx = a->qs + (size_t)i0 * a->ld;
    const float *dx = a->d + (size_t)i0 * (size_t)a->nb;
    for (int64_t b = 0; b < a->nb; b++) {
#pragma GCC unroll 2
        for (int c = 0; c < C; c++) {
            wv[c] = q4 ? s_wload_q4(wrow[c], b, &dw[c]) : s_wload_q8(wrow[c], b, &dw[c]);
            wabs[c] = _mm256_sign_epi8(wv[c], wv[c]);
        }
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            __m256i xv = _mm256_loadu_si256(
                (const __m256i *)(qx + (size_t)r * a->ld + (size_t)b * QB));
            float dxr = dx[(size_t)r * (size_t)a->nb + (size_t)b];
#pragma GCC unroll 2
            for (int c = 0; c < C; c++) {
                __m256i p = _mm256_madd_epi16(
                    _mm256_maddubs_epi16(wabs[c], _mm256_sign_epi8(xv, wv[c])), ones);
                acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                                            _mm256_set1_ps(dw[c] * dxr), acc[r][c]);
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int c = 0; c < C; c++)
            y[(size_t)r * (size_t)ldy + (size_t)c] = s_hsum256(acc[r][c]);
}

#define S_TILE_CASES(TILE, Q4)                                                   \
    switch (rows * 2 + (full ? 1 : 0)) {                                         \
    case 9: TILE(yt, ldy, a, i, wrow, Q4, 4, 2); break;                          \
    case 8: TILE(yt, ldy, a, i, wrow, Q4, 4, 1); break;                          \
    case 7: TILE(yt, ldy, a, i, wrow, Q4, 3, 2); break;                          \
    case 6: TILE(yt, ldy, a, i, wrow, Q4, 3, 1); break;                          \
    case 5: TILE(yt, ldy, a, i, wrow, Q4, 2, 2); break;                          \
    case 4: TILE(yt, ldy, a, i, wrow, Q4, 2, 1); break;                          \
    case 3: TILE(yt, ldy, a, i, wrow, Q4, 1, 2); break;                          \
    default: TILE(yt, ldy, a, i, wrow, Q4, 1, 1); break;                         \
    }

/* Rows [j0, j1) of W, for each pair of W rows every row of x. */
#define S_PART(NAME, TARGET, TILE, Q4)                                           \
    __attribute__((target(TARGET))) static void NAME(                            \
        float *y, int ldy, const act_t *a, const tensor_t *w, int m,             \
        int64_t j0, int64_t j1)                                                  \
    {                                                                            \
        for (int64_t j = j0; j < j1; j += TILE_C) {                              \
            bool full = j + TILE_C <= j1;                                        \
            const uint8_t *wrow[TILE_C] = {s_wrow(w, j),                         \
                                           s_wrow(w, full ? j + 1 : j)};         \
            for (int i = 0; i < m; i += TILE_R) {                                \
                float *yt = y + (size_t)i * (size_t)ldy + (size_t)j;             \
                int rows = m - i < TILE_R ? m - i : TILE_R;                      \
                S_TILE_CASES(TILE, Q4)                                           \
            }                                                                    \
        }                                                                        \
    }

S_PART(s_part_avx2_q8, "avx2,fma,f16c", s_tile_avx2, false)
S_PART(s_part_avx2_q4, "avx2,fma,f16c", s_tile_avx2, true)

/* ---- AVX-512 with VNNI -------------------------------------------------------------- */

#define S_VNNI_TARGET "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"
#define S_VNNI __attribute__((target(S_VNNI_TARGET), always_inline)) static inline

/* The AVX2 tile with vpdpbusd (on 256-bit registers: the same 8 lanes) in
 * place of maddubs + madd. */
S_VNNI void s_tile_vnni(float *y, int ldy, const act_t *a, int i0,
                        const uint8_t *const *wrow, const bool q4, const int R,
                        const int C)
{
    __m256 acc[TILE_R][TILE_C];
    __m256i wabs[TILE_C], wv[TILE_C];
    float dw[TILE_C];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int c = 0; c < C; c++)
            acc[r][c] = _mm256_setzero_ps();
    const int8_t *qx = a->qs + (size_t)i0 * a->ld;
    const float *dx = a->d + (size_t)i0 * (size_t)a->nb;
    for (int64_t b = 0; b < a->nb; b++) {
#pragma GCC unroll 2
        for (int c = 0; c < C; c++) {
            wv[c] = q4 ? s_wload_q4(wrow[c], b, &dw[c]) : s_wload_q8(wrow[c], b, &dw[c]);
            wabs[c] = _mm256_abs_epi8(wv[c]);
        }
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            __m256i xv = _mm256_loadu_si256(
                (const __m256i *)(qx + (size_t)r * a->ld + (size_t)b * QB));
            float dxr = dx[(size_t)r * (size_t)a->nb + (size_t)b];
#pragma GCC unroll 2
            for (int c = 0; c < C; c++) {
                __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wabs[c],
                                                _mm256_sign_epi8(xv, wv[c]));
                acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                                            _mm256_set1_ps(dw[c] * dxr), acc[r][c]);
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int c = 0; c < C; c++)
            y[(size_t)r * (size_t)ldy + (size_t)c] = s_hsum256(acc[r][c]);
}

S_PART(s_part_vnni_q8, S_VNNI_TARGET, s_tile_vnni, false)
S_PART(s_part_vnni_q4, S_VNNI_TARGET, s_tile_vnni, true)

/* ---- activations ---------------------------------------------------------------------- */

/* quant_act_row() with AVX2, the same bytes: max of |x| is exact in any
 * order (finite x), x * id the same product, and roundf (half away from zero)
 * computed exactly as t = trunc(v), t + sign(v) where |v - t| >= 0.5. The
 * cast keeps the low byte of the int32, 0 for NaN or out of range, as
 * quant_act_row does. A block with a NaN goes to quant_act_row itself (its
 * NaN order rule is positional). */
__attribute__((target("avx2,fma"))) static void
s_act_row_avx2(const float *x, int64_t n, int8_t *qs, float *d)
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 half = _mm256_set1_ps(0.5f);
    for (int64_t b = 0; b < n / QB; b++) {
        const float *xb = x + b * QB;
        __m256 v[4], m = _mm256_setzero_ps(), nan = _mm256_setzero_ps();
        for (int g = 0; g < 4; g++) {
            v[g] = _mm256_loadu_ps(xb + 8 * g);
            m = _mm256_max_ps(m, _mm256_and_ps(v[g], absmask));
            nan = _mm256_or_ps(nan, _mm256_cmp_ps(v[g], v[g], _CMP_UNORD_Q));
        }
        if (_mm256_movemask_ps(nan)) {
            quant_act_row(xb, QB, 0, qs + b * QB, d + b, NULL);
            continue;
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        float db = amax / 127;
        float id = db != 0.0f ? 1.0f / db : 0.0f;
        d[b] = db;
        __m256 idv = _mm256_set1_ps(id);
        __m256i q32[4];
        for (int g = 0; g < 4; g++) {
            __m256 p = _mm256_mul_ps(v[g], idv);
            __m256 t = _mm256_round_ps(p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            __m256 frac = _mm256_and_ps(_mm256_sub_ps(p, t), absmask);
            __m256 up = _mm256_cmp_ps(frac, half, _CMP_GE_OQ);
            /* t + copysign(1, p) where the fraction is >= 0.5 */
            __m256 one = _mm256_or_ps(_mm256_and_ps(p, _mm256_set1_ps(-0.0f)),
                                      _mm256_set1_ps(1.0f));
            __m256 r = _mm256_add_ps(t, _mm256_and_ps(up, one));
            /* cvttps gives 0x80000000 for out of range (low byte 0) */
            q32[g] = _mm256_cvttps_epi32(r);
        }
        /* Low bytes of 32 int32s, in order. */
        __m256i mask = _mm256_set1_epi32(0xff);
        __m256i a01 = _mm256_packus_epi32(_mm256_and_si256(q32[0], mask),
                                          _mm256_and_si256(q32[1], mask));
        __m256i a23 = _mm256_packus_epi32(_mm256_and_si256(q32[2], mask),
                                          _mm256_and_si256(q32[3], mask));
        __m256i bytes = _mm256_packus_epi16(a01, a23);
        /* packs interleave the 128-bit halves: restore value order */
        bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(qs + b * QB), bytes);
    }
}

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
    free(s->p);
    free(s);
}

static void s_key_init(void)
{
    if (pthread_key_create(&s_key, s_scratch_free) != 0)
        s_key = (pthread_key_t)-1;
}

/* At least size bytes, 64-aligned, or NULL when memory is short. */
static void *s_scratch(size_t size)
{
    pthread_once(&s_key_once, s_key_init);
    if (s_key == (pthread_key_t)-1)
        return NULL;
    scratch_t *s = pthread_getspecific(s_key);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            return NULL;
        if (pthread_setspecific(s_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (s->size < size) {
        size_t want = size + size / 4;
        want = (want + 63) & ~(size_t)63;
        void *p = aligned_alloc(64, want);
        if (!p)
            return NULL;
        free(s->p);
        s->p = p;
        s->size = want;
    }
    return s->p;
}

typedef struct job {
    s_part_fn *part;
    float *y;
    int ldy;
    const act_t *a;
    const tensor_t *w;
    int m;
    int n_chunks;
} job_t;

static void s_run_chunk(void *arg, int t)
{
    const job_t *job = arg;
    int64_t n = job->w->rows;
    int64_t units = (n + TILE_R - 1) / TILE_R;
    int64_t u0 = units * t / job->n_chunks, u1 = units * (t + 1) / job->n_chunks;
    int64_t j0 = u0 * TILE_R < n ? u0 * TILE_R : n;
    int64_t j1 = u1 * TILE_R < n ? u1 * TILE_R : n;
    if (j0 < j1)
        job->part(job->y, job->ldy, job->a, job->w, job->m, j0, j1);
}

/* Which kernel runs path for dtype (the portable one when the CPU lacks an
 * instruction the fast one needs). */
static s_part_fn *s_part_for(compute_path_t path, dtype_t dt)
{
    bool q4 = dt == DTYPE_Q4_0;
    if (path == COMPUTE_PATH_AVX512 && __builtin_cpu_supports("avx512vnni") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c"))
        return q4 ? s_part_vnni_q4 : s_part_vnni_q8;
    if ((path == COMPUTE_PATH_AVX512 || path == COMPUTE_PATH_AVX2) &&
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c"))
        return q4 ? s_part_avx2_q4 : s_part_avx2_q8;
    return s_part_port;
}

static void s_matmul(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                     const tensor_t *w, int m)
{
    assert(cx);
    assert(m >= 0);
    assert(w->cols % QB == 0);
    assert(m == 0 || w->rows == 0 || (y && ldy >= w->rows));
    assert(m == 0 || (x && ldx >= w->cols));
    if (m == 0 || w->rows == 0)
        return;
    int64_t k = w->cols, nb = k / QB;
    size_t qbytes = (size_t)m * (size_t)k;
    size_t dbytes = (size_t)m * (size_t)nb * sizeof(float);
    uint8_t *buf = s_scratch(((qbytes + 63) & ~(size_t)63) + dbytes);
    if (!buf) {
        s_matmul_noscratch(y, ldy, x, ldx, w, m);
        return;
    }
    int8_t *qs = (int8_t *)buf;
    float *d = (float *)(buf + ((qbytes + 63) & ~(size_t)63));
    compute_path_t path = compute_path(cx);
    s_part_fn *part = s_part_for(path, w->dtype);
    bool avx2_act = part != s_part_port;
    for (int i = 0; i < m; i++) {
        const float *xi = x + (size_t)i * (size_t)ldx;
        if (avx2_act)
            s_act_row_avx2(xi, k, qs + (size_t)i * (size_t)k, d + (size_t)i * (size_t)nb);
        else
            quant_act_row(xi, k, 0, qs + (size_t)i * (size_t)k, d + (size_t)i * (size_t)nb,
                          NULL);
    }
    act_t a = {.qs = qs, .d = d, .ld = (size_t)k, .nb = nb};
    job_t job = {.part = part, .y = y, .ldy = ldy, .a = &a, .w = w, .m = m, .n_chunks = 1};
    int64_t units = (w->rows + TILE_R - 1) / TILE_R;
    job.n_chunks = matmul_chunks(cx, (size_t)w->rows * w->row_stride, units);
    pool_run(compute_pool(cx), s_run_chunk, &job, job.n_chunks);
}

void matmul_q8_0(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                 const tensor_t *w, int m)
{
    assert(w->dtype == DTYPE_Q8_0);
    s_matmul(cx, y, ldy, x, ldx, w, m);
}

void matmul_q4_0(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                 const tensor_t *w, int m)
{
    assert(w->dtype == DTYPE_Q4_0);
    s_matmul(cx, y, ldy, x, ldx, w, m);
}
