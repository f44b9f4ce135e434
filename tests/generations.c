/* generations: see generations.h. */
#include "tests/generations.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "core/timer.h"

void generations_send(generations_t *self, localcluster_conn_t *conn, int g)
{
    assert_true(g >= 0 && g < self->n && self->n <= GENERATIONS_MAX);
    self->gen[g] = (generation_t){0};
    wire_request_t req = {.type = WIRE_REQ_GENERATE, .request_id = 100 + (uint64_t)g,
                          .n_prompt = self->len[g],
                          .prompt = self->prompts + (size_t)g * self->stride,
                          .max_tokens = self->max_tokens};
    localcluster_send(conn, &req);
}

void generations_send_all(generations_t *self, localcluster_conn_t *conn)
{
    for (int g = 0; g < self->n; g++)
        generations_send(self, conn, g);
}

generation_t *generations_take(generations_t *self, const wire_reply_t *rep)
{
    const int g = (int)rep->request_id - 100;
    assert_true(g >= 0 && g < self->n);
    generation_t *gen = &self->gen[g];
    assert_false(gen->ended);
    if (rep->type == WIRE_REP_ERROR) {
        gen->ended = gen->failed = true;
        gen->code = rep->error_code;
        snprintf(gen->error, sizeof gen->error, "%s",
                 rep->error_message ? rep->error_message : "");
        return gen;
    }
    assert_int_equal(rep->type, WIRE_REP_TOKENS);
    for (int i = 0; i < rep->n_tokens && gen->used < sizeof gen->got - 16; i++)
        gen->used += (size_t)snprintf(gen->got + gen->used, sizeof gen->got - gen->used,
                                      "%s%d", gen->n_tokens++ ? "," : "", (int)rep->tokens[i]);
    gen->ended = rep->final;
    return gen;
}

double generations_pump(generations_t *self, localcluster_conn_t *conn, int min_tokens,
                        double seconds)
{
    const double deadline = timer_now() + seconds;
    double last = timer_now(), gap = 0;
    for (;;) {
        bool enough = true;
        for (int g = 0; g < self->n; g++)
            enough &= self->gen[g].ended ||
                      (min_tokens >= 0 && self->gen[g].n_tokens >= min_tokens);
        if (enough)
            return gap;
        if (timer_now() > deadline)
            fail_msg("generations still running after %.0f s", seconds);
        wire_reply_t rep;
        localcluster_recv(conn, &rep, "no reply from the coordinator");
        const double now = timer_now();
        gap = now - last > gap ? now - last : gap;
        last = now;
        generations_take(self, &rep);
    }
}

void generations_expect_all(const generations_t *self, const char *what)
{
    for (int g = 0; g < self->n; g++) {
        const generation_t *gen = &self->gen[g];
        const char *want = self->want + (size_t)g * self->want_size;
        if (gen->failed)
            fail_msg("%s: generation %d failed: %s", what, g, gen->error);
        if (strcmp(gen->got, want) != 0)
            fail_msg("%s: generation %d printed\n  %s\nbut moe-run\n  %s", what, g, gen->got,
                     want);
    }
}
