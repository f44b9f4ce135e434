/* rpc: the coordinator's client endpoint and request handling.
 *
 * One ROUTER socket serves any number of connected clients. GENERATE requests
 * (prompt ids, or text tokenized here with the model's tokenizer.json) go to
 * the scheduler (sched.h), which batches all running sequences into
 * each forward step, whose experts are dispatched to the nodes; each token
 * leaves as a TOKENS reply as soon as it is made, then a final one with
 * counts and timings. A client that has gone is noticed on the next reply and
 * its sequence freed. LOGITS (run between steps) returns every prompt
 * position's logits as a tensor frame; STATUS reports nodes, placement and
 * counters. Every accepted request gets its answer or one ERROR_REPLY; a
 * malformed request gets an ERROR_REPLY and the loop goes on.
 */
#ifndef MOE_COORDINATOR_RPC_H
#define MOE_COORDINATOR_RPC_H

#include <signal.h>

#include "coordinator/dispatch.h"
#include "coordinator/peer.h"
#include "core/err.h"
#include "engine/sampler.h"
#include "engine/weights.h"
#include "security/keypair.h"
#include "tokenizer/tokenizer.h"

/* The experts one node hosts, for status replies. */
typedef struct rpc_node_info {
    int n_hosted;
    const int32_t *hosted_layer;   /* (n_hosted), borrowed */
    const int32_t *hosted_expert;  /* (n_hosted), borrowed */
} rpc_node_info_t;

typedef struct rpc_config {
    const char *bind;       /* client endpoint to bind, e.g. tcp://127.0.0.1:* (used in rpc_new) */
    const char *model_name; /* the model folder, shown in status (copied) */
    const char *model_arch; /* its architecture, shown in status (copied) */
    int max_context;        /* positions per sequence (prompt + generated) */
    int prefill_rows;       /* rows per forward step (decode rows + prefill chunks) */
    int max_seqs;           /* sequences generating at once */
    int queue_limit;        /* requests waiting; more get BUSY */
    size_t kv_memory;       /* bytes of KV cache for all sequences */
    const tokenizer_t *tokenizer; /* NULL: prompts come as ids only, no text out */
    int n_eos;              /* the model's EOS ids (genconfig.h) */
    int32_t eos[SAMPLER_MAX_EOS];
    int default_deadline_ms;      /* for requests that give none; 0: none */
    const keypair_t *curve_key;   /* NULL: plain; else the endpoint is a CURVE
                                     server with this pair (borrowed; the
                                     context's ZAP handler allows the clients) */
    int max_tokens_limit;         /* GENERATE max_tokens above it are refused; 0: none */
    int max_requests_per_client;  /* GENERATEs queued + running per client (key,
                                     else connection); more get BUSY; 0: none */
} rpc_config_t;

typedef struct rpc rpc_t;

/* Everything borrowed must outlive the rpc_t. NULL with errno/err. */
rpc_t *rpc_new(void *zmq_ctx, const weights_t *w, dispatch_t *dispatch, peer_t **peers,
               const rpc_node_info_t *nodes, int n_peers, const rpc_config_t *conf,
               err_t *err);
void rpc_destroy(rpc_t **self_p);

/* The bound client endpoint, e.g. "tcp://127.0.0.1:40123" (borrowed). */
const char *rpc_endpoint(const rpc_t *self);

/* Serves until *stop becomes non-zero (checked at least every 100 ms).
 * Returns 0, or -1 with errno/err when the socket fails. */
int rpc_run(rpc_t *self, volatile sig_atomic_t *stop, err_t *err);

#endif /* MOE_COORDINATOR_RPC_H */
