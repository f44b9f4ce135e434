/* fused: see fused.h. */
#include "engine/fused.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "model/arch.h"
#include "model/expert_layout.h"
#include "model/mxfp4.h"

/* Checks that tensor `name` stacks exactly n_experts experts along dim 0
 * (a slice is only checked against its index). */
static int s_stacked(safetensors_t *st, const char *name, int n_experts, err_t *err)
{
    const st_tensor_t *t = safetensors_find(st, name, err);
    if (!t)
        return -1;
    if (t->ndim < 1 || t->shape[0] != n_experts)
        return err_set(err, EINVAL, "tensor '%s' in %s stacks %lld experts along dim 0, the "
                       "config has %d", name, t->file, (long long)(t->ndim ? t->shape[0] : 0),
                       n_experts);
    return 0;
}

/* Expert e's slice of the MXFP4 pair `<base>_blocks` (E, rows, cols / 32, 16)
 * / `<base>_scales` (E, rows, cols / 32) as a (rows, cols) tensor. */
static int s_mxfp4(tensor_t *out, safetensors_t *st, const char *base, int n_experts,
                   int expert, int64_t rows, int64_t cols, err_t *err)
{
    char blocks_name[ARCH_NAME_MAX + 16], scales_name[ARCH_NAME_MAX + 16];
    snprintf(blocks_name, sizeof blocks_name, "%s_blocks", base);
    snprintf(scales_name, sizeof scales_name, "%s_scales", base);
    if (cols % MXFP4_BLOCK != 0)
        return err_set(err, EINVAL, "tensor '%s': rows of %lld values are not whole "
                       "MXFP4 blocks of %d", blocks_name, (long long)cols, MXFP4_BLOCK);
    const int64_t nb = cols / MXFP4_BLOCK;
    const int64_t shape[3] = {rows, nb, MXFP4_BLOCK_BYTES};
    if (s_stacked(st, blocks_name, n_experts, err) < 0 ||
        s_stacked(st, scales_name, n_experts, err) < 0)
        return -1;
    const uint8_t *blocks = safetensors_raw(st, blocks_name, expert, 3, shape, ST_U8,
                                            NULL, NULL, err);
    if (!blocks)
        return -1;
    const uint8_t *scales = safetensors_raw(st, scales_name, expert, 2, shape, ST_U8, NULL,
                                            NULL, err);
    if (!scales)
        return -1;
    for (int64_t i = 0; i < rows * nb; i++)
        if (scales[i] == 255) {
            const st_tensor_t *info = safetensors_find(st, scales_name, NULL);
            return err_set(err, EPROTO, "tensor '%s' in %s: expert %d's scale [%lld][%lld] "
                           "is 255, NaN in E8M0", scales_name, info ? info->file : "?",
                           expert, (long long)(i / nb), (long long)(i % nb));
        }
    *out = (tensor_t){.dtype = DTYPE_MXFP4, .rows = rows, .cols = cols, .data = blocks,
                      .row_stride = (size_t)nb * MXFP4_BLOCK_BYTES, .e8m0 = scales,
                      .scale_stride = (size_t)nb};
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
    return safetensors_find(st, blocks, &probe) != NULL;
}

/* Every other row of t from row `first`: gate (0) or up (1) of gate_up. */
static tensor_t s_every_other(const tensor_t *t, int first)
{
    tensor_t v = *t;
    v.rows = t->rows / 2;
    v.data = (const uint8_t *)t->data + (size_t)first * t->row_stride;
    v.row_stride = 2 * t->row_stride;
    v.e8m0 = t->e8m0 + (size_t)first * t->scale_stride;
    v.scale_stride = 2 * t->scale_stride;
    return v;
}

/* The dtype of a float safetensors tensor; false for the others. */
static bool s_float_dtype(st_dtype_t st, dtype_t *out)
{
    switch ((int)st) {
    case ST_F32: *out = DTYPE_F32; return true;
    case ST_F16: *out = DTYPE_F16; return true;
    case ST_BF16: *out = DTYPE_BF16; return true;
    default: return false;
    }
}

/* Expert e's float matrices, (E, hidden, 2 * inter) gate_up and (E, inter,
 * hidden) down in x W form, transposed into one buffer of their dtype:
 * gate, up (inter, hidden), down (hidden, inter). Element copies: exact. */
static int s_float(expert_weights_t *ew, const void **owned, safetensors_t *st,
                   wstore_t *store, const arch_tensor_t *gu, const arch_tensor_t *dn,
                   int n_experts, int hidden, int inter, err_t *err)
{
    st_dtype_t gu_type, dn_type;
    if (s_stacked(st, gu->name, n_experts, err) < 0 ||
        s_stacked(st, dn->name, n_experts, err) < 0)
        return -1;
    const uint8_t *w_gu = safetensors_raw(st, gu->name, gu->slice, gu->ndim, gu->shape,
                                          ST_ANY, NULL, &gu_type, err);
    const uint8_t *w_dn = w_gu ? safetensors_raw(st, dn->name, dn->slice, dn->ndim,
                                                 dn->shape, ST_ANY, NULL, &dn_type, err)
                               : NULL;
    if (!w_dn)
        return -1;
    dtype_t dtype, dtype_dn;
    if (!s_float_dtype(gu_type, &dtype) || !s_float_dtype(dn_type, &dtype_dn) ||
        dtype != dtype_dn)
        return err_set(err, EINVAL, "tensors '%s' (%s) and '%s' (%s): gpt_oss experts "
                       "must be F32, F16 or BF16, both alike, or MXFP4", gu->name,
                       st_dtype_name(gu_type), dn->name, st_dtype_name(dn_type));
    const size_t es = st_dtype_size(gu_type), mat = (size_t)hidden * inter;
    uint8_t *buf = wstore_alloc(store, 3 * mat * es);
    if (!buf)
        return err_set(err, ENOMEM, "out of memory for an expert of '%s'", gu->name);
    uint8_t *gate = buf, *up = buf + mat * es, *down = buf + 2 * mat * es;
    for (int i = 0; i < inter; i++)
        for (int k = 0; k < hidden; k++) {
            const uint8_t *src = w_gu + ((size_t)k * 2 * inter + 2 * (size_t)i) * es;
            memcpy(gate + ((size_t)i * hidden + k) * es, src, es);
            memcpy(up + ((size_t)i * hidden + k) * es, src + es, es);
        }
    for (int j = 0; j < hidden; j++)
        for (int i = 0; i < inter; i++)
            memcpy(down + ((size_t)j * inter + i) * es, w_dn + ((size_t)i * hidden + j) * es,
                   es);
    const size_t row_h = (size_t)hidden * es, row_i = (size_t)inter * es;
    ew->gate = (tensor_t){.dtype = dtype, .rows = inter, .cols = hidden, .data = gate,
                          .row_stride = row_h};
    ew->up = (tensor_t){.dtype = dtype, .rows = inter, .cols = hidden, .data = up,
                        .row_stride = row_h};
    ew->down = (tensor_t){.dtype = dtype, .rows = hidden, .cols = inter, .data = down,
                          .row_stride = row_i};
    *owned = buf;
    return 0;
}

int fused_load(safetensors_t *st, wstore_t *store, const config_t *cfg, int layer,
               int expert, expert_weights_t *ew, expert_biases_t *eb, const void **owned,
               err_t *err)
{
    const int hidden = cfg->hidden_size, inter = cfg->intermediate_size;
    arch_tensor_t gate_up, gate_up_bias, down, down_bias;
    expert_weights_t w = {0};
    *owned = NULL;
    if (arch_tensor(cfg, ARCH_W_EXPERT_GATE, layer, expert, &gate_up, err) < 0 ||
        arch_tensor(cfg, ARCH_W_EXPERT_UP, layer, expert, &gate_up_bias, err) < 0 ||
        arch_tensor(cfg, ARCH_W_EXPERT_DOWN, layer, expert, &down, err) < 0 ||
        arch_tensor(cfg, ARCH_W_EXPERT_DOWN_BIAS, layer, expert, &down_bias, err) < 0)
        return -1;
    const bool mx_gu = s_is_mxfp4(st, gate_up.name), mx_dn = s_is_mxfp4(st, down.name);
    if (mx_gu != mx_dn)
        return err_set(err, EINVAL, "tensors '%s' and '%s': gpt_oss experts must be both "
                       "MXFP4 or both float", gate_up.name, down.name);
    if (mx_gu) {
        tensor_t rows;
        if (s_mxfp4(&rows, st, gate_up.name, cfg->n_experts, expert, 2 * (int64_t)inter,
                    hidden, err) < 0 ||
            s_mxfp4(&w.down, st, down.name, cfg->n_experts, expert, hidden, inter, err) < 0)
            return -1;
        w.gate = s_every_other(&rows, 0);
        w.up = s_every_other(&rows, 1);
    } else if (s_float(&w, owned, st, store, &gate_up, &down, cfg->n_experts, hidden, inter,
                       err) < 0) {
        return -1;
    }
    const float *b = safetensors_f32(st, gate_up_bias.name, gate_up_bias.slice,
                                     gate_up_bias.ndim, gate_up_bias.shape, err);
    const float *b_down = b ? safetensors_f32(st, down_bias.name, down_bias.slice,
                                              down_bias.ndim, down_bias.shape, err)
                            : NULL;
    float *b_split = b_down ? wstore_alloc(store, 2 * (size_t)inter * sizeof(float)) : NULL;
    if (!b_split) {
        if (b_down)
            err_set(err, ENOMEM, "out of memory for expert %d of layer %d", expert, layer);
        if (*owned)
            wstore_free(store, *owned);
        *owned = NULL;
        return -1;
    }
    expert_layout_split_gate_up_bias(b_split, b_split + inter, b, inter);
    *eb = (expert_biases_t){.gate = b_split, .up = b_split + inter, .down = b_down};
    *ew = w;
    return 0;
}
