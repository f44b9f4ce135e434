/* test_trainer: byte-level BPE training (tokenizer/trainer.h), read back
 * with tokenizer_load (itself checked against HF tokenizers in
 * test_tokenizer).
 *
 * Checks: the merges of a small hand-counted text (frequency weighting, tie
 * order, min_frequency); encode/decode round trips of varied text; every id
 * below vocab_size and n_ids == vocab_size; special and reserved tokens
 * encode to their ids; the corpus compresses, and its encoding matches the
 * training's own segmentation; byte-identical output for the same input;
 * option and I/O errors; out of memory; and the model directories that
 * moe-mkmodel writes (tokenizer ids == config ids).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/mem.h"
#include "tests/testutil.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/trainer.h"

/* ---- helpers ------------------------------------------------------------- */

/* dir/name in a static buffer (one at a time). */
static const char *s_path(const char *dir, const char *name)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", dir, name);
    return buf;
}

/* A fresh subdirectory of the test's scratch dir (caller frees). */
static char *s_subdir(void **state, const char *name)
{
    size_t n = strlen(*state) + strlen(name) + 2;
    char *p = malloc(n);
    assert_non_null(p);
    snprintf(p, n, "%s/%s", (const char *)*state, name);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", p);
    assert_int_equal(system(cmd), 0);
    return p;
}

/* moe-mkmodel's options: pad, BOS, EOS at ids 0, 1, 2. */
static trainer_opts_t s_opts(int32_t vocab_size)
{
    trainer_opts_t o = {
        .vocab_size = vocab_size,
        .specials = {"<|padding|>", "<|startoftext|>", "<|endoftext|>"},
        .n_specials = 3,
        .pad = 0,
        .bos = 1,
        .eos = 2,
        .model_max_length = 4096,
    };
    return o;
}

/* Trains on text into a new dir and loads it; *dir_out gets the dir
 * (caller frees) when not NULL. */
static tokenizer_t *s_train(void **state, const char *name, const char *text,
                            size_t len, const trainer_opts_t *o,
                            trainer_stats_t *stats, char **dir_out)
{
    char *dir = s_subdir(state, name);
    err_t err = {0};
    if (trainer_write(dir, text, len, o, stats, &err) != 0)
        fail_msg("trainer_write: %s", err.msg);
    tokenizer_t *tok = tokenizer_load(s_path(dir, "tokenizer.json"), &err);
    if (!tok)
        fail_msg("tokenizer_load: %s", err.msg);
    if (dir_out)
        *dir_out = dir;
    else
        free(dir);
    return tok;
}

static json_t *s_load_json(const char *path)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root)
        fail_msg("%s: %s", path, jerr.text);
    return root;
}

/* Encodes text, checks every id < n_ids, decodes (and stream-decodes) it
 * back to text. Returns the token count. */
static size_t s_round_trip(tokenizer_t *tok, const char *text, size_t len)
{
    int32_t *ids = NULL;
    size_t n = 0;
    char *back = NULL;
    err_t err = {0};
    if (tokenizer_encode(tok, text, len, 1, &ids, &n, &err) != 0)
        fail_msg("encode '%s': %s", text, err.msg);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= tokenizer_n_ids(tok))
            fail_msg("'%s': id %d out of range", text, (int)ids[i]);
    if (tokenizer_decode(tok, ids, n, &back, &err) != 0)
        fail_msg("decode '%s': %s", text, err.msg);
    if (strlen(back) != len || memcmp(back, text, len) != 0)
        fail_msg("round trip of '%s' gave '%s'", text, back);
    /* the streaming decoder agrees */
    tokenizer_stream_t *st = tokenizer_stream_new(tok);
    assert_non_null(st);
    char *acc = calloc(1, len + 1);
    size_t at = 0;
    for (size_t i = 0; i <= n; i++) {
        const char *piece;
        size_t k;
        int rc = i < n ? tokenizer_stream_feed(st, ids[i], &piece, &k, &err)
                       : tokenizer_stream_flush(st, &piece, &k, &err);
        assert_int_equal(rc, 0);
        assert_true(at + k <= len);
        memcpy(acc + at, piece, k);
        at += k;
    }
    assert_int_equal(at, len);
    assert_memory_equal(acc, text, len > 0 ? len : 1);
    free(acc);
    tokenizer_stream_destroy(&st);
    mem_free(back);
    mem_free(ids);
    return n;
}

/* The ids of text; *n gets the count (caller mem_frees). */
static int32_t *s_encode(tokenizer_t *tok, const char *text, size_t *n)
{
    int32_t *ids = NULL;
    err_t err = {0};
    if (tokenizer_encode(tok, text, strlen(text), 0, &ids, n, &err) != 0)
        fail_msg("encode '%s': %s", text, err.msg);
    return ids;
}

/* ---- training ------------------------------------------------------------- */

/* "abab abab abc" pre-tokenizes to "abab", "Ġabab", "Ġabc" (Ġ is the space).
 * Pair counts: a-b 5, b-a 2, Ġ-a 2, b-c 1 -> merge ab. Then ab-ab 2 and
 * Ġ-ab 2 tie: the smaller ids win, (Ġ=32, ab=256) -> Ġab. Every pair left
 * occurs once: min_frequency 2 stops here; with 1 the ties go to abab
 * (256,256), then Ġabc (257,'c'=99) before Ġabab (257,256). */
static void test_merges_by_hand(void **state)
{
    static const char text[] = "abab abab abc";
    static const char *want2[][2] = {{"a", "b"}, {"\xC4\xA0", "ab"}};
    static const char *want1[][2] = {{"a", "b"},
                                     {"\xC4\xA0", "ab"},
                                     {"ab", "ab"},
                                     {"\xC4\xA0" "ab", "c"},
                                     {"\xC4\xA0" "ab", "ab"}};
    for (int minf = 1; minf <= 2; minf++) {
        trainer_opts_t o = s_opts(1000);
        o.min_frequency = minf == 2 ? 0 : 1; /* 0: the default, 2 */
        trainer_stats_t stats;
        char *dir = NULL;
        char name[32];
        snprintf(name, sizeof name, "hand%d", minf);
        tokenizer_t *tok =
            s_train(state, name, text, strlen(text), &o, &stats, &dir);
        size_t n_want = minf == 2 ? 2 : 5;
        const char *(*want)[2] = minf == 2 ? want2 : want1;
        assert_int_equal(stats.n_merges, (int32_t)n_want);
        assert_int_equal(stats.n_words, 3);
        assert_int_equal(stats.n_reserved, 1000 - 3 - 256 - (int32_t)n_want);
        json_t *root = s_load_json(s_path(dir, "tokenizer.json"));
        const json_t *model = json_object_get(root, "model");
        const json_t *merges = json_object_get(model, "merges");
        assert_int_equal(json_array_size(merges), n_want);
        for (size_t m = 0; m < n_want; m++) {
            const json_t *pair = json_array_get(merges, m);
            assert_string_equal(json_string_value(json_array_get(pair, 0)),
                                want[m][0]);
            assert_string_equal(json_string_value(json_array_get(pair, 1)),
                                want[m][1]);
            /* merge m made token 259 + m, in the vocabulary */
            char joined[64];
            snprintf(joined, sizeof joined, "%s%s", want[m][0], want[m][1]);
            assert_int_equal(json_integer_value(json_object_get(
                                 json_object_get(model, "vocab"), joined)),
                             259 + (json_int_t)m);
        }
        /* the trained words are single tokens once merged out */
        size_t n;
        int32_t *ids = s_encode(tok, minf == 1 ? " abab" : "abab", &n);
        assert_int_equal(n, minf == 1 ? 1 : 2);
        assert_int_equal(ids[0], minf == 1 ? 259 + 4 : 259);
        mem_free(ids);
        /* bytes: id 3 + byte */
        ids = s_encode(tok, "z", &n);
        assert_int_equal(n, 1);
        assert_int_equal(ids[0], 3 + 'z');
        mem_free(ids);
        json_decref(root);
        tokenizer_destroy(&tok);
        free(dir);
    }
}

/* Varied text survives encode + decode; every id is in range. */
static void test_round_trip(void **state)
{
    size_t len;
    const char *corpus = trainer_corpus(&len);
    trainer_opts_t o = s_opts(2048);
    tokenizer_t *tok = s_train(state, "rt", corpus, len, &o, NULL, NULL);
    assert_int_equal(tokenizer_n_ids(tok), 2048);
    static const char *texts[] = {
        "",
        "Hello, world!",
        "The router picks two experts for every token.",
        "caf\xC3\xA9 na\xC3\xAFve r\xC3\xA9sum\xC3\xA9 \xC3\x85ngstr\xC3\xB6m",
        "e\xCC\x81 (e + combining acute)",
        "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE6\x96\x87 "
        "\xE4\xB8\xAD\xE6\x96\x87",
        "emoji \xF0\x9F\x99\x82 \xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x92\xBB "
        "\xF0\x9F\x87\xAB\xF0\x9F\x87\xB7",
        "   leading, inner    and trailing spaces   ",
        "tabs\tand\nnewlines\r\n\n\nand\t\t\ttabs",
        " ",
        "\n",
        "don't won't they'll I'm we've she'd it's",
        "x = f(a[i], b->c) + 0x1F; // code?",
        "1234567890 3.14159 -42 1e9",
        "\xD9\x85\xD8\xB1\xD8\xAD\xD8\xA8\xD8\xA7 \xD7\xA9\xD7\x9C\xD7\x95\xD7\x9D "
        "\xE0\xA4\xA8\xE0\xA4\xAE\xE0\xA4\xB8\xE0\xA5\x8D\xE0\xA4\xA4\xE0\xA5\x87",
        "<|endoftext|> specials <|startoftext|>inside<|padding|> text",
        "<|reserved_special_token_5|><|notatoken|>",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        s_round_trip(tok, texts[i], strlen(texts[i]));
    /* every byte value that is valid UTF-8 on its own */
    char ascii[128];
    for (int b = 1; b < 128; b++)
        ascii[b - 1] = (char)b;
    ascii[127] = '\0';
    s_round_trip(tok, ascii, 127);
    tokenizer_destroy(&tok);
}

/* Specials are ids 0..2, reserved tokens fill the rest; each added token
 * encodes to its id, also inside text. */
static void test_specials(void **state)
{
    trainer_opts_t o = s_opts(1024);
    trainer_stats_t stats;
    char *dir = NULL;
    size_t len;
    const char *corpus = trainer_corpus(&len);
    tokenizer_t *tok = s_train(state, "sp", corpus, len, &o, &stats, &dir);
    assert_int_equal(tokenizer_n_ids(tok), 1024);
    assert_int_equal(3 + 256 + stats.n_merges + stats.n_reserved, 1024);
    assert_true(stats.n_reserved > 0); /* the corpus runs out first */
    for (int i = 0; i < o.n_specials; i++) {
        size_t n;
        int32_t *ids = s_encode(tok, o.specials[i], &n);
        assert_int_equal(n, 1);
        assert_int_equal(ids[0], i);
        assert_string_equal(tokenizer_id_token(tok, i), o.specials[i]);
        mem_free(ids);
    }
    int32_t first = 3 + 256 + stats.n_merges;
    for (int32_t id = first; id < 1024; id += stats.n_reserved / 7 + 1) {
        char name[64];
        snprintf(name, sizeof name, "<|reserved_special_token_%d|>",
                 (int)(id - first));
        assert_string_equal(tokenizer_id_token(tok, id), name);
        size_t n;
        int32_t *ids = s_encode(tok, name, &n);
        assert_int_equal(n, 1);
        assert_int_equal(ids[0], id);
        mem_free(ids);
    }
    char last[64];
    snprintf(last, sizeof last, "<|reserved_special_token_%d|>",
             (int)stats.n_reserved - 1);
    assert_string_equal(tokenizer_id_token(tok, 1023), last);
    assert_null(tokenizer_id_token(tok, 1024));
    /* inside text: "a" <|endoftext|> "b" */
    size_t n;
    int32_t *ids = s_encode(tok, "a<|endoftext|>b", &n);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], 3 + 'a');
    assert_int_equal(ids[1], 2);
    assert_int_equal(ids[2], 3 + 'b');
    mem_free(ids);
    /* add_special adds nothing: no BOS by itself */
    err_t err = {0};
    size_t n1, n2;
    int32_t *a = NULL, *b = NULL;
    assert_int_equal(tokenizer_encode(tok, "hi there", 8, 0, &a, &n1, &err), 0);
    assert_int_equal(tokenizer_encode(tok, "hi there", 8, 1, &b, &n2, &err), 0);
    assert_int_equal(n1, n2);
    assert_memory_equal(a, b, n1 * sizeof *a);
    mem_free(a);
    mem_free(b);

    /* tokenizer_config.json names them */
    json_t *cfg = s_load_json(s_path(dir, "tokenizer_config.json"));
    assert_string_equal(json_string_value(json_object_get(cfg, "eos_token")),
                        "<|endoftext|>");
    assert_string_equal(json_string_value(json_object_get(cfg, "bos_token")),
                        "<|startoftext|>");
    assert_string_equal(json_string_value(json_object_get(cfg, "pad_token")),
                        "<|padding|>");
    assert_int_equal(json_integer_value(json_object_get(cfg, "model_max_length")),
                     4096);
    assert_null(json_object_get(cfg, "chat_template")); /* none asked */
    json_decref(cfg);
    tokenizer_destroy(&tok);
    free(dir);
}

/* A chat template given in the options is written verbatim. */
static void test_chat_template_field(void **state)
{
    trainer_opts_t o = s_opts(512);
    static const char tpl[] = "{%- for m in messages -%}{{ m.content }}{{ eos_token }}\n"
                              "{%- endfor -%}\t\xe2\x9c\x93";
    o.chat_template = tpl;
    trainer_stats_t stats;
    char *dir = NULL;
    tokenizer_t *tok = s_train(state, "ct", "some text", 9, &o, &stats, &dir);
    json_t *cfg = s_load_json(s_path(dir, "tokenizer_config.json"));
    assert_string_equal(json_string_value(json_object_get(cfg, "chat_template")), tpl);
    assert_string_equal(json_string_value(json_object_get(cfg, "eos_token")), "<|endoftext|>");
    json_decref(cfg);
    tokenizer_destroy(&tok);
    free(dir);
}

/* The corpus compresses, and the file encodes it exactly as the training
 * segmented it (the merges are in rank order). A vocabulary with no room
 * for merges gives one token per byte. */
static void test_compression(void **state)
{
    size_t len;
    const char *corpus = trainer_corpus(&len);
    assert_true(len >= 3000 && len <= 16384); /* "a few KB" */
    size_t prev = len + 1;
    static const int32_t sizes[] = {259, 512, 2048, 32000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        trainer_opts_t o = s_opts(sizes[i]);
        trainer_stats_t stats;
        char name[32];
        snprintf(name, sizeof name, "c%d", (int)sizes[i]);
        tokenizer_t *tok = s_train(state, name, corpus, len, &o, &stats, NULL);
        assert_int_equal(tokenizer_n_ids(tok), sizes[i]);
        size_t n = s_round_trip(tok, corpus, len);
        print_message("vocab %5d: %4d merges, %5d reserved, %zu words, corpus "
                      "%zu bytes -> %zu tokens, trained in %.4f s\n",
                      (int)sizes[i], (int)stats.n_merges,
                      (int)stats.n_reserved, stats.n_words, len, n,
                      stats.seconds);
        assert_int_equal(n, stats.n_text_tokens);
        if (sizes[i] == 259) {
            assert_int_equal(stats.n_merges, 0);
            assert_int_equal(n, len);
        } else {
            /* more merges, fewer tokens (until the corpus runs out) */
            assert_true(sizes[i] > 2048 ? n == prev : n < prev);
            assert_true(n * 5 < len * 2); /* at least 2.5 bytes per token */
        }
        if (sizes[i] == 512)
            assert_int_equal(stats.n_merges, 512 - 259); /* full */
        assert_true(stats.seconds < 1.0);
        prev = n;
        tokenizer_destroy(&tok);
    }
}

/* The same text and options give the same bytes; other text, others. */
static void test_deterministic(void **state)
{
    size_t len;
    const char *corpus = trainer_corpus(&len);
    trainer_opts_t o = s_opts(2048);
    char *d[3];
    static const char *names[] = {"det1", "det2", "det3"};
    for (int i = 0; i < 3; i++) {
        d[i] = s_subdir(state, names[i]);
        err_t err = {0};
        /* the third drops the last paragraph */
        size_t n = i < 2 ? len : len / 2;
        if (trainer_write(d[i], corpus, n, &o, NULL, &err) != 0)
            fail_msg("%s", err.msg);
    }
    static const char *files[] = {"tokenizer.json", "tokenizer_config.json"};
    for (int f = 0; f < 2; f++) {
        size_t n0, n1, n2;
        char *a = testutil_read_file(s_path(d[0], files[f]), &n0);
        char *b = testutil_read_file(s_path(d[1], files[f]), &n1);
        char *c = testutil_read_file(s_path(d[2], files[f]), &n2);
        assert_non_null(a);
        assert_non_null(b);
        assert_non_null(c);
        assert_int_equal(n0, n1);
        assert_memory_equal(a, b, n0);
        if (f == 0)
            assert_true(n0 != n2 || memcmp(a, c, n0) != 0);
        free(a);
        free(b);
        free(c);
    }
    for (int i = 0; i < 3; i++)
        free(d[i]);
}

/* An empty text still gives a full tokenizer: bytes, specials, reserved. */
static void test_empty_text(void **state)
{
    trainer_opts_t o = s_opts(300);
    trainer_stats_t stats;
    tokenizer_t *tok = s_train(state, "empty", "", 0, &o, &stats, NULL);
    assert_int_equal(stats.n_merges, 0);
    assert_int_equal(stats.n_reserved, 300 - 259);
    assert_int_equal(stats.n_words, 0);
    assert_int_equal(tokenizer_n_ids(tok), 300);
    static const char any[] = "any text \xE2\x82\xAC";
    s_round_trip(tok, any, strlen(any));
    tokenizer_destroy(&tok);
}

/* Every id past the 3 specials is text a reader sees (not a special token,
 * which the coordinator leaves out of generated text): each byte token
 * decodes to its byte (U+FFFD alone when it is not UTF-8), and each later id (merges, then filler words) to
 * text with a visible character; so a random model prints words. Fails
 * before moe-mkmodel filled the ids after the merges with words (they were
 * reserved special tokens). */
static void s_expect_visible(const tokenizer_t *tok, int32_t vocab)
{
    for (int32_t id = 3; id < vocab; id++) {
        if (tokenizer_is_special(tok, id))
            fail_msg("id %d is a special token: a random model would print nothing",
                     (int)id);
        char *text = NULL;
        err_t err = {0};
        if (tokenizer_decode(tok, &id, 1, &text, &err) < 0)
            fail_msg("id %d: %s", (int)id, err.msg);
        size_t n = strlen(text);
        bool visible = false;
        for (size_t i = 0; i < n; i++)
            visible |= ((unsigned char)text[i] > 0x20 && text[i] != 0x7F);
        if (id < 3 + 256 ? id > 3 && n == 0 /* byte 0 ends the C string */
                         : !visible)
            fail_msg("id %d decodes to '%s' (%zu bytes), no visible text", (int)id, text, n);
        mem_free(text);
    }
}

/* fill_words: the ids after the merges are distinct made-up words that
 * decode to visible text and that encoding never yields; the corpus trained
 * as before. */
static void test_fill_words(void **state)
{
    trainer_opts_t o = s_opts(2048);
    trainer_stats_t stats, plain;
    size_t len;
    const char *corpus = trainer_corpus(&len);
    tokenizer_t *ref = s_train(state, "plain", corpus, len, &o, &plain, NULL);
    o.fill_words = 1;
    tokenizer_t *tok = s_train(state, "words", corpus, len, &o, &stats, NULL);
    assert_int_equal(stats.n_merges, plain.n_merges);
    assert_int_equal(stats.n_reserved, 0);
    assert_int_equal(stats.n_filled, plain.n_reserved);
    assert_true(stats.n_filled > 0);
    assert_int_equal(tokenizer_n_ids(tok), 2048);
    s_expect_visible(tok, 2048);
    int32_t first = 3 + 256 + stats.n_merges, ids[2] = {first, 2047};
    char *text = NULL;
    err_t err = {0};
    assert_int_equal(tokenizer_decode(tok, ids, 2, &text, &err), 0);
    printf("  ids %d and 2047: '%s'\n", (int)first, text);
    assert_int_equal(text[0], ' ');
    mem_free(text);
    /* The same text encodes to the same ids with or without the words. */
    int32_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    assert_int_equal(tokenizer_encode(ref, corpus, len, 0, &a, &na, &err), 0);
    assert_int_equal(tokenizer_encode(tok, corpus, len, 0, &b, &nb, &err), 0);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na * sizeof *a);
    mem_free(a);
    mem_free(b);
    tokenizer_destroy(&tok);
    tokenizer_destroy(&ref);
}

/* ---- failures ------------------------------------------------------------ */

static void s_expect_einval(const char *dir, const char *text,
                            const trainer_opts_t *o, const char *needle)
{
    err_t err = {0};
    errno = 0;
    assert_int_equal(trainer_write(dir, text, strlen(text), o, NULL, &err), -1);
    assert_int_equal(errno, EINVAL);
    if (!strstr(err.msg, needle))
        fail_msg("message '%s' lacks '%s'", err.msg, needle);
}

static void test_errors(void **state)
{
    char *dir = s_subdir(state, "err");
    trainer_opts_t o = s_opts(258); /* 3 + 256 > 258 */
    s_expect_einval(dir, "abc", &o, "vocab_size 258");
    o = s_opts(512);
    o.specials[1] = "<|padding|>";
    s_expect_einval(dir, "abc", &o, "given twice");
    o = s_opts(512);
    o.specials[2] = "";
    s_expect_einval(dir, "abc", &o, "empty");
    o = s_opts(512);
    o.specials[2] = "bad \xC3";
    s_expect_einval(dir, "abc", &o, "UTF-8");
    o = s_opts(512);
    o.specials[2] = "<|reserved_special_token_3|>";
    s_expect_einval(dir, "abc", &o, "reserved");
    o = s_opts(512);
    o.eos = 3;
    s_expect_einval(dir, "abc", &o, "eos index 3");
    o = s_opts(512);
    o.n_specials = TRAINER_SPECIALS_MAX + 1;
    s_expect_einval(dir, "abc", &o, "special tokens");
    o = s_opts(512);
    o.min_frequency = -1;
    s_expect_einval(dir, "abc", &o, "min_frequency");
    o = s_opts(512);
    s_expect_einval(dir, "caf\xC3 x", &o, "not UTF-8");
    /* a special that is also a learned token (the byte 'a') */
    o = s_opts(512);
    o.specials[0] = "a";
    s_expect_einval(dir, "abc", &o, "also a learned token");
    /* nothing was written by the failures */
    assert_int_equal(access(s_path(dir, "tokenizer.json"), F_OK), -1);

    /* a missing directory: the errno of the failed open */
    o = s_opts(512);
    err_t err = {0};
    errno = 0;
    assert_int_equal(trainer_write(s_path(dir, "missing/dir"), "abc", 3, &o,
                                   NULL, &err), -1);
    assert_int_equal(errno, ENOENT);
    assert_non_null(strstr(err.msg, "missing/dir"));
    free(dir);
}

/* One trainer_write of a quarter of the corpus (a testutil_attempt_fn). */
typedef struct trainer_try {
    const char *dir;
    const char *corpus;
    size_t len;
    const trainer_opts_t *opts;
} trainer_try_t;

static int s_try_write(void *ctx, err_t *err)
{
    const trainer_try_t *t = ctx;
    return trainer_write(t->dir, t->corpus, t->len, t->opts, NULL, err);
}

/* Every allocation failing in turn: ENOMEM, no leak (ASan), then success. */
static void test_oom(void **state)
{
    char *dir = s_subdir(state, "oom");
    size_t len;
    const char *corpus = trainer_corpus(&len);
    trainer_opts_t o = s_opts(600);
    trainer_try_t t = {dir, corpus, len / 4, &o};
    assert_true(testutil_oom_sweep(400, s_try_write, &t) > 5);
    err_t err = {0};
    tokenizer_t *tok = tokenizer_load(s_path(dir, "tokenizer.json"), &err);
    assert_non_null(tok);
    assert_int_equal(tokenizer_n_ids(tok), 600);
    tokenizer_destroy(&tok);
    free(dir);
}

/* ---- moe-mkmodel ---------------------------------------------------------- */

/* moe-mkmodel's directories hold a tokenizer of exactly the config's
 * vocab_size ids whose EOS and BOS are the config's; the same seed gives
 * the same files. */
static void test_mkmodel(void **state)
{
    char tool[1024];
    testutil_program("moe-mkmodel", tool, sizeof tool);
    static const char *presets[] = {"tiny", "small"};
    for (size_t p = 0; p < 2; p++) {
        char *dir[2];
        for (int r = 0; r < 2; r++) {
            char name[32], cmd[4200];
            snprintf(name, sizeof name, "mk_%s_%d", presets[p], r);
            dir[r] = s_subdir(state, name);
            snprintf(cmd, sizeof cmd,
                     "'%s' --preset %s --seed 4 --out '%s' 2>&1", tool,
                     presets[p], dir[r]);
            char *out = NULL;
            int status = testutil_run(cmd, &out);
            if (status != 0 || !out || !strstr(out, "merges"))
                fail_msg("%s: status %d, '%s'", cmd, status, out ? out : "");
            free(out);
        }
        json_t *cfg = s_load_json(s_path(dir[0], "config.json"));
        json_t *gen = s_load_json(s_path(dir[0], "generation_config.json"));
        json_t *tcfg = s_load_json(s_path(dir[0], "tokenizer_config.json"));
        err_t err = {0};
        tokenizer_t *tok = tokenizer_load(s_path(dir[0], "tokenizer.json"), &err);
        if (!tok)
            fail_msg("%s", err.msg);
        json_int_t vocab = json_integer_value(json_object_get(cfg, "vocab_size"));
        assert_int_equal(tokenizer_n_ids(tok), vocab);
        /* a chat template for the family (rendered in test_chat_template) */
        const char *tpl = json_string_value(json_object_get(tcfg, "chat_template"));
        assert_non_null(tpl);
        assert_non_null(strstr(tpl, "eos_token"));
        assert_int_equal(vocab, p == 0 ? 512 : 2048);
        static const char *roles[][2] = {{"eos_token", "eos_token_id"},
                                         {"bos_token", "bos_token_id"}};
        for (int k = 0; k < 2; k++) {
            const char *text =
                json_string_value(json_object_get(tcfg, roles[k][0]));
            assert_non_null(text);
            size_t n;
            int32_t *ids = s_encode(tok, text, &n);
            assert_int_equal(n, 1);
            assert_int_equal(ids[0], json_integer_value(
                                         json_object_get(cfg, roles[k][1])));
            assert_int_equal(ids[0], json_integer_value(
                                         json_object_get(gen, roles[k][1])));
            mem_free(ids);
        }
        static const char some[] = "Experts serve tokens: caf\xC3\xA9 \xE4\xB8\xAD";
        s_round_trip(tok, some, strlen(some));
        s_expect_visible(tok, (int32_t)vocab);
        static const char *files[] = {"tokenizer.json", "tokenizer_config.json",
                                      "config.json", "generation_config.json",
                                      "model.safetensors"};
        for (int f = 0; f < 5; f++) {
            size_t n0, n1;
            char *a = testutil_read_file(s_path(dir[0], files[f]), &n0);
            char *b = testutil_read_file(s_path(dir[1], files[f]), &n1);
            if (!a || !b || n0 != n1 || memcmp(a, b, n0) != 0)
                fail_msg("%s/%s differs between runs", presets[p], files[f]);
            free(a);
            free(b);
        }
        tokenizer_destroy(&tok);
        json_decref(tcfg);
        json_decref(gen);
        json_decref(cfg);
        free(dir[0]);
        free(dir[1]);
    }
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, testutil_tmpdir_setup, testutil_tmpdir_teardown)
    const struct CMUnitTest tests[] = {
        T(test_merges_by_hand),
        T(test_round_trip),
        T(test_specials),
        T(test_chat_template_field),
        T(test_compression),
        T(test_deterministic),
        T(test_empty_text),
        T(test_fill_words),
        T(test_errors),
        T(test_oom),
        T(test_mkmodel),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
