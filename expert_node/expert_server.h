/* expert_server: one expert node's data plane.
 *
 * Loads the routed experts that the placement gives this node (only those,
 * held as the checkpoint stores them in its read-only mapping, or as
 * --dtype / --quantization convert them: resident memory follows the node's
 * share, at the bytes of its format), binds a ROUTER socket and serves
 * any number of coordinators on it from one poll loop on the calling thread;
 * the compute pool runs the products. EXPERT_REQUESTs for the same layer that
 * are waiting together (from several coordinators, or one's micro-batches)
 * run as one computation and each gets its own rows back, bit for bit what
 * it would get alone (expert_node/expert_batch.h). All
 * buffers (inbox, expert scratch, reply rows) are sized once from the model
 * and max_rows, so serving a request does not allocate.
 *
 * Messages (proto/dataplane.proto, docs/PROTOCOL.md), each reply echoing the
 * request id:
 *   HELLO          -> HELLO_REPLY: node id, model id, hosted (layer, expert)s,
 *                     and how many coordinators it serves (expert_node/roster.h;
 *                     HEARTBEAT_REPLY and PLACE_REPLY carry the count too)
 *   EXPERT_REQUEST -> EXPERT_REPLY: one partial-sum row per request row,
 *                     sum over its assignments of weight * expert_ffn(row),
 *                     and the seconds spent computing
 *                     (with per_assignment: one row per assignment, its weight
 *                     times its expert's output)
 *   HEARTBEAT      -> HEARTBEAT_REPLY
 *   PLACE          -> the pairs not held yet are loaded in the background
 *                     (expert_loader) while requests go on being served, then
 *                     PLACE_REPLY with every pair held; ERR_NO_ROOM when they
 *                     would pass --memory-budget or cannot be loaded, ERR_BUSY
 *                     while another PLACE loads
 *   DROP           -> the pairs are released (expert_set), PLACE_REPLY
 *                     (PLACE and DROP are refused, ERR_UNEXPECTED, while the
 *                     node serves more than one coordinator)
 *   SHUTDOWN       -> no reply; expert_server_run returns 0
 * A message that fails wire's checks gets an ERROR with wire's code; a
 * request naming a (layer, expert) not hosted here gets ERR_UNKNOWN_EXPERT;
 * a type a node does not accept gets ERR_UNEXPECTED (an ERROR is only
 * logged, never answered, so that two peers cannot trade errors forever).
 * After any of these the node keeps serving.
 */
#ifndef MOE_EXPERT_NODE_EXPERT_SERVER_H
#define MOE_EXPERT_NODE_EXPERT_SERVER_H

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>

#include "core/err.h"
#include "engine/wformat.h"
#include "model/placement.h"

enum { EXPERT_SERVER_POLL_MS = 100 };  /* longest wait before the stop flag is seen */
enum { EXPERT_SERVER_MAX_ROWS = 4096 }; /* default rows per EXPERT_REQUEST */
/* A coordinator silent this long no longer counts as served (its idle
 * heartbeats come every --heartbeat-ms, 1 s by default). */
#define EXPERT_SERVER_ROSTER_WINDOW_S 10.0

typedef struct expert_server expert_server_t;

typedef struct expert_server_opts {
    const char *model_dir;         /* Hugging Face model folder */
    const placement_t *placement;  /* borrowed, read during expert_server_new only;
                                      its layer and expert counts match the model */
    int node_id;                   /* this node, 1..placement_n_nodes */
    const char *bind;              /* ZeroMQ endpoint, e.g. "tcp://127.0.0.1:*" */
    int max_rows;                  /* rows per EXPERT_REQUEST, >= 1; assignments
                                      are limited to max_rows * top_k */
    FILE *log;                     /* one line per rejected message; NULL: quiet */
    const char *curve_key;         /* NULL: plain TCP; else this node's NAME.key:
                                      the socket is a CURVE server ... */
    const char *curve_coordinators; /* ... allowing the *.pub keys of this folder */
    bool preload;                  /* read the hosted weights into memory before
                                      expert_server_new returns (weights_preload),
                                      progress on log */
    wformat_t format;              /* --dtype / --quantization; zero: as stored */
    uint64_t memory_budget;        /* bytes of experts it may hold; 0: no limit */
    int place_delay_ms;            /* a PLACE waits this long before loading (tests) */
} expert_server_opts_t;

/* Loads the node's experts and binds its socket. Caller destroys. NULL with
 * errno/err on failure: EINVAL (node id outside the placement, a placement
 * for another model shape, max_rows out of range), the errors of
 * weights_load (a missing or malformed model names the file), ENOMEM, the
 * errors of a key file or allowed-keys folder (keypair.h, zap.h), or the
 * ZeroMQ error of binding (e.g. EADDRINUSE), naming the endpoint. */
expert_server_t *expert_server_new(const expert_server_opts_t *opts, err_t *err);

/* Closes the socket (pending replies are dropped) and releases the weights.
 * Accepts NULL and a NULL *self_p; sets *self_p to NULL. */
void expert_server_destroy(expert_server_t **self_p);

/* The endpoint the socket is bound to, with the port the system chose for a
 * `*` port, e.g. "tcp://127.0.0.1:41233" (borrowed, valid while self lives). */
const char *expert_server_endpoint(const expert_server_t *self);

/* How many (layer, expert) pairs this node hosts. */
int expert_server_n_hosted(const expert_server_t *self);

/* What the node's weights are held as and their size, e.g. "q4_0 experts,
 * 123.4 MiB" (weights_describe; borrowed, valid while self lives). */
const char *expert_server_weights_text(const expert_server_t *self);

/* Serves until a SHUTDOWN message arrives or *interrupted becomes non-zero
 * (checked at least every EXPERT_SERVER_POLL_MS; a signal that interrupts the
 * poll is seen at once): returns 0. Returns -1 with errno/err only when the
 * socket itself fails (e.g. ETERM); a bad message never ends the loop. */
int expert_server_run(expert_server_t *self, const volatile sig_atomic_t *interrupted,
                      err_t *err);

#endif /* MOE_EXPERT_NODE_EXPERT_SERVER_H */
