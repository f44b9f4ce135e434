/* moe-client: the command-line client of a moecluster coordinator.
 *
 *   moe-client --connect ENDPOINT[,ENDPOINT...] [--timeout SECONDS] COMMAND [options]
 *     generate --prompt-ids 5,17,2 | --prompt TEXT [--max-tokens N] [sampling]
 *     logits   --prompt-ids 5,17,2 --out FILE
 *     status   [--json]
 *     placement [--json]
 *     rebalance [--redundant R]
 *     node drain N [--redundant R]
 *     node add ENDPOINT [--redundant R]
 *
 * generate prints the N tokens as comma-separated ids on the last line of
 * stdout, as moe-run does (an empty line for none); with a text prompt it
 * prints the generated text instead. logits writes the
 * prompt's logits as float32 [prompt_len, vocab], row-major, little-endian,
 * the layout of moe-run --dump-logits. status prints the cluster as tables,
 * or as one JSON object with --json. Exit 0 on success, 1 on a runtime error,
 * 2 on a usage error; every error is one line on stderr.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "client/client.h"
#include "client/loadview.h"
#include "core/err.h"
#include "core/arg.h"
#include "core/idlist.h"
#include "core/mem.h"

enum { DEFAULT_TIMEOUT_S = 60, DEFAULT_MAX_TOKENS = 16 };
enum { MOE_CLIENT_MAX_ENDPOINTS = 64 }; /* coordinators one --connect may list */

typedef enum command {
    COMMAND_NONE = 0,
    COMMAND_GENERATE,
    COMMAND_LOGITS,
    COMMAND_STATUS,
    COMMAND_PLACEMENT,
    COMMAND_REBALANCE,
    COMMAND_NODE,
} command_t;

typedef struct options {
    const char *connect;     /* coordinator client endpoint */
    const char *curve_key;   /* NULL: plain TCP; else this client's NAME.key */
    const char *curve_server; /* the coordinator's .pub, with curve_key */
    int timeout_ms;          /* bound of every wait */
    command_t command;
    const char *prompt_ids;  /* generate, logits */
    const char *prompt_text; /* generate: --prompt TEXT */
    int deadline_ms;         /* generate: 0 = the coordinator's default */
    bool ignore_eos;         /* generate */
    int max_tokens;          /* generate */
    client_sampling_t sampling; /* generate: all zero is greedy */
    const char *stop_ids;    /* generate: --stop-ids LIST */
    bool stream;             /* generate: print tokens as they arrive */
    const char *out;         /* logits: output file */
    bool json;               /* status, placement */
    int redundant;           /* rebalance, node drain */
    int drain_node;          /* node drain N */
    const char *add_endpoint; /* node add ENDPOINT */
} options_t;

static const char s_global_usage[] =
    "usage: moe-client --connect ENDPOINT [--timeout SECONDS]\n"
    "                  [--curve-key FILE --curve-server FILE] COMMAND [options]\n"
    "\n"
    "Sends requests to a moecluster coordinator over its client endpoint.\n"
    "\n"
    "commands:\n"
    "  generate --prompt-ids LIST | --prompt TEXT [--max-tokens N]\n"
    "                      continuation of the prompt, printed as comma-separated\n"
    "                      token ids on one line, or as text for a text prompt\n"
    "  logits --prompt-ids LIST --out FILE\n"
    "                      the prompt's logits: float32 [prompt_len, vocab]\n"
    "  status [--json]     nodes, experts, tokens per expert, round-trip times\n"
    "  placement [--json]  the placement and its measured load per expert and node\n"
    "  rebalance [--redundant R]  move experts to balance the measured load\n"
    "  node drain N        move node N's experts away, so that it can be stopped\n"
    "  node add ENDPOINT   take a started, empty node into the cluster\n"
    "\n"
    "options:\n"
    "  --connect ENDPOINT  the coordinator's client endpoint: tcp://HOST:PORT,\n"
    "                      HOST:PORT or [IPV6]:PORT; several, comma-separated, for a\n"
    "                      cluster of several coordinators: status and placement\n"
    "                      ask each, generate and logits go to one (chosen by the\n"
    "                      process id) and on to the next when it is not there, is\n"
    "                      busy or lost experts; rebalance and node take one\n"
    "                      endpoint (docs/DEPLOY.md, \"Several coordinators\")\n"
    "  --timeout SECONDS   longest time a request may take, from sending it to its\n"
    "                      last reply (default 60); nothing listening at the\n"
    "                      endpoint is reported after 1 s\n"
    "  --curve-key FILE    talk ZeroMQ CURVE with this client's key pair (moe-keygen)\n"
    "  --curve-server FILE the coordinator's public key (its .pub)\n"
    "  --help              this text; COMMAND --help describes a command\n";

static const char s_generate_usage[] =
    "usage: moe-client --connect ENDPOINT generate (--prompt-ids LIST | --prompt TEXT)\n"
    "           [--max-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]\n"
    "           [--stop-ids LIST] [--deadline-ms MS] [--ignore-eos] [--stream]\n"
    "\n"
    "Asks the coordinator for a continuation of the prompt (greedy unless a\n"
    "temperature is given). For --prompt-ids it prints the tokens as\n"
    "comma-separated ids on the last line of stdout (an empty line when none is\n"
    "generated); for --prompt it prints the generated text. Generation ends at\n"
    "max tokens, a stop id, or one of the model's EOS tokens.\n"
    "\n"
    "  --prompt-ids LIST   prompt token ids, e.g. 5,17,2\n"
    "  --prompt TEXT       prompt text, tokenized by the coordinator with the\n"
    "                      model's tokenizer\n"
    "  --max-tokens N      tokens to generate (default 16; 0 generates none)\n"
    "  --temperature T     sample at temperature T (default 0: greedy)\n"
    "  --top-k K           sample among the K most likely tokens (0: all)\n"
    "  --top-p P           sample from the smallest set holding mass P (1: all)\n"
    "  --seed S            the same seed gives the same tokens (default 0)\n"
    "  --stop-ids LIST     stop after any of these tokens (at most 16)\n"
    "  --deadline-ms MS    fail (exit 1) if not finished MS ms after acceptance\n"
    "  --ignore-eos        do not stop at the model's EOS tokens\n"
    "  --stream            print tokens (or text) as they arrive; counts and timings\n"
    "                      go to stderr at the end\n"
    "  --help              this text\n";

static const char s_logits_usage[] =
    "usage: moe-client --connect ENDPOINT logits --prompt-ids LIST --out FILE\n"
    "\n"
    "Asks the coordinator for the logits of every prompt position and writes\n"
    "them to FILE as float32 [prompt_len, vocab], row-major, little-endian (the\n"
    "layout of moe-run --dump-logits).\n"
    "\n"
    "  --prompt-ids LIST   prompt token ids, e.g. 5,17,2\n"
    "  --out FILE          where to write the logits\n"
    "  --help              this text\n";

static const char s_placement_usage[] =
    "usage: moe-client --connect ENDPOINT placement [--json]\n"
    "\n"
    "Prints the placement with its measured load: per node the experts it hosts,\n"
    "the rows per second they take (moving average; each expert's load split\n"
    "over its copies), its share, its busy time; the imbalance (heaviest node\n"
    "over the mean); each layer's hottest experts and where they are.\n"
    "\n"
    "  --json              one JSON object: load_half_life_s, imbalance, nodes\n"
    "                      [{node_id, endpoint, up, experts [[layer, expert], ...],\n"
    "                      load, busy_ratio, busy_seconds}], expert_load [[rows per\n"
    "                      second per expert] per layer]\n"
    "  --help              this text\n";

static const char s_rebalance_usage[] =
    "usage: moe-client --connect ENDPOINT rebalance [--redundant R]\n"
    "\n"
    "Plans a placement from the measured load (moe-client placement) and moves\n"
    "to it while requests run: the nodes load the experts they gain in the\n"
    "background, the coordinator switches between two steps, then the nodes drop\n"
    "what they lost. No request fails, outputs do not change. If a node fails\n"
    "before the switch, the old placement serves on. Prints what moved and the\n"
    "imbalance (heaviest node's load over the mean) before and after.\n"
    "\n"
    "  --redundant R       extra copies per layer for the most loaded experts\n"
    "                      (default 0)\n"
    "  --help              this text\n";

static const char s_node_usage[] =
    "usage: moe-client --connect ENDPOINT node drain N [--redundant R]\n"
    "       moe-client --connect ENDPOINT node add NODE_ENDPOINT [--redundant R]\n"
    "\n"
    "drain: moves every expert of node N to the other nodes (a rebalance that\n"
    "gives node N nothing); once it returns, node N serves nothing and can be\n"
    "stopped without any request failing.\n"
    "add: the node at NODE_ENDPOINT, started empty (moe-expert --empty\n"
    "--node-id N+1 for a cluster of N nodes), joins, and a rebalance gives it\n"
    "its share; no request fails.\n"
    "\n"
    "  --redundant R       extra copies per layer, as for rebalance (default 0)\n"
    "  --help              this text\n";

static const char s_status_usage[] =
    "usage: moe-client --connect ENDPOINT status [--json]\n"
    "\n"
    "Prints the coordinator's view of the cluster: the model, each expert node\n"
    "(up or down, the experts it hosts, batches answered, round-trip times, its\n"
    "last error), the tokens routed to each expert and the requests served.\n"
    "\n"
    "  --json              one JSON object: model_path, model_arch, weights (what\n"
    "                      the coordinator holds them as), n_layers, n_experts,\n"
    "                      requests_served, nodes [{node_id, endpoint, up,\n"
    "                      experts [[layer, expert], ...], batches, rtt_last_ms,\n"
    "                      rtt_mean_ms, last_error, weights, coordinators}],\n"
    "                      expert_tokens [[per expert] per layer], metrics {the\n"
    "                      server's counters, as GET /metrics has them: docs/HTTP.md}\n"
    "  --help              this text\n";

/* --timeout SECONDS, an integer or decimal number > 0, as milliseconds (at
 * least 1) into the int dest: an arg_parse_fn. */
static int s_parse_timeout(const char *text, const char *name, void *dest, err_t *err)
{
    char *end = NULL;
    errno = 0;
    double s = strtod(text, &end);
    if (errno || end == text || *end || !(s > 0) || s > INT_MAX / 1000)
        return err_set(err, EINVAL, "%s must be a number of seconds > 0 and <= %d (got '%s')",
                       name, INT_MAX / 1000, text);
    double rounded = ceil(s * 1000.0);
    *(int *)dest = rounded < 1 ? 1 : (int)rounded;
    return 0;
}

/* A node id: a whole number 1..65535. */
static int s_parse_node(const char *text, int *node, err_t *err)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < 1 || v > 65535)
        return err_set(err, EINVAL, "node drain: '%s' is not a node id (1, 2, ...)", text);
    *node = (int)v;
    return 0;
}

/* The command named by name, with its options and help; COMMAND_NONE when
 * there is none of that name. The tables store into opt and accept the
 * global options too, so that they may come before or after the command. */
typedef struct command_desc {
    command_t command;
    const char *usage;
} command_desc_t;

static command_desc_t s_command(const char *name)
{
    if (strcmp(name, "generate") == 0)
        return (command_desc_t){COMMAND_GENERATE, s_generate_usage};
    if (strcmp(name, "logits") == 0)
        return (command_desc_t){COMMAND_LOGITS, s_logits_usage};
    if (strcmp(name, "status") == 0)
        return (command_desc_t){COMMAND_STATUS, s_status_usage};
    if (strcmp(name, "placement") == 0)
        return (command_desc_t){COMMAND_PLACEMENT, s_placement_usage};
    if (strcmp(name, "rebalance") == 0)
        return (command_desc_t){COMMAND_REBALANCE, s_rebalance_usage};
    if (strcmp(name, "node") == 0)
        return (command_desc_t){COMMAND_NODE, s_node_usage};
    return (command_desc_t){COMMAND_NONE, NULL};
}

/* The checks across options once the command is known. 0, or -1 with EINVAL
 * and err. */
static int s_check(const options_t *opt, err_t *err)
{
    if (!opt->connect)
        return err_set(err, EINVAL, "--connect ENDPOINT is required");
    if (!opt->curve_key != !opt->curve_server)
        return err_set(err, EINVAL, "CURVE needs both --curve-key and --curve-server");
    if (opt->command == COMMAND_GENERATE && opt->prompt_ids && opt->prompt_text)
        return err_set(err, EINVAL, "--prompt-ids and --prompt exclude each other: give one");
    if (opt->command == COMMAND_GENERATE && !opt->prompt_ids && !opt->prompt_text)
        return err_set(err, EINVAL, "generate needs one of --prompt-ids and --prompt");
    if (opt->command == COMMAND_LOGITS && !opt->prompt_ids)
        return err_set(err, EINVAL, "logits --prompt-ids is required");
    if (opt->command == COMMAND_LOGITS && !opt->out)
        return err_set(err, EINVAL, "logits --out FILE is required");
    return 0;
}

/* Parses argv into *opt: the global options up to the command, then the
 * command's (and the global ones again). 0, 1 when help was printed, -1
 * after a usage error (printed). */
static int s_parse_args(int argc, char **argv, options_t *opt)
{
    *opt = (options_t){.timeout_ms = DEFAULT_TIMEOUT_S * 1000,
                       .max_tokens = DEFAULT_MAX_TOKENS};
    const arg_opt_t common[] = {
        ARG_OPT_STRING("--connect", &opt->connect),
        ARG_OPT_PARSE("--timeout", &opt->timeout_ms, s_parse_timeout),
        ARG_OPT_STRING("--curve-key", &opt->curve_key),
        ARG_OPT_STRING("--curve-server", &opt->curve_server),
        ARG_OPT_HELP("--help"),
        ARG_OPT_END,
    };
    const arg_opt_t generate[] = {
        ARG_OPT_TABLE(common),
        ARG_OPT_STRING("--prompt-ids", &opt->prompt_ids),
        ARG_OPT_STRING("--prompt", &opt->prompt_text),
        ARG_OPT_INT("--max-tokens", &opt->max_tokens, 0, 0),
        ARG_OPT_FLOAT("--temperature", &opt->sampling.temperature, 0, 1e6f),
        ARG_OPT_INT("--top-k", &opt->sampling.top_k, 0, 0),
        ARG_OPT_FLOAT("--top-p", &opt->sampling.top_p, 1e-6f, 1),
        ARG_OPT_U64("--seed", &opt->sampling.seed),
        ARG_OPT_STRING("--stop-ids", &opt->stop_ids),
        ARG_OPT_FLAG("--stream", &opt->stream),
        ARG_OPT_INT("--deadline-ms", &opt->deadline_ms, 1, 0),
        ARG_OPT_FLAG("--ignore-eos", &opt->ignore_eos),
        ARG_OPT_END,
    };
    const arg_opt_t logits[] = {
        ARG_OPT_TABLE(common),
        ARG_OPT_STRING("--prompt-ids", &opt->prompt_ids),
        ARG_OPT_STRING("--out", &opt->out),
        ARG_OPT_END,
    };
    const arg_opt_t status[] = {
        ARG_OPT_TABLE(common),
        ARG_OPT_FLAG("--json", &opt->json),
        ARG_OPT_END,
    };
    const arg_opt_t rebalance[] = {
        ARG_OPT_TABLE(common),
        ARG_OPT_INT("--redundant", &opt->redundant, 0, 1 << 16),
        ARG_OPT_END,
    };
    err_t err = {0};
    int first = argc;
    const char *usage = s_global_usage;
    int rc = arg_parse(argc, argv, 1, common, ARG_STOP_AT_OPERAND, &first, &err);
    if (rc == 0 && first >= argc)
        rc = err_set(&err, EINVAL, "no command given: generate, logits, status, placement, rebalance or node");
    if (rc == 0) {
        command_desc_t cmd = s_command(argv[first]);
        opt->command = cmd.command;
        /* placement takes status's options (--json) */
        const arg_opt_t *table = cmd.command == COMMAND_GENERATE ? generate
                                 : cmd.command == COMMAND_LOGITS ? logits
                                 : cmd.command == COMMAND_REBALANCE || cmd.command == COMMAND_NODE
                                     ? rebalance
                                     : status;
        int next = first + 1;
        if (cmd.command == COMMAND_NONE)
            rc = err_set(&err, EINVAL, "unknown command '%s'", argv[first]);
        else
            usage = cmd.usage;
        if (rc == 0 && cmd.command == COMMAND_NODE) {
            /* node drain N: the verb and the node are operands */
            if (next < argc && strcmp(argv[next], "--help") == 0)
                rc = ARG_HELP_ASKED;
            else if (next + 1 >= argc ||
                     (strcmp(argv[next], "drain") != 0 && strcmp(argv[next], "add") != 0))
                rc = err_set(&err, EINVAL, "node needs 'drain N' or 'add ENDPOINT'");
            else if (strcmp(argv[next], "add") == 0)
                opt->add_endpoint = argv[next + 1];
            else if (s_parse_node(argv[next + 1], &opt->drain_node, &err) < 0)
                rc = -1;
            next += 2;
        }
        if (rc == 0)
            rc = arg_parse(argc, argv, next, table, 0, NULL, &err);
    }
    if (rc == ARG_HELP_ASKED) {
        fputs(usage, stdout);
        return 1;
    }
    if (rc == 0)
        rc = s_check(opt, &err);
    if (rc < 0) {
        fprintf(stderr, "moe-client: %s (see --help)\n", err.msg);
        return -1;
    }
    return 0;
}

/* ---- generate ------------------------------------------------------------- */

/* --stream: each token (or its text, for a text prompt) as it arrives, on
 * one line that the final chunk ends; counts and timings after it, on
 * stderr (so that a terminal does not show them glued to the text). */
static int s_print_chunk(const client_chunk_t *chunk, void *arg)
{
    const options_t *opt = arg;
    if (opt->prompt_text)
        fwrite(chunk->text, 1, chunk->text_len, stdout);
    else
        for (int i = 0; i < chunk->n_tokens; i++)
            printf(chunk->n_total - chunk->n_tokens + i > 0 ? ",%d" : "%d",
                   (int)chunk->tokens[i]);
    if (chunk->final)
        putchar('\n');
    fflush(stdout);
    if (chunk->final)
        fprintf(stderr, "moe-client: %d prompt tokens, %d generated in %.3f s (%s)\n",
                chunk->prompt_tokens, chunk->generated_tokens, chunk->seconds,
                chunk->finish_reason);
    return 0;
}

static int s_generate(client_t *client, const options_t *opt, const int32_t *prompt,
                      int n_prompt, err_t *err)
{
    client_sampling_t sampling = opt->sampling;
    if (opt->stop_ids) {
        int32_t *ids = NULL;
        int n_ids = 0;
        if (idlist_parse(opt->stop_ids, &ids, &n_ids, err) < 0)
            return err_wrap(err, "--stop-ids");
        if (n_ids > CLIENT_MAX_STOP_IDS) {
            mem_free(ids);
            return err_set(err, EINVAL, "--stop-ids: %d ids, at most %d", n_ids,
                           CLIENT_MAX_STOP_IDS);
        }
        memcpy(sampling.stop_ids, ids, (size_t)n_ids * sizeof *ids);
        sampling.n_stop = n_ids;
        mem_free(ids);
    }
    client_gen_t gen = {.prompt = prompt, .n_prompt = n_prompt,
                        .prompt_text = opt->prompt_text, .max_tokens = opt->max_tokens,
                        .sampling = sampling, .deadline_ms = opt->deadline_ms,
                        .ignore_eos = opt->ignore_eos};
    client_result_t res;
    if (client_generate_full(client, &gen, opt->stream ? s_print_chunk : NULL, (void *)opt,
                             &res, err) < 0) {
        if (opt->stream)
            printf("\n");
        return -1;
    }
    int rc = 0; /* --stream: printed as it came, the line ended by the final chunk */
    if (!opt->stream && opt->prompt_text) {
        fwrite(res.text, 1, res.text_len, stdout);
        printf("\n");
    } else if (!opt->stream) {
        char *line = idlist_format(res.tokens, res.n_tokens);
        if (line)
            printf("%s\n", line);
        else
            rc = err_set(err, ENOMEM, "out of memory formatting %d tokens", res.n_tokens);
        mem_free(line);
    }
    client_result_fini(&res);
    return rc;
}

/* ---- logits ----------------------------------------------------------------- */

/* Writes count floats as little-endian float32, whatever the host order. */
static int s_write_le(FILE *f, const float *x, size_t count)
{
    unsigned char buf[4096];
    size_t fill = 0;
    for (size_t i = 0; i < count; i++) {
        uint32_t bits;
        memcpy(&bits, &x[i], sizeof bits);
        for (int b = 0; b < 4; b++)
            buf[fill++] = (unsigned char)(bits >> (8 * b));
        if (fill == sizeof buf || i + 1 == count) {
            if (fwrite(buf, 1, fill, f) != fill)
                return -1;
            fill = 0;
        }
    }
    return 0;
}

static int s_logits(client_t *client, const options_t *opt, const int32_t *prompt,
                    int n_prompt, err_t *err)
{
    float *logits = NULL;
    int rows = 0, vocab = 0;
    if (client_logits(client, prompt, n_prompt, &logits, &rows, &vocab, err) < 0)
        return -1;
    int rc = -1;
    FILE *f = fopen(opt->out, "wb");
    if (!f) {
        err_set(err, errno, "cannot write %s: %s", opt->out, strerror(errno));
        goto done;
    }
    int written = s_write_le(f, logits, (size_t)rows * (size_t)vocab);
    int saved = errno;
    int closed = fclose(f);
    if (written < 0 || closed != 0) {
        err_set(err, EIO, "cannot write %s: %s", opt->out,
                strerror(written < 0 ? saved : errno));
        unlink(opt->out); /* no half-written file stays behind */
        goto done;
    }
    rc = 0;

done:
    mem_free(logits);
    return rc;
}

/* ---- status ----------------------------------------------------------------- */

/* Bytes per token per MoE layer: bytes over the rows dispatched (0 when none). */
static double s_per_row(uint64_t bytes, uint64_t rows)
{
    return rows ? (double)bytes / (double)rows : 0.0;
}

static json_t *s_json_u64(uint64_t v)
{
    return json_integer(v > (uint64_t)LLONG_MAX ? LLONG_MAX : (json_int_t)v);
}

/* Milliseconds as a JSON number; null for a value that JSON cannot hold. */
static json_t *s_json_ms(double ms)
{
    return isfinite(ms) ? json_real(ms) : json_null();
}

/* Takes a reference to value (jansson's _new convention); -1 when value is
 * NULL or the array could not grow. */
static int s_append(json_t *array, json_t *value)
{
    return value ? json_array_append_new(array, value) : -1;
}

static json_t *s_status_json(const client_status_t *st)
{
    json_t *nodes = json_array();
    json_t *tokens = json_array();
    for (int i = 0; nodes && i < st->n_nodes; i++) {
        const client_node_t *n = &st->nodes[i];
        json_t *experts = json_array();
        for (int j = 0; experts && j < n->n_hosted; j++)
            if (s_append(experts, json_pack("[ii]", (int)n->hosted[j].layer,
                                            (int)n->hosted[j].expert)) < 0) {
                json_decref(experts);
                experts = NULL;
            }
        json_t *node = json_pack("{s:i, s:s, s:b, s:o, s:o, s:o, s:o, s:s, s:s, s:i}",
                                 "node_id", n->node_id, "endpoint", n->endpoint,
                                 "up", (int)n->up, "experts", experts,
                                 "batches", s_json_u64(n->batches),
                                 "rtt_last_ms", s_json_ms(n->rtt_last_ms),
                                 "rtt_mean_ms", s_json_ms(n->rtt_mean_ms),
                                 "last_error", n->last_error, "weights", n->weights,
                                 "coordinators", n->coordinators);
        if (s_append(nodes, node) < 0) {
            json_decref(nodes);
            nodes = NULL;
        }
    }
    for (int l = 0; tokens && l < st->n_layers; l++) {
        json_t *row = json_array();
        for (int e = 0; row && e < st->n_experts; e++)
            if (s_append(row, s_json_u64(st->expert_tokens[(size_t)l * st->n_experts + e]))
                < 0) {
                json_decref(row);
                row = NULL;
            }
        if (s_append(tokens, row) < 0) {
            json_decref(tokens);
            tokens = NULL;
        }
    }
    const client_timing_t *t = &st->timing;
    json_t *timing = json_pack("{s:o, s:o, s:o, s:o, s:o, s:f, s:f, s:f, s:f, s:f, s:f}",
                               "tokens", s_json_u64(t->tokens),
                               "dispatch_calls", s_json_u64(t->dispatch_calls),
                               "dispatch_rows", s_json_u64(t->dispatch_rows),
                               "bytes_sent", s_json_u64(t->bytes_sent),
                               "bytes_received", s_json_u64(t->bytes_received),
                               "bytes_sent_per_token_layer",
                               s_per_row(t->bytes_sent, t->dispatch_rows),
                               "bytes_received_per_token_layer",
                               s_per_row(t->bytes_received, t->dispatch_rows),
                               "seconds_forward", t->seconds_forward,
                               "seconds_dispatch", t->seconds_dispatch,
                               "seconds_node_compute", t->seconds_node_compute,
                               "seconds_overlap", t->seconds_overlap);
    /* The server's metrics, when it sent them (core/metrics' JSON shape). */
    json_t *metrics = st->metrics[0] ? json_loads(st->metrics, 0, NULL) : NULL;
    /* "o" steals nodes, tokens, timing and metrics, also when packing fails. */
    return json_pack("{s:s, s:s, s:s, s:s, s:i, s:i, s:o, s:o, s:o, s:o, s:i, s:i, s:o, s:o}",
                     "model_path", st->model, "model_arch", st->model_arch,
                     "weights", st->weights, "wire", st->wire,
                     "n_layers", st->n_layers, "n_experts", st->n_experts,
                     "requests_served", s_json_u64(st->requests_served),
                     "nodes", nodes, "expert_tokens", tokens, "timing", timing,
                     "sequences_running", st->sequences_running,
                     "requests_queued", st->requests_queued,
                     "kv_bytes", s_json_u64(st->kv_bytes),
                     "metrics", metrics ? metrics : json_object());
}

/* "all 2 layers: 0,2" when every layer hosts the same experts, else
 * "layer 0: 0,2; layer 1: 1,3"; "none" for no expert. */
static int s_print_hosted(const client_status_t *st, const client_node_t *n)
{
    if (n->n_hosted == 0) {
        printf("none\n");
        return 0;
    }
    int rc = -1;
    int32_t *ids = mem_alloc((size_t)n->n_hosted * sizeof *ids);
    char **lines = mem_calloc((size_t)(st->n_layers > 0 ? st->n_layers : 1), sizeof *lines);
    if (!ids || !lines)
        goto done;
    bool same = true;
    for (int l = 0; l < st->n_layers; l++) {
        int k = 0;
        for (int j = 0; j < n->n_hosted; j++)
            if (n->hosted[j].layer == l)
                ids[k++] = n->hosted[j].expert;
        lines[l] = idlist_format(ids, k);
        if (!lines[l])
            goto done;
        same = same && strcmp(lines[l], lines[0]) == 0;
    }
    if (same && st->n_layers > 1) {
        printf("all %d layers: %s\n", st->n_layers, lines[0]);
    } else {
        for (int l = 0; l < st->n_layers; l++)
            printf("%slayer %d: %s", l ? "; " : "", l, *lines[l] ? lines[l] : "-");
        printf("\n");
    }
    rc = 0;

done:
    for (int l = 0; lines && l < st->n_layers; l++)
        mem_free(lines[l]);
    mem_free(lines);
    mem_free(ids);
    return rc;
}

static void s_print_ms(bool known, double ms)
{
    if (known)
        printf("  %8.2f ms", ms);
    else
        printf("  %11s", "-");
}

/* Where the coordinator's time went: its own compute (part of it, the shared
 * experts and the other micro-batch, while the routed experts were away),
 * the network and serialisation, and the expert nodes' compute. */
static void s_print_timing(const client_timing_t *t)
{
    if (t->tokens == 0)
        return;
    const double coord = t->seconds_forward - t->seconds_dispatch + t->seconds_overlap;
    const double waiting = t->seconds_dispatch - t->seconds_overlap;
    const double network = waiting > t->seconds_node_compute ? waiting - t->seconds_node_compute
                                                             : 0;
    printf("\ntime split over %" PRIu64 " token rows, %" PRIu64 " expert batches:\n",
           t->tokens, t->dispatch_calls);
    printf("  coordinator compute  %9.3f s\n", coord);
    if (t->seconds_overlap > 0)
        printf("    while experts away %9.3f s (overlapped: shared experts, the other "
               "micro-batch)\n",
               t->seconds_overlap);
    printf("  network + wire       %9.3f s\n", network);
    printf("  expert compute       %9.3f s (slowest node per batch)\n",
           t->seconds_node_compute);
    printf("  bytes on the wire    %" PRIu64 " sent, %" PRIu64 " received (%.0f per token row)\n",
           t->bytes_sent, t->bytes_received,
           (double)(t->bytes_sent + t->bytes_received) / (double)t->tokens);
}

static int s_status_table(const client_status_t *st, err_t *err)
{
    int n_up = 0;
    int width = (int)strlen("endpoint");
    for (int i = 0; i < st->n_nodes; i++) {
        n_up += st->nodes[i].up;
        int w = (int)strlen(st->nodes[i].endpoint);
        width = w > width ? w : width;
    }
    printf("model: %s (%s)\n", *st->model ? st->model : "(unknown)",
           *st->model_arch ? st->model_arch : "unknown architecture");
    if (*st->weights)
        printf("weights: %s\n", st->weights);
    if (*st->wire)
        printf("wire: %s, %.0f bytes per token per layer sent, %.0f received\n", st->wire,
               s_per_row(st->timing.bytes_sent, st->timing.dispatch_rows),
               s_per_row(st->timing.bytes_received, st->timing.dispatch_rows));
    printf("layers: %d, experts per layer: %d, requests served: %" PRIu64 "\n",
           st->n_layers, st->n_experts, st->requests_served);
    printf("nodes: %d up, %d down\n", n_up, st->n_nodes - n_up);
    printf("sequences: %d running, %d queued, %" PRIu64 " bytes of KV cache\n\n",
           st->sequences_running, st->requests_queued, st->kv_bytes);

    printf("%6s  %-4s  %-*s  %7s  %10s  %11s  %11s  %s\n", "node", "up", width, "endpoint",
           "experts", "batches", "rtt last", "rtt mean", "last error");
    for (int i = 0; i < st->n_nodes; i++) {
        const client_node_t *n = &st->nodes[i];
        printf("%6d  %-4s  %-*s  %7d  %10" PRIu64, n->node_id, n->up ? "up" : "DOWN",
               width, n->endpoint, n->n_hosted, n->batches);
        s_print_ms(n->batches > 0, n->rtt_last_ms);
        s_print_ms(n->batches > 0, n->rtt_mean_ms);
        printf("  %s\n", *n->last_error ? n->last_error : "-");
    }

    printf("\nexperts per node:\n");
    for (int i = 0; i < st->n_nodes; i++) {
        const char *held = st->nodes[i].weights;
        const int coords = st->nodes[i].coordinators;
        printf("  node %d%s%s%s", st->nodes[i].node_id, *held ? " (" : "", held,
               *held ? ")" : "");
        if (coords > 1) /* a node of several coordinators says so */
            printf(" serving %d coordinators", coords);
        printf(": ");
        if (s_print_hosted(st, &st->nodes[i]) < 0)
            return err_set(err, ENOMEM, "out of memory printing the status");
    }

    size_t cells = (size_t)st->n_layers * (size_t)st->n_experts;
    int digits = 1;
    for (size_t i = 0; i < cells; i++) {
        int d = snprintf(NULL, 0, "%" PRIu64, st->expert_tokens[i]);
        digits = d > digits ? d : digits;
    }
    printf("\ntokens per expert (one line per layer, experts 0..%d):\n", st->n_experts - 1);
    for (int l = 0; l < st->n_layers; l++) {
        printf("  layer %3d:", l);
        for (int e = 0; e < st->n_experts; e++)
            printf(" %*" PRIu64, digits, st->expert_tokens[(size_t)l * st->n_experts + e]);
        printf("\n");
    }
    s_print_timing(&st->timing);
    return 0;
}

static int s_status(client_t *client, const options_t *opt, err_t *err)
{
    client_status_t *st = client_status(client, err);
    if (!st)
        return -1;
    int rc = -1;
    if (opt->json) {
        json_t *root = s_status_json(st);
        if (!root) {
            err_set(err, ENOMEM, "out of memory building the status JSON");
        } else if (json_dumpf(root, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER) < 0) {
            err_set(err, EIO, "cannot write the status to stdout");
        } else {
            printf("\n");
            rc = 0;
        }
        json_decref(root);
    } else {
        rc = s_status_table(st, err);
    }
    client_status_destroy(&st);
    return rc;
}

static int s_placement(client_t *client, const options_t *opt, err_t *err)
{
    client_status_t *st = client_status(client, err);
    if (!st)
        return -1;
    int rc = -1;
    if (opt->json) {
        json_t *root = loadview_json(st);
        if (!root)
            err_set(err, ENOMEM, "out of memory building the placement JSON");
        else if (json_dumpf(root, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER) < 0)
            err_set(err, EIO, "cannot write the placement to stdout");
        else
            rc = printf("\n") < 0 ? err_set(err, EIO, "cannot write to stdout") : 0;
        json_decref(root);
    } else if (loadview_print(st, stdout) < 0) {
        err_set(err, EIO, "cannot write the placement to stdout");
    } else {
        rc = 0;
    }
    client_status_destroy(&st);
    return rc;
}

static int s_rebalance(client_t *client, const options_t *opt, err_t *err)
{
    client_move_t move;
    if (opt->add_endpoint ? client_node_add(client, opt->add_endpoint, opt->redundant, &move,
                                            err) < 0
                          : client_rebalance(client, opt->redundant, opt->drain_node, &move,
                                             err) < 0)
        return -1;
    if (opt->drain_node)
        printf("node %d drained: ", opt->drain_node);
    printf("%s\n", move.summary);
    printf("imbalance: %.3f -> %.3f (heaviest node / mean)\n", move.imbalance_before,
           move.imbalance_after);
    return 0;
}

/* Connects to endpoint and runs the command there. */
static int s_run(const options_t *opt, const char *endpoint, const int32_t *prompt,
                 int n_prompt, err_t *err)
{
    int rc = -1;
    client_t *client = opt->curve_key ? client_connect_curve(endpoint, opt->timeout_ms,
                                                             opt->curve_key, opt->curve_server,
                                                             err)
                                      : client_connect(endpoint, opt->timeout_ms, err);
    if (!client)
        return -1;
    switch (opt->command) {
    case COMMAND_GENERATE: rc = s_generate(client, opt, prompt, n_prompt, err); break;
    case COMMAND_LOGITS: rc = s_logits(client, opt, prompt, n_prompt, err); break;
    case COMMAND_STATUS: rc = s_status(client, opt, err); break;
    case COMMAND_PLACEMENT: rc = s_placement(client, opt, err); break;
    case COMMAND_REBALANCE:
    case COMMAND_NODE: rc = s_rebalance(client, opt, err); break;
    case COMMAND_NONE: break;
    }
    client_destroy(&client);
    return rc;
}

/* Whether a request that failed with errno e may go to the next coordinator:
 * this one is not there, closed the link, is full (BUSY) or lost experts
 * (UNAVAILABLE); a stream only before it printed anything (the first two). */
static bool s_may_fail_over(const options_t *opt, int e)
{
    if (e == ECONNREFUSED || e == EBUSY)
        return true;
    return !opt->stream && (e == ECONNRESET || e == EHOSTUNREACH);
}

/* --connect EP[,EP...]: several coordinators of one cluster (docs/DEPLOY.md,
 * "Several coordinators"). status and placement ask each in turn; generate
 * and logits go to one, chosen by the process id so that concurrent clients
 * spread, and on to the next when it fails in a way another may not;
 * rebalance and node need the one coordinator of a cluster. */
static int s_run_all(const options_t *opt, const int32_t *prompt, int n_prompt, err_t *err)
{
    char *list = mem_strdup(opt->connect);
    if (!list)
        return err_set(err, ENOMEM, "out of memory");
    const char *eps[MOE_CLIENT_MAX_ENDPOINTS];
    int n = 0, rc = -1;
    for (char *save = NULL, *ep = strtok_r(list, ",", &save); ep;
         ep = strtok_r(NULL, ",", &save)) {
        if (n == MOE_CLIENT_MAX_ENDPOINTS) {
            err_set(err, EINVAL, "--connect: more than %d endpoints", MOE_CLIENT_MAX_ENDPOINTS);
            goto done;
        }
        eps[n++] = ep;
    }
    if (n == 0) {
        err_set(err, EINVAL, "--connect: no endpoint in '%s'", opt->connect);
        goto done;
    }
    if (n > 1 && (opt->command == COMMAND_REBALANCE || opt->command == COMMAND_NODE)) {
        err_set(err, EINVAL, "%s changes the placement, which a cluster of several "
                "coordinators does not do (docs/OPERATIONS.md): give one endpoint",
                opt->command == COMMAND_NODE ? "node" : "rebalance");
        goto done;
    }
    if (opt->command == COMMAND_STATUS || opt->command == COMMAND_PLACEMENT) {
        if (n == 1) {
            rc = s_run(opt, eps[0], prompt, n_prompt, err);
            goto done;
        }
        int n_failed = 0;
        for (int i = 0; i < n; i++) {
            err_t one = {0};
            if (!opt->json)
                printf("%s== coordinator %d at %s\n", i ? "\n" : "", i + 1, eps[i]);
            fflush(stdout);
            if (s_run(opt, eps[i], prompt, n_prompt, &one) < 0) {
                fprintf(stderr, "moe-client: coordinator %d: %s\n", i + 1, one.msg);
                n_failed++;
            }
        }
        rc = n_failed ? err_set(err, EIO, "%d of %d coordinators did not answer", n_failed, n)
                      : 0;
        goto done;
    }
    const int first = n > 1 ? (int)(getpid() % n) : 0;
    for (int t = 0; t < n; t++) {
        const char *ep = eps[(first + t) % n];
        *err = (err_t){0};
        rc = s_run(opt, ep, prompt, n_prompt, err);
        if (rc == 0 || t == n - 1 || !s_may_fail_over(opt, errno))
            break;
        fprintf(stderr, "moe-client: %s; trying %s\n", err->msg, eps[(first + t + 1) % n]);
    }
done:
    mem_free(list);
    return rc;
}

int main(int argc, char **argv)
{
    options_t opt;
    int parsed = s_parse_args(argc, argv, &opt);
    if (parsed != 0)
        return parsed > 0 ? 0 : 2;
    json_set_alloc_funcs(mem_alloc, mem_free); /* jansson too goes through core/mem */

    err_t err = {0};
    int32_t *prompt = NULL;
    int n_prompt = 0;
    if (opt.prompt_ids &&
        idlist_option("moe-client", "--prompt-ids", opt.prompt_ids, &prompt, &n_prompt) < 0)
        return 2;
    int rc = s_run_all(&opt, prompt, n_prompt, &err);
    if (rc == 0 && fflush(stdout) != 0)
        rc = err_set(&err, errno, "cannot write to stdout: %s", strerror(errno));
    if (rc < 0)
        fprintf(stderr, "moe-client: %s\n", err.msg);
    mem_free(prompt);
    return rc < 0 ? 1 : 0;
}
