/* safetensors: see safetensors.h.
 *
 * The checkpoint is a set of files (one, or the shards of the index) and a
 * table of entries sorted by tensor name, found by binary search. A single
 * file is mapped and its header checked at open; a shard is mapped and checked
 * the first time one of its tensors is asked for, and its entries filled then.
 * An entry's converted float32 copies (whole tensor or one slice) are cached
 * on the entry and live as long as the safetensors_t.
 *
 * Invariants: files[i].map is NULL until that file's header has passed every
 * check; entries[i].loaded implies files[entries[i].file].map != NULL and
 * entries[i].t describes bytes inside that mapping.
 */
#include "model/safetensors.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "core/mem.h"
#include "core/path.h"
#include "model/safetensors_private.h"

/* The reference implementation refuses headers above 100 MB; so do we. */
#define S_MAX_HEADER ((uint64_t)100000000)

static const char S_SINGLE[] = "model.safetensors";
static const char S_INDEX[] = "model.safetensors.index.json";

/* One file of the checkpoint. */
typedef struct s_file {
    char *path;             /* dir/name (owned) */
    const uint8_t *map;     /* whole file, read-only; NULL until checked */
    size_t map_len;         /* bytes mapped */
    const uint8_t *data;    /* first byte after the header */
} s_file_t;

/* A float32 copy of a tensor or of one slice of it. */
typedef struct s_conv {
    struct s_conv *next;
    int64_t index;          /* -1: whole tensor; else slice along dim 0 */
    float *buf;             /* (elements of the view), mem_alloc_aligned */
} s_conv_t;

typedef struct s_entry {
    st_tensor_t t;          /* name into self->names; rest valid when loaded */
    size_t file;            /* index into self->files */
    bool loaded;            /* t describes the tensor's bytes */
    s_conv_t *convs;        /* float32 copies handed out so far */
} s_entry_t;

struct safetensors {
    char *dir;              /* as given to open (owned) */
    char *index_path;       /* dir/model.safetensors.index.json, or NULL */
    s_file_t *files;        /* (n_files) */
    size_t n_files;
    s_entry_t *entries;     /* (n_entries), sorted by name */
    size_t n_entries;
    char *names;            /* all entry names, NUL-separated (owned) */
};

/* One tensor of a parsed header, before it is committed to an entry. */
typedef struct s_parsed {
    const char *name;       /* borrowed from the JSON header */
    st_dtype_t dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t nbytes;
    uint64_t begin, end;    /* byte range relative to the data start */
} s_parsed_t;

size_t st_dtype_size(st_dtype_t dtype)
{
    if (dtype == ST_U8 || dtype == ST_F8_E4M3)
        return 1;
    switch (dtype) {
    case ST_F32: return 4;
    case ST_F16:
    case ST_BF16: return 2;
    }
    return 0;
}

const char *st_dtype_name(st_dtype_t dtype)
{
    if (dtype == ST_U8)
        return "U8";
    if (dtype == ST_F8_E4M3)
        return "F8_E4M3";
    if (dtype == ST_ANY)
        return "any";
    switch (dtype) {
    case ST_F32: return "F32";
    case ST_F16: return "F16";
    case ST_BF16: return "BF16";
    }
    return "invalid";
}

static int s_dtype_parse(const char *s, st_dtype_t *out)
{
    static const st_dtype_t all[] = {ST_F32, ST_F16, ST_BF16, ST_U8,
                                      ST_F8_E4M3};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(s, st_dtype_name(all[i])) == 0) {
            *out = all[i];
            return 0;
        }
    return -1;
}

/* "[a, b, c]" into buf. */
static const char *s_shape_str(char *buf, size_t size, int ndim,
                               const int64_t *shape)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i <= ndim && used < size; i++) {
        int n = i == ndim ? snprintf(buf + used, size - used, "]")
                          : snprintf(buf + used, size - used, "%s%lld",
                                     i ? ", " : "[", (long long)shape[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    if (ndim == 0)
        snprintf(buf, size, "[]");
    return buf;
}

/* ---- one file: map and check the header ---------------------------------- */

/* Maps path read-only. EPROTO when it cannot hold a header length. */
static int s_map(const char *path, const uint8_t **map, size_t *len, err_t *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(err, errno, "cannot open %s: %s", path, strerror(errno));
    int rc = -1;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        err_set(err, errno, "cannot stat %s: %s", path, strerror(errno));
        goto cleanup;
    }
    if (!S_ISREG(st.st_mode)) {
        err_set(err, EPROTO, "%s is not a regular file", path);
        goto cleanup;
    }
    if (st.st_size < 8) {
        err_set(err, EPROTO, "%s: file of %lld bytes is too short for a "
                "safetensors header", path, (long long)st.st_size);
        goto cleanup;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        err_set(err, errno == ENOMEM ? ENOMEM : errno, "cannot map %s: %s",
                path, strerror(errno));
        goto cleanup;
    }
    *map = p;
    *len = (size_t)st.st_size;
    rc = 0;
cleanup:;
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

static int s_cmp_parsed_offset(const void *a, const void *b)
{
    const s_parsed_t *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

/* Checks one header entry and fills *p. data_len: bytes after the header. */
static int s_parse_tensor(s_parsed_t *p, const char *name, const json_t *v,
                          uint64_t data_len, const char *path, err_t *err)
{
    memset(p, 0, sizeof *p);
    p->name = name;
    if (!json_is_object(v))
        return err_set(err, EPROTO, "%s: tensor '%s': header entry is not an "
                       "object", path, name);
    const json_t *dt = json_object_get(v, "dtype");
    if (!json_is_string(dt))
        return err_set(err, EPROTO, "%s: tensor '%s': missing or non-string "
                       "dtype", path, name);
    if (s_dtype_parse(json_string_value(dt), &p->dtype))
        return err_set(err, EPROTO,
                       "%s: tensor '%s': unsupported dtype '%.32s' "
                       "(supported: F32, F16, BF16, U8, F8_E4M3)",
                       path, name, json_string_value(dt));

    const json_t *sh = json_object_get(v, "shape");
    if (!json_is_array(sh))
        return err_set(err, EPROTO,
                       "%s: tensor '%s': missing or non-list shape", path,
                       name);
    if (json_array_size(sh) > ST_MAX_DIMS)
        return err_set(err, EPROTO,
                       "%s: tensor '%s': %zu dimensions, more than "
                       "%d",
                       path, name, json_array_size(sh), ST_MAX_DIMS);
    p->ndim = (int)json_array_size(sh);
    uint64_t count = 1;
    bool overflow = false;
    for (int i = 0; i < p->ndim; i++) {
        const json_t *d = json_array_get(sh, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return err_set(err, EPROTO,
                           "%s: tensor '%s': shape entry %d is not "
                           "a non-negative integer",
                           path, name, i);
        p->shape[i] = (int64_t)json_integer_value(d);
        overflow |=
            __builtin_mul_overflow(count, (uint64_t)p->shape[i], &count);
    }
    uint64_t nbytes = 0;
    overflow |= __builtin_mul_overflow(count, (uint64_t)st_dtype_size(p->dtype),
                                       &nbytes);
    if (overflow || nbytes > SIZE_MAX)
        return err_set(err, EPROTO, "%s: tensor '%s': shape is too large "
                       "(byte size overflows)", path, name);
    p->nbytes = (size_t)nbytes;

    const json_t *off = json_object_get(v, "data_offsets");
    if (!json_is_array(off) || json_array_size(off) != 2 ||
        !json_is_integer(json_array_get(off, 0)) ||
        !json_is_integer(json_array_get(off, 1)))
        return err_set(err, EPROTO, "%s: tensor '%s': data_offsets must be a "
                       "list of two integers", path, name);
    json_int_t b = json_integer_value(json_array_get(off, 0));
    json_int_t e = json_integer_value(json_array_get(off, 1));
    if (b < 0 || e < b)
        return err_set(err, EPROTO, "%s: tensor '%s': bad data_offsets [%lld, "
                       "%lld]", path, name, (long long)b, (long long)e);
    p->begin = (uint64_t)b;
    p->end = (uint64_t)e;
    if (p->end > data_len)
        return err_set(err, EPROTO,
                       "%s: tensor '%s': data_offsets [%llu, %llu] "
                       "run past the end of the data (%llu bytes)",
                       path, name, (unsigned long long)p->begin,
                       (unsigned long long)p->end,
                       (unsigned long long)data_len);
    if (p->end - p->begin != nbytes) {
        char s[160];
        return err_set(err, EPROTO, "%s: tensor '%s': data_offsets cover %llu "
                       "bytes but %s %s needs %llu", path, name,
                       (unsigned long long)(p->end - p->begin),
                       st_dtype_name(p->dtype),
                       s_shape_str(s, sizeof s, p->ndim, p->shape),
                       (unsigned long long)nbytes);
    }
    return 0;
}

/* Maps path and checks its whole header. On success the *_out arguments hold
 * the mapping, its data start, the JSON header and its n_parsed tensors
 * (caller frees root with json_decref and parsed with mem_free; parsed names
 * borrow from root). Nothing is left mapped on failure. */
static int s_load_file(const char *path, const uint8_t **map_out,
                       size_t *map_len_out, const uint8_t **data_out,
                       json_t **root_out, s_parsed_t **parsed_out,
                       size_t *n_parsed_out, err_t *err)
{
    const uint8_t *map = NULL;
    size_t map_len = 0;
    json_t *root = NULL;
    s_parsed_t *parsed = NULL;
    size_t n = 0;

    if (s_map(path, &map, &map_len, err))
        return -1;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | map[i];
    if (hlen > map_len - 8) {
        err_set(err, EPROTO, "%s: header length %llu exceeds the file (%zu "
                "bytes)", path, (unsigned long long)hlen, map_len);
        goto fail;
    }
    if (hlen > S_MAX_HEADER) {
        err_set(err, EPROTO, "%s: header length %llu exceeds the %llu-byte "
                "limit", path, (unsigned long long)hlen,
                (unsigned long long)S_MAX_HEADER);
        goto fail;
    }
    json_error_t jerr;
    root = json_loadb((const char *)map + 8, (size_t)hlen,
                      JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        err_set(err, EPROTO, "%s: header is not valid JSON (line %d column %d: "
                "%s)", path, jerr.line, jerr.column, jerr.text);
        goto fail;
    }
    if (!json_is_object(root)) {
        err_set(err, EPROTO, "%s: header is not a JSON object", path);
        goto fail;
    }
    uint64_t data_len = map_len - 8 - hlen;
    parsed = mem_calloc(json_object_size(root) + 1, sizeof *parsed);
    if (!parsed) {
        err_set(err, ENOMEM, "out of memory reading the header of %s", path);
        goto fail;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0)
            continue;
        if (s_parse_tensor(&parsed[n], key, v, data_len, path, err))
            goto fail;
        n++;
    }
    /* Overlap: after sorting by offset, each non-empty range must start at
     * or after the end of every non-empty range before it. */
    qsort(parsed, n, sizeof *parsed, s_cmp_parsed_offset);
    uint64_t max_end = 0;
    const char *max_name = NULL;
    for (size_t i = 0; i < n; i++) {
        if (parsed[i].begin == parsed[i].end)
            continue;
        if (max_name && parsed[i].begin < max_end) {
            err_set(err, EPROTO,
                    "%s: tensors '%s' and '%s' overlap (data_offsets "
                    "end %llu > begin %llu)",
                    path, max_name, parsed[i].name, (unsigned long long)max_end,
                    (unsigned long long)parsed[i].begin);
            goto fail;
        }
        max_end = parsed[i].end;
        max_name = parsed[i].name;
    }
    *map_out = map;
    *map_len_out = map_len;
    *data_out = map + 8 + hlen;
    *root_out = root;
    *parsed_out = parsed;
    *n_parsed_out = n;
    return 0;
fail:;
    int saved = errno;
    mem_free(parsed);
    json_decref(root);
    munmap((void *)map, map_len);
    errno = saved;
    return -1;
}

/* ---- the checkpoint ------------------------------------------------------ */

static int s_cmp_entry(const void *a, const void *b)
{
    return strcmp(((const s_entry_t *)a)->t.name,
                  ((const s_entry_t *)b)->t.name);
}

static int s_cmp_key_entry(const void *key, const void *e)
{
    return strcmp(key, ((const s_entry_t *)e)->t.name);
}

static s_entry_t *s_lookup(const safetensors_t *self, const char *name)
{
    if (self->n_entries == 0)
        return NULL;
    return bsearch(name, self->entries, self->n_entries, sizeof *self->entries,
                   s_cmp_key_entry);
}

static void s_fill(s_entry_t *e, const s_parsed_t *p, const s_file_t *f)
{
    e->t.file = f->path;
    e->t.dtype = p->dtype;
    e->t.ndim = p->ndim;
    memcpy(e->t.shape, p->shape, sizeof e->t.shape);
    e->t.nbytes = p->nbytes;
    e->t.data = f->data + p->begin;
    e->loaded = true;
}

/* Allocates n zeroed entries and a name pool of pool_bytes (+1). */
static int s_alloc_entries(safetensors_t *self, size_t n, size_t pool_bytes)
{
    self->entries = mem_calloc(n + 1, sizeof *self->entries);
    self->names = mem_alloc(pool_bytes + 1);
    if (!self->entries || !self->names)
        return -1;
    self->n_entries = n;
    return 0;
}

static int s_open_single(safetensors_t *self, const char *path, err_t *err)
{
    json_t *root = NULL;
    s_parsed_t *parsed = NULL;
    size_t n = 0;
    int rc = -1;

    self->files = mem_calloc(1, sizeof *self->files);
    if (!self->files || !(self->files[0].path = mem_strdup(path))) {
        err_set(err, ENOMEM, "out of memory opening %s", path);
        goto cleanup;
    }
    self->n_files = 1;
    s_file_t *f = &self->files[0];
    const uint8_t *map, *data;
    size_t map_len;
    if (s_load_file(path, &map, &map_len, &data, &root, &parsed, &n, err))
        goto cleanup;
    f->map = map;
    f->map_len = map_len;
    f->data = data;

    size_t pool = 0;
    for (size_t i = 0; i < n; i++)
        pool += strlen(parsed[i].name) + 1;
    if (s_alloc_entries(self, n, pool)) {
        err_set(err, ENOMEM, "out of memory opening %s", path);
        goto cleanup;
    }
    char *at = self->names;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(parsed[i].name) + 1;
        memcpy(at, parsed[i].name, len);
        self->entries[i].t.name = at;
        self->entries[i].file = 0;
        s_fill(&self->entries[i], &parsed[i], f);
        at += len;
    }
    qsort(self->entries, n, sizeof *self->entries, s_cmp_entry);
    rc = 0;
cleanup:;
    int saved = errno;
    mem_free(parsed);
    json_decref(root);
    errno = saved;
    return rc;
}

/* A shard name from the index must be a plain file name in dir. */
static bool s_plain_name(const char *s)
{
    return *s && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static int s_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int s_open_index(safetensors_t *self, const char *path, err_t *err)
{
    json_t *root = NULL;
    const char **shards = NULL;
    int rc = -1;

    json_error_t jerr;
    root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        err_set(err, EPROTO, "%s: not valid JSON (line %d column %d: %s)", path,
                jerr.line, jerr.column, jerr.text);
        goto cleanup;
    }
    const json_t *wm =
        json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(wm)) {
        err_set(err, EPROTO, "%s: missing or non-object \"weight_map\"", path);
        goto cleanup;
    }
    size_t n = json_object_size(wm), pool = 0, n_shards = 0;
    shards = mem_calloc(n + 1, sizeof *shards);
    if (!shards) {
        err_set(err, ENOMEM, "out of memory reading %s", path);
        goto cleanup;
    }
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)wm, key, v) {
        if (!json_is_string(v) || !s_plain_name(json_string_value(v))) {
            err_set(err, EPROTO, "%s: tensor '%s' maps to %s, not a file name "
                    "in the checkpoint directory", path, key,
                    json_is_string(v) ? json_string_value(v) : "a non-string");
            goto cleanup;
        }
        shards[n_shards++] = json_string_value(v);
        pool += strlen(key) + 1;
    }
    qsort(shards, n_shards, sizeof *shards, s_cmp_str);
    size_t n_unique = 0;
    for (size_t i = 0; i < n_shards; i++)
        if (n_unique == 0 || strcmp(shards[n_unique - 1], shards[i]) != 0)
            shards[n_unique++] = shards[i];

    self->files = mem_calloc(n_unique + 1, sizeof *self->files);
    if (!self->files) {
        err_set(err, ENOMEM, "out of memory reading %s", path);
        goto cleanup;
    }
    for (size_t i = 0; i < n_unique; i++) {
        if (!(self->files[i].path = path_join(self->dir, shards[i]))) {
            err_set(err, ENOMEM, "out of memory reading %s", path);
            goto cleanup;
        }
        self->n_files++;
    }
    if (s_alloc_entries(self, n, pool)) {
        err_set(err, ENOMEM, "out of memory reading %s", path);
        goto cleanup;
    }
    char *at = self->names;
    size_t i = 0;
    json_object_foreach((json_t *)wm, key, v) {
        size_t len = strlen(key) + 1;
        memcpy(at, key, len);
        self->entries[i].t.name = at;
        const char *shard = json_string_value(v);
        const char **hit = bsearch(&shard, shards, n_unique, sizeof *shards,
                                   s_cmp_str);
        self->entries[i].file = (size_t)(hit - shards);
        at += len;
        i++;
    }
    qsort(self->entries, n, sizeof *self->entries, s_cmp_entry);
    rc = 0;
cleanup:;
    int saved = errno;
    mem_free(shards);
    json_decref(root);
    errno = saved;
    return rc;
}

/* Maps shard fi, checks its header and fills the entries the index assigns
 * to it. No side effect on failure. */
static int s_open_shard(safetensors_t *self, size_t fi, err_t *err)
{
    s_file_t *f = &self->files[fi];
    json_t *root = NULL;
    s_parsed_t *parsed = NULL;
    size_t n = 0;
    const uint8_t *map, *data;
    size_t map_len;

    if (s_load_file(f->path, &map, &map_len, &data, &root, &parsed, &n, err))
        return -1;
    f->map = map;
    f->map_len = map_len;
    f->data = data;
    for (size_t i = 0; i < n; i++) {
        s_entry_t *e = s_lookup(self, parsed[i].name);
        if (e && e->file == fi)
            s_fill(e, &parsed[i], f);
    }
    mem_free(parsed);
    json_decref(root);
    return 0;
}

void safetensors_populate(const void *p, size_t nbytes)
{
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)p / page * page;
    uintptr_t hi = ((uintptr_t)p + nbytes + page - 1) / page * page;
    (void)madvise((void *)lo, hi - lo, MADV_POPULATE_READ); /* advice: may be refused */
}

safetensors_t *safetensors_open(const char *dir, err_t *err)
{
    safetensors_t *self = NULL;
    char *single = NULL;
    char *index = NULL;

    self = mem_calloc(1, sizeof *self);
    if (!self || !(self->dir = mem_strdup(dir)) ||
        !(single = path_join(dir, S_SINGLE)) || !(index = path_join(dir, S_INDEX))) {
        err_set(err, ENOMEM, "out of memory opening the checkpoint in %s", dir);
        goto fail;
    }
    /* As transformers does, a single file wins over an index. */
    struct stat st;
    if (stat(single, &st) == 0) {
        if (s_open_single(self, single, err))
            goto fail;
    } else if (errno != ENOENT) {
        err_set(err, errno, "cannot stat %s: %s", single, strerror(errno));
        goto fail;
    } else if (stat(index, &st) == 0) {
        self->index_path = index;
        index = NULL;
        if (s_open_index(self, self->index_path, err))
            goto fail;
    } else if (errno != ENOENT) {
        err_set(err, errno, "cannot stat %s: %s", index, strerror(errno));
        goto fail;
    } else {
        err_set(err, ENOENT, "no %s or %s in %s", S_SINGLE, S_INDEX, dir);
        goto fail;
    }
    mem_free(single);
    mem_free(index);
    return self;
fail:;
    int saved = errno;
    mem_free(single);
    mem_free(index);
    safetensors_destroy(&self);
    errno = saved;
    return NULL;
}

void safetensors_destroy(safetensors_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    safetensors_t *self = *self_p;
    for (size_t i = 0; i < self->n_entries; i++) {
        s_conv_t *c = self->entries[i].convs;
        while (c) {
            s_conv_t *next = c->next;
            mem_free(c->buf);
            mem_free(c);
            c = next;
        }
    }
    for (size_t i = 0; i < self->n_files; i++) {
        if (self->files[i].map)
            munmap((void *)self->files[i].map, self->files[i].map_len);
        mem_free(self->files[i].path);
    }
    mem_free(self->files);
    mem_free(self->entries);
    mem_free(self->names);
    mem_free(self->index_path);
    mem_free(self->dir);
    mem_free(self);
    *self_p = NULL;
}

size_t safetensors_count(const safetensors_t *self)
{
    return self ? self->n_entries : 0;
}

const char *safetensors_name(const safetensors_t *self, size_t i)
{
    assert(self && i < self->n_entries);
    return self->entries[i].t.name;
}

static s_entry_t *s_find(safetensors_t *self, const char *name, err_t *err)
{
    s_entry_t *e = s_lookup(self, name);
    if (!e) {
        if (self->index_path)
            err_set(err, ENOENT, "tensor '%s' not found in the checkpoint in %s "
                    "(%s does not list it)", name, self->dir, self->index_path);
        else
            err_set(err, ENOENT, "tensor '%s' not found in %s", name,
                    self->files[0].path);
        return NULL;
    }
    if (!self->files[e->file].map && s_open_shard(self, e->file, err)) {
        err_wrap(err, "loading tensor '%s' (listed in %s)", name,
                 self->index_path);
        return NULL;
    }
    if (!e->loaded) {
        err_set(err, EPROTO, "%s lists tensor '%s' in %s, which does not hold "
                "it", self->index_path, name, self->files[e->file].path);
        return NULL;
    }
    return e;
}

const st_tensor_t *safetensors_find(safetensors_t *self, const char *name,
                                    err_t *err)
{
    assert(self);
    assert(name);
    s_entry_t *e = s_find(self, name, err);
    return e ? &e->t : NULL;
}

/* Converts n elements of dtype at src into dst. */
static void s_convert(float *dst, const uint8_t *src, st_dtype_t dtype,
                      size_t n)
{
    switch (dtype) {
    case ST_F32:
        memcpy(dst, src, n * sizeof *dst);
        break;
    case ST_F16:
        for (size_t i = 0; i < n; i++)
            dst[i] = st_f16_to_f32(st_load_u16(src + 2 * i));
        break;
    case ST_BF16:
        for (size_t i = 0; i < n; i++)
            dst[i] = st_bf16_to_f32(st_load_u16(src + 2 * i));
        break;
    }
}

/* The view of e's tensor the caller expects (see safetensors_f32): checks
 * rank, shape and slice index; *src and *n get its first byte and element
 * count. */
static int s_view(const s_entry_t *e, int64_t index, int ndim,
                  const int64_t *want, const uint8_t **src, size_t *n,
                  err_t *err)
{
    const st_tensor_t *t = &e->t;
    int lead = index >= 0 ? 1 : 0; /* the stacking dimension, if slicing */
    bool ok = t->ndim == ndim + lead;
    for (int i = 0; ok && i < ndim; i++)
        ok = t->shape[lead + i] == want[i];
    if (!ok) {
        char got[160], exp[160];
        s_shape_str(got, sizeof got, t->ndim, t->shape);
        s_shape_str(exp, sizeof exp, ndim, want);
        return err_set(err, EINVAL, "tensor '%s' in %s has shape %s, expected "
                       "%s%s", t->name, t->file, got,
                       lead ? "(n, ...) with ... = " : "", exp);
    }
    if (lead && index >= t->shape[0])
        return err_set(err, EINVAL, "tensor '%s' in %s: slice %lld out of "
                       "range (dim 0 has %lld)", t->name, t->file,
                       (long long)index, (long long)t->shape[0]);
    size_t esize = st_dtype_size(t->dtype);
    size_t count = t->nbytes / esize; /* elements of the view */
    if (lead)
        count = t->shape[0] ? count / (size_t)t->shape[0] : 0;
    *src = (const uint8_t *)t->data + (lead ? (size_t)index * count * esize : 0);
    *n = count;
    return 0;
}

const float *safetensors_f32(safetensors_t *self, const char *name,
                             int64_t index, int ndim, const int64_t *want,
                             err_t *err)
{
    assert(self);
    assert(name);
    assert(ndim >= 0 && ndim <= ST_MAX_DIMS - (index >= 0));
    assert(want || ndim == 0);
    s_entry_t *e = s_find(self, name, err);
    if (!e)
        return NULL;
    const st_tensor_t *t = &e->t;
    if (t->dtype == ST_U8) {
        err_set(err, EINVAL, "tensor '%s' in %s is U8 (raw bytes, e.g. MXFP4), "
                "not a float tensor", name, t->file);
        return NULL;
    }
    if (t->dtype == ST_F8_E4M3) {
        err_set(err, EINVAL, "tensor '%s' in %s is F8_E4M3: its values mean "
                "nothing without their weight_scale_inv blocks, so it is read "
                "as stored, not as float32", name, t->file);
        return NULL;
    }
    const uint8_t *src;
    size_t n;
    if (s_view(e, index, ndim, want, &src, &n, err))
        return NULL;
    if (t->dtype == ST_F32 && (uintptr_t)src % _Alignof(float) == 0)
        return (const float *)src;

    int lead = index >= 0;
    int64_t key = lead ? index : -1;
    for (s_conv_t *c = e->convs; c; c = c->next) {
        if (c->index == key)
            return c->buf;
        if (c->index == -1 && lead) /* the whole tensor holds the slice */
            return c->buf + (size_t)index * n;
    }
    s_conv_t *c = mem_calloc(1, sizeof *c);
    float *buf = mem_alloc_aligned(n * sizeof *buf);
    if (!c || !buf) {
        mem_free(c);
        mem_free(buf);
        err_set(err, ENOMEM, "out of memory converting tensor '%s' in %s to "
                "float32 (%zu values)", name, t->file, n);
        return NULL;
    }
    s_convert(buf, src, t->dtype, n);
    c->index = key;
    c->buf = buf;
    c->next = e->convs;
    e->convs = c;
    return buf;
}

const void *safetensors_raw(safetensors_t *self, const char *name,
                            int64_t index, int ndim, const int64_t *want,
                            st_dtype_t dtype, size_t *nbytes_out,
                            st_dtype_t *dtype_out, err_t *err)
{
    assert(self);
    assert(name);
    assert(ndim >= 0 && ndim <= ST_MAX_DIMS - (index >= 0));
    assert(want || ndim == 0);
    assert(dtype == ST_ANY || st_dtype_size(dtype) != 0);
    s_entry_t *e = s_find(self, name, err);
    if (!e)
        return NULL;
    const st_tensor_t *t = &e->t;
    if (dtype != ST_ANY && t->dtype != dtype) {
        err_set(err, EINVAL, "tensor '%s' in %s is %s, expected %s", name,
                t->file, st_dtype_name(t->dtype), st_dtype_name(dtype));
        return NULL;
    }
    const uint8_t *src;
    size_t n;
    if (s_view(e, index, ndim, want, &src, &n, err))
        return NULL;
    if (nbytes_out)
        *nbytes_out = n * st_dtype_size(t->dtype);
    if (dtype_out)
        *dtype_out = t->dtype;
    return src;
}
