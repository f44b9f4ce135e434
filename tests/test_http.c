/* The coordinator's HTTP API (coordinator/http, coordinator/openai) against a
 * real local cluster on loopback: routes, the OpenAI shapes of completions
 * (whole, streamed, stop strings, logprobs), refusals with their status and
 * body, the API key, health when a node dies, /metrics, and a client that
 * hangs up mid-stream having its sequence freed at once. The HTTP client
 * here is a plain socket speaking HTTP/1.0, so that the bytes on the wire
 * are what is checked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/mem.h"
#include "proto/client_rpc.h"
#include "tests/localcluster.h"
#include "tests/testutil.h"

enum { MAX_RESPONSE = 8 << 20, IO_TIMEOUT_S = 30 };

static char *s_tmp;
static char s_model[1024];
static const char *KEY = "sekret-key";

typedef struct http_resp {
    int status;
    char *raw;          /* the whole response (malloc'd) */
    const char *body;   /* into raw */
} http_resp_t;

static int s_setup(void **state)
{
    s_tmp = testutil_mkdtemp("test_http");
    *state = s_tmp;
    if (!s_tmp)
        return -1;
    testutil_make_model(s_tmp, "tiny-http", "tiny", 5, s_model, sizeof s_model);
    /* A chat template of our own (the made model's may differ): role markers,
     * bos_token, add_generation_prompt and a raise_exception. */
    char path[1200];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", s_model);
    json_t *conf = json_pack(
        "{s:s, s:s, s:s}", "bos_token", "<s>", "eos_token", "</s>", "chat_template",
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'bad' %}"
        "{{ raise_exception('role bad is not allowed') }}{% endif %}"
        "<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}");
    char *text = json_dumps(conf, 0);
    json_decref(conf);
    int rc = testutil_write_file(path, text, strlen(text));
    free(text);
    return rc;
}

/* The port of the cluster's HTTP API (run_dir/coordinator.http). */
static int s_port(const localcluster_t *lc)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/coordinator.http", lc->run_dir);
    char *url = testutil_read_file(path, NULL);
    assert_non_null(url);
    const char *colon = strrchr(url, ':');
    assert_non_null(colon);
    int port = atoi(colon + 1);
    free(url);
    assert_true(port > 0);
    return port;
}

static int s_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static void s_send_all(int fd, const char *data, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, data, n, MSG_NOSIGNAL);
        if (k <= 0)
            return; /* the server may close early (413): the response says why */
        data += k;
        n -= (size_t)k;
    }
}

/* Sends one request (HTTP/1.0: the server closes after the answer). */
static int s_request_fd(int port, const char *method, const char *path, const char *key,
                        const char *body, size_t body_len)
{
    int fd = s_connect(port);
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "%s%s%sContent-Length: %zu\r\n\r\n",
                     method, path, key ? "Authorization: Bearer " : "", key ? key : "",
                     key ? "\r\n" : "", body ? body_len : 0);
    s_send_all(fd, head, (size_t)n);
    if (body)
        s_send_all(fd, body, body_len);
    return fd;
}

/* Reads the whole response until the server closes (bounded). */
static http_resp_t s_read_all(int fd)
{
    http_resp_t r = {0};
    size_t cap = 1 << 16, len = 0;
    r.raw = malloc(cap);
    assert_non_null(r.raw);
    for (;;) {
        if (len + 4096 + 1 > cap) {
            assert_true(cap < MAX_RESPONSE);
            cap *= 2;
            r.raw = realloc(r.raw, cap);
            assert_non_null(r.raw);
        }
        ssize_t k = recv(fd, r.raw + len, cap - len - 1, 0);
        if (k <= 0)
            break;
        len += (size_t)k;
    }
    close(fd);
    r.raw[len] = '\0';
    assert_true(sscanf(r.raw, "HTTP/1.%*d %d", &r.status) == 1);
    const char *sep = strstr(r.raw, "\r\n\r\n");
    assert_non_null(sep);
    r.body = sep + 4;
    return r;
}

static http_resp_t s_http(int port, const char *method, const char *path, const char *key,
                          const char *body)
{
    return s_read_all(s_request_fd(port, method, path, key, body, body ? strlen(body) : 0));
}

static json_t *s_json(const http_resp_t *r)
{
    json_error_t e;
    json_t *o = json_loads(r->body, JSON_ALLOW_NUL, &e);
    if (!o)
        fail_msg("not JSON (%s): %.300s", e.text, r->body);
    return o;
}

/* Checks an OpenAI error body with this status. */
static void s_expect_error(const http_resp_t *r, int status)
{
    if (r->status != status)
        fail_msg("status %d, not %d: %.300s", r->status, status, r->body);
    json_t *o = s_json(r);
    json_t *e = json_object_get(o, "error");
    assert_true(json_is_object(e));
    assert_true(json_is_string(json_object_get(e, "message")));
    assert_true(json_string_length(json_object_get(e, "message")) > 0);
    assert_true(json_is_string(json_object_get(e, "type")));
    assert_non_null(json_object_get(e, "param"));
    assert_non_null(json_object_get(e, "code"));
    json_decref(o);
}

/* The text of a streamed completion and its finish reason; checks the SSE
 * framing: data: lines, [DONE] last, a usage chunk when asked. */
static char *s_stream_text(const char *body, char *finish, size_t finish_size, int *usage_tokens)
{
    size_t cap = strlen(body) + 1, len = 0;
    char *text = calloc(1, cap);
    bool done = false;
    *usage_tokens = -1;
    for (const char *line = body; *line;) {
        const char *end = strstr(line, "\n\n");
        assert_non_null(end);
        assert_false(done); /* nothing after [DONE] */
        assert_memory_equal(line, "data: ", 6);
        const char *data = line + 6;
        if (strncmp(data, "[DONE]", 6) == 0)
            done = true;
        else {
            json_error_t e;
            json_t *o = json_loadb(data, (size_t)(end - data), JSON_ALLOW_NUL, &e);
            assert_non_null(o);
            json_t *choices = json_object_get(o, "choices");
            json_t *usage = json_object_get(o, "usage");
            if (json_array_size(choices) == 0) {
                assert_true(json_is_object(usage));
                *usage_tokens = (int)json_integer_value(json_object_get(usage,
                                                                        "completion_tokens"));
            } else {
                json_t *c = json_array_get(choices, 0);
                /* The text may hold NUL bytes (a byte token): copy by length. */
                json_t *t = json_object_get(c, "text");
                if (json_is_string(t)) {
                    memcpy(text + len, json_string_value(t), json_string_length(t));
                    len += json_string_length(t);
                }
                const char *f = json_string_value(json_object_get(c, "finish_reason"));
                if (f)
                    snprintf(finish, finish_size, "%s", f);
            }
            json_decref(o);
        }
        line = end + 2;
    }
    assert_true(done);
    return text;
}

static void test_routes_and_key(void **state)
{
    (void)state;
    localcluster_t lc;
    char extra[256];
    snprintf(extra, sizeof extra, "--http 127.0.0.1:0 --api-key %s", KEY);
    localcluster_start(&lc, s_model, 2, s_tmp, "routes", extra);
    const int port = s_port(&lc);

    http_resp_t r = s_http(port, "GET", "/v1/models", KEY, NULL);
    assert_int_equal(r.status, 200);
    json_t *o = s_json(&r);
    assert_string_equal(json_string_value(json_object_get(o, "object")), "list");
    json_t *m = json_array_get(json_object_get(o, "data"), 0);
    assert_string_equal(json_string_value(json_object_get(m, "id")), "tiny-http");
    assert_string_equal(json_string_value(json_object_get(m, "object")), "model");
    json_decref(o);
    free(r.raw);

    r = s_http(port, "GET", "/v1/models/tiny-http", KEY, NULL);
    assert_int_equal(r.status, 200);
    free(r.raw);
    r = s_http(port, "GET", "/v1/models/other", KEY, NULL);
    s_expect_error(&r, 404);
    free(r.raw);
    r = s_http(port, "GET", "/v1/models", NULL, NULL);
    s_expect_error(&r, 401);
    free(r.raw);
    r = s_http(port, "GET", "/v1/models", "wrong", NULL);
    s_expect_error(&r, 401);
    free(r.raw);
    r = s_http(port, "POST", "/v1/completions", "wrong", "{\"prompt\":\"x\"}");
    s_expect_error(&r, 401);
    free(r.raw);
    r = s_http(port, "GET", "/v1/nothing", KEY, NULL);
    s_expect_error(&r, 404);
    free(r.raw);
    r = s_http(port, "GET", "/v1/completions", KEY, NULL);
    s_expect_error(&r, 405);
    free(r.raw);
    /* health and metrics need no key */
    r = s_http(port, "GET", "/health", NULL, NULL);
    assert_int_equal(r.status, 200);
    free(r.raw);
    localcluster_stop(&lc);
}

/* One completion, whole: its shape, usage and finish reason. */
static json_t *s_complete(int port, const char *body)
{
    http_resp_t r = s_http(port, "POST", "/v1/completions", NULL, body);
    if (r.status != 200)
        fail_msg("status %d: %.300s", r.status, r.body);
    json_t *o = s_json(&r);
    free(r.raw);
    assert_string_equal(json_string_value(json_object_get(o, "object")), "text_completion");
    assert_string_equal(json_string_value(json_object_get(o, "model")), "tiny-http");
    json_t *c = json_array_get(json_object_get(o, "choices"), 0);
    assert_true(json_is_string(json_object_get(c, "text")));
    json_t *u = json_object_get(o, "usage");
    assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")),
                     json_integer_value(json_object_get(u, "prompt_tokens")) +
                         json_integer_value(json_object_get(u, "completion_tokens")));
    return o;
}

static const char *s_text_of(json_t *o)
{
    return json_string_value(json_object_get(json_array_get(json_object_get(o, "choices"), 0),
                                             "text"));
}

static const char *s_finish_of(json_t *o)
{
    return json_string_value(json_object_get(json_array_get(json_object_get(o, "choices"), 0),
                                             "finish_reason"));
}

static void test_completions(void **state)
{
    (void)state;
    localcluster_t lc;
    localcluster_start(&lc, s_model, 2, s_tmp, "completions", "--http 127.0.0.1:0");
    const int port = s_port(&lc);

    /* ids and text; greedy, a length finish */
    json_t *a = s_complete(port, "{\"model\":\"tiny-http\",\"prompt\":[1,42,7,99],"
                                 "\"max_tokens\":12,\"temperature\":0,\"ignore_eos\":true}");
    assert_string_equal(s_finish_of(a), "length");
    json_t *u = json_object_get(a, "usage");
    assert_int_equal(json_integer_value(json_object_get(u, "prompt_tokens")), 4);
    assert_int_equal(json_integer_value(json_object_get(u, "completion_tokens")), 12);
    json_t *t = s_complete(port, "{\"prompt\":\"Experts live on many machines.\","
                                 "\"max_tokens\":5,\"temperature\":0}");
    json_decref(t);

    /* streamed: the same text, framed as SSE, with the usage chunk */
    http_resp_t r = s_http(port, "POST", "/v1/completions", NULL,
                           "{\"prompt\":[1,42,7,99],\"max_tokens\":12,\"temperature\":0,"
                           "\"ignore_eos\":true,\"stream\":true,"
                           "\"stream_options\":{\"include_usage\":true}}");
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.raw, "text/event-stream"));
    char finish[32] = "";
    int usage_tokens;
    char *streamed = s_stream_text(r.body, finish, sizeof finish, &usage_tokens);
    assert_string_equal(streamed, s_text_of(a));
    assert_string_equal(finish, "length");
    assert_int_equal(usage_tokens, 12);
    free(streamed);
    free(r.raw);

    /* a stop string: the text ends before it, finish "stop" */
    const char *whole = s_text_of(a);
    size_t wl = strlen(whole);
    if (wl >= 6) {
        char piece[8] = {0};
        size_t at = wl / 2;
        while (at > 0 && ((unsigned char)whole[at] & 0xC0) == 0x80)
            at--;
        size_t pl = 0;
        while (pl < 3 && whole[at + pl] && (pl == 0 || ((unsigned char)whole[at + pl] & 0x80) == 0))
            pl++;
        memcpy(piece, whole + at, pl);
        json_t *req = json_pack("{s:[i,i,i,i], s:i, s:i, s:b, s:s}", "prompt", 1, 42, 7, 99,
                                "max_tokens", 12, "temperature", 0, "ignore_eos", 1, "stop",
                                piece);
        char *body = json_dumps(req, JSON_COMPACT);
        json_t *s = s_complete(port, body);
        const char *first = strstr(whole, piece);
        assert_non_null(first);
        assert_int_equal(strlen(s_text_of(s)), (size_t)(first - whole));
        assert_memory_equal(s_text_of(s), whole, (size_t)(first - whole));
        assert_string_equal(s_finish_of(s), "stop");
        json_decref(s);
        /* streamed too */
        json_object_set_new(req, "stream", json_true());
        free(body);
        body = json_dumps(req, JSON_COMPACT);
        r = s_http(port, "POST", "/v1/completions", NULL, body);
        streamed = s_stream_text(r.body, finish, sizeof finish, &usage_tokens);
        assert_int_equal(strlen(streamed), (size_t)(first - whole));
        assert_string_equal(finish, "stop");
        free(streamed);
        free(r.raw);
        free(body);
        json_decref(req);
    }

    /* logprobs: one per token, the greedy token the best of the top */
    json_t *l = s_complete(port, "{\"prompt\":[1,42,7,99],\"max_tokens\":6,\"temperature\":0,"
                                 "\"ignore_eos\":true,\"logprobs\":3}");
    json_t *lp = json_object_get(json_array_get(json_object_get(l, "choices"), 0), "logprobs");
    assert_int_equal(json_array_size(json_object_get(lp, "tokens")), 6);
    json_t *values = json_object_get(lp, "token_logprobs"), *tops = json_object_get(lp,
                                                                                   "top_logprobs");
    for (size_t i = 0; i < 6; i++) {
        const double v = json_number_value(json_array_get(values, i));
        assert_true(v <= 0);
        json_t *top = json_array_get(tops, i);
        assert_true(json_object_size(top) >= 1 && json_object_size(top) <= 3);
        double best = -1e30;
        const char *k;
        json_t *x;
        json_object_foreach(top, k, x) if (json_number_value(x) > best) best =
            json_number_value(x);
        assert_true(best - v < 1e-4 && v - best < 1e-4);
    }
    json_decref(l);

    /* the same seed gives the same sample */
    const char *seeded = "{\"prompt\":[1,42,7],\"max_tokens\":10,\"temperature\":0.9,"
                         "\"seed\":1234,\"ignore_eos\":true}";
    json_t *s1 = s_complete(port, seeded), *s2 = s_complete(port, seeded);
    assert_string_equal(s_text_of(s1), s_text_of(s2));
    json_decref(s1);
    json_decref(s2);
    json_decref(a);
    localcluster_stop(&lc);
}

static void test_refusals(void **state)
{
    (void)state;
    localcluster_t lc;
    localcluster_start(&lc, s_model, 1, s_tmp, "refusals", "--http 127.0.0.1:0");
    const int port = s_port(&lc);
    static const struct {
        const char *path, *body;
        int status;
    } cases[] = {
        {"/v1/completions", "{bad json", 400},
        {"/v1/completions", "[1,2]", 400},
        {"/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":-1}", 400},
        {"/v1/completions", "{\"prompt\":\"x\",\"temperature\":\"hot\"}", 400},
        {"/v1/completions", "{\"prompt\":[1,999999999],\"max_tokens\":1}", 400},
        {"/v1/completions", "{\"prompt\":[]}", 400},
        {"/v1/completions", "{\"max_tokens\":1}", 400},
        {"/v1/completions", "{\"prompt\":\"x\",\"n\":2}", 400},
        {"/v1/completions", "{\"prompt\":\"x\",\"stream\":1}", 400},
        {"/v1/completions", "{\"prompt\":[1,2],\"max_tokens\":100000}", 400},
        {"/v1/completions", "{\"prompt\":\"x\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 400},
        {"/v1/completions", "{\"model\":\"nope\",\"prompt\":\"x\"}", 404},
        {"/v1/chat/completions", "{\"messages\":[]}", 400},
        {"/v1/chat/completions", "{\"messages\":[{\"content\":\"no role\"}]}", 400},
        {"/v1/chat/completions", "{\"model\":\"nope\",\"messages\":[]}", 404},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        http_resp_t r = s_http(port, "POST", cases[i].path, NULL, cases[i].body);
        if (r.status != cases[i].status)
            fail_msg("%s %s: status %d, not %d: %.300s", cases[i].path, cases[i].body,
                     r.status, cases[i].status, r.body);
        s_expect_error(&r, cases[i].status);
        free(r.raw);
    }
    /* a body over the limit: 413 (or the connection closed) */
    const size_t big = 3 << 20;
    char *body = malloc(big);
    assert_non_null(body);
    memset(body, ' ', big);
    body[0] = '{';
    body[big - 1] = '}';
    int fd = s_request_fd(port, "POST", "/v1/completions", NULL, body, big);
    http_resp_t r = s_read_all(fd);
    s_expect_error(&r, 413);
    free(r.raw);
    free(body);
    /* the server still serves */
    json_t *o = s_complete(port, "{\"prompt\":[1,2],\"max_tokens\":2}");
    json_decref(o);
    localcluster_stop(&lc);
}

/* Polls STATUS until nothing runs and no KV cache is held (bounded). */
static void s_expect_idle(const char *endpoint)
{
    localcluster_sched_t s = {0};
    for (int i = 0; i < 100; i++) {
        localcluster_sched(endpoint, &s);
        if (s.running == 0 && s.queued == 0 && s.kv_bytes == 0)
            return;
        usleep(100 * 1000);
    }
    fail_msg("still %d running, %d queued, %llu KV bytes", s.running, s.queued,
             (unsigned long long)s.kv_bytes);
}

/* A client that closes mid-stream: its sequence is freed (KV back to 0)
 * long before its max_tokens; the metrics count it cancelled. A full queue
 * answers 429 with an OpenAI body. */
static void test_disconnect_and_busy(void **state)
{
    (void)state;
    localcluster_t lc;
    localcluster_start(&lc, s_model, 2, s_tmp, "disconnect",
                       "--http 127.0.0.1:0 --max-seqs 1 --queue-limit 1");
    const int port = s_port(&lc);
    const char *body = "{\"prompt\":[1,42,7],\"max_tokens\":400,\"ignore_eos\":true,"
                       "\"stream\":true}";
    int fd = s_request_fd(port, "POST", "/v1/completions", NULL, body, strlen(body));
    char buf[512];
    ssize_t k = recv(fd, buf, sizeof buf, 0); /* the headers, or the first chunk */
    assert_true(k > 0);
    close(fd);
    s_expect_idle(lc.endpoint);

    /* 1 running + 1 queued, then the third is refused: 429 */
    int a = s_request_fd(port, "POST", "/v1/completions", NULL, body, strlen(body));
    assert_true(recv(a, buf, sizeof buf, 0) > 0); /* running: headers came */
    int b = s_request_fd(port, "POST", "/v1/completions", NULL, body, strlen(body));
    localcluster_sched_t s = {0};
    for (int i = 0; i < 100 && s.queued < 1; i++) {
        localcluster_sched(lc.endpoint, &s);
        if (s.queued < 1)
            usleep(50 * 1000);
    }
    assert_int_equal(s.queued, 1);
    http_resp_t r = s_http(port, "POST", "/v1/completions", NULL,
                           "{\"prompt\":[1,2],\"max_tokens\":2}");
    s_expect_error(&r, 429);
    free(r.raw);
    close(a);
    close(b);
    s_expect_idle(lc.endpoint);
    r = s_http(port, "GET", "/metrics", NULL, NULL);
    assert_int_equal(r.status, 200);
    const char *c = strstr(r.body, "moe_requests_total{outcome=\"cancelled\"} ");
    assert_non_null(c);
    assert_true(atoi(c + strlen("moe_requests_total{outcome=\"cancelled\"} ")) >= 3);
    assert_non_null(strstr(r.body, "moe_requests_total{outcome=\"busy\"} 1"));
    free(r.raw);
    localcluster_stop(&lc);
}

/* /metrics names every family the issue lists; /health turns 503 with the
 * reason once a node dies (no replicas). */
static void test_metrics_and_health(void **state)
{
    (void)state;
    localcluster_t lc;
    localcluster_start(&lc, s_model, 2, s_tmp, "health", "--http 127.0.0.1:0");
    const int port = s_port(&lc);
    json_t *o = s_complete(port, "{\"prompt\":[1,2,3],\"max_tokens\":4,\"ignore_eos\":true}");
    json_decref(o);
    http_resp_t r = s_http(port, "GET", "/metrics", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.raw, "text/plain; version=0.0.4"));
    static const char *const names[] = {
        "moe_requests_total{outcome=\"length\"} 1", "moe_prompt_tokens_total 3",
        "moe_generation_tokens_total 4", "moe_time_to_first_token_seconds_count 1",
        "moe_time_per_output_token_seconds_count 1", "moe_queue_length 0",
        "moe_running_sequences 0", "moe_kv_cache_usage_ratio 0", "moe_node_up{node=\"1\"} 1",
        "moe_node_rtt_seconds{node=\"2\"}", "moe_node_failovers_total{node=\"1\"} 0",
        "moe_node_sent_bytes_total{node=\"2\"}", "moe_node_received_bytes_total{node=\"1\"}",
        "moe_expert_tokens_total{layer=\"0\",expert=", "moe_build_info{version=",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strstr(r.body, names[i]))
            fail_msg("no '%s' in /metrics:\n%.2000s", names[i], r.body);
    free(r.raw);
    /* the same counters in STATUS (moe-client status --json) */
    char cmd[2048], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s/moe-client' --connect '%s' status --json",
             testutil_env("MOE_BIN", "build/bin"), lc.endpoint);
    assert_int_equal(testutil_run(cmd, &out), 0);
    json_t *st = json_loads(out, 0, NULL);
    assert_non_null(st);
    json_t *req = json_object_get(json_object_get(st, "metrics"), "moe_requests_total");
    assert_string_equal(json_string_value(json_object_get(req, "type")), "counter");
    assert_non_null(json_object_get(json_object_get(st, "metrics"), "moe_node_up"));
    json_decref(st);
    free(out);

    r = s_http(port, "GET", "/health", NULL, NULL);
    assert_int_equal(r.status, 200);
    free(r.raw);
    pid_t node = localcluster_pid(lc.run_dir, "expert-2");
    assert_int_equal(kill(node, SIGKILL), 0);
    for (int i = 0; i < 100; i++) {
        r = s_http(port, "GET", "/health", NULL, NULL);
        if (r.status == 503)
            break;
        free(r.raw);
        r.raw = NULL;
        usleep(100 * 1000);
    }
    assert_non_null(r.raw);
    s_expect_error(&r, 503);
    assert_non_null(strstr(r.body, "no live replica"));
    free(r.raw);
    /* a request that needs the dead node's experts: 503 */
    r = s_http(port, "POST", "/v1/completions", NULL,
               "{\"prompt\":[1,2,3,4,5,6,7,8],\"max_tokens\":8,\"ignore_eos\":true}");
    s_expect_error(&r, 503);
    free(r.raw);
    localcluster_stop(&lc);
}

static json_t *s_chat(int port, const char *body, int status)
{
    http_resp_t r = s_http(port, "POST", "/v1/chat/completions", NULL, body);
    if (r.status != status)
        fail_msg("status %d, not %d: %.300s", r.status, status, r.body);
    if (status != 200) {
        s_expect_error(&r, status);
        free(r.raw);
        return NULL;
    }
    json_t *o = s_json(&r);
    free(r.raw);
    assert_string_equal(json_string_value(json_object_get(o, "object")), "chat.completion");
    json_t *m = json_object_get(json_array_get(json_object_get(o, "choices"), 0), "message");
    assert_string_equal(json_string_value(json_object_get(m, "role")), "assistant");
    assert_true(json_is_string(json_object_get(m, "content")));
    return o;
}

static const char *s_content_of(json_t *o)
{
    return json_string_value(json_object_get(
        json_object_get(json_array_get(json_object_get(o, "choices"), 0), "message"),
        "content"));
}

/* A request past --deadline-ms: 504 with an OpenAI body (whole), an error
 * chunk then [DONE] (streamed, once its headers went out). */
static void test_deadline(void **state)
{
    (void)state;
    localcluster_t lc;
    localcluster_start(&lc, s_model, 1, s_tmp, "deadline", "--http 127.0.0.1:0 --deadline-ms 1");
    const int port = s_port(&lc);
    http_resp_t r = s_http(port, "POST", "/v1/completions", NULL,
                           "{\"prompt\":[1,2,3],\"max_tokens\":400,\"ignore_eos\":true}");
    s_expect_error(&r, 504);
    free(r.raw);
    r = s_http(port, "POST", "/v1/completions", NULL,
               "{\"prompt\":[1,2,3],\"max_tokens\":400,\"ignore_eos\":true,\"stream\":true}");
    if (r.status == 200) /* accepted before the deadline passed: the error comes in the stream */
        assert_non_null(strstr(r.body, "data: {\"error\":"));
    else
        s_expect_error(&r, 504);
    assert_non_null(strstr(r.body, r.status == 200 ? "data: [DONE]" : "deadline"));
    free(r.raw);
    s_expect_idle(lc.endpoint);
    localcluster_stop(&lc);
}

/* Chat: rendered with the model's template; whole = streamed; logprobs in
 * chat's shape; raise_exception is a 400 with its message. A template the
 * interpreter cannot handle stops the start, naming the construct. */
static void test_chat(void **state)
{
    (void)state;
    localcluster_t lc;
    localcluster_start(&lc, s_model, 2, s_tmp, "chat", "--http 127.0.0.1:0");
    const int port = s_port(&lc);
    const char *msgs = "\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                       "{\"role\":\"user\",\"content\":\"Hello there\"}]";
    char body[1024];
    snprintf(body, sizeof body, "{%s,\"max_tokens\":8,\"temperature\":0,\"ignore_eos\":true,"
             "\"logprobs\":true,\"top_logprobs\":2}", msgs);
    json_t *whole = s_chat(port, body, 200);
    json_t *u = json_object_get(whole, "usage");
    assert_int_equal(json_integer_value(json_object_get(u, "completion_tokens")), 8);
    assert_true(json_integer_value(json_object_get(u, "prompt_tokens")) > 5);
    json_t *content = json_object_get(
        json_object_get(json_array_get(json_object_get(whole, "choices"), 0), "logprobs"),
        "content");
    assert_int_equal(json_array_size(content), 8);
    char joined[2048] = "";
    for (size_t i = 0; i < json_array_size(content); i++) {
        json_t *t = json_array_get(content, i);
        strncat(joined, json_string_value(json_object_get(t, "token")),
                sizeof joined - strlen(joined) - 1);
        assert_true(json_number_value(json_object_get(t, "logprob")) <= 0);
        assert_true(json_array_size(json_object_get(t, "top_logprobs")) >= 1);
    }
    assert_string_equal(joined, s_content_of(whole));

    snprintf(body, sizeof body, "{%s,\"max_tokens\":8,\"temperature\":0,\"ignore_eos\":true,"
             "\"stream\":true}", msgs);
    http_resp_t r = s_http(port, "POST", "/v1/chat/completions", NULL, body);
    assert_int_equal(r.status, 200);
    char text[2048] = "";
    bool role = false;
    int chunks = 0;
    for (const char *line = r.body; *line && chunks < 1000; chunks++) {
        const char *end = strstr(line, "\n\n");
        assert_non_null(end);
        if (strncmp(line, "data: [DONE]", 12) != 0) {
            json_t *o = json_loadb(line + 6, (size_t)(end - line - 6), JSON_ALLOW_NUL, NULL);
            assert_non_null(o);
            assert_string_equal(json_string_value(json_object_get(o, "object")),
                                "chat.completion.chunk");
            json_t *d = json_object_get(json_array_get(json_object_get(o, "choices"), 0),
                                        "delta");
            role |= json_object_get(d, "role") != NULL;
            const char *c = json_string_value(json_object_get(d, "content"));
            if (c)
                strncat(text, c, sizeof text - strlen(text) - 1);
            json_decref(o);
        }
        line = end + 2;
    }
    assert_true(role);
    assert_string_equal(text, s_content_of(whole));
    free(r.raw);
    json_decref(whole);

    json_t *none = s_chat(port, "{\"messages\":[{\"role\":\"bad\",\"content\":\"x\"}]}", 400);
    assert_null(none);
    r = s_http(port, "POST", "/v1/chat/completions", NULL,
               "{\"messages\":[{\"role\":\"bad\",\"content\":\"x\"}]}");
    assert_non_null(strstr(r.body, "role bad is not allowed"));
    free(r.raw);
    localcluster_stop(&lc);

    /* an unsupported construct: refused at start */
    char model[1024], path[1200], cmd[4096];
    testutil_make_model(s_tmp, "tiny-badtpl", "tiny", 6, model, sizeof model);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", model);
    const char *tpl = "{\"chat_template\": \"{{ messages[0]['content'] | wordwrap(5) }}\"}";
    assert_int_equal(testutil_write_file(path, tpl, strlen(tpl)), 0);
    snprintf(cmd, sizeof cmd, "MOE_START_TIMEOUT=60 cluster/local.sh up --model '%s' --nodes 1 "
             "--run-dir '%s/badtpl' --http 127.0.0.1:0 2>&1; "
             "cluster/local.sh down --run-dir '%s/badtpl' >/dev/null 2>&1", model, s_tmp, s_tmp);
    char *out = NULL;
    testutil_run(cmd, &out);
    assert_non_null(out);
    if (!strstr(out, "wordwrap"))
        fail_msg("the start did not name the construct:\n%s", out);
    assert_null(strstr(out, "ready"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes_and_key),
        cmocka_unit_test(test_completions),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_disconnect_and_busy),
        cmocka_unit_test(test_metrics_and_health),
        cmocka_unit_test(test_chat),
        cmocka_unit_test(test_deadline),
    };
    return cmocka_run_group_tests(tests, s_setup, testutil_tmpdir_teardown);
}
