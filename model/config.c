/* config: see config.h.
 *
 * One table row per supported architecture gives its model_type, its class in
 * "architectures" and the name of its expert-count field. Parsing fills a
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

typedef struct s_arch_row s_arch_row_t;

/* Parses what is particular to one family into c (the common fields are
 * already there). */
typedef int (*s_family_fn)(config_t *c, const json_t *root,
                           const s_arch_row_t *row, const char *origin,
                           err_t *err);

struct s_arch_row {
    config_arch_t arch;
    const char *model_type;    /* "model_type" in config.json */
    const char *class_name;    /* expected entry of "architectures" */
    const char *experts_keys[3]; /* fields that may hold the routed expert
                                    count, NULL-terminated */
    const char *topk_key;      /* field holding the experts per token */
    double default_rope_theta; /* when neither rope field is given */
    bool supported;            /* false: parses, the engine cannot run it yet */
    s_family_fn family;
};

static int s_family_mixtral(config_t *, const json_t *, const s_arch_row_t *,
                            const char *, err_t *);
static int s_family_qwen(config_t *, const json_t *, const s_arch_row_t *,
                         const char *, err_t *);
static int s_family_olmoe(config_t *, const json_t *, const s_arch_row_t *,
                          const char *, err_t *);
static int s_family_hunyuan(config_t *, const json_t *, const s_arch_row_t *,
                            const char *, err_t *);
static int s_family_deepseek(config_t *, const json_t *, const s_arch_row_t *,
                             const char *, err_t *);
static int s_family_gpt_oss(config_t *, const json_t *, const s_arch_row_t *,
                            const char *, err_t *);

static const s_arch_row_t s_archs[] = {
    {CONFIG_ARCH_MIXTRAL, "mixtral", "MixtralForCausalLM",
     {"num_local_experts"}, "num_experts_per_tok", 1e6, true, s_family_mixtral},
    {CONFIG_ARCH_QWEN2_MOE, "qwen2_moe", "Qwen2MoeForCausalLM",
     {"num_experts"}, "num_experts_per_tok", 1e4, true, s_family_qwen},
    {CONFIG_ARCH_QWEN3_MOE, "qwen3_moe", "Qwen3MoeForCausalLM",
     {"num_experts", "num_local_experts"}, "num_experts_per_tok", 1e4, true,
     s_family_qwen},
    {CONFIG_ARCH_OLMOE, "olmoe", "OlmoeForCausalLM", {"num_experts"},
     "num_experts_per_tok", 1e4, true, s_family_olmoe},
    {CONFIG_ARCH_HUNYUAN_V1_MOE, "hunyuan_v1_moe", "HunYuanMoEV1ForCausalLM",
     {"num_experts"}, "moe_topk", 1e4, true, s_family_hunyuan},
    {CONFIG_ARCH_DEEPSEEK_V2, "deepseek_v2", "DeepseekV2ForCausalLM",
     {"n_routed_experts"}, "num_experts_per_tok", 1e4, true,
     s_family_deepseek},
    {CONFIG_ARCH_DEEPSEEK_V3, "deepseek_v3", "DeepseekV3ForCausalLM",
     {"n_routed_experts"}, "num_experts_per_tok", 1e4, true,
     s_family_deepseek},
    {CONFIG_ARCH_GPT_OSS, "gpt_oss", "GptOssForCausalLM",
     {"num_local_experts"}, "num_experts_per_tok", 1.5e5, true,
     s_family_gpt_oss},
};
enum { S_N_ARCHS = sizeof s_archs / sizeof s_archs[0] };

/* Largest width we accept for any one dimension: far above any real model,
 * low enough that products of two or three dims never overflow int64. */
enum { S_DIM_MAX = 1 << 24 };

static const s_arch_row_t *s_row_of(config_arch_t arch)
{
    for (int i = 0; i < S_N_ARCHS; i++)
        if (s_archs[i].arch == arch)
            return &s_archs[i];
    return NULL;
}

const char *config_arch_name(config_arch_t arch)
{
    const s_arch_row_t *row = s_row_of(arch);
    return row ? row->model_type : "unknown";
}

bool config_arch_supported(config_arch_t arch)
{
    const s_arch_row_t *row = s_row_of(arch);
    return row && row->supported;
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
    if (cfg->kv_lora_rank > 0 && m >= 0)
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

/* "mixtral, ..." for error messages. */
static void s_supported_list(char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < S_N_ARCHS && used < size; i++) {
        int n = snprintf(buf + used, size - used, "%s%s", i ? ", " : "",
                         s_archs[i].model_type);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

static const char *s_json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "unknown";
}

/* Reads an integer field. Absent (or null when null_ok) gives def with
 * *present = 0. Returns 0 or -1 with EINVAL naming the field. */
static int s_get_int(const json_t *root, const char *key, bool required,
                     bool null_ok, int def, int *out, const char *origin,
                     err_t *err)
{
    const json_t *v = json_object_get(root, key);
    if (!v || (null_ok && json_is_null(v))) {
        if (required)
            return err_set(err, EINVAL, "%s: missing required field '%s'",
                           origin, key);
        *out = def;
        return 0;
    }
    if (!json_is_integer(v))
        return err_set(err, EINVAL, "%s: field '%s' must be an integer, not %s",
                       origin, key, s_json_type_name(v));
    json_int_t x = json_integer_value(v);
    if (x < INT_MIN || x > INT_MAX)
        return err_set(err, EINVAL, "%s: field '%s' = %lld does not fit an int",
                       origin, key, (long long)x);
    *out = (int)x;
    return 0;
}

/* Reads a number field (integer or real). */
static int s_get_number(const json_t *root, const char *key, bool required,
                        double def, double *out, const char *origin, err_t *err)
{
    const json_t *v = json_object_get(root, key);
    if (!v) {
        if (required)
            return err_set(err, EINVAL, "%s: missing required field '%s'",
                           origin, key);
        *out = def;
        return 0;
    }
    if (!json_is_number(v))
        return err_set(err, EINVAL, "%s: field '%s' must be a number, not %s",
                       origin, key, s_json_type_name(v));
    *out = json_number_value(v);
    return 0;
}

/* Checks lo <= x <= hi for an int field. */
static int s_check_range(const char *key, long long x, long long lo,
                         long long hi, const char *origin, err_t *err)
{
    if (x < lo || x > hi)
        return err_set(err, EINVAL,
                       "%s: field '%s' = %lld is out of range [%lld, %lld]",
                       origin, key, x, lo, hi);
    return 0;
}

/* Reads an optional boolean field: absent or null gives def. */
static int s_get_bool(const json_t *root, const char *key, bool def, bool *out,
                      const char *origin, err_t *err)
{
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v))
        return err_set(err, EINVAL, "%s: field '%s' must be a boolean, not %s",
                       origin, key, s_json_type_name(v));
    *out = json_is_true(v);
    return 0;
}

/* Reads an optional string field into one of names[] (n of them), giving
 * values[i]; absent or null gives def. Any other string is EINVAL naming the
 * field, the value and what is supported. */
static int s_get_choice(const json_t *root, const char *key,
                        const char *const *names, const int *values, int n,
                        int def, int *out, const char *origin, err_t *err)
{
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_string(v))
        return err_set(err, EINVAL, "%s: field '%s' must be a string, not %s",
                       origin, key, s_json_type_name(v));
    for (int i = 0; i < n; i++)
        if (strcmp(json_string_value(v), names[i]) == 0) {
            *out = values[i];
            return 0;
        }
    char list[160];
    size_t used = 0;
    list[0] = '\0';
    for (int i = 0; i < n && used < sizeof list; i++) {
        int m = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "",
                         names[i]);
        if (m < 0)
            break;
        used += (size_t)m;
    }
    return err_set(err, EINVAL, "%s: %s '%.64s' is not supported (supported: %s)",
                   origin, key, json_string_value(v), list);
}

/* A field whose presence (non-null, not false, not an empty list or object)
 * asks for math we do not implement: EINVAL naming it. */
static int s_refuse(const json_t *root, const char *key, const char *why,
                    const char *origin, err_t *err)
{
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v) || json_is_false(v) ||
        (json_is_array(v) && json_array_size(v) == 0) ||
        (json_is_object(v) && json_object_size(v) == 0))
        return 0;
    return err_set(err, EINVAL, "%s: field '%s' is not supported (%s)", origin,
                   key, why);
}

/* A field that must hold a given integer when present. */
static int s_require_int(const json_t *root, const char *key, int want,
                         const char *origin, err_t *err)
{
    int x = want;
    if (s_get_int(root, key, false, true, want, &x, origin, err))
        return -1;
    if (x != want)
        return err_set(err, EINVAL, "%s: field '%s' = %d is not supported "
                       "(supported: %d)", origin, key, x, want);
    return 0;
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
                           "not %s", origin, name, s_json_type_name(t));
        json_t *wrap = json_pack("{sO}", name, (json_t *)t);
        if (!wrap)
            return err_set(err, ENOMEM, "%s: out of memory", origin);
        int rc = s_get_choice(wrap, name, types, type_values, 2,
                              CONFIG_ROPE_DEFAULT, &type, origin, err);
        json_decref(wrap);
        if (rc)
            return -1;
    }
    const json_t *t = json_object_get(obj, "rope_theta");
    if (t && !json_is_null(t)) {
        if (!json_is_number(t))
            return err_set(err, EINVAL, "%s: field '%s.rope_theta' must be a "
                           "number, not %s", origin, field, s_json_type_name(t));
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
    if (s_get_number(obj, "factor", false, 0, &factor, origin, err) ||
        s_get_number(obj, "beta_fast", false, 32, &beta_fast, origin, err) ||
        s_get_number(obj, "beta_slow", false, 1, &beta_slow, origin, err) ||
        s_get_number(obj, "mscale", false, 0, &mscale, origin, err) ||
        s_get_number(obj, "mscale_all_dim", false, 0, &mscale_all, origin,
                     err) ||
        s_get_number(obj, "attention_factor", false, 0, &attn_factor, origin,
                     err) ||
        s_get_int(obj, "original_max_position_embeddings", false, true, 0,
                  &orig, origin, err) ||
        s_get_bool(obj, "truncate", true, &truncate, origin, err))
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
    if (s_get_number(root, "rope_theta", false, def_theta, &theta, origin, err))
        return -1;
    const char *fields[] = {"rope_scaling", "rope_parameters"};
    for (int i = 0; i < 2; i++) {
        const json_t *rp = json_object_get(root, fields[i]);
        if (!rp || json_is_null(rp))
            continue;
        if (!json_is_object(rp))
            return err_set(err, EINVAL, "%s: field '%s' must be an object, "
                           "not %s", origin, fields[i], s_json_type_name(rp));
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
        if (s_check_range("eos_token_id", json_integer_value(v), 0,
                          c->vocab_size - 1, origin, err))
            return -1;
        c->eos_token_ids[c->n_eos++] = (int)json_integer_value(v);
        return 0;
    }
    if (!json_is_array(v))
        return err_set(err, EINVAL,
                       "%s: field 'eos_token_id' must be null, an integer or a "
                       "list of integers, not %s", origin, s_json_type_name(v));
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
                           "integer, not %s", origin, i, s_json_type_name(id));
        if (s_check_range("eos_token_id", json_integer_value(id), 0,
                          c->vocab_size - 1, origin, err))
            return -1;
        c->eos_token_ids[c->n_eos++] = (int)json_integer_value(id);
    }
    return 0;
}

/* model_type -> table row; "architectures", when present, must name the
 * class that goes with it. */
static const s_arch_row_t *s_parse_arch(config_t *c, const json_t *root,
                                        const char *origin, err_t *err)
{
    const json_t *mt = json_object_get(root, "model_type");
    if (!mt) {
        err_set(err, EINVAL, "%s: missing required field 'model_type'", origin);
        return NULL;
    }
    if (!json_is_string(mt)) {
        err_set(err, EINVAL, "%s: field 'model_type' must be a string, not %s",
                origin, s_json_type_name(mt));
        return NULL;
    }
    const char *name = json_string_value(mt);
    const s_arch_row_t *row = NULL;
    for (int i = 0; i < S_N_ARCHS; i++)
        if (strcmp(s_archs[i].model_type, name) == 0)
            row = &s_archs[i];
    if (!row) {
        char list[128];
        s_supported_list(list, sizeof list);
        err_set(err, EINVAL, "unsupported architecture '%.64s' in %s "
                "(supported: %s)", name, origin, list);
        return NULL;
    }
    const json_t *archs = json_object_get(root, "architectures");
    if (archs && !json_is_null(archs)) {
        if (!json_is_array(archs)) {
            err_set(err, EINVAL, "%s: field 'architectures' must be a list, "
                    "not %s", origin, s_json_type_name(archs));
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
                        s_json_type_name(a));
                return NULL;
            }
            if (!first)
                first = json_string_value(a);
            if (strcmp(json_string_value(a), row->class_name) == 0)
                found = true;
        }
        if (!found) {
            err_set(err, EINVAL, "unsupported architecture '%.64s' in %s: "
                    "model_type '%s' expects architectures to list %s",
                    first ? first : "(empty list)", origin, row->model_type,
                    row->class_name);
            return NULL;
        }
    }
    c->arch = row->arch;
    snprintf(c->model_type, sizeof c->model_type, "%s", row->model_type);
    return row;
}

/* The Mixtral (Llama-family) fields. */
static int s_get_uniform_int(const json_t *root, const char *key, int *out,
                             const char *origin, err_t *err);

/* The routed expert count: one of the row's field names (several may be
 * present if they agree). A per-layer list (hunyuan) must be uniform. */
static int s_parse_n_experts(config_t *c, const json_t *root,
                             const s_arch_row_t *row, const char *origin,
                             err_t *err)
{
    const char *found = NULL;
    for (int i = 0; i < 3 && row->experts_keys[i]; i++) {
        const json_t *v = json_object_get(root, row->experts_keys[i]);
        if (!v || json_is_null(v))
            continue;
        int x = 0;
        const bool lists = row->arch == CONFIG_ARCH_HUNYUAN_V1_MOE;
        if (lists ? s_get_uniform_int(root, row->experts_keys[i], &x, origin, err)
                  : s_get_int(root, row->experts_keys[i], true, false, 0, &x,
                              origin, err))
            return -1;
        if (found && x != c->n_experts)
            return err_set(err, EINVAL, "%s: fields '%s' = %d and '%s' = %d "
                           "disagree", origin, found, c->n_experts,
                           row->experts_keys[i], x);
        found = row->experts_keys[i];
        c->n_experts = x;
    }
    if (!found)
        return err_set(err, EINVAL, "%s: missing required field '%s'", origin,
                       row->experts_keys[0]);
    return s_check_range(found, c->n_experts, 1, 65536, origin, err);
}

static int s_parse_fields(config_t *c, const json_t *root,
                          const s_arch_row_t *row, const char *origin,
                          err_t *err)
{
    if (s_get_int(root, "hidden_size", true, false, 0, &c->hidden_size, origin,
                  err) ||
        s_get_int(root, "num_hidden_layers", true, false, 0, &c->n_layers,
                  origin, err) ||
        s_get_int(root, "num_attention_heads", true, false, 0, &c->n_heads,
                  origin, err) ||
        s_get_int(root, "intermediate_size", true, false, 0,
                  &c->dense_intermediate_size, origin, err) ||
        s_parse_n_experts(c, root, row, origin, err) ||
        s_get_int(root, "vocab_size", true, false, 0, &c->vocab_size, origin,
                  err))
        return -1;
    /* hunyuan_v1_moe's moe_topk may be a per-layer list; its family parser
     * reads it. */
    if (strcmp(row->topk_key, "num_experts_per_tok") == 0 &&
        s_get_int(root, row->topk_key, true, false, 0, &c->n_experts_per_tok,
                  origin, err))
        return -1;
    c->intermediate_size = c->dense_intermediate_size;
    double eps = 0;
    if (s_get_number(root, "rms_norm_eps", true, 0, &eps, origin, err))
        return -1;

    if (s_check_range("hidden_size", c->hidden_size, 1, S_DIM_MAX, origin,
                      err) ||
        s_check_range("num_hidden_layers", c->n_layers, 1, CONFIG_MAX_LAYERS,
                      origin, err) ||
        s_check_range("num_attention_heads", c->n_heads, 1, 65536, origin,
                      err) ||
        s_check_range("intermediate_size", c->dense_intermediate_size, 1,
                      S_DIM_MAX, origin, err) ||
        s_check_range("vocab_size", c->vocab_size, 1, S_DIM_MAX, origin, err))
        return -1;
    if (!(eps > 0) || !isfinite(eps) || eps >= 1)
        return err_set(err, EINVAL, "%s: field 'rms_norm_eps' = %g is out of "
                       "range (0, 1)", origin, eps);
    c->rms_norm_eps = (float)eps;

    if (s_get_int(root, "num_key_value_heads", false, true, c->n_heads,
                  &c->n_kv_heads, origin, err) ||
        s_check_range("num_key_value_heads", c->n_kv_heads, 1, c->n_heads,
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
    } else if (s_get_int(root, "head_dim", true, false, 0, &c->head_dim, origin,
                         err) ||
               s_check_range("head_dim", c->head_dim, 2, S_DIM_MAX, origin,
                             err)) {
        return -1;
    }
    if (c->head_dim % 2 != 0)
        return err_set(err, EINVAL, "%s: head_dim = %d must be even for RoPE",
                       origin, c->head_dim);
    if ((long long)c->n_heads * c->head_dim > S_DIM_MAX)
        return err_set(err, EINVAL, "%s: num_attention_heads * head_dim = %lld "
                       "is too large", origin,
                       (long long)c->n_heads * c->head_dim);

    if (s_get_int(root, "max_position_embeddings", false, true, 4096,
                  &c->max_position_embeddings, origin, err) ||
        s_check_range("max_position_embeddings", c->max_position_embeddings, 1,
                      INT_MAX, origin, err) ||
        s_get_int(root, "sliding_window", false, true, 0, &c->sliding_window,
                  origin, err) ||
        s_check_range("sliding_window", c->sliding_window, 0, INT_MAX, origin,
                      err) ||
        s_get_int(root, "bos_token_id", false, true, -1, &c->bos_token_id,
                  origin, err))
        return -1;
    if (c->bos_token_id != -1 &&
        s_check_range("bos_token_id", c->bos_token_id, 0, c->vocab_size - 1,
                      origin, err))
        return -1;

    const json_t *tie = json_object_get(root, "tie_word_embeddings");
    if (tie && !json_is_null(tie) && !json_is_boolean(tie))
        return err_set(err, EINVAL, "%s: field 'tie_word_embeddings' must be a "
                       "boolean, not %s", origin, s_json_type_name(tie));
    c->tie_word_embeddings = tie && json_is_true(tie);

    /* The expert FFN is SwiGLU; another activation changes the math. */
    const json_t *act = json_object_get(root, "hidden_act");
    if (act && !json_is_null(act)) {
        if (!json_is_string(act))
            return err_set(err, EINVAL, "%s: field 'hidden_act' must be a "
                           "string, not %s", origin, s_json_type_name(act));
        if (strcmp(json_string_value(act), "silu") != 0)
            return err_set(err, EINVAL, "%s: hidden_act '%.64s' is not "
                           "supported (supported: silu)", origin,
                           json_string_value(act));
    }

    if (s_refuse(root, "quantization_config", "only unquantised weights are "
                 "read", origin, err) ||
        s_parse_rope(c, root, row->default_rope_theta, origin, err) ||
        s_parse_eos(c, root, origin, err))
        return -1;

    /* Defaults every family shares; its parser changes what is its own. */
    c->n_group = 1;
    c->topk_group = 1;
    c->routed_scaling_factor = 1;
    if (row->family(c, root, row, origin, err))
        return -1;
    if (s_check_range(row->topk_key, c->n_experts_per_tok, 1, c->n_experts,
                      origin, err) ||
        s_check_range("moe_intermediate_size", c->intermediate_size, 1,
                      S_DIM_MAX, origin, err))
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

/* ---- families ------------------------------------------------------------ */

/* layer_types: "full_attention" / "sliding_attention" per layer. Returns 1
 * when present (flags set), 0 when absent, -1 on error. */
static int s_parse_layer_types(config_t *c, const json_t *root,
                               const char *origin, err_t *err)
{
    const json_t *v = json_object_get(root, "layer_types");
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return err_set(err, EINVAL, "%s: field 'layer_types' must be a list, "
                       "not %s", origin, s_json_type_name(v));
    if (json_array_size(v) != (size_t)c->n_layers)
        return err_set(err, EINVAL, "%s: field 'layer_types' lists %zu layers, "
                       "num_hidden_layers is %d", origin, json_array_size(v),
                       c->n_layers);
    size_t i;
    const json_t *t;
    json_array_foreach(v, i, t) {
        const char *name = json_is_string(t) ? json_string_value(t) : NULL;
        if (name && strcmp(name, "full_attention") == 0)
            continue;
        if (name && strcmp(name, "sliding_attention") == 0) {
            if (c->sliding_window <= 0)
                return err_set(err, EINVAL, "%s: layer_types entry %zu is "
                               "sliding_attention but sliding_window is not set",
                               origin, i);
            c->layer_flags[i] |= CONFIG_LAYER_SLIDING;
            continue;
        }
        return err_set(err, EINVAL, "%s: field 'layer_types' entry %zu "
                       "'%.64s' is not supported (supported: full_attention, "
                       "sliding_attention)", origin, i, name ? name : "?");
    }
    return 1;
}

/* mixtral: every layer slides when sliding_window is set; softmax top-k,
 * always renormalised. */
static int s_family_mixtral(config_t *c, const json_t *root,
                            const s_arch_row_t *row, const char *origin,
                            err_t *err)
{
    (void)root, (void)row, (void)origin, (void)err;
    c->norm_topk_prob = true;
    for (int l = 0; l < c->n_layers && c->sliding_window > 0; l++)
        c->layer_flags[l] |= CONFIG_LAYER_SLIDING;
    return 0;
}

/* The layers of qwen2_moe / qwen3_moe: MoE unless listed in mlp_only_layers
 * or off the decoder_sparse_step grid. */
static int s_qwen_layers(config_t *c, const json_t *root, const char *origin,
                         err_t *err)
{
    int step = 1;
    if (s_get_int(root, "decoder_sparse_step", false, true, 1, &step, origin,
                  err) ||
        s_check_range("decoder_sparse_step", step, 1, CONFIG_MAX_LAYERS, origin,
                      err))
        return -1;
    for (int l = 0; l < c->n_layers; l++)
        if ((l + 1) % step != 0)
            c->layer_flags[l] |= CONFIG_LAYER_DENSE;
    const json_t *only = json_object_get(root, "mlp_only_layers");
    if (only && !json_is_null(only)) {
        if (!json_is_array(only))
            return err_set(err, EINVAL, "%s: field 'mlp_only_layers' must be a "
                           "list, not %s", origin, s_json_type_name(only));
        size_t i;
        const json_t *x;
        json_array_foreach(only, i, x) {
            if (!json_is_integer(x) || json_integer_value(x) < 0 ||
                json_integer_value(x) >= c->n_layers)
                return err_set(err, EINVAL, "%s: field 'mlp_only_layers' entry "
                               "%zu is not a layer index", origin, i);
            c->layer_flags[json_integer_value(x)] |= CONFIG_LAYER_DENSE;
        }
    }
    /* Without layer_types, qwen slides only when use_sliding_window says so,
     * and then from max_window_layers on: not implemented. */
    int has_types = s_parse_layer_types(c, root, origin, err);
    if (has_types < 0)
        return -1;
    if (!has_types) {
        bool use = false;
        if (s_get_bool(root, "use_sliding_window", false, &use, origin, err))
            return -1;
        if (use)
            return err_set(err, EINVAL, "%s: field 'use_sliding_window' = true "
                           "is not supported without 'layer_types'", origin);
    }
    return 0;
}

/* qwen2_moe: q/k/v biases (qkv_bias, on unless false), softmax top-k with
 * norm_topk_prob, a shared expert behind a sigmoid gate. qwen3_moe: biases
 * per attention_bias, per-head q/k RMSNorm before RoPE, no shared expert. */
static int s_family_qwen(config_t *c, const json_t *root,
                         const s_arch_row_t *row, const char *origin,
                         err_t *err)
{
    if (s_get_int(root, "moe_intermediate_size", true, false, 0,
                  &c->intermediate_size, origin, err) ||
        s_get_bool(root, "norm_topk_prob", false, &c->norm_topk_prob, origin,
                   err) ||
        s_qwen_layers(c, root, origin, err))
        return -1;
    if (row->arch == CONFIG_ARCH_QWEN2_MOE) {
        bool bias = true;
        if (s_get_bool(root, "qkv_bias", true, &bias, origin, err) ||
            s_get_int(root, "shared_expert_intermediate_size", true, false, 0,
                      &c->shared_intermediate_size, origin, err) ||
            s_check_range("shared_expert_intermediate_size",
                          c->shared_intermediate_size, 1, S_DIM_MAX, origin,
                          err))
            return -1;
        c->qkv_bias = bias;
        c->shared = CONFIG_SHARED_GATED;
        c->n_shared_experts = 1;
        return 0;
    }
    bool bias = false;
    if (s_get_bool(root, "attention_bias", false, &bias, origin, err))
        return -1;
    c->qkv_bias = c->o_bias = bias;
    c->qk_norm = CONFIG_QK_NORM_HEAD;
    return 0;
}

/* olmoe: q/k RMSNorm over the whole projections before RoPE; softmax top-k
 * with norm_topk_prob; no sliding window. */
static int s_family_olmoe(config_t *c, const json_t *root,
                          const s_arch_row_t *row, const char *origin,
                          err_t *err)
{
    (void)row;
    bool bias = false;
    if (s_get_bool(root, "attention_bias", false, &bias, origin, err) ||
        s_get_bool(root, "norm_topk_prob", false, &c->norm_topk_prob, origin,
                   err) ||
        s_refuse(root, "clip_qkv", "q/k/v clamping is not implemented",
                 origin, err))
        return -1;
    c->qkv_bias = c->o_bias = bias;
    c->qk_norm = CONFIG_QK_NORM_FULL;
    c->sliding_window = 0;
    return 0;
}

/* An int, or a list of ints that must all be equal (hunyuan's per-layer
 * num_experts / moe_topk). */
static int s_get_uniform_int(const json_t *root, const char *key, int *out,
                             const char *origin, err_t *err)
{
    const json_t *v = json_object_get(root, key);
    if (!v || !json_is_array(v))
        return s_get_int(root, key, true, false, 0, out, origin, err);
    size_t i;
    const json_t *x;
    json_array_foreach(v, i, x) {
        if (!json_is_integer(x) || json_integer_value(x) > INT_MAX ||
            json_integer_value(x) < INT_MIN)
            return err_set(err, EINVAL, "%s: field '%s' entry %zu must be an "
                           "integer", origin, key, i);
        if (i > 0 && json_integer_value(x) != *out)
            return err_set(err, EINVAL, "%s: field '%s' differs between layers: "
                           "not supported", origin, key);
        *out = (int)json_integer_value(x);
    }
    if (json_array_size(v) == 0)
        return err_set(err, EINVAL, "%s: field '%s' is an empty list", origin,
                       key);
    return 0;
}

/* hunyuan_v1_moe (Llama attention with per-head q/k RMSNorm after RoPE;
 * softmax top-k always renormalised; a shared MLP of intermediate_size). The
 * original Tencent options that change the math are refused. */
static int s_family_hunyuan(config_t *c, const json_t *root,
                            const s_arch_row_t *row, const char *origin,
                            err_t *err)
{
    bool bias = false, qk = true, mixed = true;
    int n_shared = 1;
    if (s_get_uniform_int(root, row->topk_key, &c->n_experts_per_tok, origin,
                          err) ||
        s_get_bool(root, "attention_bias", false, &bias, origin, err) ||
        s_refuse(root, "use_cla", "cross-layer attention is not implemented",
                 origin, err) ||
        s_get_bool(root, "use_qk_norm", true, &qk, origin, err) ||
        s_get_bool(root, "use_mixed_mlp_moe", true, &mixed, origin, err) ||
        (json_object_get(root, "num_shared_expert") &&
         s_get_uniform_int(root, "num_shared_expert", &n_shared, origin, err)))
        return -1;
    if (!qk)
        return err_set(err, EINVAL, "%s: field 'use_qk_norm' = false is not "
                       "supported", origin);
    if (!mixed)
        return err_set(err, EINVAL, "%s: field 'use_mixed_mlp_moe' = false is "
                       "not supported", origin);
    if (n_shared != 1)
        return err_set(err, EINVAL, "%s: field 'num_shared_expert' = %d is not "
                       "supported (supported: 1)", origin, n_shared);
    c->qkv_bias = c->o_bias = bias;
    c->qk_norm = CONFIG_QK_NORM_HEAD_POST;
    c->norm_topk_prob = true;
    c->shared = CONFIG_SHARED_PLAIN;
    c->shared_intermediate_size = c->dense_intermediate_size;
    c->n_shared_experts = 1;
    c->sliding_window = 0;
    return 0;
}

/* deepseek_v2 / deepseek_v3: MLA, first_k_dense_replace dense layers, shared
 * experts, grouped routing with a routed scaling factor. */
static int s_family_deepseek(config_t *c, const json_t *root,
                             const s_arch_row_t *row, const char *origin,
                             err_t *err)
{
    const bool v3 = row->arch == CONFIG_ARCH_DEEPSEEK_V3;
    bool bias = false;
    double scale = 1;
    if (s_get_int(root, "moe_intermediate_size", true, false, 0,
                  &c->intermediate_size, origin, err) ||
        s_get_int(root, "n_shared_experts", false, true, 0,
                  &c->n_shared_experts, origin, err) ||
        s_check_range("n_shared_experts", c->n_shared_experts, 0, 64, origin,
                      err) ||
        s_get_int(root, "first_k_dense_replace", false, true, 0,
                  &c->first_k_dense, origin, err) ||
        s_check_range("first_k_dense_replace", c->first_k_dense, 0, c->n_layers,
                      origin, err) ||
        s_get_int(root, "n_group", false, true, 1, &c->n_group, origin, err) ||
        s_get_int(root, "topk_group", false, true, 1, &c->topk_group, origin,
                  err) ||
        s_check_range("n_group", c->n_group, 1, c->n_experts, origin, err) ||
        s_check_range("topk_group", c->topk_group, 1, c->n_group, origin,
                      err) ||
        s_get_number(root, "routed_scaling_factor", false, 1, &scale, origin,
                     err) ||
        s_get_bool(root, "norm_topk_prob", false, &c->norm_topk_prob, origin,
                   err) ||
        s_get_bool(root, "attention_bias", false, &bias, origin, err) ||
        s_require_int(root, "moe_layer_freq", 1, origin, err) ||
        s_get_int(root, "q_lora_rank", false, true, 0, &c->q_lora_rank, origin,
                  err) ||
        s_get_int(root, "kv_lora_rank", true, false, 0, &c->kv_lora_rank,
                  origin, err) ||
        s_get_int(root, "qk_nope_head_dim", true, false, 0,
                  &c->qk_nope_head_dim, origin, err) ||
        s_get_int(root, "qk_rope_head_dim", true, false, 0,
                  &c->qk_rope_head_dim, origin, err) ||
        s_get_int(root, "v_head_dim", true, false, 0, &c->v_head_dim, origin,
                  err) ||
        s_check_range("q_lora_rank", c->q_lora_rank, 0, S_DIM_MAX, origin,
                      err) ||
        s_check_range("kv_lora_rank", c->kv_lora_rank, 1, S_DIM_MAX, origin,
                      err) ||
        s_check_range("qk_nope_head_dim", c->qk_nope_head_dim, 0, S_DIM_MAX,
                      origin, err) ||
        s_check_range("qk_rope_head_dim", c->qk_rope_head_dim, 2, S_DIM_MAX,
                      origin, err) ||
        s_check_range("v_head_dim", c->v_head_dim, 1, S_DIM_MAX, origin, err))
        return -1;
    if (c->n_experts % c->n_group != 0)
        return err_set(err, EINVAL, "%s: n_group = %d does not divide "
                       "n_routed_experts = %d", origin, c->n_group, c->n_experts);
    if (c->qk_rope_head_dim % 2 != 0)
        return err_set(err, EINVAL, "%s: qk_rope_head_dim = %d must be even",
                       origin, c->qk_rope_head_dim);
    if (!(scale > 0) || !isfinite(scale))
        return err_set(err, EINVAL, "%s: field 'routed_scaling_factor' = %g "
                       "must be finite and > 0", origin, scale);
    c->routed_scaling_factor = (float)scale;
    c->qkv_bias = c->o_bias = bias;
    c->sliding_window = 0;

    int scoring = v3 ? CONFIG_SCORING_SIGMOID : CONFIG_SCORING_SOFTMAX;
    int method = v3 ? CONFIG_TOPK_NOAUX_TC : CONFIG_TOPK_GREEDY;
    static const char *const v2_methods[] = {"greedy", "group_limited_greedy"};
    static const int v2_values[] = {CONFIG_TOPK_GREEDY,
                                    CONFIG_TOPK_GROUP_LIMITED};
    static const char *const v3_methods[] = {"noaux_tc"};
    static const int v3_values[] = {CONFIG_TOPK_NOAUX_TC};
    static const char *const softmax_name[] = {"softmax"};
    static const char *const sigmoid_name[] = {"sigmoid"};
    static const int softmax_value[] = {CONFIG_SCORING_SOFTMAX};
    static const int sigmoid_value[] = {CONFIG_SCORING_SIGMOID};
    if (s_get_choice(root, "topk_method", v3 ? v3_methods : v2_methods,
                     v3 ? v3_values : v2_values, v3 ? 1 : 2, method, &method,
                     origin, err) ||
        s_get_choice(root, "scoring_func", v3 ? sigmoid_name : softmax_name,
                     v3 ? sigmoid_value : softmax_value, 1, scoring, &scoring,
                     origin, err))
        return -1;
    c->topk_method = (config_topk_method_t)method;
    c->scoring = (config_scoring_t)scoring;
    /* The grouped routers' preconditions (engine/router.h: at most 64
     * groups; k experts must fit the kept groups; V3 ranks a group by the sum
     * of its two best). */
    const int group_size = c->n_experts / c->n_group;
    if (c->n_group > 64)
        return err_set(err, EINVAL, "%s: n_group = %d is above 64", origin,
                       c->n_group);
    if (c->topk_method != CONFIG_TOPK_GREEDY &&
        c->n_experts_per_tok > c->topk_group * group_size)
        return err_set(err, EINVAL, "%s: num_experts_per_tok = %d exceeds the "
                       "%d experts of topk_group = %d groups", origin,
                       c->n_experts_per_tok, c->topk_group * group_size,
                       c->topk_group);
    if (v3 && group_size < 2)
        return err_set(err, EINVAL, "%s: deepseek_v3 needs at least 2 experts "
                       "per group (n_routed_experts %d, n_group %d)", origin,
                       c->n_experts, c->n_group);
    /* HF DeepseekV2 rotates with complex pairs; V3 as rope_interleave says. */
    bool interleave = true;
    if (v3 && s_get_bool(root, "rope_interleave", true, &interleave, origin,
                         err))
        return -1;
    c->rope_interleave = interleave;
    c->shared = c->n_shared_experts > 0 ? CONFIG_SHARED_PLAIN
                                        : CONFIG_SHARED_NONE;
    c->shared_intermediate_size = c->n_shared_experts * c->intermediate_size;
    for (int l = 0; l < c->first_k_dense; l++)
        c->layer_flags[l] |= CONFIG_LAYER_DENSE;
    return 0;
}

/* gpt_oss: attention biases and sinks, sliding layers per layer_types, YaRN,
 * a router with a bias (softmax over the top-k logits), clamped SwiGLU
 * experts with biases. */
static int s_family_gpt_oss(config_t *c, const json_t *root,
                            const s_arch_row_t *row, const char *origin,
                            err_t *err)
{
    (void)row;
    bool bias = true;
    double limit = 7.0;
    if (s_get_bool(root, "attention_bias", true, &bias, origin, err) ||
        s_get_number(root, "swiglu_limit", false, 7.0, &limit, origin, err))
        return -1;
    if (!(limit > 0) || !isfinite(limit))
        return err_set(err, EINVAL, "%s: field 'swiglu_limit' = %g must be "
                       "finite and > 0", origin, limit);
    if (s_parse_layer_types(c, root, origin, err) < 0)
        return -1;
    c->qkv_bias = c->o_bias = bias;
    c->attn_sinks = true;
    c->router_bias = true;
    c->scoring = CONFIG_SCORING_TOPK_SOFTMAX;
    c->expert_act = CONFIG_EXPERT_SWIGLU_OAI;
    c->swiglu_limit = (float)limit;
    return 0;
}

/* The engine runs this config: the architecture and, for now, plain RoPE
 * (YaRN for gpt_oss). */
static int s_check_supported(const config_t *c, const char *origin, err_t *err)
{
    if (!config_arch_supported(c->arch))
        return err_set(err, ENOTSUP, "%s: architecture '%s' is not supported "
                       "yet", origin, c->model_type);
    /* YaRN: gpt_oss (kernels/rope), and MLA (deepseek, mscale included in
     * engine/latent). */
    if (c->rope_type != CONFIG_ROPE_DEFAULT && c->arch != CONFIG_ARCH_GPT_OSS &&
        c->kv_lora_rank == 0)
        return err_set(err, EINVAL, "%s: rope_parameters.rope_type 'yarn' is "
                       "not supported yet for %s (supported: default)", origin,
                       c->model_type);
    /* MLA with attention_bias would bias q_a / kv_a_proj_with_mqa, which no
     * published DeepSeek checkpoint has and the loader does not name. */
    if (c->kv_lora_rank > 0 && c->qkv_bias)
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
                origin, s_json_type_name(root));
        goto cleanup;
    }
    const s_arch_row_t *row = s_parse_arch(&c, root, origin, err);
    if (!row || s_parse_fields(&c, root, row, origin, err))
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
