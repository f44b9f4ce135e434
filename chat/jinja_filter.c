/* jinja_filter: Jinja2's built-in filters that chat templates use (tests: jinja_test),
 * with transformers' tojson (json.dumps: ensure_ascii=False, ", " and ": "
 * separators, keys in insertion order). A filter name outside the table is
 * refused when the template is parsed.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja_private.h"
#include "core/mem.h"

static const char *const S_FILTERS[] = {
    "abs", "attr", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape",
    "first", "float", "forceescape", "format", "indent", "int", "items", "join", "last",
    "length", "list", "lower", "map", "max", "min", "reject", "rejectattr", "replace",
    "reverse", "round", "safe", "select", "selectattr", "sort", "string", "sum", "title",
    "tojson", "trim", "truncate", "unique", "upper", "wordcount",
};

static bool s_in(const char *const *tab, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(tab[i], name))
            return true;
    return false;
}

bool jinja_filter_known(const char *name)
{
    return s_in(S_FILTERS, sizeof S_FILTERS / sizeof *S_FILTERS, name);
}

/* Argument pos (positional index) or keyword kw; NULL when not given. */
static const jv_t *s_arg(jv_t *args, char **names, int n, int pos, const char *kw)
{
    int p = 0;
    for (int i = 0; i < n; i++) {
        if (names && names[i]) {
            if (kw && !strcmp(names[i], kw))
                return &args[i];
        } else if (p++ == pos) {
            return &args[i];
        }
    }
    return NULL;
}

static bool s_arg_bool(const jv_t *a, bool def) { return a ? jv_truth(a) : def; }

static int s_real(jrender_t *r, int line, double d, jv_t *out)
{
    if (!isfinite(d))
        return jr_fail(r, line, "a float result that is infinite or not a number");
    json_t *j = json_real(d);
    if (!j)
        return jinja_oom(r);
    *out = jv_data(j);
    return 0;
}

/* An integer from a float, as Python's int(): truncated; -1 when out of range. */
static int s_trunc(jrender_t *r, int line, double d, jv_t *out)
{
    if (!(d > -9.2233720368547758e18 && d < 9.2233720368547758e18))
        return jr_fail(r, line, "integer out of range");
    json_t *j = json_integer((json_int_t)trunc(d));
    if (!j)
        return jinja_oom(r);
    *out = jv_data(j);
    return 0;
}

static int s_data(jrender_t *r, json_t *j, jv_t *out)
{
    if (!j)
        return jinja_oom(r);
    *out = jv_data(j);
    return 0;
}

/* str(v) as a new string value. */
static int s_to_str(jrender_t *r, const jv_t *v, jv_t *out)
{
    if (jv_is_str(v)) {
        *out = jv_copy(v);
        return 0;
    }
    jbuf_t b = {0};
    jv_str(&b, v);
    return jinja_str_value(r, &b, out);
}

/* Follows a dotted attribute path ("a.b", "items.0"), as Jinja's attribute=. */
static int s_attr_path(jrender_t *r, int line, const jv_t *item, const jv_t *path, jv_t *out)
{
    jv_t cur = jv_copy(item);
    if (jv_is_int(path)) {
        int rc = jinja_getitem(r, line, &cur, path, out);
        jv_free(&cur);
        return rc;
    }
    if (!jv_is_str(path)) {
        jv_free(&cur);
        return jr_fail(r, line, "attribute must be a string");
    }
    const char *s = json_string_value(path->j);
    while (1) {
        const char *dot = strchr(s, '.');
        size_t len = dot ? (size_t)(dot - s) : strlen(s);
        char part[256];
        if (len >= sizeof part) {
            jv_free(&cur);
            return jr_fail(r, line, "attribute name too long");
        }
        memcpy(part, s, len);
        part[len] = '\0';
        jv_t next, key;
        char *end;
        long long idx = strtoll(part, &end, 10);
        if (len > 0 && *end == '\0')
            key = jv_data(json_integer(idx));
        else
            key = jv_data(json_string_nocheck(part));
        if (!key.j) {
            jv_free(&cur);
            return jinja_oom(r);
        }
        int rc = cur.kind == JV_UNDEF ? 0 : jinja_getitem(r, line, &cur, &key, &next);
        if (cur.kind == JV_UNDEF)
            next = jv_undef(NULL);
        jv_free(&key);
        jv_free(&cur);
        if (rc < 0)
            return -1;
        cur = next;
        if (!dot)
            break;
        s = dot + 1;
    }
    *out = cur;
    return 0;
}

/* Iterable as an array; undefined is empty. */
static json_t *s_items(jrender_t *r, int line, const jv_t *v)
{
    int rc;
    return jv_iter_array(r, line, v, &rc);
}

/* ---- sorting ------------------------------------------------------------------ */
typedef struct sort_ctx {
    bool case_sensitive;
    bool bad;
} sort_ctx_t;

typedef struct sort_item {
    json_t *key;   /* borrowed or owned by keys array */
    json_t *val;
    size_t idx;
} sort_item_t;

static int s_cmp_json(const json_t *a, const json_t *b, sort_ctx_t *c)
{
    jv_t x = jv_data((json_t *)a), y = jv_data((json_t *)b);
    if (!c->case_sensitive && jv_is_str(&x) && jv_is_str(&y)) {
        size_t la = json_string_length(a), lb = json_string_length(b);
        const char *p = json_string_value(a), *q = json_string_value(b);
        for (size_t i = 0; i < la && i < lb; i++) {
            int u = (unsigned char)p[i], v = (unsigned char)q[i];
            if (u >= 'A' && u <= 'Z') u += 32;
            if (v >= 'A' && v <= 'Z') v += 32;
            if (u != v)
                return u < v ? -1 : 1;
        }
        return la < lb ? -1 : la > lb;
    }
    int o = jv_order(&x, &y);
    if (o == -2) {
        c->bad = true;
        return 0;
    }
    return o;
}

static int s_sort_cmp(const void *a, const void *b, void *ctx)
{
    const sort_item_t *x = a, *y = b;
    int c = s_cmp_json(x->key, y->key, ctx);
    if (c == 0)
        return x->idx < y->idx ? -1 : x->idx > y->idx; /* stable, as Python's sort */
    return c;
}

/* Sorts arr (elements, or [k, v] pairs keyed by element key_index when >= 0)
 * by attribute path attr (may be NULL). New array in *out. */
static int s_sort(jrender_t *r, int line, json_t *arr, const jv_t *attr, int key_index,
                  bool reverse, bool case_sensitive, json_t **out)
{
    size_t n = json_array_size(arr);
    sort_item_t *it = mem_calloc(n ? n : 1, sizeof *it);
    json_t *keys = json_array();
    int rc = -1;
    if (!it || !keys) {
        jinja_oom(r);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        json_t *k = key_index >= 0 ? json_array_get(v, (size_t)key_index) : v;
        if (attr) {
            jv_t item = jv_data(v), kv;
            if (s_attr_path(r, line, &item, attr, &kv) < 0)
                goto done;
            json_t *kj = jv_to_json(&kv);
            jv_free(&kv);
            if (!kj || json_array_append_new(keys, kj) < 0) {
                jr_fail(r, line, "cannot sort by that attribute");
                goto done;
            }
            k = kj;
        }
        it[i] = (sort_item_t){.key = k, .val = v, .idx = i};
    }
    size_t lg = 1;
    for (size_t k = n; k > 1; k >>= 1)
        lg++;
    if (jinja_charge(r, line, n * lg) < 0)
        goto done;
    sort_ctx_t c = {.case_sensitive = case_sensitive};
    qsort_r(it, n, sizeof *it, s_sort_cmp, &c);
    if (c.bad) {
        jr_fail(r, line, "'<' not supported between the items to sort");
        goto done;
    }
    json_t *res = json_array();
    for (size_t i = 0; res && i < n; i++)
        if (json_array_append(res, it[reverse ? n - 1 - i : i].val) < 0) {
            json_decref(res);
            res = NULL;
        }
    if (!res) {
        jinja_oom(r);
        goto done;
    }
    *out = res;
    rc = 0;
done:
    json_decref(keys);
    mem_free(it);
    return rc;
}

/* ---- string helpers ----------------------------------------------------------------- */
static void s_html_escape(jbuf_t *b, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        switch (s[i]) {
        case '&': jbuf_adds(b, "&amp;"); break;
        case '<': jbuf_adds(b, "&lt;"); break;
        case '>': jbuf_adds(b, "&gt;"); break;
        case '"': jbuf_adds(b, "&#34;"); break;
        case '\'': jbuf_adds(b, "&#39;"); break;
        default: jbuf_addc(b, s[i]);
        }
    }
}

/* Whether code point cp is in the UTF-8 set chars (NULL: whitespace). */
static bool s_in_set(int32_t cp, const char *chars, size_t clen)
{
    if (!chars)
        return ustr_isspace(cp);
    int32_t c;
    for (size_t i = 0; i < clen;) {
        i = ustr_next(chars, clen, i, &c);
        if (c == cp)
            return true;
    }
    return false;
}

/* strip: which 1 = left, 2 = right, 3 = both. */
static void s_strip(const char *s, size_t len, const char *chars, size_t clen, int which,
                    size_t *a_p, size_t *b_p)
{
    size_t a = 0, b = len;
    int32_t cp;
    if (which & 1)
        while (a < b) {
            size_t j = ustr_next(s, len, a, &cp);
            if (!s_in_set(cp, chars, clen))
                break;
            a = j;
        }
    if (which & 2)
        while (b > a) {
            size_t k = b - 1;
            while (k > a && ((unsigned char)s[k] & 0xc0) == 0x80)
                k--;
            ustr_next(s, len, k, &cp);
            if (!s_in_set(cp, chars, clen))
                break;
            b = k;
        }
    *a_p = a;
    *b_p = b;
}

static int s_indent(jrender_t *r, const jv_t *v, const jv_t *width, bool first, bool blank,
                    jv_t *out)
{
    jbuf_t in = {0}, pad = {0}, b = {0};
    jv_str(&in, v);
    if (width && jv_is_str(width))
        jbuf_add(&pad, json_string_value(width->j), json_string_length(width->j));
    else
        for (int64_t k = 0; k < (width && jv_is_int(width) ? jv_int(width) : 4) && k < 4096; k++)
            jbuf_addc(&pad, ' ');
    const char *s = in.p ? in.p : "";
    size_t len = in.len;
    /* Jinja: newline = "\n"; lines after the first are indented (blank ones
     * only with blank=True); the first with first=True. */
    size_t i = 0;
    bool line0 = true;
    while (i <= len) {
        const char *nl = memchr(s + i, '\n', len - i);
        size_t e = nl ? (size_t)(nl - s) : len;
        bool empty = e == i;
        if ((line0 ? first : true) && (blank || !empty || (line0 && first && !empty)))
            jbuf_add(&b, pad.p ? pad.p : "", pad.len);
        jbuf_add(&b, s + i, e - i);
        if (!nl)
            break;
        jbuf_addc(&b, '\n');
        i = e + 1;
        line0 = false;
    }
    jbuf_free(&in);
    jbuf_free(&pad);
    return jinja_str_value(r, &b, out);
}

/* ---- filters -------------------------------------------------------------------------- */
static int s_select(jrender_t *r, int line, const char *fname, const jv_t *val, jv_t *args,
                    char **names, int n_args, jv_t *out);

static int s_filter(jrender_t *r, int line, const char *name, jv_t *val, jv_t *args,
                    char **names, int n_args, jv_t *out);

/* The filters whose Jinja result is a generator (or an iterator). */
static bool s_makes_generator(const char *name, const jv_t *val)
{
    static const char *const gens[] = {"select", "reject", "selectattr", "rejectattr", "map",
                                       "unique", "items"};
    if (!strcmp(name, "reverse"))
        return !jv_is_str(val);
    return s_in(gens, sizeof gens / sizeof *gens, name);
}

int jinja_filter_apply(jrender_t *r, int line, const char *name, jv_t *val, jv_t *args,
                       char **names, int n_args, jv_t *out)
{
    int rc = s_filter(r, line, name, val, args, names, n_args, out);
    if (rc == 0 && out->kind == JV_DATA && json_is_array(out->j) && s_makes_generator(name, val))
        out->gen = true;
    return rc;
}

static int s_filter(jrender_t *r, int line, const char *name, jv_t *val, jv_t *args,
                    char **names, int n_args, jv_t *out)
{
    *out = jv_undef(NULL);
    const jv_t *a0 = s_arg(args, names, n_args, 0, NULL);
    if (!strcmp(name, "safe")) /* Markup(value): a string */
        return s_to_str(r, val, out);
    if (!strcmp(name, "default") || !strcmp(name, "d")) {
        const jv_t *def = s_arg(args, names, n_args, 0, "default_value");
        bool boolean = s_arg_bool(s_arg(args, names, n_args, 1, "boolean"), false);
        if (val->kind == JV_UNDEF || (boolean && !jv_truth(val))) {
            if (def)
                *out = jv_copy(def);
            else
                return s_data(r, json_string(""), out);
        } else {
            *out = jv_copy(val);
        }
        return 0;
    }
    if (!strcmp(name, "length") || !strcmp(name, "count")) {
        if (val->kind == JV_UNDEF)
            return s_data(r, json_integer(0), out);
        if (val->gen)
            return jr_fail(r, line, "object of type 'generator' has no len()");
        if (jv_is_str(val))
            return s_data(r, json_integer((json_int_t)ustr_ncp(json_string_value(val->j),
                                                               json_string_length(val->j))), out);
        if (jv_is(val, JSON_ARRAY))
            return s_data(r, json_integer((json_int_t)json_array_size(val->j)), out);
        if (jv_is(val, JSON_OBJECT))
            return s_data(r, json_integer((json_int_t)json_object_size(val->j)), out);
        return jr_fail(r, line, "object of type '%s' has no len()", jv_type_name(val));
    }
    if (!strcmp(name, "string"))
        return s_to_str(r, val, out);
    if (!strcmp(name, "tojson")) {
        if (val->kind != JV_DATA || val->gen)
            return jr_fail(r, line, "Object of type %s is not JSON serializable",
                           jv_type_name(val));
        tojson_opts_t o = {.indent = -1};
        const jv_t *ea = s_arg(args, names, n_args, 0, "ensure_ascii");
        const jv_t *ind = s_arg(args, names, n_args, 1, "indent");
        const jv_t *sep = s_arg(args, names, n_args, 2, "separators");
        const jv_t *sk = s_arg(args, names, n_args, 3, "sort_keys");
        o.ensure_ascii = s_arg_bool(ea, false);
        o.sort_keys = s_arg_bool(sk, false);
        if (ind && jv_is_int(ind))
            o.indent = (int)(jv_int(ind) < 0 ? 0 : jv_int(ind) > 64 ? 64 : jv_int(ind));
        else if (ind && jv_is_str(ind))
            o.indent_str = json_string_value(ind->j);
        else if (ind && !jv_is_none(ind))
            return jr_fail(r, line, "tojson: indent must be an integer or a string");
        if (sep && jv_is(sep, JSON_ARRAY) && json_array_size(sep->j) == 2 &&
            json_is_string(json_array_get(sep->j, 0)) && json_is_string(json_array_get(sep->j, 1))) {
            o.item_sep = json_string_value(json_array_get(sep->j, 0));
            o.key_sep = json_string_value(json_array_get(sep->j, 1));
        } else if (sep && !jv_is_none(sep)) {
            return jr_fail(r, line, "tojson: separators must be two strings");
        }
        jbuf_t b = {0};
        if (jv_tojson(&b, val->j, &o) < 0) {
            jbuf_free(&b);
            return jr_fail(r, line, "tojson: Object of type Undefined is not JSON serializable");
        }
        return jinja_str_value(r, &b, out);
    }
    if (!strcmp(name, "join")) {
        const jv_t *sep = s_arg(args, names, n_args, 0, "d");
        const jv_t *attr = s_arg(args, names, n_args, 1, "attribute");
        json_t *items = s_items(r, line, val);
        if (!items)
            return -1;
        jbuf_t b = {0};
        for (size_t i = 0; i < json_array_size(items); i++) {
            if (i && sep)
                jv_str(&b, sep);
            jv_t e = jv_elem_view(json_array_get(items, i));
            if (attr) {
                jv_t x;
                if (s_attr_path(r, line, &e, attr, &x) < 0) {
                    json_decref(items);
                    jbuf_free(&b);
                    return -1;
                }
                jv_str(&b, &x);
                jv_free(&x);
            } else {
                jv_str(&b, &e);
            }
        }
        json_decref(items);
        return jinja_str_value(r, &b, out);
    }
    if (!strcmp(name, "items")) {
        if (val->kind == JV_UNDEF)
            return s_data(r, json_array(), out);
        if (!jv_is(val, JSON_OBJECT))
            return jr_fail(r, line, "Can only get item pairs from a mapping.");
        jv_t m = {.kind = JV_METHOD, .j = val->j, .name = "items"};
        return jinja_method_call(r, line, &m, NULL, NULL, 0, out);
    }
    if (!strcmp(name, "dictsort")) {
        if (!jv_is(val, JSON_OBJECT))
            return jr_fail(r, line, "You can only sort by either \"key\" or \"value\" of a dict");
        bool cs = s_arg_bool(s_arg(args, names, n_args, 0, "case_sensitive"), false);
        const jv_t *by = s_arg(args, names, n_args, 1, "by");
        bool rev = s_arg_bool(s_arg(args, names, n_args, 2, "reverse"), false);
        int ki = by && jv_is_str(by) && !strcmp(json_string_value(by->j), "value") ? 1 : 0;
        jv_t pairs, m = {.kind = JV_METHOD, .j = val->j, .name = "items"};
        if (jinja_method_call(r, line, &m, NULL, NULL, 0, &pairs) < 0)
            return -1;
        json_t *sorted;
        int rc = s_sort(r, line, pairs.j, NULL, ki, rev, cs, &sorted);
        jv_free(&pairs);
        return rc < 0 ? -1 : s_data(r, sorted, out);
    }
    if (!strcmp(name, "list")) {
        json_t *items = s_items(r, line, val);
        if (!items)
            return -1;
        if (jv_is(val, JSON_ARRAY)) { /* a copy, as list() makes */
            json_t *c = json_array();
            if (!c || json_array_extend(c, items) < 0) {
                json_decref(c);
                json_decref(items);
                return jinja_oom(r);
            }
            json_decref(items);
            items = c;
        }
        return s_data(r, items, out);
    }
    if (!strcmp(name, "first") || !strcmp(name, "last")) {
        if (val->gen && name[0] == 'l')
            return jr_fail(r, line, "'generator' object is not reversible");
        json_t *items = s_items(r, line, val);
        if (!items)
            return -1;
        size_t n = json_array_size(items);
        if (n > 0)
            *out = jv_elem(json_array_get(items, name[0] == 'f' ? 0 : n - 1));
        else
            *out = jv_undef(name);
        json_decref(items);
        return 0;
    }
    if (!strcmp(name, "reverse")) {
        if (jv_is_str(val)) {
            json_t *items = s_items(r, line, val);
            if (!items)
                return -1;
            jbuf_t b = {0};
            for (size_t i = json_array_size(items); i-- > 0;)
                jbuf_add(&b, json_string_value(json_array_get(items, i)),
                         json_string_length(json_array_get(items, i)));
            json_decref(items);
            return jinja_str_value(r, &b, out);
        }
        json_t *items = s_items(r, line, val);
        json_t *rev = json_array();
        if (!items || !rev) {
            json_decref(items);
            json_decref(rev);
            return items ? jinja_oom(r) : -1;
        }
        for (size_t i = json_array_size(items); i-- > 0;)
            if (json_array_append(rev, json_array_get(items, i)) < 0) {
                json_decref(items);
                json_decref(rev);
                return jinja_oom(r);
            }
        json_decref(items);
        return s_data(r, rev, out);
    }
    if (!strcmp(name, "sort") || !strcmp(name, "unique") || !strcmp(name, "min") ||
        !strcmp(name, "max")) {
        bool is_sort = !strcmp(name, "sort");
        bool rev = is_sort && s_arg_bool(s_arg(args, names, n_args, 0, "reverse"), false);
        bool cs = s_arg_bool(s_arg(args, names, n_args, is_sort ? 1 : 0, "case_sensitive"),
                             false);
        const jv_t *attr = s_arg(args, names, n_args, is_sort ? 2 : 1, "attribute");
        json_t *items = s_items(r, line, val), *sorted = NULL;
        if (!items)
            return -1;
        int rc = name[0] == 'u' ? 0 : s_sort(r, line, items, attr, -1, rev, cs, &sorted);
        if (rc < 0) {
            json_decref(items);
            return -1;
        }
        if (is_sort) {
            json_decref(items);
            return s_data(r, sorted, out);
        }
        if (name[1] == 'i' || name[1] == 'a') { /* min / max */
            size_t n = json_array_size(sorted);
            if (n == 0)
                *out = jv_undef(name);
            else
                *out = jv_elem(json_array_get(sorted, name[1] == 'i' ? 0 : n - 1));
            json_decref(sorted);
            json_decref(items);
            return 0;
        }
        json_decref(sorted);
        /* unique: first occurrences, in order */
        json_t *u = json_array();
        for (size_t i = 0; u && i < json_array_size(items); i++) {
            json_t *e = json_array_get(items, i);
            bool seen = false;
            if (jinja_charge(r, line, json_array_size(u)) < 0) {
                json_decref(u);
                json_decref(items);
                return -1;
            }
            for (size_t k = 0; k < json_array_size(u) && !seen; k++) {
                sort_ctx_t c = {.case_sensitive = cs};
                json_t *x = json_array_get(u, k);
                seen = json_equal_py(x, e) || (json_is_string(x) && json_is_string(e) &&
                                               s_cmp_json(x, e, &c) == 0);
            }
            if (!seen && json_array_append(u, e) < 0) {
                json_decref(u);
                u = NULL;
            }
        }
        json_decref(items);
        return s_data(r, u, out);
    }
    if (!strcmp(name, "map") || !strcmp(name, "select") || !strcmp(name, "reject") ||
        !strcmp(name, "selectattr") || !strcmp(name, "rejectattr"))
        return s_select(r, line, name, val, args, names, n_args, out);
    if (!strcmp(name, "attr")) {
        if (!a0 || !jv_is_str(a0))
            return jr_fail(r, line, "attr() takes an attribute name");
        /* getattr() only: a dict's keys are not attributes */
        if (jv_is(val, JSON_OBJECT) && !jinja_method_known(json_string_value(a0->j))) {
            *out = jv_undef(NULL);
            return 0;
        }
        return jinja_getattr(r, line, val, json_string_value(a0->j), out);
    }
    if (!strcmp(name, "sum")) {
        const jv_t *attr = s_arg(args, names, n_args, 0, "attribute");
        const jv_t *start = s_arg(args, names, n_args, 1, "start");
        json_t *items = s_items(r, line, val);
        if (!items)
            return -1;
        jv_t acc = start ? jv_copy(start) : jv_data(json_integer(0));
        for (size_t i = 0; i < json_array_size(items); i++) {
            jv_t e = jv_elem(json_array_get(items, i)), x = jv_undef(NULL), s;
            if (attr && s_attr_path(r, line, &e, attr, &x) < 0) {
                jv_free(&e);
                jv_free(&acc);
                json_decref(items);
                return -1;
            }
            const jv_t *term = attr ? &x : &e;
            if (!jv_is_num(&acc) || !jv_is_num(term)) {
                jv_free(&e);
                jv_free(&x);
                jv_free(&acc);
                json_decref(items);
                return jr_fail(r, line, "sum() of values that are not numbers");
            }
            int64_t isum = 0;
            bool ovf = jv_is_int(&acc) && jv_is_int(term) &&
                       __builtin_add_overflow(jv_int(&acc), jv_int(term), &isum);
            double fsum = jv_num(&acc) + jv_num(term);
            if (ovf || !isfinite(fsum)) {
                jv_free(&e);
                jv_free(&x);
                jv_free(&acc);
                json_decref(items);
                return jr_fail(r, line, "sum() out of range");
            }
            if (jv_is_int(&acc) && jv_is_int(term))
                s = jv_data(json_integer(isum));
            else
                s = jv_data(json_real(fsum));
            if (!s.j) {
                jv_free(&e);
                jv_free(&x);
                jv_free(&acc);
                json_decref(items);
                return jinja_oom(r);
            }
            jv_free(&e);
            jv_free(&x);
            jv_free(&acc);
            acc = s;
        }
        json_decref(items);
        *out = acc;
        return 0;
    }
    /* int(), float(), abs(), round() of an Undefined raise in Jinja */
    if (val->kind == JV_UNDEF && (!strcmp(name, "abs") || !strcmp(name, "round") ||
                                  !strcmp(name, "int") || !strcmp(name, "float")))
        return jr_undef_fail(r, line, val);
    if (!strcmp(name, "abs")) {
        if (!jv_is_num(val))
            return jr_fail(r, line, "bad operand type for abs(): '%s'", jv_type_name(val));
        if (jv_is_int(val)) {
            if (jv_int(val) == INT64_MIN)
                return jr_fail(r, line, "integer overflow");
            return s_data(r, json_integer(llabs(jv_int(val))), out);
        }
        return s_real(r, line, fabs(jv_num(val)), out);
    }
    if (!strcmp(name, "round")) {
        if (!jv_is_num(val))
            return jr_fail(r, line, "round() of a '%s'", jv_type_name(val));
        const jv_t *prec = s_arg(args, names, n_args, 0, "precision");
        const jv_t *meth = s_arg(args, names, n_args, 1, "method");
        int p = prec && jv_is_int(prec) ? (int)jv_int(prec) : 0;
        if (p > 15 || p < -15)
            p = p > 0 ? 15 : -15;
        double m = pow(10, p), x = jv_num(val) * m;
        const char *how = meth && jv_is_str(meth) ? json_string_value(meth->j) : "common";
        /* Python's round(int, n) is the int itself */
        if (jv_is_int(val) && !strcmp(how, "common") && p >= 0)
            return s_data(r, json_integer(jv_int(val)), out);
        /* common: Python's round(), halves to even */
        x = !strcmp(how, "floor") ? floor(x) : !strcmp(how, "ceil") ? ceil(x) : nearbyint(x);
        if (!isfinite(x)) /* too many digits asked: the value itself */
            return s_real(r, line, jv_num(val), out);
        return s_real(r, line, x / m, out);
    }
    if (!strcmp(name, "int") || !strcmp(name, "float")) {
        bool to_int = name[0] == 'i';
        const jv_t *def = s_arg(args, names, n_args, 0, "default");
        if (jv_is_num(val)) {
            if (to_int)
                return jv_is_int(val) ? s_data(r, json_integer(jv_int(val)), out)
                                      : s_trunc(r, line, jv_num(val), out);
            return s_real(r, line, jv_num(val), out);
        }
        if (jv_is_str(val)) {
            const char *s = json_string_value(val->j);
            char *end;
            errno = 0;
            if (to_int) {
                long long v = strtoll(s, &end, 10);
                while (*end == ' ' || *end == '\t' || *end == '\n')
                    end++;
                if (*s && !*end && errno == 0)
                    return s_data(r, json_integer(v), out);
            }
            double d = strtod(s, &end);
            while (*end == ' ' || *end == '\t' || *end == '\n')
                end++;
            if (*s && !*end && errno == 0 && isfinite(d))
                return to_int ? s_trunc(r, line, d, out) : s_real(r, line, d, out);
        }
        if (def) {
            *out = jv_copy(def);
            return 0;
        }
        return to_int ? s_data(r, json_integer(0), out) : s_real(r, line, 0.0, out);
    }
    if (!strcmp(name, "format")) {
        jv_t fmt;
        if (s_to_str(r, val, &fmt) < 0)
            return -1;
        json_t *tuple = NULL;
        bool kw = names && n_args > 0 && names[0];
        tuple = kw ? json_object() : json_array();
        for (int i = 0; tuple && i < n_args; i++) {
            json_t *j = jv_to_json(&args[i]);
            if (!j || (kw ? json_object_set_new(tuple, names[i] ? names[i] : "", j)
                          : json_array_append_new(tuple, j)) < 0) {
                json_decref(tuple);
                tuple = NULL;
            }
        }
        if (!tuple) {
            jv_free(&fmt);
            return jinja_oom(r);
        }
        jv_t t = jv_data(tuple);
        int rc = jinja_str_format(r, line, json_string_value(fmt.j), json_string_length(fmt.j),
                                  &t, out);
        jv_free(&t);
        jv_free(&fmt);
        return rc;
    }
    /* string filters */
    jv_t sv;
    if (s_to_str(r, val, &sv) < 0)
        return -1;
    const char *s = json_string_value(sv.j);
    size_t len = json_string_length(sv.j);
    jbuf_t b = {0};
    int rc = 0;
    if (!strcmp(name, "upper"))
        ustr_upper(&b, s, len);
    else if (!strcmp(name, "lower"))
        ustr_lower(&b, s, len);
    else if (!strcmp(name, "capitalize"))
        ustr_capitalize(&b, s, len);
    else if (!strcmp(name, "title"))
        ustr_title(&b, s, len);
    else if (!strcmp(name, "trim")) {
        const jv_t *chars = s_arg(args, names, n_args, 0, "chars");
        size_t x, y;
        bool cs = chars && jv_is_str(chars);
        s_strip(s, len, cs ? json_string_value(chars->j) : NULL,
                cs ? json_string_length(chars->j) : 0, 3, &x, &y);
        jbuf_add(&b, s + x, y - x);
    } else if (!strcmp(name, "escape") || !strcmp(name, "e") || !strcmp(name, "forceescape")) {
        s_html_escape(&b, s, len);
    } else if (!strcmp(name, "replace")) {
        jv_t m = {.kind = JV_METHOD, .j = sv.j, .name = "replace"};
        rc = jinja_method_call(r, line, &m, args, names, n_args, out);
        jv_free(&sv);
        return rc;
    } else if (!strcmp(name, "indent")) {
        if (!jv_is_str(val)) {
            jv_free(&sv);
            return jr_fail(r, line, "indent: a '%s' is not a string", jv_type_name(val));
        }
        const jv_t *w = s_arg(args, names, n_args, 0, "width");
        bool first = s_arg_bool(s_arg(args, names, n_args, 1, "first"), false);
        bool blank = s_arg_bool(s_arg(args, names, n_args, 2, "blank"), false);
        rc = s_indent(r, &sv, w, first, blank, out);
        jv_free(&sv);
        return rc;
    } else if (!strcmp(name, "center")) {
        const jv_t *w = s_arg(args, names, n_args, 0, "width");
        int64_t width = w && jv_is_int(w) ? jv_int(w) : 80, n = (int64_t)ustr_ncp(s, len);
        if (width > 4096)
            width = 4096;
        /* Python's str.center: the odd space goes left when width is odd */
        int64_t pad = width > n ? width - n : 0, padl = pad / 2 + (pad & width & 1);
        int64_t padr = pad - padl;
        for (int64_t k = 0; k < padl; k++)
            jbuf_addc(&b, ' ');
        jbuf_add(&b, s, len);
        for (int64_t k = 0; k < padr; k++)
            jbuf_addc(&b, ' ');
    } else if (!strcmp(name, "truncate")) {
        const jv_t *lw = s_arg(args, names, n_args, 0, "length");
        bool killwords = s_arg_bool(s_arg(args, names, n_args, 1, "killwords"), false);
        const jv_t *endv = s_arg(args, names, n_args, 2, "end");
        const jv_t *leew = s_arg(args, names, n_args, 3, "leeway");
        int64_t length = lw && jv_is_int(lw) ? jv_int(lw) : 255;
        int64_t leeway = leew && jv_is_int(leew) ? jv_int(leew) : 5;
        const char *end = endv && jv_is_str(endv) ? json_string_value(endv->j) : "...";
        int64_t n = (int64_t)ustr_ncp(s, len), el = (int64_t)ustr_ncp(end, strlen(end));
        if (n <= length + leeway) {
            jbuf_add(&b, s, len);
        } else {
            int64_t keep = length - el > 0 ? length - el : 0;
            size_t cut = ustr_cp_off(s, len, (size_t)keep);
            if (!killwords) {
                size_t sp = cut;
                while (sp > 0 && s[sp - 1] != ' ')
                    sp--;
                if (sp > 0)
                    cut = sp - 1;
            }
            jbuf_add(&b, s, cut);
            jbuf_adds(&b, end);
        }
    } else if (!strcmp(name, "wordcount")) {
        int64_t words = 0;
        bool in = false;
        int32_t cp;
        for (size_t i = 0; i < len;) {
            i = ustr_next(s, len, i, &cp);
            bool w = cp > 127 || (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') ||
                     (cp >= 'A' && cp <= 'Z') || cp == '_';
            words += w && !in;
            in = w;
        }
        jv_free(&sv);
        return s_data(r, json_integer(words), out);
    } else {
        rc = jr_fail(r, line, "filter '%s' is not supported", name);
    }
    jv_free(&sv);
    if (rc < 0) {
        jbuf_free(&b);
        return -1;
    }
    return jinja_str_value(r, &b, out);
}

/* map / select / reject / selectattr / rejectattr. */
static int s_select(jrender_t *r, int line, const char *fname, const jv_t *val, jv_t *args,
                    char **names, int n_args, jv_t *out)
{
    bool is_map = !strcmp(fname, "map");
    bool by_attr = !strcmp(fname, "selectattr") || !strcmp(fname, "rejectattr");
    bool reject = fname[0] == 'r';
    const jv_t *attr = NULL;
    int first = 0; /* positional args consumed before the test / filter name */
    if (is_map) {
        attr = s_arg(args, names, n_args, -1, "attribute");
    } else if (by_attr) {
        attr = s_arg(args, names, n_args, 0, NULL);
        if (!attr)
            return jr_fail(r, line, "%s() needs an attribute", fname);
        first = 1;
    }
    const jv_t *fn = attr && is_map ? NULL : s_arg(args, names, n_args, first, NULL);
    if (fn && !jv_is_str(fn))
        return jr_fail(r, line, "%s(): the %s name must be a string", fname,
                       is_map ? "filter" : "test");
    const char *fn_name = fn ? json_string_value(fn->j) : NULL;
    if (fn_name && (is_map ? !jinja_filter_known(fn_name) : !jinja_test_known(fn_name)))
        return jr_fail(r, line, "%s '%s' is not supported", is_map ? "filter" : "test", fn_name);
    if (is_map && !attr && !fn_name)
        return jr_fail(r, line, "map() needs a filter name or attribute=");
    /* the remaining positional args go to the filter / test */
    int rest_at = -1, pos = 0;
    for (int i = 0; i < n_args; i++)
        if (!(names && names[i]) && pos++ == first + (fn ? 1 : 0)) {
            rest_at = i;
            break;
        }
    int n_rest = rest_at < 0 ? 0 : n_args - rest_at;
    /* Jinja: "if seq: for item in seq" -- a false value (none, 0) gives nothing */
    json_t *items = jv_truth(val) ? s_items(r, line, val) : json_array();
    if (!items)
        return -1;
    json_t *res = json_array();
    if (!res) {
        json_decref(items);
        return jinja_oom(r);
    }
    const jv_t *def = is_map ? s_arg(args, names, n_args, -1, "default") : NULL;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < json_array_size(items); i++) {
        jv_t e = jv_elem(json_array_get(items, i)), x = jv_undef(NULL), y;
        if (attr)
            rc = s_attr_path(r, line, &e, attr, &x);
        else
            x = jv_copy(&e);
        if (rc == 0 && is_map) {
            if (fn_name) {
                rc = jinja_filter_apply(r, line, fn_name, &x, rest_at < 0 ? NULL : args + rest_at,
                                        rest_at < 0 || !names ? NULL : names + rest_at, n_rest,
                                        &y);
            } else {
                y = x.kind == JV_UNDEF && def ? jv_copy(def) : jv_copy(&x);
            }
            if (rc == 0) {
                json_t *j = jv_to_json(&y);
                if (!j || json_array_append_new(res, j) < 0)
                    rc = jr_fail(r, line, "map(): a value that cannot be stored");
                jv_free(&y);
            }
        } else if (rc == 0) {
            bool t = jv_truth(&x);
            if (fn_name)
                rc = jinja_test_apply(r, line, fn_name, &x, rest_at < 0 ? NULL : args + rest_at,
                                      n_rest, &t);
            if (rc == 0 && t != reject && json_array_append(res, e.j) < 0)
                rc = jinja_oom(r);
        }
        jv_free(&x);
        jv_free(&e);
    }
    json_decref(items);
    if (rc < 0) {
        json_decref(res);
        return -1;
    }
    *out = jv_data(res);
    return 0;
}
