/* stepper: the forward pass as the scheduler's engine (sched_engine_t).
 *
 * Owns one KV cache per scheduler slot and turns a step's items into one
 * forward_step over those caches; after a failed step it asks the routed
 * experts' dispatcher which rows lost their expert. The forward pass (and,
 * through it, the dispatch) is borrowed. Owned by the coordinator's thread.
 */
#ifndef MOE_COORDINATOR_STEPPER_H
#define MOE_COORDINATOR_STEPPER_H

#include "coordinator/sched.h"
#include "core/err.h"
#include "engine/forward.h"
#include "model/config.h"

typedef struct stepper stepper_t;

/* Up to max_seqs slots over fw (borrowed: it must allow the scheduler's
 * step_tokens rows). row_lost (may be NULL) with row_lost_ctx answers the
 * scheduler's sched_row_lost_fn, e.g. dispatch_row_lost. NULL with errno/err. */
stepper_t *stepper_new(const config_t *cfg, forward_t *fw, int max_seqs,
                       sched_row_lost_fn row_lost, void *row_lost_ctx, err_t *err);
void stepper_destroy(stepper_t **self_p);

/* The engine to give sched_new; valid while self lives. */
sched_engine_t stepper_engine(stepper_t *self);

#endif /* MOE_COORDINATOR_STEPPER_H */
