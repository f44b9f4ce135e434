/* err: human-readable error reports that travel beside errno.
 *
 * Fallible calls return -1 (or NULL) and set errno to a standard code; when the
 * caller passes an err_t, the callee also writes one sentence for a person,
 * naming the file, tensor, field or peer at fault. err may always be NULL.
 */
#ifndef MOE_CORE_ERR_H
#define MOE_CORE_ERR_H

#include <stddef.h>

enum { ERR_MSG_MAX = 512 };

typedef struct err {
    int code;               /* errno value of the failure, 0 when none */
    char msg[ERR_MSG_MAX];  /* one sentence, no trailing newline */
} err_t;

/* Sets errno to code and, when err is not NULL, records code and the formatted
 * message. Always returns -1 so that callers can write `return err_set(...)`. */
int err_set(err_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes the message already in err with more context ("loading X: ...").
 * Keeps errno and err->code. Returns -1. */
int err_wrap(err_t *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Clears err (code 0, empty message); err may be NULL. */
void err_clear(err_t *err);

#endif /* MOE_CORE_ERR_H */
