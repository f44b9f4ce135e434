/* machine: what this machine can do, measured in the same run as the figures
 * compared against it: OpenBLAS sgemm peak and memory read bandwidth. */
#ifndef MOE_BENCH_MACHINE_H
#define MOE_BENCH_MACHINE_H

#include <stddef.h>

/* Best sgemm rate in FLOP/s over `repeat` square n x n products with the
 * current OpenBLAS thread count. */
double machine_sgemm_peak(int n, int repeat);

/* Allocates and touches the buffer machine_read_bandwidth() reads, once: on
 * a virtual machine, memory freed and allocated again between measurements
 * page-faults afresh and slows whatever runs next. 0, or -1 with ENOMEM. */
int machine_init(size_t read_bytes);
void machine_release(void);

/* Best rate in bytes/s of reading the machine_init() buffer (well past the
 * caches) with n_threads threads, each summing its share, over `repeat`
 * passes; 0 when not initialised. */
double machine_read_bandwidth(int n_threads, int repeat);

/* Best rate in bytes/s at which sgemv streams a (rows, cols) float matrix. */
double machine_sgemv_bandwidth(int rows, int cols, int repeat);

#endif /* MOE_BENCH_MACHINE_H */
