/* test_kvcache: sizes, layout and the capacity limit of a sequence's cache. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>

#include "core/mem.h"
#include "engine/kvcache.h"

static const config_t CFG = {.n_layers = 3, .n_kv_heads = 2, .head_dim = 8};

static void test_layout_and_capacity(void **state)
{
    (void)state;
    err_t err = {0};
    kvcache_t *kv = kvcache_new(&CFG, 5, &err);
    assert_non_null(kv);
    assert_int_equal(kvcache_row_width(kv), 16);
    assert_int_equal(kvcache_capacity(kv), 5);
    assert_int_equal(kvcache_bytes(kv), 2 * 3 * 5 * 16 * sizeof(float));
    /* Every layer's keys and values are distinct, non-overlapping blocks. */
    for (int l = 0; l < 3; l++) {
        float *k = kvcache_keys(kv, l), *v = kvcache_values(kv, l);
        for (int i = 0; i < 5 * 16; i++)
            k[i] = (float)(l * 1000 + i), v[i] = (float)(-l * 1000 - i - 1);
    }
    for (int l = 0; l < 3; l++)
        assert_true(kvcache_keys(kv, l)[79] == (float)(l * 1000 + 79));
    assert_int_equal(kvcache_advance(kv, 3, &err), 0);
    assert_int_equal(kvcache_advance(kv, 3, &err), -1);
    assert_int_equal(errno, ENOSPC);
    assert_int_equal(kvcache_len(kv), 3);
    assert_int_equal(kvcache_advance(kv, 2, &err), 0);
    kvcache_truncate(kv, 1);
    assert_int_equal(kvcache_len(kv), 1);
    kvcache_truncate(kv, 4); /* never grows */
    assert_int_equal(kvcache_len(kv), 1);
    kvcache_destroy(&kv);
    assert_null(kv);
    kvcache_destroy(&kv);
}

static void test_new_fails_cleanly(void **state)
{
    (void)state;
    err_t err = {0};
    assert_null(kvcache_new(&CFG, 0, &err));
    assert_int_equal(errno, EINVAL);
    for (long n = 1; n <= 2; n++) {
        mem_fail_after(n);
        assert_null(kvcache_new(&CFG, 5, &err));
        assert_int_equal(errno, ENOMEM);
        mem_fail_after(-1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout_and_capacity),
        cmocka_unit_test(test_new_fails_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
