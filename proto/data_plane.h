/* data_plane: the protocol between the coordinator and the expert nodes.
 *
 * proto/dataplane.proto and docs/PROTOCOL.md (section 4) define it: a Header
 * frame and, for EXPERT_REQUEST and EXPERT_REPLY, a tensor frame of n_rows x
 * hidden values in a wire_tensor_format_t (float32 by default; bf16 or fp8 to
 * send fewer bytes): rows are float32 in memory either way, the format is
 * converted in sending and receiving. The coordinator sends HELLO, EXPERT_REQUEST, HEARTBEAT and
 * SHUTDOWN on a DEALER per node; a node answers on its ROUTER. Frame I/O,
 * limits, inboxes and outboxes are proto/wire.h's.
 *
 * A received wire_data_t points into the inbox it came through (valid until
 * the next receive on it). Receiving checks, before a caller sees anything:
 * the version; the frame count the type calls for; dtype, rows and hidden
 * against the tensor frame and the limits; layer and expert ids against the
 * model; every assignment's row, expert and weight (finite); hosted pairs,
 * texts and counts. A bad message yields EPROTO and the wire_data_error_t to
 * send back in an ERROR.
 */
#ifndef MOE_PROTO_DATA_PLANE_H
#define MOE_PROTO_DATA_PLANE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/assign.h"
#include "core/err.h"
#include "proto/wire.h"
#include "proto/wire_tensor.h"

typedef enum wire_data_type {
    WIRE_HELLO = 1,           /* coordinator -> node */
    WIRE_HELLO_REPLY = 2,     /* node -> coordinator: node_id, model_id, hosted */
    WIRE_EXPERT_REQUEST = 3,  /* rows + assignments */
    WIRE_EXPERT_REPLY = 4,    /* rows (partial sums), compute_seconds */
    WIRE_HEARTBEAT = 5,
    WIRE_HEARTBEAT_REPLY = 6,
    WIRE_SHUTDOWN = 7,
    WIRE_ERROR = 8,           /* error_code, error_message */
    WIRE_PLACE = 9,           /* coordinator -> node: load these pairs too (hosted_*) */
    WIRE_DROP = 10,           /* coordinator -> node: release these pairs (hosted_*) */
    WIRE_PLACE_REPLY = 11,    /* node -> coordinator: every pair it hosts now */
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
    WIRE_DATA_ERR_NO_ROOM = 8,   /* PLACE beyond the budget, or its loading failed */
    WIRE_DATA_ERR_BUSY = 9,      /* PLACE while another is loading */
} wire_data_error_t;

/* One data-plane message; a field its type does not use is 0/NULL. */
typedef struct wire_data {
    wire_data_type_t type;
    uint64_t request_id;
    int layer;                    /* EXPERT_REQUEST, EXPERT_REPLY */
    int n_rows;                   /* rows of the tensor frame (0: none) */
    int hidden;                   /* floats per row */
    const float *rows;            /* (n_rows, hidden), float32 whatever the format */
    wire_tensor_format_t dtype;   /* EXPERT_REQUEST, EXPERT_REPLY: the tensor frame's
                                     format on the wire (0: f32) */
    int n_assign;                 /* EXPERT_REQUEST */
    const moe_assign_t *assign;   /* (n_assign), rows index into `rows` */
    int node_id;                  /* HELLO_REPLY */
    const char *model_id;         /* HELLO_REPLY; NULL or "" when absent */
    const char *weights;          /* HELLO_REPLY: what the node's weights are held as;
                                     NULL or "" when absent */
    int n_hosted;                 /* HELLO_REPLY */
    const int32_t *hosted_layer;  /* (n_hosted) */
    const int32_t *hosted_expert; /* (n_hosted) */
    wire_data_error_t error_code; /* ERROR */
    const char *error_message;    /* ERROR */
    double compute_seconds;       /* EXPERT_REPLY */
    bool per_assignment;          /* EXPERT_REQUEST: one reply row per assignment */
    uint64_t memory_budget;       /* HELLO_REPLY, PLACE_REPLY: bytes for experts, 0 none */
    uint64_t expert_bytes;        /* HELLO_REPLY, PLACE_REPLY: bytes of one expert, 0
                                     unknown */
    int n_coordinators;           /* HELLO_REPLY, HEARTBEAT_REPLY, PLACE_REPLY: the
                                     coordinators the node serves now; 0 unknown */
} wire_data_t;

/* Receives one data-plane message from socket without blocking beyond the
 * socket's ZMQ_RCVTIMEO (poll first). with_identity: socket is a ROUTER and
 * the sender's identity is stored in *from (may be NULL). code may be NULL.
 * Returns 0 with *msg filled, or -1 with errno:
 *   EAGAIN  nothing arrived in time (*code untouched);
 *   EPROTO  the message was invalid: *code says why, msg->request_id holds
 *           its id when the header could be read (else 0), *from the sender;
 *   ENOMEM  an inbox without limits could not grow;
 *   other   the socket failed (ETERM when the context closes, EINTR).
 * The whole multipart message is consumed either way. */
int wire_data_recv(wire_inbox_t *inbox, void *socket, bool with_identity,
                   wire_peer_t *from, wire_data_t *msg, wire_data_error_t *code,
                   err_t *err);

/* What wire_data_recv does once the frames are off the socket, for the
 * n_frames frames after the identity given in memory (copied into the inbox;
 * frames may be NULL when n_frames is 0): the same checks and results. For
 * tests and fuzzing (fuzz/). */
int wire_data_decode(wire_inbox_t *inbox, const wire_frame_t *frames, int n_frames,
                     wire_data_t *msg, wire_data_error_t *code, err_t *err);

/* Sends msg (to: the ROUTER identity to address, or NULL on a DEALER). Fields
 * the type does not use are ignored. 0, or -1 with errno/err: EINVAL for a
 * message that cannot travel (negative ids, an assignment outside the rows, a
 * code out of range), EMSGSIZE, or the socket's error. Texts longer than the
 * wire allows are clipped. Without an outbox, an EXPERT_REQUEST of more than
 * 1,024 assignments allocates while it is sent. */
int wire_data_send(void *socket, const wire_peer_t *to, const wire_data_t *msg,
                   err_t *err);

/* wire_data_send through outbox (may be NULL): a message within the limits
 * the outbox was made for is sent without allocating (a bf16 or fp8 tensor
 * is encoded in it). *sent_bytes (may be
 * NULL) gets the bytes of every frame sent. */
int wire_data_send_sized(void *socket, wire_outbox_t *outbox, const wire_peer_t *to,
                         const wire_data_t *msg, size_t *sent_bytes, err_t *err);

/* Sends an ERROR echoing request_id. */
int wire_data_send_error(void *socket, const wire_peer_t *to, uint64_t request_id,
                         wire_data_error_t code, const char *message, err_t *err);

/* "version", "malformed", ... (static); "unknown" out of range. */
const char *wire_data_error_name(wire_data_error_t code);

#endif /* MOE_PROTO_DATA_PLANE_H */
