/* test_latent: MLA's shape from a config (the deepseek fixtures' and a
 * DeepSeek-V3-like YaRN one), the softmax scale with YaRN's mscale^2 as
 * transformers' DeepseekV3Attention sets it (computed here in float64), and
 * the constructor's failures. The attention itself is checked by test_mla
 * (against a float64 unabsorbed reference) and end to end by test_fixtures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>

#include "core/mem.h"
#include "engine/latent.h"
#include "tests/testutil.h"

static config_t s_load(const char *name)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", testutil_env("MOE_FIXTURES", "../shared/fixtures"),
             name);
    config_t cfg;
    err_t err = {0};
    if (config_load(&cfg, dir, &err) != 0)
        fail_msg("%s: %s", name, err.msg);
    return cfg;
}

static void test_shape_of_the_fixtures(void **state)
{
    (void)state;
    config_t v3 = s_load("deepseek_v3-A"), v2 = s_load("deepseek_v2-A");
    assert_true(latent_applies(&v3) && latent_applies(&v2));
    config_t mixtral = s_load("mixtral-A");
    assert_false(latent_applies(&mixtral));
    mla_shape_t s = latent_shape(&v3);
    assert_int_equal(s.hidden, 64);
    assert_int_equal(s.n_heads, 4);
    assert_int_equal(s.q_lora_rank, 32);
    assert_int_equal(s.kv_lora_rank, 24);
    assert_int_equal(s.qk_nope_head_dim, 16);
    assert_int_equal(s.qk_rope_head_dim, 8);
    assert_int_equal(s.v_head_dim, 16);
    assert_true(s.rope_interleaved);
    assert_true(s.eps == v3.rms_norm_eps);
    assert_true(fabs(s.scale - 1.0 / sqrt(24.0)) <= 1e-7);
    assert_int_equal(mla_cache_width(&s), 32);
    s = latent_shape(&v2);
    assert_int_equal(s.q_lora_rank, 0);
    assert_true(s.rope_interleaved); /* V2 always rotates pairs */
}

static void test_yarn_scale(void **state)
{
    (void)state;
    config_t c = s_load("deepseek_v3-A");
    c.rope_type = CONFIG_ROPE_YARN;
    c.rope_factor = 40;
    c.rope_orig_max_pos = 4096;
    c.rope_beta_fast = 32, c.rope_beta_slow = 1;
    c.rope_mscale = 1, c.rope_mscale_all_dim = 1;
    c.rope_truncate = true;
    const double base = 1.0 / sqrt(24.0), m = 0.1 * log(40.0) + 1.0;
    mla_shape_t s = latent_shape(&c);
    printf("  yarn factor 40, mscale_all_dim 1: scale %.7g = %.7g x %.6g\n", s.scale, base,
           m * m);
    assert_true(fabs(s.scale - base * m * m) <= 1e-6 * base * m * m);
    c.rope_mscale_all_dim = 0.707; /* DeepSeek-V2's value */
    const double m2 = 0.1 * 0.707 * log(40.0) + 1.0;
    assert_true(fabs(latent_shape(&c).scale - base * m2 * m2) <= 1e-6 * base * m2 * m2);
    c.rope_mscale_all_dim = 0; /* absent: no change */
    assert_true(fabs(latent_shape(&c).scale - base) <= 1e-7);
    c.rope_mscale_all_dim = 1, c.rope_factor = 1; /* factor 1: mscale 1 */
    assert_true(fabs(latent_shape(&c).scale - base) <= 1e-7);
    c.rope_factor = 40;
    err_t err = {0};
    compute_t *cx = compute_new(1, NULL);
    assert_non_null(cx);
    latent_t *lat = latent_new(&c, 4, 16, cx, &err); /* the YaRN rope builds */
    if (!lat)
        fail_msg("%s", err.msg);
    latent_destroy(&lat);
    assert_null(lat);
    latent_destroy(&lat);
    latent_destroy(NULL);
    compute_destroy(&cx);
}

static void test_new_fails_cleanly(void **state)
{
    (void)state;
    err_t err = {0};
    compute_t *cx = compute_new(1, NULL);
    assert_non_null(cx);
    config_t mixtral = s_load("mixtral-A");
    assert_null(latent_new(&mixtral, 4, 16, cx, &err));
    assert_int_equal(errno, EINVAL);
    config_t v3 = s_load("deepseek_v3-A");
    assert_null(latent_new(&v3, 0, 16, cx, &err));
    assert_int_equal(errno, EINVAL);
    /* More rows than positions: one call never needs more than max_ctx. */
    latent_t *lat = latent_new(&v3, 64, 8, cx, &err);
    assert_non_null(lat);
    latent_destroy(&lat);
    int failures = 0;
    for (long n = 1; n < 100; n++) {
        mem_fail_after(n);
        lat = latent_new(&v3, 4, 16, cx, &err);
        int saved = errno;
        mem_fail_after(-1);
        if (lat) {
            latent_destroy(&lat);
            break;
        }
        assert_int_equal(saved, ENOMEM);
        failures++;
    }
    assert_true(failures >= 3);
    compute_destroy(&cx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shape_of_the_fixtures),
        cmocka_unit_test(test_yarn_scale),
        cmocka_unit_test(test_new_fails_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
