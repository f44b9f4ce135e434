/* test_idlist: the text form of token id lists. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "core/idlist.h"
#include "core/mem.h"

static void test_parse_and_format(void **state)
{
    (void)state;
    int32_t *ids;
    int n;
    err_t err = {0};
    assert_int_equal(idlist_parse("5,17,2", &ids, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ids[1], 17);
    char *s = idlist_format(ids, n);
    assert_string_equal(s, "5,17,2");
    mem_free(s);
    mem_free(ids);
    assert_int_equal(idlist_parse(" 0 , 2147483647", &ids, &n, &err), 0);
    assert_int_equal(ids[1], 2147483647);
    mem_free(ids);
    s = idlist_format(NULL, 0);
    assert_string_equal(s, "");
    mem_free(s);
}

static void test_rejects_malformed(void **state)
{
    (void)state;
    const char *bad[] = {"", ",", "1,", ",1", "1,,2", "a", "1;2", "-1", "1.5",
                         "2147483648", "99999999999999999999", "1 2", "+3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int32_t *ids = (int32_t *)&ids;
        int n = 7;
        err_t err = {0};
        assert_int_equal(idlist_parse(bad[i], &ids, &n, &err), -1);
        assert_int_equal(errno, EINVAL);
        assert_null(ids);
        assert_int_equal(n, 0);
        assert_true(strlen(err.msg) > 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_format),
        cmocka_unit_test(test_rejects_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
