/* test_config: config_load() on the reference fixtures and config_parse() on
 * variants of the fixtures built with jansson: every family's fields, the
 * families parsed but not supported yet (ENOTSUP), deepseek's YaRN and
 * grouped-routing limits, values the math cannot
 * compute (named in the error), every required field missing or of the wrong
 * type, unsupported architectures and RoPE types, defaults, eos forms, range
 * checks, the model id, bad JSON, and out-of-memory.
 *
 * Fixtures come from $MOE_FIXTURES (default ../shared/fixtures).
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <sys/stat.h>
#include <jansson.h>

#include "core/mem.h"
#include "model/config.h"
#include "model/family.h"
#include "tests/testutil.h"

static const char *s_fixtures(void)
{
    return testutil_env("MOE_FIXTURES", "../shared/fixtures");
}

static char *s_fixture_dir(const char *name)
{
    size_t n = strlen(s_fixtures()) + strlen(name) + 2;
    char *p = malloc(n);
    assert_non_null(p);
    snprintf(p, n, "%s/%s", s_fixtures(), name);
    return p;
}

/* A fixture's config.json as a jansson object (caller decrefs). */
static json_t *s_fixture_json(const char *name)
{
    char *dir = s_fixture_dir(name);
    size_t n = strlen(dir) + 16;
    char *path = malloc(n);
    assert_non_null(path);
    snprintf(path, n, "%s/config.json", dir);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root)
        fail_msg("cannot read %s: %s", path, jerr.text);
    free(path);
    free(dir);
    return root;
}

/* The mixtral-A config.json as a jansson object (caller decrefs). */
static json_t *s_mixtral_json(void)
{
    return s_fixture_json("mixtral-A");
}

/* parse() of a JSON value as "variant.json"; returns its result, cfg and
 * err filled. */
static int s_parse_with(int (*parse)(config_t *, const char *, size_t, const char *,
                                     err_t *),
                        const json_t *root, config_t *cfg, err_t *err)
{
    char *text = json_dumps(root, 0);
    assert_non_null(text);
    err_clear(err);
    errno = 0;
    int rc = parse(cfg, text, strlen(text), "variant.json", err);
    free(text);
    return rc;
}

/* config_parse() of a JSON value. */
static int s_parse_json(const json_t *root, config_t *cfg, err_t *err)
{
    return s_parse_with(config_parse, root, cfg, err);
}

static bool s_all_zero(const config_t *cfg)
{
    const unsigned char *p = (const unsigned char *)cfg;
    for (size_t i = 0; i < sizeof *cfg; i++)
        if (p[i])
            return false;
    return true;
}

/* Expects EINVAL, a zeroed cfg and a message holding each of the words. */
static void s_expect_einval(const json_t *root, const char *word1,
                            const char *word2)
{
    config_t cfg;
    memset(&cfg, 0xab, sizeof cfg);
    err_t err;
    assert_int_equal(s_parse_json(root, &cfg, &err), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(err.code, EINVAL);
    assert_true(s_all_zero(&cfg));
    if (word1 && !strstr(err.msg, word1))
        fail_msg("message '%s' does not name '%s'", err.msg, word1);
    if (word2 && !strstr(err.msg, word2))
        fail_msg("message '%s' does not name '%s'", err.msg, word2);
}

static void s_expect_ok(const json_t *root, config_t *cfg)
{
    err_t err;
    if (s_parse_json(root, cfg, &err) != 0)
        fail_msg("config_parse failed: %s", err.msg);
}

static void test_fixture_mixtral(void **state)
{
    (void)state;
    char *dir = s_fixture_dir("mixtral-A");
    config_t cfg;
    err_t err = {0};
    if (config_load(&cfg, dir, &err) != 0)
        fail_msg("config_load(%s): %s", dir, err.msg);
    assert_int_equal(cfg.arch, CONFIG_ARCH_MIXTRAL);
    assert_string_equal(cfg.model_type, "mixtral");
    assert_string_equal(config_arch_name(cfg.arch), "mixtral");
    assert_int_equal(cfg.hidden_size, 64);
    assert_int_equal(cfg.n_layers, 2);
    assert_int_equal(cfg.n_heads, 4);
    assert_int_equal(cfg.n_kv_heads, 2);
    assert_int_equal(cfg.head_dim, 16);
    assert_int_equal(cfg.intermediate_size, 64);
    assert_int_equal(cfg.n_experts, 8);
    assert_int_equal(cfg.n_experts_per_tok, 2);
    assert_int_equal(cfg.vocab_size, 256);
    assert_int_equal(cfg.max_position_embeddings, 512);
    assert_true(cfg.rms_norm_eps == 1e-5f);
    assert_true(cfg.rope_theta == 1e6);
    assert_int_equal(cfg.rope_type, CONFIG_ROPE_DEFAULT);
    assert_int_equal(cfg.sliding_window, 0);
    assert_false(cfg.tie_word_embeddings);
    assert_int_equal(cfg.bos_token_id, 1);
    assert_int_equal(cfg.n_eos, 0);
    free(dir);
}

/* config_parse_all() of a JSON value (every known family). */
static int s_parse_json_all(const json_t *root, config_t *cfg, err_t *err)
{
    return s_parse_with(config_parse_all, root, cfg, err);
}

/* As s_expect_einval, through config_parse_all (families not run yet). */
static void s_expect_einval_all(const json_t *root, const char *word1,
                                const char *word2)
{
    config_t cfg;
    memset(&cfg, 0xab, sizeof cfg);
    err_t err;
    assert_int_equal(s_parse_json_all(root, &cfg, &err), -1);
    assert_int_equal(errno, EINVAL);
    assert_true(s_all_zero(&cfg));
    if (word1 && !strstr(err.msg, word1))
        fail_msg("message '%s' does not name '%s'", err.msg, word1);
    if (word2 && !strstr(err.msg, word2))
        fail_msg("message '%s' does not name '%s'", err.msg, word2);
}

static void s_load_ok(const char *name, config_t *cfg)
{
    char *dir = s_fixture_dir(name);
    err_t err = {0};
    if (config_load(cfg, dir, &err) != 0)
        fail_msg("config_load(%s): %s", dir, err.msg);
    free(dir);
}

/* The four families run besides mixtral, each with what is its own. */
static void test_fixture_families(void **state)
{
    (void)state;
    config_t c;
    s_load_ok("qwen2_moe-A", &c);
    assert_int_equal(c.arch, CONFIG_ARCH_QWEN2_MOE);
    assert_int_equal(c.n_experts, 16);
    assert_int_equal(c.n_experts_per_tok, 4);
    assert_int_equal(c.intermediate_size, 32);        /* moe_intermediate_size */
    assert_int_equal(c.dense_intermediate_size, 128); /* intermediate_size */
    assert_int_equal(c.shared, CONFIG_SHARED_GATED);
    assert_int_equal(c.shared_intermediate_size, 64);
    assert_true(c.qkv_bias);
    assert_false(c.o_bias);
    assert_int_equal(c.qk_norm, CONFIG_QK_NORM_NONE);
    assert_false(c.norm_topk_prob);
    assert_true(c.rms_norm_eps == 1e-6f);
    assert_int_equal(c.sliding_window, 0);
    assert_true(config_layer_is_moe(&c, 0) && config_layer_is_moe(&c, 1));
    assert_int_equal(config_layer_window(&c, 1), 0);

    s_load_ok("qwen3_moe-A", &c);
    assert_int_equal(c.arch, CONFIG_ARCH_QWEN3_MOE);
    assert_int_equal(c.n_experts, 16);                /* num_local_experts */
    assert_int_equal(c.intermediate_size, 32);
    assert_int_equal(c.qk_norm, CONFIG_QK_NORM_HEAD);
    assert_true(c.norm_topk_prob);
    assert_false(c.qkv_bias);
    assert_int_equal(c.shared, CONFIG_SHARED_NONE);

    s_load_ok("olmoe-A", &c);
    assert_int_equal(c.arch, CONFIG_ARCH_OLMOE);
    assert_int_equal(c.n_experts, 16);
    assert_int_equal(c.intermediate_size, 32);
    assert_int_equal(c.qk_norm, CONFIG_QK_NORM_FULL);
    assert_false(c.norm_topk_prob);
    assert_int_equal(c.head_dim, 16);                 /* hidden / heads */

    s_load_ok("hunyuan_v1_moe-A", &c);
    assert_int_equal(c.arch, CONFIG_ARCH_HUNYUAN_V1_MOE);
    assert_int_equal(c.n_experts, 8);
    assert_int_equal(c.n_experts_per_tok, 2);         /* moe_topk */
    assert_int_equal(c.intermediate_size, 48);
    assert_int_equal(c.qk_norm, CONFIG_QK_NORM_HEAD_POST);
    assert_true(c.norm_topk_prob);
    assert_int_equal(c.shared, CONFIG_SHARED_PLAIN);
    assert_int_equal(c.shared_intermediate_size, 48);

    s_load_ok("mixtral-A", &c);
    assert_true(c.norm_topk_prob);
    assert_int_equal(c.shared, CONFIG_SHARED_NONE);
    assert_int_equal(c.qk_norm, CONFIG_QK_NORM_NONE);
}

/* Every fixture family loads and is marked supported (no family is left
 * parse-only); deepseek_v3's MLA and routing fields read as written. */
static void test_fixture_every_family_loads(void **state)
{
    (void)state;
    for (size_t i = 0; i < family_count(); i++) { /* fixture <model_type>-A */
        char name[64];
        snprintf(name, sizeof name, "%s-A", family_at(i)->model_type);
        char *dir = s_fixture_dir(name);
        config_t cfg;
        err_t err = {0};
        if (config_load(&cfg, dir, &err) != 0)
            fail_msg("%s: %s", name, err.msg);
        assert_true(config_arch_supported(cfg.arch));
        free(dir);
    }

    config_t c;
    err_t err;
    json_t *root = s_fixture_json("deepseek_v3-A");
    if (s_parse_json_all(root, &c, &err) != 0)
        fail_msg("deepseek_v3: %s", err.msg);
    json_decref(root);
    assert_int_equal(c.arch, CONFIG_ARCH_DEEPSEEK_V3);
    assert_int_equal(c.n_experts, 16);
    assert_int_equal(c.intermediate_size, 24);
    assert_int_equal(c.dense_intermediate_size, 96);
    assert_int_equal(c.q_lora_rank, 32);
    assert_int_equal(c.kv_lora_rank, 24);
    assert_int_equal(c.qk_nope_head_dim, 16);
    assert_int_equal(c.qk_rope_head_dim, 8);
    assert_int_equal(c.v_head_dim, 16);
    assert_int_equal(c.head_dim, 8);
    assert_int_equal(c.n_group, 4);
    assert_int_equal(c.topk_group, 2);
    assert_true(c.routed_scaling_factor == 2.5f);
    assert_int_equal(c.scoring, CONFIG_SCORING_SIGMOID);
    assert_int_equal(c.topk_method, CONFIG_TOPK_NOAUX_TC);
    assert_true(c.norm_topk_prob);
    assert_true(c.rope_interleave);
    assert_int_equal(c.first_k_dense, 1);
    assert_false(config_layer_is_moe(&c, 0));
    assert_true(config_layer_is_moe(&c, 1) && config_layer_is_moe(&c, 2));
    assert_int_equal(c.shared, CONFIG_SHARED_PLAIN);
    assert_int_equal(c.n_shared_experts, 1);
    assert_int_equal(c.shared_intermediate_size, 24);

    root = s_fixture_json("deepseek_v2-A");
    if (s_parse_json_all(root, &c, &err) != 0)
        fail_msg("deepseek_v2: %s", err.msg);
    json_decref(root);
    assert_int_equal(c.arch, CONFIG_ARCH_DEEPSEEK_V2);
    assert_int_equal(c.q_lora_rank, 0);
    assert_int_equal(c.scoring, CONFIG_SCORING_SOFTMAX);
    assert_int_equal(c.topk_method, CONFIG_TOPK_GROUP_LIMITED);
    assert_true(c.routed_scaling_factor == 1.5f);
    assert_false(c.norm_topk_prob);
    assert_int_equal(c.n_shared_experts, 2);
    assert_int_equal(c.shared_intermediate_size, 48);

}

/* gpt_oss loads (the engine runs it), YaRN included; a missing truncate is
 * true, as in transformers. */
static void test_fixture_gpt_oss(void **state)
{
    (void)state;
    config_t c;
    s_load_ok("gpt_oss-A", &c);
    assert_true(config_arch_supported(CONFIG_ARCH_GPT_OSS));
    assert_int_equal(c.arch, CONFIG_ARCH_GPT_OSS);
    assert_int_equal(c.n_experts, 8);
    assert_int_equal(c.intermediate_size, 48);
    assert_int_equal(c.rope_type, CONFIG_ROPE_YARN);
    assert_true(c.rope_theta == 150000.0);
    assert_true(c.rope_factor == 32.0);
    assert_int_equal(c.rope_orig_max_pos, 4096);
    assert_true(c.rope_beta_fast == 32.0 && c.rope_beta_slow == 1.0);
    assert_false(c.rope_truncate);
    assert_int_equal(c.sliding_window, 8);
    assert_int_equal(config_layer_window(&c, 0), 8);
    assert_int_equal(config_layer_window(&c, 1), 0);
    assert_true(c.qkv_bias && c.o_bias && c.attn_sinks && c.router_bias);
    assert_int_equal(c.scoring, CONFIG_SCORING_TOPK_SOFTMAX);
    assert_int_equal(c.expert_act, CONFIG_EXPERT_SWIGLU_OAI);
    assert_true(c.swiglu_limit == 7.0f);

    json_t *root = s_fixture_json("gpt_oss-A");
    json_t *rp = json_object_get(root, "rope_parameters");
    json_object_del(rp, "truncate");
    json_object_del(root, "swiglu_limit");
    s_expect_ok(root, &c);
    assert_int_equal(c.rope_type, CONFIG_ROPE_YARN);
    assert_true(c.rope_truncate);
    assert_true(c.swiglu_limit == 7.0f);
    json_decref(root);
}

/* deepseek_v2 and deepseek_v3 load. Their YaRN RoPE (DeepSeek-V3's real
 * rope_scaling: factor 40, mscale and mscale_all_dim 1) is accepted with
 * every field carried, as engine/latent runs it; attention_bias and expert
 * counts the grouped routers cannot serve are refused, naming the field. */
static void test_deepseek_accepted(void **state)
{
    (void)state;
    const char *const names[] = {"deepseek_v2-A", "deepseek_v3-A"};
    for (int i = 0; i < 2; i++) {
        char *dir = s_fixture_dir(names[i]);
        config_t cfg;
        err_t err = {0};
        if (config_load(&cfg, dir, &err) != 0)
            fail_msg("%s: %s", names[i], err.msg);
        assert_true(config_arch_supported(cfg.arch));
        assert_int_equal(cfg.kv_lora_rank, 24);
        free(dir);
    }
    assert_true(config_arch_supported(CONFIG_ARCH_DEEPSEEK_V2));
    assert_true(config_arch_supported(CONFIG_ARCH_DEEPSEEK_V3));

    config_t c;
    json_t *root = s_fixture_json("deepseek_v3-A");
    json_object_del(root, "rope_parameters");
    json_object_set_new(
        root, "rope_scaling",
        json_pack("{s:s, s:f, s:i, s:i, s:i, s:f, s:f}", "type", "yarn", "factor", 40.0,
                  "original_max_position_embeddings", 4096, "beta_fast", 32,
                  "beta_slow", 1, "mscale", 1.0, "mscale_all_dim", 1.0));
    json_object_set_new(root, "rope_theta", json_real(10000.0));
    json_object_set_new(root, "max_position_embeddings", json_integer(163840));
    s_expect_ok(root, &c);
    assert_int_equal(c.rope_type, CONFIG_ROPE_YARN);
    assert_true(c.rope_factor == 40.0 && c.rope_orig_max_pos == 4096);
    assert_true(c.rope_mscale == 1.0 && c.rope_mscale_all_dim == 1.0);
    assert_true(c.rope_beta_fast == 32.0 && c.rope_beta_slow == 1.0);
    assert_true(c.rope_theta == 10000.0);
    json_decref(root);

    root = s_fixture_json("deepseek_v2-A");
    json_object_set_new(root, "attention_bias", json_true());
    s_expect_einval(root, "attention_bias", "variant.json");
    json_decref(root);

    /* 4 groups of 4 experts, 2 kept: at most 8 experts per token. */
    root = s_fixture_json("deepseek_v3-A");
    json_object_set_new(root, "num_experts_per_tok", json_integer(9));
    s_expect_einval(root, "num_experts_per_tok", NULL);
    json_object_set_new(root, "num_experts_per_tok", json_integer(8));
    s_expect_ok(root, &c);
    /* V3 ranks a group by its two best experts: a group needs two. */
    json_object_set_new(root, "num_experts_per_tok", json_integer(4));
    json_object_set_new(root, "n_group", json_integer(16));
    json_object_set_new(root, "topk_group", json_integer(4));
    s_expect_einval(root, "n_group", NULL);
    json_decref(root);
    /* V2's plain greedy ignores the groups. */
    root = s_fixture_json("deepseek_v2-A");
    json_object_set_new(root, "topk_method", json_string("greedy"));
    json_object_set_new(root, "num_experts_per_tok", json_integer(9));
    s_expect_ok(root, &c);
    assert_int_equal(c.topk_method, CONFIG_TOPK_GREEDY);
    json_decref(root);
}

/* Values the math cannot compute are refused, naming the field. */
static void test_refused_values(void **state)
{
    (void)state;
    static const struct {
        const char *fixture, *field, *json, *word;
        bool all;   /* through config_parse_all */
    } cases[] = {
        {"qwen3_moe-A", "rope_parameters",
         "{\"rope_theta\": 1e4, \"rope_type\": \"yarn\", \"factor\": 4.0}",
         "yarn", false},
        {"qwen3_moe-A", "rope_parameters",
         "{\"rope_theta\": 1e4, \"rope_type\": \"dynamic\"}", "dynamic", false},
        {"qwen3_moe-A", "rope_parameters",
         "{\"rope_theta\": 1e4, \"partial_rotary_factor\": 0.5}",
         "partial_rotary_factor", false},
        {"qwen3_moe-A", "quantization_config", "{\"quant_method\": \"gptq\"}",
         "quantization_config.quant_method", false},
        {"qwen3_moe-A", "num_experts", "8", "num_local_experts", false},
        {"qwen3_moe-A", "use_sliding_window", "true", "use_sliding_window",
         false},
        {"qwen2_moe-A", "layer_types",
         "[\"full_attention\", \"chunked_attention\"]", "chunked_attention",
         false},
        {"qwen2_moe-A", "layer_types", "[\"full_attention\"]", "layer_types",
         false},
        {"qwen2_moe-A", "shared_expert_intermediate_size", "null",
         "shared_expert_intermediate_size", false},
        {"qwen2_moe-A", "mlp_only_layers", "[7]", "mlp_only_layers", false},
        {"olmoe-A", "clip_qkv", "8.0", "clip_qkv", false},
        {"hunyuan_v1_moe-A", "use_cla", "true", "use_cla", false},
        {"hunyuan_v1_moe-A", "moe_topk", "[2, 3]", "moe_topk", false},
        {"hunyuan_v1_moe-A", "num_experts", "[8, 4]", "num_experts", false},
        {"hunyuan_v1_moe-A", "num_shared_expert", "2", "num_shared_expert",
         false},
        {"deepseek_v3-A", "scoring_func", "\"softmax\"", "scoring_func", true},
        {"deepseek_v3-A", "topk_method", "\"greedy\"", "topk_method", true},
        {"deepseek_v2-A", "topk_method", "\"fancy\"", "fancy", true},
        {"deepseek_v2-A", "moe_layer_freq", "2", "moe_layer_freq", true},
        {"deepseek_v2-A", "n_group", "3", "n_group", true},
        {"deepseek_v2-A", "kv_lora_rank", "null", "kv_lora_rank", true},
        {"gpt_oss-A", "rope_parameters",
         "{\"rope_theta\": 1e4, \"rope_type\": \"yarn\", \"factor\": 0.5}",
         "factor", true},
        {"gpt_oss-A", "sliding_window", "null", "sliding_window", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *root = s_fixture_json(cases[i].fixture);
        json_error_t jerr;
        json_t *v = json_loads(cases[i].json, JSON_DECODE_ANY, &jerr);
        assert_non_null(v);
        json_object_set_new(root, cases[i].field, v);
        printf("  %s with %s = %s\n", cases[i].fixture, cases[i].field,
               cases[i].json);
        if (cases[i].all)
            s_expect_einval_all(root, cases[i].word, "variant.json");
        else
            s_expect_einval(root, cases[i].word, "variant.json");
        json_decref(root);
    }
}

/* The precision fixtures' config.json (../shared/fixtures-precision, every
 * folder there: hidden ones have other block sizes) load, with the
 * quantization they declare. */
static void test_precision_fixtures(void **state)
{
    (void)state;
    const char *root_dir = testutil_env("MOE_FIXTURES_PRECISION",
                                        "../shared/fixtures-precision");
    DIR *d = opendir(root_dir);
    if (!d) {
        testutil_skip_unless_possible(false, "no fixtures in %s", root_dir);
        return;
    }
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        const char *name = e->d_name;
        size_t len = strlen(root_dir) + strlen(name) + 2;
        char *dir = malloc(len);
        assert_non_null(dir);
        snprintf(dir, len, "%s/%s", root_dir, name);
        struct stat st;
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
            free(dir);
            continue;
        }
        n++;
        config_t cfg;
        err_t err = {0};
        if (config_load(&cfg, dir, &err) != 0)
            fail_msg("config_load(%s): %s", dir, err.msg);
        printf("  %s: quantization %s block %dx%d, %d modules kept\n",
               name, config_quant_name(cfg.quant.method),
               cfg.quant.block_n, cfg.quant.block_k, cfg.quant.n_skip);
        if (strstr(name, "-fp8")) {
            assert_int_equal(cfg.quant.method, CONFIG_QUANT_FP8);
            assert_true(cfg.quant.block_n > 0 && cfg.quant.block_k > 0);
        } else if (strstr(name, "-mxfp4")) {
            assert_int_equal(cfg.quant.method, CONFIG_QUANT_MXFP4);
        } else {
            assert_int_equal(cfg.quant.method, CONFIG_QUANT_NONE);
        }
        assert_int_equal(cfg.dtype, CONFIG_DTYPE_BFLOAT16);
        free(dir);
    }
    closedir(d);
    assert_true(n > 0);
}

/* quantization_config: fp8 (fmt e4m3, dynamic activations, any positive
 * block sizes) and mxfp4 read; everything else refused naming the field. */
static void test_quantization_config(void **state)
{
    (void)state;
    json_t *root = s_fixture_json("qwen3_moe-A");
    config_t c;
    s_expect_ok(root, &c);
    assert_int_equal(c.quant.method, CONFIG_QUANT_NONE);
    assert_string_equal(config_quant_name(CONFIG_QUANT_NONE), "none");

    json_object_set_new(root, "quantization_config",
                        json_pack("{s:s, s:s, s:s, s:[i, i]}", "quant_method",
                                  "fp8", "fmt", "e4m3", "activation_scheme",
                                  "dynamic", "weight_block_size", 96, 7));
    s_expect_ok(root, &c);
    assert_int_equal(c.quant.method, CONFIG_QUANT_FP8);
    assert_string_equal(config_quant_name(c.quant.method), "fp8");
    assert_int_equal(c.quant.block_n, 96);
    assert_int_equal(c.quant.block_k, 7);
    assert_int_equal(c.quant.n_skip, 0);

    /* transformers' defaults: e4m3, dynamic, [128, 128] */
    json_object_set_new(root, "quantization_config",
                        json_pack("{s:s}", "quant_method", "fp8"));
    s_expect_ok(root, &c);
    assert_int_equal(c.quant.block_n, 128);
    assert_int_equal(c.quant.block_k, 128);

    json_object_set_new(root, "quantization_config",
                        json_pack("{s:s, s:[s, s]}", "quant_method", "mxfp4",
                                  "modules_to_not_convert", "lm_head",
                                  "model.layers.*.self_attn"));
    s_expect_ok(root, &c);
    assert_int_equal(c.quant.method, CONFIG_QUANT_MXFP4);
    assert_int_equal(c.quant.n_skip, 2);
    assert_string_equal(c.quant.skip[0], "lm_head");
    assert_string_equal(c.quant.skip[1], "model.layers.*.self_attn");
    assert_int_equal(c.quant.block_n, 0);

    json_object_set_new(root, "quantization_config", json_null());
    s_expect_ok(root, &c);
    assert_int_equal(c.quant.method, CONFIG_QUANT_NONE);

    static const struct {
        const char *json, *word;
    } bad[] = {
        {"{\"quant_method\": \"awq\"}", "quantization_config.quant_method 'awq'"},
        {"{}", "quantization_config.quant_method"},
        {"{\"quant_method\": 8}", "quantization_config.quant_method"},
        {"\"fp8\"", "quantization_config"},
        {"{\"quant_method\": \"fp8\", \"fmt\": \"e5m2\"}", "quantization_config.fmt 'e5m2'"},
        {"{\"quant_method\": \"fp8\", \"fmt\": 4}", "quantization_config.fmt"},
        {"{\"quant_method\": \"fp8\", \"activation_scheme\": \"static\"}",
         "quantization_config.activation_scheme 'static'"},
        {"{\"quant_method\": \"fp8\", \"weight_block_size\": [0, 128]}",
         "quantization_config.weight_block_size[0]"},
        {"{\"quant_method\": \"fp8\", \"weight_block_size\": [128, -1]}",
         "quantization_config.weight_block_size[1]"},
        {"{\"quant_method\": \"fp8\", \"weight_block_size\": [128]}",
         "quantization_config.weight_block_size"},
        {"{\"quant_method\": \"fp8\", \"weight_block_size\": [128, 128, 1]}",
         "quantization_config.weight_block_size"},
        {"{\"quant_method\": \"fp8\", \"weight_block_size\": [128, 1.5]}",
         "quantization_config.weight_block_size[1]"},
        {"{\"quant_method\": \"fp8\", \"weight_block_size\": null}",
         "one scale per tensor"},
        {"{\"quant_method\": \"fp8\", \"weight_block_size\": [99999999, 1]}",
         "quantization_config.weight_block_size[0]"},
        {"{\"quant_method\": \"mxfp4\", \"modules_to_not_convert\": \"lm_head\"}",
         "quantization_config.modules_to_not_convert"},
        {"{\"quant_method\": \"mxfp4\", \"modules_to_not_convert\": [3]}",
         "quantization_config.modules_to_not_convert[0]"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_error_t jerr;
        json_t *v = json_loads(bad[i].json, JSON_DECODE_ANY, &jerr);
        assert_non_null(v);
        json_object_set_new(root, "quantization_config", v);
        printf("  quantization_config = %s\n", bad[i].json);
        s_expect_einval(root, bad[i].word, "variant.json");
    }
    /* too many modules_to_not_convert, and one too long */
    json_t *many = json_array();
    for (int i = 0; i <= CONFIG_QUANT_MAX_SKIP; i++)
        json_array_append_new(many, json_string("x"));
    json_object_set_new(root, "quantization_config",
                        json_pack("{s:s, s:o}", "quant_method", "mxfp4",
                                  "modules_to_not_convert", many));
    s_expect_einval(root, "modules_to_not_convert", "variant.json");
    char longname[CONFIG_QUANT_SKIP_LEN + 1];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    json_object_set_new(root, "quantization_config",
                        json_pack("{s:s, s:[s]}", "quant_method", "mxfp4",
                                  "modules_to_not_convert", longname));
    s_expect_einval(root, "modules_to_not_convert[0]", "variant.json");
    json_decref(root);
}

/* dtype / torch_dtype: read when a known name, ignored otherwise. */
static void test_dtype_field(void **state)
{
    (void)state;
    json_t *root = s_fixture_json("mixtral-A");
    config_t c;
    json_object_del(root, "torch_dtype");
    json_object_del(root, "dtype");
    s_expect_ok(root, &c);
    assert_int_equal(c.dtype, CONFIG_DTYPE_UNSET);
    json_object_set_new(root, "torch_dtype", json_string("float16"));
    s_expect_ok(root, &c);
    assert_int_equal(c.dtype, CONFIG_DTYPE_FLOAT16);
    json_object_set_new(root, "dtype", json_string("bfloat16"));
    s_expect_ok(root, &c);
    assert_int_equal(c.dtype, CONFIG_DTYPE_BFLOAT16);
    json_object_set_new(root, "dtype", json_string("float32"));
    s_expect_ok(root, &c);
    assert_int_equal(c.dtype, CONFIG_DTYPE_FLOAT32);
    json_object_set_new(root, "dtype", json_string("auto"));
    s_expect_ok(root, &c);
    assert_int_equal(c.dtype, CONFIG_DTYPE_UNSET);
    json_object_set_new(root, "dtype", json_integer(16));
    s_expect_einval(root, "dtype", "variant.json");
    json_decref(root);
}

/* hunyuan's per-layer lists, when uniform, are one value. */
static void test_uniform_lists(void **state)
{
    (void)state;
    json_t *root = s_fixture_json("hunyuan_v1_moe-A");
    config_t c;
    json_object_set_new(root, "num_experts", json_pack("[i, i]", 8, 8));
    json_object_set_new(root, "moe_topk", json_pack("[i, i]", 3, 3));
    s_expect_ok(root, &c);
    assert_int_equal(c.n_experts, 8);
    assert_int_equal(c.n_experts_per_tok, 3);
    json_object_set_new(root, "moe_topk", json_pack("[i, i]", 9, 9));
    s_expect_einval(root, "moe_topk", NULL);
    json_object_set_new(root, "moe_topk", json_array());
    s_expect_einval(root, "moe_topk", NULL);
    json_decref(root);
}

/* qwen's dense layers: mlp_only_layers and decoder_sparse_step. */
static void test_dense_layers(void **state)
{
    (void)state;
    json_t *root = s_fixture_json("qwen2_moe-A");
    config_t c;
    json_object_set_new(root, "mlp_only_layers", json_pack("[i]", 1));
    s_expect_ok(root, &c);
    assert_true(config_layer_is_moe(&c, 0));
    assert_false(config_layer_is_moe(&c, 1));
    json_object_set_new(root, "mlp_only_layers", json_array());
    json_object_set_new(root, "decoder_sparse_step", json_integer(2));
    s_expect_ok(root, &c);
    assert_false(config_layer_is_moe(&c, 0));
    assert_true(config_layer_is_moe(&c, 1));
    assert_false(config_layer_is_moe(&c, 2)); /* out of range */
    json_decref(root);
}

/* The model id: unchanged for mixtral, and telling families and shapes
 * apart. */
static void test_model_id(void **state)
{
    (void)state;
    config_t c;
    char id[256], other[256];
    s_load_ok("mixtral-A", &c);
    config_model_id(&c, id, sizeof id);
    assert_string_equal(id, "mixtral:h64:l2:e8:k2:i64:v256:a4/2x16");
    s_load_ok("qwen2_moe-A", &c);
    int n = config_model_id(&c, id, sizeof id);
    assert_string_equal(id, "qwen2_moe:h64:l2:e16:k4:i32:v256:a4/2x16:s64g");
    assert_int_equal(n, (int)strlen(id));
    /* a short buffer still reports the full length */
    char tiny[8];
    assert_int_equal(config_model_id(&c, tiny, sizeof tiny), n);
    assert_string_equal(tiny, "qwen2_m");
    s_load_ok("qwen3_moe-A", &c);
    config_model_id(&c, other, sizeof other);
    assert_string_equal(other, "qwen3_moe:h64:l2:e16:k4:i32:v256:a4/2x16");
    s_load_ok("hunyuan_v1_moe-A", &c);
    config_model_id(&c, other, sizeof other);
    assert_string_equal(other, "hunyuan_v1_moe:h64:l2:e8:k2:i48:v256:a4/2x16:s48");

    json_t *root = s_fixture_json("deepseek_v3-A");
    err_t err;
    assert_int_equal(s_parse_json_all(root, &c, &err), 0);
    json_decref(root);
    config_model_id(&c, other, sizeof other);
    assert_string_equal(other, "deepseek_v3:h64:l3:e16:k4:i24:v256:a4/4x8:d96/1:"
                               "s24:mla32/24/16/8/16:g4/2");
    /* a different shared width is a different model */
    root = s_fixture_json("qwen2_moe-A");
    json_object_set_new(root, "shared_expert_intermediate_size", json_integer(32));
    s_expect_ok(root, &c);
    json_decref(root);
    config_model_id(&c, other, sizeof other);
    assert_string_not_equal(id, other);
}

static void test_unknown_model_type(void **state)
{
    (void)state;
    json_t *root = s_mixtral_json();
    json_object_set_new(root, "model_type", json_string("llama"));
    s_expect_einval(root, "unsupported architecture 'llama'", "variant.json");
    json_object_set_new(root, "model_type", json_string("phi_moe"));
    s_expect_einval(root, "'phi_moe'", "supported: mixtral, qwen2_moe");
    json_object_del(root, "model_type");
    s_expect_einval(root, "model_type", "variant.json");
    json_object_set_new(root, "model_type", json_integer(3));
    s_expect_einval(root, "model_type", "string");
    json_decref(root);
}

static void test_architectures_checked(void **state)
{
    (void)state;
    json_t *root = s_mixtral_json();
    json_object_set_new(root, "architectures",
                        json_pack("[s]", "LlamaForCausalLM"));
    s_expect_einval(root, "LlamaForCausalLM", "MixtralForCausalLM");
    json_object_set_new(root, "architectures",
                        json_string("MixtralForCausalLM"));
    s_expect_einval(root, "architectures", NULL);
    json_object_set_new(root, "architectures", json_pack("[i]", 1));
    s_expect_einval(root, "architectures", NULL);
    /* absent: model_type alone decides */
    json_object_del(root, "architectures");
    config_t cfg;
    s_expect_ok(root, &cfg);
    assert_int_equal(cfg.arch, CONFIG_ARCH_MIXTRAL);
    json_decref(root);
}

static const char *const s_required[] = {
    "hidden_size", "num_hidden_layers", "num_attention_heads",
    "intermediate_size", "num_local_experts", "num_experts_per_tok",
    "vocab_size", "rms_norm_eps",
};
enum { S_N_REQUIRED = sizeof s_required / sizeof s_required[0] };

static void test_required_missing(void **state)
{
    (void)state;
    for (int i = 0; i < S_N_REQUIRED; i++) {
        json_t *root = s_mixtral_json();
        json_object_del(root, s_required[i]);
        s_expect_einval(root, s_required[i], "variant.json");
        /* null is no better than absent */
        json_object_set_new(root, s_required[i], json_null());
        s_expect_einval(root, s_required[i], "variant.json");
        json_decref(root);
    }
}

static void test_wrong_types(void **state)
{
    (void)state;
    for (int i = 0; i < S_N_REQUIRED; i++) {
        json_t *root = s_mixtral_json();
        json_object_set_new(root, s_required[i], json_string("64"));
        s_expect_einval(root, s_required[i], "variant.json");
        json_object_set_new(root, s_required[i], json_pack("[i]", 64));
        s_expect_einval(root, s_required[i], NULL);
        json_decref(root);
    }
    /* integer fields reject reals, even integral ones */
    static const char *const ints[] = {"hidden_size", "num_local_experts",
                                       "num_key_value_heads", "head_dim",
                                       "max_position_embeddings",
                                       "sliding_window", "bos_token_id"};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        json_t *root = s_mixtral_json();
        json_object_set_new(root, ints[i], json_real(64.0));
        s_expect_einval(root, ints[i], "integer");
        json_decref(root);
    }
    static const char *const others[][2] = {
        {"tie_word_embeddings", "boolean"}, {"rope_parameters", "object"},
        {"eos_token_id", "eos_token_id"},   {"hidden_act", "string"},
    };
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        json_t *root = s_mixtral_json();
        json_object_set_new(root, others[i][0], json_real(1.5));
        s_expect_einval(root, others[i][0], others[i][1]);
        json_decref(root);
    }
    json_t *root = s_mixtral_json();
    json_object_set_new(root, "hidden_size", json_integer(1LL << 40));
    s_expect_einval(root, "hidden_size", NULL);
    json_object_set_new(root, "hidden_size", json_true());
    s_expect_einval(root, "hidden_size", NULL);
    json_decref(root);
}

static void test_bad_json(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "", "{", "{\"model_type\": \"mixtral\",}", "[1, 2]", "\"mixtral\"",
        "null", "{\"model_type\": \"mixtral\"} trailing",
        "{\"model_type\": \"mixtral\", \"model_type\": \"mixtral\"}",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        config_t cfg;
        memset(&cfg, 1, sizeof cfg);
        err_t err = {0};
        errno = 0;
        assert_int_equal(config_parse(&cfg, texts[i], strlen(texts[i]),
                                      "broken.json", &err), -1);
        assert_int_equal(errno, EINVAL);
        assert_true(s_all_zero(&cfg));
        assert_non_null(strstr(err.msg, "broken.json"));
    }
    /* len bounds the text: a valid config cut short is invalid */
    json_t *root = s_mixtral_json();
    char *text = json_dumps(root, 0);
    config_t cfg;
    errno = 0;
    assert_int_equal(config_parse(&cfg, text, strlen(text) / 2, "half", NULL),
                     -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(config_parse(&cfg, text, strlen(text), "whole", NULL), 0);
    free(text);
    json_decref(root);
    /* err may be NULL */
    errno = 0;
    assert_int_equal(config_parse(&cfg, "{", 1, "x", NULL), -1);
    assert_int_equal(errno, EINVAL);
}

static void test_head_dim_default(void **state)
{
    (void)state;
    json_t *root = s_mixtral_json();
    config_t cfg;
    json_object_set_new(root, "head_dim", json_null());
    s_expect_ok(root, &cfg);
    assert_int_equal(cfg.head_dim, 16);
    json_object_del(root, "head_dim");
    s_expect_ok(root, &cfg);
    assert_int_equal(cfg.head_dim, 16);
    /* an explicit head_dim need not be hidden / heads */
    json_object_set_new(root, "head_dim", json_integer(32));
    s_expect_ok(root, &cfg);
    assert_int_equal(cfg.head_dim, 32);
    /* no head_dim and heads do not divide hidden */
    json_object_del(root, "head_dim");
    json_object_set_new(root, "num_attention_heads", json_integer(6));
    json_object_set_new(root, "num_key_value_heads", json_integer(2));
    s_expect_einval(root, "head_dim", "num_attention_heads");
    json_object_set_new(root, "head_dim", json_integer(15));
    s_expect_einval(root, "head_dim", "even");
    json_decref(root);
}

static void test_optional_defaults(void **state)
{
    (void)state;
    json_t *root = s_mixtral_json();
    static const char *const optional[] = {
        "num_key_value_heads", "head_dim", "max_position_embeddings",
        "rope_parameters", "sliding_window", "tie_word_embeddings",
        "bos_token_id", "eos_token_id", "architectures", "hidden_act",
    };
    for (size_t i = 0; i < sizeof optional / sizeof optional[0]; i++)
        json_object_del(root, optional[i]);
    config_t cfg;
    s_expect_ok(root, &cfg);
    assert_int_equal(cfg.n_kv_heads, 4);
    assert_int_equal(cfg.head_dim, 16);
    assert_int_equal(cfg.max_position_embeddings, 4096);
    assert_true(cfg.rope_theta == 1e6);
    assert_int_equal(cfg.rope_type, CONFIG_ROPE_DEFAULT);
    assert_int_equal(cfg.sliding_window, 0);
    assert_false(cfg.tie_word_embeddings);
    assert_int_equal(cfg.bos_token_id, -1);
    assert_int_equal(cfg.n_eos, 0);

    json_object_set_new(root, "sliding_window", json_integer(4096));
    json_object_set_new(root, "tie_word_embeddings", json_true());
    json_object_set_new(root, "bos_token_id", json_null());
    json_object_set_new(root, "max_position_embeddings", json_null());
    s_expect_ok(root, &cfg);
    assert_int_equal(cfg.sliding_window, 4096);
    assert_true(cfg.tie_word_embeddings);
    assert_int_equal(cfg.bos_token_id, -1);
    assert_int_equal(cfg.max_position_embeddings, 4096);
    json_decref(root);
}

static void test_eos_forms(void **state)
{
    (void)state;
    json_t *root = s_mixtral_json();
    config_t cfg;
    json_object_set_new(root, "eos_token_id", json_integer(2));
    s_expect_ok(root, &cfg);
    assert_int_equal(cfg.n_eos, 1);
    assert_int_equal(cfg.eos_token_ids[0], 2);

    json_object_set_new(root, "eos_token_id",
                        json_pack("[i, i, i]", 2, 7, 255));
    s_expect_ok(root, &cfg);
    assert_int_equal(cfg.n_eos, 3);
    assert_int_equal(cfg.eos_token_ids[0], 2);
    assert_int_equal(cfg.eos_token_ids[1], 7);
    assert_int_equal(cfg.eos_token_ids[2], 255);

    json_object_set_new(root, "eos_token_id", json_array());
    s_expect_ok(root, &cfg);
    assert_int_equal(cfg.n_eos, 0);

    json_t *many = json_array();
    for (int i = 0; i <= CONFIG_MAX_EOS; i++)
        json_array_append_new(many, json_integer(i));
    json_object_set_new(root, "eos_token_id", many);
    s_expect_einval(root, "eos_token_id", NULL);

    json_object_set_new(root, "eos_token_id", json_pack("[i, s]", 2, "3"));
    s_expect_einval(root, "eos_token_id", "integer");
    json_object_set_new(root, "eos_token_id", json_integer(256));
    s_expect_einval(root, "eos_token_id", NULL);
    json_object_set_new(root, "eos_token_id", json_pack("[i]", -1));
    s_expect_einval(root, "eos_token_id", NULL);
    json_object_set_new(root, "eos_token_id", json_string("2"));
    s_expect_einval(root, "eos_token_id", NULL);
    json_object_set_new(root, "eos_token_id", json_null());
    json_object_set_new(root, "bos_token_id", json_integer(256));
    s_expect_einval(root, "bos_token_id", NULL);
    json_decref(root);
}

static void test_rope(void **state)
{
    (void)state;
    json_t *root = s_mixtral_json();
    config_t cfg;
    /* older checkpoints: top-level rope_theta */
    json_object_del(root, "rope_parameters");
    json_object_set_new(root, "rope_theta", json_real(10000.0));
    s_expect_ok(root, &cfg);
    assert_true(cfg.rope_theta == 10000.0);
    json_object_set_new(root, "rope_theta", json_integer(500000));
    s_expect_ok(root, &cfg);
    assert_true(cfg.rope_theta == 500000.0);
    json_object_set_new(root, "rope_scaling", json_null());
    s_expect_ok(root, &cfg);
    /* rope_parameters wins over the top-level field */
    json_object_set_new(root, "rope_parameters",
                        json_pack("{s:f, s:s}", "rope_theta", 2.5e6,
                                  "rope_type", "default"));
    s_expect_ok(root, &cfg);
    assert_true(cfg.rope_theta == 2.5e6);

    json_object_set_new(root, "rope_parameters",
                        json_pack("{s:f, s:s, s:f}", "rope_theta", 1e6,
                                  "rope_type", "yarn", "factor", 4.0));
    s_expect_einval(root, "rope_type", "yarn");
    json_object_set_new(root, "rope_parameters",
                        json_pack("{s:f, s:i}", "rope_theta", 1e6,
                                  "rope_type", 3));
    s_expect_einval(root, "rope_type", NULL);
    json_object_set_new(root, "rope_parameters",
                        json_pack("{s:s}", "rope_theta", "1e6"));
    s_expect_einval(root, "rope_theta", NULL);
    json_object_set_new(root, "rope_parameters",
                        json_pack("{s:f}", "rope_theta", -1.0));
    s_expect_einval(root, "rope_theta", NULL);
    json_object_del(root, "rope_parameters");
    json_object_set_new(
        root, "rope_scaling",
        json_pack("{s:s, s:f}", "type", "linear", "factor", 2.0));
    s_expect_einval(root, "rope_scaling", "linear");
    json_decref(root);
}

static void test_ranges(void **state)
{
    (void)state;
    static const struct {
        const char *field;
        long long value;
        const char *word;
    } cases[] = {
        {"hidden_size", 0, "hidden_size"},
        {"hidden_size", -64, "hidden_size"},
        {"num_hidden_layers", 0, "num_hidden_layers"},
        {"num_attention_heads", 0, "num_attention_heads"},
        {"num_key_value_heads", 3, "num_key_value_heads"},
        {"num_key_value_heads", 8, "num_key_value_heads"},
        {"num_key_value_heads", 0, "num_key_value_heads"},
        {"head_dim", 0, "head_dim"},
        {"intermediate_size", -1, "intermediate_size"},
        {"num_local_experts", 0, "num_local_experts"},
        {"num_experts_per_tok", 9, "num_experts_per_tok"},
        {"num_experts_per_tok", 0, "num_experts_per_tok"},
        {"vocab_size", 0, "vocab_size"},
        {"max_position_embeddings", 0, "max_position_embeddings"},
        {"sliding_window", -1, "sliding_window"},
        {"bos_token_id", -2, "bos_token_id"},
        {"num_attention_heads", 3000000000LL, "num_attention_heads"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *root = s_mixtral_json();
        json_object_set_new(root, cases[i].field, json_integer(cases[i].value));
        s_expect_einval(root, cases[i].word, "variant.json");
        json_decref(root);
    }
    static const double bad_eps[] = {0.0, -1e-5, 1.0};
    for (size_t i = 0; i < sizeof bad_eps / sizeof bad_eps[0]; i++) {
        json_t *root = s_mixtral_json();
        json_object_set_new(root, "rms_norm_eps", json_real(bad_eps[i]));
        s_expect_einval(root, "rms_norm_eps", NULL);
        json_decref(root);
    }
    json_t *root = s_mixtral_json();
    json_object_set_new(root, "hidden_act", json_string("gelu"));
    s_expect_einval(root, "hidden_act", "gelu");
    json_object_set_new(root, "hidden_act", json_string("silu"));
    config_t cfg;
    s_expect_ok(root, &cfg);
    /* integer eps is still a number */
    json_object_set_new(root, "rms_norm_eps", json_integer(0));
    s_expect_einval(root, "rms_norm_eps", NULL);
    json_decref(root);
}

static void test_load_errors(void **state)
{
    (void)state;
    config_t cfg;
    memset(&cfg, 7, sizeof cfg);
    err_t err = {0};
    errno = 0;
    assert_int_equal(config_load(&cfg, "/nonexistent/model", &err), -1);
    assert_int_equal(errno, ENOENT);
    assert_true(s_all_zero(&cfg));
    assert_non_null(strstr(err.msg, "/nonexistent/model/config.json"));

    /* a directory named config.json */
    char *dir = testutil_mkdtemp("test_config");
    assert_non_null(dir);
    size_t n = strlen(dir) + 16;
    char *path = malloc(n);
    snprintf(path, n, "%s/config.json", dir);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "mkdir '%s'", path);
    assert_int_equal(system(cmd), 0);
    errno = 0;
    assert_int_equal(config_load(&cfg, dir, &err), -1);
    assert_true(errno != 0);
    testutil_rmtree(dir);
    free(path);
    free(dir);
}

/* One config_load of dir (a testutil_attempt_fn); a failed load leaves the
 * config all zero. */
static int s_try_load(void *ctx, err_t *err)
{
    config_t cfg;
    int rc = config_load(&cfg, ctx, err);
    if (rc < 0)
        assert_true(s_all_zero(&cfg));
    return rc;
}

/* Every allocation of config_load failing in turn: ENOMEM, nothing leaked. */
static void test_load_oom(void **state)
{
    (void)state;
    char *dir = s_fixture_dir("mixtral-A");
    assert_true(testutil_oom_sweep(100, s_try_load, dir) >= 1);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_mixtral),
        cmocka_unit_test(test_fixture_families),
        cmocka_unit_test(test_fixture_every_family_loads),
        cmocka_unit_test(test_fixture_gpt_oss),
        cmocka_unit_test(test_deepseek_accepted),
        cmocka_unit_test(test_refused_values),
        cmocka_unit_test(test_uniform_lists),
        cmocka_unit_test(test_precision_fixtures),
        cmocka_unit_test(test_quantization_config),
        cmocka_unit_test(test_dtype_field),
        cmocka_unit_test(test_dense_layers),
        cmocka_unit_test(test_model_id),
        cmocka_unit_test(test_unknown_model_type),
        cmocka_unit_test(test_architectures_checked),
        cmocka_unit_test(test_required_missing),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_head_dim_default),
        cmocka_unit_test(test_optional_defaults),
        cmocka_unit_test(test_eos_forms),
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_load_oom),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
