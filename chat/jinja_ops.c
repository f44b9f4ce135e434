/* jinja_ops: Python's operators on values: + - * / // % ** with int/float
 * rules and overflow checks, string and list concatenation and repetition,
 * "fmt" % args, in / not in, and comparisons.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "chat/jinja_private.h"
#include "core/mem.h"

/* ---- operators ----------------------------------------------------------------- */
static int s_type_err(jrender_t *r, int line, const char *op, const jv_t *a, const jv_t *b)
{
    return jr_fail(r, line, "unsupported operand type(s) for %s: '%s' and '%s'", op,
                   jv_type_name(a), jv_type_name(b));
}

int jinja_int_result(jrender_t *r, int line, bool overflow, int64_t v, jv_t *out)
{
    if (overflow)
        return jr_fail(r, line, "integer overflow");
    json_t *j = json_integer(v);
    if (!j)
        return jinja_oom(r);
    *out = jv_data(j);
    return 0;
}

int jinja_float_result(jrender_t *r, double v, jv_t *out)
{
    if (!isfinite(v))
        return jr_fail(r, 0, "a float result that is infinite or not a number");
    json_t *j = json_real(v);
    if (!j)
        return jinja_oom(r);
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
        return jinja_str_value(r, &b, out);
    }
    size_t n = json_array_size(seq->j);
    if (n && (uint64_t)k > (uint64_t)JINJA_RANGE_MAX / n)
        return jr_fail(r, line, "a list longer than %d elements", JINJA_RANGE_MAX);
    if (jinja_charge(r, line, (size_t)k * n) < 0)
        return -1;
    json_t *a = json_array();
    for (int64_t i = 0; a && i < k; i++)
        if (json_array_extend(a, seq->j) < 0) {
            json_decref(a);
            a = NULL;
        }
    if (!a)
        return jinja_oom(r);
    *out = jv_data(a);
    return 0;
}

int jinja_arith(jrender_t *r, int line, int op, const jv_t *a, const jv_t *b, jv_t *out)
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
                return jinja_int_result(r, line, ovf, z, out);
            }
            return jinja_float_result(r, fx + fy, out);
        case OP_SUB:
            if (ints)
                {
                bool ovf = __builtin_sub_overflow(x, y, &z);
                return jinja_int_result(r, line, ovf, z, out);
            }
            return jinja_float_result(r, fx - fy, out);
        case OP_MUL:
            if (ints)
                {
                bool ovf = __builtin_mul_overflow(x, y, &z);
                return jinja_int_result(r, line, ovf, z, out);
            }
            return jinja_float_result(r, fx * fy, out);
        case OP_DIV:
            if (fy == 0)
                return jr_fail(r, line, "division by zero");
            return jinja_float_result(r, fx / fy, out);
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
                return jinja_int_result(r, line, false, op == OP_MOD ? m : q, out);
            }
            {
                double m = fmod(fx, fy);
                if (m != 0 && ((m < 0) != (fy < 0)))
                    m += fy;
                return jinja_float_result(r, op == OP_MOD ? m : floor((fx - m) / fy + 0.5), out);
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
                return jinja_int_result(r, line, ovf, acc, out);
            }
            return jinja_float_result(r, pow(fx, fy), out);
        }
    }
    if (op == OP_ADD && jv_is_str(a)) {
        if (!jv_is_str(b))
            return jr_fail(r, line, "can only concatenate str (not \"%s\") to str",
                           jv_type_name(b));
        jbuf_t s = {0};
        jbuf_add(&s, json_string_value(a->j), json_string_length(a->j));
        jbuf_add(&s, json_string_value(b->j), json_string_length(b->j));
        return jinja_str_value(r, &s, out);
    }
    if (op == OP_ADD && jv_is(a, JSON_ARRAY)) {
        if (!jv_is(b, JSON_ARRAY))
            return jr_fail(r, line, "can only concatenate list (not \"%s\") to list",
                           jv_type_name(b));
        if (jinja_charge(r, line, json_array_size(a->j) + json_array_size(b->j)) < 0)
            return -1;
        json_t *c = json_array();
        if (!c || json_array_extend(c, a->j) < 0 || json_array_extend(c, b->j) < 0) {
            json_decref(c);
            return jinja_oom(r);
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
            if (jinja_charge(r, line, json_array_size(seq->j)) < 0)
                return -1;
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

int jinja_compare(jrender_t *r, int line, int op, const jv_t *a, const jv_t *b, bool *out)
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

int jinja_bool_result(jrender_t *r, bool v, jv_t *out)
{
    (void)r;
    *out = jv_data(json_boolean(v));
    return 0;
}

