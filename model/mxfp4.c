/* mxfp4: E2M1 codes through a 16-entry table, times 2^(S - 127) by ldexpf;
 * both steps are exact in float32 (the smallest nonzero product, 0.5 *
 * 2^-127, is a float32 subnormal) up to the top two scales, where the largest
 * codes overflow to inf. */
#include "model/mxfp4.h"

#include <assert.h>
#include <math.h>

static const float s_e2m1[16] = {
    0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
    -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f,
};

float mxfp4_value(unsigned code)
{
    assert(code < 16);
    return s_e2m1[code];
}

void mxfp4_dequant(float *out, const uint8_t *blocks, const uint8_t *scales,
                   size_t n_blocks)
{
    assert(n_blocks == 0 || (out && blocks && scales));
    for (size_t b = 0; b < n_blocks; b++) {
        const uint8_t *in = blocks + b * MXFP4_BLOCK_BYTES;
        float *o = out + b * MXFP4_BLOCK;
        if (scales[b] == 255) {
            for (int i = 0; i < MXFP4_BLOCK; i++)
                o[i] = NAN;
            continue;
        }
        int e = (int)scales[b] - 127;
        for (int i = 0; i < MXFP4_BLOCK_BYTES; i++) {
            o[2 * i] = ldexpf(s_e2m1[in[i] & 0x0f], e);
            o[2 * i + 1] = ldexpf(s_e2m1[in[i] >> 4], e);
        }
    }
}
