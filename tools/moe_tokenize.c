/* moe-tokenize: encodes and decodes text with a Hugging Face tokenizer.json.
 *
 *   moe-tokenize --tokenizer FILE --batch-json < in.json > out.json
 *   moe-tokenize --tokenizer FILE --text "..."
 *
 * --batch-json reads a JSON array of strings and writes an array of objects
 * {"ids": [...], "ids_with_special": [...], "decoded": "..."}, one per
 * string: encode without and with special tokens, and decode of ids, the
 * form of the reference cases in shared/tokenizers/. --text prints the same
 * object for one string.
 *
 * Exit status: 0 on success, 2 for a usage error, 1 when loading, reading or
 * tokenizing fails.
 */
#include <errno.h>
#include <stdbool.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "core/arg.h"
#include "core/err.h"
#include "core/mem.h"
#include "tokenizer/tokenizer.h"

enum { EXIT_USAGE = 2 };

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: moe-tokenize --tokenizer FILE (--batch-json | --text TEXT)\n"
            "Encodes and decodes text with a Hugging Face tokenizer.json.\n"
            "\n"
            "  --tokenizer FILE    the tokenizer.json\n"
            "  --batch-json        read a JSON array of strings on stdin, write\n"
            "                      an array of {ids, ids_with_special, decoded}\n"
            "  --text TEXT         the same object for one string\n"
            "  -h, --help          this text\n"
            "\n"
            "Exit status: 0 done, 1 failed, 2 usage error.\n");
}

static json_t *s_id_array(const int32_t *ids, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_integer(ids[i])) < 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

/* The case object for one string, or NULL with err. */
static json_t *s_case(tokenizer_t *tok, const char *text, size_t len, err_t *err)
{
    int32_t *ids = NULL, *ids_sp = NULL;
    size_t n = 0, n_sp = 0;
    char *decoded = NULL;
    json_t *obj = NULL;
    if (tokenizer_encode(tok, text, len, 0, &ids, &n, err) < 0 ||
        tokenizer_encode(tok, text, len, 1, &ids_sp, &n_sp, err) < 0 ||
        tokenizer_decode(tok, ids, n, &decoded, err) < 0)
        goto cleanup;
    obj = json_pack("{s:o?,s:o?,s:s}", "ids", s_id_array(ids, n),
                    "ids_with_special", s_id_array(ids_sp, n_sp), "decoded",
                    decoded);
    if (!obj)
        err_set(err, ENOMEM, "out of memory");
cleanup:
    mem_free(ids);
    mem_free(ids_sp);
    mem_free(decoded);
    return obj;
}

typedef struct options {
    const char *path;   /* tokenizer.json */
    const char *text;   /* NULL: --batch-json */
    bool batch;
} options_t;

/* --tokenizer and one input (an arg_check_fn). */
static int s_check(void *ctx, err_t *err)
{
    const options_t *o = ctx;
    if (!o->path || o->batch == (o->text != NULL))
        return err_set(err, EINVAL, "need --tokenizer and one of --batch-json, --text");
    return 0;
}

int main(int argc, char **argv)
{
    options_t o = {0};
    const arg_opt_t table[] = {
        ARG_OPT_STRING("--tokenizer", &o.path),
        ARG_OPT_FLAG("--batch-json", &o.batch),
        ARG_OPT_STRING("--text", &o.text),
        ARG_OPT_HELP("-h"),
        ARG_OPT_END,
    };
    if (arg_parse_main("moe-tokenize", argc, argv, table, s_usage, s_check, &o) < 0)
        return EXIT_USAGE;
    const char *path = o.path, *text = o.text;
    err_t err = {0};
    int rc = 1;
    json_t *in = NULL, *out = NULL;
    tokenizer_t *tok = tokenizer_load(path, &err);
    if (!tok)
        goto cleanup;
    if (text) {
        out = s_case(tok, text, strlen(text), &err);
    } else {
        json_error_t jerr;
        in = json_loadf(stdin, JSON_ALLOW_NUL, &jerr);
        if (!json_is_array(in)) {
            err_set(&err, EINVAL, "stdin: not a JSON array of strings%s%s",
                    in ? "" : ": ", in ? "" : jerr.text);
            goto cleanup;
        }
        out = json_array();
        for (size_t i = 0; out && i < json_array_size(in); i++) {
            const json_t *s = json_array_get(in, i);
            if (!json_is_string(s)) {
                err_set(&err, EINVAL, "stdin: item %zu is not a string", i);
                json_decref(out);
                out = NULL;
                goto cleanup;
            }
            json_t *one = s_case(tok, json_string_value(s), json_string_length(s), &err);
            if (!one) {
                err_wrap(&err, "item %zu", i);
                json_decref(out);
                out = NULL;
                goto cleanup;
            }
            json_array_append_new(out, one);
        }
    }
    if (!out || json_dumpf(out, stdout, JSON_COMPACT) < 0 || fputc('\n', stdout) == EOF)
        goto cleanup;
    rc = 0;
cleanup:
    if (rc != 0)
        fprintf(stderr, "%s: %s\n", argv[0], err.msg[0] ? err.msg : "failed");
    json_decref(in);
    json_decref(out);
    tokenizer_destroy(&tok);
    return rc;
}
