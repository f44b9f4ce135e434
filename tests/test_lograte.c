/* test_lograte: a log that a flood of one cause cannot fill. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/lograte.h"

/* Lines written to f so far, each counted when it contains needle (NULL:
 * all). */
static int s_count(FILE *f, const char *needle)
{
    fflush(f);
    rewind(f);
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (!needle || strstr(line, needle))
            n++;
    fseek(f, 0, SEEK_END);
    return n;
}

static void test_burst_then_count(void **state)
{
    (void)state;
    FILE *f = tmpfile();
    assert_non_null(f);
    lograte_t lr;
    lograte_init(&lr, f, "test", 3, 3600);
    int written = 0;
    for (int i = 0; i < 300; i++)
        written += lograte_printf(&lr, "malformed message", "test: malformed message %d", i);
    for (int i = 0; i < 10; i++)
        written += lograte_printf(&lr, "client went away", "test: gone %d", i);
    assert_int_equal(written, 6);
    assert_int_equal(s_count(f, NULL), 6);
    lograte_tick(&lr); /* the windows are still open: nothing more */
    assert_int_equal(s_count(f, NULL), 6);
    lograte_fini(&lr);
    assert_int_equal(s_count(f, NULL), 8);
    assert_int_equal(s_count(f, "test: 297 more in the last"), 1);
    assert_int_equal(s_count(f, "not logged one by one: malformed message"), 1);
    assert_int_equal(s_count(f, "test: 7 more in the last"), 1);
    fclose(f);
}

static void test_window_reopens(void **state)
{
    (void)state;
    FILE *f = tmpfile();
    assert_non_null(f);
    lograte_t lr;
    lograte_init(&lr, f, "test", 1, 0.05);
    assert_int_equal(lograte_printf(&lr, "cause", "line 1"), 1);
    assert_int_equal(lograte_printf(&lr, "cause", "line 2"), 0);
    usleep(80 * 1000);
    lograte_tick(&lr); /* the window closed: the count, a new window */
    assert_int_equal(s_count(f, "test: 1 more in the last"), 1);
    assert_int_equal(lograte_printf(&lr, "cause", "line 3"), 1);
    lograte_fini(&lr);
    assert_int_equal(s_count(f, NULL), 3);
    fclose(f);
}

static void test_quiet_and_many_causes(void **state)
{
    (void)state;
    lograte_t lr;
    lograte_init(&lr, NULL, "test", 1, 10);
    assert_int_equal(lograte_printf(&lr, "a", "x"), 1); /* counted as written, to nowhere */
    assert_int_equal(lograte_printf(&lr, "a", "x"), 0);
    lograte_fini(&lr);
    /* More causes than slots: the last slot is shared, nothing overflows. */
    static const char *causes[] = {"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8",
                                   "c9", "c10", "c11", "c12", "c13", "c14", "c15", "c16",
                                   "c17", "c18", "c19"};
    FILE *f = tmpfile();
    assert_non_null(f);
    lograte_init(&lr, f, "test", 1, 3600);
    for (int i = 0; i < 20; i++)
        lograte_printf(&lr, causes[i], "cause %d", i);
    assert_int_equal(s_count(f, NULL), LOGRATE_MAX_CAUSES);
    lograte_fini(&lr);
    assert_int_equal(s_count(f, "4 more in the last"), 1);
    fclose(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_count),
        cmocka_unit_test(test_window_reopens),
        cmocka_unit_test(test_quiet_and_many_causes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
