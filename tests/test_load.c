/* test_load: the moving averages of coordinator/load against closed forms:
 * a steady rate reads back as that rate, an old burst fades by half per
 * half-life, the young tracker is not under-counted, the rescaling of the
 * stored values after many half-lives changes nothing, bad input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>

#include "coordinator/load.h"
#include "core/mem.h"
#include "tests/testutil.h"

/* A steady 50 rows/s on route 1 (10 per 0.2 s) and a node busy 0.25 s per
 * second read back as 50 rows/s and 0.25, early (the young tracker's
 * correction) and after many half-lives (past the rescaling). */
static void test_steady_rate(void **state)
{
    (void)state;
    err_t err = {0};
    load_t *l = load_new(4, 2, 2.0, 100.0, &err);
    assert_non_null(l);
    double rate[4];
    double t = 100.0;
    for (int i = 1; i <= 5 * 200; i++) { /* 200 s: 100 half-lives, rescaled on the way */
        t = 100.0 + i * 0.2;
        load_add_rows(l, 1, 10, t);
        load_add_busy(l, 0, 0.05, t);
        if (i == 5) { /* 1 s: half a half-life; read between two events */
            load_route_rates(l, t + 0.1, rate);
            assert_true(fabs(rate[1] - 50) < 0.1 * 50);
        }
    }
    /* Between two events the discrete sum is within 0.1% of the rate. */
    load_route_rates(l, t + 0.1, rate);
    assert_true(fabs(rate[1] - 50) < 0.01 * 50);
    assert_true(rate[0] == 0 && rate[2] == 0 && rate[3] == 0);
    assert_true(fabs(load_busy_ratio(l, 0, t + 0.1) - 0.25) < 0.01 * 0.25);
    assert_true(load_busy_ratio(l, 1, t + 0.1) == 0);
    assert_true(fabs(load_busy_total(l, 0) - 50.0) < 1e-6);
    assert_true(load_half_life(l) == 2.0);
    load_destroy(&l);
    assert_null(l);
    load_destroy(&l);
}

/* After a burst, the rate halves with every half-life that passes. */
static void test_decay(void **state)
{
    (void)state;
    err_t err = {0};
    load_t *l = load_new(2, 1, 5.0, 0.0, &err);
    assert_non_null(l);
    for (int i = 0; i < 100; i++)       /* 20 s of 10 rows/s on route 0 */
        load_add_rows(l, 0, 1, i * 0.2 + 0.2);
    double r0[2], r1[2], r2[2];
    load_route_rates(l, 20.0, r0);
    load_route_rates(l, 25.0, r1);
    load_route_rates(l, 30.0, r2);
    /* The young-tracker factor changes a little between the reads; take it
     * out: (1 - 2^(-age/H)) at 20, 25 and 30 s. */
    const double c0 = 1 - exp2(-4.0), c1 = 1 - exp2(-5.0), c2 = 1 - exp2(-6.0);
    assert_true(fabs(r1[0] * c1 / (r0[0] * c0) - 0.5) < 1e-9);
    assert_true(fabs(r2[0] * c2 / (r0[0] * c0) - 0.25) < 1e-9);
    assert_true(r0[1] == 0);
    load_destroy(&l);
}

/* Indices out of range are ignored; a bad half-life is EINVAL. */
static void test_bad_input(void **state)
{
    (void)state;
    err_t err = {0};
    assert_null(load_new(4, 2, 0.0, 0.0, &err));
    assert_int_equal(errno, EINVAL);
    assert_null(load_new(4, 2, NAN, 0.0, &err));
    assert_null(load_new(4, 2, -1.0, 0.0, &err));
    load_t *l = load_new(4, 2, 1.0, 0.0, &err);
    assert_non_null(l);
    load_add_rows(l, -1, 5, 1.0);
    load_add_rows(l, 4, 5, 1.0);
    load_add_busy(l, 2, 5, 1.0);
    load_add_busy(l, -1, 5, 1.0);
    double rate[4];
    load_route_rates(l, 1.0, rate);
    for (int i = 0; i < 4; i++)
        assert_true(rate[i] == 0);
    assert_true(load_busy_ratio(l, 0, 1.0) == 0 && load_busy_ratio(l, 7, 1.0) == 0);
    assert_true(load_busy_total(l, 7) == 0);
    load_destroy(&l);
}

static int s_attempt(void *ctx, err_t *err)
{
    (void)ctx;
    load_t *l = load_new(64, 8, 1.0, 0.0, err);
    if (!l)
        return -1;
    load_destroy(&l);
    return 0;
}

/* Every allocation failing in turn: NULL with ENOMEM, nothing leaked. */
static void test_out_of_memory(void **state)
{
    (void)state;
    assert_true(testutil_oom_sweep(16, s_attempt, NULL) >= 4); /* 4 allocations */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_steady_rate),
        cmocka_unit_test(test_decay),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
