/* family: see family.h. */
#include "model/family.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* The one list of families. */
static const family_t *const s_families[] = {
    &family_mixtral, &family_qwen2_moe, &family_qwen3_moe, &family_olmoe,
    &family_hunyuan_v1_moe, &family_deepseek_v2, &family_deepseek_v3,
    &family_gpt_oss,
};
enum { S_N = sizeof s_families / sizeof s_families[0] };

size_t family_count(void)
{
    return S_N;
}

const family_t *family_at(size_t i)
{
    return i < S_N ? s_families[i] : NULL;
}

const family_t *family_of(config_arch_t arch)
{
    for (size_t i = 0; i < S_N; i++)
        if (s_families[i]->arch == arch)
            return s_families[i];
    return NULL;
}

const family_t *family_find(const char *model_type)
{
    for (size_t i = 0; model_type && i < S_N; i++)
        if (strcmp(s_families[i]->model_type, model_type) == 0)
            return s_families[i];
    return NULL;
}

/* Built once from the list: constant after that, so any thread may read it. */
static char s_names[256];
static pthread_once_t s_names_once = PTHREAD_ONCE_INIT;

static void s_build_names(void)
{
    size_t used = 0;
    for (size_t i = 0; i < S_N && used < sizeof s_names; i++) {
        int n = snprintf(s_names + used, sizeof s_names - used, "%s%s",
                         i ? ", " : "", s_families[i]->model_type);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

const char *family_names(void)
{
    pthread_once(&s_names_once, s_build_names);
    return s_names;
}

