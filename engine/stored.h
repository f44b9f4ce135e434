/* stored: one checkpoint matrix as a tensor_t (core/tensor.h) in the format
 * the checkpoint stores it in, never widened.
 *
 * F32, F16 and BF16 matrices are used in place from the read-only mapping
 * (copied into the store only when the file leaves them misaligned for their
 * element size). An F8_E4M3 matrix `<name>` (DeepSeek-V3's `...weight`) is
 * used in place with its float32 companion `<name>_scale_inv`, one scale per
 * block of block_n rows x block_k columns (config.json's
 * quantization_config.weight_block_size), of shape (ceil(rows / block_n),
 * ceil(cols / block_k)); a missing, mis-typed or mis-shaped companion, or a
 * NaN or infinite scale, is an error naming the file and both tensors.
 */
#ifndef MOE_ENGINE_STORED_H
#define MOE_ENGINE_STORED_H

#include "core/err.h"
#include "core/tensor.h"
#include "engine/wstore.h"
#include "model/arch.h"
#include "model/safetensors.h"

/* The FP8 block size a checkpoint's config gives; zero when it has none
 * (an F8_E4M3 tensor is then an error). */
typedef struct stored_blocks {
    int block_n;   /* rows per block */
    int block_k;   /* columns per block */
} stored_blocks_t;

/* *out = the 2-D matrix `at` (name, slice, (rows, cols) shape) of st, in
 * its stored dtype: a view of the file's mapping (read on first use), copied
 * into store only when misaligned. 0, or -1 with errno/err naming file and
 * tensor: ENOENT missing, EINVAL a wrong shape or dtype (U8), EPROTO bad
 * scales, ENOMEM. */
int stored_matrix(safetensors_t *st, wstore_t *store, const arch_tensor_t *at,
                  const stored_blocks_t *blocks, tensor_t *out, err_t *err);

/* Moves the bytes of matrix t (from stored_matrix) into memory of store's
 * own, unchanged: huge pages (mem_alloc_stream), read now, and the file's
 * pages dropped from the mapping (a copy stored_matrix made is freed), so
 * that decode streams it with one TLB entry per 2 MB rather than per 4 KB
 * page of the page cache (medium Mixtral, float32 decode: a third faster;
 * loading takes no longer than the first token's faults on the mapping
 * did). Its scales (FP8) stay where they are. 0, or -1 with ENOMEM, t then
 * unchanged (the view still serves). */
int stored_resident(wstore_t *store, tensor_t *t);

#endif /* MOE_ENGINE_STORED_H */
