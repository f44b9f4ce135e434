/* test_fixtures: moe-run's engine against the Hugging Face reference outputs
 * of every fixture of a family the engine runs (config_arch_supported), in
 * ../shared/fixtures and in ../shared/fixtures-precision (weights stored in
 * BF16, FP8 E4M3 with block scales or MXFP4, as real checkpoints ship; every
 * folder there, whatever its name, shape or block size): logits
 * of every prompt position within 1e-4 x max|reference logit|, routed experts
 * identical per token and MoE layer (weights within 1e-5), greedy
 * continuation identical; half the experts loaded (as an expert node of two
 * holds them) take about their stored bytes, not their float32 size.
 * Fixtures of families not supported yet are listed
 * as skipped, and must still be refused at load with "not supported yet". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/forward.h"
#include "engine/weights.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "tests/fixture.h"
#include "tests/testutil.h"

enum { MAX_FIXTURES = 64 };

static const double LOGIT_TOLERANCE = 1e-4;   /* x max|reference logit| */
static const double ROUTING_WEIGHT_TOLERANCE = 1e-5;

/* Routing seen during the prompt's forward pass, per layer (length, k). */
typedef struct routing_log {
    int k;
    int length;
    int32_t *ids[FIXTURE_MAX_LAYERS];
    float *weights[FIXTURE_MAX_LAYERS];
} routing_log_t;

static void s_trace(void *ctx, int layer, int pos0, int n_rows, int k,
                    const int32_t *ids, const float *weights)
{
    routing_log_t *log = ctx;
    if (layer >= FIXTURE_MAX_LAYERS || pos0 + n_rows > log->length || k != log->k)
        return;
    memcpy(log->ids[layer] + (size_t)pos0 * k, ids, (size_t)n_rows * k * sizeof *ids);
    memcpy(log->weights[layer] + (size_t)pos0 * k, weights,
           (size_t)n_rows * k * sizeof *weights);
}

static void s_check_logits(const fixture_t *fx, int p, const float *got)
{
    const fixture_prompt_t *pr = &fx->prompts[p];
    size_t n = (size_t)pr->length * fx->vocab;
    double max_ref = 0, max_err = 0;
    for (size_t i = 0; i < n; i++) {
        max_ref = fmax(max_ref, fabs(pr->logits[i]));
        double d = fabs((double)got[i] - pr->logits[i]);
        max_err = isnan(d) ? INFINITY : fmax(max_err, d);
    }
    printf("  %s prompt %d: max |logit error| %.3g (limit %.3g)\n", fx->name, p, max_err,
           LOGIT_TOLERANCE * max_ref);
    assert_true(max_err <= LOGIT_TOLERANCE * max_ref);
}

static void s_check_routing(const fixture_t *fx, int p, const routing_log_t *log)
{
    const fixture_prompt_t *pr = &fx->prompts[p];
    for (int r = 0; r < pr->n_routing; r++) {
        const fixture_routing_t *ref = &pr->routing[r];
        assert_in_range(ref->layer, 0, FIXTURE_MAX_LAYERS - 1);
        for (int i = 0; i < pr->length * fx->k; i++) {
            if (log->ids[ref->layer][i] != ref->experts[i])
                fail_msg("%s prompt %d layer %d token %d: expert %d, reference %d", fx->name,
                         p, ref->layer, i / fx->k, log->ids[ref->layer][i], ref->experts[i]);
            double d = fabs((double)log->weights[ref->layer][i] - ref->weights[i]);
            if (!(d <= ROUTING_WEIGHT_TOLERANCE))
                fail_msg("%s prompt %d layer %d token %d: routing weight off by %g",
                         fx->name, p, ref->layer, i / fx->k, d);
        }
    }
}

static void s_check_greedy(const fixture_t *fx, int p, forward_t *fw, kvcache_t *kv,
                           const float *last_logits, float *scratch)
{
    const fixture_prompt_t *pr = &fx->prompts[p];
    err_t err = {0};
    const float *logits = last_logits;
    for (int i = 0; i < pr->n_greedy; i++) {
        int32_t next = forward_argmax(logits, fx->vocab);
        if (next != pr->greedy[i])
            fail_msg("%s prompt %d: greedy token %d is %d, reference %d", fx->name, p, i,
                     next, pr->greedy[i]);
        if (forward_run(fw, kv, &next, 1, FORWARD_LOGITS_LAST, scratch, &err) < 0)
            fail_msg("decode step %d: %s", i, err.msg);
        logits = scratch;
    }
}

/* Expert e of every layer on node 1 of 2 (the default placement). */
static bool s_even_experts(void *ctx, int layer, int expert)
{
    (void)ctx;
    (void)layer;
    return expert % 2 == 0;
}

/* The routed expert a tensor name belongs to: 0 for a checkpoint with one
 * tensor per expert ("....experts.<e>...", *e set), -2 for one that stacks
 * them ("....experts.<name>"), -1 for none (shared experts included). */
static int s_expert_of(const char *name, int *e)
{
    const char *p = strstr(name, ".experts.");
    if (!p)
        return -1;
    p += strlen(".experts.");
    if (*p < '0' || *p > '9')
        return -2;
    *e = atoi(p);
    return 0;
}

/* A process hosting half the experts (as an expert node of two does) holds
 * about the stored bytes of what it hosts (weights_bytes), not their float32
 * size: matrices are kept as stored, only vectors (gpt-oss's expert biases)
 * are widened. */
static void s_check_hosted_bytes(const char *dir)
{
    err_t err = {0};
    weights_select_t sel = {.dense = false, .hosts = s_even_experts};
    weights_t *w = weights_load(dir, &sel, &err);
    if (!w)
        fail_msg("loading half the experts of %s: %s", dir, err.msg);
    const int n_experts = w->cfg.n_experts;
    const int hosted = (n_experts + 1) / 2;
    double stored = 0, as_f32 = 0, widened = 0;
    for (size_t i = 0; i < safetensors_count(w->st); i++) {
        const char *name = safetensors_name(w->st, i);
        int e = 0, kind = s_expert_of(name, &e);
        if (kind == -1 || (kind == 0 && !s_even_experts(NULL, 0, e)))
            continue;
        const st_tensor_t *t = safetensors_find(w->st, name, &err);
        assert_non_null(t);
        double share = kind == -2 ? (double)hosted / n_experts : 1;
        double values = (double)t->nbytes / st_dtype_size(t->dtype);
        bool vector = t->ndim == (kind == -2 ? 2 : 1);
        bool scales = strstr(name, "_scale") != NULL;
        stored += share * t->nbytes;
        if (vector) /* biases: widened to float32 at load */
            widened += share * (4.0 * values - t->nbytes);
        if (!scales) /* what float32 would hold: 2 values a byte for MXFP4 */
            as_f32 += share * 4.0 * values * (t->dtype == ST_U8 ? 2 : 1);
    }
    double held = (double)weights_bytes(w);
    char what[64];
    weights_describe(w, what, sizeof what);
    printf("  %s: half the experts held in %s: %.0f bytes; stored %.0f (+%.0f widened "
           "vectors), float32 %.0f\n", dir, what, held, stored, widened, as_f32);
    assert_true(held >= 0.95 * (stored + widened) && held <= 1.05 * (stored + widened));
    if (stored < 0.75 * as_f32)
        assert_true(held < 0.8 * as_f32);
    weights_destroy(&w);
}

static void test_fixture(void **state)
{
    const char *dir = *state;
    fixture_t *fx = fixture_load(dir);
    assert_non_null(fx);
    err_t err = {0};
    weights_t *w = weights_load_all(dir, &err);
    if (!w)
        fail_msg("loading %s: %s", dir, err.msg);
    assert_int_equal(w->cfg.vocab_size, fx->vocab);
    assert_int_equal(w->cfg.n_experts_per_tok, fx->k);

    for (int p = 0; p < fx->n_prompts; p++) {
        const fixture_prompt_t *pr = &fx->prompts[p];
        int ctx = pr->length + pr->n_greedy;
        forward_t *fw = forward_new(w, pr->length, ctx, NULL, NULL, &err);
        kvcache_t *kv = kvcache_new(&w->cfg, ctx, &err);
        float *logits = malloc((size_t)pr->length * fx->vocab * sizeof(float));
        float *step = malloc((size_t)fx->vocab * sizeof(float));
        routing_log_t log = {.k = fx->k, .length = pr->length};
        for (int l = 0; l < FIXTURE_MAX_LAYERS; l++) {
            log.ids[l] = calloc((size_t)pr->length * fx->k, sizeof(int32_t));
            log.weights[l] = calloc((size_t)pr->length * fx->k, sizeof(float));
        }
        assert_non_null(fw);
        assert_non_null(kv);
        forward_set_trace(fw, s_trace, &log);
        if (forward_run(fw, kv, pr->ids, pr->length, FORWARD_LOGITS_ALL, logits, &err) < 0)
            fail_msg("prefill: %s", err.msg);
        forward_set_trace(fw, NULL, NULL);

        s_check_logits(fx, p, logits);
        s_check_routing(fx, p, &log);
        s_check_greedy(fx, p, fw, kv,
                       logits + (size_t)(pr->length - 1) * fx->vocab, step);

        for (int l = 0; l < FIXTURE_MAX_LAYERS; l++) {
            free(log.ids[l]);
            free(log.weights[l]);
        }
        free(step);
        free(logits);
        kvcache_destroy(&kv);
        forward_destroy(&fw);
    }
    weights_destroy(&w);
    s_check_hosted_bytes(dir);
    fixture_destroy(&fx);
}

/* A fixture of a family not supported yet: loading it fails, saying so. */
static void test_refused(void **state)
{
    const char *dir = *state;
    err_t err = {0};
    weights_t *w = weights_load_all(dir, &err);
    assert_null(w);
    if (!strstr(err.msg, "not supported yet"))
        fail_msg("%s: message '%s'", dir, err.msg);
}

/* 1: the family of the fixture in dir runs, 0: it parses but is not
 * supported yet, -1: its config does not parse, -2: dir is no fixture (the
 * README, "." and ".."). */
static int s_supported(const char *dir)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f)
        return -2;
    static char text[1 << 16];
    size_t len = fread(text, 1, sizeof text, f);
    fclose(f);
    config_t cfg;
    if (config_parse_all(&cfg, text, len, path, NULL) < 0)
        return -1;
    return config_arch_supported(cfg.arch) ? 1 : 0;
}

/* The fixtures of both roots in one list (paths malloc'd; n_plain of them
 * from fixture_root()). -1 when the plain root has none. */
static int s_list_all(char ***paths_out, int *n_plain)
{
    char **plain = NULL, **precision = NULL;
    int n = fixture_list(fixture_root(), "", &plain);
    if (n <= 0) {
        fprintf(stderr, "test_fixtures: no fixture under %s\n", fixture_root());
        return -1;
    }
    int m = fixture_list(fixture_root_precision(), "", &precision);
    if (m < 0) {
        fprintf(stderr, "test_fixtures: no precision fixtures under %s\n",
                fixture_root_precision());
        m = 0;
    }
    char **all = malloc((size_t)(n + m + 1) * sizeof *all);
    if (!all)
        return -1;
    memcpy(all, plain, (size_t)n * sizeof *all);
    if (m > 0)
        memcpy(all + n, precision, (size_t)m * sizeof *all);
    free(plain);
    free(precision);
    *paths_out = all;
    *n_plain = n;
    return n + m;
}

int main(void)
{
    char **paths = NULL;
    int n_plain = 0;
    int n = s_list_all(&paths, &n_plain);
    if (n <= 0)
        return 1;
    if (n > MAX_FIXTURES) {
        fprintf(stderr, "test_fixtures: %d fixtures, more than %d\n", n, MAX_FIXTURES);
        return 1;
    }
    struct CMUnitTest tests[MAX_FIXTURES];
    char names[MAX_FIXTURES][160];
    int n_run = 0, n_tests = 0;
    for (int i = 0; i < n; i++) {
        const char *slash = strrchr(paths[i], '/');
        int sup = s_supported(paths[i]);
        if (sup == -2)
            continue;
        if (sup < 0) {
            fprintf(stderr, "test_fixtures: %s has no readable config\n", paths[i]);
            return 1;
        }
        snprintf(names[n_tests], sizeof names[n_tests], "%s%s%s",
                 i >= n_plain ? "precision/" : "", slash ? slash + 1 : paths[i],
                 sup ? "" : " (refused: not supported yet)");
        tests[n_tests++] = (struct CMUnitTest){
            .name = names[n_tests - 1],
            .test_func = sup ? test_fixture : test_refused,
            .initial_state = paths[i],
        };
        n_run += sup;
    }
    if (n_run == 0) {
        fprintf(stderr, "test_fixtures: no fixture of a supported family\n");
        return 1;
    }
    int failed = _cmocka_run_group_tests("fixtures", tests, (size_t)n_tests, NULL, NULL);
    fixture_free_list(paths, n);
    return failed;
}
