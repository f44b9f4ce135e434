/* moe-coordinator: runs embeddings, attention, norms, routing and the LM head,
 * sends each layer's routed rows to the expert nodes and serves clients.
 *
 *   moe-coordinator --model DIR --node ENDPOINT [--node ENDPOINT ...]
 *       [--placement FILE] [--replicas R] [--bind ENDPOINT] [--endpoint-file F]
 *       [--threads N] [--reply-timeout-ms MS] [--hello-timeout-ms MS]
 *       [--max-context N] [--prefill-rows N]
 *
 * Node i (1-based) is the i-th --node. Ready when it prints the client
 * endpoint as the last line of stdout (and writes it to --endpoint-file).
 * SIGINT/SIGTERM stop it cleanly. Exit 0, 1 on a runtime error, 2 on a usage
 * error; every error is one line on stderr.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "coordinator/dispatch.h"
#include "coordinator/peer.h"
#include "coordinator/rpc.h"
#include "core/blas.h"
#include "core/err.h"
#include "core/mem.h"
#include "engine/weights.h"
#include "model/placement.h"
#include "proto/wire.h"

enum { MAX_NODES = 256 };

static volatile sig_atomic_t s_stop; /* set by SIGINT/SIGTERM */

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

typedef struct options {
    const char *model;
    const char *nodes[MAX_NODES];
    int n_nodes;
    const char *placement;
    int replicas;
    const char *bind;
    const char *endpoint_file;
    int threads;
    int reply_timeout_ms;
    int hello_timeout_ms;
    int max_context;
    int prefill_rows;
} options_t;

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: moe-coordinator --model DIR --node ENDPOINT [--node ENDPOINT ...]\n"
            "           [--placement FILE] [--replicas R] [--bind ENDPOINT]\n"
            "           [--endpoint-file FILE] [--threads N] [--reply-timeout-ms MS]\n"
            "           [--hello-timeout-ms MS] [--max-context N] [--prefill-rows N]\n"
            "\n"
            "Serves a Mixture-of-Experts model whose routed experts run on expert nodes\n"
            "(moe-expert). Node i is the i-th --node; the placement (default: experts\n"
            "split evenly, expert e on node 1 + e %% N) must match the nodes'.\n"
            "\n"
            "  --bind ENDPOINT        client endpoint (default tcp://127.0.0.1:*, a free port)\n"
            "  --endpoint-file FILE   also write the bound client endpoint there when ready\n"
            "  --reply-timeout-ms MS  a node that does not answer a batch in time is\n"
            "                         marked down and the request fails (default 30000)\n"
            "  --hello-timeout-ms MS  how long to wait for each node at start (default 120000)\n"
            "  --max-context N        positions per sequence (default: the model's, at most 4096)\n"
            "  --prefill-rows N       prompt rows per forward chunk (default 256)\n"
            "  --threads N            OpenBLAS threads (default: all cores)\n");
}

static int s_int_arg(const char *text, const char *name, int min, int *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < min || v > INT_MAX) {
        fprintf(stderr, "moe-coordinator: %s must be an integer >= %d (got '%s')\n", name,
                min, text);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int s_parse(int argc, char **argv, options_t *o)
{
    static const struct option longopts[] = {
        {"model", required_argument, NULL, 'm'},
        {"node", required_argument, NULL, 'n'},
        {"placement", required_argument, NULL, 'p'},
        {"replicas", required_argument, NULL, 'r'},
        {"bind", required_argument, NULL, 'b'},
        {"endpoint-file", required_argument, NULL, 'e'},
        {"threads", required_argument, NULL, 't'},
        {"reply-timeout-ms", required_argument, NULL, 'R'},
        {"hello-timeout-ms", required_argument, NULL, 'H'},
        {"max-context", required_argument, NULL, 'c'},
        {"prefill-rows", required_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *o = (options_t){.replicas = 1, .bind = "tcp://127.0.0.1:*", .reply_timeout_ms = 30000,
                     .hello_timeout_ms = 120000, .prefill_rows = 256};
    int c, rc = 0;
    opterr = 0;
    while (rc == 0 && (c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'n':
            if (o->n_nodes == MAX_NODES) {
                fprintf(stderr, "moe-coordinator: at most %d nodes\n", MAX_NODES);
                return -1;
            }
            o->nodes[o->n_nodes++] = optarg;
            break;
        case 'p': o->placement = optarg; break;
        case 'r': rc = s_int_arg(optarg, "--replicas", 1, &o->replicas); break;
        case 'b': o->bind = optarg; break;
        case 'e': o->endpoint_file = optarg; break;
        case 't': rc = s_int_arg(optarg, "--threads", 1, &o->threads); break;
        case 'R': rc = s_int_arg(optarg, "--reply-timeout-ms", 1, &o->reply_timeout_ms); break;
        case 'H': rc = s_int_arg(optarg, "--hello-timeout-ms", 1, &o->hello_timeout_ms); break;
        case 'c': rc = s_int_arg(optarg, "--max-context", 1, &o->max_context); break;
        case 'f': rc = s_int_arg(optarg, "--prefill-rows", 1, &o->prefill_rows); break;
        case 'h': s_usage(stdout); exit(0);
        default:
            fprintf(stderr, "moe-coordinator: unknown or incomplete option '%s' (see --help)\n",
                    argv[optind - 1]);
            return -1;
        }
    }
    if (rc < 0)
        return -1;
    if (optind < argc) {
        fprintf(stderr, "moe-coordinator: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (!o->model || o->n_nodes == 0) {
        fprintf(stderr, "moe-coordinator: --model and at least one --node are required "
                        "(see --help)\n");
        return -1;
    }
    return 0;
}

/* Writes text + newline to path atomically (temporary file, then rename). */
static int s_write_atomic(const char *path, const char *text, err_t *err)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%s\n", text) < 0 || fclose(f) != 0 || rename(tmp, path) != 0) {
        int e = errno;
        return err_set(err, e, "cannot write %s: %s", path, strerror(e));
    }
    return 0;
}

/* Everything the coordinator owns, in the order it is built. */
typedef struct coordinator {
    void *zmq_ctx;
    weights_t *w;
    placement_t *placement;
    peer_t *peers[MAX_NODES];
    rpc_node_info_t nodes[MAX_NODES];
    int32_t *hosted;               /* (2, total hosted pairs): layers then experts */
    dispatch_route_t *routes;
    dispatch_t *dispatch;
    rpc_t *rpc;
    int n_nodes;
} coordinator_t;

static void s_teardown(coordinator_t *co)
{
    rpc_destroy(&co->rpc);
    dispatch_destroy(&co->dispatch);
    for (int i = 0; i < co->n_nodes; i++)
        peer_destroy(&co->peers[i]);
    mem_free(co->routes);
    mem_free(co->hosted);
    placement_destroy(&co->placement);
    weights_destroy(&co->w);
    if (co->zmq_ctx)
        zmq_ctx_term(co->zmq_ctx);
}

/* Routes and per-node hosted lists from the placement. */
static int s_plan(coordinator_t *co, err_t *err)
{
    const config_t *cfg = &co->w->cfg;
    const size_t n_routes = (size_t)cfg->n_layers * cfg->n_experts;
    size_t total = 0;
    for (int i = 0; i < co->n_nodes; i++)
        total += (size_t)placement_node_count(co->placement, i + 1);
    co->routes = mem_calloc(n_routes, sizeof *co->routes);
    co->hosted = mem_alloc(2 * (total ? total : 1) * sizeof(int32_t));
    if (!co->routes || !co->hosted)
        return err_set(err, ENOMEM, "out of memory for the placement");
    for (int l = 0; l < cfg->n_layers; l++)
        for (int e = 0; e < cfg->n_experts; e++) {
            const int *ids = NULL;
            int n = placement_nodes_of(co->placement, l, e, &ids);
            dispatch_route_t *r = &co->routes[(size_t)l * cfg->n_experts + e];
            for (int j = 0; j < n && r->n < DISPATCH_MAX_REPLICAS; j++)
                r->peer[r->n++] = ids[j] - 1;
        }
    size_t used = 0;
    for (int i = 0; i < co->n_nodes; i++) {
        rpc_node_info_t *ni = &co->nodes[i];
        ni->hosted_layer = co->hosted + used;
        ni->hosted_expert = co->hosted + total + used;
        ni->n_hosted = placement_node_experts(co->placement, i + 1,
                                              co->hosted + used, co->hosted + total + used);
        used += (size_t)ni->n_hosted;
    }
    return 0;
}

static int s_start(coordinator_t *co, const options_t *o, err_t *err)
{
    weights_select_t dense = {.dense = true};
    co->w = weights_load(o->model, &dense, err);
    if (!co->w)
        return -1;
    const config_t *cfg = &co->w->cfg;
    co->n_nodes = o->n_nodes;
    co->placement = o->placement
        ? placement_load(o->placement, cfg->n_layers, cfg->n_experts, o->n_nodes, err)
        : placement_default(cfg->n_layers, cfg->n_experts, o->n_nodes, o->replicas, err);
    if (!co->placement || s_plan(co, err) < 0)
        return -1;

    int max_context = o->max_context;
    if (max_context == 0)
        max_context = cfg->max_position_embeddings < 4096 ? cfg->max_position_embeddings : 4096;
    if (max_context > cfg->max_position_embeddings)
        return err_set(err, EINVAL, "--max-context %d exceeds the model's %d positions",
                       max_context, cfg->max_position_embeddings);
    co->zmq_ctx = zmq_ctx_new();
    if (!co->zmq_ctx)
        return err_set(err, errno, "cannot create a ZeroMQ context: %s", zmq_strerror(errno));
    wire_limits_t lim = {.hidden = cfg->hidden_size, .max_rows = o->prefill_rows,
                         .max_assign = o->prefill_rows * cfg->n_experts_per_tok,
                         .n_layers = cfg->n_layers, .n_experts = cfg->n_experts};
    for (int i = 0; i < co->n_nodes; i++)
        if (!(co->peers[i] = peer_new(co->zmq_ctx, i + 1, o->nodes[i], &lim, err)))
            return -1;
    co->dispatch = dispatch_new(co->peers, co->n_nodes, cfg, co->routes, o->prefill_rows,
                                o->reply_timeout_ms, err);
    if (!co->dispatch)
        return -1;

    char model_id[WIRE_MAX_TEXT];
    config_model_id(cfg, model_id, sizeof model_id);
    wire_inbox_t *inbox = wire_inbox_new(&lim, err);
    if (!inbox)
        return -1;
    for (int i = 0; i < co->n_nodes; i++) {
        const rpc_node_info_t *ni = &co->nodes[i];
        if (peer_hello(co->peers[i], inbox, model_id, ni->hosted_layer, ni->hosted_expert,
                       ni->n_hosted, o->hello_timeout_ms, err) < 0) {
            wire_inbox_destroy(&inbox);
            return -1;
        }
        if (s_stop) {
            wire_inbox_destroy(&inbox);
            return err_set(err, EINTR, "interrupted while starting");
        }
    }
    wire_inbox_destroy(&inbox);

    char name[PATH_MAX + 64];
    snprintf(name, sizeof name, "%s (%s)", o->model, config_arch_name(cfg->arch));
    rpc_config_t conf = {.bind = o->bind, .model_name = name, .max_context = max_context,
                         .prefill_rows = o->prefill_rows};
    co->rpc = rpc_new(co->zmq_ctx, co->w, co->dispatch, co->peers, co->nodes, co->n_nodes,
                      &conf, err);
    if (!co->rpc)
        return -1;
    if (o->endpoint_file && s_write_atomic(o->endpoint_file, rpc_endpoint(co->rpc), err) < 0)
        return -1;
    printf("%s\n", rpc_endpoint(co->rpc));
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    blas_ensure_native(argv);
    options_t o;
    if (s_parse(argc, argv, &o) < 0)
        return 2;
    blas_set_threads(o.threads);
    blas_report(stderr, "moe-coordinator");
    struct sigaction sa = {.sa_handler = s_on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    coordinator_t co = {0};
    err_t err = {0};
    int rc = s_start(&co, &o, &err);
    if (rc == 0)
        rc = rpc_run(co.rpc, &s_stop, &err);
    if (rc < 0)
        fprintf(stderr, "moe-coordinator: %s\n", err.msg);
    s_teardown(&co);
    return rc < 0 ? 1 : 0;
}
