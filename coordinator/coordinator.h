/* coordinator: one running coordinator, from its options to a served client
 * endpoint: loads the dense weights, the tokenizer (tokenizer.json, when the
 * model has one) and the EOS ids (genconfig.h), plans routes from the placement,
 * connects to every expert node and checks it (HELLO), then binds the client
 * endpoint. Used by moe-coordinator and by rank 0 of moe-mpi.
 */
#ifndef MOE_COORDINATOR_COORDINATOR_H
#define MOE_COORDINATOR_COORDINATOR_H

#include <signal.h>
#include <stdbool.h>

#include "engine/wformat.h"
#include "core/err.h"
#include "model/placement.h"
#include "proto/wire_tensor.h"

enum { COORDINATOR_MAX_NODES = 256 };
enum { COORDINATOR_SPARE_NODES = 8 };   /* default room for nodes that join (--max-nodes) */
enum {
    COORDINATOR_DEFAULT_MAX_SEQS = 16,  /* sequences generating at once */
    COORDINATOR_DEFAULT_QUEUE = 64,     /* requests waiting for a slot */
    COORDINATOR_DEFAULT_KV_MB = 1024,   /* KV cache of all sequences, MiB */
    COORDINATOR_DEFAULT_HEARTBEAT_MS = 1000, /* an idle node is pinged this often */
    COORDINATOR_DEFAULT_HEARTBEAT_MISSES = 3, /* unanswered periods before down */
};

typedef struct coordinator_opts {
    const char *model;                  /* model folder */
    const char *const *nodes;           /* (n_nodes) node endpoints; node i+1 is nodes[i] */
    int n_nodes;
    const char *placement_file;         /* NULL: placement_text, else the default split */
    const char *placement_text;         /* a placement already read (e.g. broadcast) */
    bool placement_groups;              /* no file or text: the grouped split
                                           (placement_grouped), not the default */
    int replicas;                       /* for the default or grouped split */
    const char *bind;                   /* client endpoint to bind */
    int reply_timeout_ms;
    int hello_timeout_ms;
    int heartbeat_ms;                   /* 0: COORDINATOR_DEFAULT_HEARTBEAT_MS */
    int heartbeat_misses;               /* 0: COORDINATOR_DEFAULT_HEARTBEAT_MISSES */
    int max_context;                    /* 0: the model's, at most 4096 */
    int prefill_rows;                   /* rows per forward step */
    int micro_batches;                  /* 1 or 2 (forward_set_moe_async); 0: 1 */
    int max_seqs;                       /* 0: COORDINATOR_DEFAULT_MAX_SEQS */
    int queue_limit;                    /* 0: COORDINATOR_DEFAULT_QUEUE */
    int kv_memory_mb;                   /* 0: COORDINATOR_DEFAULT_KV_MB */
    int deadline_ms;                    /* per request unless it gives one; 0: none */
    /* CURVE (docs/DEPLOY.md, "Security"): all three, or none for plain TCP. */
    const char *curve_key;              /* this coordinator's NAME.key */
    const char *curve_nodes;            /* folder of node-I.pub: node I's public key */
    const char *curve_clients;          /* folder of the *.pub of the allowed clients */
    int max_tokens_limit;               /* max_tokens per GENERATE; 0: the context only */
    int max_requests_per_client;        /* GENERATEs queued + running per client; 0: any */
    const char *http;                   /* HOST:PORT of the HTTP API; NULL: none */
    const char *api_key;                /* the HTTP API's bearer key; NULL: none */
    bool preload;                       /* read the dense weights into memory at start
                                           (weights_preload), progress on stderr */
    wformat_t format;                   /* --dtype / --quantization; zero: as stored */
    wire_tensor_format_t wire;          /* --wire: the rows' format to the nodes and
                                           back; zero: f32 */
    int load_half_life_s;               /* of the load measurement; 0: the default */
    int rebalance_every_s;              /* automatic rebalance checks; 0: never */
    int rebalance_threshold_pct;        /* ... when the imbalance passes this (115: 1.15x) */
    int rebalance_redundant;            /* ... with these redundant copies */
    int move_timeout_ms;                /* a gaining node must be ready by then; 0: default */
    int max_nodes;                      /* nodes the cluster may grow to; 0: the nodes
                                           given + COORDINATOR_SPARE_NODES */
} coordinator_opts_t;

typedef struct coordinator coordinator_t;

/* Starts a coordinator; returns once every node answered and the client
 * endpoint is bound. *stop (may be NULL) aborts a start waiting for nodes.
 * NULL with errno/err (the message names the node or file at fault). */
coordinator_t *coordinator_start(const coordinator_opts_t *opts,
                                 const volatile sig_atomic_t *stop, err_t *err);
void coordinator_destroy(coordinator_t **self_p);

/* The bound client endpoint (borrowed). */
const char *coordinator_endpoint(const coordinator_t *self);

/* The HTTP API's URL ("http://HOST:PORT"), or NULL without --http (borrowed). */
const char *coordinator_http_url(const coordinator_t *self);

/* Serves clients until *stop becomes non-zero. 0, or -1 with errno/err. */
int coordinator_run(coordinator_t *self, volatile sig_atomic_t *stop, err_t *err);

#endif /* MOE_COORDINATOR_COORDINATOR_H */
