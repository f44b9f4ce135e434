/* test_client: the client library and the moe-client program against a fake
 * coordinator.
 *
 * The fake runs in a thread of this process: a ROUTER bound to
 * tcp://127.0.0.1:* that answers with wire_reply_send. It reports every
 * request it receives on an inproc PAIR (an "event") and stops when told so on
 * the same pair. What it answers depends on the request: prompt[0] picks a
 * script (SC_*), anything else gets a well-formed answer computed from the
 * prompt (s_token, s_logit), which the tests compute again. Each test starts
 * its own fake and joins its thread in teardown; every wait is bounded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "client/client.h"
#include "core/idlist.h"
#include "core/mem.h"
#include "core/timer.h"
#include "proto/client_rpc.h"
#include "tests/testutil.h"

/* ---- the fake coordinator ---------------------------------------------------- */

enum {
    FAKE_VOCAB = 32,
    FAKE_CHUNK = 3,          /* tokens per TOKENS reply */
    FAKE_LIFETIME_S = 120,   /* a fake never outlives this, whatever the test does */
    FAKE_SLOW_GAP_MS = 150,  /* SC_SLOW: pause between two replies */
    WAIT_MS = 5000,          /* the tests' bound for a client call that must succeed */
};

/* Scripts, chosen by prompt[0]. */
enum {
    SC_ERROR = 900000,       /* + code: ERROR_REPLY with that code */
    SC_STALE = 900100,       /* replies to other request ids first, then the answer */
    SC_SILENT = 900101,      /* no reply at all */
    SC_MALFORMED = 900102,   /* raw bytes that are no Reply */
    SC_WRONG_TYPE = 900103,  /* a STATUS_DATA reply to GENERATE */
    SC_TOO_MANY = 900104,    /* one token more than max_tokens */
    SC_WAIT_CANCEL = 900105, /* one chunk, then CANCELLED once CANCEL arrives */
    SC_SLOW = 900106,        /* one token per reply, FAKE_SLOW_GAP_MS apart */
    SC_SHORT_LOGITS = 900107,/* logits with one row too few */
    SC_BAD_STALE = 900108,   /* an undecodable-type reply to another id, then the answer */
    SC_BAD_OWN = 900109,     /* an undecodable-type reply to this request */
    SC_ERROR_ID0 = 900110,   /* MALFORMED with request_id 0 ("could not read it") */
};

typedef struct fake_event {
    wire_request_type_t type;
    uint64_t request_id;
    uint64_t cancel_id;
    int n_prompt;
    int max_tokens;
} fake_event_t;

typedef struct fake {
    void *ctx;              /* the fake's context (the client has its own) */
    void *router;           /* bound ROUTER; the fake thread's after start */
    void *pipe;             /* main thread's end of the event/stop pair */
    void *pipe_fake;        /* fake thread's end */
    char endpoint[256];     /* tcp://127.0.0.1:port */
    pthread_t thread;
    bool started;
    wire_inbox_t *inbox;    /* fake thread's */
    uint64_t wait_cancel;   /* fake thread's: SC_WAIT_CANCEL request, 0 if none */
} fake_t;

static int32_t s_token(const int32_t *prompt, int n_prompt, int i)
{
    int64_t sum = 0;
    for (int j = 0; j < n_prompt; j++)
        sum += prompt[j];
    return (int32_t)((sum * 31 + 7 * i) % 1000);
}

static float s_logit(int32_t id, int row, int v)
{
    return (float)id * 0.5f + (float)row * 100.0f + (float)v * 0.25f - 3.0f;
}

static void s_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void s_send_tokens(fake_t *f, const wire_peer_t *to, uint64_t id,
                          const int32_t *tokens, int n, bool final)
{
    wire_reply_t rep = {.type = WIRE_REP_TOKENS, .request_id = id, .n_tokens = n,
                        .tokens = tokens, .final = final};
    if (final) {
        rep.prompt_tokens = 3;
        rep.generated_tokens = n;
        rep.seconds = 0.25;
    }
    wire_reply_send(f->router, to, &rep, NULL);
}

static void s_send_status(fake_t *f, const wire_peer_t *to, uint64_t id)
{
    static const int32_t layer1[] = {0, 0, 1, 1}, expert1[] = {0, 2, 0, 2};
    static const int32_t layer2[] = {0, 0, 1, 1}, expert2[] = {1, 3, 1, 3};
    static const uint64_t counts[] = {100, 101, 102, 103, 110, 111, 112, 113};
    const wire_node_status_t nodes[2] = {
        {.node_id = 1, .endpoint = "tcp://127.0.0.1:7001", .up = true, .n_hosted = 4,
         .hosted_layer = layer1, .hosted_expert = expert1, .batches = 42,
         .rtt_last_ms = 1.5, .rtt_mean_ms = 1.25, .last_error = ""},
        {.node_id = 2, .endpoint = "tcp://127.0.0.1:7002", .up = false, .n_hosted = 4,
         .hosted_layer = layer2, .hosted_expert = expert2, .batches = 7,
         .rtt_last_ms = 2.5, .rtt_mean_ms = 2.0, .last_error = "no heartbeat for 3 s"},
    };
    wire_reply_t rep = {.type = WIRE_REP_STATUS, .request_id = id,
                        .model = "fake-mixtral", .model_arch = "test", .n_nodes = 2,
                        .nodes = nodes, .n_layers = 2, .n_experts = 4, .expert_tokens = counts,
                        .requests_served = 17};
    wire_reply_send(f->router, to, &rep, NULL);
}

/* The scripts GENERATE and LOGITS share: an error reply, silence, junk.
 * true when the request is answered (or deliberately not). */
static bool s_answer_script(fake_t *f, const wire_peer_t *to, const wire_request_t *req)
{
    int32_t first = req->n_prompt > 0 ? req->prompt[0] : 0;
    if (first > SC_ERROR && first <= SC_ERROR + 8) {
        char msg[64];
        snprintf(msg, sizeof msg, "scripted failure %d", first - SC_ERROR);
        wire_reply_send_error(f->router, to, req->request_id,
                              (wire_client_error_t)(first - SC_ERROR), msg, NULL);
        return true;
    }
    if (first == SC_MALFORMED) {
        static const uint8_t junk[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
        zmq_send(f->router, to->id, to->len, ZMQ_SNDMORE);
        zmq_send(f->router, junk, sizeof junk, 0);
        return true;
    }
    return first == SC_SILENT;
}

/* A Reply in protobuf wire format, version 1 and request id `id`, but of
 * reply type 99: it decodes, and wire_reply_recv must refuse it. */
static void s_send_bad_type(fake_t *f, const wire_peer_t *to, uint64_t id)
{
    uint8_t bytes[16] = {0x08, 0x01, 0x10, 99, 0x18};
    size_t n = 5;
    do {
        bytes[n++] = (uint8_t)((id & 0x7f) | (id >= 0x80 ? 0x80 : 0));
        id >>= 7;
    } while (id);
    zmq_send(f->router, to->id, to->len, ZMQ_SNDMORE);
    zmq_send(f->router, bytes, n, 0);
}

static void s_answer_generate(fake_t *f, const wire_peer_t *to, const wire_request_t *req)
{
    int32_t out[1024];
    int n = req->max_tokens < 1023 ? req->max_tokens : 1023;
    for (int i = 0; i < n; i++)
        out[i] = s_token(req->prompt, req->n_prompt, i);
    int32_t first = req->n_prompt > 0 ? req->prompt[0] : 0;
    uint64_t id = req->request_id;

    if (s_answer_script(f, to, req))
        return;
    switch (first) {
    case SC_WRONG_TYPE:
        s_send_status(f, to, id);
        return;
    case SC_BAD_OWN:
        s_send_bad_type(f, to, id);
        return;
    case SC_ERROR_ID0:
        wire_reply_send_error(f->router, to, 0, WIRE_CLIENT_MALFORMED, "unreadable", NULL);
        return;
    case SC_BAD_STALE:
        s_send_bad_type(f, to, id + 1);
        break; /* then the real answer */
    case SC_TOO_MANY:
        out[n] = 1;
        s_send_tokens(f, to, id, out, n + 1, true);
        return;
    case SC_WAIT_CANCEL:
        s_send_tokens(f, to, id, out, 1, false);
        f->wait_cancel = id;
        return;
    case SC_SLOW:
        for (int i = 0; i < n; i++) {
            if (i)
                s_sleep_ms(FAKE_SLOW_GAP_MS);
            s_send_tokens(f, to, id, &out[i], 1, i + 1 == n);
        }
        return;
    case SC_STALE: {
        static const int32_t bad[] = {666};
        s_send_tokens(f, to, id - 1, bad, 1, true);
        s_send_tokens(f, to, id + 1, bad, 1, true);
        wire_reply_send_error(f->router, to, id + 7, WIRE_CLIENT_INTERNAL, "stale", NULL);
        s_send_status(f, to, id + 100);
        break; /* then the real answer */
    }
    default:
        break;
    }
    if (n == 0) {
        s_send_tokens(f, to, id, out, 0, true);
        return;
    }
    for (int i = 0; i < n; i += FAKE_CHUNK) {
        int k = n - i < FAKE_CHUNK ? n - i : FAKE_CHUNK;
        s_send_tokens(f, to, id, out + i, k, i + k == n);
    }
}

static void s_answer_logits(fake_t *f, const wire_peer_t *to, const wire_request_t *req)
{
    if (s_answer_script(f, to, req))
        return;
    int rows = req->n_prompt;
    if (rows > 0 && req->prompt[0] == SC_SHORT_LOGITS)
        rows--;
    float *x = malloc((size_t)(rows > 0 ? rows : 1) * FAKE_VOCAB * sizeof *x);
    if (!x)
        return;
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < FAKE_VOCAB; v++)
            x[r * FAKE_VOCAB + v] = s_logit(req->prompt[r], r, v);
    wire_reply_t rep = {.type = WIRE_REP_LOGITS, .request_id = req->request_id,
                        .rows = rows, .vocab = FAKE_VOCAB, .logits = x, .final = true};
    wire_reply_send(f->router, to, &rep, NULL);
    free(x);
}

static void s_answer(fake_t *f, const wire_peer_t *to, const wire_request_t *req)
{
    switch (req->type) {
    case WIRE_REQ_GENERATE: s_answer_generate(f, to, req); break;
    case WIRE_REQ_LOGITS: s_answer_logits(f, to, req); break;
    case WIRE_REQ_STATUS: s_send_status(f, to, req->request_id); break;
    case WIRE_REQ_REBALANCE:
    case WIRE_REQ_NODE_DRAIN:
    case WIRE_REQ_NODE_ADD: {
        /* A fake move: node 9 is unknown; the summary echoes the request. */
        if (req->type == WIRE_REQ_NODE_DRAIN && req->node_id == 9) {
            wire_reply_send_error(f->router, to, req->request_id, WIRE_CLIENT_INVALID_ARGUMENT,
                                  "no node 9 (nodes are 1..2)", NULL);
            break;
        }
        char summary[160];
        snprintf(summary, sizeof summary, "moved with %d redundant, drained %d, added %s",
                 req->redundant, req->node_id, req->endpoint ? req->endpoint : "-");
        wire_reply_t rep = {.type = WIRE_REP_REBALANCED, .request_id = req->request_id,
                            .final = true, .move_summary = summary,
                            .imbalance_before = 2.5, .imbalance_after = 1.0625,
                            .copies_loaded = 7, .copies_dropped = 5};
        wire_reply_send(f->router, to, &rep, NULL);
        break;
    }
    case WIRE_REQ_CANCEL:
        if (f->wait_cancel && req->cancel_id == f->wait_cancel) {
            wire_reply_send_error(f->router, to, f->wait_cancel, WIRE_CLIENT_CANCELLED,
                                  "request cancelled by the client", NULL);
            f->wait_cancel = 0;
        }
        break;
    }
}

static void *s_fake_main(void *arg)
{
    fake_t *f = arg;
    const double deadline = timer_now() + FAKE_LIFETIME_S;
    while (timer_now() < deadline) {
        zmq_pollitem_t items[2] = {{.socket = f->router, .events = ZMQ_POLLIN},
                                   {.socket = f->pipe_fake, .events = ZMQ_POLLIN}};
        if (zmq_poll(items, 2, 100) < 0 && errno != EINTR)
            break;
        if (items[1].revents & ZMQ_POLLIN)
            break; /* stop */
        if (!(items[0].revents & ZMQ_POLLIN))
            continue;
        wire_peer_t from;
        wire_request_t req;
        wire_client_error_t code = WIRE_CLIENT_OK;
        err_t e = {0};
        if (wire_request_recv(f->inbox, f->router, &from, &req, &code, &e) < 0) {
            if (errno == EPROTO)
                wire_reply_send_error(f->router, &from, req.request_id, code, e.msg, NULL);
            continue;
        }
        fake_event_t ev = {.type = req.type, .request_id = req.request_id,
                           .cancel_id = req.cancel_id, .n_prompt = req.n_prompt,
                           .max_tokens = req.max_tokens};
        zmq_send(f->pipe_fake, &ev, sizeof ev, ZMQ_DONTWAIT);
        s_answer(f, &from, &req);
    }
    zmq_close(f->router);
    zmq_close(f->pipe_fake);
    return NULL;
}

static void s_fake_stop(fake_t *f)
{
    if (!f)
        return;
    if (f->started) {
        zmq_send(f->pipe, "STOP", 4, ZMQ_DONTWAIT);
        pthread_join(f->thread, NULL);
    } else {
        if (f->router)
            zmq_close(f->router);
        if (f->pipe_fake)
            zmq_close(f->pipe_fake);
    }
    if (f->pipe)
        zmq_close(f->pipe);
    if (f->ctx)
        zmq_ctx_term(f->ctx);
    wire_inbox_destroy(&f->inbox);
    free(f);
}

static fake_t *s_fake_start(void)
{
    fake_t *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    /* No vocab: the scripts' prompt ids are out of any vocabulary. */
    wire_limits_t lim = {.max_prompt = 4096};
    int zero = 0, timeout = 1000;
    size_t len = sizeof f->endpoint;
    char inproc[64];
    snprintf(inproc, sizeof inproc, "inproc://fake-%p", (void *)f);
    f->inbox = wire_inbox_new(&lim, NULL);
    f->ctx = zmq_ctx_new();
    if (!f->inbox || !f->ctx)
        goto fail;
    f->router = zmq_socket(f->ctx, ZMQ_ROUTER);
    f->pipe = zmq_socket(f->ctx, ZMQ_PAIR);
    f->pipe_fake = zmq_socket(f->ctx, ZMQ_PAIR);
    if (!f->router || !f->pipe || !f->pipe_fake)
        goto fail;
    zmq_setsockopt(f->router, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(f->router, ZMQ_SNDTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(f->pipe, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(f->pipe_fake, ZMQ_LINGER, &zero, sizeof zero);
    if (wire_socket_set_limit(f->router, &lim, NULL) < 0 ||
        zmq_bind(f->router, "tcp://127.0.0.1:*") < 0 ||
        zmq_getsockopt(f->router, ZMQ_LAST_ENDPOINT, f->endpoint, &len) < 0 ||
        zmq_bind(f->pipe_fake, inproc) < 0 || zmq_connect(f->pipe, inproc) < 0)
        goto fail;
    /* From here the ROUTER and pipe_fake belong to the fake thread. */
    if (pthread_create(&f->thread, NULL, s_fake_main, f) != 0)
        goto fail;
    f->started = true;
    return f;

fail:
    s_fake_stop(f);
    return NULL;
}

/* The next event of the fake within timeout_ms: 0, or -1 when none came. */
static int s_fake_event(fake_t *f, int timeout_ms, fake_event_t *ev)
{
    zmq_pollitem_t item = {.socket = f->pipe, .events = ZMQ_POLLIN};
    if (zmq_poll(&item, 1, timeout_ms) <= 0)
        return -1;
    return zmq_recv(f->pipe, ev, sizeof *ev, ZMQ_DONTWAIT) == (int)sizeof *ev ? 0 : -1;
}

/* Waits for an event of the given type; -1 when none came within timeout_ms. */
static int s_fake_expect(fake_t *f, wire_request_type_t type, int timeout_ms,
                         fake_event_t *ev)
{
    const double deadline = timer_now() + timeout_ms / 1000.0;
    for (;;) {
        int left = (int)((deadline - timer_now()) * 1000.0);
        if (left <= 0 || s_fake_event(f, left, ev) < 0)
            return -1;
        if (ev->type == type)
            return 0;
    }
}

static int s_setup(void **state)
{
    fake_t *f = s_fake_start();
    *state = f;
    return f ? 0 : -1;
}

static int s_teardown(void **state)
{
    s_fake_stop(*state);
    *state = NULL;
    mem_fail_after(-1);
    return 0;
}

static client_t *s_client(const fake_t *f, int timeout_ms)
{
    err_t e = {0};
    client_t *c = client_connect(f->endpoint, timeout_ms, &e);
    if (!c)
        fail_msg("client_connect(%s): %s", f->endpoint, e.msg);
    return c;
}

/* ---- the library ---------------------------------------------------------------- */

typedef struct chunks {
    int calls;
    int n_total;
    bool saw_final;
    bool final_last;        /* final was set on the last call only */
    int stop_after;         /* return non-zero on this call (0: never) */
    client_t *cancel_from;  /* call client_cancel on the first call */
    client_t *nest_from;    /* try a request from inside the callback */
} chunks_t;

static int s_on_chunk(const client_chunk_t *chunk, void *arg)
{
    chunks_t *c = arg;
    c->calls++;
    c->final_last = !c->saw_final;
    c->saw_final = c->saw_final || chunk->final;
    c->n_total = chunk->n_total;
    if (c->cancel_from && c->calls == 1) {
        assert_int_equal(chunk->request_id, client_last_request_id(c->cancel_from));
        assert_int_equal(client_cancel(c->cancel_from, chunk->request_id, NULL), 0);
    }
    if (c->nest_from) {
        err_t e = {0};
        assert_null(client_status(c->nest_from, &e));
        assert_int_equal(errno, EINVAL);
    }
    return c->stop_after && c->calls == c->stop_after;
}

static void test_connect_rejects_bad_arguments(void **state)
{
    fake_t *f = *state;
    err_t e = {0};
    assert_null(client_connect(NULL, 1000, &e));
    assert_int_equal(errno, EINVAL);
    assert_null(client_connect("", 1000, &e));
    assert_int_equal(errno, EINVAL);
    assert_null(client_connect("not-an-endpoint", 1000, &e));
    assert_int_equal(errno, EINVAL);
    assert_non_null(strstr(e.msg, "not-an-endpoint"));
    assert_null(client_connect(f->endpoint, 0, &e));
    assert_int_equal(errno, EINVAL);
    assert_non_null(strstr(e.msg, "timeout"));

    client_t *c = s_client(f, 1000);
    assert_string_equal(client_endpoint(c), f->endpoint);
    assert_int_equal(client_last_request_id(c), 0);
    client_destroy(&c);
    assert_null(c);
    client_destroy(&c);
    client_destroy(NULL);
}

static void test_connect_out_of_memory(void **state)
{
    fake_t *f = *state;
    for (long n = 1; n < 64; n++) {
        err_t e = {0};
        mem_fail_after(n);
        client_t *c = client_connect(f->endpoint, 1000, &e);
        int saved = errno;
        mem_fail_after(-1);
        if (c) {
            client_destroy(&c);
            assert_true(n > 1);
            return;
        }
        assert_int_equal(saved, ENOMEM);
    }
    fail_msg("client_connect never succeeded");
}

static void test_generate_collects_chunks(void **state)
{
    fake_t *f = *state;
    client_t *c = s_client(f, WAIT_MS);
    const int32_t prompt[] = {5, 17, 2};
    for (int max = 0; max <= 8; max += 4) {
        int32_t *tokens = NULL;
        int n = -1;
        chunks_t seen = {.nest_from = c};
        err_t e = {0};
        if (client_generate(c, prompt, 3, max, s_on_chunk, &seen, &tokens, &n, &e) < 0)
            fail_msg("client_generate: %s", e.msg);
        assert_non_null(tokens);
        assert_int_equal(n, max);
        for (int i = 0; i < n; i++)
            assert_int_equal(tokens[i], s_token(prompt, 3, i));
        assert_int_equal(seen.calls, max ? (max + FAKE_CHUNK - 1) / FAKE_CHUNK : 1);
        assert_true(seen.saw_final && seen.final_last);
        assert_int_equal(seen.n_total, max);
        mem_free(tokens);
    }
    /* Without a callback. */
    int32_t *tokens = NULL;
    int n = 0;
    assert_int_equal(client_generate(c, prompt, 3, 7, NULL, NULL, &tokens, &n, NULL), 0);
    assert_int_equal(n, 7);
    assert_int_equal(tokens[6], s_token(prompt, 3, 6));
    mem_free(tokens);
    client_destroy(&c);
}

static void test_generate_rejects_bad_arguments(void **state)
{
    fake_t *f = *state;
    client_t *c = s_client(f, WAIT_MS);
    const int32_t prompt[] = {1};
    int32_t *tokens = (int32_t *)prompt;
    int n = 5;
    err_t e = {0};
    assert_int_equal(client_generate(c, prompt, 0, 3, NULL, NULL, &tokens, &n, &e), -1);
    assert_int_equal(errno, EINVAL);
    assert_null(tokens);
    assert_int_equal(n, 0);
    assert_int_equal(client_generate(c, NULL, 1, 3, NULL, NULL, &tokens, &n, &e), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(client_generate(c, prompt, 1, -1, NULL, NULL, &tokens, &n, &e), -1);
    assert_int_equal(errno, EINVAL);
    float *logits = (float *)prompt;
    int rows = 1, vocab = 1;
    assert_int_equal(client_logits(c, prompt, 0, &logits, &rows, &vocab, &e), -1);
    assert_int_equal(errno, EINVAL);
    assert_null(logits);

    /* Out of memory before anything is sent: no side effect. */
    mem_fail_after(1);
    assert_int_equal(client_generate(c, prompt, 1, 3, NULL, NULL, &tokens, &n, &e), -1);
    int saved = errno;
    mem_fail_after(-1);
    assert_int_equal(saved, ENOMEM);
    fake_event_t ev;
    assert_int_equal(s_fake_event(f, 200, &ev), -1);
    assert_int_equal(client_last_request_id(c), 0);
    client_destroy(&c);
}

static void test_request_ids_increase(void **state)
{
    fake_t *f = *state;
    client_t *c = s_client(f, WAIT_MS);
    const int32_t prompt[] = {4, 5};
    int32_t *tokens = NULL;
    int n = 0;
    uint64_t last = 0;
    for (int i = 0; i < 4; i++) {
        if (i % 2) {
            client_status_t *st = client_status(c, NULL);
            assert_non_null(st);
            client_status_destroy(&st);
        } else {
            assert_int_equal(client_generate(c, prompt, 2, 2, NULL, NULL, &tokens, &n, NULL),
                             0);
            mem_free(tokens);
        }
        fake_event_t ev;
        assert_int_equal(s_fake_event(f, WAIT_MS, &ev), 0);
        assert_true(ev.request_id > last);
        assert_int_equal(ev.request_id, client_last_request_id(c));
        if (i == 0) {
            assert_int_equal(ev.request_id, 1);
            assert_int_equal(ev.type, WIRE_REQ_GENERATE);
            assert_int_equal(ev.n_prompt, 2);
            assert_int_equal(ev.max_tokens, 2);
        }
        last = ev.request_id;
    }
    client_destroy(&c);
}

static void test_logits(void **state)
{
    fake_t *f = *state;
    client_t *c = s_client(f, WAIT_MS);
    const int32_t prompt[] = {5, 17, 2, 40};
    float *logits = NULL;
    int rows = 0, vocab = 0;
    err_t e = {0};
    if (client_logits(c, prompt, 4, &logits, &rows, &vocab, &e) < 0)
        fail_msg("client_logits: %s", e.msg);
    assert_int_equal(rows, 4);
    assert_int_equal(vocab, FAKE_VOCAB);
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < vocab; v++)
            assert_true(logits[r * vocab + v] == s_logit(prompt[r], r, v));
    mem_free(logits);

    /* A reply with the wrong row count is a protocol error. */
    const int32_t short_prompt[] = {SC_SHORT_LOGITS, 1, 2};
    assert_int_equal(client_logits(c, short_prompt, 3, &logits, &rows, &vocab, &e), -1);
    assert_int_equal(errno, EPROTO);
    assert_null(logits);
    assert_int_equal(rows, 0);
    assert_int_equal(vocab, 0);
    client_destroy(&c);
}

static void test_status(void **state)
{
    fake_t *f = *state;
    client_t *c = s_client(f, WAIT_MS);
    err_t e = {0};
    client_status_t *st = client_status(c, &e);
    if (!st)
        fail_msg("client_status: %s", e.msg);
    assert_string_equal(st->model, "fake-mixtral");
    assert_string_equal(st->model_arch, "test");
    assert_int_equal(st->n_layers, 2);
    assert_int_equal(st->n_experts, 4);
    assert_int_equal(st->requests_served, 17);
    for (int i = 0; i < 8; i++)
        assert_int_equal(st->expert_tokens[i], 100 + (i / 4) * 10 + i % 4);
    assert_int_equal(st->n_nodes, 2);
    const client_node_t *a = &st->nodes[0], *b = &st->nodes[1];
    assert_int_equal(a->node_id, 1);
    assert_true(a->up);
    assert_string_equal(a->endpoint, "tcp://127.0.0.1:7001");
    assert_int_equal(a->n_hosted, 4);
    assert_int_equal(a->hosted[1].layer, 0);
    assert_int_equal(a->hosted[1].expert, 2);
    assert_int_equal(a->batches, 42);
    assert_true(a->rtt_last_ms == 1.5 && a->rtt_mean_ms == 1.25);
    assert_string_equal(a->last_error, "");
    assert_int_equal(b->node_id, 2);
    assert_false(b->up);
    assert_int_equal(b->hosted[3].layer, 1);
    assert_int_equal(b->hosted[3].expert, 3);
    assert_string_equal(b->last_error, "no heartbeat for 3 s");

    /* The copy does not depend on the client's buffers. */
    client_destroy(&c);
    assert_string_equal(st->nodes[1].endpoint, "tcp://127.0.0.1:7002");
    client_status_destroy(&st);
    assert_null(st);
    client_status_destroy(&st);
    client_status_destroy(NULL);
}

/* client_rebalance: REBALANCE and NODE_DRAIN travel with their fields; the
 * REBALANCED reply comes back whole; an unknown node is EINVAL with the
 * coordinator's words; bad arguments never leave the client. */
static void test_rebalance(void **state)
{
    fake_t *f = *state;
    client_t *c = s_client(f, WAIT_MS);
    err_t e = {0};
    client_move_t m;
    if (client_rebalance(c, 2, 0, &m, &e) < 0)
        fail_msg("client_rebalance: %s", e.msg);
    assert_string_equal(m.summary, "moved with 2 redundant, drained 0, added -");
    assert_true(m.imbalance_before == 2.5 && m.imbalance_after == 1.0625);
    assert_int_equal(m.copies_loaded, 7);
    assert_int_equal(m.copies_dropped, 5);
    assert_int_equal(client_rebalance(c, 0, 2, &m, &e), 0);
    assert_string_equal(m.summary, "moved with 0 redundant, drained 2, added -");
    assert_int_equal(client_node_add(c, "tcp://127.0.0.1:7009", 1, &m, &e), 0);
    assert_string_equal(m.summary, "moved with 1 redundant, drained 0, added "
                                   "tcp://127.0.0.1:7009");
    assert_int_equal(client_node_add(c, "", 1, &m, &e), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(client_rebalance(c, 0, 9, &m, &e), -1);
    assert_int_equal(errno, EINVAL);
    assert_non_null(strstr(e.msg, "no node 9"));
    assert_int_equal(client_rebalance(c, -1, 0, &m, &e), -1);
    assert_int_equal(errno, EINVAL);
    client_destroy(&c);
}

static void test_error_replies_map_to_errno(void **state)
{
    static const struct {
        wire_client_error_t code;
        int errnum;
    } cases[] = {
        {WIRE_CLIENT_VERSION_MISMATCH, EPROTO}, {WIRE_CLIENT_MALFORMED, EIO},
        {WIRE_CLIENT_INVALID_ARGUMENT, EINVAL}, {WIRE_CLIENT_BUSY, EBUSY},
        {WIRE_CLIENT_UNAVAILABLE, EHOSTUNREACH}, {WIRE_CLIENT_INTERNAL, EIO},
        {WIRE_CLIENT_CANCELLED, ECANCELED}, {WIRE_CLIENT_DEADLINE_EXCEEDED, ETIMEDOUT},
    };
    fake_t *f = *state;
    client_t *c = s_client(f, WAIT_MS);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t prompt[] = {SC_ERROR + (int32_t)cases[i].code, 1};
        int32_t *tokens = NULL;
        int n = 0;
        err_t e = {0};
        char want[256];
        snprintf(want, sizeof want, "%s: scripted failure %d",
                 wire_client_error_name(cases[i].code), (int)cases[i].code);
        assert_int_equal(client_generate(c, prompt, 2, 4, NULL, NULL, &tokens, &n, &e), -1);
        assert_int_equal(errno, cases[i].errnum);
        assert_int_equal(e.code, cases[i].errnum);
        assert_string_equal(e.msg, want);
        assert_null(tokens);
    }
    /* An error about a request the coordinator could not read (id 0). */
    const int32_t id0[] = {SC_ERROR_ID0};
    int32_t *tokens = NULL;
    int n = 0;
    err_t e = {0};
    assert_int_equal(client_generate(c, id0, 1, 4, NULL, NULL, &tokens, &n, &e), -1);
    assert_int_equal(errno, EIO);
    char want[128];
    snprintf(want, sizeof want, "%s: unreadable",
             wire_client_error_name(WIRE_CLIENT_MALFORMED));
    assert_string_equal(e.msg, want);
    client_destroy(&c);
}

static void test_stale_replies_are_ignored(void **state)
{
    fake_t *f = *state;
    client_t *c = s_client(f, WAIT_MS);
    const int32_t prompt[] = {SC_STALE, 3};
    int32_t *tokens = NULL;
    int n = 0;
    err_t e = {0};
    for (int round = 0; round < 2; round++) {
        if (client_generate(c, prompt, 2, 5, NULL, NULL, &tokens, &n, &e) < 0)
            fail_msg("client_generate: %s", e.msg);
        assert_int_equal(n, 5);
        for (int i = 0; i < n; i++)
            assert_int_equal(tokens[i], s_token(prompt, 2, i));
        mem_free(tokens);
    }
    client_destroy(&c);
}

/* client_generate fails with ETIMEDOUT and message want, no sooner than the
 * client's 300 ms; returns how long it took. */
static double s_expect_timeout(client_t *c, const int32_t *prompt, int n_prompt,
                               int max_tokens, const char *want)
{
    int32_t *tokens = NULL;
    int n = 0;
    err_t e = {0};
    double t0 = timer_now();
    assert_int_equal(client_generate(c, prompt, n_prompt, max_tokens, NULL, NULL, &tokens, &n,
                                     &e), -1);
    double took = timer_now() - t0;
    assert_int_equal(errno, ETIMEDOUT);
    assert_string_equal(e.msg, want);
    assert_null(tokens);
    assert_true(took >= 0.29);
    return took;
}

static void test_no_reply_times_out(void **state)
{
    fake_t *f = *state;
    client_t *c = s_client(f, 300);
    const int32_t prompt[] = {SC_SILENT};
    char want[512];
    snprintf(want, sizeof want, "no reply from %s within 0.3 s", f->endpoint);
    assert_true(s_expect_timeout(c, prompt, 1, 4, want) < 1.5);
    err_t e = {0};

    /* The client told the coordinator it gave up. */
    fake_event_t gen, cancel;
    assert_int_equal(s_fake_expect(f, WIRE_REQ_GENERATE, WAIT_MS, &gen), 0);
    assert_int_equal(s_fake_expect(f, WIRE_REQ_CANCEL, WAIT_MS, &cancel), 0);
    assert_int_equal(cancel.cancel_id, gen.request_id);
    assert_true(cancel.request_id > gen.request_id);

    /* Logits and status time out the same way; the client stays usable. */
    float *logits = NULL;
    int rows = 0, vocab = 0;
    assert_int_equal(client_logits(c, prompt, 1, &logits, &rows, &vocab, &e), -1);
    assert_int_equal(errno, ETIMEDOUT);
    client_status_t *st = client_status(c, &e);
    assert_non_null(st);
    client_status_destroy(&st);
    client_destroy(&c);
}

/* The timeout bounds the whole request, not each reply: a stream whose
 * replies each come well within it still ends at it. */
static void test_timeout_bounds_the_whole_request(void **state)
{
    fake_t *f = *state;
    client_t *c = s_client(f, 300);
    const int32_t prompt[] = {SC_SLOW, 8};
    char want[512];
    snprintf(want, sizeof want, "%s did not finish the request within 0.3 s", f->endpoint);
    /* 8 replies FAKE_SLOW_GAP_MS (< 300 ms) apart: 1.2 s in all */
    assert_true(s_expect_timeout(c, prompt, 2, 8, want) < 0.6);
    client_destroy(&c);
}

/* A port that is bound but not listening: every connection is refused. The
 * socket is the caller's to close; its port in endpoint. */
static int s_refusing_port(char *endpoint, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    snprintf(endpoint, size, "tcp://127.0.0.1:%d", ntohs(addr.sin_port));
    return fd;
}

/* Nothing listening fails in about a second whatever the timeout, naming
 * the cause; every request does. */
static void test_nothing_listening_fails_fast(void **state)
{
    (void)state;
    char endpoint[64];
    int fd = s_refusing_port(endpoint, sizeof endpoint);
    err_t e = {0};
    client_t *c = client_connect(endpoint, 30000, &e);
    assert_non_null(c);
    for (int i = 0; i < 2; i++) {
        double t0 = timer_now();
        client_status_t *st = client_status(c, &e);
        double took = timer_now() - t0;
        assert_null(st);
        assert_int_equal(errno, ECONNREFUSED);
        char want[256];
        snprintf(want, sizeof want, "nothing is listening at %s", endpoint);
        assert_non_null(strstr(e.msg, want));
        assert_true(took >= 0.9 && took < 3.0);
        if (i == 0)
            printf("  nothing listening at %s: reported after %.2f s\n", endpoint, took);
    }
    int32_t prompt[] = {1};
    int32_t *tokens = NULL;
    int n = 0;
    assert_int_equal(client_generate(c, prompt, 1, 4, NULL, NULL, &tokens, &n, &e), -1);
    assert_int_equal(errno, ECONNREFUSED);
    client_destroy(&c);
    close(fd);
}

/* "host:port" is "tcp://host:port". */
static void test_host_port_endpoint(void **state)
{
    fake_t *f = *state;
    err_t e = {0};
    assert_int_equal(strncmp(f->endpoint, "tcp://", 6), 0);
    client_t *c = client_connect(f->endpoint + 6, 5000, &e);
    if (!c)
        fail_msg("client_connect(%s): %s", f->endpoint + 6, e.msg);
    client_status_t *st = client_status(c, &e);
    if (!st)
        fail_msg("client_status: %s", e.msg);
    client_status_destroy(&st);
    client_destroy(&c);
    assert_null(client_connect("localhost", 5000, &e));
    assert_int_equal(errno, EINVAL);
    assert_non_null(strstr(e.msg, "tcp://HOST:PORT, HOST:PORT or [IPV6]:PORT"));
}

static void test_malformed_replies_are_protocol_errors(void **state)
{
    fake_t *f = *state;
    client_t *c = s_client(f, WAIT_MS);
    int32_t *tokens = NULL;
    int n = 0;
    err_t e = {0};
    const int32_t junk[] = {SC_MALFORMED}, wrong[] = {SC_WRONG_TYPE},
                  many[] = {SC_TOO_MANY};
    assert_int_equal(client_generate(c, junk, 1, 4, NULL, NULL, &tokens, &n, &e), -1);
    assert_int_equal(errno, EPROTO);
    assert_non_null(strstr(e.msg, f->endpoint));
    assert_int_equal(client_generate(c, wrong, 1, 4, NULL, NULL, &tokens, &n, &e), -1);
    assert_int_equal(errno, EPROTO);
    assert_int_equal(client_generate(c, many, 1, 4, NULL, NULL, &tokens, &n, &e), -1);
    assert_int_equal(errno, EPROTO);
    assert_null(tokens);
    const int32_t own[] = {SC_BAD_OWN};
    assert_int_equal(client_generate(c, own, 1, 4, NULL, NULL, &tokens, &n, &e), -1);
    assert_int_equal(errno, EPROTO);
    assert_non_null(strstr(e.msg, "malformed reply"));

    /* A bad reply that names another request is stale, not fatal. */
    const int32_t bad_stale[] = {SC_BAD_STALE};
    assert_int_equal(client_generate(c, bad_stale, 1, 4, NULL, NULL, &tokens, &n, &e), 0);
    assert_int_equal(n, 4);
    mem_free(tokens);

    /* Still usable afterwards. */
    const int32_t prompt[] = {9};
    assert_int_equal(client_generate(c, prompt, 1, 2, NULL, NULL, &tokens, &n, &e), 0);
    assert_int_equal(n, 2);
    mem_free(tokens);
    client_destroy(&c);
}

static void test_cancel(void **state)
{
    fake_t *f = *state;
    client_t *c = s_client(f, WAIT_MS);
    int32_t *tokens = NULL;
    int n = 0;
    err_t e = {0};

    /* client_cancel from the callback: the coordinator answers CANCELLED. */
    const int32_t wait[] = {SC_WAIT_CANCEL};
    chunks_t seen = {.cancel_from = c};
    assert_int_equal(client_generate(c, wait, 1, 4, s_on_chunk, &seen, &tokens, &n, &e), -1);
    assert_int_equal(errno, ECANCELED);
    assert_non_null(strstr(e.msg, wire_client_error_name(WIRE_CLIENT_CANCELLED)));
    assert_int_equal(seen.calls, 1);

    /* A callback that returns non-zero: the client sends CANCEL, stops at once. */
    const int32_t prompt[] = {3, 4};
    seen = (chunks_t){.stop_after = 1};
    assert_int_equal(client_generate(c, prompt, 2, 9, s_on_chunk, &seen, &tokens, &n, &e),
                     -1);
    assert_int_equal(errno, ECANCELED);
    assert_null(tokens);
    uint64_t stopped = client_last_request_id(c);
    fake_event_t ev;
    do {
        assert_int_equal(s_fake_expect(f, WIRE_REQ_CANCEL, WAIT_MS, &ev), 0);
    } while (ev.cancel_id != stopped);

    /* The rest of the cancelled stream is dropped by the next request. */
    assert_int_equal(client_generate(c, prompt, 2, 5, NULL, NULL, &tokens, &n, &e), 0);
    assert_int_equal(n, 5);
    assert_int_equal(tokens[4], s_token(prompt, 2, 4));
    mem_free(tokens);
    client_destroy(&c);
}

/* ---- the moe-client program ---------------------------------------------------- */

static char s_bin[512];
static char *s_tmp;

/* Runs moe-client with args, stderr to a file; returns the exit status and
 * how long it took. */
static int s_run(const char *args, char **out, char **errtext, double *seconds)
{
    double t0 = timer_now();
    int rc = testutil_run_program("timeout 30", s_bin, args, out, errtext);
    if (seconds)
        *seconds = timer_now() - t0;
    return rc;
}

/* Exits with code, and stderr is one line "moe-client: ..." containing needle. */
static void s_expect_error(const char *args, int code, const char *needle)
{
    testutil_expect_error("timeout 30", s_bin, args, code, needle);
}

static int s_cli_setup(void **state)
{
    snprintf(s_bin, sizeof s_bin, "%s/moe-client", testutil_env("MOE_BIN", "build/bin"));
    s_tmp = testutil_mkdtemp("test_client");
    return s_tmp ? s_setup(state) : -1;
}

static int s_cli_teardown(void **state)
{
    testutil_rmtree(s_tmp);
    free(s_tmp);
    s_tmp = NULL;
    return s_teardown(state);
}

static void test_cli_generate(void **state)
{
    fake_t *f = *state;
    const int32_t prompt[] = {5, 17, 2};
    int32_t want_ids[7];
    for (int i = 0; i < 7; i++)
        want_ids[i] = s_token(prompt, 3, i);
    char *want = idlist_format(want_ids, 7);
    char args[1024];
    char *out = NULL;

    snprintf(args, sizeof args, "--connect '%s' generate --prompt-ids 5,17,2 --max-tokens 7",
             f->endpoint);
    assert_int_equal(s_run(args, &out, NULL, NULL), 0);
    assert_string_equal(testutil_last_line(out), want);
    free(out);

    /* Options after the command, and no tokens: an empty last line. */
    snprintf(args, sizeof args, "generate --prompt-ids 5,17,2 --max-tokens 0 --connect '%s' "
             "--timeout 5", f->endpoint);
    assert_int_equal(s_run(args, &out, NULL, NULL), 0);
    assert_string_equal(out, "\n");
    free(out);
    mem_free(want);
}

static void test_cli_logits(void **state)
{
    fake_t *f = *state;
    const int32_t prompt[] = {5, 17, 2};
    char path[700], args[2048];
    snprintf(path, sizeof path, "%s/logits.f32", s_tmp);
    snprintf(args, sizeof args, "--connect '%s' logits --prompt-ids 5,17,2 --out '%s'",
             f->endpoint, path);
    assert_int_equal(s_run(args, NULL, NULL, NULL), 0);
    size_t n = 0;
    unsigned char *bytes = (unsigned char *)testutil_read_file(path, &n);
    assert_non_null(bytes);
    assert_int_equal(n, 3 * FAKE_VOCAB * sizeof(float));
    for (int r = 0; r < 3; r++)
        for (int v = 0; v < FAKE_VOCAB; v++) {
            const unsigned char *b = bytes + 4 * (r * FAKE_VOCAB + v);
            uint32_t bits = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                            (uint32_t)b[3] << 24;
            float x;
            memcpy(&x, &bits, sizeof x);
            assert_true(x == s_logit(prompt[r], r, v));
        }
    free(bytes);

    /* A failed request writes no file. */
    snprintf(path, sizeof path, "%s/none.f32", s_tmp);
    snprintf(args, sizeof args, "--connect '%s' logits --prompt-ids %d,1 --out '%s'",
             f->endpoint, SC_ERROR + WIRE_CLIENT_UNAVAILABLE, path);
    s_expect_error(args, 1, "scripted failure 5");
    assert_int_equal(access(path, F_OK), -1);
}

static void test_cli_status_json(void **state)
{
    fake_t *f = *state;
    char args[1024];
    char *out = NULL;
    snprintf(args, sizeof args, "--connect '%s' status --json", f->endpoint);
    assert_int_equal(s_run(args, &out, NULL, NULL), 0);
    json_error_t jerr;
    json_t *root = json_loads(out, 0, &jerr);
    if (!root)
        fail_msg("status --json is not JSON (%s): %s", jerr.text, out);
    free(out);
    /* The folder and the architecture are two fields. */
    assert_string_equal(json_string_value(json_object_get(root, "model_path")),
                        "fake-mixtral");
    assert_string_equal(json_string_value(json_object_get(root, "model_arch")), "test");
    assert_null(json_object_get(root, "model"));
    assert_int_equal(json_integer_value(json_object_get(root, "n_layers")), 2);
    assert_int_equal(json_integer_value(json_object_get(root, "n_experts")), 4);
    assert_int_equal(json_integer_value(json_object_get(root, "requests_served")), 17);
    json_t *nodes = json_object_get(root, "nodes");
    assert_true(json_is_array(nodes));
    assert_int_equal(json_array_size(nodes), 2);
    static const char *keys[] = {"node_id", "endpoint", "up", "experts", "batches",
                                 "rtt_last_ms", "rtt_mean_ms", "last_error"};
    for (size_t i = 0; i < 2; i++)
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
            assert_non_null(json_object_get(json_array_get(nodes, i), keys[k]));
    json_t *down = json_array_get(nodes, 1);
    assert_int_equal(json_integer_value(json_object_get(down, "node_id")), 2);
    assert_true(json_is_false(json_object_get(down, "up")));
    assert_true(json_is_true(json_object_get(json_array_get(nodes, 0), "up")));
    assert_string_equal(json_string_value(json_object_get(down, "last_error")),
                        "no heartbeat for 3 s");
    assert_int_equal(json_integer_value(json_object_get(down, "batches")), 7);
    assert_true(json_number_value(json_object_get(down, "rtt_mean_ms")) == 2.0);
    json_t *experts = json_object_get(down, "experts");
    assert_int_equal(json_array_size(experts), 4);
    assert_int_equal(json_integer_value(json_array_get(json_array_get(experts, 3), 0)), 1);
    assert_int_equal(json_integer_value(json_array_get(json_array_get(experts, 3), 1)), 3);
    json_t *tokens = json_object_get(root, "expert_tokens");
    assert_int_equal(json_array_size(tokens), 2);
    for (int l = 0; l < 2; l++) {
        json_t *row = json_array_get(tokens, (size_t)l);
        assert_int_equal(json_array_size(row), 4);
        for (int x = 0; x < 4; x++)
            assert_int_equal(json_integer_value(json_array_get(row, (size_t)x)),
                             100 + 10 * l + x);
    }
    json_decref(root);
}

static void test_cli_status_table(void **state)
{
    fake_t *f = *state;
    char args[1024];
    char *out = NULL;
    snprintf(args, sizeof args, "--connect '%s' --timeout 5 status", f->endpoint);
    assert_int_equal(s_run(args, &out, NULL, NULL), 0);
    static const char *needles[] = {"fake-mixtral (test)", "requests served: 17",
                                    "1 up, 1 down", "DOWN", "tcp://127.0.0.1:7002",
                                    "no heartbeat for 3 s", "1.50 ms", "all 2 layers: 1,3",
                                    "110 111 112 113"};
    for (size_t i = 0; i < sizeof needles / sizeof needles[0]; i++)
        if (!strstr(out, needles[i]))
            fail_msg("status output lacks '%s':\n%s", needles[i], out);
    free(out);
}

static void test_cli_usage_errors(void **state)
{
    fake_t *f = *state;
    char args[1024];
    s_expect_error("", 2, "no command given");
    s_expect_error("status", 2, "--connect ENDPOINT is required");
    s_expect_error("--connect", 2, "unknown or incomplete option");
    s_expect_error("--connect tcp://127.0.0.1:1 --bogus status", 2,
                   "unknown or incomplete option '--bogus'");
    s_expect_error("--connect tcp://127.0.0.1:1 explode", 2, "unknown command 'explode'");
    s_expect_error("--connect tcp://127.0.0.1:1 generate", 2,
                   "one of --prompt-ids and --prompt");
    s_expect_error("--connect tcp://127.0.0.1:1 generate --prompt-ids 1 --prompt hi", 2,
                   "--prompt-ids and --prompt exclude each other");
    s_expect_error("--connect tcp://127.0.0.1:1 generate --prompt-ids 1 --max-tokens "
                   "99999999999999", 2, "--max-tokens must be an integer <= 2147483647");
    s_expect_error("--connect tcp://127.0.0.1:1 generate --prompt-ids 1 --prompt-id 2", 2,
                   "unknown or incomplete option '--prompt-id'");
    s_expect_error("--connect tcp://127.0.0.1:1 generate --prompt hi --deadline-ms 0", 2,
                   "--deadline-ms");
    s_expect_error("--connect tcp://127.0.0.1:1 generate --prompt-ids 1,,2", 2,
                   "--prompt-ids");
    s_expect_error("--connect tcp://127.0.0.1:1 generate --prompt-ids 1 --max-tokens -1", 2,
                   "--max-tokens");
    s_expect_error("--connect tcp://127.0.0.1:1 logits --prompt-ids 1", 2,
                   "--out FILE is required");
    s_expect_error("--connect tcp://127.0.0.1:1 --timeout 0 status", 2, "--timeout");
    s_expect_error("--connect tcp://127.0.0.1:1 --timeout soon status", 2, "--timeout");
    s_expect_error("--connect tcp://127.0.0.1:1 status --json extra", 2,
                   "unexpected argument 'extra'");
    s_expect_error("--connect tcp://127.0.0.1:1 status --prompt-ids 1", 2,
                   "unknown or incomplete option");
    /* Whole names only: no abbreviation is taken for an option (getopt_long's). */
    s_expect_error("--connect tcp://127.0.0.1:1 generate --prompt-i 1", 2,
                   "unknown or incomplete option '--prompt-i'");
    s_expect_error("--connect tcp://127.0.0.1:1 generate --prompt-ids 1 --max-tok 2", 2,
                   "unknown or incomplete option '--max-tok'");
    s_expect_error("--conn tcp://127.0.0.1:1 status", 2, "unknown or incomplete option");
    s_expect_error("--connect tcp://127.0.0.1:1 generate --prompt-ids 1 --top-p 2", 2,
                   "--top-p must be a number in [1e-06, 1] (got '2')");

    /* Help, global and per command, on stdout with exit 0. */
    static const struct {
        const char *args, *needle;
    } helps[] = {{"--help", "usage: moe-client"},
                 {"generate --help", "--max-tokens"},
                 {"logits --help", "--out FILE"},
                 {"status --help", "--json"}};
    for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++) {
        char *out = NULL;
        assert_int_equal(s_run(helps[i].args, &out, NULL, NULL), 0);
        assert_non_null(strstr(out, helps[i].needle));
        free(out);
    }

    /* Runtime errors: exit 1, one line. */
    snprintf(args, sizeof args, "--connect '%s' generate --prompt-ids %d", f->endpoint,
             SC_ERROR + WIRE_CLIENT_INVALID_ARGUMENT);
    char want[128];
    snprintf(want, sizeof want, "%s: scripted failure 3",
             wire_client_error_name(WIRE_CLIENT_INVALID_ARGUMENT));
    s_expect_error(args, 1, want);
    s_expect_error("--connect not-an-endpoint status", 1,
                   "cannot connect to not-an-endpoint: not an endpoint (give "
                   "tcp://HOST:PORT, HOST:PORT or [IPV6]:PORT)");
}

static void test_cli_nothing_listening(void **state)
{
    (void)state;
    char endpoint[64], args[256], want[256];
    int fd = s_refusing_port(endpoint, sizeof endpoint);
    snprintf(args, sizeof args, "--connect %s --timeout 30 status", endpoint);
    snprintf(want, sizeof want, "moe-client: nothing is listening at %s", endpoint);

    char *out = NULL, *errtext = NULL;
    double took = 0;
    int rc = s_run(args, &out, &errtext, &took);
    close(fd);
    assert_int_equal(rc, 1);
    assert_non_null(errtext);
    assert_non_null(strstr(errtext, want));
    assert_true(took < 3.0);
    free(out);
    free(errtext);
}

/* --timeout is the bound of the whole command; host:port connects. */
static void test_cli_timeout_and_host_port(void **state)
{
    fake_t *f = *state;
    char args[512];
    snprintf(args, sizeof args, "--connect %s --timeout 1 generate --prompt-ids %d,8 "
             "--max-tokens 20", f->endpoint + 6, SC_SLOW); /* 20 x 150 ms: 3 s */
    char *out = NULL, *errtext = NULL;
    double took = 0;
    int rc = s_run(args, &out, &errtext, &took);
    assert_int_equal(rc, 1);
    assert_non_null(errtext);
    assert_non_null(strstr(errtext, "did not finish the request within 1 s"));
    assert_true(took < 1.8);
    free(out);
    free(errtext);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_connect_rejects_bad_arguments, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_connect_out_of_memory, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_generate_collects_chunks, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_generate_rejects_bad_arguments, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_request_ids_increase, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_logits, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_status, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_rebalance, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_error_replies_map_to_errno, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_stale_replies_are_ignored, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_no_reply_times_out, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_timeout_bounds_the_whole_request, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_nothing_listening_fails_fast, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_host_port_endpoint, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_malformed_replies_are_protocol_errors, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_cancel, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_cli_generate, s_cli_setup, s_cli_teardown),
        cmocka_unit_test_setup_teardown(test_cli_logits, s_cli_setup, s_cli_teardown),
        cmocka_unit_test_setup_teardown(test_cli_status_json, s_cli_setup, s_cli_teardown),
        cmocka_unit_test_setup_teardown(test_cli_status_table, s_cli_setup, s_cli_teardown),
        cmocka_unit_test_setup_teardown(test_cli_usage_errors, s_cli_setup, s_cli_teardown),
        cmocka_unit_test_setup_teardown(test_cli_timeout_and_host_port, s_cli_setup,
                                        s_cli_teardown),
        cmocka_unit_test_setup_teardown(test_cli_nothing_listening, s_cli_setup,
                                        s_cli_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
