/* bench-logit-diff: how far one model's next-token distributions are from a
 * reference's, over the positions of one prompt (issue 12's accuracy of
 * quantization: a quantized model against the same model in float32).
 *
 *   bench-logit-diff --ref REF.f32 --test TEST.f32 --vocab V
 *
 * Both files hold float32 logits [positions, vocab], row-major, little-endian,
 * as `moe-run --dump-logits` and llama.cpp's `run.mjs --prompt-logits` write
 * them, and must have the same size. For each position p = softmax(ref) and
 * q = softmax(test), computed as float64 log-softmax; prints the mean (and
 * largest) KL(p || q) in nats and the top-1 agreement (the same argmax; ties
 * go to the lowest id). The last line is machine-readable:
 *   positions N kl_mean X kl_max Y top1 F
 * Exit 0, 1 on a bad file (named, with the position), 2 on a usage error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bench/logitdiff.h"
#include "core/arg.h"
#include "core/err.h"
#include "core/mem.h"

typedef struct options {
    const char *ref;
    const char *test;
    int vocab;
} options_t;

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: bench-logit-diff --ref REF.f32 --test TEST.f32 --vocab V\n"
            "\n"
            "Compares two float32 [positions, vocab] logit files (moe-run --dump-logits,\n"
            "run.mjs --prompt-logits): mean and largest KL(softmax(ref) || softmax(test))\n"
            "in nats, and the fraction of positions with the same top-1 token.\n");
}

/* Every option is required (an arg_check_fn). */
static int s_check(void *ctx, err_t *err)
{
    const options_t *opt = ctx;
    if (!opt->ref || !opt->test || opt->vocab <= 0)
        return err_set(err, EINVAL, "--ref, --test and --vocab are required");
    return 0;
}

/* Positions in path (its size a whole number of vocab-float rows) into *n. */
static int s_positions(const char *path, int vocab, long *n, err_t *err)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return err_set(err, errno, "cannot read %s: %s", path, strerror(errno));
    const long long row = (long long)vocab * (long long)sizeof(float);
    if (st.st_size == 0 || st.st_size % row != 0)
        return err_set(err, EINVAL, "%s: %lld bytes is not a whole number of %d-float rows",
                       path, (long long)st.st_size, vocab);
    *n = (long)(st.st_size / row);
    return 0;
}

static int s_compare(const options_t *opt, logitdiff_t *d, err_t *err)
{
    long n_ref = 0, n_test = 0;
    if (s_positions(opt->ref, opt->vocab, &n_ref, err) < 0 ||
        s_positions(opt->test, opt->vocab, &n_test, err) < 0)
        return -1;
    if (n_ref != n_test)
        return err_set(err, EINVAL, "%s has %ld positions, %s has %ld", opt->ref, n_ref,
                       opt->test, n_test);
    int rc = -1;
    const size_t v = (size_t)opt->vocab;
    FILE *fr = fopen(opt->ref, "rb");
    FILE *fs = fopen(opt->test, "rb");
    float *r = mem_alloc(v * sizeof(float));
    float *s = mem_alloc(v * sizeof(float));
    double *scratch = mem_alloc(2 * v * sizeof(double));
    if (!fr || !fs) {
        err_set(err, errno, "cannot read %s: %s", fr ? opt->test : opt->ref, strerror(errno));
        goto done;
    }
    if (!r || !s || !scratch) {
        err_set(err, ENOMEM, "out of memory for %d-float rows", opt->vocab);
        goto done;
    }
    for (long pos = 0; pos < n_ref; pos++) {
        if (fread(r, sizeof(float), v, fr) != v || fread(s, sizeof(float), v, fs) != v) {
            err_set(err, EIO, "%s or %s: short read at position %ld", opt->ref, opt->test, pos);
            goto done;
        }
        int bad = 0;
        if (logitdiff_add(d, r, s, opt->vocab, scratch, &bad) < 0) {
            err_set(err, EINVAL, "%s: a logit at position %ld is not finite",
                    bad == LOGITDIFF_BAD_REF ? opt->ref : opt->test, pos);
            goto done;
        }
    }
    rc = 0;

done:
    mem_free(scratch);
    mem_free(s);
    mem_free(r);
    if (fs)
        fclose(fs);
    if (fr)
        fclose(fr);
    return rc;
}

int main(int argc, char **argv)
{
    options_t opt = {0};
    const arg_opt_t table[] = {
        ARG_OPT_STRING("--ref", &opt.ref),
        ARG_OPT_STRING("--test", &opt.test),
        ARG_OPT_INT("--vocab", &opt.vocab, 1, 0),
        ARG_OPT_END,
    };
    if (arg_parse_main("bench-logit-diff", argc, argv, table, s_usage, s_check, &opt) < 0)
        return 2;
    err_t err = {0};
    logitdiff_t d = {0};
    if (s_compare(&opt, &d, &err) < 0) {
        fprintf(stderr, "bench-logit-diff: %s\n", err.msg);
        return 1;
    }
    const double kl_mean = logitdiff_kl_mean(&d), top1 = logitdiff_top1(&d);
    printf("%ld positions: mean KL %.3e nats (largest %.3e), top-1 agreement %.4f (%ld/%ld)\n",
           d.positions, kl_mean, d.kl_max, top1, d.agree, d.positions);
    printf("positions %ld kl_mean %.6e kl_max %.6e top1 %.6f\n", d.positions, kl_mean,
           d.kl_max, top1);
    return 0;
}
