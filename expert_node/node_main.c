/* moe-expert: one expert node of a cluster.
 *
 *   moe-expert --model DIR --node-id I --nodes N [--placement FILE |
 *              --placement-groups] [--replicas R] [--bind ENDPOINT]
 *              [--endpoint-file FILE] [--threads T] [--max-rows R]
 *              [--curve-key FILE --curve-coordinators DIR]
 *   moe-expert --model DIR --nodes N [--placement FILE | --placement-groups]
 *              [--replicas R] --print-placement
 *
 * Loads the experts the placement gives node I, binds a ROUTER socket and
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
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/arg.h"
#include "core/blas.h"
#include "core/err.h"
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
} options_t;

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: moe-expert --model DIR --node-id I --nodes N [--placement FILE |\n"
            "                  --placement-groups] [--replicas R] [--bind ENDPOINT]\n"
            "                  [--endpoint-file FILE] [--threads T] [--max-rows R]\n"
            "                  [--curve-key FILE --curve-coordinators DIR]\n"
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
            "  --help                this text\n"
            "\n"
            "Exit status: 0 clean shutdown, 1 runtime error, 2 usage error.\n",
            s_default_bind, EXPERT_SERVER_MAX_ROWS);
}

static int s_parse_int(const char *text, const char *what, int min, int *out)
{
    err_t err = {0};
    if (arg_int(text, what, min, out, &err) < 0) {
        fprintf(stderr, "moe-expert: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int s_parse_args(int argc, char **argv, options_t *opt)
{
    static const struct option longopts[] = {
        {"model", required_argument, NULL, 'm'},
        {"node-id", required_argument, NULL, 'i'},
        {"nodes", required_argument, NULL, 'n'},
        {"placement", required_argument, NULL, 'p'},
        {"replicas", required_argument, NULL, 'r'},
        {"placement-groups", no_argument, NULL, 'g'},
        {"print-placement", no_argument, NULL, 'P'},
        {"bind", required_argument, NULL, 'b'},
        {"endpoint-file", required_argument, NULL, 'e'},
        {"threads", required_argument, NULL, 't'},
        {"max-rows", required_argument, NULL, 'x'},
        {"curve-key", required_argument, NULL, 'k'},
        {"curve-coordinators", required_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *opt = (options_t){.bind = s_default_bind, .max_rows = EXPERT_SERVER_MAX_ROWS};
    int c, rc = 0;
    opterr = 0;
    while (rc == 0 && (c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': opt->model = optarg; break;
        case 'p': opt->placement = optarg; break;
        case 'g': opt->groups = true; break;
        case 'P': opt->print_placement = true; break;
        case 'b': opt->bind = optarg; break;
        case 'e': opt->endpoint_file = optarg; break;
        case 'k': opt->curve_key = optarg; break;
        case 'C': opt->curve_coordinators = optarg; break;
        case 'i': rc = s_parse_int(optarg, "--node-id", 1, &opt->node_id); break;
        case 'n': rc = s_parse_int(optarg, "--nodes", 1, &opt->n_nodes); break;
        case 'r': rc = s_parse_int(optarg, "--replicas", 1, &opt->replicas); break;
        case 't': rc = s_parse_int(optarg, "--threads", 1, &opt->threads); break;
        case 'x': rc = s_parse_int(optarg, "--max-rows", 1, &opt->max_rows); break;
        case 'h': s_usage(stdout); exit(0);
        default:
            fprintf(stderr, "moe-expert: unknown or incomplete option '%s' (see --help)\n",
                    argv[optind - 1]);
            return -1;
        }
    }
    if (rc < 0)
        return -1;
    if (optind < argc) {
        fprintf(stderr, "moe-expert: unexpected argument '%s' (see --help)\n", argv[optind]);
        return -1;
    }
    if (!opt->model || !opt->n_nodes || (!opt->node_id && !opt->print_placement)) {
        fprintf(stderr, "moe-expert: --model, --node-id and --nodes are required "
                "(see --help)\n");
        return -1;
    }
    if (opt->n_nodes > PLACEMENT_MAX_NODES) {
        fprintf(stderr, "moe-expert: --nodes %d is more than the limit of %d\n",
                opt->n_nodes, PLACEMENT_MAX_NODES);
        return -1;
    }
    if (opt->node_id > opt->n_nodes) {
        fprintf(stderr, "moe-expert: --node-id %d is out of range: nodes are 1..%d\n",
                opt->node_id, opt->n_nodes);
        return -1;
    }
    if (opt->placement && opt->groups) {
        fprintf(stderr, "moe-expert: give --placement or --placement-groups, not both\n");
        return -1;
    }
    if (opt->placement && opt->replicas) {
        fprintf(stderr, "moe-expert: --replicas applies to the default split only; a "
                "placement file lists replicas itself\n");
        return -1;
    }
    if (opt->replicas > opt->n_nodes) {
        fprintf(stderr, "moe-expert: --replicas %d is more than the %d nodes\n",
                opt->replicas, opt->n_nodes);
        return -1;
    }
    return 0;
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

/* Writes "endpoint\n" to path through a temporary file and a rename, so that
 * a reader sees either no file or the whole line. */
static int s_write_endpoint(const char *path, const char *endpoint, err_t *err)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return err_set(err, ENAMETOOLONG, "endpoint file name %s is too long", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return err_set(err, errno, "cannot write endpoint file %s: %s", tmp,
                       strerror(errno));
    int wrote = fprintf(f, "%s\n", endpoint);
    int flushed = fflush(f) == 0 && fsync(fileno(f)) == 0;
    int saved = errno;
    if (fclose(f) != 0 || wrote < 0 || !flushed) {
        unlink(tmp);
        return err_set(err, saved ? saved : EIO, "cannot write endpoint file %s: %s", tmp,
                       strerror(saved ? saved : EIO));
    }
    if (rename(tmp, path) < 0) {
        saved = errno;
        unlink(tmp);
        return err_set(err, saved, "cannot rename %s to %s: %s", tmp, path,
                       strerror(saved));
    }
    return 0;
}

/* The placement the options give for the model of cfg; NULL with err. */
static placement_t *s_placement(const options_t *opt, const config_t *cfg, err_t *err)
{
    int replicas = opt->replicas ? opt->replicas : 1;
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
                               .curve_coordinators = opt->curve_coordinators};
    server = expert_server_new(&so, err);
    if (!server)
        goto done;
    const char *endpoint = expert_server_endpoint(server);
    fprintf(stderr, "moe-expert: node %d of %d hosts %d experts of %s, serving on %s\n",
            opt->node_id, opt->n_nodes, expert_server_n_hosted(server), opt->model,
            endpoint);
    if (opt->endpoint_file && s_write_endpoint(opt->endpoint_file, endpoint, err) < 0)
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
    blas_set_threads(opt.threads);
    blas_report(stderr, "moe-expert");

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
