/* moe-template: renders a chat template against a file of cases, to check
 * any template against a reference by hand (as moe-tokenize does for
 * tokenizers).
 *
 *   moe-template --template FILE < cases.json > out.json
 *   moe-template --model DIR < cases.json
 *
 * cases.json is an array in the format of shared/chat-templates/NAME.cases.json:
 * objects with "messages", "add_generation_prompt", "bos_token" / "eos_token"
 * (null: undefined), "tools" (null: none); other keys ("id", "expected", ...)
 * are ignored. The context is what transformers' apply_chat_template passes
 * (documents = none too). The output is an array with, per case,
 * {"rendered": "..."} or {"error": "..."}. strftime_now() formats a fixed
 * time, 2026-01-15 10:00:00 (the reference cases' FIXED_NOW), unless --now.
 *
 * Exit status: 0 when every case was rendered or refused, 1 when the input
 * cannot be read, 2 for a usage error or a template that cannot be parsed.
 */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat/chat_template.h"
#include "core/arg.h"
#include "core/err.h"
#include "core/mem.h"

enum { EXIT_USAGE = 2 };

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: moe-template (--template FILE | --model DIR) [--now TIME] < cases.json\n"
            "Renders a chat template (Jinja, as transformers' apply_chat_template)\n"
            "for each case of a JSON array on stdin and prints a JSON array with,\n"
            "per case, {\"rendered\": \"...\"} or {\"error\": \"...\"}.\n"
            "\n"
            "  --template FILE     the template text (a .jinja file)\n"
            "  --model DIR         the template of a model directory\n"
            "                      (tokenizer_config.json or chat_template.jinja),\n"
            "                      with its bos_token / eos_token when a case\n"
            "                      gives none\n"
            "  --now TIME          what strftime_now() formats: YYYY-MM-DDTHH:MM:SS,\n"
            "                      or 'now' (default 2026-01-15T10:00:00, the time\n"
            "                      the reference cases were made with)\n"
            "  -h, --help          this text\n"
            "\n"
            "A case: {\"messages\": [...], \"add_generation_prompt\": true|false,\n"
            "\"bos_token\": \"<s>\"|null, \"eos_token\": \"</s>\"|null, \"tools\": [...]|null}\n"
            "(null tokens are undefined, null tools is none; documents is none).\n"
            "\n"
            "Exit status: 0 done, 1 bad input, 2 usage error or a template that\n"
            "cannot be parsed.\n");
}

typedef struct options {
    const char *path;
    const char *model;
    const char *now;
} options_t;

static int s_check(void *ctx, err_t *err)
{
    const options_t *o = ctx;
    if ((o->path != NULL) == (o->model != NULL))
        return err_set(err, EINVAL, "need one of --template FILE, --model DIR");
    return 0;
}

static char *s_read(const char *path, size_t *len, err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        err_set(err, errno, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 1 >= cap) {
            cap = cap ? cap * 2 : 65536;
            char *p = mem_realloc(buf, cap);
            if (!p) {
                mem_free(buf);
                fclose(f);
                err_set(err, ENOMEM, "out of memory reading %s", path);
                return NULL;
            }
            buf = p;
        }
        size_t k = fread(buf + n, 1, cap - n - 1, f);
        n += k;
        if (k == 0)
            break;
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        mem_free(buf);
        err_set(err, EIO, "cannot read %s", path);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* The context of one case; NULL with err when the case is malformed. */
static json_t *s_context(const json_t *c, const chat_template_t *t, err_t *err)
{
    const json_t *msgs = json_object_get(c, "messages");
    const json_t *agp = json_object_get(c, "add_generation_prompt");
    const json_t *tools = json_object_get(c, "tools");
    const json_t *bos = json_object_get(c, "bos_token");
    const json_t *eos = json_object_get(c, "eos_token");
    if (!json_is_object(c) || !json_is_array(msgs)) {
        err_set(err, EINVAL, "not an object with a \"messages\" array");
        return NULL;
    }
    if (agp && !json_is_boolean(agp)) {
        err_set(err, EINVAL, "\"add_generation_prompt\" is not a boolean");
        return NULL;
    }
    json_t *ctx = json_pack("{s:O, s:O, s:n, s:b}", "messages", msgs, "tools",
                            tools ? tools : json_null(), "documents", "add_generation_prompt",
                            json_is_true(agp));
    if (!ctx) {
        err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    const char *b = json_is_string(bos) ? json_string_value(bos) : bos ? NULL : chat_template_bos(t);
    const char *e = json_is_string(eos) ? json_string_value(eos) : eos ? NULL : chat_template_eos(t);
    if ((b && json_object_set_new(ctx, "bos_token", json_string(b)) < 0) ||
        (e && json_object_set_new(ctx, "eos_token", json_string(e)) < 0)) {
        json_decref(ctx);
        err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    return ctx;
}

int main(int argc, char **argv)
{
    options_t o = {0};
    const arg_opt_t table[] = {
        ARG_OPT_STRING("--template", &o.path),
        ARG_OPT_STRING("--model", &o.model),
        ARG_OPT_STRING("--now", &o.now),
        ARG_OPT_HELP("-h"),
        ARG_OPT_END,
    };
    if (arg_parse_main("moe-template", argc, argv, table, s_usage, s_check, &o) < 0)
        return EXIT_USAGE;
    err_t err = {0};
    int rc = 1;
    char *src = NULL;
    chat_template_t *t = NULL;
    json_t *in = NULL, *out = NULL;
    struct tm now = {.tm_year = 2026 - 1900, .tm_mon = 0, .tm_mday = 15, .tm_hour = 10};
    bool fixed = true;
    if (o.now && !strcmp(o.now, "now")) {
        fixed = false;
    } else if (o.now) {
        memset(&now, 0, sizeof now);
        char *end = strptime(o.now, "%Y-%m-%dT%H:%M:%S", &now);
        if (!end || *end) {
            fprintf(stderr, "moe-template: --now must be YYYY-MM-DDTHH:MM:SS or 'now' "
                    "(got '%s') (see --help)\n", o.now);
            return EXIT_USAGE;
        }
    }
    if (fixed) {
        time_t tt = timegm(&now); /* fills tm_wday / tm_yday for %A, %j... */
        gmtime_r(&tt, &now);
    }
    if (o.path) {
        size_t len;
        if (!(src = s_read(o.path, &len, &err)))
            goto cleanup;
        t = chat_template_new(src, len, &err);
        if (!t)
            err_wrap(&err, "%s", o.path);
    } else {
        t = chat_template_load(o.model, &err);
    }
    if (!t) {
        rc = errno == EINVAL ? EXIT_USAGE : 1;
        goto cleanup;
    }
    chat_template_set_now(t, fixed ? &now : NULL);
    json_error_t jerr;
    in = json_loadf(stdin, JSON_ALLOW_NUL, &jerr);
    if (!json_is_array(in)) {
        err_set(&err, EINVAL, "stdin: not a JSON array of cases%s%s", in ? "" : ": ",
                in ? "" : jerr.text);
        goto cleanup;
    }
    out = json_array();
    for (size_t i = 0; out && i < json_array_size(in); i++) {
        json_t *ctx = s_context(json_array_get(in, i), t, &err);
        if (!ctx) {
            err_wrap(&err, "stdin: case %zu", i);
            goto cleanup;
        }
        char *text = NULL;
        size_t len = 0;
        err_t rerr = {0};
        json_t *one;
        if (chat_template_render(t, ctx, &text, &len, &rerr) == 0)
            one = json_pack("{s:s%}", "rendered", text, len);
        else
            one = json_pack("{s:s}", "error", rerr.msg);
        free(text);
        json_decref(ctx);
        if (!one || json_array_append_new(out, one) < 0) {
            err_set(&err, ENOMEM, "out of memory");
            goto cleanup;
        }
    }
    if (!out || json_dumpf(out, stdout, JSON_COMPACT) < 0 || fputc('\n', stdout) == EOF)
        goto cleanup;
    rc = 0;
cleanup:
    if (rc != 0)
        fprintf(stderr, "moe-template: %s\n", err.msg[0] ? err.msg : "failed");
    json_decref(in);
    json_decref(out);
    chat_template_destroy(&t);
    mem_free(src);
    return rc;
}
