/* wstore: the weight buffers a weights_t owns (the rest it borrows from the
 * checkpoint's read-only mapping): gpt_oss experts re-laid out, matrices a
 * checkpoint stores misaligned, and every matrix --dtype or --quantization
 * converted. Freed together with the weights; one can go early, when a
 * conversion replaced it.
 */
#ifndef MOE_ENGINE_WSTORE_H
#define MOE_ENGINE_WSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct wstore wstore_t;

/* An empty store; NULL with ENOMEM. Caller destroys. */
wstore_t *wstore_new(void);

/* Frees every buffer and the store; accepts NULL; sets *self_p to NULL. */
void wstore_destroy(wstore_t **self_p);

/* A new buffer of bytes (MEM_ALIGN-aligned), owned by the store. NULL with
 * ENOMEM. */
void *wstore_alloc(wstore_t *self, size_t bytes);

/* Frees buffer p of the store now (p as wstore_alloc returned it; a pointer
 * the store does not own is left alone). Recent buffers are found first. */
void wstore_free(wstore_t *self, const void *p);

/* Whether p is a buffer of self (from wstore_alloc, not freed). */
bool wstore_owns(const wstore_t *self, const void *p);

/* Bytes of the buffers held. */
uint64_t wstore_bytes(const wstore_t *self);

#endif /* MOE_ENGINE_WSTORE_H */
