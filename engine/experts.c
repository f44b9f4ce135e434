/* experts: see experts.h. */
#include "engine/experts.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "core/mem.h"
#include "engine/mlp.h"
#include "kernels/ffn.h"

struct experts {
    int hidden;
    int inter;        /* expert FFN width */
    int n_experts;
    int max_rows;
    int max_assign;
    bool oai;         /* gpt_oss: biases and the clamped SwiGLU */
    float limit;      /* its clamp */
    int *count;       /* [n_experts + 1] assignments per expert, then offsets */
    int *order;       /* [max_assign] assignment indices grouped by expert */
    float *x;         /* (max_assign, hidden) gathered input rows */
    float *gate;      /* (max_assign, inter) */
    float *up;        /* (max_assign, inter) */
    float *y;         /* (max_assign, hidden) expert outputs */
    mlp_block_t *blocks; /* [n_experts] the SwiGLU blocks of one call */
    compute_t *cx;    /* the products' context, borrowed */
};

experts_t *experts_new(const config_t *cfg, int max_rows, int max_assign,
                       compute_t *cx, err_t *err)
{
    assert(cx);
    if (max_rows < 1 || max_assign < 1) {
        err_set(err, EINVAL, "expert batch sizes must be positive");
        return NULL;
    }
    experts_t *self = mem_calloc(1, sizeof *self);
    if (!self)
        goto oom;
    self->hidden = cfg->hidden_size;
    self->inter = cfg->intermediate_size;
    self->n_experts = cfg->n_experts;
    self->max_rows = max_rows;
    self->max_assign = max_assign;
    self->cx = cx;
    self->oai = cfg->expert_act == CONFIG_EXPERT_SWIGLU_OAI;
    self->limit = cfg->swiglu_limit > 0 ? cfg->swiglu_limit : FFN_OSS_LIMIT;
    size_t rows = (size_t)max_assign;
    self->count = mem_calloc((size_t)self->n_experts + 1, sizeof(int));
    self->order = mem_calloc(rows, sizeof(int));
    self->x = mem_alloc_aligned(rows * self->hidden * sizeof(float));
    self->gate = mem_alloc_aligned(rows * self->inter * sizeof(float));
    self->up = mem_alloc_aligned(rows * self->inter * sizeof(float));
    self->y = mem_alloc_aligned(rows * self->hidden * sizeof(float));
    self->blocks = mem_calloc((size_t)self->n_experts, sizeof *self->blocks);
    if (!self->count || !self->order || !self->x || !self->gate || !self->up || !self->y ||
        !self->blocks)
        goto oom;
    return self;

oom:
    experts_destroy(&self);
    err_set(err, ENOMEM, "out of memory for expert scratch (%d rows)", max_assign);
    return NULL;
}

void experts_destroy(experts_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    experts_t *self = *self_p;
    mem_free(self->count);
    mem_free(self->order);
    mem_free(self->x);
    mem_free(self->gate);
    mem_free(self->up);
    mem_free(self->y);
    mem_free(self->blocks);
    mem_free(self);
    *self_p = NULL;
}

static int s_check(const experts_t *self, const weights_t *w, int layer, int n_rows,
                   const moe_assign_t *assign, int n_assign, err_t *err)
{
    if (n_rows < 0 || n_rows > self->max_rows || n_assign < 0 || n_assign > self->max_assign)
        return err_set(err, E2BIG, "expert batch of %d rows / %d assignments exceeds "
                       "the limit of %d / %d", n_rows, n_assign, self->max_rows,
                       self->max_assign);
    if (layer < 0 || layer >= w->cfg.n_layers)
        return err_set(err, EINVAL, "layer %d out of range (model has %d)", layer,
                       w->cfg.n_layers);
    for (int i = 0; i < n_assign; i++) {
        const moe_assign_t *a = &assign[i];
        if (a->row < 0 || a->row >= n_rows)
            return err_set(err, EINVAL, "assignment %d: row %d out of range (%d rows)",
                           i, (int)a->row, n_rows);
        if (!weights_has_expert(w, layer, a->expert))
            return err_set(err, EINVAL, "assignment %d: expert %d of layer %d is not "
                           "hosted here", i, (int)a->expert, layer);
        if (!isfinite(a->weight))
            return err_set(err, EINVAL, "assignment %d: weight is not finite", i);
    }
    return 0;
}

/* Counting sort of assignment indices by expert: count[e] .. count[e+1] is
 * expert e's range in order[]. Keeps each expert's rows in arrival order. */
static void s_group(experts_t *self, const moe_assign_t *assign, int n_assign)
{
    int *count = self->count;
    memset(count, 0, ((size_t)self->n_experts + 1) * sizeof(int));
    for (int i = 0; i < n_assign; i++)
        count[assign[i].expert + 1]++;
    for (int e = 0; e < self->n_experts; e++)
        count[e + 1] += count[e];
    for (int i = 0; i < n_assign; i++)
        self->order[count[assign[i].expert]++] = i;
    /* count[e] now holds the end of e's range; shift back to starts. */
    for (int e = self->n_experts; e > 0; e--)
        count[e] = count[e - 1];
    count[0] = 0;
}

/* experts_run and experts_run_terms: with terms, out[i] (assignment i) gets
 * weight * y; else out[row] += weight * y in expert order. */
static int s_run(experts_t *self, const weights_t *w, int layer, const float *u,
                 int n_rows, const moe_assign_t *assign, int n_assign, float *out,
                 bool terms, err_t *err)
{
    if (s_check(self, w, layer, n_rows, assign, n_assign, err) < 0)
        return -1;
    const int hidden = self->hidden, inter = self->inter;
    if (!terms)
        memset(out, 0, (size_t)n_rows * hidden * sizeof(float));
    s_group(self, assign, n_assign);

    /* Every expert's rows gathered at its range of the scratch, then all
     * the SwiGLU blocks at once (their products fused), then the sums in
     * expert order as before. */
    int n_blocks = 0;
    for (int e = 0; e < self->n_experts; e++) {
        const int first = self->count[e], n = self->count[e + 1] - first;
        if (n == 0)
            continue;
        for (int i = 0; i < n; i++) {
            const moe_assign_t *a = &assign[self->order[first + i]];
            memcpy(self->x + (size_t)(first + i) * hidden, u + (size_t)a->row * hidden,
                   hidden * sizeof(float));
        }
        self->blocks[n_blocks++] = (mlp_block_t){
            .y = self->y + (size_t)first * hidden,
            .x = self->x + (size_t)first * hidden,
            .n = n,
            .w = &w->layers[layer].experts[e],
            .eb = self->oai ? &w->layers[layer].expert_biases[e] : NULL,
            .gate = self->gate + (size_t)first * inter,
            .up = self->up + (size_t)first * inter,
        };
    }
    mlp_swiglu_many(self->cx, hidden, inter, self->limit, self->blocks, n_blocks);
    for (int e = 0; e < self->n_experts; e++) {
        const int first = self->count[e], n = self->count[e + 1] - first;
        for (int i = 0; i < n; i++) {
            const int k = self->order[first + i];
            const moe_assign_t *a = &assign[k];
            const float *src = self->y + (size_t)(first + i) * hidden;
            if (terms) {
                float *dst = out + (size_t)k * hidden;
                for (int j = 0; j < hidden; j++)
                    dst[j] = a->weight * src[j];
            } else {
                float *dst = out + (size_t)a->row * hidden;
                for (int j = 0; j < hidden; j++)
                    dst[j] += a->weight * src[j];
            }
        }
    }
    return 0;
}

int experts_run(experts_t *self, const weights_t *w, int layer, const float *u,
                int n_rows, const moe_assign_t *assign, int n_assign, float *out,
                err_t *err)
{
    return s_run(self, w, layer, u, n_rows, assign, n_assign, out, false, err);
}

int experts_run_terms(experts_t *self, const weights_t *w, int layer, const float *u,
                      int n_rows, const moe_assign_t *assign, int n_assign, float *terms,
                      err_t *err)
{
    return s_run(self, w, layer, u, n_rows, assign, n_assign, terms, true, err);
}
