/* wire: frame I/O; see wire.h (and wire_private.h for what proto/ shares).
 *
 * A receive takes every frame of one multipart message off the socket before
 * it looks at any of them, so that a bad message never leaves frames behind
 * and the next receive starts on a message boundary. The header frame and the
 * first frame after it stay open in the inbox as zmq_msg_t: the tensor of a
 * good message is read in place when it is 4-byte aligned, else copied into
 * the inbox's aligned buffer. protobuf-c unpacks into the inbox arena, which
 * every receive resets, so a receive within the limits allocates nothing.
 * Which protobuf message a header is, and what makes it valid, is the
 * protocol's business: its wire_codec_t (data_plane.c, client_rpc.c).
 *
 * Invariants: inbox->hdr and inbox->tensor are always initialised zmq_msg_t
 * (empty between messages); arena.used <= arena.cap; every pointer a receive
 * hands out points into the arena, a kept frame or an inbox buffer, and stays
 * valid until the next receive on that inbox that gets a message.
 */
#include "proto/wire.h"
#include "proto/wire_private.h"
#include "proto/wire_tensor.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <zmq.h>

#include "core/mem.h"
#include "model/config.h"

/* Tensor frames carry the host's float32 (or bf16, fp8: wire_tensor.h) bytes
 * as they are. */
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the wire's tensors are little-endian float32: the host must be little-endian");
static_assert(sizeof(float) == 4, "the wire's tensors are IEEE-754 binary32");

enum { S_SCAN_RECORD = 32 };          /* bytes of protobuf-c's scan record per field seen */
enum { S_ARENA_SLACK = 16 << 10 };    /* scalar fields, rounding, small unknown fields */
enum { S_REPLY_ARENA = 64 << 10 };    /* a client's first arena; it grows from there */
enum { S_MAX_ITEMS = 1 << 24 };       /* largest max_assign, max_prompt, layers x experts */
#define S_ARENA_CEILING ((size_t)64 << 20) /* a growing (client-side) arena stops here */

/* Every protocol, for sizing an inbox that may receive any of them. */
static const wire_codec_t *const s_codecs[] = {&wire_data_codec, &wire_request_codec,
                                               &wire_reply_codec};
enum { S_N_CODECS = sizeof s_codecs / sizeof s_codecs[0] };

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
    size_t need = (size + WIRE_ARENA_ALIGN - 1) & ~(size_t)(WIRE_ARENA_ALIGN - 1);
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
    zmq_msg_t hdr;              /* header frame of the last message */
    zmq_msg_t tensor;           /* the frame after the header, if any */
    void *copy;                 /* float32 rows: misaligned tensor frames, copied, and
                                   frames of another format, decoded; MEM_ALIGN */
    size_t copy_cap;            /* bytes of copy */
    void *scratch;              /* what a protocol builds from the last message
                                   (assignments, node statuses) */
    size_t scratch_cap;         /* bytes of scratch */
    size_t message_bytes;       /* every frame of the last message received */
};

size_t wire_inbox_message_bytes(const wire_inbox_t *self)
{
    return self->message_bytes;
}

const wire_limits_t *wire_inbox_limits(const wire_inbox_t *self)
{
    return &self->lim;
}

size_t wire_repeated_bytes(size_t n, size_t elem)
{
    return n * (elem + 2 * S_SCAN_RECORD);
}

uint64_t wire_tensor_floats(int rows, int width)
{
    if (rows <= 0 || width <= 0)
        return 0;
    uint64_t n = (uint64_t)rows * (uint64_t)width;
    return n < WIRE_MAX_TENSOR_FLOATS ? n : WIRE_MAX_TENSOR_FLOATS;
}

wire_inbox_t *wire_inbox_new(const wire_limits_t *lim, err_t *err)
{
    static const wire_limits_t none = {0};
    if (!lim)
        lim = &none;
    size_t n_assign = wire_limit(lim->max_assign);
    size_t n_prompt = wire_limit(lim->max_prompt);
    size_t n_hosted = wire_limit(lim->n_layers) * wire_limit(lim->n_experts);
    if (n_assign > S_MAX_ITEMS || n_prompt > S_MAX_ITEMS || n_hosted > S_MAX_ITEMS) {
        err_set(err, EINVAL, "wire limits too large: max_assign %d, max_prompt %d, "
                "%d layers x %d experts (at most %d each)", lim->max_assign,
                lim->max_prompt, lim->n_layers, lim->n_experts, S_MAX_ITEMS);
        return NULL;
    }
    /* Every valid header of every protocol within the limits unpacks inside
     * the arena, and whatever a protocol builds from it fits the scratch. */
    size_t arena = S_REPLY_ARENA, scratch = 0;
    for (int i = 0; i < S_N_CODECS; i++) {
        bool grows;
        size_t a = s_codecs[i]->arena_bytes(lim, &grows);
        size_t s = s_codecs[i]->scratch_bytes ? s_codecs[i]->scratch_bytes(lim) : 0;
        arena = a > arena ? a : arena;
        scratch = s > scratch ? s : scratch;
    }
    arena += S_ARENA_SLACK;
    arena = (arena + MEM_ALIGN - 1) / MEM_ALIGN * MEM_ALIGN;
    size_t copy = (size_t)wire_tensor_floats(lim->max_rows, lim->hidden) * sizeof(float);

    wire_inbox_t *self = mem_calloc(1, sizeof *self);
    if (!self)
        goto fail;
    self->lim = *lim;
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
    if (scratch) {
        if (!(self->scratch = mem_alloc(scratch)))
            goto fail;
        self->scratch_cap = scratch;
    }
    return self;

fail:
    wire_inbox_destroy(&self);
    err_set(err, ENOMEM, "out of memory for a wire inbox (%zu-byte arena, %zu-byte "
            "tensor buffer, %zu-byte scratch)", arena, copy, scratch);
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
    mem_free(self->scratch);
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

size_t wire_inbox_tensor_bytes(const wire_inbox_t *self)
{
    return zmq_msg_size(&self->tensor);
}

const void *wire_inbox_tensor_data(wire_inbox_t *self)
{
    return zmq_msg_data(&self->tensor);
}

/* *buf with room for bytes, replaced by a larger one (MEM_ALIGN-aligned)
 * when it has not: only when the limits did not size it. NULL with ENOMEM. */
static void *s_inbox_grow(void **buf, size_t *cap, size_t bytes, const char *what,
                          err_t *err)
{
    if (bytes > *cap) {
        void *bigger = mem_alloc_aligned(bytes);
        if (!bigger) {
            err_set(err, ENOMEM, "out of memory for %zu bytes of %s", bytes, what);
            return NULL;
        }
        mem_free(*buf);
        *buf = bigger;
        *cap = bytes;
    }
    return *buf;
}

float *wire_inbox_floats(wire_inbox_t *self, size_t n, err_t *err)
{
    return s_inbox_grow(&self->copy, &self->copy_cap, n * sizeof(float), "a tensor", err);
}

int wire_inbox_tensor(wire_inbox_t *self, const float **out, err_t *err)
{
    const void *data = zmq_msg_data(&self->tensor);
    size_t bytes = zmq_msg_size(&self->tensor);
    if ((uintptr_t)data % _Alignof(float) == 0) {
        *out = data;
        return 0;
    }
    float *copy = wire_inbox_floats(self, (bytes + sizeof(float) - 1) / sizeof(float), err);
    if (!copy)
        return -1;
    memcpy(copy, data, bytes);
    *out = copy;
    return 0;
}

void *wire_inbox_scratch(wire_inbox_t *self, size_t bytes, err_t *err)
{
    return s_inbox_grow(&self->scratch, &self->scratch_cap, bytes, "a message", err);
}

/* ---- outbox ---------------------------------------------------------------------------- */

struct wire_outbox {
    void *scratch;      /* a message in the wire's layout, being sent */
    size_t cap;         /* bytes of scratch */
};

wire_outbox_t *wire_outbox_new(const wire_limits_t *lim, err_t *err)
{
    static const wire_limits_t none = {0};
    if (!lim)
        lim = &none;
    size_t bytes = 0;
    for (int i = 0; i < S_N_CODECS; i++) {
        size_t b = s_codecs[i]->send_bytes ? s_codecs[i]->send_bytes(lim) : 0;
        bytes = b > bytes ? b : bytes;
    }
    wire_outbox_t *self = mem_calloc(1, sizeof *self);
    if (!self || (bytes && !(self->scratch = mem_alloc_aligned(bytes)))) {
        wire_outbox_destroy(&self);
        err_set(err, ENOMEM, "out of memory for a wire outbox (%zu bytes)", bytes);
        return NULL;
    }
    self->cap = bytes;
    return self;
}

void wire_outbox_destroy(wire_outbox_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    wire_outbox_t *self = *self_p;
    int saved = errno;
    mem_free(self->scratch);
    mem_free(self);
    *self_p = NULL;
    errno = saved;
}

void *wire_outbox_scratch(wire_outbox_t *self, size_t bytes)
{
    return self && bytes <= self->cap ? self->scratch : NULL;
}

void *wire_outbox_borrow(wire_outbox_t *self, wire_outbox_t **tmp, size_t bytes, err_t *err)
{
    void *p = wire_outbox_scratch(self, bytes);
    if (p)
        return p;
    wire_outbox_t *fresh = mem_calloc(1, sizeof *fresh);
    if (!fresh || !(fresh->scratch = mem_alloc_aligned(bytes))) {
        wire_outbox_destroy(&fresh);
        err_set(err, ENOMEM, "out of memory for a %zu-byte message", bytes);
        return NULL;
    }
    fresh->cap = bytes;
    wire_outbox_destroy(tmp);
    *tmp = fresh;
    return fresh->scratch;
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
        from->address[0] = '\0';
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
            const char *address = *n_frames == 0 && from && from->len
                                      ? zmq_msg_gets(&part, "Peer-Address") : NULL;
            if (address)
                snprintf(from->address, sizeof from->address, "%s", address);
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

/* ---- the field scanner ------------------------------------------------------------ */

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

/* ---- the one receive path --------------------------------------------------------- */

/* How far s_open got with a message: a refusal, or S_OPEN_NOMEM, a local
 * failure that is not the sender's fault. */
typedef int s_open_t;
enum { S_OPEN_OK = WIRE_REFUSED_NONE, S_OPEN_NOMEM = WIRE_REFUSED_COUNT };

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
        return WIRE_REFUSED_IDENTITY;
    const uint8_t *p = zmq_msg_data(&self->hdr);
    size_t n = zmq_msg_size(&self->hdr);
    if (n_frames == 0 || n == 0)
        return WIRE_REFUSED_NO_HEADER;
    if (n > WIRE_MAX_HEADER_BYTES) {
        uint64_t ver, id;
        if (s_scan_ids(p, n, &ver, &id)) {
            *request_id = id;
            *version = ver;
            if (ver != WIRE_PROTOCOL_VERSION)
                return WIRE_REFUSED_VERSION;
        }
        return WIRE_REFUSED_TOO_BIG;
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
        return WIRE_REFUSED_VERSION;
    }
    if (self->arena.exhausted) {
        if (scanned)
            *request_id = id;
        return WIRE_REFUSED_EXHAUSTED;
    }
    return WIRE_REFUSED_UNDECODABLE;
}

/* Why s_open refused a message whose header frame is `what` ("header",
 * "request"), as one sentence into buf. Returns -1 for S_OPEN_NOMEM (a local
 * failure, not the sender's fault), else 0. */
static int s_open_why(const wire_inbox_t *self, s_open_t opened, const char *what,
                      uint64_t version, char *buf, size_t n)
{
    switch (opened) {
    case WIRE_REFUSED_IDENTITY:
        snprintf(buf, n, "the identity frame is empty or longer than %d bytes",
                 WIRE_MAX_IDENTITY);
        break;
    case WIRE_REFUSED_NO_HEADER:
        snprintf(buf, n, "the message has no %s frame", what);
        break;
    case WIRE_REFUSED_TOO_BIG:
        snprintf(buf, n, "the %s frame is over %d bytes", what, WIRE_MAX_HEADER_BYTES);
        break;
    case WIRE_REFUSED_UNDECODABLE:
        snprintf(buf, n, "the %s does not decode", what);
        break;
    case WIRE_REFUSED_EXHAUSTED:
        snprintf(buf, n, "the %s needs more than the %zu bytes the limits allow", what,
                 self->arena.cap);
        break;
    case WIRE_REFUSED_VERSION:
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

int wire_bad(int *code, int c, err_t *err, const char *fmt, ...)
{
    char text[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    *code = c;
    return err_set(err, EPROTO, "%s", text);
}

/* Decodes the message of codec c whose frames s_recv_all or s_load put in the
 * inbox: every receive of every protocol ends here. */
static int s_decode(const wire_codec_t *c, wire_inbox_t *self, int n_frames,
                    bool bad_identity, void *msg, int *code, err_t *err)
{
    memset(msg, 0, c->msg_size);
    *code = 0;

    void *m;
    uint64_t id, version;
    int rc = -1;
    bool grows;
    c->arena_bytes(&self->lim, &grows);
    s_open_t opened = s_open(self, c->desc, n_frames, bad_identity, grows, &m, &id, &version);
    if (opened != S_OPEN_OK) {
        char why[256];
        if (s_open_why(self, opened, c->what, version, why, sizeof why) < 0)
            rc = err_set(err, ENOMEM, "%s", why);
        else
            rc = wire_bad(code, c->refused[opened], err, "%s", why);
        goto done;
    }
    uint32_t v;
    memcpy(&id, (const char *)m + c->id_at, sizeof id);
    memcpy(&v, (const char *)m + c->version_at, sizeof v);
    if (v != WIRE_PROTOCOL_VERSION) {
        rc = wire_bad(code, c->refused[WIRE_REFUSED_VERSION], err,
                      "protocol version %u, not %d", v, WIRE_PROTOCOL_VERSION);
        goto done;
    }
    rc = c->fill(self, m, n_frames, msg, code, err);

done:
    if (rc < 0) {
        int saved = errno;
        memset(msg, 0, c->msg_size);
        errno = saved;
    }
    memcpy((char *)msg + c->msg_id_at, &id, sizeof id);
    return rc;
}

int wire_codec_recv(const wire_codec_t *c, wire_inbox_t *self, void *socket,
                    bool with_identity, wire_peer_t *from, void *msg, int *code, err_t *err)
{
    assert(c);
    assert(self);
    assert(socket);
    assert(msg);
    assert(code);
    int n_frames = 0;
    bool bad_identity = false;
    if (s_recv_all(self, socket, with_identity, from, &n_frames, &bad_identity, err) < 0)
        return -1;
    return s_decode(c, self, n_frames, bad_identity, msg, code, err);
}

int wire_codec_decode(const wire_codec_t *c, wire_inbox_t *self, const wire_frame_t *frames,
                      int n_frames, void *msg, int *code, err_t *err)
{
    assert(c);
    assert(self);
    assert(frames || n_frames == 0);
    assert(msg);
    assert(code);
    if (s_load(self, frames, n_frames, err) < 0)
        return -1;
    return s_decode(c, self, n_frames, false, msg, code, err);
}

/* ---- texts -------------------------------------------------------------------------------- */

int wire_text_len(const char *s)
{
    size_t n = strnlen(s, WIRE_MAX_TEXT);
    return n < WIRE_MAX_TEXT ? (int)n : -1;
}

const char *wire_clip(const char *s, char buf[WIRE_MAX_TEXT])
{
    if (!s)
        return "";
    if (wire_text_len(s) >= 0)
        return s;
    size_t n = WIRE_MAX_TEXT - 1;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
        n--;  /* s[n] would start the cut: back off to a lead byte */
    memcpy(buf, s, n);
    buf[n] = '\0';
    return buf;
}

/* ---- sending ------------------------------------------------------------------------------ */

int wire_send(void *socket, const wire_peer_t *to, const ProtobufCMessage *m,
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

size_t wire_send_tensor_bytes(int n_rows, int width, const float *data)
{
    if (n_rows <= 0 || width <= 0 || !data ||
        (uint64_t)n_rows * (uint64_t)width > WIRE_MAX_TENSOR_FLOATS)
        return 0;
    return (size_t)n_rows * (size_t)width * sizeof(float);
}

/* ===== limits ============================================================================ */

wire_limits_t wire_limits_for_model(const config_t *cfg, int max_rows)
{
    assert(cfg);
    return (wire_limits_t){.hidden = cfg->hidden_size, .max_rows = max_rows,
                           .max_assign = max_rows * cfg->n_experts_per_tok,
                           .n_layers = cfg->n_layers, .n_experts = cfg->n_experts};
}

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
    /* float32 is the largest format (wire_tensor.h) but for rows of one
     * value, which fp8 sends as 5 bytes: the value and its block's scale. */
    uint64_t data = wire_tensor_floats(lim->max_rows, lim->hidden) *
                    (lim->hidden == 1 ? wire_tensor_row_bytes(WIRE_TENSOR_FP8, 1)
                                      : sizeof(float));
    uint64_t logits = wire_tensor_floats(lim->max_logit_rows, lim->vocab) * sizeof(float);
    uint64_t tensor = data > logits ? data : logits;
    return (int64_t)WIRE_MAX_HEADER_BYTES + (int64_t)tensor;
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
