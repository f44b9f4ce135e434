/* mover: changes the placement while the coordinator serves (issue 16).
 *
 * A move goes from the placement in use to one the planner (model/planner.h)
 * makes from the measured load (load.h), in three phases, all driven from the
 * coordinator's loop between forward steps (mover_tick), after the plan: the
 * planner runs on a thread of its own (about half a second for DeepSeek-V3's
 * 58 x 256 experts), so the loop keeps stepping meanwhile, and a plan that
 * cannot be made (budgets too small) ends the move as a refusal;
 *
 *   1. load: each node that gains experts is sent PLACE with them and loads
 *      them in the background (expert_node/expert_loader.h) while it keeps
 *      serving the old placement; it answers PLACE_REPLY when they are in
 *      memory;
 *   2. switch: once every gaining node is ready, between two steps, the
 *      dispatch's routes become the new placement's (no call is in flight
 *      then, so no request sees a half-moved placement);
 *   3. drop: each node that lost experts is sent DROP and releases them.
 *
 * A move that fails before the switch (a gaining node dies or goes down,
 * answers ERROR, e.g. out of its memory budget, or is not ready within the
 * move timeout) leaves the old placement serving: the nodes that loaded
 * experts for it are told to drop them again (after their load ends). After
 * the switch nothing can fail the move: a node that dies then is a node
 * failure like any other (dispatch.h's failover).
 *
 * Because the combine does not depend on the placement (dispatch.h), outputs
 * are the same before, during and after a move.
 *
 * With an interval (mover_set_auto), the mover checks the imbalance (the
 * heaviest node's load over the mean of the nodes hosting experts) that
 * often and moves when it is above the threshold and the plan lowers it by
 * at least the hysteresis margin (so a plan that cannot help is not applied
 * again and again). Owned by the coordinator's loop thread.
 */
#ifndef MOE_COORDINATOR_MOVER_H
#define MOE_COORDINATOR_MOVER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "coordinator/dispatch.h"
#include "coordinator/peer.h"
#include "core/err.h"
#include "model/config.h"
#include "model/placement.h"

enum { MOVER_TIMEOUT_MS = 120000 };  /* default: a gaining node must be ready by then */
#define MOVER_MARGIN 0.05            /* auto moves: the plan must be 5% better */

typedef struct mover mover_t;

/* The outcome of a finished move. */
typedef struct mover_result {
    bool ok;
    char message[512];         /* one line for a person: what moved, or why not */
    double imbalance_before;   /* heaviest node / mean, under the measured load */
    double imbalance_after;    /* the same under the new placement (before when failed) */
    int copies_loaded;         /* expert copies the nodes loaded */
    int copies_dropped;
    bool refused;              /* not ok because no plan could be made (the budgets
                                  cannot hold it, a count out of range): the
                                  request, not the cluster, is at fault */
} mover_result_t;

/* A mover for the dispatch's routes (both borrowed, outliving it) starting
 * from `initial` (copied). group_size > 1: plans keep groups of that many
 * experts whole (--placement-groups). log: one line per move (NULL: quiet).
 * NULL with errno/err. */
mover_t *mover_new(dispatch_t *dispatch, peer_t **peers, int n_peers, const config_t *cfg,
                   const placement_t *initial, int group_size, FILE *log, err_t *err);
void mover_destroy(mover_t **self_p);

/* The placement in use (borrowed, valid until the next switch). */
const placement_t *mover_placement(const mover_t *self);

/* The MoE-layer pairs peer p hosts in the placement in use (borrowed, valid
 * until the next switch); returns their count. */
int mover_hosted(const mover_t *self, int p, const int32_t **layer, const int32_t **expert);

/* How long a gaining node has to get ready (ms, > 0). */
void mover_set_timeout(mover_t *self, int timeout_ms);
int mover_timeout_ms(const mover_t *self);

/* Automatic moves: every every_s seconds (0: never) when the imbalance
 * exceeds threshold (> 1), with `redundant` copies. */
void mover_set_auto(mover_t *self, int every_s, double threshold, int redundant);

/* Starts a move: plans (on the planner's thread) from the measured load
 * with `redundant` copies per layer, taking nothing onto peer `drain` (-1:
 * none; its experts move away; once drained, later plans leave it out too:
 * it is retired), then moves. 0 when started; its outcome comes from
 * mover_take_result, a plan that cannot be made as a refusal (`refused`:
 * the plan does not fit the nodes' memory budgets, the message saying how
 * many copies are needed and held; no live node could hold experts; a plan
 * beyond DISPATCH_MAX_REPLICAS copies), the placement untouched. -1 with
 * EBUSY (a move is running), EPERM (mover_may_move) or, when no thread
 * could be started to plan, with the refusal's error (ENOSPC, EINVAL,
 * ENOMEM) at once. */
int mover_start(mover_t *self, int redundant, int drain, err_t *err);

/* Whether experts may move now: 0, or -1 with EPERM and err naming a node
 * that serves more than one coordinator. Placement changes are made only by
 * a coordinator that has the nodes to itself: another one sharing them would
 * go on routing by the old placement (docs/OPERATIONS.md, "Several
 * coordinators"). Rebalances (manual and automatic), drains and joins ask. */
int mover_may_move(const mover_t *self, err_t *err);

/* Between two steps: advances the move (and the automatic checks). now:
 * timer_now(). */
void mover_tick(mover_t *self, double now);

/* A node joined (dispatch_add_peer first): it hosts nothing until a move
 * gives it experts. EBUSY during a move, ENOSPC beyond the dispatch's room,
 * ENOMEM. */
int mover_add_node(mover_t *self, err_t *err);
/* Undoes the last mover_add_node (a node that never came up). */
void mover_remove_last_node(mover_t *self);

/* True while a move runs. */
bool mover_busy(const mover_t *self);

/* The outcome of the last move started with mover_start, once: true and
 * *out filled when it finished since the last call. */
bool mover_take_result(mover_t *self, mover_result_t *out);

/* The imbalance under the measured load now (0 when nothing was measured). */
double mover_imbalance(const mover_t *self);

#endif /* MOE_COORDINATOR_MOVER_H */
