/* openai: see openai.h. */
#include "coordinator/openai.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/mem.h"

void openai_buf_add(openai_buf_t *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = mem_realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void openai_buf_free(openai_buf_t *b)
{
    mem_free(b->p);
    *b = (openai_buf_t){0};
}

/* ---- errors -------------------------------------------------------------- */

static const char *s_error_type(int status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable";
    case 504: return "timeout";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

char *openai_error_body(int status, const char *message, const char *param, const char *code)
{
    json_t *e = json_pack("{s:{s:s, s:s, s:s?, s:s?}}", "error", "message",
                          message ? message : "", "type", s_error_type(status), "param", param,
                          "code", code);
    if (!e)  /* a message that is not UTF-8 */
        e = json_pack("{s:{s:s, s:s, s:n, s:n}}", "error", "message", "invalid request",
                      "type", s_error_type(status), "param", "code");
    char *text = e ? json_dumps(e, JSON_COMPACT) : NULL;
    json_decref(e);
    char *out = text ? mem_strdup(text) : NULL;
    free(text); /* jansson's allocator is malloc */
    return out;
}

int openai_status_of(sched_error_t code)
{
    switch (code) {
    case SCHED_OK: return 200;
    case SCHED_INVALID: return 400;
    case SCHED_BUSY: return 429;
    case SCHED_UNAVAILABLE: return 503;
    case SCHED_DEADLINE: return 504;
    case SCHED_CANCELLED: return 499;
    case SCHED_INTERNAL: break;
    }
    return 500;
}

/* ---- parsing --------------------------------------------------------------- */

typedef struct parse {
    int *status;
    const char **param;
    err_t *err;
} parse_t;

static int s_bad(parse_t *p, const char *field, const char *fmt, const char *what)
{
    *p->status = 400;
    *p->param = field;
    return err_set(p->err, EINVAL, fmt, field, what);
}

/* A JSON integer that fits an int32 within [lo, hi]. */
static int s_int(parse_t *p, json_t *v, const char *field, long long lo, long long hi,
                 int *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        char what[96];
        snprintf(what, sizeof what, "an integer in [%lld, %lld]", lo, hi);
        return s_bad(p, field, "'%s' must be %s", what);
    }
    *out = (int)json_integer_value(v);
    return 0;
}

static int s_number(parse_t *p, json_t *v, const char *field, double lo, double hi, float *out)
{
    if (!json_is_number(v) || !isfinite(json_number_value(v)) || json_number_value(v) < lo ||
        json_number_value(v) > hi) {
        char what[96];
        snprintf(what, sizeof what, "a number in [%g, %g]", lo, hi);
        return s_bad(p, field, "'%s' must be %s", what);
    }
    *out = (float)json_number_value(v);
    return 0;
}

static int s_bool(parse_t *p, json_t *v, const char *field, bool *out)
{
    if (!json_is_boolean(v))
        return s_bad(p, field, "'%s' must be %s", "true or false");
    *out = json_is_true(v);
    return 0;
}

/* An id list: JSON integers in [0, 2^31). */
static int s_ids(parse_t *p, json_t *arr, const char *field, int32_t **out, int *n)
{
    size_t len = json_array_size(arr);
    if (len == 0)
        return s_bad(p, field, "'%s' is %s", "an empty list of token ids");
    *out = mem_alloc(len * sizeof(int32_t));
    if (!*out)
        return err_set(p->err, ENOMEM, "out of memory for a prompt of %zu ids", len);
    for (size_t i = 0; i < len; i++) {
        int v;
        if (s_int(p, json_array_get(arr, i), field, 0, INT32_MAX, &v) < 0) {
            mem_free(*out);
            *out = NULL;
            return -1;
        }
        (*out)[i] = v;
    }
    *n = (int)len;
    return 0;
}

static int s_prompt(parse_t *p, openai_req_t *r, json_t *v)
{
    if (json_is_array(v) && json_array_size(v) == 1 &&
        (json_is_string(json_array_get(v, 0)) || json_is_array(json_array_get(v, 0))))
        v = json_array_get(v, 0); /* one prompt in a list */
    if (json_is_string(v)) {
        r->prompt_len = json_string_length(v);
        r->prompt_text = mem_alloc(r->prompt_len + 1);
        if (!r->prompt_text)
            return err_set(p->err, ENOMEM, "out of memory for the prompt");
        memcpy(r->prompt_text, json_string_value(v), r->prompt_len + 1);
        return 0;
    }
    if (json_is_array(v) && json_array_size(v) > 0 && json_is_integer(json_array_get(v, 0)))
        return s_ids(p, v, "prompt", &r->prompt_ids, &r->n_prompt_ids);
    if (json_is_array(v) && json_array_size(v) > 1)
        return s_bad(p, "prompt", "'%s': %s", "one prompt per request (a list of several "
                     "prompts is not supported)");
    return s_bad(p, "prompt", "'%s' must be %s", "a string, a list of token ids, or a list "
                 "holding one of these");
}

static int s_stop(parse_t *p, openai_req_t *r, json_t *v)
{
    json_t *one = json_is_string(v) ? v : NULL;
    if (!one && !json_is_array(v))
        return s_bad(p, "stop", "'%s' must be %s", "a string or a list of strings and ids");
    size_t n = one ? 1 : json_array_size(v);
    for (size_t i = 0; i < n; i++) {
        json_t *s = one ? one : json_array_get(v, i);
        if (json_is_integer(s)) {
            if (r->n_stop_ids == SCHED_MAX_STOP)
                return s_bad(p, "stop", "'%s' has %s", "more than 16 stop ids");
            if (s_int(p, s, "stop", 0, INT32_MAX, &(int){0}) < 0)
                return -1;
            r->stop_ids[r->n_stop_ids++] = (int32_t)json_integer_value(s);
            continue;
        }
        if (!json_is_string(s))
            return s_bad(p, "stop", "'%s' must be %s", "a string or a list of strings and ids");
        if (json_string_length(s) == 0)
            continue; /* an empty stop string never matches anything useful */
        if (r->n_stop == OPENAI_MAX_STOP)
            return s_bad(p, "stop", "'%s' has %s", "more than 4 stop strings");
        if (json_string_length(s) > OPENAI_MAX_STOP_LEN)
            return s_bad(p, "stop", "'%s' has %s", "a stop string longer than 256 bytes");
        if (!(r->stop[r->n_stop++] = mem_strdup(json_string_value(s))))
            return err_set(p->err, ENOMEM, "out of memory for a stop string");
    }
    return 0;
}

static int s_stop_ids(parse_t *p, openai_req_t *r, json_t *v)
{
    if (!json_is_array(v))
        return s_bad(p, "stop_token_ids", "'%s' must be %s", "a list of token ids");
    for (size_t i = 0; i < json_array_size(v); i++) {
        int id;
        if (r->n_stop_ids == SCHED_MAX_STOP)
            return s_bad(p, "stop_token_ids", "'%s' has %s", "more than 16 stop ids");
        if (s_int(p, json_array_get(v, i), "stop_token_ids", 0, INT32_MAX, &id) < 0)
            return -1;
        r->stop_ids[r->n_stop_ids++] = id;
    }
    return 0;
}

/* Dumps v (an array) as JSON text into *out. */
static int s_dump(parse_t *p, json_t *v, char **out)
{
    char *text = json_dumps(v, JSON_COMPACT);
    *out = text ? mem_strdup(text) : NULL;
    free(text);
    return *out ? 0 : err_set(p->err, ENOMEM, "out of memory for the messages");
}

static int s_messages(parse_t *p, openai_req_t *r, json_t *msgs, json_t *tools)
{
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return s_bad(p, "messages", "'%s' must be %s", "a non-empty list of messages");
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        json_t *m = json_array_get(msgs, i);
        if (!json_is_object(m) || !json_is_string(json_object_get(m, "role")))
            return s_bad(p, "messages", "'%s': %s", "every message must be an object with "
                         "a string 'role'");
    }
    if (tools && !json_is_null(tools) && !json_is_array(tools))
        return s_bad(p, "tools", "'%s' must be %s", "a list");
    if (s_dump(p, msgs, &r->messages_json) < 0)
        return -1;
    if (tools && json_is_array(tools) && s_dump(p, tools, &r->tools_json) < 0)
        return -1;
    return 0;
}

/* The fields we refuse rather than ignore when set to anything but their
 * default: their results would differ from what the client asked. */
static int s_unsupported(parse_t *p, json_t *o)
{
    json_t *v;
    if ((v = json_object_get(o, "n")) && !json_is_null(v) &&
        !(json_is_integer(v) && json_integer_value(v) == 1))
        return s_bad(p, "n", "'%s': %s", "only n = 1 is supported");
    if ((v = json_object_get(o, "best_of")) && !json_is_null(v) &&
        !(json_is_integer(v) && json_integer_value(v) == 1))
        return s_bad(p, "best_of", "'%s': %s", "only best_of = 1 is supported");
    if ((v = json_object_get(o, "echo")) && json_is_true(v))
        return s_bad(p, "echo", "'%s': %s", "echo is not supported");
    if ((v = json_object_get(o, "suffix")) && !json_is_null(v))
        return s_bad(p, "suffix", "'%s': %s", "suffix is not supported");
    static const char *const penalties[] = {"presence_penalty", "frequency_penalty", NULL};
    for (int i = 0; penalties[i]; i++)
        if ((v = json_object_get(o, penalties[i])) && !json_is_null(v) &&
            !(json_is_number(v) && json_number_value(v) == 0))
            return s_bad(p, penalties[i], "'%s': %s", "penalties are not supported (only 0)");
    if ((v = json_object_get(o, "logit_bias")) && !json_is_null(v) &&
        !(json_is_object(v) && json_object_size(v) == 0))
        return s_bad(p, "logit_bias", "'%s': %s", "logit_bias is not supported");
    return 0;
}

static int s_sampling(parse_t *p, openai_req_t *r, json_t *o)
{
    json_t *v;
    r->temperature = 1;
    r->top_p = 1;
    r->max_tokens = -1;
    const char *mt = r->kind == OPENAI_CHAT && json_object_get(o, "max_completion_tokens")
                         ? "max_completion_tokens"
                         : "max_tokens";
    if ((v = json_object_get(o, mt)) && !json_is_null(v) &&
        s_int(p, v, mt, 0, INT32_MAX, &r->max_tokens) < 0)
        return -1;
    if ((v = json_object_get(o, "temperature")) && !json_is_null(v) &&
        s_number(p, v, "temperature", 0, 100, &r->temperature) < 0)
        return -1;
    if ((v = json_object_get(o, "top_p")) && !json_is_null(v) &&
        s_number(p, v, "top_p", 1e-9, 1, &r->top_p) < 0)
        return -1;
    if ((v = json_object_get(o, "top_k")) && !json_is_null(v)) {
        if (s_int(p, v, "top_k", -1, INT32_MAX, &r->top_k) < 0)
            return -1;
        if (r->top_k < 0)
            r->top_k = 0; /* vLLM's -1: off */
    }
    if ((v = json_object_get(o, "seed")) && !json_is_null(v)) {
        if (!json_is_integer(v))
            return s_bad(p, "seed", "'%s' must be %s", "an integer");
        r->seed = (uint64_t)json_integer_value(v);
        r->has_seed = true;
    }
    if ((v = json_object_get(o, "stop")) && !json_is_null(v) && s_stop(p, r, v) < 0)
        return -1;
    if ((v = json_object_get(o, "stop_token_ids")) && !json_is_null(v) &&
        s_stop_ids(p, r, v) < 0)
        return -1;
    if ((v = json_object_get(o, "ignore_eos")) && !json_is_null(v) &&
        s_bool(p, v, "ignore_eos", &r->ignore_eos) < 0)
        return -1;
    return 0;
}

static int s_stream_and_logprobs(parse_t *p, openai_req_t *r, json_t *o)
{
    json_t *v;
    if ((v = json_object_get(o, "stream")) && !json_is_null(v) &&
        s_bool(p, v, "stream", &r->stream) < 0)
        return -1;
    if ((v = json_object_get(o, "stream_options")) && !json_is_null(v)) {
        if (!json_is_object(v))
            return s_bad(p, "stream_options", "'%s' must be %s", "an object");
        json_t *u = json_object_get(v, "include_usage");
        if (u && !json_is_null(u) && s_bool(p, u, "stream_options", &r->include_usage) < 0)
            return -1;
    }
    v = json_object_get(o, "logprobs");
    if (r->kind == OPENAI_COMPLETION) {
        if (v && !json_is_null(v)) {
            if (s_int(p, v, "logprobs", 0, SCHED_MAX_TOP_LOGPROBS, &r->top_logprobs) < 0)
                return -1;
            r->logprobs = true;
        }
        return 0;
    }
    if (v && !json_is_null(v) && s_bool(p, v, "logprobs", &r->logprobs) < 0)
        return -1;
    if ((v = json_object_get(o, "top_logprobs")) && !json_is_null(v)) {
        if (s_int(p, v, "top_logprobs", 0, SCHED_MAX_TOP_LOGPROBS, &r->top_logprobs) < 0)
            return -1;
        if (!r->logprobs && r->top_logprobs > 0)
            return s_bad(p, "top_logprobs", "'%s': %s", "needs 'logprobs': true");
    }
    return 0;
}

int openai_parse(openai_req_t *r, openai_kind_t kind, const char *body, size_t len,
                 const char *model_id, int *status, const char **param, err_t *err)
{
    *r = (openai_req_t){.kind = kind};
    *status = 400;
    *param = NULL;
    parse_t p = {status, param, err};
    json_error_t jerr;
    json_t *o = json_loadb(body, len, 0, &jerr);
    int rc = -1;
    if (!o) {
        err_set(err, EINVAL, "the body is not valid JSON: %s (line %d, column %d)", jerr.text,
                jerr.line, jerr.column);
        goto done;
    }
    if (!json_is_object(o)) {
        err_set(err, EINVAL, "the body must be a JSON object");
        goto done;
    }
    json_t *model = json_object_get(o, "model");
    if (model && !json_is_null(model) && !json_is_string(model)) {
        s_bad(&p, "model", "'%s' must be %s", "a string");
        goto done;
    }
    if (model && json_is_string(model) && strcmp(json_string_value(model), model_id) != 0) {
        *status = 404;
        *param = "model";
        err_set(err, ENOENT, "the model '%s' does not exist: this server serves '%s'",
                json_string_value(model), model_id);
        goto done;
    }
    if (s_unsupported(&p, o) < 0 || s_sampling(&p, r, o) < 0 ||
        s_stream_and_logprobs(&p, r, o) < 0)
        goto done;
    if (kind == OPENAI_COMPLETION) {
        json_t *prompt = json_object_get(o, "prompt");
        if (!prompt) {
            s_bad(&p, "prompt", "'%s' is %s", "required");
            goto done;
        }
        if (s_prompt(&p, r, prompt) < 0)
            goto done;
    } else if (s_messages(&p, r, json_object_get(o, "messages"), json_object_get(o, "tools")) <
               0)
        goto done;
    rc = 0;
done:
    json_decref(o);
    if (rc < 0) {
        if (errno == ENOMEM)
            *status = 500;
        openai_req_free(r);
    }
    return rc;
}

void openai_req_free(openai_req_t *r)
{
    mem_free(r->prompt_text);
    mem_free(r->prompt_ids);
    mem_free(r->messages_json);
    mem_free(r->tools_json);
    for (int i = 0; i < r->n_stop; i++)
        mem_free(r->stop[i]);
    *r = (openai_req_t){0};
}

/* ---- responses -------------------------------------------------------------- */

struct openai_out {
    const openai_req_t *req;
    char id[64];
    char model[256];
    long created;
    const tokenizer_t *tok;
    int n_prompt;
    int n_generated;
    size_t hold;                 /* bytes held back: longest stop string - 1 */
    openai_buf_t pending;        /* decoded text not yet shown */
    openai_buf_t text;           /* not streaming: everything shown */
    json_t *logprobs;            /* not streaming: the entries so far (array) */
    json_t *lp_tokens, *lp_values, *lp_tops, *lp_offsets; /* completions' shape */
    size_t text_offset;          /* completions: bytes of text before the token */
    bool role_sent;              /* chat stream: the first chunk carries the role */
    bool finished;
};

openai_out_t *openai_out_new(const openai_req_t *r, const char *id, const char *model,
                             long created, const tokenizer_t *tok)
{
    openai_out_t *self = mem_calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->req = r;
    snprintf(self->id, sizeof self->id, "%s", id);
    snprintf(self->model, sizeof self->model, "%s", model);
    self->created = created;
    self->tok = tok;
    for (int i = 0; i < r->n_stop; i++) {
        size_t n = strlen(r->stop[i]);
        if (n - 1 > self->hold)
            self->hold = n - 1;
    }
    return self;
}

void openai_out_destroy(openai_out_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    openai_out_t *self = *self_p;
    openai_buf_free(&self->pending);
    openai_buf_free(&self->text);
    json_decref(self->logprobs);
    json_decref(self->lp_tokens);
    json_decref(self->lp_values);
    json_decref(self->lp_tops);
    json_decref(self->lp_offsets);
    mem_free(self);
    *self_p = NULL;
}

void openai_out_set_prompt(openai_out_t *self, int n_prompt)
{
    self->n_prompt = n_prompt;
}

bool openai_out_finished(const openai_out_t *self)
{
    return self->finished;
}

static bool s_chat(const openai_out_t *self)
{
    return self->req->kind == OPENAI_CHAT;
}

/* A token's text for logprobs (mem_alloc'd): decoded alone, or "token_id:N". */
static char *s_token_text(const openai_out_t *self, int32_t id)
{
    char *text = NULL;
    if (self->tok && tokenizer_decode(self->tok, &id, 1, &text, NULL) == 0)
        return text;
    char buf[32];
    snprintf(buf, sizeof buf, "token_id:%d", (int)id);
    return mem_strdup(buf);
}

static json_t *s_bytes(const char *s)
{
    json_t *a = json_array();
    for (const unsigned char *c = (const unsigned char *)s; a && *c; c++)
        json_array_append_new(a, json_integer(*c));
    return a;
}

/* The chosen token's text: the text it completed in the stream (so that the
 * tokens spell the text, a character split over tokens going with its last),
 * "" for an EOS or a stop id. mem_alloc'd. */
static char *s_event_text(const sched_event_t *ev, bool hidden)
{
    const size_t n = hidden || !ev->text ? 0 : ev->text_len;
    char *t = mem_alloc(n + 1);
    if (t) {
        memcpy(t, ev->text, n);
        t[n] = '\0';
    }
    return t;
}

/* Chat's logprob entry of one token: {token, logprob, bytes, top_logprobs}. */
static json_t *s_chat_entry(const openai_out_t *self, const sched_event_t *ev, bool hidden)
{
    char *t = s_event_text(ev, hidden);
    json_t *tops = json_array();
    for (int i = 0; i < ev->n_top && tops; i++) {
        char *a = s_token_text(self, ev->top_ids[i]);
        json_array_append_new(tops, json_pack("{s:s, s:f, s:o}", "token", a ? a : "",
                                              "logprob", (double)ev->top_logprobs[i],
                                              "bytes", s_bytes(a ? a : "")));
        mem_free(a);
    }
    json_t *e = json_pack("{s:s, s:f, s:o, s:o}", "token", t ? t : "", "logprob",
                          (double)ev->logprob, "bytes", s_bytes(t ? t : ""), "top_logprobs",
                          tops ? tops : json_array());
    mem_free(t);
    return e;
}

/* Completions' logprobs of one token into the four parallel arrays. */
static void s_completion_entry(openai_out_t *self, const sched_event_t *ev, bool hidden,
                               json_t *tokens, json_t *values, json_t *tops, json_t *offsets)
{
    char *t = s_event_text(ev, hidden);
    json_array_append_new(tokens, json_string(t ? t : ""));
    json_array_append_new(values, json_real(ev->logprob));
    json_t *top = json_object();
    for (int i = 0; i < ev->n_top && top; i++) {
        char *a = s_token_text(self, ev->top_ids[i]);
        /* Two tokens may spell alike (a partial character): keep the better. */
        if (!json_object_get(top, a ? a : ""))
            json_object_set_new(top, a ? a : "", json_real(ev->top_logprobs[i]));
        mem_free(a);
    }
    json_array_append_new(tops, top ? top : json_null());
    json_array_append_new(offsets, json_integer((json_int_t)self->text_offset));
    mem_free(t);
}

static json_t *s_usage(const openai_out_t *self)
{
    return json_pack("{s:i, s:i, s:i}", "prompt_tokens", self->n_prompt, "completion_tokens",
                     self->n_generated, "total_tokens", self->n_prompt + self->n_generated);
}

/* Appends "data: <json>\n\n" (and consumes o). */
static void s_sse(openai_buf_t *buf, json_t *o)
{
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text) {
        buf->oom = true;
        return;
    }
    openai_buf_add(buf, "data: ", 6);
    openai_buf_add(buf, text, strlen(text));
    openai_buf_add(buf, "\n\n", 2);
    free(text);
}

/* One streamed chunk: text (may be empty), logprobs (consumed, may be
 * NULL), finish_reason (NULL: null). */
static void s_chunk(openai_out_t *self, const char *text, size_t len, json_t *logprobs,
                    const char *finish, openai_buf_t *buf)
{
    json_t *choice;
    if (s_chat(self)) {
        json_t *delta = json_object();
        if (!self->role_sent) {
            json_object_set_new(delta, "role", json_string("assistant"));
            self->role_sent = true;
        }
        if (len > 0 || !finish)
            json_object_set_new(delta, "content", json_stringn(text, len));
        choice = json_pack("{s:i, s:o, s:o, s:o}", "index", 0, "delta", delta, "logprobs",
                           logprobs ? logprobs : json_null(), "finish_reason",
                           finish ? json_string(finish) : json_null());
    } else
        choice = json_pack("{s:i, s:s%, s:o, s:o}", "index", 0, "text", text, len, "logprobs",
                           logprobs ? logprobs : json_null(), "finish_reason",
                           finish ? json_string(finish) : json_null());
    s_sse(buf, json_pack("{s:s, s:s, s:I, s:s, s:[o]}", "id", self->id, "object",
                         s_chat(self) ? "chat.completion.chunk" : "text_completion", "created",
                         (json_int_t)self->created, "model", self->model, "choices", choice));
}

/* Shows text: streamed at once, else kept for the body. */
static void s_show(openai_out_t *self, const char *text, size_t len, json_t *logprobs,
                   openai_buf_t *buf)
{
    self->text_offset += len;
    if (self->req->stream) {
        if (len > 0 || logprobs || (s_chat(self) && !self->role_sent))
            s_chunk(self, text, len, logprobs, NULL, buf);
        return;
    }
    json_decref(logprobs);
    openai_buf_add(&self->text, text, len);
}

/* The first match of a stop string in the pending text: its offset, or -1. */
static long s_find_stop(const openai_out_t *self)
{
    long best = -1;
    for (int i = 0; i < self->req->n_stop; i++) {
        const char *hit = memmem(self->pending.p, self->pending.len, self->req->stop[i],
                                 strlen(self->req->stop[i]));
        if (hit && (best < 0 || hit - self->pending.p < best))
            best = hit - self->pending.p;
    }
    return best;
}

/* How much of the pending text can be shown now: all but what could begin a
 * stop string, cut at a UTF-8 character boundary. */
static size_t s_showable(const openai_out_t *self, bool final)
{
    if (final || self->pending.len <= self->hold)
        return final ? self->pending.len : 0;
    size_t n = self->pending.len - self->hold;
    while (n > 0 && ((unsigned char)self->pending.p[n] & 0xC0) == 0x80)
        n--;
    return n;
}

static void s_pending_drop(openai_out_t *self, size_t n)
{
    memmove(self->pending.p, self->pending.p + n, self->pending.len - n);
    self->pending.len -= n;
    if (self->pending.p)
        self->pending.p[self->pending.len] = '\0';
}

static const char *s_finish_name(const char *why)
{
    return why && strcmp(why, "length") == 0 ? "length" : "stop";
}

/* The end: the final chunk (+ usage, [DONE]) or the whole body. */
static void s_finish(openai_out_t *self, const char *finish, openai_buf_t *buf)
{
    self->finished = true;
    if (self->req->stream) {
        s_chunk(self, "", 0, NULL, finish, buf);
        if (self->req->include_usage)
            s_sse(buf, json_pack("{s:s, s:s, s:I, s:s, s:[], s:o}", "id", self->id, "object",
                                 s_chat(self) ? "chat.completion.chunk" : "text_completion",
                                 "created", (json_int_t)self->created, "model", self->model,
                                 "choices", "usage", s_usage(self)));
        openai_buf_add(buf, "data: [DONE]\n\n", 14);
        return;
    }
    json_t *lp = json_null();
    if (self->req->logprobs && s_chat(self))
        lp = json_pack("{s:o}", "content",
                       self->logprobs ? json_incref(self->logprobs) : json_array());
    else if (self->req->logprobs)
        lp = json_pack("{s:O, s:O, s:O, s:O}", "tokens", self->lp_tokens, "token_logprobs",
                       self->lp_values, "top_logprobs", self->lp_tops, "text_offset",
                       self->lp_offsets);
    const char *text = self->text.p ? self->text.p : "";
    json_t *choice;
    if (s_chat(self))
        choice = json_pack("{s:i, s:{s:s, s:s%}, s:o, s:s}", "index", 0, "message", "role",
                           "assistant", "content", text, self->text.len, "logprobs",
                           lp ? lp : json_null(), "finish_reason", finish);
    else
        choice = json_pack("{s:i, s:s%, s:o, s:s}", "index", 0, "text", text, self->text.len,
                           "logprobs", lp ? lp : json_null(), "finish_reason", finish);
    json_t *body = json_pack("{s:s, s:s, s:I, s:s, s:[o], s:o}", "id", self->id, "object",
                             s_chat(self) ? "chat.completion" : "text_completion", "created",
                             (json_int_t)self->created, "model", self->model, "choices",
                             choice, "usage", s_usage(self));
    char *out = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!out) {
        buf->oom = true;
        return;
    }
    openai_buf_add(buf, out, strlen(out));
    free(out);
}

/* The logprobs of one token event: a streamed chunk's (returned) or kept. */
static json_t *s_logprobs(openai_out_t *self, const sched_event_t *ev, bool hidden)
{
    if (!self->req->logprobs || !ev->has_logprob)
        return NULL;
    if (s_chat(self)) {
        json_t *e = s_chat_entry(self, ev, hidden);
        if (self->req->stream)
            return json_pack("{s:[o]}", "content", e);
        if (!self->logprobs)
            self->logprobs = json_array();
        json_array_append_new(self->logprobs, e);
        return NULL;
    }
    if (self->req->stream) {
        json_t *t = json_array(), *v = json_array(), *tp = json_array(), *o = json_array();
        s_completion_entry(self, ev, hidden, t, v, tp, o);
        return json_pack("{s:o, s:o, s:o, s:o}", "tokens", t, "token_logprobs", v,
                         "top_logprobs", tp, "text_offset", o);
    }
    if (!self->lp_tokens) {
        self->lp_tokens = json_array();
        self->lp_values = json_array();
        self->lp_tops = json_array();
        self->lp_offsets = json_array();
    }
    s_completion_entry(self, ev, hidden, self->lp_tokens, self->lp_values, self->lp_tops,
                       self->lp_offsets);
    return NULL;
}

/* New decoded text: shown unless it may begin a stop string; 1 when a stop
 * string matched (the response is then finished). */
static int s_text(openai_out_t *self, const char *text, size_t len, json_t *logprobs,
                  bool final, openai_buf_t *buf)
{
    openai_buf_add(&self->pending, text, len);
    long stop = self->req->n_stop > 0 ? s_find_stop(self) : -1;
    if (stop >= 0) {
        s_show(self, self->pending.p, (size_t)stop, logprobs, buf);
        s_pending_drop(self, self->pending.len);
        s_finish(self, "stop", buf);
        return 1;
    }
    size_t n = s_showable(self, final);
    s_show(self, self->pending.p ? self->pending.p : "", n, logprobs, buf);
    s_pending_drop(self, n);
    return 0;
}

static bool s_is_stop_id(const openai_out_t *self, int32_t id)
{
    for (int i = 0; i < self->req->n_stop_ids; i++)
        if (self->req->stop_ids[i] == id)
            return true;
    return false;
}

int openai_out_token(openai_out_t *self, const sched_event_t *ev, openai_buf_t *buf)
{
    if (self->finished)
        return 1;
    self->n_generated++;
    /* A stop id ends the text without being shown, as an EOS does. */
    const bool hidden = ev->eos || s_is_stop_id(self, ev->token);
    json_t *lp = s_logprobs(self, ev, hidden);
    return s_text(self, hidden ? "" : ev->text ? ev->text : "", hidden ? 0 : ev->text_len, lp,
                  false, buf);
}

/* The text the stream decoder held back to the end (an unfinished
 * character, shown as U+FFFD) goes with the last token, so that the tokens
 * still spell the text. */
static void s_logprobs_tail(openai_out_t *self, const char *text, size_t len)
{
    json_t *last = NULL;
    const char *key = "token";
    if (s_chat(self) && self->logprobs)
        last = json_array_get(self->logprobs, json_array_size(self->logprobs) - 1);
    json_t *s = last ? json_object_get(last, key)
                     : self->lp_tokens ? json_array_get(self->lp_tokens,
                                                        json_array_size(self->lp_tokens) - 1)
                                       : NULL;
    if (!json_is_string(s) || len == 0)
        return;
    openai_buf_t b = {0};
    openai_buf_add(&b, json_string_value(s), json_string_length(s));
    openai_buf_add(&b, text, len);
    if (!b.oom)
        json_string_setn(s, b.p, b.len);
    if (last && !b.oom)
        json_object_set_new(last, "bytes", s_bytes(b.p));
    openai_buf_free(&b);
}

void openai_out_done(openai_out_t *self, const sched_event_t *ev, openai_buf_t *buf)
{
    if (self->finished)
        return;
    if (ev->prompt_tokens > 0)
        self->n_prompt = ev->prompt_tokens;
    if (!self->req->stream && self->req->logprobs && ev->text)
        s_logprobs_tail(self, ev->text, ev->text_len);
    if (s_text(self, ev->text ? ev->text : "", ev->text_len, NULL, true, buf) == 1)
        return;
    s_finish(self, s_finish_name(ev->finish_reason), buf);
}

void openai_out_stream_error(openai_out_t *self, int status, const char *message,
                             openai_buf_t *buf)
{
    if (self->finished)
        return;
    self->finished = true;
    char *body = openai_error_body(status, message, NULL, NULL);
    if (body) {
        openai_buf_add(buf, "data: ", 6);
        openai_buf_add(buf, body, strlen(body));
        openai_buf_add(buf, "\n\n", 2);
        mem_free(body);
    }
    openai_buf_add(buf, "data: [DONE]\n\n", 14);
}
