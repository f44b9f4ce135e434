/* bench-cluster: a running cluster against moe-run's single-process engine,
 * measured in the same run, repetitions interleaved so that both see the same
 * machine:
 *   decode ratio  = cluster decode tokens/s / single-process decode tokens/s
 *   prefill ratio = cluster prefill tokens/s / single-process prefill tokens/s
 * plus the wire format and its bytes per token per MoE layer, each way, and
 * the cluster's time split (coordinator compute, network and serialisation,
 * expert compute), from the coordinator's status counters. Medians of
 * --repeat runs after a warm-up.
 *
 *   bench-cluster --model DIR --endpoint EP [--threads 2] [--prompt-len 128]
 *                 [--decode 64] [--repeat 5] [--dtype TYPE] [--quantization Q]
 *                 [--wire f32|bf16|fp8]
 * (the single process's weights' format: give the cluster's; --wire: the
 * format the cluster was started with, refused when its STATUS says another)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench/workload.h"
#include "client/client.h"
#include "core/arg.h"
#include "core/blas.h"
#include "core/mem.h"
#include "core/timer.h"
#include "engine/weights.h"
#include "engine/wformat.h"
#include "proto/wire_tensor.h"

enum { MAX_REPEAT = 51 };

typedef struct options {
    const char *model;
    const char *endpoint;
    int threads;
    int prompt_len;
    int decode;
    int repeat;
    wformat_t format;
    wire_tensor_format_t wire;
    bool wire_given;
} options_t;

/* Times of the first and last token of a generation, client side. */
typedef struct stream_times {
    double first;
    double last;
} stream_times_t;

static int s_on_chunk(const client_chunk_t *chunk, void *arg)
{
    stream_times_t *t = arg;
    if (chunk->n_tokens > 0) {
        double now = timer_now();
        if (t->first == 0)
            t->first = now;
        t->last = now;
    }
    return 0;
}

/* One generation of n_decode + 1 tokens through the cluster: prefill is the
 * time to the first token, decode the time from the first to the last. */
static int s_cluster_once(client_t *c, const int32_t *prompt, int n_prompt, int n_decode,
                          double *t_prefill, double *t_decode, err_t *err)
{
    stream_times_t t = {0};
    /* Every token counts: a random-weight model's EOS must not end it early. */
    client_gen_t gen = {.prompt = prompt, .n_prompt = n_prompt, .max_tokens = n_decode + 1,
                        .ignore_eos = true};
    client_result_t res;
    const double t0 = timer_now();
    if (client_generate_full(c, &gen, s_on_chunk, &t, &res, err) < 0)
        return -1;
    client_result_fini(&res);
    *t_prefill = t.first - t0;
    *t_decode = t.last - t.first;
    return 0;
}

static void s_usage(FILE *out)
{
    fprintf(out, "usage: bench-cluster --model DIR --endpoint EP [--threads 2] "
                 "[--prompt-len 128] [--decode 64] [--repeat 5]\n"
                 "                     [--dtype TYPE] [--quantization Q] [--wire f32|bf16|fp8]\n"
                 "The single process holds the weights as --dtype/--quantization say: give\n"
                 "the ones the cluster runs. --wire: the format the cluster's rows travel in\n"
                 "(its coordinator's --wire); a cluster whose STATUS says another is refused.\n");
    wformat_help(out, 22);
}

/* --model and --endpoint are required (an arg_check_fn). */
static int s_check(void *ctx, err_t *err)
{
    const options_t *o = ctx;
    if (!o->model || !o->endpoint)
        return err_set(err, EINVAL, "--model and --endpoint are required");
    return 0;
}

/* --wire: the format, and that it was given (dest: the options_t). */
static int s_parse_wire(const char *text, const char *name, void *dest, err_t *err)
{
    options_t *o = dest;
    if (wire_tensor_parse(text, name, &o->wire, err) < 0)
        return -1;
    o->wire_given = true;
    return 0;
}

/* 0 with *o filled, or -1 after a usage error (printed); exits after --help. */
static int s_parse(int argc, char **argv, options_t *o)
{
    *o = (options_t){.threads = 2};
    arg_opt_t size[WORKLOAD_SIZE_OPTIONS + 1];
    workload_size_options(&o->prompt_len, &o->decode, &o->repeat, MAX_REPEAT, size);
    const arg_opt_t table[] = {
        ARG_OPT_STRING("--model", &o->model),
        ARG_OPT_STRING("--endpoint", &o->endpoint),
        ARG_OPT_INT("--threads", &o->threads, 1, 0),
        ARG_OPT_TABLE(size),
        ARG_OPT_PARSE("--dtype", &o->format.dtype, wformat_parse_dtype),
        ARG_OPT_PARSE("--quantization", &o->format.quant, wformat_parse_quant),
        ARG_OPT_PARSE("--wire", o, s_parse_wire),
        ARG_OPT_END,
    };
    return arg_parse_main("bench-cluster", argc, argv, table, s_usage, s_check, o);
}

static void s_report(const options_t *o, const config_t *cfg, const char *wire,
                     double *sp_p, double *sp_d, double *cl_p, double *cl_d,
                     const client_timing_t *t0, const client_timing_t *t1)
{
    const int n = o->repeat;
    const double sp_prefill = o->prompt_len / workload_median(sp_p, n);
    const double sp_decode = o->decode / workload_median(sp_d, n);
    const double cl_prefill = o->prompt_len / workload_median(cl_p, n);
    const double cl_decode = o->decode / workload_median(cl_d, n);
    /* tokens x MoE layers dispatched (a dense layer sends nothing) */
    const double rows = (double)(t1->dispatch_rows - t0->dispatch_rows);
    const double sent = (double)(t1->bytes_sent - t0->bytes_sent);
    const double received = (double)(t1->bytes_received - t0->bytes_received);
    const double forward = t1->seconds_forward - t0->seconds_forward;
    const double dispatch = t1->seconds_dispatch - t0->seconds_dispatch;
    const double compute = t1->seconds_node_compute - t0->seconds_node_compute;
    printf("single process (%d threads): prefill %.1f tokens/s, decode %.2f tokens/s\n",
           o->threads, sp_prefill, sp_decode);
    printf("cluster:                     prefill %.1f tokens/s, decode %.2f tokens/s\n",
           cl_prefill, cl_decode);
    printf("ratios cluster / single process (medians of %d): prefill %.2f (goal >= 0.95), "
           "decode %.2f (goal >= 0.9)\n", n, cl_prefill / sp_prefill, cl_decode / sp_decode);
    printf("wire %s: bytes per token per layer %.0f sent, %.0f received (a row is %zu bytes "
           "in %s, %d in f32)\n", wire, rows > 0 ? sent / rows : 0,
           rows > 0 ? received / rows : 0,
           wire_tensor_row_bytes(o->wire, cfg->hidden_size), wire, cfg->hidden_size * 4);
    /* The coordinator's shared-expert work inside the dispatch window ran while
     * the routed experts were away: it counts as coordinator compute, not as
     * waiting. */
    const double overlap = t1->seconds_overlap - t0->seconds_overlap;
    const double waiting = dispatch - overlap;
    const double network = waiting > compute ? waiting - compute : 0;
    printf("cluster time split (all measured runs): coordinator compute %.1f%%, "
           "network + serialisation %.1f%%, expert compute %.1f%%\n",
           100 * (forward - waiting) / forward, 100 * network / forward,
           100 * compute / forward);
    if (overlap > 0)
        printf("shared experts computed while the routed experts were away: %.3f s, "
               "%.1f%% of the experts' round trips\n", overlap, 100 * overlap / dispatch);
}

int main(int argc, char **argv)
{
    blas_ensure_native(argv);
    options_t o;
    if (s_parse(argc, argv, &o) < 0)
        return 2;
    blas_set_threads(o.threads);
    err_t err = {0};
    int rc = -1;
    const weights_select_t all = {.dense = true, .hosts = weights_hosts_all,
                                  .format = o.format, .log = stderr,
                                  .name = "bench-cluster", .resident = true};
    weights_t *w = weights_load(o.model, &all, &err);
    const config_t *cfg = w ? &w->cfg : NULL;
    const int ctx = o.prompt_len + o.decode + 2;
    forward_t *fw = w ? forward_new(w, o.prompt_len, ctx, NULL, NULL, &err) : NULL;
    kvcache_t *kv = fw ? kvcache_new(cfg, ctx, &err) : NULL;
    client_t *c = kv ? client_connect(o.endpoint, 600000, &err) : NULL;
    float *logits = cfg ? mem_alloc((size_t)cfg->vocab_size * sizeof(float)) : NULL;
    int32_t *prompt = cfg ? mem_alloc((size_t)o.prompt_len * sizeof(int32_t)) : NULL;
    client_status_t *before = NULL, *after = NULL;
    double sp_p[MAX_REPEAT], sp_d[MAX_REPEAT], cl_p[MAX_REPEAT], cl_d[MAX_REPEAT], tp, td;
    if (!c)
        goto done;
    if (!logits || !prompt) {
        err_set(&err, ENOMEM, "out of memory");
        goto done;
    }
    printf("bench-cluster: model %s, openblas %s kernels\n", o.model, blas_core_name());
    workload_prompt(prompt, o.prompt_len, cfg->vocab_size);
    /* Warm-up: page the weights in, on both sides. */
    if (workload_run(fw, kv, cfg->vocab_size, prompt, o.prompt_len, o.decode, logits, &tp, &td,
                     &err) < 0 ||
        s_cluster_once(c, prompt, o.prompt_len, o.decode, &tp, &td, &err) < 0)
        goto done;
    if (!(before = client_status(c, &err)))
        goto done;
    const char *wire = *before->wire ? before->wire : "f32"; /* older coordinators: f32 */
    wire_tensor_format_t got;
    if (wire_tensor_parse(wire, "the cluster's wire format", &got, &err) < 0)
        goto done;
    if (o.wire_given && got != o.wire) {
        err_set(&err, EINVAL, "the cluster at %s runs --wire %s, not %s", o.endpoint, wire,
                wire_tensor_format_name(o.wire));
        goto done;
    }
    o.wire = got;
    for (int r = 0; r < o.repeat; r++)
        if (workload_run(fw, kv, cfg->vocab_size, prompt, o.prompt_len, o.decode, logits,
                         &sp_p[r], &sp_d[r], &err) < 0 ||
            s_cluster_once(c, prompt, o.prompt_len, o.decode, &cl_p[r], &cl_d[r], &err) < 0)
            goto done;
    if (!(after = client_status(c, &err)))
        goto done;
    s_report(&o, cfg, wire, sp_p, sp_d, cl_p, cl_d, &before->timing, &after->timing);
    rc = 0;

done:
    if (rc < 0)
        fprintf(stderr, "bench-cluster: %s\n", err.msg);
    client_status_destroy(&before);
    client_status_destroy(&after);
    client_destroy(&c);
    mem_free(prompt);
    mem_free(logits);
    kvcache_destroy(&kv);
    forward_destroy(&fw);
    weights_destroy(&w);
    return rc < 0 ? 1 : 0;
}
