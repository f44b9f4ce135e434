/* test_precision: weights as real checkpoints store them, through the real
 * programs.
 *
 * Every folder of ../shared/fixtures-precision (BF16, FP8 E4M3 with block
 * scales, MXFP4 experts; whatever their names, shapes and block sizes: the
 * folders are listed, not named here) must give the reference's greedy
 * tokens and logits (within 1e-4 x max|reference logit|, as
 * ../shared/fixtures) in moe-run and through a cluster of a coordinator and
 * two expert nodes (cluster/local.sh), the cluster equal to moe-run. With
 * --quantization q8_0 and q4_0, the cluster gives what moe-run gives with the
 * same option (and that is not the unquantized answer). A node of a BF16 model holds its experts as stored: its
 * resident memory is about the BF16 bytes of what it hosts, clearly below
 * that of the same model in float32.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/idlist.h"
#include "core/mem.h"
#include "model/config.h"
#include "proto/client_rpc.h"
#include "tests/crosscheck.h"
#include "tests/fixture.h"
#include "tests/localcluster.h"
#include "tests/testutil.h"

static const double LOGIT_TOLERANCE = 1e-4;   /* x max|reference logit| */
static const double CLUSTER_TOLERANCE = 1e-5; /* x max|moe-run logit| */

static char s_bin[512];
static char *s_tmp;

static int s_setup(void **state)
{
    (void)state;
    snprintf(s_bin, sizeof s_bin, "%s", testutil_env("MOE_BIN", "build/bin"));
    s_tmp = testutil_mkdtemp("test_precision");
    return s_tmp ? 0 : -1;
}

static int s_teardown(void **state)
{
    (void)state;
    testutil_rmtree(s_tmp);
    free(s_tmp);
    return 0;
}

/* The precision fixtures (fails the test when there are none). */
static int s_list(char ***paths)
{
    int n = fixture_list(fixture_root_precision(), "", paths);
    if (n <= 0)
        fail_msg("no fixture under %s", fixture_root_precision());
    return n;
}

static float *s_read_floats(const char *path, size_t *n)
{
    size_t bytes = 0;
    float *f = (float *)testutil_read_file(path, &bytes);
    if (!f)
        fail_msg("cannot read %s", path);
    *n = bytes / sizeof(float);
    return f;
}

/* max |got - want| over n values, and max |want|. */
static void s_diff(const float *got, const float *want, size_t n, double *max_err,
                   double *max_ref)
{
    *max_err = 0;
    *max_ref = 0;
    for (size_t i = 0; i < n; i++) {
        *max_ref = fmax(*max_ref, fabs(want[i]));
        double d = fabs((double)got[i] - want[i]);
        *max_err = isnan(d) ? INFINITY : fmax(*max_err, d);
    }
}

/* The logits in path against the reference of prompt p. */
static void s_check_reference_logits(const fixture_t *fx, int p, const char *path,
                                     const char *who)
{
    const fixture_prompt_t *pr = &fx->prompts[p];
    size_t n = 0;
    float *got = s_read_floats(path, &n);
    assert_int_equal(n, (size_t)pr->length * fx->vocab);
    double max_err, max_ref;
    s_diff(got, pr->logits, n, &max_err, &max_ref);
    printf("  %s %s prompt %d: max |logit error| %.3g (limit %.3g)\n", fx->name, who, p,
           max_err, LOGIT_TOLERANCE * max_ref);
    if (!(max_err <= LOGIT_TOLERANCE * max_ref))
        fail_msg("%s %s prompt %d: logits off the reference by %g", fx->name, who, p, max_err);
    free(got);
}

/* moe-run (with opts) prompt p: the generated ids, and its logits written to
 * path. */
static char *s_moe_run(const fixture_t *fx, int p, const char *opts, const char *path)
{
    const fixture_prompt_t *pr = &fx->prompts[p];
    char *ids = idlist_format(pr->ids, pr->length);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s/moe-run' --model '%s' --prompt-ids %s --max-tokens %d %s "
             "2>/dev/null", s_bin, fx->dir, ids, pr->n_greedy, opts);
    char *tokens = crosscheck_last_line(cmd);
    snprintf(cmd, sizeof cmd, "'%s/moe-run' --model '%s' --prompt-ids %s --max-tokens 0 %s "
             "--dump-logits '%s' >/dev/null 2>&1", s_bin, fx->dir, ids, opts, path);
    if (testutil_run(cmd, NULL) != 0)
        fail_msg("%s failed", cmd);
    mem_free(ids);
    return tokens;
}

/* The cluster at ep, prompt p: the generated ids, its logits written to
 * path. */
static char *s_client(const fixture_t *fx, int p, const char *ep, const char *path)
{
    const fixture_prompt_t *pr = &fx->prompts[p];
    char *ids = idlist_format(pr->ids, pr->length);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' generate --prompt-ids %s "
             "--max-tokens %d", s_bin, ep, ids, pr->n_greedy);
    char *tokens = crosscheck_last_line(cmd);
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' logits --prompt-ids %s "
             "--out '%s'", s_bin, ep, ids, path);
    if (testutil_run(cmd, NULL) != 0)
        fail_msg("%s failed", cmd);
    mem_free(ids);
    return tokens;
}

/* moe-run on every precision fixture: the reference's tokens and logits. */
static void test_moe_run_matches_reference(void **state)
{
    (void)state;
    char **paths = NULL;
    int n = s_list(&paths);
    char path[700];
    snprintf(path, sizeof path, "%s/run.f32", s_tmp);
    for (int f = 0; f < n; f++) {
        fixture_t *fx = fixture_load(paths[f]);
        assert_non_null(fx);
        for (int p = 0; p < fx->n_prompts; p++) {
            const fixture_prompt_t *pr = &fx->prompts[p];
            char *want = idlist_format(pr->greedy, pr->n_greedy);
            char *got = s_moe_run(fx, p, "", path);
            if (strcmp(got, want) != 0)
                fail_msg("%s prompt %d: moe-run gives %s, reference %s", fx->name, p, got,
                         want);
            s_check_reference_logits(fx, p, path, "moe-run");
            free(got);
            mem_free(want);
        }
        fixture_destroy(&fx);
    }
    fixture_free_list(paths, n);
}

/* A coordinator and two nodes on every precision fixture: the reference's
 * tokens and logits, and moe-run's exactly. */
static void test_cluster_matches_reference(void **state)
{
    (void)state;
    char **paths = NULL;
    int n = s_list(&paths);
    char path[700];
    snprintf(path, sizeof path, "%s/client.f32", s_tmp);
    for (int f = 0; f < n; f++) {
        fixture_t *fx = fixture_load(paths[f]);
        assert_non_null(fx);
        char run_dir[900];
        snprintf(run_dir, sizeof run_dir, "%s/%s-2", s_tmp, fx->name);
        char *ep = localcluster_up(fx->dir, 2, run_dir, NULL);
        printf("  %s on 2 nodes at %s\n", fx->name, ep);
        for (int p = 0; p < fx->n_prompts; p++) {
            const fixture_prompt_t *pr = &fx->prompts[p];
            char *want = idlist_format(pr->greedy, pr->n_greedy);
            char *got = s_client(fx, p, ep, path);
            if (strcmp(got, want) != 0)
                fail_msg("%s prompt %d: the cluster gives %s, reference %s", fx->name, p, got,
                         want);
            s_check_reference_logits(fx, p, path, "cluster");
            free(got);
            mem_free(want);
        }
        crosscheck_fixture(fx, ep, s_bin, s_tmp, "");
        localcluster_down(run_dir);
        free(ep);
        fixture_destroy(&fx);
    }
    fixture_free_list(paths, n);
}

/* --quantization q8_0 and q4_0: the cluster (the option given to every
 * process by local.sh) gives moe-run's tokens and logits with the same
 * option, which differ from the unquantized reference. */
static void test_quantized_cluster_equals_moe_run(void **state)
{
    (void)state;
    static const char *const quants[] = {"q8_0", "q4_0"};
    char **paths = NULL;
    int n = s_list(&paths);
    char run_path[700], client_path[700];
    snprintf(run_path, sizeof run_path, "%s/qrun.f32", s_tmp);
    snprintf(client_path, sizeof client_path, "%s/qclient.f32", s_tmp);
    for (int f = 0; f < n; f++) {
        fixture_t *fx = fixture_load(paths[f]);
        assert_non_null(fx);
        for (size_t q = 0; q < sizeof quants / sizeof quants[0]; q++) {
            char opt[64], run_dir[900];
            snprintf(opt, sizeof opt, "--quantization %s", quants[q]);
            snprintf(run_dir, sizeof run_dir, "%s/%s-%s", s_tmp, fx->name, quants[q]);
            char *ep = localcluster_up(fx->dir, 2, run_dir, opt);
            for (int p = 0; p < fx->n_prompts; p++) {
                const fixture_prompt_t *pr = &fx->prompts[p];
                char *want = s_moe_run(fx, p, opt, run_path);
                char *got = s_client(fx, p, ep, client_path);
                if (strcmp(got, want) != 0)
                    fail_msg("%s %s prompt %d: the cluster gives %s, moe-run %s", fx->name,
                             quants[q], p, got, want);
                size_t n_run, n_client;
                float *lr = s_read_floats(run_path, &n_run);
                float *lc = s_read_floats(client_path, &n_client);
                assert_int_equal(n_run, (size_t)pr->length * fx->vocab);
                assert_int_equal(n_client, n_run);
                double err_c, max_run, err_ref, max_ref;
                s_diff(lc, lr, n_run, &err_c, &max_run);
                s_diff(lr, pr->logits, n_run, &err_ref, &max_ref);
                printf("  %s %s prompt %d: tokens equal, max |cluster - moe-run| %.3g "
                       "(limit %.3g); moe-run vs the unquantized reference %.3g of %.3g\n",
                       fx->name, quants[q], p, err_c, CLUSTER_TOLERANCE * max_run, err_ref,
                       max_ref);
                assert_true(err_c <= CLUSTER_TOLERANCE * max_run);
                /* the option took effect: the logits moved off the unquantized
                 * ones (how far is the accuracy benchmark's business: on these
                 * tiny models one flipped routing choice moves a token a lot) */
                assert_true(err_ref > LOGIT_TOLERANCE * max_ref);
                free(lr);
                free(lc);
                free(want);
                free(got);
            }
            localcluster_down(run_dir);
            free(ep);
        }
        fixture_destroy(&fx);
    }
    fixture_free_list(paths, n);
}

/* Resident memory of expert node 1 of 2 of model (after local.sh has read
 * its weights in). */
static size_t s_node_rss(const char *model, const char *name)
{
    char run_dir[900];
    snprintf(run_dir, sizeof run_dir, "%s/%s", s_tmp, name);
    char *ep = localcluster_up(model, 2, run_dir, "--node-threads 1 --threads 1");
    size_t rss = localcluster_rss(localcluster_pid(run_dir, "expert-1"));
    localcluster_down(run_dir);
    free(ep);
    assert_true(rss > 0);
    return rss;
}

/* A node of a BF16 model holds its experts as stored: its resident memory
 * is below that of the same node in float32 by at least half of what
 * float32 would add (the small preset: 4 layers x 8 experts of 3 x 256 x 512
 * values, half of them on node 1). */
static void test_node_holds_bf16_as_stored(void **state)
{
    (void)state;
    char f32[800], bf16[800], cmd[4096];
    snprintf(f32, sizeof f32, "%s/small-f32", s_tmp);
    snprintf(bf16, sizeof bf16, "%s/small-bf16", s_tmp);
    snprintf(cmd, sizeof cmd, "'%s/moe-mkmodel' --preset small --seed 3 --dtype f32 --out '%s' "
             ">/dev/null 2>&1 && '%s/moe-mkmodel' --preset small --seed 3 --dtype bf16 "
             "--out '%s' >/dev/null 2>&1", s_bin, f32, s_bin, bf16);
    assert_int_equal(testutil_run(cmd, NULL), 0);
    config_t cfg;
    err_t err = {0};
    assert_int_equal(config_load(&cfg, bf16, &err), 0);
    double hosted_values = (double)cfg.n_layers * (cfg.n_experts / 2) * 3 *
                           cfg.hidden_size * cfg.intermediate_size;
    size_t rss32 = s_node_rss(f32, "rss-f32");
    size_t rss16 = s_node_rss(bf16, "rss-bf16");
    double saving = (double)rss32 - (double)rss16, expected = 2 * hosted_values;
    printf("  node 1 of 2, small preset: RSS %.1f MB in float32, %.1f MB in bfloat16: "
           "%.1f MB less (hosted experts: %.1f MB in float32, %.1f MB as stored; want at "
           "least %.1f MB less)\n", rss32 / 1e6, rss16 / 1e6, saving / 1e6,
           4 * hosted_values / 1e6, 2 * hosted_values / 1e6, 0.5 * expected / 1e6);
    assert_true(saving >= 0.5 * expected);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_moe_run_matches_reference),
        cmocka_unit_test(test_cluster_matches_reference),
        cmocka_unit_test(test_quantized_cluster_equals_moe_run),
        cmocka_unit_test(test_node_holds_bf16_as_stored),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
