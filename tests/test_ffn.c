/* test_ffn: ffn_swiglu() against a plain float64 reference, out of place and
 * in place over either input, at odd lengths and extreme gate values.
 *
 * silu(g) * u takes a float32 exp and three roundings, so every entry must be
 * within 1e-6 of its own magnitude of the float64 value, or within 1e-30:
 * below g = -88.7 expf(-g) overflows and silu(g) flushes to -0, as it does in
 * torch's float32 silu, where the true value is under 1e-36.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/ffn.h"
#include "tests/testutil.h"

enum { WHERE_NEW, WHERE_GATE, WHERE_UP }; /* where the output goes */

static void s_case(const float *gate, const float *up, size_t n, int where)
{
    float *g = malloc((n ? n : 1) * sizeof *g);
    float *u = malloc((n ? n : 1) * sizeof *u);
    float *h = malloc((n + 1) * sizeof *h);
    assert_true(g && u && h);
    memcpy(g, gate, n * sizeof *g);
    memcpy(u, up, n * sizeof *u);
    h[n] = 42.0f; /* one past the end stays put */
    float *out = where == WHERE_GATE ? g : where == WHERE_UP ? u : h;

    ffn_swiglu(out, g, u, n);

    for (size_t i = 0; i < n; i++) {
        double gi = gate[i];
        double want = gi / (1.0 + exp(-gi)) * (double)up[i];
        if (!(fabs(out[i] - want) <= 1e-6 * fabs(want) + 1e-30))
            fail_msg("entry %zu of %zu: gate %.9g up %.9g: got %.9g want "
                     "%.9g", i, n, gate[i], up[i], out[i], want);
    }
    assert_true(h[n] == 42.0f);
    free(h);
    free(u);
    free(g);
}

static void test_random(void **state)
{
    (void)state;
    static const size_t ns[] = {0, 1, 3, 7, 17, 33, 65, 1025};
    testrng_t rng;
    testrng_init(&rng, 31);
    float gate[1025], up[1025];
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++)
        for (int where = WHERE_NEW; where <= WHERE_UP; where++) {
            testrng_fill(&rng, gate, ns[i], 3.0f);
            testrng_fill(&rng, up, ns[i], 1.0f);
            s_case(gate, up, ns[i], where);
        }
}

/* Saturated gates: silu(g) ~ g for large g, ~ g e^g for very negative g, and
 * exactly -0 once exp(-g) overflows; never NaN. */
static void test_extremes(void **state)
{
    (void)state;
    const float gate[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 20.0f, -20.0f, 88.0f,
                          -88.0f, 89.0f, -89.0f, 100.0f, -100.0f, 1e4f,
                          -1e4f, 3e38f, -3e38f};
    const size_t n = sizeof gate / sizeof gate[0];
    float up[sizeof gate / sizeof gate[0]];
    for (size_t i = 0; i < n; i++)
        up[i] = (i % 2) ? -1.5f : 0.75f;
    s_case(gate, up, n, WHERE_NEW);

    float h[2], g2[2] = {-1e4f, -3e38f}, u2[2] = {2.0f, 2.0f};
    ffn_swiglu(h, g2, u2, 2);
    assert_true(h[0] == 0.0f && h[1] == 0.0f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_extremes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
