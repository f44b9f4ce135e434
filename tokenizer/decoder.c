/* decoder: see decoder.h. Each step maps the current list of token texts to
 * the next; the result is their concatenation. */
#include "tokenizer/decoder.h"

#include <errno.h>
#include <string.h>

#include "core/mem.h"
#include "tokenizer/pretok.h"

typedef enum decoder_kind {
    DECODER_BYTELEVEL,
    DECODER_REPLACE,
    DECODER_BYTEFALLBACK,
    DECODER_FUSE,
    DECODER_STRIP
} decoder_kind_t;

typedef struct decoder_step {
    decoder_kind_t kind;
    tok_texts_t text; /* Replace's pattern and content, Strip's content */
    int start; /* Strip: characters removed at the start of each token */
    int stop;  /* Strip: characters removed at the end of each token */
} decoder_step_t;

struct decoder {
    decoder_step_t steps[DECODER_STEPS_MAX]; /* applied in order */
    int n_steps;
    int join_space; /* no decoder: join tokens with ' ' */
};

static int s_add_step(void *ctx, const json_t *spec, const char *type, err_t *err)
{
    decoder_t *self = ctx;
    if (tok_steps_room(self->n_steps, 1, DECODER_STEPS_MAX, "decoders", err) < 0)
        return -1;
    decoder_step_t *st = &self->steps[self->n_steps];
    memset(st, 0, sizeof *st);
    if (strcmp(type, "ByteLevel") == 0) {
        st->kind = DECODER_BYTELEVEL;
    } else if (strcmp(type, "ByteFallback") == 0) {
        st->kind = DECODER_BYTEFALLBACK;
    } else if (strcmp(type, "Fuse") == 0) {
        st->kind = DECODER_FUSE;
    } else if (strcmp(type, "Replace") == 0) {
        st->kind = DECODER_REPLACE;
        if (tok_spec_replace(spec, "decoder", &st->text, err) < 0)
            return -1;
    } else if (strcmp(type, "Strip") == 0) {
        const char *c = json_string_value(json_object_get(spec, "content"));
        if (!c || !*c)
            return err_set(err, EINVAL, "Strip decoder needs a content character");
        st->kind = DECODER_STRIP;
        st->start = (int)json_integer_value(json_object_get(spec, "start"));
        st->stop = (int)json_integer_value(json_object_get(spec, "stop"));
        if (tok_texts_set(&st->text, c, err) < 0)
            return -1;
    } else {
        return err_set(err, EINVAL, "unsupported decoder type '%s'", type);
    }
    self->n_steps++;
    return 0;
}

decoder_t *decoder_new(const json_t *spec, err_t *err)
{
    decoder_t *self = mem_calloc(1, sizeof *self);
    if (!self) {
        err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    self->join_space = !spec || json_is_null(spec);
    if (!self->join_space &&
        tok_spec_steps(spec, "decoder", "decoders", false, s_add_step, self, err) < 0)
        decoder_destroy(&self); /* keeps errno */
    return self;
}

void decoder_destroy(decoder_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    decoder_t *self = *self_p;
    int saved = errno;
    for (int i = 0; i < self->n_steps; i++)
        tok_texts_fini(&self->steps[i].text);
    mem_free(self);
    *self_p = NULL;
    errno = saved;
}

/* The byte of a "<0xNN>" token, or -1. */
static int s_byte_token(const char *t, size_t n)
{
    if (n != 6 || memcmp(t, "<0x", 3) != 0 || t[5] != '>')
        return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = t[i];
        int d = c >= '0' && c <= '9' ? c - '0'
              : c >= 'A' && c <= 'F' ? c - 'A' + 10
              : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Emits a run of fallback bytes to out as ByteFallback does. */
static int s_flush_bytes(tok_bytes_t *run, tok_pieces_t *out)
{
    if (run->n == 0)
        return 0;
    const unsigned char *u = (const unsigned char *)run->v;
    int valid = 1;
    for (size_t i = 0; i < run->n && valid;) {
        int k = tok_utf8_step(u + i, run->n - i);
        valid = k > 0;
        i += (size_t)(k > 0 ? k : -k);
    }
    int rc = 0;
    if (valid)
        rc = tok_pieces_push(out, run->v, run->n);
    else
        for (size_t i = 0; i < run->n && rc == 0; i++)
            rc = tok_pieces_push(out, "\xEF\xBF\xBD", 3);
    run->n = 0;
    return rc;
}

static int s_step(const decoder_step_t *st, const tok_pieces_t *in,
                  tok_pieces_t *out)
{
    tok_bytes_t b = {0};
    int rc = -1;
    tok_pieces_clear(out);
    if (st->kind == DECODER_BYTELEVEL || st->kind == DECODER_FUSE) {
        for (size_t k = 0; k < in->n; k++) {
            const char *t = in->bytes.v + in->off[k];
            size_t n = in->len[k], used, i = 0;
            size_t mark = b.n;
            int ok = 1;
            while (st->kind == DECODER_BYTELEVEL && i < n && ok) {
                int v = pretok_char_byte(t + i, n - i, &used);
                unsigned char c = (unsigned char)v;
                if ((ok = v >= 0) && tok_bytes_push(&b, &c, 1) < 0)
                    goto cleanup;
                i += used;
            }
            if (st->kind == DECODER_FUSE || !ok) {
                b.n = mark; /* not all table characters: keep the raw text */
                if (tok_bytes_push(&b, t, n) < 0)
                    goto cleanup;
            }
        }
        if (st->kind == DECODER_FUSE) {
            if (tok_pieces_push(out, b.v ? b.v : "", b.n) < 0)
                goto cleanup;
        } else {
            tok_bytes_t s = {0};
            int r = tok_utf8_lossy(&s, b.v ? b.v : "", b.n);
            r = r < 0 ? r : tok_pieces_push(out, s.v ? s.v : "", s.n);
            tok_bytes_fini(&s);
            if (r < 0)
                goto cleanup;
        }
        rc = 0;
        goto cleanup;
    }
    for (size_t k = 0; k < in->n; k++) {
        const char *t = in->bytes.v + in->off[k];
        size_t n = in->len[k];
        if (st->kind == DECODER_BYTEFALLBACK) {
            int v = s_byte_token(t, n);
            unsigned char c = (unsigned char)v;
            if (v >= 0) {
                if (tok_bytes_push(&b, &c, 1) < 0)
                    goto cleanup;
                continue;
            }
            if (s_flush_bytes(&b, out) < 0 || tok_pieces_push(out, t, n) < 0)
                goto cleanup;
        } else if (st->kind == DECODER_REPLACE) {
            tok_bytes_t r = {0};
            int fail = tok_bytes_replace(&r, t, n, st->text.a, st->text.b) < 0;
            fail = fail || tok_pieces_push(out, r.v ? r.v : "", r.n) < 0;
            tok_bytes_fini(&r);
            if (fail)
                goto cleanup;
        } else { /* DECODER_STRIP */
            size_t nc = strlen(st->text.a), s = 0, e = n;
            for (int i = 0; i < st->start && e - s >= nc &&
                            memcmp(t + s, st->text.a, nc) == 0; i++)
                s += nc;
            for (int i = 0; i < st->stop && e - s >= nc &&
                            memcmp(t + e - nc, st->text.a, nc) == 0; i++)
                e -= nc;
            if (tok_pieces_push(out, t + s, e - s) < 0)
                goto cleanup;
        }
    }
    if (st->kind == DECODER_BYTEFALLBACK && s_flush_bytes(&b, out) < 0)
        goto cleanup;
    rc = 0;
cleanup:
    tok_bytes_fini(&b);
    return rc;
}

int decoder_n_steps(const decoder_t *self) { return self->n_steps; }

int decoder_head(const decoder_t *self)
{
    for (int i = 0; i < self->n_steps; i++)
        if (self->steps[i].kind == DECODER_FUSE ||
            self->steps[i].kind == DECODER_BYTELEVEL)
            return i + 1;
    return self->n_steps;
}

int decoder_step_strip(const decoder_t *self, int i, const char **content,
                       int *start, int *stop)
{
    const decoder_step_t *st = &self->steps[i];
    if (st->kind == DECODER_FUSE)
        return 0;
    if (st->kind != DECODER_STRIP)
        return -1;
    *content = st->text.a;
    *start = st->start;
    *stop = st->stop;
    return 1;
}

int decoder_open_end(const decoder_t *self, int steps, const char *token)
{
    int first = 0;
    while (first < steps && self->steps[first].kind != DECODER_BYTEFALLBACK)
        first++;
    if (first == steps)
        return 0;
    /* Why: the steps before the first ByteFallback work token by token, so
     * they show what it sees of this token. */
    tok_pieces_t t = {0}, tmp = {0};
    int rc = tok_pieces_push(&t, token, strlen(token));
    for (int i = 0; i < first && rc == 0; i++) {
        rc = s_step(&self->steps[i], &t, &tmp);
        tok_pieces_t swap = t;
        t = tmp;
        tmp = swap;
    }
    if (rc == 0)
        rc = t.n == 1 && s_byte_token(t.bytes.v + t.off[0], t.len[0]) >= 0;
    tok_pieces_fini(&t);
    tok_pieces_fini(&tmp);
    return rc;
}

int decoder_run(const decoder_t *self, tok_pieces_t *tokens, tok_bytes_t *out,
                err_t *err)
{
    return decoder_run_steps(self, 0, self->n_steps, tokens, out, err);
}

int decoder_run_steps(const decoder_t *self, int first, int last,
                      tok_pieces_t *tokens, tok_bytes_t *out, err_t *err)
{
    tok_pieces_t tmp = {0};
    int rc = -1;
    for (int i = first; i < last; i++) {
        if (s_step(&self->steps[i], tokens, &tmp) < 0) {
            err_set(err, ENOMEM, "out of memory");
            goto cleanup;
        }
        tok_pieces_swap(tokens, &tmp);
    }
    out->n = 0;
    for (size_t k = 0; k < tokens->n; k++) {
        if ((self->join_space && k > 0 && tok_bytes_push(out, " ", 1) < 0) ||
            tok_bytes_push(out, tokens->bytes.v + tokens->off[k], tokens->len[k]) < 0) {
            err_set(err, ENOMEM, "out of memory");
            goto cleanup;
        }
    }
    if (tok_bytes_reserve(out, 0) < 0) {
        err_set(err, ENOMEM, "out of memory");
        goto cleanup;
    }
    rc = 0;
cleanup:
    tok_pieces_fini(&tmp);
    return rc;
}
