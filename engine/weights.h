/* weights: the weights of a checkpoint that one process uses, held in the
 * format the checkpoint stores them in (or the one --dtype / --quantization
 * asks for).
 *
 * A process states what it runs: the dense part (embeddings, attention, norms,
 * routers, LM head: the coordinator and moe-run) and/or some routed experts
 * (an expert node: those of its placement; moe-run: all). Only those tensors
 * are looked up, checked against the config's shapes and mapped. Matrices
 * stored as F32, F16, BF16, FP8 E4M3 (with their weight_scale_inv blocks) or
 * MXFP4 are used in place from the read-only mapping, never widened, so a
 * process's memory is about the stored size of the share it hosts; only
 * gpt_oss's float experts (stored x W, gate and up interleaved) are re-laid
 * out, in their stored dtype, into owned buffers.
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
#include "core/tensor.h"
#include "engine/wformat.h"
#include "model/config.h"
#include "model/safetensors.h"

/* One SwiGLU FFN: a routed expert, a shared expert or a dense layer's MLP.
 * Absent (not hosted, not in the model) when gate.data is NULL. */
typedef struct expert_weights {
    tensor_t gate;   /* (width, hidden) */
    tensor_t up;     /* (width, hidden) */
    tensor_t down;   /* (hidden, width) */
} expert_weights_t;

/* gpt_oss only: the biases of a routed expert (float32). Its fused experts
 * are views of the MXFP4 blocks, or re-laid out from the x W layout of a
 * float checkpoint into owned buffers of the stored dtype (engine/fused.h). */
typedef struct expert_biases {
    const float *gate;   /* (width) */
    const float *up;     /* (width) */
    const float *down;   /* (hidden) */
} expert_biases_t;

/* Per layer. A matrix is absent (data NULL) and a vector NULL when the model
 * has no such weight (arch_present(), model/arch.h, says which it has) or
 * the process did not load it. In short:
 *   q_bias/k_bias/v_bias: cfg.qkv_bias; o_bias: cfg.o_bias;
 *   q_norm/k_norm: cfg.qk_norm != NONE;
 *   router (+ shared, shared_gate): MoE layers; dense: dense layers;
 *   q_a .. kv_b: MLA (config_is_mla()) instead of q/k/v;
 *   sinks, router_bias: gpt_oss; score_bias: deepseek_v3 (noaux_tc).
 * Matrices are tensor_t in the format the process holds them in (as stored,
 * or what --dtype / --quantization made of them: engine/wformat.h); vectors
 * (norms, biases, sinks, the shared-expert gate) are widened to float32 at
 * load: they are a few KB per layer. */
typedef struct layer_weights {
    const float *attn_norm;    /* (hidden) */
    tensor_t q;                /* (heads * head_dim, hidden); MLA without q LoRA:
                                  (heads * (nope + rope), hidden) */
    tensor_t k;                /* (kv_heads * head_dim, hidden) */
    tensor_t v;                /* (kv_heads * head_dim, hidden) */
    tensor_t o;                /* (hidden, heads * head_dim) (MLA: heads * v_head_dim) */
    const float *q_bias;       /* (heads * head_dim) */
    const float *k_bias;       /* (kv_heads * head_dim) */
    const float *v_bias;       /* (kv_heads * head_dim) */
    const float *o_bias;       /* (hidden) */
    const float *q_norm;       /* (head_dim), or (heads * head_dim) when qk_norm is FULL */
    const float *k_norm;       /* (head_dim), or (kv_heads * head_dim) when FULL */
    const float *sinks;        /* (heads) gpt_oss */
    tensor_t q_a;              /* (q_lora_rank, hidden) MLA */
    const float *q_a_norm;     /* (q_lora_rank) */
    tensor_t q_b;              /* (heads * (nope + rope), q_lora_rank) */
    tensor_t kv_a;             /* (kv_lora_rank + rope, hidden) */
    const float *kv_a_norm;    /* (kv_lora_rank) */
    tensor_t kv_b;             /* (heads * (nope + v_head_dim), kv_lora_rank) */
    const float *ffn_norm;     /* (hidden) */
    tensor_t router;           /* (n_experts, hidden); absent in a dense layer */
    const float *router_bias;  /* (n_experts) gpt_oss */
    const float *score_bias;   /* (n_experts) deepseek_v3 */
    expert_weights_t shared;   /* shared expert, width shared_intermediate_size */
    const float *shared_gate;  /* (1, hidden) qwen2_moe's sigmoid gate of it */
    expert_weights_t dense;    /* a dense layer's FFN, width dense_intermediate_size */
    expert_weights_t *experts; /* [n_experts]; absent where not hosted */
    expert_biases_t *expert_biases; /* [n_experts] gpt_oss (NULL otherwise);
                                       fields NULL where not hosted */
} layer_weights_t;

typedef struct wstore wstore_t;

typedef struct weights {
    config_t cfg;
    bool has_dense;            /* embed, attention, norms, routers, shared and
                                  dense FFNs, lm_head loaded */
    tensor_t embed;            /* (vocab, hidden): rows decoded on lookup */
    const float *final_norm;   /* (hidden) */
    tensor_t lm_head;          /* (vocab, hidden); embed's when tied */
    layer_weights_t *layers;   /* [n_layers] */
    safetensors_t *st;         /* owns mappings and widened vectors */
    wstore_t *store;           /* owns re-laid out and converted matrices */
    wformat_t format;          /* what was asked at load */
} weights_t;

/* Which experts a process hosts: return true to load expert e of layer l. */
typedef bool (*weights_hosts_fn)(void *ctx, int layer, int expert);

typedef struct weights_select {
    bool dense;                /* load the dense part */
    weights_hosts_fn hosts;    /* NULL: no routed experts */
    void *hosts_ctx;
    wformat_t format;          /* zero: every weight as stored */
    FILE *log;                 /* the one line on matrices --quantization
                                  left as they were; NULL: quiet */
    const char *name;          /* its prefix, the program's name (NULL: none) */
    int threads;               /* converting threads; 0: blas_threads() */
    bool resident;             /* matrices kept as stored are copied into memory of
                                  their own at load (huge pages: the fastest decode;
                                  --preload), not read from the file's mapping on
                                  first use (engine/stored.h) */
} weights_select_t;

/* Loads config.json and the selected tensors of the checkpoint in dir.
 * NULL with errno/err set on any failure (the message names the file and the
 * tensor). Caller destroys. */
weights_t *weights_load(const char *dir, const weights_select_t *select, err_t *err);
void weights_destroy(weights_t **self_p);

/* A hosts function that hosts every expert (single-process mode). */
bool weights_hosts_all(void *ctx, int layer, int expert);

/* weights_load of the whole model: the dense part and every expert, as one
 * process that runs the model alone (moe-run, the benchmarks) needs it,
 * resident (select.resident). */
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

/* Bytes of weights this process holds: every loaded matrix (its data and
 * scales; a tied LM head once) and vector. */
uint64_t weights_bytes(const weights_t *self);

/* What the process holds, for --help-like lines, logs and STATUS, e.g.
 * "bf16", "q4_0+bf16", "f32 (q4_0 experts)", "mxfp4 experts": the formats
 * of the matrices outside the routed experts by bytes held, then those of
 * the routed experts where they differ. Into buf (size bytes, truncated,
 * always terminated); returns buf. */
const char *weights_describe(const weights_t *self, char *buf, size_t size);

#endif /* MOE_ENGINE_WEIGHTS_H */
