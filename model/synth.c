/* synth: see synth.h.
 *
 * An architecture is one s_arch_t row: its names, its presets and its table
 * of tensor roles (arch.h) in checkpoint order. arch_tensor() gives each
 * role's name and shape, so the checkpoint synth writes is the one the loader
 * reads; s_present() says, from the config, which roles a layer has. The
 * table is read in order: a model-wide role is one tensor; a run of per-layer
 * roles is repeated for every layer, and a run of per-expert roles inside it
 * for every expert of a MoE layer (once, stacked, when the architecture keeps
 * its experts in one tensor per layer, as gpt_oss does).
 *
 * Each tensor draws from its own generator, seeded from (seed, name), and is
 * produced in chunks of S_CHUNK values that go straight to the st_writer.
 */
#include "model/synth.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "core/mem.h"
#include "core/path.h"
#include "model/arch.h"
#include "model/st_writer.h"

enum { S_CHUNK = 1 << 18 };   /* values generated and written per step */
enum { S_MAX_TDIMS = ARCH_MAX_DIMS + 1 }; /* a stacked expert tensor adds one */

/* A tensor synth writes that arch.h has no role for: gpt_oss's
 * mlp.experts.down_proj_bias [E, hidden]. */
enum { S_ROLE_OAI_DOWN_BIAS = ARCH_W_COUNT };

/* A preset: the dims a family's config needs; 0 where it has no such dim. */
typedef struct s_preset {
    const char *name;
    int hidden, n_layers, n_experts, top_k, inter, n_heads, n_kv_heads, vocab;
    int dense_inter;          /* HF intermediate_size (qwen, deepseek) */
    int shared_inter;         /* qwen2_moe shared_expert_intermediate_size */
    int n_shared;             /* deepseek n_shared_experts */
    int first_dense;          /* deepseek first_k_dense_replace */
    int n_group, topk_group;  /* deepseek */
    int q_lora, kv_lora, nope, rope, v_head; /* deepseek MLA */
    int window;               /* gpt_oss sliding window */
} s_preset_t;

typedef struct s_arch {
    config_arch_t arch;
    const char *model_type;   /* config.json "model_type" */
    const char *class_name;   /* config.json "architectures" */
    const char *experts_key;  /* config.json field of the expert count */
    const char *topk_key;     /* config.json field of the experts per token */
    bool moe_inter_key;       /* the routed width is moe_intermediate_size and
                                 intermediate_size is the dense width */
    double rope_theta;
    const int *roles;         /* arch_weight_t (or S_ROLE_*), in order */
    size_t n_roles;
    const s_preset_t *presets;
    size_t n_presets;
} s_arch_t;

#define S_COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define S_PRESET_NAMES "tiny, small, medium"

/* Llama-style attention, per layer. */
#define S_ATTN_ROLES                                                         \
    ARCH_W_ATTN_NORM, ARCH_W_Q, ARCH_W_Q_BIAS, ARCH_W_K, ARCH_W_K_BIAS,      \
        ARCH_W_V, ARCH_W_V_BIAS, ARCH_W_Q_NORM, ARCH_W_K_NORM, ARCH_W_O,     \
        ARCH_W_O_BIAS, ARCH_W_SINKS, ARCH_W_FFN_NORM

static const int s_mixtral_roles[] = {
    ARCH_W_EMBED,
    ARCH_W_ATTN_NORM, ARCH_W_Q, ARCH_W_K, ARCH_W_V, ARCH_W_O, ARCH_W_FFN_NORM,
    ARCH_W_ROUTER,
    ARCH_W_EXPERT_GATE, ARCH_W_EXPERT_DOWN, ARCH_W_EXPERT_UP, /* w1 w2 w3 */
    ARCH_W_FINAL_NORM, ARCH_W_LM_HEAD,
};

/* qwen2_moe, qwen3_moe, olmoe and hunyuan_v1_moe: what each has of these is
 * the config's to say (biases, q/k norms, shared expert, dense layers). */
static const int s_llama_moe_roles[] = {
    ARCH_W_EMBED,
    S_ATTN_ROLES,
    ARCH_W_DENSE_GATE, ARCH_W_DENSE_UP, ARCH_W_DENSE_DOWN,
    ARCH_W_ROUTER,
    ARCH_W_EXPERT_GATE, ARCH_W_EXPERT_UP, ARCH_W_EXPERT_DOWN,
    ARCH_W_SHARED_GATE, ARCH_W_SHARED_UP, ARCH_W_SHARED_DOWN,
    ARCH_W_SHARED_EXPERT_GATE,
    ARCH_W_FINAL_NORM, ARCH_W_LM_HEAD,
};

/* deepseek_v2 / v3: MLA (q_proj, or q_a/q_b with a q LoRA), dense FFN in the
 * first layers, router (+ correction bias), experts, shared experts. */
static const int s_deepseek_roles[] = {
    ARCH_W_EMBED,
    ARCH_W_ATTN_NORM, ARCH_W_Q, ARCH_W_Q_A, ARCH_W_Q_A_NORM, ARCH_W_Q_B,
    ARCH_W_KV_A, ARCH_W_KV_A_NORM, ARCH_W_KV_B, ARCH_W_O, ARCH_W_FFN_NORM,
    ARCH_W_DENSE_GATE, ARCH_W_DENSE_UP, ARCH_W_DENSE_DOWN,
    ARCH_W_ROUTER, ARCH_W_SCORE_BIAS,
    ARCH_W_EXPERT_GATE, ARCH_W_EXPERT_UP, ARCH_W_EXPERT_DOWN,
    ARCH_W_SHARED_GATE, ARCH_W_SHARED_UP, ARCH_W_SHARED_DOWN,
    ARCH_W_FINAL_NORM, ARCH_W_LM_HEAD,
};

/* gpt_oss: attention with biases and sinks, router with a bias, experts
 * stacked per layer (gate_up_proj, its bias, down_proj, its bias). */
static const int s_gpt_oss_roles[] = {
    ARCH_W_EMBED,
    S_ATTN_ROLES,
    ARCH_W_ROUTER, ARCH_W_ROUTER_BIAS,
    ARCH_W_EXPERT_GATE, ARCH_W_EXPERT_UP, ARCH_W_EXPERT_DOWN,
    S_ROLE_OAI_DOWN_BIAS,
    ARCH_W_FINAL_NORM, ARCH_W_LM_HEAD,
};

/* tiny: fixture-sized; small: a few MB; medium: about the Mixtral medium's
 * 2.6 GB of float32 (the benchmark size), in each family's own proportions
 * (finer experts with top-4..8 where the family has them). */
static const s_preset_t s_mixtral_presets[] = {
    {.name = "tiny", .hidden = 64, .n_layers = 2, .n_experts = 8, .top_k = 2,
     .inter = 128, .n_heads = 4, .n_kv_heads = 2, .vocab = 512},
    {.name = "small", .hidden = 256, .n_layers = 4, .n_experts = 8, .top_k = 2,
     .inter = 512, .n_heads = 8, .n_kv_heads = 2, .vocab = 2048},
    {.name = "medium", .hidden = 1024, .n_layers = 8, .n_experts = 8,
     .top_k = 2, .inter = 2816, .n_heads = 16, .n_kv_heads = 4,
     .vocab = 32000},
};

static const s_preset_t s_qwen2_moe_presets[] = {
    {.name = "tiny", .hidden = 64, .n_layers = 2, .n_experts = 16, .top_k = 4,
     .inter = 32, .n_heads = 4, .n_kv_heads = 2, .vocab = 512,
     .dense_inter = 128, .shared_inter = 64},
    {.name = "small", .hidden = 256, .n_layers = 4, .n_experts = 16,
     .top_k = 4, .inter = 128, .n_heads = 8, .n_kv_heads = 2, .vocab = 2048,
     .dense_inter = 512, .shared_inter = 512},
    {.name = "medium", .hidden = 1024, .n_layers = 8, .n_experts = 32,
     .top_k = 4, .inter = 704, .n_heads = 16, .n_kv_heads = 4,
     .vocab = 32000, .dense_inter = 2816, .shared_inter = 2816},
};

static const s_preset_t s_qwen3_moe_presets[] = {
    {.name = "tiny", .hidden = 64, .n_layers = 2, .n_experts = 16, .top_k = 4,
     .inter = 32, .n_heads = 4, .n_kv_heads = 2, .vocab = 512,
     .dense_inter = 128},
    {.name = "small", .hidden = 256, .n_layers = 4, .n_experts = 32,
     .top_k = 8, .inter = 128, .n_heads = 8, .n_kv_heads = 2, .vocab = 2048,
     .dense_inter = 512},
    {.name = "medium", .hidden = 1024, .n_layers = 8, .n_experts = 64,
     .top_k = 8, .inter = 352, .n_heads = 16, .n_kv_heads = 4,
     .vocab = 32000, .dense_inter = 2816},
};

static const s_preset_t s_olmoe_presets[] = {
    {.name = "tiny", .hidden = 64, .n_layers = 2, .n_experts = 16, .top_k = 4,
     .inter = 32, .n_heads = 4, .n_kv_heads = 2, .vocab = 512},
    {.name = "small", .hidden = 256, .n_layers = 4, .n_experts = 32,
     .top_k = 8, .inter = 128, .n_heads = 8, .n_kv_heads = 8, .vocab = 2048},
    {.name = "medium", .hidden = 1024, .n_layers = 8, .n_experts = 64,
     .top_k = 8, .inter = 352, .n_heads = 16, .n_kv_heads = 16,
     .vocab = 32000},
};

static const s_preset_t s_hunyuan_presets[] = {
    {.name = "tiny", .hidden = 64, .n_layers = 2, .n_experts = 8, .top_k = 2,
     .inter = 48, .n_heads = 4, .n_kv_heads = 2, .vocab = 512},
    {.name = "small", .hidden = 256, .n_layers = 4, .n_experts = 16,
     .top_k = 2, .inter = 256, .n_heads = 8, .n_kv_heads = 2, .vocab = 2048},
    {.name = "medium", .hidden = 1024, .n_layers = 8, .n_experts = 16,
     .top_k = 2, .inter = 1408, .n_heads = 16, .n_kv_heads = 4,
     .vocab = 32000},
};

/* deepseek: groups of experts such that the top-k usually spans more groups
 * than topk_group keeps, so the group limit changes choices. */
static const s_preset_t s_deepseek_v2_presets[] = {
    {.name = "tiny", .hidden = 64, .n_layers = 3, .n_experts = 16, .top_k = 4,
     .inter = 24, .n_heads = 4, .n_kv_heads = 4, .vocab = 512,
     .dense_inter = 96, .n_shared = 2, .first_dense = 1, .n_group = 4,
     .topk_group = 2, .kv_lora = 24, .nope = 16, .rope = 8, .v_head = 16},
    {.name = "small", .hidden = 256, .n_layers = 4, .n_experts = 32,
     .top_k = 6, .inter = 128, .n_heads = 8, .n_kv_heads = 8, .vocab = 2048,
     .dense_inter = 1024, .n_shared = 2, .first_dense = 1, .n_group = 8,
     .topk_group = 3, .kv_lora = 64, .nope = 32, .rope = 16, .v_head = 32},
    {.name = "medium", .hidden = 1024, .n_layers = 8, .n_experts = 64,
     .top_k = 6, .inter = 352, .n_heads = 16, .n_kv_heads = 16,
     .vocab = 32000, .dense_inter = 2816, .n_shared = 2, .first_dense = 1,
     .n_group = 8, .topk_group = 3, .kv_lora = 256, .nope = 64, .rope = 32,
     .v_head = 64},
};

static const s_preset_t s_deepseek_v3_presets[] = {
    {.name = "tiny", .hidden = 64, .n_layers = 3, .n_experts = 16, .top_k = 4,
     .inter = 24, .n_heads = 4, .n_kv_heads = 4, .vocab = 512,
     .dense_inter = 96, .n_shared = 1, .first_dense = 1, .n_group = 4,
     .topk_group = 2, .q_lora = 32, .kv_lora = 24, .nope = 16, .rope = 8,
     .v_head = 16},
    {.name = "small", .hidden = 256, .n_layers = 4, .n_experts = 32,
     .top_k = 8, .inter = 128, .n_heads = 8, .n_kv_heads = 8, .vocab = 2048,
     .dense_inter = 1024, .n_shared = 1, .first_dense = 1, .n_group = 8,
     .topk_group = 4, .q_lora = 96, .kv_lora = 64, .nope = 32, .rope = 16,
     .v_head = 32},
    {.name = "medium", .hidden = 1024, .n_layers = 8, .n_experts = 64,
     .top_k = 8, .inter = 352, .n_heads = 16, .n_kv_heads = 16,
     .vocab = 32000, .dense_inter = 2816, .n_shared = 1, .first_dense = 1,
     .n_group = 8, .topk_group = 4, .q_lora = 384, .kv_lora = 256,
     .nope = 64, .rope = 32, .v_head = 64},
};

/* gpt_oss: layers alternate sliding (even) and full attention. */
static const s_preset_t s_gpt_oss_presets[] = {
    {.name = "tiny", .hidden = 64, .n_layers = 2, .n_experts = 8, .top_k = 2,
     .inter = 48, .n_heads = 4, .n_kv_heads = 2, .vocab = 512, .window = 8},
    {.name = "small", .hidden = 256, .n_layers = 4, .n_experts = 16,
     .top_k = 4, .inter = 128, .n_heads = 8, .n_kv_heads = 2, .vocab = 2048,
     .window = 32},
    {.name = "medium", .hidden = 1024, .n_layers = 8, .n_experts = 32,
     .top_k = 4, .inter = 704, .n_heads = 16, .n_kv_heads = 4,
     .vocab = 32000, .window = 128},
};

#define S_ROLES(r) r, S_COUNT(r)
#define S_PRESETS(p) p, S_COUNT(p)

static const s_arch_t s_archs[] = {
    {CONFIG_ARCH_MIXTRAL, "mixtral", "MixtralForCausalLM", "num_local_experts",
     "num_experts_per_tok", false, 1e6, S_ROLES(s_mixtral_roles),
     S_PRESETS(s_mixtral_presets)},
    {CONFIG_ARCH_QWEN2_MOE, "qwen2_moe", "Qwen2MoeForCausalLM", "num_experts",
     "num_experts_per_tok", true, 1e6, S_ROLES(s_llama_moe_roles),
     S_PRESETS(s_qwen2_moe_presets)},
    /* transformers 5 writes qwen3_moe's count as num_local_experts */
    {CONFIG_ARCH_QWEN3_MOE, "qwen3_moe", "Qwen3MoeForCausalLM",
     "num_local_experts", "num_experts_per_tok", true, 1e6,
     S_ROLES(s_llama_moe_roles), S_PRESETS(s_qwen3_moe_presets)},
    {CONFIG_ARCH_OLMOE, "olmoe", "OlmoeForCausalLM", "num_experts",
     "num_experts_per_tok", false, 1e4, S_ROLES(s_llama_moe_roles),
     S_PRESETS(s_olmoe_presets)},
    {CONFIG_ARCH_HUNYUAN_V1_MOE, "hunyuan_v1_moe", "HunYuanMoEV1ForCausalLM",
     "num_experts", "moe_topk", false, 1e4, S_ROLES(s_llama_moe_roles),
     S_PRESETS(s_hunyuan_presets)},
    {CONFIG_ARCH_DEEPSEEK_V2, "deepseek_v2", "DeepseekV2ForCausalLM",
     "n_routed_experts", "num_experts_per_tok", true, 1e4,
     S_ROLES(s_deepseek_roles), S_PRESETS(s_deepseek_v2_presets)},
    {CONFIG_ARCH_DEEPSEEK_V3, "deepseek_v3", "DeepseekV3ForCausalLM",
     "n_routed_experts", "num_experts_per_tok", true, 1e4,
     S_ROLES(s_deepseek_roles), S_PRESETS(s_deepseek_v3_presets)},
    {CONFIG_ARCH_GPT_OSS, "gpt_oss", "GptOssForCausalLM", "num_local_experts",
     "num_experts_per_tok", false, 1.5e5, S_ROLES(s_gpt_oss_roles),
     S_PRESETS(s_gpt_oss_presets)},
};

#define S_ARCH_NAMES                                                         \
    "mixtral, qwen2_moe, qwen3_moe, olmoe, hunyuan_v1_moe, deepseek_v2, "    \
    "deepseek_v3, gpt_oss"

/* ---- random numbers ------------------------------------------------------ */

/* splitmix64 stream, plus the second value of the last Box-Muller pair. */
typedef struct s_rng {
    uint64_t state;
    bool has_spare;
    double spare;
} s_rng_t;

static uint64_t s_next(s_rng_t *r)
{
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* One generator per (seed, tensor name): FNV-1a of the name, mixed. */
static void s_rng_init(s_rng_t *r, uint64_t seed, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    r->state = seed;
    r->state = s_next(r) ^ h;
    r->state = s_next(r);
    r->has_spare = false;
    r->spare = 0;
}

/* x[i] = mean + std * N(0, 1), by Marsaglia's polar form of Box-Muller (no
 * trigonometry: about 4x faster), each pair from one 64-bit draw. */
static void s_fill_normal(s_rng_t *r, float *x, size_t n, double mean,
                          double std)
{
    size_t i = 0;
    if (n > 0 && r->has_spare) {
        x[i++] = (float)(mean + std * r->spare);
        r->has_spare = false;
    }
    while (i < n) {
        uint64_t bits = s_next(r);
        double u = (double)(bits >> 32) * 0x1p-31 - 1.0;
        double v = (double)(bits & 0xffffffffu) * 0x1p-31 - 1.0;
        double s = u * u + v * v;
        if (s >= 1.0 || s == 0.0)
            continue; /* outside the unit disc: draw again (p = 0.21) */
        double f = sqrt(-2.0 * log(s) / s);
        x[i++] = (float)(mean + std * u * f);
        if (i < n) {
            x[i++] = (float)(mean + std * v * f);
        } else {
            r->spare = v * f;
            r->has_spare = true;
        }
    }
}

/* x[i] uniform on [lo, lo + width), 53 bits of each draw. */
static void s_fill_uniform(s_rng_t *r, float *x, size_t n, double lo,
                           double width)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(lo + width * (double)(s_next(r) >> 11) * 0x1p-53);
}

/* ---- the plan: every tensor, its shape, its values and its shard --------- */

/* How a tensor's values are drawn. */
typedef enum s_draw {
    S_DRAW_NORMAL,            /* mean + N(0, spread) */
    S_DRAW_UNIFORM,           /* uniform on [mean, mean + spread) */
} s_draw_t;

typedef struct s_item {
    char name[ARCH_NAME_MAX];
    int ndim;
    int64_t shape[S_MAX_TDIMS];
    s_draw_t draw;
    double mean, spread;
    uint64_t n_values;
    uint64_t nbytes;          /* in the on-disk dtype */
    size_t shard;             /* 0-based file number */
} s_item_t;

/* gpt_oss keeps each layer's experts in one tensor per projection. */
static bool s_stacked(const config_t *c)
{
    return c->expert_act == CONFIG_EXPERT_SWIGLU_OAI;
}

static bool s_is_expert_role(int role)
{
    return role >= ARCH_W_EXPERT_GATE && role <= ARCH_W_EXPERT_DOWN;
}

/* Whether layer `layer` of the model has role (the rules weights_load reads
 * by, weights.h). */
static bool s_present(const config_t *c, int role, int layer)
{
    const bool moe = config_layer_is_moe(c, layer);
    const bool mla = c->kv_lora_rank > 0;
    switch (role) {
    case ARCH_W_LM_HEAD: return !c->tie_word_embeddings;
    case ARCH_W_Q: return !mla || c->q_lora_rank == 0;
    case ARCH_W_K:
    case ARCH_W_V: return !mla;
    case ARCH_W_Q_A:
    case ARCH_W_Q_A_NORM:
    case ARCH_W_Q_B: return mla && c->q_lora_rank > 0;
    case ARCH_W_KV_A:
    case ARCH_W_KV_A_NORM:
    case ARCH_W_KV_B: return mla;
    case ARCH_W_Q_BIAS:
    case ARCH_W_K_BIAS:
    case ARCH_W_V_BIAS: return c->qkv_bias;
    case ARCH_W_O_BIAS: return c->o_bias;
    case ARCH_W_Q_NORM:
    case ARCH_W_K_NORM: return c->qk_norm != CONFIG_QK_NORM_NONE;
    case ARCH_W_SINKS: return c->attn_sinks;
    case ARCH_W_ROUTER: return moe;
    case ARCH_W_ROUTER_BIAS: return moe && c->router_bias;
    case ARCH_W_SCORE_BIAS: return moe && c->topk_method == CONFIG_TOPK_NOAUX_TC;
    case ARCH_W_SHARED_GATE:
    case ARCH_W_SHARED_UP:
    case ARCH_W_SHARED_DOWN: return moe && c->shared != CONFIG_SHARED_NONE;
    case ARCH_W_SHARED_EXPERT_GATE: return moe && c->shared == CONFIG_SHARED_GATED;
    case ARCH_W_DENSE_GATE:
    case ARCH_W_DENSE_UP:
    case ARCH_W_DENSE_DOWN: return !moe;
    case ARCH_W_EXPERT_GATE:
    case ARCH_W_EXPERT_UP:
    case ARCH_W_EXPERT_DOWN: return moe;
    case S_ROLE_OAI_DOWN_BIAS: return moe && s_stacked(c);
    default: return true; /* embeddings, norms, o_proj */
    }
}

/* The distribution of role's values (synth.h); fan_in is the tensor's
 * in_features. */
static void s_draw_of(const config_t *c, int role, int64_t fan_in, s_item_t *it)
{
    it->draw = S_DRAW_NORMAL;
    it->mean = 0;
    switch (role) {
    case ARCH_W_EMBED:
        it->spread = 1;
        return;
    case ARCH_W_FINAL_NORM:
    case ARCH_W_ATTN_NORM:
    case ARCH_W_FFN_NORM:
    case ARCH_W_Q_NORM:
    case ARCH_W_K_NORM:
    case ARCH_W_Q_A_NORM:
    case ARCH_W_KV_A_NORM:
        it->mean = 1;
        it->spread = 0.1;
        return;
    case ARCH_W_Q_BIAS:
    case ARCH_W_K_BIAS:
    case ARCH_W_V_BIAS:
    case ARCH_W_O_BIAS:
    case ARCH_W_ROUTER_BIAS:
    case S_ROLE_OAI_DOWN_BIAS:
        it->spread = 0.05;
        return;
    case ARCH_W_SINKS:
        it->spread = 0.5;
        return;
    case ARCH_W_SCORE_BIAS:
        it->draw = S_DRAW_UNIFORM;
        it->spread = 0.12;
        return;
    case ARCH_W_ROUTER:
        it->spread = 2.0 / sqrt((double)fan_in);
        return;
    case ARCH_W_EXPERT_UP:
        if (s_stacked(c)) { /* gpt_oss gate_up_proj_bias */
            it->spread = 0.05;
            return;
        }
        break;
    case ARCH_W_EXPERT_GATE:
        if (s_stacked(c)) { /* gpt_oss gate_up_proj: some reach the clamp */
            it->spread = 3.0 / sqrt((double)fan_in);
            return;
        }
        break;
    default:
        break;
    }
    it->spread = 1.0 / sqrt((double)fan_in);
}

/* Fills *it for role of layer l (expert e), from arch_tensor(). */
static int s_fill_item(s_item_t *it, const config_t *c, int role, int l, int e,
                       st_dtype_t dtype, err_t *err)
{
    memset(it, 0, sizeof *it);
    int64_t fan_in;
    if (role == S_ROLE_OAI_DOWN_BIAS) {
        snprintf(it->name, sizeof it->name,
                 "model.layers.%d.mlp.experts.down_proj_bias", l);
        it->ndim = 2;
        it->shape[0] = c->n_experts;
        it->shape[1] = c->hidden_size;
        fan_in = c->hidden_size;
    } else {
        arch_tensor_t t;
        if (arch_tensor(c, (arch_weight_t)role, l, e, &t, err))
            return -1;
        memcpy(it->name, t.name, sizeof it->name);
        if (t.slice >= 0) {
            /* one expert of a stacked tensor: write the whole [E, ...];
             * those multiply from the left (y = x W), in_features first */
            it->ndim = t.ndim + 1;
            it->shape[0] = c->n_experts;
            memcpy(it->shape + 1, t.shape, (size_t)t.ndim * sizeof *t.shape);
            fan_in = t.shape[0];
        } else {
            it->ndim = t.ndim;
            memcpy(it->shape, t.shape, (size_t)t.ndim * sizeof *t.shape);
            fan_in = t.shape[t.ndim - 1];
        }
    }
    s_draw_of(c, role, fan_in, it);
    it->n_values = 1;
    for (int d = 0; d < it->ndim; d++) {
        if (it->shape[d] <= 0)
            return err_set(err, EINVAL, "tensor %s has dimension %lld",
                           it->name, (long long)it->shape[d]);
        /* config_parse() caps dims at 2^24: no overflow */
        it->n_values *= (uint64_t)it->shape[d];
    }
    it->nbytes = it->n_values * st_dtype_size(dtype);
    return 0;
}

/* Appends role of layer l (expert e) when the model has it; with items NULL
 * it only counts. */
static int s_add(s_item_t *items, size_t *n, const config_t *c, int role,
                 int l, int e, st_dtype_t dtype, err_t *err)
{
    if (!s_present(c, role, l))
        return 0;
    if (items && s_fill_item(&items[*n], c, role, l, e, dtype, err))
        return -1;
    (*n)++;
    return 0;
}

/* Walks the role table (see the file comment). With items NULL it only
 * counts into *n. */
static int s_expand(const s_arch_t *a, const config_t *c, st_dtype_t dtype,
                    s_item_t *items, size_t *n, err_t *err)
{
    size_t count = 0;
    for (size_t i = 0; i < a->n_roles;) {
        if (a->roles[i] < ARCH_W_ATTN_NORM) { /* model-wide */
            if (s_add(items, &count, c, a->roles[i], 0, 0, dtype, err))
                return -1;
            i++;
            continue;
        }
        size_t end = i; /* the layer block: [i, end) */
        while (end < a->n_roles && a->roles[end] >= ARCH_W_ATTN_NORM)
            end++;
        for (int l = 0; l < c->n_layers; l++) {
            for (size_t k = i; k < end;) {
                if (!s_is_expert_role(a->roles[k]) || s_stacked(c)) {
                    if (s_add(items, &count, c, a->roles[k], l, 0, dtype, err))
                        return -1;
                    k++;
                    continue;
                }
                size_t run = k; /* the expert run: [k, run) */
                while (run < end && s_is_expert_role(a->roles[run]))
                    run++;
                for (int e = 0; e < c->n_experts; e++)
                    for (size_t q = k; q < run; q++)
                        if (s_add(items, &count, c, a->roles[q], l, e, dtype,
                                  err))
                            return -1;
                k = run;
            }
        }
        i = end;
    }
    *n = count;
    return 0;
}

/* Greedy sharding in order, as transformers does. Returns the shard count. */
static size_t s_assign_shards(s_item_t *items, size_t n, uint64_t shard_bytes)
{
    size_t shard = 0;
    uint64_t used = 0;
    for (size_t i = 0; i < n; i++) {
        if (shard_bytes && used > 0 && used + items[i].nbytes > shard_bytes) {
            shard++;
            used = 0;
        }
        items[i].shard = shard;
        used += items[i].nbytes;
    }
    return n ? shard + 1 : 1;
}

/* ---- config.json --------------------------------------------------------- */

static const s_arch_t *s_arch_by_name(const char *name)
{
    for (size_t i = 0; i < S_COUNT(s_archs); i++)
        if (strcmp(s_archs[i].model_type, name) == 0)
            return &s_archs[i];
    return NULL;
}

static const s_arch_t *s_arch_by_id(config_arch_t arch)
{
    for (size_t i = 0; i < S_COUNT(s_archs); i++)
        if (s_archs[i].arch == arch)
            return &s_archs[i];
    return NULL;
}

/* The shortest decimal that reads back as the same float: 1e-5, not
 * 9.99999974737875e-6. */
static double s_float_decimal(float f)
{
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        double d = strtod(buf, NULL);
        if ((float)d == f)
            return d;
    }
    return (double)f;
}

static const char *s_torch_dtype(st_dtype_t dtype)
{
    switch (dtype) {
    case ST_F16: return "float16";
    case ST_BF16: return "bfloat16";
    case ST_F32: break;
    }
    return "float32";
}

/* Sets o[key] = v, taking v; on any failure (v NULL included) clears *ok. */
static void s_put(json_t *o, const char *key, json_t *v, bool *ok)
{
    if (!v) {
        *ok = false;
        return;
    }
    if (!*ok || !o) {
        json_decref(v);
        *ok = false;
        return;
    }
    if (json_object_set_new(o, key, v)) /* takes v even when failing */
        *ok = false;
}

static json_t *s_int_or_null(int x, bool is_null)
{
    return is_null ? json_null() : json_integer(x);
}

/* eos_token_id: null, one id or a list. */
static json_t *s_eos_json(const config_t *c)
{
    if (c->n_eos == 0)
        return json_null();
    if (c->n_eos == 1)
        return json_integer(c->eos_token_ids[0]);
    json_t *eos = json_array();
    for (int i = 0; eos && i < c->n_eos; i++)
        if (json_array_append_new(eos, json_integer(c->eos_token_ids[i]))) {
            json_decref(eos);
            eos = NULL;
        }
    return eos;
}

/* rope_parameters, as transformers 5 writes them. */
static json_t *s_rope_json(const config_t *c)
{
    json_t *r = json_object();
    bool ok = r != NULL;
    s_put(r, "rope_theta", json_real(c->rope_theta), &ok);
    if (c->rope_type != CONFIG_ROPE_YARN) {
        s_put(r, "rope_type", json_string("default"), &ok);
    } else {
        s_put(r, "rope_type", json_string("yarn"), &ok);
        s_put(r, "factor", json_real(c->rope_factor), &ok);
        s_put(r, "original_max_position_embeddings",
              json_integer(c->rope_orig_max_pos), &ok);
        s_put(r, "beta_fast", json_real(c->rope_beta_fast), &ok);
        s_put(r, "beta_slow", json_real(c->rope_beta_slow), &ok);
        s_put(r, "truncate", json_boolean(c->rope_truncate), &ok);
        if (c->rope_mscale != 0)
            s_put(r, "mscale", json_real(c->rope_mscale), &ok);
        if (c->rope_mscale_all_dim != 0)
            s_put(r, "mscale_all_dim", json_real(c->rope_mscale_all_dim), &ok);
        if (c->rope_attention_factor != 0)
            s_put(r, "attention_factor", json_real(c->rope_attention_factor),
                  &ok);
    }
    if (!ok) {
        json_decref(r);
        return NULL;
    }
    return r;
}

/* The dense layers of a qwen model (mlp_only_layers). */
static json_t *s_dense_layers_json(const config_t *c)
{
    json_t *a = json_array();
    for (int l = 0; a && l < c->n_layers; l++)
        if (!config_layer_is_moe(c, l) &&
            json_array_append_new(a, json_integer(l))) {
            json_decref(a);
            a = NULL;
        }
    return a;
}

/* gpt_oss layer_types: sliding_attention / full_attention per layer. */
static json_t *s_layer_types_json(const config_t *c)
{
    json_t *a = json_array();
    for (int l = 0; a && l < c->n_layers; l++)
        if (json_array_append_new(a, json_string(config_layer_window(c, l)
                                                     ? "sliding_attention"
                                                     : "full_attention"))) {
            json_decref(a);
            a = NULL;
        }
    return a;
}

/* config.json as transformers' save_pretrained would write it (the fields
 * that matter for inference, and each family's own). NULL on out of
 * memory. */
static json_t *s_config_json(const s_arch_t *a, const config_t *c,
                             st_dtype_t dtype)
{
    json_t *o = json_object();
    bool ok = o != NULL;
    json_t *archs = json_array();
    if (archs && json_array_append_new(archs, json_string(a->class_name))) {
        json_decref(archs);
        archs = NULL;
    }
    s_put(o, "architectures", archs, &ok);
    s_put(o, "model_type", json_string(a->model_type), &ok);
    s_put(o, "hidden_act", json_string("silu"), &ok);
    s_put(o, "hidden_size", json_integer(c->hidden_size), &ok);
    if (a->moe_inter_key) {
        s_put(o, "intermediate_size", json_integer(c->dense_intermediate_size),
              &ok);
        s_put(o, "moe_intermediate_size", json_integer(c->intermediate_size),
              &ok);
    } else {
        s_put(o, "intermediate_size", json_integer(c->intermediate_size), &ok);
    }
    s_put(o, "num_hidden_layers", json_integer(c->n_layers), &ok);
    s_put(o, "num_attention_heads", json_integer(c->n_heads), &ok);
    s_put(o, "num_key_value_heads", json_integer(c->n_kv_heads), &ok);
    s_put(o, "head_dim", json_integer(c->head_dim), &ok);
    s_put(o, a->experts_key, json_integer(c->n_experts), &ok);
    s_put(o, a->topk_key, json_integer(c->n_experts_per_tok), &ok);
    s_put(o, "vocab_size", json_integer(c->vocab_size), &ok);
    s_put(o, "max_position_embeddings",
          json_integer(c->max_position_embeddings), &ok);
    s_put(o, "rms_norm_eps", json_real(s_float_decimal(c->rms_norm_eps)), &ok);
    s_put(o, "rope_parameters", s_rope_json(c), &ok);
    s_put(o, "tie_word_embeddings", json_boolean(c->tie_word_embeddings), &ok);
    s_put(o, "bos_token_id", s_int_or_null(c->bos_token_id, c->bos_token_id < 0),
          &ok);
    s_put(o, "eos_token_id", s_eos_json(c), &ok);
    s_put(o, "dtype", json_string(s_torch_dtype(dtype)), &ok);
    s_put(o, "attention_dropout", json_real(0.0), &ok);
    s_put(o, "use_cache", json_true(), &ok);

    switch (c->arch) {
    case CONFIG_ARCH_MIXTRAL:
        s_put(o, "sliding_window",
              s_int_or_null(c->sliding_window, c->sliding_window == 0), &ok);
        s_put(o, "router_jitter_noise", json_real(0.0), &ok);
        break;
    case CONFIG_ARCH_QWEN2_MOE:
    case CONFIG_ARCH_QWEN3_MOE:
        if (c->arch == CONFIG_ARCH_QWEN2_MOE) {
            s_put(o, "qkv_bias", json_boolean(c->qkv_bias), &ok);
            s_put(o, "shared_expert_intermediate_size",
                  json_integer(c->shared_intermediate_size), &ok);
        } else {
            s_put(o, "attention_bias", json_boolean(c->qkv_bias), &ok);
        }
        s_put(o, "norm_topk_prob", json_boolean(c->norm_topk_prob), &ok);
        s_put(o, "decoder_sparse_step", json_integer(1), &ok);
        s_put(o, "mlp_only_layers", s_dense_layers_json(c), &ok);
        s_put(o, "use_sliding_window", json_false(), &ok);
        break;
    case CONFIG_ARCH_OLMOE:
        s_put(o, "attention_bias", json_boolean(c->qkv_bias), &ok);
        s_put(o, "norm_topk_prob", json_boolean(c->norm_topk_prob), &ok);
        s_put(o, "clip_qkv", json_null(), &ok);
        break;
    case CONFIG_ARCH_HUNYUAN_V1_MOE:
        s_put(o, "attention_bias", json_boolean(c->qkv_bias), &ok);
        s_put(o, "use_qk_norm", json_true(), &ok);
        s_put(o, "use_mixed_mlp_moe", json_true(), &ok);
        break;
    case CONFIG_ARCH_DEEPSEEK_V2:
    case CONFIG_ARCH_DEEPSEEK_V3: {
        const bool v3 = c->arch == CONFIG_ARCH_DEEPSEEK_V3;
        s_put(o, "attention_bias", json_boolean(c->qkv_bias), &ok);
        s_put(o, "n_shared_experts", json_integer(c->n_shared_experts), &ok);
        s_put(o, "first_k_dense_replace", json_integer(c->first_k_dense), &ok);
        s_put(o, "n_group", json_integer(c->n_group), &ok);
        s_put(o, "topk_group", json_integer(c->topk_group), &ok);
        s_put(o, "routed_scaling_factor",
              json_real(s_float_decimal(c->routed_scaling_factor)), &ok);
        s_put(o, "norm_topk_prob", json_boolean(c->norm_topk_prob), &ok);
        s_put(o, "q_lora_rank",
              s_int_or_null(c->q_lora_rank, c->q_lora_rank == 0), &ok);
        s_put(o, "kv_lora_rank", json_integer(c->kv_lora_rank), &ok);
        s_put(o, "qk_nope_head_dim", json_integer(c->qk_nope_head_dim), &ok);
        s_put(o, "qk_rope_head_dim", json_integer(c->qk_rope_head_dim), &ok);
        s_put(o, "qk_head_dim",
              json_integer(c->qk_nope_head_dim + c->qk_rope_head_dim), &ok);
        s_put(o, "v_head_dim", json_integer(c->v_head_dim), &ok);
        s_put(o, "topk_method",
              json_string(v3 ? "noaux_tc"
                          : c->topk_method == CONFIG_TOPK_GROUP_LIMITED
                              ? "group_limited_greedy"
                              : "greedy"),
              &ok);
        s_put(o, "scoring_func", json_string(v3 ? "sigmoid" : "softmax"), &ok);
        if (v3)
            s_put(o, "rope_interleave", json_boolean(c->rope_interleave), &ok);
        break;
    }
    case CONFIG_ARCH_GPT_OSS:
        s_put(o, "attention_bias", json_boolean(c->qkv_bias), &ok);
        s_put(o, "sliding_window",
              s_int_or_null(c->sliding_window, c->sliding_window == 0), &ok);
        s_put(o, "layer_types", s_layer_types_json(c), &ok);
        s_put(o, "swiglu_limit", json_real(s_float_decimal(c->swiglu_limit)),
              &ok);
        break;
    }
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* generation_config.json as transformers writes it from the model config:
 * the BOS and EOS ids, which generation stops at. NULL on out of memory. */
static json_t *s_generation_json(const config_t *c)
{
    json_t *root = json_pack("{s:b}", "_from_model_config", 1);
    json_t *eos = c->n_eos == 1 ? json_integer(c->eos_token_ids[0])
                                : json_array();
    for (int i = 0; eos && c->n_eos > 1 && i < c->n_eos; i++)
        if (json_array_append_new(eos, json_integer(c->eos_token_ids[i]))) {
            json_decref(eos);
            eos = NULL;
        }
    if (!root || !eos ||
        (c->bos_token_id >= 0 &&
         json_object_set_new(root, "bos_token_id",
                             json_integer(c->bos_token_id))) ||
        (c->n_eos > 0 && json_object_set(root, "eos_token_id", eos))) {
        json_decref(root);
        root = NULL;
    }
    json_decref(eos);
    return root;
}

/* Writes text and a newline to dir/name. */
static int s_write_text(const char *dir, const char *name, const char *text,
                        err_t *err)
{
    char *path = path_join(dir, name);
    if (!path)
        return err_set(err, ENOMEM, "out of memory");
    int rc = 0;
    FILE *f = fopen(path, "w");
    if (!f) {
        rc = err_set(err, errno, "cannot create %s: %s", path, strerror(errno));
    } else {
        errno = 0;
        bool ok = fputs(text, f) >= 0 && fputc('\n', f) != EOF;
        if (fclose(f) != 0 || !ok)
            rc = err_set(err, errno ? errno : EIO, "cannot write %s: %s", path,
                         strerror(errno ? errno : EIO));
    }
    mem_free(path);
    return rc;
}

/* ---- files --------------------------------------------------------------- */

/* mkdir -p. */
static int s_mkdirs(const char *dir, err_t *err)
{
    if (!*dir)
        return err_set(err, EINVAL, "empty output directory name");
    char *p = mem_strdup(dir);
    if (!p)
        return err_set(err, ENOMEM, "out of memory creating %s", dir);
    int rc = 0;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char saved = *s;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            rc = err_set(err, errno, "cannot create directory %s: %s", p,
                         strerror(errno));
            break;
        }
        *s = saved;
        if (saved == '\0')
            break;
    }
    struct stat st;
    if (rc == 0 && (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)))
        rc = err_set(err, ENOTDIR, "%s is not a directory", dir);
    mem_free(p);
    return rc;
}

static void s_shard_name(char *out, size_t size, size_t shard, size_t n_shards)
{
    if (n_shards == 1)
        snprintf(out, size, "model.safetensors");
    else
        snprintf(out, size, "model-%05zu-of-%05zu.safetensors", shard + 1,
                 n_shards);
}

/* Writes items[first..last) (all of one shard) to path. */
static int s_write_shard(const char *path, s_item_t *items, size_t first,
                         size_t last, st_dtype_t dtype, uint64_t seed,
                         float *chunk, err_t *err)
{
    st_writer_t *w = st_writer_new(path, err);
    if (!w)
        return -1;
    int rc = -1;
    for (size_t i = first; i < last; i++)
        if (st_writer_add(w, items[i].name, dtype, items[i].ndim,
                          items[i].shape, err))
            goto cleanup;
    if (st_writer_begin(w, err))
        goto cleanup;
    for (size_t i = first; i < last; i++) {
        const s_item_t *it = &items[i];
        s_rng_t rng;
        s_rng_init(&rng, seed, it->name);
        for (uint64_t at = 0; at < it->n_values; at += S_CHUNK) {
            size_t m = (size_t)(it->n_values - at < S_CHUNK ? it->n_values - at
                                                            : S_CHUNK);
            if (it->draw == S_DRAW_UNIFORM)
                s_fill_uniform(&rng, chunk, m, it->mean, it->spread);
            else
                s_fill_normal(&rng, chunk, m, it->mean, it->spread);
            if (st_writer_write(w, chunk, m, err))
                goto cleanup;
        }
    }
    rc = st_writer_finish(w, err);
cleanup:;
    int saved = errno;
    st_writer_destroy(&w);
    errno = saved;
    return rc;
}

static int s_unlink_stale(const char *dir, const char *name, err_t *err)
{
    char *p = path_join(dir, name);
    if (!p)
        return err_set(err, ENOMEM, "out of memory");
    int rc = 0;
    if (unlink(p) != 0 && errno != ENOENT)
        rc = err_set(err, errno, "cannot remove stale %s: %s", p,
                     strerror(errno));
    mem_free(p);
    return rc;
}

/* ---- public -------------------------------------------------------------- */

const char *synth_arch_names(void)
{
    return S_ARCH_NAMES;
}

const char *synth_preset_names(const char *arch)
{
    return arch && s_arch_by_name(arch) ? S_PRESET_NAMES : NULL;
}

/* The family's fields of *c (those config_parse_all() derives from its
 * config.json), from preset p. */
static void s_family(config_t *c, const s_preset_t *p)
{
    switch (c->arch) {
    case CONFIG_ARCH_MIXTRAL:
        c->norm_topk_prob = true;
        break;
    case CONFIG_ARCH_QWEN2_MOE:
        c->dense_intermediate_size = p->dense_inter;
        c->qkv_bias = true;
        c->shared = CONFIG_SHARED_GATED;
        c->shared_intermediate_size = p->shared_inter;
        c->n_shared_experts = 1;
        break;
    case CONFIG_ARCH_QWEN3_MOE:
        c->dense_intermediate_size = p->dense_inter;
        c->norm_topk_prob = true;
        c->qk_norm = CONFIG_QK_NORM_HEAD;
        break;
    case CONFIG_ARCH_OLMOE:
        c->qk_norm = CONFIG_QK_NORM_FULL;
        break;
    case CONFIG_ARCH_HUNYUAN_V1_MOE:
        c->norm_topk_prob = true;
        c->qk_norm = CONFIG_QK_NORM_HEAD_POST;
        c->shared = CONFIG_SHARED_PLAIN;
        c->shared_intermediate_size = p->inter;
        c->n_shared_experts = 1;
        break;
    case CONFIG_ARCH_DEEPSEEK_V2:
    case CONFIG_ARCH_DEEPSEEK_V3: {
        const bool v3 = c->arch == CONFIG_ARCH_DEEPSEEK_V3;
        c->dense_intermediate_size = p->dense_inter;
        c->head_dim = p->rope; /* HF: head_dim is the rotary width */
        c->q_lora_rank = p->q_lora;
        c->kv_lora_rank = p->kv_lora;
        c->qk_nope_head_dim = p->nope;
        c->qk_rope_head_dim = p->rope;
        c->v_head_dim = p->v_head;
        c->rope_interleave = true;
        c->scoring = v3 ? CONFIG_SCORING_SIGMOID : CONFIG_SCORING_SOFTMAX;
        c->topk_method = v3 ? CONFIG_TOPK_NOAUX_TC : CONFIG_TOPK_GROUP_LIMITED;
        c->norm_topk_prob = v3;
        c->n_group = p->n_group;
        c->topk_group = p->topk_group;
        c->routed_scaling_factor = v3 ? 2.5f : 1.5f;
        c->shared = CONFIG_SHARED_PLAIN;
        c->n_shared_experts = p->n_shared;
        c->shared_intermediate_size = p->n_shared * p->inter;
        c->first_k_dense = p->first_dense;
        for (int l = 0; l < p->first_dense; l++)
            c->layer_flags[l] |= CONFIG_LAYER_DENSE;
        break;
    }
    case CONFIG_ARCH_GPT_OSS:
        c->qkv_bias = c->o_bias = true;
        c->attn_sinks = true;
        c->router_bias = true;
        c->scoring = CONFIG_SCORING_TOPK_SOFTMAX;
        c->expert_act = CONFIG_EXPERT_SWIGLU_OAI;
        c->swiglu_limit = 7.0f;
        c->sliding_window = p->window;
        for (int l = 0; l < c->n_layers; l += 2)
            c->layer_flags[l] |= CONFIG_LAYER_SLIDING;
        /* gpt-oss's YaRN: 4096 positions stretched 32 times */
        c->rope_type = CONFIG_ROPE_YARN;
        c->rope_factor = 32;
        c->rope_orig_max_pos = 4096;
        c->rope_beta_fast = 32;
        c->rope_beta_slow = 1;
        c->rope_truncate = false;
        break;
    }
}

int synth_preset(config_t *cfg, const char *arch, const char *preset,
                 err_t *err)
{
    assert(cfg);
    memset(cfg, 0, sizeof *cfg);
    const s_arch_t *a = arch ? s_arch_by_name(arch) : NULL;
    if (!a)
        return err_set(err, EINVAL, "unknown architecture '%s' (known: %s)",
                       arch ? arch : "(none)", synth_arch_names());
    const s_preset_t *p = NULL;
    for (size_t i = 0; preset && i < a->n_presets; i++)
        if (strcmp(a->presets[i].name, preset) == 0)
            p = &a->presets[i];
    if (!p)
        return err_set(err, EINVAL, "unknown preset '%s' for %s (known: %s)",
                       preset ? preset : "(none)", a->model_type,
                       S_PRESET_NAMES);
    cfg->arch = a->arch;
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", a->model_type);
    cfg->hidden_size = p->hidden;
    cfg->n_layers = p->n_layers;
    cfg->n_heads = p->n_heads;
    cfg->n_kv_heads = p->n_kv_heads;
    cfg->head_dim = p->hidden / p->n_heads;
    cfg->intermediate_size = p->inter;
    cfg->dense_intermediate_size = p->inter;
    cfg->n_experts = p->n_experts;
    cfg->n_experts_per_tok = p->top_k;
    cfg->vocab_size = p->vocab;
    cfg->max_position_embeddings = 4096;
    cfg->rms_norm_eps = 1e-5f;
    cfg->rope_theta = a->rope_theta;
    cfg->rope_type = CONFIG_ROPE_DEFAULT;
    cfg->rope_factor = 1;
    cfg->n_group = 1;
    cfg->topk_group = 1;
    cfg->routed_scaling_factor = 1;
    cfg->tie_word_embeddings = false;
    cfg->bos_token_id = 1;
    cfg->n_eos = 1;
    cfg->eos_token_ids[0] = 2;
    s_family(cfg, p);
    return 0;
}

/* The config.json text of cfg (json_dumps'd: free() it) and the config it
 * reads back as, which the tensors follow; checks that it is cfg's model.
 * NULL with errno/err on failure. */
static char *s_config_text(const s_arch_t *a, const config_t *cfg,
                           st_dtype_t dtype, config_t *back, err_t *err)
{
    json_t *cjson = s_config_json(a, cfg, dtype);
    char *text = cjson ? json_dumps(cjson, JSON_INDENT(2) | JSON_SORT_KEYS |
                                               JSON_REAL_PRECISION(15))
                       : NULL;
    json_decref(cjson);
    if (!text) {
        err_set(err, ENOMEM, "out of memory building config.json");
        return NULL;
    }
    /* The config must be one config_parse_all() accepts, and say the same
     * model: a field config.json cannot carry for this family is an error,
     * not a checkpoint that disagrees with its config. */
    char want[256], got[256];
    if (config_parse_all(back, text, strlen(text), "the config to write", err))
        goto fail;
    config_model_id(cfg, want, sizeof want);
    config_model_id(back, got, sizeof got);
    if (strcmp(want, got) != 0) {
        err_set(err, EINVAL, "the config to write reads back as %s, not %s: "
                "%s cannot express it", got, want, a->model_type);
        goto fail;
    }
    return text;
fail:;
    int saved = errno;
    free(text);
    errno = saved;
    return NULL;
}

/* The tensors of the model described by back (items NULL: count only). */
static s_item_t *s_plan(const s_arch_t *a, const config_t *back,
                        st_dtype_t dtype, size_t *n, err_t *err)
{
    if (s_expand(a, back, dtype, NULL, n, err))
        return NULL;
    s_item_t *items = mem_calloc(*n ? *n : 1, sizeof *items);
    if (!items) {
        err_set(err, ENOMEM, "out of memory planning %zu tensors", *n);
        return NULL;
    }
    if (s_expand(a, back, dtype, items, n, err)) {
        int saved = errno;
        mem_free(items);
        errno = saved;
        return NULL;
    }
    return items;
}

static const s_arch_t *s_check_args(const config_t *cfg, st_dtype_t dtype,
                                    err_t *err)
{
    const s_arch_t *a = s_arch_by_id(cfg->arch);
    if (!a || st_dtype_size(dtype) == 0) {
        err_set(err, EINVAL, "synth: %s %d", a ? "invalid dtype" : "no tables "
                "for architecture", a ? (int)dtype : (int)cfg->arch);
        return NULL;
    }
    return a;
}

int synth_plan(const config_t *cfg, const synth_opts_t *opts,
               synth_stats_t *stats, err_t *err)
{
    assert(cfg);
    assert(opts);
    assert(stats);
    st_dtype_t dtype = opts->dtype ? opts->dtype : ST_F32;
    const s_arch_t *a = s_check_args(cfg, dtype, err);
    if (!a)
        return -1;
    config_t back;
    char *text = s_config_text(a, cfg, dtype, &back, err);
    if (!text)
        return -1;
    free(text);
    size_t n = 0;
    s_item_t *items = s_plan(a, &back, dtype, &n, err);
    if (!items)
        return -1;
    stats->n_tensors = n;
    stats->n_files = s_assign_shards(items, n, opts->shard_bytes);
    stats->data_bytes = 0;
    for (size_t i = 0; i < n; i++)
        stats->data_bytes += items[i].nbytes;
    mem_free(items);
    return 0;
}

int synth_write(const char *dir, const config_t *cfg, const synth_opts_t *opts,
                synth_stats_t *stats, err_t *err)
{
    assert(dir);
    assert(cfg);
    assert(opts);
    json_t *gjson = NULL;
    char *ctext = NULL, *gtext = NULL;
    char *path = NULL;
    s_item_t *items = NULL;
    float *chunk = NULL;
    const char **names = NULL, **files = NULL;
    char (*shard_names)[64] = NULL;
    int rc = -1;

    st_dtype_t dtype = opts->dtype ? opts->dtype : ST_F32;
    const s_arch_t *a = s_check_args(cfg, dtype, err);
    if (!a)
        goto cleanup;
    config_t back;
    if (!(ctext = s_config_text(a, cfg, dtype, &back, err)))
        goto cleanup;
    gjson = s_generation_json(cfg);
    if (gjson)
        gtext = json_dumps(gjson, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!gtext) {
        err_set(err, ENOMEM, "out of memory building generation_config.json");
        goto cleanup;
    }

    size_t n = 0;
    if (!(items = s_plan(a, &back, dtype, &n, err)))
        goto cleanup;
    chunk = mem_alloc(S_CHUNK * sizeof *chunk);
    if (!chunk) {
        err_set(err, ENOMEM, "out of memory");
        goto cleanup;
    }
    size_t n_shards = s_assign_shards(items, n, opts->shard_bytes);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += items[i].nbytes;

    if (s_mkdirs(dir, err))
        goto cleanup;
    if (s_write_text(dir, "config.json", ctext, err) ||
        s_write_text(dir, "generation_config.json", gtext, err))
        goto cleanup;
    if (s_unlink_stale(dir, n_shards == 1 ? "model.safetensors.index.json"
                                          : "model.safetensors", err))
        goto cleanup;

    shard_names = mem_calloc(n_shards, sizeof *shard_names);
    if (!shard_names) {
        err_set(err, ENOMEM, "out of memory");
        goto cleanup;
    }
    size_t first = 0;
    for (size_t s = 0; s < n_shards; s++) {
        size_t last = first;
        while (last < n && items[last].shard == s)
            last++;
        s_shard_name(shard_names[s], sizeof shard_names[s], s, n_shards);
        mem_free(path);
        if (!(path = path_join(dir, shard_names[s]))) {
            err_set(err, ENOMEM, "out of memory");
            goto cleanup;
        }
        if (s_write_shard(path, items, first, last, dtype, opts->seed, chunk,
                          err))
            goto cleanup;
        first = last;
    }
    if (n_shards > 1) {
        names = mem_calloc(n, sizeof *names);
        files = mem_calloc(n, sizeof *files);
        mem_free(path);
        path = path_join(dir, "model.safetensors.index.json");
        if (!names || !files || !path) {
            err_set(err, ENOMEM, "out of memory");
            goto cleanup;
        }
        for (size_t i = 0; i < n; i++) {
            names[i] = items[i].name;
            files[i] = shard_names[items[i].shard];
        }
        if (st_index_write(path, total, n, names, files, err))
            goto cleanup;
    }
    if (stats) {
        stats->n_tensors = n;
        stats->n_files = n_shards;
        stats->data_bytes = total;
    }
    rc = 0;
cleanup:;
    int saved = errno;
    mem_free(files);
    mem_free(names);
    mem_free(shard_names);
    mem_free(chunk);
    mem_free(items);
    mem_free(path);
    free(gtext); /* json_dumps allocates with jansson's malloc */
    free(ctext);
    json_decref(gjson);
    errno = saved;
    return rc;
}
