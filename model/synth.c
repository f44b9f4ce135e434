/* synth: see synth.h.
 *
 * A family is its descriptor (family.h): its presets, its config.json hook
 * and its table of tensor roles (arch.h) in checkpoint order. arch_tensor()
 * gives each role's name and shape and arch_present() says which a layer
 * has, as for the loader, so the checkpoint synth writes is the one the
 * loader reads. The table is read in order: a model-wide role is one tensor; a run of per-layer
 * roles is repeated for every layer, and a run of per-expert roles inside it
 * for every expert of a MoE layer (once, stacked, when the config keeps its
 * experts in one tensor per layer, config_experts_stacked()).
 *
 * Each tensor draws from its own generator, seeded from (seed, name), and is
 * produced in chunks of S_CHUNK values that go straight to the st_writer.
 */
#include "model/synth.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "core/mem.h"
#include "core/path.h"
#include "model/arch.h"
#include "model/cfgjson.h"
#include "model/family.h"
#include "model/st_writer.h"

enum { S_CHUNK = 1 << 18 };   /* values generated and written per step */
enum { S_MAX_TDIMS = ARCH_MAX_DIMS + 1 }; /* a stacked expert tensor adds one */

#define S_PRESET_NAMES "tiny, small, medium"

/* ---- random numbers ------------------------------------------------------ */

/* splitmix64 stream, plus the second value of the last Box-Muller pair. */
typedef struct s_rng {
    uint64_t state;
    bool has_spare;
    double spare;
} s_rng_t;

static uint64_t s_next(s_rng_t *r)
{
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* One generator per (seed, tensor name): FNV-1a of the name, mixed. */
static void s_rng_init(s_rng_t *r, uint64_t seed, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    r->state = seed;
    r->state = s_next(r) ^ h;
    r->state = s_next(r);
    r->has_spare = false;
    r->spare = 0;
}

/* x[i] = mean + std * N(0, 1), by Marsaglia's polar form of Box-Muller (no
 * trigonometry: about 4x faster), each pair from one 64-bit draw. */
static void s_fill_normal(s_rng_t *r, float *x, size_t n, double mean,
                          double std)
{
    size_t i = 0;
    if (n > 0 && r->has_spare) {
        x[i++] = (float)(mean + std * r->spare);
        r->has_spare = false;
    }
    while (i < n) {
        uint64_t bits = s_next(r);
        double u = (double)(bits >> 32) * 0x1p-31 - 1.0;
        double v = (double)(bits & 0xffffffffu) * 0x1p-31 - 1.0;
        double s = u * u + v * v;
        if (s >= 1.0 || s == 0.0)
            continue; /* outside the unit disc: draw again (p = 0.21) */
        double f = sqrt(-2.0 * log(s) / s);
        x[i++] = (float)(mean + std * u * f);
        if (i < n) {
            x[i++] = (float)(mean + std * v * f);
        } else {
            r->spare = v * f;
            r->has_spare = true;
        }
    }
}

/* x[i] uniform on [lo, lo + width), 53 bits of each draw. */
static void s_fill_uniform(s_rng_t *r, float *x, size_t n, double lo,
                           double width)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(lo + width * (double)(s_next(r) >> 11) * 0x1p-53);
}

/* ---- the plan: every tensor, its shape, its values and its shard --------- */

/* How a tensor's values are drawn. */
typedef enum s_draw {
    S_DRAW_NORMAL,            /* mean + N(0, spread) */
    S_DRAW_UNIFORM,           /* uniform on [mean, mean + spread) */
} s_draw_t;

typedef struct s_item {
    char name[ARCH_NAME_MAX];
    int ndim;
    int64_t shape[S_MAX_TDIMS];
    s_draw_t draw;
    double mean, spread;
    uint64_t n_values;
    uint64_t nbytes;          /* in the on-disk dtype */
    size_t shard;             /* 0-based file number */
} s_item_t;

static bool s_is_expert_role(int role)
{
    return role >= ARCH_W_EXPERT_GATE && role <= ARCH_W_EXPERT_DOWN;
}

/* The distribution of role's values (synth.h); fan_in is the tensor's
 * in_features. */
static void s_draw_of(const config_t *c, int role, int64_t fan_in, s_item_t *it)
{
    it->draw = S_DRAW_NORMAL;
    it->mean = 0;
    switch (role) {
    case ARCH_W_EMBED:
        it->spread = 1;
        return;
    case ARCH_W_FINAL_NORM:
    case ARCH_W_ATTN_NORM:
    case ARCH_W_FFN_NORM:
    case ARCH_W_Q_NORM:
    case ARCH_W_K_NORM:
    case ARCH_W_Q_A_NORM:
    case ARCH_W_KV_A_NORM:
        it->mean = 1;
        it->spread = 0.1;
        return;
    case ARCH_W_Q_BIAS:
    case ARCH_W_K_BIAS:
    case ARCH_W_V_BIAS:
    case ARCH_W_O_BIAS:
    case ARCH_W_ROUTER_BIAS:
    case ARCH_W_EXPERT_DOWN_BIAS:
        it->spread = 0.05;
        return;
    case ARCH_W_SINKS:
        it->spread = 0.5;
        return;
    case ARCH_W_SCORE_BIAS:
        it->draw = S_DRAW_UNIFORM;
        it->spread = 0.12;
        return;
    case ARCH_W_ROUTER:
        it->spread = 2.0 / sqrt((double)fan_in);
        return;
    case ARCH_W_EXPERT_UP:
        if (config_experts_stacked(c)) { /* gpt_oss gate_up_proj_bias */
            it->spread = 0.05;
            return;
        }
        break;
    case ARCH_W_EXPERT_GATE:
        if (config_experts_stacked(c)) { /* gpt_oss gate_up_proj: some reach the clamp */
            it->spread = 3.0 / sqrt((double)fan_in);
            return;
        }
        break;
    default:
        break;
    }
    it->spread = 1.0 / sqrt((double)fan_in);
}

/* Fills *it for role of layer l (expert e), from arch_tensor(). */
static int s_fill_item(s_item_t *it, const config_t *c, int role, int l, int e,
                       st_dtype_t dtype, err_t *err)
{
    memset(it, 0, sizeof *it);
    int64_t fan_in;
    arch_tensor_t t;
    if (arch_tensor(c, (arch_weight_t)role, l, e, &t, err))
        return -1;
    memcpy(it->name, t.name, sizeof it->name);
    if (t.slice >= 0) {
        /* one expert of a stacked tensor: write the whole [E, ...]; those
         * multiply from the left (y = x W), in_features first */
        it->ndim = t.ndim + 1;
        it->shape[0] = c->n_experts;
        memcpy(it->shape + 1, t.shape, (size_t)t.ndim * sizeof *t.shape);
        fan_in = t.shape[0];
    } else {
        it->ndim = t.ndim;
        memcpy(it->shape, t.shape, (size_t)t.ndim * sizeof *t.shape);
        fan_in = t.shape[t.ndim - 1];
    }
    s_draw_of(c, role, fan_in, it);
    it->n_values = 1;
    for (int d = 0; d < it->ndim; d++) {
        if (it->shape[d] <= 0)
            return err_set(err, EINVAL, "tensor %s has dimension %lld",
                           it->name, (long long)it->shape[d]);
        /* config_parse() caps dims at 2^24: no overflow */
        it->n_values *= (uint64_t)it->shape[d];
    }
    it->nbytes = it->n_values * st_dtype_size(dtype);
    return 0;
}

/* Appends role of layer l (expert e) when the model has it; with items NULL
 * it only counts. */
static int s_add(s_item_t *items, size_t *n, const config_t *c, int role,
                 int l, int e, st_dtype_t dtype, err_t *err)
{
    if (!arch_present(c, (arch_weight_t)role, l))
        return 0;
    if (items && s_fill_item(&items[*n], c, role, l, e, dtype, err))
        return -1;
    (*n)++;
    return 0;
}

/* Walks the role table (see the file comment). With items NULL it only
 * counts into *n. */
static int s_expand(const family_t *a, const config_t *c, st_dtype_t dtype,
                    s_item_t *items, size_t *n, err_t *err)
{
    size_t count = 0;
    for (size_t i = 0; i < a->n_roles;) {
        if (a->roles[i] < ARCH_W_ATTN_NORM) { /* model-wide */
            if (s_add(items, &count, c, a->roles[i], 0, 0, dtype, err))
                return -1;
            i++;
            continue;
        }
        size_t end = i; /* the layer block: [i, end) */
        while (end < a->n_roles && a->roles[end] >= ARCH_W_ATTN_NORM)
            end++;
        for (int l = 0; l < c->n_layers; l++) {
            for (size_t k = i; k < end;) {
                if (!s_is_expert_role(a->roles[k]) || config_experts_stacked(c)) {
                    if (s_add(items, &count, c, a->roles[k], l, 0, dtype, err))
                        return -1;
                    k++;
                    continue;
                }
                size_t run = k; /* the expert run: [k, run) */
                while (run < end && s_is_expert_role(a->roles[run]))
                    run++;
                for (int e = 0; e < c->n_experts; e++)
                    for (size_t q = k; q < run; q++)
                        if (s_add(items, &count, c, a->roles[q], l, e, dtype,
                                  err))
                            return -1;
                k = run;
            }
        }
        i = end;
    }
    *n = count;
    return 0;
}

/* Greedy sharding in order, as transformers does. Returns the shard count. */
static size_t s_assign_shards(s_item_t *items, size_t n, uint64_t shard_bytes)
{
    size_t shard = 0;
    uint64_t used = 0;
    for (size_t i = 0; i < n; i++) {
        if (shard_bytes && used > 0 && used + items[i].nbytes > shard_bytes) {
            shard++;
            used = 0;
        }
        items[i].shard = shard;
        used += items[i].nbytes;
    }
    return n ? shard + 1 : 1;
}

/* ---- config.json --------------------------------------------------------- */

static const char *s_torch_dtype(st_dtype_t dtype)
{
    switch (dtype) {
    case ST_F16: return "float16";
    case ST_BF16: return "bfloat16";
    case ST_F32: break;
    }
    return "float32";
}

/* eos_token_id: null, one id or a list. */
static json_t *s_eos_json(const config_t *c)
{
    if (c->n_eos == 0)
        return json_null();
    if (c->n_eos == 1)
        return json_integer(c->eos_token_ids[0]);
    json_t *eos = json_array();
    for (int i = 0; eos && i < c->n_eos; i++)
        if (json_array_append_new(eos, json_integer(c->eos_token_ids[i]))) {
            json_decref(eos);
            eos = NULL;
        }
    return eos;
}

/* rope_parameters, as transformers 5 writes them. */
static json_t *s_rope_json(const config_t *c)
{
    json_t *r = json_object();
    bool ok = r != NULL;
    cfgjson_put(r, "rope_theta", json_real(c->rope_theta), &ok);
    if (c->rope_type != CONFIG_ROPE_YARN) {
        cfgjson_put(r, "rope_type", json_string("default"), &ok);
    } else {
        cfgjson_put(r, "rope_type", json_string("yarn"), &ok);
        cfgjson_put(r, "factor", json_real(c->rope_factor), &ok);
        cfgjson_put(r, "original_max_position_embeddings",
              json_integer(c->rope_orig_max_pos), &ok);
        cfgjson_put(r, "beta_fast", json_real(c->rope_beta_fast), &ok);
        cfgjson_put(r, "beta_slow", json_real(c->rope_beta_slow), &ok);
        cfgjson_put(r, "truncate", json_boolean(c->rope_truncate), &ok);
        if (c->rope_mscale != 0)
            cfgjson_put(r, "mscale", json_real(c->rope_mscale), &ok);
        if (c->rope_mscale_all_dim != 0)
            cfgjson_put(r, "mscale_all_dim", json_real(c->rope_mscale_all_dim), &ok);
        if (c->rope_attention_factor != 0)
            cfgjson_put(r, "attention_factor", json_real(c->rope_attention_factor),
                  &ok);
    }
    if (!ok) {
        json_decref(r);
        return NULL;
    }
    return r;
}

/* config.json as transformers' save_pretrained would write it (the fields
 * that matter for inference, and each family's own). NULL on out of
 * memory. */
static json_t *s_config_json(const family_t *a, const config_t *c,
                             st_dtype_t dtype)
{
    json_t *o = json_object();
    bool ok = o != NULL;
    json_t *archs = json_array();
    if (archs && json_array_append_new(archs, json_string(a->class_name))) {
        json_decref(archs);
        archs = NULL;
    }
    cfgjson_put(o, "architectures", archs, &ok);
    cfgjson_put(o, "model_type", json_string(a->model_type), &ok);
    cfgjson_put(o, "hidden_act", json_string("silu"), &ok);
    cfgjson_put(o, "hidden_size", json_integer(c->hidden_size), &ok);
    if (a->moe_inter_key) {
        cfgjson_put(o, "intermediate_size", json_integer(c->dense_intermediate_size),
              &ok);
        cfgjson_put(o, "moe_intermediate_size", json_integer(c->intermediate_size),
              &ok);
    } else {
        cfgjson_put(o, "intermediate_size", json_integer(c->intermediate_size), &ok);
    }
    cfgjson_put(o, "num_hidden_layers", json_integer(c->n_layers), &ok);
    cfgjson_put(o, "num_attention_heads", json_integer(c->n_heads), &ok);
    cfgjson_put(o, "num_key_value_heads", json_integer(c->n_kv_heads), &ok);
    cfgjson_put(o, "head_dim", json_integer(c->head_dim), &ok);
    cfgjson_put(o, a->experts_key_out, json_integer(c->n_experts), &ok);
    cfgjson_put(o, a->topk_key, json_integer(c->n_experts_per_tok), &ok);
    cfgjson_put(o, "vocab_size", json_integer(c->vocab_size), &ok);
    cfgjson_put(o, "max_position_embeddings",
          json_integer(c->max_position_embeddings), &ok);
    cfgjson_put(o, "rms_norm_eps", json_real(cfgjson_float_decimal(c->rms_norm_eps)), &ok);
    cfgjson_put(o, "rope_parameters", s_rope_json(c), &ok);
    cfgjson_put(o, "tie_word_embeddings", json_boolean(c->tie_word_embeddings), &ok);
    cfgjson_put(o, "bos_token_id", cfgjson_int_or_null(c->bos_token_id, c->bos_token_id < 0),
          &ok);
    cfgjson_put(o, "eos_token_id", s_eos_json(c), &ok);
    cfgjson_put(o, "dtype", json_string(s_torch_dtype(dtype)), &ok);
    cfgjson_put(o, "attention_dropout", json_real(0.0), &ok);
    cfgjson_put(o, "use_cache", json_true(), &ok);

    a->write(o, c, &ok);
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* generation_config.json as transformers writes it from the model config:
 * the BOS and EOS ids, which generation stops at. NULL on out of memory. */
static json_t *s_generation_json(const config_t *c)
{
    json_t *root = json_pack("{s:b}", "_from_model_config", 1);
    json_t *eos = c->n_eos == 1 ? json_integer(c->eos_token_ids[0])
                                : json_array();
    for (int i = 0; eos && c->n_eos > 1 && i < c->n_eos; i++)
        if (json_array_append_new(eos, json_integer(c->eos_token_ids[i]))) {
            json_decref(eos);
            eos = NULL;
        }
    if (!root || !eos ||
        (c->bos_token_id >= 0 &&
         json_object_set_new(root, "bos_token_id",
                             json_integer(c->bos_token_id))) ||
        (c->n_eos > 0 && json_object_set(root, "eos_token_id", eos))) {
        json_decref(root);
        root = NULL;
    }
    json_decref(eos);
    return root;
}

/* Writes text and a newline to dir/name. */
static int s_write_text(const char *dir, const char *name, const char *text,
                        err_t *err)
{
    char *path = path_join(dir, name);
    if (!path)
        return err_set(err, ENOMEM, "out of memory");
    int rc = 0;
    FILE *f = fopen(path, "w");
    if (!f) {
        rc = err_set(err, errno, "cannot create %s: %s", path, strerror(errno));
    } else {
        errno = 0;
        bool ok = fputs(text, f) >= 0 && fputc('\n', f) != EOF;
        if (fclose(f) != 0 || !ok)
            rc = err_set(err, errno ? errno : EIO, "cannot write %s: %s", path,
                         strerror(errno ? errno : EIO));
    }
    mem_free(path);
    return rc;
}

/* ---- files --------------------------------------------------------------- */

/* mkdir -p. */
static int s_mkdirs(const char *dir, err_t *err)
{
    if (!*dir)
        return err_set(err, EINVAL, "empty output directory name");
    char *p = mem_strdup(dir);
    if (!p)
        return err_set(err, ENOMEM, "out of memory creating %s", dir);
    int rc = 0;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char saved = *s;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            rc = err_set(err, errno, "cannot create directory %s: %s", p,
                         strerror(errno));
            break;
        }
        *s = saved;
        if (saved == '\0')
            break;
    }
    struct stat st;
    if (rc == 0 && (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)))
        rc = err_set(err, ENOTDIR, "%s is not a directory", dir);
    mem_free(p);
    return rc;
}

static void s_shard_name(char *out, size_t size, size_t shard, size_t n_shards)
{
    if (n_shards == 1)
        snprintf(out, size, "model.safetensors");
    else
        snprintf(out, size, "model-%05zu-of-%05zu.safetensors", shard + 1,
                 n_shards);
}

/* Writes items[first..last) (all of one shard) to path. */
static int s_write_shard(const char *path, s_item_t *items, size_t first,
                         size_t last, st_dtype_t dtype, uint64_t seed,
                         float *chunk, progress_t *progress, err_t *err)
{
    st_writer_t *w = st_writer_new(path, err);
    if (!w)
        return -1;
    int rc = -1;
    for (size_t i = first; i < last; i++)
        if (st_writer_add(w, items[i].name, dtype, items[i].ndim,
                          items[i].shape, err))
            goto cleanup;
    if (st_writer_begin(w, err))
        goto cleanup;
    for (size_t i = first; i < last; i++) {
        const s_item_t *it = &items[i];
        s_rng_t rng;
        s_rng_init(&rng, seed, it->name);
        for (uint64_t at = 0; at < it->n_values; at += S_CHUNK) {
            size_t m = (size_t)(it->n_values - at < S_CHUNK ? it->n_values - at
                                                            : S_CHUNK);
            if (it->draw == S_DRAW_UNIFORM)
                s_fill_uniform(&rng, chunk, m, it->mean, it->spread);
            else
                s_fill_normal(&rng, chunk, m, it->mean, it->spread);
            if (st_writer_write(w, chunk, m, err))
                goto cleanup;
            if (progress)
                progress_add(progress, m * st_dtype_size(dtype));
        }
    }
    rc = st_writer_finish(w, err);
cleanup:;
    int saved = errno;
    st_writer_destroy(&w);
    errno = saved;
    return rc;
}

static int s_unlink_stale(const char *dir, const char *name, err_t *err)
{
    char *p = path_join(dir, name);
    if (!p)
        return err_set(err, ENOMEM, "out of memory");
    int rc = 0;
    if (unlink(p) != 0 && errno != ENOENT)
        rc = err_set(err, errno, "cannot remove stale %s: %s", p,
                     strerror(errno));
    mem_free(p);
    return rc;
}

/* ---- public -------------------------------------------------------------- */

const char *synth_arch_names(void)
{
    return family_names();
}

const char *synth_preset_names(const char *arch)
{
    return family_find(arch) ? S_PRESET_NAMES : NULL;
}

int synth_preset(config_t *cfg, const char *arch, const char *preset,
                 err_t *err)
{
    assert(cfg);
    memset(cfg, 0, sizeof *cfg);
    const family_t *a = family_find(arch);
    if (!a)
        return err_set(err, EINVAL, "unknown architecture '%s' (known: %s)",
                       arch ? arch : "(none)", synth_arch_names());
    const family_preset_t *p = NULL;
    for (size_t i = 0; preset && i < a->n_presets; i++)
        if (strcmp(a->presets[i].name, preset) == 0)
            p = &a->presets[i];
    if (!p)
        return err_set(err, EINVAL, "unknown preset '%s' for %s (known: %s)",
                       preset ? preset : "(none)", a->model_type,
                       S_PRESET_NAMES);
    cfg->arch = a->arch;
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", a->model_type);
    cfg->hidden_size = p->hidden;
    cfg->n_layers = p->n_layers;
    cfg->n_heads = p->n_heads;
    cfg->n_kv_heads = p->n_kv_heads;
    cfg->head_dim = p->hidden / p->n_heads;
    cfg->intermediate_size = p->inter;
    cfg->dense_intermediate_size = p->inter;
    cfg->n_experts = p->n_experts;
    cfg->n_experts_per_tok = p->top_k;
    cfg->vocab_size = p->vocab;
    cfg->max_position_embeddings = 4096;
    cfg->rms_norm_eps = 1e-5f;
    cfg->rope_theta = a->preset_rope_theta;
    cfg->rope_type = CONFIG_ROPE_DEFAULT;
    cfg->rope_factor = 1;
    cfg->n_group = 1;
    cfg->topk_group = 1;
    cfg->routed_scaling_factor = 1;
    cfg->tie_word_embeddings = false;
    cfg->bos_token_id = 1;
    cfg->n_eos = 1;
    cfg->eos_token_ids[0] = 2;
    cfg->attn = a->attn;
    cfg->experts_layout = a->experts_layout;
    a->preset(cfg, p);
    cfg->rope_dim = config_is_mla(cfg) ? cfg->qk_rope_head_dim : cfg->head_dim;
    return 0;
}

/* The config.json text of cfg (json_dumps'd: free() it) and the config it
 * reads back as, which the tensors follow; checks that it is cfg's model.
 * NULL with errno/err on failure. */
static char *s_config_text(const family_t *a, const config_t *cfg,
                           st_dtype_t dtype, config_t *back, err_t *err)
{
    json_t *cjson = s_config_json(a, cfg, dtype);
    char *text = cjson ? json_dumps(cjson, JSON_INDENT(2) | JSON_SORT_KEYS |
                                               JSON_REAL_PRECISION(15))
                       : NULL;
    json_decref(cjson);
    if (!text) {
        err_set(err, ENOMEM, "out of memory building config.json");
        return NULL;
    }
    /* The config must be one config_parse_all() accepts, and say the same
     * model: a field config.json cannot carry for this family is an error,
     * not a checkpoint that disagrees with its config. */
    char want[256], got[256];
    if (config_parse_all(back, text, strlen(text), "the config to write", err))
        goto fail;
    config_model_id(cfg, want, sizeof want);
    config_model_id(back, got, sizeof got);
    if (strcmp(want, got) != 0) {
        err_set(err, EINVAL, "the config to write reads back as %s, not %s: "
                "%s cannot express it", got, want, a->model_type);
        goto fail;
    }
    return text;
fail:;
    int saved = errno;
    free(text);
    errno = saved;
    return NULL;
}

/* The tensors of the model described by back (items NULL: count only). */
static s_item_t *s_plan(const family_t *a, const config_t *back,
                        st_dtype_t dtype, size_t *n, err_t *err)
{
    if (s_expand(a, back, dtype, NULL, n, err))
        return NULL;
    s_item_t *items = mem_calloc(*n ? *n : 1, sizeof *items);
    if (!items) {
        err_set(err, ENOMEM, "out of memory planning %zu tensors", *n);
        return NULL;
    }
    if (s_expand(a, back, dtype, items, n, err)) {
        int saved = errno;
        mem_free(items);
        errno = saved;
        return NULL;
    }
    return items;
}

static const family_t *s_check_args(const config_t *cfg, st_dtype_t dtype,
                                    err_t *err)
{
    const family_t *a = family_of(cfg->arch);
    if (!a || st_dtype_size(dtype) == 0) {
        err_set(err, EINVAL, "synth: %s %d", a ? "invalid dtype" : "no tables "
                "for architecture", a ? (int)dtype : (int)cfg->arch);
        return NULL;
    }
    return a;
}

int synth_plan(const config_t *cfg, const synth_opts_t *opts,
               synth_stats_t *stats, err_t *err)
{
    assert(cfg);
    assert(opts);
    assert(stats);
    st_dtype_t dtype = opts->dtype ? opts->dtype : ST_F32;
    const family_t *a = s_check_args(cfg, dtype, err);
    if (!a)
        return -1;
    config_t back;
    char *text = s_config_text(a, cfg, dtype, &back, err);
    if (!text)
        return -1;
    free(text);
    size_t n = 0;
    s_item_t *items = s_plan(a, &back, dtype, &n, err);
    if (!items)
        return -1;
    stats->n_tensors = n;
    stats->n_files = s_assign_shards(items, n, opts->shard_bytes);
    stats->data_bytes = 0;
    for (size_t i = 0; i < n; i++)
        stats->data_bytes += items[i].nbytes;
    mem_free(items);
    return 0;
}

int synth_write(const char *dir, const config_t *cfg, const synth_opts_t *opts,
                synth_stats_t *stats, err_t *err)
{
    assert(dir);
    assert(cfg);
    assert(opts);
    json_t *gjson = NULL;
    char *ctext = NULL, *gtext = NULL;
    char *path = NULL;
    s_item_t *items = NULL;
    float *chunk = NULL;
    const char **names = NULL, **files = NULL;
    char (*shard_names)[64] = NULL;
    int rc = -1;

    st_dtype_t dtype = opts->dtype ? opts->dtype : ST_F32;
    const family_t *a = s_check_args(cfg, dtype, err);
    if (!a)
        goto cleanup;
    config_t back;
    if (!(ctext = s_config_text(a, cfg, dtype, &back, err)))
        goto cleanup;
    gjson = s_generation_json(cfg);
    if (gjson)
        gtext = json_dumps(gjson, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!gtext) {
        err_set(err, ENOMEM, "out of memory building generation_config.json");
        goto cleanup;
    }

    size_t n = 0;
    if (!(items = s_plan(a, &back, dtype, &n, err)))
        goto cleanup;
    chunk = mem_alloc(S_CHUNK * sizeof *chunk);
    if (!chunk) {
        err_set(err, ENOMEM, "out of memory");
        goto cleanup;
    }
    size_t n_shards = s_assign_shards(items, n, opts->shard_bytes);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += items[i].nbytes;

    if (s_mkdirs(dir, err))
        goto cleanup;
    if (s_write_text(dir, "config.json", ctext, err) ||
        s_write_text(dir, "generation_config.json", gtext, err))
        goto cleanup;
    if (s_unlink_stale(dir, n_shards == 1 ? "model.safetensors.index.json"
                                          : "model.safetensors", err))
        goto cleanup;

    shard_names = mem_calloc(n_shards, sizeof *shard_names);
    if (!shard_names) {
        err_set(err, ENOMEM, "out of memory");
        goto cleanup;
    }
    size_t first = 0;
    for (size_t s = 0; s < n_shards; s++) {
        size_t last = first;
        while (last < n && items[last].shard == s)
            last++;
        s_shard_name(shard_names[s], sizeof shard_names[s], s, n_shards);
        mem_free(path);
        if (!(path = path_join(dir, shard_names[s]))) {
            err_set(err, ENOMEM, "out of memory");
            goto cleanup;
        }
        if (s_write_shard(path, items, first, last, dtype, opts->seed, chunk,
                          opts->progress, err))
            goto cleanup;
        first = last;
    }
    if (n_shards > 1) {
        names = mem_calloc(n, sizeof *names);
        files = mem_calloc(n, sizeof *files);
        mem_free(path);
        path = path_join(dir, "model.safetensors.index.json");
        if (!names || !files || !path) {
            err_set(err, ENOMEM, "out of memory");
            goto cleanup;
        }
        for (size_t i = 0; i < n; i++) {
            names[i] = items[i].name;
            files[i] = shard_names[items[i].shard];
        }
        if (st_index_write(path, total, n, names, files, err))
            goto cleanup;
    }
    if (stats) {
        stats->n_tensors = n;
        stats->n_files = n_shards;
        stats->data_bytes = total;
    }
    rc = 0;
cleanup:;
    int saved = errno;
    mem_free(files);
    mem_free(names);
    mem_free(shard_names);
    mem_free(chunk);
    mem_free(items);
    mem_free(path);
    free(gtext); /* json_dumps allocates with jansson's malloc */
    free(ctext);
    json_decref(gjson);
    errno = saved;
    return rc;
}
