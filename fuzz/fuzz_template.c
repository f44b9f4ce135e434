/* fuzz_template: chat_template_new on arbitrary template text, then
 * chat_template_render with a context, as the coordinator does for each
 * /v1/chat/completions request. An input is the template, optionally
 * followed by a NUL byte and a JSON object used as the context (each key a
 * variable); without one (or when it does not parse) a fixed conversation
 * with tools is used. Checks what chat_template.h promises: a refusal has a
 * message and errno EINVAL or ENOMEM, an output is NUL-terminated at its
 * length, and rendering is deterministic (a second render gives the same
 * bytes or the same error) with strftime_now at a fixed time.
 */
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat/chat_template.h"
#include "fuzz/fuzz_verbose.h"

static void s_check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_template: broken promise: %s\n", what);
        abort();
    }
}

static const char S_CONTEXT[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
    " {\"role\": \"user\", \"content\": \"H\\u00e9llo \\\"w\\\"\\n\\t\\u4e16 \\ud83d\\ude00\"},"
    " {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"c1\","
    " \"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": {\"b\": [1, 2.5,"
    " true, null]}}}]}, {\"role\": \"tool\", \"content\": \"{}\", \"tool_call_id\": \"c1\"},"
    " {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"p\"}, {\"type\":"
    " \"image\"}]}], \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\","
    " \"parameters\": {\"type\": \"object\", \"properties\": {\"b\": {\"type\": \"array\"}}}}}],"
    " \"documents\": null, \"add_generation_prompt\": true, \"bos_token\": \"<s>\","
    " \"eos_token\": \"</s>\"}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static json_t *fixed;
    if (!fixed)
        fixed = json_loads(S_CONTEXT, 0, NULL);
    const char *src = (const char *)data;
    const uint8_t *nul = memchr(data, '\0', size);
    size_t src_len = nul ? (size_t)(nul - data) : size;
    json_t *ctx = NULL;
    if (nul)
        ctx = json_loadb((const char *)nul + 1, size - src_len - 1, JSON_DECODE_ANY, NULL);
    if (!json_is_object(ctx)) {
        json_decref(ctx);
        ctx = json_incref(fixed);
    }
    err_t err = {0};
    errno = 0;
    chat_template_t *t = chat_template_new(src, src_len, &err);
    fuzz_verbose("chat_template_new", t ? 0 : -1, err.msg);
    if (!t) {
        s_check(errno == EINVAL || errno == ENOMEM, "parse error is EINVAL or ENOMEM");
        s_check(err.msg[0] != '\0', "parse error has a message");
        json_decref(ctx);
        return 0;
    }
    struct tm now = {.tm_year = 126, .tm_mon = 0, .tm_mday = 15, .tm_hour = 10, .tm_wday = 4};
    chat_template_set_now(t, &now);
    chat_template_set_max_steps(t, 200000); /* far above real templates, within -timeout */
    char *out[2] = {NULL, NULL};
    size_t len[2] = {0, 0};
    int rc[2];
    err_t rerr[2] = {{0}, {0}};
    for (int k = 0; k < 2; k++) {
        errno = 0;
        rc[k] = chat_template_render(t, ctx, &out[k], &len[k], &rerr[k]);
        if (rc[k] == 0) {
            s_check(out[k] != NULL && out[k][len[k]] == '\0', "output NUL-terminated at its length");
        } else {
            s_check(out[k] == NULL && len[k] == 0, "no output on failure");
            s_check(errno == EINVAL || errno == ENOMEM, "render error is EINVAL or ENOMEM");
        }
    }
    fuzz_verbose("chat_template_render", rc[0], rerr[0].msg);
    s_check(rc[0] == rc[1], "the same result twice");
    if (rc[0] == 0)
        s_check(len[0] == len[1] && memcmp(out[0], out[1], len[0]) == 0, "the same output twice");
    else
        s_check(strcmp(rerr[0].msg, rerr[1].msg) == 0, "the same error twice");
    free(out[0]);
    free(out[1]);
    chat_template_destroy(&t);
    json_decref(ctx);
    return 0;
}
