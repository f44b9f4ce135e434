/* coord_options: see coord_options.h. */
#include "coord_options.h"

#include "coordinator/mover.h"

#include <errno.h>
#include <stddef.h>

/* The defaults not taken from coordinator.h. */
enum {
    DEFAULT_REPLY_TIMEOUT_MS = 30000,
    DEFAULT_HELLO_TIMEOUT_MS = 120000,
    DEFAULT_PREFILL_ROWS = 256,
};

/* One option: where it stores (an offset into coord_options_t), its least
 * value and its default (ARG_INT; 0 leaves the field 0, "not given"). */
typedef struct option_desc {
    const char *name;
    arg_kind_t kind;
    size_t offset;
    int min;
    int def;
} option_desc_t;

/* The options with a check of their own (ARG_PARSE): the weights' format,
 * the wire's. */
typedef struct option_parse {
    const char *name;
    size_t offset;
    arg_parse_fn parse;
} option_parse_t;

enum { N_PARSE = 3, N_PLAIN = COORD_OPTIONS_N - N_PARSE };

#define CO(field) offsetof(coord_options_t, co.field)
#define OWN(field) offsetof(coord_options_t, field)

/* In the order of the help text below. */
static const option_desc_t s_options[N_PLAIN] = {
    {"--placement", ARG_STRING, CO(placement_file), 0, 0},
    {"--placement-groups", ARG_FLAG, CO(placement_groups), 0, 0},
    {"--replicas", ARG_INT, CO(replicas), 1, 0},
    {"--endpoint-file", ARG_STRING, OWN(endpoint_file), 0, 0},
    {"--reply-timeout-ms", ARG_INT, CO(reply_timeout_ms), 1, DEFAULT_REPLY_TIMEOUT_MS},
    {"--hello-timeout-ms", ARG_INT, CO(hello_timeout_ms), 1, DEFAULT_HELLO_TIMEOUT_MS},
    {"--heartbeat-ms", ARG_INT, CO(heartbeat_ms), 1, COORDINATOR_DEFAULT_HEARTBEAT_MS},
    {"--heartbeat-misses", ARG_INT, CO(heartbeat_misses), 1,
     COORDINATOR_DEFAULT_HEARTBEAT_MISSES},
    {"--max-context", ARG_INT, CO(max_context), 1, 0},
    {"--prefill-rows", ARG_INT, CO(prefill_rows), 1, DEFAULT_PREFILL_ROWS},
    {"--micro-batches", ARG_INT, CO(micro_batches), 1, 2},
    {"--max-seqs", ARG_INT, CO(max_seqs), 1, COORDINATOR_DEFAULT_MAX_SEQS},
    {"--queue-limit", ARG_INT, CO(queue_limit), 1, COORDINATOR_DEFAULT_QUEUE},
    {"--kv-memory", ARG_INT, CO(kv_memory_mb), 1, COORDINATOR_DEFAULT_KV_MB},
    {"--deadline-ms", ARG_INT, CO(deadline_ms), 1, 0},
    {"--threads", ARG_INT, OWN(threads), 1, 0},
    {"--curve-key", ARG_STRING, CO(curve_key), 0, 0},
    {"--curve-nodes", ARG_STRING, CO(curve_nodes), 0, 0},
    {"--curve-clients", ARG_STRING, CO(curve_clients), 0, 0},
    {"--max-tokens-limit", ARG_INT, CO(max_tokens_limit), 1, 0},
    {"--max-requests-per-client", ARG_INT, CO(max_requests_per_client), 1, 0},
    {"--preload", ARG_FLAG, CO(preload), 0, 0},
    {"--no-preload", ARG_FLAG, OWN(no_preload), 0, 0},
    {"--http", ARG_STRING, CO(http), 0, 0},
    {"--api-key", ARG_STRING, CO(api_key), 0, 0},
    {"--http-url-file", ARG_STRING, OWN(http_url_file), 0, 0},
    {"--load-half-life-s", ARG_INT, CO(load_half_life_s), 1, 60},
    {"--rebalance-every", ARG_INT, CO(rebalance_every_s), 1, 0},
    {"--rebalance-threshold-pct", ARG_INT, CO(rebalance_threshold_pct), 101, 115},
    {"--rebalance-redundant", ARG_INT, CO(rebalance_redundant), 0, 0},
    {"--move-timeout-ms", ARG_INT, CO(move_timeout_ms), 1, MOVER_TIMEOUT_MS},
    {"--max-nodes", ARG_INT, CO(max_nodes), 1, 0},
};

static const option_parse_t s_parse_options[N_PARSE] = {
    {"--dtype", CO(format.dtype), wformat_parse_dtype},
    {"--quantization", CO(format.quant), wformat_parse_quant},
    {"--wire", CO(wire), wire_tensor_parse},
};

void coord_options_init(coord_options_t *self)
{
    *self = (coord_options_t){0};
    for (int i = 0; i < N_PLAIN; i++)
        if (s_options[i].kind == ARG_INT)
            *(int *)(void *)((char *)self + s_options[i].offset) = s_options[i].def;
}

void coord_options_table(coord_options_t *self, arg_opt_t table[COORD_OPTIONS_N + 1])
{
    for (int i = 0; i < N_PLAIN; i++)
        table[i] = (arg_opt_t){.name = s_options[i].name, .kind = s_options[i].kind,
                               .dest = (char *)self + s_options[i].offset,
                               .min = s_options[i].min};
    for (int i = 0; i < N_PARSE; i++)
        table[N_PLAIN + i] = (arg_opt_t){.name = s_parse_options[i].name, .kind = ARG_PARSE,
                                         .dest = (char *)self + s_parse_options[i].offset,
                                         .parse = s_parse_options[i].parse};
    table[COORD_OPTIONS_N] = (arg_opt_t)ARG_OPT_END;
}

void coord_options_help(FILE *out)
{
    fprintf(out,
            "  --placement FILE       which node hosts which expert (docs/PLACEMENT.md)\n"
            "  --placement-groups     the grouped split for group-limited routers (DeepSeek):\n"
            "                         each expert group whole on one node, so a token reaches\n"
            "                         at most topk_group nodes per layer (needs n_group >= N)\n"
            "  --replicas R           copies of each expert (group) in the default (grouped)\n"
            "                         split (default 1; not with --placement)\n"
            "  --endpoint-file FILE   also write the bound client endpoint there when ready\n"
            "  --reply-timeout-ms MS  a node that does not answer a batch in time is\n"
            "                         marked down and its work goes to replicas; without\n"
            "                         one the requests that need it fail (default %d)\n"
            "  --hello-timeout-ms MS  how long to wait for each node at start (default %d)\n"
            "  --heartbeat-ms MS      ping idle nodes this often; a down node is sent a HELLO\n"
            "                         as often and rejoins when it answers (default %d)\n"
            "  --heartbeat-misses N   heartbeat periods without an answer before a node is\n"
            "                         marked down (default %d)\n"
            "  --max-context N        positions per sequence (default: the model's, at most "
            "4096)\n"
            "  --prefill-rows N       rows per forward step: the next token of every\n"
            "                         running sequence plus prompt chunks (default %d)\n"
            "  --micro-batches 1|2    2: a step of two or more sequences runs as two\n"
            "                         micro-batches, one computed here while the nodes run\n"
            "                         the other's experts (default 2; each node then reads\n"
            "                         its experts' weights twice per layer, which pays\n"
            "                         where nodes have cores of their own: give 1 where\n"
            "                         they share the coordinator's, as cluster/local.sh does)\n"
            "  --max-seqs N           sequences generating at once (default %d)\n"
            "  --queue-limit N        requests waiting for a slot; more get BUSY (default %d)\n"
            "  --kv-memory MB         KV cache for all sequences, MiB (default %d)\n"
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
            "                         BUSY (default: no limit)\n"
            "  --preload              read the weights into memory before the endpoint is\n"
            "                         announced, so the first request does not wait for the\n"
            "                         disk, the matrices copied into memory of their own\n"
            "                         (huge pages: the fastest decode); progress on stderr\n"
            "                         (moe-mpi: the default)\n"
            "  --no-preload           read each weight on first use\n"
            "  --http HOST:PORT       also serve the OpenAI-compatible HTTP API there (port 0:\n"
            "                         a free one; the URL goes to stderr; docs/HTTP.md)\n"
            "  --api-key KEY          the HTTP API's /v1/ routes need 'Authorization: Bearer\n"
            "                         KEY' (default: open)\n"
            "  --http-url-file FILE   also write the HTTP URL there when ready\n"
            "  --load-half-life-s S   the measured load of each expert and node is a moving\n"
            "                         average with this half-life (default 60)\n"
            "  --rebalance-every S    check the imbalance (heaviest node's load over the\n"
            "                         mean) every S seconds and move experts when it is\n"
            "                         above the threshold and a plan lowers it by 5%%\n"
            "                         (default: only on moe-client rebalance)\n"
            "  --rebalance-threshold-pct P  that threshold, in percent (default 115)\n"
            "  --rebalance-redundant R  redundant copies per layer for those (default 0)\n"
            "  --move-timeout-ms MS   nodes must have loaded the experts a move gives them\n"
            "                         by then, or the move is undone; a node added must\n"
            "                         answer by then too (default %d)\n"
            "  --max-nodes N          nodes the cluster may grow to with moe-client node add\n"
            "                         (default: the nodes given + 8)\n"
            "  --wire f32|bf16|fp8    the format of the rows sent to the nodes and back:\n"
            "                         f32 exact (default); bf16 half the bytes; fp8 (E4M3,\n"
            "                         a float32 scale per 128 values) about a quarter\n"
            "                         (docs/PROTOCOL.md, section 4)\n",
            DEFAULT_REPLY_TIMEOUT_MS, DEFAULT_HELLO_TIMEOUT_MS,
            COORDINATOR_DEFAULT_HEARTBEAT_MS, COORDINATOR_DEFAULT_HEARTBEAT_MISSES,
            DEFAULT_PREFILL_ROWS, COORDINATOR_DEFAULT_MAX_SEQS, COORDINATOR_DEFAULT_QUEUE,
            COORDINATOR_DEFAULT_KV_MB, MOVER_TIMEOUT_MS);
    wformat_help(out, 25);
}

int coord_options_finish(coord_options_t *self, err_t *err)
{
    coordinator_opts_t *co = &self->co;
    if (co->placement_file && co->placement_groups)
        return err_set(err, EINVAL, "give --placement or --placement-groups, not both");
    if (co->placement_file && co->replicas)
        return err_set(err, EINVAL, "--replicas applies to the default split only; a "
                       "placement file lists replicas itself");
    if (co->preload && self->no_preload)
        return err_set(err, EINVAL, "give --preload or --no-preload, not both");
    if (self->no_preload)
        co->preload = false;
    if (!co->replicas)
        co->replicas = 1;
    if (co->micro_batches > 2)
        return err_set(err, EINVAL, "--micro-batches is 1 or 2, not %d", co->micro_batches);
    if ((co->api_key || self->http_url_file) && !co->http)
        return err_set(err, EINVAL, "--api-key and --http-url-file need --http HOST:PORT");
    if (co->api_key && !co->api_key[0])
        return err_set(err, EINVAL, "--api-key is empty");
    return 0;
}
