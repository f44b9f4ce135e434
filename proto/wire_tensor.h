/* wire_tensor: the formats a data-plane tensor frame travels in (--wire).
 *
 * The rows of EXPERT_REQUEST and EXPERT_REPLY are float32 in memory at both
 * ends; on the wire they are one of:
 *   f32   IEEE-754 binary32, the values as they are (the default: exact);
 *   bf16  the upper 16 bits of each float32, rounded to nearest even (NaN
 *         stays NaN, overflow goes to infinity): half the bytes, ~3 decimal
 *         digits;
 *   fp8   E4M3fn with one float32 scale per block of 128 consecutive values
 *         of a row (as DeepEP dispatches): scale = amax / 448 over the
 *         block's finite values, value = nearest-even E4M3 of x / scale,
 *         saturating at +-448; a row whose width is not a multiple of 128 has
 *         a short last block. E4M3fn has no infinity, so +-inf and NaN travel
 *         as NaN. A quarter of the bytes plus the scales.
 * The frame layout, row-major everywhere (docs/PROTOCOL.md, section 4):
 *   f32:  n_rows x width float32;
 *   bf16: n_rows x width uint16;
 *   fp8:  n_rows x ceil(width / 128) float32 scales, then n_rows x width
 *         E4M3 bytes (the scales first, so that they are aligned).
 * Everything is little-endian. Decoding always gives float32 and never
 * fails: a frame's size is checked against wire_tensor_bytes before (a
 * received scale that is NaN or infinite only yields NaN or infinite values,
 * as an f32 frame may carry them too).
 */
#ifndef MOE_PROTO_WIRE_TENSOR_H
#define MOE_PROTO_WIRE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef enum wire_tensor_format {
    WIRE_TENSOR_F32 = 0,   /* the default: a zeroed struct sends f32 */
    WIRE_TENSOR_BF16 = 1,
    WIRE_TENSOR_FP8 = 2,
    WIRE_TENSOR_COUNT
} wire_tensor_format_t;

enum { WIRE_TENSOR_FP8_BLOCK = 128 };   /* values per fp8 scale */
#define WIRE_TENSOR_FP8_MAX 448.0f      /* E4M3fn's largest finite value */

/* "f32", "bf16", "fp8" (static); "unknown" out of range. */
const char *wire_tensor_format_name(wire_tensor_format_t fmt);

/* The format named text ("f32", "bf16", "fp8"), an arg_parse_fn for --wire:
 * dest is a wire_tensor_format_t *. 0, or -1 with EINVAL and err naming the
 * option. */
int wire_tensor_parse(const char *text, const char *name, void *dest, err_t *err);

/* Bytes of one row of width values in fmt (width >= 1), and of n_rows of them
 * (0 when a count is < 1 or the product passes SIZE_MAX / 2). */
size_t wire_tensor_row_bytes(wire_tensor_format_t fmt, int width);
size_t wire_tensor_bytes(wire_tensor_format_t fmt, int n_rows, int width);

/* src (n_rows, width) float32 -> dst, wire_tensor_bytes(fmt, n_rows, width)
 * bytes in fmt's layout. */
void wire_tensor_encode(wire_tensor_format_t fmt, const float *src, int n_rows, int width,
                        void *dst);

/* src in fmt's layout (wire_tensor_bytes bytes, any alignment) -> dst
 * (n_rows, width) float32. */
void wire_tensor_decode(wire_tensor_format_t fmt, const void *src, int n_rows, int width,
                        float *dst);

/* The E4M3fn code of v (a value already divided by its scale): nearest
 * even, saturating at +-448, NaN (0x7F with v's sign) for NaN and +-inf.
 * The encoder's rounding, for the unit test's reference comparison. */
uint8_t wire_tensor_e4m3(float v);

#endif /* MOE_PROTO_WIRE_TENSOR_H */
