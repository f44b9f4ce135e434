/* lograte: see lograte.h. */
#include "core/lograte.h"

#include <assert.h>
#include <stdarg.h>
#include <string.h>

#include "core/timer.h"

void lograte_init(lograte_t *self, FILE *log, const char *who, int burst, double interval_s)
{
    assert(self);
    assert(who);
    assert(burst >= 0);
    assert(interval_s > 0);
    memset(self, 0, sizeof *self);
    self->log = log;
    snprintf(self->who, sizeof self->who, "%s", who);
    self->burst = burst;
    self->interval_s = interval_s;
}

void lograte_fini(lograte_t *self)
{
    if (self)
        lograte_flush(self);
}

/* The slot of cause: its own, a free one, or (all taken) the last, shared. */
static lograte_cause_t *s_slot(lograte_t *self, const char *cause)
{
    for (int i = 0; i < LOGRATE_MAX_CAUSES; i++) {
        lograte_cause_t *c = &self->causes[i];
        if (c->cause == NULL || strcmp(c->cause, cause) == 0)
            return c;
    }
    return &self->causes[LOGRATE_MAX_CAUSES - 1];
}

static void s_write_count(lograte_t *self, lograte_cause_t *c, double now)
{
    if (c->n_suppressed > 0 && self->log) {
        fprintf(self->log, "%s: %llu more in the last %.0f s, not logged one by one: %s\n",
                self->who, (unsigned long long)c->n_suppressed, now - c->window_start,
                c->cause);
        fflush(self->log);
    }
    c->n_suppressed = 0;
    c->n_written = 0;
    c->window_start = now;
}

int lograte_printf(lograte_t *self, const char *cause, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = lograte_vprintf(self, cause, fmt, ap);
    va_end(ap);
    return rc;
}

int lograte_vprintf(lograte_t *self, const char *cause, const char *fmt, va_list ap)
{
    assert(self);
    assert(cause);
    assert(fmt);
    const double now = timer_now();
    lograte_cause_t *c = s_slot(self, cause);
    if (c->cause == NULL) {
        c->cause = cause;
        c->window_start = now;
    } else if (now - c->window_start >= self->interval_s)
        s_write_count(self, c, now);
    if (c->n_written >= self->burst) {
        c->n_suppressed++;
        return 0;
    }
    c->n_written++;
    if (self->log) {
        vfprintf(self->log, fmt, ap);
        fputc('\n', self->log);
        fflush(self->log);
    }
    return 1;
}

void lograte_tick(lograte_t *self)
{
    assert(self);
    const double now = timer_now();
    for (int i = 0; i < LOGRATE_MAX_CAUSES && self->causes[i].cause; i++) {
        lograte_cause_t *c = &self->causes[i];
        if (c->n_suppressed > 0 && now - c->window_start >= self->interval_s)
            s_write_count(self, c, now);
    }
}

void lograte_flush(lograte_t *self)
{
    assert(self);
    const double now = timer_now();
    for (int i = 0; i < LOGRATE_MAX_CAUSES && self->causes[i].cause; i++)
        if (self->causes[i].n_suppressed > 0)
            s_write_count(self, &self->causes[i], now);
}
