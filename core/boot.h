/* boot: the MPI bootstrap of moe-mpi, and the only module that calls MPI.
 *
 * MPI is used to start a cluster, never to move data: rank 0 is the
 * coordinator (ranks 0..C-1 with moe-mpi --coordinators C) and the other
 * ranks are expert nodes; they agree on whether
 * each start-up stage worked, exchange ZeroMQ endpoints and share rank 0's
 * placement text, then serve over ZeroMQ with no MPI call until shutdown.
 *
 * A function marked *Collective* must be called by every rank, in the same
 * order with the same arguments where noted; a rank that skips one hangs the
 * others. A stage that fails on some rank therefore still calls the next
 * Collective (boot_agree) with its failure, instead of returning early, so
 * every rank learns of it and exits cleanly.
 */
#ifndef MOE_CORE_BOOT_H
#define MOE_CORE_BOOT_H

#include <stddef.h>

#include "core/err.h"

enum { BOOT_HOST_MAX = 64 };     /* bytes of a host name kept, NUL included */
enum { BOOT_STRING_MAX = 1024 }; /* bytes of a gathered string, NUL included */

typedef struct boot boot_t;

/* *Collective.* Initialises MPI (MPI_Init, which may consume MPI's own
 * arguments from argc/argv) and learns this rank, the world size and the host
 * name. Call once per process, before starting threads of our own. Caller
 * destroys. NULL with errno/err when MPI cannot start. Rank 0 sizes its
 * gather buffers here; when that fails it aborts the job (MPI_Abort), since
 * the other ranks would otherwise wait for it forever. */
boot_t *boot_new(int *argc, char ***argv, err_t *err);

/* *Collective.* Finalises MPI (MPI_Finalize) and frees self. Accepts NULL
 * and a NULL *self_p (then MPI is left alone); sets *self_p to NULL. */
void boot_destroy(boot_t **self_p);

int boot_rank(const boot_t *self);         /* 0..size-1; 0 is the (first) coordinator */
int boot_size(const boot_t *self);         /* ranks in the job */
const char *boot_host(const boot_t *self); /* this rank's host name (borrowed) */

/* *Collective.* Every rank reports how a stage went: mine NULL or
 * mine->code 0 is success, else mine->msg says what failed. Rank 0 gathers
 * the reports and broadcasts the verdict. Returns 0 on every rank when all
 * succeeded; otherwise -1 on every rank, with verdict (may be NULL) set to
 * one sentence naming the stage and the first failing rank and host, e.g.
 * "start: rank 2 (host b): cannot open m/model.safetensors: ... (and 1 more
 * rank)", and errno to that rank's code. Only the caller prints it (rank 0,
 * so that it appears once). -1 also when MPI itself fails. */
int boot_agree(boot_t *self, const char *stage, const err_t *mine, err_t *verdict);

/* *Collective.* Gathers one NUL-terminated string per rank to rank 0, where
 * boot_gathered reads them. A string longer than BOOT_STRING_MAX - 1 bytes
 * arrives truncated to that length. 0, or -1 with errno/err (EIO when MPI
 * fails). Does not allocate. */
int boot_gather_strings(boot_t *self, const char *mine, err_t *err);

/* On rank 0, the string rank `rank` gave to the last boot_gather_strings
 * (borrowed, valid until the next one; "" before any). NULL on other ranks
 * and for a rank out of range. */
const char *boot_gathered(const boot_t *self, int rank);

/* *Collective.* Broadcasts rank 0's text to every rank. On rank 0, *text_p
 * is the text (NUL-terminated, left as is); on the others *text_p receives
 * a mem_alloc'd copy (caller frees with mem_free). *len_p (may be NULL)
 * receives its length. 0, or -1 with errno/err (ENOMEM, EIO, EFBIG when the
 * text does not fit an int). A rank that cannot allocate the copy aborts the
 * job (MPI_Abort): it cannot leave the broadcast on its own. */
int boot_bcast_string(boot_t *self, char **text_p, size_t *len_p, err_t *err);

/* *Collective.* Returns once every rank called it. 0, or -1 with errno EIO. */
int boot_barrier(boot_t *self, err_t *err);

/* Point to point (not collective): sends one string (truncated to
 * BOOT_STRING_MAX - 1 bytes) to rank `to`, which must call boot_recv_string
 * for it; moe-mpi's coordinators report to rank 0 and hear back whether to
 * serve. Blocks until MPI has taken it. 0, or -1 with errno/err (EINVAL for
 * a rank out of range, EIO when MPI fails). */
int boot_send_string(boot_t *self, int to, const char *text, err_t *err);

/* Receives the next string rank `from` sent with boot_send_string into buf
 * (BOOT_STRING_MAX bytes), blocking until it comes. 0, or -1 with errno/err
 * as boot_send_string. */
int boot_recv_string(boot_t *self, int from, char buf[BOOT_STRING_MAX], err_t *err);

#endif /* MOE_CORE_BOOT_H */
