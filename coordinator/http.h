/* http: the OpenAI-compatible HTTP front end of the server (docs/HTTP.md).
 *
 * libmicrohttpd serves the routes, one thread per connection (bounded:
 * max_connections), with an idle timeout, a bounded request body (413
 * beyond) and a bounded header block. A connection's thread parses the
 * request (openai.h) and queues it; the server's loop, woken through an
 * eventfd it polls, takes the queue between steps (tokenizes, renders a chat
 * with the model's template, submits) and delivers the scheduler's events
 * back into the connection's buffer, which the connection's thread sends
 * (streamed as server-sent events, or as one body). A connection that closes
 * before its answer is complete is noticed within 100 ms and its sequence
 * dropped at once, its KV cache freed. One mutex guards the queue and every
 * connection's state; the loop holds it only to take or deliver.
 */
#ifndef MOE_COORDINATOR_HTTP_H
#define MOE_COORDINATOR_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "coordinator/server.h"
#include "core/err.h"

enum {
    HTTP_DEFAULT_MAX_BODY = 1 << 20,     /* bytes of a request body */
    HTTP_DEFAULT_MAX_CONNECTIONS = 256,
    HTTP_DEFAULT_IDLE_TIMEOUT_S = 60,
};

/* Renders a chat (messages and tools as JSON text; tools may be NULL) into
 * the prompt text (*out mem_alloc'd). -1 with errno/err: EINVAL for a chat
 * the template refuses (raise_exception: a 400 with its message). */
typedef int (*http_render_fn)(void *ctx, const char *messages_json, const char *tools_json,
                              bool add_generation_prompt, char **out, size_t *out_len,
                              err_t *err);

typedef struct http_config {
    const char *listen;          /* HOST:PORT ([V6]:PORT); port 0: a free one */
    const char *api_key;         /* NULL: none; else /v1/ needs "Bearer KEY" */
    const char *model_id;        /* the one model /v1/models lists (copied) */
    size_t max_body;             /* 0: HTTP_DEFAULT_MAX_BODY */
    int max_connections;         /* 0: HTTP_DEFAULT_MAX_CONNECTIONS */
    int idle_timeout_s;          /* 0: HTTP_DEFAULT_IDLE_TIMEOUT_S */
    http_render_fn render;       /* NULL: the model has no chat template */
    void *render_ctx;
    const char *no_template_why; /* with render NULL: why, for the 400 */
} http_config_t;

typedef struct http http_t;

/* Starts listening and registers with server (borrowed; outlives the
 * http_t). NULL with errno/err (naming the address). */
http_t *http_new(server_t *server, const http_config_t *conf, err_t *err);
/* Stops the daemon (its threads joined) first. */
void http_destroy(http_t **self_p);

/* "http://HOST:PORT" with the bound port (borrowed). */
const char *http_url(const http_t *self);

#endif /* MOE_COORDINATOR_HTTP_H */
