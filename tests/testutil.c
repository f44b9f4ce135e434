/* testutil: see testutil.h. */
#include "tests/testutil.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "core/mem.h"

void testrng_init(testrng_t *rng, uint64_t seed)
{
    rng->state = seed;
}

static uint64_t s_next(testrng_t *rng)
{
    uint64_t z = (rng->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double testrng_uniform(testrng_t *rng)
{
    return (double)(s_next(rng) >> 11) * (1.0 / 9007199254740992.0);
}

float testrng_normal(testrng_t *rng)
{
    double u1 = testrng_uniform(rng), u2 = testrng_uniform(rng);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void testrng_fill(testrng_t *rng, float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = scale * testrng_normal(rng);
}

double testutil_max_abs_diff(const float *a, const double *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > m || isnan(d))
            m = isnan(d) ? INFINITY : d;
    }
    return m;
}

double testutil_max_abs(const double *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(b[i]) > m)
            m = fabs(b[i]);
    return m;
}

const char *testutil_env(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

bool testutil_skip_forbidden(void)
{
    if (strcmp(testutil_env("MOE_NO_SKIP", ""), "1") == 0)
        return true;
    return geteuid() == 0 && strcmp(testutil_env("CI", ""), "true") == 0;
}

char *testutil_mkdtemp(const char *name)
{
    const char *base = testutil_env("MOE_TMP", "/tmp");
    mkdir(base, 0755);
    size_t n = strlen(base) + strlen(name) + 16;
    char *path = malloc(n);
    if (!path)
        return NULL;
    snprintf(path, n, "%s/%s.XXXXXX", base, name);
    if (!mkdtemp(path)) {
        free(path);
        return NULL;
    }
    return path;
}

void testutil_rmtree(const char *path)
{
    if (!path || !*path || strcmp(path, "/") == 0)
        return;
    size_t n = strlen(path) + 16;
    char *cmd = malloc(n);
    if (!cmd)
        return;
    snprintf(cmd, n, "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "testutil: could not remove %s\n", path);
    free(cmd);
}

int testutil_write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, n, f);
    int rc = fclose(f);
    return (w == n && rc == 0) ? 0 : -1;
}

char *testutil_read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (len < cap)
            break;
        char *bigger = realloc(buf, 2 * cap + 1);
        if (!bigger) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    fclose(f);
    if (buf) {
        buf[len] = '\0';
        if (n)
            *n = len;
    }
    return buf;
}

char *testutil_last_line(char *text)
{
    size_t n = strlen(text);
    while (n && text[n - 1] == '\n')
        text[--n] = '\0';
    char *nl = strrchr(text, '\n');
    return nl ? nl + 1 : text;
}

int testutil_run_program(const char *prefix, const char *prog, const char *args, char **out,
                         char **err_text)
{
    char errpath[1024];
    snprintf(errpath, sizeof errpath, "%s/stderr.XXXXXX", testutil_env("MOE_TMP", "/tmp"));
    mkdir(testutil_env("MOE_TMP", "/tmp"), 0755);
    int fd = mkstemp(errpath);
    if (fd < 0)
        return -1;
    close(fd);
    size_t size = strlen(prog) + strlen(args) + strlen(errpath) + (prefix ? strlen(prefix) : 0) +
                  32;
    char *cmd = malloc(size);
    if (!cmd) {
        unlink(errpath);
        return -1;
    }
    snprintf(cmd, size, "%s '%s' %s </dev/null 2>'%s'", prefix ? prefix : "", prog, args,
             errpath);
    int rc = testutil_run(cmd, out);
    free(cmd);
    if (err_text)
        *err_text = testutil_read_file(errpath, NULL);
    unlink(errpath);
    return rc;
}

void testutil_expect_error(const char *prefix, const char *prog, const char *args, int code,
                           const char *needle)
{
    char *out = NULL, *err_text = NULL;
    int rc = testutil_run_program(prefix, prog, args, &out, &err_text);
    const char *name = strrchr(prog, '/') ? strrchr(prog, '/') + 1 : prog;
    char *copy = strdup(err_text ? err_text : "");
    int lines = 0;
    bool named = true;
    for (char *line = strtok(copy, "\n"); line; line = strtok(NULL, "\n")) {
        /* the start-up reports: the OpenBLAS kernels and the weights' format */
        if (strstr(line, ": openblas ") || strstr(line, ": weights: "))
            continue;
        lines++;
        named &= strncmp(line, name, strlen(name)) == 0 && line[strlen(name)] == ':';
    }
    free(copy);
    if (rc != code || lines != 1 || !named || !err_text || !strstr(err_text, needle) ||
        (out && strstr(out, "tcp://")))
        fail_msg("%s %s: exit %d (want %d), stdout: %s, stderr: %s(want one line '%s: ...' "
                 "holding '%s')", name, args, rc, code, out ? out : "", err_text ? err_text : "",
                 name, needle);
    free(out);
    free(err_text);
}

void testutil_make_model(const char *dir, const char *name, const char *preset, int seed,
                         char *model, size_t size)
{
    snprintf(model, size, "%s/%s", dir, name);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "test -f '%s/config.json' || '%s/moe-mkmodel' --arch mixtral "
             "--preset %s --seed %d --out '%s' >/dev/null 2>&1", model,
             testutil_env("MOE_BIN", "build/bin"), preset, seed, model);
    if (testutil_run(cmd, NULL) != 0)
        fail_msg("moe-mkmodel --preset %s --seed %d --out %s failed", preset, seed, model);
}

void testutil_expect_errors(const char *prefix, const char *prog,
                            const testutil_error_case_t *cases, int n, const char *arg)
{
    for (int i = 0; i < n; i++) {
        char args[4096];
        snprintf(args, sizeof args, cases[i].args, arg);
        testutil_expect_error(prefix, prog, args, cases[i].code, cases[i].needle);
    }
}

void testutil_program(const char *name, char *path, size_t size)
{
    snprintf(path, size, "%s/%s", testutil_env("MOE_BIN", "build/bin"), name);
    if (access(path, X_OK) != 0)
        testutil_skip_unless_possible(false, "%s not built", path);
}

bool testutil_running(int pid)
{
    if (kill((pid_t)pid, 0) != 0)
        return false;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    char *stat = testutil_read_file(path, NULL);
    if (!stat)
        return false;
    /* pid (comm) state ...: the name may hold spaces and parentheses. */
    const char *end = strrchr(stat, ')');
    const bool zombie = end && end[1] == ' ' && end[2] == 'Z';
    free(stat);
    return !zombie;
}

int testutil_run(const char *cmdline, char **stdout_text)
{
    if (stdout_text)
        *stdout_text = NULL;
    FILE *p = popen(cmdline, "r");
    if (!p)
        return -1;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t r;
    char chunk[4096];
    while ((r = fread(chunk, 1, sizeof chunk, p)) > 0) {
        if (buf && len + r + 1 > cap) {
            while (len + r + 1 > cap)
                cap *= 2;
            char *bigger = realloc(buf, cap);
            if (!bigger) {
                free(buf);
                buf = NULL;
            } else {
                buf = bigger;
            }
        }
        if (buf) {
            memcpy(buf + len, chunk, r);
            len += r;
        }
    }
    int status = pclose(p);
    if (buf)
        buf[len] = '\0';
    if (stdout_text)
        *stdout_text = buf;
    else
        free(buf);
    if (status == -1 || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

int testutil_tmpdir_setup(void **state)
{
    /* glibc's name of the running program: test_synth, ... */
    char *dir = testutil_mkdtemp(program_invocation_short_name);
    if (!dir)
        return -1;
    *state = dir;
    return 0;
}

int testutil_tmpdir_teardown(void **state)
{
    testutil_rmtree(*state);
    free(*state);
    return 0;
}

int testutil_oom_sweep(long max_k, testutil_attempt_fn attempt, void *ctx)
{
    int failures = 0;
    for (long k = 1; k < max_k; k++) {
        err_t err = {0};
        mem_fail_after(k);
        errno = 0;
        int rc = attempt(ctx, &err);
        int e = errno;
        mem_fail_after(-1);
        if (rc == 0)
            break;
        if (e != ENOMEM)
            fail_msg("k=%ld: errno %d, '%s'", k, e, err.msg);
        failures++;
    }
    return failures;
}
