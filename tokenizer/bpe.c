/* bpe: see bpe.h.
 *
 * Token texts live in one byte arena; the vocabulary hash maps text to id by
 * open addressing over id slots, and the merge hash maps the id pair (a, b)
 * to the merge's rank and the id of the merged token. Merging a piece
 * repeatedly joins the adjacent pair of lowest rank (leftmost on ties), which
 * is the order HF tokenizers' priority queue yields.
 */
#include "tokenizer/bpe.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/mem.h"

typedef struct bpe_merge {
    uint64_t key; /* (a << 32) | b, UINT64_MAX when the slot is empty */
    int32_t rank; /* position in the merges list: lower merges first */
    int32_t id;   /* id of the token a+b */
} bpe_merge_t;

struct bpe {
    char *arena;          /* every token text, NUL-separated */
    size_t *tok_off;      /* (n_ids) arena offset of each id's text; SIZE_MAX if none */
    uint32_t *tok_len;    /* (n_ids) text length in bytes */
    int32_t n_ids;        /* one past the largest id */
    int32_t *vocab_slots; /* (vocab_cap) id per slot, -1 when empty */
    size_t vocab_cap;     /* power of two */
    bpe_merge_t *merges;  /* (merge_cap) open-addressed merge table */
    size_t merge_cap;     /* power of two */
    int32_t unk_id;       /* id of unk_token, or -1 */
    int fuse_unk;         /* consecutive unknowns become one unk */
    int byte_fallback;    /* unknown characters become <0xNN> tokens */
    int ignore_merges;    /* a piece in the vocabulary is one token */
    int32_t byte_ids[256]; /* id of <0xNN>, or -1 */
};

int32_t bpe_token_id(const bpe_t *self, const char *s, size_t n)
{
    size_t mask = self->vocab_cap - 1;
    for (size_t i = tok_hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
        int32_t id = self->vocab_slots[i];
        if (id < 0)
            return -1;
        if (self->tok_len[id] == n &&
            memcmp(self->arena + self->tok_off[id], s, n) == 0)
            return id;
    }
}

const char *bpe_id_token(const bpe_t *self, int32_t id, size_t *n)
{
    if (id < 0 || id >= self->n_ids || self->tok_off[id] == SIZE_MAX)
        return NULL;
    if (n)
        *n = self->tok_len[id];
    return self->arena + self->tok_off[id];
}

int32_t bpe_n_ids(const bpe_t *self) { return self->n_ids; }

static const bpe_merge_t *s_merge_find(const bpe_t *self, int32_t a, int32_t b)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t mask = self->merge_cap - 1;
    for (size_t i = tok_hash_u64(key) & mask;; i = (i + 1) & mask) {
        if (self->merges[i].key == UINT64_MAX)
            return NULL;
        if (self->merges[i].key == key)
            return &self->merges[i];
    }
}

static int s_load_vocab(bpe_t *self, const json_t *vocab, err_t *err)
{
    size_t n = json_object_size(vocab), bytes = 0;
    const char *key;
    const json_t *val;
    int32_t max_id = -1;
    json_object_foreach((json_t *)vocab, key, val) {
        json_int_t id = json_integer_value(val);
        if (!json_is_integer(val) || id < 0 || id > INT32_MAX - 1)
            return err_set(err, EINVAL, "vocab entry '%s' has no valid id", key);
        if (id > max_id)
            max_id = (int32_t)id;
        bytes += strlen(key) + 1;
    }
    self->n_ids = max_id + 1;
    self->arena = mem_alloc(bytes + 1);
    self->tok_off = mem_alloc(((size_t)self->n_ids + 1) * sizeof *self->tok_off);
    self->tok_len = mem_calloc((size_t)self->n_ids + 1, sizeof *self->tok_len);
    self->vocab_cap = tok_pow2_above(n);
    self->vocab_slots = mem_alloc(self->vocab_cap * sizeof *self->vocab_slots);
    if (!self->arena || !self->tok_off || !self->tok_len || !self->vocab_slots)
        return err_set(err, ENOMEM, "out of memory");
    for (int32_t i = 0; i < self->n_ids; i++)
        self->tok_off[i] = SIZE_MAX;
    memset(self->vocab_slots, 0xFF, self->vocab_cap * sizeof *self->vocab_slots);
    size_t at = 0;
    json_object_foreach((json_t *)vocab, key, val) {
        int32_t id = (int32_t)json_integer_value(val);
        size_t len = strlen(key);
        if (self->tok_off[id] != SIZE_MAX)
            return err_set(err, EINVAL, "vocab id %d is used twice", (int)id);
        memcpy(self->arena + at, key, len + 1);
        self->tok_off[id] = at;
        self->tok_len[id] = (uint32_t)len;
        at += len + 1;
        size_t mask = self->vocab_cap - 1, i = tok_hash_bytes(key, len) & mask;
        while (self->vocab_slots[i] >= 0)
            i = (i + 1) & mask;
        self->vocab_slots[i] = id;
    }
    return 0;
}

static int s_load_merges(bpe_t *self, const json_t *merges, err_t *err)
{
    size_t n = json_array_size(merges);
    self->merge_cap = tok_pow2_above(n);
    self->merges = mem_alloc(self->merge_cap * sizeof *self->merges);
    if (!self->merges)
        return err_set(err, ENOMEM, "out of memory");
    memset(self->merges, 0xFF, self->merge_cap * sizeof *self->merges);
    char buf[1024];
    for (size_t r = 0; r < n; r++) {
        const json_t *m = json_array_get(merges, r);
        const char *a, *b;
        size_t na, nb;
        if (json_is_string(m)) {
            const char *s = json_string_value(m);
            const char *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' '))
                return err_set(err, EINVAL, "merge %zu '%s' is not 'a b'", r, s);
            a = s, na = (size_t)(sp - s), b = sp + 1, nb = strlen(b);
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            a = json_string_value(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1));
            na = strlen(a), nb = strlen(b);
        } else {
            return err_set(err, EINVAL, "merge %zu is neither 'a b' nor [a, b]", r);
        }
        if (na + nb >= sizeof buf)
            return err_set(err, EINVAL, "merge %zu is too long", r);
        memcpy(buf, a, na);
        memcpy(buf + na, b, nb);
        int32_t ia = bpe_token_id(self, a, na), ib = bpe_token_id(self, b, nb);
        int32_t iab = bpe_token_id(self, buf, na + nb);
        if (ia < 0 || ib < 0 || iab < 0)
            return err_set(err, EINVAL, "merge %zu names a token not in the vocab", r);
        uint64_t key = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
        size_t mask = self->merge_cap - 1, i = tok_hash_u64(key) & mask;
        while (self->merges[i].key != UINT64_MAX && self->merges[i].key != key)
            i = (i + 1) & mask;
        if (self->merges[i].key == key)
            continue; /* a repeated merge keeps its first (lowest) rank */
        self->merges[i].key = key;
        self->merges[i].rank = (int32_t)r;
        self->merges[i].id = iab;
    }
    return 0;
}

static int s_empty_or_null(const json_t *v)
{
    return !v || json_is_null(v) ||
           (json_is_string(v) && json_string_length(v) == 0);
}

bpe_t *bpe_new(const json_t *spec, err_t *err)
{
    bpe_t *self = NULL;
    const char *type = json_string_value(json_object_get(spec, "type"));
    const json_t *vocab = json_object_get(spec, "vocab");
    const json_t *merges = json_object_get(spec, "merges");
    if (!json_is_object(spec)) {
        err_set(err, EINVAL, "no model object");
        goto fail;
    }
    if (!type || strcmp(type, "BPE") != 0) {
        err_set(err, EINVAL, "unsupported model type '%s' (only BPE)",
                type ? type : "(none)");
        goto fail;
    }
    if (!json_is_object(vocab) || json_object_size(vocab) == 0 ||
        !json_is_array(merges)) {
        err_set(err, EINVAL, "BPE model needs a vocab object and a merges list");
        goto fail;
    }
    if (!s_empty_or_null(json_object_get(spec, "continuing_subword_prefix")) ||
        !s_empty_or_null(json_object_get(spec, "end_of_word_suffix")) ||
        !s_empty_or_null(json_object_get(spec, "dropout"))) {
        err_set(err, EINVAL, "BPE subword prefix/suffix and dropout are not supported");
        goto fail;
    }
    if (!(self = mem_calloc(1, sizeof *self))) {
        err_set(err, ENOMEM, "out of memory");
        goto fail;
    }
    if (s_load_vocab(self, vocab, err) < 0 || s_load_merges(self, merges, err) < 0)
        goto fail;
    const char *unk = json_string_value(json_object_get(spec, "unk_token"));
    self->unk_id = unk ? bpe_token_id(self, unk, strlen(unk)) : -1;
    self->fuse_unk = json_is_true(json_object_get(spec, "fuse_unk"));
    self->byte_fallback = json_is_true(json_object_get(spec, "byte_fallback"));
    self->ignore_merges = json_is_true(json_object_get(spec, "ignore_merges"));
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        self->byte_ids[b] = bpe_token_id(self, name, 6);
    }
    return self;
fail:;
    int saved = errno;
    bpe_destroy(&self);
    errno = saved;
    return NULL;
}

void bpe_destroy(bpe_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    bpe_t *self = *self_p;
    mem_free(self->arena);
    mem_free(self->tok_off);
    mem_free(self->tok_len);
    mem_free(self->vocab_slots);
    mem_free(self->merges);
    mem_free(self);
    *self_p = NULL;
}

int bpe_encode(const bpe_t *self, const char *piece, size_t n, tok_ids_t *out)
{
    if (n == 0)
        return 0;
    if (self->ignore_merges) {
        int32_t id = bpe_token_id(self, piece, n);
        if (id >= 0)
            return tok_ids_push(out, id);
    }
    /* Symbols are appended to out past `base` and merged in place. */
    size_t base = out->n;
    int last_unk = 0;
    for (size_t i = 0; i < n;) {
        int k = tok_utf8_step((const unsigned char *)piece + i, n - i);
        size_t len = (size_t)(k > 0 ? k : -k);
        int32_t id = bpe_token_id(self, piece + i, len);
        int rc = 0;
        if (id >= 0) {
            rc = tok_ids_push(out, id);
            last_unk = 0;
        } else if (self->byte_fallback && self->byte_ids[0] >= 0) {
            for (size_t j = 0; j < len && rc == 0; j++)
                rc = tok_ids_push(out, self->byte_ids[(unsigned char)piece[i + j]]);
            last_unk = 0;
        } else if (self->unk_id >= 0) {
            if (!(self->fuse_unk && last_unk))
                rc = tok_ids_push(out, self->unk_id);
            last_unk = 1;
        }
        if (rc < 0) {
            out->n = base;
            return -1;
        }
        i += len;
    }
    for (;;) {
        int32_t best_rank = INT32_MAX, best_id = -1;
        size_t best = 0;
        for (size_t i = base; i + 1 < out->n; i++) {
            const bpe_merge_t *m = s_merge_find(self, out->v[i], out->v[i + 1]);
            if (m && m->rank < best_rank) {
                best_rank = m->rank;
                best_id = m->id;
                best = i;
            }
        }
        if (best_id < 0)
            break;
        out->v[best] = best_id;
        memmove(out->v + best + 1, out->v + best + 2,
                (out->n - best - 2) * sizeof *out->v);
        out->n--;
    }
    return 0;
}
