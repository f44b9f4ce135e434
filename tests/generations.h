/* generations: a set of concurrent generations that a test sends to a
 * cluster's coordinator over the client protocol, receives to their ends
 * and holds to what moe-run prints for the same prompts (made by
 * crosscheck_prompts). Generation g is request 100 + g. */
#ifndef MOE_TESTS_GENERATIONS_H
#define MOE_TESTS_GENERATIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tests/localcluster.h"

enum { GENERATIONS_MAX = 32 };

/* One generation as a client sees it. */
typedef struct generation {
    char got[4096];            /* token ids, "a,b,c" */
    size_t used;
    int n_tokens;
    bool ended;
    bool failed;
    wire_client_error_t code;  /* when failed */
    char error[512];
} generation_t;

typedef struct generations {
    int n;                     /* <= GENERATIONS_MAX */
    int max_tokens;
    const int32_t *prompts;    /* prompt g: len[g] ids at prompts + g * stride */
    int stride;
    const int *len;
    const char *want;          /* moe-run's output for g at want + g * want_size */
    size_t want_size;
    generation_t gen[GENERATIONS_MAX];
} generations_t;

/* (Re)starts generation g: a GENERATE request for its prompt. */
void generations_send(generations_t *self, localcluster_conn_t *conn, int g);

/* generations_send() of every one. */
void generations_send_all(generations_t *self, localcluster_conn_t *conn);

/* Applies one reply to the generation it answers (fails the test if it
 * answers none, or one that has ended); returns that generation. */
generation_t *generations_take(generations_t *self, const wire_reply_t *rep);

/* Receives replies until every generation has at least min_tokens tokens or
 * has ended (min_tokens < 0: until all have ended). Returns the longest gap
 * between two replies (s). Fails the test after `seconds`. */
double generations_pump(generations_t *self, localcluster_conn_t *conn, int min_tokens,
                        double seconds);

/* Fails the test unless every generation completed with moe-run's output;
 * what names the case in the message. */
void generations_expect_all(const generations_t *self, const char *what);

#endif /* MOE_TESTS_GENERATIONS_H */
