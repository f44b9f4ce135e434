/* test_tokenizer: every reference case of every tokenizer in $MOE_TOKENIZERS
 * (encode with and without special tokens, decode, stream decode), the
 * moe-tokenize contract, and malformed input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "tests/testutil.h"
#include "tokenizer/tokenizer.h"

static const char *s_families[] = {"llama2", "qwen3", "deepseek_v3", "gptoss"};

static char *s_path(const char *family, const char *file)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s/%s",
             testutil_env("MOE_TOKENIZERS", "../shared/tokenizers"), family, file);
    return buf;
}

static json_t *s_cases(const char *family)
{
    json_error_t jerr;
    json_t *root = json_load_file(s_path(family, "cases.json"), JSON_ALLOW_NUL, &jerr);
    assert_non_null(root);
    return root;
}

static int s_ids_equal(const json_t *want, const int32_t *ids, size_t n)
{
    if (json_array_size(want) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (json_integer_value(json_array_get(want, i)) != ids[i])
            return 0;
    return 1;
}

/* 1 when s[0..n) is complete, valid UTF-8. */
static int s_valid_utf8(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        size_t k = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2
                 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (k == 0 || i + k > n)
            return 0;
        for (size_t j = 1; j < k; j++)
            if ((u[i + j] & 0xC0) != 0x80)
                return 0;
        i += k;
    }
    return 1;
}

/* The text of ids[0..n) fed to st id by id, then flushed (mem_alloc'd,
 * NUL-terminated); every part must be whole UTF-8 without a NUL. */
static char *s_streamed(tokenizer_stream_t *st, const int32_t *ids, size_t n, const char *what)
{
    err_t err = {0};
    size_t cap = 64, at = 0;
    char *text = mem_alloc(cap);
    assert_non_null(text);
    for (size_t k = 0; k <= n; k++) {
        const char *part;
        size_t len;
        int rc = k < n ? tokenizer_stream_feed(st, ids[k], &part, &len, &err)
                       : tokenizer_stream_flush(st, &part, &len, &err);
        assert_int_equal(rc, 0);
        if (!s_valid_utf8(part, len))
            fail_msg("%s: part %zu of %zu ids (%d %d) is no UTF-8: %zu bytes %02x", what, k,
                     n, n > 0 ? (int)ids[0] : -1, n > 1 ? (int)ids[1] : -1, len,
                     len ? (unsigned char)part[0] : 0);
        assert_int_equal(strlen(part), len);
        while (at + len >= cap) {
            cap *= 2;
            text = mem_realloc(text, cap);
            assert_non_null(text);
        }
        memcpy(text + at, part, len);
        at += len;
    }
    text[at] = '\0';
    return text;
}

static void s_check_family(const char *family)
{
    err_t err = {0};
    tokenizer_t *tok = tokenizer_load(s_path(family, "tokenizer.json"), &err);
    if (!tok)
        fail_msg("%s: %s", family, err.msg);
    tokenizer_stream_t *st = tokenizer_stream_new(tok);
    assert_non_null(st);
    json_t *root = s_cases(family);
    const json_t *cases = json_object_get(root, "cases");
    assert_int_equal(json_array_size(cases), 107);
    int failed = 0;
    for (size_t i = 0; i < json_array_size(cases); i++) {
        const json_t *c = json_array_get(cases, i);
        const json_t *text = json_object_get(c, "text");
        int32_t *ids = NULL, *ids_sp = NULL;
        size_t n = 0, n_sp = 0;
        char *dec = NULL;
        assert_int_equal(tokenizer_encode(tok, json_string_value(text),
                                          json_string_length(text), 0, &ids, &n, &err), 0);
        assert_int_equal(tokenizer_encode(tok, json_string_value(text),
                                          json_string_length(text), 1, &ids_sp, &n_sp, &err), 0);
        assert_int_equal(tokenizer_decode(tok, ids, n, &dec, &err), 0);
        const char *want_dec = json_string_value(json_object_get(c, "decoded"));
        int ok = s_ids_equal(json_object_get(c, "ids"), ids, n) &&
                 s_ids_equal(json_object_get(c, "ids_with_special"), ids_sp, n_sp) &&
                 strcmp(dec, want_dec) == 0;
        /* The stream, fed id by id, yields only whole characters and adds
         * up to decode(). */
        char *acc = s_streamed(st, ids, n, family);
        if (strcmp(acc, dec) != 0)
            ok = 0;
        if (!ok) {
            print_error("%s case %zu (%s) differs\n", family, i, json_string_value(text));
            failed++;
        }
        mem_free(acc);
        mem_free(dec);
        mem_free(ids);
        mem_free(ids_sp);
    }
    json_decref(root);
    tokenizer_stream_destroy(&st);
    tokenizer_stream_destroy(&st);
    tokenizer_destroy(&tok);
    tokenizer_destroy(&tok);
    assert_int_equal(failed, 0);
}

static void test_llama2(void **state) { (void)state; s_check_family(s_families[0]); }
static void test_qwen3(void **state) { (void)state; s_check_family(s_families[1]); }
static void test_deepseek_v3(void **state) { (void)state; s_check_family(s_families[2]); }
static void test_gptoss(void **state) { (void)state; s_check_family(s_families[3]); }

/* moe-tokenize --batch-json on the texts of one family gives its cases. */
/* Added tokens marked special (control tokens) are told apart from added
 * tokens that are text (Qwen3's <tool_call>) and from the vocabulary. */
static void test_special_ids(void **state)
{
    (void)state;
    err_t err = {0};
    tokenizer_t *tok = tokenizer_load(s_path("qwen3", "tokenizer.json"), &err);
    assert_non_null(tok);
    assert_true(tokenizer_is_special(tok, 151643));   /* <|endoftext|> */
    assert_true(tokenizer_is_special(tok, 151645));   /* <|im_end|> */
    assert_false(tokenizer_is_special(tok, 151657));  /* <tool_call>: added, not special */
    assert_false(tokenizer_is_special(tok, 100));     /* an ordinary token */
    assert_false(tokenizer_is_special(tok, -1));
    assert_false(tokenizer_is_special(tok, tokenizer_n_ids(tok)));
    tokenizer_destroy(&tok);
}

static void test_cli_batch(void **state)
{
    (void)state;
    json_t *root = s_cases("qwen3");
    const json_t *cases = json_object_get(root, "cases");
    json_t *texts = json_array();
    for (size_t i = 0; i < json_array_size(cases); i++)
        json_array_append(texts, json_object_get(json_array_get(cases, i), "text"));
    char *dir = testutil_mkdtemp("tokenize");
    assert_non_null(dir);
    char in[4096], cmd[16384];
    snprintf(in, sizeof in, "%s/in.json", dir);
    assert_int_equal(json_dump_file(texts, in, 0), 0);
    snprintf(cmd, sizeof cmd, "%s/moe-tokenize --tokenizer %s --batch-json < %s",
             testutil_env("MOE_BIN", "build/bin"), s_path("qwen3", "tokenizer.json"), in);
    char *out = NULL;
    assert_int_equal(testutil_run(cmd, &out), 0);
    json_error_t jerr;
    json_t *got = json_loads(out, 0, &jerr);
    assert_non_null(got);
    assert_int_equal(json_array_size(got), json_array_size(cases));
    for (size_t i = 0; i < json_array_size(cases); i++) {
        const json_t *want = json_array_get(cases, i), *g = json_array_get(got, i);
        assert_true(json_equal(json_object_get(want, "ids"), json_object_get(g, "ids")));
        assert_true(json_equal(json_object_get(want, "ids_with_special"),
                               json_object_get(g, "ids_with_special")));
        assert_true(json_equal(json_object_get(want, "decoded"), json_object_get(g, "decoded")));
    }
    /* --text, --help and a usage error. */
    snprintf(cmd, sizeof cmd, "%s/moe-tokenize --tokenizer %s --text 'Hello world'",
             testutil_env("MOE_BIN", "build/bin"), s_path("llama2", "tokenizer.json"));
    free(out);
    out = NULL;
    assert_int_equal(testutil_run(cmd, &out), 0);
    assert_non_null(strstr(out, "\"ids_with_special\":[1,"));
    free(out);
    out = NULL;
    snprintf(cmd, sizeof cmd, "%s/moe-tokenize --help", testutil_env("MOE_BIN", "build/bin"));
    assert_int_equal(testutil_run(cmd, &out), 0);
    free(out);
    out = NULL;
    snprintf(cmd, sizeof cmd, "%s/moe-tokenize --text x 2>/dev/null",
             testutil_env("MOE_BIN", "build/bin"));
    assert_int_equal(testutil_run(cmd, &out), 2);
    free(out);
    json_decref(got);
    json_decref(texts);
    json_decref(root);
    testutil_rmtree(dir);
    free(dir);
}

static void s_expect_load_error(const char *dir, const char *name, const char *body,
                                const char *needle)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    assert_int_equal(testutil_write_file(path, body, strlen(body)), 0);
    err_t err = {0};
    errno = 0;
    tokenizer_t *tok = tokenizer_load(path, &err);
    assert_null(tok);
    assert_int_equal(errno, EINVAL);
    if (!strstr(err.msg, needle))
        fail_msg("%s: message '%s' lacks '%s'", name, err.msg, needle);
}

static void test_malformed(void **state)
{
    (void)state;
    char *dir = testutil_mkdtemp("tokenizer-bad");
    assert_non_null(dir);
    s_expect_load_error(dir, "bad.json", "{\"model\": ", "not JSON");
    s_expect_load_error(dir, "nomodel.json", "{\"normalizer\": null}", "no model");
    s_expect_load_error(dir, "wordpiece.json",
                        "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}",
                        "unsupported model type 'WordPiece'");
    s_expect_load_error(dir, "pre.json",
                        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, "
                        "\"merges\": []}, \"pre_tokenizer\": {\"type\": \"Whitespace\"}}",
                        "unsupported pre-tokenizer type 'Whitespace'");
    s_expect_load_error(dir, "merge.json",
                        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, "
                        "\"merges\": [\"a b\"]}}", "not in the vocab");
    s_expect_load_error(dir, "regex.json",
                        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
                        "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, "
                        "\"behavior\": \"Isolated\"}}", "split pattern");
    err_t err = {0};
    errno = 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/missing.json", dir);
    assert_null(tokenizer_load(path, &err));
    assert_int_equal(errno, ENOENT);
    testutil_rmtree(dir);
    free(dir);

    /* Invalid UTF-8 text and unknown ids are errors, not crashes. */
    tokenizer_t *tok = tokenizer_load(s_path("llama2", "tokenizer.json"), &err);
    assert_non_null(tok);
    int32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(tokenizer_encode(tok, "ab\xC3(", 4, 0, &ids, &n, &err), -1);
    assert_int_equal(errno, EINVAL);
    assert_null(ids);
    assert_int_equal(tokenizer_encode(tok, "", 0, 0, &ids, &n, &err), 0);
    assert_int_equal(n, 0);
    mem_free(ids);
    int32_t bad[] = {5, -1};
    char *text = NULL;
    assert_int_equal(tokenizer_decode(tok, bad, 2, &text, &err), -1);
    assert_int_equal(errno, EINVAL);
    bad[1] = tokenizer_n_ids(tok);
    assert_int_equal(tokenizer_decode(tok, bad, 2, &text, &err), -1);
    assert_null(tokenizer_id_token(tok, -1));
    assert_string_equal(tokenizer_id_token(tok, 1), "<s>");
    /* A byte-fallback token alone is no character: held back, then U+FFFD. */
    tokenizer_stream_t *st = tokenizer_stream_new(tok);
    const char *part;
    size_t len;
    int32_t e2 = 0;
    char name[8] = "<0xE2>";
    for (int32_t id = 0; id < tokenizer_n_ids(tok); id++)
        if (strcmp(tokenizer_id_token(tok, id), name) == 0)
            e2 = id;
    assert_true(e2 > 0);
    assert_int_equal(tokenizer_stream_feed(st, e2, &part, &len, &err), 0);
    assert_int_equal(len, 0);
    assert_int_equal(tokenizer_stream_feed(st, -3, &part, &len, &err), -1);
    assert_int_equal(tokenizer_stream_flush(st, &part, &len, &err), 0);
    assert_string_equal(part, "\xEF\xBF\xBD");
    tokenizer_stream_destroy(&st);
    tokenizer_destroy(&tok);
}

/* A tokenizer.json with the given decoder over a small vocabulary whose
 * tokens hold spaces (as "\u2581", "\u0120" and a fallback byte), parts of
 * "\u00e9", and letters. */
static tokenizer_t *s_load_decoder(const char *dir, const char *name,
                                   const char *decoder)
{
    char path[4096], body[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(body, sizeof body,
             "{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"vocab\": "
             "{\"<unk>\": 0, \"\\u2581\": 1, \"a\": 2, \"\\u00e9\": 3, \"<0xC3>\": 4, "
             "\"<0xA9>\": 5, \"\\u2581\\u2581\": 6, \"a\\u2581\": 7, \"<0x20>\": 8, "
             "\"\\u0120\": 9}, \"merges\": []}, \"decoder\": %s}", decoder);
    assert_int_equal(testutil_write_file(path, body, strlen(body)), 0);
    err_t err = {0};
    tokenizer_t *tok = tokenizer_load(path, &err);
    if (!tok)
        fail_msg("%s: %s", name, err.msg);
    return tok;
}

/* Streams ids[0..n) and checks that every part is whole UTF-8 and that the
 * parts add up to tokenizer_decode of all the ids. */
static void s_check_stream(tokenizer_t *tok, tokenizer_stream_t *st,
                           const int32_t *ids, size_t n, const char *what)
{
    err_t err = {0};
    char *want = NULL;
    assert_int_equal(tokenizer_decode(tok, ids, n, &want, &err), 0);
    char *got = s_streamed(st, ids, n, what);
    if (strcmp(got, want) != 0) {
        char list[128] = "";
        for (size_t k = 0; k < n; k++)
            snprintf(list + strlen(list), sizeof list - strlen(list), " %d", (int)ids[k]);
        fail_msg("%s: ids%s: streamed '%s', decoded '%s'", what, list, got, want);
    }
    mem_free(got);
    mem_free(want);
}

/* Regression (fuzz/regressions/tokenizer/stream-strip-start2.json): a Strip
 * after Fuse works on the whole text, so a stream over a window of ids must
 * not strip at the window's start or end. Every sequence of up to 5 ids is
 * streamed under decoders that strip, strip twice, replace across tokens,
 * strip each token, and strip after ByteLevel. */
static void test_stream_strip(void **state)
{
    (void)state;
    static const char *decoders[] = {
        "{\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": "
        "{\"String\": \"\\u2581\"}, \"content\": \" \"}, {\"type\": \"ByteFallback\"}, "
        "{\"type\": \"Fuse\"}, {\"type\": \"Strip\", \"content\": \" \", \"start\": 2, "
        "\"stop\": 1}]}",
        "{\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": "
        "{\"String\": \"\\u2581\"}, \"content\": \" \"}, {\"type\": \"ByteFallback\"}, "
        "{\"type\": \"Fuse\"}, {\"type\": \"Strip\", \"content\": \" \", \"start\": 2, "
        "\"stop\": 1}, {\"type\": \"Strip\", \"content\": \"a\", \"start\": 1, "
        "\"stop\": 2}]}",
        "{\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": "
        "{\"String\": \"\\u2581\"}, \"content\": \" \"}, {\"type\": \"ByteFallback\"}, "
        "{\"type\": \"Fuse\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \" a \"}, "
        "\"content\": \"_\"}]}",
        "{\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": "
        "{\"String\": \"\\u2581\"}, \"content\": \" \"}, {\"type\": \"ByteFallback\"}, "
        "{\"type\": \"Strip\", \"content\": \" \", \"start\": 2, \"stop\": 1}, "
        "{\"type\": \"Fuse\"}]}",
        "{\"type\": \"Sequence\", \"decoders\": [{\"type\": \"ByteLevel\"}, "
        "{\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 1}]}",
    };
    char *dir = testutil_mkdtemp("tokenizer-strip");
    assert_non_null(dir);
    for (size_t d = 0; d < sizeof decoders / sizeof *decoders; d++) {
        char name[32];
        snprintf(name, sizeof name, "strip%zu.json", d);
        tokenizer_t *tok = s_load_decoder(dir, name, decoders[d]);
        tokenizer_stream_t *st = tokenizer_stream_new(tok);
        assert_non_null(st);
        int32_t ids[5], v = tokenizer_n_ids(tok);
        for (size_t n = 0; n <= 5; n++) {
            size_t count = 1;
            for (size_t k = 0; k < n; k++)
                count *= (size_t)v;
            for (size_t c = 0; c < count; c++) {
                for (size_t k = 0, x = c; k < n; k++, x /= (size_t)v)
                    ids[k] = (int32_t)(x % (size_t)v);
                s_check_stream(tok, st, ids, n, name);
            }
        }
        tokenizer_stream_destroy(&st);
        tokenizer_destroy(&tok);
    }
    /* The whole decode strips only at the start and end of everything: of
     * "   a  a " (start 2, stop 1) stays " a  a". */
    tokenizer_t *tok = s_load_decoder(dir, "strip.json", decoders[0]);
    int32_t ids[] = {1, 6, 7, 1, 2, 8};
    char *text = NULL;
    err_t err = {0};
    assert_int_equal(tokenizer_decode(tok, ids, 6, &text, &err), 0);
    assert_string_equal(text, " a  a");
    mem_free(text);
    tokenizer_destroy(&tok);
    testutil_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama2),
        cmocka_unit_test(test_qwen3),
        cmocka_unit_test(test_deepseek_v3),
        cmocka_unit_test(test_gptoss),
        cmocka_unit_test(test_special_ids),
        cmocka_unit_test(test_cli_batch),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_stream_strip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
