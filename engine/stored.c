/* stored: see stored.h. */
#include "engine/stored.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "engine/wconvert.h"

/* The tensor dtype of a safetensors dtype; false for raw bytes (U8). */
static bool s_dtype(st_dtype_t st, dtype_t *out)
{
    switch ((int)st) {
    case ST_F32: *out = DTYPE_F32; return true;
    case ST_F16: *out = DTYPE_F16; return true;
    case ST_BF16: *out = DTYPE_BF16; return true;
    case ST_F8_E4M3: *out = DTYPE_F8_E4M3; return true;
    default: return false;
    }
}

/* p itself when aligned for elements of esize bytes, else a copy of its
 * bytes in the store. NULL with ENOMEM. */
static const void *s_aligned(wstore_t *store, const void *p, size_t bytes, size_t esize)
{
    if ((uintptr_t)p % esize == 0)
        return p;
    void *copy = wstore_alloc(store, bytes);
    if (copy)
        memcpy(copy, p, bytes);
    return copy;
}

/* The scale companion of an FP8 matrix, checked: t gets scale_inv and the
 * block grid. */
static int s_fp8_scales(safetensors_t *st, wstore_t *store, const arch_tensor_t *at,
                        const char *file, const stored_blocks_t *blocks, tensor_t *t,
                        err_t *err)
{
    if (!blocks || blocks->block_n < 1 || blocks->block_k < 1)
        return err_set(err, EINVAL, "tensor '%s' in %s is F8_E4M3, but config.json "
                       "gives no FP8 quantization_config (weight_block_size)",
                       at->name, file);
    if (at->slice >= 0)
        return err_set(err, EINVAL, "tensor '%s' in %s: F8_E4M3 experts stacked in one "
                       "tensor are not supported", at->name, file);
    char name[ARCH_NAME_MAX + 16];
    snprintf(name, sizeof name, "%s_scale_inv", at->name);
    err_t probe = {0};
    const st_tensor_t *info = safetensors_find(st, name, &probe);
    if (!info)
        return err_set(err, EPROTO, "tensor '%s' in %s is F8_E4M3 but its scales '%s' "
                       "are missing (%s)", at->name, file, name, probe.msg);
    const int64_t grid[2] = {(t->rows + blocks->block_n - 1) / blocks->block_n,
                             (t->cols + blocks->block_k - 1) / blocks->block_k};
    if (info->dtype != ST_F32 || info->ndim != 2 || info->shape[0] != grid[0] ||
        info->shape[1] != grid[1])
        return err_set(err, EPROTO, "tensor '%s' in %s: the scales of F8_E4M3 tensor '%s' "
                       "(%lld x %lld, weight_block_size [%d, %d]) must be F32 of shape "
                       "(%lld, %lld), not %s of %d dims (%lld, %lld%s)", name, info->file,
                       at->name, (long long)t->rows, (long long)t->cols, blocks->block_n,
                       blocks->block_k, (long long)grid[0], (long long)grid[1],
                       st_dtype_name(info->dtype), info->ndim,
                       (long long)(info->ndim > 0 ? info->shape[0] : 0),
                       (long long)(info->ndim > 1 ? info->shape[1] : 0),
                       info->ndim > 2 ? ", ..." : "");
    size_t nbytes = 0;
    const void *raw = safetensors_raw(st, name, -1, 2, grid, ST_F32, &nbytes, NULL, err);
    if (!raw)
        return -1;
    const float *scales = s_aligned(store, raw, nbytes, sizeof(float));
    if (!scales)
        return err_set(err, ENOMEM, "out of memory for the scales of tensor '%s'",
                       at->name);
    for (int64_t i = 0; i < grid[0] * grid[1]; i++)
        if (!isfinite(scales[i]))
            return err_set(err, EPROTO, "tensor '%s' in %s: scale [%lld][%lld] is %s",
                           name, file, (long long)(i / grid[1]), (long long)(i % grid[1]),
                           isnan(scales[i]) ? "NaN" : "infinite");
    t->scale_inv = scales;
    t->block_n = blocks->block_n;
    t->block_k = blocks->block_k;
    t->row0 = 0;
    t->scale_stride = (size_t)grid[1];
    return 0;
}

int stored_matrix(safetensors_t *st, wstore_t *store, const arch_tensor_t *at,
                  const stored_blocks_t *blocks, tensor_t *out, err_t *err)
{
    const st_tensor_t *info = safetensors_find(st, at->name, err);
    if (!info)
        return -1;
    dtype_t dtype;
    if (!s_dtype(info->dtype, &dtype))
        return err_set(err, EINVAL, "tensor '%s' in %s is %s, not a matrix of F32, F16, "
                       "BF16 or F8_E4M3", at->name, info->file, st_dtype_name(info->dtype));
    size_t nbytes = 0;
    const void *raw = safetensors_raw(st, at->name, at->slice, at->ndim, at->shape, ST_ANY,
                                      &nbytes, NULL, err);
    if (!raw)
        return -1;
    const int64_t rows = at->ndim == 2 ? at->shape[0] : 1;
    const int64_t cols = at->shape[at->ndim - 1];
    const size_t esize = dtype == DTYPE_F8_E4M3 ? 1 : st_dtype_size(info->dtype);
    const void *data = s_aligned(store, raw, nbytes, esize);
    if (!data)
        return err_set(err, ENOMEM, "out of memory copying tensor '%s' (%zu bytes)",
                       at->name, nbytes);
    tensor_t t = {.dtype = dtype, .rows = rows, .cols = cols, .data = data,
                  .row_stride = (size_t)cols * esize};
    if (dtype == DTYPE_F8_E4M3 &&
        s_fp8_scales(st, store, at, info->file, blocks, &t, err) < 0)
        return -1;
    *out = t;
    return 0;
}

int stored_resident(wstore_t *store, tensor_t *t)
{
    const size_t bytes = (size_t)t->rows * t->row_stride;
    if (bytes == 0)
        return 0;
    void *copy = wstore_alloc(store, bytes);
    if (!copy)
        return -1;
    safetensors_populate(t->data, bytes);
    memcpy(copy, t->data, bytes);
    if (wstore_owns(store, t->data))
        wstore_free(store, t->data);
    else
        wconvert_drop_pages(t);  /* the mapping's pages leave the resident set */
    t->data = copy;
    return 0;
}
