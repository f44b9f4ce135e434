/* test_arg: command-line integers and the table-driven parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/arg.h"

static void test_accepts_whole_integers_in_range(void **state)
{
    (void)state;
    int v = -1;
    err_t err = {0};
    assert_int_equal(arg_int("0", "--n", 0, &v, &err), 0);
    assert_int_equal(v, 0);
    assert_int_equal(arg_int("2147483647", "--n", 1, &v, &err), 0);
    assert_int_equal(v, 2147483647);
    assert_int_equal(arg_int_range("7", "--n", 1, 7, &v, &err), 0);
    assert_int_equal(v, 7);
}

static void test_rejects_everything_else(void **state)
{
    (void)state;
    const char *bad[] = {"", "x", "1x", "1.5", "-1", " ", " 5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int v = 7;
        err_t err = {0};
        assert_int_equal(arg_int(bad[i], "--threads", 0, &v, &err), -1);
        assert_int_equal(errno, EINVAL);
        assert_int_equal(v, 7);
        assert_non_null(strstr(err.msg, "--threads must be an integer in [0, 2147483647]"));
    }
    int v = 0;
    assert_int_equal(arg_int("0", "--threads", 1, &v, NULL), -1); /* below min, no err */
}

/* Out of range above: the message states the limit. */
static void test_states_the_upper_limit(void **state)
{
    (void)state;
    int v = 3;
    err_t err = {0};
    assert_int_equal(arg_int("2147483648", "--n", 0, &v, &err), -1);
    assert_non_null(strstr(err.msg, "--n must be an integer <= 2147483647 (got '2147483648')"));
    assert_int_equal(arg_int("99999999999999999999", "--n", 0, &v, &err), -1);
    assert_non_null(strstr(err.msg, "<= 2147483647"));
    assert_int_equal(arg_int_range("9", "--k", 1, 8, &v, &err), -1);
    assert_non_null(strstr(err.msg, "--k must be an integer <= 8 (got '9')"));
    assert_int_equal(arg_int_range("x", "--k", 1, 8, &v, &err), -1);
    assert_non_null(strstr(err.msg, "--k must be an integer in [1, 8] (got 'x')"));
    assert_int_equal(v, 3);
}

typedef struct sample {
    const char *prompt, *prompt_ids, *names[3];
    int n_names, count;
    bool json;
    int even;
} sample_t;

static int s_even(const char *text, const char *name, void *dest, err_t *err)
{
    int v;
    if (arg_int(text, name, 0, &v, err) < 0)
        return -1;
    if (v % 2)
        return err_set(err, EINVAL, "%s must be even (got %d)", name, v);
    *(int *)dest = v;
    return 0;
}

/* Parses words (argv[0] is the program) into *s; returns arg_parse's result. */
static int s_parse(sample_t *s, int flags, int *next, err_t *err, int argc, char **argv)
{
    const arg_opt_t more[] = {
        ARG_OPT_PARSE("--even", &s->even, s_even),
        ARG_OPT_END,
    };
    const arg_opt_t table[] = {
        ARG_OPT_STRING("--prompt", &s->prompt),
        ARG_OPT_STRING("--prompt-ids", &s->prompt_ids),
        ARG_OPT_STRINGS("--name", s->names, 3, &s->n_names),
        ARG_OPT_INT("--count", &s->count, 1, 10),
        ARG_OPT_FLAG("--json", &s->json),
        ARG_OPT_HELP("--help"), ARG_OPT_HELP("-h"),
        ARG_OPT_TABLE(more),
        ARG_OPT_END,
    };
    *s = (sample_t){.count = 5};
    return arg_parse(argc, argv, 1, table, flags, next, err);
}

#define PARSE(s, flags, next, err, ...)                                               \
    s_parse(s, flags, next, err, (int)(sizeof((char *[]){"prog", __VA_ARGS__}) /      \
                                       sizeof(char *)), (char *[]){"prog", __VA_ARGS__})

static void test_table_parses_whole_names_only(void **state)
{
    (void)state;
    sample_t s;
    err_t err = {0};
    int next = 0;
    assert_int_equal(PARSE(&s, 0, &next, &err, "--prompt", "hi", "--prompt-ids=1,2",
                           "--name", "a", "--name=b", "--json", "--count", "10", "--even",
                           "4"), 0);
    assert_string_equal(s.prompt, "hi");
    assert_string_equal(s.prompt_ids, "1,2");
    assert_int_equal(s.n_names, 2);
    assert_string_equal(s.names[1], "b");
    assert_true(s.json);
    assert_int_equal(s.count, 10);
    assert_int_equal(s.even, 4);
    assert_int_equal(next, 12);
    /* No prefix matching: getopt_long would have taken these. */
    assert_int_equal(PARSE(&s, 0, NULL, &err, "--prom", "hi"), -1);
    assert_string_equal(err.msg, "unknown or incomplete option '--prom'");
    assert_int_equal(PARSE(&s, 0, NULL, &err, "--js"), -1);
    assert_int_equal(PARSE(&s, 0, NULL, &err, "--prompt"), -1);
    assert_non_null(strstr(err.msg, "'--prompt': it needs a value"));
}

static void test_table_rejects_bad_words(void **state)
{
    (void)state;
    sample_t s;
    err_t err = {0};
    assert_int_equal(PARSE(&s, 0, NULL, &err, "--count", "11"), -1);
    assert_string_equal(err.msg, "--count must be an integer <= 10 (got '11')");
    assert_int_equal(PARSE(&s, 0, NULL, &err, "--even", "3"), -1);
    assert_string_equal(err.msg, "--even must be even (got 3)");
    assert_int_equal(PARSE(&s, 0, NULL, &err, "--json=1"), -1);
    assert_non_null(strstr(err.msg, "--json takes no value"));
    assert_int_equal(PARSE(&s, 0, NULL, &err, "--name", "a", "--name", "b", "--name", "c",
                           "--name", "d"), -1);
    assert_string_equal(err.msg, "--name may be given at most 3 times");
    /* An operand is reported after every option was checked, as getopt did. */
    assert_int_equal(PARSE(&s, 0, NULL, &err, "extra", "--json"), -1);
    assert_string_equal(err.msg, "unexpected argument 'extra'");
    assert_int_equal(PARSE(&s, 0, NULL, &err, "--", "--json"), -1);
    assert_string_equal(err.msg, "unexpected argument '--json'");
}

static void test_table_help_and_operands(void **state)
{
    (void)state;
    sample_t s;
    err_t err = {0};
    int next = 0;
    assert_int_equal(PARSE(&s, 0, NULL, &err, "--json", "-h", "--bogus"), ARG_HELP_ASKED);
    assert_int_equal(PARSE(&s, 0, NULL, &err, "--help"), ARG_HELP_ASKED);
    assert_int_equal(PARSE(&s, ARG_STOP_AT_OPERAND, &next, &err, "--json", "status", "--x"),
                     0);
    assert_int_equal(next, 2);
    assert_true(s.json);
    assert_int_equal(PARSE(&s, ARG_STOP_AT_OPERAND, &next, &err, "--json"), 0);
    assert_int_equal(next, 2);
}

static void test_u64_and_float(void **state)
{
    (void)state;
    uint64_t u = 9;
    float f = 9;
    err_t err = {0};
    assert_int_equal(arg_u64("18446744073709551615", "--seed", &u, &err), 0);
    assert_true(u == UINT64_MAX);
    assert_int_equal(arg_u64("-1", "--seed", &u, &err), -1);
    assert_string_equal(err.msg, "--seed must be an integer in [0, 18446744073709551615] (got '-1')");
    assert_int_equal(arg_u64("18446744073709551616", "--seed", &u, &err), -1);
    assert_true(u == UINT64_MAX);
    assert_int_equal(arg_float("0.5", "--top-p", 0, 1, &f, &err), 0);
    assert_true(f == 0.5f);
    const char *bad[] = {"1.5", "nan", "inf", "x", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(arg_float(bad[i], "--top-p", 0, 1, &f, &err), -1);
        assert_non_null(strstr(err.msg, "--top-p must be a number in [0, 1]"));
    }
    assert_true(f == 0.5f);
}

static int s_checks;
static int s_check_count(void *ctx, err_t *err)
{
    s_checks++;
    return *(int *)ctx ? 0 : err_set(err, EINVAL, "--count is required");
}

static void s_no_usage(FILE *out)
{
    (void)out;
    fail_msg("usage printed");
}

/* The program-level parse: the check runs after a good parse only. */
static void test_parse_main_checks(void **state)
{
    (void)state;
    int count = 0;
    const arg_opt_t table[] = {ARG_OPT_INT("--count", &count, 1, 0), ARG_OPT_END};
    char *ok[] = {"prog", "--count", "3"}, *missing[] = {"prog"}, *bad[] = {"prog", "--x"};
    s_checks = 0;
    assert_int_equal(arg_parse_main("prog", 3, ok, table, s_no_usage, s_check_count, &count),
                     0);
    assert_int_equal(count, 3);
    count = 0;
    assert_int_equal(arg_parse_main("prog", 1, missing, table, s_no_usage, s_check_count,
                                    &count), -1);
    assert_int_equal(arg_parse_main("prog", 2, bad, table, s_no_usage, s_check_count,
                                    &count), -1);
    assert_int_equal(s_checks, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts_whole_integers_in_range),
        cmocka_unit_test(test_rejects_everything_else),
        cmocka_unit_test(test_states_the_upper_limit),
        cmocka_unit_test(test_table_parses_whole_names_only),
        cmocka_unit_test(test_table_rejects_bad_words),
        cmocka_unit_test(test_table_help_and_operands),
        cmocka_unit_test(test_u64_and_float),
        cmocka_unit_test(test_parse_main_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
