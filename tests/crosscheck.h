/* crosscheck: a running cluster's answers against moe-run's, both through the
 * real programs, for every prompt of a fixture. */
#ifndef MOE_TESTS_CROSSCHECK_H
#define MOE_TESTS_CROSSCHECK_H

#include <stddef.h>
#include <stdint.h>

#include "tests/fixture.h"

/* Runs a shell command; its last line of stdout (malloc'd). Fails the test
 * when the command fails. */
char *crosscheck_last_line(const char *cmd);

/* For every prompt of fx: `moe-client generate` through the cluster at
 * endpoint prints what `moe-run` prints, and `moe-client logits` writes
 * logits within 1e-5 x max|logit| of `moe-run --dump-logits`.
 *   bin: the programs' folder; tmp: a scratch folder;
 *   client_prefix: put before moe-client (e.g. to run it on a test host), or "". */
void crosscheck_fixture(const fixture_t *fx, const char *endpoint, const char *bin,
                        const char *tmp, const char *client_prefix);

/* n random prompts of 1..max_len ids below vocab (seeded), prompt g in
 * ids[g * max_len ...] with its length in len[g], and what `moe-run --model
 * model --max-tokens max_tokens` prints for each in want[g * want_size ...]:
 * the outputs a cluster's generations must equal. Fails the test when
 * moe-run fails. */
void crosscheck_prompts(const char *bin, const char *model, int vocab, uint64_t seed, int n,
                        int max_len, int max_tokens, int32_t *ids, int *len, char *want,
                        size_t want_size);

#endif /* MOE_TESTS_CROSSCHECK_H */
