/* tensor: a weight as it is held in memory, in any of the formats moecluster
 * computes with, and the dtype table that says how each format is laid out.
 *
 * Checkpoints ship their weights in BF16, FP8 E4M3 with block scales
 * (DeepSeek-V3) or MXFP4 (gpt-oss experts), and users quantize to ggml's
 * Q8_0/Q4_0. Widening all of that to float32 at load would cost a node 2x to
 * 8x the memory of the file, so weights stay in their format and the kernels
 * (kernels/matmul.h) read them as they are.
 *
 * A tensor is a matrix of `rows` x `cols` values (a vector is one row). Each
 * row is stored packed in `data`, `row_stride` bytes apart (at least
 * dtype_row_bytes(dtype, cols); larger when the tensor is a view of every
 * other row of a fused checkpoint tensor). Formats with blocks (MXFP4, Q8_0,
 * Q4_0) need `cols` to be a whole number of blocks. Two formats carry their
 * scales beside the data:
 *   - F8_E4M3: one float32 `scale_inv` per block of block_n rows x block_k
 *     columns (DeepSeek-V3's weight_block_size; edge blocks partial), in a
 *     row-major (ceil(rows0 / block_n), ceil(cols / block_k)) array with
 *     `scale_stride` floats per block row. `row0` is the tensor's first row in
 *     the block grid (non-zero for a row view), so row r's scales are the
 *     block row (row0 + r) / block_n. value = e4m3(q) * scale_inv, the float32
 *     product.
 *   - MXFP4: one E8M0 byte per block of 32 values (2^(s - 127)), `e8m0`
 *     with `scale_stride` bytes per row.
 * Q8_0 and Q4_0 are ggml's block_q8_0 {f16 d; int8 qs[32]} (34 bytes) and
 * block_q4_0 {f16 d; uint8 qs[16]} (18 bytes: value j is the low nibble of
 * qs[j] for j < 16, the high nibble of qs[j - 16] after; minus 8, times d),
 * byte for byte, so GGUF files can be read later without conversion.
 *
 * A tensor_t is a plain value: it borrows its memory (a read-only mapping of
 * the checkpoint, or a buffer its owner keeps) and is copied freely.
 */
#ifndef MOE_CORE_TENSOR_H
#define MOE_CORE_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum dtype {
    DTYPE_F32 = 0,
    DTYPE_F16,      /* IEEE half */
    DTYPE_BF16,     /* the upper 16 bits of a float32 */
    DTYPE_F8_E4M3,  /* "fn": bias 7, no infinities, 0x7F/0xFF NaN; block scales */
    DTYPE_MXFP4,    /* E2M1 pairs, low nibble first, 16 bytes per 32; E8M0 scales */
    DTYPE_Q8_0,     /* ggml block_q8_0 */
    DTYPE_Q4_0,     /* ggml block_q4_0 */
    DTYPE_COUNT
} dtype_t;

typedef struct dtype_info {
    const char *name;    /* "f32", "f16", "bf16", "f8_e4m3", "mxfp4", "q8_0", "q4_0" */
    int block;           /* values per block: 1 for the element formats */
    int block_bytes;     /* bytes of data per block (scales kept beside not counted) */
} dtype_info_t;

/* The table entry of dtype (asserts it is valid). */
const dtype_info_t *dtype_info(dtype_t dtype);

/* The dtype named name ("f32", "bf16", "q4_0", ...; also "float32",
 * "bfloat16", "float16"); -1 with EINVAL for an unknown name. */
int dtype_parse(const char *name, dtype_t *out);

/* Bytes of data of one row of cols values; 0 when cols is not a whole number
 * of blocks. */
size_t dtype_row_bytes(dtype_t dtype, int64_t cols);

typedef struct tensor {
    dtype_t dtype;
    int64_t rows, cols;
    const void *data;          /* row r at data + r * row_stride */
    size_t row_stride;         /* bytes */
    /* F8_E4M3 */
    const float *scale_inv;    /* block grid, see above */
    int32_t block_n, block_k;
    int64_t row0;              /* first row in the block grid */
    /* MXFP4 */
    const uint8_t *e8m0;       /* row r's scales at e8m0 + r * scale_stride */
    size_t scale_stride;       /* F8_E4M3: floats per block row; MXFP4: bytes per row */
} tensor_t;

/* A dense float32 tensor over data (rows, cols), borrowed. */
tensor_t tensor_f32(const float *data, int64_t rows, int64_t cols);

/* The view of rows [first, first + n) of t (same memory). */
tensor_t tensor_rows(const tensor_t *t, int64_t first, int64_t n);

/* Row r of t decoded to float32 values, exactly (each stored value is a
 * float32 once its scale is applied). out: (t->cols). */
void tensor_row_to_f32(const tensor_t *t, int64_t r, float *out);

/* Values [c0, c0 + n) of row r of t decoded to float32, as
 * tensor_row_to_f32() does (c0 a multiple of the dtype's block; n too, or
 * c0 + n == t->cols). The kernels' decoder of a slice of a row. out: (n). */
void tensor_row_range_to_f32(const tensor_t *t, int64_t r, int64_t c0, int64_t n,
                             float *out);

/* One stored value as float32, exactly: IEEE half (subnormals, inf, NaN),
 * bfloat16, E4M3fn (no scale; 0x7F/0xFF NaN), E2M1 code 0..15 (no scale). */
float dtype_f16_value(uint16_t h);
float dtype_bf16_value(uint16_t h);
float dtype_e4m3_value(uint8_t q);
float dtype_e2m1_value(unsigned code);

/* Bytes t occupies: its rows' data plus its scales. */
size_t tensor_bytes(const tensor_t *t);

/* Encoders from float32 for the formats that have one: F32, F16 and BF16
 * (round to nearest even), Q8_0 and Q4_0 (ggml's reference quantizers,
 * bit-identical: core/quant.h). n values into dst (dtype_row_bytes(dtype, n)
 * bytes). -1 with EINVAL for a format without an encoder (F8_E4M3, MXFP4) or
 * n not whole blocks. */
int dtype_row_from_f32(dtype_t dtype, const float *src, void *dst, int64_t n);

#endif /* MOE_CORE_TENSOR_H */
