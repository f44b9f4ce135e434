/* testutil: small helpers shared by the cmocka tests.
 *
 * Tests find the reference fixtures in $MOE_FIXTURES, the built programs in
 * $MOE_BIN and a scratch folder under $MOE_TMP (all set by `make test`).
 */
#ifndef MOE_TESTS_TESTUTIL_H
#define MOE_TESTS_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* Deterministic pseudo-random numbers (splitmix64), independent of libc. */
typedef struct testrng { uint64_t state; } testrng_t;
void testrng_init(testrng_t *rng, uint64_t seed);
double testrng_uniform(testrng_t *rng);        /* [0, 1) */
float testrng_normal(testrng_t *rng);          /* N(0, 1) */
void testrng_fill(testrng_t *rng, float *x, size_t n, float scale); /* N(0, scale) */

/* Largest |a[i] - b[i]| and largest |b[i]|. */
double testutil_max_abs_diff(const float *a, const double *b, size_t n);
double testutil_max_abs(const double *b, size_t n);

/* A fresh empty directory under $MOE_TMP (or /tmp), e.g. ".../name.XXXXXX".
 * Returns a malloc'd path (caller frees) or NULL. */
char *testutil_mkdtemp(const char *name);

/* Removes a directory tree made by testutil_mkdtemp; ignores errors. */
void testutil_rmtree(const char *path);

/* Writes n bytes to path; returns 0 or -1. */
int testutil_write_file(const char *path, const void *data, size_t n);

/* Reads a whole file into a malloc'd buffer (NUL-terminated beyond *n);
 * returns NULL on failure. */
char *testutil_read_file(const char *path, size_t *n);

/* Environment value or fallback (borrowed). */
const char *testutil_env(const char *name, const char *fallback);

/* The last line of text, without the newlines that end text (text is
 * changed: they are removed). */
char *testutil_last_line(char *text);

/* ---- out of memory ---------------------------------------------------------- */

/* One try of the code under test: 0 when it succeeded, or -1 with errno
 * (and err). */
typedef int (*testutil_attempt_fn)(void *ctx, err_t *err);

/* In a cmocka case: tries attempt with the k-th allocation failing
 * (mem_fail_after), k = 1, 2, ... below max_k, until a try succeeds. Each
 * failed try must fail with ENOMEM (the case fails naming k and the error
 * otherwise). Returns the count of failed tries. */
int testutil_oom_sweep(long max_k, testutil_attempt_fn attempt, void *ctx);

/* ---- programs ---------------------------------------------------------------
 * The command-line programs under test (in $MOE_BIN), run through the shell. */

/* Runs "PREFIX 'prog' ARGS </dev/null" (prefix may be NULL: e.g. "timeout 30"
 * or "env X=1"), stdout into *out and stderr into *err_text (malloc'd; either
 * pointer may be NULL). Returns the exit status as testutil_run. */
int testutil_run_program(const char *prefix, const char *prog, const char *args, char **out,
                         char **err_text);

/* In a cmocka case: the path of program name in $MOE_BIN into path[size];
 * skips the case when it is not built (testutil_skip_unless_possible). */
void testutil_program(const char *name, char *path, size_t size);

/* In a cmocka case: makes dir/name a mixtral model of the preset with random
 * weights of seed (moe-mkmodel from $MOE_BIN) unless it holds one already;
 * writes that folder into model[size]. Fails the case when it cannot. */
void testutil_make_model(const char *dir, const char *name, const char *preset, int seed,
                         char *model, size_t size);

/* In a cmocka case: the program fails as a program of this project must:
 * exit status code, no endpoint (tcp://) on stdout, and on stderr, besides
 * the start-up reports (OpenBLAS's kernels, "NAME: weights: ..."), one line "NAME: ..." (NAME: prog's file name) that
 * holds needle. Fails the case otherwise. */
void testutil_expect_error(const char *prefix, const char *prog, const char *args, int code,
                           const char *needle);

/* One expected failure of a program: its arguments, a printf format of one
 * string (e.g. the model folder), the exit status and a text its error line
 * holds. */
typedef struct testutil_error_case {
    const char *args;
    int code;
    const char *needle;
} testutil_error_case_t;

/* testutil_expect_error for each of the n cases, args formatted with arg. */
void testutil_expect_errors(const char *prefix, const char *prog,
                            const testutil_error_case_t *cases, int n, const char *arg);

/* ---- skips ----------------------------------------------------------------
 * A case that cannot run here skips with a reason (cmocka's skip(), counted
 * by tests/run.sh), but never where it could have run: CI runs every case,
 * so a skip there is a failure. */

/* True when skipping is a failure: CI=true while running as root (as CI
 * does), or MOE_NO_SKIP=1. */
bool testutil_skip_forbidden(void);

/* In a cmocka case: skips it, printing why, or fails it when could_run (the
 * case's own evidence that it could have run here) or
 * testutil_skip_forbidden(). why is a printf format. */
#define testutil_skip_unless_possible(could_run, ...)                              \
    do {                                                                           \
        if ((could_run) || testutil_skip_forbidden())                              \
            fail_msg("cannot skip here (it could run): " __VA_ARGS__);             \
        print_message("skipping: " __VA_ARGS__);                                   \
        print_message("\n");                                                       \
        skip();                                                                    \
    } while (0)

/* True while process pid runs. One that has exited but is not yet reaped (a
 * zombie) has stopped: processes started through a shell outlive it, their
 * parent becomes init, and some inits reap only every few seconds. */
bool testutil_running(int pid);

/* Runs a shell command line, capturing stdout into a malloc'd string (may be
 * NULL) and returning the exit status (-1 when it could not run or was killed). */
int testutil_run(const char *cmdline, char **stdout_text);

/* cmocka group setup / teardown: *state is a fresh directory named after
 * the test program (testutil_mkdtemp), removed and freed by the teardown. */
int testutil_tmpdir_setup(void **state);
int testutil_tmpdir_teardown(void **state);

#endif /* MOE_TESTS_TESTUTIL_H */
