/* moe-mkmodel: writes a random-weight model in the Hugging Face layout,
 * with a byte-level BPE tokenizer trained on the built-in corpus
 * (tokenizer/trainer.h) that covers exactly the model's vocab_size ids, those
 * past the learned merges filled with made-up words (so that a random model
 * prints readable, if meaningless, text); its <|startoftext|> and
 * <|endoftext|> are the config's BOS and EOS ids.
 *
 *   moe-mkmodel --arch NAME --preset tiny|small|medium --seed S --out DIR
 *               [--dtype f32|f16|bf16] [--shard-bytes N] [--force]
 *
 * A DIR that already holds a model (s_is_model_file) is refused unless
 * --force, which first removes those files, so that no shard of the old
 * model is left beside the new one; other files in DIR are kept.
 *
 * NAME is any architecture synth writes (synth_arch_names(): mixtral,
 * qwen2_moe, qwen3_moe, olmoe, hunyuan_v1_moe, deepseek_v2, deepseek_v3,
 * gpt_oss); every one has the three presets (synth.h).
 *
 * Exit status: 0 on success, 2 for a usage error (bad option, unknown
 * architecture or preset), 1 when writing fails.
 */
#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat/chat_template.h"
#include "core/arg.h"
#include "core/err.h"
#include "core/mem.h"
#include "core/path.h"
#include "core/timer.h"
#include "model/config.h"
#include "model/synth.h"
#include "tokenizer/trainer.h"

enum { EXIT_USAGE = 2 };

static void s_usage(FILE *out)
{
    fprintf(
        out,
        "usage: %s --preset NAME --out DIR [options]\n"
        "Writes a random-weight model (config.json, generation_config.json,\n"
        "safetensors) and a byte-level BPE tokenizer trained on a built-in\n"
        "English text (tokenizer.json, tokenizer_config.json) in the Hugging\n"
        "Face layout to DIR, creating DIR if needed.\n"
        "\n"
        "  --arch NAME         architecture (default mixtral):\n"
        "                      %s\n"
        "  --preset NAME       model size: %s\n"
        "  --seed S            weights seed, an unsigned integer (default 0);\n"
        "                      the same seed gives the same weights\n"
        "  --out DIR           output directory\n"
        "  --dtype T           f32 (default), f16 or bf16\n"
        "  --shard-bytes N     largest tensor bytes per shard, with an "
        "optional\n"
        "                      K, M or G suffix (powers of 1024); 0 (default)\n"
        "                      writes one model.safetensors\n"
        "  --force             replace the model DIR already holds (its\n"
        "                      config, tokenizer and safetensors files)\n"
        "  -h, --help          this text\n"
        "\n"
        "Exit status: 0 done, 1 writing failed or DIR holds a model (no --force),\n"
        "2 usage error.\n",
        "moe-mkmodel", synth_arch_names(), synth_preset_names("mixtral"));
}

/* --shard-bytes: an unsigned decimal with an optional K/M/G suffix (an
 * arg_parse_fn into a uint64_t). */
static int s_parse_bytes(const char *text, const char *name, void *dest, err_t *err)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    unsigned shift = 0;
    bool ok = *text >= '0' && *text <= '9' && errno == 0 && end != text;
    if (ok && *end) {
        switch (*end) {
        case 'k': case 'K': shift = 10; break;
        case 'm': case 'M': shift = 20; break;
        case 'g': case 'G': shift = 30; break;
        default: ok = false;
        }
        end++;
    }
    if (!ok || *end || (shift && v > (UINT64_MAX >> shift)))
        return err_set(err, EINVAL, "%s wants a byte count (e.g. 500M), not '%s'", name, text);
    *(uint64_t *)dest = (uint64_t)v << shift;
    return 0;
}

/* --dtype (an arg_parse_fn into an st_dtype_t). */
static int s_parse_dtype(const char *text, const char *name, void *dest, err_t *err)
{
    st_dtype_t *out = dest;
    if (strcmp(text, "f32") == 0)
        *out = ST_F32;
    else if (strcmp(text, "f16") == 0)
        *out = ST_F16;
    else if (strcmp(text, "bf16") == 0)
        *out = ST_BF16;
    else
        return err_set(err, EINVAL, "%s wants f32, f16 or bf16, not '%s'", name, text);
    return 0;
}

typedef struct options {
    const char *arch, *preset, *out;
    bool force;
    synth_opts_t opts;
} options_t;

/* A file that moe-mkmodel writes (or wrote with other options): a model's. */
static bool s_is_model_file(const char *name)
{
    static const char *patterns[] = {
        "config.json", "generation_config.json", "tokenizer.json",
        "tokenizer_config.json", "model.safetensors", "model.safetensors.index.json",
        "model-[0-9]*-of-[0-9]*.safetensors",
    };
    for (size_t i = 0; i < sizeof patterns / sizeof patterns[0]; i++)
        if (fnmatch(patterns[i], name, 0) == 0)
            return true;
    return false;
}

/* Refuses a dir that holds a model's files, or (force) removes them. A dir
 * that does not exist yet is fine. */
static int s_clear_out(const char *dir, bool force, err_t *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : err_set(err, errno, "cannot read %s: %s", dir,
                                             strerror(errno));
    int rc = 0;
    struct dirent *ent;
    while (rc == 0 && (ent = readdir(d))) {
        if (!s_is_model_file(ent->d_name))
            continue;
        if (!force) {
            rc = err_set(err, EEXIST, "%s already holds a model (%s): give --force to "
                         "replace it", dir, ent->d_name);
            break;
        }
        char *path = path_join(dir, ent->d_name);
        if (!path)
            rc = err_set(err, ENOMEM, "out of memory for a path");
        else if (unlink(path) != 0)
            rc = err_set(err, errno, "cannot remove the old %s: %s", path, strerror(errno));
        mem_free(path);
    }
    closedir(d);
    return rc;
}

/* --preset and --out (an arg_check_fn). */
static int s_check(void *ctx, err_t *err)
{
    const options_t *o = ctx;
    if (!o->preset || !o->out)
        return err_set(err, EINVAL, "--preset and --out are required");
    return 0;
}

int main(int argc, char **argv)
{
    const char *prog = "moe-mkmodel";
    options_t o = {.arch = "mixtral", .opts = {.seed = 0, .dtype = ST_F32, .shard_bytes = 0}};

    const arg_opt_t table[] = {
        ARG_OPT_STRING("--arch", &o.arch),
        ARG_OPT_STRING("--preset", &o.preset),
        ARG_OPT_U64("--seed", &o.opts.seed),
        ARG_OPT_STRING("--out", &o.out),
        ARG_OPT_PARSE("--dtype", &o.opts.dtype, s_parse_dtype),
        ARG_OPT_PARSE("--shard-bytes", &o.opts.shard_bytes, s_parse_bytes),
        ARG_OPT_FLAG("--force", &o.force),
        ARG_OPT_HELP("-h"),
        ARG_OPT_END,
    };
    if (arg_parse_main(prog, argc, argv, table, s_usage, s_check, &o) < 0)
        return EXIT_USAGE;

    const char *arch = o.arch, *preset = o.preset, *out = o.out;
    synth_opts_t opts = o.opts;
    err_t err = {0};
    config_t cfg;
    if (synth_preset(&cfg, arch, preset, &err)) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return EXIT_USAGE;
    }
    /* The tokenizer's special tokens come first (ids 0, 1, 2), so the
     * config's BOS and EOS ids are their indexes. */
    trainer_opts_t topts = {
        .vocab_size = cfg.vocab_size,
        .specials = {"<|padding|>", "<|startoftext|>", "<|endoftext|>"},
        .n_specials = 3,
        .pad = 0,
        .bos = 1,
        .eos = 2,
        .model_max_length = cfg.max_position_embeddings,
        .fill_words = 1, /* a random model prints words, not empty reserved ids */
        .chat_template = chat_template_for_family(arch), /* for /v1/chat/completions */
    };
    cfg.bos_token_id = topts.bos;
    cfg.n_eos = 1;
    cfg.eos_token_ids[0] = topts.eos;
    double t0 = timer_now();
    synth_stats_t stats;
    trainer_stats_t tstats;
    size_t corpus_len;
    const char *corpus = trainer_corpus(&corpus_len);
    /* A medium model takes seconds to write: progress on stderr then. */
    progress_t progress;
    if (synth_plan(&cfg, &opts, &stats, &err)) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return EXIT_FAILURE;
    }
    progress_init(&progress, stderr, prog, "writing weights", stats.data_bytes);
    opts.progress = &progress;
    if (s_clear_out(out, o.force, &err) < 0 || synth_write(out, &cfg, &opts, &stats, &err) ||
        trainer_write(out, corpus, corpus_len, &topts, &tstats, &err)) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return EXIT_FAILURE;
    }
    progress_fini(&progress);
    printf("%s: wrote %s/%s (seed %" PRIu64 ", %s) to %s: %zu tensors, "
           "%.1f MB in %zu file%s, %.2f s\n",
           prog, arch, preset, opts.seed, opts.dtype == ST_F32   ? "f32"
                                         : opts.dtype == ST_F16 ? "f16"
                                                                : "bf16",
           out, stats.n_tensors, (double)stats.data_bytes / 1e6, stats.n_files,
           stats.n_files == 1 ? "" : "s", timer_now() - t0);
    printf("%s: tokenizer of %d ids: 3 special, 256 bytes, %d merges learned "
           "from %zu bytes of text in %.3f s, %d filler words\n",
           prog, (int)topts.vocab_size, (int)tstats.n_merges, corpus_len,
           tstats.seconds, (int)tstats.n_filled);
    return 0;
}
