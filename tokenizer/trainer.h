/* trainer: learns a byte-level BPE tokenizer from text and writes it in the
 * Hugging Face layout (tokenizer.json + tokenizer_config.json), so that
 * models made by moe-mkmodel come with a real tokenizer.
 *
 * Training is the standard BPE algorithm on GPT-2-style pre-tokenized
 * words (the ByteLevel pre-tokenizer with its regex, exactly as the written
 * tokenizer.json encodes): start from the 256 byte tokens, count the
 * adjacent pairs over all words (weighted by word frequency), merge the most
 * frequent pair everywhere, and repeat. Ties go to the pair of smaller ids
 * (first id, then second), as in HF tokenizers' BpeTrainer, so the result
 * depends only on the text and the options. Training stops when the
 * vocabulary is full or no pair occurs min_frequency times.
 *
 * Id layout (DeepSeek / HF BpeTrainer style: specials first):
 *   [0, n_specials)                       the special tokens, in opts order
 *   [n_specials, n_specials + 256)        byte b is id n_specials + b
 *   [n_specials + 256, .. + n_merges)     one token per merge, in merge order
 *   [.., vocab_size)                      <|reserved_special_token_K|>, K = 0..
 *                                         or, with fill_words, filler words
 * so the tokenizer covers exactly vocab_size ids (its tokenizer_n_ids), as
 * real tokenizers reserve ids up to the model's embedding size. Filler words
 * (" baba", " babe", ...: a space and consonant-vowel syllables, none a
 * learned token) are BPE vocabulary entries that no merge builds: encoding
 * never yields them, but a random model that samples them prints readable,
 * if meaningless, words where reserved ids would print nothing. Specials and
 * reserved tokens are added tokens with "special": true and "normalized":
 * false; the specials are also in the BPE vocabulary (reserved ones are not,
 * as in Llama 3). The post-processor adds nothing (ByteLevel), so encoding
 * never inserts a BOS by itself.
 *
 * Output is deterministic: the same text and options give byte-identical
 * files. Not thread-hostile: no global state beyond pretok's constant table.
 */
#ifndef MOE_TOKENIZER_TRAINER_H
#define MOE_TOKENIZER_TRAINER_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

enum { TRAINER_SPECIALS_MAX = 16 };

typedef struct trainer_opts {
    int32_t vocab_size;         /* ids of the tokenizer; at least
                                   n_specials + 256 */
    const char *specials[TRAINER_SPECIALS_MAX]; /* (n_specials) special tokens,
                                   ids 0.., distinct, non-empty, UTF-8 */
    int n_specials;
    int bos;                    /* index in specials of the BOS token, or -1 */
    int eos;                    /* index in specials of the EOS token, or -1 */
    int pad;                    /* index in specials of the padding token, or -1 */
    int min_frequency;          /* a pair seen fewer times is not merged;
                                   0 means 2 */
    int64_t model_max_length;   /* tokenizer_config.json's; 0: not written */
    int fill_words;             /* 1: the ids after the merges are filler
                                   words; 0: reserved special tokens */
    const char *chat_template;  /* tokenizer_config.json's "chat_template"
                                   (Jinja text), or NULL: none written */
} trainer_opts_t;

typedef struct trainer_stats {
    int32_t n_merges;           /* merges learned */
    int32_t n_reserved;         /* reserved special tokens written */
    int32_t n_filled;           /* filler words written (fill_words) */
    size_t n_words;             /* distinct pre-tokenized words in the text */
    size_t n_text_tokens;       /* tokens the text became after training */
    double seconds;             /* training time, JSON writing excluded */
} trainer_stats_t;

/* The built-in English training text (borrowed, static, NUL-terminated; a
 * few KB about serving mixture-of-experts models), its length in *len when
 * len is not NULL. */
const char *trainer_corpus(size_t *len);

/* Trains on text[0..len) (UTF-8; may be empty: then only bytes, specials
 * and reserved tokens) and writes <dir>/tokenizer.json and
 * <dir>/tokenizer_config.json (bos_token, eos_token, pad_token, class
 * PreTrainedTokenizerFast); dir must exist. stats may be NULL. -1 with
 * errno/err: EINVAL for bad options (vocab_size too small, too many, empty
 * or duplicate specials, an index out of range) or text that is not UTF-8,
 * ENOMEM, or the errno of a failed write (a partial file may remain). */
int trainer_write(const char *dir, const char *text, size_t len,
                  const trainer_opts_t *opts, trainer_stats_t *stats,
                  err_t *err);

#endif /* MOE_TOKENIZER_TRAINER_H */
