/* test_safetensors: the reader (safetensors.h) on files whose bytes the test
 * builds by hand, the writer (st_writer.h) and the element conversions.
 *
 * Valid files: F32, F16 and BF16 with known values (subnormals, infinities,
 * NaN), zero-copy F32 that points into the file's mapping, misaligned F32
 * (copied), slices along dim 0, scalars and empty tensors, __metadata__, and
 * sharded checkpoints through model.safetensors.index.json (lazy shards).
 * Broken files: each must fail with its errno and a message naming the file
 * and the tensor, never crash (a random-corruption sweep runs under ASan in
 * `make test SANITIZE=1`). Out of memory: every allocation of open + find +
 * f32 fails in turn and each failure is a clean ENOMEM.
 */
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/mem.h"
#include "model/safetensors.h"
#include "model/safetensors_private.h"
#include "model/st_writer.h"
#include "tests/testutil.h"

/* ---- helpers ------------------------------------------------------------- */

/* dir/name in one of four rotating static buffers. */
static const char *s_join(const char *dir, const char *name)
{
    static char buf[4][1024];
    static int which;
    char tmp[sizeof buf[0]];
    snprintf(tmp, sizeof tmp, "%s/%s", dir, name); /* dir may be a buf */
    which = (which + 1) % 4;
    memcpy(buf[which], tmp, sizeof tmp);
    return buf[which];
}

/* A new empty subdirectory of the test's directory (static buffer, one of
 * 128 rotating slots: a test uses fewer). */
static const char *s_subdir(void **state, const char *name)
{
    static char slot[128][1024];
    static int which;
    which = (which + 1) % 128;
    snprintf(slot[which], sizeof slot[which], "%s/%s", (const char *)*state,
             name);
    assert_int_equal(mkdir(slot[which], 0755), 0);
    return slot[which];
}

/* Writes an 8-byte LE length hlen, then header bytes (header_n of them), then
 * data, to dir/file. */
static void s_put_raw(const char *dir, const char *file, uint64_t hlen,
                      const char *header, size_t header_n, const void *data,
                      size_t data_n)
{
    size_t n = 8 + header_n + data_n;
    uint8_t *buf = malloc(n + 1);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(hlen >> (8 * i));
    memcpy(buf + 8, header, header_n);
    if (data_n)
        memcpy(buf + 8 + header_n, data, data_n);
    assert_int_equal(testutil_write_file(s_join(dir, file), buf, n), 0);
    free(buf);
}

/* A well-formed file: the header padded with spaces to a multiple of 8
 * bytes, as the reference writer does, so that the data is aligned. */
static void s_put_st(const char *dir, const char *file, const char *header,
                     const void *data, size_t data_n)
{
    size_t n = strlen(header), padded = (n + 7) / 8 * 8;
    char *h = malloc(padded + 1);
    assert_non_null(h);
    memcpy(h, header, n);
    memset(h + n, ' ', padded - n);
    s_put_raw(dir, file, padded, h, padded, data, data_n);
    free(h);
}

static void s_expect_msg(const err_t *err, const char *w1, const char *w2)
{
    if (w1 && !strstr(err->msg, w1))
        fail_msg("message '%s' does not name '%s'", err->msg, w1);
    if (w2 && !strstr(err->msg, w2))
        fail_msg("message '%s' does not name '%s'", err->msg, w2);
}

/* safetensors_open(dir) must fail with code; the message names w1 and w2. */
static void s_expect_open_fail(const char *dir, int code, const char *w1,
                               const char *w2)
{
    err_t err = {0};
    errno = 0;
    safetensors_t *st = safetensors_open(dir, &err);
    if (st) {
        safetensors_destroy(&st);
        fail_msg("opening %s succeeded, expected errno %d (%s)", dir, code, w2);
    }
    assert_int_equal(errno, code);
    assert_int_equal(err.code, code);
    s_expect_msg(&err, w1, w2);
}

static safetensors_t *s_open_ok(const char *dir)
{
    err_t err = {0};
    safetensors_t *st = safetensors_open(dir, &err);
    if (!st)
        fail_msg("safetensors_open(%s): %s", dir, err.msg);
    return st;
}

/* dir/model.safetensors of header and data (s_put_st), opened. */
static safetensors_t *s_open_single(const char *dir, const char *header, const void *data,
                                    size_t data_n)
{
    s_put_st(dir, "model.safetensors", header, data, data_n);
    return s_open_ok(dir);
}

/* Does [p, p + n) lie inside a mapping of a file whose path ends in name? */
static bool s_in_file_mapping(const void *p, size_t n, const char *path)
{
    FILE *f = fopen("/proc/self/maps", "r");
    assert_non_null(f);
    char line[4096];
    bool found = false;
    uintptr_t a = (uintptr_t)p;
    while (!found && fgets(line, sizeof line, f)) {
        uintptr_t lo, hi;
        if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR, &lo, &hi) != 2)
            continue;
        line[strcspn(line, "\n")] = '\0';
        const char *slash = strchr(line, '/');
        found = slash && strcmp(slash, path) == 0 && a >= lo && a + n <= hi;
    }
    fclose(f);
    return found;
}

static bool s_same_bits(float a, float b)
{
    return st_f32_bits(a) == st_f32_bits(b);
}

/* ---- valid files --------------------------------------------------------- */

static void test_f32_zero_copy(void **state)
{
    const char *dir = s_subdir(state, "f32");
    /* a: (2, 3), b: (4,), s: scalar, z: (0, 4), with __metadata__ */
    float data[2 * 3 + 4 + 1];
    for (int i = 0; i < 11; i++)
        data[i] = (float)i * 0.5f - 1.0f;
    const char *header =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
        "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[24,40]},"
        "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[40,44]},"
        "\"z\":{\"dtype\":\"F32\",\"shape\":[0,4],\"data_offsets\":[44,44]}}";
    safetensors_t *st = s_open_single(dir, header, data, sizeof data);
    assert_int_equal(safetensors_count(st), 4);
    err_t err = {0};
    const st_tensor_t *t = safetensors_find(st, "a", &err);
    assert_non_null(t);
    assert_string_equal(t->name, "a");
    assert_string_equal(t->file, s_join(dir, "model.safetensors"));
    assert_int_equal(t->dtype, ST_F32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 3);
    assert_int_equal(t->nbytes, 24);

    const int64_t want_a[] = {2, 3};
    const float *a = safetensors_f32(st, "a", -1, 2, want_a, &err);
    assert_non_null(a);
    assert_ptr_equal(a, t->data);
    assert_true(s_in_file_mapping(a, 24, t->file));
    for (int i = 0; i < 6; i++)
        assert_true(a[i] == data[i]);

    const int64_t want_b[] = {4};
    const float *b = safetensors_f32(st, "b", -1, 1, want_b, &err);
    assert_non_null(b);
    assert_true(s_in_file_mapping(b, 16, t->file));
    for (int i = 0; i < 4; i++)
        assert_true(b[i] == data[6 + i]);

    const float *s = safetensors_f32(st, "s", -1, 0, NULL, &err);
    assert_non_null(s);
    assert_true(*s == data[10]);
    const int64_t want_z[] = {0, 4};
    assert_non_null(safetensors_f32(st, "z", -1, 2, want_z, &err));

    /* __metadata__ is not a tensor */
    errno = 0;
    assert_null(safetensors_find(st, "__metadata__", &err));
    assert_int_equal(errno, ENOENT);
    safetensors_destroy(&st);
    assert_null(st);
    safetensors_destroy(&st);   /* twice is fine */
    safetensors_destroy(NULL);
}

static void test_f16_values(void **state)
{
    const char *dir = s_subdir(state, "f16");
    static const uint16_t h[] = {
        0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x0400, 0x7c00,
        0xfc00, 0x8000, 0x3800, 0x3555, 0x8001, 0x7e00, 0x0000,
    };
    const float want[] = {
        1.0f, -2.0f, 65504.0f, 0x1p-24f, 1023 * 0x1p-24f, 0x1p-14f, INFINITY,
        -INFINITY, -0.0f, 0.5f, 0.333251953125f, -0x1p-24f, NAN, 0.0f,
    };
    enum { N = sizeof h / sizeof h[0] };
    uint8_t bytes[2 * N];
    for (int i = 0; i < N; i++)
        st_store_u16(bytes + 2 * i, h[i]);
    char header[256];
    snprintf(
        header, sizeof header,
        "{\"h\":{\"dtype\":\"F16\",\"shape\":[2,%d],\"data_offsets\":[0,%d]}}",
        N / 2, 2 * N);
    safetensors_t *st = s_open_single(dir, header, bytes, sizeof bytes);
    err_t err = {0};
    const int64_t shape[] = {2, N / 2};
    const float *x = safetensors_f32(st, "h", -1, 2, shape, &err);
    assert_non_null(x);
    const st_tensor_t *t = safetensors_find(st, "h", &err);
    assert_int_equal(t->dtype, ST_F16);
    assert_int_equal(t->nbytes, 2 * N);
    /* converted, not in the mapping, and cached */
    assert_false(s_in_file_mapping(x, 4, t->file));
    assert_ptr_equal(safetensors_f32(st, "h", -1, 2, shape, &err), x);
    for (int i = 0; i < N; i++) {
        if (isnan(want[i]))
            assert_true(isnan(x[i]));
        else if (!s_same_bits(x[i], want[i]))
            fail_msg("f16 0x%04x -> %a, want %a", h[i], (double)x[i],
                     (double)want[i]);
    }
    /* slices of a converted tensor come from the whole copy */
    const int64_t row[] = {N / 2};
    const float *r1 = safetensors_f32(st, "h", 1, 1, row, &err);
    assert_ptr_equal(r1, x + N / 2);
    safetensors_destroy(&st);
}

static void test_bf16_values_and_slices(void **state)
{
    const char *dir = s_subdir(state, "bf16");
    static const uint16_t b[] = {
        0x3f80, 0xc000, 0x4049, 0x7f80, 0xff80, 0x0001, 0x8000, 0x7f7f,
    };
    const float want[] = {
        1.0f, -2.0f, 3.140625f, INFINITY, -INFINITY, 0x1p-133f, -0.0f,
        0x1.fep127f,
    };
    enum { N = sizeof b / sizeof b[0] };
    uint8_t bytes[2 * N + 2];
    for (int i = 0; i < N; i++)
        st_store_u16(bytes + 2 * i, b[i]);
    st_store_u16(bytes + 2 * N, 0x7fc0); /* NaN in a second tensor */
    const char *header =
        "{\"w\":{\"dtype\":\"BF16\",\"shape\":[4,2],\"data_offsets\":[0,16]},"
        "\"n\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[16,18]}}";
    safetensors_t *st = s_open_single(dir, header, bytes, sizeof bytes);
    err_t err = {0};
    /* slices first: each converted on its own, and cached */
    const int64_t row[] = {2};
    for (int i = 0; i < 4; i++) {
        const float *r = safetensors_f32(st, "w", i, 1, row, &err);
        assert_non_null(r);
        assert_ptr_equal(safetensors_f32(st, "w", i, 1, row, &err), r);
        for (int j = 0; j < 2; j++)
            assert_true(s_same_bits(r[j], want[2 * i + j]));
    }
    errno = 0;
    assert_null(safetensors_f32(st, "w", 4, 1, row, &err));
    assert_int_equal(errno, EINVAL);
    s_expect_msg(&err, "'w'", "out of range");
    const int64_t whole[] = {4, 2};
    const float *x = safetensors_f32(st, "w", -1, 2, whole, &err);
    assert_non_null(x);
    for (int i = 0; i < N; i++)
        assert_true(s_same_bits(x[i], want[i]));
    const int64_t one[] = {1};
    const float *nan = safetensors_f32(st, "n", -1, 1, one, &err);
    assert_non_null(nan);
    assert_true(isnan(nan[0]));
    safetensors_destroy(&st);
}

static void test_f32_slices_zero_copy(void **state)
{
    const char *dir = s_subdir(state, "slices");
    float data[3 * 2 * 2];
    for (int i = 0; i < 12; i++)
        data[i] = (float)(i * i);
    /* an F32 tensor stacked as (3, 2, 2), as gpt-oss stacks experts */
    const char *header =
        "{\"e\":{\"dtype\":\"F32\",\"shape\":[3,2,2],\"data_offsets\":[0,48]}}";
    safetensors_t *st = s_open_single(dir, header, data, sizeof data);
    err_t err = {0};
    const int64_t want[] = {2, 2};
    const st_tensor_t *t = safetensors_find(st, "e", &err);
    for (int i = 0; i < 3; i++) {
        const float *s = safetensors_f32(st, "e", i, 2, want, &err);
        assert_non_null(s);
        assert_ptr_equal(s, (const float *)t->data + 4 * i);
        assert_true(s_in_file_mapping(s, 16, t->file));
        for (int j = 0; j < 4; j++)
            assert_true(s[j] == data[4 * i + j]);
    }
    errno = 0;
    assert_null(safetensors_f32(st, "e", 3, 2, want, &err));
    assert_int_equal(errno, EINVAL);
    /* the slice shape must match dims 1.. */
    const int64_t bad[] = {4};
    errno = 0;
    assert_null(safetensors_f32(st, "e", 0, 1, bad, &err));
    assert_int_equal(errno, EINVAL);
    s_expect_msg(&err, "'e'", "[3, 2, 2]");
    safetensors_destroy(&st);
}

static void test_misaligned_f32_copied(void **state)
{
    const char *dir = s_subdir(state, "misaligned");
    /* one BF16 value, then an F32 tensor at data offset 2 */
    uint8_t bytes[2 + 8];
    st_store_u16(bytes, 0x3f80);
    const float v[2] = {1.25f, -7.5f};
    memcpy(bytes + 2, v, sizeof v);
    const char *header =
        "{\"h\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[0,2]},"
        "\"f\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[2,10]}}";
    safetensors_t *st = s_open_single(dir, header, bytes, sizeof bytes);
    err_t err = {0};
    const int64_t two[] = {2};
    const float *f = safetensors_f32(st, "f", -1, 1, two, &err);
    assert_non_null(f);
    assert_int_equal((uintptr_t)f % sizeof(float), 0);
    assert_true(f[0] == 1.25f && f[1] == -7.5f);
    safetensors_destroy(&st);

    /* a header of odd length puts all the data off alignment */
    const char *odd =
        "{\"f\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}} ";
    assert_int_equal(strlen(odd) % 2, 1);
    s_put_raw(dir, "model.safetensors", strlen(odd), odd, strlen(odd), v, 8);
    st = s_open_ok(dir);
    const st_tensor_t *t = safetensors_find(st, "f", &err);
    assert_int_not_equal((uintptr_t)t->data % sizeof(float), 0);
    f = safetensors_f32(st, "f", -1, 1, two, &err);
    assert_non_null(f);
    assert_int_equal((uintptr_t)f % sizeof(float), 0);
    assert_true(f[0] == 1.25f && f[1] == -7.5f);
    assert_ptr_equal(safetensors_f32(st, "f", -1, 1, two, &err), f);
    safetensors_destroy(&st);
}

/* U8 tensors (MXFP4 blocks and scales) are raw bytes: found, never read as
 * floats. */
static void test_u8_raw_bytes(void **state)
{
    const char *dir = s_subdir(state, "u8");
    const uint8_t bytes[6] = {0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc};
    const char *header = "{\"b\":{\"dtype\":\"U8\",\"shape\":[2,3],"
                         "\"data_offsets\":[0,6]}}";
    safetensors_t *st = s_open_single(dir, header, bytes, sizeof bytes);
    err_t err = {0};
    const st_tensor_t *t = safetensors_find(st, "b", &err);
    assert_non_null(t);
    assert_int_equal(t->dtype, ST_U8);
    assert_int_equal(t->nbytes, 6);
    assert_memory_equal(t->data, bytes, sizeof bytes);
    const int64_t shape[] = {2, 3};
    assert_null(safetensors_f32(st, "b", -1, 2, shape, &err));
    assert_int_equal(errno, EINVAL);
    assert_non_null(strstr(err.msg, "U8"));
    assert_int_equal(st_dtype_size(ST_U8), 1);
    assert_string_equal(st_dtype_name(ST_U8), "U8");
    safetensors_destroy(&st);
}

/* F8_E4M3 tensors (DeepSeek-V3's linear weights) are read raw, never as
 * float32 without their scales; safetensors_raw checks dtype and shape and
 * hands out the bytes in place, whole or one slice along dim 0. */
static void test_f8_raw_views(void **state)
{
    const char *dir = s_subdir(state, "f8");
    uint8_t bytes[12 + 8];
    for (int i = 0; i < 12; i++)
        bytes[i] = (uint8_t)(0x30 + i);
    const float scales[2] = {0.5f, 2.0f};
    memcpy(bytes + 12, scales, sizeof scales);
    const char *header =
        "{\"w.weight\":{\"dtype\":\"F8_E4M3\",\"shape\":[2,2,3],"
        "\"data_offsets\":[0,12]},"
        "\"w.weight_scale_inv\":{\"dtype\":\"F32\",\"shape\":[2,1],"
        "\"data_offsets\":[12,20]}}";
    safetensors_t *st = s_open_single(dir, header, bytes, sizeof bytes);
    err_t err = {0};
    const st_tensor_t *t = safetensors_find(st, "w.weight", &err);
    assert_non_null(t);
    assert_int_equal(t->dtype, ST_F8_E4M3);
    assert_int_equal(t->nbytes, 12);
    assert_int_equal(st_dtype_size(ST_F8_E4M3), 1);
    assert_string_equal(st_dtype_name(ST_F8_E4M3), "F8_E4M3");
    assert_string_equal(st_dtype_name(ST_ANY), "any");
    assert_int_equal(st_dtype_size(ST_ANY), 0);

    const int64_t whole[] = {2, 2, 3}, slice[] = {2, 3};
    errno = 0;
    assert_null(safetensors_f32(st, "w.weight", -1, 3, whole, &err));
    assert_int_equal(errno, EINVAL);
    s_expect_msg(&err, "'w.weight'", "F8_E4M3");
    s_expect_msg(&err, "weight_scale_inv", "model.safetensors");

    size_t nbytes = 0;
    st_dtype_t dt = ST_ANY;
    const uint8_t *p = safetensors_raw(st, "w.weight", -1, 3, whole,
                                       ST_F8_E4M3, &nbytes, &dt, &err);
    assert_ptr_equal(p, t->data);
    assert_int_equal(nbytes, 12);
    assert_int_equal(dt, ST_F8_E4M3);
    p = safetensors_raw(st, "w.weight", 1, 2, slice, ST_ANY, &nbytes, NULL,
                        &err);
    assert_ptr_equal(p, (const uint8_t *)t->data + 6);
    assert_int_equal(nbytes, 6);
    assert_int_equal(p[0], 0x36);
    assert_non_null(safetensors_raw(st, "w.weight", 0, 2, slice, ST_F8_E4M3,
                                    NULL, NULL, &err));
    assert_int_equal(safetensors_count(st), 2);
    assert_string_equal(safetensors_name(st, 0), "w.weight");
    assert_string_equal(safetensors_name(st, 1), "w.weight_scale_inv");

    /* wrong dtype, shape, rank or slice: EINVAL naming tensor and file */
    errno = 0;
    assert_null(safetensors_raw(st, "w.weight", -1, 3, whole, ST_U8, NULL,
                                NULL, &err));
    assert_int_equal(errno, EINVAL);
    s_expect_msg(&err, "'w.weight'", "model.safetensors");
    s_expect_msg(&err, "F8_E4M3", "expected U8");
    errno = 0;
    const int64_t bad[] = {2, 3, 2};
    assert_null(safetensors_raw(st, "w.weight", -1, 3, bad, ST_F8_E4M3, NULL,
                                NULL, &err));
    assert_int_equal(errno, EINVAL);
    s_expect_msg(&err, "[2, 2, 3]", "[2, 3, 2]");
    errno = 0;
    assert_null(safetensors_raw(st, "w.weight", -1, 2, slice, ST_F8_E4M3,
                                NULL, NULL, &err));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(safetensors_raw(st, "w.weight", 2, 2, slice, ST_F8_E4M3, NULL,
                                NULL, &err));
    assert_int_equal(errno, EINVAL);
    s_expect_msg(&err, "slice 2", "'w.weight'");
    errno = 0;
    assert_null(safetensors_raw(st, "w.absent", -1, 2, slice, ST_ANY, NULL,
                                NULL, &err));
    assert_int_equal(errno, ENOENT);
    s_expect_msg(&err, "'w.absent'", NULL);

    /* a float tensor raw: its stored bytes; as float32: the values */
    const int64_t grid[] = {2, 1};
    const void *raw = safetensors_raw(st, "w.weight_scale_inv", -1, 2, grid,
                                      ST_F32, &nbytes, &dt, &err);
    assert_non_null(raw);
    assert_int_equal(nbytes, 8);
    assert_int_equal(dt, ST_F32);
    assert_memory_equal(raw, scales, sizeof scales);
    const float *f = safetensors_f32(st, "w.weight_scale_inv", -1, 2, grid,
                                     &err);
    assert_true(f && f[0] == 0.5f && f[1] == 2.0f);
    safetensors_destroy(&st);

    /* a truncated F8 tensor: its data_offsets cover fewer bytes than its
     * shape needs */
    const char *shortened = "{\"w.weight\":{\"dtype\":\"F8_E4M3\","
                            "\"shape\":[4,4],\"data_offsets\":[0,12]}}";
    s_put_raw(dir, "model.safetensors", strlen(shortened), shortened,
              strlen(shortened), bytes, 12);
    s_expect_open_fail(dir, EPROTO, "'w.weight'", "F8_E4M3");
    /* other FP8 flavours are not read */
    const char *e5m2 = "{\"w.weight\":{\"dtype\":\"F8_E5M2\","
                       "\"shape\":[12],\"data_offsets\":[0,12]}}";
    s_put_raw(dir, "model.safetensors", strlen(e5m2), e5m2, strlen(e5m2),
              bytes, 12);
    s_expect_open_fail(dir, EPROTO, "'w.weight'", "F8_E5M2");
}

/* st_writer writes U8 and F8_E4M3 tensors byte for byte (and refuses
 * float32 values for them). */
static void test_writer_raw(void **state)
{
    const char *dir = s_subdir(state, "wraw");
    const char *path = s_join(dir, "model.safetensors");
    err_t err = {0};
    st_writer_t *w = st_writer_new(path, &err);
    assert_non_null(w);
    const int64_t qs[] = {3, 4}, sc[] = {1, 1}, u8s[] = {5};
    assert_int_equal(st_writer_add(w, "q", ST_F8_E4M3, 2, qs, &err), 0);
    assert_int_equal(st_writer_add(w, "s", ST_F32, 2, sc, &err), 0);
    assert_int_equal(st_writer_add(w, "b", ST_U8, 1, u8s, &err), 0);
    assert_int_equal(st_writer_begin(w, &err), 0);
    const float one = 1.0f;
    errno = 0;
    assert_int_equal(st_writer_write(w, &one, 1, &err), -1);
    assert_int_equal(errno, EINVAL);
    s_expect_msg(&err, "'q'", "st_writer_write_raw");
    const uint8_t q[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0x7f};
    errno = 0;
    assert_int_equal(st_writer_write_raw(w, q, 13, &err), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(st_writer_write_raw(w, q, 5, &err), 0);
    assert_int_equal(st_writer_write_raw(w, q + 5, 7, &err), 0);
    errno = 0;
    assert_int_equal(st_writer_write_raw(w, &one, 3, &err), -1); /* not whole */
    assert_int_equal(errno, EINVAL);
    assert_int_equal(st_writer_write_raw(w, &one, 4, &err), 0);  /* F32 raw */
    const uint8_t b[5] = {9, 8, 7, 6, 5};
    assert_int_equal(st_writer_write_raw(w, b, 5, &err), 0);
    errno = 0;
    assert_int_equal(st_writer_write_raw(w, b, 1, &err), -1);   /* past the end */
    assert_int_equal(errno, EINVAL);
    assert_int_equal(st_writer_finish(w, &err), 0);
    st_writer_destroy(&w);

    safetensors_t *st = s_open_ok(dir);
    size_t n = 0;
    const uint8_t *p = safetensors_raw(st, "q", -1, 2, qs, ST_F8_E4M3, &n,
                                       NULL, &err);
    assert_non_null(p);
    assert_int_equal(n, 12);
    assert_memory_equal(p, q, 12);
    p = safetensors_raw(st, "b", -1, 1, u8s, ST_U8, &n, NULL, &err);
    assert_non_null(p);
    assert_memory_equal(p, b, 5);
    const float *f = safetensors_f32(st, "s", -1, 2, sc, &err);
    assert_true(f && f[0] == 1.0f);
    safetensors_destroy(&st);
}

static void test_shape_mismatch_and_missing(void **state)
{
    const char *dir = s_subdir(state, "mismatch");
    float data[6] = {0};
    const char *header = "{\"layer.w\":{\"dtype\":\"F32\",\"shape\":[2,3],"
                         "\"data_offsets\":[0,24]}}";
    safetensors_t *st = s_open_single(dir, header, data, sizeof data);
    err_t err = {0};
    const int64_t swapped[] = {3, 2};
    errno = 0;
    assert_null(safetensors_f32(st, "layer.w", -1, 2, swapped, &err));
    assert_int_equal(errno, EINVAL);
    s_expect_msg(&err, "'layer.w'", "model.safetensors");
    s_expect_msg(&err, "[2, 3]", "[3, 2]");
    const int64_t flat[] = {6};
    errno = 0;
    assert_null(safetensors_f32(st, "layer.w", -1, 1, flat, &err));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(safetensors_find(st, "layer.v", &err));
    assert_int_equal(errno, ENOENT);
    s_expect_msg(&err, "'layer.v'", dir);
    errno = 0;
    assert_null(safetensors_f32(st, "nope", -1, 1, flat, &err));
    assert_int_equal(errno, ENOENT);
    s_expect_msg(&err, "'nope'", NULL);
    /* err may be NULL */
    errno = 0;
    assert_null(safetensors_f32(st, "nope", -1, 1, flat, NULL));
    assert_int_equal(errno, ENOENT);
    safetensors_destroy(&st);
}

static void test_no_checkpoint(void **state)
{
    const char *dir = s_subdir(state, "empty");
    s_expect_open_fail(dir, ENOENT, dir, "model.safetensors");
    s_expect_open_fail(s_join(dir, "absent"), ENOENT, "absent", NULL);
    assert_int_equal(st_dtype_size(ST_F32), 4);
    assert_int_equal(st_dtype_size(ST_F16), 2);
    assert_int_equal(st_dtype_size(ST_BF16), 2);
    assert_int_equal(st_dtype_size((st_dtype_t)0), 0);
    assert_string_equal(st_dtype_name(ST_BF16), "BF16");
    assert_string_equal(st_dtype_name(ST_F16), "F16");
    assert_string_equal(st_dtype_name(ST_F32), "F32");
}

/* ---- sharded checkpoints ------------------------------------------------- */

static const char s_shard1_header[] =
    "{\"x.a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
    "\"x.b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[8,12]}}";
static const char s_shard2_header[] =
    "{\"y.c\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[0,4]}}";

static void s_put_shards(const char *dir)
{
    uint8_t d1[12];
    const float a[2] = {3.0f, -4.0f};
    memcpy(d1, a, 8);
    st_store_u16(d1 + 8, 0x3c00);
    st_store_u16(d1 + 10, 0xc000);
    s_put_st(dir, "model-00001-of-00002.safetensors", s_shard1_header, d1, 12);
    uint8_t d2[4];
    st_store_u16(d2, 0x4000);
    st_store_u16(d2 + 2, 0xbf80);
    s_put_st(dir, "model-00002-of-00002.safetensors", s_shard2_header, d2, 4);
}

static void s_put_index(const char *dir, const char *text)
{
    assert_int_equal(
        testutil_write_file(s_join(dir, "model.safetensors.index.json"), text,
                            strlen(text)),
        0);
}

static const char s_good_index[] =
    "{\"metadata\":{\"total_size\":16},\"weight_map\":{"
    "\"x.a\":\"model-00001-of-00002.safetensors\","
    "\"x.b\":\"model-00001-of-00002.safetensors\","
    "\"y.c\":\"model-00002-of-00002.safetensors\"}}";

static void test_sharded(void **state)
{
    const char *dir = s_subdir(state, "sharded");
    s_put_shards(dir);
    s_put_index(dir, s_good_index);
    safetensors_t *st = s_open_ok(dir);
    assert_int_equal(safetensors_count(st), 3);
    err_t err = {0};
    const int64_t two[] = {2}, one_two[] = {1, 2};
    const float *c = safetensors_f32(st, "y.c", -1, 2, one_two, &err);
    assert_non_null(c);
    assert_true(c[0] == 2.0f && c[1] == -1.0f);
    const st_tensor_t *t = safetensors_find(st, "y.c", &err);
    assert_string_equal(t->file,
                        s_join(dir, "model-00002-of-00002.safetensors"));
    const float *a = safetensors_f32(st, "x.a", -1, 1, two, &err);
    assert_non_null(a);
    assert_true(a[0] == 3.0f && a[1] == -4.0f);
    assert_true(s_in_file_mapping(
        a, 8, s_join(dir, "model-00001-of-00002.safetensors")));
    const float *b = safetensors_f32(st, "x.b", -1, 1, two, &err);
    assert_true(b[0] == 1.0f && b[1] == -2.0f);
    errno = 0;
    assert_null(safetensors_find(st, "z", &err));
    assert_int_equal(errno, ENOENT);
    safetensors_destroy(&st);
}

/* Shards are opened lazily: a broken or missing shard only fails its own
 * tensors, and each failure names the shard and the tensor. */
static void test_sharded_lazy_errors(void **state)
{
    const char *dir = s_subdir(state, "lazy");
    s_put_shards(dir);
    s_put_index(dir, s_good_index);
    /* corrupt shard 2's header */
    s_put_raw(dir, "model-00002-of-00002.safetensors", 5, "{oops", 5, NULL, 0);
    safetensors_t *st = s_open_ok(dir);
    err_t err = {0};
    const int64_t two[] = {2};
    assert_non_null(safetensors_f32(st, "x.a", -1, 1, two, &err));
    errno = 0;
    assert_null(safetensors_find(st, "y.c", &err));
    assert_int_equal(errno, EPROTO);
    s_expect_msg(&err, "'y.c'", "model-00002-of-00002.safetensors");
    /* no side effect: it fails the same way again */
    errno = 0;
    assert_null(safetensors_find(st, "y.c", &err));
    assert_int_equal(errno, EPROTO);
    safetensors_destroy(&st);

    /* a missing shard */
    assert_int_equal(unlink(s_join(dir, "model-00002-of-00002.safetensors")),
                     0);
    st = s_open_ok(dir);
    errno = 0;
    assert_null(safetensors_find(st, "y.c", &err));
    assert_int_equal(errno, ENOENT);
    s_expect_msg(&err, "'y.c'", "model-00002-of-00002.safetensors");
    assert_non_null(safetensors_find(st, "x.b", &err));
    safetensors_destroy(&st);

    /* the index lists a tensor its shard does not hold */
    s_put_shards(dir);
    s_put_index(dir, "{\"weight_map\":{"
                     "\"x.a\":\"model-00001-of-00002.safetensors\","
                     "\"y.c\":\"model-00001-of-00002.safetensors\"}}");
    st = s_open_ok(dir);
    errno = 0;
    assert_null(safetensors_find(st, "y.c", &err));
    assert_int_equal(errno, EPROTO);
    s_expect_msg(&err, "'y.c'", "model-00001-of-00002.safetensors");
    assert_non_null(safetensors_find(st, "x.a", &err));
    /* x.b is in the shard but not in the index: not part of the checkpoint */
    errno = 0;
    assert_null(safetensors_find(st, "x.b", &err));
    assert_int_equal(errno, ENOENT);
    safetensors_destroy(&st);
}

static void test_bad_index(void **state)
{
    static const char *const bad[][2] = {
        {"{\"weight_map\":", "model.safetensors.index.json"},
        {"[]", "weight_map"},
        {"{\"metadata\":{}}", "weight_map"},
        {"{\"weight_map\":[\"a\"]}", "weight_map"},
        {"{\"weight_map\":{\"a\":1}}", "'a'"},
        {"{\"weight_map\":{\"a\":\"../evil.safetensors\"}}", "'a'"},
        {"{\"weight_map\":{\"a\":\"\"}}", "'a'"},
        {"{\"weight_map\":{\"a\":\"x\",\"a\":\"y\"}}", "index.json"},
        {"", "index.json"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "badindex%zu", i);
        const char *dir = s_subdir(state, name);
        s_put_shards(dir);
        s_put_index(dir, bad[i][0]);
        s_expect_open_fail(dir, EPROTO, bad[i][1], dir);
    }
    /* an empty weight_map is an empty checkpoint */
    const char *dir = s_subdir(state, "emptyindex");
    s_put_index(dir, "{\"weight_map\":{}}");
    safetensors_t *st = s_open_ok(dir);
    assert_int_equal(safetensors_count(st), 0);
    err_t err;
    errno = 0;
    assert_null(safetensors_find(st, "x", &err));
    assert_int_equal(errno, ENOENT);
    safetensors_destroy(&st);
    /* a single file wins over an index, as in transformers */
    float one = 1.0f;
    s_put_st(dir, "model.safetensors",
             "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
             &one, 4);
    st = s_open_ok(dir);
    assert_int_equal(safetensors_count(st), 1);
    safetensors_destroy(&st);
}

/* ---- broken files -------------------------------------------------------- */

/* A valid two-tensor file, for truncation. */
static size_t s_valid_bytes(uint8_t *out, size_t cap)
{
    const char *header = "{\"w.first\":{\"dtype\":\"F32\",\"shape\":[2,2],"
                         "\"data_offsets\":[0,16]},"
                         "\"w.second\":{\"dtype\":\"F32\",\"shape\":[4],\"data_"
                         "offsets\":[16,32]}}";
    size_t hn = strlen(header), n = 8 + hn + 32;
    assert_true(n <= cap);
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)((uint64_t)hn >> (8 * i));
    memcpy(out + 8, header, hn);
    for (int i = 0; i < 8; i++) {
        float v = (float)i;
        memcpy(out + 8 + hn + 4 * i, &v, 4);
    }
    return n;
}

static void test_truncated(void **state)
{
    uint8_t buf[512];
    size_t n = s_valid_bytes(buf, sizeof buf);
    size_t hn = n - 8 - 32;
    const struct {
        size_t keep;
        const char *word; /* in the message beside the file name */
    } cuts[] = {
        {0, "too short"},        {3, "too short"},    {7, "too short"},
        {8, "header length"},    {8 + hn / 2, "header length"},
        {8 + hn - 1, "header length"},
        {8 + hn, "w.first"},     {8 + hn + 15, "w.first"},
        {8 + hn + 16, "w.second"}, {n - 1, "w.second"},
    };
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "cut%zu", i);
        const char *dir = s_subdir(state, name);
        assert_int_equal(testutil_write_file(s_join(dir, "model.safetensors"),
                                             buf, cuts[i].keep), 0);
        s_expect_open_fail(dir, EPROTO, s_join(dir, "model.safetensors"),
                           cuts[i].word);
    }
    /* and uncut, it is fine */
    const char *dir = s_subdir(state, "uncut");
    assert_int_equal(
        testutil_write_file(s_join(dir, "model.safetensors"), buf, n), 0);
    safetensors_t *st = s_open_ok(dir);
    assert_int_equal(safetensors_count(st), 2);
    safetensors_destroy(&st);
}

static void test_broken_headers(void **state)
{
    static const struct {
        const char *header;
        size_t data_n;
        const char *word; /* besides the file name */
    } cases[] = {
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8,
         "JSON"},
        {"not json at all", 0, "JSON"},
        {"[1, 2, 3]", 0, "object"},
        {"\"t\"", 0, "JSON"},
        {"{\"t\":[1,2]}", 0, "'t'"},
        {"{\"t\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
         "F64"},
        {"{\"t\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
         "'t'"},
        {"{\"t\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
         "dtype"},
        {"{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype"},
        {"{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "shape"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
         "shape"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}",
         8, "shape"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,8]}}",
         8, "shape"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
         "\"data_offsets\":[0,4]}}",
         4, "dimensions"},
        /* products that overflow 64 bits */
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],"
         "\"data_offsets\":[0,0]}}",
         0, "overflow"},
        {"{\"t\":{\"dtype\":\"F16\",\"shape\":[4294967296,4294967296],"
         "\"data_offsets\":[0,0]}}",
         0, "overflow"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[9223372036854775807],"
         "\"data_offsets\":[0,4]}}",
         4, "overflow"},
        /* a product of 0 with a huge factor is fine but must match */
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[0,9223372036854775807],"
         "\"data_offsets\":[0,4]}}",
         4, "needs 0"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,12]}}",
         12, "needs 8"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8,
         "needs 8"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 7,
         "past the end"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 8,
         "past the end"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],"
         "\"data_offsets\":[18446744073709551608,18446744073709551616]}}",
         8, "JSON"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],"
         "\"data_offsets\":[9223372036854775800,9223372036854775807]}}",
         8, "'t'"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8,
         "data_offsets"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8,
         "data_offsets"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8,
         "data_offsets"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,\"8\"]}}",
         8, "data_offsets"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "data_offsets"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"u\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         12, "overlap"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
         "\"u\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[4,8]}}",
         16, "overlap"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
         8, "JSON"},
    };
    uint8_t data[32] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "broken%zu", i);
        const char *dir = s_subdir(state, name);
        s_put_st(dir, "model.safetensors", cases[i].header, data,
                 cases[i].data_n);
        err_t err = {0};
        errno = 0;
        safetensors_t *st = safetensors_open(dir, &err);
        if (st) {
            safetensors_destroy(&st);
            fail_msg("case %zu (%s) opened", i, cases[i].header);
        }
        if (errno != EPROTO ||
            !strstr(err.msg, s_join(dir, "model.safetensors")) ||
            !strstr(err.msg, cases[i].word))
            fail_msg("case %zu: errno %d, message '%s' (want '%s')", i, errno,
                     err.msg, cases[i].word);
        /* tensor-level errors name the tensor */
        if (strstr(cases[i].header, "\"dtype\"") && !strstr(err.msg, "JSON") &&
            !strstr(err.msg, "'t'") && !strstr(err.msg, "'u'"))
            fail_msg("case %zu: message '%s' names no tensor", i, err.msg);
    }
}

static void test_bad_header_length(void **state)
{
    const char *header = "{}";
    const uint64_t lens[] = {3, 100, (uint64_t)1 << 40, UINT64_MAX,
                             UINT64_MAX - 7, 200000000};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "hlen%zu", i);
        const char *dir = s_subdir(state, name);
        s_put_raw(dir, "model.safetensors", lens[i], header, 2, NULL, 0);
        s_expect_open_fail(dir, EPROTO, s_join(dir, "model.safetensors"),
                           "header length");
    }
    /* a header longer than the 100 MB limit, inside a (sparse) file */
    const char *dir = s_subdir(state, "hlenbig");
    const char *path = s_join(dir, "model.safetensors");
    s_put_raw(dir, "model.safetensors", 150000000, header, 2, NULL, 0);
    assert_int_equal(truncate(path, 8 + 150000000), 0);
    s_expect_open_fail(dir, EPROTO, path, "limit");
    /* an empty header object: a valid, empty checkpoint */
    dir = s_subdir(state, "hlenempty");
    safetensors_t *st = s_open_single(dir, "{}", NULL, 0);
    assert_int_equal(safetensors_count(st), 0);
    safetensors_destroy(&st);
    /* not a regular file */
    dir = s_subdir(state, "notfile");
    assert_int_equal(mkdir(s_join(dir, "model.safetensors"), 0755), 0);
    s_expect_open_fail(dir, EPROTO, "model.safetensors", "regular");
}

/* Random corruption of a valid file: open, find and convert whatever opens;
 * nothing may crash (ASan and UBSan watch in the sanitize build). */
static void test_corruption_sweep(void **state)
{
    uint8_t good[512];
    size_t n = s_valid_bytes(good, sizeof good);
    const char *dir = s_subdir(state, "sweep");
    const char *path = s_join(dir, "model.safetensors");
    testrng_t rng;
    testrng_init(&rng, 42);
    int opened = 0;
    for (int iter = 0; iter < 2000; iter++) {
        uint8_t buf[512];
        memcpy(buf, good, n);
        int flips = 1 + (int)(testrng_uniform(&rng) * 4);
        for (int k = 0; k < flips; k++) {
            size_t at = (size_t)(testrng_uniform(&rng) * (double)n);
            /* mostly hit the header, where the structure is */
            if (testrng_uniform(&rng) < 0.8)
                at = (size_t)(testrng_uniform(&rng) * (double)(n - 32));
            static const char pool[] = "0123456789-[]{}\",:eE.FBI";
            buf[at] = testrng_uniform(&rng) < 0.5
                          ? (uint8_t)(testrng_uniform(&rng) * 256)
                          : (uint8_t)pool[(size_t)(testrng_uniform(&rng) *
                                                   (sizeof pool - 1))];
        }
        size_t len = testrng_uniform(&rng) < 0.2
                         ? (size_t)(testrng_uniform(&rng) * (double)n)
                         : n;
        assert_int_equal(testutil_write_file(path, buf, len), 0);
        err_t err = {0};
        safetensors_t *st = safetensors_open(dir, &err);
        if (!st) {
            assert_true(errno == EPROTO);
            assert_non_null(strstr(err.msg, path));
            continue;
        }
        opened++;
        static const char *const names[] = {"w.first", "w.second"};
        const int64_t shapes[][2] = {{2, 2}, {4, 0}};
        for (int t = 0; t < 2; t++) {
            const st_tensor_t *tt = safetensors_find(st, names[t], NULL);
            if (!tt)
                continue;
            const float *x = safetensors_f32(st, names[t], -1, 2 - t, shapes[t],
                                             NULL);
            volatile float sink = 0;
            if (x)
                for (size_t j = 0; j < tt->nbytes / st_dtype_size(tt->dtype);
                     j++)
                    sink += x[j];
            (void)sink;
            (void)safetensors_f32(st, names[t], 0, 1, shapes[t] + 1, NULL);
        }
        safetensors_destroy(&st);
    }
    assert_true(opened > 0);
}

/* ---- out of memory ------------------------------------------------------- */

/* open + find + f32 (converting) on dir with the k-th allocation failing, for
 * k = 1, 2, ... until the sequence succeeds. */
static void s_oom_sweep(const char *dir, const char *const *names,
                        const int64_t (*shapes)[2], int n_names)
{
    int failures = 0;
    for (long k = 1; k < 1000; k++) {
        err_t err = {0};
        mem_fail_after(k);
        errno = 0;
        safetensors_t *st = safetensors_open(dir, &err);
        bool ok = st != NULL;
        for (int i = 0; ok && i < n_names; i++) {
            ok = safetensors_find(st, names[i], &err) != NULL &&
                 safetensors_f32(st, names[i], -1, 2, shapes[i], &err) != NULL;
        }
        int e = errno;
        mem_fail_after(-1);
        if (ok) {
            safetensors_destroy(&st);
            assert_true(failures > 0);
            return;
        }
        if (e != ENOMEM)
            fail_msg("k=%ld: errno %d, '%s'", k, e, err.msg);
        assert_int_equal(err.code, ENOMEM);
        safetensors_destroy(&st);
        failures++;
    }
    fail_msg("the sweep never succeeded");
}

static void test_oom(void **state)
{
    const char *dir = s_subdir(state, "oom");
    uint8_t data[8 * 4 + 4 * 2];
    memset(data, 0, sizeof data);
    const char *header =
        "{\"f\":{\"dtype\":\"F32\",\"shape\":[2,4],\"data_offsets\":[0,32]},"
        "\"h\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[32,40]}}";
    s_put_st(dir, "model.safetensors", header, data, sizeof data);
    static const char *const names[] = {"f", "h"};
    static const int64_t shapes[][2] = {{2, 4}, {2, 2}};
    s_oom_sweep(dir, names, shapes, 2);

    const char *sdir = s_subdir(state, "oomsharded");
    s_put_shards(sdir);
    s_put_index(sdir, s_good_index);
    static const char *const snames[] = {"y.c", "x.b"};
    static const int64_t sshapes[][2] = {{1, 2}, {2, 0}};
    /* x.b is 1-D: check it with a 1-D want through find only */
    s_oom_sweep(sdir, snames, sshapes, 1);
    int failures = 0;
    for (long k = 1; k < 1000; k++) {
        err_t err = {0};
        mem_fail_after(k);
        safetensors_t *st = safetensors_open(sdir, &err);
        const int64_t two[] = {2};
        const float *x =
            st ? safetensors_f32(st, "x.b", -1, 1, two, &err) : NULL;
        int e = errno;
        mem_fail_after(-1);
        safetensors_destroy(&st);
        if (x)
            break;
        assert_int_equal(e, ENOMEM);
        failures++;
    }
    assert_true(failures > 0);
}

/* ---- conversions --------------------------------------------------------- */

/* Every half value converts to float and back unchanged; float -> half matches
 * the compiler's _Float16 conversion (round to nearest even) on random and
 * boundary inputs. */
static void test_f16_conversions(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = st_f16_to_f32((uint16_t)h);
        _Float16 ref;
        memcpy(&ref, &(uint16_t){(uint16_t)h}, 2);
        if (isnan(f)) {
            assert_true(isnan((float)ref));
            assert_true(isnan(st_f16_to_f32(st_f32_to_f16(f))));
            continue;
        }
        assert_true(s_same_bits(f, (float)ref));
        assert_int_equal(st_f32_to_f16(f), h);
    }
    testrng_t rng;
    testrng_init(&rng, 7);
    for (int i = 0; i < 2000000; i++) {
        uint32_t bits = (uint32_t)(testrng_uniform(&rng) * 4294967296.0);
        /* concentrate on the half range, including subnormals and overflow */
        if (i % 2)
            bits = (bits & 0x807fffffu) |
                   ((uint32_t)(98 + testrng_uniform(&rng) * 50) << 23);
        float f = st_bits_f32(bits);
        if (isnan(f))
            continue;
        _Float16 ref = (_Float16)f;
        uint16_t rb;
        memcpy(&rb, &ref, 2);
        if (st_f32_to_f16(f) != rb)
            fail_msg("f16(%a) = 0x%04x, want 0x%04x", (double)f,
                     st_f32_to_f16(f), rb);
    }
    /* ties to even and the edges */
    assert_int_equal(st_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
    assert_int_equal(st_f32_to_f16(1.0f + 0x1p-10f + 0x1p-11f), 0x3c02);
    assert_int_equal(st_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(st_f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(st_f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(st_f32_to_f16(-1e30f), 0xfc00);
    assert_int_equal(st_f32_to_f16(0x1p-25f), 0x0000);
    assert_int_equal(st_f32_to_f16(0x1.000002p-25f), 0x0001);
    assert_int_equal(st_f32_to_f16(0x1.8p-24f), 0x0002);
    assert_int_equal(st_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(st_f32_to_f16(NAN) & 0x7e00, 0x7e00);
}

/* Reference bf16 rounding in double arithmetic. */
static uint16_t s_bf16_ref(float f)
{
    uint32_t x = st_f32_bits(f);
    uint16_t lo = (uint16_t)(x >> 16);
    double v = f, a = st_bf16_to_f32(lo);
    double b = st_bf16_to_f32((uint16_t)(lo + 1)); /* next away from zero */
    if (isinf(b))
        b = copysign(0x1p128, v); /* the rounding boundary past the largest */
    double da = fabs(v - a), db = fabs(b - v);
    if (da < db || (da == db && (lo & 1) == 0))
        return lo;
    return (uint16_t)(lo + 1);
}

static void test_bf16_conversions(void **state)
{
    (void)state;
    for (uint32_t b = 0; b < 0x10000; b++) {
        float f = st_bf16_to_f32((uint16_t)b);
        if (isnan(f))
            continue;
        assert_int_equal(st_f32_to_bf16(f), b);
    }
    testrng_t rng;
    testrng_init(&rng, 9);
    for (int i = 0; i < 2000000; i++) {
        float f = st_bits_f32((uint32_t)(testrng_uniform(&rng) * 4294967296.0));
        if (isnan(f) || isinf(f))
            continue;
        if (st_f32_to_bf16(f) != s_bf16_ref(f))
            fail_msg("bf16(%a) = 0x%04x, want 0x%04x", (double)f,
                     st_f32_to_bf16(f), s_bf16_ref(f));
    }
    assert_int_equal(st_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
    assert_int_equal(st_f32_to_bf16(1.0f + 0x1p-7f + 0x1p-8f), 0x3f82);
    assert_int_equal(st_f32_to_bf16(FLT_MAX), 0x7f80);
    assert_true(isnan(st_bf16_to_f32(st_f32_to_bf16(NAN))));
    assert_int_equal(st_f32_to_bf16(-0.0f), 0x8000);
}

/* ---- the writer ---------------------------------------------------------- */

static void test_writer_roundtrip(void **state)
{
    const char *dir = s_subdir(state, "written");
    const char *path = s_join(dir, "model.safetensors");
    err_t err = {0};
    st_writer_t *w = st_writer_new(path, &err);
    assert_non_null(w);
    const int64_t s_a[] = {3, 5}, s_b[] = {7}, s_c[] = {2, 3, 2};
    assert_int_equal(st_writer_add(w, "a.f32", ST_F32, 2, s_a, &err), 0);
    assert_int_equal(st_writer_add(w, "b.f16", ST_F16, 1, s_b, &err), 0);
    assert_int_equal(st_writer_add(w, "c.bf16", ST_BF16, 3, s_c, &err), 0);
    assert_int_equal(st_writer_add(w, "d.scalar", ST_F32, 0, NULL, &err), 0);
    const int64_t s_e[] = {0, 9};
    assert_int_equal(st_writer_add(w, "e.empty", ST_F32, 2, s_e, &err), 0);
    assert_int_equal(st_writer_data_bytes(w), 60 + 14 + 24 + 4);
    /* duplicates and reserved names */
    errno = 0;
    assert_int_equal(st_writer_add(w, "a.f32", ST_F32, 2, s_a, &err), -1);
    assert_int_equal(errno, EINVAL);
    s_expect_msg(&err, "a.f32", path);
    assert_int_equal(st_writer_add(w, "__metadata__", ST_F32, 2, s_a, &err),
                     -1);
    const int64_t neg[] = {-1};
    assert_int_equal(st_writer_add(w, "neg", ST_F32, 1, neg, &err), -1);
    assert_int_equal(st_writer_add(w, "bad\xff", ST_F32, 1, s_b, &err), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(st_writer_add(w, "dt", (st_dtype_t)9, 1, s_b, &err), -1);
    /* data before the header */
    float v[64];
    for (int i = 0; i < 64; i++)
        v[i] = (float)i / 3.0f - 5.0f;
    assert_int_equal(st_writer_write(w, v, 1, &err), -1);
    assert_int_equal(st_writer_begin(w, &err), 0);
    assert_int_equal(st_writer_add(w, "late", ST_F32, 1, s_b, &err), -1);
    /* a.f32 in three pieces, b.f16 in one, c.bf16 in two */
    assert_int_equal(st_writer_write(w, v, 4, &err), 0);
    assert_int_equal(st_writer_write(w, v + 4, 0, &err), 0);
    assert_int_equal(st_writer_write(w, v + 4, 10, &err), 0);
    errno = 0;
    assert_int_equal(st_writer_write(w, v + 14, 2, &err), -1); /* crosses */
    assert_int_equal(errno, EINVAL);
    s_expect_msg(&err, "a.f32", NULL);
    assert_int_equal(st_writer_write(w, v + 14, 1, &err), 0);
    assert_int_equal(st_writer_write(w, v + 15, 7, &err), 0);
    assert_int_equal(st_writer_write(w, v + 22, 5, &err), 0);
    assert_int_equal(st_writer_write(w, v + 27, 7, &err), 0);
    errno = 0;
    assert_int_equal(st_writer_finish(w, &err), -1); /* d.scalar missing */
    assert_int_equal(errno, EINVAL);
    s_expect_msg(&err, "d.scalar", NULL);
    assert_int_equal(st_writer_write(w, v + 34, 1, &err), 0);
    errno = 0;
    assert_int_equal(st_writer_write(w, v, 1, &err), -1); /* past the end */
    assert_int_equal(errno, EINVAL);
    assert_int_equal(st_writer_finish(w, &err), 0);
    st_writer_destroy(&w);
    assert_null(w);
    st_writer_destroy(&w);

    /* the file: header padded with spaces to a multiple of 8 */
    size_t n = 0;
    char *bytes = testutil_read_file(path, &n);
    assert_non_null(bytes);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | (uint8_t)bytes[i];
    assert_int_equal(hlen % 8, 0);
    assert_int_equal(n, 8 + hlen + 102);
    assert_non_null(strstr(bytes + 8, "\"__metadata__\":{\"format\":\"pt\"}"));
    assert_true(bytes[8 + hlen - 1] == ' ' || bytes[8 + hlen - 1] == '}');
    free(bytes);

    safetensors_t *st = s_open_ok(dir);
    assert_int_equal(safetensors_count(st), 5);
    const float *a = safetensors_f32(st, "a.f32", -1, 2, s_a, &err);
    assert_non_null(a);
    assert_true(s_in_file_mapping(a, 60, path));
    for (int i = 0; i < 15; i++)
        assert_true(s_same_bits(a[i], v[i]));
    const float *b = safetensors_f32(st, "b.f16", -1, 1, s_b, &err);
    for (int i = 0; i < 7; i++)
        assert_true(s_same_bits(b[i], st_f16_to_f32(st_f32_to_f16(v[15 + i]))));
    const float *c = safetensors_f32(st, "c.bf16", -1, 3, s_c, &err);
    for (int i = 0; i < 12; i++)
        assert_true(
            s_same_bits(c[i], st_bf16_to_f32(st_f32_to_bf16(v[22 + i]))));
    const float *d = safetensors_f32(st, "d.scalar", -1, 0, NULL, &err);
    assert_true(s_same_bits(*d, v[34]));
    safetensors_destroy(&st);
}

static void test_writer_failures(void **state)
{
    const char *dir = s_subdir(state, "writerfail");
    err_t err = {0};
    errno = 0;
    assert_null(st_writer_new(s_join(dir, "no/such/dir.safetensors"), &err));
    assert_int_equal(errno, ENOENT);
    s_expect_msg(&err, "no/such/dir.safetensors", NULL);

    /* an unfinished file is removed on destroy */
    const char *path = s_join(dir, "partial.safetensors");
    st_writer_t *w = st_writer_new(path, &err);
    const int64_t shape[] = {4};
    assert_int_equal(st_writer_add(w, "x", ST_F32, 1, shape, &err), 0);
    assert_int_equal(st_writer_begin(w, &err), 0);
    assert_int_equal(st_writer_begin(w, &err), -1);
    const float v[4] = {1, 2, 3, 4};
    assert_int_equal(st_writer_write(w, v, 2, &err), 0);
    assert_int_equal(access(path, F_OK), 0);
    st_writer_destroy(&w);
    assert_int_equal(access(path, F_OK), -1);

    /* out of memory in every allocation of a small write */
    int failures = 0;
    for (long k = 1; k < 200; k++) {
        mem_fail_after(k);
        errno = 0;
        w = st_writer_new(path, &err);
        int rc = w ? 0 : -1;
        if (!rc)
            rc = st_writer_add(w, "x", ST_F16, 1, shape, &err);
        if (!rc)
            rc = st_writer_begin(w, &err);
        if (!rc)
            rc = st_writer_write(w, v, 4, &err);
        if (!rc)
            rc = st_writer_finish(w, &err);
        int e = errno;
        mem_fail_after(-1);
        st_writer_destroy(&w);
        if (rc == 0)
            break;
        assert_int_equal(e, ENOMEM);
        assert_int_equal(access(path, F_OK), -1);
        failures++;
    }
    assert_true(failures > 0);
}

static void test_index_writer(void **state)
{
    const char *dir = s_subdir(state, "indexw");
    err_t err = {0};
    static const char *const files[] = {"one.safetensors", "two.safetensors"};
    const int64_t shape[] = {2};
    const float v[2] = {0.25f, -8.0f};
    for (int f = 0; f < 2; f++) {
        st_writer_t *w = st_writer_new(s_join(dir, files[f]), &err);
        assert_non_null(w);
        assert_int_equal(st_writer_add(w, f ? "t.two" : "t.one", ST_BF16, 1,
                                       shape, &err), 0);
        assert_int_equal(st_writer_begin(w, &err), 0);
        assert_int_equal(st_writer_write(w, v, 2, &err), 0);
        assert_int_equal(st_writer_finish(w, &err), 0);
        st_writer_destroy(&w);
    }
    static const char *const tensors[] = {"t.two", "t.one"};
    static const char *const where[] = {"two.safetensors", "one.safetensors"};
    const char *ipath = s_join(dir, "model.safetensors.index.json");
    assert_int_equal(st_index_write(ipath, 8, 2, tensors, where, &err), 0);
    char *text = testutil_read_file(ipath, NULL);
    assert_non_null(strstr(text, "\"total_size\": 8"));
    assert_true(strstr(text, "t.one") < strstr(text, "t.two")); /* sorted */
    free(text);
    safetensors_t *st = s_open_ok(dir);
    assert_int_equal(safetensors_count(st), 2);
    const float *x = safetensors_f32(st, "t.two", -1, 1, shape, &err);
    assert_non_null(x);
    assert_true(x[0] == 0.25f && x[1] == -8.0f);
    safetensors_destroy(&st);

    static const char *const dup[] = {"a", "a"};
    errno = 0;
    assert_int_equal(st_index_write(ipath, 8, 2, dup, where, &err), -1);
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_int_equal(st_index_write(s_join(dir, "no/dir/index.json"), 8, 2,
                                    tensors, where, &err), -1);
    assert_true(errno != 0);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, testutil_tmpdir_setup, testutil_tmpdir_teardown)
    const struct CMUnitTest tests[] = {
        T(test_f32_zero_copy),
        T(test_f16_values),
        T(test_bf16_values_and_slices),
        T(test_f32_slices_zero_copy),
        T(test_misaligned_f32_copied),
        T(test_u8_raw_bytes),
        T(test_f8_raw_views),
        T(test_writer_raw),
        T(test_shape_mismatch_and_missing),
        T(test_no_checkpoint),
        T(test_sharded),
        T(test_sharded_lazy_errors),
        T(test_bad_index),
        T(test_truncated),
        T(test_broken_headers),
        T(test_bad_header_length),
        T(test_corruption_sweep),
        T(test_oom),
        T(test_f16_conversions),
        T(test_bf16_conversions),
        T(test_writer_roundtrip),
        T(test_writer_failures),
        T(test_index_writer),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
