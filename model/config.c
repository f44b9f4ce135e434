/* config: see config.h.
 *
 * The common fields are read here, the rest by the family's parse hook
 * (model/family.h): its descriptor gives its model_type, its class in
 * "architectures" and the names of its expert-count fields. Parsing fills a
 * local config_t and copies it out only when every field passed its checks,
 * so a failed call leaves *cfg zeroed.
 */
#include "model/config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "core/mem.h"
#include "model/cfgjson.h"
#include "model/family.h"

const char *config_arch_name(config_arch_t arch)
{
    const family_t *f = family_of(arch);
    return f ? f->model_type : "unknown";
}

const char *config_quant_name(config_quant_method_t method)
{
    switch (method) {
    case CONFIG_QUANT_NONE: return "none";
    case CONFIG_QUANT_FP8: return "fp8";
    case CONFIG_QUANT_MXFP4: return "mxfp4";
    }
    return "unknown";
}

bool config_arch_supported(config_arch_t arch)
{
    const family_t *f = family_of(arch);
    return f && f->supported;
}

bool config_is_mla(const config_t *cfg)
{
    return cfg->attn == CONFIG_ATTN_MLA;
}

bool config_experts_stacked(const config_t *cfg)
{
    return cfg->experts_layout == CONFIG_EXPERTS_STACKED;
}

bool config_layer_is_moe(const config_t *cfg, int layer)
{
    return layer >= 0 && layer < cfg->n_layers &&
           !(cfg->layer_flags[layer] & CONFIG_LAYER_DENSE);
}

int config_layer_window(const config_t *cfg, int layer)
{
    if (layer < 0 || layer >= cfg->n_layers ||
        !(cfg->layer_flags[layer] & CONFIG_LAYER_SLIDING))
        return 0;
    return cfg->sliding_window;
}

int config_model_id(const config_t *cfg, char *buf, size_t size)
{
    int n = snprintf(buf, size, "%s:h%d:l%d:e%d:k%d:i%d:v%d:a%d/%dx%d",
                     config_arch_name(cfg->arch), cfg->hidden_size,
                     cfg->n_layers, cfg->n_experts, cfg->n_experts_per_tok,
                     cfg->intermediate_size, cfg->vocab_size, cfg->n_heads,
                     cfg->n_kv_heads, cfg->head_dim);
    /* Extensions only where a family has them: a mixtral id is unchanged. */
    int n_dense = 0;
    for (int l = 0; l < cfg->n_layers; l++)
        n_dense += !config_layer_is_moe(cfg, l);
    char ext[160];
    int m = 0;
    if (n_dense > 0 && m >= 0)
        m += snprintf(ext + m, sizeof ext - (size_t)m, ":d%d/%d",
                      cfg->dense_intermediate_size, n_dense);
    if (cfg->shared != CONFIG_SHARED_NONE && m >= 0)
        m += snprintf(ext + m, sizeof ext - (size_t)m, ":s%d%s",
                      cfg->shared_intermediate_size,
                      cfg->shared == CONFIG_SHARED_GATED ? "g" : "");
    if (config_is_mla(cfg) && m >= 0)
        m += snprintf(ext + m, sizeof ext - (size_t)m, ":mla%d/%d/%d/%d/%d",
                      cfg->q_lora_rank, cfg->kv_lora_rank,
                      cfg->qk_nope_head_dim, cfg->qk_rope_head_dim,
                      cfg->v_head_dim);
    if (cfg->n_group > 1 && m >= 0)
        m += snprintf(ext + m, sizeof ext - (size_t)m, ":g%d/%d", cfg->n_group,
                      cfg->topk_group);
    if (m <= 0)
        return n;
    size_t used = n < 0 ? 0 : (size_t)n;
    int n2 = snprintf(used < size ? buf + used : NULL,
                      used < size ? size - used : 0, "%s", ext);
    return n + n2;
}

/* One RoPE object (rope_parameters, or the older rope_scaling). Every key is
 * known: another one could change the angles. field names it in messages. */
static int s_parse_rope_object(config_t *c, const json_t *obj,
                               const char *field, double *theta,
                               const char *origin, err_t *err)
{
    static const char *const known[] = {
        "rope_theta", "rope_type", "type", "factor",
        "original_max_position_embeddings", "beta_fast", "beta_slow",
        "truncate", "mscale", "mscale_all_dim", "attention_factor",
    };
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)obj, key, v) {
        bool ok = false;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            ok |= strcmp(key, known[i]) == 0;
        if (!ok)
            return err_set(err, EINVAL, "%s: field '%s.%.64s' is not supported",
                           origin, field, key);
    }
    static const char *const types[] = {"default", "yarn"};
    static const int type_values[] = {CONFIG_ROPE_DEFAULT, CONFIG_ROPE_YARN};
    const char *type_keys[] = {"rope_type", "type"};
    int type = CONFIG_ROPE_DEFAULT;
    for (int i = 0; i < 2; i++) {
        char name[48];
        snprintf(name, sizeof name, "%s.%s", field, type_keys[i]);
        const json_t *t = json_object_get(obj, type_keys[i]);
        if (!t || json_is_null(t))
            continue;
        if (!json_is_string(t))
            return err_set(err, EINVAL, "%s: field '%s' must be a string, "
                           "not %s", origin, name, cfgjson_type_name(t));
        json_t *wrap = json_pack("{sO}", name, (json_t *)t);
        if (!wrap)
            return err_set(err, ENOMEM, "%s: out of memory", origin);
        int rc = cfgjson_choice(wrap, name, types, type_values, 2,
                              CONFIG_ROPE_DEFAULT, &type, origin, err);
        json_decref(wrap);
        if (rc)
            return -1;
    }
    const json_t *t = json_object_get(obj, "rope_theta");
    if (t && !json_is_null(t)) {
        if (!json_is_number(t))
            return err_set(err, EINVAL, "%s: field '%s.rope_theta' must be a "
                           "number, not %s", origin, field, cfgjson_type_name(t));
        *theta = json_number_value(t);
    }
    c->rope_type = (config_rope_type_t)type;
    if (type != CONFIG_ROPE_YARN)
        return 0;
    double factor = 0, beta_fast = 32, beta_slow = 1, mscale = 0, mscale_all = 0,
           attn_factor = 0;
    int orig = 0;
    bool truncate = true;
    char name[64];
    snprintf(name, sizeof name, "%s.factor", field);
    if (cfgjson_number(obj, "factor", false, 0, &factor, origin, err) ||
        cfgjson_number(obj, "beta_fast", false, 32, &beta_fast, origin, err) ||
        cfgjson_number(obj, "beta_slow", false, 1, &beta_slow, origin, err) ||
        cfgjson_number(obj, "mscale", false, 0, &mscale, origin, err) ||
        cfgjson_number(obj, "mscale_all_dim", false, 0, &mscale_all, origin,
                     err) ||
        cfgjson_number(obj, "attention_factor", false, 0, &attn_factor, origin,
                     err) ||
        cfgjson_int(obj, "original_max_position_embeddings", false, true, 0,
                  &orig, origin, err) ||
        cfgjson_bool(obj, "truncate", true, &truncate, origin, err))
        return -1;
    if (!(factor >= 1) || !isfinite(factor))
        return err_set(err, EINVAL, "%s: field '%s' = %g must be >= 1 for yarn",
                       origin, name, factor);
    if (orig == 0)
        orig = c->max_position_embeddings;
    if (orig < 1)
        return err_set(err, EINVAL, "%s: field '%s.original_max_position_"
                       "embeddings' = %d must be positive", origin, field, orig);
    if (!isfinite(beta_fast) || !isfinite(beta_slow) || !isfinite(mscale) ||
        !isfinite(mscale_all) || !isfinite(attn_factor) || attn_factor < 0)
        return err_set(err, EINVAL, "%s: field '%s' has a yarn parameter out "
                       "of range", origin, field);
    c->rope_factor = factor;
    c->rope_orig_max_pos = orig;
    c->rope_beta_fast = beta_fast;
    c->rope_beta_slow = beta_slow;
    c->rope_mscale = mscale;
    c->rope_mscale_all_dim = mscale_all;
    c->rope_attention_factor = attn_factor;
    c->rope_truncate = truncate;
    return 0;
}

/* rope_theta, rope_type and the yarn parameters, from rope_parameters (newer
 * transformers), rope_scaling and the top-level rope_theta (older
 * checkpoints) or the architecture default. rope_parameters wins. */
static int s_parse_rope(config_t *c, const json_t *root, double def_theta,
                        const char *origin, err_t *err)
{
    double theta = def_theta;
    c->rope_factor = 1;
    if (cfgjson_number(root, "rope_theta", false, def_theta, &theta, origin, err))
        return -1;
    const char *fields[] = {"rope_scaling", "rope_parameters"};
    for (int i = 0; i < 2; i++) {
        const json_t *rp = json_object_get(root, fields[i]);
        if (!rp || json_is_null(rp))
            continue;
        if (!json_is_object(rp))
            return err_set(err, EINVAL, "%s: field '%s' must be an object, "
                           "not %s", origin, fields[i], cfgjson_type_name(rp));
        if (s_parse_rope_object(c, rp, fields[i], &theta, origin, err))
            return -1;
    }
    if (!(theta > 0) || !isfinite(theta))
        return err_set(err, EINVAL,
                       "%s: rope_theta = %g must be finite and > 0", origin,
                       theta);
    c->rope_theta = theta;
    return 0;
}

/* eos_token_id: null, one integer or a list of integers. */
static int s_parse_eos(config_t *c, const json_t *root, const char *origin,
                       err_t *err)
{
    const json_t *v = json_object_get(root, "eos_token_id");
    c->n_eos = 0;
    if (!v || json_is_null(v))
        return 0;
    if (json_is_integer(v)) {
        if (cfgjson_range("eos_token_id", json_integer_value(v), 0,
                          c->vocab_size - 1, origin, err))
            return -1;
        c->eos_token_ids[c->n_eos++] = (int)json_integer_value(v);
        return 0;
    }
    if (!json_is_array(v))
        return err_set(err, EINVAL,
                       "%s: field 'eos_token_id' must be null, an integer or a "
                       "list of integers, not %s", origin, cfgjson_type_name(v));
    if (json_array_size(v) > CONFIG_MAX_EOS)
        return err_set(err, EINVAL,
                       "%s: field 'eos_token_id' lists %zu ids, more than %d",
                       origin, json_array_size(v), CONFIG_MAX_EOS);
    size_t i;
    const json_t *id;
    json_array_foreach(v, i, id) {
        if (!json_is_integer(id))
            return err_set(err, EINVAL,
                           "%s: field 'eos_token_id' entry %zu must be an "
                           "integer, not %s", origin, i, cfgjson_type_name(id));
        if (cfgjson_range("eos_token_id", json_integer_value(id), 0,
                          c->vocab_size - 1, origin, err))
            return -1;
        c->eos_token_ids[c->n_eos++] = (int)json_integer_value(id);
    }
    return 0;
}

/* model_type -> family; "architectures", when present, must name the
 * class that goes with it. */
static const family_t *s_parse_arch(config_t *c, const json_t *root,
                                    const char *origin, err_t *err)
{
    const json_t *mt = json_object_get(root, "model_type");
    if (!mt) {
        err_set(err, EINVAL, "%s: missing required field 'model_type'", origin);
        return NULL;
    }
    if (!json_is_string(mt)) {
        err_set(err, EINVAL, "%s: field 'model_type' must be a string, not %s",
                origin, cfgjson_type_name(mt));
        return NULL;
    }
    const char *name = json_string_value(mt);
    const family_t *f = family_find(name);
    if (!f) {
        err_set(err, EINVAL, "unsupported architecture '%.64s' in %s "
                "(supported: %s)", name, origin, family_names());
        return NULL;
    }
    const json_t *archs = json_object_get(root, "architectures");
    if (archs && !json_is_null(archs)) {
        if (!json_is_array(archs)) {
            err_set(err, EINVAL, "%s: field 'architectures' must be a list, "
                    "not %s", origin, cfgjson_type_name(archs));
            return NULL;
        }
        bool found = false;
        const char *first = NULL;
        size_t i;
        const json_t *a;
        json_array_foreach(archs, i, a) {
            if (!json_is_string(a)) {
                err_set(err, EINVAL, "%s: field 'architectures' entry %zu "
                        "must be a string, not %s", origin, i,
                        cfgjson_type_name(a));
                return NULL;
            }
            if (!first)
                first = json_string_value(a);
            if (strcmp(json_string_value(a), f->class_name) == 0)
                found = true;
        }
        if (!found) {
            err_set(err, EINVAL, "unsupported architecture '%.64s' in %s: "
                    "model_type '%s' expects architectures to list %s",
                    first ? first : "(empty list)", origin, f->model_type,
                    f->class_name);
            return NULL;
        }
    }
    c->arch = f->arch;
    snprintf(c->model_type, sizeof c->model_type, "%s", f->model_type);
    c->attn = f->attn;
    c->experts_layout = f->experts_layout;
    return f;
}

/* The routed expert count: one of the family's field names (several may be
 * present if they agree). A per-layer list (hunyuan) must be uniform. */
static int s_parse_n_experts(config_t *c, const json_t *root,
                             const family_t *f, const char *origin,
                             err_t *err)
{
    const char *found = NULL;
    for (int i = 0; i < 3 && f->experts_keys[i]; i++) {
        const json_t *v = json_object_get(root, f->experts_keys[i]);
        if (!v || json_is_null(v))
            continue;
        int x = 0;
        if (f->layer_lists ? cfgjson_uniform_int(root, f->experts_keys[i], &x, origin, err)
                  : cfgjson_int(root, f->experts_keys[i], true, false, 0, &x,
                              origin, err))
            return -1;
        if (found && x != c->n_experts)
            return err_set(err, EINVAL, "%s: fields '%s' = %d and '%s' = %d "
                           "disagree", origin, found, c->n_experts,
                           f->experts_keys[i], x);
        found = f->experts_keys[i];
        c->n_experts = x;
    }
    if (!found)
        return err_set(err, EINVAL, "%s: missing required field '%s'", origin,
                       f->experts_keys[0]);
    return cfgjson_range(found, c->n_experts, 1, 65536, origin, err);
}

static int s_parse_fields(config_t *c, const json_t *root,
                          const family_t *f, const char *origin,
                          err_t *err)
{
    if (cfgjson_int(root, "hidden_size", true, false, 0, &c->hidden_size, origin,
                  err) ||
        cfgjson_int(root, "num_hidden_layers", true, false, 0, &c->n_layers,
                  origin, err) ||
        cfgjson_int(root, "num_attention_heads", true, false, 0, &c->n_heads,
                  origin, err) ||
        cfgjson_int(root, "intermediate_size", true, false, 0,
                  &c->dense_intermediate_size, origin, err) ||
        s_parse_n_experts(c, root, f, origin, err) ||
        cfgjson_int(root, "vocab_size", true, false, 0, &c->vocab_size, origin,
                  err))
        return -1;
    if (f->layer_lists ? cfgjson_uniform_int(root, f->topk_key,
                                             &c->n_experts_per_tok, origin, err)
                       : cfgjson_int(root, f->topk_key, true, false, 0,
                                     &c->n_experts_per_tok, origin, err))
        return -1;
    c->intermediate_size = c->dense_intermediate_size;
    double eps = 0;
    if (cfgjson_number(root, "rms_norm_eps", true, 0, &eps, origin, err))
        return -1;

    if (cfgjson_range("hidden_size", c->hidden_size, 1, CONFIG_DIM_MAX, origin,
                      err) ||
        cfgjson_range("num_hidden_layers", c->n_layers, 1, CONFIG_MAX_LAYERS,
                      origin, err) ||
        cfgjson_range("num_attention_heads", c->n_heads, 1, 65536, origin,
                      err) ||
        cfgjson_range("intermediate_size", c->dense_intermediate_size, 1,
                      CONFIG_DIM_MAX, origin, err) ||
        cfgjson_range("vocab_size", c->vocab_size, 1, CONFIG_DIM_MAX, origin, err))
        return -1;
    if (!(eps > 0) || !isfinite(eps) || eps >= 1)
        return err_set(err, EINVAL, "%s: field 'rms_norm_eps' = %g is out of "
                       "range (0, 1)", origin, eps);
    c->rms_norm_eps = (float)eps;

    if (cfgjson_int(root, "num_key_value_heads", false, true, c->n_heads,
                  &c->n_kv_heads, origin, err) ||
        cfgjson_range("num_key_value_heads", c->n_kv_heads, 1, c->n_heads,
                      origin, err))
        return -1;
    if (c->n_heads % c->n_kv_heads != 0)
        return err_set(err, EINVAL, "%s: num_key_value_heads = %d does not "
                       "divide num_attention_heads = %d", origin,
                       c->n_kv_heads, c->n_heads);

    const json_t *hd = json_object_get(root, "head_dim");
    if (!hd || json_is_null(hd)) {
        if (c->hidden_size % c->n_heads != 0)
            return err_set(err, EINVAL, "%s: no head_dim and hidden_size = %d "
                           "is not a multiple of num_attention_heads = %d",
                           origin, c->hidden_size, c->n_heads);
        c->head_dim = c->hidden_size / c->n_heads;
    } else if (cfgjson_int(root, "head_dim", true, false, 0, &c->head_dim, origin,
                         err) ||
               cfgjson_range("head_dim", c->head_dim, 2, CONFIG_DIM_MAX, origin,
                             err)) {
        return -1;
    }
    if (c->head_dim % 2 != 0)
        return err_set(err, EINVAL, "%s: head_dim = %d must be even for RoPE",
                       origin, c->head_dim);
    if ((long long)c->n_heads * c->head_dim > CONFIG_DIM_MAX)
        return err_set(err, EINVAL, "%s: num_attention_heads * head_dim = %lld "
                       "is too large", origin,
                       (long long)c->n_heads * c->head_dim);

    if (cfgjson_int(root, "max_position_embeddings", false, true, 4096,
                  &c->max_position_embeddings, origin, err) ||
        cfgjson_range("max_position_embeddings", c->max_position_embeddings, 1,
                      INT_MAX, origin, err) ||
        cfgjson_int(root, "sliding_window", false, true, 0, &c->sliding_window,
                  origin, err) ||
        cfgjson_range("sliding_window", c->sliding_window, 0, INT_MAX, origin,
                      err) ||
        cfgjson_int(root, "bos_token_id", false, true, -1, &c->bos_token_id,
                  origin, err))
        return -1;
    if (c->bos_token_id != -1 &&
        cfgjson_range("bos_token_id", c->bos_token_id, 0, c->vocab_size - 1,
                      origin, err))
        return -1;

    const json_t *tie = json_object_get(root, "tie_word_embeddings");
    if (tie && !json_is_null(tie) && !json_is_boolean(tie))
        return err_set(err, EINVAL, "%s: field 'tie_word_embeddings' must be a "
                       "boolean, not %s", origin, cfgjson_type_name(tie));
    c->tie_word_embeddings = tie && json_is_true(tie);

    /* The expert FFN is SwiGLU; another activation changes the math. */
    const json_t *act = json_object_get(root, "hidden_act");
    if (act && !json_is_null(act)) {
        if (!json_is_string(act))
            return err_set(err, EINVAL, "%s: field 'hidden_act' must be a "
                           "string, not %s", origin, cfgjson_type_name(act));
        if (strcmp(json_string_value(act), "silu") != 0)
            return err_set(err, EINVAL, "%s: hidden_act '%.64s' is not "
                           "supported (supported: silu)", origin,
                           json_string_value(act));
    }

    if (cfgjson_quant(&c->quant, root, origin, err) ||
        cfgjson_dtype(&c->dtype, root, origin, err) ||
        s_parse_rope(c, root, f->default_rope_theta, origin, err) ||
        s_parse_eos(c, root, origin, err))
        return -1;

    /* Defaults every family shares; its parser changes what is its own. */
    c->n_group = 1;
    c->topk_group = 1;
    c->routed_scaling_factor = 1;
    if (f->parse(c, root, f, origin, err))
        return -1;
    c->rope_dim = config_is_mla(c) ? c->qk_rope_head_dim : c->head_dim;
    if (cfgjson_range(f->topk_key, c->n_experts_per_tok, 1, c->n_experts,
                      origin, err) ||
        cfgjson_range("moe_intermediate_size", c->intermediate_size, 1,
                      CONFIG_DIM_MAX, origin, err))
        return -1;
    /* A window no layer uses is no window (qwen keeps sliding_window with
     * use_sliding_window false). */
    bool slides = false;
    for (int l = 0; l < c->n_layers; l++)
        slides |= (c->layer_flags[l] & CONFIG_LAYER_SLIDING) != 0;
    if (!slides)
        c->sliding_window = 0;
    return 0;
}

/* The engine runs this config: the architecture and, for now, plain RoPE
 * (YaRN where the family's descriptor says so: gpt_oss in kernels/rope,
 * deepseek with mscale in engine/latent). */
static int s_check_supported(const config_t *c, const char *origin, err_t *err)
{
    if (!config_arch_supported(c->arch))
        return err_set(err, ENOTSUP, "%s: architecture '%s' is not supported "
                       "yet", origin, c->model_type);
    if (c->rope_type != CONFIG_ROPE_DEFAULT && !family_of(c->arch)->yarn)
        return err_set(err, EINVAL, "%s: rope_parameters.rope_type 'yarn' is "
                       "not supported yet for %s (supported: default)", origin,
                       c->model_type);
    /* MLA with attention_bias would bias q_a / kv_a_proj_with_mqa, which no
     * published DeepSeek checkpoint has and the loader does not name. */
    if (config_is_mla(c) && c->qkv_bias)
        return err_set(err, EINVAL, "%s: field 'attention_bias' = true is not "
                       "supported for %s (supported: false)", origin,
                       c->model_type);
    return 0;
}

static int s_parse(config_t *cfg, const char *json_text, size_t len,
                   const char *origin, bool all, err_t *err)
{
    json_t *root = NULL;
    config_t c;
    int rc = -1;

    memset(cfg, 0, sizeof *cfg);
    memset(&c, 0, sizeof c);
    if (!origin)
        origin = "config";
    json_error_t jerr;
    root = json_loadb(json_text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        err_set(err, EINVAL, "%s: invalid JSON at line %d column %d: %s",
                origin, jerr.line, jerr.column, jerr.text);
        goto cleanup;
    }
    if (!json_is_object(root)) {
        err_set(err, EINVAL, "%s: top level must be a JSON object, not %s",
                origin, cfgjson_type_name(root));
        goto cleanup;
    }
    const family_t *f = s_parse_arch(&c, root, origin, err);
    if (!f || s_parse_fields(&c, root, f, origin, err))
        goto cleanup;
    if (!all && s_check_supported(&c, origin, err))
        goto cleanup;
    *cfg = c;
    rc = 0;
cleanup:;
    int saved = errno;
    json_decref(root);
    errno = saved;
    return rc;
}

int config_parse(config_t *cfg, const char *json_text, size_t len,
                 const char *origin, err_t *err)
{
    return s_parse(cfg, json_text, len, origin, false, err);
}

int config_parse_all(config_t *cfg, const char *json_text, size_t len,
                     const char *origin, err_t *err)
{
    return s_parse(cfg, json_text, len, origin, true, err);
}

int config_load(config_t *cfg, const char *dir, err_t *err)
{
    char *path = NULL;
    char *text = NULL;
    FILE *f = NULL;
    int rc = -1;

    memset(cfg, 0, sizeof *cfg);
    size_t n = strlen(dir) + sizeof "/config.json";
    path = mem_alloc(n);
    if (!path) {
        err_set(err, ENOMEM, "out of memory reading %s/config.json", dir);
        goto cleanup;
    }
    snprintf(path, n, "%s/config.json", dir);
    f = fopen(path, "rb");
    if (!f) {
        err_set(err, errno, "cannot open %s: %s", path, strerror(errno));
        goto cleanup;
    }
    /* config.json files are a few kB; 16 MB is a generous sanity limit. */
    enum { S_MAX_CONFIG = 16 << 20 };
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        err_set(err, EINVAL, "%s is not a regular file", path);
        goto cleanup;
    }
    if (st.st_size > S_MAX_CONFIG) {
        err_set(err, EINVAL, "%s is larger than %d bytes", path, S_MAX_CONFIG);
        goto cleanup;
    }
    size_t cap = (size_t)st.st_size + 1;
    text = mem_alloc(cap);
    if (!text) {
        err_set(err, ENOMEM, "out of memory reading %s", path);
        goto cleanup;
    }
    size_t len = fread(text, 1, cap, f);
    if (ferror(f) || len == cap) {
        err_set(err, EIO, "cannot read %s (changed while reading?)", path);
        goto cleanup;
    }
    rc = config_parse(cfg, text, len, path, err);
cleanup:;
    int saved = errno;
    if (f)
        fclose(f);
    mem_free(text);
    mem_free(path);
    errno = saved;
    return rc;
}
