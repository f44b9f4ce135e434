/* family: one descriptor per model family, everything the code knows about a
 * family that is not its math.
 *
 * A descriptor gives the family's config.json keys and its parse hook (what
 * config_parse() reads beyond the common fields), the tensor names of each
 * weight role (arch.h), the roles in checkpoint order as moe-mkmodel writes
 * them, its write hook (the family's own config.json fields), its presets
 * and its preset hook. The attention kind and the expert storage are the
 * family's; the rest of config_t is the config's. Which tensors a model has
 * is arch_present()'s, from the config: the loader and the writer both ask
 * it.
 *
 * families[] in family.c is the one list of families: config.c, arch.c,
 * synth.c and the tests iterate it (family_count(), family_at()). Adding a
 * family is one new descriptor (model/fam_<name>.c), one config_arch_t
 * value and one line in that list, plus its math (docs/ARCHITECTURE.md,
 * "Adding a family").
 */
#ifndef MOE_MODEL_FAMILY_H
#define MOE_MODEL_FAMILY_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "core/err.h"
#include "model/arch.h"
#include "model/config.h"

/* A preset: the dims a family's config needs; 0 where it has no such dim. */
typedef struct family_preset {
    const char *name;
    int hidden, n_layers, n_experts, top_k, inter, n_heads, n_kv_heads, vocab;
    int dense_inter;          /* HF intermediate_size (qwen, deepseek) */
    int shared_inter;         /* qwen2_moe shared_expert_intermediate_size */
    int n_shared;             /* deepseek n_shared_experts */
    int first_dense;          /* deepseek first_k_dense_replace */
    int n_group, topk_group;  /* deepseek */
    int q_lora, kv_lora, nope, rope, v_head; /* deepseek MLA */
    int window;               /* gpt_oss sliding window */
} family_preset_t;

typedef struct family family_t;

struct family {
    config_arch_t arch;
    const char *model_type;        /* config.json "model_type" */
    const char *class_name;        /* its entry of "architectures" */
    const char *experts_keys[3];   /* fields that may hold the routed expert
                                      count, NULL-terminated */
    const char *experts_key_out;   /* the one moe-mkmodel writes */
    const char *topk_key;          /* field of the experts per token */
    bool layer_lists;              /* the two may be per-layer lists (uniform) */
    bool moe_inter_key;            /* the routed width is moe_intermediate_size
                                      and intermediate_size the dense width */
    double default_rope_theta;     /* when config.json gives none */
    double preset_rope_theta;      /* what the presets use */
    bool supported;                /* false: parses, the engine cannot run it */
    bool yarn;                     /* its YaRN RoPE is checked against
                                      transformers (else only plain RoPE) */
    config_attn_t attn;            /* zero: plain attention */
    config_experts_layout_t experts_layout; /* zero: one tensor per expert */

    /* printf formats of tensor names by role (NULL: the family has no such
     * role); per layer: the layer, per expert: the layer then the expert
     * (stacked experts: the layer only). */
    const char *const *names;      /* [ARCH_W_COUNT] */
    /* Roles in checkpoint order: model-wide ones, then a run repeated per
     * layer with a run of expert roles in it repeated per expert. */
    const int *roles;
    size_t n_roles;
    const family_preset_t *presets;
    size_t n_presets;

    /* Reads the family's fields into c (the common ones are there). */
    int (*parse)(config_t *c, const json_t *root, const family_t *f,
                 const char *origin, err_t *err);
    /* Writes the family's own config.json fields of c into o; clears *ok on
     * failure. */
    void (*write)(json_t *o, const config_t *c, bool *ok);
    /* Sets the fields of c that the family fixes or the preset gives beyond
     * the common dims (c has those). */
    void (*preset)(config_t *c, const family_preset_t *p);
};

/* Families in list order; i < family_count(). */
size_t family_count(void);
const family_t *family_at(size_t i);

/* The descriptor of arch / of a model_type, or NULL. */
const family_t *family_of(config_arch_t arch);
const family_t *family_find(const char *model_type);

/* "mixtral, qwen2_moe, ..." in list order (borrowed, static). */
const char *family_names(void);

/* The descriptors, each in its own fam_<name>.c. */
extern const family_t family_mixtral, family_qwen2_moe, family_qwen3_moe,
    family_olmoe, family_hunyuan_v1_moe, family_deepseek_v2,
    family_deepseek_v3, family_gpt_oss;

#endif /* MOE_MODEL_FAMILY_H */
