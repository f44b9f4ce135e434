/* placement: see placement.h.
 *
 * A (layer, expert) pair is a slot, s = layer * n_experts + expert. Each slot
 * has room for n_nodes hosts (a node hosts a slot at most once), kept in order
 * of preference; n_hosts[s] of them are used.
 */
#include "model/placement.h"

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "core/mem.h"

struct placement {
    int n_layers;
    int n_experts;
    int n_nodes;
    int *n_hosts;    /* [n_layers * n_experts] nodes hosting each slot */
    int *hosts;      /* [n_layers * n_experts * n_nodes] node ids of slot s at
                        s * n_nodes, most preferred first */
    int *n_hosted;   /* [n_nodes + 1] slots each node hosts; [0] unused */
};

/* An empty placement (no slot hosted) of the given size. */
static placement_t *s_new(int n_layers, int n_experts, int n_nodes, const char *origin,
                          err_t *err)
{
    if (n_layers < 1 || n_experts < 1) {
        err_set(err, EINVAL, "%s: a model of %d layers x %d experts has nothing to place",
                origin, n_layers, n_experts);
        return NULL;
    }
    if (n_nodes < 1 || n_nodes > PLACEMENT_MAX_NODES) {
        err_set(err, EINVAL, "%s: %d nodes is outside 1..%d", origin, n_nodes,
                PLACEMENT_MAX_NODES);
        return NULL;
    }
    size_t slots = (size_t)n_layers * (size_t)n_experts;
    placement_t *self = NULL;
    if (slots > SIZE_MAX / sizeof(int) / (size_t)n_nodes)
        goto oom;
    self = mem_calloc(1, sizeof *self);
    if (!self)
        goto oom;
    self->n_layers = n_layers;
    self->n_experts = n_experts;
    self->n_nodes = n_nodes;
    self->n_hosts = mem_calloc(slots, sizeof(int));
    self->hosts = mem_calloc(slots * (size_t)n_nodes, sizeof(int));
    self->n_hosted = mem_calloc((size_t)n_nodes + 1, sizeof(int));
    if (!self->n_hosts || !self->hosts || !self->n_hosted)
        goto oom;
    return self;

oom:
    placement_destroy(&self);
    err_set(err, ENOMEM, "%s: out of memory for a placement of %d layers x %d experts "
            "on %d nodes", origin, n_layers, n_experts, n_nodes);
    return NULL;
}

void placement_destroy(placement_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    placement_t *self = *self_p;
    int saved = errno;
    mem_free(self->n_hosted);
    mem_free(self->hosts);
    mem_free(self->n_hosts);
    mem_free(self);
    *self_p = NULL;
    errno = saved;
}

static size_t s_slot(const placement_t *self, int layer, int expert)
{
    return (size_t)layer * (size_t)self->n_experts + (size_t)expert;
}

/* Position of node in slot s's host list, or -1. */
static int s_find(const placement_t *self, size_t s, int node)
{
    const int *h = self->hosts + s * (size_t)self->n_nodes;
    for (int i = 0; i < self->n_hosts[s]; i++)
        if (h[i] == node)
            return i;
    return -1;
}

/* Appends node to slot s's hosts (the caller checked it is not there yet). */
static void s_add(placement_t *self, size_t s, int node)
{
    self->hosts[s * (size_t)self->n_nodes + (size_t)self->n_hosts[s]++] = node;
    self->n_hosted[node]++;
}

placement_t *placement_default(int n_layers, int n_experts, int n_nodes, int replicas,
                               err_t *err)
{
    if (replicas < 1 || replicas > n_nodes) {
        err_set(err, EINVAL, "default placement: %d replicas on %d nodes (replicas must "
                "be 1..number of nodes)", replicas, n_nodes);
        return NULL;
    }
    placement_t *self = s_new(n_layers, n_experts, n_nodes, "default placement", err);
    if (!self)
        return NULL;
    for (int l = 0; l < n_layers; l++)
        for (int e = 0; e < n_experts; e++)
            for (int j = 0; j < replicas; j++)
                s_add(self, s_slot(self, l, e), 1 + (int)(((long)e + j) % n_nodes));
    return self;
}

placement_t *placement_grouped(int n_layers, int n_experts, int n_groups, int n_nodes,
                               int replicas, err_t *err)
{
    if (n_groups <= 1) {
        err_set(err, EINVAL, "grouped placement: the model has no expert groups (n_group = "
                "%d); it needs a group-limited router (DeepSeek-V2/V3)", n_groups);
        return NULL;
    }
    if (n_experts < 1 || n_experts % n_groups != 0) {
        err_set(err, EINVAL, "grouped placement: %d groups do not divide %d experts",
                n_groups, n_experts);
        return NULL;
    }
    if (n_nodes > n_groups) {
        err_set(err, EINVAL, "grouped placement: %d nodes for %d expert groups (a group "
                "goes whole to one node, so at most %d nodes; use fewer nodes or a "
                "placement file)", n_nodes, n_groups, n_groups);
        return NULL;
    }
    if (replicas < 1 || replicas > n_nodes) {
        err_set(err, EINVAL, "grouped placement: %d replicas on %d nodes (replicas must "
                "be 1..number of nodes)", replicas, n_nodes);
        return NULL;
    }
    placement_t *self = s_new(n_layers, n_experts, n_nodes, "grouped placement", err);
    if (!self)
        return NULL;
    const int per_group = n_experts / n_groups;
    for (int l = 0; l < n_layers; l++)
        for (int e = 0; e < n_experts; e++) {
            /* floor(g N / G) spreads G groups over N <= G nodes evenly, keeping
             * neighbouring groups together, which keeps the file short. */
            int home = (int)((long)(e / per_group) * n_nodes / n_groups);
            for (int j = 0; j < replicas; j++)
                s_add(self, s_slot(self, l, e), 1 + (home + j) % n_nodes);
        }
    return self;
}

placement_t *placement_new_empty(int n_layers, int n_experts, int n_nodes, err_t *err)
{
    return s_new(n_layers, n_experts, n_nodes, "placement", err);
}

int placement_add(placement_t *self, int node, int layer, int expert, err_t *err)
{
    assert(self);
    if (node < 1 || node > self->n_nodes || layer < 0 || layer >= self->n_layers ||
        expert < 0 || expert >= self->n_experts)
        return err_set(err, EINVAL, "placement: node %d, layer %d, expert %d out of range",
                       node, layer, expert);
    const size_t s = s_slot(self, layer, expert);
    if (s_find(self, s, node) >= 0)
        return err_set(err, EEXIST, "placement: node %d hosts expert %d of layer %d twice",
                       node, expert, layer);
    s_add(self, s, node);
    return 0;
}

int placement_check(const placement_t *self, err_t *err)
{
    assert(self);
    for (int l = 0; l < self->n_layers; l++)
        for (int e = 0; e < self->n_experts; e++)
            if (self->n_hosts[s_slot(self, l, e)] == 0)
                return err_set(err, EINVAL, "placement: expert %d of layer %d is hosted by "
                               "no node", e, l);
    return 0;
}

/* ===== reading =============================================================== */

enum { S_MAX_TOKENS = 7 };  /* one more than an entry line has, to see extras */

typedef struct s_token {
    const char *p;
    size_t len;
} s_token_t;

/* State of one parse: where we are, for messages, and per-line scratch. */
typedef struct s_parser {
    const char *origin;
    int line;            /* 1-based number of the line being parsed */
    int nodes_line;      /* line of the `nodes` line, 0 before it */
    placement_t *p;      /* made when the `nodes` line is read */
    int *first_line;     /* [slots * n_nodes] line that added each host entry */
    bool *layer_set;     /* [n_layers] layers of the current line */
    bool *expert_set;    /* [n_experts] experts of the current line */
} s_parser_t;

static bool s_token_is(const s_token_t *t, const char *word)
{
    return t->len == strlen(word) && memcmp(t->p, word, t->len) == 0;
}

/* Splits [p, end) at spaces and tabs (a '\r' counts as a space); stops at a
 * '#'. Returns the token count, at most S_MAX_TOKENS. */
static int s_tokenize(const char *p, const char *end, s_token_t *tok)
{
    int n = 0;
    while (p < end && *p != '#' && n < S_MAX_TOKENS) {
        if (*p == ' ' || *p == '\t' || *p == '\r') {
            p++;
            continue;
        }
        const char *start = p;
        while (p < end && *p != ' ' && *p != '\t' && *p != '\r' && *p != '#')
            p++;
        tok[n++] = (s_token_t){start, (size_t)(p - start)};
    }
    return n;
}

/* A decimal of 1 to 18 digits in [p, p + len). */
static int s_number(const char *p, size_t len, long long *out)
{
    if (len == 0 || len > 18)
        return -1;
    long long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 0;
}

/* Parses a spec (`*` or `0-3,7`) of ids below max into set[0..max). `what`
 * is "layer" or "expert". */
static int s_spec(s_parser_t *ps, const s_token_t *t, int max, const char *what,
                  bool *set, err_t *err)
{
    memset(set, 0, (size_t)max * sizeof *set);
    if (s_token_is(t, "*")) {
        for (int i = 0; i < max; i++)
            set[i] = true;
        return 0;
    }
    const char *p = t->p, *end = t->p + t->len;
    while (p <= end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *item_end = comma ? comma : end;
        const char *dash = memchr(p, '-', (size_t)(item_end - p));
        long long lo, hi;
        if (dash ? s_number(p, (size_t)(dash - p), &lo) < 0 ||
                       s_number(dash + 1, (size_t)(item_end - dash - 1), &hi) < 0
                 : s_number(p, (size_t)(item_end - p), &lo) < 0)
            return err_set(err, EINVAL, "%s:%d: syntax error in %s list '%.*s': expected "
                           "'*' or ids and ranges like 0-3,7", ps->origin, ps->line, what,
                           (int)t->len, t->p);
        if (!dash)
            hi = lo;
        if (hi < lo)
            return err_set(err, EINVAL, "%s:%d: empty %s range '%.*s'", ps->origin,
                           ps->line, what, (int)(item_end - p), p);
        if (hi >= max)
            return err_set(err, EINVAL, "%s:%d: %s %lld out of range (the model has %d "
                           "%ss: 0..%d)", ps->origin, ps->line, what, hi, max, what,
                           max - 1);
        for (long long i = lo; i <= hi; i++) {
            if (set[i])
                return err_set(err, EINVAL, "%s:%d: %s %lld appears twice in '%.*s'",
                               ps->origin, ps->line, what, i, (int)t->len, t->p);
            set[i] = true;
        }
        if (!comma)
            break;
        p = comma + 1;
    }
    return 0;
}

/* `nodes N`: makes the placement and the per-line scratch. */
static int s_nodes_line(s_parser_t *ps, const s_token_t *tok, int n_tok, int n_layers,
                        int n_experts, int n_nodes, err_t *err)
{
    long long n;
    if (ps->nodes_line)
        return err_set(err, EINVAL, "%s:%d: 'nodes' given twice (first on line %d)",
                       ps->origin, ps->line, ps->nodes_line);
    if (n_tok != 2 || s_number(tok[1].p, tok[1].len, &n) < 0)
        return err_set(err, EINVAL, "%s:%d: syntax error: expected 'nodes N'", ps->origin,
                       ps->line);
    if (n < 1 || n > PLACEMENT_MAX_NODES)
        return err_set(err, EINVAL, "%s:%d: %lld nodes is outside 1..%d", ps->origin,
                       ps->line, n, PLACEMENT_MAX_NODES);
    if (n_nodes > 0 && n != n_nodes)
        return err_set(err, EINVAL, "%s:%d: the placement is for %lld nodes but the "
                       "cluster has %d", ps->origin, ps->line, n, n_nodes);
    ps->nodes_line = ps->line;
    ps->p = s_new(n_layers, n_experts, (int)n, ps->origin, err);
    if (!ps->p)
        return -1;
    size_t entries = (size_t)n_layers * (size_t)n_experts * (size_t)n;
    ps->first_line = mem_calloc(entries, sizeof(int));
    ps->layer_set = mem_calloc((size_t)n_layers, sizeof(bool));
    ps->expert_set = mem_calloc((size_t)n_experts, sizeof(bool));
    if (!ps->first_line || !ps->layer_set || !ps->expert_set)
        return err_set(err, ENOMEM, "%s: out of memory reading the placement", ps->origin);
    return 0;
}

/* `node <id> layers <spec> experts <spec>`: adds its pairs. */
static int s_node_line(s_parser_t *ps, const s_token_t *tok, int n_tok, err_t *err)
{
    placement_t *p = ps->p;
    long long node;
    if (!ps->nodes_line)
        return err_set(err, EINVAL, "%s:%d: 'node' before the 'nodes N' line", ps->origin,
                       ps->line);
    if (n_tok != 6 || !s_token_is(&tok[2], "layers") || !s_token_is(&tok[4], "experts") ||
        s_number(tok[1].p, tok[1].len, &node) < 0)
        return err_set(err, EINVAL, "%s:%d: syntax error: expected 'node <id> layers "
                       "<spec> experts <spec>'", ps->origin, ps->line);
    if (node < 1 || node > p->n_nodes)
        return err_set(err, EINVAL, "%s:%d: unknown node %lld (nodes are 1..%d)",
                       ps->origin, ps->line, node, p->n_nodes);
    if (s_spec(ps, &tok[3], p->n_layers, "layer", ps->layer_set, err) < 0 ||
        s_spec(ps, &tok[5], p->n_experts, "expert", ps->expert_set, err) < 0)
        return -1;
    for (int l = 0; l < p->n_layers; l++) {
        if (!ps->layer_set[l])
            continue;
        for (int e = 0; e < p->n_experts; e++) {
            if (!ps->expert_set[e])
                continue;
            size_t s = s_slot(p, l, e);
            int at = s_find(p, s, (int)node);
            if (at >= 0)
                return err_set(err, EINVAL, "%s:%d: node %lld lists expert %d of layer %d "
                               "twice (first on line %d)", ps->origin, ps->line, node, e,
                               l, ps->first_line[s * (size_t)p->n_nodes + (size_t)at]);
            ps->first_line[s * (size_t)p->n_nodes + (size_t)p->n_hosts[s]] = ps->line;
            s_add(p, s, (int)node);
        }
    }
    return 0;
}

static int s_parse(s_parser_t *ps, const char *text, size_t len, int n_layers,
                   int n_experts, int n_nodes, err_t *err)
{
    const char *p = text, *end = text + len;
    for (ps->line = 1; p < end; ps->line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        s_token_t tok[S_MAX_TOKENS];
        int n_tok = s_tokenize(p, line_end, tok);
        p = nl ? nl + 1 : end;
        if (n_tok == 0)
            continue;
        if (s_token_is(&tok[0], "nodes")) {
            if (s_nodes_line(ps, tok, n_tok, n_layers, n_experts, n_nodes, err) < 0)
                return -1;
        } else if (s_token_is(&tok[0], "node")) {
            if (s_node_line(ps, tok, n_tok, err) < 0)
                return -1;
        } else {
            return err_set(err, EINVAL, "%s:%d: syntax error: unknown keyword '%.*s' "
                           "(expected 'nodes' or 'node')", ps->origin, ps->line,
                           (int)tok[0].len, tok[0].p);
        }
    }
    if (!ps->nodes_line)
        return err_set(err, EINVAL, "%s: no 'nodes N' line", ps->origin);
    for (int l = 0; l < n_layers; l++)
        for (int e = 0; e < n_experts; e++)
            if (ps->p->n_hosts[s_slot(ps->p, l, e)] == 0)
                return err_set(err, EINVAL, "%s: expert %d of layer %d is hosted by no "
                               "node", ps->origin, e, l);
    return 0;
}

placement_t *placement_parse(const char *text, size_t len, const char *origin,
                             int n_layers, int n_experts, int n_nodes, err_t *err)
{
    if (n_layers < 1 || n_experts < 1 || n_nodes < 0) {
        err_set(err, EINVAL, "%s: bad model or cluster size (%d layers, %d experts, "
                "%d nodes)", origin, n_layers, n_experts, n_nodes);
        return NULL;
    }
    s_parser_t ps = {.origin = origin};
    placement_t *result = NULL;
    if (s_parse(&ps, text, len, n_layers, n_experts, n_nodes, err) == 0) {
        result = ps.p;
        ps.p = NULL;
    }
    mem_free(ps.expert_set);
    mem_free(ps.layer_set);
    mem_free(ps.first_line);
    placement_destroy(&ps.p);
    return result;
}

placement_t *placement_load(const char *path, int n_layers, int n_experts, int n_nodes,
                            err_t *err)
{
    placement_t *result = NULL;
    char *buf = NULL;
    size_t len = 0, cap = 4096;
    FILE *f = fopen(path, "rb");
    if (!f) {
        err_set(err, errno, "cannot open placement file %s: %s", path, strerror(errno));
        return NULL;
    }
    for (;;) {
        char *bigger = mem_realloc(buf, cap);
        if (!bigger) {
            err_set(err, ENOMEM, "%s: out of memory reading the placement", path);
            goto done;
        }
        buf = bigger;
        len += fread(buf + len, 1, cap - len, f);
        if (ferror(f)) {
            err_set(err, EIO, "cannot read placement file %s", path);
            goto done;
        }
        if (len > PLACEMENT_MAX_FILE) {
            err_set(err, EFBIG, "placement file %s is larger than %d bytes", path,
                    PLACEMENT_MAX_FILE);
            goto done;
        }
        if (len < cap)
            break;
        cap *= 2;
    }
    result = placement_parse(buf, len, path, n_layers, n_experts, n_nodes, err);

done:
    mem_free(buf);
    fclose(f);
    return result;
}

/* ===== writing =============================================================== */

/* True when node is the rank-th preference of expert e of layer l. */
static bool s_is_rank(const placement_t *self, int rank, int node, int l, int e)
{
    size_t s = s_slot(self, l, e);
    return self->n_hosts[s] > rank && self->hosts[s * (size_t)self->n_nodes + rank] == node;
}

/* True when layers a and b have the same set of experts at (rank, node). */
static bool s_same_set(const placement_t *self, int rank, int node, int a, int b)
{
    for (int e = 0; e < self->n_experts; e++)
        if (s_is_rank(self, rank, node, a, e) != s_is_rank(self, rank, node, b, e))
            return false;
    return true;
}

/* Writes `*` or runs like 0-3,7 of the ids i < n for which in(i). */
typedef bool (*s_member_fn)(const placement_t *self, int rank, int node, int fixed, int i);

static bool s_layer_member(const placement_t *self, int rank, int node, int layer, int i)
{
    return s_same_set(self, rank, node, layer, i);
}

static bool s_expert_member(const placement_t *self, int rank, int node, int layer, int i)
{
    return s_is_rank(self, rank, node, layer, i);
}

static void s_write_spec(FILE *out, const placement_t *self, s_member_fn in, int rank,
                         int node, int fixed, int n)
{
    int count = 0;
    for (int i = 0; i < n; i++)
        count += in(self, rank, node, fixed, i);
    if (count == n) {
        fputc('*', out);
        return;
    }
    const char *sep = "";
    for (int i = 0; i < n; i++) {
        if (!in(self, rank, node, fixed, i))
            continue;
        int j = i;
        while (j + 1 < n && in(self, rank, node, fixed, j + 1))
            j++;
        if (j > i)
            fprintf(out, "%s%d-%d", sep, i, j);
        else
            fprintf(out, "%s%d", sep, i);
        sep = ",";
        i = j;
    }
}

int placement_write(const placement_t *self, FILE *out, err_t *err)
{
    assert(self);
    assert(out);
    int max_rank = 0;
    for (size_t s = 0; s < (size_t)self->n_layers * (size_t)self->n_experts; s++)
        if (self->n_hosts[s] > max_rank)
            max_rank = self->n_hosts[s];
    fprintf(out, "# placement of %d layers x %d experts\n", self->n_layers,
            self->n_experts);
    fprintf(out, "nodes %d\n", self->n_nodes);
    /* All first choices come first, then all second choices, ...: reading the
     * file back lists each pair's nodes in the same order of preference. */
    for (int rank = 0; rank < max_rank; rank++) {
        for (int node = 1; node <= self->n_nodes; node++) {
            for (int l = 0; l < self->n_layers; l++) {
                bool empty = true, written = false;
                for (int e = 0; e < self->n_experts && empty; e++)
                    empty = !s_is_rank(self, rank, node, l, e);
                for (int k = 0; k < l && !written && !empty; k++)
                    written = s_same_set(self, rank, node, k, l);
                if (empty || written)
                    continue;
                fprintf(out, "node %d layers ", node);
                s_write_spec(out, self, s_layer_member, rank, node, l, self->n_layers);
                fputs(" experts ", out);
                s_write_spec(out, self, s_expert_member, rank, node, l, self->n_experts);
                fputc('\n', out);
            }
        }
    }
    if (fflush(out) != 0 || ferror(out))
        return err_set(err, EIO, "cannot write the placement: %s", strerror(errno));
    return 0;
}

/* ===== queries =============================================================== */

int placement_n_nodes(const placement_t *self)
{
    return self->n_nodes;
}

int placement_n_layers(const placement_t *self)
{
    return self->n_layers;
}

int placement_n_experts(const placement_t *self)
{
    return self->n_experts;
}

static bool s_in_range(const placement_t *self, int layer, int expert)
{
    return layer >= 0 && layer < self->n_layers && expert >= 0 && expert < self->n_experts;
}

int placement_nodes_of(const placement_t *self, int layer, int expert, const int **nodes)
{
    if (!s_in_range(self, layer, expert)) {
        *nodes = NULL;
        return 0;
    }
    size_t s = s_slot(self, layer, expert);
    *nodes = self->hosts + s * (size_t)self->n_nodes;
    return self->n_hosts[s];
}

bool placement_hosts(const placement_t *self, int node, int layer, int expert)
{
    if (node < 1 || node > self->n_nodes || !s_in_range(self, layer, expert))
        return false;
    return s_find(self, s_slot(self, layer, expert), node) >= 0;
}

int placement_node_count(const placement_t *self, int node)
{
    if (node < 1 || node > self->n_nodes)
        return 0;
    return self->n_hosted[node];
}

int placement_node_experts(const placement_t *self, int node, int32_t *layer,
                           int32_t *expert)
{
    int n = 0;
    for (int l = 0; l < self->n_layers; l++)
        for (int e = 0; e < self->n_experts; e++)
            if (placement_hosts(self, node, l, e)) {
                layer[n] = l;
                expert[n] = e;
                n++;
            }
    return n;
}

bool placement_node_hosts(void *ctx, int layer, int expert)
{
    const placement_node_t *me = ctx;
    return placement_hosts(me->placement, me->node, layer, expert);
}
