/* loadview: see loadview.h. */
#include "client/loadview.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>

enum { HOT_SHOWN = 4 }; /* hottest experts listed per layer */

double loadview_imbalance(const client_status_t *st)
{
    double max = 0, sum = 0;
    int n = 0;
    for (int i = 0; i < st->n_nodes; i++) {
        if (st->nodes[i].n_hosted == 0)
            continue;
        n++;
        sum += st->nodes[i].load;
        max = st->nodes[i].load > max ? st->nodes[i].load : max;
    }
    return n && sum > 0 ? max / (sum / n) : 0;
}

/* A finite number as JSON, null otherwise. */
static json_t *s_num(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

json_t *loadview_json(const client_status_t *st)
{
    json_t *nodes = json_array();
    json_t *loads = json_array();
    for (int i = 0; nodes && i < st->n_nodes; i++) {
        const client_node_t *n = &st->nodes[i];
        json_t *experts = json_array();
        for (int j = 0; experts && j < n->n_hosted; j++)
            if (json_array_append_new(experts, json_pack("[ii]", (int)n->hosted[j].layer,
                                                         (int)n->hosted[j].expert)) < 0) {
                json_decref(experts);
                experts = NULL;
            }
        /* "o" steals experts, also when packing fails. */
        json_t *node = json_pack("{s:i, s:s, s:b, s:o, s:o, s:o, s:o}", "node_id",
                                 n->node_id, "endpoint", n->endpoint, "up", (int)n->up,
                                 "experts", experts, "load", s_num(n->load),
                                 "busy_ratio", s_num(n->busy_ratio),
                                 "busy_seconds", s_num(n->busy_seconds));
        if (!node || json_array_append_new(nodes, node) < 0) {
            json_decref(nodes);
            nodes = NULL;
        }
    }
    for (int l = 0; loads && l < st->n_layers; l++) {
        json_t *row = json_array();
        for (int e = 0; row && e < st->n_experts; e++)
            if (json_array_append_new(row, s_num(st->expert_load[(size_t)l * st->n_experts +
                                                                 e])) < 0) {
                json_decref(row);
                row = NULL;
            }
        if (!row || json_array_append_new(loads, row) < 0) {
            json_decref(loads);
            loads = NULL;
        }
    }
    return json_pack("{s:o, s:o, s:o, s:o}", "load_half_life_s",
                     s_num(st->load_half_life_s), "imbalance",
                     s_num(loadview_imbalance(st)), "nodes", nodes, "expert_load", loads);
}

/* Prints the ids of the nodes hosting (layer, expert), "1,3". */
static void s_print_hosts(const client_status_t *st, int layer, int expert, FILE *out)
{
    int printed = 0;
    for (int i = 0; i < st->n_nodes; i++)
        for (int j = 0; j < st->nodes[i].n_hosted; j++)
            if (st->nodes[i].hosted[j].layer == layer &&
                st->nodes[i].hosted[j].expert == expert)
                fprintf(out, "%s%d", printed++ ? "," : "", st->nodes[i].node_id);
}

int loadview_print(const client_status_t *st, FILE *out)
{
    double total = 0;
    for (int i = 0; i < st->n_nodes; i++)
        total += st->nodes[i].load;
    fprintf(out, "placement: %d nodes, %d layers x %d experts; load: moving average, "
            "half-life %g s\n", st->n_nodes, st->n_layers, st->n_experts,
            st->load_half_life_s);
    const double imb = loadview_imbalance(st);
    if (imb > 0)
        fprintf(out, "imbalance: heaviest node %.2fx the mean\n\n", imb);
    else
        fprintf(out, "imbalance: no load measured yet\n\n");
    fprintf(out, "%6s  %-4s  %7s  %14s  %6s  %6s  %10s\n", "node", "up", "experts",
            "load (rows/s)", "share", "busy", "busy (s)");
    for (int i = 0; i < st->n_nodes; i++) {
        const client_node_t *n = &st->nodes[i];
        fprintf(out, "%6d  %-4s  %7d  %14.2f  %5.1f%%  %5.1f%%  %10.3f\n", n->node_id,
                n->up ? "up" : "DOWN", n->n_hosted, n->load,
                total > 0 ? 100.0 * n->load / total : 0.0, 100.0 * n->busy_ratio,
                n->busy_seconds);
    }
    fprintf(out, "\nhottest experts per layer (rows/s, nodes):\n");
    for (int l = 0; l < st->n_layers; l++) {
        const double *row = st->expert_load + (size_t)l * st->n_experts;
        fprintf(out, "  layer %3d:", l);
        /* The HOT_SHOWN largest, by a selection that leaves row untouched:
         * each pass takes the largest below the last one taken (ties by id). */
        int last = -1;
        for (int k = 0; k < HOT_SHOWN && k < st->n_experts; k++) {
            int best = -1;
            for (int e = 0; e < st->n_experts; e++) {
                bool below = last < 0 || row[e] < row[last] || (row[e] == row[last] && e > last);
                if (below && (best < 0 || row[e] > row[best]))
                    best = e;
            }
            if (best < 0 || row[best] <= 0)
                break;
            fprintf(out, "%s e%d %.2f (", k ? "," : "", best, row[best]);
            s_print_hosts(st, l, best, out);
            fprintf(out, ")");
            last = best;
        }
        fprintf(out, "\n");
    }
    return ferror(out) ? (errno = EIO, -1) : 0;
}
