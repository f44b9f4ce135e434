/* jinja_lex: template source to tokens, with the whitespace rules of the
 * environment transformers builds: trim_blocks (the first newline after a
 * block or comment tag goes), lstrip_blocks (spaces and tabs before a block
 * or comment tag at the start of a line go), '-' inside a delimiter strips
 * all whitespace on that side, '+' turns the block rules off for that tag,
 * newlines are normalized to \n and one trailing newline is dropped
 * (keep_trailing_newline=False). {% raw %} blocks become text.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja_private.h"
#include "core/mem.h"

typedef struct lexer {
    const char *s;
    size_t n, i;
    int line;
    tk_list_t *out;
    err_t *err;
} lexer_t;

static int s_push(lexer_t *lx, tk_type_t type, const char *s, size_t len, int line, tk_t **tk_p)
{
    tk_list_t *o = lx->out;
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 64;
        tk_t *v = mem_realloc(o->v, cap * sizeof *v);
        if (!v)
            return err_set(lx->err, ENOMEM, "chat template: out of memory");
        o->v = v;
        o->cap = cap;
    }
    tk_t *t = &o->v[o->n];
    memset(t, 0, sizeof *t);
    t->type = type;
    t->line = line;
    if (s) {
        t->s = mem_alloc(len + 1);
        if (!t->s)
            return err_set(lx->err, ENOMEM, "chat template: out of memory");
        memcpy(t->s, s, len);
        t->s[len] = '\0';
        t->len = len;
    }
    o->n++;
    if (tk_p)
        *tk_p = t;
    return 0;
}

static int s_count_lines(const char *s, size_t n)
{
    int k = 0;
    for (size_t i = 0; i < n; i++)
        k += s[i] == '\n';
    return k;
}

static bool s_isws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Finds the next tag opening ({{, {%, {#) at or after i; n when none. */
static size_t s_find_open(const char *s, size_t n, size_t i)
{
    for (; i + 1 < n; i++)
        if (s[i] == '{' && (s[i + 1] == '{' || s[i + 1] == '%' || s[i + 1] == '#'))
            return i;
    return n;
}

/* Whether s[i..] is "{%[-+]? raw|endraw [-+]?%}"; sets the end offset and markers. */
static bool s_is_tag_word(const char *s, size_t n, size_t i, const char *word, size_t *end,
                          char *lmod, char *rmod)
{
    if (i + 2 > n || s[i] != '{' || s[i + 1] != '%')
        return false;
    size_t j = i + 2;
    *lmod = 0;
    if (j < n && (s[j] == '-' || s[j] == '+'))
        *lmod = s[j++];
    while (j < n && s_isws(s[j]))
        j++;
    size_t wl = strlen(word);
    if (j + wl > n || memcmp(s + j, word, wl) != 0)
        return false;
    j += wl;
    while (j < n && s_isws(s[j]))
        j++;
    *rmod = 0;
    if (j < n && (s[j] == '-' || s[j] == '+'))
        *rmod = s[j++];
    if (j + 2 > n || s[j] != '%' || s[j + 1] != '}')
        return false;
    *end = j + 2;
    return true;
}

/* After a block/comment end at i with right marker rmod: the offset where
 * the next text starts (trim_blocks, '-'). */
static size_t s_after_block_end(const char *s, size_t n, size_t i, char rmod)
{
    if (rmod == '-') {
        while (i < n && s_isws(s[i]))
            i++;
    } else if (rmod != '+' && i < n && s[i] == '\n') {
        i++;
    }
    return i;
}

/* String literal at lx->i (quote there): unescapes as Python's
 * unicode-escape does for the common escapes. */
static int s_string(lexer_t *lx)
{
    const char *s = lx->s;
    char q = s[lx->i];
    size_t j = lx->i + 1;
    jbuf_t b = {0};
    int line = lx->line;
    while (j < lx->n && s[j] != q) {
        char c = s[j];
        if (c == '\n')
            lx->line++;
        if (c != '\\' || j + 1 >= lx->n) {
            jbuf_addc(&b, c);
            j++;
            continue;
        }
        char e = s[j + 1];
        j += 2;
        switch (e) {
        case 'n': jbuf_addc(&b, '\n'); break;
        case 't': jbuf_addc(&b, '\t'); break;
        case 'r': jbuf_addc(&b, '\r'); break;
        case 'b': jbuf_addc(&b, '\b'); break;
        case 'f': jbuf_addc(&b, '\f'); break;
        case 'v': jbuf_addc(&b, '\v'); break;
        case 'a': jbuf_addc(&b, '\a'); break;
        case '0': jbuf_addc(&b, '\0'); break;
        case '\\': jbuf_addc(&b, '\\'); break;
        case '\'': jbuf_addc(&b, '\''); break;
        case '"': jbuf_addc(&b, '"'); break;
        case '\n': lx->line++; break; /* line continuation */
        case 'x': case 'u': case 'U': {
            int nd = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            uint32_t cp = 0; /* 8 hex digits fit; checked below */
            for (int k = 0; k < nd; k++, j++) {
                char h = j < lx->n ? s[j] : 0;
                int v = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                      : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
                if (v < 0) {
                    jbuf_free(&b);
                    return err_set(lx->err, EINVAL, "chat template line %d: bad \\%c escape "
                                   "in a string", line, e);
                }
                cp = cp * 16 + (uint32_t)v;
            }
            if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) { /* no lone surrogates */
                jbuf_free(&b);
                return err_set(lx->err, EINVAL, "chat template line %d: bad \\%c escape "
                               "in a string", line, e);
            }
            ustr_put_cp(&b, (int32_t)cp);
            break;
        }
        default: /* Python keeps unknown escapes as written */
            jbuf_addc(&b, '\\');
            jbuf_addc(&b, e);
            if (e == '\n')
                lx->line++;
        }
    }
    if (j >= lx->n) {
        jbuf_free(&b);
        return err_set(lx->err, EINVAL, "chat template line %d: unterminated string", line);
    }
    lx->i = j + 1;
    if (b.failed) {
        jbuf_free(&b);
        return err_set(lx->err, ENOMEM, "chat template: out of memory");
    }
    int rc = s_push(lx, TK_STRING, b.p ? b.p : "", b.len, line, NULL);
    jbuf_free(&b);
    return rc;
}

static const char *const S_OPS[] = {
    "//", "**", "==", "!=", "<=", ">=", "+", "-", "/", "*", "%", "~", "[", "]", "(", ")",
    "{", "}", "<", ">", "=", ".", ":", "|", ",", ";",
};

/* Tokens inside a tag up to its end delimiter (end_c: '}' for }}, '%' for %}).
 * Returns the right marker through rmod and leaves lx->i after the delimiter. */
static int s_tag(lexer_t *lx, char end_c, char *rmod)
{
    const char *s = lx->s;
    int depth = 0; /* brackets: a '}' inside {...} is not an end */
    for (;;) {
        while (lx->i < lx->n && s_isws(s[lx->i])) {
            lx->line += s[lx->i] == '\n';
            lx->i++;
        }
        size_t i = lx->i;
        if (i >= lx->n)
            return err_set(lx->err, EINVAL, "chat template line %d: unexpected end of template "
                           "inside a tag (missing '%s')", lx->line, end_c == '}' ? "}}" : "%}");
        /* end delimiter, with a marker */
        for (int m = 0; m < 2; m++) {
            size_t k = i + (size_t)m;
            if (m == 1 && !(s[i] == '-' || s[i] == '+'))
                break;
            if (k + 1 < lx->n && s[k] == end_c && s[k + 1] == '}' && (depth == 0 || end_c == '%')) {
                *rmod = m ? s[i] : 0;
                lx->i = k + 2;
                return s_push(lx, end_c == '}' ? TK_VAR_END : TK_BLOCK_END, NULL, 0, lx->line,
                              NULL);
            }
        }
        char c = s[i];
        if (c == '\'' || c == '"') {
            if (s_string(lx) < 0)
                return -1;
            continue;
        }
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') {
            size_t j = i;
            while (j < lx->n && ((s[j] >= 'a' && s[j] <= 'z') || (s[j] >= 'A' && s[j] <= 'Z') ||
                                 (s[j] >= '0' && s[j] <= '9') || s[j] == '_'))
                j++;
            lx->i = j;
            if (s_push(lx, TK_NAME, s + i, j - i, lx->line, NULL) < 0)
                return -1;
            continue;
        }
        if (c >= '0' && c <= '9') {
            /* After '.', only an integer (x.0.name); else int or float. */
            bool after_dot = i > 0 && s[i - 1] == '.';
            char num[128];
            size_t k = 0, j = i;
            bool is_float = false;
            while (j < lx->n && ((s[j] >= '0' && s[j] <= '9') || s[j] == '_')) {
                if (s[j] != '_' && k < sizeof num - 1)
                    num[k++] = s[j];
                j++;
            }
            if (!after_dot && j + 1 < lx->n && s[j] == '.' && s[j + 1] >= '0' && s[j + 1] <= '9') {
                is_float = true;
                num[k < sizeof num - 1 ? k++ : k] = '.';
                j++;
                while (j < lx->n && ((s[j] >= '0' && s[j] <= '9') || s[j] == '_')) {
                    if (s[j] != '_' && k < sizeof num - 1)
                        num[k++] = s[j];
                    j++;
                }
            }
            if (!after_dot && j < lx->n && (s[j] == 'e' || s[j] == 'E')) {
                size_t e = j + 1;
                if (e < lx->n && (s[e] == '+' || s[e] == '-'))
                    e++;
                if (e < lx->n && s[e] >= '0' && s[e] <= '9') {
                    is_float = true;
                    for (size_t q = j; q < e && k < sizeof num - 1; q++)
                        num[k++] = s[q];
                    j = e;
                    while (j < lx->n && s[j] >= '0' && s[j] <= '9') {
                        if (k < sizeof num - 1)
                            num[k++] = s[j];
                        j++;
                    }
                }
            }
            num[k] = '\0';
            tk_t *t;
            if (s_push(lx, is_float ? TK_FLOAT : TK_INT, NULL, 0, lx->line, &t) < 0)
                return -1;
            lx->i = j;
            if (is_float) {
                t->f = strtod(num, NULL);
            } else {
                errno = 0;
                long long v = strtoll(num, NULL, 10);
                if (errno == ERANGE || k >= sizeof num - 1)
                    return err_set(lx->err, EINVAL, "chat template line %d: integer %s is too "
                                   "large", lx->line, num);
                t->i = v;
            }
            continue;
        }
        bool found = false;
        for (size_t k = 0; k < sizeof S_OPS / sizeof *S_OPS; k++) {
            size_t ol = strlen(S_OPS[k]);
            if (i + ol <= lx->n && memcmp(s + i, S_OPS[k], ol) == 0) {
                if (s_push(lx, TK_OP, S_OPS[k], ol, lx->line, NULL) < 0)
                    return -1;
                if (S_OPS[k][0] == '{' || S_OPS[k][0] == '[' || S_OPS[k][0] == '(')
                    depth++;
                else if ((S_OPS[k][0] == '}' || S_OPS[k][0] == ']' || S_OPS[k][0] == ')') &&
                         depth > 0)
                    depth--;
                lx->i = i + ol;
                found = true;
                break;
            }
        }
        if (!found) {
            unsigned char uc = (unsigned char)c;
            if (uc >= 0x20 && uc < 0x7f)
                return err_set(lx->err, EINVAL, "chat template line %d: unexpected character "
                               "'%c'", lx->line, c);
            return err_set(lx->err, EINVAL, "chat template line %d: unexpected byte 0x%02x",
                           lx->line, uc);
        }
    }
}

/* Pushes template text, normalized; empty text is dropped. */
static int s_text(lexer_t *lx, const char *s, size_t n, int line)
{
    if (n == 0)
        return 0;
    return s_push(lx, TK_TEXT, s, n, line, NULL);
}

static int s_lex(lexer_t *lx)
{
    const char *s = lx->s;
    size_t n = lx->n;
    bool line_starting = true;
    while (lx->i < n) {
        size_t start = lx->i;
        size_t open = s_find_open(s, n, start);
        size_t dend = open; /* end of the data before the tag */
        char kind = open < n ? s[open + 1] : 0;
        char lmod = open + 2 < n ? s[open + 2] : 0;
        if (lmod != '-' && lmod != '+')
            lmod = 0;
        if (kind && lmod == '-') {
            while (dend > start && s_isws(s[dend - 1]))
                dend--;
        } else if ((kind == '%' || kind == '#') && lmod != '+') {
            /* lstrip_blocks */
            size_t l = dend;
            while (l > start && s[l - 1] != '\n')
                l--;
            bool has_nl = l > start;
            bool blank = true;
            for (size_t k = l; k < dend; k++)
                if (s[k] != ' ' && s[k] != '\t')
                    blank = false;
            if ((has_nl || line_starting) && blank)
                dend = l;
        }
        int line0 = lx->line;
        if (s_text(lx, s + start, dend - start, line0) < 0)
            return -1;
        lx->line += s_count_lines(s + start, open - start);
        if (open >= n)
            break;
        int tag_line = lx->line;
        size_t after_open = open + 2 + (lmod ? 1 : 0);
        char rmod = 0;
        size_t endraw = 0;
        char rl, rr;
        if (kind == '#') {
            size_t j = after_open;
            while (j + 1 < n && !(s[j] == '#' && s[j + 1] == '}'))
                j++;
            if (j + 1 >= n)
                return err_set(lx->err, EINVAL, "chat template line %d: unterminated comment",
                               tag_line);
            rmod = j > after_open && (s[j - 1] == '-' || s[j - 1] == '+') ? s[j - 1] : 0;
            lx->line += s_count_lines(s + open, j + 2 - open);
            size_t next = s_after_block_end(s, n, j + 2, rmod);
            lx->line += s_count_lines(s + j + 2, next - (j + 2));
            line_starting = next > j + 2 ? s[next - 1] == '\n' : s[j + 1] == '\n';
            lx->i = next;
            continue;
        }
        if (kind == '%' && s_is_tag_word(s, n, open, "raw", &endraw, &rl, &rr)) {
            /* Jinja's raw state: '-' strips after {% raw %}, trim_blocks does
             * not apply there; before {% endraw %} '-' or lstrip_blocks. */
            size_t body = endraw;
            if (rr == '-')
                while (body < n && s_isws(s[body]))
                    body++;
            size_t k = body;
            size_t tag_end = 0;
            while ((k = s_find_open(s, n, k)) < n &&
                   !s_is_tag_word(s, n, k, "endraw", &tag_end, &rl, &rr))
                k++;
            if (k >= n)
                return err_set(lx->err, EINVAL, "chat template line %d: {%% raw %%} without "
                               "{%% endraw %%}", tag_line);
            size_t bend = k;
            if (rl == '-') {
                while (bend > body && s_isws(s[bend - 1]))
                    bend--;
            } else if (rl != '+') {
                size_t l = bend;
                while (l > body && s[l - 1] != '\n')
                    l--;
                bool blank = true;
                for (size_t q = l; q < bend; q++)
                    blank &= s[q] == ' ' || s[q] == '\t';
                if (blank && (l > body || body == 0 || s[body - 1] == '\n'))
                    bend = l;
            }
            lx->line += s_count_lines(s + open, body - open);
            if (s_text(lx, s + body, bend - body, lx->line) < 0)
                return -1;
            lx->line += s_count_lines(s + body, tag_end - body);
            size_t next = s_after_block_end(s, n, tag_end, rr);
            lx->line += s_count_lines(s + tag_end, next - tag_end);
            line_starting = next > 0 && s[next - 1] == '\n';
            lx->i = next;
            continue;
        }
        if (s_push(lx, kind == '{' ? TK_VAR_BEGIN : TK_BLOCK_BEGIN, NULL, 0, tag_line, NULL) < 0)
            return -1;
        lx->i = after_open;
        if (s_tag(lx, kind == '{' ? '}' : '%', &rmod) < 0)
            return -1;
        size_t tag_end = lx->i;
        size_t next = tag_end;
        if (kind == '%')
            next = s_after_block_end(s, n, tag_end, rmod);
        else if (rmod == '-')
            while (next < n && s_isws(s[next]))
                next++;
        lx->line += s_count_lines(s + tag_end, next - tag_end);
        line_starting = s[next - 1] == '\n';
        lx->i = next;
    }
    return s_push(lx, TK_EOF, NULL, 0, lx->line, NULL);
}

int jinja_lex(const char *src, size_t len, tk_list_t *out, err_t *err)
{
    /* Newlines normalized to \n; one trailing newline dropped. */
    char *s = mem_alloc(len + 1);
    if (!s)
        return err_set(err, ENOMEM, "chat template: out of memory");
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n')
                i++;
        } else {
            s[n++] = src[i];
        }
    }
    if (n > 0 && s[n - 1] == '\n')
        n--;
    s[n] = '\0';
    memset(out, 0, sizeof *out);
    lexer_t lx = {.s = s, .n = n, .i = 0, .line = 1, .out = out, .err = err};
    int rc = s_lex(&lx);
    mem_free(s);
    if (rc < 0)
        jinja_tokens_free(out);
    return rc;
}

void jinja_tokens_free(tk_list_t *t)
{
    for (size_t i = 0; i < t->n; i++)
        mem_free(t->v[i].s);
    mem_free(t->v);
    memset(t, 0, sizeof *t);
}
