/* path: see path.h. */
#include "core/path.h"

#include <stdio.h>
#include <string.h>

#include "core/mem.h"

char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + 1 + strlen(name) + 1;
    char *p = mem_alloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}
