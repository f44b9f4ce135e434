/* peer: see peer.h. */
#include "coordinator/peer.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "core/endpoint.h"
#include "core/mem.h"
#include "core/timer.h"

enum { HELLO_RESEND_MS = 200 }; /* a node still loading misses early HELLOs */

/* Control messages (HELLO, HEARTBEAT) carry ids with the top bit set, so that
 * they never collide with the dispatch's EXPERT_REQUEST ids. */
#define PEER_CONTROL_ID (UINT64_C(1) << 63)

struct peer {
    int node_id;
    char endpoint[WIRE_MAX_TEXT];
    void *socket;                 /* DEALER connected to the node */
    wire_outbox_t *outbox;        /* EXPERT_REQUESTs sent without allocating */
    void *monitor;                /* PAIR receiving the DEALER's link events */
    bool up;
    char last_error[WIRE_MAX_TEXT];
    uint64_t batches;
    double rtt_last;              /* seconds */
    double rtt_total;             /* seconds, over `batches` */
    uint64_t hello_id;            /* request ids of handshakes and heartbeats */
    /* Health (peer_set_health): heartbeats while up, HELLOs while down. */
    int heartbeat_ms;             /* 0: no heartbeats, no rejoin */
    int misses;                   /* unanswered heartbeat periods before down */
    FILE *log;                    /* one line per up/down change; NULL: quiet */
    double last_seen;             /* timer_now() of the last message from the node */
    double ping_unanswered;       /* when the first unanswered HEARTBEAT went; 0: none */
    double last_ping;             /* when the last HEARTBEAT or rejoin HELLO went */
    uint64_t hello_floor;         /* a HELLO_REPLY above this id may bring it back */
    double down_since;            /* timer_now() when marked down */
    char model_id[WIRE_MAX_TEXT]; /* what peer_hello checked, kept for rejoins */
    char weights[WIRE_MAX_TEXT];  /* what its last HELLO_REPLY said it holds */
    const int32_t *want_layer, *want_expert; /* borrowed from peer_hello's caller */
    int n_want;
    uint64_t memory_budget;       /* bytes for experts the node said it has; 0 none */
    uint64_t expert_bytes;        /* bytes of one of its experts; 0 unknown */
    int n_coordinators;           /* how many coordinators it said it serves; 0 unknown */
    uint64_t control_id;          /* request id of the last PLACE / DROP */
    bool replacing;               /* rejoining: a PLACE of its wanted pairs is loading */
    peer_control_t control;
    char control_why[WIRE_MAX_TEXT];
    bool curve;                   /* the link is CURVE */
    bool handshaken;              /* a CURVE handshake succeeded */
};

static int s_setsockopt_int(void *socket, int option, int value)
{
    return zmq_setsockopt(socket, option, &value, sizeof value);
}

peer_t *peer_new(void *zmq_ctx, int node_id, const char *endpoint,
                 const wire_limits_t *lim, const keypair_t *key, const char *node_public,
                 err_t *err)
{
    static int s_monitor_seq; /* unique inproc names within the process */
    char monitor_ep[64];
    peer_t *self = mem_calloc(1, sizeof *self);
    if (!self) {
        err_set(err, ENOMEM, "out of memory for node %d", node_id);
        return NULL;
    }
    self->node_id = node_id;
    snprintf(self->endpoint, sizeof self->endpoint, "%s", endpoint);
    snprintf(self->last_error, sizeof self->last_error, "not connected yet");
    if (!(self->outbox = wire_outbox_new(lim, err)))
        goto fail;
    self->socket = zmq_socket(zmq_ctx, ZMQ_DEALER);
    if (!self->socket ||
        s_setsockopt_int(self->socket, ZMQ_LINGER, 0) < 0 ||
        /* Queue only on live connections, so a send to a dead node fails now. */
        s_setsockopt_int(self->socket, ZMQ_IMMEDIATE, 1) < 0 ||
        /* ... and neither a send nor a receive ever blocks the coordinator. */
        s_setsockopt_int(self->socket, ZMQ_SNDTIMEO, 0) < 0 ||
        s_setsockopt_int(self->socket, ZMQ_RCVTIMEO, 0) < 0 ||
        s_setsockopt_int(self->socket, ZMQ_RECONNECT_IVL, 100) < 0 ||
        s_setsockopt_int(self->socket, ZMQ_RECONNECT_IVL_MAX, 2000) < 0 ||
        wire_socket_set_limit(self->socket, lim, err) < 0) {
        err_set(err, errno, "node %d: cannot create its socket: %s", node_id,
                zmq_strerror(errno));
        goto fail;
    }
    self->curve = key != NULL;
    if (key && keypair_set_client(self->socket, key, node_public, err) < 0) {
        err_wrap(err, "node %d", node_id);
        goto fail;
    }
    snprintf(monitor_ep, sizeof monitor_ep, "inproc://peer-monitor-%d", ++s_monitor_seq);
    /* The handshake events tell a refused key from a silent node. */
    if (zmq_socket_monitor(self->socket, monitor_ep,
                           ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED |
                           ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                           ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                           ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) < 0 ||
        !(self->monitor = zmq_socket(zmq_ctx, ZMQ_PAIR)) ||
        s_setsockopt_int(self->monitor, ZMQ_LINGER, 0) < 0 ||
        zmq_connect(self->monitor, monitor_ep) < 0) {
        err_set(err, errno, "node %d: cannot monitor its socket: %s", node_id,
                zmq_strerror(errno));
        goto fail;
    }
    if (endpoint_connect(self->socket, endpoint, err) < 0) {
        err_wrap(err, "node %d", node_id);
        goto fail;
    }
    return self;

fail:
    peer_destroy(&self);
    return NULL;
}

void peer_destroy(peer_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    peer_t *self = *self_p;
    int saved = errno;
    if (self->socket)
        zmq_socket_monitor(self->socket, NULL, 0);
    if (self->monitor)
        zmq_close(self->monitor);
    if (self->socket)
        zmq_close(self->socket);
    wire_outbox_destroy(&self->outbox);
    mem_free(self);
    *self_p = NULL;
    errno = saved;
}

static int s_check_pairs(peer_t *self, const wire_data_t *reply, const int32_t *want_layer,
                         const int32_t *want_expert, int n_want, err_t *err);

/* True when the pair (layer, expert) is among the node's hosted pairs. */
static bool s_hosts(const wire_data_t *reply, int32_t layer, int32_t expert)
{
    for (int i = 0; i < reply->n_hosted; i++)
        if (reply->hosted_layer[i] == layer && reply->hosted_expert[i] == expert)
            return true;
    return false;
}

static int s_check_hello(peer_t *self, const wire_data_t *reply, const char *model_id,
                         const int32_t *want_layer, const int32_t *want_expert,
                         int n_want, err_t *err)
{
    if (reply->type == WIRE_ERROR)
        return err_set(err, EPROTO, "node %d (%s) refused the handshake: %s: %s",
                       self->node_id, self->endpoint,
                       wire_data_error_name(reply->error_code),
                       reply->error_message ? reply->error_message : "");
    if (reply->type != WIRE_HELLO_REPLY)
        return err_set(err, EPROTO, "node %d (%s) answered HELLO with message type %d",
                       self->node_id, self->endpoint, (int)reply->type);
    if (reply->node_id != self->node_id)
        return err_set(err, EPROTO, "the node at %s says it is node %d, expected %d",
                       self->endpoint, reply->node_id, self->node_id);
    if (!reply->model_id || strcmp(reply->model_id, model_id) != 0)
        return err_set(err, EPROTO, "node %d (%s) loaded model %s, the coordinator %s",
                       self->node_id, self->endpoint,
                       reply->model_id ? reply->model_id : "(none)", model_id);
    return s_check_pairs(self, reply, want_layer, want_expert, n_want, err);
}

/* The node hosts every wanted pair (ENOENT naming the first it lacks). */
static int s_check_pairs(peer_t *self, const wire_data_t *reply, const int32_t *want_layer,
                         const int32_t *want_expert, int n_want, err_t *err)
{
    for (int i = 0; i < n_want; i++)
        if (!s_hosts(reply, want_layer[i], want_expert[i]))
            return err_set(err, ENOENT, "node %d (%s) does not host expert %d of layer %d "
                           "that the placement gives it", self->node_id, self->endpoint,
                           (int)want_expert[i], (int)want_layer[i]);
    return 0;
}

/* Takes one link event from the monitor without waiting: its id and value
 * (0 when the frame is short). False when none is waiting. */
static bool s_link_event(peer_t *self, uint16_t *id, uint32_t *value)
{
    zmq_msg_t event, address;
    zmq_msg_init(&event);
    if (zmq_msg_recv(&event, self->monitor, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&event);
        return false;
    }
    *id = 0;
    *value = 0;
    const size_t size = zmq_msg_size(&event);
    if (size >= sizeof *id)
        memcpy(id, zmq_msg_data(&event), sizeof *id);
    if (size >= sizeof *id + sizeof *value)
        memcpy(value, (const char *)zmq_msg_data(&event) + sizeof *id, sizeof *value);
    zmq_msg_close(&event);
    zmq_msg_init(&address); /* second frame: the endpoint */
    zmq_msg_recv(&address, self->monitor, ZMQ_DONTWAIT);
    zmq_msg_close(&address);
    return true;
}

/* Reads the link events that came during the handshake: -1 with err when
 * the node refused our key, else notes in why what went wrong (if anything). */
static int s_hello_events(peer_t *self, char *why, size_t why_size, err_t *err)
{
    uint16_t id;
    uint32_t value;
    while (s_link_event(self, &id, &value)) {
        if (id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
            self->handshaken = true;
        else if (id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
            return err_set(err, EACCES, "node %d (%s) refused the coordinator's key (ZAP "
                           "status %u): its --curve-coordinators folder lacks the "
                           "coordinator's .pub", self->node_id, self->endpoint,
                           (unsigned)value);
        else if (id == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
                 id == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
            snprintf(why, why_size, "the security handshake failed (%s): CURVE on one "
                     "side only?", value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
                                   ? "mechanism mismatch" : "ZeroMQ protocol error");
        else if (id == ZMQ_EVENT_DISCONNECTED && self->curve && !self->handshaken)
            snprintf(why, why_size, "the node closed the connection during the CURVE "
                     "handshake: the public key given for node %d is not its key, or the "
                     "node does not use CURVE", self->node_id);
    }
    return 0;
}

int peer_hello(peer_t *self, wire_inbox_t *inbox, const char *model_id,
               const int32_t *want_layer, const int32_t *want_expert, int n_want,
               int timeout_ms, err_t *err)
{
    const double deadline = timer_now() + timeout_ms / 1000.0;
    double next_send = 0;
    char why[ERR_MSG_MAX] = "no answer";
    while (timer_now() < deadline) {
        double now = timer_now();
        int events = 0;
        size_t events_len = sizeof events;
        /* With ZMQ_IMMEDIATE a send blocks until a connection is ready, which
         * one that fails its CURVE handshake never is: send only then. */
        if (zmq_getsockopt(self->socket, ZMQ_EVENTS, &events, &events_len) < 0)
            events = 0;
        if (now >= next_send && !(events & ZMQ_POLLOUT))
            next_send = now + HELLO_RESEND_MS / 1000.0;
        if (now >= next_send) {
            wire_data_t hello = {.type = WIRE_HELLO,
                                 .request_id = PEER_CONTROL_ID | ++self->hello_id};
            err_t send_err = {0};
            if (wire_data_send(self->socket, NULL, &hello, &send_err) < 0 && errno != EAGAIN)
                return err_set(err, errno, "node %d (%s): %s", self->node_id,
                               self->endpoint, send_err.msg);
            next_send = now + HELLO_RESEND_MS / 1000.0;
        }
        if (s_hello_events(self, why, sizeof why, err) < 0) {
            peer_mark_down(self, err->msg);
            return -1;
        }
        zmq_pollitem_t item = {.socket = self->socket, .events = ZMQ_POLLIN};
        int wait_ms = (int)((next_send - timer_now()) * 1000) + 1;
        if (zmq_poll(&item, 1, wait_ms) < 0) {
            if (errno == EINTR)
                return err_set(err, EINTR, "interrupted while waiting for node %d",
                               self->node_id);
            continue;
        }
        if (!(item.revents & ZMQ_POLLIN))
            continue;
        wire_data_t reply;
        wire_data_error_t code;
        err_t recv_err = {0};
        if (wire_data_recv(inbox, self->socket, false, NULL, &reply, &code, &recv_err) < 0) {
            if (errno == EAGAIN)
                continue;
            snprintf(why, sizeof why, "%s", recv_err.msg);
            continue;
        }
        if (reply.request_id != (PEER_CONTROL_ID | self->hello_id) &&
            reply.type != WIRE_ERROR)
            continue; /* an answer to an earlier HELLO */
        if (s_check_hello(self, &reply, model_id, want_layer, want_expert, n_want, err) < 0) {
            peer_mark_down(self, err->msg);
            return -1;
        }
        snprintf(self->model_id, sizeof self->model_id, "%s", model_id);
        snprintf(self->weights, sizeof self->weights, "%s", reply.weights ? reply.weights : "");
        self->memory_budget = reply.memory_budget;
        self->expert_bytes = reply.expert_bytes;
        self->n_coordinators = reply.n_coordinators;
        self->want_layer = want_layer;
        self->want_expert = want_expert;
        self->n_want = n_want;
        self->up = true;
        self->last_error[0] = '\0';
        self->last_seen = timer_now();
        self->ping_unanswered = 0;
        return 0;
    }
    err_set(err, ETIMEDOUT, "node %d (%s) did not answer the handshake within %d ms (%s)",
            self->node_id, self->endpoint, timeout_ms, why);
    peer_mark_down(self, err->msg);
    return -1;
}

int peer_send(peer_t *self, const wire_data_t *msg, uint64_t *sent_bytes, err_t *err)
{
    size_t sent = 0;
    if (!self->up)
        return err_set(err, EHOSTUNREACH, "node %d (%s) is down: %s", self->node_id,
                       self->endpoint, self->last_error);
    err_t send_err = {0};
    if (wire_data_send_sized(self->socket, self->outbox, NULL, msg, &sent, &send_err) < 0) {
        char why[ERR_MSG_MAX + 32];
        snprintf(why, sizeof why, "cannot send: %s",
                 errno == EAGAIN ? "no live connection" : send_err.msg);
        peer_mark_down(self, why);
        return err_set(err, EHOSTUNREACH, "node %d (%s) is down: %s", self->node_id,
                       self->endpoint, why);
    }
    if (sent_bytes)
        *sent_bytes += sent;
    return 0;
}

bool peer_check_link(peer_t *self)
{
    uint16_t id;
    uint32_t value;
    while (s_link_event(self, &id, &value)) {
        if (id == ZMQ_EVENT_DISCONNECTED && self->up)
            peer_mark_down(self, "connection lost");
        else if (id == ZMQ_EVENT_CONNECTED && !self->up) {
            self->last_ping = 0; /* a node came back on the endpoint: HELLO at once */
            self->replacing = false; /* a new process: its PLACE, if any, was lost */
        }
    }
    return self->up;
}

void peer_mark_down(peer_t *self, const char *why)
{
    if (self->up) {
        self->down_since = timer_now();
        if (self->log)
            fprintf(self->log, "moe-coordinator: node %d (%s) is down: %s\n", self->node_id,
                    self->endpoint, why);
    }
    self->up = false;
    self->hello_floor = PEER_CONTROL_ID | self->hello_id;
    self->last_ping = 0;
    self->ping_unanswered = 0;
    snprintf(self->last_error, sizeof self->last_error, "%s", why);
}

void peer_set_health(peer_t *self, int heartbeat_ms, int misses, FILE *log)
{
    self->heartbeat_ms = heartbeat_ms > 0 ? heartbeat_ms : 0;
    self->misses = misses > 0 ? misses : 1;
    self->log = log;
}

/* Sends a control message; false when the node cannot take it now. */
static bool s_send_control(peer_t *self, wire_data_type_t type)
{
    wire_data_t msg = {.type = type, .request_id = PEER_CONTROL_ID | ++self->hello_id};
    return wire_data_send(self->socket, NULL, &msg, NULL) == 0;
}

void peer_tick(peer_t *self, double now)
{
    if (self->heartbeat_ms == 0)
        return;
    const double period = self->heartbeat_ms / 1000.0;
    if (!self->up) {
        /* A node that is gone refuses the send (ZMQ_IMMEDIATE); one that is
         * stopped queues them, and answers the newest when it wakes. */
        if (self->model_id[0] && now - self->last_ping >= period) {
            s_send_control(self, WIRE_HELLO);
            self->last_ping = now;
        }
        return;
    }
    if (self->ping_unanswered > 0 && now - self->ping_unanswered >= period * self->misses) {
        char why[128];
        snprintf(why, sizeof why, "no heartbeat reply within %d ms",
                 self->heartbeat_ms * self->misses);
        peer_mark_down(self, why);
        return;
    }
    if (now - self->last_seen >= period && now - self->last_ping >= period) {
        if (s_send_control(self, WIRE_HEARTBEAT)) {
            if (self->ping_unanswered == 0)
                self->ping_unanswered = now;
        } else {
            peer_mark_down(self, "cannot send a heartbeat: no live connection");
        }
        self->last_ping = now;
    }
}

/* The node is up again. */
static void s_back(peer_t *self, const wire_data_t *msg, double now, const char *how)
{
    snprintf(self->weights, sizeof self->weights, "%s", msg->weights ? msg->weights : "");
    self->up = true;
    self->last_error[0] = '\0';
    self->memory_budget = msg->memory_budget;
    self->expert_bytes = msg->expert_bytes;
    if (self->log)
        fprintf(self->log, "moe-coordinator: node %d (%s) is %s after %.0f ms%s\n",
                self->node_id, self->endpoint, self->n_want ? "back" : "up",
                (now - self->down_since) * 1e3, how);
}

void peer_handle(peer_t *self, const wire_data_t *msg, double now)
{
    self->last_seen = now;
    self->ping_unanswered = 0;
    if (msg->type == WIRE_HELLO_REPLY || msg->type == WIRE_HEARTBEAT_REPLY ||
        msg->type == WIRE_PLACE_REPLY)
        self->n_coordinators = msg->n_coordinators;
    if (self->replacing && msg->request_id == self->control_id &&
        (msg->type == WIRE_PLACE_REPLY || msg->type == WIRE_ERROR)) {
        /* A node that came back with other experts than the placement in
         * use (restarted with its first arguments after a move) has loaded
         * its share again. */
        self->replacing = false;
        self->control = PEER_CONTROL_NONE;
        err_t err = {0};
        if (msg->type == WIRE_ERROR)
            snprintf(self->last_error, sizeof self->last_error, "rejoin refused: it could "
                     "not load its experts: %s", msg->error_message ? msg->error_message : "");
        else if (s_check_pairs(self, msg, self->want_layer, self->want_expert, self->n_want,
                               &err) < 0)
            snprintf(self->last_error, sizeof self->last_error, "rejoin refused: %s", err.msg);
        else if (!self->up)
            s_back(self, msg, now, " (its experts of the placement in use loaded again)");
        return;
    }
    if (self->control == PEER_CONTROL_WAITING && msg->request_id == self->control_id &&
        (msg->type == WIRE_PLACE_REPLY || msg->type == WIRE_ERROR)) {
        if (msg->type == WIRE_PLACE_REPLY) {
            self->control = PEER_CONTROL_DONE;
            snprintf(self->weights, sizeof self->weights, "%s",
                     msg->weights ? msg->weights : "");
            self->memory_budget = msg->memory_budget;
            self->expert_bytes = msg->expert_bytes;
        } else {
            self->control = PEER_CONTROL_FAILED;
            snprintf(self->control_why, sizeof self->control_why, "%s",
                     msg->error_message ? msg->error_message : "");
        }
        return;
    }
    if (self->up || msg->request_id <= self->hello_floor ||
        !(msg->request_id & PEER_CONTROL_ID))
        return;
    if (msg->type != WIRE_HELLO_REPLY && msg->type != WIRE_ERROR)
        return;
    err_t err = {0};
    if (s_check_hello(self, msg, self->model_id, self->want_layer, self->want_expert,
                      self->n_want, &err) < 0) {
        if (errno == ENOENT && !self->replacing) {
            /* The right node, other experts: have it load its share. */
            wire_data_t place = {.type = WIRE_PLACE,
                                 .request_id = PEER_CONTROL_ID | ++self->hello_id,
                                 .n_hosted = self->n_want, .hosted_layer = self->want_layer,
                                 .hosted_expert = self->want_expert};
            if (wire_data_send(self->socket, NULL, &place, NULL) == 0) {
                self->replacing = true;
                self->control_id = place.request_id;
                snprintf(self->last_error, sizeof self->last_error, "rejoining: loading "
                         "its experts of the placement in use");
                return;
            }
        }
        if (!self->replacing)
            snprintf(self->last_error, sizeof self->last_error, "rejoin refused: %s",
                     err.msg);
        return;
    }
    s_back(self, msg, now, "");
}

int peer_control_send(peer_t *self, wire_data_type_t type, const int32_t *layer,
                      const int32_t *expert, int n, err_t *err)
{
    if (!self->up)
        return err_set(err, EHOSTUNREACH, "node %d (%s) is down: %s", self->node_id,
                       self->endpoint, self->last_error);
    wire_data_t msg = {.type = type, .request_id = PEER_CONTROL_ID | ++self->hello_id,
                       .n_hosted = n, .hosted_layer = layer, .hosted_expert = expert};
    err_t send_err = {0};
    if (wire_data_send(self->socket, NULL, &msg, &send_err) < 0)
        return err_set(err, EHOSTUNREACH, "node %d (%s) cannot take a %s: %s", self->node_id,
                       self->endpoint, type == WIRE_PLACE ? "PLACE" : "DROP",
                       errno == EAGAIN ? "no live connection" : send_err.msg);
    self->control_id = msg.request_id;
    self->control = PEER_CONTROL_WAITING;
    self->control_why[0] = '\0';
    return 0;
}

peer_control_t peer_control_state(const peer_t *self, const char **why)
{
    if (why)
        *why = self->control_why;
    return self->control;
}

void peer_set_want(peer_t *self, const int32_t *layer, const int32_t *expert, int n)
{
    self->want_layer = layer;
    self->want_expert = expert;
    self->n_want = n;
}

void peer_expect_join(peer_t *self, const char *model_id)
{
    snprintf(self->model_id, sizeof self->model_id, "%s", model_id);
    self->want_layer = self->want_expert = NULL;
    self->n_want = 0;
    self->up = false;
    self->down_since = timer_now();
    self->last_ping = 0; /* HELLO at the first tick */
    snprintf(self->last_error, sizeof self->last_error, "joining: no answer to HELLO yet");
}

uint64_t peer_memory_budget(const peer_t *self) { return self->memory_budget; }
uint64_t peer_expert_bytes(const peer_t *self) { return self->expert_bytes; }
int peer_n_coordinators(const peer_t *self) { return self->n_coordinators; }

void peer_record_batch(peer_t *self, double rtt_seconds)
{
    self->batches++;
    self->rtt_last = rtt_seconds;
    self->rtt_total += rtt_seconds;
}

void *peer_socket(const peer_t *self) { return self->socket; }
void *peer_monitor_socket(const peer_t *self) { return self->monitor; }
int peer_node_id(const peer_t *self) { return self->node_id; }
const char *peer_endpoint(const peer_t *self) { return self->endpoint; }
bool peer_is_up(const peer_t *self) { return self->up; }
const char *peer_last_error(const peer_t *self) { return self->last_error; }
const char *peer_weights(const peer_t *self) { return self->weights; }
uint64_t peer_batches(const peer_t *self) { return self->batches; }
double peer_rtt_last_ms(const peer_t *self) { return self->rtt_last * 1e3; }

double peer_rtt_mean_ms(const peer_t *self)
{
    return self->batches ? self->rtt_total / (double)self->batches * 1e3 : 0.0;
}
