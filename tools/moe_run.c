/* moe-run: single-process inference, the reference every cluster result is
 * compared against.
 *
 *   moe-run --model DIR --prompt-ids 1,2,3 --max-tokens N
 *           [--dump-logits FILE] [--threads N] [--ignore-eos]
 *           [--dtype auto|float32|bfloat16|float16] [--quantization none|q8_0|q4_0]
 *
 * Prints up to N greedy tokens as comma-separated ids on the last line of
 * stdout, ending after the first of the model's EOS tokens (genconfig.h), as
 * the coordinator does. --dump-logits writes the prompt's logits as float32 [prompt_len,
 * vocab], row-major, little-endian. One line on stderr says what the weights
 * are held as (engine/wformat.h) and their bytes. Exit 0 on success, 1 on a runtime error,
 * 2 on a usage error; every error is one line on stderr.
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arg.h"
#include "core/blas.h"
#include "core/err.h"
#include "core/mem.h"
#include "engine/forward.h"
#include "engine/kvcache.h"
#include "engine/sampler.h"
#include "engine/weights.h"
#include "engine/wformat.h"
#include "core/idlist.h"
#include "model/genconfig.h"

enum { PREFILL_CHUNK_ROWS = 256 }; /* rows per prefill chunk: bounds scratch memory */

typedef struct options {
    const char *model;
    const char *prompt_ids;
    const char *dump_logits;
    int max_tokens;
    int threads;
    bool ignore_eos;
    wformat_t format;
} options_t;

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: moe-run --model DIR --prompt-ids ID,ID,... [--max-tokens N]\n"
            "               [--dump-logits FILE] [--threads N] [--ignore-eos]\n"
            "               [--dtype TYPE] [--quantization Q]\n"
            "\n"
            "Runs a Mixture-of-Experts model in this one process and prints the greedy\n"
            "continuation of the prompt as comma-separated token ids on one line; it\n"
            "ends after an EOS token of the model (generation_config.json or config.json).\n"
            "\n"
            "  --model DIR         Hugging Face model folder (config.json, *.safetensors)\n"
            "  --prompt-ids LIST   prompt token ids, e.g. 5,17,2\n"
            "  --max-tokens N      tokens to generate (default 16; 0 generates none)\n"
            "  --dump-logits FILE  write the prompt's logits: float32 [prompt_len, vocab],\n"
            "                      row-major, little-endian\n"
            "  --threads N         OpenBLAS threads (default: all cores)\n"
            "  --ignore-eos        generate max tokens whatever they are\n");
    wformat_help(out, 22);
    fprintf(out, "  --help              this text\n"
            "\n"
            "stderr says what the weights are held as, e.g. \"weights: bf16 (q4_0 experts)\".\n");
}

/* The options every run needs (an arg_check_fn). */
static int s_check(void *ctx, err_t *err)
{
    const options_t *opt = ctx;
    if (!opt->model || !opt->prompt_ids)
        return err_set(err, EINVAL, "--model and --prompt-ids are required");
    return 0;
}

/* 0 with *opt filled, or -1 after a usage error (printed); exits after --help. */
static int s_parse_args(int argc, char **argv, options_t *opt)
{
    *opt = (options_t){.max_tokens = 16};
    const arg_opt_t table[] = {
        ARG_OPT_STRING("--model", &opt->model),
        ARG_OPT_STRING("--prompt-ids", &opt->prompt_ids),
        ARG_OPT_INT("--max-tokens", &opt->max_tokens, 0, 0),
        ARG_OPT_STRING("--dump-logits", &opt->dump_logits),
        ARG_OPT_INT("--threads", &opt->threads, 1, 0),
        ARG_OPT_FLAG("--ignore-eos", &opt->ignore_eos),
        ARG_OPT_PARSE("--dtype", &opt->format.dtype, wformat_parse_dtype),
        ARG_OPT_PARSE("--quantization", &opt->format.quant, wformat_parse_quant),
        ARG_OPT_END,
    };
    return arg_parse_main("moe-run", argc, argv, table, s_usage, s_check, opt);
}

static int s_write_logits(const char *path, const float *logits, size_t count, err_t *err)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return err_set(err, errno, "cannot write %s: %s", path, strerror(errno));
    size_t written = fwrite(logits, sizeof(float), count, f);
    int closed = fclose(f);
    if (written != count || closed != 0)
        return err_set(err, EIO, "cannot write %s: %s", path, strerror(errno));
    return 0;
}

/* The sampler's settings: greedy, max_tokens, the model's EOS ids unless
 * ignored (gen has none then). */
static sampler_params_t s_greedy(const options_t *opt, const genconfig_t *gen)
{
    sampler_params_t p = sampler_params_default();
    p.temperature = 0;
    p.max_tokens = opt->max_tokens;
    p.n_eos = gen->n_eos < SAMPLER_MAX_EOS ? gen->n_eos : SAMPLER_MAX_EOS;
    for (int i = 0; i < p.n_eos; i++)
        p.eos[i] = gen->eos_token_ids[i];
    return p;
}

/* Prefill, optional logits dump, then greedy decoding through the sampler (as
 * the coordinator decodes); prints the tokens. */
static int s_generate(const options_t *opt, const weights_t *w, const int32_t *prompt,
                      int n_prompt, err_t *err)
{
    genconfig_t gen = {0};
    if (!opt->ignore_eos && genconfig_load(&gen, opt->model, &w->cfg, err) < 0)
        return -1;
    const config_t *cfg = &w->cfg;
    const int vocab = cfg->vocab_size;
    int rc = -1;
    forward_t *fw = NULL;
    kvcache_t *kv = NULL;
    float *logits = NULL;
    int32_t *out = NULL;
    sampler_t *sampler = NULL;
    long total = (long)n_prompt + opt->max_tokens;

    if (total > cfg->max_position_embeddings) {
        err_set(err, EINVAL, "prompt (%d) plus max tokens (%d) exceed the model's %d "
                "positions", n_prompt, opt->max_tokens, cfg->max_position_embeddings);
        goto done;
    }
    int chunk = n_prompt < PREFILL_CHUNK_ROWS ? n_prompt : PREFILL_CHUNK_ROWS;
    fw = forward_new(w, chunk, (int)total, NULL, NULL, err);
    kv = fw ? kvcache_new(cfg, (int)total, err) : NULL;
    size_t logit_rows = opt->dump_logits ? (size_t)n_prompt : 1;
    logits = mem_alloc(logit_rows * vocab * sizeof(float));
    out = mem_calloc((size_t)opt->max_tokens + 1, sizeof(int32_t));
    sampler_params_t params = s_greedy(opt, &gen);
    sampler = fw && kv ? sampler_new(vocab, &params, err) : NULL;
    if (!sampler)
        goto done;
    if (!logits || !out) {
        err_set(err, ENOMEM, "out of memory for %zu logits", logit_rows * vocab);
        goto done;
    }
    if (forward_run(fw, kv, prompt, n_prompt,
                    opt->dump_logits ? FORWARD_LOGITS_ALL : FORWARD_LOGITS_LAST,
                    logits, err) < 0)
        goto done;
    if (opt->dump_logits &&
        s_write_logits(opt->dump_logits, logits, (size_t)n_prompt * vocab, err) < 0)
        goto done;

    const float *last = logits + (logit_rows - 1) * vocab;
    int n_out = 0;
    for (int i = 0; i < opt->max_tokens; i++) {
        if (sampler_sample(sampler, last, &out[n_out++], err) < 0)
            goto done;
        if (sampler_check_stop(sampler, out[i], n_out) != SAMPLER_CONTINUE)
            break; /* the last token needs no forward pass */
        if (forward_run(fw, kv, &out[i], 1, FORWARD_LOGITS_LAST, logits, err) < 0)
            goto done;
        last = logits;
    }
    char *line = idlist_format(out, n_out);
    if (!line) {
        err_set(err, ENOMEM, "out of memory formatting the output");
        goto done;
    }
    printf("%s\n", line);
    mem_free(line);
    rc = 0;

done:
    sampler_destroy(&sampler);
    mem_free(out);
    mem_free(logits);
    kvcache_destroy(&kv);
    forward_destroy(&fw);
    return rc;
}

int main(int argc, char **argv)
{
    blas_ensure_native(argv);
    options_t opt;
    if (s_parse_args(argc, argv, &opt) < 0)
        return 2;
    blas_setup("moe-run", opt.threads);

    err_t err = {0};
    int32_t *prompt = NULL;
    int n_prompt = 0;
    if (idlist_option("moe-run", "--prompt-ids", opt.prompt_ids, &prompt, &n_prompt) < 0)
        return 2;
    const weights_select_t all = {.dense = true, .hosts = weights_hosts_all,
                                  .format = opt.format, .log = stderr,
                                  .name = "moe-run", .resident = true};
    weights_t *w = weights_load(opt.model, &all, &err);
    if (w) {
        char held[96];
        fprintf(stderr, "moe-run: weights: %s, %.1f MiB\n",
                weights_describe(w, held, sizeof held), (double)weights_bytes(w) / (1 << 20));
    }
    int rc = w ? s_generate(&opt, w, prompt, n_prompt, &err) : -1;
    if (rc < 0)
        fprintf(stderr, "moe-run: %s\n", err.msg);
    weights_destroy(&w);
    mem_free(prompt);
    return rc < 0 ? 1 : 0;
}
