/* bpe: the BPE model of a tokenizer.json: the vocabulary (token <-> id, in
 * hash tables) and rank-based merging of one pre-tokenized piece.
 *
 * Supports byte_fallback (<0xNN> tokens for characters not in the
 * vocabulary, SentencePiece style), unk_token with fuse_unk, and
 * ignore_merges (a piece that is itself a token is not merged). Merges may be
 * "a b" strings or ["a", "b"] pairs. continuing_subword_prefix and
 * end_of_word_suffix must be empty, dropout null. Read-only after bpe_new.
 */
#ifndef MOE_TOKENIZER_BPE_H
#define MOE_TOKENIZER_BPE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "tokenizer/tokenizer_private.h"

typedef struct bpe bpe_t;

/* Builds the model from spec (the "model" object). Caller destroys. NULL
 * with EINVAL/err when it is not a supported BPE model or a merge names an
 * unknown token; ENOMEM when out of memory. */
bpe_t *bpe_new(const json_t *spec, err_t *err);

/* Accepts NULL; sets *self_p to NULL. */
void bpe_destroy(bpe_t **self_p);

/* The id of token s[0..n), or -1. */
int32_t bpe_token_id(const bpe_t *self, const char *s, size_t n);

/* The text of token id (borrowed, NUL-terminated) and its length, or NULL
 * for an id out of the vocabulary. */
const char *bpe_id_token(const bpe_t *self, int32_t id, size_t *n);

/* One more than the largest id in the vocabulary. */
int32_t bpe_n_ids(const bpe_t *self);

/* Appends the ids of piece[0..n) (valid UTF-8) to out. 0, or -1 with
 * errno ENOMEM. */
int bpe_encode(const bpe_t *self, const char *piece, size_t n, tok_ids_t *out);

#endif /* MOE_TOKENIZER_BPE_H */
