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
} config_arch_t;

typedef enum config_rope_type {
    CONFIG_ROPE_DEFAULT = 0,   /* plain RoPE */
} config_rope_type_t;

enum { CONFIG_MAX_EOS = 8 };

typedef struct config {
    config_arch_t arch;
    char model_type[32];        /* as written in config.json */
    int hidden_size;            /* d_model */
    int n_layers;               /* num_hidden_layers */
    int n_heads;                /* num_attention_heads */
    int n_kv_heads;             /* num_key_value_heads (defaults to n_heads) */
    int head_dim;               /* head_dim (defaults to hidden_size / n_heads) */
    int intermediate_size;      /* expert FFN width (Mixtral: intermediate_size) */
    int n_experts;              /* routed experts per MoE layer */
    int n_experts_per_tok;      /* top-k */
    int vocab_size;
    int max_position_embeddings;
    float rms_norm_eps;
    double rope_theta;          /* rope_parameters.rope_theta, or top-level rope_theta */
    config_rope_type_t rope_type;
    int sliding_window;         /* 0: none */
    bool tie_word_embeddings;   /* lm_head shares embed_tokens */
    int bos_token_id;           /* -1: none */
    int n_eos;                  /* entries used in eos_token_ids */
    int eos_token_ids[CONFIG_MAX_EOS];
} config_t;

/* Reads <dir>/config.json. Returns 0, or -1 with errno and err set; on failure
 * *cfg is left zeroed. */
int config_load(config_t *cfg, const char *dir, err_t *err);

/* Parses config JSON text; origin names the source in error messages. */
int config_parse(config_t *cfg, const char *json_text, size_t len,
                 const char *origin, err_t *err);

/* A short text that two processes compare to agree they loaded the same
 * model shape: architecture and every dimension the math or the wire depends
 * on, e.g. "mixtral:h1024:l8:e8:k2:i2816:v32000:a16/4x64". Writes at most
 * size bytes (NUL included); returns the length it needed. */
int config_model_id(const config_t *cfg, char *buf, size_t size);

/* "mixtral", ... (borrowed, static). */
const char *config_arch_name(config_arch_t arch);

#endif /* MOE_MODEL_CONFIG_H */
