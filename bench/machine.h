/* machine: what this machine can do, measured in the same run as the figures
 * compared against it: OpenBLAS sgemm peak and memory read bandwidth. */
#ifndef MOE_BENCH_MACHINE_H
#define MOE_BENCH_MACHINE_H

#include <stddef.h>

/* Best sgemm rate in FLOP/s over `repeat` square n x n products with the
 * current OpenBLAS thread count. */
double machine_sgemm_peak(int n, int repeat);

/* Best rate in bytes/s of reading a buffer of `bytes` (well past the caches)
 * with n_threads threads, each summing its share, over `repeat` passes. */
double machine_read_bandwidth(size_t bytes, int n_threads, int repeat);

/* Best rate in bytes/s at which sgemv streams a (rows, cols) float matrix. */
double machine_sgemv_bandwidth(int rows, int cols, int repeat);

#endif /* MOE_BENCH_MACHINE_H */
