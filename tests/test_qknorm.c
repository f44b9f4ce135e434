/* test_qknorm: each q/k norm kind acts at its own stage only, per head or
 * over the whole projection, against a float64 RMSNorm oracle. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "engine/qknorm.h"
#include "tests/testutil.h"

enum { HEADS = 4, KV_HEADS = 2, HD = 6, ROWS = 3, QW = HEADS * HD, KW = KV_HEADS * HD };
static const float EPS = 1e-5f;

/* x (n_rows, dim) normalised row by row with weight w, in float64. */
static void s_rms(const float *x, const float *w, int n_rows, int dim, double *y)
{
    for (int r = 0; r < n_rows; r++) {
        double ss = 0;
        for (int i = 0; i < dim; i++)
            ss += (double)x[r * dim + i] * x[r * dim + i];
        double inv = 1 / sqrt(ss / dim + EPS);
        for (int i = 0; i < dim; i++)
            y[r * dim + i] = w[i] * (x[r * dim + i] * inv);
    }
}

static void s_check(config_qk_norm_t kind)
{
    testrng_t rng;
    testrng_init(&rng, 11 + (uint64_t)kind);
    config_t cfg = {.n_heads = HEADS, .n_kv_heads = KV_HEADS, .head_dim = HD,
                    .rms_norm_eps = EPS, .qk_norm = kind};
    float qn[QW], kn[KW], q0[ROWS * QW], k0[ROWS * KW], q[ROWS * QW], k[ROWS * KW];
    testrng_fill(&rng, qn, QW, 1.0f);
    testrng_fill(&rng, kn, KW, 1.0f);
    testrng_fill(&rng, q0, ROWS * QW, 2.0f);
    testrng_fill(&rng, k0, ROWS * KW, 2.0f);
    layer_weights_t lw = {.q_norm = qn, .k_norm = kn};
    const bool full = kind == CONFIG_QK_NORM_FULL;
    const qknorm_stage_t active =
        kind == CONFIG_QK_NORM_HEAD_POST ? QKNORM_AFTER_ROPE : QKNORM_BEFORE_ROPE;
    for (int st = QKNORM_BEFORE_ROPE; st <= QKNORM_AFTER_ROPE; st++) {
        memcpy(q, q0, sizeof q);
        memcpy(k, k0, sizeof k);
        qknorm_apply(&cfg, (qknorm_stage_t)st, &lw, q, k, ROWS);
        if (kind == CONFIG_QK_NORM_NONE || st != (int)active) {
            assert_memory_equal(q, q0, sizeof q);
            assert_memory_equal(k, k0, sizeof k);
            continue;
        }
        double wq[ROWS * QW], wk[ROWS * KW];
        if (full) {
            s_rms(q0, qn, ROWS, QW, wq);
            s_rms(k0, kn, ROWS, KW, wk);
        } else {
            s_rms(q0, qn, ROWS * HEADS, HD, wq);
            s_rms(k0, kn, ROWS * KV_HEADS, HD, wk);
        }
        assert_true(testutil_max_abs_diff(q, wq, ROWS * QW) <= 1e-5);
        assert_true(testutil_max_abs_diff(k, wk, ROWS * KW) <= 1e-5);
    }
}

static void test_kinds(void **state)
{
    (void)state;
    s_check(CONFIG_QK_NORM_NONE);
    s_check(CONFIG_QK_NORM_HEAD);
    s_check(CONFIG_QK_NORM_FULL);
    s_check(CONFIG_QK_NORM_HEAD_POST);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kinds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
