/* expert_set: the routed experts one node holds, which change while it runs.
 *
 * The experts come in parts: the weights loaded at start, then one part per
 * PLACE (weights_load of just the experts gained, done by expert_loader in
 * the background). The set keeps a composed view, one weights_t whose expert
 * slots point into the parts, for experts_run; the parts own the memory.
 * Dropping experts clears their slots; a part none of whose experts is held
 * any more is destroyed (its mapping and buffers released), and the pages of
 * a dropped expert inside a part that lives on are handed back to the system
 * (madvise DONTNEED on the whole pages within its matrices), so a node's
 * memory follows what it holds. Owned by the node's loop thread.
 */
#ifndef MOE_EXPERT_NODE_EXPERT_SET_H
#define MOE_EXPERT_NODE_EXPERT_SET_H

#include <stdbool.h>
#include <stdint.h>

#include "core/err.h"
#include "engine/weights.h"

typedef struct expert_set expert_set_t;

/* A set holding the routed experts of *first_p (taken, nulled; its config
 * is the model's). NULL with ENOMEM (and *first_p untouched). */
expert_set_t *expert_set_new(weights_t **first_p, err_t *err);
void expert_set_destroy(expert_set_t **self_p);

/* The composed view for experts_run; valid until the next add or drop. */
const weights_t *expert_set_weights(const expert_set_t *self);

/* Adds the experts of *part_p (taken, nulled): each one the set does not
 * hold yet becomes held (an expert already held keeps its old copy). ENOMEM
 * (and *part_p untouched). */
int expert_set_add(expert_set_t *self, weights_t **part_p, err_t *err);

/* Stops holding (layer[i], expert[i]) for i < n (pairs not held are
 * ignored); releases their memory as described above. */
void expert_set_drop(expert_set_t *self, const int32_t *layer, const int32_t *expert, int n);

/* True when (layer, expert) is held. */
bool expert_set_holds(const expert_set_t *self, int layer, int expert);

/* How many pairs are held; the pairs, by layer then expert, into layer[],
 * expert[] (room for expert_set_count entries each). */
int expert_set_count(const expert_set_t *self);
void expert_set_pairs(const expert_set_t *self, int32_t *layer, int32_t *expert);

/* Bytes of the held experts' matrices (and scales), as held. */
uint64_t expert_set_bytes(const expert_set_t *self);

#endif /* MOE_EXPERT_NODE_EXPERT_SET_H */
