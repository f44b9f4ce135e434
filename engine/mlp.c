/* mlp: see mlp.h. */
#include "engine/mlp.h"

#include <assert.h>
#include <errno.h>
#include <math.h>

#include "core/mem.h"
#include "kernels/ffn.h"
#include "kernels/gemm.h"
#include "kernels/matmul.h"

struct mlp {
    int hidden;
    int max_width;
    int max_rows;
    float *gate;   /* (max_rows, max_width) */
    float *up;     /* (max_rows, max_width) */
    float *y;      /* (max_rows, hidden) */
    float *g;      /* (max_rows) the per-row gate logits */
    compute_t *cx; /* the products' context, borrowed */
};

mlp_t *mlp_new(int hidden, int max_width, int max_rows, compute_t *cx, err_t *err)
{
    assert(cx);
    if (hidden < 1 || max_width < 1 || max_rows < 1) {
        err_set(err, EINVAL, "mlp sizes must be positive");
        return NULL;
    }
    mlp_t *self = mem_calloc(1, sizeof *self);
    if (!self)
        goto oom;
    self->hidden = hidden;
    self->max_width = max_width;
    self->max_rows = max_rows;
    self->cx = cx;
    const size_t rows = (size_t)max_rows;
    self->gate = mem_alloc_aligned(rows * max_width * sizeof(float));
    self->up = mem_alloc_aligned(rows * max_width * sizeof(float));
    self->y = mem_alloc_aligned(rows * hidden * sizeof(float));
    self->g = mem_alloc_aligned(rows * sizeof(float));
    if (!self->gate || !self->up || !self->y || !self->g)
        goto oom;
    return self;

oom:
    mlp_destroy(&self);
    err_set(err, ENOMEM, "out of memory for the shared/dense FFN scratch (%d rows)",
            max_rows);
    return NULL;
}

void mlp_destroy(mlp_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    mlp_t *self = *self_p;
    int saved = errno;
    mem_free(self->gate);
    mem_free(self->up);
    mem_free(self->y);
    mem_free(self->g);
    mem_free(self);
    *self_p = NULL;
    errno = saved;
}

void mlp_add(mlp_t *self, const expert_weights_t *w, int width, const float *gate_w,
             const float *u, int n_rows, float *out)
{
    assert(self && w && w->gate.data && w->up.data && w->down.data);
    assert(width >= 1 && width <= self->max_width);
    assert(n_rows >= 0 && n_rows <= self->max_rows);
    const int hidden = self->hidden;
    if (n_rows == 0)
        return;
    mlp_swiglu(self->cx, self->y, u, n_rows, hidden, width, w, NULL, 0, self->gate,
               self->up);
    if (gate_w)
        gemm_linear(self->cx, self->g, u, gate_w, n_rows, 1, hidden);
    for (int r = 0; r < n_rows; r++) {
        /* sigmoid as torch: 1 / (1 + exp(-x)) in float32 */
        const float s = gate_w ? 1.0f / (1.0f + expf(-self->g[r])) : 1.0f;
        float *dst = out + (size_t)r * hidden;
        const float *src = self->y + (size_t)r * hidden;
        if (gate_w)
            for (int j = 0; j < hidden; j++)
                dst[j] += s * src[j];
        else
            for (int j = 0; j < hidden; j++)
                dst[j] += src[j];
    }
}

/* Blocks per fused round: two products each, matmul_many's batch. */
enum { BLOCKS_PER_ROUND = 16 };

void mlp_swiglu_many(compute_t *cx, int hidden, int width, float limit,
                     const mlp_block_t *blocks, int n_blocks)
{
    assert(n_blocks >= 0 && (n_blocks == 0 || blocks));
    for (int b0 = 0; b0 < n_blocks; b0 += BLOCKS_PER_ROUND) {
        const int nb = n_blocks - b0 < BLOCKS_PER_ROUND ? n_blocks - b0 : BLOCKS_PER_ROUND;
        const mlp_block_t *bl = blocks + b0;
        matmul_op_t ops[2 * BLOCKS_PER_ROUND];
        for (int i = 0; i < nb; i++) {
            ops[2 * i] = (matmul_op_t){.y = bl[i].gate, .ldy = width, .x = bl[i].x,
                                       .ldx = hidden, .w = &bl[i].w->gate, .m = bl[i].n};
            ops[2 * i + 1] = (matmul_op_t){.y = bl[i].up, .ldy = width, .x = bl[i].x,
                                           .ldx = hidden, .w = &bl[i].w->up, .m = bl[i].n};
        }
        matmul_many(cx, ops, 2 * nb);
        for (int i = 0; i < nb; i++) {
            const expert_biases_t *eb = bl[i].eb;
            const int n = bl[i].n;
            if (!eb) {
                ffn_swiglu(bl[i].gate, bl[i].gate, bl[i].up, (size_t)n * width);
            } else {
                ffn_bias_add(bl[i].gate, width, eb->gate, n, width);
                ffn_bias_add(bl[i].up, width, eb->up, n, width);
                ffn_swiglu_clamped(bl[i].gate, bl[i].gate, bl[i].up, (size_t)n * width,
                                   FFN_OSS_ALPHA, limit);
            }
            ops[i] = (matmul_op_t){.y = bl[i].y, .ldy = hidden, .x = bl[i].gate,
                                   .ldx = width, .w = &bl[i].w->down, .m = n};
        }
        matmul_many(cx, ops, nb);
        for (int i = 0; i < nb; i++)
            if (bl[i].eb)
                ffn_bias_add(bl[i].y, hidden, bl[i].eb->down, bl[i].n, hidden);
    }
}

void mlp_swiglu(compute_t *cx, float *y, const float *x, int n, int hidden,
                int width, const expert_weights_t *w, const expert_biases_t *eb,
                float limit, float *gate, float *up)
{
    const mlp_block_t block = {.y = y, .x = x, .n = n, .w = w, .eb = eb, .gate = gate, .up = up};
    mlp_swiglu_many(cx, hidden, width, limit, &block, 1);
}
