/* chat_template: the public face of the Jinja interpreter of chat/: load a
 * model's template, render it with a context or a conversation. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat/chat_template.h"
#include "chat/jinja_private.h"
#include "core/mem.h"
#include "core/path.h"

/* Largest template source accepted (real ones are a few to ~20 KB). */
#define CHAT_TEMPLATE_MAX ((size_t)4 << 20)

struct chat_template {
    node_t *root;
    char *bos, *eos;   /* NULL: undefined */
    json_t *tokens;    /* the other special tokens (pad_token, unk_token...) or NULL */
    bool fixed_now;
    struct tm now;
    long max_steps;
};

chat_template_t *chat_template_new(const char *source, size_t len, err_t *err)
{
    if (!source && len > 0) {
        err_set(err, EINVAL, "chat template: no source");
        return NULL;
    }
    if (len > CHAT_TEMPLATE_MAX) {
        err_set(err, EINVAL, "chat template: %zu bytes (at most %zu)", len, CHAT_TEMPLATE_MAX);
        return NULL;
    }
    /* transformers gets templates as Python str: Unicode text */
    int line = 1;
    for (size_t i = 0; i < len;) {
        int32_t cp;
        size_t j = ustr_next(source, len, i, &cp);
        if ((j - i == 1 && (unsigned char)source[i] >= 0x80) || (cp >= 0xd800 && cp <= 0xdfff)) {
            err_set(err, EINVAL, "chat template line %d: not UTF-8 (byte 0x%02x at offset %zu)",
                    line, (unsigned char)source[i], i);
            return NULL;
        }
        line += cp == '\n';
        i = j;
    }
    chat_template_t *self = mem_calloc(1, sizeof *self);
    tk_list_t tokens = {0};
    if (!self) {
        err_set(err, ENOMEM, "chat template: out of memory");
        return NULL;
    }
    if (jinja_lex(source ? source : "", len, &tokens, err) < 0)
        goto fail;
    self->root = jinja_parse(&tokens, err);
    jinja_tokens_free(&tokens);
    if (!self->root)
        goto fail;
    return self;
fail:
    {
        int e = errno;
        chat_template_destroy(&self);
        errno = e;
    }
    return NULL;
}

void chat_template_destroy(chat_template_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    chat_template_t *self = *self_p;
    jinja_node_free(self->root);
    mem_free(self->bos);
    mem_free(self->eos);
    json_decref(self->tokens);
    mem_free(self);
    *self_p = NULL;
}

const char *chat_template_bos(const chat_template_t *self) { return self->bos; }
const char *chat_template_eos(const chat_template_t *self) { return self->eos; }

int chat_template_set_tokens(chat_template_t *self, const char *bos, const char *eos)
{
    char *b = bos ? mem_strdup(bos) : NULL, *e = eos ? mem_strdup(eos) : NULL;
    if ((bos && !b) || (eos && !e)) {
        mem_free(b);
        mem_free(e);
        errno = ENOMEM;
        return -1;
    }
    mem_free(self->bos);
    mem_free(self->eos);
    self->bos = b;
    self->eos = e;
    return 0;
}

void chat_template_set_max_steps(chat_template_t *self, long max_steps)
{
    self->max_steps = max_steps > 0 && max_steps < JINJA_STEPS_MAX ? max_steps : 0;
}

void chat_template_set_now(chat_template_t *self, const struct tm *now)
{
    self->fixed_now = now != NULL;
    if (now)
        self->now = *now;
}

int chat_template_render_ex(const chat_template_t *self, const json_t *context, char **out,
                            size_t *out_len, bool *raised, err_t *err)
{
    *out = NULL;
    *out_len = 0;
    if (raised)
        *raised = false;
    if (context && !json_is_object(context))
        return err_set(err, EINVAL, "chat template: the context must be a JSON object");
    jrender_t r = {.context = context, .err = err,
                   .max_steps = self->max_steps > 0 ? self->max_steps : JINJA_STEPS_MAX};
    if (self->fixed_now) {
        r.now = self->now;
    } else {
        time_t t = time(NULL);
        localtime_r(&t, &r.now);
    }
    jbuf_t b = {0};
    int rc = jinja_render(self->root, &r, &b);
    if (rc < 0) {
        int e = errno == ENOMEM ? ENOMEM : EINVAL;
        if (err && err->code == ENOMEM)
            e = ENOMEM;
        jbuf_free(&b);
        if (raised)
            *raised = r.raised;
        errno = e;
        return -1;
    }
    /* the caller frees with free(): hand over a malloc'd copy */
    char *s = malloc(b.len + 1);
    if (!s) {
        jbuf_free(&b);
        return err_set(err, ENOMEM, "chat template: out of memory");
    }
    memcpy(s, b.p ? b.p : "", b.len);
    s[b.len] = '\0';
    *out = s;
    *out_len = b.len;
    jbuf_free(&b);
    return 0;
}

int chat_template_render(const chat_template_t *self, const json_t *context, char **out,
                         size_t *out_len, err_t *err)
{
    return chat_template_render_ex(self, context, out, out_len, NULL, err);
}

int chat_template_render_chat(const chat_template_t *self, const json_t *messages,
                              const json_t *tools, bool add_generation_prompt, char **out,
                              size_t *out_len, err_t *err)
{
    *out = NULL;
    *out_len = 0;
    json_t *ctx = json_object();
    if (!ctx ||
        json_object_set_new(ctx, "messages", messages ? json_incref((json_t *)messages)
                                                      : json_array()) < 0 ||
        json_object_set_new(ctx, "tools", tools ? json_incref((json_t *)tools) : json_null()) < 0 ||
        json_object_set_new(ctx, "documents", json_null()) < 0 ||
        json_object_set_new(ctx, "add_generation_prompt", json_boolean(add_generation_prompt)) < 0 ||
        (self->bos && json_object_set_new(ctx, "bos_token", json_string_nocheck(self->bos)) < 0) ||
        (self->eos && json_object_set_new(ctx, "eos_token", json_string_nocheck(self->eos)) < 0) ||
        (self->tokens && json_object_update_missing(ctx, self->tokens) < 0)) {
        json_decref(ctx);
        return err_set(err, ENOMEM, "chat template: out of memory");
    }
    int rc = chat_template_render(self, ctx, out, out_len, err);
    json_decref(ctx);
    return rc;
}

/* ---- loading ------------------------------------------------------------- */
/* A special token's text: a string or {"content": "..."}; NULL otherwise. */
static const char *s_token(const json_t *cfg, const char *key)
{
    const json_t *t = json_object_get(cfg, key);
    if (json_is_object(t))
        t = json_object_get(t, "content");
    return json_is_string(t) ? json_string_value(t) : NULL;
}

/* transformers passes every special token the tokenizer has; besides BOS
 * and EOS: these. */
static int s_other_tokens(chat_template_t *t, const json_t *cfg)
{
    static const char *const keys[] = {"unk_token", "pad_token", "sep_token", "cls_token",
                                       "mask_token"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        const char *v = s_token(cfg, keys[i]);
        if (!v)
            continue;
        if (!t->tokens && !(t->tokens = json_object()))
            return -1;
        if (json_object_set_new(t->tokens, keys[i], json_string_nocheck(v)) < 0)
            return -1;
    }
    return 0;
}

static chat_template_t *s_from_text(const char *text, size_t len, const char *origin,
                                    err_t *err)
{
    chat_template_t *t = chat_template_new(text, len, err);
    if (!t) {
        int e = errno;
        err_wrap(err, "%s", origin);
        errno = e;
    }
    return t;
}

/* Reads a whole file; NULL with errno (ENOENT when absent). */
static char *s_read(const char *path, size_t *len, err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        err_set(err, e, "cannot open %s: %s", path, strerror(e));
        errno = e;
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            if (cap > CHAT_TEMPLATE_MAX * 4) {
                err_set(err, EINVAL, "%s is too large", path);
                goto fail;
            }
            char *p = mem_realloc(buf, cap);
            if (!p) {
                err_set(err, ENOMEM, "out of memory reading %s", path);
                goto fail;
            }
            buf = p;
        }
        size_t k = fread(buf + n, 1, cap - n - 1, f);
        n += k;
        if (k == 0)
            break;
    }
    if (ferror(f)) {
        err_set(err, EIO, "cannot read %s", path);
        goto fail;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
fail:
    {
        int e = errno;
        fclose(f);
        mem_free(buf);
        errno = e;
    }
    return NULL;
}

/* The template text of a "chat_template" value: a string, or a list of
 * {"name", "template"} (the "default" one). NULL (errno EINVAL) otherwise. */
static const json_t *s_pick(const json_t *v, const char *origin, err_t *err)
{
    if (json_is_string(v))
        return v;
    if (json_is_array(v)) {
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e) {
            const json_t *name = json_object_get(e, "name");
            const json_t *tpl = json_object_get(e, "template");
            if (json_is_string(name) && !strcmp(json_string_value(name), "default") &&
                json_is_string(tpl))
                return tpl;
        }
        err_set(err, EINVAL, "%s: \"chat_template\" is a list of templates without one "
                "named \"default\"", origin);
        return NULL;
    }
    err_set(err, EINVAL, "%s: \"chat_template\" is neither a string nor a list of "
            "{\"name\", \"template\"}", origin);
    return NULL;
}

chat_template_t *chat_template_load(const char *model_dir, err_t *err)
{
    char *cfg_path = path_join(model_dir, "tokenizer_config.json");
    char *jinja_path = path_join(model_dir, "chat_template.jinja");
    char *json_path = path_join(model_dir, "chat_template.json");
    json_t *cfg = NULL, *tj = NULL;
    char *text = NULL;
    chat_template_t *t = NULL;
    int e = 0;
    if (!cfg_path || !jinja_path || !json_path) {
        err_set(err, ENOMEM, "out of memory");
        goto done;
    }
    json_error_t jerr;
    FILE *f = fopen(cfg_path, "rb");
    if (f) {
        cfg = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
        fclose(f);
        if (!cfg || !json_is_object(cfg)) {
            err_set(err, EINVAL, "%s: %s", cfg_path, cfg ? "not a JSON object" : jerr.text);
            goto done;
        }
    } else if (errno != ENOENT) {
        err_set(err, errno, "cannot open %s: %s", cfg_path, strerror(errno));
        goto done;
    }
    const json_t *v = cfg ? json_object_get(cfg, "chat_template") : NULL;
    if (v && !json_is_null(v)) {
        const json_t *s = s_pick(v, cfg_path, err);
        if (!s)
            goto done;
        t = s_from_text(json_string_value(s), json_string_length(s), cfg_path, err);
    } else {
        size_t len;
        if ((text = s_read(jinja_path, &len, err))) {
            t = s_from_text(text, len, jinja_path, err);
        } else if (errno == ENOENT) {
            FILE *g = fopen(json_path, "rb");
            if (!g) {
                err_set(err, ENOENT, "%s has no chat template (no \"chat_template\" in "
                        "tokenizer_config.json, no chat_template.jinja)", model_dir);
                goto done;
            }
            tj = json_loadf(g, 0, &jerr);
            fclose(g);
            const json_t *s = tj ? json_object_get(tj, "chat_template") : NULL;
            if (!s) {
                err_set(err, EINVAL, "%s: %s", json_path,
                        tj ? "no \"chat_template\"" : jerr.text);
                goto done;
            }
            if (!(s = s_pick(s, json_path, err)))
                goto done;
            t = s_from_text(json_string_value(s), json_string_length(s), json_path, err);
        }
    }
    if (t && cfg && (chat_template_set_tokens(t, s_token(cfg, "bos_token"),
                                              s_token(cfg, "eos_token")) < 0 ||
                     s_other_tokens(t, cfg) < 0)) {
        err_set(err, ENOMEM, "out of memory");
        chat_template_destroy(&t);
    }
done:
    e = errno;
    json_decref(cfg);
    json_decref(tj);
    mem_free(text);
    mem_free(cfg_path);
    mem_free(jinja_path);
    mem_free(json_path);
    if (!t)
        errno = e == ENOENT || e == ENOMEM ? e : (e == 0 ? EINVAL : e);
    return t;
}
