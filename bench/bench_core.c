/* bench-core: single-process prefill and decode speed of a model, stated as
 * ratios to what this machine measured in the same run:
 *   prefill ratio = achieved FLOP/s / OpenBLAS sgemm peak (same threads)
 *   decode ratio  = tokens/s x weight bytes read per token / read bandwidth
 * Each figure is the median of --repeat runs after one warm-up run.
 *
 *   bench-core --model DIR [--threads 1,2] [--prompt-len 128] [--decode 64]
 *              [--repeat 5] [--dtype TYPE] [--quantization Q]
 * (the weights' format, engine/wformat.h; bytes per token are those held)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/machine.h"
#include "bench/workload.h"
#include "core/arg.h"
#include "core/blas.h"
#include "core/idlist.h"
#include "core/mem.h"
#include "core/timer.h"
#include "engine/forward.h"
#include "engine/weights.h"
#include "engine/wformat.h"

enum { MAX_REPEAT = 101, MAX_THREAD_COUNTS = 8 };
static const size_t READ_BUFFER_BYTES = (size_t)1 << 30; /* far past any cache */

typedef struct options {
    const char *model;
    const char *threads;
    int prompt_len;
    int decode;
    int repeat;
    wformat_t format;
} options_t;

static void s_usage(FILE *out)
{
    fprintf(out, "usage: bench-core --model DIR [--threads 1,2] [--prompt-len 128]\n"
                 "                  [--decode 64] [--repeat 5] [--dtype TYPE]\n"
                 "                  [--quantization Q]\n");
    wformat_help(out, 22);
}

/* --model is required (an arg_check_fn). */
static int s_check(void *ctx, err_t *err)
{
    const options_t *opt = ctx;
    return opt->model ? 0 : err_set(err, EINVAL, "--model is required");
}

/* 0 with *opt filled, or -1 after a usage error (printed); exits after --help. */
static int s_parse(int argc, char **argv, options_t *opt)
{
    *opt = (options_t){.threads = "1,2"};
    arg_opt_t size[WORKLOAD_SIZE_OPTIONS + 1];
    workload_size_options(&opt->prompt_len, &opt->decode, &opt->repeat, MAX_REPEAT, size);
    const arg_opt_t table[] = {
        ARG_OPT_STRING("--model", &opt->model),
        ARG_OPT_STRING("--threads", &opt->threads),
        ARG_OPT_TABLE(size),
        ARG_OPT_PARSE("--dtype", &opt->format.dtype, wformat_parse_dtype),
        ARG_OPT_PARSE("--quantization", &opt->format.quant, wformat_parse_quant),
        ARG_OPT_END,
    };
    return arg_parse_main("bench-core", argc, argv, table, s_usage, s_check, opt);
}

/* Measures one thread count; prints one block of figures. The machine's
 * sgemm peak and read bandwidth are measured right before and right after
 * the model's repetitions (not between them: on this virtual machine a 1 GiB
 * read just before a prefill slows that prefill threefold, and a model run
 * slows the measurements after it), and each ratio divides the model's median
 * by the machine's best. */
static int s_bench_threads(const options_t *opt, const weights_t *w, int threads,
                           err_t *err)
{
    const config_t *cfg = &w->cfg;
    const int ctx = opt->prompt_len + opt->decode + 1, n = opt->repeat;
    const double flops = workload_prefill_flops(cfg, opt->prompt_len);
    const double bytes = workload_decode_weight_bytes(w);
    int rc = -1;
    blas_set_threads(threads);

    forward_t *fw = forward_new(w, opt->prompt_len, ctx, NULL, NULL, err);
    kvcache_t *kv = fw ? kvcache_new(cfg, ctx, err) : NULL;
    float *logits = mem_alloc((size_t)cfg->vocab_size * sizeof(float));
    int32_t *prompt = mem_alloc((size_t)opt->prompt_len * sizeof(int32_t));
    double peak[2 * MAX_REPEAT], bw[2 * MAX_REPEAT];
    double prefill_tps[MAX_REPEAT], decode_tps[MAX_REPEAT];
    if (!fw || !kv || !logits || !prompt)
        goto done;
    workload_prompt(prompt, opt->prompt_len, cfg->vocab_size);
    double tp, td; /* a first run pages the weights in */
    if (workload_run(fw, kv, cfg->vocab_size, prompt, opt->prompt_len, opt->decode, logits,
                   &tp, &td, err) < 0)
        goto done;
    for (int r = 0; r < n; r++) {
        peak[r] = machine_sgemm_peak(2048, 1);
        bw[r] = machine_read_bandwidth(threads, 1);
    }
    for (int r = 0; r < n; r++) {
        if (workload_run(fw, kv, cfg->vocab_size, prompt, opt->prompt_len, opt->decode,
                       logits, &tp, &td, err) < 0)
            goto done;
        prefill_tps[r] = opt->prompt_len / tp;
        decode_tps[r] = opt->decode / td;
    }
    for (int r = n; r < 2 * n; r++) {
        peak[r] = machine_sgemm_peak(2048, 1);
        bw[r] = machine_read_bandwidth(threads, 1);
    }
    /* A peak is the best the machine showed, so the machine figures are the
     * largest of their measurements; the model's figures are medians. */
    const double peak_med = workload_max(peak, 2 * n), bw_med = workload_max(bw, 2 * n);
    const double prefill_med = workload_median(prefill_tps, n), decode_med = workload_median(decode_tps, n);
    double gemv_bw = machine_sgemv_bandwidth(32000, 1024, 5);
    printf("threads %d (model: medians of %d repetitions; machine: best)\n", threads, n);
    printf("  machine: sgemm peak %.1f GFLOP/s, read bandwidth %.1f GB/s, "
           "sgemv stream %.1f GB/s\n", peak_med / 1e9, bw_med / 1e9, gemv_bw / 1e9);
    printf("  prefill %d tokens: %.1f tokens/s, %.1f GFLOP/s, ratio to sgemm peak %.2f "
           "(goal >= 0.6)\n", opt->prompt_len, prefill_med,
           prefill_med * flops / opt->prompt_len / 1e9,
           prefill_med * flops / opt->prompt_len / peak_med);
    printf("  decode %d tokens: %.2f tokens/s, %.1f MB weights/token, %.1f GB/s, "
           "ratio to read bandwidth %.2f (goal >= 0.6)\n", opt->decode, decode_med,
           bytes / 1e6, decode_med * bytes / 1e9, decode_med * bytes / bw_med);
    rc = 0;

done:
    mem_free(prompt);
    mem_free(logits);
    kvcache_destroy(&kv);
    forward_destroy(&fw);
    return rc;
}

int main(int argc, char **argv)
{
    blas_ensure_native(argv);
    options_t opt;
    if (s_parse(argc, argv, &opt) < 0)
        return 2;
    err_t err = {0};
    int32_t *threads = NULL;
    int n_threads = 0;
    if (idlist_option("bench-core", "--threads", opt.threads, &threads, &n_threads) < 0)
        return 2;
    const weights_select_t all = {.dense = true, .hosts = weights_hosts_all,
                                  .format = opt.format, .log = stderr,
                                  .name = "bench-core", .resident = true};
    weights_t *w = weights_load(opt.model, &all, &err);
    int rc = w ? 0 : -1;
    if (w && machine_init(READ_BUFFER_BYTES) < 0) {
        err_set(&err, ENOMEM, "out of memory for the %zu-byte read buffer", READ_BUFFER_BYTES);
        rc = -1;
    }
    if (w) {
        char held[96];
        printf("bench-core: model %s, openblas %s kernels, weights %s (%.1f MiB)\n",
               opt.model, blas_core_name(), weights_describe(w, held, sizeof held),
               (double)weights_bytes(w) / (1 << 20));
        for (int i = 0; rc == 0 && i < n_threads && i < MAX_THREAD_COUNTS; i++)
            rc = s_bench_threads(&opt, w, threads[i], &err);
    }
    if (rc < 0)
        fprintf(stderr, "bench-core: %s\n", err.msg);
    weights_destroy(&w);
    mem_free(threads);
    machine_release();
    return rc < 0 ? 1 : 0;
}
