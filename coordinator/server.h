/* server: the coordinator's serving core, under every front end.
 *
 * Owns the loop, the scheduler (sched.h) and its engine (stepper.h: the
 * forward pass, whose routed experts go through the borrowed dispatch), a
 * KV cache for LOGITS requests, the counters and the one status structure
 * that every front end renders. Front ends (rpc: ZeroMQ; http: the OpenAI
 * API) register a socket or file descriptor that the loop polls, a handle
 * function the loop calls when it is readable, and a deliver function that
 * gets the scheduler's events for their clients (sched_client_t.front is the
 * front end's index). Everything here runs on the loop's thread: a front end
 * whose own threads take requests hands them over through its descriptor
 * (http.c: a queue and an eventfd).
 */
#ifndef MOE_COORDINATOR_SERVER_H
#define MOE_COORDINATOR_SERVER_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coordinator/dispatch.h"
#include "coordinator/mover.h"
#include "coordinator/peer.h"
#include "coordinator/sched.h"
#include "core/err.h"
#include "core/metrics.h"
#include "engine/sampler.h"
#include "engine/weights.h"
#include "tokenizer/tokenizer.h"

enum { SERVER_MAX_FRONTENDS = 4 };

/* The experts one node hosts, for status. */
typedef struct server_node_info {
    int n_hosted;
    const int32_t *hosted_layer;   /* (n_hosted), borrowed */
    const int32_t *hosted_expert;  /* (n_hosted), borrowed */
} server_node_info_t;

typedef struct server_config {
    const char *model_name; /* the model folder, shown in status (copied) */
    const char *model_arch; /* its architecture (copied) */
    int max_context;        /* positions per sequence (prompt + generated) */
    int prefill_rows;       /* rows per forward step */
    int micro_batches;      /* 1 or 2: steps split into micro-batches (forward.h) */
    int max_seqs;
    int queue_limit;
    size_t kv_memory;
    const tokenizer_t *tokenizer; /* NULL: prompts come as ids only, no text out */
    int n_eos;
    int32_t eos[SAMPLER_MAX_EOS];
    int default_deadline_ms;
    int max_tokens_limit;         /* max_tokens above it are refused; 0: none */
    int max_requests_per_client;  /* queued + running per client; 0: none */
} server_config_t;

/* A GENERATE as a front end hands it over: ids in gen, or text (tokenized
 * here with the model's tokenizer; add_special: the tokenizer's template,
 * as Hugging Face does by default; off for a rendered chat, whose template
 * wrote the special tokens itself). */
typedef struct server_request {
    sched_request_t gen;
    const char *text;       /* NULL: gen.prompt holds the ids */
    size_t text_len;
    bool add_special;
} server_request_t;

/* Outcomes counted per request (the "outcome" label of moe_requests_total). */
typedef enum server_outcome {
    SERVER_OUT_STOP = 0,    /* finished: EOS, a stop id or a stop string */
    SERVER_OUT_LENGTH,      /* finished: max_tokens */
    SERVER_OUT_INVALID,
    SERVER_OUT_BUSY,
    SERVER_OUT_UNAVAILABLE,
    SERVER_OUT_INTERNAL,
    SERVER_OUT_CANCELLED,   /* cancelled, or its client went away */
    SERVER_OUT_DEADLINE,
    SERVER_OUTCOMES,
} server_outcome_t;

const char *server_outcome_name(server_outcome_t outcome); /* "stop", "length", ... */

typedef struct server_node_status {
    int node_id;
    const char *endpoint;
    bool up;
    int n_hosted;
    const int32_t *hosted_layer;
    const int32_t *hosted_expert;
    uint64_t batches;
    double rtt_last_ms;
    double rtt_mean_ms;
    const char *last_error;
    const char *weights;     /* what the node holds its weights as ("" unknown) */
    int coordinators;        /* coordinators the node serves (this one too); 0 unknown */
    uint64_t bytes_sent;
    uint64_t bytes_received;
    uint64_t failovers;
    double load;             /* rows per second its experts take under the placement,
                                each expert's measured load split over its copies */
    double busy_ratio;       /* seconds computing per second, moving average */
    double busy_seconds;     /* seconds computing since the start */
} server_node_status_t;

/* The one status: STATUS (rpc), /metrics and /health (http) render it. Its
 * pointers are the server's, valid until the next server call. */
typedef struct server_status {
    const char *model;
    const char *model_arch;
    const char *weights;            /* what the coordinator holds them as, and their size */
    const char *wire;               /* the rows' format to the nodes (--wire): "f32" ... */
    int n_nodes;
    const server_node_status_t *nodes;
    int n_layers;
    int n_experts;
    const uint64_t *expert_tokens;  /* (n_layers * n_experts) rows routed */
    const double *expert_load;      /* (n_layers * n_experts) rows per second routed,
                                       moving average (coordinator/load.h) */
    double load_half_life_s;        /* of that average */
    uint64_t requests_served;
    /* the time split (docs/OPERATIONS.md) */
    uint64_t rows_forwarded;
    uint64_t dispatch_calls;
    uint64_t dispatch_rows;         /* batch rows over the MoE layers dispatched */
    uint64_t bytes_sent;
    uint64_t bytes_received;
    uint64_t failovers;
    double seconds_forward;
    double seconds_dispatch;
    double seconds_node_compute;
    double seconds_overlap;
    /* the scheduler now */
    int sequences_running;
    int requests_queued;
    uint64_t kv_bytes;
    uint64_t kv_budget;
    int max_seqs;
    int queue_limit;
    /* requests */
    uint64_t outcomes[SERVER_OUTCOMES];
    uint64_t prompt_tokens;
    uint64_t generated_tokens;
    /* health: every routed expert has a live replica */
    bool healthy;
    const char *health_reason;      /* "" when healthy */
} server_status_t;

/* A front end: what the loop polls and whom it calls. */
typedef struct server_frontend {
    void *ctx;
    void *socket;   /* a ZeroMQ socket to poll, or NULL and fd */
    int fd;         /* -1 with a socket */
    /* Input is waiting: take it (a bounded amount). */
    void (*handle)(void *ctx);
    /* An event of one of this front end's clients: 0, or -1 when the client
     * has gone, 1 when it needs no more (a stop string matched): the server
     * then frees its request (sched_drop). */
    int (*deliver)(void *ctx, const sched_event_t *ev);
    /* Called once per loop turn (NULL: none), e.g. for rate-limited logs. */
    void (*tick)(void *ctx);
} server_frontend_t;

typedef struct server server_t;

/* Everything borrowed must outlive the server. NULL with errno/err. */
server_t *server_new(const weights_t *w, dispatch_t *dispatch, peer_t **peers,
                     const server_node_info_t *nodes, int n_peers,
                     const server_config_t *conf, err_t *err);
void server_destroy(server_t **self_p);

/* Adds a front end (copied); returns its index (its clients' front), or -1
 * when there are SERVER_MAX_FRONTENDS. */
int server_add_frontend(server_t *self, const server_frontend_t *fe);

/* Checks and queues a GENERATE: limits, tokenization, prompt ids against the
 * vocabulary, prompt + max_tokens against the context, then sched_submit.
 * -1 with *code and err (the request is counted by its outcome). */
int server_submit(server_t *self, const sched_client_t *client, const server_request_t *req,
                  sched_error_t *code, err_t *err);
int server_cancel(server_t *self, const sched_client_t *client, uint64_t request_id);
/* The client has gone: its request is freed at once (counted as cancelled). */
int server_drop(server_t *self, const sched_client_t *client, uint64_t request_id);

/* Runs prompt (n ids) from an empty cache and returns every position's
 * logits in *out (mem_alloc'd, n x vocab). -1 with *code and err. */
int server_logits(server_t *self, const int32_t *prompt, int n, float **out,
                  sched_error_t *code, err_t *err);

/* Tokenizes text (NULL without a tokenizer: ENOTSUP); *ids mem_alloc'd. */
int server_tokenize(server_t *self, const char *text, size_t len, bool add_special,
                    int32_t **ids, size_t *n, err_t *err);

/* Fills the status (links checked first). */
void server_status(server_t *self, server_status_t *out);

/* The Prometheus text format of the server's metrics (docs/HTTP.md):
 * *out mem_alloc'd, NUL-terminated. -1 with ENOMEM. */
#define SERVER_METRICS_CONTENT_TYPE METRICS_TEXT_CONTENT_TYPE
int server_metrics_text(server_t *self, char **out, size_t *len);
/* The same as JSON (STATUS), NULL when out of memory; caller json_decref's. */
json_t *server_metrics_json(server_t *self);

/* The live placement (mover.h; borrowed, outliving the server): the loop
 * ticks it between steps and the status shows its hosted lists. Without
 * one the placement is fixed (and REBALANCE is refused). */
void server_set_mover(server_t *self, mover_t *mover);

/* Starts a move to a placement planned from the measured load, with
 * `redundant` copies per layer, emptying node `drain_node` (0: none). -1
 * with errno/err: ENOTSUP (no mover), EBUSY, EINVAL (unknown node), ENOSPC
 * (the budgets cannot hold the plan), as mover_start. */
int server_rebalance(server_t *self, int redundant, int drain_node, err_t *err);

/* The outcome of the last move started by server_rebalance or
 * server_node_add, once it is over (mover_take_result). */
bool server_move_result(server_t *self, mover_result_t *out);

/* How the server gets the link to a node that joins (moe-client node add):
 * join makes and returns the peer of node node_id at endpoint (it becomes
 * peers[node_id - 1]; peer_expect_join, its health set), or NULL with
 * errno/err (EINVAL: a bad endpoint); leave destroys that peer again when
 * the node never came up. Both belong to the peers' owner (coordinator.c). */
typedef peer_t *(*server_join_fn)(void *ctx, int node_id, const char *endpoint, err_t *err);
typedef void (*server_leave_fn)(void *ctx, int node_id);
void server_set_joiner(server_t *self, server_join_fn join, server_leave_fn leave, void *ctx);

/* Starts adding the started, empty node at endpoint: it becomes node
 * n + 1, and once it answers (within the mover's timeout) a rebalance with
 * `redundant` copies gives it its share. The outcome comes through
 * server_move_result. -1 with errno/err: ENOTSUP (no joiner or mover),
 * EBUSY (a move or join runs), EEXIST (a node already has that endpoint),
 * ENOSPC (no room: --max-nodes), EINVAL (a bad endpoint). */
int server_node_add(server_t *self, const char *endpoint, int redundant, err_t *err);

/* Most nodes the cluster may have (those at start and those that join). */
int server_max_nodes(const server_t *self);

const weights_t *server_weights(const server_t *self);
const server_config_t *server_config(const server_t *self);

/* Serves until *stop becomes non-zero (checked at least every 100 ms): polls
 * the front ends, takes their input, runs a scheduler step, delivers the
 * events. 0, or -1 with errno/err when polling fails. */
int server_run(server_t *self, volatile sig_atomic_t *stop, err_t *err);

#endif /* MOE_COORDINATOR_SERVER_H */
