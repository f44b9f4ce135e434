/* wire_private: what the frame I/O module (wire.c) lends the two protocol
 * modules of proto/ (data_plane.c, client_rpc.c). Not for use outside proto/.
 *
 * A protocol describes itself to the frame layer as a wire_codec_t: which
 * protobuf message its header frame is, how big an unpacked header within
 * some limits can be, and a fill function that checks an unpacked header and
 * its frames and turns them into the protocol's C struct. wire_codec_recv and
 * wire_codec_decode are then the one receive path of every message type:
 * frames off the socket (or from memory), the header unpacked into the inbox
 * arena, framing, size and version refusals mapped to the protocol's error
 * codes, fill, and a cleared struct on failure.
 */
#ifndef MOE_PROTO_WIRE_PRIVATE_H
#define MOE_PROTO_WIRE_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "proto/wire.h"

/* Why the frame layer refused a message before the protocol saw it. */
typedef enum wire_refusal {
    WIRE_REFUSED_NONE,         /* it was not */
    WIRE_REFUSED_IDENTITY,     /* the identity frame is empty or too long */
    WIRE_REFUSED_NO_HEADER,    /* no header frame, or an empty one */
    WIRE_REFUSED_TOO_BIG,      /* the header frame is over WIRE_MAX_HEADER_BYTES */
    WIRE_REFUSED_UNDECODABLE,  /* protobuf-c refused it */
    WIRE_REFUSED_EXHAUSTED,    /* it needs more memory than the limits give */
    WIRE_REFUSED_VERSION,      /* another protocol version */
    WIRE_REFUSED_COUNT
} wire_refusal_t;

typedef struct wire_codec wire_codec_t;

/* Checks an unpacked header h (version already checked) and the message's
 * frames, filling msg; 0, or -1 with errno (EPROTO with *code and err for a
 * bad message; ENOMEM). */
typedef int wire_fill_fn(wire_inbox_t *inbox, const void *h, int n_frames, void *msg,
                         int *code, err_t *err);

struct wire_codec {
    const ProtobufCMessageDescriptor *desc; /* of the header frame */
    const char *what;         /* "header", "request", "reply": in error texts */
    size_t version_at;        /* offsetof field 1 (uint32 version) in the unpacked header */
    size_t id_at;             /* offsetof field 3 (uint64 request_id) in it */
    size_t msg_size;          /* sizeof the C struct filled */
    size_t msg_id_at;         /* offsetof its uint64_t request_id */
    int refused[WIRE_REFUSED_COUNT]; /* the protocol's error code for each refusal */
    /* Arena bytes to unpack any header within lim; *grows when lim does not
     * bound them (the arena then grows on demand). */
    size_t (*arena_bytes)(const wire_limits_t *lim, bool *grows);
    /* Inbox scratch (wire_inbox_scratch) a message within lim needs; may be NULL. */
    size_t (*scratch_bytes)(const wire_limits_t *lim);
    /* Outbox bytes (wire_outbox_scratch) sending within lim needs; may be NULL. */
    size_t (*send_bytes)(const wire_limits_t *lim);
    wire_fill_fn *fill;
};

extern const wire_codec_t wire_data_codec;    /* data_plane.c */
extern const wire_codec_t wire_request_codec; /* client_rpc.c */
extern const wire_codec_t wire_reply_codec;   /* client_rpc.c */

/* Receives one message of codec c from socket (with_identity: a ROUTER, the
 * sender's identity goes into *from). 0 with msg filled; -1 with errno:
 * EAGAIN nothing arrived, EPROTO a bad message (*code, err; the request id
 * still in msg when it could be read), other: the socket failed. *code is
 * untouched when nothing was received. */
int wire_codec_recv(const wire_codec_t *c, wire_inbox_t *inbox, void *socket,
                    bool with_identity, wire_peer_t *from, void *msg, int *code, err_t *err);

/* The same for a message whose frames after the identity are in memory. */
int wire_codec_decode(const wire_codec_t *c, wire_inbox_t *inbox, const wire_frame_t *frames,
                      int n_frames, void *msg, int *code, err_t *err);

/* Packs header m into a frame and sends [to] header [tensor]; *sent (may be
 * NULL) gets the bytes of every frame. 0, or -1 with errno/err. */
int wire_send(void *socket, const wire_peer_t *to, const ProtobufCMessage *m,
              const void *tensor, size_t tensor_bytes, size_t *sent, err_t *err);

/* The limits the inbox was made with. */
const wire_limits_t *wire_inbox_limits(const wire_inbox_t *self);

/* Points *out at the message's tensor frame as float32: in place when it is
 * aligned, else copied into the inbox (which grows, client side, when the
 * limits did not size it). -1 with ENOMEM. */
int wire_inbox_tensor(wire_inbox_t *self, const float **out, err_t *err);

/* The tensor frame's bytes as they arrived (any alignment). */
const void *wire_inbox_tensor_data(wire_inbox_t *self);

/* The inbox's float32 buffer with room for n floats (valid until the next
 * receive): where a frame of another format is decoded. It grows when the
 * limits did not size it; NULL with ENOMEM. */
float *wire_inbox_floats(wire_inbox_t *self, size_t n, err_t *err);

/* Bytes of the tensor frame (the frame after the header) of the last message. */
size_t wire_inbox_tensor_bytes(const wire_inbox_t *self);

/* At least bytes of inbox scratch, valid until the next receive; grows when
 * the limits did not size it. NULL with ENOMEM. */
void *wire_inbox_scratch(wire_inbox_t *self, size_t bytes, err_t *err);

/* The outbox's scratch when it has at least bytes, else NULL (self may be NULL). */
void *wire_outbox_scratch(wire_outbox_t *self, size_t bytes);

/* At least bytes (> 0) of scratch for one send: self's (may be NULL) when it
 * has them, else a fresh outbox's, made in *tmp for this message only (the
 * caller destroys *tmp, which starts NULL). NULL with ENOMEM. */
void *wire_outbox_borrow(wire_outbox_t *self, wire_outbox_t **tmp, size_t bytes, err_t *err);

/* Floats in a tensor of rows x width, or 0 when either is not bounded;
 * at most WIRE_MAX_TENSOR_FLOATS. */
uint64_t wire_tensor_floats(int rows, int width);
#define WIRE_MAX_TENSOR_FLOATS ((uint64_t)INT32_MAX) /* rows x width of one tensor frame */

/* Bytes of an n_rows x width float32 tensor a sender gives, or 0 when the
 * shape cannot travel. */
size_t wire_send_tensor_bytes(int n_rows, int width, const float *data);

/* Length of s when it fits a char[WIRE_MAX_TEXT] with its NUL, else -1. */
int wire_text_len(const char *s);

/* Text for an error field: s itself (NULL: ""), or its longest prefix that
 * fits WIRE_MAX_TEXT with its NUL and does not split a UTF-8 sequence, in buf. */
const char *wire_clip(const char *s, char buf[WIRE_MAX_TEXT]);

/* A count from the limits: v, or 0 when not given. */
static inline size_t wire_limit(int v)
{
    return v > 0 ? (size_t)v : 0;
}

/* Bytes protobuf-c may take to unpack n repeated elements of elem bytes each,
 * packed or not: the array and, when every element comes as its own field, a
 * scan record each in slabs that double in size (so at most twice that). */
size_t wire_repeated_bytes(size_t n, size_t elem);

enum { WIRE_ARENA_ALIGN = 16 };  /* alignof(max_align_t) on x86-64 and aarch64 */

/* Reports a bad message: *code = c, err, errno EPROTO; returns -1. */
int wire_bad(int *code, int c, err_t *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif /* MOE_PROTO_WIRE_PRIVATE_H */
