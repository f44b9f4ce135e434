/* fixture: see fixture.h. */
#include "tests/fixture.h"

#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/testutil.h"

const char *fixture_root(void)
{
    return testutil_env("MOE_FIXTURES", "../shared/fixtures");
}

const char *fixture_root_precision(void)
{
    return testutil_env("MOE_FIXTURES_PRECISION", "../shared/fixtures-precision");
}

static int32_t *s_int_array(json_t *arr, int *n)
{
    if (!json_is_array(arr))
        return NULL;
    *n = (int)json_array_size(arr);
    int32_t *out = calloc((size_t)*n + 1, sizeof *out);
    for (int i = 0; out && i < *n; i++)
        out[i] = (int32_t)json_integer_value(json_array_get(arr, (size_t)i));
    return out;
}

/* (rows, k) nested array of numbers into a flat array. */
static int s_matrix(json_t *arr, int rows, int k, int32_t *ints, float *floats)
{
    if (!json_is_array(arr) || (int)json_array_size(arr) != rows)
        return -1;
    for (int r = 0; r < rows; r++) {
        json_t *row = json_array_get(arr, (size_t)r);
        if (!json_is_array(row) || (int)json_array_size(row) != k)
            return -1;
        for (int j = 0; j < k; j++) {
            json_t *v = json_array_get(row, (size_t)j);
            if (ints)
                ints[r * k + j] = (int32_t)json_integer_value(v);
            else
                floats[r * k + j] = (float)json_number_value(v);
        }
    }
    return 0;
}

static int s_load_prompt(fixture_t *fx, json_t *jp, fixture_prompt_t *p)
{
    p->ids = s_int_array(json_object_get(jp, "input_ids"), &p->length);
    p->greedy = s_int_array(json_object_get(jp, "greedy_continuation"), &p->n_greedy);
    const char *file = json_string_value(json_object_get(jp, "logits_file"));
    if (!p->ids || !p->greedy || !file)
        return -1;
    char path[700];
    snprintf(path, sizeof path, "%s/%s", fx->dir, file);
    size_t n = 0;
    p->logits = (float *)testutil_read_file(path, &n);
    if (!p->logits || n != (size_t)p->length * fx->vocab * sizeof(float)) {
        fprintf(stderr, "fixture: %s has %zu bytes, expected %d x %d floats\n", path, n,
                p->length, fx->vocab);
        return -1;
    }
    json_t *routing = json_object_get(jp, "routing");
    p->n_routing = (int)json_array_size(routing);
    if (p->n_routing > FIXTURE_MAX_LAYERS)
        return -1;
    for (int i = 0; i < p->n_routing; i++) {
        json_t *jr = json_array_get(routing, (size_t)i);
        fixture_routing_t *r = &p->routing[i];
        size_t cells = (size_t)p->length * fx->k;
        r->layer = (int)json_integer_value(json_object_get(jr, "layer"));
        r->experts = calloc(cells, sizeof *r->experts);
        r->weights = calloc(cells, sizeof *r->weights);
        if (!r->experts || !r->weights ||
            s_matrix(json_object_get(jr, "selected_experts"), p->length, fx->k,
                     r->experts, NULL) < 0 ||
            s_matrix(json_object_get(jr, "routing_weights"), p->length, fx->k, NULL,
                     r->weights) < 0)
            return -1;
    }
    return 0;
}

fixture_t *fixture_load(const char *dir)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    char path[700];
    json_error_t jerr;
    json_t *root = NULL;
    if (!fx)
        return NULL;
    snprintf(fx->dir, sizeof fx->dir, "%s", dir);
    const char *slash = strrchr(dir, '/');
    snprintf(fx->name, sizeof fx->name, "%s", slash ? slash + 1 : dir);
    snprintf(path, sizeof path, "%s/reference.json", dir);
    root = json_load_file(path, 0, &jerr);
    if (!root) {
        fprintf(stderr, "fixture: %s: %s\n", path, jerr.text);
        goto fail;
    }
    json_t *shape = json_object_get(json_array_get(json_object_get(root, "prompts"), 0),
                                    "logits_shape");
    fx->vocab = (int)json_integer_value(json_array_get(shape, 1));
    fx->k = (int)json_integer_value(json_object_get(root, "experts_per_token"));
    json_t *prompts = json_object_get(root, "prompts");
    fx->n_prompts = (int)json_array_size(prompts);
    if (fx->vocab < 1 || fx->k < 1 || fx->n_prompts < 1 || fx->n_prompts > FIXTURE_MAX_PROMPTS)
        goto fail;
    for (int i = 0; i < fx->n_prompts; i++)
        if (s_load_prompt(fx, json_array_get(prompts, (size_t)i), &fx->prompts[i]) < 0) {
            fprintf(stderr, "fixture: %s: prompt %d is malformed\n", path, i);
            goto fail;
        }
    json_decref(root);
    return fx;

fail:
    json_decref(root);
    fixture_destroy(&fx);
    return NULL;
}

void fixture_destroy(fixture_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    fixture_t *fx = *self_p;
    for (int i = 0; i < FIXTURE_MAX_PROMPTS; i++) {
        fixture_prompt_t *p = &fx->prompts[i];
        free(p->ids);
        free(p->greedy);
        free(p->logits);
        for (int r = 0; r < FIXTURE_MAX_LAYERS; r++) {
            free(p->routing[r].experts);
            free(p->routing[r].weights);
        }
    }
    free(fx);
    *self_p = NULL;
}

static int s_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int fixture_list(const char *root, const char *prefix, char ***paths)
{
    DIR *d = opendir(root);
    if (!d)
        return -1;
    int n = 0, cap = 16;
    char **out = malloc((size_t)cap * sizeof *out);
    struct dirent *e;
    while (out && (e = readdir(d))) {
        if (e->d_name[0] == '.' || strncmp(e->d_name, prefix, strlen(prefix)) != 0)
            continue;
        char probe[4096]; /* a fixture is a folder with a config.json */
        snprintf(probe, sizeof probe, "%s/%s/config.json", root, e->d_name);
        if (access(probe, F_OK) != 0)
            continue;
        if (n == cap) {
            char **bigger = realloc(out, (size_t)(cap *= 2) * sizeof *out);
            if (!bigger)
                break;
            out = bigger;
        }
        size_t len = strlen(root) + strlen(e->d_name) + 2;
        out[n] = malloc(len);
        if (out[n])
            snprintf(out[n++], len, "%s/%s", root, e->d_name);
    }
    closedir(d);
    if (!out)
        return -1;
    qsort(out, (size_t)n, sizeof *out, s_cmp);
    *paths = out;
    return n;
}

void fixture_free_list(char **paths, int n)
{
    for (int i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
}
