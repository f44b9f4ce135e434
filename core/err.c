/* err: see err.h. */
#include "core/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int err_set(err_t *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    errno = code;
    return -1;
}

int err_wrap(err_t *err, const char *fmt, ...)
{
    int saved = errno;
    if (err) {
        char prefix[ERR_MSG_MAX];
        char old[ERR_MSG_MAX];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof prefix, fmt, ap);
        va_end(ap);
        memcpy(old, err->msg, sizeof old);
        /* Truncation is acceptable: the message stays a readable prefix. */
        int n = snprintf(err->msg, sizeof err->msg, "%s: ", prefix);
        if (n >= 0 && (size_t)n < sizeof err->msg)
            snprintf(err->msg + n, sizeof err->msg - (size_t)n, "%s", old);
    }
    errno = saved;
    return -1;
}

void err_clear(err_t *err)
{
    if (err) {
        err->code = 0;
        err->msg[0] = '\0';
    }
}
