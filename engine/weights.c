/* weights: see weights.h. */
#include "engine/weights.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/blas.h"
#include "core/mem.h"
#include "core/progress.h"
#include "engine/fused.h"
#include "engine/stored.h"
#include "engine/wconvert.h"
#include "engine/wstore.h"
#include "model/arch.h"

/* What weights_load keeps while it loads: the converter (made on the first
 * matrix to convert) and the matrices --quantization had to leave. */
typedef struct s_loader {
    weights_t *w;
    const weights_select_t *select;
    stored_blocks_t blocks;   /* FP8 weight_block_size */
    wconvert_t *conv;
    int n_kept;               /* matrices left unquantized: rows not whole blocks */
    char kept_first[ARCH_NAME_MAX];
    int64_t kept_cols;
} s_loader_t;

/* The FP8 block size of the config's quantization_config (zero: none). */
static stored_blocks_t s_blocks(const config_t *cfg)
{
    return (stored_blocks_t){.block_n = cfg->quant.block_n, .block_k = cfg->quant.block_k};
}

/* t converted as the format asks (linear: --quantization applies), its
 * source released. */
static int s_convert(s_loader_t *ld, tensor_t *t, bool linear, bool release,
                     const void *owned, const char *name, err_t *err)
{
    weights_t *self = ld->w;
    const wformat_t *f = &self->format;
    dtype_t target;
    if (f->quant != WFORMAT_QUANT_NONE && linear &&
        t->cols % dtype_info(f->quant == WFORMAT_QUANT_Q8_0 ? DTYPE_Q8_0 : DTYPE_Q4_0)->block) {
        if (ld->n_kept++ == 0) {
            snprintf(ld->kept_first, sizeof ld->kept_first, "%s", name);
            ld->kept_cols = t->cols;
        }
    }
    if (!wformat_target(f, t->dtype, linear, (long)t->cols, &target))
        return 0;
    if (!ld->conv) {
        const int threads = ld->select->threads > 0 ? ld->select->threads : blas_threads();
        ld->conv = wconvert_new(threads, err);
        if (!ld->conv)
            return -1;
    }
    const tensor_t src = *t;
    if (wconvert_tensor(ld->conv, self->store, t, target, name, err) < 0)
        return -1;
    if (owned)
        wstore_free(self->store, owned);
    else if (release)
        wconvert_drop_pages(&src);
    return 0;
}

/* Resolves vector weight w by role into *dst (float32), checking its shape. */
static int s_vector(weights_t *self, arch_weight_t w, int layer, int expert,
                    const float **dst, err_t *err)
{
    arch_tensor_t t;
    if (arch_tensor(&self->cfg, w, layer, expert, &t, err) < 0)
        return -1;
    *dst = safetensors_f32(self->st, t.name, t.slice, t.ndim, t.shape, err);
    return *dst ? 0 : -1;
}

/* Resolves matrix weight w by role into *dst as stored, then converts it as
 * the format asks. */
static int s_matrix(s_loader_t *ld, arch_weight_t w, int layer, int expert, bool linear,
                    tensor_t *dst, err_t *err)
{
    weights_t *self = ld->w;
    arch_tensor_t t;
    if (arch_tensor(&self->cfg, w, layer, expert, &t, err) < 0 ||
        stored_matrix(self->st, self->store, &t, &ld->blocks, dst, err) < 0)
        return -1;
    /* Kept as stored and asked resident: moved into memory of our own (a
     * matrix to convert is not: its conversion is the copy). Where memory
     * is short the view of the file serves. */
    dtype_t target;
    if (ld->select->resident &&
        !wformat_target(&self->format, dst->dtype, linear, (long)dst->cols, &target))
        (void)stored_resident(self->store, dst);
    return s_convert(ld, dst, linear, true, NULL, t.name, err);
}

/* How a layer's weight is held. */
typedef enum s_kind {
    S_VEC,      /* const float *, widened */
    S_LINEAR,   /* tensor_t, --quantization applies */
    S_MAT,      /* tensor_t, never quantized (the router) */
} s_kind_t;

/* The weights of one layer outside its routed experts, in load order (the
 * first missing one is the one an error names). */
#define S_AT(field) offsetof(layer_weights_t, field)
static const struct {
    arch_weight_t w;
    size_t at;            /* offset of its field in layer_weights_t */
    s_kind_t kind;
} s_layer_roles[] = {
    {ARCH_W_ATTN_NORM, S_AT(attn_norm), S_VEC}, {ARCH_W_O, S_AT(o), S_LINEAR},
    {ARCH_W_Q_A, S_AT(q_a), S_LINEAR}, {ARCH_W_Q_A_NORM, S_AT(q_a_norm), S_VEC},
    {ARCH_W_Q_B, S_AT(q_b), S_LINEAR}, {ARCH_W_Q, S_AT(q), S_LINEAR},
    {ARCH_W_KV_A, S_AT(kv_a), S_LINEAR}, {ARCH_W_KV_A_NORM, S_AT(kv_a_norm), S_VEC},
    {ARCH_W_KV_B, S_AT(kv_b), S_LINEAR}, {ARCH_W_K, S_AT(k), S_LINEAR},
    {ARCH_W_V, S_AT(v), S_LINEAR},
    {ARCH_W_Q_BIAS, S_AT(q_bias), S_VEC}, {ARCH_W_K_BIAS, S_AT(k_bias), S_VEC},
    {ARCH_W_V_BIAS, S_AT(v_bias), S_VEC}, {ARCH_W_O_BIAS, S_AT(o_bias), S_VEC},
    {ARCH_W_Q_NORM, S_AT(q_norm), S_VEC}, {ARCH_W_K_NORM, S_AT(k_norm), S_VEC},
    {ARCH_W_SINKS, S_AT(sinks), S_VEC}, {ARCH_W_FFN_NORM, S_AT(ffn_norm), S_VEC},
    {ARCH_W_DENSE_GATE, S_AT(dense.gate), S_LINEAR},
    {ARCH_W_DENSE_UP, S_AT(dense.up), S_LINEAR},
    {ARCH_W_DENSE_DOWN, S_AT(dense.down), S_LINEAR}, {ARCH_W_ROUTER, S_AT(router), S_MAT},
    {ARCH_W_ROUTER_BIAS, S_AT(router_bias), S_VEC},
    {ARCH_W_SCORE_BIAS, S_AT(score_bias), S_VEC},
    {ARCH_W_SHARED_GATE, S_AT(shared.gate), S_LINEAR},
    {ARCH_W_SHARED_UP, S_AT(shared.up), S_LINEAR},
    {ARCH_W_SHARED_DOWN, S_AT(shared.down), S_LINEAR},
    {ARCH_W_SHARED_EXPERT_GATE, S_AT(shared_gate), S_VEC},
};
#undef S_AT
enum { S_N_LAYER_ROLES = sizeof s_layer_roles / sizeof s_layer_roles[0] };

/* Layer l's weights that the model has (arch_present(), the rule synth
 * writes by too): attention, norms, router, shared and dense FFNs. */
static int s_load_layer(s_loader_t *ld, int l, err_t *err)
{
    weights_t *self = ld->w;
    char *lw = (char *)&self->layers[l];
    for (int i = 0; i < S_N_LAYER_ROLES; i++) {
        const arch_weight_t w = s_layer_roles[i].w;
        if (!arch_present(&self->cfg, w, l))
            continue;
        void *dst = lw + s_layer_roles[i].at;
        int rc = s_layer_roles[i].kind == S_VEC
                     ? s_vector(self, w, l, 0, (const float **)dst, err)
                     : s_matrix(ld, w, l, 0, s_layer_roles[i].kind == S_LINEAR,
                                (tensor_t *)dst, err);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int s_load_dense(s_loader_t *ld, err_t *err)
{
    weights_t *self = ld->w;
    if (s_matrix(ld, ARCH_W_EMBED, 0, 0, false, &self->embed, err) < 0 ||
        s_vector(self, ARCH_W_FINAL_NORM, 0, 0, &self->final_norm, err) < 0)
        return -1;
    if (!arch_present(&self->cfg, ARCH_W_LM_HEAD, 0)) {
        self->lm_head = self->embed; /* tied: quantized apart, the embedding kept */
        if (s_convert(ld, &self->lm_head, true, false, NULL, "lm_head (tied)", err) < 0)
            return -1;
    } else if (s_matrix(ld, ARCH_W_LM_HEAD, 0, 0, true, &self->lm_head, err) < 0) {
        return -1;
    }
    for (int l = 0; l < self->cfg.n_layers; l++)
        if (s_load_layer(ld, l, err) < 0)
            return -1;
    self->has_dense = true;
    return 0;
}

/* gpt_oss's expert e of layer l (engine/fused.h), converted. */
static int s_load_fused(s_loader_t *ld, int l, int e, err_t *err)
{
    weights_t *self = ld->w;
    layer_weights_t *lw = &self->layers[l];
    expert_weights_t *ew = &lw->experts[e];
    const void *owned = NULL;
    if (fused_load(self->st, self->store, &self->cfg, l, e, ew, &lw->expert_biases[e],
                   &owned, err) < 0)
        return -1;
    char name[ARCH_NAME_MAX + 32];
    snprintf(name, sizeof name, "expert %d of layer %d", e, l);
    /* MXFP4 views' pages may go once converted; a re-laid out buffer goes
     * whole, once none of the three is left in it. */
    const bool release = owned == NULL;
    const void *gate = ew->gate.data, *up = ew->up.data, *down = ew->down.data;
    if (s_convert(ld, &ew->gate, true, release, NULL, name, err) < 0 ||
        s_convert(ld, &ew->up, true, release, NULL, name, err) < 0 ||
        s_convert(ld, &ew->down, true, release, NULL, name, err) < 0)
        return -1;
    if (owned && ew->gate.data != gate && ew->up.data != up && ew->down.data != down)
        wstore_free(self->store, owned);
    return 0;
}

static int s_load_experts(s_loader_t *ld, weights_hosts_fn hosts, void *ctx, err_t *err)
{
    weights_t *self = ld->w;
    for (int l = 0; l < self->cfg.n_layers; l++) {
        if (!config_layer_is_moe(&self->cfg, l))
            continue; /* a dense layer has no experts to host */
        for (int e = 0; e < self->cfg.n_experts; e++) {
            if (!hosts(ctx, l, e))
                continue;
            layer_weights_t *lw = &self->layers[l];
            if (lw->expert_biases) {
                if (s_load_fused(ld, l, e, err) < 0)
                    return -1;
                continue;
            }
            expert_weights_t *ew = &lw->experts[e];
            if (s_matrix(ld, ARCH_W_EXPERT_GATE, l, e, true, &ew->gate, err) < 0 ||
                s_matrix(ld, ARCH_W_EXPERT_UP, l, e, true, &ew->up, err) < 0 ||
                s_matrix(ld, ARCH_W_EXPERT_DOWN, l, e, true, &ew->down, err) < 0)
                return -1;
        }
    }
    return 0;
}

/* The one line on the matrices --quantization left as they were. */
static void s_log_kept(const s_loader_t *ld)
{
    if (ld->n_kept == 0 || !ld->select->log)
        return;
    fprintf(ld->select->log, "%s%sweights: %d matri%s not quantized to %s: rows of %lld "
            "values (%s%s) are not whole blocks of 32; kept as %s\n",
            ld->select->name ? ld->select->name : "", ld->select->name ? ": " : "", ld->n_kept,
            ld->n_kept == 1 ? "x" : "ces", wformat_quant_name(ld->w->format.quant),
            (long long)ld->kept_cols, ld->kept_first, ld->n_kept > 1 ? ", ..." : "",
            ld->w->format.dtype == WFORMAT_DTYPE_AUTO
                ? "stored" : wformat_dtype_name(ld->w->format.dtype));
}

weights_t *weights_load(const char *dir, const weights_select_t *select, err_t *err)
{
    s_loader_t ld = {.select = select};
    weights_t *self = mem_calloc(1, sizeof *self);
    if (!self) {
        err_set(err, ENOMEM, "out of memory loading %s", dir);
        return NULL;
    }
    ld.w = self;
    self->format = select->format;
    if (config_load(&self->cfg, dir, err) < 0)
        goto fail;
    ld.blocks = s_blocks(&self->cfg);
    self->layers = mem_calloc((size_t)self->cfg.n_layers, sizeof *self->layers);
    self->store = wstore_new();
    if (!self->layers || !self->store) {
        err_set(err, ENOMEM, "out of memory loading %s", dir);
        goto fail;
    }
    for (int l = 0; l < self->cfg.n_layers; l++) {
        layer_weights_t *lw = &self->layers[l];
        lw->experts = mem_calloc((size_t)self->cfg.n_experts, sizeof(expert_weights_t));
        if (config_experts_stacked(&self->cfg))
            lw->expert_biases = mem_calloc((size_t)self->cfg.n_experts,
                                           sizeof *lw->expert_biases);
        if (!lw->experts || (config_experts_stacked(&self->cfg) && !lw->expert_biases)) {
            err_set(err, ENOMEM, "out of memory loading %s", dir);
            goto fail;
        }
    }
    self->st = safetensors_open(dir, err);
    if (!self->st)
        goto fail;
    if (select->dense && s_load_dense(&ld, err) < 0)
        goto fail;
    if (select->hosts && s_load_experts(&ld, select->hosts, select->hosts_ctx, err) < 0)
        goto fail;
    s_log_kept(&ld);
    wconvert_destroy(&ld.conv);
    return self;

fail:
    wconvert_destroy(&ld.conv);
    weights_destroy(&self);
    return NULL;
}

void weights_destroy(weights_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    weights_t *self = *self_p;
    int saved = errno;
    if (self->layers)
        for (int l = 0; l < self->cfg.n_layers; l++) {
            mem_free(self->layers[l].experts);
            mem_free(self->layers[l].expert_biases);
        }
    mem_free(self->layers);
    wstore_destroy(&self->store);
    safetensors_destroy(&self->st);
    mem_free(self);
    *self_p = NULL;
    errno = saved;
}

bool weights_hosts_all(void *ctx, int layer, int expert)
{
    (void)ctx, (void)layer, (void)expert;
    return true;
}

weights_t *weights_load_all(const char *dir, err_t *err)
{
    const weights_select_t all = {.dense = true, .hosts = weights_hosts_all,
                                  .resident = true};
    return weights_load(dir, &all, err);
}

bool weights_has_expert(const weights_t *self, int layer, int expert)
{
    if (layer < 0 || layer >= self->cfg.n_layers || expert < 0 ||
        expert >= self->cfg.n_experts)
        return false;
    return self->layers[layer].experts[expert].gate.data != NULL;
}

/* ---- every loaded weight ------------------------------------------------------ */

/* One loaded weight: a matrix t (a vector as a one-row F32 tensor); expert:
 * a routed expert's. */
typedef void (*s_each_fn)(void *ctx, const tensor_t *t, bool expert);

static void s_each_vector(const weights_t *self, arch_weight_t w, int l, const float *v,
                          s_each_fn fn, void *ctx)
{
    arch_tensor_t t;
    if (!v || arch_tensor(&self->cfg, w, l, 0, &t, NULL) < 0)
        return;
    int64_t n = 1;
    for (int d = 0; d < t.ndim; d++)
        n *= t.shape[d];
    const tensor_t vt = tensor_f32(v, 1, n);
    fn(ctx, &vt, false);
}

static void s_each_ffn(const expert_weights_t *ew, bool expert, s_each_fn fn, void *ctx)
{
    if (!ew->gate.data)
        return;
    fn(ctx, &ew->gate, expert);
    fn(ctx, &ew->up, expert);
    fn(ctx, &ew->down, expert);
}

/* Calls fn for every weight weights_load resolved. */
static void s_each(const weights_t *self, s_each_fn fn, void *ctx)
{
    if (self->has_dense) {
        fn(ctx, &self->embed, false);
        if (self->lm_head.data != self->embed.data)
            fn(ctx, &self->lm_head, false);
        s_each_vector(self, ARCH_W_FINAL_NORM, 0, self->final_norm, fn, ctx);
    }
    for (int l = 0; l < self->cfg.n_layers; l++) {
        const layer_weights_t *lw = &self->layers[l];
        for (int i = 0; i < S_N_LAYER_ROLES; i++) {
            const void *field = (const char *)lw + s_layer_roles[i].at;
            if (s_layer_roles[i].kind == S_VEC)
                s_each_vector(self, s_layer_roles[i].w, l, *(const float *const *)field, fn,
                              ctx);
            else if (((const tensor_t *)field)->data)
                fn(ctx, field, false);
        }
        for (int e = 0; e < self->cfg.n_experts; e++) {
            s_each_ffn(&lw->experts[e], true, fn, ctx);
            if (lw->expert_biases && lw->expert_biases[e].gate) {
                const expert_biases_t *eb = &lw->expert_biases[e];
                const tensor_t gu = tensor_f32(eb->gate, 1, 2 * (int64_t)self->cfg.intermediate_size);
                const tensor_t dn = tensor_f32(eb->down, 1, self->cfg.hidden_size);
                fn(ctx, &gu, true);
                fn(ctx, &dn, true);
            }
        }
    }
}

static void s_count(void *ctx, const tensor_t *t, bool expert)
{
    (void)expert;
    *(uint64_t *)ctx += tensor_bytes(t);
}

uint64_t weights_bytes(const weights_t *self)
{
    uint64_t total = 0;
    s_each(self, s_count, &total);
    return total;
}

/* Bytes of matrices per dtype, apart for the routed experts. */
typedef struct s_census {
    uint64_t dense[DTYPE_COUNT], experts[DTYPE_COUNT];
} s_census_t;

static void s_census(void *ctx, const tensor_t *t, bool expert)
{
    s_census_t *c = ctx;
    if (t->rows < 2)
        return; /* vectors are float32 always: not what a process chose */
    (expert ? c->experts : c->dense)[t->dtype] += tensor_bytes(t);
}

/* The dtypes of counts by bytes, largest first, "+"-joined, at *at in buf. */
static void s_dtypes(const uint64_t counts[DTYPE_COUNT], char *buf, size_t size, size_t *at)
{
    bool used[DTYPE_COUNT] = {0};
    for (int n = 0;; n++) {
        int best = -1;
        for (int d = 0; d < DTYPE_COUNT; d++)
            if (counts[d] && !used[d] && (best < 0 || counts[d] > counts[best]))
                best = d;
        if (best < 0)
            return;
        used[best] = true;
        if (*at < size)
            *at += (size_t)snprintf(buf + *at, size - *at, "%s%s", n ? "+" : "",
                                    dtype_info((dtype_t)best)->name);
    }
}

const char *weights_describe(const weights_t *self, char *buf, size_t size)
{
    s_census_t c = {0};
    s_each(self, s_census, &c);
    char dense[64] = "", experts[64] = "";
    size_t nd = 0, ne = 0;
    s_dtypes(c.dense, dense, sizeof dense, &nd);
    s_dtypes(c.experts, experts, sizeof experts, &ne);
    if (size == 0)
        return buf;
    if (!nd && !ne)
        snprintf(buf, size, "none");
    else if (!ne)
        snprintf(buf, size, "%s", dense);
    else if (!nd)
        snprintf(buf, size, "%s experts", experts);
    else if (strcmp(dense, experts) == 0)
        snprintf(buf, size, "%s", dense);
    else
        snprintf(buf, size, "%s (%s experts)", dense, experts);
    return buf;
}

/* ---- preload ---------------------------------------------------------------- */

typedef struct s_reader {
    progress_t progress;
    size_t page;
    unsigned char sum;   /* what was read, so that the reads are not optimized away */
} s_reader_t;

/* Reads one byte of every page of [data, data + n_bytes), asking the kernel
 * to read the span ahead first (a hint: its failure only costs speed). */
static void s_read_span(s_reader_t *r, const void *data, size_t n_bytes)
{
    if (!data || n_bytes == 0)
        return;
    const uintptr_t start = (uintptr_t)data & ~(uintptr_t)(r->page - 1);
    (void)madvise((void *)start, (uintptr_t)data + n_bytes - start, MADV_WILLNEED);
    const volatile unsigned char *bytes = (const volatile unsigned char *)data;
    const size_t chunk = (size_t)16 << 20;  /* a progress step */
    for (size_t at = 0; at < n_bytes; at += chunk) {
        const size_t end = n_bytes - at < chunk ? n_bytes : at + chunk;
        for (size_t i = at; i < end; i += r->page)
            r->sum ^= bytes[i];
        r->sum ^= bytes[end - 1];
        progress_add(&r->progress, end - at);
    }
}

/* Calls fn for the spans of memory t reads: its rows (a view's span, the
 * rows of the others in between included) and its scales. */
static void s_spans(const tensor_t *t, void (*fn)(void *ctx, const void *p, size_t n),
                    void *ctx)
{
    if (t->rows < 1 || !t->data)
        return;
    fn(ctx, t->data, (size_t)(t->rows - 1) * t->row_stride +
                         dtype_row_bytes(t->dtype, t->cols));
    if (t->scale_inv) {
        const int64_t grid_rows = (t->row0 + t->rows - 1) / t->block_n - t->row0 / t->block_n + 1;
        fn(ctx, t->scale_inv + (size_t)(t->row0 / t->block_n) * t->scale_stride,
           (size_t)grid_rows * t->scale_stride * sizeof(float));
    }
    if (t->e8m0)
        fn(ctx, t->e8m0, (size_t)(t->rows - 1) * t->scale_stride +
                             (size_t)(t->cols / dtype_info(t->dtype)->block));
}

static void s_span_count(void *ctx, const void *p, size_t n)
{
    (void)p;
    *(uint64_t *)ctx += n;
}

static void s_span_read(void *ctx, const void *p, size_t n)
{
    s_read_span(ctx, p, n);
}

static void s_count_spans(void *ctx, const tensor_t *t, bool expert)
{
    (void)expert;
    s_spans(t, s_span_count, ctx);
}

static void s_read(void *ctx, const tensor_t *t, bool expert)
{
    (void)expert;
    s_spans(t, s_span_read, ctx);
}

uint64_t weights_preload(const weights_t *self, FILE *log, const char *name)
{
    uint64_t total = 0;
    s_each(self, s_count_spans, &total);
    s_reader_t r = {.page = (size_t)sysconf(_SC_PAGESIZE)};
    progress_init(&r.progress, log, name, "reading weights", total);
    s_each(self, s_read, &r);
    progress_fini(&r.progress);
    return r.progress.done;
}
