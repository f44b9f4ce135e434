/* tokenizer_private: what the modules of tokenizer/ (normalize, pretok, bpe,
 * decoder, tokenizer, trainer) share: growable byte and id buffers and piece
 * lists, the walk over a tokenizer.json component's steps, and the hashes of
 * their open-addressed tables. Not part of the public API. All allocation
 * goes through core/mem.h; the push functions return 0, or -1 with errno
 * ENOMEM and the buffer unchanged.
 *
 * The step modules (normalize, pretok, decoder) share one contract: X_new
 * compiles a component spec of tokenizer.json (NULL or JSON null: identity)
 * into a flat list of steps, caller destroys, NULL with EINVAL/err for an
 * unsupported or malformed spec and ENOMEM; X_destroy accepts NULL and sets
 * *self_p to NULL; X_run applies the steps in order. */
#ifndef MOE_TOKENIZER_PRIVATE_H
#define MOE_TOKENIZER_PRIVATE_H

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/err.h"
#include "core/mem.h"

typedef struct tok_bytes {
    char *v;    /* bytes, NUL-terminated beyond n when n > 0 */
    size_t n;   /* bytes used */
    size_t cap; /* bytes allocated */
} tok_bytes_t;

typedef struct tok_ids {
    int32_t *v; /* (n) token ids */
    size_t n;
    size_t cap;
} tok_ids_t;

/* Pieces of text: piece i is bytes.v[off[i] .. off[i] + len[i]). */
typedef struct tok_pieces {
    tok_bytes_t bytes; /* the concatenated pieces */
    size_t *off;       /* (n) byte offsets into bytes */
    size_t *len;       /* (n) byte lengths */
    size_t n;
    size_t cap;
} tok_pieces_t;

static inline int tok_bytes_reserve(tok_bytes_t *b, size_t extra)
{
    if (b->n + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra + 1)
        cap *= 2;
    char *v = mem_realloc(b->v, cap);
    if (!v)
        return -1;
    b->v = v;
    b->cap = cap;
    return 0;
}

static inline int tok_bytes_push(tok_bytes_t *b, const void *p, size_t n)
{
    if (tok_bytes_reserve(b, n) < 0)
        return -1;
    if (n)
        memcpy(b->v + b->n, p, n);
    b->n += n;
    b->v[b->n] = '\0';
    return 0;
}

/* mem_free that keeps errno: the fini functions use it, so that a cleanup
 * label needs no saving. */
static inline void tok_free(void *p)
{
    int saved = errno;
    mem_free(p);
    errno = saved;
}

static inline void tok_bytes_fini(tok_bytes_t *b)
{
    tok_free(b->v);
    memset(b, 0, sizeof *b);
}

static inline int tok_ids_push(tok_ids_t *d, int32_t id)
{
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 64;
        int32_t *v = mem_realloc(d->v, cap * sizeof *v);
        if (!v)
            return -1;
        d->v = v;
        d->cap = cap;
    }
    d->v[d->n++] = id;
    return 0;
}

static inline void tok_ids_fini(tok_ids_t *d)
{
    tok_free(d->v);
    memset(d, 0, sizeof *d);
}

/* Appends one piece holding a copy of p[0..n). */
static inline int tok_pieces_push(tok_pieces_t *ps, const char *p, size_t n)
{
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? ps->cap * 2 : 16;
        size_t *off = mem_realloc(ps->off, cap * sizeof *off);
        if (!off)
            return -1;
        ps->off = off;
        size_t *len = mem_realloc(ps->len, cap * sizeof *len);
        if (!len)
            return -1;
        ps->len = len;
        ps->cap = cap;
    }
    size_t at = ps->bytes.n;
    if (tok_bytes_push(&ps->bytes, p, n) < 0)
        return -1;
    ps->off[ps->n] = at;
    ps->len[ps->n] = n;
    ps->n++;
    return 0;
}

static inline void tok_pieces_clear(tok_pieces_t *ps)
{
    ps->n = 0;
    ps->bytes.n = 0;
}

/* Exchanges two buffers: a step's output becomes the next step's input. */
static inline void tok_bytes_swap(tok_bytes_t *a, tok_bytes_t *b)
{
    tok_bytes_t t = *a;
    *a = *b;
    *b = t;
}

static inline void tok_pieces_swap(tok_pieces_t *a, tok_pieces_t *b)
{
    tok_pieces_t t = *a;
    *a = *b;
    *b = t;
}

static inline void tok_pieces_fini(tok_pieces_t *ps)
{
    tok_bytes_fini(&ps->bytes);
    tok_free(ps->off);
    tok_free(ps->len);
    memset(ps, 0, sizeof *ps);
}

/* Length of the UTF-8 sequence at s[0..n): the sequence's length when it is
 * a valid scalar value, else minus the length of its maximal invalid subpart
 * (at least 1), as Unicode's "substitution of maximal subparts" defines it. */
static inline int tok_utf8_step(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    int need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c == 0xE0)
        need = 2, lo = 0xA0;
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
        need = 2;
    else if (c == 0xED)
        need = 2, hi = 0x9F;
    else if (c == 0xF0)
        need = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3)
        need = 3;
    else if (c == 0xF4)
        need = 3, hi = 0x8F;
    else
        return -1;
    for (int i = 1; i <= need; i++) {
        if ((size_t)i >= n || s[i] < lo || s[i] > hi)
            return -i;
        lo = 0x80, hi = 0xBF;
    }
    return need + 1;
}

/* Appends s[0..n) to out, each invalid UTF-8 subpart replaced by U+FFFD. */
static inline int tok_utf8_lossy(tok_bytes_t *out, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        int k = tok_utf8_step(u + i, n - i);
        int rc = k > 0 ? tok_bytes_push(out, s + i, (size_t)k)
                       : tok_bytes_push(out, "\xEF\xBF\xBD", 3);
        if (rc < 0)
            return -1;
        i += (size_t)(k > 0 ? k : -k);
    }
    return tok_bytes_reserve(out, 0);
}

/* One step of a component spec: an object whose "type" is not "Sequence". */
typedef int tok_step_fn(void *self, const json_t *spec, const char *type, err_t *err);

/* Calls step for spec, or, for a Sequence, for every spec of its list (under
 * list_key; Sequences nest), in order. what names the component in errors
 * ("normalizer"); skip_null: a NULL or JSON null spec adds no step (else it
 * is a spec without a type). 0, or -1 from step or with EINVAL/err. */
static inline int tok_spec_steps(const json_t *spec, const char *what, const char *list_key,
                                 bool skip_null, tok_step_fn *step, void *self, err_t *err)
{
    if (skip_null && (!spec || json_is_null(spec)))
        return 0;
    const char *type = json_string_value(json_object_get(spec, "type"));
    if (!type)
        return err_set(err, EINVAL, "%s without a type", what);
    if (strcmp(type, "Sequence") != 0)
        return step(self, spec, type, err);
    const json_t *list = json_object_get(spec, list_key);
    if (!json_is_array(list))
        return err_set(err, EINVAL, "Sequence %s without a list", what);
    for (size_t i = 0; i < json_array_size(list); i++)
        if (tok_spec_steps(json_array_get(list, i), what, list_key, skip_null, step, self,
                           err) < 0)
            return -1;
    return 0;
}

/* Room for want more steps in a step module's list of n of at most max:
 * 0, or -1 with EINVAL/err "more than MAX PLURAL" ("normalizers"). */
static inline int tok_steps_room(int n, int want, int max, const char *plural, err_t *err)
{
    return n + want > max ? err_set(err, EINVAL, "more than %d %s", max, plural) : 0;
}

/* The texts one normalizer or decoder step owns (mem_alloc'd, NULL where
 * unused): a is Replace's pattern, Prepend's text or Strip's content; b is
 * Replace's content. */
typedef struct tok_texts {
    char *a;
    char *b;
} tok_texts_t;

/* Frees t's texts; t is then empty. */
static inline void tok_texts_fini(tok_texts_t *t)
{
    mem_free(t->a);
    mem_free(t->b);
    t->a = t->b = NULL;
}

/* t->a = a copy of text: 0, or -1 with ENOMEM/err. */
static inline int tok_texts_set(tok_texts_t *t, const char *text, err_t *err)
{
    return (t->a = mem_strdup(text)) ? 0 : err_set(err, ENOMEM, "out of memory");
}

/* A Replace step (normalizer or decoder): copies of its non-empty String
 * pattern and its content into t->a and t->b. 0, or -1 with EINVAL/err
 * (what names the component) or ENOMEM, nothing allocated. */
static inline int tok_spec_replace(const json_t *spec, const char *what, tok_texts_t *t,
                                   err_t *err)
{
    const char *p = json_string_value(
        json_object_get(json_object_get(spec, "pattern"), "String"));
    const char *c = json_string_value(json_object_get(spec, "content"));
    if (!p || !*p || !c)
        return err_set(err, EINVAL, "Replace %s needs a String pattern and content", what);
    t->a = mem_strdup(p);
    t->b = mem_strdup(c);
    if (!t->a || !t->b) {
        tok_texts_fini(t);
        return err_set(err, ENOMEM, "out of memory");
    }
    return 0;
}

/* Appends in[0..n) to b with every pattern (non-empty) replaced by content,
 * left to right. 0, or -1 with errno ENOMEM (b then holds a prefix). */
static inline int tok_bytes_replace(tok_bytes_t *b, const char *in, size_t n,
                                    const char *pattern, const char *content)
{
    size_t na = strlen(pattern), nb = strlen(content), i = 0;
    while (i < n) {
        const char *hit = memmem(in + i, n - i, pattern, na);
        size_t stop = hit ? (size_t)(hit - in) : n;
        if (tok_bytes_push(b, in + i, stop - i) < 0 ||
            (hit && tok_bytes_push(b, content, nb) < 0))
            return -1;
        i = hit ? stop + na : n;
    }
    return 0;
}

/* FNV-1a of s[0..n): the hash of token texts in the vocabulary tables. */
static inline uint64_t tok_hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

/* A 64-bit mix (murmur3's finaliser, first half): the hash of id pairs. */
static inline uint64_t tok_hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

/* Slots of an open-addressed table for n keys: a power of two, at least 16,
 * at most half full. */
static inline size_t tok_pow2_above(size_t n)
{
    size_t c = 16;
    while (c < 2 * n)
        c *= 2;
    return c;
}

#endif /* MOE_TOKENIZER_PRIVATE_H */
