/* assign: one routed unit of work, the currency between the router, the
 * expert FFNs and the wire. */
#ifndef MOE_CORE_ASSIGN_H
#define MOE_CORE_ASSIGN_H

#include <stdint.h>

/* Row `row` of a batch goes to expert `expert`, whose output is multiplied by
 * `weight` before it is summed into the row. */
typedef struct moe_assign {
    int32_t row;
    int32_t expert;
    float weight;
} moe_assign_t;

#endif /* MOE_CORE_ASSIGN_H */
