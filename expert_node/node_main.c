/* moe-expert: one expert node of a cluster.
 *
 *   moe-expert --model DIR --node-id I --nodes N [--placement FILE |
 *              --placement-groups] [--replicas R] [--bind ENDPOINT]
 *              [--endpoint-file FILE] [--threads T] [--max-rows R]
 *              [--curve-key FILE --curve-coordinators DIR] [--preload]
 *              [--dtype TYPE] [--quantization Q]
 *   moe-expert --model DIR --nodes N [--placement FILE | --placement-groups]
 *              [--replicas R] --print-placement
 *
 * Loads the experts the placement gives node I (with --preload, reads them
 * into memory, progress on stderr when it takes over a second), binds a ROUTER socket and
 * serves the data plane (expert_node/expert_server.h) until SHUTDOWN, SIGTERM
 * or SIGINT. Once bound, the endpoint (with the port the system chose) is
 * printed on stdout as the last line and, with --endpoint-file, written to
 * that file atomically (temporary file + rename), ending in a newline; a
 * stale file of that name is removed at start, so a launcher that waits for
 * the file never reads an old endpoint.
 * With --print-placement it only writes the placement those options give, in
 * the file format of docs/PLACEMENT.md, on stdout, and exits: a way to see
 * (and edit into a --placement file) what the default or grouped split is.
 * Exit status: 0 after a clean shutdown, 1 on a runtime error (model or
 * placement file missing or invalid, bind failure), 2 on a usage error; every
 * error is one line on stderr.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/arg.h"
#include "core/blas.h"
#include "core/endpoint.h"
#include "core/err.h"
#include "core/path.h"
#include "expert_node/expert_server.h"
#include "model/config.h"
#include "model/placement.h"

static const char *const s_default_bind = "tcp://127.0.0.1:*";

/* Set by SIGTERM / SIGINT; the server loop sees it within one poll. */
static volatile sig_atomic_t s_interrupted = 0;

typedef struct options {
    const char *model;
    const char *placement;      /* NULL: the default or grouped split */
    bool groups;                /* --placement-groups: the grouped split */
    bool print_placement;       /* print the placement and exit */
    const char *bind;
    const char *endpoint_file;  /* NULL: stdout only */
    int node_id;
    int n_nodes;
    int replicas;               /* 0: not given (1 for the default split) */
    int threads;                /* 0: OpenBLAS's default */
    int max_rows;
    const char *curve_key;      /* NULL: plain TCP */
    const char *curve_coordinators;
    bool preload;               /* read the hosted weights before announcing */
    wformat_t format;           /* --dtype, --quantization */
    float memory_budget_mb;     /* 0: no limit */
    int place_delay_ms;         /* tests: a PLACE waits this long before loading */
    bool empty;                 /* host nothing at start (to join: moe-client node add) */
} options_t;

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: moe-expert --model DIR --node-id I --nodes N [--placement FILE |\n"
            "                  --placement-groups] [--replicas R] [--bind ENDPOINT]\n"
            "                  [--endpoint-file FILE] [--threads T] [--max-rows R]\n"
            "                  [--curve-key FILE --curve-coordinators DIR] [--preload]\n"
            "                  [--dtype TYPE] [--quantization Q]\n"
            "       moe-expert --model DIR --nodes N [--placement FILE | --placement-groups]\n"
            "                  [--replicas R] --print-placement\n"
            "\n"
            "Serves the routed experts that the placement gives node I of an N-node\n"
            "cluster to the coordinator, over ZeroMQ. Prints the bound endpoint on\n"
            "stdout once ready; stops cleanly on SHUTDOWN, SIGTERM or SIGINT.\n"
            "\n"
            "  --model DIR           Hugging Face model folder (config.json, *.safetensors)\n"
            "  --node-id I           this node, 1..N\n"
            "  --nodes N             expert nodes in the cluster\n"
            "  --placement FILE      which node hosts which expert (docs/PLACEMENT.md);\n"
            "                        default: expert e of every layer on node 1 + e %% N\n"
            "  --placement-groups    the grouped split for group-limited routers (DeepSeek):\n"
            "                        each expert group whole on one node, so a token reaches\n"
            "                        at most topk_group nodes per layer (needs n_group >= N)\n"
            "  --replicas R          copies of each expert (group) in the default (grouped)\n"
            "                        split (default 1; not with --placement)\n"
            "  --print-placement     print the placement these options give and exit\n"
            "                        (--node-id not needed)\n"
            "  --bind ENDPOINT       ZeroMQ endpoint to bind (default %s,\n"
            "                        a port the system chooses)\n"
            "  --endpoint-file FILE  also write the bound endpoint to FILE, atomically\n"
            "  --threads T           OpenBLAS threads (default: all cores)\n"
            "  --max-rows R          largest batch of rows per request (default %d)\n"
            "  --curve-key FILE      encrypt and authenticate with ZeroMQ CURVE: this\n"
            "                        node's key pair (moe-keygen; docs/DEPLOY.md)\n"
            "  --curve-coordinators DIR  the *.pub files of the coordinators allowed\n"
            "                        to connect\n"
            "  --preload             read the hosted weights into memory before the\n"
            "                        endpoint is announced, so the first request does not\n"
            "                        wait for the disk: the matrices copied into memory of\n"
            "                        their own (huge pages: the fastest decode; progress\n"
            "                        on stderr)\n"
            "  --memory-budget MB    most MiB of experts this node may hold (a decimal\n"
            "                        number): a rebalance\n"
            "                        that would give it more is refused (default: none)\n"
            "  --empty               host no expert at start: a node to add to a running\n"
            "                        cluster (moe-client node add; give --node-id N+1\n"
            "                        --nodes N+1 for a cluster of N nodes)\n"
            "  --place-delay-ms MS   wait MS before loading experts a rebalance moves\n"
            "                        here (to test moves under load; default 0)\n",
            s_default_bind, EXPERT_SERVER_MAX_ROWS);
    wformat_help(out, 24);
    fprintf(out,
            "  --help                this text\n"
            "\n"
            "The start-up line on stderr says what the hosted weights are held as.\n"
            "Exit status: 0 clean shutdown, 1 runtime error, 2 usage error.\n");
}

/* The checks across options (an arg_check_fn). */
static int s_check(void *ctx, err_t *err)
{
    const options_t *opt = ctx;
    if (!opt->model || !opt->n_nodes || (!opt->node_id && !opt->print_placement))
        return err_set(err, EINVAL, "--model, --node-id and --nodes are required");
    if (opt->n_nodes > PLACEMENT_MAX_NODES)
        return err_set(err, EINVAL, "--nodes %d is more than the limit of %d", opt->n_nodes,
                       PLACEMENT_MAX_NODES);
    if (opt->node_id > opt->n_nodes)
        return err_set(err, EINVAL, "--node-id %d is out of range: nodes are 1..%d",
                       opt->node_id, opt->n_nodes);
    if (opt->placement && opt->groups)
        return err_set(err, EINVAL, "give --placement or --placement-groups, not both");
    if (opt->placement && opt->replicas)
        return err_set(err, EINVAL, "--replicas applies to the default split only; a "
                       "placement file lists replicas itself");
    if (opt->replicas > opt->n_nodes)
        return err_set(err, EINVAL, "--replicas %d is more than the %d nodes", opt->replicas,
                       opt->n_nodes);
    return 0;
}

/* 0 with *opt filled, or -1 after a usage error (printed); exits after --help. */
static int s_parse_args(int argc, char **argv, options_t *opt)
{
    *opt = (options_t){.bind = s_default_bind, .max_rows = EXPERT_SERVER_MAX_ROWS};
    const arg_opt_t table[] = {
        ARG_OPT_STRING("--model", &opt->model),
        ARG_OPT_INT("--node-id", &opt->node_id, 1, 0),
        ARG_OPT_INT("--nodes", &opt->n_nodes, 1, 0),
        ARG_OPT_STRING("--placement", &opt->placement),
        ARG_OPT_INT("--replicas", &opt->replicas, 1, 0),
        ARG_OPT_FLAG("--placement-groups", &opt->groups),
        ARG_OPT_FLAG("--print-placement", &opt->print_placement),
        ARG_OPT_STRING("--bind", &opt->bind),
        ARG_OPT_STRING("--endpoint-file", &opt->endpoint_file),
        ARG_OPT_INT("--threads", &opt->threads, 1, 0),
        ARG_OPT_INT("--max-rows", &opt->max_rows, 1, 0),
        ARG_OPT_STRING("--curve-key", &opt->curve_key),
        ARG_OPT_STRING("--curve-coordinators", &opt->curve_coordinators),
        ARG_OPT_FLAG("--preload", &opt->preload),
        ARG_OPT_FLOAT("--memory-budget", &opt->memory_budget_mb, 0.001f, 1e9f),
        ARG_OPT_INT("--place-delay-ms", &opt->place_delay_ms, 0, 600000),
        ARG_OPT_FLAG("--empty", &opt->empty),
        ARG_OPT_PARSE("--dtype", &opt->format.dtype, wformat_parse_dtype),
        ARG_OPT_PARSE("--quantization", &opt->format.quant, wformat_parse_quant),
        ARG_OPT_END,
    };
    return arg_parse_main("moe-expert", argc, argv, table, s_usage, s_check, opt);
}

static void s_on_signal(int sig)
{
    (void)sig;
    s_interrupted = 1;
}

/* No SA_RESTART: a signal interrupts zmq_poll (EINTR), so it is seen at once. */
static int s_catch_signals(err_t *err)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0)
        return err_set(err, errno, "cannot install signal handlers: %s", strerror(errno));
    return 0;
}

/* The placement the options give for the model of cfg; NULL with err. */
static placement_t *s_placement(const options_t *opt, const config_t *cfg, err_t *err)
{
    int replicas = opt->replicas ? opt->replicas : 1;
    if (opt->empty) /* a node that joins later: experts come with moves */
        return placement_new_empty(cfg->n_layers, cfg->n_experts, opt->n_nodes, err);
    if (opt->placement)
        return placement_load(opt->placement, cfg->n_layers, cfg->n_experts, opt->n_nodes,
                              err);
    if (opt->groups) {
        placement_t *p = placement_grouped(cfg->n_layers, cfg->n_experts, cfg->n_group,
                                           opt->n_nodes, replicas, err);
        if (!p)
            err_wrap(err, "--placement-groups with %s", opt->model);
        return p;
    }
    return placement_default(cfg->n_layers, cfg->n_experts, opt->n_nodes, replicas, err);
}

/* --print-placement: the placement on stdout. */
static int s_print_placement(const options_t *opt, err_t *err)
{
    config_t cfg;
    if (config_load(&cfg, opt->model, err) < 0)
        return -1;
    placement_t *placement = s_placement(opt, &cfg, err);
    if (!placement)
        return -1;
    int rc = placement_write(placement, stdout, err);
    placement_destroy(&placement);
    return rc;
}

/* Loads, binds, announces the endpoint and serves. */
static int s_serve(const options_t *opt, err_t *err)
{
    int rc = -1;
    placement_t *placement = NULL;
    expert_server_t *server = NULL;
    config_t cfg;
    if (config_load(&cfg, opt->model, err) < 0)
        goto done;
    placement = s_placement(opt, &cfg, err);
    if (!placement)
        goto done;
    expert_server_opts_t so = {.model_dir = opt->model, .placement = placement,
                               .node_id = opt->node_id, .bind = opt->bind,
                               .max_rows = opt->max_rows, .log = stderr,
                               .curve_key = opt->curve_key,
                               .curve_coordinators = opt->curve_coordinators,
                               .preload = opt->preload, .format = opt->format,
                               .memory_budget = (uint64_t)((double)opt->memory_budget_mb *
                                                           (1 << 20)),
                               .place_delay_ms = opt->place_delay_ms};
    server = expert_server_new(&so, err);
    if (!server)
        goto done;
    const char *endpoint = expert_server_endpoint(server);
    fprintf(stderr, "moe-expert: node %d of %d hosts %d experts of %s (weights: %s), "
            "serving on %s\n", opt->node_id, opt->n_nodes, expert_server_n_hosted(server),
            opt->model, expert_server_weights_text(server), endpoint);
    endpoint_warn_plain(stderr, "moe-expert", endpoint, opt->curve_key != NULL);
    if (opt->endpoint_file && path_write_line_atomic(opt->endpoint_file, endpoint, err) < 0)
        goto done;
    printf("%s\n", endpoint);
    fflush(stdout);
    rc = expert_server_run(server, &s_interrupted, err);

done:
    expert_server_destroy(&server);
    placement_destroy(&placement);
    return rc;
}

int main(int argc, char **argv)
{
    blas_ensure_native(argv);
    options_t opt;
    if (s_parse_args(argc, argv, &opt) < 0)
        return 2;
    err_t err = {0};
    if (opt.print_placement) {
        if (s_print_placement(&opt, &err) < 0) {
            fprintf(stderr, "moe-expert: %s\n", err.msg);
            return 1;
        }
        return 0;
    }
    blas_setup("moe-expert", opt.threads);

    if (opt.endpoint_file && unlink(opt.endpoint_file) < 0 && errno != ENOENT) {
        fprintf(stderr, "moe-expert: cannot remove the stale endpoint file %s: %s\n",
                opt.endpoint_file, strerror(errno));
        return 1;
    }
    if (s_catch_signals(&err) < 0 || s_serve(&opt, &err) < 0) {
        fprintf(stderr, "moe-expert: %s\n", err.msg);
        return 1;
    }
    return 0;
}
