/* fuzz_safetensors: safetensors_open on an arbitrary model.safetensors, or,
 * when the input starts with '{', on an arbitrary
 * model.safetensors.index.json next to a fixed valid shard (shard.safetensors,
 * tensors "w" F32 (2, 3) and "h" F16 (3)). Each input is written to a file
 * (fuzz_tmp.h): the reader mmaps files, and the write costs little next to
 * the parse. Every tensor the header names is then looked up and read as
 * float32 whole and as slice 0, as the engine reads experts, and raw
 * (safetensors_raw: any dtype, its own, a wrong one), as the loader reads
 * F8_E4M3 and U8 (MXFP4) tensors.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_tmp.h"
#include "fuzz/fuzz_verbose.h"
#include "model/safetensors.h"
#include "model/st_writer.h"

static void s_shard(void)
{
    static int done;
    if (done)
        return;
    char path[512];
    snprintf(path, sizeof path, "%s/shard.safetensors", fuzz_tmp_get());
    snprintf(fuzz_tmp_files[3], sizeof fuzz_tmp_files[3], "%s", path);
    err_t err = {0};
    st_writer_t *w = st_writer_new(path, &err);
    static const int64_t w_shape[] = {2, 3}, h_shape[] = {3};
    static const float v[] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    if (!w || st_writer_add(w, "w", ST_F32, 2, w_shape, &err) < 0 ||
        st_writer_add(w, "h", ST_F16, 1, h_shape, &err) < 0 || st_writer_begin(w, &err) < 0 ||
        st_writer_write(w, v, 6, &err) < 0 ||
        st_writer_write(w, v + 6, 3, &err) < 0 || st_writer_finish(w, &err) < 0) {
        fprintf(stderr, "fuzz_safetensors: writing the shard: %s\n", err.msg);
        abort();
    }
    st_writer_destroy(&w);
    done = 1;
}

static void s_check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_safetensors: broken promise: %s\n", what);
        abort();
    }
}

/* The raw views of t: whole and slice 0, the bytes the header promises. */
static void s_read_raw(safetensors_t *st, const char *name, const st_tensor_t *t)
{
    err_t err = {0};
    size_t nbytes = 0;
    st_dtype_t dt = ST_ANY;
    const uint8_t *p = safetensors_raw(st, name, -1, t->ndim, t->shape, ST_ANY, &nbytes,
                                       &dt, &err);
    s_check(p == t->data && nbytes == t->nbytes && dt == t->dtype, "raw whole view");
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < nbytes; i++)
        sink ^= p[i];
    p = safetensors_raw(st, name, -1, t->ndim, t->shape, t->dtype, NULL, NULL, &err);
    s_check(p == t->data, "raw view of its own dtype");
    st_dtype_t other = t->dtype == ST_F8_E4M3 ? ST_U8 : ST_F8_E4M3;
    s_check(!safetensors_raw(st, name, -1, t->ndim, t->shape, other, NULL, NULL, &err),
            "raw view of another dtype refused");
    if (t->ndim >= 1 && t->shape[0] > 0) {
        p = safetensors_raw(st, name, t->shape[0] - 1, t->ndim - 1, t->shape + 1, ST_ANY,
                            &nbytes, NULL, &err);
        s_check(p && nbytes == t->nbytes / (size_t)t->shape[0] &&
                    p + nbytes == (const uint8_t *)t->data + t->nbytes,
                "raw last slice");
        for (size_t i = 0; i < nbytes; i++)
            sink ^= p[i];
        s_check(!safetensors_raw(st, name, t->shape[0], t->ndim - 1, t->shape + 1, ST_ANY,
                                 NULL, NULL, &err),
                "raw slice out of range refused");
    }
    (void)sink;
}

static void s_read(safetensors_t *st, const char *name)
{
    err_t err = {0};
    const st_tensor_t *t = safetensors_find(st, name, &err);
    fuzz_verbose(name, t ? 0 : -1, err.msg);
    if (!t)
        return;
    s_read_raw(st, name, t);
    volatile float sink = 0;
    size_t n = t->nbytes / st_dtype_size(t->dtype);
    const float *f = safetensors_f32(st, name, -1, t->ndim, t->shape, &err);
    s_check(!f || (t->dtype != ST_U8 && t->dtype != ST_F8_E4M3),
            "U8 and F8_E4M3 are never read as float32");
    if (f)
        for (size_t i = 0; i < n; i++)
            sink += f[i];
    if (t->ndim >= 1 && t->shape[0] > 0) {
        f = safetensors_f32(st, name, 0, t->ndim - 1, t->shape + 1, &err);
        if (f)
            for (size_t i = 0; i < n / (size_t)t->shape[0]; i++)
                sink += f[i];
    }
    (void)sink;
}

/* The tensor names a header or index names, or NULL. */
static json_t *s_names(const uint8_t *data, size_t size, int index)
{
    if (index) {
        json_t *root = json_loadb((const char *)data, size, 0, NULL);
        json_t *wm = json_incref(json_object_get(root, "weight_map"));
        json_decref(root);
        return wm;
    }
    if (size < 8)
        return NULL;
    uint64_t len = 0;
    for (int i = 7; i >= 0; i--)
        len = len << 8 | data[i];
    if (len > size - 8)
        return NULL;
    return json_loadb((const char *)data + 8, (size_t)len, 0, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int index = size > 0 && data[0] == '{';
    if (index) {
        s_shard();
        fuzz_tmp_remove(0);
        fuzz_tmp_write(1, "model.safetensors.index.json", data, size);
    } else {
        fuzz_tmp_remove(1);
        fuzz_tmp_write(0, "model.safetensors", data, size);
    }
    err_t err = {0};
    safetensors_t *st = safetensors_open(fuzz_tmp_get(), &err);
    fuzz_verbose("safetensors_open", st ? 0 : -1, err.msg);
    if (!st)
        return 0;
    (void)safetensors_count(st);
    json_t *names = s_names(data, size, index);
    const char *key;
    json_t *v;
    if (json_is_object(names))
        json_object_foreach(names, key, v) s_read(st, key);
    s_read(st, "w");
    json_decref(names);
    safetensors_destroy(&st);
    return 0;
}
