/* jinja_method: the Python methods templates call on strings, dicts and
 * lists (s.strip(), s.split(), d.items(), d.get(k)...), with Python's
 * semantics, and "fmt % args". The sandbox transformers uses
 * (ImmutableSandboxedEnvironment) refuses the methods that modify a list or
 * dict; so do we.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "chat/jinja_private.h"
#include "core/mem.h"

static const jv_t *s_arg(jv_t *args, char **names, int n, int pos, const char *kw)
{
    int p = 0;
    for (int i = 0; i < n; i++) {
        if (names && names[i]) {
            if (kw && !strcmp(names[i], kw))
                return &args[i];
        } else if (p++ == pos) {
            return &args[i];
        }
    }
    return NULL;
}

static int s_data(jrender_t *r, json_t *j, jv_t *out)
{
    if (!j)
        return jinja_oom(r);
    *out = jv_data(j);
    return 0;
}

static json_t *s_strn(const char *s, size_t n) { return json_stringn_nocheck(s, n); }

/* Optional string argument; -1 when given but not a string (or none). */
static int s_str_arg(jrender_t *r, int line, const jv_t *a, const char *what, const char **s,
                     size_t *len)
{
    *s = NULL;
    *len = 0;
    if (!a || jv_is_none(a))
        return 0;
    if (!jv_is_str(a))
        return jr_fail(r, line, "%s must be a string, not '%s'", what, jv_type_name(a));
    *s = json_string_value(a->j);
    *len = json_string_length(a->j);
    return 0;
}

static bool s_in_set(int32_t cp, const char *chars, size_t clen)
{
    if (!chars)
        return ustr_isspace(cp);
    int32_t c;
    for (size_t i = 0; i < clen;) {
        i = ustr_next(chars, clen, i, &c);
        if (c == cp)
            return true;
    }
    return false;
}

/* Start of the code point that ends at b (b > 0). */
static size_t s_prev(const char *s, size_t b)
{
    size_t k = b - 1;
    while (k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80 && b - k < 4)
        k--;
    return k;
}

static int s_split(jrender_t *r, int line, const char *s, size_t len, jv_t *args, char **names,
                   int n_args, bool from_right, jv_t *out)
{
    const char *sep;
    size_t sl;
    if (s_str_arg(r, line, s_arg(args, names, n_args, 0, "sep"), "separator", &sep, &sl) < 0)
        return -1;
    const jv_t *mx = s_arg(args, names, n_args, 1, "maxsplit");
    int64_t maxsplit = mx && jv_is_int(mx) ? jv_int(mx) : -1;
    if (sep && sl == 0)
        return jr_fail(r, line, "empty separator");
    json_t *parts = json_array();
    if (!parts)
        return jinja_oom(r);
    /* Collect [a, b) spans left to right, or right to left then reverse. */
    size_t a = 0, b = len;
    int64_t done = 0;
    int32_t cp;
    int rc = 0;
    if (!sep) {
        if (!from_right) {
            size_t i = 0;
            while (rc == 0) {
                while (i < len) { /* skip whitespace */
                    size_t j = ustr_next(s, len, i, &cp);
                    if (!ustr_isspace(cp))
                        break;
                    i = j;
                }
                if (i >= len)
                    break;
                if (maxsplit >= 0 && done >= maxsplit) { /* the rest, as is */
                    rc = json_array_append_new(parts, s_strn(s + i, len - i));
                    break;
                }
                size_t st = i;
                while (i < len) {
                    size_t j = ustr_next(s, len, i, &cp);
                    if (ustr_isspace(cp))
                        break;
                    i = j;
                }
                rc = json_array_append_new(parts, s_strn(s + st, i - st));
                done++;
            }
        } else {
            size_t e = len;
            json_t *rev = json_array();
            while (rev && rc == 0) {
                while (e > 0) {
                    size_t k = s_prev(s, e);
                    ustr_next(s, len, k, &cp);
                    if (!ustr_isspace(cp))
                        break;
                    e = k;
                }
                if (e == 0)
                    break;
                if (maxsplit >= 0 && done >= maxsplit) {
                    rc = json_array_append_new(rev, s_strn(s, e));
                    break;
                }
                size_t st = e;
                while (st > 0) {
                    size_t k = s_prev(s, st);
                    ustr_next(s, len, k, &cp);
                    if (ustr_isspace(cp))
                        break;
                    st = k;
                }
                rc = json_array_append_new(rev, s_strn(s + st, e - st));
                e = st;
                done++;
            }
            for (size_t i = rev ? json_array_size(rev) : 0; rc == 0 && i-- > 0;)
                rc = json_array_append(parts, json_array_get(rev, i));
            if (!rev)
                rc = -1;
            json_decref(rev);
        }
    } else if (!from_right) {
        while (rc == 0) {
            const char *hit = (maxsplit < 0 || done < maxsplit) && a <= len
                                  ? memmem(s + a, len - a, sep, sl) : NULL;
            if (!hit) {
                rc = json_array_append_new(parts, s_strn(s + a, len - a));
                break;
            }
            rc = json_array_append_new(parts, s_strn(s + a, (size_t)(hit - s) - a));
            a = (size_t)(hit - s) + sl;
            done++;
        }
    } else {
        json_t *rev = json_array();
        while (rev && rc == 0) {
            size_t hit = (size_t)-1;
            if ((maxsplit < 0 || done < maxsplit) && b >= sl)
                for (size_t k = b - sl + 1; k-- > 0;)
                    if (!memcmp(s + k, sep, sl)) {
                        hit = k;
                        break;
                    }
            if (hit == (size_t)-1) {
                rc = json_array_append_new(rev, s_strn(s, b));
                break;
            }
            rc = json_array_append_new(rev, s_strn(s + hit + sl, b - hit - sl));
            b = hit;
            done++;
        }
        for (size_t i = rev ? json_array_size(rev) : 0; rc == 0 && i-- > 0;)
            rc = json_array_append(parts, json_array_get(rev, i));
        if (!rev)
            rc = -1;
        json_decref(rev);
    }
    if (rc < 0) {
        json_decref(parts);
        return jinja_oom(r);
    }
    *out = jv_data(parts);
    return 0;
}

/* Whether s starts (ends) with prefix, which may be a string or a list of them. */
static int s_affix(jrender_t *r, int line, const char *s, size_t len, const jv_t *p, bool end,
                   bool *out)
{
    *out = false;
    if (!p)
        return jr_fail(r, line, "%s() takes a string", end ? "endswith" : "startswith");
    if (jv_is(p, JSON_ARRAY)) {
        for (size_t i = 0; i < json_array_size(p->j) && !*out; i++) {
            jv_t e = jv_data(json_array_get(p->j, i));
            if (s_affix(r, line, s, len, &e, end, out) < 0)
                return -1;
        }
        return 0;
    }
    if (!jv_is_str(p))
        return jr_fail(r, line, "%s first arg must be str or a tuple of str, not %s",
                       end ? "endswith" : "startswith", jv_type_name(p));
    size_t pl = json_string_length(p->j);
    const char *q = json_string_value(p->j);
    *out = pl <= len && !memcmp(end ? s + len - pl : s, q, pl);
    return 0;
}

static bool s_cat(int32_t cp, int kind)
{
    utf8proc_category_t c = utf8proc_category(cp);
    bool letter = c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO;
    bool digit = c == UTF8PROC_CATEGORY_ND;
    bool numeric = digit || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
    switch (kind) {
    case 'a': return letter;
    case 'd': return digit;
    case 'n': return numeric;
    case 'A': return letter || numeric;
    case 's': return ustr_isspace(cp);
    }
    return false;
}

static int s_str_method(jrender_t *r, int line, const char *m, const char *s, size_t len,
                        jv_t *args, char **names, int n, jv_t *out)
{
    const jv_t *a0 = s_arg(args, names, n, 0, NULL);
    jbuf_t b = {0};
    int32_t cp;
    if (!strcmp(m, "strip") || !strcmp(m, "lstrip") || !strcmp(m, "rstrip")) {
        const char *chars;
        size_t cl;
        if (s_str_arg(r, line, s_arg(args, names, n, 0, "chars"), "chars", &chars, &cl) < 0)
            return -1;
        int which = m[0] == 'l' ? 1 : m[0] == 'r' ? 2 : 3;
        size_t x = 0, y = len;
        if (which & 1)
            while (x < y) {
                size_t j = ustr_next(s, len, x, &cp);
                if (!s_in_set(cp, chars, cl))
                    break;
                x = j;
            }
        if (which & 2)
            while (y > x) {
                size_t k = s_prev(s, y);
                ustr_next(s, len, k, &cp);
                if (!s_in_set(cp, chars, cl))
                    break;
                y = k;
            }
        return s_data(r, s_strn(s + x, y - x), out);
    }
    if (!strcmp(m, "split") || !strcmp(m, "rsplit"))
        return s_split(r, line, s, len, args, names, n, m[0] == 'r', out);
    if (!strcmp(m, "splitlines")) {
        bool keep = s_arg(args, names, n, 0, "keepends") &&
                    jv_truth(s_arg(args, names, n, 0, "keepends"));
        json_t *parts = json_array();
        size_t st = 0;
        for (size_t i = 0; parts && i < len;) {
            size_t j = ustr_next(s, len, i, &cp);
            bool nl = cp == '\n' || cp == '\r' || cp == '\v' || cp == '\f' || cp == 0x1c ||
                      cp == 0x1d || cp == 0x1e || cp == 0x85 || cp == 0x2028 || cp == 0x2029;
            if (nl) {
                if (cp == '\r' && j < len && s[j] == '\n')
                    j++;
                if (json_array_append_new(parts, s_strn(s + st, (keep ? j : i) - st)) < 0) {
                    json_decref(parts);
                    parts = NULL;
                }
                st = j;
            }
            i = j;
        }
        if (parts && st < len && json_array_append_new(parts, s_strn(s + st, len - st)) < 0) {
            json_decref(parts);
            parts = NULL;
        }
        return s_data(r, parts, out);
    }
    if (!strcmp(m, "startswith") || !strcmp(m, "endswith")) {
        bool t;
        if (s_affix(r, line, s, len, a0, m[0] == 'e', &t) < 0)
            return -1;
        return s_data(r, json_boolean(t), out);
    }
    if (!strcmp(m, "removeprefix") || !strcmp(m, "removesuffix")) {
        bool t;
        if (!a0 || !jv_is_str(a0))
            return jr_fail(r, line, "%s() takes a string", m);
        if (s_affix(r, line, s, len, a0, m[6] == 's', &t) < 0)
            return -1;
        size_t pl = t ? json_string_length(a0->j) : 0;
        return s_data(r, m[6] == 's' ? s_strn(s, len - pl) : s_strn(s + pl, len - pl), out);
    }
    if (!strcmp(m, "replace")) {
        const jv_t *o = s_arg(args, names, n, 0, "old"), *nw = s_arg(args, names, n, 1, "new");
        const jv_t *cnt = s_arg(args, names, n, 2, "count");
        if (!o || !nw || !jv_is_str(o) || !jv_is_str(nw))
            return jr_fail(r, line, "replace() takes two strings");
        int64_t count = cnt && jv_is_int(cnt) ? jv_int(cnt) : -1;
        const char *os = json_string_value(o->j), *ns = json_string_value(nw->j);
        size_t ol = json_string_length(o->j), nl = json_string_length(nw->j);
        size_t i = 0;
        int64_t k = 0;
        if (ol == 0) { /* between every code point, and at both ends */
            while (i <= len && (count < 0 || k < count)) {
                jbuf_add(&b, ns, nl);
                k++;
                if (i >= len)
                    break;
                size_t j = ustr_next(s, len, i, &cp);
                jbuf_add(&b, s + i, j - i);
                i = j;
            }
            jbuf_add(&b, s + i, len - i);
            return jinja_str_value(r, &b, out);
        }
        while (i < len && (count < 0 || k < count)) {
            const char *hit = memmem(s + i, len - i, os, ol);
            if (!hit)
                break;
            jbuf_add(&b, s + i, (size_t)(hit - s) - i);
            jbuf_add(&b, ns, nl);
            i = (size_t)(hit - s) + ol;
            k++;
        }
        jbuf_add(&b, s + i, len - i);
        return jinja_str_value(r, &b, out);
    }
    if (!strcmp(m, "lower") || !strcmp(m, "casefold")) {
        ustr_lower(&b, s, len);
        return jinja_str_value(r, &b, out);
    }
    if (!strcmp(m, "upper")) {
        ustr_upper(&b, s, len);
        return jinja_str_value(r, &b, out);
    }
    if (!strcmp(m, "capitalize")) {
        ustr_capitalize(&b, s, len);
        return jinja_str_value(r, &b, out);
    }
    if (!strcmp(m, "title") || !strcmp(m, "swapcase")) {
        bool prev_cased = false;
        for (size_t i = 0; i < len;) {
            size_t j = ustr_next(s, len, i, &cp);
            utf8proc_category_t c = utf8proc_category(cp);
            bool cased = c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LL ||
                         c == UTF8PROC_CATEGORY_LT;
            int32_t o = cp;
            if (m[0] == 't')
                o = prev_cased ? utf8proc_tolower(cp) : utf8proc_toupper(cp);
            else if (c == UTF8PROC_CATEGORY_LU)
                o = utf8proc_tolower(cp);
            else if (c == UTF8PROC_CATEGORY_LL)
                o = utf8proc_toupper(cp);
            if (j - i == 1 && (unsigned char)s[i] >= 0x80)
                jbuf_add(&b, s + i, 1);
            else
                ustr_put_cp(&b, o);
            prev_cased = cased;
            i = j;
        }
        return jinja_str_value(r, &b, out);
    }
    if (!strcmp(m, "find") || !strcmp(m, "rfind") || !strcmp(m, "index") ||
        !strcmp(m, "rindex") || !strcmp(m, "count")) {
        if (!a0 || !jv_is_str(a0))
            return jr_fail(r, line, "%s() takes a string", m);
        const char *q = json_string_value(a0->j);
        size_t ql = json_string_length(a0->j);
        if (!strcmp(m, "count")) {
            int64_t k = 0;
            if (ql == 0)
                k = (int64_t)ustr_ncp(s, len) + 1;
            else
                for (size_t i = 0; i + ql <= len;) {
                    const char *hit = memmem(s + i, len - i, q, ql);
                    if (!hit)
                        break;
                    k++;
                    i = (size_t)(hit - s) + ql;
                }
            return s_data(r, json_integer(k), out);
        }
        int64_t at = -1;
        if (m[0] != 'r') {
            const char *hit = ql == 0 ? s : memmem(s, len, q, ql);
            if (hit)
                at = (int64_t)ustr_ncp(s, (size_t)(hit - s));
        } else if (ql <= len) {
            for (size_t k = len - ql + 1; k-- > 0;)
                if (!memcmp(s + k, q, ql)) {
                    at = (int64_t)ustr_ncp(s, k);
                    break;
                }
        }
        if (at < 0 && strstr(m, "index"))
            return jr_fail(r, line, "substring not found");
        return s_data(r, json_integer(at), out);
    }
    if (!strcmp(m, "join")) {
        if (!a0)
            return jr_fail(r, line, "join() takes an iterable");
        int rc;
        json_t *items = jv_iter_array(r, line, a0, &rc);
        if (!items)
            return -1;
        for (size_t i = 0; i < json_array_size(items); i++) {
            json_t *e = json_array_get(items, i);
            if (!json_is_string(e)) {
                jv_t ev = jv_data(e);
                json_decref(items);
                jbuf_free(&b);
                return jr_fail(r, line, "sequence item %zu: expected str instance, %s found", i,
                               jv_type_name(&ev));
            }
            if (i)
                jbuf_add(&b, s, len);
            jbuf_add(&b, json_string_value(e), json_string_length(e));
        }
        json_decref(items);
        return jinja_str_value(r, &b, out);
    }
    if (!strncmp(m, "is", 2)) {
        bool t = len > 0, any_cased = false, all_ok = true;
        for (size_t i = 0; i < len;) {
            size_t j = ustr_next(s, len, i, &cp);
            utf8proc_category_t c = utf8proc_category(cp);
            if (!strcmp(m, "islower") || !strcmp(m, "isupper")) {
                if (c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LT)
                    all_ok &= m[2] == 'u', any_cased = true;
                else if (c == UTF8PROC_CATEGORY_LL)
                    all_ok &= m[2] == 'l', any_cased = true;
            } else {
                int kind = !strcmp(m, "isalpha") ? 'a' : !strcmp(m, "isdigit") ? 'd'
                         : !strcmp(m, "isdecimal") ? 'd' : !strcmp(m, "isnumeric") ? 'n'
                         : !strcmp(m, "isalnum") ? 'A' : 's';
                if (!s_cat(cp, kind))
                    t = false;
            }
            i = j;
        }
        if (!strcmp(m, "islower") || !strcmp(m, "isupper"))
            t = any_cased && all_ok;
        else if (!strcmp(m, "istitle")) {
            jbuf_t tb = {0};
            jv_t tv;
            if (s_str_method(r, line, "title", s, len, NULL, NULL, 0, &tv) < 0)
                return -1;
            t = len > 0 && json_string_length(tv.j) == len && !memcmp(json_string_value(tv.j), s, len);
            jv_free(&tv);
            jbuf_free(&tb);
        }
        return s_data(r, json_boolean(t), out);
    }
    if (!strcmp(m, "center") || !strcmp(m, "ljust") || !strcmp(m, "rjust") || !strcmp(m, "zfill")) {
        if (!a0 || !jv_is_int(a0))
            return jr_fail(r, line, "%s() takes an integer width", m);
        int64_t w = jv_int(a0), nc = (int64_t)ustr_ncp(s, len);
        if (w > 65536)
            return jr_fail(r, line, "%s(): width too large", m);
        const jv_t *fc = s_arg(args, names, n, 1, "fillchar");
        const char *fill = " ";
        size_t fl = 1;
        if (fc && jv_is_str(fc) && ustr_ncp(json_string_value(fc->j), json_string_length(fc->j)) == 1) {
            fill = json_string_value(fc->j);
            fl = json_string_length(fc->j);
        }
        int64_t pad = w > nc ? w - nc : 0, l = 0;
        if (m[0] == 'c')
            l = pad / 2 + (pad & w & 1);
        else if (m[0] == 'r')
            l = pad;
        else if (m[0] == 'z') {
            size_t sign = len > 0 && (s[0] == '-' || s[0] == '+');
            jbuf_add(&b, s, sign);
            for (int64_t k = 0; k < pad; k++)
                jbuf_addc(&b, '0');
            jbuf_add(&b, s + sign, len - sign);
            return jinja_str_value(r, &b, out);
        }
        for (int64_t k = 0; k < l; k++)
            jbuf_add(&b, fill, fl);
        jbuf_add(&b, s, len);
        for (int64_t k = 0; k < pad - l; k++)
            jbuf_add(&b, fill, fl);
        return jinja_str_value(r, &b, out);
    }
    if (!strcmp(m, "partition") || !strcmp(m, "rpartition")) {
        if (!a0 || !jv_is_str(a0) || json_string_length(a0->j) == 0)
            return jr_fail(r, line, "%s() takes a non-empty string", m);
        const char *q = json_string_value(a0->j);
        size_t ql = json_string_length(a0->j);
        size_t at = (size_t)-1;
        if (m[0] == 'p') {
            const char *hit = memmem(s, len, q, ql);
            if (hit)
                at = (size_t)(hit - s);
        } else if (ql <= len) {
            for (size_t k = len - ql + 1; k-- > 0;)
                if (!memcmp(s + k, q, ql)) {
                    at = k;
                    break;
                }
        }
        json_t *t = at == (size_t)-1
                        ? (m[0] == 'p' ? json_pack("[s%ss]", s, len, "", "")
                                       : json_pack("[sss%]", "", "", s, len))
                        : json_pack("[s%s%s%]", s, at, q, ql, s + at + ql, len - at - ql);
        return s_data(r, t, out);
    }
    if (!strcmp(m, "format")) {
        /* "{}" / "{0}" / "{name}" fields, no format specs */
        int auto_i = 0;
        for (size_t i = 0; i < len; i++) {
            if (s[i] == '{' && i + 1 < len && s[i + 1] == '{') {
                jbuf_addc(&b, '{');
                i++;
                continue;
            }
            if (s[i] == '}' && i + 1 < len && s[i + 1] == '}') {
                jbuf_addc(&b, '}');
                i++;
                continue;
            }
            if (s[i] != '{') {
                jbuf_addc(&b, s[i]);
                continue;
            }
            const char *close = memchr(s + i, '}', len - i);
            if (!close) {
                jbuf_free(&b);
                return jr_fail(r, line, "format(): single '{' encountered");
            }
            char field[64];
            size_t fl = (size_t)(close - s) - i - 1;
            if (fl >= sizeof field || memchr(s + i + 1, ':', fl) || memchr(s + i + 1, '!', fl)) {
                jbuf_free(&b);
                return jr_fail(r, line, "format(): only {}, {N} and {name} fields are supported");
            }
            memcpy(field, s + i + 1, fl);
            field[fl] = '\0';
            const jv_t *v;
            if (fl == 0)
                v = s_arg(args, names, n, auto_i++, NULL);
            else if (field[0] >= '0' && field[0] <= '9')
                v = s_arg(args, names, n, atoi(field), NULL);
            else
                v = s_arg(args, names, n, -1, field);
            if (!v) {
                jbuf_free(&b);
                return jr_fail(r, line, "format(): no argument for {%s}", field);
            }
            jv_str(&b, v);
            i = (size_t)(close - s);
        }
        return jinja_str_value(r, &b, out);
    }
    return jr_fail(r, line, "'str' object has no method '%s'", m);
}

int jinja_method_call(jrender_t *r, int line, const jv_t *method, jv_t *args, char **names,
                      int n_args, jv_t *out)
{
    const char *m = method->name;
    const json_t *obj = method->j;
    *out = jv_undef(NULL);
    if (json_is_string(obj))
        return s_str_method(r, line, m, json_string_value(obj), json_string_length(obj), args,
                            names, n_args, out);
    if (json_is_object(obj)) {
        if (!strcmp(m, "items") || !strcmp(m, "keys") || !strcmp(m, "values")) {
            json_t *a = json_array();
            const char *k;
            json_t *v;
            json_object_foreach((json_t *)obj, k, v) {
                json_t *e = m[0] == 'i' ? json_pack("[sO]", k, v)
                          : m[0] == 'k' ? json_string_nocheck(k) : json_incref(v);
                if (!a || json_array_append_new(a, e) < 0) {
                    json_decref(a);
                    return jinja_oom(r);
                }
            }
            return s_data(r, a, out);
        }
        if (!strcmp(m, "get")) {
            const jv_t *k = s_arg(args, names, n_args, 0, "key");
            const jv_t *d = s_arg(args, names, n_args, 1, "default");
            json_t *v = k && jv_is_str(k) ? json_object_get(obj, json_string_value(k->j)) : NULL;
            if (v)
                *out = jv_elem(v);
            else if (d)
                *out = jv_copy(d);
            else
                *out = jv_data(json_null());
            return 0;
        }
        if (!strcmp(m, "copy"))
            return s_data(r, json_copy((json_t *)obj), out);
        return jr_fail(r, line, "access to attribute '%s' of 'dict' object is unsafe", m);
    }
    if (json_is_array(obj)) {
        const jv_t *a0 = s_arg(args, names, n_args, 0, NULL);
        if (!strcmp(m, "index") || !strcmp(m, "count")) {
            if (!a0)
                return jr_fail(r, line, "%s() takes one argument", m);
            int64_t k = 0, at = -1;
            for (size_t i = 0; i < json_array_size(obj); i++) {
                jv_t e = jv_elem_view(json_array_get(obj, i));
                if (jv_equal(&e, a0)) {
                    k++;
                    if (at < 0)
                        at = (int64_t)i;
                }
            }
            if (m[0] == 'i' && at < 0)
                return jr_fail(r, line, "value is not in list");
            return s_data(r, json_integer(m[0] == 'i' ? at : k), out);
        }
        if (!strcmp(m, "copy"))
            return s_data(r, json_copy((json_t *)obj), out);
        return jr_fail(r, line, "access to attribute '%s' of 'list' object is unsafe", m);
    }
    return jr_fail(r, line, "'%s' has no method '%s'", "object", m);
}

/* ---- "fmt" % args ------------------------------------------------------------- */
int jinja_str_format(jrender_t *r, int line, const char *fmt, size_t len, const jv_t *args,
                     jv_t *out)
{
    jbuf_t b = {0};
    size_t next = 0;
    bool tuple = jv_is(args, JSON_ARRAY);
    bool mapping = jv_is(args, JSON_OBJECT);
    for (size_t i = 0; i < len; i++) {
        if (fmt[i] != '%') {
            jbuf_addc(&b, fmt[i]);
            continue;
        }
        if (++i >= len)
            goto bad;
        if (fmt[i] == '%') {
            jbuf_addc(&b, '%');
            continue;
        }
        jv_t v;
        json_t *vj = NULL;
        if (fmt[i] == '(') {
            const char *close = memchr(fmt + i, ')', len - i);
            if (!close || !mapping)
                goto bad;
            char key[128];
            size_t kl = (size_t)(close - fmt) - i - 1;
            if (kl >= sizeof key)
                goto bad;
            memcpy(key, fmt + i + 1, kl);
            key[kl] = '\0';
            vj = json_object_get(args->j, key);
            if (!vj) {
                jbuf_free(&b);
                return jr_fail(r, line, "format: no key '%s'", key);
            }
            i = (size_t)(close - fmt) + 1;
        }
        char spec[32] = "%";
        size_t sl = 1;
        while (i < len && strchr("-+ 0#", fmt[i]) && sl < 8)
            spec[sl++] = fmt[i++];
        /* width and precision: at most 3 digits each (no huge paddings) */
        for (int k = 0; i < len && fmt[i] >= '0' && fmt[i] <= '9'; k++, i++)
            if (k < 3)
                spec[sl++] = fmt[i];
        if (i < len && fmt[i] == '.') {
            spec[sl++] = fmt[i++];
            for (int k = 0; i < len && fmt[i] >= '0' && fmt[i] <= '9'; k++, i++)
                if (k < 2)
                    spec[sl++] = fmt[i];
        }
        if (i >= len)
            goto bad;
        char conv = fmt[i];
        if (!vj) {
            if (tuple) {
                if (next >= json_array_size(args->j)) {
                    jbuf_free(&b);
                    return jr_fail(r, line, "not enough arguments for format string");
                }
                vj = json_array_get(args->j, next++);
            } else if (next++ == 0 && args->kind == JV_DATA) {
                vj = args->j;
            } else {
                jbuf_free(&b);
                return jr_fail(r, line, "not enough arguments for format string");
            }
        }
        v = jv_data(vj);
        char tmp[128];
        switch (conv) {
        case 's': case 'r': {
            jbuf_t sv = {0};
            if (conv == 's')
                jv_str(&sv, &v);
            else
                jv_repr(&sv, vj);
            spec[sl++] = 's';
            spec[sl] = '\0';
            if (sl == 2) /* plain %s */
                jbuf_add(&b, sv.p ? sv.p : "", sv.len);
            else {
                char *w = NULL;
                if (asprintf(&w, spec, sv.p ? sv.p : "") < 0)
                    b.failed = b.oom = true;
                else
                    jbuf_adds(&b, w);
                free(w);
            }
            jbuf_free(&sv);
            break;
        }
        case 'd': case 'i': case 'x': case 'X': case 'o': case 'c':
            if (!jv_is_num(&v)) {
                jbuf_free(&b);
                return jr_fail(r, line, "%%%c format: a number is required, not %s", conv,
                               jv_type_name(&v));
            }
            spec[sl++] = 'l';
            spec[sl++] = 'l';
            spec[sl++] = conv == 'i' ? 'd' : conv;
            spec[sl] = '\0';
            snprintf(tmp, sizeof tmp, spec,
                     jv_is_int(&v) ? (long long)jv_int(&v) : (long long)jv_num(&v));
            jbuf_adds(&b, tmp);
            break;
        case 'f': case 'F': case 'e': case 'E': case 'g': case 'G':
            if (!jv_is_num(&v)) {
                jbuf_free(&b);
                return jr_fail(r, line, "%%%c format: a real number is required, not %s", conv,
                               jv_type_name(&v));
            }
            spec[sl++] = conv;
            spec[sl] = '\0';
            snprintf(tmp, sizeof tmp, spec, jv_num(&v));
            jbuf_adds(&b, tmp);
            break;
        default:
            goto bad;
        }
    }
    if (next == 0 && !tuple && !mapping) {
        jbuf_free(&b);
        return jr_fail(r, line, "not all arguments converted during string formatting");
    }
    if (tuple && next < json_array_size(args->j)) {
        jbuf_free(&b);
        return jr_fail(r, line, "not all arguments converted during string formatting");
    }
    return jinja_str_value(r, &b, out);
bad:
    jbuf_free(&b);
    return jr_fail(r, line, "unsupported format character in a %% format");
}
