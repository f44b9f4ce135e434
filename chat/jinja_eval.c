/* jinja_eval: renders a syntax tree. Scopes as Jinja2 compiles them: the
 * template's top level is one frame (over the render context, then the
 * globals); each for-loop iteration and each macro call gets a new frame, so
 * that a `set` inside a loop does not outlive its iteration (namespace()
 * objects are how templates carry state out) and a macro sees the top level
 * but not its caller's loop. Every evaluation step is counted and nesting is
 * bounded, so a hostile template ends with an error, never a hang or a
 * stack overflow.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "chat/jinja_private.h"
#include "core/mem.h"

struct jframe {
    jframe_t *parent;
    const char **names;   /* borrowed from the tree (or static) */
    jv_t *vals;
    size_t n, cap;
};

enum { X_OK = 0, X_BREAK = 1, X_CONTINUE = 2 };

static int s_exec(jrender_t *r, const node_t *n, jframe_t *f, jbuf_t *out);
static int s_eval(jrender_t *r, const node_t *n, jframe_t *f, jv_t *out);

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

#define s_oom jinja_oom

/* ---- frames -------------------------------------------------------------- */
static void s_frame_fini(jframe_t *f)
{
    for (size_t i = 0; i < f->n; i++)
        jv_free(&f->vals[i]);
    mem_free(f->names);
    mem_free(f->vals);
}

/* Binds name in f, taking v. */
static int s_frame_set(jrender_t *r, jframe_t *f, const char *name, jv_t *v)
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
            return s_oom(r);
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

static jv_t s_lookup(jrender_t *r, jframe_t *f, const char *name)
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

static jframe_t *s_root(jframe_t *f)
{
    while (f->parent)
        f = f->parent;
    return f;
}

/* ---- helpers --------------------------------------------------------------- */
static int s_str_value(jrender_t *r, jbuf_t *b, jv_t *out)
{
    if (b->failed) {
        bool big = !b->oom;
        jbuf_free(b);
        if (big && !r->failed) {
            r->failed = true;
            return err_set(r->err, EINVAL, "chat template: a string longer than %zu bytes",
                           JINJA_OUTPUT_MAX);
        }
        return s_oom(r);
    }
    json_t *j = json_stringn_nocheck(b->p ? b->p : "", b->len);
    r->steps += (long)(b->len / JINJA_BYTES_PER_STEP);
    jbuf_free(b);
    if (!j)
        return s_oom(r);
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

static int s_check_nesting(jrender_t *r, int line, const jv_t *v)
{
    if (v->kind != JV_DATA || !(json_is_array(v->j) || json_is_object(v->j)))
        return 0;
    /* only elements that are containers cost a walk */
    if (s_depth(v->j, 256) > 255)
        return jr_fail(r, line, "lists or dicts nested deeper than 255 levels");
    return 0;
}

json_t *jv_iter_array(jrender_t *r, int line, const jv_t *v, int *rc)
{
    *rc = 0;
    if (v->kind == JV_UNDEF) {
        json_t *a = json_array();
        if (!a)
            *rc = s_oom(r);
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
                *rc = s_oom(r);
                return NULL;
            }
        if (!a)
            *rc = s_oom(r);
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
            *rc = s_oom(r);
        return a;
    }
    default:
        *rc = jr_fail(r, line, "'%s' object is not iterable", jv_type_name(v));
        return NULL;
    }
}

/* ---- attributes and items ----------------------------------------------------- */
static const char *const S_DICT_METHODS[] = {
    "items", "keys", "values", "get", "pop", "update", "clear", "setdefault", "popitem", "copy",
};
static const char *const S_LIST_METHODS[] = {
    "index", "count", "append", "extend", "insert", "pop", "remove", "reverse", "sort", "clear",
    "copy",
};
static const char *const S_STR_METHODS[] = {
    "strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith", "replace",
    "lower", "upper", "title", "capitalize", "find", "rfind", "index", "rindex", "count",
    "join", "isdigit", "isalpha", "isalnum", "isspace", "islower", "isupper", "isnumeric",
    "isdecimal", "splitlines", "removeprefix", "removesuffix", "center", "ljust", "rjust",
    "zfill", "swapcase", "casefold", "partition", "rpartition", "format", "istitle",
};
static const char *const S_LOOP_METHODS[] = {"cycle", "changed"};

static const char *s_find_name(const char *const *names, size_t n, const char *name)
{
    for (size_t k = 0; k < n; k++)
        if (!strcmp(names[k], name))
            return names[k];
    return NULL;
}
#define S_FIND(tab, name) s_find_name(tab, sizeof tab / sizeof *tab, name)

bool jinja_method_known(const char *name)
{
    return S_FIND(S_DICT_METHODS, name) || S_FIND(S_LIST_METHODS, name) ||
           S_FIND(S_STR_METHODS, name) || S_FIND(S_LOOP_METHODS, name);
}

/* The undefined value of a failed lookup. name may be a key computed at run
 * time, so the value holds its own copy (in j; NULL when out of memory: the
 * error then names no attribute). */
static jv_t s_missing(const jv_t *obj, const char *name)
{
    jv_t u = jv_undef(NULL);
    if (name && (u.j = json_string_nocheck(name)))
        u.name = json_string_value(u.j);
    static const char *const types[] = {"str", "dict", "list", "int", "float", "bool",
                                        "NoneType", "Namespace", "LoopContext"};
    const char *t = jv_type_name(obj);
    u.p = (void *)S_FIND(types, t);
    if (!u.p)
        u.p = (void *)"object";
    return u;
}

static int s_loop_attr(jrender_t *r, const jloop_t *l, const char *name, jv_t *out)
{
    size_t len = json_array_size(l->items), i = l->index0;
    json_t *j = NULL;
    if (!strcmp(name, "index")) j = json_integer((json_int_t)i + 1);
    else if (!strcmp(name, "index0")) j = json_integer((json_int_t)i);
    else if (!strcmp(name, "first")) j = json_boolean(i == 0);
    else if (!strcmp(name, "last")) j = json_boolean(i + 1 == len);
    else if (!strcmp(name, "length")) j = json_integer((json_int_t)len);
    else if (!strcmp(name, "revindex")) j = json_integer((json_int_t)(len - i));
    else if (!strcmp(name, "revindex0")) j = json_integer((json_int_t)(len - i - 1));
    else if (!strcmp(name, "depth")) j = json_integer((json_int_t)l->depth0 + 1);
    else if (!strcmp(name, "depth0")) j = json_integer((json_int_t)l->depth0);
    else if (!strcmp(name, "previtem")) {
        if (i == 0) {
            *out = jv_undef("previtem");
            return 0;
        }
        *out = jv_elem(json_array_get(l->items, i - 1));
        return 0;
    } else if (!strcmp(name, "nextitem")) {
        if (i + 1 >= len) {
            *out = jv_undef("nextitem");
            return 0;
        }
        *out = jv_elem(json_array_get(l->items, i + 1));
        return 0;
    } else {
        const char *m = S_FIND(S_LOOP_METHODS, name);
        if (m) {
            *out = (jv_t){.kind = JV_METHOD, .p = (void *)l, .name = m};
            return 0;
        }
        jv_t lv = {.kind = JV_LOOP};
        *out = s_missing(&lv, name);
        return 0;
    }
    if (!j)
        return s_oom(r);
    *out = jv_data(j);
    return 0;
}

static jv_t *s_ns_get(jns_t *ns, const char *name)
{
    for (size_t i = 0; i < ns->n; i++)
        if (!strcmp(ns->keys[i], name))
            return &ns->vals[i];
    return NULL;
}

static int s_ns_set(jrender_t *r, jns_t *ns, const char *name, jv_t *v)
{
    /* a namespace outlives frames: nothing that points into one */
    if (v->kind == JV_CALLER || (v->kind == JV_MACRO && v->env && v->env->parent)) {
        jv_free(v);
        return jr_fail(r, 0, "a macro defined inside a block or a caller cannot be "
                       "stored in a namespace");
    }
    jv_t *slot = s_ns_get(ns, name);
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
            return s_oom(r);
        }
        ns->vals = vals;
        ns->cap = cap;
    }
    if (!(ns->keys[ns->n] = mem_strdup(name))) {
        jv_free(v);
        return s_oom(r);
    }
    ns->vals[ns->n++] = *v;
    *v = jv_undef(NULL);
    return 0;
}

/* obj.name (Jinja's getattr: attribute first, then item). */
static int s_getattr(jrender_t *r, int line, const jv_t *obj, const char *name, jv_t *out)
{
    switch (obj->kind) {
    case JV_UNDEF:
        return jr_undef_fail(r, line, obj);
    case JV_NS: {
        jv_t *v = s_ns_get(obj->p, name);
        *out = v ? jv_copy(v) : s_missing(obj, name);
        return 0;
    }
    case JV_LOOP:
        return s_loop_attr(r, obj->p, name, out);
    case JV_DATA:
        break;
    default:
        *out = s_missing(obj, name);
        return 0;
    }
    const char *m = NULL;
    if (json_is_object(obj->j))
        m = S_FIND(S_DICT_METHODS, name);
    else if (json_is_array(obj->j))
        m = S_FIND(S_LIST_METHODS, name);
    else if (json_is_string(obj->j))
        m = S_FIND(S_STR_METHODS, name);
    if (m) {
        *out = (jv_t){.kind = JV_METHOD, .j = json_incref(obj->j), .name = m};
        return 0;
    }
    json_t *v = json_is_object(obj->j) ? json_object_get(obj->j, name) : NULL;
    *out = v ? jv_elem(v) : s_missing(obj, name);
    return 0;
}

/* obj[key] (item first, then attribute). */
static int s_getitem(jrender_t *r, int line, const jv_t *obj, const jv_t *key, jv_t *out)
{
    if (obj->kind == JV_UNDEF)
        return jr_undef_fail(r, line, obj);
    if (obj->gen) { /* a generator has no items */
        *out = s_missing(obj, NULL);
        return 0;
    }
    if (obj->kind == JV_DATA && jv_is_int(key) &&
        (json_is_array(obj->j) || json_is_string(obj->j))) {
        int64_t i = jv_int(key);
        if (json_is_array(obj->j)) {
            int64_t n = (int64_t)json_array_size(obj->j);
            if (i < 0)
                i += n;
            if (i >= 0 && i < n) {
                *out = jv_elem(json_array_get(obj->j, (size_t)i));
                return 0;
            }
        } else {
            const char *s = json_string_value(obj->j);
            size_t len = json_string_length(obj->j);
            int64_t n = (int64_t)ustr_ncp(s, len);
            if (i < 0)
                i += n;
            if (i >= 0 && i < n) {
                size_t a = ustr_cp_off(s, len, (size_t)i), b = ustr_cp_off(s, len, (size_t)i + 1);
                json_t *j = json_stringn_nocheck(s + a, b - a);
                if (!j)
                    return s_oom(r);
                *out = jv_data(j);
                return 0;
            }
        }
        *out = s_missing(obj, NULL);
        return 0;
    }
    if (obj->kind == JV_DATA && json_is_object(obj->j) && jv_is_str(key)) {
        json_t *v = json_object_get(obj->j, json_string_value(key->j));
        if (v) {
            *out = jv_elem(v);
            return 0;
        }
    }
    if (jv_is_str(key))
        return s_getattr(r, line, obj, json_string_value(key->j), out);
    *out = s_missing(obj, NULL);
    return 0;
}

/* Python slice indices for a sequence of n elements. */
static int s_slice_idx(jrender_t *r, int line, const jv_t *v, int64_t n, int64_t step, bool start,
                       int64_t *out)
{
    if (v->kind == JV_UNDEF || jv_is_none(v)) {
        *out = step > 0 ? (start ? 0 : n) : (start ? n - 1 : -1);
        return 0;
    }
    if (!jv_is_int(v))
        return jr_fail(r, line, "slice indices must be integers or None");
    int64_t i = jv_int(v);
    if (i < 0) {
        i += n;
        if (i < 0)
            i = step > 0 ? 0 : -1;
    } else if (i >= n) {
        i = step > 0 ? n : n - 1;
    }
    *out = i;
    return 0;
}

static int s_slice(jrender_t *r, int line, const jv_t *obj, jv_t *parts, jv_t *out)
{
    if (obj->kind == JV_UNDEF)
        return jr_undef_fail(r, line, obj);
    bool is_str = jv_is_str(obj);
    /* Jinja slices with Python's own [a:b] (no getitem fallback) */
    if (obj->gen || (!is_str && !jv_is(obj, JSON_ARRAY)))
        return jr_fail(r, line, "'%s' object is not subscriptable", jv_type_name(obj));
    int64_t step = 1;
    if (parts[2].kind != JV_UNDEF && !jv_is_none(&parts[2])) {
        if (!jv_is_int(&parts[2]))
            return jr_fail(r, line, "slice indices must be integers or None");
        step = jv_int(&parts[2]);
        if (step == 0)
            return jr_fail(r, line, "slice step cannot be zero");
    }
    const char *s = is_str ? json_string_value(obj->j) : NULL;
    size_t slen = is_str ? json_string_length(obj->j) : 0;
    /* strings: code point offsets, computed once */
    size_t *offs = NULL;
    int64_t n;
    if (is_str) {
        n = (int64_t)ustr_ncp(s, slen);
        if (!(offs = mem_alloc(((size_t)n + 1) * sizeof *offs)))
            return s_oom(r);
        int32_t cp;
        size_t i = 0;
        for (int64_t k = 0; k <= n; k++) {
            offs[k] = i;
            if (i < slen)
                i = ustr_next(s, slen, i, &cp);
        }
    } else {
        n = (int64_t)json_array_size(obj->j);
    }
    int64_t a, b;
    if (s_slice_idx(r, line, &parts[0], n, step, true, &a) < 0 ||
        s_slice_idx(r, line, &parts[1], n, step, false, &b) < 0) {
        mem_free(offs);
        return -1;
    }
    jbuf_t sb = {0};
    json_t *arr = is_str ? NULL : json_array();
    if (!is_str && !arr) {
        mem_free(offs);
        return s_oom(r);
    }
    for (int64_t i = a; step > 0 ? i < b : i > b;) {
        if (is_str)
            jbuf_add(&sb, s + offs[i], offs[i + 1] - offs[i]);
        else if (json_array_append(arr, json_array_get(obj->j, (size_t)i)) < 0) {
            json_decref(arr);
            mem_free(offs);
            return s_oom(r);
        }
        if (__builtin_add_overflow(i, step, &i))
            break;
    }
    mem_free(offs);
    if (is_str)
        return s_str_value(r, &sb, out);
    *out = jv_data(arr);
    return 0;
}

int jinja_getattr(jrender_t *r, int line, const jv_t *obj, const char *name, jv_t *out)
{
    *out = jv_undef(NULL);
    return s_getattr(r, line, obj, name, out);
}

int jinja_getitem(jrender_t *r, int line, const jv_t *obj, const jv_t *key, jv_t *out)
{
    *out = jv_undef(NULL);
    return s_getitem(r, line, obj, key, out);
}

int jinja_str_value(jrender_t *r, jbuf_t *b, jv_t *out)
{
    return s_str_value(r, b, out);
}

/* ---- operators ----------------------------------------------------------------- */
static int s_type_err(jrender_t *r, int line, const char *op, const jv_t *a, const jv_t *b)
{
    return jr_fail(r, line, "unsupported operand type(s) for %s: '%s' and '%s'", op,
                   jv_type_name(a), jv_type_name(b));
}

static int s_int_result(jrender_t *r, int line, bool overflow, int64_t v, jv_t *out)
{
    if (overflow)
        return jr_fail(r, line, "integer overflow");
    json_t *j = json_integer(v);
    if (!j)
        return s_oom(r);
    *out = jv_data(j);
    return 0;
}

static int s_float_result(jrender_t *r, double v, jv_t *out)
{
    if (!isfinite(v))
        return jr_fail(r, 0, "a float result that is infinite or not a number");
    json_t *j = json_real(v);
    if (!j)
        return s_oom(r);
    *out = jv_data(j);
    return 0;
}

static int s_repeat(jrender_t *r, int line, const jv_t *seq, int64_t k, jv_t *out)
{
    if (k < 0)
        k = 0;
    if (jv_is_str(seq)) {
        size_t len = json_string_length(seq->j);
        if (len && (uint64_t)k > JINJA_OUTPUT_MAX / len)
            return jr_fail(r, line, "a string longer than %zu bytes", JINJA_OUTPUT_MAX);
        jbuf_t b = {0};
        for (int64_t i = 0; i < k; i++)
            jbuf_add(&b, json_string_value(seq->j), len);
        return s_str_value(r, &b, out);
    }
    size_t n = json_array_size(seq->j);
    if (n && (uint64_t)k > (uint64_t)JINJA_RANGE_MAX / n)
        return jr_fail(r, line, "a list longer than %d elements", JINJA_RANGE_MAX);
    json_t *a = json_array();
    for (int64_t i = 0; a && i < k; i++)
        if (json_array_extend(a, seq->j) < 0) {
            json_decref(a);
            a = NULL;
        }
    if (!a)
        return s_oom(r);
    *out = jv_data(a);
    return 0;
}

static int s_arith(jrender_t *r, int line, int op, const jv_t *a, const jv_t *b, jv_t *out)
{
    static const char *const names[] = {[OP_ADD] = "+", [OP_SUB] = "-", [OP_MUL] = "*",
                                        [OP_DIV] = "/", [OP_FLOORDIV] = "//", [OP_MOD] = "%",
                                        [OP_POW] = "**"};
    if (a->kind == JV_UNDEF)
        return jr_undef_fail(r, line, a);
    if (b->kind == JV_UNDEF)
        return jr_undef_fail(r, line, b);
    if (jv_is_num(a) && jv_is_num(b)) {
        bool ints = jv_is_int(a) && jv_is_int(b);
        int64_t x = ints ? jv_int(a) : 0, y = ints ? jv_int(b) : 0, z = 0;
        double fx = jv_num(a), fy = jv_num(b);
        switch (op) {
        case OP_ADD:
            if (ints)
                {
                bool ovf = __builtin_add_overflow(x, y, &z);
                return s_int_result(r, line, ovf, z, out);
            }
            return s_float_result(r, fx + fy, out);
        case OP_SUB:
            if (ints)
                {
                bool ovf = __builtin_sub_overflow(x, y, &z);
                return s_int_result(r, line, ovf, z, out);
            }
            return s_float_result(r, fx - fy, out);
        case OP_MUL:
            if (ints)
                {
                bool ovf = __builtin_mul_overflow(x, y, &z);
                return s_int_result(r, line, ovf, z, out);
            }
            return s_float_result(r, fx * fy, out);
        case OP_DIV:
            if (fy == 0)
                return jr_fail(r, line, "division by zero");
            return s_float_result(r, fx / fy, out);
        case OP_FLOORDIV:
        case OP_MOD:
            if (fy == 0)
                return jr_fail(r, line, "integer division or modulo by zero");
            if (ints) {
                if (x == INT64_MIN && y == -1)
                    return jr_fail(r, line, "integer overflow");
                int64_t q = x / y, m = x % y;
                if (m != 0 && ((m < 0) != (y < 0))) {
                    q--;
                    m += y;
                }
                return s_int_result(r, line, false, op == OP_MOD ? m : q, out);
            }
            {
                double m = fmod(fx, fy);
                if (m != 0 && ((m < 0) != (fy < 0)))
                    m += fy;
                return s_float_result(r, op == OP_MOD ? m : floor((fx - m) / fy + 0.5), out);
            }
        case OP_POW:
            if (ints && y >= 0) {
                int64_t acc = 1;
                bool ovf = false;
                for (int64_t k = 0; k < y && !ovf; k++) {
                    ovf = __builtin_mul_overflow(acc, x, &acc);
                    if (acc == 0 || acc == 1)
                        break;
                }
                if (x == -1 && (y & 1))
                    acc = -1;
                else if (x == -1)
                    acc = 1;
                return s_int_result(r, line, ovf, acc, out);
            }
            return s_float_result(r, pow(fx, fy), out);
        }
    }
    if (op == OP_ADD && jv_is_str(a)) {
        if (!jv_is_str(b))
            return jr_fail(r, line, "can only concatenate str (not \"%s\") to str",
                           jv_type_name(b));
        jbuf_t s = {0};
        jbuf_add(&s, json_string_value(a->j), json_string_length(a->j));
        jbuf_add(&s, json_string_value(b->j), json_string_length(b->j));
        return s_str_value(r, &s, out);
    }
    if (op == OP_ADD && jv_is(a, JSON_ARRAY)) {
        if (!jv_is(b, JSON_ARRAY))
            return jr_fail(r, line, "can only concatenate list (not \"%s\") to list",
                           jv_type_name(b));
        json_t *c = json_array();
        if (!c || json_array_extend(c, a->j) < 0 || json_array_extend(c, b->j) < 0) {
            json_decref(c);
            return s_oom(r);
        }
        *out = jv_data(c);
        return 0;
    }
    if (op == OP_MUL && (jv_is_str(a) || jv_is(a, JSON_ARRAY)) && jv_is_int(b))
        return s_repeat(r, line, a, jv_int(b), out);
    if (op == OP_MUL && (jv_is_str(b) || jv_is(b, JSON_ARRAY)) && jv_is_int(a))
        return s_repeat(r, line, b, jv_int(a), out);
    if (op == OP_MOD && jv_is_str(a))
        return jinja_str_format(r, line, json_string_value(a->j), json_string_length(a->j), b,
                                out);
    return s_type_err(r, line, names[op], a, b);
}

static int s_contains(jrender_t *r, int line, const jv_t *item, const jv_t *seq, bool *out)
{
    *out = false;
    if (seq->kind == JV_UNDEF)
        return 0; /* Undefined iterates as empty */
    if (seq->kind == JV_DATA) {
        switch (json_typeof(seq->j)) {
        case JSON_STRING: {
            if (!jv_is_str(item))
                return jr_fail(r, line, "'in <string>' requires string as left operand, not %s",
                               jv_type_name(item));
            const char *h = json_string_value(seq->j);
            size_t hl = json_string_length(seq->j), nl = json_string_length(item->j);
            *out = nl == 0 || (nl <= hl && memmem(h, hl, json_string_value(item->j), nl));
            return 0;
        }
        case JSON_ARRAY:
            for (size_t i = 0; i < json_array_size(seq->j) && !*out; i++) {
                jv_t e = jv_elem_view(json_array_get(seq->j, i));
                *out = jv_equal(item, &e);
            }
            return 0;
        case JSON_OBJECT:
            *out = jv_is_str(item) && json_object_get(seq->j, json_string_value(item->j));
            return 0;
        default:
            break;
        }
    }
    if (seq->kind == JV_NS)
        return jr_fail(r, line, "argument of type 'Namespace' is not iterable");
    return jr_fail(r, line, "argument of type '%s' is not iterable", jv_type_name(seq));
}

static int s_compare(jrender_t *r, int line, int op, const jv_t *a, const jv_t *b, bool *out)
{
    if (op == OP_EQ || op == OP_NE) {
        *out = jv_equal(a, b) == (op == OP_EQ);
        return 0;
    }
    if (op == OP_IN || op == OP_NOTIN) {
        if (s_contains(r, line, a, b, out) < 0)
            return -1;
        *out = *out == (op == OP_IN);
        return 0;
    }
    if (a->kind == JV_UNDEF)
        return jr_undef_fail(r, line, a);
    if (b->kind == JV_UNDEF)
        return jr_undef_fail(r, line, b);
    int c = jv_order(a, b);
    static const char *const names[] = {[OP_LT] = "<", [OP_LE] = "<=", [OP_GT] = ">",
                                        [OP_GE] = ">="};
    if (c == -2)
        return jr_fail(r, line, "'%s' not supported between instances of '%s' and '%s'",
                       names[op], jv_type_name(a), jv_type_name(b));
    *out = op == OP_LT ? c < 0 : op == OP_LE ? c <= 0 : op == OP_GT ? c > 0 : c >= 0;
    return 0;
}

static int s_bool_result(jrender_t *r, bool v, jv_t *out)
{
    (void)r;
    *out = jv_data(json_boolean(v));
    return 0;
}

/* ---- calls ------------------------------------------------------------------------ */
static void s_args_free(jv_t *args, int n)
{
    for (int i = 0; i < n; i++)
        jv_free(&args[i]);
    mem_free(args);
}

/* Evaluates kids[first..] of n into a new array. */
static int s_eval_args(jrender_t *r, const node_t *n, int first, jframe_t *f, jv_t **args_p)
{
    int k = n->n_kids - first;
    *args_p = NULL;
    if (k <= 0)
        return 0;
    jv_t *args = mem_calloc((size_t)k, sizeof *args);
    if (!args)
        return s_oom(r);
    for (int i = 0; i < k; i++)
        if (s_eval(r, n->kids[first + i], f, &args[i]) < 0) {
            s_args_free(args, i);
            return -1;
        }
    *args_p = args;
    return 0;
}

static int s_call_macro(jrender_t *r, int line, const node_t *m, jframe_t *env, jv_t *args,
                        char **names, int n_args, jcaller_t *caller, jframe_t *f, jv_t *out)
{
    int n_params = m->n_kids - 1;
    jframe_t mf = {.parent = env ? env : s_root(f)};
    jbuf_t b = {0};
    int rc = -1;
    int pos = 0;
    for (int i = 0; i < n_args; i++) {
        if (names && names[i]) {
            int k;
            for (k = 0; k < n_params; k++)
                if (!strcmp(m->names[k + 1], names[i]))
                    break;
            if (k == n_params) {
                jr_fail(r, line, "macro '%s' takes no keyword argument '%s'", m->str, names[i]);
                goto done;
            }
            if (s_frame_set(r, &mf, m->names[k + 1], &args[i]) < 0)
                goto done;
        } else {
            if (pos >= n_params) {
                jr_fail(r, line, "macro '%s' takes not more than %d argument(s)", m->str,
                        n_params);
                goto done;
            }
            if (s_frame_set(r, &mf, m->names[pos + 1], &args[i]) < 0)
                goto done;
            pos++;
        }
    }
    for (int k = 0; k < n_params; k++) {
        bool bound = false;
        for (size_t i = 0; i < mf.n; i++)
            bound |= !strcmp(mf.names[i], m->names[k + 1]);
        if (bound)
            continue;
        jv_t v = jv_undef(m->names[k + 1]);
        if (m->kids[k + 1] && s_eval(r, m->kids[k + 1], &mf, &v) < 0)
            goto done;
        if (s_frame_set(r, &mf, m->names[k + 1], &v) < 0)
            goto done;
    }
    if (caller) {
        jv_t c = {.kind = JV_CALLER, .p = caller};
        if (s_frame_set(r, &mf, "caller", &c) < 0)
            goto done;
    }
    if (s_exec(r, m->kids[0], &mf, &b) < 0)
        goto done;
    rc = s_str_value(r, &b, out);
done:
    jbuf_free(&b);
    s_frame_fini(&mf);
    return rc;
}

static int s_call_caller(jrender_t *r, int line, jcaller_t *c, jv_t *args, char **names,
                         int n_args, jv_t *out)
{
    const node_t *blk = c->block;
    int n_params = blk->n_kids - 2;
    jframe_t cf = {.parent = c->frame};
    jbuf_t b = {0};
    int rc = -1;
    for (int i = 0; i < n_args; i++) {
        int k = i;
        if (names && names[i])
            for (k = 0; k < n_params && strcmp(blk->names[k + 2], names[i]); k++)
                ;
        if (k >= n_params) {
            jr_fail(r, line, "caller() takes %d argument(s)", n_params);
            goto done;
        }
        if (s_frame_set(r, &cf, blk->names[k + 2], &args[i]) < 0)
            goto done;
    }
    for (int k = 0; k < n_params; k++) {
        bool bound = false;
        for (size_t i = 0; i < cf.n; i++)
            bound |= !strcmp(cf.names[i], blk->names[k + 2]);
        jv_t v = jv_undef(blk->names[k + 2]);
        if (bound)
            continue;
        if (blk->kids[k + 2] && s_eval(r, blk->kids[k + 2], &cf, &v) < 0)
            goto done;
        if (s_frame_set(r, &cf, blk->names[k + 2], &v) < 0)
            goto done;
    }
    if (s_exec(r, blk->kids[1], &cf, &b) < 0)
        goto done;
    rc = s_str_value(r, &b, out);
done:
    jbuf_free(&b);
    s_frame_fini(&cf);
    return rc;
}

static jns_t *s_ns_new(jrender_t *r)
{
    jns_t *ns = mem_calloc(1, sizeof *ns);
    if (!ns)
        return NULL;
    ns->next = r->namespaces;
    r->namespaces = ns;
    return ns;
}

static int s_call_global(jrender_t *r, int line, const char *fn, jv_t *args, char **names,
                         int n_args, jv_t *out)
{
    if (!strcmp(fn, "raise_exception")) {
        jbuf_t b = {0};
        if (n_args > 0)
            jv_str(&b, &args[0]);
        if (!r->failed) {
            r->failed = true;
            r->raised = true;
            err_set(r->err, EINVAL, "%s", b.p ? b.p : "");
        }
        jbuf_free(&b);
        return -1;
    }
    if (!strcmp(fn, "strftime_now")) {
        if (n_args != 1 || !jv_is_str(&args[0]))
            return jr_fail(r, line, "strftime_now() takes one format string");
        char buf[512];
        size_t k = strftime(buf, sizeof buf, json_string_value(args[0].j), &r->now);
        if (k == 0 && json_string_length(args[0].j) > 0)
            return jr_fail(r, line, "strftime_now(): format too long");
        json_t *j = json_stringn_nocheck(buf, k);
        if (!j)
            return s_oom(r);
        *out = jv_data(j);
        return 0;
    }
    if (!strcmp(fn, "range")) {
        for (int i = 0; i < n_args; i++)
            if ((names && names[i]) || !jv_is_int(&args[i]))
                return jr_fail(r, line, "range() takes integers");
        int64_t a = 0, b = 0, step = 1;
        if (n_args == 1)
            b = jv_int(&args[0]);
        else if (n_args == 2 || n_args == 3) {
            a = jv_int(&args[0]);
            b = jv_int(&args[1]);
            if (n_args == 3)
                step = jv_int(&args[2]);
        } else
            return jr_fail(r, line, "range() takes 1 to 3 arguments");
        if (step == 0)
            return jr_fail(r, line, "range() arg 3 must not be zero");
        json_t *arr = json_array();
        int64_t count = 0;
        for (int64_t i = a; arr && (step > 0 ? i < b : i > b); i += step) {
            if (++count > JINJA_RANGE_MAX) {
                json_decref(arr);
                return jr_fail(r, line, "range() of more than %d numbers", JINJA_RANGE_MAX);
            }
            if (json_array_append_new(arr, json_integer(i)) < 0) {
                json_decref(arr);
                arr = NULL;
            }
            if (__builtin_add_overflow(i, step, &(int64_t){0}))
                break;
        }
        if (!arr)
            return s_oom(r);
        *out = jv_data(arr);
        return 0;
    }
    if (!strcmp(fn, "namespace") || !strcmp(fn, "dict")) {
        bool ns_kind = fn[0] == 'n';
        jns_t *ns = ns_kind ? s_ns_new(r) : NULL;
        json_t *d = ns_kind ? NULL : json_object();
        if (ns_kind ? !ns : !d)
            return s_oom(r);
        for (int i = 0; i < n_args; i++) {
            if (!(names && names[i])) {
                /* a positional mapping: its items first */
                if (!jv_is(&args[i], JSON_OBJECT)) {
                    json_decref(d);
                    return jr_fail(r, line, "%s() takes keyword arguments or a dict", fn);
                }
                const char *k;
                json_t *v;
                json_object_foreach(args[i].j, k, v) {
                    jv_t e = jv_elem(v);
                    if (ns_kind ? s_ns_set(r, ns, k, &e) < 0
                                : json_object_set_new(d, k, json_incref(v)) < 0) {
                        jv_free(&e);
                        json_decref(d);
                        return s_oom(r);
                    }
                    jv_free(&e);
                }
                continue;
            }
            if (ns_kind) {
                jv_t e = jv_copy(&args[i]);
                if (s_ns_set(r, ns, names[i], &e) < 0)
                    return -1;
            } else {
                json_t *j = jv_to_json(&args[i]);
                if (!j) {
                    json_decref(d);
                    return jr_fail(r, line, "a %s cannot be stored in a dict",
                                   jv_type_name(&args[i]));
                }
                if (json_object_set_new(d, names[i], j) < 0) {
                    json_decref(d);
                    return s_oom(r);
                }
            }
        }
        *out = ns_kind ? (jv_t){.kind = JV_NS, .p = ns} : jv_data(d);
        return 0;
    }
    return jr_fail(r, line, "function '%s' is not supported", fn);
}

static int s_call(jrender_t *r, int line, jv_t *callee, jv_t *args, char **names, int n_args,
                  jcaller_t *caller, jframe_t *f, jv_t *out)
{
    switch (callee->kind) {
    case JV_MACRO:
        return s_call_macro(r, line, callee->p, callee->env, args, names, n_args, caller, f,
                            out);
    case JV_CALLER:
        return s_call_caller(r, line, callee->p, args, names, n_args, out);
    case JV_FUNC:
        return s_call_global(r, line, callee->name, args, names, n_args, out);
    case JV_METHOD:
        if (callee->p && !callee->j) { /* loop.cycle */
            const jloop_t *l = callee->p;
            if (strcmp(callee->name, "cycle") != 0)
                return jr_fail(r, line, "loop.%s() is not supported", callee->name);
            if (n_args == 0)
                return jr_fail(r, line, "no items for cycling given");
            *out = jv_copy(&args[l->index0 % (size_t)n_args]);
            return 0;
        }
        return jinja_method_call(r, line, callee, args, names, n_args, out);
    case JV_UNDEF:
        return jr_undef_fail(r, line, callee);
    default:
        return jr_fail(r, line, "'%s' object is not callable", jv_type_name(callee));
    }
}

/* ---- expressions ---------------------------------------------------------------------- */
static int s_enter(jrender_t *r, int line)
{
    if (r->failed)
        return -1;
    if (++r->steps > JINJA_STEPS_MAX)
        return jr_fail(r, line, "the template takes more than %d steps", JINJA_STEPS_MAX);
    if (++r->depth > JINJA_EVAL_DEPTH_MAX) {
        r->depth--;
        return jr_fail(r, line, "recursion deeper than %d levels", JINJA_EVAL_DEPTH_MAX);
    }
    return 0;
}

static int s_eval_filter(jrender_t *r, const node_t *n, jframe_t *f, jv_t *out)
{
    jv_t val = jv_undef(NULL), *args = NULL;
    int n_args = n->n_kids - 1, rc = -1;
    if (n->kids[0]) {
        if (s_eval(r, n->kids[0], f, &val) < 0)
            return -1;
    } else if (r->block_value) {
        val = jv_copy(r->block_value);
    }
    if (s_eval_args(r, n, 1, f, &args) < 0)
        goto done;
    rc = jinja_filter_apply(r, n->line, n->str, &val, args, n->names ? n->names + 1 : NULL,
                            n_args, out);
done:
    s_args_free(args, n_args > 0 && args ? n_args : 0);
    jv_free(&val);
    return rc;
}

static int s_eval_call(jrender_t *r, const node_t *n, jframe_t *f, jcaller_t *caller, jv_t *out)
{
    jv_t callee, *args = NULL;
    int n_args = n->n_kids - 1;
    if (s_eval(r, n->kids[0], f, &callee) < 0)
        return -1;
    int rc = s_eval_args(r, n, 1, f, &args);
    if (rc == 0)
        rc = s_call(r, n->line, &callee, args, n->names ? n->names + 1 : NULL, n_args, caller, f,
                    out);
    s_args_free(args, args ? n_args : 0);
    jv_free(&callee);
    return rc;
}

static int s_eval_inner(jrender_t *r, const node_t *n, jframe_t *f, jv_t *out)
{
    jv_t a = jv_undef(NULL), b = jv_undef(NULL);
    int rc = -1;
    switch (n->type) {
    case N_CONST:
        *out = jv_data(json_incref(n->value));
        return 0;
    case N_NAME:
        *out = s_lookup(r, f, n->str);
        return 0;
    case N_LIST:
    case N_TUPLE:
    case N_DICT: {
        json_t *c = n->type == N_DICT ? json_object() : json_array();
        if (!c)
            return s_oom(r);
        for (int i = 0; i < n->n_kids; i++) {
            if (s_eval(r, n->kids[i], f, &a) < 0)
                goto container_fail;
            if (n->type == N_DICT && i % 2 == 0) {
                if (!jv_is_str(&a)) {
                    jr_fail(r, n->line, "dict keys must be strings here");
                    goto container_fail;
                }
                b = a;
                a = jv_undef(NULL);
                continue;
            }
            if (s_check_nesting(r, n->line, &a) < 0)
                goto container_fail;
            json_t *j = jv_to_json(&a);
            if (!j) {
                jr_fail(r, n->line, "a %s cannot be stored in a list or dict", jv_type_name(&a));
                goto container_fail;
            }
            int set = n->type == N_DICT ? json_object_set_new(c, json_string_value(b.j), j)
                                        : json_array_append_new(c, j);
            if (set < 0) {
                s_oom(r);
                goto container_fail;
            }
            jv_free(&a);
            jv_free(&b);
        }
        *out = jv_data(c);
        return 0;
    container_fail:
        jv_free(&a);
        jv_free(&b);
        json_decref(c);
        return -1;
    }
    case N_ATTR:
        if (s_eval(r, n->kids[0], f, &a) < 0)
            return -1;
        rc = s_getattr(r, n->line, &a, n->str, out);
        jv_free(&a);
        return rc;
    case N_ITEM:
        if (s_eval(r, n->kids[0], f, &a) == 0 && s_eval(r, n->kids[1], f, &b) == 0)
            rc = s_getitem(r, n->line, &a, &b, out);
        jv_free(&a);
        jv_free(&b);
        return rc;
    case N_SLICE: {
        jv_t parts[3] = {jv_undef(NULL), jv_undef(NULL), jv_undef(NULL)};
        if (s_eval(r, n->kids[0], f, &a) < 0)
            return -1;
        rc = 0;
        for (int i = 0; i < 3 && rc == 0; i++)
            if (n->kids[i + 1])
                rc = s_eval(r, n->kids[i + 1], f, &parts[i]);
        if (rc == 0)
            rc = s_slice(r, n->line, &a, parts, out);
        for (int i = 0; i < 3; i++)
            jv_free(&parts[i]);
        jv_free(&a);
        return rc;
    }
    case N_CALL:
        return s_eval_call(r, n, f, NULL, out);
    case N_FILTER:
        return s_eval_filter(r, n, f, out);
    case N_TEST: {
        jv_t *args = NULL;
        bool t = false;
        if (s_eval(r, n->kids[0], f, &a) < 0)
            return -1;
        if (s_eval_args(r, n, 1, f, &args) == 0 &&
            jinja_test_apply(r, n->line, n->str, &a, args, n->n_kids - 1, &t) == 0)
            rc = s_bool_result(r, t != (bool)n->op, out);
        s_args_free(args, args ? n->n_kids - 1 : 0);
        jv_free(&a);
        return rc;
    }
    case N_UNARY:
        if (s_eval(r, n->kids[0], f, &a) < 0)
            return -1;
        if (n->op == OP_NOT) {
            rc = s_bool_result(r, !jv_truth(&a), out);
        } else if (a.kind == JV_UNDEF) {
            rc = jr_undef_fail(r, n->line, &a);
        } else if (!jv_is_num(&a)) {
            rc = jr_fail(r, n->line, "bad operand type for unary %c: '%s'",
                         n->op == OP_NEG ? '-' : '+', jv_type_name(&a));
        } else if (n->op == OP_POS) {
            rc = jv_is(&a, JSON_REAL) ? s_float_result(r, jv_num(&a), out)
                                      : s_int_result(r, n->line, false, jv_int(&a), out);
        } else if (jv_is(&a, JSON_REAL)) {
            rc = s_float_result(r, -jv_num(&a), out);
        } else {
            rc = s_int_result(r, n->line, jv_int(&a) == INT64_MIN, -jv_int(&a), out);
        }
        jv_free(&a);
        return rc;
    case N_BINARY:
        if (s_eval(r, n->kids[0], f, &a) < 0)
            return -1;
        if (n->op == OP_AND || n->op == OP_OR) {
            bool t = jv_truth(&a);
            if ((n->op == OP_AND) != t) {
                *out = a;
                return 0;
            }
            jv_free(&a);
            return s_eval(r, n->kids[1], f, out);
        }
        if (s_eval(r, n->kids[1], f, &b) < 0) {
            jv_free(&a);
            return -1;
        }
        if (n->op == OP_CONCAT) {
            jbuf_t s = {0};
            jv_str(&s, &a);
            jv_str(&s, &b);
            rc = s_str_value(r, &s, out);
        } else {
            rc = s_arith(r, n->line, n->op, &a, &b, out);
        }
        jv_free(&a);
        jv_free(&b);
        return rc;
    case N_COMPARE: {
        bool t = true;
        if (s_eval(r, n->kids[0], f, &a) < 0)
            return -1;
        for (int i = 1; i < n->n_kids && t; i++) {
            if (s_eval(r, n->kids[i], f, &b) < 0 ||
                s_compare(r, n->line, n->ops[i - 1], &a, &b, &t) < 0) {
                jv_free(&a);
                jv_free(&b);
                return -1;
            }
            jv_free(&a);
            a = b;
            b = jv_undef(NULL);
        }
        jv_free(&a);
        return s_bool_result(r, t, out);
    }
    case N_COND:
        if (s_eval(r, n->kids[1], f, &a) < 0)
            return -1;
        bool t = jv_truth(&a);
        jv_free(&a);
        if (t)
            return s_eval(r, n->kids[0], f, out);
        if (n->kids[2])
            return s_eval(r, n->kids[2], f, out);
        *out = jv_undef(NULL);
        return 0;
    default:
        return jr_fail(r, n->line, "internal error: statement where an expression belongs");
    }
}

static int s_eval(jrender_t *r, const node_t *n, jframe_t *f, jv_t *out)
{
    *out = jv_undef(NULL);
    if (s_enter(r, n->line) < 0)
        return -1;
    int rc = s_eval_inner(r, n, f, out);
    r->depth--;
    if (rc < 0) {
        jv_free(out);
        if (!r->failed)
            s_oom(r);
    }
    return rc;
}

/* ---- statements ------------------------------------------------------------------------ */
static int s_assign(jrender_t *r, const node_t *target, jframe_t *f, jv_t *v)
{
    if (target->type == N_NAME)
        return s_frame_set(r, f, target->str, v);
    if (target->type == N_ATTR) {
        jv_t obj = s_lookup(r, f, target->kids[0]->str);
        int rc;
        if (obj.kind != JV_NS)
            rc = jr_fail(r, target->line, "cannot assign attribute on non-namespace object");
        else
            rc = s_ns_set(r, obj.p, target->str, v);
        jv_free(&obj);
        jv_free(v);
        return rc;
    }
    /* tuple unpacking */
    int rc = 0;
    json_t *arr = jv_iter_array(r, target->line, v, &rc);
    if (!arr) {
        jv_free(v);
        return -1;
    }
    if ((int)json_array_size(arr) != target->n_kids) {
        rc = jr_fail(r, target->line, "%s values to unpack (expected %d, got %zu)",
                     (int)json_array_size(arr) > target->n_kids ? "too many" : "not enough",
                     target->n_kids, json_array_size(arr));
    }
    for (int i = 0; rc == 0 && i < target->n_kids; i++) {
        jv_t e = jv_elem(json_array_get(arr, (size_t)i));
        rc = s_frame_set(r, f, target->kids[i]->str, &e);
    }
    json_decref(arr);
    jv_free(v);
    return rc;
}

static int s_exec_for(jrender_t *r, const node_t *n, jframe_t *f, jbuf_t *out)
{
    jv_t it;
    if (s_eval(r, n->kids[1], f, &it) < 0)
        return -1;
    int rc = 0;
    json_t *items = jv_iter_array(r, n->line, &it, &rc);
    jv_free(&it);
    if (!items)
        return -1;
    if (n->kids[2]) { /* for x in y if cond: filter first, loop.* counts what is left */
        json_t *kept = json_array();
        if (!kept) {
            json_decref(items);
            return s_oom(r);
        }
        for (size_t i = 0; rc == 0 && i < json_array_size(items); i++) {
            jframe_t cf = {.parent = f};
            jv_t e = jv_elem(json_array_get(items, i)), c;
            rc = s_assign(r, n->kids[0], &cf, &e);
            if (rc == 0 && (rc = s_eval(r, n->kids[2], &cf, &c)) == 0) {
                if (jv_truth(&c) && json_array_append(kept, json_array_get(items, i)) < 0)
                    rc = s_oom(r);
                jv_free(&c);
            }
            s_frame_fini(&cf);
        }
        json_decref(items);
        items = kept;
        if (rc < 0) {
            json_decref(items);
            return -1;
        }
    }
    jloop_t *loop = mem_calloc(1, sizeof *loop);
    if (!loop) {
        json_decref(items);
        return s_oom(r);
    }
    loop->items = items;
    loop->next = r->loops;
    r->loops = loop;
    size_t len = json_array_size(items);
    for (size_t i = 0; i < len; i++) {
        jframe_t lf = {.parent = f};
        loop->index0 = i;
        jv_t e = jv_elem(json_array_get(items, i));
        jv_t lv = {.kind = JV_LOOP, .p = loop};
        rc = s_assign(r, n->kids[0], &lf, &e);
        if (rc == 0)
            rc = s_frame_set(r, &lf, "loop", &lv);
        if (rc == 0)
            rc = s_exec(r, n->kids[3], &lf, out);
        s_frame_fini(&lf);
        if (rc < 0)
            return -1;
        if (rc == X_BREAK)
            break;
    }
    if (len == 0 && n->kids[4]) {
        jframe_t ef = {.parent = f};
        rc = s_exec(r, n->kids[4], &ef, out);
        s_frame_fini(&ef);
        if (rc < 0)
            return -1;
    }
    return X_OK;
}

/* Renders body into a string and runs the filter chain over it. */
static int s_capture(jrender_t *r, const node_t *body, const node_t *chain, jframe_t *f,
                     jv_t *out)
{
    jbuf_t b = {0};
    jv_t s;
    if (s_exec(r, body, f, &b) < 0) {
        jbuf_free(&b);
        return -1;
    }
    if (s_str_value(r, &b, &s) < 0)
        return -1;
    if (!chain) {
        *out = s;
        return 0;
    }
    const jv_t *saved = r->block_value;
    r->block_value = &s;
    int rc = s_eval(r, chain, f, out);
    r->block_value = saved;
    jv_free(&s);
    return rc;
}

static int s_exec_inner(jrender_t *r, const node_t *n, jframe_t *f, jbuf_t *out)
{
    jv_t v = jv_undef(NULL);
    int rc;
    switch (n->type) {
    case N_BODY:
        for (int i = 0; i < n->n_kids; i++)
            if ((rc = s_exec(r, n->kids[i], f, out)) != X_OK)
                return rc;
        return X_OK;
    case N_TEXT:
        jbuf_add(out, n->str, n->len);
        return X_OK;
    case N_OUTPUT:
        if (s_eval(r, n->kids[0], f, &v) < 0)
            return -1;
        jv_str(out, &v);
        jv_free(&v);
        return X_OK;
    case N_IF:
        if (s_eval(r, n->kids[0], f, &v) < 0)
            return -1;
        bool t = jv_truth(&v);
        jv_free(&v);
        if (t)
            return s_exec(r, n->kids[1], f, out);
        return n->kids[2] ? s_exec(r, n->kids[2], f, out) : X_OK;
    case N_FOR:
        return s_exec_for(r, n, f, out);
    case N_SET:
        if (s_eval(r, n->kids[1], f, &v) < 0)
            return -1;
        return s_assign(r, n->kids[0], f, &v);
    case N_SETBLOCK:
        if (s_capture(r, n->kids[1], n->kids[2], f, &v) < 0)
            return -1;
        return s_assign(r, n->kids[0], f, &v);
    case N_MACRO:
        v = (jv_t){.kind = JV_MACRO, .p = (void *)n, .env = f};
        return s_frame_set(r, f, n->str, &v);
    case N_CALLBLOCK: {
        jcaller_t c = {.block = n, .frame = f};
        if (s_eval_call(r, n->kids[0], f, &c, &v) < 0)
            return -1;
        jv_str(out, &v);
        jv_free(&v);
        return X_OK;
    }
    case N_FILTERBLOCK:
        if (s_capture(r, n->kids[1], n->kids[0], f, &v) < 0)
            return -1;
        jv_str(out, &v);
        jv_free(&v);
        return X_OK;
    case N_WITH: {
        jframe_t wf = {.parent = f};
        rc = s_exec(r, n->kids[0], &wf, out);
        if (rc == X_OK)
            rc = s_exec(r, n->kids[1], &wf, out);
        s_frame_fini(&wf);
        return rc;
    }
    case N_BREAK:
        return X_BREAK;
    case N_CONTINUE:
        return X_CONTINUE;
    default:
        if (s_eval(r, n, f, &v) < 0)
            return -1;
        jv_free(&v);
        return X_OK;
    }
}

static int s_exec(jrender_t *r, const node_t *n, jframe_t *f, jbuf_t *out)
{
    if (s_enter(r, n->line) < 0)
        return -1;
    int rc = s_exec_inner(r, n, f, out);
    r->depth--;
    if (rc >= 0 && out->failed) {
        if (!out->oom)
            return jr_fail(r, n->line, "output longer than %zu bytes", JINJA_OUTPUT_MAX);
        return s_oom(r);
    }
    if (rc < 0 && !r->failed)
        return s_oom(r);
    return rc;
}

int jinja_render(const node_t *root, jrender_t *r, jbuf_t *out)
{
    jframe_t top = {0};
    int rc = s_exec(r, root, &top, out);
    s_frame_fini(&top);
    while (r->namespaces) {
        jns_t *ns = r->namespaces;
        r->namespaces = ns->next;
        for (size_t i = 0; i < ns->n; i++) {
            mem_free(ns->keys[i]);
            jv_free(&ns->vals[i]);
        }
        mem_free(ns->keys);
        mem_free(ns->vals);
        mem_free(ns);
    }
    while (r->loops) {
        jloop_t *l = r->loops;
        r->loops = l->next;
        json_decref(l->items);
        mem_free(l);
    }
    return rc < 0 ? -1 : 0;
}
