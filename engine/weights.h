/* weights: the float32 views of a checkpoint's weights that one process uses.
 *
 * A process states what it runs: the dense part (embeddings, attention, norms,
 * routers, LM head: the coordinator and moe-run) and/or some routed experts
 * (an expert node: those of its placement; moe-run: all). Only those tensors
 * are looked up, checked against the config's shapes and mapped; F32 weights
 * are used in place from the read-only mapping, so memory follows the share.
 *
 * The struct is public and read-only after weights_load(): the forward pass
 * reads its pointers on every step and needs no accessor calls for that.
 */
#ifndef MOE_ENGINE_WEIGHTS_H
#define MOE_ENGINE_WEIGHTS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/err.h"
#include "model/config.h"
#include "model/safetensors.h"

/* One SwiGLU FFN: a routed expert, a shared expert or a dense layer's MLP. */
typedef struct expert_weights {
    const float *gate;   /* (width, hidden) */
    const float *up;     /* (width, hidden) */
    const float *down;   /* (hidden, width) */
} expert_weights_t;

/* gpt_oss only: the biases of a routed expert. Its fused gate_up_proj is
 * de-interleaved and transposed into the expert's gate/up (and down_proj
 * transposed) in owned buffers (engine/fused.h). */
typedef struct expert_biases {
    const float *gate;   /* (width) */
    const float *up;     /* (width) */
    const float *down;   /* (hidden) */
} expert_biases_t;

/* Per layer. A pointer is NULL when the model has no such weight
 * (arch_present(), model/arch.h, says which it has) or the process did not
 * load it. In short:
 *   q_bias/k_bias/v_bias: cfg.qkv_bias; o_bias: cfg.o_bias;
 *   q_norm/k_norm: cfg.qk_norm != NONE;
 *   router (+ shared, shared_gate): MoE layers; dense: dense layers;
 *   q_a .. kv_b: MLA (config_is_mla()) instead of q/k/v;
 *   sinks, router_bias: gpt_oss; score_bias: deepseek_v3 (noaux_tc). */
typedef struct layer_weights {
    const float *attn_norm;    /* (hidden) */
    const float *q;            /* (heads * head_dim, hidden); MLA without q LoRA:
                                  (heads * (nope + rope), hidden) */
    const float *k;            /* (kv_heads * head_dim, hidden) */
    const float *v;            /* (kv_heads * head_dim, hidden) */
    const float *o;            /* (hidden, heads * head_dim) (MLA: heads * v_head_dim) */
    const float *q_bias;       /* (heads * head_dim) */
    const float *k_bias;       /* (kv_heads * head_dim) */
    const float *v_bias;       /* (kv_heads * head_dim) */
    const float *o_bias;       /* (hidden) */
    const float *q_norm;       /* (head_dim), or (heads * head_dim) when qk_norm is FULL */
    const float *k_norm;       /* (head_dim), or (kv_heads * head_dim) when FULL */
    const float *sinks;        /* (heads) gpt_oss */
    const float *q_a;          /* (q_lora_rank, hidden) MLA */
    const float *q_a_norm;     /* (q_lora_rank) */
    const float *q_b;          /* (heads * (nope + rope), q_lora_rank) */
    const float *kv_a;         /* (kv_lora_rank + rope, hidden) */
    const float *kv_a_norm;    /* (kv_lora_rank) */
    const float *kv_b;         /* (heads * (nope + v_head_dim), kv_lora_rank) */
    const float *ffn_norm;     /* (hidden) */
    const float *router;       /* (n_experts, hidden); NULL in a dense layer */
    const float *router_bias;  /* (n_experts) gpt_oss */
    const float *score_bias;   /* (n_experts) deepseek_v3 */
    expert_weights_t shared;   /* shared expert, width shared_intermediate_size */
    const float *shared_gate;  /* (1, hidden) qwen2_moe's sigmoid gate of it */
    expert_weights_t dense;    /* a dense layer's FFN, width dense_intermediate_size */
    expert_weights_t *experts; /* [n_experts]; fields NULL where not hosted */
    expert_biases_t *expert_biases; /* [n_experts] gpt_oss (NULL otherwise);
                                       fields NULL where not hosted */
    float **expert_owned;      /* [n_experts] gpt_oss: the buffer each hosted
                                  expert's weights and biases live in */
} layer_weights_t;

typedef struct weights {
    config_t cfg;
    bool has_dense;            /* embed, attention, norms, routers, shared and
                                  dense FFNs, lm_head loaded */
    const float *embed;        /* (vocab, hidden) */
    const float *final_norm;   /* (hidden) */
    const float *lm_head;      /* (vocab, hidden) */
    layer_weights_t *layers;   /* [n_layers] */
    safetensors_t *st;         /* owns mappings and converted buffers */
} weights_t;

/* Which experts a process hosts: return true to load expert e of layer l. */
typedef bool (*weights_hosts_fn)(void *ctx, int layer, int expert);

typedef struct weights_select {
    bool dense;                /* load the dense part */
    weights_hosts_fn hosts;    /* NULL: no routed experts */
    void *hosts_ctx;
} weights_select_t;

/* Loads config.json and the selected tensors of the checkpoint in dir.
 * NULL with errno/err set on any failure (the message names the file and the
 * tensor). Caller destroys. */
weights_t *weights_load(const char *dir, const weights_select_t *select, err_t *err);
void weights_destroy(weights_t **self_p);

/* A hosts function that hosts every expert (single-process mode). */
bool weights_hosts_all(void *ctx, int layer, int expert);

/* weights_load of the whole model: the dense part and every expert, as one
 * process that runs the model alone (moe-run, the benchmarks) needs it. */
weights_t *weights_load_all(const char *dir, err_t *err);

/* Reads every loaded weight into this process's memory (each page of its
 * mapping), so that the first requests do not wait for the disk: the
 * difference between an endpoint that is announced and one that is ready
 * (--preload). Progress on log (NULL: quiet) for work over a second, lines
 * "name: reading weights: ..." (core/progress.h). Returns the bytes read;
 * it cannot fail (the mappings were checked by weights_load). */
uint64_t weights_preload(const weights_t *self, FILE *log, const char *name);

/* True when expert e of layer l is loaded (never in a dense layer). */
bool weights_has_expert(const weights_t *self, int layer, int expert);

#endif /* MOE_ENGINE_WEIGHTS_H */
