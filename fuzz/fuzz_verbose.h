/* fuzz_verbose: FUZZ_VERBOSE=1 in the environment makes a harness say what
 * became of each input (decoded, or the error text), to check that the seeds
 * of fuzz/corpus/ are accepted: build/fuzz/fuzz_<target> fuzz/corpus/<target>/ *
 */
#ifndef MOE_FUZZ_VERBOSE_H
#define MOE_FUZZ_VERBOSE_H

#include <stdio.h>
#include <stdlib.h>

static inline void fuzz_verbose(const char *what, int rc, const char *msg)
{
    static int on = -1;
    if (on < 0)
        on = getenv("FUZZ_VERBOSE") != NULL;
    if (on)
        fprintf(stderr, "%s: %s%s\n", what, rc == 0 ? "ok" : "refused: ", rc == 0 ? "" : msg);
}

#endif /* MOE_FUZZ_VERBOSE_H */
