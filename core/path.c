/* path: see path.h. */
#include "core/path.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/mem.h"

char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + 1 + strlen(name) + 1;
    char *p = mem_alloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

int path_write_line_atomic(const char *path, const char *text, err_t *err)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return err_set(err, ENAMETOOLONG, "file name %s is too long", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return err_set(err, errno, "cannot write %s: %s", tmp, strerror(errno));
    int wrote = fprintf(f, "%s\n", text);
    int flushed = fflush(f) == 0 && fsync(fileno(f)) == 0;
    int saved = errno;
    if (fclose(f) != 0 || wrote < 0 || !flushed) {
        unlink(tmp);
        return err_set(err, saved ? saved : EIO, "cannot write %s: %s", tmp,
                       strerror(saved ? saved : EIO));
    }
    if (rename(tmp, path) < 0) {
        saved = errno;
        unlink(tmp);
        return err_set(err, saved, "cannot rename %s to %s: %s", tmp, path, strerror(saved));
    }
    return 0;
}
