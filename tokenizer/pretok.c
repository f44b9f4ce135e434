/* pretok: see pretok.h. A spec is flattened into a list of steps; each step
 * turns the current list of pieces into the next. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/pretok.h"

#include <errno.h>
#include <pcre2.h>
#include <string.h>

#include "core/mem.h"

enum { PRETOK_STEPS_MAX = 16 };

/* The pattern of ByteLevel with use_regex (GPT-2's). */
static const char s_gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+"
    "|\\s+(?!\\S)|\\s+";

typedef enum pretok_kind {
    PRETOK_SPLIT,    /* cut at regex matches */
    PRETOK_BYTELEVEL /* map bytes to GPT-2 characters */
} pretok_kind_t;

typedef struct pretok_step {
    pretok_kind_t kind;
    pcre2_code *re;        /* PRETOK_SPLIT: the compiled pattern */
    int removed;           /* PRETOK_SPLIT: drop matches (else isolate them) */
    int invert;            /* PRETOK_SPLIT: the non-matches are the matches */
    int add_prefix_space;  /* PRETOK_BYTELEVEL: prepend ' ' when missing */
} pretok_step_t;

struct pretok {
    pretok_step_t steps[PRETOK_STEPS_MAX]; /* applied in order */
    int n_steps;
    pcre2_match_data *md; /* match data sized for the largest pattern */
};

/* GPT-2 table: byte -> UTF-8 of its character, and code point -> byte. */
static char s_byte_utf8[256][3];
static int s_cp_byte[324];
static int s_table_ready;

static void s_table_init(void)
{
    if (s_table_ready)
        return;
    int n = 0;
    for (int i = 0; i < 324; i++)
        s_cp_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) ||
                        (b >= 0xAE && b <= 0xFF);
        int cp = printable ? b : 256 + n++;
        if (cp < 0x80) {
            s_byte_utf8[b][0] = (char)cp;
            s_byte_utf8[b][1] = '\0';
        } else {
            s_byte_utf8[b][0] = (char)(0xC0 | (cp >> 6));
            s_byte_utf8[b][1] = (char)(0x80 | (cp & 0x3F));
            s_byte_utf8[b][2] = '\0';
        }
        s_cp_byte[cp] = b;
    }
    s_table_ready = 1;
}

const char *pretok_byte_char(unsigned char b)
{
    s_table_init();
    return s_byte_utf8[b];
}

int pretok_char_byte(const char *s, size_t n, size_t *used)
{
    s_table_init();
    const unsigned char *u = (const unsigned char *)s;
    if (n >= 1 && u[0] < 0x80) {
        *used = 1;
        return s_cp_byte[u[0]];
    }
    if (n >= 2 && (u[0] & 0xE0) == 0xC0 && (u[1] & 0xC0) == 0x80) {
        int cp = ((u[0] & 0x1F) << 6) | (u[1] & 0x3F);
        *used = 2;
        return cp < 324 ? s_cp_byte[cp] : -1;
    }
    return -1;
}

static int s_compile(pretok_step_t *st, const char *pat, size_t n, int literal,
                     err_t *err)
{
    int code;
    PCRE2_SIZE at;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
    st->re = pcre2_compile((PCRE2_SPTR)pat, n, opts, &code, &at, NULL);
    if (!st->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return err_set(err, EINVAL, "split pattern /%s/ at %zu: %s", pat,
                       (size_t)at, (const char *)msg);
    }
    pcre2_jit_compile(st->re, PCRE2_JIT_COMPLETE); /* optional speed-up */
    return 0;
}

static int s_add_step(void *ctx, const json_t *spec, const char *type, err_t *err)
{
    pretok_t *self = ctx;
    if (tok_steps_room(self->n_steps, 2, PRETOK_STEPS_MAX, "pre-tokenizers", err) < 0)
        return -1;
    if (self->n_steps > 0 &&
        self->steps[self->n_steps - 1].kind == PRETOK_BYTELEVEL)
        return err_set(err, EINVAL, "pre-tokenizer after ByteLevel is not supported");
    pretok_step_t *st = &self->steps[self->n_steps];
    memset(st, 0, sizeof *st);
    if (strcmp(type, "Split") == 0) {
        const json_t *pat = json_object_get(spec, "pattern");
        const char *behavior = json_string_value(json_object_get(spec, "behavior"));
        const json_t *re = json_object_get(pat, "Regex");
        const json_t *str = json_object_get(pat, "String");
        const json_t *p = re ? re : str;
        if (!json_is_string(p) || !behavior)
            return err_set(err, EINVAL, "Split needs a pattern and a behavior");
        if (strcmp(behavior, "Isolated") == 0)
            st->removed = 0;
        else if (strcmp(behavior, "Removed") == 0)
            st->removed = 1;
        else
            return err_set(err, EINVAL, "unsupported Split behavior '%s'", behavior);
        st->invert = json_is_true(json_object_get(spec, "invert"));
        st->kind = PRETOK_SPLIT;
        if (s_compile(st, json_string_value(p), json_string_length(p), !re, err) < 0)
            return -1;
        self->n_steps++;
        return 0;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        int prefix = json_is_true(json_object_get(spec, "add_prefix_space"));
        const json_t *use_regex = json_object_get(spec, "use_regex");
        if (!use_regex || json_is_true(use_regex)) {
            st->kind = PRETOK_SPLIT;
            if (s_compile(st, s_gpt2_pattern, strlen(s_gpt2_pattern), 0, err) < 0)
                return -1;
            st = &self->steps[++self->n_steps];
            memset(st, 0, sizeof *st);
        }
        st->kind = PRETOK_BYTELEVEL;
        st->add_prefix_space = prefix;
        if (prefix && self->n_steps > 0)
            /* Why: the space must come before the regex split sees the text. */
            return err_set(err, EINVAL, "ByteLevel add_prefix_space after "
                                        "another pre-tokenizer is not supported");
        self->n_steps++;
        return 0;
    }
    return err_set(err, EINVAL, "unsupported pre-tokenizer type '%s'", type);
}

pretok_t *pretok_new(const json_t *spec, err_t *err)
{
    s_table_init();
    pretok_t *self = mem_calloc(1, sizeof *self);
    if (!self) {
        err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    if (tok_spec_steps(spec, "pre-tokenizer", "pretokenizers", true, s_add_step, self, err) < 0)
        goto fail;
    self->md = pcre2_match_data_create(64, NULL);
    if (!self->md) {
        err_set(err, ENOMEM, "out of memory");
        goto fail;
    }
    return self;
fail:;
    int saved = errno;
    pretok_destroy(&self);
    errno = saved;
    return NULL;
}

void pretok_destroy(pretok_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pretok_t *self = *self_p;
    for (int i = 0; i < PRETOK_STEPS_MAX; i++)
        pcre2_code_free(self->steps[i].re);
    pcre2_match_data_free(self->md);
    mem_free(self);
    *self_p = NULL;
}

/* Appends p[0..n) to out as a piece when not empty. */
static int s_keep(tok_pieces_t *out, const char *p, size_t n)
{
    return n ? tok_pieces_push(out, p, n) : 0;
}

static int s_split(const pretok_t *self, const pretok_step_t *st,
                   const char *p, size_t n, tok_pieces_t *out, err_t *err)
{
    size_t at = 0, last = 0; /* search position; end of the last match */
    while (at <= n) {
        int rc = pcre2_match(st->re, (PCRE2_SPTR)p, n, at, 0, self->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0)
            return err_set(err, EINVAL, "regex match failed (%d)", rc);
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(self->md);
        size_t s = ov[0], e = ov[1];
        if (e == s) { /* empty match: step over one character */
            at = s + 1;
            while (at < n && ((unsigned char)p[at] & 0xC0) == 0x80)
                at++;
            continue;
        }
        int keep_gap = !st->removed || st->invert;
        int keep_hit = !st->removed || !st->invert;
        if ((keep_gap && s_keep(out, p + last, s - last) < 0) ||
            (keep_hit && s_keep(out, p + s, e - s) < 0))
            return err_set(err, ENOMEM, "out of memory");
        last = at = e;
    }
    if ((!st->removed || st->invert) && s_keep(out, p + last, n - last) < 0)
        return err_set(err, ENOMEM, "out of memory");
    return 0;
}

static int s_bytelevel(const pretok_step_t *st, const char *p, size_t n,
                       int first, tok_pieces_t *out, err_t *err)
{
    tok_bytes_t b = {0};
    int rc = -1;
    if (st->add_prefix_space && first && (n == 0 || p[0] != ' ') &&
        tok_bytes_push(&b, s_byte_utf8[' '], strlen(s_byte_utf8[' '])) < 0)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        const char *c = s_byte_utf8[(unsigned char)p[i]];
        if (tok_bytes_push(&b, c, strlen(c)) < 0)
            goto oom;
    }
    if (s_keep(out, b.v, b.n) < 0)
        goto oom;
    rc = 0;
    goto cleanup;
oom:
    err_set(err, ENOMEM, "out of memory");
cleanup:
    tok_bytes_fini(&b);
    return rc;
}

int pretok_run(const pretok_t *self, const char *text, size_t n,
               tok_pieces_t *out, err_t *err)
{
    tok_pieces_t tmp = {0};
    int rc = -1;
    tok_pieces_clear(out);
    if (s_keep(out, text, n) < 0) {
        err_set(err, ENOMEM, "out of memory");
        goto cleanup;
    }
    for (int i = 0; i < self->n_steps; i++) {
        const pretok_step_t *st = &self->steps[i];
        tok_pieces_clear(&tmp);
        for (size_t k = 0; k < out->n; k++) {
            const char *p = out->bytes.v + out->off[k];
            int r = st->kind == PRETOK_SPLIT
                        ? s_split(self, st, p, out->len[k], &tmp, err)
                        : s_bytelevel(st, p, out->len[k], k == 0, &tmp, err);
            if (r < 0)
                goto cleanup;
        }
        tok_pieces_swap(out, &tmp);
    }
    rc = 0;
cleanup:
    tok_pieces_fini(&tmp);
    return rc;
}
