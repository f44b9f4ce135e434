/* jinja_parse_private: what the two halves of the parser share (jinja_parse:
 * statements and the entry; jinja_expr: expressions). */
#ifndef MOE_CHAT_JINJA_PARSE_PRIVATE_H
#define MOE_CHAT_JINJA_PARSE_PRIVATE_H

#include "chat/jinja_private.h"

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

const tk_t *jp_cur(parser_t *p);
const tk_t *jp_peek(parser_t *p, size_t k);
void jp_next(parser_t *p);
/* Records a syntax error at the current token (the first one wins); NULL. */
node_t *jp_fail(parser_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
node_t *jp_oom(parser_t *p);
bool jp_is_op(parser_t *p, const char *op);
bool jp_is_name(parser_t *p, const char *name);
bool jp_skip_op(parser_t *p, const char *op);
bool jp_skip_name(parser_t *p, const char *name);
bool jp_expect_op(parser_t *p, const char *op);
const char *jp_tk_desc(const tk_t *t);
node_t *jp_node(parser_t *p, node_type_t type, int line);
/* Appends kid (may be NULL) with an optional name; frees kid on failure. */
int jp_add(parser_t *p, node_t *n, node_t *kid, const char *name);
/* Wraps n as kid 0 of a new node (n freed on failure). */
node_t *jp_wrap(parser_t *p, node_type_t type, node_t *n, int line);
/* A name the template defines (for the check of called names). */
int jp_bind(parser_t *p, const char *name);
/* One more nesting level (the caller undoes it: p->depth--). */
bool jp_enter(parser_t *p);

/* An expression (with_cond: "a if b else c" allowed); a tuple "a, b" (or
 * "()" when explicit_only, inside parentheses); a filter after '|' over n
 * (NULL: a block's filter chain). */
node_t *jp_expr(parser_t *p, bool with_cond);
node_t *jp_tuple(parser_t *p, bool with_cond, bool explicit_only);
node_t *jp_filter(parser_t *p, node_t *n);

#endif /* MOE_CHAT_JINJA_PARSE_PRIVATE_H */
