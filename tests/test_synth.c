/* test_synth: random-weight models written by synth_write() (and the
 * moe-mkmodel tool), read back with config_load() and safetensors_open().
 *
 * The expected Mixtral tensor list is spelled out here from the Hugging Face
 * layout, independently of synth.c's table. Checks: every tensor's name,
 * shape and dtype; F16/BF16 values equal the F32 model's rounded to nearest
 * even; sharded output equals one file; same seed gives identical bytes and
 * another seed different ones; the distributions of synth.h; and a one-token
 * forward pass of the tiny model whose logits are finite and not degenerate,
 * with decisive routing.
 *
 * Every other family (qwen2_moe, qwen3_moe, olmoe, hunyuan_v1_moe,
 * deepseek_v2, deepseek_v3, gpt_oss), at its tiny preset: config.json reads
 * back (config_parse_all) as the preset in every config_t field; every tensor
 * arch_tensor() names for the config is there with its shape and dtype, and
 * nothing else; same seed, same bytes; weights_load and moe-run run it when
 * the engine supports the family (else both refuse it by name); the medium
 * presets hold about the Mixtral medium's bytes (a table is printed); the
 * new distributions (biases, sinks, correction bias) are as synth.h says.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "core/mem.h"
#include "engine/weights.h"
#include "model/arch.h"
#include "model/config.h"
#include "model/family.h"
#include "model/safetensors.h"
#include "model/safetensors_private.h"
#include "model/synth.h"
#include "tests/testutil.h"

/* ---- helpers ------------------------------------------------------------- */

/* dir/name, malloc'd (caller frees). */
static char *s_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    assert_non_null(p);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static bool s_exists(const char *dir, const char *name)
{
    char *p = s_join(dir, name);
    bool yes = access(p, F_OK) == 0;
    free(p);
    return yes;
}

static config_t s_tiny(void)
{
    config_t cfg;
    err_t err = {0};
    if (synth_preset(&cfg, "mixtral", "tiny", &err))
        fail_msg("synth_preset: %s", err.msg);
    return cfg;
}

/* Writes cfg into state_dir/name; returns the model dir (caller frees). */
static char *s_write(void **state, const char *name, const config_t *cfg,
                     uint64_t seed, st_dtype_t dtype, uint64_t shard_bytes,
                     synth_stats_t *stats)
{
    char *dir = s_join(*state, name);
    synth_opts_t opts = {
        .seed = seed, .dtype = dtype, .shard_bytes = shard_bytes};
    err_t err = {0};
    if (synth_write(dir, cfg, &opts, stats, &err))
        fail_msg("synth_write(%s): %s", dir, err.msg);
    return dir;
}

/* The expected tensors of a Mixtral checkpoint. */
typedef struct s_expect {
    char name[128];
    int ndim;
    int64_t shape[2];
} s_expect_t;

static size_t s_mixtral_expected(const config_t *c, s_expect_t *out, size_t cap)
{
    size_t n = 0;
    const int64_t h = c->hidden_size, q = (int64_t)c->n_heads * c->head_dim;
    const int64_t kv = (int64_t)c->n_kv_heads * c->head_dim;
    const int64_t inter = c->intermediate_size;
#define ADD(nd, d0, d1, ...)                                                   \
    do {                                                                       \
        assert_true(n < cap);                                                  \
        snprintf(out[n].name, sizeof out[n].name, __VA_ARGS__);                \
        out[n].ndim = nd;                                                      \
        out[n].shape[0] = d0;                                                  \
        out[n].shape[1] = d1;                                                  \
        n++;                                                                   \
    } while (0)
    ADD(2, c->vocab_size, h, "model.embed_tokens.weight");
    if (!c->tie_word_embeddings)
        ADD(2, c->vocab_size, h, "lm_head.weight");
    ADD(1, h, 0, "model.norm.weight");
    for (int l = 0; l < c->n_layers; l++) {
        ADD(1, h, 0, "model.layers.%d.input_layernorm.weight", l);
        ADD(1, h, 0, "model.layers.%d.post_attention_layernorm.weight", l);
        ADD(2, q, h, "model.layers.%d.self_attn.q_proj.weight", l);
        ADD(2, kv, h, "model.layers.%d.self_attn.k_proj.weight", l);
        ADD(2, kv, h, "model.layers.%d.self_attn.v_proj.weight", l);
        ADD(2, h, q, "model.layers.%d.self_attn.o_proj.weight", l);
        ADD(2, c->n_experts, h, "model.layers.%d.block_sparse_moe.gate.weight",
            l);
        for (int e = 0; e < c->n_experts; e++) {
            ADD(2, inter, h,
                "model.layers.%d.block_sparse_moe.experts.%d.w1.weight", l, e);
            ADD(2, inter, h,
                "model.layers.%d.block_sparse_moe.experts.%d.w3.weight", l, e);
            ADD(2, h, inter,
                "model.layers.%d.block_sparse_moe.experts.%d.w2.weight", l, e);
        }
    }
#undef ADD
    return n;
}

static safetensors_t *s_open(const char *dir)
{
    err_t err = {0};
    safetensors_t *st = safetensors_open(dir, &err);
    if (!st)
        fail_msg("safetensors_open(%s): %s", dir, err.msg);
    return st;
}

static const float *s_get(safetensors_t *st, const s_expect_t *e)
{
    err_t err = {0};
    const float *x = safetensors_f32(st, e->name, -1, e->ndim, e->shape, &err);
    if (!x)
        fail_msg("%s", err.msg);
    return x;
}

static size_t s_count(const s_expect_t *e)
{
    return (size_t)e->shape[0] * (size_t)(e->ndim == 2 ? e->shape[1] : 1);
}

enum { S_MAX_EXPECT = 512 };

/* config_load() of what synth_write() wrote gives back the config. */
static void s_expect_config(const config_t *got, const config_t *want)
{
    assert_int_equal(got->arch, want->arch);
    assert_string_equal(got->model_type, want->model_type);
    assert_int_equal(got->hidden_size, want->hidden_size);
    assert_int_equal(got->n_layers, want->n_layers);
    assert_int_equal(got->n_heads, want->n_heads);
    assert_int_equal(got->n_kv_heads, want->n_kv_heads);
    assert_int_equal(got->head_dim, want->head_dim);
    assert_int_equal(got->intermediate_size, want->intermediate_size);
    assert_int_equal(got->n_experts, want->n_experts);
    assert_int_equal(got->n_experts_per_tok, want->n_experts_per_tok);
    assert_int_equal(got->vocab_size, want->vocab_size);
    assert_int_equal(got->max_position_embeddings,
                     want->max_position_embeddings);
    assert_true(got->rms_norm_eps == want->rms_norm_eps);
    assert_true(got->rope_theta == want->rope_theta);
    assert_int_equal(got->rope_type, want->rope_type);
    assert_int_equal(got->sliding_window, want->sliding_window);
    assert_int_equal(got->tie_word_embeddings, want->tie_word_embeddings);
    assert_int_equal(got->bos_token_id, want->bos_token_id);
    assert_int_equal(got->n_eos, want->n_eos);
    for (int i = 0; i < want->n_eos; i++)
        assert_int_equal(got->eos_token_ids[i], want->eos_token_ids[i]);
}

/* Every expected tensor is there with its shape and dtype, and nothing else. */
static void s_check_layout(const char *dir, const config_t *cfg,
                           st_dtype_t dtype)
{
    config_t got;
    err_t err = {0};
    if (config_load(&got, dir, &err))
        fail_msg("config_load(%s): %s", dir, err.msg);
    s_expect_config(&got, cfg);

    static s_expect_t ex[S_MAX_EXPECT];
    size_t n = s_mixtral_expected(cfg, ex, S_MAX_EXPECT);
    safetensors_t *st = s_open(dir);
    assert_int_equal(safetensors_count(st), n);
    for (size_t i = 0; i < n; i++) {
        const st_tensor_t *t = safetensors_find(st, ex[i].name, &err);
        if (!t)
            fail_msg("%s", err.msg);
        assert_int_equal(t->dtype, dtype);
        assert_int_equal(t->ndim, ex[i].ndim);
        for (int d = 0; d < t->ndim; d++)
            assert_int_equal(t->shape[d], ex[i].shape[d]);
        assert_int_equal(t->nbytes, s_count(&ex[i]) * st_dtype_size(dtype));
        assert_non_null(s_get(st, &ex[i]));
    }
    safetensors_destroy(&st);
}

/* ---- layout and values --------------------------------------------------- */

/* A preset's sizes: want's n_experts and n_experts_per_tok are checked where
 * want states them (non-zero). */
static void s_expect_sizes(const config_t *c, const config_t *want)
{
    assert_int_equal(c->hidden_size, want->hidden_size);
    assert_int_equal(c->n_layers, want->n_layers);
    if (want->n_experts) {
        assert_int_equal(c->n_experts, want->n_experts);
        assert_int_equal(c->n_experts_per_tok, want->n_experts_per_tok);
    }
    assert_int_equal(c->intermediate_size, want->intermediate_size);
    assert_int_equal(c->n_heads, want->n_heads);
    assert_int_equal(c->n_kv_heads, want->n_kv_heads);
    assert_int_equal(c->head_dim, want->head_dim);
    assert_int_equal(c->vocab_size, want->vocab_size);
}

static void test_presets(void **state)
{
    (void)state;
    config_t c = s_tiny();
    assert_int_equal(c.arch, CONFIG_ARCH_MIXTRAL);
    s_expect_sizes(&c, &(config_t){.hidden_size = 64, .n_layers = 2, .n_experts = 8,
                                   .n_experts_per_tok = 2, .intermediate_size = 128,
                                   .n_heads = 4, .n_kv_heads = 2, .head_dim = 16,
                                   .vocab_size = 512});
    assert_int_equal(c.max_position_embeddings, 4096);
    assert_true(c.rms_norm_eps == 1e-5f);
    assert_true(c.rope_theta == 1e6);
    assert_false(c.tie_word_embeddings);
    assert_int_equal(c.bos_token_id, 1);
    assert_int_equal(c.n_eos, 1);
    assert_int_equal(c.eos_token_ids[0], 2);

    err_t err = {0};
    assert_int_equal(synth_preset(&c, "mixtral", "small", &err), 0);
    s_expect_sizes(&c, &(config_t){.hidden_size = 256, .n_layers = 4,
                                   .intermediate_size = 512, .n_heads = 8, .n_kv_heads = 2,
                                   .head_dim = 32, .vocab_size = 2048});
    assert_int_equal(synth_preset(&c, "mixtral", "medium", &err), 0);
    s_expect_sizes(&c, &(config_t){.hidden_size = 1024, .n_layers = 8, .n_experts = 8,
                                   .n_experts_per_tok = 2, .intermediate_size = 2816,
                                   .n_heads = 16, .n_kv_heads = 4, .head_dim = 64,
                                   .vocab_size = 32000});

    errno = 0;
    assert_int_equal(synth_preset(&c, "mixtral", "huge", &err), -1);
    assert_int_equal(errno, EINVAL);
    assert_non_null(strstr(err.msg, "'huge'"));
    assert_non_null(strstr(err.msg, "tiny, small, medium"));
    assert_int_equal(c.hidden_size, 0);
    errno = 0;
    assert_int_equal(synth_preset(&c, "llama", "tiny", &err), -1);
    assert_int_equal(errno, EINVAL);
    assert_non_null(strstr(err.msg, "'llama'"));
    assert_non_null(strstr(err.msg, "mixtral"));
    assert_int_equal(synth_preset(&c, NULL, NULL, NULL), -1);
    assert_string_equal(synth_preset_names("mixtral"), "tiny, small, medium");
    assert_null(synth_preset_names("llama"));
    assert_string_equal(synth_arch_names(),
                        "mixtral, qwen2_moe, qwen3_moe, olmoe, hunyuan_v1_moe, "
                        "deepseek_v2, deepseek_v3, gpt_oss");
    assert_string_equal(synth_preset_names("gpt_oss"), "tiny, small, medium");
}

static void test_tiny_each_dtype(void **state)
{
    config_t cfg = s_tiny();
    static const st_dtype_t dtypes[] = {ST_F32, ST_F16, ST_BF16};
    static const char *const names[] = {"f32", "f16", "bf16"};
    char *dirs[3];
    for (int d = 0; d < 3; d++) {
        synth_stats_t stats;
        dirs[d] = s_write(state, names[d], &cfg, 11, dtypes[d], 0, &stats);
        assert_true(s_exists(dirs[d], "model.safetensors"));
        assert_false(s_exists(dirs[d], "model.safetensors.index.json"));
        assert_int_equal(stats.n_files, 1);
        assert_int_equal(stats.n_tensors, 3 + 2 * (7 + 8 * 3));
        s_check_layout(dirs[d], &cfg, dtypes[d]);
    }
    /* config.json says the dtype */
    char *path = s_join(dirs[2], "config.json");
    char *text = testutil_read_file(path, NULL);
    assert_non_null(strstr(text, "\"bfloat16\""));
    assert_non_null(strstr(text, "\"rope_type\": \"default\""));
    assert_non_null(strstr(text, "\"MixtralForCausalLM\""));
    free(text);
    free(path);

    /* F16 / BF16 values are the F32 values rounded to nearest even */
    static s_expect_t ex[S_MAX_EXPECT];
    size_t n = s_mixtral_expected(&cfg, ex, S_MAX_EXPECT);
    safetensors_t *st[3];
    for (int d = 0; d < 3; d++)
        st[d] = s_open(dirs[d]);
    for (size_t i = 0; i < n; i++) {
        const float *f = s_get(st[0], &ex[i]);
        const float *h = s_get(st[1], &ex[i]);
        const float *b = s_get(st[2], &ex[i]);
        for (size_t j = 0; j < s_count(&ex[i]); j++) {
            assert_true(isfinite(f[j]));
            assert_int_equal(st_f32_bits(h[j]),
                             st_f32_bits(st_f16_to_f32(st_f32_to_f16(f[j]))));
            assert_int_equal(st_f32_bits(b[j]),
                             st_f32_bits(st_bf16_to_f32(st_f32_to_bf16(f[j]))));
        }
    }
    for (int d = 0; d < 3; d++) {
        safetensors_destroy(&st[d]);
        free(dirs[d]);
    }
}

static void test_sharded(void **state)
{
    config_t cfg = s_tiny();
    synth_stats_t one, many;
    char *single = s_write(state, "single", &cfg, 5, ST_BF16, 0, &one);
    const uint64_t limit = 40000;
    char *sharded = s_write(state, "sharded", &cfg, 5, ST_BF16, limit, &many);
    assert_true(many.n_files > 2);
    assert_int_equal(many.n_tensors, one.n_tensors);
    assert_int_equal(many.data_bytes, one.data_bytes);
    assert_false(s_exists(sharded, "model.safetensors"));
    assert_true(s_exists(sharded, "model.safetensors.index.json"));
    char name[64];
    for (size_t i = 0; i < many.n_files; i++) {
        snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1,
                 many.n_files);
        assert_true(s_exists(sharded, name));
    }
    s_check_layout(sharded, &cfg, ST_BF16);

    /* the index: total_size and every tensor */
    char *ipath = s_join(sharded, "model.safetensors.index.json");
    char *text = testutil_read_file(ipath, NULL);
    char want[64];
    snprintf(want, sizeof want, "\"total_size\": %llu",
             (unsigned long long)one.data_bytes);
    assert_non_null(strstr(text, want));
    free(text);
    free(ipath);

    /* each shard holds at most `limit` bytes of tensors, except a tensor
     * bigger than that alone; values equal the single file's */
    static s_expect_t ex[S_MAX_EXPECT];
    size_t n = s_mixtral_expected(&cfg, ex, S_MAX_EXPECT);
    safetensors_t *a = s_open(single), *b = s_open(sharded);
    size_t *bytes = calloc(many.n_files, sizeof *bytes);
    size_t *tensors = calloc(many.n_files, sizeof *tensors);
    for (size_t i = 0; i < n; i++) {
        const float *x = s_get(a, &ex[i]), *y = s_get(b, &ex[i]);
        assert_memory_equal(x, y, s_count(&ex[i]) * sizeof *x);
        const st_tensor_t *t = safetensors_find(b, ex[i].name, NULL);
        const char *p = strstr(t->file, "model-");
        assert_non_null(p);
        size_t k = (size_t)atoi(p + 6) - 1;
        assert_true(k < many.n_files);
        bytes[k] += t->nbytes;
        tensors[k]++;
    }
    for (size_t k = 0; k < many.n_files; k++)
        assert_true(bytes[k] <= limit || tensors[k] == 1);
    free(bytes);
    free(tensors);
    safetensors_destroy(&a);
    safetensors_destroy(&b);

    /* a limit above the model size gives one model.safetensors */
    synth_stats_t big;
    char *fits = s_write(state, "fits", &cfg, 5, ST_BF16, 1 << 30, &big);
    assert_int_equal(big.n_files, 1);
    assert_true(s_exists(fits, "model.safetensors"));
    assert_false(s_exists(fits, "model.safetensors.index.json"));

    /* rewriting a directory in the other layout leaves one checkpoint */
    synth_opts_t opts = {.seed = 5, .dtype = ST_BF16, .shard_bytes = limit};
    err_t err = {0};
    assert_int_equal(synth_write(fits, &cfg, &opts, NULL, &err), 0);
    assert_false(s_exists(fits, "model.safetensors"));
    s_check_layout(fits, &cfg, ST_BF16);
    opts.shard_bytes = 0;
    assert_int_equal(synth_write(sharded, &cfg, &opts, NULL, &err), 0);
    assert_false(s_exists(sharded, "model.safetensors.index.json"));
    s_check_layout(sharded, &cfg, ST_BF16);
    free(fits);
    free(single);
    free(sharded);
}

static bool s_files_equal(const char *d1, const char *d2, const char *name);

/* Both checkpoints hold the same files with the same bytes. */
static void s_expect_same_files(const char *d1, const char *d2, size_t n_files)
{
    assert_true(s_files_equal(d1, d2, "config.json"));
    if (n_files == 1) {
        assert_true(s_files_equal(d1, d2, "model.safetensors"));
        return;
    }
    assert_true(s_files_equal(d1, d2, "model.safetensors.index.json"));
    for (size_t i = 0; i < n_files; i++) {
        char name[64];
        snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1,
                 n_files);
        assert_true(s_files_equal(d1, d2, name));
    }
}

static bool s_files_equal(const char *d1, const char *d2, const char *name)
{
    char *p1 = s_join(d1, name), *p2 = s_join(d2, name);
    size_t n1 = 0, n2 = 0;
    char *a = testutil_read_file(p1, &n1), *b = testutil_read_file(p2, &n2);
    assert_non_null(a);
    assert_non_null(b);
    bool same = n1 == n2 && memcmp(a, b, n1) == 0;
    free(a);
    free(b);
    free(p1);
    free(p2);
    return same;
}

static void test_seeds(void **state)
{
    config_t cfg = s_tiny();
    char *a = s_write(state, "seed7a", &cfg, 7, ST_F32, 0, NULL);
    char *b = s_write(state, "seed7b", &cfg, 7, ST_F32, 0, NULL);
    char *c = s_write(state, "seed8", &cfg, 8, ST_F32, 0, NULL);
    assert_true(s_files_equal(a, b, "model.safetensors"));
    assert_true(s_files_equal(a, b, "config.json"));
    assert_false(s_files_equal(a, c, "model.safetensors"));
    assert_true(s_files_equal(a, c, "config.json"));

    /* every tensor differs between seeds, and tensors differ from each other */
    static s_expect_t ex[S_MAX_EXPECT];
    size_t n = s_mixtral_expected(&cfg, ex, S_MAX_EXPECT);
    safetensors_t *sa = s_open(a), *sc = s_open(c);
    for (size_t i = 0; i < n; i++)
        assert_memory_not_equal(s_get(sa, &ex[i]), s_get(sc, &ex[i]),
                                s_count(&ex[i]) * sizeof(float));
    /* expert 0 and expert 1 of layer 0 are not copies */
    assert_memory_not_equal(s_get(sa, &ex[10]), s_get(sa, &ex[13]),
                            s_count(&ex[10]) * sizeof(float));
    safetensors_destroy(&sa);
    safetensors_destroy(&sc);

    /* sharded with the same seed: same values (checked in test_sharded) and
     * same bytes again when rewritten */
    synth_stats_t stats;
    char *s1 = s_write(state, "sh1", &cfg, 7, ST_F16, 50000, &stats);
    char *s2 = s_write(state, "sh2", &cfg, 7, ST_F16, 50000, NULL);
    assert_true(stats.n_files > 1);
    s_expect_same_files(s1, s2, stats.n_files);
    free(s1);
    free(s2);
    free(a);
    free(b);
    free(c);
}

/* Mean and standard deviation of each kind of tensor (synth.h). */
static void test_distributions(void **state)
{
    config_t cfg;
    err_t err = {0};
    assert_int_equal(synth_preset(&cfg, "mixtral", "small", &err), 0);
    char *dir = s_write(state, "small", &cfg, 3, ST_F32, 0, NULL);
    safetensors_t *st = s_open(dir);
    static const struct {
        const char *name;
        int64_t rows, cols;
        double mean, std;
    } cases[] = {
        {"model.embed_tokens.weight", 2048, 256, 0.0, 1.0},
        {"lm_head.weight", 2048, 256, 0.0, 0.0625},
        {"model.layers.1.self_attn.q_proj.weight", 256, 256, 0.0, 0.0625},
        {"model.layers.1.self_attn.o_proj.weight", 256, 256, 0.0, 0.0625},
        {"model.layers.2.block_sparse_moe.experts.3.w1.weight", 512, 256, 0.0,
         0.0625},
        {"model.layers.2.block_sparse_moe.experts.3.w2.weight", 256, 512, 0.0,
         0.044194173824159216},
        {"model.layers.0.block_sparse_moe.gate.weight", 8, 256, 0.0, 0.125},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int64_t shape[] = {cases[i].rows, cases[i].cols};
        const float *x = safetensors_f32(st, cases[i].name, -1, 2, shape, &err);
        assert_non_null(x);
        size_t n = (size_t)(shape[0] * shape[1]);
        double s = 0, s2 = 0;
        for (size_t j = 0; j < n; j++) {
            s += x[j];
            s2 += (double)x[j] * x[j];
        }
        double mean = s / (double)n, sd = sqrt(s2 / (double)n - mean * mean);
        if (fabs(mean - cases[i].mean) > 5 * cases[i].std / sqrt((double)n) ||
            fabs(sd / cases[i].std - 1) > 0.05)
            fail_msg("%s: mean %g sd %g, want %g, %g", cases[i].name, mean, sd,
                     cases[i].mean, cases[i].std);
    }
    /* norms: 1 + N(0, 0.1), over all of them */
    double s = 0, s2 = 0;
    size_t n = 0;
    for (int l = 0; l < cfg.n_layers; l++)
        for (int k = 0; k < 2; k++) {
            char name[96];
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l,
                     k ? "post_attention_layernorm" : "input_layernorm");
            const int64_t shape[] = {256};
            const float *x = safetensors_f32(st, name, -1, 1, shape, &err);
            assert_non_null(x);
            for (int j = 0; j < 256; j++, n++) {
                s += x[j];
                s2 += (double)x[j] * x[j];
            }
        }
    double mean = s / (double)n, sd = sqrt(s2 / (double)n - mean * mean);
    assert_true(fabs(mean - 1.0) < 0.02);
    assert_true(fabs(sd - 0.1) < 0.01);
    safetensors_destroy(&st);
    free(dir);
}

/* ---- a one-token forward pass -------------------------------------------- */

static void s_rmsnorm(double *y, const double *x, const float *w, int n,
                      double eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++)
        y[i] = x[i] * r * w[i];
}

/* y = W x, W (rows, cols) */
static void s_matvec(double *y, const float *w, const double *x, int rows,
                     int cols)
{
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (int c = 0; c < cols; c++)
            s += (double)w[(size_t)r * cols + c] * x[c];
        y[r] = s;
    }
}

/* The float32 weight named by fmt, of shape (rows, cols), or (rows) when
 * cols is 0. */
static const float *s_w(safetensors_t *st, int64_t rows, int64_t cols,
                        const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static const float *s_w(safetensors_t *st, int64_t rows, int64_t cols,
                        const char *fmt, ...)
{
    char name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    err_t err = {0};
    const int64_t shape[] = {rows, cols};
    const float *x = safetensors_f32(st, name, -1, cols ? 2 : 1, shape, &err);
    if (!x)
        fail_msg("%s", err.msg);
    return x;
}

enum { S_H = 64, S_I = 128, S_E = 8, S_V = 512 }; /* tiny's dims, at most */

typedef struct s_route_stats {
    int used[S_E];          /* times each expert was chosen */
    double min_margin;      /* 2nd minus 3rd routing probability, smallest */
} s_route_stats_t;

/* Attention of one token at position 0: RoPE is the identity and softmax
 * over the single key is 1, so each query head returns its KV head's v.
 * x += o_proj(v) */
static void s_attention(safetensors_t *st, const config_t *c, int l, double *x)
{
    const int H = c->hidden_size, hd = c->head_dim;
    const int Q = c->n_heads * hd, KV = c->n_kv_heads * hd;
    const int group = c->n_heads / c->n_kv_heads;
    double u[S_H], v[S_H], att[S_H], o[S_H];
    s_rmsnorm(u, x, s_w(st, H, 0, "model.layers.%d.input_layernorm.weight", l),
              H, c->rms_norm_eps);
    s_matvec(v, s_w(st, KV, H, "model.layers.%d.self_attn.v_proj.weight", l), u,
             KV, H);
    for (int h = 0; h < c->n_heads; h++)
        for (int d = 0; d < hd; d++)
            att[h * hd + d] = v[(h / group) * hd + d];
    s_matvec(o, s_w(st, H, Q, "model.layers.%d.self_attn.o_proj.weight", l),
             att, H, Q);
    for (int i = 0; i < H; i++)
        x[i] += o[i];
}

/* The Mixtral sparse MoE block: softmax router, top-2 renormalised, SwiGLU
 * experts. x += sum_k w_k * expert_k(norm(x)) */
static void s_moe(safetensors_t *st, const config_t *c, int l, double *x,
                  s_route_stats_t *rs)
{
    const int H = c->hidden_size, I = c->intermediate_size, E = c->n_experts;
    double u[S_H], g[S_E], a[S_I], b[S_I], o[S_H];
    s_rmsnorm(u, x,
              s_w(st, H, 0, "model.layers.%d.post_attention_layernorm.weight",
                  l),
              H, c->rms_norm_eps);
    s_matvec(g,
             s_w(st, E, H, "model.layers.%d.block_sparse_moe.gate.weight", l),
             u, E, H);
    int e1 = 0, e2 = -1;
    for (int e = 1; e < E; e++)
        if (g[e] > g[e1])
            e1 = e;
    for (int e = 0; e < E; e++)
        if (e != e1 && (e2 < 0 || g[e] > g[e2]))
            e2 = e;
    double third = -INFINITY, z = 0;
    for (int e = 0; e < E; e++) {
        z += exp(g[e] - g[e1]);
        if (e != e1 && e != e2 && g[e] > third)
            third = g[e];
    }
    double margin = (exp(g[e2] - g[e1]) - exp(third - g[e1])) / z;
    if (margin < rs->min_margin)
        rs->min_margin = margin;
    rs->used[e1]++;
    rs->used[e2]++;
    const double w1 = 1.0 / (1.0 + exp(g[e2] - g[e1]));
    const char *fmt = "model.layers.%d.block_sparse_moe.experts.%d.%s.weight";
    for (int k = 0; k < 2; k++) {
        int e = k ? e2 : e1;
        s_matvec(a, s_w(st, I, H, fmt, l, e, "w1"), u, I, H);
        s_matvec(b, s_w(st, I, H, fmt, l, e, "w3"), u, I, H);
        for (int i = 0; i < I; i++)
            a[i] = a[i] / (1.0 + exp(-a[i])) * b[i]; /* silu(gate) * up */
        s_matvec(o, s_w(st, H, I, fmt, l, e, "w2"), a, H, I);
        for (int i = 0; i < H; i++)
            x[i] += (k ? 1.0 - w1 : w1) * o[i];
    }
}

/* The tiny model on each single token at position 0: logits are finite,
 * spread out and differ between tokens; routing is decisive and uses every
 * expert. */
static void test_forward_not_degenerate(void **state)
{
    config_t c = s_tiny();
    char *dir = s_write(state, "fwd", &c, 1, ST_F32, 0, NULL);
    safetensors_t *st = s_open(dir);
    const int H = c.hidden_size, V = c.vocab_size;
    assert_true(H <= S_H && c.intermediate_size <= S_I && c.n_experts <= S_E &&
                V <= S_V && c.n_heads * c.head_dim <= S_H);
    s_route_stats_t rs = {.min_margin = INFINITY};
    int argmax_seen[S_V] = {0}, n_distinct = 0;
    double sum_sd = 0;
    const float *emb = s_w(st, V, H, "model.embed_tokens.weight");
    const float *norm = s_w(st, H, 0, "model.norm.weight");
    const float *head = s_w(st, V, H, "lm_head.weight");
    for (int tok = 0; tok < V; tok++) {
        double x[S_H], u[S_H], logits[S_V];
        for (int i = 0; i < H; i++)
            x[i] = emb[(size_t)tok * H + i];
        for (int l = 0; l < c.n_layers; l++) {
            s_attention(st, &c, l, x);
            s_moe(st, &c, l, x, &rs);
        }
        s_rmsnorm(u, x, norm, H, c.rms_norm_eps);
        s_matvec(logits, head, u, V, H);
        double s = 0, s2 = 0;
        int best = 0;
        for (int i = 0; i < V; i++) {
            assert_true(isfinite(logits[i]));
            s += logits[i];
            s2 += logits[i] * logits[i];
            if (logits[i] > logits[best])
                best = i;
        }
        sum_sd += sqrt(s2 / V - (s / V) * (s / V));
        if (!argmax_seen[best]++)
            n_distinct++;
    }
    double mean_sd = sum_sd / V;
    print_message("tiny, one token: logit sd %.3f, %d distinct greedy tokens, "
                  "min routing margin %.2g\n", mean_sd, n_distinct,
                  rs.min_margin);
    if (mean_sd < 0.5 || mean_sd > 10)
        fail_msg("mean logit standard deviation %g", mean_sd);
    if (n_distinct < V / 8)
        fail_msg("only %d distinct greedy tokens over %d inputs", n_distinct,
                 V);
    for (int e = 0; e < c.n_experts; e++)
        if (rs.used[e] < V / 16)
            fail_msg("expert %d chosen %d times: routing collapsed", e,
                     rs.used[e]);
    assert_true(rs.min_margin > 0);
    safetensors_destroy(&st);
    free(dir);
}

/* ---- failures ------------------------------------------------------------ */

static void test_write_errors(void **state)
{
    config_t cfg = s_tiny();
    synth_opts_t opts = {.seed = 1};
    err_t err = {0};

    /* a path under a regular file */
    char *file = s_join(*state, "plainfile");
    assert_int_equal(testutil_write_file(file, "x", 1), 0);
    char *under = s_join(file, "model");
    errno = 0;
    assert_int_equal(synth_write(under, &cfg, &opts, NULL, &err), -1);
    assert_int_equal(errno, ENOTDIR);
    assert_non_null(strstr(err.msg, "plainfile"));
    errno = 0;
    assert_int_equal(synth_write(file, &cfg, &opts, NULL, &err), -1);
    assert_int_equal(errno, ENOTDIR);

    /* an invalid config: nothing is written, not even the directory */
    char *dir = s_join(*state, "invalid");
    config_t bad = cfg;
    bad.n_kv_heads = 3;
    errno = 0;
    assert_int_equal(synth_write(dir, &bad, &opts, NULL, &err), -1);
    assert_int_equal(errno, EINVAL);
    assert_non_null(strstr(err.msg, "num_key_value_heads"));
    assert_int_equal(access(dir, F_OK), -1);
    bad = cfg;
    bad.arch = (config_arch_t)99;
    errno = 0;
    assert_int_equal(synth_write(dir, &bad, &opts, NULL, &err), -1);
    assert_int_equal(errno, EINVAL);
    synth_opts_t bad_dtype = {.dtype = (st_dtype_t)9};
    errno = 0;
    assert_int_equal(synth_write(dir, &cfg, &bad_dtype, NULL, &err), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(access(dir, F_OK), -1);

    /* nested directories are created */
    char *nested = s_join(*state, "a/b/c");
    assert_int_equal(synth_write(nested, &cfg, &opts, NULL, &err), 0);
    assert_true(s_exists(nested, "config.json"));
    /* with the preset's ids: BOS 1, one EOS 2 (a number, not a list) */
    char *gpath = s_join(nested, "generation_config.json");
    json_error_t jerr;
    json_t *gen = json_load_file(gpath, 0, &jerr);
    assert_non_null(gen);
    assert_int_equal(json_integer_value(json_object_get(gen, "bos_token_id")), 1);
    assert_true(json_is_integer(json_object_get(gen, "eos_token_id")));
    assert_int_equal(json_integer_value(json_object_get(gen, "eos_token_id")), 2);
    json_decref(gen);
    free(gpath);
    free(nested);
    free(dir);
    free(under);
    free(file);
}

static void test_tied_embeddings(void **state)
{
    config_t cfg = s_tiny();
    cfg.tie_word_embeddings = true;
    cfg.n_eos = 2;
    cfg.eos_token_ids[1] = 7;
    cfg.bos_token_id = -1;
    cfg.sliding_window = 64;
    char *dir = s_write(state, "tied", &cfg, 1, ST_F32, 0, NULL);
    s_check_layout(dir, &cfg, ST_F32); /* also: config round-trips exactly */
    /* generation_config.json: no BOS, both EOS ids */
    char *gpath = s_join(dir, "generation_config.json");
    json_error_t jerr;
    json_t *gen = json_load_file(gpath, 0, &jerr);
    assert_non_null(gen);
    assert_null(json_object_get(gen, "bos_token_id"));
    const json_t *eos = json_object_get(gen, "eos_token_id");
    assert_int_equal(json_array_size(eos), 2);
    assert_int_equal(json_integer_value(json_array_get(eos, 0)), 2);
    assert_int_equal(json_integer_value(json_array_get(eos, 1)), 7);
    json_decref(gen);
    free(gpath);
    safetensors_t *st = s_open(dir);
    errno = 0;
    assert_null(safetensors_find(st, "lm_head.weight", NULL));
    assert_int_equal(errno, ENOENT);
    safetensors_destroy(&st);
    free(dir);
}

/* One synth_write of the tiny model into dir (a testutil_attempt_fn). */
typedef struct synth_try {
    const char *dir;
    const config_t *cfg;
} synth_try_t;

static int s_try_write(void *ctx, err_t *err)
{
    const synth_try_t *t = ctx;
    synth_opts_t opts = {.seed = 1, .dtype = ST_BF16, .shard_bytes = 100000};
    return synth_write(t->dir, t->cfg, &opts, NULL, err);
}

/* Every allocation of synth_write failing in turn: ENOMEM, no leak. */
static void test_write_oom(void **state)
{
    config_t cfg = s_tiny();
    char *dir = s_join(*state, "oom");
    synth_try_t t = {dir, &cfg};
    assert_true(testutil_oom_sweep(500, s_try_write, &t) > 5);
    s_check_layout(dir, &cfg, ST_BF16);
    free(dir);
}

/* ---- the tool ------------------------------------------------------------ */

static void test_mkmodel_tool(void **state)
{
    char tool[1024];
    testutil_program("moe-mkmodel", tool, sizeof tool);
    char cmd[4096];
    char *out = NULL;
    snprintf(cmd, sizeof cmd, "%s --help", tool);
    assert_int_equal(testutil_run(cmd, &out), 0);
    assert_non_null(strstr(out, "--shard-bytes"));
    free(out);

    char *dir = s_join(*state, "tool");
    snprintf(cmd, sizeof cmd,
             "%s --arch mixtral --preset tiny --seed 11 --out '%s' --dtype f16 "
             "--shard-bytes 64K 2>&1", tool, dir);
    assert_int_equal(testutil_run(cmd, &out), 0);
    free(out);
    config_t cfg = s_tiny();
    s_check_layout(dir, &cfg, ST_F16);
    assert_true(s_exists(dir, "model.safetensors.index.json"));
    /* the tool and the library agree byte for byte */
    synth_stats_t stats;
    char *lib = s_write(state, "lib", &cfg, 11, ST_F16, 64 << 10, &stats);
    assert_true(stats.n_files > 1);
    s_expect_same_files(dir, lib, stats.n_files);

    /* usage errors (2) write nothing; a runtime error is 1 */
    char *none = s_join(*state, "none");
    static const struct {
        const char *args;
        int status;
    } bad[] = {
        {"--preset huge --out", 2},
        {"--arch llama --preset tiny --out", 2},
        {"--preset tiny --seed 1 --dtype f32 --arch", 2},
        {"--seed 1 --out", 2},
        {"--preset tiny --dtype f64 --out", 2},
        {"--preset tiny --seed -1 --out", 2},
        {"--preset tiny --seed abc --out", 2},
        {"--preset tiny --shard-bytes 5Q --out", 2},
        {"--preset tiny --bogus --out", 2},
        {"--preset tiny extra --out", 2},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(cmd, sizeof cmd, "%s %s '%s' 2>&1", tool, bad[i].args, none);
        int status = testutil_run(cmd, &out);
        if (status != bad[i].status || !out || !strstr(out, "moe-mkmodel: ") ||
            strchr(out, '\n') != out + strlen(out) - 1)
            fail_msg("'%s': status %d, output '%s'", bad[i].args, status,
                     out ? out : "");
        free(out);
        assert_int_equal(access(none, F_OK), -1);
    }
    snprintf(cmd, sizeof cmd, "%s --preset tiny --out /proc/moe-cannot-write "
             "2>&1", tool);
    int status = testutil_run(cmd, &out);
    if (status != 1 || !out || !strstr(out, "/proc/moe-cannot-write"))
        fail_msg("unwritable: status %d, output '%s'", status, out ? out : "");
    free(out);
    free(none);
    free(lib);
    free(dir);
}

/* ---- every family --------------------------------------------------------- */

/* The families, in model/family.c's list (the one list there is). */
#define S_N_FAMILIES ((int)family_count())
#define S_FAMILY(f) (family_at((size_t)(f))->model_type)

static config_t s_preset(const char *arch, const char *preset)
{
    config_t cfg;
    err_t err = {0};
    if (synth_preset(&cfg, arch, preset, &err))
        fail_msg("synth_preset(%s, %s): %s", arch, preset, err.msg);
    return cfg;
}

/* Every field of config_t, as config_parse_all() fills it. */
static void s_expect_config_all(const config_t *got, const config_t *want)
{
    s_expect_config(got, want);
#define SAME_INT(f)                                                           \
    do {                                                                      \
        if ((long long)got->f != (long long)want->f)                          \
            fail_msg("%s: %s = %lld, the preset has %lld", want->model_type,  \
                     #f, (long long)got->f, (long long)want->f);              \
    } while (0)
#define SAME_REAL(f)                                                          \
    do {                                                                      \
        if (got->f != want->f)                                                \
            fail_msg("%s: %s = %g, the preset has %g", want->model_type, #f,  \
                     (double)got->f, (double)want->f);                        \
    } while (0)
    SAME_INT(dense_intermediate_size);
    SAME_REAL(rope_factor);
    SAME_INT(rope_orig_max_pos);
    SAME_REAL(rope_beta_fast);
    SAME_REAL(rope_beta_slow);
    SAME_REAL(rope_mscale);
    SAME_REAL(rope_mscale_all_dim);
    SAME_REAL(rope_attention_factor);
    SAME_INT(rope_truncate);
    SAME_INT(rope_interleave);
    SAME_INT(qkv_bias);
    SAME_INT(o_bias);
    SAME_INT(qk_norm);
    SAME_INT(attn_sinks);
    SAME_INT(q_lora_rank);
    SAME_INT(kv_lora_rank);
    SAME_INT(qk_nope_head_dim);
    SAME_INT(qk_rope_head_dim);
    SAME_INT(v_head_dim);
    SAME_INT(scoring);
    SAME_INT(topk_method);
    SAME_INT(norm_topk_prob);
    SAME_INT(n_group);
    SAME_INT(topk_group);
    SAME_REAL(routed_scaling_factor);
    SAME_INT(router_bias);
    SAME_INT(expert_act);
    SAME_REAL(swiglu_limit);
    SAME_INT(shared);
    SAME_INT(shared_intermediate_size);
    SAME_INT(n_shared_experts);
    SAME_INT(first_k_dense);
    for (int l = 0; l < want->n_layers; l++)
        SAME_INT(layer_flags[l]);
#undef SAME_INT
#undef SAME_REAL
}

/* Whether the model of c has weight w in layer l: the rules of weights.h,
 * spelled out here independently of synth.c. */
static bool s_has_weight(const config_t *c, arch_weight_t w, int l)
{
    const bool moe = config_layer_is_moe(c, l);
    const bool mla = config_is_mla(c);
    if (w >= ARCH_W_EXPERT_GATE) /* every expert weight, biases included */
        return moe;
    switch (w) {
    case ARCH_W_EMBED: case ARCH_W_FINAL_NORM: case ARCH_W_ATTN_NORM:
    case ARCH_W_FFN_NORM: case ARCH_W_O:
        return true;
    case ARCH_W_LM_HEAD: return !c->tie_word_embeddings;
    case ARCH_W_Q: return !mla || c->q_lora_rank == 0;
    case ARCH_W_K: case ARCH_W_V: return !mla;
    case ARCH_W_Q_A: case ARCH_W_Q_A_NORM: case ARCH_W_Q_B:
        return mla && c->q_lora_rank > 0;
    case ARCH_W_KV_A: case ARCH_W_KV_A_NORM: case ARCH_W_KV_B: return mla;
    case ARCH_W_Q_BIAS: case ARCH_W_K_BIAS: case ARCH_W_V_BIAS:
        return c->qkv_bias;
    case ARCH_W_O_BIAS: return c->o_bias;
    case ARCH_W_Q_NORM: case ARCH_W_K_NORM:
        return c->qk_norm != CONFIG_QK_NORM_NONE;
    case ARCH_W_SINKS: return c->attn_sinks;
    case ARCH_W_ROUTER: return moe;
    case ARCH_W_ROUTER_BIAS: return moe && c->router_bias;
    case ARCH_W_SCORE_BIAS: return moe && c->topk_method == CONFIG_TOPK_NOAUX_TC;
    case ARCH_W_SHARED_GATE: case ARCH_W_SHARED_UP: case ARCH_W_SHARED_DOWN:
        return moe && c->shared != CONFIG_SHARED_NONE;
    case ARCH_W_SHARED_EXPERT_GATE: return moe && c->shared == CONFIG_SHARED_GATED;
    case ARCH_W_DENSE_GATE: case ARCH_W_DENSE_UP: case ARCH_W_DENSE_DOWN:
        return !moe;
    default:
        return false;
    }
}

/* Checks one tensor arch names: present with the shape and dtype arch gives
 * (a stacked expert tensor: [E, ...]), or absent. Returns 1 when it is a
 * tensor to count (the first expert of a stacked tensor, or any other). */
static int s_check_role(safetensors_t *st, const config_t *c, arch_weight_t w,
                        int l, int e, st_dtype_t dtype)
{
    arch_tensor_t t;
    err_t err = {0};
    if (arch_tensor(c, w, l, e, &t, &err))
        fail_msg("%s: arch_tensor(%s, layer %d, expert %d): %s",
                 c->model_type, arch_weight_name(w), l, e, err.msg);
    const st_tensor_t *got = safetensors_find(st, t.name, NULL);
    if (!s_has_weight(c, w, l)) {
        if (got)
            fail_msg("%s: %s is in the checkpoint, the config has no %s",
                     c->model_type, t.name, arch_weight_name(w));
        return 0;
    }
    if (!got)
        fail_msg("%s: %s (%s, layer %d, expert %d) is missing", c->model_type,
                 t.name, arch_weight_name(w), l, e);
    int64_t shape[ARCH_MAX_DIMS + 1];
    int ndim = t.ndim;
    memcpy(shape, t.shape, sizeof t.shape);
    if (t.slice >= 0) {
        shape[0] = c->n_experts;
        memcpy(shape + 1, t.shape, (size_t)t.ndim * sizeof *t.shape);
        ndim++;
    }
    assert_int_equal(got->dtype, dtype);
    if (got->ndim != ndim)
        fail_msg("%s: %s has %d dims, arch says %d", c->model_type, t.name,
                 got->ndim, ndim);
    size_t count = 1;
    for (int d = 0; d < ndim; d++) {
        if (got->shape[d] != shape[d])
            fail_msg("%s: %s dim %d is %lld, arch says %lld", c->model_type,
                     t.name, d, (long long)got->shape[d], (long long)shape[d]);
        count *= (size_t)shape[d];
    }
    assert_int_equal(got->nbytes, count * st_dtype_size(dtype));
    return t.slice <= 0;
}

/* Every tensor arch_tensor() names for c is there, with its shape and dtype,
 * those the config has not are not, and nothing else is (but gpt_oss's
 * experts.down_proj_bias, which arch has no role for). */
static void s_check_arch_layout(const char *dir, const config_t *c,
                                st_dtype_t dtype)
{
    safetensors_t *st = s_open(dir);
    size_t n = 0;
    for (int w = 0; w < ARCH_W_COUNT; w++) {
        if (!arch_has(c, (arch_weight_t)w))
            continue;
        const bool per_layer = w >= ARCH_W_ATTN_NORM;
        const bool per_expert = w >= ARCH_W_EXPERT_GATE;
        for (int l = 0; l < (per_layer ? c->n_layers : 1); l++)
            for (int e = 0; e < (per_expert ? c->n_experts : 1); e++)
                n += (size_t)s_check_role(st, c, (arch_weight_t)w, l, e,
                                          dtype);
    }
    if (config_experts_stacked(c))
        for (int l = 0; l < c->n_layers; l++) {
            char name[96];
            snprintf(name, sizeof name,
                     "model.layers.%d.mlp.experts.down_proj_bias", l);
            const st_tensor_t *t = safetensors_find(st, name, NULL);
            if (!t)
                fail_msg("gpt_oss: %s is missing", name);
            assert_int_equal(t->ndim, 2);
            assert_int_equal(t->shape[0], c->n_experts);
            assert_int_equal(t->shape[1], c->hidden_size);
            /* counted above if arch has learnt its name */
            bool named = false;
            for (int w = ARCH_W_EXPERT_GATE; w < ARCH_W_COUNT; w++) {
                arch_tensor_t at;
                named |= arch_has(c, (arch_weight_t)w) &&
                         arch_tensor(c, (arch_weight_t)w, l, 0, &at, NULL) == 0 &&
                         strcmp(at.name, name) == 0;
            }
            n += !named;
        }
    if (safetensors_count(st) != n)
        fail_msg("%s: the checkpoint has %zu tensors, arch names %zu",
                 c->model_type, safetensors_count(st), n);
    safetensors_destroy(&st);
}

static config_t s_parse_written(const char *dir)
{
    char *path = s_join(dir, "config.json");
    size_t len = 0;
    char *text = testutil_read_file(path, &len);
    assert_non_null(text);
    config_t got;
    err_t err = {0};
    if (config_parse_all(&got, text, len, path, &err))
        fail_msg("config_parse_all(%s): %s", path, err.msg);
    free(text);
    free(path);
    return got;
}

/* The tiny preset of each family: config.json reads back as the preset in
 * every field, and the checkpoint holds what arch names for it. */
static void test_family_layouts(void **state)
{
    for (int f = 0; f < S_N_FAMILIES; f++) {
        config_t cfg = s_preset(S_FAMILY(f), "tiny");
        synth_stats_t stats, plan;
        char name[64];
        snprintf(name, sizeof name, "layout-%s", S_FAMILY(f));
        char *dir = s_write(state, name, &cfg, 2, ST_F32, 0, &stats);
        synth_opts_t opts = {.seed = 2};
        assert_int_equal(synth_plan(&cfg, &opts, &plan, NULL), 0);
        assert_int_equal(plan.n_tensors, stats.n_tensors);
        assert_int_equal(plan.data_bytes, stats.data_bytes);
        config_t got = s_parse_written(dir);
        s_expect_config_all(&got, &cfg);
        s_check_arch_layout(dir, &cfg, ST_F32);
        free(dir);
    }
    /* a bf16 sharded gpt_oss too: stacked experts shard as whole tensors */
    config_t cfg = s_preset("gpt_oss", "tiny");
    synth_stats_t stats;
    char *dir = s_write(state, "gpt_oss-bf16", &cfg, 2, ST_BF16, 100000,
                        &stats);
    assert_true(stats.n_files > 1);
    s_check_arch_layout(dir, &cfg, ST_BF16);
    free(dir);
}

/* Every preset of every family plans; the medium ones hold about the
 * Mixtral medium's bytes (within 25%). Prints the medium sizes. */
static void test_family_sizes(void **state)
{
    (void)state;
    synth_opts_t opts = {.seed = 1};
    synth_stats_t mixtral;
    config_t m = s_preset("mixtral", "medium");
    assert_int_equal(synth_plan(&m, &opts, &mixtral, NULL), 0);
    print_message("%-15s %6s %6s %7s %5s %9s %8s %10s\n", "medium", "hidden",
                  "layers", "experts", "top-k", "exp.inter", "tensors",
                  "f32 bytes");
    static const char *const presets[] = {"tiny", "small", "medium"};
    for (int f = 0; f < S_N_FAMILIES; f++)
        for (int p = 0; p < 3; p++) {
            config_t c = s_preset(S_FAMILY(f), presets[p]);
            synth_stats_t st;
            err_t err = {0};
            if (synth_plan(&c, &opts, &st, &err))
                fail_msg("%s %s: %s", S_FAMILY(f), presets[p], err.msg);
            if (p != 2)
                continue;
            double ratio = (double)st.data_bytes / (double)mixtral.data_bytes;
            print_message("%-15s %6d %6d %7d %5d %9d %8zu %10.3g (x%.2f)\n",
                          S_FAMILY(f), c.hidden_size, c.n_layers,
                          c.n_experts, c.n_experts_per_tok,
                          c.intermediate_size, st.n_tensors,
                          (double)st.data_bytes, ratio);
            if (ratio < 0.75 || ratio > 1.25)
                fail_msg("%s medium: %llu bytes, %.2f times mixtral's",
                         S_FAMILY(f), (unsigned long long)st.data_bytes,
                         ratio);
        }
}

/* Same seed, same bytes; another seed, other weights, for every family. */
static void test_family_determinism(void **state)
{
    for (int f = 0; f < S_N_FAMILIES; f++) {
        config_t cfg = s_preset(S_FAMILY(f), "tiny");
        char n1[64], n2[64], n3[64];
        snprintf(n1, sizeof n1, "det1-%s", S_FAMILY(f));
        snprintf(n2, sizeof n2, "det2-%s", S_FAMILY(f));
        snprintf(n3, sizeof n3, "det3-%s", S_FAMILY(f));
        char *a = s_write(state, n1, &cfg, 9, ST_F32, 0, NULL);
        char *b = s_write(state, n2, &cfg, 9, ST_F32, 0, NULL);
        char *c = s_write(state, n3, &cfg, 10, ST_F32, 0, NULL);
        assert_true(s_files_equal(a, b, "model.safetensors"));
        assert_true(s_files_equal(a, b, "config.json"));
        assert_true(s_files_equal(a, b, "generation_config.json"));
        assert_false(s_files_equal(a, c, "model.safetensors"));
        assert_true(s_files_equal(a, c, "config.json"));
        free(a);
        free(b);
        free(c);
    }
}

/* Runs moe-run on dir; returns its exit status, the last stdout line in
 * *tokens and stderr in *errtext (malloc'd). */
static int s_moe_run(const char *dir, const char *logits, char **tokens,
                     char **errtext)
{
    const char *bin = testutil_env("MOE_BIN", "build/bin");
    char cmd[4096], errpath[1100];
    snprintf(errpath, sizeof errpath, "%s.stderr", logits);
    snprintf(cmd, sizeof cmd, "'%s/moe-run' --model '%s' --prompt-ids "
             "1,60,61,62,300,301,40,41,42,43,44,45,46,47 --max-tokens 12 "
             "--ignore-eos --threads 1 --dump-logits '%s' 2>'%s'", bin, dir,
             logits, errpath);
    char *out = NULL;
    int status = testutil_run(cmd, &out);
    *errtext = testutil_read_file(errpath, NULL);
    *tokens = out;
    if (out) {
        size_t n = strlen(out);
        while (n && out[n - 1] == '\n')
            out[--n] = '\0';
        char *nl = strrchr(out, '\n');
        if (nl)
            memmove(out, nl + 1, strlen(nl + 1) + 1);
    }
    return status;
}

/* The tiny model of each family the engine runs loads with weights_load and
 * runs in moe-run (12 greedy tokens in the vocabulary, finite logits, not
 * all equal); one it does not run yet is refused with a message naming the
 * architecture. */
static void test_family_runs(void **state)
{
    const char *bin = testutil_env("MOE_BIN", "build/bin");
    char tool[1024];
    snprintf(tool, sizeof tool, "%s/moe-run", bin);
    const bool have_run = access(tool, X_OK) == 0;
    if (!have_run)
        print_message("moe-run not built: weights_load only\n");
    for (int f = 0; f < S_N_FAMILIES; f++) {
        config_t cfg = s_preset(S_FAMILY(f), "tiny");
        /* a folder name without the family's, which messages must name */
        char name[64];
        snprintf(name, sizeof name, "run-%d", f);
        char *dir = s_write(state, name, &cfg, 4, ST_F32, 0, NULL);
        err_t err = {0};
        errno = 0;
        weights_t *w = weights_load_all(dir, &err);
        const bool runs = config_arch_supported(cfg.arch);
        if (!runs) {
            /* not yet: the refusal names the architecture */
            print_message("%s: not run yet: %s\n", S_FAMILY(f), err.msg);
            assert_null(w);
            assert_true(errno == ENOTSUP || errno == EINVAL);
            assert_non_null(strstr(err.msg, S_FAMILY(f)));
        } else {
            if (!w)
                fail_msg("%s: weights_load: %s", S_FAMILY(f), err.msg);
            assert_int_equal(w->cfg.arch, cfg.arch);
            for (int l = 0; l < cfg.n_layers; l++)
                for (int e = 0; config_layer_is_moe(&cfg, l) &&
                                e < cfg.n_experts; e++)
                    assert_true(weights_has_expert(w, l, e));
            weights_destroy(&w);
        }
        if (have_run) {
            char *logits = s_join(dir, "logits.f32");
            char *tokens = NULL, *errtext = NULL;
            int status = s_moe_run(dir, logits, &tokens, &errtext);
            if (!runs) {
                assert_int_not_equal(status, 0);
                assert_non_null(errtext);
                assert_non_null(strstr(errtext, S_FAMILY(f)));
            } else {
                if (status != 0)
                    fail_msg("%s: moe-run exit %d: %s", S_FAMILY(f), status,
                             errtext ? errtext : "");
                int n = 0;
                for (char *p = tokens; p && *p;) {
                    char *end;
                    long id = strtol(p, &end, 10);
                    assert_true(end != p && id >= 0 && id < cfg.vocab_size);
                    n++;
                    p = *end == ',' ? end + 1 : end;
                }
                assert_int_equal(n, 12);
                size_t bytes = 0;
                float *x = (float *)testutil_read_file(logits, &bytes);
                assert_non_null(x);
                assert_int_equal(bytes, 14 * (size_t)cfg.vocab_size * 4);
                double lo = INFINITY, hi = -INFINITY;
                for (size_t i = 0; i < bytes / 4; i++) {
                    if (!isfinite(x[i]))
                        fail_msg("%s: logit %zu is %g", S_FAMILY(f), i,
                                 (double)x[i]);
                    lo = fmin(lo, x[i]);
                    hi = fmax(hi, x[i]);
                }
                assert_true(hi - lo > 1);
                print_message("%s: greedy %s, logits in [%.2f, %.2f]\n",
                              S_FAMILY(f), tokens, lo, hi);
                free(x);
            }
            free(tokens);
            free(errtext);
            free(logits);
        }
        free(dir);
    }
}

/* Mean and standard deviation of n floats. */
static void s_moments(const float *x, size_t n, double *mean, double *sd)
{
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) {
        s += x[i];
        s2 += (double)x[i] * x[i];
    }
    *mean = s / (double)n;
    *sd = sqrt(fmax(0, s2 / (double)n - *mean * *mean));
}

/* The whole tensor name (of any shape), as float32. */
static const float *s_tensor(safetensors_t *st, const char *name, size_t *n)
{
    err_t err = {0};
    const st_tensor_t *t = safetensors_find(st, name, &err);
    if (!t)
        fail_msg("%s", err.msg);
    const float *x = safetensors_f32(st, name, -1, t->ndim, t->shape, &err);
    if (!x)
        fail_msg("%s", err.msg);
    *n = 1;
    for (int d = 0; d < t->ndim; d++)
        *n *= (size_t)t->shape[d];
    return x;
}

/* The distributions the new families add (synth.h): biases N(0, 0.05),
 * sinks N(0, 0.5), gpt_oss gate_up N(0, 3/sqrt(hidden)), deepseek_v3
 * correction bias uniform on [0, 0.12]. */
static void test_family_distributions(void **state)
{
    config_t g = s_preset("gpt_oss", "small");
    char *dir = s_write(state, "dist-gpt_oss", &g, 5, ST_F32, 0, NULL);
    safetensors_t *st = s_open(dir);
    static const struct {
        const char *fmt;
        double std, tol;
    } cases[] = {
        {"model.layers.%d.self_attn.q_proj.bias", 0.05, 0.1},
        {"model.layers.%d.self_attn.o_proj.bias", 0.05, 0.1},
        {"model.layers.%d.mlp.router.bias", 0.05, 0.25},
        {"model.layers.%d.mlp.experts.gate_up_proj_bias", 0.05, 0.05},
        {"model.layers.%d.mlp.experts.down_proj_bias", 0.05, 0.05},
        {"model.layers.%d.self_attn.sinks", 0.5, 0.3},
        {"model.layers.%d.mlp.experts.gate_up_proj", 3.0 / 16, 0.02},
        {"model.layers.%d.mlp.experts.down_proj", 1.0 / sqrt(128), 0.02},
        {"model.layers.%d.mlp.router.weight", 2.0 / 16, 0.05},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* pooled over the layers */
        double s = 0, s2 = 0;
        size_t total = 0;
        for (int l = 0; l < g.n_layers; l++) {
            char name[128];
            snprintf(name, sizeof name, cases[i].fmt, l);
            size_t n;
            const float *x = s_tensor(st, name, &n);
            for (size_t j = 0; j < n; j++) {
                s += x[j];
                s2 += (double)x[j] * x[j];
            }
            total += n;
        }
        double mean = s / (double)total;
        double sd = sqrt(s2 / (double)total - mean * mean);
        if (fabs(mean) > 5 * cases[i].std / sqrt((double)total) + 1e-9 ||
            fabs(sd / cases[i].std - 1) > cases[i].tol)
            fail_msg("%s: mean %g sd %g over %zu, want 0, %g", cases[i].fmt,
                     mean, sd, total, cases[i].std);
    }
    safetensors_destroy(&st);
    free(dir);

    config_t d = s_preset("deepseek_v3", "small");
    dir = s_write(state, "dist-deepseek_v3", &d, 5, ST_F32, 0, NULL);
    st = s_open(dir);
    float lo = INFINITY, hi = -INFINITY;
    double s = 0;
    size_t total = 0;
    for (int l = d.first_k_dense; l < d.n_layers; l++) {
        char name[128];
        snprintf(name, sizeof name, "model.layers.%d.mlp.gate."
                 "e_score_correction_bias", l);
        size_t n;
        const float *x = s_tensor(st, name, &n);
        for (size_t j = 0; j < n; j++) {
            lo = fminf(lo, x[j]);
            hi = fmaxf(hi, x[j]);
            s += x[j];
        }
        total += n;
    }
    /* 96 draws of U[0, 0.12]: mean 0.06 with sd 0.0035 */
    assert_true(lo >= 0 && hi <= 0.12f);
    assert_true(lo < 0.01 && hi > 0.11);
    assert_true(fabs(s / (double)total - 0.06) < 0.015);
    /* MLA and norms: q_a_layernorm 1 + N(0, 0.1), kv_b N(0, 1/sqrt(64)) */
    size_t n;
    double mean, sd;
    const float *x = s_tensor(st, "model.layers.2.self_attn.kv_b_proj.weight",
                              &n);
    s_moments(x, n, &mean, &sd);
    assert_true(fabs(sd / (1.0 / 8) - 1) < 0.05);
    x = s_tensor(st, "model.layers.1.self_attn.q_a_layernorm.weight", &n);
    s_moments(x, n, &mean, &sd);
    assert_true(fabs(mean - 1) < 0.05 && fabs(sd - 0.1) < 0.03);
    safetensors_destroy(&st);
    free(dir);
}

/* moe-mkmodel refuses to write into a folder that holds a model (exit 1,
 * naming --force, nothing changed); with --force it first removes the
 * model's files, so no stale shard of the old one is left beside the new. */
static void test_mkmodel_force(void **state)
{
    char tool[1024], cmd[4096];
    testutil_program("moe-mkmodel", tool, sizeof tool);
    char *dir = s_join(*state, "force");
    snprintf(cmd, sizeof cmd, "%s --preset tiny --seed 1 --out '%s' --shard-bytes 64K "
             ">/dev/null 2>&1 && touch '%s/notes.txt'", tool, dir, dir);
    char *out = NULL;
    assert_int_equal(testutil_run(cmd, &out), 0);
    free(out);
    assert_true(s_exists(dir, "model-00001-of-00029.safetensors"));
    char *index = s_join(dir, "model.safetensors.index.json");
    size_t n_before = 0;
    char *before = testutil_read_file(index, &n_before);
    assert_non_null(before);

    snprintf(cmd, sizeof cmd, "%s --preset tiny --seed 2 --out '%s' 2>&1", tool, dir);
    int status = testutil_run(cmd, &out);
    if (status != 1 || !out || !strstr(out, "--force") || !strstr(out, "already holds"))
        fail_msg("into a model: status %d, output '%s'", status, out ? out : "");
    printf("  %s", out);
    free(out);
    size_t n_after = 0;
    char *after = testutil_read_file(index, &n_after);
    assert_non_null(after);
    assert_true(n_after == n_before && memcmp(before, after, n_before) == 0);
    assert_false(s_exists(dir, "model.safetensors"));

    snprintf(cmd, sizeof cmd, "%s --preset tiny --seed 2 --out '%s' --force 2>&1 && "
             "ls '%s'", tool, dir, dir);
    assert_int_equal(testutil_run(cmd, &out), 0);
    if (strstr(out, "model-0") || strstr(out, "index.json") || !strstr(out, "notes.txt"))
        fail_msg("after --force: '%s'", out);
    free(out);
    config_t cfg = s_tiny();
    s_check_layout(dir, &cfg, ST_F32);
    assert_true(s_exists(dir, "model.safetensors"));
    free(after);
    free(before);
    free(index);
    free(dir);
}

/* moe-mkmodel writes every family, with a tokenizer, byte for byte what the
 * library writes. */
static void test_family_tool(void **state)
{
    char tool[1024];
    testutil_program("moe-mkmodel", tool, sizeof tool);
    for (int f = 1; f < S_N_FAMILIES; f++) {
        char name[64], cmd[4096];
        snprintf(name, sizeof name, "tool-%s", S_FAMILY(f));
        char *dir = s_join(*state, name);
        snprintf(cmd, sizeof cmd, "%s --arch %s --preset tiny --seed 6 --out "
                 "'%s' 2>&1", tool, S_FAMILY(f), dir);
        char *out = NULL;
        if (testutil_run(cmd, &out) != 0)
            fail_msg("%s: %s", cmd, out ? out : "");
        free(out);
        assert_true(s_exists(dir, "tokenizer.json"));
        config_t cfg = s_preset(S_FAMILY(f), "tiny");
        snprintf(name, sizeof name, "lib-%s", S_FAMILY(f));
        char *lib = s_write(state, name, &cfg, 6, ST_F32, 0, NULL);
        s_expect_same_files(dir, lib, 1);
        assert_true(s_files_equal(dir, lib, "generation_config.json"));
        free(lib);
        free(dir);
    }
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, testutil_tmpdir_setup, testutil_tmpdir_teardown)
    const struct CMUnitTest tests[] = {
        T(test_presets),
        T(test_tiny_each_dtype),
        T(test_sharded),
        T(test_seeds),
        T(test_distributions),
        T(test_forward_not_degenerate),
        T(test_write_errors),
        T(test_tied_embeddings),
        T(test_write_oom),
        T(test_mkmodel_tool),
        T(test_mkmodel_force),
        T(test_family_layouts),
        T(test_family_sizes),
        T(test_family_determinism),
        T(test_family_runs),
        T(test_family_distributions),
        T(test_family_tool),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
