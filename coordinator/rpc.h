/* rpc: the ZeroMQ front end of the server (docs/PROTOCOL.md, section 5).
 *
 * One ROUTER socket serves any number of connected clients. GENERATE requests
 * (prompt ids, or text tokenized by the server) go to the server (server.h),
 * whose scheduler batches all running sequences into each forward step; each
 * token leaves as a TOKENS reply as soon as it is made, then a final one with
 * counts and timings. A client that has gone is noticed on the next reply
 * (ROUTER_MANDATORY) and its sequence freed. LOGITS runs between steps;
 * STATUS renders the server's status. Every accepted request gets its answer
 * or one ERROR_REPLY; a malformed request gets an ERROR_REPLY and the loop
 * goes on. Runs on the server's loop thread.
 */
#ifndef MOE_COORDINATOR_RPC_H
#define MOE_COORDINATOR_RPC_H

#include "coordinator/server.h"
#include "core/err.h"
#include "security/keypair.h"

typedef struct rpc_config {
    const char *bind;             /* client endpoint to bind, e.g. tcp://127.0.0.1:* */
    const keypair_t *curve_key;   /* NULL: plain; else the endpoint is a CURVE
                                     server with this pair (borrowed; the
                                     context's ZAP handler allows the clients) */
} rpc_config_t;

typedef struct rpc rpc_t;

/* Binds the endpoint and registers with server (borrowed, must outlive the
 * rpc_t). NULL with errno/err. */
rpc_t *rpc_new(void *zmq_ctx, server_t *server, const rpc_config_t *conf, err_t *err);
void rpc_destroy(rpc_t **self_p);

/* The bound client endpoint, e.g. "tcp://127.0.0.1:40123" (borrowed). */
const char *rpc_endpoint(const rpc_t *self);

#endif /* MOE_COORDINATOR_RPC_H */
