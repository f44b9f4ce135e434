/* fused: see fused.h. */
#include "engine/fused.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/mem.h"
#include "model/arch.h"
#include "model/expert_layout.h"
#include "model/mxfp4.h"

/* The U8 tensor `<base>_<suffix>` whose shape is (n_experts, want...), and
 * expert e's bytes of it. NULL with err naming the tensor. */
static const uint8_t *s_u8_slice(safetensors_t *st, const char *base, const char *suffix,
                                 int64_t n_experts, int expert, int ndim,
                                 const int64_t *want, err_t *err)
{
    char name[ARCH_NAME_MAX + 16];
    snprintf(name, sizeof name, "%s_%s", base, suffix);
    const st_tensor_t *t = safetensors_find(st, name, err);
    if (!t)
        return NULL;
    bool ok = t->dtype == ST_U8 && t->ndim == ndim + 1 && t->shape[0] == n_experts;
    for (int i = 0; ok && i < ndim; i++)
        ok = t->shape[i + 1] == want[i];
    if (!ok) {
        err_set(err, EINVAL, "tensor '%s' in %s: expected U8 MXFP4 data of shape "
                "(%lld, %lld, %lld%s)", name, t->file, (long long)n_experts,
                (long long)want[0], (long long)want[1], ndim > 2 ? ", 16" : "");
        return NULL;
    }
    return (const uint8_t *)t->data + (size_t)expert * (t->nbytes / (size_t)n_experts);
}

/* Dequantises expert e's slice of the MXFP4 pair `<base>_blocks` (E, rows,
 * cols / 32, 16) / `<base>_scales` (E, rows, cols / 32) into out (rows,
 * cols). */
static int s_mxfp4(float *out, safetensors_t *st, const char *base, const config_t *cfg,
                   int expert, int64_t rows, int64_t cols, err_t *err)
{
    if (cols % MXFP4_BLOCK != 0)
        return err_set(err, EINVAL, "tensor '%s_blocks': rows of %lld values are not "
                       "whole MXFP4 blocks of %d", base, (long long)cols, MXFP4_BLOCK);
    const int64_t shape[3] = {rows, cols / MXFP4_BLOCK, MXFP4_BLOCK_BYTES};
    const uint8_t *blocks = s_u8_slice(st, base, "blocks", cfg->n_experts, expert, 3,
                                       shape, err);
    const uint8_t *scales = blocks ? s_u8_slice(st, base, "scales", cfg->n_experts,
                                                expert, 2, shape, err) : NULL;
    if (!scales)
        return -1;
    mxfp4_dequant(out, blocks, scales, (size_t)(rows * (cols / MXFP4_BLOCK)));
    return 0;
}

/* True when the checkpoint holds tensor `name` as MXFP4 (`name`_blocks) and
 * not as float. */
static bool s_is_mxfp4(safetensors_t *st, const char *name)
{
    err_t probe = {0};
    if (safetensors_find(st, name, &probe))
        return false;
    char blocks[ARCH_NAME_MAX + 16];
    snprintf(blocks, sizeof blocks, "%s_blocks", name);
    if (!safetensors_find(st, blocks, &probe))
        return false;
    return true;
}

int fused_load(safetensors_t *st, const config_t *cfg, int layer, int expert,
               expert_weights_t *ew, expert_biases_t *eb, float **owned, err_t *err)
{
    const int hidden = cfg->hidden_size, inter = cfg->intermediate_size;
    const size_t mat = (size_t)hidden * inter;
    arch_tensor_t gate_up, gate_up_bias, down, down_bias;
    float *buf = NULL, *rows = NULL;
    if (arch_tensor(cfg, ARCH_W_EXPERT_GATE, layer, expert, &gate_up, err) < 0 ||
        arch_tensor(cfg, ARCH_W_EXPERT_UP, layer, expert, &gate_up_bias, err) < 0 ||
        arch_tensor(cfg, ARCH_W_EXPERT_DOWN, layer, expert, &down, err) < 0 ||
        arch_tensor(cfg, ARCH_W_EXPERT_DOWN_BIAS, layer, expert, &down_bias, err) < 0)
        return -1;
    buf = mem_alloc_aligned((3 * mat + 2 * (size_t)inter) * sizeof *buf);
    if (!buf) {
        err_set(err, ENOMEM, "out of memory for expert %d of layer %d", expert, layer);
        goto fail;
    }
    float *gate = buf, *up = buf + mat, *dn = buf + 2 * mat;
    float *gate_b = buf + 3 * mat, *up_b = gate_b + inter;

    if (s_is_mxfp4(st, gate_up.name)) {
        rows = mem_alloc_aligned(2 * mat * sizeof *rows);
        if (!rows) {
            err_set(err, ENOMEM, "out of memory for expert %d of layer %d", expert, layer);
            goto fail;
        }
        if (s_mxfp4(rows, st, gate_up.name, cfg, expert, 2 * (int64_t)inter, hidden,
                    err) < 0)
            goto fail;
        expert_layout_split_rows(gate, up, rows, hidden, inter);
    } else {
        const float *w = safetensors_f32(st, gate_up.name, gate_up.slice, gate_up.ndim,
                                         gate_up.shape, err);
        if (!w)
            goto fail;
        expert_layout_split_gate_up(gate, up, w, hidden, inter);
    }
    if (s_is_mxfp4(st, down.name)) {
        if (s_mxfp4(dn, st, down.name, cfg, expert, hidden, inter, err) < 0)
            goto fail;
    } else {
        const float *w = safetensors_f32(st, down.name, down.slice, down.ndim, down.shape,
                                         err);
        if (!w)
            goto fail;
        expert_layout_transpose_down(dn, w, hidden, inter);
    }
    const float *b = safetensors_f32(st, gate_up_bias.name, gate_up_bias.slice,
                                     gate_up_bias.ndim, gate_up_bias.shape, err);
    if (!b)
        goto fail;
    expert_layout_split_gate_up_bias(gate_b, up_b, b, inter);
    eb->down = safetensors_f32(st, down_bias.name, down_bias.slice, down_bias.ndim,
                               down_bias.shape, err);
    if (!eb->down)
        goto fail;
    eb->gate = gate_b;
    eb->up = up_b;
    *ew = (expert_weights_t){.gate = gate, .up = up, .down = dn};
    *owned = buf;
    mem_free(rows);
    return 0;

fail:;
    int saved = errno;
    mem_free(rows);
    mem_free(buf);
    eb->down = NULL;
    errno = saved;
    return -1;
}
