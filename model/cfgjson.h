/* cfgjson: reading and writing the fields of a config.json, for config.c's
 * common fields and each family's hooks (model/family.h).
 *
 * Readers take the JSON object, the key and where the text came from
 * (origin, for messages); they return 0, or -1 with EINVAL and an error
 * naming the field and origin. A field absent (or null where allowed) gives
 * the default. Writers build what transformers' save_pretrained writes.
 */
#ifndef MOE_MODEL_CFGJSON_H
#define MOE_MODEL_CFGJSON_H

#include <stdbool.h>

#include <jansson.h>

#include "core/err.h"
#include "model/config.h"

/* "an object", "a string", ... for messages (static). */
const char *cfgjson_type_name(const json_t *v);

/* An integer field; absent (or null when null_ok) gives def, or EINVAL when
 * required. */
int cfgjson_int(const json_t *root, const char *key, bool required,
                bool null_ok, int def, int *out, const char *origin, err_t *err);

/* A number field (integer or real). */
int cfgjson_number(const json_t *root, const char *key, bool required,
                   double def, double *out, const char *origin, err_t *err);

/* EINVAL unless lo <= x <= hi; key names the field. */
int cfgjson_range(const char *key, long long x, long long lo, long long hi,
                  const char *origin, err_t *err);

/* An optional boolean: absent or null gives def. */
int cfgjson_bool(const json_t *root, const char *key, bool def, bool *out,
                 const char *origin, err_t *err);

/* An optional string that must be one of names[0..n), giving values[i];
 * absent or null gives def. */
int cfgjson_choice(const json_t *root, const char *key,
                   const char *const *names, const int *values, int n, int def,
                   int *out, const char *origin, err_t *err);

/* EINVAL when key is present (non-null, not false, not empty): it asks for
 * math we do not implement; why says which. */
int cfgjson_refuse(const json_t *root, const char *key, const char *why,
                   const char *origin, err_t *err);

/* quantization_config into *q (zeroed first; method NONE when the field is
 * absent or null): quant_method "fp8" (fmt "e4m3", activation_scheme
 * "dynamic", weight_block_size [n, k] of positive ints, all required but
 * activation_scheme) or "mxfp4"; modules_to_not_convert, a list of strings,
 * for either. EINVAL naming the field (quantization_config.<key>) otherwise. */
int cfgjson_quant(config_quant_t *q, const json_t *root, const char *origin,
                  err_t *err);

/* dtype (or, absent, torch_dtype): "float32", "float16", "bfloat16" (also
 * "float", "half"); anything else is CONFIG_DTYPE_UNSET. EINVAL when it is
 * not a string. */
int cfgjson_dtype(config_dtype_t *out, const json_t *root, const char *origin,
                  err_t *err);

/* A field that must hold want when present. */
int cfgjson_require_int(const json_t *root, const char *key, int want,
                        const char *origin, err_t *err);

/* An int, or a list of ints that must all be equal (hunyuan's per-layer
 * num_experts / moe_topk). */
int cfgjson_uniform_int(const json_t *root, const char *key, int *out,
                        const char *origin, err_t *err);

/* layer_types ("full_attention" / "sliding_attention" per layer) into
 * c->layer_flags. 1 when present, 0 when absent, -1 on error. */
int cfgjson_layer_types(config_t *c, const json_t *root, const char *origin,
                        err_t *err);

/* The shortest decimal that reads back as f: 1e-5, not 9.99999974737875e-6. */
double cfgjson_float_decimal(float f);

/* o[key] = v, taking v; any failure (v NULL included) clears *ok. */
void cfgjson_put(json_t *o, const char *key, json_t *v, bool *ok);

/* null when is_null, else x. */
json_t *cfgjson_int_or_null(int x, bool is_null);

/* The dense layers' indices (qwen's mlp_only_layers); NULL on out of memory. */
json_t *cfgjson_dense_layers(const config_t *c);

/* layer_types of c; NULL on out of memory. */
json_t *cfgjson_layer_types_list(const config_t *c);

#endif /* MOE_MODEL_CFGJSON_H */
