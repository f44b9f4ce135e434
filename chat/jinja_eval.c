/* jinja_eval: evaluates expressions (jinja_exec runs statements). Scopes as Jinja2 compiles them: the
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
        return jinja_oom(r);
    *out = jv_data(j);
    return 0;
}

/* obj.name (Jinja's getattr: attribute first, then item). */
static int s_getattr(jrender_t *r, int line, const jv_t *obj, const char *name, jv_t *out)
{
    switch (obj->kind) {
    case JV_UNDEF:
        return jr_undef_fail(r, line, obj);
    case JV_NS: {
        jv_t *v = jinja_ns_get(obj->p, name);
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
                    return jinja_oom(r);
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
            return jinja_oom(r);
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
        return jinja_oom(r);
    }
    for (int64_t i = a; step > 0 ? i < b : i > b;) {
        if (is_str)
            jbuf_add(&sb, s + offs[i], offs[i + 1] - offs[i]);
        else if (json_array_append(arr, json_array_get(obj->j, (size_t)i)) < 0) {
            json_decref(arr);
            mem_free(offs);
            return jinja_oom(r);
        }
        if (__builtin_add_overflow(i, step, &i))
            break;
    }
    mem_free(offs);
    if (is_str)
        return jinja_str_value(r, &sb, out);
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


/* ---- expressions ---------------------------------------------------------------------- */
int jinja_enter(jrender_t *r, int line)
{
    if (r->failed)
        return -1;
    if (++r->steps > r->max_steps)
        return jr_fail(r, line, "the template takes more than %ld steps", r->max_steps);
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
        if (jinja_eval(r, n->kids[0], f, &val) < 0)
            return -1;
    } else if (r->block_value) {
        val = jv_copy(r->block_value);
    }
    if (jinja_eval_args(r, n, 1, f, &args) < 0)
        goto done;
    rc = jinja_filter_apply(r, n->line, n->str, &val, args, n->names ? n->names + 1 : NULL,
                            n_args, out);
done:
    jinja_args_free(args, n_args > 0 && args ? n_args : 0);
    jv_free(&val);
    return rc;
}

int jinja_eval_call(jrender_t *r, const node_t *n, jframe_t *f, jcaller_t *caller, jv_t *out)
{
    jv_t callee, *args = NULL;
    int n_args = n->n_kids - 1;
    if (jinja_eval(r, n->kids[0], f, &callee) < 0)
        return -1;
    int rc = jinja_eval_args(r, n, 1, f, &args);
    if (rc == 0)
        rc = jinja_call(r, n->line, &callee, args, n->names ? n->names + 1 : NULL, n_args, caller, f,
                    out);
    jinja_args_free(args, args ? n_args : 0);
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
        *out = jinja_lookup(r, f, n->str);
        return 0;
    case N_LIST:
    case N_TUPLE:
    case N_DICT: {
        json_t *c = n->type == N_DICT ? json_object() : json_array();
        if (!c)
            return jinja_oom(r);
        for (int i = 0; i < n->n_kids; i++) {
            if (jinja_eval(r, n->kids[i], f, &a) < 0)
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
            if (jinja_check_nesting(r, n->line, &a) < 0)
                goto container_fail;
            json_t *j = jv_to_json(&a);
            if (!j) {
                jr_fail(r, n->line, "a %s cannot be stored in a list or dict", jv_type_name(&a));
                goto container_fail;
            }
            int set = n->type == N_DICT ? json_object_set_new(c, json_string_value(b.j), j)
                                        : json_array_append_new(c, j);
            if (set < 0) {
                jinja_oom(r);
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
        if (jinja_eval(r, n->kids[0], f, &a) < 0)
            return -1;
        rc = s_getattr(r, n->line, &a, n->str, out);
        jv_free(&a);
        return rc;
    case N_ITEM:
        if (jinja_eval(r, n->kids[0], f, &a) == 0 && jinja_eval(r, n->kids[1], f, &b) == 0)
            rc = s_getitem(r, n->line, &a, &b, out);
        jv_free(&a);
        jv_free(&b);
        return rc;
    case N_SLICE: {
        jv_t parts[3] = {jv_undef(NULL), jv_undef(NULL), jv_undef(NULL)};
        if (jinja_eval(r, n->kids[0], f, &a) < 0)
            return -1;
        rc = 0;
        for (int i = 0; i < 3 && rc == 0; i++)
            if (n->kids[i + 1])
                rc = jinja_eval(r, n->kids[i + 1], f, &parts[i]);
        if (rc == 0)
            rc = s_slice(r, n->line, &a, parts, out);
        for (int i = 0; i < 3; i++)
            jv_free(&parts[i]);
        jv_free(&a);
        return rc;
    }
    case N_CALL:
        return jinja_eval_call(r, n, f, NULL, out);
    case N_FILTER:
        return s_eval_filter(r, n, f, out);
    case N_TEST: {
        jv_t *args = NULL;
        bool t = false;
        if (jinja_eval(r, n->kids[0], f, &a) < 0)
            return -1;
        if (jinja_eval_args(r, n, 1, f, &args) == 0 &&
            jinja_test_apply(r, n->line, n->str, &a, args, n->n_kids - 1, &t) == 0)
            rc = jinja_bool_result(r, t != (bool)n->op, out);
        jinja_args_free(args, args ? n->n_kids - 1 : 0);
        jv_free(&a);
        return rc;
    }
    case N_UNARY:
        if (jinja_eval(r, n->kids[0], f, &a) < 0)
            return -1;
        if (n->op == OP_NOT) {
            rc = jinja_bool_result(r, !jv_truth(&a), out);
        } else if (a.kind == JV_UNDEF) {
            rc = jr_undef_fail(r, n->line, &a);
        } else if (!jv_is_num(&a)) {
            rc = jr_fail(r, n->line, "bad operand type for unary %c: '%s'",
                         n->op == OP_NEG ? '-' : '+', jv_type_name(&a));
        } else if (n->op == OP_POS) {
            rc = jv_is(&a, JSON_REAL) ? jinja_float_result(r, jv_num(&a), out)
                                      : jinja_int_result(r, n->line, false, jv_int(&a), out);
        } else if (jv_is(&a, JSON_REAL)) {
            rc = jinja_float_result(r, -jv_num(&a), out);
        } else {
            rc = jinja_int_result(r, n->line, jv_int(&a) == INT64_MIN, -jv_int(&a), out);
        }
        jv_free(&a);
        return rc;
    case N_BINARY:
        if (jinja_eval(r, n->kids[0], f, &a) < 0)
            return -1;
        if (n->op == OP_AND || n->op == OP_OR) {
            bool t = jv_truth(&a);
            if ((n->op == OP_AND) != t) {
                *out = a;
                return 0;
            }
            jv_free(&a);
            return jinja_eval(r, n->kids[1], f, out);
        }
        if (jinja_eval(r, n->kids[1], f, &b) < 0) {
            jv_free(&a);
            return -1;
        }
        if (n->op == OP_CONCAT) {
            jbuf_t s = {0};
            jv_str(&s, &a);
            jv_str(&s, &b);
            rc = jinja_str_value(r, &s, out);
        } else {
            rc = jinja_arith(r, n->line, n->op, &a, &b, out);
        }
        jv_free(&a);
        jv_free(&b);
        return rc;
    case N_COMPARE: {
        bool t = true;
        if (jinja_eval(r, n->kids[0], f, &a) < 0)
            return -1;
        for (int i = 1; i < n->n_kids && t; i++) {
            if (jinja_eval(r, n->kids[i], f, &b) < 0 ||
                jinja_compare(r, n->line, n->ops[i - 1], &a, &b, &t) < 0) {
                jv_free(&a);
                jv_free(&b);
                return -1;
            }
            jv_free(&a);
            a = b;
            b = jv_undef(NULL);
        }
        jv_free(&a);
        return jinja_bool_result(r, t, out);
    }
    case N_COND:
        if (jinja_eval(r, n->kids[1], f, &a) < 0)
            return -1;
        bool t = jv_truth(&a);
        jv_free(&a);
        if (t)
            return jinja_eval(r, n->kids[0], f, out);
        if (n->kids[2])
            return jinja_eval(r, n->kids[2], f, out);
        *out = jv_undef(NULL);
        return 0;
    default:
        return jr_fail(r, n->line, "internal error: statement where an expression belongs");
    }
}

int jinja_eval(jrender_t *r, const node_t *n, jframe_t *f, jv_t *out)
{
    *out = jv_undef(NULL);
    if (jinja_enter(r, n->line) < 0)
        return -1;
    int rc = s_eval_inner(r, n, f, out);
    r->depth--;
    if (rc < 0) {
        jv_free(out);
        if (!r->failed)
            jinja_oom(r);
    }
    return rc;
}

