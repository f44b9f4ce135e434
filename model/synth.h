/* synth: random-weight models in the Hugging Face layout, for tests and
 * benchmarks, for every architecture config.h parses: mixtral, qwen2_moe,
 * qwen3_moe, olmoe, hunyuan_v1_moe, deepseek_v2, deepseek_v3, gpt_oss.
 *
 * synth_write() writes <dir>/config.json (with each family's own fields, as
 * transformers writes them), <dir>/generation_config.json (its bos_token_id
 * and eos_token_id) and the weights (model.safetensors, or
 * model-0000i-of-0000n.safetensors shards plus model.safetensors.index.json)
 * for a config_t, usually one from synth_preset(). The tokenizer is not
 * synth's: moe-mkmodel adds one with tokenizer/trainer.h. Tensor names and
 * shapes are arch_tensor()'s (arch.h) and which tensors a layer has is
 * arch_present()'s, the rule weights_load() reads by, so a synth checkpoint
 * is what the loader asks for. The presets, the order of the tensors and the
 * family's own config.json fields are its descriptor's (model/family.h).
 *
 * Weights are deterministic: tensor values depend only on the seed, the
 * tensor's name and the config, never on dtype or sharding, so an F16/BF16
 * model holds exactly the F32 model's values rounded to nearest even.
 * Distributions (N(0, s): normal with standard deviation s; fan_in is the
 * matrix's in_features):
 *   embeddings N(0, 1); linear weights N(0, 1/sqrt(fan_in));
 *   router rows N(0, 2/sqrt(hidden)) so routing is decisive (router logits
 *   have a standard deviation near 2); norm weights 1 + N(0, 0.1);
 *   biases (attention, router, gpt_oss experts) N(0, 0.05); gpt_oss sinks
 *   N(0, 0.5) and fused gate_up_proj N(0, 3/sqrt(hidden)), so that a few
 *   percent of the pre-activations reach its SwiGLU clamp at 7;
 *   deepseek_v3 e_score_correction_bias uniform on [0, 0.12].
 * Generation streams: memory use is a few MB whatever the model size.
 */
#ifndef MOE_MODEL_SYNTH_H
#define MOE_MODEL_SYNTH_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/progress.h"
#include "model/config.h"
#include "model/safetensors.h"

typedef struct synth_opts {
    uint64_t seed;          /* same seed, same weights */
    st_dtype_t dtype;       /* on-disk dtype; 0 means ST_F32 */
    uint64_t shard_bytes;   /* 0: one model.safetensors; else the largest
                               tensor-data bytes per shard (a bigger tensor
                               gets a shard of its own) */
    progress_t *progress;   /* NULL, or counts the tensor bytes written (the
                               caller inits it with synth_plan's data_bytes) */
} synth_opts_t;

typedef struct synth_stats {
    size_t n_tensors;       /* tensors written */
    size_t n_files;         /* .safetensors files written */
    uint64_t data_bytes;    /* tensor bytes, the index's total_size */
} synth_stats_t;

/* Fills *cfg, every field config_parse_all() would read from its
 * config.json, with preset `preset` of architecture `arch` (synth_arch_names()).
 * Presets: "tiny" (fixture-sized: hidden 64, 2 layers, 3 for deepseek),
 * "small" (hidden 256, 4 layers) and "medium" (hidden 1024, 8 layers, about
 * the 2.6 GB of float32 of Mixtral's medium, each family with its own
 * proportions: finer experts with top-4 to top-8 for qwen, olmoe, deepseek
 * and gpt_oss, groups that limit deepseek's choice, alternating sliding and
 * full attention for gpt_oss); vocabularies of 512, 2048 and 32000 ids.
 * Every preset has bos_token_id 1 and eos_token_id 2. -1 with EINVAL and an
 * error listing the known names when either is unknown; *cfg is then
 * zeroed. */
int synth_preset(config_t *cfg, const char *arch, const char *preset,
                 err_t *err);

/* Preset names of an architecture, "tiny, small, medium" (borrowed, static),
 * or NULL for an unknown architecture. */
const char *synth_preset_names(const char *arch);

/* Architectures synth can write, "mixtral, qwen2_moe, ..." (borrowed,
 * static): every family of model/family.c's list. */
const char *synth_arch_names(void);

/* Writes the model described by cfg into dir, creating dir and its parents
 * if needed. cfg must pass config_parse_all()'s checks and its config.json
 * must read back as the same model (config_model_id()): EINVAL otherwise,
 * before anything is written. Removes a stale model.safetensors when writing
 * shards, and a stale index when writing one file, so that the directory
 * holds one checkpoint. stats may be NULL. -1 with errno/err on failure
 * (e.g. EACCES, ENOSPC, ENOMEM), possibly leaving a partial model. */
int synth_write(const char *dir, const config_t *cfg, const synth_opts_t *opts,
                synth_stats_t *stats, err_t *err);

/* What synth_write() would write for cfg and opts (tensors, files, bytes),
 * without writing: the same checks, nothing on disk. */
int synth_plan(const config_t *cfg, const synth_opts_t *opts,
               synth_stats_t *stats, err_t *err);

#endif /* MOE_MODEL_SYNTH_H */
