/* test_keypair: CURVE key files: a saved pair loads back equal, its public
 * key file holds the same public key, nothing is overwritten, and every kind
 * of bad file is refused with errno and a message naming the file and what
 * is wrong; the socket setters make a socket CURVE. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "security/keypair.h"
#include "tests/testutil.h"

static char *s_tmp;

static int s_setup(void **state)
{
    if (!keypair_curve_available()) {
        fprintf(stderr, "test_keypair: this libzmq has no CURVE\n");
        return -1;
    }
    s_tmp = testutil_mkdtemp("test_keypair");
    *state = s_tmp;
    return s_tmp ? 0 : -1;
}

/* Writes text to s_tmp/name with mode; returns the path (static buffer). */
static const char *s_file(const char *name, const char *text, mode_t mode)
{
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", s_tmp, name);
    assert_int_equal(testutil_write_file(path, text, strlen(text)), 0);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

static void test_roundtrip(void **state)
{
    (void)state;
    keypair_t a, b, loaded;
    err_t err = {0};
    assert_int_equal(keypair_generate(&a, &err), 0);
    assert_int_equal(keypair_generate(&b, &err), 0);
    assert_int_equal(strlen(a.public_key), KEYPAIR_Z85_LEN);
    assert_int_equal(strlen(a.secret_key), KEYPAIR_Z85_LEN);
    assert_string_not_equal(a.public_key, b.public_key); /* random, not fixed */
    assert_int_equal(keypair_save(&a, s_tmp, "alpha", &err), 0);

    char path[1024];
    snprintf(path, sizeof path, "%s/alpha.key", s_tmp);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(keypair_load(&loaded, path, &err), 0);
    assert_string_equal(loaded.public_key, a.public_key);
    assert_string_equal(loaded.secret_key, a.secret_key);

    char pub[KEYPAIR_Z85_LEN + 1];
    assert_int_equal(keypair_load_public(pub, path, &err), 0); /* a .key has it too */
    assert_string_equal(pub, a.public_key);
    snprintf(path, sizeof path, "%s/alpha.pub", s_tmp);
    assert_int_equal(keypair_load_public(pub, path, &err), 0);
    assert_string_equal(pub, a.public_key);
    char *text = testutil_read_file(path, NULL);
    assert_null(strstr(text, a.secret_key)); /* the public file never holds the secret */
    assert_null(strstr(text, "secret-key"));
    free(text);

    /* A .pub is not a pair. */
    assert_int_equal(keypair_load(&loaded, path, &err), -1);
    assert_int_equal(errno, EINVAL);
    assert_non_null(strstr(err.msg, "give the NAME.key file"));

    uint8_t raw[KEYPAIR_BYTES];
    assert_int_equal(keypair_decode(raw, a.public_key), 0);
    assert_int_equal(keypair_decode(raw, "short"), -1);
}

static void test_save_refuses(void **state)
{
    (void)state;
    keypair_t a, b, loaded;
    err_t err = {0};
    assert_int_equal(keypair_generate(&a, &err), 0);
    assert_int_equal(keypair_generate(&b, &err), 0);
    assert_int_equal(keypair_save(&a, s_tmp, "beta", &err), 0);
    /* Never overwrites: the first pair stays. */
    assert_int_equal(keypair_save(&b, s_tmp, "beta", &err), -1);
    assert_int_equal(errno, EEXIST);
    assert_non_null(strstr(err.msg, "beta.key"));
    char path[1024];
    snprintf(path, sizeof path, "%s/beta.key", s_tmp);
    assert_int_equal(keypair_load(&loaded, path, &err), 0);
    assert_string_equal(loaded.public_key, a.public_key);

    const char *bad_names[] = {"", "..", "a/b", "x y", "../up"};
    for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++) {
        assert_int_equal(keypair_save(&a, s_tmp, bad_names[i], &err), -1);
        assert_int_equal(errno, EINVAL);
    }
    /* A .pub that cannot be written leaves no .key behind. */
    snprintf(path, sizeof path, "%s/gamma.pub", s_tmp);
    assert_int_equal(testutil_write_file(path, "x", 1), 0);
    assert_int_equal(keypair_save(&a, s_tmp, "gamma", &err), -1);
    assert_int_equal(errno, EEXIST);
    snprintf(path, sizeof path, "%s/gamma.key", s_tmp);
    assert_int_equal(access(path, F_OK), -1);
    /* A folder that does not exist. */
    snprintf(path, sizeof path, "%s/no/such", s_tmp);
    assert_int_equal(keypair_save(&a, path, "delta", &err), -1);
    assert_int_equal(errno, ENOENT);
}

/* One bad file: loading fails with code and a message holding each of
 * want (NULL-terminated). */
static void s_refused(const char *path, bool pair, int code, const char *const *want)
{
    keypair_t kp;
    char pub[KEYPAIR_Z85_LEN + 1];
    err_t err = {0};
    int rc = pair ? keypair_load(&kp, path, &err) : keypair_load_public(pub, path, &err);
    assert_int_equal(rc, -1);
    if (errno != code || err.code != code)
        fail_msg("%s: errno %d, want %d (%s)", path, errno, code, err.msg);
    assert_non_null(strstr(err.msg, path));
    for (; *want; want++)
        if (!strstr(err.msg, *want))
            fail_msg("'%s' lacks '%s'", err.msg, *want);
}

static void test_bad_files(void **state)
{
    (void)state;
    keypair_t a, b;
    err_t err = {0};
    assert_int_equal(keypair_generate(&a, &err), 0);
    assert_int_equal(keypair_generate(&b, &err), 0);
    char text[512];

    char missing[1024];
    snprintf(missing, sizeof missing, "%s/missing.key", s_tmp);
    s_refused(missing, true, ENOENT, (const char *[]){"cannot open", NULL});

    snprintf(text, sizeof text, "public-key = \"%s\"\nsecret-key = \"%s\"\n", a.public_key,
             a.secret_key);
    s_refused(s_file("open.key", text, 0644), true, EPERM,
              (const char *[]){"chmod 600", "644", NULL});
    /* The same file at 0600 is fine: the mode was the only fault. */
    keypair_t ok;
    assert_int_equal(keypair_load(&ok, s_file("open.key", text, 0600), &err), 0);
    /* A public key file may be world-readable. */
    snprintf(text, sizeof text, "public-key = %s\n", a.public_key); /* no quotes: fine */
    char pub[KEYPAIR_Z85_LEN + 1];
    assert_int_equal(keypair_load_public(pub, s_file("open.pub", text, 0644), &err), 0);
    assert_string_equal(pub, a.public_key);

    s_refused(s_file("empty.key", "", 0600), true, EINVAL,
              (const char *[]){"no public-key", NULL});
    s_refused(s_file("comments.pub", "# only a comment\n\n", 0644), false, EINVAL,
              (const char *[]){"no public-key", NULL});

    snprintf(text, sizeof text, "public-key = \"%s\"\nsecret-key = \"%s\"\n", a.public_key,
             b.secret_key);
    s_refused(s_file("mixed.key", text, 0600), true, EINVAL,
              (const char *[]){"not the secret key's", NULL});

    snprintf(text, sizeof text, "# c\npublic-key = \"%.39s\"\n", a.public_key);
    s_refused(s_file("short.pub", text, 0644), false, EINVAL,
              (const char *[]){"line 2", "not a key", NULL});
    snprintf(text, sizeof text, "public-key = \"%.39s~\"\n", a.public_key); /* ~ is not Z85 */
    s_refused(s_file("notz85.pub", text, 0644), false, EINVAL,
              (const char *[]){"line 1", "not a key", NULL});

    snprintf(text, sizeof text, "public-key = \"%s\"\npublic-key = \"%s\"\n", a.public_key,
             b.public_key);
    s_refused(s_file("twice.pub", text, 0644), false, EINVAL,
              (const char *[]){"line 2", "given twice", NULL});
    snprintf(text, sizeof text, "public-key = \"%s\"\nowner = me\n", a.public_key);
    s_refused(s_file("field.pub", text, 0644), false, EINVAL,
              (const char *[]){"unknown field 'owner'", NULL});
    s_refused(s_file("noeq.pub", "just some text\n", 0644), false, EINVAL,
              (const char *[]){"line 1", "name = value", NULL});

    char big[8192];
    memset(big, '#', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    s_refused(s_file("big.pub", big, 0644), false, EINVAL, (const char *[]){"too large", NULL});
    s_refused(s_tmp, false, EINVAL, (const char *[]){"not a regular file", NULL});

    char nul[64] = "public-key = \"";
    char nul_path[1024];
    snprintf(nul_path, sizeof nul_path, "%s/nul.pub", s_tmp);
    assert_int_equal(testutil_write_file(nul_path, nul, sizeof nul), 0); /* zero bytes */
    s_refused(nul_path, false, EINVAL, (const char *[]){"NUL byte", NULL});
}

static void test_socket_setters(void **state)
{
    (void)state;
    keypair_t server, client;
    err_t err = {0};
    assert_int_equal(keypair_generate(&server, &err), 0);
    assert_int_equal(keypair_generate(&client, &err), 0);
    void *ctx = zmq_ctx_new();
    void *r = zmq_socket(ctx, ZMQ_ROUTER), *d = zmq_socket(ctx, ZMQ_DEALER);
    assert_string_equal(keypair_mechanism(r), "NULL");
    assert_int_equal(keypair_set_server(r, &server, "test", &err), 0);
    assert_int_equal(keypair_set_client(d, &client, server.public_key, &err), 0);
    assert_string_equal(keypair_mechanism(r), "CURVE");
    assert_string_equal(keypair_mechanism(d), "CURVE");
    assert_int_equal(keypair_set_client(d, &client, "not a key", &err), -1);
    assert_int_equal(errno, EINVAL);
    zmq_close(r);
    zmq_close(d);
    zmq_ctx_term(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_save_refuses),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_socket_setters),
    };
    return cmocka_run_group_tests(tests, s_setup, testutil_tmpdir_teardown);
}
