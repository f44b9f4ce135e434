/* stepper: see stepper.h. */
#include "coordinator/stepper.h"

#include <assert.h>
#include <errno.h>

#include "core/mem.h"
#include "engine/kvcache.h"

struct stepper {
    const config_t *cfg;
    forward_t *fw;             /* borrowed */
    int max_seqs;
    kvcache_t **kv;            /* (max_seqs) a slot's cache; NULL when free */
    forward_seq_t *seqs;       /* (max_seqs) the step being run */
    sched_row_lost_fn row_lost;
    void *row_lost_ctx;
};

stepper_t *stepper_new(const config_t *cfg, forward_t *fw, int max_seqs,
                       sched_row_lost_fn row_lost, void *row_lost_ctx, err_t *err)
{
    stepper_t *self = mem_calloc(1, sizeof *self);
    if (!self || !(self->kv = mem_calloc((size_t)max_seqs, sizeof *self->kv)) ||
        !(self->seqs = mem_calloc((size_t)max_seqs, sizeof *self->seqs))) {
        stepper_destroy(&self);
        err_set(err, ENOMEM, "out of memory for %d sequence slots", max_seqs);
        return NULL;
    }
    self->cfg = cfg;
    self->fw = fw;
    self->max_seqs = max_seqs;
    self->row_lost = row_lost;
    self->row_lost_ctx = row_lost_ctx;
    return self;
}

void stepper_destroy(stepper_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    stepper_t *self = *self_p;
    if (self->kv)
        for (int i = 0; i < self->max_seqs; i++)
            kvcache_destroy(&self->kv[i]);
    mem_free(self->kv);
    mem_free(self->seqs);
    mem_free(self);
    *self_p = NULL;
}

static size_t s_kv_bytes(void *ctx, int positions)
{
    const stepper_t *self = ctx;
    return (size_t)positions * kvcache_position_bytes(self->cfg);
}

static int s_open(void *ctx, int slot, int positions, err_t *err)
{
    stepper_t *self = ctx;
    assert(slot >= 0 && slot < self->max_seqs && !self->kv[slot]);
    self->kv[slot] = kvcache_new(self->cfg, positions, err);
    return self->kv[slot] ? 0 : -1;
}

static void s_close(void *ctx, int slot)
{
    stepper_t *self = ctx;
    assert(slot >= 0 && slot < self->max_seqs);
    kvcache_destroy(&self->kv[slot]);
}

static int s_run(void *ctx, const sched_item_t *items, int n, err_t *err)
{
    stepper_t *self = ctx;
    assert(n <= self->max_seqs);
    for (int i = 0; i < n; i++)
        self->seqs[i] = (forward_seq_t){
            self->kv[items[i].slot], items[i].tokens, items[i].n,
            items[i].want_logits ? FORWARD_LOGITS_LAST : FORWARD_LOGITS_NONE,
            items[i].logits};
    return forward_step(self->fw, self->seqs, n, err);
}

static bool s_row_lost(void *ctx, int row)
{
    const stepper_t *self = ctx;
    return self->row_lost(self->row_lost_ctx, row);
}

sched_engine_t stepper_engine(stepper_t *self)
{
    return (sched_engine_t){.ctx = self, .kv_bytes = s_kv_bytes, .open = s_open,
                            .close = s_close, .run = s_run,
                            .row_lost = self->row_lost ? s_row_lost : NULL};
}
