/* workload: see workload.h. */
#include "bench/workload.h"

#include <stdlib.h>

#include "core/timer.h"

void workload_size_options(int *prompt_len, int *decode, int *repeat, int max_repeat,
                           arg_opt_t table[WORKLOAD_SIZE_OPTIONS + 1])
{
    *prompt_len = 128;
    *decode = 64;
    *repeat = 5;
    const arg_opt_t rows[WORKLOAD_SIZE_OPTIONS + 1] = {
        ARG_OPT_INT("--prompt-len", prompt_len, 1, 0),
        ARG_OPT_INT("--decode", decode, 1, 0),
        ARG_OPT_INT("--repeat", repeat, 1, max_repeat),
        ARG_OPT_END,
    };
    for (int i = 0; i <= WORKLOAD_SIZE_OPTIONS; i++)
        table[i] = rows[i];
}

void workload_prompt(int32_t *prompt, int n, int vocab)
{
    uint64_t seed = 12345;
    for (int i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        prompt[i] = (int32_t)((seed >> 33) % (uint64_t)vocab);
    }
}

int workload_run(forward_t *fw, kvcache_t *kv, int vocab, const int32_t *prompt,
                 int n_prompt, int n_decode, float *logits, double *t_prefill,
                 double *t_decode, err_t *err)
{
    kvcache_truncate(kv, 0);
    double t0 = timer_now();
    if (forward_run(fw, kv, prompt, n_prompt, FORWARD_LOGITS_LAST, logits, err) < 0)
        return -1;
    double t1 = timer_now();
    for (int i = 0; i < n_decode; i++) {
        int32_t next = forward_argmax(logits, vocab);
        if (forward_run(fw, kv, &next, 1, FORWARD_LOGITS_LAST, logits, err) < 0)
            return -1;
    }
    *t_prefill = t1 - t0;
    *t_decode = timer_now() - t1;
    return 0;
}

double workload_prefill_flops(const config_t *c, int n)
{
    const double hidden = c->hidden_size, q = (double)c->n_heads * c->head_dim;
    const double kv = (double)c->n_kv_heads * c->head_dim;
    double per_token = 2 * hidden * (q + 2 * kv) + 2 * q * hidden + 2 * hidden * c->n_experts +
                       (double)c->n_experts_per_tok * 3 * 2 * hidden * c->intermediate_size;
    double attn = 0; /* q.k and p.v over the causal prefix of every token */
    for (int p = 0; p < n; p++)
        attn += 2 * 2 * q * (p + 1);
    return c->n_layers * (per_token * n + attn) + 2 * hidden * c->vocab_size;
}

static double s_ffn_bytes(const expert_weights_t *f)
{
    return f->gate.data ? (double)(tensor_bytes(&f->gate) + tensor_bytes(&f->up) +
                                   tensor_bytes(&f->down))
                        : 0;
}

double workload_decode_weight_bytes(const weights_t *w)
{
    const config_t *c = &w->cfg;
    const double hidden = c->hidden_size;
    double bytes = tensor_bytes(&w->lm_head) + tensor_bytes(&w->embed) / c->vocab_size +
                   4 * hidden;
    for (int l = 0; l < c->n_layers; l++) {
        const layer_weights_t *lw = &w->layers[l];
        const tensor_t *mats[] = {&lw->q, &lw->k, &lw->v, &lw->o, &lw->q_a, &lw->q_b,
                                  &lw->kv_a, &lw->kv_b, &lw->router};
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++)
            if (mats[i]->data)
                bytes += (double)tensor_bytes(mats[i]);
        bytes += s_ffn_bytes(&lw->shared) + s_ffn_bytes(&lw->dense) + 4 * 2 * hidden;
        double experts = 0;
        int n = 0;
        for (int e = 0; e < c->n_experts; e++)
            if (lw->experts[e].gate.data) {
                experts += s_ffn_bytes(&lw->experts[e]);
                n++;
            }
        if (n > 0)
            bytes += c->n_experts_per_tok * experts / n;
    }
    return bytes;
}

static int s_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double workload_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, s_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double workload_max(const double *v, int n)
{
    double m = v[0];
    for (int i = 1; i < n; i++)
        m = v[i] > m ? v[i] : m;
    return m;
}
