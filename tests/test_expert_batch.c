/* test_expert_batch: the EXPERT_REQUESTs an expert node runs as one
 * (expert_node/expert_batch), on the mixtral-A fixture's experts:
 *   - three requests batched give each its rows bit for bit as when it runs
 *     alone, as partial sums and as per-assignment terms, with the products
 *     on one thread and on a pool;
 *   - the joining rule: another layer, another kind, the size bounds and an
 *     expert whose mixed rows would pass GEMM_SMALL_MAX_ROWS keep a request
 *     out; an expert past that size from one request alone may share the
 *     batch, and its rows still equal the request's alone;
 *   - a request naming an expert not held fails the batch's computation;
 *     each part then runs alone: the good one's bits, the bad one's EINVAL;
 *   - every allocation failing in turn in expert_batch_new. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/mem.h"
#include "engine/experts.h"
#include "expert_node/expert_batch.h"
#include "kernels/compute.h"
#include "kernels/gemm_small.h"
#include "tests/fixture.h"
#include "tests/testutil.h"

enum { MAX_ROWS = 64, MAX_PARTS = 4, MAX_ASSIGN = 4 * MAX_ROWS };

static char s_model[600];

/* One request as a node receives it: its own rows and assignments. */
typedef struct req {
    wire_data_t m;
    float rows[MAX_ROWS * 256];
    moe_assign_t assign[MAX_ASSIGN];
} req_t;

static bool s_below(void *ctx, int layer, int expert)
{
    (void)layer;
    return expert < *(const int *)ctx;
}

/* The model's experts below n_experts of every layer. */
static weights_t *s_load(int n_experts)
{
    weights_select_t sel = {.hosts = s_below, .hosts_ctx = &n_experts};
    err_t err = {0};
    weights_t *w = weights_load(s_model, &sel, &err);
    if (!w)
        fail_msg("weights_load: %s", err.msg);
    return w;
}

/* A request of n rows at layer: each row goes to top_k experts, the first
 * `first` for expert e0 (then e0 + 1, ...) and the rest chosen at random
 * below n_experts. */
static void s_make(req_t *r, testrng_t *rng, const config_t *cfg, int layer, int n, int e0,
                   int n_experts, bool per_assignment)
{
    assert_true(n <= MAX_ROWS && cfg->hidden_size <= 256);
    testrng_fill(rng, r->rows, (size_t)n * cfg->hidden_size, 1.0f);
    const int k = cfg->n_experts_per_tok;
    int n_assign = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < k; j++) {
            int e = e0 >= 0 ? (e0 + j) % n_experts
                            : (int)(testrng_uniform(rng) * n_experts) % n_experts;
            r->assign[n_assign++] = (moe_assign_t){i, e, 0.25f + testrng_uniform(rng)};
        }
    r->m = (wire_data_t){.type = WIRE_EXPERT_REQUEST, .request_id = (uint64_t)rng->state,
                         .layer = layer, .n_rows = n, .hidden = cfg->hidden_size,
                         .rows = r->rows, .n_assign = n_assign, .assign = r->assign,
                         .per_assignment = per_assignment};
}

/* The request's reply rows alone (experts_run or experts_run_terms). */
static float *s_alone(experts_t *ex, const weights_t *w, const req_t *r)
{
    const int n = r->m.per_assignment ? r->m.n_assign : r->m.n_rows;
    float *out = mem_alloc_aligned((size_t)n * w->cfg.hidden_size * sizeof(float));
    assert_non_null(out);
    err_t err = {0};
    int rc = r->m.per_assignment
                 ? experts_run_terms(ex, w, r->m.layer, r->m.rows, r->m.n_rows, r->m.assign,
                                     r->m.n_assign, out, &err)
                 : experts_run(ex, w, r->m.layer, r->m.rows, r->m.n_rows, r->m.assign,
                               r->m.n_assign, out, &err);
    if (rc < 0)
        fail_msg("experts_run alone: %s", err.msg);
    return out;
}

/* Part i's rows of the batch's out equal want, bit for bit. */
static void s_same_bits(const expert_batch_t *b, int i, const float *out, const float *want,
                        int hidden, const char *what)
{
    const int first = expert_batch_reply_first(b, i), n = expert_batch_reply_rows(b, i);
    if (memcmp(out + (size_t)first * hidden, want, (size_t)n * hidden * sizeof(float)) != 0)
        fail_msg("%s: request %d's %d rows differ from its rows alone", what, i, n);
}

static void s_batched_equals_alone(int threads, bool per_assignment)
{
    weights_t *w = s_load(1 << 30);
    const config_t *cfg = &w->cfg;
    err_t err = {0};
    compute_t *cx = compute_new(threads, &err);
    assert_non_null(cx);
    experts_t *ex = experts_new(cfg, MAX_ROWS, MAX_ASSIGN, cx, &err);
    expert_batch_t *b = expert_batch_new(cfg, MAX_ROWS, MAX_ASSIGN, &err);
    assert_non_null(ex);
    assert_non_null(b);
    float *out = mem_alloc_aligned((size_t)MAX_ASSIGN * cfg->hidden_size * sizeof(float));
    static req_t r[3];
    testrng_t rng;
    testrng_init(&rng, 15 + (uint64_t)threads);
    const int sizes[3] = {5, 1, 9};
    float *want[3];
    for (int i = 0; i < 3; i++) {
        s_make(&r[i], &rng, cfg, 1, sizes[i], -1, cfg->n_experts, per_assignment);
        want[i] = s_alone(ex, w, &r[i]);
    }
    wire_peer_t from = {.len = 1, .id = {7}};
    for (int i = 0; i < 3; i++) {
        assert_true(expert_batch_fits(b, &r[i].m));
        expert_batch_add(b, &from, &r[i].m);
    }
    assert_int_equal(expert_batch_count(b), 3);
    assert_int_equal(expert_batch_layer(b), 1);
    assert_int_equal(expert_batch_per_assignment(b), per_assignment);
    if (expert_batch_run(b, ex, w, out, &err) < 0)
        fail_msg("expert_batch_run: %s", err.msg);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(expert_batch_part(b, i)->request_id, r[i].m.request_id);
        assert_int_equal(expert_batch_reply_rows(b, i),
                         per_assignment ? r[i].m.n_assign : r[i].m.n_rows);
        s_same_bits(b, i, out, want[i], cfg->hidden_size, "batched");
    }
    expert_batch_clear(b);
    assert_int_equal(expert_batch_count(b), 0);
    for (int i = 0; i < 3; i++)
        mem_free(want[i]);
    mem_free(out);
    expert_batch_destroy(&b);
    expert_batch_destroy(&b); /* twice: a no-op */
    experts_destroy(&ex);
    compute_destroy(&cx);
    weights_destroy(&w);
}

static void test_sums_one_thread(void **state)
{
    (void)state;
    s_batched_equals_alone(1, false);
}

static void test_sums_pool(void **state)
{
    (void)state;
    s_batched_equals_alone(3, false);
}

static void test_terms(void **state)
{
    (void)state;
    s_batched_equals_alone(2, true);
}

static void test_joining_rule(void **state)
{
    (void)state;
    weights_t *w = s_load(1 << 30);
    const config_t *cfg = &w->cfg;
    err_t err = {0};
    compute_t *cx = compute_new(2, &err);
    experts_t *ex = experts_new(cfg, MAX_ROWS, MAX_ASSIGN, cx, &err);
    expert_batch_t *b = expert_batch_new(cfg, 32, MAX_ASSIGN, &err);
    assert_non_null(b);
    float *out = mem_alloc_aligned((size_t)MAX_ASSIGN * cfg->hidden_size * sizeof(float));
    static req_t big, other, mix, layer0, terms, wide;
    testrng_t rng;
    testrng_init(&rng, 3);
    const int k = cfg->n_experts_per_tok, E = cfg->n_experts;
    /* 20 rows for experts 0..k-1: past GEMM_SMALL_MAX_ROWS on its own. */
    s_make(&big, &rng, cfg, 1, GEMM_SMALL_MAX_ROWS + 4, 0, E, false);
    /* 3 rows on experts k..2k-1: none shared with big. */
    s_make(&other, &rng, cfg, 1, 3, k, E, false);
    s_make(&mix, &rng, cfg, 1, 2, 0, E, false);     /* shares expert 0 with big */
    s_make(&layer0, &rng, cfg, 0, 2, k, E, false);  /* another layer */
    s_make(&terms, &rng, cfg, 1, 2, k, E, true);    /* another kind */
    s_make(&wide, &rng, cfg, 1, 12, k, E, false);   /* past the batch's 32 rows */
    float *want_big = s_alone(ex, w, &big), *want_other = s_alone(ex, w, &other);
    wire_peer_t from = {.len = 2, .id = {1, 2}};
    assert_true(expert_batch_fits(b, &big.m));
    expert_batch_add(b, &from, &big.m);
    assert_true(expert_batch_fits(b, &other.m));
    assert_false(expert_batch_fits(b, &mix.m));
    assert_false(expert_batch_fits(b, &layer0.m));
    assert_false(expert_batch_fits(b, &terms.m));
    expert_batch_add(b, &from, &other.m);
    assert_false(expert_batch_fits(b, &wide.m)); /* 23 + 12 rows > 32 */
    if (expert_batch_run(b, ex, w, out, &err) < 0)
        fail_msg("expert_batch_run: %s", err.msg);
    s_same_bits(b, 0, out, want_big, cfg->hidden_size, "one request past the small size");
    s_same_bits(b, 1, out, want_other, cfg->hidden_size, "beside it");
    expert_batch_clear(b);
    /* Empty again: anything may start a batch. */
    assert_true(expert_batch_fits(b, &layer0.m));
    /* At most EXPERT_BATCH_MAX_PARTS requests. */
    static req_t one;
    s_make(&one, &rng, cfg, 0, 1, -1, E, false);
    for (int i = 0; i < EXPERT_BATCH_MAX_PARTS; i++) {
        one.assign[0].expert = i % E; /* at most 2 rows an expert: within the rule */
        one.assign[1].expert = (i + 1) % E;
        assert_true(expert_batch_fits(b, &one.m));
        expert_batch_add(b, &from, &one.m);
    }
    assert_false(expert_batch_fits(b, &one.m));
    mem_free(want_big);
    mem_free(want_other);
    mem_free(out);
    expert_batch_destroy(&b);
    experts_destroy(&ex);
    compute_destroy(&cx);
    weights_destroy(&w);
}

static void test_bad_part_alone(void **state)
{
    (void)state;
    const int held = 4;
    weights_t *w = s_load(held);
    const config_t *cfg = &w->cfg;
    err_t err = {0};
    compute_t *cx = compute_new(1, &err);
    experts_t *ex = experts_new(cfg, MAX_ROWS, MAX_ASSIGN, cx, &err);
    expert_batch_t *b = expert_batch_new(cfg, MAX_ROWS, MAX_ASSIGN, &err);
    float *out = mem_alloc_aligned((size_t)MAX_ASSIGN * cfg->hidden_size * sizeof(float));
    static req_t good, bad;
    testrng_t rng;
    testrng_init(&rng, 9);
    s_make(&good, &rng, cfg, 1, 4, -1, held, false);
    s_make(&bad, &rng, cfg, 1, 2, -1, held, false);
    bad.assign[1].expert = held + 1; /* not held here */
    float *want = s_alone(ex, w, &good);
    wire_peer_t from = {.len = 1, .id = {3}};
    expert_batch_add(b, &from, &good.m);
    assert_true(expert_batch_fits(b, &bad.m));
    expert_batch_add(b, &from, &bad.m);
    assert_int_equal(expert_batch_run(b, ex, w, out, &err), -1);
    assert_int_equal(errno, EINVAL);
    err = (err_t){0};
    assert_int_equal(expert_batch_run_part(b, 0, ex, w, out, &err), 0);
    s_same_bits(b, 0, out, want, cfg->hidden_size, "the good request alone");
    assert_int_equal(expert_batch_run_part(b, 1, ex, w, out, &err), -1);
    assert_int_equal(errno, EINVAL);
    assert_non_null(strstr(err.msg, "not hosted"));
    mem_free(want);
    mem_free(out);
    expert_batch_destroy(&b);
    experts_destroy(&ex);
    compute_destroy(&cx);
    weights_destroy(&w);
}

static int s_attempt(void *ctx, err_t *err)
{
    expert_batch_t *b = expert_batch_new(ctx, MAX_ROWS, MAX_ASSIGN, err);
    if (!b)
        return -1;
    expert_batch_destroy(&b);
    return 0;
}

static void test_out_of_memory(void **state)
{
    (void)state;
    weights_t *w = s_load(1);
    config_t cfg = w->cfg;
    assert_true(testutil_oom_sweep(16, s_attempt, &cfg) > 0);
    weights_destroy(&w);
}

static int s_setup(void **state)
{
    (void)state;
    snprintf(s_model, sizeof s_model, "%s/mixtral-A", fixture_root());
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sums_one_thread),
        cmocka_unit_test(test_sums_pool),
        cmocka_unit_test(test_terms),
        cmocka_unit_test(test_joining_rule),
        cmocka_unit_test(test_bad_part_alone),
        cmocka_unit_test(test_out_of_memory),
    };
    return cmocka_run_group_tests(tests, s_setup, NULL);
}
