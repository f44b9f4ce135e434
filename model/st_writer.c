/* st_writer: see st_writer.h.
 *
 * The JSON header is built while tensors are declared (jansson also catches
 * duplicate names), since each tensor's data_offsets follow from the ones
 * before it. Half-precision data goes through a small staging buffer; F32
 * data is written straight from the caller's array (little-endian host).
 */
#include "model/st_writer.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "core/mem.h"
#include "model/safetensors_private.h"

enum {
    S_STAGE_VALUES = 1 << 15
}; /* half-precision values converted per write */

typedef struct s_decl {
    char *name;             /* owned */
    st_dtype_t dtype;
    uint64_t n_values;      /* product of the shape */
} s_decl_t;

typedef enum s_state {
    S_DECLARING,            /* st_writer_add() allowed */
    S_WRITING,              /* header written, data being appended */
    S_FINISHED,             /* closed, file kept */
    S_FAILED,               /* an I/O error happened; only destroy is useful */
} s_state_t;

struct st_writer {
    char *path;             /* owned */
    int fd;                 /* -1 once closed */
    bool removable;         /* a regular file we may unlink if unfinished */
    s_state_t state;
    json_t *header;         /* the JSON header under construction */
    s_decl_t *decls;        /* (n_decls) in declaration (= data) order */
    size_t n_decls, cap_decls;
    uint64_t data_bytes;    /* sum of declared byte sizes */
    size_t cur;             /* tensor now being written */
    uint64_t cur_done;      /* values of decls[cur] written so far */
    uint8_t *stage;         /* (S_STAGE_VALUES * 2) bytes, allocated at begin */
};

static int s_write_all(int fd, const void *buf, size_t n, const char *path,
                       err_t *err)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return err_set(err, errno, "cannot write %s: %s", path,
                           strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

st_writer_t *st_writer_new(const char *path, err_t *err)
{
    assert(path);
    st_writer_t *self = mem_calloc(1, sizeof *self);
    if (!self) {
        err_set(err, ENOMEM, "out of memory creating a writer for %s", path);
        return NULL;
    }
    self->fd = -1;
    self->path = mem_strdup(path);
    self->header = json_pack("{s:{s:s}}", "__metadata__", "format", "pt");
    if (!self->path || !self->header) {
        err_set(err, ENOMEM, "out of memory creating a writer for %s", path);
        goto fail;
    }
    self->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (self->fd < 0) {
        err_set(err, errno, "cannot create %s: %s", path, strerror(errno));
        goto fail;
    }
    struct stat st;
    self->removable = fstat(self->fd, &st) == 0 && S_ISREG(st.st_mode);
    return self;
fail:;
    int saved = errno;
    st_writer_destroy(&self);
    errno = saved;
    return NULL;
}

void st_writer_destroy(st_writer_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    st_writer_t *self = *self_p;
    if (self->fd >= 0) { /* not finished: drop the partial file */
        close(self->fd);
        if (self->removable)
            unlink(self->path);
    }
    for (size_t i = 0; i < self->n_decls; i++)
        mem_free(self->decls[i].name);
    mem_free(self->decls);
    mem_free(self->stage);
    json_decref(self->header);
    mem_free(self->path);
    mem_free(self);
    *self_p = NULL;
}

int st_writer_add(st_writer_t *self, const char *name, st_dtype_t dtype,
                  int ndim, const int64_t *shape, err_t *err)
{
    assert(self);
    assert(name);
    if (self->state != S_DECLARING)
        return err_set(err, EINVAL, "%s: tensor '%s' declared after the header "
                       "was written", self->path, name);
    if (st_dtype_size(dtype) == 0)
        return err_set(err, EINVAL, "%s: tensor '%s': invalid dtype %d",
                       self->path, name, (int)dtype);
    if (ndim < 0 || ndim > ST_MAX_DIMS || (ndim > 0 && !shape))
        return err_set(err, EINVAL, "%s: tensor '%s': %d dimensions (0..%d "
                       "allowed)", self->path, name, ndim, ST_MAX_DIMS);
    if (strcmp(name, "__metadata__") == 0 ||
        json_object_get(self->header, name))
        return err_set(err, EINVAL, "%s: tensor name '%s' is reserved or "
                       "already declared", self->path, name);
    uint64_t count = 1, nbytes = 0, end = 0;
    bool overflow = false;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return err_set(err, EINVAL, "%s: tensor '%s': negative dimension "
                           "%lld", self->path, name, (long long)shape[i]);
        overflow |= __builtin_mul_overflow(count, (uint64_t)shape[i], &count);
    }
    overflow |= __builtin_mul_overflow(count, st_dtype_size(dtype), &nbytes);
    overflow |= __builtin_add_overflow(self->data_bytes, nbytes, &end);
    if (overflow || end > (uint64_t)INT64_MAX)
        return err_set(err, EINVAL, "%s: tensor '%s': size overflows",
                       self->path, name);

    if (self->n_decls == self->cap_decls) {
        size_t cap = self->cap_decls ? 2 * self->cap_decls : 64;
        s_decl_t *d = mem_realloc(self->decls, cap * sizeof *d);
        if (!d)
            return err_set(err, ENOMEM, "out of memory declaring '%s'", name);
        self->decls = d;
        self->cap_decls = cap;
    }
    char *copy = mem_strdup(name);
    json_t *jshape = json_array();
    bool ok = copy && jshape;
    for (int i = 0; ok && i < ndim; i++)
        ok = json_array_append_new(jshape, json_integer(shape[i])) == 0;
    if (ok) {
        json_t *entry = json_pack("{s:s, s:O, s:[I, I]}", "dtype",
                                  st_dtype_name(dtype), "shape", jshape,
                                  "data_offsets", (json_int_t)self->data_bytes,
                                  (json_int_t)end);
        /* set_new takes entry, even when it fails */
        ok = entry && json_object_set_new(self->header, name, entry) == 0;
    }
    json_decref(jshape);
    if (!ok) {
        int code = copy && jshape ? EINVAL : ENOMEM;
        mem_free(copy);
        /* jansson refuses keys that are not valid UTF-8 */
        return err_set(err, code, "%s: cannot declare tensor "
                       "'%s' (name not valid UTF-8, or out of memory)",
                       self->path, name);
    }
    self->decls[self->n_decls++] = (s_decl_t){copy, dtype, count};
    self->data_bytes = end;
    return 0;
}

uint64_t st_writer_data_bytes(const st_writer_t *self)
{
    assert(self);
    return self->data_bytes;
}

/* Moves cur past tensors that are complete (including empty ones). */
static void s_skip_complete(st_writer_t *self)
{
    while (self->cur < self->n_decls &&
           self->cur_done == self->decls[self->cur].n_values) {
        self->cur++;
        self->cur_done = 0;
    }
}

int st_writer_begin(st_writer_t *self, err_t *err)
{
    assert(self);
    char *text = NULL;
    uint8_t *buf = NULL;
    int rc = -1;

    if (self->state != S_DECLARING)
        return err_set(err, EINVAL, "%s: header already written", self->path);
    self->stage = mem_alloc(2 * S_STAGE_VALUES);
    text = json_dumps(self->header, JSON_COMPACT);
    size_t len = text ? strlen(text) : 0;
    size_t padded = (len + 7) / 8 * 8;
    buf = mem_alloc(8 + padded);
    if (!self->stage || !text || !buf) {
        err_set(err, ENOMEM, "out of memory writing the header of %s",
                self->path);
        goto cleanup;
    }
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, text, len);
    memset(buf + 8 + len, ' ', padded - len);
    if (s_write_all(self->fd, buf, 8 + padded, self->path, err)) {
        self->state = S_FAILED;
        goto cleanup;
    }
    self->state = S_WRITING;
    self->cur = 0;
    self->cur_done = 0;
    s_skip_complete(self);
    rc = 0;
cleanup:;
    int saved = errno;
    mem_free(buf);
    free(text); /* json_dumps allocates with jansson's malloc */
    errno = saved;
    return rc;
}

int st_writer_write(st_writer_t *self, const float *values, size_t n,
                    err_t *err)
{
    assert(self);
    assert(values || n == 0);
    if (self->state != S_WRITING)
        return err_set(err, EINVAL, "%s: data written %s", self->path,
                       self->state == S_DECLARING ? "before the header"
                                                  : "after finish or an error");
    if (n == 0)
        return 0;
    if (self->cur >= self->n_decls)
        return err_set(err, EINVAL, "%s: %zu values written past the last "
                       "tensor", self->path, n);
    const s_decl_t *d = &self->decls[self->cur];
    if (n > d->n_values - self->cur_done)
        return err_set(err, EINVAL, "%s: tensor '%s': %zu values written but "
                       "only %llu remain", self->path, d->name, n,
                       (unsigned long long)(d->n_values - self->cur_done));
    if (d->dtype == ST_U8 || d->dtype == ST_F8_E4M3)
        return err_set(err, EINVAL, "%s: tensor '%s' is %s: its bytes are "
                       "written with st_writer_write_raw", self->path, d->name,
                       st_dtype_name(d->dtype));
    if (d->dtype == ST_F32) {
        if (s_write_all(self->fd, values, n * sizeof *values, self->path, err))
            goto fail;
    } else {
        for (size_t at = 0; at < n; at += S_STAGE_VALUES) {
            size_t m = n - at < S_STAGE_VALUES ? n - at : S_STAGE_VALUES;
            if (d->dtype == ST_F16)
                for (size_t i = 0; i < m; i++)
                    st_store_u16(self->stage + 2 * i,
                                 st_f32_to_f16(values[at + i]));
            else
                for (size_t i = 0; i < m; i++)
                    st_store_u16(self->stage + 2 * i,
                                 st_f32_to_bf16(values[at + i]));
            if (s_write_all(self->fd, self->stage, 2 * m, self->path, err))
                goto fail;
        }
    }
    self->cur_done += n;
    s_skip_complete(self);
    return 0;
fail:
    self->state = S_FAILED;
    return -1;
}

int st_writer_write_raw(st_writer_t *self, const void *bytes, size_t n,
                        err_t *err)
{
    assert(self);
    assert(bytes || n == 0);
    if (self->state != S_WRITING)
        return err_set(err, EINVAL, "%s: data written %s", self->path,
                       self->state == S_DECLARING ? "before the header"
                                                  : "after finish or an error");
    if (n == 0)
        return 0;
    if (self->cur >= self->n_decls)
        return err_set(err, EINVAL, "%s: %zu bytes written past the last "
                       "tensor", self->path, n);
    const s_decl_t *d = &self->decls[self->cur];
    size_t esize = st_dtype_size(d->dtype);
    if (n % esize != 0 || n / esize > d->n_values - self->cur_done)
        return err_set(err, EINVAL, "%s: tensor '%s': %zu bytes written but "
                       "%llu %s values remain", self->path, d->name, n,
                       (unsigned long long)(d->n_values - self->cur_done),
                       st_dtype_name(d->dtype));
    if (s_write_all(self->fd, bytes, n, self->path, err)) {
        self->state = S_FAILED;
        return -1;
    }
    self->cur_done += n / esize;
    s_skip_complete(self);
    return 0;
}

int st_writer_finish(st_writer_t *self, err_t *err)
{
    assert(self);
    if (self->state != S_WRITING)
        return err_set(err, EINVAL, "%s: finish %s", self->path,
                       self->state == S_DECLARING ? "before the header"
                                                  : "after finish or an error");
    if (self->cur < self->n_decls) {
        const s_decl_t *d = &self->decls[self->cur];
        return err_set(err, EINVAL, "%s: tensor '%s' incomplete: %llu of %llu "
                       "values written", self->path, d->name,
                       (unsigned long long)self->cur_done,
                       (unsigned long long)d->n_values);
    }
    int fd = self->fd;
    if (close(fd) != 0) {
        self->state = S_FAILED;
        err_set(err, errno, "cannot write %s: %s", self->path, strerror(errno));
        if (self->removable)
            unlink(self->path);
        self->fd = -1;
        return -1;
    }
    self->fd = -1;
    self->state = S_FINISHED;
    return 0;
}

int st_index_write(const char *path, uint64_t total_size, size_t n,
                   const char *const *tensors, const char *const *files,
                   err_t *err)
{
    assert(path);
    assert(n == 0 || (tensors && files));
    json_t *root = NULL;
    int rc = -1;

    if (total_size > (uint64_t)INT64_MAX)
        return err_set(err, EINVAL, "%s: total_size %llu too large", path,
                       (unsigned long long)total_size);
    json_t *map = json_object();
    root = json_pack("{s:{s:I}, s:o}", "metadata", "total_size",
                     (json_int_t)total_size, "weight_map", map);
    if (!root) {
        err_set(err, ENOMEM, "out of memory building %s", path);
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        if (json_object_get(map, tensors[i])) {
            err_set(err, EINVAL, "%s: tensor '%s' listed twice", path,
                    tensors[i]);
            goto cleanup;
        }
        if (json_object_set_new(map, tensors[i], json_string(files[i]))) {
            err_set(err, EINVAL, "%s: cannot add tensor '%s' (name not valid "
                    "UTF-8, or out of memory)", path, tensors[i]);
            goto cleanup;
        }
    }
    if (json_dump_file(root, path, JSON_INDENT(2) | JSON_SORT_KEYS) != 0) {
        int e = errno ? errno : EIO;
        unlink(path);
        err_set(err, e, "cannot write %s: %s", path, strerror(e));
        goto cleanup;
    }
    rc = 0;
cleanup:;
    int saved = errno;
    json_decref(root);
    errno = saved;
    return rc;
}
