/* arch: where each architecture keeps each weight.
 *
 * The math asks for a weight by role (the query projection of layer 3, the
 * up projection of expert 5 of layer 3, ...); arch answers with the tensor's
 * name in the Hugging Face checkpoint, the slice of it (for architectures that
 * stack all experts in one tensor per projection) and the float32 shape the
 * math expects. A new architecture adds a table here, not a loader.
 */
#ifndef MOE_MODEL_ARCH_H
#define MOE_MODEL_ARCH_H

#include <stdint.h>

#include "core/err.h"
#include "model/config.h"

typedef enum arch_weight {
    ARCH_W_EMBED,        /* (vocab, hidden) */
    ARCH_W_LM_HEAD,      /* (vocab, hidden) */
    ARCH_W_FINAL_NORM,   /* (hidden) */
    ARCH_W_ATTN_NORM,    /* per layer (hidden) */
    ARCH_W_FFN_NORM,     /* per layer (hidden) */
    ARCH_W_Q,            /* per layer (heads * head_dim, hidden) */
    ARCH_W_K,            /* per layer (kv_heads * head_dim, hidden) */
    ARCH_W_V,            /* per layer (kv_heads * head_dim, hidden) */
    ARCH_W_O,            /* per layer (hidden, heads * head_dim) */
    ARCH_W_ROUTER,       /* per layer (n_experts, hidden) */
    ARCH_W_EXPERT_GATE,  /* per layer and expert (intermediate, hidden) */
    ARCH_W_EXPERT_UP,    /* per layer and expert (intermediate, hidden) */
    ARCH_W_EXPERT_DOWN,  /* per layer and expert (hidden, intermediate) */
    ARCH_W_COUNT
} arch_weight_t;

enum { ARCH_NAME_MAX = 160, ARCH_MAX_DIMS = 3 };

typedef struct arch_tensor {
    char name[ARCH_NAME_MAX];      /* tensor name in the checkpoint */
    int64_t slice;                 /* index along dim 0, or -1 for the whole tensor */
    int ndim;                      /* rank of the (sliced) tensor */
    int64_t shape[ARCH_MAX_DIMS];  /* expected shape of the (sliced) tensor */
} arch_tensor_t;

/* Fills *out for weight w of layer (ignored for model-wide weights) and expert
 * (ignored unless w is an expert weight). Returns 0, or -1 with EINVAL when
 * the architecture has no such weight or layer/expert is out of range. */
int arch_tensor(const config_t *cfg, arch_weight_t w, int layer, int expert,
                arch_tensor_t *out, err_t *err);

/* Short role name for messages, e.g. "q_proj" (borrowed, static). */
const char *arch_weight_name(arch_weight_t w);

#endif /* MOE_MODEL_ARCH_H */
