/* sched: continuous batching of GENERATE requests.
 *
 * Accepted requests wait in a bounded queue; a full queue is refused at once
 * (BUSY). Each step admits waiting requests into free sequence slots while
 * their KV caches fit the memory budget, then runs ONE forward step over the
 * next token of every decoding sequence plus prefill chunks of new ones, up to
 * a per-step token budget, so that new sequences join between steps and long
 * prompts are prefilled in chunks interleaved with decoding. Tokens leave
 * through an emit callback as they are made. Every accepted request ends in
 * exactly one DONE or FAILED event: nothing is lost.
 */
#ifndef MOE_COORDINATOR_SCHED_H
#define MOE_COORDINATOR_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "engine/forward.h"
#include "engine/sampler.h"
#include "proto/client_rpc.h"
#include "tokenizer/tokenizer.h"

/* After a forward step failed with EHOSTUNREACH: true when batch row `row`
 * needed an expert that no live node hosts (dispatch_row_lost). */
typedef bool (*sched_row_lost_fn)(void *ctx, int row);

typedef struct sched_config {
    int max_seqs;         /* sequences decoding at once */
    int queue_limit;      /* requests waiting for a slot */
    int step_tokens;      /* rows per forward step (decode rows + prefill chunks) */
    size_t kv_memory;     /* bytes of KV cache all sequences may hold */
    int max_context;      /* positions per sequence */
    int n_eos;            /* the model's EOS ids: a sequence ends after one */
    int32_t eos[SAMPLER_MAX_EOS];
    const tokenizer_t *tokenizer; /* NULL, or decodes tokens into text events */
    int default_deadline_ms;      /* for requests that give none; 0: none */
    sched_row_lost_fn row_lost;   /* NULL: a failed step fails all its sequences */
    void *row_lost_ctx;
} sched_config_t;

typedef enum sched_event_kind {
    SCHED_TOKEN = 1,      /* a new token of a request */
    SCHED_DONE,           /* the request finished (counts and timings) */
    SCHED_FAILED,         /* the request failed: code and message */
} sched_event_kind_t;

typedef struct sched_event {
    sched_event_kind_t kind;
    const wire_peer_t *client;
    uint64_t request_id;
    int32_t token;                 /* TOKEN */
    const char *text;              /* TOKEN, DONE: new text (borrowed for the call) */
    size_t text_len;               /* 0 without a tokenizer or a completed character */
    int prompt_tokens;             /* DONE */
    int generated_tokens;          /* DONE */
    double seconds;                /* DONE: from acceptance to the end */
    const char *finish_reason;     /* DONE: "length", "stop" or "eos" */
    wire_client_error_t code;      /* FAILED */
    const char *message;           /* FAILED */
} sched_event_t;

/* Delivers an event; returns -1 when the client is gone, which cancels the
 * request (for a TOKEN event; the return of DONE/FAILED is ignored). */
typedef int (*sched_emit_fn)(void *ctx, const sched_event_t *event);

typedef struct sched sched_t;

/* fw must allow conf->step_tokens rows and conf->max_context positions; it is
 * borrowed. NULL with errno/err. */
sched_t *sched_new(const config_t *cfg, forward_t *fw, const sched_config_t *conf,
                   err_t *err);
void sched_destroy(sched_t **self_p);

/* Queues a GENERATE whose prompt the caller checked (ids in the vocabulary,
 * prompt + max_tokens within max_context; req->prompt holds the ids, also for
 * a request that came as text). -1 with *code BUSY when the queue is full,
 * INVALID_ARGUMENT when the request can never fit the KV budget or its
 * sampling is invalid; err says why. The request's deadline (or the default)
 * runs from now: once past, queued or running, it ends in FAILED
 * (DEADLINE_EXCEEDED) at the next step and its memory is freed. */
int sched_submit(sched_t *self, const wire_peer_t *client, const wire_request_t *req,
                 wire_client_error_t *code, err_t *err);

/* Cancels request_id of client, queued or running: emits its FAILED
 * (CANCELLED) and frees its memory. -1/ENOENT when there is none. */
int sched_cancel(sched_t *self, const wire_peer_t *client, uint64_t request_id,
                 sched_emit_fn emit, void *ctx);

/* True when a step has something to do. */
bool sched_has_work(const sched_t *self);

/* Admits, runs one forward step, samples and emits. When the step fails
 * because some experts have no live node (EHOSTUNREACH) and conf->row_lost
 * tells which rows needed them, the sequences with such a row fail
 * (UNAVAILABLE, naming the expert and node) and the step runs again without
 * them (each retry drops at least one sequence). Any other failed step fails
 * every sequence in it (UNAVAILABLE when a node failed, else INTERNAL).
 * Sequences not in the step go on. Adds the forward time and rows to
 * *seconds / *rows. */
void sched_step(sched_t *self, sched_emit_fn emit, void *ctx, double *seconds,
                uint64_t *rows);

/* Requests of one client, queued and running: the same authenticated key
 * (client->user, under CURVE) or, without one, the same connection. */
int sched_client_requests(const sched_t *self, const wire_peer_t *client);

int sched_running(const sched_t *self);     /* sequences in slots */
int sched_queued(const sched_t *self);      /* requests waiting */
size_t sched_kv_bytes(const sched_t *self); /* KV cache held now */

#endif /* MOE_COORDINATOR_SCHED_H */
