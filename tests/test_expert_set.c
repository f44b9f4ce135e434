/* test_expert_set: the experts a node holds as they come and go
 * (expert_node/expert_set), and the loader that brings new ones in on a
 * thread of its own (expert_node/expert_loader), on the mixtral-A fixture:
 *   - a set built from one part, grown by another, shrunk by drops: holds,
 *     count, pairs and bytes follow; the composed view computes exactly what
 *     the whole model's weights compute for the experts held;
 *   - the loader loads just the pairs asked for, signals on its socket, and
 *     reports a load that fails (a missing model) as an error, not a crash;
 *   - every allocation failing in turn in expert_set_new. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "core/mem.h"
#include "engine/experts.h"
#include "expert_node/expert_loader.h"
#include "expert_node/expert_set.h"
#include "kernels/compute.h"
#include "tests/fixture.h"
#include "tests/testutil.h"

static char s_model[600];

/* The pairs of a weights_hosts_fn: (layer, expert) in a fixed list. */
typedef struct pairs {
    const int32_t *layer, *expert;
    int n;
} pairs_t;

static bool s_hosts(void *ctx, int layer, int expert)
{
    const pairs_t *p = ctx;
    for (int i = 0; i < p->n; i++)
        if (p->layer[i] == layer && p->expert[i] == expert)
            return true;
    return false;
}

static weights_t *s_load(const int32_t *layer, const int32_t *expert, int n)
{
    pairs_t p = {layer, expert, n};
    weights_select_t sel = {.hosts = s_hosts, .hosts_ctx = &p};
    err_t err = {0};
    weights_t *w = weights_load(s_model, &sel, &err);
    if (!w)
        fail_msg("weights_load: %s", err.msg);
    return w;
}

static int s_setup(void **state)
{
    (void)state;
    snprintf(s_model, sizeof s_model, "%s/mixtral-A", fixture_root());
    return 0;
}

/* The routed output of rows u through experts run on w, for layer 1's
 * assignments to expert 3 and 5 (must both be held by w). */
static void s_run(const weights_t *w, const float *u, float *out)
{
    err_t err = {0};
    compute_t *cx = compute_new(1, &err);
    assert_non_null(cx);
    experts_t *ex = experts_new(&w->cfg, 4, 8, cx, &err);
    assert_non_null(ex);
    const moe_assign_t a[] = {{0, 3, 0.75f}, {0, 5, 0.25f}, {2, 5, 1.0f}, {3, 3, 0.5f}};
    if (experts_run(ex, w, 1, u, 4, a, 4, out, &err) < 0)
        fail_msg("experts_run: %s", err.msg);
    experts_destroy(&ex);
    compute_destroy(&cx);
}

static void test_add_drop_and_compute(void **state)
{
    (void)state;
    const int32_t l0[] = {0, 0, 1}, e0[] = {0, 1, 3};
    weights_t *first = s_load(l0, e0, 3);
    err_t err = {0};
    expert_set_t *set = expert_set_new(&first, &err);
    assert_non_null(set);
    assert_null(first);
    assert_int_equal(expert_set_count(set), 3);
    assert_true(expert_set_holds(set, 1, 3));
    assert_false(expert_set_holds(set, 1, 5));
    assert_false(expert_set_holds(set, 9, 0));
    const uint64_t each = expert_set_bytes(set) / 3;
    assert_true(each > 0);

    /* A second part: (1, 3) again (the old copy stays) and (1, 5). */
    const int32_t l1[] = {1, 1}, e1[] = {3, 5};
    weights_t *part = s_load(l1, e1, 2);
    assert_int_equal(expert_set_add(set, &part, &err), 0);
    assert_null(part);
    assert_int_equal(expert_set_count(set), 4);
    assert_true(expert_set_bytes(set) == 4 * each);
    int32_t layer[16], expert[16];
    expert_set_pairs(set, layer, expert);
    const int32_t want_l[] = {0, 0, 1, 1}, want_e[] = {0, 1, 3, 5};
    assert_memory_equal(layer, want_l, sizeof want_l);
    assert_memory_equal(expert, want_e, sizeof want_e);

    /* The composed view computes what the whole model computes. */
    weights_t *all = weights_load_all(s_model, &err);
    assert_non_null(all);
    const int hidden = all->cfg.hidden_size;
    float u[4 * 256], got[4 * 256], want[4 * 256];
    assert_true(hidden <= 256);
    testrng_t rng;
    testrng_init(&rng, 16);
    testrng_fill(&rng, u, 4 * (size_t)hidden, 1.0f);
    s_run(expert_set_weights(set), u, got);
    s_run(all, u, want);
    assert_memory_equal(got, want, 4 * (size_t)hidden * sizeof(float));

    /* Drops: the first part's experts go (so does that part); pairs not
     * held are ignored. */
    const int32_t dl[] = {0, 0, 1, 7}, de[] = {0, 1, 3, 7};
    expert_set_drop(set, dl, de, 4);
    assert_int_equal(expert_set_count(set), 1);
    assert_true(expert_set_holds(set, 1, 5));
    assert_false(expert_set_holds(set, 1, 3));
    assert_true(expert_set_bytes(set) == each);
    weights_destroy(&all);
    expert_set_destroy(&set);
    assert_null(set);
    expert_set_destroy(&set);
}

/* Waits (bounded) for the loader's signal and finishes it. */
static weights_t *s_finish(expert_loader_t **ld, err_t *err)
{
    zmq_pollitem_t item = {.socket = expert_loader_socket(*ld), .events = ZMQ_POLLIN};
    assert_int_equal(zmq_poll(&item, 1, 20000), 1);
    return expert_loader_finish(ld, err);
}

static void test_loader(void **state)
{
    (void)state;
    void *ctx = zmq_ctx_new();
    assert_non_null(ctx);
    err_t err = {0};
    const int32_t l[] = {0, 1}, e[] = {6, 2};
    expert_loader_t *ld = expert_loader_start(ctx, s_model, l, e, 2, (wformat_t){0}, 0, &err);
    assert_non_null(ld);
    weights_t *w = s_finish(&ld, &err);
    assert_null(ld);
    assert_non_null(w);
    for (int layer = 0; layer < 2; layer++)
        for (int x = 0; x < 8; x++)
            assert_int_equal(weights_has_expert(w, layer, x),
                             (layer == 0 && x == 6) || (layer == 1 && x == 2));
    weights_destroy(&w);

    /* A model that is not there: the loader's error, through finish. */
    ld = expert_loader_start(ctx, "/nonexistent/model", l, e, 2, (wformat_t){0}, 0, &err);
    assert_non_null(ld);
    err_clear(&err);
    assert_null(s_finish(&ld, &err));
    assert_true(strlen(err.msg) > 0);
    /* Destroyed before it ends: it is waited for, what it loaded freed. */
    ld = expert_loader_start(ctx, s_model, l, e, 2, (wformat_t){0}, 50, &err);
    assert_non_null(ld);
    expert_loader_destroy(&ld);
    assert_null(ld);
    expert_loader_destroy(&ld);
    zmq_ctx_term(ctx);
}

static int s_attempt(void *ctx, err_t *err)
{
    weights_t **w = ctx;
    expert_set_t *set = expert_set_new(w, err);
    if (!set)
        return -1;
    expert_set_destroy(&set);
    return 0;
}

static void test_out_of_memory(void **state)
{
    (void)state;
    const int32_t l[] = {0}, e[] = {2};
    weights_t *w = s_load(l, e, 1);
    assert_true(testutil_oom_sweep(64, s_attempt, &w) > 0);
    assert_null(w); /* taken by the try that succeeded */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_drop_and_compute),
        cmocka_unit_test(test_loader),
        cmocka_unit_test(test_out_of_memory),
    };
    return cmocka_run_group_tests(tests, s_setup, NULL);
}
