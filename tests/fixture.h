/* fixture: one reference fixture of ../shared/fixtures or
 * ../shared/fixtures-precision (see their READMEs): a model folder plus
 * reference.json and the expected logits, read for tests. */
#ifndef MOE_TESTS_FIXTURE_H
#define MOE_TESTS_FIXTURE_H

#include <stdint.h>

enum { FIXTURE_MAX_PROMPTS = 4, FIXTURE_MAX_LAYERS = 16 };

typedef struct fixture_routing {
    int layer;
    int32_t *experts;     /* (length, k) selected expert ids */
    float *weights;       /* (length, k) routing weights */
} fixture_routing_t;

typedef struct fixture_prompt {
    int length;
    int32_t *ids;                 /* (length) */
    int n_greedy;
    int32_t *greedy;              /* (n_greedy) expected continuation */
    float *logits;                /* (length, vocab) expected */
    int n_routing;
    fixture_routing_t routing[FIXTURE_MAX_LAYERS];
} fixture_prompt_t;

typedef struct fixture {
    char dir[512];
    char name[128];
    int vocab;
    int k;                        /* experts per token */
    int n_prompts;
    fixture_prompt_t prompts[FIXTURE_MAX_PROMPTS];
} fixture_t;

/* Loads the fixture in dir; returns NULL (with a message on stderr) on failure. */
fixture_t *fixture_load(const char *dir);
void fixture_destroy(fixture_t **self_p);

/* Lists fixture folders (with a config.json) under root whose name starts
 * with prefix, sorted:
 * returns the count and a malloc'd array of malloc'd paths (free with
 * fixture_free_list), or -1. */
int fixture_list(const char *root, const char *prefix, char ***paths);
void fixture_free_list(char **paths, int n);

/* $MOE_FIXTURES, or ../shared/fixtures. */
const char *fixture_root(void);

/* $MOE_FIXTURES_PRECISION, or ../shared/fixtures-precision: the same kind of
 * fixtures with weights stored as real checkpoints store them (BF16, FP8
 * E4M3 with block scales, MXFP4 experts; its README). */
const char *fixture_root_precision(void);

#endif /* MOE_TESTS_FIXTURE_H */
