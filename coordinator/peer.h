/* peer: the coordinator's link to one expert node.
 *
 * A DEALER socket connected to the node's ROUTER endpoint, with a monitor so
 * that a dropped connection marks the node down at once instead of after a
 * reply timeout. Holds what the coordinator knows of the node: up or down
 * (and why), its hosted experts, batch count and round-trip times. Owned by
 * the coordinator's one thread.
 */
#ifndef MOE_COORDINATOR_PEER_H
#define MOE_COORDINATOR_PEER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/err.h"
#include "proto/data_plane.h"
#include "security/keypair.h"

typedef struct peer peer_t;

/* Connects to endpoint (does not wait for the node). With key (may be NULL:
 * plain) the link is CURVE, as a client with that pair (borrowed, read here
 * only) towards a node whose public key is node_public (Z85). NULL with
 * errno/err. */
peer_t *peer_new(void *zmq_ctx, int node_id, const char *endpoint,
                 const wire_limits_t *lim, const keypair_t *key, const char *node_public,
                 err_t *err);
void peer_destroy(peer_t **self_p);

/* Handshake: sends HELLO until a HELLO_REPLY arrives or timeout_ms passes,
 * then checks the node's id, its model id against model_id and that it hosts
 * every (want_layer[i], want_expert[i]) the placement gives it. Marks the
 * node up on success; -1 with errno/err (ETIMEDOUT, EPROTO; EACCES when the
 * node refused the coordinator's CURVE key) otherwise. */
int peer_hello(peer_t *self, wire_inbox_t *inbox, const char *model_id,
               const int32_t *want_layer, const int32_t *want_expert, int n_want,
               int timeout_ms, err_t *err);

/* Sends a data-plane message without blocking, adding the bytes sent to
 * *sent_bytes (may be NULL); a node that cannot take it (no live connection)
 * is marked down and -1/EHOSTUNREACH returned. */
int peer_send(peer_t *self, const wire_data_t *msg, uint64_t *sent_bytes, err_t *err);

/* Reads pending connection events; marks the node down when its connection
 * dropped. Returns true when the node is (still) up. */
bool peer_check_link(peer_t *self);

/* Marks the node down (a no-op for the state when it is down already); the
 * first time logs one line. */
void peer_mark_down(peer_t *self, const char *why);

/* Heartbeat period (0: no heartbeats and no rejoin), periods without an answer
 * before a node is marked down, and where up/down changes are logged (NULL:
 * nowhere). Before this call the peer has no heartbeats. */
void peer_set_health(peer_t *self, int heartbeat_ms, int misses, FILE *log);

/* Between calls: marks a node down whose heartbeats went unanswered, pings an
 * idle up node, sends a rejoin HELLO to a down one. now: timer_now(). */
void peer_tick(peer_t *self, double now);

/* Every message received from the node that the dispatch does not consume
 * goes here (and may go here after it does): any message shows the node is
 * alive; a HELLO_REPLY to a rejoin HELLO that passes the checks of peer_hello
 * marks it up again. */
void peer_handle(peer_t *self, const wire_data_t *msg, double now);
void peer_record_batch(peer_t *self, double rtt_seconds);

/* ---- moves (coordinator/mover.h) ---- */

typedef enum peer_control {
    PEER_CONTROL_NONE = 0,     /* nothing asked */
    PEER_CONTROL_WAITING,      /* asked, no answer yet */
    PEER_CONTROL_DONE,         /* answered PLACE_REPLY */
    PEER_CONTROL_FAILED,       /* answered ERROR (why in peer_control_state) */
} peer_control_t;

/* Sends PLACE or DROP carrying the n pairs (layer[i], expert[i]); the
 * node's answer (PLACE_REPLY or ERROR with its request id) is kept for
 * peer_control_state, replacing any earlier one. -1 with EHOSTUNREACH when
 * the node is down or cannot take it. */
int peer_control_send(peer_t *self, wire_data_type_t type, const int32_t *layer,
                      const int32_t *expert, int n, err_t *err);

/* The state of the last PLACE or DROP; *why (may be NULL) gets the node's
 * error text when FAILED (borrowed). */
peer_control_t peer_control_state(const peer_t *self, const char **why);

/* The pairs the node must host to rejoin (peer_hello's want lists), after a
 * move changed them: borrowed, must live until the next call. */
void peer_set_want(peer_t *self, const int32_t *layer, const int32_t *expert, int n);

/* A node joining a running cluster (moe-client node add): instead of
 * peer_hello's blocking handshake, the peer starts down ("joining") and the
 * rejoin machinery (peer_tick's HELLOs, peer_handle) brings it up once it
 * answers as node `node_id` of model_id hosting nothing it must; set its
 * health (peer_set_health) too. */
void peer_expect_join(peer_t *self, const char *model_id);

/* What the node said in its last HELLO_REPLY or PLACE_REPLY: its memory
 * budget for experts and one expert's bytes (0: none / unknown). */
uint64_t peer_memory_budget(const peer_t *self);
uint64_t peer_expert_bytes(const peer_t *self);

/* How many coordinators the node said it serves (expert_node/roster.h), in
 * its last HELLO_REPLY, HEARTBEAT_REPLY or PLACE_REPLY; 0: it did not say. */
int peer_n_coordinators(const peer_t *self);

void *peer_socket(const peer_t *self);          /* the DEALER (borrowed) */
void *peer_monitor_socket(const peer_t *self);  /* link events (borrowed) */
int peer_node_id(const peer_t *self);
const char *peer_endpoint(const peer_t *self);
bool peer_is_up(const peer_t *self);
const char *peer_last_error(const peer_t *self); /* "" when none */
/* What the node said in its last HELLO_REPLY it holds its weights as, e.g.
 * "q4_0 experts, 120.5 MiB"; "" when it did not say. */
const char *peer_weights(const peer_t *self);
uint64_t peer_batches(const peer_t *self);
double peer_rtt_last_ms(const peer_t *self);
double peer_rtt_mean_ms(const peer_t *self);

#endif /* MOE_COORDINATOR_PEER_H */
