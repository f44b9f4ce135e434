/* roster: see roster.h. A linear table: a node has a handful of
 * coordinators, and a scan of ROSTER_MAX short identities costs less than
 * one expert row. */
#include "expert_node/roster.h"

#include <assert.h>
#include <stdbool.h>
#include <string.h>

#include "core/mem.h"

typedef struct roster_entry {
    size_t len;                      /* 0: free */
    uint8_t id[WIRE_MAX_IDENTITY];   /* the ROUTER's routing identity */
    double last;                     /* timer_now() when last heard from */
} roster_entry_t;

struct roster {
    double window_s;                 /* heard within this long counts */
    roster_entry_t at[ROSTER_MAX];
};

roster_t *roster_new(double window_s)
{
    assert(window_s > 0);
    roster_t *self = mem_calloc(1, sizeof *self);
    if (self)
        self->window_s = window_s;
    return self;
}

void roster_destroy(roster_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    mem_free(*self_p);
    *self_p = NULL;
}

static bool s_live(const roster_t *self, const roster_entry_t *e, double now)
{
    return e->len > 0 && now - e->last <= self->window_s;
}

bool roster_touch(roster_t *self, const wire_peer_t *from, double now)
{
    assert(self);
    assert(from);
    if (from->len == 0 || from->len > WIRE_MAX_IDENTITY)
        return false;
    roster_entry_t *slot = &self->at[0];
    for (int i = 0; i < ROSTER_MAX; i++) {
        roster_entry_t *e = &self->at[i];
        if (e->len == from->len && memcmp(e->id, from->id, from->len) == 0) {
            const bool fresh = !s_live(self, e, now);
            e->last = now;
            return fresh;
        }
        /* Else the free slot, or the one heard from longest ago. */
        if (slot->len > 0 && (e->len == 0 || e->last < slot->last))
            slot = e;
    }
    slot->len = from->len;
    memcpy(slot->id, from->id, from->len);
    slot->last = now;
    return true;
}

int roster_count(const roster_t *self, double now)
{
    assert(self);
    int n = 0;
    for (int i = 0; i < ROSTER_MAX; i++)
        n += s_live(self, &self->at[i], now);
    return n;
}
