/* endpoint: the one reading of the endpoints people type, for everything that
 * binds or connects a ZeroMQ socket (the client library and moe-client, the
 * coordinator's --bind and --node, moe-expert's --bind, moe-mpi).
 *
 * ZeroMQ's own forms ("tcp://host:port", "ipc://path", "inproc://name") pass
 * as they are; "host:port" and "[ipv6]:port" (port a number or "*") mean
 * "tcp://host:port". A bracketed IPv6 host turns on ZMQ_IPV6 for the socket.
 */
#ifndef MOE_CORE_ENDPOINT_H
#define MOE_CORE_ENDPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "core/err.h"

enum { ENDPOINT_MAX = 512 }; /* bytes of a normalised endpoint, NUL included */

/* The forms accepted, for messages. */
#define ENDPOINT_FORMS "tcp://HOST:PORT, HOST:PORT or [IPV6]:PORT"

/* text in ZeroMQ's form into out (size bytes). 0, or -1 with EINVAL and err
 * ("'TEXT' is not an endpoint: give tcp://HOST:PORT, ...") when text is
 * neither form or does not fit; out is untouched then. */
int endpoint_normalize(const char *text, char *out, size_t size, err_t *err);

/* zmq_connect / zmq_bind of the normalised text: 0, or -1 with errno (EINVAL
 * for text that is no endpoint) and err = "cannot connect to|bind TEXT: ...",
 * naming the accepted forms when the text or ZeroMQ found it invalid. */
int endpoint_connect(void *socket, const char *text, err_t *err);
int endpoint_bind(void *socket, const char *text, err_t *err);

/* Whether a bound endpoint is reachable from this host only: tcp:// on
 * 127.x.x.x, ::1 or localhost, or ipc:// and inproc://. "*", 0.0.0.0 and
 * every other address or interface name are not. */
bool endpoint_is_local(const char *endpoint);

/* Writes one warning line to log ("PROG: warning: ENDPOINT is bound in plain
 * TCP without CURVE: ...") when endpoint is not local and curve is false;
 * nothing otherwise. Called by every program that binds: moe-coordinator,
 * moe-expert, moe-mpi. */
void endpoint_warn_plain(FILE *log, const char *prog, const char *endpoint, bool curve);

#endif /* MOE_CORE_ENDPOINT_H */
