/* lograte: a log that cannot be flooded. Lines are grouped by cause (a short
 * static text naming what happened, "malformed message"); of each cause at
 * most `burst` lines are written per window of `interval_s` seconds, the
 * rest are counted, and the count is written as one line when the window
 * closes ("<who>: 295 more in the last 10 s: malformed message"), so a
 * client retrying in a loop or a scan of random bytes costs the log a
 * handful of lines per cause and nothing is lost without a trace.
 *
 * A lograte_t is embedded by value in its owner and used by one thread.
 * It never allocates: causes beyond LOGRATE_MAX_CAUSES share one slot.
 */
#ifndef MOE_CORE_LOGRATE_H
#define MOE_CORE_LOGRATE_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

enum { LOGRATE_MAX_CAUSES = 16 };
/* What the servers use: 5 lines per cause, then a count every 10 s. */
enum { LOGRATE_BURST = 5, LOGRATE_INTERVAL_S = 10 };

/* One cause's window. */
typedef struct lograte_cause {
    const char *cause;     /* borrowed static text; NULL: slot free */
    double window_start;   /* timer_now() when this window opened */
    int n_written;         /* lines written in this window */
    uint64_t n_suppressed; /* lines counted, not written, in this window */
} lograte_cause_t;

typedef struct lograte {
    FILE *log;             /* borrowed; NULL: quiet */
    char who[64];          /* prefix of the count lines ("moe-expert: node 1") */
    int burst;             /* lines written per cause and window (>= 0) */
    double interval_s;     /* window length, seconds (> 0) */
    lograte_cause_t causes[LOGRATE_MAX_CAUSES];
} lograte_t;

/* Sets self up to write to log (may be NULL: quiet) with count lines prefixed
 * by who; burst lines per cause every interval_s seconds. */
void lograte_init(lograte_t *self, FILE *log, const char *who, int burst, double interval_s);

/* Writes the pending counts (lograte_flush). */
void lograte_fini(lograte_t *self);

/* Writes one line (fmt plus a newline; the caller's prefix included) under
 * cause, a static text, or counts it when cause has had its burst in this
 * window. Returns 1 when written, 0 when counted. */
int lograte_printf(lograte_t *self, const char *cause, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* lograte_printf with a va_list. */
int lograte_vprintf(lograte_t *self, const char *cause, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Writes the count line of each cause whose window has closed with lines
 * counted, and opens a new window for it. Cheap: call it from a poll loop. */
void lograte_tick(lograte_t *self);

/* Writes every pending count now (on shutdown). */
void lograte_flush(lograte_t *self);

#endif /* MOE_CORE_LOGRATE_H */
