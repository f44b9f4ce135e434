/* moe-mpi: a whole cluster started by mpirun.
 *
 *   mpirun -np N [-H hosts | --hostfile F] moe-mpi --model DIR
 *       [--bind-host ADDR | --bind-iface NAME] [--max-rows R]
 *       [--curve-coordinators DIR] [every option of moe-coordinator but
 *       --node and --bind (coordinator/coord_options.h), --dtype and
 *       --quantization included: every rank loads its weights so]
 *
 * Rank 0 is the coordinator, rank r (1..N-1) is expert node r. MPI only
 * bootstraps (core/boot.h): the stages below each end in boot_agree, so a
 * rank that fails makes every rank exit 1, and rank 0 prints one line naming
 * the stage, rank and host:
 *   1. args:  every rank parses the same argv (N >= 2 ranks);
 *   2. load:  every rank reads config.json; rank 0 reads --placement (or
 *             writes the default or, with --placement-groups, the grouped
 *             split) as text;
 *   3. start: rank 0's placement text is broadcast and parsed everywhere;
 *             each node loads its experts and binds tcp://ADDR:* (a port
 *             ZeroMQ picks) on its host's address;
 *   then the node endpoints are gathered to rank 0, and the nodes serve.
 *   Rank 0 starts the coordinator (which greets every node over ZeroMQ, so
 *   no MPI barrier can stand here: the nodes must be serving) and binds the
 *   client endpoint on its host's address: that is "ready". It writes the
 *   endpoint to --endpoint-file (temporary file + rename) and prints it as
 *   the last line of stdout. When the coordinator cannot start, rank 0 sends
 *   SHUTDOWN to every node.
 *   4. serve: every rank serves until SIGTERM/SIGINT (mpirun forwards them),
 *      then a last boot_agree decides the exit status: 0 when all ranks
 *      stopped cleanly.
 * ADDR is --bind-host, else the first IPv4 address of --bind-iface, else the
 * host's first non-loopback IPv4 address (127.0.0.1 when it has none).
 * Exit status: 0 clean shutdown, 1 runtime error, 2 usage error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "coordinator/coord_options.h"
#include "coordinator/coordinator.h"
#include "core/arg.h"
#include "core/blas.h"
#include "core/boot.h"
#include "core/endpoint.h"
#include "core/err.h"
#include "core/mem.h"
#include "core/path.h"
#include "expert_node/expert_server.h"
#include "model/config.h"
#include "model/placement.h"
#include "proto/data_plane.h"

enum { SHUTDOWN_LINGER_MS = 2000 }; /* how long a SHUTDOWN may wait for a node */

static volatile sig_atomic_t s_stop; /* set by SIGINT/SIGTERM */

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

typedef struct options {
    coord_options_t c;           /* rank 0's coordinator, as moe-coordinator's */
    const char *model;
    const char *bind_host;       /* NULL: from bind_iface or the host's address */
    const char *bind_iface;
    int max_rows;
    const char *curve_coordinators; /* nodes: the *.pub of the allowed coordinators */
    bool help;
} options_t;

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: mpirun -np N [-H hosts | --hostfile F] moe-mpi --model DIR\n"
            "           [--placement FILE | --placement-groups] [--replicas R]\n"
            "           [--endpoint-file FILE]\n"
            "           [--bind-host ADDR | --bind-iface NAME] [--threads T]\n"
            "           [--max-rows R] [--reply-timeout-ms MS] [--hello-timeout-ms MS]\n"
            "           [--heartbeat-ms MS] [--heartbeat-misses N]\n"
            "           [--max-context N] [--prefill-rows N] [--wire f32|bf16|fp8]\n"
            "           [--max-seqs N] [--queue-limit N] [--kv-memory MB] [--deadline-ms MS]\n"
            "           [--curve-key FILE --curve-nodes DIR --curve-clients DIR\n"
            "            --curve-coordinators DIR]\n"
            "           [--max-tokens-limit N] [--max-requests-per-client N]\n"
            "\n"
            "Rank 0 is the coordinator, ranks 1..N-1 the expert nodes (N >= 2). Ready\n"
            "when rank 0 prints the client endpoint (and writes --endpoint-file);\n"
            "SIGINT/SIGTERM to mpirun stop every rank cleanly. docs/DEPLOY.md.\n"
            "The coordinator's options are moe-coordinator's; the model folder, the\n"
            "placement file and the CURVE folders must be at the same paths on every host.\n"
            "\n"
            "  --model DIR            model folder, at the same path on every host\n"
            "  --bind-host ADDR       address every rank binds its ZeroMQ endpoint on\n"
            "  --bind-iface NAME      bind on the IPv4 address of this interface instead\n"
            "                         (default: the host's first non-loopback IPv4)\n"
            "  --max-rows R           rows per expert request (default %d)\n"
            "  --curve-coordinators DIR  with CURVE: the *.pub files of the coordinators\n"
            "                         the nodes allow; rank I loads its key pair from\n"
            "                         node-I.key in the --curve-nodes folder\n",
            EXPERT_SERVER_MAX_ROWS);
    coord_options_help(out);
}

static int s_parse(int argc, char **argv, options_t *o, err_t *err)
{
    *o = (options_t){.max_rows = EXPERT_SERVER_MAX_ROWS};
    coord_options_init(&o->c);
    o->c.co.preload = true; /* every rank reads its weights before "ready" */
    arg_opt_t shared[COORD_OPTIONS_N + 1];
    coord_options_table(&o->c, shared);
    const arg_opt_t table[] = {
        ARG_OPT_STRING("--model", &o->model),
        ARG_OPT_STRING("--bind-host", &o->bind_host),
        ARG_OPT_STRING("--bind-iface", &o->bind_iface),
        ARG_OPT_INT("--max-rows", &o->max_rows, 1, 0),
        ARG_OPT_STRING("--curve-coordinators", &o->curve_coordinators),
        ARG_OPT_TABLE(shared),
        ARG_OPT_HELP("--help"),
        ARG_OPT_END,
    };
    int rc = arg_parse(argc, argv, 1, table, 0, NULL, err);
    if (rc == ARG_HELP_ASKED) {
        o->help = true;
        return 0;
    }
    if (rc < 0)
        return -1;
    if (!o->model)
        return err_set(err, EINVAL, "--model is required");
    if (coord_options_finish(&o->c, err) < 0)
        return -1;
    if (o->bind_host && o->bind_iface)
        return err_set(err, EINVAL, "give --bind-host or --bind-iface, not both");
    const coordinator_opts_t *co = &o->c.co;
    int curve = !!co->curve_key + !!co->curve_nodes + !!co->curve_clients +
                !!o->curve_coordinators;
    if (curve != 0 && curve != 4)
        return err_set(err, EINVAL, "CURVE needs all of --curve-key, --curve-nodes, "
                       "--curve-clients and --curve-coordinators");
    o->c.co.model = o->model;
    return 0;
}

/* The address this rank binds on (see the file header), into buf. */
static int s_bind_address(const options_t *o, char *buf, size_t size, err_t *err)
{
    if (o->bind_host) {
        snprintf(buf, size, "%s", o->bind_host);
        return 0;
    }
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) < 0)
        return err_set(err, errno, "cannot list network interfaces: %s", strerror(errno));
    bool found = false;
    for (struct ifaddrs *i = ifs; i && !found; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP))
            continue;
        if (o->bind_iface ? strcmp(i->ifa_name, o->bind_iface) != 0
                          : (i->ifa_flags & IFF_LOOPBACK) != 0)
            continue;
        const struct sockaddr_in *in = (const struct sockaddr_in *)(void *)i->ifa_addr;
        found = inet_ntop(AF_INET, &in->sin_addr, buf, (socklen_t)size) != NULL;
    }
    freeifaddrs(ifs);
    if (!found && o->bind_iface)
        return err_set(err, ENODEV, "interface %s has no IPv4 address", o->bind_iface);
    if (!found)
        snprintf(buf, size, "127.0.0.1");
    return 0;
}

/* Rank 0: the placement as text, from --placement or the default or grouped
 * split (mem_alloc'd; NULL with err). */
static char *s_placement_text(const options_t *o, const config_t *cfg, int n_nodes,
                              err_t *err)
{
    const char *file = o->c.co.placement_file;
    if (file) {
        size_t n = 0;
        FILE *f = fopen(file, "r");
        if (!f) {
            err_set(err, errno, "cannot open placement file %s: %s", file, strerror(errno));
            return NULL;
        }
        char *text = mem_alloc((size_t)PLACEMENT_MAX_FILE + 1);
        if (text)
            n = fread(text, 1, (size_t)PLACEMENT_MAX_FILE + 1, f);
        int bad = ferror(f);
        fclose(f);
        if (!text || bad || n > (size_t)PLACEMENT_MAX_FILE) {
            err_set(err, !text ? ENOMEM : bad ? EIO : EFBIG, "cannot read placement file %s"
                    "%s", file, n > (size_t)PLACEMENT_MAX_FILE ? ": too large" : "");
            mem_free(text);
            return NULL;
        }
        text[n] = '\0';
        return text;
    }
    int replicas = o->c.co.replicas;
    bool groups = o->c.co.placement_groups;
    placement_t *p = groups
        ? placement_grouped(cfg->n_layers, cfg->n_experts, cfg->n_group, n_nodes, replicas,
                            err)
        : placement_default(cfg->n_layers, cfg->n_experts, n_nodes, replicas, err);
    if (!p) {
        if (groups)
            err_wrap(err, "--placement-groups with %s", o->model);
        return NULL;
    }
    char *buf = NULL, *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    if (!out) {
        err_set(err, errno, "cannot open a memory stream: %s", strerror(errno));
    } else {
        int rc = placement_write(p, out, err);
        if (fclose(out) != 0 && rc == 0)
            rc = err_set(err, EIO, "cannot write the placement");
        if (rc == 0 && !(text = mem_strdup(buf)))
            err_set(err, ENOMEM, "out of memory");
    }
    free(buf); /* open_memstream's buffer comes from malloc */
    placement_destroy(&p);
    return text;
}

/* Rank 0, when the coordinator cannot start: asks every node to stop. */
static void s_shutdown_nodes(const boot_t *boot)
{
    void *ctx = zmq_ctx_new();
    if (!ctx)
        return;
    for (int r = 1; r < boot_size(boot); r++) {
        void *s = zmq_socket(ctx, ZMQ_DEALER);
        if (!s)
            continue;
        int linger = SHUTDOWN_LINGER_MS;
        zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
        wire_data_t msg = {.type = WIRE_SHUTDOWN};
        if (zmq_connect(s, boot_gathered(boot, r)) == 0)
            wire_data_send(s, NULL, &msg, NULL);
        zmq_close(s);
    }
    zmq_ctx_term(ctx); /* waits up to the linger for the messages to leave */
}

/* Rank 0 once the nodes serve: starts the coordinator, announces it, serves. */
static int s_coordinator(boot_t *boot, const options_t *o, const char *addr,
                         const char *placement_text, err_t *err)
{
    int n_nodes = boot_size(boot) - 1;
    const char *nodes[COORDINATOR_MAX_NODES];
    if (n_nodes > COORDINATOR_MAX_NODES)
        return err_set(err, EINVAL, "%d nodes: the coordinator takes at most %d", n_nodes,
                       COORDINATOR_MAX_NODES);
    for (int i = 0; i < n_nodes; i++)
        nodes[i] = boot_gathered(boot, i + 1);
    char bind[320];
    snprintf(bind, sizeof bind, "tcp://%s:*", addr);
    coordinator_opts_t co_opts = o->c.co;
    co_opts.nodes = nodes;
    co_opts.n_nodes = n_nodes;
    co_opts.placement_file = NULL; /* rank 0 read it: every rank uses the same text */
    co_opts.placement_text = placement_text;
    co_opts.placement_groups = false;
    co_opts.bind = bind;
    coordinator_t *co = coordinator_start(&co_opts, &s_stop, err);
    if (!co) {
        err_wrap(err, "coordinator");
        s_shutdown_nodes(boot);
        return -1;
    }
    int rc = 0;
    const char *ep = coordinator_endpoint(co);
    fprintf(stderr, "moe-mpi: cluster of %d node(s) ready, clients connect to %s\n", n_nodes,
            ep);
    endpoint_warn_plain(stderr, "moe-mpi: coordinator", ep, o->c.co.curve_key != NULL);
    if (coordinator_http_url(co)) {
        fprintf(stderr, "moe-mpi: OpenAI-compatible HTTP API at %s/v1\n",
                coordinator_http_url(co));
        if (o->c.http_url_file &&
            path_write_line_atomic(o->c.http_url_file, coordinator_http_url(co), err) < 0)
            rc = -1;
    }
    if (rc == 0 && o->c.endpoint_file &&
        path_write_line_atomic(o->c.endpoint_file, ep, err) < 0)
        rc = -1;
    if (rc < 0)
        s_shutdown_nodes(boot);
    if (rc == 0) {
        printf("%s\n", ep);
        fflush(stdout);
        rc = coordinator_run(co, &s_stop, err);
    }
    coordinator_destroy(&co);
    return rc;
}

static int s_catch_signals(err_t *err)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal; /* no SA_RESTART: a signal interrupts the poll */
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0)
        return err_set(err, errno, "cannot install signal handlers: %s", strerror(errno));
    return 0;
}

/* The stages of the file header; returns the exit status. */
static int s_main(boot_t *boot, int argc, char **argv)
{
    int rank = boot_rank(boot), size = boot_size(boot);
    int status = 1;
    err_t err = {0}, verdict = {0};
    options_t o;
    char addr[INET_ADDRSTRLEN + 256] = "";
    char *text = NULL;
    size_t text_len = 0;
    placement_t *placement = NULL;
    expert_server_t *server = NULL;
    config_t cfg;

    /* 1. args: the same on every rank, so all agree; rank 0 speaks. */
    if (s_parse(argc, argv, &o, &err) == 0 && !o.help && size < 2)
        err_set(&err, EINVAL, "needs at least 2 ranks (a coordinator and a node); got %d",
                size);
    if (err.code == 0 && !o.help)
        s_bind_address(&o, addr, sizeof addr, &err);
    if (err.code == 0 && !o.help)
        s_catch_signals(&err);
    if (boot_agree(boot, "args", &err, &verdict) < 0) {
        status = verdict.code == EINVAL ? 2 : 1;
        goto fail;
    }
    if (o.help) {
        if (rank == 0)
            s_usage(stdout);
        return 0;
    }
    blas_set_threads(o.c.threads);
    const char *endpoint_file = o.c.endpoint_file;
    if (rank == 0 && endpoint_file && unlink(endpoint_file) < 0 && errno != ENOENT)
        err_set(&err, errno, "cannot remove the stale endpoint file %s: %s", endpoint_file,
                strerror(errno));

    /* 2. load */
    if (err.code == 0 && config_load(&cfg, o.model, &err) == 0 && rank == 0)
        text = s_placement_text(&o, &cfg, size - 1, &err);
    if (boot_agree(boot, "load", &err, &verdict) < 0)
        goto fail;

    /* 3. start: every rank uses rank 0's placement. */
    if (boot_bcast_string(boot, &text, &text_len, &err) < 0) {
        verdict = err;
        goto fail;
    }
    const char *placement_name = o.c.co.placement_file;
    placement = placement_parse(text, text_len, placement_name ? placement_name : "placement",
                                cfg.n_layers, cfg.n_experts, size - 1, &err);
    if (placement && rank > 0) {
        char bind[320], key[PATH_MAX] = "";
        snprintf(bind, sizeof bind, "tcp://%s:*", addr);
        if (o.c.co.curve_nodes)
            snprintf(key, sizeof key, "%s/node-%d.key", o.c.co.curve_nodes, rank);
        expert_server_opts_t so = {.model_dir = o.model, .placement = placement,
                                   .node_id = rank, .bind = bind, .max_rows = o.max_rows,
                                   .log = stderr, .curve_key = key[0] ? key : NULL,
                                   .curve_coordinators = o.curve_coordinators,
                                   .preload = o.c.co.preload, .format = o.c.co.format};
        server = expert_server_new(&so, &err);
        if (server) {
            fprintf(stderr, "moe-mpi: rank %d on %s: node %d hosts %d experts (weights: %s), "
                    "serving on %s\n", rank, boot_host(boot), rank,
                    expert_server_n_hosted(server), expert_server_weights_text(server),
                    expert_server_endpoint(server));
            char who[64];
            snprintf(who, sizeof who, "moe-mpi: node %d", rank);
            endpoint_warn_plain(stderr, who, expert_server_endpoint(server),
                                so.curve_key != NULL);
        }
    }
    if (boot_agree(boot, "start", &err, &verdict) < 0)
        goto fail;
    if (boot_gather_strings(boot, server ? expert_server_endpoint(server) : "", &err) < 0) {
        verdict = err;
        goto fail;
    }
    if (rank == 0)
        blas_report(stderr, "moe-mpi");

    /* 4. serve, then agree on how it ended. */
    int rc = rank == 0 ? s_coordinator(boot, &o, addr, text, &err)
                       : expert_server_run(server, &s_stop, &err);
    if (rc < 0 && err.code == 0)
        err_set(&err, EIO, "stopped with an error");
    expert_server_destroy(&server);
    if (boot_agree(boot, "serve", &err, &verdict) < 0)
        goto fail;
    if (rank == 0)
        fprintf(stderr, "moe-mpi: all %d ranks stopped cleanly\n", size);
    status = 0;
    goto done;

fail:
    if (rank == 0)
        fprintf(stderr, "moe-mpi: %s\n", verdict.msg);
done:
    expert_server_destroy(&server);
    placement_destroy(&placement);
    mem_free(text);
    return status;
}

int main(int argc, char **argv)
{
    /* Before MPI_Init: it may re-execute this program (same pid, so mpirun
     * still knows it), which must happen before MPI or any thread starts. */
    blas_ensure_native(argv);
    err_t err = {0};
    boot_t *boot = boot_new(&argc, &argv, &err);
    if (!boot) {
        fprintf(stderr, "moe-mpi: %s\n", err.msg);
        return 1;
    }
    int status = s_main(boot, argc, argv);
    boot_destroy(&boot);
    return status;
}
