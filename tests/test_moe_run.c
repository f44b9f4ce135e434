/* test_moe_run: the moe-run program as a user runs it: the contract forms,
 * the OpenBLAS kernel report, and one clear error with a non-zero exit for
 * each kind of bad input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/idlist.h"
#include "core/mem.h"
#include "tests/fixture.h"
#include "tests/testutil.h"

static char s_fixture[512];
static char s_bin[512];
static char *s_tmp;

static int s_setup(void **state)
{
    snprintf(s_fixture, sizeof s_fixture, "%s/mixtral-A", fixture_root());
    snprintf(s_bin, sizeof s_bin, "%s/moe-run", testutil_env("MOE_BIN", "build/bin"));
    s_tmp = testutil_mkdtemp("test_moe_run");
    *state = s_tmp;
    return s_tmp ? 0 : -1;
}

/* Runs moe-run with args; returns the exit status. */
static int s_run(const char *env, const char *args, char **out, char **errtext)
{
    return testutil_run_program(env, s_bin, args, out, errtext);
}

static void test_greedy_continuation_matches_reference(void **state)
{
    (void)state;
    fixture_t *fx = fixture_load(s_fixture);
    assert_non_null(fx);
    for (int p = 0; p < fx->n_prompts; p++) {
        char *ids = idlist_format(fx->prompts[p].ids, fx->prompts[p].length);
        char *want = idlist_format(fx->prompts[p].greedy, fx->prompts[p].n_greedy);
        char args[2048];
        snprintf(args, sizeof args, "--model '%s' --prompt-ids %s --max-tokens %d --threads %d",
                 s_fixture, ids, fx->prompts[p].n_greedy, 1 + p % 2);
        char *out = NULL;
        assert_int_equal(s_run(NULL, args, &out, NULL), 0);
        assert_string_equal(testutil_last_line(out), want);
        free(out);
        mem_free(ids);
        mem_free(want);
    }
    fixture_destroy(&fx);
}

static void test_dump_logits_layout(void **state)
{
    (void)state;
    fixture_t *fx = fixture_load(s_fixture);
    assert_non_null(fx);
    char path[700], args[2048];
    snprintf(path, sizeof path, "%s/logits.f32", s_tmp);

    /* The contract form: 3 prompt tokens, no generation. */
    snprintf(args, sizeof args, "--model '%s' --prompt-ids 5,17,2 --max-tokens 0 "
             "--dump-logits '%s'", s_fixture, path);
    char *out = NULL;
    assert_int_equal(s_run(NULL, args, &out, NULL), 0);
    assert_string_equal(testutil_last_line(out), "");
    free(out);
    size_t n = 0;
    float *logits = (float *)testutil_read_file(path, &n);
    assert_int_equal(n, 3 * (size_t)fx->vocab * sizeof(float));
    for (size_t i = 0; i < n / sizeof(float); i++)
        assert_true(isfinite(logits[i]));
    free(logits);

    /* A reference prompt: the file equals the reference logits. */
    const fixture_prompt_t *pr = &fx->prompts[1];
    char *ids = idlist_format(pr->ids, pr->length);
    snprintf(args, sizeof args, "--model '%s' --prompt-ids %s --max-tokens 0 "
             "--dump-logits '%s'", s_fixture, ids, path);
    assert_int_equal(s_run(NULL, args, NULL, NULL), 0);
    logits = (float *)testutil_read_file(path, &n);
    assert_int_equal(n, (size_t)pr->length * fx->vocab * sizeof(float));
    double max_ref = 0, max_err = 0;
    for (size_t i = 0; i < n / sizeof(float); i++) {
        max_ref = fmax(max_ref, fabs(pr->logits[i]));
        max_err = fmax(max_err, fabs((double)logits[i] - pr->logits[i]));
    }
    assert_true(max_err <= 1e-4 * max_ref);
    free(logits);
    mem_free(ids);
    fixture_destroy(&fx);
}

/* "moe-run: openblas X kernels, ..." -> X */
static void s_core_of(const char *errtext, char *core, size_t n)
{
    const char *p = strstr(errtext ? errtext : "", "openblas ");
    core[0] = '\0';
    if (p)
        sscanf(p + 9, "%63s", core);
    (void)n;
}

static void test_reports_native_openblas_kernels(void **state)
{
    (void)state;
    char args[1024], native[64], forced[64];
    snprintf(args, sizeof args, "--model '%s' --prompt-ids 1 --max-tokens 1", s_fixture);
    char *e1 = NULL, *e2 = NULL;
    assert_int_equal(s_run("env -u OPENBLAS_CORETYPE", args, NULL, &e1), 0);
    assert_int_equal(s_run("env OPENBLAS_CORETYPE=Prescott", args, NULL, &e2), 0);
    s_core_of(e1, native, sizeof native);
    s_core_of(e2, forced, sizeof forced);
    printf("  native kernels: %s; with OPENBLAS_CORETYPE=Prescott: %s\n", native, forced);
    assert_true(strlen(native) > 0);
    assert_string_equal(native, forced);
    free(e1);
    free(e2);
}

/* Copies the fixture into a folder whose files the test may then break. */
static void s_copy_fixture(const char *dst)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && cp '%s/config.json' "
             "'%s/model.safetensors' '%s/'", dst, dst, s_fixture, s_fixture, dst);
    assert_int_equal(system(cmd), 0);
}

/* moe-run fails with exit status code and one line holding needle. */
static void s_expect_error(const char *args, int code, const char *needle)
{
    testutil_expect_error(NULL, s_bin, args, code, needle);
}

static void test_bad_input_gives_one_clear_error(void **state)
{
    (void)state;
    char args[2048], broken[700];
    static const testutil_error_case_t cases[] = {
        {"--prompt-ids 1,2", 2, "--model and --prompt-ids are required"},
        {"--bogus", 2, "unknown or incomplete option"},
        /* Whole option names only: an abbreviation is not taken. */
        {"--model '%s' --prompt 1,2", 2, "unknown or incomplete option '--prompt'"},
        {"--model '%s' --prompt-ids 1,,2", 2, "--prompt-ids"},
        {"--model '%s' --prompt-ids 1 --max-tokens -3", 2,
         "--max-tokens must be an integer in [0, 2147483647] (got '-3')"},
        /* Every limit is stated. */
        {"--model '%s' --prompt-ids 1 --max-tokens 99999999999999", 2,
         "--max-tokens must be an integer <= 2147483647"},
        {"--model '%s' --prompt-ids 1 --threads 2147483648", 2,
         "--threads must be an integer <= 2147483647"},
        {"--model '%s' --prompt-ids 1,256", 1, "outside the vocabulary"},
        {"--model '%s' --prompt-ids 1 --max-tokens 600", 1, "exceed the model's 512 positions"},
        {"--model '%s/nowhere' --prompt-ids 1", 1, "nowhere"},
    };
    testutil_expect_errors(NULL, s_bin, cases, sizeof cases / sizeof *cases, s_fixture);

    snprintf(broken, sizeof broken, "%s/truncated", s_tmp);
    s_copy_fixture(broken);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "truncate -s 600000 '%s/model.safetensors'", broken);
    assert_int_equal(system(cmd), 0);
    snprintf(args, sizeof args, "--model '%s' --prompt-ids 1", broken);
    s_expect_error(args, 1, "model.safetensors");

    snprintf(broken, sizeof broken, "%s/llama", s_tmp);
    s_copy_fixture(broken);
    snprintf(cmd, sizeof cmd, "sed -i 's/\"model_type\": \"mixtral\"/\"model_type\": \"llama\"/' "
             "'%s/config.json'", broken);
    assert_int_equal(system(cmd), 0);
    snprintf(args, sizeof args, "--model '%s' --prompt-ids 1", broken);
    s_expect_error(args, 1, "llama");

    char *out = NULL;
    assert_int_equal(s_run(NULL, "--help", &out, NULL), 0);
    assert_non_null(strstr(out, "usage: moe-run"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_continuation_matches_reference),
        cmocka_unit_test(test_dump_logits_layout),
        cmocka_unit_test(test_reports_native_openblas_kernels),
        cmocka_unit_test(test_bad_input_gives_one_clear_error),
    };
    return cmocka_run_group_tests(tests, s_setup, testutil_tmpdir_teardown);
}
