/* matmul_q: matmul() (kernels/matmul.h) for weights in ggml's Q8_0 and Q4_0
 * blocks (core/tensor.h), y = x W^T, with int8 dot products as llama.cpp
 * computes them.
 *
 * Numerics: each row of x is quantized once per call to 8-bit blocks of 32
 * with a float32 scale (quant_act_row(), core/quant.h); each block's
 * products are exact integers, scaled by dw * dx and summed in float32. So
 * a result differs from the exact product on the decoded weights by the
 * activations' quantization: at most dx / 2 per value, dx = amax / 127 of
 * its block (tests/test_matmul_q.c holds every path to that bound, and to
 * the bit to a plain C model of the same algorithm).
 *
 * Paths (compute_path()): AVX-512 with VNNI (vpdpbusd) where the CPU has it,
 * AVX2 (maddubs) otherwise, portable C; all give the same bits.
 *
 * Batch invariance: a row's result depends only on its own x row and W for
 * every m up to GEMM_SMALL_MAX_ROWS (the decode kernel). Above 16 rows a
 * prefill kernel runs with a float order of its own (as F32 goes to
 * OpenBLAS there): its rows agree with each other across calls of more than
 * 16 rows, whatever the rows and the thread split, not with a decode call's.
 */
#ifndef MOE_KERNELS_MATMUL_Q_H
#define MOE_KERNELS_MATMUL_Q_H

#include "core/tensor.h"
#include "kernels/compute.h"
#include "kernels/matmul.h"

/* y: (m, w->rows) with row stride ldy; x: (m, w->cols) with stride ldx;
 * w->dtype DTYPE_Q8_0 (resp. DTYPE_Q4_0). Cannot fail. */
void matmul_q8_0(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                 const tensor_t *w, int m);
void matmul_q4_0(compute_t *cx, float *y, int ldy, const float *x, int ldx,
                 const tensor_t *w, int m);

/* matmul_many() (kernels/matmul.h) for Q8_0 and Q4_0 weights only, any mix
 * of them and of m: one pool job per 32 products. */
void matmul_q_many(compute_t *cx, const matmul_op_t *ops, int n);

#endif /* MOE_KERNELS_MATMUL_Q_H */
