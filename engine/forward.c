/* forward: see forward.h. */
#include "engine/forward.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/blas.h"
#include "core/mem.h"
#include "core/timer.h"
#include "engine/experts.h"
#include "engine/latent.h"
#include "engine/mlp.h"
#include "engine/qknorm.h"
#include "engine/rotary.h"
#include "engine/routing.h"
#include "kernels/attention.h"
#include "kernels/compute.h"
#include "kernels/ffn.h"
#include "kernels/gemm.h"
#include "kernels/matmul.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"

enum { HEAD_ROWS = 32 }; /* sequences per LM-head product */

struct forward {
    const weights_t *w;
    const config_t *cfg;      /* &w->cfg */
    int max_rows;             /* tokens per chunk */
    int max_ctx;              /* positions per sequence */
    attention_shape_t attn;
    compute_t *cx;            /* every product's pool and code path */
    rope_t *rope;             /* plain attention's; NULL for MLA */
    forward_moe_fn moe;
    void *moe_ctx;
    experts_t *local;         /* in-process experts when no callback was given */
    mlp_t *mlp;               /* shared experts and dense FFNs; NULL when none */
    latent_t *latent;         /* MLA attention (deepseek); NULL otherwise */
    forward_trace_fn trace;
    void *trace_ctx;

    int32_t *pos;             /* (max_rows) positions of the chunk's tokens */
    float *x;                 /* (max_rows, hidden) residual stream */
    float *xn;                /* (max_rows, hidden) normalised input of a block */
    float *q;                 /* (max_rows, heads * head_dim) */
    float *k_new;             /* (max_rows, kv_heads * head_dim) a step's new keys */
    float *v_new;             /* (max_rows, kv_heads * head_dim) a step's new values */
    float *head_in;           /* (HEAD_ROWS, hidden) last rows, normalised */
    float *head_out;          /* (HEAD_ROWS, vocab) their logits */
    float *attn_out;          /* (max_rows, heads * head_dim) */
    float *attn_scratch;      /* attention_scratch_floats(max_rows, max_ctx) */
    float *router_logits;     /* (max_rows, n_experts) */
    int32_t *expert_ids;      /* (max_rows, k) */
    float *expert_weights;    /* (max_rows, k) */
    moe_assign_t *assign;     /* (max_rows * k) */
    float *moe_out;           /* (max_rows, hidden) */
    float *shared_out;        /* (max_rows, hidden) shared experts' output */
    float *proj;              /* (max_rows, max(hidden, kv width)) a product added
                                 after (weights not held in float32) */
    forward_moe_start_fn moe_start;   /* NULL: the moe callback is synchronous */
    forward_moe_finish_fn moe_finish;
    int micro_batches;        /* 1 or 2: how a step may be split (forward.h) */
    double seconds_overlap;   /* own work done while experts were away */
};

/* A micro-batch: sequences [s0, s0 + n_seqs) of a step, its rows [r0, r0 + n). */
typedef struct part {
    int s0, n_seqs;
    int r0, n;
} part_t;

static int s_local_moe(void *ctx, int layer, const float *u, int n_rows,
                       const moe_assign_t *assign, int n_assign, float *out, err_t *err)
{
    forward_t *self = ctx;
    return experts_run(self->local, self->w, layer, u, n_rows, assign, n_assign, out, err);
}

forward_t *forward_new(const weights_t *w, int max_rows, int max_ctx,
                       forward_moe_fn moe, void *moe_ctx, err_t *err)
{
    const config_t *cfg = &w->cfg;
    if (!w->has_dense) {
        err_set(err, EINVAL, "the forward pass needs the dense weights loaded");
        return NULL;
    }
    if (max_rows < 1 || max_ctx < 1) {
        err_set(err, EINVAL, "forward pass sizes must be positive");
        return NULL;
    }
    if (!config_arch_supported(cfg->arch)) {
        err_set(err, ENOTSUP, "architecture '%s' is not supported yet", cfg->model_type);
        return NULL;
    }
    forward_t *self = mem_calloc(1, sizeof *self);
    if (!self) {
        err_set(err, ENOMEM, "out of memory for the forward pass");
        return NULL;
    }
    self->w = w;
    self->cfg = cfg;
    self->max_rows = max_rows;
    self->max_ctx = max_ctx;
    /* gemm_small uses as many threads as OpenBLAS is set to. */
    self->cx = compute_new(blas_threads(), err);
    if (!self->cx)
        goto fail;
    self->attn = (attention_shape_t){
        .n_heads = cfg->n_heads,
        .n_kv_heads = cfg->n_kv_heads,
        .head_dim = cfg->head_dim,
        .v_head_dim = cfg->head_dim,
        .scale = 1.0f / sqrtf((float)cfg->head_dim),
        .window = 0, /* per layer: config_layer_window(); 0 sizes the scratch */
    };
    /* MLA rotates inside engine/latent, over its own width. */
    if (!config_is_mla(cfg) && !(self->rope = rotary_new(cfg, err)))
        goto fail;
    if (moe) {
        self->moe = moe;
        self->moe_ctx = moe_ctx;
    } else {
        for (int l = 0; l < cfg->n_layers; l++)
            for (int e = 0; e < cfg->n_experts && config_layer_is_moe(cfg, l); e++)
                if (!weights_has_expert(w, l, e)) {
                    err_set(err, EINVAL, "single-process mode needs every expert; "
                            "expert %d of layer %d is not loaded", e, l);
                    goto fail;
                }
        self->local = experts_new(cfg, max_rows, max_rows * cfg->n_experts_per_tok,
                                  self->cx, err);
        if (!self->local)
            goto fail;
        self->moe = s_local_moe;
        self->moe_ctx = self;
    }

    /* The FFNs beside the experts: the widest shared expert or dense FFN. */
    int mlp_width = cfg->shared != CONFIG_SHARED_NONE ? cfg->shared_intermediate_size : 0;
    for (int l = 0; l < cfg->n_layers; l++)
        if (!config_layer_is_moe(cfg, l) && cfg->dense_intermediate_size > mlp_width)
            mlp_width = cfg->dense_intermediate_size;
    if (mlp_width > 0) {
        self->mlp = mlp_new(cfg->hidden_size, mlp_width, max_rows, self->cx, err);
        if (!self->mlp)
            goto fail;
    }
    if (config_is_mla(cfg) &&
        !(self->latent = latent_new(cfg, max_rows, max_ctx, self->cx, err)))
        goto fail;

    const size_t rows = (size_t)max_rows, hidden = (size_t)cfg->hidden_size;
    const size_t q_width = (size_t)cfg->n_heads * cfg->head_dim;
    const size_t k = (size_t)cfg->n_experts_per_tok;
    self->pos = mem_calloc(rows, sizeof(int32_t));
    self->x = mem_alloc_aligned(rows * hidden * sizeof(float));
    self->xn = mem_alloc_aligned(rows * hidden * sizeof(float));
    self->q = mem_alloc_aligned(rows * q_width * sizeof(float));
    const size_t kv_width = (size_t)cfg->n_kv_heads * cfg->head_dim;
    const size_t head_rows = rows < HEAD_ROWS ? rows : HEAD_ROWS;
    self->k_new = mem_alloc_aligned(rows * kv_width * sizeof(float));
    self->v_new = mem_alloc_aligned(rows * kv_width * sizeof(float));
    self->head_in = mem_alloc_aligned(head_rows * hidden * sizeof(float));
    self->head_out = mem_alloc_aligned(head_rows * (size_t)cfg->vocab_size * sizeof(float));
    self->attn_out = mem_alloc_aligned(rows * q_width * sizeof(float));
    /* Attention runs one sequence at a time: at most max_ctx of a step's rows. */
    const int attn_rows = max_rows < max_ctx ? max_rows : max_ctx;
    self->attn_scratch = mem_alloc_aligned(
        attention_scratch_floats(&self->attn, attn_rows, max_ctx) * sizeof(float));
    self->router_logits = mem_alloc_aligned(rows * cfg->n_experts * sizeof(float));
    self->expert_ids = mem_calloc(rows * k, sizeof(int32_t));
    self->expert_weights = mem_calloc(rows * k, sizeof(float));
    self->assign = mem_calloc(rows * k, sizeof(moe_assign_t));
    self->moe_out = mem_alloc_aligned(rows * hidden * sizeof(float));
    self->shared_out = mem_alloc_aligned(rows * hidden * sizeof(float));
    const size_t proj_width = q_width > hidden ? q_width : hidden;
    self->proj = mem_alloc_aligned(rows * proj_width * sizeof(float));
    if (!self->pos || !self->x || !self->xn || !self->q || !self->k_new || !self->v_new ||
        !self->head_in || !self->head_out || !self->attn_out ||
        !self->attn_scratch || !self->router_logits || !self->expert_ids ||
        !self->expert_weights || !self->assign || !self->moe_out || !self->shared_out ||
        !self->proj) {
        err_set(err, ENOMEM, "out of memory for the forward pass (%d rows, %d positions)",
                max_rows, max_ctx);
        goto fail;
    }
    return self;

fail:
    forward_destroy(&self);
    return NULL;
}

void forward_destroy(forward_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    forward_t *self = *self_p;
    int saved = errno;
    rope_destroy(&self->rope);
    experts_destroy(&self->local);
    mlp_destroy(&self->mlp);
    latent_destroy(&self->latent);
    compute_destroy(&self->cx);
    mem_free(self->pos);
    mem_free(self->x);
    mem_free(self->xn);
    mem_free(self->q);
    mem_free(self->k_new);
    mem_free(self->v_new);
    mem_free(self->head_in);
    mem_free(self->head_out);
    mem_free(self->attn_out);
    mem_free(self->attn_scratch);
    mem_free(self->router_logits);
    mem_free(self->expert_ids);
    mem_free(self->expert_weights);
    mem_free(self->assign);
    mem_free(self->moe_out);
    mem_free(self->shared_out);
    mem_free(self->proj);
    mem_free(self);
    *self_p = NULL;
    errno = saved;
}

void forward_set_moe_async(forward_t *self, forward_moe_start_fn start,
                           forward_moe_finish_fn finish, int micro_batches)
{
    self->moe_start = start;
    self->moe_finish = finish;
    self->micro_batches = micro_batches > 1 ? 2 : 1;
}

double forward_overlap_seconds(const forward_t *self)
{
    return self->seconds_overlap;
}

void forward_set_trace(forward_t *self, forward_trace_fn fn, void *ctx)
{
    self->trace = fn;
    self->trace_ctx = ctx;
}

/* y (+)= x W^T (+ b) over n rows: y = x W^T + b when add is false, y +=
 * x W^T when it is true (then bias is NULL). Float32 weights take the one
 * GEMM they always took (the bias or y as C, beta = 1), so that their results
 * stay bit for bit what they were; other formats go through matmul into
 * scratch (n, w->rows), then the sum. */
static void s_linear(compute_t *cx, float *y, int ld, const float *x, int ldx,
                     const tensor_t *w, const float *bias, bool add, int n, float *scratch)
{
    const int out = (int)w->rows, in = (int)w->cols;
    if (w->dtype == DTYPE_F32) {
        if (bias)
            for (int r = 0; r < n; r++)
                memcpy(y + (size_t)r * ld, bias, (size_t)out * sizeof(float));
        gemm(cx, y, ld, x, ldx, w->data, (int)(w->row_stride / sizeof(float)), n, out, in,
             true, 1, bias || add ? 1 : 0);
        return;
    }
    if (!bias && !add) {
        matmul(cx, y, ld, x, ldx, w, n);
        return;
    }
    matmul(cx, scratch, out, x, ldx, w, n);
    for (int r = 0; r < n; r++) {
        float *yr = y + (size_t)r * ld;
        const float *pr = scratch + (size_t)r * out;
        if (bias)
            for (int j = 0; j < out; j++)
                yr[j] = pr[j] + bias[j];
        else
            for (int j = 0; j < out; j++)
                yr[j] += pr[j];
    }
}

/* q, k and v of n rows of xn, with their biases. Float32 weights take
 * s_linear's one GEMM each (their bits are fixed); the other formats run
 * as one job of the compute pool (matmul_many: quantized x made once), the
 * bias added after, the same sum s_linear makes. */
static void s_project_qkv(forward_t *self, const layer_weights_t *lw, const float *xn,
                          int n, float *q, float *k, float *v)
{
    const config_t *cfg = self->cfg;
    const int hidden = cfg->hidden_size;
    const int q_width = cfg->n_heads * cfg->head_dim;
    const int kv_width = cfg->n_kv_heads * cfg->head_dim;
    if (lw->q.dtype == DTYPE_F32 || lw->k.dtype == DTYPE_F32 || lw->v.dtype == DTYPE_F32) {
        s_linear(self->cx, q, q_width, xn, hidden, &lw->q, lw->q_bias, false, n, self->proj);
        s_linear(self->cx, k, kv_width, xn, hidden, &lw->k, lw->k_bias, false, n, self->proj);
        s_linear(self->cx, v, kv_width, xn, hidden, &lw->v, lw->v_bias, false, n, self->proj);
        return;
    }
    const matmul_op_t ops[3] = {
        {.y = q, .ldy = q_width, .x = xn, .ldx = hidden, .w = &lw->q, .m = n},
        {.y = k, .ldy = kv_width, .x = xn, .ldx = hidden, .w = &lw->k, .m = n},
        {.y = v, .ldy = kv_width, .x = xn, .ldx = hidden, .w = &lw->v, .m = n},
    };
    matmul_many(self->cx, ops, 3);
    const float *bias[3] = {lw->q_bias, lw->k_bias, lw->v_bias};
    for (int p = 0; p < 3; p++)
        if (bias[p])
            ffn_bias_add(ops[p].y, ops[p].ldy, bias[p], n, (int)ops[p].w->rows);
}

/* h = x + o_proj(attention(rope(q), rope(k), v)) for the rows of micro-batch
 * pt; each sequence's new keys and values go into its own cache at its next
 * positions, and its rows attend to its own cache only. Biases and q/k norms
 * are there when the family has them (weights and qknorm say). Touches only
 * pt's rows of the step's buffers. */
static void s_attention_block(forward_t *self, const forward_seq_t *seqs, const part_t *pt,
                              int l)
{
    const config_t *cfg = self->cfg;
    const layer_weights_t *lw = &self->w->layers[l];
    const int hidden = cfg->hidden_size;
    const int q_width = cfg->n_heads * cfg->head_dim;
    const int kv_width = cfg->n_kv_heads * cfg->head_dim;
    const int n = pt->n;
    const size_t r0 = (size_t)pt->r0;
    float *x = self->x + r0 * hidden, *xn = self->xn + r0 * hidden;
    float *q = self->q + r0 * q_width, *attn_out = self->attn_out + r0 * q_width;
    float *k_new = self->k_new + r0 * kv_width, *v_new = self->v_new + r0 * kv_width;
    const int32_t *pos = self->pos + r0;
    attention_shape_t shape = self->attn;
    shape.window = config_layer_window(cfg, l);
    shape.sinks = lw->sinks;
    seqs += pt->s0;

    rmsnorm(xn, hidden, x, hidden, lw->attn_norm, n, hidden, cfg->rms_norm_eps);
    if (self->latent) {
        /* MLA: each sequence's latent rows; o_proj adds into the residual. */
        for (int s = 0, row = 0; s < pt->n_seqs; row += seqs[s].n, s++)
            latent_run(self->latent, lw, x + (size_t)row * hidden, hidden,
                       xn + (size_t)row * hidden, seqs[s].n, kvcache_len(seqs[s].kv),
                       kvcache_latent(seqs[s].kv, l));
        return;
    }
    s_project_qkv(self, lw, xn, n, q, k_new, v_new);
    qknorm_apply(cfg, QKNORM_BEFORE_ROPE, lw, q, k_new, n);
    rope_apply(self->rope, q, q_width, n, cfg->n_heads, cfg->head_dim, pos);
    rope_apply(self->rope, k_new, kv_width, n, cfg->n_kv_heads, cfg->head_dim, pos);
    qknorm_apply(cfg, QKNORM_AFTER_ROPE, lw, q, k_new, n);
    for (int s = 0, row = 0; s < pt->n_seqs; row += seqs[s].n, s++) {
        kvcache_t *kv = seqs[s].kv;
        const int pos0 = kvcache_len(kv), rows = seqs[s].n;
        float *keys = kvcache_keys(kv, l), *values = kvcache_values(kv, l);
        memcpy(keys + (size_t)pos0 * kv_width, k_new + (size_t)row * kv_width,
               (size_t)rows * kv_width * sizeof(float));
        memcpy(values + (size_t)pos0 * kv_width, v_new + (size_t)row * kv_width,
               (size_t)rows * kv_width * sizeof(float));
        attention(self->cx, attn_out + (size_t)row * q_width, q_width,
                  q + (size_t)row * q_width, q_width, keys, kv_width, values, kv_width,
                  &shape, rows, pos0, self->attn_scratch);
    }
    /* x += attn_out o_proj^T (float32: beta = 1 adds the residual in the same
     * product). */
    s_linear(self->cx, x, hidden, attn_out, q_width, &lw->o, NULL, true, n, self->proj);
    if (lw->o_bias)
        for (int r = 0; r < n; r++)
            for (int j = 0; j < hidden; j++)
                x[(size_t)r * hidden + j] += lw->o_bias[j];
}

/* x = h + ffn, the end of layer l for micro-batch pt once moe_out holds its
 * FFN output: a MoE layer's shared experts are added onto the routed sum
 * last (HF adds the shared expert onto the routed sum), in both modes, so
 * that single-process and cluster runs round the same way. */
static void s_ffn_end(forward_t *self, const part_t *pt, int l)
{
    const config_t *cfg = self->cfg;
    const size_t r0 = (size_t)pt->r0 * cfg->hidden_size;
    const size_t count = (size_t)pt->n * cfg->hidden_size;
    float *x = self->x + r0, *moe_out = self->moe_out + r0;
    if (config_layer_is_moe(cfg, l) && cfg->shared != CONFIG_SHARED_NONE) {
        const float *shared_out = self->shared_out + r0;
        for (size_t i = 0; i < count; i++)
            moe_out[i] += shared_out[i];
    }
    for (size_t i = 0; i < count; i++)
        x[i] += moe_out[i];
}

/* The FFN of layer l for micro-batch pt (mb), as far as it goes before the
 * routed experts come back: u = norm2(h), routing, the routed experts sent
 * away (through the asynchronous port) or computed (the synchronous one),
 * the shared experts. *sent_at: when the experts were sent, or 0 when
 * nothing is away and the layer is complete (a dense layer, a synchronous
 * port). */
static int s_ffn_start(forward_t *self, const forward_seq_t *seqs, const part_t *pt, int mb,
                       int l, double *sent_at, err_t *err)
{
    const config_t *cfg = self->cfg;
    const layer_weights_t *lw = &self->w->layers[l];
    const int hidden = cfg->hidden_size, k = cfg->n_experts_per_tok, n = pt->n;
    const size_t r0 = (size_t)pt->r0;
    float *x = self->x + r0 * hidden, *xn = self->xn + r0 * hidden;
    float *moe_out = self->moe_out + r0 * hidden;
    *sent_at = 0;

    rmsnorm(xn, hidden, x, hidden, lw->ffn_norm, n, hidden, cfg->rms_norm_eps);
    if (!config_layer_is_moe(cfg, l)) {
        memset(moe_out, 0, (size_t)n * hidden * sizeof(float));
        mlp_add(self->mlp, &lw->dense, cfg->dense_intermediate_size, NULL, xn, n, moe_out);
        s_ffn_end(self, pt, l);
        return 0;
    }
    int32_t *ids = self->expert_ids + r0 * k;
    float *weights = self->expert_weights + r0 * k;
    moe_assign_t *assign = self->assign + r0 * k;
    routing_select(self->cx, cfg, lw, xn, n, self->router_logits + r0 * cfg->n_experts, ids,
                   weights);
    if (self->trace)
        self->trace(self->trace_ctx, l, kvcache_len(seqs[pt->s0].kv), n, k, ids, weights);
    router_assignments(ids, weights, n, k, assign);
    if (self->moe_start) {
        if (self->moe_start(self->moe_ctx, mb, l, xn, pt->r0, n, assign, n * k, moe_out,
                            err) < 0)
            return err_wrap(err, "layer %d experts", l);
        *sent_at = timer_now();
    } else if (self->moe(self->moe_ctx, l, xn, n, assign, n * k, moe_out, err) < 0) {
        return err_wrap(err, "layer %d experts", l);
    }
    if (cfg->shared != CONFIG_SHARED_NONE) {
        float *shared_out = self->shared_out + r0 * hidden;
        memset(shared_out, 0, (size_t)n * hidden * sizeof(float));
        mlp_add(self->mlp, &lw->shared, cfg->shared_intermediate_size, lw->shared_gate, xn,
                n, shared_out);
    }
    if (*sent_at == 0)
        s_ffn_end(self, pt, l);
    return 0;
}

/* Completes layer l of micro-batch pt (mb), whose routed experts are away. */
static int s_ffn_finish(forward_t *self, const part_t *pt, int mb, int l, err_t *err)
{
    float *moe_out = self->moe_out + (size_t)pt->r0 * self->cfg->hidden_size;
    /* The finish may wait for the network: the pool's workers sleep rather
     * than spin, leaving the cores to the nodes when they share them. */
    pool_rest(compute_pool(self->cx));
    if (self->moe_finish(self->moe_ctx, mb, l, moe_out, err) < 0)
        return err_wrap(err, "layer %d experts", l);
    s_ffn_end(self, pt, l);
    return 0;
}

/* Cuts a step into micro-batches of whole sequences: two of rows as equal as
 * the sequences allow when the port is asynchronous, micro-batching is on
 * and there are two sequences or more; else one. Returns their count. */
static int s_split(const forward_t *self, const forward_seq_t *seqs, int n_seqs, int n,
                   part_t *parts)
{
    parts[0] = (part_t){.s0 = 0, .n_seqs = n_seqs, .r0 = 0, .n = n};
    if (!self->moe_start || self->micro_batches < 2 || n_seqs < 2)
        return 1;
    int best = 1, best_rows = seqs[0].n, rows = 0;
    for (int s = 1; s < n_seqs; s++) {
        rows += seqs[s - 1].n;
        if (abs(2 * rows - n) < abs(2 * best_rows - n)) {
            best = s;
            best_rows = rows;
        }
    }
    parts[0] = (part_t){.s0 = 0, .n_seqs = best, .r0 = 0, .n = best_rows};
    parts[1] = (part_t){.s0 = best, .n_seqs = n_seqs - best, .r0 = best_rows,
                        .n = n - best_rows};
    return 2;
}

/* The LM head over rows [first, first + n_out) of the step into logits. */
static void s_logits(forward_t *self, int first, int n_out, float *logits)
{
    const config_t *cfg = self->cfg;
    const int hidden = cfg->hidden_size;
    float *rows = self->xn + (size_t)first * hidden;
    rmsnorm(rows, hidden, self->x + (size_t)first * hidden, hidden, self->w->final_norm,
            n_out, hidden, cfg->rms_norm_eps);
    matmul(self->cx, logits, cfg->vocab_size, rows, hidden, &self->w->lm_head, n_out);
}

/* The last row of every sequence that wants it, through the LM head in
 * blocks of HEAD_ROWS rows, so that the head's weights are read once per block
 * and not once per sequence. */
static void s_last_logits(forward_t *self, const forward_seq_t *seqs, int n_seqs)
{
    const config_t *cfg = self->cfg;
    const int hidden = cfg->hidden_size, vocab = cfg->vocab_size;
    int s = 0, row = 0;
    while (s < n_seqs) {
        int m = 0, owner[HEAD_ROWS];
        for (; s < n_seqs && m < HEAD_ROWS; row += seqs[s].n, s++) {
            if (seqs[s].want != FORWARD_LOGITS_LAST)
                continue;
            const int last = row + seqs[s].n - 1;
            rmsnorm(self->head_in + (size_t)m * hidden, hidden, self->x + (size_t)last * hidden,
                    hidden, self->w->final_norm, 1, hidden, cfg->rms_norm_eps);
            owner[m++] = s;
        }
        if (m == 0)
            continue;
        matmul(self->cx, self->head_out, vocab, self->head_in, hidden, &self->w->lm_head, m);
        for (int i = 0; i < m; i++)
            memcpy(seqs[owner[i]].logits, self->head_out + (size_t)i * vocab,
                   (size_t)vocab * sizeof(float));
    }
}

/* Checks a step before anything changes. */
static int s_check_step(const forward_t *self, const forward_seq_t *seqs, int n_seqs,
                        int *n_rows, err_t *err)
{
    const config_t *cfg = self->cfg;
    int total = 0;
    if (n_seqs < 1)
        return err_set(err, EINVAL, "a step needs at least one sequence");
    for (int s = 0; s < n_seqs; s++) {
        const forward_seq_t *q = &seqs[s];
        const int start = kvcache_len(q->kv);
        if (q->n < 1)
            return err_set(err, EINVAL, "nothing to run: %d tokens", q->n);
        for (int i = 0; i < q->n; i++)
            if (q->tokens[i] < 0 || q->tokens[i] >= cfg->vocab_size)
                return err_set(err, EINVAL, "token id %d at index %d is outside the "
                               "vocabulary [0, %d)", (int)q->tokens[i], i, cfg->vocab_size);
        if (q->n > kvcache_capacity(q->kv) - start)
            return err_set(err, ENOSPC, "%d positions do not fit the sequence's KV cache "
                           "of %d", start + q->n, kvcache_capacity(q->kv));
        if (q->n > self->max_ctx - start)
            return err_set(err, ENOSPC, "%d positions exceed the context limit of %d",
                           start + q->n, self->max_ctx);
        if (q->want != FORWARD_LOGITS_NONE && !q->logits)
            return err_set(err, EINVAL, "sequence %d asks for logits but gives no buffer", s);
        if (q->want == FORWARD_LOGITS_ALL && n_seqs != 1)
            return err_set(err, EINVAL, "every row's logits are for one-sequence steps only");
        for (int t = 0; t < s; t++)
            if (seqs[t].kv == q->kv)
                return err_set(err, EINVAL, "sequences %d and %d share a KV cache", t, s);
        total += q->n;
    }
    if (total > self->max_rows)
        return err_set(err, E2BIG, "a step of %d rows exceeds the limit of %d", total,
                       self->max_rows);
    *n_rows = total;
    return 0;
}

int forward_step(forward_t *self, const forward_seq_t *seqs, int n_seqs, err_t *err)
{
    const config_t *cfg = self->cfg;
    const int hidden = cfg->hidden_size;
    int n = 0;
    if (s_check_step(self, seqs, n_seqs, &n, err) < 0)
        return -1;
    for (int s = 0, row = 0; s < n_seqs; row += seqs[s].n, s++) {
        const int pos0 = kvcache_len(seqs[s].kv);
        for (int i = 0; i < seqs[s].n; i++) {
            self->pos[row + i] = pos0 + i;
            tensor_row_to_f32(&self->w->embed, seqs[s].tokens[i],
                              self->x + (size_t)(row + i) * hidden);
        }
    }
    /* Ping-pong (forward.h): micro-batch m runs layer l's attention and
     * routing and sends its rows while the other's experts of the layer
     * before are away; then the other's are finished, and so on. With one
     * micro-batch, each layer is sent and finished in turn. */
    part_t parts[2];
    const int n_parts = s_split(self, seqs, n_seqs, n, parts);
    int away[2] = {-1, -1}; /* the layer a micro-batch has on the nodes, or -1 */
    for (int l = 0; l < cfg->n_layers; l++)
        for (int m = 0; m < n_parts; m++) {
            const int o = n_parts - 1 - m; /* the other one; itself when alone */
            const double t0 = timer_now();
            const bool other_away = o != m && away[o] >= 0;
            double sent_at;
            s_attention_block(self, seqs, &parts[m], l);
            if (s_ffn_start(self, seqs, &parts[m], m, l, &sent_at, err) < 0)
                goto fail;
            if (sent_at > 0)
                away[m] = l;
            /* Own work while experts were away: all of this micro-batch's
             * when the other's were; else its shared experts after sending. */
            if (other_away)
                self->seconds_overlap += timer_now() - t0;
            else if (sent_at > 0 && cfg->shared != CONFIG_SHARED_NONE)
                self->seconds_overlap += timer_now() - sent_at;
            if (away[o] >= 0) {
                const int lo = away[o];
                away[o] = -1;
                if (s_ffn_finish(self, &parts[o], o, lo, err) < 0)
                    goto fail;
            }
        }
    for (int m = 0; m < n_parts; m++)
        if (away[m] >= 0) {
            const int lo = away[m];
            away[m] = -1;
            if (s_ffn_finish(self, &parts[m], m, lo, err) < 0)
                goto fail;
        }
    if (seqs[0].want == FORWARD_LOGITS_ALL)
        s_logits(self, 0, n, seqs[0].logits);
    else
        s_last_logits(self, seqs, n_seqs);
    for (int s = 0; s < n_seqs; s++)
        kvcache_advance(seqs[s].kv, seqs[s].n, NULL); /* room was checked */
    return 0;

fail:
    /* The other micro-batch's call is completed, its result unused, so that
     * the port is free and its lost rows are marked too; no cache has
     * advanced: every sequence is as it was. */
    const int saved = errno;
    for (int m = 0; m < n_parts; m++)
        if (away[m] >= 0)
            (void)s_ffn_finish(self, &parts[m], m, away[m], NULL);
    errno = saved;
    return -1;
}

int forward_run(forward_t *self, kvcache_t *kv, const int32_t *tokens, int n,
                forward_logits_t want, float *logits, err_t *err)
{
    const config_t *cfg = self->cfg;
    const int start = kvcache_len(kv);
    if (n < 1)
        return err_set(err, EINVAL, "nothing to run: %d tokens", n);
    /* The whole input is checked here, as each chunk's step sees only its own
     * rows: a bad token or a cache too small fails before any chunk runs. */
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= cfg->vocab_size)
            return err_set(err, EINVAL, "token id %d at index %d is outside the "
                           "vocabulary [0, %d)", (int)tokens[i], i, cfg->vocab_size);
    if (n > kvcache_capacity(kv) - start)
        return err_set(err, ENOSPC, "%d positions do not fit the sequence's KV cache "
                       "of %d", start + n, kvcache_capacity(kv));
    if (n > self->max_ctx - start)
        return err_set(err, ENOSPC, "%d positions exceed the context limit of %d",
                       start + n, self->max_ctx);

    for (int done = 0; done < n;) {
        int chunk = n - done < self->max_rows ? n - done : self->max_rows;
        bool last_chunk = done + chunk == n;
        forward_seq_t seq = {.kv = kv, .tokens = tokens + done, .n = chunk, .want = want,
                             .logits = logits};
        if (want == FORWARD_LOGITS_ALL)
            seq.logits = logits + (size_t)done * cfg->vocab_size;
        else if (!last_chunk)
            seq.want = FORWARD_LOGITS_NONE;
        if (forward_step(self, &seq, 1, err) < 0) {
            /* Forget this call's positions: the cache is as it was. */
            kvcache_truncate(kv, start);
            return -1;
        }
        done += chunk;
    }
    return 0;
}

int32_t forward_argmax(const float *logits, int vocab)
{
    int32_t best = 0;
    for (int32_t i = 1; i < vocab; i++)
        if (logits[i] > logits[best])
            best = i;
    return best;
}
