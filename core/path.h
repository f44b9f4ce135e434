/* path: file-system path strings. */
#ifndef MOE_CORE_PATH_H
#define MOE_CORE_PATH_H

/* "dir/name" in a mem_alloc'd string (caller frees with mem_free); NULL with
 * ENOMEM when out of memory. */
char *path_join(const char *dir, const char *name);

#endif /* MOE_CORE_PATH_H */
