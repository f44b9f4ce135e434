/* test_arg: command-line integers. */
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
}

static void test_rejects_everything_else(void **state)
{
    (void)state;
    const char *bad[] = {"", "x", "1x", "1.5", "-1", "2147483648", "99999999999999999999", " "};
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts_whole_integers_in_range),
        cmocka_unit_test(test_rejects_everything_else),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
