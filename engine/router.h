/* router: each row's choice of experts, and the weight of each choice.
 *
 * Mixtral's rule (Hugging Face MixtralSparseMoeBlock): probabilities are the
 * float32 softmax of the router logits; the k most probable experts are kept,
 * in descending probability with ties to the lower id (as the reference
 * fixtures order them); with renormalisation their probabilities are divided
 * by their sum.
 */
#ifndef MOE_ENGINE_ROUTER_H
#define MOE_ENGINE_ROUTER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/assign.h"


/* logits: (n_rows, n_experts) router logits, overwritten with probabilities.
 * ids, weights: (n_rows, k) outputs. 1 <= k <= n_experts. */
void router_select_softmax(float *logits, int n_rows, int n_experts, int k,
                           bool renormalize, int32_t *ids, float *weights);

/* Flattens (n_rows, k) choices into n_rows * k assignments, row-major. */
void router_assignments(const int32_t *ids, const float *weights, int n_rows, int k,
                        moe_assign_t *out);

#endif /* MOE_ENGINE_ROUTER_H */
