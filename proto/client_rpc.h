/* client_rpc: the protocol between clients and the coordinator.
 *
 * proto/client.proto and docs/PROTOCOL.md (section 5) define it: a client
 * sends a Request (GENERATE, LOGITS, STATUS, CANCEL) on a DEALER; the
 * coordinator answers on its ROUTER with Replies: TOKENS (streamed, the last
 * one final), LOGITS_DATA (a second frame of rows x vocab float32),
 * STATUS_DATA, or ERROR_REPLY with a wire_client_error_t. Frame I/O, limits
 * and inboxes are proto/wire.h's.
 *
 * Received structs point into the inbox they came through (valid until the
 * next receive on it). The coordinator's receive checks the version, the
 * frame count, the prompt (ids against the vocabulary, its length and text
 * against the limits) and the sampling fields, and gives the error code to
 * answer a bad request with. The client's receive checks every count, id,
 * text and time of a reply before the caller sees it.
 *
 * Errors cross the protocol as wire_client_error_t on the wire and as errno
 * in C: wire_client_error_of and wire_client_error_errno are the one
 * mapping, used by the coordinator, the client library and the tools.
 */
#ifndef MOE_PROTO_CLIENT_RPC_H
#define MOE_PROTO_CLIENT_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "proto/wire.h"

typedef enum wire_request_type {
    WIRE_REQ_GENERATE = 1,
    WIRE_REQ_LOGITS = 2,
    WIRE_REQ_STATUS = 3,
    WIRE_REQ_CANCEL = 4,
    WIRE_REQ_REBALANCE = 5,
    WIRE_REQ_NODE_DRAIN = 6,
    WIRE_REQ_NODE_ADD = 7,
} wire_request_type_t;

typedef enum wire_reply_type {
    WIRE_REP_TOKENS = 1,
    WIRE_REP_LOGITS = 2,
    WIRE_REP_STATUS = 3,
    WIRE_REP_ERROR = 4,
    WIRE_REP_REBALANCED = 5,
} wire_reply_type_t;

typedef enum wire_client_error {
    WIRE_CLIENT_OK = 0,
    WIRE_CLIENT_VERSION_MISMATCH = 1,
    WIRE_CLIENT_MALFORMED = 2,
    WIRE_CLIENT_INVALID_ARGUMENT = 3,
    WIRE_CLIENT_BUSY = 4,
    WIRE_CLIENT_UNAVAILABLE = 5,
    WIRE_CLIENT_INTERNAL = 6,
    WIRE_CLIENT_CANCELLED = 7,
    WIRE_CLIENT_DEADLINE_EXCEEDED = 8,
} wire_client_error_t;

enum { WIRE_MAX_STOP_IDS = 16 }; /* stop token ids per request */
enum { WIRE_MAX_METRICS = 256 << 10 }; /* bytes of STATUS metrics JSON */
enum { WIRE_MAX_REDUNDANT = 1 << 16 };  /* REBALANCE: redundant copies per layer */

typedef struct wire_request {
    wire_request_type_t type;
    uint64_t request_id;
    int n_prompt;
    const int32_t *prompt;        /* (n_prompt) */
    int max_tokens;
    uint64_t cancel_id;           /* CANCEL */
    float temperature;            /* GENERATE: 0 greedy; finite, >= 0 */
    int top_k;                    /* GENERATE: 0 off */
    float top_p;                  /* GENERATE: in [0, 1]; 0 and 1 are off */
    uint64_t seed;                /* GENERATE */
    int n_stop;                   /* GENERATE: <= WIRE_MAX_STOP_IDS */
    const int32_t *stop_ids;      /* (n_stop) */
    const char *prompt_text;      /* GENERATE: NULL, or UTF-8 text instead of ids
                                     (then n_prompt is 0) */
    size_t prompt_text_len;
    int deadline_ms;              /* GENERATE: 0 = the coordinator's default */
    bool ignore_eos;              /* GENERATE */
    int redundant;                /* REBALANCE, NODE_DRAIN: 0..WIRE_MAX_REDUNDANT */
    int node_id;                  /* NODE_DRAIN: >= 1 */
    const char *endpoint;         /* NODE_ADD: the node's endpoint (NUL-terminated) */
} wire_request_t;

typedef struct wire_node_status {
    int node_id;
    const char *endpoint;
    bool up;
    int n_hosted;
    const int32_t *hosted_layer;  /* (n_hosted) */
    const int32_t *hosted_expert; /* (n_hosted) */
    uint64_t batches;
    double rtt_last_ms;
    double rtt_mean_ms;
    const char *last_error;
    const char *weights;          /* what it holds its weights as; NULL or "" */
    double load;                  /* rows per second under the placement */
    double busy_ratio;            /* seconds computing per second (moving average) */
    double busy_seconds;          /* seconds computing in all */
    int coordinators;             /* coordinators the node serves; 0 unknown */
} wire_node_status_t;

/* Where the coordinator's time went (STATUS), summed since it started.
 * Coordinator compute = seconds_forward - seconds_dispatch + seconds_overlap;
 * waiting for the nodes = seconds_dispatch - seconds_overlap, of which
 * network and (de)serialisation = that - seconds_node_compute. */
typedef struct wire_timing {
    uint64_t tokens;             /* token rows through the forward pass */
    uint64_t dispatch_calls;     /* layer batches sent to the nodes */
    uint64_t dispatch_rows;      /* their rows: tokens x MoE layers (0: not said) */
    uint64_t bytes_sent;         /* every frame of EXPERT_REQUESTs */
    uint64_t bytes_received;     /* every frame of EXPERT_REPLYs */
    double seconds_forward;      /* inside the forward pass */
    double seconds_dispatch;     /* with experts away (micro-batches together once) */
    double seconds_node_compute; /* per batch, the slowest node's compute */
    double seconds_overlap;      /* coordinator work while experts were away */
} wire_timing_t;

typedef struct wire_reply {
    wire_reply_type_t type;
    uint64_t request_id;
    int n_tokens;                 /* TOKENS */
    const int32_t *tokens;
    bool final;
    int prompt_tokens;            /* TOKENS, final */
    int generated_tokens;
    double seconds;
    const char *text;             /* TOKENS: NULL or "" when none */
    size_t text_len;
    const char *finish_reason;    /* TOKENS, final: NULL or "length", "stop", "eos" */
    wire_client_error_t error_code;  /* ERROR */
    const char *error_message;
    int rows;                     /* LOGITS: frame 2 is (rows, vocab) */
    int vocab;
    const float *logits;
    const char *model;            /* STATUS: the model folder */
    const char *model_arch;       /* STATUS: its architecture ("mixtral") */
    const char *weights;          /* STATUS: what the weights are held as, their size */
    const char *wire;             /* STATUS: the rows' format to the nodes ("f32", "bf16",
                                     "fp8"); NULL or "" when not said */
    int n_nodes;
    const wire_node_status_t *nodes;
    int n_layers;
    int n_experts;
    const uint64_t *expert_tokens; /* (n_layers * n_experts) */
    const double *expert_load;    /* STATUS: (n_layers * n_experts) rows per second, or
                                     NULL when the coordinator did not say */
    double load_half_life_s;      /* STATUS: of expert_load */
    uint64_t requests_served;
    wire_timing_t timing;
    int sequences_running;        /* STATUS: the scheduler now */
    int requests_queued;
    uint64_t kv_bytes;
    const char *metrics;          /* STATUS: JSON text of the metrics; NULL or "" when none */
    const char *move_summary;     /* REBALANCED: what moved, in words */
    double imbalance_before;      /* REBALANCED */
    double imbalance_after;
    int copies_loaded;
    int copies_dropped;
} wire_reply_t;


/* Coordinator side: receives a request from the client ROUTER socket; the
 * contract of wire_data_recv (proto/data_plane.h): 0, or -1 with errno
 * EAGAIN, EPROTO (+ *code to answer with, req->request_id when readable),
 * ENOMEM or the socket's error. code may be NULL. */
int wire_request_recv(wire_inbox_t *inbox, void *socket, wire_peer_t *from,
                      wire_request_t *req, wire_client_error_t *code, err_t *err);

/* Client side: sends a request on a DEALER socket. 0, or -1 with errno/err
 * (EINVAL for a request that cannot travel). */
int wire_request_send(void *socket, const wire_request_t *req, err_t *err);

/* Client side: receives a reply from a DEALER socket; 0, or -1 with errno
 * EAGAIN, EPROTO for an invalid reply (text in err), ENOMEM, or the socket's
 * error. The inbox grows as replies need (up to 64 MiB of header). */
int wire_reply_recv(wire_inbox_t *inbox, void *socket, wire_reply_t *rep, err_t *err);

/* Coordinator side: sends a reply to client `to`. Texts longer than the wire
 * allows are clipped. 0, or -1 with errno/err (EINVAL: cannot travel;
 * EHOSTUNREACH: the client is gone). */
int wire_reply_send(void *socket, const wire_peer_t *to, const wire_reply_t *rep,
                    err_t *err);

/* Sends a final ERROR_REPLY echoing request_id. */
int wire_reply_send_error(void *socket, const wire_peer_t *to, uint64_t request_id,
                          wire_client_error_t code, const char *message, err_t *err);

/* What wire_request_recv and wire_reply_recv do once the frames are off the
 * socket, for frames in memory (see wire_data_decode). For tests and fuzz/. */
int wire_request_decode(wire_inbox_t *inbox, const wire_frame_t *frames, int n_frames,
                        wire_request_t *req, wire_client_error_t *code, err_t *err);
int wire_reply_decode(wire_inbox_t *inbox, const wire_frame_t *frames, int n_frames,
                      wire_reply_t *rep, err_t *err);

/* "busy", "invalid_argument", ... (static); "unknown" out of range. */
const char *wire_client_error_name(wire_client_error_t code);

/* The code a client is told when serving its request failed with errno
 * errnum: a node lost, late or garbled (EHOSTUNREACH, ETIMEDOUT, EPROTO) is
 * UNAVAILABLE; a request the model cannot take (EINVAL, ENOSPC, E2BIG) is
 * INVALID_ARGUMENT; EINTR is CANCELLED; anything else (ENOMEM, ...) is
 * INTERNAL. */
wire_client_error_t wire_client_error_of(int errnum);

/* The errno a client library reports for a code received: INVALID_ARGUMENT
 * EINVAL, BUSY EBUSY, UNAVAILABLE EHOSTUNREACH, VERSION_MISMATCH EPROTO,
 * DEADLINE_EXCEEDED ETIMEDOUT, CANCELLED ECANCELED; anything else EIO. */
int wire_client_error_errno(wire_client_error_t code);

#endif /* MOE_PROTO_CLIENT_RPC_H */
