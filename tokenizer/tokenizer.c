/* tokenizer: see tokenizer.h. This module owns the added tokens, the
 * post-processor and the stream decoder; normalize, pretok, bpe and decoder
 * do the rest. */
#include "tokenizer/tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <string.h>

#include "core/mem.h"
#include "tokenizer/bpe.h"
#include "tokenizer/decoder.h"
#include "tokenizer/normalize.h"
#include "tokenizer/pretok.h"
#include "tokenizer/tokenizer_private.h"

typedef struct tokenizer_added {
    char *content;  /* token text (mem_alloc'd) */
    size_t len;     /* bytes of content */
    int32_t id;     /* token id */
    int normalized; /* matched on normalized text (else on raw text) */
    int special;    /* "special": true (control tokens such as EOS) */
} tokenizer_added_t;

struct tokenizer {
    bpe_t *bpe;                /* vocabulary and merges */
    normalize_t *norm;         /* normalizer */
    pretok_t *pre;             /* pre-tokenizer */
    decoder_t *dec;            /* decoder */
    tokenizer_added_t *added;  /* (n_added) added tokens */
    size_t n_added;
    unsigned char starts[2][256]; /* [normalized][b]: an added token of that
                                     kind starts with byte b */
    int32_t *added_by_id;      /* (n_ids) index into added, or -1 */
    int32_t n_ids;             /* one past the largest id */
    tok_ids_t prefix;          /* ids add_special puts before the text */
    tok_ids_t suffix;          /* ids add_special puts after the text */
};

/* A Strip after the tokens are fused works on the whole text: start removes
 * copies of content at the start of everything the stream returns, stop at
 * its end. Fed the final text of the step before, piece by piece, it passes
 * on what no later text can change. */
typedef struct stream_strip {
    const char *content; /* borrowed from the decoder */
    size_t nc;           /* bytes of content */
    int start, stop;     /* copies removed at the start, at the end */
    int stripped;        /* copies removed at the start so far */
    int begun;           /* the start is settled: nothing more is removed there */
    tok_bytes_t held;    /* text given but not passed on yet */
} stream_strip_t;

typedef enum stream_tail {
    STREAM_TAIL_NONE,  /* the head's text is the decode's text */
    STREAM_TAIL_STRIP, /* then the Strips of strips[] on the whole text */
    STREAM_TAIL_WHOLE  /* then other steps on the whole text: held to flush */
} stream_tail_t;

struct tokenizer_stream {
    const tokenizer_t *tok; /* borrowed */
    int head;               /* decoder steps the window decodes (decoder_head) */
    stream_tail_t tail;     /* what the steps after head need */
    stream_strip_t strips[DECODER_STEPS_MAX];
    int n_strips;
    tok_ids_t ids;          /* the window of ids not yet fully emitted */
    tok_bytes_t prefix;     /* head decode of ids[0..prefix_index) */
    size_t prefix_index;    /* ids whose text was already emitted */
    tok_bytes_t text;       /* head decode of the whole window */
    tok_bytes_t chunk;      /* head text that became final in this call */
    tok_bytes_t whole;      /* STREAM_TAIL_WHOLE: all head text so far */
    tok_bytes_t pass;       /* scratch between Strips */
    tok_bytes_t out;        /* the text returned by the last call */
    tok_pieces_t scratch;   /* token texts for decoding */
};

static int s_load_added(tokenizer_t *self, const json_t *list, err_t *err)
{
    size_t n = json_array_size(list);
    if (n == 0)
        return 0;
    if (!(self->added = mem_calloc(n, sizeof *self->added)))
        return err_set(err, ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const json_t *a = json_array_get(list, i);
        const json_t *c = json_object_get(a, "content");
        json_int_t id = json_integer_value(json_object_get(a, "id"));
        if (!json_is_string(c) || json_string_length(c) == 0 ||
            !json_is_integer(json_object_get(a, "id")) || id < 0 ||
            id > INT32_MAX - 1)
            return err_set(err, EINVAL, "added token %zu needs content and an id", i);
        if (json_is_true(json_object_get(a, "lstrip")) ||
            json_is_true(json_object_get(a, "rstrip")) ||
            json_is_true(json_object_get(a, "single_word")))
            return err_set(err, EINVAL, "added token '%s': lstrip, rstrip and "
                           "single_word are not supported", json_string_value(c));
        tokenizer_added_t *t = &self->added[self->n_added++];
        t->len = json_string_length(c);
        if (!(t->content = mem_alloc(t->len + 1)))
            return err_set(err, ENOMEM, "out of memory");
        memcpy(t->content, json_string_value(c), t->len + 1);
        t->id = (int32_t)id;
        t->normalized = json_is_true(json_object_get(a, "normalized"));
        t->special = json_is_true(json_object_get(a, "special"));
        self->starts[t->normalized != 0][(unsigned char)t->content[0]] = 1;
    }
    return 0;
}

static int s_load_post(tokenizer_t *self, const json_t *spec, err_t *err)
{
    if (!spec || json_is_null(spec))
        return 0;
    const char *type = json_string_value(json_object_get(spec, "type"));
    if (!type)
        return err_set(err, EINVAL, "post-processor without a type");
    if (strcmp(type, "ByteLevel") == 0)
        return 0; /* only trims offsets, which we do not report */
    if (strcmp(type, "Sequence") == 0) {
        const json_t *list = json_object_get(spec, "processors");
        for (size_t i = 0; i < json_array_size(list); i++)
            if (s_load_post(self, json_array_get(list, i), err) < 0)
                return -1;
        return 0;
    }
    if (strcmp(type, "TemplateProcessing") != 0)
        return err_set(err, EINVAL, "unsupported post-processor type '%s'", type);
    const json_t *single = json_object_get(spec, "single");
    const json_t *specials = json_object_get(spec, "special_tokens");
    int seen_a = 0;
    for (size_t i = 0; i < json_array_size(single); i++) {
        const json_t *item = json_array_get(single, i);
        const json_t *sp = json_object_get(item, "SpecialToken");
        if (json_object_get(item, "Sequence")) {
            seen_a = 1;
            continue;
        }
        const char *name = json_string_value(json_object_get(sp, "id"));
        const json_t *ids = json_object_get(json_object_get(specials, name ? name : ""), "ids");
        if (!name || !json_is_array(ids))
            return err_set(err, EINVAL, "TemplateProcessing item %zu names no special token", i);
        for (size_t k = 0; k < json_array_size(ids); k++) {
            json_int_t id = json_integer_value(json_array_get(ids, k));
            if (id < 0 || id > INT32_MAX)
                return err_set(err, EINVAL, "special token '%s' has a bad id", name);
            if (tok_ids_push(seen_a ? &self->suffix : &self->prefix, (int32_t)id) < 0)
                return err_set(err, ENOMEM, "out of memory");
        }
    }
    if (!seen_a)
        return err_set(err, EINVAL, "TemplateProcessing single has no sequence");
    return 0;
}

static int s_index_ids(tokenizer_t *self, err_t *err)
{
    self->n_ids = bpe_n_ids(self->bpe);
    for (size_t i = 0; i < self->n_added; i++)
        if (self->added[i].id >= self->n_ids)
            self->n_ids = self->added[i].id + 1;
    self->added_by_id = mem_alloc((size_t)self->n_ids * sizeof *self->added_by_id);
    if (!self->added_by_id)
        return err_set(err, ENOMEM, "out of memory");
    memset(self->added_by_id, 0xFF, (size_t)self->n_ids * sizeof *self->added_by_id);
    for (size_t i = 0; i < self->n_added; i++)
        self->added_by_id[self->added[i].id] = (int32_t)i;
    for (size_t i = 0; i < self->prefix.n + self->suffix.n; i++) {
        int32_t id = i < self->prefix.n ? self->prefix.v[i]
                                        : self->suffix.v[i - self->prefix.n];
        if (!tokenizer_id_token(self, id))
            return err_set(err, EINVAL, "post-processor id %d is no token", (int)id);
    }
    return 0;
}

tokenizer_t *tokenizer_load(const char *path, err_t *err)
{
    tokenizer_t *self = NULL;
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) {
        FILE *f = fopen(path, "rb");
        if (!f) {
            err_set(err, errno ? errno : ENOENT, "cannot open %s", path);
            return NULL;
        }
        fclose(f);
        err_set(err, EINVAL, "%s: not JSON: line %d: %s", path, jerr.line, jerr.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        err_set(err, EINVAL, "%s: not a JSON object", path);
        goto fail;
    }
    if (!json_is_object(json_object_get(root, "model"))) {
        err_set(err, EINVAL, "%s: no model", path);
        goto fail;
    }
    if (!(self = mem_calloc(1, sizeof *self))) {
        err_set(err, ENOMEM, "out of memory");
        goto fail;
    }
    if (!(self->bpe = bpe_new(json_object_get(root, "model"), err)) ||
        !(self->norm = normalize_new(json_object_get(root, "normalizer"), err)) ||
        !(self->pre = pretok_new(json_object_get(root, "pre_tokenizer"), err)) ||
        !(self->dec = decoder_new(json_object_get(root, "decoder"), err)) ||
        s_load_added(self, json_object_get(root, "added_tokens"), err) < 0 ||
        s_load_post(self, json_object_get(root, "post_processor"), err) < 0 ||
        s_index_ids(self, err) < 0) {
        err_wrap(err, "%s", path);
        goto fail;
    }
    json_decref(root);
    return self;
fail:;
    int saved = errno;
    tokenizer_destroy(&self);
    json_decref(root);
    errno = saved;
    return NULL;
}

void tokenizer_destroy(tokenizer_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tokenizer_t *self = *self_p;
    bpe_destroy(&self->bpe);
    normalize_destroy(&self->norm);
    pretok_destroy(&self->pre);
    decoder_destroy(&self->dec);
    for (size_t i = 0; i < self->n_added; i++)
        mem_free(self->added[i].content);
    mem_free(self->added);
    mem_free(self->added_by_id);
    tok_ids_fini(&self->prefix);
    tok_ids_fini(&self->suffix);
    mem_free(self);
    *self_p = NULL;
}

int32_t tokenizer_n_ids(const tokenizer_t *self) { return self->n_ids; }

const char *tokenizer_id_token(const tokenizer_t *self, int32_t id)
{
    if (id < 0 || id >= self->n_ids)
        return NULL;
    if (self->added_by_id[id] >= 0)
        return self->added[self->added_by_id[id]].content;
    return bpe_id_token(self->bpe, id, NULL);
}

bool tokenizer_is_special(const tokenizer_t *self, int32_t id)
{
    return id >= 0 && id < self->n_ids && self->added_by_id[id] >= 0 &&
           self->added[self->added_by_id[id]].special;
}

/* The longest added token of the given kind at text[at..n), or NULL. */
static const tokenizer_added_t *s_added_at(const tokenizer_t *self,
                                           const char *text, size_t n,
                                           size_t at, int normalized)
{
    const tokenizer_added_t *best = NULL;
    /* Why: tokenizers with tens of thousands of reserved tokens (moe-mkmodel's)
     * would otherwise scan them all at every byte. */
    if (!self->starts[normalized != 0][(unsigned char)text[at]])
        return NULL;
    for (size_t i = 0; i < self->n_added; i++) {
        const tokenizer_added_t *t = &self->added[i];
        if (t->normalized == normalized && t->content[0] == text[at] &&
            t->len <= n - at && (!best || t->len > best->len) &&
            memcmp(text + at, t->content, t->len) == 0)
            best = t;
    }
    return best;
}

/* Encodes text[0..n) that holds no added token of the raw kind. */
static int s_encode_plain(tokenizer_t *self, const char *text, size_t n,
                          tok_ids_t *out, err_t *err)
{
    tok_bytes_t norm = {0};
    tok_pieces_t pieces = {0};
    int rc = -1;
    if (normalize_run(self->norm, text, n, &norm, err) < 0)
        goto cleanup;
    size_t start = 0;
    for (size_t at = 0; at <= norm.n; at++) {
        const tokenizer_added_t *t =
            at < norm.n ? s_added_at(self, norm.v, norm.n, at, 1) : NULL;
        if (!t && at < norm.n)
            continue;
        if (pretok_run(self->pre, norm.v + start, at - start, &pieces, err) < 0)
            goto cleanup;
        for (size_t k = 0; k < pieces.n; k++)
            if (bpe_encode(self->bpe, pieces.bytes.v + pieces.off[k],
                           pieces.len[k], out) < 0) {
                err_set(err, ENOMEM, "out of memory");
                goto cleanup;
            }
        if (t) {
            if (tok_ids_push(out, t->id) < 0) {
                err_set(err, ENOMEM, "out of memory");
                goto cleanup;
            }
            at += t->len - 1;
            start = at + 1;
        }
    }
    rc = 0;
cleanup:
    tok_bytes_fini(&norm);
    tok_pieces_fini(&pieces);
    return rc;
}

int tokenizer_encode(tokenizer_t *self, const char *text, size_t len,
                     int add_special, int32_t **ids, size_t *n, err_t *err)
{
    tok_ids_t out = {0};
    for (size_t i = 0; i < len;) {
        int k = tok_utf8_step((const unsigned char *)text + i, len - i);
        if (k < 0)
            return err_set(err, EINVAL, "text is not UTF-8 at byte %zu", i);
        i += (size_t)k;
    }
    if (add_special)
        for (size_t i = 0; i < self->prefix.n; i++)
            if (tok_ids_push(&out, self->prefix.v[i]) < 0)
                goto oom;
    size_t start = 0;
    for (size_t at = 0; at <= len; at++) {
        const tokenizer_added_t *t =
            at < len ? s_added_at(self, text, len, at, 0) : NULL;
        if (!t && at < len)
            continue;
        if (at > start && s_encode_plain(self, text + start, at - start, &out, err) < 0)
            goto fail;
        if (t) {
            if (tok_ids_push(&out, t->id) < 0)
                goto oom;
            at += t->len - 1;
            start = at + 1;
        }
    }
    if (add_special)
        for (size_t i = 0; i < self->suffix.n; i++)
            if (tok_ids_push(&out, self->suffix.v[i]) < 0)
                goto oom;
    if (!out.v && tok_ids_push(&out, 0) == 0)
        out.n = 0; /* an empty result is still an allocated array */
    if (!out.v)
        goto oom;
    *ids = out.v;
    *n = out.n;
    return 0;
oom:
    err_set(err, ENOMEM, "out of memory");
fail:
    tok_ids_fini(&out);
    return -1;
}

/* Decodes ids into out with decoder steps [0, steps), with scratch for the
 * token texts. */
static int s_decode_steps(const tokenizer_t *self, const int32_t *ids, size_t n,
                          int steps, tok_pieces_t *scratch, tok_bytes_t *out,
                          err_t *err)
{
    tok_pieces_clear(scratch);
    for (size_t i = 0; i < n; i++) {
        const char *t = tokenizer_id_token(self, ids[i]);
        if (!t)
            return err_set(err, EINVAL, "id %d is no token", (int)ids[i]);
        if (tok_pieces_push(scratch, t, strlen(t)) < 0)
            return err_set(err, ENOMEM, "out of memory");
    }
    return decoder_run_steps(self->dec, 0, steps, scratch, out, err);
}

static int s_decode(const tokenizer_t *self, const int32_t *ids, size_t n,
                    tok_pieces_t *scratch, tok_bytes_t *out, err_t *err)
{
    return s_decode_steps(self, ids, n, decoder_n_steps(self->dec), scratch,
                          out, err);
}

int tokenizer_decode(const tokenizer_t *self, const int32_t *ids, size_t n,
                     char **text, err_t *err)
{
    tok_pieces_t scratch = {0};
    tok_bytes_t out = {0};
    int rc = s_decode(self, ids, n, &scratch, &out, err);
    if (rc == 0 && tok_bytes_reserve(&out, 0) < 0)
        rc = err_set(err, ENOMEM, "out of memory");
    int saved = errno;
    tok_pieces_fini(&scratch);
    if (rc < 0) {
        tok_bytes_fini(&out);
        errno = saved;
        return -1;
    }
    out.v[out.n] = '\0';
    *text = out.v;
    return 0;
}

tokenizer_stream_t *tokenizer_stream_new(const tokenizer_t *tok)
{
    tokenizer_stream_t *self = mem_calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->tok = tok;
    self->head = decoder_head(tok->dec);
    for (int i = self->head; i < decoder_n_steps(tok->dec); i++) {
        stream_strip_t *st = &self->strips[self->n_strips];
        int kind = decoder_step_strip(tok->dec, i, &st->content, &st->start,
                                      &st->stop);
        if (kind < 0) {
            self->tail = STREAM_TAIL_WHOLE;
            break;
        }
        if (kind == 1) {
            st->nc = strlen(st->content);
            self->n_strips++;
            self->tail = STREAM_TAIL_STRIP;
        }
    }
    return self;
}

void tokenizer_stream_destroy(tokenizer_stream_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tokenizer_stream_t *self = *self_p;
    tok_ids_fini(&self->ids);
    tok_bytes_fini(&self->prefix);
    tok_bytes_fini(&self->text);
    tok_bytes_fini(&self->chunk);
    tok_bytes_fini(&self->whole);
    tok_bytes_fini(&self->pass);
    tok_bytes_fini(&self->out);
    for (int i = 0; i < self->n_strips; i++)
        tok_bytes_fini(&self->strips[i].held);
    tok_pieces_fini(&self->scratch);
    mem_free(self);
    *self_p = NULL;
}

static int s_ends_with_fffd(const tok_bytes_t *b)
{
    return b->n >= 3 && memcmp(b->v + b->n - 3, "\xEF\xBF\xBD", 3) == 0;
}

/* Gives in[0..n) to a whole-text Strip and appends to out what became final;
 * at the end of the text the held copies at the end are dropped. The held
 * text is at most stop copies of content and a part of one, or at the start
 * less than one copy, so a call costs O(n). Whole copies of valid UTF-8 come
 * off valid UTF-8, so what is passed on stays whole characters. 0, or -1
 * with ENOMEM. */
static int s_strip_push(stream_strip_t *st, const char *in, size_t n, int end,
                        tok_bytes_t *out)
{
    if (tok_bytes_push(&st->held, in, n) < 0)
        return -1;
    const char *p = st->held.v;
    size_t len = st->held.n, s = 0, e, nc = st->nc;
    while (!st->begun && st->stripped < st->start && len - s >= nc &&
           memcmp(p + s, st->content, nc) == 0) {
        s += nc;
        st->stripped++;
    }
    /* Why: the start is settled once start copies are gone or the text
     * cannot begin with one more; until then it may still be removed. */
    if (!st->begun && (end || st->stripped >= st->start || len - s >= nc ||
                       (len > s && memcmp(p + s, st->content, len - s) != 0)))
        st->begun = 1;
    if (!st->begun) {
        e = s; /* nothing final yet */
    } else {
        e = len;
        /* Why: a part of content at the end may become a copy that stop
         * removes, and so may the copies before it. */
        for (size_t k = nc - 1; !end && k > 0; k--)
            if (k <= len - s && memcmp(p + len - k, st->content, k) == 0) {
                e = len - k;
                break;
            }
        for (int i = 0; i < st->stop && e - s >= nc &&
                        memcmp(p + e - nc, st->content, nc) == 0; i++)
            e -= nc;
    }
    if (tok_bytes_push(out, p + s, e - s) < 0)
        return -1;
    size_t keep = end ? 0 : st->begun ? len - e : len - s;
    memmove(st->held.v, st->held.v + len - keep, keep);
    st->held.n = keep;
    st->held.v[keep] = '\0';
    return 0;
}

/* Runs the decoder steps after the head on the head text that became final
 * (chunk), sets the call's output, and at the end of the stream settles
 * what was held. */
static int s_tail(tokenizer_stream_t *self, int end, const char **text,
                  size_t *len, err_t *err)
{
    tok_bytes_t *src = &self->chunk;
    self->out.n = 0;
    if (self->tail == STREAM_TAIL_WHOLE) {
        if (tok_bytes_push(&self->whole, src->v, src->n) < 0)
            goto oom;
        if (end) {
            tok_pieces_clear(&self->scratch);
            if (tok_pieces_push(&self->scratch, self->whole.v ? self->whole.v : "",
                                self->whole.n) < 0)
                goto oom;
            self->whole.n = 0;
            if (decoder_run_steps(self->tok->dec, self->head,
                                  decoder_n_steps(self->tok->dec), &self->scratch,
                                  &self->out, err) < 0)
                return -1;
        }
    } else {
        for (int i = 0; i < self->n_strips; i++) {
            tok_bytes_t *dst = src == &self->chunk ? &self->pass : &self->chunk;
            dst->n = 0;
            if (s_strip_push(&self->strips[i], src->v, src->n, end, dst) < 0)
                goto oom;
            src = dst;
        }
        if (tok_bytes_push(&self->out, src->v, src->n) < 0)
            goto oom;
    }
    if (tok_bytes_reserve(&self->out, 0) < 0)
        goto oom;
    self->out.v[self->out.n] = '\0';
    *text = self->out.v;
    *len = self->out.n;
    return 0;
oom:
    return err_set(err, ENOMEM, "out of memory");
}

/* The head of the decoder (its steps up to the one that fuses the tokens)
 * is run with the algorithm of HF tokenizers' DecodeStream: decode a window
 * that starts at a token whose text is final, and pass on what grows past
 * the prefix once it does not end in an incomplete character. Decoding a
 * window (not only the new token) keeps steps that look across tokens
 * (ByteFallback runs, UTF-8 of ByteLevel bytes) identical to a whole decode;
 * a window that ends in a ByteFallback byte is held (decoder_open_end), as
 * a later byte can turn the whole run into U+FFFDs.
 * The steps after the head see the whole text, which no window shows: a
 * Strip there removes only at the start of everything and at its very end,
 * so it is run on the passed-on text as it grows (s_strip_push); any other
 * such step (none in the reference tokenizers) gets the text at flush. */
int tokenizer_stream_feed(tokenizer_stream_t *self, int32_t id,
                          const char **text, size_t *len, err_t *err)
{
    if (!tokenizer_id_token(self->tok, id))
        return err_set(err, EINVAL, "id %d is no token", (int)id);
    self->chunk.n = 0;
    if (self->prefix.n == 0 && self->ids.n > 0) {
        if (s_decode_steps(self->tok, self->ids.v, self->ids.n, self->head,
                           &self->scratch, &self->text, err) < 0)
            return -1;
        if (self->text.n == 0) { /* empty texts: the window skips them */
            tok_bytes_t swap = self->prefix;
            self->prefix = self->text;
            self->text = swap;
            self->prefix_index = self->ids.n;
        }
    }
    if (tok_ids_push(&self->ids, id) < 0)
        return err_set(err, ENOMEM, "out of memory");
    if (s_decode_steps(self->tok, self->ids.v, self->ids.n, self->head,
                       &self->scratch, &self->text, err) < 0) {
        self->ids.n--;
        return -1;
    }
    int open = decoder_open_end(self->tok->dec, self->head,
                                tokenizer_id_token(self->tok, id));
    if (open < 0)
        return err_set(err, ENOMEM, "out of memory");
    if (!open && self->text.n > self->prefix.n && !s_ends_with_fffd(&self->text) &&
        memcmp(self->text.v, self->prefix.v ? self->prefix.v : "", self->prefix.n) == 0) {
        if (tok_bytes_push(&self->chunk, self->text.v + self->prefix.n,
                           self->text.n - self->prefix.n) < 0)
            return err_set(err, ENOMEM, "out of memory");
        size_t keep = self->prefix_index; /* the window now starts here */
        size_t new_index = self->ids.n - keep;
        memmove(self->ids.v, self->ids.v + keep,
                (self->ids.n - keep) * sizeof *self->ids.v);
        self->ids.n -= keep;
        if (s_decode_steps(self->tok, self->ids.v, self->ids.n, self->head,
                           &self->scratch, &self->prefix, err) < 0)
            return -1;
        self->prefix_index = new_index;
    }
    return s_tail(self, 0, text, len, err);
}

int tokenizer_stream_flush(tokenizer_stream_t *self, const char **text,
                           size_t *len, err_t *err)
{
    if (s_decode_steps(self->tok, self->ids.v, self->ids.n, self->head,
                       &self->scratch, &self->text, err) < 0)
        return -1;
    size_t from = self->text.n > self->prefix.n ? self->prefix.n : self->text.n;
    self->chunk.n = 0;
    if (tok_bytes_push(&self->chunk, self->text.v + from, self->text.n - from) < 0)
        return err_set(err, ENOMEM, "out of memory");
    self->ids.n = 0;
    self->prefix.n = 0;
    self->prefix_index = 0;
    int rc = s_tail(self, 1, text, len, err);
    for (int i = 0; i < self->n_strips; i++) {
        self->strips[i].stripped = 0;
        self->strips[i].begun = 0;
        self->strips[i].held.n = 0;
    }
    self->whole.n = 0;
    return rc;
}
