/* jinja_test: Jinja2's built-in tests (x is defined, x is string, ...) that
 * chat templates use. A test name outside the table is refused when the
 * template is parsed. Undefined is iterable and a sequence, as in Jinja.
 */
#include <string.h>

#include "chat/jinja_private.h"

static const char *const S_TESTS[] = {
    "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "==", "escaped", "even",
    "false", "float", "ge", ">=", "gt", "greaterthan", ">", "in", "integer", "iterable", "le",
    "<=", "lower", "lt", "lessthan", "<", "mapping", "ne", "!=", "none", "number", "odd",
    "sameas", "sequence", "string", "true", "undefined", "upper",
};

bool jinja_test_known(const char *name)
{
    for (size_t i = 0; i < sizeof S_TESTS / sizeof *S_TESTS; i++)
        if (!strcmp(S_TESTS[i], name))
            return true;
    return false;
}

int jinja_test_apply(jrender_t *r, int line, const char *name, const jv_t *val, jv_t *args,
                     int n_args, bool *out)
{
    const jv_t *a = n_args > 0 ? &args[0] : NULL;
    const json_t *j = val->kind == JV_DATA ? val->j : NULL;
    *out = false;
    if (!strcmp(name, "defined")) *out = val->kind != JV_UNDEF;
    else if (!strcmp(name, "undefined")) *out = val->kind == JV_UNDEF;
    else if (!strcmp(name, "none")) *out = j && json_is_null(j);
    else if (!strcmp(name, "true")) *out = j && json_is_true(j);
    else if (!strcmp(name, "false")) *out = j && json_is_false(j);
    else if (!strcmp(name, "boolean")) *out = j && json_is_boolean(j);
    else if (!strcmp(name, "string")) *out = j && json_is_string(j);
    else if (!strcmp(name, "mapping")) *out = j && json_is_object(j);
    else if (!strcmp(name, "number")) *out = jv_is_num(val);
    else if (!strcmp(name, "integer")) *out = j && json_is_integer(j);
    else if (!strcmp(name, "float")) *out = j && json_is_real(j);
    else if (!strcmp(name, "iterable"))
        *out = val->kind == JV_UNDEF || (j && (json_is_string(j) || json_is_array(j) ||
                                               json_is_object(j)));
    else if (!strcmp(name, "sequence"))
        *out = val->kind == JV_UNDEF || (j && !val->gen && (json_is_string(j) || json_is_array(j) ||
                                               json_is_object(j)));
    else if (!strcmp(name, "callable"))
        *out = val->kind == JV_MACRO || val->kind == JV_CALLER || val->kind == JV_FUNC ||
               val->kind == JV_METHOD;
    else if (!strcmp(name, "escaped")) *out = false;
    else if (!strcmp(name, "lower") || !strcmp(name, "upper")) {
        jbuf_t s = {0}, m = {0};
        jv_str(&s, val);
        if (name[0] == 'l')
            ustr_lower(&m, s.p ? s.p : "", s.len);
        else
            ustr_upper(&m, s.p ? s.p : "", s.len);
        bool cased = false;
        for (size_t i = 0; i < s.len; i++)
            cased |= (s.p[i] >= 'a' && s.p[i] <= 'z') || (s.p[i] >= 'A' && s.p[i] <= 'Z') ||
                     (unsigned char)s.p[i] >= 0x80;
        *out = cased && s.len == m.len && (s.len == 0 || !memcmp(s.p, m.p, s.len));
        jbuf_free(&s);
        jbuf_free(&m);
    } else if (!strcmp(name, "even") || !strcmp(name, "odd") || !strcmp(name, "divisibleby")) {
        if (!jv_is_int(val))
            return jr_fail(r, line, "test '%s' of a '%s'", name, jv_type_name(val));
        int64_t v = jv_int(val), d = 2;
        if (name[0] == 'd') {
            if (!a || !jv_is_int(a) || jv_int(a) == 0)
                return jr_fail(r, line, "divisibleby needs a non-zero integer");
            d = jv_int(a);
        }
        int64_t m = d == -1 ? 0 : v % d;
        *out = name[0] == 'o' ? m != 0 : m == 0;
    } else if (!strcmp(name, "sameas")) {
        if (!a)
            return jr_fail(r, line, "sameas needs a value");
        *out = val->kind == a->kind &&
               (val->kind != JV_DATA ? val->p == a->p
                : json_is_null(j) || json_is_boolean(j) ? json_typeof(j) == json_typeof(a->j)
                                                        : j == a->j);
    } else if (!strcmp(name, "in")) {
        if (!a)
            return jr_fail(r, line, "test 'in' needs a value");
        bool t = false;
        /* same rules as the operator */
        if (a->kind == JV_DATA && json_is_string(a->j) && jv_is_str(val)) {
            size_t hl = json_string_length(a->j), nl = json_string_length(val->j);
            t = nl == 0 || (nl <= hl && memmem(json_string_value(a->j), hl,
                                               json_string_value(val->j), nl));
        } else if (jv_is(a, JSON_ARRAY)) {
            for (size_t i = 0; i < json_array_size(a->j) && !t; i++) {
                jv_t e = jv_elem_view(json_array_get(a->j, i));
                t = jv_equal(val, &e);
            }
        } else if (jv_is(a, JSON_OBJECT)) {
            t = jv_is_str(val) && json_object_get(a->j, json_string_value(val->j));
        } else if (a->kind != JV_UNDEF) {
            return jr_fail(r, line, "argument of type '%s' is not iterable", jv_type_name(a));
        }
        *out = t;
    } else {
        if (!a)
            return jr_fail(r, line, "test '%s' needs a value", name);
        if (!strcmp(name, "eq") || !strcmp(name, "equalto") || !strcmp(name, "=="))
            *out = jv_equal(val, a);
        else if (!strcmp(name, "ne") || !strcmp(name, "!="))
            *out = !jv_equal(val, a);
        else {
            int c = jv_order(val, a);
            if (c == -2)
                return jr_fail(r, line, "test '%s' between '%s' and '%s'", name,
                               jv_type_name(val), jv_type_name(a));
            if (!strcmp(name, "lt") || !strcmp(name, "lessthan") || !strcmp(name, "<"))
                *out = c < 0;
            else if (!strcmp(name, "le") || !strcmp(name, "<="))
                *out = c <= 0;
            else if (!strcmp(name, "gt") || !strcmp(name, "greaterthan") || !strcmp(name, ">"))
                *out = c > 0;
            else if (!strcmp(name, "ge") || !strcmp(name, ">="))
                *out = c >= 0;
            else
                return jr_fail(r, line, "test '%s' is not supported", name);
        }
    }
    return 0;
}
