/* load: the measured load of a cluster, as moving averages.
 *
 * Two kinds of measurement, both exponentially weighted with one half-life
 * H (seconds; --load-half-life-s): the rows routed to each (layer, expert)
 * (a "route"), and the seconds each node spent computing (the
 * compute_seconds of its EXPERT_REPLYs). An event of size x at time t counts
 * x * 2^(-(now - t) / H) at time `now`; a rate is that sum divided by the
 * kernel's integral H / ln 2, corrected for the time the tracker has lived
 * (shorter than a few H, the plain sum would under-count). So a route's load
 * is in rows per second and a node's busy ratio in seconds per second (0..1
 * for one compute thread at a time).
 *
 * Updates are O(1): values are stored scaled by 2^((t - t0) / H) and read
 * back divided by the same factor at `now`; the base t0 moves forward (every
 * value rescaled once) when the factor would grow past 2^60. Times are
 * timer_now() seconds, never decreasing between calls (the caller's clock).
 * Owned by the coordinator's loop thread.
 */
#ifndef MOE_COORDINATOR_LOAD_H
#define MOE_COORDINATOR_LOAD_H

#include <stdint.h>

#include "core/err.h"

typedef struct load load_t;

/* A tracker of n_routes routes and up to max_nodes nodes (indices
 * 0..max_nodes-1), started at time `now`. half_life_s must be > 0 and
 * finite: EINVAL otherwise; ENOMEM. Caller destroys. */
load_t *load_new(int n_routes, int max_nodes, double half_life_s, double now,
                 err_t *err);
void load_destroy(load_t **self_p);

double load_half_life(const load_t *self);

/* Counts `rows` rows routed to route r at time now (r out of range:
 * ignored). */
void load_add_rows(load_t *self, int route, double rows, double now);

/* Counts `seconds` of compute by node index `node` at time now (out of
 * range: ignored). */
void load_add_busy(load_t *self, int node, double seconds, double now);

/* Rows per second routed to each route, weighted as above, into
 * rate[0..n_routes). */
void load_route_rates(const load_t *self, double now, double *rate);

/* The node's busy ratio now (seconds computing per second), and its total
 * compute seconds since the tracker began (not weighted). 0 when out of
 * range. */
double load_busy_ratio(const load_t *self, int node, double now);
double load_busy_total(const load_t *self, int node);

#endif /* MOE_COORDINATOR_LOAD_H */
