/* sched: see sched.h. */
#include "coordinator/sched.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/mem.h"
#include "core/timer.h"
#include "engine/sampler.h"

sched_error_t sched_error_of(int errnum)
{
    switch (errnum) {
    case EHOSTUNREACH:
    case ETIMEDOUT:
    case EPROTO:
        return SCHED_UNAVAILABLE;
    case EINVAL:
    case ENOSPC:
    case E2BIG:
        return SCHED_INVALID;
    case EBUSY:
        return SCHED_BUSY;
    case EINTR:
        return SCHED_CANCELLED;
    default:
        return SCHED_INTERNAL;
    }
}

const char *sched_error_name(sched_error_t code)
{
    switch (code) {
    case SCHED_OK: return "ok";
    case SCHED_INVALID: return "invalid";
    case SCHED_BUSY: return "busy";
    case SCHED_UNAVAILABLE: return "unavailable";
    case SCHED_INTERNAL: return "internal";
    case SCHED_CANCELLED: return "cancelled";
    case SCHED_DEADLINE: return "deadline";
    }
    return "internal";
}

/* A request waiting for a slot, or the request a slot runs. */
typedef struct job {
    sched_client_t client;
    uint64_t request_id;
    int32_t *prompt;           /* (n_prompt), owned */
    int n_prompt;
    int max_tokens;
    sampler_params_t sampling;
    size_t kv_bytes;           /* its cache, once admitted */
    double t_accepted;
    double deadline;           /* timer_now() after which it fails; 0: none */
    int deadline_ms;           /* as asked, for the message */
    bool logprobs;             /* TOKEN events carry log-probabilities */
    int top_logprobs;          /* and this many alternatives */
} job_t;

/* One sequence slot; its cache is the engine's, under the slot's index. */
typedef struct seq {
    bool used;
    bool finished;             /* its DONE waits to be taken; the slot frees then */
    job_t job;
    sampler_t *sampler;        /* owned by the slot, reset per request */
    tokenizer_stream_t *text;  /* owned by the slot, reset when claimed; NULL
                                  without a tokenizer */
    float *logits;             /* (vocab) */
    int prefilled;             /* prompt tokens already run */
    int generated;
    int32_t last;              /* the token the next decode step feeds */
    double t_first;            /* timer_now() of its first token; 0: none yet */
} seq_t;

/* An event not yet taken. TOKEN and DONE keep their sequence's slot (a
 * DONE's slot is freed when it is taken) and make their text when taken. */
typedef struct pending {
    sched_event_kind_t kind;   /* 0: forgotten (sched_drop) */
    sched_client_t client;
    uint64_t request_id;
    int slot;                  /* TOKEN, DONE */
    int32_t token;             /* TOKEN */
    bool eos;                  /* TOKEN: an EOS, spelled out as no text */
    int index;                 /* TOKEN: its place among the generated tokens */
    bool has_logprob;          /* TOKEN: the request asked for logprobs */
    float logprob;
    int n_top;
    int32_t top_ids[SCHED_MAX_TOP_LOGPROBS];
    float top_logprobs[SCHED_MAX_TOP_LOGPROBS];
    const char *finish_reason; /* DONE (static) */
    sched_error_t code;  /* FAILED */
    char message[ERR_MSG_MAX]; /* FAILED */
} pending_t;

struct sched {
    sched_engine_t engine;
    sched_config_t conf;
    seq_t *seqs;               /* (max_seqs) */
    job_t *queue;              /* ring (queue_limit) */
    int q_head, q_len;
    size_t kv_used;
    sched_item_t *items;       /* (max_seqs) the step being run */
    pending_t *events;         /* ring (max_events) */
    int max_events, e_head, e_len;
};

sched_t *sched_new(const sched_engine_t *engine, const sched_config_t *conf, err_t *err)
{
    if (conf->max_seqs < 1 || conf->queue_limit < 1 || conf->step_tokens < 1 ||
        conf->vocab_size < 1) {
        err_set(err, EINVAL, "scheduler limits must be positive");
        return NULL;
    }
    sched_t *self = mem_calloc(1, sizeof *self);
    if (!self)
        goto oom;
    self->engine = *engine;
    self->conf = *conf;
    /* Between two takes: per slot an expiry, then a new request's admission
     * failure or its TOKEN and DONE; one event per queued request; a cancel. */
    self->max_events = 3 * conf->max_seqs + conf->queue_limit + 1;
    self->seqs = mem_calloc((size_t)conf->max_seqs, sizeof *self->seqs);
    self->queue = mem_calloc((size_t)conf->queue_limit, sizeof *self->queue);
    self->items = mem_calloc((size_t)conf->max_seqs, sizeof *self->items);
    self->events = mem_calloc((size_t)self->max_events, sizeof *self->events);
    if (!self->seqs || !self->queue || !self->items || !self->events)
        goto oom;
    sampler_params_t greedy = sampler_params_default();
    greedy.temperature = 0;
    for (int i = 0; i < conf->max_seqs; i++) {
        self->seqs[i].sampler = sampler_new(conf->vocab_size, &greedy, err);
        self->seqs[i].logits = mem_alloc((size_t)conf->vocab_size * sizeof(float));
        if (!self->seqs[i].sampler)
            goto fail;
        if (!self->seqs[i].logits)
            goto oom;
        if (conf->tokenizer && !(self->seqs[i].text = tokenizer_stream_new(conf->tokenizer)))
            goto oom;
    }
    return self;

oom:
    err_set(err, ENOMEM, "out of memory for the scheduler");
fail:
    sched_destroy(&self);
    return NULL;
}

static void s_job_free(job_t *job)
{
    mem_free(job->prompt);
    job->prompt = NULL;
}

/* Frees slot i: its cache, its budget, its request. */
static void s_release(sched_t *self, int i)
{
    seq_t *seq = &self->seqs[i];
    self->engine.close(self->engine.ctx, i);
    self->kv_used -= seq->job.kv_bytes;
    s_job_free(&seq->job);
    seq->used = seq->finished = false;
}

/* The first free slot, or -1. */
static int s_free_slot(const sched_t *self)
{
    for (int i = 0; i < self->conf.max_seqs; i++)
        if (!self->seqs[i].used)
            return i;
    return -1;
}

/* Runs job (which fits the budget) in free slot i: its cache, its sampler,
 * its text stream, all fresh. -1 with err, nothing taken. */
static int s_claim(sched_t *self, int i, const job_t *job, err_t *err)
{
    seq_t *seq = &self->seqs[i];
    if (self->engine.open(self->engine.ctx, i, job->n_prompt + job->max_tokens, err) < 0)
        return -1;
    if (sampler_reset(seq->sampler, &job->sampling, err) < 0) {
        self->engine.close(self->engine.ctx, i);
        return -1;
    }
    if (seq->text) { /* forget held-back bytes: the request starts clean */
        const char *rest;
        size_t n;
        tokenizer_stream_flush(seq->text, &rest, &n, NULL);
    }
    seq->job = *job;
    seq->used = true;
    seq->finished = false;
    seq->prefilled = seq->generated = 0;
    seq->t_first = 0;
    self->kv_used += job->kv_bytes;
    return 0;
}

/* A sequence that takes part in steps: in a slot, its DONE not yet made. */
static bool s_live(const seq_t *seq)
{
    return seq->used && !seq->finished;
}

void sched_destroy(sched_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    sched_t *self = *self_p;
    if (self->seqs)
        for (int i = 0; i < self->conf.max_seqs; i++) {
            if (self->seqs[i].used)
                s_release(self, i);
            sampler_destroy(&self->seqs[i].sampler);
            tokenizer_stream_destroy(&self->seqs[i].text);
            mem_free(self->seqs[i].logits);
        }
    if (self->queue)
        for (int i = 0; i < self->q_len; i++)
            s_job_free(&self->queue[(self->q_head + i) % self->conf.queue_limit]);
    mem_free(self->seqs);
    mem_free(self->queue);
    mem_free(self->items);
    mem_free(self->events);
    mem_free(self);
    *self_p = NULL;
}

/* The job's prompt, a copy of the request's; -1 with err. */
static int s_copy_prompt(job_t *job, const sched_request_t *req, err_t *err)
{
    job->prompt = mem_alloc((size_t)req->n_prompt * sizeof(int32_t));
    if (!job->prompt)
        return err_set(err, ENOMEM, "out of memory for a prompt of %d tokens", req->n_prompt);
    memcpy(job->prompt, req->prompt, (size_t)req->n_prompt * sizeof(int32_t));
    return 0;
}

int sched_submit(sched_t *self, const sched_client_t *client, const sched_request_t *req,
                 sched_error_t *code, err_t *err)
{
    *code = SCHED_INVALID;
    job_t job = {.client = *client, .request_id = req->request_id, .n_prompt = req->n_prompt,
                 .max_tokens = req->max_tokens, .t_accepted = timer_now(),
                 .logprobs = req->logprobs, .top_logprobs = req->top_logprobs};
    job.kv_bytes = self->engine.kv_bytes(self->engine.ctx, req->n_prompt + req->max_tokens);
    job.deadline_ms = req->deadline_ms > 0 ? req->deadline_ms : self->conf.default_deadline_ms;
    if (job.deadline_ms > 0)
        job.deadline = job.t_accepted + job.deadline_ms / 1e3;
    if (req->logprobs && (req->top_logprobs < 0 || req->top_logprobs > SCHED_MAX_TOP_LOGPROBS))
        return err_set(err, EINVAL, "top_logprobs %d is outside [0, %d]", req->top_logprobs,
                       SCHED_MAX_TOP_LOGPROBS);
    if (job.kv_bytes > self->conf.kv_memory)
        return err_set(err, EINVAL, "the request needs %zu bytes of KV cache, more than the "
                       "budget of %zu", job.kv_bytes, self->conf.kv_memory);
    sampler_params_t p = sampler_params_default();
    p.temperature = req->temperature;
    p.top_k = req->top_k;
    p.top_p = req->top_p > 0 ? req->top_p : 1.0f; /* absent (0) means off */
    p.seed = req->seed;
    p.max_tokens = req->max_tokens;
    p.n_stop = req->n_stop < SAMPLER_MAX_STOP ? req->n_stop : SAMPLER_MAX_STOP;
    for (int i = 0; i < p.n_stop; i++)
        p.stop[i] = req->stop_ids[i];
    if (!req->ignore_eos) {
        p.n_eos = self->conf.n_eos < SAMPLER_MAX_EOS ? self->conf.n_eos : SAMPLER_MAX_EOS;
        memcpy(p.eos, self->conf.eos, (size_t)p.n_eos * sizeof(int32_t));
    }
    if (sampler_params_check(&p, self->conf.vocab_size, err) < 0)
        return -1;
    job.sampling = p;
    /* Straight into a free slot when nothing waits before it and it fits. */
    const int slot = self->q_len == 0 && self->kv_used + job.kv_bytes <= self->conf.kv_memory
                         ? s_free_slot(self)
                         : -1;
    if (slot < 0 && self->q_len == self->conf.queue_limit) {
        *code = SCHED_BUSY;
        return err_set(err, EBUSY, "the queue is full (%d requests waiting); try again later",
                       self->q_len);
    }
    *code = SCHED_INTERNAL;
    if (s_copy_prompt(&job, req, err) < 0)
        return -1;
    if (slot >= 0) {
        if (s_claim(self, slot, &job, err) < 0) {
            s_job_free(&job);
            return -1;
        }
    } else {
        self->queue[(self->q_head + self->q_len) % self->conf.queue_limit] = job;
        self->q_len++;
    }
    *code = SCHED_OK;
    return 0;
}

/* Frees the i-th waiting job and closes the gap: later entries move one
 * place forward, keeping arrival order. */
static void s_queue_remove(sched_t *self, int i)
{
    s_job_free(&self->queue[(self->q_head + i) % self->conf.queue_limit]);
    for (int j = i; j + 1 < self->q_len; j++)
        self->queue[(self->q_head + j) % self->conf.queue_limit] =
            self->queue[(self->q_head + j + 1) % self->conf.queue_limit];
    self->q_len--;
}

static bool s_same_client(const sched_client_t *a, const sched_client_t *b)
{
    return a->front == b->front && a->len == b->len && memcmp(a->id, b->id, a->len) == 0;
}

/* A new event at the end of the ring (sized for everything between takes). */
static pending_t *s_push(sched_t *self, sched_event_kind_t kind, const job_t *job)
{
    assert(self->e_len < self->max_events);
    pending_t *ev = &self->events[(self->e_head + self->e_len++) % self->max_events];
    *ev = (pending_t){.kind = kind, .client = job->client, .request_id = job->request_id,
                      .slot = -1};
    return ev;
}

static void s_fail(sched_t *self, const job_t *job, sched_error_t code,
                   const char *message)
{
    pending_t *ev = s_push(self, SCHED_FAILED, job);
    ev->code = code;
    snprintf(ev->message, sizeof ev->message, "%s", message);
}

/* The slot running request_id of client, or -1. */
static int s_find_seq(const sched_t *self, const sched_client_t *client, uint64_t request_id)
{
    for (int i = 0; i < self->conf.max_seqs; i++) {
        const seq_t *seq = &self->seqs[i];
        if (seq->used && seq->job.request_id == request_id &&
            s_same_client(&seq->job.client, client))
            return i;
    }
    return -1;
}

/* The place in the queue of request_id of client, or -1. */
static int s_find_queued(const sched_t *self, const sched_client_t *client, uint64_t request_id)
{
    for (int i = 0; i < self->q_len; i++) {
        const job_t *job = &self->queue[(self->q_head + i) % self->conf.queue_limit];
        if (job->request_id == request_id && s_same_client(&job->client, client))
            return i;
    }
    return -1;
}

int sched_cancel(sched_t *self, const sched_client_t *client, uint64_t request_id)
{
    const int slot = s_find_seq(self, client, request_id);
    if (slot >= 0 && !self->seqs[slot].finished) {
        s_fail(self, &self->seqs[slot].job, SCHED_CANCELLED, "cancelled by the client");
        s_release(self, slot);
        return 0;
    }
    const int i = s_find_queued(self, client, request_id);
    if (i >= 0) {
        s_fail(self, &self->queue[(self->q_head + i) % self->conf.queue_limit],
               SCHED_CANCELLED, "cancelled by the client");
        s_queue_remove(self, i);
        return 0;
    }
    errno = ENOENT;
    return -1;
}

int sched_drop(sched_t *self, const sched_client_t *client, uint64_t request_id)
{
    bool found = false;
    for (int k = 0; k < self->e_len; k++) {
        pending_t *ev = &self->events[(self->e_head + k) % self->max_events];
        if (ev->kind && ev->request_id == request_id && s_same_client(&ev->client, client))
            ev->kind = 0;
    }
    const int slot = s_find_seq(self, client, request_id);
    if (slot >= 0) {
        s_release(self, slot);
        found = true;
    }
    const int i = s_find_queued(self, client, request_id);
    if (i >= 0) {
        s_queue_remove(self, i);
        found = true;
    }
    if (!found)
        errno = ENOENT;
    return found ? 0 : -1;
}

bool sched_has_work(const sched_t *self)
{
    if (self->q_len > 0)
        return true;
    for (int i = 0; i < self->conf.max_seqs; i++)
        if (s_live(&self->seqs[i]))
            return true;
    return false;
}

/* Moves waiting requests into free slots while their caches fit the budget,
 * in arrival order (a request that does not fit yet waits; none overtakes it). */
static void s_admit(sched_t *self)
{
    while (self->q_len > 0) {
        const int slot = s_free_slot(self);
        job_t *job = &self->queue[self->q_head];
        if (slot < 0 || self->kv_used + job->kv_bytes > self->conf.kv_memory)
            return;
        err_t err = {0};
        if (s_claim(self, slot, job, &err) < 0) {
            s_fail(self, job, SCHED_INTERNAL, err.msg);
            s_job_free(job);
        }
        self->q_head = (self->q_head + 1) % self->conf.queue_limit;
        self->q_len--;
    }
}

/* Decoding sequences first (one row each), then prefill chunks in slot
 * order while the step's token budget lasts. Returns the items. */
static int s_plan(sched_t *self)
{
    int n = 0, rows = 0;
    for (int i = 0; i < self->conf.max_seqs; i++) {
        seq_t *seq = &self->seqs[i];
        if (!s_live(seq) || seq->prefilled < seq->job.n_prompt ||
            rows + 1 > self->conf.step_tokens)
            continue;
        self->items[n++] = (sched_item_t){i, &seq->last, 1, true, seq->logits};
        rows++;
    }
    for (int i = 0; i < self->conf.max_seqs && rows < self->conf.step_tokens; i++) {
        seq_t *seq = &self->seqs[i];
        if (!s_live(seq) || seq->prefilled >= seq->job.n_prompt)
            continue;
        int chunk = seq->job.n_prompt - seq->prefilled;
        if (chunk > self->conf.step_tokens - rows)
            chunk = self->conf.step_tokens - rows;
        const bool last = seq->prefilled + chunk == seq->job.n_prompt;
        self->items[n++] = (sched_item_t){i, seq->job.prompt + seq->prefilled, chunk, last,
                                          seq->logits};
        rows += chunk;
    }
    return n;
}

/* The request in slot i is complete: its DONE event; the slot frees when
 * the event is taken (the event's text is the slot's stream's). */
static void s_finish(sched_t *self, int i, const char *why)
{
    pending_t *ev = s_push(self, SCHED_DONE, &self->seqs[i].job);
    ev->slot = i;
    ev->finish_reason = why;
    self->seqs[i].finished = true;
}

/* The text the token completes, for its TOKEN event: EOS and other special
 * tokens are not spelled out (Hugging Face's skip_special_tokens), and an id
 * the tokenizer does not know (a model vocabulary larger than its
 * tokenizer's) adds no text rather than failing the request. */
static void s_token_text(const sched_t *self, seq_t *seq, int32_t token, bool eos,
                         sched_event_t *ev)
{
    if (!seq->text || eos || tokenizer_is_special(self->conf.tokenizer, token))
        return;
    if (tokenizer_stream_feed(seq->text, token, &ev->text, &ev->text_len, NULL) < 0)
        ev->text_len = 0;
}

/* Fails every request, queued or running, whose deadline has passed. */
static void s_expire(sched_t *self)
{
    const double now = timer_now();
    char msg[160];
    for (int i = 0; i < self->conf.max_seqs; i++) {
        seq_t *seq = &self->seqs[i];
        if (!s_live(seq) || seq->job.deadline == 0 || now < seq->job.deadline)
            continue;
        snprintf(msg, sizeof msg, "the deadline of %d ms passed after %d generated tokens",
                 seq->job.deadline_ms, seq->generated);
        s_fail(self, &seq->job, SCHED_DEADLINE, msg);
        s_release(self, i);
    }
    for (int i = 0; i < self->q_len;) {
        job_t *job = &self->queue[(self->q_head + i) % self->conf.queue_limit];
        if (job->deadline == 0 || now < job->deadline) {
            i++;
            continue;
        }
        snprintf(msg, sizeof msg, "the deadline of %d ms passed while the request waited "
                 "for a slot", job->deadline_ms);
        s_fail(self, job, SCHED_DEADLINE, msg);
        s_queue_remove(self, i);
    }
}

/* After a step: sample a token for every sequence whose logits are ready. */
static void s_advance(sched_t *self, int n)
{
    for (int e = 0; e < n; e++) {
        const int i = self->items[e].slot;
        seq_t *seq = &self->seqs[i];
        if (seq->prefilled < seq->job.n_prompt) {
            seq->prefilled += self->items[e].n;
            if (seq->prefilled < seq->job.n_prompt)
                continue; /* more prompt to go */
        }
        if (seq->job.max_tokens == 0) {
            s_finish(self, i, "length");
            continue;
        }
        err_t err = {0};
        int32_t token;
        if (sampler_sample(seq->sampler, seq->logits, &token, &err) < 0) {
            s_fail(self, &seq->job, SCHED_INTERNAL, err.msg);
            s_release(self, i);
            continue;
        }
        if (seq->generated++ == 0)
            seq->t_first = timer_now();
        const sampler_stop_t stop = sampler_check_stop(seq->sampler, token, seq->generated);
        pending_t *ev = s_push(self, SCHED_TOKEN, &seq->job);
        ev->slot = i;
        ev->token = token;
        ev->index = seq->generated - 1;
        ev->eos = stop == SAMPLER_STOP_EOS;
        if (seq->job.logprobs) {
            ev->has_logprob = true;
            ev->n_top = sampler_logprobs(seq->logits, self->conf.vocab_size, token,
                                         seq->job.top_logprobs, &ev->logprob, ev->top_ids,
                                         ev->top_logprobs);
        }
        if (stop != SAMPLER_CONTINUE) {
            s_finish(self, i, sampler_stop_name(stop));
            continue;
        }
        seq->last = token;
    }
}

/* True when one of the n rows from `row` on needed a lost expert. */
static bool s_rows_lost(const sched_t *self, int row, int n)
{
    bool lost = false;
    for (int i = 0; i < n; i++)
        lost |= self->engine.row_lost(self->engine.ctx, row + i);
    return lost;
}

/* After a step failed for missing experts: fails the step's sequences that
 * had a row needing one, keeps the others in order in the step. Returns how
 * many failed, or -1 (nothing changed) when no row was named. */
static int s_drop_lost(sched_t *self, int *n, const char *why)
{
    int kept = 0, row = 0, failed = 0;
    bool any = false;
    for (int e = 0; e < *n; e++) {
        any |= s_rows_lost(self, row, self->items[e].n);
        row += self->items[e].n;
    }
    if (!any)
        return -1;
    row = 0;
    for (int e = 0; e < *n; e++) {
        const bool lost = s_rows_lost(self, row, self->items[e].n);
        row += self->items[e].n;
        if (lost) {
            const int i = self->items[e].slot;
            s_fail(self, &self->seqs[i].job, SCHED_UNAVAILABLE, why);
            s_release(self, i);
            failed++;
            continue;
        }
        self->items[kept++] = self->items[e];
    }
    *n = kept;
    return failed;
}

void sched_step(sched_t *self, double *seconds, uint64_t *rows)
{
    s_expire(self);
    s_admit(self);
    int n = s_plan(self);
    if (n == 0)
        return;
    err_t err = {0};
    const double t0 = timer_now();
    int rc = self->engine.run(self->engine.ctx, self->items, n, &err);
    while (rc < 0 && errno == EHOSTUNREACH && self->engine.row_lost) {
        if (s_drop_lost(self, &n, err.msg) < 0 || n == 0)
            break; /* no row was named (fail them all below), or none is left */
        err = (err_t){0};
        rc = self->engine.run(self->engine.ctx, self->items, n, &err);
    }
    *seconds += timer_now() - t0;
    if (rc < 0) {
        sched_error_t code = sched_error_of(errno);
        for (int e = 0; e < n; e++) {
            const int i = self->items[e].slot;
            s_fail(self, &self->seqs[i].job, code, err.msg);
            s_release(self, i);
        }
        return;
    }
    for (int e = 0; e < n; e++)
        *rows += (uint64_t)self->items[e].n;
    s_advance(self, n);
}

bool sched_next_event(sched_t *self, sched_event_t *out)
{
    while (self->e_len > 0) {
        pending_t *ev = &self->events[self->e_head];
        self->e_head = (self->e_head + 1) % self->max_events;
        self->e_len--;
        if (ev->kind == 0)
            continue; /* its client has gone */
        *out = (sched_event_t){.kind = ev->kind, .client = &ev->client,
                               .request_id = ev->request_id};
        seq_t *seq = ev->slot >= 0 ? &self->seqs[ev->slot] : NULL;
        switch (ev->kind) {
        case SCHED_TOKEN:
            out->token = ev->token;
            out->index = ev->index;
            out->eos = ev->eos;
            out->has_logprob = ev->has_logprob;
            out->logprob = ev->logprob;
            out->n_top = ev->n_top;
            out->top_ids = ev->top_ids;
            out->top_logprobs = ev->top_logprobs;
            if (ev->index == 0 && seq->t_first > 0)
                out->seconds_first = seq->t_first - seq->job.t_accepted;
            s_token_text(self, seq, ev->token, ev->eos, out);
            break;
        case SCHED_DONE:
            out->prompt_tokens = seq->job.n_prompt;
            out->generated_tokens = seq->generated;
            out->seconds = timer_now() - seq->job.t_accepted;
            out->seconds_first = seq->t_first > 0 ? seq->t_first - seq->job.t_accepted : 0;
            out->finish_reason = ev->finish_reason;
            /* The text the stream still held back; it stays valid after the
             * release, until the slot is claimed again. */
            if (seq->text &&
                tokenizer_stream_flush(seq->text, &out->text, &out->text_len, NULL) < 0)
                out->text_len = 0;
            s_release(self, ev->slot);
            break;
        case SCHED_FAILED:
            out->code = ev->code;
            out->message = ev->message;
            break;
        }
        return true;
    }
    return false;
}

int sched_running(const sched_t *self)
{
    int n = 0;
    for (int i = 0; i < self->conf.max_seqs; i++)
        n += self->seqs[i].used;
    return n;
}

int sched_queued(const sched_t *self)
{
    return self->q_len;
}

size_t sched_kv_bytes(const sched_t *self)
{
    return self->kv_used;
}

/* One client: its key when it has one, else its connection. */
static bool s_same_owner(const sched_client_t *a, const sched_client_t *b)
{
    if (a->user[0] || b->user[0])
        return strcmp(a->user, b->user) == 0;
    return s_same_client(a, b);
}

int sched_client_requests(const sched_t *self, const sched_client_t *client)
{
    int n = 0;
    for (int i = 0; i < self->conf.max_seqs; i++)
        if (s_live(&self->seqs[i]) && s_same_owner(&self->seqs[i].job.client, client))
            n++;
    for (int i = 0; i < self->q_len; i++)
        if (s_same_owner(&self->queue[(self->q_head + i) % self->conf.queue_limit].client,
                         client))
            n++;
    return n;
}
