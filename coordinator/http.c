/* http: see http.h. */
#include "coordinator/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "coordinator/openai.h"
#include "core/mem.h"

enum { WAIT_MS = 100 };          /* how often a waiting connection checks its peer */
enum { ITEMS_PER_TURN = 256 };   /* queued requests the loop takes between steps */
enum { SLOT_BITS = 16 };         /* a serial's low bits are its slot */

typedef enum item_kind { ITEM_SUBMIT = 1, ITEM_DROP, ITEM_HEALTH, ITEM_METRICS } item_kind_t;

typedef struct item {
    item_kind_t kind;
    uint64_t serial;
} item_t;

typedef enum conn_state {
    CONN_NEW = 0,     /* reading the request */
    CONN_QUEUED,      /* handed to the loop */
    CONN_RUNNING,     /* accepted: its sequence runs */
    CONN_DONE,        /* the answer is complete in resp */
} conn_state_t;

/* One request in flight on one connection. Fields after `cond` are guarded
 * by http->mu once the request is queued. */
typedef struct conn {
    struct http *http;
    int fd;                       /* the connection's socket, to notice a hang-up */
    openai_buf_t body;
    bool too_large;
    openai_req_t req;
    bool parsed;
    pthread_cond_t cond;
    int refs;                     /* the request, and a streamed response */
    int slot;                     /* -1: none */
    uint64_t serial;
    conn_state_t state;
    bool gone;                    /* the peer closed: no more deliveries */
    int status;                   /* 0: not decided (200 once accepted) */
    const char *content_type;
    openai_out_t *out;
    openai_buf_t resp;            /* bytes to send */
    size_t sent;
} conn_t;

struct http {
    server_t *server;
    int front;
    struct MHD_Daemon *daemon;
    int efd;                      /* eventfd: the loop's wake-up */
    pthread_mutex_t mu;
    bool mu_ready;
    conn_t **slots;               /* (max_connections) requests queued or running */
    int n_slots;
    item_t *queue;                /* ring (q_cap) */
    int q_cap, q_head, q_len;
    uint64_t next_serial;
    size_t max_body;
    char url[300];
    char model_id[256];
    char *api_key;
    http_render_fn render;
    void *render_ctx;
    char no_template_why[256];
    long started;
    bool stopping;                /* http_destroy began: the loop answers no more */
};

/* ---- connections ------------------------------------------------------------------ */

static void s_conn_unref(conn_t *c)
{
    if (--c->refs > 0)
        return;
    openai_buf_free(&c->body);
    openai_buf_free(&c->resp);
    openai_req_free(&c->req);
    openai_out_destroy(&c->out);
    pthread_cond_destroy(&c->cond);
    mem_free(c);
}

static conn_t *s_lookup(http_t *self, uint64_t serial)
{
    const int slot = (int)(serial & ((1u << SLOT_BITS) - 1));
    if (slot >= self->n_slots)
        return NULL;
    conn_t *c = self->slots[slot];
    return c && c->serial == serial ? c : NULL;
}

static sched_client_t s_client(const http_t *self, uint64_t serial)
{
    sched_client_t client = {.front = self->front, .len = sizeof serial};
    memcpy(client.id, &serial, sizeof serial);
    snprintf(client.address, sizeof client.address, "http");
    return client;
}

/* Queues an item for the loop and wakes it; under mu. -1 when full. */
static int s_enqueue(http_t *self, item_kind_t kind, uint64_t serial)
{
    if (self->q_len == self->q_cap)
        return -1;
    self->queue[(self->q_head + self->q_len++) % self->q_cap] = (item_t){kind, serial};
    const uint64_t one = 1;
    if (write(self->efd, &one, sizeof one) < 0) {
        /* EAGAIN: the counter is full, the loop is awake anyway */
    }
    return 0;
}

/* The peer closed its side (or the socket failed): checked while waiting. */
static bool s_hung_up(int fd)
{
    if (fd < 0)
        return false;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

/* The peer went away: drop its sequence at once. Under mu. */
static void s_gone(http_t *self, conn_t *c)
{
    if (c->gone)
        return;
    c->gone = true;
    if (c->slot >= 0 && (c->state == CONN_QUEUED || c->state == CONN_RUNNING))
        s_enqueue(self, ITEM_DROP, c->serial);
}

/* Waits on c's condition for at most WAIT_MS (under mu). */
static void s_nap(http_t *self, conn_t *c)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += WAIT_MS * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&c->cond, &self->mu, &ts);
}

/* Waits (under mu) until c reaches `state` (or later); -1 when the peer
 * hung up meanwhile (its sequence is then dropped). */
static int s_wait_for(http_t *self, conn_t *c, conn_state_t state)
{
    while (c->state < state) {
        s_nap(self, c);
        if (c->state < state && (s_hung_up(c->fd) || self->stopping)) {
            s_gone(self, c);
            return -1;
        }
    }
    return 0;
}

/* ---- responses -------------------------------------------------------------------- */

static enum MHD_Result s_send(struct MHD_Connection *mc, int status, const char *type,
                              const char *body, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    if (status == 401)
        MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    enum MHD_Result rc = MHD_queue_response(mc, (unsigned)status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result s_send_error(struct MHD_Connection *mc, int status, const char *message,
                                    const char *param, const char *code)
{
    char *body = openai_error_body(status, message, param, code);
    if (!body)
        return MHD_NO;
    enum MHD_Result rc = s_send(mc, status, "application/json", body, strlen(body));
    mem_free(body);
    return rc;
}

/* A streamed response's bytes, as the loop delivers them. */
static ssize_t s_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    conn_t *c = cls;
    http_t *self = c->http;
    ssize_t n;
    pthread_mutex_lock(&self->mu);
    for (;;) {
        if (c->resp.oom) {
            n = MHD_CONTENT_READER_END_WITH_ERROR;
            break;
        }
        if (c->sent < c->resp.len) {
            n = (ssize_t)(c->resp.len - c->sent < max ? c->resp.len - c->sent : max);
            memcpy(buf, c->resp.p + c->sent, (size_t)n);
            c->sent += (size_t)n;
            if (c->sent == c->resp.len)
                c->sent = c->resp.len = 0; /* the buffer is reused */
            break;
        }
        if (c->state == CONN_DONE) {
            n = MHD_CONTENT_READER_END_OF_STREAM;
            break;
        }
        s_nap(self, c);
        if (c->resp.len == 0 && c->state != CONN_DONE &&
            (s_hung_up(c->fd) || self->stopping)) {
            s_gone(self, c);
            n = MHD_CONTENT_READER_END_WITH_ERROR;
            break;
        }
    }
    pthread_mutex_unlock(&self->mu);
    return n;
}

static void s_read_done(void *cls)
{
    conn_t *c = cls;
    http_t *self = c->http;
    pthread_mutex_lock(&self->mu);
    s_conn_unref(c);
    pthread_mutex_unlock(&self->mu);
}

/* ---- the loop's side ------------------------------------------------------------- */

/* Ends c with an error (under mu): a JSON body, or an SSE error once streaming. */
static void s_fail(conn_t *c, int status, const char *message, const char *param)
{
    if (c->status == 200 && c->req.stream && c->out) {
        openai_out_stream_error(c->out, status, message, &c->resp);
    } else {
        c->resp.len = 0;
        char *body = openai_error_body(status, message, param, NULL);
        if (body)
            openai_buf_add(&c->resp, body, strlen(body));
        else
            c->resp.oom = true;
        mem_free(body);
        c->status = status;
        c->content_type = "application/json";
    }
    c->state = CONN_DONE;
    pthread_cond_broadcast(&c->cond);
}

/* The prompt of c as ids (*ids mem_alloc'd): the completion's ids or text,
 * or the chat rendered by the model's template. -1 with status and err. */
static int s_prompt(http_t *self, conn_t *c, int32_t **ids, size_t *n, int *status, err_t *err)
{
    const openai_req_t *r = &c->req;
    *status = 400;
    if (r->kind == OPENAI_COMPLETION && r->prompt_ids) {
        *ids = mem_alloc((size_t)r->n_prompt_ids * sizeof(int32_t));
        if (!*ids)
            return *status = 500, err_set(err, ENOMEM, "out of memory for the prompt");
        memcpy(*ids, r->prompt_ids, (size_t)r->n_prompt_ids * sizeof(int32_t));
        *n = (size_t)r->n_prompt_ids;
        return 0;
    }
    if (r->kind == OPENAI_COMPLETION) {
        if (server_tokenize(self->server, r->prompt_text, r->prompt_len, true, ids, n,
                            err) < 0)
            return *status = errno == ENOMEM ? 500 : 400, -1;
        return 0;
    }
    if (!self->render)
        return err_set(err, ENOTSUP, "%s", self->no_template_why);
    char *text = NULL;
    size_t len = 0;
    if (self->render(self->render_ctx, r->messages_json, r->tools_json, true, &text, &len,
                     err) < 0)
        return *status = errno == ENOMEM ? 500 : 400, -1;
    /* The template wrote the special tokens (bos) itself, as transformers'
     * apply_chat_template(tokenize=True) does: none added here. */
    int rc = server_tokenize(self->server, text, len, false, ids, n, err);
    if (rc < 0)
        *status = errno == ENOMEM ? 500 : 400;
    mem_free(text);
    return rc;
}

static void s_submit(http_t *self, conn_t *c)
{
    err_t err = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    int status;
    if (s_prompt(self, c, &ids, &n, &status, &err) < 0) {
        s_fail(c, status, err.msg, c->req.kind == OPENAI_CHAT ? "messages" : "prompt");
        return;
    }
    const openai_req_t *r = &c->req;
    const server_config_t *sc = server_config(self->server);
    int max_tokens = r->max_tokens;
    if (max_tokens < 0) {
        /* OpenAI's defaults: 16 for completions, the rest of the context for chat */
        max_tokens = r->kind == OPENAI_COMPLETION ? 16 : sc->max_context - (int)n;
        if (sc->max_tokens_limit > 0 && max_tokens > sc->max_tokens_limit)
            max_tokens = sc->max_tokens_limit;
        if (max_tokens < 0)
            max_tokens = 0;
    }
    server_request_t sr = {.gen = {
        .request_id = c->serial, .prompt = ids, .n_prompt = (int)n, .max_tokens = max_tokens,
        .temperature = r->temperature, .top_k = r->top_k, .top_p = r->top_p,
        .seed = r->has_seed ? r->seed : (uint64_t)time(NULL) * 2654435761u ^ c->serial,
        .n_stop = r->n_stop_ids, .stop_ids = r->stop_ids, .ignore_eos = r->ignore_eos,
        .logprobs = r->logprobs, .top_logprobs = r->top_logprobs}};
    char id[64];
    snprintf(id, sizeof id, "%s-%llu", r->kind == OPENAI_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)c->serial);
    c->out = openai_out_new(r, id, self->model_id, (long)time(NULL), sc->tokenizer);
    if (!c->out) {
        mem_free(ids);
        s_fail(c, 500, "out of memory for the response", NULL);
        return;
    }
    openai_out_set_prompt(c->out, (int)n);
    const sched_client_t client = s_client(self, c->serial);
    sched_error_t code;
    if (server_submit(self->server, &client, &sr, &code, &err) < 0)
        s_fail(c, openai_status_of(code), err.msg,
               code == SCHED_INVALID ? (c->req.kind == OPENAI_CHAT ? "messages" : "prompt")
                                     : NULL);
    else {
        c->status = 200;
        c->state = CONN_RUNNING;
        pthread_cond_broadcast(&c->cond);
    }
    mem_free(ids);
}

static void s_health(http_t *self, conn_t *c)
{
    server_status_t st;
    server_status(self->server, &st);
    char body[1024];
    if (st.healthy)
        snprintf(body, sizeof body, "{\"status\":\"ok\"}");
    else {
        char *e = openai_error_body(503, st.health_reason, NULL, "no_live_replica");
        snprintf(body, sizeof body, "%s", e ? e : "{\"status\":\"unavailable\"}");
        mem_free(e);
    }
    openai_buf_add(&c->resp, body, strlen(body));
    c->status = st.healthy ? 200 : 503;
    c->content_type = "application/json";
    c->state = CONN_DONE;
    pthread_cond_broadcast(&c->cond);
}

static void s_metrics(http_t *self, conn_t *c)
{
    char *text = NULL;
    size_t len = 0;
    if (server_metrics_text(self->server, &text, &len) < 0) {
        s_fail(c, 500, "out of memory for the metrics", NULL);
        return;
    }
    openai_buf_add(&c->resp, text, len);
    mem_free(text);
    c->status = 200;
    c->content_type = SERVER_METRICS_CONTENT_TYPE;
    c->state = CONN_DONE;
    pthread_cond_broadcast(&c->cond);
}

/* The loop: take the queued requests (bounded per turn). */
static void s_handle(void *ctx)
{
    http_t *self = ctx;
    uint64_t count;
    if (read(self->efd, &count, sizeof count) < 0) {
        /* EAGAIN: nothing counted since the last read */
    }
    pthread_mutex_lock(&self->mu);
    for (int i = 0; i < ITEMS_PER_TURN && self->q_len > 0; i++) {
        const item_t it = self->queue[self->q_head];
        self->q_head = (self->q_head + 1) % self->q_cap;
        self->q_len--;
        if (it.kind == ITEM_DROP) {
            const sched_client_t client = s_client(self, it.serial);
            server_drop(self->server, &client, it.serial);
            continue;
        }
        conn_t *c = s_lookup(self, it.serial);
        if (!c || c->gone)
            continue;
        switch (it.kind) {
        case ITEM_SUBMIT: s_submit(self, c); break;
        case ITEM_HEALTH: s_health(self, c); break;
        case ITEM_METRICS: s_metrics(self, c); break;
        case ITEM_DROP: break;
        }
    }
    if (self->q_len > 0) { /* more next turn */
        const uint64_t one = 1;
        if (write(self->efd, &one, sizeof one) < 0) {
            /* the counter is full: the loop is awake anyway */
        }
    }
    pthread_mutex_unlock(&self->mu);
}

static int s_deliver(void *ctx, const sched_event_t *ev)
{
    http_t *self = ctx;
    int rc = 0;
    pthread_mutex_lock(&self->mu);
    conn_t *c = s_lookup(self, ev->request_id);
    if (!c || c->gone || c->state != CONN_RUNNING || !c->out) {
        pthread_mutex_unlock(&self->mu);
        return -1;
    }
    switch (ev->kind) {
    case SCHED_TOKEN:
        if (openai_out_token(c->out, ev, &c->resp) == 1) {
            c->state = CONN_DONE;
            rc = 1;
        }
        break;
    case SCHED_DONE:
        openai_out_done(c->out, ev, &c->resp);
        c->state = CONN_DONE;
        break;
    case SCHED_FAILED:
        s_fail(c, openai_status_of(ev->code), ev->message, NULL);
        break;
    }
    if (c->state == CONN_DONE && !c->req.stream)
        c->content_type = "application/json";
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&self->mu);
    return rc;
}

/* ---- libmicrohttpd's side ---------------------------------------------------------- */

/* Queues c for the loop in a free slot (under mu); -1 when there is none. */
static int s_queue(http_t *self, conn_t *c, item_kind_t kind)
{
    if (self->stopping)
        return -1;
    int slot = -1;
    for (int i = 0; i < self->n_slots && slot < 0; i++)
        if (!self->slots[i])
            slot = i;
    if (slot < 0)
        return -1;
    c->slot = slot;
    c->serial = (++self->next_serial << SLOT_BITS) | (uint64_t)slot;
    if (s_enqueue(self, kind, c->serial) < 0) {
        c->slot = -1;
        return -1;
    }
    self->slots[slot] = c;
    c->state = CONN_QUEUED;
    return 0;
}

/* Hands c to the loop and waits for its answer (all of it, or for a stream
 * its acceptance), then queues the response. */
static enum MHD_Result s_run(http_t *self, struct MHD_Connection *mc, conn_t *c,
                             item_kind_t kind)
{
    pthread_mutex_lock(&self->mu);
    if (s_queue(self, c, kind) < 0) {
        pthread_mutex_unlock(&self->mu);
        return s_send_error(mc, 503, "too many requests in flight on this server", NULL,
                            NULL);
    }
    const bool stream = kind == ITEM_SUBMIT && c->req.stream;
    if (s_wait_for(self, c, stream ? CONN_RUNNING : CONN_DONE) < 0) {
        pthread_mutex_unlock(&self->mu);
        return MHD_NO; /* the peer has gone: close */
    }
    if (stream && c->status == 200) {
        c->refs++;
        pthread_mutex_unlock(&self->mu);
        struct MHD_Response *r =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, s_read, c, s_read_done);
        if (!r) {
            s_read_done(c);
            return MHD_NO;
        }
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        enum MHD_Result rc = MHD_queue_response(mc, 200, r);
        MHD_destroy_response(r);
        return rc;
    }
    /* The answer is complete; copy it out of the lock. */
    openai_buf_t body = c->resp;
    c->resp = (openai_buf_t){0};
    const int status = c->status ? c->status : 500;
    const char *type = c->content_type ? c->content_type : "application/json";
    const bool oom = body.oom;
    pthread_mutex_unlock(&self->mu);
    enum MHD_Result rc = oom ? s_send_error(mc, 500, "out of memory for the answer", NULL, NULL)
                             : s_send(mc, status, type, body.p ? body.p : "", body.len);
    openai_buf_free(&body);
    return rc;
}

static bool s_authorized(const http_t *self, struct MHD_Connection *mc)
{
    if (!self->api_key)
        return true;
    const char *h = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7) != 0)
        return false;
    const char *key = h + 7;
    const size_t n = strlen(self->api_key);
    if (strlen(key) != n)
        return false;
    unsigned char diff = 0; /* the same time whatever the key's first difference */
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(key[i] ^ self->api_key[i]);
    return diff == 0;
}

/* GET /v1/models (one: NULL) or /v1/models/ID. */
static enum MHD_Result s_models(http_t *self, struct MHD_Connection *mc, const char *one)
{
    if (one && strcmp(one, self->model_id) != 0) {
        char msg[600];
        snprintf(msg, sizeof msg, "the model '%.200s' does not exist: this server serves '%s'",
                 one, self->model_id);
        return s_send_error(mc, 404, msg, "model", "model_not_found");
    }
    json_t *m = json_pack("{s:s, s:s, s:I, s:s}", "id", self->model_id, "object", "model",
                          "created", (json_int_t)self->started, "owned_by", "moecluster");
    json_t *o = one ? m : json_pack("{s:s, s:[o]}", "object", "list", "data", m);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text)
        return s_send_error(mc, 500, "out of memory", NULL, NULL);
    enum MHD_Result rc = s_send(mc, 200, "application/json", text, strlen(text));
    free(text);
    return rc;
}

static enum MHD_Result s_route(http_t *self, struct MHD_Connection *mc, conn_t *c,
                               const char *url, const char *method)
{
    const bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    if (strncmp(url, "/v1/", 4) == 0 && !s_authorized(self, mc))
        return s_send_error(mc, 401, "a valid API key is required: send the header "
                            "'Authorization: Bearer KEY'", NULL, "invalid_api_key");
    if (strcmp(url, "/health") == 0 && get)
        return s_run(self, mc, c, ITEM_HEALTH);
    if (strcmp(url, "/metrics") == 0 && get)
        return s_run(self, mc, c, ITEM_METRICS);
    if (strcmp(url, "/v1/models") == 0 && get)
        return s_models(self, mc, NULL);
    if (strncmp(url, "/v1/models/", 11) == 0 && get)
        return s_models(self, mc, url + 11);
    openai_kind_t kind = strcmp(url, "/v1/completions") == 0        ? OPENAI_COMPLETION
                         : strcmp(url, "/v1/chat/completions") == 0 ? OPENAI_CHAT
                                                                    : 0;
    if (kind && post) {
        if (c->too_large) {
            char msg[128];
            snprintf(msg, sizeof msg, "the request body is larger than %zu bytes",
                     self->max_body);
            return s_send_error(mc, 413, msg, NULL, "request_too_large");
        }
        int status;
        const char *param;
        err_t err = {0};
        if (openai_parse(&c->req, kind, c->body.p ? c->body.p : "", c->body.len,
                         self->model_id, &status, &param, &err) < 0)
            return s_send_error(mc, status, err.msg, param,
                                status == 404 ? "model_not_found" : NULL);
        c->parsed = true;
        return s_run(self, mc, c, ITEM_SUBMIT);
    }
    if (kind || strcmp(url, "/v1/models") == 0 || strcmp(url, "/health") == 0 ||
        strcmp(url, "/metrics") == 0) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s is not allowed on %s", method, url);
        return s_send_error(mc, 405, msg, NULL, NULL);
    }
    char msg[160];
    snprintf(msg, sizeof msg, "no route %.100s", url);
    return s_send_error(mc, 404, msg, NULL, "not_found");
}

static enum MHD_Result s_access(void *cls, struct MHD_Connection *mc, const char *url,
                                const char *method, const char *version,
                                const char *upload_data, size_t *upload_data_size,
                                void **con_cls)
{
    (void)version;
    http_t *self = cls;
    conn_t *c = *con_cls;
    if (!c) {
        c = mem_calloc(1, sizeof *c);
        if (!c)
            return MHD_NO;
        c->http = self;
        c->refs = 1;
        c->slot = -1;
        pthread_cond_init(&c->cond, NULL);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
        c->fd = ci ? ci->connect_fd : -1;
        *con_cls = c;
        const char *cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > self->max_body) {
            char msg[128];
            snprintf(msg, sizeof msg, "the request body is larger than %zu bytes",
                     self->max_body);
            return s_send_error(mc, 413, msg, NULL, "request_too_large");
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        if (c->body.len + *upload_data_size > self->max_body)
            c->too_large = true; /* read and thrown away; 413 at the end */
        else
            openai_buf_add(&c->body, upload_data, *upload_data_size);
        if (c->body.oom)
            c->too_large = true;
        *upload_data_size = 0;
        return MHD_YES;
    }
    return s_route(self, mc, c, url, method);
}

/* The request is over (answered, or its connection closed). */
static void s_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                        enum MHD_RequestTerminationCode toe)
{
    (void)mc;
    http_t *self = cls;
    conn_t *c = *con_cls;
    if (!c)
        return;
    *con_cls = NULL;
    pthread_mutex_lock(&self->mu);
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK || c->state != CONN_DONE)
        s_gone(self, c);
    if (c->slot >= 0 && self->slots[c->slot] == c)
        self->slots[c->slot] = NULL;
    c->slot = -1;
    s_conn_unref(c);
    pthread_mutex_unlock(&self->mu);
}

/* ---- life ------------------------------------------------------------------------- */

static int s_address(const char *listen, struct sockaddr_storage *sa, socklen_t *len,
                     char *host, size_t host_size, int *port, err_t *err)
{
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen)
        return err_set(err, EINVAL, "--http %s: expected HOST:PORT", listen);
    size_t hl = (size_t)(colon - listen);
    const char *h = listen;
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl >= host_size)
        return err_set(err, EINVAL, "--http %s: the host is too long", listen);
    memcpy(host, h, hl);
    host[hl] = '\0';
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || p < 0 || p > 65535)
        return err_set(err, EINVAL, "--http %s: the port must be 0 to 65535", listen);
    *port = (int)p;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res);
    if (rc != 0)
        return err_set(err, EINVAL, "--http %s: %s", listen, gai_strerror(rc));
    memcpy(sa, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

http_t *http_new(server_t *server, const http_config_t *conf, err_t *err)
{
    http_t *self = mem_calloc(1, sizeof *self);
    if (!self) {
        err_set(err, ENOMEM, "out of memory for the HTTP front end");
        return NULL;
    }
    self->server = server;
    self->efd = -1;
    self->max_body = conf->max_body ? conf->max_body : HTTP_DEFAULT_MAX_BODY;
    self->n_slots = conf->max_connections > 0 ? conf->max_connections
                                              : HTTP_DEFAULT_MAX_CONNECTIONS;
    if (self->n_slots >= (1 << SLOT_BITS))
        self->n_slots = (1 << SLOT_BITS) - 1;
    self->q_cap = 2 * self->n_slots + 8;
    self->started = (long)time(NULL);
    snprintf(self->model_id, sizeof self->model_id, "%s", conf->model_id ? conf->model_id : "");
    self->render = conf->render;
    self->render_ctx = conf->render_ctx;
    snprintf(self->no_template_why, sizeof self->no_template_why, "%s",
             conf->no_template_why ? conf->no_template_why
                                   : "the model has no chat template: use /v1/completions");
    self->slots = mem_calloc((size_t)self->n_slots, sizeof *self->slots);
    self->queue = mem_calloc((size_t)self->q_cap, sizeof *self->queue);
    if (!self->slots || !self->queue ||
        (conf->api_key && !(self->api_key = mem_strdup(conf->api_key)))) {
        err_set(err, ENOMEM, "out of memory for the HTTP front end");
        goto fail;
    }
    if (pthread_mutex_init(&self->mu, NULL) != 0) {
        err_set(err, ENOMEM, "cannot make a mutex");
        goto fail;
    }
    self->mu_ready = true;
    self->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (self->efd < 0) {
        err_set(err, errno, "cannot make an eventfd: %s", strerror(errno));
        goto fail;
    }
    struct sockaddr_storage sa;
    socklen_t sa_len = 0;
    char host[256];
    int port = 0;
    if (s_address(conf->listen, &sa, &sa_len, host, sizeof host, &port, err) < 0)
        goto fail;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL;
    if (sa.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    const server_frontend_t fe = {.ctx = self, .socket = NULL, .fd = self->efd,
                                  .handle = s_handle, .deliver = s_deliver};
    self->front = server_add_frontend(server, &fe);
    if (self->front < 0) {
        err_set(err, ENOSPC, "too many front ends");
        goto fail;
    }
    const int idle = conf->idle_timeout_s > 0 ? conf->idle_timeout_s
                                              : HTTP_DEFAULT_IDLE_TIMEOUT_S;
    self->daemon = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, s_access, self, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_LIMIT, (unsigned)self->n_slots,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)idle, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)(64 * 1024), MHD_OPTION_NOTIFY_COMPLETED, s_completed, self,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 128u, MHD_OPTION_END);
    if (!self->daemon) {
        err_set(err, EADDRINUSE, "cannot listen for HTTP on %s (in use, or not an address "
                "of this host)", conf->listen);
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(self->daemon,
                                                         MHD_DAEMON_INFO_BIND_PORT);
    const int bound = di ? di->port : port;
    if (strchr(host, ':'))
        snprintf(self->url, sizeof self->url, "http://[%s]:%d", host, bound);
    else
        snprintf(self->url, sizeof self->url, "http://%s:%d", host[0] ? host : "0.0.0.0",
                 bound);
    return self;

fail:
    http_destroy(&self);
    return NULL;
}

void http_destroy(http_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    http_t *self = *self_p;
    int saved = errno;
    if (self->daemon) {
        /* Wake the connections waiting on the loop: it will not answer now. */
        pthread_mutex_lock(&self->mu);
        self->stopping = true;
        for (int i = 0; i < self->n_slots; i++)
            if (self->slots[i] && self->slots[i]->state != CONN_DONE) {
                self->slots[i]->gone = true;
                s_fail(self->slots[i], 503, "the server is stopping", NULL);
            }
        pthread_mutex_unlock(&self->mu);
        MHD_stop_daemon(self->daemon);
    }
    if (self->efd >= 0)
        close(self->efd);
    if (self->mu_ready)
        pthread_mutex_destroy(&self->mu);
    mem_free(self->slots);
    mem_free(self->queue);
    mem_free(self->api_key);
    mem_free(self);
    *self_p = NULL;
    errno = saved;
}

const char *http_url(const http_t *self)
{
    return self->url;
}
