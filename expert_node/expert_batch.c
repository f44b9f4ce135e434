/* expert_batch: see expert_batch.h.
 *
 * Invariants: rows[0, n_rows) and assign[0, n_assign) hold the parts in
 * order, each part's assignments rebased to its rows in the batch; count[e]
 * is the batch's assignments to expert e.
 */
#include "expert_node/expert_batch.h"

#include <assert.h>
#include <errno.h>
#include <string.h>

#include "core/mem.h"
#include "kernels/gemm_small.h"

struct expert_batch {
    int hidden;
    int n_experts;
    int max_rows;
    int max_assign;
    int layer;                  /* of every part */
    bool per_assignment;        /* of every part */
    float *rows;                /* (max_rows, hidden) the parts' rows */
    moe_assign_t *assign;       /* (max_assign) rows index the batch */
    int *count;                 /* (n_experts) assignments per expert */
    int *incoming;              /* (n_experts) scratch: a candidate's assignments */
    int n_rows, n_assign, n_parts;
    expert_batch_part_t parts[EXPERT_BATCH_MAX_PARTS];
};

expert_batch_t *expert_batch_new(const config_t *cfg, int max_rows, int max_assign,
                                 err_t *err)
{
    assert(cfg);
    expert_batch_t *self = mem_calloc(1, sizeof *self);
    if (!self)
        goto oom;
    self->hidden = cfg->hidden_size;
    self->n_experts = cfg->n_experts;
    self->max_rows = max_rows;
    self->max_assign = max_assign;
    self->rows = mem_alloc_aligned((size_t)max_rows * (size_t)cfg->hidden_size * sizeof(float));
    self->assign = mem_calloc((size_t)max_assign, sizeof *self->assign);
    self->count = mem_calloc((size_t)cfg->n_experts, sizeof(int));
    self->incoming = mem_calloc((size_t)cfg->n_experts, sizeof(int));
    if (!self->rows || !self->assign || !self->count || !self->incoming)
        goto oom;
    return self;

oom:
    expert_batch_destroy(&self);
    err_set(err, ENOMEM, "out of memory for a batch of %d rows", max_rows);
    return NULL;
}

void expert_batch_destroy(expert_batch_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    expert_batch_t *self = *self_p;
    mem_free(self->rows);
    mem_free(self->assign);
    mem_free(self->count);
    mem_free(self->incoming);
    mem_free(self);
    *self_p = NULL;
}

/* incoming[e] = m's assignments to expert e (ids were checked on receipt). */
static void s_count(const expert_batch_t *self, const wire_data_t *m, int *incoming)
{
    memset(incoming, 0, (size_t)self->n_experts * sizeof(int));
    for (int i = 0; i < m->n_assign; i++)
        incoming[m->assign[i].expert]++;
}

bool expert_batch_fits(const expert_batch_t *self, const wire_data_t *m)
{
    assert(self);
    assert(m && m->type == WIRE_EXPERT_REQUEST);
    if (self->n_parts == 0)
        return true;
    if (self->n_parts == EXPERT_BATCH_MAX_PARTS || m->layer != self->layer ||
        m->per_assignment != self->per_assignment ||
        m->n_rows > self->max_rows - self->n_rows ||
        m->n_assign > self->max_assign - self->n_assign)
        return false;
    /* Mixing requests on an expert keeps each row's bits only while the
     * product stays batch-invariant (kernels/matmul.h). */
    int *incoming = ((expert_batch_t *)self)->incoming; /* scratch, not state */
    s_count(self, m, incoming);
    for (int e = 0; e < self->n_experts; e++)
        if (incoming[e] > 0 && self->count[e] > 0 &&
            incoming[e] + self->count[e] > GEMM_SMALL_MAX_ROWS)
            return false;
    return true;
}

void expert_batch_add(expert_batch_t *self, const wire_peer_t *from, const wire_data_t *m)
{
    assert(self);
    assert(from);
    assert(expert_batch_fits(self, m));
    if (self->n_parts == 0) {
        self->layer = m->layer;
        self->per_assignment = m->per_assignment;
    }
    expert_batch_part_t *p = &self->parts[self->n_parts++];
    *p = (expert_batch_part_t){.from = *from, .request_id = m->request_id, .dtype = m->dtype,
                               .row0 = self->n_rows, .n_rows = m->n_rows,
                               .assign0 = self->n_assign, .n_assign = m->n_assign};
    memcpy(self->rows + (size_t)p->row0 * (size_t)self->hidden, m->rows,
           (size_t)m->n_rows * (size_t)self->hidden * sizeof(float));
    s_count(self, m, self->incoming);
    for (int e = 0; e < self->n_experts; e++)
        self->count[e] += self->incoming[e];
    for (int i = 0; i < m->n_assign; i++) {
        moe_assign_t a = m->assign[i];
        a.row += p->row0;
        self->assign[p->assign0 + i] = a;
    }
    self->n_rows += m->n_rows;
    self->n_assign += m->n_assign;
}

int expert_batch_count(const expert_batch_t *self)
{
    return self->n_parts;
}

const expert_batch_part_t *expert_batch_part(const expert_batch_t *self, int i)
{
    assert(i >= 0 && i < self->n_parts);
    return &self->parts[i];
}

int expert_batch_layer(const expert_batch_t *self)
{
    return self->layer;
}

bool expert_batch_per_assignment(const expert_batch_t *self)
{
    return self->per_assignment;
}

int expert_batch_reply_first(const expert_batch_t *self, int i)
{
    const expert_batch_part_t *p = expert_batch_part(self, i);
    return self->per_assignment ? p->assign0 : p->row0;
}

int expert_batch_reply_rows(const expert_batch_t *self, int i)
{
    const expert_batch_part_t *p = expert_batch_part(self, i);
    return self->per_assignment ? p->n_assign : p->n_rows;
}

/* n assignments from first, over every row of the batch, into out (terms:
 * out + first rows, so each term lands at its batch index). */
static int s_run(expert_batch_t *self, int first, int n, experts_t *ex, const weights_t *w,
                 float *out, err_t *err)
{
    if (self->per_assignment)
        return experts_run_terms(ex, w, self->layer, self->rows, self->n_rows,
                                 self->assign + first, n,
                                 out + (size_t)first * (size_t)self->hidden, err);
    return experts_run(ex, w, self->layer, self->rows, self->n_rows, self->assign + first, n,
                       out, err);
}

int expert_batch_run(expert_batch_t *self, experts_t *ex, const weights_t *w, float *out,
                     err_t *err)
{
    assert(self && self->n_parts > 0);
    return s_run(self, 0, self->n_assign, ex, w, out, err);
}

int expert_batch_run_part(expert_batch_t *self, int i, experts_t *ex, const weights_t *w,
                          float *out, err_t *err)
{
    const expert_batch_part_t *p = expert_batch_part(self, i);
    return s_run(self, p->assign0, p->n_assign, ex, w, out, err);
}

void expert_batch_clear(expert_batch_t *self)
{
    assert(self);
    memset(self->count, 0, (size_t)self->n_experts * sizeof(int));
    self->n_rows = self->n_assign = self->n_parts = 0;
}
