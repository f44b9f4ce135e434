/* blas: the OpenBLAS runtime every program runs on.
 *
 * OpenBLAS picks its kernels once, when the library is loaded, from the CPU or
 * from the OPENBLAS_CORETYPE environment variable. Some environments export
 * OPENBLAS_CORETYPE=Haswell, which on an AVX-512 CPU halves sgemm speed. So
 * each program calls blas_ensure_native() first thing in main(): when the
 * variable is set, it removes it and re-executes the program so that OpenBLAS
 * detects the CPU itself. A user who really wants a given kernel sets
 * MOE_OPENBLAS_CORETYPE instead, which is passed on as OPENBLAS_CORETYPE.
 */
#ifndef MOE_CORE_BLAS_H
#define MOE_CORE_BLAS_H

#include <stdio.h>

/* Returns normally when OpenBLAS already runs on the kernels we want; otherwise
 * re-executes /proc/self/exe with argv and a corrected environment (and returns
 * only if that exec fails, after a warning on stderr). Call before any thread
 * is started. */
void blas_ensure_native(char **argv);

/* Name of the kernel family OpenBLAS uses, e.g. "Cooperlake" (borrowed). */
const char *blas_core_name(void);

/* Threads OpenBLAS uses for one call; n < 1 keeps the current setting. */
void blas_set_threads(int n);
int blas_threads(void);

/* One line to out: "openblas: <core> kernels, <n> threads". */
void blas_report(FILE *out, const char *program);

/* A server or tool's start: blas_set_threads(threads), then blas_report on
 * stderr, so that every log says which kernels and threads it ran on. */
void blas_setup(const char *program, int threads);

#endif /* MOE_CORE_BLAS_H */
