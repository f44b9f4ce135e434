/* jinja_private: what the modules of chat/ share (lexer, parser, values,
 * filters, evaluator). Not an API: chat/chat_template.h is.
 *
 * The template language is the Jinja2 subset that Hugging Face chat templates
 * use, with the environment transformers builds (trim_blocks, lstrip_blocks,
 * loopcontrols, no autoescape, tojson = json.dumps). Data values are jansson
 * values (objects keep insertion order); the values JSON cannot hold
 * (undefined, namespaces, macros, functions, loop objects) are jv_t kinds.
 */
#ifndef MOE_CHAT_JINJA_PRIVATE_H
#define MOE_CHAT_JINJA_PRIVATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/err.h"

/* Bounds that keep a hostile template or context from exhausting the stack,
 * the heap or the CPU. */
enum {
    JINJA_PARSE_DEPTH_MAX = 200,      /* nested expressions + blocks at parse */
    JINJA_TREE_HEIGHT_MAX = 1000,     /* syntax tree height (chains: a|f|g..., a+b+c...) */
    JINJA_EVAL_DEPTH_MAX = 600,       /* nested evaluation (macro recursion included) */
    JINJA_STEPS_MAX = 1000000,        /* steps per render: node evaluations, plus one
                                         per element a list operation walks (real
                                         templates take a few thousand) */
    JINJA_RANGE_MAX = 100000,         /* elements of one range() */
};
#define JINJA_OUTPUT_MAX ((size_t)16 << 20) /* bytes of any one string or output */
/* Every JINJA_BYTES_PER_STEP bytes of string a render makes count as one
 * evaluation step, so that CPU time is bounded by bytes too. */
enum { JINJA_BYTES_PER_STEP = 16 };

/* ---- growable byte buffer ---------------------------------------------- */
typedef struct jbuf {
    char *p;
    size_t len, cap;
    bool failed;      /* out of memory or over JINJA_OUTPUT_MAX: contents cut */
    bool oom;         /* ... out of memory */
} jbuf_t;

void jbuf_add(jbuf_t *b, const char *s, size_t n);
void jbuf_adds(jbuf_t *b, const char *s);
void jbuf_addc(jbuf_t *b, char c);
void jbuf_addf(jbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void jbuf_free(jbuf_t *b);

/* ---- lexer ------------------------------------------------------------- */
typedef enum {
    TK_EOF, TK_TEXT, TK_VAR_BEGIN, TK_VAR_END, TK_BLOCK_BEGIN, TK_BLOCK_END,
    TK_NAME, TK_STRING, TK_INT, TK_FLOAT, TK_OP,
} tk_type_t;

typedef struct tk {
    tk_type_t type;
    int line;
    char *s;          /* TEXT, NAME, STRING (unescaped), OP: owned, NUL-terminated */
    size_t len;
    int64_t i;        /* INT */
    double f;         /* FLOAT */
} tk_t;

typedef struct tk_list {
    tk_t *v;
    size_t n, cap;
} tk_list_t;

/* Splits source into tokens (text, tag delimiters, expression tokens) with
 * transformers' whitespace rules. -1 with err ("line N: ...") on a lexical
 * error, errno EINVAL; ENOMEM. */
int jinja_lex(const char *src, size_t len, tk_list_t *out, err_t *err);
void jinja_tokens_free(tk_list_t *t);

/* ---- syntax tree ------------------------------------------------------- */
typedef enum {
    /* expressions */
    N_CONST,      /* value */
    N_NAME,       /* str */
    N_LIST,       /* kids: items */
    N_TUPLE,      /* kids: items (a list at run time) */
    N_DICT,       /* kids: key, value, key, value... */
    N_ATTR,       /* kids[0] . str */
    N_ITEM,       /* kids[0] [ kids[1] ] */
    N_SLICE,      /* kids[0] [kids[1] : kids[2] : kids[3]], each of 1..3 may be NULL */
    N_CALL,       /* kids[0] ( kids[1..] ), names[i] = keyword of kids[i] or NULL */
    N_FILTER,     /* kids[0] | str ( kids[1..] ), names as N_CALL; kids[0] NULL in a block */
    N_TEST,       /* kids[0] is [not] str ( kids[1..] ), op = 1 when negated */
    N_UNARY,      /* op kids[0] */
    N_BINARY,     /* kids[0] op kids[1] */
    N_COMPARE,    /* kids[0] ops[0] kids[1] ops[1] kids[2]... (chained) */
    N_COND,       /* kids[0] if kids[1] else kids[2] (kids[2] may be NULL) */
    /* statements */
    N_BODY,       /* kids: statements */
    N_TEXT,       /* str */
    N_OUTPUT,     /* {{ kids[0] }} */
    N_IF,         /* if kids[0]: kids[1] else kids[2] (NULL, N_BODY or an N_IF for elif) */
    N_FOR,        /* for kids[0] in kids[1] if kids[2]: kids[3] else kids[4] */
    N_SET,        /* set kids[0] = kids[1] (kids[0] N_NAME, N_TUPLE of names or N_ATTR) */
    N_SETBLOCK,   /* set kids[0] | kids[2] (filter chain or NULL) = render kids[1] */
    N_MACRO,      /* str(names[1..]) = kids[1..] defaults (NULL: none); body kids[0] */
    N_CALLBLOCK,  /* call(names[1..] caller params, kids[2..] defaults) kids[0] : body kids[1] */
    N_FILTERBLOCK,/* kids[0] = filter chain over a NULL operand, kids[1] body */
    N_WITH,       /* kids[0] N_BODY of N_SETs, kids[1] body */
    N_BREAK,
    N_CONTINUE,
} node_type_t;

/* Operators (N_UNARY, N_BINARY, N_COMPARE). */
typedef enum {
    OP_NOT = 1, OP_NEG, OP_POS,
    OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW, OP_CONCAT, OP_AND, OP_OR,
    OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN,
} op_t;

typedef struct node node_t;
struct node {
    node_type_t type;
    int line;
    int op;           /* N_UNARY/N_BINARY: op_t; N_TEST: negated */
    char *str;        /* owned */
    size_t len;       /* of str (text may hold NUL bytes) */
    json_t *value;    /* N_CONST: owned */
    node_t **kids;    /* owned; entries may be NULL where the type says */
    char **names;     /* parallel to kids or NULL; owned */
    int *ops;         /* N_COMPARE: n_kids - 1 operators */
    int n_kids;
    int height;       /* of the subtree: 1 for a leaf */
};

/* Parses tokens into a template body (N_BODY). NULL with err "line N: ..."
 * and errno EINVAL for a syntax error or an unsupported construct (named);
 * ENOMEM. */
node_t *jinja_parse(const tk_list_t *tokens, err_t *err);
void jinja_node_free(node_t *n);

/* Whether a filter / test / method name is supported (parse-time check). */
bool jinja_filter_known(const char *name);
bool jinja_test_known(const char *name);
bool jinja_method_known(const char *name);

/* ---- values ------------------------------------------------------------ */
typedef enum {
    JV_UNDEF,     /* name: what was missing (may be NULL), borrowed from the
                     tree or from j, an owned copy */
    JV_DATA,      /* j: owned JSON value */
    JV_NS,        /* p: jns_t, owned by the render */
    JV_MACRO,     /* p: N_MACRO node, env: its defining frame */
    JV_CALLER,    /* p: jcaller_t on the C stack of the call block */
    JV_LOOP,      /* p: jloop_t, owned by the render */
    JV_FUNC,      /* name: global function name (static) */
    JV_METHOD,    /* name: method (static); j: owned receiver, or p: jloop_t */
} jv_kind_t;

typedef struct jframe jframe_t;
typedef struct jv {
    jv_kind_t kind;
    json_t *j;
    void *p;
    const char *name;
    jframe_t *env;    /* JV_MACRO: the frame it was defined in */
    bool gen;         /* JV_DATA array that Jinja would hold as a generator
                         (select, map, unique...): always true, no len(),
                         no index, prints as a generator object */
} jv_t;

/* A namespace(): attributes in insertion order. */
typedef struct jns {
    char **keys;
    jv_t *vals;
    size_t n, cap;
    struct jns *next; /* the render's list */
} jns_t;

typedef struct jloop {
    json_t *items;    /* owned array being iterated (after the loop filter) */
    size_t index0;
    size_t depth0;
    struct jloop *next;
} jloop_t;

typedef struct jcaller {
    const node_t *block; /* N_CALLBLOCK */
    jframe_t *frame;     /* where the call block is */
} jcaller_t;

static inline jv_t jv_undef(const char *name) { return (jv_t){.kind = JV_UNDEF, .name = name}; }
/* Takes j (may be NULL: out of memory, caller checks with jv_oom). */
static inline jv_t jv_data(json_t *j) { return (jv_t){.kind = JV_DATA, .j = j}; }
static inline bool jv_is(const jv_t *v, json_type t)
{
    return v->kind == JV_DATA && json_typeof(v->j) == t;
}
static inline bool jv_is_str(const jv_t *v) { return jv_is(v, JSON_STRING); }
static inline bool jv_is_none(const jv_t *v) { return jv_is(v, JSON_NULL); }
bool jv_is_int(const jv_t *v);    /* integer or boolean (Python bool is an int) */
bool jv_is_num(const jv_t *v);    /* int, bool or float */
double jv_num(const jv_t *v);
int64_t jv_int(const jv_t *v);

jv_t jv_copy(const jv_t *v);      /* another reference */
void jv_free(jv_t *v);            /* releases, leaves JV_UNDEF */
bool jv_truth(const jv_t *v);

/* Python str() of v appended to b (undefined: nothing; none: None). */
void jv_str(jbuf_t *b, const jv_t *v);
/* Python repr() of a JSON value. */
void jv_repr(jbuf_t *b, const json_t *j);
/* Python's float repr. */
void jv_float_repr(jbuf_t *b, double d);
/* Python's name of v's type ("str", "dict", "NoneType", ...). */
const char *jv_type_name(const jv_t *v);

typedef struct tojson_opts {
    bool ensure_ascii;
    bool sort_keys;
    int indent;           /* -1: none */
    const char *indent_str; /* overrides indent when not NULL */
    const char *item_sep, *key_sep; /* NULL: defaults */
} tojson_opts_t;
/* json.dumps(j) with the options; -1 when nesting is too deep. */
int jv_tojson(jbuf_t *b, const json_t *j, const tojson_opts_t *o);

/* Python ==; ordering (-1, 0, 1) with -2 when the types cannot be ordered. */
bool jv_equal(const jv_t *a, const jv_t *b);
bool json_equal_py(const json_t *a, const json_t *b);
int jv_order(const jv_t *a, const jv_t *b);

/* A JSON value for v, for storing in a list or a dict (undefined becomes
 * the undefined marker); new reference, or NULL (errno EINVAL) for a value
 * JSON cannot hold (a namespace, a macro...). */
json_t *jv_to_json(const jv_t *v);
/* The one JSON value that stands for an undefined value inside a list or a
 * dict (["a", x.missing] holds an Undefined in Jinja): borrowed, never freed. */
json_t *jv_undef_marker(void);
/* An element of a list or dict as a value: the marker becomes undefined.
 * jv_elem takes a new reference; jv_elem_view borrows. */
jv_t jv_elem(json_t *e);
jv_t jv_elem_view(json_t *e);

/* ---- strings (UTF-8, Python semantics by code point) ------------------- */
size_t ustr_ncp(const char *s, size_t len);             /* code points */
size_t ustr_cp_off(const char *s, size_t len, size_t k);/* byte offset of code point k */
size_t ustr_next(const char *s, size_t len, size_t i, int32_t *cp); /* next offset */
bool ustr_isspace(int32_t cp);
void ustr_upper(jbuf_t *b, const char *s, size_t len);
void ustr_lower(jbuf_t *b, const char *s, size_t len);
void ustr_title(jbuf_t *b, const char *s, size_t len);
void ustr_capitalize(jbuf_t *b, const char *s, size_t len);
void ustr_put_cp(jbuf_t *b, int32_t cp);

/* ---- render ------------------------------------------------------------ */
typedef struct jrender {
    const json_t *context;     /* borrowed */
    err_t *err;
    struct tm now;             /* strftime_now */
    jns_t *namespaces;         /* freed at the end */
    jloop_t *loops;
    long steps;
    long max_steps;            /* JINJA_STEPS_MAX unless the template says less */
    int depth;
    bool failed;               /* err is set; unwind */
    bool raised;               /* ... by raise_exception(): err holds its message */
    const jv_t *block_value;   /* operand of a set block's / filter block's filters */
} jrender_t;

/* Sets the render's error (first one wins); returns -1. */
int jr_fail(jrender_t *r, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The message for an undefined value used where a value is needed. */
int jr_undef_fail(jrender_t *r, int line, const jv_t *v);

/* Filters and tests; args already evaluated (names[i]: keyword or NULL). */
int jinja_filter_apply(jrender_t *r, int line, const char *name, jv_t *val, jv_t *args,
                       char **names, int n_args, jv_t *out);
int jinja_test_apply(jrender_t *r, int line, const char *name, const jv_t *val, jv_t *args,
                     int n_args, bool *out);
/* Calls a method of a string / dict / list value. */
int jinja_method_call(jrender_t *r, int line, const jv_t *method, jv_t *args, char **names,
                      int n_args, jv_t *out);
/* A function given as a name (select('odd'), map('upper')): the evaluator's
 * hooks for the filters that call filters or tests by name. */
/* obj.name and obj[key] with Jinja's lookup rules (a miss is undefined). */
int jinja_getattr(jrender_t *r, int line, const jv_t *obj, const char *name, jv_t *out);
int jinja_getitem(jrender_t *r, int line, const jv_t *obj, const jv_t *key, jv_t *out);
/* Python's "fmt % args". */
int jinja_str_format(jrender_t *r, int line, const char *fmt, size_t len, const jv_t *args,
                     jv_t *out);
/* A new string value from b (freed); an error when b failed. */
int jinja_str_value(jrender_t *r, jbuf_t *b, jv_t *out);
int jinja_oom(jrender_t *r);
/* ---- evaluator internals (jinja_scope, jinja_eval, jinja_ops, jinja_call,
 * jinja_exec) ------------------------------------------------------------ */
struct jframe {
    jframe_t *parent;
    const char **names;   /* borrowed from the tree (or static) */
    jv_t *vals;
    size_t n, cap;
};

/* Binds name (borrowed: tree or static text) in f, taking *v. */
int jinja_frame_set(jrender_t *r, jframe_t *f, const char *name, jv_t *v);
void jinja_frame_fini(jframe_t *f);
jframe_t *jinja_frame_root(jframe_t *f);
/* A variable: frames outwards, the context, the globals; undefined else. */
jv_t jinja_lookup(jrender_t *r, jframe_t *f, const char *name);
jns_t *jinja_ns_new(jrender_t *r);
jv_t *jinja_ns_get(jns_t *ns, const char *name);
int jinja_ns_set(jrender_t *r, jns_t *ns, const char *name, jv_t *v); /* takes *v */
int jinja_check_nesting(jrender_t *r, int line, const jv_t *v);
/* Charges n steps of work (elements walked or copied); -1 past the budget. */
int jinja_charge(jrender_t *r, int line, size_t n);
/* Counts a step and a nesting level (undone by the caller: r->depth--). */
int jinja_enter(jrender_t *r, int line);

int jinja_eval(jrender_t *r, const node_t *n, jframe_t *f, jv_t *out);
/* Statements; 0, 1 (break), 2 (continue) or -1. */
int jinja_exec(jrender_t *r, const node_t *n, jframe_t *f, jbuf_t *out);
/* An N_CALL node, with the caller() of a call block (or NULL). */
int jinja_eval_call(jrender_t *r, const node_t *n, jframe_t *f, jcaller_t *caller, jv_t *out);
int jinja_eval_args(jrender_t *r, const node_t *n, int first, jframe_t *f, jv_t **args_p);
void jinja_args_free(jv_t *args, int n);
int jinja_call(jrender_t *r, int line, jv_t *callee, jv_t *args, char **names, int n_args,
               jcaller_t *caller, jframe_t *f, jv_t *out);

int jinja_arith(jrender_t *r, int line, int op, const jv_t *a, const jv_t *b, jv_t *out);
int jinja_compare(jrender_t *r, int line, int op, const jv_t *a, const jv_t *b, bool *out);
int jinja_int_result(jrender_t *r, int line, bool overflow, int64_t v, jv_t *out);
int jinja_float_result(jrender_t *r, double v, jv_t *out);
int jinja_bool_result(jrender_t *r, bool v, jv_t *out);

/* Renders the template body. */
int jinja_render(const node_t *root, jrender_t *r, jbuf_t *out);

/* Slicing and items of a value: list/string items as a new array. */
json_t *jv_iter_array(jrender_t *r, int line, const jv_t *v, int *rc);

#endif /* MOE_CHAT_JINJA_PRIVATE_H */
