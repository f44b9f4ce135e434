/* tokenizer: Hugging Face tokenizer.json files, encoded and decoded as the
 * `tokenizers` library (0.23) does, for the BPE families moecluster serves:
 * byte-level BPE (Qwen, DeepSeek, gpt-oss) and SentencePiece-style BPE with
 * byte fallback (Llama 2, Mistral).
 *
 * Encoding: added tokens are matched first, leftmost-longest, on the raw text
 * (those with "normalized": false) and then on the normalized text of the
 * pieces between them ("normalized": true); the rest goes through normalizer
 * (normalize.h), pre-tokenizer (pretok.h) and BPE model (bpe.h). With
 * add_special, the post-processor's TemplateProcessing ids (e.g. Llama's
 * <s>) are added; ByteLevel post-processors add nothing. The added-token
 * flags lstrip, rstrip and single_word are not supported (load fails when a
 * token sets one), which none of the reference files needs.
 *
 * Text must be valid UTF-8: an invalid byte sequence is an EINVAL error
 * (HF tokenizers accepts only Rust strings, so there is nothing to match).
 * Decoded text is always valid UTF-8: byte sequences that token ids spell
 * but that are not UTF-8 are replaced by U+FFFD, as HF does.
 *
 * A tokenizer_t is read-only after loading, but encode uses per-tokenizer
 * regex match data, so each tokenizer_t is used by one thread at a time.
 */
#ifndef MOE_TOKENIZER_TOKENIZER_H
#define MOE_TOKENIZER_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct tokenizer tokenizer_t;
typedef struct tokenizer_stream tokenizer_stream_t;

/* Loads a tokenizer.json. Caller destroys. NULL with errno/err: ENOENT etc.
 * when the file cannot be read, EINVAL when it is not JSON, has no model, or
 * uses an unsupported model/normalizer/pre-tokenizer/decoder/post-processor
 * type (the message names it), ENOMEM. */
tokenizer_t *tokenizer_load(const char *path, err_t *err);

/* Accepts NULL; safe to call twice; sets *self_p to NULL. */
void tokenizer_destroy(tokenizer_t **self_p);

/* Encodes text[0..len) (UTF-8, may contain NUL). add_special adds the
 * post-processor's special tokens. On success *ids is a mem_alloc'd array of
 * *n ids (caller frees with mem_free; non-NULL even when *n is 0). -1 with
 * errno/err: EINVAL for invalid UTF-8 (naming the byte offset), ENOMEM. */
int tokenizer_encode(tokenizer_t *self, const char *text, size_t len,
                     int add_special, int32_t **ids, size_t *n, err_t *err);

/* Decodes n ids to text, special tokens included. On success *text is a
 * mem_alloc'd NUL-terminated UTF-8 string (caller frees with mem_free).
 * -1 with errno/err: EINVAL for an id that is no token, ENOMEM. */
int tokenizer_decode(const tokenizer_t *self, const int32_t *ids, size_t n,
                     char **text, err_t *err);

/* One more than the largest token id (vocabulary and added tokens). */
int32_t tokenizer_n_ids(const tokenizer_t *self);

/* True when id is an added token marked "special" (control tokens such as
 * EOS, or reserved ones), which a server leaves out of the text it shows, as
 * Hugging Face's decode(skip_special_tokens=True) does. */
bool tokenizer_is_special(const tokenizer_t *self, int32_t id);

/* The text of token id (borrowed, as in tokenizer.json), or NULL. */
const char *tokenizer_id_token(const tokenizer_t *self, int32_t id);

/* An incremental decoder for generated ids: fed one id at a time, it returns
 * only text that is final, never a partial UTF-8 character, and the
 * concatenation of every feed and the flush equals tokenizer_decode of all
 * the ids. self must outlive the stream. Caller destroys. NULL with ENOMEM. */
tokenizer_stream_t *tokenizer_stream_new(const tokenizer_t *self);

/* Accepts NULL; safe to call twice; sets *self_p to NULL. */
void tokenizer_stream_destroy(tokenizer_stream_t **self_p);

/* Feeds one id. *text is set to the new text (borrowed, NUL-terminated,
 * valid until the next call on the stream) and *len to its length, 0 when
 * the id completes no character yet. -1 with errno/err: EINVAL for an id
 * that is no token (the stream is unchanged), ENOMEM. */
int tokenizer_stream_feed(tokenizer_stream_t *self, int32_t id,
                          const char **text, size_t *len, err_t *err);

/* Ends the stream: returns the text still held back (an incomplete
 * character at the end becomes U+FFFD, as in tokenizer_decode) and resets
 * the stream for a new sequence. Same ownership and errors as feed. */
int tokenizer_stream_flush(tokenizer_stream_t *self, const char **text,
                           size_t *len, err_t *err);

#endif /* MOE_TOKENIZER_TOKENIZER_H */
