/* jinja_scope: the render's state around the evaluator: errors, frames
 * (the variables of the top level, of a loop iteration, of a macro call),
 * name lookup (frames, then the render context, then the globals),
 * namespace() objects (owned by the render, freed at its end) and the
 * helpers that turn buffers and iterables into values.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "chat/jinja_private.h"
#include "core/mem.h"

int jr_fail(jrender_t *r, int line, const char *fmt, ...)
{
    if (r->failed)
        return -1;
    r->failed = true;
    char msg[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    err_set(r->err, EINVAL, "chat template line %d: %s", line, msg);
    return -1;
}

int jr_undef_fail(jrender_t *r, int line, const jv_t *v)
{
    if (v->p && v->name)
        return jr_fail(r, line, "'%s object' has no attribute '%s'", (const char *)v->p, v->name);
    if (v->p)
        return jr_fail(r, line, "'%s object' has no such element", (const char *)v->p);
    if (v->name)
        return jr_fail(r, line, "'%s' is undefined", v->name);
    return jr_fail(r, line, "a value is undefined");
}

int jinja_oom(jrender_t *r)
{
    if (!r->failed) {
        r->failed = true;
        err_set(r->err, ENOMEM, "chat template: out of memory");
    }
    errno = ENOMEM;
    return -1;
}


/* ---- frames -------------------------------------------------------------- */
void jinja_frame_fini(jframe_t *f)
{
    for (size_t i = 0; i < f->n; i++)
        jv_free(&f->vals[i]);
    mem_free(f->names);
    mem_free(f->vals);
}

/* Binds name in f, taking v. */
int jinja_frame_set(jrender_t *r, jframe_t *f, const char *name, jv_t *v)
{
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->names[i], name)) {
            jv_free(&f->vals[i]);
            f->vals[i] = *v;
            *v = jv_undef(NULL);
            return 0;
        }
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        const char **names = mem_realloc(f->names, cap * sizeof *names);
        if (names)
            f->names = names;
        jv_t *vals = names ? mem_realloc(f->vals, cap * sizeof *vals) : NULL;
        if (!vals) {
            jv_free(v);
            return jinja_oom(r);
        }
        f->vals = vals;
        f->cap = cap;
    }
    f->names[f->n] = name;
    f->vals[f->n++] = *v;
    *v = jv_undef(NULL);
    return 0;
}

static const char *const S_GLOBAL_FNS[] = {
    "range", "namespace", "dict", "raise_exception", "strftime_now",
};

jv_t jinja_lookup(jrender_t *r, jframe_t *f, const char *name)
{
    for (; f; f = f->parent)
        for (size_t i = f->n; i-- > 0;)
            if (!strcmp(f->names[i], name))
                return jv_copy(&f->vals[i]);
    json_t *j = r->context ? json_object_get(r->context, name) : NULL;
    if (j)
        return jv_data(json_incref(j));
    for (size_t k = 0; k < sizeof S_GLOBAL_FNS / sizeof *S_GLOBAL_FNS; k++)
        if (!strcmp(name, S_GLOBAL_FNS[k]))
            return (jv_t){.kind = JV_FUNC, .name = S_GLOBAL_FNS[k]};
    return jv_undef(name);
}

jframe_t *jinja_frame_root(jframe_t *f)
{
    while (f->parent)
        f = f->parent;
    return f;
}

/* ---- helpers --------------------------------------------------------------- */
int jinja_str_value(jrender_t *r, jbuf_t *b, jv_t *out)
{
    if (b->failed) {
        bool big = !b->oom;
        jbuf_free(b);
        if (big && !r->failed) {
            r->failed = true;
            return err_set(r->err, EINVAL, "chat template: a string longer than %zu bytes",
                           JINJA_OUTPUT_MAX);
        }
        return jinja_oom(r);
    }
    json_t *j = json_stringn_nocheck(b->p ? b->p : "", b->len);
    r->steps += (long)(b->len / JINJA_BYTES_PER_STEP);
    jbuf_free(b);
    if (!j)
        return jinja_oom(r);
    *out = jv_data(j);
    return 0;
}

/* Counts a container built by the template; nesting past a bound would make
 * the recursive printers, comparisons and jansson's own free deep. */
static int s_depth(const json_t *j, int limit)
{
    if (limit <= 0)
        return 1;
    int d = 0;
    if (json_is_array(j)) {
        for (size_t i = 0; i < json_array_size(j) && d <= limit; i++) {
            int k = s_depth(json_array_get(j, i), limit - 1) + 1;
            d = k > d ? k : d;
        }
    } else if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v) {
            int e = s_depth(v, limit - 1) + 1;
            d = e > d ? e : d;
            if (d > limit)
                break;
        }
    }
    return d;
}

int jinja_check_nesting(jrender_t *r, int line, const jv_t *v)
{
    if (v->kind != JV_DATA || !(json_is_array(v->j) || json_is_object(v->j)))
        return 0;
    /* only elements that are containers cost a walk */
    if (s_depth(v->j, 256) > 255)
        return jr_fail(r, line, "lists or dicts nested deeper than 255 levels");
    return 0;
}

int jinja_charge(jrender_t *r, int line, size_t n)
{
    r->steps += (long)(n > (size_t)r->max_steps ? (size_t)r->max_steps : n);
    if (r->steps > r->max_steps)
        return jr_fail(r, line, "the template takes more than %ld steps", r->max_steps);
    return 0;
}

json_t *jv_iter_array(jrender_t *r, int line, const jv_t *v, int *rc)
{
    *rc = 0;
    if (v->kind == JV_DATA) { /* the consumer walks every element */
        size_t n = json_is_array(v->j) ? json_array_size(v->j)
                 : json_is_object(v->j) ? json_object_size(v->j)
                 : json_is_string(v->j) ? json_string_length(v->j) : 0;
        if ((*rc = jinja_charge(r, line, n)) < 0)
            return NULL;
    }
    if (v->kind == JV_UNDEF) {
        json_t *a = json_array();
        if (!a)
            *rc = jinja_oom(r);
        return a;
    }
    if (v->kind == JV_NS || v->kind != JV_DATA) {
        *rc = jr_fail(r, line, "'%s' object is not iterable", jv_type_name(v));
        return NULL;
    }
    switch (json_typeof(v->j)) {
    case JSON_ARRAY:
        return json_incref(v->j);
    case JSON_OBJECT: {
        json_t *a = json_array();
        const char *k;
        json_t *val;
        json_object_foreach(v->j, k, val)
            if (!a || json_array_append_new(a, json_string_nocheck(k)) < 0) {
                json_decref(a);
                *rc = jinja_oom(r);
                return NULL;
            }
        if (!a)
            *rc = jinja_oom(r);
        return a;
    }
    case JSON_STRING: {
        const char *s = json_string_value(v->j);
        size_t len = json_string_length(v->j);
        json_t *a = json_array();
        int32_t cp;
        for (size_t i = 0; a && i < len;) {
            size_t j = ustr_next(s, len, i, &cp);
            if (json_array_append_new(a, json_stringn_nocheck(s + i, j - i)) < 0) {
                json_decref(a);
                a = NULL;
            }
            i = j;
        }
        if (!a)
            *rc = jinja_oom(r);
        return a;
    }
    default:
        *rc = jr_fail(r, line, "'%s' object is not iterable", jv_type_name(v));
        return NULL;
    }
}


/* ---- namespaces ---- */
jv_t *jinja_ns_get(jns_t *ns, const char *name)
{
    for (size_t i = 0; i < ns->n; i++)
        if (!strcmp(ns->keys[i], name))
            return &ns->vals[i];
    return NULL;
}

int jinja_ns_set(jrender_t *r, jns_t *ns, const char *name, jv_t *v)
{
    /* a namespace outlives frames: nothing that points into one */
    if (v->kind == JV_CALLER || (v->kind == JV_MACRO && v->env && v->env->parent)) {
        jv_free(v);
        return jr_fail(r, 0, "a macro defined inside a block or a caller cannot be "
                       "stored in a namespace");
    }
    jv_t *slot = jinja_ns_get(ns, name);
    if (slot) {
        jv_free(slot);
        *slot = *v;
        *v = jv_undef(NULL);
        return 0;
    }
    if (ns->n == ns->cap) {
        size_t cap = ns->cap ? ns->cap * 2 : 4;
        char **keys = mem_realloc(ns->keys, cap * sizeof *keys);
        if (keys)
            ns->keys = keys;
        jv_t *vals = keys ? mem_realloc(ns->vals, cap * sizeof *vals) : NULL;
        if (!vals) {
            jv_free(v);
            return jinja_oom(r);
        }
        ns->vals = vals;
        ns->cap = cap;
    }
    if (!(ns->keys[ns->n] = mem_strdup(name))) {
        jv_free(v);
        return jinja_oom(r);
    }
    ns->vals[ns->n++] = *v;
    *v = jv_undef(NULL);
    return 0;
}


jns_t *jinja_ns_new(jrender_t *r)
{
    jns_t *ns = mem_calloc(1, sizeof *ns);
    if (!ns)
        return NULL;
    ns->next = r->namespaces;
    r->namespaces = ns;
    return ns;
}

