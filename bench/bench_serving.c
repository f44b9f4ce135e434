/* bench-serving: aggregate decode speed of a running cluster with 1, 4, 16
 * and 64 concurrent sequences (each its own client on its own thread), and
 * the latency a user sees: time to first token and time between tokens
 * (p50, p99). The ratio that matters: aggregate tokens/s at N sequences over
 * the rate of one (goal at 16: >= 6x).
 *
 *   bench-serving --endpoint EP[,EP...] [--concurrency 1,4,16,64] [--prompt-len 16]
 *                 [--tokens 64]
 *
 * With several endpoints (the coordinators of one cluster, as `local.sh up
 * --coordinators C` prints them), client i talks to endpoint i mod C, and the
 * warm-up runs one sequence on each.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/workload.h"
#include "client/client.h"
#include "core/arg.h"
#include "core/idlist.h"
#include "core/mem.h"
#include "core/timer.h"

enum { MAX_CLIENTS = 256, MAX_TOKENS = 4096, MAX_ENDPOINTS = 64 };

typedef struct worker {
    const char *endpoint;
    int32_t prompt[64];
    int n_prompt;
    int n_tokens;
    double t_sent;
    double stamps[MAX_TOKENS];   /* arrival time of each token */
    int n_stamps;
    int rc;
    err_t err;
} worker_t;

static int s_on_chunk(const client_chunk_t *chunk, void *arg)
{
    worker_t *w = arg;
    double now = timer_now();
    for (int i = 0; i < chunk->n_tokens && w->n_stamps < MAX_TOKENS; i++)
        w->stamps[w->n_stamps++] = now;
    return 0;
}

static void *s_run(void *arg)
{
    worker_t *w = arg;
    client_t *c = client_connect(w->endpoint, 600000, &w->err);
    w->rc = -1;
    if (c) {
        /* Every token counts: a random-weight model's EOS must not end it early. */
        client_gen_t gen = {.prompt = w->prompt, .n_prompt = w->n_prompt,
                            .max_tokens = w->n_tokens, .ignore_eos = true};
        client_result_t res;
        w->t_sent = timer_now();
        w->rc = client_generate_full(c, &gen, s_on_chunk, w, &res, &w->err);
        client_result_fini(&res);
        client_destroy(&c);
    }
    return NULL;
}

static double s_percentile(double *v, int n, double p)
{
    workload_median(v, n); /* sorts */
    int i = (int)(p * (n - 1) + 0.5);
    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

/* Runs n concurrent generations, client i on eps[i % n_eps]; prints one
 * line; *rate gets tokens/s. */
static int s_level(const char *const *eps, int n_eps, int n, int prompt_len, int n_tokens,
                   double *rate)
{
    worker_t *w = mem_calloc((size_t)n, sizeof *w);
    pthread_t *th = mem_calloc((size_t)n, sizeof *th);
    double *ttft = mem_calloc((size_t)n, sizeof *ttft);
    double *tbt = mem_calloc((size_t)n * n_tokens + 1, sizeof *tbt);
    int rc = -1, n_tbt = 0;
    if (!w || !th || !ttft || !tbt)
        goto done;
    for (int i = 0; i < n; i++) {
        w[i].endpoint = eps[i % n_eps];
        w[i].n_prompt = prompt_len;
        w[i].n_tokens = n_tokens;
        workload_prompt(w[i].prompt, prompt_len, 256);
        for (int j = 0; j < prompt_len; j++) /* a different prompt for each client */
            w[i].prompt[j] = (w[i].prompt[j] + 7 * i + j) % 256;
    }
    const double t0 = timer_now();
    for (int i = 0; i < n; i++)
        pthread_create(&th[i], NULL, s_run, &w[i]);
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    const double wall = timer_now() - t0;
    long total = 0;
    for (int i = 0; i < n; i++) {
        if (w[i].rc < 0) {
            fprintf(stderr, "bench-serving: client %d: %s\n", i, w[i].err.msg);
            goto done;
        }
        total += w[i].n_stamps;
        ttft[i] = w[i].stamps[0] - w[i].t_sent;
        for (int k = 1; k < w[i].n_stamps; k++)
            tbt[n_tbt++] = w[i].stamps[k] - w[i].stamps[k - 1];
    }
    *rate = (double)total / wall;
    printf("  %3d sequences: %7.1f tokens/s aggregate; time to first token p50 %.0f ms, "
           "p99 %.0f ms; between tokens p50 %.1f ms, p99 %.1f ms\n", n, *rate,
           1e3 * s_percentile(ttft, n, 0.5), 1e3 * s_percentile(ttft, n, 0.99),
           1e3 * s_percentile(tbt, n_tbt, 0.5), 1e3 * s_percentile(tbt, n_tbt, 0.99));
    rc = 0;
done:
    mem_free(w);
    mem_free(th);
    mem_free(ttft);
    mem_free(tbt);
    return rc;
}

static void s_usage(FILE *out)
{
    fprintf(out, "usage: bench-serving --endpoint EP[,EP...] [--concurrency 1,4,16,64] "
                 "[--prompt-len 16] [--tokens 64]\n");
}

typedef struct options {
    const char *endpoint;
    const char *levels;     /* concurrency levels, comma-separated */
    int prompt_len;
    int n_tokens;
} options_t;

/* --endpoint is required (an arg_check_fn). */
static int s_check(void *ctx, err_t *err)
{
    const options_t *o = ctx;
    return o->endpoint ? 0 : err_set(err, EINVAL, "--endpoint is required");
}

int main(int argc, char **argv)
{
    options_t o = {.levels = "1,4,16,64", .prompt_len = 16, .n_tokens = 64};
    const arg_opt_t table[] = {
        ARG_OPT_STRING("--endpoint", &o.endpoint),
        ARG_OPT_STRING("--concurrency", &o.levels),
        ARG_OPT_INT("--prompt-len", &o.prompt_len, 1, 64),
        ARG_OPT_INT("--tokens", &o.n_tokens, 1, MAX_TOKENS),
        ARG_OPT_END,
    };
    if (arg_parse_main("bench-serving", argc, argv, table, s_usage, s_check, &o) < 0)
        return 2;
    char *list = mem_strdup(o.endpoint);
    const char *eps[MAX_ENDPOINTS];
    int n_eps = 0;
    for (char *save = NULL, *ep = list ? strtok_r(list, ",", &save) : NULL;
         ep && n_eps < MAX_ENDPOINTS; ep = strtok_r(NULL, ",", &save))
        eps[n_eps++] = ep;
    if (n_eps == 0) {
        fprintf(stderr, "bench-serving: --endpoint: no endpoint in '%s'\n", o.endpoint);
        mem_free(list);
        return 2;
    }
    int prompt_len = o.prompt_len, n_tokens = o.n_tokens;
    int32_t *n_list = NULL;
    int n_levels = 0;
    if (idlist_option("bench-serving", "--concurrency", o.levels, &n_list, &n_levels) < 0) {
        mem_free(list);
        return 2;
    }
    printf("bench-serving: %d-token prompts, %d tokens each", prompt_len, n_tokens);
    if (n_eps > 1)
        printf(", clients spread over %d coordinators", n_eps);
    printf("\n");
    double one = 0, rate = 0;
    printf("  (warm-up, not counted)\n");
    /* Pages the weights in, on every coordinator. */
    if (s_level(eps, n_eps, n_eps, prompt_len, n_tokens, &rate) < 0) {
        mem_free(n_list);
        mem_free(list);
        return 1;
    }
    for (int i = 0; i < n_levels; i++) {
        if (n_list[i] < 1 || n_list[i] > MAX_CLIENTS ||
            s_level(eps, n_eps, n_list[i], prompt_len, n_tokens, &rate) < 0) {
            mem_free(n_list);
            mem_free(list);
            return 1;
        }
        if (n_list[i] == 1)
            one = rate;
        else if (one > 0)
            printf("      -> %.2fx the rate of one sequence%s\n", rate / one,
                   n_list[i] == 16 ? " (goal at 16: >= 6x)" : "");
    }
    mem_free(n_list);
    mem_free(list);
    return 0;
}
