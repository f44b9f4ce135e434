/* moe-mpi: a whole cluster started by mpirun.
 *
 *   mpirun -np N [-H hosts | --hostfile F] moe-mpi --model DIR [--coordinators C]
 *       [--bind-host ADDR | --bind-iface NAME] [--max-rows R]
 *       [--curve-coordinators DIR] [every option of moe-coordinator but
 *       --node and --bind (coordinator/coord_options.h), --dtype and
 *       --quantization included: every rank loads its weights so]
 *
 * Ranks 0..C-1 are coordinators (C = --coordinators, default 1), rank r
 * (C..N-1) is expert node r - C + 1: every node serves every coordinator,
 * each coordinator its own sequences (docs/DEPLOY.md, "Several
 * coordinators"). MPI only
 * bootstraps (core/boot.h): the stages below each end in boot_agree, so a
 * rank that fails makes every rank exit 1, and rank 0 prints one line naming
 * the stage, rank and host:
 *   1. args:  every rank parses the same argv (N >= C + 1 ranks);
 *   2. load:  every rank reads config.json; rank 0 reads --placement (or
 *             writes the default or, with --placement-groups, the grouped
 *             split, for N - C nodes) as text;
 *   3. start: rank 0's placement text is broadcast and parsed everywhere;
 *             each node loads its experts and binds tcp://ADDR:* (a port
 *             ZeroMQ picks) on its host's address;
 *   then the node endpoints are gathered to rank 0 and broadcast, and the
 *   nodes serve. Each coordinator rank starts its coordinator (which greets
 *   every node over ZeroMQ, so no MPI barrier can stand here: the nodes must
 *   be serving) and binds its client endpoint on its host's address; ranks
 *   1..C-1 report theirs (or why they failed) to rank 0 over MPI and wait
 *   for its word. Every coordinator started is "ready": rank 0 tells the
 *   others to serve, writes the endpoints, comma-separated (what moe-client
 *   --connect takes), to --endpoint-file (temporary file + rename) and
 *   prints them as the last line of stdout. When a coordinator cannot start,
 *   rank 0 tells the others to stop and sends SHUTDOWN to every node.
 *   With --http HOST:PORT, coordinator K (0-based) serves HOST:PORT+K (port
 *   0: each a free one); --http-url-file gets their URLs, one a line.
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
enum { MAX_COORDINATORS = 64 };     /* --coordinators at most */
enum { ENDPOINTS_TEXT = MAX_COORDINATORS * 128 }; /* bytes of every endpoint, joined */

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
    int n_coordinators;          /* ranks 0..n_coordinators-1 run coordinators */
    const char *curve_coordinators; /* nodes: the *.pub of the allowed coordinators */
    bool help;
} options_t;

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: mpirun -np N [-H hosts | --hostfile F] moe-mpi --model DIR\n"
            "           [--coordinators C]\n"
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
            "Ranks 0..C-1 are coordinators (C = --coordinators, default 1), ranks C..N-1\n"
            "the expert nodes 1..N-C (N >= C + 1). Ready when rank 0 prints the client\n"
            "endpoints, comma-separated (and writes them to --endpoint-file);\n"
            "SIGINT/SIGTERM to mpirun stop every rank cleanly. docs/DEPLOY.md.\n"
            "The coordinator's options are moe-coordinator's; the model folder, the\n"
            "placement file and the CURVE folders must be at the same paths on every host.\n"
            "\n"
            "  --model DIR            model folder, at the same path on every host\n"
            "  --coordinators C       coordinators over the same nodes (default 1); with\n"
            "                         --http HOST:PORT, coordinator K serves PORT+K\n"
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
    *o = (options_t){.max_rows = EXPERT_SERVER_MAX_ROWS, .n_coordinators = 1};
    coord_options_init(&o->c);
    o->c.co.preload = true; /* every rank reads its weights before "ready" */
    arg_opt_t shared[COORD_OPTIONS_N + 1];
    coord_options_table(&o->c, shared);
    const arg_opt_t table[] = {
        ARG_OPT_STRING("--model", &o->model),
        ARG_OPT_STRING("--bind-host", &o->bind_host),
        ARG_OPT_STRING("--bind-iface", &o->bind_iface),
        ARG_OPT_INT("--max-rows", &o->max_rows, 1, 0),
        ARG_OPT_INT("--coordinators", &o->n_coordinators, 1, MAX_COORDINATORS),
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

/* Rank 0, when a coordinator cannot start: asks every node (ranks C..N-1)
 * to stop. */
static void s_shutdown_nodes(const boot_t *boot, int n_coordinators)
{
    void *ctx = zmq_ctx_new();
    if (!ctx)
        return;
    for (int r = n_coordinators; r < boot_size(boot); r++) {
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

/* Rank 0: the node endpoints gathered (ranks C..N-1), one a line, to
 * broadcast (mem_alloc'd; NULL with err). */
static char *s_node_text(const boot_t *boot, int n_coordinators, err_t *err)
{
    size_t len = 1;
    for (int r = n_coordinators; r < boot_size(boot); r++)
        len += strlen(boot_gathered(boot, r)) + 1;
    char *text = mem_alloc(len), *at = text;
    if (!text) {
        err_set(err, ENOMEM, "out of memory for %zu bytes of endpoints", len);
        return NULL;
    }
    for (int r = n_coordinators; r < boot_size(boot); r++)
        at += sprintf(at, "%s\n", boot_gathered(boot, r));
    *at = '\0';
    return text;
}

/* The broadcast node endpoints, split in place into nodes[] (at most
 * COORDINATOR_MAX_NODES); the count, or -1 with err. */
static int s_split_nodes(char *text, const char *nodes[COORDINATOR_MAX_NODES], err_t *err)
{
    int n = 0;
    for (char *save = NULL, *ep = strtok_r(text, "\n", &save); ep;
         ep = strtok_r(NULL, "\n", &save)) {
        if (n == COORDINATOR_MAX_NODES)
            return err_set(err, EINVAL, "more than %d nodes: the coordinator takes at most "
                           "%d", COORDINATOR_MAX_NODES, COORDINATOR_MAX_NODES);
        nodes[n++] = ep;
    }
    return n;
}

/* Ranks 1..C-1: reports the coordinator's endpoint and HTTP URL ("EP URL"),
 * or "! why" when it did not start, to rank 0, and returns whether rank 0
 * said to serve (every coordinator started). */
static bool s_report(boot_t *boot, const coordinator_t *co, const err_t *why, err_t *err)
{
    char text[BOOT_STRING_MAX];
    if (co)
        snprintf(text, sizeof text, "%s %s", coordinator_endpoint(co),
                 coordinator_http_url(co) ? coordinator_http_url(co) : "");
    else
        snprintf(text, sizeof text, "! %s", why->msg);
    if (boot_send_string(boot, 0, text, err) < 0 || boot_recv_string(boot, 0, text, err) < 0)
        return false;
    return strcmp(text, "serve") == 0;
}

/* Rank 0: hears every other coordinator's report, appending the endpoints
 * (comma-separated) to eps and the URLs (one a line) to urls, and answers
 * each "serve" when all started (ok on entry: rank 0's own did), else
 * "stop". Returns whether all started; err gets the first failure. */
static bool s_gather_reports(boot_t *boot, int n_coordinators, bool ok, char *eps,
                             size_t eps_size, char *urls, size_t urls_size, err_t *err)
{
    for (int r = 1; r < n_coordinators; r++) {
        char text[BOOT_STRING_MAX];
        err_t why = {0};
        if (boot_recv_string(boot, r, text, &why) < 0 || text[0] == '!') {
            if (ok)
                err_set(err, why.code ? why.code : EIO, "coordinator %d (rank %d): %s", r + 1,
                        r, why.code ? why.msg : text + 2);
            ok = false;
            continue;
        }
        char *url = strchr(text, ' ');
        if (url)
            *url++ = '\0';
        size_t used = strlen(eps);
        snprintf(eps + used, eps_size - used, ",%s", text);
        used = strlen(urls);
        if (url && *url)
            snprintf(urls + used, urls_size - used, "%s%s", used ? "\n" : "", url);
    }
    for (int r = 1; r < n_coordinators; r++) {
        err_t why = {0};
        if (boot_send_string(boot, r, ok ? "serve" : "stop", &why) < 0 && ok) {
            *err = why;
            ok = false;
        }
    }
    return ok;
}

/* Coordinator ranks once the nodes serve: start a coordinator, agree that
 * every one started (rank 0 hears the others), announce, serve. */
static int s_coordinator(boot_t *boot, const options_t *o, const char *addr,
                         const char *placement_text, char *node_text, err_t *err)
{
    const int k = boot_rank(boot), C = o->n_coordinators;
    const char *nodes[COORDINATOR_MAX_NODES];
    char bind[320], http[320];
    err_t why = {0};
    int n_nodes = s_split_nodes(node_text, nodes, &why);
    snprintf(bind, sizeof bind, "tcp://%s:*", addr);
    coordinator_opts_t co_opts = o->c.co;
    co_opts.nodes = nodes;
    co_opts.n_nodes = n_nodes;
    co_opts.placement_file = NULL; /* rank 0 read it: every rank uses the same text */
    co_opts.placement_text = placement_text;
    co_opts.placement_groups = false;
    co_opts.bind = bind;
    const char *port = co_opts.http ? strrchr(co_opts.http, ':') : NULL;
    if (port && k > 0 && atoi(port + 1) > 0) { /* coordinator K serves PORT+K */
        snprintf(http, sizeof http, "%.*s:%d", (int)(port - co_opts.http), co_opts.http,
                 atoi(port + 1) + k);
        co_opts.http = http;
    }
    coordinator_t *co = n_nodes < 0 ? NULL : coordinator_start(&co_opts, &s_stop, &why);
    if (!co)
        err_wrap(&why, "coordinator");
    if (k > 0) {
        const bool serve = s_report(boot, co, &why, err);
        int rc = 0;
        if (!co)
            rc = err_set(err, why.code, "%s", why.msg);
        else if (serve)
            fprintf(stderr, "moe-mpi: coordinator %d ready, clients connect to %s\n", k + 1,
                    coordinator_endpoint(co));
        if (co && serve)
            rc = coordinator_run(co, &s_stop, err);
        coordinator_destroy(&co);
        return rc; /* told to stop: rank 0 reports why */
    }
    char eps[ENDPOINTS_TEXT], urls[ENDPOINTS_TEXT];
    snprintf(eps, sizeof eps, "%s", co ? coordinator_endpoint(co) : "");
    snprintf(urls, sizeof urls, "%s", co && coordinator_http_url(co) ? coordinator_http_url(co)
                                                                      : "");
    if (!co)
        *err = why;
    if (!s_gather_reports(boot, C, co != NULL, eps, sizeof eps, urls, sizeof urls, err)) {
        coordinator_destroy(&co);
        s_shutdown_nodes(boot, C);
        return -1;
    }
    int rc = 0;
    if (C == 1)
        fprintf(stderr, "moe-mpi: cluster of %d node(s) ready, clients connect to %s\n",
                n_nodes, eps);
    else
        fprintf(stderr, "moe-mpi: cluster of %d coordinators and %d node(s) ready, clients "
                "connect to %s\n", C, n_nodes, eps);
    endpoint_warn_plain(stderr, "moe-mpi: coordinator", coordinator_endpoint(co),
                        o->c.co.curve_key != NULL);
    if (urls[0]) {
        fprintf(stderr, "moe-mpi: OpenAI-compatible HTTP API at %s/v1%s\n",
                coordinator_http_url(co), C > 1 ? " (and the next ports)" : "");
        if (o->c.http_url_file && path_write_line_atomic(o->c.http_url_file, urls, err) < 0)
            rc = -1;
    }
    if (rc == 0 && o->c.endpoint_file && path_write_line_atomic(o->c.endpoint_file, eps, err) < 0)
        rc = -1;
    if (rc < 0)
        s_shutdown_nodes(boot, C);
    if (rc == 0) {
        printf("%s\n", eps);
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
    char *text = NULL, *node_text = NULL;
    size_t text_len = 0;
    placement_t *placement = NULL;
    expert_server_t *server = NULL;
    config_t cfg;

    /* 1. args: the same on every rank, so all agree; rank 0 speaks. */
    if (s_parse(argc, argv, &o, &err) == 0 && !o.help && size < o.n_coordinators + 1)
        err_set(&err, EINVAL, "needs at least %d ranks (%d coordinator%s and a node); got %d",
                o.n_coordinators + 1, o.n_coordinators, o.n_coordinators > 1 ? "s" : "",
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
        text = s_placement_text(&o, &cfg, size - o.n_coordinators, &err);
    if (boot_agree(boot, "load", &err, &verdict) < 0)
        goto fail;

    /* 3. start: every rank uses rank 0's placement. */
    if (boot_bcast_string(boot, &text, &text_len, &err) < 0) {
        verdict = err;
        goto fail;
    }
    const char *placement_name = o.c.co.placement_file;
    placement = placement_parse(text, text_len, placement_name ? placement_name : "placement",
                                cfg.n_layers, cfg.n_experts, size - o.n_coordinators, &err);
    const int node_id = rank - o.n_coordinators + 1; /* < 1 on coordinator ranks */
    if (placement && node_id >= 1) {
        char bind[320], key[PATH_MAX] = "";
        snprintf(bind, sizeof bind, "tcp://%s:*", addr);
        if (o.c.co.curve_nodes)
            snprintf(key, sizeof key, "%s/node-%d.key", o.c.co.curve_nodes, node_id);
        expert_server_opts_t so = {.model_dir = o.model, .placement = placement,
                                   .node_id = node_id, .bind = bind, .max_rows = o.max_rows,
                                   .log = stderr, .curve_key = key[0] ? key : NULL,
                                   .curve_coordinators = o.curve_coordinators,
                                   .preload = o.c.co.preload, .format = o.c.co.format};
        server = expert_server_new(&so, &err);
        if (server) {
            fprintf(stderr, "moe-mpi: rank %d on %s: node %d hosts %d experts (weights: %s), "
                    "serving on %s\n", rank, boot_host(boot), node_id,
                    expert_server_n_hosted(server), expert_server_weights_text(server),
                    expert_server_endpoint(server));
            char who[64];
            snprintf(who, sizeof who, "moe-mpi: node %d", node_id);
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
    /* Every coordinator needs the node endpoints. */
    if (rank == 0)
        node_text = s_node_text(boot, o.n_coordinators, &err);
    if (boot_agree(boot, "endpoints", &err, &verdict) < 0 ||
        boot_bcast_string(boot, &node_text, NULL, &verdict) < 0)
        goto fail;
    if (rank == 0)
        blas_report(stderr, "moe-mpi");

    /* 4. serve, then agree on how it ended. */
    int rc = rank < o.n_coordinators ? s_coordinator(boot, &o, addr, text, node_text, &err)
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
    mem_free(node_text);
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
