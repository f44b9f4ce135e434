/* experts: runs routed experts' SwiGLU FFNs over the rows routed to them.
 *
 * For each expert with work, its rows are gathered into one block and run as
 * three matrix products (gate, up, down) so that the expert's weights are read
 * once per block, not once per row; each result row is scaled by its routing
 * weight and added into that row's partial sum. Both moe-run and the expert
 * nodes run experts through here. gpt_oss's experts (config expert_act
 * SWIGLU_OAI) add their biases after each product and use the clamped SwiGLU
 * (kernels/ffn.h); their weights carry expert_biases.
 */
#ifndef MOE_ENGINE_EXPERTS_H
#define MOE_ENGINE_EXPERTS_H

#include "core/err.h"
#include "engine/router.h"
#include "engine/weights.h"
#include "kernels/compute.h"

typedef struct experts experts_t;

/* Scratch for batches of up to max_rows rows and max_assign assignments,
 * allocated here once; the products run in cx (borrowed, must outlive the
 * experts_t). NULL with errno/err on failure. */
experts_t *experts_new(const config_t *cfg, int max_rows, int max_assign,
                       compute_t *cx, err_t *err);
void experts_destroy(experts_t **self_p);

/* out[r] = sum over assignments (r, e, w) of w * ffn_e(u[r]) for r < n_rows;
 * rows with no assignment get zeros.
 *   u:   (n_rows, hidden)   out: (n_rows, hidden), must not overlap u
 * Every assignment is checked first: row in range, expert loaded in w for
 * this layer, weight finite; a bad one is EINVAL (EPROTO for the caller to
 * relay) and out is untouched. n_rows and n_assign above the sizes given to
 * experts_new are E2BIG. */
int experts_run(experts_t *self, const weights_t *w, int layer, const float *u,
                int n_rows, const moe_assign_t *assign, int n_assign, float *out,
                err_t *err);

/* The same products, each assignment's term kept apart: terms[i] =
 * assign[i].weight * ffn_e(u[assign[i].row]), (n_assign, hidden). Adding a
 * row's terms in expert order onto zeros gives experts_run's row bit for bit
 * (the same products, the same additions), which is how the coordinator
 * combines terms from any set of nodes (dispatch.h). Errors as experts_run. */
int experts_run_terms(experts_t *self, const weights_t *w, int layer, const float *u,
                      int n_rows, const moe_assign_t *assign, int n_assign, float *terms,
                      err_t *err);

#endif /* MOE_ENGINE_EXPERTS_H */
