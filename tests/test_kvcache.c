/* test_kvcache: sizes, layout and the capacity limit of a sequence's cache,
 * in both modes: keys and values per head, and MLA's latent rows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>

#include <stdio.h>

#include "core/mem.h"
#include "engine/kvcache.h"
#include "engine/latent.h"
#include "kernels/mla.h"

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

/* DeepSeek-V3's attention dimensions: 128 heads, q LoRA 1536, kv LoRA 512,
 * nope 128, rope 64, v 128. */
static const config_t MLA_CFG = {
    .n_layers = 3, .hidden_size = 7168, .n_heads = 128, .n_kv_heads = 128,
    .head_dim = 64, .rope_dim = 64, .attn = CONFIG_ATTN_MLA,
    .q_lora_rank = 1536, .kv_lora_rank = 512,
    .qk_nope_head_dim = 128, .qk_rope_head_dim = 64, .v_head_dim = 128,
};

static void test_latent_mode(void **state)
{
    (void)state;
    err_t err = {0};
    kvcache_t *plain = kvcache_new(&CFG, 5, &err);
    assert_non_null(plain);
    assert_false(kvcache_is_latent(plain));
    assert_int_equal(kvcache_position_bytes(&CFG), 2 * 3 * 16 * sizeof(float));
    assert_int_equal(kvcache_bytes(plain), 5 * kvcache_position_bytes(&CFG));
    kvcache_destroy(&plain);

    kvcache_t *kv = kvcache_new(&MLA_CFG, 7, &err);
    assert_non_null(kv);
    assert_true(kvcache_is_latent(kv));
    /* One row per position and layer, as wide as the kernel's cache row. */
    mla_shape_t shape = latent_shape(&MLA_CFG);
    const int width = mla_cache_width(&shape);
    assert_int_equal(width, 512 + 64);
    assert_int_equal(kvcache_row_width(kv), width);
    assert_int_equal(kvcache_position_bytes(&MLA_CFG), 3 * (size_t)width * sizeof(float));
    assert_int_equal(kvcache_bytes(kv), 7 * kvcache_position_bytes(&MLA_CFG));
    /* What expanded keys and values would take per token per layer. */
    const size_t latent = (size_t)width * sizeof(float);
    const size_t expanded = (size_t)MLA_CFG.n_heads *
                            (MLA_CFG.qk_nope_head_dim + MLA_CFG.qk_rope_head_dim +
                             MLA_CFG.v_head_dim) * sizeof(float);
    printf("  DeepSeek-V3 KV per token per layer: latent %zu bytes, expanded %zu (%.1fx)\n",
           latent, expanded, (double)expanded / latent);
    assert_true(latent * 70 < expanded);
    /* Layers are distinct, non-overlapping blocks of the one allocation. */
    for (int l = 0; l < 3; l++) {
        float *rows = kvcache_latent(kv, l);
        for (int i = 0; i < 7 * width; i++)
            rows[i] = (float)(l * 100000 + i);
    }
    for (int l = 0; l < 3; l++) {
        assert_true(kvcache_latent(kv, l)[0] == (float)(l * 100000));
        assert_true(kvcache_latent(kv, l)[7 * width - 1] == (float)(l * 100000 + 7 * width - 1));
    }
    assert_int_equal(kvcache_advance(kv, 7, &err), 0);
    assert_int_equal(kvcache_advance(kv, 1, &err), -1);
    assert_int_equal(errno, ENOSPC);
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
        cmocka_unit_test(test_latent_mode),
        cmocka_unit_test(test_new_fails_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
