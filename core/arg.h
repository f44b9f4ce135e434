/* arg: command-line values, checked the same way by every program. */
#ifndef MOE_CORE_ARG_H
#define MOE_CORE_ARG_H

#include "core/err.h"

/* Parses text as a whole decimal integer in [min, INT_MAX] into *out. -1 with
 * EINVAL and err = "NAME must be an integer >= MIN (got 'TEXT')" otherwise;
 * *out is untouched then. */
int arg_int(const char *text, const char *name, int min, int *out, err_t *err);

#endif /* MOE_CORE_ARG_H */
