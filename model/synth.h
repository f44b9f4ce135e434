/* synth: random-weight models in the Hugging Face layout, for tests and
 * benchmarks.
 *
 * synth_write() writes <dir>/config.json, <dir>/generation_config.json (its
 * bos_token_id and eos_token_id) and the weights (model.safetensors, or
 * model-0000i-of-0000n.safetensors shards plus model.safetensors.index.json)
 * for a config_t, usually one from synth_preset(). The tokenizer is not
 * synth's: moe-mkmodel adds one with tokenizer/trainer.h. Tensor names, shapes and
 * order follow the architecture's Hugging Face checkpoints; each architecture
 * is a table of tensor templates in synth.c (scope: model, layer or expert;
 * shape from config dims; initialisation), so a new one is a new table.
 *
 * Weights are deterministic: tensor values depend only on the seed, the
 * tensor's name and the config, never on dtype or sharding, so an F16/BF16
 * model holds exactly the F32 model's values rounded to nearest even.
 * Distributions (N(0, s): normal with standard deviation s):
 *   embeddings N(0, 1); linear weights N(0, 1/sqrt(in_features));
 *   router rows N(0, 2/sqrt(hidden)) so routing is decisive (router logits
 *   have a standard deviation near 2); norm weights 1 + N(0, 0.1).
 * Generation streams: memory use is a few MB whatever the model size.
 */
#ifndef MOE_MODEL_SYNTH_H
#define MOE_MODEL_SYNTH_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "model/config.h"
#include "model/safetensors.h"

typedef struct synth_opts {
    uint64_t seed;          /* same seed, same weights */
    st_dtype_t dtype;       /* on-disk dtype; 0 means ST_F32 */
    uint64_t shard_bytes;   /* 0: one model.safetensors; else the largest
                               tensor-data bytes per shard (a bigger tensor
                               gets a shard of its own) */
} synth_opts_t;

typedef struct synth_stats {
    size_t n_tensors;       /* tensors written */
    size_t n_files;         /* .safetensors files written */
    uint64_t data_bytes;    /* tensor bytes, the index's total_size */
} synth_stats_t;

/* Fills *cfg with preset `preset` ("tiny", "small", "medium": vocabularies
 * of 512, 2048 and 32000 ids) of architecture `arch` ("mixtral"). Every
 * preset has bos_token_id 1 and eos_token_id 2. -1 with EINVAL and an error listing the
 * known names when either is unknown; *cfg is then zeroed. */
int synth_preset(config_t *cfg, const char *arch, const char *preset,
                 err_t *err);

/* Preset names of an architecture, "tiny, small, medium" (borrowed, static),
 * or NULL for an unknown architecture. */
const char *synth_preset_names(const char *arch);

/* Architectures synth can write, "mixtral" (borrowed, static). */
const char *synth_arch_names(void);

/* Writes the model described by cfg into dir, creating dir and its parents
 * if needed. cfg must pass config_parse()'s checks (EINVAL otherwise, before
 * anything is written). Removes a stale model.safetensors when writing
 * shards, and a stale index when writing one file, so that the directory
 * holds one checkpoint. stats may be NULL. -1 with errno/err on failure
 * (e.g. EACCES, ENOSPC, ENOMEM), possibly leaving a partial model. */
int synth_write(const char *dir, const config_t *cfg, const synth_opts_t *opts,
                synth_stats_t *stats, err_t *err);

#endif /* MOE_MODEL_SYNTH_H */
