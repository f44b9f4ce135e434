/* forward: the transformer forward pass, layer by layer.
 *
 * Per layer: h = x + attn(norm1(x)) with the sequence's KV cache; u = norm2(h);
 * router over u; x = h + routed experts(u). After the last layer: final norm
 * and LM head. The routed experts run through a callback, so the same pass
 * serves single-process mode (experts computed here) and the coordinator
 * (experts sent to expert nodes).
 *
 * Buffers are sized in forward_new() for chunks of max_rows tokens and contexts
 * of max_ctx positions; forward_run() never allocates. Longer inputs are run
 * in chunks of max_rows (chunked prefill), with the same result.
 */
#ifndef MOE_ENGINE_FORWARD_H
#define MOE_ENGINE_FORWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "core/err.h"
#include "engine/kvcache.h"
#include "engine/router.h"
#include "engine/weights.h"

typedef struct forward forward_t;

/* Computes the routed experts' contribution for one layer:
 * out[r] = sum over assignments (r, e, w) of w * expert_e(u[r]).
 *   u: (n_rows, hidden), out: (n_rows, hidden). Returns 0 or -1 with err. */
typedef int (*forward_moe_fn)(void *ctx, int layer, const float *u, int n_rows,
                              const moe_assign_t *assign, int n_assign, float *out,
                              err_t *err);

/* Sees each layer's routing: ids and weights are (n_rows, k), for the tokens
 * at positions pos0 .. pos0 + n_rows - 1. */
typedef void (*forward_trace_fn)(void *ctx, int layer, int pos0, int n_rows, int k,
                                 const int32_t *ids, const float *weights);

typedef enum forward_logits {
    FORWARD_LOGITS_NONE = 0,  /* no LM head (e.g. a prefill chunk) */
    FORWARD_LOGITS_LAST,      /* (1, vocab): the last token's */
    FORWARD_LOGITS_ALL,       /* (n, vocab): every token's */
} forward_logits_t;

/* w must hold the dense part, and every expert when moe is NULL (experts are
 * then computed in-process). w stays owned by the caller and must outlive
 * the forward_t. Every product runs in a compute context (kernels/compute.h)
 * made here, on as many threads as OpenBLAS is set to now (blas_set_threads()
 * comes first), shared with the experts, MLPs and latent attention it drives.
 * NULL with errno/err on failure. */
forward_t *forward_new(const weights_t *w, int max_rows, int max_ctx,
                       forward_moe_fn moe, void *moe_ctx, err_t *err);
void forward_destroy(forward_t **self_p);

void forward_set_trace(forward_t *self, forward_trace_fn fn, void *ctx);

/* For routed experts that run elsewhere (the coordinator's expert nodes), an
 * asynchronous port in two halves, with the ctx given to forward_new: start
 * sends micro-batch mb's rows away and returns, finish waits for the results
 * and writes out as the moe callback would have. Between the two the forward
 * pass runs its own work: the shared experts, and, with two micro-batches,
 * the other micro-batch's attention and routing (ping-pong).
 *   mb: 0 or 1; row0: the micro-batch's first row in the step; u (n_rows,
 *   hidden) and assign (rows in [0, n_rows)) stay unchanged until the finish;
 *   out: (n_rows, hidden). finish is called once after each successful
 *   start, with the same mb, layer and out, also when the step fails
 *   elsewhere (then its result is not used).
 * micro_batches: 1 (every step is one call per layer) or 2 (a step of at
 * least two sequences is split into two micro-batches of whole sequences, of
 * rows as equal as the sequences allow). Each row's arithmetic is the same
 * either way; the products are batch-invariant up to GEMM_SMALL_MAX_ROWS rows
 * (kernels/gemm_small.h), so decode steps give the same bits split or not. */
typedef int (*forward_moe_start_fn)(void *ctx, int mb, int layer, const float *u, int row0,
                                    int n_rows, const moe_assign_t *assign, int n_assign,
                                    float *out, err_t *err);
typedef int (*forward_moe_finish_fn)(void *ctx, int mb, int layer, float *out, err_t *err);
void forward_set_moe_async(forward_t *self, forward_moe_start_fn start,
                           forward_moe_finish_fn finish, int micro_batches);

/* Seconds the forward pass computed while routed experts were away (between
 * a start and its finish: the shared experts, and the other micro-batch's
 * attention, routing and sending), summed since forward_new. */
double forward_overlap_seconds(const forward_t *self);

/* One sequence's part of a step: n tokens at the next positions of its cache. */
typedef struct forward_seq {
    kvcache_t *kv;            /* the sequence's cache; one step uses each at most once */
    const int32_t *tokens;    /* (n) */
    int n;                    /* >= 1 */
    forward_logits_t want;    /* NONE or LAST; ALL only in a one-sequence step */
    float *logits;            /* (vocab) for LAST, (n, vocab) for ALL */
} forward_seq_t;

/* One forward step over the rows of several sequences at once (continuous
 * batching): the matrix products and the routed experts see every row; each
 * sequence's rows attend to its own cache only. At most max_rows rows in all.
 * Checks everything first and changes nothing on failure (EINVAL, ENOSPC,
 * E2BIG as forward_run; a failed expert call leaves every cache as it was).
 * The trace callback sees each micro-batch's rows (the whole step when it is
 * not split), with the pos0 of its first sequence. */
int forward_step(forward_t *self, const forward_seq_t *seqs, int n_seqs, err_t *err);

/* Runs tokens[0..n) at the next positions of kv and appends their keys and
 * values. Checks first, changing nothing on failure: every token id in
 * [0, vocab) (EINVAL), kv has room (ENOSPC), the context fits max_ctx
 * (ENOSPC). logits receives what `want` asks for. On a failure inside the
 * pass (the moe callback failed) kv is left as it was before the call. */
int forward_run(forward_t *self, kvcache_t *kv, const int32_t *tokens, int n,
                forward_logits_t want, float *logits, err_t *err);

/* Index of the largest logit, the lowest index among equals (greedy decoding,
 * as torch.argmax). */
int32_t forward_argmax(const float *logits, int vocab);

#endif /* MOE_ENGINE_FORWARD_H */
