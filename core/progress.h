/* progress: progress lines for long work measured in bytes (reading a
 * model's weights, writing one), so that a user sees why a start takes time.
 *
 * Quick work stays quiet: nothing is printed before PROGRESS_QUIET_S has
 * passed. After that one line at most every PROGRESS_EVERY_S, and one at the
 * end, each a whole line (logs are files, so no carriage returns):
 *   moe-expert: reading weights: 412.0 of 1600.0 MB (26%), 210.3 MB/s, 5.6 s left
 *   moe-expert: reading weights: 1600.0 MB in 7.6 s, 210.5 MB/s
 * The struct is embedded by value (progress_init / progress_fini); it keeps
 * borrowed strings and allocates nothing.
 */
#ifndef MOE_CORE_PROGRESS_H
#define MOE_CORE_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define PROGRESS_QUIET_S 1.0   /* work shorter than this prints nothing */
#define PROGRESS_EVERY_S 1.0   /* the longest gap between two lines after that */

typedef struct progress {
    FILE *out;              /* NULL: quiet */
    const char *name;       /* the program, e.g. "moe-expert" (borrowed) */
    const char *what;       /* the work, e.g. "reading weights" (borrowed) */
    uint64_t total;         /* bytes the work has in all */
    uint64_t done;          /* bytes done so far */
    double t_start;         /* timer_now() at progress_init, s */
    double t_shown;         /* when the last line was printed; 0: none yet */
} progress_t;

/* Starts measuring work of total bytes; prints nothing yet. */
void progress_init(progress_t *self, FILE *out, const char *name, const char *what,
                   uint64_t total);

/* Counts bytes more done; prints a line when one is due. */
void progress_add(progress_t *self, uint64_t bytes);

/* Ends the work: a final line (size, time, rate) when any line was printed. */
void progress_fini(progress_t *self);

#endif /* MOE_CORE_PROGRESS_H */
