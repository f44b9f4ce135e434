/* test_http_clients: the OpenAI-compatible HTTP API of a real local cluster
 * (cluster/local.sh up --http 127.0.0.1:PORT --api-key KEY), through real
 * clients: the official OpenAI client library (npm "openai", the scripts of
 * tests/http/), curl for the raw protocol (SSE framing, error bodies and
 * statuses), 64 concurrent streaming clients, and hostile HTTP over raw
 * sockets (malformed JSON, wrong types, a 100 MB body, a header flood,
 * connections that send nothing, a client that stops reading a stream):
 * each gets an error or a closed connection, the server never crashes,
 * stalls or leaks a sequence. Greedy answers over HTTP are moe-run's for the
 * same prompt ids, and GET /metrics is read by prometheus_client's parser.
 *
 * Every loop is bounded in count and time: sockets have receive and send
 * timeouts, reads have deadlines, and child programs run under timeout(1).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <jansson.h>

#include "core/idlist.h"
#include "core/mem.h"
#include "core/timer.h"
#include "proto/client_rpc.h"
#include "tests/crosscheck.h"
#include "tests/localcluster.h"
#include "tests/testutil.h"
#include "tokenizer/tokenizer.h"

#define API_KEY "test-key-0123"
#define PROMPT "Experts live on many machines."

static char s_bin[512];
static char *s_tmp;
static char s_model[1024];      /* the model folder */
static char s_run_dir[1100];    /* the main cluster's */
static char *s_endpoint;        /* its ZeroMQ client endpoint (status) */
static int s_port;              /* its HTTP port */
static char s_url[64];          /* http://127.0.0.1:PORT */
static char s_model_id[256];    /* what GET /v1/models calls it */
static bool s_up, s_up_failed;

/* ---- small helpers ------------------------------------------------------------ */

/* Peak resident memory (VmHWM) of a process, bytes; 0 when unknown. */
static size_t s_peak_rss(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    size_t kb = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %zu kB", &kb) == 1)
            break;
    fclose(f);
    return kb * 1024;
}

static bool s_alive(pid_t pid)
{
    return testutil_running(pid);
}

/* ---- raw HTTP --------------------------------------------------------------------- */

/* A TCP connection to port with send/receive timeouts of timeout_s; rcvbuf
 * > 0 sets a small receive buffer (before connect: the window). -1 when
 * it cannot connect. */
static int s_connect_port(int port, double timeout_s, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = (time_t)timeout_s,
                         .tv_usec = (suseconds_t)((timeout_s - (time_t)timeout_s) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int s_connect(double timeout_s)
{
    return s_connect_port(s_port, timeout_s, 0);
}

/* Sends all of p; false when the peer refused (closed, reset, timeout). */
static bool s_send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        c += w;
        n -= (size_t)w;
    }
    return true;
}

/* Reads until the peer closes, an error, max bytes or timeout_s seconds
 * have passed. Returns the bytes (malloc'd, NUL-terminated) and their count
 * in *n; *closed says whether the peer closed (EOF or reset). */
static char *s_read_all(int fd, size_t *n, double timeout_s, size_t max, bool *closed)
{
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap + 1);
    assert_non_null(buf);
    const double end = timer_now() + timeout_s;
    bool eof = false;
    while (len < max) {
        double left = end - timer_now();
        if (left <= 0)
            break;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = poll(&pfd, 1, (int)(left * 1000) + 1);
        if (pr <= 0)
            continue; /* the loop's deadline ends it */
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            assert_non_null(buf);
        }
        ssize_t r = recv(fd, buf + len, cap - len, 0);
        if (r <= 0) {
            eof = true;
            break;
        }
        len += (size_t)r;
    }
    buf[len] = '\0';
    *n = len;
    if (closed)
        *closed = eof;
    return buf;
}

/* A response as read. */
typedef struct s_resp {
    int status;     /* 0: no status line (the server closed without a reply) */
    char *head;     /* the header block, lowercased, malloc'd ("" when none) */
    char *body;     /* the body, de-chunked, NUL-terminated, malloc'd */
    size_t body_len;
    json_t *json;   /* the body as JSON, or NULL */
} s_resp_t;

static void s_resp_free(s_resp_t *r)
{
    free(r->head);
    free(r->body);
    json_decref(r->json);
    *r = (s_resp_t){0};
}

/* The value of header name (lowercase) in head, into out (lowercased). */
static bool s_header(const s_resp_t *r, const char *name, char *out, size_t size)
{
    char key[128];
    snprintf(key, sizeof key, "\n%s:", name);
    const char *p = r->head ? strstr(r->head, key) : NULL;
    if (!p)
        return false;
    p += strlen(key);
    while (*p == ' ')
        p++;
    size_t k = strcspn(p, "\r\n");
    snprintf(out, size, "%.*s", (int)k, p);
    return true;
}

/* Parses raw (a whole response read until close) into r. */
static void s_parse_resp(const char *raw, size_t n, s_resp_t *r)
{
    *r = (s_resp_t){0};
    r->head = strdup("");
    r->body = strdup("");
    const char *end = strstr(raw, "\r\n\r\n");
    if (n < 12 || strncmp(raw, "HTTP/1.", 7) != 0 || !end)
        return;
    r->status = atoi(raw + 9);
    free(r->head);
    r->head = strndup(raw, (size_t)(end - raw) + 2);
    for (char *p = r->head; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    const char *b = end + 4;
    size_t blen = n - (size_t)(b - raw);
    char te[64] = "";
    free(r->body);
    if (s_header(r, "transfer-encoding", te, sizeof te) && strstr(te, "chunked")) {
        char *out = malloc(blen + 1);
        assert_non_null(out);
        size_t o = 0;
        const char *p = b, *stop = b + blen;
        while (p < stop) {
            char *e;
            unsigned long k = strtoul(p, &e, 16);
            const char *nl = strstr(e, "\r\n");
            if (!nl || k == 0 || (size_t)(stop - (nl + 2)) < k)
                break;
            memcpy(out + o, nl + 2, k);
            o += k;
            p = nl + 2 + k + 2;
        }
        out[o] = '\0';
        r->body = out;
        r->body_len = o;
    } else {
        r->body = strndup(b, blen);
        r->body_len = blen;
    }
    r->json = json_loadb(r->body, r->body_len, JSON_ALLOW_NUL, NULL);
}

/* One request on a fresh connection ("Connection: close"), its response
 * read whole within timeout_s. headers: extra header lines, each ending in
 * \r\n (NULL: none); auth: send the Bearer key. */
static void s_http(const char *method, const char *path, const char *headers, bool auth,
                   const char *body, double timeout_s, s_resp_t *r)
{
    int fd = s_connect(timeout_s);
    if (fd < 0)
        fail_msg("cannot connect to %s", s_url);
    char head[4096];
    size_t blen = body ? strlen(body) : 0;
    snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s"
             "Content-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n"
             "%s\r\n", method, path, s_port, auth ? "Authorization: Bearer " API_KEY "\r\n" : "",
             blen, headers ? headers : "");
    bool sent = s_send_all(fd, head, strlen(head)) && (!body || s_send_all(fd, body, blen));
    size_t n;
    char *raw = s_read_all(fd, &n, timeout_s, (size_t)64 << 20, NULL);
    close(fd);
    s_parse_resp(raw, n, r);
    if (!sent && r->status == 0)
        fail_msg("%s %s: could not send the request, and no reply", method, path);
    free(raw);
}

/* The request body of a completion (prompt: text, or ids when ids != NULL). */
static char *s_completion_body(const char *prompt, const int32_t *ids, int n_ids, int max_tokens,
                               bool stream, const char *extra_json)
{
    json_t *o = json_pack("{sssisfsb}", "model", s_model_id, "max_tokens", max_tokens,
                          "temperature", 0.0, "stream", stream);
    if (ids) {
        json_t *a = json_array();
        for (int i = 0; i < n_ids; i++)
            json_array_append_new(a, json_integer(ids[i]));
        json_object_set_new(o, "prompt", a);
    } else {
        json_object_set_new(o, "prompt", json_string(prompt));
    }
    if (extra_json) {
        json_t *x = json_loads(extra_json, 0, NULL);
        assert_non_null(x);
        json_object_update(o, x);
        json_decref(x);
    }
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* An OpenAI error body: {"error": {"message": "...", "type": "...", ...}}. */
static void s_expect_error(const s_resp_t *r, int status, const char *what)
{
    if (r->status != status)
        fail_msg("%s: HTTP %d, expected %d; body: %.300s", what, r->status, status, r->body);
    json_t *e = json_object_get(r->json, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *type = json_string_value(json_object_get(e, "type"));
    if (!msg || !*msg || !type)
        fail_msg("%s: not an OpenAI error body: %.300s", what, r->body);
    char ct[128] = "";
    s_header(r, "content-type", ct, sizeof ct);
    if (!strstr(ct, "application/json"))
        fail_msg("%s: error Content-Type '%s'", what, ct);
}

/* ---- server-sent events ---------------------------------------------------------- */

/* Splits an SSE body into its data payloads: every event is one line
 * "data: X" followed by a blank line, the last X is [DONE] and nothing
 * follows it. Returns the JSON chunks (before [DONE]) or fails naming what
 * is wrong. */
static json_t *s_sse_chunks(const char *body, const char *what)
{
    json_t *chunks = json_array();
    const char *p = body;
    bool done = false;
    int n = 0;
    while (*p) {
        if (done)
            fail_msg("%s: data after [DONE]: %.200s", what, p);
        const char *e = strstr(p, "\n\n");
        if (!e)
            fail_msg("%s: event %d not ended by a blank line: %.200s", what, n, p);
        if (strncmp(p, "data: ", 6) != 0)
            fail_msg("%s: event %d is not 'data: ...': %.200s", what, n, p);
        const char *d = p + 6;
        if (memchr(d, '\n', (size_t)(e - d)))
            fail_msg("%s: event %d has more than one line", what, n);
        if ((size_t)(e - d) == 6 && strncmp(d, "[DONE]", 6) == 0) {
            done = true;
        } else {
            json_error_t jerr;
            json_t *j = json_loadb(d, (size_t)(e - d), JSON_ALLOW_NUL, &jerr);
            if (!j)
                fail_msg("%s: event %d is not JSON (%s): %.200s", what, n, jerr.text, d);
            json_array_append_new(chunks, j);
        }
        n++;
        p = e + 2;
    }
    if (!done)
        fail_msg("%s: no 'data: [DONE]' at the end (%d events)", what, n);
    return chunks;
}

/* The text of a completions stream (choices[0].text put together) and its
 * finish_reason (copied into finish). */
static char *s_sse_text(json_t *chunks, const char *field, char *finish, size_t size)
{
    size_t cap = 256, len = 0, i;
    char *text = calloc(1, cap);
    json_t *c;
    finish[0] = '\0';
    json_array_foreach(chunks, i, c) {
        json_t *ch = json_array_get(json_object_get(c, "choices"), 0);
        if (!ch)
            continue;
        const char *t = strcmp(field, "content") == 0
                            ? json_string_value(json_object_get(json_object_get(ch, "delta"),
                                                                "content"))
                            : json_string_value(json_object_get(ch, field));
        if (t) {
            size_t k = strlen(t);
            if (len + k + 1 > cap) {
                cap = 2 * (len + k + 1);
                text = realloc(text, cap);
            }
            memcpy(text + len, t, k + 1);
            len += k;
        }
        const char *f = json_string_value(json_object_get(ch, "finish_reason"));
        if (f)
            snprintf(finish, size, "%s", f);
    }
    return text;
}

/* ---- the cluster ------------------------------------------------------------------- */

static int s_group_setup(void **state)
{
    snprintf(s_bin, sizeof s_bin, "%s", testutil_env("MOE_BIN", "build/bin"));
    s_tmp = testutil_mkdtemp("test_http_clients");
    *state = s_tmp;
    signal(SIGPIPE, SIG_IGN);
    return s_tmp ? 0 : -1;
}

static int s_group_teardown(void **state)
{
    (void)state;
    if (s_up) { /* a case failed before test_zz_down: stop it anyway */
        char cmd[2048];
        snprintf(cmd, sizeof cmd, "cluster/local.sh down --run-dir '%s' >/dev/null 2>&1",
                 s_run_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "test_http_clients: local.sh down failed\n");
    }
    free(s_endpoint);
    testutil_rmtree(s_tmp);
    free(s_tmp);
    return 0;
}

/* Starts a cluster of the tiny model with HTTP on a port the coordinator
 * picks (--http 127.0.0.1:0; local.sh writes the URL to D/coordinator.http);
 * returns the ZeroMQ endpoint (malloc'd) and the port in *port. */
static char *s_start(const char *run_dir, const char *extra, int *port)
{
    char opts[1024], path[1200];
    snprintf(opts, sizeof opts, "--http 127.0.0.1:0 --api-key " API_KEY " %s",
             extra ? extra : "");
    char *ep = localcluster_up(s_model, 2, run_dir, opts);
    snprintf(path, sizeof path, "%s/coordinator.http", run_dir);
    char *url = testutil_read_file(path, NULL);
    if (!url || sscanf(url, "http://127.0.0.1:%d", port) != 1)
        fail_msg("%s: no http://127.0.0.1:PORT in it (%s)", path, url ? url : "missing");
    free(url);
    return ep;
}

/* The main cluster, started by the first case that needs it. */
static void s_cluster(void)
{
    if (s_up)
        return;
    if (s_up_failed)
        fail_msg("the cluster did not start (see the first failed case)");
    s_up_failed = true;
    testutil_make_model(s_tmp, "tiny-http", "tiny", 5, s_model, sizeof s_model);
    snprintf(s_run_dir, sizeof s_run_dir, "%s/main", s_tmp);
    s_endpoint = s_start(s_run_dir, "--max-seqs 16 --queue-limit 256", &s_port);
    s_up = true;
    snprintf(s_url, sizeof s_url, "http://127.0.0.1:%d", s_port);
    s_resp_t r;
    s_http("GET", "/v1/models", NULL, true, NULL, 30, &r);
    if (r.status != 200)
        fail_msg("GET /v1/models: HTTP %d: %.300s", r.status, r.body);
    const char *id = json_string_value(
        json_object_get(json_array_get(json_object_get(r.json, "data"), 0), "id"));
    if (!id)
        fail_msg("GET /v1/models: no data[0].id: %.300s", r.body);
    snprintf(s_model_id, sizeof s_model_id, "%s", id);
    printf("  cluster: %s, model id '%s'\n", s_url, s_model_id);
    s_resp_free(&r);
    s_up_failed = false;
}

/* STATUS (ZeroMQ) until nothing runs or waits, within 30 s; fails naming
 * what is left. */
static void s_expect_idle(const char *endpoint, const char *what)
{
    localcluster_sched_t st = {0};
    const double end = timer_now() + 30;
    do {
        localcluster_sched(endpoint, &st);
        if (st.running == 0 && st.queued == 0)
            return;
        usleep(100 * 1000);
    } while (timer_now() < end);
    fail_msg("%s: %d sequences still running and %d queued after 30 s (a leaked sequence)",
             what, st.running, st.queued);
}

/* The server still answers: GET /v1/models is 200 and a short completion
 * ends. */
static void s_expect_serving(const char *what)
{
    s_resp_t r;
    s_http("GET", "/v1/models", NULL, true, NULL, 30, &r);
    if (r.status != 200)
        fail_msg("%s: then GET /v1/models gave HTTP %d", what, r.status);
    s_resp_free(&r);
    char *body = s_completion_body(PROMPT, NULL, 0, 2, false, NULL);
    s_http("POST", "/v1/completions", NULL, true, body, 60, &r);
    if (r.status != 200)
        fail_msg("%s: then a completion gave HTTP %d: %.300s", what, r.status, r.body);
    s_resp_free(&r);
    free(body);
}

/* ---- the OpenAI client library --------------------------------------------------- */

/* Runs case of tests/http/openai_cases.cjs; its JSON line (caller decrefs).
 * Skips when node or the npm package is missing (make test installs it into
 * build/http; a skip fails under CI). */
static json_t *s_node(const char *name, const char *arg)
{
    s_cluster();
    const char *dir = testutil_env("MOE_HTTP_DIR", "build/http");
    char mods[1024], cmd[4096];
    snprintf(mods, sizeof mods, "%s/node_modules", dir);
    snprintf(cmd, sizeof cmd, "%s/openai/package.json", mods);
    struct stat st;
    if (testutil_run("node --version >/dev/null 2>&1", NULL) != 0 || stat(cmd, &st) != 0)
        testutil_skip_unless_possible(false, "node or %s/openai missing (make test runs npm ci "
                                      "in build/http; setup/install-deps.sh installs node)",
                                      mods);
    snprintf(cmd, sizeof cmd, "NODE_PATH='%s' timeout 300 node tests/http/openai_cases.cjs "
             "'%s/v1' '%s' '%s' %s '%s'", mods, s_url, API_KEY, s_model_id, name,
             arg ? arg : "");
    char *out = NULL;
    int rc = testutil_run(cmd, &out);
    if (rc != 0)
        fail_msg("openai client, case %s: exit %d (its FAIL line is above)", name, rc);
    json_t *j = json_loads(testutil_last_line(out), 0, NULL);
    if (!j)
        fail_msg("case %s printed no JSON: %s", name, out);
    char *dump = json_dumps(j, JSON_COMPACT);
    printf("  %s: %.400s\n", name, dump);
    free(dump);
    free(out);
    return j;
}

static void test_openai_models(void **state)
{
    (void)state;
    json_decref(s_node("models", NULL));
}

static void test_openai_completion(void **state)
{
    (void)state;
    json_decref(s_node("completion_text", NULL));
    json_decref(s_node("completion_stream", NULL));
}

static void test_openai_chat(void **state)
{
    (void)state;
    json_decref(s_node("chat", NULL));
}

static void test_openai_chat_stream(void **state)
{
    (void)state;
    json_decref(s_node("chat_stream", NULL));
}

static void test_openai_stop(void **state)
{
    (void)state;
    json_decref(s_node("stop", NULL));
}

static void test_openai_chat_stop(void **state)
{
    (void)state;
    json_decref(s_node("chat_stop", NULL));
}

static void test_openai_errors(void **state)
{
    (void)state;
    json_decref(s_node("errors", NULL));
}

static void test_openai_logprobs(void **state)
{
    (void)state;
    json_decref(s_node("logprobs", NULL));
}

static void test_openai_chat_logprobs(void **state)
{
    (void)state;
    json_decref(s_node("chat_logprobs", NULL));
}

static void test_openai_seed(void **state)
{
    (void)state;
    json_decref(s_node("seed", NULL));
}

/* ---- greedy answers are moe-run's ----------------------------------------------- */

/* moe-run's greedy ids for prompt (an id list) and their text as a reader
 * sees it (special tokens left out), as the HTTP API should answer. */
static void s_moe_run(const char *prompt, int max_tokens, int *n_gen, char **text)
{
    char cmd[4096], path[1100];
    snprintf(cmd, sizeof cmd, "'%s/moe-run' --model '%s' --prompt-ids %s --max-tokens %d "
             "2>/dev/null", s_bin, s_model, prompt, max_tokens);
    char *line = crosscheck_last_line(cmd);
    int32_t *ids = NULL;
    int n = 0;
    err_t err = {0};
    assert_int_equal(idlist_parse(line, &ids, &n, &err), 0);
    snprintf(path, sizeof path, "%s/tokenizer.json", s_model);
    tokenizer_t *tok = tokenizer_load(path, &err);
    if (!tok)
        fail_msg("%s", err.msg);
    int k = 0;
    for (int i = 0; i < n; i++)
        if (!tokenizer_is_special(tok, ids[i]))
            ids[k++] = ids[i];
    assert_int_equal(tokenizer_decode(tok, ids, (size_t)k, text, &err), 0);
    *n_gen = n;
    tokenizer_destroy(&tok);
    mem_free(ids);
    free(line);
}

static void test_greedy_matches_moe_run(void **state)
{
    (void)state;
    s_cluster();
    static const char *prompts[] = {"5,17,2", "1,100,200,300,400", "42"};
    for (size_t p = 0; p < sizeof prompts / sizeof prompts[0]; p++) {
        int n_want = 0;
        char *want = NULL;
        s_moe_run(prompts[p], 12, &n_want, &want);
        int32_t *ids = NULL;
        int n = 0;
        err_t err = {0};
        assert_int_equal(idlist_parse(prompts[p], &ids, &n, &err), 0);
        /* raw HTTP, whole and streamed */
        for (int stream = 0; stream < 2; stream++) {
            char *body = s_completion_body(NULL, ids, n, 12, stream, "{\"logprobs\": 1}");
            s_resp_t r;
            s_http("POST", "/v1/completions", NULL, true, body, 120, &r);
            if (r.status != 200)
                fail_msg("prompt %s: HTTP %d: %.300s", prompts[p], r.status, r.body);
            char finish[32];
            const char *got;
            char *streamed = NULL;
            if (stream) {
                json_t *chunks = s_sse_chunks(r.body, "greedy stream");
                streamed = s_sse_text(chunks, "text", finish, sizeof finish);
                got = streamed;
                json_decref(chunks);
            } else {
                json_t *ch = json_array_get(json_object_get(r.json, "choices"), 0);
                got = json_string_value(json_object_get(ch, "text"));
                snprintf(finish, sizeof finish, "%s",
                         json_string_value(json_object_get(ch, "finish_reason")));
                json_t *u = json_object_get(r.json, "usage");
                int ct = (int)json_integer_value(json_object_get(u, "completion_tokens"));
                int pt = (int)json_integer_value(json_object_get(u, "prompt_tokens"));
                if (ct != n_want || pt != n)
                    fail_msg("prompt %s: usage %d prompt + %d completion tokens, moe-run: "
                             "%d + %d", prompts[p], pt, ct, n, n_want);
                json_t *toks = json_object_get(json_object_get(ch, "logprobs"), "tokens");
                assert_int_equal(json_array_size(toks), (size_t)n_want);
            }
            assert_non_null(got);
            printf("  ids %s%s: '%s' (%s), moe-run: '%s' (%d tokens)\n", prompts[p],
                   stream ? " streamed" : "", got, finish, want, n_want);
            assert_string_equal(got, want);
            if (n_want < 12) /* EOS came first (at exactly 12 either reason is right) */
                assert_string_equal(finish, "stop");
            else
                assert_true(strcmp(finish, "length") == 0 || strcmp(finish, "stop") == 0);
            free(streamed);
            s_resp_free(&r);
            free(body);
        }
        mem_free(ids);
        mem_free(want);
    }
    json_decref(s_node("completion_ids", "5,17,2"));
}

/* ---- curl: the raw protocol -------------------------------------------------------- */

/* curl's output for one request: status line code, headers and body; the
 * body is written to a file named after what. */
static int s_curl(const char *what, const char *args, char **headers, char **body)
{
    char cmd[8192], hpath[1200], bpath[1200];
    snprintf(hpath, sizeof hpath, "%s/curl-%s.head", s_tmp, what);
    snprintf(bpath, sizeof bpath, "%s/curl-%s.body", s_tmp, what);
    snprintf(cmd, sizeof cmd, "curl -sS -N --max-time 120 -D '%s' -o '%s' -w '%%{http_code}' %s",
             hpath, bpath, args);
    char *code = NULL;
    int rc = testutil_run(cmd, &code);
    if (rc != 0)
        fail_msg("curl %s: exit %d", what, rc);
    int status = atoi(code ? code : "0");
    free(code);
    *headers = testutil_read_file(hpath, NULL);
    *body = testutil_read_file(bpath, NULL);
    assert_non_null(*headers);
    assert_non_null(*body);
    return status;
}

/* One stream through curl: 200, text/event-stream, "data: {json}" events
 * and "data: [DONE]" last; what: "completions" or "chat". */
static void s_curl_stream(const char *what, const char *route, const char *json_fmt,
                          const char *field, bool usage_last)
{
    char json[1024], args[4096], *head, *body;
    snprintf(json, sizeof json, json_fmt, s_model_id);
    snprintf(args, sizeof args, "-H 'Authorization: Bearer " API_KEY "' "
             "-H 'Content-Type: application/json' -d '%s' '%s%s'", json, s_url, route);
    int status = s_curl(what, args, &head, &body);
    if (status != 200)
        fail_msg("curl %s stream: HTTP %d: %.300s", what, status, body);
    for (char *p = head; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    if (!strstr(head, "content-type: text/event-stream"))
        fail_msg("curl %s stream: not text/event-stream: %s", what, head);
    json_t *chunks = s_sse_chunks(body, what);
    char finish[32];
    char *text = s_sse_text(chunks, field, finish, sizeof finish);
    printf("  curl %s: %zu chunks, '%s' (%s)\n", what, json_array_size(chunks), text, finish);
    assert_true(json_array_size(chunks) >= 2);
    assert_true(strcmp(finish, "stop") == 0 || strcmp(finish, "length") == 0);
    if (usage_last) { /* include_usage: the last chunk has the usage and no choices */
        json_t *last = json_array_get(chunks, json_array_size(chunks) - 1);
        assert_non_null(json_object_get(last, "usage"));
        assert_int_equal(json_array_size(json_object_get(last, "choices")), 0);
    }
    free(text);
    json_decref(chunks);
    free(head);
    free(body);
}

static void s_need_curl(void)
{
    s_cluster();
    if (testutil_run("curl --version >/dev/null 2>&1", NULL) != 0)
        testutil_skip_unless_possible(false, "no curl program (apt-get install curl)");
}

static void test_curl_sse(void **state)
{
    (void)state;
    s_need_curl();
    s_curl_stream("completions", "/v1/completions",
                  "{\"model\":\"%s\",\"prompt\":\"" PROMPT "\",\"max_tokens\":6,"
                  "\"temperature\":0,\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
                  "text", true);
}

static void test_curl_chat_sse(void **state)
{
    (void)state;
    s_need_curl();
    s_curl_stream("chat", "/v1/chat/completions",
                  "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
                  "\"max_tokens\":6,\"temperature\":0,\"stream\":true}", "content", false);
}

/* Refusals through curl: status and an OpenAI error body; /health. */
static void test_curl_errors(void **state)
{
    (void)state;
    s_need_curl();
    char args[4096], *head, *body;
    char unknown[512];
    snprintf(unknown, sizeof unknown, "-H 'Authorization: Bearer " API_KEY "' -H "
             "'Content-Type: application/json' -d '{\"model\":\"no-such\",\"prompt\":\"x\","
             "\"max_tokens\":1}' '%%s/v1/completions'");
    struct { const char *what, *args; int status; } errs[] = {
        {"malformed", "-H 'Authorization: Bearer " API_KEY "' -d '{\"model\": ' "
         "'%s/v1/completions'", 400},
        {"no-key", "-d '{}' '%s/v1/completions'", 401},
        {"wrong-key", "-H 'Authorization: Bearer nope' '%s/v1/models'", 401},
        {"unknown-route", "-H 'Authorization: Bearer " API_KEY "' '%s/v1/nothing-here'", 404},
        {"unknown-model", unknown, 404},
    };
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        snprintf(args, sizeof args, errs[i].args, s_url);
        int status = s_curl(errs[i].what, args, &head, &body);
        s_resp_t r = {.status = status, .head = head, .body = body,
                      .json = json_loads(body, JSON_ALLOW_NUL, NULL)};
        for (char *p = r.head; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        printf("  curl %s: %d %.200s\n", errs[i].what, status, body);
        s_expect_error(&r, errs[i].status, errs[i].what);
        s_resp_free(&r);
    }
    /* A body over the server's limit (2 MB of prompt): 413. */
    char big[1200];
    snprintf(big, sizeof big, "%s/big.json", s_tmp);
    size_t nbig = (size_t)2 << 20;
    char *text = malloc(nbig);
    assert_non_null(text);
    int k = snprintf(text, nbig, "{\"model\":\"%s\",\"max_tokens\":1,\"prompt\":\"", s_model_id);
    memset(text + k, 'a', nbig - (size_t)k - 2);
    memcpy(text + nbig - 2, "\"}", 2);
    assert_int_equal(testutil_write_file(big, text, nbig), 0);
    free(text);
    snprintf(args, sizeof args, "-H 'Authorization: Bearer " API_KEY "' -H "
             "'Content-Type: application/json' --data-binary @'%s' '%s/v1/completions'", big,
             s_url);
    int status = s_curl("too-large", args, &head, &body);
    s_resp_t r = {.status = status, .head = head, .body = body, .json = json_loads(body, JSON_ALLOW_NUL, NULL)};
    for (char *p = r.head; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    printf("  curl 2 MB body: %d %.200s\n", status, body);
    s_expect_error(&r, 413, "2 MB body");
    s_resp_free(&r);
    /* /health: 200 with every expert live. */
    snprintf(args, sizeof args, "'%s/health'", s_url);
    status = s_curl("health", args, &head, &body);
    printf("  curl /health: %d %.200s\n", status, body);
    assert_int_equal(status, 200);
    free(head);
    free(body);
}

/* 429: a cluster of one slot and a queue of one, three requests at once. */
static void test_busy_429(void **state)
{
    (void)state;
    s_cluster();
    char run_dir[1200];
    int port;
    snprintf(run_dir, sizeof run_dir, "%s/busy", s_tmp);
    char *ep = s_start(run_dir, "--max-seqs 1 --queue-limit 1", &port);
    enum { N = 6 };
    int fds[N];
    char *body = s_completion_body(PROMPT, NULL, 0, 3000, true, NULL);
    char head[1024];
    snprintf(head, sizeof head, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
             "Authorization: Bearer " API_KEY "\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\nConnection: close\r\n\r\n", strlen(body));
    for (int i = 0; i < N; i++) {
        fds[i] = s_connect_port(port, 60, 0);
        assert_true(fds[i] >= 0);
        assert_true(s_send_all(fds[i], head, strlen(head)));
        assert_true(s_send_all(fds[i], body, strlen(body)));
    }
    int n429 = 0, n200 = 0;
    for (int i = 0; i < N; i++) {
        size_t n;
        char *raw = s_read_all(fds[i], &n, 120, (size_t)64 << 20, NULL);
        s_resp_t r;
        s_parse_resp(raw, n, &r);
        if (r.status == 429) {
            s_expect_error(&r, 429, "busy");
            n429++;
        } else if (r.status == 200) {
            n200++;
        } else {
            fail_msg("request %d of %d at once: HTTP %d: %.300s", i, N, r.status, r.body);
        }
        s_resp_free(&r);
        free(raw);
        close(fds[i]);
    }
    printf("  %d requests at one slot + one queue place: %d answered, %d refused with 429\n", N,
           n200, n429);
    assert_true(n200 >= 1);
    assert_true(n429 >= 1);
    s_expect_idle(ep, "after 429s");
    free(body);
    localcluster_down(run_dir);
    free(ep);
}

/* ---- 64 concurrent streaming clients ------------------------------------------ */

enum { N_STREAMS = 64 };

typedef struct s_stream {
    int index;
    const char *body;
    int status;
    char *text;
    char finish[32];
    char error[256];
} s_stream_t;

static void *s_stream_run(void *arg)
{
    s_stream_t *s = arg;
    int fd = s_connect(240);
    if (fd < 0) {
        snprintf(s->error, sizeof s->error, "cannot connect");
        return NULL;
    }
    char head[512];
    snprintf(head, sizeof head, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
             "Authorization: Bearer " API_KEY "\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\nConnection: close\r\n\r\n", strlen(s->body));
    if (!s_send_all(fd, head, strlen(head)) || !s_send_all(fd, s->body, strlen(s->body))) {
        snprintf(s->error, sizeof s->error, "send failed: %s", strerror(errno));
        close(fd);
        return NULL;
    }
    size_t n;
    bool closed;
    char *raw = s_read_all(fd, &n, 240, (size_t)16 << 20, &closed);
    close(fd);
    if (!closed)
        snprintf(s->error, sizeof s->error, "no end within 240 s (%zu bytes)", n);
    s_resp_t r;
    s_parse_resp(raw, n, &r);
    s->status = r.status;
    free(raw);
    /* s_sse_chunks fails the case: it may not run on this thread, so the
     * body is kept for the main thread. */
    s->text = r.body;
    r.body = NULL;
    s_resp_free(&r);
    return NULL;
}

static void test_concurrent_streams(void **state)
{
    (void)state;
    s_cluster();
    char *body = s_completion_body(PROMPT, NULL, 0, 16, true, NULL);
    char *whole_body = s_completion_body(PROMPT, NULL, 0, 16, false, NULL);
    s_resp_t w;
    s_http("POST", "/v1/completions", NULL, true, whole_body, 120, &w);
    assert_int_equal(w.status, 200);
    const char *want = json_string_value(json_object_get(
        json_array_get(json_object_get(w.json, "choices"), 0), "text"));
    assert_non_null(want);
    s_stream_t *s = calloc(N_STREAMS, sizeof *s);
    pthread_t t[N_STREAMS];
    const double t0 = timer_now();
    for (int i = 0; i < N_STREAMS; i++) {
        s[i] = (s_stream_t){.index = i, .body = body};
        assert_int_equal(pthread_create(&t[i], NULL, s_stream_run, &s[i]), 0);
    }
    for (int i = 0; i < N_STREAMS; i++)
        pthread_join(t[i], NULL);
    int ok = 0;
    for (int i = 0; i < N_STREAMS; i++) {
        if (s[i].error[0])
            fail_msg("stream %d: %s", i, s[i].error);
        if (s[i].status != 200)
            fail_msg("stream %d: HTTP %d: %.200s", i, s[i].status, s[i].text);
        char what[32];
        snprintf(what, sizeof what, "stream %d", i);
        json_t *chunks = s_sse_chunks(s[i].text, what);
        char *text = s_sse_text(chunks, "text", s[i].finish, sizeof s[i].finish);
        if (strcmp(text, want) != 0)
            fail_msg("stream %d: '%s', alone: '%s'", i, text, want);
        assert_true(s[i].finish[0]);
        ok++;
        free(text);
        json_decref(chunks);
    }
    printf("  %d concurrent streams, all the greedy answer '%s', in %.1f s\n", ok, want,
           timer_now() - t0);
    s_expect_idle(s_endpoint, "after 64 streams");
    for (int i = 0; i < N_STREAMS; i++)
        free(s[i].text);
    free(s);
    s_resp_free(&w);
    free(whole_body);
    free(body);
}

/* ---- hostile HTTP ------------------------------------------------------------------ */

static void test_hostile_json(void **state)
{
    (void)state;
    s_cluster();
    char deep[20010];
    memset(deep, '[', 20000);
    deep[20000] = '\0';
    struct { const char *route, *body; } bad[] = {
        {"/v1/completions", "{"},
        {"/v1/completions", "not json at all"},
        {"/v1/completions", "[]"},
        {"/v1/completions", "null"},
        {"/v1/completions", "\"a string\""},
        {"/v1/completions", "{\"model\": 5, \"prompt\": \"x\"}"},
        {"/v1/completions", "{\"model\": \"%s\", \"prompt\": {}}"},
        {"/v1/completions", "{\"model\": \"%s\", \"prompt\": [1, \"two\"]}"},
        {"/v1/completions", "{\"model\": \"%s\", \"prompt\": [1.5]}"},
        {"/v1/completions", "{\"model\": \"%s\", \"prompt\": []}"},
        {"/v1/completions", "{\"model\": \"%s\", \"prompt\": \"x\", \"max_tokens\": \"8\"}"},
        {"/v1/completions", "{\"model\": \"%s\", \"prompt\": \"x\", \"max_tokens\": 1e999}"},
        {"/v1/completions", "{\"model\": \"%s\", \"prompt\": \"x\", \"max_tokens\": 99999999999}"},
        {"/v1/completions", "{\"model\": \"%s\", \"prompt\": \"x\", \"temperature\": -1}"},
        {"/v1/completions", "{\"model\": \"%s\", \"prompt\": \"x\", \"top_p\": 7}"},
        {"/v1/completions", "{\"model\": \"%s\", \"prompt\": \"x\", \"stream\": \"yes\"}"},
        {"/v1/completions", "{\"model\": \"%s\", \"prompt\": \"x\", \"stop\": 5}"},
        {"/v1/completions", "{\"model\": \"%s\", \"prompt\": \"x\", \"logprobs\": -3}"},
        {"/v1/completions", "{\"model\": \"%s\", \"prompt\": \"\xff\xfe\"}"},
        {"/v1/completions", "{\"model\": \"%s\", \"prompt\": \"x\"} trailing"},
        {"/v1/completions", deep},
        {"/v1/chat/completions", "{\"model\": \"%s\", \"messages\": \"hi\"}"},
        {"/v1/chat/completions", "{\"model\": \"%s\", \"messages\": [{\"role\": 1}]}"},
        {"/v1/chat/completions", "{\"model\": \"%s\", \"messages\": [{\"content\": \"x\"}]}"},
        {"/v1/chat/completions", "{\"model\": \"%s\", \"messages\": [5]}"},
        {"/v1/chat/completions", "{\"model\": \"%s\"}"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *body = malloc(strlen(bad[i].body) + sizeof s_model_id + 1);
        sprintf(body, bad[i].body, s_model_id);
        s_resp_t r;
        s_http("POST", bad[i].route, NULL, true, body, 30, &r);
        char what[160];
        snprintf(what, sizeof what, "%s %.60s", bad[i].route, body);
        if (r.status == 0)
            fail_msg("%s: the server closed without a reply", what);
        s_expect_error(&r, 400, what);
        s_resp_free(&r);
        free(body);
    }
    printf("  %zu malformed or mistyped bodies: 400 with an OpenAI error each\n",
           sizeof bad / sizeof bad[0]);
    s_expect_serving("after malformed JSON");
}

/* A 100 MB body (with Content-Length, then chunked): refused with 413 or a
 * closed connection, before the server has read it all into memory. */
static void test_hostile_big_body(void **state)
{
    (void)state;
    s_cluster();
    pid_t pid = localcluster_pid(s_run_dir, "coordinator");
    const size_t big = (size_t)100 << 20, piece = 64 << 10;
    char *junk = malloc(piece);
    memset(junk, ' ', piece);
    for (int chunked = 0; chunked < 2; chunked++) {
        size_t peak0 = s_peak_rss(pid);
        int fd = s_connect(30);
        assert_true(fd >= 0);
        char head[512];
        if (chunked)
            snprintf(head, sizeof head, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                     "Authorization: Bearer " API_KEY "\r\nContent-Type: application/json\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n");
        else
            snprintf(head, sizeof head, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                     "Authorization: Bearer " API_KEY "\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n", big);
        assert_true(s_send_all(fd, head, strlen(head)));
        size_t sent = 0;
        bool refused = false;
        const double end = timer_now() + 120;
        while (sent < big && timer_now() < end) {
            struct pollfd pfd = {.fd = fd, .events = POLLIN};
            if (poll(&pfd, 1, 0) > 0) /* a reply (413) or the close came */
                break;
            bool okay;
            if (chunked) {
                char ch[32];
                snprintf(ch, sizeof ch, "%zx\r\n", piece);
                okay = s_send_all(fd, ch, strlen(ch)) && s_send_all(fd, junk, piece) &&
                       s_send_all(fd, "\r\n", 2);
            } else {
                okay = s_send_all(fd, junk, piece);
            }
            if (!okay) {
                refused = true;
                break;
            }
            sent += piece;
        }
        if (chunked && sent >= big)
            s_send_all(fd, "0\r\n\r\n", 5);
        size_t n;
        char *raw = s_read_all(fd, &n, 60, (size_t)1 << 20, NULL);
        close(fd);
        s_resp_t r;
        s_parse_resp(raw, n, &r);
        size_t peak1 = s_peak_rss(pid);
        printf("  100 MB body%s: sent %zu MB, %s, HTTP %d (%.100s); coordinator peak RSS "
               "%zu -> %zu MB\n", chunked ? " (chunked)" : "", sent >> 20,
               refused ? "then refused" : "stopped on a reply or close", r.status, r.body,
               peak0 >> 20, peak1 >> 20);
        if (r.status != 0)
            s_expect_error(&r, 413, chunked ? "100 MB chunked body" : "100 MB body");
        assert_true(s_alive(pid));
        if (peak1 > peak0 + ((size_t)50 << 20))
            fail_msg("the coordinator's peak memory grew by %zu MB: it buffered the body",
                     (peak1 - peak0) >> 20);
        s_resp_free(&r);
        free(raw);
    }
    free(junk);
    s_expect_serving("after a 100 MB body");
}

/* 100000 header lines, then one header of 8 MB: an error status or a
 * close, no growth. */
static void test_hostile_headers(void **state)
{
    (void)state;
    s_cluster();
    pid_t pid = localcluster_pid(s_run_dir, "coordinator");
    size_t peak0 = s_peak_rss(pid);
    for (int kind = 0; kind < 2; kind++) {
        int fd = s_connect(30);
        assert_true(fd >= 0);
        const char *start = "GET /v1/models HTTP/1.1\r\nHost: x\r\n";
        assert_true(s_send_all(fd, start, strlen(start)));
        bool refused = false;
        size_t sent = 0;
        const double end = timer_now() + 60;
        if (kind == 0) {
            char line[128];
            for (int i = 0; i < 100000 && timer_now() < end; i++) {
                int k = snprintf(line, sizeof line, "X-Flood-%d: %064d\r\n", i, i);
                if (!s_send_all(fd, line, (size_t)k)) {
                    refused = true;
                    break;
                }
                sent += (size_t)k;
            }
        } else {
            char *v = malloc(1 << 16);
            memset(v, 'a', 1 << 16);
            refused = !s_send_all(fd, "X-Huge: ", 8);
            for (int i = 0; i < 128 && !refused && timer_now() < end; i++) {
                refused = !s_send_all(fd, v, 1 << 16);
                sent += 1 << 16;
            }
            free(v);
        }
        if (!refused)
            s_send_all(fd, "\r\n\r\n", 4);
        size_t n;
        char *raw = s_read_all(fd, &n, 30, (size_t)1 << 20, NULL);
        close(fd);
        s_resp_t r;
        s_parse_resp(raw, n, &r);
        printf("  %s: sent %zu KB, %s, HTTP %d\n", kind ? "one 8 MB header" : "100000 headers",
               sent >> 10, refused ? "refused" : "all sent", r.status);
        if (r.status == 200)
            fail_msg("%s answered 200", kind ? "an 8 MB header" : "100000 headers");
        if (r.status != 0 && (r.status < 400 || r.status > 499))
            fail_msg("header flood: HTTP %d", r.status);
        s_resp_free(&r);
        free(raw);
    }
    size_t peak1 = s_peak_rss(pid);
    assert_true(s_alive(pid));
    if (peak1 > peak0 + ((size_t)50 << 20))
        fail_msg("the coordinator's peak memory grew by %zu MB", (peak1 - peak0) >> 20);
    s_expect_serving("after a header flood");
}

/* 32 connections that send nothing and 8 that stop inside their headers
 * or body: the others are served meanwhile. */
static void test_hostile_silent(void **state)
{
    (void)state;
    s_cluster();
    enum { SILENT = 32, PARTIAL = 8 };
    int fds[SILENT + PARTIAL];
    for (int i = 0; i < SILENT + PARTIAL; i++) {
        fds[i] = s_connect(30);
        assert_true(fds[i] >= 0);
        if (i >= SILENT) {
            const char *part = i % 2 ? "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le"
                                     : "POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\n"
                                       "Authorization: Bearer " API_KEY "\r\n\r\n{\"mod";
            assert_true(s_send_all(fds[i], part, strlen(part)));
        }
    }
    const double t0 = timer_now();
    s_expect_serving("with 40 silent connections open");
    printf("  served in %.2f s beside %d silent and %d half-sent connections\n",
           timer_now() - t0, SILENT, PARTIAL);
    for (int i = 0; i < SILENT + PARTIAL; i++)
        close(fds[i]);
    s_expect_serving("after silent connections");
}

/* A client that asks for a long stream and stops reading: the server goes
 * on serving others; when the client goes, its sequence is cancelled and
 * freed (STATUS shows nothing running). */
static void test_hostile_stalled_reader(void **state)
{
    (void)state;
    s_cluster();
    s_expect_idle(s_endpoint, "before");
    char *body = s_completion_body(PROMPT, NULL, 0, 4000, true, NULL);
    char head[512];
    snprintf(head, sizeof head, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
             "Authorization: Bearer " API_KEY "\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n", strlen(body));
    int fd = s_connect_port(s_port, 30, 4096);
    assert_true(fd >= 0);
    assert_true(s_send_all(fd, head, strlen(head)));
    assert_true(s_send_all(fd, body, strlen(body)));
    /* Read a little (the stream has begun), then nothing. */
    char buf[256];
    ssize_t got = recv(fd, buf, sizeof buf, 0);
    assert_true(got > 0);
    assert_true(strncmp(buf, "HTTP/1.1 200", 12) == 0);
    localcluster_sched_t st = {0};
    localcluster_sched(s_endpoint, &st);
    printf("  stalled reader: after the first bytes, %d running, %d queued\n", st.running,
           st.queued);
    /* Others are served while it does not read. */
    s_expect_serving("while a client stops reading");
    /* It goes away abruptly (reset): the sequence must end at once. */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
    s_expect_idle(s_endpoint, "after a stalled reader went away");
    /* A client that reads a few events and closes politely mid-stream. */
    fd = s_connect(30);
    assert_true(fd >= 0);
    assert_true(s_send_all(fd, head, strlen(head)));
    assert_true(s_send_all(fd, body, strlen(body)));
    got = recv(fd, buf, sizeof buf, 0);
    assert_true(got > 0);
    close(fd);
    s_expect_idle(s_endpoint, "after a client closed mid-stream");
    free(body);
    s_expect_serving("after stalled readers");
}

/* ---- metrics and health ---------------------------------------------------------- */

static const char s_parse_py[] =
    "import json, sys\n"
    "from prometheus_client.parser import text_string_to_metric_families\n"
    "text = open(sys.argv[1], encoding='utf-8').read()\n"
    "out = {}\n"
    "for f in text_string_to_metric_families(text):\n"
    "    if f.type == 'unknown':\n"
    "        sys.exit('no TYPE for family %s' % f.name)\n"
    "    out[f.name] = {'type': f.type, 'samples': [[s.name, s.labels, s.value] for s in "
    "f.samples]}\n"
    "print(json.dumps(out))\n";

static void test_metrics_endpoint(void **state)
{
    (void)state;
    s_cluster();
    s_resp_t r;
    s_http("GET", "/metrics", NULL, true, NULL, 30, &r);
    if (r.status != 200)
        fail_msg("GET /metrics: HTTP %d: %.300s", r.status, r.body);
    char ct[128] = "";
    s_header(&r, "content-type", ct, sizeof ct);
    if (!strstr(ct, "text/plain") || !strstr(ct, "version=0.0.4"))
        fail_msg("GET /metrics: Content-Type '%s'", ct);
    char py[1200], txt[1200], cmd[4096];
    snprintf(py, sizeof py, "%s/parse.py", s_tmp);
    snprintf(txt, sizeof txt, "%s/metrics.txt", s_tmp);
    assert_int_equal(testutil_write_file(py, s_parse_py, strlen(s_parse_py)), 0);
    assert_int_equal(testutil_write_file(txt, r.body, r.body_len), 0);
    const char *python = testutil_env("MOE_PYTHON3", "/usr/bin/python3");
    snprintf(cmd, sizeof cmd, "'%s' -c 'import prometheus_client' 2>/dev/null", python);
    if (testutil_run(cmd, NULL) != 0)
        testutil_skip_unless_possible(false, "%s has no prometheus_client", python);
    snprintf(cmd, sizeof cmd, "'%s' '%s' '%s'", python, py, txt);
    char *out = NULL;
    if (testutil_run(cmd, &out) != 0)
        fail_msg("prometheus_client refused GET /metrics (in %s)", txt);
    json_t *fams = json_loads(out, 0, NULL);
    assert_non_null(fams);
    /* The families of issue 14 (names as core/metrics.h's example). */
    struct { const char *name, *type; } want[] = {
        {"moe_requests", "counter"},
        {"moe_prompt_tokens", "counter"},
        {"moe_generation_tokens", "counter"},
        {"moe_time_to_first_token_seconds", "histogram"},
        {"moe_time_per_output_token_seconds", "histogram"},
        {"moe_queue_length", "gauge"},
        {"moe_running_sequences", "gauge"},
        {"moe_kv_cache_usage_ratio", "gauge"},
        {"moe_node_up", "gauge"},
        {"moe_node_rtt_seconds", "gauge"},
        {"moe_node_failovers", "counter"},
        {"moe_node_sent_bytes", "counter"},
        {"moe_node_received_bytes", "counter"},
        {"moe_expert_tokens", "counter"},
        {"moe_build_info", "gauge"},
    };
    int missing = 0;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        json_t *f = json_object_get(fams, want[i].name);
        const char *type = json_string_value(json_object_get(f, "type"));
        if (!type || strcmp(type, want[i].type) != 0) {
            printf("  /metrics: no %s family %s\n", want[i].type, want[i].name);
            missing++;
        }
    }
    /* Requests were served by now: some counted; expert rows carry labels. */
    double served = 0;
    size_t k;
    json_t *s;
    json_array_foreach(json_object_get(json_object_get(fams, "moe_requests"), "samples"), k, s)
        served += json_number_value(json_array_get(s, 2));
    json_t *e0 = json_array_get(json_object_get(json_object_get(fams, "moe_expert_tokens"),
                                                "samples"), 0);
    json_t *labels = json_array_get(e0, 1);
    printf("  /metrics: %zu families, %.0f requests counted, %zu bytes\n", json_object_size(fams),
           served, r.body_len);
    if (missing)
        fail_msg("/metrics lacks %d families of issue 14 (listed above)", missing);
    assert_true(served > 0);
    assert_non_null(json_object_get(labels, "layer"));
    assert_non_null(json_object_get(labels, "expert"));
    assert_non_null(json_object_get(labels, "node"));
    json_decref(fams);
    free(out);
    s_resp_free(&r);
    /* /health */
    s_http("GET", "/health", NULL, false, NULL, 30, &r);
    printf("  /health: %d %.200s\n", r.status, r.body);
    assert_int_equal(r.status, 200);
    s_resp_free(&r);
}

/* Last: nothing leaked, the cluster stops cleanly (sanitizer logs clean). */
static void test_zz_down(void **state)
{
    (void)state;
    s_cluster();
    s_expect_idle(s_endpoint, "at the end");
    pid_t pid = localcluster_pid(s_run_dir, "coordinator");
    assert_true(s_alive(pid));
    s_up = false;
    localcluster_down(s_run_dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_openai_models),
        cmocka_unit_test(test_openai_completion),
        cmocka_unit_test(test_openai_chat),
        cmocka_unit_test(test_openai_chat_stream),
        cmocka_unit_test(test_openai_stop),
        cmocka_unit_test(test_openai_chat_stop),
        cmocka_unit_test(test_openai_errors),
        cmocka_unit_test(test_openai_logprobs),
        cmocka_unit_test(test_openai_chat_logprobs),
        cmocka_unit_test(test_openai_seed),
        cmocka_unit_test(test_greedy_matches_moe_run),
        cmocka_unit_test(test_curl_sse),
        cmocka_unit_test(test_curl_chat_sse),
        cmocka_unit_test(test_curl_errors),
        cmocka_unit_test(test_busy_429),
        cmocka_unit_test(test_concurrent_streams),
        cmocka_unit_test(test_hostile_json),
        cmocka_unit_test(test_hostile_big_body),
        cmocka_unit_test(test_hostile_headers),
        cmocka_unit_test(test_hostile_silent),
        cmocka_unit_test(test_hostile_stalled_reader),
        cmocka_unit_test(test_metrics_endpoint),
        cmocka_unit_test(test_zz_down),
    };
    return cmocka_run_group_tests(tests, s_group_setup, s_group_teardown);
}
