/* genconfig: the generation defaults a model ships in generation_config.json.
 *
 * Hugging Face generate() stops at the EOS ids of generation_config.json when
 * the file exists and names them, else at config.json's eos_token_id; chat
 * models often list several there (end of turn and end of text). moecluster
 * stops the same way, so a served model ends where its reference would.
 */
#ifndef MOE_MODEL_GENCONFIG_H
#define MOE_MODEL_GENCONFIG_H

#include "core/err.h"
#include "model/config.h"

typedef struct genconfig {
    int n_eos;                         /* 0: generation never stops early */
    int eos_token_ids[CONFIG_MAX_EOS];
    char source[32];                   /* "generation_config.json", "config.json" or "" */
} genconfig_t;

/* Fills *gen for the model in dir whose config.json gave cfg: the EOS ids of
 * <dir>/generation_config.json when it has an eos_token_id (null there means
 * none), else cfg's. A missing file is no error. -1 with EINVAL and err naming
 * the file and field when the file is not JSON, eos_token_id is not null, an
 * integer or a list of integers, lists more than CONFIG_MAX_EOS ids, or an id
 * is outside [0, vocab_size); *gen is then zeroed. */
int genconfig_load(genconfig_t *gen, const char *dir, const config_t *cfg, err_t *err);

#endif /* MOE_MODEL_GENCONFIG_H */
