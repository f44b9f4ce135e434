/* wformat: the format a process serves its weights in, as its command line
 * asks (--dtype, --quantization; the same two options on every program that
 * loads weights).
 *
 *   --dtype auto|float32|bfloat16|float16
 *       auto (the default) keeps every weight matrix as the checkpoint stores
 *       it (F32, F16, BF16, FP8 E4M3 with its block scales, MXFP4); the others
 *       convert every matrix (embeddings, router and LM head included) to that
 *       float format at load.
 *   --quantization none|q8_0|q4_0
 *       none (the default), or ggml's Q8_0 / Q4_0 blocks for the 2-D linear
 *       weights: routed and shared experts, dense FFNs, attention projections
 *       (MLA's too) and the LM head; never embeddings, norms, biases or
 *       routers. A matrix whose rows are not whole blocks of 32 stays in the
 *       --dtype format (logged once).
 *
 * Zero values mean auto / none, so a zero-initialised wformat_t loads weights
 * as stored.
 */
#ifndef MOE_ENGINE_WFORMAT_H
#define MOE_ENGINE_WFORMAT_H

#include <stdbool.h>
#include <stdio.h>

#include "core/err.h"
#include "core/tensor.h"

typedef enum wformat_dtype {
    WFORMAT_DTYPE_AUTO = 0,   /* as stored */
    WFORMAT_DTYPE_F32,
    WFORMAT_DTYPE_BF16,
    WFORMAT_DTYPE_F16,
} wformat_dtype_t;

typedef enum wformat_quant {
    WFORMAT_QUANT_NONE = 0,
    WFORMAT_QUANT_Q8_0,
    WFORMAT_QUANT_Q4_0,
} wformat_quant_t;

typedef struct wformat {
    wformat_dtype_t dtype;
    wformat_quant_t quant;
} wformat_t;

/* The arg_parse_fn (core/arg.h) of --dtype (dest: wformat_dtype_t *) and of
 * --quantization (dest: wformat_quant_t *): 0, or -1 with EINVAL and err
 * naming the option, the value and the choices. */
int wformat_parse_dtype(const char *text, const char *name, void *dest, err_t *err);
int wformat_parse_quant(const char *text, const char *name, void *dest, err_t *err);

/* The dtype a matrix is converted to, or false to keep it as it is stored
 * (stored: its dtype now). linear: a 2-D linear weight that --quantization
 * applies to; cols: its row length (quantized formats need whole blocks). */
bool wformat_target(const wformat_t *self, dtype_t stored, bool linear, long cols,
                    dtype_t *out);

/* "auto", "float32", "bfloat16", "float16" / "none", "q8_0", "q4_0" (static). */
const char *wformat_dtype_name(wformat_dtype_t dtype);
const char *wformat_quant_name(wformat_quant_t quant);

/* The help lines of both options, descriptions from column `column` (the
 * option names indented by two spaces). */
void wformat_help(FILE *out, int column);

#endif /* MOE_ENGINE_WFORMAT_H */
