/* test_arg: command-line integers and the table-driven parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
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
        assert_non_null(strstr(err.msg, "--threads must be an integer >= 0"));
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts_whole_integers_in_range),
        cmocka_unit_test(test_rejects_everything_else),
        cmocka_unit_test(test_states_the_upper_limit),
        cmocka_unit_test(test_table_parses_whole_names_only),
        cmocka_unit_test(test_table_rejects_bad_words),
        cmocka_unit_test(test_table_help_and_operands),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
