/* wire: frame I/O for the two protocols of proto/ (docs/PROTOCOL.md).
 *
 * A message on the wire is multipart: [identity] header [tensor], where the
 * identity frame exists on ROUTER sockets only, the header is a protobuf
 * message of one protocol, and the tensor (where the type has one) is raw
 * little-endian float32, rows x width, row-major (a data-plane tensor may
 * travel in bf16 or fp8 instead: proto/wire_tensor.h). This module moves such
 * messages and owns what every receiver and sender shares: the limits a
 * receiver accepts, the inbox that received messages point into, the outbox
 * a sender converts through, the routing identity of a peer.
 *
 * The protocols themselves are two modules on top of this one:
 *   proto/data_plane.h  coordinator <-> expert nodes (wire_data_*)
 *   proto/client_rpc.h  clients <-> coordinator (wire_request_*, wire_reply_*)
 * Only these three files call protobuf-c (generated code is never edited).
 * WIRE_PROTOCOL_VERSION changes with any incompatible change to either.
 *
 * Receiving checks everything before a caller sees it: the version, the frame
 * count, the header's sizes against the tensor frame and against the limits
 * the receiver gives, every assignment and id. A bad message is consumed whole
 * and reported as EPROTO with an error code that the caller relays to the
 * sender in an error reply; nothing crashes and nothing of a bad message
 * reaches the math.
 *
 * Memory: an inbox and an outbox are sized once from the limits; receiving
 * and sending a message within them allocates nothing. Received messages
 * point into the inbox, which is reused from message to message: pointers stay
 * valid until the next receive on the same inbox. One inbox and one outbox
 * belong to one thread.
 */
#ifndef MOE_PROTO_WIRE_H
#define MOE_PROTO_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

struct config; /* model/config.h */

enum { WIRE_PROTOCOL_VERSION = 1 };
enum { WIRE_MAX_HEADER_BYTES = 1 << 20 };  /* a header frame larger than this is refused */
enum { WIRE_MAX_IDENTITY = 255 };          /* ZeroMQ routing ids are at most 255 bytes */
enum { WIRE_MAX_TEXT = 1024 };             /* model ids, error messages, endpoints */
enum { WIRE_MAX_USER = 40 };               /* a ZAP User-Id: a Z85 CURVE public key */
enum { WIRE_MAX_ADDRESS = 63 };            /* an IPv6 address as text, with room */
/* Bytes of prompt text a request may carry per prompt token allowed
 * (max_prompt), and at least WIRE_MIN_PROMPT_TEXT: generous, since one token
 * can spell a long run of spaces; the token count is checked after
 * tokenizing. */
enum { WIRE_PROMPT_TEXT_PER_TOKEN = 32, WIRE_MIN_PROMPT_TEXT = 64 << 10 };

/* ---- limits ------------------------------------------------------------------- */

/* What a receiver accepts, and what an inbox or outbox is sized for; a field
 * <= 0 is not checked (a client does not know the model). */
typedef struct wire_limits {
    int hidden;         /* floats per data-plane tensor row */
    int max_rows;       /* rows per data-plane message */
    int max_assign;     /* assignments per EXPERT_REQUEST */
    int n_layers;       /* layer ids are < n_layers */
    int n_experts;      /* expert ids are < n_experts */
    int max_prompt;     /* prompt ids per client request */
    int vocab;          /* floats per logits row in a client reply */
    int max_logit_rows; /* rows of logits in a client reply */
} wire_limits_t;

/* The data-plane limits of a model served max_rows rows per batch: the
 * model's hidden size, layers and experts, and max_rows x top_k assignments
 * (cfg->n_experts_per_tok). Every coordinator and expert-node set-up builds
 * its limits here, so both ends of a link agree. */
wire_limits_t wire_limits_for_model(const struct config *cfg, int max_rows);

/* Largest message (all frames) the limits allow, or -1 when they bound none;
 * give it to wire_socket_set_limit so ZeroMQ drops larger ones unread. */
int64_t wire_max_message_bytes(const wire_limits_t *lim);

/* Sets ZMQ_MAXMSGSIZE from the limits; 0 or -1 with errno/err. */
int wire_socket_set_limit(void *socket, const wire_limits_t *lim, err_t *err);

/* ---- peers and frames ------------------------------------------------------------ */

/* A ROUTER socket's routing identity of a peer, and who it is. */
typedef struct wire_peer {
    size_t len;
    uint8_t id[WIRE_MAX_IDENTITY];
    char user[WIRE_MAX_USER + 1]; /* the ZAP handler's User-Id for the connection
                                     (security/zap.h: the client's public key
                                     under CURVE); "" when none */
    char address[WIRE_MAX_ADDRESS + 1]; /* the connection's remote IP address
                                           (ZeroMQ's Peer-Address), for logs;
                                           "" when unknown (ipc, inproc) */
} wire_peer_t;

/* One frame of a message held in memory (the wire_*_decode functions). */
typedef struct wire_frame {
    const void *data;  /* (size) bytes */
    size_t size;
} wire_frame_t;

/* ---- inbox: where received messages live --------------------------------------- */

typedef struct wire_inbox wire_inbox_t;

/* Buffers sized from lim (NULL: no limits, everything grows on demand, as a
 * client needs) so that receiving any message within lim allocates nothing.
 * NULL with errno/err: EINVAL for absurd limits, ENOMEM. */
wire_inbox_t *wire_inbox_new(const wire_limits_t *lim, err_t *err);
void wire_inbox_destroy(wire_inbox_t **self_p);

/* Bytes of every frame (identity included) of the last message received. */
size_t wire_inbox_message_bytes(const wire_inbox_t *self);

/* ---- outbox: what a sender converts through --------------------------------------- */

typedef struct wire_outbox wire_outbox_t;

/* Buffers sized from lim so that sending any message within lim allocates
 * nothing (an EXPERT_REQUEST's assignments are converted to the wire's
 * column layout here). Senders that pass no outbox convert on the stack, and
 * beyond that allocate per message. NULL with errno/err (ENOMEM). */
wire_outbox_t *wire_outbox_new(const wire_limits_t *lim, err_t *err);
void wire_outbox_destroy(wire_outbox_t **self_p);

#endif /* MOE_PROTO_WIRE_H */
