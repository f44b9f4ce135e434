/* jinja_str: the byte buffer and UTF-8 strings with Python's semantics
 * (lengths, indexes and slices count code points; upper/lower/title by
 * utf8proc's case tables). Invalid UTF-8 bytes count as one code point each,
 * so that no input can make an index run past the string.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <utf8proc.h>

#include "chat/jinja_private.h"
#include "core/mem.h"

void jbuf_add(jbuf_t *b, const char *s, size_t n)
{
    if (b->failed || n == 0)
        return;
    if (n > JINJA_OUTPUT_MAX - b->len) {
        b->failed = true;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = mem_realloc(b->p, cap);
        if (!p) {
            b->failed = b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void jbuf_adds(jbuf_t *b, const char *s) { jbuf_add(b, s, strlen(s)); }
void jbuf_addc(jbuf_t *b, char c) { jbuf_add(b, &c, 1); }

void jbuf_addf(jbuf_t *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        b->failed = true;
    else
        jbuf_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

void jbuf_free(jbuf_t *b)
{
    mem_free(b->p);
    memset(b, 0, sizeof *b);
}

size_t ustr_next(const char *s, size_t len, size_t i, int32_t *cp)
{
    utf8proc_int32_t c;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i,
                                          (utf8proc_ssize_t)(len - i), &c);
    if (k <= 0) {
        *cp = (unsigned char)s[i];
        return i + 1;
    }
    *cp = c;
    return i + (size_t)k;
}

size_t ustr_ncp(const char *s, size_t len)
{
    size_t n = 0;
    int32_t cp;
    for (size_t i = 0; i < len; n++)
        i = ustr_next(s, len, i, &cp);
    return n;
}

size_t ustr_cp_off(const char *s, size_t len, size_t k)
{
    size_t i = 0;
    int32_t cp;
    while (k-- > 0 && i < len)
        i = ustr_next(s, len, i, &cp);
    return i;
}

bool ustr_isspace(int32_t c)
{
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

void ustr_put_cp(jbuf_t *b, int32_t cp)
{
    utf8proc_uint8_t tmp[4];
    if (cp < 0 || cp > 0x10ffff) {
        b->failed = true;
        return;
    }
    if (cp >= 0xd800 && cp <= 0xdfff) { /* a lone surrogate: write its 3 bytes */
        tmp[0] = (utf8proc_uint8_t)(0xe0 | (cp >> 12));
        tmp[1] = (utf8proc_uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        tmp[2] = (utf8proc_uint8_t)(0x80 | (cp & 0x3f));
        jbuf_add(b, (const char *)tmp, 3);
        return;
    }
    utf8proc_ssize_t n = utf8proc_encode_char(cp, tmp);
    jbuf_add(b, (const char *)tmp, (size_t)n);
}

static void s_map(jbuf_t *b, const char *s, size_t len, int mode)
{
    int32_t cp;
    for (size_t i = 0; i < len;) {
        size_t j = ustr_next(s, len, i, &cp);
        if (j - i == 1 && (unsigned char)s[i] >= 0x80) { /* invalid byte: kept */
            jbuf_add(b, s + i, 1);
        } else if (mode && cp == 0xdf) { /* Python's full case mapping: ß -> SS */
            jbuf_add(b, "SS", 2);
        } else {
            ustr_put_cp(b, mode ? utf8proc_toupper(cp) : utf8proc_tolower(cp));
        }
        i = j;
    }
}

void ustr_upper(jbuf_t *b, const char *s, size_t len) { s_map(b, s, len, 1); }
void ustr_lower(jbuf_t *b, const char *s, size_t len) { s_map(b, s, len, 0); }

void ustr_capitalize(jbuf_t *b, const char *s, size_t len)
{
    int32_t cp;
    if (len == 0)
        return;
    size_t j = ustr_next(s, len, 0, &cp);
    s_map(b, s, j, 1);
    s_map(b, s + j, len - j, 0);
}

/* Jinja's title filter: words begin after runs of [-\s({\[<]. */
void ustr_title(jbuf_t *b, const char *s, size_t len)
{
    bool begin = true;
    int32_t cp;
    for (size_t i = 0; i < len;) {
        size_t j = ustr_next(s, len, i, &cp);
        bool sep = cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' ||
                   ustr_isspace(cp);
        if (sep)
            jbuf_add(b, s + i, j - i);
        else
            s_map(b, s + i, j - i, begin);
        begin = sep;
        i = j;
    }
}
