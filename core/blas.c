/* blas: see blas.h. */
#include "core/blas.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Not declared in every cblas.h, but exported by every OpenBLAS since 0.2. */
char *openblas_get_corename(void);

static const char s_reexec_marker[] = "MOE_BLAS_REEXECED";

void blas_ensure_native(char **argv)
{
    const char *wanted = getenv("MOE_OPENBLAS_CORETYPE");
    const char *forced = getenv("OPENBLAS_CORETYPE");

    if (getenv(s_reexec_marker)) { /* second life: never loop */
        unsetenv(s_reexec_marker);
        return;
    }
    if (wanted && *wanted) {
        if (forced && strcmp(forced, wanted) == 0)
            return;
        setenv("OPENBLAS_CORETYPE", wanted, 1);
    } else if (forced) {
        unsetenv("OPENBLAS_CORETYPE");
    } else {
        return;
    }
    setenv(s_reexec_marker, "1", 1);
    execv("/proc/self/exe", argv);
    fprintf(stderr, "warning: could not re-execute to reset OPENBLAS_CORETYPE; "
                    "OpenBLAS runs on %s kernels\n", blas_core_name());
    unsetenv(s_reexec_marker);
}

const char *blas_core_name(void)
{
    const char *name = openblas_get_corename();
    return name ? name : "unknown";
}

/* The pool size blas_threads() reports; 0 until first set or read. Only the
 * main thread writes it, before any compute context exists (blas.h). */
static int s_threads;

void blas_set_threads(int n)
{
    if (s_threads == 0)
        s_threads = openblas_get_num_threads();
    if (n >= 1)
        s_threads = n;
    openblas_set_num_threads(1);
}

int blas_threads(void)
{
    if (s_threads == 0)
        blas_set_threads(0);
    return s_threads;
}

void blas_report(FILE *out, const char *program)
{
    fprintf(out, "%s: openblas %s kernels, %d threads (one pool; OpenBLAS runs on its threads)\n",
            program, blas_core_name(), blas_threads());
}

void blas_setup(const char *program, int threads)
{
    blas_set_threads(threads);
    blas_report(stderr, program);
}
