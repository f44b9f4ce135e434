/* expert_loader: see expert_loader.h. */
#include "expert_node/expert_loader.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "core/mem.h"

struct expert_loader {
    pthread_t thread;
    bool started;
    void *pull;                /* PAIR the loop polls (bound) */
    void *push;                /* PAIR the thread signals on (connected) */
    char *model_dir;
    int32_t *layer, *expert;   /* (n) the pairs to load */
    int n;
    wformat_t format;
    int delay_ms;
    /* Written by the thread before its signal, read after the join. */
    weights_t *result;
    int result_errno;
    err_t result_err;
};

/* A weights_hosts_fn over the loader's pairs. */
static bool s_wanted(void *ctx, int layer, int expert)
{
    const expert_loader_t *self = ctx;
    for (int i = 0; i < self->n; i++)
        if (self->layer[i] == layer && self->expert[i] == expert)
            return true;
    return false;
}

static void *s_main(void *arg)
{
    expert_loader_t *self = arg;
    if (self->delay_ms > 0) {
        struct timespec ts = {self->delay_ms / 1000, (long)(self->delay_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    weights_select_t select = {.dense = false, .hosts = s_wanted, .hosts_ctx = self,
                               .format = self->format, .name = "moe-expert",
                               .resident = true};  /* it is read into memory below anyway */
    self->result = weights_load(self->model_dir, &select, &self->result_err);
    if (self->result)
        weights_preload(self->result, NULL, "moe-expert");
    else
        self->result_errno = errno;
    char done = 1;
    zmq_send(self->push, &done, 1, 0);
    return NULL;
}

expert_loader_t *expert_loader_start(void *zmq_ctx, const char *model_dir,
                                     const int32_t *layer, const int32_t *expert, int n,
                                     wformat_t format, int delay_ms, err_t *err)
{
    static unsigned s_seq; /* unique inproc names within the process (loop thread only) */
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://expert-loader-%u", ++s_seq);
    expert_loader_t *self = mem_calloc(1, sizeof *self);
    if (!self)
        goto oom;
    self->n = n;
    self->format = format;
    self->delay_ms = delay_ms;
    self->model_dir = mem_alloc(strlen(model_dir) + 1);
    self->layer = mem_alloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
    self->expert = mem_alloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
    if (!self->model_dir || !self->layer || !self->expert)
        goto oom;
    memcpy(self->model_dir, model_dir, strlen(model_dir) + 1);
    memcpy(self->layer, layer, (size_t)n * sizeof(int32_t));
    memcpy(self->expert, expert, (size_t)n * sizeof(int32_t));
    self->pull = zmq_socket(zmq_ctx, ZMQ_PAIR);
    self->push = zmq_socket(zmq_ctx, ZMQ_PAIR);
    int zero = 0;
    if (!self->pull || !self->push || zmq_setsockopt(self->pull, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_setsockopt(self->push, ZMQ_LINGER, &zero, sizeof zero) || zmq_bind(self->pull, ep) ||
        zmq_connect(self->push, ep)) {
        err_set(err, errno, "cannot make the loader's socket %s: %s", ep, zmq_strerror(errno));
        goto fail;
    }
    int rc = pthread_create(&self->thread, NULL, s_main, self);
    if (rc != 0) {
        err_set(err, rc, "cannot start a thread to load experts: %s", strerror(rc));
        goto fail;
    }
    self->started = true;
    return self;

oom:
    err_set(err, ENOMEM, "out of memory to load %d experts", n);
fail:
    expert_loader_destroy(&self);
    return NULL;
}

void *expert_loader_socket(const expert_loader_t *self)
{
    return self->pull;
}

/* Joins the thread and frees everything but the result. */
static void s_join(expert_loader_t *self)
{
    if (self->started)
        pthread_join(self->thread, NULL);
    self->started = false;
    if (self->push)
        zmq_close(self->push);
    if (self->pull)
        zmq_close(self->pull);
    self->push = self->pull = NULL;
}

weights_t *expert_loader_finish(expert_loader_t **self_p, err_t *err)
{
    expert_loader_t *self = *self_p;
    s_join(self);
    weights_t *w = self->result;
    self->result = NULL;
    if (!w) {
        err_set(err, self->result_errno ? self->result_errno : EIO, "%s",
                self->result_err.msg);
    }
    expert_loader_destroy(self_p);
    return w;
}

void expert_loader_destroy(expert_loader_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    expert_loader_t *self = *self_p;
    s_join(self);
    weights_destroy(&self->result);
    mem_free(self->model_dir);
    mem_free(self->layer);
    mem_free(self->expert);
    mem_free(self);
    *self_p = NULL;
}
