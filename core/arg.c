/* arg: see arg.h. */
#include "core/arg.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>

int arg_int(const char *text, const char *name, int min, int *out, err_t *err)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < min || v > INT_MAX)
        return err_set(err, EINVAL, "%s must be an integer >= %d (got '%s')", name, min, text);
    *out = (int)v;
    return 0;
}
