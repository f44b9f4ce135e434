/* localcluster: a cluster of real processes for a test, through
 * cluster/local.sh (coordinator and expert nodes on loopback), and small
 * helpers to talk to it over the real client protocol. */
#ifndef MOE_TESTS_LOCALCLUSTER_H
#define MOE_TESTS_LOCALCLUSTER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto/client_rpc.h" /* wire_request_t, wire_reply_t */
#include "proto/wire.h"

/* A cluster one test case starts: its run folder (under the test's scratch
 * folder), its model and its client endpoint. */
typedef struct localcluster {
    char run_dir[1024];
    char model[1024];
    char *endpoint;         /* malloc'd */
} localcluster_t;

/* Starts a cluster of `nodes` nodes (localcluster_up) of model, a fixture
 * name (under fixture_root()) or, with a '/', a folder, in tmp/name, with
 * extra options for local.sh (may be NULL). Fails the test when it cannot. */
void localcluster_start(localcluster_t *lc, const char *model, int nodes, const char *tmp,
                        const char *name, const char *extra);

/* Stops it (localcluster_down) and frees the endpoint. */
void localcluster_stop(localcluster_t *lc);

/* Starts `local.sh up --model model --nodes nodes --run-dir run_dir extra`
 * with the programs of $MOE_BIN; returns the client endpoint (malloc'd).
 * Fails the test when the start fails. */
char *localcluster_up(const char *model, int nodes, const char *run_dir, const char *extra);

/* Stops it; under the sanitizers, a report in any process's log (a memory
 * error, or a leak at exit) fails the test. */
void localcluster_down(const char *run_dir);

/* The pid in run_dir/<name>.pid (e.g. "coordinator"), or fails the test. */
pid_t localcluster_pid(const char *run_dir, const char *name);

/* Resident memory of a process, bytes (0 when unknown). */
size_t localcluster_rss(pid_t pid);

/* The scheduler's state from a STATUS request. */
typedef struct localcluster_sched {
    int running, queued;
    uint64_t kv_bytes;
} localcluster_sched_t;
void localcluster_sched(const char *endpoint, localcluster_sched_t *out);

/* A DEALER socket connected to endpoint, with a 20 s receive timeout. */
void *localcluster_dealer(void *zmq_ctx, const char *endpoint);

/* One client connection over the raw client protocol: its own ZeroMQ
 * context, a DEALER (localcluster_dealer) and an inbox without limits. */
typedef struct localcluster_conn {
    void *ctx;
    void *sock;
    wire_inbox_t *inbox;
} localcluster_conn_t;

/* Opens conn to endpoint, or fails the test. */
void localcluster_open(localcluster_conn_t *conn, const char *endpoint);

/* Closes what localcluster_open opened. */
void localcluster_close(localcluster_conn_t *conn);

/* Sends req; fails the test when it cannot. */
void localcluster_send(localcluster_conn_t *conn, const wire_request_t *req);

/* The next reply (valid until the next receive), or fails the test naming
 * what: "what: <error>". */
void localcluster_recv(localcluster_conn_t *conn, wire_reply_t *rep, const char *what);

/* A STATUS request (request_id) and its reply in *rep, or fails the test. */
void localcluster_status(localcluster_conn_t *conn, uint64_t request_id, wire_reply_t *rep);

#endif /* MOE_TESTS_LOCALCLUSTER_H */
