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

typedef struct s_arch_row {
    config_arch_t arch;
    const char *model_type;    /* "model_type" in config.json */
    const char *class_name;    /* expected entry of "architectures" */
    const char *experts_key;   /* field holding the routed expert count */
    double default_rope_theta; /* when neither rope field is given */
} s_arch_row_t;

static const s_arch_row_t s_archs[] = {
    {CONFIG_ARCH_MIXTRAL, "mixtral", "MixtralForCausalLM", "num_local_experts",
     1e6},
};
enum { S_N_ARCHS = sizeof s_archs / sizeof s_archs[0] };

/* Largest width we accept for any one dimension: far above any real model,
 * low enough that products of two or three dims never overflow int64. */
enum { S_DIM_MAX = 1 << 24 };

const char *config_arch_name(config_arch_t arch)
{
    for (int i = 0; i < S_N_ARCHS; i++)
        if (s_archs[i].arch == arch)
            return s_archs[i].model_type;
    return "unknown";
}

int config_model_id(const config_t *cfg, char *buf, size_t size)
{
    return snprintf(buf, size, "%s:h%d:l%d:e%d:k%d:i%d:v%d:a%d/%dx%d",
                    config_arch_name(cfg->arch), cfg->hidden_size, cfg->n_layers,
                    cfg->n_experts, cfg->n_experts_per_tok, cfg->intermediate_size,
                    cfg->vocab_size, cfg->n_heads, cfg->n_kv_heads, cfg->head_dim);
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

/* rope_type of a rope_parameters / rope_scaling object: must be "default" or
 * absent. Older configs spell it "type". */
static int s_check_rope_type(const json_t *obj, const char *field,
                             const char *origin, err_t *err)
{
    const char *keys[] = {"rope_type", "type"};
    for (int i = 0; i < 2; i++) {
        const json_t *v = json_object_get(obj, keys[i]);
        if (!v || json_is_null(v))
            continue;
        if (!json_is_string(v))
            return err_set(err, EINVAL,
                           "%s: field '%s.%s' must be a string, not %s", origin,
                           field, keys[i], s_json_type_name(v));
        if (strcmp(json_string_value(v), "default") != 0)
            return err_set(
                err, EINVAL,
                "%s: %s.%s '%s' is not supported (supported: default)", origin,
                field, keys[i], json_string_value(v));
    }
    return 0;
}

/* rope_theta and rope_type, from rope_parameters (newer transformers), the
 * top-level rope_theta (older checkpoints) or the architecture default. */
static int s_parse_rope(config_t *c, const json_t *root, double def_theta,
                        const char *origin, err_t *err)
{
    double theta = def_theta;
    if (s_get_number(root, "rope_theta", false, def_theta, &theta, origin, err))
        return -1;
    const json_t *rp = json_object_get(root, "rope_parameters");
    if (rp && !json_is_null(rp)) {
        if (!json_is_object(rp))
            return err_set(
                err, EINVAL,
                "%s: field 'rope_parameters' must be an object, not %s", origin,
                s_json_type_name(rp));
        if (s_check_rope_type(rp, "rope_parameters", origin, err))
            return -1;
        const json_t *t = json_object_get(rp, "rope_theta");
        if (t) {
            if (!json_is_number(t))
                return err_set(
                    err, EINVAL,
                    "%s: field 'rope_parameters.rope_theta' must be a "
                    "number, not %s",
                    origin, s_json_type_name(t));
            theta = json_number_value(t);
        }
    }
    const json_t *rs = json_object_get(root, "rope_scaling");
    if (rs && !json_is_null(rs)) {
        if (!json_is_object(rs))
            return err_set(err, EINVAL,
                           "%s: field 'rope_scaling' must be an object, not %s",
                           origin, s_json_type_name(rs));
        if (s_check_rope_type(rs, "rope_scaling", origin, err))
            return -1;
    }
    if (!(theta > 0) || !isfinite(theta))
        return err_set(err, EINVAL,
                       "%s: rope_theta = %g must be finite and > 0", origin,
                       theta);
    c->rope_theta = theta;
    c->rope_type = CONFIG_ROPE_DEFAULT;
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
                  &c->intermediate_size, origin, err) ||
        s_get_int(root, row->experts_key, true, false, 0, &c->n_experts, origin,
                  err) ||
        s_get_int(root, "num_experts_per_tok", true, false, 0,
                  &c->n_experts_per_tok, origin, err) ||
        s_get_int(root, "vocab_size", true, false, 0, &c->vocab_size, origin,
                  err))
        return -1;
    double eps = 0;
    if (s_get_number(root, "rms_norm_eps", true, 0, &eps, origin, err))
        return -1;

    if (s_check_range("hidden_size", c->hidden_size, 1, S_DIM_MAX, origin,
                      err) ||
        s_check_range("num_hidden_layers", c->n_layers, 1, 65536, origin,
                      err) ||
        s_check_range("num_attention_heads", c->n_heads, 1, 65536, origin,
                      err) ||
        s_check_range("intermediate_size", c->intermediate_size, 1, S_DIM_MAX,
                      origin, err) ||
        s_check_range(row->experts_key, c->n_experts, 1, 65536, origin, err) ||
        s_check_range("num_experts_per_tok", c->n_experts_per_tok, 1,
                      c->n_experts, origin, err) ||
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

    if (s_parse_rope(c, root, row->default_rope_theta, origin, err) ||
        s_parse_eos(c, root, origin, err))
        return -1;
    return 0;
}

int config_parse(config_t *cfg, const char *json_text, size_t len,
                 const char *origin, err_t *err)
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
    *cfg = c;
    rc = 0;
cleanup:;
    int saved = errno;
    json_decref(root);
    errno = saved;
    return rc;
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
