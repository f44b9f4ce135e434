/* sampler: see sampler.h.
 *
 * One sampling step works on a candidate list in the scratch: top-k fills it
 * with the k best tokens by a bounded heap (O(vocab log k)); otherwise it
 * holds the whole vocabulary. Top-p sorts the candidates only after dropping
 * those that cannot be in the nucleus, so a 32000-token vocabulary is not
 * sorted whole. Sorting is our own heapsort: deterministic, and unlike libc
 * qsort it never allocates.
 */
#include "engine/sampler.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/mem.h"
#include "engine/forward.h"

/* One candidate token of a sampling step. */
typedef struct cand {
    double p;      /* unnormalised probability exp((logit - max) / T) */
    float logit;   /* the raw logit: the ranking key */
    int32_t id;    /* token id */
} cand_t;

struct sampler {
    int vocab;                /* logits per step */
    sampler_params_t params;  /* validated copy */
    uint64_t rng[4];          /* xoshiro256** state, never all zero */
    cand_t *cand;             /* (vocab,) scratch of one step */
};

sampler_params_t sampler_params_default(void)
{
    return (sampler_params_t){.temperature = 1.0f, .top_p = 1.0f};
}

int sampler_params_check(const sampler_params_t *params, int vocab, err_t *err)
{
    assert(params);
    const sampler_params_t *p = params;
    if (vocab < 1)
        return err_set(err, EINVAL, "sampler vocabulary must have at least 1 token "
                                    "(got %d)", vocab);
    if (!isfinite(p->temperature) || p->temperature < 0.0f)
        return err_set(err, EINVAL, "temperature must be finite and >= 0 (got %g)",
                       (double)p->temperature);
    if (p->top_k < 0)
        return err_set(err, EINVAL, "top_k must be >= 0, 0 for off (got %d)", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return err_set(err, EINVAL, "top_p must be in (0, 1], 1 for off (got %g)",
                       (double)p->top_p);
    if (p->max_tokens < 0)
        return err_set(err, EINVAL, "max_tokens must be >= 0, 0 for no limit (got %d)",
                       p->max_tokens);
    if (p->n_stop < 0 || p->n_stop > SAMPLER_MAX_STOP)
        return err_set(err, EINVAL, "%d stop ids given, at most %d allowed", p->n_stop,
                       SAMPLER_MAX_STOP);
    for (int i = 0; i < p->n_stop; i++)
        if (p->stop[i] < 0 || p->stop[i] >= vocab)
            return err_set(err, EINVAL, "stop id %d (#%d) outside the vocabulary [0, %d)",
                           (int)p->stop[i], i, vocab);
    if (p->n_eos < 0 || p->n_eos > SAMPLER_MAX_EOS)
        return err_set(err, EINVAL, "%d EOS ids given, at most %d allowed", p->n_eos,
                       SAMPLER_MAX_EOS);
    for (int i = 0; i < p->n_eos; i++)
        if (p->eos[i] < 0 || p->eos[i] >= vocab)
            return err_set(err, EINVAL, "EOS id %d (#%d) outside the vocabulary [0, %d)",
                           (int)p->eos[i], i, vocab);
    return 0;
}

/* ---- random numbers: xoshiro256** (Blackman & Vigna), splitmix64 seeding -- */

static uint64_t s_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* splitmix64 outputs are a bijection of distinct inputs, so four of them are
 * never all zero: the state is valid for every seed. */
static void s_seed(uint64_t rng[4], uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        rng[i] = s_splitmix64(&seed);
}

static uint64_t s_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t s_next(uint64_t s[4])
{
    uint64_t result = s_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s_rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static double s_uniform(uint64_t s[4])
{
    return (double)(s_next(s) >> 11) * 0x1.0p-53;
}

/* ---- construction ------------------------------------------------------------ */

sampler_t *sampler_new(int vocab, const sampler_params_t *params, err_t *err)
{
    assert(params);
    if (sampler_params_check(params, vocab, err) < 0)
        return NULL;
    sampler_t *self = mem_calloc(1, sizeof *self);
    if (!self)
        goto fail;
    self->cand = mem_alloc((size_t)vocab * sizeof *self->cand);
    if (!self->cand)
        goto fail;
    self->vocab = vocab;
    self->params = *params;
    s_seed(self->rng, params->seed);
    return self;

fail:
    sampler_destroy(&self);
    err_set(err, ENOMEM, "out of memory for a sampler of %d tokens", vocab);
    return NULL;
}

void sampler_destroy(sampler_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    int saved = errno;
    mem_free((*self_p)->cand);
    mem_free(*self_p);
    *self_p = NULL;
    errno = saved;
}

int sampler_reset(sampler_t *self, const sampler_params_t *params, err_t *err)
{
    assert(self);
    assert(params);
    if (sampler_params_check(params, self->vocab, err) < 0)
        return -1;
    self->params = *params;
    s_seed(self->rng, params->seed);
    return 0;
}

const sampler_params_t *sampler_params(const sampler_t *self)
{
    assert(self);
    return &self->params;
}

/* ---- ranking: logit descending, ties to the lower id ------------------------ */

static bool s_better(const cand_t *a, const cand_t *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

/* Restores the heap below i, where the root holds the worst candidate. */
static void s_sift_down(cand_t *c, int i, int n)
{
    for (;;) {
        int worst = i, l = 2 * i + 1, r = l + 1;
        if (l < n && s_better(&c[worst], &c[l]))
            worst = l;
        if (r < n && s_better(&c[worst], &c[r]))
            worst = r;
        if (worst == i)
            return;
        cand_t t = c[i];
        c[i] = c[worst];
        c[worst] = t;
        i = worst;
    }
}

static void s_heapify(cand_t *c, int n)
{
    for (int i = n / 2 - 1; i >= 0; i--)
        s_sift_down(c, i, n);
}

/* Sorts a worst-at-root heap into best-first order. */
static void s_heap_sort(cand_t *c, int n)
{
    for (int end = n - 1; end > 0; end--) {
        cand_t t = c[0];
        c[0] = c[end];
        c[end] = t;
        s_sift_down(c, 0, end);
    }
}

/* The k best tokens of logits, best first, into c[0..k). */
static void s_top_k(cand_t *c, const float *logits, int vocab, int k)
{
    for (int i = 0; i < k; i++)
        c[i] = (cand_t){.logit = logits[i], .id = i};
    s_heapify(c, k);
    for (int i = k; i < vocab; i++) {
        cand_t x = {.logit = logits[i], .id = i};
        if (s_better(&x, &c[0])) {
            c[0] = x;
            s_sift_down(c, 0, k);
        }
    }
    s_heap_sort(c, k);
}

/* ---- sampling ------------------------------------------------------------------ */

/* Rejects NaN and +inf, and logits with nothing finite; sets *max. */
static int s_check_logits(const float *logits, int vocab, float *max, err_t *err)
{
    float mx = -INFINITY;
    for (int i = 0; i < vocab; i++) {
        if (isnan(logits[i]) || logits[i] == INFINITY)
            return err_set(err, EINVAL, "logit of token %d is %g: cannot sample", i,
                           (double)logits[i]);
        if (logits[i] > mx)
            mx = logits[i];
    }
    if (mx == -INFINITY)
        return err_set(err, EINVAL, "all %d logits are -inf: no token to sample", vocab);
    *max = mx;
    return 0;
}

int sampler_sample(sampler_t *self, const float *logits, int32_t *token, err_t *err)
{
    assert(self);
    assert(logits);
    assert(token);
    const sampler_params_t *p = &self->params;
    const int vocab = self->vocab;
    float max = 0.0f;
    if (s_check_logits(logits, vocab, &max, err) < 0)
        return -1;
    if (p->temperature == 0.0f) {
        *token = forward_argmax(logits, vocab);
        return 0;
    }

    /* Temperature and top-k: temperature > 0 keeps the ranking, so top-k
     * ranks raw logits; the probabilities use (logit - max) / T, which is
     * softmax(logit / T) up to the normalisation. */
    cand_t *c = self->cand;
    int n = vocab;
    bool sorted = false;
    if (p->top_k > 0 && p->top_k < vocab) {
        n = p->top_k;
        s_top_k(c, logits, vocab, n);
        sorted = true;
    } else {
        for (int i = 0; i < vocab; i++)
            c[i] = (cand_t){.logit = logits[i], .id = i};
    }
    const double inv_t = 1.0 / (double)p->temperature;
    double total = 0.0;
    for (int i = 0; i < n; i++)
        total += c[i].p = exp(((double)c[i].logit - (double)max) * inv_t);

    /* Top-p over the renormalised survivors. Before sorting, drop tokens with
     * less than (1 - top_p) / (n - 1) of the mass, but never the best (its p
     * is exp(0) = 1): at most n - 1 are dropped, holding less than 1 - top_p
     * together, so what remains is a prefix of the ranking holding more than
     * top_p, and it contains the nucleus. */
    double mass = total;
    if (p->top_p < 1.0f && n > 1) {
        const double top_p = (double)p->top_p;
        if (!sorted) {
            const double cutoff =
                fmin((1.0 - top_p) / (double)(n - 1) * total, 1.0);
            int m = 0;
            for (int i = 0; i < n; i++)
                if (c[i].p >= cutoff)
                    c[m++] = c[i];
            n = m;
            s_heapify(c, n);
            s_heap_sort(c, n);
        }
        double cum = 0.0;
        int keep = 0;
        while (keep < n) {
            cum += c[keep++].p;
            if (cum >= top_p * total)
                break;
        }
        n = keep;
        mass = cum;
    }

    /* One draw: the first candidate whose cumulative mass exceeds u * mass.
     * Rounding can leave u * mass beyond the last sum: take the last
     * candidate with a non-zero probability. */
    const double r = s_uniform(self->rng) * mass;
    double cum = 0.0;
    int last = 0;
    for (int i = 0; i < n; i++) {
        if (c[i].p > 0.0)
            last = i;
        cum += c[i].p;
        if (r < cum) {
            *token = c[i].id;
            return 0;
        }
    }
    *token = c[last].id;
    return 0;
}

/* ---- ending ---------------------------------------------------------------------- */

sampler_stop_t sampler_check_stop(const sampler_t *self, int32_t token, int n_generated)
{
    assert(self);
    const sampler_params_t *p = &self->params;
    for (int i = 0; i < p->n_eos; i++)
        if (token == p->eos[i])
            return SAMPLER_STOP_EOS;
    for (int i = 0; i < p->n_stop; i++)
        if (token == p->stop[i])
            return SAMPLER_STOP_ID;
    if (p->max_tokens > 0 && n_generated >= p->max_tokens)
        return SAMPLER_STOP_LENGTH;
    return SAMPLER_CONTINUE;
}

const char *sampler_stop_name(sampler_stop_t why)
{
    switch (why) {
    case SAMPLER_CONTINUE:    return "continue";
    case SAMPLER_STOP_EOS:    return "eos";
    case SAMPLER_STOP_ID:     return "stop";
    case SAMPLER_STOP_LENGTH: return "length";
    }
    return "unknown";
}

int sampler_logprobs(const float *logits, int vocab, int32_t token, int k, float *logprob,
                     int32_t *top_ids, float *top_lps)
{
    float max = -INFINITY;
    for (int i = 0; i < vocab; i++)
        if (logits[i] > max)
            max = logits[i];
    double sum = 0;
    for (int i = 0; i < vocab; i++)
        sum += exp((double)logits[i] - max);
    const double lse = max + log(sum);
    *logprob = (float)((double)logits[token] - lse);
    if (k > vocab)
        k = vocab;
    int n = 0;
    /* Insertion into a best-first list of at most k: k is small (<= 20). */
    for (int i = 0; i < vocab && k > 0; i++) {
        const float v = logits[i];
        if (n == k && !(v > logits[top_ids[n - 1]]))
            continue;
        int j = n < k ? n++ : n - 1;
        while (j > 0 && v > logits[top_ids[j - 1]]) {
            top_ids[j] = top_ids[j - 1];
            j--;
        }
        top_ids[j] = i;
    }
    for (int j = 0; j < n; j++)
        top_lps[j] = (float)((double)logits[top_ids[j]] - lse);
    return n;
}
