/* pretok: the pre-tokenizer of a tokenizer.json, which cuts normalized text
 * into the pieces that BPE encodes one by one.
 *
 * Supported types: Split with a Regex or String pattern and behavior
 * Isolated or Removed (invert allowed), ByteLevel (add_prefix_space,
 * use_regex with the GPT-2 pattern), Sequence of these, and null (the whole
 * text is one piece). Regexes are compiled by PCRE2 with PCRE2_UTF|PCRE2_UCP,
 * so \p{L}, \s etc. follow Unicode as the Oniguruma engine of HF tokenizers.
 * ByteLevel maps every byte to its GPT-2 printable character (pretok_byte_char)
 * and so must be the last step. Input is valid UTF-8 (the caller checks).
 */
#ifndef MOE_TOKENIZER_PRETOK_H
#define MOE_TOKENIZER_PRETOK_H

#include <jansson.h>
#include <stddef.h>

#include "core/err.h"
#include "tokenizer/tokenizer_private.h"

typedef struct pretok pretok_t;

/* Compiles spec (the "pre_tokenizer" value; NULL or JSON null is identity).
 * Caller destroys. NULL with EINVAL/err for an unsupported or malformed spec
 * or a regex PCRE2 rejects; ENOMEM when out of memory. */
pretok_t *pretok_new(const json_t *spec, err_t *err);

/* Accepts NULL; sets *self_p to NULL. */
void pretok_destroy(pretok_t **self_p);

/* Replaces out's pieces with those of text[0..n). Empty pieces are dropped.
 * 0, or -1 with errno (ENOMEM; EINVAL when matching fails). */
int pretok_run(const pretok_t *self, const char *text, size_t n,
               tok_pieces_t *out, err_t *err);

/* The GPT-2 byte-to-unicode table: the UTF-8 form (1 or 2 bytes, borrowed,
 * NUL-terminated) of the character that stands for byte b. */
const char *pretok_byte_char(unsigned char b);

/* The inverse: the byte that the character starting at s[0..n) stands for,
 * with *used set to its length in bytes; -1 when it is no table character. */
int pretok_char_byte(const char *s, size_t n, size_t *used);

#endif /* MOE_TOKENIZER_PRETOK_H */
