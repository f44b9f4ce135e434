/* crosscheck: see crosscheck.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/idlist.h"
#include "core/mem.h"
#include "tests/crosscheck.h"
#include "tests/testutil.h"

char *crosscheck_last_line(const char *cmd)
{
    char *out = NULL;
    int rc = testutil_run(cmd, &out);
    if (rc != 0 || !out)
        fail_msg("%s: exit %d", cmd, rc);
    char *line = strdup(testutil_last_line(out));
    free(out);
    return line;
}

void crosscheck_prompts(const char *bin, const char *model, int vocab, uint64_t seed, int n,
                        int max_len, int max_tokens, int32_t *ids, int *len, char *want,
                        size_t want_size)
{
    testrng_t rng;
    testrng_init(&rng, seed);
    for (int g = 0; g < n; g++) {
        int32_t *p = ids + (size_t)g * max_len;
        len[g] = 1 + g % max_len;
        for (int i = 0; i < len[g]; i++)
            p[i] = (int32_t)(testrng_uniform(&rng) * vocab);
        char *text = idlist_format(p, len[g]);
        assert_non_null(text);
        char cmd[4096];
        snprintf(cmd, sizeof cmd, "'%s/moe-run' --model '%s' --prompt-ids %s --max-tokens %d "
                 "2>/dev/null", bin, model, text, max_tokens);
        mem_free(text);
        char *line = crosscheck_last_line(cmd);
        snprintf(want + (size_t)g * want_size, want_size, "%s", line);
        free(line);
    }
}

static float *s_read_floats(const char *path, size_t *n)
{
    size_t bytes = 0;
    float *f = (float *)testutil_read_file(path, &bytes);
    assert_non_null(f);
    *n = bytes / sizeof(float);
    return f;
}

void crosscheck_fixture(const fixture_t *fx, const char *endpoint, const char *bin,
                        const char *tmp, const char *client_prefix)
{
    for (int p = 0; p < fx->n_prompts; p++) {
        const fixture_prompt_t *pr = &fx->prompts[p];
        char *ids = idlist_format(pr->ids, pr->length);
        char cmd[8192], ref_path[700], got_path[700];
        snprintf(cmd, sizeof cmd, "'%s/moe-run' --model '%s' --prompt-ids %s --max-tokens %d "
                 "2>/dev/null", bin, fx->dir, ids, pr->n_greedy);
        char *want = crosscheck_last_line(cmd);
        snprintf(cmd, sizeof cmd, "%s '%s/moe-client' --connect '%s' generate --prompt-ids %s "
                 "--max-tokens %d", client_prefix, bin, endpoint, ids, pr->n_greedy);
        char *got = crosscheck_last_line(cmd);
        assert_string_equal(got, want);

        snprintf(ref_path, sizeof ref_path, "%s/crosscheck-ref.f32", tmp);
        snprintf(got_path, sizeof got_path, "%s/crosscheck-got.f32", tmp);
        snprintf(cmd, sizeof cmd, "'%s/moe-run' --model '%s' --prompt-ids %s --max-tokens 0 "
                 "--dump-logits '%s' >/dev/null 2>&1", bin, fx->dir, ids, ref_path);
        assert_int_equal(testutil_run(cmd, NULL), 0);
        snprintf(cmd, sizeof cmd, "%s '%s/moe-client' --connect '%s' logits --prompt-ids %s "
                 "--out '%s'", client_prefix, bin, endpoint, ids, got_path);
        assert_int_equal(testutil_run(cmd, NULL), 0);
        size_t n_ref, n_got;
        float *ref = s_read_floats(ref_path, &n_ref);
        float *lg = s_read_floats(got_path, &n_got);
        assert_int_equal(n_got, n_ref);
        assert_int_equal(n_ref, (size_t)pr->length * fx->vocab);
        double max_ref = 0, max_err = 0;
        for (size_t i = 0; i < n_ref; i++) {
            max_ref = fmax(max_ref, fabs(ref[i]));
            max_err = fmax(max_err, fabs((double)lg[i] - ref[i]));
        }
        printf("  %s prompt %d: tokens equal, max |logit - moe-run| %.3g (limit %.3g)\n",
               fx->name, p, max_err, 1e-5 * max_ref);
        assert_true(max_err <= 1e-5 * max_ref);
        free(ref);
        free(lg);
        free(want);
        free(got);
        mem_free(ids);
    }
}
