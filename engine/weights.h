/* weights: the float32 views of a checkpoint's weights that one process uses.
 *
 * A process states what it runs: the dense part (embeddings, attention, norms,
 * routers, LM head: the coordinator and moe-run) and/or some routed experts
 * (an expert node: those of its placement; moe-run: all). Only those tensors
 * are looked up, checked against the config's shapes and mapped; F32 weights
 * are used in place from the read-only mapping, so memory follows the share.
 *
 * The struct is public and read-only after weights_load(): the forward pass
 * reads its pointers on every step and needs no accessor calls for that.
 */
#ifndef MOE_ENGINE_WEIGHTS_H
#define MOE_ENGINE_WEIGHTS_H

#include <stdbool.h>

#include "core/err.h"
#include "model/config.h"
#include "model/safetensors.h"

typedef struct expert_weights {
    const float *gate;   /* (intermediate, hidden) */
    const float *up;     /* (intermediate, hidden) */
    const float *down;   /* (hidden, intermediate) */
} expert_weights_t;

typedef struct layer_weights {
    const float *attn_norm;    /* (hidden) */
    const float *q;            /* (heads * head_dim, hidden) */
    const float *k;            /* (kv_heads * head_dim, hidden) */
    const float *v;            /* (kv_heads * head_dim, hidden) */
    const float *o;            /* (hidden, heads * head_dim) */
    const float *ffn_norm;     /* (hidden) */
    const float *router;       /* (n_experts, hidden) */
    expert_weights_t *experts; /* [n_experts]; fields NULL where not hosted */
} layer_weights_t;

typedef struct weights {
    config_t cfg;
    bool has_dense;            /* embed .. router, lm_head loaded */
    const float *embed;        /* (vocab, hidden) */
    const float *final_norm;   /* (hidden) */
    const float *lm_head;      /* (vocab, hidden) */
    layer_weights_t *layers;   /* [n_layers] */
    safetensors_t *st;         /* owns mappings and converted buffers */
} weights_t;

/* Which experts a process hosts: return true to load expert e of layer l. */
typedef bool (*weights_hosts_fn)(void *ctx, int layer, int expert);

typedef struct weights_select {
    bool dense;                /* load the dense part */
    weights_hosts_fn hosts;    /* NULL: no routed experts */
    void *hosts_ctx;
} weights_select_t;

/* Loads config.json and the selected tensors of the checkpoint in dir.
 * NULL with errno/err set on any failure (the message names the file and the
 * tensor). Caller destroys. */
weights_t *weights_load(const char *dir, const weights_select_t *select, err_t *err);
void weights_destroy(weights_t **self_p);

/* A hosts function that hosts every expert (single-process mode). */
bool weights_hosts_all(void *ctx, int layer, int expert);

/* True when expert e of layer l is loaded. */
bool weights_has_expert(const weights_t *self, int layer, int expert);

#endif /* MOE_ENGINE_WEIGHTS_H */
