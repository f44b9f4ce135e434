/* compute: the context a kernel computes in, the thread pool its products
 * share and the code path (instruction set) they run.
 *
 * Its owner is whoever owns a computation: forward_t makes one in
 * forward_new() for itself and the engine modules it drives (experts, shared
 * MLPs, routing, latent attention), an expert server one for its expert set,
 * a test or a benchmark its own. Kernels borrow it per call (gemm(),
 * gemm_small(), attention()) or per object (mla_new()); nothing in kernels/
 * keeps a thread or a choice of its own.
 *
 * The code path is picked in compute_new() from what this CPU runs
 * (__builtin_cpu_supports), so one binary runs on any x86-64; tests and
 * benchmarks force another with compute_set_path(). The paths differ from one
 * another in rounding, so the results of one context are reproducible, and
 * the contexts of one process all pick the same path unless told otherwise.
 *
 * Kernels for other weight formats (issue #12: Q8_0, Q4_0, BF16, FP8, MXFP4)
 * take this same context: each picks its tile from compute_path() and cuts
 * its work into chunks for pool_run() on compute_pool(), so that every format
 * shares one pool and one path choice. Which kernel runs for a dtype is the
 * kernels' own table, not this module's.
 *
 * Threads: one caller at a time uses the pool; a concurrent caller computes
 * on its own thread (kernels/pool.h). A context is not to be used by two
 * threads while one of them changes its path.
 */
#ifndef MOE_KERNELS_COMPUTE_H
#define MOE_KERNELS_COMPUTE_H

#include <stdbool.h>

#include "core/err.h"
#include "kernels/pool.h"

/* The code paths; COMPUTE_PATH_AUTO means "the best this CPU runs". */
typedef enum compute_path {
    COMPUTE_PATH_AUTO = 0,
    COMPUTE_PATH_PORTABLE,  /* ISO C, any CPU */
    COMPUTE_PATH_AVX2,      /* AVX2 + FMA */
    COMPUTE_PATH_AVX512,    /* AVX-512F */
} compute_path_t;

typedef struct compute compute_t;

/* A context on up to n_threads threads (the caller's included; see
 * pool_new() for the clamping) and the best path this CPU runs. NULL with
 * errno and err (ENOMEM) on failure. Caller destroys. */
compute_t *compute_new(int n_threads, err_t *err);

/* Destroys the pool (joining its workers) and the context, sets *self_p to
 * NULL. Accepts NULL. Not while a kernel runs in it. */
void compute_destroy(compute_t **self_p);

/* Selects the code path of self's kernels (for tests and benchmarks);
 * COMPUTE_PATH_AUTO restores the CPU's best. 0, or -1 with ENOTSUP when this
 * CPU cannot run it (the path is then unchanged), EINVAL for an unknown one.
 * Not while a kernel runs in self. */
int compute_set_path(compute_t *self, compute_path_t path);

/* The path self's kernels run (never COMPUTE_PATH_AUTO). */
compute_path_t compute_path(const compute_t *self);

/* The pool of self (borrowed, lives as long as self). */
pool_t *compute_pool(const compute_t *self);

/* True when this CPU can run path (COMPUTE_PATH_AUTO: always). */
bool compute_path_runs(compute_path_t path);

/* "portable", "avx2", "avx512" or "auto" (static storage). */
const char *compute_path_name(compute_path_t path);

#endif /* MOE_KERNELS_COMPUTE_H */
