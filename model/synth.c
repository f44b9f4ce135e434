/* synth: see synth.h.
 *
 * An architecture is one s_arch_t row: its names, its presets and a table of
 * tensor templates. The table is read in order: a template of scope model is
 * one tensor; a run of layer templates is repeated for every layer, and a run
 * of expert templates inside it for every expert of that layer. Template
 * names carry "{L}" and "{E}" for the layer and expert numbers. Shapes are
 * lists of config dims (s_dim_t), so stacked experts (gpt-oss) are a layer
 * template whose first dim is S_DIM_EXPERTS.
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
#include "model/st_writer.h"

enum { S_CHUNK = 1 << 18 };   /* values generated and written per step */
enum { S_NAME_MAX = 160 };    /* longest tensor name */
enum { S_MAX_TDIMS = 3 };     /* dims of a template's shape */

typedef enum s_scope {
    S_SCOPE_MODEL,            /* one tensor */
    S_SCOPE_LAYER,            /* one per layer: "{L}" */
    S_SCOPE_EXPERT,           /* one per layer and expert: "{L}", "{E}" */
} s_scope_t;

typedef enum s_dim {
    S_DIM_HIDDEN,             /* hidden_size */
    S_DIM_VOCAB,              /* vocab_size */
    S_DIM_Q,                  /* n_heads * head_dim */
    S_DIM_KV,                 /* n_kv_heads * head_dim */
    S_DIM_INTER,              /* intermediate_size */
    S_DIM_EXPERTS,            /* n_experts */
} s_dim_t;

typedef enum s_init {
    S_INIT_EMBED,             /* N(0, 1) */
    S_INIT_LINEAR,            /* N(0, 1/sqrt(fan_in)) */
    S_INIT_ROUTER,            /* N(0, 2/sqrt(fan_in)): decisive routing */
    S_INIT_NORM,              /* 1 + N(0, 0.1) */
} s_init_t;

typedef struct s_template {
    const char *name;         /* with "{L}" / "{E}" as the scope needs */
    s_scope_t scope;
    s_init_t init;
    int ndim;
    s_dim_t dims[S_MAX_TDIMS];
    s_dim_t fan_in;           /* in_features, for LINEAR and ROUTER */
    bool untied_only;         /* absent when tie_word_embeddings */
} s_template_t;

typedef struct s_preset {
    const char *name;
    int hidden, n_layers, n_experts, top_k, inter, n_heads, n_kv_heads, vocab;
} s_preset_t;

typedef struct s_arch {
    config_arch_t arch;
    const char *model_type;   /* config.json "model_type" */
    const char *class_name;   /* config.json "architectures" */
    const char *experts_key;  /* config.json field of the expert count */
    const s_template_t *tensors;
    size_t n_tensors;
    const s_preset_t *presets;
    size_t n_presets;
    const char *preset_names; /* for messages and --help */
} s_arch_t;

#define S_MAT(name, scope, init, out, in) \
    {name, scope, init, 2, {out, in}, in, false}
#define S_VEC(name, scope, init, width) \
    {name, scope, init, 1, {width}, width, false}

static const s_template_t s_mixtral_tensors[] = {
    {"model.embed_tokens.weight", S_SCOPE_MODEL, S_INIT_EMBED, 2,
     {S_DIM_VOCAB, S_DIM_HIDDEN}, S_DIM_HIDDEN, false},
    S_VEC("model.layers.{L}.input_layernorm.weight", S_SCOPE_LAYER, S_INIT_NORM,
          S_DIM_HIDDEN),
    S_MAT("model.layers.{L}.self_attn.q_proj.weight", S_SCOPE_LAYER,
          S_INIT_LINEAR, S_DIM_Q, S_DIM_HIDDEN),
    S_MAT("model.layers.{L}.self_attn.k_proj.weight", S_SCOPE_LAYER,
          S_INIT_LINEAR, S_DIM_KV, S_DIM_HIDDEN),
    S_MAT("model.layers.{L}.self_attn.v_proj.weight", S_SCOPE_LAYER,
          S_INIT_LINEAR, S_DIM_KV, S_DIM_HIDDEN),
    S_MAT("model.layers.{L}.self_attn.o_proj.weight", S_SCOPE_LAYER,
          S_INIT_LINEAR, S_DIM_HIDDEN, S_DIM_Q),
    S_VEC("model.layers.{L}.post_attention_layernorm.weight", S_SCOPE_LAYER,
          S_INIT_NORM, S_DIM_HIDDEN),
    S_MAT("model.layers.{L}.block_sparse_moe.gate.weight", S_SCOPE_LAYER,
          S_INIT_ROUTER, S_DIM_EXPERTS, S_DIM_HIDDEN),
    S_MAT("model.layers.{L}.block_sparse_moe.experts.{E}.w1.weight",
          S_SCOPE_EXPERT, S_INIT_LINEAR, S_DIM_INTER, S_DIM_HIDDEN),
    S_MAT("model.layers.{L}.block_sparse_moe.experts.{E}.w2.weight",
          S_SCOPE_EXPERT, S_INIT_LINEAR, S_DIM_HIDDEN, S_DIM_INTER),
    S_MAT("model.layers.{L}.block_sparse_moe.experts.{E}.w3.weight",
          S_SCOPE_EXPERT, S_INIT_LINEAR, S_DIM_INTER, S_DIM_HIDDEN),
    S_VEC("model.norm.weight", S_SCOPE_MODEL, S_INIT_NORM, S_DIM_HIDDEN),
    {"lm_head.weight", S_SCOPE_MODEL, S_INIT_LINEAR, 2,
     {S_DIM_VOCAB, S_DIM_HIDDEN}, S_DIM_HIDDEN, true},
};

static const s_preset_t s_mixtral_presets[] = {
    /* name     hidden layers experts top_k  inter heads kv  vocab */
    {"tiny",       64,    2,     8,     2,   128,   4,   2,   512},
    {"small",     256,    4,     8,     2,   512,   8,   2,  2048},
    {"medium",   1024,    8,     8,     2,  2816,  16,   4, 32000},
};

#define S_COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const s_arch_t s_archs[] = {
    {CONFIG_ARCH_MIXTRAL, "mixtral", "MixtralForCausalLM", "num_local_experts",
     s_mixtral_tensors, S_COUNT(s_mixtral_tensors), s_mixtral_presets,
     S_COUNT(s_mixtral_presets), "tiny, small, medium"},
};

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

/* ---- the plan: every tensor, its shape and its shard --------------------- */

typedef struct s_item {
    char name[S_NAME_MAX];
    const s_template_t *tpl;
    int ndim;
    int64_t shape[S_MAX_TDIMS];
    int64_t fan_in;
    uint64_t n_values;
    uint64_t nbytes;          /* in the on-disk dtype */
    size_t shard;             /* 0-based file number */
} s_item_t;

static int64_t s_dim_value(const config_t *c, s_dim_t d)
{
    switch (d) {
    case S_DIM_HIDDEN: return c->hidden_size;
    case S_DIM_VOCAB: return c->vocab_size;
    case S_DIM_Q: return (int64_t)c->n_heads * c->head_dim;
    case S_DIM_KV: return (int64_t)c->n_kv_heads * c->head_dim;
    case S_DIM_INTER: return c->intermediate_size;
    case S_DIM_EXPERTS: return c->n_experts;
    }
    return 0;
}

/* Copies tpl into out with "{L}" -> layer and "{E}" -> expert. */
static int s_expand_name(char *out, const char *tpl, int layer, int expert,
                         err_t *err)
{
    size_t used = 0;
    for (const char *p = tpl; *p;) {
        char num[16] = "";
        const char *piece = num;
        size_t len;
        if (strncmp(p, "{L}", 3) == 0 || strncmp(p, "{E}", 3) == 0) {
            snprintf(num, sizeof num, "%d", p[1] == 'L' ? layer : expert);
            len = strlen(num);
            p += 3;
        } else {
            piece = p;
            len = 1;
            p++;
        }
        if (used + len >= S_NAME_MAX)
            return err_set(err, EINVAL, "tensor name from '%s' is too long",
                           tpl);
        memcpy(out + used, piece, len);
        used += len;
    }
    out[used] = '\0';
    return 0;
}

static int s_add_item(s_item_t *items, size_t *n, const s_template_t *t,
                      const config_t *c, st_dtype_t dtype, int layer,
                      int expert, err_t *err)
{
    s_item_t *it = &items[*n];
    memset(it, 0, sizeof *it);
    if (s_expand_name(it->name, t->name, layer, expert, err))
        return -1;
    it->tpl = t;
    it->ndim = t->ndim;
    it->n_values = 1;
    for (int d = 0; d < t->ndim; d++) {
        it->shape[d] = s_dim_value(c, t->dims[d]);
        /* config_parse() caps dims at 2^24: no overflow */
        it->n_values *= (uint64_t)it->shape[d];
    }
    it->fan_in = s_dim_value(c, t->fan_in);
    it->nbytes = it->n_values * st_dtype_size(dtype);
    (*n)++;
    return 0;
}

/* Walks the template table (see the file comment). With items NULL it only
 * counts into *n. */
static int s_expand(const s_arch_t *a, const config_t *c, st_dtype_t dtype,
                    s_item_t *items, size_t *n, err_t *err)
{
    size_t count = 0;
    for (size_t i = 0; i < a->n_tensors;) {
        const s_template_t *t = &a->tensors[i];
        if (t->scope == S_SCOPE_MODEL) {
            if (!(t->untied_only && c->tie_word_embeddings)) {
                if (items && s_add_item(items, &count, t, c, dtype, 0, 0, err))
                    return -1;
                if (!items)
                    count++;
            }
            i++;
            continue;
        }
        size_t end = i; /* the layer block: [i, end) */
        while (end < a->n_tensors && a->tensors[end].scope != S_SCOPE_MODEL)
            end++;
        for (int l = 0; l < c->n_layers; l++) {
            for (size_t k = i; k < end;) {
                if (a->tensors[k].scope == S_SCOPE_LAYER) {
                    if (items && s_add_item(items, &count, &a->tensors[k], c,
                                            dtype, l, 0, err))
                        return -1;
                    if (!items)
                        count++;
                    k++;
                    continue;
                }
                size_t run = k; /* the expert run: [k, run) */
                while (run < end && a->tensors[run].scope == S_SCOPE_EXPERT)
                    run++;
                for (int e = 0; e < c->n_experts; e++)
                    for (size_t q = k; q < run; q++) {
                        if (items && s_add_item(items, &count, &a->tensors[q],
                                                c, dtype, l, e, err))
                            return -1;
                        if (!items)
                            count++;
                    }
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

static const s_arch_t *s_arch_by_name(const char *name)
{
    for (size_t i = 0; i < S_COUNT(s_archs); i++)
        if (strcmp(s_archs[i].model_type, name) == 0)
            return &s_archs[i];
    return NULL;
}

static const s_arch_t *s_arch_by_id(config_arch_t arch)
{
    for (size_t i = 0; i < S_COUNT(s_archs); i++)
        if (s_archs[i].arch == arch)
            return &s_archs[i];
    return NULL;
}

/* The shortest decimal that reads back as the same float: 1e-5, not
 * 9.99999974737875e-6. */
static double s_float_decimal(float f)
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

static const char *s_torch_dtype(st_dtype_t dtype)
{
    switch (dtype) {
    case ST_F16: return "float16";
    case ST_BF16: return "bfloat16";
    case ST_F32: break;
    }
    return "float32";
}

/* config.json as transformers' save_pretrained would write it (the fields that
 * matter for inference). NULL on out of memory. */
static json_t *s_config_json(const s_arch_t *a, const config_t *c,
                             st_dtype_t dtype)
{
    json_t *eos;
    if (c->n_eos == 0) {
        eos = json_null();
    } else if (c->n_eos == 1) {
        eos = json_integer(c->eos_token_ids[0]);
    } else {
        eos = json_array();
        for (int i = 0; eos && i < c->n_eos; i++)
            if (json_array_append_new(eos, json_integer(c->eos_token_ids[i]))) {
                json_decref(eos);
                eos = NULL;
            }
    }
    json_t *root = json_pack(
        "{s:[s], s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i,"
        " s:f, s:{s:f, s:s}, s:o, s:b, s:o, s:o, s:s, s:f, s:f, s:b}",
        "architectures", a->class_name,
        "model_type", a->model_type,
        "hidden_act", "silu",
        "hidden_size", c->hidden_size,
        "intermediate_size", c->intermediate_size,
        "num_hidden_layers", c->n_layers,
        "num_attention_heads", c->n_heads,
        "num_key_value_heads", c->n_kv_heads,
        "head_dim", c->head_dim,
        a->experts_key, c->n_experts,
        "num_experts_per_tok", c->n_experts_per_tok,
        "vocab_size", c->vocab_size,
        "max_position_embeddings", c->max_position_embeddings,
        "rms_norm_eps", s_float_decimal(c->rms_norm_eps),
        "rope_parameters", "rope_theta", c->rope_theta, "rope_type", "default",
        "sliding_window",
        c->sliding_window ? json_integer(c->sliding_window) : json_null(),
        "tie_word_embeddings", (int)c->tie_word_embeddings,
        "bos_token_id",
        c->bos_token_id >= 0 ? json_integer(c->bos_token_id) : json_null(),
        "eos_token_id", eos,
        "dtype", s_torch_dtype(dtype),
        "attention_dropout", 0.0,
        "router_jitter_noise", 0.0,
        "use_cache", 1);
    return root;
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
                         float *chunk, err_t *err)
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
        double mean = 0, std = 1;
        switch (it->tpl->init) {
        case S_INIT_EMBED: break;
        case S_INIT_LINEAR: std = 1.0 / sqrt((double)it->fan_in); break;
        case S_INIT_ROUTER: std = 2.0 / sqrt((double)it->fan_in); break;
        case S_INIT_NORM: mean = 1.0; std = 0.1; break;
        }
        s_rng_t rng;
        s_rng_init(&rng, seed, it->name);
        for (uint64_t at = 0; at < it->n_values; at += S_CHUNK) {
            size_t m = (size_t)(it->n_values - at < S_CHUNK ? it->n_values - at
                                                            : S_CHUNK);
            s_fill_normal(&rng, chunk, m, mean, std);
            if (st_writer_write(w, chunk, m, err))
                goto cleanup;
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
    return "mixtral";
}

const char *synth_preset_names(const char *arch)
{
    const s_arch_t *a = arch ? s_arch_by_name(arch) : NULL;
    return a ? a->preset_names : NULL;
}

int synth_preset(config_t *cfg, const char *arch, const char *preset,
                 err_t *err)
{
    assert(cfg);
    memset(cfg, 0, sizeof *cfg);
    const s_arch_t *a = arch ? s_arch_by_name(arch) : NULL;
    if (!a)
        return err_set(err, EINVAL, "unknown architecture '%s' (known: %s)",
                       arch ? arch : "(none)", synth_arch_names());
    const s_preset_t *p = NULL;
    for (size_t i = 0; preset && i < a->n_presets; i++)
        if (strcmp(a->presets[i].name, preset) == 0)
            p = &a->presets[i];
    if (!p)
        return err_set(err, EINVAL, "unknown preset '%s' for %s (known: %s)",
                       preset ? preset : "(none)", a->model_type,
                       a->preset_names);
    cfg->arch = a->arch;
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", a->model_type);
    cfg->hidden_size = p->hidden;
    cfg->n_layers = p->n_layers;
    cfg->n_heads = p->n_heads;
    cfg->n_kv_heads = p->n_kv_heads;
    cfg->head_dim = p->hidden / p->n_heads;
    cfg->intermediate_size = p->inter;
    cfg->n_experts = p->n_experts;
    cfg->n_experts_per_tok = p->top_k;
    cfg->vocab_size = p->vocab;
    cfg->max_position_embeddings = 4096;
    cfg->rms_norm_eps = 1e-5f;
    cfg->rope_theta = 1e6;
    cfg->rope_type = CONFIG_ROPE_DEFAULT;
    cfg->sliding_window = 0;
    cfg->tie_word_embeddings = false;
    cfg->bos_token_id = 1;
    cfg->n_eos = 1;
    cfg->eos_token_ids[0] = 2;
    return 0;
}

int synth_write(const char *dir, const config_t *cfg, const synth_opts_t *opts,
                synth_stats_t *stats, err_t *err)
{
    assert(dir);
    assert(cfg);
    assert(opts);
    json_t *cjson = NULL, *gjson = NULL;
    char *ctext = NULL, *gtext = NULL;
    char *path = NULL;
    s_item_t *items = NULL;
    float *chunk = NULL;
    const char **names = NULL, **files = NULL;
    char (*shard_names)[64] = NULL;
    int rc = -1;

    st_dtype_t dtype = opts->dtype ? opts->dtype : ST_F32;
    const s_arch_t *a = s_arch_by_id(cfg->arch);
    if (!a || st_dtype_size(dtype) == 0) {
        err_set(err, EINVAL, "synth: %s %d", a ? "invalid dtype" : "no tables "
                "for architecture", a ? (int)dtype : (int)cfg->arch);
        goto cleanup;
    }
    /* The config must be one config_parse() accepts: check before writing. */
    cjson = s_config_json(a, cfg, dtype);
    if (cjson)
        ctext = json_dumps(cjson, JSON_INDENT(2) | JSON_SORT_KEYS |
                                      JSON_REAL_PRECISION(15));
    if (!ctext) {
        err_set(err, ENOMEM, "out of memory building config.json for %s", dir);
        goto cleanup;
    }
    config_t check;
    if (config_parse(&check, ctext, strlen(ctext), "the config to write", err))
        goto cleanup;
    gjson = s_generation_json(cfg);
    if (gjson)
        gtext = json_dumps(gjson, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!gtext) {
        err_set(err, ENOMEM, "out of memory building generation_config.json");
        goto cleanup;
    }

    size_t n = 0;
    if (s_expand(a, cfg, dtype, NULL, &n, err))
        goto cleanup;
    items = mem_calloc(n, sizeof *items);
    chunk = mem_alloc(S_CHUNK * sizeof *chunk);
    if (!items || !chunk) {
        err_set(err, ENOMEM, "out of memory planning %zu tensors", n);
        goto cleanup;
    }
    if (s_expand(a, cfg, dtype, items, &n, err))
        goto cleanup;
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
                          err))
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
    json_decref(cjson);
    errno = saved;
    return rc;
}
