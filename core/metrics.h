/* metrics: a registry of counters, gauges and histograms, rendered in the
 * Prometheus text format 0.0.4 (GET /metrics) and as JSON (STATUS).
 *
 * A metrics_t holds families (metric_t): each has a name, a help text, a kind
 * and 0..METRICS_MAX_LABELS label names. A family holds one child
 * (metric_child_t) per tuple of label values, made on first use and kept
 * until the registry is destroyed, so a child handle stays valid as long as
 * its registry. Families render in the order they were made, children in the
 * order they were first used.
 *
 * Threads: every call is safe from any thread. One mutex per registry guards
 * all of it; an update of an existing child takes that mutex once and never
 * allocates (the server loop keeps handles for the children it updates every
 * step); renders take it for the whole render, so a scrape is a consistent
 * snapshot. A family's pointer stays valid until metrics_destroy.
 *
 * Validation (EINVAL, with the name in err): metric names match
 * [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* and do not
 * begin with "__"; a histogram has no label named "le"; label values are any
 * valid UTF-8 (escaped on output: backslash, double quote, newline); help texts
 * are any valid UTF-8 (backslash and newline escaped). Histogram bounds are
 * finite and strictly increasing; the +Inf bucket is implicit.
 *
 * Example: the families the coordinator serves (issue 14). Names follow the
 * Prometheus conventions (unit suffix, _total for counters).
 *
 *   metrics_t *m = metrics_new();
 *   static const char *const outcome[] = {"outcome", NULL};
 *   metric_t *req = metrics_counter(m, "moe_requests_total",
 *       "Requests finished, by outcome (stop, length, cancelled, error, ...).",
 *       outcome, err);
 *   metric_t *prompt_tok = metrics_counter(m, "moe_prompt_tokens_total",
 *       "Prompt tokens processed.", NULL, err);
 *   metric_t *gen_tok = metrics_counter(m, "moe_generation_tokens_total",
 *       "Tokens generated.", NULL, err);
 *   double b[16];
 *   int nb = metrics_buckets_exponential(0.001, 2, 16, b);  // 1 ms .. 33 s
 *   metric_t *ttft = metrics_histogram(m, "moe_time_to_first_token_seconds",
 *       "Time from a request's arrival to its first token.", NULL, b, nb, err);
 *   metric_t *tpot = metrics_histogram(m, "moe_time_per_output_token_seconds",
 *       "Time between two tokens of one sequence.", NULL, b, nb, err);
 *   metric_t *queue = metrics_gauge(m, "moe_queue_length",
 *       "Requests waiting for a slot.", NULL, err);
 *   metric_t *running = metrics_gauge(m, "moe_running_sequences",
 *       "Sequences being decoded.", NULL, err);
 *   metric_t *kv = metrics_gauge(m, "moe_kv_cache_usage_ratio",
 *       "Share of the KV cache budget in use (0..1).", NULL, err);
 *   static const char *const node[] = {"node", NULL};
 *   metric_t *up = metrics_gauge(m, "moe_node_up", "1 when the node is live.",
 *       node, err);
 *   metric_t *rtt = metrics_gauge(m, "moe_node_rtt_seconds",
 *       "Last heartbeat round-trip time of the node.", node, err);
 *   metric_t *fo = metrics_counter(m, "moe_node_failovers_total",
 *       "Calls moved away from the node after it failed.", node, err);
 *   metric_t *tx = metrics_counter(m, "moe_node_sent_bytes_total",
 *       "Bytes sent to the node.", node, err);
 *   metric_t *rx = metrics_counter(m, "moe_node_received_bytes_total",
 *       "Bytes received from the node.", node, err);
 *   static const char *const lex[] = {"layer", "expert", "node", NULL};
 *   metric_t *etok = metrics_counter(m, "moe_expert_tokens_total",
 *       "Token rows routed to an expert of a layer, by the node that ran them.",
 *       lex, err);
 *   static const char *const bl[] = {"version", "protocol", "model", NULL};
 *   metric_t *info = metrics_gauge(m, "moe_build_info",
 *       "Always 1; the labels say what runs.", bl, err);
 *   metrics_set(info, (const char *const[]){"0.14", "3", "mixtral"}, 1);
 *
 *   // at start-up: handles for what is updated every step
 *   metric_child_t *ok = metric_child(req, (const char *const[]){"stop"});
 *   metric_child_t *q = metric_child(queue, NULL);
 *   // in the loop (no allocation, one mutex):
 *   metric_child_add(ok, 1);
 *   metric_child_set(q, n_waiting);
 *   metric_child_observe(metric_child(ttft, NULL), 0.042);
 *   metrics_add(etok, (const char *const[]){"3", "17", "1"}, 12);
 *
 *   // GET /metrics:
 *   char *text; size_t len;
 *   if (metrics_render_text(m, &text, &len) == 0) { send(text, len); mem_free(text); }
 *
 * Text rendered for one family (a histogram with bounds 0.1, 1):
 *   # HELP moe_time_to_first_token_seconds Time from ...
 *   # TYPE moe_time_to_first_token_seconds histogram
 *   moe_time_to_first_token_seconds_bucket{le="0.1"} 2
 *   moe_time_to_first_token_seconds_bucket{le="1"} 5
 *   moe_time_to_first_token_seconds_bucket{le="+Inf"} 6
 *   moe_time_to_first_token_seconds_sum 4.25
 *   moe_time_to_first_token_seconds_count 6
 * A family without children renders its HELP and TYPE lines only, except a
 * family without labels, whose one child exists from the start (it renders 0).
 */
#ifndef MOE_CORE_METRICS_H
#define MOE_CORE_METRICS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

enum {
    METRICS_MAX_LABELS = 8,         /* label names per family */
    METRICS_MAX_BOUNDS = 64,        /* histogram bounds (the +Inf bucket aside) */
    METRICS_MAX_NAME = 128,         /* bytes of a metric or label name */
    METRICS_MAX_VALUE = 256,        /* bytes of one label value */
    METRICS_MAX_CHILDREN = 1 << 18, /* label tuples per family (ENOSPC beyond) */
};

typedef enum metric_kind {
    METRIC_COUNTER,   /* only goes up (add v >= 0) */
    METRIC_GAUGE,     /* set, add (any sign) */
    METRIC_HISTOGRAM, /* observe: cumulative buckets, _sum, _count */
} metric_kind_t;

typedef struct metrics metrics_t;           /* the registry */
typedef struct metric metric_t;             /* one family, owned by its registry */
typedef struct metric_child metric_child_t; /* one label tuple, owned by its family */

/* ---- registry ------------------------------------------------------------- */

/* An empty registry; NULL (ENOMEM) on failure. */
metrics_t *metrics_new(void);

/* Frees the registry, its families and children (every handle dies with it).
 * Accepts NULL and *self_p == NULL; sets *self_p = NULL. No other thread may
 * use the registry by then. */
void metrics_destroy(metrics_t **self_p);

/* ---- families ------------------------------------------------------------- */

/* Registers a family. labels: NULL-terminated label names (NULL or {NULL}:
 * none); copied. help copied. Returns the family (owned by self) or NULL:
 * EINVAL (a bad name, label name, help text or bounds; err names it), EEXIST
 * (the name is taken), E2BIG (more than METRICS_MAX_LABELS labels or
 * METRICS_MAX_BOUNDS bounds), ENOMEM. */
metric_t *metrics_counter(metrics_t *self, const char *name, const char *help,
                          const char *const *labels, err_t *err);
metric_t *metrics_gauge(metrics_t *self, const char *name, const char *help,
                        const char *const *labels, err_t *err);
/* bounds: n_bounds finite, strictly increasing upper bounds (copied); the
 * +Inf bucket is added. n_bounds may be 0 (only +Inf). */
metric_t *metrics_histogram(metrics_t *self, const char *name, const char *help,
                            const char *const *labels, const double *bounds, int n_bounds,
                            err_t *err);

/* The family of that name or NULL (ENOENT). Borrowed. */
metric_t *metrics_find(metrics_t *self, const char *name);

/* Family accessors (borrowed strings, valid as long as the registry). */
const char *metric_name(const metric_t *family);
metric_kind_t metric_kind(const metric_t *family);
int metric_n_labels(const metric_t *family);

/* Fills out[0..n-1] (n >= 1) with start * factor^i and returns n: bounds for
 * metrics_histogram. start > 0, factor > 1 (assert: our own constants). */
int metrics_buckets_exponential(double start, double factor, int n, double *out);

/* ---- children ------------------------------------------------------------- */

/* The child of family for these label values (values[0..n_labels-1], in the
 * order of the family's label names; NULL when it has no labels), made on
 * first use. Borrowed: valid until metrics_destroy. NULL on failure: EINVAL
 * (a value NULL, not UTF-8 or longer than METRICS_MAX_VALUE), ENOSPC
 * (METRICS_MAX_CHILDREN reached), ENOMEM. Finding an existing child does not
 * allocate. */
metric_child_t *metric_child(metric_t *family, const char *const *values);

/* Updates; none allocates or fails. add: counters and gauges (a counter
 * ignores v < 0 and NaN: it never goes down). set: gauges. observe:
 * histograms (NaN ignored). Calling one on the wrong kind is a bug (assert). */
void metric_child_add(metric_child_t *child, double v);
void metric_child_set(metric_child_t *child, double v);
void metric_child_observe(metric_child_t *child, double v);

/* Reads (tests, STATUS): a counter's or gauge's value; a histogram's count
 * and sum; a histogram's cumulative count of observations <= bounds[i]
 * (i == n_bounds: all of them, the +Inf bucket). */
double metric_child_value(const metric_child_t *child);
uint64_t metric_child_count(const metric_child_t *child);
double metric_child_sum(const metric_child_t *child);
uint64_t metric_child_bucket(const metric_child_t *child, int i);

/* Convenience: metric_child(family, values) then the update. 0, or -1 with
 * errno as metric_child. */
int metrics_add(metric_t *family, const char *const *values, double v);
int metrics_set(metric_t *family, const char *const *values, double v);
int metrics_observe(metric_t *family, const char *const *values, double v);

/* ---- rendering ------------------------------------------------------------ */

/* The Prometheus text format 0.0.4 (Content-Type
 * METRICS_TEXT_CONTENT_TYPE) of every family: into *out (NUL-terminated,
 * caller frees with mem_free) and its length (without the NUL) into *len.
 * 0, or -1 (ENOMEM) with *out untouched. */
#define METRICS_TEXT_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
int metrics_render_text(const metrics_t *self, char **out, size_t *len);

/* The same values as JSON (caller json_decref's); NULL (ENOMEM) on failure:
 *   { "<name>": { "type": "counter"|"gauge"|"histogram", "help": "...",
 *                 "labels": ["outcome", ...],
 *                 "bounds": [0.1, 1],                       // histograms
 *                 "samples": [
 *                   {"labels": {"outcome": "stop"}, "value": 3},
 *                   {"labels": {}, "count": 6, "sum": 4.25,  // histograms
 *                    "buckets": [2, 5, 6]}                    // cumulative, +Inf last
 *                 ] }, ... }
 * A value that is not finite (a gauge set to NaN or an infinity) is null. */
json_t *metrics_to_json(const metrics_t *self);

#endif /* MOE_CORE_METRICS_H */
