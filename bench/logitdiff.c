/* logitdiff: see logitdiff.h. */
#include "bench/logitdiff.h"

#include <errno.h>
#include <math.h>

/* logp[i] = x[i] - logsumexp(x), in float64; the argmax into *top. -1 when a
 * logit is not finite (llama.cpp's dump leaves NaN where it got no logit). */
static int s_log_softmax(const float *x, int n, double *logp, int *top)
{
    int best = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(x[i]))
            return -1;
        if (x[i] > x[best])
            best = i;
    }
    const double m = x[best];
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += exp((double)x[i] - m);
    const double lse = m + log(sum);
    for (int i = 0; i < n; i++)
        logp[i] = (double)x[i] - lse;
    *top = best;
    return 0;
}

int logitdiff_add(logitdiff_t *d, const float *ref, const float *test, int vocab,
                  double *scratch, int *bad)
{
    double *lp = scratch, *lq = scratch + vocab;
    int top_r, top_t, which = 0;
    if (s_log_softmax(ref, vocab, lp, &top_r) < 0)
        which = LOGITDIFF_BAD_REF;
    else if (s_log_softmax(test, vocab, lq, &top_t) < 0)
        which = LOGITDIFF_BAD_TEST;
    if (bad)
        *bad = which;
    if (which) {
        errno = EINVAL;
        return -1;
    }
    double kl = 0;
    for (int i = 0; i < vocab; i++)
        kl += exp(lp[i]) * (lp[i] - lq[i]);
    kl = kl > 0 ? kl : 0; /* rounding can leave -1e-17 for equal rows */
    d->kl_sum += kl;
    d->kl_max = kl > d->kl_max ? kl : d->kl_max;
    d->agree += top_r == top_t;
    d->positions++;
    return 0;
}

double logitdiff_kl_mean(const logitdiff_t *d)
{
    return d->positions ? d->kl_sum / (double)d->positions : 0;
}

double logitdiff_top1(const logitdiff_t *d)
{
    return d->positions ? (double)d->agree / (double)d->positions : 0;
}
