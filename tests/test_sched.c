/* test_sched: the scheduler in one process, against a fake engine.
 *
 * The fake engine keeps one position count per slot, checks that every step
 * stays within its slots' caches and the step's row budget, and "predicts"
 * the token after t as (t + 1) % VOCAB (greedy sampling picks it), so every
 * generated token is known in advance. It can be told to refuse a cache or
 * to fail a step, naming the rows that lost their expert. Every loop here is
 * bounded by a count of steps.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "coordinator/sched.h"
#include "core/mem.h"
#include "tests/testutil.h"
#include "tokenizer/tokenizer.h"

enum { VOCAB = 50, SLOTS = 4, POSITION_BYTES = 100, MAX_STEPS = 200, MAX_EVENTS = 256 };

typedef struct fake {
    bool open[SLOTS];
    int capacity[SLOTS];        /* positions of the slot's cache */
    int len[SLOTS];             /* positions used */
    int n_open, n_close;
    int step_tokens;            /* the scheduler's row budget, checked */
    /* The last step, as run. */
    int n_items;
    int item_slot[SLOTS], item_n[SLOTS];
    bool item_logits[SLOTS];
    int n_steps;
    /* Faults. */
    bool refuse_open;           /* the next open fails (ENOMEM) */
    int fail_errno;             /* the next run fails with it (0: none) */
    int lost_slot;              /* with EHOSTUNREACH: rows of this slot lost (-1: none) */
    bool lost[64];              /* row -> lost, for row_lost */
} fake_t;

static size_t s_kv_bytes(void *ctx, int positions)
{
    (void)ctx;
    return (size_t)positions * POSITION_BYTES;
}

static int s_open(void *ctx, int slot, int positions, err_t *err)
{
    fake_t *f = ctx;
    assert_true(slot >= 0 && slot < SLOTS);
    assert_false(f->open[slot]); /* the scheduler never opens a slot twice */
    if (f->refuse_open) {
        f->refuse_open = false;
        return err_set(err, ENOMEM, "fake: no memory for %d positions", positions);
    }
    f->open[slot] = true;
    f->capacity[slot] = positions;
    f->len[slot] = 0;
    f->n_open++;
    return 0;
}

static void s_close(void *ctx, int slot)
{
    fake_t *f = ctx;
    assert_true(f->open[slot]);
    f->open[slot] = false;
    f->n_close++;
}

static int s_run(void *ctx, const sched_item_t *items, int n, err_t *err)
{
    fake_t *f = ctx;
    int rows = 0;
    f->n_items = n;
    for (int i = 0; i < n; i++) {
        assert_true(f->open[items[i].slot]);
        assert_true(items[i].n >= 1);
        f->item_slot[i] = items[i].slot;
        f->item_n[i] = items[i].n;
        f->item_logits[i] = items[i].want_logits;
        rows += items[i].n;
    }
    assert_true(rows <= f->step_tokens);
    if (f->fail_errno) {
        memset(f->lost, 0, sizeof f->lost);
        int row = 0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < items[i].n; j++, row++)
                f->lost[row] = items[i].slot == f->lost_slot;
        int e = f->fail_errno;
        f->fail_errno = 0;
        return err_set(err, e, "fake: the step failed");
    }
    for (int i = 0; i < n; i++) {
        const sched_item_t *it = &items[i];
        assert_true(f->len[it->slot] + it->n <= f->capacity[it->slot]);
        f->len[it->slot] += it->n;
        if (it->want_logits) {
            memset(it->logits, 0, VOCAB * sizeof(float));
            it->logits[(it->tokens[it->n - 1] + 1) % VOCAB] = 1.0f;
        }
    }
    f->n_steps++;
    return 0;
}

static bool s_row_lost(void *ctx, int row)
{
    const fake_t *f = ctx;
    return row >= 0 && row < 64 && f->lost[row];
}

/* What the test saw of one event. */
typedef struct seen {
    sched_event_kind_t kind;
    uint64_t request_id;
    int32_t token;
    int generated;
    int prompt_tokens;
    char finish[16];
    sched_error_t code;
} seen_t;

typedef struct harness {
    fake_t fake;
    sched_t *sched;
    sched_client_t client;
    seen_t events[MAX_EVENTS];
    int n_events;
    uint64_t rows;              /* rows the steps ran, as sched_step counts them */
    char text[1024];            /* every event's text, in order */
    size_t text_len;
} harness_t;

static void s_setup_with(harness_t *h, int max_seqs, int queue_limit, int step_tokens,
                         size_t kv_memory, int default_deadline_ms,
                         const tokenizer_t *tokenizer)
{
    memset(h, 0, sizeof *h);
    h->fake.step_tokens = step_tokens;
    h->fake.lost_slot = -1;
    sched_engine_t engine = {.ctx = &h->fake, .kv_bytes = s_kv_bytes, .open = s_open,
                             .close = s_close, .run = s_run, .row_lost = s_row_lost};
    sched_config_t conf = {.max_seqs = max_seqs, .queue_limit = queue_limit,
                           .step_tokens = step_tokens, .kv_memory = kv_memory,
                           .vocab_size = VOCAB, .n_eos = 1, .eos = {VOCAB - 1},
                           .default_deadline_ms = default_deadline_ms,
                           .tokenizer = tokenizer};
    err_t err = {0};
    h->sched = sched_new(&engine, &conf, &err);
    assert_non_null(h->sched);
    h->client.len = 3;
    memcpy(h->client.id, "abc", 3);
}

static void s_setup(harness_t *h, int max_seqs, int queue_limit, int step_tokens,
                    size_t kv_memory, int default_deadline_ms)
{
    s_setup_with(h, max_seqs, queue_limit, step_tokens, kv_memory, default_deadline_ms, NULL);
}

static void s_teardown(harness_t *h)
{
    sched_destroy(&h->sched);
    assert_null(h->sched);
    assert_int_equal(h->fake.n_open, h->fake.n_close); /* every cache freed */
}

/* Takes every waiting event. */
static void s_take(harness_t *h)
{
    sched_event_t ev;
    for (int n = 0; n < MAX_EVENTS && sched_next_event(h->sched, &ev); n++) {
        assert_true(h->n_events < MAX_EVENTS);
        seen_t *s = &h->events[h->n_events++];
        *s = (seen_t){.kind = ev.kind, .request_id = ev.request_id, .token = ev.token,
                      .generated = ev.generated_tokens, .prompt_tokens = ev.prompt_tokens,
                      .code = ev.code};
        if (ev.finish_reason)
            snprintf(s->finish, sizeof s->finish, "%s", ev.finish_reason);
        /* The text is read now, before the next call on the scheduler. */
        assert_true(h->text_len + ev.text_len < sizeof h->text);
        if (ev.text_len)
            memcpy(h->text + h->text_len, ev.text, ev.text_len);
        h->text_len += ev.text_len;
        h->text[h->text_len] = '\0';
        assert_int_equal(ev.client->len, 3);
    }
}

static void s_step(harness_t *h)
{
    double seconds = 0;
    sched_step(h->sched, &seconds, &h->rows);
    assert_true(seconds >= 0);
    s_take(h);
}

/* Steps until nothing is left to do (bounded); returns the steps taken. */
static int s_run_out(harness_t *h)
{
    int n = 0;
    for (; n < MAX_STEPS && sched_has_work(h->sched); n++)
        s_step(h);
    assert_false(sched_has_work(h->sched));
    return n;
}

static int s_submit(harness_t *h, uint64_t id, const int32_t *prompt, int n_prompt,
                    int max_tokens, int deadline_ms, sched_error_t *code)
{
    sched_request_t req = {.request_id = id, .n_prompt = n_prompt,
                          .prompt = prompt, .max_tokens = max_tokens,
                          .deadline_ms = deadline_ms};
    err_t err = {0};
    sched_error_t c;
    int rc = sched_submit(h->sched, &h->client, &req, code ? code : &c, &err);
    return rc;
}

/* The events of one request, in order; returns how many. */
static int s_events_of(const harness_t *h, uint64_t id, const seen_t **out, int max)
{
    int n = 0;
    for (int i = 0; i < h->n_events && n < max; i++)
        if (h->events[i].request_id == id)
            out[n++] = &h->events[i];
    return n;
}

static const seen_t *s_last_of(const harness_t *h, uint64_t id)
{
    const seen_t *last = NULL;
    for (int i = 0; i < h->n_events; i++)
        if (h->events[i].request_id == id)
            last = &h->events[i];
    return last;
}

static void s_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static const int32_t PROMPT[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};

/* One request: prefill, then one token per step, the last of them with DONE. */
static void test_generate(void **state)
{
    (void)state;
    harness_t h;
    s_setup(&h, 2, 4, 8, 100000, 0);
    assert_int_equal(s_submit(&h, 7, PROMPT, 3, 4, 0, NULL), 0);
    assert_int_equal(sched_running(h.sched), 1);
    assert_int_equal(sched_kv_bytes(h.sched), (3 + 4) * POSITION_BYTES);
    assert_int_equal(s_run_out(&h), 4);
    const seen_t *ev[8];
    assert_int_equal(s_events_of(&h, 7, ev, 8), 5);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(ev[i]->kind, SCHED_TOKEN);
        assert_int_equal(ev[i]->token, 4 + i); /* 3 -> 4 -> 5 ... */
    }
    assert_int_equal(ev[4]->kind, SCHED_DONE);
    assert_string_equal(ev[4]->finish, "length");
    assert_int_equal(ev[4]->prompt_tokens, 3);
    assert_int_equal(ev[4]->generated, 4);
    /* The cache held the prompt and every token but the last, and the step
     * counter saw as many rows. */
    assert_int_equal(h.fake.len[0], 3 + 3);
    assert_int_equal(h.rows, 3 + 3);
    assert_int_equal(sched_running(h.sched), 0);
    assert_int_equal(sched_kv_bytes(h.sched), 0);
    s_teardown(&h);
}

/* EOS ends a request early, and max_tokens 0 ends it after the prefill. */
static void test_eos_and_zero_tokens(void **state)
{
    (void)state;
    harness_t h;
    s_setup(&h, 2, 4, 8, 100000, 0);
    const int32_t near_eos[1] = {VOCAB - 3}; /* -> VOCAB-2 -> VOCAB-1 (EOS) */
    assert_int_equal(s_submit(&h, 1, near_eos, 1, 10, 0, NULL), 0);
    assert_int_equal(s_submit(&h, 2, PROMPT, 2, 0, 0, NULL), 0);
    s_run_out(&h);
    const seen_t *last = s_last_of(&h, 1);
    assert_int_equal(last->kind, SCHED_DONE);
    assert_string_equal(last->finish, "eos");
    assert_int_equal(last->generated, 2);
    last = s_last_of(&h, 2);
    assert_int_equal(last->kind, SCHED_DONE);
    assert_string_equal(last->finish, "length");
    assert_int_equal(last->generated, 0);
    s_teardown(&h);
}

/* A full queue refuses at once (BUSY); a request larger than the whole KV
 * budget is refused (INVALID_ARGUMENT); nothing refused reaches the engine. */
static void test_queue_limit_and_budget(void **state)
{
    (void)state;
    harness_t h;
    s_setup(&h, 1, 2, 8, 20 * POSITION_BYTES, 0);
    sched_error_t code;
    assert_int_equal(s_submit(&h, 1, PROMPT, 2, 2, 0, &code), 0);
    assert_int_equal(code, SCHED_OK);
    assert_int_equal(s_submit(&h, 2, PROMPT, 2, 2, 0, &code), 0);
    assert_int_equal(s_submit(&h, 3, PROMPT, 2, 2, 0, &code), 0);
    assert_int_equal(sched_queued(h.sched), 2);
    assert_int_equal(s_submit(&h, 4, PROMPT, 2, 2, 0, &code), -1);
    assert_int_equal(code, SCHED_BUSY);
    assert_int_equal(errno, EBUSY);
    assert_int_equal(s_submit(&h, 5, PROMPT, 12, 9, 0, &code), -1); /* 21 positions */
    assert_int_equal(code, SCHED_INVALID);
    assert_int_equal(sched_client_requests(h.sched, &h.client), 3);
    s_run_out(&h);
    for (uint64_t id = 1; id <= 3; id++)
        assert_int_equal(s_last_of(&h, id)->kind, SCHED_DONE);
    assert_null(s_last_of(&h, 4));
    assert_null(s_last_of(&h, 5));
    assert_int_equal(h.fake.n_open, 3);
    s_teardown(&h);
}

/* A long prompt is prefilled in chunks of the step budget, decoding rows go
 * first, and only the last chunk asks for logits. */
static void test_chunked_prefill(void **state)
{
    (void)state;
    harness_t h;
    s_setup(&h, 2, 4, 4, 100000, 0);
    assert_int_equal(s_submit(&h, 1, PROMPT, 1, 5, 0, NULL), 0);
    s_step(&h); /* request 1's prompt */
    assert_int_equal(s_submit(&h, 2, PROMPT, 10, 1, 0, NULL), 0);
    s_step(&h); /* 1 decodes (1 row), 2 prefills 3 */
    assert_int_equal(h.fake.n_items, 2);
    assert_int_equal(h.fake.item_slot[0], 0);
    assert_int_equal(h.fake.item_n[0], 1);
    assert_true(h.fake.item_logits[0]);
    assert_int_equal(h.fake.item_slot[1], 1);
    assert_int_equal(h.fake.item_n[1], 3);
    assert_false(h.fake.item_logits[1]);
    s_step(&h); /* 1 decodes, 2 prefills 3 more (6 of 10) */
    assert_int_equal(h.fake.item_n[1], 3);
    s_step(&h); /* ... 9 of 10 */
    s_step(&h); /* the last prompt token, with logits */
    assert_int_equal(h.fake.item_n[1], 1);
    assert_true(h.fake.item_logits[1]);
    const seen_t *ev[8];
    assert_int_equal(s_events_of(&h, 2, ev, 8), 2);
    assert_int_equal(ev[0]->kind, SCHED_TOKEN);
    assert_int_equal(ev[0]->token, 11); /* after the prompt's last token, 10 */
    assert_int_equal(ev[1]->kind, SCHED_DONE);
    s_run_out(&h);
    s_teardown(&h);
}

/* A deadline that passes fails the request, running or queued. */
static void test_deadlines(void **state)
{
    (void)state;
    harness_t h;
    s_setup(&h, 1, 4, 8, 100000, 5); /* default deadline 5 ms */
    assert_int_equal(s_submit(&h, 1, PROMPT, 2, 30, 0, NULL), 0);
    assert_int_equal(s_submit(&h, 2, PROMPT, 2, 30, 60000, NULL), 0); /* queued */
    assert_int_equal(s_submit(&h, 3, PROMPT, 2, 30, 1, NULL), 0);     /* queued */
    s_step(&h);
    s_sleep_ms(20);
    s_step(&h);
    const seen_t *last = s_last_of(&h, 1);
    assert_int_equal(last->kind, SCHED_FAILED);
    assert_int_equal(last->code, SCHED_DEADLINE);
    last = s_last_of(&h, 3);
    assert_int_equal(last->kind, SCHED_FAILED);
    assert_int_equal(last->code, SCHED_DEADLINE);
    /* Request 2 took the freed slot and runs on. */
    assert_int_equal(sched_running(h.sched), 1);
    assert_int_equal(sched_queued(h.sched), 0);
    s_run_out(&h);
    assert_int_equal(s_last_of(&h, 2)->kind, SCHED_DONE);
    s_teardown(&h);
}

/* Cancelling a running or a queued request fails it (CANCELLED) and frees
 * its memory; an unknown id is ENOENT; dropping forgets untaken events. */
static void test_cancel_and_drop(void **state)
{
    (void)state;
    harness_t h;
    s_setup(&h, 1, 4, 8, 100000, 0);
    assert_int_equal(s_submit(&h, 1, PROMPT, 2, 30, 0, NULL), 0);
    assert_int_equal(s_submit(&h, 2, PROMPT, 2, 30, 0, NULL), 0);
    assert_int_equal(s_submit(&h, 3, PROMPT, 2, 30, 0, NULL), 0);
    s_step(&h);
    assert_int_equal(sched_cancel(h.sched, &h.client, 2), 0); /* queued */
    assert_int_equal(sched_cancel(h.sched, &h.client, 1), 0); /* running */
    s_take(&h);
    assert_int_equal(s_last_of(&h, 1)->code, SCHED_CANCELLED);
    assert_int_equal(s_last_of(&h, 2)->code, SCHED_CANCELLED);
    assert_int_equal(sched_kv_bytes(h.sched), 0);
    assert_int_equal(sched_cancel(h.sched, &h.client, 99), -1);
    assert_int_equal(errno, ENOENT);
    sched_client_t other = h.client;
    other.id[0] = 'x';
    assert_int_equal(sched_cancel(h.sched, &other, 3), -1); /* not its request */
    /* Request 3 makes a token; its client goes before taking it. */
    s_step(&h);
    double seconds = 0;
    uint64_t rows = 0;
    sched_step(h.sched, &seconds, &rows);
    assert_int_equal(sched_drop(h.sched, &h.client, 3), 0);
    const int before = h.n_events;
    s_take(&h);
    assert_int_equal(h.n_events, before); /* its token was forgotten */
    assert_false(sched_has_work(h.sched));
    assert_int_equal(sched_drop(h.sched, &h.client, 3), -1);
    s_teardown(&h);
}

/* A request that fits the slots but not the KV budget waits, in order, and
 * none overtakes it; it runs once memory is freed. */
static void test_kv_budget(void **state)
{
    (void)state;
    harness_t h;
    s_setup(&h, 3, 4, 8, 10 * POSITION_BYTES, 0);
    assert_int_equal(s_submit(&h, 1, PROMPT, 2, 4, 0, NULL), 0); /* 6 positions */
    assert_int_equal(s_submit(&h, 2, PROMPT, 2, 4, 0, NULL), 0); /* 6: waits */
    assert_int_equal(s_submit(&h, 3, PROMPT, 1, 1, 0, NULL), 0); /* 2: fits, waits too */
    assert_int_equal(sched_running(h.sched), 1);
    assert_int_equal(sched_queued(h.sched), 2);
    s_step(&h);
    assert_int_equal(sched_running(h.sched), 1); /* nothing overtook request 2 */
    assert_true(sched_kv_bytes(h.sched) <= 10 * POSITION_BYTES);
    s_run_out(&h);
    for (uint64_t id = 1; id <= 3; id++)
        assert_int_equal(s_last_of(&h, id)->kind, SCHED_DONE);
    s_teardown(&h);
}

/* A finished request's slot is claimed again, fresh; a slot that cannot get
 * its cache fails only its request (INTERNAL). */
static void test_slot_reuse(void **state)
{
    (void)state;
    harness_t h;
    s_setup(&h, 1, 4, 8, 100000, 0);
    for (uint64_t id = 1; id <= 3; id++)
        assert_int_equal(s_submit(&h, id, PROMPT, 2, 2, 0, NULL), 0);
    s_run_out(&h);
    assert_int_equal(h.fake.n_open, 3);
    assert_int_equal(h.fake.n_close, 3);
    for (uint64_t id = 1; id <= 3; id++) {
        const seen_t *ev[4];
        assert_int_equal(s_events_of(&h, id, ev, 4), 3);
        assert_int_equal(ev[0]->token, 3); /* each starts from its own prompt */
        assert_int_equal(ev[2]->generated, 2);
    }
    sched_error_t code;
    h.fake.refuse_open = true;
    assert_int_equal(s_submit(&h, 4, PROMPT, 2, 2, 0, &code), -1);
    assert_int_equal(code, SCHED_INTERNAL);
    assert_int_equal(sched_running(h.sched), 0);
    /* Refused while admitted from the queue: a FAILED event, and the next
     * request still gets the slot. */
    assert_int_equal(s_submit(&h, 5, PROMPT, 2, 2, 0, NULL), 0);
    assert_int_equal(s_submit(&h, 6, PROMPT, 2, 2, 0, NULL), 0);
    assert_int_equal(s_submit(&h, 7, PROMPT, 2, 2, 0, NULL), 0);
    s_step(&h);
    h.fake.refuse_open = true;
    s_run_out(&h);
    assert_int_equal(s_last_of(&h, 5)->kind, SCHED_DONE);
    assert_int_equal(s_last_of(&h, 6)->kind, SCHED_FAILED);
    assert_int_equal(s_last_of(&h, 6)->code, SCHED_INTERNAL);
    assert_int_equal(s_last_of(&h, 7)->kind, SCHED_DONE);
    s_teardown(&h);
}

/* A step that lost some experts fails only the sequences with such a row
 * and runs again without them; any other failure fails the whole step. */
static void test_failed_steps(void **state)
{
    (void)state;
    harness_t h;
    s_setup(&h, 2, 4, 8, 100000, 0);
    assert_int_equal(s_submit(&h, 1, PROMPT, 2, 3, 0, NULL), 0);
    assert_int_equal(s_submit(&h, 2, PROMPT, 2, 3, 0, NULL), 0);
    h.fake.fail_errno = EHOSTUNREACH;
    h.fake.lost_slot = 1;
    s_step(&h);
    assert_int_equal(s_last_of(&h, 2)->kind, SCHED_FAILED);
    assert_int_equal(s_last_of(&h, 2)->code, SCHED_UNAVAILABLE);
    assert_int_equal(s_last_of(&h, 1)->kind, SCHED_TOKEN); /* ran again alone */
    assert_int_equal(h.fake.n_items, 1);
    assert_int_equal(s_submit(&h, 3, PROMPT, 2, 3, 0, NULL), 0);
    h.fake.fail_errno = EIO;
    const uint64_t rows = h.rows;
    s_step(&h);
    assert_int_equal(h.rows, rows); /* a failed step counts no rows */
    assert_int_equal(s_last_of(&h, 1)->code, SCHED_INTERNAL);
    assert_int_equal(s_last_of(&h, 3)->code, SCHED_INTERNAL);
    assert_false(sched_has_work(h.sched));
    assert_int_equal(sched_kv_bytes(h.sched), 0);
    s_teardown(&h);
}

/* With a tokenizer, the texts of a request's events add up to the decoded
 * tokens, and a slot's next request starts with a clean text stream. */
static void test_text_events(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/qwen3/tokenizer.json",
             testutil_env("MOE_TOKENIZERS", "../shared/tokenizers"));
    err_t err = {0};
    tokenizer_t *tok = tokenizer_load(path, &err);
    if (!tok)
        fail_msg("%s", err.msg);
    harness_t h;
    s_setup_with(&h, 1, 4, 8, 100000, 0, tok);
    const int32_t prompt[2] = {10, 20};
    assert_int_equal(s_submit(&h, 1, prompt, 2, 5, 0, NULL), 0);
    assert_int_equal(s_submit(&h, 2, prompt, 2, 5, 0, NULL), 0); /* the same slot, later */
    s_run_out(&h);
    const int32_t tokens[10] = {21, 22, 23, 24, 25, 21, 22, 23, 24, 25};
    char *want = NULL;
    assert_int_equal(tokenizer_decode(tok, tokens, 10, &want, &err), 0);
    assert_true(h.text_len > 0);
    assert_string_equal(h.text, want);
    mem_free(want);
    s_teardown(&h);
    tokenizer_destroy(&tok);
}

/* Invalid limits and invalid sampling are refused. */
static void test_invalid(void **state)
{
    (void)state;
    fake_t f = {0};
    sched_engine_t engine = {.ctx = &f, .kv_bytes = s_kv_bytes, .open = s_open,
                             .close = s_close, .run = s_run};
    sched_config_t conf = {.max_seqs = 0, .queue_limit = 1, .step_tokens = 1,
                           .vocab_size = VOCAB};
    err_t err = {0};
    assert_null(sched_new(&engine, &conf, &err));
    assert_int_equal(errno, EINVAL);
    harness_t h;
    s_setup(&h, 1, 1, 8, 100000, 0);
    sched_request_t req = {.request_id = 1, .n_prompt = 1, .prompt = PROMPT, .max_tokens = 1,
                          .temperature = -1};
    sched_error_t code;
    assert_int_equal(sched_submit(h.sched, &h.client, &req, &code, &err), -1);
    assert_int_equal(code, SCHED_INVALID);
    s_teardown(&h);
}

/* A request with logprobs: each TOKEN carries the log-softmax of its logits
 * at the token and the best alternatives, best first (ties to the lower id);
 * the first token carries the time to it; top_logprobs beyond 20 is refused. */
static void test_logprobs(void **state)
{
    (void)state;
    harness_t h;
    s_setup(&h, 2, 4, 8, 100000, 0);
    sched_request_t req = {.request_id = 1, .n_prompt = 3, .prompt = PROMPT, .max_tokens = 3,
                           .logprobs = true, .top_logprobs = 3};
    sched_error_t code;
    err_t err = {0};
    assert_int_equal(sched_submit(h.sched, &h.client, &req, &code, &err), 0);
    /* The fake's logits: 1 at the next token, 0 elsewhere. */
    const double chosen = 1.0 - log(exp(1.0) + (VOCAB - 1));
    const double other = 0.0 - log(exp(1.0) + (VOCAB - 1));
    int tokens = 0;
    for (int step = 0; step < MAX_STEPS && sched_has_work(h.sched); step++) {
        double seconds = 0;
        sched_step(h.sched, &seconds, &h.rows);
        sched_event_t ev;
        while (sched_next_event(h.sched, &ev)) {
            if (ev.kind != SCHED_TOKEN)
                continue;
            assert_true(ev.has_logprob);
            assert_int_equal(ev.index, tokens);
            assert_true(fabs(ev.logprob - chosen) < 1e-5);
            assert_int_equal(ev.n_top, 3);
            assert_int_equal(ev.top_ids[0], ev.token);
            assert_true(fabs(ev.top_logprobs[0] - chosen) < 1e-5);
            /* then the lowest ids among the equal rest */
            assert_int_equal(ev.top_ids[1], ev.token == 0 ? 1 : 0);
            assert_true(fabs(ev.top_logprobs[1] - other) < 1e-5);
            if (tokens == 0)
                assert_true(ev.seconds_first >= 0);
            tokens++;
        }
    }
    assert_int_equal(tokens, 3);
    req.request_id = 2;
    req.top_logprobs = SCHED_MAX_TOP_LOGPROBS + 1;
    assert_int_equal(sched_submit(h.sched, &h.client, &req, &code, &err), -1);
    assert_int_equal(code, SCHED_INVALID);
    s_teardown(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate),
        cmocka_unit_test(test_eos_and_zero_tokens),
        cmocka_unit_test(test_queue_limit_and_budget),
        cmocka_unit_test(test_chunked_prefill),
        cmocka_unit_test(test_deadlines),
        cmocka_unit_test(test_cancel_and_drop),
        cmocka_unit_test(test_kv_budget),
        cmocka_unit_test(test_slot_reuse),
        cmocka_unit_test(test_failed_steps),
        cmocka_unit_test(test_text_events),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_logprobs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
