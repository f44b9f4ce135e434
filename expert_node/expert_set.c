/* expert_set: see expert_set.h.
 *
 * view.layers[l].experts[e] is a copy of the slot of the part that holds
 * (l, e), or all zeros (not held); owner[l * E + e] is that part's index, -1
 * when not held. Parts are kept in an array that only grows at the end; a
 * destroyed part leaves a NULL.
 */
#include "expert_node/expert_set.h"

#include <errno.h>
#include <string.h>

#include "core/mem.h"
#include "engine/wconvert.h"

enum { MAX_PARTS = 256 };  /* parts alive or dead: one per PLACE, the first at start */

struct expert_set {
    weights_t view;            /* cfg and layers only: no mapping, no store */
    weights_t *part[MAX_PARTS];
    int n_parts;
    int *owner;                /* (n_layers * n_experts) part of each held pair, or -1 */
    int *n_held;               /* (MAX_PARTS) pairs each part still holds */
};

/* Copies part i's slot of (l, e) into the view. */
static void s_take_slot(expert_set_t *self, int i, int l, int e)
{
    const weights_t *p = self->part[i];
    self->view.layers[l].experts[e] = p->layers[l].experts[e];
    if (self->view.layers[l].expert_biases && p->layers[l].expert_biases)
        self->view.layers[l].expert_biases[e] = p->layers[l].expert_biases[e];
    self->owner[(size_t)l * self->view.cfg.n_experts + e] = i;
    self->n_held[i]++;
}

/* Makes *part_p part number n_parts and takes the slots it has that are not
 * held yet. */
static int s_adopt(expert_set_t *self, weights_t **part_p, err_t *err)
{
    if (self->n_parts == MAX_PARTS)
        return err_set(err, ENOMEM, "more than %d loads of experts since the node started",
                       MAX_PARTS);
    const int i = self->n_parts++;
    self->part[i] = *part_p;
    *part_p = NULL;
    self->n_held[i] = 0;
    const config_t *cfg = &self->view.cfg;
    for (int l = 0; l < cfg->n_layers; l++)
        for (int e = 0; e < cfg->n_experts; e++)
            if (weights_has_expert(self->part[i], l, e) && !expert_set_holds(self, l, e))
                s_take_slot(self, i, l, e);
    if (self->n_held[i] == 0) /* nothing new: the part is not needed */
        weights_destroy(&self->part[i]);
    return 0;
}

expert_set_t *expert_set_new(weights_t **first_p, err_t *err)
{
    const config_t *cfg = &(*first_p)->cfg;
    expert_set_t *self = mem_calloc(1, sizeof *self);
    if (!self)
        goto oom;
    self->view.cfg = *cfg;
    self->view.format = (*first_p)->format;
    self->view.layers = mem_calloc((size_t)cfg->n_layers, sizeof *self->view.layers);
    self->owner = mem_alloc((size_t)cfg->n_layers * cfg->n_experts * sizeof(int));
    self->n_held = mem_calloc(MAX_PARTS, sizeof(int));
    if (!self->view.layers || !self->owner || !self->n_held)
        goto oom;
    for (size_t i = 0; i < (size_t)cfg->n_layers * cfg->n_experts; i++)
        self->owner[i] = -1;
    for (int l = 0; l < cfg->n_layers; l++) {
        layer_weights_t *lw = &self->view.layers[l];
        lw->experts = mem_calloc((size_t)cfg->n_experts, sizeof *lw->experts);
        if (!lw->experts)
            goto oom;
        if ((*first_p)->layers[l].expert_biases &&
            !(lw->expert_biases = mem_calloc((size_t)cfg->n_experts,
                                             sizeof *lw->expert_biases)))
            goto oom;
    }
    if (s_adopt(self, first_p, err) < 0)
        goto fail;
    return self;

oom:
    err_set(err, ENOMEM, "out of memory for the node's expert set");
fail:
    expert_set_destroy(&self);
    return NULL;
}

void expert_set_destroy(expert_set_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    expert_set_t *self = *self_p;
    for (int i = 0; i < self->n_parts; i++)
        weights_destroy(&self->part[i]);
    for (int l = 0; self->view.layers && l < self->view.cfg.n_layers; l++) {
        mem_free(self->view.layers[l].experts);
        mem_free(self->view.layers[l].expert_biases);
    }
    mem_free(self->view.layers);
    mem_free(self->owner);
    mem_free(self->n_held);
    mem_free(self);
    *self_p = NULL;
}

const weights_t *expert_set_weights(const expert_set_t *self)
{
    return &self->view;
}

int expert_set_add(expert_set_t *self, weights_t **part_p, err_t *err)
{
    return s_adopt(self, part_p, err);
}

bool expert_set_holds(const expert_set_t *self, int layer, int expert)
{
    const config_t *cfg = &self->view.cfg;
    return layer >= 0 && layer < cfg->n_layers && expert >= 0 && expert < cfg->n_experts &&
           self->owner[(size_t)layer * cfg->n_experts + expert] >= 0;
}

void expert_set_drop(expert_set_t *self, const int32_t *layer, const int32_t *expert, int n)
{
    const config_t *cfg = &self->view.cfg;
    for (int k = 0; k < n; k++) {
        if (!expert_set_holds(self, layer[k], expert[k]))
            continue;
        const size_t at = (size_t)layer[k] * cfg->n_experts + expert[k];
        const int i = self->owner[at];
        expert_weights_t *ew = &self->view.layers[layer[k]].experts[expert[k]];
        /* Stacked experts (gpt_oss) are views into one tensor whose pages
         * neighbouring experts share: those stay until the part goes. */
        if (--self->n_held[i] > 0 && !config_experts_stacked(cfg)) {
            /* Their pages go back to the system (a mapped file's would be
             * read again if they were, an owned buffer's would read as
             * zeros: the expert is never read again). */
            wconvert_drop_pages(&ew->gate);
            wconvert_drop_pages(&ew->up);
            wconvert_drop_pages(&ew->down);
        }
        memset(ew, 0, sizeof *ew);
        if (self->view.layers[layer[k]].expert_biases)
            memset(&self->view.layers[layer[k]].expert_biases[expert[k]], 0,
                   sizeof(expert_biases_t));
        self->owner[at] = -1;
        if (self->n_held[i] == 0)
            weights_destroy(&self->part[i]);
    }
}

int expert_set_count(const expert_set_t *self)
{
    int n = 0;
    for (size_t i = 0; i < (size_t)self->view.cfg.n_layers * self->view.cfg.n_experts; i++)
        n += self->owner[i] >= 0;
    return n;
}

void expert_set_pairs(const expert_set_t *self, int32_t *layer, int32_t *expert)
{
    const config_t *cfg = &self->view.cfg;
    int n = 0;
    for (int l = 0; l < cfg->n_layers; l++)
        for (int e = 0; e < cfg->n_experts; e++)
            if (self->owner[(size_t)l * cfg->n_experts + e] >= 0) {
                layer[n] = l;
                expert[n++] = e;
            }
}

uint64_t expert_set_bytes(const expert_set_t *self)
{
    const config_t *cfg = &self->view.cfg;
    uint64_t total = 0;
    for (int l = 0; l < cfg->n_layers; l++)
        for (int e = 0; e < cfg->n_experts; e++) {
            const expert_weights_t *ew = &self->view.layers[l].experts[e];
            if (ew->gate.data)
                total += tensor_bytes(&ew->gate) + tensor_bytes(&ew->up) +
                         tensor_bytes(&ew->down);
        }
    return total;
}
