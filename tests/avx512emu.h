/* avx512emu: scalar stand-ins for the AVX-512 intrinsics kernels/matmul_tile.h
 * uses, renamed over the real ones by macros (included after <immintrin.h>), so
 * that tests/test_matmul_avx512.c runs the AVX-512 kernels on any AVX2 CPU.
 * Each follows the instruction's definition lane by lane; the reduction follows
 * GCC's _mm512_reduce_add_ps (256-bit halves, 128-bit halves, (0+2, 1+3), 0+1). */
#ifndef MOE_TESTS_AVX512EMU_H
#define MOE_TESTS_AVX512EMU_H

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/tensor.h"

/* The kernels calling these are compiled for AVX2 (the 256-bit parts are real). */
#define EMU_FN __attribute__((target("avx2,fma,f16c"), noinline)) static  /* small to compile */

typedef struct { float f[16]; } emu_ps;
typedef struct { uint32_t u[16]; } emu_si;
#define __m512 emu_ps
#define __m512i emu_si
#define __mmask16 uint16_t
EMU_FN float emu_h2f(uint16_t h) { return dtype_f16_value(h); } /* exact: test_tensor */
#define _mm512_castsi512_ps emu_castsi512_ps
EMU_FN emu_ps emu_castsi512_ps(emu_si a) { emu_ps r; memcpy(&r, &a, 64); return r; }
#define _mm512_cvtepi32_ps emu_cvtepi32_ps
EMU_FN emu_ps emu_cvtepi32_ps(emu_si a) { emu_ps r; for (int i = 0; i < 16; i++) r.f[i] = (float)(int32_t)a.u[i]; return r; }
#define _mm512_cvtepi8_epi32 emu_cvtepi8_epi32
EMU_FN emu_si emu_cvtepi8_epi32(__m128i a) { int8_t b[16]; memcpy(b, &a, 16); emu_si r; for (int i = 0; i < 16; i++) r.u[i] = (uint32_t)(int32_t)b[i]; return r; }
#define _mm512_cvtepu16_epi32 emu_cvtepu16_epi32
EMU_FN emu_si emu_cvtepu16_epi32(__m256i a) { uint16_t b[16]; memcpy(b, &a, 32); emu_si r; for (int i = 0; i < 16; i++) r.u[i] = b[i]; return r; }
#define _mm512_cvtph_ps emu_cvtph_ps
EMU_FN emu_ps emu_cvtph_ps(__m256i a) { uint16_t b[16]; memcpy(b, &a, 32); emu_ps r; for (int i = 0; i < 16; i++) r.f[i] = emu_h2f(b[i]); return r; }
#define _mm512_fmadd_ps emu_fmadd_ps
EMU_FN emu_ps emu_fmadd_ps(emu_ps a, emu_ps b, emu_ps c) { emu_ps r; for (int i = 0; i < 16; i++) r.f[i] = fmaf(a.f[i], b.f[i], c.f[i]); return r; }
#define _mm512_loadu_ps emu_loadu_ps
EMU_FN emu_ps emu_loadu_ps(const float *p) { emu_ps r; memcpy(&r, p, 64); return r; }
#define _mm512_maskz_loadu_ps emu_maskz_loadu_ps
EMU_FN emu_ps emu_maskz_loadu_ps(uint16_t m, const float *p) { emu_ps r; for (int i = 0; i < 16; i++) r.f[i] = (m >> i) & 1 ? p[i] : 0.0f; return r; }
#define _mm512_storeu_ps emu_storeu_ps
EMU_FN void emu_storeu_ps(float *p, emu_ps a) { memcpy(p, &a, 64); }
#define _mm512_mask_storeu_ps emu_mask_storeu_ps
EMU_FN void emu_mask_storeu_ps(float *p, uint16_t m, emu_ps a) { for (int i = 0; i < 16; i++) if ((m >> i) & 1) p[i] = a.f[i]; }
#define _mm512_mul_ps emu_mul_ps
EMU_FN emu_ps emu_mul_ps(emu_ps a, emu_ps b) { emu_ps r; for (int i = 0; i < 16; i++) r.f[i] = a.f[i] * b.f[i]; return r; }
#define _mm512_set1_ps emu_set1_ps
EMU_FN emu_ps emu_set1_ps(float v) { emu_ps r; for (int i = 0; i < 16; i++) r.f[i] = v; return r; }
#define _mm512_setzero_ps emu_setzero_ps
EMU_FN emu_ps emu_setzero_ps(void) { return emu_set1_ps(0.0f); }
#define _mm512_slli_epi32 emu_slli_epi32
EMU_FN emu_si emu_slli_epi32(emu_si a, int n) { for (int i = 0; i < 16; i++) a.u[i] <<= n; return a; }
#define _mm512_reduce_add_ps emu_reduce_add_ps
EMU_FN float emu_reduce_add_ps(emu_ps a) {
    float t3[8], t6[4];
    for (int i = 0; i < 8; i++) t3[i] = a.f[8 + i] + a.f[i];
    for (int i = 0; i < 4; i++) t6[i] = t3[4 + i] + t3[i];
    float t8_0 = t6[0] + t6[2], t8_1 = t6[1] + t6[3];
    return t8_0 + t8_1;
}

#endif /* MOE_TESTS_AVX512EMU_H */
