/* jinja_parse: tokens to a syntax tree, Jinja2's grammar (parser.py) for the
 * statements and expressions chat templates use. Everything else is refused
 * here, by name, so that a template the renderer cannot handle fails when it
 * is loaded rather than at its first request. Nesting is bounded
 * (JINJA_PARSE_DEPTH_MAX) so that a hostile template cannot overflow the stack.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "chat/jinja_private.h"
#include "core/mem.h"

typedef struct parser {
    const tk_t *t;
    size_t n, i;
    int depth;
    err_t *err;
    bool failed;
    char **bound;       /* names a template defines (macros, sets, loop vars, params) */
    size_t n_bound, cap_bound;
    struct call_check { const char *name; int line; } *calls; /* names called */
    size_t n_calls, cap_calls;
    int for_depth;      /* break/continue only inside a loop */
} parser_t;

static const tk_t *s_cur(parser_t *p) { return &p->t[p->i < p->n ? p->i : p->n - 1]; }
static const tk_t *s_peek(parser_t *p, size_t k)
{
    return &p->t[p->i + k < p->n ? p->i + k : p->n - 1];
}
static void s_next(parser_t *p)
{
    if (p->i < p->n - 1)
        p->i++;
}

static node_t *s_fail(parser_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static node_t *s_fail(parser_t *p, const char *fmt, ...)
{
    if (p->failed)
        return NULL;
    p->failed = true;
    char msg[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    err_set(p->err, errno == ENOMEM ? ENOMEM : EINVAL, "chat template line %d: %s",
            s_cur(p)->line, msg);
    return NULL;
}

static node_t *s_oom(parser_t *p)
{
    errno = ENOMEM;
    if (!p->failed) {
        p->failed = true;
        err_set(p->err, ENOMEM, "chat template: out of memory");
    }
    return NULL;
}

static bool s_is_op(parser_t *p, const char *op)
{
    const tk_t *t = s_cur(p);
    return t->type == TK_OP && strcmp(t->s, op) == 0;
}
static bool s_is_name(parser_t *p, const char *name)
{
    const tk_t *t = s_cur(p);
    return t->type == TK_NAME && strcmp(t->s, name) == 0;
}
static bool s_skip_op(parser_t *p, const char *op)
{
    if (!s_is_op(p, op))
        return false;
    s_next(p);
    return true;
}
static bool s_skip_name(parser_t *p, const char *name)
{
    if (!s_is_name(p, name))
        return false;
    s_next(p);
    return true;
}

static const char *s_tk_desc(const tk_t *t)
{
    switch (t->type) {
    case TK_EOF: return "end of template";
    case TK_TEXT: return "template text";
    case TK_VAR_BEGIN: return "'{{'";
    case TK_VAR_END: return "'}}'";
    case TK_BLOCK_BEGIN: return "'{%'";
    case TK_BLOCK_END: return "'%}'";
    case TK_STRING: return "a string";
    case TK_INT: return "an integer";
    case TK_FLOAT: return "a number";
    default: return t->s;
    }
}

static bool s_expect_op(parser_t *p, const char *op)
{
    if (s_skip_op(p, op))
        return true;
    s_fail(p, "expected '%s', got %s", op, s_tk_desc(s_cur(p)));
    return false;
}

static node_t *s_node(parser_t *p, node_type_t type, int line)
{
    node_t *n = mem_calloc(1, sizeof *n);
    if (!n)
        return s_oom(p);
    n->type = type;
    n->line = line;
    n->height = 1;
    return n;
}

/* Appends kid (may be NULL when the type allows) with an optional name. */
static int s_add(parser_t *p, node_t *n, node_t *kid, const char *name)
{
    if (kid && kid->height >= JINJA_TREE_HEIGHT_MAX) {
        jinja_node_free(kid);
        s_fail(p, "expression or blocks nested deeper than %d levels", JINJA_TREE_HEIGHT_MAX);
        return -1;
    }
    if (kid && kid->height + 1 > n->height)
        n->height = kid->height + 1;
    node_t **kids = mem_realloc(n->kids, (size_t)(n->n_kids + 1) * sizeof *kids);
    if (!kids)
        goto oom;
    n->kids = kids;
    if (name || n->names) {
        char **names = mem_realloc(n->names, (size_t)(n->n_kids + 1) * sizeof *names);
        if (!names)
            goto oom;
        if (!n->names)
            memset(names, 0, (size_t)(n->n_kids + 1) * sizeof *names);
        n->names = names;
        n->names[n->n_kids] = NULL;
        if (name && !(n->names[n->n_kids] = mem_strdup(name)))
            goto oom;
    }
    n->kids[n->n_kids++] = kid;
    return 0;
oom:
    jinja_node_free(kid);
    s_oom(p);
    return -1;
}

void jinja_node_free(node_t *n)
{
    if (!n)
        return;
    for (int i = 0; i < n->n_kids; i++) {
        jinja_node_free(n->kids[i]);
        if (n->names)
            mem_free(n->names[i]);
    }
    mem_free(n->kids);
    mem_free(n->names);
    mem_free(n->ops);
    mem_free(n->str);
    json_decref(n->value);
    mem_free(n);
}

static int s_bind(parser_t *p, const char *name)
{
    if (p->n_bound == p->cap_bound) {
        size_t cap = p->cap_bound ? p->cap_bound * 2 : 16;
        char **v = mem_realloc(p->bound, cap * sizeof *v);
        if (!v)
            return s_oom(p), -1;
        p->bound = v;
        p->cap_bound = cap;
    }
    if (!(p->bound[p->n_bound] = mem_strdup(name)))
        return s_oom(p), -1;
    p->n_bound++;
    return 0;
}

static bool s_enter(parser_t *p)
{
    if (++p->depth > JINJA_PARSE_DEPTH_MAX) {
        s_fail(p, "nesting deeper than %d levels", JINJA_PARSE_DEPTH_MAX);
        return false;
    }
    return true;
}

/* ---- expressions -------------------------------------------------------- */
static node_t *s_expr(parser_t *p, bool with_cond);
static node_t *s_tuple(parser_t *p, bool with_cond, bool explicit_only);
static node_t *s_unary(parser_t *p, bool with_filter);
static node_t *s_postfix(parser_t *p, node_t *n);
static node_t *s_filter_expr(parser_t *p, node_t *n);

static const char *const S_GLOBALS[] = {
    "range", "namespace", "dict", "raise_exception", "strftime_now", "caller", "loop",
};

/* ( args ) into n (callee/operand already kid 0); '(' is current. */
static int s_call_args(parser_t *p, node_t *n)
{
    s_next(p);
    bool kw_seen = false;
    while (!s_is_op(p, ")")) {
        if (s_is_op(p, "*") || s_is_op(p, "**"))
            return s_fail(p, "*args and **kwargs in calls are not supported"), -1;
        const char *kw = NULL;
        if (s_cur(p)->type == TK_NAME && s_peek(p, 1)->type == TK_OP &&
            strcmp(s_peek(p, 1)->s, "=") == 0) {
            kw = s_cur(p)->s;
            s_next(p);
            s_next(p);
            kw_seen = true;
        } else if (kw_seen) {
            return s_fail(p, "a positional argument after a keyword argument"), -1;
        }
        node_t *a = s_expr(p, true);
        if (!a || s_add(p, n, a, kw) < 0)
            return -1;
        if (!s_skip_op(p, ","))
            break;
    }
    return s_expect_op(p, ")") ? 0 : -1;
}

static node_t *s_const(parser_t *p, json_t *v, int line)
{
    if (!v)
        return s_oom(p);
    node_t *n = s_node(p, N_CONST, line);
    if (!n) {
        json_decref(v);
        return NULL;
    }
    n->value = v;
    return n;
}

static node_t *s_primary(parser_t *p)
{
    const tk_t *t = s_cur(p);
    int line = t->line;
    node_t *n = NULL;
    switch (t->type) {
    case TK_NAME:
        if (!strcmp(t->s, "true") || !strcmp(t->s, "True")) {
            s_next(p);
            return s_const(p, json_true(), line);
        }
        if (!strcmp(t->s, "false") || !strcmp(t->s, "False")) {
            s_next(p);
            return s_const(p, json_false(), line);
        }
        if (!strcmp(t->s, "none") || !strcmp(t->s, "None")) {
            s_next(p);
            return s_const(p, json_null(), line);
        }
        if (!(n = s_node(p, N_NAME, line)))
            return NULL;
        if (!(n->str = mem_strdup(t->s))) {
            jinja_node_free(n);
            return s_oom(p);
        }
        s_next(p);
        return n;
    case TK_STRING: {
        /* adjacent literals concatenate */
        jbuf_t b = {0};
        while (s_cur(p)->type == TK_STRING) {
            jbuf_add(&b, s_cur(p)->s, s_cur(p)->len);
            s_next(p);
        }
        if (b.failed) {
            jbuf_free(&b);
            return s_oom(p);
        }
        n = s_const(p, json_stringn_nocheck(b.p ? b.p : "", b.len), line);
        jbuf_free(&b);
        return n;
    }
    case TK_INT:
        s_next(p);
        return s_const(p, json_integer(t->i), line);
    case TK_FLOAT:
        if (!isfinite(t->f))
            return s_fail(p, "number out of range");
        s_next(p);
        return s_const(p, json_real(t->f), line);
    case TK_OP:
        if (!strcmp(t->s, "(")) {
            s_next(p);
            n = s_tuple(p, true, true);
            if (n && !s_expect_op(p, ")")) {
                jinja_node_free(n);
                return NULL;
            }
            return n;
        }
        if (!strcmp(t->s, "[")) {
            s_next(p);
            if (!(n = s_node(p, N_LIST, line)))
                return NULL;
            while (!s_is_op(p, "]")) {
                node_t *k = s_expr(p, true);
                if (!k || s_add(p, n, k, NULL) < 0)
                    goto fail;
                if (!s_skip_op(p, ","))
                    break;
            }
            if (!s_expect_op(p, "]"))
                goto fail;
            return n;
        }
        if (!strcmp(t->s, "{")) {
            s_next(p);
            if (!(n = s_node(p, N_DICT, line)))
                return NULL;
            while (!s_is_op(p, "}")) {
                node_t *k = s_expr(p, true);
                if (!k || s_add(p, n, k, NULL) < 0 || !s_expect_op(p, ":"))
                    goto fail;
                node_t *v = s_expr(p, true);
                if (!v || s_add(p, n, v, NULL) < 0)
                    goto fail;
                if (!s_skip_op(p, ","))
                    break;
            }
            if (!s_expect_op(p, "}"))
                goto fail;
            return n;
        }
        break;
    default:
        break;
    }
    return s_fail(p, "unexpected %s", s_tk_desc(t));
fail:
    jinja_node_free(n);
    return NULL;
}

/* Wraps n as kid 0 of a new node. */
static node_t *s_wrap(parser_t *p, node_type_t type, node_t *n, int line)
{
    node_t *w = s_node(p, type, line);
    if (!w || s_add(p, w, n, NULL) < 0) {
        if (w)
            jinja_node_free(w);
        else
            jinja_node_free(n);
        return NULL;
    }
    return w;
}

static node_t *s_subscript(parser_t *p, node_t *obj, int line)
{
    /* '[' is current */
    s_next(p);
    node_t *parts[3] = {NULL, NULL, NULL};
    int k = 0;
    bool slice = false;
    for (;;) {
        if (!s_is_op(p, ":") && !s_is_op(p, "]")) {
            if (!(parts[k] = s_expr(p, true)))
                goto fail;
        }
        if (s_is_op(p, ":") && k < 2) {
            slice = true;
            k++;
            s_next(p);
            continue;
        }
        break;
    }
    if (!s_expect_op(p, "]"))
        goto fail;
    if (!slice && !parts[0]) {
        s_fail(p, "empty subscript");
        goto fail;
    }
    node_t *n = s_wrap(p, slice ? N_SLICE : N_ITEM, obj, line);
    obj = NULL;
    if (!n)
        goto fail;
    for (int i = 0; i < (slice ? 3 : 1); i++) {
        node_t *part = parts[i];
        parts[i] = NULL;
        if (s_add(p, n, part, NULL) < 0) {
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
        int line = s_cur(p)->line;
        if (s_is_op(p, ".")) {
            s_next(p);
            const tk_t *t = s_cur(p);
            if (t->type == TK_NAME) {
                node_t *a = s_wrap(p, N_ATTR, n, line);
                if (!a)
                    return NULL;
                if (!(a->str = mem_strdup(t->s))) {
                    jinja_node_free(a);
                    return s_oom(p);
                }
                s_next(p);
                n = a;
            } else if (t->type == TK_INT) {
                node_t *a = s_wrap(p, N_ITEM, n, line);
                if (!a)
                    return NULL;
                s_next(p);
                node_t *idx = s_const(p, json_integer(t->i), line);
                if (!idx || s_add(p, a, idx, NULL) < 0) {
                    jinja_node_free(a);
                    return NULL;
                }
                n = a;
            } else {
                jinja_node_free(n);
                return s_fail(p, "expected a name after '.', got %s", s_tk_desc(t));
            }
        } else if (s_is_op(p, "[")) {
            n = s_subscript(p, n, line);
        } else if (s_is_op(p, "(")) {
            if (n->type == N_ATTR && !jinja_method_known(n->str)) {
                s_fail(p, "method '%s' is not supported", n->str);
                jinja_node_free(n);
                return NULL;
            }
            if (n->type == N_NAME) {
                if (p->n_calls == p->cap_calls) {
                    size_t cap = p->cap_calls ? p->cap_calls * 2 : 16;
                    struct call_check *v = mem_realloc(p->calls, cap * sizeof *v);
                    if (!v) {
                        jinja_node_free(n);
                        return s_oom(p);
                    }
                    p->calls = v;
                    p->cap_calls = cap;
                }
                p->calls[p->n_calls++] = (struct call_check){n->str, line};
            }
            node_t *c = s_wrap(p, N_CALL, n, line);
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

static node_t *s_filter(parser_t *p, node_t *n)
{
    /* '|' consumed; n may be NULL (filter block / set block) */
    const tk_t *t = s_cur(p);
    int line = t->line;
    if (t->type != TK_NAME) {
        jinja_node_free(n);
        return s_fail(p, "expected a filter name after '|', got %s", s_tk_desc(t));
    }
    /* dotted filter names (ns.filter) are not a thing here */
    if (!jinja_filter_known(t->s)) {
        jinja_node_free(n);
        return s_fail(p, "filter '%s' is not supported", t->s);
    }
    node_t *f = s_node(p, N_FILTER, line);
    if (!f || s_add(p, f, n, NULL) < 0) {
        if (f)
            jinja_node_free(f);
        else
            jinja_node_free(n);
        return NULL;
    }
    if (!(f->str = mem_strdup(t->s))) {
        jinja_node_free(f);
        return s_oom(p);
    }
    s_next(p);
    if (s_is_op(p, "(") && s_call_args(p, f) < 0) {
        jinja_node_free(f);
        return NULL;
    }
    return f;
}

static node_t *s_filter_expr(parser_t *p, node_t *n)
{
    while (n) {
        int line = s_cur(p)->line;
        if (s_skip_op(p, "|")) {
            n = s_filter(p, n);
        } else if (s_skip_name(p, "is")) {
            bool neg = s_skip_name(p, "not");
            const tk_t *t = s_cur(p);
            if (t->type != TK_NAME) {
                jinja_node_free(n);
                return s_fail(p, "expected a test name after 'is', got %s", s_tk_desc(t));
            }
            if (!jinja_test_known(t->s)) {
                jinja_node_free(n);
                return s_fail(p, "test '%s' is not supported", t->s);
            }
            node_t *tn = s_wrap(p, N_TEST, n, line);
            if (!tn)
                return NULL;
            tn->op = neg;
            if (!(tn->str = mem_strdup(t->s))) {
                jinja_node_free(tn);
                return s_oom(p);
            }
            s_next(p);
            const tk_t *a = s_cur(p);
            if (s_is_op(p, "(")) {
                if (s_call_args(p, tn) < 0) {
                    jinja_node_free(tn);
                    return NULL;
                }
            } else if ((a->type == TK_NAME || a->type == TK_STRING || a->type == TK_INT ||
                        a->type == TK_FLOAT || s_is_op(p, "[") || s_is_op(p, "{")) &&
                       !(a->type == TK_NAME &&
                         (!strcmp(a->s, "else") || !strcmp(a->s, "or") || !strcmp(a->s, "and") ||
                          !strcmp(a->s, "if") || !strcmp(a->s, "is") || !strcmp(a->s, "in") ||
                          !strcmp(a->s, "not")))) {
                node_t *arg = s_postfix(p, s_primary(p));
                if (!arg || s_add(p, tn, arg, NULL) < 0) {
                    jinja_node_free(tn);
                    return NULL;
                }
            }
            n = tn;
        } else if (s_is_op(p, "(")) {
            node_t *c = s_wrap(p, N_CALL, n, line);
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
    int line = s_cur(p)->line;
    node_t *n;
    if (!s_enter(p))
        return NULL;
    if (s_is_op(p, "-") || s_is_op(p, "+")) {
        int op = s_is_op(p, "-") ? OP_NEG : OP_POS;
        s_next(p);
        n = s_unary(p, false);
        if (n && (n = s_wrap(p, N_UNARY, n, line)))
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
    node_t *b = s_wrap(p, N_BINARY, l, line);
    if (!b) {
        jinja_node_free(r);
        return NULL;
    }
    b->op = op;
    if (s_add(p, b, r, NULL) < 0) {
        jinja_node_free(b);
        return NULL;
    }
    return b;
}

static node_t *s_pow(parser_t *p)
{
    node_t *n = s_unary(p, true);
    while (n && s_is_op(p, "**")) {
        int line = s_cur(p)->line;
        s_next(p);
        n = s_binary(p, n, OP_POW, s_unary(p, true), line);
    }
    return n;
}

static node_t *s_math2(parser_t *p)
{
    node_t *n = s_pow(p);
    for (;;) {
        int line = s_cur(p)->line, op;
        if (s_is_op(p, "*")) op = OP_MUL;
        else if (s_is_op(p, "/")) op = OP_DIV;
        else if (s_is_op(p, "//")) op = OP_FLOORDIV;
        else if (s_is_op(p, "%")) op = OP_MOD;
        else break;
        if (!n)
            break;
        s_next(p);
        n = s_binary(p, n, op, s_pow(p), line);
    }
    return n;
}

static node_t *s_concat(parser_t *p)
{
    node_t *n = s_math2(p);
    while (n && s_is_op(p, "~")) {
        int line = s_cur(p)->line;
        s_next(p);
        n = s_binary(p, n, OP_CONCAT, s_math2(p), line);
    }
    return n;
}

static node_t *s_math1(parser_t *p)
{
    node_t *n = s_concat(p);
    while (n && (s_is_op(p, "+") || s_is_op(p, "-"))) {
        int line = s_cur(p)->line;
        int op = s_is_op(p, "+") ? OP_ADD : OP_SUB;
        s_next(p);
        n = s_binary(p, n, op, s_concat(p), line);
    }
    return n;
}

static node_t *s_compare(parser_t *p)
{
    int line = s_cur(p)->line;
    node_t *n = s_math1(p);
    node_t *c = NULL;
    while (n) {
        int op;
        if (s_is_op(p, "==")) op = OP_EQ;
        else if (s_is_op(p, "!=")) op = OP_NE;
        else if (s_is_op(p, "<")) op = OP_LT;
        else if (s_is_op(p, "<=")) op = OP_LE;
        else if (s_is_op(p, ">")) op = OP_GT;
        else if (s_is_op(p, ">=")) op = OP_GE;
        else if (s_is_name(p, "in")) op = OP_IN;
        else if (s_is_name(p, "not") && s_peek(p, 1)->type == TK_NAME &&
                 !strcmp(s_peek(p, 1)->s, "in")) {
            op = OP_NOTIN;
            s_next(p);
        } else
            break;
        s_next(p);
        if (!c) {
            if (!(c = s_wrap(p, N_COMPARE, n, line)))
                return NULL;
        }
        int *ops = mem_realloc(c->ops, (size_t)c->n_kids * sizeof *ops);
        if (!ops) {
            jinja_node_free(c);
            return s_oom(p);
        }
        c->ops = ops;
        ops[c->n_kids - 1] = op;
        node_t *r = s_math1(p);
        if (!r || s_add(p, c, r, NULL) < 0) {
            jinja_node_free(c);
            return NULL;
        }
    }
    return c ? c : n;
}

static node_t *s_not(parser_t *p)
{
    int line = s_cur(p)->line;
    if (s_is_name(p, "not")) {
        s_next(p);
        if (!s_enter(p))
            return NULL;
        node_t *n = s_not(p);
        p->depth--;
        if (n && (n = s_wrap(p, N_UNARY, n, line)))
            n->op = OP_NOT;
        return n;
    }
    return s_compare(p);
}

static node_t *s_and(parser_t *p)
{
    node_t *n = s_not(p);
    while (n && s_is_name(p, "and")) {
        int line = s_cur(p)->line;
        s_next(p);
        n = s_binary(p, n, OP_AND, s_not(p), line);
    }
    return n;
}

static node_t *s_or(parser_t *p)
{
    node_t *n = s_and(p);
    while (n && s_is_name(p, "or")) {
        int line = s_cur(p)->line;
        s_next(p);
        n = s_binary(p, n, OP_OR, s_and(p), line);
    }
    return n;
}

static node_t *s_expr(parser_t *p, bool with_cond)
{
    if (!s_enter(p))
        return NULL;
    node_t *n = s_or(p);
    while (n && with_cond && s_is_name(p, "if")) {
        int line = s_cur(p)->line;
        s_next(p);
        node_t *c = s_node(p, N_COND, line);
        if (!c || s_add(p, c, n, NULL) < 0) {
            if (!c)
                jinja_node_free(n);
            jinja_node_free(c);
            n = NULL;
            break;
        }
        n = c;
        node_t *cond = s_or(p);
        if (!cond || s_add(p, c, cond, NULL) < 0) {
            jinja_node_free(c);
            n = NULL;
            break;
        }
        node_t *e = NULL;
        if (s_skip_name(p, "else") && !(e = s_expr(p, true))) {
            jinja_node_free(c);
            n = NULL;
            break;
        }
        if (s_add(p, c, e, NULL) < 0) {
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
    const tk_t *t = s_cur(p);
    if (t->type == TK_VAR_END || t->type == TK_BLOCK_END || t->type == TK_EOF)
        return true;
    if (t->type == TK_OP && (!strcmp(t->s, ")") || !strcmp(t->s, "]") || !strcmp(t->s, "=")))
        return true;
    return t->type == TK_NAME && (!strcmp(t->s, "in") || !strcmp(t->s, "if") ||
                                  !strcmp(t->s, "recursive"));
}

/* expr or expr, expr... (a tuple); explicit_only: inside parentheses, where
 * "()" is the empty tuple. */
static node_t *s_tuple(parser_t *p, bool with_cond, bool explicit_only)
{
    int line = s_cur(p)->line;
    if (explicit_only && s_is_op(p, ")"))
        return s_node(p, N_TUPLE, line);
    node_t *first = s_expr(p, with_cond);
    if (!first || !s_is_op(p, ","))
        return first;
    node_t *t = s_wrap(p, N_TUPLE, first, line);
    if (!t)
        return NULL;
    while (s_skip_op(p, ",")) {
        if (s_tuple_end(p))
            break;
        node_t *k = s_expr(p, with_cond);
        if (!k || s_add(p, t, k, NULL) < 0) {
            jinja_node_free(t);
            return NULL;
        }
    }
    return t;
}

/* ---- statements --------------------------------------------------------- */
static node_t *s_body(parser_t *p, const char *const *ends, const char **which);

static bool s_block_end(parser_t *p)
{
    if (s_cur(p)->type == TK_BLOCK_END) {
        s_next(p);
        return true;
    }
    s_fail(p, "expected '%%}', got %s", s_tk_desc(s_cur(p)));
    return false;
}

/* Name target or a tuple of names (for, set). */
static node_t *s_target(parser_t *p, bool allow_attr)
{
    int line = s_cur(p)->line;
    bool paren = s_skip_op(p, "(");
    node_t *t = NULL;
    for (;;) {
        const tk_t *tk = s_cur(p);
        if (tk->type != TK_NAME)
            return jinja_node_free(t), s_fail(p, "expected a name to assign, got %s",
                                              s_tk_desc(tk));
        node_t *n = s_node(p, N_NAME, tk->line);
        if (!n || !(n->str = mem_strdup(tk->s))) {
            jinja_node_free(n);
            jinja_node_free(t);
            return s_oom(p);
        }
        s_next(p);
        if (allow_attr && !t && !paren && s_is_op(p, ".")) {
            s_next(p);
            if (s_cur(p)->type != TK_NAME) {
                jinja_node_free(n);
                return s_fail(p, "expected an attribute name after '.'");
            }
            node_t *a = s_wrap(p, N_ATTR, n, line);
            if (!a || !(a->str = mem_strdup(s_cur(p)->s))) {
                jinja_node_free(a);
                return s_oom(p);
            }
            s_next(p);
            return a;
        }
        if (s_bind(p, n->str) < 0) {
            jinja_node_free(n);
            jinja_node_free(t);
            return NULL;
        }
        if (!t && !s_is_op(p, ",")) {
            t = n;
            break;
        }
        if (!t && !(t = s_node(p, N_TUPLE, line))) {
            jinja_node_free(n);
            return NULL;
        }
        if (s_add(p, t, n, NULL) < 0) {
            jinja_node_free(t);
            return NULL;
        }
        if (!s_skip_op(p, ",") || (paren && s_is_op(p, ")")))
            break;
    }
    if (paren && !s_expect_op(p, ")")) {
        jinja_node_free(t);
        return NULL;
    }
    return t;
}

/* Parses "end<word>" after a body, having stopped at it. */
static bool s_end_tag(parser_t *p, const char *word)
{
    /* s_body left us at the name after '{%' */
    if (!s_skip_name(p, word)) {
        s_fail(p, "expected '%s'", word);
        return false;
    }
    return s_block_end(p);
}

static node_t *s_stmt_if(parser_t *p, int line)
{
    node_t *n = s_node(p, N_IF, line);
    if (!n)
        return NULL;
    node_t *cond = s_tuple(p, true, false);
    if (!cond || s_add(p, n, cond, NULL) < 0 || !s_block_end(p))
        goto fail;
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    const char *which = NULL;
    node_t *body = s_body(p, ends, &which);
    if (!body || s_add(p, n, body, NULL) < 0)
        goto fail;
    if (!strcmp(which, "elif")) {
        int l2 = s_cur(p)->line;
        s_next(p);
        node_t *e = s_stmt_if(p, l2);
        if (!e || s_add(p, n, e, NULL) < 0)
            goto fail;
        return n;
    }
    if (!strcmp(which, "else")) {
        s_next(p);
        static const char *const ends2[] = {"endif", NULL};
        if (!s_block_end(p))
            goto fail;
        node_t *e = s_body(p, ends2, &which);
        if (!e || s_add(p, n, e, NULL) < 0)
            goto fail;
    } else if (s_add(p, n, NULL, NULL) < 0) {
        goto fail;
    }
    if (!s_end_tag(p, "endif"))
        goto fail;
    return n;
fail:
    jinja_node_free(n);
    return NULL;
}

static node_t *s_stmt_for(parser_t *p, int line)
{
    node_t *n = s_node(p, N_FOR, line);
    if (!n)
        return NULL;
    node_t *target = s_target(p, false);
    if (!target || s_add(p, n, target, NULL) < 0)
        goto fail;
    if (!s_skip_name(p, "in")) {
        s_fail(p, "expected 'in' in a for loop, got %s", s_tk_desc(s_cur(p)));
        goto fail;
    }
    node_t *iter = s_tuple(p, false, false);
    if (!iter || s_add(p, n, iter, NULL) < 0)
        goto fail;
    node_t *cond = NULL;
    if (s_skip_name(p, "if") && !(cond = s_expr(p, true)))
        goto fail;
    if (s_add(p, n, cond, NULL) < 0)
        goto fail;
    if (s_is_name(p, "recursive")) {
        s_fail(p, "recursive for loops are not supported");
        goto fail;
    }
    if (!s_block_end(p))
        goto fail;
    static const char *const ends[] = {"else", "endfor", NULL};
    const char *which = NULL;
    p->for_depth++;
    node_t *body = s_body(p, ends, &which);
    p->for_depth--;
    if (!body || s_add(p, n, body, NULL) < 0)
        goto fail;
    node_t *els = NULL;
    if (!strcmp(which, "else")) {
        s_next(p);
        static const char *const ends2[] = {"endfor", NULL};
        if (!s_block_end(p) || !(els = s_body(p, ends2, &which)))
            goto fail;
    }
    if (s_add(p, n, els, NULL) < 0 || !s_end_tag(p, "endfor"))
        goto fail;
    return n;
fail:
    jinja_node_free(n);
    return NULL;
}

/* | filter | filter... over a NULL operand (set block, filter block). */
static node_t *s_filter_chain(parser_t *p)
{
    node_t *f = NULL;
    do {
        if (!(f = s_filter(p, f)))
            return NULL;
    } while (s_skip_op(p, "|"));
    return f;
}

static node_t *s_stmt_set(parser_t *p, int line)
{
    node_t *target = s_target(p, true);
    if (!target)
        return NULL;
    node_t *n = NULL;
    if (s_skip_op(p, "=")) {
        if (!(n = s_wrap(p, N_SET, target, line)))
            return NULL;
        node_t *v = s_tuple(p, true, false);
        if (!v || s_add(p, n, v, NULL) < 0 || !s_block_end(p))
            goto fail;
        return n;
    }
    if (!(n = s_wrap(p, N_SETBLOCK, target, line)))
        return NULL;
    node_t *chain = NULL;
    if (s_skip_op(p, "|") && !(chain = s_filter_chain(p)))
        goto fail;
    if (!s_block_end(p)) {
        jinja_node_free(chain);
        goto fail;
    }
    static const char *const ends[] = {"endset", NULL};
    const char *which;
    node_t *body = s_body(p, ends, &which);
    if (!body || s_add(p, n, body, NULL) < 0) {
        jinja_node_free(chain);
        goto fail;
    }
    if (s_add(p, n, chain, NULL) < 0 || !s_end_tag(p, "endset"))
        goto fail;
    return n;
fail:
    jinja_node_free(n);
    return NULL;
}

/* (a, b=default...) into n: names[1..] and kids[first..] defaults. */
static int s_params(parser_t *p, node_t *n)
{
    if (!s_skip_op(p, "("))
        return 0;
    while (!s_is_op(p, ")")) {
        const tk_t *t = s_cur(p);
        if (t->type != TK_NAME)
            return s_fail(p, "expected a parameter name, got %s", s_tk_desc(t)), -1;
        const char *name = t->s;
        s_next(p);
        node_t *def = NULL;
        if (s_skip_op(p, "=") && !(def = s_expr(p, true)))
            return -1;
        if (s_add(p, n, def, name) < 0 || s_bind(p, name) < 0)
            return -1;
        if (!s_skip_op(p, ","))
            break;
    }
    return s_expect_op(p, ")") ? 0 : -1;
}

static node_t *s_stmt_macro(parser_t *p, int line)
{
    const tk_t *t = s_cur(p);
    if (t->type != TK_NAME)
        return s_fail(p, "expected a macro name, got %s", s_tk_desc(t));
    node_t *n = s_node(p, N_MACRO, line);
    if (!n || !(n->str = mem_strdup(t->s)) || s_bind(p, t->s) < 0) {
        jinja_node_free(n);
        return s_oom(p);
    }
    s_next(p);
    if (s_add(p, n, NULL, "") < 0)   /* kid 0: the body, set below */
        goto fail;
    if (s_params(p, n) < 0 || !s_block_end(p))
        goto fail;
    static const char *const ends[] = {"endmacro", NULL};
    const char *which;
    int fd = p->for_depth;
    p->for_depth = 0;
    node_t *body = s_body(p, ends, &which);
    p->for_depth = fd;
    if (!body)
        goto fail;
    n->kids[0] = body;
    if (!s_end_tag(p, "endmacro"))
        goto fail;
    return n;
fail:
    jinja_node_free(n);
    return NULL;
}

static node_t *s_stmt_call(parser_t *p, int line)
{
    node_t *n = s_node(p, N_CALLBLOCK, line);
    if (!n || s_add(p, n, NULL, "") < 0 || s_add(p, n, NULL, "") < 0)
        goto fail;
    if (s_is_op(p, "(") && s_params(p, n) < 0)
        goto fail;
    node_t *call = s_expr(p, true);
    if (!call)
        goto fail;
    n->kids[0] = call;
    if (call->type != N_CALL) {
        s_fail(p, "expected a macro call after 'call'");
        goto fail;
    }
    if (!s_block_end(p))
        goto fail;
    static const char *const ends[] = {"endcall", NULL};
    const char *which;
    node_t *body = s_body(p, ends, &which);
    if (!body)
        goto fail;
    n->kids[1] = body;
    if (!s_end_tag(p, "endcall"))
        goto fail;
    return n;
fail:
    jinja_node_free(n);
    return NULL;
}

static node_t *s_stmt_filter(parser_t *p, int line)
{
    node_t *n = s_node(p, N_FILTERBLOCK, line);
    if (!n)
        return NULL;
    node_t *chain = s_filter_chain(p);
    if (!chain || s_add(p, n, chain, NULL) < 0 || !s_block_end(p))
        goto fail;
    static const char *const ends[] = {"endfilter", NULL};
    const char *which;
    node_t *body = s_body(p, ends, &which);
    if (!body || s_add(p, n, body, NULL) < 0 || !s_end_tag(p, "endfilter"))
        goto fail;
    return n;
fail:
    jinja_node_free(n);
    return NULL;
}

static node_t *s_stmt_with(parser_t *p, int line)
{
    node_t *n = s_node(p, N_WITH, line);
    node_t *sets = s_node(p, N_BODY, line);
    if (!n || !sets || s_add(p, n, sets, NULL) < 0) {
        if (n)
            jinja_node_free(n);
        else
            jinja_node_free(sets);
        return NULL;
    }
    while (s_cur(p)->type != TK_BLOCK_END) {
        int l = s_cur(p)->line;
        node_t *target = s_target(p, false);
        if (!target)
            goto fail;
        node_t *set = s_wrap(p, N_SET, target, l);
        if (!set || s_add(p, sets, set, NULL) < 0)
            goto fail;
        if (!s_expect_op(p, "="))
            goto fail;
        node_t *v = s_expr(p, true);
        if (!v || s_add(p, set, v, NULL) < 0)
            goto fail;
        if (!s_skip_op(p, ","))
            break;
    }
    if (!s_block_end(p))
        goto fail;
    static const char *const ends[] = {"endwith", NULL};
    const char *which;
    node_t *body = s_body(p, ends, &which);
    if (!body || s_add(p, n, body, NULL) < 0 || !s_end_tag(p, "endwith"))
        goto fail;
    return n;
fail:
    jinja_node_free(n);
    return NULL;
}

/* One statement after '{%' (current: its keyword). */
static node_t *s_stmt(parser_t *p)
{
    const tk_t *t = s_cur(p);
    int line = t->line;
    if (t->type != TK_NAME)
        return s_fail(p, "expected a statement name after '{%%', got %s", s_tk_desc(t));
    const char *w = t->s;
    if (!s_enter(p))
        return NULL;
    node_t *n = NULL;
    s_next(p);
    if (!strcmp(w, "if"))
        n = s_stmt_if(p, line);
    else if (!strcmp(w, "for"))
        n = s_stmt_for(p, line);
    else if (!strcmp(w, "set"))
        n = s_stmt_set(p, line);
    else if (!strcmp(w, "macro"))
        n = s_stmt_macro(p, line);
    else if (!strcmp(w, "call"))
        n = s_stmt_call(p, line);
    else if (!strcmp(w, "filter"))
        n = s_stmt_filter(p, line);
    else if (!strcmp(w, "with"))
        n = s_stmt_with(p, line);
    else if (!strcmp(w, "break") || !strcmp(w, "continue")) {
        if (p->for_depth == 0)
            n = s_fail(p, "'%s' outside a for loop", w);
        else if ((n = s_node(p, w[0] == 'b' ? N_BREAK : N_CONTINUE, line)) && !s_block_end(p)) {
            jinja_node_free(n);
            n = NULL;
        }
    } else if (!strcmp(w, "generation")) {
        /* transformers' AssistantTracker: {% generation %} marks assistant
         * text for token masks; rendering is the body itself. */
        static const char *const ends[] = {"endgeneration", NULL};
        const char *which;
        if (s_block_end(p) && (n = s_body(p, ends, &which)) && !s_end_tag(p, "endgeneration")) {
            jinja_node_free(n);
            n = NULL;
        }
    } else {
        n = s_fail(p, "statement '%s' is not supported", w);
    }
    p->depth--;
    return n;
}

/* Statements until a block whose keyword is in ends (left current, at that
 * keyword; *which says which) or the end of the template (ends NULL). */
static node_t *s_body(parser_t *p, const char *const *ends, const char **which)
{
    node_t *body = s_node(p, N_BODY, s_cur(p)->line);
    if (!body)
        return NULL;
    if (!s_enter(p)) {
        jinja_node_free(body);
        return NULL;
    }
    for (;;) {
        const tk_t *t = s_cur(p);
        node_t *n = NULL;
        if (t->type == TK_EOF) {
            if (ends) {
                s_fail(p, "unexpected end of template: missing '{%% %s %%}'",
                       ends[ends[1] && ends[2] ? 2 : ends[1] ? 1 : 0]);
                goto fail;
            }
            break;
        }
        if (t->type == TK_TEXT) {
            if (!(n = s_node(p, N_TEXT, t->line)) || !(n->str = mem_alloc(t->len + 1))) {
                jinja_node_free(n);
                s_oom(p);
                goto fail;
            }
            memcpy(n->str, t->s, t->len + 1);
            n->len = t->len;
            s_next(p);
        } else if (t->type == TK_VAR_BEGIN) {
            int line = t->line;
            s_next(p);
            node_t *e = s_tuple(p, true, false);
            if (!e)
                goto fail;
            if (s_cur(p)->type != TK_VAR_END) {
                jinja_node_free(e);
                s_fail(p, "expected '}}', got %s", s_tk_desc(s_cur(p)));
                goto fail;
            }
            s_next(p);
            if (!(n = s_wrap(p, N_OUTPUT, e, line)))
                goto fail;
        } else if (t->type == TK_BLOCK_BEGIN) {
            const tk_t *kw = s_peek(p, 1);
            if (kw->type == TK_NAME && ends) {
                for (int k = 0; ends[k]; k++)
                    if (!strcmp(kw->s, ends[k])) {
                        *which = ends[k];
                        s_next(p);
                        p->depth--;
                        return body;
                    }
            }
            if (kw->type == TK_NAME && (!strncmp(kw->s, "end", 3) || !strcmp(kw->s, "elif") ||
                                        !strcmp(kw->s, "else"))) {
                s_next(p);
                s_fail(p, "unexpected '%s'", kw->s);
                goto fail;
            }
            s_next(p);
            if (!(n = s_stmt(p)))
                goto fail;
        } else {
            s_fail(p, "unexpected %s", s_tk_desc(t));
            goto fail;
        }
        if (s_add(p, body, n, NULL) < 0)
            goto fail;
    }
    p->depth--;
    return body;
fail:
    jinja_node_free(body);
    return NULL;
}

node_t *jinja_parse(const tk_list_t *tokens, err_t *err)
{
    parser_t p = {.t = tokens->v, .n = tokens->n, .err = err};
    node_t *root = s_body(&p, NULL, NULL);
    /* A call of a name the template does not define and no global is. */
    for (size_t i = 0; root && i < p.n_calls; i++) {
        const char *name = p.calls[i].name;
        bool ok = false;
        for (size_t k = 0; !ok && k < sizeof S_GLOBALS / sizeof *S_GLOBALS; k++)
            ok = !strcmp(name, S_GLOBALS[k]);
        for (size_t k = 0; !ok && k < p.n_bound; k++)
            ok = !strcmp(name, p.bound[k]);
        if (!ok) {
            err_set(err, EINVAL, "chat template line %d: function '%s' is not supported",
                    p.calls[i].line, name);
            jinja_node_free(root);
            root = NULL;
        }
    }
    for (size_t k = 0; k < p.n_bound; k++)
        mem_free(p.bound[k]);
    mem_free(p.bound);
    mem_free(p.calls);
    return root;
}
