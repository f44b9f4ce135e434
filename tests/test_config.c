/* test_config: config_load() on the reference fixtures and config_parse() on
 * variants of the Mixtral fixture built with jansson: every required field
 * missing or of the wrong type, unsupported architectures and RoPE types,
 * defaults, eos forms, range checks, bad JSON, and out-of-memory.
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
#include <jansson.h>

#include "core/mem.h"
#include "model/config.h"
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

/* The mixtral-A config.json as a jansson object (caller decrefs). */
static json_t *s_mixtral_json(void)
{
    char *dir = s_fixture_dir("mixtral-A");
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

/* config_parse() of a JSON value; returns its result, cfg and err filled. */
static int s_parse_json(const json_t *root, config_t *cfg, err_t *err)
{
    char *text = json_dumps(root, 0);
    assert_non_null(text);
    err_clear(err);
    errno = 0;
    int rc = config_parse(cfg, text, strlen(text), "variant.json", err);
    free(text);
    return rc;
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

/* Every other fixture is a real architecture we do not support yet. */
static void test_fixture_unsupported(void **state)
{
    (void)state;
    static const char *const names[][2] = {
        {"qwen2_moe-A", "qwen2_moe"},
        {"qwen3_moe-A", "qwen3_moe"},
        {"olmoe-A", "olmoe"},
        {"deepseek_v3-A", "deepseek_v3"},
        {"deepseek_v2-A", "deepseek_v2"},
        {"hunyuan_v1_moe-A", "hunyuan_v1_moe"},
        {"gpt_oss-A", "gpt_oss"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *dir = s_fixture_dir(names[i][0]);
        config_t cfg;
        memset(&cfg, 0x5a, sizeof cfg);
        err_t err = {0};
        errno = 0;
        assert_int_equal(config_load(&cfg, dir, &err), -1);
        assert_int_equal(errno, EINVAL);
        assert_true(s_all_zero(&cfg));
        char want[64];
        snprintf(want, sizeof want, "unsupported architecture '%s'",
                 names[i][1]);
        if (!strstr(err.msg, want) || !strstr(err.msg, "config.json") ||
            !strstr(err.msg, "supported: mixtral"))
            fail_msg("%s: message '%s'", names[i][0], err.msg);
        free(dir);
    }
}

static void test_unknown_model_type(void **state)
{
    (void)state;
    json_t *root = s_mixtral_json();
    json_object_set_new(root, "model_type", json_string("llama"));
    s_expect_einval(root, "unsupported architecture 'llama'", "variant.json");
    json_object_set_new(root, "model_type", json_string("deepseek_v3"));
    s_expect_einval(root, "'deepseek_v3'", "supported: mixtral");
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

/* Every allocation of config_load failing in turn: ENOMEM, nothing leaked. */
static void test_load_oom(void **state)
{
    (void)state;
    char *dir = s_fixture_dir("mixtral-A");
    int failures = 0;
    for (long k = 1; k < 100; k++) {
        config_t cfg;
        err_t err = {0};
        mem_fail_after(k);
        errno = 0;
        int rc = config_load(&cfg, dir, &err);
        int e = errno;
        mem_fail_after(-1);
        if (rc == 0)
            break;
        assert_int_equal(e, ENOMEM);
        assert_true(s_all_zero(&cfg));
        failures++;
    }
    assert_true(failures >= 1);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_mixtral),
        cmocka_unit_test(test_fixture_unsupported),
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
