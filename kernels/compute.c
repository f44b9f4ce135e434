/* compute: see compute.h.
 *
 * The CPU probe (__builtin_cpu_init/__builtin_cpu_supports) reads what libgcc
 * found at start-up; the answer is kept in the context, so this module has no
 * state of its own.
 */
#include "kernels/compute.h"

#include <assert.h>
#include <errno.h>

#include "core/mem.h"

struct compute {
    pool_t *pool;          /* owned */
    compute_path_t path;   /* never COMPUTE_PATH_AUTO */
};

bool compute_path_runs(compute_path_t path)
{
    __builtin_cpu_init();
    switch (path) {
    case COMPUTE_PATH_AUTO:
    case COMPUTE_PATH_PORTABLE: return true;
    case COMPUTE_PATH_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case COMPUTE_PATH_AVX512: return __builtin_cpu_supports("avx512f");
    default: return false;
    }
}

static compute_path_t s_best(void)
{
    if (compute_path_runs(COMPUTE_PATH_AVX512))
        return COMPUTE_PATH_AVX512;
    if (compute_path_runs(COMPUTE_PATH_AVX2))
        return COMPUTE_PATH_AVX2;
    return COMPUTE_PATH_PORTABLE;
}

compute_t *compute_new(int n_threads, err_t *err)
{
    compute_t *self = mem_calloc(1, sizeof *self);
    if (!self) {
        err_set(err, ENOMEM, "out of memory for a compute context");
        goto fail;
    }
    if (!(self->pool = pool_new(n_threads, err)))
        goto fail;
    self->path = s_best();
    return self;

fail:
    compute_destroy(&self);
    return NULL;
}

void compute_destroy(compute_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    compute_t *self = *self_p;
    int saved = errno;
    pool_destroy(&self->pool);
    mem_free(self);
    *self_p = NULL;
    errno = saved;
}

int compute_set_path(compute_t *self, compute_path_t path)
{
    assert(self);
    if (path != COMPUTE_PATH_AUTO && path != COMPUTE_PATH_PORTABLE &&
        path != COMPUTE_PATH_AVX2 && path != COMPUTE_PATH_AVX512) {
        errno = EINVAL;
        return -1;
    }
    if (!compute_path_runs(path)) {
        errno = ENOTSUP;
        return -1;
    }
    self->path = path == COMPUTE_PATH_AUTO ? s_best() : path;
    return 0;
}

compute_path_t compute_path(const compute_t *self)
{
    assert(self);
    return self->path;
}

pool_t *compute_pool(const compute_t *self)
{
    assert(self);
    return self->pool;
}

const char *compute_path_name(compute_path_t path)
{
    switch (path) {
    case COMPUTE_PATH_PORTABLE: return "portable";
    case COMPUTE_PATH_AVX2: return "avx2";
    case COMPUTE_PATH_AVX512: return "avx512";
    default: return "auto";
    }
}
