/* fuzz_http: an HTTP API request body through openai_parse (the parser of
 * /v1/completions and /v1/chat/completions bodies that the HTTP front end
 * runs on every request), then, for a body it accepted, the response it
 * makes: openai_out fed with made-up TOKEN events and a DONE, streamed or
 * whole.
 *
 * Input: a flags byte (bit 0: chat, else completions; bit 1: DONE says
 * "eos", else "length"), a 2-byte little-endian body length, the body, then
 * the token texts, separated by 0xFF bytes (made valid UTF-8 without NUL: the
 * scheduler's texts are).
 *
 * Promises checked (coordinator/openai.h): a refusal is 400 or 404 with a
 * message, and its error body is OpenAI's JSON; an accepted request is in
 * bounds (stop strings, logprobs, sampling); a streamed response is
 * "data: {json}\n\n" events ending with "data: [DONE]\n\n", a whole one is
 * one JSON object; the text answered is the tokens' text cut before the
 * first stop string, which it never contains.
 */
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/openai.h"
#include "core/mem.h"
#include "fuzz/fuzz_verbose.h"

#define MODEL_ID "fuzz-model"

enum { MAX_TOKENS = 64 };

static void s_check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_http: broken promise: %s\n", what);
        abort();
    }
}

/* The refusal's error body is OpenAI's shape. */
static void s_check_error(int status, const char *msg, const char *param)
{
    s_check(status == 400 || status == 404, "a refusal is 400 or 404");
    s_check(msg[0] != '\0', "a refusal says why");
    char *body = openai_error_body(status, msg, param, NULL);
    if (!body)
        return; /* out of memory */
    json_error_t jerr;
    json_t *j = json_loads(body, 0, &jerr);
    s_check(j != NULL, "the error body is JSON");
    json_t *e = json_object_get(j, "error");
    s_check(json_is_string(json_object_get(e, "message")), "error.message");
    s_check(json_is_string(json_object_get(e, "type")), "error.type");
    json_decref(j);
    mem_free(body);
}

static void s_check_request(const openai_req_t *r, openai_kind_t kind)
{
    s_check(r->kind == kind, "kind");
    if (kind == OPENAI_COMPLETION) {
        s_check((r->prompt_text != NULL) != (r->prompt_ids != NULL), "one prompt");
        s_check(!r->prompt_ids || r->n_prompt_ids > 0, "prompt ids counted");
    } else {
        s_check(r->messages_json != NULL, "messages");
        json_t *m = json_loads(r->messages_json, 0, NULL);
        s_check(json_is_array(m), "messages is a JSON array");
        json_decref(m);
    }
    s_check(r->n_stop >= 0 && r->n_stop <= OPENAI_MAX_STOP, "stop strings counted");
    for (int i = 0; i < r->n_stop; i++)
        s_check(r->stop[i] && strlen(r->stop[i]) <= OPENAI_MAX_STOP_LEN, "stop string");
    s_check(r->n_stop_ids >= 0 && r->n_stop_ids <= SCHED_MAX_STOP, "stop ids counted");
    s_check(r->top_logprobs >= 0 && r->top_logprobs <= SCHED_MAX_TOP_LOGPROBS, "top_logprobs");
    s_check(isfinite(r->temperature) && r->temperature >= 0, "temperature");
    s_check(isfinite(r->top_p) && r->top_p >= 0 && r->top_p <= 1, "top_p");
    s_check(r->max_tokens >= -1, "max_tokens");
}

/* Token texts from the rest of the input: valid UTF-8 without NUL (a byte
 * that is not part of a well-formed sequence becomes '?'). */
static int s_tokens(const uint8_t *p, size_t n, char **texts, size_t *lens)
{
    int k = 0;
    size_t start = 0;
    if (n == 0)
        return 0;
    for (size_t i = 0; i <= n && k < MAX_TOKENS; i++) {
        if (i < n && p[i] != 0xFF)
            continue;
        size_t len = i - start;
        char *t = malloc(len + 1);
        size_t o = 0;
        for (size_t j = start; j < i;) {
            unsigned c = p[j];
            int extra = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2
                      : (c & 0xF8) == 0xF0 ? 3 : -1;
            bool ok = extra >= 0 && j + (size_t)extra < i && c != 0 && c != 0xC0 && c != 0xC1 &&
                      c <= 0xF4;
            for (int e = 1; ok && e <= extra; e++)
                ok = (p[j + e] & 0xC0) == 0x80;
            if (ok && extra == 2) { /* no overlongs, no surrogates */
                ok = !(c == 0xE0 && p[j + 1] < 0xA0) && !(c == 0xED && p[j + 1] >= 0xA0);
            } else if (ok && extra == 3) {
                ok = !(c == 0xF0 && p[j + 1] < 0x90) && !(c == 0xF4 && p[j + 1] >= 0x90);
            }
            if (!ok) {
                t[o++] = '?';
                j++;
                continue;
            }
            memcpy(t + o, p + j, (size_t)extra + 1);
            o += (size_t)extra + 1;
            j += (size_t)extra + 1;
        }
        t[o] = '\0';
        texts[k] = t;
        lens[k] = o;
        k++;
        start = i + 1;
    }
    return k;
}

/* The text the response must carry: all texts, cut before the earliest
 * stop string. */
static char *s_expected(const openai_req_t *r, char **texts, int n)
{
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += strlen(texts[i]);
    char *all = malloc(len + 1);
    all[0] = '\0';
    for (int i = 0; i < n; i++)
        strcat(all, texts[i]);
    for (int s = 0; s < r->n_stop; s++) {
        if (!r->stop[s][0])
            continue;
        char *hit = strstr(all, r->stop[s]);
        if (hit)
            *hit = '\0';
    }
    return all;
}

/* Appends choices[0]'s text of a chunk or body (text, delta.content or
 * message.content) to *acc; notes a finish_reason. */
static void s_take(json_t *obj, openai_kind_t kind, bool stream, char **acc, bool *finished)
{
    json_t *ch = json_array_get(json_object_get(obj, "choices"), 0);
    if (!ch)
        return;
    json_t *t = kind == OPENAI_COMPLETION ? json_object_get(ch, "text")
                : stream ? json_object_get(json_object_get(ch, "delta"), "content")
                         : json_object_get(json_object_get(ch, "message"), "content");
    if (json_is_string(t)) {
        size_t a = strlen(*acc), b = json_string_length(t);
        *acc = realloc(*acc, a + b + 1);
        memcpy(*acc + a, json_string_value(t), b);
        (*acc)[a + b] = '\0';
    }
    const char *f = json_string_value(json_object_get(ch, "finish_reason"));
    if (f) {
        s_check(strcmp(f, "stop") == 0 || strcmp(f, "length") == 0, "finish_reason");
        *finished = true;
    }
}

/* The response in buf: SSE events or one JSON body; returns its text. */
static char *s_read_response(const openai_buf_t *buf, openai_kind_t kind, bool stream)
{
    char *acc = calloc(1, 1);
    bool finished = false;
    if (!stream) {
        json_t *j = json_loadb(buf->p, buf->len, 0, NULL);
        s_check(json_is_object(j), "a whole response is one JSON object");
        s_take(j, kind, false, &acc, &finished);
        json_decref(j);
        s_check(finished, "a whole response has a finish_reason");
        return acc;
    }
    size_t i = 0;
    bool done = false;
    while (i < buf->len) {
        s_check(!done, "nothing after [DONE]");
        s_check(buf->len - i > 6 && memcmp(buf->p + i, "data: ", 6) == 0, "data: events");
        const char *d = buf->p + i + 6;
        const char *e = memmem(d, buf->len - i - 6, "\n\n", 2);
        s_check(e != NULL, "an event ends with a blank line");
        s_check(!memchr(d, '\n', (size_t)(e - d)), "an event is one line");
        if (e - d == 6 && memcmp(d, "[DONE]", 6) == 0) {
            done = true;
        } else {
            json_t *j = json_loadb(d, (size_t)(e - d), 0, NULL);
            s_check(json_is_object(j), "an event is a JSON object");
            s_take(j, kind, true, &acc, &finished);
            json_decref(j);
        }
        i = (size_t)(e + 2 - buf->p);
    }
    s_check(done, "a stream ends with [DONE]");
    s_check(finished, "a stream has a finish_reason");
    return acc;
}

static void s_respond(const openai_req_t *r, uint8_t flags, char **texts, size_t *lens, int n)
{
    openai_out_t *out = openai_out_new(r, r->kind == OPENAI_CHAT ? "chatcmpl-1" : "cmpl-1",
                                       MODEL_ID, 1700000000, NULL);
    if (!out)
        return;
    openai_out_set_prompt(out, 3);
    openai_buf_t buf = {0};
    sched_client_t client = {0};
    int32_t top_ids[2] = {7, 8};
    float top_lp[2] = {-0.25f, -2.0f};
    int given = 0;
    bool stopped = false;
    for (int i = 0; i < n && !stopped; i++) {
        sched_event_t ev = {.kind = SCHED_TOKEN, .client = &client, .request_id = 1,
                            .token = 7, .index = i, .text = texts[i], .text_len = lens[i]};
        if (r->logprobs || r->top_logprobs > 0) {
            ev.has_logprob = true;
            ev.logprob = -0.25f;
            ev.n_top = r->top_logprobs < 2 ? r->top_logprobs : 2;
            ev.top_ids = top_ids;
            ev.top_logprobs = top_lp;
        }
        given++;
        stopped = openai_out_token(out, &ev, &buf) == 1;
    }
    if (!stopped) {
        sched_event_t done = {.kind = SCHED_DONE, .client = &client, .request_id = 1,
                              .prompt_tokens = 3, .generated_tokens = given,
                              .finish_reason = flags & 2 ? "eos" : "length"};
        openai_out_done(out, &done, &buf);
    }
    s_check(openai_out_finished(out), "finished after DONE or a stop string");
    if (!buf.oom) {
        char *got = s_read_response(&buf, r->kind, r->stream);
        char *want = s_expected(r, texts, given);
        for (int s = 0; s < r->n_stop; s++)
            s_check(!r->stop[s][0] || !strstr(got, r->stop[s]), "no stop string in the text");
        if (strcmp(got, want) != 0) {
            fprintf(stderr, "fuzz_http: text '%s', expected '%s'\n", got, want);
            s_check(0, "the text is the tokens' text cut before the first stop string");
        }
        free(want);
        free(got);
    }
    openai_buf_free(&buf);
    openai_out_destroy(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    const uint8_t flags = data[0];
    size_t body_len = (size_t)data[1] | (size_t)data[2] << 8;
    if (body_len > size - 3)
        body_len = size - 3;
    const char *body = (const char *)data + 3;
    const openai_kind_t kind = flags & 1 ? OPENAI_CHAT : OPENAI_COMPLETION;
    openai_req_t r;
    int status = 0;
    const char *param = NULL;
    err_t err = {0};
    int rc = openai_parse(&r, kind, body, body_len, MODEL_ID, &status, &param, &err);
    fuzz_verbose("openai_parse", rc, err.msg);
    if (rc != 0) {
        s_check_error(status, err.msg, param);
        return 0;
    }
    s_check_request(&r, kind);
    char *texts[MAX_TOKENS];
    size_t lens[MAX_TOKENS];
    int n = s_tokens(data + 3 + body_len, size - 3 - body_len, texts, lens);
    s_respond(&r, flags, texts, lens, n);
    for (int i = 0; i < n; i++)
        free(texts[i]);
    openai_req_free(&r);
    return 0;
}
