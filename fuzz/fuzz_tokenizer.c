/* fuzz_tokenizer: tokenizer_load on an arbitrary tokenizer.json (written to
 * a file, fuzz_tmp.h: the loader takes a path), then what the coordinator
 * does with a loaded tokenizer: encode fixed texts with and without special
 * tokens, decode the ids at once and through a stream, and decode the first
 * ids one by one. Checks what tokenizer.h promises: ids below n_ids, the
 * stream's text equal to the whole decode.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "fuzz/fuzz_tmp.h"
#include "fuzz/fuzz_verbose.h"
#include "tokenizer/tokenizer.h"

static void s_check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_tokenizer: broken promise: %s\n", what);
        abort();
    }
}

static const char *const S_TEXTS[] = {
    "Hello, world! It's 2024: mixture-of-experts\n\n  models   serve tokens.",
    ("caf\xc3\xa9 na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80 "
     "e\xcc\x81 <s></s><|endoftext|> <unk>\r\n\t"),
    "",
};

static void s_text(tokenizer_t *tok, const char *text, int add_special)
{
    int32_t *ids = NULL;
    size_t n = 0;
    char *dec = NULL;
    err_t err = {0};
    tokenizer_stream_t *stream = NULL;
    char *joined = NULL;
    int rc = tokenizer_encode(tok, text, strlen(text), add_special, &ids, &n, &err);
    fuzz_verbose("encode", rc, err.msg);
    if (rc < 0)
        goto done;
    int32_t n_ids = tokenizer_n_ids(tok);
    for (size_t i = 0; i < n; i++)
        s_check(ids[i] >= 0 && ids[i] < n_ids, "encoded id range");
    if (tokenizer_decode(tok, ids, n, &dec, &err) < 0)
        goto done;
    stream = tokenizer_stream_new(tok);
    joined = mem_alloc(strlen(dec) + 1);
    if (!stream || !joined)
        goto done;
    size_t at = 0;
    const char *piece;
    size_t len;
    for (size_t i = 0; i <= n; i++) {
        int fed = i < n ? tokenizer_stream_feed(stream, ids[i], &piece, &len, &err)
                       : tokenizer_stream_flush(stream, &piece, &len, &err);
        if (fed < 0)
            goto done;
        s_check(at + len <= strlen(dec), "streamed text longer than decoded");
        memcpy(joined + at, piece, len);
        at += len;
    }
    joined[at] = '\0';
    if (strcmp(joined, dec) != 0) {
        fprintf(stderr, "ids:");
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %d", (int)ids[i]);
        fprintf(stderr, "\ndecoded:  \"%s\"\nstreamed: \"%s\"\n", dec, joined);
        s_check(0, "streamed text equals decoded text");
    }

done:
    mem_free(joined);
    tokenizer_stream_destroy(&stream);
    mem_free(dec);
    mem_free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_tmp_write(0, "tokenizer.json", data, size);
    err_t err = {0};
    tokenizer_t *tok = tokenizer_load(path, &err);
    fuzz_verbose("tokenizer_load", tok ? 0 : -1, err.msg);
    if (!tok)
        return 0;
    for (size_t i = 0; i < sizeof S_TEXTS / sizeof *S_TEXTS; i++) {
        s_text(tok, S_TEXTS[i], 0);
        s_text(tok, S_TEXTS[i], 1);
    }
    int32_t n_ids = tokenizer_n_ids(tok);
    for (int32_t id = 0; id < n_ids && id < 300; id++) {
        char *dec = NULL;
        if (tokenizer_decode(tok, &id, 1, &dec, &err) == 0)
            mem_free(dec);
        (void)tokenizer_is_special(tok, id);
        (void)tokenizer_id_token(tok, id);
    }
    tokenizer_destroy(&tok);
    return 0;
}
