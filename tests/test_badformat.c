/* test_badformat: broken quantized checkpoints through the real programs.
 *
 * A precision fixture (../shared/fixtures-precision; the first FP8 one and
 * the first MXFP4 one found, whatever their names) is copied to a scratch
 * folder and damaged: its safetensors rewritten with st_writer (a tensor
 * dropped, reshaped, its data cut short or a scale set to NaN), or its
 * config.json edited with jansson (an unknown quant_method or fmt, a block
 * size its scales do not fit). moe-run and moe-expert must each fail with
 * exit status 1 and one error line naming the file or field and the tensor,
 * print no endpoint, and leave no process behind.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "model/config.h"
#include "model/safetensors.h"
#include "model/st_writer.h"
#include "tests/fixture.h"
#include "tests/testutil.h"

static char s_bin_run[700], s_bin_expert[700];
static char *s_tmp;

/* ---- the fixture's header ------------------------------------------------ */

typedef struct s_tensor {
    char name[160];
    st_dtype_t dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
} s_tensor_t;

typedef struct s_header {
    int n;
    s_tensor_t *t;      /* (n), in file order */
} s_header_t;

static st_dtype_t s_dtype(const char *name)
{
    static const st_dtype_t all[] = {ST_F32, ST_F16, ST_BF16, ST_U8, ST_F8_E4M3};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(name, st_dtype_name(all[i])) == 0)
            return all[i];
    fail_msg("unexpected dtype %s", name);
    return ST_ANY;
}

/* The tensors of dir/model.safetensors, ordered by data offset. */
static void s_header_read(const char *dir, s_header_t *h)
{
    char path[800];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    uint8_t len8[8];
    assert_int_equal(fread(len8, 1, 8, f), 8);
    uint64_t len = 0;
    for (int i = 7; i >= 0; i--)
        len = len << 8 | len8[i];
    char *text = malloc(len + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, len, f), len);
    fclose(f);
    json_t *root = json_loadb(text, len, 0, NULL);
    free(text);
    assert_non_null(root);
    h->t = calloc(json_object_size(root) + 1, sizeof *h->t);
    int64_t *begin = calloc(json_object_size(root) + 1, sizeof *begin);
    assert_non_null(h->t);
    h->n = 0;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0)
            continue;
        s_tensor_t *t = &h->t[h->n];
        snprintf(t->name, sizeof t->name, "%s", key);
        t->dtype = s_dtype(json_string_value(json_object_get(v, "dtype")));
        json_t *sh = json_object_get(v, "shape");
        t->ndim = (int)json_array_size(sh);
        for (int d = 0; d < t->ndim; d++)
            t->shape[d] = json_integer_value(json_array_get(sh, (size_t)d));
        begin[h->n++] = json_integer_value(json_array_get(json_object_get(v, "data_offsets"), 0));
    }
    /* insertion sort by offset: a few hundred tensors */
    for (int i = 1; i < h->n; i++)
        for (int j = i; j > 0 && begin[j - 1] > begin[j]; j--) {
            s_tensor_t t = h->t[j];
            h->t[j] = h->t[j - 1];
            h->t[j - 1] = t;
            int64_t b = begin[j];
            begin[j] = begin[j - 1];
            begin[j - 1] = b;
        }
    free(begin);
    json_decref(root);
}

static const s_tensor_t *s_header_find(const s_header_t *h, const char *name)
{
    for (int i = 0; i < h->n; i++)
        if (strcmp(h->t[i].name, name) == 0)
            return &h->t[i];
    return NULL;
}

/* The first tensor whose name holds `part` and ends with `suffix`, of dtype
 * (ST_ANY: any); NULL when none. */
static const s_tensor_t *s_header_pick(const s_header_t *h, const char *part,
                                       const char *suffix, st_dtype_t dtype)
{
    for (int i = 0; i < h->n; i++) {
        size_t n = strlen(h->t[i].name), m = strlen(suffix);
        if (strstr(h->t[i].name, part) && n >= m &&
            strcmp(h->t[i].name + n - m, suffix) == 0 &&
            (dtype == ST_ANY || h->t[i].dtype == dtype))
            return &h->t[i];
    }
    return NULL;
}

/* ---- damage -------------------------------------------------------------- */

typedef enum s_harm {
    S_NONE,         /* written back as it was */
    S_DROP,         /* the tensor is absent */
    S_RESHAPE,      /* its dim 0 grows by one (data to match) */
    S_LASTDIM,      /* its last dim shrinks by half (data to match) */
    S_WIDEN,        /* its last dim grows by one (data to match) */
    S_TRUNCATE,     /* written last, the file cut 3 bytes into its data */
    S_NAN,          /* F32: its first value NaN; U8 scales: 0xFF (E8M0 NaN) */
} s_harm_t;

/* Copies the fixture in src to dst (its *.json files) with
 * model.safetensors rewritten by st_writer, `victim` harmed. */
static void s_rewrite(const char *src, const char *dst, const char *victim, s_harm_t harm)
{
    char cmd[2400], path[800];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && cp '%s'/*.json '%s/'", dst, dst,
             src, dst);
    assert_int_equal(system(cmd), 0);
    s_header_t h;
    s_header_read(src, &h);
    err_t err = {0};
    safetensors_t *st = safetensors_open(src, &err);
    if (!st)
        fail_msg("%s", err.msg);
    snprintf(path, sizeof path, "%s/model.safetensors", dst);
    st_writer_t *w = st_writer_new(path, &err);
    assert_non_null(w);

    /* declaration order: the file's, the victim last when it is cut */
    int *order = calloc((size_t)h.n + 1, sizeof *order), n = 0, vi = -1;
    assert_non_null(order);
    for (int i = 0; i < h.n; i++) {
        if (strcmp(h.t[i].name, victim) == 0) {
            vi = i;
            if (harm == S_DROP || harm == S_TRUNCATE)
                continue;
        }
        order[n++] = i;
    }
    if (vi < 0)
        fail_msg("no tensor %s in %s", victim, src);
    if (harm == S_TRUNCATE)
        order[n++] = vi;
    s_tensor_t vt = h.t[vi];
    if (harm == S_RESHAPE)
        vt.shape[0]++;
    if (harm == S_LASTDIM) {
        assert_true(vt.shape[vt.ndim - 1] >= 2);
        vt.shape[vt.ndim - 1] /= 2;
    }
    if (harm == S_WIDEN)
        vt.shape[vt.ndim - 1]++;
    for (int k = 0; k < n; k++) {
        const s_tensor_t *t = order[k] == vi ? &vt : &h.t[order[k]];
        if (st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, &err) < 0)
            fail_msg("%s", err.msg);
    }
    assert_int_equal(st_writer_begin(w, &err), 0);
    for (int k = 0; k < n; k++) {
        const s_tensor_t *t = &h.t[order[k]];
        size_t nbytes = 0;
        const uint8_t *p = safetensors_raw(st, t->name, -1, t->ndim, t->shape, t->dtype,
                                           &nbytes, NULL, &err);
        if (!p)
            fail_msg("%s", err.msg);
        if (order[k] != vi) {
            assert_int_equal(st_writer_write_raw(w, p, nbytes, &err), 0);
            continue;
        }
        size_t esize = st_dtype_size(t->dtype), want = esize;
        for (int d = 0; d < vt.ndim; d++)
            want *= (size_t)vt.shape[d];
        uint8_t *buf = calloc(want + nbytes + 8, 1);
        assert_non_null(buf);
        if (harm == S_LASTDIM || harm == S_WIDEN) { /* each row cut or padded */
            size_t row = (size_t)t->shape[t->ndim - 1] * esize, n_rows = nbytes / row;
            size_t new_row = want / n_rows;
            for (size_t r = 0; r < n_rows; r++) {
                memcpy(buf + r * new_row, p + r * row, row < new_row ? row : new_row);
                if (new_row > row)
                    memcpy(buf + r * new_row + row, p + r * row, new_row - row);
            }
        } else {
            memcpy(buf, p, nbytes < want ? nbytes : want);
            for (size_t i = nbytes; i < want; i++)
                buf[i] = buf[i % nbytes]; /* a grown dim: plausible values */
        }
        if (harm == S_NAN && t->dtype == ST_F32) {
            float nan = NAN;
            memcpy(buf, &nan, sizeof nan);
        } else if (harm == S_NAN) {
            buf[0] = 0xff;
        }
        assert_int_equal(st_writer_write_raw(w, buf, want, &err), 0);
        free(buf);
    }
    assert_int_equal(st_writer_finish(w, &err), 0);
    st_writer_destroy(&w);
    safetensors_destroy(&st);
    free(order);
    free(h.t);
    if (harm == S_TRUNCATE) {
        snprintf(cmd, sizeof cmd, "truncate -s -%zu '%s'",
                 st_dtype_size(vt.dtype) * 3 > 3 ? st_dtype_size(vt.dtype) * 3 : 3, path);
        assert_int_equal(system(cmd), 0);
    }
}

/* Edits dst/config.json (a copy of src/config.json, with the safetensors
 * linked): quantization_config[key] = value (JSON text). */
static void s_config_edit(const char *src, const char *dst, const char *key, const char *value)
{
    char cmd[2400], path[800];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && cp '%s'/* '%s/'", dst, dst, src,
             dst);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/config.json", dst);
    json_t *root = json_load_file(path, 0, NULL);
    assert_non_null(root);
    json_t *q = json_object_get(root, "quantization_config");
    assert_non_null(q);
    json_t *v = json_loads(value, JSON_DECODE_ANY, NULL);
    assert_non_null(v);
    json_object_set_new(q, key, v);
    assert_int_equal(json_dump_file(root, path, JSON_INDENT(2)), 0);
    json_decref(root);
}

/* ---- the programs -------------------------------------------------------- */

/* No process of ours still has dir on its command line. */
static void s_expect_no_process(const char *dir)
{
    DIR *proc = opendir("/proc");
    assert_non_null(proc);
    for (struct dirent *de; (de = readdir(proc));) {
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        char path[300], buf[4096];
        snprintf(path, sizeof path, "/proc/%s/cmdline", de->d_name);
        FILE *f = fopen(path, "rb");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        for (size_t i = 0; i < n; i++)
            if (buf[i] == '\0')
                buf[i] = ' ';
        buf[n] = '\0';
        if (strstr(buf, dir) && (strstr(buf, "moe-run") || strstr(buf, "moe-expert")))
            fail_msg("process %s still runs on %s: %s", de->d_name, dir, buf);
    }
    closedir(proc);
}

/* Cases that did not fail as they must, this test case (each is printed;
 * the case fails at its end, so that one run lists them all). */
static int s_missed;

/* prog fails with exit 1, one line "prog: ..." holding w1 and w2, no
 * endpoint on stdout, and nothing left running. */
static void s_expect_fail(const char *prog, const char *args, const char *dir, const char *w1,
                          const char *w2)
{
    char *out = NULL, *err_text = NULL;
    /* a program that wrongly starts serving is stopped, and counted */
    int rc = testutil_run_program("timeout 30", prog, args, &out, &err_text);
    const char *name = strrchr(prog, '/') + 1;
    int lines = 0;
    bool named = true;
    char *copy = strdup(err_text ? err_text : "");
    for (char *line = strtok(copy, "\n"); line; line = strtok(NULL, "\n")) {
        if (strstr(line, ": openblas "))
            continue;
        lines++;
        named &= strncmp(line, name, strlen(name)) == 0 && line[strlen(name)] == ':';
    }
    free(copy);
    printf("    %s: exit %d: %s", name, rc, err_text ? err_text : "(no stderr)\n");
    if (rc != 1 || lines != 1 || !named || !err_text || (w1 && !strstr(err_text, w1)) ||
        (w2 && !strstr(err_text, w2)) || (out && strstr(out, "tcp://"))) {
        printf("    MISSED: %s %s: exit %d (want 1), stdout: %s (want one line '%s: ...' "
               "naming '%s' and '%s')\n", name, args, rc, out ? out : "", name, w1 ? w1 : "",
               w2 ? w2 : "");
        s_missed++;
    }
    free(out);
    free(err_text);
    s_expect_no_process(dir);
}

/* moe-run and moe-expert (node 1 of 1: it hosts every expert; with --preload
 * when preload) on dir fail naming w1 and w2. */
static void s_expect_both_fail(const char *dir, bool expert_too, bool preload, const char *w1,
                               const char *w2)
{
    char args[1200];
    snprintf(args, sizeof args, "--model '%s' --prompt-ids 1,2 --max-tokens 2", dir);
    s_expect_fail(s_bin_run, args, dir, w1, w2);
    if (!expert_too)
        return;
    snprintf(args, sizeof args, "--model '%s' --node-id 1 --nodes 1 --threads 1%s", dir,
             preload ? " --preload" : "");
    s_expect_fail(s_bin_expert, args, dir, w1, w2);
}

/* The first precision fixture whose config declares quantization method. */
static bool s_find_fixture(config_quant_method_t method, char *dir, size_t size)
{
    char **paths = NULL;
    int n = fixture_list(fixture_root_precision(), "", &paths);
    bool found = false;
    for (int i = 0; i < n && !found; i++) {
        config_t cfg;
        err_t err = {0};
        if (config_load(&cfg, paths[i], &err) == 0 && cfg.quant.method == method) {
            snprintf(dir, size, "%s", paths[i]);
            found = true;
        }
    }
    if (n > 0)
        fixture_free_list(paths, n);
    return found;
}

static int s_setup(void **state)
{
    (void)state;
    const char *bin = testutil_env("MOE_BIN", "build/bin");
    snprintf(s_bin_run, sizeof s_bin_run, "%s/moe-run", bin);
    snprintf(s_bin_expert, sizeof s_bin_expert, "%s/moe-expert", bin);
    s_tmp = testutil_mkdtemp("test_badformat");
    return s_tmp ? 0 : -1;
}

static int s_teardown(void **state)
{
    (void)state;
    testutil_rmtree(s_tmp);
    free(s_tmp);
    return 0;
}

/* The undamaged copy runs (the harness itself breaks nothing). */
static void s_expect_ok(const char *dir)
{
    char args[1200];
    snprintf(args, sizeof args, "--model '%s' --prompt-ids 1,2 --max-tokens 2", dir);
    char *out = NULL, *err_text = NULL;
    int rc = testutil_run_program("timeout 60", s_bin_run, args, &out, &err_text);
    if (rc != 0)
        fail_msg("moe-run on an intact copy %s: exit %d: %s", dir, rc, err_text);
    free(out);
    free(err_text);
}

/* DeepSeek-V3 FP8: scales missing, mis-shaped, NaN; a weight cut short or
 * mis-shaped; quant_method, fmt and block sizes the file does not fit. */
static void test_fp8_damaged(void **state)
{
    (void)state;
    s_missed = 0;
    char src[700], dst[800], w[200], s[200];
    if (!s_find_fixture(CONFIG_QUANT_FP8, src, sizeof src)) {
        testutil_skip_unless_possible(false, "no FP8 fixture under %s",
                                      fixture_root_precision());
        return;
    }
    printf("  fixture %s\n", src);
    s_header_t h;
    s_header_read(src, &h);
    /* an expert's weight (hosted by node 1 of 1), and an attention one */
    const s_tensor_t *ew = s_header_pick(&h, ".experts.", ".weight", ST_F8_E4M3);
    const s_tensor_t *aw = s_header_pick(&h, ".self_attn.", ".weight", ST_F8_E4M3);
    assert_non_null(ew);
    assert_non_null(aw);
    snprintf(w, sizeof w, "%s", ew->name);
    snprintf(s, sizeof s, "%s_scale_inv", ew->name);
    assert_non_null(s_header_find(&h, s));

    snprintf(dst, sizeof dst, "%s/fp8-intact", s_tmp);
    s_rewrite(src, dst, w, S_NONE);
    s_expect_ok(dst);
    s_config_edit(src, dst, "fmt", "\"e4m3\"");
    s_expect_ok(dst);

    static const struct {
        const char *what;
        int victim;     /* 0: the expert weight, 1: its scales, 2: attention scales */
        s_harm_t harm;
        bool preload;
    } cases[] = {
        {"expert scales missing", 1, S_DROP, false},
        {"expert scales with a block row too many", 1, S_RESHAPE, false},
        {"expert scales with a block column too many", 1, S_WIDEN, false},
        {"expert weight cut short (truncated file)", 0, S_TRUNCATE, false},
        {"expert weight with a row too many", 0, S_RESHAPE, false},
        {"expert scale NaN", 1, S_NAN, true},
        {"attention scale NaN", 2, S_NAN, true},
    };
    char as[200];
    snprintf(as, sizeof as, "%s_scale_inv", aw->name);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *victim = cases[i].victim == 0 ? w : cases[i].victim == 1 ? s : as;
        printf("  %s: %s\n", cases[i].what, victim);
        snprintf(dst, sizeof dst, "%s/fp8-%zu", s_tmp, i);
        s_rewrite(src, dst, victim, cases[i].harm);
        /* the attention lives with the coordinator: moe-expert never reads it */
        s_expect_both_fail(dst, cases[i].victim != 2, cases[i].preload, victim,
                           "model.safetensors");
    }

    static const struct {
        const char *key, *value, *w1;
    } configs[] = {
        {"quant_method", "\"fp9\"", "quantization_config.quant_method 'fp9'"},
        {"fmt", "\"e5m2\"", "quantization_config.fmt 'e5m2'"},
        {"activation_scheme", "\"static\"", "quantization_config.activation_scheme"},
        {"weight_block_size", "[0, 32]", "quantization_config.weight_block_size"},
    };
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
        printf("  config.json quantization_config.%s = %s\n", configs[i].key, configs[i].value);
        snprintf(dst, sizeof dst, "%s/fp8-config-%zu", s_tmp, i);
        s_config_edit(src, dst, configs[i].key, configs[i].value);
        s_expect_both_fail(dst, true, false, configs[i].w1, "config.json");
    }
    /* a block size the scales were not made for: blocks of one row and
     * column (or, where the file's are that, of 2^20) change the grid of
     * every weight wider than one block */
    config_t cfg;
    err_t err = {0};
    assert_int_equal(config_load(&cfg, src, &err), 0);
    char blocks[64];
    snprintf(blocks, sizeof blocks, "[%d, %d]", cfg.quant.block_n == 1 ? 1 << 20 : 1,
             cfg.quant.block_k == 1 ? 1 << 20 : 1);
    printf("  config.json weight_block_size %s, scales made for [%d, %d]\n", blocks,
           cfg.quant.block_n, cfg.quant.block_k);
    snprintf(dst, sizeof dst, "%s/fp8-blocks", s_tmp);
    s_config_edit(src, dst, "weight_block_size", blocks);
    s_expect_both_fail(dst, false, false, "weight_scale_inv", "model.safetensors");
    free(h.t);
    if (s_missed)
        fail_msg("%d damaged FP8 checkpoint(s) not refused as they must be (MISSED above)",
                 s_missed);
}

/* gpt-oss MXFP4: scales missing, mis-shaped, NaN (E8M0 0xFF); blocks cut
 * short or mis-shaped; an unknown quant_method. */
static void test_mxfp4_damaged(void **state)
{
    (void)state;
    s_missed = 0;
    char src[700], dst[800], b[200], s[200];
    if (!s_find_fixture(CONFIG_QUANT_MXFP4, src, sizeof src)) {
        testutil_skip_unless_possible(false, "no MXFP4 fixture under %s",
                                      fixture_root_precision());
        return;
    }
    printf("  fixture %s\n", src);
    s_header_t h;
    s_header_read(src, &h);
    const s_tensor_t *bt = s_header_pick(&h, ".experts.", "_blocks", ST_U8);
    assert_non_null(bt);
    snprintf(b, sizeof b, "%s", bt->name);
    snprintf(s, sizeof s, "%.*s_scales", (int)(strlen(b) - strlen("_blocks")), b);
    assert_non_null(s_header_find(&h, s));

    snprintf(dst, sizeof dst, "%s/mxfp4-intact", s_tmp);
    s_rewrite(src, dst, b, S_NONE);
    s_expect_ok(dst);

    static const struct {
        const char *what;
        int victim;     /* 0: blocks, 1: scales */
        s_harm_t harm;
        bool preload;
    } cases[] = {
        {"scales missing", 1, S_DROP, false},
        {"scales with an expert too many", 1, S_RESHAPE, false},
        {"scales with half the blocks", 1, S_LASTDIM, false},
        {"blocks cut short (truncated file)", 0, S_TRUNCATE, false},
        {"blocks of 8 bytes, not 16", 0, S_LASTDIM, false},
        {"an E8M0 scale of 0xFF (NaN)", 1, S_NAN, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *victim = cases[i].victim == 0 ? b : s;
        printf("  %s: %s\n", cases[i].what, victim);
        snprintf(dst, sizeof dst, "%s/mxfp4-%zu", s_tmp, i);
        s_rewrite(src, dst, victim, cases[i].harm);
        s_expect_both_fail(dst, true, cases[i].preload, victim, "model.safetensors");
    }
    printf("  config.json quantization_config.quant_method = \"mxfp5\"\n");
    snprintf(dst, sizeof dst, "%s/mxfp4-config", s_tmp);
    s_config_edit(src, dst, "quant_method", "\"mxfp5\"");
    s_expect_both_fail(dst, true, false, "quantization_config.quant_method 'mxfp5'",
                       "config.json");
    free(h.t);
    if (s_missed)
        fail_msg("%d damaged MXFP4 checkpoint(s) not refused as they must be (MISSED above)",
                 s_missed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp8_damaged),
        cmocka_unit_test(test_mxfp4_damaged),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
