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

#include "chat/jinja_parse_private.h"
#include "core/mem.h"

static const char *const S_GLOBALS[] = {
    "range", "namespace", "dict", "raise_exception", "strftime_now", "caller", "loop",
};

const tk_t *jp_cur(parser_t *p) { return &p->t[p->i < p->n ? p->i : p->n - 1]; }
const tk_t *jp_peek(parser_t *p, size_t k)
{
    return &p->t[p->i + k < p->n ? p->i + k : p->n - 1];
}
void jp_next(parser_t *p)
{
    if (p->i < p->n - 1)
        p->i++;
}

node_t *jp_fail(parser_t *p, const char *fmt, ...)
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
            jp_cur(p)->line, msg);
    return NULL;
}

node_t *jp_oom(parser_t *p)
{
    errno = ENOMEM;
    if (!p->failed) {
        p->failed = true;
        err_set(p->err, ENOMEM, "chat template: out of memory");
    }
    return NULL;
}

bool jp_is_op(parser_t *p, const char *op)
{
    const tk_t *t = jp_cur(p);
    return t->type == TK_OP && strcmp(t->s, op) == 0;
}
bool jp_is_name(parser_t *p, const char *name)
{
    const tk_t *t = jp_cur(p);
    return t->type == TK_NAME && strcmp(t->s, name) == 0;
}
bool jp_skip_op(parser_t *p, const char *op)
{
    if (!jp_is_op(p, op))
        return false;
    jp_next(p);
    return true;
}
bool jp_skip_name(parser_t *p, const char *name)
{
    if (!jp_is_name(p, name))
        return false;
    jp_next(p);
    return true;
}

const char *jp_tk_desc(const tk_t *t)
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

bool jp_expect_op(parser_t *p, const char *op)
{
    if (jp_skip_op(p, op))
        return true;
    jp_fail(p, "expected '%s', got %s", op, jp_tk_desc(jp_cur(p)));
    return false;
}

node_t *jp_node(parser_t *p, node_type_t type, int line)
{
    node_t *n = mem_calloc(1, sizeof *n);
    if (!n)
        return jp_oom(p);
    n->type = type;
    n->line = line;
    n->height = 1;
    return n;
}

/* Appends kid (may be NULL when the type allows) with an optional name. */
int jp_add(parser_t *p, node_t *n, node_t *kid, const char *name)
{
    if (kid && kid->height >= JINJA_TREE_HEIGHT_MAX) {
        jinja_node_free(kid);
        jp_fail(p, "expression or blocks nested deeper than %d levels", JINJA_TREE_HEIGHT_MAX);
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
    jp_oom(p);
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

int jp_bind(parser_t *p, const char *name)
{
    if (p->n_bound == p->cap_bound) {
        size_t cap = p->cap_bound ? p->cap_bound * 2 : 16;
        char **v = mem_realloc(p->bound, cap * sizeof *v);
        if (!v)
            return jp_oom(p), -1;
        p->bound = v;
        p->cap_bound = cap;
    }
    if (!(p->bound[p->n_bound] = mem_strdup(name)))
        return jp_oom(p), -1;
    p->n_bound++;
    return 0;
}

bool jp_enter(parser_t *p)
{
    if (++p->depth > JINJA_PARSE_DEPTH_MAX) {
        jp_fail(p, "nesting deeper than %d levels", JINJA_PARSE_DEPTH_MAX);
        return false;
    }
    return true;
}

/* Wraps n as kid 0 of a new node. */
node_t *jp_wrap(parser_t *p, node_type_t type, node_t *n, int line)
{
    node_t *w = jp_node(p, type, line);
    if (!w || jp_add(p, w, n, NULL) < 0) {
        if (w)
            jinja_node_free(w);
        else
            jinja_node_free(n);
        return NULL;
    }
    return w;
}

/* ---- statements --------------------------------------------------------- */
static node_t *s_body(parser_t *p, const char *const *ends, const char **which);

static bool s_block_end(parser_t *p)
{
    if (jp_cur(p)->type == TK_BLOCK_END) {
        jp_next(p);
        return true;
    }
    jp_fail(p, "expected '%%}', got %s", jp_tk_desc(jp_cur(p)));
    return false;
}

/* Name target or a tuple of names (for, set). */
static node_t *s_target(parser_t *p, bool allow_attr)
{
    int line = jp_cur(p)->line;
    bool paren = jp_skip_op(p, "(");
    node_t *t = NULL;
    for (;;) {
        const tk_t *tk = jp_cur(p);
        if (tk->type != TK_NAME)
            return jinja_node_free(t), jp_fail(p, "expected a name to assign, got %s",
                                              jp_tk_desc(tk));
        node_t *n = jp_node(p, N_NAME, tk->line);
        if (!n || !(n->str = mem_strdup(tk->s))) {
            jinja_node_free(n);
            jinja_node_free(t);
            return jp_oom(p);
        }
        jp_next(p);
        if (allow_attr && !t && !paren && jp_is_op(p, ".")) {
            jp_next(p);
            if (jp_cur(p)->type != TK_NAME) {
                jinja_node_free(n);
                return jp_fail(p, "expected an attribute name after '.'");
            }
            node_t *a = jp_wrap(p, N_ATTR, n, line);
            if (!a || !(a->str = mem_strdup(jp_cur(p)->s))) {
                jinja_node_free(a);
                return jp_oom(p);
            }
            jp_next(p);
            return a;
        }
        if (jp_bind(p, n->str) < 0) {
            jinja_node_free(n);
            jinja_node_free(t);
            return NULL;
        }
        if (!t && !jp_is_op(p, ",")) {
            t = n;
            break;
        }
        if (!t && !(t = jp_node(p, N_TUPLE, line))) {
            jinja_node_free(n);
            return NULL;
        }
        if (jp_add(p, t, n, NULL) < 0) {
            jinja_node_free(t);
            return NULL;
        }
        if (!jp_skip_op(p, ",") || (paren && jp_is_op(p, ")")))
            break;
    }
    if (paren && !jp_expect_op(p, ")")) {
        jinja_node_free(t);
        return NULL;
    }
    return t;
}

/* Parses "end<word>" after a body, having stopped at it. */
static bool s_end_tag(parser_t *p, const char *word)
{
    /* s_body left us at the name after '{%' */
    if (!jp_skip_name(p, word)) {
        jp_fail(p, "expected '%s'", word);
        return false;
    }
    return s_block_end(p);
}

static node_t *s_stmt_if(parser_t *p, int line)
{
    node_t *n = jp_node(p, N_IF, line);
    if (!n)
        return NULL;
    node_t *cond = jp_tuple(p, true, false);
    if (!cond || jp_add(p, n, cond, NULL) < 0 || !s_block_end(p))
        goto fail;
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    const char *which = NULL;
    node_t *body = s_body(p, ends, &which);
    if (!body || jp_add(p, n, body, NULL) < 0)
        goto fail;
    if (!strcmp(which, "elif")) {
        int l2 = jp_cur(p)->line;
        jp_next(p);
        node_t *e = s_stmt_if(p, l2);
        if (!e || jp_add(p, n, e, NULL) < 0)
            goto fail;
        return n;
    }
    if (!strcmp(which, "else")) {
        jp_next(p);
        static const char *const ends2[] = {"endif", NULL};
        if (!s_block_end(p))
            goto fail;
        node_t *e = s_body(p, ends2, &which);
        if (!e || jp_add(p, n, e, NULL) < 0)
            goto fail;
    } else if (jp_add(p, n, NULL, NULL) < 0) {
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
    node_t *n = jp_node(p, N_FOR, line);
    if (!n)
        return NULL;
    node_t *target = s_target(p, false);
    if (!target || jp_add(p, n, target, NULL) < 0)
        goto fail;
    if (!jp_skip_name(p, "in")) {
        jp_fail(p, "expected 'in' in a for loop, got %s", jp_tk_desc(jp_cur(p)));
        goto fail;
    }
    node_t *iter = jp_tuple(p, false, false);
    if (!iter || jp_add(p, n, iter, NULL) < 0)
        goto fail;
    node_t *cond = NULL;
    if (jp_skip_name(p, "if") && !(cond = jp_expr(p, true)))
        goto fail;
    if (jp_add(p, n, cond, NULL) < 0)
        goto fail;
    if (jp_is_name(p, "recursive")) {
        jp_fail(p, "recursive for loops are not supported");
        goto fail;
    }
    if (!s_block_end(p))
        goto fail;
    static const char *const ends[] = {"else", "endfor", NULL};
    const char *which = NULL;
    p->for_depth++;
    node_t *body = s_body(p, ends, &which);
    p->for_depth--;
    if (!body || jp_add(p, n, body, NULL) < 0)
        goto fail;
    node_t *els = NULL;
    if (!strcmp(which, "else")) {
        jp_next(p);
        static const char *const ends2[] = {"endfor", NULL};
        if (!s_block_end(p) || !(els = s_body(p, ends2, &which)))
            goto fail;
    }
    if (jp_add(p, n, els, NULL) < 0 || !s_end_tag(p, "endfor"))
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
        if (!(f = jp_filter(p, f)))
            return NULL;
    } while (jp_skip_op(p, "|"));
    return f;
}

static node_t *s_stmt_set(parser_t *p, int line)
{
    node_t *target = s_target(p, true);
    if (!target)
        return NULL;
    node_t *n = NULL;
    if (jp_skip_op(p, "=")) {
        if (!(n = jp_wrap(p, N_SET, target, line)))
            return NULL;
        node_t *v = jp_tuple(p, true, false);
        if (!v || jp_add(p, n, v, NULL) < 0 || !s_block_end(p))
            goto fail;
        return n;
    }
    if (!(n = jp_wrap(p, N_SETBLOCK, target, line)))
        return NULL;
    node_t *chain = NULL;
    if (jp_skip_op(p, "|") && !(chain = s_filter_chain(p)))
        goto fail;
    if (!s_block_end(p)) {
        jinja_node_free(chain);
        goto fail;
    }
    static const char *const ends[] = {"endset", NULL};
    const char *which;
    node_t *body = s_body(p, ends, &which);
    if (!body || jp_add(p, n, body, NULL) < 0) {
        jinja_node_free(chain);
        goto fail;
    }
    if (jp_add(p, n, chain, NULL) < 0 || !s_end_tag(p, "endset"))
        goto fail;
    return n;
fail:
    jinja_node_free(n);
    return NULL;
}

/* (a, b=default...) into n: names[1..] and kids[first..] defaults. */
static int s_params(parser_t *p, node_t *n)
{
    if (!jp_skip_op(p, "("))
        return 0;
    while (!jp_is_op(p, ")")) {
        const tk_t *t = jp_cur(p);
        if (t->type != TK_NAME)
            return jp_fail(p, "expected a parameter name, got %s", jp_tk_desc(t)), -1;
        const char *name = t->s;
        jp_next(p);
        node_t *def = NULL;
        if (jp_skip_op(p, "=") && !(def = jp_expr(p, true)))
            return -1;
        if (jp_add(p, n, def, name) < 0 || jp_bind(p, name) < 0)
            return -1;
        if (!jp_skip_op(p, ","))
            break;
    }
    return jp_expect_op(p, ")") ? 0 : -1;
}

static node_t *s_stmt_macro(parser_t *p, int line)
{
    const tk_t *t = jp_cur(p);
    if (t->type != TK_NAME)
        return jp_fail(p, "expected a macro name, got %s", jp_tk_desc(t));
    node_t *n = jp_node(p, N_MACRO, line);
    if (!n || !(n->str = mem_strdup(t->s)) || jp_bind(p, t->s) < 0) {
        jinja_node_free(n);
        return jp_oom(p);
    }
    jp_next(p);
    if (jp_add(p, n, NULL, "") < 0)   /* kid 0: the body, set below */
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
    node_t *n = jp_node(p, N_CALLBLOCK, line);
    if (!n || jp_add(p, n, NULL, "") < 0 || jp_add(p, n, NULL, "") < 0)
        goto fail;
    if (jp_is_op(p, "(") && s_params(p, n) < 0)
        goto fail;
    node_t *call = jp_expr(p, true);
    if (!call)
        goto fail;
    n->kids[0] = call;
    if (call->type != N_CALL) {
        jp_fail(p, "expected a macro call after 'call'");
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
    node_t *n = jp_node(p, N_FILTERBLOCK, line);
    if (!n)
        return NULL;
    node_t *chain = s_filter_chain(p);
    if (!chain || jp_add(p, n, chain, NULL) < 0 || !s_block_end(p))
        goto fail;
    static const char *const ends[] = {"endfilter", NULL};
    const char *which;
    node_t *body = s_body(p, ends, &which);
    if (!body || jp_add(p, n, body, NULL) < 0 || !s_end_tag(p, "endfilter"))
        goto fail;
    return n;
fail:
    jinja_node_free(n);
    return NULL;
}

static node_t *s_stmt_with(parser_t *p, int line)
{
    node_t *n = jp_node(p, N_WITH, line);
    node_t *sets = jp_node(p, N_BODY, line);
    if (!n || !sets || jp_add(p, n, sets, NULL) < 0) {
        if (n)
            jinja_node_free(n);
        else
            jinja_node_free(sets);
        return NULL;
    }
    while (jp_cur(p)->type != TK_BLOCK_END) {
        int l = jp_cur(p)->line;
        node_t *target = s_target(p, false);
        if (!target)
            goto fail;
        node_t *set = jp_wrap(p, N_SET, target, l);
        if (!set || jp_add(p, sets, set, NULL) < 0)
            goto fail;
        if (!jp_expect_op(p, "="))
            goto fail;
        node_t *v = jp_expr(p, true);
        if (!v || jp_add(p, set, v, NULL) < 0)
            goto fail;
        if (!jp_skip_op(p, ","))
            break;
    }
    if (!s_block_end(p))
        goto fail;
    static const char *const ends[] = {"endwith", NULL};
    const char *which;
    node_t *body = s_body(p, ends, &which);
    if (!body || jp_add(p, n, body, NULL) < 0 || !s_end_tag(p, "endwith"))
        goto fail;
    return n;
fail:
    jinja_node_free(n);
    return NULL;
}

/* One statement after '{%' (current: its keyword). */
static node_t *s_stmt(parser_t *p)
{
    const tk_t *t = jp_cur(p);
    int line = t->line;
    if (t->type != TK_NAME)
        return jp_fail(p, "expected a statement name after '{%%', got %s", jp_tk_desc(t));
    const char *w = t->s;
    if (!jp_enter(p))
        return NULL;
    node_t *n = NULL;
    jp_next(p);
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
            n = jp_fail(p, "'%s' outside a for loop", w);
        else if ((n = jp_node(p, w[0] == 'b' ? N_BREAK : N_CONTINUE, line)) && !s_block_end(p)) {
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
        n = jp_fail(p, "statement '%s' is not supported", w);
    }
    p->depth--;
    return n;
}

/* Statements until a block whose keyword is in ends (left current, at that
 * keyword; *which says which) or the end of the template (ends NULL). */
static node_t *s_body(parser_t *p, const char *const *ends, const char **which)
{
    node_t *body = jp_node(p, N_BODY, jp_cur(p)->line);
    if (!body)
        return NULL;
    if (!jp_enter(p)) {
        jinja_node_free(body);
        return NULL;
    }
    for (;;) {
        const tk_t *t = jp_cur(p);
        node_t *n = NULL;
        if (t->type == TK_EOF) {
            if (ends) {
                jp_fail(p, "unexpected end of template: missing '{%% %s %%}'",
                       ends[ends[1] && ends[2] ? 2 : ends[1] ? 1 : 0]);
                goto fail;
            }
            break;
        }
        if (t->type == TK_TEXT) {
            if (!(n = jp_node(p, N_TEXT, t->line)) || !(n->str = mem_alloc(t->len + 1))) {
                jinja_node_free(n);
                jp_oom(p);
                goto fail;
            }
            memcpy(n->str, t->s, t->len + 1);
            n->len = t->len;
            jp_next(p);
        } else if (t->type == TK_VAR_BEGIN) {
            int line = t->line;
            jp_next(p);
            node_t *e = jp_tuple(p, true, false);
            if (!e)
                goto fail;
            if (jp_cur(p)->type != TK_VAR_END) {
                jinja_node_free(e);
                jp_fail(p, "expected '}}', got %s", jp_tk_desc(jp_cur(p)));
                goto fail;
            }
            jp_next(p);
            if (!(n = jp_wrap(p, N_OUTPUT, e, line)))
                goto fail;
        } else if (t->type == TK_BLOCK_BEGIN) {
            const tk_t *kw = jp_peek(p, 1);
            if (kw->type == TK_NAME && ends) {
                for (int k = 0; ends[k]; k++)
                    if (!strcmp(kw->s, ends[k])) {
                        *which = ends[k];
                        jp_next(p);
                        p->depth--;
                        return body;
                    }
            }
            if (kw->type == TK_NAME && (!strncmp(kw->s, "end", 3) || !strcmp(kw->s, "elif") ||
                                        !strcmp(kw->s, "else"))) {
                jp_next(p);
                jp_fail(p, "unexpected '%s'", kw->s);
                goto fail;
            }
            jp_next(p);
            if (!(n = s_stmt(p)))
                goto fail;
        } else {
            jp_fail(p, "unexpected %s", jp_tk_desc(t));
            goto fail;
        }
        if (jp_add(p, body, n, NULL) < 0)
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

