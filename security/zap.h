/* zap: the ZeroMQ authentication handler of one context, allowing CURVE
 * clients by public key.
 *
 * A CURVE server socket (keypair_set_server) asks the ZAP handler of its
 * context (ZeroMQ RFC 27, inproc://zeromq.zap.01) about every client that
 * completes the CURVE handshake; the client's connection delivers nothing
 * until the answer is "200". A zap_t answers from a fixed allow-list: the
 * public keys of the *.pub files of one folder (keypair.h), read once at
 * start. An unknown key gets "400": ZeroMQ closes that connection, and the
 * client's socket reports ZMQ_EVENT_HANDSHAKE_FAILED_AUTH (status 400). An
 * allowed client's messages carry its Z85 public key as the "User-Id"
 * property.
 *
 * The handler runs on a thread of its own because handshakes happen while
 * the owner's thread is busy (a forward step, a wait for experts): a request
 * answered only between steps would stall every new connection. The thread
 * owns the ZAP socket and the allow-list (immutable) and talks to nothing
 * but ZeroMQ; zap_destroy stops it through an inproc pipe.
 *
 * The handler must exist before any CURVE server socket of the context
 * binds: without one, libzmq lets every client in.
 *
 * Refused keys are logged to `log`, each distinct key once (up to
 * ZAP_MAX_LOGGED keys), later ones as a count (core/lograte) every
 * ZAP_LOG_INTERVAL_S seconds while they come: a client retrying in a loop
 * does not flood the log.
 */
#ifndef MOE_SECURITY_ZAP_H
#define MOE_SECURITY_ZAP_H

#include <stdint.h>
#include <stdio.h>

#include "core/err.h"

enum { ZAP_MAX_LOGGED = 64, ZAP_LOG_INTERVAL_S = 10 };

typedef struct zap zap_t;

/* Reads the allow-list from allow_dir (every *.pub file; none is an error:
 * nobody could connect) and starts the handler on zmq_ctx. `who` names the
 * owner in log lines ("moe-coordinator"); log may be NULL (quiet).
 * NULL with errno/err: the folder or a key file that cannot be read
 * (keypair_load_public's errors, naming the file), EADDRINUSE when the
 * context already has a handler, ENOMEM. */
zap_t *zap_new(void *zmq_ctx, const char *allow_dir, const char *who, FILE *log,
               err_t *err);

/* Stops the thread and closes its sockets; call before zmq_ctx_term of the
 * context. Accepts NULL and *self_p == NULL; sets *self_p to NULL. */
void zap_destroy(zap_t **self_p);

/* Keys in the allow-list. */
int zap_n_allowed(const zap_t *self);

/* Requests answered so far: allowed and refused (read after the handshakes
 * of interest are over; counted by the handler's thread). */
uint64_t zap_n_accepted(const zap_t *self);
uint64_t zap_n_refused(const zap_t *self);

#endif /* MOE_SECURITY_ZAP_H */
