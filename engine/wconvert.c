/* wconvert: see wconvert.h. */
#include "engine/wconvert.h"

#include <assert.h>
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/mem.h"
#include "kernels/pool.h"

enum { S_CHUNKS_PER_THREAD = 4 };

struct wconvert {
    pool_t *pool;
    float *scratch;      /* (n_chunks, cols) one row per chunk */
    size_t scratch_n;    /* floats */
};

typedef struct s_job {
    const tensor_t *src;
    dtype_t dtype;
    uint8_t *dst;
    size_t dst_stride;
    float *scratch;
    int64_t cols;
    int n_chunks;
} s_job_t;

wconvert_t *wconvert_new(int n_threads, err_t *err)
{
    wconvert_t *self = mem_calloc(1, sizeof *self);
    if (!self) {
        err_set(err, ENOMEM, "out of memory for converting weights");
        return NULL;
    }
    self->pool = pool_new(n_threads, err);
    if (!self->pool)
        wconvert_destroy(&self);
    return self;
}

void wconvert_destroy(wconvert_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    wconvert_t *self = *self_p;
    int saved = errno;
    pool_destroy(&self->pool);
    mem_free(self->scratch);
    mem_free(self);
    *self_p = NULL;
    errno = saved;
}

/* Rows [chunk * rows / n, (chunk + 1) * rows / n) of the job. */
static void s_chunk(void *arg, int chunk)
{
    const s_job_t *job = arg;
    const int64_t rows = job->src->rows;
    const int64_t r0 = rows * chunk / job->n_chunks, r1 = rows * (chunk + 1) / job->n_chunks;
    float *row = job->scratch + (size_t)chunk * job->cols;
    for (int64_t r = r0; r < r1; r++) {
        tensor_row_to_f32(job->src, r, row);
        int rc = dtype_row_from_f32(job->dtype, row, job->dst + (size_t)r * job->dst_stride,
                                    job->cols);
        assert(rc == 0); /* the targets all have encoders; blocks were checked */
        (void)rc;
    }
}

int wconvert_tensor(wconvert_t *self, wstore_t *store, tensor_t *t, dtype_t dtype,
                    const char *name, err_t *err)
{
    const size_t stride = dtype_row_bytes(dtype, t->cols);
    assert(stride > 0);
    const int64_t want = (int64_t)pool_threads(self->pool) * S_CHUNKS_PER_THREAD;
    const int n_chunks = (int)(t->rows < want ? t->rows : want);
    const size_t scratch_n = (size_t)(n_chunks > 0 ? n_chunks : 1) * (size_t)t->cols;
    if (scratch_n > self->scratch_n) {
        float *s = mem_alloc_aligned(scratch_n * sizeof *s);
        if (!s)
            return err_set(err, ENOMEM, "out of memory converting tensor '%s'", name);
        mem_free(self->scratch);
        self->scratch = s;
        self->scratch_n = scratch_n;
    }
    uint8_t *dst = wstore_alloc(store, (size_t)t->rows * stride);
    if (!dst)
        return err_set(err, ENOMEM, "out of memory converting tensor '%s' to %s "
                       "(%zu bytes)", name, dtype_info(dtype)->name,
                       (size_t)t->rows * stride);
    s_job_t job = {.src = t, .dtype = dtype, .dst = dst, .dst_stride = stride,
                   .scratch = self->scratch, .cols = t->cols, .n_chunks = n_chunks};
    pool_run(self->pool, s_chunk, &job, n_chunks);
    *t = (tensor_t){.dtype = dtype, .rows = t->rows, .cols = t->cols, .data = dst,
                    .row_stride = stride};
    return 0;
}

void wconvert_drop_pages(const tensor_t *t)
{
    if (!t->data || t->rows < 1)
        return;
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t begin = (uintptr_t)t->data;
    const uintptr_t end = begin + (size_t)(t->rows - 1) * t->row_stride +
                          dtype_row_bytes(t->dtype, t->cols);
    const uintptr_t first = (begin + page - 1) & ~(page - 1), last = end & ~(page - 1);
    if (last > first)
        (void)madvise((void *)first, last - first, MADV_DONTNEED); /* a hint */
}
