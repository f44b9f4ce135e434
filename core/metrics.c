/* metrics: see metrics.h.
 *
 * Invariants: a family's children live in `children` (first-use order, what
 * renders) and are indexed by `slots`, an open-addressing table of indices
 * into `children` (+1; 0: empty) at most half full, keyed by a hash of the
 * label values. A child is one allocation: the struct, its histogram buckets
 * (non-cumulative counts, n_bounds + 1 with +Inf last) and its label values.
 * Everything is guarded by the registry's one mutex.
 */
#include "core/metrics.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

struct metric_child {
    metric_t *family;  /* owner */
    uint64_t hash;     /* of the label values */
    double value;      /* counter, gauge; histogram: sum of observations */
    uint64_t count;    /* histogram: observations */
    uint64_t *buckets; /* histogram: (n_bounds + 1) counts, non-cumulative */
    char **values;     /* (n_labels) label values, in this allocation */
};

struct metric {
    metrics_t *registry;          /* owner */
    metric_kind_t kind;
    char *name;                   /* owned */
    char *help;                   /* owned */
    int n_labels;
    char *labels[METRICS_MAX_LABELS]; /* owned label names */
    int n_bounds;
    double *bounds;               /* (n_bounds) histogram upper bounds, owned */
    metric_child_t **children;    /* (n_children), first-use order */
    size_t n_children, cap_children;
    uint32_t *slots;              /* (n_slots) index + 1 into children; 0 empty */
    size_t n_slots;               /* power of two, 0 before the first child */
};

struct metrics {
    pthread_mutex_t lock;         /* guards every family and child */
    metric_t **families;          /* (n_families), registration order */
    size_t n_families, cap_families;
};

/* ---- validation ------------------------------------------------------------ */

static bool s_name_ok(const char *s, bool colon)
{
    size_t n = strlen(s);
    if (n == 0 || n > METRICS_MAX_NAME)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                     (colon && c == ':');
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

/* Well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF),
 * no NUL inside by construction. */
static bool s_utf8_ok(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        int n;
        unsigned min;
        if (c < 0x80) {
            p++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 1, min = 0x80, c &= 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2, min = 0x800, c &= 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3, min = 0x10000, c &= 0x07;
        } else {
            return false;
        }
        for (int i = 1; i <= n; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return false;
            c = (c << 6) | (p[i] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return false;
        p += n + 1;
    }
    return true;
}

/* ---- registry -------------------------------------------------------------- */

metrics_t *metrics_new(void)
{
    metrics_t *self = mem_calloc(1, sizeof *self);
    if (!self)
        return NULL;
    if (pthread_mutex_init(&self->lock, NULL) != 0) {
        mem_free(self);
        errno = ENOMEM;
        return NULL;
    }
    return self;
}

static void s_family_free(metric_t *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n_children; i++)
        mem_free(f->children[i]);
    mem_free(f->children);
    mem_free(f->slots);
    for (int i = 0; i < f->n_labels; i++)
        mem_free(f->labels[i]);
    mem_free(f->bounds);
    mem_free(f->help);
    mem_free(f->name);
    mem_free(f);
}

void metrics_destroy(metrics_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    metrics_t *self = *self_p;
    for (size_t i = 0; i < self->n_families; i++)
        s_family_free(self->families[i]);
    mem_free(self->families);
    pthread_mutex_destroy(&self->lock);
    mem_free(self);
    *self_p = NULL;
}

/* ---- children (lock held) ------------------------------------------------ */

/* FNV-1a over the values, each ended by a 0xFF byte (never in UTF-8). */
static uint64_t s_hash(const metric_t *f, const char *const *values)
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < f->n_labels; i++) {
        for (const unsigned char *p = (const unsigned char *)values[i]; *p; p++)
            h = (h ^ *p) * 1099511628211ull;
        h = (h ^ 0xFF) * 1099511628211ull;
    }
    return h;
}

static bool s_same(const metric_t *f, const metric_child_t *c, const char *const *values)
{
    for (int i = 0; i < f->n_labels; i++)
        if (strcmp(c->values[i], values[i]) != 0)
            return false;
    return true;
}

static metric_child_t *s_lookup(const metric_t *f, const char *const *values, uint64_t h)
{
    if (f->n_slots == 0)
        return NULL;
    size_t mask = f->n_slots - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        uint32_t s = f->slots[i];
        if (s == 0)
            return NULL;
        metric_child_t *c = f->children[s - 1];
        if (c->hash == h && s_same(f, c, values))
            return c;
    }
}

static void s_slot_put(uint32_t *slots, size_t n_slots, uint64_t h, uint32_t index1)
{
    size_t mask = n_slots - 1;
    size_t i = h & mask;
    while (slots[i] != 0)
        i = (i + 1) & mask;
    slots[i] = index1;
}

/* Room for one more child: the list and (at most half full) the table. */
static int s_reserve(metric_t *f)
{
    if (f->n_children == f->cap_children) {
        size_t cap = f->cap_children ? 2 * f->cap_children : 4;
        metric_child_t **c = mem_realloc(f->children, cap * sizeof *c);
        if (!c)
            return -1;
        f->children = c;
        f->cap_children = cap;
    }
    if (2 * (f->n_children + 1) > f->n_slots) {
        size_t n = f->n_slots ? 2 * f->n_slots : 8;
        uint32_t *slots = mem_calloc(n, sizeof *slots);
        if (!slots)
            return -1;
        for (size_t i = 0; i < f->n_children; i++)
            s_slot_put(slots, n, f->children[i]->hash, (uint32_t)(i + 1));
        mem_free(f->slots);
        f->slots = slots;
        f->n_slots = n;
    }
    return 0;
}

static metric_child_t *s_child_locked(metric_t *f, const char *const *values)
{
    for (int i = 0; i < f->n_labels; i++) {
        if (!values || !values[i] || strlen(values[i]) > METRICS_MAX_VALUE ||
            !s_utf8_ok(values[i])) {
            errno = EINVAL;
            return NULL;
        }
    }
    uint64_t h = s_hash(f, values);
    metric_child_t *c = s_lookup(f, values, h);
    if (c)
        return c;
    if (f->n_children >= METRICS_MAX_CHILDREN) {
        errno = ENOSPC;
        return NULL;
    }
    if (s_reserve(f) != 0)
        return NULL;
    size_t n_buckets = f->kind == METRIC_HISTOGRAM ? (size_t)f->n_bounds + 1 : 0;
    size_t size = sizeof *c + n_buckets * sizeof(uint64_t) + f->n_labels * sizeof(char *);
    for (int i = 0; i < f->n_labels; i++)
        size += strlen(values[i]) + 1;
    c = mem_calloc(1, size);
    if (!c)
        return NULL;
    c->family = f;
    c->hash = h;
    c->buckets = (uint64_t *)(c + 1);
    c->values = (char **)(c->buckets + n_buckets);
    char *text = (char *)(c->values + f->n_labels);
    for (int i = 0; i < f->n_labels; i++) {
        size_t n = strlen(values[i]) + 1;
        memcpy(text, values[i], n);
        c->values[i] = text;
        text += n;
    }
    f->children[f->n_children++] = c;
    s_slot_put(f->slots, f->n_slots, h, (uint32_t)f->n_children);
    return c;
}

metric_child_t *metric_child(metric_t *family, const char *const *values)
{
    assert(family);
    pthread_mutex_lock(&family->registry->lock);
    metric_child_t *c = s_child_locked(family, values);
    int saved = errno;
    pthread_mutex_unlock(&family->registry->lock);
    errno = saved;
    return c;
}

/* ---- families -------------------------------------------------------------- */

static metric_t *s_family_locked(metrics_t *self, metric_kind_t kind, const char *name,
                                 const char *help, const char *const *labels,
                                 const double *bounds, int n_bounds, err_t *err)
{
    metric_t *f = NULL;
    if (!name || !s_name_ok(name, true)) {
        err_set(err, EINVAL, "metric name \"%s\" is not [a-zA-Z_:][a-zA-Z0-9_:]* of at most %d bytes",
                name ? name : "(null)", METRICS_MAX_NAME);
        return NULL;
    }
    if (!help || !s_utf8_ok(help)) {
        err_set(err, EINVAL, "metric %s: help text missing or not UTF-8", name);
        return NULL;
    }
    for (size_t i = 0; i < self->n_families; i++) {
        if (strcmp(self->families[i]->name, name) == 0) {
            err_set(err, EEXIST, "metric %s is registered already", name);
            return NULL;
        }
    }
    int n_labels = 0;
    for (; labels && labels[n_labels]; n_labels++) {
        const char *l = labels[n_labels];
        if (n_labels == METRICS_MAX_LABELS) {
            err_set(err, E2BIG, "metric %s: more than %d labels", name, METRICS_MAX_LABELS);
            return NULL;
        }
        if (!s_name_ok(l, false) || strncmp(l, "__", 2) == 0 ||
            (kind == METRIC_HISTOGRAM && strcmp(l, "le") == 0)) {
            err_set(err, EINVAL, "metric %s: label name \"%s\" is not [a-zA-Z_][a-zA-Z0-9_]*, "
                    "begins with __ or is a histogram's \"le\"", name, l);
            return NULL;
        }
        for (int j = 0; j < n_labels; j++) {
            if (strcmp(labels[j], l) == 0) {
                err_set(err, EINVAL, "metric %s: label \"%s\" given twice", name, l);
                return NULL;
            }
        }
    }
    if (n_bounds < 0 || n_bounds > METRICS_MAX_BOUNDS) {
        err_set(err, n_bounds < 0 ? EINVAL : E2BIG, "metric %s: %d bounds (at most %d)", name,
                n_bounds, METRICS_MAX_BOUNDS);
        return NULL;
    }
    for (int i = 0; i < n_bounds; i++) {
        if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1]))) {
            err_set(err, EINVAL, "metric %s: bound %d (%g) is not finite and above the one before",
                    name, i, bounds[i]);
            return NULL;
        }
    }
    if (self->n_families == self->cap_families) {
        size_t cap = self->cap_families ? 2 * self->cap_families : 16;
        metric_t **fs = mem_realloc(self->families, cap * sizeof *fs);
        if (!fs)
            goto fail;
        self->families = fs;
        self->cap_families = cap;
    }
    f = mem_calloc(1, sizeof *f);
    if (!f)
        goto fail;
    f->registry = self;
    f->kind = kind;
    f->name = mem_strdup(name);
    f->help = mem_strdup(help);
    if (!f->name || !f->help)
        goto fail;
    for (int i = 0; i < n_labels; i++) {
        f->labels[i] = mem_strdup(labels[i]);
        if (!f->labels[i])
            goto fail;
        f->n_labels = i + 1;
    }
    if (n_bounds > 0) {
        f->bounds = mem_alloc((size_t)n_bounds * sizeof *f->bounds);
        if (!f->bounds)
            goto fail;
        memcpy(f->bounds, bounds, (size_t)n_bounds * sizeof *f->bounds);
    }
    f->n_bounds = n_bounds;
    /* Without labels the one child exists from the start, so it renders 0. */
    if (n_labels == 0 && !s_child_locked(f, NULL))
        goto fail;
    self->families[self->n_families++] = f;
    return f;

fail:;
    int saved = errno;
    s_family_free(f);
    errno = saved;
    err_set(err, errno, "metric %s: out of memory", name);
    return NULL;
}

static metric_t *s_register(metrics_t *self, metric_kind_t kind, const char *name,
                            const char *help, const char *const *labels, const double *bounds,
                            int n_bounds, err_t *err)
{
    assert(self);
    pthread_mutex_lock(&self->lock);
    metric_t *f = s_family_locked(self, kind, name, help, labels, bounds, n_bounds, err);
    int saved = errno;
    pthread_mutex_unlock(&self->lock);
    errno = saved;
    return f;
}

metric_t *metrics_counter(metrics_t *self, const char *name, const char *help,
                          const char *const *labels, err_t *err)
{
    return s_register(self, METRIC_COUNTER, name, help, labels, NULL, 0, err);
}

metric_t *metrics_gauge(metrics_t *self, const char *name, const char *help,
                        const char *const *labels, err_t *err)
{
    return s_register(self, METRIC_GAUGE, name, help, labels, NULL, 0, err);
}

metric_t *metrics_histogram(metrics_t *self, const char *name, const char *help,
                            const char *const *labels, const double *bounds, int n_bounds,
                            err_t *err)
{
    assert(bounds || n_bounds == 0);
    return s_register(self, METRIC_HISTOGRAM, name, help, labels, bounds, n_bounds, err);
}

metric_t *metrics_find(metrics_t *self, const char *name)
{
    assert(self);
    assert(name);
    metric_t *found = NULL;
    pthread_mutex_lock(&self->lock);
    for (size_t i = 0; i < self->n_families && !found; i++)
        if (strcmp(self->families[i]->name, name) == 0)
            found = self->families[i];
    pthread_mutex_unlock(&self->lock);
    if (!found)
        errno = ENOENT;
    return found;
}

const char *metric_name(const metric_t *family)
{
    assert(family);
    return family->name;
}

metric_kind_t metric_kind(const metric_t *family)
{
    assert(family);
    return family->kind;
}

int metric_n_labels(const metric_t *family)
{
    assert(family);
    return family->n_labels;
}

int metrics_buckets_exponential(double start, double factor, int n, double *out)
{
    assert(start > 0);
    assert(factor > 1);
    assert(n >= 1 && n <= METRICS_MAX_BOUNDS);
    assert(out);
    double b = start;
    for (int i = 0; i < n; i++, b *= factor)
        out[i] = b;
    return n;
}

/* ---- updates --------------------------------------------------------------- */

static pthread_mutex_t *s_lock_of(const metric_child_t *c)
{
    return &c->family->registry->lock;
}

void metric_child_add(metric_child_t *child, double v)
{
    assert(child);
    assert(child->family->kind != METRIC_HISTOGRAM);
    if (child->family->kind == METRIC_COUNTER && !(v >= 0))
        return; /* a counter never goes down; NaN fails v >= 0 too */
    pthread_mutex_lock(s_lock_of(child));
    child->value += v;
    pthread_mutex_unlock(s_lock_of(child));
}

void metric_child_set(metric_child_t *child, double v)
{
    assert(child);
    assert(child->family->kind == METRIC_GAUGE);
    pthread_mutex_lock(s_lock_of(child));
    child->value = v;
    pthread_mutex_unlock(s_lock_of(child));
}

void metric_child_observe(metric_child_t *child, double v)
{
    assert(child);
    assert(child->family->kind == METRIC_HISTOGRAM);
    if (isnan(v))
        return;
    const metric_t *f = child->family;
    int i = 0;
    while (i < f->n_bounds && v > f->bounds[i]) /* le: v <= bound counts */
        i++;
    pthread_mutex_lock(s_lock_of(child));
    child->buckets[i]++;
    child->count++;
    child->value += v;
    pthread_mutex_unlock(s_lock_of(child));
}

double metric_child_value(const metric_child_t *child)
{
    assert(child);
    pthread_mutex_lock(s_lock_of(child));
    double v = child->value;
    pthread_mutex_unlock(s_lock_of(child));
    return v;
}

uint64_t metric_child_count(const metric_child_t *child)
{
    assert(child);
    pthread_mutex_lock(s_lock_of(child));
    uint64_t n = child->count;
    pthread_mutex_unlock(s_lock_of(child));
    return n;
}

double metric_child_sum(const metric_child_t *child)
{
    return metric_child_value(child);
}

uint64_t metric_child_bucket(const metric_child_t *child, int i)
{
    assert(child);
    assert(child->family->kind == METRIC_HISTOGRAM);
    assert(i >= 0 && i <= child->family->n_bounds);
    uint64_t n = 0;
    pthread_mutex_lock(s_lock_of(child));
    for (int j = 0; j <= i; j++)
        n += child->buckets[j];
    pthread_mutex_unlock(s_lock_of(child));
    return n;
}

int metrics_add(metric_t *family, const char *const *values, double v)
{
    metric_child_t *c = metric_child(family, values);
    if (!c)
        return -1;
    metric_child_add(c, v);
    return 0;
}

int metrics_set(metric_t *family, const char *const *values, double v)
{
    metric_child_t *c = metric_child(family, values);
    if (!c)
        return -1;
    metric_child_set(c, v);
    return 0;
}

int metrics_observe(metric_t *family, const char *const *values, double v)
{
    metric_child_t *c = metric_child(family, values);
    if (!c)
        return -1;
    metric_child_observe(c, v);
    return 0;
}

/* ---- text ------------------------------------------------------------------ */

typedef struct s_buf {
    char *data;
    size_t len, cap;
    bool failed; /* an allocation failed: the rest is dropped */
} s_buf_t;

static void s_put(s_buf_t *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = mem_realloc(b->data, cap);
        if (!d) {
            b->failed = true;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void s_puts(s_buf_t *b, const char *s)
{
    s_put(b, s, strlen(s));
}

/* s escaped: backslash and newline always, the double quote in label values. */
static void s_put_escaped(s_buf_t *b, const char *s, bool quote)
{
    const char *run = s;
    for (; *s; s++) {
        const char *rep = *s == '\\' ? "\\\\" : *s == '\n' ? "\\n"
                        : (quote && *s == '"') ? "\\\"" : NULL;
        if (rep) {
            s_put(b, run, (size_t)(s - run));
            s_puts(b, rep);
            run = s + 1;
        }
    }
    s_put(b, run, (size_t)(s - run));
}

/* The shortest decimal form that reads back as v, or +Inf, -Inf, NaN. */
static void s_format(char *out, size_t size, double v)
{
    if (isnan(v)) {
        snprintf(out, size, "NaN");
    } else if (isinf(v)) {
        snprintf(out, size, v > 0 ? "+Inf" : "-Inf");
    } else {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(out, size, "%.*g", prec, v);
            if (strtod(out, NULL) == v)
                return;
        }
    }
}

static void s_put_double(s_buf_t *b, double v)
{
    char t[40];
    s_format(t, sizeof t, v);
    s_puts(b, t);
}

static void s_put_u64(s_buf_t *b, uint64_t v)
{
    char t[24];
    snprintf(t, sizeof t, "%llu", (unsigned long long)v);
    s_puts(b, t);
}

/* {l1="v1",...[,le="bound"]} or nothing. */
static void s_put_labels(s_buf_t *b, const metric_t *f, const metric_child_t *c, const char *le)
{
    if (f->n_labels == 0 && !le)
        return;
    s_puts(b, "{");
    for (int i = 0; i < f->n_labels; i++) {
        if (i > 0)
            s_puts(b, ",");
        s_puts(b, f->labels[i]);
        s_puts(b, "=\"");
        s_put_escaped(b, c->values[i], true);
        s_puts(b, "\"");
    }
    if (le) {
        if (f->n_labels > 0)
            s_puts(b, ",");
        s_puts(b, "le=\"");
        s_puts(b, le);
        s_puts(b, "\"");
    }
    s_puts(b, "}");
}

static const char *s_kind_name(metric_kind_t kind)
{
    return kind == METRIC_COUNTER ? "counter" : kind == METRIC_GAUGE ? "gauge" : "histogram";
}

static void s_render_family(s_buf_t *b, const metric_t *f)
{
    s_puts(b, "# HELP ");
    s_puts(b, f->name);
    s_puts(b, " ");
    s_put_escaped(b, f->help, false);
    s_puts(b, "\n# TYPE ");
    s_puts(b, f->name);
    s_puts(b, " ");
    s_puts(b, s_kind_name(f->kind));
    s_puts(b, "\n");
    for (size_t k = 0; k < f->n_children; k++) {
        const metric_child_t *c = f->children[k];
        if (f->kind != METRIC_HISTOGRAM) {
            s_puts(b, f->name);
            s_put_labels(b, f, c, NULL);
            s_puts(b, " ");
            s_put_double(b, c->value);
            s_puts(b, "\n");
            continue;
        }
        uint64_t cum = 0;
        for (int i = 0; i <= f->n_bounds; i++) {
            char le[40];
            if (i < f->n_bounds)
                s_format(le, sizeof le, f->bounds[i]);
            else
                snprintf(le, sizeof le, "+Inf");
            cum += c->buckets[i];
            s_puts(b, f->name);
            s_puts(b, "_bucket");
            s_put_labels(b, f, c, le);
            s_puts(b, " ");
            s_put_u64(b, cum);
            s_puts(b, "\n");
        }
        s_puts(b, f->name);
        s_puts(b, "_sum");
        s_put_labels(b, f, c, NULL);
        s_puts(b, " ");
        s_put_double(b, c->value);
        s_puts(b, "\n");
        s_puts(b, f->name);
        s_puts(b, "_count");
        s_put_labels(b, f, c, NULL);
        s_puts(b, " ");
        s_put_u64(b, c->count);
        s_puts(b, "\n");
    }
}

int metrics_render_text(const metrics_t *self, char **out, size_t *len)
{
    assert(self);
    assert(out);
    assert(len);
    metrics_t *m = (metrics_t *)self; /* the lock only */
    s_buf_t b = {0};
    pthread_mutex_lock(&m->lock);
    s_put(&b, "", 0); /* an empty registry renders "" */
    for (size_t i = 0; i < self->n_families; i++)
        s_render_family(&b, self->families[i]);
    pthread_mutex_unlock(&m->lock);
    if (b.failed) {
        mem_free(b.data);
        errno = ENOMEM;
        return -1;
    }
    *out = b.data;
    *len = b.len;
    return 0;
}

/* ---- JSON ------------------------------------------------------------------ */

/* A number, or null when it is not finite (JSON has no infinities). */
static json_t *s_json_number(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

/* json_object_set_new / json_array_append_new that remember a failure. */
static void s_jset(json_t *o, const char *k, json_t *v, bool *ok)
{
    if (!o) {
        json_decref(v);
        *ok = false;
    } else if (!v || json_object_set_new(o, k, v) != 0) { /* set_new frees v on failure */
        *ok = false;
    }
}

static void s_jappend(json_t *a, json_t *v, bool *ok)
{
    if (!a) {
        json_decref(v);
        *ok = false;
    } else if (!v || json_array_append_new(a, v) != 0) {
        *ok = false;
    }
}

static json_t *s_json_child(const metric_t *f, const metric_child_t *c, bool *ok)
{
    json_t *s = json_object();
    json_t *labels = json_object();
    for (int i = 0; i < f->n_labels; i++)
        s_jset(labels, f->labels[i], json_string(c->values[i]), ok);
    s_jset(s, "labels", labels, ok);
    if (f->kind != METRIC_HISTOGRAM) {
        s_jset(s, "value", s_json_number(c->value), ok);
        return s;
    }
    s_jset(s, "count", json_integer((json_int_t)c->count), ok);
    s_jset(s, "sum", s_json_number(c->value), ok);
    json_t *buckets = json_array();
    uint64_t cum = 0;
    for (int i = 0; i <= f->n_bounds; i++) {
        cum += c->buckets[i];
        s_jappend(buckets, json_integer((json_int_t)cum), ok);
    }
    s_jset(s, "buckets", buckets, ok);
    return s;
}

static json_t *s_json_family(const metric_t *f, bool *ok)
{
    json_t *o = json_object();
    s_jset(o, "type", json_string(s_kind_name(f->kind)), ok);
    s_jset(o, "help", json_string(f->help), ok);
    json_t *labels = json_array();
    for (int i = 0; i < f->n_labels; i++)
        s_jappend(labels, json_string(f->labels[i]), ok);
    s_jset(o, "labels", labels, ok);
    if (f->kind == METRIC_HISTOGRAM) {
        json_t *bounds = json_array();
        for (int i = 0; i < f->n_bounds; i++)
            s_jappend(bounds, json_real(f->bounds[i]), ok);
        s_jset(o, "bounds", bounds, ok);
    }
    json_t *samples = json_array();
    for (size_t k = 0; k < f->n_children && *ok; k++)
        s_jappend(samples, s_json_child(f, f->children[k], ok), ok);
    s_jset(o, "samples", samples, ok);
    return o;
}

json_t *metrics_to_json(const metrics_t *self)
{
    assert(self);
    metrics_t *m = (metrics_t *)self; /* the lock only */
    bool ok = true;
    json_t *root = json_object();
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < self->n_families && ok; i++)
        s_jset(root, self->families[i]->name, s_json_family(self->families[i], &ok), &ok);
    pthread_mutex_unlock(&m->lock);
    if (!ok || !root) {
        json_decref(root);
        errno = ENOMEM;
        return NULL;
    }
    return root;
}
