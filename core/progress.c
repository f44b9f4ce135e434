/* progress: see progress.h. */
#include "core/progress.h"

#include <assert.h>

#include "core/timer.h"

static double s_mb(uint64_t bytes)
{
    return (double)bytes / 1e6;
}

void progress_init(progress_t *self, FILE *out, const char *name, const char *what,
                   uint64_t total)
{
    assert(self);
    *self = (progress_t){.out = out, .name = name, .what = what, .total = total,
                         .t_start = timer_now()};
}

void progress_add(progress_t *self, uint64_t bytes)
{
    assert(self);
    self->done += bytes;
    if (!self->out)
        return;
    const double now = timer_now(), elapsed = now - self->t_start;
    if (elapsed < PROGRESS_QUIET_S || (self->t_shown > 0 && now - self->t_shown < PROGRESS_EVERY_S))
        return;
    const double rate = s_mb(self->done) / elapsed;   /* MB/s */
    const uint64_t left = self->total > self->done ? self->total - self->done : 0;
    fprintf(self->out, "%s: %s: %.1f of %.1f MB (%.0f%%), %.1f MB/s, %.1f s left\n",
            self->name, self->what, s_mb(self->done), s_mb(self->total),
            self->total ? 100.0 * (double)self->done / (double)self->total : 100.0, rate,
            rate > 0 ? s_mb(left) / rate : 0.0);
    fflush(self->out);
    self->t_shown = now;
}

void progress_fini(progress_t *self)
{
    assert(self);
    if (!self->out || self->t_shown == 0)
        return;
    const double elapsed = timer_now() - self->t_start;
    fprintf(self->out, "%s: %s: %.1f MB in %.1f s, %.1f MB/s\n", self->name, self->what,
            s_mb(self->done), elapsed, elapsed > 0 ? s_mb(self->done) / elapsed : 0.0);
    fflush(self->out);
}
