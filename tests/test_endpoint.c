/* test_endpoint: the endpoints people type (core/endpoint.h), bound and
 * connected on loopback only. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "core/endpoint.h"

static void test_normalize(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } good[] = {
        {"tcp://127.0.0.1:5555", "tcp://127.0.0.1:5555"},
        {"ipc:///tmp/x", "ipc:///tmp/x"},
        {"localhost:5555", "tcp://localhost:5555"},
        {"127.0.0.1:*", "tcp://127.0.0.1:*"},
        {"[::1]:5555", "tcp://[::1]:5555"},
        {"host.example:1", "tcp://host.example:1"},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char out[ENDPOINT_MAX];
        err_t err = {0};
        assert_int_equal(endpoint_normalize(good[i].in, out, sizeof out, &err), 0);
        assert_string_equal(out, good[i].out);
    }
    static const char *const bad[] = {"", "localhost", "localhost:", ":5555", "a/b:1",
                                      "::1:5555", "[]:1", "host:port"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char out[ENDPOINT_MAX] = "untouched";
        err_t err = {0};
        assert_int_equal(endpoint_normalize(bad[i], out, sizeof out, &err), -1);
        assert_int_equal(errno, EINVAL);
        assert_string_equal(out, "untouched");
        assert_non_null(strstr(err.msg, "tcp://HOST:PORT, HOST:PORT or [IPV6]:PORT"));
    }
    char small[8];
    assert_int_equal(endpoint_normalize("localhost:5555", small, sizeof small, NULL), -1);
}

static void test_is_local(void **state)
{
    (void)state;
    assert_true(endpoint_is_local("tcp://127.0.0.1:*"));
    assert_true(endpoint_is_local("127.0.0.2:5555"));
    assert_true(endpoint_is_local("localhost:5555"));
    assert_true(endpoint_is_local("tcp://[::1]:5555"));
    assert_true(endpoint_is_local("ipc:///tmp/sock"));
    assert_false(endpoint_is_local("tcp://0.0.0.0:5555"));
    assert_false(endpoint_is_local("tcp://*:5555"));
    assert_false(endpoint_is_local("tcp://10.0.0.1:5555"));
    assert_false(endpoint_is_local("tcp://eth0:5555"));
    assert_false(endpoint_is_local("tcp://127.example.com:5555"));
    assert_false(endpoint_is_local("not an endpoint"));
}

/* Reads what endpoint_warn_plain writes. */
static char *s_warning(const char *endpoint, bool curve)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    endpoint_warn_plain(f, "prog", endpoint, curve);
    fclose(f);
    return buf;
}

static void test_warn_plain(void **state)
{
    (void)state;
    char *w = s_warning("tcp://0.0.0.0:5555", false);
    assert_non_null(strstr(w, "prog: warning: tcp://0.0.0.0:5555 is bound in plain TCP "
                              "without CURVE"));
    assert_int_equal(strchr(w, '\n') - w + 1, (long)strlen(w)); /* one line */
    free(w);
    w = s_warning("tcp://0.0.0.0:5555", true);
    assert_string_equal(w, "");
    free(w);
    w = s_warning("tcp://127.0.0.1:5555", false);
    assert_string_equal(w, "");
    free(w);
}

/* host:port binds and connects; a message passes; junk is refused naming
 * the forms. */
static void test_bind_and_connect(void **state)
{
    (void)state;
    void *ctx = zmq_ctx_new();
    void *a = zmq_socket(ctx, ZMQ_PAIR), *b = zmq_socket(ctx, ZMQ_PAIR);
    int zero = 0, wait_ms = 5000;
    zmq_setsockopt(a, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(b, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(b, ZMQ_RCVTIMEO, &wait_ms, sizeof wait_ms);
    err_t err = {0};
    assert_int_equal(endpoint_bind(a, "127.0.0.1:*", &err), 0);
    char bound[256];
    size_t len = sizeof bound;
    assert_int_equal(zmq_getsockopt(a, ZMQ_LAST_ENDPOINT, bound, &len), 0);
    assert_int_equal(strncmp(bound, "tcp://127.0.0.1:", 16), 0);
    assert_int_equal(endpoint_connect(b, bound + 6, &err), 0); /* without tcp:// */
    assert_int_equal(zmq_send(a, "hi", 2, 0), 2);
    char got[4] = "";
    assert_int_equal(zmq_recv(b, got, sizeof got, 0), 2);
    assert_memory_equal(got, "hi", 2);

    assert_int_equal(endpoint_connect(b, "localhost", &err), -1);
    assert_int_equal(errno, EINVAL);
    assert_string_equal(err.msg, "cannot connect to localhost: not an endpoint (give "
                                 "tcp://HOST:PORT, HOST:PORT or [IPV6]:PORT)");
    assert_int_equal(endpoint_bind(b, "tcp://", &err), -1);
    assert_int_equal(errno, EINVAL);
    assert_non_null(strstr(err.msg, "cannot bind tcp://:"));
    zmq_close(a);
    zmq_close(b);
    zmq_ctx_term(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_is_local),
        cmocka_unit_test(test_warn_plain),
        cmocka_unit_test(test_bind_and_connect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
