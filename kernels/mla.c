/* mla: see mla.h.
 *
 * Widths below: R = kv_lora_rank, P = qk_rope_head_dim, W = R + P (a cache
 * row), D = qk_nope_head_dim + P (a query head), N = qk_nope_head_dim,
 * V = v_head_dim, H = n_heads. kv_b_proj's head h block is rows
 * h*(N+V) .. h*(N+V)+N-1 (W_uk_h, (N, R)) then N+V-1 (W_uv_h, (V, R)).
 *
 * Scratch, in floats, for m = max_rows:
 *   qa:   (m, q_lora_rank)  q LoRA down-projection, then its norm
 *   q:    (m, H * D)        per-head [q_nope | q_pe]
 *   qcat: (m, H * W)        per-head [q_lat | rotated q_pe], the MQA queries
 *   olat: (m, H * R)        per-head latent attention output
 *   o:    (m, H * V)        per-head value-space output, o_proj's input
 *   pe:   (P)               one row's rope part while it is de-interleaved
 *   y:    (m, hidden)       o_proj's product before it is added (weights
 *                           not in float32)
 *   attn: attention_scratch_floats(m, max_ctx)
 */
#include "kernels/mla.h"

#include <assert.h>
#include <errno.h>
#include <string.h>

#include "core/mem.h"
#include "kernels/attention.h"
#include "kernels/gemm.h"
#include "kernels/matmul.h"
#include "kernels/rmsnorm.h"

struct mla {
    mla_shape_t shape;          /* copied at mla_new */
    attention_shape_t attn;     /* the absorbed MQA: H heads, 1 KV head of W */
    int max_rows;               /* rows per mla_run */
    int max_ctx;                /* positions per sequence */
    int *pos;                   /* (max_rows) positions of the current rows */
    float *qa, *q, *qcat, *olat, *o, *pe, *y, *attn_scratch; /* see above */
    float *buf;                 /* the one allocation behind the float scratch */
};

int mla_cache_width(const mla_shape_t *shape)
{
    assert(shape);
    return shape->kv_lora_rank + shape->qk_rope_head_dim;
}

mla_t *mla_new(const mla_shape_t *shape, int max_rows, int max_ctx, err_t *err)
{
    assert(shape);
    const mla_shape_t *s = shape;
    if (s->hidden < 1 || s->n_heads < 1 || s->q_lora_rank < 0 ||
        s->kv_lora_rank < 1 || s->qk_nope_head_dim < 1 ||
        s->qk_rope_head_dim < 2 || s->qk_rope_head_dim % 2 != 0 ||
        s->v_head_dim < 1 || max_rows < 1 || max_ctx < max_rows) {
        err_set(err, EINVAL, "mla: bad shape (hidden %d, heads %d, q_lora %d, "
                "kv_lora %d, nope %d, rope %d, v %d) or sizes (rows %d, ctx %d)",
                s->hidden, s->n_heads, s->q_lora_rank, s->kv_lora_rank,
                s->qk_nope_head_dim, s->qk_rope_head_dim, s->v_head_dim,
                max_rows, max_ctx);
        return NULL;
    }
    mla_t *self = mem_calloc(1, sizeof *self);
    if (!self)
        goto nomem;
    self->shape = *s;
    self->max_rows = max_rows;
    self->max_ctx = max_ctx;
    const size_t H = (size_t)s->n_heads, R = (size_t)s->kv_lora_rank;
    const size_t P = (size_t)s->qk_rope_head_dim, W = R + P;
    const size_t D = (size_t)s->qk_nope_head_dim + P;
    const size_t V = (size_t)s->v_head_dim, m = (size_t)max_rows;
    self->attn = (attention_shape_t){
        .n_heads = s->n_heads, .n_kv_heads = 1, .head_dim = (int)W,
        .v_head_dim = (int)R, .scale = s->scale, .window = 0,
    };
    const size_t n_qa = m * (size_t)s->q_lora_rank, n_q = m * H * D;
    const size_t n_qcat = m * H * W, n_olat = m * H * R, n_o = m * H * V;
    const size_t n_attn = attention_scratch_floats(&self->attn, max_rows, max_ctx);
    const size_t n_y = m * (size_t)s->hidden;
    self->buf = mem_alloc_aligned((n_qa + n_q + n_qcat + n_olat + n_o + P + n_y + n_attn) *
                                  sizeof(float));
    self->pos = mem_alloc(m * sizeof *self->pos);
    if (!self->buf || !self->pos)
        goto nomem;
    self->qa = self->buf;
    self->q = self->qa + n_qa;
    self->qcat = self->q + n_q;
    self->olat = self->qcat + n_qcat;
    self->o = self->olat + n_olat;
    self->pe = self->o + n_o;
    self->y = self->pe + P;
    self->attn_scratch = self->y + n_y;
    return self;

nomem:
    mla_destroy(&self);
    err_set(err, ENOMEM, "mla: out of memory for %d rows over %d positions",
            max_rows, max_ctx);
    return NULL;
}

void mla_destroy(mla_t **self_p)
{
    assert(self_p);
    mla_t *self = *self_p;
    if (!self)
        return;
    mem_free(self->pos);
    mem_free(self->buf);
    mem_free(self);
    *self_p = NULL;
}

/* y: (n, width) row stride ldy, += b: (width) on every row. */
static void s_add_bias(float *y, int ldy, const float *b, int n, int width)
{
    for (int r = 0; r < n; r++)
        for (int i = 0; i < width; i++)
            y[(size_t)r * ldy + i] += b[i];
}

/* dst = src with even entries first, then odd: (P), no aliasing. */
static void s_deinterleave(float *dst, const float *src, int p)
{
    for (int i = 0; i < p / 2; i++) {
        dst[i] = src[2 * i];
        dst[p / 2 + i] = src[2 * i + 1];
    }
}

/* out (+)= o o_proj^T over n rows. Float32 weights take the one GEMM they
 * always took (out as C, beta = 1 when accumulating), so that their results
 * stay bit for bit what they were; other formats go through matmul into y,
 * then the sum. */
static void s_o_proj(compute_t *cx, float *out, int ldo, bool accumulate, const float *o,
                     int ld_o, const tensor_t *w, int n, float *y)
{
    const int hid = (int)w->rows;
    if (w->dtype == DTYPE_F32) {
        gemm(cx, out, ldo, o, ld_o, w->data, (int)(w->row_stride / sizeof(float)), n, hid,
             (int)w->cols, true, 1.0f, accumulate ? 1.0f : 0.0f);
        return;
    }
    if (!accumulate) {
        matmul(cx, out, ldo, o, ld_o, w, n);
        return;
    }
    matmul(cx, y, hid, o, ld_o, w, n);
    for (int r = 0; r < n; r++)
        for (int j = 0; j < hid; j++)
            out[(size_t)r * ldo + j] += y[(size_t)r * hid + j];
}

void mla_run(mla_t *self, compute_t *cx, float *out, int ldo, bool accumulate,
             const float *x, int n, int pos0, float *cache, const mla_weights_t *w,
             const rope_t *rope)
{
    assert(self && cx && out && x && cache && w && rope);
    const mla_shape_t *s = &self->shape;
    assert(n >= 1 && n <= self->max_rows);
    assert(pos0 >= 0 && pos0 + n <= self->max_ctx);
    assert(ldo >= s->hidden);
    const int H = s->n_heads, R = s->kv_lora_rank, P = s->qk_rope_head_dim;
    const int W = R + P, N = s->qk_nope_head_dim, D = N + P;
    const int V = s->v_head_dim, hid = s->hidden;

    for (int r = 0; r < n; r++)
        self->pos[r] = pos0 + r;

    /* Queries: (n, H * D). */
    if (s->q_lora_rank > 0) {
        assert(w->q_a_proj && w->q_a_norm && w->q_b_proj);
        const int qr = s->q_lora_rank;
        matmul(cx, self->qa, qr, x, hid, w->q_a_proj, n);
        if (w->q_a_bias)
            s_add_bias(self->qa, qr, w->q_a_bias, n, qr);
        rmsnorm(self->qa, qr, self->qa, qr, w->q_a_norm, n, qr, s->eps);
        matmul(cx, self->q, H * D, self->qa, qr, w->q_b_proj, n);
    } else {
        assert(w->q_proj);
        matmul(cx, self->q, H * D, x, hid, w->q_proj, n);
    }

    /* The new cache rows: [kv_a_layernorm(c) | rope(k_pe)]. */
    assert(w->kv_a_proj && w->kv_a_norm && w->kv_b_proj && w->o_proj);
    float *rows = cache + (size_t)pos0 * W; /* (n, W) */
    matmul(cx, rows, W, x, hid, w->kv_a_proj, n);
    if (w->kv_a_bias)
        s_add_bias(rows, W, w->kv_a_bias, n, W);
    rmsnorm(rows, W, rows, W, w->kv_a_norm, n, R, s->eps);
    if (s->rope_interleaved)
        for (int r = 0; r < n; r++) {
            float *pe = rows + (size_t)r * W + R;
            memcpy(self->pe, pe, (size_t)P * sizeof *pe);
            s_deinterleave(pe, self->pe, P);
        }
    rope_apply(rope, rows + R, W, n, 1, P, self->pos);

    /* MQA queries: q_lat_h = q_nope_h W_uk_h, (n, R), then q_pe_h. */
    const int ldq = H * D, ldc = H * W;
    for (int h = 0; h < H; h++) {
        const tensor_t w_uk = tensor_rows(w->kv_b_proj, (int64_t)h * (N + V), N); /* (N, R) */
        matmul_xw(cx, self->qcat + (size_t)h * W, ldc, self->q + (size_t)h * D, ldq, &w_uk,
                  n);
        for (int r = 0; r < n; r++) {
            const float *src = self->q + (size_t)r * ldq + (size_t)h * D + N;
            float *dst = self->qcat + (size_t)r * ldc + (size_t)h * W + R;
            if (s->rope_interleaved)
                s_deinterleave(dst, src, P);
            else
                memcpy(dst, src, (size_t)P * sizeof *dst);
        }
    }
    rope_apply(rope, self->qcat + R, ldc, n, H, W, self->pos);

    /* One KV head for all H query heads: keys are whole cache rows, values
     * their c_kv part. olat: (n, H * R). */
    attention(cx, self->olat, H * R, self->qcat, ldc, cache, W, cache, W,
              &self->attn, n, pos0, self->attn_scratch);

    /* o_h = o_lat_h W_uv_h^T: (n, V), then o_proj. */
    for (int h = 0; h < H; h++) {
        const tensor_t w_uv = tensor_rows(w->kv_b_proj, (int64_t)h * (N + V) + N, V); /* (V, R) */
        matmul(cx, self->o + (size_t)h * V, H * V, self->olat + (size_t)h * R, H * R, &w_uv,
               n);
    }
    s_o_proj(cx, out, ldo, accumulate, self->o, H * V, w->o_proj, n, self->y);
    if (w->o_bias)
        s_add_bias(out, ldo, w->o_bias, n, hid);
}
