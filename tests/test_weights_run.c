/* test_weights_run: moe-run end to end with the weights' format options on
 * the precision fixtures ($MOE_FIXTURES_PRECISION):
 *   - --quantization q8_0 / q4_0: logits finite and close to the model as
 *     stored (mean KL divergence of the next-token distributions small:
 *     tiny random models, so no top-1 agreement is asked), greedy tokens
 *     produced, stderr naming what the weights are held as;
 *   - --dtype float32 of a BF16 checkpoint: the same values widened, so the
 *     same logits to float32 rounding;
 *   - a bad value of either option on every program that takes it: exit 2
 *     with one line naming the option and the choices.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/testutil.h"

enum { PROMPT_LEN = 24 };

/* Measured: q8_0 <= 0.002 but gpt_oss 0.026 (its experts are drawn to reach
 * the SwiGLU clamp, and the int8 kernels quantize the activations too), q4_0
 * <= 0.07. */
static const double KL_Q8_0 = 0.05, KL_Q4_0 = 0.3;

static char s_bin[1024];
static char *s_tmp;

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

/* moe-run's logits of the prompt with extra options into a malloc'd array
 * (*n floats); its stderr into *err_text. */
static float *s_logits(const char *dir, const char *extra, size_t *n, char **err_text)
{
    char prompt[PROMPT_LEN * 8] = "", path[1200], args[4096];
    for (int i = 0, at = 0; i < PROMPT_LEN; i++)
        at += snprintf(prompt + at, sizeof prompt - (size_t)at, "%s%d", i ? "," : "",
                       (i * 37 + 11) % 256);
    snprintf(path, sizeof path, "%s/logits.f32", s_tmp);
    snprintf(args, sizeof args, "--model '%s' --prompt-ids %s --max-tokens 4 --ignore-eos "
             "--threads 2 --dump-logits '%s' %s", dir, prompt, path, extra);
    char *out = NULL;
    int rc = testutil_run_program(NULL, s_bin, args, &out, err_text);
    if (rc != 0)
        fail_msg("moe-run %s: exit %d: %s", args, rc, *err_text ? *err_text : "");
    /* four greedy tokens on the last line */
    int commas = 0;
    for (const char *p = testutil_last_line(out); *p; p++)
        commas += *p == ',';
    assert_int_equal(commas, 3);
    free(out);
    size_t bytes = 0;
    float *logits = (float *)testutil_read_file(path, &bytes);
    assert_non_null(logits);
    *n = bytes / sizeof(float);
    return logits;
}

/* True when moe-run's "weights: ..." line in text holds needle. */
static bool s_weights_line_has(const char *text, const char *needle)
{
    const char *line = strstr(text, "moe-run: weights: ");
    if (!line)
        return false;
    const char *end = strchr(line, '\n'), *at = strstr(line, needle);
    return at && (!end || at < end);
}

/* Mean over rows of KL(p || q), p and q the softmax of a and b (rows of
 * vocab); every value finite. */
static double s_mean_kl(const float *a, const float *b, size_t n, int vocab)
{
    const int rows = (int)(n / (size_t)vocab);
    double total = 0;
    for (int r = 0; r < rows; r++) {
        const float *x = a + (size_t)r * vocab, *y = b + (size_t)r * vocab;
        double mx = -INFINITY, my = -INFINITY, sx = 0, sy = 0, kl = 0;
        for (int i = 0; i < vocab; i++) {
            assert_true(isfinite(x[i]) && isfinite(y[i]));
            mx = fmax(mx, x[i]);
            my = fmax(my, y[i]);
        }
        for (int i = 0; i < vocab; i++) {
            sx += exp(x[i] - mx);
            sy += exp(y[i] - my);
        }
        for (int i = 0; i < vocab; i++) {
            const double lp = x[i] - mx - log(sx), lq = y[i] - my - log(sy);
            kl += exp(lp) * (lp - lq);
        }
        total += kl;
    }
    return total / rows;
}

static void test_quantized_runs_are_close(void **state)
{
    (void)state;
    static const char *const fixtures[] = {"mixtral-bf16-A", "qwen3_moe-bf16-A",
                                           "deepseek_v3-fp8-A", "gpt_oss-mxfp4-A"};
    for (size_t f = 0; f < sizeof fixtures / sizeof *fixtures; f++) {
        char dir[1024];
        s_fixture(fixtures[f], dir, sizeof dir);
        size_t n0, n8, n4;
        char *e0 = NULL, *e8 = NULL, *e4 = NULL;
        float *l0 = s_logits(dir, "", &n0, &e0);
        float *l8 = s_logits(dir, "--quantization q8_0", &n8, &e8);
        float *l4 = s_logits(dir, "--quantization q4_0", &n4, &e4);
        assert_int_equal(n0, n8);
        assert_int_equal(n0, n4);
        const int vocab = (int)(n0 / PROMPT_LEN);
        const double kl8 = s_mean_kl(l0, l8, n0, vocab), kl4 = s_mean_kl(l0, l4, n0, vocab);
        printf("  %s: mean KL q8_0 %.5f (limit %.2f), q4_0 %.5f (limit %.2f)\n", fixtures[f],
               kl8, KL_Q8_0, kl4, KL_Q4_0);
        assert_true(kl8 < KL_Q8_0);
        assert_true(kl4 < KL_Q4_0);
        assert_true(kl8 > 0); /* it did quantize */
        assert_true(kl8 < kl4);
        assert_non_null(strstr(e0, "moe-run: weights: "));
        assert_null(strstr(e0, "q8_0"));
        /* "weights: q8_0+bf16 (q8_0 experts)", "... (q8_0+f8_e4m3 experts)" */
        assert_true(s_weights_line_has(e8, "q8_0"));
        assert_true(s_weights_line_has(e4, "q4_0"));
        free(e0), free(e8), free(e4);
        free(l0), free(l8), free(l4);
    }
}

static void test_dtype_float32_widens_exactly(void **state)
{
    (void)state;
    char dir[1024];
    s_fixture("mixtral-bf16-A", dir, sizeof dir);
    size_t n0, n1;
    char *e0 = NULL, *e1 = NULL;
    float *l0 = s_logits(dir, "", &n0, &e0);
    float *l1 = s_logits(dir, "--dtype float32", &n1, &e1);
    assert_int_equal(n0, n1);
    double max_ref = 0, max_err = 0;
    for (size_t i = 0; i < n0; i++) {
        max_ref = fmax(max_ref, fabs(l1[i]));
        max_err = fmax(max_err, fabs((double)l0[i] - l1[i]));
    }
    printf("  bf16 held vs widened to float32: max |logit diff| %.3g\n", max_err);
    assert_true(max_err <= 1e-5 * max_ref);
    assert_non_null(strstr(e0, "weights: bf16,"));
    assert_non_null(strstr(e1, "weights: f32,"));
    free(e0), free(e1), free(l0), free(l1);
}

static void test_bad_options_are_usage_errors(void **state)
{
    (void)state;
    char dir[1024];
    s_fixture("mixtral-bf16-A", dir, sizeof dir);
    static const testutil_error_case_t run_cases[] = {
        {"--model '%s' --prompt-ids 1 --quantization q5_0", 2,
         "--quantization must be none, q8_0 or q4_0 (got 'q5_0')"},
        {"--model '%s' --prompt-ids 1 --dtype float64", 2,
         "--dtype must be auto, float32, bfloat16 or float16 (got 'float64')"},
        {"--model '%s' --prompt-ids 1 --quantization", 2, "--quantization"},
    };
    testutil_expect_errors(NULL, s_bin, run_cases, sizeof run_cases / sizeof *run_cases, dir);
    static const char *const programs[] = {"moe-expert", "moe-coordinator"};
    for (size_t p = 0; p < sizeof programs / sizeof *programs; p++) {
        char prog[1024];
        testutil_program(programs[p], prog, sizeof prog);
        testutil_expect_error(NULL, prog, "--quantization Q4_0", 2,
                              "--quantization must be none, q8_0 or q4_0 (got 'Q4_0')");
        testutil_expect_error(NULL, prog, "--dtype bf16", 2,
                              "--dtype must be auto, float32, bfloat16 or float16");
    }
}

static int s_setup(void **state)
{
    (void)state;
    s_tmp = testutil_mkdtemp("test_weights_run");
    return s_tmp ? 0 : -1;
}

static int s_teardown(void **state)
{
    (void)state;
    testutil_rmtree(s_tmp);
    free(s_tmp);
    return 0;
}

static void s_find_bin(void **state)
{
    (void)state;
    testutil_program("moe-run", s_bin, sizeof s_bin);
}

static void test_quantized(void **state)
{
    s_find_bin(state);
    test_quantized_runs_are_close(state);
}

static void test_dtype(void **state)
{
    s_find_bin(state);
    test_dtype_float32_widens_exactly(state);
}

static void test_bad_options(void **state)
{
    s_find_bin(state);
    test_bad_options_are_usage_errors(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantized),
        cmocka_unit_test(test_dtype),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
