/* logitdiff: how far one model's next-token distributions are from a
 * reference's, accumulated position by position: KL(p_ref || p_test) of the
 * softmaxes (float64 log-softmax) and top-1 agreement. bench-logit-diff runs
 * it over two logit files (issue 12's accuracy of quantization). */
#ifndef MOE_BENCH_LOGITDIFF_H
#define MOE_BENCH_LOGITDIFF_H

typedef struct logitdiff {
    long positions;
    long agree;       /* positions whose argmax is the same (ties: lowest id) */
    double kl_sum;    /* nats */
    double kl_max;
} logitdiff_t;

enum { LOGITDIFF_BAD_REF = 1, LOGITDIFF_BAD_TEST = 2 };

/* Adds one position's logits (vocab of each) to d. scratch: 2 * vocab
 * doubles. 0, or -1 with EINVAL and d untouched when a logit is not finite;
 * *bad (may be NULL) then says which row: LOGITDIFF_BAD_REF or _TEST. */
int logitdiff_add(logitdiff_t *d, const float *ref, const float *test, int vocab,
                  double *scratch, int *bad);

/* Mean KL in nats and the fraction of agreeing positions; 0 when empty. */
double logitdiff_kl_mean(const logitdiff_t *d);
double logitdiff_top1(const logitdiff_t *d);

#endif /* MOE_BENCH_LOGITDIFF_H */
