/* decoder: the decoder of a tokenizer.json, which turns token texts back
 * into a string.
 *
 * Supported types: ByteLevel (GPT-2 characters back to bytes, then UTF-8
 * with invalid parts replaced by U+FFFD), Replace with a String pattern,
 * ByteFallback (<0xNN> runs to bytes; a run that is not valid UTF-8 becomes
 * one U+FFFD per byte), Fuse, Strip, Sequence of these; null joins the tokens
 * with spaces. Each step works on the list of token texts, as in HF.
 */
#ifndef MOE_TOKENIZER_DECODER_H
#define MOE_TOKENIZER_DECODER_H

#include <jansson.h>

#include "core/err.h"
#include "tokenizer/tokenizer_private.h"

typedef struct decoder decoder_t;

enum { DECODER_STEPS_MAX = 16 }; /* steps of a decoder, at most */

/* Compiles spec (the "decoder" value; NULL or JSON null joins with spaces).
 * Caller destroys. NULL with EINVAL/err for an unsupported spec. */
decoder_t *decoder_new(const json_t *spec, err_t *err);

/* Accepts NULL; sets *self_p to NULL. */
void decoder_destroy(decoder_t **self_p);

/* Decodes the token texts in tokens (which it overwrites) into out (replaced).
 * 0, or -1 with errno ENOMEM. */
int decoder_run(const decoder_t *self, tok_pieces_t *tokens, tok_bytes_t *out,
                err_t *err);

/* What a stream decoder needs (tokenizer.c). A step after one that fuses the
 * token texts into one (Fuse, ByteLevel) works on the whole text, so a
 * window of tokens cannot stand for it. */

/* The number of steps. */
int decoder_n_steps(const decoder_t *self);

/* The number of leading steps up to and including the first that fuses the
 * token texts into one text, or all steps when none does. */
int decoder_head(const decoder_t *self);

/* Runs steps [first, last) only (decoder_run runs them all), then joins the
 * texts as decoder_run does. Same contract as decoder_run. */
int decoder_run_steps(const decoder_t *self, int first, int last,
                      tok_pieces_t *tokens, tok_bytes_t *out, err_t *err);

/* 1 when token, last in a text decoded with steps [0, steps), may still
 * change with the token after it: it is a byte of a ByteFallback run, which
 * becomes one U+FFFD per byte when the whole run is not UTF-8. 0, or -1
 * with ENOMEM. */
int decoder_open_end(const decoder_t *self, int steps, const char *token);

/* What step i does to a single whole text: 1 for a Strip (its content,
 * start and stop set), 0 for a Fuse (nothing), -1 for any other step. */
int decoder_step_strip(const decoder_t *self, int i, const char **content,
                       int *start, int *stop);

#endif /* MOE_TOKENIZER_DECODER_H */
