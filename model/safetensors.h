/* safetensors: read-only, lazy access to a Hugging Face checkpoint's tensors.
 *
 * A checkpoint is a directory holding model.safetensors, or shards listed by
 * model.safetensors.index.json ("weight_map": tensor name -> shard file). Each
 * file is mmap'd read-only and its JSON header parsed with jansson; tensor bytes
 * are only touched when a tensor (or one slice of it) is asked for, so a
 * process pages in only the weights it uses. Shards are opened on first use.
 *
 * Every header is checked before use: header length within the file, JSON
 * well-formed, dtype known (F32, F16, BF16, U8, F8_E4M3), shape non-negative and its byte
 * size equal to the data_offsets range, ranges inside the file and not
 * overlapping. A violation is EPROTO with an error naming file and tensor.
 * A tensor absent from the checkpoint is ENOENT naming the tensor and the
 * file (the index, for a sharded checkpoint).
 */
#ifndef MOE_MODEL_SAFETENSORS_H
#define MOE_MODEL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef enum st_dtype {
    ST_F32 = 1,
    ST_F16,
    ST_BF16,
} st_dtype_t;

/* The dtypes read raw (safetensors_raw, safetensors_find), never converted
 * by safetensors_f32: ST_U8, bytes (MXFP4 blocks and E8M0 scales of gpt-oss
 * checkpoints); ST_F8_E4M3, FP8 "fn" values whose meaning needs their
 * weight_scale_inv blocks (DeepSeek-V3). Kept outside st_dtype_t's named
 * values, so that switches over the float dtypes (the ones safetensors_f32
 * converts, and writers) stay exhaustive. ST_ANY asks safetensors_raw for any
 * dtype. */
#define ST_U8 ((st_dtype_t)4)
#define ST_F8_E4M3 ((st_dtype_t)5)
#define ST_ANY ((st_dtype_t)0)

enum { ST_MAX_DIMS = 8 };

typedef struct st_tensor {
    const char *name;             /* borrowed from the safetensors_t */
    const char *file;             /* path of the file holding it */
    st_dtype_t dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t nbytes;                /* product(shape) * dtype size */
    const void *data;             /* into the read-only mapping */
} st_tensor_t;

typedef struct safetensors safetensors_t;

/* Opens the checkpoint in dir. NULL with errno/err on failure (ENOENT when
 * neither file exists, EPROTO for a malformed file or index). */
safetensors_t *safetensors_open(const char *dir, err_t *err);
void safetensors_destroy(safetensors_t **self_p);

/* Looks a tensor up by name, opening its shard if needed. NULL with errno/err
 * on failure. The result is valid until the safetensors_t is destroyed. */
const st_tensor_t *safetensors_find(safetensors_t *self, const char *name, err_t *err);

/* Float32 view of a tensor, checked against the shape the caller expects.
 *   index < 0:  the whole tensor, whose shape must equal want[0..ndim)
 *   index >= 0: slice `index` along dim 0 of a tensor of shape
 *               (n, want[0], ..., want[ndim-1]), as gpt-oss stacks experts.
 * F32 data that is 4-byte aligned is returned in place (zero copy); other
 * dtypes (or misaligned data) are converted into a buffer the safetensors_t
 * owns. A shape or rank mismatch is EINVAL naming tensor, file and both
 * shapes; a U8 or F8_E4M3 tensor is EINVAL (raw bytes, or FP8 values that
 * mean nothing without their scales: read them with safetensors_raw).
 * Returns NULL with errno/err on failure. */
const float *safetensors_f32(safetensors_t *self, const char *name, int64_t index,
                             int ndim, const int64_t *want, err_t *err);

/* The stored bytes of a tensor (or of slice `index` along dim 0, as for
 * safetensors_f32), in place in the read-only mapping, never copied. The
 * tensor's dtype must be `dtype` (ST_ANY: any) and its shape what the caller
 * expects, as for safetensors_f32; a mismatch is EINVAL naming tensor, file,
 * and both dtypes or shapes. *nbytes_out (when not NULL) gets the bytes of
 * the view and *dtype_out (when not NULL) the tensor's dtype. The data has
 * the alignment the file gives it (safetensors promises none: use memcpy or
 * unaligned loads for elements wider than a byte). Returns NULL with
 * errno/err on failure. */
const void *safetensors_raw(safetensors_t *self, const char *name, int64_t index,
                            int ndim, const int64_t *want, st_dtype_t dtype,
                            size_t *nbytes_out, st_dtype_t *dtype_out, err_t *err);

/* The pages of the nbytes at p are about to be read whole: they are mapped
 * in one call (MADV_POPULATE_READ) rather than faulted in one at a time. */
void safetensors_populate(const void *p, size_t nbytes);

/* Number of tensors known so far (all of them for a single file, or the
 * index's weight_map entries for a sharded checkpoint). */
size_t safetensors_count(const safetensors_t *self);

/* The name of tensor i (0 <= i < safetensors_count), in name order
 * (borrowed; valid until the safetensors_t is destroyed). */
const char *safetensors_name(const safetensors_t *self, size_t i);

/* Bytes of data in a dtype element: 4, 2 or 1; 0 for an invalid dtype
 * (ST_ANY included). */
size_t st_dtype_size(st_dtype_t dtype);

/* "F32", "F16", "BF16", "U8", "F8_E4M3" (borrowed, static); "any" for
 * ST_ANY, "invalid" otherwise. */
const char *st_dtype_name(st_dtype_t dtype);

#endif /* MOE_MODEL_SAFETENSORS_H */
