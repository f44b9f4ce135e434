/* test_blas: which OpenBLAS kernel family a program asks for when OpenBLAS's
 * own detection fell back to generic kernels (core/blas.h). The re-execution
 * itself is tested through moe-run (tests/test_moe_run.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdbool.h>

#include "core/blas.h"

static void test_generic_cores_are_upgraded(void **state)
{
    (void)state;
    assert_string_equal(blas_core_upgrade("Prescott", true, true), "SkylakeX");
    assert_string_equal(blas_core_upgrade("Prescott", false, true), "Haswell");
    assert_string_equal(blas_core_upgrade("Nehalem", false, true), "Haswell");
    assert_string_equal(blas_core_upgrade("Sandybridge", true, true), "SkylakeX");
    assert_string_equal(blas_core_upgrade("Unknown", true, true), "SkylakeX");
}

static void test_known_cores_are_kept(void **state)
{
    (void)state;
    static const char *const kept[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake",
                                       "SapphireRapids", ""};
    for (size_t i = 0; i < sizeof kept / sizeof *kept; i++)
        assert_null(blas_core_upgrade(kept[i], true, true));
    assert_null(blas_core_upgrade(NULL, true, true));
    /* A CPU without AVX2 keeps whatever OpenBLAS chose. */
    assert_null(blas_core_upgrade("Prescott", false, false));
    assert_null(blas_core_upgrade("Prescott", true, false));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generic_cores_are_upgraded),
        cmocka_unit_test(test_known_cores_are_kept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
