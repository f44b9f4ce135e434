/* genconfig: see genconfig.h. */
#include "model/genconfig.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/mem.h"
#include "core/path.h"

/* One id of eos_token_id, checked against the vocabulary. */
static int s_add_id(genconfig_t *gen, const json_t *v, const config_t *cfg, const char *path,
                    err_t *err)
{
    if (!json_is_integer(v))
        return err_set(err, EINVAL, "%s: field 'eos_token_id' must be null, an integer or "
                       "a list of integers", path);
    json_int_t id = json_integer_value(v);
    if (id < 0 || id >= cfg->vocab_size)
        return err_set(err, EINVAL, "%s: eos_token_id %lld is outside the vocabulary [0, %d)",
                       path, (long long)id, cfg->vocab_size);
    if (gen->n_eos == CONFIG_MAX_EOS)
        return err_set(err, EINVAL, "%s: field 'eos_token_id' lists more than %d ids", path,
                       CONFIG_MAX_EOS);
    gen->eos_token_ids[gen->n_eos++] = (int)id;
    return 0;
}

int genconfig_load(genconfig_t *gen, const char *dir, const config_t *cfg, err_t *err)
{
    memset(gen, 0, sizeof *gen);
    char *path = path_join(dir, "generation_config.json");
    if (!path)
        return err_set(err, ENOMEM, "out of memory for a path");
    json_t *root = NULL;
    int rc = -1;
    if (access(path, F_OK) != 0) {
        /* No generation_config.json: config.json's ids. */
        gen->n_eos = cfg->n_eos;
        memcpy(gen->eos_token_ids, cfg->eos_token_ids, sizeof gen->eos_token_ids);
        if (cfg->n_eos > 0)
            snprintf(gen->source, sizeof gen->source, "config.json");
        mem_free(path);
        return 0;
    }
    json_error_t jerr;
    root = json_load_file(path, 0, &jerr);
    if (!root || !json_is_object(root)) {
        err_set(err, EINVAL, "%s: not a JSON object%s%s", path, root ? "" : ": ",
                root ? "" : jerr.text);
        goto done;
    }
    const json_t *v = json_object_get(root, "eos_token_id");
    if (!v) {
        gen->n_eos = cfg->n_eos;
        memcpy(gen->eos_token_ids, cfg->eos_token_ids, sizeof gen->eos_token_ids);
        if (cfg->n_eos > 0)
            snprintf(gen->source, sizeof gen->source, "config.json");
        rc = 0;
        goto done;
    }
    if (json_is_array(v)) {
        size_t i;
        const json_t *id;
        json_array_foreach(v, i, id)
            if (s_add_id(gen, id, cfg, path, err) < 0)
                goto done;
    } else if (!json_is_null(v) && s_add_id(gen, v, cfg, path, err) < 0) {
        goto done;
    }
    snprintf(gen->source, sizeof gen->source, "generation_config.json");
    rc = 0;

done:
    json_decref(root);
    mem_free(path);
    if (rc < 0)
        memset(gen, 0, sizeof *gen);
    return rc;
}
