/* test_weights: weights held as the checkpoint stores them, and converted at
 * load as --dtype / --quantization ask (engine/weights.h, engine/wformat.h),
 * on the precision fixtures ($MOE_FIXTURES_PRECISION):
 *   - each matrix's dtype after load (BF16, FP8 E4M3 with its block scales,
 *     MXFP4 views of gpt-oss's fused experts), nothing widened: the bytes
 *     held are about the file's, and nothing is copied into owned buffers
 *     but gpt-oss's split biases; with select.resident (moe-run, --preload)
 *     the matrices are copies of the file's bytes in the weight store;
 *   - --quantization converts the 2-D linear weights only (not embeddings,
 *     routers), byte for byte what core/quant makes of the decoded rows;
 *     a matrix whose rows are not whole blocks of 32 stays as stored, and
 *     one line says so; --dtype converts every matrix;
 *   - bad FP8/MXFP4 checkpoints (a missing, mis-shaped or NaN scale) are
 *     refused with one error naming the tensor.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/mem.h"
#include "core/quant.h"
#include "engine/weights.h"
#include "engine/wformat.h"
#include "engine/wstore.h"
#include "tests/testutil.h"

enum { MAX_COLS = 4096 };

/* The precision fixture `name`, or a skip when the folder is absent. */
static void s_fixture(const char *name, char *dir, size_t size)
{
    const char *root = testutil_env("MOE_FIXTURES_PRECISION", "../shared/fixtures-precision");
    snprintf(dir, size, "%s/%s", root, name);
    char config[1100];
    snprintf(config, sizeof config, "%s/config.json", dir);
    struct stat st;
    if (stat(config, &st) != 0)
        testutil_skip_unless_possible(false, "no fixture %s", dir);
}

static weights_t *s_load(const char *dir, wformat_t format, FILE *log)
{
    const weights_select_t all = {.dense = true, .hosts = weights_hosts_all,
                                  .format = format, .log = log, .threads = 2};
    err_t err = {0};
    weights_t *w = weights_load(dir, &all, &err);
    if (!w)
        fail_msg("%s: %s", dir, err.msg);
    return w;
}

/* s_load with select.resident (as moe-run and --preload load). */
static weights_t *s_load_resident(const char *dir)
{
    const weights_select_t all = {.dense = true, .hosts = weights_hosts_all, .threads = 2,
                                  .resident = true};
    err_t err = {0};
    weights_t *w = weights_load(dir, &all, &err);
    if (!w)
        fail_msg("%s: %s", dir, err.msg);
    return w;
}

static size_t s_file_bytes(const char *dir)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (size_t)st.st_size;
}

/* Every matrix of a plain-attention layer and its experts has dtype d. */
static void s_expect_layer(const weights_t *w, int l, dtype_t attn, dtype_t experts)
{
    const layer_weights_t *lw = &w->layers[l];
    assert_int_equal(lw->q.dtype, attn);
    assert_int_equal(lw->k.dtype, attn);
    assert_int_equal(lw->v.dtype, attn);
    assert_int_equal(lw->o.dtype, attn);
    for (int e = 0; e < w->cfg.n_experts; e++) {
        assert_int_equal(lw->experts[e].gate.dtype, experts);
        assert_int_equal(lw->experts[e].up.dtype, experts);
        assert_int_equal(lw->experts[e].down.dtype, experts);
    }
}

static void test_bf16_held_as_stored(void **state)
{
    (void)state;
    char dir[1024];
    s_fixture("mixtral-bf16-A", dir, sizeof dir);
    weights_t *w = s_load(dir, (wformat_t){0}, NULL);
    assert_int_equal(w->embed.dtype, DTYPE_BF16);
    assert_int_equal(w->lm_head.dtype, DTYPE_BF16);
    for (int l = 0; l < w->cfg.n_layers; l++) {
        s_expect_layer(w, l, DTYPE_BF16, DTYPE_BF16);
        assert_int_equal(w->layers[l].router.dtype, DTYPE_BF16);
    }
    /* In place: nothing owned; about the file's bytes (vectors widened). */
    assert_int_equal(wstore_bytes(w->store), 0);
    const size_t file = s_file_bytes(dir);
    assert_true(weights_bytes(w) <= file);
    assert_true(weights_bytes(w) >= file * 9 / 10);
    char held[96];
    assert_string_equal(weights_describe(w, held, sizeof held), "bf16");
    weights_destroy(&w);
}

static void test_fp8_held_with_scales(void **state)
{
    (void)state;
    char dir[1024];
    s_fixture("deepseek_v3-fp8-A", dir, sizeof dir);
    weights_t *w = s_load(dir, (wformat_t){0}, NULL);
    const config_t *c = &w->cfg;
    assert_int_equal(c->quant.method, CONFIG_QUANT_FP8);
    assert_int_equal(w->embed.dtype, DTYPE_BF16);
    assert_int_equal(w->lm_head.dtype, DTYPE_BF16);
    for (int l = 0; l < c->n_layers; l++) {
        const layer_weights_t *lw = &w->layers[l];
        const tensor_t *fp8[] = {&lw->q_a, &lw->q_b, &lw->kv_a, &lw->kv_b, &lw->o};
        for (size_t i = 0; i < sizeof fp8 / sizeof fp8[0]; i++) {
            const tensor_t *t = fp8[i];
            assert_int_equal(t->dtype, DTYPE_F8_E4M3);
            assert_non_null(t->scale_inv);
            assert_int_equal(t->block_n, c->quant.block_n);
            assert_int_equal(t->block_k, c->quant.block_k);
            assert_int_equal(t->scale_stride,
                             (size_t)((t->cols + t->block_k - 1) / t->block_k));
            assert_int_equal(t->row_stride, (size_t)t->cols);
        }
        const expert_weights_t *ffn = config_layer_is_moe(c, l) ? &lw->shared : &lw->dense;
        assert_int_equal(ffn->gate.dtype, DTYPE_F8_E4M3);
        assert_int_equal(ffn->down.dtype, DTYPE_F8_E4M3);
        if (config_layer_is_moe(c, l)) {
            assert_int_equal(lw->router.dtype, DTYPE_BF16);
            assert_non_null(lw->score_bias);
            assert_int_equal(lw->experts[0].up.dtype, DTYPE_F8_E4M3);
        }
    }
    assert_int_equal(wstore_bytes(w->store), 0);
    assert_true(weights_bytes(w) <= s_file_bytes(dir));
    weights_destroy(&w);
}

static void test_mxfp4_experts_are_views(void **state)
{
    (void)state;
    char dir[1024];
    s_fixture("gpt_oss-mxfp4-A", dir, sizeof dir);
    weights_t *w = s_load(dir, (wformat_t){0}, NULL);
    const config_t *c = &w->cfg;
    for (int l = 0; l < c->n_layers; l++) {
        s_expect_layer(w, l, DTYPE_BF16, DTYPE_MXFP4);
        const expert_weights_t *ew = &w->layers[l].experts[1];
        /* gate and up: every other row of gate_up_proj_blocks */
        const size_t row = dtype_row_bytes(DTYPE_MXFP4, c->hidden_size);
        assert_int_equal(ew->gate.row_stride, 2 * row);
        assert_ptr_equal((const uint8_t *)ew->gate.data + row, ew->up.data);
        assert_ptr_equal(ew->gate.e8m0 + c->hidden_size / 32, ew->up.e8m0);
        assert_int_equal(ew->gate.rows, c->intermediate_size);
        assert_int_equal(ew->down.rows, c->hidden_size);
    }
    /* Owned: only the split gate/up biases. */
    assert_int_equal(wstore_bytes(w->store), (uint64_t)c->n_layers * c->n_experts * 2 *
                                                 c->intermediate_size * sizeof(float));
    /* The biases, BF16 in the file, are widened: a quarter of this tiny
     * model's bytes. */
    assert_true(weights_bytes(w) <= s_file_bytes(dir) * 5 / 4);
    char held[96];
    assert_string_equal(weights_describe(w, held, sizeof held), "bf16 (mxfp4 experts)");
    weights_destroy(&w);
}

/* Row r of t, converted, is what the quantizer makes of row r of src. */
static void s_expect_quantized_row(const tensor_t *t, const tensor_t *src, int64_t r)
{
    static float row[MAX_COLS];
    static uint8_t want[MAX_COLS * 2];
    assert_true(src->cols <= MAX_COLS);
    tensor_row_to_f32(src, r, row);
    if (t->dtype == DTYPE_Q8_0)
        quant_row_q8_0(row, want, src->cols);
    else
        quant_row_q4_0(row, want, src->cols);
    assert_memory_equal((const uint8_t *)t->data + (size_t)r * t->row_stride, want,
                        dtype_row_bytes(t->dtype, t->cols));
}

static void test_quantization_converts_linear_weights(void **state)
{
    (void)state;
    char dir[1024];
    s_fixture("mixtral-bf16-A", dir, sizeof dir);
    weights_t *src = s_load(dir, (wformat_t){0}, NULL);
    const wformat_quant_t quants[] = {WFORMAT_QUANT_Q8_0, WFORMAT_QUANT_Q4_0};
    const dtype_t dtypes[] = {DTYPE_Q8_0, DTYPE_Q4_0};
    for (int i = 0; i < 2; i++) {
        weights_t *w = s_load(dir, (wformat_t){.quant = quants[i]}, NULL);
        assert_int_equal(w->embed.dtype, DTYPE_BF16);          /* not embeddings */
        assert_int_equal(w->lm_head.dtype, dtypes[i]);         /* the LM head */
        for (int l = 0; l < w->cfg.n_layers; l++) {
            s_expect_layer(w, l, dtypes[i], dtypes[i]);
            assert_int_equal(w->layers[l].router.dtype, DTYPE_BF16);   /* not routers */
            s_expect_quantized_row(&w->layers[l].q, &src->layers[l].q, 3);
            s_expect_quantized_row(&w->layers[l].experts[5].down,
                                   &src->layers[l].experts[5].down, 7);
        }
        s_expect_quantized_row(&w->lm_head, &src->lm_head, 100);
        const tensor_t *q = &w->layers[0].q;
        assert_int_equal(tensor_bytes(q), (size_t)q->rows * (size_t)(q->cols / 32) *
                                              (size_t)dtype_info(dtypes[i])->block_bytes);
        assert_true(weights_bytes(w) < weights_bytes(src));
        weights_destroy(&w);
    }
    weights_destroy(&src);
}

/* Rows that are not whole blocks stay as stored, and one line says so. */
static void test_partial_blocks_stay_as_stored(void **state)
{
    (void)state;
    char dir[1024];
    s_fixture("deepseek_v3-fp8-A", dir, sizeof dir);
    char *text = NULL;
    size_t len = 0;
    FILE *log = open_memstream(&text, &len);
    assert_non_null(log);
    weights_t *src = s_load(dir, (wformat_t){0}, NULL);
    weights_t *w = s_load(dir, (wformat_t){.quant = WFORMAT_QUANT_Q4_0}, log);
    fclose(log);
    const config_t *c = &w->cfg;
    for (int l = 0; l < c->n_layers; l++) {
        const layer_weights_t *lw = &w->layers[l];
        /* kv_b: (heads * (nope + v), kv_lora_rank) */
        assert_int_equal(lw->kv_b.dtype, c->kv_lora_rank % 32 ? DTYPE_F8_E4M3 : DTYPE_Q4_0);
        assert_int_equal(lw->q_a.dtype, DTYPE_Q4_0);
        s_expect_quantized_row(&lw->q_a, &src->layers[l].q_a, 0);
        if (!config_layer_is_moe(c, l))
            continue;
        assert_int_equal(lw->router.dtype, DTYPE_BF16);
        assert_int_equal(lw->experts[2].gate.dtype, DTYPE_Q4_0);
        assert_int_equal(lw->experts[2].down.dtype,
                         c->intermediate_size % 32 ? DTYPE_F8_E4M3 : DTYPE_Q4_0);
    }
    if (c->kv_lora_rank % 32 || c->intermediate_size % 32) {
        assert_non_null(strstr(text, "not quantized to q4_0"));
        assert_non_null(strstr(text, "not whole blocks of 32"));
        assert_null(strchr(text, '\n') == text + len - 1 ? NULL : "one line");
    }
    free(text);
    weights_destroy(&w);
    weights_destroy(&src);
}

/* --dtype converts every matrix, the experts' MXFP4 included. */
static void test_dtype_converts_every_matrix(void **state)
{
    (void)state;
    char dir[1024];
    s_fixture("gpt_oss-mxfp4-A", dir, sizeof dir);
    weights_t *src = s_load(dir, (wformat_t){0}, NULL);
    weights_t *w = s_load(dir, (wformat_t){.dtype = WFORMAT_DTYPE_F32}, NULL);
    assert_int_equal(w->embed.dtype, DTYPE_F32);
    assert_int_equal(w->lm_head.dtype, DTYPE_F32);
    static float a[MAX_COLS], b[MAX_COLS];
    for (int l = 0; l < w->cfg.n_layers; l++) {
        s_expect_layer(w, l, DTYPE_F32, DTYPE_F32);
        assert_int_equal(w->layers[l].router.dtype, DTYPE_F32);
        /* exact: the float32 of each stored value */
        const tensor_t *pairs[][2] = {{&w->layers[l].experts[3].up, &src->layers[l].experts[3].up},
                                      {&w->layers[l].o, &src->layers[l].o}};
        for (int p = 0; p < 2; p++)
            for (int64_t r = 0; r < pairs[p][0]->rows; r++) {
                tensor_row_to_f32(pairs[p][0], r, a);
                tensor_row_to_f32(pairs[p][1], r, b);
                assert_memory_equal(a, b, (size_t)pairs[p][0]->cols * sizeof(float));
            }
    }
    char held[96];
    assert_string_equal(weights_describe(w, held, sizeof held), "f32");
    weights_destroy(&w);
    weights_destroy(&src);
}

/* ---- bad checkpoints ------------------------------------------------------------ */

/* A copy of fixture `name` in a fresh folder whose safetensors header has
 * `find` replaced by `repl` (the first time it occurs) and, when bytes is
 * given, n bytes of tensor `tensor`'s data overwritten from its start.
 * Returns the folder (caller removes and frees). */
static char *s_patched_config(const char *name, const char *cfind, const char *crepl,
                              const char *find, const char *repl, const char *tensor,
                              const void *bytes, size_t n)
{
    char src[1024], path[1200];
    s_fixture(name, src, sizeof src);
    char *dir = testutil_mkdtemp("test_weights");
    assert_non_null(dir);
    size_t len = 0;
    snprintf(path, sizeof path, "%s/config.json", src);
    char *config = testutil_read_file(path, &len);
    assert_non_null(config);
    if (cfind) {
        char *at = strstr(config, cfind);
        assert_non_null(at);
        assert_int_equal(strlen(cfind), strlen(crepl));
        memcpy(at, crepl, strlen(crepl));
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    assert_int_equal(testutil_write_file(path, config, len), 0);
    free(config);
    snprintf(path, sizeof path, "%s/model.safetensors", src);
    uint8_t *file = (uint8_t *)testutil_read_file(path, &len);
    assert_non_null(file);
    uint64_t hl = 0;
    for (int b = 0; b < 8; b++)
        hl |= (uint64_t)file[b] << (8 * b);
    char *header = calloc(1, hl + (repl ? strlen(repl) : 0) + 64);
    memcpy(header, file + 8, hl);
    uint8_t *data = file + 8 + hl;
    const size_t data_len = len - 8 - hl;
    if (tensor) {
        /* "NAME":{"dtype":..,"shape":[..],"data_offsets":[BEGIN,END]} */
        char key[300];
        snprintf(key, sizeof key, "\"%s\":", tensor);
        const char *at = strstr(header, key);
        assert_non_null(at);
        const char *off = strstr(at, "data_offsets\":[");
        assert_non_null(off);
        const size_t begin = strtoull(off + strlen("data_offsets\":["), NULL, 10);
        assert_true(begin + n <= data_len);
        memcpy(data + begin, bytes, n);
    }
    if (find) {
        char *at = strstr(header, find);
        assert_non_null(at);
        memmove(at + strlen(repl), at + strlen(find), strlen(at + strlen(find)) + 1);
        memcpy(at, repl, strlen(repl));
    }
    size_t new_hl = strlen(header);
    while (new_hl % 8)
        header[new_hl++] = ' ';
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint8_t len8[8];
    for (int b = 0; b < 8; b++)
        len8[b] = (uint8_t)((uint64_t)new_hl >> (8 * b));
    assert_int_equal(fwrite(len8, 1, 8, f), 8);
    assert_int_equal(fwrite(header, 1, new_hl, f), new_hl);
    assert_int_equal(fwrite(data, 1, data_len, f), data_len);
    assert_int_equal(fclose(f), 0);
    free(header);
    free(file);
    return dir;
}

static char *s_patched(const char *name, const char *find, const char *repl,
                       const char *tensor, const void *bytes, size_t n)
{
    return s_patched_config(name, NULL, NULL, find, repl, tensor, bytes, n);
}

/* weights_load of dir fails with errno code and an error holding each of
 * the needles. */
static void s_expect_refused(char *dir, int code, const char *needle1, const char *needle2)
{
    const weights_select_t all = {.dense = true, .hosts = weights_hosts_all};
    err_t err = {0};
    weights_t *w = weights_load(dir, &all, &err);
    if (w)
        fail_msg("%s loaded", dir);
    printf("  refused: %s\n", err.msg);
    assert_int_equal(errno, code);
    assert_non_null(strstr(err.msg, needle1));
    if (needle2)
        assert_non_null(strstr(err.msg, needle2));
    testutil_rmtree(dir);
    free(dir);
}

static void test_bad_fp8_scales_are_refused(void **state)
{
    (void)state;
    const char *scale = "model.layers.1.self_attn.q_a_proj.weight_scale_inv";
    /* missing */
    s_expect_refused(s_patched("deepseek_v3-fp8-A", "q_a_proj.weight_scale_inv\"",
                               "q_a_proj.weight_scale_inw\"", NULL, NULL, 0),
                     EPROTO, "q_a_proj.weight_scale_inv", "missing");
    /* mis-shaped: the transposed grid, same bytes */
    char key[200];
    snprintf(key, sizeof key, "\"%s\":{\"dtype\":\"F32\",\"shape\":[1,2]", scale);
    char *bad = strdup(key);
    memcpy(strstr(bad, "[1,2]"), "[2,1]", 5);
    s_expect_refused(s_patched("deepseek_v3-fp8-A", key, bad, NULL, NULL, 0), EPROTO,
                     scale, "weight_block_size");
    free(bad);
    /* a NaN scale */
    const float nan_scale = NAN;
    s_expect_refused(s_patched("deepseek_v3-fp8-A", NULL, NULL, scale, &nan_scale,
                               sizeof nan_scale),
                     EPROTO, scale, "NaN");
    /* FP8 weights in a model whose config has no fp8 quantization_config */
    s_expect_refused(s_patched_config("deepseek_v3-fp8-A", "\"quantization_config\"",
                                      "\"quantization_confiX\"", NULL, NULL, NULL, NULL, 0),
                     EINVAL, "F8_E4M3", "quantization_config");
}

static void test_bad_mxfp4_scales_are_refused(void **state)
{
    (void)state;
    const uint8_t nan_e8m0 = 255;
    s_expect_refused(s_patched("gpt_oss-mxfp4-A", NULL, NULL,
                               "model.layers.1.mlp.experts.down_proj_scales", &nan_e8m0, 1),
                     EPROTO, "model.layers.1.mlp.experts.down_proj_scales", "NaN");
    /* mis-shaped: the same bytes as (8, 256, 1) */
    s_expect_refused(s_patched("gpt_oss-mxfp4-A",
                               "gate_up_proj_scales\":{\"dtype\":\"U8\",\"shape\":[8,128,2]",
                               "gate_up_proj_scales\":{\"dtype\":\"U8\",\"shape\":[8,256,1]",
                               NULL, NULL, 0),
                     EINVAL, "gate_up_proj_scales", NULL);
}

/* resident: every matrix copied as stored into the weight store (none a
 * view of the file), byte for byte, the store about the file's bytes. */
static void test_resident_copies_matrices_as_stored(void **state)
{
    (void)state;
    char dir[1024];
    s_fixture("mixtral-bf16-A", dir, sizeof dir);
    weights_t *mapped = s_load(dir, (wformat_t){0}, NULL);
    weights_t *own = s_load_resident(dir);
    const size_t file = s_file_bytes(dir);
    assert_int_equal(wstore_bytes(mapped->store), 0);
    assert_true(wstore_bytes(own->store) >= file * 8 / 10);
    assert_true(wstore_bytes(own->store) <= file);
    for (int l = 0; l < own->cfg.n_layers; l++) {
        const expert_weights_t *a = &mapped->layers[l].experts[0];
        const expert_weights_t *b = &own->layers[l].experts[0];
        const tensor_t *pairs[][2] = {{&a->gate, &b->gate}, {&a->up, &b->up},
                                      {&a->down, &b->down},
                                      {&mapped->layers[l].q, &own->layers[l].q}};
        for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
            const tensor_t *m = pairs[i][0], *o = pairs[i][1];
            assert_int_equal(o->dtype, m->dtype);
            assert_int_equal(o->rows, m->rows);
            assert_true(o->data != m->data);
            assert_memory_equal(o->data, m->data, (size_t)m->rows * m->row_stride);
        }
    }
    weights_destroy(&own);
    weights_destroy(&mapped);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bf16_held_as_stored),
        cmocka_unit_test(test_resident_copies_matrices_as_stored),
        cmocka_unit_test(test_fp8_held_with_scales),
        cmocka_unit_test(test_mxfp4_experts_are_views),
        cmocka_unit_test(test_quantization_converts_linear_weights),
        cmocka_unit_test(test_partial_blocks_stay_as_stored),
        cmocka_unit_test(test_dtype_converts_every_matrix),
        cmocka_unit_test(test_bad_fp8_scales_are_refused),
        cmocka_unit_test(test_bad_mxfp4_scales_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
