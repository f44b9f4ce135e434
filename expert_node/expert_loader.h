/* expert_loader: loads experts a node gains, on a thread of its own, while
 * the node's loop goes on serving.
 *
 * The thread runs weights_load for exactly the (layer, expert) pairs asked
 * (only those tensors are looked up and mapped, converted as --dtype /
 * --quantization ask) and reads them into memory (weights_preload), then
 * says it is done with one message on an inproc PAIR socket that the
 * loop polls; the loop then takes the weights with expert_loader_finish.
 * The thread owns nothing the loop uses until then (threads talk through
 * ZeroMQ only).
 */
#ifndef MOE_EXPERT_NODE_EXPERT_LOADER_H
#define MOE_EXPERT_NODE_EXPERT_LOADER_H

#include <stdint.h>

#include "core/err.h"
#include "engine/weights.h"

typedef struct expert_loader expert_loader_t;

/* Starts loading the n pairs (layer[i], expert[i]) (copied) of the model in
 * model_dir (copied), in format. zmq_ctx: the node's context (borrowed; its
 * inproc socket lives in it). delay_ms: wait this long before loading (0:
 * none; a slow disk for tests). NULL with errno/err (ENOMEM, EAGAIN when no
 * thread can be started). */
expert_loader_t *expert_loader_start(void *zmq_ctx, const char *model_dir,
                                     const int32_t *layer, const int32_t *expert, int n,
                                     wformat_t format, int delay_ms, err_t *err);

/* The socket that becomes readable when the load is over (borrowed). */
void *expert_loader_socket(const expert_loader_t *self);

/* Once that socket is readable: waits for the thread, destroys the loader
 * (*self_p NULL) and returns the weights (caller destroys), or NULL with the
 * load's errno/err. */
weights_t *expert_loader_finish(expert_loader_t **self_p, err_t *err);

/* Waits for the thread and discards what it loaded; accepts NULL. */
void expert_loader_destroy(expert_loader_t **self_p);

#endif /* MOE_EXPERT_NODE_EXPERT_LOADER_H */
