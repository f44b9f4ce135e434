/* wire: the two protocols of proto/ as C structs, moved over ZeroMQ.
 *
 * The only module that calls protobuf-c (generated code is never edited). A
 * message on the wire is multipart: [identity] header [tensor], where the
 * identity frame exists on ROUTER sockets only, the header is the protobuf
 * Header/Request/Reply, and the tensor (where the type has one) is raw
 * little-endian float32, rows x width, row-major. docs/PROTOCOL.md is the
 * specification; WIRE_PROTOCOL_VERSION changes with any incompatible change.
 *
 * Receiving checks everything before a caller sees it: the version, the frame
 * count, the header's sizes against the tensor frame and against the limits
 * the receiver gives (model shape, batch limits), every assignment and id.
 * A bad message is consumed whole and reported as EPROTO with an error code
 * that the caller relays to the sender in an error reply; nothing crashes and
 * nothing of a bad message reaches the math.
 *
 * Received messages point into a wire_inbox_t, which owns every buffer and is
 * reused from message to message: pointers stay valid until the next receive
 * on the same inbox. One inbox belongs to one thread.
 */
#ifndef MOE_PROTO_WIRE_H
#define MOE_PROTO_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/assign.h"
#include "core/err.h"

enum { WIRE_PROTOCOL_VERSION = 1 };
enum { WIRE_MAX_HEADER_BYTES = 1 << 20 };  /* a header frame larger than this is refused */
enum { WIRE_MAX_IDENTITY = 255 };          /* ZeroMQ routing ids are at most 255 bytes */
enum { WIRE_MAX_TEXT = 1024 };             /* model ids, error messages, endpoints */
/* Bytes of prompt text a request may carry per prompt token allowed
 * (max_prompt), and at least WIRE_MIN_PROMPT_TEXT: generous, since one token
 * can spell a long run of spaces; the token count is checked after
 * tokenizing. */
enum { WIRE_PROMPT_TEXT_PER_TOKEN = 32, WIRE_MIN_PROMPT_TEXT = 64 << 10 };

/* What a receiver accepts; a field <= 0 is not checked (a client does not
 * know the model). */
typedef struct wire_limits {
    int hidden;       /* floats per data-plane tensor row */
    int max_rows;     /* rows per data-plane message */
    int max_assign;   /* assignments per EXPERT_REQUEST */
    int n_layers;     /* layer ids are < n_layers */
    int n_experts;    /* expert ids are < n_experts */
    int max_prompt;   /* prompt ids per client request */
    int vocab;        /* floats per logits row in a client reply */
    int max_logit_rows; /* rows of logits in a client reply */
} wire_limits_t;

/* Largest message (all frames) the limits allow; give it to
 * wire_socket_set_limit so ZeroMQ drops larger ones before they are read. */
int64_t wire_max_message_bytes(const wire_limits_t *lim);

/* Sets ZMQ_MAXMSGSIZE from the limits; 0 or -1 with errno/err. */
int wire_socket_set_limit(void *socket, const wire_limits_t *lim, err_t *err);

enum { WIRE_MAX_USER = 40 };              /* a ZAP User-Id: a Z85 CURVE public key */

/* A ROUTER socket's routing identity of a peer, and who it is. */
typedef struct wire_peer {
    size_t len;
    uint8_t id[WIRE_MAX_IDENTITY];
    char user[WIRE_MAX_USER + 1]; /* the ZAP handler's User-Id for the connection
                                     (security/zap.h: the client's public key
                                     under CURVE); "" when none */
} wire_peer_t;

typedef struct wire_inbox wire_inbox_t;

/* Buffers sized from lim for messages within it. NULL with errno/err. */
wire_inbox_t *wire_inbox_new(const wire_limits_t *lim, err_t *err);
void wire_inbox_destroy(wire_inbox_t **self_p);

/* Bytes of every frame (identity included) of the last message received. */
size_t wire_inbox_message_bytes(const wire_inbox_t *self);

/* ===== data plane: coordinator <-> expert nodes ============================== */

typedef enum wire_data_type {
    WIRE_HELLO = 1,           /* coordinator -> node */
    WIRE_HELLO_REPLY = 2,     /* node -> coordinator: node_id, model_id, hosted */
    WIRE_EXPERT_REQUEST = 3,  /* rows + assignments */
    WIRE_EXPERT_REPLY = 4,    /* rows (partial sums), compute_seconds */
    WIRE_HEARTBEAT = 5,
    WIRE_HEARTBEAT_REPLY = 6,
    WIRE_SHUTDOWN = 7,
    WIRE_ERROR = 8,           /* error_code, error_message */
} wire_data_type_t;

typedef enum wire_data_error {
    WIRE_DATA_OK = 0,
    WIRE_DATA_ERR_VERSION = 1,
    WIRE_DATA_ERR_MALFORMED = 2,
    WIRE_DATA_ERR_SHAPE = 3,
    WIRE_DATA_ERR_UNKNOWN_EXPERT = 4,
    WIRE_DATA_ERR_TOO_LARGE = 5,
    WIRE_DATA_ERR_INTERNAL = 6,
    WIRE_DATA_ERR_UNEXPECTED = 7,
} wire_data_error_t;

typedef struct wire_data {
    wire_data_type_t type;
    uint64_t request_id;
    int layer;                    /* EXPERT_REQUEST, EXPERT_REPLY */
    int n_rows;                   /* rows of the tensor frame (0: none) */
    int hidden;                   /* floats per row */
    const float *rows;            /* (n_rows, hidden) */
    int n_assign;                 /* EXPERT_REQUEST */
    const moe_assign_t *assign;   /* (n_assign), rows index into `rows` */
    int node_id;                  /* HELLO_REPLY */
    const char *model_id;         /* HELLO_REPLY; NULL or "" when absent */
    int n_hosted;                 /* HELLO_REPLY */
    const int32_t *hosted_layer;  /* (n_hosted) */
    const int32_t *hosted_expert; /* (n_hosted) */
    wire_data_error_t error_code; /* ERROR */
    const char *error_message;    /* ERROR */
    double compute_seconds;       /* EXPERT_REPLY */
} wire_data_t;

/* Receives one data-plane message from socket without blocking beyond the
 * socket's ZMQ_RCVTIMEO (poll first). with_identity: socket is a ROUTER and
 * the sender's identity is stored in *from.
 * Returns 0 with *msg filled, or -1 with errno:
 *   EAGAIN  nothing arrived in time;
 *   EPROTO  the message was invalid: *code says why, msg->request_id holds
 *           its id when the header could be read (else 0), *from the sender;
 *   other   the socket failed (ETERM when the context closes, EINTR).
 * The whole multipart message is consumed either way. */
int wire_data_recv(wire_inbox_t *inbox, void *socket, bool with_identity,
                   wire_peer_t *from, wire_data_t *msg, wire_data_error_t *code,
                   err_t *err);

/* Sends msg (to: the ROUTER identity to address, or NULL). Fields the type
 * does not use are ignored. 0, or -1 with errno/err. */
int wire_data_send(void *socket, const wire_peer_t *to, const wire_data_t *msg,
                   err_t *err);

/* wire_data_send that also reports the bytes of every frame it sent. */
int wire_data_send_sized(void *socket, const wire_peer_t *to, const wire_data_t *msg,
                         size_t *sent_bytes, err_t *err);

/* Sends an ERROR echoing request_id. */
int wire_data_send_error(void *socket, const wire_peer_t *to, uint64_t request_id,
                         wire_data_error_t code, const char *message, err_t *err);

/* "version", "malformed", ... (static). */
const char *wire_data_error_name(wire_data_error_t code);

/* ===== client RPC: clients <-> coordinator ===================================== */

typedef enum wire_request_type {
    WIRE_REQ_GENERATE = 1,
    WIRE_REQ_LOGITS = 2,
    WIRE_REQ_STATUS = 3,
    WIRE_REQ_CANCEL = 4,
} wire_request_type_t;

typedef enum wire_reply_type {
    WIRE_REP_TOKENS = 1,
    WIRE_REP_LOGITS = 2,
    WIRE_REP_STATUS = 3,
    WIRE_REP_ERROR = 4,
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
} wire_node_status_t;

/* Where the coordinator's time went (STATUS), summed since it started.
 * Coordinator compute = seconds_forward - seconds_dispatch; network and
 * (de)serialisation = seconds_dispatch - seconds_node_compute. */
typedef struct wire_timing {
    uint64_t tokens;             /* token rows through the forward pass */
    uint64_t dispatch_calls;     /* layer batches sent to the nodes */
    uint64_t bytes_sent;         /* every frame of EXPERT_REQUESTs */
    uint64_t bytes_received;     /* every frame of EXPERT_REPLYs */
    double seconds_forward;      /* inside the forward pass */
    double seconds_dispatch;     /* first send to last reply, per batch */
    double seconds_node_compute; /* per batch, the slowest node's compute */
    double seconds_overlap;      /* coordinator FFN work while experts were away */
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
    const char *model;            /* STATUS */
    int n_nodes;
    const wire_node_status_t *nodes;
    int n_layers;
    int n_experts;
    const uint64_t *expert_tokens; /* (n_layers * n_experts) */
    uint64_t requests_served;
    wire_timing_t timing;
    int sequences_running;        /* STATUS: the scheduler now */
    int requests_queued;
    uint64_t kv_bytes;
} wire_reply_t;

/* Coordinator side: receives a request from the client ROUTER socket; same
 * contract as wire_data_recv (EPROTO + *code for a bad request). */
int wire_request_recv(wire_inbox_t *inbox, void *socket, wire_peer_t *from,
                      wire_request_t *req, wire_client_error_t *code, err_t *err);

/* Client side: sends a request on a DEALER socket. */
int wire_request_send(void *socket, const wire_request_t *req, err_t *err);

/* Client side: receives a reply from a DEALER socket (EPROTO for an invalid
 * reply, with text in err). */
int wire_reply_recv(wire_inbox_t *inbox, void *socket, wire_reply_t *rep, err_t *err);

/* Coordinator side: sends a reply to client `to`. */
int wire_reply_send(void *socket, const wire_peer_t *to, const wire_reply_t *rep,
                    err_t *err);
int wire_reply_send_error(void *socket, const wire_peer_t *to, uint64_t request_id,
                          wire_client_error_t code, const char *message, err_t *err);

const char *wire_client_error_name(wire_client_error_t code);

/* ===== decoding from memory ===================================================== */

/* One frame of a message held in memory. */
typedef struct wire_frame {
    const void *data;  /* (size) bytes */
    size_t size;
} wire_frame_t;

/* What wire_data_recv, wire_request_recv and wire_reply_recv do with a
 * message once its frames are off the socket, for the n_frames frames after
 * the identity given in memory (copied into the inbox; frames may be NULL when
 * n_frames is 0): the same checks and results, with no socket. For tests and
 * fuzzing (fuzz/); the receive functions decode through the same code. */
int wire_data_decode(wire_inbox_t *inbox, const wire_frame_t *frames, int n_frames,
                     wire_data_t *msg, wire_data_error_t *code, err_t *err);
int wire_request_decode(wire_inbox_t *inbox, const wire_frame_t *frames, int n_frames,
                        wire_request_t *req, wire_client_error_t *code, err_t *err);
int wire_reply_decode(wire_inbox_t *inbox, const wire_frame_t *frames, int n_frames,
                      wire_reply_t *rep, err_t *err);

#endif /* MOE_PROTO_WIRE_H */
