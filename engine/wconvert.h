/* wconvert: a weight matrix converted at load into another format (what
 * --dtype and --quantization ask, engine/wformat.h): each row decoded to
 * float32 (tensor_row_to_f32) and encoded (dtype_row_from_f32: round to
 * nearest even for F16/BF16, ggml's reference quantizers for Q8_0/Q4_0),
 * rows spread over a pool of threads.
 */
#ifndef MOE_ENGINE_WCONVERT_H
#define MOE_ENGINE_WCONVERT_H

#include "core/err.h"
#include "core/tensor.h"
#include "engine/wstore.h"

typedef struct wconvert wconvert_t;

/* A converter on n_threads threads (the caller's included). NULL with
 * errno/err (ENOMEM). Caller destroys. */
wconvert_t *wconvert_new(int n_threads, err_t *err);
void wconvert_destroy(wconvert_t **self_p);

/* *t converted to dtype (F32, F16, BF16, Q8_0 or Q4_0; Q8_0/Q4_0 need
 * whole blocks of columns, asserted) in a new dense buffer of store; *t then
 * describes it. The source is left as it was (the caller releases it: see
 * wconvert_drop_pages). 0, or -1 with ENOMEM and err. */
int wconvert_tensor(wconvert_t *self, wstore_t *store, tensor_t *t, dtype_t dtype,
                    const char *name, err_t *err);

/* Tells the kernel that the pages wholly inside t's rows (in a read-only
 * file mapping) are not needed any more, so that a converted matrix does not
 * also keep its source resident. The mapping stays valid: a later read
 * (another view of the same rows) reads the file again. */
void wconvert_drop_pages(const tensor_t *t);

#endif /* MOE_ENGINE_WCONVERT_H */
