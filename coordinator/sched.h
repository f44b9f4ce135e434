/* sched: continuous batching of GENERATE requests.
 *
 * Accepted requests wait in a bounded queue; a full queue is refused at once
 * (BUSY). Each step admits waiting requests into free sequence slots while
 * their KV caches fit the memory budget, then runs ONE forward step over the
 * next token of every decoding sequence plus prefill chunks of new ones, up to
 * a per-step token budget, so that new sequences join between steps and long
 * prompts are prefilled in chunks interleaved with decoding. The step
 * itself is the engine's (sched_engine_t): the scheduler knows slots, rows
 * and logits, not the model. Tokens leave as events that the caller takes
 * after each step (sched_next_event), so that nothing here calls back into
 * the caller. Every accepted request ends in exactly one DONE or FAILED
 * event: nothing is lost.
 */
#ifndef MOE_COORDINATOR_SCHED_H
#define MOE_COORDINATOR_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "engine/sampler.h"
#include "tokenizer/tokenizer.h"

/* One sequence's part of a step, as the scheduler hands it to its engine. */
typedef struct sched_item {
    int slot;                 /* the sequence's slot: the cache sched_open_fn gave it */
    const int32_t *tokens;    /* (n) at the next positions of that cache */
    int n;                    /* >= 1 */
    bool want_logits;         /* the last token's logits into logits */
    float *logits;            /* (vocab) */
} sched_item_t;

/* Bytes of cache one sequence of `positions` positions holds. */
typedef size_t (*sched_kv_bytes_fn)(void *ctx, int positions);
/* Gives slot (free) an empty cache of `positions` positions; -1 with errno/err. */
typedef int (*sched_open_fn)(void *ctx, int slot, int positions, err_t *err);
/* Frees slot's cache. */
typedef void (*sched_close_fn)(void *ctx, int slot);
/* Runs one step over items[0..n) (each slot at most once), their rows in
 * item order; -1 with errno/err, every cache then left as it was. */
typedef int (*sched_run_fn)(void *ctx, const sched_item_t *items, int n, err_t *err);
/* After a step failed with EHOSTUNREACH: true when row `row` of the step
 * needed an expert that no live node hosts. */
typedef bool (*sched_row_lost_fn)(void *ctx, int row);

/* What the scheduler drives: the forward pass and its caches (stepper.h), or a
 * test's fake. */
typedef struct sched_engine {
    void *ctx;                  /* given to every call */
    sched_kv_bytes_fn kv_bytes;
    sched_open_fn open;
    sched_close_fn close;
    sched_run_fn run;
    sched_row_lost_fn row_lost; /* NULL: a failed step fails all its sequences */
} sched_engine_t;

typedef struct sched_config {
    int max_seqs;         /* sequences decoding at once */
    int queue_limit;      /* requests waiting for a slot */
    int step_tokens;      /* rows per forward step (decode rows + prefill chunks) */
    size_t kv_memory;     /* bytes of KV cache all sequences may hold */
    int vocab_size;       /* logits per row */
    int n_eos;            /* the model's EOS ids: a sequence ends after one */
    int32_t eos[SAMPLER_MAX_EOS];
    const tokenizer_t *tokenizer; /* NULL, or decodes tokens into text events */
    int default_deadline_ms;      /* for requests that give none; 0: none */
} sched_config_t;

/* Who sent a request: the front end it came through (the server routes its
 * events back there) and that front end's id of the connection; two
 * requests are one client's when their user (an authenticated key) matches,
 * or, without one, their front end and id. */
enum { SCHED_CLIENT_ID_MAX = 255, SCHED_CLIENT_USER_MAX = 40 };
typedef struct sched_client {
    int front;                            /* the front end's index */
    size_t len;
    uint8_t id[SCHED_CLIENT_ID_MAX];
    char user[SCHED_CLIENT_USER_MAX + 1]; /* "" when none */
    char address[64];                     /* for logs only; "" when unknown */
} sched_client_t;

enum {
    SCHED_MAX_STOP = SAMPLER_MAX_STOP,  /* stop ids per request */
    SCHED_MAX_TOP_LOGPROBS = 20,        /* alternatives per token (OpenAI's limit) */
};

/* One GENERATE as the scheduler takes it: a prompt already in ids. */
typedef struct sched_request {
    uint64_t request_id;
    const int32_t *prompt;        /* (n_prompt), copied at submit */
    int n_prompt;
    int max_tokens;
    float temperature;            /* 0 greedy */
    int top_k;                    /* 0 off */
    float top_p;                  /* 0 and 1 are off */
    uint64_t seed;
    int n_stop;                   /* <= SCHED_MAX_STOP */
    const int32_t *stop_ids;      /* (n_stop) */
    int deadline_ms;              /* 0: the scheduler's default */
    bool ignore_eos;
    bool logprobs;                /* TOKEN events carry the token's log-probability */
    int top_logprobs;             /* and this many alternatives, 0..SCHED_MAX_TOP_LOGPROBS */
} sched_request_t;

/* Why a request failed or was refused. */
typedef enum sched_error {
    SCHED_OK = 0,
    SCHED_INVALID,        /* bad input: the request can never run */
    SCHED_BUSY,           /* the queue is full: try again later */
    SCHED_UNAVAILABLE,    /* an expert it needs has no live node */
    SCHED_INTERNAL,
    SCHED_CANCELLED,
    SCHED_DEADLINE,       /* its deadline passed */
} sched_error_t;

/* The error an errno stands for (EHOSTUNREACH, ETIMEDOUT, EPROTO: UNAVAILABLE;
 * EINVAL, ENOSPC, E2BIG: INVALID; EBUSY: BUSY; EINTR: CANCELLED; else INTERNAL). */
sched_error_t sched_error_of(int errnum);
/* "invalid", "busy", ... (static). */
const char *sched_error_name(sched_error_t code);

typedef enum sched_event_kind {
    SCHED_TOKEN = 1,      /* a new token of a request */
    SCHED_DONE,           /* the request finished (counts and timings) */
    SCHED_FAILED,         /* the request failed: code and message */
} sched_event_kind_t;

typedef struct sched_event {
    sched_event_kind_t kind;
    const sched_client_t *client;
    uint64_t request_id;
    int32_t token;                 /* TOKEN */
    int index;                     /* TOKEN: 0 for the first generated token */
    bool eos;                      /* TOKEN: one of the model's EOS ids */
    bool has_logprob;              /* TOKEN, when the request asked for logprobs: */
    float logprob;                 /*   log-softmax of the raw logits at token */
    int n_top;                     /*   the best n_top tokens, best first */
    const int32_t *top_ids;
    const float *top_logprobs;
    const char *text;              /* TOKEN, DONE: new text */
    size_t text_len;               /* 0 without a tokenizer or a completed character */
    int prompt_tokens;             /* DONE */
    int generated_tokens;          /* DONE */
    double seconds;                /* DONE: from acceptance to the end */
    double seconds_first;          /* DONE, and the TOKEN of index 0: from acceptance to
                                      the first token (0: none) */
    const char *finish_reason;     /* DONE: "length", "stop" or "eos" */
    sched_error_t code;            /* FAILED */
    const char *message;           /* FAILED */
} sched_event_t;

typedef struct sched sched_t;

/* engine is copied, its ctx borrowed; its run must take conf->step_tokens
 * rows and its open conf->max_seqs slots. NULL with errno/err. */
sched_t *sched_new(const sched_engine_t *engine, const sched_config_t *conf, err_t *err);
void sched_destroy(sched_t **self_p);

/* Queues a GENERATE whose prompt the caller checked (ids in the vocabulary,
 * prompt + max_tokens within the engine's context; req->prompt holds the
 * ids, also for a request that came as text). -1 with *code BUSY when the
 * queue is full, INVALID_ARGUMENT when the request can never fit the KV
 * budget or its sampling is invalid, INTERNAL when its slot cannot be set
 * up; err says why. The request's deadline (or the default) runs from now:
 * once past, queued or running, it ends in FAILED (DEADLINE_EXCEEDED) at the
 * next step and its memory is freed. */
int sched_submit(sched_t *self, const sched_client_t *client, const sched_request_t *req,
                 sched_error_t *code, err_t *err);

/* Cancels request_id of client, queued or running: queues its FAILED
 * (CANCELLED) event and frees its memory. -1/ENOENT when there is none. */
int sched_cancel(sched_t *self, const sched_client_t *client, uint64_t request_id);

/* The client of request_id has gone: frees the request, queued or running,
 * and forgets its events not yet taken, with no event of its own. -1/ENOENT
 * when there is none. */
int sched_drop(sched_t *self, const sched_client_t *client, uint64_t request_id);

/* True when a step has something to do. */
bool sched_has_work(const sched_t *self);

/* Admits, runs one engine step, samples and queues the events. When the step
 * fails because some experts have no live node (EHOSTUNREACH) and the
 * engine's row_lost tells which rows needed them, the sequences with such a
 * row fail (UNAVAILABLE, naming the expert and node) and the step runs again
 * without them (each retry drops at least one sequence). Any other failed
 * step fails every sequence in it (UNAVAILABLE when a node failed, else
 * INTERNAL). Sequences not in the step go on. Adds the engine's time and
 * rows to *seconds / *rows. Take every event (sched_next_event) before the
 * next step. */
void sched_step(sched_t *self, double *seconds, uint64_t *rows);

/* The oldest event not yet taken, in the order they happened: false when
 * there is none. Every accepted request ends in exactly one DONE or FAILED
 * event (or a sched_drop). The event's pointers are valid until the next call
 * on the scheduler; a TOKEN's text is decoded here, as it is taken. */
bool sched_next_event(sched_t *self, sched_event_t *event);

/* Requests of one client, queued and running: the same authenticated key
 * (client->user, under CURVE) or, without one, the same connection. */
int sched_client_requests(const sched_t *self, const sched_client_t *client);

int sched_running(const sched_t *self);     /* sequences in slots */
int sched_queued(const sched_t *self);      /* requests waiting */
size_t sched_kv_bytes(const sched_t *self); /* KV cache held now */

#endif /* MOE_COORDINATOR_SCHED_H */
