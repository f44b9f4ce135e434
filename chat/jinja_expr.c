/* jinja_expr: Jinja2's expression grammar (parser.py): or, and, not,
 * comparisons (chained, in, not in), + -, ~, * / // %, **, unary - +,
 * primaries (literals, names, lists, tuples, dicts), postfix (.name, .0,
 * [i], [a:b:c], calls) and filters / tests. A filter, test or method name
 * outside the supported tables is refused here, by name.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "chat/jinja_parse_private.h"
#include "core/mem.h"

/* ---- expressions -------------------------------------------------------- */
static node_t *s_unary(parser_t *p, bool with_filter);
static node_t *s_postfix(parser_t *p, node_t *n);
static node_t *s_filter_expr(parser_t *p, node_t *n);

/* ( args ) into n (callee/operand already kid 0); '(' is current. */
static int s_call_args(parser_t *p, node_t *n)
{
    jp_next(p);
    bool kw_seen = false;
    while (!jp_is_op(p, ")")) {
        if (jp_is_op(p, "*") || jp_is_op(p, "**"))
            return jp_fail(p, "*args and **kwargs in calls are not supported"), -1;
        const char *kw = NULL;
        if (jp_cur(p)->type == TK_NAME && jp_peek(p, 1)->type == TK_OP &&
            strcmp(jp_peek(p, 1)->s, "=") == 0) {
            kw = jp_cur(p)->s;
            jp_next(p);
            jp_next(p);
            kw_seen = true;
        } else if (kw_seen) {
            return jp_fail(p, "a positional argument after a keyword argument"), -1;
        }
        node_t *a = jp_expr(p, true);
        if (!a || jp_add(p, n, a, kw) < 0)
            return -1;
        if (!jp_skip_op(p, ","))
            break;
    }
    return jp_expect_op(p, ")") ? 0 : -1;
}

static node_t *s_const(parser_t *p, json_t *v, int line)
{
    if (!v)
        return jp_oom(p);
    node_t *n = jp_node(p, N_CONST, line);
    if (!n) {
        json_decref(v);
        return NULL;
    }
    n->value = v;
    return n;
}

static node_t *s_primary(parser_t *p)
{
    const tk_t *t = jp_cur(p);
    int line = t->line;
    node_t *n = NULL;
    switch (t->type) {
    case TK_NAME:
        if (!strcmp(t->s, "true") || !strcmp(t->s, "True")) {
            jp_next(p);
            return s_const(p, json_true(), line);
        }
        if (!strcmp(t->s, "false") || !strcmp(t->s, "False")) {
            jp_next(p);
            return s_const(p, json_false(), line);
        }
        if (!strcmp(t->s, "none") || !strcmp(t->s, "None")) {
            jp_next(p);
            return s_const(p, json_null(), line);
        }
        if (!(n = jp_node(p, N_NAME, line)))
            return NULL;
        if (!(n->str = mem_strdup(t->s))) {
            jinja_node_free(n);
            return jp_oom(p);
        }
        jp_next(p);
        return n;
    case TK_STRING: {
        /* adjacent literals concatenate */
        jbuf_t b = {0};
        while (jp_cur(p)->type == TK_STRING) {
            jbuf_add(&b, jp_cur(p)->s, jp_cur(p)->len);
            jp_next(p);
        }
        if (b.failed) {
            jbuf_free(&b);
            return jp_oom(p);
        }
        n = s_const(p, json_stringn_nocheck(b.p ? b.p : "", b.len), line);
        jbuf_free(&b);
        return n;
    }
    case TK_INT:
        jp_next(p);
        return s_const(p, json_integer(t->i), line);
    case TK_FLOAT:
        if (!isfinite(t->f))
            return jp_fail(p, "number out of range");
        jp_next(p);
        return s_const(p, json_real(t->f), line);
    case TK_OP:
        if (!strcmp(t->s, "(")) {
            jp_next(p);
            n = jp_tuple(p, true, true);
            if (n && !jp_expect_op(p, ")")) {
                jinja_node_free(n);
                return NULL;
            }
            return n;
        }
        if (!strcmp(t->s, "[")) {
            jp_next(p);
            if (!(n = jp_node(p, N_LIST, line)))
                return NULL;
            while (!jp_is_op(p, "]")) {
                node_t *k = jp_expr(p, true);
                if (!k || jp_add(p, n, k, NULL) < 0)
                    goto fail;
                if (!jp_skip_op(p, ","))
                    break;
            }
            if (!jp_expect_op(p, "]"))
                goto fail;
            return n;
        }
        if (!strcmp(t->s, "{")) {
            jp_next(p);
            if (!(n = jp_node(p, N_DICT, line)))
                return NULL;
            while (!jp_is_op(p, "}")) {
                node_t *k = jp_expr(p, true);
                if (!k || jp_add(p, n, k, NULL) < 0 || !jp_expect_op(p, ":"))
                    goto fail;
                node_t *v = jp_expr(p, true);
                if (!v || jp_add(p, n, v, NULL) < 0)
                    goto fail;
                if (!jp_skip_op(p, ","))
                    break;
            }
            if (!jp_expect_op(p, "}"))
                goto fail;
            return n;
        }
        break;
    default:
        break;
    }
    return jp_fail(p, "unexpected %s", jp_tk_desc(t));
fail:
    jinja_node_free(n);
    return NULL;
}

static node_t *s_subscript(parser_t *p, node_t *obj, int line)
{
    /* '[' is current */
    jp_next(p);
    node_t *parts[3] = {NULL, NULL, NULL};
    int k = 0;
    bool slice = false;
    for (;;) {
        if (!jp_is_op(p, ":") && !jp_is_op(p, "]")) {
            if (!(parts[k] = jp_expr(p, true)))
                goto fail;
        }
        if (jp_is_op(p, ":") && k < 2) {
            slice = true;
            k++;
            jp_next(p);
            continue;
        }
        break;
    }
    if (!jp_expect_op(p, "]"))
        goto fail;
    if (!slice && !parts[0]) {
        jp_fail(p, "empty subscript");
        goto fail;
    }
    node_t *n = jp_wrap(p, slice ? N_SLICE : N_ITEM, obj, line);
    obj = NULL;
    if (!n)
        goto fail;
    for (int i = 0; i < (slice ? 3 : 1); i++) {
        node_t *part = parts[i];
        parts[i] = NULL;
        if (jp_add(p, n, part, NULL) < 0) {
            jinja_node_free(n);
            goto fail;
        }
    }
    return n;
fail:
    for (int i = 0; i < 3; i++)
        jinja_node_free(parts[i]);
    jinja_node_free(obj);
    return NULL;
}

static node_t *s_postfix(parser_t *p, node_t *n)
{
    while (n) {
        int line = jp_cur(p)->line;
        if (jp_is_op(p, ".")) {
            jp_next(p);
            const tk_t *t = jp_cur(p);
            if (t->type == TK_NAME) {
                node_t *a = jp_wrap(p, N_ATTR, n, line);
                if (!a)
                    return NULL;
                if (!(a->str = mem_strdup(t->s))) {
                    jinja_node_free(a);
                    return jp_oom(p);
                }
                jp_next(p);
                n = a;
            } else if (t->type == TK_INT) {
                node_t *a = jp_wrap(p, N_ITEM, n, line);
                if (!a)
                    return NULL;
                jp_next(p);
                node_t *idx = s_const(p, json_integer(t->i), line);
                if (!idx || jp_add(p, a, idx, NULL) < 0) {
                    jinja_node_free(a);
                    return NULL;
                }
                n = a;
            } else {
                jinja_node_free(n);
                return jp_fail(p, "expected a name after '.', got %s", jp_tk_desc(t));
            }
        } else if (jp_is_op(p, "[")) {
            n = s_subscript(p, n, line);
        } else if (jp_is_op(p, "(")) {
            if (n->type == N_ATTR && !jinja_method_known(n->str)) {
                jp_fail(p, "method '%s' is not supported", n->str);
                jinja_node_free(n);
                return NULL;
            }
            if (n->type == N_NAME) {
                if (p->n_calls == p->cap_calls) {
                    size_t cap = p->cap_calls ? p->cap_calls * 2 : 16;
                    struct call_check *v = mem_realloc(p->calls, cap * sizeof *v);
                    if (!v) {
                        jinja_node_free(n);
                        return jp_oom(p);
                    }
                    p->calls = v;
                    p->cap_calls = cap;
                }
                p->calls[p->n_calls++] = (struct call_check){n->str, line};
            }
            node_t *c = jp_wrap(p, N_CALL, n, line);
            if (!c)
                return NULL;
            if (s_call_args(p, c) < 0) {
                jinja_node_free(c);
                return NULL;
            }
            n = c;
        } else {
            break;
        }
    }
    return n;
}

node_t *jp_filter(parser_t *p, node_t *n)
{
    /* '|' consumed; n may be NULL (filter block / set block) */
    const tk_t *t = jp_cur(p);
    int line = t->line;
    if (t->type != TK_NAME) {
        jinja_node_free(n);
        return jp_fail(p, "expected a filter name after '|', got %s", jp_tk_desc(t));
    }
    /* dotted filter names (ns.filter) are not a thing here */
    if (!jinja_filter_known(t->s)) {
        jinja_node_free(n);
        return jp_fail(p, "filter '%s' is not supported", t->s);
    }
    node_t *f = jp_node(p, N_FILTER, line);
    if (!f || jp_add(p, f, n, NULL) < 0) {
        if (f)
            jinja_node_free(f);
        else
            jinja_node_free(n);
        return NULL;
    }
    if (!(f->str = mem_strdup(t->s))) {
        jinja_node_free(f);
        return jp_oom(p);
    }
    jp_next(p);
    if (jp_is_op(p, "(") && s_call_args(p, f) < 0) {
        jinja_node_free(f);
        return NULL;
    }
    return f;
}

static node_t *s_filter_expr(parser_t *p, node_t *n)
{
    while (n) {
        int line = jp_cur(p)->line;
        if (jp_skip_op(p, "|")) {
            n = jp_filter(p, n);
        } else if (jp_skip_name(p, "is")) {
            bool neg = jp_skip_name(p, "not");
            const tk_t *t = jp_cur(p);
            if (t->type != TK_NAME) {
                jinja_node_free(n);
                return jp_fail(p, "expected a test name after 'is', got %s", jp_tk_desc(t));
            }
            if (!jinja_test_known(t->s)) {
                jinja_node_free(n);
                return jp_fail(p, "test '%s' is not supported", t->s);
            }
            node_t *tn = jp_wrap(p, N_TEST, n, line);
            if (!tn)
                return NULL;
            tn->op = neg;
            if (!(tn->str = mem_strdup(t->s))) {
                jinja_node_free(tn);
                return jp_oom(p);
            }
            jp_next(p);
            const tk_t *a = jp_cur(p);
            if (jp_is_op(p, "(")) {
                if (s_call_args(p, tn) < 0) {
                    jinja_node_free(tn);
                    return NULL;
                }
            } else if ((a->type == TK_NAME || a->type == TK_STRING || a->type == TK_INT ||
                        a->type == TK_FLOAT || jp_is_op(p, "[") || jp_is_op(p, "{")) &&
                       !(a->type == TK_NAME &&
                         (!strcmp(a->s, "else") || !strcmp(a->s, "or") || !strcmp(a->s, "and") ||
                          !strcmp(a->s, "if") || !strcmp(a->s, "is") || !strcmp(a->s, "in") ||
                          !strcmp(a->s, "not")))) {
                node_t *arg = s_postfix(p, s_primary(p));
                if (!arg || jp_add(p, tn, arg, NULL) < 0) {
                    jinja_node_free(tn);
                    return NULL;
                }
            }
            n = tn;
        } else if (jp_is_op(p, "(")) {
            node_t *c = jp_wrap(p, N_CALL, n, line);
            if (!c)
                return NULL;
            if (s_call_args(p, c) < 0) {
                jinja_node_free(c);
                return NULL;
            }
            n = c;
        } else {
            break;
        }
    }
    return n;
}

static node_t *s_unary(parser_t *p, bool with_filter)
{
    int line = jp_cur(p)->line;
    node_t *n;
    if (!jp_enter(p))
        return NULL;
    if (jp_is_op(p, "-") || jp_is_op(p, "+")) {
        int op = jp_is_op(p, "-") ? OP_NEG : OP_POS;
        jp_next(p);
        n = s_unary(p, false);
        if (n && (n = jp_wrap(p, N_UNARY, n, line)))
            n->op = op;
    } else {
        n = s_primary(p);
    }
    n = s_postfix(p, n);
    if (with_filter)
        n = s_filter_expr(p, n);
    p->depth--;
    return n;
}

static node_t *s_binary(parser_t *p, node_t *l, int op, node_t *r, int line)
{
    if (!l || !r) {
        jinja_node_free(l);
        jinja_node_free(r);
        return NULL;
    }
    node_t *b = jp_wrap(p, N_BINARY, l, line);
    if (!b) {
        jinja_node_free(r);
        return NULL;
    }
    b->op = op;
    if (jp_add(p, b, r, NULL) < 0) {
        jinja_node_free(b);
        return NULL;
    }
    return b;
}

static node_t *s_pow(parser_t *p)
{
    node_t *n = s_unary(p, true);
    while (n && jp_is_op(p, "**")) {
        int line = jp_cur(p)->line;
        jp_next(p);
        n = s_binary(p, n, OP_POW, s_unary(p, true), line);
    }
    return n;
}

static node_t *s_math2(parser_t *p)
{
    node_t *n = s_pow(p);
    for (;;) {
        int line = jp_cur(p)->line, op;
        if (jp_is_op(p, "*")) op = OP_MUL;
        else if (jp_is_op(p, "/")) op = OP_DIV;
        else if (jp_is_op(p, "//")) op = OP_FLOORDIV;
        else if (jp_is_op(p, "%")) op = OP_MOD;
        else break;
        if (!n)
            break;
        jp_next(p);
        n = s_binary(p, n, op, s_pow(p), line);
    }
    return n;
}

static node_t *s_concat(parser_t *p)
{
    node_t *n = s_math2(p);
    while (n && jp_is_op(p, "~")) {
        int line = jp_cur(p)->line;
        jp_next(p);
        n = s_binary(p, n, OP_CONCAT, s_math2(p), line);
    }
    return n;
}

static node_t *s_math1(parser_t *p)
{
    node_t *n = s_concat(p);
    while (n && (jp_is_op(p, "+") || jp_is_op(p, "-"))) {
        int line = jp_cur(p)->line;
        int op = jp_is_op(p, "+") ? OP_ADD : OP_SUB;
        jp_next(p);
        n = s_binary(p, n, op, s_concat(p), line);
    }
    return n;
}

static node_t *s_compare(parser_t *p)
{
    int line = jp_cur(p)->line;
    node_t *n = s_math1(p);
    node_t *c = NULL;
    while (n) {
        int op;
        if (jp_is_op(p, "==")) op = OP_EQ;
        else if (jp_is_op(p, "!=")) op = OP_NE;
        else if (jp_is_op(p, "<")) op = OP_LT;
        else if (jp_is_op(p, "<=")) op = OP_LE;
        else if (jp_is_op(p, ">")) op = OP_GT;
        else if (jp_is_op(p, ">=")) op = OP_GE;
        else if (jp_is_name(p, "in")) op = OP_IN;
        else if (jp_is_name(p, "not") && jp_peek(p, 1)->type == TK_NAME &&
                 !strcmp(jp_peek(p, 1)->s, "in")) {
            op = OP_NOTIN;
            jp_next(p);
        } else
            break;
        jp_next(p);
        if (!c) {
            if (!(c = jp_wrap(p, N_COMPARE, n, line)))
                return NULL;
        }
        int *ops = mem_realloc(c->ops, (size_t)c->n_kids * sizeof *ops);
        if (!ops) {
            jinja_node_free(c);
            return jp_oom(p);
        }
        c->ops = ops;
        ops[c->n_kids - 1] = op;
        node_t *r = s_math1(p);
        if (!r || jp_add(p, c, r, NULL) < 0) {
            jinja_node_free(c);
            return NULL;
        }
    }
    return c ? c : n;
}

static node_t *s_not(parser_t *p)
{
    int line = jp_cur(p)->line;
    if (jp_is_name(p, "not")) {
        jp_next(p);
        if (!jp_enter(p))
            return NULL;
        node_t *n = s_not(p);
        p->depth--;
        if (n && (n = jp_wrap(p, N_UNARY, n, line)))
            n->op = OP_NOT;
        return n;
    }
    return s_compare(p);
}

static node_t *s_and(parser_t *p)
{
    node_t *n = s_not(p);
    while (n && jp_is_name(p, "and")) {
        int line = jp_cur(p)->line;
        jp_next(p);
        n = s_binary(p, n, OP_AND, s_not(p), line);
    }
    return n;
}

static node_t *s_or(parser_t *p)
{
    node_t *n = s_and(p);
    while (n && jp_is_name(p, "or")) {
        int line = jp_cur(p)->line;
        jp_next(p);
        n = s_binary(p, n, OP_OR, s_and(p), line);
    }
    return n;
}

node_t *jp_expr(parser_t *p, bool with_cond)
{
    if (!jp_enter(p))
        return NULL;
    node_t *n = s_or(p);
    while (n && with_cond && jp_is_name(p, "if")) {
        int line = jp_cur(p)->line;
        jp_next(p);
        node_t *c = jp_node(p, N_COND, line);
        if (!c || jp_add(p, c, n, NULL) < 0) {
            if (!c)
                jinja_node_free(n);
            jinja_node_free(c);
            n = NULL;
            break;
        }
        n = c;
        node_t *cond = s_or(p);
        if (!cond || jp_add(p, c, cond, NULL) < 0) {
            jinja_node_free(c);
            n = NULL;
            break;
        }
        node_t *e = NULL;
        if (jp_skip_name(p, "else") && !(e = jp_expr(p, true))) {
            jinja_node_free(c);
            n = NULL;
            break;
        }
        if (jp_add(p, c, e, NULL) < 0) {
            n = NULL;
            jinja_node_free(c);
            break;
        }
    }
    p->depth--;
    return n;
}

/* Whether the current token ends a tuple (a tag end, a closing bracket...). */
static bool s_tuple_end(parser_t *p)
{
    const tk_t *t = jp_cur(p);
    if (t->type == TK_VAR_END || t->type == TK_BLOCK_END || t->type == TK_EOF)
        return true;
    if (t->type == TK_OP && (!strcmp(t->s, ")") || !strcmp(t->s, "]") || !strcmp(t->s, "=")))
        return true;
    return t->type == TK_NAME && (!strcmp(t->s, "in") || !strcmp(t->s, "if") ||
                                  !strcmp(t->s, "recursive"));
}

/* expr or expr, expr... (a tuple); explicit_only: inside parentheses, where
 * "()" is the empty tuple. */
node_t *jp_tuple(parser_t *p, bool with_cond, bool explicit_only)
{
    int line = jp_cur(p)->line;
    if (explicit_only && jp_is_op(p, ")"))
        return jp_node(p, N_TUPLE, line);
    node_t *first = jp_expr(p, with_cond);
    if (!first || !jp_is_op(p, ","))
        return first;
    node_t *t = jp_wrap(p, N_TUPLE, first, line);
    if (!t)
        return NULL;
    while (jp_skip_op(p, ",")) {
        if (s_tuple_end(p))
            break;
        node_t *k = jp_expr(p, with_cond);
        if (!k || jp_add(p, t, k, NULL) < 0) {
            jinja_node_free(t);
            return NULL;
        }
    }
    return t;
}

