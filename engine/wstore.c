/* wstore: see wstore.h. A growing array; a freed slot is reused by filling
 * it with the last one. */
#include "engine/wstore.h"

#include <errno.h>

#include "core/mem.h"

typedef struct s_buf {
    void *p;
    size_t bytes;
} s_buf_t;

struct wstore {
    s_buf_t *bufs;
    size_t n, cap;
    uint64_t bytes;
};

wstore_t *wstore_new(void)
{
    wstore_t *self = mem_calloc(1, sizeof *self);
    if (!self)
        errno = ENOMEM;
    return self;
}

void wstore_destroy(wstore_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    wstore_t *self = *self_p;
    int saved = errno;
    for (size_t i = 0; i < self->n; i++)
        mem_free(self->bufs[i].p);
    mem_free(self->bufs);
    mem_free(self);
    *self_p = NULL;
    errno = saved;
}

void *wstore_alloc(wstore_t *self, size_t bytes)
{
    if (self->n == self->cap) {
        size_t cap = self->cap ? 2 * self->cap : 64;
        s_buf_t *bufs = mem_realloc(self->bufs, cap * sizeof *bufs);
        if (!bufs) {
            errno = ENOMEM;
            return NULL;
        }
        self->bufs = bufs;
        self->cap = cap;
    }
    void *p = mem_alloc_stream(bytes ? bytes : 1);
    if (!p) {
        errno = ENOMEM;
        return NULL;
    }
    self->bufs[self->n++] = (s_buf_t){.p = p, .bytes = bytes};
    self->bytes += bytes;
    return p;
}

void wstore_free(wstore_t *self, const void *p)
{
    for (size_t i = self->n; i-- > 0;)
        if (self->bufs[i].p == p) {
            mem_free(self->bufs[i].p);
            self->bytes -= self->bufs[i].bytes;
            self->bufs[i] = self->bufs[--self->n];
            return;
        }
}

bool wstore_owns(const wstore_t *self, const void *p)
{
    for (size_t i = 0; i < self->n; i++)
        if (self->bufs[i].p == p)
            return true;
    return false;
}

uint64_t wstore_bytes(const wstore_t *self)
{
    return self ? self->bytes : 0;
}
