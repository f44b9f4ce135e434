/* workload: the benchmark workload shared by the benchmarks: a fixed
 * pseudo-random prompt, one timed prefill + greedy decode in process, the
 * model's FLOP and byte counts, and medians. */
#ifndef MOE_BENCH_WORKLOAD_H
#define MOE_BENCH_WORKLOAD_H

#include <stdint.h>

#include "core/arg.h"
#include "core/err.h"
#include "engine/forward.h"
#include "engine/kvcache.h"
#include "engine/weights.h"
#include "model/config.h"

/* The options of the workload's size, the same in every benchmark that runs
 * it: --prompt-len (default 128), --decode (64) and --repeat (5, at most
 * max_repeat). Sets the defaults and fills table's rows (ended by
 * ARG_OPT_END) to include with ARG_OPT_TABLE. */
enum { WORKLOAD_SIZE_OPTIONS = 3 };
void workload_size_options(int *prompt_len, int *decode, int *repeat, int max_repeat,
                           arg_opt_t table[WORKLOAD_SIZE_OPTIONS + 1]);

/* Fills prompt[0..n) with ids in [0, vocab), the same for every run. */
void workload_prompt(int32_t *prompt, int n, int vocab);

/* One prefill of the prompt and n_decode greedy steps from an empty kv,
 * timed separately (seconds). logits: (vocab) scratch. */
int workload_run(forward_t *fw, kvcache_t *kv, int vocab, const int32_t *prompt,
                 int n_prompt, int n_decode, float *logits, double *t_prefill,
                 double *t_decode, err_t *err);

/* FLOPs of a prefill of n tokens at positions 0..n-1, LM head on the last. */
double workload_prefill_flops(const config_t *c, int n);

/* Weight bytes one decoded token reads in the format w holds them in: the
 * layers' matrices and vectors outside the routed experts, k routed experts
 * per MoE layer (the mean of those loaded), one embedding row and the LM
 * head. */
double workload_decode_weight_bytes(const weights_t *w);

/* Median (sorts v in place) and largest of n values. */
double workload_median(double *v, int n);
double workload_max(const double *v, int n);

#endif /* MOE_BENCH_WORKLOAD_H */
