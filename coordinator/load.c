/* load: see load.h. */
#include "coordinator/load.h"

#include <errno.h>
#include <math.h>

#include "core/mem.h"

enum { RESCALE_EXP = 60 }; /* the stored scale 2^k never passes 2^60 */

struct load {
    int n_routes, max_nodes;
    double half_life;          /* H, seconds */
    double start;              /* time the tracker began */
    double base;               /* t0: stored values are scaled by 2^((t - t0) / H) */
    double *rows;              /* (n_routes) scaled sums of rows */
    double *busy;              /* (max_nodes) scaled sums of compute seconds */
    double *busy_total;        /* (max_nodes) plain sums of compute seconds */
};

load_t *load_new(int n_routes, int max_nodes, double half_life_s, double now,
                 err_t *err)
{
    if (n_routes < 0 || max_nodes < 0 || !(half_life_s > 0) || !isfinite(half_life_s)) {
        err_set(err, EINVAL, "load half-life %g s (must be above 0)", half_life_s);
        return NULL;
    }
    load_t *self = mem_calloc(1, sizeof *self);
    if (!self)
        goto oom;
    self->n_routes = n_routes;
    self->max_nodes = max_nodes;
    self->half_life = half_life_s;
    self->start = self->base = now;
    self->rows = mem_calloc((size_t)(n_routes > 0 ? n_routes : 1), sizeof(double));
    self->busy = mem_calloc((size_t)(max_nodes > 0 ? max_nodes : 1), sizeof(double));
    self->busy_total = mem_calloc((size_t)(max_nodes > 0 ? max_nodes : 1), sizeof(double));
    if (!self->rows || !self->busy || !self->busy_total)
        goto oom;
    return self;

oom:
    load_destroy(&self);
    err_set(err, ENOMEM, "out of memory for the load of %d experts", n_routes);
    return NULL;
}

void load_destroy(load_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    load_t *self = *self_p;
    mem_free(self->rows);
    mem_free(self->busy);
    mem_free(self->busy_total);
    mem_free(self);
    *self_p = NULL;
}

double load_half_life(const load_t *self)
{
    return self->half_life;
}

/* 2^((now - base) / H): the weight of an event at `now` in stored units;
 * first moves the base to now when that weight would pass 2^RESCALE_EXP. */
static double s_scale(load_t *self, double now)
{
    double k = (now - self->base) / self->half_life;
    if (k > RESCALE_EXP) {
        const double f = exp2(-k);
        for (int i = 0; i < self->n_routes; i++)
            self->rows[i] *= f;
        for (int i = 0; i < self->max_nodes; i++)
            self->busy[i] *= f;
        self->base = now;
        k = 0;
    }
    return exp2(k > 0 ? k : 0);
}

/* Stored units at `now` -> a rate per second: divided by the scale, by the
 * kernel's integral H / ln 2, and by the share of that integral the
 * tracker's life covers (1 - 2^(-age / H)). */
static double s_rate_factor(const load_t *self, double now)
{
    const double k = (now - self->base) / self->half_life;
    const double age = now - self->start;
    double cover = 1.0 - exp2(-(age > 0 ? age : 0) / self->half_life);
    if (cover < 1e-9)
        return 0;
    return exp2(-(k > 0 ? k : 0)) * M_LN2 / self->half_life / cover;
}

void load_add_rows(load_t *self, int route, double rows, double now)
{
    if (route < 0 || route >= self->n_routes)
        return;
    self->rows[route] += rows * s_scale(self, now);
}

void load_add_busy(load_t *self, int node, double seconds, double now)
{
    if (node < 0 || node >= self->max_nodes)
        return;
    self->busy[node] += seconds * s_scale(self, now);
    self->busy_total[node] += seconds;
}

void load_route_rates(const load_t *self, double now, double *rate)
{
    const double f = s_rate_factor(self, now);
    for (int i = 0; i < self->n_routes; i++)
        rate[i] = self->rows[i] * f;
}

double load_busy_ratio(const load_t *self, int node, double now)
{
    if (node < 0 || node >= self->max_nodes)
        return 0;
    return self->busy[node] * s_rate_factor(self, now);
}

double load_busy_total(const load_t *self, int node)
{
    return node >= 0 && node < self->max_nodes ? self->busy_total[node] : 0;
}
