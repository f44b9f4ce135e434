/* test_planner: the EPLB-style planner (model/planner) on synthetic loads:
 *   - the bound: in every layer no node carries more than the mean plus one
 *     copy's load (random skewed loads, with and without redundant copies);
 *   - against the optimum found by brute force (every choice of redundant
 *     copies, every packing) on small cases: never above 4/3 of it, and
 *     equal to it in most cases;
 *   - determinism, expert groups kept whole, memory budgets respected, a
 *     drained node given nothing, a budget too small refused with a clear
 *     error, bad input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "core/timer.h"
#include "model/planner.h"
#include "tests/testutil.h"

enum { MAX_E = 8, MAX_N = 4, MAX_COPIES = 16 };

/* Skewed loads: a few hot experts (Zipf-like with random order). */
static void s_loads(testrng_t *rng, double *load, int n)
{
    for (int i = 0; i < n; i++)
        load[i] = 100.0 / (1 + (int)(testrng_uniform(rng) * n)) + testrng_uniform(rng);
}

/* The heaviest node of layer l under p, the layer's mean node load and its
 * largest copy load. */
static void s_layer_stats(const placement_t *p, const double *load, int l, double *max,
                          double *mean, double *max_copy)
{
    const int N = placement_n_nodes(p), E = placement_n_experts(p);
    double out[64 * MAX_N];
    assert_true(placement_n_layers(p) * N <= 64 * MAX_N);
    planner_node_loads(p, load, out);
    *max = *mean = *max_copy = 0;
    for (int n = 0; n < N; n++) {
        *max = fmax(*max, out[l * N + n]);
        *mean += out[l * N + n] / N;
    }
    for (int e = 0; e < E; e++) {
        const int *nodes;
        int c = placement_nodes_of(p, l, e, &nodes);
        *max_copy = fmax(*max_copy, load[l * E + e] / c);
    }
}

static void test_bound_random(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 1616);
    err_t err = {0};
    for (int trial = 0; trial < 300; trial++) {
        const int L = 1 + trial % 4, N = 2 + trial % 3;
        const int E = N * (1 + (int)(testrng_uniform(&rng) * 8));
        const int R = trial % 3;
        double load[4 * 64];
        s_loads(&rng, load, L * E);
        planner_input_t in = {.n_layers = L, .n_experts = E, .n_nodes = N, .load = load,
                              .redundant = R};
        placement_t *p = planner_plan(&in, &err);
        if (!p)
            fail_msg("trial %d: %s", trial, err.msg);
        for (int l = 0; l < L; l++) {
            double max, mean, max_copy;
            s_layer_stats(p, load, l, &max, &mean, &max_copy);
            if (max > mean + max_copy + 1e-9)
                fail_msg("trial %d layer %d: heaviest node %g > mean %g + one copy %g",
                         trial, l, max, mean, max_copy);
            /* Every layer hosts E + R copies. */
            int copies = 0;
            for (int e = 0; e < E; e++) {
                const int *nodes;
                copies += placement_nodes_of(p, l, e, &nodes);
            }
            assert_int_equal(copies, E + R);
        }
        placement_destroy(&p);
    }
}

/* Brute force: the least heaviest-node load over every choice of R extra
 * copies (each expert on at most N nodes) and every packing of the copies
 * with no two copies of an expert on one node. */
typedef struct brute {
    int E, N;
    const double *load;
    int copies[MAX_E];
    double per[MAX_COPIES];
    int item[MAX_COPIES];
    int n_copies;
    double node[MAX_N];
    int on[MAX_E];             /* bit mask of the nodes holding each expert */
    double best;
} brute_t;

static void s_pack(brute_t *b, int c, double max)
{
    if (max >= b->best)
        return;
    if (c == b->n_copies) {
        b->best = max;
        return;
    }
    for (int n = 0; n < b->N; n++) {
        if (b->on[b->item[c]] & (1 << n))
            continue;
        b->node[n] += b->per[c];
        b->on[b->item[c]] |= 1 << n;
        s_pack(b, c + 1, fmax(max, b->node[n]));
        b->on[b->item[c]] &= ~(1 << n);
        b->node[n] -= b->per[c];
    }
}

static void s_replicate(brute_t *b, int from, int left)
{
    if (left == 0) {
        b->n_copies = 0;
        for (int e = 0; e < b->E; e++)
            for (int c = 0; c < b->copies[e]; c++) {
                b->per[b->n_copies] = b->load[e] / b->copies[e];
                b->item[b->n_copies++] = e;
            }
        s_pack(b, 0, 0);
        return;
    }
    for (int e = from; e < b->E; e++)
        if (b->copies[e] < b->N) {
            b->copies[e]++;
            s_replicate(b, e, left - 1);
            b->copies[e]--;
        }
}

static void test_against_brute_force(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 42);
    err_t err = {0};
    int n_cases = 0, n_optimal = 0, n_pack_optimal = 0;
    double worst = 1;
    for (int trial = 0; trial < 120; trial++) {
        const int N = 2 + trial % 2, E = 4 + trial % 3, R = (trial / 2) % 3;
        double load[MAX_E];
        s_loads(&rng, load, E);
        planner_input_t in = {.n_layers = 1, .n_experts = E, .n_nodes = N, .load = load,
                              .redundant = R};
        placement_t *p = planner_plan(&in, &err);
        assert_non_null(p);
        double max, mean, max_copy;
        s_layer_stats(p, load, 0, &max, &mean, &max_copy);
        brute_t b = {.E = E, .N = N, .load = load, .best = INFINITY};
        for (int e = 0; e < E; e++)
            b.copies[e] = 1;
        s_replicate(&b, 0, R);
        /* The same with the planner's copies: how much is packing. */
        brute_t fixed = {.E = E, .N = N, .load = load, .best = INFINITY};
        for (int e = 0; e < E; e++) {
            const int *nodes;
            fixed.copies[e] = placement_nodes_of(p, 0, e, &nodes);
        }
        s_replicate(&fixed, 0, 0);
        n_pack_optimal += max / fixed.best < 1 + 1e-9;
        const double ratio = max / b.best;
        if (ratio > 4.0 / 3.0 + 1e-9)
            fail_msg("trial %d (%d experts, %d nodes, R %d): heaviest node %g, optimum %g",
                     trial, E, N, R, max, b.best);
        worst = fmax(worst, ratio);
        n_cases++;
        n_optimal += ratio < 1 + 1e-9;
        placement_destroy(&p);
    }
    printf("  planner vs brute force: optimal in %d of %d cases, worst %.3fx the optimum; "
           "packing optimal for its copies in %d\n", n_optimal, n_cases, worst, n_pack_optimal);
    assert_true(n_optimal * 10 >= n_cases * 8);
}

/* The placement as text, for comparisons (malloc'd). */
static char *s_text(const placement_t *p)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(placement_write(p, f, NULL), 0);
    fclose(f);
    return buf;
}

static void test_deterministic_and_groups(void **state)
{
    (void)state;
    testrng_t rng;
    testrng_init(&rng, 7);
    double load[3 * 16];
    s_loads(&rng, load, 3 * 16);
    const bool moe[3] = {false, true, true}; /* a dense first layer, as DeepSeek's */
    planner_input_t in = {.n_layers = 3, .n_experts = 16, .n_nodes = 4, .load = load,
                          .moe_layer = moe, .redundant = 1, .group_size = 4};
    err_t err = {0};
    placement_t *a = planner_plan(&in, &err), *b = planner_plan(&in, &err);
    assert_non_null(a);
    assert_non_null(b);
    char *ta = s_text(a), *tb = s_text(b);
    assert_string_equal(ta, tb);
    /* Groups whole: every expert of a group has the group's first expert's hosts. */
    for (int l = 1; l < 3; l++)
        for (int e = 0; e < 16; e++) {
            const int *h0, *h;
            int n0 = placement_nodes_of(a, l, e - e % 4, &h0);
            int n = placement_nodes_of(a, l, e, &h);
            assert_int_equal(n, n0);
            for (int j = 0; j < n; j++)
                assert_int_equal(h[j], h0[j]);
        }
    /* The dense layer is listed, on one node. */
    for (int e = 0; e < 16; e++)
        assert_true(placement_hosts(a, 1, 0, e));
    free(ta);
    free(tb);
    placement_destroy(&a);
    placement_destroy(&b);
}

static void test_budgets(void **state)
{
    (void)state;
    double load[2 * 8] = {50, 1, 1, 1, 40, 1, 1, 1, 1, 60, 1, 1, 1, 1, 30, 1};
    err_t err = {0};
    /* Node 2 drained (0), node 1 at most 6 copies, node 3 unlimited. */
    const int cap[3] = {6, 0, -1};
    planner_input_t in = {.n_layers = 2, .n_experts = 8, .n_nodes = 3, .load = load,
                          .capacity = cap, .redundant = 1};
    placement_t *p = planner_plan(&in, &err);
    if (!p)
        fail_msg("%s", err.msg);
    assert_int_equal(placement_node_count(p, 2), 0);
    assert_true(placement_node_count(p, 1) <= 6);
    assert_int_equal(placement_node_count(p, 1) + placement_node_count(p, 3), 2 * 9);
    placement_destroy(&p);

    /* Too small: 2 nodes of 7 copies cannot hold 2 layers x (8 + 0). */
    const int small[2] = {7, 7};
    in = (planner_input_t){.n_layers = 2, .n_experts = 8, .n_nodes = 2, .load = load,
                           .capacity = small};
    assert_null(planner_plan(&in, &err));
    assert_int_equal(errno, ENOSPC);
    assert_non_null(strstr(err.msg, "memory budgets"));
    assert_non_null(strstr(err.msg, "needs 8 expert copies"));
    /* Enough for the experts, not for the redundant copies asked for. */
    const int fits[2] = {8, 8};
    in.capacity = fits;
    in.redundant = 1;
    assert_null(planner_plan(&in, &err));
    assert_int_equal(errno, ENOSPC);
    in.redundant = 0;
    p = planner_plan(&in, &err);
    assert_non_null(p);
    placement_destroy(&p);
}

static void test_bad_input(void **state)
{
    (void)state;
    double load[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    err_t err = {0};
    planner_input_t in = {.n_layers = 1, .n_experts = 8, .n_nodes = 2, .load = load,
                          .group_size = 3};
    assert_null(planner_plan(&in, &err));
    assert_int_equal(errno, EINVAL);
    in.group_size = 0;
    load[3] = NAN;
    assert_null(planner_plan(&in, &err));
    assert_int_equal(errno, EINVAL);
    load[3] = -1;
    assert_null(planner_plan(&in, &err));
    load[3] = 4;
    const int none[2] = {0, 0};
    in.capacity = none;
    assert_null(planner_plan(&in, &err));
    assert_int_equal(errno, EINVAL);
    in.capacity = NULL;
    in.n_nodes = 0;
    assert_null(planner_plan(&in, &err));
    in.n_nodes = 2;
    in.redundant = -1;
    assert_null(planner_plan(&in, &err));
}

/* DeepSeek-V3's size (58 MoE layers x 256 experts on 8 nodes, 32 redundant
 * copies per layer) plans in well under a second. */
static void test_large(void **state)
{
    (void)state;
    enum { L = 58, E = 256 };
    double *load = mem_alloc((size_t)L * E * sizeof *load);
    assert_non_null(load);
    testrng_t rng;
    testrng_init(&rng, 3);
    s_loads(&rng, load, L * E);
    planner_input_t in = {.n_layers = L, .n_experts = E, .n_nodes = 8, .load = load,
                          .redundant = 32};
    err_t err = {0};
    const double t0 = timer_now();
    placement_t *p = planner_plan(&in, &err);
    const double took = timer_now() - t0;
    assert_non_null(p);
    double out[L * 8], worst = 0;
    planner_node_loads(p, load, out);
    for (int l = 0; l < L; l++) {
        double max = 0, sum = 0;
        for (int n = 0; n < 8; n++) {
            max = fmax(max, out[l * 8 + n]);
            sum += out[l * 8 + n];
        }
        worst = fmax(worst, max / (sum / 8));
    }
    printf("  58 layers x 256 experts, 8 nodes, R = 32: planned in %.3f s, heaviest node "
           "at most %.4fx the mean of its layer\n", took, worst);
    assert_true(took < 5.0);
    assert_true(worst < 1.05);
    placement_destroy(&p);
    mem_free(load);
}

static int s_attempt(void *ctx, err_t *err)
{
    (void)ctx;
    double load[16] = {9, 1, 1, 1, 1, 1, 1, 1, 1, 7, 1, 1, 1, 1, 1, 1};
    planner_input_t in = {.n_layers = 2, .n_experts = 8, .n_nodes = 3, .load = load,
                          .redundant = 2};
    placement_t *p = planner_plan(&in, err);
    if (!p)
        return -1;
    placement_destroy(&p);
    return 0;
}

static void test_out_of_memory(void **state)
{
    (void)state;
    assert_true(testutil_oom_sweep(64, s_attempt, NULL) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bound_random),
        cmocka_unit_test(test_against_brute_force),
        cmocka_unit_test(test_deterministic_and_groups),
        cmocka_unit_test(test_budgets),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_large),
        cmocka_unit_test(test_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
