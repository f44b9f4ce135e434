/* idlist: the text form of token id lists, "5,17,2", as programs take them
 * on the command line and print them. */
#ifndef MOE_CORE_IDLIST_H
#define MOE_CORE_IDLIST_H

#include <stdint.h>

#include "core/err.h"

enum { IDLIST_MAX = 1 << 20 }; /* ids in one list; more is E2BIG */

/* Parses decimal ids separated by single commas (spaces around them allowed):
 * at least one, each in [0, INT32_MAX]. On success *ids is a mem_alloc'd
 * array of *n ids (caller frees with mem_free). EINVAL names the bad item. */
int idlist_parse(const char *text, int32_t **ids, int *n, err_t *err);

/* A program's id-list option, parsed as idlist_parse does; on a bad list
 * prints "PROG: NAME: why" on stderr, a usage error (the caller exits with
 * status 2), and returns -1. */
int idlist_option(const char *prog, const char *name, const char *text, int32_t **ids, int *n);

/* "5,17,2" for n ids, "" for none: a mem_alloc'd string (caller frees), NULL
 * when out of memory. */
char *idlist_format(const int32_t *ids, int n);

#endif /* MOE_CORE_IDLIST_H */
