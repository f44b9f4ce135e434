/* blas: the OpenBLAS runtime every program runs on.
 *
 * OpenBLAS picks its kernels once, when the library is loaded, from the CPU or
 * from the OPENBLAS_CORETYPE environment variable. Some environments export
 * OPENBLAS_CORETYPE=Haswell, which on an AVX-512 CPU halves sgemm speed. So
 * each program calls blas_ensure_native() first thing in main(): when the
 * variable is set, it removes it and re-executes the program so that OpenBLAS
 * detects the CPU itself. A user who really wants a given kernel sets
 * MOE_OPENBLAS_CORETYPE instead, which is passed on as OPENBLAS_CORETYPE.
 * And when OpenBLAS's own detection falls back to generic SSE kernels on a
 * CPU with AVX2 or AVX-512 (an OpenBLAS older than the CPU: Debian 12's ran
 * the 16-core Xeon host on "Prescott", prefill at a fraction of its speed),
 * the program re-executes once more asking for the kernels of its
 * extensions (blas_core_upgrade).
 */
#ifndef MOE_CORE_BLAS_H
#define MOE_CORE_BLAS_H

#include <stdbool.h>
#include <stdio.h>

/* Returns normally when OpenBLAS already runs on the kernels we want; otherwise
 * re-executes /proc/self/exe with argv and a corrected environment (and returns
 * only if that exec fails, after a warning on stderr). Call before any thread
 * is started. */
void blas_ensure_native(char **argv);

/* The OpenBLAS kernel family to ask for instead of core on a CPU with
 * these extensions ("SkylakeX" for AVX-512 F/BW/DQ/VL/CD, "Haswell" for
 * AVX2 + FMA), or NULL when core is not one of OpenBLAS's generic SSE or AVX
 * families or the CPU has neither. */
const char *blas_core_upgrade(const char *core, bool avx512, bool avx2);

/* Name of the kernel family OpenBLAS uses, e.g. "Cooperlake" (borrowed). */
const char *blas_core_name(void);

/* Threads: a process computes on one pool of threads per compute context
 * (kernels/compute.h), sized by blas_threads(). OpenBLAS itself is kept at
 * one thread: gemm() and the prefill kernels cut a large product into chunks
 * that the pool's threads pass to OpenBLAS each on its own. OpenBLAS's own
 * workers spin for about 0.1 s after every call (OPENBLAS_THREAD_TIMEOUT);
 * next to our pool they took the cores our workers needed (decode at 0.6 of
 * its speed on 2 cores, worse as the context grew and attention's sgemv
 * went multithreaded), so no OpenBLAS worker is ever started.
 *
 * blas_set_threads(n): the threads a compute context is made with from now
 * on (n < 1 keeps the setting); it also sets OpenBLAS to one thread.
 * blas_threads(): that number; until it is set, the cores OpenBLAS found
 * (and OpenBLAS is set to one thread at that first call). Call them from the
 * main thread before computing. */
void blas_set_threads(int n);
int blas_threads(void);

/* One line to out: "openblas: <core> kernels, <n> threads". */
void blas_report(FILE *out, const char *program);

/* A server or tool's start: blas_set_threads(threads), then blas_report on
 * stderr, so that every log says which kernels and threads it ran on. */
void blas_setup(const char *program, int threads);

#endif /* MOE_CORE_BLAS_H */
