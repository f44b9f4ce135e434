/* matmul_f16_prefill: y = x W^T for F16 and BF16 weights and more than
 * GEMM_SMALL_MAX_ROWS rows of x on the AVX-512 path, from the 16-bit
 * weights as stored (matmul_private.h).
 *
 * Why: the generic prefill path (kernels/matmul.c) decodes W into a float
 * tile and hands it to OpenBLAS's sgemm, which packs it once more; on the
 * 2-core Zen 5 development machine (Cooperlake kernels) that ran BF16
 * prefill at 1.25x llama.cpp's F16 where issue 12 asks 1.5x, at 100-260
 * GFLOP/s on 2 threads against an FMA peak of about 2 x 228.
 *
 * How: the outer-product kernel of an sgemm, with W as the packed operand.
 * Per thread, a block of NR = 32 W rows by KB = 256 columns is transposed
 * into a 32 KB stack buffer so that one vector holds 16 W rows at one
 * column (s_pack): F16 decoded to float32 there (vcvtph2ps, exact); BF16
 * kept as stored, 32-bit pairs of adjacent columns, which halves the
 * transposes and leaves the decoding to the tile, two ALU ops per vector
 * (shift left 16: the even column's float32; and 0xffff0000: the odd's). A
 * tile of up to MR = 12 rows of x keeps 12 x 2 accumulators of 16 outputs
 * (24 zmm): per column it loads (or splits) the 2 W vectors and, per row
 * of x, broadcasts x[i][p] from x in place and issues 2 FMAs, 24 FMAs per
 * 14 loads, no horizontal sums. m is covered in tiles of 12 and a last one
 * of 1 to 12 rows (no padding: experts see m of 17 to 60 in a prefill),
 * W's rows in blocks of 32 (masked stores for the last), k in blocks of
 * 256 and a last one of any length (the pack zero-pads its last group).
 * Packing costs about 0.2 (BF16) to 0.5 (F16) instructions per weight, once
 * per call, against m / 16 FMAs per weight.
 *
 * Order: W's rows are cut into chunks over the compute pool (about 4 per
 * thread, so a busy core's share moves to the other); a chunk walks the
 * column blocks and, within one, its row blocks, so the x block (m x 256
 * floats, 128 KB at m = 128) and the chunk's y stay in L2 while W streams
 * from memory once per call; each pack prefetches the rows of the next
 * block. The K-outer order measured 6% faster than rows-outer at m = 128;
 * KB = 512 for BF16 (the same 32 KB) no faster.
 *
 * Numerics: every product is float32 x[i][p] times the exact weight,
 * summed by FMAs in increasing p into one float32 accumulator per output
 * (carried in y between column blocks: a float store and load, exact), a
 * float32 dot product of length k, within the bound tests/test_matmul.c
 * holds every kernel to. Not vdpbf16ps: it would round x to bfloat16. Not
 * batch-invariant in its bits beyond what matmul.h promises (nothing above
 * 16 rows), though a row's results here depend on that row alone.
 *
 * Measured (2026-12-08, the shared 2-core Zen 5, load average 1.5-1.8,
 * interleaved runs against the previous path; the machine's speed varies
 * 2x from minute to minute, so medians): bench-gemm --threads 2 --prefill
 * 128, GFLOP/s on (2816 x 1024) / (1024 x 2816), 3 runs each: BF16 125 /
 * 199 -> 350 / 327, F16 250 / 205 -> 290 / 289, OpenBLAS F32 (unchanged)
 * 145-295; one thread, W past the caches, m = 32 / 128: BF16 about 160 /
 * 190, F16 150 / 170 (peak 228 on this core). bench-core (medium model,
 * 128-token prompt, 2 threads) prefill, 5 pairs: --dtype bfloat16 390 ->
 * 735 tokens/s, float16 (2 pairs) 429 -> 697, float32 (OpenBLAS) 500-510.
 */
#include <assert.h>
#include <immintrin.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "kernels/matmul_private.h"
#include "kernels/pool.h"

enum {
    NR = 32,               /* W rows per packed block: 2 vectors */
    MR = 12,               /* x rows per tile: 24 accumulators */
    KB = 256,              /* columns per packed block: 32 KB as floats (F16), 16 as pairs */
    CHUNKS_PER_THREAD = 4,
};

#define S_TARGET __attribute__((target("avx512f,avx2,fma,f16c")))

/* out[c] = column c of the 16 x 16 matrix whose row r is in[r]. */
S_TARGET __attribute__((always_inline)) static inline void s_transpose16(__m512 in[16])
{
    __m512 t[16];
    #pragma GCC unroll 16
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(in[i], in[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(in[i], in[i + 1]);
    }
    /* t[2q], t[2q+1]: rows 2q, 2q+1 interleaved per 128-bit lane (columns
     * 0,1 / 2,3 of each lane). Pairs of 64 bits next. */
    #pragma GCC unroll 16
    for (int i = 0; i < 16; i += 4) {
        __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 2]);
        __m512d c = _mm512_castps_pd(t[i + 1]), d = _mm512_castps_pd(t[i + 3]);
        in[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        in[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        in[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        in[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
    /* in[4g + c'] now holds, in 128-bit lane l, rows 4g..4g+3 of column
     * 4l + c'. Gather lanes: first across pairs of groups, then across the
     * pairs. */
    #pragma GCC unroll 16
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(in[i], in[4 + i], 0x88);       /* lanes 0,2 | 0,2 */
        t[4 + i] = _mm512_shuffle_f32x4(in[i], in[4 + i], 0xdd);   /* lanes 1,3 | 1,3 */
        t[8 + i] = _mm512_shuffle_f32x4(in[8 + i], in[12 + i], 0x88);
        t[12 + i] = _mm512_shuffle_f32x4(in[8 + i], in[12 + i], 0xdd);
    }
    /* t[i] (i < 4): lane 0,1 = column c' (=i) of lanes 0,2 of groups 0, 1 ...
     * combine with groups 2, 3. */
    #pragma GCC unroll 16
    for (int i = 0; i < 4; i++) {
        in[i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0x88);          /* column i */
        in[8 + i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0xdd);      /* column 8 + i */
        in[4 + i] = _mm512_shuffle_f32x4(t[4 + i], t[12 + i], 0x88); /* column 4 + i */
        in[12 + i] = _mm512_shuffle_f32x4(t[4 + i], t[12 + i], 0xdd);/* column 12 + i */
    }
}

/* Packs columns [p0, p0 + kb) of W's rows [j, j + nrows) for the tiles, 16
 * rows by one group of columns at a time (0 for the rows past nrows):
 *   F16 (!pairs): pk[kk * NR + r] = W[j + r][p0 + kk] as float32 (vcvtph2ps:
 *     exact, subnormals included), groups of 16 columns;
 *   BF16 (pairs): pk[q * NR + r] = the 32 bits of W[j + r][p0 + 2q] (low
 *     half) and W[j + r][p0 + 2q + 1] (high) as stored (the high half 0 past
 *     kb), groups of 32 columns: the same transpose moves twice the columns
 *     and decodes nothing; the tile splits each pair by a shift and a mask.
 * Each row's lines are prefetched for the block below it (the next one
 * packed) while the tiles multiply this one, for the first pf_rows rows:
 * 32 interleaved row streams are more than the hardware prefetcher follows
 * (m = 32 ran 15% slower without). */
S_TARGET __attribute__((always_inline)) static inline void
s_pack(const tensor_t *w, int64_t j, int nrows, int64_t p0, int kb, float *pk, int pf_rows,
       const bool pairs)
{
    const int group = pairs ? 32 : 16;
    for (int h = 0; h < NR; h += 16) {
        const int nr = nrows - h < 0 ? 0 : nrows - h < 16 ? nrows - h : 16;
        for (int kk = 0; kk < kb; kk += group) {
            const int nk = kb - kk < group ? kb - kk : group;
            __m512 v[16];
#pragma GCC unroll 16
            for (int r = 0; r < 16; r++) {
                if (r >= nr) {
                    v[r] = _mm512_setzero_ps();
                    continue;
                }
                const uint16_t *src =
                    (const uint16_t *)((const uint8_t *)w->data +
                                       (size_t)(j + h + r) * w->row_stride) + p0 + kk;
                if (h + r < pf_rows && (pairs || (kk & 16) == 0))  /* a line: 32 weights */
                    __builtin_prefetch((const uint8_t *)src + NR * w->row_stride, 0, 3);
                uint16_t tail[32];
                if (nk < group) {  /* the row's last columns: never read past them */
                    memset(tail, 0, sizeof tail);
                    memcpy(tail, src, (size_t)nk * sizeof *tail);
                    src = tail;
                }
                v[r] = pairs ? _mm512_loadu_ps(src)
                             : _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)src));
            }
            s_transpose16(v);
            const int n_out = pairs ? (nk + 1) / 2 : nk;
            float *out = pk + (size_t)(pairs ? kk / 2 : kk) * NR + h;
#pragma GCC unroll 16
            for (int c = 0; c < n_out; c++)
                _mm512_store_ps(out + (size_t)c * NR, v[c]);
        }
    }
}

/* y[i][j..j+32) (masks m0, m1 for the two halves) for R rows of x from x
 * (row stride ldx), columns [0, kb) of a block s_pack packed (pairs or
 * not); added to y unless first. Each accumulator takes its products in
 * increasing column order. */
S_TARGET __attribute__((always_inline)) static inline void
s_tile(float *y, int ldy, const float *x, int ldx, const float *pk, int kb, bool first,
       __mmask16 m0, __mmask16 m1, const bool pairs, const int R)
{
    __m512 a0[MR], a1[MR];
#pragma GCC unroll 12
    for (int r = 0; r < R; r++) {
        if (first) {
            a0[r] = _mm512_setzero_ps();
            a1[r] = _mm512_setzero_ps();
        } else {
            a0[r] = _mm512_maskz_loadu_ps(m0, y + (size_t)r * ldy);
            a1[r] = _mm512_maskz_loadu_ps(m1, y + (size_t)r * ldy + 16);
        }
    }
    if (pairs) {
        const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
        int q = 0;
        for (; 2 * q + 1 < kb; q++) {
            const __m512i u0 = _mm512_load_si512(pk + (size_t)q * NR);
            const __m512i u1 = _mm512_load_si512(pk + (size_t)q * NR + 16);
            const __m512 e0 = _mm512_castsi512_ps(_mm512_slli_epi32(u0, 16));
            const __m512 e1 = _mm512_castsi512_ps(_mm512_slli_epi32(u1, 16));
            const __m512 o0 = _mm512_castsi512_ps(_mm512_and_si512(u0, hi));
            const __m512 o1 = _mm512_castsi512_ps(_mm512_and_si512(u1, hi));
#pragma GCC unroll 12
            for (int r = 0; r < R; r++) {
                const __m512 xe = _mm512_set1_ps(x[(size_t)r * ldx + 2 * q]);
                a0[r] = _mm512_fmadd_ps(e0, xe, a0[r]);
                a1[r] = _mm512_fmadd_ps(e1, xe, a1[r]);
                const __m512 xo = _mm512_set1_ps(x[(size_t)r * ldx + 2 * q + 1]);
                a0[r] = _mm512_fmadd_ps(o0, xo, a0[r]);
                a1[r] = _mm512_fmadd_ps(o1, xo, a1[r]);
            }
        }
        if (2 * q < kb) {  /* an odd last column: its even half */
            const __m512 e0 = _mm512_castsi512_ps(
                _mm512_slli_epi32(_mm512_load_si512(pk + (size_t)q * NR), 16));
            const __m512 e1 = _mm512_castsi512_ps(
                _mm512_slli_epi32(_mm512_load_si512(pk + (size_t)q * NR + 16), 16));
#pragma GCC unroll 12
            for (int r = 0; r < R; r++) {
                const __m512 xe = _mm512_set1_ps(x[(size_t)r * ldx + 2 * q]);
                a0[r] = _mm512_fmadd_ps(e0, xe, a0[r]);
                a1[r] = _mm512_fmadd_ps(e1, xe, a1[r]);
            }
        }
    } else {
        for (int kk = 0; kk < kb; kk++) {
            const __m512 w0 = _mm512_load_ps(pk + (size_t)kk * NR);
            const __m512 w1 = _mm512_load_ps(pk + (size_t)kk * NR + 16);
#pragma GCC unroll 12
            for (int r = 0; r < R; r++) {
                const __m512 xb = _mm512_set1_ps(x[(size_t)r * ldx + kk]);
                a0[r] = _mm512_fmadd_ps(w0, xb, a0[r]);
                a1[r] = _mm512_fmadd_ps(w1, xb, a1[r]);
            }
        }
    }
#pragma GCC unroll 12
    for (int r = 0; r < R; r++) {
        _mm512_mask_storeu_ps(y + (size_t)r * ldy, m0, a0[r]);
        _mm512_mask_storeu_ps(y + (size_t)r * ldy + 16, m1, a1[r]);
    }
}

#define S_CASE(R) \
    case R: s_tile(yt, ldy, xt, ldx, pk, kb, first, m0, m1, pairs, R); break;

/* All m rows of x against one packed block. */
S_TARGET __attribute__((always_inline)) static inline void
s_tiles(float *y, int ldy, const float *x, int ldx, int m, const float *pk, int kb, bool first,
        int nrows, const bool pairs)
{
    const __mmask16 m0 = (__mmask16)(nrows >= 16 ? 0xffff : (1u << nrows) - 1);
    const __mmask16 m1 = (__mmask16)(nrows >= 32 ? 0xffff
                                     : nrows <= 16 ? 0 : (1u << (nrows - 16)) - 1);
    for (int i = 0; i < m; i += MR) {
        float *yt = y + (size_t)i * ldy;
        const float *xt = x + (size_t)i * ldx;
        switch (m - i < MR ? m - i : MR) {
        S_CASE(12) S_CASE(11) S_CASE(10) S_CASE(9) S_CASE(8) S_CASE(7)
        S_CASE(6) S_CASE(5) S_CASE(4) S_CASE(3) S_CASE(2)
        default: s_tile(yt, ldy, xt, ldx, pk, kb, first, m0, m1, pairs, 1); break;
        }
    }
}

/* One block of F16 and of BF16: packed, then all m rows of x against it. */
S_TARGET static void s_block_f16(const tensor_t *w, int64_t j, int nrows, int64_t p0, int kb,
                                 int pf_rows, float *pk, float *y, int ldy, const float *x,
                                 int ldx, int m)
{
    s_pack(w, j, nrows, p0, kb, pk, pf_rows, false);
    s_tiles(y, ldy, x, ldx, m, pk, kb, p0 == 0, nrows, false);
}

S_TARGET static void s_block_bf16(const tensor_t *w, int64_t j, int nrows, int64_t p0, int kb,
                                  int pf_rows, float *pk, float *y, int ldy, const float *x,
                                  int ldx, int m)
{
    s_pack(w, j, nrows, p0, kb, pk, pf_rows, true);
    s_tiles(y, ldy, x, ldx, m, pk, kb, p0 == 0, nrows, true);
}

typedef struct job {
    float *y;
    const float *x;
    const tensor_t *w;
    int ldy, ldx, m;
    bool bf;
    int64_t rows_per_chunk;
} job_t;

S_TARGET static void s_chunk(void *arg, int t)
{
    const job_t *job = arg;
    const tensor_t *w = job->w;
    const int64_t j0 = (int64_t)t * job->rows_per_chunk;
    const int64_t j1 = w->rows - j0 < job->rows_per_chunk ? w->rows : j0 + job->rows_per_chunk;
    _Alignas(64) float pk[KB * NR];
    for (int64_t p0 = 0; p0 < w->cols; p0 += KB) {
        const int kb = w->cols - p0 < KB ? (int)(w->cols - p0) : KB;
        for (int64_t j = j0; j < j1; j += NR) {
            const int nrows = j1 - j < NR ? (int)(j1 - j) : NR;
            const int64_t next = j1 - j - NR;  /* rows of the next block */
            const int pf_rows = next < 0 ? 0 : next < NR ? (int)next : NR;
            (job->bf ? s_block_bf16 : s_block_f16)(w, j, nrows, p0, kb, pf_rows, pk,
                                                   job->y + j, job->ldy, job->x + p0,
                                                   job->ldx, job->m);
        }
    }
}

void matmul_f16_prefill(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                        const tensor_t *w, int m)
{
    assert(w->dtype == DTYPE_F16 || w->dtype == DTYPE_BF16);
    assert(compute_path(cx) == COMPUTE_PATH_AVX512);
    if (m == 0 || w->rows == 0)
        return;
    if (w->cols == 0) {
        for (int i = 0; i < m; i++)
            memset(y + (size_t)i * ldy, 0, (size_t)w->rows * sizeof *y);
        return;
    }
    const int64_t threads = pool_threads(compute_pool(cx));
    const int64_t blocks = (w->rows + NR - 1) / NR;
    int64_t per = (blocks + threads * CHUNKS_PER_THREAD - 1) / (threads * CHUNKS_PER_THREAD);
    if (per * POOL_MAX_CHUNKS < blocks)
        per = (blocks + POOL_MAX_CHUNKS - 1) / POOL_MAX_CHUNKS;
    job_t job = {.y = y, .x = x, .w = w, .ldy = ldy, .ldx = ldx, .m = m,
                 .bf = w->dtype == DTYPE_BF16, .rows_per_chunk = per * NR};
    const int64_t n_chunks = (blocks + per - 1) / per;
    pool_run(compute_pool(cx), s_chunk, &job, (int)n_chunks);
}
