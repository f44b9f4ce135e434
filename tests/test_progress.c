/* test_progress: quick work prints nothing; work over a second prints whole
 * lines with bytes, MB/s and the time left, and a final line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/progress.h"

/* What progress printed into f, from the start (malloc'd). */
static char *s_text(FILE *f)
{
    long n = ftell(f);
    assert_true(n >= 0);
    char *text = calloc(1, (size_t)n + 1);
    assert_non_null(text);
    rewind(f);
    assert_int_equal(fread(text, 1, (size_t)n, f), (size_t)n);
    return text;
}

static void test_quick_work_is_quiet(void **state)
{
    (void)state;
    FILE *f = tmpfile();
    assert_non_null(f);
    progress_t p;
    progress_init(&p, f, "prog", "reading weights", 100 << 20);
    for (int i = 0; i < 100; i++)
        progress_add(&p, 1 << 20);
    progress_fini(&p);
    assert_int_equal(ftell(f), 0);
    assert_true(p.done == (uint64_t)100 << 20);
    fclose(f);
}

static void test_slow_work_reports(void **state)
{
    (void)state;
    FILE *f = tmpfile();
    assert_non_null(f);
    progress_t p;
    progress_init(&p, f, "prog", "writing weights", 40000000);
    progress_add(&p, 10000000);
    usleep((useconds_t)(PROGRESS_QUIET_S * 1e6) + 100000);
    progress_add(&p, 10000000);   /* past the quiet second: a line */
    progress_add(&p, 10000000);   /* within PROGRESS_EVERY_S of it: none */
    progress_fini(&p);
    char *text = s_text(f);
    printf("%s", text);
    assert_non_null(strstr(text, "prog: writing weights: 20.0 of 40.0 MB (50%), "));
    assert_non_null(strstr(text, " MB/s, "));
    assert_non_null(strstr(text, " s left\n"));
    assert_non_null(strstr(text, "prog: writing weights: 30.0 MB in "));
    int lines = 0;
    for (const char *c = text; *c; c++)
        lines += *c == '\n';
    assert_int_equal(lines, 2);
    assert_null(strchr(text, '\r'));
    free(text);
    fclose(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quick_work_is_quiet),
        cmocka_unit_test(test_slow_work_reports),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
