/* normalize: see normalize.h. A spec is flattened into a list of steps, each
 * applied to the whole text in turn. */
#include "tokenizer/normalize.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/mem.h"

enum { NORMALIZE_STEPS_MAX = 32 };

typedef enum normalize_kind {
    NORMALIZE_UNICODE, /* utf8proc_map with `options` */
    NORMALIZE_PREPEND, /* prepend `text.a` to non-empty text */
    NORMALIZE_REPLACE  /* replace every `text.a` with `text.b` */
} normalize_kind_t;

typedef struct normalize_step {
    normalize_kind_t kind;
    int options; /* utf8proc options, for NORMALIZE_UNICODE */
    tok_texts_t text; /* prepended text, or Replace's pattern and content */
} normalize_step_t;

struct normalize {
    normalize_step_t steps[NORMALIZE_STEPS_MAX]; /* applied in order */
    int n_steps;
};

static int s_add_step(void *ctx, const json_t *spec, const char *type, err_t *err)
{
    normalize_t *self = ctx;
    if (tok_steps_room(self->n_steps, 1, NORMALIZE_STEPS_MAX, "normalizers", err) < 0)
        return -1;
    normalize_step_t *st = &self->steps[self->n_steps];
    memset(st, 0, sizeof *st);
    if (strcmp(type, "NFC") == 0 || strcmp(type, "NFD") == 0 ||
        strcmp(type, "NFKC") == 0 || strcmp(type, "NFKD") == 0) {
        st->kind = NORMALIZE_UNICODE;
        st->options = UTF8PROC_STABLE |
                      (type[2] == 'K' ? UTF8PROC_COMPAT : 0) |
                      (type[strlen(type) - 1] == 'C' ? UTF8PROC_COMPOSE
                                                     : UTF8PROC_DECOMPOSE);
    } else if (strcmp(type, "Prepend") == 0) {
        const char *p = json_string_value(json_object_get(spec, "prepend"));
        if (!p)
            return err_set(err, EINVAL, "Prepend normalizer without a string");
        st->kind = NORMALIZE_PREPEND;
        if (tok_texts_set(&st->text, p, err) < 0)
            return -1;
    } else if (strcmp(type, "Replace") == 0) {
        st->kind = NORMALIZE_REPLACE;
        if (tok_spec_replace(spec, "normalizer", &st->text, err) < 0)
            return -1;
    } else {
        return err_set(err, EINVAL, "unsupported normalizer type '%s'", type);
    }
    self->n_steps++;
    return 0;
}

normalize_t *normalize_new(const json_t *spec, err_t *err)
{
    normalize_t *self = mem_calloc(1, sizeof *self);
    if (!self)
        err_set(err, ENOMEM, "out of memory");
    else if (tok_spec_steps(spec, "normalizer", "normalizers", true, s_add_step, self, err) < 0)
        normalize_destroy(&self); /* keeps errno */
    return self;
}

void normalize_destroy(normalize_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    normalize_t *self = *self_p;
    int saved = errno;
    for (int i = 0; i < self->n_steps; i++)
        tok_texts_fini(&self->steps[i].text);
    mem_free(self);
    *self_p = NULL;
    errno = saved;
}

/* out = step(in). */
static int s_step(const normalize_step_t *st, const char *in, size_t n,
                  tok_bytes_t *out, err_t *err)
{
    out->n = 0;
    if (st->kind == NORMALIZE_UNICODE) {
        if (n == 0)
            return tok_bytes_reserve(out, 0);
        utf8proc_uint8_t *res = NULL;
        utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)in,
                                          (utf8proc_ssize_t)n, &res,
                                          (utf8proc_option_t)st->options);
        if (r < 0)
            return err_set(err, r == UTF8PROC_ERROR_NOMEM ? ENOMEM : EINVAL,
                           "normalizing: %s", utf8proc_errmsg(r));
        int rc = tok_bytes_push(out, res, (size_t)r);
        free(res); /* utf8proc allocates with malloc */
        return rc < 0 ? err_set(err, ENOMEM, "out of memory") : 0;
    }
    if (st->kind == NORMALIZE_PREPEND) {
        if (n > 0 && tok_bytes_push(out, st->text.a, strlen(st->text.a)) < 0)
            return err_set(err, ENOMEM, "out of memory");
        if (tok_bytes_push(out, in, n) < 0)
            return err_set(err, ENOMEM, "out of memory");
        return 0;
    }
    if (tok_bytes_replace(out, in, n, st->text.a, st->text.b) < 0)
        return err_set(err, ENOMEM, "out of memory");
    return tok_bytes_reserve(out, 0);
}

int normalize_run(const normalize_t *self, const char *text, size_t n,
                  tok_bytes_t *out, err_t *err)
{
    tok_bytes_t tmp = {0};
    int rc = -1;
    out->n = 0;
    if (tok_bytes_push(out, text, n) < 0) {
        err_set(err, ENOMEM, "out of memory");
        goto cleanup;
    }
    for (int i = 0; i < self->n_steps; i++) {
        if (s_step(&self->steps[i], out->v, out->n, &tmp, err) < 0)
            goto cleanup;
        tok_bytes_swap(out, &tmp);
    }
    rc = 0;
cleanup:
    tok_bytes_fini(&tmp);
    return rc;
}
