/* mem: the one door to the heap.
 *
 * Every allocation in moecluster goes through here so that tests can make the
 * Nth call fail (mem_fail_after) and check that out-of-memory paths report an
 * error and leak nothing. All functions set errno to ENOMEM on failure.
 */
#ifndef MOE_CORE_MEM_H
#define MOE_CORE_MEM_H

#include <stddef.h>

enum { MEM_ALIGN = 64 }; /* one cache line: whole AVX-512 vectors, no split loads */

void *mem_alloc(size_t size);                 /* NULL on failure */
void *mem_calloc(size_t count, size_t size);  /* zeroed; NULL on failure or overflow */
void *mem_realloc(void *p, size_t size);      /* NULL on failure, p untouched */
void *mem_alloc_aligned(size_t size);         /* MEM_ALIGN-aligned; free with mem_free */
/* For data streamed whole again and again (weights): from 2 MB up, aligned
 * to 2 MB and advised into transparent huge pages (MADV_HUGEPAGE, where the
 * kernel allows them), so that streaming it takes one TLB entry per 2 MB
 * instead of one per 4 KB page, and populated at once (the caller is to
 * fill it); below, mem_alloc_aligned. Free with mem_free. */
void *mem_alloc_stream(size_t size);
char *mem_strdup(const char *s);              /* NULL on failure */
void mem_free(void *p);                       /* accepts NULL */

/* Test hook: the allocation n calls from now (n >= 1) and all later ones fail
 * until mem_fail_after(-1) restores normal behaviour. Not thread-safe: tests
 * use it from one thread. */
void mem_fail_after(long n);

#endif /* MOE_CORE_MEM_H */
