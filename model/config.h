/* config: a model's config.json, read with jansson into the fields the math
 * needs.
 *
 * The architecture comes from "model_type" (checked against "architectures"
 * when present). Only architectures listed in config_arch_t load; any other
 * gets EINVAL with an error naming it. A field the math needs that is missing,
 * of the wrong JSON type or out of range gets EINVAL with an error naming the
 * field and the file. Fields that do not change the math are ignored.
 */
#ifndef MOE_MODEL_CONFIG_H
#define MOE_MODEL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"

typedef enum config_arch {
    CONFIG_ARCH_MIXTRAL = 1,   /* "mixtral", MixtralForCausalLM */
    CONFIG_ARCH_QWEN2_MOE,     /* "qwen2_moe", Qwen2MoeForCausalLM */
    CONFIG_ARCH_QWEN3_MOE,     /* "qwen3_moe", Qwen3MoeForCausalLM */
    CONFIG_ARCH_OLMOE,         /* "olmoe", OlmoeForCausalLM */
    CONFIG_ARCH_HUNYUAN_V1_MOE,/* "hunyuan_v1_moe", HunYuanMoEV1ForCausalLM */
    CONFIG_ARCH_DEEPSEEK_V2,   /* "deepseek_v2", DeepseekV2ForCausalLM */
    CONFIG_ARCH_DEEPSEEK_V3,   /* "deepseek_v3", DeepseekV3ForCausalLM */
    CONFIG_ARCH_GPT_OSS,       /* "gpt_oss", GptOssForCausalLM */
} config_arch_t;

typedef enum config_rope_type {
    CONFIG_ROPE_DEFAULT = 0,   /* plain RoPE */
    CONFIG_ROPE_YARN,          /* YaRN: rope_factor, rope_orig_max_pos, beta_* */
} config_rope_type_t;

/* Where the attention normalises queries and keys (an RMSNorm with its own
 * weight, eps = rms_norm_eps). */
typedef enum config_qk_norm {
    CONFIG_QK_NORM_NONE = 0,
    CONFIG_QK_NORM_HEAD,       /* each head, before RoPE (qwen3_moe q_norm) */
    CONFIG_QK_NORM_FULL,       /* the whole projection, before RoPE (olmoe) */
    CONFIG_QK_NORM_HEAD_POST,  /* each head, after RoPE (hunyuan_v1_moe) */
} config_qk_norm_t;

/* The always-on expert beside the routed ones, computed on u = norm2(h). */
typedef enum config_shared {
    CONFIG_SHARED_NONE = 0,
    CONFIG_SHARED_PLAIN,       /* + mlp(u): hunyuan shared_mlp, deepseek shared_experts */
    CONFIG_SHARED_GATED,       /* + sigmoid(shared_expert_gate . u) * mlp(u): qwen2_moe */
} config_shared_t;

/* What the router ranks. */
typedef enum config_scoring {
    CONFIG_SCORING_SOFTMAX = 0,/* softmax(logits), then top-k */
    CONFIG_SCORING_SIGMOID,    /* sigmoid(logits) (deepseek_v3) */
    CONFIG_SCORING_TOPK_SOFTMAX, /* top-k of the logits, softmax over those (gpt_oss) */
} config_scoring_t;

/* How the router picks its k experts from the scores. */
typedef enum config_topk_method {
    CONFIG_TOPK_GREEDY = 0,    /* the k best */
    CONFIG_TOPK_GROUP_LIMITED, /* "group_limited_greedy" (deepseek_v2): groups ranked by
                                  their best score, topk_group kept */
    CONFIG_TOPK_NOAUX_TC,      /* "noaux_tc" (deepseek_v3): scores + e_score_correction_bias,
                                  groups ranked by the sum of their two best */
} config_topk_method_t;

/* The routed experts' FFN. */
typedef enum config_expert_act {
    CONFIG_EXPERT_SWIGLU = 0,  /* down(silu(gate x) * up x) */
    CONFIG_EXPERT_SWIGLU_OAI,  /* gpt_oss: biases, clamp at swiglu_limit,
                                  (up + 1) * gate * sigmoid(1.702 gate) */
} config_expert_act_t;

/* The attention a layer runs. */
typedef enum config_attn {
    CONFIG_ATTN_PLAIN = 0,     /* per-head q/k/v (GQA), head_dim wide */
    CONFIG_ATTN_MLA,           /* multi-head latent attention (deepseek): q_lora_rank,
                                  kv_lora_rank, qk_{nope,rope}_head_dim, v_head_dim */
} config_attn_t;

/* How a checkpoint keeps a layer's routed experts. */
typedef enum config_experts_layout {
    CONFIG_EXPERTS_SEPARATE = 0, /* one tensor per expert and projection */
    CONFIG_EXPERTS_STACKED,    /* one [n_experts, ...] tensor per projection (gpt_oss) */
} config_experts_layout_t;

/* How the checkpoint's weights are quantized (config.json
 * "quantization_config"; ../shared/fixtures-precision/README.md). */
typedef enum config_quant_method {
    CONFIG_QUANT_NONE = 0,     /* no quantization_config: weights as F32/F16/BF16 */
    CONFIG_QUANT_FP8,          /* "fp8" (DeepSeek-V3): linear weights F8_E4M3, each with
                                  a float32 <name>.weight_scale_inv of
                                  [ceil(out / block_n), ceil(in / block_k)] blocks */
    CONFIG_QUANT_MXFP4,        /* "mxfp4" (gpt-oss): routed experts as *_blocks (U8,
                                  E2M1 pairs) and *_scales (U8, E8M0) */
} config_quant_method_t;

/* CONFIG_QUANT_MAX_SKIP: entries kept of modules_to_not_convert, each below
 * CONFIG_QUANT_SKIP_LEN bytes (gpt-oss lists 4 patterns). */
enum { CONFIG_QUANT_MAX_SKIP = 32, CONFIG_QUANT_SKIP_LEN = 128 };

typedef struct config_quant {
    config_quant_method_t method;
    int block_n, block_k;      /* fp8 weight_block_size [n, k]: rows (output dim) and
                                  columns (input dim) of a scale block; 0 otherwise */
    int n_skip;                /* entries of modules_to_not_convert (mxfp4, fp8 if
                                  given); what they name stays unquantized */
    char skip[CONFIG_QUANT_MAX_SKIP][CONFIG_QUANT_SKIP_LEN];
} config_quant_t;

/* The "dtype" (or older "torch_dtype") config.json declares: what
 * transformers loads the unquantized tensors as. Informational: the loader
 * goes by each tensor's own dtype. */
typedef enum config_dtype {
    CONFIG_DTYPE_UNSET = 0,    /* absent, null, or a name not below */
    CONFIG_DTYPE_FLOAT32,
    CONFIG_DTYPE_FLOAT16,
    CONFIG_DTYPE_BFLOAT16,
} config_dtype_t;

/* Per-layer flags (config_t.layer_flags). */
enum {
    CONFIG_LAYER_DENSE = 1,    /* a dense FFN (width dense_intermediate_size), no experts */
    CONFIG_LAYER_SLIDING = 2,  /* attention sees the last sliding_window positions */
};

/* CONFIG_DIM_MAX: the largest width accepted for any one dimension: far
 * above any real model, low enough that products of two or three dims never
 * overflow int64. */
enum { CONFIG_MAX_EOS = 8, CONFIG_MAX_LAYERS = 512, CONFIG_DIM_MAX = 1 << 24 };

typedef struct config {
    config_arch_t arch;
    char model_type[32];        /* as written in config.json */
    int hidden_size;            /* d_model */
    int n_layers;               /* num_hidden_layers, <= CONFIG_MAX_LAYERS */
    int n_heads;                /* num_attention_heads */
    int n_kv_heads;             /* num_key_value_heads (defaults to n_heads) */
    int head_dim;               /* plain attention's per-head width: head_dim
                                   (defaults to hidden_size / n_heads) */
    int rope_dim;               /* rotary width: head_dim, or MLA's
                                   qk_rope_head_dim */
    int intermediate_size;      /* ROUTED expert FFN width: intermediate_size (mixtral,
                                   olmoe, hunyuan, gpt_oss) or moe_intermediate_size
                                   (qwen2_moe, qwen3_moe, deepseek) */
    int dense_intermediate_size;/* dense-layer FFN width: HF intermediate_size */
    int n_experts;              /* routed experts per MoE layer */
    int n_experts_per_tok;      /* top-k (hunyuan: moe_topk) */
    int vocab_size;
    int max_position_embeddings;
    float rms_norm_eps;

    /* RoPE */
    double rope_theta;          /* rope_parameters.rope_theta, or top-level rope_theta */
    config_rope_type_t rope_type;
    double rope_factor;         /* yarn factor (1 when not yarn) */
    int rope_orig_max_pos;      /* yarn original_max_position_embeddings */
    double rope_beta_fast;      /* yarn, default 32 */
    double rope_beta_slow;      /* yarn, default 1 */
    double rope_mscale;         /* yarn mscale (deepseek), 0: absent */
    double rope_mscale_all_dim; /* yarn mscale_all_dim (deepseek), 0: absent */
    double rope_attention_factor; /* yarn attention_factor, 0: absent (derived) */
    bool rope_truncate;         /* yarn truncate, default true */
    bool rope_interleave;       /* rotate pairs (2i, 2i+1), not (i, i + rot/2):
                                   deepseek_v2 always, deepseek_v3 rope_interleave */

    /* Attention */
    config_attn_t attn;         /* plain or MLA (config_is_mla()) */
    bool qkv_bias;              /* q/k/v projections have biases */
    bool o_bias;                /* o projection has a bias */
    config_qk_norm_t qk_norm;
    bool attn_sinks;            /* per-head sink logits (gpt_oss self_attn.sinks) */
    int sliding_window;         /* window of CONFIG_LAYER_SLIDING layers; 0: none */
    unsigned char layer_flags[CONFIG_MAX_LAYERS]; /* CONFIG_LAYER_* per layer */

    /* MLA (deepseek, attn == CONFIG_ATTN_MLA); 0 otherwise */
    int q_lora_rank;            /* 0: q_proj, no q LoRA */
    int kv_lora_rank;
    int qk_nope_head_dim;
    int qk_rope_head_dim;
    int v_head_dim;

    /* Router and experts */
    config_scoring_t scoring;
    config_topk_method_t topk_method;
    bool norm_topk_prob;        /* renormalise the k weights to sum 1 (true for
                                   mixtral and hunyuan, which always do) */
    int n_group;                /* expert groups (deepseek), 1 when ungrouped */
    int topk_group;             /* groups kept, 1 when ungrouped */
    float routed_scaling_factor;/* multiplies routed weights, 1 when absent */
    bool router_bias;           /* router has a bias (gpt_oss) */
    config_expert_act_t expert_act;
    config_experts_layout_t experts_layout; /* config_experts_stacked() */
    float swiglu_limit;         /* gpt_oss clamp, 0: none */
    config_shared_t shared;     /* shared expert kind */
    int shared_intermediate_size; /* its width, 0 when none */
    int n_shared_experts;       /* deepseek n_shared_experts (width = this x
                                   moe_intermediate_size), else 1 or 0 */
    int first_k_dense;          /* first_k_dense_replace (deepseek), else 0 */

    bool tie_word_embeddings;   /* lm_head shares embed_tokens */
    int bos_token_id;           /* -1: none */
    int n_eos;                  /* entries used in eos_token_ids */
    int eos_token_ids[CONFIG_MAX_EOS];

    config_quant_t quant;       /* quantization_config; method NONE when absent */
    config_dtype_t dtype;       /* dtype / torch_dtype */
} config_t;

/* Reads <dir>/config.json. Returns 0, or -1 with errno and err set; on failure
 * *cfg is left zeroed. An architecture that parses but that the engine cannot
 * run yet fails with ENOTSUP and a
 * message "<arch> is not supported yet"; a value the math cannot compute
 * (unknown rope_type, scoring_func, topk_method, a quantization_config, ...)
 * fails with EINVAL naming the field. */
int config_load(config_t *cfg, const char *dir, err_t *err);

/* Parses config JSON text; origin names the source in error messages.
 * Same contract as config_load(). */
int config_parse(config_t *cfg, const char *json_text, size_t len,
                 const char *origin, err_t *err);

/* As config_parse(), but also accepts the architectures the engine cannot
 * run yet (their fields parse in full): for tests and for porting them. */
int config_parse_all(config_t *cfg, const char *json_text, size_t len,
                     const char *origin, err_t *err);

/* True when the engine runs this architecture. */
bool config_arch_supported(config_arch_t arch);

/* True when the attention is MLA (attn == CONFIG_ATTN_MLA). */
bool config_is_mla(const config_t *cfg);

/* True when the checkpoint stacks each layer's experts in one tensor per
 * projection (experts_layout == CONFIG_EXPERTS_STACKED). */
bool config_experts_stacked(const config_t *cfg);

/* True when layer l has routed experts (not a dense FFN layer). */
bool config_layer_is_moe(const config_t *cfg, int layer);

/* Attention window of layer l in positions, 0 for full attention. */
int config_layer_window(const config_t *cfg, int layer);

/* A short text that two processes compare to agree they loaded the same
 * model shape: architecture and every dimension the math or the wire depends
 * on, e.g. "mixtral:h1024:l8:e8:k2:i2816:v32000:a16/4x64"; other families
 * append what is theirs (":d<dense width>/<first dense layers>",
 * ":s<shared width>", ":mla<q>/<kv>/<nope>/<rope>/<v>", ":g<groups>/<kept>"),
 * so a mixtral id is unchanged. Writes at most
 * size bytes (NUL included); returns the length it needed. */
int config_model_id(const config_t *cfg, char *buf, size_t size);

/* "mixtral", ... (borrowed, static). */
const char *config_arch_name(config_arch_t arch);

/* "none", "fp8", "mxfp4" (borrowed, static). */
const char *config_quant_name(config_quant_method_t method);

#endif /* MOE_MODEL_CONFIG_H */
