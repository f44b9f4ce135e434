/* forward: see forward.h. */
#include "engine/forward.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#include "core/mem.h"
#include "engine/experts.h"
#include "kernels/attention.h"
#include "kernels/gemm.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"

struct forward {
    const weights_t *w;
    const config_t *cfg;      /* &w->cfg */
    int max_rows;             /* tokens per chunk */
    int max_ctx;              /* positions per sequence */
    attention_shape_t attn;
    rope_t *rope;
    forward_moe_fn moe;
    void *moe_ctx;
    experts_t *local;         /* in-process experts when no callback was given */
    forward_trace_fn trace;
    void *trace_ctx;

    int32_t *pos;             /* (max_rows) positions of the chunk's tokens */
    float *x;                 /* (max_rows, hidden) residual stream */
    float *xn;                /* (max_rows, hidden) normalised input of a block */
    float *q;                 /* (max_rows, heads * head_dim) */
    float *attn_out;          /* (max_rows, heads * head_dim) */
    float *attn_scratch;      /* attention_scratch_floats(max_rows, max_ctx) */
    float *router_logits;     /* (max_rows, n_experts) */
    int32_t *expert_ids;      /* (max_rows, k) */
    float *expert_weights;    /* (max_rows, k) */
    moe_assign_t *assign;     /* (max_rows * k) */
    float *moe_out;           /* (max_rows, hidden) */
};

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
    forward_t *self = mem_calloc(1, sizeof *self);
    if (!self) {
        err_set(err, ENOMEM, "out of memory for the forward pass");
        return NULL;
    }
    self->w = w;
    self->cfg = cfg;
    self->max_rows = max_rows;
    self->max_ctx = max_ctx;
    self->attn = (attention_shape_t){
        .n_heads = cfg->n_heads,
        .n_kv_heads = cfg->n_kv_heads,
        .head_dim = cfg->head_dim,
        .v_head_dim = cfg->head_dim,
        .scale = 1.0f / sqrtf((float)cfg->head_dim),
        .window = cfg->sliding_window,
    };
    self->rope = rope_new(cfg->head_dim, cfg->rope_theta, err);
    if (!self->rope)
        goto fail;
    if (moe) {
        self->moe = moe;
        self->moe_ctx = moe_ctx;
    } else {
        for (int l = 0; l < cfg->n_layers; l++)
            for (int e = 0; e < cfg->n_experts; e++)
                if (!weights_has_expert(w, l, e)) {
                    err_set(err, EINVAL, "single-process mode needs every expert; "
                            "expert %d of layer %d is not loaded", e, l);
                    goto fail;
                }
        self->local = experts_new(cfg, max_rows, max_rows * cfg->n_experts_per_tok, err);
        if (!self->local)
            goto fail;
        self->moe = s_local_moe;
        self->moe_ctx = self;
    }

    const size_t rows = (size_t)max_rows, hidden = (size_t)cfg->hidden_size;
    const size_t q_width = (size_t)cfg->n_heads * cfg->head_dim;
    const size_t k = (size_t)cfg->n_experts_per_tok;
    self->pos = mem_calloc(rows, sizeof(int32_t));
    self->x = mem_alloc_aligned(rows * hidden * sizeof(float));
    self->xn = mem_alloc_aligned(rows * hidden * sizeof(float));
    self->q = mem_alloc_aligned(rows * q_width * sizeof(float));
    self->attn_out = mem_alloc_aligned(rows * q_width * sizeof(float));
    self->attn_scratch = mem_alloc_aligned(
        attention_scratch_floats(&self->attn, max_rows, max_ctx) * sizeof(float));
    self->router_logits = mem_alloc_aligned(rows * cfg->n_experts * sizeof(float));
    self->expert_ids = mem_calloc(rows * k, sizeof(int32_t));
    self->expert_weights = mem_calloc(rows * k, sizeof(float));
    self->assign = mem_calloc(rows * k, sizeof(moe_assign_t));
    self->moe_out = mem_alloc_aligned(rows * hidden * sizeof(float));
    if (!self->pos || !self->x || !self->xn || !self->q || !self->attn_out ||
        !self->attn_scratch || !self->router_logits || !self->expert_ids ||
        !self->expert_weights || !self->assign || !self->moe_out) {
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
    mem_free(self->pos);
    mem_free(self->x);
    mem_free(self->xn);
    mem_free(self->q);
    mem_free(self->attn_out);
    mem_free(self->attn_scratch);
    mem_free(self->router_logits);
    mem_free(self->expert_ids);
    mem_free(self->expert_weights);
    mem_free(self->assign);
    mem_free(self->moe_out);
    mem_free(self);
    *self_p = NULL;
    errno = saved;
}

void forward_set_trace(forward_t *self, forward_trace_fn fn, void *ctx)
{
    self->trace = fn;
    self->trace_ctx = ctx;
}

/* h = x + o_proj(attention(rope(q), rope(k), v)) for the n rows of a chunk
 * starting at position pos0; appends the chunk's keys and values to layer l
 * of kv. */
static void s_attention_block(forward_t *self, kvcache_t *kv, int l, int n, int pos0)
{
    const config_t *cfg = self->cfg;
    const layer_weights_t *lw = &self->w->layers[l];
    const int hidden = cfg->hidden_size;
    const int q_width = cfg->n_heads * cfg->head_dim;
    const int kv_width = kvcache_row_width(kv);
    float *keys = kvcache_keys(kv, l), *values = kvcache_values(kv, l);
    float *new_keys = keys + (size_t)pos0 * kv_width;
    float *new_values = values + (size_t)pos0 * kv_width;

    rmsnorm(self->xn, hidden, self->x, hidden, lw->attn_norm, n, hidden, cfg->rms_norm_eps);
    gemm(self->q, q_width, self->xn, hidden, lw->q, hidden, n, q_width, hidden, true, 1, 0);
    gemm(new_keys, kv_width, self->xn, hidden, lw->k, hidden, n, kv_width, hidden, true, 1, 0);
    gemm(new_values, kv_width, self->xn, hidden, lw->v, hidden, n, kv_width, hidden, true, 1, 0);
    rope_apply(self->rope, self->q, q_width, n, cfg->n_heads, cfg->head_dim, self->pos);
    rope_apply(self->rope, new_keys, kv_width, n, cfg->n_kv_heads, cfg->head_dim, self->pos);
    attention(self->attn_out, q_width, self->q, q_width, keys, kv_width, values, kv_width,
              &self->attn, n, pos0, self->attn_scratch);
    /* x += attn_out o_proj^T: beta = 1 adds the residual in the same product. */
    gemm(self->x, hidden, self->attn_out, q_width, lw->o, q_width, n, hidden, q_width,
         true, 1, 1);
}

/* x = h + experts(norm2(h)) for the n rows of a chunk. */
static int s_moe_block(forward_t *self, int l, int n, int pos0, err_t *err)
{
    const config_t *cfg = self->cfg;
    const layer_weights_t *lw = &self->w->layers[l];
    const int hidden = cfg->hidden_size, k = cfg->n_experts_per_tok;

    rmsnorm(self->xn, hidden, self->x, hidden, lw->ffn_norm, n, hidden, cfg->rms_norm_eps);
    gemm_linear(self->router_logits, self->xn, lw->router, n, cfg->n_experts, hidden);
    router_select_softmax(self->router_logits, n, cfg->n_experts, k, true,
                          self->expert_ids, self->expert_weights);
    if (self->trace)
        self->trace(self->trace_ctx, l, pos0, n, k, self->expert_ids, self->expert_weights);
    router_assignments(self->expert_ids, self->expert_weights, n, k, self->assign);
    if (self->moe(self->moe_ctx, l, self->xn, n, self->assign, n * k, self->moe_out, err) < 0)
        return err_wrap(err, "layer %d experts", l);
    const size_t count = (size_t)n * hidden;
    for (size_t i = 0; i < count; i++)
        self->x[i] += self->moe_out[i];
    return 0;
}

/* The LM head over rows [first, first + n_out) of the chunk. */
static void s_logits(forward_t *self, int first, int n_out, float *logits)
{
    const config_t *cfg = self->cfg;
    const int hidden = cfg->hidden_size;
    float *rows = self->xn + (size_t)first * hidden;
    rmsnorm(rows, hidden, self->x + (size_t)first * hidden, hidden, self->w->final_norm,
            n_out, hidden, cfg->rms_norm_eps);
    gemm_linear(logits, rows, self->w->lm_head, n_out, cfg->vocab_size, hidden);
}

static int s_run_chunk(forward_t *self, kvcache_t *kv, const int32_t *tokens, int n,
                       forward_logits_t want, float *logits, err_t *err)
{
    const config_t *cfg = self->cfg;
    const int hidden = cfg->hidden_size;
    const int pos0 = kvcache_len(kv);

    for (int i = 0; i < n; i++) {
        self->pos[i] = pos0 + i;
        memcpy(self->x + (size_t)i * hidden, self->w->embed + (size_t)tokens[i] * hidden,
               hidden * sizeof(float));
    }
    for (int l = 0; l < cfg->n_layers; l++) {
        s_attention_block(self, kv, l, n, pos0);
        if (s_moe_block(self, l, n, pos0, err) < 0)
            return -1;
    }
    if (want == FORWARD_LOGITS_ALL)
        s_logits(self, 0, n, logits);
    else if (want == FORWARD_LOGITS_LAST)
        s_logits(self, n - 1, 1, logits);
    return kvcache_advance(kv, n, err);
}

int forward_run(forward_t *self, kvcache_t *kv, const int32_t *tokens, int n,
                forward_logits_t want, float *logits, err_t *err)
{
    const config_t *cfg = self->cfg;
    const int start = kvcache_len(kv);
    if (n < 1)
        return err_set(err, EINVAL, "nothing to run: %d tokens", n);
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
        forward_logits_t chunk_want = want;
        float *chunk_logits = logits;
        if (want == FORWARD_LOGITS_ALL)
            chunk_logits = logits + (size_t)done * cfg->vocab_size;
        else if (!last_chunk)
            chunk_want = FORWARD_LOGITS_NONE;
        if (s_run_chunk(self, kv, tokens + done, chunk, chunk_want, chunk_logits, err) < 0) {
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
