/* sched: see sched.h. */
#include "coordinator/sched.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/mem.h"
#include "core/timer.h"
#include "engine/kvcache.h"
#include "engine/sampler.h"

/* A request waiting for a slot, or the request a slot runs. */
typedef struct job {
    wire_peer_t client;
    uint64_t request_id;
    int32_t *prompt;           /* (n_prompt), owned */
    int n_prompt;
    int max_tokens;
    sampler_params_t sampling;
    size_t kv_bytes;           /* its cache, once admitted */
    double t_accepted;
    double deadline;           /* timer_now() after which it fails; 0: none */
    int deadline_ms;           /* as asked, for the message */
} job_t;

/* One sequence slot. */
typedef struct seq {
    bool used;
    job_t job;
    kvcache_t *kv;             /* (n_prompt + max_tokens) positions */
    sampler_t *sampler;        /* owned by the slot, reset per request */
    tokenizer_stream_t *text;  /* owned by the slot; NULL without a tokenizer */
    float *logits;             /* (vocab) */
    int prefilled;             /* prompt tokens already run */
    int generated;
    int32_t last;              /* the token the next decode step feeds */
} seq_t;

struct sched {
    const config_t *cfg;
    forward_t *fw;
    sched_config_t conf;
    seq_t *seqs;               /* (max_seqs) */
    job_t *queue;              /* ring (queue_limit) */
    int q_head, q_len;
    size_t kv_used;
    forward_seq_t *step;       /* (max_seqs) */
    int *step_slot;            /* (max_seqs) slot of each step entry */
};

static size_t s_kv_bytes(const config_t *cfg, int positions)
{
    return (size_t)positions * kvcache_position_bytes(cfg);
}

sched_t *sched_new(const config_t *cfg, forward_t *fw, const sched_config_t *conf,
                   err_t *err)
{
    if (conf->max_seqs < 1 || conf->queue_limit < 1 || conf->step_tokens < 1) {
        err_set(err, EINVAL, "scheduler limits must be positive");
        return NULL;
    }
    sched_t *self = mem_calloc(1, sizeof *self);
    if (!self)
        goto oom;
    self->cfg = cfg;
    self->fw = fw;
    self->conf = *conf;
    self->seqs = mem_calloc((size_t)conf->max_seqs, sizeof *self->seqs);
    self->queue = mem_calloc((size_t)conf->queue_limit, sizeof *self->queue);
    self->step = mem_calloc((size_t)conf->max_seqs, sizeof *self->step);
    self->step_slot = mem_calloc((size_t)conf->max_seqs, sizeof *self->step_slot);
    if (!self->seqs || !self->queue || !self->step || !self->step_slot)
        goto oom;
    sampler_params_t greedy = sampler_params_default();
    greedy.temperature = 0;
    for (int i = 0; i < conf->max_seqs; i++) {
        self->seqs[i].sampler = sampler_new(cfg->vocab_size, &greedy, err);
        self->seqs[i].logits = mem_alloc((size_t)cfg->vocab_size * sizeof(float));
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

static void s_release(sched_t *self, seq_t *seq)
{
    if (seq->text) { /* forget held-back bytes: the next request starts clean */
        const char *rest;
        size_t n;
        tokenizer_stream_flush(seq->text, &rest, &n, NULL);
    }
    kvcache_destroy(&seq->kv);
    self->kv_used -= seq->job.kv_bytes;
    s_job_free(&seq->job);
    seq->used = false;
}

void sched_destroy(sched_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    sched_t *self = *self_p;
    if (self->seqs)
        for (int i = 0; i < self->conf.max_seqs; i++) {
            if (self->seqs[i].used)
                s_release(self, &self->seqs[i]);
            sampler_destroy(&self->seqs[i].sampler);
            tokenizer_stream_destroy(&self->seqs[i].text);
            mem_free(self->seqs[i].logits);
        }
    if (self->queue)
        for (int i = 0; i < self->q_len; i++)
            s_job_free(&self->queue[(self->q_head + i) % self->conf.queue_limit]);
    mem_free(self->seqs);
    mem_free(self->queue);
    mem_free(self->step);
    mem_free(self->step_slot);
    mem_free(self);
    *self_p = NULL;
}

int sched_submit(sched_t *self, const wire_peer_t *client, const wire_request_t *req,
                 wire_client_error_t *code, err_t *err)
{
    *code = WIRE_CLIENT_INVALID_ARGUMENT;
    job_t job = {.client = *client, .request_id = req->request_id, .n_prompt = req->n_prompt,
                 .max_tokens = req->max_tokens, .t_accepted = timer_now()};
    job.kv_bytes = s_kv_bytes(self->cfg, req->n_prompt + req->max_tokens);
    job.deadline_ms = req->deadline_ms > 0 ? req->deadline_ms : self->conf.default_deadline_ms;
    if (job.deadline_ms > 0)
        job.deadline = job.t_accepted + job.deadline_ms / 1e3;
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
    if (sampler_params_check(&p, self->cfg->vocab_size, err) < 0)
        return -1;
    job.sampling = p;
    /* Straight into a free slot when nothing waits before it and it fits. */
    if (self->q_len == 0 && self->kv_used + job.kv_bytes <= self->conf.kv_memory)
        for (int i = 0; i < self->conf.max_seqs; i++) {
            seq_t *seq = &self->seqs[i];
            if (seq->used)
                continue;
            job.prompt = mem_alloc((size_t)req->n_prompt * sizeof(int32_t));
            seq->kv = job.prompt ? kvcache_new(self->cfg, job.n_prompt + job.max_tokens, err)
                                 : NULL;
            if (!seq->kv || sampler_reset(seq->sampler, &job.sampling, err) < 0) {
                if (!job.prompt)
                    err_set(err, ENOMEM, "out of memory for a prompt of %d tokens",
                            req->n_prompt);
                kvcache_destroy(&seq->kv);
                s_job_free(&job);
                *code = WIRE_CLIENT_INTERNAL;
                return -1;
            }
            memcpy(job.prompt, req->prompt, (size_t)req->n_prompt * sizeof(int32_t));
            seq->job = job;
            seq->used = true;
            seq->prefilled = seq->generated = 0;
            self->kv_used += job.kv_bytes;
            *code = WIRE_CLIENT_OK;
            return 0;
        }
    if (self->q_len == self->conf.queue_limit) {
        *code = WIRE_CLIENT_BUSY;
        return err_set(err, EBUSY, "the queue is full (%d requests waiting); try again later",
                       self->q_len);
    }
    job.prompt = mem_alloc((size_t)req->n_prompt * sizeof(int32_t));
    if (!job.prompt) {
        *code = WIRE_CLIENT_INTERNAL;
        return err_set(err, ENOMEM, "out of memory for a prompt of %d tokens", req->n_prompt);
    }
    memcpy(job.prompt, req->prompt, (size_t)req->n_prompt * sizeof(int32_t));
    self->queue[(self->q_head + self->q_len) % self->conf.queue_limit] = job;
    self->q_len++;
    *code = WIRE_CLIENT_OK;
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

static bool s_same_client(const wire_peer_t *a, const wire_peer_t *b)
{
    return a->len == b->len && memcmp(a->id, b->id, a->len) == 0;
}

static void s_fail(const job_t *job, wire_client_error_t code, const char *message,
                   sched_emit_fn emit, void *ctx)
{
    sched_event_t ev = {.kind = SCHED_FAILED, .client = &job->client,
                        .request_id = job->request_id, .code = code, .message = message};
    emit(ctx, &ev);
}

int sched_cancel(sched_t *self, const wire_peer_t *client, uint64_t request_id,
                 sched_emit_fn emit, void *ctx)
{
    for (int i = 0; i < self->conf.max_seqs; i++) {
        seq_t *seq = &self->seqs[i];
        if (seq->used && seq->job.request_id == request_id &&
            s_same_client(&seq->job.client, client)) {
            s_fail(&seq->job, WIRE_CLIENT_CANCELLED, "cancelled by the client", emit, ctx);
            s_release(self, seq);
            return 0;
        }
    }
    for (int i = 0; i < self->q_len; i++) {
        job_t *job = &self->queue[(self->q_head + i) % self->conf.queue_limit];
        if (job->request_id == request_id && s_same_client(&job->client, client)) {
            s_fail(job, WIRE_CLIENT_CANCELLED, "cancelled by the client", emit, ctx);
            s_queue_remove(self, i);
            return 0;
        }
    }
    errno = ENOENT;
    return -1;
}

bool sched_has_work(const sched_t *self)
{
    if (self->q_len > 0)
        return true;
    for (int i = 0; i < self->conf.max_seqs; i++)
        if (self->seqs[i].used)
            return true;
    return false;
}

/* Moves waiting requests into free slots while their caches fit the budget,
 * in arrival order (a request that does not fit yet waits; none overtakes it). */
static void s_admit(sched_t *self, sched_emit_fn emit, void *ctx)
{
    for (int i = 0; i < self->conf.max_seqs && self->q_len > 0; i++) {
        seq_t *seq = &self->seqs[i];
        if (seq->used)
            continue;
        job_t *job = &self->queue[self->q_head];
        if (self->kv_used + job->kv_bytes > self->conf.kv_memory)
            return;
        err_t err = {0};
        seq->kv = kvcache_new(self->cfg, job->n_prompt + job->max_tokens, &err);
        if (!seq->kv || sampler_reset(seq->sampler, &job->sampling, &err) < 0) {
            kvcache_destroy(&seq->kv);
            s_fail(job, WIRE_CLIENT_INTERNAL, err.msg, emit, ctx);
            s_job_free(job);
        } else {
            seq->job = *job;
            seq->used = true;
            seq->prefilled = seq->generated = 0;
            self->kv_used += job->kv_bytes;
        }
        self->q_head = (self->q_head + 1) % self->conf.queue_limit;
        self->q_len--;
    }
}

/* Decoding sequences first (one row each), then prefill chunks in slot
 * order while the step's token budget lasts. Returns the entries. */
static int s_plan(sched_t *self)
{
    int n = 0, rows = 0;
    for (int i = 0; i < self->conf.max_seqs; i++) {
        seq_t *seq = &self->seqs[i];
        if (!seq->used || seq->prefilled < seq->job.n_prompt ||
            rows + 1 > self->conf.step_tokens)
            continue;
        self->step[n] = (forward_seq_t){seq->kv, &seq->last, 1, FORWARD_LOGITS_LAST,
                                        seq->logits};
        self->step_slot[n++] = i;
        rows++;
    }
    for (int i = 0; i < self->conf.max_seqs && rows < self->conf.step_tokens; i++) {
        seq_t *seq = &self->seqs[i];
        if (!seq->used || seq->prefilled >= seq->job.n_prompt)
            continue;
        int chunk = seq->job.n_prompt - seq->prefilled;
        if (chunk > self->conf.step_tokens - rows)
            chunk = self->conf.step_tokens - rows;
        bool last = seq->prefilled + chunk == seq->job.n_prompt;
        self->step[n] = (forward_seq_t){seq->kv, seq->job.prompt + seq->prefilled, chunk,
                                        last ? FORWARD_LOGITS_LAST : FORWARD_LOGITS_NONE,
                                        seq->logits};
        self->step_slot[n++] = i;
        rows += chunk;
    }
    return n;
}

/* The request of seq is complete: its DONE event (with the text the stream
 * still held back), and its slot is freed. */
static void s_finish(sched_t *self, seq_t *seq, const char *why, sched_emit_fn emit, void *ctx)
{
    sched_event_t done = {.kind = SCHED_DONE, .client = &seq->job.client,
                          .request_id = seq->job.request_id,
                          .prompt_tokens = seq->job.n_prompt,
                          .generated_tokens = seq->generated,
                          .seconds = timer_now() - seq->job.t_accepted,
                          .finish_reason = why};
    if (seq->text && tokenizer_stream_flush(seq->text, &done.text, &done.text_len, NULL) < 0)
        done.text_len = 0;
    emit(ctx, &done);
    s_release(self, seq);
}

/* The text token completes, for its TOKEN event: EOS and other special
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
static void s_expire(sched_t *self, sched_emit_fn emit, void *ctx)
{
    const double now = timer_now();
    char msg[160];
    for (int i = 0; i < self->conf.max_seqs; i++) {
        seq_t *seq = &self->seqs[i];
        if (!seq->used || seq->job.deadline == 0 || now < seq->job.deadline)
            continue;
        snprintf(msg, sizeof msg, "the deadline of %d ms passed after %d generated tokens",
                 seq->job.deadline_ms, seq->generated);
        s_fail(&seq->job, WIRE_CLIENT_DEADLINE_EXCEEDED, msg, emit, ctx);
        s_release(self, seq);
    }
    for (int i = 0; i < self->q_len;) {
        job_t *job = &self->queue[(self->q_head + i) % self->conf.queue_limit];
        if (job->deadline == 0 || now < job->deadline) {
            i++;
            continue;
        }
        snprintf(msg, sizeof msg, "the deadline of %d ms passed while the request waited "
                 "for a slot", job->deadline_ms);
        s_fail(job, WIRE_CLIENT_DEADLINE_EXCEEDED, msg, emit, ctx);
        s_queue_remove(self, i);
    }
}

/* After a step: sample a token for every sequence whose logits are ready. */
static void s_advance(sched_t *self, int n, sched_emit_fn emit, void *ctx)
{
    for (int e = 0; e < n; e++) {
        seq_t *seq = &self->seqs[self->step_slot[e]];
        if (seq->prefilled < seq->job.n_prompt) {
            seq->prefilled += self->step[e].n;
            if (seq->prefilled < seq->job.n_prompt)
                continue; /* more prompt to go */
        }
        if (seq->job.max_tokens == 0) {
            s_finish(self, seq, "length", emit, ctx);
            continue;
        }
        err_t err = {0};
        int32_t token;
        if (sampler_sample(seq->sampler, seq->logits, &token, &err) < 0) {
            s_fail(&seq->job, WIRE_CLIENT_INTERNAL, err.msg, emit, ctx);
            s_release(self, seq);
            continue;
        }
        seq->generated++;
        const sampler_stop_t stop = sampler_check_stop(seq->sampler, token, seq->generated);
        sched_event_t ev = {.kind = SCHED_TOKEN, .client = &seq->job.client,
                            .request_id = seq->job.request_id, .token = token};
        s_token_text(self, seq, token, stop == SAMPLER_STOP_EOS, &ev);
        if (emit(ctx, &ev) < 0) { /* the client is gone: free its sequence */
            s_release(self, seq);
            continue;
        }
        if (stop != SAMPLER_CONTINUE) {
            s_finish(self, seq, sampler_stop_name(stop), emit, ctx);
            continue;
        }
        seq->last = token;
    }
}

/* After a step failed for missing experts: fails the step's sequences that
 * had a row needing one, keeps the others in order in the step. Returns how
 * many failed, or -1 (nothing changed) when no row was named. */
static int s_drop_lost(sched_t *self, int *n, const char *why, sched_emit_fn emit, void *ctx)
{
    int kept = 0, row = 0, failed = 0;
    bool any = false;
    for (int e = 0; e < *n; e++)
        for (int i = 0; i < self->step[e].n; i++)
            any |= self->conf.row_lost(self->conf.row_lost_ctx, row++);
    if (!any)
        return -1;
    row = 0;
    for (int e = 0; e < *n; e++) {
        bool lost = false;
        for (int i = 0; i < self->step[e].n; i++)
            lost |= self->conf.row_lost(self->conf.row_lost_ctx, row + i);
        row += self->step[e].n;
        seq_t *seq = &self->seqs[self->step_slot[e]];
        if (lost) {
            s_fail(&seq->job, WIRE_CLIENT_UNAVAILABLE, why, emit, ctx);
            s_release(self, seq);
            failed++;
            continue;
        }
        self->step[kept] = self->step[e];
        self->step_slot[kept++] = self->step_slot[e];
    }
    *n = kept;
    return failed;
}

void sched_step(sched_t *self, sched_emit_fn emit, void *ctx, double *seconds, uint64_t *rows)
{
    s_expire(self, emit, ctx);
    s_admit(self, emit, ctx);
    int n = s_plan(self);
    if (n == 0)
        return;
    err_t err = {0};
    const double t0 = timer_now();
    int rc = forward_step(self->fw, self->step, n, &err);
    while (rc < 0 && errno == EHOSTUNREACH && self->conf.row_lost) {
        if (s_drop_lost(self, &n, err.msg, emit, ctx) < 0 || n == 0)
            break; /* no row was named (fail them all below), or none is left */
        err = (err_t){0};
        rc = forward_step(self->fw, self->step, n, &err);
    }
    *seconds += timer_now() - t0;
    if (rc < 0) {
        wire_client_error_t code = wire_client_error_of(errno);
        for (int e = 0; e < n; e++) {
            seq_t *seq = &self->seqs[self->step_slot[e]];
            s_fail(&seq->job, code, err.msg, emit, ctx);
            s_release(self, seq);
        }
        return;
    }
    for (int e = 0; e < n; e++)
        *rows += (uint64_t)self->step[e].n;
    s_advance(self, n, emit, ctx);
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
static bool s_same_owner(const wire_peer_t *a, const wire_peer_t *b)
{
    if (a->user[0] || b->user[0])
        return strcmp(a->user, b->user) == 0;
    return s_same_client(a, b);
}

int sched_client_requests(const sched_t *self, const wire_peer_t *client)
{
    int n = 0;
    for (int i = 0; i < self->conf.max_seqs; i++)
        if (self->seqs[i].used && s_same_owner(&self->seqs[i].job.client, client))
            n++;
    for (int i = 0; i < self->q_len; i++)
        if (s_same_owner(&self->queue[(self->q_head + i) % self->conf.queue_limit].client,
                         client))
            n++;
    return n;
}
