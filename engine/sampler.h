/* sampler: the next token of one sequence, from its logits.
 *
 * The order is Hugging Face generate()'s: logits / temperature, then top-k,
 * then top-p (nucleus), then softmax and one draw. Temperature 0 is greedy
 * decoding: the argmax, lowest index among equals (forward_argmax's rule);
 * top_k, top_p and seed are then ignored and no random number is drawn.
 *
 * Ordering: tokens are ranked by logit descending, ties to the lower id. Top-k
 * keeps exactly the k first of that ranking (Hugging Face keeps every token
 * tied with the k-th; we keep the lower ids, so the result never has more than
 * k tokens). Top-p then keeps the smallest prefix of the survivors whose
 * renormalised probability mass is >= top_p, and always at least one token.
 * The softmax and the cumulative sums are accumulated in double.
 *
 * Reproducibility and isolation: each sampler_t owns its own random state
 * (xoshiro256**, seeded through splitmix64) and its own scratch. Sampling
 * never reads or writes another sampler or any global, so one seed gives the
 * same draws whatever else is in the batch. Each sampled (temperature > 0)
 * token consumes exactly one 64-bit draw.
 *
 * Memory: one sampler_t per sequence, with 16 * vocab bytes of scratch
 * allocated once in sampler_new() (512 KiB for a 32000-token vocabulary);
 * sampler_sample() never allocates. A server reuses a slot's sampler for the
 * next request with sampler_reset(). A sampler_t belongs to one thread.
 */
#ifndef MOE_ENGINE_SAMPLER_H
#define MOE_ENGINE_SAMPLER_H

#include <stdint.h>

#include "core/err.h"

enum {
    SAMPLER_MAX_STOP = 16, /* stop token ids one request may give */
    SAMPLER_MAX_EOS = 8,   /* end-of-sequence ids one model may declare */
};

/* One sequence's sampling settings: the request's, plus the model's EOS ids.
 * Start from sampler_params_default() and change what the request asks for. */
typedef struct sampler_params {
    float temperature;  /* >= 0 and finite; 0 = greedy */
    int top_k;          /* >= 0; 0 = off; values >= vocab are off too */
    float top_p;        /* in (0, 1]; 1 = off */
    uint64_t seed;      /* seeds this sequence's random state */
    int max_tokens;     /* >= 0: generated tokens before SAMPLER_STOP_LENGTH;
                           0 = no limit here (the context bounds it) */
    int n_stop;         /* 0 .. SAMPLER_MAX_STOP */
    int32_t stop[SAMPLER_MAX_STOP]; /* the request's stop token ids, [0, vocab) */
    int n_eos;          /* 0 .. SAMPLER_MAX_EOS */
    int32_t eos[SAMPLER_MAX_EOS];   /* the model's EOS token ids, [0, vocab) */
} sampler_params_t;

/* Why a sequence ends after a token, in order of precedence. */
typedef enum sampler_stop {
    SAMPLER_CONTINUE = 0,  /* it does not end */
    SAMPLER_STOP_EOS,      /* the token is one of the model's EOS ids */
    SAMPLER_STOP_ID,       /* the token is one of the request's stop ids */
    SAMPLER_STOP_LENGTH,   /* max_tokens tokens have been generated */
} sampler_stop_t;

typedef struct sampler sampler_t;

/* Temperature 1, top_k 0, top_p 1, seed 0, max_tokens 0, no stop or EOS ids:
 * plain sampling from softmax(logits). */
sampler_params_t sampler_params_default(void);

/* Checks params for a vocabulary of vocab tokens: temperature finite and
 * >= 0, top_k >= 0, top_p in (0, 1] (not NaN), max_tokens >= 0, counts of
 * stop and EOS ids within their maxima, every id in [0, vocab), vocab >= 1.
 * Returns 0, or -1 with errno and err EINVAL naming the field and value. */
int sampler_params_check(const sampler_params_t *params, int vocab, err_t *err);

/* A sampler for logits of vocab tokens, seeded from params->seed. params is
 * copied. NULL with errno/err on failure: EINVAL (as sampler_params_check),
 * ENOMEM. The caller destroys it. */
sampler_t *sampler_new(int vocab, const sampler_params_t *params, err_t *err);

/* Accepts NULL and *self_p == NULL; sets *self_p to NULL. */
void sampler_destroy(sampler_t **self_p);

/* Starts a new sequence with new params (copied) on the same scratch: the
 * random state is reseeded from params->seed, exactly as sampler_new() would.
 * Returns 0, or -1 with EINVAL and the sampler unchanged. */
int sampler_reset(sampler_t *self, const sampler_params_t *params, err_t *err);

/* The sampler's params (borrowed, valid until reset or destroy). */
const sampler_params_t *sampler_params(const sampler_t *self);

/* Picks the next token from logits (vocab,), which are only read, and stores
 * it in *token. Logits may be -INFINITY (masked: never picked) but not NaN or
 * +INFINITY, and at least one must be finite; otherwise returns -1 with
 * EINVAL, *token and the random state untouched. Never allocates. */
int sampler_sample(sampler_t *self, const float *logits, int32_t *token, err_t *err);

/* Whether the sequence ends after token, the n_generated-th token generated
 * (counting it, so n_generated >= 1). EOS wins over a stop id, which wins over
 * the length limit. Whether the ending token is shown to the client is the
 * caller's choice. Pure: the sampler is not changed. */
sampler_stop_t sampler_check_stop(const sampler_t *self, int32_t token, int n_generated);

/* Log-probabilities for a client (OpenAI's logprobs): log-softmax of the raw
 * logits (vocab,), before temperature, top-k or top-p, as vLLM reports them.
 * *logprob gets token's; top_ids/top_lps (k entries) the k best tokens, best
 * first, ties to the lower id. Returns how many alternatives were written
 * (min(k, vocab), 0 when k <= 0). -INFINITY logits count as probability 0.
 * Reads logits only; O(vocab * k); never allocates. */
int sampler_logprobs(const float *logits, int vocab, int32_t token, int k, float *logprob,
                     int32_t *top_ids, float *top_lps);

/* "continue", "eos", "stop" or "length" (static string). */
const char *sampler_stop_name(sampler_stop_t why);

#endif /* MOE_ENGINE_SAMPLER_H */
