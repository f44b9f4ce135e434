/* openai: the OpenAI API's JSON, for the HTTP front end (docs/HTTP.md).
 *
 * openai_parse reads a /v1/completions or /v1/chat/completions body into an
 * openai_req_t, refusing (400, or 404 for another model) with OpenAI's
 * error fields (message, param) whatever we do not support rather than
 * ignoring it. openai_out_t turns the scheduler's events of one request into
 * the response: server-sent-event chunks while streaming, or one body at the
 * end; it matches stop strings on the decoded text (holding back what could
 * begin one, the stop string itself never shown) and spells logprobs in the
 * shape of each endpoint. No threads, no sockets: http.c calls it under its
 * lock, on the server's loop thread.
 */
#ifndef MOE_COORDINATOR_OPENAI_H
#define MOE_COORDINATOR_OPENAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coordinator/sched.h"
#include "core/err.h"
#include "tokenizer/tokenizer.h"

enum {
    OPENAI_MAX_STOP = 4,          /* stop strings per request (OpenAI's limit) */
    OPENAI_MAX_STOP_LEN = 256,    /* bytes of one stop string */
};

/* A growing byte buffer; oom set (and the content kept) when it cannot grow. */
typedef struct openai_buf {
    char *p;
    size_t len, cap;
    bool oom;
} openai_buf_t;

void openai_buf_add(openai_buf_t *b, const char *s, size_t n);
void openai_buf_free(openai_buf_t *b);

typedef enum openai_kind { OPENAI_COMPLETION = 1, OPENAI_CHAT } openai_kind_t;

typedef struct openai_req {
    openai_kind_t kind;
    char *prompt_text;            /* completions: the prompt as text, or NULL */
    size_t prompt_len;
    int32_t *prompt_ids;          /* completions: the prompt as ids, or NULL */
    int n_prompt_ids;
    char *messages_json;          /* chat: the messages array, as JSON text */
    char *tools_json;             /* chat: the tools array, or NULL */
    int max_tokens;               /* -1: not given */
    float temperature;
    float top_p;
    int top_k;
    uint64_t seed;
    bool has_seed;
    int n_stop;
    char *stop[OPENAI_MAX_STOP];
    int n_stop_ids;
    int32_t stop_ids[SCHED_MAX_STOP];
    bool stream;
    bool include_usage;
    bool logprobs;
    int top_logprobs;
    bool ignore_eos;
} openai_req_t;

/* Parses body for kind. model_id: the one model served. 0, or -1 with
 * *status (400, 404) and err; *param (static, may be NULL) names the field.
 * On failure r holds nothing to free; on success free with openai_req_free. */
int openai_parse(openai_req_t *r, openai_kind_t kind, const char *body, size_t len,
                 const char *model_id, int *status, const char **param, err_t *err);
void openai_req_free(openai_req_t *r);

/* An OpenAI error body {"error": {"message", "type", "param", "code"}}
 * (mem_alloc'd, NUL-terminated; NULL when out of memory). The type follows
 * the status: 400 invalid_request_error, 401 authentication_error, 404
 * not_found_error, 413 invalid_request_error, 429 rate_limit_error, 5xx
 * server_error / service_unavailable / timeout. */
char *openai_error_body(int status, const char *message, const char *param, const char *code);

/* The HTTP status of a scheduler error. */
int openai_status_of(sched_error_t code);

typedef struct openai_out openai_out_t;

/* The response of r (borrowed until destroy). id: "cmpl-..."/"chatcmpl-...".
 * tok: NULL, or spells tokens for logprobs. NULL when out of memory. */
openai_out_t *openai_out_new(const openai_req_t *r, const char *id, const char *model,
                             long created, const tokenizer_t *tok);
void openai_out_destroy(openai_out_t **self_p);

/* The prompt's length, for usage (known once tokenized). */
void openai_out_set_prompt(openai_out_t *self, int n_prompt);

/* A TOKEN event: appends what it makes to buf (streaming: SSE chunks; else
 * nothing until the end). Returns 1 when a stop string matched: the
 * response is complete (finished), the sequence may be dropped. */
int openai_out_token(openai_out_t *self, const sched_event_t *ev, openai_buf_t *buf);

/* The DONE event: appends the last chunks and [DONE] (streaming) or the whole
 * body. */
void openai_out_done(openai_out_t *self, const sched_event_t *ev, openai_buf_t *buf);

/* A failure after the stream began: an error chunk and [DONE]. */
void openai_out_stream_error(openai_out_t *self, int status, const char *message,
                             openai_buf_t *buf);

bool openai_out_finished(const openai_out_t *self);

#endif /* MOE_COORDINATOR_OPENAI_H */
