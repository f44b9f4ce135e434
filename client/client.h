/* client: a small blocking client of the coordinator's client RPC.
 *
 * A client_t owns one ZeroMQ context and one DEALER socket connected to the
 * coordinator's client endpoint (a ROUTER); requests and replies are those of
 * proto/client.proto, moved by proto/client_rpc.h. One client_t belongs to one
 * thread and runs one request at a time; every call returns only when the
 * request is answered, failed or timed out.
 *
 * Request ids increase per client from 1. A reply whose request_id is not the
 * pending request's (a late answer to a request that timed out or was
 * cancelled) is dropped without a word, also when it is malformed but its id
 * can be read; a malformed reply without a readable id, or with the pending
 * id, fails the request with EPROTO. An ERROR_REPLY with request_id 0 (the
 * coordinator could not read the request) fails the pending request.
 *
 * Every request is bounded by the timeout given to client_connect: the time
 * from sending it to its last reply (a stream too). When it runs out the call
 * fails with ETIMEDOUT and "no reply from tcp://... within 30 s" (or "...
 * did not finish the request within 30 s" once replies came). When every
 * connection attempt fails (nothing listens at the endpoint, or it cannot be
 * reached) for the first second of a request, the call fails then with
 * ECONNREFUSED, "nothing is listening at ...", instead of waiting it out.
 *
 * Endpoints are read by core/endpoint.h: "tcp://host:port", "host:port" or
 * "[ipv6]:port".
 *
 * Failures: every fallible call returns -1 (NULL for client_connect) with
 * errno set and one sentence in err (which may be NULL):
 *   EINVAL        bad arguments (the coordinator's own rejections too);
 *   ETIMEDOUT     not answered within the timeout, or DEADLINE_EXCEEDED;
 *   ECONNREFUSED  nothing listening at the endpoint (see above);
 *   ECONNRESET    the coordinator closed the connection while the request
 *                 waited (it stopped or restarted): the request is lost. The
 *                 client stays usable: ZeroMQ reconnects to the endpoint, so
 *                 a coordinator started again there serves the next request;
 *   EPROTO        a malformed or unexpected reply, or VERSION_MISMATCH;
 *   ENOMEM        out of memory;
 *   EINTR         a signal interrupted the wait;
 *   EACCES        the coordinator refused this client's CURVE key;
 *   EPROTO        also: the coordinator requires CURVE and this client has no
 *                 key, or the other way round (at once: the handshake names
 *                 the mechanisms);
 * and for an ERROR_REPLY from the coordinator, errno from its code (wire_client_error_errno):
 *   INVALID_ARGUMENT -> EINVAL, BUSY -> EBUSY, UNAVAILABLE -> EHOSTUNREACH,
 *   VERSION_MISMATCH -> EPROTO, DEADLINE_EXCEEDED -> ETIMEDOUT,
 *   CANCELLED -> ECANCELED, any other -> EIO (a code that client_rpc.h does not
 *   know is refused by wire_reply_recv, so it shows as EPROTO);
 * with err->msg = "<code name>: <coordinator's message>" (the code name of
 * wire_client_error_name). A failed call leaves no output behind; the client
 * stays usable after any failure.
 */
#ifndef MOE_CLIENT_CLIENT_H
#define MOE_CLIENT_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/err.h"

/* What a client accepts in a reply (the coordinator's model is unknown to
 * it): generous bounds that only keep a broken peer from exhausting memory.
 * The socket's ZMQ_MAXMSGSIZE follows from them (wire_socket_set_limit); a
 * larger reply is dropped by ZeroMQ and shows as ETIMEDOUT. */
enum {
    CLIENT_MAX_PROMPT = 1 << 20,      /* ids in one prompt */
    CLIENT_MAX_VOCAB = 1 << 20,       /* floats per logits row */
    CLIENT_MAX_LOGIT_ROWS = 1 << 16,  /* rows of one logits reply (also < 2^31 floats) */
};

typedef struct client client_t;

/* Connects to the coordinator's client endpoint (e.g. "tcp://host:5555" or
 * "host:5555"). Connecting does not wait for the coordinator: an endpoint
 * where nothing listens shows as ECONNREFUSED on the first request.
 * timeout_ms (> 0) bounds every later request (see above). Returns a client (destroy with
 * client_destroy) or NULL with errno/err: EINVAL for a bad endpoint or
 * timeout, ENOMEM, or the ZeroMQ error. */
client_t *client_connect(const char *endpoint, int timeout_ms, err_t *err);

/* client_connect over ZeroMQ CURVE (docs/DEPLOY.md, "Security"): the link is
 * encrypted, and this client proves itself with the key pair of key_file
 * (its NAME.key) to the coordinator whose public key is in server_file (the
 * coordinator's .pub). Fails as client_connect, and with the errors of
 * reading either file (security/keypair.h; the message names the file).
 * Later calls fail at once with EACCES, "the coordinator at ... refused this
 * client's key", when the coordinator does not allow the key; with EPROTO
 * when the coordinator does not use CURVE; a coordinator with another key
 * than server_file's shows as ETIMEDOUT, "the CURVE handshake did not
 * complete". */
client_t *client_connect_curve(const char *endpoint, int timeout_ms, const char *key_file,
                               const char *server_file, err_t *err);

/* The security mechanism of the client's socket: "CURVE" or "NULL" (static). */
const char *client_mechanism(const client_t *self);

/* Closes the socket and the context without waiting for unsent requests.
 * Accepts NULL and *self_p == NULL; sets *self_p to NULL. */
void client_destroy(client_t **self_p);

/* The endpoint given to client_connect (borrowed, lives as long as self). */
const char *client_endpoint(const client_t *self);

/* The id of the last GENERATE, LOGITS or STATUS request sent (0 before the
 * first): inside a client_chunk_fn, the running request. */
uint64_t client_last_request_id(const client_t *self);

/* One TOKENS reply of a generation, as it arrives. */
typedef struct client_chunk {
    uint64_t request_id;    /* the running request */
    const int32_t *tokens;  /* (n_tokens) new tokens, borrowed for the call */
    int n_tokens;           /* may be 0 (e.g. a final summary) */
    int n_total;            /* tokens received so far, these included */
    bool final;             /* the last reply of the request */
    const char *text;       /* the text these tokens complete (borrowed for the
                               call; "" when the model has no tokenizer) */
    size_t text_len;
    int prompt_tokens;      /* final only: prompt length the coordinator saw */
    int generated_tokens;   /* final only: tokens it generated */
    double seconds;         /* final only: the coordinator's time for it */
    const char *finish_reason; /* final only: "length", "stop", "eos" or "" */
} client_chunk_t;

/* Called once per TOKENS reply, in order, the final one last. Return 0 to go
 * on; anything else cancels the request: the client sends CANCEL for it and
 * client_generate fails with ECANCELED without waiting for more. It may call
 * client_cancel and client_last_request_id, but must not start another
 * request on the same client (that fails with EINVAL). */
typedef int client_chunk_fn(const client_chunk_t *chunk, void *arg);

/* Greedy continuation of prompt (n_prompt ids, n_prompt >= 1) by up to
 * max_tokens (>= 0) tokens: sends GENERATE and collects TOKENS replies until
 * the one with final = true. on_chunk (may be NULL) sees each reply as it
 * arrives, with arg. On success *tokens is a mem_alloc'd array of *n_tokens
 * ids (caller frees with mem_free; never NULL, even for 0 tokens).
 * More tokens than max_tokens, or any reply but TOKENS or ERROR_REPLY, is
 * EPROTO. When the wait times out the client also sends CANCEL for the
 * request (best effort), so that the coordinator stops working for nobody.
 * On failure *tokens is NULL and *n_tokens 0. */
int client_generate(client_t *self, const int32_t *prompt, int n_prompt, int max_tokens,
                    client_chunk_fn *on_chunk, void *arg, int32_t **tokens,
                    int *n_tokens, err_t *err);

enum { CLIENT_MAX_STOP_IDS = 16 };

/* How the coordinator picks each token; all zero is greedy decoding. */
typedef struct client_sampling {
    float temperature;            /* 0: greedy (argmax) */
    int top_k;                    /* 0: off */
    float top_p;                  /* 0 or 1: off */
    uint64_t seed;                /* the same seed gives the same tokens */
    int n_stop;                   /* <= CLIENT_MAX_STOP_IDS */
    int32_t stop_ids[CLIENT_MAX_STOP_IDS]; /* generation ends after any of these */
} client_sampling_t;

/* client_generate with sampling (NULL: greedy). The coordinator checks the
 * values; out-of-range ones come back as EINVAL. */
int client_generate_sampled(client_t *self, const int32_t *prompt, int n_prompt,
                            int max_tokens, const client_sampling_t *sampling,
                            client_chunk_fn *on_chunk, void *arg, int32_t **tokens,
                            int *n_tokens, err_t *err);

/* A generation request in full. */
typedef struct client_gen {
    const int32_t *prompt;        /* the prompt as ids (n_prompt of them), or */
    int n_prompt;
    const char *prompt_text;      /* as UTF-8 text, tokenized by the coordinator
                                     with the model's tokenizer (EINVAL from it
                                     when the model has none) */
    int max_tokens;               /* >= 0 */
    client_sampling_t sampling;   /* all zero: greedy */
    int deadline_ms;              /* 0: the coordinator's default; else the
                                     request fails with ETIMEDOUT once this
                                     long has passed since it was accepted */
    bool ignore_eos;              /* do not stop at the model's EOS ids */
} client_gen_t;

/* What a generation produced. client_result_fini frees it. */
typedef struct client_result {
    int32_t *tokens;              /* (n_tokens), mem_alloc'd, never NULL on success */
    int n_tokens;
    char *text;                   /* the generated text, NUL-terminated ("" when
                                     the model has no tokenizer), mem_alloc'd */
    size_t text_len;
    int prompt_tokens;            /* the prompt's length in tokens */
    double seconds;               /* the coordinator's time for the request */
    char finish_reason[16];       /* "length", "stop", "eos" */
} client_result_t;

/* The general form of client_generate: an ids or text prompt, sampling,
 * deadline, EOS handling; fills *res (zeroed on failure). Same streaming,
 * timeout and error rules as client_generate. */
int client_generate_full(client_t *self, const client_gen_t *gen, client_chunk_fn *on_chunk,
                         void *arg, client_result_t *res, err_t *err);

/* Frees what *res holds and zeroes it; accepts a zeroed result. */
void client_result_fini(client_result_t *res);

/* Logits of every prompt position: sends LOGITS and receives one reply with
 * rows = n_prompt. On success *logits is a mem_alloc'd (rows, vocab) array,
 * row-major (caller frees with mem_free), *rows = n_prompt and *vocab the
 * model's vocabulary size. A reply with another row count or outside the
 * CLIENT_MAX_* bounds is EPROTO. A timeout sends CANCEL as in
 * client_generate. On failure *logits is NULL and *rows, *vocab 0. */
int client_logits(client_t *self, const int32_t *prompt, int n_prompt, float **logits,
                  int *rows, int *vocab, err_t *err);

/* (layer, expert): one hosted expert. */
typedef struct client_expert {
    int32_t layer;
    int32_t expert;
} client_expert_t;

/* One expert node as the coordinator sees it. */
typedef struct client_node {
    int node_id;
    const char *endpoint;       /* its data-plane endpoint; "" when unknown */
    bool up;                    /* false: the coordinator declared it down */
    int n_hosted;
    const client_expert_t *hosted; /* (n_hosted) experts placed on it */
    uint64_t batches;           /* expert batches it answered */
    double rtt_last_ms;         /* round-trip time of its last batch, ms */
    double rtt_mean_ms;         /* mean round-trip time, ms */
    const char *last_error;     /* why it is down; "" when none */
    const char *weights;        /* what it holds its weights as, and their size;
                                   "" when not said */
    double load;                /* rows per second its experts take under the
                                   placement (expert_load split over copies) */
    double busy_ratio;          /* seconds computing per second, moving average */
    double busy_seconds;        /* seconds computing since the coordinator began */
    int coordinators;           /* coordinators the node serves, this one included;
                                   0 when not said */
} client_node_t;

/* The coordinator's view of the cluster. One allocation: every pointer
 * points inside it and lives until client_status_destroy. */
/* Where the coordinator's time went, summed since it started. Coordinator
 * compute = seconds_forward - seconds_dispatch + seconds_overlap; waiting for
 * the nodes = seconds_dispatch - seconds_overlap, of which network and
 * serialisation = that - seconds_node_compute. */
typedef struct client_timing {
    uint64_t tokens;             /* token rows through the forward pass */
    uint64_t dispatch_calls;     /* layer batches sent to the nodes */
    uint64_t dispatch_rows;      /* their rows, tokens x MoE layers: bytes_sent /
                                    dispatch_rows is the bytes per token per layer
                                    (0 from an older coordinator) */
    uint64_t bytes_sent;         /* every frame of expert requests */
    uint64_t bytes_received;     /* every frame of expert replies */
    double seconds_forward;      /* inside the forward pass */
    double seconds_dispatch;     /* with experts away: first send to last reply
                                    (two micro-batches away together count once) */
    double seconds_node_compute; /* per batch, the slowest node's compute */
    double seconds_overlap;      /* of seconds_dispatch, the coordinator's own work
                                    done meanwhile (shared experts, the other
                                    micro-batch) */
} client_timing_t;

typedef struct client_status {
    const char *model;          /* model folder; "" if none */
    const char *model_arch;     /* its architecture ("mixtral"); "" if none */
    const char *weights;        /* what the coordinator holds its weights as, and
                                   their size ("bf16 (q4_0 experts), 451.1 MiB");
                                   "" if not said */
    const char *wire;           /* the rows' format to the nodes and back ("f32",
                                   "bf16", "fp8"); "" if not said */
    int n_layers;
    int n_experts;              /* routed experts per layer */
    const uint64_t *expert_tokens; /* (n_layers, n_experts): tokens routed */
    const double *expert_load;  /* (n_layers, n_experts): rows routed per second,
                                   moving average (zeros from an older coordinator) */
    double load_half_life_s;    /* of that average; 0 when not said */
    uint64_t requests_served;
    int n_nodes;
    const client_node_t *nodes; /* (n_nodes) */
    client_timing_t timing;
    int sequences_running;      /* generating now */
    int requests_queued;        /* waiting for a slot */
    uint64_t kv_bytes;          /* KV cache they hold */
    const char *metrics;        /* the server's metrics as JSON text; "" if none */
} client_status_t;

/* Sends STATUS and returns the reply as a client_status_t (caller destroys
 * with client_status_destroy), or NULL with errno/err. */
client_status_t *client_status(client_t *self, err_t *err);

/* Accepts NULL and *self_p == NULL; sets *self_p to NULL. */
void client_status_destroy(client_status_t **self_p);

/* What a rebalance did (client_rebalance). */
typedef struct client_move {
    char summary[512];          /* in words: what moved, or that nothing had to */
    double imbalance_before;    /* heaviest node's load / mean, before and after */
    double imbalance_after;
    int copies_loaded;          /* expert copies the nodes loaded, and dropped */
    int copies_dropped;
} client_move_t;

/* Asks the coordinator to plan a placement from the measured load with
 * `redundant` copies per layer and to move to it while it serves; with
 * drain_node >= 1, node drain_node gets no expert (moe-client node drain).
 * Waits for the move to end (bounded by the client's timeout). 0 with *out
 * filled, or -1 with errno/err: EINVAL (a plan that does not fit the nodes'
 * memory budgets, an unknown node: the coordinator's message), EBUSY
 * (another move runs), EHOSTUNREACH (the move failed: a node died or
 * refused; the old placement serves on), ETIMEDOUT. */
int client_rebalance(client_t *self, int redundant, int drain_node, client_move_t *out,
                     err_t *err);

/* Asks the coordinator to take the started, empty node at endpoint into
 * the cluster (moe-client node add): once it answers, a rebalance with
 * `redundant` copies gives it its share. Waits for that (bounded by the
 * client's timeout). 0 with *out filled, or -1 with errno/err: EINVAL (a
 * bad endpoint, one already in the cluster, no room), EBUSY, EHOSTUNREACH
 * (the node did not answer in time: it is not part of the cluster), and as
 * client_rebalance. */
int client_node_add(client_t *self, const char *endpoint, int redundant, client_move_t *out,
                    err_t *err);

/* Asks the coordinator to cancel request_id of this client (e.g. from inside
 * a client_chunk_fn, with client_last_request_id). Sends CANCEL under a new
 * request id and returns once it is queued, without waiting for an answer:
 * the cancelled request then ends with ECANCELED when the coordinator
 * replies CANCELLED. 0, or -1 with errno/err. */
int client_cancel(client_t *self, uint64_t request_id, err_t *err);

#endif /* MOE_CLIENT_CLIENT_H */
