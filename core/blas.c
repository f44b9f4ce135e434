/* blas: see blas.h. */
#include "core/blas.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Not declared in every cblas.h, but exported by every OpenBLAS since 0.2. */
char *openblas_get_corename(void);

static const char s_reexec_marker[] = "MOE_BLAS_REEXECED"; /* how many times, "1" or "2" */

/* OpenBLAS's kernel families without AVX2: what its detection falls back to
 * on a CPU it does not know (a newer Xeon under an older OpenBLAS). */
static const char *const s_generic_cores[] = {
    "Katmai",    "Coppermine", "Northwood",     "Prescott",  "Banias",
    "Atom",      "Core2",      "Penryn",        "Dunnington", "Nehalem",
    "Sandybridge", "Opteron",  "Opteron(SSE3)", "Barcelona", "Bobcat",
    "Bulldozer", "Piledriver", "Steamroller",   "Nano",      "Unknown",
};

const char *blas_core_upgrade(const char *core, bool avx512, bool avx2)
{
    if (!avx2 || !core)
        return NULL;
    for (size_t i = 0; i < sizeof s_generic_cores / sizeof *s_generic_cores; i++)
        if (strcmp(core, s_generic_cores[i]) == 0)
            return avx512 ? "SkylakeX" : "Haswell";
    return NULL;
}

/* What this CPU runs of the vector extensions the upgrade names need. */
static bool s_cpu_avx512(void)
{
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512cd");
}

static bool s_cpu_avx2(void)
{
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

void blas_ensure_native(char **argv)
{
    const char *wanted = getenv("MOE_OPENBLAS_CORETYPE");
    const char *forced = getenv("OPENBLAS_CORETYPE");
    const char *marker = getenv(s_reexec_marker);
    const int lives = marker ? atoi(marker) : 0;

    if (lives >= 2) { /* third life: never loop */
        unsetenv(s_reexec_marker);
        return;
    }
    if (wanted && *wanted) {
        if (forced && strcmp(forced, wanted) == 0) {
            unsetenv(s_reexec_marker);
            return;
        }
        setenv("OPENBLAS_CORETYPE", wanted, 1);
    } else if (forced && lives == 0) {
        unsetenv("OPENBLAS_CORETYPE");
    } else {
        const char *better = blas_core_upgrade(blas_core_name(), s_cpu_avx512(), s_cpu_avx2());
        if (!better) {
            unsetenv(s_reexec_marker);
            return;
        }
        fprintf(stderr, "openblas: it took this CPU for %s (generic SSE kernels); running "
                        "on %s instead\n", blas_core_name(), better);
        setenv("OPENBLAS_CORETYPE", better, 1);
    }
    setenv(s_reexec_marker, lives == 0 ? "1" : "2", 1);
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
