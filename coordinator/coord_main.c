/* moe-coordinator: runs embeddings, attention, norms, routing and the LM head,
 * sends each layer's routed rows to the expert nodes and serves clients.
 *
 *   moe-coordinator --model DIR --node ENDPOINT [--node ENDPOINT ...]
 *       [--placement FILE | --placement-groups] [--replicas R]
 *       [--bind ENDPOINT] [--endpoint-file F]
 *       [--threads N] [--reply-timeout-ms MS] [--hello-timeout-ms MS]
 *       [--heartbeat-ms MS] [--heartbeat-misses N]
 *       [--max-context N] [--prefill-rows N]
 *       [--curve-key FILE --curve-nodes DIR --curve-clients DIR]
 *       [--max-tokens-limit N] [--max-requests-per-client N]
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

#include "coordinator/coordinator.h"
#include "core/arg.h"
#include "core/blas.h"
#include "core/err.h"

enum { MAX_NODES = COORDINATOR_MAX_NODES };

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
    bool placement_groups;
    int replicas;
    const char *bind;
    const char *endpoint_file;
    int threads;
    int reply_timeout_ms;
    int hello_timeout_ms;
    int heartbeat_ms;
    int heartbeat_misses;
    int max_context;
    int prefill_rows;
    int max_seqs;
    int queue_limit;
    int kv_memory_mb;
    int deadline_ms;
    const char *curve_key;
    const char *curve_nodes;
    const char *curve_clients;
    int max_tokens_limit;
    int max_requests_per_client;
} options_t;

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: moe-coordinator --model DIR --node ENDPOINT [--node ENDPOINT ...]\n"
            "           [--placement FILE | --placement-groups] [--replicas R]\n"
            "           [--bind ENDPOINT]\n"
            "           [--endpoint-file FILE] [--threads N] [--reply-timeout-ms MS]\n"
            "           [--hello-timeout-ms MS] [--heartbeat-ms MS] [--heartbeat-misses N]\n"
            "           [--max-context N] [--prefill-rows N]\n"
            "           [--max-seqs N] [--queue-limit N] [--kv-memory MB] [--deadline-ms MS]\n"
            "           [--curve-key FILE --curve-nodes DIR --curve-clients DIR]\n"
            "           [--max-tokens-limit N] [--max-requests-per-client N]\n"
            "\n"
            "Serves a Mixture-of-Experts model whose routed experts run on expert nodes\n"
            "(moe-expert). Node i is the i-th --node; the placement (default: experts\n"
            "split evenly, expert e on node 1 + e %% N) must match the nodes'.\n"
            "\n"
            "  --placement FILE       which node hosts which expert (docs/PLACEMENT.md)\n"
            "  --placement-groups     the grouped split for group-limited routers (DeepSeek):\n"
            "                         each expert group whole on one node, so a token reaches\n"
            "                         at most topk_group nodes per layer (needs n_group >= N)\n"
            "  --replicas R           copies of each expert (group) in the default (grouped)\n"
            "                         split (default 1)\n"
            "  --bind ENDPOINT        client endpoint (default tcp://127.0.0.1:*, a free port)\n"
            "  --endpoint-file FILE   also write the bound client endpoint there when ready\n"
            "  --reply-timeout-ms MS  a node that does not answer a batch in time is\n"
            "                         marked down and its work goes to replicas; without\n"
            "                         one the requests that need it fail (default 30000)\n"
            "  --hello-timeout-ms MS  how long to wait for each node at start (default 120000)\n"
            "  --heartbeat-ms MS      ping idle nodes this often; a down node is sent a HELLO\n"
            "                         as often and rejoins when it answers (default 1000)\n"
            "  --heartbeat-misses N   heartbeat periods without an answer before a node is\n"
            "                         marked down (default 3)\n"
            "  --max-context N        positions per sequence (default: the model's, at most 4096)\n"
            "  --prefill-rows N       rows per forward step: the next token of every\n"
            "                         running sequence plus prompt chunks (default 256)\n"
            "  --max-seqs N           sequences generating at once (default 16)\n"
            "  --queue-limit N        requests waiting for a slot; more get BUSY (default 64)\n"
            "  --kv-memory MB         KV cache for all sequences, MiB (default 1024)\n"
            "  --deadline-ms MS       fail a request not finished MS ms after it was\n"
            "                         accepted, unless it gives its own (default: none)\n"
            "  --threads N            OpenBLAS threads (default: all cores)\n"
            "  --curve-key FILE       encrypt and authenticate with ZeroMQ CURVE: this\n"
            "                         coordinator's key pair (moe-keygen; docs/DEPLOY.md)\n"
            "  --curve-nodes DIR      node I's public key is DIR/node-I.pub\n"
            "  --curve-clients DIR    the *.pub files of the clients allowed to connect\n"
            "  --max-tokens-limit N   refuse a generation asking for more than N tokens\n"
            "  --max-requests-per-client N  generations one client (key, else\n"
            "                         connection) may have queued or running; more get\n"
            "                         BUSY (default: no limit)\n");
}

static int s_int_arg(const char *text, const char *name, int min, int *out)
{
    err_t err = {0};
    if (arg_int(text, name, min, out, &err) < 0) {
        fprintf(stderr, "moe-coordinator: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int s_parse(int argc, char **argv, options_t *o)
{
    static const struct option longopts[] = {
        {"model", required_argument, NULL, 'm'},
        {"node", required_argument, NULL, 'n'},
        {"placement", required_argument, NULL, 'p'},
        {"replicas", required_argument, NULL, 'r'},
        {"placement-groups", no_argument, NULL, 'g'},
        {"bind", required_argument, NULL, 'b'},
        {"endpoint-file", required_argument, NULL, 'e'},
        {"threads", required_argument, NULL, 't'},
        {"reply-timeout-ms", required_argument, NULL, 'R'},
        {"hello-timeout-ms", required_argument, NULL, 'H'},
        {"heartbeat-ms", required_argument, NULL, 'B'},
        {"heartbeat-misses", required_argument, NULL, 'M'},
        {"max-context", required_argument, NULL, 'c'},
        {"prefill-rows", required_argument, NULL, 'f'},
        {"max-seqs", required_argument, NULL, 'S'},
        {"queue-limit", required_argument, NULL, 'Q'},
        {"kv-memory", required_argument, NULL, 'K'},
        {"deadline-ms", required_argument, NULL, 'D'},
        {"curve-key", required_argument, NULL, 'k'},
        {"curve-nodes", required_argument, NULL, 'N'},
        {"curve-clients", required_argument, NULL, 'C'},
        {"max-tokens-limit", required_argument, NULL, 'T'},
        {"max-requests-per-client", required_argument, NULL, 'P'},
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
        case 'g': o->placement_groups = true; break;
        case 'b': o->bind = optarg; break;
        case 'e': o->endpoint_file = optarg; break;
        case 't': rc = s_int_arg(optarg, "--threads", 1, &o->threads); break;
        case 'R': rc = s_int_arg(optarg, "--reply-timeout-ms", 1, &o->reply_timeout_ms); break;
        case 'H': rc = s_int_arg(optarg, "--hello-timeout-ms", 1, &o->hello_timeout_ms); break;
        case 'B': rc = s_int_arg(optarg, "--heartbeat-ms", 1, &o->heartbeat_ms); break;
        case 'M': rc = s_int_arg(optarg, "--heartbeat-misses", 1, &o->heartbeat_misses); break;
        case 'c': rc = s_int_arg(optarg, "--max-context", 1, &o->max_context); break;
        case 'f': rc = s_int_arg(optarg, "--prefill-rows", 1, &o->prefill_rows); break;
        case 'S': rc = s_int_arg(optarg, "--max-seqs", 1, &o->max_seqs); break;
        case 'Q': rc = s_int_arg(optarg, "--queue-limit", 1, &o->queue_limit); break;
        case 'K': rc = s_int_arg(optarg, "--kv-memory", 1, &o->kv_memory_mb); break;
        case 'D': rc = s_int_arg(optarg, "--deadline-ms", 1, &o->deadline_ms); break;
        case 'k': o->curve_key = optarg; break;
        case 'N': o->curve_nodes = optarg; break;
        case 'C': o->curve_clients = optarg; break;
        case 'T': rc = s_int_arg(optarg, "--max-tokens-limit", 1, &o->max_tokens_limit); break;
        case 'P':
            rc = s_int_arg(optarg, "--max-requests-per-client", 1,
                           &o->max_requests_per_client);
            break;
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
    if (o->placement && o->placement_groups) {
        fprintf(stderr, "moe-coordinator: give --placement or --placement-groups, not "
                        "both\n");
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

    err_t err = {0};
    coordinator_opts_t opts = {
        .model = o.model, .nodes = o.nodes, .n_nodes = o.n_nodes,
        .placement_file = o.placement, .placement_groups = o.placement_groups,
        .replicas = o.replicas, .bind = o.bind,
        .reply_timeout_ms = o.reply_timeout_ms, .hello_timeout_ms = o.hello_timeout_ms,
        .heartbeat_ms = o.heartbeat_ms, .heartbeat_misses = o.heartbeat_misses,
        .max_context = o.max_context, .prefill_rows = o.prefill_rows,
        .max_seqs = o.max_seqs, .queue_limit = o.queue_limit, .kv_memory_mb = o.kv_memory_mb,
        .deadline_ms = o.deadline_ms, .curve_key = o.curve_key,
        .curve_nodes = o.curve_nodes, .curve_clients = o.curve_clients,
        .max_tokens_limit = o.max_tokens_limit,
        .max_requests_per_client = o.max_requests_per_client,
    };
    coordinator_t *co = coordinator_start(&opts, &s_stop, &err);
    int rc = co ? 0 : -1;
    if (co && o.endpoint_file && s_write_atomic(o.endpoint_file, coordinator_endpoint(co),
                                                &err) < 0)
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
