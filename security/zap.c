/* zap: see zap.h.
 *
 * Invariants: after zap_new returns, the handler thread alone touches
 * `handler`, `pipe_thread` and the log state; `allowed` does not change; the
 * owner touches only `pipe_owner` (to stop the thread) and the atomic
 * counters.
 */
#include "security/zap.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "core/lograte.h"
#include "core/mem.h"
#include "core/path.h"
#include "security/keypair.h"

#define S_ZAP_ENDPOINT "inproc://zeromq.zap.01"
enum { S_MAX_FRAMES = 8 };    /* a ZAP request has 6 + credentials frames */
enum { S_FRAME_MAX = 256 };   /* bytes of one request frame we look at */

struct zap {
    void *handler;                 /* REP bound to the ZAP endpoint (thread) */
    void *pipe_owner;              /* PAIR: the owner sends "stop" */
    void *pipe_thread;             /* PAIR: the thread's end */
    pthread_t thread;
    bool started;
    uint8_t (*allowed)[KEYPAIR_BYTES]; /* (n_allowed) public keys */
    int n_allowed;
    char who[64];
    FILE *log;
    /* Log state, the thread's. */
    uint8_t logged[ZAP_MAX_LOGGED][KEYPAIR_BYTES]; /* refused keys already logged */
    int n_logged;
    lograte_t others;              /* refusals of keys past ZAP_MAX_LOGGED: counts */
    _Atomic uint64_t n_accepted;
    _Atomic uint64_t n_refused;
};

static bool s_ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && strcmp(s + n - m, suffix) == 0;
}

static int s_load_allowed(zap_t *self, const char *dir, err_t *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return err_set(err, errno, "cannot read the allowed-keys folder %s: %s", dir,
                       strerror(errno));
    int rc = -1, cap = 0;
    struct dirent *ent;
    while ((ent = readdir(d))) {
        if (ent->d_name[0] == '.' || !s_ends_with(ent->d_name, ".pub"))
            continue;
        char *path = path_join(dir, ent->d_name);
        char z85[KEYPAIR_Z85_LEN + 1];
        if (!path) {
            err_set(err, ENOMEM, "out of memory for a path");
            goto done;
        }
        int loaded = keypair_load_public(z85, path, err);
        mem_free(path);
        if (loaded < 0)
            goto done;
        if (self->n_allowed == cap) {
            int new_cap = cap ? 2 * cap : 8;
            void *grown = mem_realloc(self->allowed, (size_t)new_cap * KEYPAIR_BYTES);
            if (!grown) {
                err_set(err, ENOMEM, "out of memory for the allowed keys");
                goto done;
            }
            self->allowed = grown;
            cap = new_cap;
        }
        keypair_decode(self->allowed[self->n_allowed++], z85);
    }
    if (self->n_allowed == 0) {
        err_set(err, ENOENT, "no *.pub file in the allowed-keys folder %s: nobody could "
                "connect", dir);
        goto done;
    }
    rc = 0;
done:
    closedir(d);
    return rc;
}

static bool s_is_allowed(const zap_t *self, const uint8_t *key)
{
    for (int i = 0; i < self->n_allowed; i++)
        if (memcmp(self->allowed[i], key, KEYPAIR_BYTES) == 0)
            return true;
    return false;
}

/* Logs a refused key: each distinct one once, then counts. */
static void s_log_refusal(zap_t *self, const uint8_t *key, const char *address,
                          const char *why)
{
    if (!self->log)
        return;
    for (int i = 0; i < self->n_logged; i++)
        if (memcmp(self->logged[i], key, KEYPAIR_BYTES) == 0)
            return; /* logged once is enough: the client keeps retrying */
    if (self->n_logged < ZAP_MAX_LOGGED) {
        char z85[KEYPAIR_Z85_LEN + 1] = "(none)";
        if (key != NULL && !zmq_z85_encode(z85, key, KEYPAIR_BYTES))
            snprintf(z85, sizeof z85, "(unprintable)");
        memcpy(self->logged[self->n_logged++], key, KEYPAIR_BYTES);
        fprintf(self->log, "%s: refused a connection from %s: %s (public key %s)\n",
                self->who, address[0] ? address : "an unknown address", why, z85);
        fflush(self->log);
        return;
    }
    /* A burst of 0: only the count lines, one per window. */
    lograte_printf(&self->others, "connections refused from other unknown keys", "%s",
                   why);
}

/* Receives one ZAP request (all its frames) and answers it. */
static void s_answer(zap_t *self)
{
    char frame[S_MAX_FRAMES][S_FRAME_MAX + 1];
    size_t size[S_MAX_FRAMES] = {0};
    int n = 0;
    int more = 1;
    size_t more_len = sizeof more;
    while (more) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, self->handler, 0) < 0) {
            zmq_msg_close(&msg);
            return;
        }
        if (n < S_MAX_FRAMES) {
            size[n] = zmq_msg_size(&msg);
            size_t copy = size[n] < S_FRAME_MAX ? size[n] : S_FRAME_MAX;
            memcpy(frame[n], zmq_msg_data(&msg), copy);
            frame[n][copy] = '\0';
            n++;
        }
        zmq_msg_close(&msg);
        if (zmq_getsockopt(self->handler, ZMQ_RCVMORE, &more, &more_len) < 0)
            more = 0;
    }
    /* Frames: version, request id, domain, address, identity, mechanism,
     * credentials... (RFC 27). */
    const char *status = "400", *text = "public key not allowed";
    char user[KEYPAIR_Z85_LEN + 1] = "";
    const uint8_t *key = NULL;
    bool ok_request = n >= 6 && size[0] == 3 && memcmp(frame[0], "1.0", 3) == 0;
    if (!ok_request)
        text = "malformed ZAP request";
    else if (strcmp(frame[5], "CURVE") != 0)
        text = "only CURVE clients are served";
    else if (n < 7 || size[6] != KEYPAIR_BYTES)
        text = "CURVE request without a 32-byte key";
    else {
        key = (const uint8_t *)frame[6];
        if (s_is_allowed(self, key)) {
            status = "200";
            text = "OK";
            zmq_z85_encode(user, key, KEYPAIR_BYTES);
        }
    }
    if (status[0] == '2')
        atomic_fetch_add(&self->n_accepted, 1);
    else {
        atomic_fetch_add(&self->n_refused, 1);
        static const uint8_t s_no_key[KEYPAIR_BYTES];
        s_log_refusal(self, key ? key : s_no_key, n > 3 ? frame[3] : "", text);
    }
    /* A REP socket must answer every request, even one without an id. */
    const char *reply[6] = {"1.0", n > 1 ? frame[1] : "", status, text, user, ""};
    size_t len[6] = {3, n > 1 ? (size[1] < S_FRAME_MAX ? size[1] : S_FRAME_MAX) : 0,
                     3, strlen(text), strlen(user), 0};
    for (int i = 0; i < 6; i++)
        if (zmq_send(self->handler, reply[i], len[i], i < 5 ? ZMQ_SNDMORE : 0) < 0)
            return;
}

static void *s_thread(void *arg)
{
    zap_t *self = arg;
    for (;;) {
        zmq_pollitem_t items[2] = {{.socket = self->handler, .events = ZMQ_POLLIN},
                                   {.socket = self->pipe_thread, .events = ZMQ_POLLIN}};
        if (zmq_poll(items, 2, ZAP_LOG_INTERVAL_S * 1000) < 0) {
            if (errno == EINTR)
                continue;
            break; /* ETERM: the context is going */
        }
        lograte_tick(&self->others);
        if (items[1].revents & ZMQ_POLLIN)
            break; /* stop */
        if (items[0].revents & ZMQ_POLLIN)
            s_answer(self);
    }
    return NULL;
}

zap_t *zap_new(void *zmq_ctx, const char *allow_dir, const char *who, FILE *log,
               err_t *err)
{
    static _Atomic int s_pipe_seq; /* unique pipe names within the process */
    zap_t *self = mem_calloc(1, sizeof *self);
    if (!self) {
        err_set(err, ENOMEM, "out of memory for the key checker");
        return NULL;
    }
    snprintf(self->who, sizeof self->who, "%s", who);
    self->log = log;
    lograte_init(&self->others, log, who, 0, ZAP_LOG_INTERVAL_S);
    if (s_load_allowed(self, allow_dir, err) < 0)
        goto fail;
    char pipe_ep[64];
    snprintf(pipe_ep, sizeof pipe_ep, "inproc://zap-pipe-%d", atomic_fetch_add(&s_pipe_seq, 1));
    int zero = 0;
    self->handler = zmq_socket(zmq_ctx, ZMQ_REP);
    self->pipe_owner = zmq_socket(zmq_ctx, ZMQ_PAIR);
    self->pipe_thread = zmq_socket(zmq_ctx, ZMQ_PAIR);
    if (!self->handler || !self->pipe_owner || !self->pipe_thread ||
        zmq_setsockopt(self->handler, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
        zmq_setsockopt(self->pipe_owner, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
        zmq_setsockopt(self->pipe_thread, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
        zmq_bind(self->pipe_thread, pipe_ep) < 0 || zmq_connect(self->pipe_owner, pipe_ep) < 0) {
        err_set(err, errno, "cannot make the key checker's sockets: %s", zmq_strerror(errno));
        goto fail;
    }
    if (zmq_bind(self->handler, S_ZAP_ENDPOINT) < 0) {
        err_set(err, errno, "cannot bind the ZAP handler %s: %s", S_ZAP_ENDPOINT,
                zmq_strerror(errno));
        goto fail;
    }
    /* pthread_create is a full barrier: the thread sees the sockets made here. */
    int rc = pthread_create(&self->thread, NULL, s_thread, self);
    if (rc != 0) {
        err_set(err, rc, "cannot start the key checker's thread: %s", strerror(rc));
        goto fail;
    }
    self->started = true;
    return self;

fail:
    zap_destroy(&self);
    return NULL;
}

void zap_destroy(zap_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    zap_t *self = *self_p;
    int saved = errno;
    if (self->started) {
        zmq_send(self->pipe_owner, "stop", 4, 0);
        pthread_join(self->thread, NULL);
    }
    lograte_fini(&self->others); /* the thread has gone: ours again */
    if (self->handler)
        zmq_close(self->handler);
    if (self->pipe_thread)
        zmq_close(self->pipe_thread);
    if (self->pipe_owner)
        zmq_close(self->pipe_owner);
    mem_free(self->allowed);
    mem_free(self);
    *self_p = NULL;
    errno = saved;
}

int zap_n_allowed(const zap_t *self)
{
    return self->n_allowed;
}

uint64_t zap_n_accepted(const zap_t *self)
{
    return atomic_load(&((zap_t *)self)->n_accepted);
}

uint64_t zap_n_refused(const zap_t *self)
{
    return atomic_load(&((zap_t *)self)->n_refused);
}
