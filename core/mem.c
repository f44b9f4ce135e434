/* mem: see mem.h. */
#include "core/mem.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static long s_fail_countdown = -1; /* -1: never fail; otherwise calls left */

static int s_should_fail(void)
{
    if (s_fail_countdown < 0)
        return 0;
    if (s_fail_countdown > 1) {
        s_fail_countdown--;
        return 0;
    }
    s_fail_countdown = 0; /* stays failing until reset */
    errno = ENOMEM;
    return 1;
}

void mem_fail_after(long n)
{
    s_fail_countdown = n < 1 ? -1 : n;
}

void *mem_alloc(size_t size)
{
    if (s_should_fail())
        return NULL;
    void *p = malloc(size ? size : 1);
    if (!p)
        errno = ENOMEM;
    return p;
}

void *mem_calloc(size_t count, size_t size)
{
    if (s_should_fail())
        return NULL;
    if (size && count > SIZE_MAX / size) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        errno = ENOMEM;
    return p;
}

void *mem_realloc(void *p, size_t size)
{
    if (s_should_fail())
        return NULL;
    void *q = realloc(p, size ? size : 1);
    if (!q)
        errno = ENOMEM;
    return q;
}

void *mem_alloc_aligned(size_t size)
{
    if (s_should_fail())
        return NULL;
    void *p = NULL;
    size_t rounded = (size + MEM_ALIGN - 1) / MEM_ALIGN * MEM_ALIGN;
    if (rounded < size || posix_memalign(&p, MEM_ALIGN, rounded ? rounded : MEM_ALIGN)) {
        errno = ENOMEM;
        return NULL;
    }
    return p;
}

void *mem_alloc_stream(size_t size)
{
    const size_t huge = (size_t)2 << 20;
    if (size < huge)
        return mem_alloc_aligned(size);
    if (s_should_fail())
        return NULL;
    void *p = NULL;
    if (posix_memalign(&p, huge, size)) {
        errno = ENOMEM;
        return NULL;
    }
    /* Advice only: where THP is off or madvise fails, 4 KB pages serve. The
     * size is not rounded up: a tail short of 2 MB stays in small pages, so
     * the resident memory stays the size asked for. */
    (void)madvise(p, size / huge * huge, MADV_HUGEPAGE);
    /* Fault it all in now, in one call: the caller fills it at once, and a
     * fault per page costs several microseconds in a virtual machine (2.5 GB
     * of weights: load 1.9 s against 5-6 s). Advice too: an older kernel
     * refuses it, and the pages fault in as they are written. */
    (void)madvise(p, size, MADV_POPULATE_WRITE);
    return p;
}

char *mem_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = mem_alloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

void mem_free(void *p)
{
    free(p);
}
