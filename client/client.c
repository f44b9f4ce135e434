/* client: see client.h.
 *
 * Every request goes the same way: take the next id, send, then wait for
 * replies carrying that id (s_wait), each wait bounded by timeout_ms from its
 * start. Replies point into the inbox until the next receive, so everything a
 * caller keeps is copied out before the next wait.
 */
#include "client/client.h"

#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <zmq.h>

#include "core/endpoint.h"
#include "core/mem.h"
#include "core/timer.h"
#include "proto/client_rpc.h"
#include "security/keypair.h"

struct client {
    void *ctx;              /* own ZeroMQ context */
    void *socket;           /* DEALER connected to endpoint */
    wire_inbox_t *inbox;    /* buffers of the last reply received */
    char *endpoint;         /* as given to client_connect */
    int timeout_ms;         /* bound of every wait, ms (> 0) */
    uint64_t next_id;       /* id of the next request sent (from 1) */
    uint64_t last_id;       /* last GENERATE/LOGITS/STATUS id, 0 before one */
    bool running;           /* a request is waiting for replies */
    void *monitor;          /* PAIR receiving the socket's handshake and disconnect events */
    bool refused;           /* with CURVE: the coordinator refused our key */
    bool mismatch;          /* one side uses CURVE, the other not */
    bool handshaken;        /* a handshake succeeded on the current connection */
    bool dropped;           /* closed in a handshake, before success */
    bool lost;              /* an established connection closed */
    bool connected;         /* a TCP connection is up */
    bool retrying;          /* a connection attempt failed since the last one that
                               succeeded (nothing listening, or unreachable) */
    uint64_t n_connects;    /* TCP connections made so far */
};

/* How long a request waits, at most, while every connection attempt fails
 * before it reports that nothing is listening: ZeroMQ tries again every
 * 100 ms, so a coordinator that is just starting gets ten tries. */
enum { S_REFUSED_GRACE_MS = 1000 };

/* Most (layer, expert) cells and nodes a status reply may describe. */
enum { S_MAX_STATUS_CELLS = 1 << 24, S_MAX_STATUS_NODES = 1 << 16 };

static wire_limits_t s_limits(void)
{
    return (wire_limits_t){
        .max_prompt = CLIENT_MAX_PROMPT,
        .vocab = CLIENT_MAX_VOCAB,
        .max_logit_rows = CLIENT_MAX_LOGIT_ROWS,
    };
}

/* "30 s", "0.3 s": the timeout as people read it. */
static const char *s_seconds(int ms, char *buf, size_t size)
{
    snprintf(buf, size, "%g s", ms / 1000.0);
    return buf;
}

static int s_set_int(void *socket, int option, int value, const char *name, err_t *err)
{
    if (zmq_setsockopt(socket, option, &value, sizeof value) < 0)
        return err_set(err, errno, "cannot set %s: %s", name, zmq_strerror(errno));
    return 0;
}

/* With CURVE: the socket's key and the coordinator's public key. */
static int s_curve(client_t *self, const char *key_file, const char *server_file,
                   err_t *err)
{
    keypair_t key;
    char server[KEYPAIR_Z85_LEN + 1];
    int rc = -1;
    if (keypair_load(&key, key_file, err) < 0 ||
        keypair_load_public(server, server_file, err) < 0 ||
        keypair_set_client(self->socket, &key, server, err) < 0)
        goto done;
    rc = 0;
done:
    memset(&key, 0, sizeof key);
    return rc;
}

/* A monitor of the socket's handshakes and disconnections (before the
 * connect, so that no event is missed): a refused CURVE key fails at once,
 * and so does a request whose coordinator stops or restarts before answering
 * (its state is gone) instead of after the whole timeout. */
static int s_monitor(client_t *self, err_t *err)
{
    static atomic_int s_seq; /* unique monitor names within the process */
    char monitor_ep[64];
    snprintf(monitor_ep, sizeof monitor_ep, "inproc://client-monitor-%d",
             atomic_fetch_add(&s_seq, 1));
    if (zmq_socket_monitor(self->socket, monitor_ep, ZMQ_EVENT_DISCONNECTED |
                           ZMQ_EVENT_CONNECTED | ZMQ_EVENT_CONNECT_RETRIED |
                           ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                           ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                           ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) < 0 ||
        !(self->monitor = zmq_socket(self->ctx, ZMQ_PAIR)) ||
        s_set_int(self->monitor, ZMQ_LINGER, 0, "ZMQ_LINGER", err) < 0 ||
        zmq_connect(self->monitor, monitor_ep) < 0)
        return err_set(err, errno, "cannot monitor the socket: %s", zmq_strerror(errno));
    return 0;
}

/* Reads the handshake events that arrived: what they say stays in self. */
static void s_read_events(client_t *self)
{
    for (;;) {
        zmq_msg_t event, address;
        zmq_msg_init(&event);
        if (zmq_msg_recv(&event, self->monitor, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&event);
            return;
        }
        uint16_t id = 0;
        uint32_t value = 0; /* the event's value: a protocol error code */
        if (zmq_msg_size(&event) >= sizeof id + sizeof value) {
            memcpy(&id, zmq_msg_data(&event), sizeof id);
            memcpy(&value, (char *)zmq_msg_data(&event) + sizeof id, sizeof value);
        }
        zmq_msg_close(&event);
        zmq_msg_init(&address);
        zmq_msg_recv(&address, self->monitor, ZMQ_DONTWAIT);
        zmq_msg_close(&address);
        switch (id) {
        case ZMQ_EVENT_CONNECTED:
            self->connected = true;
            self->retrying = false;
            self->n_connects++;
            break;
        case ZMQ_EVENT_CONNECT_RETRIED:
            self->retrying = true;
            break;
        case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
            self->handshaken = true;
            break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
            self->refused = true;
            break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
            if (value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
                self->mismatch = true;
            self->dropped = true;
            break;
        case ZMQ_EVENT_DISCONNECTED:
            self->connected = false;
            if (self->handshaken)
                self->lost = true;
            else
                self->dropped = true;
            self->handshaken = false; /* a reconnection handshakes again */
            break;
        default:
            self->dropped = true;
            break;
        }
    }
}

static int s_refused(const client_t *self, err_t *err)
{
    return err_set(err, EACCES, "the coordinator at %s refused this client's key: its "
                   "--curve-clients folder lacks this client's .pub", self->endpoint);
}

/* One side of the connection uses CURVE and the other not: no request can
 * pass, so it fails at once. */
static int s_mismatch(const client_t *self, err_t *err)
{
    if (strcmp(client_mechanism(self), "CURVE") == 0)
        return err_set(err, EPROTO, "the server at %s does not use CURVE but this client "
                       "does: connect without a key, or start the coordinator with "
                       "--curve-key", self->endpoint);
    return err_set(err, EPROTO, "the coordinator at %s requires CURVE: connect with this "
                   "client's key pair and the coordinator's public key (moe-client "
                   "--curve-key FILE --curve-server FILE; docs/DEPLOY.md, \"Security\")",
                   self->endpoint);
}

static client_t *s_connect(const char *endpoint, int timeout_ms, const char *key_file,
                           const char *server_file, err_t *err)
{
    if (!endpoint || !*endpoint) {
        err_set(err, EINVAL, "no coordinator endpoint given");
        return NULL;
    }
    if (timeout_ms <= 0) {
        err_set(err, EINVAL, "the timeout must be positive (got %d ms)", timeout_ms);
        return NULL;
    }
    wire_limits_t lim = s_limits();
    client_t *self = mem_calloc(1, sizeof *self);
    if (!self) {
        err_set(err, ENOMEM, "out of memory for a client");
        return NULL;
    }
    self->timeout_ms = timeout_ms;
    self->next_id = 1;
    self->endpoint = mem_strdup(endpoint);
    if (!self->endpoint) {
        err_set(err, ENOMEM, "out of memory for a client");
        goto fail;
    }
    self->inbox = wire_inbox_new(&lim, err);
    if (!self->inbox)
        goto fail;
    self->ctx = zmq_ctx_new();
    if (!self->ctx) {
        err_set(err, errno, "cannot create a ZeroMQ context: %s", zmq_strerror(errno));
        goto fail;
    }
    self->socket = zmq_socket(self->ctx, ZMQ_DEALER);
    if (!self->socket) {
        err_set(err, errno, "cannot create a socket: %s", zmq_strerror(errno));
        goto fail;
    }
    /* LINGER 0: destroying a client never waits for a dead coordinator.
     * The send and receive timeouts only back up the poll in s_wait. */
    if (s_set_int(self->socket, ZMQ_LINGER, 0, "ZMQ_LINGER", err) < 0 ||
        s_set_int(self->socket, ZMQ_SNDTIMEO, timeout_ms, "ZMQ_SNDTIMEO", err) < 0 ||
        s_set_int(self->socket, ZMQ_RCVTIMEO, timeout_ms, "ZMQ_RCVTIMEO", err) < 0 ||
        wire_socket_set_limit(self->socket, &lim, err) < 0)
        goto fail;
    if (key_file && s_curve(self, key_file, server_file, err) < 0)
        goto fail;
    if (s_monitor(self, err) < 0)
        goto fail;
    if (endpoint_connect(self->socket, endpoint, err) < 0)
        goto fail;
    return self;

fail:;
    int saved = errno;
    client_destroy(&self);
    errno = saved;
    return NULL;
}

client_t *client_connect(const char *endpoint, int timeout_ms, err_t *err)
{
    return s_connect(endpoint, timeout_ms, NULL, NULL, err);
}

client_t *client_connect_curve(const char *endpoint, int timeout_ms, const char *key_file,
                               const char *server_file, err_t *err)
{
    if (!key_file || !server_file) {
        err_set(err, EINVAL, "CURVE needs this client's key file and the coordinator's "
                "public key file");
        return NULL;
    }
    return s_connect(endpoint, timeout_ms, key_file, server_file, err);
}

const char *client_mechanism(const client_t *self)
{
    assert(self);
    return keypair_mechanism(self->socket);
}

void client_destroy(client_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    client_t *self = *self_p;
    if (self->socket && self->monitor)
        zmq_socket_monitor(self->socket, NULL, 0);
    if (self->monitor)
        zmq_close(self->monitor);
    if (self->socket)
        zmq_close(self->socket);
    if (self->ctx)
        zmq_ctx_term(self->ctx);
    wire_inbox_destroy(&self->inbox);
    mem_free(self->endpoint);
    mem_free(self);
    *self_p = NULL;
}

const char *client_endpoint(const client_t *self)
{
    assert(self);
    return self->endpoint;
}

uint64_t client_last_request_id(const client_t *self)
{
    assert(self);
    return self->last_id;
}

/* Sends req under the next request id; stores the id in req. */
static int s_send(client_t *self, wire_request_t *req, err_t *err)
{
    err_t e = {0};
    s_read_events(self);
    if (self->refused)
        return s_refused(self, err);
    if (self->mismatch)
        return s_mismatch(self, err);
    req->request_id = self->next_id++;
    if (wire_request_send(self->socket, req, &e) < 0) {
        char secs[32];
        if (errno == EAGAIN)
            return err_set(err, ETIMEDOUT, "cannot send to %s within %s", self->endpoint,
                           s_seconds(self->timeout_ms, secs, sizeof secs));
        return err_set(err, errno, "cannot send to %s: %s", self->endpoint, e.msg);
    }
    return 0;
}

/* Best effort: the request is over for us whatever happens to the CANCEL. */
static void s_cancel_quietly(client_t *self, uint64_t id)
{
    int saved = errno;
    client_cancel(self, id, NULL);
    errno = saved;
}

/* The time a request may take from now: every wait for its replies ends by
 * then (timer_now() seconds). */
static double s_deadline(const client_t *self)
{
    return timer_now() + self->timeout_ms / 1000.0;
}

/* Why a request ended without its reply by the deadline, or, when every
 * connection attempt has failed for S_REFUSED_GRACE_MS of the wait, that
 * nothing is listening. */
static int s_timed_out(client_t *self, bool refused, bool started, err_t *err)
{
    char secs[32];
    s_seconds(self->timeout_ms, secs, sizeof secs);
    if (refused)
        return err_set(err, ECONNREFUSED, "nothing is listening at %s (every connection "
                       "was refused or unreachable): is the coordinator running, and is "
                       "this its client endpoint?", self->endpoint);
    if (!self->handshaken && self->dropped && strcmp(client_mechanism(self), "CURVE") == 0)
        return err_set(err, ETIMEDOUT, "no reply from %s within %s: the CURVE handshake "
                       "did not complete (is the public key given for the coordinator its "
                       "own, and does it use CURVE?)", self->endpoint, secs);
    if (!self->handshaken && self->dropped)
        return err_set(err, ETIMEDOUT, "no reply from %s within %s: the handshake did not "
                       "complete (the coordinator may require CURVE, or this is not a "
                       "moecluster endpoint)", self->endpoint, secs);
    if (started)
        return err_set(err, ETIMEDOUT, "%s did not finish the request within %s",
                       self->endpoint, secs);
    return err_set(err, ETIMEDOUT, "no reply from %s within %s", self->endpoint, secs);
}

/* Waits for the next reply to request id (dropping any other) until deadline
 * (s_deadline, taken before the request was sent); started: replies to it
 * came already. 0 with *rep filled (pointing into the inbox), or -1: the
 * deadline (after a CANCEL of id when cancel_on_timeout), nothing listening
 * (ECONNREFUSED, also after that CANCEL), a receive failure, an invalid
 * reply, or an ERROR_REPLY mapped to errno. */
static int s_wait(client_t *self, uint64_t id, bool cancel_on_timeout, double deadline,
                  bool started, wire_reply_t *rep, err_t *err)
{
    const double start = timer_now();
    s_read_events(self);
    self->lost = false; /* only a drop while this request waits counts */
    const uint64_t connects = self->n_connects;
    for (;;) {
        if (self->mismatch)
            return s_mismatch(self, err);
        double now = timer_now();
        double left_ms = (deadline - now) * 1000.0;
        /* Nothing listening: every attempt failed and none succeeded since
         * the wait began, for the grace period (or the whole timeout). */
        bool refusing = !self->connected && self->retrying && self->n_connects == connects;
        double grace_ms = S_REFUSED_GRACE_MS - (now - start) * 1000.0;
        if (left_ms <= 0 || (refusing && grace_ms <= 0)) {
            if (cancel_on_timeout)
                s_cancel_quietly(self, id);
            return s_timed_out(self, refusing, started, err);
        }
        long poll_ms = (long)left_ms + 1;
        if (!self->connected && grace_ms > 0 && grace_ms < left_ms)
            poll_ms = (long)grace_ms + 1; /* look again once the grace is over */
        zmq_pollitem_t items[2] = {{.socket = self->socket, .events = ZMQ_POLLIN},
                                   {.socket = self->monitor, .events = ZMQ_POLLIN}};
        int ready = zmq_poll(items, 2, poll_ms);
        if (ready < 0) {
            if (errno == EINTR)
                return err_set(err, EINTR, "interrupted while waiting for %s",
                               self->endpoint);
            return err_set(err, errno, "cannot wait for %s: %s", self->endpoint,
                           zmq_strerror(errno));
        }
        if (items[1].revents & ZMQ_POLLIN) {
            s_read_events(self);
            if (self->refused)
                return s_refused(self, err);
            if (self->lost && !(items[0].revents & ZMQ_POLLIN))
                return err_set(err, ECONNRESET, "the coordinator at %s closed the "
                               "connection (stopped or restarted) before answering; the "
                               "request is lost: send it again", self->endpoint);
        }
        if (!(items[0].revents & ZMQ_POLLIN))
            continue;
        err_t e = {0};
        if (wire_reply_recv(self->inbox, self->socket, rep, &e) < 0) {
            if (errno == EAGAIN)
                continue;
            /* rep->request_id: the id of a bad reply, when it could be read. */
            if (errno == EPROTO && rep->request_id && rep->request_id != id)
                continue; /* a stale one: not worth failing the pending request */
            if (errno == EPROTO)
                return err_set(err, EPROTO, "malformed reply from %s: %s", self->endpoint,
                               e.msg);
            return err_set(err, errno, "cannot receive from %s: %s", self->endpoint,
                           e.msg);
        }
        /* Id 0: an error about a request the coordinator could not read,
         * which can only be the one this client is waiting for. */
        bool unread = rep->request_id == 0 && rep->type == WIRE_REP_ERROR;
        if (rep->request_id != id && !unread)
            continue; /* stale: the answer to a request given up on */
        if (rep->type == WIRE_REP_ERROR) {
            const char *msg = rep->error_message ? rep->error_message : "";
            return err_set(err, wire_client_error_errno(rep->error_code), "%s%s%s",
                           wire_client_error_name(rep->error_code), *msg ? ": " : "", msg);
        }
        return 0;
    }
}

/* Checks the reply type; EPROTO names both. */
static int s_expect(const client_t *self, const wire_reply_t *rep, wire_reply_type_t type,
                    const char *what, err_t *err)
{
    if (rep->type == type)
        return 0;
    return err_set(err, EPROTO, "unexpected reply from %s: type %d instead of %s",
                   self->endpoint, (int)rep->type, what);
}

static int s_check_prompt(const client_t *self, const int32_t *prompt, int n_prompt,
                          err_t *err)
{
    if (self->running)
        return err_set(err, EINVAL, "a request is already running on this client");
    if (!prompt || n_prompt < 1)
        return err_set(err, EINVAL, "the prompt is empty");
    if (n_prompt > CLIENT_MAX_PROMPT)
        return err_set(err, EINVAL, "the prompt has %d ids, more than the limit of %d",
                       n_prompt, CLIENT_MAX_PROMPT);
    return 0;
}

int client_generate(client_t *self, const int32_t *prompt, int n_prompt, int max_tokens,
                    client_chunk_fn *on_chunk, void *arg, int32_t **tokens,
                    int *n_tokens, err_t *err)
{
    return client_generate_sampled(self, prompt, n_prompt, max_tokens, NULL, on_chunk, arg,
                                   tokens, n_tokens, err);
}

int client_generate_sampled(client_t *self, const int32_t *prompt, int n_prompt,
                            int max_tokens, const client_sampling_t *sampling,
                            client_chunk_fn *on_chunk, void *arg, int32_t **tokens,
                            int *n_tokens, err_t *err)
{
    assert(tokens);
    assert(n_tokens);
    client_gen_t gen = {.prompt = prompt, .n_prompt = n_prompt, .max_tokens = max_tokens};
    if (sampling)
        gen.sampling = *sampling;
    client_result_t res;
    int rc = client_generate_full(self, &gen, on_chunk, arg, &res, err);
    *tokens = res.tokens;
    *n_tokens = res.n_tokens;
    res.tokens = NULL;
    client_result_fini(&res);
    return rc;
}

void client_result_fini(client_result_t *res)
{
    if (!res)
        return;
    mem_free(res->tokens);
    mem_free(res->text);
    memset(res, 0, sizeof *res);
}

/* Appends n bytes to the result's text, growing it geometrically. */
static int s_text_append(client_result_t *res, size_t *cap, const char *text, size_t n,
                         err_t *err)
{
    if (res->text_len + n + 1 > *cap) {
        size_t want = *cap * 2 > res->text_len + n + 1 ? *cap * 2 : res->text_len + n + 1;
        char *grown = mem_realloc(res->text, want);
        if (!grown)
            return err_set(err, ENOMEM, "out of memory for %zu bytes of text", want);
        res->text = grown;
        *cap = want;
    }
    memcpy(res->text + res->text_len, text, n);
    res->text_len += n;
    res->text[res->text_len] = '\0';
    return 0;
}

/* The request a client_gen_t describes; checks what the client can. */
static int s_gen_request(const client_t *self, const client_gen_t *gen, wire_request_t *req,
                         err_t *err)
{
    if (gen->prompt_text) {
        if (self->running)
            return err_set(err, EINVAL, "a request is already running on this client");
        if (!gen->prompt_text[0])
            return err_set(err, EINVAL, "the prompt is empty");
        if (gen->prompt && gen->n_prompt > 0)
            return err_set(err, EINVAL, "both a text and an ids prompt; give one");
    } else if (s_check_prompt(self, gen->prompt, gen->n_prompt, err) < 0) {
        return -1;
    }
    if (gen->max_tokens < 0)
        return err_set(err, EINVAL, "max tokens must be >= 0 (got %d)", gen->max_tokens);
    if (gen->deadline_ms < 0)
        return err_set(err, EINVAL, "a deadline of %d ms", gen->deadline_ms);
    const client_sampling_t *sp = &gen->sampling;
    if (sp->n_stop < 0 || sp->n_stop > CLIENT_MAX_STOP_IDS)
        return err_set(err, EINVAL, "%d stop ids (at most %d)", sp->n_stop,
                       CLIENT_MAX_STOP_IDS);
    *req = (wire_request_t){
        .type = WIRE_REQ_GENERATE, .n_prompt = gen->prompt_text ? 0 : gen->n_prompt,
        .prompt = gen->prompt_text ? NULL : gen->prompt, .max_tokens = gen->max_tokens,
        .temperature = sp->temperature, .top_k = sp->top_k, .top_p = sp->top_p,
        .seed = sp->seed, .n_stop = sp->n_stop, .stop_ids = sp->stop_ids,
        .prompt_text = gen->prompt_text,
        .prompt_text_len = gen->prompt_text ? strlen(gen->prompt_text) : 0,
        .deadline_ms = gen->deadline_ms, .ignore_eos = gen->ignore_eos,
    };
    return 0;
}

int client_generate_full(client_t *self, const client_gen_t *gen, client_chunk_fn *on_chunk,
                         void *arg, client_result_t *res, err_t *err)
{
    assert(self);
    assert(gen);
    assert(res);
    memset(res, 0, sizeof *res);
    wire_request_t req;
    if (s_gen_request(self, gen, &req, err) < 0)
        return -1;

    int rc = -1, n = 0;
    bool started = false; /* a reply came */
    const int max_tokens = gen->max_tokens;
    size_t text_cap = 64;
    res->tokens = mem_alloc((size_t)(max_tokens > 0 ? max_tokens : 1) * sizeof *res->tokens);
    res->text = mem_alloc(text_cap);
    if (!res->tokens || !res->text) {
        err_set(err, ENOMEM, "out of memory for %d tokens", max_tokens);
        goto done;
    }
    res->text[0] = '\0';
    const double deadline = s_deadline(self);
    if (s_send(self, &req, err) < 0)
        goto done;
    self->last_id = req.request_id;
    self->running = true;
    for (;;) {
        wire_reply_t rep;
        if (s_wait(self, req.request_id, true, deadline, started, &rep, err) < 0)
            goto done;
        started = true;
        if (s_expect(self, &rep, WIRE_REP_TOKENS, "TOKENS", err) < 0)
            goto done;
        if (rep.n_tokens < 0 || rep.n_tokens > max_tokens - n ||
            (rep.n_tokens > 0 && !rep.tokens)) {
            err_set(err, EPROTO, "%s sent %d more tokens after %d, more than the %d asked "
                    "for", self->endpoint, rep.n_tokens, n, max_tokens);
            goto done;
        }
        if (rep.n_tokens > 0)
            memcpy(res->tokens + n, rep.tokens, (size_t)rep.n_tokens * sizeof *res->tokens);
        n += rep.n_tokens;
        const size_t text_at = res->text_len;
        if (rep.text_len > 0 && s_text_append(res, &text_cap, rep.text, rep.text_len, err) < 0)
            goto done;
        if (on_chunk) {
            client_chunk_t chunk = {
                .request_id = req.request_id, .tokens = res->tokens + n - rep.n_tokens,
                .n_tokens = rep.n_tokens, .n_total = n, .final = rep.final,
                .text = res->text + text_at, .text_len = rep.text_len,
                .prompt_tokens = rep.prompt_tokens,
                .generated_tokens = rep.generated_tokens, .seconds = rep.seconds,
                .finish_reason = rep.finish_reason ? rep.finish_reason : "",
            };
            if (on_chunk(&chunk, arg) != 0) {
                s_cancel_quietly(self, req.request_id);
                err_set(err, ECANCELED, "request %llu cancelled by the caller",
                        (unsigned long long)req.request_id);
                goto done;
            }
        }
        if (rep.final) {
            res->prompt_tokens = rep.prompt_tokens;
            res->seconds = rep.seconds;
            snprintf(res->finish_reason, sizeof res->finish_reason, "%s",
                     rep.finish_reason ? rep.finish_reason : "");
            break;
        }
    }
    res->n_tokens = n;
    rc = 0;

done:
    self->running = false;
    if (rc < 0)
        client_result_fini(res);
    return rc;
}

int client_logits(client_t *self, const int32_t *prompt, int n_prompt, float **logits,
                  int *rows, int *vocab, err_t *err)
{
    assert(self);
    assert(logits);
    assert(rows);
    assert(vocab);
    *logits = NULL;
    *rows = 0;
    *vocab = 0;
    if (s_check_prompt(self, prompt, n_prompt, err) < 0)
        return -1;

    wire_request_t req = {.type = WIRE_REQ_LOGITS, .n_prompt = n_prompt, .prompt = prompt};
    const double deadline = s_deadline(self);
    if (s_send(self, &req, err) < 0)
        return -1;
    self->last_id = req.request_id;
    self->running = true;
    int rc = -1;
    wire_reply_t rep;
    if (s_wait(self, req.request_id, true, deadline, false, &rep, err) < 0)
        goto done;
    if (s_expect(self, &rep, WIRE_REP_LOGITS, "LOGITS_DATA", err) < 0)
        goto done;
    if (rep.rows != n_prompt || rep.vocab <= 0 || rep.vocab > CLIENT_MAX_VOCAB ||
        !rep.logits) {
        err_set(err, EPROTO, "%s sent logits of shape (%d, %d) for a prompt of %d ids",
                self->endpoint, rep.rows, rep.vocab, n_prompt);
        goto done;
    }
    size_t bytes = (size_t)rep.rows * (size_t)rep.vocab * sizeof(float);
    float *out = mem_alloc(bytes);
    if (!out) {
        err_set(err, ENOMEM, "out of memory for %zu bytes of logits", bytes);
        goto done;
    }
    memcpy(out, rep.logits, bytes);
    *logits = out;
    *rows = rep.rows;
    *vocab = rep.vocab;
    rc = 0;

done:
    self->running = false;
    return rc;
}

static const char *s_text(const char *s)
{
    return s ? s : "";
}

/* Checks a STATUS reply and returns its size as one client_status_t
 * allocation, or 0 with EPROTO in err. */
static size_t s_status_size(const client_t *self, const wire_reply_t *rep, err_t *err)
{
    if (rep->n_layers < 0 || rep->n_experts < 0 || rep->n_nodes < 0 ||
        rep->n_nodes > S_MAX_STATUS_NODES ||
        (int64_t)rep->n_layers * rep->n_experts > S_MAX_STATUS_CELLS) {
        err_set(err, EPROTO, "%s sent a status of %d layers x %d experts, %d nodes",
                self->endpoint, rep->n_layers, rep->n_experts, rep->n_nodes);
        return 0;
    }
    size_t cells = (size_t)rep->n_layers * (size_t)rep->n_experts;
    if ((cells && !rep->expert_tokens) || (rep->n_nodes && !rep->nodes)) {
        err_set(err, EPROTO, "%s sent a status without its counters", self->endpoint);
        return 0;
    }
    size_t size = sizeof(client_status_t) + (size_t)rep->n_nodes * sizeof(client_node_t) +
                  cells * sizeof(uint64_t) + cells * sizeof(double) +
                  strlen(s_text(rep->model)) + 1 +
                  strlen(s_text(rep->model_arch)) + 1 + strlen(s_text(rep->metrics)) + 1 +
                  strlen(s_text(rep->weights)) + 1 + strlen(s_text(rep->wire)) + 1;
    for (int i = 0; i < rep->n_nodes; i++) {
        const wire_node_status_t *w = &rep->nodes[i];
        if (w->n_hosted < 0 || (int64_t)w->n_hosted > (int64_t)cells ||
            (w->n_hosted && (!w->hosted_layer || !w->hosted_expert))) {
            err_set(err, EPROTO, "%s sent %d hosted experts for node %d of a %d x %d "
                    "model", self->endpoint, w->n_hosted, w->node_id, rep->n_layers,
                    rep->n_experts);
            return 0;
        }
        for (int j = 0; j < w->n_hosted; j++) {
            if (w->hosted_layer[j] < 0 || w->hosted_layer[j] >= rep->n_layers ||
                w->hosted_expert[j] < 0 || w->hosted_expert[j] >= rep->n_experts) {
                err_set(err, EPROTO, "%s sent hosted expert (%d, %d) for node %d of a "
                        "%d x %d model", self->endpoint, (int)w->hosted_layer[j],
                        (int)w->hosted_expert[j], w->node_id, rep->n_layers,
                        rep->n_experts);
                return 0;
            }
        }
        size += (size_t)w->n_hosted * sizeof(client_expert_t) +
                strlen(s_text(w->endpoint)) + 1 + strlen(s_text(w->last_error)) + 1 +
                strlen(s_text(w->weights)) + 1;
    }
    return size;
}

/* Copies s to *cursor and advances it. */
static const char *s_put_text(char **cursor, const char *s)
{
    size_t n = strlen(s_text(s)) + 1;
    char *dst = *cursor;
    memcpy(dst, s_text(s), n);
    *cursor += n;
    return dst;
}

client_status_t *client_status(client_t *self, err_t *err)
{
    assert(self);
    if (self->running) {
        err_set(err, EINVAL, "a request is already running on this client");
        return NULL;
    }
    wire_request_t req = {.type = WIRE_REQ_STATUS};
    const double deadline = s_deadline(self);
    if (s_send(self, &req, err) < 0)
        return NULL;
    self->last_id = req.request_id;
    self->running = true;
    client_status_t *st = NULL;
    wire_reply_t rep;
    if (s_wait(self, req.request_id, false, deadline, false, &rep, err) < 0 ||
        s_expect(self, &rep, WIRE_REP_STATUS, "STATUS_DATA", err) < 0)
        goto done;
    size_t size = s_status_size(self, &rep, err);
    if (!size)
        goto done;
    /* One block, most aligned parts first: the struct, the nodes, the uint64
     * counters, the int32 pairs, then the strings. */
    char *base = mem_alloc(size);
    if (!base) {
        err_set(err, ENOMEM, "out of memory for a status of %zu bytes", size);
        goto done;
    }
    st = (client_status_t *)base;
    client_node_t *nodes = (client_node_t *)(base + sizeof *st);
    uint64_t *counts = (uint64_t *)(nodes + rep.n_nodes);
    size_t cells = (size_t)rep.n_layers * (size_t)rep.n_experts;
    double *loads = (double *)(counts + cells);
    client_expert_t *hosted = (client_expert_t *)(loads + cells);
    size_t n_hosted = 0;
    for (int i = 0; i < rep.n_nodes; i++)
        n_hosted += (size_t)rep.nodes[i].n_hosted;
    char *text = (char *)(hosted + n_hosted);

    if (cells)
        memcpy(counts, rep.expert_tokens, cells * sizeof *counts);
    for (size_t i = 0; i < cells; i++)
        loads[i] = rep.expert_load ? rep.expert_load[i] : 0;
    *st = (client_status_t){
        .model = s_put_text(&text, rep.model), .model_arch = s_put_text(&text, rep.model_arch),
        .weights = s_put_text(&text, rep.weights), .wire = s_put_text(&text, rep.wire),
        .n_layers = rep.n_layers,
        .n_experts = rep.n_experts, .expert_tokens = counts, .expert_load = loads,
        .load_half_life_s = rep.load_half_life_s,
        .requests_served = rep.requests_served, .n_nodes = rep.n_nodes, .nodes = nodes,
        .timing = {
            .tokens = rep.timing.tokens, .dispatch_calls = rep.timing.dispatch_calls,
            .dispatch_rows = rep.timing.dispatch_rows,
            .bytes_sent = rep.timing.bytes_sent, .bytes_received = rep.timing.bytes_received,
            .seconds_forward = rep.timing.seconds_forward,
            .seconds_dispatch = rep.timing.seconds_dispatch,
            .seconds_node_compute = rep.timing.seconds_node_compute,
            .seconds_overlap = rep.timing.seconds_overlap,
        },
        .sequences_running = rep.sequences_running, .requests_queued = rep.requests_queued,
        .kv_bytes = rep.kv_bytes, .metrics = s_put_text(&text, rep.metrics),
    };
    for (int i = 0; i < rep.n_nodes; i++) {
        const wire_node_status_t *w = &rep.nodes[i];
        for (int j = 0; j < w->n_hosted; j++)
            hosted[j] = (client_expert_t){w->hosted_layer[j], w->hosted_expert[j]};
        nodes[i] = (client_node_t){
            .node_id = w->node_id, .endpoint = s_put_text(&text, w->endpoint),
            .up = w->up, .n_hosted = w->n_hosted, .hosted = hosted,
            .batches = w->batches, .rtt_last_ms = w->rtt_last_ms,
            .rtt_mean_ms = w->rtt_mean_ms, .last_error = s_put_text(&text, w->last_error),
            .weights = s_put_text(&text, w->weights),
            .load = w->load, .busy_ratio = w->busy_ratio, .busy_seconds = w->busy_seconds,
            .coordinators = w->coordinators,
        };
        hosted += w->n_hosted;
    }
    assert(text == base + size);

done:
    self->running = false;
    return st;
}

/* REBALANCE, NODE_DRAIN or NODE_ADD (req, without its id), waiting for the
 * REBALANCED. */
static int s_move(client_t *self, wire_request_t *req_in, client_move_t *out, err_t *err)
{
    if (self->running)
        return err_set(err, EINVAL, "a request is already running on this client");
    wire_request_t req = *req_in;
    const double deadline = s_deadline(self);
    if (s_send(self, &req, err) < 0)
        return -1;
    self->last_id = req.request_id;
    self->running = true;
    wire_reply_t rep;
    int rc = -1;
    if (s_wait(self, req.request_id, false, deadline, false, &rep, err) == 0 &&
        s_expect(self, &rep, WIRE_REP_REBALANCED, "REBALANCED", err) == 0) {
        *out = (client_move_t){.imbalance_before = rep.imbalance_before,
                               .imbalance_after = rep.imbalance_after,
                               .copies_loaded = rep.copies_loaded,
                               .copies_dropped = rep.copies_dropped};
        snprintf(out->summary, sizeof out->summary, "%s", s_text(rep.move_summary));
        rc = 0;
    }
    self->running = false;
    return rc;
}

int client_rebalance(client_t *self, int redundant, int drain_node, client_move_t *out,
                     err_t *err)
{
    assert(self);
    assert(out);
    if (redundant < 0 || redundant > WIRE_MAX_REDUNDANT || drain_node < 0)
        return err_set(err, EINVAL, "%d redundant copies (0..%d), node %d", redundant,
                       WIRE_MAX_REDUNDANT, drain_node);
    wire_request_t req = {.type = drain_node ? WIRE_REQ_NODE_DRAIN : WIRE_REQ_REBALANCE,
                          .redundant = redundant, .node_id = drain_node};
    return s_move(self, &req, out, err);
}

int client_node_add(client_t *self, const char *endpoint, int redundant, client_move_t *out,
                    err_t *err)
{
    assert(self);
    assert(out);
    if (!endpoint || !endpoint[0] || strlen(endpoint) >= WIRE_MAX_TEXT || redundant < 0 ||
        redundant > WIRE_MAX_REDUNDANT)
        return err_set(err, EINVAL, "node add: an endpoint (1 to %d bytes) and 0..%d "
                       "redundant copies are needed", WIRE_MAX_TEXT - 1, WIRE_MAX_REDUNDANT);
    wire_request_t req = {.type = WIRE_REQ_NODE_ADD, .redundant = redundant,
                          .endpoint = endpoint};
    return s_move(self, &req, out, err);
}

void client_status_destroy(client_status_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    mem_free(*self_p);
    *self_p = NULL;
}

int client_cancel(client_t *self, uint64_t request_id, err_t *err)
{
    assert(self);
    wire_request_t req = {.type = WIRE_REQ_CANCEL, .cancel_id = request_id};
    return s_send(self, &req, err);
}
