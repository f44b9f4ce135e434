/* path: file-system path strings. */
#ifndef MOE_CORE_PATH_H
#define MOE_CORE_PATH_H

#include "core/err.h"

/* "dir/name" in a mem_alloc'd string (caller frees with mem_free); NULL with
 * ENOMEM when out of memory. */
char *path_join(const char *dir, const char *name);

/* Writes text and a newline to path through a temporary file (path.tmp.PID),
 * flushed to disk and renamed over path, so that a reader sees no file or
 * the whole line (the endpoint files launchers wait for). 0, or -1 with
 * errno/err; no temporary file is left behind. */
int path_write_line_atomic(const char *path, const char *text, err_t *err);

#endif /* MOE_CORE_PATH_H */
