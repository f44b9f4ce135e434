/* pool: see pool.h.
 *
 * The job is published as one 64-bit word, `claim`:
 *   generation << 32 | n_chunks << 16 | next chunk.
 * A chunk is claimed by a CAS on the whole word, so a worker decides from it
 * alone whether a chunk of its generation is left: a late worker never takes
 * a chunk of a job that is over, and never reads a job being rewritten (the
 * caller writes fn and arg before it publishes the new generation).
 *
 * The caller, once every chunk is claimed, waits for `running` == 0. A worker
 * counts itself in running before its first claim, so a chunk it claims is
 * always waited for, and a claim that comes after the wait fails.
 *
 * No lock on the hot path: a job published to spinning workers and waited
 * for by a spinning caller makes no system call. The sleepers announce
 * themselves (n_sleeping, caller_sleeping) before they test the condition
 * they sleep on, and the other side stores its change before it reads the
 * announcement (all sequentially consistent atomics), so either the sleeper
 * sees the change and does not sleep, or its waker sees it announced and
 * takes the lock to wake it. (Taking the lock every time made the caller and
 * a worker collide on it after most jobs, and each collision cost a futex
 * sleep and wake-up: 40 system calls per decoded token.)
 *
 * Stopping: pool_destroy() sets `stop` and publishes a generation with no
 * chunks, which wakes every worker, spinning or sleeping; each sees stop and
 * returns, and is joined.
 */
#include "kernels/pool.h"

#include <assert.h>
#include <errno.h>
#include <immintrin.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "core/mem.h"

static const long SPIN_NS = 200000; /* worker and caller spin before sleeping */

struct pool {
    int n_threads;            /* caller included, 1 .. POOL_MAX_THREADS */
    pthread_mutex_t busy;     /* held by the one caller using the workers */
    pthread_mutex_t lock;     /* guards the sleeps and wake-ups below */
    pthread_cond_t wake;      /* workers sleep here for a new generation */
    pthread_cond_t done;      /* the caller sleeps here for running == 0 */
    int n_workers;            /* started so far (threads[0..n_workers)) */
    atomic_int n_sleeping;    /* workers announced to sleep on wake */
    atomic_bool caller_sleeping; /* the caller announced to sleep on done */
    _Atomic unsigned long long claim; /* see the file comment */
    atomic_int running;       /* workers inside a claim attempt or a chunk */
    atomic_bool stop;         /* set by pool_destroy */
    atomic_bool resting;      /* pool_rest: spinning workers sleep now */
    pool_chunk_fn *fn;        /* the job: written before its generation */
    void *arg;
    pthread_t threads[POOL_MAX_THREADS];
};

static long s_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static unsigned s_gen(pool_t *self)
{
    return (unsigned)(atomic_load(&self->claim) >> 32);
}

/* Publishes generation gen with n_chunks chunks, chunk 0 next, and wakes the
 * sleeping workers. */
static void s_publish(pool_t *self, unsigned gen, int n_chunks)
{
    atomic_store(&self->claim,
                 (unsigned long long)gen << 32 | (unsigned long long)n_chunks << 16);
    if (atomic_load(&self->n_sleeping) > 0) {
        pthread_mutex_lock(&self->lock);
        pthread_cond_broadcast(&self->wake);
        pthread_mutex_unlock(&self->lock);
    }
}

/* Claims the next chunk of generation gen; -1 when none is left (or the job
 * of gen is over). */
static int s_claim(pool_t *self, unsigned gen)
{
    unsigned long long cur = atomic_load(&self->claim);
    for (;;) {
        unsigned cur_gen = (unsigned)(cur >> 32);
        unsigned n_chunks = (unsigned)(cur >> 16) & 0xffff;
        unsigned next = (unsigned)cur & 0xffff;
        if (cur_gen != gen || next >= n_chunks)
            return -1;
        if (atomic_compare_exchange_weak(&self->claim, &cur, cur + 1))
            return (int)next;
    }
}

static void *s_worker(void *arg)
{
    pool_t *self = arg;
    unsigned seen = s_gen(self); /* a job published before we started is not ours */
    for (;;) {
        long start = s_now_ns();
        for (int i = 0; s_gen(self) == seen && !atomic_load(&self->stop); i++) {
            if (atomic_load(&self->resting))
                break;
            _mm_pause();
            if ((i & 63) == 63 && s_now_ns() - start > SPIN_NS)
                break;
        }
        /* stop is tested too: a worker that first runs after pool_destroy()
         * published its generation has taken that one as already seen. */
        if (s_gen(self) == seen && !atomic_load(&self->stop)) {
            pthread_mutex_lock(&self->lock);
            atomic_fetch_add(&self->n_sleeping, 1);
            while (s_gen(self) == seen && !atomic_load(&self->stop))
                pthread_cond_wait(&self->wake, &self->lock);
            atomic_fetch_sub(&self->n_sleeping, 1);
            pthread_mutex_unlock(&self->lock);
        }
        if (atomic_load(&self->stop))
            return NULL;
        seen = s_gen(self);
        atomic_fetch_add(&self->running, 1);
        for (int t; (t = s_claim(self, seen)) >= 0;)
            self->fn(self->arg, t);
        if (atomic_fetch_sub(&self->running, 1) == 1 &&
            atomic_load(&self->caller_sleeping)) {
            pthread_mutex_lock(&self->lock);
            pthread_cond_signal(&self->done);
            pthread_mutex_unlock(&self->lock);
        }
    }
}

/* Starts the workers not started yet (the caller holds busy); returns how
 * many exist. */
static int s_grow(pool_t *self)
{
    if (self->n_workers >= self->n_threads - 1)
        return self->n_workers;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    while (self->n_workers < self->n_threads - 1) {
        if (pthread_create(&self->threads[self->n_workers], NULL, s_worker, self) != 0)
            break;
        self->n_workers++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return self->n_workers;
}

pool_t *pool_new(int n_threads, err_t *err)
{
    pool_t *self = mem_calloc(1, sizeof *self);
    if (!self) {
        err_set(err, ENOMEM, "out of memory for a thread pool");
        return NULL;
    }
    self->n_threads = n_threads < 1 ? 1
                      : n_threads > POOL_MAX_THREADS ? POOL_MAX_THREADS : n_threads;
    /* The static initializers cannot fail, unlike pthread_*_init. */
    self->busy = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
    self->lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
    self->wake = (pthread_cond_t)PTHREAD_COND_INITIALIZER;
    self->done = (pthread_cond_t)PTHREAD_COND_INITIALIZER;
    return self;
}

void pool_destroy(pool_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pool_t *self = *self_p;
    if (self->n_workers > 0) {
        atomic_store(&self->stop, true);
        s_publish(self, s_gen(self) + 1, 0);
        for (int i = 0; i < self->n_workers; i++)
            pthread_join(self->threads[i], NULL);
    }
    pthread_cond_destroy(&self->done);
    pthread_cond_destroy(&self->wake);
    pthread_mutex_destroy(&self->lock);
    pthread_mutex_destroy(&self->busy);
    mem_free(self);
    *self_p = NULL;
}

int pool_threads(const pool_t *self)
{
    assert(self);
    return self->n_threads;
}

void pool_rest(pool_t *self)
{
    assert(self);
    atomic_store(&self->resting, true);
}

void pool_run(pool_t *self, pool_chunk_fn *fn, void *arg, int n_chunks)
{
    assert(self);
    assert(fn);
    assert(n_chunks >= 0 && n_chunks <= POOL_MAX_CHUNKS);
    bool shared = n_chunks >= 2 && self->n_threads >= 2 &&
                  pthread_mutex_trylock(&self->busy) == 0;
    if (shared && s_grow(self) == 0) {
        pthread_mutex_unlock(&self->busy);
        shared = false;
    }
    if (!shared) {
        for (int t = 0; t < n_chunks; t++)
            fn(arg, t);
        return;
    }
    self->fn = fn;
    self->arg = arg;
    atomic_store(&self->resting, false);
    const unsigned gen = s_gen(self) + 1;
    s_publish(self, gen, n_chunks);

    for (int t; (t = s_claim(self, gen)) >= 0;)
        fn(arg, t);

    /* Every chunk is claimed: wait for those a worker is computing. */
    long start = s_now_ns();
    for (int i = 0; atomic_load(&self->running) > 0; i++) {
        _mm_pause();
        if ((i & 63) == 63 && s_now_ns() - start > SPIN_NS)
            break;
    }
    if (atomic_load(&self->running) > 0) {
        pthread_mutex_lock(&self->lock);
        atomic_store(&self->caller_sleeping, true);
        while (atomic_load(&self->running) > 0)
            pthread_cond_wait(&self->done, &self->lock);
        atomic_store(&self->caller_sleeping, false);
        pthread_mutex_unlock(&self->lock);
    }
    pthread_mutex_unlock(&self->busy);
}
