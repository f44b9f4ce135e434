/* test_quant: ggml's Q8_0 / Q4_0 reference quantizers (core/quant.h).
 *
 *   - fp16: quant_f32_to_f16 against x86's F16C conversion (round to nearest
 *     even) over a dense sweep of float32, and quant_f16_to_f32 over every
 *     half;
 *   - known inputs -> known bytes, worked out by hand from ggml's algorithm
 *     (ties of roundf, truncation of Q4_0, all zeros, a single huge value, a
 *     negative max, subnormal blocks, NaN and infinity as quant.h documents);
 *   - random rows against ../shared/peers/mkgguf.py, the numpy version of the
 *     same reference quantizers (Debian's python3-numpy, which
 *     setup/install-deps.sh installs: its absence is a failure, not a skip).
 *     numpy's np.round rounds ties to even where ggml's roundf rounds them
 *     away from zero, so a Q8_0 byte may differ there, and only there: the
 *     test checks that each difference is such a tie;
 *   - quant_act_row: the same bytes as Q8_0, a float32 d, the group sums.
 */
#include <errno.h>
#include <immintrin.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/quant.h"
#include "tests/testutil.h"

static float s_bits(uint32_t w)
{
    float f;
    memcpy(&f, &w, sizeof f);
    return f;
}

static uint16_t s_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* ---- fp16 ------------------------------------------------------------------ */

__attribute__((target("f16c"))) static uint16_t s_hw_f16(float f)
{
    return (uint16_t)_cvtss_sh(f, 0);
}

__attribute__((target("f16c"))) static float s_hw_f32(uint16_t h)
{
    return _cvtsh_ss(h);
}

static void test_f16(void **state)
{
    (void)state;
    if (!__builtin_cpu_supports("f16c"))
        testutil_skip_unless_possible(false, "this CPU has no F16C to compare with");
    /* Every float32 whose magnitude is in the range where fp16 rounds
     * (2^-26 .. 2^17, every fifth bit pattern), and a sparse sweep of the rest. */
    long n = 0;
    for (uint32_t a = 0x32800000u; a < 0x48000000u; a += 5) {
        for (int s = 0; s < 2; s++) {
            uint32_t w = a | (s ? 0x80000000u : 0);
            float f = s_bits(w);
            if (quant_f32_to_f16(f) != s_hw_f16(f))
                fail_msg("fp16 of %a: ours 0x%04x, F16C 0x%04x", (double)f,
                         quant_f32_to_f16(f), s_hw_f16(f));
            n++;
        }
    }
    for (uint64_t w = 0; w <= 0xffffffffu; w += 9973) {
        float f = s_bits((uint32_t)w);
        if (isnan(f)) {
            assert_int_equal(quant_f32_to_f16(f) & 0x7fffu, 0x7e00u);
            continue;
        }
        if (quant_f32_to_f16(f) != s_hw_f16(f))
            fail_msg("fp16 of %a: ours 0x%04x, F16C 0x%04x", (double)f,
                     quant_f32_to_f16(f), s_hw_f16(f));
    }
    for (uint32_t h = 0; h < 0x10000u; h++) {
        float ours = quant_f16_to_f32((uint16_t)h), hw = s_hw_f32((uint16_t)h);
        if (isnan(hw))
            assert_true(isnan(ours));
        else
            assert_memory_equal(&ours, &hw, sizeof ours);
    }
    assert_true(n > 1000000);
}

/* ---- known bytes ------------------------------------------------------------- */

static void test_q8_0_known(void **state)
{
    (void)state;
    float x[64] = {0};
    uint8_t out[2 * QUANT_Q8_0_BYTES];
    /* amax 127: d = 1 (fp16 0x3C00), id = 1, q = roundf(x): ties away from 0. */
    const float b0[] = {127, -127, 0.5f, -0.5f, 1.5f, 2.5f, -2.5f, 0.49999997f,
                        -126.5f, 3.2f, -3.7f, 100};
    const int8_t q0[] = {127, -127, 1, -1, 2, 3, -3, 0, -127, 3, -4, 100};
    memcpy(x, b0, sizeof b0);
    /* Block 1: a negative amax of 254 (d = 2, 0x4000), x = -254 .. odd values. */
    for (int j = 0; j < 32; j++)
        x[32 + j] = j == 7 ? -254.0f : (float)(2 * j + 1);  /* q = j + 0.5 -> j + 1 */
    assert_int_equal(quant_row_q8_0(x, out, 64), 0);
    assert_int_equal(s_le16(out), 0x3c00);
    for (int j = 0; j < 32; j++)
        assert_int_equal((int8_t)out[2 + j], j < 12 ? q0[j] : 0);
    uint8_t *o1 = out + QUANT_Q8_0_BYTES;
    assert_int_equal(s_le16(o1), 0x4000);
    for (int j = 0; j < 32; j++)
        assert_int_equal((int8_t)o1[2 + j], j == 7 ? -127 : j + 1);

    /* All zeros: d = 0, id = 0, q = 0. */
    memset(x, 0, sizeof x);
    assert_int_equal(quant_row_q8_0(x, out, 32), 0);
    for (int j = 0; j < QUANT_Q8_0_BYTES; j++)
        assert_int_equal(out[j], 0);

    /* A single huge value: d = 1e30 / 127 overflows fp16 (0x7C00), yet q is
     * computed from the float32 d: 127 for it, 0 for the small rest. */
    for (int j = 0; j < 32; j++)
        x[j] = 0.001f * (float)(j - 16);
    x[5] = -1e30f;
    assert_int_equal(quant_row_q8_0(x, out, 32), 0);
    assert_int_equal(s_le16(out), 0x7c00);
    for (int j = 0; j < 32; j++)
        assert_int_equal((int8_t)out[2 + j], j == 5 ? -127 : 0);

    /* A subnormal block: d = amax / 127 is so small that 1 / d is infinite;
     * x * inf (or 0 * inf = NaN) casts to 0 as on x86-64: every q 0. */
    for (int j = 0; j < 32; j++)
        x[j] = s_bits(0x00000100u + (uint32_t)j);  /* subnormals */
    assert_int_equal(quant_row_q8_0(x, out, 32), 0);
    assert_int_equal(s_le16(out), 0x0000);
    for (int j = 0; j < 32; j++)
        assert_int_equal(out[2 + j], 0);

    /* An infinity: d = inf, id = 0, every q 0. */
    for (int j = 0; j < 32; j++)
        x[j] = (float)j;
    x[3] = INFINITY;
    assert_int_equal(quant_row_q8_0(x, out, 32), 0);
    assert_int_equal(s_le16(out), 0x7c00);
    for (int j = 0; j < 32; j++)
        assert_int_equal(out[2 + j], 0);

    /* A NaN not last: amax becomes NaN, then the next value replaces it, so
     * amax = max over the values after it (here 31, d = 31/127) and the NaN's
     * q is 0. */
    for (int j = 0; j < 32; j++)
        x[j] = (float)j * (j < 10 ? 100.0f : 1.0f);
    x[10] = NAN;
    assert_int_equal(quant_row_q8_0(x, out, 32), 0);
    assert_int_equal(s_le16(out), quant_f32_to_f16(31.0f / 127));
    assert_int_equal(out[2 + 10], 0);
    assert_int_equal((int8_t)out[2 + 31], 127);
    /* 100 * 127 / 31 = 409.7 is out of int8: roundf gives 410, whose low
     * byte is what ggml's x86-64 build stores (-102). */
    assert_int_equal((int8_t)out[2 + 1], (int8_t)(uint8_t)(410 & 0xff));
    /* A NaN last: d NaN (0x7E00), every q 0. */
    x[10] = 1;
    x[31] = NAN;
    assert_int_equal(quant_row_q8_0(x, out, 32), 0);
    assert_int_equal(s_le16(out), 0x7e00);
    for (int j = 0; j < 32; j++)
        assert_int_equal(out[2 + j], 0);

    /* Not whole blocks. */
    errno = 0;
    assert_int_equal(quant_row_q8_0(x, out, 33), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(quant_row_q8_0(x, out, -32), -1);
}

static void test_q4_0_known(void **state)
{
    (void)state;
    float x[32];
    uint8_t out[QUANT_Q4_0_BYTES];
    /* max = -8: d = 1 (0x3C00), id = 1, q = MIN(15, trunc(x + 8.5)). */
    const float v[32] = {-8, 7, 7.5f, 0, -0.5f, -0.50001f, 0.49f, -7.6f,
                         3, 2.5f, -2.5f, 6.49f, 1, 1, 1, 1,
                         -1, -2, -3, -4, -5, -6, -7, 6.6f,
                         0, 0, 0, 0, 0, 0, 0, 7.99f};
    const int q[32] = {0, 15, 15, 8, 8, 7, 8, 0, 11, 11, 6, 14, 9, 9, 9, 9,
                       7, 6, 5, 4, 3, 2, 1, 15, 8, 8, 8, 8, 8, 8, 8, 15};
    memcpy(x, v, sizeof x);
    assert_int_equal(quant_row_q4_0(x, out, 32), 0);
    assert_int_equal(s_le16(out), 0x3c00);
    for (int j = 0; j < 16; j++)
        assert_int_equal(out[2 + j], q[j] | q[j + 16] << 4);

    /* A positive max of 16: d = -2 (0xC000), id = -0.5; and the first of two
     * equal |x| wins (16 before -16). */
    for (int j = 0; j < 32; j++)
        x[j] = (float)(j - 16) * 0.5f;  /* -8 .. 7.5 */
    x[3] = 16;
    x[20] = -16;
    assert_int_equal(quant_row_q4_0(x, out, 32), 0);
    assert_int_equal(s_le16(out), 0xc000);
    for (int j = 0; j < 16; j++) {
        int lo = j == 3 ? 0 : (int)(x[j] * -0.5f + 8.5f);
        int hi = j + 16 == 20 ? 15 : (int)(x[j + 16] * -0.5f + 8.5f);
        assert_int_equal(out[2 + j], (lo > 15 ? 15 : lo) | (hi > 15 ? 15 : hi) << 4);
    }

    /* All zeros: max stays 0, d = 0 / -8 = -0 (fp16 0x8000, as ggml stores
     * it), id = 0, every q 8. */
    memset(x, 0, sizeof x);
    assert_int_equal(quant_row_q4_0(x, out, 32), 0);
    assert_int_equal(s_le16(out), 0x8000);
    for (int j = 0; j < 16; j++)
        assert_int_equal(out[2 + j], 0x88);

    /* A single huge value: d = -1.25e29 -> fp16 -inf (0xFC00); its q is
     * -8 + 8.5 -> 0, the small rest 8. */
    for (int j = 0; j < 32; j++)
        x[j] = 0.001f * (float)(j - 16);
    x[21] = 1e30f;
    assert_int_equal(quant_row_q4_0(x, out, 32), 0);
    assert_int_equal(s_le16(out), 0xfc00);
    for (int j = 0; j < 16; j++)
        assert_int_equal(out[2 + j], j == 5 ? 0x08 : 0x88);

    /* An infinity as max: d = -inf, id = -0, the rest 8, the infinity 0
     * (inf * -0 is NaN). A NaN is skipped by the search for max, its q 0. */
    for (int j = 0; j < 32; j++)
        x[j] = (float)(j - 16);
    x[0] = INFINITY;
    assert_int_equal(quant_row_q4_0(x, out, 32), 0);
    assert_int_equal(s_le16(out), 0xfc00);
    assert_int_equal(out[2], 0x80);
    for (int j = 1; j < 16; j++)
        assert_int_equal(out[2 + j], 0x88);
    for (int j = 0; j < 32; j++)
        x[j] = j == 9 ? NAN : (float)(j - 16) * 0.5f;   /* max -8 at j = 0: d = 1 */
    assert_int_equal(quant_row_q4_0(x, out, 32), 0);
    assert_int_equal(s_le16(out), 0x3c00);
    assert_int_equal(out[2 + 9] & 0x0f, 0);
    assert_int_equal(out[2] & 0x0f, 0);

    errno = 0;
    assert_int_equal(quant_row_q4_0(x, out, 16), -1);
    assert_int_equal(errno, EINVAL);
}

/* ---- against mkgguf.py ------------------------------------------------------- */

/* A deterministic generator (xorshift) and a rough normal. */
static uint64_t s_rng = 0x9e3779b97f4a7c15u;
static float s_uniform(void)
{
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return (float)((s_rng >> 40) * (1.0 / 16777216.0));
}
static float s_normal(void)
{
    float s = 0;
    for (int i = 0; i < 4; i++)
        s += s_uniform();
    return (s - 2.0f) * 1.7f;
}

/* n values of several shapes: normal, outliers, one-signed blocks, zero
 * blocks, blocks of equal |x|, tiny and large scales. */
static void s_fill(float *x, int64_t n)
{
    for (int64_t b = 0; b < n / 32; b++) {
        int kind = (int)(b % 8);
        float scale = kind == 6 ? 1e-6f : kind == 7 ? 3e4f : 0.05f;
        for (int j = 0; j < 32; j++) {
            float v = s_normal() * scale;
            if (kind == 1 && j == (int)(b % 32))
                v *= 40;                              /* an outlier */
            if (kind == 2)
                v = -fabsf(v);                        /* all negative */
            if (kind == 3)
                v = 0;
            if (kind == 4)
                v = (j % 3 == 0) ? -0.25f : (j % 3 == 1 ? 0.25f : 0.1f);
            x[b * 32 + j] = v;
        }
    }
}

/* The peers folder: beside the fixtures folder the Makefile names. */
static void s_peers_dir(char *buf, size_t size)
{
    const char *fx = testutil_env("MOE_FIXTURES", "../shared/fixtures");
    snprintf(buf, size, "%s/../peers", fx);
}

/* Runs mkgguf.py's quantizer `fn` on n floats, returns its bytes (caller
 * frees). */
static uint8_t *s_mkgguf(const char *fn, const float *x, int64_t n, size_t out_bytes)
{
    char *dir = testutil_mkdtemp("test_quant");
    assert_non_null(dir);
    char in[512], out[512], peers[512], cmd[2048];
    snprintf(in, sizeof in, "%s/x.f32", dir);
    snprintf(out, sizeof out, "%s/q.bin", dir);
    s_peers_dir(peers, sizeof peers);
    FILE *f = fopen(in, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(x, sizeof *x, (size_t)n, f), (size_t)n);
    assert_int_equal(fclose(f), 0);
    /* Debian's python3 (the one with python3-numpy), not whatever is first
     * on PATH. */
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); "
             "import numpy as np, mkgguf; "
             "x = np.fromfile(sys.argv[2], dtype=np.float32); "
             "open(sys.argv[3], \"wb\").write(mkgguf.%s(x))' '%s' '%s' '%s'",
             fn, peers, in, out);
    int rc = system(cmd);
    if (rc != 0)
        fail_msg("mkgguf.py's %s failed (rc %d): it needs Debian's python3-numpy "
                 "(setup/install-deps.sh) and %s/mkgguf.py", fn, rc, peers);
    uint8_t *q = malloc(out_bytes);
    assert_non_null(q);
    f = fopen(out, "rb");
    assert_non_null(f);
    assert_int_equal(fread(q, 1, out_bytes, f), out_bytes);
    assert_int_equal(fgetc(f), EOF);
    fclose(f);
    unlink(in);
    unlink(out);
    rmdir(dir);
    free(dir);
    return q;
}

static void test_against_mkgguf(void **state)
{
    (void)state;
    const int64_t n = 32 * 4096;
    float *x = malloc((size_t)n * sizeof *x);
    assert_non_null(x);
    s_fill(x, n);
    size_t b8 = (size_t)(n / 32) * QUANT_Q8_0_BYTES, b4 = (size_t)(n / 32) * QUANT_Q4_0_BYTES;
    uint8_t *ours8 = malloc(b8), *ours4 = malloc(b4);
    assert_non_null(ours8);
    assert_non_null(ours4);
    assert_int_equal(quant_row_q8_0(x, ours8, n), 0);
    assert_int_equal(quant_row_q4_0(x, ours4, n), 0);
    uint8_t *py8 = s_mkgguf("quantize_q8_0", x, n, b8);
    uint8_t *py4 = s_mkgguf("quantize_q4_0", x, n, b4);

    assert_memory_equal(ours4, py4, b4);
    int ties = 0;
    for (int64_t b = 0; b < n / 32; b++) {
        const uint8_t *o = ours8 + b * QUANT_Q8_0_BYTES, *p = py8 + b * QUANT_Q8_0_BYTES;
        assert_int_equal(s_le16(o), s_le16(p));
        float amax = 0;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[b * 32 + j]));
        float d = amax / 127, id = d != 0 ? 1.0f / d : 0.0f;
        for (int j = 0; j < 32; j++) {
            if (o[2 + j] == p[2 + j])
                continue;
            /* Only a tie may differ: ggml away from zero, numpy to even. */
            float v = x[b * 32 + j] * id;
            if (!(fabsf(v) - floorf(fabsf(v)) == 0.5f && fabsf((float)(int8_t)o[2 + j]) ==
                  floorf(fabsf(v)) + 1))
                fail_msg("Q8_0 block %lld value %d (%a): ours %d, mkgguf.py %d",
                         (long long)b, j, (double)x[b * 32 + j], (int8_t)o[2 + j],
                         (int8_t)p[2 + j]);
            ties++;
        }
    }
    print_message("Q8_0 and Q4_0 of %lld values equal mkgguf.py's (%d roundf ties "
                  "away from zero where numpy rounds to even)\n", (long long)n, ties);
    free(py8);
    free(py4);
    free(ours8);
    free(ours4);
    free(x);
}

/* ---- activations --------------------------------------------------------------- */

static void test_act_row(void **state)
{
    (void)state;
    const int64_t n = 32 * 64;
    float *x = malloc((size_t)n * sizeof *x);
    int8_t *qs = malloc((size_t)n);
    float *d = malloc((size_t)(n / 32) * sizeof *d);
    int32_t *sums = malloc((size_t)(n / 4) * sizeof *sums);
    uint8_t *q8 = malloc((size_t)(n / 32) * QUANT_Q8_0_BYTES);
    assert_true(x && qs && d && sums && q8);
    s_fill(x, n);
    assert_int_equal(quant_row_q8_0(x, q8, n), 0);
    quant_act_row(x, n, 8, qs, d, sums);
    for (int64_t b = 0; b < n / 32; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[b * 32 + j]));
        assert_true(d[b] == amax / 127);
        /* The same qs as Q8_0: both come from the float32 d. */
        assert_memory_equal(qs + b * 32, q8 + b * QUANT_Q8_0_BYTES + 2, 32);
        for (int g = 0; g < 8; g++) {
            const int8_t *q = qs + b * 32 + g * 4;
            assert_int_equal(sums[b * 8 + g], -8 * (q[0] + q[1] + q[2] + q[3]));
        }
        /* And each value within half a step of x. */
        for (int j = 0; j < 32; j++)
            assert_true(fabsf(qs[b * 32 + j] * d[b] - x[b * 32 + j]) <= 0.5001f * d[b]);
    }
    quant_act_row(x, n, 128, qs, d, NULL);   /* no sums: only qs and d */
    assert_memory_equal(qs, q8 + 2, 32);
    free(q8);
    free(sums);
    free(d);
    free(qs);
    free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16),
        cmocka_unit_test(test_q8_0_known),
        cmocka_unit_test(test_q4_0_known),
        cmocka_unit_test(test_against_mkgguf),
        cmocka_unit_test(test_act_row),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
