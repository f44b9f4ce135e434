/* coord_options: the command-line options of a coordinator, defined once
 * (name, default, help, check) for the two programs that run one:
 * moe-coordinator and rank 0 of moe-mpi. Each program adds its own options
 * (the node endpoints, the bind address) around this table and passes the
 * result to coordinator_start.
 */
#ifndef MOE_COORDINATOR_COORD_OPTIONS_H
#define MOE_COORDINATOR_COORD_OPTIONS_H

#include <stdbool.h>
#include <stdio.h>

#include "coordinator/coordinator.h"
#include "core/arg.h"
#include "core/err.h"

enum { COORD_OPTIONS_N = 35 }; /* rows of the table, ARG_OPT_END not counted */

typedef struct coord_options {
    coordinator_opts_t co;      /* what the options set; nodes and bind are the program's */
    int threads;                /* OpenBLAS threads; 0: all cores */
    const char *endpoint_file;  /* NULL: stdout only */
    const char *http_url_file;  /* --http-url-file: the HTTP URL is written there */
    bool no_preload;            /* --no-preload: clears co.preload (a program may
                                   set that on by default) */
} coord_options_t;

/* Every option at its default. */
void coord_options_init(coord_options_t *self);

/* The rows of every shared option, storing into self, ended by ARG_OPT_END:
 * include it in a program's table with ARG_OPT_TABLE(table). */
void coord_options_table(coord_options_t *self, arg_opt_t table[COORD_OPTIONS_N + 1]);

/* The help lines of the shared options, with their defaults, in the table's
 * order (two-space indent, the descriptions from column 25). */
void coord_options_help(FILE *out);

/* After parsing: checks what one option cannot check alone (--placement with
 * --placement-groups, --replicas with a placement file, --preload with
 * --no-preload) and resolves "not given" (--replicas: 1; --no-preload
 * clears co.preload). 0, or -1 with EINVAL and err. */
int coord_options_finish(coord_options_t *self, err_t *err);

#endif /* MOE_COORDINATOR_COORD_OPTIONS_H */
