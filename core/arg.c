/* arg: see arg.h. */
#include "core/arg.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int arg_int_range(const char *text, const char *name, int min, int max, int *out,
                  err_t *err)
{
    int hi = max ? max : INT_MAX;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    bool whole = end != text && *end == '\0' && !isspace((unsigned char)text[0]);
    if (whole && errno == 0 && v >= min && v <= hi) {
        *out = (int)v;
        return 0;
    }
    if (whole && (v > hi || errno == ERANGE) && text[0] != '-')
        return err_set(err, EINVAL, "%s must be an integer <= %d (got '%s')", name, hi, text);
    return err_set(err, EINVAL, "%s must be an integer in [%d, %d] (got '%s')", name, min, hi,
                   text);
}

int arg_int(const char *text, const char *name, int min, int *out, err_t *err)
{
    return arg_int_range(text, name, min, 0, out, err);
}

int arg_u64(const char *text, const char *name, uint64_t *out, err_t *err)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || *end || !isdigit((unsigned char)text[0]))
        return err_set(err, EINVAL, "%s must be an integer in [0, %llu] (got '%s')", name,
                       (unsigned long long)UINT64_MAX, text);
    *out = (uint64_t)v;
    return 0;
}

int arg_float(const char *text, const char *name, float min, float max, float *out,
              err_t *err)
{
    char *end = NULL;
    errno = 0;
    float v = strtof(text, &end);
    if (errno || end == text || *end || !isfinite(v) || v < min || v > max)
        return err_set(err, EINVAL, "%s must be a number in [%g, %g] (got '%s')", name,
                       (double)min, (double)max, text);
    *out = v;
    return 0;
}

/* The option of table (or of the tables it includes) named by the len
 * characters of word; NULL when none. */
static const arg_opt_t *s_find(const arg_opt_t *table, const char *word, size_t len)
{
    for (const arg_opt_t *o = table; o->kind != ARG_END; o++) {
        if (o->kind == ARG_TABLE) {
            const arg_opt_t *found = s_find(o->dest, word, len);
            if (found)
                return found;
        } else if (strlen(o->name) == len && strncmp(o->name, word, len) == 0) {
            return o;
        }
    }
    return NULL;
}

/* Stores value into o's destination. */
static int s_store(const arg_opt_t *o, const char *value, err_t *err)
{
    switch (o->kind) {
    case ARG_STRING:
        *(const char **)o->dest = value;
        return 0;
    case ARG_INT:
        return arg_int_range(value, o->name, o->min, o->max, o->dest, err);
    case ARG_U64:
        return arg_u64(value, o->name, o->dest, err);
    case ARG_FLOAT:
        return arg_float(value, o->name, o->fmin, o->fmax, o->dest, err);
    case ARG_STRINGS:
        if (*o->count >= o->max)
            return err_set(err, EINVAL, "%s may be given at most %d times", o->name, o->max);
        ((const char **)o->dest)[(*o->count)++] = value;
        return 0;
    case ARG_PARSE:
        return o->parse(value, o->name, o->dest, err);
    default:
        return err_set(err, EINVAL, "%s takes no value", o->name);
    }
}

int arg_parse(int argc, char *const *argv, int first, const arg_opt_t *table, int flags,
              int *next, err_t *err)
{
    int i = first;
    const char *operand = NULL;
    bool options_end = false;
    for (; i < argc; i++) {
        const char *word = argv[i];
        if (options_end || word[0] != '-' || word[1] == '\0') {
            if (flags & ARG_STOP_AT_OPERAND)
                break;
            if (!operand)
                operand = word;
            continue;
        }
        if (strcmp(word, "--") == 0) {
            options_end = true;
            continue;
        }
        const char *eq = strncmp(word, "--", 2) == 0 ? strchr(word, '=') : NULL;
        size_t len = eq ? (size_t)(eq - word) : strlen(word);
        const arg_opt_t *o = s_find(table, word, len);
        if (!o)
            return err_set(err, EINVAL, "unknown or incomplete option '%s'", word);
        if (o->kind == ARG_HELP) {
            if (next)
                *next = i;
            return ARG_HELP_ASKED;
        }
        if (o->kind == ARG_FLAG) {
            if (eq)
                return err_set(err, EINVAL, "%s takes no value (got '%s')", o->name, word);
            *(bool *)o->dest = true;
            continue;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (!value) {
            if (i + 1 >= argc)
                return err_set(err, EINVAL, "unknown or incomplete option '%s': it needs a "
                               "value", word);
            value = argv[++i];
        }
        if (s_store(o, value, err) < 0)
            return -1;
    }
    if (operand)
        return err_set(err, EINVAL, "unexpected argument '%s'", operand);
    if (next)
        *next = i;
    return 0;
}

int arg_parse_main(const char *prog, int argc, char *const *argv, const arg_opt_t *table,
                   void (*usage)(FILE *out), arg_check_fn check, void *ctx)
{
    const arg_opt_t with_help[] = {ARG_OPT_HELP("--help"), ARG_OPT_TABLE(table), ARG_OPT_END};
    err_t err = {0};
    int rc = arg_parse(argc, argv, 1, with_help, 0, NULL, &err);
    if (rc == ARG_HELP_ASKED) {
        usage(stdout);
        exit(0);
    }
    if (rc == 0 && check)
        rc = check(ctx, &err);
    if (rc < 0) {
        fprintf(stderr, "%s: %s (see --help)\n", prog, err.msg);
        return -1;
    }
    return 0;
}
