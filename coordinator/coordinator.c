/* coordinator: see coordinator.h. */
#include "coordinator/coordinator.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "chat/chat_template.h"
#include "coordinator/dispatch.h"
#include "coordinator/http.h"
#include "coordinator/peer.h"
#include "coordinator/rpc.h"
#include "coordinator/server.h"
#include "core/mem.h"
#include "core/path.h"
#include "engine/weights.h"
#include "model/genconfig.h"
#include "proto/wire.h"
#include "security/keypair.h"
#include "security/zap.h"
#include "tokenizer/tokenizer.h"

/* Everything the coordinator owns, in the order it is built. */
struct coordinator {
    void *zmq_ctx;
    weights_t *w;
    tokenizer_t *tokenizer;        /* NULL when the model has no tokenizer.json */
    placement_t *placement;
    peer_t *peers[COORDINATOR_MAX_NODES];
    server_node_info_t nodes[COORDINATOR_MAX_NODES];
    int32_t *hosted;               /* (2, total hosted pairs): layers then experts */
    dispatch_route_t *routes;
    dispatch_t *dispatch;
    mover_t *mover;                /* the live placement (moves, rebalances) */
    server_t *server;
    rpc_t *rpc;
    http_t *http;                  /* NULL without --http */
    chat_template_t *chat;         /* with --http: the model's chat template, or NULL */
    int n_nodes;                   /* at start; more may join (dispatch_n_peers) */
    int prefill_rows;              /* rows per step: the links' limits */
    int heartbeat_ms, heartbeat_misses;
    char model_id[WIRE_MAX_TEXT];  /* what a joining node must have loaded */
    keypair_t key;                 /* with CURVE: this coordinator's pair */
    char (*node_public)[KEYPAIR_Z85_LEN + 1]; /* with CURVE: (n_nodes) node keys */
    zap_t *zap;                    /* with CURVE: allows clients by key */
};

static void s_teardown(coordinator_t *co)
{
    http_destroy(&co->http); /* first: its threads wait on the server's loop */
    chat_template_destroy(&co->chat);
    rpc_destroy(&co->rpc);
    server_destroy(&co->server);
    mover_destroy(&co->mover);
    dispatch_destroy(&co->dispatch);
    for (int i = 0; i < COORDINATOR_MAX_NODES; i++) /* with those that joined */
        peer_destroy(&co->peers[i]);
    mem_free(co->routes);
    mem_free(co->hosted);
    placement_destroy(&co->placement);
    tokenizer_destroy(&co->tokenizer);
    weights_destroy(&co->w);
    zap_destroy(&co->zap); /* before the context ends: it owns sockets in it */
    mem_free(co->node_public);
    memset(&co->key, 0, sizeof co->key);
    if (co->zmq_ctx)
        zmq_ctx_term(co->zmq_ctx);
}

/* server_join_fn: the link to node node_id joining at endpoint. */
static peer_t *s_join(void *ctx, int node_id, const char *endpoint, err_t *err)
{
    coordinator_t *co = ctx;
    if (co->node_public) {
        err_set(err, ENOTSUP, "adding a node to a CURVE cluster is not supported yet");
        return NULL;
    }
    if (node_id < 1 || node_id > COORDINATOR_MAX_NODES || co->peers[node_id - 1]) {
        err_set(err, ENOSPC, "no room for node %d", node_id);
        return NULL;
    }
    wire_limits_t lim = dispatch_limits(&co->w->cfg, co->prefill_rows);
    peer_t *peer = peer_new(co->zmq_ctx, node_id, endpoint, &lim, NULL, NULL, err);
    if (!peer)
        return NULL;
    peer_expect_join(peer, co->model_id);
    peer_set_health(peer, co->heartbeat_ms, co->heartbeat_misses, stderr);
    co->peers[node_id - 1] = peer;
    return peer;
}

/* server_leave_fn: a node that never joined. */
static void s_leave(void *ctx, int node_id)
{
    coordinator_t *co = ctx;
    if (node_id >= 1 && node_id <= COORDINATOR_MAX_NODES)
        peer_destroy(&co->peers[node_id - 1]);
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
    /* A dense layer (deepseek's first ones) has no experts: no routes, and
     * its placement slots are not among a node's hosted pairs. */
    for (int l = 0; l < cfg->n_layers; l++)
        for (int e = 0; e < cfg->n_experts && config_layer_is_moe(cfg, l); e++) {
            const int *ids = NULL;
            int n = placement_nodes_of(co->placement, l, e, &ids);
            dispatch_route_t *r = &co->routes[(size_t)l * cfg->n_experts + e];
            for (int j = 0; j < n && r->n < DISPATCH_MAX_REPLICAS; j++)
                r->peer[r->n++] = ids[j] - 1;
        }
    size_t used = 0;
    for (int i = 0; i < co->n_nodes; i++) {
        server_node_info_t *ni = &co->nodes[i];
        int32_t *layer = co->hosted + used, *expert = co->hosted + total + used;
        int n = placement_node_experts(co->placement, i + 1, layer, expert), kept = 0;
        for (int j = 0; j < n; j++)
            if (config_layer_is_moe(cfg, layer[j])) {
                layer[kept] = layer[j];
                expert[kept++] = expert[j];
            }
        ni->hosted_layer = layer;
        ni->hosted_expert = expert;
        ni->n_hosted = kept;
        used += (size_t)n;
    }
    return 0;
}

/* The model's tokenizer.json, when it has one: text in, text out. */
static int s_load_tokenizer(coordinator_t *co, const char *dir, err_t *err)
{
    char *path = path_join(dir, "tokenizer.json");
    if (!path)
        return err_set(err, ENOMEM, "out of memory for a path");
    int rc = 0;
    if (access(path, F_OK) == 0 && !(co->tokenizer = tokenizer_load(path, err)))
        rc = -1;
    mem_free(path);
    return rc;
}

/* With CURVE options: loads the keys and starts the client key checker,
 * which must exist before the client endpoint binds. */
static int s_security(coordinator_t *co, const coordinator_opts_t *o, err_t *err)
{
    if (!o->curve_key && !o->curve_nodes && !o->curve_clients)
        return 0;
    if (!o->curve_key || !o->curve_nodes || !o->curve_clients)
        return err_set(err, EINVAL, "CURVE needs all of --curve-key, --curve-nodes and "
                       "--curve-clients");
    if (keypair_load(&co->key, o->curve_key, err) < 0)
        return -1;
    co->node_public = mem_calloc((size_t)co->n_nodes, sizeof *co->node_public);
    if (!co->node_public)
        return err_set(err, ENOMEM, "out of memory for the node keys");
    for (int i = 0; i < co->n_nodes; i++) {
        char name[32];
        snprintf(name, sizeof name, "node-%d.pub", i + 1);
        char *path = path_join(o->curve_nodes, name);
        if (!path)
            return err_set(err, ENOMEM, "out of memory for a path");
        int rc = keypair_load_public(co->node_public[i], path, err);
        mem_free(path);
        if (rc < 0)
            return err_wrap(err, "the public key of node %d", i + 1);
    }
    co->zap = zap_new(co->zmq_ctx, o->curve_clients, "moe-coordinator", stderr, err);
    return co->zap ? 0 : -1;
}

/* http_render_fn over the model's chat template. */
static int s_render(void *ctx, const char *messages_json, const char *tools_json,
                    bool add_generation_prompt, char **out, size_t *out_len, err_t *err)
{
    const chat_template_t *t = ctx;
    json_t *messages = json_loads(messages_json, 0, NULL);
    json_t *tools = tools_json ? json_loads(tools_json, 0, NULL) : NULL;
    char *text = NULL;
    int rc = -1;
    if (!messages || (tools_json && !tools))
        err_set(err, ENOMEM, "out of memory for the messages");
    else
        rc = chat_template_render_chat(t, messages, tools, add_generation_prompt, &text,
                                       out_len, err);
    json_decref(messages);
    json_decref(tools);
    if (rc < 0)
        return -1;
    *out = mem_alloc(*out_len + 1); /* the caller frees with mem_free */
    if (*out)
        memcpy(*out, text, *out_len + 1);
    free(text);
    return *out ? 0 : err_set(err, ENOMEM, "out of memory for the prompt");
}

/* The HTTP API, serving the model under its folder's name; a chat template
 * the interpreter cannot handle stops the start here, naming the construct. */
static int s_http(coordinator_t *co, const coordinator_opts_t *o, err_t *err)
{
    co->chat = chat_template_load(o->model, err);
    if (!co->chat && errno != ENOENT)
        return -1;
    *err = (err_t){0};
    char id[256];
    size_t n = strlen(o->model);
    while (n > 1 && o->model[n - 1] == '/')
        n--;
    size_t b = n;
    while (b > 0 && o->model[b - 1] != '/')
        b--;
    snprintf(id, sizeof id, "%.*s", (int)(n - b), o->model + b);
    const http_config_t hc = {
        .listen = o->http, .api_key = o->api_key, .model_id = id,
        .render = co->chat ? s_render : NULL, .render_ctx = co->chat,
        .no_template_why = "the model has no chat template (tokenizer_config.json "
                           "\"chat_template\" or chat_template.jinja): use /v1/completions",
    };
    co->http = http_new(co->server, &hc, err);
    return co->http ? 0 : -1;
}

static int s_start(coordinator_t *co, const coordinator_opts_t *o,
                   const volatile sig_atomic_t *stop, err_t *err)
{
    weights_select_t dense = {.dense = true, .format = o->format, .log = stderr,
                              .name = "moe-coordinator", .resident = o->preload};
    co->w = weights_load(o->model, &dense, err);
    if (!co->w)
        return -1;
    char held[96];
    fprintf(stderr, "moe-coordinator: weights: %s, %.1f MiB\n",
            weights_describe(co->w, held, sizeof held), (double)weights_bytes(co->w) / (1 << 20));
    if (o->preload)
        weights_preload(co->w, stderr, "moe-coordinator");
    const config_t *cfg = &co->w->cfg;
    genconfig_t gen;
    if (genconfig_load(&gen, o->model, cfg, err) < 0 || s_load_tokenizer(co, o->model, err) < 0)
        return -1;
    if (o->deadline_ms < 0)
        return err_set(err, EINVAL, "a deadline of %d ms", o->deadline_ms);
    co->n_nodes = o->n_nodes;
    if (o->n_nodes < 1 || o->n_nodes > COORDINATOR_MAX_NODES)
        return err_set(err, EINVAL, "%d nodes (1 to %d)", o->n_nodes, COORDINATOR_MAX_NODES);
    if (o->placement_file)
        co->placement = placement_load(o->placement_file, cfg->n_layers, cfg->n_experts,
                                       o->n_nodes, err);
    else if (o->placement_text)
        co->placement = placement_parse(o->placement_text, strlen(o->placement_text),
                                        "the placement", cfg->n_layers, cfg->n_experts,
                                        o->n_nodes, err);
    else if (o->placement_groups) {
        co->placement = placement_grouped(cfg->n_layers, cfg->n_experts, cfg->n_group,
                                          o->n_nodes, o->replicas, err);
        if (!co->placement)
            err_wrap(err, "--placement-groups with %s", o->model);
    } else
        co->placement = placement_default(cfg->n_layers, cfg->n_experts, o->n_nodes,
                                          o->replicas, err);
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
    if (s_security(co, o, err) < 0)
        return -1;
    const keypair_t *key = co->node_public ? &co->key : NULL;
    wire_limits_t lim = dispatch_limits(cfg, o->prefill_rows);
    for (int i = 0; i < co->n_nodes; i++)
        if (!(co->peers[i] = peer_new(co->zmq_ctx, i + 1, o->nodes[i], &lim, key,
                                      key ? co->node_public[i] : NULL, err)))
            return -1;
    const int max_nodes = o->max_nodes > co->n_nodes ? o->max_nodes
                          : co->n_nodes + COORDINATOR_SPARE_NODES < COORDINATOR_MAX_NODES
                              ? co->n_nodes + COORDINATOR_SPARE_NODES
                              : COORDINATOR_MAX_NODES;
    co->dispatch = dispatch_new(co->peers, co->n_nodes, max_nodes, cfg, co->routes,
                                o->prefill_rows,
                                o->reply_timeout_ms, err);
    if (!co->dispatch)
        return -1;
    dispatch_set_wire(co->dispatch, o->wire);
    if (o->load_half_life_s > 0 &&
        dispatch_set_load_half_life(co->dispatch, o->load_half_life_s, err) < 0)
        return -1;

    char model_id[WIRE_MAX_TEXT];
    config_model_id(cfg, model_id, sizeof model_id);
    snprintf(co->model_id, sizeof co->model_id, "%s", model_id);
    co->prefill_rows = o->prefill_rows;
    wire_inbox_t *inbox = wire_inbox_new(&lim, err);
    if (!inbox)
        return -1;
    for (int i = 0; i < co->n_nodes; i++) {
        const server_node_info_t *ni = &co->nodes[i];
        if (peer_hello(co->peers[i], inbox, model_id, ni->hosted_layer, ni->hosted_expert,
                       ni->n_hosted, o->hello_timeout_ms, err) < 0) {
            wire_inbox_destroy(&inbox);
            return -1;
        }
        if (stop && *stop) {
            wire_inbox_destroy(&inbox);
            return err_set(err, EINTR, "interrupted while starting");
        }
    }
    wire_inbox_destroy(&inbox);
    /* From now on a node that dies is noticed, and one that comes back rejoins. */
    co->heartbeat_ms = o->heartbeat_ms > 0 ? o->heartbeat_ms : COORDINATOR_DEFAULT_HEARTBEAT_MS;
    co->heartbeat_misses = o->heartbeat_misses > 0 ? o->heartbeat_misses
                                                   : COORDINATOR_DEFAULT_HEARTBEAT_MISSES;
    dispatch_set_health(co->dispatch, co->heartbeat_ms, co->heartbeat_misses, stderr);

    server_config_t conf = {
        .model_name = o->model, .model_arch = config_arch_name(cfg->arch),
        .max_context = max_context,
        .prefill_rows = o->prefill_rows,
        .micro_batches = o->micro_batches > 0 ? o->micro_batches : 1,
        .max_seqs = o->max_seqs > 0 ? o->max_seqs : COORDINATOR_DEFAULT_MAX_SEQS,
        .queue_limit = o->queue_limit > 0 ? o->queue_limit : COORDINATOR_DEFAULT_QUEUE,
        .kv_memory = o->kv_memory_mb > 0 ? (size_t)o->kv_memory_mb << 20
                                         : (size_t)COORDINATOR_DEFAULT_KV_MB << 20,
        .tokenizer = co->tokenizer, .n_eos = gen.n_eos,
        .default_deadline_ms = o->deadline_ms,
        .max_tokens_limit = o->max_tokens_limit,
        .max_requests_per_client = o->max_requests_per_client,
    };
    for (int i = 0; i < gen.n_eos && i < SAMPLER_MAX_EOS; i++)
        conf.eos[i] = gen.eos_token_ids[i];
    co->server = server_new(co->w, co->dispatch, co->peers, co->nodes, co->n_nodes, &conf, err);
    if (!co->server)
        return -1;
    const int group_size = o->placement_groups && cfg->n_group > 1
                               ? cfg->n_experts / cfg->n_group : 0;
    co->mover = mover_new(co->dispatch, co->peers, co->n_nodes, cfg, co->placement,
                          group_size, stderr, err);
    if (!co->mover)
        return -1;
    mover_set_timeout(co->mover, o->move_timeout_ms);
    mover_set_auto(co->mover, o->rebalance_every_s,
                   o->rebalance_threshold_pct > 100 ? o->rebalance_threshold_pct / 100.0 : 1.15,
                   o->rebalance_redundant);
    server_set_mover(co->server, co->mover);
    server_set_joiner(co->server, s_join, s_leave, co);
    const rpc_config_t rc = {.bind = o->bind, .curve_key = key};
    co->rpc = rpc_new(co->zmq_ctx, co->server, &rc, err);
    if (!co->rpc)
        return -1;
    return o->http ? s_http(co, o, err) : 0;
}

coordinator_t *coordinator_start(const coordinator_opts_t *opts,
                                 const volatile sig_atomic_t *stop, err_t *err)
{
    coordinator_t *co = mem_calloc(1, sizeof *co);
    if (!co) {
        err_set(err, ENOMEM, "out of memory for the coordinator");
        return NULL;
    }
    if (s_start(co, opts, stop, err) < 0)
        coordinator_destroy(&co);
    return co;
}

void coordinator_destroy(coordinator_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    int saved = errno;
    s_teardown(*self_p);
    mem_free(*self_p);
    *self_p = NULL;
    errno = saved;
}

const char *coordinator_endpoint(const coordinator_t *self)
{
    return rpc_endpoint(self->rpc);
}

const char *coordinator_http_url(const coordinator_t *self)
{
    return self->http ? http_url(self->http) : NULL;
}

int coordinator_run(coordinator_t *self, volatile sig_atomic_t *stop, err_t *err)
{
    return server_run(self->server, stop, err);
}

