/* expert_batch: the EXPERT_REQUESTs an expert node runs as one.
 *
 * When several requests for the same layer are waiting (several
 * coordinators, or one coordinator's two micro-batches), the node copies
 * them into one batch and runs each expert once over the rows of all of
 * them, then answers each request with its own rows. The answers are bit for
 * bit those of running each request alone, because a request joins only
 * when, for every expert, the rows it shares with the batch stay where the
 * kernels are batch-invariant (kernels/matmul.h: up to GEMM_SMALL_MAX_ROWS
 * rows per product, each row depends on its own input only); an expert that
 * needs more rows than that runs over one request's rows only, as alone. A
 * row's partial sum adds its experts in expert order either way (experts.h).
 *
 * Bounds: at most EXPERT_BATCH_MAX_PARTS requests, max_rows rows and
 * max_assign assignments (the node's per-request limits), so the buffers are
 * sized once and adding allocates nothing. Owned by the node's thread.
 */
#ifndef MOE_EXPERT_NODE_EXPERT_BATCH_H
#define MOE_EXPERT_NODE_EXPERT_BATCH_H

#include <stdbool.h>
#include <stdint.h>

#include "core/err.h"
#include "engine/experts.h"
#include "engine/weights.h"
#include "model/config.h"
#include "proto/data_plane.h"

enum { EXPERT_BATCH_MAX_PARTS = 16 }; /* requests run together at most */

typedef struct expert_batch expert_batch_t;

/* One request in the batch. Its reply is the rows [first, first + n) of the
 * batch's output: its partial-sum rows, or with per_assignment its terms. */
typedef struct expert_batch_part {
    wire_peer_t from;       /* who asked */
    uint64_t request_id;    /* echoed in the reply */
    wire_tensor_format_t dtype; /* its rows' wire format: the reply's (--wire) */
    int row0;               /* its first row in the batch */
    int n_rows;
    int assign0;            /* its first assignment in the batch */
    int n_assign;
} expert_batch_part_t;

/* A batch for the model of cfg, up to max_rows rows and max_assign
 * assignments in all. NULL with errno/err (ENOMEM). */
expert_batch_t *expert_batch_new(const config_t *cfg, int max_rows, int max_assign,
                                 err_t *err);
void expert_batch_destroy(expert_batch_t **self_p);

/* Whether the EXPERT_REQUEST m (checked by wire_data_recv) may join: the
 * batch is empty, or m is for the same layer and kind (per_assignment), the
 * totals stay within the bounds and no expert's rows would pass the
 * batch-invariant size by mixing requests. */
bool expert_batch_fits(const expert_batch_t *self, const wire_data_t *m);

/* Copies m's rows and assignments in (m's memory may be reused after); the
 * caller has checked expert_batch_fits. */
void expert_batch_add(expert_batch_t *self, const wire_peer_t *from, const wire_data_t *m);

/* Requests in the batch (0: empty), and the i-th (borrowed). */
int expert_batch_count(const expert_batch_t *self);
const expert_batch_part_t *expert_batch_part(const expert_batch_t *self, int i);

/* The batch's layer, and whether its requests want one row per assignment. */
int expert_batch_layer(const expert_batch_t *self);
bool expert_batch_per_assignment(const expert_batch_t *self);

/* Rows of out part i's reply starts at and holds (its rows, or with
 * per_assignment its assignments). */
int expert_batch_reply_first(const expert_batch_t *self, int i);
int expert_batch_reply_rows(const expert_batch_t *self, int i);

/* Runs every request in one experts_run (or experts_run_terms) into out:
 * (max_assign, hidden) room. -1 with errno/err as experts_run (an expert not
 * held, ...); then run each part alone to answer each its own way. */
int expert_batch_run(expert_batch_t *self, experts_t *ex, const weights_t *w, float *out,
                     err_t *err);

/* Runs part i alone; its reply lands where expert_batch_run puts it (rows of
 * other parts in out may be overwritten). Errors as experts_run. */
int expert_batch_run_part(expert_batch_t *self, int i, experts_t *ex, const weights_t *w,
                          float *out, err_t *err);

/* Empties the batch. */
void expert_batch_clear(expert_batch_t *self);

#endif /* MOE_EXPERT_NODE_EXPERT_BATCH_H */
