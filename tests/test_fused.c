/* test_fused: gpt_oss's fused experts loaded per expert (engine/fused.h).
 * The same weights stored as float32 fused tensors and as MXFP4 blocks and
 * scales (with BF16 biases, as real checkpoints) load to identical matrices;
 * a missing or malformed tensor is refused naming it; and a process that
 * hosts some experts holds buffers for those only. The float32 path itself is
 * held to Hugging Face's outputs by test_fixtures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "engine/fused.h"
#include "engine/wstore.h"
#include "model/mxfp4.h"
#include "tests/fixture.h"
#include "tests/testutil.h"

enum { E = 3, H = 64, I = 32, MAX_TENSORS = 8 };

typedef struct raw_tensor {
    const char *name;
    const char *dtype;
    int ndim;
    int64_t shape[4];
    const void *data;
    size_t nbytes;
} raw_tensor_t;

/* Writes a safetensors file by hand (st_writer writes floats only). */
static void s_write(const char *path, const raw_tensor_t *t, int n)
{
    char header[4096];
    size_t len = 0, off = 0;
    len += (size_t)snprintf(header + len, sizeof header - len, "{");
    for (int i = 0; i < n; i++) {
        len += (size_t)snprintf(header + len, sizeof header - len,
                                "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "",
                                t[i].name, t[i].dtype);
        for (int d = 0; d < t[i].ndim; d++)
            len += (size_t)snprintf(header + len, sizeof header - len, "%s%lld",
                                    d ? "," : "", (long long)t[i].shape[d]);
        len += (size_t)snprintf(header + len, sizeof header - len,
                                "],\"data_offsets\":[%zu,%zu]}", off, off + t[i].nbytes);
        off += t[i].nbytes;
    }
    len += (size_t)snprintf(header + len, sizeof header - len, "}");
    while (len % 8)
        header[len++] = ' ';
    assert_true(len < sizeof header);
    size_t total = 8 + len + off;
    uint8_t *buf = malloc(total);
    uint64_t hl = len;
    for (int b = 0; b < 8; b++)
        buf[b] = (uint8_t)(hl >> (8 * b));
    memcpy(buf + 8, header, len);
    size_t at = 8 + len;
    for (int i = 0; i < n; i++) {
        memcpy(buf + at, t[i].data, t[i].nbytes);
        at += t[i].nbytes;
    }
    assert_int_equal(testutil_write_file(path, buf, total), 0);
    free(buf);
}

static uint16_t s_bf16_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (uint16_t)(u >> 16); /* values below are exact in bf16 */
}

static float s_bf16_value(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u &= 0xffff0000u;
    memcpy(&f, &u, sizeof f);
    return f;
}

typedef struct pair {
    char *dir_f32, *dir_mx;  /* the two checkpoints */
    config_t cfg;
} pair_t;

/* Random MXFP4 weights and biases, written both ways. */
static pair_t *s_make_pair(void)
{
    pair_t *p = calloc(1, sizeof *p);
    p->dir_f32 = testutil_mkdtemp("fused-f32");
    p->dir_mx = testutil_mkdtemp("fused-mx");
    assert_non_null(p->dir_f32);
    assert_non_null(p->dir_mx);
    p->cfg = (config_t){.arch = CONFIG_ARCH_GPT_OSS, .hidden_size = H,
                        .intermediate_size = I, .n_experts = E, .n_layers = 1,
                        .n_experts_per_tok = 2, .n_heads = 4, .n_kv_heads = 2,
                        .head_dim = 16, .expert_act = CONFIG_EXPERT_SWIGLU_OAI,
                        .experts_layout = CONFIG_EXPERTS_STACKED};
    testrng_t rng;
    testrng_init(&rng, 31);
    const size_t gu_blocks = (size_t)E * 2 * I * (H / 32), dn_blocks = (size_t)E * H * (I / 32);
    uint8_t *gu_b = malloc(gu_blocks * 16), *gu_s = malloc(gu_blocks);
    uint8_t *dn_b = malloc(dn_blocks * 16), *dn_s = malloc(dn_blocks);
    for (size_t i = 0; i < gu_blocks * 16; i++)
        gu_b[i] = (uint8_t)(testrng_uniform(&rng) * 256);
    for (size_t i = 0; i < dn_blocks * 16; i++)
        dn_b[i] = (uint8_t)(testrng_uniform(&rng) * 256);
    for (size_t i = 0; i < gu_blocks; i++)
        gu_s[i] = (uint8_t)(122 + testrng_uniform(&rng) * 8);
    for (size_t i = 0; i < dn_blocks; i++)
        dn_s[i] = (uint8_t)(122 + testrng_uniform(&rng) * 8);
    float *gu_rows = malloc(gu_blocks * 32 * sizeof(float)); /* (E, 2I, H) */
    float *dn_rows = malloc(dn_blocks * 32 * sizeof(float)); /* (E, H, I) */
    mxfp4_dequant(gu_rows, gu_b, gu_s, gu_blocks);
    mxfp4_dequant(dn_rows, dn_b, dn_s, dn_blocks);
    /* the float checkpoint: transposed to y = x W, as transformers does */
    float *gu = malloc((size_t)E * H * 2 * I * sizeof(float));
    float *dn = malloc((size_t)E * I * H * sizeof(float));
    for (int e = 0; e < E; e++) {
        for (int j = 0; j < 2 * I; j++)
            for (int k = 0; k < H; k++)
                gu[((size_t)e * H + k) * 2 * I + j] = gu_rows[((size_t)e * 2 * I + j) * H + k];
        for (int j = 0; j < H; j++)
            for (int i = 0; i < I; i++)
                dn[((size_t)e * I + i) * H + j] = dn_rows[((size_t)e * H + j) * I + i];
    }
    float gub[E * 2 * I], dnb[E * H];
    uint16_t gub16[E * 2 * I], dnb16[E * H];
    testrng_fill(&rng, gub, E * 2 * I, 0.5f);
    testrng_fill(&rng, dnb, E * H, 0.5f);
    for (int i = 0; i < E * 2 * I; i++)
        gub[i] = s_bf16_value(gub[i]), gub16[i] = s_bf16_bits(gub[i]);
    for (int i = 0; i < E * H; i++)
        dnb[i] = s_bf16_value(dnb[i]), dnb16[i] = s_bf16_bits(dnb[i]);

#define L0 "model.layers.0.mlp.experts."
    const raw_tensor_t f32[] = {
        {L0 "gate_up_proj", "F32", 3, {E, H, 2 * I}, gu, (size_t)E * H * 2 * I * 4},
        {L0 "gate_up_proj_bias", "F32", 2, {E, 2 * I}, gub, sizeof gub},
        {L0 "down_proj", "F32", 3, {E, I, H}, dn, (size_t)E * I * H * 4},
        {L0 "down_proj_bias", "F32", 2, {E, H}, dnb, sizeof dnb},
    };
    const raw_tensor_t mx[] = {
        {L0 "gate_up_proj_blocks", "U8", 4, {E, 2 * I, H / 32, 16}, gu_b, gu_blocks * 16},
        {L0 "gate_up_proj_scales", "U8", 3, {E, 2 * I, H / 32}, gu_s, gu_blocks},
        {L0 "gate_up_proj_bias", "BF16", 2, {E, 2 * I}, gub16, sizeof gub16},
        {L0 "down_proj_blocks", "U8", 4, {E, H, I / 32, 16}, dn_b, dn_blocks * 16},
        {L0 "down_proj_scales", "U8", 3, {E, H, I / 32}, dn_s, dn_blocks},
        {L0 "down_proj_bias", "BF16", 2, {E, H}, dnb16, sizeof dnb16},
    };
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", p->dir_f32);
    s_write(path, f32, 4);
    snprintf(path, sizeof path, "%s/model.safetensors", p->dir_mx);
    s_write(path, mx, 6);
    free(gu_b), free(gu_s), free(dn_b), free(dn_s);
    free(gu_rows), free(dn_rows), free(gu), free(dn);
    return p;
}

static void s_free_pair(pair_t *p)
{
    testutil_rmtree(p->dir_f32);
    testutil_rmtree(p->dir_mx);
    free(p->dir_f32);
    free(p->dir_mx);
    free(p);
}

static void test_mxfp4_loads_as_float(void **state)
{
    (void)state;
    pair_t *p = s_make_pair();
    err_t err = {0};
    safetensors_t *a = safetensors_open(p->dir_f32, &err);
    safetensors_t *b = safetensors_open(p->dir_mx, &err);
    assert_non_null(a);
    assert_non_null(b);
    wstore_t *store = wstore_new();
    assert_non_null(store);
    float ra[H], rb[H];
    for (int e = 0; e < E; e++) {
        expert_weights_t wa, wb;
        expert_biases_t ba, bb;
        const void *oa = NULL, *ob = NULL;
        if (fused_load(a, store, &p->cfg, 0, e, &wa, &ba, &oa, &err) < 0)
            fail_msg("float32: %s", err.msg);
        if (fused_load(b, store, &p->cfg, 0, e, &wb, &bb, &ob, &err) < 0)
            fail_msg("mxfp4: %s", err.msg);
        /* float32 re-laid out into an owned buffer; MXFP4 held as stored */
        assert_non_null(oa);
        assert_null(ob);
        assert_int_equal(wa.gate.dtype, DTYPE_F32);
        assert_int_equal(wb.gate.dtype, DTYPE_MXFP4);
        assert_int_equal(wb.up.dtype, DTYPE_MXFP4);
        assert_int_equal(wb.down.dtype, DTYPE_MXFP4);
        const tensor_t *ta[3] = {&wa.gate, &wa.up, &wa.down}, *tb[3] = {&wb.gate, &wb.up, &wb.down};
        float norm = 0;
        for (int m = 0; m < 3; m++) {
            assert_int_equal(ta[m]->rows, tb[m]->rows);
            assert_int_equal(ta[m]->cols, tb[m]->cols);
            for (int64_t r = 0; r < ta[m]->rows; r++) {
                tensor_row_to_f32(ta[m], r, ra);
                tensor_row_to_f32(tb[m], r, rb);
                assert_memory_equal(ra, rb, (size_t)ta[m]->cols * sizeof(float));
                for (int64_t c = 0; c < ta[m]->cols; c++)
                    norm += rb[c] * rb[c];
            }
        }
        assert_memory_equal(ba.gate, bb.gate, I * sizeof(float));
        assert_memory_equal(ba.up, bb.up, I * sizeof(float));
        assert_memory_equal(ba.down, bb.down, H * sizeof(float));
        /* and not all zeros: the data went through */
        assert_true(norm > 0);
    }
    wstore_destroy(&store);
    /* a U8 tensor is no float tensor */
    assert_null(safetensors_f32(b, L0 "gate_up_proj_scales", -1, 0, NULL, &err));
    assert_int_equal(errno, EINVAL);
    assert_non_null(strstr(err.msg, "U8"));
    safetensors_destroy(&a);
    safetensors_destroy(&b);
    s_free_pair(p);
}

/* A wrong shape or a missing tensor fails, naming the tensor. */
static void test_bad_checkpoints_are_refused(void **state)
{
    (void)state;
    pair_t *p = s_make_pair();
    err_t err = {0};
    safetensors_t *b = safetensors_open(p->dir_mx, &err);
    assert_non_null(b);
    expert_weights_t w;
    expert_biases_t bi;
    const void *owned = NULL;
    wstore_t *store = wstore_new();
    assert_non_null(store);
    config_t cfg = p->cfg;
    cfg.hidden_size = 96; /* the blocks hold rows of 64 */
    assert_int_equal(fused_load(b, store, &cfg, 0, 0, &w, &bi, &owned, &err), -1);
    assert_int_equal(errno, EINVAL);
    assert_non_null(strstr(err.msg, "gate_up_proj_blocks"));
    assert_null(owned);
    cfg = p->cfg;
    cfg.n_layers = 2; /* layer 1 is not in the file */
    assert_int_equal(fused_load(b, store, &cfg, 1, 0, &w, &bi, &owned, &err), -1);
    assert_int_equal(errno, ENOENT);
    assert_non_null(strstr(err.msg, "model.layers.1.mlp.experts.gate_up_proj"));
    assert_null(owned);
    assert_int_equal(wstore_bytes(store), 0);
    wstore_destroy(&store);
    safetensors_destroy(&b);
    s_free_pair(p);
}

static bool s_hosts_odd(void *ctx, int layer, int expert)
{
    (void)ctx, (void)layer;
    return expert % 2 == 1;
}

/* An expert node holds buffers for its own experts only. */
static void test_share_loads_only_hosted(void **state)
{
    (void)state;
    char dir[700];
    snprintf(dir, sizeof dir, "%s/gpt_oss-A", fixture_root());
    err_t err = {0};
    weights_select_t sel = {.dense = false, .hosts = s_hosts_odd};
    weights_t *w = weights_load(dir, &sel, &err);
    if (!w)
        fail_msg("%s", err.msg);
    for (int l = 0; l < w->cfg.n_layers; l++)
        for (int e = 0; e < w->cfg.n_experts; e++) {
            const layer_weights_t *lw = &w->layers[l];
            assert_int_equal(weights_has_expert(w, l, e), e % 2 == 1);
            assert_int_equal(lw->experts[e].up.data != NULL, e % 2 == 1);
            assert_int_equal(lw->expert_biases[e].down != NULL, e % 2 == 1);
        }
    /* the float32 fixture's experts re-laid out, for the hosted half only */
    const uint64_t per_expert = (3 * (uint64_t)w->cfg.hidden_size * w->cfg.intermediate_size +
                                 2 * (uint64_t)w->cfg.intermediate_size) * sizeof(float);
    assert_int_equal(wstore_bytes(w->store),
                     per_expert * (uint64_t)w->cfg.n_layers * (uint64_t)(w->cfg.n_experts / 2));
    weights_destroy(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mxfp4_loads_as_float),
        cmocka_unit_test(test_bad_checkpoints_are_refused),
        cmocka_unit_test(test_share_loads_only_hosted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
