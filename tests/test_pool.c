/* test_pool: pool_run() computes every chunk exactly once, whatever the
 * thread count, the chunk count and the number of callers sharing the pool;
 * pool_new() clamps and fails cleanly; pool_destroy() joins every worker it
 * started (the process's thread count comes back to where it was);
 * pool_rest() sends the spinning workers to sleep at once, and the next job
 * wakes them.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <cmocka.h>

#include "core/mem.h"
#include "kernels/pool.h"

enum { MAX_CHUNKS = 1000 };

/* A job whose chunk t adds 1 to hits[t]. */
typedef struct counter {
    atomic_int hits[MAX_CHUNKS];
} counter_t;

static void s_count(void *arg, int chunk)
{
    counter_t *c = arg;
    atomic_fetch_add(&c->hits[chunk], 1);
}

/* Runs n_chunks chunks on pool; the number of chunks that did not run
 * exactly once (any thread may call it). */
static int s_run_bad(pool_t *pool, int n_chunks)
{
    counter_t *c = calloc(1, sizeof *c);
    if (!c)
        return MAX_CHUNKS;
    pool_run(pool, s_count, c, n_chunks);
    int bad = 0;
    for (int t = 0; t < MAX_CHUNKS; t++)
        bad += atomic_load(&c->hits[t]) != (t < n_chunks ? 1 : 0);
    free(c);
    return bad;
}

static void s_run_once(pool_t *pool, int n_chunks)
{
    int bad = s_run_bad(pool, n_chunks);
    if (bad)
        fail_msg("%d threads, %d chunks: %d chunks did not run exactly once",
                 pool_threads(pool), n_chunks, bad);
}

/* Threads of this process, from /proc/self/task. */
static int s_n_tasks(void)
{
    DIR *d = opendir("/proc/self/task");
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void test_every_chunk_once(void **state)
{
    (void)state;
    static const int threads[] = {1, 2, 3, 5};
    static const int chunks[] = {0, 1, 2, 7, 64, MAX_CHUNKS};
    for (size_t it = 0; it < sizeof threads / sizeof threads[0]; it++) {
        pool_t *pool = pool_new(threads[it], NULL);
        assert_non_null(pool);
        assert_int_equal(pool_threads(pool), threads[it]);
        for (int repeat = 0; repeat < 20; repeat++)
            for (size_t ic = 0; ic < sizeof chunks / sizeof chunks[0]; ic++)
                s_run_once(pool, chunks[ic]);
        pool_destroy(&pool);
        assert_null(pool);
    }
}

static void test_new_clamps_and_fails_cleanly(void **state)
{
    (void)state;
    pool_t *pool = pool_new(0, NULL);
    assert_non_null(pool);
    assert_int_equal(pool_threads(pool), 1);
    pool_destroy(&pool);
    pool = pool_new(POOL_MAX_THREADS + 5, NULL);
    assert_non_null(pool);
    assert_int_equal(pool_threads(pool), POOL_MAX_THREADS);
    pool_destroy(&pool);
    pool_destroy(&pool); /* twice is harmless */
    pool_destroy(NULL);
    err_t err = {0};
    mem_fail_after(1);
    errno = 0;
    pool = pool_new(2, &err);
    mem_fail_after(-1);
    assert_null(pool);
    assert_int_equal(errno, ENOMEM);
    assert_int_equal(err.code, ENOMEM);
}

/* Workers start on the first job that wants them and are joined at destroy. */
static void test_destroy_joins_workers(void **state)
{
    (void)state;
    const int before = s_n_tasks();
    pool_t *pool = pool_new(4, NULL);
    assert_non_null(pool);
    assert_int_equal(s_n_tasks(), before); /* none started yet */
    s_run_once(pool, 1);                   /* one chunk: the caller alone */
    assert_int_equal(s_n_tasks(), before);
    s_run_once(pool, 16);
    assert_int_equal(s_n_tasks(), before + 3);
    pool_destroy(&pool);
    assert_int_equal(s_n_tasks(), before);
}

/* Callers on several threads share one pool: one at a time gets the workers,
 * the others compute alone, and every job is complete. */
enum { N_CALLERS = 3, CALLER_JOBS = 200 };

/* Returns the number of bad chunks over its jobs, as a pointer. */
static void *s_caller_main(void *arg)
{
    pool_t *pool = arg;
    intptr_t bad = 0;
    for (int j = 0; j < CALLER_JOBS; j++)
        bad += s_run_bad(pool, 1 + j % 40);
    return (void *)bad;
}

static void test_concurrent_callers(void **state)
{
    (void)state;
    pool_t *pool = pool_new(3, NULL);
    assert_non_null(pool);
    pthread_t th[N_CALLERS - 1];
    for (int i = 0; i < N_CALLERS - 1; i++)
        assert_int_equal(pthread_create(&th[i], NULL, s_caller_main, pool), 0);
    intptr_t bad = (intptr_t)s_caller_main(pool);
    for (int i = 0; i < N_CALLERS - 1; i++) {
        void *ret = NULL;
        assert_int_equal(pthread_join(th[i], &ret), 0);
        bad += (intptr_t)ret;
    }
    assert_int_equal(bad, 0);
    pool_destroy(&pool);
}

static double s_cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU seconds the process spends in the 2 ms after a job (the caller
 * sleeping), summed over reps jobs, with or without pool_rest() after each. */
static double s_cpu_after_jobs(pool_t *pool, bool rest, int reps)
{
    const struct timespec two_ms = {0, 2000000};
    double sum = 0;
    for (int i = 0; i < reps; i++) {
        s_run_once(pool, 64);
        if (rest)
            pool_rest(pool);
        const double t0 = s_cpu_seconds();
        nanosleep(&two_ms, NULL);
        sum += s_cpu_seconds() - t0;
    }
    return sum;
}

/* After pool_rest() the workers sleep at once instead of spinning out their
 * 200 us (so they burn far less CPU while the caller waits), and the next job
 * still runs every chunk. Rounds of 20 jobs until one shows it (bounded: a
 * busy machine may not run the spinning workers in some round). */
static void test_rest_stops_spinning(void **state)
{
    (void)state;
    pool_t *pool = pool_new(4, NULL);
    assert_non_null(pool);
    bool shown = false;
    double spin = 0, rested = 0;
    for (int round = 0; round < 5 && !shown; round++) {
        spin = s_cpu_after_jobs(pool, false, 20);
        rested = s_cpu_after_jobs(pool, true, 20);
        shown = rested < spin / 2;
    }
    printf("  CPU after 20 jobs: %.0f us spinning, %.0f us resting\n", spin * 1e6,
           rested * 1e6);
    assert_true(shown);
    s_run_once(pool, MAX_CHUNKS);
    pool_destroy(&pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_chunk_once),
        cmocka_unit_test(test_new_clamps_and_fails_cleanly),
        cmocka_unit_test(test_destroy_joins_workers),
        cmocka_unit_test(test_concurrent_callers),
        cmocka_unit_test(test_rest_stops_spinning),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
