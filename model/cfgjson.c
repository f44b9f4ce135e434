/* cfgjson: see cfgjson.h. */
#include "model/cfgjson.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *cfgjson_type_name(const json_t *v)
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
int cfgjson_int(const json_t *root, const char *key, bool required,
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
                       origin, key, cfgjson_type_name(v));
    json_int_t x = json_integer_value(v);
    if (x < INT_MIN || x > INT_MAX)
        return err_set(err, EINVAL, "%s: field '%s' = %lld does not fit an int",
                       origin, key, (long long)x);
    *out = (int)x;
    return 0;
}

/* Reads a number field (integer or real). */
int cfgjson_number(const json_t *root, const char *key, bool required,
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
                       origin, key, cfgjson_type_name(v));
    *out = json_number_value(v);
    return 0;
}

/* Checks lo <= x <= hi for an int field. */
int cfgjson_range(const char *key, long long x, long long lo,
                         long long hi, const char *origin, err_t *err)
{
    if (x < lo || x > hi)
        return err_set(err, EINVAL,
                       "%s: field '%s' = %lld is out of range [%lld, %lld]",
                       origin, key, x, lo, hi);
    return 0;
}

/* Reads an optional boolean field: absent or null gives def. */
int cfgjson_bool(const json_t *root, const char *key, bool def, bool *out,
                      const char *origin, err_t *err)
{
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v))
        return err_set(err, EINVAL, "%s: field '%s' must be a boolean, not %s",
                       origin, key, cfgjson_type_name(v));
    *out = json_is_true(v);
    return 0;
}

/* Reads an optional string field into one of names[] (n of them), giving
 * values[i]; absent or null gives def. Any other string is EINVAL naming the
 * field, the value and what is supported. */
int cfgjson_choice(const json_t *root, const char *key,
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
                       origin, key, cfgjson_type_name(v));
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
int cfgjson_refuse(const json_t *root, const char *key, const char *why,
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
int cfgjson_require_int(const json_t *root, const char *key, int want,
                         const char *origin, err_t *err)
{
    int x = want;
    if (cfgjson_int(root, key, false, true, want, &x, origin, err))
        return -1;
    if (x != want)
        return err_set(err, EINVAL, "%s: field '%s' = %d is not supported "
                       "(supported: %d)", origin, key, x, want);
    return 0;
}

/* layer_types: "full_attention" / "sliding_attention" per layer. Returns 1
 * when present (flags set), 0 when absent, -1 on error. */
int cfgjson_layer_types(config_t *c, const json_t *root,
                               const char *origin, err_t *err)
{
    const json_t *v = json_object_get(root, "layer_types");
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return err_set(err, EINVAL, "%s: field 'layer_types' must be a list, "
                       "not %s", origin, cfgjson_type_name(v));
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

/* An int, or a list of ints that must all be equal (hunyuan's per-layer
 * num_experts / moe_topk). */
int cfgjson_uniform_int(const json_t *root, const char *key, int *out,
                             const char *origin, err_t *err)
{
    const json_t *v = json_object_get(root, key);
    if (!v || !json_is_array(v))
        return cfgjson_int(root, key, true, false, 0, out, origin, err);
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

/* ---- writing -------------------------------------------------------------- */

/* The shortest decimal that reads back as the same float: 1e-5, not
 * 9.99999974737875e-6. */
double cfgjson_float_decimal(float f)
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

/* Sets o[key] = v, taking v; on any failure (v NULL included) clears *ok. */
void cfgjson_put(json_t *o, const char *key, json_t *v, bool *ok)
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

json_t *cfgjson_int_or_null(int x, bool is_null)
{
    return is_null ? json_null() : json_integer(x);
}

/* The dense layers of a qwen model (mlp_only_layers). */
json_t *cfgjson_dense_layers(const config_t *c)
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
json_t *cfgjson_layer_types_list(const config_t *c)
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

/* ---- quantization_config ------------------------------------------------- */

/* A string member of quantization_config that must be `want`; absent or null
 * gives want (transformers' defaults). */
static int s_quant_str(const json_t *qc, const char *key, const char *want,
                       const char *origin, err_t *err)
{
    const json_t *v = json_object_get(qc, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return err_set(err, EINVAL, "%s: field 'quantization_config.%s' must "
                       "be a string, not %s", origin, key,
                       cfgjson_type_name(v));
    if (strcmp(json_string_value(v), want) != 0)
        return err_set(err, EINVAL, "%s: quantization_config.%s '%.64s' is "
                       "not supported (supported: %s)", origin, key,
                       json_string_value(v), want);
    return 0;
}

/* weight_block_size: [block_n, block_k], positive; absent gives
 * transformers' default [128, 128]. */
static int s_quant_blocks(config_quant_t *q, const json_t *qc,
                          const char *origin, err_t *err)
{
    const json_t *v = json_object_get(qc, "weight_block_size");
    if (!v) {
        q->block_n = q->block_k = 128;
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) != 2)
        return err_set(err, EINVAL, "%s: field 'quantization_config."
                       "weight_block_size' must be a list of two integers "
                       "[block_n, block_k], not %s%s", origin,
                       cfgjson_type_name(v),
                       json_is_null(v) ? " (one scale per tensor is not "
                       "supported)" : "");
    int *dst[2] = {&q->block_n, &q->block_k};
    for (size_t i = 0; i < 2; i++) {
        const json_t *d = json_array_get(v, i);
        if (!json_is_integer(d) || json_integer_value(d) < 1 ||
            json_integer_value(d) > CONFIG_DIM_MAX)
            return err_set(err, EINVAL, "%s: quantization_config."
                           "weight_block_size[%zu] must be an integer in "
                           "[1, %d]", origin, i, CONFIG_DIM_MAX);
        *dst[i] = (int)json_integer_value(d);
    }
    return 0;
}

static int s_quant_skip(config_quant_t *q, const json_t *qc,
                        const char *origin, err_t *err)
{
    const json_t *v = json_object_get(qc, "modules_to_not_convert");
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return err_set(err, EINVAL, "%s: field 'quantization_config."
                       "modules_to_not_convert' must be a list of strings, "
                       "not %s", origin, cfgjson_type_name(v));
    if (json_array_size(v) > CONFIG_QUANT_MAX_SKIP)
        return err_set(err, EINVAL, "%s: quantization_config."
                       "modules_to_not_convert has %zu entries, more than "
                       "the %d supported", origin, json_array_size(v),
                       CONFIG_QUANT_MAX_SKIP);
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *s = json_array_get(v, i);
        if (!json_is_string(s) ||
            json_string_length(s) >= CONFIG_QUANT_SKIP_LEN ||
            strlen(json_string_value(s)) != json_string_length(s))
            return err_set(err, EINVAL, "%s: quantization_config."
                           "modules_to_not_convert[%zu] must be a string of "
                           "fewer than %d bytes", origin, i,
                           CONFIG_QUANT_SKIP_LEN);
        memcpy(q->skip[q->n_skip++], json_string_value(s),
               json_string_length(s) + 1);
    }
    return 0;
}

int cfgjson_quant(config_quant_t *q, const json_t *root, const char *origin,
                  err_t *err)
{
    memset(q, 0, sizeof *q);
    const json_t *qc = json_object_get(root, "quantization_config");
    if (!qc || json_is_null(qc))
        return 0;
    if (!json_is_object(qc))
        return err_set(err, EINVAL, "%s: field 'quantization_config' must be "
                       "an object, not %s", origin, cfgjson_type_name(qc));
    const json_t *m = json_object_get(qc, "quant_method");
    if (!json_is_string(m))
        return err_set(err, EINVAL, "%s: field 'quantization_config."
                       "quant_method' is %s, not a string (supported: fp8, "
                       "mxfp4)", origin, m ? cfgjson_type_name(m) : "missing");
    const char *method = json_string_value(m);
    int rc = 0;
    if (strcmp(method, "fp8") == 0) {
        q->method = CONFIG_QUANT_FP8;
        rc = s_quant_str(qc, "fmt", "e4m3", origin, err) ||
             s_quant_str(qc, "activation_scheme", "dynamic", origin, err) ||
             s_quant_blocks(q, qc, origin, err);
    } else if (strcmp(method, "mxfp4") == 0) {
        q->method = CONFIG_QUANT_MXFP4;
    } else {
        rc = err_set(err, EINVAL, "%s: quantization_config.quant_method "
                     "'%.64s' is not supported (supported: fp8, mxfp4)",
                     origin, method);
    }
    if (rc == 0)
        rc = s_quant_skip(q, qc, origin, err);
    if (rc)
        memset(q, 0, sizeof *q);
    return rc ? -1 : 0;
}

int cfgjson_dtype(config_dtype_t *out, const json_t *root, const char *origin,
                  err_t *err)
{
    static const struct {
        const char *name;
        config_dtype_t dtype;
    } names[] = {
        {"float32", CONFIG_DTYPE_FLOAT32},   {"float", CONFIG_DTYPE_FLOAT32},
        {"float16", CONFIG_DTYPE_FLOAT16},   {"half", CONFIG_DTYPE_FLOAT16},
        {"bfloat16", CONFIG_DTYPE_BFLOAT16},
    };
    *out = CONFIG_DTYPE_UNSET;
    const char *key = "dtype";
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v))
        v = json_object_get(root, key = "torch_dtype");
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return err_set(err, EINVAL, "%s: field '%s' must be a string, not %s",
                       origin, key, cfgjson_type_name(v));
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(json_string_value(v), names[i].name) == 0)
            *out = names[i].dtype;
    return 0;
}
