/* test_metrics: the metrics registry, its Prometheus text checked by a real
 * parser (Debian python3-prometheus-client, run as a subprocess), its JSON,
 * and updates from two threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "core/metrics.h"
#include "tests/testutil.h"

/* The parser: Debian's python3 (a python3 first on PATH may lack the module). */
static const char *s_python(void)
{
    return testutil_env("MOE_PYTHON3", "/usr/bin/python3");
}

/* Parses argv[1] with prometheus_client's parser of the text format 0.0.4
 * and prints what it read as JSON; fails on any line it cannot read, on a
 * sample of no declared family (TYPE), on a timestamp, or when it read fewer
 * samples than the file has sample lines (nothing silently dropped). */
static const char s_parse_py[] =
    "import json, math, sys\n"
    "from prometheus_client.parser import text_string_to_metric_families\n"
    "text = open(sys.argv[1], encoding='utf-8').read()\n"
    "fams = []\n"
    "n = 0\n"
    "def num(v):\n"
    "    return v if math.isfinite(v) else repr(v)\n"
    "for f in text_string_to_metric_families(text):\n"
    "    if f.type == 'unknown':\n"
    "        sys.exit('no TYPE for family %s' % f.name)\n"
    "    ss = []\n"
    "    for s in f.samples:\n"
    "        if s.timestamp is not None:\n"
    "            sys.exit('timestamp on %s' % s.name)\n"
    "        ss.append({'name': s.name, 'labels': s.labels, 'value': num(s.value)})\n"
    "    n += len(ss)\n"
    "    fams.append({'name': f.name, 'type': f.type, 'help': f.documentation, 'samples': ss})\n"
    "lines = [l for l in text.split('\\n') if l and not l.startswith('#')]\n"
    "if len(lines) != n:\n"
    "    sys.exit('%d sample lines, %d samples parsed' % (len(lines), n))\n"
    "print(json.dumps(fams))\n";

/* Runs the parser on text; returns its JSON (caller decrefs) or NULL with
 * the parser's complaint printed (unless quiet). Skips the case when the
 * parser is missing. */
static json_t *s_parse(const char *dir, const char *text, size_t len, bool quiet, int *rc_out)
{
    char py[4096], in[4096], cmd[16384];
    snprintf(py, sizeof py, "%s/parse.py", dir);
    snprintf(in, sizeof in, "%s/metrics.txt", dir);
    assert_int_equal(testutil_write_file(py, s_parse_py, strlen(s_parse_py)), 0);
    assert_int_equal(testutil_write_file(in, text, len), 0);
    snprintf(cmd, sizeof cmd, "'%s' -c 'import prometheus_client' 2>/dev/null", s_python());
    if (testutil_run(cmd, NULL) != 0)
        testutil_skip_unless_possible(false, "%s has no prometheus_client "
                                      "(apt-get install python3-prometheus-client)", s_python());
    snprintf(cmd, sizeof cmd, "'%s' '%s' '%s'%s", s_python(), py, in, quiet ? " 2>/dev/null" : "");
    char *out = NULL;
    int rc = testutil_run(cmd, &out);
    *rc_out = rc;
    json_t *j = rc == 0 ? json_loads(out ? out : "", 0, NULL) : NULL;
    free(out);
    return j;
}

/* The parsed sample of this name whose labels are exactly labels (a JSON
 * object), or NULL. */
static json_t *s_sample(json_t *fams, const char *name, json_t *labels)
{
    size_t i, k;
    json_t *f, *s;
    json_array_foreach(fams, i, f) {
        json_array_foreach(json_object_get(f, "samples"), k, s) {
            if (strcmp(json_string_value(json_object_get(s, "name")), name) == 0 &&
                json_equal(json_object_get(s, "labels"), labels))
                return s;
        }
    }
    return NULL;
}

static json_t *s_family(json_t *fams, const char *name)
{
    size_t i;
    json_t *f;
    json_array_foreach(fams, i, f)
        if (strcmp(json_string_value(json_object_get(f, "name")), name) == 0)
            return f;
    return NULL;
}

static double s_value(json_t *sample)
{
    json_t *v = json_object_get(sample, "value");
    if (json_is_number(v))
        return json_number_value(v);
    const char *t = json_string_value(v);
    assert_non_null(t);
    return strcmp(t, "nan") == 0 ? NAN : strcmp(t, "inf") == 0 ? INFINITY : -INFINITY;
}

/* ---- names and validation ------------------------------------------------- */

static void test_validation(void **state)
{
    (void)state;
    metrics_t *m = metrics_new();
    assert_non_null(m);
    err_t err = {0};
    static const char *const none[] = {NULL};
    static const char *const le[] = {"le", NULL};
    static const char *const dunder[] = {"__x", NULL};
    static const char *const digit[] = {"1x", NULL};
    static const char *const colon[] = {"a:b", NULL};
    static const char *const twice[] = {"a", "a", NULL};
    static const char *const many[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i", NULL};
    static const char *const ok[] = {"le", "_a", "B9", NULL};
    struct { const char *name; const char *const *labels; int code; } cases[] = {
        {"", none, EINVAL},      {"9a", none, EINVAL},      {"a-b", none, EINVAL},
        {"a b", none, EINVAL},   {"a", dunder, EINVAL},     {"a", digit, EINVAL},
        {"a", colon, EINVAL},    {"a", twice, EINVAL},      {"a", many, E2BIG},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        errno = 0;
        assert_null(metrics_counter(m, cases[i].name, "h", cases[i].labels, &err));
        assert_int_equal(errno, cases[i].code);
        assert_int_equal(err.code, cases[i].code);
        assert_true(strlen(err.msg) > 0);
    }
    char longname[METRICS_MAX_NAME + 2];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_null(metrics_gauge(m, longname, "h", NULL, &err));
    assert_int_equal(errno, EINVAL);
    longname[METRICS_MAX_NAME] = '\0';
    assert_non_null(metrics_gauge(m, longname, "h", NULL, &err));
    assert_null(metrics_gauge(m, "bad_help", "\xff", NULL, &err));
    assert_int_equal(errno, EINVAL);
    assert_null(metrics_gauge(m, "null_help", NULL, NULL, &err));
    assert_int_equal(errno, EINVAL);

    /* Names with colons, a gauge's "le"; then the name is taken. */
    metric_t *g = metrics_gauge(m, "ns:sub_ok", "h", ok, &err);
    assert_non_null(g);
    assert_string_equal(metric_name(g), "ns:sub_ok");
    assert_int_equal(metric_kind(g), METRIC_GAUGE);
    assert_int_equal(metric_n_labels(g), 3);
    assert_null(metrics_counter(m, "ns:sub_ok", "h", NULL, &err));
    assert_int_equal(errno, EEXIST);
    assert_ptr_equal(metrics_find(m, "ns:sub_ok"), g);
    errno = 0;
    assert_null(metrics_find(m, "nope"));
    assert_int_equal(errno, ENOENT);

    /* Histograms: no "le" label; bounds finite and increasing. */
    double b[] = {0.1, 1, 10};
    assert_null(metrics_histogram(m, "h1", "h", le, b, 3, &err));
    assert_int_equal(errno, EINVAL);
    double dup[] = {1, 1};
    assert_null(metrics_histogram(m, "h2", "h", NULL, dup, 2, &err));
    assert_int_equal(errno, EINVAL);
    double down[] = {2, 1};
    assert_null(metrics_histogram(m, "h3", "h", NULL, down, 2, &err));
    assert_int_equal(errno, EINVAL);
    double inf[] = {1, INFINITY};
    assert_null(metrics_histogram(m, "h4", "h", NULL, inf, 2, &err));
    assert_int_equal(errno, EINVAL);
    double nan[] = {NAN};
    assert_null(metrics_histogram(m, "h5", "h", NULL, nan, 1, &err));
    assert_int_equal(errno, EINVAL);
    double big[METRICS_MAX_BOUNDS + 1];
    for (int i = 0; i <= METRICS_MAX_BOUNDS; i++)
        big[i] = i;
    assert_null(metrics_histogram(m, "h6", "h", NULL, big, METRICS_MAX_BOUNDS + 1, &err));
    assert_int_equal(errno, E2BIG);
    assert_non_null(metrics_histogram(m, "h7", "h", NULL, big, METRICS_MAX_BOUNDS, &err));
    assert_non_null(metrics_histogram(m, "h8", "only +Inf", NULL, NULL, 0, &err));

    /* Label values: NULL, not UTF-8, too long. */
    static const char *const one[] = {"v", NULL};
    metric_t *c = metrics_counter(m, "c_total", "h", one, &err);
    assert_non_null(c);
    errno = 0;
    assert_null(metric_child(c, NULL));
    assert_int_equal(errno, EINVAL);
    const char *nullv[] = {NULL};
    assert_null(metric_child(c, nullv));
    assert_int_equal(errno, EINVAL);
    const char *const bad[][1] = {{"\xc3"}, {"\xc0\xaf"}, {"\xed\xa0\x80"}, {"\xf4\x90\x80\x80"},
                                  {"a\xffz"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        assert_null(metric_child(c, bad[i]));
        assert_int_equal(errno, EINVAL);
    }
    char longv[METRICS_MAX_VALUE + 2];
    memset(longv, 'x', sizeof longv - 1);
    longv[sizeof longv - 1] = '\0';
    const char *lv[] = {longv};
    assert_null(metric_child(c, lv));
    assert_int_equal(errno, EINVAL);
    longv[METRICS_MAX_VALUE] = '\0';
    assert_non_null(metric_child(c, lv));
    const char *good[] = {"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"}; /* é € 😀 */
    assert_non_null(metric_child(c, good));
    assert_int_equal(metrics_add(c, bad[0], 1), -1);
    assert_int_equal(errno, EINVAL);
    metrics_destroy(&m);
    assert_null(m);
    metrics_destroy(&m);
    metrics_destroy(NULL);
}

/* ---- values ------------------------------------------------------------- */

static void test_counter_gauge(void **state)
{
    (void)state;
    metrics_t *m = metrics_new();
    static const char *const lab[] = {"a", "b", NULL};
    metric_t *c = metrics_counter(m, "req_total", "Requests.", lab, NULL);
    metric_t *g = metrics_gauge(m, "queue", "Queue.", NULL, NULL);
    assert_non_null(c);
    assert_non_null(g);
    const char *v1[] = {"x", "y"}, *v2[] = {"x", "z"}, *v3[] = {"xy", ""};
    const char *v1b[] = {"x", "y"};
    metric_child_t *c1 = metric_child(c, v1);
    assert_non_null(c1);
    assert_ptr_equal(metric_child(c, v1b), c1); /* same values, same child */
    assert_ptr_not_equal(metric_child(c, v2), c1);
    assert_ptr_not_equal(metric_child(c, v3), c1);
    metric_child_add(c1, 2);
    metric_child_add(c1, 0.5);
    metric_child_add(c1, -1);  /* a counter never goes down */
    metric_child_add(c1, NAN);
    assert_true(metric_child_value(c1) == 2.5);
    assert_int_equal(metrics_add(c, v2, 7), 0);
    assert_true(metric_child_value(metric_child(c, v2)) == 7);
    assert_true(metric_child_value(metric_child(c, v3)) == 0);

    metric_child_t *q = metric_child(g, NULL);
    assert_non_null(q);
    assert_true(metric_child_value(q) == 0);
    metric_child_set(q, 5);
    metric_child_add(q, -7);
    assert_true(metric_child_value(q) == -2);
    assert_int_equal(metrics_set(g, NULL, 3), 0);
    assert_true(metric_child_value(q) == 3);
    metrics_destroy(&m);
}

static void test_histogram(void **state)
{
    (void)state;
    metrics_t *m = metrics_new();
    double b[4];
    assert_int_equal(metrics_buckets_exponential(0.5, 2, 4, b), 4); /* .5 1 2 4 */
    assert_true(b[0] == 0.5 && b[1] == 1 && b[2] == 2 && b[3] == 4);
    static const char *const lab[] = {"route", NULL};
    metric_t *h = metrics_histogram(m, "lat_seconds", "Latency.", lab, b, 4, NULL);
    assert_non_null(h);
    const char *r[] = {"/v1/completions"};
    metric_child_t *c = metric_child(h, r);
    double obs[] = {0.1, 0.5, 0.50001, 1, 3, 4, 100, -1, NAN, INFINITY};
    for (size_t i = 0; i < sizeof obs / sizeof obs[0]; i++)
        metric_child_observe(c, obs[i]);
    assert_int_equal(metric_child_count(c), 9); /* NaN ignored */
    assert_int_equal(metric_child_bucket(c, 0), 3);  /* 0.1 0.5 -1 (le: <=) */
    assert_int_equal(metric_child_bucket(c, 1), 5);  /* + 0.50001 1 */
    assert_int_equal(metric_child_bucket(c, 2), 5);
    assert_int_equal(metric_child_bucket(c, 3), 7);  /* + 3 4 */
    assert_int_equal(metric_child_bucket(c, 4), 9);  /* +Inf: all */
    assert_true(isinf(metric_child_sum(c)));
    assert_int_equal(metrics_observe(h, r, 1), 0);
    assert_int_equal(metric_child_bucket(c, 1), 6);

    /* Exact text of one histogram. */
    metrics_t *m2 = metrics_new();
    double b2[] = {0.1, 1};
    metric_t *h2 = metrics_histogram(m2, "ttft_seconds", "Time to first token.", NULL, b2, 2,
                                     NULL);
    double o2[] = {0.05, 0.1, 0.5, 0.6, 1, 2};
    for (int i = 0; i < 6; i++)
        metrics_observe(h2, NULL, o2[i]);
    char *text;
    size_t len;
    assert_int_equal(metrics_render_text(m2, &text, &len), 0);
    assert_string_equal(text,
                        "# HELP ttft_seconds Time to first token.\n"
                        "# TYPE ttft_seconds histogram\n"
                        "ttft_seconds_bucket{le=\"0.1\"} 2\n"
                        "ttft_seconds_bucket{le=\"1\"} 5\n"
                        "ttft_seconds_bucket{le=\"+Inf\"} 6\n"
                        "ttft_seconds_sum 4.25\n"
                        "ttft_seconds_count 6\n");
    assert_int_equal(len, strlen(text));
    mem_free(text);
    metrics_destroy(&m2);
    metrics_destroy(&m);
}

/* ---- text --------------------------------------------------------------------- */

static void test_render_exact(void **state)
{
    (void)state;
    metrics_t *m = metrics_new();
    char *text;
    size_t len;
    assert_int_equal(metrics_render_text(m, &text, &len), 0); /* empty: "" */
    assert_int_equal(len, 0);
    assert_string_equal(text, "");
    mem_free(text);

    static const char *const lab[] = {"path", "q", NULL};
    metric_t *c = metrics_counter(m, "esc_total", "Back\\slash and\nnewline \"quoted\".", lab,
                                  NULL);
    metrics_add(c, (const char *const[]){"C:\\dir\\", "say \"hi\"\nbye"}, 3);
    metric_t *g = metrics_gauge(m, "g", "Gauge.", NULL, NULL);
    metrics_set(g, NULL, 0.1);
    metric_t *e = metrics_gauge(m, "empty", "No children yet.", lab, NULL);
    (void)e;
    metric_t *x = metrics_gauge(m, "special", "Non-finite.", (const char *const[]){"k", NULL},
                                NULL);
    metrics_set(x, (const char *const[]){"nan"}, NAN);
    metrics_set(x, (const char *const[]){"pinf"}, INFINITY);
    metrics_set(x, (const char *const[]){"ninf"}, -INFINITY);
    metrics_set(x, (const char *const[]){"big"}, 1e300);
    metrics_set(x, (const char *const[]){"int"}, 123456789012.0);
    assert_int_equal(metrics_render_text(m, &text, &len), 0);
    assert_string_equal(text,
                        "# HELP esc_total Back\\\\slash and\\nnewline \"quoted\".\n"
                        "# TYPE esc_total counter\n"
                        "esc_total{path=\"C:\\\\dir\\\\\",q=\"say \\\"hi\\\"\\nbye\"} 3\n"
                        "# HELP g Gauge.\n"
                        "# TYPE g gauge\n"
                        "g 0.1\n"
                        "# HELP empty No children yet.\n"
                        "# TYPE empty gauge\n"
                        "# HELP special Non-finite.\n"
                        "# TYPE special gauge\n"
                        "special{k=\"nan\"} NaN\n"
                        "special{k=\"pinf\"} +Inf\n"
                        "special{k=\"ninf\"} -Inf\n"
                        "special{k=\"big\"} 1e+300\n"
                        "special{k=\"int\"} 123456789012\n");
    mem_free(text);
    metrics_destroy(&m);
}

/* The families of issue 14 with hostile label values, many children and
 * histograms with labels, read back by the real parser: every value and
 * label read back equal, buckets cumulative, +Inf == _count. */
static void test_parser(void **state)
{
    const char *dir = *state;
    metrics_t *m = metrics_new();
    err_t err = {0};
    static const char *const outcome[] = {"outcome", NULL};
    static const char *const node[] = {"node", NULL};
    static const char *const lex[] = {"layer", "expert", "node", NULL};
    static const char *const bl[] = {"version", "protocol", "model", NULL};
    metric_t *req = metrics_counter(m, "moe_requests_total",
                                    "Requests finished, by outcome.", outcome, &err);
    metric_t *ptok = metrics_counter(m, "moe_prompt_tokens_total", "Prompt tokens.", NULL, &err);
    double b[12];
    metrics_buckets_exponential(0.001, 3, 12, b);
    metric_t *ttft = metrics_histogram(m, "moe_time_to_first_token_seconds",
                                       "TTFT, with a \\ and a\nnewline.", NULL, b, 12, &err);
    metric_t *lat = metrics_histogram(m, "moe_route_seconds", "By route.", node, b, 3, &err);
    metric_t *up = metrics_gauge(m, "moe_node_up", "1 when live.", node, &err);
    metric_t *etok = metrics_counter(m, "moe_expert_tokens_total", "Rows per expert.", lex, &err);
    metric_t *info = metrics_gauge(m, "moe_build_info", "Build.", bl, &err);
    assert_non_null(req && ptok && ttft && lat && up && etok && info);
    const char *hostile[] = {"ok", "a\\b", "q\"uote", "new\nline", "\\\"\n\\n", "", "é€😀",
                             "{x=\"1\"}", "# TYPE", " spaced ", "tab\there"};
    size_t n_hostile = sizeof hostile / sizeof hostile[0];
    for (size_t i = 0; i < n_hostile; i++) {
        metrics_add(req, &hostile[i], (double)i + 1);
        metrics_set(up, &hostile[i], (double)(i % 2));
        for (int k = 0; k <= (int)i; k++)
            metrics_observe(lat, &hostile[i], k * 0.002);
    }
    metrics_add(ptok, NULL, 12345);
    for (int i = 0; i < 1000; i++)
        metrics_observe(ttft, NULL, (i % 97) * 0.003);
    enum { LAYERS = 8, EXPERTS = 64, NODES = 3 };
    for (int l = 0; l < LAYERS; l++) {
        for (int e = 0; e < EXPERTS; e++) {
            char ls[8], es[8], ns[8];
            snprintf(ls, sizeof ls, "%d", l);
            snprintf(es, sizeof es, "%d", e);
            snprintf(ns, sizeof ns, "%d", (l + e) % NODES);
            assert_int_equal(metrics_add(etok, (const char *const[]){ls, es, ns}, l * 1000 + e),
                             0);
        }
    }
    metrics_set(info, (const char *const[]){"0.14", "3", "mixtral"}, 1);

    char *text;
    size_t len;
    assert_int_equal(metrics_render_text(m, &text, &len), 0);
    int rc = 0;
    json_t *fams = s_parse(dir, text, len, false, &rc);
    if (!fams)
        fail_msg("the parser refused the text (status %d); it is in %s/metrics.txt", rc, dir);
    mem_free(text);

    /* Every family, its type and help (escapes read back). */
    struct { const char *name; const char *type; } want[] = {
        {"moe_requests", "counter"}, {"moe_prompt_tokens", "counter"},
        {"moe_time_to_first_token_seconds", "histogram"}, {"moe_route_seconds", "histogram"},
        {"moe_node_up", "gauge"}, {"moe_expert_tokens", "counter"}, {"moe_build_info", "gauge"},
    };
    assert_int_equal(json_array_size(fams), sizeof want / sizeof want[0]);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        json_t *f = s_family(fams, want[i].name);
        if (!f)
            fail_msg("family %s not parsed", want[i].name);
        assert_string_equal(json_string_value(json_object_get(f, "type")), want[i].type);
    }
    assert_string_equal(json_string_value(json_object_get(
                            s_family(fams, "moe_time_to_first_token_seconds"), "help")),
                        "TTFT, with a \\ and a\nnewline.");

    /* Label values read back as set. */
    for (size_t i = 0; i < n_hostile; i++) {
        json_t *l = json_pack("{ss}", "outcome", hostile[i]);
        json_t *s = s_sample(fams, "moe_requests_total", l);
        if (!s)
            fail_msg("moe_requests_total{outcome=%s} not read back", hostile[i]);
        assert_true(s_value(s) == (double)i + 1);
        json_decref(l);
        l = json_pack("{ss}", "node", hostile[i]);
        s = s_sample(fams, "moe_node_up", l);
        assert_non_null(s);
        assert_true(s_value(s) == (double)(i % 2));
        json_decref(l);
        /* A labelled histogram: i + 1 observations, k * 2 ms. */
        l = json_pack("{ss}", "node", hostile[i]);
        s = s_sample(fams, "moe_route_seconds_count", l);
        assert_non_null(s);
        assert_true(s_value(s) == (double)i + 1);
        json_decref(l);
        l = json_pack("{ssss}", "node", hostile[i], "le", "+Inf");
        s = s_sample(fams, "moe_route_seconds_bucket", l);
        assert_non_null(s);
        assert_true(s_value(s) == (double)i + 1);
        json_decref(l);
    }
    /* Every expert child, once, with its value. */
    json_t *ef = s_family(fams, "moe_expert_tokens");
    assert_int_equal(json_array_size(json_object_get(ef, "samples")), LAYERS * EXPERTS);
    for (int l = 0; l < LAYERS; l++) {
        for (int e = 0; e < EXPERTS; e += 7) {
            char ls[8], es[8], ns[8];
            snprintf(ls, sizeof ls, "%d", l);
            snprintf(es, sizeof es, "%d", e);
            snprintf(ns, sizeof ns, "%d", (l + e) % NODES);
            json_t *lj = json_pack("{ssssss}", "layer", ls, "expert", es, "node", ns);
            json_t *s = s_sample(fams, "moe_expert_tokens_total", lj);
            assert_non_null(s);
            assert_true(s_value(s) == l * 1000 + e);
            json_decref(lj);
        }
    }
    /* The unlabelled histogram: cumulative buckets, +Inf == count, the sum. */
    json_t *tf = s_family(fams, "moe_time_to_first_token_seconds");
    size_t k;
    json_t *s;
    double prev = -1, inf_count = -1, count = -1, sum = NAN;
    int n_buckets = 0;
    json_array_foreach(json_object_get(tf, "samples"), k, s) {
        const char *name = json_string_value(json_object_get(s, "name"));
        if (strcmp(name, "moe_time_to_first_token_seconds_bucket") == 0) {
            double v = s_value(s);
            assert_true(v >= prev);
            prev = v;
            n_buckets++;
            const char *le = json_string_value(json_object_get(json_object_get(s, "labels"), "le"));
            if (strcmp(le, "+Inf") == 0)
                inf_count = v;
            else
                assert_true(strtod(le, NULL) == b[n_buckets - 1]); /* bounds read back */
        } else if (strcmp(name, "moe_time_to_first_token_seconds_count") == 0) {
            count = s_value(s);
        } else if (strcmp(name, "moe_time_to_first_token_seconds_sum") == 0) {
            sum = s_value(s);
        }
    }
    assert_int_equal(n_buckets, 13);
    assert_true(count == 1000);
    assert_true(inf_count == count);
    double want_sum = 0;
    for (int i = 0; i < 1000; i++)
        want_sum += (i % 97) * 0.003;
    assert_true(fabs(sum - want_sum) < 1e-9 * want_sum);
    json_t *bi = json_pack("{ssssss}", "version", "0.14", "protocol", "3", "model", "mixtral");
    assert_true(s_value(s_sample(fams, "moe_build_info", bi)) == 1);
    json_decref(bi);
    json_decref(fams);
    metrics_destroy(&m);
}

/* The parser check has teeth: text we would never write is refused. */
static void test_parser_refuses(void **state)
{
    const char *dir = *state;
    const char *broken[] = {
        "# TYPE a counter\na{x=\"unterminated} 1\n",
        "# TYPE a counter\na{x=\"a\"b\"} 1\n",
        "# TYPE a gauge\na 1.2.3\n",
        "b 1\n", /* no TYPE */
    };
    for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) {
        int rc = 0;
        json_t *j = s_parse(dir, broken[i], strlen(broken[i]), true, &rc);
        if (j)
            fail_msg("the parser accepted %s", broken[i]);
        assert_int_not_equal(rc, 0);
    }
}

/* ---- JSON ------------------------------------------------------------------- */

static void test_json(void **state)
{
    (void)state;
    metrics_t *m = metrics_new();
    static const char *const lab[] = {"outcome", NULL};
    metric_t *c = metrics_counter(m, "req_total", "Requests.", lab, NULL);
    metrics_add(c, (const char *const[]){"stop"}, 3);
    metric_t *g = metrics_gauge(m, "g", "G.", NULL, NULL);
    metrics_set(g, NULL, NAN);
    double b[] = {0.1, 1};
    metric_t *h = metrics_histogram(m, "h_seconds", "H.", NULL, b, 2, NULL);
    double o[] = {0.05, 0.1, 0.5, 0.6, 1, 2};
    for (int i = 0; i < 6; i++)
        metrics_observe(h, NULL, o[i]);
    json_t *j = metrics_to_json(m);
    assert_non_null(j);
    char *dump = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
    assert_string_equal(dump,
        "{\"g\":{\"help\":\"G.\",\"labels\":[],\"samples\":[{\"labels\":{},\"value\":null}],"
        "\"type\":\"gauge\"},"
        "\"h_seconds\":{\"bounds\":[0.10000000000000001,1.0],\"help\":\"H.\",\"labels\":[],"
        "\"samples\":[{\"buckets\":[2,5,6],\"count\":6,\"labels\":{},\"sum\":4.25}],"
        "\"type\":\"histogram\"},"
        "\"req_total\":{\"help\":\"Requests.\",\"labels\":[\"outcome\"],"
        "\"samples\":[{\"labels\":{\"outcome\":\"stop\"},\"value\":3.0}],\"type\":\"counter\"}}");
    free(dump);
    json_decref(j);
    metrics_destroy(&m);
}

/* ---- many children, limits, out of memory ---------------------------------------- */

static void test_many_children(void **state)
{
    (void)state;
    metrics_t *m = metrics_new();
    static const char *const lab[] = {"layer", "expert", NULL};
    metric_t *c = metrics_counter(m, "many_total", "Many.", lab, NULL);
    enum { N = 20000 };
    metric_child_t **kids = calloc(N, sizeof *kids);
    assert_non_null(kids);
    for (int i = 0; i < N; i++) {
        char l[16], e[16];
        snprintf(l, sizeof l, "%d", i / 100);
        snprintf(e, sizeof e, "%d", i % 100);
        kids[i] = metric_child(c, (const char *const[]){l, e});
        assert_non_null(kids[i]);
        metric_child_add(kids[i], i);
    }
    for (int i = N - 1; i >= 0; i -= 3) { /* handles survive the table's growth */
        char l[16], e[16];
        snprintf(l, sizeof l, "%d", i / 100);
        snprintf(e, sizeof e, "%d", i % 100);
        assert_ptr_equal(metric_child(c, (const char *const[]){l, e}), kids[i]);
        assert_true(metric_child_value(kids[i]) == i);
    }
    char *text;
    size_t len;
    assert_int_equal(metrics_render_text(m, &text, &len), 0);
    int lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    assert_int_equal(lines, N + 2);
    /* first-use order */
    assert_non_null(strstr(text, "\nmany_total{layer=\"0\",expert=\"0\"} 0\n"
                                 "many_total{layer=\"0\",expert=\"1\"} 1\n"));
    mem_free(text);
    free(kids);

    /* The limit: ENOSPC past METRICS_MAX_CHILDREN, and the rest still works. */
    metric_t *g = metrics_gauge(m, "limit", "Limit.", (const char *const[]){"i", NULL}, NULL);
    char v[16];
    for (int i = 0; i < METRICS_MAX_CHILDREN; i++) {
        snprintf(v, sizeof v, "%d", i);
        if (!metric_child(g, (const char *const[]){v}))
            fail_msg("child %d: errno %d", i, errno);
    }
    errno = 0;
    assert_null(metric_child(g, (const char *const[]){"one more"}));
    assert_int_equal(errno, ENOSPC);
    assert_int_equal(metrics_set(g, (const char *const[]){"7"}, 7), 0);
    assert_true(metric_child_value(metric_child(g, (const char *const[]){"7"})) == 7);
    metrics_destroy(&m);
}

static int s_oom_attempt(void *ctx, err_t *err)
{
    (void)ctx;
    metrics_t *m = metrics_new();
    metric_t *c = NULL, *h = NULL;
    char *text = NULL;
    size_t len;
    int rc = -1;
    if (!m)
        goto done;
    c = metrics_counter(m, "c_total", "C.", (const char *const[]){"a", "b", NULL}, err);
    double b[] = {1, 2};
    h = metrics_histogram(m, "h", "H.", NULL, b, 2, err);
    if (!c || !h)
        goto done;
    for (int i = 0; i < 40; i++) {
        char v[8];
        snprintf(v, sizeof v, "%d", i);
        if (metrics_add(c, (const char *const[]){v, "x"}, 1) != 0)
            goto done;
    }
    metrics_observe(h, NULL, 1.5);
    if (metrics_render_text(m, &text, &len) != 0)
        goto done;
    rc = 0;
done:
    mem_free(text);
    metrics_destroy(&m);
    return rc;
}

static void test_oom(void **state)
{
    (void)state;
    int failures = testutil_oom_sweep(200, s_oom_attempt, NULL);
    assert_true(failures > 5);
    /* A failed child creation leaves the family usable. */
    metrics_t *m = metrics_new();
    metric_t *c = metrics_counter(m, "c_total", "C.", (const char *const[]){"a", NULL}, NULL);
    mem_fail_after(1);
    errno = 0;
    assert_null(metric_child(c, (const char *const[]){"x"}));
    assert_int_equal(errno, ENOMEM);
    mem_fail_after(-1);
    assert_int_equal(metrics_add(c, (const char *const[]){"x"}, 1), 0);
    assert_true(metric_child_value(metric_child(c, (const char *const[]){"x"})) == 1);
    metrics_destroy(&m);
}

/* ---- threads ------------------------------------------------------------------- */

enum { THREAD_UPDATES = 100000, THREAD_NEW = 2000 };

typedef struct s_worker {
    metric_child_t *shared;  /* both threads add here */
    metric_t *family;        /* each makes its own children here */
    metric_t *hist;
    int id;
} s_worker_t;

static void *s_work(void *arg)
{
    s_worker_t *w = arg;
    metric_child_t *hc = metric_child(w->hist, NULL);
    for (int i = 0; i < THREAD_UPDATES; i++) {
        metric_child_add(w->shared, 1);
        metric_child_observe(hc, (i % 10) * 0.1);
        if (i < THREAD_NEW) {
            char id[8], n[16];
            snprintf(id, sizeof id, "%d", w->id);
            snprintf(n, sizeof n, "%d", i);
            if (metrics_add(w->family, (const char *const[]){id, n}, 1) != 0)
                return "metrics_add failed";
            /* and one child both threads race to make */
            if (metrics_add(w->family, (const char *const[]){"both", n}, 1) != 0)
                return "metrics_add failed";
        }
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    metrics_t *m = metrics_new();
    metric_t *c = metrics_counter(m, "shared_total", "S.", NULL, NULL);
    metric_t *f = metrics_counter(m, "per_total", "P.", (const char *const[]){"t", "i", NULL},
                                  NULL);
    double b[] = {0.25, 0.5};
    metric_t *h = metrics_histogram(m, "hist", "H.", NULL, b, 2, NULL);
    metric_child_t *shared = metric_child(c, NULL);
    s_worker_t w[2] = {{shared, f, h, 0}, {shared, f, h, 1}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, s_work, &w[i]), 0);
    /* Renders while they write: each a consistent snapshot (+Inf == count). */
    for (int r = 0; r < 20; r++) {
        json_t *j = metrics_to_json(m);
        assert_non_null(j);
        json_t *s = json_array_get(json_object_get(json_object_get(j, "hist"), "samples"), 0);
        json_int_t cnt = json_integer_value(json_object_get(s, "count"));
        json_int_t inf = json_integer_value(json_array_get(json_object_get(s, "buckets"), 2));
        assert_true(cnt == inf);
        json_decref(j);
        char *text;
        size_t len;
        assert_int_equal(metrics_render_text(m, &text, &len), 0);
        mem_free(text);
    }
    for (int i = 0; i < 2; i++) {
        void *ret = NULL;
        assert_int_equal(pthread_join(t[i], &ret), 0);
        if (ret)
            fail_msg("thread %d: %s", i, (const char *)ret);
    }
    assert_true(metric_child_value(shared) == 2.0 * THREAD_UPDATES);
    metric_child_t *hc = metric_child(h, NULL);
    assert_int_equal(metric_child_count(hc), 2 * THREAD_UPDATES);
    /* (i % 10) * 0.1 <= 0.25: i % 10 in 0..2, 3 of 10 */
    assert_int_equal(metric_child_bucket(hc, 0), 2 * THREAD_UPDATES * 3 / 10);
    json_t *j = metrics_to_json(m);
    json_t *samples = json_object_get(json_object_get(j, "per_total"), "samples");
    assert_int_equal(json_array_size(samples), 3 * THREAD_NEW); /* 2 own + 1 shared each */
    json_decref(j);
    char n[16];
    for (int i = 0; i < THREAD_NEW; i += 97) {
        snprintf(n, sizeof n, "%d", i);
        assert_true(metric_child_value(metric_child(f, (const char *const[]){"both", n})) == 2);
        assert_true(metric_child_value(metric_child(f, (const char *const[]){"1", n})) == 1);
    }
    metrics_destroy(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_counter_gauge),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_render_exact),
        cmocka_unit_test(test_parser),
        cmocka_unit_test(test_parser_refuses),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_many_children),
        cmocka_unit_test(test_oom),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, testutil_tmpdir_setup, testutil_tmpdir_teardown);
}
