/* expert_layout: copies between gpt-oss's fused expert layout and
 * moecluster's per-expert (out_features, in_features) matrices. Plain loops:
 * this runs once per expert at load time, and the write side is kept
 * sequential (the strided side is the input, read once). */
#include "model/expert_layout.h"

#include <assert.h>
#include <stddef.h>
#include <string.h>

void expert_layout_split_gate_up(float *gate, float *up, const float *gate_up,
                                 int hidden, int inter)
{
    assert(gate && up && gate_up);
    assert(hidden >= 1 && inter >= 1);
    const size_t ld = (size_t)2 * inter; /* gate_up's row stride */
    for (int i = 0; i < inter; i++) {
        float *g = gate + (size_t)i * hidden; /* (hidden) */
        float *u = up + (size_t)i * hidden;   /* (hidden) */
        for (int k = 0; k < hidden; k++) {
            g[k] = gate_up[(size_t)k * ld + 2 * (size_t)i];
            u[k] = gate_up[(size_t)k * ld + 2 * (size_t)i + 1];
        }
    }
}

void expert_layout_split_gate_up_bias(float *gate_bias, float *up_bias,
                                      const float *gate_up_bias, int inter)
{
    assert(gate_bias && up_bias && gate_up_bias);
    assert(inter >= 1);
    for (int i = 0; i < inter; i++) {
        gate_bias[i] = gate_up_bias[2 * (size_t)i];
        up_bias[i] = gate_up_bias[2 * (size_t)i + 1];
    }
}

void expert_layout_transpose_down(float *down, const float *down_proj,
                                  int hidden, int inter)
{
    assert(down && down_proj);
    assert(hidden >= 1 && inter >= 1);
    for (int j = 0; j < hidden; j++) {
        float *d = down + (size_t)j * inter; /* (inter) */
        for (int i = 0; i < inter; i++)
            d[i] = down_proj[(size_t)i * hidden + j];
    }
}

void expert_layout_split_rows(float *gate, float *up, const float *rows,
                              int hidden, int inter)
{
    assert(gate && up && rows);
    assert(hidden >= 1 && inter >= 1);
    for (int i = 0; i < inter; i++) {
        memcpy(gate + (size_t)i * hidden, rows + (size_t)(2 * i) * hidden,
               (size_t)hidden * sizeof *gate);
        memcpy(up + (size_t)i * hidden, rows + (size_t)(2 * i + 1) * hidden,
               (size_t)hidden * sizeof *up);
    }
}
