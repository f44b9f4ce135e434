/* moe-coordinator: runs embeddings, attention, norms, routing and the LM head,
 * sends each layer's routed rows to the expert nodes and serves clients.
 *
 *   moe-coordinator --model DIR --node ENDPOINT [--node ENDPOINT ...]
 *       [--placement FILE | --placement-groups] [--replicas R]
 *       [--bind ENDPOINT] [--endpoint-file F]
 *       [--threads N] [--reply-timeout-ms MS] [--hello-timeout-ms MS]
 *       [--heartbeat-ms MS] [--heartbeat-misses N]
 *       [--max-context N] [--prefill-rows N] [--wire f32|bf16|fp8]
 *       [--curve-key FILE --curve-nodes DIR --curve-clients DIR]
 *       [--max-tokens-limit N] [--max-requests-per-client N]
 *       [--preload | --no-preload]
 *
 * Node i (1-based) is the i-th --node. Ready when it prints the client
 * endpoint as the last line of stdout (and writes it to --endpoint-file);
 * with --preload, only after its weights are in memory.
 * SIGINT/SIGTERM stop it cleanly. Exit 0, 1 on a runtime error, 2 on a usage
 * error; every error is one line on stderr.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>

#include "coordinator/coord_options.h"
#include "coordinator/coordinator.h"
#include "core/arg.h"
#include "core/blas.h"
#include "core/endpoint.h"
#include "core/err.h"
#include "core/path.h"

enum { MAX_NODES = COORDINATOR_MAX_NODES };

static volatile sig_atomic_t s_stop; /* set by SIGINT/SIGTERM */

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

typedef struct options {
    coord_options_t c;          /* the options moe-mpi shares */
    const char *nodes[MAX_NODES];
    int n_nodes;
} options_t;

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: moe-coordinator --model DIR --node ENDPOINT [--node ENDPOINT ...]\n"
            "           [--placement FILE | --placement-groups] [--replicas R]\n"
            "           [--bind ENDPOINT]\n"
            "           [--endpoint-file FILE] [--threads N] [--reply-timeout-ms MS]\n"
            "           [--hello-timeout-ms MS] [--heartbeat-ms MS] [--heartbeat-misses N]\n"
            "           [--max-context N] [--prefill-rows N] [--wire f32|bf16|fp8]\n"
            "           [--max-seqs N] [--queue-limit N] [--kv-memory MB] [--deadline-ms MS]\n"
            "           [--curve-key FILE --curve-nodes DIR --curve-clients DIR]\n"
            "           [--max-tokens-limit N] [--max-requests-per-client N]\n"
            "           [--http HOST:PORT [--api-key KEY] [--http-url-file FILE]]\n"
            "\n"
            "Serves a Mixture-of-Experts model whose routed experts run on expert nodes\n"
            "(moe-expert). Node i is the i-th --node; the placement (default: experts\n"
            "split evenly, expert e on node 1 + e %% N) must match the nodes'.\n"
            "\n"
            "  --bind ENDPOINT        client endpoint (default tcp://127.0.0.1:*, a free port)\n");
    coord_options_help(out);
}

/* The checks across options (an arg_check_fn). */
static int s_check(void *ctx, err_t *err)
{
    options_t *o = ctx;
    if (!o->c.co.model || o->n_nodes == 0)
        return err_set(err, EINVAL, "--model and at least one --node are required");
    o->c.co.nodes = o->nodes;
    o->c.co.n_nodes = o->n_nodes;
    return coord_options_finish(&o->c, err);
}

/* 0 with *o filled, or -1 after a usage error (printed); exits after --help. */
static int s_parse(int argc, char **argv, options_t *o)
{
    coord_options_init(&o->c);
    o->c.co.bind = "tcp://127.0.0.1:*";
    o->n_nodes = 0;
    arg_opt_t shared[COORD_OPTIONS_N + 1];
    coord_options_table(&o->c, shared);
    const arg_opt_t table[] = {
        ARG_OPT_STRING("--model", &o->c.co.model),
        ARG_OPT_STRINGS("--node", o->nodes, MAX_NODES, &o->n_nodes),
        ARG_OPT_STRING("--bind", &o->c.co.bind),
        ARG_OPT_TABLE(shared),
        ARG_OPT_END,
    };
    return arg_parse_main("moe-coordinator", argc, argv, table, s_usage, s_check, o);
}

int main(int argc, char **argv)
{
    blas_ensure_native(argv);
    options_t o;
    if (s_parse(argc, argv, &o) < 0)
        return 2;
    blas_set_threads(o.c.threads);
    blas_report(stderr, "moe-coordinator");
    struct sigaction sa = {.sa_handler = s_on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    err_t err = {0};
    coordinator_t *co = coordinator_start(&o.c.co, &s_stop, &err);
    int rc = co ? 0 : -1;
    if (co)
        endpoint_warn_plain(stderr, "moe-coordinator", coordinator_endpoint(co),
                            o.c.co.curve_key != NULL);
    if (co && coordinator_http_url(co)) {
        fprintf(stderr, "moe-coordinator: OpenAI-compatible HTTP API at %s/v1\n",
                coordinator_http_url(co));
        if (o.c.http_url_file &&
            path_write_line_atomic(o.c.http_url_file, coordinator_http_url(co), &err) < 0)
            rc = -1;
    }
    if (rc == 0 && co && o.c.endpoint_file &&
        path_write_line_atomic(o.c.endpoint_file, coordinator_endpoint(co), &err) < 0)
        rc = -1;
    if (rc == 0) {
        printf("%s\n", coordinator_endpoint(co));
        fflush(stdout);
        rc = coordinator_run(co, &s_stop, &err);
    }
    if (rc < 0)
        fprintf(stderr, "moe-coordinator: %s\n", err.msg);
    coordinator_destroy(&co);
    return rc < 0 ? 1 : 0;
}
