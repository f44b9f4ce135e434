/* st_writer: writes safetensors files, streaming the tensor data.
 *
 * A file is written in three phases, so that a model larger than memory can
 * be written one piece at a time:
 *   1. st_writer_add() declares every tensor (name, dtype, shape), in the
 *      order their data will follow; data_offsets are assigned back to back
 *      in that order;
 *   2. st_writer_begin() writes the 8-byte little-endian header length and
 *      the JSON header, padded with spaces to a multiple of 8 bytes (as the
 *      reference implementation does, so the data starts 8-byte aligned);
 *   3. st_writer_write() appends float32 values: the first tensor's, then the
 *      next one's, in declaration order, in pieces of any size that do not
 *      cross a tensor's end. Values are stored in the declared dtype; F16
 *      and BF16 round to nearest even (overflow to inf, NaN stays NaN).
 * st_writer_finish() checks that every declared value was written and closes
 * the file. A writer destroyed before a successful finish removes its file
 * (when it is a regular file: a device such as /dev/null is left alone).
 *
 * The header also carries "__metadata__": {"format": "pt"}, which
 * transformers expects. F32 tensors are 4-byte aligned in the file when every
 * tensor before them has an even number of half-precision values (always the
 * case for one dtype per file); a reader copes with either.
 *
 * st_index_write() writes the model.safetensors.index.json of a sharded
 * checkpoint.
 */
#ifndef MOE_MODEL_ST_WRITER_H
#define MOE_MODEL_ST_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "model/safetensors.h"

typedef struct st_writer st_writer_t;

/* Creates (or truncates) the file at path. NULL with errno/err on failure
 * (the open(2) errno, e.g. EACCES or ENOENT, or ENOMEM). */
st_writer_t *st_writer_new(const char *path, err_t *err);

/* Closes the file, removing it unless st_writer_finish() succeeded. Accepts
 * NULL and a NULL *self_p; sets *self_p to NULL. */
void st_writer_destroy(st_writer_t **self_p);

/* Declares the next tensor: name (copied; valid UTF-8, unique in the file,
 * not "__metadata__"), dtype, ndim in 0..ST_MAX_DIMS and shape[0..ndim)
 * (each >= 0). -1 with EINVAL naming the tensor on a bad argument or a
 * duplicate, ENOMEM, or EINVAL once st_writer_begin() has run. */
int st_writer_add(st_writer_t *self, const char *name, st_dtype_t dtype,
                  int ndim, const int64_t *shape, err_t *err);

/* Bytes of tensor data declared so far (the sum of their byte sizes). */
uint64_t st_writer_data_bytes(const st_writer_t *self);

/* Writes the header; after it, no more st_writer_add(). -1 with errno/err
 * (the write(2) errno, e.g. ENOSPC) on failure; the writer is then unusable. */
int st_writer_begin(st_writer_t *self, err_t *err);

/* Appends values[0..n) to the data, converted to the current tensor's dtype.
 * n may be any size up to what remains of the current tensor (EINVAL naming
 * it beyond); when a tensor is complete the next declared one starts. */
int st_writer_write(st_writer_t *self, const float *values, size_t n,
                    err_t *err);

/* Appends n bytes of the current tensor's data as they are stored
 * (little-endian elements): the way to write U8 and F8_E4M3 tensors, which
 * st_writer_write refuses; any dtype is accepted. n must be whole elements
 * and at most what remains of the current tensor (EINVAL naming it). */
int st_writer_write_raw(st_writer_t *self, const void *bytes, size_t n,
                        err_t *err);

/* Checks that all declared data was written (EINVAL naming the first
 * incomplete tensor otherwise) and closes the file, reporting any error of
 * close(2). After success the file stays when the writer is destroyed. */
int st_writer_finish(st_writer_t *self, err_t *err);

/* Writes a model.safetensors.index.json to path:
 *   {"metadata": {"total_size": total_size},
 *    "weight_map": {tensors[i]: files[i], ...}}
 * with keys sorted, as transformers writes it. files[i] are names relative to
 * the index's directory. -1 with errno/err on failure (no file is left). */
int st_index_write(const char *path, uint64_t total_size, size_t n,
                   const char *const *tensors, const char *const *files,
                   err_t *err);

#endif /* MOE_MODEL_ST_WRITER_H */
