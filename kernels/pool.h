/* pool: a few worker threads that help one caller at a time run the chunks
 * of a job.
 *
 * A job is a function and n_chunks chunk numbers; the caller and the workers
 * claim chunks one at a time until none is left, so the caller never waits
 * for a worker the scheduler has not run yet (the cluster's processes share
 * the cores of a machine): it computes whatever no worker has taken and then
 * waits only for chunks a worker is already computing. Which thread computes
 * which chunk is not fixed, so a kernel that must give the same bits every
 * time (gemm_small's batch invariance) computes each chunk the same way
 * whoever runs it.
 *
 * Workers start on the first job that wants them (an idle process that never
 * runs a large product starts none), block every signal (the process's
 * handlers belong to its main thread), spin for about 200 us after a job (the
 * products of a layer follow each other within microseconds) and then sleep
 * on a condition variable, so an idle process leaves the cores to busy ones.
 *
 * Ownership: the owner of a computation (forward_t, an expert server, a test)
 * makes one pool, through its compute context (kernels/compute.h), and
 * destroys it when no job is running. One caller at a time uses the workers;
 * a caller that finds them busy runs its whole job on its own thread. A pool
 * is not to be used in a child forked after its workers started.
 */
#ifndef MOE_KERNELS_POOL_H
#define MOE_KERNELS_POOL_H

#include "core/err.h"

enum {
    POOL_MAX_THREADS = 16,     /* threads of one pool, the caller included */
    POOL_MAX_CHUNKS = 0xffff,  /* chunks of one job */
};

typedef struct pool pool_t;

/* Computes chunk `chunk` of a job; arg is the one given to pool_run(). */
typedef void pool_chunk_fn(void *arg, int chunk);

/* A pool in which jobs run on up to n_threads threads, the caller's included
 * (n_threads is clamped to 1 .. POOL_MAX_THREADS; 1 runs every job on the
 * caller). No thread starts here. NULL with errno and err (ENOMEM) on failure.
 * Caller destroys. */
pool_t *pool_new(int n_threads, err_t *err);

/* Stops and joins the workers, frees the pool, sets *self_p to NULL. Accepts
 * NULL. Not while pool_run() runs on another thread. */
void pool_destroy(pool_t **self_p);

/* The n_threads of pool_new() after clamping. */
int pool_threads(const pool_t *self);

/* Runs fn(arg, t) once for every t in [0, n_chunks), spread over the caller
 * and the pool's workers, and returns when all are done. The caller computes
 * chunks itself; with n_chunks < 2, a one-thread pool, or the workers busy
 * with another caller's job, it computes all of them, in order. A worker that
 * cannot be started is done without. 0 <= n_chunks <= POOL_MAX_CHUNKS
 * (asserted). Cannot fail, never allocates. */
void pool_run(pool_t *self, pool_chunk_fn *fn, void *arg, int n_chunks);

/* Tells the workers that no job follows soon (the caller is about to wait
 * for the network): they sleep now instead of spinning out their 200 us,
 * which on a machine whose processes share the cores (a local cluster) is
 * time taken from the process that has work. The next pool_run() wakes
 * them. Cheap when they already sleep; cannot fail. */
void pool_rest(pool_t *self);

#endif /* MOE_KERNELS_POOL_H */
