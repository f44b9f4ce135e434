/* wformat: see wformat.h. */
#include "engine/wformat.h"

#include <errno.h>
#include <string.h>

static const char *const s_dtype_names[] = {"auto", "float32", "bfloat16", "float16"};
static const dtype_t s_dtype_of[] = {DTYPE_F32, DTYPE_F32, DTYPE_BF16, DTYPE_F16};
static const char *const s_quant_names[] = {"none", "q8_0", "q4_0"};
static const dtype_t s_quant_of[] = {DTYPE_F32, DTYPE_Q8_0, DTYPE_Q4_0};

enum { S_N_DTYPES = 4, S_N_QUANTS = 3 };

int wformat_parse_dtype(const char *text, const char *name, void *dest, err_t *err)
{
    for (int i = 0; i < S_N_DTYPES; i++)
        if (strcmp(text, s_dtype_names[i]) == 0) {
            *(wformat_dtype_t *)dest = (wformat_dtype_t)i;
            return 0;
        }
    return err_set(err, EINVAL, "%s must be auto, float32, bfloat16 or float16 (got '%s')",
                   name, text);
}

int wformat_parse_quant(const char *text, const char *name, void *dest, err_t *err)
{
    for (int i = 0; i < S_N_QUANTS; i++)
        if (strcmp(text, s_quant_names[i]) == 0) {
            *(wformat_quant_t *)dest = (wformat_quant_t)i;
            return 0;
        }
    return err_set(err, EINVAL, "%s must be none, q8_0 or q4_0 (got '%s')", name, text);
}

bool wformat_target(const wformat_t *self, dtype_t stored, bool linear, long cols,
                    dtype_t *out)
{
    if (self->quant != WFORMAT_QUANT_NONE && linear) {
        const dtype_t q = s_quant_of[self->quant];
        if (cols > 0 && cols % dtype_info(q)->block == 0) {
            *out = q;
            return true;
        }
    }
    if (self->dtype != WFORMAT_DTYPE_AUTO && stored != s_dtype_of[self->dtype]) {
        *out = s_dtype_of[self->dtype];
        return true;
    }
    return false;
}

const char *wformat_dtype_name(wformat_dtype_t dtype)
{
    return (unsigned)dtype < S_N_DTYPES ? s_dtype_names[dtype] : "?";
}

const char *wformat_quant_name(wformat_quant_t quant)
{
    return (unsigned)quant < S_N_QUANTS ? s_quant_names[quant] : "?";
}

void wformat_help(FILE *out, int column)
{
    const int w = column - 2; /* the name's field, after the two-space indent */
    fprintf(out,
            "  %-*sweights in this float format: auto (default: as the\n"
            "  %-*scheckpoint stores them: f32, bf16, fp8, mxfp4...),\n"
            "  %-*sfloat32, bfloat16 or float16\n"
            "  %-*snone (default), q8_0 or q4_0: the linear weights\n"
            "  %-*s(experts, attention, LM head; not embeddings, norms,\n"
            "  %-*srouters) quantized to ggml's blocks at load\n",
            w, "--dtype TYPE", w, "", w, "", w, "--quantization Q", w, "", w, "");
}
