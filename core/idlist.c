/* idlist: see idlist.h. */
#include "core/idlist.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/mem.h"

int idlist_parse(const char *text, int32_t **ids, int *n, err_t *err)
{
    *ids = NULL;
    *n = 0;
    size_t count = 1;
    for (const char *p = text; *p; p++)
        count += *p == ',';
    if (count > IDLIST_MAX)
        return err_set(err, E2BIG, "%zu ids is more than the limit of %d", count, IDLIST_MAX);
    int32_t *out = mem_alloc(count * sizeof *out);
    if (!out)
        return err_set(err, ENOMEM, "out of memory for %zu ids", count);

    const char *p = text;
    for (size_t i = 0; i < count; i++) {
        while (*p == ' ')
            p++;
        if (!isdigit((unsigned char)*p)) {
            mem_free(out);
            return err_set(err, EINVAL, "item %zu is not a non-negative integer", i + 1);
        }
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (errno || v > INT32_MAX) {
            mem_free(out);
            return err_set(err, EINVAL, "item %zu is larger than %d", i + 1, INT32_MAX);
        }
        out[i] = (int32_t)v;
        p = end;
        while (*p == ' ')
            p++;
        if (*p != (i + 1 < count ? ',' : '\0')) {
            mem_free(out);
            return err_set(err, EINVAL, "unexpected '%c' after item %zu", *p, i + 1);
        }
        if (*p)
            p++;
    }
    *ids = out;
    *n = (int)count;
    return 0;
}

char *idlist_format(const int32_t *ids, int n)
{
    size_t cap = (size_t)(n > 0 ? n : 0) * 12 + 1; /* 10 digits, comma, NUL */
    char *s = mem_alloc(cap);
    if (!s)
        return NULL;
    size_t len = 0;
    s[0] = '\0';
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len, i ? ",%d" : "%d", (int)ids[i]);
    return s;
}

int idlist_option(const char *prog, const char *name, const char *text, int32_t **ids, int *n)
{
    err_t err = {0};
    if (idlist_parse(text, ids, n, &err) == 0)
        return 0;
    fprintf(stderr, "%s: %s: %s\n", prog, name, err.msg);
    return -1;
}
