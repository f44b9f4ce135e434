/* normalize: the normalizer of a tokenizer.json, run on the text between
 * added tokens before pre-tokenization.
 *
 * Supported types: NFC, NFD, NFKC, NFKD (utf8proc), Prepend, Replace with a
 * String pattern, Sequence of these, and null (identity). Input is valid
 * UTF-8 (the caller checks).
 */
#ifndef MOE_TOKENIZER_NORMALIZE_H
#define MOE_TOKENIZER_NORMALIZE_H

#include <jansson.h>
#include <stddef.h>

#include "core/err.h"
#include "tokenizer/tokenizer_private.h"

typedef struct normalize normalize_t;

/* Compiles spec (the "normalizer" value; NULL or JSON null is identity).
 * Caller destroys. NULL with EINVAL/err for an unsupported or malformed spec,
 * ENOMEM when out of memory. */
normalize_t *normalize_new(const json_t *spec, err_t *err);

/* Accepts NULL; sets *self_p to NULL. */
void normalize_destroy(normalize_t **self_p);

/* Replaces out's contents with the normalized text[0..n). 0, or -1 with
 * errno (ENOMEM; EINVAL when utf8proc rejects the text). */
int normalize_run(const normalize_t *self, const char *text, size_t n,
                  tok_bytes_t *out, err_t *err);

#endif /* MOE_TOKENIZER_NORMALIZE_H */
