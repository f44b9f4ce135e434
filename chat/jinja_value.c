/* jinja_value: values as Python sees them: truth, str() and repr(),
 * json.dumps (transformers' tojson), == and ordering (bool is an int,
 * 1 == 1.0), and Python's float formatting.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "chat/jinja_private.h"
#include "core/mem.h"

bool jv_is_int(const jv_t *v)
{
    return v->kind == JV_DATA && (json_is_integer(v->j) || json_is_boolean(v->j));
}

bool jv_is_num(const jv_t *v) { return jv_is_int(v) || jv_is(v, JSON_REAL); }

int64_t jv_int(const jv_t *v)
{
    if (json_is_integer(v->j))
        return json_integer_value(v->j);
    return json_is_true(v->j) ? 1 : 0;
}

double jv_num(const jv_t *v)
{
    if (json_is_real(v->j))
        return json_real_value(v->j);
    return (double)jv_int(v);
}

jv_t jv_copy(const jv_t *v)
{
    jv_t c = *v;
    if (c.j)
        json_incref(c.j);
    return c;
}

void jv_free(jv_t *v)
{
    json_decref(v->j);
    *v = jv_undef(NULL);
}

bool jv_truth(const jv_t *v)
{
    if (v->gen)
        return true;
    switch (v->kind) {
    case JV_UNDEF:
        return false;
    case JV_DATA:
        switch (json_typeof(v->j)) {
        case JSON_NULL: case JSON_FALSE: return false;
        case JSON_TRUE: return true;
        case JSON_INTEGER: return json_integer_value(v->j) != 0;
        case JSON_REAL: return json_real_value(v->j) != 0.0;
        case JSON_STRING: return json_string_length(v->j) > 0;
        case JSON_ARRAY: return json_array_size(v->j) > 0;
        case JSON_OBJECT: return json_object_size(v->j) > 0;
        }
        return false;
    default:
        return true;
    }
}

const char *jv_type_name(const jv_t *v)
{
    switch (v->kind) {
    case JV_UNDEF: return "Undefined";
    case JV_NS: return "Namespace";
    case JV_MACRO: case JV_CALLER: return "Macro";
    case JV_LOOP: return "LoopContext";
    case JV_FUNC: case JV_METHOD: return "builtin_function_or_method";
    case JV_DATA: break;
    }
    if (v->gen)
        return "generator";
    switch (json_typeof(v->j)) {
    case JSON_NULL: return "NoneType";
    case JSON_TRUE: case JSON_FALSE: return "bool";
    case JSON_INTEGER: return "int";
    case JSON_REAL: return "float";
    case JSON_STRING: return "str";
    case JSON_ARRAY: return "list";
    case JSON_OBJECT: return "dict";
    }
    return "object";
}

void jv_float_repr(jbuf_t *b, double d)
{
    if (isnan(d)) {
        jbuf_adds(b, "nan");
        return;
    }
    if (isinf(d)) {
        jbuf_adds(b, d < 0 ? "-inf" : "inf");
        return;
    }
    /* The shortest %e that reads back as d, then Python's layout: fixed for
     * exponents -4..15, else d.ddde+XX. */
    char e[64];
    int prec;
    for (prec = 0; prec < 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec, d);
        if (strtod(e, NULL) == d)
            break;
    }
    char digits[32];
    size_t nd = 0;
    const char *q = e;
    bool neg = *q == '-';
    if (neg)
        q++;
    for (; *q && *q != 'e'; q++)
        if (*q >= '0' && *q <= '9')
            digits[nd++] = *q;
    int exp = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = '\0';
    if (neg)
        jbuf_addc(b, '-');
    if (exp >= -5 + 1 && exp < 16) {
        if (exp < 0) {
            jbuf_adds(b, "0.");
            for (int k = 0; k < -exp - 1; k++)
                jbuf_addc(b, '0');
            jbuf_adds(b, digits);
        } else {
            for (int k = 0; k <= exp; k++)
                jbuf_addc(b, (size_t)k < nd ? digits[k] : '0');
            jbuf_addc(b, '.');
            if ((size_t)exp + 1 < nd)
                jbuf_adds(b, digits + exp + 1);
            else
                jbuf_addc(b, '0');
        }
        return;
    }
    jbuf_addc(b, digits[0]);
    if (nd > 1) {
        jbuf_addc(b, '.');
        jbuf_adds(b, digits + 1);
    }
    jbuf_addf(b, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
}

static bool s_printable(int32_t cp)
{
    if (cp == ' ')
        return true;
    utf8proc_category_t c = utf8proc_category(cp);
    return !(c == UTF8PROC_CATEGORY_CC || c == UTF8PROC_CATEGORY_CF ||
             c == UTF8PROC_CATEGORY_CS || c == UTF8PROC_CATEGORY_CO ||
             c == UTF8PROC_CATEGORY_CN || c == UTF8PROC_CATEGORY_ZL ||
             c == UTF8PROC_CATEGORY_ZP || c == UTF8PROC_CATEGORY_ZS);
}

static void s_str_repr(jbuf_t *b, const char *s, size_t len)
{
    bool has_sq = memchr(s, '\'', len) != NULL, has_dq = memchr(s, '"', len) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    jbuf_addc(b, q);
    int32_t cp;
    for (size_t i = 0; i < len;) {
        size_t j = ustr_next(s, len, i, &cp);
        if (cp == q || cp == '\\') {
            jbuf_addc(b, '\\');
            jbuf_addc(b, (char)cp);
        } else if (cp == '\n') {
            jbuf_adds(b, "\\n");
        } else if (cp == '\r') {
            jbuf_adds(b, "\\r");
        } else if (cp == '\t') {
            jbuf_adds(b, "\\t");
        } else if (j - i == 1 && (unsigned char)s[i] >= 0x80) {
            jbuf_addf(b, "\\x%02x", (unsigned char)s[i]);
        } else if (!s_printable(cp)) {
            if (cp < 0x100)
                jbuf_addf(b, "\\x%02x", (unsigned)cp);
            else if (cp < 0x10000)
                jbuf_addf(b, "\\u%04x", (unsigned)cp);
            else
                jbuf_addf(b, "\\U%08x", (unsigned)cp);
        } else {
            jbuf_add(b, s + i, j - i);
        }
        i = j;
    }
    jbuf_addc(b, q);
}

void jv_repr(jbuf_t *b, const json_t *j)
{
    if (j == jv_undef_marker()) {
        jbuf_adds(b, "Undefined");
        return;
    }
    switch (json_typeof(j)) {
    case JSON_STRING:
        s_str_repr(b, json_string_value(j), json_string_length(j));
        return;
    case JSON_ARRAY: {
        jbuf_addc(b, '[');
        for (size_t i = 0; i < json_array_size(j); i++) {
            if (i)
                jbuf_adds(b, ", ");
            jv_repr(b, json_array_get(j, i));
        }
        jbuf_addc(b, ']');
        return;
    }
    case JSON_OBJECT: {
        const char *k;
        json_t *v;
        bool first = true;
        jbuf_addc(b, '{');
        json_object_foreach((json_t *)j, k, v) {
            if (!first)
                jbuf_adds(b, ", ");
            first = false;
            s_str_repr(b, k, strlen(k));
            jbuf_adds(b, ": ");
            jv_repr(b, v);
        }
        jbuf_addc(b, '}');
        return;
    }
    default: {
        jv_t v = jv_data((json_t *)j);
        jv_str(b, &v);
    }
    }
}

void jv_str(jbuf_t *b, const jv_t *v)
{
    switch (v->kind) {
    case JV_UNDEF:
        return;
    case JV_NS:
        jbuf_adds(b, "<Namespace>");
        return;
    case JV_MACRO:
        jbuf_addf(b, "<Macro '%s'>", ((const node_t *)v->p)->str);
        return;
    case JV_CALLER:
        jbuf_adds(b, "<Macro 'caller'>");
        return;
    case JV_LOOP:
        jbuf_adds(b, "<LoopContext>");
        return;
    case JV_FUNC: case JV_METHOD:
        jbuf_addf(b, "<built-in method %s>", v->name);
        return;
    case JV_DATA:
        break;
    }
    if (v->gen) {
        jbuf_adds(b, "<generator object>");
        return;
    }
    const json_t *j = v->j;
    switch (json_typeof(j)) {
    case JSON_NULL: jbuf_adds(b, "None"); return;
    case JSON_TRUE: jbuf_adds(b, "True"); return;
    case JSON_FALSE: jbuf_adds(b, "False"); return;
    case JSON_INTEGER: jbuf_addf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(j)); return;
    case JSON_REAL: jv_float_repr(b, json_real_value(j)); return;
    case JSON_STRING: jbuf_add(b, json_string_value(j), json_string_length(j)); return;
    default: jv_repr(b, j);
    }
}

/* ---- json.dumps ------------------------------------------------------------ */
static void s_json_str(jbuf_t *b, const char *s, size_t len, bool ascii)
{
    jbuf_addc(b, '"');
    int32_t cp;
    for (size_t i = 0; i < len;) {
        size_t j = ustr_next(s, len, i, &cp);
        switch (cp) {
        case '"': jbuf_adds(b, "\\\""); break;
        case '\\': jbuf_adds(b, "\\\\"); break;
        case '\n': jbuf_adds(b, "\\n"); break;
        case '\r': jbuf_adds(b, "\\r"); break;
        case '\t': jbuf_adds(b, "\\t"); break;
        case '\b': jbuf_adds(b, "\\b"); break;
        case '\f': jbuf_adds(b, "\\f"); break;
        default:
            if (cp < 0x20 || (ascii && cp >= 0x7f)) {
                if (cp >= 0x10000) {
                    int32_t c = cp - 0x10000;
                    jbuf_addf(b, "\\u%04x\\u%04x", (unsigned)(0xd800 | (c >> 10)),
                              (unsigned)(0xdc00 | (c & 0x3ff)));
                } else {
                    jbuf_addf(b, "\\u%04x", (unsigned)cp);
                }
            } else {
                jbuf_add(b, s + i, j - i);
            }
        }
        i = j;
    }
    jbuf_addc(b, '"');
}

static void s_newline(jbuf_t *b, const tojson_opts_t *o, int level)
{
    jbuf_addc(b, '\n');
    for (int k = 0; k < level; k++) {
        if (o->indent_str)
            jbuf_adds(b, o->indent_str);
        else
            for (int s = 0; s < o->indent; s++)
                jbuf_addc(b, ' ');
    }
}

static int s_key_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int s_tojson(jbuf_t *b, const json_t *j, const tojson_opts_t *o, int level)
{
    bool ind = o->indent >= 0 || o->indent_str;
    const char *isep = o->item_sep ? o->item_sep : ind ? "," : ", ";
    const char *ksep = o->key_sep ? o->key_sep : ": ";
    if (level > 4096 || j == jv_undef_marker()) /* Undefined: not serializable */
        return -1;
    switch (json_typeof(j)) {
    case JSON_NULL: jbuf_adds(b, "null"); return 0;
    case JSON_TRUE: jbuf_adds(b, "true"); return 0;
    case JSON_FALSE: jbuf_adds(b, "false"); return 0;
    case JSON_INTEGER: jbuf_addf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(j)); return 0;
    case JSON_REAL: {
        double d = json_real_value(j);
        if (isnan(d))
            jbuf_adds(b, "NaN");
        else if (isinf(d))
            jbuf_adds(b, d < 0 ? "-Infinity" : "Infinity");
        else
            jv_float_repr(b, d);
        return 0;
    }
    case JSON_STRING:
        s_json_str(b, json_string_value(j), json_string_length(j), o->ensure_ascii);
        return 0;
    case JSON_ARRAY:
        if (json_array_size(j) == 0) {
            jbuf_adds(b, "[]");
            return 0;
        }
        jbuf_addc(b, '[');
        for (size_t i = 0; i < json_array_size(j); i++) {
            if (i)
                jbuf_adds(b, isep);
            if (ind)
                s_newline(b, o, level + 1);
            if (s_tojson(b, json_array_get(j, i), o, level + 1) < 0)
                return -1;
        }
        if (ind)
            s_newline(b, o, level);
        jbuf_addc(b, ']');
        return 0;
    case JSON_OBJECT: {
        size_t n = json_object_size(j);
        if (n == 0) {
            jbuf_adds(b, "{}");
            return 0;
        }
        const char **keys = mem_alloc(n * sizeof *keys);
        if (!keys) {
            b->failed = b->oom = true;
            return 0;
        }
        size_t k = 0;
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)j, key, v)
            keys[k++] = key;
        if (o->sort_keys)
            qsort(keys, n, sizeof *keys, s_key_cmp);
        jbuf_addc(b, '{');
        int rc = 0;
        for (size_t i = 0; i < n && rc == 0; i++) {
            if (i)
                jbuf_adds(b, isep);
            if (ind)
                s_newline(b, o, level + 1);
            s_json_str(b, keys[i], strlen(keys[i]), o->ensure_ascii);
            jbuf_adds(b, ksep);
            rc = s_tojson(b, json_object_get(j, keys[i]), o, level + 1);
        }
        mem_free(keys);
        if (rc < 0)
            return -1;
        if (ind)
            s_newline(b, o, level);
        jbuf_addc(b, '}');
        return 0;
    }
    }
    return 0;
}

int jv_tojson(jbuf_t *b, const json_t *j, const tojson_opts_t *o)
{
    return s_tojson(b, j, o, 0);
}

/* ---- comparisons ----------------------------------------------------------- */
static bool s_num(const json_t *j)
{
    return json_is_number(j) || json_is_boolean(j);
}

bool json_equal_py(const json_t *a, const json_t *b)
{
    if (a == jv_undef_marker() || b == jv_undef_marker())
        return a == b;
    if (s_num(a) && s_num(b)) {
        jv_t x = jv_data((json_t *)a), y = jv_data((json_t *)b);
        if (jv_is_int(&x) && jv_is_int(&y))
            return jv_int(&x) == jv_int(&y);
        return jv_num(&x) == jv_num(&y);
    }
    if (json_typeof(a) != json_typeof(b))
        return false;
    switch (json_typeof(a)) {
    case JSON_NULL: return true;
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b))
            return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!json_equal_py(json_array_get(a, i), json_array_get(b, i)))
                return false;
        return true;
    case JSON_OBJECT: {
        if (json_object_size(a) != json_object_size(b))
            return false;
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)a, k, v) {
            json_t *w = json_object_get(b, k);
            if (!w || !json_equal_py(v, w))
                return false;
        }
        return true;
    }
    default:
        return false;
    }
}

bool jv_equal(const jv_t *a, const jv_t *b)
{
    if (a->gen || b->gen)
        return a->gen && b->gen && a->j == b->j;
    if (a->kind == JV_DATA && b->kind == JV_DATA)
        return json_equal_py(a->j, b->j);
    if (a->kind != b->kind)
        return false;
    switch (a->kind) {
    case JV_UNDEF: return true;
    case JV_METHOD: return a->name == b->name && a->j == b->j && a->p == b->p;
    case JV_FUNC: return a->name == b->name;
    default: return a->p == b->p;
    }
}

int jv_order(const jv_t *a, const jv_t *b)
{
    if (a->kind == JV_UNDEF || b->kind == JV_UNDEF || a->gen || b->gen)
        return -2;
    if (jv_is_num(a) && jv_is_num(b)) {
        if (jv_is_int(a) && jv_is_int(b)) {
            int64_t x = jv_int(a), y = jv_int(b);
            return x < y ? -1 : x > y;
        }
        double x = jv_num(a), y = jv_num(b);
        return x < y ? -1 : x > y;
    }
    if (jv_is_str(a) && jv_is_str(b)) {
        size_t la = json_string_length(a->j), lb = json_string_length(b->j);
        int c = memcmp(json_string_value(a->j), json_string_value(b->j), la < lb ? la : lb);
        if (c)
            return c < 0 ? -1 : 1;
        return la < lb ? -1 : la > lb;
    }
    if (jv_is(a, JSON_ARRAY) && jv_is(b, JSON_ARRAY)) {
        size_t la = json_array_size(a->j), lb = json_array_size(b->j);
        for (size_t i = 0; i < la && i < lb; i++) {
            jv_t x = jv_elem_view(json_array_get(a->j, i)), y = jv_elem_view(json_array_get(b->j, i));
            if (json_equal_py(x.j, y.j))
                continue;
            return jv_order(&x, &y);
        }
        return la < lb ? -1 : la > lb;
    }
    return -2;
}

static json_t *s_marker;
static pthread_once_t s_marker_once = PTHREAD_ONCE_INIT;

static void s_marker_init(void)
{
    s_marker = json_object(); /* held for the process's life */
}

json_t *jv_undef_marker(void)
{
    pthread_once(&s_marker_once, s_marker_init);
    return s_marker;
}

jv_t jv_elem(json_t *e)
{
    if (e && e == jv_undef_marker())
        return jv_undef(NULL);
    return jv_data(json_incref(e));
}

jv_t jv_elem_view(json_t *e)
{
    if (e && e == jv_undef_marker())
        return jv_undef(NULL);
    return jv_data(e);
}

json_t *jv_to_json(const jv_t *v)
{
    if (v->kind == JV_DATA)
        return json_incref(v->j);
    if (v->kind == JV_UNDEF)
        return json_incref(jv_undef_marker());
    errno = EINVAL;
    return NULL;
}
