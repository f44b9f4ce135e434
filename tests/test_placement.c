/* test_placement: the default split, replicas, the file format with every
 * error it reports, the writer's round trip and out-of-memory paths; the
 * grouped split, and simulated group-limited routing over it: a token's
 * experts are on at most topk_group nodes, and the mean count of nodes a
 * token reaches matches its exact expectation for the default and grouped
 * splits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "engine/router.h"
#include "model/placement.h"
#include "tests/testutil.h"

static placement_t *s_parse(const char *text, int n_layers, int n_experts, int n_nodes,
                            err_t *err)
{
    return placement_parse(text, strlen(text), "p.txt", n_layers, n_experts, n_nodes, err);
}

/* Asserts that (layer, expert) is hosted by exactly the n nodes given, in order. */
static void s_expect_nodes(const placement_t *p, int layer, int expert, int n, ...)
{
    const int *nodes = NULL;
    assert_int_equal(placement_nodes_of(p, layer, expert, &nodes), n);
    assert_non_null(nodes);
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        int want = va_arg(ap, int);
        assert_int_equal(nodes[i], want);
        assert_true(placement_hosts(p, want, layer, expert));
    }
    va_end(ap);
}

/* Asserts that two placements are equal, preference order included. */
static void s_expect_equal(const placement_t *a, const placement_t *b)
{
    assert_int_equal(placement_n_nodes(a), placement_n_nodes(b));
    assert_int_equal(placement_n_layers(a), placement_n_layers(b));
    assert_int_equal(placement_n_experts(a), placement_n_experts(b));
    for (int l = 0; l < placement_n_layers(a); l++)
        for (int e = 0; e < placement_n_experts(a); e++) {
            const int *na, *nb;
            int ca = placement_nodes_of(a, l, e, &na);
            assert_int_equal(placement_nodes_of(b, l, e, &nb), ca);
            assert_memory_equal(na, nb, (size_t)ca * sizeof(int));
        }
    for (int n = 1; n <= placement_n_nodes(a); n++)
        assert_int_equal(placement_node_count(a, n), placement_node_count(b, n));
}

/* The placement as written by placement_write (malloc'd). */
static char *s_write(const placement_t *p)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    err_t err = {0};
    assert_int_equal(placement_write(p, f, &err), 0);
    fclose(f);
    return text;
}

static void test_default_even_split(void **state)
{
    (void)state;
    err_t err = {0};
    placement_t *p = placement_default(2, 8, 4, 1, &err);
    assert_non_null(p);
    assert_int_equal(placement_n_nodes(p), 4);
    assert_int_equal(placement_n_layers(p), 2);
    assert_int_equal(placement_n_experts(p), 8);
    for (int l = 0; l < 2; l++)
        for (int e = 0; e < 8; e++) {
            s_expect_nodes(p, l, e, 1, 1 + e % 4);
            for (int n = 1; n <= 4; n++)
                assert_int_equal(placement_hosts(p, n, l, e), n == 1 + e % 4);
        }
    for (int n = 1; n <= 4; n++)
        assert_int_equal(placement_node_count(p, n), 4);
    int32_t layer[4], expert[4];
    assert_int_equal(placement_node_experts(p, 3, layer, expert), 4);
    int32_t want_l[] = {0, 0, 1, 1}, want_e[] = {2, 6, 2, 6};
    assert_memory_equal(layer, want_l, sizeof layer);
    assert_memory_equal(expert, want_e, sizeof expert);
    placement_destroy(&p);
    assert_null(p);
    placement_destroy(&p); /* safe twice */
    placement_destroy(NULL);
}

static void test_default_uneven_split(void **state)
{
    (void)state;
    err_t err = {0};
    placement_t *p = placement_default(2, 8, 3, 1, &err);
    assert_non_null(p);
    assert_int_equal(placement_node_count(p, 1), 6); /* 0, 3, 6 of both layers */
    assert_int_equal(placement_node_count(p, 2), 6); /* 1, 4, 7 */
    assert_int_equal(placement_node_count(p, 3), 4); /* 2, 5 */
    int32_t layer[6], expert[6];
    assert_int_equal(placement_node_experts(p, 2, layer, expert), 6);
    int32_t want_l[] = {0, 0, 0, 1, 1, 1}, want_e[] = {1, 4, 7, 1, 4, 7};
    assert_memory_equal(layer, want_l, sizeof layer);
    assert_memory_equal(expert, want_e, sizeof expert);
    /* The hosts function a node gives weights_load. */
    placement_node_t me = {p, 3};
    assert_true(placement_node_hosts(&me, 1, 5));
    assert_false(placement_node_hosts(&me, 1, 4));
    assert_false(placement_node_hosts(&me, 2, 5)); /* no layer 2 */
    placement_destroy(&p);

    /* More nodes than experts: the last nodes host nothing. */
    p = placement_default(1, 2, 3, 1, &err);
    assert_non_null(p);
    assert_int_equal(placement_node_count(p, 3), 0);
    assert_int_equal(placement_node_experts(p, 3, layer, expert), 0);
    placement_destroy(&p);
}

static void test_default_replicas(void **state)
{
    (void)state;
    err_t err = {0};
    placement_t *p = placement_default(2, 8, 3, 2, &err);
    assert_non_null(p);
    s_expect_nodes(p, 0, 0, 2, 1, 2);
    s_expect_nodes(p, 1, 2, 2, 3, 1);
    s_expect_nodes(p, 1, 7, 2, 2, 3);
    assert_int_equal(placement_node_count(p, 1) + placement_node_count(p, 2) +
                         placement_node_count(p, 3), 2 * 8 * 2);
    placement_destroy(&p);

    p = placement_default(1, 4, 3, 3, &err); /* every node hosts everything */
    assert_non_null(p);
    s_expect_nodes(p, 0, 3, 3, 1, 2, 3);
    placement_destroy(&p);
}

static void test_default_rejects_bad_sizes(void **state)
{
    (void)state;
    const int bad[][4] = {{2, 8, 3, 4}, {2, 8, 3, 0}, {2, 8, 0, 1}, {0, 8, 3, 1},
                          {2, 0, 3, 1}, {2, 8, PLACEMENT_MAX_NODES + 1, 1}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err_t err = {0};
        assert_null(placement_default(bad[i][0], bad[i][1], bad[i][2], bad[i][3], &err));
        assert_int_equal(errno, EINVAL);
        assert_true(strlen(err.msg) > 0);
    }
    err_t err = {0};
    assert_null(placement_default(2, 8, 3, 4, &err));
    assert_non_null(strstr(err.msg, "4 replicas on 3 nodes"));
}

static void test_file_example(void **state)
{
    (void)state;
    const char *text =
        "# the example of docs/PLACEMENT.md\n"
        "\n"
        "nodes 3\n"
        "node 1 layers * experts 0-3\n"
        "   node\t2 layers *   experts 4-7   # trailing comment\n"
        "node 3 layers 0 experts 0,1\r\n"
        "   # indented comment\n"
        "node 3 layers 1 experts 7";  /* no final newline */
    err_t err = {0};
    placement_t *p = s_parse(text, 2, 8, 3, &err);
    assert_non_null(p);
    s_expect_nodes(p, 0, 0, 2, 1, 3);
    s_expect_nodes(p, 0, 1, 2, 1, 3);
    s_expect_nodes(p, 1, 0, 1, 1);
    s_expect_nodes(p, 0, 5, 1, 2);
    s_expect_nodes(p, 1, 7, 2, 2, 3);
    assert_false(placement_hosts(p, 3, 1, 0));
    assert_int_equal(placement_node_count(p, 1), 8);
    assert_int_equal(placement_node_count(p, 2), 8);
    assert_int_equal(placement_node_count(p, 3), 3);
    placement_destroy(&p);

    /* Preference follows the order of lines, whichever node comes first. */
    p = s_parse("nodes 2\nnode 2 layers 0 experts 0\nnode 1 layers * experts *\n", 1, 2,
                2, &err);
    assert_non_null(p);
    s_expect_nodes(p, 0, 0, 2, 2, 1);
    s_expect_nodes(p, 0, 1, 1, 1);
    placement_destroy(&p);

    /* n_nodes 0 takes the file's count. */
    p = s_parse("nodes 5\nnode 4 layers * experts *\n", 2, 3, 0, &err);
    assert_non_null(p);
    assert_int_equal(placement_n_nodes(p), 5);
    assert_int_equal(placement_node_count(p, 4), 6);
    assert_int_equal(placement_node_count(p, 5), 0);
    placement_destroy(&p);
}

static void test_queries_out_of_range(void **state)
{
    (void)state;
    err_t err = {0};
    placement_t *p = placement_default(2, 4, 2, 1, &err);
    assert_non_null(p);
    const int *nodes = (const int *)&nodes;
    assert_int_equal(placement_nodes_of(p, 2, 0, &nodes), 0);
    assert_null(nodes);
    assert_int_equal(placement_nodes_of(p, 0, -1, &nodes), 0);
    assert_int_equal(placement_nodes_of(p, 0, 4, &nodes), 0);
    assert_false(placement_hosts(p, 0, 0, 0));
    assert_false(placement_hosts(p, 3, 0, 0));
    assert_false(placement_hosts(p, 1, -1, 0));
    assert_int_equal(placement_node_count(p, 0), 0);
    assert_int_equal(placement_node_count(p, 3), 0);
    placement_destroy(&p);
}

/* Each bad file is rejected with EINVAL and a message holding `want`. */
static void test_file_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *want;
    } cases[] = {
        /* an expert hosted nowhere */
        {"nodes 3\nnode 1 layers * experts 0-4\nnode 2 layers 0 experts 5-7\n"
         "node 3 layers 1 experts 6,7\n",
         "p.txt: expert 5 of layer 1 is hosted by no node"},
        /* unknown nodes */
        {"nodes 3\nnode 4 layers * experts *\n", "p.txt:2: unknown node 4 (nodes are 1..3)"},
        {"nodes 3\nnode 0 layers * experts *\n", "p.txt:2: unknown node 0 (nodes are 1..3)"},
        /* duplicates: across lines, within a line, within a list */
        {"nodes 3\nnode 1 layers * experts *\n\nnode 1 layers 1 experts 2-3\n",
         "p.txt:4: node 1 lists expert 2 of layer 1 twice (first on line 2)"},
        {"nodes 3\nnode 2 layers 0 experts 0-3,2\n", "p.txt:2: expert 2 appears twice"},
        {"nodes 3\nnode 2 layers 1,1 experts *\n", "p.txt:2: layer 1 appears twice"},
        /* out of range */
        {"nodes 3\nnode 1 layers 0-2 experts *\n",
         "p.txt:2: layer 2 out of range (the model has 2 layers: 0..1)"},
        {"nodes 3\nnode 1 layers * experts 6-8\n",
         "p.txt:2: expert 8 out of range (the model has 8 experts: 0..7)"},
        {"nodes 3\nnode 1 layers * experts 99999999999999999999\n", "p.txt:2: syntax error"},
        /* node counts */
        {"nodes 4\nnode 1 layers * experts *\n",
         "p.txt:1: the placement is for 4 nodes but the cluster has 3"},
        {"nodes 0\n", "p.txt:1: 0 nodes is outside 1..1024"},
        {"# nothing\n\n", "p.txt: no 'nodes N' line"},
        {"", "p.txt: no 'nodes N' line"},
        {"node 1 layers * experts *\nnodes 3\n", "p.txt:1: 'node' before the 'nodes N' line"},
        {"nodes 3\nnode 1 layers * experts *\nnodes 3\n",
         "p.txt:3: 'nodes' given twice (first on line 1)"},
        /* syntax */
        {"nodes three\n", "p.txt:1: syntax error: expected 'nodes N'"},
        {"nodes 3 4\n", "p.txt:1: syntax error: expected 'nodes N'"},
        {"nodes -3\n", "p.txt:1: syntax error: expected 'nodes N'"},
        {"nodes 3\nnode 1 layer * experts *\n", "p.txt:2: syntax error: expected 'node <id>"},
        {"nodes 3\nnode 1 layers * experts\n", "p.txt:2: syntax error: expected 'node <id>"},
        {"nodes 3\nnode 1 layers * experts * extra\n", "p.txt:2: syntax error"},
        {"nodes 3\nnode x layers * experts *\n", "p.txt:2: syntax error"},
        {"nodes 3\nnode 1 layers * experts 0-\n",
         "p.txt:2: syntax error in expert list '0-'"},
        {"nodes 3\nnode 1 layers * experts 1,,2\n", "p.txt:2: syntax error in expert list"},
        {"nodes 3\nnode 1 layers * experts 1,\n", "p.txt:2: syntax error in expert list"},
        {"nodes 3\nnode 1 layers , experts *\n", "p.txt:2: syntax error in layer list"},
        {"nodes 3\nnode 1 layers * experts 0-1-2\n", "p.txt:2: syntax error in expert list"},
        {"nodes 3\nnode 1 layers * experts +1\n", "p.txt:2: syntax error in expert list"},
        {"nodes 3\nnode 1 layers * experts 1 - 2\n", "p.txt:2: syntax error"},
        {"nodes 3\nnode 1 layers * experts 3-1\n", "p.txt:2: empty expert range '3-1'"},
        {"nodes 3\nexpert 1 layers * experts *\n",
         "p.txt:2: syntax error: unknown keyword 'expert'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err_t err = {0};
        errno = 0;
        placement_t *p = s_parse(cases[i].text, 2, 8, 3, &err);
        if (p || errno != EINVAL || !strstr(err.msg, cases[i].want))
            fail_msg("case %zu: got '%s' (errno %d), want '%s'", i, err.msg, errno,
                     cases[i].want);
    }
    /* A NUL byte inside the text is a syntax error, not the end of the text. */
    err_t err = {0};
    const char nul[] = "nodes 1\nnode 1 layers * experts \0\n";
    assert_null(placement_parse(nul, sizeof nul - 1, "p.txt", 2, 8, 1, &err));
    assert_int_equal(errno, EINVAL);
    /* Bad sizes from the caller. */
    assert_null(s_parse("nodes 1\n", 0, 8, 1, &err));
    assert_int_equal(errno, EINVAL);
    assert_null(s_parse("nodes 1\n", 2, 8, -1, &err));
    assert_int_equal(errno, EINVAL);
}

static void test_load_file(void **state)
{
    (void)state;
    char *dir = testutil_mkdtemp("test_placement");
    assert_non_null(dir);
    char path[1024];
    snprintf(path, sizeof path, "%s/placement.txt", dir);
    const char *text = "nodes 2\nnode 1 layers * experts 0-1\nnode 2 layers * experts 2\n"
                       "node 2 layers 1 experts 0\n";
    assert_int_equal(testutil_write_file(path, text, strlen(text)), 0);
    err_t err = {0};
    placement_t *p = placement_load(path, 2, 3, 2, &err);
    assert_non_null(p);
    s_expect_nodes(p, 1, 0, 2, 1, 2);
    placement_destroy(&p);

    /* Errors name the file and the line. */
    const char *bad = "nodes 2\nnode 1 layers * experts 0-1\nnode 3 layers * experts 2\n";
    assert_int_equal(testutil_write_file(path, bad, strlen(bad)), 0);
    assert_null(placement_load(path, 2, 3, 2, &err));
    assert_int_equal(errno, EINVAL);
    char want[1100];
    snprintf(want, sizeof want, "%s:3: unknown node 3", path);
    assert_non_null(strstr(err.msg, want));

    /* A missing file. */
    snprintf(path, sizeof path, "%s/missing.txt", dir);
    assert_null(placement_load(path, 2, 3, 2, &err));
    assert_int_equal(errno, ENOENT);
    assert_non_null(strstr(err.msg, path));

    /* A file beyond the size limit: a long comment. */
    snprintf(path, sizeof path, "%s/huge.txt", dir);
    size_t n = (size_t)PLACEMENT_MAX_FILE + 10;
    char *huge = malloc(n);
    assert_non_null(huge);
    memset(huge, '#', n);
    assert_int_equal(testutil_write_file(path, huge, n), 0);
    free(huge);
    assert_null(placement_load(path, 2, 3, 2, &err));
    assert_int_equal(errno, EFBIG);

    testutil_rmtree(dir);
    free(dir);
}

static void test_write_round_trip(void **state)
{
    (void)state;
    err_t err = {0};
    /* The default split writes as one line per node. */
    placement_t *p = placement_default(2, 8, 3, 1, &err);
    assert_non_null(p);
    char *text = s_write(p);
    assert_non_null(strstr(text, "nodes 3\n"
                                 "node 1 layers * experts 0,3,6\n"
                                 "node 2 layers * experts 1,4,7\n"
                                 "node 3 layers * experts 2,5\n"));
    placement_t *q = s_parse(text, 2, 8, 3, &err);
    assert_non_null(q);
    s_expect_equal(p, q);
    free(text);
    placement_destroy(&q);
    placement_destroy(&p);

    /* Replicas, ranges and per-layer differences, preference order kept. */
    const char *src = "nodes 3\nnode 3 layers 1 experts 0-3\nnode 1 layers * experts *\n"
                      "node 2 layers 0,2 experts 5,6,7\nnode 2 layers 1 experts 0\n";
    p = s_parse(src, 3, 8, 3, &err);
    assert_non_null(p);
    text = s_write(p);
    q = s_parse(text, 3, 8, 3, &err);
    if (!q)
        fail_msg("%s\n%s", err.msg, text);
    s_expect_equal(p, q);
    assert_non_null(strstr(text, "node 2 layers 0,2 experts 5-7\n"));
    free(text);
    placement_destroy(&q);
    placement_destroy(&p);

    /* Random placements: every pair on a random ordered set of nodes. */
    testrng_t rng;
    testrng_init(&rng, 7);
    for (int round = 0; round < 200; round++) {
        int n_nodes = 1 + (int)(testrng_uniform(&rng) * 5);
        int n_layers = 1 + (int)(testrng_uniform(&rng) * 4);
        int n_experts = 1 + (int)(testrng_uniform(&rng) * 9);
        size_t cap = 64 + (size_t)n_layers * n_experts * n_nodes * 48, len = 0;
        char *buf = malloc(cap);
        assert_non_null(buf);
        len += (size_t)snprintf(buf + len, cap - len, "nodes %d\n", n_nodes);
        /* Lines in a random order of (rank, pair) so preferences interleave. */
        for (int rank = 0; rank < n_nodes; rank++)
            for (int l = 0; l < n_layers; l++)
                for (int e = 0; e < n_experts; e++) {
                    /* rank-th node of a per-pair rotation; rank 0 always. */
                    int rot = (l * 7 + e * 3 + round) % n_nodes;
                    if (rank > 0 && testrng_uniform(&rng) < 0.5)
                        continue;
                    len += (size_t)snprintf(buf + len, cap - len,
                                            "node %d layers %d experts %d\n",
                                            1 + (rot + rank) % n_nodes, l, e);
                }
        p = s_parse(buf, n_layers, n_experts, n_nodes, &err);
        if (!p)
            fail_msg("round %d: %s", round, err.msg);
        text = s_write(p);
        q = s_parse(text, n_layers, n_experts, n_nodes, &err);
        if (!q)
            fail_msg("round %d: %s\n%s", round, err.msg, text);
        s_expect_equal(p, q);
        free(text);
        free(buf);
        placement_destroy(&q);
        placement_destroy(&p);
    }
}

static void test_write_failure(void **state)
{
    (void)state;
    FILE *f = fopen("/dev/full", "w");
    if (!f)
        testutil_skip_unless_possible(false, "/dev/full cannot be opened");
    err_t err = {0};
    placement_t *p = placement_default(2, 8, 3, 1, &err);
    assert_non_null(p);
    assert_int_equal(placement_write(p, f, &err), -1);
    assert_int_equal(errno, EIO);
    assert_true(strlen(err.msg) > 0);
    fclose(f);
    placement_destroy(&p);
}

/* Fails the 1st, 2nd, ... allocation until the call succeeds: each failure
 * is ENOMEM with a message and leaks nothing (LeakSanitizer checks). */
static void test_out_of_memory(void **state)
{
    (void)state;
    const char *text = "nodes 3\nnode 1 layers * experts 0-3\nnode 2 layers * experts 4-7\n"
                       "node 3 layers 0 experts 0,1\n";
    char *dir = testutil_mkdtemp("test_placement");
    assert_non_null(dir);
    char path[1024];
    snprintf(path, sizeof path, "%s/p.txt", dir);
    assert_int_equal(testutil_write_file(path, text, strlen(text)), 0);
    for (int which = 0; which < 3; which++) {
        int failures = 0;
        for (long n = 1; n < 100; n++) {
            err_t err = {0};
            mem_fail_after(n);
            placement_t *p = which == 0   ? placement_default(2, 8, 3, 2, &err)
                             : which == 1 ? s_parse(text, 2, 8, 3, &err)
                                          : placement_load(path, 2, 8, 3, &err);
            int saved = errno;
            mem_fail_after(-1);
            if (p) {
                placement_destroy(&p);
                break;
            }
            assert_int_equal(saved, ENOMEM);
            assert_true(strlen(err.msg) > 0);
            failures++;
        }
        assert_true(failures >= 3); /* each constructor allocates at least 3 times */
    }
    testutil_rmtree(dir);
    free(dir);
}

/* ===== grouped split ====================================================== */

/* Checks a grouped placement against its definition, computed another way:
 * every expert of a group has the same hosts; the first hosts of the groups
 * are non-decreasing in the group id and give each node floor(G/N) or
 * ceil(G/N) groups; replica j is the node after replica j - 1 (cyclically). */
static void s_expect_grouped(const placement_t *p, int n_layers, int n_experts,
                             int n_groups, int n_nodes, int replicas)
{
    const int per_group = n_experts / n_groups;
    int groups_of[PLACEMENT_MAX_NODES + 1] = {0};
    int last_home = 1;
    for (int g = 0; g < n_groups; g++) {
        const int *first = NULL;
        assert_int_equal(placement_nodes_of(p, 0, g * per_group, &first), replicas);
        assert_true(first[0] >= last_home);
        last_home = first[0];
        groups_of[first[0]]++;
        for (int j = 1; j < replicas; j++)
            assert_int_equal(first[j], first[j - 1] % n_nodes + 1);
        for (int l = 0; l < n_layers; l++)
            for (int e = g * per_group; e < (g + 1) * per_group; e++) {
                const int *nodes = NULL;
                assert_int_equal(placement_nodes_of(p, l, e, &nodes), replicas);
                assert_memory_equal(nodes, first, (size_t)replicas * sizeof(int));
            }
    }
    for (int n = 1; n <= n_nodes; n++) {
        assert_true(groups_of[n] == n_groups / n_nodes ||
                    groups_of[n] == (n_groups + n_nodes - 1) / n_nodes);
        int hosted_groups = 0; /* groups of which n holds some replica */
        for (int g = 0; g < n_groups; g++)
            hosted_groups += placement_hosts(p, n, 0, g * per_group);
        assert_int_equal(placement_node_count(p, n), n_layers * per_group * hosted_groups);
    }
}

static void test_grouped_split(void **state)
{
    (void)state;
    static const int cases[][5] = {
        /* layers, experts, groups, nodes, replicas */
        {3, 16, 4, 4, 1},   {3, 16, 4, 2, 1},  {3, 16, 4, 3, 1}, {3, 16, 4, 4, 2},
        {2, 256, 8, 8, 1},  {2, 256, 8, 8, 3}, {2, 256, 8, 5, 2}, {1, 160, 8, 1, 1},
        {2, 64, 16, 6, 6},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int *k = cases[c];
        err_t err = {0};
        placement_t *p = placement_grouped(k[0], k[1], k[2], k[3], k[4], &err);
        assert_non_null(p);
        s_expect_grouped(p, k[0], k[1], k[2], k[3], k[4]);
        /* What placement_write gives reads back the same. */
        char *text = s_write(p);
        placement_t *q = s_parse(text, k[0], k[1], k[3], &err);
        assert_non_null(q);
        s_expect_equal(p, q);
        placement_destroy(&q);
        free(text);
        placement_destroy(&p);
    }
    /* The deepseek_v3-A fixture's shape on 4 nodes, as a user reads it. */
    err_t err = {0};
    placement_t *p = placement_grouped(3, 16, 4, 4, 1, &err);
    char *text = s_write(p);
    assert_non_null(strstr(text, "nodes 4\nnode 1 layers * experts 0-3\n"
                                 "node 2 layers * experts 4-7\nnode 3 layers * experts 8-11\n"
                                 "node 4 layers * experts 12-15\n"));
    free(text);
    placement_destroy(&p);
    /* 8 groups on 3 nodes: 3, 3 and 2 groups. */
    p = placement_grouped(1, 16, 8, 3, 1, &err);
    s_expect_nodes(p, 0, 5, 1, 1);
    s_expect_nodes(p, 0, 6, 1, 2);
    s_expect_nodes(p, 0, 11, 1, 2);
    s_expect_nodes(p, 0, 12, 1, 3);
    assert_int_equal(placement_node_count(p, 1), 6);
    assert_int_equal(placement_node_count(p, 3), 4);
    placement_destroy(&p);
}

static void test_grouped_rejects(void **state)
{
    (void)state;
    static const struct {
        int experts, groups, nodes, replicas;
        const char *why;
    } cases[] = {
        {8, 1, 2, 1, "no expert groups"},
        {8, 0, 2, 1, "no expert groups"},
        {8, 3, 2, 1, "do not divide"},
        {16, 4, 5, 1, "5 nodes for 4 expert groups"},
        {16, 4, 4, 5, "5 replicas on 4 nodes"},
        {16, 4, 4, 0, "0 replicas"},
        {16, 4, 0, 1, "1 replicas on 0 nodes"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        err_t err = {0};
        errno = 0;
        placement_t *p = placement_grouped(2, cases[c].experts, cases[c].groups,
                                           cases[c].nodes, cases[c].replicas, &err);
        assert_null(p);
        assert_int_equal(errno, EINVAL);
        assert_int_equal(err.code, EINVAL);
        if (!strstr(err.msg, cases[c].why))
            fail_msg("case %zu: '%s' does not say '%s'", c, err.msg, cases[c].why);
    }
}

/* A small deterministic generator (xorshift64*), uniform in [0, 1). */
static double s_uniform(uint64_t *st)
{
    *st ^= *st >> 12;
    *st ^= *st << 25;
    *st ^= *st >> 27;
    return (double)((*st * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

static double s_normal(uint64_t *st)
{
    double u = s_uniform(st), v = s_uniform(st);
    return sqrt(-2 * log(u > 0 ? u : 1e-300)) * cos(6.283185307179586 * v);
}

/* Distinct first-choice nodes (the ones the coordinator sends to while every
 * node is up) of the k experts ids[0..k) of layer 0. */
static int s_nodes_reached(const placement_t *p, const int32_t *ids, int k)
{
    bool seen[PLACEMENT_MAX_NODES + 1] = {false};
    int n = 0;
    for (int i = 0; i < k; i++) {
        const int *nodes = NULL;
        assert_int_equal(placement_nodes_of(p, 0, ids[i], &nodes) >= 1, 1);
        n += !seen[nodes[0]];
        seen[nodes[0]] = true;
    }
    return n;
}

/* C(n, r) / C(m, r) in float64, for n <= m. */
static double s_binom_ratio(int n, int m, int r)
{
    double x = 1;
    for (int i = 0; i < r; i++)
        x *= (double)(n - i) / (double)(m - i);
    return n < r ? 0 : x;
}

/* Expected distinct nodes when k experts are drawn uniformly without
 * replacement from those of the kept groups: sum over nodes of
 * 1 - C(M - m_n, k) / C(M, k), m_n being the node's experts among the M. */
static double s_expected_nodes(const placement_t *p, const bool *kept, int n_experts,
                               int n_groups, int k)
{
    const int per_group = n_experts / n_groups;
    int m[PLACEMENT_MAX_NODES + 1] = {0}, total = 0;
    for (int e = 0; e < n_experts; e++)
        if (kept[e / per_group]) {
            const int *nodes = NULL;
            placement_nodes_of(p, 0, e, &nodes);
            m[nodes[0]]++;
            total++;
        }
    double sum = 0;
    for (int n = 1; n <= placement_n_nodes(p); n++)
        sum += 1 - s_binom_ratio(total - m[n], total, k);
    return sum;
}

typedef struct s_shape {
    const char *name;
    int n_experts, n_groups, topk_group, k, n_nodes;
} s_shape_t;

/* Group-limited choices over n_tokens tokens, two ways, on the default and
 * the grouped split of `shape`:
 *  - uniform: topk_group groups at random, then k experts at random among
 *    theirs; the mean distinct nodes must match the exact expectation (the
 *    float64 formula above, averaged over the same kept groups) within 5
 *    standard errors;
 *  - router: the engine's DeepSeek-V3 router on random logits and biases.
 * Every token of the grouped split reaches at most topk_group nodes. */
static void s_simulate(const s_shape_t *sh, int n_tokens, double means[2][2])
{
    err_t err = {0};
    placement_t *split[2] = {
        placement_default(1, sh->n_experts, sh->n_nodes, 1, &err),
        placement_grouped(1, sh->n_experts, sh->n_groups, sh->n_nodes, 1, &err),
    };
    assert_non_null(split[0]);
    assert_non_null(split[1]);
    const int per_group = sh->n_experts / sh->n_groups;
    float *logits = mem_alloc((size_t)sh->n_experts * sizeof(float));
    float *bias = mem_alloc((size_t)sh->n_experts * sizeof(float));
    int32_t ids[64];
    float weights[64];
    int pool[1024];
    bool kept[ROUTER_MAX_GROUPS];
    uint64_t st = 0x9e3779b97f4a7c15ull;
    assert_true(sh->k <= 64 && sh->n_experts <= 1024);
    for (int s = 0; s < 2; s++) {
        double sum = 0, sum_sq = 0, expected = 0, router_sum = 0;
        int max_nodes = 0, router_max = 0;
        for (int t = 0; t < n_tokens; t++) {
            /* Uniform: kept groups by a partial shuffle, then experts. */
            int order[ROUTER_MAX_GROUPS];
            for (int g = 0; g < sh->n_groups; g++) {
                order[g] = g;
                kept[g] = false;
            }
            for (int j = 0; j < sh->topk_group; j++) {
                int r = j + (int)(s_uniform(&st) * (sh->n_groups - j));
                int tmp = order[j];
                order[j] = order[r];
                order[r] = tmp;
                kept[order[j]] = true;
            }
            int n_pool = 0;
            for (int e = 0; e < sh->n_experts; e++)
                if (kept[e / per_group])
                    pool[n_pool++] = e;
            for (int j = 0; j < sh->k; j++) {
                int r = j + (int)(s_uniform(&st) * (n_pool - j));
                int tmp = pool[j];
                pool[j] = pool[r];
                pool[r] = tmp;
                ids[j] = pool[j];
            }
            int n = s_nodes_reached(split[s], ids, sh->k);
            sum += n;
            sum_sq += (double)n * n;
            max_nodes = n > max_nodes ? n : max_nodes;
            expected += s_expected_nodes(split[s], kept, sh->n_experts, sh->n_groups, sh->k);
            /* The engine's router on random scores. */
            for (int e = 0; e < sh->n_experts; e++) {
                logits[e] = (float)s_normal(&st);
                bias[e] = (float)(0.1 * s_uniform(&st));
            }
            router_select_grouped_sigmoid(logits, bias, 1, sh->n_experts, sh->n_groups,
                                          sh->topk_group, sh->k, true, 1.0f, ids, weights);
            n = s_nodes_reached(split[s], ids, sh->k);
            router_sum += n;
            router_max = n > router_max ? n : router_max;
        }
        double mean = sum / n_tokens, var = sum_sq / n_tokens - mean * mean;
        expected /= n_tokens;
        printf("  %s, %s split: %.3f nodes per token (exact %.3f, max %d); router: %.3f "
               "(max %d)\n", sh->name, s ? "grouped" : "default", mean, expected, max_nodes,
               router_sum / n_tokens, router_max);
        if (fabs(mean - expected) > 5 * sqrt(var / n_tokens) + 1e-9)
            fail_msg("%s: mean %.4f differs from the exact %.4f", sh->name, mean, expected);
        if (s == 1) {
            assert_true(max_nodes <= sh->topk_group);
            assert_true(router_max <= sh->topk_group);
        }
        means[s][0] = mean;
        means[s][1] = router_sum / n_tokens;
    }
    mem_free(bias);
    mem_free(logits);
    placement_destroy(&split[1]);
    placement_destroy(&split[0]);
}

static void test_grouped_routing_simulated(void **state)
{
    (void)state;
    static const s_shape_t shapes[] = {
        /* DeepSeek-V3 (256 experts, 8 groups, topk_group 4, top-8) on 8 nodes */
        {"deepseek-v3 on 8 nodes", 256, 8, 4, 8, 8},
        /* the deepseek_v3-A fixture (16, 4, 2, top-4) on 4 nodes */
        {"deepseek_v3-A on 4 nodes", 16, 4, 2, 4, 4},
        /* DeepSeek-V2 (160 experts, 8 groups, topk_group 3, top-6) on 8 nodes */
        {"deepseek-v2 on 8 nodes", 160, 8, 3, 6, 8},
        /* more groups than nodes: 2 groups per node */
        {"16 groups on 8 nodes", 256, 16, 4, 8, 8},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        double means[2][2];
        s_simulate(&shapes[i], 20000, means);
        /* The grouped split saves traffic both ways. */
        assert_true(means[1][0] < means[0][0]);
        assert_true(means[1][1] < means[0][1]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_even_split),
        cmocka_unit_test(test_default_uneven_split),
        cmocka_unit_test(test_default_replicas),
        cmocka_unit_test(test_default_rejects_bad_sizes),
        cmocka_unit_test(test_file_example),
        cmocka_unit_test(test_queries_out_of_range),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_write_round_trip),
        cmocka_unit_test(test_write_failure),
        cmocka_unit_test(test_out_of_memory),
        cmocka_unit_test(test_grouped_split),
        cmocka_unit_test(test_grouped_rejects),
        cmocka_unit_test(test_grouped_routing_simulated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
