/* wire: see wire.h.
 *
 * A receive takes every frame of one multipart message off the socket before
 * it looks at any of them, so that a bad message never leaves frames behind
 * and the next receive starts on a message boundary. The header frame and the
 * first frame after it stay open in the inbox as zmq_msg_t: the tensor of a
 * good message is read in place when it is 4-byte aligned, else copied into
 * the inbox's aligned buffer. protobuf-c unpacks into the inbox arena, which
 * every receive resets, so a receive within the limits allocates nothing.
 *
 * Invariants: inbox->hdr and inbox->tensor are always initialised zmq_msg_t
 * (empty between messages); arena.used <= arena.cap; every pointer a receive
 * hands out points into the arena, a kept frame or an inbox buffer, and stays
 * valid until the next receive on that inbox that gets a message.
 */
#include "proto/wire.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <zmq.h>

#include "core/mem.h"
#include "proto/client.pb-c.h"
#include "proto/dataplane.pb-c.h"

/* Tensor frames carry the host's float32 bytes as they are. */
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the wire's tensors are little-endian float32: the host must be little-endian");
static_assert(sizeof(float) == 4, "the wire's tensors are IEEE-754 binary32");

enum { S_ARENA_ALIGN = 16 };          /* alignof(max_align_t) on x86-64 and aarch64 */
enum { S_SCAN_RECORD = 32 };          /* bytes of protobuf-c's scan record per field seen */
enum { S_ARENA_SLACK = 16 << 10 };    /* scalar fields, rounding, small unknown fields */
enum { S_REPLY_ARENA = 64 << 10 };    /* a client's first arena; it grows from there */
enum { S_MAX_ITEMS = 1 << 24 };       /* largest max_assign, max_prompt, layers x experts */
enum { S_MAX_STATUS_NODES = 1 << 16 };/* nodes in one STATUS_DATA */
enum { S_SEND_STACK_ASSIGN = 1024 };  /* assignments converted on the stack when sending */
#define S_ARENA_CEILING ((size_t)64 << 20) /* a growing (client-side) arena stops here */
#define S_MAX_TENSOR_FLOATS ((uint64_t)INT32_MAX) /* rows x width of one tensor frame */

/* ---- arena: protobuf-c's allocator during an unpack -------------------------- */

typedef struct s_arena {
    uint8_t *base;      /* cap bytes, MEM_ALIGN-aligned */
    size_t cap;         /* bytes */
    size_t used;        /* bytes handed out since the last reset */
    bool exhausted;     /* an allocation failed since the last reset */
} s_arena_t;

static void *s_arena_alloc(void *data, size_t size)
{
    s_arena_t *a = data;
    size_t need = (size + S_ARENA_ALIGN - 1) & ~(size_t)(S_ARENA_ALIGN - 1);
    if (need < size || need > a->cap - a->used) {
        a->exhausted = true;
        return NULL;
    }
    void *p = a->base + a->used;
    a->used += need;
    return p;
}

/* Everything goes at once when the arena is reset. */
static void s_arena_free(void *data, void *p)
{
    (void)data;
    (void)p;
}

/* ---- inbox --------------------------------------------------------------------------- */

struct wire_inbox {
    wire_limits_t lim;          /* what this receiver accepts */
    s_arena_t arena;            /* unpacked headers */
    ProtobufCAllocator alloc;   /* protobuf-c's view of arena */
    bool data_grows;            /* the limits do not bound a data-plane header */
    bool request_grows;         /* the limits do not bound a client request */
    zmq_msg_t hdr;              /* header frame of the last message */
    zmq_msg_t tensor;           /* the frame after the header, if any */
    float *copy;                /* misaligned tensor frames, copied; MEM_ALIGN */
    size_t copy_cap;            /* bytes of copy */
    moe_assign_t *assign;       /* (assign_cap) of the last EXPERT_REQUEST */
    size_t assign_cap;
    wire_node_status_t *nodes;  /* (nodes_cap) of the last STATUS_DATA */
    size_t nodes_cap;
    size_t message_bytes;       /* every frame of the last message received */
};

size_t wire_inbox_message_bytes(const wire_inbox_t *self)
{
    return self->message_bytes;
}

/* Bytes protobuf-c may take to unpack n repeated elements of elem bytes each,
 * packed or not: the array and, when every element comes as its own field, a
 * scan record each in slabs that double in size (so at most twice that). */
static size_t s_repeated_bytes(size_t n, size_t elem)
{
    return n * (elem + 2 * S_SCAN_RECORD);
}

static size_t s_limit(int v)
{
    return v > 0 ? (size_t)v : 0;
}

/* Floats in a tensor of rows x width, or 0 when either is not bounded. */
static uint64_t s_tensor_floats(int rows, int width)
{
    if (rows <= 0 || width <= 0)
        return 0;
    uint64_t n = (uint64_t)rows * (uint64_t)width;
    return n < S_MAX_TENSOR_FLOATS ? n : S_MAX_TENSOR_FLOATS;
}

/* Bytes of prompt text a request may carry under lim. */
static size_t s_prompt_text_limit(const wire_limits_t *lim)
{
    size_t n = (size_t)s_limit(lim->max_prompt) * WIRE_PROMPT_TEXT_PER_TOKEN;
    return n > WIRE_MIN_PROMPT_TEXT ? n : WIRE_MIN_PROMPT_TEXT;
}

wire_inbox_t *wire_inbox_new(const wire_limits_t *lim, err_t *err)
{
    static const wire_limits_t none = {0};
    if (!lim)
        lim = &none;
    size_t n_assign = s_limit(lim->max_assign);
    size_t n_prompt = s_limit(lim->max_prompt);
    size_t n_hosted = s_limit(lim->n_layers) * s_limit(lim->n_experts);
    if (n_assign > S_MAX_ITEMS || n_prompt > S_MAX_ITEMS || n_hosted > S_MAX_ITEMS) {
        err_set(err, EINVAL, "wire limits too large: max_assign %d, max_prompt %d, "
                "%d layers x %d experts (at most %d each)", lim->max_assign,
                lim->max_prompt, lim->n_layers, lim->n_experts, S_MAX_ITEMS);
        return NULL;
    }
    /* Every valid header within the limits unpacks inside the arena. */
    size_t data = sizeof(Moe__Data__Header) + s_repeated_bytes(3 * n_assign, 4) +
                  s_repeated_bytes(2 * n_hosted, 4) + 2 * (WIRE_MAX_TEXT + S_ARENA_ALIGN);
    size_t request = sizeof(Moe__Client__Request) + s_repeated_bytes(n_prompt, 4) +
                     s_prompt_text_limit(lim) + S_ARENA_ALIGN;
    size_t arena = data > request ? data : request;
    arena = (arena > S_REPLY_ARENA ? arena : S_REPLY_ARENA) + S_ARENA_SLACK;
    arena = (arena + MEM_ALIGN - 1) / MEM_ALIGN * MEM_ALIGN;
    size_t copy = (size_t)s_tensor_floats(lim->max_rows, lim->hidden) * sizeof(float);

    wire_inbox_t *self = mem_calloc(1, sizeof *self);
    if (!self)
        goto fail;
    self->lim = *lim;
    self->data_grows = n_assign == 0 || n_hosted == 0;
    self->request_grows = n_prompt == 0;
    zmq_msg_init(&self->hdr);
    zmq_msg_init(&self->tensor);
    self->arena.cap = arena;
    self->alloc = (ProtobufCAllocator){s_arena_alloc, s_arena_free, &self->arena};
    if (!(self->arena.base = mem_alloc_aligned(arena)))
        goto fail;
    if (copy) {
        if (!(self->copy = mem_alloc_aligned(copy)))
            goto fail;
        self->copy_cap = copy;
    }
    if (n_assign) {
        if (!(self->assign = mem_alloc(n_assign * sizeof *self->assign)))
            goto fail;
        self->assign_cap = n_assign;
    }
    return self;

fail:
    wire_inbox_destroy(&self);
    err_set(err, ENOMEM, "out of memory for a wire inbox (%zu-byte arena, %zu-byte "
            "tensor buffer, %zu assignments)", arena, copy, n_assign);
    return NULL;
}

void wire_inbox_destroy(wire_inbox_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    wire_inbox_t *self = *self_p;
    int saved = errno;
    zmq_msg_close(&self->hdr);
    zmq_msg_close(&self->tensor);
    mem_free(self->nodes);
    mem_free(self->assign);
    mem_free(self->copy);
    mem_free(self->arena.base);
    mem_free(self);
    *self_p = NULL;
    errno = saved;
}

/* Drops the previous message: its frames and everything unpacked from it. */
static void s_inbox_reset(wire_inbox_t *self)
{
    zmq_msg_close(&self->hdr);
    zmq_msg_init(&self->hdr);
    zmq_msg_close(&self->tensor);
    zmq_msg_init(&self->tensor);
    self->arena.used = 0;
    self->arena.exhausted = false;
}

/* Points *out at the tensor frame as float32: in place when it is aligned,
 * else in the inbox's copy, which grows (client side) when it is too small. */
static int s_tensor_view(wire_inbox_t *self, const float **out, err_t *err)
{
    const void *data = zmq_msg_data(&self->tensor);
    size_t bytes = zmq_msg_size(&self->tensor);
    if ((uintptr_t)data % _Alignof(float) == 0) {
        *out = data;
        return 0;
    }
    if (bytes > self->copy_cap) {
        float *bigger = mem_alloc_aligned(bytes);
        if (!bigger)
            return err_set(err, ENOMEM, "out of memory for a %zu-byte tensor copy", bytes);
        mem_free(self->copy);
        self->copy = bigger;
        self->copy_cap = bytes;
    }
    memcpy(self->copy, data, bytes);
    *out = self->copy;
    return 0;
}

/* ---- receiving frames ----------------------------------------------------------- */

/* Receives one whole multipart message: the identity into *from (ROUTER), the
 * header and the frame after it into the inbox, and drops any more frames.
 * *n_frames counts the frames after the identity; *bad_identity is set when
 * the identity frame cannot be a ZeroMQ routing id. -1 with errno when the
 * socket fails; nothing is consumed when nothing arrived (EAGAIN). */
static int s_recv_all(wire_inbox_t *self, void *socket, bool with_identity,
                      wire_peer_t *from, int *n_frames, bool *bad_identity, err_t *err)
{
    zmq_msg_t part;
    zmq_msg_init(&part);
    if (zmq_msg_recv(&part, socket, 0) < 0) {
        int e = errno;
        zmq_msg_close(&part);
        if (e == EAGAIN)
            return err_set(err, EAGAIN, "no message arrived in time");
        return err_set(err, e, "receiving a message: %s", zmq_strerror(e));
    }
    s_inbox_reset(self);
    *n_frames = 0;
    *bad_identity = false;
    if (from) {
        from->len = 0;
        from->user[0] = '\0';
    }
    bool identity = with_identity;
    self->message_bytes = 0;
    for (;;) {
        bool more = zmq_msg_more(&part);
        self->message_bytes += zmq_msg_size(&part);
        if (identity) {
            size_t len = zmq_msg_size(&part);
            identity = false;
            if (len == 0 || len > WIRE_MAX_IDENTITY)
                *bad_identity = true;
            else if (from) {
                memcpy(from->id, zmq_msg_data(&part), len);
                from->len = len;
            }
        } else {
            /* Set by ZeroMQ from the ZAP reply, never by the peer. Read from
             * the header: libzmq 4.3.4 leaves the identity frame of a ROUTER
             * without metadata after a poll. */
            const char *user = *n_frames == 0 && from && from->len
                                   ? zmq_msg_gets(&part, "User-Id") : NULL;
            if (user)
                snprintf(from->user, sizeof from->user, "%s", user);
            if (*n_frames == 0)
                zmq_msg_move(&self->hdr, &part);
            else if (*n_frames == 1)
                zmq_msg_move(&self->tensor, &part);
            (*n_frames)++;  /* later frames are counted and dropped */
        }
        if (!more)
            break;
        /* The rest of a multipart message has arrived with its first frame. */
        int rc;
        while ((rc = zmq_msg_recv(&part, socket, 0)) < 0 && errno == EINTR)
            ;
        if (rc < 0) {
            int e = errno;
            zmq_msg_close(&part);
            return err_set(err, e, "receiving the rest of a message: %s", zmq_strerror(e));
        }
    }
    zmq_msg_close(&part);
    return 0;
}

/* What s_recv_all does, for a message whose frames (after the identity) are
 * in memory: the header and the frame after it are copied into the inbox,
 * later frames only counted. -1 with errno ENOMEM. */
static int s_load(wire_inbox_t *self, const wire_frame_t *frames, int n_frames, err_t *err)
{
    s_inbox_reset(self);
    self->message_bytes = 0;
    for (int i = 0; i < n_frames; i++) {
        self->message_bytes += frames[i].size;
        if (i > 1)
            continue;
        zmq_msg_t *m = i == 0 ? &self->hdr : &self->tensor;
        zmq_msg_close(m);
        if (zmq_msg_init_size(m, frames[i].size) < 0) {
            zmq_msg_init(m);
            return err_set(err, ENOMEM, "out of memory for a %zu-byte frame", frames[i].size);
        }
        if (frames[i].size)
            memcpy(zmq_msg_data(m), frames[i].data, frames[i].size);
    }
    return 0;
}

/* ---- decoding headers ------------------------------------------------------------- */

/* Reads one varint at p[*i], advancing *i; false when it does not end in n. */
static bool s_varint(const uint8_t *p, size_t n, size_t *i, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && *i < n; shift += 7) {
        uint8_t b = p[(*i)++];
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

/* Fields 1 (version) and 3 (request_id) read by hand from protobuf wire
 * format, for a header protobuf-c refused or that is too large to unpack:
 * every header of both protocols, in every version, starts with them. False
 * when the bytes are not well-formed wire format. */
static bool s_scan_ids(const uint8_t *p, size_t n, uint64_t *version, uint64_t *request_id)
{
    *version = 0;
    *request_id = 0;
    size_t i = 0;
    while (i < n) {
        uint64_t key, v;
        if (!s_varint(p, n, &i, &key) || key >> 3 == 0)
            return false;
        switch (key & 7) {
        case 0:
            if (!s_varint(p, n, &i, &v))
                return false;
            if (key >> 3 == 1)
                *version = v;
            else if (key >> 3 == 3)
                *request_id = v;
            break;
        case 1:
            if (n - i < 8)
                return false;
            i += 8;
            break;
        case 2:
            if (!s_varint(p, n, &i, &v) || v > n - i)
                return false;
            i += (size_t)v;
            break;
        case 5:
            if (n - i < 4)
                return false;
            i += 4;
            break;
        default:
            return false;
        }
    }
    return true;
}

/* How far s_open got with a message. */
typedef enum s_open {
    S_OPEN_OK,           /* *out is the unpacked header */
    S_OPEN_IDENTITY,     /* the identity frame is empty or too long */
    S_OPEN_NO_HEADER,    /* no header frame, or an empty one */
    S_OPEN_TOO_BIG,      /* the header frame is over WIRE_MAX_HEADER_BYTES */
    S_OPEN_UNDECODABLE,  /* protobuf-c refused it */
    S_OPEN_EXHAUSTED,    /* it needs more memory than the limits give */
    S_OPEN_VERSION,      /* it did not decode, and it says another version */
    S_OPEN_NOMEM,        /* a growing arena could not grow (errno ENOMEM) */
} s_open_t;

/* Unpacks the header frame of the message just received with desc. When the
 * header cannot be unpacked, *request_id and *version are what s_scan_ids
 * could read of it (0 when nothing). grows: the arena may grow up to
 * S_ARENA_CEILING instead of refusing the header. */
static s_open_t s_open(wire_inbox_t *self, const ProtobufCMessageDescriptor *desc,
                       int n_frames, bool bad_identity, bool grows, void **out,
                       uint64_t *request_id, uint64_t *version)
{
    *out = NULL;
    *request_id = 0;
    *version = 0;
    if (bad_identity)
        return S_OPEN_IDENTITY;
    const uint8_t *p = zmq_msg_data(&self->hdr);
    size_t n = zmq_msg_size(&self->hdr);
    if (n_frames == 0 || n == 0)
        return S_OPEN_NO_HEADER;
    if (n > WIRE_MAX_HEADER_BYTES) {
        uint64_t ver, id;
        if (s_scan_ids(p, n, &ver, &id)) {
            *request_id = id;
            *version = ver;
            if (ver != WIRE_PROTOCOL_VERSION)
                return S_OPEN_VERSION;
        }
        return S_OPEN_TOO_BIG;
    }
    for (;;) {
        self->arena.used = 0;
        self->arena.exhausted = false;
        *out = protobuf_c_message_unpack(desc, &self->alloc, n, p);
        if (*out)
            return S_OPEN_OK;
        if (!self->arena.exhausted || !grows || self->arena.cap >= S_ARENA_CEILING)
            break;
        size_t cap = self->arena.cap * 2 < S_ARENA_CEILING ? self->arena.cap * 2
                                                           : S_ARENA_CEILING;
        uint8_t *bigger = mem_alloc_aligned(cap);
        if (!bigger)
            return S_OPEN_NOMEM;
        mem_free(self->arena.base);
        self->arena.base = bigger;
        self->arena.cap = cap;
    }
    uint64_t ver, id;
    bool scanned = s_scan_ids(p, n, &ver, &id);
    if (scanned && ver != WIRE_PROTOCOL_VERSION) {
        *request_id = id;
        *version = ver;
        return S_OPEN_VERSION;
    }
    if (self->arena.exhausted) {
        if (scanned)
            *request_id = id;
        return S_OPEN_EXHAUSTED;
    }
    return S_OPEN_UNDECODABLE;
}

/* Why s_open refused a message whose header frame is `what` ("header",
 * "request"), as one sentence into buf. Returns -1 for S_OPEN_NOMEM (a local
 * failure, not the sender's fault), else 0. */
static int s_open_why(const wire_inbox_t *self, s_open_t opened, const char *what,
                      uint64_t version, char *buf, size_t n)
{
    switch (opened) {
    case S_OPEN_IDENTITY:
        snprintf(buf, n, "the identity frame is empty or longer than %d bytes",
                 WIRE_MAX_IDENTITY);
        break;
    case S_OPEN_NO_HEADER:
        snprintf(buf, n, "the message has no %s frame", what);
        break;
    case S_OPEN_TOO_BIG:
        snprintf(buf, n, "the %s frame is over %d bytes", what, WIRE_MAX_HEADER_BYTES);
        break;
    case S_OPEN_UNDECODABLE:
        snprintf(buf, n, "the %s does not decode", what);
        break;
    case S_OPEN_EXHAUSTED:
        snprintf(buf, n, "the %s needs more than the %zu bytes the limits allow", what,
                 self->arena.cap);
        break;
    case S_OPEN_VERSION:
        snprintf(buf, n, "protocol version %llu, not %d", (unsigned long long)version,
                 WIRE_PROTOCOL_VERSION);
        break;
    case S_OPEN_NOMEM:
        snprintf(buf, n, "out of memory for a %s", what);
        return -1;
    case S_OPEN_OK:
        buf[0] = '\0';
        break;
    }
    return 0;
}

/* Length of s when it fits a char[WIRE_MAX_TEXT] with its NUL, else -1. */
static int s_text_len(const char *s)
{
    size_t n = strnlen(s, WIRE_MAX_TEXT);
    return n < WIRE_MAX_TEXT ? (int)n : -1;
}

/* ===== data plane ===================================================================== */

static const char *const s_data_names[] = {
    [WIRE_DATA_OK] = "ok",
    [WIRE_DATA_ERR_VERSION] = "version",
    [WIRE_DATA_ERR_MALFORMED] = "malformed",
    [WIRE_DATA_ERR_SHAPE] = "shape",
    [WIRE_DATA_ERR_UNKNOWN_EXPERT] = "unknown_expert",
    [WIRE_DATA_ERR_TOO_LARGE] = "too_large",
    [WIRE_DATA_ERR_INTERNAL] = "internal",
    [WIRE_DATA_ERR_UNEXPECTED] = "unexpected",
};

const char *wire_data_error_name(wire_data_error_t code)
{
    if ((unsigned)code < sizeof s_data_names / sizeof s_data_names[0])
        return s_data_names[code];
    return "unknown";
}

static const char *const s_data_types[] = {
    [WIRE_HELLO] = "HELLO", [WIRE_HELLO_REPLY] = "HELLO_REPLY",
    [WIRE_EXPERT_REQUEST] = "EXPERT_REQUEST", [WIRE_EXPERT_REPLY] = "EXPERT_REPLY",
    [WIRE_HEARTBEAT] = "HEARTBEAT", [WIRE_HEARTBEAT_REPLY] = "HEARTBEAT_REPLY",
    [WIRE_SHUTDOWN] = "SHUTDOWN", [WIRE_ERROR] = "ERROR",
};

static bool s_data_type_known(uint32_t type)
{
    return type >= WIRE_HELLO && type <= WIRE_ERROR;
}

static bool s_data_has_tensor(uint32_t type)
{
    return type == WIRE_EXPERT_REQUEST || type == WIRE_EXPERT_REPLY;
}

/* Reports a bad data-plane message: *code, err, errno EPROTO; returns -1. */
static int s_dbad(wire_data_error_t *code, wire_data_error_t c, err_t *err,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int s_dbad(wire_data_error_t *code, wire_data_error_t c, err_t *err,
                  const char *fmt, ...)
{
    char text[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    *code = c;
    return err_set(err, EPROTO, "%s", text);
}

/* The tensor frame of EXPERT_REQUEST / EXPERT_REPLY against the header and
 * the limits; fills n_rows, hidden and rows. */
static int s_data_tensor(wire_inbox_t *self, const Moe__Data__Header *h, wire_data_t *msg,
                         wire_data_error_t *code, err_t *err)
{
    const wire_limits_t *lim = &self->lim;
    const char *what = s_data_types[h->type];
    if (h->dtype != MOE__DATA__DTYPE__F32)
        return s_dbad(code, WIRE_DATA_ERR_MALFORMED, err, "%s: dtype %d is not F32 (1)",
                      what, (int)h->dtype);
    if (h->n_rows == 0 || h->hidden == 0)
        return s_dbad(code, WIRE_DATA_ERR_SHAPE, err, "%s: a %u x %u tensor is empty",
                      what, h->n_rows, h->hidden);
    if (h->n_rows > (uint32_t)(lim->max_rows > 0 ? lim->max_rows : INT32_MAX))
        return s_dbad(code, WIRE_DATA_ERR_TOO_LARGE, err, "%s: %u rows is more than the "
                      "limit of %d", what, h->n_rows, lim->max_rows > 0 ? lim->max_rows
                                                                        : INT32_MAX);
    if (lim->hidden > 0 ? h->hidden != (uint32_t)lim->hidden : h->hidden > INT32_MAX)
        return s_dbad(code, WIRE_DATA_ERR_SHAPE, err, "%s: hidden %u is not the model's %d",
                      what, h->hidden, lim->hidden);
    uint64_t floats = (uint64_t)h->n_rows * h->hidden;
    if (floats > S_MAX_TENSOR_FLOATS)
        return s_dbad(code, WIRE_DATA_ERR_TOO_LARGE, err, "%s: %u x %u floats is too many",
                      what, h->n_rows, h->hidden);
    size_t bytes = zmq_msg_size(&self->tensor);
    if (bytes != floats * sizeof(float))
        return s_dbad(code, WIRE_DATA_ERR_SHAPE, err, "%s: the tensor frame has %zu bytes, "
                      "not the %u x %u x 4 = %llu of the header", what, bytes, h->n_rows,
                      h->hidden, (unsigned long long)(floats * sizeof(float)));
    if (s_tensor_view(self, &msg->rows, err) < 0)
        return -1;
    msg->n_rows = (int)h->n_rows;
    msg->hidden = (int)h->hidden;
    return 0;
}

/* A layer id against the limits. */
static int s_data_layer(const wire_limits_t *lim, const Moe__Data__Header *h,
                        wire_data_t *msg, wire_data_error_t *code, err_t *err)
{
    if (h->layer >= (uint32_t)(lim->n_layers > 0 ? lim->n_layers : INT32_MAX))
        return s_dbad(code, WIRE_DATA_ERR_UNKNOWN_EXPERT, err, "%s: layer %u is out of "
                      "range (%d layers)", s_data_types[h->type], h->layer, lim->n_layers);
    msg->layer = (int)h->layer;
    return 0;
}

/* The assignments of an EXPERT_REQUEST (after its tensor). */
static int s_data_assign(wire_inbox_t *self, const Moe__Data__Header *h, wire_data_t *msg,
                         wire_data_error_t *code, err_t *err)
{
    const wire_limits_t *lim = &self->lim;
    size_t n = h->n_assign_row;
    if (h->n_assign_expert != n || h->n_assign_weight != n)
        return s_dbad(code, WIRE_DATA_ERR_SHAPE, err, "EXPERT_REQUEST: %zu rows, %zu experts "
                      "and %zu weights in the assignments", n, h->n_assign_expert,
                      h->n_assign_weight);
    if (n == 0)
        return s_dbad(code, WIRE_DATA_ERR_SHAPE, err, "EXPERT_REQUEST: no assignment");
    size_t max = lim->max_assign > 0 ? (size_t)lim->max_assign : (size_t)INT32_MAX;
    if (n > max)
        return s_dbad(code, WIRE_DATA_ERR_TOO_LARGE, err, "EXPERT_REQUEST: %zu assignments "
                      "is more than the limit of %zu", n, max);
    uint32_t n_experts = lim->n_experts > 0 ? (uint32_t)lim->n_experts : INT32_MAX;
    for (size_t i = 0; i < n; i++) {
        if (h->assign_row[i] >= (uint32_t)msg->n_rows)
            return s_dbad(code, WIRE_DATA_ERR_SHAPE, err, "EXPERT_REQUEST: assignment %zu "
                          "names row %u of %d", i, h->assign_row[i], msg->n_rows);
        if (h->assign_expert[i] >= n_experts)
            return s_dbad(code, WIRE_DATA_ERR_UNKNOWN_EXPERT, err, "EXPERT_REQUEST: "
                          "assignment %zu names expert %u of %d", i, h->assign_expert[i],
                          lim->n_experts);
        if (!isfinite(h->assign_weight[i]))
            return s_dbad(code, WIRE_DATA_ERR_SHAPE, err, "EXPERT_REQUEST: assignment %zu "
                          "has a weight that is not finite", i);
    }
    if (n > self->assign_cap) {  /* only when the limits give no max_assign */
        moe_assign_t *bigger = mem_realloc(self->assign, n * sizeof *bigger);
        if (!bigger)
            return err_set(err, ENOMEM, "out of memory for %zu assignments", n);
        self->assign = bigger;
        self->assign_cap = n;
    }
    for (size_t i = 0; i < n; i++)
        self->assign[i] = (moe_assign_t){.row = (int32_t)h->assign_row[i],
                                         .expert = (int32_t)h->assign_expert[i],
                                         .weight = h->assign_weight[i]};
    msg->n_assign = (int)n;
    msg->assign = self->assign;
    return 0;
}

static int s_data_hello_reply(const wire_limits_t *lim, const Moe__Data__Header *h,
                              wire_data_t *msg, wire_data_error_t *code, err_t *err)
{
    size_t n = h->n_hosted_layer;
    if (h->n_hosted_expert != n)
        return s_dbad(code, WIRE_DATA_ERR_SHAPE, err, "HELLO_REPLY: %zu hosted layers but "
                      "%zu hosted experts", n, h->n_hosted_expert);
    uint32_t n_layers = lim->n_layers > 0 ? (uint32_t)lim->n_layers : INT32_MAX;
    uint32_t n_experts = lim->n_experts > 0 ? (uint32_t)lim->n_experts : INT32_MAX;
    if (lim->n_layers > 0 && lim->n_experts > 0 && n > (size_t)n_layers * n_experts)
        return s_dbad(code, WIRE_DATA_ERR_TOO_LARGE, err, "HELLO_REPLY: %zu hosted experts "
                      "in a model of %u x %u", n, n_layers, n_experts);
    if (n > INT32_MAX)
        return s_dbad(code, WIRE_DATA_ERR_TOO_LARGE, err, "HELLO_REPLY: %zu hosted experts",
                      n);
    for (size_t i = 0; i < n; i++)
        if (h->hosted_layer[i] >= n_layers || h->hosted_expert[i] >= n_experts)
            return s_dbad(code, WIRE_DATA_ERR_UNKNOWN_EXPERT, err, "HELLO_REPLY: hosted "
                          "pair %zu (layer %u, expert %u) is out of range", i,
                          h->hosted_layer[i], h->hosted_expert[i]);
    if (h->node_id > INT32_MAX)
        return s_dbad(code, WIRE_DATA_ERR_MALFORMED, err, "HELLO_REPLY: node id %u",
                      h->node_id);
    if (s_text_len(h->model_id) < 0)
        return s_dbad(code, WIRE_DATA_ERR_TOO_LARGE, err, "HELLO_REPLY: the model id is "
                      "longer than %d bytes", WIRE_MAX_TEXT - 1);
    msg->node_id = (int)h->node_id;
    msg->model_id = h->model_id;
    msg->n_hosted = (int)n;
    /* uint32 and int32 may alias; every value is below INT32_MAX. */
    msg->hosted_layer = (const int32_t *)h->hosted_layer;
    msg->hosted_expert = (const int32_t *)h->hosted_expert;
    return 0;
}

/* Everything after the version check. */
static int s_data_fill(wire_inbox_t *self, const Moe__Data__Header *h, int n_frames,
                       wire_data_t *msg, wire_data_error_t *code, err_t *err)
{
    if (h->type == MOE__DATA__MSG_TYPE__MSG_UNKNOWN)
        return s_dbad(code, WIRE_DATA_ERR_MALFORMED, err, "the header has no message type");
    if (!s_data_type_known(h->type))
        return s_dbad(code, WIRE_DATA_ERR_UNEXPECTED, err, "unknown message type %d",
                      (int)h->type);
    msg->type = (wire_data_type_t)h->type;
    const char *what = s_data_types[h->type];
    int want = s_data_has_tensor(h->type) ? 2 : 1;
    if (n_frames != want)
        return s_dbad(code, WIRE_DATA_ERR_MALFORMED, err, "%s: %d frames after the "
                      "identity, not %d", what, n_frames, want);
    switch (msg->type) {
    case WIRE_EXPERT_REQUEST:
        if (s_data_tensor(self, h, msg, code, err) < 0 ||
            s_data_layer(&self->lim, h, msg, code, err) < 0)
            return -1;
        return s_data_assign(self, h, msg, code, err);
    case WIRE_EXPERT_REPLY:
        if (s_data_tensor(self, h, msg, code, err) < 0 ||
            s_data_layer(&self->lim, h, msg, code, err) < 0)
            return -1;
        if (!isfinite(h->compute_seconds) || h->compute_seconds < 0)
            return s_dbad(code, WIRE_DATA_ERR_MALFORMED, err, "EXPERT_REPLY: compute "
                          "seconds %g", h->compute_seconds);
        msg->compute_seconds = h->compute_seconds;
        return 0;
    case WIRE_HELLO_REPLY:
        return s_data_hello_reply(&self->lim, h, msg, code, err);
    case WIRE_ERROR:
        if (h->error_code <= MOE__DATA__ERROR_CODE__ERR_NONE ||
            h->error_code > MOE__DATA__ERROR_CODE__ERR_UNEXPECTED)
            return s_dbad(code, WIRE_DATA_ERR_MALFORMED, err, "ERROR: unknown error code %d",
                          (int)h->error_code);
        if (s_text_len(h->error_message) < 0)
            return s_dbad(code, WIRE_DATA_ERR_TOO_LARGE, err, "ERROR: the message is "
                          "longer than %d bytes", WIRE_MAX_TEXT - 1);
        msg->error_code = (wire_data_error_t)h->error_code;
        msg->error_message = h->error_message;
        return 0;
    default: /* HELLO, HEARTBEAT, HEARTBEAT_REPLY, SHUTDOWN: the header is all */
        return 0;
    }
}

/* Decodes the data-plane message whose frames s_recv_all or s_load put in the
 * inbox: wire_data_recv after the socket. */
static int s_data_decode(wire_inbox_t *self, int n_frames, bool bad_identity,
                         wire_data_t *msg, wire_data_error_t *code, err_t *err)
{
    memset(msg, 0, sizeof *msg);
    *code = WIRE_DATA_OK;

    void *m;
    uint64_t id, version;
    int rc = -1;
    /* How each refusal of s_open reads on the data plane. */
    static const wire_data_error_t codes[] = {
        [S_OPEN_IDENTITY] = WIRE_DATA_ERR_MALFORMED, [S_OPEN_NO_HEADER] = WIRE_DATA_ERR_MALFORMED,
        [S_OPEN_TOO_BIG] = WIRE_DATA_ERR_TOO_LARGE, [S_OPEN_UNDECODABLE] = WIRE_DATA_ERR_MALFORMED,
        [S_OPEN_EXHAUSTED] = WIRE_DATA_ERR_TOO_LARGE, [S_OPEN_VERSION] = WIRE_DATA_ERR_VERSION,
    };
    s_open_t opened = s_open(self, &moe__data__header__descriptor, n_frames, bad_identity,
                             self->data_grows, &m, &id, &version);
    if (opened != S_OPEN_OK) {
        char why[256];
        if (s_open_why(self, opened, "header", version, why, sizeof why) < 0)
            rc = err_set(err, ENOMEM, "%s", why);
        else
            rc = s_dbad(code, codes[opened], err, "%s", why);
        goto done;
    }
    const Moe__Data__Header *h = m;
    id = h->request_id;
    if (h->version != WIRE_PROTOCOL_VERSION) {
        rc = s_dbad(code, WIRE_DATA_ERR_VERSION, err, "protocol version %u, not %d",
                    h->version, WIRE_PROTOCOL_VERSION);
        goto done;
    }
    rc = s_data_fill(self, h, n_frames, msg, code, err);

done:
    if (rc < 0) {
        int saved = errno;
        memset(msg, 0, sizeof *msg);
        errno = saved;
    }
    msg->request_id = id;
    return rc;
}

int wire_data_recv(wire_inbox_t *self, void *socket, bool with_identity,
                   wire_peer_t *from, wire_data_t *msg, wire_data_error_t *code,
                   err_t *err)
{
    assert(self);
    assert(socket);
    assert(msg);
    wire_data_error_t ignored;
    if (!code)
        code = &ignored;
    int n_frames;
    bool bad_identity;
    if (s_recv_all(self, socket, with_identity, from, &n_frames, &bad_identity, err) < 0)
        return -1;
    return s_data_decode(self, n_frames, bad_identity, msg, code, err);
}

int wire_data_decode(wire_inbox_t *self, const wire_frame_t *frames, int n_frames,
                     wire_data_t *msg, wire_data_error_t *code, err_t *err)
{
    assert(self);
    assert(frames || n_frames == 0);
    assert(msg);
    wire_data_error_t ignored;
    if (!code)
        code = &ignored;
    if (s_load(self, frames, n_frames, err) < 0)
        return -1;
    return s_data_decode(self, n_frames, false, msg, code, err);
}

/* Text for an error field: s itself, or its longest prefix that fits
 * WIRE_MAX_TEXT with its NUL and does not split a UTF-8 sequence, in buf. */
static const char *s_clip(const char *s, char buf[WIRE_MAX_TEXT])
{
    if (!s)
        return "";
    if (s_text_len(s) >= 0)
        return s;
    size_t n = WIRE_MAX_TEXT - 1;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
        n--;  /* s[n] would start the cut: back off to a lead byte */
    memcpy(buf, s, n);
    buf[n] = '\0';
    return buf;
}

/* Packs header m into a frame and sends [to] header [tensor]. */
static int s_send(void *socket, const wire_peer_t *to, const ProtobufCMessage *m,
                  const void *tensor, size_t tensor_bytes, size_t *sent, err_t *err)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    if (len > WIRE_MAX_HEADER_BYTES)
        return err_set(err, EMSGSIZE, "a %zu-byte header is over the limit of %d bytes",
                       len, WIRE_MAX_HEADER_BYTES);
    zmq_msg_t hdr;
    if (zmq_msg_init_size(&hdr, len) < 0)
        return err_set(err, errno, "out of memory for a %zu-byte header", len);
    protobuf_c_message_pack(m, zmq_msg_data(&hdr));
    int rc;
    if (to) {
        if (to->len == 0 || to->len > WIRE_MAX_IDENTITY) {
            zmq_msg_close(&hdr);
            return err_set(err, EINVAL, "a routing id of %zu bytes", to->len);
        }
        if (zmq_send(socket, to->id, to->len, ZMQ_SNDMORE) < 0) {
            int e = errno;
            zmq_msg_close(&hdr);
            return err_set(err, e, "sending: %s", zmq_strerror(e));
        }
        /* The message has begun: the rest must follow whatever the signals. */
        while ((rc = zmq_msg_send(&hdr, socket, tensor ? ZMQ_SNDMORE : 0)) < 0 &&
               errno == EINTR)
            ;
    } else {
        rc = zmq_msg_send(&hdr, socket, tensor ? ZMQ_SNDMORE : 0);
    }
    if (rc < 0) {
        int e = errno;
        zmq_msg_close(&hdr);
        return err_set(err, e, "sending a header: %s", zmq_strerror(e));
    }
    if (tensor) {
        while ((rc = zmq_send(socket, tensor, tensor_bytes, 0)) < 0 && errno == EINTR)
            ;
        if (rc < 0)
            return err_set(err, errno, "sending a tensor: %s", zmq_strerror(errno));
    }
    if (sent)
        *sent = (to ? to->len : 0) + len + (tensor ? tensor_bytes : 0);
    return 0;
}

/* Bytes of an n_rows x width float32 tensor a sender gives, or 0 when the
 * shape cannot travel. */
static size_t s_send_tensor_bytes(int n_rows, int width, const float *data)
{
    if (n_rows <= 0 || width <= 0 || !data ||
        (uint64_t)n_rows * (uint64_t)width > S_MAX_TENSOR_FLOATS)
        return 0;
    return (size_t)n_rows * (size_t)width * sizeof(float);
}

int wire_data_send(void *socket, const wire_peer_t *to, const wire_data_t *msg, err_t *err)
{
    return wire_data_send_sized(socket, to, msg, NULL, err);
}

int wire_data_send_sized(void *socket, const wire_peer_t *to, const wire_data_t *msg,
                         size_t *sent_bytes, err_t *err)
{
    assert(socket);
    assert(msg);
    Moe__Data__Header h = MOE__DATA__HEADER__INIT;
    char clipped[WIRE_MAX_TEXT];
    uint32_t stack_row[S_SEND_STACK_ASSIGN];
    uint32_t stack_expert[S_SEND_STACK_ASSIGN];
    float stack_weight[S_SEND_STACK_ASSIGN];
    uint32_t *heap = NULL;  /* assignments beyond the stack: rows, experts, weights */
    const float *tensor = NULL;
    size_t bytes = 0;
    int rc = -1;

    h.version = WIRE_PROTOCOL_VERSION;
    h.type = (Moe__Data__MsgType)msg->type;
    h.request_id = msg->request_id;
    switch (msg->type) {
    case WIRE_HELLO:
    case WIRE_HEARTBEAT:
    case WIRE_HEARTBEAT_REPLY:
    case WIRE_SHUTDOWN:
        break;
    case WIRE_HELLO_REPLY: {
        const char *model_id = msg->model_id ? msg->model_id : "";
        if (msg->node_id < 0 || msg->n_hosted < 0 ||
            (msg->n_hosted > 0 && (!msg->hosted_layer || !msg->hosted_expert))) {
            err_set(err, EINVAL, "HELLO_REPLY: node %d with %d hosted experts", msg->node_id,
                    msg->n_hosted);
            goto cleanup;
        }
        if (s_text_len(model_id) < 0) {
            err_set(err, EINVAL, "HELLO_REPLY: the model id is longer than %d bytes",
                    WIRE_MAX_TEXT - 1);
            goto cleanup;
        }
        for (int i = 0; i < msg->n_hosted; i++)
            if (msg->hosted_layer[i] < 0 || msg->hosted_expert[i] < 0) {
                err_set(err, EINVAL, "HELLO_REPLY: hosted pair %d is negative", i);
                goto cleanup;
            }
        h.node_id = (uint32_t)msg->node_id;
        h.model_id = (char *)model_id;
        h.n_hosted_layer = h.n_hosted_expert = (size_t)msg->n_hosted;
        h.hosted_layer = (uint32_t *)msg->hosted_layer;
        h.hosted_expert = (uint32_t *)msg->hosted_expert;
        break;
    }
    case WIRE_EXPERT_REQUEST:
    case WIRE_EXPERT_REPLY:
        if (!(bytes = s_send_tensor_bytes(msg->n_rows, msg->hidden, msg->rows)) ||
            msg->layer < 0) {
            err_set(err, EINVAL, "%s: a %d x %d tensor at layer %d", s_data_types[msg->type],
                    msg->n_rows, msg->hidden, msg->layer);
            goto cleanup;
        }
        tensor = msg->rows;
        h.layer = (uint32_t)msg->layer;
        h.dtype = MOE__DATA__DTYPE__F32;
        h.n_rows = (uint32_t)msg->n_rows;
        h.hidden = (uint32_t)msg->hidden;
        if (msg->type == WIRE_EXPERT_REPLY) {
            h.compute_seconds = msg->compute_seconds;
            break;
        }
        if (msg->n_assign <= 0 || !msg->assign) {
            err_set(err, EINVAL, "EXPERT_REQUEST: %d assignments", msg->n_assign);
            goto cleanup;
        }
        size_t n = (size_t)msg->n_assign;
        h.assign_row = stack_row;
        h.assign_expert = stack_expert;
        h.assign_weight = stack_weight;
        if (n > S_SEND_STACK_ASSIGN) {
            if (!(heap = mem_alloc(n * 3 * sizeof *heap))) {
                err_set(err, ENOMEM, "out of memory for %zu assignments", n);
                goto cleanup;
            }
            h.assign_row = heap;
            h.assign_expert = heap + n;
            h.assign_weight = (float *)(heap + 2 * n);
        }
        for (size_t i = 0; i < n; i++) {
            const moe_assign_t *a = &msg->assign[i];
            if (a->row < 0 || a->row >= msg->n_rows || a->expert < 0 || !isfinite(a->weight)) {
                err_set(err, EINVAL, "EXPERT_REQUEST: assignment %zu (row %d, expert %d) of "
                        "%d rows", i, (int)a->row, (int)a->expert, msg->n_rows);
                goto cleanup;
            }
            h.assign_row[i] = (uint32_t)a->row;
            h.assign_expert[i] = (uint32_t)a->expert;
            h.assign_weight[i] = a->weight;
        }
        h.n_assign_row = h.n_assign_expert = h.n_assign_weight = n;
        break;
    case WIRE_ERROR:
        if (msg->error_code <= WIRE_DATA_OK || msg->error_code > WIRE_DATA_ERR_UNEXPECTED) {
            err_set(err, EINVAL, "ERROR: error code %d", (int)msg->error_code);
            goto cleanup;
        }
        h.error_code = (Moe__Data__ErrorCode)msg->error_code;
        h.error_message = (char *)s_clip(msg->error_message, clipped);
        break;
    default:
        err_set(err, EINVAL, "unknown data-plane message type %d", (int)msg->type);
        goto cleanup;
    }
    rc = s_send(socket, to, &h.base, tensor, bytes, sent_bytes, err);

cleanup:;
    int saved = errno;
    mem_free(heap);
    errno = saved;
    return rc;
}

int wire_data_send_error(void *socket, const wire_peer_t *to, uint64_t request_id,
                         wire_data_error_t code, const char *message, err_t *err)
{
    wire_data_t msg = {.type = WIRE_ERROR, .request_id = request_id, .error_code = code,
                       .error_message = message};
    return wire_data_send(socket, to, &msg, err);
}

/* ===== client RPC ======================================================================= */

static const char *const s_client_names[] = {
    [WIRE_CLIENT_OK] = "ok",
    [WIRE_CLIENT_VERSION_MISMATCH] = "version_mismatch",
    [WIRE_CLIENT_MALFORMED] = "malformed",
    [WIRE_CLIENT_INVALID_ARGUMENT] = "invalid_argument",
    [WIRE_CLIENT_BUSY] = "busy",
    [WIRE_CLIENT_UNAVAILABLE] = "unavailable",
    [WIRE_CLIENT_INTERNAL] = "internal",
    [WIRE_CLIENT_CANCELLED] = "cancelled",
    [WIRE_CLIENT_DEADLINE_EXCEEDED] = "deadline_exceeded",
};

const char *wire_client_error_name(wire_client_error_t code)
{
    if ((unsigned)code < sizeof s_client_names / sizeof s_client_names[0])
        return s_client_names[code];
    return "unknown";
}

static const char *const s_request_types[] = {
    [WIRE_REQ_GENERATE] = "GENERATE", [WIRE_REQ_LOGITS] = "LOGITS",
    [WIRE_REQ_STATUS] = "STATUS", [WIRE_REQ_CANCEL] = "CANCEL",
};

/* Reports a bad request: *code, err, errno EPROTO; returns -1. */
static int s_cbad(wire_client_error_t *code, wire_client_error_t c, err_t *err,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int s_cbad(wire_client_error_t *code, wire_client_error_t c, err_t *err,
                  const char *fmt, ...)
{
    char text[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    *code = c;
    return err_set(err, EPROTO, "%s", text);
}

static int s_request_fill(const wire_limits_t *lim, const Moe__Client__Request *r,
                          int n_frames, wire_request_t *req, wire_client_error_t *code,
                          err_t *err)
{
    if (r->type < MOE__CLIENT__REQUEST_TYPE__GENERATE ||
        r->type > MOE__CLIENT__REQUEST_TYPE__CANCEL)
        return s_cbad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "unknown request type %d",
                      (int)r->type);
    const char *what = s_request_types[r->type];
    if (n_frames != 1)
        return s_cbad(code, WIRE_CLIENT_MALFORMED, err, "%s: %d frames after the identity, "
                      "not 1", what, n_frames);
    req->type = (wire_request_type_t)r->type;
    switch (req->type) {
    case WIRE_REQ_GENERATE:
    case WIRE_REQ_LOGITS: {
        size_t n = r->n_prompt_ids;
        size_t max = lim->max_prompt > 0 ? (size_t)lim->max_prompt : (size_t)INT32_MAX;
        const size_t text_len = r->prompt_text ? strlen(r->prompt_text) : 0;
        if (text_len > 0 && req->type != WIRE_REQ_GENERATE)
            return s_cbad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "%s: a text prompt is for "
                          "GENERATE only; give prompt_ids", what);
        if (text_len > 0 && n > 0)
            return s_cbad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "%s: both prompt_ids and "
                          "prompt_text; give one", what);
        if (text_len > s_prompt_text_limit(lim))
            return s_cbad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "%s: a prompt text of %zu "
                          "bytes is more than the limit of %zu", what, text_len,
                          s_prompt_text_limit(lim));
        if (n == 0 && text_len == 0)
            return s_cbad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "%s: empty prompt", what);
        if (n > max)
            return s_cbad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "%s: %zu prompt tokens is "
                          "more than the limit of %zu", what, n, max);
        for (size_t i = 0; i < n; i++)
            if (r->prompt_ids[i] < 0 || (lim->vocab > 0 && r->prompt_ids[i] >= lim->vocab))
                return s_cbad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "%s: prompt token %zu "
                              "is %d, outside the vocabulary of %d", what, i,
                              (int)r->prompt_ids[i], lim->vocab);
        if (r->max_tokens > INT32_MAX)
            return s_cbad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "%s: max_tokens %u", what,
                          r->max_tokens);
        if (!isfinite(r->temperature) || r->temperature < 0 || !isfinite(r->top_p) ||
            r->top_p < 0 || r->top_p > 1 || r->top_k > INT32_MAX)
            return s_cbad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "%s: temperature %g, "
                          "top_k %u, top_p %g (need temperature >= 0, top_p in [0, 1])",
                          what, (double)r->temperature, r->top_k, (double)r->top_p);
        if (r->n_stop_ids > WIRE_MAX_STOP_IDS)
            return s_cbad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "%s: %zu stop ids is more "
                          "than the limit of %d", what, r->n_stop_ids, WIRE_MAX_STOP_IDS);
        req->n_prompt = (int)n;
        req->prompt = r->prompt_ids;
        req->max_tokens = (int)r->max_tokens;
        req->temperature = r->temperature;
        req->top_k = (int)r->top_k;
        req->top_p = r->top_p;
        req->seed = r->seed;
        req->n_stop = (int)r->n_stop_ids;
        req->stop_ids = r->stop_ids;
        if (r->deadline_ms > INT32_MAX)
            return s_cbad(code, WIRE_CLIENT_INVALID_ARGUMENT, err, "%s: deadline_ms %u is more "
                          "than %d", what, r->deadline_ms, INT32_MAX);
        req->deadline_ms = (int)r->deadline_ms;
        req->ignore_eos = r->ignore_eos;
        if (text_len > 0) {
            req->prompt_text = r->prompt_text;
            req->prompt_text_len = text_len;
        }
        return 0;
    }
    case WIRE_REQ_CANCEL:
        req->cancel_id = r->cancel_id;
        return 0;
    default: /* STATUS */
        return 0;
    }
}

/* wire_request_recv after the socket (see s_data_decode). */
static int s_request_decode(wire_inbox_t *self, int n_frames, bool bad_identity,
                            wire_request_t *req, wire_client_error_t *code, err_t *err)
{
    memset(req, 0, sizeof *req);
    *code = WIRE_CLIENT_OK;

    void *m;
    uint64_t id, version;
    int rc = -1;
    /* How each refusal of s_open reads to a client: a header the limits
     * cannot hold is a request too long, the client's to change. */
    static const wire_client_error_t codes[] = {
        [S_OPEN_IDENTITY] = WIRE_CLIENT_MALFORMED, [S_OPEN_NO_HEADER] = WIRE_CLIENT_MALFORMED,
        [S_OPEN_TOO_BIG] = WIRE_CLIENT_MALFORMED, [S_OPEN_UNDECODABLE] = WIRE_CLIENT_MALFORMED,
        [S_OPEN_EXHAUSTED] = WIRE_CLIENT_INVALID_ARGUMENT,
        [S_OPEN_VERSION] = WIRE_CLIENT_VERSION_MISMATCH,
    };
    s_open_t opened = s_open(self, &moe__client__request__descriptor, n_frames, bad_identity,
                             self->request_grows, &m, &id, &version);
    if (opened != S_OPEN_OK) {
        char why[256];
        if (s_open_why(self, opened, "request", version, why, sizeof why) < 0)
            rc = err_set(err, ENOMEM, "%s", why);
        else
            rc = s_cbad(code, codes[opened], err, "%s", why);
        goto done;
    }
    const Moe__Client__Request *r = m;
    id = r->request_id;
    if (r->version != WIRE_PROTOCOL_VERSION) {
        rc = s_cbad(code, WIRE_CLIENT_VERSION_MISMATCH, err, "protocol version %u, not %d",
                    r->version, WIRE_PROTOCOL_VERSION);
        goto done;
    }
    rc = s_request_fill(&self->lim, r, n_frames, req, code, err);

done:
    if (rc < 0) {
        int saved = errno;
        memset(req, 0, sizeof *req);
        errno = saved;
    }
    req->request_id = id;
    return rc;
}

int wire_request_recv(wire_inbox_t *self, void *socket, wire_peer_t *from,
                      wire_request_t *req, wire_client_error_t *code, err_t *err)
{
    assert(self);
    assert(socket);
    assert(req);
    wire_client_error_t ignored;
    if (!code)
        code = &ignored;
    int n_frames;
    bool bad_identity;
    if (s_recv_all(self, socket, true, from, &n_frames, &bad_identity, err) < 0)
        return -1;
    return s_request_decode(self, n_frames, bad_identity, req, code, err);
}

int wire_request_decode(wire_inbox_t *self, const wire_frame_t *frames, int n_frames,
                        wire_request_t *req, wire_client_error_t *code, err_t *err)
{
    assert(self);
    assert(frames || n_frames == 0);
    assert(req);
    wire_client_error_t ignored;
    if (!code)
        code = &ignored;
    if (s_load(self, frames, n_frames, err) < 0)
        return -1;
    return s_request_decode(self, n_frames, false, req, code, err);
}

int wire_request_send(void *socket, const wire_request_t *req, err_t *err)
{
    assert(socket);
    assert(req);
    Moe__Client__Request r = MOE__CLIENT__REQUEST__INIT;
    r.version = WIRE_PROTOCOL_VERSION;
    r.type = (Moe__Client__RequestType)req->type;
    r.request_id = req->request_id;
    switch (req->type) {
    case WIRE_REQ_GENERATE:
    case WIRE_REQ_LOGITS:
        if (req->n_prompt < 0 || (req->n_prompt > 0 && !req->prompt) || req->max_tokens < 0 ||
            req->deadline_ms < 0 ||
            (req->prompt_text && memchr(req->prompt_text, 0, req->prompt_text_len)))
            return err_set(err, EINVAL, "%s: %d prompt tokens, max_tokens %d",
                           s_request_types[req->type], req->n_prompt, req->max_tokens);
        if (req->n_stop < 0 || req->n_stop > WIRE_MAX_STOP_IDS ||
            (req->n_stop > 0 && !req->stop_ids) || req->top_k < 0)
            return err_set(err, EINVAL, "%s: %d stop ids, top_k %d", s_request_types[req->type],
                           req->n_stop, req->top_k);
        r.n_prompt_ids = (size_t)req->n_prompt;
        r.prompt_ids = (int32_t *)req->prompt;
        r.max_tokens = (uint32_t)req->max_tokens;
        r.temperature = req->temperature;
        r.top_k = (uint32_t)req->top_k;
        r.top_p = req->top_p;
        r.seed = req->seed;
        r.n_stop_ids = (size_t)req->n_stop;
        r.stop_ids = (int32_t *)req->stop_ids;
        r.deadline_ms = (uint32_t)req->deadline_ms;
        r.ignore_eos = req->ignore_eos;
        if (req->prompt_text)
            r.prompt_text = (char *)req->prompt_text; /* NUL-terminated: checked above */
        break;
    case WIRE_REQ_CANCEL:
        r.cancel_id = req->cancel_id;
        break;
    case WIRE_REQ_STATUS:
        break;
    default:
        return err_set(err, EINVAL, "unknown request type %d", (int)req->type);
    }
    return s_send(socket, NULL, &r.base, NULL, 0, NULL, err);
}

/* ---- replies (client side) ---------------------------------------------------------- */

static int s_reply_status(wire_inbox_t *self, const Moe__Client__Reply *r, wire_reply_t *rep,
                          err_t *err)
{
    if (r->n_nodes > S_MAX_STATUS_NODES)
        return err_set(err, EPROTO, "STATUS_DATA: %zu nodes (at most %d)", r->n_nodes,
                       S_MAX_STATUS_NODES);
    if (r->n_layers > INT32_MAX || r->n_experts > INT32_MAX ||
        (uint64_t)r->n_layers * r->n_experts > INT32_MAX)
        return err_set(err, EPROTO, "STATUS_DATA: %u layers x %u experts", r->n_layers,
                       r->n_experts);
    uint64_t cells = (uint64_t)r->n_layers * r->n_experts;
    if (r->n_expert_tokens != cells)
        return err_set(err, EPROTO, "STATUS_DATA: %zu expert token counts for %u layers x %u "
                       "experts", r->n_expert_tokens, r->n_layers, r->n_experts);
    if (s_text_len(r->model) < 0)
        return err_set(err, EPROTO, "STATUS_DATA: the model name is longer than %d bytes",
                       WIRE_MAX_TEXT - 1);
    uint32_t n_layers = r->n_layers > 0 ? r->n_layers : INT32_MAX;
    uint32_t n_experts = r->n_experts > 0 ? r->n_experts : INT32_MAX;
    for (size_t i = 0; i < r->n_nodes; i++) {
        const Moe__Client__NodeStatus *s = r->nodes[i];
        size_t n = s->n_hosted_layer;
        if (s->n_hosted_expert != n || n > INT32_MAX || (cells > 0 && n > cells))
            return err_set(err, EPROTO, "STATUS_DATA: node %zu has %zu hosted layers and "
                           "%zu hosted experts", i, n, s->n_hosted_expert);
        for (size_t j = 0; j < n; j++)
            if (s->hosted_layer[j] >= n_layers || s->hosted_expert[j] >= n_experts)
                return err_set(err, EPROTO, "STATUS_DATA: node %zu hosts (layer %u, expert "
                               "%u), out of range", i, s->hosted_layer[j],
                               s->hosted_expert[j]);
        if (s->node_id > INT32_MAX || s_text_len(s->endpoint) < 0 ||
            s_text_len(s->last_error) < 0 || !isfinite(s->rtt_last_ms) ||
            !isfinite(s->rtt_mean_ms))
            return err_set(err, EPROTO, "STATUS_DATA: node %zu has a bad id, text or time", i);
    }
    if (r->n_nodes > self->nodes_cap) {
        wire_node_status_t *bigger = mem_realloc(self->nodes, r->n_nodes * sizeof *bigger);
        if (!bigger)
            return err_set(err, ENOMEM, "out of memory for %zu node statuses", r->n_nodes);
        self->nodes = bigger;
        self->nodes_cap = r->n_nodes;
    }
    for (size_t i = 0; i < r->n_nodes; i++) {
        const Moe__Client__NodeStatus *s = r->nodes[i];
        self->nodes[i] = (wire_node_status_t){
            .node_id = (int)s->node_id,
            .endpoint = s->endpoint,
            .up = s->up,
            .n_hosted = (int)s->n_hosted_layer,
            .hosted_layer = (const int32_t *)s->hosted_layer, /* all below INT32_MAX */
            .hosted_expert = (const int32_t *)s->hosted_expert,
            .batches = s->batches,
            .rtt_last_ms = s->rtt_last_ms,
            .rtt_mean_ms = s->rtt_mean_ms,
            .last_error = s->last_error,
        };
    }
    rep->model = r->model;
    rep->n_nodes = (int)r->n_nodes;
    rep->nodes = self->nodes;
    rep->n_layers = (int)r->n_layers;
    rep->n_experts = (int)r->n_experts;
    rep->expert_tokens = r->expert_tokens;
    rep->requests_served = r->requests_served;
    rep->timing = (wire_timing_t){
        .tokens = r->timing_tokens, .dispatch_calls = r->timing_dispatch_calls,
        .bytes_sent = r->timing_bytes_sent, .bytes_received = r->timing_bytes_received,
        .seconds_forward = r->timing_seconds_forward,
        .seconds_dispatch = r->timing_seconds_dispatch,
        .seconds_node_compute = r->timing_seconds_node_compute,
        .seconds_overlap = r->timing_seconds_overlap,
    };
    if (r->sequences_running > INT32_MAX || r->requests_queued > INT32_MAX)
        return err_set(err, EPROTO, "STATUS_DATA: %u sequences, %u queued",
                       r->sequences_running, r->requests_queued);
    rep->sequences_running = (int)r->sequences_running;
    rep->requests_queued = (int)r->requests_queued;
    rep->kv_bytes = r->kv_bytes;
    return 0;
}

static int s_reply_logits(wire_inbox_t *self, const Moe__Client__Reply *r, wire_reply_t *rep,
                          err_t *err)
{
    const wire_limits_t *lim = &self->lim;
    if (r->rows == 0 || r->vocab == 0)
        return err_set(err, EPROTO, "LOGITS_DATA: %u x %u logits", r->rows, r->vocab);
    if (r->rows > (uint32_t)(lim->max_logit_rows > 0 ? lim->max_logit_rows : INT32_MAX))
        return err_set(err, EPROTO, "LOGITS_DATA: %u rows is more than the limit of %d",
                       r->rows, lim->max_logit_rows);
    if (r->vocab > (uint32_t)(lim->vocab > 0 ? lim->vocab : INT32_MAX))
        return err_set(err, EPROTO, "LOGITS_DATA: vocabulary %u is more than the limit of "
                       "%d", r->vocab, lim->vocab);
    uint64_t floats = (uint64_t)r->rows * r->vocab;
    if (floats > S_MAX_TENSOR_FLOATS)
        return err_set(err, EPROTO, "LOGITS_DATA: %u x %u logits is too many", r->rows,
                       r->vocab);
    size_t bytes = zmq_msg_size(&self->tensor);
    if (bytes != floats * sizeof(float))
        return err_set(err, EPROTO, "LOGITS_DATA: the logits frame has %zu bytes, not the "
                       "%u x %u x 4 of the header", bytes, r->rows, r->vocab);
    if (s_tensor_view(self, &rep->logits, err) < 0)
        return -1;
    rep->rows = (int)r->rows;
    rep->vocab = (int)r->vocab;
    return 0;
}

static int s_reply_fill(wire_inbox_t *self, const Moe__Client__Reply *r, int n_frames,
                        wire_reply_t *rep, err_t *err)
{
    if (r->type < MOE__CLIENT__REPLY_TYPE__TOKENS ||
        r->type > MOE__CLIENT__REPLY_TYPE__ERROR_REPLY)
        return err_set(err, EPROTO, "unknown reply type %d", (int)r->type);
    int want = r->type == MOE__CLIENT__REPLY_TYPE__LOGITS_DATA ? 2 : 1;
    if (n_frames != want)
        return err_set(err, EPROTO, "a reply of type %d in %d frames, not %d", (int)r->type,
                       n_frames, want);
    rep->type = (wire_reply_type_t)r->type;
    rep->final = r->final;
    switch (rep->type) {
    case WIRE_REP_TOKENS:
        if (r->n_tokens > INT32_MAX || r->prompt_tokens > INT32_MAX ||
            r->generated_tokens > INT32_MAX || !isfinite(r->seconds) || r->seconds < 0)
            return err_set(err, EPROTO, "TOKENS: %zu tokens, counts %u and %u, %g seconds",
                           r->n_tokens, r->prompt_tokens, r->generated_tokens, r->seconds);
        for (size_t i = 0; i < r->n_tokens; i++)
            if (r->tokens[i] < 0 || (self->lim.vocab > 0 && r->tokens[i] >= self->lim.vocab))
                return err_set(err, EPROTO, "TOKENS: token %zu is %d, outside the "
                               "vocabulary of %d", i, (int)r->tokens[i], self->lim.vocab);
        rep->n_tokens = (int)r->n_tokens;
        rep->tokens = r->tokens;
        rep->prompt_tokens = (int)r->prompt_tokens;
        rep->generated_tokens = (int)r->generated_tokens;
        rep->seconds = r->seconds;
        rep->text = r->text ? r->text : "";
        rep->text_len = strlen(rep->text);
        if (s_text_len(r->finish_reason) < 0)
            return err_set(err, EPROTO, "TOKENS: a finish reason longer than %d bytes",
                           WIRE_MAX_TEXT - 1);
        rep->finish_reason = r->finish_reason && r->finish_reason[0] ? r->finish_reason : NULL;
        return 0;
    case WIRE_REP_LOGITS:
        return s_reply_logits(self, r, rep, err);
    case WIRE_REP_STATUS:
        return s_reply_status(self, r, rep, err);
    default: /* ERROR */
        if (r->error_code <= MOE__CLIENT__ERROR_CODE__OK ||
            r->error_code > MOE__CLIENT__ERROR_CODE__DEADLINE_EXCEEDED)
            return err_set(err, EPROTO, "ERROR_REPLY: unknown error code %d",
                           (int)r->error_code);
        if (s_text_len(r->error_message) < 0)
            return err_set(err, EPROTO, "ERROR_REPLY: the message is longer than %d bytes",
                           WIRE_MAX_TEXT - 1);
        rep->error_code = (wire_client_error_t)r->error_code;
        rep->error_message = r->error_message;
        return 0;
    }
}

/* wire_reply_recv after the socket (see s_data_decode). */
static int s_reply_decode(wire_inbox_t *self, int n_frames, bool bad_identity,
                          wire_reply_t *rep, err_t *err)
{
    memset(rep, 0, sizeof *rep);

    void *m;
    uint64_t id, version;
    int rc = -1;
    switch (s_open(self, &moe__client__reply__descriptor, n_frames, bad_identity, true, &m,
                   &id, &version)) {
    case S_OPEN_OK:
        break;
    case S_OPEN_IDENTITY:
    case S_OPEN_NO_HEADER:
        rc = err_set(err, EPROTO, "a reply without a reply frame");
        goto done;
    case S_OPEN_TOO_BIG:
        rc = err_set(err, EPROTO, "a reply frame over %d bytes", WIRE_MAX_HEADER_BYTES);
        goto done;
    case S_OPEN_UNDECODABLE:
        rc = err_set(err, EPROTO, "a reply that does not decode");
        goto done;
    case S_OPEN_EXHAUSTED:
        rc = err_set(err, EPROTO, "a reply that needs more than %zu bytes decoded",
                     self->arena.cap);
        goto done;
    case S_OPEN_VERSION:
        rc = err_set(err, EPROTO, "a reply in protocol version %llu, not %d",
                     (unsigned long long)version, WIRE_PROTOCOL_VERSION);
        goto done;
    case S_OPEN_NOMEM:
        rc = err_set(err, ENOMEM, "out of memory for a reply");
        goto done;
    }
    const Moe__Client__Reply *r = m;
    id = r->request_id;
    if (r->version != WIRE_PROTOCOL_VERSION) {
        rc = err_set(err, EPROTO, "a reply in protocol version %u, not %d", r->version,
                     WIRE_PROTOCOL_VERSION);
        goto done;
    }
    rc = s_reply_fill(self, r, n_frames, rep, err);

done:
    if (rc < 0) {
        int saved = errno;
        memset(rep, 0, sizeof *rep);
        errno = saved;
    }
    rep->request_id = id;
    return rc;
}

int wire_reply_recv(wire_inbox_t *self, void *socket, wire_reply_t *rep, err_t *err)
{
    assert(self);
    assert(socket);
    assert(rep);
    int n_frames;
    bool bad_identity;
    if (s_recv_all(self, socket, false, NULL, &n_frames, &bad_identity, err) < 0)
        return -1;
    return s_reply_decode(self, n_frames, bad_identity, rep, err);
}

int wire_reply_decode(wire_inbox_t *self, const wire_frame_t *frames, int n_frames,
                      wire_reply_t *rep, err_t *err)
{
    assert(self);
    assert(frames || n_frames == 0);
    assert(rep);
    if (s_load(self, frames, n_frames, err) < 0)
        return -1;
    return s_reply_decode(self, n_frames, false, rep, err);
}

/* Fills the NodeStatus messages of a STATUS_DATA into s (n) and ptrs (n). */
static int s_pack_nodes(const wire_reply_t *rep, Moe__Client__NodeStatus *s,
                        Moe__Client__NodeStatus **ptrs, char (*clipped)[WIRE_MAX_TEXT],
                        err_t *err)
{
    for (int i = 0; i < rep->n_nodes; i++) {
        const wire_node_status_t *n = &rep->nodes[i];
        const char *endpoint = n->endpoint ? n->endpoint : "";
        if (n->node_id < 0 || n->n_hosted < 0 ||
            (n->n_hosted > 0 && (!n->hosted_layer || !n->hosted_expert)) ||
            s_text_len(endpoint) < 0)
            return err_set(err, EINVAL, "STATUS_DATA: node %d (id %d, %d hosted, endpoint "
                           "of %zu bytes)", i, n->node_id, n->n_hosted, strlen(endpoint));
        for (int j = 0; j < n->n_hosted; j++)
            if (n->hosted_layer[j] < 0 || n->hosted_expert[j] < 0)
                return err_set(err, EINVAL, "STATUS_DATA: node %d hosts a negative id", i);
        moe__client__node_status__init(&s[i]);
        s[i].node_id = (uint32_t)n->node_id;
        s[i].endpoint = (char *)endpoint;
        s[i].up = n->up;
        s[i].n_hosted_layer = s[i].n_hosted_expert = (size_t)n->n_hosted;
        s[i].hosted_layer = (uint32_t *)n->hosted_layer;
        s[i].hosted_expert = (uint32_t *)n->hosted_expert;
        s[i].batches = n->batches;
        s[i].rtt_last_ms = n->rtt_last_ms;
        s[i].rtt_mean_ms = n->rtt_mean_ms;
        s[i].last_error = (char *)s_clip(n->last_error, clipped[i]);
        ptrs[i] = &s[i];
    }
    return 0;
}

int wire_reply_send(void *socket, const wire_peer_t *to, const wire_reply_t *rep, err_t *err)
{
    assert(socket);
    assert(rep);
    Moe__Client__Reply r = MOE__CLIENT__REPLY__INIT;
    char clipped[WIRE_MAX_TEXT];
    void *block = NULL;  /* STATUS_DATA: NodeStatus[n], pointers[n], clipped texts[n] */
    char *text = NULL;   /* TOKENS: the text, NUL-terminated */
    const float *tensor = NULL;
    size_t bytes = 0;
    int rc = -1;

    r.version = WIRE_PROTOCOL_VERSION;
    r.type = (Moe__Client__ReplyType)rep->type;
    r.request_id = rep->request_id;
    r.final = rep->final;
    switch (rep->type) {
    case WIRE_REP_TOKENS:
        if (rep->n_tokens < 0 || (rep->n_tokens > 0 && !rep->tokens) ||
            rep->prompt_tokens < 0 || rep->generated_tokens < 0) {
            err_set(err, EINVAL, "TOKENS: %d tokens, counts %d and %d", rep->n_tokens,
                    rep->prompt_tokens, rep->generated_tokens);
            goto cleanup;
        }
        r.n_tokens = (size_t)rep->n_tokens;
        r.tokens = (int32_t *)rep->tokens;
        r.prompt_tokens = (uint32_t)rep->prompt_tokens;
        r.generated_tokens = (uint32_t)rep->generated_tokens;
        r.seconds = rep->seconds;
        if (rep->text_len > 0) {
            /* protobuf-c sends strings up to their NUL. */
            if (!(text = mem_alloc(rep->text_len + 1))) {
                err_set(err, ENOMEM, "out of memory for a reply's text");
                goto cleanup;
            }
            memcpy(text, rep->text, rep->text_len);
            text[rep->text_len] = '\0';
            r.text = text;
        }
        if (rep->finish_reason)
            r.finish_reason = (char *)rep->finish_reason;
        break;
    case WIRE_REP_LOGITS:
        if (!(bytes = s_send_tensor_bytes(rep->rows, rep->vocab, rep->logits))) {
            err_set(err, EINVAL, "LOGITS_DATA: %d x %d logits", rep->rows, rep->vocab);
            goto cleanup;
        }
        tensor = rep->logits;
        r.rows = (uint32_t)rep->rows;
        r.vocab = (uint32_t)rep->vocab;
        break;
    case WIRE_REP_STATUS: {
        const char *model = rep->model ? rep->model : "";
        int64_t cells = (int64_t)rep->n_layers * rep->n_experts;
        if (rep->n_nodes < 0 || rep->n_nodes > S_MAX_STATUS_NODES ||
            (rep->n_nodes > 0 && !rep->nodes) || rep->n_layers < 0 || rep->n_experts < 0 ||
            cells > INT32_MAX || (cells > 0 && !rep->expert_tokens) || s_text_len(model) < 0) {
            err_set(err, EINVAL, "STATUS_DATA: %d nodes, %d layers x %d experts",
                    rep->n_nodes, rep->n_layers, rep->n_experts);
            goto cleanup;
        }
        size_t n = (size_t)rep->n_nodes;
        if (n) {
            size_t each = sizeof(Moe__Client__NodeStatus) + sizeof(Moe__Client__NodeStatus *) +
                          WIRE_MAX_TEXT;
            if (!(block = mem_alloc(n * each))) {
                err_set(err, ENOMEM, "out of memory for %zu node statuses", n);
                goto cleanup;
            }
            Moe__Client__NodeStatus *s = block;
            Moe__Client__NodeStatus **ptrs = (Moe__Client__NodeStatus **)(s + n);
            char (*texts)[WIRE_MAX_TEXT] = (char (*)[WIRE_MAX_TEXT])(ptrs + n);
            if (s_pack_nodes(rep, s, ptrs, texts, err) < 0)
                goto cleanup;
            r.n_nodes = n;
            r.nodes = ptrs;
        }
        r.model = (char *)model;
        r.n_layers = (uint32_t)rep->n_layers;
        r.n_experts = (uint32_t)rep->n_experts;
        r.n_expert_tokens = (size_t)cells;
        r.expert_tokens = (uint64_t *)rep->expert_tokens;
        r.requests_served = rep->requests_served;
        r.timing_tokens = rep->timing.tokens;
        r.timing_dispatch_calls = rep->timing.dispatch_calls;
        r.timing_bytes_sent = rep->timing.bytes_sent;
        r.timing_bytes_received = rep->timing.bytes_received;
        r.timing_seconds_forward = rep->timing.seconds_forward;
        r.timing_seconds_dispatch = rep->timing.seconds_dispatch;
        r.timing_seconds_node_compute = rep->timing.seconds_node_compute;
        r.timing_seconds_overlap = rep->timing.seconds_overlap;
        r.sequences_running = rep->sequences_running > 0 ? (uint32_t)rep->sequences_running : 0;
        r.requests_queued = rep->requests_queued > 0 ? (uint32_t)rep->requests_queued : 0;
        r.kv_bytes = rep->kv_bytes;
        break;
    }
    case WIRE_REP_ERROR:
        if (rep->error_code <= WIRE_CLIENT_OK ||
            rep->error_code > WIRE_CLIENT_DEADLINE_EXCEEDED) {
            err_set(err, EINVAL, "ERROR_REPLY: error code %d", (int)rep->error_code);
            goto cleanup;
        }
        r.error_code = (Moe__Client__ErrorCode)rep->error_code;
        r.error_message = (char *)s_clip(rep->error_message, clipped);
        break;
    default:
        err_set(err, EINVAL, "unknown reply type %d", (int)rep->type);
        goto cleanup;
    }
    rc = s_send(socket, to, &r.base, tensor, bytes, NULL, err);

cleanup:;
    int saved = errno;
    mem_free(block);
    mem_free(text);
    errno = saved;
    return rc;
}

int wire_reply_send_error(void *socket, const wire_peer_t *to, uint64_t request_id,
                          wire_client_error_t code, const char *message, err_t *err)
{
    wire_reply_t rep = {.type = WIRE_REP_ERROR, .request_id = request_id, .final = true,
                        .error_code = code, .error_message = message};
    return wire_reply_send(socket, to, &rep, err);
}

/* ===== limits ============================================================================ */

int64_t wire_max_message_bytes(const wire_limits_t *lim)
{
    assert(lim);
    if (lim->hidden <= 0 && lim->max_rows <= 0 && lim->max_assign <= 0 &&
        lim->n_layers <= 0 && lim->n_experts <= 0 && lim->max_prompt <= 0 &&
        lim->vocab <= 0 && lim->max_logit_rows <= 0)
        return -1;  /* a receiver that knows nothing accepts anything */
    /* A tensor kind with one dimension given but not the other is unbounded;
     * with neither given, this receiver does not take that kind. */
    if ((lim->hidden > 0) != (lim->max_rows > 0) ||
        (lim->vocab > 0) != (lim->max_logit_rows > 0))
        return -1;
    uint64_t data = s_tensor_floats(lim->max_rows, lim->hidden);
    uint64_t logits = s_tensor_floats(lim->max_logit_rows, lim->vocab);
    uint64_t floats = data > logits ? data : logits;
    return (int64_t)WIRE_MAX_HEADER_BYTES + (int64_t)(floats * sizeof(float));
}

int wire_socket_set_limit(void *socket, const wire_limits_t *lim, err_t *err)
{
    assert(socket);
    assert(lim);
    int64_t max = wire_max_message_bytes(lim);
    if (zmq_setsockopt(socket, ZMQ_MAXMSGSIZE, &max, sizeof max) < 0)
        return err_set(err, errno, "setting ZMQ_MAXMSGSIZE to %lld: %s", (long long)max,
                       zmq_strerror(errno));
    return 0;
}
