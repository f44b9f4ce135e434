/* arg: command lines, parsed the same way by every program from a table of
 * its options.
 *
 * An option is a whole word: "--name VALUE" or "--name=VALUE" for one that
 * takes a value, "--name" for a flag. Names match exactly, never by prefix
 * (so --prompt is not --prompt-ids). "--" ends the options. Every other word
 * is an operand: an error ("unexpected argument"), or with ARG_STOP_AT_OPERAND
 * where the caller's command starts (moe-client). Messages name the option
 * and, for numbers, the range they must be in; they end without a hint, so
 * that a program adds its own ("prog: MSG (see --help)").
 */
#ifndef MOE_CORE_ARG_H
#define MOE_CORE_ARG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/err.h"

typedef enum arg_kind {
    ARG_END = 0,  /* ends a table */
    ARG_FLAG,     /* bool *dest = true; takes no value */
    ARG_STRING,   /* const char **dest = the value (borrowed from argv) */
    ARG_INT,      /* int *dest = the value, a whole decimal in [min, max] */
    ARG_U64,      /* uint64_t *dest = the value, a whole non-negative decimal */
    ARG_FLOAT,    /* float *dest = the value, a finite number in [fmin, fmax] */
    ARG_STRINGS,  /* repeatable: ((const char **)dest)[(*count)++] = the value, at
                     most max of them */
    ARG_PARSE,    /* parse(value, name, dest, err): the option's own check */
    ARG_HELP,     /* arg_parse returns ARG_HELP_ASKED at once; no dest */
    ARG_TABLE,    /* dest: another table whose options are also accepted */
} arg_kind_t;

/* ARG_PARSE's check of one value: 0, or -1 with EINVAL and err. */
typedef int (*arg_parse_fn)(const char *text, const char *name, void *dest, err_t *err);

typedef struct arg_opt {
    const char *name;       /* the word as typed: "--model", "-h" */
    arg_kind_t kind;
    void *dest;
    int min, max;           /* ARG_INT: the range, max 0 meaning INT_MAX;
                               ARG_STRINGS: max values */
    int *count;             /* ARG_STRINGS: values stored so far */
    float fmin, fmax;       /* ARG_FLOAT: the range */
    arg_parse_fn parse;     /* ARG_PARSE */
} arg_opt_t;

/* Table rows, one macro per kind. */
#define ARG_OPT_FLAG(n, d) {.name = (n), .kind = ARG_FLAG, .dest = (d)}
#define ARG_OPT_STRING(n, d) {.name = (n), .kind = ARG_STRING, .dest = (d)}
#define ARG_OPT_INT(n, d, lo, hi) {.name = (n), .kind = ARG_INT, .dest = (d), .min = (lo), \
                                   .max = (hi)}
#define ARG_OPT_U64(n, d) {.name = (n), .kind = ARG_U64, .dest = (d)}
#define ARG_OPT_FLOAT(n, d, lo, hi) {.name = (n), .kind = ARG_FLOAT, .dest = (d), .fmin = (lo), \
                                     .fmax = (hi)}
#define ARG_OPT_STRINGS(n, d, cap, cnt) {.name = (n), .kind = ARG_STRINGS, .dest = (d), \
                                         .max = (cap), .count = (cnt)}
#define ARG_OPT_PARSE(n, d, fn) {.name = (n), .kind = ARG_PARSE, .dest = (d), .parse = (fn)}
#define ARG_OPT_HELP(n) {.name = (n), .kind = ARG_HELP}
#define ARG_OPT_TABLE(t) {.kind = ARG_TABLE, .dest = (void *)(t)}
#define ARG_OPT_END {.kind = ARG_END}

enum { ARG_HELP_ASKED = 1 };          /* arg_parse: --help was given */
enum { ARG_STOP_AT_OPERAND = 1 };     /* arg_parse flag */

/* Parses argv[first..argc) against table (ended by ARG_END). Returns 0 when
 * every word was an option; ARG_HELP_ASKED as soon as an ARG_HELP option is
 * seen; -1 with EINVAL and err at the first bad word. With
 * ARG_STOP_AT_OPERAND it stops at the first operand and *next is its index
 * (argc when none); without, *next (may be NULL) is argc. */
int arg_parse(int argc, char *const *argv, int first, const arg_opt_t *table, int flags,
              int *next, err_t *err);

/* A program's checks across its options, after a good parse: 0, or -1 with
 * EINVAL and err. */
typedef int (*arg_check_fn)(void *ctx, err_t *err);

/* A program's whole command line: arg_parse of argv[1..) with table plus
 * "--help", then check(ctx) (check may be NULL). Returns 0, or -1 after
 * printing "PROG: MSG (see --help)" on stderr; for --help (or a table's own
 * ARG_HELP option) prints usage(stdout) and exits 0, as nothing is set up yet
 * that an exit could leave behind. */
int arg_parse_main(const char *prog, int argc, char *const *argv, const arg_opt_t *table,
                   void (*usage)(FILE *out), arg_check_fn check, void *ctx);

/* Parses text as a whole decimal integer in [min, max] (max 0: INT_MAX) into
 * *out. -1 with EINVAL and err = "NAME must be an integer in [MIN, MAX] (got
 * 'TEXT')" (or "... <= MAX" when the text is an integer above it; MAX is
 * stated either way) otherwise; *out is untouched then. */
int arg_int_range(const char *text, const char *name, int min, int max, int *out,
                  err_t *err);

/* A whole non-negative decimal into *out; -1 with EINVAL and err = "NAME must
 * be an integer in [0, 18446744073709551615] (got 'TEXT')" otherwise. */
int arg_u64(const char *text, const char *name, uint64_t *out, err_t *err);

/* A finite number in [min, max] into *out; -1 with EINVAL and err = "NAME
 * must be a number in [MIN, MAX] (got 'TEXT')" otherwise. */
int arg_float(const char *text, const char *name, float min, float max, float *out,
              err_t *err);

/* arg_int_range with no upper bound but INT_MAX. */
int arg_int(const char *text, const char *name, int min, int *out, err_t *err);

#endif /* MOE_CORE_ARG_H */
